package perk

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

func TestExactMatch(t *testing.T) {
	for _, c := range []struct {
		response, reference string
		extracted, norm     string
		match               bool
	}{
		{"garden", "garden", "garden", "garden", true},
		{"  Garden.\n", "garden", "Garden.", "garden", true},
		{"The garden", "garden", "The garden", "garden", true},
		{"an apple a day", "apple day", "an apple a day", "apple day", true},
		{"<support>Daniel went to the garden.</support>\n<output>garden</output>", "garden", "garden", "garden", true},
		{"<support>x</support>\n<output> Hallway </output> trailing <output>no</output>", "hallway", "Hallway", "hallway", true},
		{"<output>kitchen", "kitchen", "kitchen", "kitchen", true}, // unclosed tag (length limit)
		{"<output>office</output>", "<output>office</output>", "office", "office", true},
		{"garden path", "garden", "garden path", "garden path", false},
		{"49.3", "49.3", "49.3", "493", true},
		{"49.3", "493", "49.3", "493", true}, // punctuation removal joins digits, on both sides
		{"Yes!", "yes", "Yes!", "yes", true},
		{"yes", "no", "yes", "yes", false},
		{"thesis", "sis", "thesis", "thesis", false}, // articles only as whole words
		{"", "x", "", "", false},
		{"Ms. Sarah Stewart DDS", "ms sarah stewart dds", "Ms. Sarah Stewart DDS", "ms sarah stewart dds", true},
		{"Straße", "STRASSE", "Straße", "straße", false}, // lower-casing only, no folding
		{"a\t  b\n\nc", "a b c", "a\t  b\n\nc", "b c", true},
	} {
		assert.Equal(t, c.extracted, ExtractAnswer(c.response), "extract %q", c.response)
		assert.Equal(t, c.norm, NormalizeAnswer(ExtractAnswer(c.response)), "normalise %q", c.response)
		assert.Equal(t, c.match, ExactMatch(c.response, c.reference), "match %q vs %q", c.response, c.reference)
	}
}

// naiveGreedy decodes by running the full forward over the whole sequence
// for every token.
func naiveGreedy(t *testing.T, m *model.Model, ad *model.Adapter, prompt []int, n, eos int) []int {
	t.Helper()
	seq := make([]int32, len(prompt))
	for i, id := range prompt {
		seq[i] = int32(id)
	}
	var out []int
	for len(out) < n {
		lg, err := m.Logits(model.Batch{IDs: seq}, ad, len(seq)-1, len(seq))
		require.NoError(t, err)
		next, err := argmax(hostValues(t, lg))
		require.NoError(t, err)
		if next == eos {
			break
		}
		out = append(out, next)
		seq = append(seq, int32(next))
	}
	return out
}

func TestGreedy(t *testing.T) {
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F64, model.RandomOptions{Seed: 4, Std: 0.5})
	require.NoError(t, err)
	ad, err := model.NewAdapter(m, model.LoRAConfig{R: 2, Alpha: 4, TargetModules: model.DefaultTargets(model.GPT2)}, 1)
	require.NoError(t, err)
	rng := newRNG(8)
	for _, x := range ad.Params().Tensors() {
		fillNormal(t, x, rng, 0.5)
	}
	prompt := []int{10, 200, 33, 4, 4, 90}
	for _, a := range []*model.Adapter{nil, ad} {
		want := naiveGreedy(t, m, a, prompt, 12, -1)
		g, err := Greedy(m, a, prompt, GenerateConfig{MaxNewTokens: 12, EOS: -1})
		require.NoError(t, err)
		assert.Equal(t, want, g.IDs)
		assert.Equal(t, StopMaxTokens, g.Stop)
		assert.Equal(t, len(prompt), g.PromptTokens)
		assert.Positive(t, g.Mem.PeakBytes)
		assert.Positive(t, g.Mem.LiveBytes)

		// Stop at an EOS the decoding first reaches after some tokens.
		first := -1
		for i, id := range want {
			if i > 0 && !slices.Contains(want[:i], id) {
				first = i
				break
			}
		}
		require.Positive(t, first, "degenerate decoding %v", want)
		eos := want[first]
		g, err = Greedy(m, a, prompt, GenerateConfig{MaxNewTokens: 12, EOS: eos})
		require.NoError(t, err)
		assert.Equal(t, want[:first], g.IDs)
		assert.Equal(t, StopEOS, g.Stop)
	}

	// GPT-2's position table bounds the sequence: the last token is still
	// predicted from the last position.
	maxPos := m.Config().MaxPositions
	long := make([]int, maxPos-2)
	g, err := Greedy(m, nil, long, GenerateConfig{MaxNewTokens: 10, EOS: -1})
	require.NoError(t, err)
	assert.Len(t, g.IDs, 3)
	assert.Equal(t, StopMaxPositions, g.Stop)

	for _, c := range []struct {
		prompt []int
		cfg    GenerateConfig
		want   string
	}{
		{make([]int, maxPos+1), GenerateConfig{MaxNewTokens: 1}, "more than the model's 64 positions"},
		{nil, GenerateConfig{MaxNewTokens: 1}, "empty prompt"},
		{[]int{1}, GenerateConfig{}, "max new tokens"},
		{[]int{1, 999}, GenerateConfig{MaxNewTokens: 1}, "outside the vocabulary"},
	} {
		_, err := Greedy(m, nil, c.prompt, c.cfg)
		assert.ErrorContains(t, err, c.want)
	}
}

// TestEngineAnswer checks that answering is test-time learning followed by
// greedy decoding from the training prompt without the context.
func TestEngineAnswer(t *testing.T) {
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F64, model.RandomOptions{Seed: 9, Std: 0.2})
	require.NoError(t, err)
	e, p, ds := trainSetup(t, m, false)
	rec := ds.Records[1]
	gen := GenerateConfig{MaxNewTokens: 5, EOS: ds.Encoder.EOS}
	a, err := e.Answer(p, ds.Encoder, rec, gen, 77)
	require.NoError(t, err)

	prompt := ds.Encoder.Tok.Encode(Prompt(len(rec.Context), rec.Question))
	assert.Equal(t, len(prompt), a.PromptTokens)
	ex, err := ds.Encoder.Encode(rec, nil)
	require.NoError(t, err)
	phi, losses, err := e.Adapt(p, ex, 77)
	require.NoError(t, err)
	assert.Equal(t, losses, a.InnerLosses)
	g, err := Greedy(m, phi, prompt, gen)
	require.NoError(t, err)
	assert.Equal(t, g.IDs, a.IDs)
	assert.Equal(t, ds.Encoder.Tok.DecodeSkipSpecial(g.IDs), a.Text)
	assert.Positive(t, a.AdaptPeakBytes)
	assert.Equal(t, adapterBytes(phi), a.AdapterBytes)
	assert.GreaterOrEqual(t, a.PeakBytes(), a.AdaptPeakBytes)

	// A record the encoder refuses is an error, not a panic.
	_, err = e.Answer(p, ds.Encoder, Record{ID: "bad", Question: "q", Answer: "a"}, gen, 1)
	assert.ErrorContains(t, err, "empty context")
	_, err = e.Answer(p, nil, rec, gen, 1)
	assert.ErrorContains(t, err, "no encoder")
}
