package model

import (
	"fmt"

	"github.com/perkgo/perk/nn"
)

// Batch is a packed batch: the token ids of several sequences laid end to
// end, with segment boundaries. Positions restart at 0 in each segment and
// no token attends to another segment.
type Batch struct {
	// IDs holds the T token ids.
	IDs []int32
	// CuSeqlens holds the S+1 boundaries 0 = c[0] ≤ … ≤ c[S] = T; nil means
	// one segment of all T tokens.
	CuSeqlens []int32
}

// Len is the number of tokens T.
func (b Batch) Len() int { return len(b.IDs) }

// cu returns the boundaries, defaulting to one segment.
func (b Batch) cu() []int32 {
	if b.CuSeqlens == nil {
		return []int32{0, int32(len(b.IDs))}
	}
	return b.CuSeqlens
}

// Validate checks the boundaries against the token count.
func (b Batch) Validate() error {
	if len(b.IDs) == 0 {
		return fmt.Errorf("batch: no tokens")
	}
	cu := b.cu()
	if len(cu) < 2 || cu[0] != 0 || int(cu[len(cu)-1]) != len(b.IDs) {
		return fmt.Errorf("batch: cu_seqlens %v must start at 0 and end at the token count %d", cu, len(b.IDs))
	}
	for i := 1; i < len(cu); i++ {
		if cu[i] < cu[i-1] {
			return fmt.Errorf("batch: cu_seqlens decreases at index %d (%d < %d)", i, cu[i], cu[i-1])
		}
	}
	return nil
}

// Positions returns each token's position within its segment (the batch
// must be valid).
func (b Batch) Positions() []int32 {
	cu := b.cu()
	pos := make([]int32, len(b.IDs))
	for s := 0; s+1 < len(cu); s++ {
		for t := cu[s]; t < cu[s+1]; t++ {
			pos[t] = t - cu[s]
		}
	}
	return pos
}

// MaxSegment returns the length of the longest segment.
func (b Batch) MaxSegment() int {
	cu, m := b.cu(), 0
	for s := 0; s+1 < len(cu); s++ {
		m = max(m, int(cu[s+1]-cu[s]))
	}
	return m
}

// CausalLabels returns next-token labels for a packed batch: label t is the
// id of token t+1 of the same segment, and IgnoreIndex at each segment's
// last token.
func (b Batch) CausalLabels() []int32 {
	cu := b.cu()
	lab := make([]int32, len(b.IDs))
	for s := 0; s+1 < len(cu); s++ {
		for t := cu[s]; t < cu[s+1]; t++ {
			if t+1 < cu[s+1] {
				lab[t] = b.IDs[t+1]
			} else {
				lab[t] = nn.IgnoreIndex
			}
		}
	}
	return lab
}
