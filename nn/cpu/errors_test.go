package cpu

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// fakeDevice is storage on some other device.
type fakeDevice struct{}

func (fakeDevice) Device() string { return "fake" }

// Bad arguments return errors that name the op and the argument, and never
// panic.
func TestArgumentErrors(t *testing.T) {
	be := New()
	z := func(shape ...int) *nn.Tensor { x, _ := zeros64(t, shape...); return x }
	z32 := func(shape ...int) *nn.Tensor { return to32(t, z(shape...)) }
	onDevice, err := nn.New(runtime.BF16, fakeDevice{}, 2, 2)
	require.NoError(t, err)
	lora := nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 2), Scale: 1}
	att := nn.Attention{CuSeqlens: []int32{0, 2, 5}, Causal: true}
	xent := nn.CrossEntropy{Labels: []int32{1, nn.IgnoreIndex}, Norm: 1}
	one := []*nn.Tensor{z(3)}
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"matmul inner", be.MatMul(false, false, 1, z(2, 3), z(4, 2), 0, z(2, 2)), "matmul: inner dimensions differ"},
		{"matmul dtype", be.MatMul(false, false, 1, z(2, 3), z32(3, 2), 0, z(2, 2)), "matmul: b has dtype F32, want F64 (same as a)"},
		{"matmul device", be.MatMul(false, false, 1, onDevice, z(2, 2), 0, z(2, 2)), `matmul: a is on device "fake"`},
		{"lora nil x", be.LoRALinearForward(lora, nil, z(5, 4), nil), "lora_linear fwd: x is nil"},
		{"lora W", be.LoRALinearForward(nn.LoRALinear{W: z(4, 2)}, z(5, 3), z(5, 4), nil), "lora_linear fwd: W has shape [4 2], want [? 3]"},
		{"lora W in,out", be.LoRALinearForward(nn.LoRALinear{W: z(4, 3), WInOut: true}, z(5, 3), z(5, 4), nil), "lora_linear fwd: W has shape [4 3], want [3 ?]"},
		{"lora B", be.LoRALinearForward(nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 3)}, z(5, 3), z(5, 4), nil), "lora_linear fwd: B has shape [4 3], want [4 2]"},
		{"lora y", be.LoRALinearForward(lora, z(5, 3), z(5, 3), nil), "lora_linear fwd: y has shape [5 3], want [5 4]"},
		{"lora bias", be.LoRALinearForward(nn.LoRALinear{W: z(4, 3), Bias: z(3)}, z(5, 3), z(5, 4), nil), "lora_linear fwd: bias has shape [3], want [4]"},
		{"lora dropout", be.LoRALinearForward(nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 2), Dropout: nn.Dropout{P: 1}}, z(5, 3), z(5, 4), nil), "lora_linear fwd: dropout probability 1"},
		{"lora dA", be.LoRALinearBackward(lora, z(5, 3), nil, z(5, 4), nn.LoRAGrads{DA: z(3, 2)}), "lora_linear bwd: dA has shape [3 2], want [2 3]"},
		{"attn cu end", be.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 4}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5)), "attention fwd: cu_seqlens [0 4] must start at 0 and end at T = 5"},
		{"attn cu order", be.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 3, 2, 5}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5)), "attention fwd: cu_seqlens decreases at index 2"},
		{"attn gqa", be.AttentionForward(att, z(5, 3, 4), z(5, 2, 4), z(5, 2, 4), z(5, 3, 4), z(3, 5)), "attention fwd: q has 3 heads, not a positive multiple of k's 2 heads"},
		{"attn v", be.AttentionForward(att, z(5, 2, 4), z(5, 1, 4), z(5, 2, 4), z(5, 2, 4), z(2, 5)), "attention fwd: v has shape [5 2 4], want [5 1 4]"},
		{"attn lse", be.AttentionForward(att, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(5, 2)), "attention fwd: lse has shape [5 2], want [2 5]"},
		{"attn do", be.AttentionBackward(att, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5), nil, nil, nil, nil), "attention bwd: do is nil"},
		{"layernorm gamma", be.LayerNormForward(z(3, 4), z(5), nil, 1e-5, z(3, 4), nil, nil), "layernorm fwd: gamma has 5 elements (shape [5]), want 4"},
		{"layernorm eps", be.LayerNormForward(z(3, 4), z(4), nil, -1, z(3, 4), nil, nil), "layernorm fwd: eps -1"},
		{"layernorm rstd", be.LayerNormBackward(z(3, 4), z(4), z(3), z(4), z(3, 4), z(3, 4), nil, nil), "layernorm bwd: rstd has 4 elements"},
		{"rmsnorm dtype", be.RMSNormForward(z(3, 4), z32(4), 1e-6, z(3, 4), nil), "rmsnorm fwd: gamma has dtype F32, want F64 (same as x)"},
		{"gelu size", be.GELUForward(z(3, 4), z(3, 5)), "gelu fwd: y has 15 elements"},
		{"swiglu nil", be.SwiGLUBackward(z(2), z(2), nil, z(2), z(2)), "swiglu bwd: dy is nil"},
		{"rope odd", be.RoPEForward(z(2, 1, 3), []int32{0, 1}, 1e4, z(2, 1, 3)), "rope fwd: head dimension 3 of x is odd"},
		{"rope positions", be.RoPEForward(z(2, 1, 4), []int32{0}, 1e4, z(2, 1, 4)), "rope fwd: 1 positions for 2 tokens"},
		{"rope theta", be.RoPEBackward(z(2, 1, 4), []int32{0, 1}, 0, z(2, 1, 4)), "rope bwd: theta 0"},
		{"embed positions", be.EmbeddingForward([]int32{0, 1}, z(3, 2), []int32{0}, z(4, 2), z(2, 2)), "embedding fwd: 1 positions for 2 ids"},
		{"embed pos range", be.EmbeddingForward([]int32{0, 1}, z(3, 2), []int32{0, 4}, z(4, 2), z(2, 2)), "embedding fwd: positions[1] = 4 outside [0,4)"},
		{"xent label", be.crossEntropyErr(nn.CrossEntropy{Labels: []int32{3, 1}, Norm: 1}, z(2, 4), z(3, 4), z(2)), "xent fwd: labels[0] = 3 outside [0,3)"},
		{"xent norm", be.crossEntropyErr(nn.CrossEntropy{Labels: []int32{0, 1}}, z(2, 4), z(3, 4), z(2)), "xent fwd: norm 0 must be finite and positive"},
		{"xent labels", be.crossEntropyErr(nn.CrossEntropy{Labels: []int32{0}, Norm: 1}, z(2, 4), z(3, 4), z(2)), "xent fwd: 1 labels for 2 rows of h"},
		{"xent emb", be.crossEntropyErr(xent, z(2, 4), z(3, 5), z(2)), "xent fwd: emb has shape [3 5], want [? 4]"},
		{"xent weights", be.crossEntropyErr(nn.CrossEntropy{Labels: []int32{0, 1}, Norm: 1, Weights: z(3)}, z(2, 4), z(3, 4), z(2)), "xent fwd: weights has shape [3], want [2]"},
		{"xent dw", be.CrossEntropyBackward(xent, z(2, 4), z(3, 4), nil, z(2), 1, nil, nil, z(2)), "xent bwd: dw needs ce"},
		{"adamw t", be.AdamWStep(testAdam, 0, []float64{1}, one, one, one, one), "adamw step: step count t = 0"},
		{"adamw beta", be.AdamWStep(nn.AdamW{Beta1: 1}, 1, []float64{1}, one, one, one, one), "adamw step: beta1 1 outside [0,1)"},
		{"adamw lists", be.AdamWStep(testAdam, 1, []float64{1}, one, one, one, nil), "adamw step: v has 0 tensors, want 1"},
		{"adamw numel", be.AdamWStep(testAdam, 1, []float64{1}, one, []*nn.Tensor{z(4)}, one, one), "adamw step: grads[0] has 4 elements"},
		{"adamw vjp dlrs", be.AdamWStepVJP(testAdam, 1, []float64{1}, one, one, one, one, one, one, one, one, nil), "adamw vjp: dLRs has 0 entries, want 1"},
		{"sgd nil", be.SGDStep(0, []float64{1}, []*nn.Tensor{nil}, one), "sgd step: params[0] is nil"},
		{"sgd vjp", be.SGDStepVJP(0, []float64{1}, one, one, one, []*nn.Tensor{z32(3)}, []float64{0}), "sgd vjp: dGrads[0] has dtype F32"},
		{"dot", errOnly(be.Dot(z(3), z(4))), "dot: b has 4 elements"},
		{"norm list", errOnly(be.GlobalNorm([]*nn.Tensor{z(2), nil})), "globalnorm: xs[1] is nil"},
		{"clip max", errOnly(be.ClipGlobalNorm(one, 0)), "clipglobalnorm: maxNorm 0 must be positive"},
	}
	for _, c := range cases {
		require.ErrorContains(t, c.err, c.want, c.name)
	}
}

func (b *Backend) crossEntropyErr(c nn.CrossEntropy, h, e, ce *nn.Tensor) error {
	_, err := b.CrossEntropyForward(c, h, e, ce, nil)
	return err
}

func errOnly(_ float64, err error) error { return err }

// An op that rejects its arguments leaves its outputs untouched.
func TestErrorWritesNothing(t *testing.T) {
	be := New()
	q, _ := rand64(t, newRNG(23), 5, 2, 4)
	o, ov := nan64(t, 5, 2, 4)
	lse, _ := nan64(t, 2, 5)
	err := be.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 5}}, q, q, nil, o, lse)
	require.ErrorContains(t, err, "attention fwd: v is nil")
	for _, v := range ov {
		require.NotEqual(t, v, v) // still NaN
	}
}

// Garbage arguments (nil tensors, rank-0 tensors, nil slices) give errors,
// never panics.
func TestGarbageArgumentsDoNotPanic(t *testing.T) {
	be := New()
	scalar, err := nn.FromF64([]float64{1})
	require.NoError(t, err)
	for _, x := range []*nn.Tensor{nil, scalar} {
		xs := []*nn.Tensor{x}
		errs := []error{
			be.MatMul(true, true, 1, x, x, 0, x),
			be.CopyColumns(x, 0, x, 0, 1),
			be.LoRALinearForward(nn.LoRALinear{W: x, A: x, B: x, Bias: x}, x, x, x),
			be.LoRALinearBackward(nn.LoRALinear{W: x, A: x, B: x}, x, x, x, nn.LoRAGrads{DX: x, DA: x, DB: x, DW: x, DBias: x}),
			be.AttentionForward(nn.Attention{}, x, x, x, x, x),
			be.AttentionBackward(nn.Attention{}, x, x, x, x, x, x, x, x, x),
			be.LayerNormForward(x, x, x, 1e-5, x, x, x),
			be.LayerNormBackward(x, x, x, x, x, x, x, x),
			be.RMSNormForward(x, x, 1e-5, x, x),
			be.RMSNormBackward(x, x, x, x, x, x),
			be.RoPEForward(x, nil, 1e4, x),
			be.RoPEBackward(x, nil, 1e4, x),
			be.EmbeddingForward([]int32{0}, x, []int32{0}, x, x),
			be.EmbeddingBackward([]int32{0}, []int32{0}, x, x, x),
			be.crossEntropyErr(nn.CrossEntropy{Labels: []int32{0}, Norm: 1, Weights: x}, x, x, x),
			be.CrossEntropyBackward(nn.CrossEntropy{Labels: []int32{0}, Norm: 1}, x, x, x, x, 1, x, x, x),
			be.AdamWStepVJP(testAdam, 1, []float64{1}, xs, xs, xs, xs, xs, xs, xs, nil, nil),
		}
		for i, err := range errs {
			require.Error(t, err, "call %d with %v", i, x)
		}
	}
	require.Error(t, be.GELUForward(nil, nil))
	require.Error(t, be.SwiGLUForward(nil, nil, nil))
	require.Error(t, be.Zero(nil))
	require.Error(t, be.Add(nil, nil, nil))
	require.Error(t, be.Axpy(1, nil, nil))
	require.Error(t, be.Scale(1, nil))
	require.Error(t, be.Copy(nil, nil))
	_, err = be.Sum(nil)
	require.Error(t, err)
}
