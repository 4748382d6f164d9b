package perk

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/perkgo/perk/nn/model"
)

// Reasons a greedy decoding stopped (Generation.Stop).
const (
	// StopEOS: the model produced the end-of-sequence token.
	StopEOS = "eos"
	// StopMaxTokens: GenerateConfig.MaxNewTokens tokens were generated.
	StopMaxTokens = "max_new_tokens"
	// StopMaxPositions: the sequence filled GPT-2's position table.
	StopMaxPositions = "max_positions"
)

// GenerateConfig configures greedy decoding.
type GenerateConfig struct {
	// MaxNewTokens bounds the number of generated tokens; ≥ 1.
	MaxNewTokens int
	// EOS is the end-of-sequence id that stops generation (it is not part
	// of the output); a negative value never stops early.
	EOS int
}

// Generation is the result of one greedy decoding.
type Generation struct {
	// IDs are the generated tokens, without the EOS that ended them.
	IDs []int
	// Stop says why generation ended: StopEOS, StopMaxTokens or
	// StopMaxPositions.
	Stop string
	// PromptTokens is the length of the prompt.
	PromptTokens int
	// Mem is the decoder's memory: the peak of activations plus the
	// key/value cache, and the cache's final size in LiveBytes.
	Mem model.MemStats
}

// Greedy decodes greedily from a prompt with the model and the LoRA
// adapter ad (nil for the base model): it prefills the prompt with a
// key/value cache, then repeatedly appends the most likely next token (the
// lowest id among equal maxima) until EOS, MaxNewTokens tokens, or, for
// GPT-2, the end of the position table. A prompt longer than the model's
// positions is an error.
func Greedy(m *model.Model, ad *model.Adapter, prompt []int, cfg GenerateConfig) (*Generation, error) {
	if cfg.MaxNewTokens < 1 {
		return nil, fmt.Errorf("generate: max new tokens %d, want ≥ 1", cfg.MaxNewTokens)
	}
	if len(prompt) == 0 {
		return nil, fmt.Errorf("generate: empty prompt")
	}
	c := m.Config()
	limit := math.MaxInt
	if c.ModelType == model.GPT2 {
		limit = c.MaxPositions
		if len(prompt) > limit {
			return nil, fmt.Errorf("generate: the prompt has %d tokens, more than the model's %d positions", len(prompt), limit)
		}
	}
	ids := make([]int32, len(prompt))
	for i, id := range prompt {
		if id < 0 || id >= c.Vocab {
			return nil, fmt.Errorf("generate: prompt token %d has id %d outside the vocabulary [0,%d)", i, id, c.Vocab)
		}
		ids[i] = int32(id)
	}
	dec, err := m.NewDecoder(ad)
	if err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	defer dec.Release()
	g := &Generation{PromptTokens: len(prompt), Stop: StopMaxTokens}
	logits, err := dec.Prefill(ids)
	if err != nil {
		return nil, fmt.Errorf("generate: prefill: %w", err)
	}
	for {
		next, err := argmax(logits)
		if err != nil {
			return nil, fmt.Errorf("generate: token %d: %w", len(g.IDs), err)
		}
		if next == cfg.EOS {
			g.Stop = StopEOS
			break
		}
		g.IDs = append(g.IDs, next)
		if len(g.IDs) >= cfg.MaxNewTokens {
			break
		}
		if dec.Len() >= limit {
			g.Stop = StopMaxPositions
			break
		}
		if logits, err = dec.Step(int32(next)); err != nil {
			return nil, fmt.Errorf("generate: token %d: %w", len(g.IDs), err)
		}
	}
	g.Mem = model.MemStats{PeakBytes: dec.Stats().PeakBytes, LiveBytes: dec.CacheBytes()}
	return g, nil
}

// argmax returns the index of the largest logit (the lowest among ties);
// NaN logits are an error.
func argmax(v []float64) (int, error) {
	best := -1
	for i, x := range v {
		if math.IsNaN(x) {
			return 0, fmt.Errorf("logit %d is NaN", i)
		}
		if best < 0 || x > v[best] {
			best = i
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("no logits")
	}
	return best, nil
}

// ExtractAnswer returns the part of a model response that is scored: the
// text between the first "<output>" and the next "</output>" when the
// response has an "<output>" tag (everything after the tag when the closing
// tag is missing, as when generation hit its length limit), otherwise the
// whole response. Surrounding white space is trimmed.
func ExtractAnswer(response string) string {
	const open, closing = "<output>", "</output>"
	if i := strings.Index(response, open); i >= 0 {
		rest := response[i+len(open):]
		if j := strings.Index(rest, closing); j >= 0 {
			rest = rest[:j]
		}
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(response)
}

// asciiPunct is Python's string.punctuation.
const asciiPunct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

// NormalizeAnswer is the SQuAD answer normalisation the PERK code uses for
// exact match: lower-case, delete ASCII punctuation (Python's
// string.punctuation), delete the articles "a", "an" and "the" as whole
// words, and collapse runs of white space to single spaces (trimming the
// ends). Deleting punctuation joins what it separated, so "49.3" becomes
// "493" on both sides of a comparison.
func NormalizeAnswer(s string) string {
	s = strings.ToLower(s)
	s = strings.Map(func(r rune) rune {
		if r < 128 && strings.ContainsRune(asciiPunct, r) {
			return -1
		}
		return r
	}, s)
	words := strings.Fields(s)
	out := words[:0]
	for _, w := range words {
		if w != "a" && w != "an" && w != "the" {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

// ExactMatch reports whether a model response answers a reference: the
// normalised (NormalizeAnswer) extracted answers (ExtractAnswer) of both
// are equal. The reference goes through the same extraction, so a
// reference written in the support format also works.
func ExactMatch(response, reference string) bool {
	return NormalizeAnswer(ExtractAnswer(response)) == NormalizeAnswer(ExtractAnswer(reference))
}

// Answer is a model's answer to one record.
type Answer struct {
	// Text is the generated text (special tokens left out).
	Text string
	// Generation is the decoding's detail.
	Generation
	// InnerLosses are the inner losses L_in(φ_t) of test-time learning
	// (PERK only).
	InnerLosses []float64
	// AdaptPeakBytes is the tracked peak of test-time learning: optimiser
	// state, activations and per-token weights (PERK only; model weights
	// and the meta-parameters excluded).
	AdaptPeakBytes int64
	// AdapterBytes is the size of the adapted LoRA (PERK only), held
	// while decoding.
	AdapterBytes int64
	// AdaptTime and DecodeTime are the wall-clock times of test-time
	// learning (PERK only) and of decoding.
	AdaptTime, DecodeTime time.Duration
}

// PeakBytes is the tracked peak memory of answering: the larger of
// test-time learning's peak and decoding's peak plus the adapted LoRA.
func (a *Answer) PeakBytes() int64 {
	return max(a.AdaptPeakBytes, a.Mem.PeakBytes+a.AdapterBytes)
}

// adapt is Engine.Adapt that also returns the tracked peak memory.
func (e *Engine) adapt(p *Params, ex *Example, seed uint64) (*model.Adapter, []float64, int64, error) {
	r, err := e.newRun(p, ex, seed)
	if err != nil {
		return nil, nil, 0, err
	}
	defer r.release()
	phi, losses, _, err := r.forwardSweep(false)
	if err != nil {
		return nil, nil, 0, err
	}
	return phi, losses, r.mem.peak, nil
}

// Answer answers a record the PERK way: it encodes the record (documents
// numbered in order), learns the context at test time from the
// meta-learned parameters p (Engine.Adapt, with LoRA dropout keyed by
// seed when the adapter has dropout), then greedily decodes from the
// adapted LoRA with the training prompt
// "You have memorized {N} documents.\n{question}\nAnswer:" and no context
// in the prompt. The reference answer is only used to build the (unused)
// training target, so it must be present.
func (e *Engine) Answer(p *Params, enc *Encoder, rec Record, gen GenerateConfig, seed uint64) (*Answer, error) {
	if enc == nil || enc.Tok == nil {
		return nil, fmt.Errorf("answer: no encoder")
	}
	ex, err := enc.Encode(rec, nil)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	phi, losses, peak, err := e.adapt(p, ex, seed)
	if err != nil {
		return nil, fmt.Errorf("record %q: test-time learning: %w", rec.ID, err)
	}
	b := e.Model.Backend()
	defer func() {
		for _, t := range phi.Params().Tensors() {
			_ = b.Release(t)
		}
	}()
	a := &Answer{InnerLosses: losses, AdaptPeakBytes: peak, AdapterBytes: adapterBytes(phi), AdaptTime: time.Since(start)}
	prompt := make([]int, ex.PromptLen)
	for i := range prompt {
		prompt[i] = int(ex.Outer.IDs[i])
	}
	start = time.Now()
	g, err := Greedy(e.Model, phi, prompt, gen)
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", rec.ID, err)
	}
	a.DecodeTime = time.Since(start)
	a.Generation = *g
	a.Text = enc.Tok.DecodeSkipSpecial(g.IDs)
	return a, nil
}
