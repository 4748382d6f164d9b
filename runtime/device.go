// Package runtime is the device layer: the Device interface that both the real
// GPU (runtime/cuda, build tag cuda) and the CUDA-on-CPU emulator (runtime/emu)
// implement, device buffers, streams, events, modules and kernel launch, and the
// caching memory Pool that sits over any Device.
package runtime

import (
	"errors"
	"fmt"
)

// DevicePtr is an address in a device's memory space. On the emulator it is a
// host address; on CUDA it is a CUdeviceptr.
type DevicePtr uint64

// Add returns p advanced by n bytes.
func (p DevicePtr) Add(n int) DevicePtr { return p + DevicePtr(n) }

// Stream orders work on a device. The zero Stream is the device's default stream.
type Stream uintptr

// Event marks a point in a stream; used for timing and cross-stream ordering.
type Event uintptr

// Dim3 is a CUDA launch dimension.
type Dim3 struct{ X, Y, Z int }

// D1 returns the one-dimensional Dim3{x,1,1}.
func D1(x int) Dim3 { return Dim3{x, 1, 1} }

// Count returns X·Y·Z.
func (d Dim3) Count() int { return d.X * d.Y * d.Z }

// Function is a loaded kernel that a Device can launch.
type Function interface {
	// Name is the kernel's symbol name.
	Name() string
}

// Module is a set of kernels loaded on a device from one PTX image.
type Module interface {
	// Function looks up a kernel by name; a missing kernel is an error.
	Function(name string) (Function, error)
}

// Device is one GPU (or the emulator standing in for it). All methods are safe
// for use from several goroutines; implementations serialise driver calls
// where the driver requires it.
type Device interface {
	// Name describes the device, e.g. "emu (2 worker threads)" or "NVIDIA H200".
	Name() string
	// Kind is "emu" or "cuda".
	Kind() string
	// TotalMem is the device memory in bytes (the emulator reports its limit).
	TotalMem() int64

	// Alloc returns n bytes of device memory, 256-byte aligned. A request
	// the device cannot satisfy returns an error wrapping ErrOutOfMemory.
	Alloc(n int) (DevicePtr, error)
	// Free releases memory returned by Alloc.
	Free(p DevicePtr) error

	// MemcpyHtoD copies len(src) bytes from host to device.
	MemcpyHtoD(dst DevicePtr, src []byte, s Stream) error
	// MemcpyDtoH copies len(dst) bytes from device to host; it returns when
	// the copy is complete.
	MemcpyDtoH(dst []byte, src DevicePtr, s Stream) error
	// MemcpyDtoD copies n bytes within the device.
	MemcpyDtoD(dst, src DevicePtr, n int, s Stream) error
	// Memset sets n bytes to b.
	Memset(dst DevicePtr, b byte, n int, s Stream) error

	// NewStream creates a stream; DestroyStream releases it.
	NewStream() (Stream, error)
	DestroyStream(s Stream) error
	// Synchronize waits until all work on s is done.
	Synchronize(s Stream) error

	// NewEvent creates an event; Record places it on a stream; Elapsed returns
	// the milliseconds between two recorded, completed events.
	NewEvent() (Event, error)
	DestroyEvent(e Event) error
	Record(e Event, s Stream) error
	Elapsed(start, end Event) (float32, error)

	// LoadModule loads a PTX image named name and checks that every kernel
	// in kernels is present in it.
	LoadModule(name string, ptx []byte, kernels []string) (Module, error)
	// Launch runs fn on grid×block threads with shmem bytes of dynamic shared
	// memory. Every kernel parameter occupies one 8-byte slot of params:
	// pointers and integers as their value, a float32 in the low 4 bytes
	// (see F32Param).
	Launch(fn Function, grid, block Dim3, shmem int, s Stream, params []uint64) error

	// Close releases the device.
	Close() error
}

// ErrOutOfMemory is wrapped by allocation failures.
var ErrOutOfMemory = errors.New("out of device memory")

// F32Param packs a float32 into a kernel parameter slot.
func F32Param(f float32) uint64 { return uint64(float32bits(f)) }

// I64Param packs an integer into a kernel parameter slot.
func I64Param(i int) uint64 { return uint64(int64(i)) }

// PtrParam packs a device pointer into a kernel parameter slot.
func PtrParam(p DevicePtr) uint64 { return uint64(p) }

// ErrNoCUDA is returned when the cuda device is asked for in a binary built
// without the cuda tag.
var ErrNoCUDA = errors.New("this binary was built without CUDA support; rebuild with `make build-cuda` (go build -tags cuda ./...) on a machine with the CUDA toolkit")

// Opener creates a device; runtime/emu and runtime/cuda register theirs.
type Opener func() (Device, error)

var openers = map[string]Opener{}

// Register makes a device kind available to Open. Called from init functions.
func Register(kind string, open Opener) { openers[kind] = open }

// Open returns a new device of the given kind ("emu" or "cuda").
func Open(kind string) (Device, error) {
	open, ok := openers[kind]
	if !ok {
		if kind == "cuda" {
			return nil, ErrNoCUDA
		}
		return nil, fmt.Errorf("open device %q: unknown device kind (have emu, cuda)", kind)
	}
	d, err := open()
	if err != nil {
		return nil, fmt.Errorf("open device %q: %w", kind, err)
	}
	return d, nil
}
