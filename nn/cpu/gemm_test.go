package cpu

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// gemm, whichever library it uses (gonum, or OpenBLAS with -tags openblas),
// agrees with gonum called directly, on strided operands (leading
// dimensions wider than the rows, slices starting mid-buffer), every transpose
// and shapes past OpenBLAS's threading thresholds, in float32 and float64.
func TestGemmAgreesWithGonum(t *testing.T) {
	rng := newRNG(7)
	trans := func(t bool) blas.Transpose {
		if t {
			return blas.Trans
		}
		return blas.NoTrans
	}
	for _, sz := range [][3]int{{1, 1, 1}, {5, 3, 7}, {64, 48, 80}, {257, 131, 190}} {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				m, k, n := sz[0], sz[1], sz[2]
				t.Run(fmt.Sprintf("m=%d,k=%d,n=%d,ta=%v,tb=%v", m, k, n, ta, tb), func(t *testing.T) {
					ra, ca := m, k
					if ta {
						ra, ca = k, m
					}
					rb, cb := k, n
					if tb {
						rb, cb = n, k
					}
					lda, ldb, ldc := ca+3, cb+1, n+2
					const off = 5
					av := randVec(rng, off+lda*ra)
					bv := randVec(rng, off+ldb*rb)
					cv := randVec(rng, off+ldc*m)

					want := append([]float64(nil), cv...)
					blas64.Implementation().Dgemm(trans(ta), trans(tb), m, n, k, 0.7, av[off:], lda, bv[off:], ldb, -0.3, want[off:], ldc)
					got := append([]float64(nil), cv...)
					gemm(ta, tb, m, n, k, 0.7, av[off:], lda, bv[off:], ldb, -0.3, got[off:], ldc)
					requireClose(t, got, want, 1e-13, "f64")

					a32, b32, c32 := to32s(av), to32s(bv), to32s(cv)
					want32 := append([]float32(nil), c32...)
					blas32.Implementation().Sgemm(trans(ta), trans(tb), m, n, k, 0.7, a32[off:], lda, b32[off:], ldb, -0.3, want32[off:], ldc)
					got32 := append([]float32(nil), c32...)
					gemm(ta, tb, m, n, k, 0.7, a32[off:], lda, b32[off:], ldb, -0.3, got32[off:], ldc)
					requireClose(t, to64s(got32), to64s(want32), f32Tol, "f32")
				})
			}
		}
	}
}

// gemm rejects leading dimensions and slices that do not fit, before any
// library sees them.
func TestGemmChecksArguments(t *testing.T) {
	buf := make([]float32, 64)
	for _, c := range []struct {
		name string
		call func()
		msg  string
	}{
		{"lda", func() { gemm(false, false, 2, 3, 4, 1, buf, 3, buf, 3, 0, buf, 3) }, "cpu: gemm: leading dimension of a is 3, want at least 4"},
		{"ldb trans", func() { gemm(false, true, 2, 3, 4, 1, buf, 4, buf, 3, 0, buf, 3) }, "cpu: gemm: leading dimension of b is 3, want at least 4"},
		{"ldc", func() { gemm(false, false, 2, 3, 4, 1, buf, 4, buf, 3, 0, buf, 2) }, "cpu: gemm: leading dimension of c is 2, want at least 3"},
		{"short a", func() { gemm(true, false, 2, 3, 4, 1, buf[:7], 2, buf, 3, 0, buf, 3) }, "cpu: gemm: a has 7 elements, want at least 8"},
		{"short c", func() { gemm(false, false, 2, 3, 4, 1, buf, 4, buf, 3, 0, buf[:6], 4) }, "cpu: gemm: c has 6 elements, want at least 7"},
	} {
		require.PanicsWithValue(t, c.msg, c.call, c.name)
	}
	// Exactly long enough is fine: a 2x3 c with ldc 4 needs 4+3 elements.
	c := make([]float32, 7)
	require.NotPanics(t, func() { gemm(false, false, 2, 3, 4, 1, buf, 4, buf, 3, 0, c, 4) })
}

func to32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func to64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
