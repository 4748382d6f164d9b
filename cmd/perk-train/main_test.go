package main

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

// writeByteTokenizer writes a byte-level tokenizer.json: the 256 byte
// tokens (id = byte value), "<|endoftext|>" = 256.
func writeByteTokenizer(t *testing.T, dir string) {
	t.Helper()
	data, err := tokenizer.BuildWordLevel(nil, 0, 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), data, 0o644))
}

// setup writes a tiny GPT-2 model directory and a records file.
func setup(t *testing.T) (modelDir, data string) {
	t.Helper()
	root := t.TempDir()
	modelDir = filepath.Join(root, "model")
	cfg := model.Config{ModelType: model.GPT2, Hidden: 16, Layers: 2, Heads: 4, KVHeads: 4, Intermediate: 32,
		Vocab: 257, MaxPositions: 64, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
	m, err := model.NewRandom(cfg, cpu.New(), runtime.F64, model.RandomOptions{Seed: 5, Std: 0.2})
	require.NoError(t, err)
	require.NoError(t, model.SaveModel(modelDir, m, model.SaveOptions{DType: runtime.F64}))
	writeByteTokenizer(t, modelDir)
	data = filepath.Join(root, "train.jsonl")
	recs := `{"id": "first", "context": ["the cat sat", "on a mat", "x=4"], "question": "x?", "answer": "4", "support": ["x=4"]}
{"id": "second", "context": ["dog", "y=2"], "question": "y?", "answer": "2"}
`
	require.NoError(t, os.WriteFile(data, []byte(recs), 0o644))
	return modelDir, data
}

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	return out.String(), errb.String(), err
}

// libraryMetaGrad computes the meta-gradient of the first record with the
// library, for comparison with the CLI's dump.
func libraryMetaGrad(t *testing.T, modelDir, data string, p func(m *model.Model) *perk.Params, inner perk.InnerConfig) map[string][]float64 {
	t.Helper()
	m, err := model.LoadModel(modelDir, cpu.New(), runtime.F64)
	require.NoError(t, err)
	tok, err := tokenizer.Load(filepath.Join(modelDir, "tokenizer.json"))
	require.NoError(t, err)
	recs, err := perk.ReadRecords(data)
	require.NoError(t, err)
	enc := &perk.Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	ex, err := enc.Encode(recs[0], nil)
	require.NoError(t, err)
	e := &perk.Engine{Model: m, Inner: inner}
	g, err := e.MetaGradient(p(m), ex, 0)
	require.NoError(t, err)
	ts, err := g.Tensors(m.Backend(), runtime.F64)
	require.NoError(t, err)
	out := map[string][]float64{}
	for _, x := range ts {
		out[x.Name] = x.F64
	}
	return out
}

func readDump(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	defer f.Close()
	out := map[string][]float64{}
	for _, n := range f.Names() {
		info, err := f.Info(n)
		require.NoError(t, err)
		assert.Equal(t, "F64", info.DType, n)
		out[n], err = f.Float64s(n)
		require.NoError(t, err)
	}
	return out
}

func TestDumpMetagrad(t *testing.T) {
	modelDir, data := setup(t)
	out := filepath.Join(t.TempDir(), "g.safetensors")
	stdout, _, err := runCLI(t, "--model", modelDir, "--data", data, "--dump-metagrad", out, "--precision", "f64",
		"--inner-steps", "2", "--unroll-start", "0", "--inner-lr", "0.01", "--lora-rank", "2", "--lora-alpha", "4",
		"--weighting-hidden", "8", "--inner-eps", "1e-3")
	require.NoError(t, err)
	assert.Contains(t, stdout, "record first: 3 segments")
	got := readDump(t, out)

	inner := perk.DefaultInnerConfig()
	inner.Steps, inner.UnrollStart, inner.Eps = 2, 0, 1e-3
	want := libraryMetaGrad(t, modelDir, data, func(m *model.Model) *perk.Params {
		p, err := perk.NewParams(m, perk.ParamsConfig{
			LoRA:  model.LoRAConfig{R: 2, Alpha: 4, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true},
			Steps: 2, LR: 0.01, Weighting: true, WeightingHidden: 8, Seed: 0})
		require.NoError(t, err)
		return p
	}, inner)
	assert.Equal(t, keys(want), keys(got))
	assert.Equal(t, want, got)
	assert.Contains(t, got, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")
	assert.Contains(t, got, "perk.lr.base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight")
	assert.Contains(t, got, perk.WeightingFC1Weight)
	assert.Len(t, got["perk.lr.base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"], 2)
}

// TestDumpMetagradInitFiles reads the initialisation from --init-adapter and
// --init-state (with B non-zero so every gradient is informative).
func TestDumpMetagradInitFiles(t *testing.T) {
	modelDir, data := setup(t)
	m, err := model.LoadModel(modelDir, cpu.New(), runtime.F64)
	require.NoError(t, err)
	p, err := perk.NewParams(m, perk.ParamsConfig{
		LoRA:  model.LoRAConfig{R: 3, Alpha: 6, TargetModules: []string{"c_attn", "c_fc"}},
		Steps: 3, LR: 0.02, Weighting: true, WeightingHidden: 5, WeightingBeta: 2, Seed: 4})
	require.NoError(t, err)
	for _, x := range p.Init.Params().Tensors() {
		v, err := x.F64()
		require.NoError(t, err)
		for i := range v {
			v[i] = 0.1 * float64((i*7)%11-5)
		}
	}
	p.Weighting.FC2W[0], p.Weighting.FC2B[0] = 0.5, -0.2
	p.LRs.Values[1][2] = 0.03
	initDir := filepath.Join(t.TempDir(), "init")
	require.NoError(t, perk.SaveParams(initDir, p, m.Backend()))

	out := filepath.Join(t.TempDir(), "g.safetensors")
	_, _, err = runCLI(t, "--model", modelDir, "--data", data, "--dump-metagrad", out, "--precision", "f64",
		"--init-adapter", initDir, "--init-state", filepath.Join(initDir, perk.StateFile), "--inner-opt", "sgd",
		"--unroll-start", "1")
	require.NoError(t, err)
	got := readDump(t, out)
	inner := perk.DefaultInnerConfig()
	inner.Steps, inner.UnrollStart, inner.Optimizer = 3, 1, perk.OptSGD
	want := libraryMetaGrad(t, modelDir, data, func(*model.Model) *perk.Params { return p }, inner)
	assert.Equal(t, want, got)
	assert.Len(t, got[perk.WeightingFC1Weight], 5*16)

	// Flags the files decide conflict with them.
	_, _, err = runCLI(t, "--model", modelDir, "--data", data, "--dump-metagrad", out, "--init-adapter", initDir, "--lora-rank", "4")
	require.ErrorContains(t, err, "--lora-rank conflicts with --init-adapter")
	_, _, err = runCLI(t, "--model", modelDir, "--data", data, "--dump-metagrad", out,
		"--init-adapter", initDir, "--init-state", filepath.Join(initDir, perk.StateFile), "--inner-steps", "2")
	require.ErrorContains(t, err, "--inner-steps 2 conflicts with")
}

func TestTrainAndResume(t *testing.T) {
	modelDir, data := setup(t)
	common := []string{"--model", modelDir, "--data", data, "--inner-steps", "2", "--lora-rank", "2", "--lora-alpha", "4",
		"--weighting-hidden", "8", "--steps", "3", "--outer-lr", "1e-3", "--shuffle-docs", "--lora-dropout", "0.1", "--seed", "3"}
	outA := filepath.Join(t.TempDir(), "a")
	stdout, _, err := runCLI(t, append(common, "--out", outA, "--save-every", "1")...)
	require.NoError(t, err)
	assert.Contains(t, stdout, "step 1/3")
	assert.Contains(t, stdout, "step 3/3")
	for _, s := range []string{"checkpoint-1", "checkpoint-2", "checkpoint-3"} {
		assert.FileExists(t, filepath.Join(outA, s, perk.StateFile))
		assert.FileExists(t, filepath.Join(outA, s, model.AdapterWeightsFile))
	}
	outB := filepath.Join(t.TempDir(), "b")
	stdout, _, err = runCLI(t, append(common, "--out", outB, "--resume", filepath.Join(outA, "checkpoint-1"))...)
	require.NoError(t, err)
	assert.Contains(t, stdout, "resumed")
	for _, f := range []string{perk.StateFile, model.AdapterWeightsFile, model.AdapterConfigFile} {
		a, err := os.ReadFile(filepath.Join(outA, "checkpoint-3", f))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(outB, "checkpoint-3", f))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(a, b), "%s differs after resuming", f)
	}
}

func TestUsageAndErrors(t *testing.T) {
	_, stderr, err := runCLI(t)
	require.ErrorContains(t, err, "--model and --data are required")
	assert.Contains(t, stderr, "usage: perk-train")
	assert.Contains(t, stderr, "--dump-metagrad")

	_, stderr, err = runCLI(t, "--help")
	require.Error(t, err)
	fs := newFlags(&options{})
	groups := map[string]int{}
	for _, g := range flagGroups {
		assert.Contains(t, stderr, "\n"+g.title+":\n")
		for _, name := range g.flags {
			groups[name]++
			assert.NotNil(t, fs.Lookup(name), "group %q lists --%s, which is not a flag", g.title, name)
		}
	}
	fs.VisitAll(func(f *pflag.Flag) {
		assert.Contains(t, stderr, "--"+f.Name, "help documents --%s", f.Name)
		assert.NotEmpty(t, f.Usage, f.Name)
		assert.Equal(t, 1, groups[f.Name], "--%s is in exactly one --help group", f.Name)
	})

	modelDir, data := setup(t)
	base := []string{"--model", modelDir, "--data", data, "--dump-metagrad", filepath.Join(t.TempDir(), "g.safetensors")}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "tpu"}, `unknown --device "tpu"`},
		{[]string{"--device", "emu", "--precision", "f64"}, "--precision f64 needs --device cpu"},
		{[]string{"--precision", "bf16"}, "bf16 is not supported yet"},
		{[]string{"--hvp", "exact"}, "not implemented yet"},
		{[]string{"--hvp", "nope"}, "unknown hvp mode"},
		{[]string{"--inner-opt", "lion"}, "unknown optimiser"},
		{[]string{"--lora-targets", "q_proj"}, `target module "q_proj" is absent`},
		{[]string{"--support-target"}, `record "first": the question sequence has 85 tokens, more than the model's 64 positions`},
	} {
		_, _, err := runCLI(t, append(base, c.args...)...)
		require.ErrorContains(t, err, c.want, strings.Join(c.args, " "))
	}
	_, _, err = runCLI(t, "--model", modelDir, "--data", data)
	require.ErrorContains(t, err, "training needs --out DIR and --steps N")
	bad := filepath.Join(t.TempDir(), "bad.jsonl")
	require.NoError(t, os.WriteFile(bad, []byte(`{"id": "x", "context": ["a"], "question": "q"}`+"\n"), 0o644))
	_, _, err = runCLI(t, "--model", modelDir, "--data", bad, "--dump-metagrad", "x.safetensors")
	require.ErrorContains(t, err, `bad.jsonl:1: record "x" has no answer`)
}

func keys(m map[string][]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
