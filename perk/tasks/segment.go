package tasks

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// span is the half-open byte range [start, end) of a source text.
type span struct{ start, end int }

// abbreviations end in a period without ending a sentence.
var abbreviations = map[string]bool{
	"Mr": true, "Mrs": true, "Ms": true, "Dr": true, "Prof": true, "St": true, "Mt": true,
	"vs": true, "e.g": true, "i.e": true, "cf": true, "Fig": true, "approx": true,
}

// closers may follow a sentence's final punctuation.
const closers = "\"')]\u201d\u2019\u00bb"

// SplitSentences cuts text into sentences, each trimmed of surrounding white
// space, with the white space inside a sentence kept as it was. A sentence
// ends after '.', '!' or '?' (a run of them, then any closing quotes or
// brackets) followed by white space or the end of the text, and at every
// line break. A period after a known abbreviation ("Mr.", "Dr.", "e.g.") or
// a single capital letter (an initial) does not end a sentence, and neither
// does one inside a word or number ("3.5", "example.com"). The rule is
// deliberately simple: it never loses or reorders text, it only decides
// where segments may be cut.
func SplitSentences(text string) []string {
	spans := sentenceSpans(text)
	if len(spans) == 0 {
		return nil
	}
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = text[s.start:s.end]
	}
	return out
}

// sentenceSpans returns the trimmed spans of the sentences of text.
func sentenceSpans(text string) []span {
	var out []span
	start := 0
	emit := func(end int) {
		if s, ok := trimSpan(text, start, end); ok {
			out = append(out, s)
		}
		start = end
	}
	for i := 0; i < len(text); {
		r, w := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == '\n':
			emit(i + w)
			i += w
		case r == '.' || r == '!' || r == '?':
			j := i + w
			for j < len(text) && strings.IndexByte(".!?", text[j]) >= 0 {
				j++
			}
			for j < len(text) {
				c, cw := utf8.DecodeRuneInString(text[j:])
				if !strings.ContainsRune(closers, c) {
					break
				}
				j += cw
			}
			atEnd := j == len(text)
			if !atEnd {
				c, _ := utf8.DecodeRuneInString(text[j:])
				atEnd = unicode.IsSpace(c)
			}
			if atEnd && !(r == '.' && j == i+w && isAbbreviation(text[start:i])) {
				emit(j)
			}
			i = j
		default:
			i += w
		}
	}
	emit(len(text))
	return out
}

// isAbbreviation reports whether the word that ends text (just before a
// period) is an abbreviation or an initial.
func isAbbreviation(text string) bool {
	k := len(text)
	for k > 0 {
		r, w := utf8.DecodeLastRuneInString(text[:k])
		if !unicode.IsLetter(r) && r != '.' {
			break
		}
		k -= w
	}
	word := text[k:]
	if utf8.RuneCountInString(word) == 1 {
		r, _ := utf8.DecodeRuneInString(word)
		return unicode.IsUpper(r)
	}
	return abbreviations[word]
}

// trimSpan trims white space from both ends of text[start:end]; ok is false
// when nothing is left.
func trimSpan(text string, start, end int) (span, bool) {
	s := text[start:end]
	left := len(s) - len(strings.TrimLeftFunc(s, unicode.IsSpace))
	right := len(strings.TrimRightFunc(s, unicode.IsSpace))
	if left >= right {
		return span{}, false
	}
	return span{start + left, start + right}, true
}

// Segment cuts text into segments of at most limit tokens (by c) at sentence
// boundaries (SplitSentences), filling each segment greedily. The white
// space between sentences of one segment is kept as it was in text. A
// sentence longer than limit is cut between words, and a word longer than
// limit between characters. Text that is empty or all white space gives no
// segments. It is an error when limit is below 1 or a single character
// counts more than limit tokens.
func Segment(text string, limit int, c Counter) ([]string, error) {
	if limit < 1 {
		return nil, fmt.Errorf("segment limit %d tokens: must be at least 1", limit)
	}
	if c == nil {
		c = ApproxCounter{}
	}
	var pieces []span
	for _, s := range sentenceSpans(text) {
		if c.Count(text[s.start:s.end]) <= limit {
			pieces = append(pieces, s)
			continue
		}
		split, err := splitLong(text, s, limit, c)
		if err != nil {
			return nil, err
		}
		pieces = append(pieces, split...)
	}
	return pack(len(pieces), func(i int) int {
		return sentenceCost(c, text[pieces[i].start:pieces[i].end])
	}, func(i, j int) string {
		return text[pieces[i].start:pieces[j-1].end]
	}, limit, c)
}

// splitLong cuts a span of more than limit tokens between words into pieces
// of at most limit tokens each, cutting a word between characters when the
// word alone is too long.
func splitLong(text string, s span, limit int, c Counter) ([]span, error) {
	var words []span
	for i := s.start; i < s.end; {
		r, w := utf8.DecodeRuneInString(text[i:])
		if unicode.IsSpace(r) {
			i += w
			continue
		}
		j := i
		for j < s.end {
			r, w := utf8.DecodeRuneInString(text[j:])
			if unicode.IsSpace(r) {
				break
			}
			j += w
		}
		words = append(words, span{i, j})
		i = j
	}
	var out []span
	for k := 0; k < len(words); {
		w := words[k]
		if c.Count(text[w.start:w.end]) > limit {
			parts, err := splitRunes(text, w, limit, c)
			if err != nil {
				return nil, err
			}
			out = append(out, parts...)
			k++
			continue
		}
		// Extend over following words while the piece fits.
		end := k + 1
		for end < len(words) && c.Count(text[w.start:words[end].end]) <= limit {
			end++
		}
		out = append(out, span{w.start, words[end-1].end})
		k = end
	}
	return out, nil
}

// splitRunes cuts one word between characters into pieces of at most limit
// tokens, each as long as possible (binary search on the character count).
func splitRunes(text string, w span, limit int, c Counter) ([]span, error) {
	var out []span
	for start := w.start; start < w.end; {
		var bounds []int // rune boundaries after start
		for i := start; i < w.end; {
			_, n := utf8.DecodeRuneInString(text[i:])
			i += n
			bounds = append(bounds, i)
		}
		if c.Count(text[start:bounds[0]]) > limit {
			return nil, fmt.Errorf("the character %q alone counts more than the segment limit of %d tokens", text[start:bounds[0]], limit)
		}
		lo, hi := 0, len(bounds)-1 // bounds[lo] fits; find the last that does
		for lo < hi {
			mid := (lo + hi + 1) / 2
			if c.Count(text[start:bounds[mid]]) <= limit {
				lo = mid
			} else {
				hi = mid - 1
			}
		}
		out = append(out, span{start, bounds[lo]})
		start = bounds[lo]
	}
	return out, nil
}

// pack groups n pieces, in order, into segments of at most limit tokens.
// cost(i) is what piece i adds to a segment (an upper bound for counters
// that are additive over the joining white space); join(i, j) is the text
// of pieces i..j-1 as one segment. Each segment is filled greedily by cost
// and then checked with c; a segment that counts more than limit gives its
// last piece to the next segment until it fits.
func pack(n int, cost func(i int) int, join func(i, j int) string, limit int, c Counter) ([]string, error) {
	var out []string
	for i := 0; i < n; {
		j, sum := i, 0
		for j < n && sum+cost(j) <= limit {
			sum += cost(j)
			j++
		}
		if j == i {
			j = i + 1 // a piece that costs more than limit only with its leading space
		}
		text := join(i, j)
		for j-i > 1 && c.Count(text) > limit {
			j--
			text = join(i, j)
		}
		if k := c.Count(text); k > limit {
			return nil, fmt.Errorf("a piece of %d tokens does not fit the segment limit of %d tokens", k, limit)
		}
		out = append(out, text)
		i = j
	}
	return out, nil
}
