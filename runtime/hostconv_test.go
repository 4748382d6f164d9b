package runtime

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFromFloat64NoDoubleRounding checks that the float64 entry points round
// once: a value just above a bf16/f16 tie must round up, although narrowing
// it to float32 first would land exactly on the tie and round to even (down).
func TestFromFloat64NoDoubleRounding(t *testing.T) {
	x := 1 + 1.0/256 + 1.0/(1<<40) // bf16 tie between 1 and 1+1/128, plus a hair
	require.Equal(t, float32(1), Float32FromBF16(BF16FromFloat32(float32(x))))
	require.Equal(t, float32(1+1.0/128), Float32FromBF16(BF16FromFloat64(x)))

	y := 1 + 1.0/2048 + 1.0/(1<<40) // f16 tie between 1 and 1+1/1024, plus a hair
	require.Equal(t, float32(1), Float32FromF16(F16FromFloat32(float32(y))))
	require.Equal(t, float32(1+1.0/1024), Float32FromF16(F16FromFloat64(y)))
	require.Equal(t, float32(-1-1.0/1024), Float32FromF16(F16FromFloat64(-y)))
}

// TestFromFloat64MatchesFloat32 checks that values exact in float32 convert
// the same from either width, NaN and infinities included.
func TestFromFloat64MatchesFloat32(t *testing.T) {
	for _, bits := range []uint32{0, 0x80000000, 1, 0x3f808000, 0x3f818000, 0x7f7fffff, 0x7f800000, 0xff800000, 0x7fc00001, 0xffa00000, 0x387fe000} {
		f := math.Float32frombits(bits)
		require.Equal(t, BF16FromFloat32(f), BF16FromFloat64(float64(f)), "bf16 %#x", bits)
		require.Equal(t, F16FromFloat32(f), F16FromFloat64(float64(f)), "f16 %#x", bits)
	}
	require.True(t, math.IsNaN(float64(Float32FromBF16(BF16FromFloat64(math.NaN())))))
	require.Equal(t, uint16(0x7f80), BF16FromFloat64(math.MaxFloat64))
	require.Equal(t, uint16(0xfc00), F16FromFloat64(-1e300))
}
