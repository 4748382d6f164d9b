package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/perk/tasks"
)

const qwenTokenizer = "../../nn/tokenizer/testdata/qwen3-tokenizer.json.gz"

func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	return out.String(), errb.String(), err
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestUsage(t *testing.T) {
	_, stderr, err := runCLI(t)
	require.ErrorIs(t, err, errUsage)
	assert.Contains(t, stderr, "usage: perk-data COMMAND")
	for _, c := range []string{"babilong", "needle", "students", "convert", "help"} {
		assert.Contains(t, stderr, "\n  "+c)
	}
	stdout, _, err := runCLI(t, "help")
	require.NoError(t, err)
	assert.Contains(t, stdout, "usage: perk-data COMMAND")

	_, _, err = runCLI(t, "shuffle")
	assert.EqualError(t, err, `unknown command "shuffle" (want babilong, needle, students, convert or help)`)

	// A command with no arguments prints its usage.
	_, stderr, err = runCLI(t, "babilong")
	require.ErrorIs(t, err, errUsage)
	assert.Contains(t, stderr, "usage: perk-data babilong --task")
}

func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, c := range commands {
		stdout, _, err := runCLI(t, c.name, "--help")
		require.ErrorIs(t, err, pflag.ErrHelp)
		via, _, _ := runCLI(t, "help", c.name)
		assert.Equal(t, stdout, via)
		fs := pflag.NewFlagSet(c.name, pflag.ContinueOnError)
		c.flags(fs)
		n := 0
		fs.VisitAll(func(f *pflag.Flag) {
			n++
			assert.Contains(t, stdout, "--"+f.Name, "%s --%s", c.name, f.Name)
			assert.Greater(t, len(f.Usage), 20, "%s --%s needs a description", c.name, f.Name)
		})
		assert.GreaterOrEqual(t, n, 5, c.name)
	}
}

func TestBabiLongCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "train.jsonl")
	args := []string{"babilong", "--task", "qa2", "--tokens", "2048", "--n", "120", "--depths", "0,0.25,0.5,0.75,1", "--seed", "1", "-o", out}
	_, stderr, err := runCLI(t, args...)
	require.NoError(t, err)
	assert.Contains(t, stderr, "perk-data: 12/120 records (10%)", "progress for large n")
	assert.Contains(t, stderr, "perk-data: 120/120 records (100%)")
	assert.Contains(t, stderr, "wrote 120 records")
	assert.Equal(t, []string{"train.jsonl"}, dirEntries(t, dir), "no temporary file left")
	st, err := os.Stat(out)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	recs, err := perk.ReadRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 120)
	for i, r := range recs {
		assert.Equal(t, "babilong-qa2-"+strconv.Itoa(i), r.ID)
		assert.Len(t, r.Support, 2)
		total := 0
		for _, s := range r.Context {
			n := tasks.ApproxCounter{}.Count(s)
			assert.LessOrEqual(t, n, tasks.DefaultSegmentTokens)
			total += n
		}
		assert.LessOrEqual(t, total, 2048)
		assert.Regexp(t, `^Where is the \w+\?$`, r.Question)
	}

	// The same flags give the same bytes, whatever the worker count, and
	// the same as the library.
	first, err := os.ReadFile(out)
	require.NoError(t, err)
	_, _, err = runCLI(t, append(args, "--workers", "1", "-q")...)
	require.NoError(t, err)
	again, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, first, again)
	g, err := tasks.NewBabiLong(tasks.BabiLongOptions{Options: tasks.Options{Tokens: 2048, Seed: 1, Depths: []float64{0, 0.25, 0.5, 0.75, 1}}, Task: "qa2"})
	require.NoError(t, err)
	var lib bytes.Buffer
	require.NoError(t, tasks.Run(g, 120, 2, func(it tasks.Item) error { return tasks.WriteItems(&lib, []tasks.Item{it}) }))
	assert.Equal(t, lib.Bytes(), first)
}

// metaTokens is the context length of a record as c counts it, the sum of
// its segments' counts.
func metaTokens(r perk.Record, c tasks.Counter) int {
	total := 0
	for _, s := range r.Context {
		total += c.Count(s)
	}
	return total
}

func TestGeneratedMeta(t *testing.T) {
	// Every generated record has "meta": tokens is the context length as
	// counted, depth the --depths value its support was placed at, left
	// out when the placement was random; perk.ReadEvalRecords reads it.
	dir := t.TempDir()
	depths := []float64{0, 0.25, 0.5, 0.75, 1}
	qwen, err := loadCounter(qwenTokenizer)
	require.NoError(t, err)
	for _, c := range []struct {
		args      []string
		counter   tasks.Counter
		depths    []float64
		supported bool // every record has a support
	}{
		{[]string{"babilong", "--task", "qa2", "--tokens", "2048", "--n", "10", "--depths", "0,0.25,0.5,0.75,1"}, tasks.ApproxCounter{}, depths, true},
		{[]string{"babilong", "--task", "qa1", "--tokens", "1024", "--n", "6"}, tasks.ApproxCounter{}, nil, true},
		{[]string{"needle", "--kind", "multiquery", "--tokens", "1024", "--n", "6", "--depths", "0,0.25,0.5,0.75,1", "--tokenizer", qwenTokenizer, "--segment-tokens", "64"}, qwen, depths, true},
		{[]string{"students", "--query", "aggregate", "--tokens", "1024", "--n", "30", "--depths", "0,0.25,0.5,0.75,1"}, tasks.ApproxCounter{}, depths, false},
	} {
		out := filepath.Join(dir, "meta.jsonl")
		_, _, err := runCLI(t, append(c.args, "-q", "-o", out)...)
		require.NoError(t, err, c.args)
		recs, err := perk.ReadEvalRecords(out)
		require.NoError(t, err, c.args)
		withDepth, without := 0, 0
		for i, r := range recs {
			require.NotNil(t, r.Meta.Tokens, r.ID)
			assert.Equal(t, metaTokens(r.Record, c.counter), *r.Meta.Tokens, "%s: meta.tokens", r.ID)
			if len(c.depths) > 0 && len(r.Support) > 0 {
				require.NotNil(t, r.Meta.Depth, r.ID)
				assert.Equal(t, c.depths[i%len(c.depths)], *r.Meta.Depth, "%s: meta.depth", r.ID)
				withDepth++
			} else {
				assert.Nil(t, r.Meta.Depth, "%s: %s", r.ID, r.Question)
				without++
			}
		}
		switch {
		case len(c.depths) == 0:
			assert.Zero(t, withDepth, c.args)
		case c.supported:
			assert.Equal(t, len(recs), withDepth, c.args)
		default:
			assert.Positive(t, withDepth, c.args)
			assert.Positive(t, without, "%v: average-grade questions have no support and no depth", c.args)
		}
	}

	// Converted records have no meta.
	_, _, err = runCLI(t, "convert", "--from", "babilong", "../../perk/tasks/testdata/babilong_qa2.jsonl", "-q", "-o", filepath.Join(dir, "conv.jsonl"))
	require.NoError(t, err)
	data, err := os.ReadFile(filepath.Join(dir, "conv.jsonl"))
	require.NoError(t, err)
	assert.NotContains(t, string(data), `"meta"`)
}

func TestNeedleAndStudentsCommands(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		id   string
	}{
		{[]string{"needle", "--kind", "multivalue", "--needles", "3", "--tokens", "1024", "--n", "5"}, "needle-multivalue-"},
		{[]string{"needle", "--tokens", "1024", "--n", "5", "--segment-tokens", "64"}, "needle-single-"},
		{[]string{"students", "--query", "aggregate", "--tokens", "1024", "--n", "5"}, "students-aggregate-"},
		{[]string{"students", "--tokens", "1024", "--n", "5", "--tokenizer", qwenTokenizer, "--segment-tokens", "64"}, "students-mixed-"},
	} {
		out := filepath.Join(dir, "out.jsonl")
		stdout, stderr, err := runCLI(t, append(c.args, "-o", out)...)
		require.NoError(t, err, c.args)
		assert.Empty(t, stdout)
		assert.NotContains(t, stderr, "records (10%)", "no progress for small n")
		recs, err := perk.ReadRecords(out)
		require.NoError(t, err)
		require.Len(t, recs, 5)
		for _, r := range recs {
			assert.True(t, strings.HasPrefix(r.ID, c.id), r.ID)
			if r.Question != "What is the average grade of all students?" {
				assert.NotEmpty(t, r.Support, r.ID)
			}
		}
	}
	// -o - writes to stdout.
	stdout, stderr, err := runCLI(t, "needle", "--tokens", "512", "--n", "2", "-q", "-o", "-")
	require.NoError(t, err)
	assert.Empty(t, stderr)
	recs, err := perk.ParseRecords("stdout", strings.NewReader(stdout))
	require.NoError(t, err)
	assert.Len(t, recs, 2)
}

func TestTokenizerFlag(t *testing.T) {
	out := filepath.Join(t.TempDir(), "q.jsonl")
	_, _, err := runCLI(t, "babilong", "--task", "qa1", "--tokens", "1024", "--n", "3", "--segment-tokens", "32", "--tokenizer", qwenTokenizer, "-o", out)
	require.NoError(t, err)
	recs, err := perk.ReadRecords(out)
	require.NoError(t, err)
	c, err := loadCounter(qwenTokenizer)
	require.NoError(t, err)
	for _, r := range recs {
		for _, s := range r.Context {
			assert.LessOrEqual(t, c.Count(s), 32, "%q", s)
		}
	}
	_, _, err = runCLI(t, "babilong", "--task", "qa1", "--tokenizer", "missing.json", "-o", out)
	assert.ErrorContains(t, err, "babilong: --tokenizer:")
}

func TestConvertCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "qa2.jsonl")
	_, stderr, err := runCLI(t, "convert", "--from", "babilong", "../../perk/tasks/testdata/babilong_qa2.jsonl", "-o", out)
	require.NoError(t, err)
	assert.Contains(t, stderr, ": 2 records written to "+out)
	recs, err := perk.ReadRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, "17", recs[0].ID)
	assert.Equal(t, "babilong_qa2-1", recs[1].ID)
	assert.Equal(t, "garden", recs[0].Answer)

	out = filepath.Join(dir, "students.jsonl")
	_, _, err = runCLI(t, "convert", "--from", "students", "--id-prefix", "sr", "../../perk/tasks/testdata/students_recall.json", "-o", out, "-q")
	require.NoError(t, err)
	recs, err = perk.ReadRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 5)
	assert.Equal(t, "sr-0-0", recs[0].ID)
	assert.Len(t, recs[0].Context, 6)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"convert", "x.json", "-o", out}, "convert: --from is required (babilong or students)"},
		{[]string{"convert", "--from", "gorilla", "x.json", "-o", out}, `convert: unknown --from "gorilla" (want babilong or students)`},
		{[]string{"convert", "--from", "babilong", "-o", out}, "convert: want one input file, got 0 arguments"},
		{[]string{"convert", "--from", "babilong", "x.json"}, "convert: -o/--output is required"},
		{[]string{"convert", "--from", "babilong", "missing.json", "-o", out}, "convert: input: stat missing.json"},
	} {
		_, _, err := runCLI(t, c.args...)
		require.Error(t, err, c.args)
		assert.Contains(t, err.Error(), c.want)
	}
}

func TestFailedRunKeepsOldOutput(t *testing.T) {
	// A conversion that fails after the output was opened leaves the old
	// file as it was and no temporary file behind.
	dir := t.TempDir()
	out := filepath.Join(dir, "out.jsonl")
	require.NoError(t, os.WriteFile(out, []byte("old\n"), 0o644))
	bad := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(bad, []byte(`{"context": "x", "question": "q"}`), 0o644))
	_, _, err := runCLI(t, "convert", "--from", "babilong", bad, "-o", out)
	require.ErrorContains(t, err, `bad.json:1: item 0: record "bad-0": no "answer"`)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, "old\n", string(data))
	assert.ElementsMatch(t, []string{"out.jsonl", "bad.json"}, dirEntries(t, dir))
}

func TestErrorsBeforeWork(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "o.jsonl")
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	huge := "1000000000" // would take hours: every error below must come first
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"babilong", "--n", huge, "-o", out}, "babilong: --task is required (one of qa1, qa2, qa3, qa4, qa5)"},
		{[]string{"babilong", "--task", "qa7", "--n", huge, "-o", out}, `babilong: unknown BabiLong task "qa7"`},
		{[]string{"babilong", "--task", "qa1", "--n", huge}, "babilong: -o/--output is required"},
		{[]string{"babilong", "--task", "qa3", "--tokens", "200", "--n", huge, "-o", out}, "babilong: a 200-token context is shorter than the 30 qa3 facts"},
		{[]string{"babilong", "--task", "qa3", "--segment-tokens", "8", "--n", huge, "-o", out}, "babilong: segment limit of 8 tokens is smaller than the longest of the 30 qa3 facts"},
		{[]string{"babilong", "--task", "qa1", "--depths", "0,1.5", "--n", huge, "-o", out}, "babilong: --depths: depth 1.5 is outside [0, 1]"},
		{[]string{"babilong", "--task", "qa1", "--depths", "0,x", "-o", out}, `babilong: invalid argument "0,x" for "--depths" flag`},
		{[]string{"babilong", "--task", "qa1", "--n", "0", "-o", out}, "babilong: --n 0: must be at least 1"},
		{[]string{"babilong", "--task", "qa1", "--segment-tokens", "0", "-o", out}, "babilong: --segment-tokens 0: must be at least 1"},
		{[]string{"babilong", "--task", "qa1", "--tokens", "0", "-o", out}, "babilong: context length 0 tokens: must be at least 1"},
		{[]string{"babilong", "--task", "qa1", "extra", "-o", out}, `babilong: unexpected arguments ["extra"]`},
		{[]string{"babilong", "--task", "qa1", "--bogus", "-o", out}, "babilong: unknown flag: --bogus (see perk-data babilong --help)"},
		{[]string{"needle", "--kind", "triple", "--n", huge, "-o", out}, `needle: unknown needle kind "triple"`},
		{[]string{"students", "--query", "sort", "--n", huge, "-o", out}, `students: unknown student-records query "sort"`},
		{[]string{"babilong", "--task", "qa1", "--n", huge, "-o", filepath.Join(file, "o.jsonl")}, "babilong: output directory " + file},
		{[]string{"babilong", "--task", "qa1", "--n", huge, "-o", filepath.Join(file, "sub", "o.jsonl")}, "babilong: output directory " + filepath.Join(file, "sub")},
		{[]string{"needle", "--n", huge, "-o", dir}, "needle: output " + dir + " is a directory"},
	} {
		start := time.Now()
		_, _, err := runCLI(t, c.args...)
		require.Error(t, err, c.args)
		assert.Contains(t, err.Error(), c.want, c.args)
		assert.Less(t, time.Since(start), 5*time.Second, c.args)
	}
	assert.ElementsMatch(t, []string{"file"}, dirEntries(t, dir), "nothing written")
}

func TestUnwritableDirectory(t *testing.T) {
	// A read-only directory (root ignores the mode; /proc refuses even
	// root).
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		if st, err := os.Stat("/proc/self"); err != nil || !st.IsDir() {
			t.Skip("root can write to read-only directories and there is no /proc")
		}
		dir = "/proc/self"
	} else {
		require.NoError(t, os.Chmod(dir, 0o555))
		defer os.Chmod(dir, 0o755)
	}
	start := time.Now()
	_, _, err := runCLI(t, "babilong", "--task", "qa1", "--n", "1000000000", "-o", filepath.Join(dir, "o.jsonl"))
	assert.ErrorContains(t, err, "babilong: cannot write to output directory "+dir)
	assert.Less(t, time.Since(start), 5*time.Second)
}

// TestOutputCreatesDirectories: -o into directories that do not exist yet
// creates them, as the other commands do for --out.
func TestOutputCreatesDirectories(t *testing.T) {
	out := filepath.Join(t.TempDir(), "data", "qa1", "train.jsonl")
	_, _, err := runCLI(t, "babilong", "--task", "qa1", "--tokens", "256", "--n", "2", "-q", "-o", out)
	require.NoError(t, err)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.Equal(t, 2, strings.Count(string(data), "\n"))
}

// TestConvertOnBadRecord: an item that is valid JSON but not a valid item
// stops the conversion with file:line, or with --on-bad-record skip is
// reported and left out; a students item with one bad question is left out
// whole.
func TestConvertOnBadRecord(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "mixed.jsonl")
	require.NoError(t, os.WriteFile(in, []byte(`{"context": "Mary went to the garden.", "question": "Where is Mary?", "answer": "garden"}
{"context": "John went to the hall.", "question": "Where is John?"}
{"context": "Sandra went to the office.", "question": "Where is Sandra?", "answer": "office"}
`), 0o644))
	out := filepath.Join(dir, "out.jsonl")
	_, _, err := runCLI(t, "convert", "--from", "babilong", in, "-o", out)
	require.ErrorContains(t, err, in+`:2: item 1: record "mixed-1": no "answer"`)

	_, stderr, err := runCLI(t, "convert", "--from", "babilong", "--on-bad-record", "skip", in, "-o", out)
	require.NoError(t, err)
	assert.Contains(t, stderr, "perk-data: skipping "+in+`:2: item 1: record "mixed-1": no "answer"`)
	assert.Contains(t, stderr, "2 records written to "+out+" (1 bad items skipped)")
	recs, err := perk.ReadRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 2)
	assert.Equal(t, []string{"mixed-0", "mixed-2"}, []string{recs[0].ID, recs[1].ID})

	students := filepath.Join(dir, "students.jsonl")
	row := `{"Student Id": "1", "Student Name": "A", "Year": "2", "School": "S", "Major": "M", "Grade": "70"}`
	require.NoError(t, os.WriteFile(students, []byte(`{"database": [`+row+`], "questions": [{"question": "q1", "answer": "a"}, {"question": "q2"}]}
{"database": [`+row+`], "questions": [{"question": "q3", "answer": "b"}]}
`), 0o644))
	_, _, err = runCLI(t, "convert", "--from", "students", "--on-bad-record", "skip", students, "-o", out, "-q")
	require.NoError(t, err)
	recs, err = perk.ReadRecords(out)
	require.NoError(t, err)
	require.Len(t, recs, 1, "the first item is left out whole")
	assert.Equal(t, "q3", recs[0].Question)

	_, _, err = runCLI(t, "convert", "--from", "babilong", "--on-bad-record", "drop", in, "-o", out)
	require.ErrorContains(t, err, `--on-bad-record "drop": want stop or skip`)
	allBad := filepath.Join(dir, "allbad.jsonl")
	require.NoError(t, os.WriteFile(allBad, []byte(`{"question": "q"}`+"\n"), 0o644))
	_, _, err = runCLI(t, "convert", "--from", "babilong", "--on-bad-record", "skip", allBad, "-o", out, "-q")
	require.ErrorContains(t, err, "no valid items (1 skipped)")
}
