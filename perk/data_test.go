package perk

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
)

// byteTokenizerJSON is a byte-level tokenizer.json with the 256 byte
// tokens (id = byte value) and "<|endoftext|>" = 256.
func byteTokenizerJSON(t testing.TB) []byte {
	t.Helper()
	data, err := tokenizer.BuildWordLevel(nil, 0, 0)
	require.NoError(t, err)
	return data
}

func byteTokenizer(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Parse(byteTokenizerJSON(t))
	require.NoError(t, err)
	return tok
}

func TestParseRecords(t *testing.T) {
	good := `{"id": "a", "context": ["one", "two"], "question": "q?", "answer": "x", "support": ["one"]}

{"id": 7, "context": ["three"], "question": "q2", "answer": "y", "extra": 1}
`
	recs, err := ParseRecords("good.jsonl", strings.NewReader(good))
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, Record{ID: "a", Context: []string{"one", "two"}, Question: "q?", Answer: "x", Support: []string{"one"}}, recs[0])
	assert.Equal(t, "7", recs[1].ID)
	assert.Nil(t, recs[1].Support)

	for _, c := range []struct{ text, want string }{
		{`{"id": "a", "context": ["x"], "question": "q", "answer": "y"}` + "\n" + `{"id": "b", "question": "q", "answer": "y"}`, `bad.jsonl:2: record "b" has no context`},
		{`{"id": "a", "context": ["x"], "question": "q"}`, `bad.jsonl:1: record "a" has no answer`},
		{`{"id": "a", "context": [], "question": "q", "answer": "y"}`, `bad.jsonl:1: record "a": empty context`},
		{`{"id": "a", "context": ["x", " "], "question": "q", "answer": "y"}`, `bad.jsonl:1: record "a": context segment 1 is empty`},
		{`{"id": "a", "context": ["x"], "question": "q", "answer": ""}`, `bad.jsonl:1: record "a": empty answer`},
		{`{"context": ["x"], "question": "q", "answer": "y"}`, `bad.jsonl:1: record has no id`},
		{"\n\n{\"id\": \"a\", \"context\": [\"x\"], \"question\": \"q\", \"answer\": \"y\"", `bad.jsonl:3: invalid record`},
		{`{"id": "a", "context": "x", "question": "q", "answer": "y"}`, `bad.jsonl:1: invalid record`},
		{`{"id": "a", "context": ["x"], "question": "q", "answer": "y"} {}`, `bad.jsonl:1: invalid record: more than one`},
		{``, `bad.jsonl: no records`},
	} {
		_, err := ParseRecords("bad.jsonl", strings.NewReader(c.text))
		require.Error(t, err, c.text)
		assert.Contains(t, err.Error(), c.want)
	}
	_, err = ReadRecords(filepath.Join(t.TempDir(), "missing.jsonl"))
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestOnBadRecord(t *testing.T) {
	text := `{"id": "a", "context": ["x"], "question": "q", "answer": "y"}
not json
{"id": "b", "context": ["x"], "question": "q"}

{"id": "c", "context": ["z"], "question": "q", "answer": "w", "meta": {"tokens": 3}}
{"id": "d", "context": ["z"], "question": "q", "answer": "w", "meta": {"tokens": -1}}
`
	path := filepath.Join(t.TempDir(), "mixed.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o644))

	stop, err := ParseOnBadRecord("stop")
	require.NoError(t, err)
	_, err = ReadRecordsWith(path, stop)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+":2: invalid record")

	var skipped []string
	skip, err := ParseOnBadRecord("skip")
	require.NoError(t, err)
	skip.Skipped = func(err error) { skipped = append(skipped, err.Error()) }
	recs, err := ReadRecordsWith(path, skip)
	require.NoError(t, err)
	require.Len(t, recs, 3, "the plain reader ignores meta, so d is good")
	assert.Equal(t, []string{"a", "c", "d"}, []string{recs[0].ID, recs[1].ID, recs[2].ID})
	require.Len(t, skipped, 2)
	assert.Contains(t, skipped[0], path+":2: invalid record")
	assert.Contains(t, skipped[1], path+`:3: record "b" has no answer`)

	skipped = nil
	ev, err := ReadEvalRecordsWith(path, skip)
	require.NoError(t, err)
	require.Len(t, ev, 2)
	assert.Equal(t, "c", ev[1].ID)
	assert.Equal(t, 3, *ev[1].Meta.Tokens)
	require.Len(t, skipped, 3)
	assert.Contains(t, skipped[2], path+`:6: record "d": meta: tokens -1`)

	_, err = ReadEvalRecordsWith(path, stop)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path+":2:")

	all := filepath.Join(t.TempDir(), "allbad.jsonl")
	require.NoError(t, os.WriteFile(all, []byte("{}\n[]\n"), 0o644))
	_, err = ReadRecordsWith(all, skip)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no valid records (2 bad lines skipped)")

	_, err = ParseOnBadRecord("ignore")
	require.Error(t, err)
}

func TestSupportTargetWithoutSupport(t *testing.T) {
	// A record with no support (a student-records aggregate question,
	// whose support would be every record) is encoded with an empty
	// support block instead of failing, in both modes; with support, and
	// without the support target, nothing changes.
	tok := byteTokenizer(t)
	enc := &Encoder{Tok: tok, EOS: 256, Vocab: 257, SupportTarget: true}
	rec := Record{ID: "avg", Context: []string{"Student <1>, Grade: 40", "Student <2>, Grade: 60"},
		Question: "What is the average grade of all students?", Answer: "50.0"}
	const empty = "<support></support>\n<output>50.0</output>"
	for _, sup := range [][]string{nil, {}} {
		rec.Support = sup
		target, err := enc.Target(rec)
		require.NoError(t, err)
		assert.Equal(t, empty, target)

		ex, err := enc.Encode(rec, nil)
		require.NoError(t, err)
		outer := tok.Decode(toInts(ex.Outer.IDs[:len(ex.Outer.IDs)-1]))
		assert.Equal(t, Prompt(2, rec.Question)+" "+empty, outer)
		assert.Equal(t, int32(256), ex.Outer.IDs[len(ex.Outer.IDs)-1], "EOS ends the target")
		assert.Equal(t, len(tok.Encode(Prompt(2, rec.Question))), ex.PromptLen)

		x, err := enc.EncodeICR(rec)
		require.NoError(t, err)
		assert.Equal(t, " "+empty, tok.Decode(toInts(x.Seq.IDs[x.PromptLen:len(x.Seq.IDs)-1])))
	}

	// With a support, and without the support target: as before.
	rec.Support = []string{"Student <1>, Grade: 40", "Student <2>, Grade: 60"}
	target, err := enc.Target(rec)
	require.NoError(t, err)
	assert.Equal(t, "<support>Student <1>, Grade: 40\nStudent <2>, Grade: 60</support>\n<output>50.0</output>", target)
	enc.SupportTarget = false
	for _, sup := range [][]string{nil, rec.Support} {
		rec.Support = sup
		target, err = enc.Target(rec)
		require.NoError(t, err)
		assert.Equal(t, "50.0", target)
	}
}

func TestEncode(t *testing.T) {
	tok := byteTokenizer(t)
	enc := &Encoder{Tok: tok, EOS: 256, Vocab: 257, MaxPositions: 64}
	rec := Record{ID: "r1", Context: []string{"ab", "cde"}, Question: "Q?", Answer: "z", Support: []string{"ab"}}
	ex, err := enc.Encode(rec, nil)
	require.NoError(t, err)
	ids := func(s string) []int32 {
		var out []int32
		for _, b := range []byte(s) {
			out = append(out, int32(b))
		}
		return out
	}
	want := append(append(ids("doc_0: ab"), 256), append(ids("doc_1: cde"), 256)...)
	assert.Equal(t, want, ex.Segments.IDs)
	assert.Equal(t, []int32{0, 10, 21}, ex.Segments.CuSeqlens)
	assert.Equal(t, []int{6, 6}, ex.Prefix)
	assert.Equal(t, 4+5, ex.NumTargets())
	prompt := "You have memorized 2 documents.\nQ?\nAnswer:"
	assert.Equal(t, append(ids(prompt+" z"), 256), ex.Outer.IDs)
	assert.Equal(t, len(prompt), ex.PromptLen)

	// Shuffled document numbers.
	ex, err = enc.Encode(rec, []int{1, 0})
	require.NoError(t, err)
	assert.Equal(t, append(append(ids("doc_1: ab"), 256), append(ids("doc_0: cde"), 256)...), ex.Segments.IDs)

	// The support target.
	enc.SupportTarget = true
	enc.MaxPositions = 0
	ex, err = enc.Encode(rec, nil)
	require.NoError(t, err)
	assert.Equal(t, append(ids(prompt+" <support>ab</support>\n<output>z</output>"), 256), ex.Outer.IDs)
	// A record with no support gets an empty support block.
	rec.Support = nil
	ex, err = enc.Encode(rec, nil)
	require.NoError(t, err)
	assert.Equal(t, append(ids(prompt+" <support></support>\n<output>z</output>"), 256), ex.Outer.IDs)
	rec.Support = []string{"ab"}
	enc.SupportTarget = false

	// Too long for the model.
	enc.MaxPositions = 12
	_, err = enc.Encode(Record{ID: "long", Context: []string{"abcdefgh"}, Question: "q", Answer: "a"}, nil)
	require.ErrorContains(t, err, `record "long": context segment 0 has 16 tokens, more than the model's 12 positions`)
	enc.MaxPositions = 40
	_, err = enc.Encode(Record{ID: "longq", Context: []string{"a"}, Question: "q", Answer: "a"}, nil)
	require.ErrorContains(t, err, `record "longq": the question sequence has`)
	_, err = enc.Encode(Record{ID: "e", Context: []string{""}, Question: "q", Answer: "a"}, nil)
	require.ErrorContains(t, err, `record "e": context segment 0 is empty`)
	_, err = enc.Encode(Record{ID: "n", Context: []string{"a"}, Question: "q", Answer: "a"}, []int{0, 1})
	require.ErrorContains(t, err, `record "n": 2 document ids for 1 segments`)
}

func TestEOSToken(t *testing.T) {
	tok := byteTokenizer(t)
	dir := t.TempDir()
	id, err := EOSToken(tok, dir)
	require.NoError(t, err)
	assert.Equal(t, 256, id)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"eos_token": "<|im_end|>"}`), 0o644))
	_, err = EOSToken(tok, dir)
	require.ErrorContains(t, err, `no end-of-sequence token "<|im_end|>"`)
}

// tinyRecords returns n small records for the byte-level tokenizer.
func tinyRecords(n int) []Record {
	var out []Record
	for i := 0; i < n; i++ {
		out = append(out, Record{
			ID:       fmt.Sprintf("r%d", i),
			Context:  []string{fmt.Sprintf("cat %d mat", i), "dog on log", fmt.Sprintf("x=%d", i*7%10)},
			Question: "x?", Answer: fmt.Sprint(i * 7 % 10),
		})
	}
	return out
}

func TestLoadEncoder(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), byteTokenizerJSON(t), 0o644))
	gpt2 := model.Config{ModelType: model.GPT2, Vocab: 300, MaxPositions: 64}
	enc, err := LoadEncoder(dir, gpt2)
	require.NoError(t, err)
	assert.Equal(t, 256, enc.EOS)
	assert.Equal(t, 300, enc.Vocab)
	assert.Equal(t, 64, enc.MaxPositions, "GPT-2's learned positions bound a sequence")
	qwen := model.Config{ModelType: model.Qwen2, Vocab: 300, MaxPositions: 64}
	assert.Zero(t, NewEncoder(enc.Tok, enc.EOS, qwen).MaxPositions, "RoPE positions do not")

	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"eos_token": "<|im_end|>"}`), 0o644))
	_, err = LoadEncoder(dir, gpt2)
	require.ErrorContains(t, err, `no end-of-sequence token "<|im_end|>"`)
	_, err = LoadEncoder(t.TempDir(), gpt2)
	require.Error(t, err)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
