package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// actTails are inputs in the far tails, where 1+tanh and 1−σ cancel or the
// exponential overflows; they are checked on their own so that their large
// magnitudes do not loosen the relative-error floor of the main check.
var actTails = []float64{0, -0.75, -1.28, 8, -8, 12, -12, 20, -20, 50, -50, 100, -100}

// geluBwdScale is the error scale of dx = dy·s·(1 + 2x·(1−s)·√(2/π)·(1+3·0.044715·x²)),
// s = σ(2u): |dy|·s·(1 + |2x·(1−s)·√(2/π)·(1+3·0.044715·x²)|), the magnitude of
// the terms that cancel near GELU's minimum (x ≈ −0.75), where any f32
// evaluation errs by a few ulps of that magnitude rather than of the result,
// times 1+|2u|: s = σ(2u) turns the rounding of the computed argument 2u
// (a few ulps of |2u|) into a relative error of |2u|·ε. It also covers the reference's own error: nn/cpu's tanh form rounds t to
// ±1 in the far tails (x ≲ −7), an absolute error of up to
// 2⁻⁵²·(1+|x|·√(2/π)·(1+3·0.044715·x²))·|dy|, which tol·scale must exceed.
func geluBwdScale(x, dy []float64, tol float64) []float64 {
	out := make([]float64, len(x))
	c := math.Sqrt(2 / math.Pi)
	for i, v := range x {
		u2 := 2 * c * (v + 0.044715*v*v*v)
		s := 1 / (1 + math.Exp(-u2))
		a := c * (1 + 3*0.044715*v*v)
		out[i] = math.Abs(dy[i]) * (s*(1+math.Abs(2*v*(1-s)*a))*(1+math.Abs(u2)) + 0x1p-52*(1+math.Abs(v)*a)/tol)
	}
	return out
}

// swigluBwdScale is the error scale of dgate = dy·up·σ(g)·(1 + g·(1−σ(g))):
// |dy·up|·σ(g)·(1 + |g|·(1−σ(g))), whose terms cancel near silu's minimum
// (g ≈ −1.28).
func swigluBwdScale(g, u, dy []float64) []float64 {
	out := make([]float64, len(g))
	for i, v := range g {
		s := 1 / (1 + math.Exp(-v))
		out[i] = math.Abs(dy[i]*u[i]) * s * (1 + math.Abs(v)*(1-s))
	}
	return out
}

func TestGoldenActGELU(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(31, 32))
	for _, dt := range storage {
		sizes := append(kt.RaggedSizes(rng, 5000), len(actTails))
		for i, n := range sizes {
			x := kt.Rand(rng, dt, n, 6)
			if i == len(sizes)-1 {
				x = roundAll(dt, actTails)
			}
			dy := kt.Rand(rng, dt, n, 1)
			name := fmt.Sprintf("%s n=%d", dt, n)
			xa := kt.Upload(t, d, dt, []int{n}, x)
			ya := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.GELUForward(0, xa, ya), name)
			y := f64T(t, make([]float64, n), n)
			require.NoError(t, be.GELUForward(f64T(t, x, n), y))
			kt.Check(t, kname("gelu_fwd", dt), dt, kt.Download(t, ya), f64V(t, y), name)

			// dx in place over dy.
			dya := kt.Upload(t, d, dt, []int{n}, dy)
			require.NoError(t, kernels.GELUBackward(0, xa, dya, dya), name)
			dx := f64T(t, make([]float64, n), n)
			require.NoError(t, be.GELUBackward(f64T(t, x, n), f64T(t, dy, n), dx))
			kt.CheckScaled(t, kname("gelu_bwd", dt), kt.Tolerance(dt), kt.Download(t, dya), f64V(t, dx), floored(dt, geluBwdScale(x, dy, kt.Tolerance(dt))), name)

			// y in place over x.
			require.NoError(t, kernels.GELUForward(0, xa, xa), name)
			kt.Check(t, kname("gelu_fwd", dt), dt, kt.Download(t, xa), f64V(t, y), name, " in place")
		}
	}
}

func TestGoldenActSwiGLU(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(33, 34))
	for _, dt := range storage {
		sizes := append(kt.RaggedSizes(rng, 5000), len(actTails))
		for i, n := range sizes {
			g := kt.Rand(rng, dt, n, 8)
			if i == len(sizes)-1 {
				g = roundAll(dt, actTails)
			}
			u, dy := kt.Rand(rng, dt, n, 2), kt.Rand(rng, dt, n, 1)
			name := fmt.Sprintf("%s n=%d", dt, n)
			ga, ua := kt.Upload(t, d, dt, []int{n}, g), kt.Upload(t, d, dt, []int{n}, u)
			ya := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.SwiGLUForward(0, ga, ua, ya), name)
			y := f64T(t, make([]float64, n), n)
			require.NoError(t, be.SwiGLUForward(f64T(t, g, n), f64T(t, u, n), y))
			kt.Check(t, kname("swiglu_fwd", dt), dt, kt.Download(t, ya), f64V(t, y), name)

			dya := kt.Upload(t, d, dt, []int{n}, dy)
			dga, dua := kt.Poisoned(t, d, dt, []int{n}), kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.SwiGLUBackward(0, ga, ua, dya, dga, dua), name)
			dg, du := f64T(t, make([]float64, n), n), f64T(t, make([]float64, n), n)
			require.NoError(t, be.SwiGLUBackward(f64T(t, g, n), f64T(t, u, n), f64T(t, dy, n), dg, du))
			k := kname("swiglu_bwd", dt)
			dgs := floored(dt, swigluBwdScale(g, u, dy))
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, dga), f64V(t, dg), dgs, name, " dgate")
			kt.Check(t, k, dt, kt.Download(t, dua), f64V(t, du), name, " dup")

			// One output at a time, then both in place over the inputs.
			one := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.SwiGLUBackward(0, ga, ua, dya, kernels.Array{}, one), name)
			kt.Check(t, k, dt, kt.Download(t, one), f64V(t, du), name, " dup alone")
			require.NoError(t, kernels.SwiGLUBackward(0, ga, ua, dya, one, kernels.Array{}), name)
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, one), f64V(t, dg), dgs, name, " dgate alone")
			require.NoError(t, kernels.SwiGLUBackward(0, ga, ua, dya, ga, ua), name)
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, ga), f64V(t, dg), dgs, name, " dgate in place")
			kt.Check(t, k, dt, kt.Download(t, ua), f64V(t, du), name, " dup in place")
		}
	}
}

func TestActBadInput(t *testing.T) {
	d := kt.Device(t)
	x, y := kt.Alloc(t, d, runtime.F32, []int{10}), kt.Alloc(t, d, runtime.F32, []int{10})
	none := kernels.Array{}
	require.ErrorContains(t, kernels.GELUForward(0, x, kt.Alloc(t, d, runtime.F32, []int{9})),
		"gelu_fwd: argument y has 9 elements but x has 10")
	require.ErrorContains(t, kernels.GELUForward(0, x, kt.Alloc(t, d, runtime.BF16, []int{10})),
		"gelu_fwd: argument y has dtype BF16")
	require.ErrorContains(t, kernels.GELUForward(0, kt.Alloc(t, d, runtime.I32, []int{10}), y),
		"gelu_fwd: argument x has dtype I32")
	require.ErrorContains(t, kernels.GELUBackward(0, x, none, y), "gelu_bwd: argument dy is missing")
	require.ErrorContains(t, kernels.GELUBackward(0, none, x, y), "gelu_bwd: argument x has no device")
	require.ErrorContains(t, kernels.SwiGLUForward(0, x, kt.Alloc(t, d, runtime.F16, []int{10}), y),
		"swiglu_fwd: argument up has dtype F16")
	nilPtr := kernels.Array{Dev: d, DType: runtime.F32, Shape: []int{10}}
	require.ErrorContains(t, kernels.SwiGLUForward(0, x, y, nilPtr), "swiglu_fwd: argument y has a nil pointer")
	require.ErrorContains(t, kernels.SwiGLUBackward(0, x, y, x, kt.Alloc(t, d, runtime.F32, []int{11}), none),
		"swiglu_bwd: argument dGate has 11 elements but gate has 10")
	require.NoError(t, kernels.SwiGLUBackward(0, x, y, x, none, none), "no outputs: nothing to do")
}
