package runtime

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// fakeDevice is a map-backed Device for the pool tests. Allocations come
// from a bump pointer (addresses are never reused, with a gap after each
// allocation), memory is materialised lazily on first Memset/Memcpy, and the
// device counts Alloc, Free and Synchronize calls. capacity, when positive,
// is the total bytes it will hand out before failing with ErrOutOfMemory.
type fakeDevice struct {
	mu         sync.Mutex
	capacity   int64
	used       int64
	next       DevicePtr
	allocs     map[DevicePtr]*fakeAlloc
	bases      []DevicePtr // sorted keys of allocs
	allocCalls int         // including failed ones
	freeCalls  int
	syncs      map[Stream]int
	syncErr    map[Stream]error // Synchronize fails for these streams
	freeErr    error            // Free fails with this when set
	lastStream Stream
}

type fakeAlloc struct {
	size int
	data []byte // nil until first touched
}

func newFakeDevice(capacity int64) *fakeDevice {
	return &fakeDevice{
		capacity: capacity,
		next:     0x10000000,
		allocs:   map[DevicePtr]*fakeAlloc{},
		syncs:    map[Stream]int{},
		syncErr:  map[Stream]error{},
	}
}

func (d *fakeDevice) Name() string { return "fake" }
func (d *fakeDevice) Kind() string { return "fake" }
func (d *fakeDevice) TotalMem() int64 {
	return d.capacity
}

func (d *fakeDevice) Alloc(n int) (DevicePtr, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.allocCalls++
	if n <= 0 {
		return 0, fmt.Errorf("fake alloc %d bytes: bad size", n)
	}
	if d.capacity > 0 && d.used+int64(n) > d.capacity {
		return 0, fmt.Errorf("fake alloc %d bytes (%d of %d used): %w", n, d.used, d.capacity, ErrOutOfMemory)
	}
	p := d.next
	d.next += DevicePtr((n+255)/256*256 + 4096)
	d.used += int64(n)
	d.allocs[p] = &fakeAlloc{size: n}
	i, _ := slices.BinarySearch(d.bases, p)
	d.bases = slices.Insert(d.bases, i, p)
	return p, nil
}

func (d *fakeDevice) Free(p DevicePtr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.freeCalls++
	if d.freeErr != nil {
		return d.freeErr
	}
	a, ok := d.allocs[p]
	if !ok {
		return fmt.Errorf("fake free %#x: not allocated", uint64(p))
	}
	delete(d.allocs, p)
	i, _ := slices.BinarySearch(d.bases, p)
	d.bases = slices.Delete(d.bases, i, i+1)
	d.used -= int64(a.size)
	return nil
}

// mem returns the n bytes at p, which must lie in one allocation.
func (d *fakeDevice) mem(p DevicePtr, n int) ([]byte, error) {
	i, found := slices.BinarySearch(d.bases, p)
	if !found {
		i--
	}
	if i < 0 {
		return nil, fmt.Errorf("fake: %#x is not device memory", uint64(p))
	}
	base := d.bases[i]
	a := d.allocs[base]
	off := int(p - base)
	if off+n > a.size {
		return nil, fmt.Errorf("fake: [%#x, +%d) overruns the allocation at %#x (%d bytes)", uint64(p), n, uint64(base), a.size)
	}
	if a.data == nil {
		a.data = make([]byte, a.size)
	}
	return a.data[off : off+n], nil
}

func (d *fakeDevice) MemcpyHtoD(dst DevicePtr, src []byte, _ Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, err := d.mem(dst, len(src))
	if err != nil {
		return err
	}
	copy(m, src)
	return nil
}

func (d *fakeDevice) MemcpyDtoH(dst []byte, src DevicePtr, _ Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, err := d.mem(src, len(dst))
	if err != nil {
		return err
	}
	copy(dst, m)
	return nil
}

func (d *fakeDevice) MemcpyDtoD(dst, src DevicePtr, n int, _ Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.mem(src, n)
	if err != nil {
		return err
	}
	m, err := d.mem(dst, n)
	if err != nil {
		return err
	}
	copy(m, s)
	return nil
}

func (d *fakeDevice) Memset(dst DevicePtr, b byte, n int, _ Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m, err := d.mem(dst, n)
	if err != nil {
		return err
	}
	for i := range m {
		m[i] = b
	}
	return nil
}

func (d *fakeDevice) NewStream() (Stream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastStream++
	return d.lastStream, nil
}

func (d *fakeDevice) DestroyStream(Stream) error { return nil }

func (d *fakeDevice) Synchronize(s Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.syncErr[s]; err != nil {
		return err
	}
	d.syncs[s]++
	return nil
}

func (d *fakeDevice) NewEvent() (Event, error)              { return 1, nil }
func (d *fakeDevice) DestroyEvent(Event) error              { return nil }
func (d *fakeDevice) Record(Event, Stream) error            { return nil }
func (d *fakeDevice) Elapsed(Event, Event) (float32, error) { return 0, nil }

var errFakeNoKernels = errors.New("fake device runs no kernels")

func (d *fakeDevice) LoadModule(string, []byte, []string) (Module, error) {
	return nil, errFakeNoKernels
}

func (d *fakeDevice) Launch(Function, Dim3, Dim3, int, Stream, []uint64) error {
	return errFakeNoKernels
}

func (d *fakeDevice) Close() error { return nil }

// counts returns the Alloc and Free call counts.
func (d *fakeDevice) counts() (allocs, frees int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.allocCalls, d.freeCalls
}

// syncCount returns how often s was synchronised.
func (d *fakeDevice) syncCount(s Stream) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncs[s]
}

// live returns the live allocations, address to size.
func (d *fakeDevice) live() map[DevicePtr]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := make(map[DevicePtr]int, len(d.allocs))
	for p, a := range d.allocs {
		m[p] = a.size
	}
	return m
}

var _ Device = (*fakeDevice)(nil)
