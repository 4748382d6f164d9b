package model

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// LoadModel reads a Hugging Face checkpoint directory — config.json and
// model.safetensors, or shards listed by model.safetensors.index.json —
// into a model of precision dt (F32 or F64) on backend b. F32, F16, BF16
// and F64 weights are converted. GPT-2 names may omit the "transformer."
// prefix; GPT-2's attention-mask buffers (attn.bias, attn.masked_bias), a
// tied model's lm_head.weight and other unused tensors are ignored. A
// missing tensor, a wrong shape or a non-float dtype is an error naming the
// file and the tensor.
func LoadModel(dir string, b nn.Backend, dt runtime.DType) (*Model, error) {
	cfg, err := LoadConfig(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenSet(dir)
	if err != nil {
		return nil, fmt.Errorf("model checkpoint %s: %w", dir, err)
	}
	defer set.Close()
	label := filepath.Join(dir, safetensors.SingleFile)
	if _, err := os.Stat(filepath.Join(dir, safetensors.IndexFile)); err == nil {
		label = filepath.Join(dir, safetensors.IndexFile)
	}
	// Some GPT-2 files name tensors without the "transformer." prefix.
	rename := func(name string) string { return name }
	if cfg.ModelType == GPT2 && !set.Has(gpt2WTE) && set.Has(strings.TrimPrefix(gpt2WTE, "transformer.")) {
		rename = func(name string) string { return strings.TrimPrefix(name, "transformer.") }
	}
	return build(cfg, b, dt, func(s paramSpec) (*nn.Tensor, error) {
		name := rename(s.name)
		where := label
		if sh, ok := set.Shard(name); ok {
			where = filepath.Join(dir, sh)
		}
		if !set.Has(name) {
			return nil, fmt.Errorf("model checkpoint %s: missing tensor %s", where, name)
		}
		h, err := readTensor(set, name, s.shape, dt)
		if err != nil {
			return nil, fmt.Errorf("model checkpoint %s: %w", where, err)
		}
		return h, nil
	})
}

// readTensor reads a float tensor of the expected shape as a host tensor of
// dt (F32 or F64).
func readTensor(set safetensors.Tensors, name string, shape []int, dt runtime.DType) (*nn.Tensor, error) {
	info, err := set.Info(name)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	if !sameShape(info.Shape, shape) {
		return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, info.Shape, shape)
	}
	if _, ok := info.Float(); !ok {
		return nil, fmt.Errorf("tensor %s has dtype %s, want F32, F16, BF16 or F64", name, info.DType)
	}
	if dt == runtime.F64 {
		v, err := set.Float64s(name)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", name, err)
		}
		return nn.FromF64(v, shape...)
	}
	v, err := set.Float32s(name)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	return nn.FromF32(v, shape...)
}

// SaveOptions configures SaveModel.
type SaveOptions struct {
	// DType is the storage type of the written tensors (F32, F16, BF16 or
	// F64); the zero value is F32.
	DType runtime.DType
	// ShardBytes, when positive, splits the weights into shards of at most
	// about this many bytes (a tensor is never split) named
	// model-0000k-of-0000n.safetensors, with model.safetensors.index.json.
	ShardBytes int64
}

// SaveModel writes m as a Hugging Face checkpoint directory (created if
// needed): config.json and model.safetensors (or shards with an index),
// with the names LoadModel reads. A tied model's LM head is not written.
func SaveModel(dir string, m *Model, opt SaveOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	cj, err := m.cfg.MarshalHF()
	if err != nil {
		return fmt.Errorf("save model %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), append(cj, '\n'), 0o644); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	tensors, err := hostTensors(m.b, m.params, opt.DType)
	if err != nil {
		return fmt.Errorf("save model %s: %w", dir, err)
	}
	meta := map[string]string{"format": "pt"}
	if opt.ShardBytes <= 0 {
		return safetensors.Write(filepath.Join(dir, safetensors.SingleFile), tensors, meta)
	}
	var shards [][]safetensors.Tensor
	var size, total int64
	for _, t := range tensors {
		n := int64(opt.DType.Size())
		for _, d := range t.Shape {
			n *= int64(d)
		}
		if len(shards) == 0 || (size+n > opt.ShardBytes && size > 0) {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], t)
		size += n
		total += n
	}
	weightMap := map[string]string{}
	for k, sh := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, len(shards))
		if err := safetensors.Write(filepath.Join(dir, name), sh, meta); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
		for _, t := range sh {
			weightMap[t.Name] = name
		}
	}
	ix, err := json.MarshalIndent(map[string]any{
		"metadata":   map[string]any{"total_size": total},
		"weight_map": weightMap,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("save model %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, safetensors.IndexFile), append(ix, '\n'), 0o644); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return nil
}

// hostTensors copies a parameter set to the host as safetensors entries of
// storage type dt.
func hostTensors(b nn.Backend, ps *ParamSet, dt runtime.DType) ([]safetensors.Tensor, error) {
	switch dt {
	case runtime.F32, runtime.F16, runtime.BF16, runtime.F64:
	default:
		return nil, fmt.Errorf("storage dtype %v: want F32, F16, BF16 or F64", dt)
	}
	out := make([]safetensors.Tensor, 0, ps.Len())
	for _, p := range ps.list {
		h, err := b.ToHost(p.Value)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", p.Name, err)
		}
		t := safetensors.Tensor{Name: p.Name, Shape: h.Shape(), DType: dt}
		if v, err := h.F64(); err == nil {
			t.F64 = v
		} else if v, err := h.F32(); err == nil {
			t.F32 = v
		} else {
			return nil, fmt.Errorf("tensor %s: %w", p.Name, err)
		}
		out = append(out, t)
	}
	return out, nil
}
