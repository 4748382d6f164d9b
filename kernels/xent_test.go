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

// xentShape is one test shape: rows, hidden size, vocabulary, chunk (0 =
// default), whether there are per-token weights, and the scale of h.
type xentShape struct {
	n, d, v, chunk int
	weights        bool
	hScale         float64
}

// xentShapes are ragged: V not a multiple of 64, several chunks with a short
// last one, one row, odd d (no 16-byte loads).
var xentShapes = []xentShape{
	{37, 24, 61, 0, true, 1},
	{70, 33, 257, 64, false, 2},
	{1, 16, 1000, 128, true, 1},
	{65, 16, 5003, 0, true, 1},
	{130, 40, 1000, 320, true, 3},
}

// xentData holds one problem's inputs, already rounded to the storage type,
// and its device arrays.
type xentData struct {
	dt         runtime.DType
	s          xentShape
	h, e, w    []float64
	labels     []int32
	norm       float64
	x          kernels.Xent
	scratch    kernels.Array
	z          [][]float64 // float64 logits
	absDot     []float64   // L_i = max_v Σ_k |h_ik·E_vk|
	refCE      []float64
	refLSE     []float64
	refLoss    float64
	ceScale    []float64
	lossScale  float64
	dev        runtime.Device
	labelsHost []float64
}

func newXentData(t *testing.T, rng *rand.Rand, dt runtime.DType, s xentShape) *xentData {
	dev := kt.Device(t)
	x := &xentData{dt: dt, s: s, dev: dev}
	x.h = kt.Rand(rng, dt, s.n*s.d, s.hScale)
	x.e = kt.Rand(rng, dt, s.v*s.d, 1)
	x.labels = make([]int32, s.n)
	x.labelsHost = make([]float64, s.n)
	targets := 0
	for i := range x.labels {
		switch {
		case rng.IntN(5) == 0:
			x.labels[i] = nn.IgnoreIndex
		case i%7 == 3:
			x.labels[i] = int32(s.v - 1) // the last vocabulary row
		default:
			x.labels[i] = int32(rng.IntN(s.v))
		}
		if x.labels[i] != nn.IgnoreIndex {
			targets++
		}
		x.labelsHost[i] = float64(x.labels[i])
	}
	x.norm = float64(max(targets, 1)) + 0.5
	x.x = kernels.Xent{
		H:      kt.Upload(t, dev, dt, []int{s.n, s.d}, x.h),
		Emb:    kt.Upload(t, dev, dt, []int{s.v, s.d}, x.e),
		Labels: kt.Upload(t, dev, runtime.I32, []int{s.n}, x.labelsHost),
		Norm:   x.norm,
		Chunk:  s.chunk,
	}
	if s.weights {
		x.w = make([]float64, s.n)
		for i := range x.w {
			x.w[i] = runtime.Round(runtime.F32, 2*rng.Float64())
		}
		x.w[0] = 0
		x.x.Weights = kt.Upload(t, dev, runtime.F32, []int{s.n}, x.w)
	}
	x.scratch = kt.Alloc(t, dev, runtime.F32, []int{kernels.XentScratchElems(dt, s.n, s.v, s.d, s.chunk)})

	// The float64 reference (nn/cpu) and the error scales.
	c := x.nnXent(t)
	ce, lse := xentTensor(t, make([]float64, s.n), s.n), xentTensor(t, make([]float64, s.n), s.n)
	loss, err := cpu.New().CrossEntropyForward(c, xentTensor(t, x.h, s.n, s.d), xentTensor(t, x.e, s.v, s.d), ce, lse)
	require.NoError(t, err)
	x.refCE, x.refLSE, x.refLoss = xentValues(t, ce), xentValues(t, lse), loss
	x.z = make([][]float64, s.n)
	x.absDot = make([]float64, s.n)
	x.ceScale = make([]float64, s.n)
	for i := range s.n {
		x.z[i] = make([]float64, s.v)
		for v := range s.v {
			dot, abs := 0.0, 0.0
			for k := range s.d {
				p := x.h[i*s.d+k] * x.e[v*s.d+k]
				dot += p
				abs += math.Abs(p)
			}
			x.z[i][v] = dot
			x.absDot[i] = math.Max(x.absDot[i], abs)
		}
		// ce = lse − z_y: rounding of lse, of the label's logit and of every
		// logit that enters lse.
		x.ceScale[i] = math.Abs(x.refLSE[i]) + x.absDot[i]
		if y := x.labels[i]; y != nn.IgnoreIndex {
			x.ceScale[i] += math.Abs(x.z[i][y])
			x.lossScale += x.weight(i) * x.ceScale[i] / x.norm
		}
	}
	return x
}

func (x *xentData) weight(i int) float64 {
	if x.w == nil {
		return 1
	}
	return x.w[i]
}

func (x *xentData) nnXent(t *testing.T) nn.CrossEntropy {
	c := nn.CrossEntropy{Labels: x.labels, Norm: x.norm, Chunk: x.s.chunk}
	if x.w != nil {
		c.Weights = xentTensor(t, x.w, x.s.n)
	}
	return c
}

func xentTensor(t *testing.T, vals []float64, shape ...int) *nn.Tensor {
	tt, err := nn.FromF64(append([]float64(nil), vals...), shape...)
	require.NoError(t, err)
	return tt
}

func xentValues(t *testing.T, x *nn.Tensor) []float64 {
	v, err := x.F64()
	require.NoError(t, err)
	return v
}

// forward runs XentForward into fresh poisoned outputs.
func (x *xentData) forward(t *testing.T) (ce, lse, loss kernels.Array) {
	ce = kt.Poisoned(t, x.dev, runtime.F32, []int{x.s.n})
	lse = kt.Poisoned(t, x.dev, runtime.F32, []int{x.s.n})
	loss = kt.Poisoned(t, x.dev, runtime.F32, []int{1})
	require.NoError(t, kernels.XentForward(0, x.x, ce, lse, loss, x.scratch))
	return ce, lse, loss
}

func xentSfx(dt runtime.DType) string {
	return map[runtime.DType]string{runtime.F32: "f32", runtime.BF16: "bf16", runtime.F16: "f16"}[dt]
}

func xentDTypes(i int) []runtime.DType {
	if i == 0 || i == 3 {
		return []runtime.DType{runtime.F32, runtime.BF16, runtime.F16}
	}
	return []runtime.DType{runtime.F32, runtime.BF16}
}

func TestGoldenXentForward(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	for si, s := range xentShapes {
		for _, dt := range xentDTypes(si) {
			t.Run(fmt.Sprintf("%s/n%d_d%d_v%d_c%d", dt, s.n, s.d, s.v, s.chunk), func(t *testing.T) {
				x := newXentData(t, rng, dt, s)
				ce, lse, loss := x.forward(t)
				// Outputs are f32 and 16-bit products are exact in f32, so
				// every storage type meets the f32 tolerance.
				kt.CheckScaled(t, "xent_fwd_"+xentSfx(dt), 1e-5, kt.Download(t, lse), x.refLSE, x.ceScale, "lse")
				kt.CheckScaled(t, "xent_combine", 1e-5, kt.Download(t, ce), x.refCE, x.ceScale, "ce")
				got, err := kernels.XentLossValue(loss)
				require.NoError(t, err)
				kt.CheckScaled(t, "xent_loss", 1e-5, []float64{got}, []float64{x.refLoss}, []float64{x.lossScale}, "loss")
			})
		}
	}
}

func TestGoldenXentBackward(t *testing.T) {
	rng := rand.New(rand.NewPCG(73, 74))
	const dLoss = 1.75
	for si, s := range xentShapes {
		for _, dt := range xentDTypes(si) {
			t.Run(fmt.Sprintf("%s/n%d_d%d_v%d_c%d", dt, s.n, s.d, s.v, s.chunk), func(t *testing.T) {
				x := newXentData(t, rng, dt, s)
				ce, lse, _ := x.forward(t)
				dE0 := kt.Rand(rng, dt, s.v*s.d, 0.01)
				dEmb := kt.Upload(t, x.dev, dt, []int{s.v, s.d}, dE0)
				dh := kt.Poisoned(t, x.dev, dt, []int{s.n, s.d})
				dw := kt.Poisoned(t, x.dev, runtime.F32, []int{s.n})
				require.NoError(t, kernels.XentBackward(0, x.x, ce, lse, dLoss, dh, dEmb, dw, x.scratch))

				wantDh := xentTensor(t, make([]float64, s.n*s.d), s.n, s.d)
				wantDE := xentTensor(t, dE0, s.v, s.d)
				wantDw := xentTensor(t, make([]float64, s.n), s.n)
				require.NoError(t, cpu.New().CrossEntropyBackward(x.nnXent(t), xentTensor(t, x.h, s.n, s.d), xentTensor(t, x.e, s.v, s.d),
					xentTensor(t, x.refCE, s.n), xentTensor(t, x.refLSE, s.n), dLoss, wantDh, wantDE, wantDw))

				dhScale, dEScale := x.gradScales(dLoss, dE0)
				tol := kt.Tolerance(dt)
				gotDh := kt.Download(t, dh)
				kt.CheckScaled(t, "xent_grad_"+xentSfx(dt), tol, gotDh, xentValues(t, wantDh), dhScale, "dh")
				kt.CheckScaled(t, "xent_dh_"+xentSfx(dt), tol, gotDh, xentValues(t, wantDh), dhScale, "dh")
				kt.CheckScaled(t, "xent_demb_"+xentSfx(dt), tol, kt.Download(t, dEmb), xentValues(t, wantDE), dEScale, "dEmb")
				dwScale := make([]float64, s.n)
				for i := range dwScale {
					dwScale[i] = math.Abs(dLoss/x.norm) * x.ceScale[i]
				}
				kt.CheckScaled(t, "xent_dw", 1e-5, kt.Download(t, dw), xentValues(t, wantDw), dwScale, "dw")
			})
		}
	}
}

// gradScales bounds the rounding error of dh and dEmb element by element.
// Each G_iv = coef_i·(p_iv − [v = y_i]) carries the error of its exponent
// z_iv − lse_i (absolute, of order L_i + |lse_i|) as a relative error of p_iv,
// plus its own rounding; dh and dEmb sum such terms times |E| or |h|. G is
// stored as w_i·(p_iv − [v = y_i]) in the storage type, where values below
// f16's smallest normal number (6.1e-5) keep only an absolute precision of
// 2^-25: that floor enters each term's scale for f16.
func (x *xentData) gradScales(dLoss float64, dE0 []float64) (dh, dE []float64) {
	s := x.s
	dh = make([]float64, s.n*s.d)
	dE = make([]float64, s.v*s.d)
	for i, v := range dE0 {
		dE[i] = math.Abs(v)
	}
	floor := 0.0
	if x.dt == runtime.F16 {
		floor = math.Ldexp(1, -14)
	}
	for i := range s.n {
		y := x.labels[i]
		if y == nn.IgnoreIndex || x.weight(i) == 0 {
			continue
		}
		alpha, w := math.Abs(dLoss/x.norm), math.Abs(x.weight(i))
		amp := 1 + x.absDot[i] + math.Abs(x.refLSE[i])
		for v := range s.v {
			p := math.Exp(x.z[i][v] - x.refLSE[i])
			g := p * amp
			if int32(v) == y {
				g += 1 - p
			} else {
				g += p
			}
			g = alpha * (w*g + floor)
			for k := range s.d {
				dh[i*s.d+k] += g * math.Abs(x.e[v*s.d+k])
				dE[v*s.d+k] += g * math.Abs(x.h[i*s.d+k])
			}
		}
	}
	return dh, dE
}

func TestXentDeterministic(t *testing.T) {
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		rng := rand.New(rand.NewPCG(75, 76))
		x := newXentData(t, rng, dt, xentShape{70, 24, 1000, 192, true, 2})
		var first [][]float64
		for run := range 2 {
			ce, lse, loss := x.forward(t)
			dEmb := kt.Upload(t, x.dev, dt, []int{x.s.v, x.s.d}, make([]float64, x.s.v*x.s.d))
			dh := kt.Poisoned(t, x.dev, dt, []int{x.s.n, x.s.d})
			dw := kt.Poisoned(t, x.dev, runtime.F32, []int{x.s.n})
			require.NoError(t, kernels.XentBackward(0, x.x, ce, lse, 1, dh, dEmb, dw, x.scratch))
			got := [][]float64{kt.Download(t, ce), kt.Download(t, lse), kt.Download(t, loss), kt.Download(t, dh), kt.Download(t, dEmb), kt.Download(t, dw)}
			if run == 0 {
				first = got
				continue
			}
			for j := range got {
				for e := range got[j] {
					require.Equal(t, math.Float64bits(first[j][e]), math.Float64bits(got[j][e]), "%s output %d element %d differs between runs", dt, j, e)
				}
			}
		}
	}
}

func TestXentBadInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(77, 78))
	x := newXentData(t, rng, runtime.F32, xentShape{9, 8, 61, 0, true, 1})
	dev, n := x.dev, x.s.n
	ce := kt.Poisoned(t, dev, runtime.F32, []int{n})
	lse := kt.Poisoned(t, dev, runtime.F32, []int{n})
	loss := kt.Poisoned(t, dev, runtime.F32, []int{1})

	// Labels outside [0,V) that are not −100: an error naming the count, and
	// nothing written.
	bad := x.x
	labels := append([]float64(nil), x.labelsHost...)
	labels[2], labels[5], labels[7] = 61, -1, float64(nn.IgnoreIndex)
	bad.Labels = kt.Upload(t, dev, runtime.I32, []int{n}, labels)
	require.ErrorContains(t, kernels.XentForward(0, bad, ce, lse, loss, x.scratch), "xent_fwd: argument Labels has 2 labels outside [0,61)")
	for _, v := range append(kt.Download(t, ce), kt.Download(t, loss)...) {
		require.True(t, math.IsNaN(v), "output written despite bad labels")
	}
	require.ErrorContains(t, kernels.XentBackward(0, bad, ce, lse, 1, kt.Alloc(t, dev, runtime.F32, []int{n, 8}), kernels.Array{}, kernels.Array{}, x.scratch),
		"xent_bwd: argument Labels has 2 labels outside [0,61)")
	kt.Record("xent_check_labels", 0, 0)

	mod := func(f func(*kernels.Xent)) kernels.Xent { c := x.x; f(&c); return c }
	cases := []struct {
		x    kernels.Xent
		want string
	}{
		{mod(func(c *kernels.Xent) { c.Emb = kt.Alloc(t, dev, runtime.F32, []int{61, 9}) }), "xent_fwd: argument Emb has shape [61 9], want [V,8]"},
		{mod(func(c *kernels.Xent) { c.Emb = kt.Alloc(t, dev, runtime.BF16, []int{61, 8}) }), "xent_fwd: argument Emb has dtype BF16"},
		{mod(func(c *kernels.Xent) { c.H = kt.Alloc(t, dev, runtime.F64, []int{n, 8}) }), "xent_fwd: argument H has dtype F64"},
		{mod(func(c *kernels.Xent) { c.Labels = kt.Alloc(t, dev, runtime.F32, []int{n}) }), "xent_fwd: argument Labels has dtype F32"},
		{mod(func(c *kernels.Xent) { c.Labels = kt.Alloc(t, dev, runtime.I32, []int{n + 1}) }), "xent_fwd: argument Labels has 10 elements, want 9"},
		{mod(func(c *kernels.Xent) { c.Weights = kt.Alloc(t, dev, runtime.F32, []int{3}) }), "xent_fwd: argument Weights has 3 elements, want 9"},
		{mod(func(c *kernels.Xent) { c.Norm = 0 }), "xent_fwd: norm 0 must be finite and positive"},
		{mod(func(c *kernels.Xent) { c.Chunk = -1 }), "xent_fwd: chunk -1 is negative"},
	}
	for _, c := range cases {
		require.ErrorContains(t, kernels.XentForward(0, c.x, ce, lse, loss, x.scratch), c.want)
	}
	require.ErrorContains(t, kernels.XentForward(0, x.x, ce, lse, loss, kt.Alloc(t, dev, runtime.F32, []int{10})), "xent_fwd: argument scratch has 10 elements")
	require.ErrorContains(t, kernels.XentForward(0, x.x, kt.Alloc(t, dev, runtime.F32, []int{n + 1}), lse, loss, x.scratch), "xent_fwd: argument ce has 10 elements, want 9")
	require.ErrorContains(t, kernels.XentForward(0, x.x, ce, lse, kt.Alloc(t, dev, runtime.BF16, []int{1}), x.scratch), "xent_fwd: argument loss has dtype BF16")
	require.ErrorContains(t, kernels.XentBackward(0, x.x, kernels.Array{}, lse, 1, kernels.Array{}, kernels.Array{}, kt.Alloc(t, dev, runtime.F32, []int{n}), x.scratch), "xent_bwd: argument dw needs ce")
	require.ErrorContains(t, kernels.XentBackward(0, x.x, ce, lse, 1, kt.Alloc(t, dev, runtime.F32, []int{n, 7}), kernels.Array{}, kernels.Array{}, x.scratch), "xent_bwd: argument dh has shape [9 7], want [9,8]")
	require.ErrorContains(t, kernels.XentBackward(0, x.x, ce, lse, 1, kernels.Array{}, kt.Alloc(t, dev, runtime.BF16, []int{61, 8}), kernels.Array{}, x.scratch), "xent_bwd: argument dEmb has dtype BF16")
	require.ErrorContains(t, kernels.XentBackward(0, x.x, ce, lse, math.NaN(), kernels.Array{}, kernels.Array{}, kernels.Array{}, x.scratch), "xent_bwd: dLoss NaN is not finite")
}

// TestXentOptionalOutputs runs the forward without lse and the backward with
// one output at a time; each must match the run that computes everything.
func TestXentOptionalOutputs(t *testing.T) {
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		rng := rand.New(rand.NewPCG(79, 80))
		x := newXentData(t, rng, dt, xentShape{20, 16, 200, 64, false, 1})
		s := x.s
		ce, lse, _ := x.forward(t)
		ce2 := kt.Poisoned(t, x.dev, runtime.F32, []int{s.n})
		loss2 := kt.Poisoned(t, x.dev, runtime.F32, []int{1})
		require.NoError(t, kernels.XentForward(0, x.x, ce2, kernels.Array{}, loss2, x.scratch))
		require.Equal(t, kt.Download(t, ce), kt.Download(t, ce2))

		zeros := make([]float64, s.v*s.d)
		dh := kt.Poisoned(t, x.dev, dt, []int{s.n, s.d})
		dEmb := kt.Upload(t, x.dev, dt, []int{s.v, s.d}, zeros)
		dw := kt.Poisoned(t, x.dev, runtime.F32, []int{s.n})
		require.NoError(t, kernels.XentBackward(0, x.x, ce, lse, 0.5, dh, dEmb, dw, x.scratch))

		dhOnly := kt.Poisoned(t, x.dev, dt, []int{s.n, s.d})
		require.NoError(t, kernels.XentBackward(0, x.x, kernels.Array{}, lse, 0.5, dhOnly, kernels.Array{}, kernels.Array{}, x.scratch))
		require.Equal(t, kt.Download(t, dh), kt.Download(t, dhOnly), "dh alone")
		dEmbOnly := kt.Upload(t, x.dev, dt, []int{s.v, s.d}, zeros)
		require.NoError(t, kernels.XentBackward(0, x.x, kernels.Array{}, lse, 0.5, kernels.Array{}, dEmbOnly, kernels.Array{}, x.scratch))
		require.Equal(t, kt.Download(t, dEmb), kt.Download(t, dEmbOnly), "dEmb alone")
		dwOnly := kt.Poisoned(t, x.dev, runtime.F32, []int{s.n})
		require.NoError(t, kernels.XentBackward(0, x.x, ce, lse, 0.5, kernels.Array{}, kernels.Array{}, dwOnly, x.scratch))
		require.Equal(t, kt.Download(t, dw), kt.Download(t, dwOnly), "dw alone")
	}
}

// TestXentEmpty: no rows gives a zero loss and an empty backward.
func TestXentEmpty(t *testing.T) {
	dev := kt.Device(t)
	x := kernels.Xent{
		H:      kt.Alloc(t, dev, runtime.BF16, []int{0, 8}),
		Emb:    kt.Upload(t, dev, runtime.BF16, []int{61, 8}, make([]float64, 61*8)),
		Labels: kt.Alloc(t, dev, runtime.I32, []int{0}),
		Norm:   1,
	}
	scratch := kt.Alloc(t, dev, runtime.F32, []int{kernels.XentScratchElems(runtime.BF16, 0, 61, 8, 0)})
	empty := kt.Alloc(t, dev, runtime.F32, []int{0})
	loss := kt.Poisoned(t, dev, runtime.F32, []int{1})
	require.NoError(t, kernels.XentForward(0, x, empty, empty, loss, scratch))
	got, err := kernels.XentLossValue(loss)
	require.NoError(t, err)
	require.Equal(t, 0.0, got)
	dEmb := kt.Upload(t, dev, runtime.BF16, []int{61, 8}, make([]float64, 61*8))
	require.NoError(t, kernels.XentBackward(0, x, empty, empty, 1, kt.Alloc(t, dev, runtime.BF16, []int{0, 8}), dEmb, empty, scratch))
	require.Equal(t, make([]float64, 61*8), kt.Download(t, dEmb))
}
