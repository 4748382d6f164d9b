package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

// writeByteTokenizer writes a byte-level tokenizer.json: the 256 byte
// tokens (id = byte value), "<|endoftext|>" = 256.
func writeByteTokenizer(t *testing.T, dir string) *tokenizer.Tokenizer {
	t.Helper()
	data, err := tokenizer.BuildWordLevel(nil, 0, 0)
	require.NoError(t, err)
	path := filepath.Join(dir, "tokenizer.json")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	tok, err := tokenizer.Load(path)
	require.NoError(t, err)
	return tok
}

const records = `{"id": "r0", "context": ["the cat sat", "on a mat", "x=4"], "question": "x?", "answer": "4", "meta": {"tokens": 30, "depth": 1}}
{"id": "r1", "context": ["dog", "y=2"], "question": "y?", "answer": "2", "meta": {"tokens": 30, "depth": 0.5}}
{"id": "r2", "context": ["z=9", "a long segment of filler text"], "question": "z?", "answer": "9", "meta": {"tokens": 60, "depth": 0}}
{"id": "r3", "context": ["w=5"], "question": "w?", "answer": "5"}
`

// fixture is a tiny GPT-2 model directory, records, a PERK checkpoint and
// an ICR adapter, each trained for a few steps.
type fixture struct {
	modelDir, data, perkCkpt, icrCkpt string
}

func setup(t *testing.T) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{modelDir: filepath.Join(root, "model"), data: filepath.Join(root, "eval.jsonl"),
		perkCkpt: filepath.Join(root, "perk-ckpt"), icrCkpt: filepath.Join(root, "icr-ckpt")}
	cfg := model.Config{ModelType: model.GPT2, Hidden: 16, Layers: 2, Heads: 4, KVHeads: 4, Intermediate: 32,
		Vocab: 257, MaxPositions: 64, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
	m, err := model.NewRandom(cfg, cpu.New(), runtime.F64, model.RandomOptions{Seed: 5, Std: 0.2})
	require.NoError(t, err)
	require.NoError(t, model.SaveModel(f.modelDir, m, model.SaveOptions{DType: runtime.F64}))
	tok := writeByteTokenizer(t, f.modelDir)
	require.NoError(t, os.WriteFile(f.data, []byte(records), 0o644))
	recs, err := perk.ReadRecords(f.data)
	require.NoError(t, err)
	enc := &perk.Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	ds := &perk.Dataset{Records: recs, Encoder: enc, ShuffleDocs: true}
	lora := model.LoRAConfig{R: 2, Alpha: 4, Dropout: 0.1, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true}

	// PERK: the paper's engine (second order by finite differences, token
	// weighting, dropout), 2 inner steps, 2 outer steps.
	p, err := perk.NewParams(m, perk.ParamsConfig{LoRA: lora, Steps: 2, LR: 0.01, Weighting: true, WeightingHidden: 8, Seed: 1})
	require.NoError(t, err)
	inner := perk.DefaultInnerConfig()
	inner.Steps, inner.UnrollStart = 2, 1
	outer := perk.DefaultOuterConfig(2)
	outer.LR = 1e-2
	tr, err := perk.NewTrainer(&perk.Engine{Model: m, Inner: inner}, p, outer, 7)
	require.NoError(t, err)
	for tr.Step < outer.Steps {
		exs, err := tr.NextExamples(ds, 1)
		require.NoError(t, err)
		_, err = tr.TrainStep(exs)
		require.NoError(t, err)
	}
	require.NoError(t, tr.SaveCheckpoint(f.perkCkpt))

	// ICR: 2 steps of LoRA fine-tuning with the context in the prompt.
	ad, err := model.NewAdapter(m, lora, 2)
	require.NoError(t, err)
	it, err := perk.NewICRTrainer(m, ad, outer, 3)
	require.NoError(t, err)
	for it.Step < outer.Steps {
		exs, err := it.NextExamples(ds, 1)
		require.NoError(t, err)
		_, err = it.TrainStep(exs)
		require.NoError(t, err)
	}
	require.NoError(t, it.Save(f.icrCkpt))
	return f
}

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	return out.String(), errb.String(), err
}

var allFlags = []string{"--model", "--checkpoint", "--data", "--mode", "--device", "--max-new-tokens", "--out", "--limit",
	"--precision", "--inner-accum", "--checkpoint-policy", "--seed", "--on-bad-record"}

func TestUsage(t *testing.T) {
	_, stderr, err := runCLI(t)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nothing to do")
	assert.Contains(t, stderr, "usage: perk-eval")
	for _, f := range allFlags {
		assert.Contains(t, stderr, f)
	}
	_, stderr, err = runCLI(t, "--help")
	assert.ErrorIs(t, err, pflag.ErrHelp)
	for _, f := range allFlags {
		assert.Contains(t, stderr, f)
	}
}

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	require.NoError(t, os.WriteFile(data, []byte(records), 0o644))
	base := []string{"--model", dir, "--data", data, "--out", dir}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", dir}, "--model, --data and --out are required"},
		{append(base, "--mode", "rag"), `unknown --mode "rag"`},
		{base, "--mode perk needs --checkpoint"},
		{append(base, "--mode", "icr", "--device", "cuda"), "make build-cuda"},
		{append(base, "--mode", "icr", "--device", "emu", "--precision", "f64"), "--precision f64 needs --device cpu"},
		{append(base, "--mode", "icr", "--device", "tpu"), `unknown --device "tpu"`},
		{append(base, "--mode", "icr", "--precision", "bf16"), "bf16 is not supported yet"},
		{append(base, "--mode", "icr", "--precision", "f16"), `unknown --precision "f16"`},
		{append(base, "--mode", "icr", "--max-new-tokens", "0"), "--max-new-tokens 0"},
		{append(base, "--mode", "icr", "--limit", "-1"), "--limit -1"},
		{append(base, "--mode", "icr", "--inner-accum", "0"), "--inner-accum 0"},
		{append(base, "--mode", "icr", "--checkpoint-policy", "all"), "unknown checkpoint policy"},
		{append(base, "--mode", "icr", "--on-bad-record", "ignore"), `--on-bad-record "ignore"`},
		{append(base, "--mode", "icr", "extra"), "unexpected arguments"},
		{[]string{"--model", dir, "--data", filepath.Join(dir, "none.jsonl"), "--out", dir, "--mode", "icr"}, "none.jsonl"},
		{append(base, "--mode", "icr"), "config.json"},
		{append(base, "--checkpoint", dir), "perk_state.safetensors"},
		{[]string{"--bogus"}, "unknown flag"},
	} {
		_, _, err := runCLI(t, c.args...)
		require.Error(t, err, "%v", c.args)
		assert.Contains(t, err.Error(), c.want, "%v", c.args)
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err, path)
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	require.NoError(t, err, path)
	assert.Greater(t, cfg.Width, 100, path)
	assert.Greater(t, cfg.Height, 100, path)
}

func readLines(t *testing.T, path string) []perk.Prediction {
	t.Helper()
	ps, err := perk.ReadPredictions(path)
	require.NoError(t, err)
	return ps
}

// TestEvalPERKAndICR evaluates the PERK checkpoint, then the ICR adapter
// into the same directory: the report then compares both.
func TestEvalPERKAndICR(t *testing.T) {
	f := setup(t)
	out := filepath.Join(t.TempDir(), "eval")
	stdout, _, err := runCLI(t, "--model", f.modelDir, "--checkpoint", f.perkCkpt, "--data", f.data, "--mode", "perk",
		"--out", out, "--max-new-tokens", "4", "--precision", "f64", "--inner-accum", "2")
	require.NoError(t, err, stdout)
	assert.Contains(t, stdout, "[4/4] r3")
	assert.Contains(t, stdout, "perk: ")
	pk := readLines(t, filepath.Join(out, perk.PredictionsFile(perk.ModePERK)))
	require.Len(t, pk, 4)
	for _, p := range pk {
		assert.Empty(t, p.Error, p.ID)
		assert.Len(t, p.InnerLosses, 2)
		assert.LessOrEqual(t, p.GeneratedTokens, 4)
	}
	assert.Equal(t, 30, pk[0].ContextTokens)
	assert.Equal(t, 3, pk[3].ContextTokens) // "w=5", counted by the tokenizer
	md, err := os.ReadFile(filepath.Join(out, "report.md"))
	require.NoError(t, err)
	assert.Contains(t, string(md), "| | PERK | ICR |")
	assert.Contains(t, string(md), "Not evaluated: icr")
	for _, c := range []string{plotAccLength, plotAccDepth, plotMemory, plotTime} {
		checkPNG(t, filepath.Join(out, c))
	}

	stdout, _, err = runCLI(t, "--model", f.modelDir, "--checkpoint", f.icrCkpt, "--data", f.data, "--mode", "icr",
		"--out", out, "--max-new-tokens", "3")
	require.NoError(t, err, stdout)
	ic := readLines(t, filepath.Join(out, perk.PredictionsFile(perk.ModeICR)))
	require.Len(t, ic, 4)
	for _, p := range ic {
		assert.Empty(t, p.Error, p.ID)
		assert.Empty(t, p.InnerLosses)
		assert.Equal(t, perk.ExactMatch(p.Response, p.Reference), p.Correct)
	}
	md, err = os.ReadFile(filepath.Join(out, "report.md"))
	require.NoError(t, err)
	report := string(md)
	assert.NotContains(t, report, "Not evaluated")
	for _, row := range []string{"| accuracy |", "| 30 |", "| 60 |", "| 3 |", "| 0.5 |", "| unknown |"} {
		i := strings.Index(report, row)
		require.GreaterOrEqual(t, i, 0, "row %q in\n%s", row, report)
		line := report[i : i+strings.Index(report[i:], "\n")]
		assert.Equal(t, 4, strings.Count(line, "|"), line)
		assert.NotContains(t, line, "–", "both columns filled: %s", line)
	}
	var rep perk.Report
	js, err := os.ReadFile(filepath.Join(out, "report.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(js, &rep))
	assert.Equal(t, []string{perk.ModePERK, perk.ModeICR}, rep.Modes)
	assert.Equal(t, 4, rep.Overall[perk.ModeICR].N)
	for _, c := range []string{plotAccLength, plotAccDepth, plotMemory, plotTime} {
		checkPNG(t, filepath.Join(out, c))
	}

	// --limit, and icr mode without a checkpoint (the base model).
	out2 := filepath.Join(t.TempDir(), "base")
	stdout, _, err = runCLI(t, "--model", f.modelDir, "--data", f.data, "--mode", "icr", "--out", out2, "--max-new-tokens", "2", "--limit", "2")
	require.NoError(t, err)
	assert.Contains(t, stdout, "evaluating the base model")
	assert.Len(t, readLines(t, filepath.Join(out2, perk.PredictionsFile(perk.ModeICR))), 2)
}

// TestEvalOnEmu runs both modes on the GPU backend over the emulated device
// and checks that greedy answers match the CPU backend's (both f32).
func TestEvalOnEmu(t *testing.T) {
	f := setup(t)
	for _, c := range []struct{ mode, ckpt string }{{perk.ModePERK, f.perkCkpt}, {perk.ModeICR, f.icrCkpt}} {
		var preds [2][]perk.Prediction
		for i, dev := range []string{"cpu", "emu"} {
			out := filepath.Join(t.TempDir(), dev)
			stdout, _, err := runCLI(t, "--model", f.modelDir, "--checkpoint", c.ckpt, "--data", f.data, "--mode", c.mode,
				"--out", out, "--max-new-tokens", "3", "--device", dev)
			require.NoError(t, err, stdout)
			preds[i] = readLines(t, filepath.Join(out, perk.PredictionsFile(c.mode)))
		}
		require.Len(t, preds[1], len(preds[0]))
		for i := range preds[0] {
			assert.Empty(t, preds[1][i].Error, preds[1][i].ID)
			assert.Equal(t, preds[0][i].Response, preds[1][i].Response, "%s %s", c.mode, preds[0][i].ID)
		}
	}
}

// TestFlagErrorsBeforeLoading checks that an unknown --mode or --device is
// reported as such, naming the value and the accepted ones, before the
// records are read, --out is created or the model is loaded.
func TestFlagErrorsBeforeLoading(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	// Neither the model nor the data exist: a later check would name them.
	base := []string{"--model", filepath.Join(dir, "nomodel"), "--data", filepath.Join(dir, "none.jsonl"), "--out", out}
	for _, c := range []struct {
		args []string
		want string
	}{
		{append(base, "--mode", "rag"), `unknown --mode "rag" (want perk or icr)`},
		{append(base, "--mode", "icr", "--device", "tpu"), `unknown --device "tpu" (want cpu, emu or cuda)`},
		{append(base, "--mode", "perk", "--checkpoint", dir, "--device", "gpu"), `unknown --device "gpu"`},
	} {
		_, _, err := runCLI(t, c.args...)
		require.Error(t, err, "%v", c.args)
		assert.True(t, strings.HasPrefix(err.Error(), c.want), "%v: %v", c.args, err)
		assert.NotContains(t, err.Error(), "none.jsonl")
		assert.NoDirExists(t, out, "--out is not created on a flag error")
	}
}

// badRecords is records with a bad line (line 3: not JSON) and a record
// without an answer (line 5) among the good ones.
const badRecords = `{"id": "r0", "context": ["the cat sat", "on a mat", "x=4"], "question": "x?", "answer": "4", "meta": {"tokens": 30, "depth": 1}}
{"id": "r1", "context": ["dog", "y=2"], "question": "y?", "answer": "2", "meta": {"tokens": 30, "depth": 0.5}}
{"id": "broken", "context": ["z=9"
{"id": "r2", "context": ["z=9", "a long segment of filler text"], "question": "z?", "answer": "9", "meta": {"tokens": 60, "depth": 0}}
{"id": "r4", "context": ["v=1"], "question": "v?"}
{"id": "r3", "context": ["w=5"], "question": "w?", "answer": "5"}
`

// TestOnBadRecord checks --on-bad-record: stop (the default) fails at the
// first bad line with its file:line before the model is loaded; skip warns
// about each bad line on stderr with its file:line, evaluates the rest and
// says how many were skipped.
func TestOnBadRecord(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "bad.jsonl")
	require.NoError(t, os.WriteFile(data, []byte(badRecords), 0o644))

	// stop: the error names the file and line 3; the model directory does
	// not exist, so the error also shows nothing was loaded.
	for _, extra := range [][]string{nil, {"--on-bad-record", "stop"}} {
		out := filepath.Join(dir, "out-stop")
		args := append([]string{"--model", filepath.Join(dir, "nomodel"), "--data", data, "--mode", "icr", "--out", out}, extra...)
		stdout, stderr, err := runCLI(t, args...)
		require.Error(t, err)
		assert.Contains(t, err.Error(), data+":3: invalid record")
		assert.NotContains(t, err.Error(), "nomodel")
		assert.Empty(t, stdout)
		assert.Empty(t, stderr)
		assert.NoDirExists(t, out)
	}

	// skip: lines 3 and 5 are skipped with a warning each, the 4 good
	// records are evaluated.
	f := setup(t)
	out := filepath.Join(t.TempDir(), "eval")
	stdout, stderr, err := runCLI(t, "--model", f.modelDir, "--data", data, "--mode", "icr", "--out", out,
		"--max-new-tokens", "2", "--on-bad-record", "skip")
	require.NoError(t, err, stderr)
	assert.Contains(t, stderr, "warning: skipping "+data+":3: invalid record")
	assert.Contains(t, stderr, "warning: skipping "+data+":5: "+`record "r4" has no answer`)
	assert.Contains(t, stderr, "skipped 2 bad lines of "+data)
	assert.Contains(t, stdout, "[4/4] r3")
	preds := readLines(t, filepath.Join(out, perk.PredictionsFile(perk.ModeICR)))
	var got []string
	for _, p := range preds {
		got = append(got, p.ID)
	}
	assert.Equal(t, []string{"r0", "r1", "r2", "r3"}, got)

	// skip with the good file: no warning.
	_, stderr, err = runCLI(t, "--model", f.modelDir, "--data", f.data, "--mode", "icr", "--out", out,
		"--max-new-tokens", "2", "--limit", "1", "--on-bad-record", "skip")
	require.NoError(t, err)
	assert.NotContains(t, stderr, "warning")

	// skip with no good line at all is still an error.
	allBad := filepath.Join(dir, "allbad.jsonl")
	require.NoError(t, os.WriteFile(allBad, []byte("{\n[1, 2]\n"), 0o644))
	_, stderr, err = runCLI(t, "--model", f.modelDir, "--data", allBad, "--mode", "icr", "--out", out, "--on-bad-record", "skip")
	require.Error(t, err)
	assert.Contains(t, err.Error(), allBad+": no valid records (2 bad lines skipped)")
	assert.Contains(t, stderr, allBad+":1:")
	assert.Contains(t, stderr, allBad+":2:")
}

// TestUnwritableOut checks that an --out that cannot be created or written
// fails with an error naming it before the model is loaded (the model
// directory does not exist here, so loading would fail differently), and
// that the probe leaves nothing behind in a usable --out.
func TestUnwritableOut(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "d.jsonl")
	require.NoError(t, os.WriteFile(data, []byte(records), 0o644))
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	noModel := filepath.Join(dir, "nomodel")
	ckpt := filepath.Join(dir, "nockpt")

	// A path under a regular file cannot be created (even by root), nor can
	// a regular file be used as the directory.
	for _, out := range []string{filepath.Join(file, "out"), file} {
		for _, mode := range [][]string{{"--mode", "icr"}, {"--mode", "perk", "--checkpoint", ckpt}} {
			args := append([]string{"--model", noModel, "--data", data, "--out", out}, mode...)
			_, _, err := runCLI(t, args...)
			require.Error(t, err, "%v", args)
			assert.Contains(t, err.Error(), "--out "+out+": ", "%v", args)
			assert.Contains(t, err.Error(), "not a directory", "%v", args)
			assert.NotContains(t, err.Error(), "config.json", "%v", args)
			assert.NotContains(t, err.Error(), "nockpt", "%v", args)
		}
	}

	// A directory without write permission (not for root, who may write
	// anyway).
	if os.Geteuid() != 0 {
		ro := filepath.Join(dir, "ro")
		require.NoError(t, os.Mkdir(ro, 0o555))
		t.Cleanup(func() { _ = os.Chmod(ro, 0o755) })
		_, _, err := runCLI(t, "--model", noModel, "--data", data, "--out", ro, "--mode", "icr")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "--out "+ro+": ")
		assert.ErrorIs(t, err, os.ErrPermission)
	}

	// A usable --out is created and the probe removed; the run then fails
	// at loading the model.
	out := filepath.Join(dir, "new", "out")
	_, _, err := runCLI(t, "--model", noModel, "--data", data, "--out", out, "--mode", "icr")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "config.json")
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	assert.Empty(t, entries)
}
