package model

import (
	"fmt"
	"math/rand/v2"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// paramKind selects how NewRandom fills a parameter.
type paramKind uint8

const (
	kindWeight paramKind = iota // N(0, std)
	kindBias                    // N(0, std)
	kindGamma                   // 1 + N(0, std)
	kindBeta                    // N(0, std)
)

// paramSpec is one base parameter: its Hugging Face name and shape.
type paramSpec struct {
	name  string
	shape []int
	kind  paramKind
}

// modSpec is one linear module of a block.
type modSpec struct {
	sub     string // path below the block prefix, e.g. "attn.c_attn"
	target  string // PEFT target-module name (the last path component)
	in, out int
	bias    bool
	inOut   bool // weight stored [in,out] (GPT-2 Conv1D)
}

// Linear module indices within a block.
const (
	gpt2Attn     = 0 // attn.c_attn (fused q, k, v)
	gpt2AttnProj = 1 // attn.c_proj
	gpt2FC       = 2 // mlp.c_fc
	gpt2MLPProj  = 3 // mlp.c_proj

	qwenQ    = 0
	qwenK    = 1
	qwenV    = 2
	qwenO    = 3
	qwenGate = 4
	qwenUp   = 5
	qwenDown = 6
)

func moduleSpecs(c Config) []modSpec {
	d, in := c.Hidden, c.Intermediate
	if c.ModelType == GPT2 {
		return []modSpec{
			{"attn.c_attn", "c_attn", d, 3 * d, true, true},
			{"attn.c_proj", "c_proj", d, d, true, true},
			{"mlp.c_fc", "c_fc", d, in, true, true},
			{"mlp.c_proj", "c_proj", in, d, true, true},
		}
	}
	q, kv := c.Heads*c.HeadDim(), c.KVHeads*c.HeadDim()
	return []modSpec{
		{"self_attn.q_proj", "q_proj", d, q, true, false},
		{"self_attn.k_proj", "k_proj", d, kv, true, false},
		{"self_attn.v_proj", "v_proj", d, kv, true, false},
		{"self_attn.o_proj", "o_proj", q, d, false, false},
		{"mlp.gate_proj", "gate_proj", d, in, false, false},
		{"mlp.up_proj", "up_proj", d, in, false, false},
		{"mlp.down_proj", "down_proj", in, d, false, false},
	}
}

// blockPrefix is the Hugging Face name prefix of block i.
func blockPrefix(c Config, i int) string {
	if c.ModelType == GPT2 {
		return fmt.Sprintf("transformer.h.%d.", i)
	}
	return fmt.Sprintf("model.layers.%d.", i)
}

// Hugging Face names of the non-block parameters.
const (
	gpt2WTE    = "transformer.wte.weight"
	gpt2WPE    = "transformer.wpe.weight"
	gpt2LNFW   = "transformer.ln_f.weight"
	gpt2LNFB   = "transformer.ln_f.bias"
	qwenEmbed  = "model.embed_tokens.weight"
	qwenNorm   = "model.norm.weight"
	lmHeadName = "lm_head.weight"
)

func wshape(m modSpec) []int {
	if m.inOut {
		return []int{m.in, m.out}
	}
	return []int{m.out, m.in}
}

// paramSpecs lists the base parameters in Hugging Face state-dict order.
func paramSpecs(c Config) []paramSpec {
	d := c.Hidden
	mods := moduleSpecs(c)
	var ps []paramSpec
	lin := func(p string, m modSpec) {
		ps = append(ps, paramSpec{p + m.sub + ".weight", wshape(m), kindWeight})
		if m.bias {
			ps = append(ps, paramSpec{p + m.sub + ".bias", []int{m.out}, kindBias})
		}
	}
	if c.ModelType == GPT2 {
		ps = append(ps, paramSpec{gpt2WTE, []int{c.Vocab, d}, kindWeight}, paramSpec{gpt2WPE, []int{c.MaxPositions, d}, kindWeight})
		for i := 0; i < c.Layers; i++ {
			p := blockPrefix(c, i)
			ps = append(ps, paramSpec{p + "ln_1.weight", []int{d}, kindGamma}, paramSpec{p + "ln_1.bias", []int{d}, kindBeta})
			lin(p, mods[gpt2Attn])
			lin(p, mods[gpt2AttnProj])
			ps = append(ps, paramSpec{p + "ln_2.weight", []int{d}, kindGamma}, paramSpec{p + "ln_2.bias", []int{d}, kindBeta})
			lin(p, mods[gpt2FC])
			lin(p, mods[gpt2MLPProj])
		}
		ps = append(ps, paramSpec{gpt2LNFW, []int{d}, kindGamma}, paramSpec{gpt2LNFB, []int{d}, kindBeta})
	} else {
		ps = append(ps, paramSpec{qwenEmbed, []int{c.Vocab, d}, kindWeight})
		for i := 0; i < c.Layers; i++ {
			p := blockPrefix(c, i)
			for _, m := range mods {
				lin(p, m)
			}
			ps = append(ps, paramSpec{p + "input_layernorm.weight", []int{d}, kindGamma},
				paramSpec{p + "post_attention_layernorm.weight", []int{d}, kindGamma})
		}
		ps = append(ps, paramSpec{qwenNorm, []int{d}, kindGamma})
	}
	if !c.TieWordEmbeddings {
		ps = append(ps, paramSpec{lmHeadName, []int{c.Vocab, d}, kindWeight})
	}
	return ps
}

// linear is one linear module of a block, bound to its base weights.
type linear struct {
	path    string // Hugging Face module path, e.g. "transformer.h.0.attn.c_attn"
	target  string // PEFT target-module name
	w, bias *nn.Tensor
	inOut   bool
	in, out int
}

// block holds one transformer block's base weights. norm1b and norm2b are
// GPT-2's LayerNorm biases (nil for Qwen2's RMSNorm).
type block struct {
	norm1, norm1b, norm2, norm2b *nn.Tensor
	lin                          []*linear
}

// Model is a GPT-2 or Qwen2 language model's frozen base weights on one
// backend, in one precision (F32 or F64). It is safe to run several passes
// of one Model concurrently only on a backend that is itself safe for that.
type Model struct {
	cfg    Config
	b      nn.Backend
	dt     runtime.DType
	params *ParamSet

	wte, wpe      *nn.Tensor // token / GPT-2 position embeddings
	normF, normFb *nn.Tensor // final norm (bias: GPT-2 only)
	head          *nn.Tensor // LM head [V,d]: wte when tied
	blocks        []block
	byPath        map[string]*linear
}

// build allocates a model whose parameters come from get, which returns a
// host tensor (F32 or F64) of the spec's shape.
func build(cfg Config, b nn.Backend, dt runtime.DType, get func(paramSpec) (*nn.Tensor, error)) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dt != runtime.F32 && dt != runtime.F64 {
		return nil, fmt.Errorf("model precision %v: want F32 or F64", dt)
	}
	if b == nil {
		return nil, fmt.Errorf("model: nil backend")
	}
	specs := paramSpecs(cfg)
	list := make([]Param, len(specs))
	for i, s := range specs {
		h, err := get(s)
		if err != nil {
			return nil, err
		}
		t, err := b.FromHost(h, dt)
		if err != nil {
			return nil, fmt.Errorf("model parameter %s: %w", s.name, err)
		}
		list[i] = Param{Name: s.name, Value: t}
	}
	ps, err := NewParamSet(list)
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg, b: b, dt: dt, params: ps, byPath: map[string]*linear{}}
	get1 := func(name string) *nn.Tensor {
		t, _ := ps.Get(name)
		return t
	}
	if cfg.ModelType == GPT2 {
		m.wte, m.wpe = get1(gpt2WTE), get1(gpt2WPE)
		m.normF, m.normFb = get1(gpt2LNFW), get1(gpt2LNFB)
	} else {
		m.wte = get1(qwenEmbed)
		m.normF = get1(qwenNorm)
	}
	m.head = m.wte
	if !cfg.TieWordEmbeddings {
		m.head = get1(lmHeadName)
	}
	mods := moduleSpecs(cfg)
	m.blocks = make([]block, cfg.Layers)
	for i := range m.blocks {
		p := blockPrefix(cfg, i)
		blk := &m.blocks[i]
		if cfg.ModelType == GPT2 {
			blk.norm1, blk.norm1b = get1(p+"ln_1.weight"), get1(p+"ln_1.bias")
			blk.norm2, blk.norm2b = get1(p+"ln_2.weight"), get1(p+"ln_2.bias")
		} else {
			blk.norm1 = get1(p + "input_layernorm.weight")
			blk.norm2 = get1(p + "post_attention_layernorm.weight")
		}
		for _, ms := range mods {
			l := &linear{path: p + ms.sub, target: ms.target, w: get1(p + ms.sub + ".weight"),
				inOut: ms.inOut, in: ms.in, out: ms.out}
			if ms.bias {
				l.bias = get1(p + ms.sub + ".bias")
			}
			blk.lin = append(blk.lin, l)
			m.byPath[l.path] = l
		}
	}
	return m, nil
}

// RandomOptions configures NewRandom.
type RandomOptions struct {
	// Seed keys the generator; equal seeds give equal models.
	Seed uint64
	// Std is the standard deviation of weights, biases and of the
	// perturbation of norm gains around 1; 0 means 0.02 (Hugging Face's
	// initializer_range).
	Std float64
}

// NewRandom builds a model with seeded random weights: linear and embedding
// weights and all biases N(0, Std), norm gains 1 + N(0, Std). Biases and
// gains are perturbed (unlike Hugging Face's init) so that every parameter
// influences the loss, as gradient tests need.
func NewRandom(cfg Config, b nn.Backend, dt runtime.DType, opt RandomOptions) (*Model, error) {
	std := opt.Std
	if std == 0 {
		std = 0.02
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x5eed_0f_9e2f))
	return build(cfg, b, dt, func(s paramSpec) (*nn.Tensor, error) {
		n := 1
		for _, v := range s.shape {
			n *= v
		}
		data := make([]float64, n)
		for i := range data {
			data[i] = rng.NormFloat64() * std
			if s.kind == kindGamma {
				data[i]++
			}
		}
		return nn.FromF64(data, s.shape...)
	})
}

// Config returns the model's architecture.
func (m *Model) Config() Config { return m.cfg }

// Backend returns the backend the model's tensors live on.
func (m *Model) Backend() nn.Backend { return m.b }

// DType returns the model's precision (F32 or F64).
func (m *Model) DType() runtime.DType { return m.dt }

// Params returns the base weights under their Hugging Face names, in
// state-dict order. The tensors are the model's own: writing them changes
// the model (as full training does).
func (m *Model) Params() *ParamSet { return m.params }

// NewGrads allocates zero gradients laid out like Params, for Backward's
// Grads.Base.
func (m *Model) NewGrads() (*ParamSet, error) { return m.params.ZerosLike(m.b) }

// HeadWeight returns the LM-head matrix [Vocab, Hidden]: the token
// embedding when the model ties them.
func (m *Model) HeadWeight() *nn.Tensor { return m.head }

// Module describes one linear layer that LoRA can target.
type Module struct {
	// Path is the Hugging Face module path, e.g. "model.layers.0.self_attn.q_proj".
	Path string
	// Target is the PEFT target-module name matching it, e.g. "q_proj".
	Target string
	// In and Out are the layer's input and output widths.
	In, Out int
}

// Modules lists the linear layers in module order (block by block).
func (m *Model) Modules() []Module {
	var out []Module
	for _, blk := range m.blocks {
		for _, l := range blk.lin {
			out = append(out, Module{Path: l.path, Target: l.target, In: l.in, Out: l.out})
		}
	}
	return out
}
