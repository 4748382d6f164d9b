package tasks

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/perkgo/perk/perk"
)

// DefaultSegmentTokens is the segment limit when Options.SegmentTokens is 0:
// the paper's "~256 tokens" per segment.
const DefaultSegmentTokens = 256

// MaxTokens bounds Options.Tokens (1Mi tokens), so a mistyped length fails
// at once instead of exhausting memory.
const MaxTokens = 1 << 20

// Options are the settings every generator shares.
type Options struct {
	// Tokens is the context length. The sum over a record's segments of
	// their token counts is at most Tokens; distractor text fills it to
	// within about one sentence (for student records, within one record).
	Tokens int
	// SegmentTokens bounds the token count of every segment
	// (DefaultSegmentTokens when 0). Segments are cut at sentence
	// boundaries; a fact, needle or student record is never cut.
	SegmentTokens int
	// Depths places the facts the answer rests on (the record's support)
	// together, at a depth in [0, 1]: the fraction of the distractor
	// tokens that come before them (0: the start of the context, 1: the
	// end). Record i uses Depths[i % len(Depths)]. Every other fact goes
	// to a random place. Empty: every fact goes to a random place.
	Depths []float64
	// Seed seeds the generator. Record i draws from its own PCG stream
	// (Seed, i), so it does not depend on how many records are generated
	// or in which order.
	Seed uint64
	// Counter counts tokens (ApproxCounter when nil).
	Counter Counter
}

// base is the validated common state of a generator.
type base struct {
	o   Options
	hay *haystack
}

// newBase validates o. what names the units the context is built from
// ("qa2 facts"); unit is the largest token count one of them can have and
// minTotal the fewest tokens the units of one record can need.
func newBase(o Options, what string, unit, minTotal int, needHaystack bool) (*base, error) {
	if o.Counter == nil {
		o.Counter = ApproxCounter{}
	}
	if o.SegmentTokens == 0 {
		o.SegmentTokens = DefaultSegmentTokens
	}
	switch {
	case o.Tokens < 1:
		return nil, fmt.Errorf("context length %d tokens: must be at least 1", o.Tokens)
	case o.Tokens > MaxTokens:
		return nil, fmt.Errorf("context length %d tokens: more than the maximum of %d", o.Tokens, MaxTokens)
	case o.SegmentTokens < 1:
		return nil, fmt.Errorf("segment limit %d tokens: must be at least 1", o.SegmentTokens)
	}
	if err := CheckDepths(o.Depths); err != nil {
		return nil, err
	}
	if unit > o.SegmentTokens {
		return nil, fmt.Errorf("segment limit of %d tokens is smaller than the longest of the %s (up to %d tokens)", o.SegmentTokens, what, unit)
	}
	if minTotal > o.Tokens {
		return nil, fmt.Errorf("a %d-token context is shorter than the %s (up to %d tokens)", o.Tokens, what, minTotal)
	}
	b := &base{o: o}
	if needHaystack {
		h, err := newHaystack(o.Counter, o.SegmentTokens)
		if err != nil {
			return nil, fmt.Errorf("distractor text: %w", err)
		}
		b.hay = h
	}
	return b, nil
}

// CheckDepths reports the first depth that is not a number in [0, 1].
func CheckDepths(depths []float64) error {
	for _, d := range depths {
		if math.IsNaN(d) || d < 0 || d > 1 {
			return fmt.Errorf("depth %v is outside [0, 1]", d)
		}
	}
	return nil
}

// rng returns record i's random stream.
func (b *base) rng(i int) *rand.Rand { return rand.New(rand.NewPCG(b.o.Seed, uint64(i))) }

// depth returns record i's depth, or -1 for random placement.
func (b *base) depth(i int) float64 {
	if len(b.o.Depths) == 0 {
		return -1
	}
	return b.o.Depths[i%len(b.o.Depths)]
}

// atDepth reports whether a record's support is placed at a chosen depth:
// a depth was given (≥ 0) and there is a support to place. Otherwise every
// fact goes to a random place.
func atDepth(depth float64, support []int) bool { return depth >= 0 && len(support) > 0 }

// recordMeta is the metadata of a generated record: its context length
// tokens as counted by the generator's Counter and, when the support was
// placed at a chosen depth (atDepth), that depth.
func recordMeta(tokens int, depth float64, support []int) perk.RecordMeta {
	m := perk.RecordMeta{Tokens: &tokens}
	if atDepth(depth, support) {
		m.Depth = &depth
	}
	return m
}

// depthSlot returns the gap before item k of a sequence with the given
// costs (k in [0, len(costs)]) where the fraction depth of the total cost
// lies before it: the smallest k whose prefix reaches depth × total.
func depthSlot(costs []int, depth float64) int {
	total := 0
	for _, c := range costs {
		total += c
	}
	target := depth * float64(total)
	sum := 0
	for k, c := range costs {
		if float64(sum) >= target {
			return k
		}
		sum += c
	}
	return len(costs)
}

// sentence is one sentence of a context being laid out.
type sentence struct {
	text string
	cost int
	fact bool
}

// layout builds a record's context: facts among distractor sentences that
// fill the token budget, cut into segments. The facts listed in support
// (indices into facts, in that order) are placed together at depth when
// depth ≥ 0; every other fact, and the support facts too when depth < 0,
// goes into a uniformly random gap between distractor sentences. The
// facts' relative order is random: their text carries the order that
// matters (event numbers). tokens is the context length: the sum of the
// segments' counts.
func (b *base) layout(rng *rand.Rand, facts []string, support []int, depth float64) (segs []string, tokens int, err error) {
	c, limit := b.o.Counter, b.o.SegmentTokens
	costs := make([]int, len(facts))
	total := 0
	for i, f := range facts {
		costs[i] = sentenceCost(c, f)
		if costs[i] > limit {
			return nil, 0, fmt.Errorf("fact %q has %d tokens, more than the segment limit of %d", f, costs[i], limit)
		}
		total += costs[i]
	}
	if total > b.o.Tokens {
		return nil, 0, fmt.Errorf("the %d facts need %d tokens, more than the %d-token context", len(facts), total, b.o.Tokens)
	}
	// Plan in per-sentence costs, scaled by how much they overstate the
	// joined count; segment trims whatever overshoots.
	dtexts, dcosts := b.hay.fill(rng, max(0, int(float64(b.o.Tokens)*b.hay.ratio)-total))
	n := len(dtexts)
	block := -1
	inBlock := make([]bool, len(facts))
	if atDepth(depth, support) {
		block = depthSlot(dcosts, depth)
		for _, s := range support {
			inBlock[s] = true
		}
	}
	gaps := make([][]int, n+1)
	for _, f := range rng.Perm(len(facts)) {
		if inBlock[f] {
			continue
		}
		g := rng.IntN(n + 1)
		for n > 0 && g == block {
			g = rng.IntN(n + 1)
		}
		gaps[g] = append(gaps[g], f)
	}
	seq := make([]sentence, 0, n+len(facts))
	for g := 0; g <= n; g++ {
		if g == block {
			for _, f := range support {
				seq = append(seq, sentence{facts[f], costs[f], true})
			}
		}
		for _, f := range gaps[g] {
			seq = append(seq, sentence{facts[f], costs[f], true})
		}
		if g < n {
			seq = append(seq, sentence{dtexts[g], dcosts[g], false})
		}
	}
	return b.segment(seq)
}

// segment packs a laid-out sequence into segments and, while the context
// counts more than the token budget, drops distractor sentences from the
// end (as many as the excess needs, by their costs) and packs again. It
// returns the segments and their total count.
func (b *base) segment(seq []sentence) ([]string, int, error) {
	c, limit := b.o.Counter, b.o.SegmentTokens
	for {
		segs, err := pack(len(seq), func(i int) int { return seq[i].cost }, func(i, j int) string {
			parts := make([]string, j-i)
			for k := i; k < j; k++ {
				parts[k-i] = seq[k].text
			}
			return strings.Join(parts, " ")
		}, limit, c)
		if err != nil {
			return nil, 0, err
		}
		total := 0
		for _, s := range segs {
			total += c.Count(s)
		}
		if total <= b.o.Tokens {
			return segs, total, nil
		}
		if !slices.ContainsFunc(seq, func(s sentence) bool { return !s.fact }) {
			return nil, 0, fmt.Errorf("the facts alone count %d tokens once segmented, more than the %d-token context", total, b.o.Tokens)
		}
		excess := total - b.o.Tokens
		for k := len(seq) - 1; k >= 0 && excess > 0; k-- {
			if !seq[k].fact {
				excess -= seq[k].cost
				seq = append(seq[:k], seq[k+1:]...)
			}
		}
	}
}
