package runtime

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
)

// Pool sizing. Every request is rounded up to poolRound bytes. Requests of at
// most poolSmallMax bytes ("small") are carved from poolSmallSegment-byte
// segments; larger ones get a segment of their rounded size rounded up again to
// a multiple of poolLargeRound, which later requests may split. A free block is
// split when the part left over is at least poolMinSmallSplit (small) or
// poolMinLargeSplit (large) bytes.
const (
	poolRound         = 512
	poolSmallMax      = 1 << 20
	poolSmallSegment  = 2 << 20
	poolLargeRound    = 2 << 20
	poolMinSmallSplit = poolRound
	poolMinLargeSplit = 1 << 20

	// poolMaxRequest bounds a request so that rounding it cannot overflow.
	poolMaxRequest = math.MaxInt - poolLargeRound
)

// PoolOptions configures a Pool. The zero value is a pool with no limit
// beyond the device's own memory.
type PoolOptions struct {
	// Limit caps Stats.Reserved, the bytes the pool holds from the device.
	// A request that would need more fails as if the device were out of
	// memory (the error wraps ErrOutOfMemory). Zero or negative means no cap.
	Limit int64
}

// Stats is a snapshot of a Pool's counters.
type Stats struct {
	// InUse is the bytes currently handed out, counted in block sizes (each
	// request rounded up to 512 bytes, or more when a block was not split).
	InUse int64
	// Peak is the largest InUse since the pool was created or ResetPeak.
	Peak int64
	// Reserved is the bytes currently obtained from the device: cached
	// segments, whether in use or free.
	Reserved int64
	// NumAllocs counts the Alloc calls that succeeded.
	NumAllocs int64
	// NumCacheHits counts the successful Alloc calls that were served from
	// cached memory, without allocating on the device.
	NumCacheHits int64
}

// String summarises the stats for humans, e.g.
// "in use 1.5 MiB (peak 2 MiB), reserved 4 MiB, 10 allocs, 8 cache hits (80.0%)".
func (s Stats) String() string {
	hitRate := 0.0
	if s.NumAllocs > 0 {
		hitRate = 100 * float64(s.NumCacheHits) / float64(s.NumAllocs)
	}
	return fmt.Sprintf("in use %s (peak %s), reserved %s, %d allocs, %d cache hits (%.1f%%)",
		formatBytes(s.InUse), formatBytes(s.Peak), formatBytes(s.Reserved),
		s.NumAllocs, s.NumCacheHits, hitRate)
}

// formatBytes writes n in B, KiB, MiB or GiB with at most one decimal.
func formatBytes(n int64) string {
	const k = 1024
	switch {
	case n < k && n > -k:
		return fmt.Sprintf("%d B", n)
	case n < k*k && n > -k*k:
		return trimUnit(float64(n)/k, "KiB")
	case n < k*k*k && n > -k*k*k:
		return trimUnit(float64(n)/(k*k), "MiB")
	default:
		return trimUnit(float64(n)/(k*k*k), "GiB")
	}
}

func trimUnit(v float64, unit string) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// Buffer is an allocation handed out by a Pool: Size bytes at Ptr on the
// pool's device. The zero Buffer is not an allocation. A Buffer is a value;
// copies refer to the same allocation, which must be freed exactly once.
type Buffer struct {
	// Ptr is the device address of the allocation.
	Ptr DevicePtr
	// Size is the requested size in bytes; the block behind it may be larger.
	Size int

	pool   *Pool
	blk    *block
	id     uint64 // allocation id, matched against blk.allocID on Free
	stream Stream
}

// Stream returns the stream the buffer was allocated on. The pool assumes the
// buffer is used on that stream only; see Pool for the rule.
func (b Buffer) Stream() Stream { return b.stream }

// Pool returns the pool the buffer came from, or nil for the zero Buffer.
func (b Buffer) Pool() *Pool { return b.pool }

// Free returns the buffer to its pool; it is b.Pool().Free(b).
func (b Buffer) Free() error {
	if b.pool == nil {
		return errors.New("pool free: zero Buffer")
	}
	return b.pool.Free(b)
}

// block is a piece of a segment, either handed out or free. The blocks of a
// segment tile it in address order through prev and next.
type block struct {
	seg        *segment
	ptr        DevicePtr
	size       int
	prev, next *block
	// stream is the allocation stream of an allocated block, and of a free
	// block that is not ready the stream whose work may still use it.
	stream  Stream
	allocID uint64 // nonzero exactly while the block is handed out
	free    bool
	ready   bool // free with no pending work: any stream may take it
	inList  bool // in a free list
	dead    bool // merged into its lower neighbour; no longer in the segment
}

// segment is one allocation obtained from the device.
type segment struct {
	ptr   DevicePtr
	size  int
	small bool
	first *block
}

// freeList holds free blocks sorted by (size, address) for best-fit lookup.
type freeList []*block

func compareBlocks(a, b *block) int {
	if c := cmp.Compare(a.size, b.size); c != 0 {
		return c
	}
	return cmp.Compare(a.ptr, b.ptr)
}

func (l *freeList) insert(b *block) {
	i, _ := slices.BinarySearchFunc(*l, b, compareBlocks)
	*l = slices.Insert(*l, i, b)
}

func (l *freeList) remove(b *block) {
	if i, ok := slices.BinarySearchFunc(*l, b, compareBlocks); ok && (*l)[i] == b {
		*l = slices.Delete(*l, i, i+1)
	}
}

// bestFit returns the smallest block of at least size bytes (lowest address
// among equals), or nil.
func (l freeList) bestFit(size int) *block {
	i, _ := slices.BinarySearchFunc(l, size, func(b *block, n int) int { return cmp.Compare(b.size, n) })
	if i < len(l) {
		return l[i]
	}
	return nil
}

// binSet is the free blocks of one size class (small or large segments):
// ready blocks in one list, the others in one list per freeing stream.
type binSet struct {
	ready   freeList
	streams map[Stream]*freeList
}

// Pool is a caching allocator over a Device, in the manner of PyTorch's CUDA
// caching allocator. It obtains memory from the device in segments (2 MiB for
// requests up to 1 MiB, the request rounded up to 2 MiB otherwise), hands out
// blocks carved from them, and keeps freed blocks for reuse instead of giving
// them back to the device; EmptyCache and Close give the memory back. Free
// blocks are kept in size-ordered bins and found by best fit; a block larger
// than the request is split, and a freed block is merged with free neighbours.
//
// Stream-ordered reuse. A buffer belongs to the stream passed to Alloc, and
// the caller must use it on that stream only (or synchronise any other stream
// that used it before freeing it). Free does not wait for the device: work on
// that stream that reads or writes the buffer may still be pending. So a block
// freed by a buffer of stream s is immediately reused by later allocations on
// s, whose work is ordered after the pending work, but an allocation on
// another stream t takes it only after the pool has called
// dev.Synchronize(s); such a synchronisation makes every block then free from
// s available to all streams. The pool also synchronises before it returns
// memory to the device (EmptyCache, out-of-memory recovery, Close). A stream
// that still has freed blocks in the pool should be passed to SyncStream
// before it is destroyed; otherwise its blocks stay reserved for it.
//
// Out of memory. When the device cannot provide a new segment, the pool
// synchronises the streams of its free blocks, returns every fully free
// segment to the device, and retries once; if that fails too, Alloc returns an
// error that wraps ErrOutOfMemory and reports the request and the pool's
// Stats.
//
// A Pool is safe for concurrent use. Its lock is held during device calls
// (allocation, synchronisation), so one slow synchronisation stalls other
// goroutines' allocations.
type Pool struct {
	dev Device
	opt PoolOptions

	mu       sync.Mutex
	small    binSet
	large    binSet
	segments map[DevicePtr]*segment
	spare    []*block // dead block structs for reuse
	lastID   uint64
	stats    Stats
	closed   bool
}

// NewPool returns an empty pool over dev. It allocates nothing until the
// first Alloc.
func NewPool(dev Device, opt PoolOptions) *Pool {
	return &Pool{
		dev:      dev,
		opt:      opt,
		small:    binSet{streams: map[Stream]*freeList{}},
		large:    binSet{streams: map[Stream]*freeList{}},
		segments: map[DevicePtr]*segment{},
	}
}

// Device returns the device the pool allocates from.
func (p *Pool) Device() Device {
	if p == nil {
		return nil
	}
	return p.dev
}

// roundUp rounds n up to a multiple of m; n must not be near math.MaxInt.
func roundUp(n, m int) int { return (n + m - 1) / m * m }

// blockSize is the size of the block that serves an n-byte request.
func blockSize(n int) int { return roundUp(max(n, 1), poolRound) }

// segmentSize is the size of the segment a new block of size bytes is cut from.
func segmentSize(size int) int {
	if size <= poolSmallMax {
		return poolSmallSegment
	}
	return roundUp(size, poolLargeRound)
}

// Alloc returns a buffer of n bytes for use on stream s. The memory is not
// initialised. Alloc(0) succeeds and returns a buffer with Size 0 and a valid,
// distinct Ptr backed by a minimum (512-byte) block; like every buffer it must
// be freed. A negative n is an error. When the device is out of memory even
// after the pool has released its cache, the error wraps ErrOutOfMemory.
func (p *Pool) Alloc(n int, s Stream) (Buffer, error) {
	if p == nil || p.dev == nil {
		return Buffer{}, fmt.Errorf("pool alloc %d bytes: pool has no device", n)
	}
	if n < 0 {
		return Buffer{}, fmt.Errorf("pool alloc %d bytes: negative size", n)
	}
	if n > poolMaxRequest {
		return Buffer{}, fmt.Errorf("pool alloc %d bytes: request too large: %w", n, ErrOutOfMemory)
	}
	size := blockSize(n)
	small := size <= poolSmallMax

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Buffer{}, fmt.Errorf("pool alloc %d bytes: pool is closed", n)
	}

	blk := p.findFree(small, size, s)
	hit := blk != nil
	if blk == nil {
		var err error
		blk, err = p.grow(small, size)
		if errors.Is(err, ErrOutOfMemory) {
			// Make every free block ready (and so mergeable), then see
			// whether the cache can serve the request after all; if
			// not, give the fully free segments back and retry.
			syncErr := p.syncFreeStreams()
			if blk = p.findFree(small, size, s); blk != nil {
				hit, err = true, nil
			} else {
				relErr := p.releaseFreeSegments()
				blk, err = p.grow(small, size)
				if err != nil {
					err = errors.Join(err, syncErr, relErr)
				}
			}
		}
		if err != nil {
			return Buffer{}, fmt.Errorf("pool alloc %d bytes (block %d, new segment %d) on stream %d: %w; pool: %v",
				n, size, segmentSize(size), s, err, p.stats)
		}
	}

	p.take(blk, size, s)
	p.stats.NumAllocs++
	if hit {
		p.stats.NumCacheHits++
	}
	return Buffer{Ptr: blk.ptr, Size: n, pool: p, blk: blk, id: blk.allocID, stream: s}, nil
}

// Free returns b to the pool for reuse (see Pool for when other streams may
// reuse it). Freeing the zero Buffer, a buffer of another pool, or a buffer
// that was already freed is an error and changes nothing.
func (p *Pool) Free(b Buffer) error {
	if p == nil {
		return fmt.Errorf("pool free %#x: nil pool", uint64(b.Ptr))
	}
	if b.pool == nil {
		return errors.New("pool free: zero Buffer")
	}
	if b.pool != p {
		return fmt.Errorf("pool free %#x (%d bytes): buffer belongs to another pool", uint64(b.Ptr), b.Size)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("pool free %#x (%d bytes): pool is closed", uint64(b.Ptr), b.Size)
	}
	blk := b.blk
	if blk == nil || blk.allocID == 0 || blk.allocID != b.id || blk.ptr != b.Ptr {
		return fmt.Errorf("pool free %#x (%d bytes): buffer is not allocated (freed twice?)", uint64(b.Ptr), b.Size)
	}
	p.stats.InUse -= int64(blk.size)
	blk.free = true
	blk.ready = false // stream keeps the allocation stream: its work may be pending
	blk.allocID = 0
	p.coalesce(blk)
	return nil
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() Stats {
	if p == nil {
		return Stats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// ResetPeak sets Stats.Peak to the current InUse.
func (p *Pool) ResetPeak() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Peak = p.stats.InUse
}

// EmptyCache synchronises the streams of the pool's free blocks and returns
// every segment that is entirely free to the device. Segments holding a live
// buffer stay. A stream that fails to synchronise keeps its blocks (and their
// segments) and its error is returned, joined with any device Free errors.
func (p *Pool) EmptyCache() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if err := errors.Join(p.syncFreeStreams(), p.releaseFreeSegments()); err != nil {
		return fmt.Errorf("pool empty cache: %w", err)
	}
	return nil
}

// SyncStream synchronises s and makes every block freed from s available to
// all streams. Call it before destroying a stream that pool buffers were
// allocated on (after freeing them), so that the pool never needs to
// synchronise the destroyed stream.
func (p *Pool) SyncStream(s Stream) error {
	if p == nil || p.dev == nil {
		return errors.New("pool sync stream: pool has no device")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if err := p.dev.Synchronize(s); err != nil {
		return fmt.Errorf("pool sync stream %d: %w", s, err)
	}
	p.streamSynced(s)
	return nil
}

// Close returns all of the pool's memory to the device, after synchronising
// the streams of its free blocks, and makes later Alloc and Free calls fail.
// Buffers still live are released too (their memory must not be used any
// more) and reported in the returned error. Closing a closed pool does
// nothing. Close does not close the device.
func (p *Pool) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	errs := []error{p.syncFreeStreams()}
	live, liveBytes := 0, 0
	for _, seg := range p.sortedSegments() {
		for b := seg.first; b != nil; b = b.next {
			if !b.free {
				live++
				liveBytes += b.size
			}
		}
		if err := p.dev.Free(seg.ptr); err != nil {
			errs = append(errs, fmt.Errorf("free %d-byte segment %#x: %w", seg.size, uint64(seg.ptr), err))
		}
	}
	if live > 0 {
		errs = append(errs, fmt.Errorf("%d buffers (%d bytes) were still in use; their memory has been released", live, liveBytes))
	}
	p.segments = map[DevicePtr]*segment{}
	p.small = binSet{streams: map[Stream]*freeList{}}
	p.large = binSet{streams: map[Stream]*freeList{}}
	p.stats.InUse, p.stats.Reserved = 0, 0
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pool close: %w", err)
	}
	return nil
}

// bins returns the bin set of small or large blocks.
func (p *Pool) bins(small bool) *binSet {
	if small {
		return &p.small
	}
	return &p.large
}

// list puts free block b into the list its readiness and stream select.
func (p *Pool) list(b *block) {
	bs := p.bins(b.seg.small)
	if b.ready {
		bs.ready.insert(b)
	} else {
		l := bs.streams[b.stream]
		if l == nil {
			l = new(freeList)
			bs.streams[b.stream] = l
		}
		l.insert(b)
	}
	b.inList = true
}

// unlist takes b out of its free list.
func (p *Pool) unlist(b *block) {
	bs := p.bins(b.seg.small)
	if b.ready {
		bs.ready.remove(b)
	} else if l := bs.streams[b.stream]; l != nil {
		l.remove(b) // an emptied list stays, for the stream's next free
	}
	b.inList = false
}

// localFit returns the best fit among the blocks stream s may take without a
// synchronisation: those freed from s and the ready ones.
func (bs *binSet) localFit(size int, s Stream) *block {
	var own *block
	if l := bs.streams[s]; l != nil {
		own = l.bestFit(size)
	}
	shared := bs.ready.bestFit(size)
	switch {
	case own == nil:
		return shared
	case shared == nil || compareBlocks(own, shared) <= 0:
		return own
	default:
		return shared
	}
}

// findFree returns a free block of at least size bytes of the given class
// that stream s may use now, synchronising another stream if only that
// stream's blocks fit. It returns nil if the cache cannot serve the request.
func (p *Pool) findFree(small bool, size int, s Stream) *block {
	bs := p.bins(small)
	if b := bs.localFit(size, s); b != nil {
		return b
	}
	var cands []*block
	for u, l := range bs.streams {
		if u == s {
			continue
		}
		if b := l.bestFit(size); b != nil {
			cands = append(cands, b)
		}
	}
	slices.SortFunc(cands, compareBlocks)
	for _, c := range cands {
		if c.dead || !c.free || c.ready { // changed by an earlier synchronisation
			continue
		}
		if err := p.dev.Synchronize(c.stream); err != nil {
			continue // the stream cannot be waited for: leave its blocks alone
		}
		p.streamSynced(c.stream)
		if b := bs.localFit(size, s); b != nil {
			return b
		}
	}
	return nil
}

// streamSynced records that all work on u is done: every block freed from u
// becomes ready, and is merged with the neighbours that now allow it.
func (p *Pool) streamSynced(u Stream) {
	for _, bs := range []*binSet{&p.small, &p.large} {
		l := bs.streams[u]
		if l == nil {
			continue
		}
		delete(bs.streams, u)
		blocks := *l
		for _, b := range blocks {
			b.inList = false
			b.ready = true
		}
		for _, b := range blocks {
			if !b.dead && !b.inList {
				p.coalesce(b)
			}
		}
	}
}

// syncFreeStreams synchronises every stream that has free, not ready blocks
// and marks them ready. Streams that fail to synchronise keep their blocks.
func (p *Pool) syncFreeStreams() error {
	var streams []Stream
	for _, bs := range []*binSet{&p.small, &p.large} {
		for u, l := range bs.streams {
			if len(*l) == 0 {
				delete(bs.streams, u) // forget streams that may be gone
			} else if !slices.Contains(streams, u) {
				streams = append(streams, u)
			}
		}
	}
	slices.Sort(streams)
	var errs []error
	for _, u := range streams {
		if err := p.dev.Synchronize(u); err != nil {
			errs = append(errs, fmt.Errorf("synchronize stream %d: %w", u, err))
			continue
		}
		p.streamSynced(u)
	}
	return errors.Join(errs...)
}

// mergeable reports whether adjacent free blocks a and b may become one
// block: when at most one of them may have pending work, or both only on the
// same stream.
func mergeable(a, b *block) bool {
	return a.ready || b.ready || a.stream == b.stream
}

// coalesce merges free block b, which is in no list, with its free
// neighbours where mergeable allows, and lists the result.
func (p *Pool) coalesce(b *block) {
	if prev := b.prev; prev != nil && prev.free && mergeable(prev, b) {
		if prev.inList {
			p.unlist(prev)
		}
		absorb(prev, b)
		p.recycle(b)
		b = prev
	}
	if next := b.next; next != nil && next.free && mergeable(b, next) {
		if next.inList {
			p.unlist(next)
		}
		absorb(b, next)
		p.recycle(next)
	}
	p.list(b)
}

// recycle keeps the struct of a dead block for newBlock. A stale Buffer may
// still point at it; its allocation id, never reused, keeps it from matching.
func (p *Pool) recycle(b *block) {
	if len(p.spare) < 64 {
		p.spare = append(p.spare, b)
	}
}

// newBlock returns a zeroed block struct.
func (p *Pool) newBlock() *block {
	if n := len(p.spare); n > 0 {
		b := p.spare[n-1]
		p.spare = p.spare[:n-1]
		*b = block{}
		return b
	}
	return new(block)
}

// absorb merges free block c into its lower neighbour a. The result has
// pending work on a stream if either part had.
func absorb(a, c *block) {
	a.size += c.size
	a.next = c.next
	if c.next != nil {
		c.next.prev = a
	}
	if !c.ready {
		a.stream = c.stream
	}
	a.ready = a.ready && c.ready
	c.dead = true
	c.prev, c.next = nil, nil
}

// grow obtains a new segment for a block of size bytes and returns its one
// free, unlisted block.
func (p *Pool) grow(small bool, size int) (*block, error) {
	segSize := segmentSize(size)
	if p.opt.Limit > 0 && p.stats.Reserved+int64(segSize) > p.opt.Limit {
		return nil, fmt.Errorf("a new %d-byte segment would exceed the pool limit of %d bytes: %w",
			segSize, p.opt.Limit, ErrOutOfMemory)
	}
	ptr, err := p.dev.Alloc(segSize)
	if err != nil {
		return nil, fmt.Errorf("device alloc %d-byte segment: %w", segSize, err)
	}
	seg := &segment{ptr: ptr, size: segSize, small: small}
	seg.first = &block{seg: seg, ptr: ptr, size: segSize, free: true, ready: true}
	p.segments[ptr] = seg
	p.stats.Reserved += int64(segSize)
	return seg.first, nil
}

// take hands out free block b for a block of size bytes on stream s,
// splitting off the rest when it is large enough to be worth keeping.
func (p *Pool) take(b *block, size int, s Stream) {
	if b.inList {
		p.unlist(b)
	}
	minSplit := poolMinLargeSplit
	if b.seg.small {
		minSplit = poolMinSmallSplit
	}
	if rest := b.size - size; rest >= minSplit {
		r := p.newBlock()
		*r = block{seg: b.seg, ptr: b.ptr.Add(size), size: rest, prev: b, next: b.next,
			free: true, ready: b.ready, stream: b.stream}
		if b.next != nil {
			b.next.prev = r
		}
		b.next = r
		b.size = size
		p.list(r)
	}
	b.free, b.ready, b.stream = false, false, s
	p.lastID++
	b.allocID = p.lastID
	p.stats.InUse += int64(b.size)
	p.stats.Peak = max(p.stats.Peak, p.stats.InUse)
}

// releaseFreeSegments returns every segment that is one free, ready block to
// the device.
func (p *Pool) releaseFreeSegments() error {
	var errs []error
	for _, seg := range p.sortedSegments() {
		b := seg.first
		if !b.free || !b.ready || b.next != nil {
			continue
		}
		if err := p.dev.Free(seg.ptr); err != nil {
			errs = append(errs, fmt.Errorf("free %d-byte segment %#x: %w", seg.size, uint64(seg.ptr), err))
			continue
		}
		p.unlist(b)
		b.dead = true
		delete(p.segments, seg.ptr)
		p.stats.Reserved -= int64(seg.size)
	}
	return errors.Join(errs...)
}

// sortedSegments returns the segments in address order.
func (p *Pool) sortedSegments() []*segment {
	segs := make([]*segment, 0, len(p.segments))
	for _, seg := range p.segments {
		segs = append(segs, seg)
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmp.Compare(a.ptr, b.ptr) })
	return segs
}
