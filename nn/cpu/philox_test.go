package cpu

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

// Known-answer vectors for philox4x32-10 from the Random123 distribution
// (tests/kat_vectors: counter words, key words, expected output).
func TestPhiloxKnownAnswers(t *testing.T) {
	cases := []struct {
		ctr  [4]uint32
		key  [2]uint32
		want [4]uint32
	}{
		{[4]uint32{0, 0, 0, 0}, [2]uint32{0, 0},
			[4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{[4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff},
			[4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{[4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0},
			[4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	}
	for _, c := range cases {
		require.Equal(t, c.want, Philox4x32(c.ctr, c.key), "counter %08x key %08x", c.ctr, c.key)
	}
}

func TestDropoutMapping(t *testing.T) {
	d := nn.Dropout{P: 0.3, Seed: 0x0123456789abcdef, Step: 7, TensorID: 3}
	// The documented layout: key = seed halves, counter = (e lo, e hi, tensor, step).
	for _, e := range []uint64{0, 1, 12345, 1<<32 + 5} {
		w := Philox4x32([4]uint32{uint32(e), uint32(e >> 32), 3, 7}, [2]uint32{0x89abcdef, 0x01234567})[0]
		u := float64(w>>8) / (1 << 24)
		require.Equal(t, u, DropoutUniform(d, e))
		require.Equal(t, u >= d.P, DropoutKeep(d, e))
	}
	// The integer threshold is exactly u ≥ p, including at representable p.
	for _, p := range []float64{0, 0.1, 0.25, 0.5, 1 - 0x1p-24, 0x1p-24, 0.3} {
		thr := DropoutThreshold(p)
		for _, k := range []uint32{thr - 1, thr, thr + 1} {
			if k > 1<<24-1 {
				continue
			}
			require.Equal(t, float64(k)*0x1p-24 >= p, k >= thr, "p=%v k=%d", p, k)
		}
	}
	// Keep rate, and independence from step and tensor id.
	const n = 200000
	kept, sameStep, sameTensor := 0, 0, 0
	d2 := d
	d2.Step++
	d3 := d
	d3.TensorID++
	for e := range uint64(n) {
		k := DropoutKeep(d, e)
		if k {
			kept++
		}
		if k == DropoutKeep(d2, e) {
			sameStep++
		}
		if k == DropoutKeep(d3, e) {
			sameTensor++
		}
	}
	require.InDelta(t, 0.7, float64(kept)/n, 0.005)
	// Independent masks agree on 0.7² + 0.3² = 58% of elements.
	require.InDelta(t, 0.58, float64(sameStep)/n, 0.01)
	require.InDelta(t, 0.58, float64(sameTensor)/n, 0.01)
}
