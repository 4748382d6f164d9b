package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/gpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

// readScaling reads the scaling.json a run wrote to dir.
func readScaling(t *testing.T, dir string) scalingReport {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, scalingJSONFile))
	require.NoError(t, err)
	var rep scalingReport
	require.NoError(t, json.Unmarshal(data, &rep))
	return rep
}

func TestScalingTinyCPU(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	var stdout, stderr bytes.Buffer
	err := runScaling([]string{"--device", "cpu", "--lengths", "256,128", "--examples", "1", "--out", dir}, &stdout, &stderr)
	require.NoError(t, err, stderr.String())
	assert.Contains(t, stderr.String(), "the paper's 1K…128K lengths need --device cuda")

	rep := readScaling(t, dir)
	assert.Equal(t, []int{128, 256}, rep.Lengths, "lengths are sorted")
	assert.Equal(t, "cpu", rep.Kind)
	require.Len(t, rep.Results, 4, "one result per length and mode")
	for i, r := range rep.Results {
		assert.Equal(t, rep.Lengths[i/2], r.Length)
		assert.Equal(t, []string{"perk", "icr"}[i%2], r.Mode)
		assert.Equal(t, statusOK, r.Status)
		assert.Equal(t, 1, r.Examples)
		assert.Positive(t, r.Seconds, "%d %s", r.Length, r.Mode)
		assert.Positive(t, r.PeakBytes, "%d %s", r.Length, r.Mode)
		assert.Positive(t, r.ContextTokens)
		assert.LessOrEqual(t, r.ContextTokens, float64(r.Length))
		assert.Zero(t, r.PoolPeakBytes, "no memory pool on the CPU backend")
	}
	assert.Positive(t, rep.Results[0].AdaptSeconds, "PERK learns the context")
	assert.Zero(t, rep.Results[1].AdaptSeconds, "ICR does not")

	md, err := os.ReadFile(filepath.Join(dir, scalingMDFile))
	require.NoError(t, err)
	for _, want := range []string{"| context tokens | PERK time / example | PERK tracked peak | ICR time / example | ICR tracked peak | time PERK/ICR | tracked peak PERK/ICR |",
		"\n| 128 |", "\n| 256 |", "CPU figures at small lengths"} {
		assert.Contains(t, string(md), want)
	}
	assert.Equal(t, 4, strings.Count(string(md), "×"), "a time and a memory ratio per length")
	assert.Contains(t, stdout.String(), "\n| 256 |", "the table is printed")

	f, err := os.Open(filepath.Join(dir, scalingPNGFile))
	require.NoError(t, err)
	defer f.Close()
	img, err := png.Decode(f)
	require.NoError(t, err)
	assert.Greater(t, img.Bounds().Dx(), 100)
}

func TestScalingJSONToStdout(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScaling([]string{"--lengths", "128", "--inner-steps", "1", "--json"}, &stdout, &stderr), stderr.String())
	var rep scalingReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep), "stdout holds only the JSON")
	require.Len(t, rep.Results, 2)
	assert.Equal(t, 1, rep.InnerSteps)
}

// TestScalingOOMOnEmu caps the emulated GPU's memory pool so that the
// weights and ICR fit but PERK's test-time learning does not: PERK is
// marked OOM at the first length and skipped after it, ICR runs on, and
// the run succeeds.
func TestScalingOOMOnEmu(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := runScalingWith([]string{"--device", "emu", "--lengths", "128,256", "--out", dir}, &stdout, &stderr, gpu.WithPoolLimit(2<<20))
	require.NoError(t, err, stderr.String())
	rep := readScaling(t, dir)
	require.Len(t, rep.Results, 4)
	status := map[string]string{}
	for _, r := range rep.Results {
		status[fmt.Sprint(r.Length, r.Mode)] = r.Status
		if r.Mode == "icr" {
			assert.Positive(t, r.PoolPeakBytes, "the pool's peak is reported on a GPU backend")
		}
	}
	assert.Equal(t, map[string]string{"128perk": statusOOM, "128icr": statusOK, "256perk": statusSkipped, "256icr": statusOK}, status)
	assert.Contains(t, rep.Results[0].Error, "out of device memory")
	assert.Contains(t, stderr.String(), "PERK: out of memory")
	md, err := os.ReadFile(filepath.Join(dir, scalingMDFile))
	require.NoError(t, err)
	assert.Contains(t, string(md), "| 128 | OOM | OOM |")
	assert.Contains(t, string(md), "| 256 | – | – |")
	assert.Contains(t, string(md), "ICR pool peak")
}

// writeModelDir writes a tiny random GPT-2 with 512 positions and a
// byte-level tokenizer as a Hugging Face directory.
func writeModelDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	m, err := model.NewRandom(builtinConfig("cpu", 512, 257), cpu.New(), runtime.F32, model.RandomOptions{Seed: 3})
	require.NoError(t, err)
	require.NoError(t, model.SaveModel(dir, m, model.SaveOptions{}))
	tok, err := tokenizer.BuildWordLevel(nil, 0, 0)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), tok, 0o644))
	return dir
}

func TestScalingModelDir(t *testing.T) {
	dir := writeModelDir(t)
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScaling([]string{"--model", dir, "--lengths", "128", "--json"}, &stdout, &stderr), stderr.String())
	var rep scalingReport
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	assert.Contains(t, rep.Model, "gpt2: d=64, 2 layers")
	require.Len(t, rep.Results, 2)

	// A length whose ICR prompt does not fit the model's positions is an
	// error before the weights are loaded.
	stdout.Reset()
	stderr.Reset()
	err := runScaling([]string{"--model", dir, "--lengths", "128,1024"}, &stdout, &stderr)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "length 1024: ")
	assert.Contains(t, err.Error(), "more than the model's 512 positions")
	assert.Empty(t, stderr.String())
}

func TestSweep(t *testing.T) {
	lengths := []int{64, 128, 256}
	var calls []string
	measure := func(oomFrom int, other error) func(string, int) (scalingResult, error) {
		return func(mode string, k int) (scalingResult, error) {
			calls = append(calls, fmt.Sprint(mode, lengths[k]))
			switch {
			case mode == "perk" && lengths[k] >= oomFrom:
				return scalingResult{}, fmt.Errorf("test-time learning: %w", runtime.ErrOutOfMemory)
			case mode == "icr" && lengths[k] == 256 && other != nil:
				return scalingResult{}, other
			}
			return scalingResult{Seconds: 1, PeakBytes: 1}, nil
		}
	}

	var seen []string
	res, err := sweep(lengths, perk.EvalModes(), measure(128, nil), func(r scalingResult) { seen = append(seen, fmt.Sprint(r.Mode, r.Length, r.Status)) })
	require.NoError(t, err)
	assert.Equal(t, []string{"perk64", "icr64", "perk128", "icr128", "icr256"}, calls, "PERK stops after its OOM")
	assert.Equal(t, []string{"perk64ok", "icr64ok", "perk128oom", "icr128ok", "icr256ok"}, seen)
	require.Len(t, res, 6)
	var got []string
	for _, r := range res {
		got = append(got, fmt.Sprint(r.Length, r.Mode, r.Status))
	}
	assert.Equal(t, []string{"64perkok", "64icrok", "128perkoom", "128icrok", "256perkskipped", "256icrok"}, got)
	assert.Contains(t, res[2].Error, "out of device memory")

	calls = nil
	boom := errors.New("boom")
	_, err = sweep(lengths, perk.EvalModes(), measure(1<<20, boom), nil)
	require.ErrorIs(t, err, boom, "any other error fails the run")
	assert.Contains(t, err.Error(), "length 256")
}

func TestScalingBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "tpu"}, `unknown --device "tpu"`},
		{[]string{"--lengths", ""}, "--lengths is empty"},
		{[]string{"--lengths", " , "}, "empty entry"},
		{[]string{"--lengths", "128,,256"}, "empty entry"},
		{[]string{"--lengths", "128,1k"}, `"1k" is not a whole number`},
		{[]string{"--lengths", "0"}, "0 must be positive"},
		{[]string{"--lengths", "128,-256"}, "-256 must be positive"},
		{[]string{"--lengths", "4194304"}, "more than the maximum"},
		{[]string{"--lengths", "40,128"}, "--lengths 40: a 40-token context is shorter than"},
		{[]string{"--lengths", "128", "--segment-tokens", "20"}, "segment limit of 20 tokens is smaller than"},
		{[]string{"--examples", "0"}, "--examples 0 must be at least 1"},
		{[]string{"--inner-steps", "0"}, "--inner-steps 0 must be at least 1"},
		{[]string{"--lora-rank", "-1"}, "--lora-rank -1 must be at least 1"},
		{[]string{"--group-segments", "-1"}, "--group-segments -1 must be ≥ 0"},
		{[]string{"--checkpoint-policy", "layers"}, "layers"},
		{[]string{"--model", "no-such-model-dir"}, "--model"},
		{[]string{"extra"}, "unexpected arguments"},
		{[]string{"--no-such-flag"}, "unknown flag"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			var stdout, stderr bytes.Buffer
			err := runScaling(append(tc.args, "--out", out), &stdout, &stderr)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NoDirExists(t, out, "nothing is written")
			assert.NotContains(t, stderr.String(), "bench scaling:", "nothing ran")
		})
	}
}

func TestScalingCUDAWithoutTag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	// 40 tokens is too short for the needle, so a CUDA build fails at once too.
	err := runScaling([]string{"--device", "cuda", "--lengths", "40"}, &stdout, &stderr)
	require.Error(t, err)
	if errors.Is(err, runtime.ErrNoCUDA) {
		assert.Contains(t, err.Error(), "-tags cuda")
	} else {
		assert.Contains(t, err.Error(), "shorter than")
	}
}

func TestScalingHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	require.NoError(t, runScaling([]string{"--help"}, &stdout, &stderr))
	for _, f := range []string{"--device", "--lengths", "--model", "--examples", "--inner-steps", "--lora-rank",
		"--segment-tokens", "--seed", "--out", "--json"} {
		assert.Contains(t, stderr.String(), f)
	}
	assert.Empty(t, stdout.String())
}

func TestParseLengthsSortsAndDedupes(t *testing.T) {
	got, err := parseLengths(" 512, 256,512 ")
	require.NoError(t, err)
	assert.Equal(t, []int{256, 512}, got)
}

func TestLengthLabel(t *testing.T) {
	assert.Equal(t, "512", lengthLabel(512))
	assert.Equal(t, "1K", lengthLabel(1024))
	assert.Equal(t, "128K", lengthLabel(131072))
	assert.Equal(t, "1500", lengthLabel(1500))
}

// TestScalingGroupedSegments: --group-segments and --checkpoint-policy reach
// PERK's engine and the report, and --meta measures a meta-gradient per
// example. Learning one segment at a time with block checkpointing holds
// less at once than learning them all together, at test time and in
// meta-training (the memory is counted, not timed, so the comparison is
// exact).
func TestScalingGroupedSegments(t *testing.T) {
	run := func(args ...string) scalingReport {
		dir := filepath.Join(t.TempDir(), "out")
		var stdout, stderr bytes.Buffer
		require.NoError(t, runScaling(append([]string{"--lengths", "512", "--segment-tokens", "128", "--out", dir}, args...), &stdout, &stderr), stderr.String())
		return readScaling(t, dir)
	}
	all, grouped := run("--meta"), run("--meta", "--group-segments", "1", "--checkpoint-policy", "blocks")
	assert.Equal(t, 0, all.GroupSegments)
	assert.Equal(t, "none", all.Policy)
	assert.Equal(t, 1, grouped.GroupSegments)
	assert.Equal(t, "blocks", grouped.Policy)
	perkPeak := func(rep scalingReport) int64 {
		require.Equal(t, "perk", rep.Results[0].Mode)
		return rep.Results[0].PeakBytes
	}
	assert.Less(t, perkPeak(grouped), perkPeak(all))
	t.Logf("PERK tracked peak at 512 tokens: all segments %d bytes, one 128-token segment at a time with blocks %d", perkPeak(all), perkPeak(grouped))

	// --meta adds meta-training's cost: one meta-gradient per example.
	metaPeak := func(rep scalingReport) int64 {
		require.Len(t, rep.Results, 3)
		m := rep.Results[2]
		require.Equal(t, modeMeta, m.Mode)
		require.Equal(t, statusOK, m.Status)
		assert.Positive(t, m.Seconds)
		return m.PeakBytes
	}
	assert.Less(t, metaPeak(grouped), metaPeak(all))
	assert.Greater(t, metaPeak(all), perkPeak(all), "the meta-gradient keeps more than test-time learning")
	t.Logf("meta-gradient tracked peak at 512 tokens: all segments %d bytes, grouped %d", metaPeak(all), metaPeak(grouped))
}
