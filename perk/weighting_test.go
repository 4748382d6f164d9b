package perk

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

func TestWeightingInitAndGradient(t *testing.T) {
	w, err := NewWeighting(6, 5, 3, 1)
	require.NoError(t, err)
	rng := newRNG(1)
	h := make([]float64, 4*6)
	for i := range h {
		h[i] = rng.NormFloat64()
	}
	ws, err := w.Weights(h, 4)
	require.NoError(t, err)
	for _, v := range ws {
		assert.InDelta(t, math.Log(2)/3, v, 1e-15, "a zero output layer gives log 2/β")
	}

	// Backward against central differences of Σ c_i·w_i.
	for i := range w.FC2W {
		w.FC2W[i] = rng.NormFloat64()
	}
	w.FC2B[0] = 0.3
	c := []float64{0.5, -1, 2, 0.25}
	obj := func() float64 {
		ws, err := w.Weights(h, 4)
		require.NoError(t, err)
		s := 0.0
		for i := range ws {
			s += c[i] * ws[i]
		}
		return s
	}
	cache, err := w.forward(h, 4)
	require.NoError(t, err)
	g := w.ZerosLike()
	w.backward(cache, c, g)
	gt := g.Tensors()
	for k, ts := range w.Tensors() {
		for i := range ts.Data {
			x := ts.Data[i]
			ts.Data[i] = x + 1e-6
			up := obj()
			ts.Data[i] = x - 1e-6
			dn := obj()
			ts.Data[i] = x
			assert.InDelta(t, (up-dn)/2e-6, gt[k].Data[i], 1e-8, "%s[%d]", ts.Name, i)
		}
	}
	assert.Equal(t, 3*softplus(1, 3), math.Log1p(math.Exp(3)))
	assert.InDelta(t, 100, softplus(100, 3), 1e-12) // no overflow
	assert.InDelta(t, 0, softplus(-100, 3), 1e-100)

	_, err = NewWeighting(0, 5, 3, 1)
	require.Error(t, err)
	_, err = NewWeighting(4, 5, 0, 1)
	require.Error(t, err)
	_, err = w.Weights(h[:5], 4)
	require.Error(t, err)
}

// TestEngineErrors checks that malformed parameters and examples are
// errors, not panics.
func TestEngineErrors(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(3), m.Config().Vocab, []int{7, 9}, []int{2, 3}, 10, 6)
	p := tinyParams(t, m, 3, OptSGD, true, 1)
	e := tinyEngine(m, OptSGD, 2, 0)
	_, err := e.MetaGradient(p, ex, 0)
	require.ErrorContains(t, err, "has 3 steps, want 2")
	e.Inner.Steps = 3

	bad := *ex
	bad.Prefix = []int{2, 9}
	_, err = e.MetaGradient(p, &bad, 0)
	require.ErrorContains(t, err, "segment 1 has 9 tokens and prefix length 9")
	bad = *ex
	bad.PromptLen = 10
	_, err = e.MetaGradient(p, &bad, 0)
	require.ErrorContains(t, err, "prompt length 10")
	bad = *ex
	bad.Segments.CuSeqlens = []int32{0, 20, 16}
	_, err = e.MetaGradient(p, &bad, 0)
	require.ErrorContains(t, err, "segments")
	bad = *ex
	bad.Outer.IDs = append([]int32{99}, ex.Outer.IDs[1:]...)
	_, err = e.MetaGradient(p, &bad, 0)
	require.ErrorContains(t, err, "outside the vocabulary")
	long := tinyExample(newRNG(3), m.Config().Vocab, []int{40}, []int{2}, 10, 6)
	_, err = e.MetaGradient(p, long, 0)
	require.ErrorContains(t, err, "more than the model's 32 positions")

	w := p.Weighting
	p.Weighting = &Weighting{In: 7, Hidden: 2, Beta: 3}
	_, err = e.MetaGradient(p, ex, 0)
	require.ErrorContains(t, err, "input width 7")
	p.Weighting = w
	p.LRs.Values[0][1] = math.NaN()
	_, err = e.MetaGradient(p, ex, 0)
	require.ErrorContains(t, err, "is not finite")
	p.LRs.Values[0][1] = 0.01

	for _, c := range []struct {
		mod  func(*InnerConfig)
		want string
	}{
		{func(c *InnerConfig) { c.Optimizer = "lion" }, "unknown optimiser"},
		{func(c *InnerConfig) { c.Optimizer, c.Beta1 = OptAdamW, 1 }, "betas"},
		{func(c *InnerConfig) { c.WeightDecay = math.Inf(1) }, "weight decay"},
		{func(c *InnerConfig) { c.UnrollStart = -1 }, "unroll start"},
		{func(c *InnerConfig) { c.Steps = 0 }, "0 steps"},
	} {
		e2 := *e
		c.mod(&e2.Inner)
		_, err := e2.MetaGradient(p, ex, 0)
		require.ErrorContains(t, err, c.want)
	}
	e.SecondOrder = FiniteDifference{Points: 3}
	_, err = e.MetaGradient(p, ex, 0)
	require.ErrorContains(t, err, "stencil of 3 points")
	_, err = ParseSecondOrder("exact", 0)
	require.ErrorContains(t, err, "not implemented yet")
}

// TestFloat32MetaGradient runs the engine in float32 and compares with the
// float64 meta-gradient of the same model and parameters.
func TestFloat32MetaGradient(t *testing.T) {
	m64, m32 := tinyModel(t, runtime.F64), tinyModel(t, runtime.F32)
	ex := tinyExample(newRNG(3), m64.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	for _, opt := range []string{OptAdamW, OptSGD} {
		ref, err := tinyEngine(m64, opt, 3, 0).MetaGradient(tinyParams(t, m64, 3, opt, true, 11), ex, 1)
		require.NoError(t, err)
		g, err := tinyEngine(m32, opt, 3, 0).MetaGradient(tinyParams(t, m32, 3, opt, true, 11), ex, 1)
		require.NoError(t, err)
		ri, rl, rw := flatGrad(t, ref)
		gi, gl, gw := flatGrad(t, g)
		ei, el, ew := relErr(gi, ri), relErr(gl, rl), relErr(gw, rw)
		t.Logf("%s float32 vs float64: init %.1e, lr %.1e, weighting %.1e", opt, ei, el, ew)
		for _, e := range []float64{ei, el, ew} {
			assert.Less(t, e, 1e-2)
		}
		assert.InDelta(t, ref.OuterLoss, g.OuterLoss, 1e-5)
	}
}

// TestAdaptMatchesForwardSweep checks that test-time adaptation gives the
// φ_T whose outer loss the meta-gradient reports.
func TestAdaptMatchesForwardSweep(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(3), m.Config().Vocab, []int{7, 9}, []int{2, 3}, 10, 6)
	p := tinyParams(t, m, 2, OptAdamW, true, 4)
	e := tinyEngine(m, OptAdamW, 2, 0)
	phi, losses, err := e.Adapt(p, ex, 0)
	require.NoError(t, err)
	g, err := e.MetaGradient(p, ex, 0)
	require.NoError(t, err)
	assert.Equal(t, g.InnerLosses, losses)
	obj, err := e.Objective(p, ex, 0)
	require.NoError(t, err)
	assert.Equal(t, g.OuterLoss, obj)
	// The adapted LoRA differs from the initialisation.
	moved := false
	for i, x := range phi.Params().Tensors() {
		a, b := hostValues(t, x), hostValues(t, p.Init.Params().Tensors()[i])
		for k := range a {
			moved = moved || a[k] != b[k]
		}
	}
	assert.True(t, moved)
	assert.Equal(t, p.Init.Config(), phi.Config())
}
