package runtime

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	kiB = 1 << 10
	miB = 1 << 20
)

// checkPool verifies the pool's bookkeeping against itself and the device:
// segments match the device's live allocations, blocks tile their segments,
// free blocks are listed exactly once in the right list, no two adjacent free
// blocks could have been merged, and the stats add up.
func checkPool(p *Pool, dev *fakeDevice) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	devLive := dev.live()
	if len(devLive) != len(p.segments) {
		return fmt.Errorf("device has %d allocations, pool %d segments", len(devLive), len(p.segments))
	}
	var inUse, reserved int64
	free := map[*block]bool{}
	for ptr, seg := range p.segments {
		if seg.ptr != ptr || devLive[ptr] != seg.size {
			return fmt.Errorf("segment %#x (%d bytes): device has %d bytes there", uint64(ptr), seg.size, devLive[ptr])
		}
		if seg.small && seg.size != poolSmallSegment || !seg.small && seg.size%poolLargeRound != 0 {
			return fmt.Errorf("segment %#x: bad size %d (small %v)", uint64(ptr), seg.size, seg.small)
		}
		reserved += int64(seg.size)
		if seg.first == nil || seg.first.prev != nil {
			return fmt.Errorf("segment %#x: bad first block", uint64(ptr))
		}
		end := seg.ptr
		for b := seg.first; b != nil; b = b.next {
			switch {
			case b.seg != seg || b.dead:
				return fmt.Errorf("block %#x: wrong segment or dead", uint64(b.ptr))
			case b.ptr != end:
				return fmt.Errorf("block %#x: expected at %#x", uint64(b.ptr), uint64(end))
			case b.size <= 0 || b.size%poolRound != 0:
				return fmt.Errorf("block %#x: bad size %d", uint64(b.ptr), b.size)
			case b.next != nil && b.next.prev != b:
				return fmt.Errorf("block %#x: broken links", uint64(b.ptr))
			}
			if b.free {
				if b.allocID != 0 || !b.inList {
					return fmt.Errorf("free block %#x: allocID %d, listed %v", uint64(b.ptr), b.allocID, b.inList)
				}
				if n := b.next; n != nil && n.free && mergeable(b, n) {
					return fmt.Errorf("free blocks %#x and %#x are not merged", uint64(b.ptr), uint64(n.ptr))
				}
				free[b] = true
			} else {
				if b.allocID == 0 || b.inList || b.ready {
					return fmt.Errorf("allocated block %#x: allocID %d, listed %v, ready %v", uint64(b.ptr), b.allocID, b.inList, b.ready)
				}
				inUse += int64(b.size)
			}
			end += DevicePtr(b.size)
		}
		if end != seg.ptr.Add(seg.size) {
			return fmt.Errorf("segment %#x: blocks end at %#x", uint64(ptr), uint64(end))
		}
	}
	listed := map[*block]bool{}
	checkList := func(l freeList, small, ready bool, s Stream) error {
		if !slices.IsSortedFunc(l, compareBlocks) {
			return errors.New("free list not sorted")
		}
		for _, b := range l {
			if !free[b] || listed[b] || b.seg.small != small || b.ready != ready || !ready && b.stream != s {
				return fmt.Errorf("listed block %#x: free %v, listed twice %v, small %v, ready %v, stream %d (list: small %v ready %v stream %d)",
					uint64(b.ptr), free[b], listed[b], b.seg.small, b.ready, b.stream, small, ready, s)
			}
			listed[b] = true
		}
		return nil
	}
	for _, small := range []bool{true, false} {
		bs := p.bins(small)
		if err := checkList(bs.ready, small, true, 0); err != nil {
			return err
		}
		for s, l := range bs.streams {
			if err := checkList(*l, small, false, s); err != nil {
				return err
			}
		}
	}
	if len(listed) != len(free) {
		return fmt.Errorf("%d free blocks, %d listed", len(free), len(listed))
	}
	st := p.stats
	if st.InUse != inUse || st.Reserved != reserved || st.Peak < st.InUse || st.NumCacheHits > st.NumAllocs {
		return fmt.Errorf("stats %+v; blocks say in use %d, reserved %d", st, inUse, reserved)
	}
	return nil
}

func TestPoolRounding(t *testing.T) {
	for _, tc := range []struct {
		n, block, reserved int
	}{
		{0, 512, 2 * miB},
		{1, 512, 2 * miB},
		{512, 512, 2 * miB},
		{513, 1024, 2 * miB},
		{4*kiB + 1, 4*kiB + 512, 2 * miB},
		{miB, miB, 2 * miB},         // largest small request
		{miB + 1, 2 * miB, 2 * miB}, // large; the 1 MiB - 512 left is too small to split off
		{3 * miB, 3 * miB, 4 * miB}, // 1 MiB left: split
		{10*miB + 1, 10*miB + 512, 12 * miB},
		{64 * miB, 64 * miB, 64 * miB},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			dev := newFakeDevice(0)
			p := NewPool(dev, PoolOptions{})
			b, err := p.Alloc(tc.n, 0)
			require.NoError(t, err)
			require.Equal(t, tc.n, b.Size)
			require.NotZero(t, b.Ptr)
			require.Zero(t, b.Ptr%256, "alignment")
			st := p.Stats()
			require.Equal(t, int64(tc.block), st.InUse)
			require.Equal(t, int64(tc.reserved), st.Reserved)
			require.Equal(t, map[DevicePtr]int{b.Ptr: tc.reserved}, dev.live())
			require.NoError(t, checkPool(p, dev))
			require.NoError(t, p.Free(b))
			require.NoError(t, checkPool(p, dev))
			require.NoError(t, p.Close())
		})
	}
}

func TestPoolReuse(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	a, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(a))
	b, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, b.Ptr)
	st := p.Stats()
	require.Equal(t, int64(2), st.NumAllocs)
	require.Equal(t, int64(1), st.NumCacheHits)
	allocs, _ := dev.counts()
	require.Equal(t, 1, allocs)

	// 512 blocks of 4 KiB fill one 2 MiB segment exactly; the next needs a new one.
	bufs := []Buffer{b}
	for range 511 {
		b, err := p.Alloc(4*kiB, 0)
		require.NoError(t, err)
		bufs = append(bufs, b)
	}
	allocs, _ = dev.counts()
	require.Equal(t, 1, allocs)
	extra, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	allocs, _ = dev.counts()
	require.Equal(t, 2, allocs)
	require.NoError(t, checkPool(p, dev))
	for _, b := range append(bufs, extra) {
		require.NoError(t, p.Free(b))
	}
	require.NoError(t, checkPool(p, dev))

	// A cached large block serves a smaller large request (split), but
	// small requests never come from large segments.
	big, err := p.Alloc(8*miB, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(big))
	allocs, _ = dev.counts()
	mid, err := p.Alloc(6*miB, 0)
	require.NoError(t, err)
	require.Equal(t, big.Ptr, mid.Ptr)
	allocs2, _ := dev.counts()
	require.Equal(t, allocs, allocs2)
	require.Equal(t, int64(2*2*miB+8*miB), p.Stats().Reserved)
	require.NoError(t, p.Free(mid))
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Close())
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, q := range permutations(n - 1) {
		for i := 0; i <= len(q); i++ {
			out = append(out, slices.Insert(slices.Clone(q), i, n-1))
		}
	}
	return out
}

func TestPoolSplitCoalesce(t *testing.T) {
	for _, order := range permutations(3) {
		t.Run(fmt.Sprintf("small%v", order), func(t *testing.T) {
			dev := newFakeDevice(0)
			p := NewPool(dev, PoolOptions{})
			var bufs []Buffer
			for range 3 {
				b, err := p.Alloc(512*kiB, 0)
				require.NoError(t, err)
				bufs = append(bufs, b)
			}
			require.Equal(t, bufs[0].Ptr.Add(512*kiB), bufs[1].Ptr)
			require.Equal(t, bufs[0].Ptr.Add(1*miB), bufs[2].Ptr)
			for _, i := range order {
				require.NoError(t, p.Free(bufs[i]))
				require.NoError(t, checkPool(p, dev))
			}
			require.Len(t, p.segments, 1)
			for _, seg := range p.segments {
				require.True(t, seg.first.free)
				require.Nil(t, seg.first.next, "segment should be one free block")
			}
			whole, err := p.Alloc(1*miB, 0)
			require.NoError(t, err)
			require.Equal(t, bufs[0].Ptr, whole.Ptr)
			allocs, _ := dev.counts()
			require.Equal(t, 1, allocs)
			require.Equal(t, int64(3), p.Stats().NumCacheHits)
			require.NoError(t, p.Free(whole))
			require.NoError(t, p.Close())
		})
		t.Run(fmt.Sprintf("large%v", order), func(t *testing.T) {
			dev := newFakeDevice(0)
			p := NewPool(dev, PoolOptions{})
			seg, err := p.Alloc(12*miB, 0)
			require.NoError(t, err)
			require.NoError(t, p.Free(seg))
			var bufs []Buffer
			for i := range 3 {
				b, err := p.Alloc(4*miB, 0)
				require.NoError(t, err)
				require.Equal(t, seg.Ptr.Add(i*4*miB), b.Ptr)
				bufs = append(bufs, b)
			}
			require.NoError(t, checkPool(p, dev))
			for _, i := range order {
				require.NoError(t, p.Free(bufs[i]))
				require.NoError(t, checkPool(p, dev))
			}
			again, err := p.Alloc(12*miB, 0)
			require.NoError(t, err)
			require.Equal(t, seg.Ptr, again.Ptr)
			allocs, _ := dev.counts()
			require.Equal(t, 1, allocs)
			require.NoError(t, p.Free(again))
			require.NoError(t, p.Close())
		})
	}

	// Freeing a and c (not b) merges c with the free rest of the segment,
	// so a 1 MiB request fits at c without a new segment.
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	var bufs []Buffer
	for range 3 {
		b, err := p.Alloc(512*kiB, 0)
		require.NoError(t, err)
		bufs = append(bufs, b)
	}
	require.NoError(t, p.Free(bufs[0]))
	require.NoError(t, p.Free(bufs[2]))
	require.NoError(t, checkPool(p, dev))
	d, err := p.Alloc(1*miB, 0)
	require.NoError(t, err)
	require.Equal(t, bufs[2].Ptr, d.Ptr)
	// The 512 KiB hole at a is reused by best fit before the cache grows.
	e, err := p.Alloc(300*kiB, 0)
	require.NoError(t, err)
	require.Equal(t, bufs[0].Ptr, e.Ptr)
	allocs, _ := dev.counts()
	require.Equal(t, 1, allocs)
	require.NoError(t, checkPool(p, dev))
	for _, b := range []Buffer{bufs[1], d, e} {
		require.NoError(t, p.Free(b))
	}
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Close())
}

func TestPoolStatsExact(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	require.Equal(t, dev, p.Device())
	require.Equal(t, Stats{}, p.Stats())

	a, err := p.Alloc(1000, 0)
	require.NoError(t, err)
	require.Equal(t, Stats{InUse: 1024, Peak: 1024, Reserved: 2 * miB, NumAllocs: 1}, p.Stats())

	b, err := p.Alloc(3*miB, 0)
	require.NoError(t, err)
	require.Equal(t, Stats{InUse: 1024 + 3*miB, Peak: 1024 + 3*miB, Reserved: 6 * miB, NumAllocs: 2}, p.Stats())

	require.NoError(t, p.Free(a))
	require.Equal(t, Stats{InUse: 3 * miB, Peak: 1024 + 3*miB, Reserved: 6 * miB, NumAllocs: 2}, p.Stats())

	p.ResetPeak()
	require.Equal(t, int64(3*miB), p.Stats().Peak)

	c, err := p.Alloc(512, 0)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, c.Ptr)
	require.Equal(t, Stats{InUse: 3*miB + 512, Peak: 3*miB + 512, Reserved: 6 * miB, NumAllocs: 3, NumCacheHits: 1}, p.Stats())

	require.NoError(t, p.Free(b))
	require.NoError(t, p.Free(c))
	require.Equal(t, Stats{Peak: 3*miB + 512, Reserved: 6 * miB, NumAllocs: 3, NumCacheHits: 1}, p.Stats())
	require.NoError(t, checkPool(p, dev))

	require.NoError(t, p.EmptyCache())
	require.Equal(t, Stats{Peak: 3*miB + 512, NumAllocs: 3, NumCacheHits: 1}, p.Stats())
	require.Empty(t, dev.live())
	allocs, frees := dev.counts()
	require.Equal(t, 2, allocs)
	require.Equal(t, 2, frees)
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Close())

	require.Equal(t, "in use 1.5 KiB (peak 3 MiB), reserved 6 MiB, 10 allocs, 8 cache hits (80.0%)",
		Stats{InUse: 1536, Peak: 3 * miB, Reserved: 6 * miB, NumAllocs: 10, NumCacheHits: 8}.String())
	require.Equal(t, "in use 0 B (peak 0 B), reserved 2.5 GiB, 0 allocs, 0 cache hits (0.0%)",
		Stats{Reserved: 5 << 29}.String())
}

func TestPoolEmptyCacheKeepsLiveSegments(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	live, err := p.Alloc(4*kiB, 1)
	require.NoError(t, err)
	dead, err := p.Alloc(8*miB, 2)
	require.NoError(t, err)
	require.NoError(t, p.Free(dead))
	require.NoError(t, p.EmptyCache())
	require.Equal(t, 1, dev.syncCount(2), "freeing stream synchronised before release")
	require.Equal(t, map[DevicePtr]int{live.Ptr: 2 * miB}, dev.live())
	require.Equal(t, int64(2*miB), p.Stats().Reserved)
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Free(live))
	require.NoError(t, p.Close())
	require.Empty(t, dev.live())
}

func TestPoolDeviceFreeFailure(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	a, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(a))
	dev.mu.Lock()
	dev.freeErr = errors.New("driver says no")
	dev.mu.Unlock()
	require.ErrorContains(t, p.EmptyCache(), "driver says no")
	require.Equal(t, int64(2*miB), p.Stats().Reserved, "a segment that failed to free stays cached")
	require.NoError(t, checkPool(p, dev))
	b, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, b.Ptr)
	require.NoError(t, p.Free(b))
	dev.mu.Lock()
	dev.freeErr = nil
	dev.mu.Unlock()
	require.NoError(t, p.EmptyCache())
	require.Empty(t, dev.live())
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Close())
}

func TestPoolOOMReleasesCacheAndRetries(t *testing.T) {
	dev := newFakeDevice(4 * miB)
	p := NewPool(dev, PoolOptions{})
	small, err := p.Alloc(4*kiB, 1)
	require.NoError(t, err)
	require.NoError(t, p.Free(small)) // cached: a 2 MiB small segment, freed on stream 1

	big, err := p.Alloc(3*miB, 0) // needs a 4 MiB segment: OOM, release, retry
	require.NoError(t, err)
	allocs, frees := dev.counts()
	require.Equal(t, 3, allocs, "first alloc, failed alloc, retry")
	require.Equal(t, 1, frees)
	require.Equal(t, 1, dev.syncCount(1))
	require.Equal(t, map[DevicePtr]int{big.Ptr: 4 * miB}, dev.live())
	st := p.Stats()
	require.Equal(t, int64(4*miB), st.Reserved)
	require.Equal(t, int64(3*miB), st.InUse)
	require.Equal(t, int64(0), st.NumCacheHits)
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Free(big))
	require.NoError(t, p.Close())
}

func TestPoolOOMServedAfterSyncMerge(t *testing.T) {
	// Two halves of a segment freed on different streams cannot merge until
	// both streams are synchronised; on OOM the pool does that and serves
	// the request from the merged block.
	dev := newFakeDevice(4 * miB)
	p := NewPool(dev, PoolOptions{})
	whole, err := p.Alloc(4*miB, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(whole))
	a, err := p.Alloc(2*miB, 1)
	require.NoError(t, err)
	b, err := p.Alloc(2*miB, 2)
	require.NoError(t, err)
	require.NoError(t, p.Free(a))
	require.NoError(t, p.Free(b))
	require.NoError(t, checkPool(p, dev))

	c, err := p.Alloc(4*miB, 3)
	require.NoError(t, err)
	require.Equal(t, whole.Ptr, c.Ptr)
	allocs, frees := dev.counts()
	require.Equal(t, 2, allocs, "first alloc and the failed one")
	require.Equal(t, 0, frees)
	require.Equal(t, 1, dev.syncCount(1))
	require.Equal(t, 1, dev.syncCount(2))
	require.Equal(t, int64(3), p.Stats().NumCacheHits)
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Free(c))
	require.NoError(t, p.Close())
}

func TestPoolOOMUnsatisfiable(t *testing.T) {
	dev := newFakeDevice(4 * miB)
	p := NewPool(dev, PoolOptions{})
	held, err := p.Alloc(3*miB, 0)
	require.NoError(t, err)

	_, err = p.Alloc(3*miB, 0)
	require.Error(t, err)
	require.ErrorIs(t, err, ErrOutOfMemory)
	msg := err.Error()
	require.Contains(t, msg, "pool alloc 3145728 bytes")
	require.Contains(t, msg, p.Stats().String())
	require.Contains(t, msg, "in use 3 MiB")
	require.Contains(t, msg, "reserved 4 MiB")
	allocs, _ := dev.counts()
	require.Equal(t, 3, allocs, "first alloc, failed alloc, failed retry")
	require.Equal(t, int64(1), p.Stats().NumAllocs)
	require.NoError(t, checkPool(p, dev))

	// The pool is still usable.
	require.NoError(t, p.Free(held))
	again, err := p.Alloc(3*miB, 0)
	require.NoError(t, err)
	require.Equal(t, held.Ptr, again.Ptr)
	require.NoError(t, p.Free(again))
	require.NoError(t, p.Close())
}

func TestPoolLimit(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{Limit: 4 * miB})
	a, err := p.Alloc(4*kiB, 0)
	require.NoError(t, err)
	_, err = p.Alloc(3*miB, 0)
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.Contains(t, err.Error(), "pool limit of 4194304 bytes")
	allocs, _ := dev.counts()
	require.Equal(t, 1, allocs, "the limit is checked before the device is asked")
	b, err := p.Alloc(2*miB, 0) // fits: 2 + 2 MiB reserved
	require.NoError(t, err)
	require.Equal(t, int64(4*miB), p.Stats().Reserved)
	require.NoError(t, p.Free(a))
	// OOM recovery releases the free small segment, but 2 + 4 MiB is still over the limit.
	_, err = p.Alloc(3*miB, 0)
	require.ErrorIs(t, err, ErrOutOfMemory)
	require.Equal(t, int64(2*miB), p.Stats().Reserved)
	require.NoError(t, p.Free(b))
	c, err := p.Alloc(3*miB, 0)
	require.NoError(t, err)
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Free(c))
	require.NoError(t, p.Close())
}

func TestPoolFreeErrors(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	other := NewPool(newFakeDevice(0), PoolOptions{})

	require.ErrorContains(t, p.Free(Buffer{}), "zero Buffer")
	require.ErrorContains(t, Buffer{}.Free(), "zero Buffer")

	foreign, err := other.Alloc(100, 0)
	require.NoError(t, err)
	require.ErrorContains(t, p.Free(foreign), "another pool")
	require.Equal(t, other, foreign.Pool())
	require.NoError(t, foreign.Free())

	a, err := p.Alloc(100, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(a))
	before := p.Stats()
	require.ErrorContains(t, p.Free(a), "not allocated")
	require.Equal(t, before, p.Stats())

	// A stale copy must not free the block's next owner.
	b, err := p.Alloc(100, 0)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, b.Ptr)
	require.ErrorContains(t, p.Free(a), "not allocated")
	require.Equal(t, int64(512), p.Stats().InUse)

	tampered := b
	tampered.Ptr++
	require.Error(t, p.Free(tampered))
	require.NoError(t, p.Free(b))

	// A stale copy of a block that has since been merged away.
	x, err := p.Alloc(1000, 0)
	require.NoError(t, err)
	y, err := p.Alloc(1000, 0)
	require.NoError(t, err)
	require.NoError(t, p.Free(x))
	require.NoError(t, p.Free(y)) // merged into x's block
	require.Error(t, p.Free(y))
	require.NoError(t, checkPool(p, dev))

	_, err = p.Alloc(-1, 0)
	require.ErrorContains(t, err, "negative")
	_, err = p.Alloc(math.MaxInt, 0)
	require.Error(t, err)

	var nilPool *Pool
	_, err = nilPool.Alloc(1, 0)
	require.Error(t, err)
	require.Error(t, nilPool.Free(a))
	require.Equal(t, Stats{}, nilPool.Stats())
	_, err = NewPool(nil, PoolOptions{}).Alloc(1, 0)
	require.Error(t, err)

	live, err := p.Alloc(1, 0)
	require.NoError(t, err)
	require.NoError(t, other.Close())
	require.NoError(t, checkPool(p, dev))
	require.ErrorContains(t, p.Close(), "1 buffers (512 bytes) were still in use")
	require.Empty(t, dev.live())
	require.Equal(t, int64(0), p.Stats().Reserved)
	require.ErrorContains(t, p.Free(live), "closed")
	_, err = p.Alloc(1, 0)
	require.ErrorContains(t, err, "closed")
	require.NoError(t, p.Close())
	require.NoError(t, p.EmptyCache())
}

func TestPoolZeroSize(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	a, err := p.Alloc(0, 0)
	require.NoError(t, err)
	b, err := p.Alloc(0, 0)
	require.NoError(t, err)
	require.Zero(t, a.Size)
	require.NotZero(t, a.Ptr)
	require.NotEqual(t, a.Ptr, b.Ptr)
	require.Equal(t, int64(1024), p.Stats().InUse)
	require.NoError(t, p.Free(a))
	require.Error(t, p.Free(a))
	require.NoError(t, p.Free(b))
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Close())
}

func TestPoolCrossStream(t *testing.T) {
	dev := newFakeDevice(0)
	p := NewPool(dev, PoolOptions{})
	const s1, s2 Stream = 1, 2

	a, err := p.Alloc(64*kiB, s1)
	require.NoError(t, err)
	require.Equal(t, s1, a.Stream())
	require.NoError(t, p.Free(a))

	// Same stream: reused without synchronising.
	b, err := p.Alloc(64*kiB, s1)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, b.Ptr)
	require.Equal(t, 0, dev.syncCount(s1))
	require.NoError(t, p.Free(b))

	// Another stream: reused only after synchronising the freeing stream.
	c, err := p.Alloc(64*kiB, s2)
	require.NoError(t, err)
	require.Equal(t, a.Ptr, c.Ptr)
	require.Equal(t, 1, dev.syncCount(s1))
	allocs, _ := dev.counts()
	require.Equal(t, 1, allocs)
	require.Equal(t, int64(2), p.Stats().NumCacheHits)
	require.NoError(t, checkPool(p, dev))

	// The rest of the segment became shared by that synchronisation: s1
	// takes it without another one.
	d, err := p.Alloc(64*kiB, s1)
	require.NoError(t, err)
	require.Equal(t, a.Ptr.Add(64*kiB), d.Ptr)
	require.Equal(t, 1, dev.syncCount(s1))
	require.Equal(t, 0, dev.syncCount(s2))
	require.NoError(t, p.Free(d))
	require.NoError(t, checkPool(p, dev))

	// A stream that cannot be synchronised keeps its blocks: the pool grows instead.
	dev.mu.Lock()
	dev.syncErr[s2] = errors.New("stream destroyed")
	dev.mu.Unlock()
	require.NoError(t, p.Free(c)) // c's block, now freed from s2, absorbs the whole segment
	e, err := p.Alloc(64*kiB, 3)
	require.NoError(t, err)
	require.NotEqual(t, a.Ptr, e.Ptr)
	allocs, _ = dev.counts()
	require.Equal(t, 2, allocs)
	require.NoError(t, checkPool(p, dev))
	require.ErrorContains(t, p.EmptyCache(), "stream destroyed")
	require.Len(t, dev.live(), 2)
	require.ErrorContains(t, p.SyncStream(s2), "stream destroyed")

	dev.mu.Lock()
	delete(dev.syncErr, s2)
	dev.mu.Unlock()
	require.NoError(t, p.SyncStream(s2))
	require.NoError(t, p.EmptyCache())
	require.Equal(t, map[DevicePtr]int{e.Ptr: 2 * miB}, dev.live())
	require.NoError(t, checkPool(p, dev))
	require.NoError(t, p.Free(e))
	require.NoError(t, p.Close())
}

// stamp writes a 16-byte pattern identifying buffer id at both ends of b.
func stamp(dev Device, b Buffer, id uint64) error {
	pat := stampPattern(id, min(b.Size, 16))
	if len(pat) == 0 {
		return nil
	}
	if err := dev.MemcpyHtoD(b.Ptr, pat, 0); err != nil {
		return err
	}
	return dev.MemcpyHtoD(b.Ptr.Add(b.Size-len(pat)), pat, 0)
}

// checkStamp verifies what stamp wrote.
func checkStamp(dev Device, b Buffer, id uint64) error {
	want := stampPattern(id, min(b.Size, 16))
	got := make([]byte, len(want))
	for _, off := range []int{0, b.Size - len(want)} {
		if err := dev.MemcpyDtoH(got, b.Ptr.Add(off), 0); err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("buffer %d at %#x+%d: stamp %x, want %x", id, uint64(b.Ptr), off, got, want)
		}
	}
	return nil
}

func stampPattern(id uint64, n int) []byte {
	pat := make([]byte, n)
	for i := range pat {
		pat[i] = byte(id >> (8 * (i % 8)))
	}
	return pat
}

// checkDisjoint verifies that the blocks behind live buffers do not overlap.
func checkDisjoint(live []Buffer) error {
	sorted := slices.SortedFunc(slices.Values(live), func(a, b Buffer) int {
		return int(int64(a.Ptr) - int64(b.Ptr))
	})
	for i := 1; i < len(sorted); i++ {
		prev, cur := sorted[i-1], sorted[i]
		if prev.Ptr.Add(blockSize(prev.Size)) > cur.Ptr {
			return fmt.Errorf("buffers overlap: %#x+%d and %#x+%d", uint64(prev.Ptr), prev.Size, uint64(cur.Ptr), cur.Size)
		}
	}
	return nil
}

func TestPoolStress(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
			dev := newFakeDevice(96 * miB)
			p := NewPool(dev, PoolOptions{})
			type liveBuf struct {
				Buffer
				id uint64
			}
			var live []liveBuf
			var nextID uint64
			ooms, emptied := 0, 0
			for op := range 3000 {
				switch r := rng.Float64(); {
				case r < 0.55 || len(live) == 0:
					var n int
					switch k := rng.Float64(); {
					case k < 0.6:
						n = rng.IntN(64 * kiB)
					case k < 0.9:
						n = 64*kiB + rng.IntN(miB)
					default:
						n = miB + rng.IntN(24*miB)
					}
					s := Stream(rng.IntN(3))
					b, err := p.Alloc(n, s)
					if err != nil {
						require.ErrorIs(t, err, ErrOutOfMemory, "op %d", op)
						ooms++
						break
					}
					require.Equal(t, n, b.Size)
					require.Equal(t, s, b.Stream())
					nextID++
					require.NoError(t, stamp(dev, b, nextID))
					live = append(live, liveBuf{b, nextID})
				case r < 0.98:
					i := rng.IntN(len(live))
					lb := live[i]
					require.NoError(t, checkStamp(dev, lb.Buffer, lb.id), "op %d", op)
					require.NoError(t, p.Free(lb.Buffer), "op %d", op)
					live = slices.Delete(live, i, i+1)
				default:
					require.NoError(t, p.EmptyCache())
					emptied++
				}
				require.NoError(t, checkPool(p, dev), "op %d", op)
				bufs := make([]Buffer, len(live))
				for i, lb := range live {
					bufs[i] = lb.Buffer
				}
				require.NoError(t, checkDisjoint(bufs), "op %d", op)
			}
			st := p.Stats()
			t.Logf("seed %d: %v; %d OOMs, %d EmptyCache, %d live", seed, st, ooms, emptied, len(live))
			require.Positive(t, st.NumCacheHits)
			for _, lb := range live {
				require.NoError(t, checkStamp(dev, lb.Buffer, lb.id))
				require.NoError(t, p.Free(lb.Buffer))
			}
			require.NoError(t, p.EmptyCache())
			require.NoError(t, checkPool(p, dev))
			require.Empty(t, dev.live())
			require.Zero(t, p.Stats().InUse)
			require.NoError(t, p.Close())
		})
	}
}

func TestPoolConcurrent(t *testing.T) {
	dev := newFakeDevice(256 * miB)
	p := NewPool(dev, PoolOptions{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			s := Stream(g % 3)
			var mine []Buffer
			for range 400 {
				if len(mine) == 0 || rng.IntN(2) == 0 {
					n := rng.IntN(256 * kiB)
					if rng.IntN(10) == 0 {
						n = miB + rng.IntN(4*miB)
					}
					b, err := p.Alloc(n, s)
					if err != nil {
						errs <- err
						return
					}
					mine = append(mine, b)
					continue
				}
				i := rng.IntN(len(mine))
				if err := p.Free(mine[i]); err != nil {
					errs <- err
					return
				}
				mine = slices.Delete(mine, i, i+1)
			}
			for _, b := range mine {
				if err := p.Free(b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, checkPool(p, dev))
	require.Zero(t, p.Stats().InUse)
	require.NoError(t, p.Close())
	require.Empty(t, dev.live())
}
