package kernels_test

import (
	"fmt"
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

var (
	normRowSizes = []int{1, 5, 33, 130}
	normColSizes = []int{8, 33, 768}
)

const normEps = 1e-5

// f64T wraps a copy of vals as a float64 host tensor.
func f64T(t *testing.T, vals []float64, shape ...int) *nn.Tensor {
	t.Helper()
	x, err := nn.FromF64(append([]float64(nil), vals...), shape...)
	require.NoError(t, err)
	return x
}

func f64V(t *testing.T, x *nn.Tensor) []float64 {
	t.Helper()
	v, err := x.F64()
	require.NoError(t, err)
	return append([]float64(nil), v...)
}

func roundAll(dt runtime.DType, v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = runtime.Round(dt, x)
	}
	return out
}

// normCase is one random problem: x [rows, c] with a per-row offset (so the
// two-pass statistics matter), gamma around 1, beta, dy, and the initial
// dγ/dβ that the backward accumulates into; all rounded to the storage type.
type normCase struct {
	dt           runtime.DType
	rows, c      int
	x, res       []float64
	gamma, beta  []float64
	dy, dg0, db0 []float64
}

func newNormCase(rng *rand.Rand, dt runtime.DType, rows, c int) *normCase {
	nc := &normCase{dt: dt, rows: rows, c: c}
	nc.x = make([]float64, rows*c)
	for r := range rows {
		off := float64(r%5) - 2
		for j := range c {
			nc.x[r*c+j] = runtime.Round(dt, off+2*rng.Float64()-1)
		}
	}
	nc.res = kt.Rand(rng, dt, rows*c, 1)
	nc.gamma = make([]float64, c)
	for j := range nc.gamma {
		nc.gamma[j] = runtime.Round(dt, 1+0.5*(2*rng.Float64()-1))
	}
	nc.beta = kt.Rand(rng, dt, c, 0.5)
	nc.dy = kt.Rand(rng, dt, rows*c, 1)
	nc.dg0 = kt.Rand(rng, dt, c, 1)
	nc.db0 = kt.Rand(rng, dt, c, 1)
	return nc
}

// normFwdScales returns the error scales of the forward outputs: for y,
// (|x|+mean|x|)·rstd·|γ| + |β| per element (the magnitudes that meet in
// (x−μ)·r·γ + β, μ itself carrying an error ∝ mean|x|); for mean, mean|x|.
func normFwdScales(x, gamma, beta, rstd []float64, c int) (ys, ms []float64) {
	rows := len(x) / c
	ys = make([]float64, len(x))
	ms = make([]float64, rows)
	for r := range rows {
		xa := 0.0
		for j := range c {
			xa += math.Abs(x[r*c+j])
		}
		xa /= float64(c)
		ms[r] = xa
		for j := range c {
			s := (math.Abs(x[r*c+j]) + xa) * rstd[r] * math.Abs(gamma[j])
			if beta != nil {
				s += math.Abs(beta[j])
			}
			ys[r*c+j] = s
		}
	}
	return ys, ms
}

// normBwdScales returns the error scales of the backward outputs:
// r·(|g| + Σ|g|/C + |x̂|·Σ|g·x̂|/C) for dx, |dγ₀| + Σ|dy·x̂| for dγ and
// |dβ₀| + Σ|dy| for dβ (the terms' magnitudes, which bound the rounding error
// of any summation order however much they cancel).
func normBwdScales(nc *normCase, x, mean, rstd []float64) (dxs, dgs, dbs []float64) {
	rows, c := nc.rows, nc.c
	dxs = make([]float64, rows*c)
	dgs = make([]float64, c)
	dbs = make([]float64, c)
	for j := range c {
		dgs[j], dbs[j] = math.Abs(nc.dg0[j]), math.Abs(nc.db0[j])
	}
	for r := range rows {
		mu := 0.0
		if mean != nil {
			mu = mean[r]
		}
		sg, sgx := 0.0, 0.0
		for j := range c {
			e := r*c + j
			xh := (x[e] - mu) * rstd[r]
			g := nc.dy[e] * nc.gamma[j]
			sg += math.Abs(g)
			sgx += math.Abs(g * xh)
			dgs[j] += math.Abs(nc.dy[e] * xh)
			dbs[j] += math.Abs(nc.dy[e])
		}
		for j := range c {
			e := r*c + j
			xh := (x[e] - mu) * rstd[r]
			dxs[e] = rstd[r] * (math.Abs(nc.dy[e]*nc.gamma[j]) + sg/float64(c) + math.Abs(xh)*sgx/float64(c))
		}
	}
	return dxs, dgs, dbs
}

// floored adds to error scales the rounding that f16's subnormal range
// (below 2⁻¹⁴) allows whatever the value: one quantum, 2⁻²⁴ (rounding errs
// by at most half of it), relative to dt's tolerance. bf16 shares f32's
// exponent range.
func floored(dt runtime.DType, scale []float64) []float64 {
	if dt != runtime.F16 {
		return scale
	}
	out := make([]float64, len(scale))
	for i, s := range scale {
		out[i] = s + 0x1p-24/kt.Tolerance(dt)
	}
	return out
}

// sumDType is the storage type of dγ/dβ for case i: f32, or (for 16-bit
// storage, every other case) the storage type itself.
func sumDType(dt runtime.DType, i int) runtime.DType {
	if dt != runtime.F32 && i%2 == 1 {
		return dt
	}
	return runtime.F32
}

func normShapes() [][2]int {
	var out [][2]int
	for _, n := range normRowSizes {
		for _, c := range normColSizes {
			out = append(out, [2]int{n, c})
		}
	}
	return out
}

func TestGoldenNormLayerNorm(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(21, 22))
	for _, dt := range storage {
		for i, sh := range normShapes() {
			n, c := sh[0], sh[1]
			nc := newNormCase(rng, dt, n, c)
			name := fmt.Sprintf("%s n=%d c=%d", dt, n, c)
			useBeta := i%4 != 3

			// Forward.
			xa := kt.Upload(t, d, dt, []int{n, c}, nc.x)
			ga := kt.Upload(t, d, dt, []int{c}, nc.gamma)
			var ba kernels.Array
			var beta []float64
			var betaT *nn.Tensor
			if useBeta {
				beta = nc.beta
				ba = kt.Upload(t, d, dt, []int{c}, beta)
				betaT = f64T(t, beta, c)
			}
			ya := kt.Poisoned(t, d, dt, []int{n, c})
			ma := kt.Poisoned(t, d, runtime.F32, []int{n})
			ra := kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.LayerNormForward(0, xa, ga, ba, normEps, ya, ma, ra), name)
			y, mean, rstd := f64T(t, make([]float64, n*c), n, c), f64T(t, make([]float64, n), n), f64T(t, make([]float64, n), n)
			require.NoError(t, be.LayerNormForward(f64T(t, nc.x, n, c), f64T(t, nc.gamma, c), betaT, normEps, y, mean, rstd))
			ys, ms := normFwdScales(nc.x, nc.gamma, beta, f64V(t, rstd), c)
			k := kname("layernorm_fwd", dt)
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, ya), f64V(t, y), floored(dt, ys), name, " y")
			kt.CheckScaled(t, k, 1e-5, kt.Download(t, ma), f64V(t, mean), ms, name, " mean")
			kt.CheckTol(t, k, 1e-5, kt.Download(t, ra), f64V(t, rstd), name, " rstd")

			// Backward, from the reference statistics rounded to f32 (given
			// to both sides, so only the backward's own error is measured).
			mean32, rstd32 := roundAll(runtime.F32, f64V(t, mean)), roundAll(runtime.F32, f64V(t, rstd))
			sdt := sumDType(dt, i)
			dg0, db0 := roundAll(sdt, nc.dg0), roundAll(sdt, nc.db0)
			nc.dg0, nc.db0 = dg0, db0
			dya := kt.Upload(t, d, dt, []int{n, c}, nc.dy)
			dxa := kt.Poisoned(t, d, dt, []int{n, c})
			dga := kt.Upload(t, d, sdt, []int{c}, dg0)
			dba := kt.Upload(t, d, sdt, []int{c}, db0)
			scratch := kt.Poisoned(t, d, runtime.F32, []int{kernels.NormScratchLen(n, c)})
			require.NoError(t, kernels.LayerNormBackward(0, xa, ga, kt.Upload(t, d, runtime.F32, []int{n}, mean32),
				kt.Upload(t, d, runtime.F32, []int{n}, rstd32), dya, dxa, dga, dba, scratch), name)
			dx, dg, db := f64T(t, make([]float64, n*c), n, c), f64T(t, dg0, c), f64T(t, db0, c)
			require.NoError(t, be.LayerNormBackward(f64T(t, nc.x, n, c), f64T(t, nc.gamma, c), f64T(t, mean32, n), f64T(t, rstd32, n),
				f64T(t, nc.dy, n, c), dx, dg, db))
			dxs, dgs, dbs := normBwdScales(nc, nc.x, mean32, rstd32)
			kt.CheckScaled(t, kname("layernorm_bwd", dt), kt.Tolerance(dt), kt.Download(t, dxa), f64V(t, dx), floored(dt, dxs), name, " dx")
			ks := kname("norm_colsum", sdt)
			kt.CheckScaled(t, ks, kt.Tolerance(sdt), kt.Download(t, dga), f64V(t, dg), floored(sdt, dgs), name, " dgamma ", sdt)
			kt.CheckScaled(t, ks, kt.Tolerance(sdt), kt.Download(t, dba), f64V(t, db), floored(sdt, dbs), name, " dbeta ", sdt)
		}
	}
}

func TestGoldenNormRMSNorm(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(23, 24))
	for _, dt := range storage {
		for i, sh := range normShapes() {
			n, c := sh[0], sh[1]
			nc := newNormCase(rng, dt, n, c)
			name := fmt.Sprintf("%s n=%d c=%d", dt, n, c)

			xa := kt.Upload(t, d, dt, []int{n, c}, nc.x)
			ga := kt.Upload(t, d, dt, []int{c}, nc.gamma)
			ya := kt.Poisoned(t, d, dt, []int{n, c})
			ra := kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.RMSNormForward(0, xa, ga, normEps, ya, ra), name)
			y, rstd := f64T(t, make([]float64, n*c), n, c), f64T(t, make([]float64, n), n)
			require.NoError(t, be.RMSNormForward(f64T(t, nc.x, n, c), f64T(t, nc.gamma, c), normEps, y, rstd))
			// RMSNorm has no centring: y's error scale is |x|·r·|γ|.
			ys, rs := make([]float64, n*c), f64V(t, rstd)
			for e := range ys {
				ys[e] = math.Abs(nc.x[e]) * rs[e/c] * math.Abs(nc.gamma[e%c])
			}
			k := kname("rmsnorm_fwd", dt)
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, ya), f64V(t, y), floored(dt, ys), name, " y")
			kt.CheckTol(t, k, 1e-5, kt.Download(t, ra), f64V(t, rstd), name, " rstd")

			rstd32 := roundAll(runtime.F32, f64V(t, rstd))
			sdt := sumDType(dt, i)
			nc.dg0 = roundAll(sdt, nc.dg0)
			dya := kt.Upload(t, d, dt, []int{n, c}, nc.dy)
			dxa := kt.Poisoned(t, d, dt, []int{n, c})
			dga := kt.Upload(t, d, sdt, []int{c}, nc.dg0)
			scratch := kt.Poisoned(t, d, runtime.F32, []int{kernels.NormScratchLen(n, c) / 2})
			require.NoError(t, kernels.RMSNormBackward(0, xa, ga, kt.Upload(t, d, runtime.F32, []int{n}, rstd32), dya, dxa, dga, scratch), name)
			dx, dg := f64T(t, make([]float64, n*c), n, c), f64T(t, nc.dg0, c)
			require.NoError(t, be.RMSNormBackward(f64T(t, nc.x, n, c), f64T(t, nc.gamma, c), f64T(t, rstd32, n), f64T(t, nc.dy, n, c), dx, dg))
			dxs, dgs, _ := normBwdScales(nc, nc.x, nil, rstd32)
			kt.CheckScaled(t, kname("rmsnorm_bwd", dt), kt.Tolerance(dt), kt.Download(t, dxa), f64V(t, dx), floored(dt, dxs), name, " dx")
			kt.CheckScaled(t, kname("norm_colsum", sdt), kt.Tolerance(sdt), kt.Download(t, dga), f64V(t, dg), floored(sdt, dgs), name, " dgamma ", sdt)
		}
	}
}

// TestGoldenNormAddResidual checks the fused residual add: sum = x + res is
// written out (here in place over res, the residual stream) and normalised.
func TestGoldenNormAddResidual(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(25, 26))
	for _, dt := range storage {
		for _, sh := range [][2]int{{5, 33}, {33, 768}} {
			n, c := sh[0], sh[1]
			nc := newNormCase(rng, dt, n, c)
			name := fmt.Sprintf("%s n=%d c=%d", dt, n, c)
			sum := make([]float64, n*c)
			for e := range sum {
				sum[e] = runtime.Round(dt, nc.x[e]+nc.res[e])
			}
			shape := []int{1, n, c}
			xa := kt.Upload(t, d, dt, shape, nc.x)
			ga := kt.Upload(t, d, dt, []int{c}, nc.gamma)
			ba := kt.Upload(t, d, dt, []int{c}, nc.beta)

			// LayerNorm; sum aliases res.
			resa := kt.Upload(t, d, dt, shape, nc.res)
			ya := kt.Poisoned(t, d, dt, shape)
			ma := kt.Poisoned(t, d, runtime.F32, []int{n})
			ra := kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.AddLayerNormForward(0, xa, resa, ga, ba, normEps, resa, ya, ma, ra), name)
			y, mean, rstd := f64T(t, make([]float64, n*c), n, c), f64T(t, make([]float64, n), n), f64T(t, make([]float64, n), n)
			require.NoError(t, be.LayerNormForward(f64T(t, sum, n, c), f64T(t, nc.gamma, c), f64T(t, nc.beta, c), normEps, y, mean, rstd))
			k := kname("layernorm_fwd", dt)
			// f32(x)+f32(res) rounded to the storage type: exact for f32,
			// and within one rounding for 16-bit types.
			kt.Check(t, k, dt, kt.Download(t, resa), sum, name, " sum")
			ys, ms := normFwdScales(sum, nc.gamma, nc.beta, f64V(t, rstd), c)
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, ya), f64V(t, y), floored(dt, ys), name, " y")
			kt.CheckScaled(t, k, 1e-5, kt.Download(t, ma), f64V(t, mean), ms, name, " mean")
			kt.CheckTol(t, k, 1e-5, kt.Download(t, ra), f64V(t, rstd), name, " rstd")

			// RMSNorm; separate sum output, y in place over x.
			suma := kt.Poisoned(t, d, dt, shape)
			xa2 := kt.Upload(t, d, dt, shape, nc.x)
			resa2 := kt.Upload(t, d, dt, shape, nc.res)
			ra2 := kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.AddRMSNormForward(0, xa2, resa2, ga, normEps, suma, xa2, ra2), name)
			require.NoError(t, be.RMSNormForward(f64T(t, sum, n, c), f64T(t, nc.gamma, c), normEps, y, rstd))
			k = kname("rmsnorm_fwd", dt)
			kt.Check(t, k, dt, kt.Download(t, suma), sum, name, " sum")
			ys, rs := make([]float64, n*c), f64V(t, rstd)
			for e := range ys {
				ys[e] = math.Abs(sum[e]) * rs[e/c] * math.Abs(nc.gamma[e%c])
			}
			kt.CheckScaled(t, k, kt.Tolerance(dt), kt.Download(t, xa2), f64V(t, y), floored(dt, ys), name, " y")
			kt.CheckTol(t, k, 1e-5, kt.Download(t, ra2), f64V(t, rstd), name, " rstd")
		}
	}
}

// TestNormBackwardOptional runs the backward with only some outputs: dx
// alone (in place over dy), dβ alone, dγ alone with no dx.
func TestNormBackwardOptional(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(27, 28))
	dt, n, c := runtime.F32, 33, 33
	nc := newNormCase(rng, dt, n, c)
	x64, g64 := f64T(t, nc.x, n, c), f64T(t, nc.gamma, c)
	y, mean, rstd := f64T(t, make([]float64, n*c), n, c), f64T(t, make([]float64, n), n), f64T(t, make([]float64, n), n)
	require.NoError(t, be.LayerNormForward(x64, g64, nil, normEps, y, mean, rstd))
	mean32, rstd32 := roundAll(runtime.F32, f64V(t, mean)), roundAll(runtime.F32, f64V(t, rstd))
	dxs, dgs, dbs := normBwdScales(nc, nc.x, mean32, rstd32)
	xa, ga := kt.Upload(t, d, dt, []int{n, c}, nc.x), kt.Upload(t, d, dt, []int{c}, nc.gamma)
	ma, ra := kt.Upload(t, d, runtime.F32, []int{n}, mean32), kt.Upload(t, d, runtime.F32, []int{n}, rstd32)
	dx, dg, db := f64T(t, make([]float64, n*c), n, c), f64T(t, nc.dg0, c), f64T(t, nc.db0, c)
	require.NoError(t, be.LayerNormBackward(x64, g64, f64T(t, mean32, n), f64T(t, rstd32, n), f64T(t, nc.dy, n, c), dx, dg, db))

	// dx only, in place over dy; no scratch needed.
	dya := kt.Upload(t, d, dt, []int{n, c}, nc.dy)
	require.NoError(t, kernels.LayerNormBackward(0, xa, ga, ma, ra, dya, dya, kernels.Array{}, kernels.Array{}, kernels.Array{}))
	kt.CheckScaled(t, "layernorm_bwd_f32", 1e-5, kt.Download(t, dya), f64V(t, dx), dxs, "dx in place")

	// dβ alone, then dγ alone: each uses the front of a scratch sized for one.
	dya = kt.Upload(t, d, dt, []int{n, c}, nc.dy)
	half := kernels.NormScratchLen(n, c) / 2
	dba := kt.Upload(t, d, dt, []int{c}, nc.db0)
	require.NoError(t, kernels.LayerNormBackward(0, xa, ga, ma, ra, dya, kernels.Array{}, kernels.Array{}, dba, kt.Poisoned(t, d, runtime.F32, []int{half})))
	kt.CheckScaled(t, "norm_colsum_f32", 1e-5, kt.Download(t, dba), f64V(t, db), dbs, "dbeta alone")
	dga := kt.Upload(t, d, dt, []int{c}, nc.dg0)
	require.NoError(t, kernels.LayerNormBackward(0, xa, ga, ma, ra, dya, kernels.Array{}, dga, kernels.Array{}, kt.Poisoned(t, d, runtime.F32, []int{half})))
	kt.CheckScaled(t, "norm_colsum_f32", 1e-5, kt.Download(t, dga), f64V(t, dg), dgs, "dgamma alone")
	require.Equal(t, nc.dy, kt.Download(t, dya), "dy must be left alone when dx is absent")
}

// TestNormDeterministic runs each backward twice (and the forwards) and
// requires identical bits: the column sums go through fixed-order partials.
func TestNormDeterministic(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(29, 30))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		n, c := 130, 768
		nc := newNormCase(rng, dt, n, c)
		xa, ga, ba := kt.Upload(t, d, dt, []int{n, c}, nc.x), kt.Upload(t, d, dt, []int{c}, nc.gamma), kt.Upload(t, d, dt, []int{c}, nc.beta)
		dya := kt.Upload(t, d, dt, []int{n, c}, nc.dy)
		run := func() [][]float64 {
			ya, ma, ra := kt.Poisoned(t, d, dt, []int{n, c}), kt.Poisoned(t, d, runtime.F32, []int{n}), kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.LayerNormForward(0, xa, ga, ba, normEps, ya, ma, ra))
			dxa := kt.Poisoned(t, d, dt, []int{n, c})
			dga := kt.Upload(t, d, runtime.F32, []int{c}, nc.dg0)
			dba := kt.Upload(t, d, runtime.F32, []int{c}, nc.db0)
			scratch := kt.Poisoned(t, d, runtime.F32, []int{kernels.NormScratchLen(n, c)})
			require.NoError(t, kernels.LayerNormBackward(0, xa, ga, ma, ra, dya, dxa, dga, dba, scratch))
			ry, rr := kt.Poisoned(t, d, dt, []int{n, c}), kt.Poisoned(t, d, runtime.F32, []int{n})
			require.NoError(t, kernels.RMSNormForward(0, xa, ga, normEps, ry, rr))
			rdx, rdg := kt.Poisoned(t, d, dt, []int{n, c}), kt.Upload(t, d, runtime.F32, []int{c}, nc.dg0)
			require.NoError(t, kernels.RMSNormBackward(0, xa, ga, rr, dya, rdx, rdg, scratch))
			var out [][]float64
			for _, a := range []kernels.Array{ya, ma, ra, dxa, dga, dba, ry, rr, rdx, rdg} {
				out = append(out, kt.Download(t, a))
			}
			return out
		}
		a, b := run(), run()
		for i := range a {
			for j := range a[i] {
				if math.Float64bits(a[i][j]) != math.Float64bits(b[i][j]) {
					t.Fatalf("%s output %d element %d differs between runs: %v vs %v", dt, i, j, a[i][j], b[i][j])
				}
			}
		}
	}
}

func TestNormBadInput(t *testing.T) {
	d := kt.Device(t)
	f32 := func(shape ...int) kernels.Array { return kt.Alloc(t, d, runtime.F32, shape) }
	x, g, y := f32(4, 8), f32(8), f32(4, 8)
	mean, rstd := f32(4), f32(4)
	none := kernels.Array{}

	require.ErrorContains(t, kernels.LayerNormForward(0, x, f32(7), none, 1e-5, y, mean, rstd),
		"layernorm_fwd: argument gamma has shape [7], want [8]")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, kt.Alloc(t, d, runtime.BF16, []int{8}), none, 1e-5, y, mean, rstd),
		"layernorm_fwd: argument gamma has dtype BF16")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, 1e-5, f32(4, 9), mean, rstd),
		"layernorm_fwd: argument y has shape [4 9]")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, 1e-5, y, kt.Alloc(t, d, runtime.BF16, []int{4}), rstd),
		"layernorm_fwd: argument mean has dtype BF16")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, 1e-5, y, mean, f32(5)),
		"layernorm_fwd: argument rstd has shape [5], want f32 [4]")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, -1, y, mean, rstd), "layernorm_fwd: eps -1")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, math.NaN(), y, mean, rstd), "layernorm_fwd: eps NaN")
	require.ErrorContains(t, kernels.LayerNormForward(0, x, none, none, 1e-5, y, mean, rstd), "layernorm_fwd: argument gamma is missing")
	require.ErrorContains(t, kernels.LayerNormForward(0, f32(4, 0), g, none, 1e-5, y, mean, rstd), "layernorm_fwd: argument x has shape [4 0]")
	require.ErrorContains(t, kernels.LayerNormForward(0, kt.Alloc(t, d, runtime.I32, []int{4, 8}), g, none, 1e-5, y, mean, rstd),
		"layernorm_fwd: argument x has dtype I32")
	nilPtr := kernels.Array{Dev: d, DType: runtime.F32, Shape: []int{4, 8}}
	require.ErrorContains(t, kernels.LayerNormForward(0, x, g, none, 1e-5, nilPtr, mean, rstd), "layernorm_fwd: argument y has a nil pointer")
	require.ErrorContains(t, kernels.RMSNormForward(0, x, g, 1e-5, kt.Alloc(t, d, runtime.BF16, []int{4, 8}), rstd),
		"rmsnorm_fwd: argument y has dtype BF16")
	require.ErrorContains(t, kernels.AddLayerNormForward(0, x, none, g, none, 1e-5, y, y, mean, rstd),
		"add_layernorm_fwd: argument residual is missing")
	require.ErrorContains(t, kernels.AddRMSNormForward(0, x, f32(4, 8), g, 1e-5, f32(4, 9), y, rstd),
		"add_rmsnorm_fwd: argument sum has shape [4 9]")

	dy, dx, dg, db := f32(4, 8), f32(4, 8), f32(8), f32(8)
	scratch := f32(kernels.NormScratchLen(4, 8))
	require.NoError(t, kernels.LayerNormBackward(0, x, g, mean, rstd, dy, dx, dg, db, scratch))
	require.ErrorContains(t, kernels.LayerNormBackward(0, x, g, mean, rstd, dy, dx, dg, db, f32(3)),
		"layernorm_bwd: argument scratch has 3 elements, want at least 16")
	require.ErrorContains(t, kernels.LayerNormBackward(0, x, g, mean, rstd, dy, dx, dg, db, none),
		"layernorm_bwd: argument scratch has no device")
	require.ErrorContains(t, kernels.LayerNormBackward(0, x, g, none, rstd, dy, dx, dg, db, scratch),
		"layernorm_bwd: argument mean is missing")
	require.ErrorContains(t, kernels.LayerNormBackward(0, x, g, mean, rstd, dy, dx, kt.Alloc(t, d, runtime.F16, []int{8}), db, scratch),
		"layernorm_bwd: argument dGamma has dtype F16")
	xb, gb := kt.Alloc(t, d, runtime.BF16, []int{4, 8}), kt.Alloc(t, d, runtime.BF16, []int{8})
	dyb, dxb := kt.Alloc(t, d, runtime.BF16, []int{4, 8}), kt.Alloc(t, d, runtime.BF16, []int{4, 8})
	require.ErrorContains(t, kernels.LayerNormBackward(0, xb, gb, mean, rstd, dyb, dxb, kt.Alloc(t, d, runtime.BF16, []int{8}), db, scratch),
		"layernorm_bwd: argument dBeta has dtype F32 but dGamma has BF16")
	require.ErrorContains(t, kernels.LayerNormBackward(0, x, g, mean, rstd, dy, dx, f32(9), db, scratch),
		"layernorm_bwd: argument dGamma has shape [9], want [8]")
	require.ErrorContains(t, kernels.RMSNormBackward(0, x, g, rstd, f32(4, 7), dx, dg, scratch),
		"rmsnorm_bwd: argument dy has shape [4 7]")
	require.ErrorContains(t, kernels.RMSNormBackward(0, x, g, rstd, dy, dx, dg, f32(7)),
		"rmsnorm_bwd: argument scratch has 7 elements, want at least 8")
}
