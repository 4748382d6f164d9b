package perk

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
)

// Example is one tokenized problem, the Engine's input.
type Example struct {
	// ID names the record it came from.
	ID string
	// Segments packs the context segments into one batch; CuSeqlens holds
	// the S+1 boundaries (positions restart at 0 in every segment and no
	// token attends across segments).
	Segments model.Batch
	// Prefix holds, per segment, the number of leading tokens that are not
	// targets (the tokens of "doc_{i}:"); at least 1. Token k ≥ Prefix[s]
	// of segment s is a target, predicted from position k−1.
	Prefix []int
	// Outer is the question sequence: prompt + " " + target + EOS.
	Outer model.Batch
	// PromptLen is the number of prompt tokens of Outer; the outer loss is
	// the mean cross-entropy of the tokens after them.
	PromptLen int
}

// NumSegments is the number of context segments.
func (e *Example) NumSegments() int { return len(e.Prefix) }

// NumTargets is the number of inner-loss target tokens over all segments.
func (e *Example) NumTargets() int {
	n := 0
	for s, p := range e.Prefix {
		n += int(e.Segments.CuSeqlens[s+1]-e.Segments.CuSeqlens[s]) - p
	}
	return n
}

// Validate checks the example against a model's vocabulary and position
// count (maxPositions 0: unlimited): well-formed segments, each with at
// least one target, and an outer sequence with at least one target.
func (e *Example) Validate(vocab, maxPositions int) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("example %q: %s", e.ID, fmt.Sprintf(format, args...))
	}
	cu := e.Segments.CuSeqlens
	if len(cu) < 2 {
		return fail("no context segments")
	}
	if err := e.Segments.Validate(); err != nil {
		return fail("segments: %v", err)
	}
	if len(e.Prefix) != len(cu)-1 {
		return fail("%d prefix lengths for %d segments", len(e.Prefix), len(cu)-1)
	}
	for s, p := range e.Prefix {
		n := int(cu[s+1] - cu[s])
		if p < 1 || p >= n {
			return fail("segment %d has %d tokens and prefix length %d (want 1 ≤ prefix < length)", s, n, p)
		}
		if maxPositions > 0 && n > maxPositions {
			return fail("segment %d has %d tokens, more than the model's %d positions", s, n, maxPositions)
		}
	}
	if err := e.Outer.Validate(); err != nil {
		return fail("outer sequence: %v", err)
	}
	if e.Outer.CuSeqlens != nil && len(e.Outer.CuSeqlens) != 2 {
		return fail("the outer sequence must be one segment")
	}
	if e.PromptLen < 1 || e.PromptLen >= e.Outer.Len() {
		return fail("prompt length %d with %d outer tokens (want 1 ≤ prompt < length)", e.PromptLen, e.Outer.Len())
	}
	if maxPositions > 0 && e.Outer.Len() > maxPositions {
		return fail("the outer sequence has %d tokens, more than the model's %d positions", e.Outer.Len(), maxPositions)
	}
	for _, b := range []model.Batch{e.Segments, e.Outer} {
		for i, id := range b.IDs {
			if id < 0 || int(id) >= vocab {
				return fail("token %d has id %d outside the vocabulary [0,%d)", i, id, vocab)
			}
		}
	}
	return nil
}

// Encoder turns records into Examples with a tokenizer.
type Encoder struct {
	// Tok is the tokenizer.
	Tok *tokenizer.Tokenizer
	// EOS is the id appended to every segment and to the outer target.
	EOS int
	// Vocab is the model's vocabulary size; token ids must be below it.
	Vocab int
	// MaxPositions is the model's position count; a longer segment or
	// outer sequence is an error (0: unlimited).
	MaxPositions int
	// SupportTarget makes the outer target
	// "<support>{support joined by \n}</support>\n<output>{answer}</output>"
	// instead of the bare answer. A record with no support (Record.Support
	// empty, e.g. a student-records aggregate question, whose support would
	// be every record) gets an empty support block:
	// "<support></support>\n<output>{answer}</output>".
	SupportTarget bool
}

// Prompt returns the outer prompt of a record with n documents.
func Prompt(n int, question string) string {
	return fmt.Sprintf("You have memorized %d documents.\n%s\nAnswer:", n, question)
}

// Target returns the outer target text of a record: the answer, or with
// SupportTarget the support and the answer in tags (an empty support block
// when the record has no support). The error is always nil.
func (enc *Encoder) Target(r Record) (string, error) {
	if !enc.SupportTarget {
		return r.Answer, nil
	}
	return "<support>" + strings.Join(r.Support, "\n") + "</support>\n<output>" + r.Answer + "</output>", nil
}

// Encode tokenizes a record. docIDs, when non-nil, gives the document
// number written before each segment (a permutation of 0..S−1 when docs
// are shuffled); nil numbers them in order. Segment i is "doc_{id}:"
// followed by " {context[i]}" and EOS, tokenized in two pieces so that the
// prefix's tokens are exactly tokenize("doc_{id}:"). The outer sequence is
// tokenize(prompt) + tokenize(" " + target) + EOS. A malformed record, a
// segment or outer sequence longer than MaxPositions, or a token id outside
// Vocab is an error naming the record.
func (enc *Encoder) Encode(r Record, docIDs []int) (*Example, error) {
	if enc.Tok == nil {
		return nil, fmt.Errorf("encoder: no tokenizer")
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if docIDs != nil && len(docIDs) != len(r.Context) {
		return nil, fmt.Errorf("record %q: %d document ids for %d segments", r.ID, len(docIDs), len(r.Context))
	}
	target, err := enc.Target(r)
	if err != nil {
		return nil, err
	}
	ex := &Example{ID: r.ID}
	cu := []int32{0}
	for i, text := range r.Context {
		id := i
		if docIDs != nil {
			id = docIDs[i]
		}
		prefix := enc.Tok.Encode(fmt.Sprintf("doc_%d:", id))
		body := enc.Tok.Encode(" " + text)
		seg := append(append(prefix, body...), enc.EOS)
		if enc.MaxPositions > 0 && len(seg) > enc.MaxPositions {
			return nil, fmt.Errorf("record %q: context segment %d has %d tokens, more than the model's %d positions", r.ID, i, len(seg), enc.MaxPositions)
		}
		if len(prefix) == 0 {
			return nil, fmt.Errorf("record %q: the prefix of segment %d tokenizes to nothing", r.ID, i)
		}
		for _, t := range seg {
			ex.Segments.IDs = append(ex.Segments.IDs, int32(t))
		}
		cu = append(cu, int32(len(ex.Segments.IDs)))
		ex.Prefix = append(ex.Prefix, len(prefix))
	}
	ex.Segments.CuSeqlens = cu
	prompt := enc.Tok.Encode(Prompt(len(r.Context), r.Question))
	tgt := enc.Tok.Encode(" " + target)
	outer := append(append(prompt, tgt...), enc.EOS)
	if enc.MaxPositions > 0 && len(outer) > enc.MaxPositions {
		return nil, fmt.Errorf("record %q: the question sequence has %d tokens, more than the model's %d positions", r.ID, len(outer), enc.MaxPositions)
	}
	for _, t := range outer {
		ex.Outer.IDs = append(ex.Outer.IDs, int32(t))
	}
	ex.PromptLen = len(prompt)
	if err := ex.Validate(enc.Vocab, enc.MaxPositions); err != nil {
		return nil, err
	}
	return ex, nil
}

// NewEncoder returns the records' encoder for a model with configuration
// cfg: its vocabulary and, for GPT-2 (learned positions), its position
// count as the longest sequence; tok and eos are the model's tokenizer and
// end-of-sequence token.
func NewEncoder(tok *tokenizer.Tokenizer, eos int, cfg model.Config) *Encoder {
	enc := &Encoder{Tok: tok, EOS: eos, Vocab: cfg.Vocab}
	if cfg.ModelType == model.GPT2 {
		enc.MaxPositions = cfg.MaxPositions
	}
	return enc
}

// LoadEncoder reads the tokenizer.json of a model directory and its
// end-of-sequence token (EOSToken) and returns NewEncoder's encoder for cfg.
func LoadEncoder(dir string, cfg model.Config) (*Encoder, error) {
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", dir, err)
	}
	eos, err := EOSToken(tok, dir)
	if err != nil {
		return nil, err
	}
	return NewEncoder(tok, eos, cfg), nil
}

// EOSToken finds the end-of-sequence token of a tokenizer: the eos_token
// of tokenizer_config.json in dir when that file exists and names one,
// otherwise "<|endoftext|>".
func EOSToken(tok *tokenizer.Tokenizer, dir string) (int, error) {
	name := tokenizer.EndOfText
	cpath := filepath.Join(dir, "tokenizer_config.json")
	if c, err := tokenizer.LoadConfig(cpath); err == nil && c.EOSToken != "" {
		name = c.EOSToken
	} else if err != nil && !isNotExist(err) {
		return 0, err
	}
	id, ok := tok.TokenID(name)
	if !ok {
		return 0, fmt.Errorf("tokenizer in %s has no end-of-sequence token %q", dir, name)
	}
	return id, nil
}
