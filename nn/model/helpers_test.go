package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

func tinyGPT2(layers int) Config {
	return Config{ModelType: GPT2, Hidden: 16, Layers: layers, Heads: 4, KVHeads: 4, Intermediate: 64,
		Vocab: 50, MaxPositions: 32, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
}

func tinyQwen2(layers int, tied bool) Config {
	return Config{ModelType: Qwen2, Hidden: 16, Layers: layers, Heads: 4, KVHeads: 2, Intermediate: 24,
		Vocab: 50, MaxPositions: 64, NormEps: 1e-6, RopeTheta: 10000, Activation: "silu", TieWordEmbeddings: tied}
}

// packed returns a batch of segments of lengths 1, 5 and 9.
func packed(rng *rand.Rand, vocab int) Batch {
	ids := make([]int32, 15)
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	return Batch{IDs: ids, CuSeqlens: []int32{0, 1, 6, 15}}
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 77)) }

func f64(t testing.TB, x *nn.Tensor) []float64 {
	t.Helper()
	v, err := x.F64()
	require.NoError(t, err)
	return v
}

// randomModel builds a float64 CPU model with weights large enough that
// every path matters.
func randomModel(t testing.TB, cfg Config, seed uint64) *Model {
	t.Helper()
	m, err := NewRandom(cfg, cpu.New(), runtime.F64, RandomOptions{Seed: seed, Std: 0.3})
	require.NoError(t, err)
	return m
}

// randomAdapter targets every module and gives B non-zero values so that
// gradients flow through A too.
func randomAdapter(t testing.TB, m *Model, seed uint64, dropout float64) *Adapter {
	t.Helper()
	cfg := LoRAConfig{R: 3, Alpha: 6, Dropout: dropout, TargetModules: DefaultTargets(m.Config().ModelType), UseRSLoRA: true}
	a, err := NewAdapter(m, cfg, seed)
	require.NoError(t, err)
	rng := newRNG(seed + 1)
	for _, mod := range a.mods {
		bv := f64(t, mod.b)
		for i := range bv {
			bv[i] = rng.NormFloat64() * 0.3
		}
	}
	return a
}

// randomLabels returns labels with a few ignored tokens.
func randomLabels(rng *rand.Rand, n, vocab int) []int32 {
	lab := make([]int32, n)
	for i := range lab {
		lab[i] = int32(rng.IntN(vocab))
		if i%4 == 3 {
			lab[i] = nn.IgnoreIndex
		}
	}
	return lab
}

func randomTensor(t testing.TB, rng *rand.Rand, lo, hi float64, shape ...int) *nn.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = lo + (hi-lo)*rng.Float64()
	}
	x, err := nn.FromF64(v, shape...)
	require.NoError(t, err)
	return x
}

// lossOf runs forward and the loss, releasing the pass.
func lossOf(t testing.TB, m *Model, b Batch, opts Options, tg Targets) float64 {
	t.Helper()
	p, err := m.Forward(b, opts)
	require.NoError(t, err)
	defer p.Release()
	l, err := p.Loss(tg)
	require.NoError(t, err)
	return l
}

// maxAbs returns max |v|.
func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}

// sampleIdx picks up to k indices of a vector of n (all when n ≤ k), always
// including the index of the largest |g|.
func sampleIdx(rng *rand.Rand, g []float64, k int) []int {
	n := len(g)
	if n <= k {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	best := 0
	for i, x := range g {
		if math.Abs(x) > math.Abs(g[best]) {
			best = i
		}
	}
	out := []int{best}
	for _, i := range rng.Perm(n)[:k-1] {
		if i != best {
			out = append(out, i)
		}
	}
	return out
}

// fdCheck compares the analytic gradient g of f with respect to the
// elements of x (perturbed in place) against central differences:
// |fd − g| ≤ tol·max(|g_i|, ‖g‖∞). It returns the worst relative error.
func fdCheck(t *testing.T, name string, x, g []float64, idx []int, f func() float64, tol float64) float64 {
	t.Helper()
	scale := maxAbs(g)
	worst := 0.0
	for _, i := range idx {
		v := x[i]
		h := 1e-5 * max(1, math.Abs(v))
		x[i] = v + h
		lp := f()
		x[i] = v - h
		lm := f()
		x[i] = v
		fd := (lp - lm) / (2 * h)
		den := max(math.Abs(g[i]), scale, 1e-300)
		rel := math.Abs(fd-g[i]) / den
		worst = max(worst, rel)
		if rel > tol {
			t.Errorf("%s[%d]: analytic %.12g, finite difference %.12g (rel %.3g)", name, i, g[i], fd, rel)
		}
	}
	return worst
}
