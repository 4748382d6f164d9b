package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The split patterns this package implements by hand. Go's regexp package
// has no look-ahead, which all of them need for `\s+(?!\S)`.
const (
	// PatternGPT2 is GPT-2's pre-tokenizer pattern, also what a ByteLevel
	// pre-tokenizer with use_regex applies.
	PatternGPT2 = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// PatternQwen2 is the Split pattern of the Qwen2, Qwen2.5 and Qwen3
	// tokenizers.
	PatternQwen2 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternLlama3 is the Qwen2 pattern with digits grouped in threes, as
	// used by Llama 3 (and, with possessive quantifiers that change nothing
	// here, by cl100k_base).
	PatternLlama3 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// splitStyle selects one of the hand-written splitters.
type splitStyle int

const (
	styleGPT2 splitStyle = iota
	styleQwen2
	styleLlama3
)

// styleForPattern recognises a Split regex.
func styleForPattern(p string) (splitStyle, bool) {
	switch p {
	case PatternGPT2:
		return styleGPT2, true
	case PatternQwen2:
		return styleQwen2, true
	case PatternLlama3, `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`:
		return styleLlama3, true
	}
	return 0, false
}

// Character classes of the patterns. \s is Unicode White_Space, which is what
// unicode.IsSpace tests.
func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }
func isS(r rune) bool { return unicode.IsSpace(r) }

// isP is [^\s\p{L}\p{N}].
func isP(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }

// isNL is [\r\n].
func isNL(r rune) bool { return r == '\r' || r == '\n' }

// at decodes the rune at byte offset i of s (utf8.RuneError, 1 for an
// invalid byte, and 0 size at the end).
func at(s string, i int) (rune, int) {
	if i >= len(s) {
		return 0, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// runOf returns the end of the run of runes satisfying class from i.
func runOf(s string, i int, class func(rune) bool) int {
	for i < len(s) {
		r, n := at(s, i)
		if !class(r) {
			break
		}
		i += n
	}
	return i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (which holds an
// apostrophe), case-insensitively when fold is set, and returns the end.
func contraction(s string, i int, fold bool) (int, bool) {
	j := i + 1
	lower := func(r rune) rune {
		if !fold {
			return r
		}
		if r == 'ſ' { // U+017F LATIN SMALL LETTER LONG S folds to s
			return 's'
		}
		if r < utf8.RuneSelf {
			return unicode.ToLower(r)
		}
		return r
	}
	r1, n1 := at(s, j)
	if n1 == 0 {
		return 0, false
	}
	switch lower(r1) {
	case 's', 't', 'm', 'd':
		return j + n1, true
	case 'r', 'v', 'l':
		r2, n2 := at(s, j+n1)
		if n2 == 0 {
			return 0, false
		}
		want := 'e'
		if lower(r1) == 'l' {
			want = 'l'
		}
		if lower(r2) == want {
			return j + n1 + n2, true
		}
	}
	return 0, false
}

// spaceEnd handles the shared tail alternatives \s+(?!\S)|\s+ at i, where s[i]
// is white space: the run minus its last rune when the run is followed by a
// non-space and holds at least two runes, else the whole run.
func spaceEnd(s string, i int) int {
	end := runOf(s, i, isS)
	if end == len(s) {
		return end
	}
	_, first := at(s, i)
	if i+first == end { // a single white-space rune before a non-space
		return end
	}
	r, n := utf8.DecodeLastRuneInString(s[:end])
	_ = r
	return end - n
}

// nextGPT2 returns the end of the piece starting at i under PatternGPT2.
func nextGPT2(s string, i int) int {
	r, n := at(s, i)
	if r == '\'' {
		if end, ok := contraction(s, i, false); ok {
			return end
		}
	}
	j := i
	if r == ' ' {
		if r2, n2 := at(s, i+n); n2 > 0 && !isS(r2) {
			j, r, n = i+n, r2, n2
		}
	}
	switch {
	case isL(r):
		return runOf(s, j, isL)
	case isN(r):
		return runOf(s, j, isN)
	case isP(r):
		return runOf(s, j, isP)
	}
	return spaceEnd(s, i)
}

// nextQwen2 returns the end of the piece starting at i under PatternQwen2
// (maxDigits 1) or PatternLlama3 (maxDigits 3).
func nextQwen2(s string, i int, maxDigits int) int {
	r, n := at(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if r == '\'' {
		if end, ok := contraction(s, i, true); ok {
			return end
		}
	}
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isL(r) {
		return runOf(s, i, isL)
	}
	if !isNL(r) && !isN(r) {
		if r2, n2 := at(s, i+n); n2 > 0 && isL(r2) {
			return runOf(s, i+n, isL)
		}
	}
	// \p{N}{1,maxDigits}
	if isN(r) {
		end := i + n
		for k := 1; k < maxDigits; k++ {
			r2, n2 := at(s, end)
			if n2 == 0 || !isN(r2) {
				break
			}
			end += n2
		}
		return end
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	j := i
	if r == ' ' {
		if r2, n2 := at(s, i+n); n2 > 0 && isP(r2) {
			j, r = i+n, r2
		}
	}
	if isP(r) {
		end := runOf(s, j, isP)
		return runOf(s, end, isNL)
	}
	// \s*[\r\n]+ : through the last line break of the white-space run.
	end := runOf(s, i, isS)
	for k := end; k > i; {
		r2, n2 := utf8.DecodeLastRuneInString(s[:k])
		if isNL(r2) {
			return k
		}
		k -= n2
	}
	// \s+(?!\S)|\s+
	return spaceEnd(s, i)
}

// split cuts s into pre-tokens with the given splitter and calls emit with
// each, in order. Every byte of s lands in exactly one piece.
func split(s string, style splitStyle, emit func(piece string)) {
	for i := 0; i < len(s); {
		var end int
		switch style {
		case styleGPT2:
			end = nextGPT2(s, i)
		case styleQwen2:
			end = nextQwen2(s, i, 1)
		default:
			end = nextQwen2(s, i, 3)
		}
		if end <= i { // cannot happen; guarantees progress regardless
			_, n := at(s, i)
			end = i + n
		}
		emit(s[i:end])
		i = end
	}
}
