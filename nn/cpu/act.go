package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// geluC is √(2/π).
var geluC = math.Sqrt(2 / math.Pi)

// GELUForward sets y = 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))).
func (*Backend) GELUForward(x, y *nn.Tensor) error {
	ck := newChecker("gelu fwd")
	nn.CheckGELUForward(ck, x, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		geluForward(data[float32](x), data[float32](y))
	} else {
		geluForward(data[float64](x), data[float64](y))
	}
	return nil
}

func geluForward[T Float](x, y []T) {
	parallelFor(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			y[i] = T(0.5 * v * (1 + math.Tanh(geluC*(v+0.044715*v*v*v))))
		}
	})
}

// GELUBackward sets dx = dy·(0.5·(1+t) + 0.5·x·(1−t²)·√(2/π)·(1+3·0.044715·x²)),
// t = tanh(√(2/π)·(x+0.044715·x³)).
func (*Backend) GELUBackward(x, dy, dx *nn.Tensor) error {
	ck := newChecker("gelu bwd")
	nn.CheckGELUBackward(ck, x, dy, dx)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		geluBackward(data[float32](x), data[float32](dy), data[float32](dx))
	} else {
		geluBackward(data[float64](x), data[float64](dy), data[float64](dx))
	}
	return nil
}

func geluBackward[T Float](x, dy, dx []T) {
	parallelFor(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := float64(x[i])
			t := math.Tanh(geluC * (v + 0.044715*v*v*v))
			d := 0.5*(1+t) + 0.5*v*(1-t*t)*geluC*(1+3*0.044715*v*v)
			dx[i] = T(float64(dy[i]) * d)
		}
	})
}

// sigmoid is 1/(1+e^−x), evaluated without overflow.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// SwiGLUForward sets y = silu(gate)·up with silu(g) = g·σ(g).
func (*Backend) SwiGLUForward(gate, up, y *nn.Tensor) error {
	ck := newChecker("swiglu fwd")
	nn.CheckSwiGLUForward(ck, gate, up, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	if gate.DType() == runtime.F32 {
		swigluForward(data[float32](gate), data[float32](up), data[float32](y))
	} else {
		swigluForward(data[float64](gate), data[float64](up), data[float64](y))
	}
	return nil
}

func swigluForward[T Float](gate, up, y []T) {
	parallelFor(len(gate), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := float64(gate[i])
			y[i] = T(g * sigmoid(g) * float64(up[i]))
		}
	})
}

// SwiGLUBackward sets dGate = dy·up·σ(g)·(1+g·(1−σ(g))) and
// dUp = dy·silu(g); either output may be nil.
func (*Backend) SwiGLUBackward(gate, up, dy, dGate, dUp *nn.Tensor) error {
	ck := newChecker("swiglu bwd")
	nn.CheckSwiGLUBackward(ck, gate, up, dy, dGate, dUp)
	if ck.Err() != nil {
		return ck.Err()
	}
	if gate.DType() == runtime.F32 {
		swigluBackward(data[float32](gate), data[float32](up), data[float32](dy), data[float32](dGate), data[float32](dUp))
	} else {
		swigluBackward(data[float64](gate), data[float64](up), data[float64](dy), data[float64](dGate), data[float64](dUp))
	}
	return nil
}

func swigluBackward[T Float](gate, up, dy, dGate, dUp []T) {
	parallelFor(len(gate), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g, u, d := float64(gate[i]), float64(up[i]), float64(dy[i])
			s := sigmoid(g)
			// Both outputs may alias the inputs, so read everything first.
			if dGate != nil {
				dGate[i] = T(d * u * s * (1 + g*(1-s)))
			}
			if dUp != nil {
				dUp[i] = T(d * g * s)
			}
		}
	})
}
