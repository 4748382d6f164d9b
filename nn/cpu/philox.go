package cpu

import (
	"math"
	"math/bits"

	"github.com/perkgo/perk/nn"
)

// Philox-4x32 round multipliers and Weyl key increments (Salmon et al.,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// Philox4x32 is the Philox-4x32-10 block function: ten rounds mapping a
// 128-bit counter and a 64-bit key to 128 random bits. Each round multiplies
// words 0 and 2 by the round constants, crosses the high halves with words 1
// and 3 and the key, and bumps the key by the Weyl constants between rounds.
func Philox4x32(ctr [4]uint32, key [2]uint32) [4]uint32 {
	c0, c1, c2, c3 := ctr[0], ctr[1], ctr[2], ctr[3]
	k0, k1 := key[0], key[1]
	for r := 0; r < 10; r++ {
		if r > 0 {
			k0 += philoxW0
			k1 += philoxW1
		}
		hi0, lo0 := bits.Mul32(philoxM0, c0)
		hi1, lo1 := bits.Mul32(philoxM1, c2)
		c0, c1, c2, c3 = hi1^c1^k0, lo1, hi0^c3^k1, lo0
	}
	return [4]uint32{c0, c1, c2, c3}
}

// dropoutWord is word 0 of Philox4x32 for element e under d (see nn.Dropout
// for the exact counter and key layout).
func dropoutWord(d nn.Dropout, e uint64) uint32 {
	out := Philox4x32(
		[4]uint32{uint32(e), uint32(e >> 32), d.TensorID, d.Step},
		[2]uint32{uint32(d.Seed), uint32(d.Seed >> 32)})
	return out[0]
}

// DropoutUniform returns the uniform draw u = (w>>8)·2⁻²⁴ ∈ [0,1) of element
// e under d; the element is kept when u ≥ d.P.
func DropoutUniform(d nn.Dropout, e uint64) float64 {
	return float64(dropoutWord(d, e)>>8) * 0x1p-24
}

// DropoutThreshold returns ⌈p·2²⁴⌉: element e is kept iff
// (word0 >> 8) ≥ DropoutThreshold(p), which is exactly u ≥ p.
func DropoutThreshold(p float64) uint32 {
	return uint32(math.Ceil(p * 0x1p24))
}

// DropoutKeep reports whether element e survives dropout d.
func DropoutKeep(d nn.Dropout, e uint64) bool {
	return dropoutWord(d, e)>>8 >= DropoutThreshold(d.P)
}

// applyDropout writes u[e] = x[e]·1/(1−p) for kept elements and 0 for dropped
// ones, over the flat element range of x.
func applyDropout[T Float](d nn.Dropout, x, u []T) {
	thr := DropoutThreshold(d.P)
	scale := T(1 / (1 - d.P))
	parallelFor(len(x), 1<<12, func(lo, hi int) {
		for e := lo; e < hi; e++ {
			if dropoutWord(d, uint64(e))>>8 >= thr {
				u[e] = x[e] * scale
			} else {
				u[e] = 0
			}
		}
	})
}

// addDropoutGrad adds the dropout VJP of du into dx: dx[e] += du[e]·1/(1−p)
// for kept elements.
func addDropoutGrad[T Float](d nn.Dropout, du, dx []T) {
	thr := DropoutThreshold(d.P)
	scale := T(1 / (1 - d.P))
	parallelFor(len(du), 1<<12, func(lo, hi int) {
		for e := lo; e < hi; e++ {
			if dropoutWord(d, uint64(e))>>8 >= thr {
				dx[e] += du[e] * scale
			}
		}
	})
}
