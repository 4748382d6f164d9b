package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"

	"github.com/perkgo/perk/nn"
)

// PEFT's naming of adapter tensors: prefix + module path + suffix.
const (
	peftPrefix  = "base_model.model."
	peftASuffix = ".lora_A.weight"
	peftBSuffix = ".lora_B.weight"
)

// AllLinear is PEFT's target_modules shorthand for every linear layer of the
// blocks (the LM head is never targeted).
const AllLinear = "all-linear"

// LoRAConfig is an adapter's hyper-parameters, the fields of PEFT's
// LoraConfig that this package supports.
type LoRAConfig struct {
	// R is the adapter rank r.
	R int
	// Alpha is lora_alpha.
	Alpha float64
	// Dropout is lora_dropout, the drop probability of the adapter input
	// (applied only when a pass runs with Options.Train).
	Dropout float64
	// TargetModules lists PEFT target-module names; a module matches a name
	// equal to its path or to the path's last components ("c_proj" matches
	// both attn.c_proj and mlp.c_proj). AllLinear matches every module.
	TargetModules []string
	// TargetRegex, when set instead of TargetModules, is PEFT's string form
	// of target_modules: a regular expression that must match a module's
	// whole path.
	TargetRegex string
	// UseRSLoRA selects the scale α/√r (rank-stabilised LoRA) instead of α/r.
	UseRSLoRA bool
	// BaseModel is base_model_name_or_path, recorded in adapter_config.json.
	BaseModel string
}

// Scale is the adapter multiplier s: α/√r with rsLoRA, α/r without.
func (c LoRAConfig) Scale() float64 {
	if c.UseRSLoRA {
		return c.Alpha / math.Sqrt(float64(c.R))
	}
	return c.Alpha / float64(c.R)
}

// Validate checks the rank, alpha, dropout and targets.
func (c LoRAConfig) Validate() error {
	if c.R <= 0 {
		return fmt.Errorf("lora: rank r = %d must be positive", c.R)
	}
	if math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) {
		return fmt.Errorf("lora: lora_alpha %v is not finite", c.Alpha)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		return fmt.Errorf("lora: lora_dropout %v outside [0,1)", c.Dropout)
	}
	if len(c.TargetModules) == 0 && c.TargetRegex == "" {
		return fmt.Errorf("lora: no target modules")
	}
	if len(c.TargetModules) > 0 && c.TargetRegex != "" {
		return fmt.Errorf("lora: both a target module list and a target regex")
	}
	return nil
}

// DefaultTargets returns every LoRA target-module name of an architecture:
// c_attn, c_proj, c_fc for GPT-2; q/k/v/o_proj and gate/up/down_proj for
// Qwen2.
func DefaultTargets(modelType string) []string {
	switch modelType {
	case GPT2:
		return []string{"c_attn", "c_proj", "c_fc"}
	case Qwen2:
		return []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
	}
	return nil
}

// matchTargets returns the model's linear layers the config targets, in
// module order. Every listed target must match at least one module.
func matchTargets(m *Model, c LoRAConfig) ([]*linear, error) {
	var all []*linear
	for _, blk := range m.blocks {
		all = append(all, blk.lin...)
	}
	if c.TargetRegex != "" {
		re, err := regexp.Compile(`^(?:` + c.TargetRegex + `)$`)
		if err != nil {
			return nil, fmt.Errorf("lora: target_modules regex %q: %w", c.TargetRegex, err)
		}
		var out []*linear
		for _, l := range all {
			if re.MatchString(l.path) {
				out = append(out, l)
			}
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("lora: target_modules regex %q matches no module of the %s model", c.TargetRegex, m.cfg.ModelType)
		}
		return out, nil
	}
	hit := make([]bool, len(all))
	for _, t := range c.TargetModules {
		found := false
		for i, l := range all {
			if t == AllLinear || l.path == t || strings.HasSuffix(l.path, "."+t) {
				hit[i], found = true, true
			}
		}
		if !found {
			return nil, fmt.Errorf("lora: target module %q is absent from the %s model (its modules: %s)", t, m.cfg.ModelType, strings.Join(DefaultTargets(m.cfg.ModelType), ", "))
		}
	}
	var out []*linear
	for i, l := range all {
		if hit[i] {
			out = append(out, l)
		}
	}
	return out, nil
}

// loraModule is one adapted linear layer: A [r,in] and B [out,r].
type loraModule struct {
	path    string
	in, out int
	a, b    *nn.Tensor
}

// Adapter is a LoRA adapter for one model: per targeted module, A [r,in]
// and B [out,r] in the model's precision on its backend, and, for the
// module, y = base(x) + s·B·A·dropout(x) with s = Config().Scale(). The
// tensors are named as PEFT saves them, e.g.
// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".
//
// An Adapter of the same layout also carries gradients (ZerosLike) and
// perturbed copies (Clone).
type Adapter struct {
	cfg       LoRAConfig
	modelType string
	b         nn.Backend
	mods      []loraModule
	index     map[string]int
	params    *ParamSet
}

// newAdapter lays out an adapter over the modules with tensors from mk.
func newAdapter(m *Model, cfg LoRAConfig, mk func(l *linear) (a, b *nn.Tensor, err error)) (*Adapter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lins, err := matchTargets(m, cfg)
	if err != nil {
		return nil, err
	}
	ad := &Adapter{cfg: cfg, modelType: m.cfg.ModelType, b: m.b, index: map[string]int{}}
	ad.cfg.TargetModules = append([]string(nil), cfg.TargetModules...)
	var list []Param
	for _, l := range lins {
		a, b, err := mk(l)
		if err != nil {
			return nil, err
		}
		ad.index[l.path] = len(ad.mods)
		ad.mods = append(ad.mods, loraModule{path: l.path, in: l.in, out: l.out, a: a, b: b})
		list = append(list, Param{peftPrefix + l.path + peftASuffix, a}, Param{peftPrefix + l.path + peftBSuffix, b})
	}
	if ad.params, err = NewParamSet(list); err != nil {
		return nil, err
	}
	return ad, nil
}

// NewAdapter creates an adapter for m initialised as PEFT does by default:
// A from Kaiming-uniform with a = √5 — torch's kaiming_uniform_ bound
// gain·√(3/fan_in) with gain √(2/(1+a²)), i.e. U(−1/√in, 1/√in) — drawn from
// a PCG generator keyed by seed, module by module in order; B zero, so the
// adapted model starts equal to the base model.
func NewAdapter(m *Model, cfg LoRAConfig, seed uint64) (*Adapter, error) {
	rng := rand.New(rand.NewPCG(seed, 0x10a_a_1417))
	return newAdapter(m, cfg, func(l *linear) (*nn.Tensor, *nn.Tensor, error) {
		bound := 1 / math.Sqrt(float64(l.in))
		data := make([]float64, cfg.R*l.in)
		for i := range data {
			data[i] = (2*rng.Float64() - 1) * bound
		}
		h, err := nn.FromF64(data, cfg.R, l.in)
		if err != nil {
			return nil, nil, err
		}
		a, err := m.b.FromHost(h, m.dt)
		if err != nil {
			return nil, nil, fmt.Errorf("lora %s: %w", l.path, err)
		}
		b, err := m.b.Alloc(m.dt, l.out, cfg.R)
		if err != nil {
			return nil, nil, fmt.Errorf("lora %s: %w", l.path, err)
		}
		return a, b, nil
	})
}

// Config returns the adapter's hyper-parameters.
func (a *Adapter) Config() LoRAConfig {
	c := a.cfg
	c.TargetModules = append([]string(nil), a.cfg.TargetModules...)
	return c
}

// ModelType is the architecture the adapter was made for.
func (a *Adapter) ModelType() string { return a.modelType }

// Params returns the LoRA tensors under their PEFT names, in module order
// with each module's lora_A before its lora_B. The tensors are the
// adapter's own (an optimiser updates them in place).
func (a *Adapter) Params() *ParamSet { return a.params }

// Modules returns the adapted modules' paths in order.
func (a *Adapter) Modules() []string {
	out := make([]string, len(a.mods))
	for i, m := range a.mods {
		out[i] = m.path
	}
	return out
}

// Module returns the A and B tensors of the module at path.
func (a *Adapter) Module(path string) (A, B *nn.Tensor, ok bool) {
	i, ok := a.index[path]
	if !ok {
		return nil, nil, false
	}
	return a.mods[i].a, a.mods[i].b, true
}

// like returns an adapter of the same layout whose tensors come from mk.
func (a *Adapter) like(mk func(src *nn.Tensor) (*nn.Tensor, error)) (*Adapter, error) {
	out := &Adapter{cfg: a.Config(), modelType: a.modelType, b: a.b, index: a.index, mods: make([]loraModule, len(a.mods))}
	list := make([]Param, 0, 2*len(a.mods))
	for i, m := range a.mods {
		ta, err := mk(m.a)
		if err != nil {
			return nil, fmt.Errorf("lora %s: %w", m.path, err)
		}
		tb, err := mk(m.b)
		if err != nil {
			return nil, fmt.Errorf("lora %s: %w", m.path, err)
		}
		out.mods[i] = loraModule{path: m.path, in: m.in, out: m.out, a: ta, b: tb}
		list = append(list, Param{peftPrefix + m.path + peftASuffix, ta}, Param{peftPrefix + m.path + peftBSuffix, tb})
	}
	var err error
	if out.params, err = NewParamSet(list); err != nil {
		return nil, err
	}
	return out, nil
}

// ZerosLike returns a zero adapter of the same layout (a gradient
// accumulator for Backward).
func (a *Adapter) ZerosLike() (*Adapter, error) {
	return a.like(func(src *nn.Tensor) (*nn.Tensor, error) { return a.b.Alloc(src.DType(), src.Shape()...) })
}

// Clone returns a deep copy.
func (a *Adapter) Clone() (*Adapter, error) {
	return a.like(func(src *nn.Tensor) (*nn.Tensor, error) {
		t, err := a.b.Alloc(src.DType(), src.Shape()...)
		if err != nil {
			return nil, err
		}
		return t, a.b.Copy(t, src)
	})
}

// checkFor reports whether the adapter fits model m: same architecture and
// every adapted module present with matching widths and dtype.
func (a *Adapter) checkFor(m *Model) error {
	if a.modelType != m.cfg.ModelType {
		return fmt.Errorf("adapter for a %s model used with a %s model", a.modelType, m.cfg.ModelType)
	}
	for _, mod := range a.mods {
		l, ok := m.byPath[mod.path]
		if !ok {
			return fmt.Errorf("adapter module %s is absent from the model", mod.path)
		}
		if l.in != mod.in || l.out != mod.out {
			return fmt.Errorf("adapter module %s is %d→%d, the model's is %d→%d", mod.path, mod.in, mod.out, l.in, l.out)
		}
		if mod.a.DType() != m.dt || mod.b.DType() != m.dt {
			return fmt.Errorf("adapter module %s has dtype %v, the model %v", mod.path, mod.a.DType(), m.dt)
		}
	}
	return nil
}

// sameLayout reports the first layout difference between a and o.
func (a *Adapter) sameLayout(o *Adapter) error {
	if len(a.mods) != len(o.mods) {
		return fmt.Errorf("%d adapted modules, want %d", len(o.mods), len(a.mods))
	}
	return a.params.sameLayout(o.params)
}
