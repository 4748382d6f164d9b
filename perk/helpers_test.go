package perk

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

func tinyConfig() model.Config {
	return model.Config{ModelType: model.GPT2, Hidden: 16, Layers: 2, Heads: 4, KVHeads: 4, Intermediate: 32,
		Vocab: 40, MaxPositions: 32, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
}

func tinyModel(t testing.TB, dt runtime.DType) *model.Model {
	t.Helper()
	m, err := model.NewRandom(tinyConfig(), cpu.New(), dt, model.RandomOptions{Seed: 7, Std: 0.2})
	require.NoError(t, err)
	return m
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 99)) }

// tinyExample packs segments of the given lengths and prefixes and an outer
// sequence of outerLen tokens with promptLen prompt tokens.
func tinyExample(rng *rand.Rand, vocab int, lens, prefix []int, outerLen, promptLen int) *Example {
	ex := &Example{ID: "tiny", Prefix: prefix, PromptLen: promptLen}
	cu := []int32{0}
	for _, n := range lens {
		for i := 0; i < n; i++ {
			ex.Segments.IDs = append(ex.Segments.IDs, int32(rng.IntN(vocab)))
		}
		cu = append(cu, int32(len(ex.Segments.IDs)))
	}
	ex.Segments.CuSeqlens = cu
	for i := 0; i < outerLen; i++ {
		ex.Outer.IDs = append(ex.Outer.IDs, int32(rng.IntN(vocab)))
	}
	return ex
}

func fillNormal(t testing.TB, x *nn.Tensor, rng *rand.Rand, std float64) {
	t.Helper()
	switch v := x.Storage().(type) {
	case nn.HostF64:
		for i := range v {
			v[i] = rng.NormFloat64() * std
		}
	case nn.HostF32:
		for i := range v {
			v[i] = float32(rng.NormFloat64() * std)
		}
	default:
		t.Fatalf("not a host tensor: %v", x)
	}
}

// tinyParams builds meta-parameters with B non-zero, distinct positive
// learning rates and (optionally) a weighting network with a non-zero
// output layer, so that every part of the meta-gradient is informative.
func tinyParams(t testing.TB, m *model.Model, steps int, opt string, weighting bool, seed uint64) *Params {
	t.Helper()
	p, err := NewParams(m, ParamsConfig{
		LoRA:  model.LoRAConfig{R: 2, Alpha: 4, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true},
		Steps: steps, LR: 0.01, Weighting: weighting, WeightingHidden: 8, Seed: seed,
	})
	require.NoError(t, err)
	rng := newRNG(seed + 5)
	for _, prm := range p.Init.Params().Params() {
		fillNormal(t, prm.Value, rng, 0.3)
	}
	base := 0.02
	if opt == OptAdamW {
		base = 0.01
	}
	for i := range p.LRs.Values {
		for s := range p.LRs.Values[i] {
			p.LRs.Values[i][s] = base * (0.5 + rng.Float64())
		}
	}
	if p.Weighting != nil {
		for i := range p.Weighting.FC2W {
			p.Weighting.FC2W[i] = rng.NormFloat64() * 0.5
		}
		p.Weighting.FC2B[0] = 0.1
	}
	return p
}

func hostValues(t testing.TB, x *nn.Tensor) []float64 {
	t.Helper()
	v, err := hostF64(x)
	require.NoError(t, err)
	return v
}

// relErr is ‖a−b‖/max(‖b‖, tiny) over flat vectors.
func relErr(a, b []float64) float64 {
	var d, n float64
	for i := range a {
		d += (a[i] - b[i]) * (a[i] - b[i])
		n += b[i] * b[i]
	}
	return math.Sqrt(d) / math.Max(math.Sqrt(n), 1e-300)
}
