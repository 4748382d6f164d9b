package perk

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

func TestICREncode(t *testing.T) {
	assert.Equal(t, "one\ntwo\nq?\nAnswer:", ICRPrompt([]string{"one", "two"}, "q?"))
	tok := byteTokenizer(t)
	enc := &Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	rec := Record{ID: "r", Context: []string{"ab", "c"}, Question: "q?", Answer: "7", Support: []string{"c"}}
	x, err := enc.EncodeICR(rec)
	require.NoError(t, err)
	prompt := "ab\nc\nq?\nAnswer:"
	require.Equal(t, len(prompt), x.PromptLen)
	var want []int32
	for _, c := range []byte(prompt + " 7") {
		want = append(want, int32(c))
	}
	want = append(want, 256)
	assert.Equal(t, want, x.Seq.IDs)
	lab := x.Labels()
	for i := range lab {
		switch {
		case i < x.PromptLen-1 || i == len(lab)-1:
			assert.Equal(t, int32(nn.IgnoreIndex), lab[i], "label %d", i)
		default:
			assert.Equal(t, want[i+1], lab[i], "label %d", i)
		}
	}

	// The support target wraps the answer.
	enc.SupportTarget = true
	x, err = enc.EncodeICR(rec)
	require.NoError(t, err)
	assert.Equal(t, " <support>c</support>\n<output>7</output>", tok.Decode(toInts(x.Seq.IDs[x.PromptLen:len(x.Seq.IDs)-1])))

	// Too long for the model, or malformed.
	enc.SupportTarget = false
	long := rec
	long.Context = []string{string(make([]byte, 70))}
	_, err = enc.EncodeICR(long)
	assert.ErrorContains(t, err, "more than the model's 64 positions")
	_, err = enc.EncodeICR(Record{ID: "e", Context: []string{"x"}, Question: "q"})
	assert.ErrorContains(t, err, "empty answer")
}

// learnableModel is a tiny byte-level GPT-2 wide enough (and with large
// enough embeddings) for its tied LM head to put most of the probability on
// one token, so that a few LoRA steps can make it answer.
func learnableModel(t testing.TB) *model.Model {
	t.Helper()
	c := byteModelConfig()
	c.Hidden, c.Intermediate = 32, 64
	m, err := model.NewRandom(c, cpu.New(), runtime.F64, model.RandomOptions{Seed: 9, Std: 0.5})
	require.NoError(t, err)
	return m
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// TestICRTrainAndAnswer fine-tunes the ICR adapter on two records until it
// answers both from their contexts, saves it, reloads it and answers
// again: labels, the optimiser, decoding and scoring fit together.
func TestICRTrainAndAnswer(t *testing.T) {
	m := learnableModel(t)
	ad, err := model.NewAdapter(m, model.LoRAConfig{R: 4, Alpha: 8, Dropout: 0.05, TargetModules: model.DefaultTargets(model.GPT2), UseRSLoRA: true}, 2)
	require.NoError(t, err)
	recs := tinyRecords(2)
	enc := &Encoder{Tok: byteTokenizer(t), EOS: 256, Vocab: 257, MaxPositions: 64}
	ds := &Dataset{Records: recs, Encoder: enc}
	cfg := DefaultOuterConfig(80)
	cfg.LR, cfg.Accum, cfg.WarmupFrac = 1e-2, 2, 0.05
	tr, err := NewICRTrainer(m, ad, cfg, 5)
	require.NoError(t, err)
	var first, last ICRStepReport
	for s := 0; s < cfg.Steps; s++ {
		exs, err := tr.NextExamples(ds, cfg.Accum)
		require.NoError(t, err)
		rep, err := tr.TrainStep(exs)
		require.NoError(t, err)
		if s == 0 {
			first = rep
		}
		last = rep
	}
	t.Logf("ICR loss %.4f → %.4f over %d steps", first.Loss, last.Loss, cfg.Steps)
	assert.Equal(t, cfg.Steps, tr.Step)
	assert.Equal(t, cfg.Steps*cfg.Accum, tr.Seen)
	assert.Less(t, last.Loss, 0.1*first.Loss)
	assert.Positive(t, last.PeakBytes)

	gen := GenerateConfig{MaxNewTokens: 4, EOS: 256}
	dir := filepath.Join(t.TempDir(), "icr")
	require.NoError(t, tr.Save(dir))
	loaded, err := model.LoadAdapter(dir, m)
	require.NoError(t, err)
	for _, rec := range recs {
		x, err := enc.EncodeICR(rec)
		require.NoError(t, err)
		loss, err := tr.Loss(x)
		require.NoError(t, err)
		assert.Less(t, loss, 0.5, "record %s", rec.ID)
		for _, a := range []*model.Adapter{ad, loaded} {
			ans, err := ICRAnswer(m, a, enc, rec, gen)
			require.NoError(t, err)
			assert.True(t, ExactMatch(ans.Text, rec.Answer), "record %s: answered %q, want %q", rec.ID, ans.Text, rec.Answer)
			assert.Equal(t, StopEOS, ans.Stop)
			assert.Equal(t, len(enc.Tok.Encode(ICRPrompt(rec.Context, rec.Question))), ans.PromptTokens)
		}
	}

	_, err = tr.TrainStep(nil)
	assert.ErrorContains(t, err, "no examples")
	_, err = NewICRTrainer(m, nil, cfg, 1)
	assert.Error(t, err)
	_, err = ICRAnswer(m, nil, enc, Record{ID: "long", Context: []string{string(make([]byte, 80))}, Question: "q", Answer: "a"}, gen)
	assert.ErrorContains(t, err, "positions")
}
