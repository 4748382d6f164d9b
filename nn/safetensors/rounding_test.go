package safetensors

import (
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// format describes a binary floating-point format for the reference rounder.
type format struct {
	mant   int     // stored significand bits
	minExp int     // exponent of the smallest normal value
	max    float64 // largest finite value
}

var (
	bf16Format = format{mant: 7, minExp: -126, max: float64(math.Float32frombits(0x7f7f0000))}
	f16Format  = format{mant: 10, minExp: -14, max: 65504}
)

// refRound rounds x to the nearest value of f, ties to even, with exact
// big.Float arithmetic. It is an independent reference for the bit tricks
// under test.
func refRound(x float64, f format) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) || x == 0 {
		return x
	}
	ax := math.Abs(x)
	_, e := math.Frexp(ax) // ax = m·2^e with m in [0.5, 1)
	exp := e - 1           // ax in [2^exp, 2^(exp+1))
	if exp < f.minExp {
		exp = f.minExp // subnormal: fixed quantum
	}
	quantum := new(big.Float).SetMantExp(big.NewFloat(1), exp-f.mant)
	q := new(big.Float).SetPrec(2000).Quo(new(big.Float).SetPrec(2000).SetFloat64(ax), quantum)
	n, _ := q.Int(nil) // truncated toward zero
	frac := new(big.Float).SetPrec(2000).Sub(q, new(big.Float).SetInt(n))
	switch frac.Cmp(big.NewFloat(0.5)) {
	case 1:
		n.Add(n, big.NewInt(1))
	case 0:
		if n.Bit(0) == 1 {
			n.Add(n, big.NewInt(1))
		}
	}
	r, _ := new(big.Float).SetPrec(2000).Mul(new(big.Float).SetInt(n), quantum).Float64()
	if r > f.max {
		r = math.Inf(1)
	}
	return math.Copysign(r, x)
}

func checkRound(t *testing.T, what string, x float64, got float64, f format) {
	t.Helper()
	want := refRound(x, f)
	if math.IsNaN(x) {
		require.True(t, math.IsNaN(got), "%s(NaN) = %g, want NaN", what, got)
		return
	}
	require.Equal(t, math.Float64bits(want), math.Float64bits(got),
		"%s(%g [%#x]) = %g, want %g", what, x, math.Float64bits(x), got, want)
}

// interesting32 returns float32 values near rounding boundaries and random
// bit patterns.
func interesting32(r *rand.Rand, n int) []float32 {
	var out []float32
	for _, hi := range []uint32{0x0000, 0x0001, 0x0080, 0x3f80, 0x3f81, 0x4780, 0x477f, 0x7f7f, 0x7f7e, 0x0400, 0x3880, 0x3380, 0x3300} {
		for _, lo := range []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1000, 0x2000, 0x0fff} {
			for _, s := range []uint32{0, 0x80000000} {
				out = append(out, math.Float32frombits(s|hi<<16|lo))
			}
		}
	}
	for len(out) < n {
		out = append(out, math.Float32frombits(r.Uint32()))
	}
	return out
}

func TestBF16RoundingFromF32(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, f := range interesting32(r, 200000) {
		b := F32ToBF16(f)
		checkRound(t, "F32ToBF16", float64(f), float64(BF16ToF32(b)), bf16Format)
		if !math.IsNaN(float64(f)) && math.Float32bits(f)&0xffff == 0 {
			require.Equal(t, math.Float32bits(f), uint32(b)<<16, "exact value %g changed", f)
		}
	}
	// Every bf16 pattern widens exactly and narrows back unchanged.
	for u := 0; u < 1<<16; u++ {
		f := BF16ToF32(uint16(u))
		if math.IsNaN(float64(f)) {
			require.True(t, math.IsNaN(float64(BF16ToF32(F32ToBF16(f)))), "NaN %#x lost", u)
			continue
		}
		require.Equal(t, uint16(u), F32ToBF16(f), "bf16 %#x does not round-trip", u)
	}
}

func TestF16RoundingFromF32(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, f := range interesting32(r, 200000) {
		h := F32ToF16(f)
		require.Equal(t, float16.Fromfloat32(f).Bits(), h, "F32ToF16(%g) against x448/float16", f)
		checkRound(t, "F32ToF16", float64(f), float64(F16ToF32(h)), f16Format)
	}
}

func TestRoundingFromF64(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	var xs []float64
	for _, f := range interesting32(r, 2000) {
		x := float64(f)
		xs = append(xs, x, math.Nextafter(x, math.Inf(1)), math.Nextafter(x, math.Inf(-1)))
	}
	// Values just beside bf16 and f16 rounding midpoints, where rounding
	// through float32 first would go wrong.
	for _, mid := range []float64{1 + 1.0/256, 1 + 3.0/256, 1 + 1.0/2048, 1 + 3.0/2048, 65520, 3.3961775292304e38} {
		xs = append(xs, mid, math.Nextafter(mid, 0), math.Nextafter(mid, 2*mid), -mid)
	}
	for len(xs) < 100000 {
		xs = append(xs, math.Float64frombits(r.Uint64()))
		xs = append(xs, r.NormFloat64()*math.Pow(2, float64(r.IntN(300)-150)))
	}
	xs = append(xs, specials...)
	for _, x := range xs {
		checkRound(t, "F64ToBF16", x, float64(BF16ToF32(F64ToBF16(x))), bf16Format)
		checkRound(t, "F64ToF16", x, float64(F16ToF32(F64ToF16(x))), f16Format)
	}
	// The double-rounding trap: just above a bf16 midpoint, but float32
	// rounds it onto the midpoint, after which ties-to-even would go down.
	x := 1 + 1.0/256 + 1.0/(1<<40)
	require.Equal(t, float32(1+1.0/128), BF16ToF32(F64ToBF16(x)), "F64ToBF16(%v)", x)
}
