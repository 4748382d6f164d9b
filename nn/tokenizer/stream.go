package tokenizer

import "unicode/utf8"

// Stream decodes tokens one at a time, as a model generates them. A token can
// end in the middle of a UTF-8 sequence; Stream holds such bytes back until
// the sequence completes, so each piece of text it returns is whole. Bytes
// that can never form valid UTF-8 are passed through as they are.
type Stream struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []byte
}

// NewStream returns a Stream over t. With skipSpecial, special tokens decode
// to nothing.
func (t *Tokenizer) NewStream(skipSpecial bool) *Stream {
	return &Stream{t: t, skipSpecial: skipSpecial}
}

// Next adds one token and returns the text it completes (possibly empty).
func (s *Stream) Next(id int) string {
	if id < 0 || id >= len(s.t.idBytes) || (s.skipSpecial && s.t.IsSpecial(id)) {
		return ""
	}
	s.pending = append(s.pending, s.t.idBytes[id]...)
	n := completePrefix(s.pending)
	out := string(s.pending[:n])
	s.pending = append(s.pending[:0], s.pending[n:]...)
	return out
}

// Flush returns whatever is held back (an incomplete UTF-8 sequence at the
// end of the output) and resets the stream.
func (s *Stream) Flush() string {
	out := string(s.pending)
	s.pending = s.pending[:0]
	return out
}

// completePrefix returns the length of b without a trailing UTF-8 sequence
// that is incomplete but could still be completed by more bytes.
func completePrefix(b []byte) int {
	// A sequence is at most 4 bytes: look back at most 3 for its start.
	for k := 1; k <= 3 && k <= len(b); k++ {
		c := b[len(b)-k]
		if c < 0x80 {
			return len(b) // ASCII: nothing pending
		}
		if c >= 0xC0 { // a lead byte: is its sequence cut short?
			tail := b[len(b)-k:]
			if !utf8.FullRune(tail) {
				return len(b) - k
			}
			return len(b)
		}
	}
	return len(b)
}
