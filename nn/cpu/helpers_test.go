package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

// fdStep is the central-difference step of every gradient check.
const fdStep = 1e-6

// fdDirections is the number of random directions each gradient check tries.
const fdDirections = 3

// fdTol is the relative error allowed between a backward pass and central
// finite differences in float64.
const fdTol = 1e-6

// f32Tol is the relative error allowed between the float32 and float64 runs
// of one forward op on the same (float32-representable) inputs.
const f32Tol = 1e-5

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// randVec returns n values uniform in [-1,1), rounded to float32 so the same
// inputs can feed the F32 and F64 runs.
func randVec(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = float64(float32(2*rng.Float64() - 1))
	}
	return v
}

// t64 wraps data as an F64 tensor, failing the test on error.
func t64(t testing.TB, data []float64, shape ...int) *nn.Tensor {
	t.Helper()
	x, err := nn.FromF64(data, shape...)
	require.NoError(t, err)
	return x
}

// rand64 returns a random F64 tensor and its slice.
func rand64(t testing.TB, rng *rand.Rand, shape ...int) (*nn.Tensor, []float64) {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := randVec(rng, n)
	return t64(t, v, shape...), v
}

// zeros64 returns a zero F64 tensor and its slice.
func zeros64(t testing.TB, shape ...int) (*nn.Tensor, []float64) {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float64, n)
	return t64(t, v, shape...), v
}

// nan64 returns an F64 tensor filled with NaN (poisoned output).
func nan64(t testing.TB, shape ...int) (*nn.Tensor, []float64) {
	t.Helper()
	x, v := zeros64(t, shape...)
	for i := range v {
		v[i] = math.NaN()
	}
	return x, v
}

// to32 converts an F64 tensor (or nil) to a new F32 tensor.
func to32(t testing.TB, x *nn.Tensor) *nn.Tensor {
	t.Helper()
	if x == nil {
		return nil
	}
	v, err := x.F64()
	require.NoError(t, err)
	w := make([]float32, len(v))
	for i, f := range v {
		w[i] = float32(f)
	}
	y, err := nn.FromF32(w, x.Shape()...)
	require.NoError(t, err)
	return y
}

// as64 returns the elements of an F32 or F64 tensor as float64.
func as64(t testing.TB, x *nn.Tensor) []float64 {
	t.Helper()
	if v, err := x.F64(); err == nil {
		return v
	}
	v, err := x.F32()
	require.NoError(t, err)
	out := make([]float64, len(v))
	for i, f := range v {
		out[i] = float64(f)
	}
	return out
}

// relMax is max|got−want| / max|want| (with a floor), a norm-wise relative
// error insensitive to individual near-zero entries. NaNs count as failures.
func relMax(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	diff, scale := 0.0, 1e-30
	for i := range got {
		if math.IsNaN(got[i]) != math.IsNaN(want[i]) {
			return math.Inf(1)
		}
		diff = max(diff, math.Abs(got[i]-want[i]))
		scale = max(scale, math.Abs(want[i]))
	}
	return diff / scale
}

// requireClose fails unless relMax(got, want) ≤ tol.
func requireClose(t testing.TB, got, want []float64, tol float64, what string) {
	t.Helper()
	require.Equal(t, len(want), len(got), "%s: length", what)
	e := relMax(got, want)
	require.LessOrEqualf(t, e, tol, "%s: relative error %.3g > %.3g", what, e, tol)
}

func dotVec(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// checkGrad compares a backward pass with central finite differences: for
// fdDirections random directions u it moves x along u and checks
// (L(x+h·u) − L(x−h·u))/(2h) against ⟨grad, u⟩, where L is the sum of the
// terms that loss returns (e.g. cᵢ·yᵢ for a cotangent c). The difference is
// taken term by term before summing, so a large L does not cancel away the
// digits of a small derivative. x is restored.
func checkGrad(t testing.TB, rng *rand.Rand, what string, x, grad []float64, loss func() []float64) {
	t.Helper()
	require.Equal(t, len(x), len(grad), "%s: gradient length", what)
	orig := append([]float64(nil), x...)
	defer copy(x, orig)
	for dir := 0; dir < fdDirections; dir++ {
		u := randVec(rng, len(x))
		for i := range x {
			x[i] = orig[i] + fdStep*u[i]
		}
		lp := loss()
		for i := range x {
			x[i] = orig[i] - fdStep*u[i]
		}
		lm := loss()
		fd := 0.0
		for i := range lp {
			fd += lp[i] - lm[i]
		}
		fd /= 2 * fdStep
		an := dotVec(grad, u)
		rel := math.Abs(fd-an) / max(math.Abs(fd), math.Abs(an), 1e-12)
		require.LessOrEqualf(t, rel, fdTol, "%s (direction %d): finite difference %.12g vs backward %.12g (rel %.3g)", what, dir, fd, an, rel)
	}
}

// terms returns the products cᵢ·yᵢ, whose sum is ⟨c, y⟩.
func terms(c, y []float64) []float64 {
	out := make([]float64, len(y))
	for i := range y {
		out[i] = c[i] * y[i]
	}
	return out
}

// sub returns a − b elementwise (the part a backward pass added to a
// pre-filled accumulator).
func sub(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}
