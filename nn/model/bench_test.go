package model

import (
	"testing"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// BenchmarkGPT2SmallForwardBackward times one forward, loss and backward to
// the LoRA gradients (r = 8 on c_attn, c_proj, c_fc) of a GPT-2-small-shaped
// model (d = 768, 12 heads, vocabulary 50257) cut to 2 layers, on 256 tokens
// packed as two segments, in float32 on the CPU backend.
func BenchmarkGPT2SmallForwardBackward(b *testing.B) {
	if testing.Short() {
		b.Skip("skipped under -short")
	}
	cfg := Config{ModelType: GPT2, Hidden: 768, Layers: 2, Heads: 12, KVHeads: 12, Intermediate: 3072,
		Vocab: 50257, MaxPositions: 1024, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
	be := cpu.New()
	m, err := NewRandom(cfg, be, runtime.F32, RandomOptions{Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	ad, err := NewAdapter(m, LoRAConfig{R: 8, Alpha: 16, TargetModules: DefaultTargets(GPT2)}, 2)
	if err != nil {
		b.Fatal(err)
	}
	grads, err := ad.ZerosLike()
	if err != nil {
		b.Fatal(err)
	}
	const T = 256
	rng := newRNG(3)
	ids := make([]int32, T)
	for i := range ids {
		ids[i] = int32(rng.IntN(cfg.Vocab))
	}
	batch := Batch{IDs: ids, CuSeqlens: []int32{0, 100, T}}
	tg := Targets{Labels: batch.CausalLabels()}
	var peak int64
	b.ResetTimer()
	for b.Loop() {
		p, err := m.Forward(batch, Options{Adapter: ad})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Loss(tg); err != nil {
			b.Fatal(err)
		}
		if err := p.Backward(1, Grads{LoRA: grads}); err != nil {
			b.Fatal(err)
		}
		peak = p.Stats().PeakBytes
		p.Release()
	}
	b.ReportMetric(float64(T*b.N)/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-act-MiB")
}
