package model

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

type gradCase struct {
	name        string
	cfg         Config
	dropout     float64
	base        bool
	policy      Policy
	allLabelled bool // no IgnoreIndex labels (the loss uses every row)
}

func gradCases() []gradCase {
	return []gradCase{
		{"gpt2", tinyGPT2(2), 0, true, PolicyNone, false},
		{"gpt2-dropout-blocks", tinyGPT2(2), 0.25, false, PolicyBlocks, false},
		{"qwen2-untied-all-labelled", tinyQwen2(2, false), 0, true, PolicyNone, true},
		{"qwen2-tied-dropout-blocks", tinyQwen2(2, true), 0.25, true, PolicyBlocks, false},
	}
}

// TestGradientsFiniteDifferences checks dJ/dA, dJ/dB, dJ/dW (base) and
// dJ/dw (token weights) against central differences of
// J = loss + ⟨c, hidden⟩, in float64 on a packed batch (segments 1, 5, 9).
func TestGradientsFiniteDifferences(t *testing.T) {
	for k, tc := range gradCases() {
		t.Run(tc.name, func(t *testing.T) {
			m := randomModel(t, tc.cfg, uint64(10+k))
			ad := randomAdapter(t, m, uint64(20+k), tc.dropout)
			rng := newRNG(uint64(30 + k))
			batch := packed(rng, tc.cfg.Vocab)
			T, d := batch.Len(), tc.cfg.Hidden
			weights := randomTensor(t, rng, 0.2, 1.5, T)
			tg := Targets{Labels: randomLabels(rng, T, tc.cfg.Vocab), Weights: weights, Norm: 7}
			if tc.allLabelled {
				for i := range tg.Labels {
					tg.Labels[i] = int32(rng.IntN(tc.cfg.Vocab))
				}
			}
			c := randomTensor(t, rng, -0.5, 0.5, T, d)
			opts := Options{Adapter: ad, Policy: tc.policy, Train: tc.dropout > 0, Seed: 1234, Step: 5}

			objective := func() float64 {
				p, err := m.Forward(batch, opts)
				require.NoError(t, err)
				defer p.Release()
				l, err := p.Loss(tg)
				require.NoError(t, err)
				dot := 0.0
				for i, h := range f64(t, p.Hidden()) {
					dot += h * f64(t, c)[i]
				}
				return l + dot
			}

			p, err := m.Forward(batch, opts)
			require.NoError(t, err)
			_, err = p.Loss(tg)
			require.NoError(t, err)
			gA, err := ad.ZerosLike()
			require.NoError(t, err)
			var gBase *ParamSet
			if tc.base {
				gBase, err = m.NewGrads()
				require.NoError(t, err)
			}
			dw, err := nn.Zeros(m.DType(), T)
			require.NoError(t, err)
			require.NoError(t, p.Backward(1, Grads{LoRA: gA, Base: gBase, DWeights: dw, DHiddenIn: c}))
			p.Release()

			const tol = 1e-6
			worst := 0.0
			gp := gA.Params().Params()
			for i, prm := range ad.Params().Params() {
				g := f64(t, gp[i].Value)
				require.Greater(t, maxAbs(g), 0.0, "%s: zero gradient", prm.Name)
				worst = max(worst, fdCheck(t, prm.Name, f64(t, prm.Value), g, sampleIdx(rng, g, 24), objective, tol))
			}
			t.Logf("LoRA: %d tensors, worst rel error %.2g", ad.Params().Len(), worst)
			if tc.base {
				worst = 0
				gp := gBase.Params()
				for i, prm := range m.Params().Params() {
					g := f64(t, gp[i].Value)
					require.Greater(t, maxAbs(g), 0.0, "%s: zero gradient", prm.Name)
					worst = max(worst, fdCheck(t, prm.Name, f64(t, prm.Value), g, sampleIdx(rng, g, 6), objective, tol))
				}
				t.Logf("base: %d tensors, worst rel error %.2g", m.Params().Len(), worst)
			}
			all := make([]int, T)
			for i := range all {
				all[i] = i
			}
			worst = fdCheck(t, "token weights", f64(t, weights), f64(t, dw), all, objective, tol)
			t.Logf("token weights: worst rel error %.2g", worst)
		})
	}
}

// TestLossRowGather checks the loss over a subset of labelled rows (which
// gathers those rows before the LM head) against the same loss over all
// rows with zero weight on the unlabelled ones.
func TestLossRowGather(t *testing.T) {
	m := randomModel(t, tinyGPT2(1), 8)
	ad := randomAdapter(t, m, 9, 0)
	rng := newRNG(10)
	batch := packed(rng, m.Config().Vocab)
	T := batch.Len()
	labels := randomLabels(rng, T, m.Config().Vocab)
	w := randomTensor(t, rng, 0.5, 1.5, T)
	full := append([]int32(nil), labels...)
	wFull := randomTensor(t, rng, 0, 0, T)
	for i, l := range labels {
		if l == nn.IgnoreIndex {
			full[i] = int32(i % m.Config().Vocab)
		} else {
			f64(t, wFull)[i] = f64(t, w)[i]
		}
	}
	run := func(tg Targets) (float64, []float64, []float64, []float64) {
		p, err := m.Forward(batch, Options{Adapter: ad})
		require.NoError(t, err)
		defer p.Release()
		l, err := p.Loss(tg)
		require.NoError(t, err)
		g, err := ad.ZerosLike()
		require.NoError(t, err)
		dw, err := nn.Zeros(m.DType(), T)
		require.NoError(t, err)
		dh, err := nn.Zeros(m.DType(), T, m.Config().Hidden)
		require.NoError(t, err)
		require.NoError(t, p.Backward(1, Grads{LoRA: g, DWeights: dw, DHidden: dh}))
		var flat []float64
		for _, x := range g.Params().Tensors() {
			flat = append(flat, f64(t, x)...)
		}
		return l, flat, f64(t, dw), f64(t, dh)
	}
	l1, g1, dw1, dh1 := run(Targets{Labels: labels, Weights: w, Norm: 5})
	l2, g2, dw2, dh2 := run(Targets{Labels: full, Weights: wFull, Norm: 5})
	require.InDelta(t, l2, l1, 1e-14)
	for i := range g1 {
		require.InDelta(t, g2[i], g1[i], 1e-13, "lora grad %d", i)
	}
	for i := range dh1 {
		require.InDelta(t, dh2[i], dh1[i], 1e-14, "dh %d", i)
	}
	for i, l := range labels {
		if l == nn.IgnoreIndex {
			require.Zero(t, dw1[i])
		} else {
			require.InDelta(t, dw2[i], dw1[i], 1e-14)
		}
	}

	// No labelled token at all: zero loss and zero gradients.
	none := make([]int32, T)
	for i := range none {
		none[i] = nn.IgnoreIndex
	}
	l0, g0, dw0, _ := run(Targets{Labels: none, Weights: w})
	require.Zero(t, l0)
	require.Zero(t, maxAbs(g0))
	require.Zero(t, maxAbs(dw0))
}

// TestHiddenCotangent checks Grads.DHidden: with no loss it equals the
// incoming DHiddenIn; with a loss it is the loss's cotangent plus DHiddenIn.
func TestHiddenCotangent(t *testing.T) {
	m := randomModel(t, tinyQwen2(1, false), 3)
	rng := newRNG(4)
	batch := packed(rng, m.Config().Vocab)
	T, d := batch.Len(), m.Config().Hidden
	c := randomTensor(t, rng, -1, 1, T, d)
	tg := Targets{Labels: batch.CausalLabels()}

	run := func(withLoss bool, in *nn.Tensor) []float64 {
		p, err := m.Forward(batch, Options{})
		require.NoError(t, err)
		defer p.Release()
		dLoss := 0.0
		if withLoss {
			_, err = p.Loss(tg)
			require.NoError(t, err)
			dLoss = 1
		}
		out, err := nn.Zeros(m.DType(), T, d)
		require.NoError(t, err)
		require.NoError(t, p.Backward(dLoss, Grads{DHiddenIn: in, DHidden: out}))
		return f64(t, out)
	}
	require.Equal(t, f64(t, c), run(false, c))
	lossOnly := run(true, nil)
	both := run(true, c)
	for i := range both {
		require.InDelta(t, lossOnly[i]+f64(t, c)[i], both[i], 1e-15)
	}
}

// TestPackedBatch checks that a pack's loss, hidden states and LoRA
// gradients equal the sums over its segments run one at a time, i.e. no
// token attends across segments and positions restart per segment.
func TestPackedBatch(t *testing.T) {
	for k, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			m := randomModel(t, cfg, uint64(40+k))
			ad := randomAdapter(t, m, uint64(50+k), 0)
			rng := newRNG(uint64(60 + k))
			batch := packed(rng, cfg.Vocab)
			labels := randomLabels(rng, batch.Len(), cfg.Vocab)
			weights := randomTensor(t, rng, 0.5, 1.5, batch.Len())

			run := func(b Batch, lab []int32, w *nn.Tensor) (float64, []float64, []float64) {
				p, err := m.Forward(b, Options{Adapter: ad})
				require.NoError(t, err)
				defer p.Release()
				l, err := p.Loss(Targets{Labels: lab, Weights: w, Norm: 1})
				require.NoError(t, err)
				g, err := ad.ZerosLike()
				require.NoError(t, err)
				h := append([]float64(nil), f64(t, p.Hidden())...)
				require.NoError(t, p.Backward(1, Grads{LoRA: g}))
				var flat []float64
				for _, x := range g.Params().Tensors() {
					flat = append(flat, f64(t, x)...)
				}
				return l, h, flat
			}
			loss, hidden, grad := run(batch, labels, weights)

			sumLoss := 0.0
			sumGrad := make([]float64, len(grad))
			cu := batch.CuSeqlens
			for s := 0; s+1 < len(cu); s++ {
				lo, hi := int(cu[s]), int(cu[s+1])
				w, err := nn.FromF64(append([]float64(nil), f64(t, weights)[lo:hi]...), hi-lo)
				require.NoError(t, err)
				l, h, g := run(Batch{IDs: batch.IDs[lo:hi]}, labels[lo:hi], w)
				sumLoss += l
				for i := range g {
					sumGrad[i] += g[i]
				}
				d := cfg.Hidden
				for i := range h {
					require.InDelta(t, h[i], hidden[lo*d+i], 1e-12, "segment %d hidden[%d]", s, i)
				}
			}
			require.InDelta(t, sumLoss, loss, 1e-12*math.Abs(loss))
			scale := maxAbs(grad)
			for i := range grad {
				require.InDelta(t, sumGrad[i], grad[i], 1e-12*scale, "grad[%d]", i)
			}
		})
	}
}

// TestCheckpointPolicies checks that PolicyBlocks gives bit-identical
// gradients to PolicyNone (dropout on, base gradients on) and holds fewer
// activation bytes at its peak.
func TestCheckpointPolicies(t *testing.T) {
	for k, cfg := range []Config{tinyGPT2(4), tinyQwen2(4, false)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			m := randomModel(t, cfg, uint64(70+k))
			ad := randomAdapter(t, m, uint64(80+k), 0.2)
			rng := newRNG(uint64(90 + k))
			batch := packed(rng, cfg.Vocab)
			tg := Targets{Labels: batch.CausalLabels(), Weights: randomTensor(t, rng, 0.5, 1.5, batch.Len())}

			type result struct {
				loss             float64
				lora, base, rest [][]float64
				stats            MemStats
			}
			run := func(pol Policy) result {
				p, err := m.Forward(batch, Options{Adapter: ad, Policy: pol, Train: true, Seed: 9, Step: 2})
				require.NoError(t, err)
				l, err := p.Loss(tg)
				require.NoError(t, err)
				gA, err := ad.ZerosLike()
				require.NoError(t, err)
				gB, err := m.NewGrads()
				require.NoError(t, err)
				dw, err := nn.Zeros(m.DType(), batch.Len())
				require.NoError(t, err)
				dh, err := nn.Zeros(m.DType(), batch.Len(), cfg.Hidden)
				require.NoError(t, err)
				require.NoError(t, p.Backward(1, Grads{LoRA: gA, Base: gB, DWeights: dw, DHidden: dh}))
				r := result{loss: l, stats: p.Stats()}
				p.Release()
				require.Zero(t, p.Stats().LiveBytes, "bytes still held after Release")
				for _, x := range gA.Params().Tensors() {
					r.lora = append(r.lora, f64(t, x))
				}
				for _, x := range gB.Tensors() {
					r.base = append(r.base, f64(t, x))
				}
				r.rest = [][]float64{f64(t, dw), f64(t, dh)}
				return r
			}
			none, blocks := run(PolicyNone), run(PolicyBlocks)
			require.Equal(t, math.Float64bits(none.loss), math.Float64bits(blocks.loss))
			for _, pair := range []struct {
				name string
				a, b [][]float64
			}{{"lora", none.lora, blocks.lora}, {"base", none.base, blocks.base}, {"dw/dh", none.rest, blocks.rest}} {
				for i := range pair.a {
					for j := range pair.a[i] {
						if math.Float64bits(pair.a[i][j]) != math.Float64bits(pair.b[i][j]) {
							t.Fatalf("%s gradient %d[%d] differs: none %v, blocks %v", pair.name, i, j, pair.a[i][j], pair.b[i][j])
						}
					}
				}
			}
			t.Logf("%s, %d layers, T=%d: peak activation bytes none=%d blocks=%d", cfg.ModelType, cfg.Layers, batch.Len(),
				none.stats.PeakBytes, blocks.stats.PeakBytes)
			require.Less(t, blocks.stats.PeakBytes, none.stats.PeakBytes)
		})
	}
}

// TestDropoutChangesOutput checks that Train enables the adapter's dropout
// and that the mask depends on the step.
func TestDropoutChangesOutput(t *testing.T) {
	m := randomModel(t, tinyGPT2(1), 5)
	ad := randomAdapter(t, m, 6, 0.5)
	batch := packed(newRNG(7), m.Config().Vocab)
	tg := Targets{Labels: batch.CausalLabels()}
	eval := lossOf(t, m, batch, Options{Adapter: ad}, tg)
	s1 := lossOf(t, m, batch, Options{Adapter: ad, Train: true, Seed: 1, Step: 1}, tg)
	s1b := lossOf(t, m, batch, Options{Adapter: ad, Train: true, Seed: 1, Step: 1}, tg)
	s2 := lossOf(t, m, batch, Options{Adapter: ad, Train: true, Seed: 1, Step: 2}, tg)
	require.NotEqual(t, eval, s1)
	require.Equal(t, s1, s1b)
	require.NotEqual(t, s1, s2)
}

// TestFreshAdapterIsIdentity checks PEFT's init: B = 0 leaves the base
// model's output unchanged, and A's entries lie within ±1/√in.
func TestFreshAdapterIsIdentity(t *testing.T) {
	for _, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, true)} {
		m := randomModel(t, cfg, 1)
		ad, err := NewAdapter(m, LoRAConfig{R: 4, Alpha: 8, TargetModules: DefaultTargets(cfg.ModelType)}, 2)
		require.NoError(t, err)
		require.Len(t, ad.Modules(), len(m.Modules()))
		for _, mod := range ad.mods {
			bound := 1 / math.Sqrt(float64(mod.in))
			a := f64(t, mod.a)
			require.LessOrEqual(t, maxAbs(a), bound)
			require.Greater(t, maxAbs(a), 0.5*bound)
			require.Zero(t, maxAbs(f64(t, mod.b)))
		}
		batch := packed(newRNG(3), cfg.Vocab)
		base, err := m.Logits(batch, nil, 0, batch.Len())
		require.NoError(t, err)
		adapted, err := m.Logits(batch, ad, 0, batch.Len())
		require.NoError(t, err)
		require.Equal(t, f64(t, base), f64(t, adapted))
	}
}

// TestLoRANames checks the PEFT names, order and shapes of adapter tensors.
func TestLoRANames(t *testing.T) {
	m := randomModel(t, tinyGPT2(2), 1)
	ad, err := NewAdapter(m, LoRAConfig{R: 2, Alpha: 4, TargetModules: []string{"c_attn", "c_proj"}}, 1)
	require.NoError(t, err)
	names := ad.Params().Names()
	require.Equal(t, []string{
		"base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
		"base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
		"base_model.model.transformer.h.0.attn.c_proj.lora_A.weight",
		"base_model.model.transformer.h.0.attn.c_proj.lora_B.weight",
		"base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight",
		"base_model.model.transformer.h.0.mlp.c_proj.lora_B.weight",
	}, names[:6])
	require.Len(t, names, 12)
	a, b, ok := ad.Module("transformer.h.1.attn.c_attn")
	require.True(t, ok)
	require.Equal(t, []int{2, 16}, a.Shape())
	require.Equal(t, []int{48, 2}, b.Shape())
	require.InDelta(t, 2.0, ad.Config().Scale(), 0)

	q := randomModel(t, tinyQwen2(1, false), 1)
	qa, err := NewAdapter(q, LoRAConfig{R: 2, Alpha: 4, UseRSLoRA: true, TargetModules: []string{"q_proj", "down_proj"}}, 1)
	require.NoError(t, err)
	require.Equal(t, []string{
		"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
		"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
		"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight",
		"base_model.model.model.layers.0.mlp.down_proj.lora_B.weight",
	}, qa.Params().Names())
	require.InDelta(t, 4/math.Sqrt2, qa.Config().Scale(), 1e-15)
	_, b2, _ := qa.Module("model.layers.0.mlp.down_proj")
	require.Equal(t, []int{16, 2}, b2.Shape())

	_, err = NewAdapter(q, LoRAConfig{R: 2, Alpha: 4, TargetModules: []string{"c_attn"}}, 1)
	require.ErrorContains(t, err, `"c_attn" is absent`)
	re, err := NewAdapter(q, LoRAConfig{R: 2, Alpha: 4, TargetRegex: `.*\.(q|v)_proj`}, 1)
	require.NoError(t, err)
	require.Equal(t, []string{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj"}, re.Modules())
}

func TestBackwardArgumentErrors(t *testing.T) {
	m := randomModel(t, tinyGPT2(1), 1)
	ad := randomAdapter(t, m, 2, 0)
	batch := packed(newRNG(3), m.Config().Vocab)

	p, err := m.Forward(batch, Options{})
	require.NoError(t, err)
	g, err := ad.ZerosLike()
	require.NoError(t, err)
	require.ErrorContains(t, p.Backward(1, Grads{}), "no Loss")
	require.ErrorContains(t, p.Backward(0, Grads{LoRA: g}), "without an adapter")
	bad, err := nn.Zeros(m.DType(), 3, 3)
	require.NoError(t, err)
	require.ErrorContains(t, p.Backward(0, Grads{DHidden: bad}), "DHidden")
	require.NoError(t, p.Backward(0, Grads{}))
	require.ErrorContains(t, p.Backward(0, Grads{}), "already")
	p.Release()

	_, err = m.Forward(Batch{IDs: []int32{1, 2, 99}}, Options{})
	require.ErrorContains(t, err, "outside the vocabulary")
	_, err = m.Forward(Batch{IDs: []int32{1, 2, 3}, CuSeqlens: []int32{0, 2}}, Options{})
	require.ErrorContains(t, err, "cu_seqlens")
	long := make([]int32, m.Config().MaxPositions+1)
	_, err = m.Forward(Batch{IDs: long}, Options{})
	require.ErrorContains(t, err, "positions")
	q := randomModel(t, tinyQwen2(1, false), 1)
	_, err = q.Forward(Batch{IDs: []int32{1}}, Options{Adapter: ad})
	require.ErrorContains(t, err, "gpt2 model used with a qwen2 model")
	p, err = m.Forward(batch, Options{})
	require.NoError(t, err)
	_, err = p.Loss(Targets{Labels: []int32{1}})
	require.ErrorContains(t, err, "labels")
	p.Release()
}

// Example-style check that the policy names parse.
func TestParsePolicy(t *testing.T) {
	for _, p := range []Policy{PolicyNone, PolicyBlocks} {
		q, err := ParsePolicy(p.String())
		require.NoError(t, err)
		require.Equal(t, p, q)
	}
	_, err := ParsePolicy("blocks+attn")
	require.Error(t, err)
	require.Equal(t, "Policy(9)", fmt.Sprint(Policy(9)))
}

// TestFloat32Precision runs the same model in float32 and float64 and
// checks that loss and LoRA gradients agree to float32 accuracy.
func TestFloat32Precision(t *testing.T) {
	for _, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			rng := newRNG(11)
			batch := packed(rng, cfg.Vocab)
			tg := Targets{Labels: batch.CausalLabels()}
			run := func(dt runtime.DType) (float64, []float64) {
				m, err := NewRandom(cfg, cpu.New(), dt, RandomOptions{Seed: 12, Std: 0.3})
				require.NoError(t, err)
				ad, err := NewAdapter(m, LoRAConfig{R: 2, Alpha: 4, TargetModules: DefaultTargets(cfg.ModelType)}, 13)
				require.NoError(t, err)
				brng := newRNG(14)
				for _, mod := range ad.mods {
					h, err := m.b.ToHost(mod.b)
					require.NoError(t, err)
					v := make([]float64, h.Numel())
					for i := range v {
						v[i] = brng.NormFloat64() * 0.3
					}
					src, err := nn.FromF64(v, h.Shape()...)
					require.NoError(t, err)
					dev, err := m.b.FromHost(src, dt)
					require.NoError(t, err)
					require.NoError(t, m.b.Copy(mod.b, dev))
				}
				p, err := m.Forward(batch, Options{Adapter: ad, Policy: PolicyBlocks})
				require.NoError(t, err)
				defer p.Release()
				l, err := p.Loss(tg)
				require.NoError(t, err)
				g, err := ad.ZerosLike()
				require.NoError(t, err)
				require.NoError(t, p.Backward(1, Grads{LoRA: g}))
				var flat []float64
				for _, x := range g.Params().Tensors() {
					h, err := m.b.FromHost(x, runtime.F64)
					require.NoError(t, err)
					flat = append(flat, f64(t, h)...)
				}
				return l, flat
			}
			l32, g32 := run(runtime.F32)
			l64, g64 := run(runtime.F64)
			require.InDelta(t, l64, l32, 1e-5*math.Abs(l64))
			scale := maxAbs(g64)
			for i := range g64 {
				require.InDelta(t, g64[i], g32[i], 1e-4*scale, "grad %d", i)
			}
		})
	}
}
