//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	goruntime "runtime"
	"sync"
)

// ranges is the package-level NVTX range stack: for each open range, where it
// was pushed, so that RangePop closes it in the same places.
var ranges struct {
	sync.Mutex
	stack []rangeTargets
}

// rangeTargets records where one range was pushed: on the worker thread of
// each device in devices, or, when no device was open, on the calling
// goroutine's (then locked) thread.
type rangeTargets struct {
	devices []*Device
	local   bool
}

// RangePush opens an NVTX range called name; RangePop closes it. Ranges nest.
//
// NVTX ranges belong to OS threads. While Devices are open the range is pushed
// on each open device's worker thread, the thread that makes all of that
// device's driver calls, so Nsight Systems shows it around (and projects it
// onto) the GPU work submitted until the matching RangePop. With no open
// device it is pushed on the calling goroutine's thread, which stays locked to
// the goroutine until RangePop; call RangePop from the same goroutine then.
// Without the NVTX headers at build time ranges are not recorded.
func RangePush(name string) {
	t := rangeTargets{devices: openDevices()}
	if len(t.devices) == 0 {
		t.local = true
		goruntime.LockOSThread()
		nvtxPush(name)
	}
	for _, d := range t.devices {
		_ = d.RangePush(name)
	}
	ranges.Lock()
	ranges.stack = append(ranges.stack, t)
	ranges.Unlock()
}

// RangePop closes the innermost range opened by RangePush. A RangePop without
// a matching RangePush does nothing.
func RangePop() {
	ranges.Lock()
	n := len(ranges.stack)
	if n == 0 {
		ranges.Unlock()
		return
	}
	t := ranges.stack[n-1]
	ranges.stack = ranges.stack[:n-1]
	ranges.Unlock()
	if t.local {
		nvtxPop()
		goruntime.UnlockOSThread()
	}
	for _, d := range t.devices {
		_ = d.RangePop()
	}
}

// NVTXAvailable reports whether this binary was built with the NVTX v3
// headers; without them RangePush and RangePop record nothing.
func NVTXAvailable() bool { return nvtxAvailable() }

// ProfilerStart enables profile collection by an attached profiler
// (cuProfilerStart), for the context of every open Device, or for the calling
// thread's current context when none is open. Without a profiler it has no
// effect.
func ProfilerStart() error {
	if err := profilerEach((*Device).ProfilerStart, profilerStart); err != nil {
		return fmt.Errorf("cuda profiler start: %w", err)
	}
	return nil
}

// ProfilerStop disables profile collection (cuProfilerStop), for the context
// of every open Device, or for the calling thread's current context when none
// is open.
func ProfilerStop() error {
	if err := profilerEach((*Device).ProfilerStop, profilerStop); err != nil {
		return fmt.Errorf("cuda profiler stop: %w", err)
	}
	return nil
}

// profilerEach calls method on every open device, or local on the calling
// thread when there is none.
func profilerEach(method func(*Device) error, local func() error) error {
	devices := openDevices()
	if len(devices) == 0 {
		goruntime.LockOSThread()
		defer goruntime.UnlockOSThread()
		return local()
	}
	var errs []error
	for _, d := range devices {
		errs = append(errs, method(d))
	}
	return errors.Join(errs...)
}

// RangePush opens an NVTX range called name on the device's worker thread, so
// that it encloses the driver calls the device makes until RangePop.
func (d *Device) RangePush(name string) error {
	if err := d.do(func() error { nvtxPush(name); return nil }); err != nil {
		return fmt.Errorf("nvtx range push %q on %v: %w", name, d, err)
	}
	return nil
}

// RangePop closes the innermost NVTX range on the device's worker thread.
func (d *Device) RangePop() error {
	if err := d.do(func() error { nvtxPop(); return nil }); err != nil {
		return fmt.Errorf("nvtx range pop on %v: %w", d, err)
	}
	return nil
}

// ProfilerStart calls cuProfilerStart for the device's context.
func (d *Device) ProfilerStart() error {
	if err := d.do(profilerStart); err != nil {
		return fmt.Errorf("profiler start on %v: %w", d, err)
	}
	return nil
}

// ProfilerStop calls cuProfilerStop for the device's context.
func (d *Device) ProfilerStop() error {
	if err := d.do(profilerStop); err != nil {
		return fmt.Errorf("profiler stop on %v: %w", d, err)
	}
	return nil
}
