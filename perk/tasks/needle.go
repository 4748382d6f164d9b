package tasks

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/perkgo/perk/perk"
)

// NeedleKinds lists the needle-in-a-haystack variants (RULER's NIAH
// family):
//
//	single      one needle, one question
//	multikey    several needles with different keys; one is asked for
//	multivalue  several needles with one key; all values are asked for
//	multiquery  several needles with different keys; all are asked for
var NeedleKinds = []string{"single", "multikey", "multivalue", "multiquery"}

// DefaultNeedles is the needle count of the multi-needle kinds when
// NeedleOptions.Needles is 0 (RULER's default of 4), and MaxNeedles the
// most they take.
const (
	DefaultNeedles = 4
	MaxNeedles     = 64
)

// Key words: a needle's key is "adjective-noun".
var (
	keyAdjectives = []string{"amber", "ancient", "bitter", "brave", "calm", "clever", "crimson", "curious",
		"distant", "eager", "faded", "fierce", "gentle", "golden", "hollow", "humble", "icy", "jolly",
		"lively", "lonely", "mellow", "misty", "noble", "odd", "pale", "proud", "quiet", "rapid",
		"rusty", "silent", "silver", "sleepy", "steady", "stormy", "tender", "velvet", "wandering", "wise"}
	keyNouns = []string{"anchor", "badger", "beacon", "bramble", "canyon", "cedar", "comet", "cricket",
		"falcon", "fern", "glacier", "harbor", "heron", "island", "juniper", "kettle", "lantern", "lobster",
		"meadow", "otter", "orchard", "pebble", "pigeon", "quarry", "raven", "saddle", "spruce", "thimble",
		"thistle", "tulip", "valley", "walrus", "willow", "zephyr"}
)

// NeedleOptions configures a needle-in-a-haystack generator.
type NeedleOptions struct {
	Options
	// Kind is one of NeedleKinds ("" means single).
	Kind string
	// Needles is the number of needles of the multi-needle kinds
	// (DefaultNeedles when 0; 2 to MaxNeedles). single takes 0 or 1.
	Needles int
}

// Needle generates RULER-style needle-in-a-haystack records. A needle is
// "One of the special magic numbers for {key} is: {value}." with a
// two-word key and a 7-digit value, keys and values distinct within a
// record. Questions follow RULER's templates:
//
//	single, multikey  "What is the special magic number for {key} mentioned in the provided text?"
//	multivalue        "What are all the special magic numbers for {key} mentioned in the provided text?"
//	multiquery        "What are all the special magic numbers for {k1}, {k2} and {k3} mentioned in the provided text?"
//
// The answer is the value; for multivalue, all values in increasing order,
// joined by ", " (an order that does not depend on where the needles
// are); for multiquery, the values in the order the keys are asked. The
// support is the needles the answer rests on (every needle but multikey's
// distractors), which Options.Depths places together.
type Needle struct {
	b    *base
	kind string
	n    int
}

// NewNeedle validates o and returns a generator.
func NewNeedle(o NeedleOptions) (*Needle, error) {
	kind := o.Kind
	if kind == "" {
		kind = "single"
	}
	if !slices.Contains(NeedleKinds, kind) {
		return nil, fmt.Errorf("unknown needle kind %q (want one of %s)", o.Kind, strings.Join(NeedleKinds, ", "))
	}
	n := o.Needles
	switch {
	case kind == "single" && n > 1:
		return nil, fmt.Errorf("a single needle task has one needle, not %d", n)
	case kind == "single":
		n = 1
	case n == 0:
		n = DefaultNeedles
	case n < 2 || n > MaxNeedles:
		return nil, fmt.Errorf("%s takes 2 to %d needles, not %d", kind, MaxNeedles, n)
	}
	c := o.Counter
	if c == nil {
		c = ApproxCounter{}
	}
	unit := 0
	for _, a := range keyAdjectives {
		for _, w := range keyNouns {
			unit = max(unit, sentenceCost(c, needleText(a+"-"+w, 9999999)))
		}
	}
	b, err := newBase(o.Options, fmt.Sprintf("%d needles", n), unit, n*unit, true)
	if err != nil {
		return nil, err
	}
	return &Needle{b: b, kind: kind, n: n}, nil
}

func needleText(key string, value int) string {
	return fmt.Sprintf("One of the special magic numbers for %s is: %d.", key, value)
}

// Item returns record i, "needle-{kind}-{i}", with its metadata (Item).
func (g *Needle) Item(i int) (Item, error) {
	rng := g.b.rng(i)
	id := fmt.Sprintf("needle-%s-%d", g.kind, i)
	nKeys := g.n
	if g.kind == "multivalue" {
		nKeys = 1
	}
	keys := drawKeys(rng, nKeys)
	values := drawValues(rng, g.n)
	facts := make([]string, g.n)
	for k := range facts {
		facts[k] = needleText(keys[k%nKeys], values[k])
	}
	var question, answer string
	var support []int
	switch g.kind {
	case "single", "multikey":
		t := rng.IntN(g.n)
		question = "What is the special magic number for " + keys[t] + " mentioned in the provided text?"
		answer, support = strconv.Itoa(values[t]), []int{t}
	case "multivalue":
		sorted := slices.Clone(values)
		slices.Sort(sorted)
		question = "What are all the special magic numbers for " + keys[0] + " mentioned in the provided text?"
		answer, support = joinInts(sorted), seq(g.n)
	case "multiquery":
		question = "What are all the special magic numbers for " + listWords(keys) + " mentioned in the provided text?"
		answer, support = joinInts(values), seq(g.n)
	}
	depth := g.b.depth(i)
	ctx, tokens, err := g.b.layout(rng, facts, support, depth)
	if err != nil {
		return Item{}, fmt.Errorf("record %s: %w", id, err)
	}
	sup := make([]string, len(support))
	for k, s := range support {
		sup[k] = facts[s]
	}
	r := perk.Record{ID: id, Context: ctx, Question: question, Answer: answer, Support: sup}
	return Item{Record: r, Meta: recordMeta(tokens, depth, support)}, r.Validate()
}

// drawKeys returns n distinct keys.
func drawKeys(rng *rand.Rand, n int) []string {
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		k := keyAdjectives[rng.IntN(len(keyAdjectives))] + "-" + keyNouns[rng.IntN(len(keyNouns))]
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// drawValues returns n distinct 7-digit numbers.
func drawValues(rng *rand.Rand, n int) []int {
	seen := map[int]bool{}
	var out []int
	for len(out) < n {
		v := 1000000 + rng.IntN(9000000)
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.Itoa(x)
	}
	return strings.Join(parts, ", ")
}

// listWords writes "a, b and c".
func listWords(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
