//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/perkgo/perk/runtime"
)

// ErrClosed is returned (wrapped) by every Device method called after Close.
var ErrClosed = errors.New("cuda device is closed")

// ErrUnknownPointer is returned (wrapped) by Free for a pointer that is not a
// live allocation of the device: a double free, an interior pointer, or memory
// from another device.
var ErrUnknownPointer = errors.New("pointer is not a live allocation of this device (double free or foreign pointer)")

// ErrUnknownHandle is returned (wrapped) for a Stream or Event that the device
// did not create or that was already destroyed.
var ErrUnknownHandle = errors.New("unknown or destroyed handle")

// allocAlign is the alignment runtime.Device promises for Alloc.
const allocAlign = 256

func init() {
	runtime.Register("cuda", func() (runtime.Device, error) { return New(0) })
}

// Device is one CUDA GPU driven through the driver API. It implements
// runtime.Device.
//
// A Device owns one goroutine, locked to its OS thread, on which the device's
// CUDA context is current; every driver call is a closure sent to that
// goroutine over a channel and its result is handed back synchronously. Driver
// calls are therefore serialised, and the methods are safe for concurrent use.
type Device struct {
	ordinal int
	name    string
	total   int64

	work      chan request
	done      chan struct{} // closed when the worker goroutine has exited
	closeOnce sync.Once

	// The fields below belong to the worker goroutine: they are read and
	// written only inside closures that it runs.
	dev        cu.Device
	ctx        cu.CUContext
	live       map[runtime.DevicePtr]int
	streams    map[runtime.Stream]cu.Stream
	events     map[runtime.Event]cu.Event
	modules    []*module
	nextHandle uintptr
	params     paramBuffer
	stopped    bool
}

var _ runtime.Device = (*Device)(nil)

// request is one closure for the worker and the channel its result goes to.
type request struct {
	fn  func() error
	res chan error
}

// New opens the CUDA device with the given ordinal: it starts the device's
// worker goroutine, creates a context on it and reads the device's name and
// memory size.
func New(ordinal int) (*Device, error) {
	d := &Device{
		ordinal: ordinal,
		work:    make(chan request),
		done:    make(chan struct{}),
		live:    make(map[runtime.DevicePtr]int),
		streams: make(map[runtime.Stream]cu.Stream),
		events:  make(map[runtime.Event]cu.Event),
	}
	ready := make(chan error, 1)
	go d.loop(ready)
	if err := <-ready; err != nil {
		return nil, fmt.Errorf("open cuda device %d: %w", ordinal, err)
	}
	register(d)
	return d, nil
}

// loop is the worker goroutine. It never unlocks its OS thread: when it
// returns, the Go runtime retires the thread, so no other goroutine inherits
// whatever CUDA state is left on it.
func (d *Device) loop(ready chan<- error) {
	goruntime.LockOSThread()
	defer close(d.done)
	if err := d.setup(); err != nil {
		ready <- err
		return
	}
	ready <- nil
	for !d.stopped {
		req := <-d.work
		req.res <- d.run(req.fn)
	}
}

// run calls fn, turning a panic into an error so that the worker, which owns
// the context, survives it.
func (d *Device) run(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic on the cuda worker: %v", r)
		}
	}()
	return fn()
}

// setup runs on the worker before it accepts work: it creates the context,
// which becomes current on the worker's thread.
func (d *Device) setup() error {
	n, err := cu.NumDevices()
	if err != nil {
		return fmt.Errorf("count devices: %w", err)
	}
	if d.ordinal < 0 || d.ordinal >= n {
		return fmt.Errorf("no device with ordinal %d (%d present)", d.ordinal, n)
	}
	dev, err := cu.GetDevice(d.ordinal)
	if err != nil {
		return fmt.Errorf("get device: %w", err)
	}
	name, err := dev.Name()
	if err != nil {
		return fmt.Errorf("device name: %w", err)
	}
	total, err := dev.TotalMem()
	if err != nil {
		return fmt.Errorf("device memory size: %w", err)
	}
	ctx, err := dev.MakeContext(cu.SchedAuto)
	if err != nil {
		return fmt.Errorf("create context: %w", err)
	}
	d.dev, d.ctx, d.name, d.total = dev, ctx, name, total
	return nil
}

// do runs fn on the worker goroutine and returns its error. After Close it
// returns ErrClosed without running fn.
func (d *Device) do(fn func() error) error {
	req := request{fn: fn, res: make(chan error, 1)}
	select {
	case d.work <- req:
	case <-d.done:
		return ErrClosed
	}
	return <-req.res
}

// Name returns the device's name as the driver reports it, e.g. "NVIDIA H200".
func (d *Device) Name() string { return d.name }

// Kind returns "cuda".
func (d *Device) Kind() string { return "cuda" }

// TotalMem returns the device memory in bytes.
func (d *Device) TotalMem() int64 { return d.total }

// Ordinal returns the CUDA device ordinal the Device was opened with.
func (d *Device) Ordinal() int { return d.ordinal }

// String describes the device, e.g. "cuda:0 (NVIDIA H200)".
func (d *Device) String() string { return fmt.Sprintf("cuda:%d (%s)", d.ordinal, d.name) }

// Alloc returns n bytes of device memory (cuMemAlloc, at least 256-byte
// aligned). A zero-byte request still returns a distinct pointer that must be
// freed. Running out of memory returns an error wrapping
// runtime.ErrOutOfMemory.
func (d *Device) Alloc(n int) (runtime.DevicePtr, error) {
	if n < 0 {
		return 0, fmt.Errorf("cuda alloc %d bytes: negative size", n)
	}
	size := max(n, 1)
	var p runtime.DevicePtr
	err := d.do(func() error {
		dp, err := cu.MemAlloc(int64(size))
		if err != nil {
			if errors.Is(err, cu.OutOfMemory) {
				return fmt.Errorf("%w: %w", runtime.ErrOutOfMemory, err)
			}
			return err
		}
		if uintptr(dp)%allocAlign != 0 {
			_ = cu.MemFree(dp)
			return fmt.Errorf("driver returned %v, not %d-byte aligned", dp, allocAlign)
		}
		p = runtime.DevicePtr(dp)
		d.live[p] = size
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cuda alloc %d bytes: %w", n, err)
	}
	return p, nil
}

// Free releases memory returned by Alloc. Freeing a pointer that is not a
// live allocation of this device returns an error wrapping ErrUnknownPointer.
func (d *Device) Free(p runtime.DevicePtr) error {
	err := d.do(func() error {
		if _, ok := d.live[p]; !ok {
			return ErrUnknownPointer
		}
		delete(d.live, p)
		return cu.MemFree(cu.DevicePtr(p))
	})
	if err != nil {
		return fmt.Errorf("cuda free %#x: %w", uint64(p), err)
	}
	return nil
}

// LiveAllocations returns the number of allocations not yet freed.
func (d *Device) LiveAllocations() int {
	var n int
	_ = d.do(func() error { n = len(d.live); return nil })
	return n
}

// stream maps a runtime.Stream to the driver's stream; 0 is the context's
// default (legacy NULL) stream. Worker only.
func (d *Device) stream(s runtime.Stream) (cu.Stream, error) {
	if s == 0 {
		return cu.NoStream, nil
	}
	cs, ok := d.streams[s]
	if !ok {
		return cu.NoStream, fmt.Errorf("stream %d: %w", uintptr(s), ErrUnknownHandle)
	}
	return cs, nil
}

// event maps a runtime.Event to the driver's event. Worker only.
func (d *Device) event(e runtime.Event) (cu.Event, error) {
	ev, ok := d.events[e]
	if !ok {
		return cu.Event{}, fmt.Errorf("event %d: %w", uintptr(e), ErrUnknownHandle)
	}
	return ev, nil
}

// MemcpyHtoD copies src to dst, ordered on stream s. The source is staged by
// the driver before the call returns, so src may be reused at once.
func (d *Device) MemcpyHtoD(dst runtime.DevicePtr, src []byte, s runtime.Stream) error {
	if len(src) == 0 {
		return nil
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		return cu.MemcpyHtoDAsync(cu.DevicePtr(dst), unsafe.Pointer(&src[0]), int64(len(src)), cs)
	})
	if err != nil {
		return fmt.Errorf("cuda memcpy %d bytes host to device %#x: %w", len(src), uint64(dst), err)
	}
	return nil
}

// MemcpyDtoH copies len(dst) bytes from src into dst, ordered on stream s,
// and returns once the copy is complete.
func (d *Device) MemcpyDtoH(dst []byte, src runtime.DevicePtr, s runtime.Stream) error {
	if len(dst) == 0 {
		return nil
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		if err := cu.MemcpyDtoHAsync(unsafe.Pointer(&dst[0]), cu.DevicePtr(src), int64(len(dst)), cs); err != nil {
			return err
		}
		if err := cs.Synchronize(); err != nil {
			return fmt.Errorf("synchronize stream: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cuda memcpy %d bytes device %#x to host: %w", len(dst), uint64(src), err)
	}
	return nil
}

// MemcpyDtoD copies n bytes from src to dst on the device, ordered on stream s.
func (d *Device) MemcpyDtoD(dst, src runtime.DevicePtr, n int, s runtime.Stream) error {
	if n < 0 {
		return fmt.Errorf("cuda memcpy device to device: negative size %d", n)
	}
	if n == 0 {
		return nil
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		return cu.MemcpyDtoDAsync(cu.DevicePtr(dst), cu.DevicePtr(src), int64(n), cs)
	})
	if err != nil {
		return fmt.Errorf("cuda memcpy %d bytes device %#x to device %#x: %w", n, uint64(src), uint64(dst), err)
	}
	return nil
}

// Memset sets n bytes at dst to b (cuMemsetD8Async), ordered on stream s.
func (d *Device) Memset(dst runtime.DevicePtr, b byte, n int, s runtime.Stream) error {
	if n < 0 {
		return fmt.Errorf("cuda memset: negative size %d", n)
	}
	if n == 0 {
		return nil
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		return cu.MemsetD8Async(cu.DevicePtr(dst), b, int64(n), cs)
	})
	if err != nil {
		return fmt.Errorf("cuda memset %d bytes at %#x: %w", n, uint64(dst), err)
	}
	return nil
}

// NewStream creates a stream. Streams are created with the default flags, so
// they synchronise with the default stream (stream 0).
func (d *Device) NewStream() (runtime.Stream, error) {
	var h runtime.Stream
	err := d.do(func() error {
		cs, err := cu.MakeStream(cu.DefaultStream)
		if err != nil {
			return err
		}
		d.nextHandle++
		h = runtime.Stream(d.nextHandle)
		d.streams[h] = cs
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cuda create stream: %w", err)
	}
	return h, nil
}

// DestroyStream releases a stream made by NewStream. Work already queued on it
// still completes. The default stream cannot be destroyed.
func (d *Device) DestroyStream(s runtime.Stream) error {
	if s == 0 {
		return errors.New("cuda destroy stream: the default stream cannot be destroyed")
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		delete(d.streams, s)
		return cs.Destroy()
	})
	if err != nil {
		return fmt.Errorf("cuda destroy stream %d: %w", uintptr(s), err)
	}
	return nil
}

// Synchronize waits until all work on s is done. For the default stream
// (s == 0) it waits for all work on the device (cuCtxSynchronize).
func (d *Device) Synchronize(s runtime.Stream) error {
	err := d.do(func() error {
		if s == 0 {
			return cu.Synchronize()
		}
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		return cs.Synchronize()
	})
	if err != nil {
		return fmt.Errorf("cuda synchronize stream %d: %w", uintptr(s), err)
	}
	return nil
}

// NewEvent creates an event with timing enabled.
func (d *Device) NewEvent() (runtime.Event, error) {
	var h runtime.Event
	err := d.do(func() error {
		ev, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			return err
		}
		d.nextHandle++
		h = runtime.Event(d.nextHandle)
		d.events[h] = ev
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cuda create event: %w", err)
	}
	return h, nil
}

// DestroyEvent releases an event made by NewEvent.
func (d *Device) DestroyEvent(e runtime.Event) error {
	err := d.do(func() error {
		ev, err := d.event(e)
		if err != nil {
			return err
		}
		delete(d.events, e)
		return cu.DestroyEvent(&ev)
	})
	if err != nil {
		return fmt.Errorf("cuda destroy event %d: %w", uintptr(e), err)
	}
	return nil
}

// Record places e on stream s.
func (d *Device) Record(e runtime.Event, s runtime.Stream) error {
	err := d.do(func() error {
		ev, err := d.event(e)
		if err != nil {
			return err
		}
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		return ev.Record(cs)
	})
	if err != nil {
		return fmt.Errorf("cuda record event %d on stream %d: %w", uintptr(e), uintptr(s), err)
	}
	return nil
}

// Elapsed returns the milliseconds between two recorded events
// (cuEventElapsedTime). It first waits for end to complete.
func (d *Device) Elapsed(start, end runtime.Event) (float32, error) {
	var ms float64
	err := d.do(func() error {
		evStart, err := d.event(start)
		if err != nil {
			return err
		}
		evEnd, err := d.event(end)
		if err != nil {
			return err
		}
		if err := evEnd.Synchronize(); err != nil {
			return fmt.Errorf("wait for end event: %w", err)
		}
		ms, err = evStart.Elapsed(evEnd)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("cuda elapsed time between events %d and %d: %w", uintptr(start), uintptr(end), err)
	}
	return float32(ms), nil
}

// Close waits for outstanding work, releases the device's events, streams and
// modules, destroys its context and stops its worker goroutine. Memory still
// allocated is released with the context. A second Close returns an error
// wrapping ErrClosed; so does every other method afterwards.
func (d *Device) Close() error {
	err := fmt.Errorf("close %v: %w", d, ErrClosed)
	d.closeOnce.Do(func() {
		unregister(d)
		err = d.do(d.teardown)
		if err != nil {
			err = fmt.Errorf("close %v: %w", d, err)
		}
	})
	return err
}

// teardown runs on the worker and makes it exit once the result is sent.
// It keeps going after errors (a faulted kernel leaves a sticky error that
// every later call reports) so the context is always destroyed.
func (d *Device) teardown() error {
	d.stopped = true
	var errs []error
	if err := cu.Synchronize(); err != nil {
		errs = append(errs, fmt.Errorf("synchronize: %w", err))
	}
	for h, ev := range d.events {
		if err := cu.DestroyEvent(&ev); err != nil {
			errs = append(errs, fmt.Errorf("destroy event %d: %w", uintptr(h), err))
		}
	}
	for h, cs := range d.streams {
		if err := cs.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy stream %d: %w", uintptr(h), err))
		}
	}
	for _, m := range d.modules {
		if err := m.mod.Unload(); err != nil {
			errs = append(errs, fmt.Errorf("unload module %q: %w", m.name, err))
		}
	}
	d.params.release()
	if err := d.ctx.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("destroy context: %w", err))
	}
	clear(d.live)
	clear(d.events)
	clear(d.streams)
	d.modules = nil
	return errors.Join(errs...)
}

// open lists the Devices that are open, for the package-level profiling
// functions.
var open struct {
	sync.Mutex
	devices []*Device
}

func register(d *Device) {
	open.Lock()
	defer open.Unlock()
	open.devices = append(open.devices, d)
}

func unregister(d *Device) {
	open.Lock()
	defer open.Unlock()
	for i, o := range open.devices {
		if o == d {
			open.devices = append(open.devices[:i], open.devices[i+1:]...)
			return
		}
	}
}

// openDevices returns a snapshot of the open Devices.
func openDevices() []*Device {
	open.Lock()
	defer open.Unlock()
	return append([]*Device(nil), open.devices...)
}
