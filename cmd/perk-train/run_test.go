package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/perk"
)

// TestMain runs the command itself when PERK_TRAIN_AS_MAIN is set, so that
// a test can start it as a process and interrupt it with a real signal.
func TestMain(m *testing.M) {
	if os.Getenv("PERK_TRAIN_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// trainArgs are the flags of a small, quick perk-mode run on setup's data.
func trainArgs(modelDir, data string) []string {
	return []string{"--model", modelDir, "--data", data, "--inner-steps", "2", "--lora-rank", "2", "--lora-alpha", "4",
		"--weighting-hidden", "8", "--outer-lr", "1e-3", "--shuffle-docs", "--lora-dropout", "0.1", "--seed", "3", "--progress", "lines"}
}

func sameCheckpoints(t *testing.T, a, b string) {
	t.Helper()
	for _, f := range []string{perk.StateFile, model.AdapterWeightsFile, model.AdapterConfigFile} {
		x, err := os.ReadFile(filepath.Join(a, f))
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(b, f))
		require.NoError(t, err)
		assert.True(t, bytes.Equal(x, y), "%s differs between %s and %s", f, a, b)
	}
}

func readMetrics(t *testing.T, path string) []metric {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var out []metric
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m metric
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// TestInterruptAndResume: a run interrupted after its first step saves a
// checkpoint and returns without error; resuming it to the end gives the
// same checkpoint, bit for bit, as a run never interrupted, and the
// metrics log holds each step once.
func TestInterruptAndResume(t *testing.T) {
	modelDir, data := setup(t)
	args := append(trainArgs(modelDir, data), "--steps", "3")

	whole := filepath.Join(t.TempDir(), "whole")
	_, _, err := runCLI(t, append(args, "--out", whole)...)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as if Ctrl-C came during the first step
	cut := filepath.Join(t.TempDir(), "cut")
	var out, errb bytes.Buffer
	require.NoError(t, runContext(ctx, append(args, "--out", cut), &out, &errb))
	assert.Contains(t, out.String(), "interrupted at step 1 of 3; continue with --resume "+filepath.Join(cut, "checkpoint-1"))
	assert.DirExists(t, filepath.Join(cut, "checkpoint-1"))
	assert.NoDirExists(t, filepath.Join(cut, "checkpoint-3"))

	stdout, _, err := runCLI(t, append(args, "--out", cut, "--resume", filepath.Join(cut, "checkpoint-1"))...)
	require.NoError(t, err)
	assert.Contains(t, stdout, "resumed")
	sameCheckpoints(t, filepath.Join(whole, "checkpoint-3"), filepath.Join(cut, "checkpoint-3"))

	var steps []int
	for _, m := range readMetrics(t, filepath.Join(cut, metricsFile)) {
		assert.Equal(t, "step", m.Kind)
		assert.Equal(t, modePERK, m.Mode)
		steps = append(steps, m.Step)
	}
	assert.Equal(t, []int{1, 2, 3}, steps)
}

// TestInterruptSignal sends a real SIGINT to a running perk-train process:
// it finishes the step, saves a checkpoint it can resume from and exits 0.
func TestInterruptSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a subprocess")
	}
	modelDir, data := setup(t)
	out := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(os.Args[0], append(trainArgs(modelDir, data), "--steps", "100000", "--out", out)...)
	cmd.Env = append(os.Environ(), "PERK_TRAIN_AS_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(stdout)
	var lines []string
	signalled := false
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if !signalled && strings.HasPrefix(sc.Text(), "step 2/") {
			require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			signalled = true
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		require.NoError(t, err, "exit status after SIGINT; stderr: %s", stderr.String())
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatal("perk-train did not stop after SIGINT")
	}
	require.True(t, signalled, strings.Join(lines, "\n"))
	assert.Contains(t, stderr.String(), "interrupted: saving after the current step")
	last := lines[len(lines)-1]
	require.Contains(t, last, "; continue with --resume ", strings.Join(lines, "\n"))
	dir := last[strings.LastIndex(last, " ")+1:]
	step, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "checkpoint-"))
	require.NoError(t, err)
	assert.GreaterOrEqual(t, step, 2)
	assert.FileExists(t, filepath.Join(dir, perk.StateFile))
}

// TestKeepLastAndBest: only the newest --keep-last numbered checkpoints
// stay, and checkpoint-best holds the step whose held-out answer loss was
// lowest, as recorded in eval.tsv and best.json.
func TestKeepLastAndBest(t *testing.T) {
	modelDir, data := setup(t)
	out := filepath.Join(t.TempDir(), "run")
	_, _, err := runCLI(t, append(trainArgs(modelDir, data), "--steps", "5", "--out", out, "--save-every", "1", "--keep-last", "2",
		"--eval-data", data, "--eval-every", "1", "--eval-max-new-tokens", "2", "--outer-lr", "3e-2")...)
	require.NoError(t, err)
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	var ckpts []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), checkpointPrefix) {
			ckpts = append(ckpts, e.Name())
		}
	}
	assert.ElementsMatch(t, []string{"checkpoint-4", "checkpoint-5", bestDir}, ckpts)

	bestStep, bestLoss := -1, 0.0
	for _, row := range readTSV(t, filepath.Join(out, evalFile))[1:] {
		step, err := strconv.Atoi(row[1])
		require.NoError(t, err)
		loss, err := strconv.ParseFloat(row[4], 64)
		require.NoError(t, err)
		if bestStep < 0 || loss < bestLoss {
			bestStep, bestLoss = step, loss
		}
	}
	t.Logf("lowest held-out answer loss %.6f at step %d", bestLoss, bestStep)
	var b bestRecord
	raw, err := os.ReadFile(filepath.Join(out, bestFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(raw, &b))
	assert.Equal(t, bestStep, b.Step)
	assert.InDelta(t, bestLoss, b.AnswerLoss, 1e-6)
	assert.Equal(t, bestAnswerLoss, b.Metric)
	if bestStep >= 4 {
		sameCheckpoints(t, filepath.Join(out, "checkpoint-"+strconv.Itoa(bestStep)), filepath.Join(out, bestDir))
	}

	var steps, evals int
	for _, m := range readMetrics(t, filepath.Join(out, metricsFile)) {
		switch m.Kind {
		case "step":
			steps++
			require.NotNil(t, m.OuterLoss)
			require.NotNil(t, m.TokensPerS)
			assert.Positive(t, m.Tokens)
			assert.Positive(t, m.PeakBytes)
			assert.Equal(t, 5, m.Steps)
		case "eval":
			evals++
			require.NotNil(t, m.AnswerLoss)
			assert.Equal(t, 2, m.N)
		}
	}
	assert.Equal(t, 5, steps)
	assert.Equal(t, 6, evals, "before the first step and after each")
}

// TestProgressStyles: a bar redrawn in place with the losses, throughput,
// memory and ETA, or plain log lines.
func TestProgressStyles(t *testing.T) {
	modelDir, data := setup(t)
	args := append(trainArgs(modelDir, data), "--steps", "2")
	stdout, _, err := runCLI(t, append(args, "--out", filepath.Join(t.TempDir(), "bar"), "--progress", "bar")...)
	require.NoError(t, err)
	assert.Contains(t, stdout, "\r\x1b[2K[############............] 1/2 lr ")
	assert.Contains(t, stdout, "\r\x1b[2K[########################] 2/2 lr ")
	for _, s := range []string{"outer ", "inner ", "tok/s", "mem ", "ETA "} {
		assert.Contains(t, stdout, s)
	}
	assert.Contains(t, stdout, "\r\x1b[2Ksaved ", "a message clears the bar first")

	stdout, _, err = runCLI(t, append(args, "--out", filepath.Join(t.TempDir(), "lines"))...)
	require.NoError(t, err)
	assert.NotContains(t, stdout, "\r")
	assert.Regexp(t, `(?m)^step 2/2 lr \S+ outer \S+ inner \S+ \|g\| \S+ \S+s \S+ tok/s mem \S+ ETA \S+$`, stdout)
}

// TestConfigFile: a YAML or JSON file sets flags; the command line wins;
// keys that are not flags and values a flag rejects are errors.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o644))
		return p
	}
	yml := write("c.yaml", "inner-steps: 3\nouter_lr: 2.5e-4\nlora-targets: [c_attn, c_proj]\nweighting: false\nouter-betas: [0.8, 0.9]\nmode: perk\n")
	var o options
	fs := newFlags(&o)
	require.NoError(t, fs.Parse([]string{"--config", yml, "--inner-steps", "5"}))
	require.NoError(t, applyConfig(fs, o.config))
	assert.Equal(t, 5, o.innerSteps, "the flag wins")
	assert.Equal(t, 2.5e-4, o.outerLR)
	assert.Equal(t, []string{"c_attn", "c_proj"}, o.loraTargets)
	assert.False(t, o.weighting)
	assert.Equal(t, []float64{0.8, 0.9}, o.outerBetas)
	assert.True(t, fs.Changed("outer-lr"))

	js := write("c.json", `{"inner-steps": 6, "seed": 9, "eval-data": ["a.jsonl", "b.jsonl"]}`)
	o = options{}
	fs = newFlags(&o)
	require.NoError(t, fs.Parse([]string{"--config", js}))
	require.NoError(t, applyConfig(fs, o.config))
	assert.Equal(t, 6, o.innerSteps)
	assert.Equal(t, uint64(9), o.seed)
	assert.Equal(t, []string{"a.jsonl", "b.jsonl"}, o.evalData)

	for _, c := range []struct{ text, want string }{
		{"inner-stepz: 3\n", `key "inner-stepz" is not a perk-train flag`},
		{"config: other.yaml\n", `key "config" is not a perk-train flag`},
		{"inner-steps: three\n", `key "inner-steps": invalid argument "three"`},
		{"inner-steps: {a: 1}\n", `key "inner-steps": value of type map[string]interface {} is not a scalar`},
		{"inner-steps:\n", `key "inner-steps": no value`},
		{"inner-steps: 2\ninner_steps: 3\n", `repeats`},
		{"- inner-steps\n", "cannot unmarshal"},
	} {
		o = options{}
		fs = newFlags(&o)
		require.NoError(t, fs.Parse([]string{"--config", write("bad.yaml", c.text)}))
		err := applyConfig(fs, o.config)
		require.ErrorContains(t, err, c.want, c.text)
		assert.Contains(t, err.Error(), "bad.yaml")
	}

	// End to end: the config trains 2 steps with its settings; --steps on
	// the command line overrides it.
	modelDir, data := setup(t)
	cfg := write("run.yaml", "model: "+modelDir+"\ndata: "+data+"\ninner-steps: 2\nlora-rank: 2\nweighting-hidden: 8\nsteps: 2\nprogress: lines\n")
	stdout, _, err := runCLI(t, "--config", cfg, "--steps", "1", "--out", filepath.Join(dir, "run"))
	require.NoError(t, err)
	assert.Contains(t, stdout, "2 inner steps")
	assert.Contains(t, stdout, "step 1/1")
	assert.Contains(t, stdout, "learned inner learning rates (per step: geometric mean of the positive ones, min–max over tensors): step 1 ")

	_, _, err = runCLI(t, "--config", write("icr.yaml", "keep-last: 1\n"), "--mode", "icr", "--model", modelDir, "--data", data,
		"--out", filepath.Join(dir, "icr"), "--steps", "1")
	require.ErrorContains(t, err, "--mode icr does not use --keep-last")
}

// TestBadInput: bad records stop with file:line or are skipped with a
// warning; an output directory that cannot be written and bad option
// values fail before any training.
func TestBadInput(t *testing.T) {
	modelDir, data := setup(t)
	raw, err := os.ReadFile(data)
	require.NoError(t, err)
	mixed := filepath.Join(t.TempDir(), "mixed.jsonl")
	require.NoError(t, os.WriteFile(mixed, append(append([]byte("{\"id\": 1}\n"), raw...), "not json\n"...), 0o644))
	args := append(trainArgs(modelDir, mixed), "--steps", "1")

	_, _, err = runCLI(t, append(args, "--out", filepath.Join(t.TempDir(), "a"))...)
	require.ErrorContains(t, err, mixed+`:1: record "1" has no context`)

	stdout, stderr, err := runCLI(t, append(args, "--out", filepath.Join(t.TempDir(), "b"), "--on-bad-record", "skip")...)
	require.NoError(t, err)
	assert.Contains(t, stderr, "perk-train: skipping "+mixed+`:1: record "1" has no context`)
	assert.Contains(t, stderr, "perk-train: skipping "+mixed+":4: invalid record")
	assert.Contains(t, stdout, "perk-train: 2 records")

	used := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(used, "checkpoint-7"), 0o755))
	_, _, err = runCLI(t, append(trainArgs(modelDir, data), "--steps", "1", "--out", used)...)
	require.ErrorContains(t, err, "--out "+used+" already holds checkpoint-7 of another run: continue it with --resume "+filepath.Join(used, "checkpoint-7"))

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	twin := filepath.Join(t.TempDir(), "train.jsonl")
	require.NoError(t, os.WriteFile(twin, raw, 0o644))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--out", filepath.Join(file, "out")}, "--out " + filepath.Join(file, "out")},
		{[]string{"--out", t.TempDir(), "--on-bad-record", "ignore"}, `--on-bad-record "ignore": want stop or skip`},
		{[]string{"--out", t.TempDir(), "--progress", "fancy"}, `unknown --progress "fancy"`},
		{[]string{"--out", t.TempDir(), "--best-metric", "f1"}, `unknown --best-metric "f1"`},
		{[]string{"--out", t.TempDir(), "--keep-last", "-1"}, "--keep-last -1 must be ≥ 0"},
		{[]string{"--out", t.TempDir(), "--eval-data", data + "," + twin}, "--eval-data: two files named train"},
	} {
		_, _, err := runCLI(t, append(trainArgs(modelDir, data), append([]string{"--steps", "1"}, c.args...)...)...)
		require.ErrorContains(t, err, c.want, strings.Join(c.args, " "))
	}
	_, _, err = runCLI(t, "--mode", "pretrain", "--init-config", "missing.json", "--tokenizer", "words:1", "--data", data,
		"--out", filepath.Join(file, "p"), "--steps", "1")
	require.ErrorContains(t, err, "--out "+filepath.Join(file, "p"), "before reading the config")
	_, _, err = runCLI(t, "--mode", "icr", "--model", modelDir, "--data", data, "--out", filepath.Join(file, "i"), "--steps", "1")
	require.ErrorContains(t, err, "--out "+filepath.Join(file, "i"))
}

// TestExampleConfigs: the configs the README's worked example uses are
// valid: every key is a flag the perk mode accepts, every value parses.
func TestExampleConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "docs", "examples", "*.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, p := range paths {
		var o options
		fs := newFlags(&o)
		require.NoError(t, fs.Parse([]string{"--config", p}))
		require.NoError(t, applyConfig(fs, o.config), p)
		require.NoError(t, checkModeFlags(fs, o.mode), p)
		assert.Equal(t, modePERK, o.mode, p)
		assert.Equal(t, "cuda", o.device, p)
		assert.True(t, fs.Changed("lora-rank"), p)
	}
}

// cancelOn is stdout for a run that is interrupted when a line containing
// marker is printed.
type cancelOn struct {
	bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.marker) {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

// TestInterruptDuringEvaluation: an interrupt stops a held-out evaluation
// between records. Before the first step nothing is saved; during a
// periodic evaluation the step reached is saved and can be resumed; during
// the final one the final checkpoint is already there. Each exits 0.
func TestInterruptDuringEvaluation(t *testing.T) {
	modelDir, data := setup(t)
	held := filepath.Join(t.TempDir(), "held2.jsonl")
	raw, err := os.ReadFile(data)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(held, raw, 0o644))
	args := append(trainArgs(modelDir, data), "--steps", "4", "--eval-data", data+","+held, "--eval-max-new-tokens", "2")
	for _, c := range []struct {
		name, marker, want string
		extra              []string
		saved              []string
	}{
		{"first", "eval step 0 train", "interrupted before the first step; nothing to save", nil, nil},
		{"periodic", "eval step 2 train", "interrupted at step 2 of 4; continue with --resume ", []string{"--eval-every", "2"}, []string{"checkpoint-2"}},
		{"final", "eval step 4 train", "interrupted during the final evaluation; the final checkpoint is saved", nil, []string{"checkpoint-4"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := &cancelOn{marker: c.marker, cancel: cancel}
			require.NoError(t, runContext(ctx, append(append(args, c.extra...), "--out", out), w, io.Discard))
			assert.Contains(t, w.String(), c.want)
			assert.NotContains(t, w.String(), "eval step "+c.marker[len("eval step "):len("eval step ")+1]+" held2", "the second file is not evaluated")
			var ckpts []string
			entries, _ := os.ReadDir(out)
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), checkpointPrefix) && e.Name() != bestDir {
					ckpts = append(ckpts, e.Name())
				}
			}
			assert.Equal(t, c.saved, ckpts)
		})
	}
}

func TestLearnedLRSummary(t *testing.T) {
	l := &perk.LearnedLRs{Names: []string{"a", "b"}, Values: [][]float64{{0.01, 0.1}, {0.04, 0.1}}}
	assert.Equal(t, "learned inner learning rates (per step: geometric mean of the positive ones, min–max over tensors): step 1 0.02 (0.01–0.04); step 2 0.1 (0.1–0.1)",
		learnedLRSummary(l))
	l.Values = [][]float64{{-0.01}}
	assert.Contains(t, learnedLRSummary(l), "step 1 n/a (-0.01–-0.01)")
}
