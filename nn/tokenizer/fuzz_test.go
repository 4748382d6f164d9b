package tokenizer

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzEncode checks that encoding never panics and that decoding gives back
// the input (after NFC for Qwen2), for any bytes, valid UTF-8 or not.
func FuzzEncode(f *testing.F) {
	for _, s := range edgeCases {
		f.Add(s)
	}
	f.Add("<|im_start|>user\nhi<|im_end|>\n<think>\n\n</think>")
	f.Add("a<|endoftext|>b<|endoftext|")
	f.Add("e\u0301\u0323\xff\u1100\u1161")
	f.Fuzz(func(t *testing.T, s string) {
		g, q := gpt2(t), qwen(t)
		require.Equal(t, s, g.Decode(g.Encode(s)), "gpt2: Decode(Encode(%q))", s)
		n := nfc(s)
		require.Equal(t, n, nfc(n), "nfc not idempotent on %q", s)
		require.Equal(t, n, q.Decode(q.Encode(s)), "qwen: Decode(Encode(%q))", s)
		p := strings.Join(g.Pretokenize(s), "")
		require.LessOrEqual(t, len(p), len(s), "gpt2 pieces of %q are longer than the input: %q", s, p)
	})
}
