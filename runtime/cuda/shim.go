//go:build cuda

package cuda

// The cgo shim: C memory for kernel parameters and JIT logs, NVTX ranges
// (header-only NVTX v3) and profiler control (cuProfilerStart/Stop).

/*
#cgo CFLAGS: -Wno-deprecated-declarations
#cgo LDFLAGS: -lcuda -ldl

#include <stdint.h>
#include <stdlib.h>
#include <cuda.h>

#if defined(__has_include)
#  if __has_include(<cudaProfiler.h>)
#    include <cudaProfiler.h>
#  endif
#  if __has_include(<nvtx3/nvToolsExt.h>)
#    include <nvtx3/nvToolsExt.h>
#    define PERK_HAVE_NVTX 1
#  endif
#endif

// Declared here as well, in case the toolkit's headers moved them; identical
// redeclarations are harmless.
CUresult cuProfilerStart(void);
CUresult cuProfilerStop(void);

static int perk_have_nvtx(void) {
#ifdef PERK_HAVE_NVTX
	return 1;
#else
	return 0;
#endif
}

static int perk_nvtx_push(const char *name) {
#ifdef PERK_HAVE_NVTX
	return nvtxRangePushA(name);
#else
	(void)name;
	return -1;
#endif
}

static int perk_nvtx_pop(void) {
#ifdef PERK_HAVE_NVTX
	return nvtxRangePop();
#else
	return -1;
#endif
}

static int perk_profiler_start(void) { return (int)cuProfilerStart(); }
static int perk_profiler_stop(void) { return (int)cuProfilerStop(); }

static const char *perk_cu_error_name(int r) {
	const char *s = NULL;
	if (cuGetErrorName((CUresult)r, &s) != CUDA_SUCCESS || s == NULL) {
		return "CUDA_ERROR_UNKNOWN";
	}
	return s;
}

static const char *perk_cu_error_string(int r) {
	const char *s = NULL;
	if (cuGetErrorString((CUresult)r, &s) != CUDA_SUCCESS || s == NULL) {
		return "unrecognised error code";
	}
	return s;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// CUResultError is a CUDA driver error code returned by a call made through
// the shim rather than through gorgonia.org/cu.
type CUResultError struct {
	Code int    // the CUresult value
	Name string // e.g. "CUDA_ERROR_INVALID_CONTEXT"
	Msg  string // the driver's description
}

// Error implements error.
func (e *CUResultError) Error() string { return fmt.Sprintf("%s (%d): %s", e.Name, e.Code, e.Msg) }

// cuResult turns a CUresult from the shim into an error (nil for success).
func cuResult(r C.int) error {
	if r == 0 {
		return nil
	}
	return &CUResultError{
		Code: int(r),
		Name: C.GoString(C.perk_cu_error_name(r)),
		Msg:  C.GoString(C.perk_cu_error_string(r)),
	}
}

// cBytes returns a zeroed n-byte slice backed by C memory, which the Go
// garbage collector neither scans nor moves, so the driver may keep writing
// to it until it is freed. Free it with freeCBytes.
func cBytes(n int) []byte {
	b := unsafe.Slice((*byte)(C.malloc(C.size_t(n))), n) // cgo's malloc never returns nil
	clear(b)
	return b
}

// freeCBytes frees a slice made by cBytes.
func freeCBytes(b []byte) {
	if cap(b) > 0 {
		C.free(unsafe.Pointer(unsafe.SliceData(b)))
	}
}

// cBytesString returns the NUL-terminated string at the start of b.
func cBytesString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// paramBuffer holds a launch's kernel parameters in C memory: slot i is a
// uint64, and ptrs[i] points at it. gorgonia.org/cu's Function.Launch copies
// 8 bytes from each pointer, so every pointer must address a full 8-byte slot
// outside the Go heap. The buffer is reused across launches; it belongs to the
// device's worker goroutine (cuLaunchKernel has copied the values by the time
// it returns, so reuse is safe).
type paramBuffer struct {
	base  unsafe.Pointer // C array of slots uint64 values
	slots int
	ptrs  []unsafe.Pointer
}

// load copies params into the C slots and returns a pointer to each slot.
func (b *paramBuffer) load(params []uint64) []unsafe.Pointer {
	if len(params) > b.slots {
		b.release()
		b.slots = max(len(params), 16)
		b.base = C.malloc(C.size_t(b.slots) * 8) // cgo's malloc never returns nil
	}
	b.ptrs = b.ptrs[:0]
	if len(params) == 0 {
		return b.ptrs
	}
	slots := unsafe.Slice((*uint64)(b.base), b.slots)
	for i, v := range params {
		slots[i] = v
		b.ptrs = append(b.ptrs, unsafe.Pointer(&slots[i]))
	}
	return b.ptrs
}

// release frees the C slots.
func (b *paramBuffer) release() {
	if b.base != nil {
		C.free(b.base)
	}
	b.base, b.slots, b.ptrs = nil, 0, nil
}

// nvtxAvailable reports whether the shim was compiled with the NVTX v3
// headers; without them the range functions do nothing.
func nvtxAvailable() bool { return C.perk_have_nvtx() != 0 }

// nvtxPush opens an NVTX range on the calling OS thread.
func nvtxPush(name string) {
	cs := C.CString(name)
	C.perk_nvtx_push(cs)
	C.free(unsafe.Pointer(cs))
}

// nvtxPop closes the innermost NVTX range of the calling OS thread.
func nvtxPop() { C.perk_nvtx_pop() }

// profilerStart calls cuProfilerStart for the context current on the calling
// thread.
func profilerStart() error { return cuResult(C.perk_profiler_start()) }

// profilerStop calls cuProfilerStop for the context current on the calling
// thread.
func profilerStop() error { return cuResult(C.perk_profiler_stop()) }
