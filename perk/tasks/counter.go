package tasks

import "github.com/perkgo/perk/nn/tokenizer"

// Counter counts the tokens of a piece of text. Generators call it from
// several goroutines at once when records are generated in parallel (Run
// with more than one worker), so an implementation must be safe for
// concurrent use.
type Counter interface {
	Count(text string) int
}

// ApproxCounter is the default Counter when no tokenizer is given: one
// token per 4 bytes, rounded up (ceil(len(text)/4); 0 for ""). That is the
// usual rule of thumb for English under the GPT-2 and Qwen2 byte-level BPE
// vocabularies (bAbI facts, which are short common words, come out a little
// under their real count; digit strings a little over). It is
// sub-additive, so the token count of joined sentences never exceeds the sum
// of their counts, which keeps the generators' budgets exact.
type ApproxCounter struct{}

// Count returns ceil(len(text)/4).
func (ApproxCounter) Count(text string) int { return (len(text) + 3) / 4 }

// CounterFunc adapts a function to the Counter interface.
type CounterFunc func(text string) int

// Count calls f.
func (f CounterFunc) Count(text string) int { return f(text) }

// TokenizerCounter counts tokens exactly with a loaded tokenizer: the
// length of tok.Encode(text), which is how perk.Encoder tokenizes segment
// text. *tokenizer.Tokenizer is safe for concurrent use.
func TokenizerCounter(tok *tokenizer.Tokenizer) Counter {
	return CounterFunc(func(text string) int { return len(tok.Encode(text)) })
}

// sentenceCost is what a sentence costs inside a segment: the larger of its
// count alone (first in its segment) and after the joining space.
func sentenceCost(c Counter, s string) int {
	return max(c.Count(s), c.Count(" "+s))
}
