package gpu

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

func errOnly(_ float64, err error) error { return err }

// TestArgumentErrorsMatchCPU makes the same bad calls on nn/cpu and on the
// gpu backend: both must fail, with the very same message (the dtype
// mismatch cases use each backend's own pair of dtypes, F64/F32 on the cpu
// and F32/BF16 here, and are compared after mapping those names).
func TestArgumentErrorsMatchCPU(t *testing.T) {
	g := testBackend(t)
	type mk func(shape ...int) *nn.Tensor
	makers := func(b nn.Backend, dt, alt runtime.DType) (mk, mk) {
		z := func(dtype runtime.DType) mk {
			return func(shape ...int) *nn.Tensor {
				x, err := b.Alloc(dtype, shape...)
				require.NoError(t, err)
				t.Cleanup(func() { _ = b.Release(x) })
				return x
			}
		}
		return z(dt), z(alt)
	}
	adam := nn.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	cases := []struct {
		name string
		call func(b nn.Backend, z, alt mk) error
	}{
		{"matmul inner", func(b nn.Backend, z, _ mk) error { return b.MatMul(false, false, 1, z(2, 3), z(4, 2), 0, z(2, 2)) }},
		{"matmul dtype", func(b nn.Backend, z, a mk) error { return b.MatMul(false, false, 1, z(2, 3), a(3, 2), 0, z(2, 2)) }},
		{"matmul c", func(b nn.Backend, z, _ mk) error { return b.MatMul(true, false, 1, z(3, 2), z(3, 4), 0, z(2, 5)) }},
		{"copycolumns", func(b nn.Backend, z, _ mk) error { return b.CopyColumns(z(3, 4), 2, z(3, 6), 0, 3) }},
		{"add", func(b nn.Backend, z, _ mk) error { return b.Add(z(3), z(3), z(4)) }},
		{"copy", func(b nn.Backend, z, _ mk) error { return b.Copy(z(3), z(4)) }},
		{"lora nil x", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 3)}, nil, z(5, 4), nil)
		}},
		{"lora W", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 2)}, z(5, 3), z(5, 4), nil)
		}},
		{"lora W in,out", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 3), WInOut: true}, z(5, 3), z(5, 4), nil)
		}},
		{"lora B", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 3)}, z(5, 3), z(5, 4), nil)
		}},
		{"lora dropout", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 2), Dropout: nn.Dropout{P: 1}}, z(5, 3), z(5, 4), nil)
		}},
		{"lora xa without adapter", func(b nn.Backend, z, _ mk) error {
			return b.LoRALinearForward(nn.LoRALinear{W: z(4, 3)}, z(5, 3), z(5, 4), z(5, 2))
		}},
		{"lora dA", func(b nn.Backend, z, _ mk) error {
			l := nn.LoRALinear{W: z(4, 3), A: z(2, 3), B: z(4, 2), Scale: 1}
			return b.LoRALinearBackward(l, z(5, 3), nil, z(5, 4), nn.LoRAGrads{DA: z(3, 2)})
		}},
		{"attn cu end", func(b nn.Backend, z, _ mk) error {
			return b.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 4}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5))
		}},
		{"attn cu order", func(b nn.Backend, z, _ mk) error {
			return b.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 3, 2, 5}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5))
		}},
		{"attn gqa", func(b nn.Backend, z, _ mk) error {
			return b.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 5}}, z(5, 3, 4), z(5, 2, 4), z(5, 2, 4), z(5, 3, 4), z(3, 5))
		}},
		{"attn lse", func(b nn.Backend, z, _ mk) error {
			return b.AttentionForward(nn.Attention{CuSeqlens: []int32{0, 5}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(5, 2))
		}},
		{"attn do", func(b nn.Backend, z, _ mk) error {
			return b.AttentionBackward(nn.Attention{CuSeqlens: []int32{0, 5}}, z(5, 2, 4), z(5, 1, 4), z(5, 1, 4), z(5, 2, 4), z(2, 5), nil, nil, nil, nil)
		}},
		{"layernorm gamma", func(b nn.Backend, z, _ mk) error {
			return b.LayerNormForward(z(3, 4), z(5), nil, 1e-5, z(3, 4), nil, nil)
		}},
		{"layernorm eps", func(b nn.Backend, z, _ mk) error {
			return b.LayerNormForward(z(3, 4), z(4), nil, -1, z(3, 4), nil, nil)
		}},
		{"layernorm rstd", func(b nn.Backend, z, _ mk) error {
			return b.LayerNormBackward(z(3, 4), z(4), z(3), z(4), z(3, 4), z(3, 4), nil, nil)
		}},
		{"rmsnorm dtype", func(b nn.Backend, z, a mk) error { return b.RMSNormForward(z(3, 4), a(4), 1e-6, z(3, 4), nil) }},
		{"gelu size", func(b nn.Backend, z, _ mk) error { return b.GELUForward(z(3, 4), z(3, 5)) }},
		{"swiglu nil", func(b nn.Backend, z, _ mk) error { return b.SwiGLUBackward(z(2), z(2), nil, z(2), z(2)) }},
		{"rope odd", func(b nn.Backend, z, _ mk) error { return b.RoPEForward(z(2, 1, 3), []int32{0, 1}, 1e4, z(2, 1, 3)) }},
		{"rope positions", func(b nn.Backend, z, _ mk) error { return b.RoPEForward(z(2, 1, 4), []int32{0}, 1e4, z(2, 1, 4)) }},
		{"rope theta", func(b nn.Backend, z, _ mk) error { return b.RoPEBackward(z(2, 1, 4), []int32{0, 1}, 0, z(2, 1, 4)) }},
		{"embed ids", func(b nn.Backend, z, _ mk) error {
			return b.EmbeddingForward([]int32{0, 3}, z(3, 2), nil, nil, z(2, 2))
		}},
		{"embed positions", func(b nn.Backend, z, _ mk) error {
			return b.EmbeddingForward([]int32{0, 1}, z(3, 2), []int32{0}, z(4, 2), z(2, 2))
		}},
		{"embed pos range", func(b nn.Backend, z, _ mk) error {
			return b.EmbeddingForward([]int32{0, 1}, z(3, 2), []int32{0, 4}, z(4, 2), z(2, 2))
		}},
		{"embed bwd", func(b nn.Backend, z, _ mk) error {
			return b.EmbeddingBackward([]int32{0, 1}, nil, z(3, 2), z(3, 2), nil)
		}},
		{"xent label", func(b nn.Backend, z, _ mk) error {
			return errOnly(b.CrossEntropyForward(nn.CrossEntropy{Labels: []int32{3, 1}, Norm: 1}, z(2, 4), z(3, 4), z(2), nil))
		}},
		{"xent norm", func(b nn.Backend, z, _ mk) error {
			return errOnly(b.CrossEntropyForward(nn.CrossEntropy{Labels: []int32{0, 1}}, z(2, 4), z(3, 4), z(2), nil))
		}},
		{"xent weights", func(b nn.Backend, z, _ mk) error {
			return errOnly(b.CrossEntropyForward(nn.CrossEntropy{Labels: []int32{0, 1}, Norm: 1, Weights: z(3)}, z(2, 4), z(3, 4), z(2), nil))
		}},
		{"xent dw", func(b nn.Backend, z, _ mk) error {
			return b.CrossEntropyBackward(nn.CrossEntropy{Labels: []int32{1, nn.IgnoreIndex}, Norm: 1}, z(2, 4), z(3, 4), nil, z(2), 1, nil, nil, z(2))
		}},
		{"adamw t", func(b nn.Backend, z, _ mk) error {
			one := []*nn.Tensor{z(3)}
			return b.AdamWStep(adam, 0, []float64{1}, one, one, one, one)
		}},
		{"adamw lists", func(b nn.Backend, z, _ mk) error {
			one := []*nn.Tensor{z(3)}
			return b.AdamWStep(adam, 1, []float64{1}, one, one, one, nil)
		}},
		{"adamw numel", func(b nn.Backend, z, _ mk) error {
			one := []*nn.Tensor{z(3)}
			return b.AdamWStep(adam, 1, []float64{1}, one, []*nn.Tensor{z(4)}, one, one)
		}},
		{"adamw vjp dlrs", func(b nn.Backend, z, _ mk) error {
			one := []*nn.Tensor{z(3)}
			return b.AdamWStepVJP(adam, 1, []float64{1}, one, one, one, one, one, one, one, one, nil)
		}},
		{"sgd nil", func(b nn.Backend, z, _ mk) error {
			return b.SGDStep(0, []float64{1}, []*nn.Tensor{nil}, []*nn.Tensor{z(3)})
		}},
		{"sgd lr", func(b nn.Backend, z, _ mk) error {
			one := []*nn.Tensor{z(3)}
			return b.SGDStep(0, []float64{1 / zero()}, one, one)
		}},
		{"dot", func(b nn.Backend, z, _ mk) error { return errOnly(b.Dot(z(3), z(4))) }},
		{"norm list", func(b nn.Backend, z, _ mk) error { return errOnly(b.GlobalNorm([]*nn.Tensor{z(2), nil})) }},
		{"clip max", func(b nn.Backend, z, _ mk) error { return errOnly(b.ClipGlobalNorm([]*nn.Tensor{z(3)}, 0)) }},
	}
	c := cpu.New()
	zc, ac := makers(c, runtime.F64, runtime.F32)
	zg, ag := makers(g, runtime.F32, runtime.BF16)
	for _, tc := range cases {
		errC := tc.call(c, zc, ac)
		errG := tc.call(g, zg, ag)
		require.Error(t, errC, tc.name)
		require.Error(t, errG, tc.name)
		want := errC.Error()
		if tc.name == "matmul dtype" || tc.name == "rmsnorm dtype" {
			want = mapDTypes(want)
		}
		require.Equal(t, want, errG.Error(), tc.name)
	}
}

func zero() float64 { return 0 }

// mapDTypes rewrites the cpu's F64/F32 pair as the gpu's F32/BF16.
func mapDTypes(s string) string {
	out := []rune{}
	r := []rune(s)
	for i := 0; i < len(r); i++ {
		switch {
		case i+3 <= len(r) && string(r[i:i+3]) == "F64":
			out = append(out, []rune("F32")...)
			i += 2
		case i+3 <= len(r) && string(r[i:i+3]) == "F32":
			out = append(out, []rune("BF16")...)
			i += 2
		default:
			out = append(out, r[i])
		}
	}
	return string(out)
}

// TestGPUOnlyErrors covers what only the gpu backend refuses.
func TestGPUOnlyErrors(t *testing.T) {
	g := testBackend(t)
	z := func(dt runtime.DType, shape ...int) *nn.Tensor {
		x, err := g.Alloc(dt, shape...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = g.Release(x) })
		return x
	}
	h, err := nn.Zeros(runtime.F32, 2, 2)
	require.NoError(t, err)
	kind := g.Device().Kind()
	require.EqualError(t, g.MatMul(false, false, 1, h, z(runtime.F32, 2, 2), 0, z(runtime.F32, 2, 2)),
		fmt.Sprintf(`matmul: a is on device "cpu", want a tensor of this %s backend`, kind))
	other, err := New(g.Device())
	require.NoError(t, err)
	defer other.Close()
	o, err := other.Alloc(runtime.F32, 2, 2)
	require.NoError(t, err)
	require.ErrorContains(t, g.Add(z(runtime.F32, 2, 2), o, z(runtime.F32, 2, 2)), "add: b is on device")

	// Kernel limits: attention head dimensions above 128, LoRA ranks above 256.
	a := nn.Attention{CuSeqlens: []int32{0, 2}}
	q := z(runtime.F32, 2, 1, 130)
	require.EqualError(t, g.AttentionForward(a, q, q, q, z(runtime.F32, 2, 1, 130), z(runtime.F32, 1, 2)),
		"attention fwd: head dimension 130 exceeds the gpu kernels' maximum 128")
	l := nn.LoRALinear{W: z(runtime.F32, 4, 3), A: z(runtime.F32, 257, 3), B: z(runtime.F32, 4, 257), Scale: 1}
	require.EqualError(t, g.LoRALinearForward(l, z(runtime.F32, 2, 3), z(runtime.F32, 2, 4), nil),
		"lora_linear fwd: adapter rank 257 exceeds the gpu kernels' maximum 256")
	one := []*nn.Tensor{z(runtime.BF16, 3)}
	require.EqualError(t, g.AdamWStep(nn.AdamW{Beta1: 0.9, Beta2: 0.99}, 1, []float64{1}, one, one, one, one),
		"adamw step: params[0] has dtype BF16; the gpu backend runs this op on F32 tensors only")

	// A closed backend refuses work.
	b2, err := New(g.Device())
	require.NoError(t, err)
	x, err := b2.Alloc(runtime.F32, 3)
	require.NoError(t, err)
	require.NoError(t, b2.Close())
	require.EqualError(t, b2.Zero(x), "zero: backend is closed")
	_, err = b2.Alloc(runtime.F32, 3)
	require.EqualError(t, err, "gpu alloc: backend is closed")

	// Out of pool memory is an error that wraps runtime.ErrOutOfMemory.
	small, err := New(g.Device(), WithPoolLimit(4<<20))
	require.NoError(t, err)
	defer small.Close()
	_, err = small.Alloc(runtime.F32, 8<<20)
	require.True(t, errors.Is(err, runtime.ErrOutOfMemory), "%v", err)
}

func TestOpen(t *testing.T) {
	b, err := Open("cpu")
	require.NoError(t, err)
	require.IsType(t, &cpu.Backend{}, b)
	b, err = Open("emu")
	require.NoError(t, err)
	require.Contains(t, b.Name(), "gpu on emu")
	x, err := b.Alloc(runtime.F32, 3)
	require.NoError(t, err)
	require.NoError(t, b.Scale(2, x))
	require.NoError(t, b.(interface{ Close() error }).Close())
	_, err = Open("tpu")
	require.EqualError(t, err, `open backend "tpu": unknown backend (have [cpu emu cuda])`)
	b, err = Open("cuda")
	if errors.Is(err, runtime.ErrNoCUDA) {
		return // a binary built without -tags cuda
	}
	require.NoError(t, err)
	require.Contains(t, b.Name(), "gpu on ")
	require.NoError(t, b.(interface{ Close() error }).Close())
}
