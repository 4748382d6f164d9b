// Package emu implements runtime.Device on the CUDA-on-CPU emulator
// (kernels/emu): device memory is host memory, work runs synchronously when
// it is issued, and kernels are the .cu kernels compiled into the emulator.
// Importing the package registers the "emu" device kind with runtime.Open.
package emu

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	kemu "github.com/perkgo/perk/kernels/emu"
	"github.com/perkgo/perk/runtime"
)

// DefaultMemLimit is the emulated device memory size when neither WithMemLimit
// nor the MemLimitEnv variable sets one.
const DefaultMemLimit int64 = 16 << 30

// MemLimitEnv names the environment variable that sets the emulated device
// memory size in bytes.
const MemLimitEnv = "PERK_EMU_MEM_BYTES"

// allocAlign is the alignment of every allocation, as on CUDA.
const allocAlign = 256

// ErrClosed is returned by a Device that has been closed.
var ErrClosed = errors.New("emu: device is closed")

func init() {
	runtime.Register("emu", func() (runtime.Device, error) {
		d, err := New()
		if err != nil {
			return nil, err
		}
		return d, nil
	})
}

// Option configures New.
type Option func(*config)

type config struct {
	workers  int
	memLimit int64
}

// WithWorkers sets the number of worker threads that run blocks (n <= 0: one
// per CPU). The worker pool is shared by the whole process.
func WithWorkers(n int) Option { return func(c *config) { c.workers = n } }

// WithMemLimit sets the emulated device memory size in bytes.
func WithMemLimit(bytes int64) Option { return func(c *config) { c.memLimit = bytes } }

// Device is the emulator as a runtime.Device. It is safe for concurrent use;
// launches run one at a time.
type Device struct {
	limit int64

	mu      sync.RWMutex
	closed  bool
	used    int64
	allocs  map[runtime.DevicePtr]allocation
	bases   []runtime.DevicePtr // sorted keys of allocs
	streams map[runtime.Stream]struct{}
	events  map[runtime.Event]*event
	next    uintptr // last stream or event handle issued
}

type allocation struct {
	size    int // bytes requested; accesses must stay inside
	charged int // bytes counted against the limit (size rounded up to allocAlign)
}

type event struct {
	at       time.Time
	recorded bool
}

var _ runtime.Device = (*Device)(nil)

// New returns an emulator device. The memory limit comes from WithMemLimit,
// else the MemLimitEnv environment variable, else DefaultMemLimit.
func New(opts ...Option) (*Device, error) {
	c := config{memLimit: -1}
	for _, o := range opts {
		o(&c)
	}
	if c.memLimit < 0 {
		c.memLimit = DefaultMemLimit
		if s := os.Getenv(MemLimitEnv); s != "" {
			v, err := strconv.ParseInt(s, 10, 64)
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("emu: %s=%q is not a positive byte count", MemLimitEnv, s)
			}
			c.memLimit = v
		}
	}
	if c.memLimit == 0 {
		return nil, fmt.Errorf("emu: memory limit must be positive")
	}
	if c.workers != 0 {
		kemu.SetWorkers(c.workers)
	}
	return &Device{
		limit:   c.memLimit,
		allocs:  map[runtime.DevicePtr]allocation{},
		streams: map[runtime.Stream]struct{}{},
		events:  map[runtime.Event]*event{},
	}, nil
}

// Name describes the device and its worker pool.
func (d *Device) Name() string { return fmt.Sprintf("emu (%d worker threads)", kemu.Workers()) }

// Kind returns "emu".
func (d *Device) Kind() string { return "emu" }

// TotalMem returns the memory limit in bytes.
func (d *Device) TotalMem() int64 { return d.limit }

// MemUsed returns the bytes currently allocated (each allocation rounded up
// to 256 bytes).
func (d *Device) MemUsed() int64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.used
}

// Alloc returns n bytes of uncleared memory aligned to 256 bytes.
func (d *Device) Alloc(n int) (runtime.DevicePtr, error) {
	if n <= 0 {
		return 0, fmt.Errorf("emu: alloc %d bytes: size must be positive", n)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	if int64(n) > d.limit-d.used { // before rounding up, which could overflow
		return 0, fmt.Errorf("emu: alloc %d bytes with %d of %d bytes in use: %w", n, d.used, d.limit, runtime.ErrOutOfMemory)
	}
	charged := (n + allocAlign - 1) &^ (allocAlign - 1)
	if int64(charged) > d.limit-d.used {
		return 0, fmt.Errorf("emu: alloc %d bytes with %d of %d bytes in use: %w", n, d.used, d.limit, runtime.ErrOutOfMemory)
	}
	p := runtime.DevicePtr(kemu.Alloc(charged))
	if p == 0 {
		return 0, fmt.Errorf("emu: alloc %d bytes: host allocation failed: %w", n, runtime.ErrOutOfMemory)
	}
	d.allocs[p] = allocation{size: n, charged: charged}
	i, _ := slices.BinarySearch(d.bases, p)
	d.bases = slices.Insert(d.bases, i, p)
	d.used += int64(charged)
	return p, nil
}

// Free releases memory returned by Alloc; freeing any other pointer, or the
// same one twice, is an error.
func (d *Device) Free(p runtime.DevicePtr) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	a, ok := d.allocs[p]
	if !ok {
		return fmt.Errorf("emu: free %#x: not the start of a live allocation", uint64(p))
	}
	delete(d.allocs, p)
	if i, found := slices.BinarySearch(d.bases, p); found {
		d.bases = slices.Delete(d.bases, i, i+1)
	}
	d.used -= int64(a.charged)
	kemu.Free(uint64(p))
	return nil
}

// checkRange reports an error unless [p, p+n) lies inside one live
// allocation. The caller holds d.mu.
func (d *Device) checkRange(what string, p runtime.DevicePtr, n int) error {
	if n < 0 {
		return fmt.Errorf("emu: %s: negative size %d", what, n)
	}
	i, found := slices.BinarySearch(d.bases, p)
	if !found {
		i-- // the allocation starting below p, if any
	}
	if i < 0 {
		return fmt.Errorf("emu: %s: address %#x is not in a live allocation", what, uint64(p))
	}
	base := d.bases[i]
	a := d.allocs[base]
	off := uint64(p - base)
	if off >= uint64(a.size) {
		return fmt.Errorf("emu: %s: address %#x is not in a live allocation", what, uint64(p))
	}
	if uint64(n) > uint64(a.size)-off {
		return fmt.Errorf("emu: %s: %d bytes at offset %d overrun the %d-byte allocation at %#x", what, n, off, a.size, uint64(base))
	}
	return nil
}

// checkStream reports an error for a stream that was never created or was
// destroyed. The caller holds d.mu.
func (d *Device) checkStream(what string, s runtime.Stream) error {
	if d.closed {
		return ErrClosed
	}
	if s == 0 {
		return nil
	}
	if _, ok := d.streams[s]; !ok {
		return fmt.Errorf("emu: %s: unknown stream %d", what, s)
	}
	return nil
}

// MemcpyHtoD copies len(src) bytes from host to device.
func (d *Device) MemcpyHtoD(dst runtime.DevicePtr, src []byte, s runtime.Stream) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkStream("memcpy HtoD", s); err != nil {
		return err
	}
	if len(src) == 0 {
		return nil
	}
	if err := d.checkRange("memcpy HtoD", dst, len(src)); err != nil {
		return err
	}
	kemu.Write(uint64(dst), src)
	return nil
}

// MemcpyDtoH copies len(dst) bytes from device to host.
func (d *Device) MemcpyDtoH(dst []byte, src runtime.DevicePtr, s runtime.Stream) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkStream("memcpy DtoH", s); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	if err := d.checkRange("memcpy DtoH", src, len(dst)); err != nil {
		return err
	}
	kemu.Read(dst, uint64(src))
	return nil
}

// MemcpyDtoD copies n bytes within the device; the ranges may overlap.
func (d *Device) MemcpyDtoD(dst, src runtime.DevicePtr, n int, s runtime.Stream) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkStream("memcpy DtoD", s); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := d.checkRange("memcpy DtoD destination", dst, n); err != nil {
		return err
	}
	if err := d.checkRange("memcpy DtoD source", src, n); err != nil {
		return err
	}
	kemu.Copy(uint64(dst), uint64(src), n)
	return nil
}

// Memset sets n bytes at dst to b.
func (d *Device) Memset(dst runtime.DevicePtr, b byte, n int, s runtime.Stream) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkStream("memset", s); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	if err := d.checkRange("memset", dst, n); err != nil {
		return err
	}
	kemu.Fill(uint64(dst), b, n)
	return nil
}

// NewStream creates a stream. Work on the emulator is synchronous, so
// streams only need to exist.
func (d *Device) NewStream() (runtime.Stream, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	d.next++
	s := runtime.Stream(d.next)
	d.streams[s] = struct{}{}
	return s, nil
}

// DestroyStream releases a stream made by NewStream.
func (d *Device) DestroyStream(s runtime.Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if _, ok := d.streams[s]; !ok {
		return fmt.Errorf("emu: destroy stream %d: unknown stream", s)
	}
	delete(d.streams, s)
	return nil
}

// Synchronize returns at once: all work is done when it is issued.
func (d *Device) Synchronize(s runtime.Stream) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.checkStream("synchronize", s)
}

// NewEvent creates an event.
func (d *Device) NewEvent() (runtime.Event, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrClosed
	}
	d.next++
	e := runtime.Event(d.next)
	d.events[e] = &event{}
	return e, nil
}

// DestroyEvent releases an event made by NewEvent.
func (d *Device) DestroyEvent(e runtime.Event) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	if _, ok := d.events[e]; !ok {
		return fmt.Errorf("emu: destroy event %d: unknown event", e)
	}
	delete(d.events, e)
	return nil
}

// Record stamps the event with the current (monotonic) time.
func (d *Device) Record(e runtime.Event, s runtime.Stream) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkStream("record event", s); err != nil {
		return err
	}
	ev, ok := d.events[e]
	if !ok {
		return fmt.Errorf("emu: record event %d: unknown event", e)
	}
	ev.at = time.Now()
	ev.recorded = true
	return nil
}

// Elapsed returns the milliseconds from start to end; both must be recorded.
func (d *Device) Elapsed(start, end runtime.Event) (float32, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	a, ok1 := d.events[start]
	b, ok2 := d.events[end]
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("emu: elapsed time between events %d and %d: unknown event", start, end)
	}
	if !a.recorded || !b.recorded {
		return 0, fmt.Errorf("emu: elapsed time between events %d and %d: event not recorded", start, end)
	}
	return float32(b.at.Sub(a.at).Seconds() * 1e3), nil
}

// module is a named set of kernels checked against the emulator's registry.
type module struct {
	name string
}

// function is a kernel the emulator has.
type function struct {
	name    string
	nparams int
}

// Name returns the kernel's name.
func (f *function) Name() string { return f.name }

// Function returns the kernel called name, which the emulator must have.
func (m *module) Function(name string) (runtime.Function, error) {
	n, ok := kemu.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("emu: module %q: kernel %q is not compiled into the emulator", m.name, name)
	}
	return &function{name: name, nparams: n}, nil
}

// LoadModule ignores the PTX image and checks that the emulator has every
// kernel in kernels.
func (d *Device) LoadModule(name string, ptx []byte, kernels []string) (runtime.Module, error) {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	var missing []string
	for _, k := range kernels {
		if _, ok := kemu.Lookup(k); !ok {
			missing = append(missing, strconv.Quote(k))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("emu: load module %q: kernel %s not compiled into the emulator", name, strings.Join(missing, ", "))
	}
	return &module{name: name}, nil
}

// Launch runs fn on grid×block threads and returns when the grid has run.
func (d *Device) Launch(fn runtime.Function, grid, block runtime.Dim3, shmem int, s runtime.Stream, params []uint64) error {
	f, ok := fn.(*function)
	if !ok || f == nil {
		return fmt.Errorf("emu: launch: function %v was not loaded on the emulator", fn)
	}
	d.mu.RLock()
	err := d.checkStream("launch "+f.name, s)
	d.mu.RUnlock()
	if err != nil {
		return err
	}
	if err := kemu.Launch(f.name, [3]int{grid.X, grid.Y, grid.Z}, [3]int{block.X, block.Y, block.Z}, shmem, params); err != nil {
		return fmt.Errorf("emu: %w", err)
	}
	return nil
}

// Close frees all memory still allocated; later calls return ErrClosed.
// Closing twice is not an error.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	for p := range d.allocs {
		kemu.Free(uint64(p))
	}
	d.allocs = nil
	d.bases = nil
	d.used = 0
	d.closed = true
	return nil
}
