package perk

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

func TestParseCorpusKinds(t *testing.T) {
	k, err := ParseCorpusKinds("docs, qa,docs,icr")
	require.NoError(t, err)
	assert.Equal(t, []string{CorpusDocs, CorpusQA, CorpusICR}, k)
	_, err = ParseCorpusKinds("docs,books")
	assert.ErrorContains(t, err, `unknown corpus kind "books"`)
}

func TestPretrainCorpus(t *testing.T) {
	tok := byteTokenizer(t)
	enc := &Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	recs := tinyRecords(2)
	seqs, err := PretrainCorpus(enc, recs, []string{CorpusDocs, CorpusQA, CorpusICR}, 1)
	require.NoError(t, err)
	require.Len(t, seqs, 2*(3+1+1))

	str := func(s []int32) string { return tok.Decode(toInts(s)) }
	// Record 0: its three documents (numbered by a permutation), then the
	// closed-book question, then the ICR sequence.
	nums := map[string]bool{}
	for i, text := range recs[0].Context {
		s := str(seqs[i])
		require.Regexp(t, `^doc_[0-2]: `+text+`<\|endoftext\|>$`, s)
		nums[s[:5]] = true
	}
	assert.Len(t, nums, 3, "document numbers are a permutation")
	assert.Equal(t, Prompt(3, "x?")+" 0<|endoftext|>", str(seqs[3]))
	x, err := enc.EncodeICR(recs[0])
	require.NoError(t, err)
	assert.Equal(t, x.Seq.IDs, seqs[4])
	assert.Equal(t, Prompt(3, "x?")+" 7<|endoftext|>", str(seqs[8]))

	again, err := PretrainCorpus(enc, recs, []string{CorpusDocs, CorpusQA, CorpusICR}, 1)
	require.NoError(t, err)
	assert.Equal(t, seqs, again, "deterministic")

	// The support target format carries over to the question sequences.
	enc2 := *enc
	enc2.SupportTarget, enc2.MaxPositions = true, 0
	sup := []Record{{ID: "s", Context: []string{"a=1"}, Question: "a?", Answer: "1", Support: []string{"a=1"}}}
	seqs, err = PretrainCorpus(&enc2, sup, []string{CorpusQA}, 1)
	require.NoError(t, err)
	assert.Equal(t, Prompt(1, "a?")+" <support>a=1</support>\n<output>1</output><|endoftext|>", str(seqs[0]))

	enc.MaxPositions = 10
	_, err = PretrainCorpus(enc, recs, []string{CorpusQA}, 1)
	assert.ErrorContains(t, err, `record "r0"`)
	_, err = PretrainCorpus(enc, recs, nil, 1)
	assert.Error(t, err)
}

func TestPacker(t *testing.T) {
	seqs := [][]int32{{1, 2, 3}, {4}, {5, 6}, {7, 8, 9, 10, 11, 12}}
	p, err := NewPacker(seqs, 3)
	require.NoError(t, err)
	seen := map[int32]int{}
	total := 0
	for total < 2*12 {
		b := p.Next(5)
		require.NoError(t, b.Validate())
		// Within budget unless a single sequence is longer.
		if b.Len() > 5 {
			assert.Len(t, b.CuSeqlens, 2)
		}
		cu := b.CuSeqlens
		for s := 0; s+1 < len(cu); s++ {
			first := b.IDs[cu[s]]
			var want []int32
			for _, q := range seqs {
				if q[0] == first {
					want = q
				}
			}
			assert.Equal(t, want, b.IDs[cu[s]:cu[s+1]], "sequences are never cut")
		}
		for _, id := range b.IDs {
			seen[id]++
		}
		total += b.Len()
	}
	assert.Equal(t, 2, p.Epoch())
	for id := int32(1); id <= 12; id++ {
		assert.Equal(t, 2, seen[id], "every token once per epoch (id %d)", id)
	}
	q, err := NewPacker(seqs, 3)
	require.NoError(t, err)
	assert.Equal(t, q.Next(5), func() model.Batch { r, _ := NewPacker(seqs, 3); return r.Next(5) }())
	_, err = NewPacker(nil, 1)
	assert.Error(t, err)
	_, err = NewPacker([][]int32{{}}, 1)
	assert.Error(t, err)
}

// TestPretrainerLearns trains a tiny model from scratch on a few short
// sequences until it has memorised them, checking the optimiser, the
// schedule and that only next tokens within a sequence are targets.
func TestPretrainerLearns(t *testing.T) {
	tok := byteTokenizer(t)
	enc := &Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	seqs, err := PretrainCorpus(enc, tinyRecords(3), []string{CorpusDocs, CorpusQA}, 2)
	require.NoError(t, err)
	m, err := model.NewRandom(byteModelConfig(), cpu.New(), runtime.F32, model.RandomOptions{Seed: 3})
	require.NoError(t, err)
	cfg := OuterConfig{LR: 1e-2, Beta1: 0.9, Beta2: 0.98, Eps: 1e-8, WeightDecay: 0.01, Steps: 150, WarmupFrac: 0.1, ClipNorm: 1}
	pt, err := NewPretrainer(m, cfg)
	require.NoError(t, err)
	pk, err := NewPacker(seqs, 1)
	require.NoError(t, err)
	all := model.Batch{CuSeqlens: []int32{0}}
	for _, s := range seqs {
		all.IDs = append(all.IDs, s...)
		all.CuSeqlens = append(all.CuSeqlens, int32(len(all.IDs)))
	}
	before, err := pt.Loss(all)
	require.NoError(t, err)
	assert.InDelta(t, 5.55, before, 0.2, "≈ ln 257 at random init")
	var rep PretrainReport
	for pt.Step < cfg.Steps {
		rep, err = pt.TrainStep(pk.Next(128))
		require.NoError(t, err)
		assert.Equal(t, pt.Step, rep.Step)
		assert.InDelta(t, cfg.LR*cfg.Schedule(rep.Step-1), rep.LR, 1e-15)
		assert.Greater(t, rep.GradNorm, 0.0)
	}
	after, err := pt.Loss(all)
	require.NoError(t, err)
	assert.Less(t, after, 1.5, "loss %.3f → %.3f", before, after)

	_, err = NewPretrainer(nil, cfg)
	assert.Error(t, err)
	cfg.Steps = 0
	_, err = NewPretrainer(m, cfg)
	assert.Error(t, err)
}
