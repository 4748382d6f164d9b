package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

// writeRecords writes n small records whose answer is in the context.
func writeRecords(t *testing.T, path string, n int) {
	t.Helper()
	var sb strings.Builder
	for i := 0; i < n; i++ {
		v := "abcdefgh"[i%8 : i%8+1]
		sb.WriteString(`{"id": "r` + string(rune('0'+i%10)) + `", "context": ["the cat sat on the mat", "the key is ` + v + `"], "question": "key?", "answer": "` + v + `"}` + "\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(sb.String()), 0o644))
}

func readTSV(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var rows [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return rows
}

// TestPretrainICRAndPERK runs the three modes in the order the demo does:
// pretrain a model from a config with a word-level tokenizer built from
// the data, fine-tune the ICR adapter on it and meta-train PERK on it, with
// held-out evaluation before and after.
func TestPretrainICRAndPERK(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "train.jsonl")
	writeRecords(t, data, 16)
	held := filepath.Join(root, "held.jsonl")
	writeRecords(t, held, 3)
	cfgPath := filepath.Join(root, "config.json")
	require.NoError(t, os.WriteFile(cfgPath, []byte(`{"model_type": "gpt2", "n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 64, "vocab_size": 1}`), 0o644))

	base := filepath.Join(root, "base")
	stdout, _, err := runCLI(t, "--mode", "pretrain", "--init-config", cfgPath, "--tokenizer", "words:20", "--data", data,
		"--out", base, "--steps", "30", "--outer-lr", "1e-2", "--batch-tokens", "64", "--corpus", "docs,qa,icr", "--log-every", "10")
	require.NoError(t, err)
	assert.Contains(t, stdout, "vocabulary: ")
	assert.Contains(t, stdout, "pretrain step 30/30")
	assert.Contains(t, stdout, "saved "+base)
	tok, err := tokenizer.Load(filepath.Join(base, "tokenizer.json"))
	require.NoError(t, err)
	m, err := model.LoadModel(base, cpu.New(), runtime.F32)
	require.NoError(t, err)
	assert.Equal(t, tok.VocabSize(), m.Config().Vocab)
	assert.Less(t, tok.VocabSize(), 257+21)
	assert.Len(t, tok.Encode(" the cat"), 2, "frequent words are single tokens")

	// Training further from --model keeps the tokenizer.
	more := filepath.Join(root, "more")
	_, _, err = runCLI(t, "--mode", "pretrain", "--model", base, "--data", data, "--out", more, "--steps", "2")
	require.NoError(t, err)
	a, _ := os.ReadFile(filepath.Join(base, "tokenizer.json"))
	b, _ := os.ReadFile(filepath.Join(more, "tokenizer.json"))
	assert.Equal(t, a, b)

	icr := filepath.Join(root, "icr")
	stdout, _, err = runCLI(t, "--mode", "icr", "--model", base, "--data", data, "--out", icr, "--steps", "4",
		"--lora-rank", "2", "--lora-alpha", "2", "--outer-lr", "1e-2", "--grad-accum", "2", "--eval-data", held, "--eval-max-new-tokens", "4")
	require.NoError(t, err)
	assert.Contains(t, stdout, "icr step 4/4")
	assert.Contains(t, stdout, "eval step 0 held: answer loss")
	assert.Contains(t, stdout, "eval step 4 held: answer loss")
	assert.FileExists(t, filepath.Join(icr, model.AdapterWeightsFile))
	rows := readTSV(t, filepath.Join(icr, "eval.tsv"))
	require.Len(t, rows, 3)
	assert.Equal(t, []string{"mode", "step", "data", "n", "answer_loss", "accuracy", "unanswered"}, rows[0])
	assert.Equal(t, []string{"icr", "0", "held", "3"}, rows[1][:4])
	assert.Equal(t, []string{"icr", "4", "held", "3"}, rows[2][:4])

	out := filepath.Join(root, "perk")
	stdout, _, err = runCLI(t, "--model", base, "--data", data, "--out", out, "--steps", "4", "--inner-steps", "2",
		"--lora-rank", "2", "--lora-alpha", "2", "--inner-lr", "1e-2", "--outer-lr", "1e-3", "--train-base", "--hvp", "first-order",
		"--weighting=false", "--eval-data", held+","+data, "--eval-limit", "2", "--eval-every", "2", "--eval-max-new-tokens", "4")
	require.NoError(t, err)
	rows = readTSV(t, filepath.Join(out, "eval.tsv"))
	require.Len(t, rows, 7)
	for i, want := range [][]string{{"perk", "0", "held", "2"}, {"perk", "0", "train", "2"}, {"perk", "2", "held", "2"},
		{"perk", "2", "train", "2"}, {"perk", "4", "held", "2"}, {"perk", "4", "train", "2"}} {
		assert.Equal(t, want, rows[i+1][:4])
	}
	assert.FileExists(t, filepath.Join(out, "checkpoint-4", perk.BaseDir, "model.safetensors"))
}

func TestModeFlagErrors(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "train.jsonl")
	writeRecords(t, data, 2)
	modelDir, _ := setup(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "pretrain", "--init-config", "c.json", "--lora-rank", "4", "--data", data, "--out", root, "--steps", "1"}, "--mode pretrain does not use --lora-rank"},
		{[]string{"--mode", "pretrain", "--data", data, "--out", root, "--steps", "1"}, "exactly one of --init-config"},
		{[]string{"--mode", "pretrain", "--model", modelDir, "--data", data, "--out", root, "--steps", "1", "--corpus", "books"}, `unknown corpus kind "books"`},
		{[]string{"--mode", "pretrain", "--model", modelDir, "--data", data, "--out", root, "--steps", "1", "--tokenizer", "words:x"}, "want words:N"},
		{[]string{"--mode", "icr", "--model", modelDir, "--data", data, "--out", root, "--steps", "1", "--train-base"}, "--mode icr does not use --train-base"},
		{[]string{"--mode", "icr", "--model", modelDir, "--data", data, "--steps", "1"}, "--mode icr needs"},
		{[]string{"--model", modelDir, "--data", data, "--out", root, "--steps", "1", "--corpus", "docs"}, "--mode perk does not use --corpus"},
		{[]string{"--mode", "nope", "--model", modelDir, "--data", data}, `--mode "nope" is not supported`},
	} {
		_, _, err := runCLI(t, c.args...)
		require.ErrorContains(t, err, c.want, strings.Join(c.args, " "))
	}
}
