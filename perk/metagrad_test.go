package perk

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

// direction is a perturbation of one group of meta-parameters.
type direction struct {
	init *model.Adapter
	lrs  *LearnedLRs
	w    *Weighting
}

func randomDirection(t *testing.T, p *Params, group string, rng *rand.Rand) direction {
	t.Helper()
	var d direction
	switch group {
	case "init":
		a, err := p.Init.ZerosLike()
		require.NoError(t, err)
		for _, prm := range a.Params().Params() {
			fillNormal(t, prm.Value, rng, 1)
		}
		scaleAdapter(t, a)
		d.init = a
	case "lr":
		d.lrs = p.LRs.ZerosLike()
		for i := range d.lrs.Values {
			for s := range d.lrs.Values[i] {
				d.lrs.Values[i][s] = rng.NormFloat64() * p.LRs.Values[i][s]
			}
		}
		normalize(d.lrs.Tensors())
	case "weighting":
		d.w = p.Weighting.ZerosLike()
		for _, ts := range d.w.Tensors() {
			for i := range ts.Data {
				ts.Data[i] = rng.NormFloat64()
			}
		}
		normalize(d.w.Tensors())
	}
	return d
}

// scaleAdapter scales a to unit norm.
func scaleAdapter(t *testing.T, a *model.Adapter) {
	t.Helper()
	n := 0.0
	for _, x := range a.Params().Tensors() {
		for _, v := range hostValues(t, x) {
			n += v * v
		}
	}
	for _, x := range a.Params().Tensors() {
		v := hostValues(t, x)
		for i := range v {
			v[i] /= math.Sqrt(n)
		}
	}
}

// normalize scales the tensors to unit joint norm.
func normalize(ts []NamedSlice) {
	n := 0.0
	for _, x := range ts {
		for _, v := range x.Data {
			n += v * v
		}
	}
	for _, x := range ts {
		for i := range x.Data {
			x.Data[i] /= math.Sqrt(n)
		}
	}
}

// along returns p + h·d.
func along(t *testing.T, p *Params, d direction, h float64) *Params {
	t.Helper()
	q, err := p.Clone()
	require.NoError(t, err)
	if d.init != nil {
		dst, src := q.Init.Params().Tensors(), d.init.Params().Tensors()
		for i := range dst {
			x, y := hostValues(t, src[i]), hostValues(t, dst[i])
			for k := range y {
				y[k] += h * x[k]
			}
		}
	}
	if d.lrs != nil {
		for i := range q.LRs.Values {
			for s := range q.LRs.Values[i] {
				q.LRs.Values[i][s] += h * d.lrs.Values[i][s]
			}
		}
	}
	if d.w != nil {
		qs, ds := q.Weighting.Tensors(), d.w.Tensors()
		for i := range qs {
			for k := range qs[i].Data {
				qs[i].Data[k] += h * ds[i].Data[k]
			}
		}
	}
	return q
}

// dot returns ⟨g, d⟩.
func dot(t *testing.T, g *MetaGrad, d direction) float64 {
	t.Helper()
	s := 0.0
	if d.init != nil {
		gs, ds := g.Init.Params().Tensors(), d.init.Params().Tensors()
		for i := range gs {
			x, y := hostValues(t, gs[i]), hostValues(t, ds[i])
			for k := range x {
				s += x[k] * y[k]
			}
		}
	}
	if d.lrs != nil {
		for i := range d.lrs.Values {
			for k := range d.lrs.Values[i] {
				s += g.LRs.Values[i][k] * d.lrs.Values[i][k]
			}
		}
	}
	if d.w != nil {
		gs, ds := g.Weighting.Tensors(), d.w.Tensors()
		for i := range gs {
			for k := range gs[i].Data {
				s += gs[i].Data[k] * ds[i].Data[k]
			}
		}
	}
	return s
}

// fdDirectional is the fourth-order central difference of the whole
// unrolled objective along d.
func fdDirectional(t *testing.T, e *Engine, p *Params, ex *Example, d direction, h float64) float64 {
	t.Helper()
	J := func(s float64) float64 {
		v, err := e.Objective(along(t, p, d, s), ex, 1)
		require.NoError(t, err)
		return v
	}
	return (8*(J(h)-J(-h)) - (J(2*h) - J(-2*h))) / (12 * h)
}

func tinyEngine(m *model.Model, opt string, steps, unroll int) *Engine {
	c := DefaultInnerConfig()
	c.Optimizer, c.Steps, c.UnrollStart = opt, steps, unroll
	c.Eps = 1e-3
	return &Engine{Model: m, Inner: c}
}

// TestMetaGradientFiniteDifferences checks the fully unrolled fd-mode
// meta-gradient against central differences of the whole unrolled
// objective, along random directions in each group of meta-parameters.
func TestMetaGradientFiniteDifferences(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(3), m.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	worst := 0.0
	for _, opt := range []string{OptAdamW, OptSGD} {
		for _, weighting := range []bool{false, true} {
			name := fmt.Sprintf("%s/weighting=%v", opt, weighting)
			t.Run(name, func(t *testing.T) {
				start := time.Now()
				e := tinyEngine(m, opt, 3, 0)
				p := tinyParams(t, m, 3, opt, weighting, 11)
				g, err := e.MetaGradient(p, ex, 1)
				require.NoError(t, err)
				groups := []string{"init", "lr"}
				if weighting {
					groups = append(groups, "weighting")
				}
				rng := newRNG(17)
				for _, grp := range groups {
					for k := 0; k < 2; k++ {
						d := randomDirection(t, p, grp, rng)
						an := dot(t, g, d)
						fd := fdDirectional(t, e, p, ex, d, 1e-5)
						rel := math.Abs(an-fd) / math.Max(math.Abs(fd), 1e-12)
						worst = max(worst, rel)
						t.Logf("%s dir %d: analytic %.12e fd %.12e rel %.2e", grp, k, an, fd, rel)
						assert.LessOrEqual(t, rel, 1e-6, "%s direction %d", grp, k)
					}
				}
				t.Logf("%s: %v", name, time.Since(start))
			})
		}
	}
	t.Logf("worst relative error vs finite differences of the unrolled objective: %.2e", worst)
}

// TestMetaGradientQwen2 repeats the finite-difference check once on a tiny
// Qwen2 (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied head).
func TestMetaGradientQwen2(t *testing.T) {
	cfg := model.Config{ModelType: model.Qwen2, Hidden: 16, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 24,
		Vocab: 40, MaxPositions: 64, NormEps: 1e-6, RopeTheta: 10000, Activation: "silu"}
	m, err := model.NewRandom(cfg, cpu.New(), runtime.F64, model.RandomOptions{Seed: 8, Std: 0.2})
	require.NoError(t, err)
	ex := tinyExample(newRNG(6), cfg.Vocab, []int{7, 9}, []int{2, 3}, 10, 6)
	p, err := NewParams(m, ParamsConfig{
		LoRA:  model.LoRAConfig{R: 2, Alpha: 4, TargetModules: model.DefaultTargets(model.Qwen2), UseRSLoRA: true},
		Steps: 2, LR: 0.01, Weighting: true, WeightingHidden: 8, Seed: 2,
	})
	require.NoError(t, err)
	rng := newRNG(21)
	for _, prm := range p.Init.Params().Params() {
		fillNormal(t, prm.Value, rng, 0.3)
	}
	for i := range p.Weighting.FC2W {
		p.Weighting.FC2W[i] = rng.NormFloat64() * 0.5
	}
	e := tinyEngine(m, OptAdamW, 2, 0)
	g, err := e.MetaGradient(p, ex, 1)
	require.NoError(t, err)
	for _, grp := range []string{"init", "lr", "weighting"} {
		d := randomDirection(t, p, grp, rng)
		an, fd := dot(t, g, d), fdDirectional(t, e, p, ex, d, 1e-5)
		rel := math.Abs(an-fd) / math.Max(math.Abs(fd), 1e-12)
		t.Logf("%s: analytic %.12e fd %.12e rel %.2e", grp, an, fd, rel)
		assert.LessOrEqual(t, rel, 1e-6, grp)
	}
}

// flatGrad concatenates a meta-gradient's groups.
func flatGrad(t *testing.T, g *MetaGrad) (init, lrs, w []float64) {
	t.Helper()
	for _, x := range g.Init.Params().Tensors() {
		init = append(init, hostValues(t, x)...)
	}
	for _, v := range g.LRs.Values {
		lrs = append(lrs, v...)
	}
	if g.Weighting != nil {
		for _, ts := range g.Weighting.Tensors() {
			w = append(w, ts.Data...)
		}
	}
	return init, lrs, w
}

// TestTruncationModes checks that first-order and truncated meta-gradients
// differ from the fully unrolled one (and from each other), while the outer
// and inner losses, which do not depend on the mode, agree exactly.
func TestTruncationModes(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(3), m.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	for _, opt := range []string{OptAdamW, OptSGD} {
		t.Run(opt, func(t *testing.T) {
			p := tinyParams(t, m, 3, opt, true, 11)
			full, err := tinyEngine(m, opt, 3, 0).MetaGradient(p, ex, 1)
			require.NoError(t, err)
			trunc, err := tinyEngine(m, opt, 3, 2).MetaGradient(p, ex, 1)
			require.NoError(t, err)
			fo := tinyEngine(m, opt, 3, 0)
			fo.SecondOrder = FirstOrder{}
			first, err := fo.MetaGradient(p, ex, 1)
			require.NoError(t, err)
			beyond, err := tinyEngine(m, opt, 3, 3).MetaGradient(p, ex, 1)
			require.NoError(t, err)

			fi, fl, fw := flatGrad(t, full)
			ti, tl, tw := flatGrad(t, trunc)
			oi, ol, ow := flatGrad(t, first)
			bi, bl, bw := flatGrad(t, beyond)
			for _, c := range []struct {
				name string
				a, b []float64
			}{{"truncated vs full init", ti, fi}, {"truncated vs full lr", tl, fl}, {"truncated vs full weighting", tw, fw},
				{"first-order vs full init", oi, fi}, {"first-order vs full lr", ol, fl}, {"first-order vs truncated init", oi, ti}} {
				rel := relErr(c.a, c.b)
				t.Logf("%s: relative difference %.2e", c.name, rel)
				assert.Greater(t, rel, 1e-4, c.name)
			}
			// Unrolling from T is first-order, and first-order mode gives
			// ω no gradient.
			assert.Equal(t, oi, bi)
			assert.Equal(t, ol, bl)
			assert.Equal(t, ow, bw)
			for _, v := range ow {
				assert.Zero(t, v)
			}
			assert.Equal(t, full.OuterLoss, first.OuterLoss)
			assert.Equal(t, full.InnerLosses, trunc.InnerLosses)
		})
	}
}

// TestInnerAccumInvariance checks that splitting the segments into
// accumulation groups leaves the inner losses and the meta-gradient
// unchanged up to rounding.
func TestInnerAccumInvariance(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(4), m.Config().Vocab, []int{7, 9, 6, 5, 8}, []int{2, 3, 1, 2, 2}, 10, 6)
	for _, opt := range []string{OptAdamW, OptSGD} {
		t.Run(opt, func(t *testing.T) {
			p := tinyParams(t, m, 3, opt, true, 12)
			e := tinyEngine(m, opt, 3, 1)
			ref, err := e.MetaGradient(p, ex, 1)
			require.NoError(t, err)
			ri, rl, rw := flatGrad(t, ref)
			for _, k := range []int{2, 3, 5, 9} {
				e.Inner.Accum = k
				g, err := e.MetaGradient(p, ex, 1)
				require.NoError(t, err)
				gi, gl, gw := flatGrad(t, g)
				for _, c := range []struct {
					name string
					a, b []float64
				}{{"init", gi, ri}, {"lr", gl, rl}, {"weighting", gw, rw}, {"inner losses", g.InnerLosses, ref.InnerLosses}} {
					rel := relErr(c.a, c.b)
					assert.LessOrEqual(t, rel, 1e-9, "accum %d: %s", k, c.name)
				}
				assert.InDelta(t, ref.OuterLoss, g.OuterLoss, 1e-12)
			}
		})
	}
}

// TestMetaStepMemory checks that the tracked peak of a meta-step grows with
// the number of inner steps only by the per-step optimiser state: from T=2
// to T=8 by at most 6·(φ, m, v) for AdamW and 6·(φ, g) for SGD.
func TestMetaStepMemory(t *testing.T) {
	m := tinyModel(t, runtime.F64)
	ex := tinyExample(newRNG(5), m.Config().Vocab, []int{7, 9, 6}, []int{2, 3, 1}, 10, 6)
	for _, opt := range []string{OptAdamW, OptSGD} {
		t.Run(opt, func(t *testing.T) {
			peak := map[int]int64{}
			var state int64
			for _, T := range []int{2, 8} {
				p := tinyParams(t, m, T, opt, true, 13)
				g, err := tinyEngine(m, opt, T, 0).MetaGradient(p, ex, 1)
				require.NoError(t, err)
				peak[T] = g.Mem.PeakBytes
				state = g.Mem.StepStateBytes
			}
			phi := int64(tinyParams(t, m, 2, opt, false, 13).Init.Params().NumElements() * 8)
			perStep := 3 * phi
			if opt == OptSGD {
				perStep = 2 * phi
			}
			assert.Equal(t, perStep, state)
			growth := peak[8] - peak[2]
			t.Logf("%s: peak T=2 %d B, T=8 %d B, growth %d B, bound 6×%d B = %d B", opt, peak[2], peak[8], growth, perStep, 6*perStep)
			assert.Positive(t, growth)
			assert.LessOrEqual(t, growth, 6*perStep)
		})
	}
}
