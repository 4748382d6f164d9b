package tasks

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/perk"
)

func TestSplitSentences(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   \n ", nil},
		{"One. Two! Three? Four", []string{"One.", "Two!", "Three?", "Four"}},
		{"He met Dr. Hale and Mr. J. R. Smith at 3.5 miles. Then he left.", []string{"He met Dr. Hale and Mr. J. R. Smith at 3.5 miles.", "Then he left."}},
		{`She said "Stop." Then she left... Why?! Fine.`, []string{`She said "Stop."`, "Then she left...", "Why?!", "Fine."}},
		{"A list:\n- one item\n- two items.  Next  sentence  keeps  its  spaces.", []string{"A list:", "- one item", "- two items.", "Next  sentence  keeps  its  spaces."}},
		{"Visit example.com today. (It is free.) Done.", []string{"Visit example.com today.", "(It is free.)", "Done."}},
		{"e.g. this is one sentence. Ünïcödé — fine. 終わり。", []string{"e.g. this is one sentence.", "Ünïcödé — fine.", "終わり。"}},
	} {
		assert.Equal(t, c.want, SplitSentences(c.in), "%q", c.in)
	}
}

func TestSegment(t *testing.T) {
	c := ApproxCounter{}
	text := "First sentence here. Second one is a bit longer than the first.\nThird line. Fourth."
	segs, err := Segment(text, 1000, c)
	require.NoError(t, err)
	assert.Equal(t, []string{text}, segs, "everything fits one segment, white space kept")

	segs, err = Segment(text, 12, c)
	require.NoError(t, err)
	assert.Equal(t, []string{"First sentence here.", "Second one is a bit longer than the first.", "Third line. Fourth."}, segs)

	// A sentence longer than the limit is cut between words, a word longer
	// than the limit between characters; nothing is lost.
	long := "Short. " + strings.Repeat("word ", 30) + "Supercalifragilisticexpialidocious!"
	segs, err = Segment(long, 4, c)
	require.NoError(t, err)
	for _, s := range segs {
		assert.LessOrEqual(t, c.Count(s), 4, "%q", s)
	}
	assert.Equal(t, strings.Join(strings.Fields(long), ""), strings.ReplaceAll(strings.Join(segs, ""), " ", ""))
	assert.Equal(t, "Short.", segs[0])

	// An exact tokenizer: every segment within the limit.
	q := qwenCounter(t)
	text = strings.Repeat("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! ", 40)
	for _, limit := range []int{1, 3, 10, 50} {
		segs, err := Segment(text, limit, q)
		require.NoError(t, err)
		for _, s := range segs {
			assert.LessOrEqual(t, q.Count(s), limit, "%q", s)
		}
		assert.Equal(t, strings.Join(strings.Fields(text), ""), strings.ReplaceAll(strings.Join(segs, ""), " ", ""), "limit %d", limit)
	}

	segs, err = Segment(" \n ", 10, c)
	require.NoError(t, err)
	assert.Empty(t, segs)
	_, err = Segment("x", 0, c)
	assert.EqualError(t, err, "segment limit 0 tokens: must be at least 1")
	_, err = Segment("ab", 1, CounterFunc(func(s string) int { return 2 * len(s) }))
	assert.ErrorContains(t, err, `the character "a" alone counts more than the segment limit of 1 tokens`)
}

func TestApproxCounter(t *testing.T) {
	c := ApproxCounter{}
	assert.Equal(t, 0, c.Count(""))
	assert.Equal(t, 1, c.Count("a"))
	assert.Equal(t, 1, c.Count("abcd"))
	assert.Equal(t, 2, c.Count("abcde"))
}

func TestConvertBabiLongSamples(t *testing.T) {
	for _, c := range []struct {
		file string
		ids  []string
	}{
		{"babilong_qa1.json", []string{"babilong_qa1-0"}},
		{"babilong_qa2.jsonl", []string{"17", "babilong_qa2-1"}},
		{"babilong_release.json", []string{"babilong_release-0"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			for _, limit := range []int{48, 256} {
				recs, err := ReadBabiLong(filepath.Join("testdata", c.file), ConvertOptions{SegmentTokens: limit})
				require.NoError(t, err)
				require.Len(t, recs, len(c.ids))
				raw, err := os.ReadFile(filepath.Join("testdata", c.file))
				require.NoError(t, err)
				for k, r := range recs {
					assert.Equal(t, c.ids[k], r.ID)
					checkRecord(t, r, ApproxCounter{}, 1<<20, limit)
					ans, sup, err := solveBabi(r)
					require.NoError(t, err)
					assert.Equal(t, ans, r.Answer, r.ID)
					if r.Support != nil {
						assert.Equal(t, sup, r.Support, r.ID)
					}
					// Nothing of the text is lost or reordered.
					for _, s := range r.Context {
						assert.Contains(t, strings.ReplaceAll(string(raw), `\n`, "\n"), s)
					}
				}
			}
		})
	}
	// A context list keeps a chunk that fits as it is and cuts one that
	// does not.
	recs, err := ReadBabiLong("testdata/babilong_qa2.jsonl", ConvertOptions{})
	require.NoError(t, err)
	assert.Len(t, recs[0].Context, 2, "chunks that fit are kept")
	assert.True(t, strings.HasPrefix(recs[0].Context[1], "buildings by the river."), "even when cut mid-sentence")
	assert.Len(t, recs[1].Context, 3, "a long chunk is cut at sentence boundaries")
	assert.Equal(t, "Few people keep bees in straw hives now, but the stone shelves can still be seen in many old garden walls. Sandra Event 1: Sandra went to the garden.", recs[1].Context[2])
	assert.Equal(t, []string{"Daniel Event 2: Daniel went back to the hallway.", "Daniel Event 3: Daniel dropped the apple."}, recs[1].Support, "support string split at line breaks")
}

func TestConvertStudentsSamples(t *testing.T) {
	recs, err := ReadStudents("testdata/students_recall.json", ConvertOptions{})
	require.NoError(t, err)
	require.Len(t, recs, 5, `the "..." placeholder is skipped`)
	assert.Equal(t, "students_recall-0-0", recs[0].ID)
	assert.Equal(t, "Student <2718281>, Name: Oscar Lambert Jr., Year: Freshman, School: School of Engineering, Major: Civil Engineering, Grade: 47", recs[0].Context[1], "numbers read as written")
	assert.Equal(t, "47", recs[2].Answer)
	assert.Equal(t, []string{recs[0].Context[3]}, recs[4].Support)
	assert.Nil(t, recs[0].Support)

	more, err := ReadStudents("testdata/students.jsonl", ConvertOptions{})
	require.NoError(t, err)
	require.Len(t, more, 7)
	assert.Equal(t, "db-7-0", more[0].ID)
	assert.Equal(t, "db-8-2", more[6].ID)
	assert.Equal(t, "51.0", more[6].Answer)
	for _, r := range append(recs, more...) {
		checkRecord(t, r, ApproxCounter{}, 1<<20, DefaultSegmentTokens)
		require.Len(t, r.Context, 6, "one database row per segment, in order")
		ans, _, err := solveStudents(r)
		require.NoError(t, err, r.Question)
		assert.Equal(t, ans, r.Answer, "%s: %s", r.ID, r.Question)
	}
}

func TestConvertGolden(t *testing.T) {
	// Pins the converted samples (update with PERK_UPDATE_GOLDEN=1).
	var buf bytes.Buffer
	for _, f := range []string{"babilong_qa1.json", "babilong_qa2.jsonl", "babilong_release.json"} {
		recs, err := ReadBabiLong(filepath.Join("testdata", f), ConvertOptions{})
		require.NoError(t, err)
		require.NoError(t, WriteRecords(&buf, recs))
	}
	for _, f := range []string{"students_recall.json", "students.jsonl"} {
		recs, err := ReadStudents(filepath.Join("testdata", f), ConvertOptions{})
		require.NoError(t, err)
		require.NoError(t, WriteRecords(&buf, recs))
	}
	path := "testdata/golden_converted.jsonl"
	if os.Getenv("PERK_UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(want), buf.String())
	back, err := perk.ReadRecords(path)
	require.NoError(t, err)
	assert.Len(t, back, 16)
}

func TestConvertErrors(t *testing.T) {
	babi := func(in string) error {
		_, err := ConvertBabiLong("in.json", strings.NewReader(in), ConvertOptions{})
		return err
	}
	stud := func(in string) error {
		_, err := ConvertStudents("in.json", strings.NewReader(in), ConvertOptions{})
		return err
	}
	row := `{"Student Id": "1", "Student Name": "A B", "Year": "Junior", "School": "S", "Major": "M", "Grade": "5"}`
	for _, c := range []struct {
		err  error
		want string
	}{
		{babi(""), "in.json: no items"},
		{babi("[]"), "in.json: no items"},
		{babi("{\"context\": \"x\",\n \"question\": \"q\", \"answer\": \"a\"}\n{\"question\": 1"), "in.json:3: invalid JSON"},
		{babi(`[{"context": "x", "question": "q", "answer": "a"},` + "\n" + `{"question": "q", "answer": "a"}]`), `in.json:2: item 1: record "record-1" has no context`},
		{babi(`{"context": 5, "question": "q", "answer": "a"}`), `item 0: record "record-0": context: want a string or a list of strings`},
		{babi(`{"context": "x", "answer": "a"}`), `item 0: record "record-0": no "question"`},
		{babi(`{"context": "x", "question": "q"}`), `item 0: record "record-0": no "answer"`},
		{babi(`{"context": "  ", "question": "q", "answer": "a"}`), `record "record-0": empty context`},
		{babi(`{"id": [1], "context": "x", "question": "q", "answer": "a"}`), `item 0: id: want a string or a number`},
		{babi(`{"context": "x", "question": "q", "answer": "a", "support": {}}`), `support: want a string or a list of strings`},
		{babi(`"just a string"`), `item 0: not a BabiLong object`},
		{stud(`{"questions": []}`), `"record-0": no database`},
		{stud(`{"database": [` + row + `]}`), `"record-0": no questions`},
		{stud(`{"database": [` + row + `], "questions": ["..."]}`), `"record-0": no questions`},
		{stud(`{"database": [{"Student Id": "1"}], "questions": []}`), `database row 0: no "Student Name"`},
		{stud(`{"database": [` + row + `], "questions": ["what?"]}`), `question 0: want an object {question, answer}`},
		{stud(`{"database": [` + row + `], "questions": [{"question": "q"}]}`), `question 0: no "answer"`},
		{stud(`{"database": [` + row + `], "questions": [{"question": "q", "answer": ""}]}`), `record "record-0-0": empty answer`},
	} {
		require.Error(t, c.err, c.want)
		assert.Contains(t, c.err.Error(), c.want)
	}
	_, err := ConvertStudents("in", strings.NewReader(`{"database": [`+row+`], "questions": [{"question": "q", "answer": "a"}]}`), ConvertOptions{SegmentTokens: 5})
	assert.ErrorContains(t, err, "database row 0 has 17 tokens, more than the segment limit of 5")
	_, err = ReadBabiLong("testdata/missing.json", ConvertOptions{})
	assert.ErrorContains(t, err, "convert: open testdata/missing.json")

	// A single question object instead of a list, numbers for ids.
	recs, err := ConvertStudents("in", strings.NewReader(`{"guid": 12, "database": [`+row+`], "question": {"question": "q", "answer": 3.50}}`), ConvertOptions{})
	require.NoError(t, err)
	assert.Equal(t, "12-0", recs[0].ID)
	assert.Equal(t, "3.50", recs[0].Answer)
}

func TestMarshalRecord(t *testing.T) {
	r := perk.Record{ID: "a<b>", Context: []string{"Student <1> & co", "two"}, Question: "q?", Answer: "x", Support: []string{"two"}}
	line, err := MarshalRecord(r)
	require.NoError(t, err)
	assert.Equal(t, `{"id":"a<b>","context":["Student <1> & co","two"],"question":"q?","answer":"x","support":["two"]}`+"\n", string(line))
	r.Support = nil
	line, err = MarshalRecord(r)
	require.NoError(t, err)
	assert.NotContains(t, string(line), "support")
	_, err = MarshalRecord(perk.Record{ID: "e", Context: []string{"x"}})
	assert.EqualError(t, err, `record "e": empty answer`)
	var buf bytes.Buffer
	require.NoError(t, WriteRecords(&buf, []perk.Record{r, r}))
	back, err := perk.ParseRecords("buf", &buf)
	require.NoError(t, err)
	assert.Equal(t, []perk.Record{r, r}, back)
}
