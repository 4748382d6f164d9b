// Package emu is the CUDA-on-CPU emulator: the project's CUDA kernels
// (kernels/*.cu) compiled as C++ against the shim header emu.h, with a runtime
// that runs each CUDA thread as a fiber and each block on one worker thread.
//
// Every kernel family is compiled into this package by a one-line file
// k_<family>.cc that includes the .cu file; kernels register themselves by
// name when the program starts (PERK_EXPORT). Device memory is host memory:
// Alloc and the copy helpers work on plain addresses.
//
// Go's build cache does not track the .cu and .cuh files: after changing one,
// run "go generate ./kernels/emu" (it rewrites sources.h, which Go does track)
// so that the package is rebuilt; TestKernelSourcesCurrent fails until then.
package emu

//go:generate go run gensources.go

// #cgo CXXFLAGS: -std=c++17 -O2 -DPERK_EMU -Wno-unknown-pragmas -fno-strict-aliasing -pthread
// #cgo LDFLAGS: -pthread
// #include <stdlib.h>
// #include "emu_api.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"unsafe"
)

// ErrUnknownKernel is wrapped by launches of a kernel the emulator does not have.
var ErrUnknownKernel = errors.New("unknown kernel")

// ErrInvalidLaunch is wrapped by launches with a bad shape, shared memory size
// or parameter count.
var ErrInvalidLaunch = errors.New("invalid launch")

// WorkersEnv names the environment variable that sets the default number of
// worker threads (otherwise one per CPU).
const WorkersEnv = "PERK_EMU_WORKERS"

type kernelInfo struct {
	id      C.int
	nparams int
}

var kernelCache sync.Map // name → kernelInfo

func init() {
	n := goruntime.NumCPU()
	if s := os.Getenv(WorkersEnv); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			n = v
		}
	}
	SetWorkers(n)
}

func find(name string) (kernelInfo, bool) {
	if v, ok := kernelCache.Load(name); ok {
		return v.(kernelInfo), true
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var np C.int
	id := C.perk_emu_find(cs, &np)
	if id < 0 {
		return kernelInfo{}, false
	}
	k := kernelInfo{id: id, nparams: int(np)}
	kernelCache.Store(name, k)
	return k, true
}

// Lookup reports whether the emulator has a kernel called name and how many
// parameters it takes.
func Lookup(name string) (nparams int, ok bool) {
	k, ok := find(name)
	return k.nparams, ok
}

// Kernels returns the names of all registered kernels.
func Kernels() []string {
	n := int(C.perk_emu_kernel_count())
	names := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if p := C.perk_emu_kernel_name(C.int(i)); p != nil {
			names = append(names, C.GoString(p))
		}
	}
	return names
}

// Launch runs kernel name on grid×block threads with shmem bytes of dynamic
// shared memory and returns when the whole grid has run. params holds one
// 8-byte slot per kernel parameter (pointers and integers as their value, a
// float32 in the low 4 bytes). Threads that disagree on a barrier abort the
// process with a "barrier divergence" message.
func Launch(name string, grid, block [3]int, shmem int, params []uint64) error {
	k, ok := find(name)
	if !ok {
		return fmt.Errorf("launch %s: %w", name, ErrUnknownKernel)
	}
	var g, b [3]C.int64_t
	for i := 0; i < 3; i++ {
		g[i] = C.int64_t(grid[i])
		b[i] = C.int64_t(block[i])
	}
	var p *C.uint64_t
	if len(params) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&params[0]))
	}
	var msg [256]C.char
	rc := C.perk_emu_launch_id(k.id, &g[0], &b[0], C.int64_t(shmem), p, C.int(len(params)), &msg[0], C.size_t(len(msg)))
	goruntime.KeepAlive(params)
	switch rc {
	case C.PERK_EMU_OK:
		return nil
	case C.PERK_EMU_UNKNOWN_KERNEL:
		return fmt.Errorf("launch %s: %s: %w", name, C.GoString(&msg[0]), ErrUnknownKernel)
	default: // the message names the kernel
		return fmt.Errorf("launch: %s: %w", C.GoString(&msg[0]), ErrInvalidLaunch)
	}
}

// SetWorkers sets the number of worker threads that run blocks (n <= 0: one
// per CPU; at most 1024). It applies to the whole process and waits for a running launch.
func SetWorkers(n int) {
	if n < 0 {
		n = 0
	}
	C.perk_emu_set_workers(C.int(n))
}

// Workers returns the number of worker threads that run blocks.
func Workers() int { return int(C.perk_emu_workers()) }

// Alloc returns n bytes of host memory aligned to 256 bytes, or 0 when the
// host cannot supply them. The memory is not cleared.
func Alloc(n int) uint64 {
	if n < 0 {
		return 0
	}
	return uint64(C.perk_emu_alloc(C.size_t(n)))
}

// Free releases memory returned by Alloc.
func Free(p uint64) { C.perk_emu_free(C.uint64_t(p)) }

// Write copies src to address dst.
func Write(dst uint64, src []byte) {
	if len(src) == 0 {
		return
	}
	C.perk_emu_write(C.uint64_t(dst), unsafe.Pointer(&src[0]), C.size_t(len(src)))
}

// Read copies len(dst) bytes from address src into dst.
func Read(dst []byte, src uint64) {
	if len(dst) == 0 {
		return
	}
	C.perk_emu_read(unsafe.Pointer(&dst[0]), C.uint64_t(src), C.size_t(len(dst)))
}

// Copy copies n bytes from src to dst; the ranges may overlap.
func Copy(dst, src uint64, n int) {
	if n <= 0 {
		return
	}
	C.perk_emu_copy(C.uint64_t(dst), C.uint64_t(src), C.size_t(n))
}

// Fill sets n bytes at dst to b.
func Fill(dst uint64, b byte, n int) {
	if n <= 0 {
		return
	}
	C.perk_emu_fill(C.uint64_t(dst), C.int(b), C.size_t(n))
}
