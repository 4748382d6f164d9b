package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// optimCase is a set of tensors with f32-rounded random contents; every
// fourth element of the first tensor has g = m = v = 0 (the v̂ = 0 path).
type optimCase struct {
	sizes        []int
	p, g, m, v   [][]float64
	dp, dm, dv   [][]float64
	lrs          []float64
	cfg          kernels.AdamWConfig
	nnCfg        nn.AdamW
	weightDecay  float64
	arrays       [][]kernels.Array // per tensor: p g m v dp dm dv dg on the device
	lrArr        kernels.Array
	rng          *rand.Rand
	dev          runtime.Device
	scratchElems int
}

func newOptimCase(t *testing.T, seed uint64, step int) *optimCase {
	rng := rand.New(rand.NewPCG(seed, 99))
	c := &optimCase{sizes: []int{1, 300, 5003}, rng: rng, dev: kt.Device(t)}
	// β2 = 0.999 as torch's default: 1−β2 must come from the host in float64.
	c.cfg = kernels.AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: step}
	c.nnCfg = nn.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	for i, n := range c.sizes {
		p := kt.Rand(rng, runtime.F32, n, 1)
		g := kt.Rand(rng, runtime.F32, n, 0.1)
		m := kt.Rand(rng, runtime.F32, n, 0.05)
		v := make([]float64, n)
		for e := range v {
			v[e] = runtime.Round(runtime.F32, rng.Float64()*1e-2)
			if i == 2 && e%4 == 0 {
				g[e], m[e], v[e] = 0, 0, 0
			}
		}
		c.p, c.g, c.m, c.v = append(c.p, p), append(c.g, g), append(c.m, m), append(c.v, v)
		c.dp = append(c.dp, kt.Rand(rng, runtime.F32, n, 1))
		c.dm = append(c.dm, kt.Rand(rng, runtime.F32, n, 1))
		c.dv = append(c.dv, kt.Rand(rng, runtime.F32, n, 1))
		c.lrs = append(c.lrs, runtime.Round(runtime.F32, 1e-3*(1+rng.Float64())))
	}
	for i, n := range c.sizes {
		row := []kernels.Array{}
		for _, vals := range [][]float64{c.p[i], c.g[i], c.m[i], c.v[i], c.dp[i], c.dm[i], c.dv[i]} {
			row = append(row, kt.Upload(t, c.dev, runtime.F32, []int{n}, vals))
		}
		row = append(row, kt.Poisoned(t, c.dev, runtime.F32, []int{n}))
		c.arrays = append(c.arrays, row)
	}
	c.lrArr = kt.Upload(t, c.dev, runtime.F32, []int{len(c.lrs)}, c.lrs)
	return c
}

func (c *optimCase) table(t *testing.T, cols ...int) *kernels.TensorTable {
	rows := make([][]kernels.Array, len(c.sizes))
	for i := range rows {
		for _, j := range cols {
			rows[i] = append(rows[i], c.arrays[i][j])
		}
	}
	tab, err := kernels.NewTensorTable(c.dev, len(cols), rows)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tab.Free() })
	return tab
}

func tensors(t *testing.T, xs [][]float64) []*nn.Tensor {
	out := make([]*nn.Tensor, len(xs))
	for i, x := range xs {
		var err error
		out[i], err = nn.FromF64(append([]float64(nil), x...), len(x))
		require.NoError(t, err)
	}
	return out
}

func values(t *testing.T, ts []*nn.Tensor) [][]float64 {
	out := make([][]float64, len(ts))
	for i, x := range ts {
		v, err := x.F64()
		require.NoError(t, err)
		out[i] = v
	}
	return out
}

func TestGoldenAdamWStep(t *testing.T) {
	for _, step := range []int{1, 7} {
		c := newOptimCase(t, uint64(step), step)
		tab := c.table(t, 0, 1, 2, 3)
		nonfinite := kt.Upload(t, c.dev, runtime.I32, []int{1}, []float64{0})
		require.NoError(t, kernels.AdamWStep(0, tab, c.lrArr, c.cfg, kernels.Array{}, nonfinite))
		p, g, m, v := tensors(t, c.p), tensors(t, c.g), tensors(t, c.m), tensors(t, c.v)
		require.NoError(t, cpu.New().AdamWStep(c.nnCfg, step, c.lrs, p, g, m, v))
		for i := range c.sizes {
			scales := c.stepScales(i, step)
			for j, want := range [][]*nn.Tensor{p, m, v} {
				kt.CheckScaled(t, "adamw_step_f32", 1e-5, kt.Download(t, c.arrays[i][[]int{0, 2, 3}[j]]), values(t, want)[i], scales[j], "tensor", i, "array", j)
			}
		}
		require.Equal(t, []float64{0}, kt.Download(t, nonfinite))
	}
}

func TestGoldenAdamWVJP(t *testing.T) {
	for _, step := range []int{1, 5} {
		c := newOptimCase(t, 10+uint64(step), step)
		tab := c.table(t, 0, 1, 2, 3, 4, 5, 6, 7)
		partials := kt.Alloc(t, c.dev, runtime.F32, []int{tab.Partials()})
		dLRs := kt.Poisoned(t, c.dev, runtime.F32, []int{len(c.sizes)})
		require.NoError(t, kernels.AdamWVJP(0, tab, c.lrArr, c.cfg, partials, dLRs))

		p, g, m, v := tensors(t, c.p), tensors(t, c.g), tensors(t, c.m), tensors(t, c.v)
		dp, dm, dv := tensors(t, c.dp), tensors(t, c.dm), tensors(t, c.dv)
		dg := tensors(t, make([][]float64, 0))
		for _, n := range c.sizes {
			z, err := nn.Zeros(runtime.F64, n)
			require.NoError(t, err)
			dg = append(dg, z)
		}
		wantLR := make([]float64, len(c.sizes))
		require.NoError(t, cpu.New().AdamWStepVJP(c.nnCfg, step, c.lrs, p, g, m, v, dp, dm, dv, dg, wantLR))
		for i := range c.sizes {
			scales := c.vjpScales(i, step)
			for j, want := range [][]*nn.Tensor{dp, dm, dv, dg} {
				kt.CheckScaled(t, "adamw_vjp_f32", 1e-5, kt.Download(t, c.arrays[i][4+j]), values(t, want)[i], scales[j], "tensor", i, "adjoint", j)
			}
		}
		kt.CheckScaled(t, "optim_reduce_rows", 1e-5, kt.Download(t, dLRs), wantLR, c.lrScale(step))
	}
}

// stepScales returns, for tensor i, the per-element sums of the magnitudes of
// the terms that make up p, m and v after an AdamW step: the scale of the
// f32 rounding error however much the terms cancel.
func (c *optimCase) stepScales(i, step int) [3][]float64 {
	bc1 := 1 - math.Pow(c.cfg.Beta1, float64(step))
	bc2s := math.Sqrt(1 - math.Pow(c.cfg.Beta2, float64(step)))
	b1, b2, lr := c.cfg.Beta1, c.cfg.Beta2, c.lrs[i]
	var out [3][]float64
	for e := range c.p[i] {
		g := c.g[i][e]
		me := b1*c.m[i][e] + (1-b1)*g
		ve := b2*c.v[i][e] + (1-b2)*g*g
		ps := math.Abs(c.p[i][e] * (1 - lr*c.cfg.WeightDecay))
		if ve > 0 {
			ps += math.Abs(lr / bc1 * me / (math.Sqrt(ve)/bc2s + c.cfg.Eps))
		}
		out[0] = append(out[0], ps)
		out[1] = append(out[1], math.Abs(b1*c.m[i][e])+math.Abs((1-b1)*g))
		out[2] = append(out[2], ve)
	}
	return out
}

// vjpScales is stepScales for the four adjoints of AdamWVJP.
func (c *optimCase) vjpScales(i, step int) [4][]float64 {
	bc1 := 1 - math.Pow(c.cfg.Beta1, float64(step))
	bc2s := math.Sqrt(1 - math.Pow(c.cfg.Beta2, float64(step)))
	b1, b2, lr := c.cfg.Beta1, c.cfg.Beta2, c.lrs[i]
	var out [4][]float64
	for e := range c.p[i] {
		pbar := c.dp[i][e]
		ms, vs := math.Abs(c.dm[i][e]), math.Abs(c.dv[i][e])
		if v := c.v[i][e]; v > 0 {
			sv := math.Sqrt(v)
			den := sv/bc2s + c.cfg.Eps
			ms += math.Abs(pbar * lr / (bc1 * den))
			vs += math.Abs(pbar * lr * c.m[i][e] / bc1 / (den * den * 2 * sv * bc2s))
		}
		out[0] = append(out[0], math.Abs(pbar*(1-lr*c.cfg.WeightDecay)))
		out[1] = append(out[1], b1*ms)
		out[2] = append(out[2], b2*vs)
		out[3] = append(out[3], (1-b1)*ms+2*(1-b2)*math.Abs(c.g[i][e])*vs)
	}
	return out
}

// lrScale is Σ|p̄·(−λp − u)| per tensor: the scale of η̄'s rounding error.
func (c *optimCase) lrScale(step int) []float64 {
	bc1 := 1 - math.Pow(c.cfg.Beta1, float64(step))
	bc2s := math.Sqrt(1 - math.Pow(c.cfg.Beta2, float64(step)))
	out := make([]float64, len(c.sizes))
	for i := range c.sizes {
		for e := range c.p[i] {
			u := 0.0
			if c.v[i][e] > 0 {
				u = c.m[i][e] / bc1 / (math.Sqrt(c.v[i][e])/bc2s + c.cfg.Eps)
			}
			out[i] += math.Abs(c.dp[i][e] * (-c.cfg.WeightDecay*c.p[i][e] - u))
		}
	}
	return out
}

func TestGoldenSGD(t *testing.T) {
	c := newOptimCase(t, 21, 1)
	// Step: p g.
	step := c.table(t, 0, 1)
	require.NoError(t, kernels.SGDStep(0, step, c.lrArr, 0.1, kernels.Array{}, kernels.Array{}))
	p, g := tensors(t, c.p), tensors(t, c.g)
	require.NoError(t, cpu.New().SGDStep(0.1, c.lrs, p, g))
	for i := range c.sizes {
		kt.Check(t, "sgd_step_f32", runtime.F32, kt.Download(t, c.arrays[i][0]), values(t, p)[i])
	}
	// VJP on fresh arrays: p_t g_t p̄ ḡ = columns 1 (as p), 2 (as g), 4, 7.
	c = newOptimCase(t, 22, 1)
	vjp := c.table(t, 1, 2, 4, 7)
	partials := kt.Alloc(t, c.dev, runtime.F32, []int{vjp.Partials()})
	dLRs := kt.Poisoned(t, c.dev, runtime.F32, []int{len(c.sizes)})
	require.NoError(t, kernels.SGDVJP(0, vjp, c.lrArr, 0.1, partials, dLRs))
	pt, gt, dp := tensors(t, c.g), tensors(t, c.m), tensors(t, c.dp)
	var dg []*nn.Tensor
	for _, n := range c.sizes {
		z, err := nn.Zeros(runtime.F64, n)
		require.NoError(t, err)
		dg = append(dg, z)
	}
	wantLR := make([]float64, len(c.sizes))
	require.NoError(t, cpu.New().SGDStepVJP(0.1, c.lrs, pt, gt, dp, dg, wantLR))
	scale := make([]float64, len(c.sizes))
	for i := range c.sizes {
		kt.Check(t, "sgd_vjp_f32", runtime.F32, kt.Download(t, c.arrays[i][4]), values(t, dp)[i])
		kt.Check(t, "sgd_vjp_f32", runtime.F32, kt.Download(t, c.arrays[i][7]), values(t, dg)[i])
		for e := range c.g[i] {
			scale[i] += math.Abs(c.dp[i][e] * (-0.1*c.g[i][e] - c.m[i][e]))
		}
	}
	kt.CheckScaled(t, "sgd_vjp_f32", 1e-5, kt.Download(t, dLRs), wantLR, scale)
}

func TestGoldenClipScale(t *testing.T) {
	c := newOptimCase(t, 31, 1)
	tab := c.table(t, 0)
	partials := kt.Alloc(t, c.dev, runtime.F32, []int{tab.Partials()})
	out := kt.Poisoned(t, c.dev, runtime.F32, []int{2})
	for _, maxNorm := range []float64{0.5, 1e6} {
		require.NoError(t, kernels.ClipScale(0, tab, maxNorm, partials, out))
		p := tensors(t, c.p)
		norm, err := cpu.New().GlobalNorm(p)
		require.NoError(t, err)
		got := kt.Download(t, out)
		kt.Check(t, "multi_sumsq_f32", runtime.F32, got[:1], []float64{norm})
		kt.Check(t, "clip_scale", runtime.F32, got[1:], []float64{math.Min(1, maxNorm/(norm+1e-6))})
	}
	// The scale feeds a step without a host round trip: SGD with gscale.
	step := c.table(t, 0, 1)
	require.NoError(t, kernels.ClipScale(0, tab, 0.5, partials, out))
	scale := kt.Download(t, out)[1]
	require.NoError(t, kernels.SGDStep(0, step, c.lrArr, 0, out.Elem(1), kernels.Array{}))
	for i := range c.sizes {
		want := make([]float64, len(c.p[i]))
		for e := range want {
			want[e] = c.p[i][e] - c.lrs[i]*c.g[i][e]*scale
		}
		kt.Check(t, "sgd_step_f32", runtime.F32, kt.Download(t, c.arrays[i][0]), want)
	}
}

func TestOptimNonFinite(t *testing.T) {
	c := newOptimCase(t, 41, 1)
	require.NoError(t, c.dev.MemcpyHtoD(c.arrays[1][1].Ptr, runtime.Encode(runtime.F32, []float64{math.NaN(), math.Inf(1), 0}), 0))
	nonfinite := kt.Upload(t, c.dev, runtime.I32, []int{1}, []float64{0})
	require.NoError(t, kernels.AdamWStep(0, c.table(t, 0, 1, 2, 3), c.lrArr, c.cfg, kernels.Array{}, nonfinite))
	require.Equal(t, []float64{2}, kt.Download(t, nonfinite))
}

func TestOptimBadInput(t *testing.T) {
	c := newOptimCase(t, 51, 1)
	tab := c.table(t, 0, 1)
	require.ErrorContains(t, kernels.AdamWStep(0, tab, c.lrArr, c.cfg, kernels.Array{}, kernels.Array{}), "tensor table has 2 arrays per tensor, want 4")
	bad := c.cfg
	bad.Step = 0
	require.ErrorContains(t, kernels.AdamWStep(0, c.table(t, 0, 1, 2, 3), c.lrArr, bad, kernels.Array{}, kernels.Array{}), "step 0")
	short := kt.Alloc(t, c.dev, runtime.F32, []int{2})
	require.ErrorContains(t, kernels.SGDStep(0, tab, short, 0, kernels.Array{}, kernels.Array{}), "lrs has 2 elements, want one per tensor (3)")
	_, err := kernels.NewTensorTable(c.dev, 2, [][]kernels.Array{{c.arrays[0][0], c.arrays[1][0]}})
	require.ErrorContains(t, err, "row 0 array 1 has 300 elements")
}
