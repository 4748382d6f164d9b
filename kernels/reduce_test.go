package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/runtime"
)

func TestGoldenReduce(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(9, 10))
	sizes := append(kt.RaggedSizes(rng, 20000), 1024*4+1, 300000)
	for _, dt := range storage {
		for _, n := range sizes {
			x := kt.Rand(rng, dt, n, 1)
			y := kt.Rand(rng, dt, n, 1)
			xa := kt.Upload(t, d, dt, []int{n}, x)
			ya := kt.Upload(t, d, dt, []int{n}, y)
			scratch := kt.Alloc(t, d, runtime.F32, []int{kernels.ReduceGrid(n)})
			for _, op := range []kernels.ReduceOp{kernels.Sum, kernels.SumSq, kernels.Max, kernels.Dot} {
				var want, scale float64
				want = math.Inf(-1)
				if op != kernels.Max {
					want = 0
				}
				for i := range x {
					switch op {
					case kernels.Sum:
						want += x[i]
						scale += math.Abs(x[i])
					case kernels.SumSq:
						want += x[i] * x[i]
						scale += x[i] * x[i]
					case kernels.Max:
						want = math.Max(want, x[i])
						scale = math.Max(scale, math.Abs(x[i]))
					case kernels.Dot:
						want += x[i] * y[i]
						scale += math.Abs(x[i] * y[i])
					}
				}
				out := kt.Poisoned(t, d, runtime.F32, []int{1})
				var yarg kernels.Array
				if op == kernels.Dot {
					yarg = ya
				}
				require.NoError(t, kernels.Reduce(0, op, out, xa, yarg, scratch))
				got := kt.Download(t, out)[0]
				// Sums are judged relative to Σ|terms| (the scale of the
				// rounding error of any summation order).
				rel := math.Abs(got-want) / math.Max(scale, 1e-30)
				name := "reduce_" + string(op) + "_" + map[runtime.DType]string{runtime.F32: "f32", runtime.BF16: "bf16", runtime.F16: "f16"}[dt]
				kt.Record(name, rel, 1e-5)
				kt.Record("reduce_final_"+string(op), rel, 1e-5)
				require.LessOrEqual(t, rel, 1e-5, "%s n=%d: got %g want %g", name, n, got, want)
			}
		}
	}
}

func TestReduceDeterministic(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(11, 12))
	n := 100003
	x := kt.Rand(rng, runtime.F32, n, 1)
	xa := kt.Upload(t, d, runtime.F32, []int{n}, x)
	scratch := kt.Alloc(t, d, runtime.F32, []int{kernels.ReduceGrid(n)})
	var first float64
	for i := range 3 {
		out := kt.Poisoned(t, d, runtime.F32, []int{1})
		require.NoError(t, kernels.Reduce(0, kernels.Sum, out, xa, kernels.Array{}, scratch))
		got := kt.Download(t, out)[0]
		if i == 0 {
			first = got
		}
		require.Equal(t, math.Float64bits(first), math.Float64bits(got), "run %d", i)
	}
}

func TestReduceBadInput(t *testing.T) {
	d := kt.Device(t)
	x := kt.Alloc(t, d, runtime.F32, []int{5000})
	out := kt.Alloc(t, d, runtime.F32, []int{1})
	small := kt.Alloc(t, d, runtime.F32, []int{1})
	require.ErrorContains(t, kernels.Reduce(0, kernels.Sum, out, x, kernels.Array{}, small), "scratch has 1 elements, want at least 5")
	require.ErrorContains(t, kernels.Reduce(0, "median", out, x, kernels.Array{}, small), "unknown op")
	y := kt.Alloc(t, d, runtime.F32, []int{4})
	require.ErrorContains(t, kernels.Reduce(0, kernels.Dot, out, x, y, kt.Alloc(t, d, runtime.F32, []int{8})), "argument y has 4 elements")
}
