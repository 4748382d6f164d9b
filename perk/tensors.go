package perk

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// Names of the extra tensors of a meta-gradient dump.
const (
	// OuterLossName holds L_out(φ_T), shape [1].
	OuterLossName = "outer_loss"
	// InnerLossesName holds L_in(φ_t) for t = 0 … T−1, shape [T].
	InnerLossesName = "inner_losses"
)

// hostEntry converts a backend tensor to a safetensors entry stored as dt.
func hostEntry(b nn.Backend, name string, t *nn.Tensor, dt runtime.DType) (safetensors.Tensor, error) {
	h, err := b.ToHost(t)
	if err != nil {
		return safetensors.Tensor{}, fmt.Errorf("tensor %s: %w", name, err)
	}
	e := safetensors.Tensor{Name: name, Shape: h.Shape(), DType: dt}
	if v, err := h.F64(); err == nil {
		e.F64 = v
	} else if v, err := h.F32(); err == nil {
		e.F32 = v
	} else {
		return safetensors.Tensor{}, fmt.Errorf("tensor %s: %w", name, err)
	}
	return e, nil
}

// adapterEntries lists an adapter's tensors (PEFT names) as entries of dt.
func adapterEntries(a *model.Adapter, b nn.Backend, dt runtime.DType) ([]safetensors.Tensor, error) {
	var out []safetensors.Tensor
	for _, p := range a.Params().Params() {
		e, err := hostEntry(b, p.Name, p.Value, dt)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func sliceEntries(ns []NamedSlice, dt runtime.DType) []safetensors.Tensor {
	out := make([]safetensors.Tensor, len(ns))
	for i, n := range ns {
		out[i] = safetensors.Tensor{Name: n.Name, Shape: append([]int(nil), n.Shape...), DType: dt, F64: append([]float64(nil), n.Data...)}
	}
	return out
}

// Tensors returns the meta-gradient under checkpoint names — the PEFT LoRA
// names for dL/dφ₀, "perk.lr.<name>" [T] and, with weighting,
// "perk.weighting.*" — plus "outer_loss" [1] and "inner_losses" [T], all
// stored as dt. The base gradient (TrainBase) is not included.
func (g *MetaGrad) Tensors(b nn.Backend, dt runtime.DType) ([]safetensors.Tensor, error) {
	out, err := adapterEntries(g.Init, b, dt)
	if err != nil {
		return nil, err
	}
	out = append(out, sliceEntries(g.LRs.Tensors(), dt)...)
	if g.Weighting != nil {
		out = append(out, sliceEntries(g.Weighting.Tensors(), dt)...)
	}
	out = append(out,
		safetensors.Tensor{Name: OuterLossName, Shape: []int{1}, DType: dt, F64: []float64{g.OuterLoss}},
		safetensors.Tensor{Name: InnerLossesName, Shape: []int{len(g.InnerLosses)}, DType: dt, F64: append([]float64(nil), g.InnerLosses...)})
	return out, nil
}

// readFloats reads a float tensor of the expected shape as float64.
func readFloats(src safetensors.Tensors, name string, shape []int) ([]float64, error) {
	info, err := src.Info(name)
	if err != nil {
		return nil, err
	}
	if !equalShape(info.Shape, shape) {
		return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, info.Shape, shape)
	}
	v, err := src.Float64s(name)
	if err != nil {
		return nil, err
	}
	return v, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// SetAdapterTensors overwrites every tensor of a with the tensor of the same
// PEFT name in src (converted to a's precision); a missing tensor or a
// wrong shape is an error.
func SetAdapterTensors(a *model.Adapter, b nn.Backend, src safetensors.Tensors) error {
	for _, p := range a.Params().Params() {
		v, err := readFloats(src, p.Name, p.Value.Shape())
		if err != nil {
			return err
		}
		h, err := nn.FromF64(v, p.Value.Shape()...)
		if err != nil {
			return err
		}
		d, err := b.FromHost(h, p.Value.DType())
		if err != nil {
			return fmt.Errorf("tensor %s: %w", p.Name, err)
		}
		if err := b.Copy(p.Value, d); err != nil {
			return fmt.Errorf("tensor %s: %w", p.Name, err)
		}
		_ = b.Release(d)
	}
	return nil
}

// ReadLRs reads the learned learning rates "perk.lr.<name>" of the named
// LoRA tensors. Every tensor must be present with the same length T ≥ 1.
func ReadLRs(src safetensors.Tensors, names []string) (*LearnedLRs, error) {
	l := &LearnedLRs{Names: append([]string(nil), names...), Values: make([][]float64, len(names))}
	steps := -1
	for i, n := range names {
		info, err := src.Info(LRPrefix + n)
		if err != nil {
			return nil, err
		}
		if len(info.Shape) != 1 || info.Shape[0] < 1 || (steps >= 0 && info.Shape[0] != steps) {
			return nil, fmt.Errorf("tensor %s%s has shape %v, want [T] with the same T ≥ 1 for every tensor", LRPrefix, n, info.Shape)
		}
		steps = info.Shape[0]
		if l.Values[i], err = src.Float64s(LRPrefix + n); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// HasWeighting reports whether src holds a weighting network.
func HasWeighting(src safetensors.Tensors) bool {
	_, err := src.Info(WeightingFC1Weight)
	return err == nil
}

// ReadWeighting reads the weighting network "perk.weighting.*" for a model
// of hidden size d; H comes from fc1's shape.
func ReadWeighting(src safetensors.Tensors, d int, beta float64) (*Weighting, error) {
	info, err := src.Info(WeightingFC1Weight)
	if err != nil {
		return nil, err
	}
	if len(info.Shape) != 2 || info.Shape[1] != d {
		return nil, fmt.Errorf("tensor %s has shape %v, want [H,%d]", WeightingFC1Weight, info.Shape, d)
	}
	w, err := zeroWeighting(d, info.Shape[0], beta)
	if err != nil {
		return nil, err
	}
	for _, ts := range w.Tensors() {
		v, err := readFloats(src, ts.Name, ts.Shape)
		if err != nil {
			return nil, err
		}
		copy(ts.Data, v)
	}
	return w, nil
}

// readInts reads an I64 (or I32) tensor.
func readInts(src safetensors.Tensors, name string) ([]int64, []int, error) {
	info, err := src.Info(name)
	if err != nil {
		return nil, nil, err
	}
	raw, err := src.Bytes(name)
	if err != nil {
		return nil, nil, err
	}
	var out []int64
	switch info.DType {
	case "I64":
		out = make([]int64, len(raw)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	case "I32":
		out = make([]int64, len(raw)/4)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
	default:
		return nil, nil, fmt.Errorf("tensor %s has dtype %s, want I64 or I32", name, info.DType)
	}
	return out, info.Shape, nil
}

// ReadExample reads an Example from the tensors of a meta-gradient fixture:
// "segments.ids" [N], "segments.cu_seqlens" [S+1], "segments.prefix_len"
// [S], "outer.ids" [L] and "outer.prompt_len" [1], all integers.
func ReadExample(src safetensors.Tensors, id string) (*Example, error) {
	get := func(name string) ([]int64, error) {
		v, _, err := readInts(src, name)
		return v, err
	}
	ids, err := get("segments.ids")
	if err != nil {
		return nil, err
	}
	cu, err := get("segments.cu_seqlens")
	if err != nil {
		return nil, err
	}
	pre, err := get("segments.prefix_len")
	if err != nil {
		return nil, err
	}
	oids, err := get("outer.ids")
	if err != nil {
		return nil, err
	}
	pl, err := get("outer.prompt_len")
	if err != nil {
		return nil, err
	}
	if len(pl) != 1 {
		return nil, fmt.Errorf("outer.prompt_len has %d values, want 1", len(pl))
	}
	ex := &Example{ID: id, PromptLen: int(pl[0])}
	for _, x := range ids {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("segments.ids: id %d out of range", x)
		}
		ex.Segments.IDs = append(ex.Segments.IDs, int32(x))
	}
	for _, x := range cu {
		ex.Segments.CuSeqlens = append(ex.Segments.CuSeqlens, int32(x))
	}
	for _, x := range pre {
		ex.Prefix = append(ex.Prefix, int(x))
	}
	for _, x := range oids {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return nil, fmt.Errorf("outer.ids: id %d out of range", x)
		}
		ex.Outer.IDs = append(ex.Outer.IDs, int32(x))
	}
	return ex, nil
}

func formatFloat(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }
