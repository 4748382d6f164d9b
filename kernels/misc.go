package kernels

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var miscFamily = newFamily("misc",
	"misc_gemm_f32_nn", "misc_gemm_f32_nt", "misc_gemm_f32_tn", "misc_gemm_f32_tt",
	"misc_gemm_bf16_nn", "misc_gemm_bf16_nt", "misc_gemm_bf16_tn", "misc_gemm_bf16_tt",
	"misc_axpby_f32", "misc_axpby_bf16", "misc_copy_cols_b32", "misc_copy_cols_b16")

const (
	miscTile     = 64
	miscThreads  = 256
	miscMaxGridY = 65535
)

// MatMul computes c = alpha·op(a)·op(b) + beta·c for row-major matrices of
// one storage type (F32 or BF16): op(a) is a [M,K], or a [K,M] transposed
// when transA; op(b) is b [K,N], or b [N,K] transposed when transB; c is
// [M,N]. Accumulation is f32 FMA with k in increasing order, one thread per
// output element (kernel misc_gemm_<t>_<ab>), so F32 results have f32
// accuracy and reruns give identical bits; BF16 outputs are rounded once.
// beta == 0 never reads c (NaN-safe); alpha == 0 or K == 0 never reads a
// or b. M and N
// may be 0 (nothing to do), K may be 0 (c = beta·c). c must not overlap a
// or b.
func MatMul(s runtime.Stream, transA, transB bool, alpha float32, a, b Array, beta float32, c Array) error {
	const k = "misc_gemm"
	if err := checkDev(k, c.Dev, arg("c", c), arg("a", a), arg("b", b)); err != nil {
		return err
	}
	if err := checkDType(k, "c", c, runtime.F32, runtime.BF16); err != nil {
		return err
	}
	for _, x := range []namedArray{arg("a", a), arg("b", b)} {
		if err := checkDType(k, x.name, x.a, c.DType); err != nil {
			return err
		}
	}
	for _, x := range []namedArray{arg("a", a), arg("b", b), arg("c", c)} {
		if len(x.a.Shape) != 2 {
			return fmt.Errorf("%s: argument %s has shape %v, want a matrix", k, x.name, x.a.Shape)
		}
		for _, d := range x.a.Shape {
			if d < 0 || d > math.MaxInt32 {
				return fmt.Errorf("%s: argument %s has shape %v; every dimension must be in [0, 2³¹)", k, x.name, x.a.Shape)
			}
		}
	}
	m, ka := a.Shape[0], a.Shape[1]
	if transA {
		m, ka = ka, m
	}
	kb, n := b.Shape[0], b.Shape[1]
	if transB {
		kb, n = n, kb
	}
	if ka != kb {
		return fmt.Errorf("%s: inner dimensions differ: op(a) is [%d %d], op(b) is [%d %d]", k, m, ka, kb, n)
	}
	if c.Shape[0] != m || c.Shape[1] != n {
		return fmt.Errorf("%s: argument c has shape %v, want [%d %d]", k, c.Shape, m, n)
	}
	if (m+miscTile-1)/miscTile > miscMaxGridY {
		return fmt.Errorf("%s: %d rows exceed the kernel's limit of %d", k, m, miscMaxGridY*miscTile)
	}
	layout := func(t bool) string {
		if t {
			return "t"
		}
		return "n"
	}
	name := "misc_gemm_" + suffix(c.DType) + "_" + layout(transA) + layout(transB)
	fn, err := function(c.Dev, miscFamily, name)
	if err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	kk := ka
	if alpha == 0 || kk == 0 {
		kk, alpha = 0, 0 // c = beta·c without reading a or b
	}
	grid := runtime.Dim3{X: (n + miscTile - 1) / miscTile, Y: (m + miscTile - 1) / miscTile, Z: 1}
	if err := c.Dev.Launch(fn, grid, runtime.D1(miscThreads), 0, s, []uint64{
		runtime.PtrParam(c.Ptr), runtime.PtrParam(a.Ptr), runtime.PtrParam(b.Ptr),
		runtime.I64Param(m), runtime.I64Param(n), runtime.I64Param(kk),
		runtime.F32Param(alpha), runtime.F32Param(beta),
	}); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// Axpby sets out = alpha·a + beta·b elementwise in f32 (one fused
// multiply-add, rounded once to the storage type), or out = alpha·a when b is
// the zero Array. a, b and out share one storage type (F32 or BF16) and
// element count; out may alias a or b. Add is Axpby(1, a, 1, b, out), Scale
// is Axpby(alpha, x, 0, Array{}, x).
func Axpby(s runtime.Stream, alpha float32, a Array, beta float32, b Array, out Array) error {
	const k = "misc_axpby"
	args := []namedArray{arg("out", out), arg("a", a)}
	if present(b) {
		args = append(args, arg("b", b))
	}
	if err := checkDev(k, out.Dev, args...); err != nil {
		return err
	}
	if err := checkDType(k, "out", out, runtime.F32, runtime.BF16); err != nil {
		return err
	}
	for _, x := range args[1:] {
		if err := checkDType(k, x.name, x.a, out.DType); err != nil {
			return err
		}
		if err := checkSameLen(k, args[0], x); err != nil {
			return err
		}
	}
	var bp uint64
	if present(b) {
		bp = runtime.PtrParam(b.Ptr)
	}
	n := out.Numel()
	return launch1D(out.Dev, s, miscFamily, "misc_axpby_"+suffix(out.DType), n,
		runtime.PtrParam(out.Ptr), runtime.PtrParam(a.Ptr), bp, runtime.I64Param(n),
		runtime.F32Param(alpha), runtime.F32Param(beta))
}

// CopyColumns copies columns [srcOff, srcOff+cols) of the matrix src [N,Ms]
// into columns [dstOff, dstOff+cols) of dst [N,Md], leaving dst's other
// columns untouched. dst and src have one storage type (4- or 2-byte
// elements: F32, I32, BF16, F16) and must not overlap.
func CopyColumns(s runtime.Stream, dst Array, dstOff int, src Array, srcOff int, cols int) error {
	const k = "misc_copy_cols"
	if err := checkDev(k, dst.Dev, arg("dst", dst), arg("src", src)); err != nil {
		return err
	}
	if err := checkDType(k, "dst", dst, runtime.F32, runtime.I32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if err := checkDType(k, "src", src, dst.DType); err != nil {
		return err
	}
	for _, x := range []namedArray{arg("dst", dst), arg("src", src)} {
		if len(x.a.Shape) != 2 || x.a.Shape[0] < 0 || x.a.Shape[1] < 0 {
			return fmt.Errorf("%s: argument %s has shape %v, want a matrix", k, x.name, x.a.Shape)
		}
	}
	rows := dst.Shape[0]
	if src.Shape[0] != rows {
		return fmt.Errorf("%s: argument src has %d rows, dst has %d", k, src.Shape[0], rows)
	}
	if cols < 0 || srcOff < 0 || srcOff+cols > src.Shape[1] {
		return fmt.Errorf("%s: source columns [%d,%d) outside src with %d columns", k, srcOff, srcOff+cols, src.Shape[1])
	}
	if dstOff < 0 || dstOff+cols > dst.Shape[1] {
		return fmt.Errorf("%s: destination columns [%d,%d) outside dst with %d columns", k, dstOff, dstOff+cols, dst.Shape[1])
	}
	name, es := "misc_copy_cols_b32", 4
	if dst.DType.Size() == 2 {
		name, es = "misc_copy_cols_b16", 2
	}
	return launch1D(dst.Dev, s, miscFamily, name, rows*cols,
		runtime.PtrParam(dst.Ptr.Add(dstOff*es)), runtime.I64Param(dst.Shape[1]),
		runtime.PtrParam(src.Ptr.Add(srcOff*es)), runtime.I64Param(src.Shape[1]),
		runtime.I64Param(rows), runtime.I64Param(cols))
}
