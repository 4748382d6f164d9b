package tokenizer

// The byte-level alphabet: GPT-2 maps each of the 256 byte values to a
// printable rune so that byte strings can live in a text vocabulary. Bytes
// that are printable in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') map to
// themselves; the rest map to U+0100 onwards, in byte order.
var (
	byteToRune [256]rune
	runeToByte = map[rune]byte{}
)

func init() {
	next := rune(256)
	for b := 0; b < 256; b++ {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		if printable {
			byteToRune[b] = rune(b)
		} else {
			byteToRune[b] = next
			next++
		}
		runeToByte[byteToRune[b]] = byte(b)
	}
}

// byteLevel maps raw bytes to their byte-level string.
func byteLevel(b string) string {
	out := make([]rune, len(b))
	for i := 0; i < len(b); i++ {
		out[i] = byteToRune[b[i]]
	}
	return string(out)
}

// unByteLevel maps a byte-level string back to raw bytes. ok is false if the
// string holds a rune outside the alphabet.
func unByteLevel(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeToByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}
