package tokenizer

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNFCGolden compares nfc with the NFC of Python's unicodedata module (the
// tables' source) over every code point that decomposes, combines or
// composes, each alone and in context, and thousands of random mixes.
func TestNFCGolden(t *testing.T) {
	var g struct {
		Unicode string      `json:"unicode"`
		Cases   [][2]string `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(readGz(t, "testdata/nfc-golden.json.gz"), &g))
	require.Equal(t, nfcUnicodeVersion, g.Unicode)
	require.Greater(t, len(g.Cases), 10000)
	for _, c := range g.Cases {
		require.Equal(t, c[1], nfc(c[0]), "nfc(%+q)", c[0])
		require.Equal(t, c[1], nfc(c[1]), "nfc is not idempotent on %+q", c[1])
	}
}

func TestNFCBasics(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"plain ascii":              "plain ascii",
		"e\u0301":                  "é",
		"A\u030a":                  "Å",
		"\u212b":                   "Å", // ANGSTROM SIGN, a singleton
		"\u1100\u1161\u11a8":       "각",
		"o\u0323\u0302":            "ộ",
		"o\u0302\u0323":            "ộ",
		"q\u0307\u0323":            "q\u0323\u0307", // reordered, nothing composes
		"\u0958":                   "\u0915\u093c",  // excluded from composition
		"ﬁ":                        "ﬁ",             // compatibility only: untouched
		"x\xffe\u0301\xc3":         "x\xffé\xc3",    // invalid bytes kept
		"\u0301e":                  "\u0301e",       // leading combining mark
		"日本語":                      "日本語",
		"e\u0301\u0301":            "é\u0301",
		"\u00e9\u0327":             "ȩ\u0301",
		"\u0041\u0308\u0304":       "Ǟ",
		"\u1100\u1161\u11a8\u11a8": "각\u11a8",
	} {
		assert.Equal(t, want, nfc(in), "nfc(%+q)", in)
	}
	// Already-normal text comes back as the same string, without copying.
	s := "naïve café 日本語"
	got := nfc(s)
	require.Equal(t, s, got)
	require.True(t, utf8.ValidString(got), "nfc(%q) = %q is not valid UTF-8", s, got)
}
