package gpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/runtime"
)

// Whole-model parity: the GPT-2 and Qwen2 models of nn/model run on the gpu
// backend (F32) and on nn/cpu (F32) must give the same loss, logits, LoRA
// gradients, per-token weight gradients (and, in one case, base-weight
// gradients) to f32 accuracy, under both checkpoint policies; on the gpu
// backend the two policies must agree bit for bit.

// modelRun is what one forward+backward produced, as host values.
type modelRun struct {
	loss   float64
	logits []float64
	grads  map[string][]float64 // LoRA (and base, "base:"-prefixed) gradients
	dw     []float64
	actPk  int64         // the pass's activation peak (Pass.Stats)
	pool   runtime.Stats // gpu only: pool counters after the pass
	poolPk int64         // gpu only: pool peak during the pass above what was in use before it
}

// modelCase is a model and batch to compare.
type modelCase struct {
	name    string
	cfg     model.Config // random models
	dir     string       // checkpoint fixture (instead of cfg)
	batch   model.Batch
	labels  []int32
	weights []float64
	lora    model.LoRAConfig
	train   bool // LoRA dropout on
	base    bool // also full fine-tuning gradients
}

func tinyGPT2() model.Config {
	return model.Config{ModelType: model.GPT2, Hidden: 32, Layers: 2, Heads: 2, KVHeads: 2, Intermediate: 64,
		Vocab: 70, MaxPositions: 32, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
}

// tinyQwen2 has head dimension 8 (padded to the kernels' 16) and grouped
// query attention.
func tinyQwen2() model.Config {
	return model.Config{ModelType: model.Qwen2, Hidden: 32, Layers: 2, Heads: 4, KVHeads: 2, Intermediate: 48,
		Vocab: 70, MaxPositions: 64, NormEps: 1e-6, RopeTheta: 10000, Activation: "silu", TieWordEmbeddings: false}
}

// randomBatch packs segments of lengths 1, 7 and 12 with causal labels (the
// last token of each segment ignored) and a few more ignored tokens.
func randomBatch(rng *rand.Rand, vocab int) (model.Batch, []int32, []float64) {
	cu := []int32{0, 1, 8, 20}
	ids := make([]int32, cu[len(cu)-1])
	for i := range ids {
		ids[i] = int32(rng.IntN(vocab))
	}
	b := model.Batch{IDs: ids, CuSeqlens: cu}
	labels := b.CausalLabels()
	labels[4] = nn.IgnoreIndex
	w := make([]float64, len(ids))
	for i := range w {
		w[i] = 0.5 + rng.Float64()
	}
	return b, labels, w
}

// setRandomB gives every lora_B tensor N(0, 0.3²) values (PEFT starts them
// at zero, which would leave A's gradients zero), the same on any backend.
func setRandomB(t *testing.T, b nn.Backend, ad *model.Adapter, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 5))
	for _, p := range ad.Params().Params() {
		if !strings.Contains(p.Name, "lora_B") {
			continue
		}
		v := make([]float64, p.Value.Numel())
		for i := range v {
			v[i] = rng.NormFloat64() * 0.3
		}
		h, err := nn.FromF64(v, p.Value.Shape()...)
		require.NoError(t, err)
		tmp, err := b.FromHost(h, p.Value.DType())
		require.NoError(t, err)
		require.NoError(t, b.Copy(p.Value, tmp))
		require.NoError(t, b.Release(tmp))
	}
}

// runModel builds the case's model on b in precision dt and runs one
// forward, logits, loss and backward under policy.
func runModel(t *testing.T, c modelCase, b nn.Backend, dt runtime.DType, policy model.Policy) modelRun {
	t.Helper()
	var m *model.Model
	var ad *model.Adapter
	var err error
	if c.dir != "" {
		m, err = model.LoadModel(c.dir, b, dt)
		require.NoError(t, err)
		ad, err = model.LoadAdapter(c.dir, m)
		require.NoError(t, err)
	} else {
		m, err = model.NewRandom(c.cfg, b, dt, model.RandomOptions{Seed: 7, Std: 0.2})
		require.NoError(t, err)
		ad, err = model.NewAdapter(m, c.lora, 8)
		require.NoError(t, err)
		setRandomB(t, b, ad, 9)
	}
	g, err := ad.ZerosLike()
	require.NoError(t, err)
	var base *model.ParamSet
	if c.base {
		base, err = m.NewGrads()
		require.NoError(t, err)
	}
	T := c.batch.Len()
	wh, err := nn.FromF64(c.weights, T)
	require.NoError(t, err)
	w, err := b.FromHost(wh, dt)
	require.NoError(t, err)
	dw, err := b.Alloc(dt, T)
	require.NoError(t, err)
	defer func() {
		for _, x := range append(append(append(m.Params().Tensors(), ad.Params().Tensors()...), g.Params().Tensors()...), w, dw) {
			require.NoError(t, b.Release(x))
		}
		if base != nil {
			for _, x := range base.Tensors() {
				require.NoError(t, b.Release(x))
			}
		}
	}()

	gb, _ := b.(*Backend)
	var before int64
	if gb != nil {
		require.NoError(t, gb.FreeCaches())
		gb.ResetPeak()
		before = gb.Stats().InUse
	}
	var r modelRun
	p, err := m.Forward(c.batch, model.Options{Adapter: ad, Policy: policy, Train: c.train, Seed: 11, Step: 2})
	require.NoError(t, err)
	logits, err := p.Logits(0, T)
	require.NoError(t, err)
	r.logits = host(t, cpu.New(), logits)
	r.loss, err = p.Loss(model.Targets{Labels: c.labels, Weights: w})
	require.NoError(t, err)
	require.NoError(t, p.Backward(1, model.Grads{LoRA: g, Base: base, DWeights: dw}))
	r.actPk = p.Stats().PeakBytes
	p.Release()
	if gb != nil {
		require.NoError(t, gb.FreeCaches())
		r.pool = gb.Stats()
		r.poolPk = r.pool.Peak - before
		require.Equal(t, before, r.pool.InUse, "the pass left device memory in use")
	}
	r.grads = map[string][]float64{}
	for _, prm := range g.Params().Params() {
		r.grads[prm.Name] = host(t, b, prm.Value)
	}
	if base != nil {
		for _, prm := range base.Params() {
			r.grads["base:"+prm.Name] = host(t, b, prm.Value)
		}
	}
	r.dw = host(t, b, dw)
	return r
}

// compareRuns returns the largest normwise relative difference of each kind
// (loss, logits, gradients, dw) between got and want.
func compareRuns(got, want modelRun) map[string]float64 {
	out := map[string]float64{
		"loss":   math.Abs(got.loss-want.loss) / math.Abs(want.loss),
		"logits": normErr(got.logits, want.logits),
		"dw":     normErr(got.dw, want.dw),
	}
	for name, w := range want.grads {
		kind := "lora grads"
		if strings.HasPrefix(name, "base:") {
			kind = "base grads"
		}
		out[kind] = math.Max(out[kind], normErr(got.grads[name], w))
	}
	return out
}

func sameBits(t *testing.T, a, b modelRun, what string) {
	t.Helper()
	require.Equal(t, math.Float64bits(a.loss), math.Float64bits(b.loss), "%s: loss", what)
	require.Equal(t, a.logits, b.logits, "%s: logits", what)
	require.Equal(t, a.dw, b.dw, "%s: dw", what)
	for name, v := range a.grads {
		require.Equal(t, v, b.grads[name], "%s: %s", what, name)
	}
}

// modelParity runs c on the gpu backend and on nn/cpu under both policies,
// checks them and returns the gpu runs' pool peaks by policy.
func modelParity(t *testing.T, c modelCase) map[model.Policy]int64 {
	g := testBackend(t)
	c32 := cpu.New()
	peaks := map[model.Policy]int64{}
	var gpuRuns [2]modelRun
	for i, policy := range []model.Policy{model.PolicyNone, model.PolicyBlocks} {
		want := runModel(t, c, c32, runtime.F32, policy)
		got := runModel(t, c, g, runtime.F32, policy)
		gpuRuns[i] = got
		for kind, e := range compareRuns(got, want) {
			name := fmt.Sprintf("model %s %s", c.name, kind)
			recordErr(name, e, 1e-5)
			require.LessOrEqual(t, e, 1e-5, "%s (policy %v): relative difference to nn/cpu F32", name, policy)
		}
		peaks[policy] = got.poolPk
		t.Logf("%s policy=%-6v loss %.6f; pool peak above the model %d bytes (activations per Pass.Stats %d); pool %v",
			c.name, policy, got.loss, got.poolPk, got.actPk, got.pool)
	}
	sameBits(t, gpuRuns[0], gpuRuns[1], c.name+": policies none and blocks")
	return peaks
}

func TestModelParityGPT2(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	cfg := tinyGPT2()
	batch, labels, w := randomBatch(rng, cfg.Vocab)
	peaks := modelParity(t, modelCase{name: "gpt2-random", cfg: cfg, batch: batch, labels: labels, weights: w,
		lora:  model.LoRAConfig{R: 4, Alpha: 8, Dropout: 0.1, TargetModules: model.DefaultTargets(model.GPT2)},
		train: true, base: true})
	require.Less(t, peaks[model.PolicyBlocks], peaks[model.PolicyNone], "checkpointing must lower the peak")
}

func TestModelParityQwen2(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 1))
	cfg := tinyQwen2()
	batch, labels, w := randomBatch(rng, cfg.Vocab)
	peaks := modelParity(t, modelCase{name: "qwen2-random", cfg: cfg, batch: batch, labels: labels, weights: w,
		lora: model.LoRAConfig{R: 3, Alpha: 6, TargetModules: model.DefaultTargets(model.Qwen2), UseRSLoRA: true}})
	require.Less(t, peaks[model.PolicyBlocks], peaks[model.PolicyNone], "checkpointing must lower the peak")
}

// goldenInts reads an I64 tensor of a fixture file as int32s.
func goldenInts(t *testing.T, f *safetensors.File, name string) []int32 {
	t.Helper()
	raw, err := f.Bytes(name)
	require.NoError(t, err)
	out := make([]int32, len(raw)/8)
	for i := range out {
		out[i] = int32(int64(binary.LittleEndian.Uint64(raw[8*i:])))
	}
	return out
}

// TestModelParityFixtures runs the PyTorch fixture models (head dimension
// 8, so the attention runs padded) and also reports the distance of the gpu
// results to PyTorch's float64 values.
func TestModelParityFixtures(t *testing.T) {
	for _, arch := range []string{model.GPT2, model.Qwen2} {
		t.Run(arch, func(t *testing.T) {
			dir := filepath.Join("..", "model", "testdata", "golden", arch)
			path := filepath.Join(dir, "expected.safetensors")
			if _, err := os.Stat(path); err != nil {
				t.Skipf("no fixtures in %s", dir)
			}
			f, err := safetensors.Open(path)
			require.NoError(t, err)
			defer f.Close()
			get := func(name string) []float64 {
				v, err := f.Float64s(name)
				require.NoError(t, err, name)
				return v
			}
			c := modelCase{name: arch + "-fixture", dir: dir,
				batch:   model.Batch{IDs: goldenInts(t, f, "input_ids"), CuSeqlens: goldenInts(t, f, "cu_seqlens")},
				labels:  goldenInts(t, f, "labels"),
				weights: get("weights")}
			modelParity(t, c)

			// Against PyTorch (float64): f32 accuracy of a whole model.
			got := runModel(t, c, testBackend(t), runtime.F32, model.PolicyBlocks)
			want := modelRun{loss: get("loss")[0], logits: get("logits"), dw: get("grad.weights"), grads: map[string][]float64{}}
			for name := range got.grads {
				want.grads[name] = get("grad." + name)
			}
			for kind, e := range compareRuns(got, want) {
				recordErr(fmt.Sprintf("model %s vs PyTorch %s", c.name, kind), e, 1e-5)
				require.LessOrEqual(t, e, 1e-5, "%s %s: relative difference to PyTorch float64", c.name, kind)
			}
		})
	}
}
