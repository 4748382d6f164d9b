package tokenizer

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuildWordLevel(t *testing.T) {
	texts := []string{"Mary went to the kitchen.", "John went to the garden.", "Mary went to the garden."}
	data, err := BuildWordLevel(texts, 100, 2)
	require.NoError(t, err)
	tok, err := Parse(data)
	require.NoError(t, err)
	// 256 bytes, EndOfText, and the words seen at least twice:
	// " went", " to", " the", "Mary", " garden" (and "." is one byte).
	assert.Equal(t, 257+5, tok.VocabSize())
	id, ok := tok.TokenID(EndOfText)
	require.True(t, ok)
	assert.Equal(t, 256, id)
	assert.True(t, tok.IsSpecial(256))

	ids := tok.Encode("Mary went to the garden.")
	assert.Len(t, ids, 6) // Mary, " went", " to", " the", " garden", "."
	for _, id := range ids[:5] {
		assert.GreaterOrEqual(t, id, 257)
	}
	assert.Equal(t, int('.'), ids[5])
	// A word outside the vocabulary is spelled in bytes; text round-trips.
	ids = tok.Encode("John went to the kitchen.<|endoftext|>")
	assert.Equal(t, "John went to the kitchen.<|endoftext|>", tok.Decode(ids))
	assert.Equal(t, 256, ids[len(ids)-1])
	assert.Equal(t, int('J'), ids[0])

	again, err := BuildWordLevel(texts, 100, 2)
	require.NoError(t, err)
	assert.Equal(t, data, again, "deterministic")

	// maxWords bounds the words (most frequent first); 0 is byte-level.
	data, err = BuildWordLevel(texts, 2, 1)
	require.NoError(t, err)
	tok, err = Parse(data)
	require.NoError(t, err)
	assert.Equal(t, 259, tok.VocabSize())
	data, err = BuildWordLevel(texts, 0, 1)
	require.NoError(t, err)
	tok, err = Parse(data)
	require.NoError(t, err)
	assert.Equal(t, 257, tok.VocabSize())
	assert.Len(t, tok.Encode("Mary"), 4)

	// Numbers are spelled digit by digit.
	data, err = BuildWordLevel([]string{"doc 12 doc 12 doc 12"}, 10, 1)
	require.NoError(t, err)
	tok, err = Parse(data)
	require.NoError(t, err)
	assert.Equal(t, 259, tok.VocabSize(), `only "doc" and " doc"`)
	ids = tok.Encode("doc 12")
	require.Len(t, ids, 4)
	assert.Equal(t, []int{' ', '1', '2'}, ids[1:])

	_, err = BuildWordLevel(texts, -1, 1)
	assert.Error(t, err)
}
