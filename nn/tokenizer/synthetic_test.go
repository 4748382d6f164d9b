package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// synthetic builds a small tokenizer.json document: the 256 byte tokens
// (id = byte value), four merges spelling "hello", and a few added tokens.
func synthetic(mod func(doc map[string]any)) map[string]any {
	vocab := map[string]int{}
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = b
	}
	vocab["he"], vocab["ll"], vocab["hell"], vocab["hello"], vocab["xyz"] = 256, 257, 258, 259, 310
	doc := map[string]any{
		"added_tokens": []any{
			map[string]any{"id": 300, "content": "<s>", "special": true},
			map[string]any{"id": 301, "content": "[L]", "lstrip": true},
			map[string]any{"id": 302, "content": "[R]", "rstrip": true},
			map[string]any{"id": 303, "content": "WORD", "single_word": true},
			map[string]any{"id": 304, "content": "<s>x"},
		},
		"normalizer":    nil,
		"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
		"decoder":       map[string]any{"type": "ByteLevel"},
		"model": map[string]any{
			"type": "BPE", "vocab": vocab,
			"merges": []any{"h e", []string{"l", "l"}, "he ll", []string{"hell", "o"}},
		},
	}
	if mod != nil {
		mod(doc)
	}
	return doc
}

func parseDoc(t *testing.T, doc map[string]any) (*Tokenizer, error) {
	t.Helper()
	data, err := json.Marshal(doc)
	require.NoError(t, err)
	return Parse(data)
}

func TestSyntheticTokenizer(t *testing.T) {
	tk, err := parseDoc(t, synthetic(nil))
	require.NoError(t, err)
	cases := map[string][]int{
		"hello":     {259},
		"hellohe":   {259, 256},
		"a <s>b":    {97, 32, 300, 98},
		"<s>xy":     {304, 121}, // longest added token wins
		"a  [L]b":   {97, 301, 98},
		"a[R]  b":   {97, 302, 98},
		"xWORD":     {120, 87, 79, 82, 68},
		"x WORD y":  {120, 32, 303, 32, 121},
		"WORD":      {303},
		"xyz":       {120, 121, 122},
		"<s><s>":    {300, 300},
		"<s":        {60, 115},
		" \n[L]\t ": {301, 9, 32},
	}
	for in, want := range cases {
		require.Equal(t, want, tk.Encode(in), in)
	}
	require.Equal(t, "a<s>b", tk.Decode([]int{97, 300, 98}))
	require.Equal(t, "ab", tk.DecodeSkipSpecial([]int{97, 300, 98}))
	require.Equal(t, "a[L]", tk.DecodeSkipSpecial([]int{97, 301}))
	require.Equal(t, 311, tk.VocabSize())
	ids := []int{}
	for _, a := range tk.AddedTokens() {
		ids = append(ids, a.ID)
	}
	require.Equal(t, []int{300, 301, 302, 303, 304}, ids)

	// ignore_merges takes whole words straight from the vocabulary.
	tk, err = parseDoc(t, synthetic(func(d map[string]any) { d["model"].(map[string]any)["ignore_merges"] = true }))
	require.NoError(t, err)
	require.Equal(t, []int{310}, tk.Encode("xyz"))
	// add_prefix_space puts a space before each plain-text segment.
	tk, err = parseDoc(t, synthetic(func(d map[string]any) {
		d["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true}
	}))
	require.NoError(t, err)
	require.Equal(t, []int{32, 259}, tk.Encode("hello"))
	require.Equal(t, []int{32, 259, 300, 32, 259}, tk.Encode("hello<s>hello"))
	// A Qwen-style sequence with NFC.
	tk, err = parseDoc(t, synthetic(func(d map[string]any) {
		d["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "NFC"}}}
		d["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternQwen2}, "behavior": "Isolated", "invert": false},
			map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": false},
		}}
	}))
	require.NoError(t, err)
	require.Equal(t, []string{"hello", "1", "2", " x"}, tk.Pretokenize("hello12 x"))
	require.Equal(t, "é", tk.Decode(tk.Encode("e\u0301")))
	// No pre-tokenizer split at all: the whole text is one word.
	tk, err = parseDoc(t, synthetic(func(d map[string]any) {
		d["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "use_regex": false}
	}))
	require.NoError(t, err)
	require.Equal(t, []string{"a b  c"}, tk.Pretokenize("a b  c"))

	// Concurrent use is safe.
	tk, _ = parseDoc(t, synthetic(nil))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				// assert, not require: FailNow must not be called off the test goroutine.
				if !assert.Equal(t, "hello world <s> again", tk.Decode(tk.Encode("hello world <s> again")), "round trip") {
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestParseErrors(t *testing.T) {
	model := func(k string, v any) func(map[string]any) {
		return func(d map[string]any) { d["model"].(map[string]any)[k] = v }
	}
	cases := map[string]func(map[string]any){
		"missing byte token":  func(d map[string]any) { delete(d["model"].(map[string]any)["vocab"].(map[string]int), "a") },
		"unknown merge token": model("merges", []any{"q z9"}),
		"bad merge string":    model("merges", []any{"abc"}),
		"bad merge spaces":    model("merges", []any{"a b c"}),
		"bad merge array":     model("merges", []any{[]string{"a"}}),
		"merge number":        model("merges", []any{7}),
		"model type":          model("type", "WordPiece"),
		"byte fallback":       model("byte_fallback", true),
		"subword prefix":      model("continuing_subword_prefix", "##"),
		"suffix":              model("end_of_word_suffix", "</w>"),
		"dropout":             model("dropout", 0.1),
		"no vocab":            func(d map[string]any) { delete(d["model"].(map[string]any), "vocab") },
		"negative id":         func(d map[string]any) { d["model"].(map[string]any)["vocab"].(map[string]int)["neg"] = -1 },
		"huge id":             func(d map[string]any) { d["model"].(map[string]any)["vocab"].(map[string]int)["big"] = 1 << 30 },
		"shared id":           func(d map[string]any) { d["model"].(map[string]any)["vocab"].(map[string]int)["dup"] = 97 },
		"normalizer":          func(d map[string]any) { d["normalizer"] = map[string]any{"type": "Lowercase"} },
		"pre_tokenizer":       func(d map[string]any) { d["pre_tokenizer"] = map[string]any{"type": "Whitespace"} },
		"pattern": func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": `\w+`}, "behavior": "Isolated"}
		},
		"string pattern": func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"String": " "}, "behavior": "Isolated"}
		},
		"behavior": func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": PatternQwen2}, "behavior": "Removed"}
		},
		"not byte level": func(d map[string]any) {
			d["pre_tokenizer"] = nil
			d["decoder"] = map[string]any{"type": "Metaspace"}
		},
		"added empty":   func(d map[string]any) { d["added_tokens"] = []any{map[string]any{"id": 400, "content": ""}} },
		"added no id":   func(d map[string]any) { d["added_tokens"] = []any{map[string]any{"content": "x"}} },
		"added huge id": func(d map[string]any) { d["added_tokens"] = []any{map[string]any{"id": 1 << 30, "content": "x"}} },
		"added clash":   func(d map[string]any) { d["added_tokens"] = []any{map[string]any{"id": 97, "content": "<q>"}} },
		"added same id": func(d map[string]any) {
			d["added_tokens"] = []any{map[string]any{"id": 400, "content": "<q>"}, map[string]any{"id": 400, "content": "<r>"}}
		},
		"vocab not dict": func(d map[string]any) { d["model"].(map[string]any)["vocab"] = []int{1} },
	}
	for name, mod := range cases {
		_, err := parseDoc(t, synthetic(mod))
		require.ErrorIs(t, err, ErrFormat, name)
	}
	_, err := Parse([]byte("{not json"))
	require.ErrorIs(t, err, ErrFormat)
	_, err = Parse([]byte(`[]`))
	require.ErrorIs(t, err, ErrFormat)

	dir := t.TempDir()
	_, err = Load(filepath.Join(dir, "missing.json"))
	require.ErrorContains(t, err, "missing.json")
	data, _ := json.Marshal(synthetic(nil))
	p := filepath.Join(dir, "tokenizer.json")
	require.NoError(t, os.WriteFile(p, data, 0o644))
	tk, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, []int{259}, tk.Encode("hello"))
	require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o644))
	_, err = Load(p)
	require.ErrorIs(t, err, ErrFormat)
	require.ErrorContains(t, err, p)
}

func TestGPT2PairErrors(t *testing.T) {
	enc := readGz(t, "testdata/gpt2-encoder.json.gz")
	bpe := readGz(t, "testdata/gpt2-vocab.bpe.gz")
	_, err := ParseGPT2(enc, []byte("#version: 0.2\nĠ t\nbad line here\n"))
	require.ErrorIs(t, err, ErrFormat)
	require.ErrorContains(t, err, "line 3")
	_, err = ParseGPT2([]byte("[1,2]"), bpe)
	require.ErrorIs(t, err, ErrFormat)
	_, err = ParseGPT2([]byte("null"), bpe)
	require.ErrorIs(t, err, ErrFormat)
	_, err = ParseGPT2(enc, []byte("#version: 0.2\nzz qq\n"))
	require.ErrorIs(t, err, ErrFormat)
	// CRLF line endings and a missing version line are accepted.
	crlf := strings.ReplaceAll(strings.TrimPrefix(string(bpe), "#version: 0.2\n"), "\n", "\r\n")
	tk, err := ParseGPT2(enc, []byte(crlf))
	require.NoError(t, err)
	require.Equal(t, []int{15496, 995}, tk.Encode("Hello world"))
	_, err = LoadGPT2("testdata/nope.json", "testdata/gpt2-vocab.bpe.gz")
	require.Error(t, err)
	_, err = LoadGPT2("testdata/gpt2-encoder.json.gz", "testdata/nope.bpe")
	require.Error(t, err)
}

func TestParseConfigForms(t *testing.T) {
	c, err := ParseConfig([]byte(`{"bos_token":{"__type":"AddedToken","content":"<s>"},"eos_token":"</s>","pad_token":null,"add_bos_token":true,
		"chat_template":[{"name":"default","template":"T"},{"name":"tool_use","template":"U"}]}`))
	require.NoError(t, err)
	require.Equal(t, Config{BOSToken: "<s>", EOSToken: "</s>", AddBOSToken: true, ChatTemplate: "T"}, c)
	_, err = ParseConfig([]byte(`{"eos_token":5}`))
	require.ErrorIs(t, err, ErrFormat)
	_, err = ParseConfig([]byte(`nope`))
	require.ErrorIs(t, err, ErrFormat)
	_, err = LoadConfig("testdata/none.json")
	require.Error(t, err)
}

func TestEncodeOrdinary(t *testing.T) {
	tk := qwen(t)
	require.Equal(t, []int{151645}, tk.Encode("<|im_end|>"))
	ord := tk.EncodeOrdinary("<|im_end|>")
	require.Greater(t, len(ord), 1, "control token text must not become the control token")
	for _, id := range ord {
		require.False(t, tk.IsSpecial(id), "id %d", id)
	}
	require.Equal(t, "<|im_end|>", tk.Decode(ord))
}

func TestStream(t *testing.T) {
	for _, tk := range []*Tokenizer{gpt2(t), qwen(t)} {
		for _, text := range []string{"héllo wörld 日本語 😀👍🏽 done", "a\xffb\xc3", "plain", "<|endoftext|>x"} {
			ids := tk.Encode(text)
			st := tk.NewStream(false)
			var got string
			for _, id := range ids {
				piece := st.Next(id)
				require.True(t, utf8ValidOrHasInvalid(text, piece), "stream emitted a broken piece %q of %q", piece, text)
				got += piece
			}
			got += st.Flush()
			require.Equal(t, nfc(text), got, text)
		}
	}
	tk := gpt2(t)
	st := tk.NewStream(true)
	require.Equal(t, "", st.Next(50256))
	require.Equal(t, "", st.Next(-3))
	// "😀" is split over several GPT-2 tokens; nothing shows until it is whole.
	ids := tk.Encode("😀")
	require.Greater(t, len(ids), 1)
	for _, id := range ids[:len(ids)-1] {
		require.Equal(t, "", st.Next(id))
	}
	require.Equal(t, "😀", st.Next(ids[len(ids)-1]))
	require.Equal(t, "", st.Flush())
}

// utf8ValidOrHasInvalid accepts a piece if it is valid UTF-8, or if the
// source text itself was not.
func utf8ValidOrHasInvalid(src, piece string) bool {
	return utf8.ValidString(piece) || !utf8.ValidString(src)
}
