package kernels

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

var gemmFamily = newFamily("gemm", "gemm_bf16_nt", "gemm_bf16_nn", "gemm_f16_nt", "gemm_f16_nn")

const (
	gemmTile    = 64
	gemmThreads = 128
	gemmMaxDim  = 1 << 30
)

// GEMM computes C = alpha·A·op(B) + beta·C on the tensor cores, with A [M,K]
// and, when transB, B [N,K] (a Linear weight: C = A·Bᵀ), else B [K,N]. A and B
// are bf16 or f16 (the same), C is f32 [M,N]; accumulation is f32. beta == 0
// never reads C.
func GEMM(s runtime.Stream, c, a, b Array, transB bool, alpha, beta float32) error {
	const k = "gemm"
	if err := checkDev(k, c.Dev, arg("C", c), arg("A", a), arg("B", b)); err != nil {
		return err
	}
	if err := checkDType(k, "A", a, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if err := checkDType(k, "B", b, a.DType); err != nil {
		return err
	}
	if err := checkDType(k, "C", c, runtime.F32); err != nil {
		return err
	}
	for _, x := range []namedArray{arg("A", a), arg("B", b), arg("C", c)} {
		if len(x.a.Shape) != 2 {
			return fmt.Errorf("%s: argument %s has shape %v, want a matrix", k, x.name, x.a.Shape)
		}
		for _, d := range x.a.Shape {
			if d < 1 || d > gemmMaxDim {
				return fmt.Errorf("%s: argument %s has shape %v; every dimension must be in [1, %d]", k, x.name, x.a.Shape, gemmMaxDim)
			}
		}
	}
	m, kk := a.Shape[0], a.Shape[1]
	var n int
	if transB {
		n = b.Shape[0]
		if b.Shape[1] != kk {
			return fmt.Errorf("%s: argument B has shape %v, want [N,%d] (A is %v)", k, b.Shape, kk, a.Shape)
		}
	} else {
		n = b.Shape[1]
		if b.Shape[0] != kk {
			return fmt.Errorf("%s: argument B has shape %v, want [%d,N] (A is %v)", k, b.Shape, kk, a.Shape)
		}
	}
	if c.Shape[0] != m || c.Shape[1] != n {
		return fmt.Errorf("%s: argument C has shape %v, want [%d,%d]", k, c.Shape, m, n)
	}
	layout := "nn"
	rowLen := n // row length of B, the loaded operand besides A
	if transB {
		layout = "nt"
		rowLen = kk
	}
	vec := 0
	if kk%8 == 0 && rowLen%8 == 0 && a.Ptr%16 == 0 && b.Ptr%16 == 0 {
		vec = 1
	}
	name := "gemm_" + suffix(a.DType) + "_" + layout
	fn, err := function(c.Dev, gemmFamily, name)
	if err != nil {
		return err
	}
	grid := runtime.Dim3{X: (n + gemmTile - 1) / gemmTile, Y: (m + gemmTile - 1) / gemmTile, Z: 1}
	if err := c.Dev.Launch(fn, grid, runtime.D1(gemmThreads), 0, s, []uint64{
		runtime.PtrParam(c.Ptr), runtime.PtrParam(a.Ptr), runtime.PtrParam(b.Ptr),
		runtime.I64Param(m), runtime.I64Param(n), runtime.I64Param(kk),
		runtime.F32Param(alpha), runtime.F32Param(beta), runtime.I64Param(vec),
	}); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}
