package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// BuildWordLevel builds a small tokenizer from a corpus and returns its
// tokenizer.json: a byte-level BPE tokenizer in GPT-2's format (GPT-2's
// pre-tokenizer, so " Mary" and "Mary" are different words) whose
// vocabulary is
//
//	ids 0–255      the 256 byte tokens (id = byte value), so any text encodes;
//	id 256         EndOfText, a special token;
//	ids 257…       the maxWords most frequent multi-byte pre-tokens of texts
//	               that occur at least minCount times (ties broken by text),
//	               in that order, leaving out pre-tokens with a digit.
//
// It has no merges and sets "ignore_merges", so a pre-token in the
// vocabulary is one token and any other is spelled byte by byte. Numbers
// are always spelled digit by digit, so a number the corpus never had (a
// larger document count, say) is still made of known tokens. It is the
// tokenizer a model trained from scratch on a small synthetic corpus needs:
// a vocabulary of a few hundred words instead of GPT-2's 50,257, and
// sequences a few times shorter than bytes. maxWords 0 gives the byte-level
// tokenizer (257 tokens). The output is deterministic.
func BuildWordLevel(texts []string, maxWords, minCount int) ([]byte, error) {
	if maxWords < 0 {
		return nil, fmt.Errorf("word-level tokenizer: %d words, want ≥ 0", maxWords)
	}
	vocab := make(map[string]int, 257+maxWords)
	for b := 0; b < 256; b++ {
		vocab[string(byteToRune[b])] = b
	}
	if maxWords > 0 {
		pre := &Tokenizer{steps: []step{{split: true, style: styleGPT2}}}
		count := map[string]int{}
		for _, t := range texts {
			pre.pretokenize(t, func(p string) {
				if len(p) > 1 && !strings.ContainsAny(p, "0123456789") {
					count[p]++
				}
			})
		}
		words := make([]string, 0, len(count))
		for w, c := range count {
			if c >= max(minCount, 1) {
				words = append(words, w)
			}
		}
		sort.Slice(words, func(i, j int) bool {
			if ci, cj := count[words[i]], count[words[j]]; ci != cj {
				return ci > cj
			}
			return words[i] < words[j]
		})
		if len(words) > maxWords {
			words = words[:maxWords]
		}
		for i, w := range words {
			vocab[byteLevel(w)] = 257 + i
		}
	}
	doc := map[string]any{
		"version": "1.0",
		"added_tokens": []any{map[string]any{"id": 256, "content": EndOfText, "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false, "special": true}},
		"normalizer":    nil,
		"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
		"decoder":       map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model": map[string]any{"type": "BPE", "dropout": nil, "unk_token": nil, "continuing_subword_prefix": "",
			"end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": true,
			"vocab": vocab, "merges": []any{}},
	}
	return json.MarshalIndent(doc, "", " ")
}
