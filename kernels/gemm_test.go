package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/runtime"
)

// refGEMM is C = alpha·A·op(B) + beta·C0 in float64 on already-rounded
// inputs, and the scale Σ|terms| of each element.
func refGEMM(a, b, c0 []float64, m, n, k int, transB bool, alpha, beta float64) (out, scale []float64) {
	out = make([]float64, m*n)
	scale = make([]float64, m*n)
	for i := range m {
		for j := range n {
			s, sa := 0.0, 0.0
			for p := range k {
				bv := b[p*n+j]
				if transB {
					bv = b[j*k+p]
				}
				s += a[i*k+p] * bv
				sa += math.Abs(a[i*k+p] * bv)
			}
			out[i*n+j] = alpha * s
			scale[i*n+j] = math.Abs(alpha) * sa
			if beta != 0 {
				out[i*n+j] += beta * c0[i*n+j]
				scale[i*n+j] += math.Abs(beta * c0[i*n+j])
			}
		}
	}
	return out, scale
}

func TestGoldenGEMM(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(13, 14))
	shapes := [][3]int{{1, 1, 1}, {16, 8, 16}, {64, 64, 32}, {65, 63, 33}, {7, 130, 40}, {100, 9, 72}, {33, 70, 257}, {128, 96, 64}}
	for range 3 {
		shapes = append(shapes, [3]int{1 + rng.IntN(150), 1 + rng.IntN(150), 1 + rng.IntN(150)})
	}
	for _, dt := range []runtime.DType{runtime.BF16, runtime.F16} {
		for _, transB := range []bool{true, false} {
			for si, s := range shapes {
				m, n, k := s[0], s[1], s[2]
				t.Run(fmt.Sprintf("%s/nt=%v/%dx%dx%d", dt, transB, m, n, k), func(t *testing.T) {
					a := kt.Rand(rng, dt, m*k, 1)
					b := kt.Rand(rng, dt, n*k, 1)
					bShape := []int{k, n}
					if transB {
						bShape = []int{n, k}
					}
					aa := kt.Upload(t, d, dt, []int{m, k}, a)
					ba := kt.Upload(t, d, dt, bShape, b)
					alpha, beta := 1.0, 0.0
					var c0 []float64
					var ca kernels.Array
					if si%2 == 1 { // accumulate into an existing C
						alpha, beta = 0.5, -1.25
						c0 = kt.Rand(rng, runtime.F32, m*n, 1)
						ca = kt.Upload(t, d, runtime.F32, []int{m, n}, c0)
					} else {
						ca = kt.Poisoned(t, d, runtime.F32, []int{m, n})
					}
					require.NoError(t, kernels.GEMM(0, ca, aa, ba, transB, float32(alpha), float32(beta)))
					want, scale := refGEMM(a, b, c0, m, n, k, transB, alpha, beta)
					layout := "nn"
					if transB {
						layout = "nt"
					}
					// Products of 16-bit inputs are exact in f32; only the f32
					// accumulation rounds, so the f32 tolerance applies.
					kt.CheckScaled(t, "gemm_"+kname("", dt)[1:]+"_"+layout, 1e-5, kt.Download(t, ca), want, scale)
				})
			}
		}
	}
}

func TestGEMMBadInput(t *testing.T) {
	d := kt.Device(t)
	a := kt.Alloc(t, d, runtime.BF16, []int{4, 8})
	b := kt.Alloc(t, d, runtime.BF16, []int{5, 9})
	c := kt.Alloc(t, d, runtime.F32, []int{4, 5})
	require.ErrorContains(t, kernels.GEMM(0, c, a, b, true, 1, 0), "gemm: argument B has shape [5 9], want [N,8]")
	bf := kt.Alloc(t, d, runtime.F16, []int{5, 8})
	require.ErrorContains(t, kernels.GEMM(0, c, a, bf, true, 1, 0), "gemm: argument B has dtype F16")
	c2 := kt.Alloc(t, d, runtime.F32, []int{4, 6})
	require.ErrorContains(t, kernels.GEMM(0, c2, a, kt.Alloc(t, d, runtime.BF16, []int{5, 8}), true, 1, 0), "gemm: argument C has shape [4 6], want [4,5]")
}
