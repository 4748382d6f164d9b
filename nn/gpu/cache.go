package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// The upload caches keep the device copies of small host inputs that a pass
// passes again and again (the same cu_seqlens, ids and positions in every
// layer, forward and backward; the same parameter lists every optimiser
// step). Entries are keyed by content, never by slice identity, so a hit
// always holds exactly the values asked for; each cache keeps its most
// recently used entries and frees the rest.

type cacheEntry struct {
	key  string
	val  any
	free func() error
}

// lru is a small most-recently-used list.
type lru struct {
	cap   int
	items []cacheEntry // most recent first
}

func (l *lru) get(key string) (any, bool) {
	for i, e := range l.items {
		if e.key == key {
			copy(l.items[1:i+1], l.items[:i])
			l.items[0] = e
			return e.val, true
		}
	}
	return nil, false
}

// put adds an entry (the key must be absent) and frees what falls out.
func (l *lru) put(e cacheEntry) error {
	l.items = append([]cacheEntry{e}, l.items...)
	var err error
	for len(l.items) > l.cap {
		last := l.items[len(l.items)-1]
		l.items = l.items[:len(l.items)-1]
		err = errors.Join(err, last.free())
	}
	return err
}

func (l *lru) clear() error {
	var err error
	for _, e := range l.items {
		err = errors.Join(err, e.free())
	}
	l.items = nil
	return err
}

type caches struct {
	segs, ids, ints, freqs, tables lru
}

// init sets every cache's capacity: 0 (off) or at least 2, since one op may
// hold two entries of one cache (token ids and positions) at once.
func (c *caches) init(n int) {
	if n > 0 {
		n = max(n, 2)
	}
	for _, l := range c.all() {
		l.cap = n
	}
}

func (c *caches) all() []*lru { return []*lru{&c.segs, &c.ids, &c.ints, &c.freqs, &c.tables} }

func (c *caches) clear(*Backend) error {
	var err error
	for _, l := range c.all() {
		err = errors.Join(err, l.clear())
	}
	return err
}

// cached returns the object for key from l, making it with mk on a miss.
// The returned done frees the object when it was not kept (caching off).
func cached[T any](l *lru, key string, mk func() (T, func() error, error)) (T, func(), error) {
	if v, ok := l.get(key); ok {
		return v.(T), func() {}, nil
	}
	v, free, err := mk()
	if err != nil {
		var zero T
		return zero, func() {}, err
	}
	if l.cap == 0 {
		return v, func() { _ = free() }, nil
	}
	return v, func() {}, l.put(cacheEntry{key: key, val: v, free: free})
}

func int32Key(v []int32) string { return string(int32Bytes(v)) }

// segments returns the device layout of cu_seqlens.
func (b *Backend) segments(cu []int32) (*kernels.AttnSegments, func(), error) {
	return cached(&b.c.segs, int32Key(cu), func() (*kernels.AttnSegments, func() error, error) {
		s, err := kernels.NewAttnSegments(b.dev, cu)
		if err != nil {
			return nil, nil, err
		}
		return s, s.Free, nil
	})
}

// embedIDs returns the device grouping of ids.
func (b *Backend) embedIDs(ids []int32) (*kernels.EmbedIDs, func(), error) {
	return cached(&b.c.ids, int32Key(ids), func() (*kernels.EmbedIDs, func() error, error) {
		x, err := kernels.NewEmbedIDs(b.dev, ids)
		if err != nil {
			return nil, nil, err
		}
		return x, x.Free, nil
	})
}

// int32s returns an I32 device array holding v (labels, positions).
func (b *Backend) int32s(v []int32) (kernels.Array, func(), error) {
	return cached(&b.c.ints, int32Key(v), func() (kernels.Array, func() error, error) {
		buf, err := b.pool.Alloc(4*len(v), b.stream)
		if err != nil {
			return kernels.Array{}, nil, err
		}
		if len(v) > 0 {
			if err := b.dev.MemcpyHtoD(buf.Ptr, int32Bytes(v), b.stream); err != nil {
				_ = b.pool.Free(buf)
				return kernels.Array{}, nil, err
			}
		}
		a := kernels.Array{Dev: b.dev, Ptr: buf.Ptr, DType: runtime.I32, Shape: []int{len(v)}}
		return a, buf.Free, nil
	})
}

// invFreq returns the f32 RoPE frequencies for theta and head dimension d.
func (b *Backend) invFreq(theta float64, d int) (kernels.Array, func(), error) {
	key := fmt.Sprintf("%x/%d", math.Float64bits(theta), d)
	return cached(&b.c.freqs, key, func() (kernels.Array, func() error, error) {
		a, err := kernels.NewRoPEInvFreq(b.dev, theta, d)
		if err != nil {
			return kernels.Array{}, nil, err
		}
		return a, func() error { return kernels.FreeArray(a) }, nil
	})
}

// table returns the multi-tensor table of rows (each stride F32 arrays).
// A table holds only addresses and lengths, so one built for the same
// addresses and lengths serves any later call.
func (b *Backend) table(stride int, rows [][]kernels.Array) (*kernels.TensorTable, func(), error) {
	key := make([]byte, 0, 8+16*stride*len(rows))
	key = binary.LittleEndian.AppendUint64(key, uint64(stride))
	for _, row := range rows {
		for _, a := range row {
			key = binary.LittleEndian.AppendUint64(key, uint64(a.Ptr))
			key = binary.LittleEndian.AppendUint64(key, uint64(a.Numel()))
		}
	}
	return cached(&b.c.tables, string(key), func() (*kernels.TensorTable, func() error, error) {
		t, err := kernels.NewTensorTable(b.dev, stride, rows)
		if err != nil {
			return nil, nil, err
		}
		return t, t.Free, nil
	})
}
