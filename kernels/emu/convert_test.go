package emu

import (
	"math"
	"os"
	"testing"

	"github.com/x448/float16"
)

// bf16Ref rounds f to bf16 (nearest, ties to even) by comparing the distances
// to the two neighbouring bf16 values in float64. NaN is not handled.
func bf16Ref(f float32) uint16 {
	b := math.Float32bits(f)
	lo := b &^ 0xffff
	if b == lo {
		return uint16(b >> 16)
	}
	hi := lo + 0x10000 // the next bf16 away from zero (may be ±Inf)
	value := func(bits uint32) float64 {
		if bits&0x7f800000 == 0x7f800000 { // only reached as hi: 2^128 in magnitude
			if bits&0x80000000 != 0 {
				return -math.Ldexp(1, 128)
			}
			return math.Ldexp(1, 128)
		}
		return float64(math.Float32frombits(bits))
	}
	x := float64(f)
	dlo, dhi := math.Abs(x-value(lo)), math.Abs(value(hi)-x)
	switch {
	case dlo < dhi:
		return uint16(lo >> 16)
	case dhi < dlo:
		return uint16(hi >> 16)
	case (lo>>16)&1 == 0:
		return uint16(lo >> 16)
	default:
		return uint16(hi >> 16)
	}
}

// conversionInputs returns float32 values spread over all exponents plus the
// exact midpoints between neighbouring f16 and bf16 values and their float32
// neighbours (the rounding ties).
func conversionInputs() []float32 {
	var in []float32
	for i := uint64(0); i < 1<<32; i += 4099 {
		in = append(in, math.Float32frombits(uint32(i)))
	}
	addTie := func(mid float32) {
		for _, s := range []float32{1, -1} {
			in = append(in, s*mid, s*math.Nextafter32(mid, 0), s*math.Nextafter32(mid, float32(math.Inf(1))))
		}
	}
	for h := uint16(0); h < 0x7c00; h++ {
		v := float16.Frombits(h).Float32()
		next := float32(65536) // the value beyond the largest f16, 65504
		if h+1 < 0x7c00 {
			next = float16.Frombits(h + 1).Float32()
		}
		addTie(v + (next-v)/2)
		in = append(in, v, -v)
	}
	for h := uint32(0); h < 0x7f80; h++ {
		addTie(math.Float32frombits(h<<16 | 0x8000))
	}
	in = append(in, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x7f800001), math.Float32frombits(0xffc00000), math.MaxFloat32, -math.MaxFloat32)
	return in
}

func checkConversions(t *testing.T, in []float32) {
	t.Helper()
	n := len(in)
	ph, pb := alloc(t, 2*n), alloc(t, 2*n)
	phb, pbb := alloc(t, 4*n), alloc(t, 4*n)
	launch(t, "emutest_convert", d1(64), d1(256), 0, upload(t, in), ph, pb, phb, pbb, uint64(n))
	h, b := download[uint16](ph, n), download[uint16](pb, n)
	hb, bb := download[float32](phb, n), download[float32](pbb, n)
	for i, f := range in {
		bits := math.Float32bits(f)
		if math.IsNaN(float64(f)) {
			if !float16.Frombits(h[i]).IsNaN() || !math.IsNaN(float64(hb[i])) {
				t.Fatalf("f16 of NaN %#08x: got %#04x, back %g", bits, h[i], hb[i])
			}
			if b[i]&0x7f80 != 0x7f80 || b[i]&0x7f == 0 || !math.IsNaN(float64(bb[i])) {
				t.Fatalf("bf16 of NaN %#08x: got %#04x, back %g", bits, b[i], bb[i])
			}
			continue
		}
		if want := float16.Fromfloat32(f).Bits(); h[i] != want {
			t.Fatalf("f16 of %g (%#08x): got %#04x want %#04x", f, bits, h[i], want)
		}
		if want := float16.Frombits(h[i]).Float32(); math.Float32bits(hb[i]) != math.Float32bits(want) {
			t.Fatalf("f16 %#04x to float: got %g want %g", h[i], hb[i], want)
		}
		if want := bf16Ref(f); b[i] != want {
			t.Fatalf("bf16 of %g (%#08x): got %#04x want %#04x", f, bits, b[i], want)
		}
		if math.Float32bits(bb[i]) != uint32(b[i])<<16 {
			t.Fatalf("bf16 %#04x to float: got %g", b[i], bb[i])
		}
	}
}

// TestConversions checks the shim's f16 conversions bit for bit against
// github.com/x448/float16 and the bf16 ones against a float64 rounding.
func TestConversions(t *testing.T) {
	checkConversions(t, conversionInputs())
}

// TestConversionsExhaustive checks every float32 (slow; set
// PERK_EMU_EXHAUSTIVE=1 to run it).
func TestConversionsExhaustive(t *testing.T) {
	if os.Getenv("PERK_EMU_EXHAUSTIVE") == "" {
		t.Skip("set PERK_EMU_EXHAUSTIVE=1 to check all 2^32 float32 values")
	}
	const chunk = 1 << 24
	in := make([]float32, chunk)
	for base := uint64(0); base < 1<<32; base += chunk {
		for i := range in {
			in[i] = math.Float32frombits(uint32(base + uint64(i)))
		}
		t.Run("", func(t *testing.T) { checkConversions(t, in) })
	}
}
