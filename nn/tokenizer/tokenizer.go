// Package tokenizer implements the byte-level BPE tokenizers of the GPT-2 and
// Qwen2 model families, loaded from a Hugging Face tokenizer.json or from
// GPT-2's original encoder.json and vocab.bpe pair.
//
// Encoding first cuts the text at added tokens (special tokens such as
// "<|endoftext|>", longest match first), normalises the remaining text where
// the tokenizer asks for it (NFC for Qwen2), splits it into pre-tokens with
// the model's split pattern, maps each pre-token's bytes to the byte-level
// alphabet and merges byte pairs by rank. Decoding maps tokens back to bytes;
// text that is not valid UTF-8 comes back byte for byte.
package tokenizer

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxID bounds token ids accepted from files, so a corrupt file cannot make
// the loader allocate without limit.
const maxID = 1 << 24

// cacheSize is the number of pre-tokens whose tokens are remembered, and
// maxCachedPiece the longest pre-token (in bytes) worth remembering.
const (
	cacheSize      = 10000
	maxCachedPiece = 256
)

// ErrFormat is wrapped by every error about malformed or unsupported
// tokenizer files.
var ErrFormat = errors.New("invalid tokenizer file")

// AddedToken is a token matched verbatim in the input before pre-tokenizing.
type AddedToken struct {
	// ID is the token id.
	ID int
	// Content is the text the token stands for.
	Content string
	// Special marks control tokens such as "<|endoftext|>" (DecodeSkipSpecial
	// leaves them out).
	Special bool
	// SingleWord restricts matches to whole words.
	SingleWord bool
	// LStrip and RStrip make a match absorb the white space on its left or
	// right.
	LStrip, RStrip bool
	// Normalized is the file's "normalized" flag. Matching always uses the
	// raw text, which is equivalent for the ASCII-only tokens of GPT-2 and
	// Qwen2.
	Normalized bool
}

// step is one stage of pre-tokenization.
type step struct {
	prefixSpace bool // prepend a space to pieces not starting with one
	split       bool // cut pieces with style
	style       splitStyle
}

// Tokenizer is a loaded byte-level BPE tokenizer. It is safe for concurrent
// use.
type Tokenizer struct {
	vocab        map[string]int // byte-level token string -> id
	idBytes      [][]byte       // id -> raw bytes; nil for unused ids
	idToken      []string       // id -> token string as the vocabulary spells it
	merges       map[uint64]merge
	byteID       [256]int32
	added        []AddedToken // longest content first
	addedID      map[int]int  // id -> index into added
	addedFirst   [256]bool    // first bytes of added token contents
	steps        []step
	nfc          bool
	ignoreMerges bool
	cache        cache
}

// VocabSize is one more than the largest token id, added tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.idBytes) }

// AddedTokens returns the added tokens, ordered by id.
func (t *Tokenizer) AddedTokens() []AddedToken {
	out := slices.Clone(t.added)
	slices.SortFunc(out, func(a, b AddedToken) int { return a.ID - b.ID })
	return out
}

// TokenID looks a token up by its text: an added token's content (such as
// "<|endoftext|>" or "<|im_end|>"), else a vocabulary entry spelled in the
// byte-level alphabet (such as "Ġthe").
func (t *Tokenizer) TokenID(token string) (int, bool) {
	for _, a := range t.added {
		if a.Content == token {
			return a.ID, true
		}
	}
	id, ok := t.vocab[token]
	return id, ok
}

// Token returns the text of a token id: an added token's content, or the
// vocabulary entry in the byte-level alphabet.
func (t *Tokenizer) Token(id int) (string, bool) {
	if id < 0 || id >= len(t.idBytes) || t.idBytes[id] == nil {
		return "", false
	}
	return t.idToken[id], true
}

// TokenBytes returns the raw bytes a token id decodes to (a copy), which may
// be a fragment of a UTF-8 sequence.
func (t *Tokenizer) TokenBytes(id int) ([]byte, bool) {
	if id < 0 || id >= len(t.idBytes) || t.idBytes[id] == nil {
		return nil, false
	}
	return slices.Clone(t.idBytes[id]), true
}

// IsSpecial reports whether id is an added token marked special.
func (t *Tokenizer) IsSpecial(id int) bool {
	i, ok := t.addedID[id]
	return ok && t.added[i].Special
}

// Encode returns the token ids of text. Added tokens written in the text
// (special ones included) are recognised, as the reference implementation
// does by default; use EncodeOrdinary for untrusted text.
func (t *Tokenizer) Encode(text string) []int {
	return t.encode(text, true)
}

// EncodeOrdinary is Encode without recognising added tokens: text such as
// "<|im_end|>" is encoded as ordinary characters, so untrusted input cannot
// inject control tokens.
func (t *Tokenizer) EncodeOrdinary(text string) []int {
	return t.encode(text, false)
}

func (t *Tokenizer) encode(text string, withAdded bool) []int {
	var out []int
	each := t.eachSegment
	if !withAdded {
		each = func(text string, fn func(string, int)) { fn(text, -1) }
	}
	each(text, func(seg string, added int) {
		if added >= 0 {
			out = append(out, added)
			return
		}
		if t.nfc {
			seg = nfc(seg)
		}
		t.pretokenize(seg, func(piece string) {
			out = t.encodePiece(piece, out)
		})
	})
	return out
}

// Pretokenize returns the pieces Encode would run byte-pair merging on, with
// added tokens left out. It exists for inspection and tests.
func (t *Tokenizer) Pretokenize(text string) []string {
	var out []string
	t.eachSegment(text, func(seg string, added int) {
		if added >= 0 {
			return
		}
		if t.nfc {
			seg = nfc(seg)
		}
		t.pretokenize(seg, func(piece string) { out = append(out, piece) })
	})
	return out
}

// pretokenize runs the pre-tokenization steps over one segment.
func (t *Tokenizer) pretokenize(seg string, emit func(string)) {
	if seg == "" {
		return
	}
	pieces := []string{seg}
	for _, st := range t.steps {
		var next []string
		for _, p := range pieces {
			if st.prefixSpace && !strings.HasPrefix(p, " ") {
				p = " " + p
			}
			if st.split {
				split(p, st.style, func(q string) { next = append(next, q) })
			} else {
				next = append(next, p)
			}
		}
		pieces = next
	}
	for _, p := range pieces {
		emit(p)
	}
}

// encodePiece appends the tokens of one pre-token.
func (t *Tokenizer) encodePiece(piece string, out []int) []int {
	if v, ok := t.cache.get(piece); ok {
		return append(out, v...)
	}
	if len(piece) == 1 {
		return append(out, int(t.byteID[piece[0]]))
	}
	start := len(out)
	if id, ok := t.lookupWhole(piece); ok {
		out = append(out, id)
	} else {
		ids := make([]int32, len(piece))
		for i := 0; i < len(piece); i++ {
			ids[i] = t.byteID[piece[i]]
		}
		out = applyMerges(t.merges, ids, out)
	}
	if len(piece) <= maxCachedPiece {
		t.cache.put(piece, slices.Clone(out[start:]))
	}
	return out
}

// lookupWhole finds a whole pre-token in the vocabulary when the model skips
// merging for known words (ignore_merges).
func (t *Tokenizer) lookupWhole(piece string) (int, bool) {
	if !t.ignoreMerges {
		return 0, false
	}
	id, ok := t.vocab[byteLevel(piece)]
	return id, ok
}

// eachSegment cuts text at added tokens, calling fn with each stretch of
// plain text (added = -1) and each added token (its id, seg its match).
func (t *Tokenizer) eachSegment(text string, fn func(seg string, added int)) {
	if len(t.added) == 0 {
		fn(text, -1)
		return
	}
	plain := 0 // start of the pending plain text
	for i := 0; i < len(text); {
		if !t.addedFirst[text[i]] {
			i++
			continue
		}
		a, ok := t.matchAdded(text, i)
		if !ok {
			i++
			continue
		}
		start, end := i, i+len(a.Content)
		if a.LStrip {
			for start > plain {
				r, n := utf8.DecodeLastRuneInString(text[plain:start])
				if !unicode.IsSpace(r) {
					break
				}
				start -= n
			}
		}
		if a.RStrip {
			end = skipSpace(text, end)
		}
		if start > plain {
			fn(text[plain:start], -1)
		}
		fn(text[start:end], a.ID)
		plain, i = end, end
	}
	if plain < len(text) {
		fn(text[plain:], -1)
	}
}

// skipSpace returns the end of the white space starting at i.
func skipSpace(s string, i int) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += n
	}
	return i
}

// matchAdded finds the longest added token starting at byte i of text.
func (t *Tokenizer) matchAdded(text string, i int) (AddedToken, bool) {
	for _, a := range t.added { // longest first
		if !strings.HasPrefix(text[i:], a.Content) {
			continue
		}
		if a.SingleWord && (isWordBefore(text, i) || isWordAfter(text, i+len(a.Content))) {
			continue
		}
		return a, true
	}
	return AddedToken{}, false
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

func isWordBefore(s string, i int) bool {
	if i == 0 {
		return false
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return isWordRune(r)
}

func isWordAfter(s string, i int) bool {
	if i >= len(s) {
		return false
	}
	r, _ := utf8.DecodeRuneInString(s[i:])
	return isWordRune(r)
}

// Decode turns token ids back into text. Token bytes are concatenated as
// they are, so a sequence that is not valid UTF-8 comes back byte for byte.
// Ids that name no token are skipped.
func (t *Tokenizer) Decode(ids []int) string {
	return string(t.decode(ids, false))
}

// DecodeSkipSpecial is Decode without the special tokens.
func (t *Tokenizer) DecodeSkipSpecial(ids []int) string {
	return string(t.decode(ids, true))
}

func (t *Tokenizer) decode(ids []int, skipSpecial bool) []byte {
	var out []byte
	for _, id := range ids {
		if id < 0 || id >= len(t.idBytes) {
			continue
		}
		if skipSpecial && t.IsSpecial(id) {
			continue
		}
		out = append(out, t.idBytes[id]...)
	}
	return out
}

// readMaybeGzip reads a file, gunzipping it if it starts with the gzip magic
// number.
func readMaybeGzip(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		return io.ReadAll(zr)
	}
	return io.ReadAll(br)
}

// Load reads a Hugging Face tokenizer.json (optionally gzip-compressed).
func Load(path string) (*Tokenizer, error) {
	data, err := readMaybeGzip(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	t, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", path, err)
	}
	return t, nil
}

// hfFile is the subset of tokenizer.json this package reads.
type hfFile struct {
	AddedTokens []struct {
		ID         *int    `json:"id"`
		Content    *string `json:"content"`
		SingleWord bool    `json:"single_word"`
		LStrip     bool    `json:"lstrip"`
		RStrip     bool    `json:"rstrip"`
		Normalized bool    `json:"normalized"`
		Special    bool    `json:"special"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        struct {
		Type                    string         `json:"type"`
		Vocab                   map[string]int `json:"vocab"`
		Merges                  []mergeEntry   `json:"merges"`
		ByteFallback            bool           `json:"byte_fallback"`
		IgnoreMerges            bool           `json:"ignore_merges"`
		ContinuingSubwordPrefix *string        `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string        `json:"end_of_word_suffix"`
		Dropout                 *float64       `json:"dropout"`
	} `json:"model"`
}

// mergeEntry is one merge, written either as "a b" or as ["a", "b"].
type mergeEntry [2]string

// UnmarshalJSON accepts both spellings of a merge.
func (m *mergeEntry) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		a, c, ok := strings.Cut(s, " ")
		if !ok || a == "" || c == "" || strings.Contains(c, " ") {
			return fmt.Errorf("merge %q is not two tokens separated by one space", s)
		}
		m[0], m[1] = a, c
		return nil
	}
	var pair []string
	if err := json.Unmarshal(b, &pair); err != nil {
		return fmt.Errorf("merge %s: %v", b, err)
	}
	if len(pair) != 2 || pair[0] == "" || pair[1] == "" {
		return fmt.Errorf("merge %s does not have two tokens", b)
	}
	m[0], m[1] = pair[0], pair[1]
	return nil
}

// typed reads the "type" field of a component.
type typed struct {
	Type string `json:"type"`
}

// Parse builds a tokenizer from the contents of a tokenizer.json.
func Parse(data []byte) (*Tokenizer, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrFormat)
	}
	m := f.Model
	if m.Type != "" && m.Type != "BPE" {
		return nil, fmt.Errorf("model type %q is not BPE: %w", m.Type, ErrFormat)
	}
	if m.Vocab == nil {
		return nil, fmt.Errorf("model has no vocab: %w", ErrFormat)
	}
	if m.ByteFallback {
		return nil, fmt.Errorf("byte_fallback BPE is not supported: %w", ErrFormat)
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return nil, fmt.Errorf("continuing_subword_prefix %q is not supported: %w", *m.ContinuingSubwordPrefix, ErrFormat)
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, fmt.Errorf("end_of_word_suffix %q is not supported: %w", *m.EndOfWordSuffix, ErrFormat)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, fmt.Errorf("BPE dropout is not supported: %w", ErrFormat)
	}
	nfcOn, err := parseNormalizer(f.Normalizer)
	if err != nil {
		return nil, err
	}
	steps, byteLevelSeen, err := parsePreTokenizer(f.PreTokenizer)
	if err != nil {
		return nil, err
	}
	if !byteLevelSeen {
		var d typed
		_ = json.Unmarshal(f.Decoder, &d)
		if d.Type != "ByteLevel" {
			return nil, fmt.Errorf("not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer or decoder): %w", ErrFormat)
		}
	}
	added := make([]AddedToken, 0, len(f.AddedTokens))
	for i, a := range f.AddedTokens {
		if a.ID == nil || a.Content == nil {
			return nil, fmt.Errorf("added_tokens[%d]: missing id or content: %w", i, ErrFormat)
		}
		added = append(added, AddedToken{
			ID: *a.ID, Content: *a.Content, Special: a.Special, SingleWord: a.SingleWord,
			LStrip: a.LStrip, RStrip: a.RStrip, Normalized: a.Normalized,
		})
	}
	return build(m.Vocab, m.Merges, added, steps, nfcOn, m.IgnoreMerges)
}

// parseNormalizer accepts no normalizer, NFC, or a sequence of NFC.
func parseNormalizer(raw json.RawMessage) (bool, error) {
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return false, nil
	}
	var n struct {
		Type        string            `json:"type"`
		Normalizers []json.RawMessage `json:"normalizers"`
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return false, fmt.Errorf("normalizer: %v: %w", err, ErrFormat)
	}
	switch n.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		on := false
		for _, sub := range n.Normalizers {
			s, err := parseNormalizer(sub)
			if err != nil {
				return false, err
			}
			on = on || s
		}
		return on, nil
	}
	return false, fmt.Errorf("normalizer type %q is not supported: %w", n.Type, ErrFormat)
}

// parsePreTokenizer turns the pre_tokenizer config into steps, and reports
// whether a ByteLevel stage was present.
func parsePreTokenizer(raw json.RawMessage) ([]step, bool, error) {
	if len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null" {
		return nil, false, nil
	}
	var p struct {
		Type           string            `json:"type"`
		AddPrefixSpace bool              `json:"add_prefix_space"`
		UseRegex       *bool             `json:"use_regex"`
		Pretokenizers  []json.RawMessage `json:"pretokenizers"`
		Behavior       string            `json:"behavior"`
		Invert         bool              `json:"invert"`
		Pattern        struct {
			Regex  *string `json:"Regex"`
			String *string `json:"String"`
		} `json:"pattern"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, false, fmt.Errorf("pre_tokenizer: %v: %w", err, ErrFormat)
	}
	switch p.Type {
	case "ByteLevel":
		useRegex := p.UseRegex == nil || *p.UseRegex
		st := step{prefixSpace: p.AddPrefixSpace, split: useRegex, style: styleGPT2}
		if !st.prefixSpace && !st.split {
			return nil, true, nil
		}
		return []step{st}, true, nil
	case "Split":
		if p.Pattern.Regex == nil {
			return nil, false, fmt.Errorf("pre_tokenizer Split: only Regex patterns are supported: %w", ErrFormat)
		}
		style, ok := styleForPattern(*p.Pattern.Regex)
		if !ok {
			return nil, false, fmt.Errorf("pre_tokenizer Split: unsupported pattern %q: %w", *p.Pattern.Regex, ErrFormat)
		}
		if p.Behavior != "Isolated" || p.Invert {
			return nil, false, fmt.Errorf("pre_tokenizer Split: behavior %q (invert %v) is not supported: %w", p.Behavior, p.Invert, ErrFormat)
		}
		return []step{{split: true, style: style}}, false, nil
	case "Sequence":
		var steps []step
		seen := false
		for _, sub := range p.Pretokenizers {
			s, bl, err := parsePreTokenizer(sub)
			if err != nil {
				return nil, false, err
			}
			steps = append(steps, s...)
			seen = seen || bl
		}
		return steps, seen, nil
	}
	return nil, false, fmt.Errorf("pre_tokenizer type %q is not supported: %w", p.Type, ErrFormat)
}

// build assembles a tokenizer and checks the vocabulary's consistency.
func build(vocab map[string]int, merges []mergeEntry, added []AddedToken, steps []step, nfcOn, ignoreMerges bool) (*Tokenizer, error) {
	t := &Tokenizer{
		vocab:        vocab,
		merges:       make(map[uint64]merge, len(merges)),
		addedID:      map[int]int{},
		steps:        steps,
		nfc:          nfcOn,
		ignoreMerges: ignoreMerges,
		cache:        cache{m: map[string][]int{}, max: cacheSize},
	}
	size := 0
	for tok, id := range vocab {
		if id < 0 || id >= maxID {
			return nil, fmt.Errorf("vocab: token %q has id %d out of range: %w", tok, id, ErrFormat)
		}
		size = max(size, id+1)
	}
	for _, a := range added {
		if a.ID < 0 || a.ID >= maxID {
			return nil, fmt.Errorf("added token %q has id %d out of range: %w", a.Content, a.ID, ErrFormat)
		}
		if a.Content == "" {
			return nil, fmt.Errorf("added token %d has empty content: %w", a.ID, ErrFormat)
		}
		size = max(size, a.ID+1)
	}
	t.idBytes = make([][]byte, size)
	t.idToken = make([]string, size)
	for tok, id := range vocab {
		if t.idBytes[id] != nil {
			return nil, fmt.Errorf("vocab: tokens %q and %q share id %d: %w", t.idToken[id], tok, id, ErrFormat)
		}
		b, ok := unByteLevel(tok)
		if !ok { // not in the byte-level alphabet: decode as its own text
			b = []byte(tok)
		}
		if len(b) == 0 {
			return nil, fmt.Errorf("vocab: empty token with id %d: %w", id, ErrFormat)
		}
		t.idBytes[id] = b
		t.idToken[id] = tok
	}
	for b := 0; b < 256; b++ {
		id, ok := vocab[string(byteToRune[b])]
		if !ok {
			return nil, fmt.Errorf("vocab lacks the byte-level token for byte %#02x: %w", b, ErrFormat)
		}
		t.byteID[b] = int32(id)
	}
	for i, mg := range merges {
		a, ok1 := vocab[mg[0]]
		b, ok2 := vocab[mg[1]]
		c, ok3 := vocab[mg[0]+mg[1]]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("merge %d (%q %q) uses a token missing from the vocab: %w", i, mg[0], mg[1], ErrFormat)
		}
		k := pairKey(int32(a), int32(b))
		if _, dup := t.merges[k]; !dup { // the first (lowest rank) wins
			t.merges[k] = merge{rank: int32(i), id: int32(c)}
		}
	}
	for _, a := range added {
		if i, dup := t.addedID[a.ID]; dup {
			if t.added[i].Content != a.Content {
				return nil, fmt.Errorf("added tokens %q and %q share id %d: %w", t.added[i].Content, a.Content, a.ID, ErrFormat)
			}
			continue
		}
		if t.idBytes[a.ID] != nil && t.idToken[a.ID] != a.Content {
			if b, _ := unByteLevel(t.idToken[a.ID]); string(b) != a.Content {
				return nil, fmt.Errorf("added token %q reuses id %d of vocab token %q: %w", a.Content, a.ID, t.idToken[a.ID], ErrFormat)
			}
		}
		t.idBytes[a.ID] = []byte(a.Content)
		t.idToken[a.ID] = a.Content
		t.addedID[a.ID] = len(t.added)
		t.added = append(t.added, a)
	}
	slices.SortStableFunc(t.added, func(x, y AddedToken) int { return len(y.Content) - len(x.Content) })
	for i, a := range t.added {
		t.addedID[a.ID] = i
		t.addedFirst[a.Content[0]] = true
	}
	return t, nil
}
