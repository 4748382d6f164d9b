package tasks

import (
	_ "embed"
	"math/rand/v2"
	"strings"
	"sync"
)

// haystackText is the distractor prose: plain descriptive paragraphs written
// for this package, one sentence per line, paragraphs separated by blank
// lines. It names none of the bAbI agents and contains no fact, needle or
// student-record sentence.
//
//go:embed haystack.txt
var haystackText string

var (
	corpusOnce  sync.Once
	corpusParas [][]string
)

// corpus returns the distractor paragraphs, each a list of sentences.
func corpus() [][]string {
	corpusOnce.Do(func() {
		var para []string
		for _, line := range strings.Split(haystackText, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				if len(para) > 0 {
					corpusParas = append(corpusParas, para)
					para = nil
				}
				continue
			}
			para = append(para, line)
		}
		if len(para) > 0 {
			corpusParas = append(corpusParas, para)
		}
	})
	return corpusParas
}

// Distractors returns the built-in distractor sentences in corpus order
// (the prose generators hide facts in).
func Distractors() []string {
	var out []string
	for _, p := range corpus() {
		out = append(out, p...)
	}
	return out
}

// haystack is the distractor corpus cut to one segment limit and costed by
// one counter: pieces[p] are the pieces of paragraph p, each at most the
// limit, with their costs.
type haystack struct {
	pieces [][]string
	costs  [][]int
	// ratio is the sum of the pieces' costs over the count of the whole
	// corpus joined by spaces: how much per-sentence costs overstate a
	// counter that is not additive (about 1.02 for ApproxCounter, 1 for a
	// BPE tokenizer).
	ratio float64
}

// newHaystack costs every corpus sentence with c; a sentence longer than
// limit tokens is cut between words.
func newHaystack(c Counter, limit int) (*haystack, error) {
	h := &haystack{}
	for _, para := range corpus() {
		var ps []string
		var cs []int
		for _, s := range para {
			parts := []string{s}
			if c.Count(s) > limit {
				spans, err := splitLong(s, span{0, len(s)}, limit, c)
				if err != nil {
					return nil, err
				}
				parts = parts[:0]
				for _, sp := range spans {
					parts = append(parts, s[sp.start:sp.end])
				}
			}
			for _, p := range parts {
				ps = append(ps, p)
				cs = append(cs, sentenceCost(c, p))
			}
		}
		h.pieces = append(h.pieces, ps)
		h.costs = append(h.costs, cs)
	}
	planned := 0
	var all []string
	for p, ps := range h.pieces {
		all = append(all, ps...)
		for _, c := range h.costs[p] {
			planned += c
		}
	}
	h.ratio = 1
	if n := c.Count(strings.Join(all, " ")); n > 0 && planned > n {
		h.ratio = float64(planned) / float64(n)
	}
	return h, nil
}

// fill draws distractor text of at most budget tokens: whole paragraphs in
// order, starting at a random paragraph and jumping to another random
// paragraph at the end of each, until the next sentence would not fit.
func (h *haystack) fill(rng *rand.Rand, budget int) (texts []string, costs []int) {
	p := rng.IntN(len(h.pieces))
	k, sum := 0, 0
	for {
		c := h.costs[p][k]
		if sum+c > budget {
			return texts, costs
		}
		texts = append(texts, h.pieces[p][k])
		costs = append(costs, c)
		sum += c
		if k++; k == len(h.pieces[p]) {
			next := rng.IntN(len(h.pieces) - 1)
			if next >= p {
				next++
			}
			p, k = next, 0
		}
	}
}
