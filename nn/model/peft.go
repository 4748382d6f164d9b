package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// The file names of a PEFT adapter directory.
const (
	// AdapterConfigFile holds the adapter's hyper-parameters (JSON).
	AdapterConfigFile = "adapter_config.json"
	// AdapterWeightsFile holds the lora_A and lora_B tensors.
	AdapterWeightsFile = "adapter_model.safetensors"
)

// peftJSON is the subset of PEFT's LoraConfig that is read; fields that
// would change the computation in unsupported ways are decoded only to be
// rejected.
type peftJSON struct {
	PeftType          *string         `json:"peft_type"`
	R                 *int            `json:"r"`
	Alpha             *float64        `json:"lora_alpha"`
	Dropout           *float64        `json:"lora_dropout"`
	TargetModules     json.RawMessage `json:"target_modules"`
	UseRSLoRA         *bool           `json:"use_rslora"`
	Bias              *string         `json:"bias"`
	TaskType          *string         `json:"task_type"`
	Base              *string         `json:"base_model_name_or_path"`
	ModulesToSave     json.RawMessage `json:"modules_to_save"`
	RankPattern       json.RawMessage `json:"rank_pattern"`
	AlphaPattern      json.RawMessage `json:"alpha_pattern"`
	LayersToTransform json.RawMessage `json:"layers_to_transform"`
	ExcludeModules    json.RawMessage `json:"exclude_modules"`
	UseDoRA           *bool           `json:"use_dora"`
}

// isEmptyJSON reports null, an absent value, [] or {}.
func isEmptyJSON(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return isNull(t) || bytes.Equal(t, []byte("[]")) || bytes.Equal(t, []byte("{}"))
}

// ParseAdapterConfig decodes an adapter_config.json; name labels errors.
// Absent fields take PEFT's defaults (r 8, lora_alpha 8, no dropout, no
// rsLoRA). Features this package does not implement — bias other than
// "none", modules_to_save, rank/alpha patterns, layers_to_transform,
// exclude_modules, DoRA — are errors.
func ParseAdapterConfig(name string, data []byte) (LoRAConfig, error) {
	var j peftJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return LoRAConfig{}, fmt.Errorf("adapter config %s: %w", name, err)
	}
	fail := func(format string, args ...any) (LoRAConfig, error) {
		return LoRAConfig{}, fmt.Errorf("adapter config %s: "+format, append([]any{name}, args...)...)
	}
	if j.PeftType == nil || *j.PeftType != "LORA" {
		got := "none"
		if j.PeftType != nil {
			got = *j.PeftType
		}
		return fail("peft_type %q is not supported (want LORA)", got)
	}
	if j.Bias != nil && *j.Bias != "none" {
		return fail("bias %q is not supported (want none)", *j.Bias)
	}
	if j.TaskType != nil && *j.TaskType != "CAUSAL_LM" {
		return fail("task_type %q is not supported (want CAUSAL_LM)", *j.TaskType)
	}
	if j.UseDoRA != nil && *j.UseDoRA {
		return fail("use_dora is not supported")
	}
	for _, f := range []struct {
		key string
		raw json.RawMessage
	}{{"modules_to_save", j.ModulesToSave}, {"rank_pattern", j.RankPattern}, {"alpha_pattern", j.AlphaPattern},
		{"layers_to_transform", j.LayersToTransform}, {"exclude_modules", j.ExcludeModules}} {
		if !isEmptyJSON(f.raw) {
			return fail("%s %s is not supported", f.key, bytes.TrimSpace(f.raw))
		}
	}
	c := LoRAConfig{R: intOr(j.R, 8), Alpha: floatOr(j.Alpha, 8), Dropout: floatOr(j.Dropout, 0)}
	if j.UseRSLoRA != nil {
		c.UseRSLoRA = *j.UseRSLoRA
	}
	if j.Base != nil {
		c.BaseModel = *j.Base
	}
	tm := bytes.TrimSpace(j.TargetModules)
	switch {
	case isNull(tm):
		return fail("no target_modules")
	case tm[0] == '"':
		var s string
		if err := json.Unmarshal(tm, &s); err != nil {
			return fail("target_modules: %v", err)
		}
		if s == AllLinear {
			c.TargetModules = []string{AllLinear}
		} else {
			c.TargetRegex = s
		}
	default:
		if err := json.Unmarshal(tm, &c.TargetModules); err != nil {
			return fail("target_modules: %v", err)
		}
	}
	if err := c.Validate(); err != nil {
		return fail("%v", err)
	}
	return c, nil
}

// LoadAdapter reads a PEFT LoRA adapter directory (adapter_config.json and
// adapter_model.safetensors) for model m, converting the tensors to the
// model's precision. Every target module must exist in the model and every
// module it matches must have lora_A [r,in] and lora_B [out,r] in the file;
// a tensor for a module the model lacks, a missing tensor or a wrong shape
// is an error naming the file and the tensor.
func LoadAdapter(dir string, m *Model) (*Adapter, error) {
	cpath := filepath.Join(dir, AdapterConfigFile)
	data, err := os.ReadFile(cpath)
	if err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	cfg, err := ParseAdapterConfig(cpath, data)
	if err != nil {
		return nil, err
	}
	if _, err := matchTargets(m, cfg); err != nil {
		return nil, fmt.Errorf("adapter config %s: %w", cpath, err)
	}
	wpath := filepath.Join(dir, AdapterWeightsFile)
	f, err := safetensors.Open(wpath)
	if err != nil {
		return nil, fmt.Errorf("adapter: %w", err)
	}
	defer f.Close()
	used := map[string]bool{}
	ad, err := newAdapter(m, cfg, func(l *linear) (*nn.Tensor, *nn.Tensor, error) {
		var out [2]*nn.Tensor
		for k, spec := range []struct {
			suffix string
			shape  []int
		}{{peftASuffix, []int{cfg.R, l.in}}, {peftBSuffix, []int{l.out, cfg.R}}} {
			name := peftPrefix + l.path + spec.suffix
			if !f.Has(name) {
				return nil, nil, fmt.Errorf("adapter %s: missing tensor %s", wpath, name)
			}
			h, err := readTensor(f, name, spec.shape, m.dt)
			if err != nil {
				return nil, nil, fmt.Errorf("adapter %s: %w", wpath, err)
			}
			if out[k], err = m.b.FromHost(h, m.dt); err != nil {
				return nil, nil, fmt.Errorf("adapter %s: tensor %s: %w", wpath, name, err)
			}
			used[name] = true
		}
		return out[0], out[1], nil
	})
	if err != nil {
		return nil, err
	}
	for _, name := range f.Names() {
		if !used[name] {
			return nil, fmt.Errorf("adapter %s: tensor %s does not belong to any targeted module of the %s model", wpath, name, m.cfg.ModelType)
		}
	}
	return ad, nil
}

// SaveAdapter writes a in PEFT's format to dir (created if needed):
// adapter_config.json and adapter_model.safetensors with tensors stored as
// dt (F32, F16, BF16 or F64; the zero value is F32).
func SaveAdapter(dir string, a *Adapter, dt runtime.DType) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	c := a.cfg
	var targets any
	if c.TargetRegex != "" {
		targets = c.TargetRegex
	} else {
		t := slices.Clone(c.TargetModules)
		slices.Sort(t)
		targets = slices.Compact(t)
	}
	var base any
	if c.BaseModel != "" {
		base = c.BaseModel
	}
	cj, err := json.MarshalIndent(map[string]any{
		"peft_type":               "LORA",
		"task_type":               "CAUSAL_LM",
		"r":                       c.R,
		"lora_alpha":              c.Alpha,
		"lora_dropout":            c.Dropout,
		"target_modules":          targets,
		"use_rslora":              c.UseRSLoRA,
		"bias":                    "none",
		"fan_in_fan_out":          a.modelType == GPT2,
		"base_model_name_or_path": base,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"modules_to_save":         nil,
		"use_dora":                false,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("save adapter %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, AdapterConfigFile), append(cj, '\n'), 0o644); err != nil {
		return fmt.Errorf("save adapter: %w", err)
	}
	tensors, err := hostTensors(a.b, a.params, dt)
	if err != nil {
		return fmt.Errorf("save adapter %s: %w", dir, err)
	}
	return safetensors.Write(filepath.Join(dir, AdapterWeightsFile), tensors, map[string]string{"format": "pt"})
}
