package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// RoPEForward rotates each head of x [T,H,D] by its token's position with
// the rotate-half convention; angles pos·theta^(−2i/D) and their cos/sin are
// computed in float64.
func (*Backend) RoPEForward(x *nn.Tensor, positions []int32, theta float64, y *nn.Tensor) error {
	ck := newChecker("rope fwd")
	t, h, d := nn.CheckRoPE(ck, x, y, "x", "y", positions, theta)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		rope(false, t, h, d, data[float32](x), positions, theta, data[float32](y))
	} else {
		rope(false, t, h, d, data[float64](x), positions, theta, data[float64](y))
	}
	return nil
}

// RoPEBackward applies the transposed (inverse) rotation to dy.
func (*Backend) RoPEBackward(dy *nn.Tensor, positions []int32, theta float64, dx *nn.Tensor) error {
	ck := newChecker("rope bwd")
	t, h, d := nn.CheckRoPE(ck, dy, dx, "dy", "dx", positions, theta)
	if ck.Err() != nil {
		return ck.Err()
	}
	if dy.DType() == runtime.F32 {
		rope(true, t, h, d, data[float32](dy), positions, theta, data[float32](dx))
	} else {
		rope(true, t, h, d, data[float64](dy), positions, theta, data[float64](dx))
	}
	return nil
}

// rope rotates pairs (i, i+D/2) by +θ_i (forward) or −θ_i (inverse).
func rope[T Float](inverse bool, t, h, d int, x []T, positions []int32, theta float64, y []T) {
	half := d / 2
	invFreq := make([]float64, half)
	for i := range invFreq {
		invFreq[i] = math.Pow(theta, -float64(2*i)/float64(d))
	}
	parallelFor(t, rowGrain(h*d), func(lo, hi int) {
		cos := make([]float64, half)
		sin := make([]float64, half)
		for tok := lo; tok < hi; tok++ {
			p := float64(positions[tok])
			for i, f := range invFreq {
				sin[i], cos[i] = math.Sincos(p * f)
				if inverse {
					sin[i] = -sin[i]
				}
			}
			for hd := 0; hd < h; hd++ {
				off := (tok*h + hd) * d
				xr, yr := x[off:off+d], y[off:off+d]
				for i := 0; i < half; i++ {
					a, b := float64(xr[i]), float64(xr[i+half])
					yr[i] = T(a*cos[i] - b*sin[i])
					yr[i+half] = T(b*cos[i] + a*sin[i])
				}
			}
		}
	})
}
