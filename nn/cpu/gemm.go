package cpu

import (
	"fmt"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// gemm computes c = alpha·op(a)·op(b) + beta·c for row-major matrices, with
// op(a) [m,k], op(b) [k,n], c [m,n] and leading dimensions lda, ldb, ldc;
// beta = 0 ignores c's old contents. It checks its arguments the same way for
// every library, then forwards to sgemm/dgemm: gonum's Sgemm/Dgemm by default
// (gemm_gonum.go), OpenBLAS's cblas_sgemm/cblas_dgemm with the openblas build
// tag (gemm_openblas.go).
func gemm[T Float](transA, transB bool, m, n, k int, alpha float64, a []T, lda int, b []T, ldb int, beta float64, c []T, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || alpha == 0 {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			for j := range row {
				if beta == 0 {
					row[j] = 0
				} else {
					row[j] *= T(beta)
				}
			}
		}
		return
	}
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	switch cc := any(c).(type) {
	case []float32:
		sgemm(transA, transB, m, n, k, float32(alpha), any(a).([]float32), lda, any(b).([]float32), ldb, float32(beta), cc, ldc)
	case []float64:
		dgemm(transA, transB, m, n, k, alpha, any(a).([]float64), lda, any(b).([]float64), ldb, beta, cc, ldc)
	}
}

// checkGemm panics, as gonum's Sgemm/Dgemm would, unless m, n, k > 0 and the
// leading dimensions and slice lengths describe row-major op(a) [m,k], op(b)
// [k,n] and c [m,n] that fit in their slices. sgemm and dgemm may assume it
// passed: in particular no library is ever handed an empty slice or told to
// read past a slice's end.
func checkGemm(transA, transB bool, m, n, k, lenA, lda, lenB, ldb, lenC, ldc int) {
	if m <= 0 || n <= 0 || k <= 0 {
		panic(fmt.Sprintf("cpu: gemm: bad dimensions m=%d n=%d k=%d", m, n, k))
	}
	ra, ca := m, k // rows and columns of a as stored
	if transA {
		ra, ca = k, m
	}
	rb, cb := k, n
	if transB {
		rb, cb = n, k
	}
	for _, x := range []struct {
		name                 string
		rows, cols, ld, size int
	}{
		{"a", ra, ca, lda, lenA},
		{"b", rb, cb, ldb, lenB},
		{"c", m, n, ldc, lenC},
	} {
		if x.ld < x.cols {
			panic(fmt.Sprintf("cpu: gemm: leading dimension of %s is %d, want at least %d", x.name, x.ld, x.cols))
		}
		if need := x.ld*(x.rows-1) + x.cols; x.size < need {
			panic(fmt.Sprintf("cpu: gemm: %s has %d elements, want at least %d", x.name, x.size, need))
		}
	}
}

// MatMul sets c = alpha·op(a)·op(b) + beta·c for 2-D tensors (see
// nn.Backend.MatMul).
func (*Backend) MatMul(transA, transB bool, alpha float64, a, b *nn.Tensor, beta float64, c *nn.Tensor) error {
	ck := newChecker("matmul")
	m, n, ka := nn.CheckMatMul(ck, transA, transB, a, b, c)
	if ck.Err() != nil {
		return ck.Err()
	}
	if a.DType() == runtime.F32 {
		gemm(transA, transB, m, n, ka, alpha, data[float32](a), max(1, a.Dim(1)), data[float32](b), max(1, b.Dim(1)), beta, data[float32](c), max(1, n))
	} else {
		gemm(transA, transB, m, n, ka, alpha, data[float64](a), max(1, a.Dim(1)), data[float64](b), max(1, b.Dim(1)), beta, data[float64](c), max(1, n))
	}
	return nil
}
