package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

// dtypeInfo describes one element type the format knows.
type dtypeInfo struct {
	bits int // element width in bits
	rank int // position in the reference implementation's alignment order
}

// dtypes lists every element type the safetensors format defines, with its
// width and its place in the reference writer's ordering (increasing
// alignment). Sub-byte types (F4, F6_*) are packed; a tensor of them must
// fill a whole number of bytes.
var dtypes = map[string]dtypeInfo{
	"BOOL":    {8, 0},
	"F4":      {4, 1},
	"F6_E2M3": {6, 2},
	"F6_E3M2": {6, 3},
	"U8":      {8, 4},
	"I8":      {8, 5},
	"F8_E5M2": {8, 6},
	"F8_E4M3": {8, 7},
	"F8_E8M0": {8, 8},
	"I16":     {16, 9},
	"U16":     {16, 10},
	"F16":     {16, 11},
	"BF16":    {16, 12},
	"I32":     {32, 13},
	"U32":     {32, 14},
	"F32":     {32, 15},
	"C64":     {64, 16},
	"F64":     {64, 17},
	"I64":     {64, 18},
	"U64":     {64, 19},
}

// ElemBits reports the width in bits of one element of the named safetensors
// dtype ("F32", "BF16", "I64", "BOOL", ...), and whether the name is known.
func ElemBits(dtype string) (int, bool) {
	d, ok := dtypes[dtype]
	return d.bits, ok
}

// FloatDType maps a safetensors dtype name to the runtime storage type it
// converts from. Only F32, F16, BF16 and F64 have one.
func FloatDType(dtype string) (runtime.DType, bool) {
	switch dtype {
	case "F32":
		return runtime.F32, true
	case "F16":
		return runtime.F16, true
	case "BF16":
		return runtime.BF16, true
	case "F64":
		return runtime.F64, true
	}
	return 0, false
}

// validFloat reports whether t is one of the four runtime storage types.
func validFloat(t runtime.DType) bool {
	switch t {
	case runtime.F32, runtime.F16, runtime.BF16, runtime.F64:
		return true
	}
	return false
}

// The scalar conversions below are the runtime's (runtime.BF16FromFloat32
// and friends); these names remain for callers of this package.

// BF16ToF32 widens a bfloat16 bit pattern to float32. The conversion is exact.
func BF16ToF32(b uint16) float32 { return runtime.Float32FromBF16(b) }

// F32ToBF16 rounds f to the nearest bfloat16, ties to even. NaNs stay NaN
// (quiet, sign kept); overflow gives an infinity of the same sign.
func F32ToBF16(f float32) uint16 { return runtime.BF16FromFloat32(f) }

// F16ToF32 widens an IEEE half-precision bit pattern to float32 (exact).
func F16ToF32(h uint16) float32 { return runtime.Float32FromF16(h) }

// F32ToF16 rounds f to the nearest IEEE half-precision value, ties to even.
func F32ToF16(f float32) uint16 { return runtime.F16FromFloat32(f) }

// F64ToBF16 rounds x to the nearest bfloat16, ties to even, without double
// rounding.
func F64ToBF16(x float64) uint16 { return runtime.BF16FromFloat64(x) }

// F64ToF16 rounds x to the nearest IEEE half-precision value, ties to even,
// without double rounding.
func F64ToF16(x float64) uint16 { return runtime.F16FromFloat64(x) }

// checkConv validates the dtype and the byte count of a decode or encode of n
// elements.
func checkConv(op string, t runtime.DType, nbytes, n int) error {
	if !validFloat(t) {
		return fmt.Errorf("safetensors: %s: unsupported dtype %v", op, t)
	}
	if nbytes != n*t.Size() {
		return fmt.Errorf("safetensors: %s %v: %d bytes for %d elements", op, t, nbytes, n)
	}
	return nil
}

// decodeFloats converts little-endian elements of type t from src into dst,
// converting each value to T (exactly, except F64 into float32, which rounds
// to nearest).
func decodeFloats[T float32 | float64](dst []T, src []byte, t runtime.DType) error {
	if err := checkConv("decode", t, len(src), len(dst)); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch t {
	case runtime.F32:
		for i := range dst {
			dst[i] = T(math.Float32frombits(le.Uint32(src[4*i:])))
		}
	case runtime.F16:
		for i := range dst {
			dst[i] = T(runtime.Float32FromF16(le.Uint16(src[2*i:])))
		}
	case runtime.BF16:
		for i := range dst {
			dst[i] = T(runtime.Float32FromBF16(le.Uint16(src[2*i:])))
		}
	case runtime.F64:
		for i := range dst {
			dst[i] = T(math.Float64frombits(le.Uint64(src[8*i:])))
		}
	}
	return nil
}

// encodeFloats stores src as little-endian elements of type t into dst, using
// toF16 and toBF16 for the 16-bit types.
func encodeFloats[T float32 | float64](dst []byte, src []T, t runtime.DType, toF16, toBF16 func(T) uint16) error {
	if err := checkConv("encode", t, len(dst), len(src)); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch t {
	case runtime.F32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], math.Float32bits(float32(v)))
		}
	case runtime.F16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], toF16(v))
		}
	case runtime.BF16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], toBF16(v))
		}
	case runtime.F64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], math.Float64bits(float64(v)))
		}
	}
	return nil
}

// DecodeFloat32 converts little-endian elements of type t from src into dst.
// len(src) must be exactly len(dst)·t.Size(). F64 values are rounded to the
// nearest float32.
func DecodeFloat32(dst []float32, src []byte, t runtime.DType) error {
	return decodeFloats(dst, src, t)
}

// DecodeFloat64 converts little-endian elements of type t from src into dst
// (exactly). len(src) must be exactly len(dst)·t.Size().
func DecodeFloat64(dst []float64, src []byte, t runtime.DType) error {
	return decodeFloats(dst, src, t)
}

// EncodeFloat32 stores src as little-endian elements of type t into dst,
// rounding to nearest, ties to even. len(dst) must be len(src)·t.Size().
func EncodeFloat32(dst []byte, src []float32, t runtime.DType) error {
	return encodeFloats(dst, src, t, runtime.F16FromFloat32, runtime.BF16FromFloat32)
}

// EncodeFloat64 stores src as little-endian elements of type t into dst,
// rounding to nearest, ties to even (directly from float64, without double
// rounding). len(dst) must be len(src)·t.Size().
func EncodeFloat64(dst []byte, src []float64, t runtime.DType) error {
	return encodeFloats(dst, src, t, runtime.F16FromFloat64, runtime.BF16FromFloat64)
}
