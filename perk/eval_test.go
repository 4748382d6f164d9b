package perk

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/model"
)

func TestParseEvalRecords(t *testing.T) {
	data := `{"id": "a", "context": ["x"], "question": "q", "answer": "1", "meta": {"tokens": 1024, "depth": 0.25}}

{"id": "b", "context": ["y"], "question": "q", "answer": "2"}
{"id": "c", "context": ["z"], "question": "q", "answer": "3", "meta": null}
{"id": "d", "context": ["w"], "question": "q", "answer": "4", "meta": {"tokens": 7}}
`
	recs, err := ParseEvalRecords("in.jsonl", []byte(data))
	require.NoError(t, err)
	require.Len(t, recs, 4)
	assert.Equal(t, "a", recs[0].ID)
	require.NotNil(t, recs[0].Meta.Tokens)
	require.NotNil(t, recs[0].Meta.Depth)
	assert.Equal(t, 1024, *recs[0].Meta.Tokens)
	assert.Equal(t, 0.25, *recs[0].Meta.Depth)
	assert.Equal(t, RecordMeta{}, recs[1].Meta)
	assert.Equal(t, RecordMeta{}, recs[2].Meta)
	assert.Equal(t, 7, *recs[3].Meta.Tokens)
	assert.Nil(t, recs[3].Meta.Depth)
	assert.Equal(t, "4", recs[3].Answer)

	ok := `{"id": "a", "context": ["x"], "question": "q", "answer": "1"}` + "\n"
	for _, c := range []struct{ text, want string }{
		{ok + `{"id": "b", "context": ["x"], "question": "q", "answer": "1", "meta": {"tokens": -1}}`, `bad.jsonl:2: record "b": meta: tokens -1`},
		{ok + "\n" + `{"id": "b", "context": ["x"], "question": "q", "answer": "1", "meta": {"tokens": 1.5}}`, `bad.jsonl:3: record "b": meta: tokens 1.5`},
		{`{"id": "b", "context": ["x"], "question": "q", "answer": "1", "meta": {"depth": "mid"}}`, `bad.jsonl:1: record "b": meta:`},
		{`{"id": "b", "context": ["x"], "question": "q", "answer": "1", "meta": [1]}`, `bad.jsonl:1: record "b": meta:`},
		{`{"id": "b", "context": ["x"], "question": "q"}`, `bad.jsonl:1: record "b" has no answer`},
	} {
		_, err := ParseEvalRecords("bad.jsonl", []byte(c.text))
		require.Error(t, err, c.text)
		assert.Contains(t, err.Error(), c.want)
	}
	_, err = ReadEvalRecords(filepath.Join(t.TempDir(), "missing.jsonl"))
	assert.Error(t, err)
}

func fptr(v float64) *float64 { return &v }

func TestReport(t *testing.T) {
	// Few distinct lengths and depths: one bucket each.
	pk := []Prediction{
		{ID: "1", ContextTokens: 1000, TokensFromMeta: true, Depth: fptr(0), Correct: true, Seconds: 1, PeakBytes: 100},
		{ID: "2", ContextTokens: 1000, TokensFromMeta: true, Depth: fptr(0.5), Correct: false, Seconds: 3, PeakBytes: 300},
		{ID: "3", ContextTokens: 8000, TokensFromMeta: true, Depth: fptr(0.5), Correct: true, Seconds: 2, PeakBytes: 200},
		{ID: "4", ContextTokens: 8000, TokensFromMeta: true, Error: "prompt too long"},
	}
	r := NewReport(map[string][]Prediction{ModePERK: pk})
	assert.Equal(t, []string{ModePERK}, r.Modes)
	o := r.Overall[ModePERK]
	assert.Equal(t, Cell{N: 4, Correct: 2, Errors: 1, Accuracy: 0.5, MeanSeconds: 2, MeanPeakBytes: 200, MaxPeakBytes: 300}, o)
	require.Len(t, r.Length, 2)
	assert.Equal(t, "1000", r.Length[0].Label)
	assert.Equal(t, "8000", r.Length[1].Label)
	assert.Equal(t, 2, r.Length[1].Cells[ModePERK].N)
	require.Len(t, r.Depth, 3)
	assert.Equal(t, []string{"0", "0.5", "unknown"}, []string{r.Depth[0].Label, r.Depth[1].Label, r.Depth[2].Label})
	assert.True(t, r.Depth[2].Unknown)
	md := r.Markdown()
	assert.Contains(t, md, "| | PERK | ICR |")
	assert.Contains(t, md, "| accuracy | 50.0% (2/4) | – |")
	assert.Contains(t, md, "| 1000 | 50.0% (1/2) | – |")
	assert.Contains(t, md, "| 0.5 | 50.0% (1/2) | – |")
	assert.Contains(t, md, "Not evaluated: icr")
	assert.Contains(t, md, "meta.tokens")

	// Many distinct lengths and depths: power-of-two and equal-width bins,
	// shared by both modes.
	var a, b []Prediction
	for i := 0; i < 20; i++ {
		p := Prediction{ID: fmt.Sprint(i), ContextTokens: 100 + 300*i, Depth: fptr(float64(i) / 19), Correct: i%2 == 0, Seconds: 1}
		a = append(a, p)
		p.Correct = i%4 == 0
		b = append(b, p)
	}
	r = NewReport(map[string][]Prediction{ModePERK: a, ModeICR: b[:10]})
	assert.Equal(t, []string{ModePERK, ModeICR}, r.Modes)
	var labels []string
	for _, row := range r.Length {
		labels = append(labels, row.Label)
	}
	assert.Equal(t, []string{"65–128", "257–512", "513–1024", "1025–2048", "2049–4096", "4097–8192"}, labels)
	labels = nil
	for _, row := range r.Depth {
		labels = append(labels, row.Label)
	}
	assert.Equal(t, []string{"0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1"}, labels)
	last := r.Length[len(r.Length)-1]
	_, hasICR := last.Cells[ModeICR]
	assert.False(t, hasICR, "ICR has no record that long")
	md = r.Markdown()
	assert.Contains(t, md, "different records")
	assert.Contains(t, md, "| accuracy | 50.0% (10/20) | 30.0% (3/10) |")
	assert.Contains(t, md, "| 4097–8192 | ")
	assert.Contains(t, md, "PERK peak memory")

	for _, c := range []struct {
		s    float64
		want string
	}{{0, "0 s"}, {1234.5, "1234 s"}, {12.345, "12.3 s"}, {1, "1 s"}, {0.0456, "45.6 ms"}, {0.000789, "789 µs"}} {
		assert.Equal(t, c.want, SecondsString(c.s))
	}
	for _, c := range []struct {
		n    float64
		want string
	}{{12, "12 B"}, {2048, "2.0 KiB"}, {3 << 20, "3.00 MiB"}, {5 << 30, "5.00 GiB"}} {
		assert.Equal(t, c.want, BytesString(c.n))
	}

	empty := NewReport(nil)
	assert.Empty(t, empty.Modes)
	assert.Contains(t, empty.Markdown(), "no predictions")
}

// TestPERKEvaluate meta-trains PERK on two records whose questions and
// prompts are identical and whose answers are only in their contexts, saves
// a checkpoint, loads it and evaluates: both are answered right, so the
// evaluation adapts to each context and decodes from the training prompt.
// The ICR column (base model) is evaluated on the same records.
func TestPERKEvaluate(t *testing.T) {
	m := learnableModel(t)
	p, err := NewParams(m, ParamsConfig{
		LoRA:  model.LoRAConfig{R: 4, Alpha: 8, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true},
		Steps: 2, LR: 0.01, Seed: 3,
	})
	require.NoError(t, err)
	inner := DefaultInnerConfig()
	inner.Steps, inner.UnrollStart = 2, 0
	e := &Engine{Model: m, Inner: inner, SecondOrder: FirstOrder{}}
	enc := &Encoder{Tok: byteTokenizer(t), EOS: 256, Vocab: 257, MaxPositions: 64}
	ds := &Dataset{Records: tinyRecords(2), Encoder: enc}
	o := DefaultOuterConfig(80)
	o.LR, o.Accum, o.WarmupFrac, o.LRForLRs = 1e-2, 2, 0.05, 1e-3
	tr, err := NewTrainer(e, p, o, 1)
	require.NoError(t, err)
	for tr.Step < o.Steps {
		exs, err := tr.NextExamples(ds, o.Accum)
		require.NoError(t, err)
		_, err = tr.TrainStep(exs)
		require.NoError(t, err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	require.NoError(t, tr.SaveCheckpoint(dir))

	loaded, err := LoadParams(m, dir, filepath.Join(dir, StateFile))
	require.NoError(t, err)
	got, ok, err := CheckpointInnerConfig(dir)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, inner, got)

	tokens := 42
	recs := []EvalRecord{{Record: ds.Records[0], Meta: RecordMeta{Tokens: &tokens, Depth: fptr(1)}}, {Record: ds.Records[1]}}
	ev := &Evaluator{Mode: ModePERK, Encoder: enc, Engine: &Engine{Model: m, Inner: got}, Params: loaded, MaxNewTokens: 4, Seed: 3}
	var seen []int
	preds, err := ev.Evaluate(recs, func(i int, p Prediction) error { seen = append(seen, i); return nil })
	require.NoError(t, err)
	assert.Equal(t, []int{0, 1}, seen)
	require.Len(t, preds, 2)
	for i, p := range preds {
		rec := recs[i]
		assert.True(t, p.Correct, "%s answered %q, want %q", p.ID, p.Response, rec.Answer)
		assert.Empty(t, p.Error)
		assert.Equal(t, rec.Answer, p.Extracted)
		assert.Equal(t, ModePERK, p.Mode)
		assert.Len(t, p.InnerLosses, 2)
		assert.Equal(t, len(enc.Tok.Encode(Prompt(3, rec.Question))), p.PromptTokens)
		assert.Equal(t, StopEOS, p.Stop)
		assert.Positive(t, p.PeakBytes)
		assert.Positive(t, p.AdaptSeconds)
		assert.GreaterOrEqual(t, p.Seconds, p.AdaptSeconds+p.DecodeSeconds)
	}
	assert.Equal(t, 42, preds[0].ContextTokens)
	assert.True(t, preds[0].TokensFromMeta)
	assert.Equal(t, 1.0, *preds[0].Depth)
	n := 0
	for _, s := range recs[1].Context {
		n += len(s) // one byte per token
	}
	assert.Equal(t, n, preds[1].ContextTokens)
	assert.False(t, preds[1].TokensFromMeta)
	assert.Nil(t, preds[1].Depth)

	// Deterministic, and the predictions survive a JSONL round trip.
	again, err := ev.Evaluate(recs, nil)
	require.NoError(t, err)
	for i := range preds {
		assert.Equal(t, preds[i].Response, again[i].Response)
		assert.Equal(t, preds[i].InnerLosses, again[i].InnerLosses)
	}
	var buf bytes.Buffer
	require.NoError(t, WritePredictions(&buf, preds))
	path := filepath.Join(t.TempDir(), PredictionsFile(ModePERK))
	require.NoError(t, writeFile(path, buf.Bytes()))
	back, err := ReadPredictions(path)
	require.NoError(t, err)
	assert.Equal(t, preds, back)

	// ICR column with the base model: answers exist, scored the same way.
	icr := &Evaluator{Mode: ModeICR, Encoder: enc, Model: m, MaxNewTokens: 3}
	ip, err := icr.Evaluate(recs, nil)
	require.NoError(t, err)
	for _, p := range ip {
		assert.Empty(t, p.Error)
		assert.Equal(t, ExactMatch(p.Response, p.Reference), p.Correct)
		assert.Equal(t, len(enc.Tok.Encode(ICRPrompt(ds.Records[0].Context, "x?"))), p.PromptTokens)
	}
	r := NewReport(map[string][]Prediction{ModePERK: preds, ModeICR: ip})
	assert.Contains(t, r.Markdown(), "| accuracy | 100.0% (2/2) |")

	// A record that cannot be answered is an error prediction; a broken
	// evaluator is refused.
	long := EvalRecord{Record: Record{ID: "long", Context: []string{strings.Repeat("z", 70)}, Question: "x?", Answer: "1"}}
	bad := ev.Predict(long, 0)
	assert.False(t, bad.Correct)
	assert.Contains(t, bad.Error, "positions")
	_, err = (&Evaluator{Mode: "rag", Encoder: enc, MaxNewTokens: 1}).Evaluate(recs, nil)
	assert.ErrorContains(t, err, "unknown mode")
	_, err = (&Evaluator{Mode: ModePERK, Encoder: enc, MaxNewTokens: 1}).Evaluate(recs, nil)
	assert.ErrorContains(t, err, "needs an engine")
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }
