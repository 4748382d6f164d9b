package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// EndOfText is the GPT-2 end-of-text token, also Qwen2's padding and base
// model end token.
const EndOfText = "<|endoftext|>"

// LoadGPT2 reads GPT-2's original vocabulary pair: encoder.json (token to
// id) and vocab.bpe (merges, one "a b" per line after a "#version" line).
// Either file may be gzip-compressed. The same layout is used by the
// vocab.json and merges.txt files of Hugging Face checkpoints; the tokenizer
// splits text with GPT-2's pattern and treats "<|endoftext|>" as a special
// token when the vocabulary has it.
func LoadGPT2(encoderPath, bpePath string) (*Tokenizer, error) {
	enc, err := readMaybeGzip(encoderPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", encoderPath, err)
	}
	bpe, err := readMaybeGzip(bpePath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s: %w", bpePath, err)
	}
	t, err := ParseGPT2(enc, bpe)
	if err != nil {
		return nil, fmt.Errorf("tokenizer %s, %s: %w", encoderPath, bpePath, err)
	}
	return t, nil
}

// ParseGPT2 builds a tokenizer from the contents of encoder.json and
// vocab.bpe (see LoadGPT2).
func ParseGPT2(encoderJSON, vocabBPE []byte) (*Tokenizer, error) {
	var vocab map[string]int
	if err := json.Unmarshal(encoderJSON, &vocab); err != nil {
		return nil, fmt.Errorf("encoder: %v: %w", err, ErrFormat)
	}
	if vocab == nil {
		return nil, fmt.Errorf("encoder: not a JSON object: %w", ErrFormat)
	}
	merges, err := parseMergesText(vocabBPE)
	if err != nil {
		return nil, err
	}
	var added []AddedToken
	if id, ok := vocab[EndOfText]; ok {
		added = append(added, AddedToken{ID: id, Content: EndOfText, Special: true})
	}
	return build(vocab, merges, added, []step{{split: true, style: styleGPT2}}, false, false)
}

// parseMergesText reads merges in the "a b" line format, skipping a leading
// "#version" comment and blank lines.
func parseMergesText(data []byte) ([]mergeEntry, error) {
	var merges []mergeEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if s == "" || (line == 1 && strings.HasPrefix(s, "#version")) {
			continue
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return nil, fmt.Errorf("merges line %d: %q is not two tokens separated by one space: %w", line, s, ErrFormat)
		}
		merges = append(merges, mergeEntry{a, b})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("merges: %v: %w", err, ErrFormat)
	}
	return merges, nil
}
