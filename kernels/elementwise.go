package kernels

import (
	"github.com/perkgo/perk/runtime"
)

var fillFamily = newFamily("fill", "fill_f32", "fill_bf16", "fill_f16", "copy_b32", "copy_b16")

// Fill sets every element of dst to v (rounded to dst's storage type).
func Fill(s runtime.Stream, dst Array, v float32) error {
	const k = "fill"
	if err := checkDev(k, dst.Dev, arg("dst", dst)); err != nil {
		return err
	}
	if err := checkDType(k, "dst", dst, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	n := dst.Numel()
	return launch1D(dst.Dev, s, fillFamily, "fill_"+suffix(dst.DType), n,
		runtime.PtrParam(dst.Ptr), runtime.I64Param(n), runtime.F32Param(v))
}

// Copy copies src into dst element by element; both must have the same dtype
// and element count and must not overlap.
func Copy(s runtime.Stream, dst, src Array) error {
	const k = "copy"
	if err := checkDev(k, dst.Dev, arg("dst", dst), arg("src", src)); err != nil {
		return err
	}
	if err := checkDType(k, "dst", dst, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if err := checkDType(k, "src", src, dst.DType); err != nil {
		return err
	}
	if err := checkSameLen(k, arg("dst", dst), arg("src", src)); err != nil {
		return err
	}
	name := "copy_b32"
	if dst.DType.Size() == 2 {
		name = "copy_b16"
	}
	n := dst.Numel()
	return launch1D(dst.Dev, s, fillFamily, name, n, runtime.PtrParam(dst.Ptr), runtime.PtrParam(src.Ptr), runtime.I64Param(n))
}

var castFamily = newFamily("cast", "cast_f32_bf16", "cast_f32_f16", "cast_bf16_f32", "cast_f16_f32", "cast_bf16_f16", "cast_f16_bf16")

// Cast converts src into dst's storage type with round-to-nearest-even (f32,
// bf16, f16). Same-type casts are copies.
func Cast(s runtime.Stream, dst, src Array) error {
	const k = "cast"
	if err := checkDev(k, dst.Dev, arg("dst", dst), arg("src", src)); err != nil {
		return err
	}
	for _, a := range []namedArray{arg("dst", dst), arg("src", src)} {
		if err := checkDType(k, a.name, a.a, runtime.F32, runtime.BF16, runtime.F16); err != nil {
			return err
		}
	}
	if err := checkSameLen(k, arg("dst", dst), arg("src", src)); err != nil {
		return err
	}
	if dst.DType == src.DType {
		return Copy(s, dst, src)
	}
	n := dst.Numel()
	return launch1D(dst.Dev, s, castFamily, "cast_"+suffix(src.DType)+"_"+suffix(dst.DType), n,
		runtime.PtrParam(dst.Ptr), runtime.PtrParam(src.Ptr), runtime.I64Param(n))
}

var axpyFamily = newFamily("axpy", "axpy_f32", "axpy_bf16", "axpy_f16")

// Axpy computes y = a·x + y in f32 and stores y in its own type; x and y share
// a dtype and element count.
func Axpy(s runtime.Stream, a float32, x, y Array) error {
	const k = "axpy"
	if err := checkDev(k, y.Dev, arg("y", y), arg("x", x)); err != nil {
		return err
	}
	if err := checkDType(k, "y", y, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if err := checkDType(k, "x", x, y.DType); err != nil {
		return err
	}
	if err := checkSameLen(k, arg("y", y), arg("x", x)); err != nil {
		return err
	}
	n := y.Numel()
	return launch1D(y.Dev, s, axpyFamily, "axpy_"+suffix(y.DType), n,
		runtime.PtrParam(y.Ptr), runtime.PtrParam(x.Ptr), runtime.I64Param(n), runtime.F32Param(a))
}
