package tasks

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
)

var (
	qwenOnce sync.Once
	qwenTok  *tokenizer.Tokenizer
	qwenErr  error
)

// qwenCounter counts with the Qwen3 tokenizer of nn/tokenizer's test data.
func qwenCounter(t testing.TB) Counter {
	t.Helper()
	qwenOnce.Do(func() { qwenTok, qwenErr = tokenizer.Load("../../nn/tokenizer/testdata/qwen3-tokenizer.json.gz") })
	if qwenErr != nil {
		t.Skipf("Qwen3 tokenizer not available: %v", qwenErr)
	}
	return TokenizerCounter(qwenTok)
}

// babiGen, needleGen and studentsGen build generators or fail the test.
func babiGen(t testing.TB, o BabiLongOptions) *BabiLong {
	t.Helper()
	g, err := NewBabiLong(o)
	require.NoError(t, err)
	return g
}

func needleGen(t testing.TB, o NeedleOptions) *Needle {
	t.Helper()
	g, err := NewNeedle(o)
	require.NoError(t, err)
	return g
}

func studentsGen(t testing.TB, o StudentsOptions) *Students {
	t.Helper()
	g, err := NewStudents(o)
	require.NoError(t, err)
	return g
}

// checkRecord checks what every generated record must satisfy: it
// validates and reads back through perk.ParseRecords unchanged, every
// segment fits the limit, the context fits the budget, and the support
// sentences occur in the context.
func checkRecord(t testing.TB, r perk.Record, c Counter, tokens, limit int) int {
	t.Helper()
	require.NoError(t, r.Validate())
	line, err := MarshalRecord(r)
	require.NoError(t, err)
	back, err := perk.ParseRecords("rec", bytes.NewReader(line))
	require.NoError(t, err)
	require.Equal(t, []perk.Record{r}, back)
	total := 0
	for i, s := range r.Context {
		n := c.Count(s)
		require.LessOrEqual(t, n, limit, "%s segment %d", r.ID, i)
		require.Equal(t, s, strings.TrimSpace(s), "%s segment %d has outer white space", r.ID, i)
		total += n
	}
	require.LessOrEqual(t, total, tokens, r.ID)
	all := strings.Join(r.Context, "\n")
	for _, s := range r.Support {
		require.Contains(t, all, s, r.ID)
	}
	return total
}

// checkItem checks a generated item: its record as checkRecord does, and
// its meta: Tokens is the context length as c counts it (the sum of the
// segments' counts), and Depth is the requested depth (depth ≥ 0) when the
// record has a support to place there, nil otherwise. The item's JSONL
// line reads back through perk.ParseEvalRecords unchanged. It returns the
// context length.
func checkItem(t testing.TB, it Item, c Counter, tokens, limit int, depth float64) int {
	t.Helper()
	r := it.Record
	total := checkRecord(t, r, c, tokens, limit)
	require.NotNil(t, it.Meta.Tokens, "%s: meta.tokens", r.ID)
	require.Equal(t, total, *it.Meta.Tokens, "%s: meta.tokens is the counted context length", r.ID)
	if depth >= 0 && len(r.Support) > 0 {
		require.NotNil(t, it.Meta.Depth, "%s: meta.depth", r.ID)
		require.Equal(t, depth, *it.Meta.Depth, "%s: meta.depth is the requested depth", r.ID)
	} else {
		require.Nil(t, it.Meta.Depth, "%s: no meta.depth for a random placement", r.ID)
	}
	line, err := MarshalItem(it)
	require.NoError(t, err)
	back, err := perk.ParseEvalRecords("item", line)
	require.NoError(t, err)
	require.Equal(t, []perk.EvalRecord{{Record: r, Meta: it.Meta}}, back)
	return total
}

// depthOf is the depth requested for record i: depths[i mod len], or -1
// for none.
func depthOf(depths []float64, i int) float64 {
	if len(depths) == 0 {
		return -1
	}
	return depths[i%len(depths)]
}

func TestBabiLongAnswersByConstruction(t *testing.T) {
	for _, task := range BabiLongTasks {
		spec := babiSpecs[task]
		for _, facts := range []int{spec.minFacts, 0, min(spec.maxFacts, 60)} {
			t.Run(fmt.Sprintf("%s/facts=%d", task, facts), func(t *testing.T) {
				kinds := map[string]int{}
				for seed := uint64(1); seed <= 25; seed++ {
					tokens := 1024 + int(seed%4)*512
					depths := []float64{0, 0.3, 1}
					if seed%2 == 0 {
						depths = nil
					}
					g := babiGen(t, BabiLongOptions{Options: Options{Tokens: tokens, SegmentTokens: 64 + 64*int(seed%3), Seed: seed, Depths: depths}, Task: task, Facts: facts})
					for i := 0; i < 8; i++ {
						it, err := g.Item(i)
						require.NoError(t, err)
						r := it.Record
						checkItem(t, it, ApproxCounter{}, tokens, g.b.o.SegmentTokens, depthOf(depths, i))
						ans, sup, err := solveBabi(r)
						require.NoError(t, err, "%s: %s", r.ID, r.Question)
						require.Equal(t, ans, r.Answer, "%s: %s", r.ID, r.Question)
						require.Equal(t, sup, r.Support, "%s: %s", r.ID, r.Question)
						parsed, err := parseFacts(r.Context)
						require.NoError(t, err)
						want := facts
						if want == 0 {
							want = spec.defFacts
						}
						require.Len(t, parsed, want, "every story fact is in the context once")
						kinds[strings.Fields(r.Question)[0]+" "+strings.Fields(r.Question)[1]]++
					}
				}
				t.Logf("question forms: %v", kinds)
			})
		}
	}
}

func TestBabiLongSupportSizes(t *testing.T) {
	// qa1 rests on one fact, qa2 on two, qa3 on three, qa4 and qa5 on one.
	want := map[string]int{"qa1": 1, "qa2": 2, "qa3": 3, "qa4": 1, "qa5": 1}
	for task, n := range want {
		g := babiGen(t, BabiLongOptions{Options: Options{Tokens: 1024, Seed: 9}, Task: task})
		for i := 0; i < 20; i++ {
			it, err := g.Item(i)
			require.NoError(t, err)
			r := it.Record
			assert.Len(t, r.Support, n, "%s %s", r.ID, r.Question)
		}
	}
}

func TestQA5AsksEveryQuestionForm(t *testing.T) {
	g := babiGen(t, BabiLongOptions{Options: Options{Tokens: 1024, Seed: 3}, Task: "qa5"})
	forms := map[string]bool{}
	for i := 0; i < 200; i++ {
		it, err := g.Item(i)
		require.NoError(t, err)
		r := it.Record
		for _, re := range []*regexp.Regexp{qWhatGive, qWhoDidGive, qWhoGave, qWhoReceived, qWhatRecv} {
			if re.MatchString(r.Question) {
				forms[re.String()] = true
			}
		}
	}
	assert.Len(t, forms, 5)
}

func TestNeedleAnswersByConstruction(t *testing.T) {
	for _, kind := range NeedleKinds {
		for _, needles := range []int{0, 2, 7} {
			if kind == "single" && needles > 1 {
				continue
			}
			t.Run(fmt.Sprintf("%s/needles=%d", kind, needles), func(t *testing.T) {
				for seed := uint64(1); seed <= 20; seed++ {
					tokens := 300 + int(seed)*97
					depth := float64(seed%5) / 4
					g := needleGen(t, NeedleOptions{Options: Options{Tokens: tokens, SegmentTokens: 40 + int(seed%5)*50, Seed: seed, Depths: []float64{depth}}, Kind: kind, Needles: needles})
					for i := 0; i < 6; i++ {
						it, err := g.Item(i)
						require.NoError(t, err)
						r := it.Record
						checkItem(t, it, ApproxCounter{}, tokens, g.b.o.SegmentTokens, depth)
						ans, sup, err := solveNeedle(r)
						require.NoError(t, err, r.ID)
						require.Equal(t, ans, r.Answer, "%s: %s", r.ID, r.Question)
						require.ElementsMatch(t, sup, r.Support, r.ID)
						n := g.n
						assert.Equal(t, n, strings.Count(strings.Join(r.Context, " "), "special magic numbers for"), r.ID)
					}
				}
			})
		}
	}
}

func TestStudentsAnswersByConstruction(t *testing.T) {
	for _, q := range StudentQueries {
		t.Run(q, func(t *testing.T) {
			answers := map[string]int{}
			for seed := uint64(1); seed <= 30; seed++ {
				tokens := 200 + int(seed)*150
				var depths []float64
				if seed%3 != 0 {
					depths = []float64{0, 0.5, 1}
				}
				g := studentsGen(t, StudentsOptions{Options: Options{Tokens: tokens, Seed: seed, Depths: depths}, Query: q})
				for i := 0; i < 6; i++ {
					it, err := g.Item(i)
					require.NoError(t, err)
					r := it.Record
					total := checkItem(t, it, ApproxCounter{}, tokens, DefaultSegmentTokens, depthOf(depths, i))
					assert.Greater(t, total, tokens-g.unit, "the database fills the budget to within one record")
					ans, sup, err := solveStudents(r)
					require.NoError(t, err, r.ID)
					require.Equal(t, ans, r.Answer, "%s: %s", r.ID, r.Question)
					require.Equal(t, sup, r.Support, "%s: %s", r.ID, r.Question)
					ids := map[string]bool{}
					for _, s := range r.Context {
						id := reStud.FindStringSubmatch(s)[1]
						require.False(t, ids[id], "duplicate id %s", id)
						ids[id] = true
					}
					if r.Answer == "Yes" || r.Answer == "No" {
						answers[r.Answer]++
					}
				}
			}
			if q == "relation" {
				assert.Greater(t, answers["Yes"], 30, "relation answers %v", answers)
				assert.Greater(t, answers["No"], 30, "relation answers %v", answers)
			}
		})
	}
}

func TestContextFillsBudget(t *testing.T) {
	for _, tokens := range []int{1024, 8192, 32768} {
		g := babiGen(t, BabiLongOptions{Options: Options{Tokens: tokens, Seed: 2}, Task: "qa2"})
		it, err := g.Item(0)
		require.NoError(t, err)
		r := it.Record
		total := checkItem(t, it, ApproxCounter{}, tokens, DefaultSegmentTokens, -1)
		assert.Greater(t, total, tokens*97/100, "tokens %d", tokens)
		assert.GreaterOrEqual(t, len(r.Context), tokens/DefaultSegmentTokens, "tokens %d", tokens)
	}
	// 128K tokens: the largest context the paper uses.
	g := needleGen(t, NeedleOptions{Options: Options{Tokens: 131072, Seed: 2}, Kind: "multikey"})
	it, err := g.Item(0)
	require.NoError(t, err)
	r := it.Record
	total := checkItem(t, it, ApproxCounter{}, 131072, DefaultSegmentTokens, -1)
	assert.Greater(t, total, 131072*99/100)
	ans, _, err := solveNeedle(r)
	require.NoError(t, err)
	assert.Equal(t, ans, r.Answer)
}

func TestSegmentLimitsWithTokenizer(t *testing.T) {
	c := qwenCounter(t)
	for _, limit := range []int{24, 64, 256} {
		gens := []Generator{
			babiGen(t, BabiLongOptions{Options: Options{Tokens: 2048, SegmentTokens: limit, Seed: 5, Counter: c}, Task: "qa5"}),
			babiGen(t, BabiLongOptions{Options: Options{Tokens: 2048, SegmentTokens: limit, Seed: 5, Counter: c}, Task: "qa3"}),
			needleGen(t, NeedleOptions{Options: Options{Tokens: 2048, SegmentTokens: limit, Seed: 5, Counter: c}, Kind: "multiquery"}),
		}
		if limit >= 64 {
			gens = append(gens, studentsGen(t, StudentsOptions{Options: Options{Tokens: 2048, SegmentTokens: limit, Seed: 5, Counter: c}}))
		}
		for _, g := range gens {
			for i := 0; i < 3; i++ {
				it, err := g.Item(i)
				require.NoError(t, err)
				total := checkItem(t, it, c, 2048, limit, -1)
				assert.Greater(t, total, 2048*9/10, it.Record.ID)
			}
		}
	}
}

// supportOffset returns the fraction of the distractor characters of a
// context that come before the first support sentence, and whether the
// support sentences are consecutive.
func supportOffset(r perk.Record, isFact func(string) bool) (float64, bool) {
	sents := sentences(r.Context)
	before, total, first, last := 0, 0, -1, -1
	for i, s := range sents {
		if idx := indexOf(r.Support, s); idx >= 0 {
			if first < 0 {
				first = i
			}
			last = i
			continue
		}
		if isFact(s) {
			continue
		}
		if first < 0 {
			before += len(s)
		}
		total += len(s)
	}
	return float64(before) / float64(total), last-first+1 == len(r.Support)
}

func indexOf(xs []string, s string) int {
	for i, x := range xs {
		if x == s {
			return i
		}
	}
	return -1
}

func TestDepthPlacement(t *testing.T) {
	depths := []float64{0, 0.25, 0.5, 0.75, 1}
	babiFact := func(s string) bool { return reAny.MatchString(s) || reRel.MatchString(s) }
	for _, task := range BabiLongTasks {
		g := babiGen(t, BabiLongOptions{Options: Options{Tokens: 16384, Seed: 4, Depths: depths}, Task: task})
		for i := 0; i < 10; i++ {
			it, err := g.Item(i)
			require.NoError(t, err)
			r := it.Record
			d := depths[i%len(depths)]
			checkItem(t, it, ApproxCounter{}, 16384, DefaultSegmentTokens, d)
			got, together := supportOffset(r, babiFact)
			assert.True(t, together, "%s: support not together", r.ID)
			assert.InDelta(t, d, got, 0.01, "%s depth", r.ID)
			sents := sentences(r.Context)
			if d == 0 {
				assert.Equal(t, r.Support[0], sents[0], "%s: depth 0 starts the context", r.ID)
			}
			if d == 1 {
				assert.Equal(t, r.Support[len(r.Support)-1], sents[len(sents)-1], "%s: depth 1 ends the context", r.ID)
			}
		}
	}
	for _, kind := range NeedleKinds {
		g := needleGen(t, NeedleOptions{Options: Options{Tokens: 16384, Seed: 4, Depths: depths}, Kind: kind})
		for i := 0; i < 10; i++ {
			it, err := g.Item(i)
			require.NoError(t, err)
			r := it.Record
			checkItem(t, it, ApproxCounter{}, 16384, DefaultSegmentTokens, depths[i%len(depths)])
			got, together := supportOffset(r, func(s string) bool { return reNeedle.MatchString(s) })
			assert.True(t, together, r.ID)
			assert.InDelta(t, depths[i%len(depths)], got, 0.01, "%s depth", r.ID)
		}
	}
	// Student records: the support records sit at the depth among the others.
	g := studentsGen(t, StudentsOptions{Options: Options{Tokens: 8192, Seed: 4, Depths: depths}, Query: "recall"})
	for i := 0; i < 10; i++ {
		it, err := g.Item(i)
		require.NoError(t, err)
		r := it.Record
		at := indexOf(r.Context, r.Support[0])
		d := depths[i%len(depths)]
		checkItem(t, it, ApproxCounter{}, 8192, DefaultSegmentTokens, d)
		assert.InDelta(t, d, float64(at)/float64(len(r.Context)-1), 0.02, r.ID)
	}
}

func TestRandomPlacementSpreadsSupport(t *testing.T) {
	// Without depths the support lands anywhere: over many records its
	// mean depth is near the middle and both halves are used.
	g := babiGen(t, BabiLongOptions{Options: Options{Tokens: 4096, Seed: 8}, Task: "qa1"})
	var sum float64
	lo, hi := 0, 0
	for i := 0; i < 200; i++ {
		it, err := g.Item(i)
		require.NoError(t, err)
		r := it.Record
		assert.Nil(t, it.Meta.Depth, "%s: random placement has no depth", r.ID)
		d, _ := supportOffset(r, func(s string) bool { return reAny.MatchString(s) })
		sum += d
		if d < 0.5 {
			lo++
		} else {
			hi++
		}
	}
	assert.InDelta(t, 0.5, sum/200, 0.1)
	assert.Greater(t, lo, 50)
	assert.Greater(t, hi, 50)
}

// generate returns the JSONL of records 0..n-1.
func generate(t testing.TB, g Generator, n, workers int) []byte {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, Run(g, n, workers, func(it Item) error {
		line, err := MarshalItem(it)
		if err != nil {
			return err
		}
		buf.Write(line)
		return nil
	}))
	return buf.Bytes()
}

func TestDeterminism(t *testing.T) {
	mk := func(seed uint64) []Generator {
		o := Options{Tokens: 2048, Seed: seed, Depths: []float64{0, 0.5, 1}}
		return []Generator{
			babiGen(t, BabiLongOptions{Options: o, Task: "qa3"}),
			needleGen(t, NeedleOptions{Options: o, Kind: "multivalue"}),
			studentsGen(t, StudentsOptions{Options: o}),
		}
	}
	a, b, other := mk(7), mk(7), mk(8)
	for k := range a {
		x := generate(t, a[k], 12, 1)
		assert.Equal(t, x, generate(t, b[k], 12, 1), "same seed, same bytes")
		assert.Equal(t, x, generate(t, a[k], 12, 8), "any worker count")
		assert.True(t, bytes.HasPrefix(x, generate(t, a[k], 5, 3)), "fewer records are a prefix")
		assert.NotEqual(t, x, generate(t, other[k], 12, 1), "another seed differs")
	}
}

func TestGolden(t *testing.T) {
	// Pins the generators' output for fixed options, so that a change to
	// what a seed produces is noticed (update with PERK_UPDATE_GOLDEN=1).
	o := Options{Tokens: 400, SegmentTokens: 128, Seed: 1, Depths: []float64{0.5}}
	var buf bytes.Buffer
	buf.Write(generate(t, babiGen(t, BabiLongOptions{Options: o, Task: "qa2", Facts: 6}), 2, 1))
	buf.Write(generate(t, needleGen(t, NeedleOptions{Options: o, Kind: "multikey", Needles: 2}), 2, 1))
	buf.Write(generate(t, studentsGen(t, StudentsOptions{Options: o}), 2, 1))
	path := "testdata/golden_generated.jsonl"
	if os.Getenv("PERK_UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, string(want), buf.String())
	// Every record carries its counted length and its depth.
	back, err := perk.ReadEvalRecords(path)
	require.NoError(t, err)
	require.Len(t, back, 6)
	for _, er := range back {
		total := 0
		for _, s := range er.Context {
			total += ApproxCounter{}.Count(s)
		}
		require.NotNil(t, er.Meta.Tokens, er.ID)
		assert.Equal(t, total, *er.Meta.Tokens, er.ID)
		require.NotNil(t, er.Meta.Depth, er.ID)
		assert.Equal(t, 0.5, *er.Meta.Depth, er.ID)
	}
}

func TestItemMetaReadsBack(t *testing.T) {
	// A generated file carries each record's meta, and perk.ReadEvalRecords
	// reads it back: tokens is the context length as the generator's
	// Counter counts it, depth the requested depth of a record whose
	// support was placed at it, absent for a random placement.
	depths := []float64{0, 0.4, 1}
	approx := func(testing.TB) Counter { return ApproxCounter{} }
	for _, c := range []struct {
		name    string
		counter func(testing.TB) Counter
		gen     func(testing.TB, Counter) Generator
		tokens  int
		depths  []float64
	}{
		{"babilong", approx, func(t testing.TB, c Counter) Generator {
			return babiGen(t, BabiLongOptions{Options: Options{Tokens: 1500, Seed: 3, Depths: depths, Counter: c}, Task: "qa3"})
		}, 1500, depths},
		{"babilong-random", approx, func(t testing.TB, c Counter) Generator {
			return babiGen(t, BabiLongOptions{Options: Options{Tokens: 1500, Seed: 3, Counter: c}, Task: "qa1"})
		}, 1500, nil},
		{"needle-tokenizer", qwenCounter, func(t testing.TB, c Counter) Generator {
			return needleGen(t, NeedleOptions{Options: Options{Tokens: 1200, SegmentTokens: 64, Seed: 3, Depths: depths, Counter: c}, Kind: "multivalue"})
		}, 1200, depths},
		{"students-aggregate", approx, func(t testing.TB, c Counter) Generator {
			return studentsGen(t, StudentsOptions{Options: Options{Tokens: 1500, Seed: 3, Depths: depths, Counter: c}, Query: "aggregate"})
		}, 1500, depths},
	} {
		t.Run(c.name, func(t *testing.T) {
			const n = 12
			counter := c.counter(t)
			g := c.gen(t, counter)
			var items []Item
			require.NoError(t, Run(g, n, 3, func(it Item) error { items = append(items, it); return nil }))
			path := filepath.Join(t.TempDir(), "gen.jsonl")
			var buf bytes.Buffer
			require.NoError(t, WriteItems(&buf, items))
			require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
			back, err := perk.ReadEvalRecords(path)
			require.NoError(t, err)
			require.Len(t, back, n)
			withDepth, without := 0, 0
			for i, er := range back {
				r := er.Record
				require.Equal(t, items[i].Record, r)
				total := 0
				for _, s := range r.Context {
					total += counter.Count(s)
				}
				require.NotNil(t, er.Meta.Tokens, r.ID)
				assert.Equal(t, total, *er.Meta.Tokens, "%s: meta.tokens", r.ID)
				assert.LessOrEqual(t, *er.Meta.Tokens, c.tokens, r.ID)
				if len(c.depths) > 0 && len(r.Support) > 0 {
					require.NotNil(t, er.Meta.Depth, r.ID)
					assert.Equal(t, c.depths[i%len(c.depths)], *er.Meta.Depth, "%s: meta.depth", r.ID)
					withDepth++
				} else {
					assert.Nil(t, er.Meta.Depth, "%s: %s", r.ID, r.Question)
					without++
				}
				// The same as the generator's item, whichever way it is read.
				it, err := g.Item(i)
				require.NoError(t, err)
				assert.Equal(t, it.Meta, er.Meta, r.ID)
			}
			if len(c.depths) == 0 {
				assert.Zero(t, withDepth)
			} else {
				assert.Positive(t, withDepth)
			}
			if c.name == "students-aggregate" {
				assert.Positive(t, without, "average-grade questions have no support and no depth")
			}
		})
	}
}

func TestMarshalItem(t *testing.T) {
	r := perk.Record{ID: "m", Context: []string{"one", "two"}, Question: "q?", Answer: "x", Support: []string{"two"}}
	tokens, depth := 12, 0.25
	line, err := MarshalItem(Item{Record: r, Meta: perk.RecordMeta{Tokens: &tokens, Depth: &depth}})
	require.NoError(t, err)
	assert.Equal(t, `{"id":"m","context":["one","two"],"question":"q?","answer":"x","support":["two"],"meta":{"tokens":12,"depth":0.25}}`+"\n", string(line))
	zero := 0.0
	line, err = MarshalItem(Item{Record: r, Meta: perk.RecordMeta{Tokens: &tokens, Depth: &zero}})
	require.NoError(t, err)
	assert.Contains(t, string(line), `"meta":{"tokens":12,"depth":0}`, "depth 0 is written")
	line, err = MarshalItem(Item{Record: r, Meta: perk.RecordMeta{Tokens: &tokens}})
	require.NoError(t, err)
	assert.Contains(t, string(line), `"meta":{"tokens":12}}`)
	line, err = MarshalItem(Item{Record: r})
	require.NoError(t, err)
	plain, err := MarshalRecord(r)
	require.NoError(t, err)
	assert.Equal(t, plain, line, "no meta, no key")
	assert.NotContains(t, string(line), "meta")

	neg := -1
	_, err = MarshalItem(Item{Record: r, Meta: perk.RecordMeta{Tokens: &neg}})
	assert.EqualError(t, err, `record "m": meta tokens -1 is negative`)
	nan := math.NaN()
	_, err = MarshalItem(Item{Record: r, Meta: perk.RecordMeta{Depth: &nan}})
	assert.EqualError(t, err, `record "m": meta depth NaN is not finite`)
	_, err = MarshalItem(Item{Record: perk.Record{ID: "e", Context: []string{"x"}}})
	assert.EqualError(t, err, `record "e": empty answer`)

	var buf bytes.Buffer
	items := []Item{{Record: r, Meta: perk.RecordMeta{Tokens: &tokens, Depth: &depth}}, {Record: r}}
	require.NoError(t, WriteItems(&buf, items))
	back, err := perk.ParseEvalRecords("buf", buf.Bytes())
	require.NoError(t, err)
	assert.Equal(t, []perk.EvalRecord{{Record: r, Meta: items[0].Meta}, {Record: r}}, back)
}

func TestOptionErrors(t *testing.T) {
	ok := Options{Tokens: 8192}
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"unknown task", errOf(NewBabiLong(BabiLongOptions{Options: ok, Task: "qa9"})), `unknown BabiLong task "qa9" (want one of qa1, qa2, qa3, qa4, qa5)`},
		{"too few facts", errOf(NewBabiLong(BabiLongOptions{Options: ok, Task: "qa3", Facts: 2})), "qa3 takes 3 to 5000 facts per story, not 2"},
		{"too many qa4 facts", errOf(NewBabiLong(BabiLongOptions{Options: ok, Task: "qa4", Facts: 16})), "qa4 takes 1 to 15 facts per story, not 16"},
		{"shorter than the facts", errOf(NewBabiLong(BabiLongOptions{Options: Options{Tokens: 100}, Task: "qa3"})), "a 100-token context is shorter than the 30 qa3 facts (up to"},
		{"segment too small", errOf(NewBabiLong(BabiLongOptions{Options: Options{Tokens: 8192, SegmentTokens: 5}, Task: "qa1"})), "segment limit of 5 tokens is smaller than the longest of the 10 qa1 facts"},
		{"zero tokens", errOf(NewBabiLong(BabiLongOptions{Options: Options{}, Task: "qa1"})), "context length 0 tokens: must be at least 1"},
		{"huge tokens", errOf(NewNeedle(NeedleOptions{Options: Options{Tokens: MaxTokens + 1}})), "more than the maximum"},
		{"negative segment", errOf(NewNeedle(NeedleOptions{Options: Options{Tokens: 100, SegmentTokens: -1}})), "segment limit -1 tokens"},
		{"depth above 1", errOf(NewBabiLong(BabiLongOptions{Options: Options{Tokens: 8192, Depths: []float64{0.5, 1.5}}, Task: "qa1"})), "depth 1.5 is outside [0, 1]"},
		{"negative depth", errOf(NewNeedle(NeedleOptions{Options: Options{Tokens: 8192, Depths: []float64{-0.1}}})), "depth -0.1 is outside [0, 1]"},
		{"NaN depth", errOf(NewStudents(StudentsOptions{Options: Options{Tokens: 8192, Depths: []float64{math.NaN()}}})), "depth NaN is outside [0, 1]"},
		{"unknown kind", errOf(NewNeedle(NeedleOptions{Options: ok, Kind: "multi"})), `unknown needle kind "multi" (want one of single, multikey, multivalue, multiquery)`},
		{"single with needles", errOf(NewNeedle(NeedleOptions{Options: ok, Kind: "single", Needles: 3})), "a single needle task has one needle, not 3"},
		{"one multikey needle", errOf(NewNeedle(NeedleOptions{Options: ok, Kind: "multikey", Needles: 1})), "multikey takes 2 to 64 needles, not 1"},
		{"needles too long", errOf(NewNeedle(NeedleOptions{Options: Options{Tokens: 40}, Kind: "multiquery"})), "a 40-token context is shorter than the 4 needles"},
		{"unknown query", errOf(NewStudents(StudentsOptions{Options: ok, Query: "sort"})), `unknown student-records query "sort" (want one of recall, relation, aggregate, mixed)`},
		{"students too short", errOf(NewStudents(StudentsOptions{Options: Options{Tokens: 30}, Query: "relation"})), "a 30-token context is shorter than the 2 student records a relation question needs"},
		{"record over segment", errOf(NewStudents(StudentsOptions{Options: Options{Tokens: 8192, SegmentTokens: 20}})), "segment limit of 20 tokens is smaller than the longest of the 2 student records"},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Error(t, c.err)
			assert.Contains(t, c.err.Error(), c.want)
		})
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestMinimumLengthWorks(t *testing.T) {
	// Whatever the up-front check accepts must generate: the shortest
	// accepted context for every task holds the facts alone.
	for _, task := range BabiLongTasks {
		c := ApproxCounter{}
		nf := babiSpecs[task].defFacts
		tokens := nf * babiMaxFactCost(c, task, nf)
		g := babiGen(t, BabiLongOptions{Options: Options{Tokens: tokens, Seed: 1}, Task: task})
		for i := 0; i < 5; i++ {
			it, err := g.Item(i)
			require.NoError(t, err, task)
			r := it.Record
			checkItem(t, it, c, tokens, DefaultSegmentTokens, -1)
			ans, _, err := solveBabi(r)
			require.NoError(t, err)
			assert.Equal(t, ans, r.Answer)
		}
	}
}

func TestRunErrors(t *testing.T) {
	g := failAt{at: 5}
	var got []string
	err := Run(g, 20, 4, func(it Item) error { got = append(got, it.Record.ID); return nil })
	require.EqualError(t, err, "record 5 failed")
	assert.Equal(t, []string{"r0", "r1", "r2", "r3", "r4"}, got, "records before the failure are emitted in order")

	err = Run(g, 3, 2, func(Item) error { return fmt.Errorf("disk full") })
	require.EqualError(t, err, "disk full")
	require.Error(t, Run(g, -1, 1, nil))
	require.NoError(t, Run(g, 0, 1, nil))
}

type failAt struct{ at int }

func (f failAt) Item(i int) (Item, error) {
	if i == f.at {
		return Item{}, fmt.Errorf("record %d failed", i)
	}
	return Item{Record: perk.Record{ID: fmt.Sprintf("r%d", i), Context: []string{"x"}, Answer: "y"}}, nil
}

func TestDistractorsClean(t *testing.T) {
	ds := Distractors()
	require.Greater(t, len(ds), 300)
	forbidden := append([]string{"Event", "magic", "Student", "special"}, babiAgents...)
	for _, s := range ds {
		assert.Equal(t, []string{s}, SplitSentences(s), "one sentence per line")
		for _, f := range forbidden {
			assert.NotRegexp(t, `\b`+f+`\b`, s)
		}
		for _, re := range []interface{ MatchString(string) bool }{reMove, reTake, reDrop, reGive, reRel, reNeedle, reStud} {
			assert.False(t, re.MatchString(s), s)
		}
		assert.True(t, strings.HasSuffix(s, "."), s)
	}
}
