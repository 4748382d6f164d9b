package tokenizer

import (
	"container/heap"
	"sync"
)

// merge is one entry of the merge table: merging the pair gives token id,
// and lower ranks merge first.
type merge struct {
	rank int32
	id   int32
}

// pairKey packs two token ids into a map key.
func pairKey(a, b int32) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// symbol is one node of the doubly linked list of a word's current tokens.
type symbol struct {
	id         int32 // -1 once merged away
	prev, next int32 // neighbour positions, -1 at the ends
}

// candidate is a mergeable adjacent pair waiting in the queue.
type candidate struct {
	rank, pos   int32
	left, right int32 // the ids the pair had when queued
}

// queue orders candidates by rank, then position (leftmost first).
type queue []candidate

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if q[i].rank != q[j].rank {
		return q[i].rank < q[j].rank
	}
	return q[i].pos < q[j].pos
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(candidate)) }
func (q *queue) Pop() any {
	old := *q
	c := old[len(old)-1]
	*q = old[:len(old)-1]
	return c
}

// applyMerges runs byte-pair merging over the initial token ids of one
// pre-token, always taking the lowest-ranked adjacent pair (leftmost on
// ties), and appends the result to out.
func applyMerges(merges map[uint64]merge, ids []int32, out []int) []int {
	if len(ids) == 1 {
		return append(out, int(ids[0]))
	}
	syms := make([]symbol, len(ids))
	for i, id := range ids {
		syms[i] = symbol{id: id, prev: int32(i - 1), next: int32(i + 1)}
	}
	syms[len(syms)-1].next = -1
	q := make(queue, 0, len(ids))
	push := func(pos int32) {
		if pos < 0 {
			return
		}
		nx := syms[pos].next
		if nx < 0 {
			return
		}
		if m, ok := merges[pairKey(syms[pos].id, syms[nx].id)]; ok {
			heap.Push(&q, candidate{rank: m.rank, pos: pos, left: syms[pos].id, right: syms[nx].id})
		}
	}
	for i := range syms {
		push(int32(i))
	}
	for q.Len() > 0 {
		c := heap.Pop(&q).(candidate)
		s := &syms[c.pos]
		if s.id != c.left || s.next < 0 || syms[s.next].id != c.right {
			continue // stale: a neighbour merged since this was queued
		}
		nx := s.next
		s.id = merges[pairKey(c.left, c.right)].id
		s.next = syms[nx].next
		if s.next >= 0 {
			syms[s.next].prev = c.pos
		}
		syms[nx].id = -1
		push(s.prev)
		push(c.pos)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		out = append(out, int(syms[i].id))
	}
	return out
}

// cache remembers the tokens of recently seen pre-tokens. Like the reference
// implementation it stops adding entries once full.
type cache struct {
	mu  sync.RWMutex
	m   map[string][]int
	max int
}

func (c *cache) get(k string) ([]int, bool) {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	return v, ok
}

func (c *cache) put(k string, v []int) {
	c.mu.Lock()
	if len(c.m) < c.max {
		c.m[k] = v
	}
	c.mu.Unlock()
}
