package runtime

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// BF16FromFloat32 rounds f to bfloat16 with round-to-nearest-even, the same
// rounding as the kernels' __float2bfloat16. NaN stays a (quiet) NaN.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep sign, force a quiet payload
		return uint16(b>>16) | 0x0040
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// Float32FromBF16 widens a bfloat16 exactly.
func Float32FromBF16(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F16FromFloat32 rounds f to IEEE half with round-to-nearest-even.
func F16FromFloat32(f float32) uint16 { return uint16(float16.Fromfloat32(f)) }

// Float32FromF16 widens an IEEE half exactly.
func Float32FromF16(h uint16) float32 { return float16.Frombits(h).Float32() }

// BF16FromFloat64 rounds x to the nearest bfloat16, ties to even, directly
// from float64 (no double rounding through float32). NaN stays a quiet NaN.
func BF16FromFloat64(x float64) uint16 { return BF16FromFloat32(float32RoundOdd(x)) }

// F16FromFloat64 rounds x to the nearest IEEE half, ties to even, directly
// from float64 (no double rounding through float32).
func F16FromFloat64(x float64) uint16 { return F16FromFloat32(float32RoundOdd(x)) }

// float32RoundOdd narrows x to float32 rounding to odd: an inexact result is
// truncated toward zero and its lowest significand bit is set. Rounding that
// result again to a format at least two bits narrower gives the same value as
// rounding x directly, which avoids double-rounding errors.
func float32RoundOdd(x float64) float32 {
	if math.IsNaN(x) {
		return float32(x)
	}
	f := float32(x)
	if float64(f) == x {
		return f
	}
	// Step toward zero if the nearest value overshot |x|.
	if math.Abs(float64(f)) > math.Abs(x) {
		f = math.Nextafter32(f, 0)
	}
	return math.Float32frombits(math.Float32bits(f) | 1)
}

// Round returns v rounded to storage type t and widened back to float64: what
// a kernel reads after the value was stored as t.
func Round(t DType, v float64) float64 {
	switch t {
	case F32:
		return float64(float32(v))
	case BF16:
		return float64(Float32FromBF16(BF16FromFloat32(float32(v))))
	case F16:
		return float64(Float32FromF16(F16FromFloat32(float32(v))))
	}
	return v
}

// Encode converts host values to little-endian storage bytes of type t
// (float32 first for the 16-bit types, so each value is rounded once from f32).
func Encode(t DType, vals []float64) []byte {
	out := make([]byte, len(vals)*t.Size())
	for i, v := range vals {
		switch t {
		case F32:
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(float32(v)))
		case BF16:
			binary.LittleEndian.PutUint16(out[2*i:], BF16FromFloat32(float32(v)))
		case F16:
			binary.LittleEndian.PutUint16(out[2*i:], F16FromFloat32(float32(v)))
		case F64:
			binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(v))
		case I32:
			binary.LittleEndian.PutUint32(out[4*i:], uint32(int32(v)))
		}
	}
	return out
}

// Decode converts little-endian storage bytes of type t to host values.
func Decode(t DType, b []byte) ([]float64, error) {
	if len(b)%t.Size() != 0 {
		return nil, fmt.Errorf("decode %s: %d bytes is not a multiple of %d", t, len(b), t.Size())
	}
	out := make([]float64, len(b)/t.Size())
	for i := range out {
		switch t {
		case F32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		case BF16:
			out[i] = float64(Float32FromBF16(binary.LittleEndian.Uint16(b[2*i:])))
		case F16:
			out[i] = float64(Float32FromF16(binary.LittleEndian.Uint16(b[2*i:])))
		case F64:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		case I32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		}
	}
	return out, nil
}
