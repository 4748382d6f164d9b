package bench

import (
	"fmt"
	"sort"
	"strings"

	"github.com/perkgo/perk/runtime"
)

// Proj is one LoRA-adapted projection: x [N,In] → y [N,Out], with W stored
// [Out,In] or, with WInOut, [In,Out] (GPT-2's Conv1D layout).
type Proj struct {
	Name    string
	In, Out int
	WInOut  bool
}

// Shapes are the sizes every kernel suite runs at.
type Shapes struct {
	Name string
	// DTypes are the storage types tried, where a kernel supports them
	// (the optimiser kernels are f32 only).
	DTypes []runtime.DType
	// Tokens is N, the packed tokens of one batch: the rows of every
	// activation.
	Tokens int
	// Hidden is the model width d; FFN the MLP width (GELU and SwiGLU run
	// over [Tokens, FFN]).
	Hidden, FFN int
	// Vocab is the LM-head / embedding rows; MaxPos the rows of GPT-2's
	// learned position table (0: none, RoPE instead).
	Vocab, MaxPos int
	// Heads, KVHeads and HeadDim shape attention and RoPE (GQA when KVHeads
	// < Heads).
	Heads, KVHeads, HeadDim int
	// SeqLen is the packed segment length: Tokens is cut into segments of
	// SeqLen (the last one shorter when it does not divide), each a causal
	// attention segment whose positions restart at 0.
	SeqLen int
	// Ranks are the LoRA ranks tried; Proj the adapted projections of one
	// layer and Layers the layers (the optimiser table has Layers·len(Proj)
	// A/B pairs).
	Ranks  []int
	Proj   []Proj
	Layers int
	// RoPETheta is the rotary base.
	RoPETheta float64
	// CheckRows bounds the rows (tokens, vocabulary rows, tensors) compared
	// with the host reference; 0 compares everything.
	CheckRows int
}

var gpt2Proj = []Proj{
	{"c_attn", 768, 2304, true}, {"attn.c_proj", 768, 768, true},
	{"c_fc", 768, 3072, true}, {"mlp.c_proj", 3072, 768, true},
}

var qwenProj = []Proj{
	{"q_proj", 896, 896, false}, {"k_proj", 896, 128, false}, {"v_proj", 896, 128, false}, {"o_proj", 896, 896, false},
	{"gate_proj", 896, 4864, false}, {"up_proj", 896, 4864, false}, {"down_proj", 4864, 896, false},
}

var presets = map[string]Shapes{
	// tiny: what TestSuitesSmallEmu runs (every suite in a few seconds on
	// the emulator); ragged sizes so tile edges are exercised.
	"tiny": {
		Name: "tiny", DTypes: []runtime.DType{runtime.F32, runtime.BF16},
		Tokens: 40, Hidden: 32, FFN: 72, Vocab: 97, MaxPos: 32,
		Heads: 2, KVHeads: 1, HeadDim: 16, SeqLen: 24,
		Ranks: []int{4}, Proj: []Proj{{"c_attn", 32, 96, true}, {"o_proj", 32, 24, false}}, Layers: 1,
		RoPETheta: 1e4,
	},
	// small: the emulator default (cmd/bench, Go benchmarks).
	"small": {
		Name: "small", DTypes: []runtime.DType{runtime.F32, runtime.BF16},
		Tokens: 64, Hidden: 64, FFN: 256, Vocab: 257, MaxPos: 64,
		Heads: 2, KVHeads: 1, HeadDim: 32, SeqLen: 40,
		Ranks: []int{8}, Proj: []Proj{{"c_attn", 64, 192, true}, {"q_proj", 64, 64, false}}, Layers: 2,
		RoPETheta: 1e4,
	},
	// gpt2: GPT-2 small (124M), bf16, 8K packed tokens in 1024-token segments.
	"gpt2": {
		Name: "gpt2", DTypes: []runtime.DType{runtime.BF16},
		Tokens: 8192, Hidden: 768, FFN: 3072, Vocab: 50257, MaxPos: 1024,
		Heads: 12, KVHeads: 12, HeadDim: 64, SeqLen: 1024,
		Ranks: []int{16, 256}, Proj: gpt2Proj, Layers: 12,
		RoPETheta: 1e4, CheckRows: 16,
	},
	// qwen: Qwen2.5-0.5B, bf16, 8K packed tokens in 1024-token segments.
	"qwen": {
		Name: "qwen", DTypes: []runtime.DType{runtime.BF16},
		Tokens: 8192, Hidden: 896, FFN: 4864, Vocab: 151936,
		Heads: 14, KVHeads: 2, HeadDim: 64, SeqLen: 1024,
		Ranks: []int{16, 256}, Proj: qwenProj, Layers: 24,
		RoPETheta: 1e6, CheckRows: 16,
	},
}

// ShapesNames lists the shape presets.
func ShapesNames() []string {
	var names []string
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ShapesByName returns a preset: "tiny", "small" (emulator), "gpt2" or
// "qwen" (GPU).
func ShapesByName(name string) (Shapes, error) {
	s, ok := presets[name]
	if !ok {
		return Shapes{}, fmt.Errorf("unknown shapes %q (want %s)", name, strings.Join(ShapesNames(), ", "))
	}
	s.DTypes = append([]runtime.DType(nil), s.DTypes...)
	s.Ranks = append([]int(nil), s.Ranks...)
	s.Proj = append([]Proj(nil), s.Proj...)
	return s, nil
}

// DefaultShapes is the preset for a device kind: "small" on the emulator,
// "gpt2" on a GPU.
func DefaultShapes(kind string) string {
	if kind == "cuda" {
		return "gpt2"
	}
	return "small"
}

// segments returns the packed segment boundaries cu_seqlens.
func (s Shapes) segments() []int32 {
	cu := []int32{0}
	for t := 0; t < s.Tokens; t += s.SeqLen {
		cu = append(cu, int32(min(t+s.SeqLen, s.Tokens)))
	}
	return cu
}

// positions returns each token's position within its segment.
func (s Shapes) positions() []int32 {
	p := make([]int32, s.Tokens)
	for t := range p {
		p[t] = int32(t % s.SeqLen)
	}
	return p
}

// dtypes returns the storage types of s that a kernel supports.
func (s Shapes) dtypes(supported ...runtime.DType) []runtime.DType {
	var out []runtime.DType
	for _, t := range s.DTypes {
		for _, u := range supported {
			if t == u {
				out = append(out, t)
			}
		}
	}
	return out
}

func (s Shapes) validate() error {
	switch {
	case s.Tokens < 1 || s.Hidden < 1 || s.FFN < 1 || s.Vocab < 1:
		return fmt.Errorf("shapes %q: tokens, hidden, ffn and vocab must be ≥ 1", s.Name)
	case s.Heads < 1 || s.KVHeads < 1 || s.Heads%s.KVHeads != 0 || s.HeadDim < 2 || s.HeadDim%2 != 0:
		return fmt.Errorf("shapes %q: heads %d/%d and head dim %d are not valid", s.Name, s.Heads, s.KVHeads, s.HeadDim)
	case s.SeqLen < 1 || (s.MaxPos > 0 && s.SeqLen > s.MaxPos):
		return fmt.Errorf("shapes %q: segment length %d must be in [1, max positions %d]", s.Name, s.SeqLen, s.MaxPos)
	case len(s.DTypes) == 0 || len(s.Ranks) == 0 || len(s.Proj) == 0 || s.Layers < 1:
		return fmt.Errorf("shapes %q: needs dtypes, ranks, projections and layers", s.Name)
	}
	return nil
}

func dtName(t runtime.DType) string { return strings.ToLower(t.String()) }
