package tokenizer

//go:generate python3 gen_nfc_tables.py

import (
	"sort"
	"strings"
	"sync"
	"unicode/utf8"
)

// Hangul syllable arithmetic (Unicode §3.12).
const (
	hangulS0     = 0xAC00
	hangulL0     = 0x1100
	hangulV0     = 0x1161
	hangulT0     = 0x11A7
	hangulLCount = 19
	hangulVCount = 21
	hangulTCount = 28
	hangulNCount = hangulVCount * hangulTCount
	hangulSCount = hangulLCount * hangulNCount
)

// nfcData holds the tables, built on first use.
var nfcData struct {
	once    sync.Once
	decomp  map[rune][2]rune  // canonical decomposition (second 0 if single)
	compose map[uint64]rune   // primary composites by (first, second)
	suspect map[rune]struct{} // runes that may make a string not NFC
}

func nfcInit() {
	d := &nfcData
	d.decomp = make(map[rune][2]rune, len(nfcDecompositions)/3)
	d.compose = make(map[uint64]rune, len(nfcDecompositions)/3)
	d.suspect = make(map[rune]struct{}, len(nfcDecompositions))
	for i := 0; i+2 < len(nfcDecompositions); i += 3 {
		cp := rune(nfcDecompositions[i] &^ (1 << 31))
		a, b := rune(nfcDecompositions[i+1]), rune(nfcDecompositions[i+2])
		d.decomp[cp] = [2]rune{a, b}
		d.suspect[cp] = struct{}{}
		if nfcDecompositions[i]&(1<<31) != 0 {
			d.compose[uint64(a)<<32|uint64(b)] = cp
			d.suspect[b] = struct{}{} // may compose with what precedes it
		}
	}
	for i := 0; i+2 < len(nfcCombiningClasses); i += 3 {
		for r := rune(nfcCombiningClasses[i]); r <= rune(nfcCombiningClasses[i+1]); r++ {
			d.suspect[r] = struct{}{}
		}
	}
	// Hangul vowels and trailing consonants compose with what precedes them.
	for r := rune(hangulV0); r < hangulV0+hangulVCount; r++ {
		d.suspect[r] = struct{}{}
	}
	for r := rune(hangulT0 + 1); r < hangulT0+hangulTCount; r++ {
		d.suspect[r] = struct{}{}
	}
}

// combiningClass returns the canonical combining class of r.
func combiningClass(r rune) uint8 {
	t := nfcCombiningClasses[:]
	n := len(t) / 3
	i := sort.Search(n, func(i int) bool { return rune(t[3*i+1]) >= r })
	if i < n && rune(t[3*i]) <= r {
		return uint8(t[3*i+2])
	}
	return 0
}

// nfc returns s in Unicode Normalization Form C. Bytes that are not valid
// UTF-8 are kept as they are and split the text around them.
func nfc(s string) string {
	i := 0
	for i < len(s) && s[i] < utf8.RuneSelf {
		i++
	}
	if i == len(s) {
		return s // ASCII is always NFC
	}
	nfcData.once.Do(nfcInit)
	if !nfcSuspect(s[i:]) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for j := 0; j < len(s); {
		k := j
		for k < len(s) {
			r, n := utf8.DecodeRuneInString(s[k:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			k += n
		}
		if k > j {
			b.WriteString(nfcRun(s[j:k]))
		}
		if k < len(s) { // an invalid byte, kept verbatim
			b.WriteByte(s[k])
			k++
		}
		j = k
	}
	return b.String()
}

// nfcSuspect reports whether s holds a rune that might not be in NFC: one
// with a decomposition, a non-zero combining class, or one that composes with
// its predecessor. A string without any is already NFC.
func nfcSuspect(s string) bool {
	for _, r := range s {
		if r < 0xC0 {
			continue // nothing below U+00C0 decomposes, combines or composes
		}
		if _, ok := nfcData.suspect[r]; ok {
			return true
		}
	}
	return false
}

// decompose appends the full canonical decomposition of r to buf.
func decompose(buf []rune, r rune) []rune {
	if r >= hangulS0 && r < hangulS0+hangulSCount {
		si := r - hangulS0
		buf = append(buf, hangulL0+si/hangulNCount, hangulV0+(si%hangulNCount)/hangulTCount)
		if t := si % hangulTCount; t != 0 {
			buf = append(buf, hangulT0+t)
		}
		return buf
	}
	d, ok := nfcData.decomp[r]
	if !ok {
		return append(buf, r)
	}
	buf = decompose(buf, d[0])
	if d[1] != 0 {
		buf = decompose(buf, d[1])
	}
	return buf
}

// composePair returns the primary composite of a and b, if there is one.
func composePair(a, b rune) (rune, bool) {
	if a >= hangulL0 && a < hangulL0+hangulLCount && b >= hangulV0 && b < hangulV0+hangulVCount {
		return hangulS0 + ((a-hangulL0)*hangulVCount+(b-hangulV0))*hangulTCount, true
	}
	if a >= hangulS0 && a < hangulS0+hangulSCount && (a-hangulS0)%hangulTCount == 0 &&
		b > hangulT0 && b < hangulT0+hangulTCount {
		return a + (b - hangulT0), true
	}
	c, ok := nfcData.compose[uint64(a)<<32|uint64(b)]
	return c, ok
}

// nfcRun normalises a valid UTF-8 string: canonical decomposition, canonical
// ordering, then canonical composition.
func nfcRun(s string) string {
	buf := make([]rune, 0, len(s))
	for _, r := range s {
		buf = decompose(buf, r)
	}
	// Canonical ordering: stable-sort each run of non-starters by class.
	classes := make([]uint8, len(buf))
	for i, r := range buf {
		classes[i] = combiningClass(r)
	}
	for i := 1; i < len(buf); i++ {
		for j := i; j > 0 && classes[j] != 0 && classes[j-1] > classes[j]; j-- {
			buf[j], buf[j-1] = buf[j-1], buf[j]
			classes[j], classes[j-1] = classes[j-1], classes[j]
		}
	}
	// Canonical composition.
	out := buf[:0]
	starter := -1    // index in out of the last starter
	var lastCC uint8 // class of the last rune kept after that starter
	for i, r := range buf {
		cc := classes[i]
		if starter >= 0 {
			adjacent := starter == len(out)-1
			if adjacent || (lastCC != 0 && lastCC < cc) {
				if c, ok := composePair(out[starter], r); ok {
					out[starter] = c
					continue
				}
			}
		}
		if cc == 0 {
			starter = len(out)
		}
		lastCC = cc
		out = append(out, r)
	}
	return string(out)
}
