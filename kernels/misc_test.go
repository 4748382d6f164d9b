package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// miscTensor wraps float64 values as an nn/cpu tensor.
func miscTensor(t *testing.T, v []float64, shape ...int) *nn.Tensor {
	t.Helper()
	x, err := nn.FromF64(append([]float64(nil), v...), shape...)
	require.NoError(t, err)
	return x
}

func miscAbs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Abs(x)
	}
	return out
}

func miscLayout(transA, transB bool) string {
	s := ""
	for _, t := range []bool{transA, transB} {
		if t {
			s += "t"
		} else {
			s += "n"
		}
	}
	return s
}

// TestGoldenMiscGEMM checks misc_gemm in all four layouts against nn/cpu
// MatMul in float64 on the same rounded inputs, with the error of each
// element scaled by |alpha|·Σ_k|a·b| + |beta·c|.
func TestGoldenMiscGEMM(t *testing.T) {
	d := kt.Device(t)
	ref := cpu.New()
	rng := rand.New(rand.NewPCG(41, 42))
	shapes := [][3]int{{1, 1, 1}, {64, 64, 16}, {65, 63, 33}, {7, 130, 17}, {100, 9, 5}, {3, 5, 0}}
	for range 2 {
		shapes = append(shapes, [3]int{1 + rng.IntN(140), 1 + rng.IntN(140), 1 + rng.IntN(90)})
	}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, transA := range []bool{false, true} {
			for _, transB := range []bool{false, true} {
				name := "misc_gemm_" + kname("", dt)[1:] + "_" + miscLayout(transA, transB)
				for si, s := range shapes {
					m, n, k := s[0], s[1], s[2]
					t.Run(fmt.Sprintf("%s/%dx%dx%d", name, m, n, k), func(t *testing.T) {
						aShape, bShape := []int{m, k}, []int{k, n}
						if transA {
							aShape = []int{k, m}
						}
						if transB {
							bShape = []int{n, k}
						}
						a := kt.Rand(rng, dt, m*k, 1)
						b := kt.Rand(rng, dt, k*n, 1)
						alpha, beta := 1.0, 0.0
						c0 := make([]float64, m*n)
						ca := kt.Poisoned(t, d, dt, []int{m, n})
						if si%2 == 1 {
							alpha, beta = -0.75, 1.5
							c0 = kt.Rand(rng, dt, m*n, 1)
							ca = kt.Upload(t, d, dt, []int{m, n}, c0)
						}
						aa, ba := kt.Upload(t, d, dt, aShape, a), kt.Upload(t, d, dt, bShape, b)
						require.NoError(t, kernels.MatMul(0, transA, transB, float32(alpha), aa, ba, float32(beta), ca))

						want := miscTensor(t, c0, m, n)
						require.NoError(t, ref.MatMul(transA, transB, alpha, miscTensor(t, a, aShape...), miscTensor(t, b, bShape...), beta, want))
						scale := miscTensor(t, miscAbs(c0), m, n)
						require.NoError(t, ref.MatMul(transA, transB, math.Abs(alpha), miscTensor(t, miscAbs(a), aShape...),
							miscTensor(t, miscAbs(b), bShape...), math.Abs(beta), scale))
						wv, _ := want.F64()
						sv, _ := scale.F64()
						if dt == runtime.BF16 { // the output is rounded to bf16 once
							kt.CheckScaled(t, name, kt.Tolerance(dt), kt.Download(t, ca), wv, sv)
						} else {
							kt.CheckScaled(t, name, 1e-5, kt.Download(t, ca), wv, sv)
						}
					})
				}
			}
		}
	}
}

// TestMiscGEMMDeterministic runs one product twice and compares the bits.
func TestMiscGEMMDeterministic(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(43, 44))
	m, n, k := 70, 90, 150
	aa := kt.Upload(t, d, runtime.F32, []int{k, m}, kt.Rand(rng, runtime.F32, m*k, 1))
	ba := kt.Upload(t, d, runtime.F32, []int{n, k}, kt.Rand(rng, runtime.F32, n*k, 1))
	var runs [2][]float64
	for i := range runs {
		c := kt.Poisoned(t, d, runtime.F32, []int{m, n})
		require.NoError(t, kernels.MatMul(0, true, true, 1, aa, ba, 0, c))
		runs[i] = kt.Download(t, c)
	}
	for i := range runs[0] {
		require.Equal(t, math.Float64bits(runs[0][i]), math.Float64bits(runs[1][i]), "element %d", i)
	}
}

// TestGoldenMiscAxpby checks misc_axpby as nn/cpu Add (alpha = beta = 1, also
// in place) and Scale (no b).
func TestGoldenMiscAxpby(t *testing.T) {
	d := kt.Device(t)
	ref := cpu.New()
	rng := rand.New(rand.NewPCG(45, 46))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		name := kname("misc_axpby", dt)
		for _, n := range kt.RaggedSizes(rng, 5000) {
			a, b := kt.Rand(rng, dt, n, 2), kt.Rand(rng, dt, n, 2)
			// Add into a fresh output.
			aa, ba := kt.Upload(t, d, dt, []int{n}, a), kt.Upload(t, d, dt, []int{n}, b)
			out := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.Axpby(0, 1, aa, 1, ba, out))
			want := miscTensor(t, make([]float64, n), n)
			require.NoError(t, ref.Add(miscTensor(t, a, n), miscTensor(t, b, n), want))
			wv, _ := want.F64()
			scale := make([]float64, n)
			for i := range scale {
				scale[i] = math.Abs(a[i]) + math.Abs(b[i])
			}
			kt.CheckScaled(t, name, kt.Tolerance(dt), kt.Download(t, out), wv, scale, "add n=", n)
			// Add in place (out aliases b).
			require.NoError(t, kernels.Axpby(0, 1, aa, 1, ba, ba))
			kt.CheckScaled(t, name, kt.Tolerance(dt), kt.Download(t, ba), wv, scale, "add in place n=", n)
			// Scale in place.
			alpha := rng.NormFloat64()
			require.NoError(t, kernels.Axpby(0, float32(alpha), aa, 0, kernels.Array{}, aa))
			x := miscTensor(t, a, n)
			require.NoError(t, ref.Scale(alpha, x))
			xv, _ := x.F64()
			kt.Check(t, name, dt, kt.Download(t, aa), xv, "scale n=", n)
		}
	}
}

// TestGoldenMiscCopyColumns checks misc_copy_cols against nn/cpu CopyColumns
// (bit-exact), leaving the other destination columns alone.
func TestGoldenMiscCopyColumns(t *testing.T) {
	d := kt.Device(t)
	ref := cpu.New()
	rng := rand.New(rand.NewPCG(47, 48))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
		name := "misc_copy_cols_b32"
		if dt.Size() == 2 {
			name = "misc_copy_cols_b16"
		}
		for _, rows := range []int{1, 7, 33, 130} {
			ms, md := 1+rng.IntN(70), 1+rng.IntN(70)
			cols := rng.IntN(min(ms, md) + 1)
			so, do := rng.IntN(ms-cols+1), rng.IntN(md-cols+1)
			src, dst := kt.Rand(rng, dt, rows*ms, 3), kt.Rand(rng, dt, rows*md, 3)
			sa, da := kt.Upload(t, d, dt, []int{rows, ms}, src), kt.Upload(t, d, dt, []int{rows, md}, dst)
			require.NoError(t, kernels.CopyColumns(0, da, do, sa, so, cols))
			want := miscTensor(t, dst, rows, md)
			require.NoError(t, ref.CopyColumns(want, do, miscTensor(t, src, rows, ms), so, cols))
			wv, _ := want.F64()
			kt.CheckTol(t, name, 0, kt.Download(t, da), wv, "rows=", rows, " cols=", cols)
		}
	}
}

func TestMiscBadInput(t *testing.T) {
	d := kt.Device(t)
	f := func(shape ...int) kernels.Array { return kt.Alloc(t, d, runtime.F32, shape) }
	require.ErrorContains(t, kernels.MatMul(0, false, false, 1, f(4, 8), f(9, 5), 0, f(4, 5)),
		"misc_gemm: inner dimensions differ: op(a) is [4 8], op(b) is [9 5]")
	require.ErrorContains(t, kernels.MatMul(0, false, true, 1, f(4, 8), f(5, 8), 0, f(5, 4)),
		"misc_gemm: argument c has shape [5 4], want [4 5]")
	require.ErrorContains(t, kernels.MatMul(0, false, false, 1, f(4, 8), kt.Alloc(t, d, runtime.BF16, []int{8, 5}), 0, f(4, 5)),
		"misc_gemm: argument b has dtype BF16")
	require.ErrorContains(t, kernels.MatMul(0, false, false, 1, f(4, 8, 1), f(8, 5), 0, f(4, 5)),
		"misc_gemm: argument a has shape [4 8 1], want a matrix")
	h := kt.Alloc(t, d, runtime.F16, []int{4})
	require.ErrorContains(t, kernels.Axpby(0, 1, h, 1, h, h), "misc_axpby: argument out has dtype F16")
	require.ErrorContains(t, kernels.Axpby(0, 1, f(4), 1, f(5), f(4)), "misc_axpby: argument b has 5 elements but out has 4")
	require.ErrorContains(t, kernels.CopyColumns(0, f(3, 4), 2, f(3, 6), 0, 3),
		"misc_copy_cols: destination columns [2,5) outside dst with 4 columns")
	require.ErrorContains(t, kernels.CopyColumns(0, f(3, 4), 0, f(2, 6), 0, 3), "misc_copy_cols: argument src has 2 rows, dst has 3")
	require.ErrorContains(t, kernels.CopyColumns(0, f(3, 4), 0, f(3, 6), 5, 3),
		"misc_copy_cols: source columns [5,8) outside src with 6 columns")
}
