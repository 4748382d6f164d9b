package emu

import (
	"math"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// bytesOf views a slice of plain values as bytes.
func bytesOf[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))
}

// upload copies s to fresh emulator memory that is freed when the test ends.
func upload[T any](t testing.TB, s []T) uint64 {
	t.Helper()
	b := bytesOf(s)
	p := alloc(t, len(b))
	Write(p, b)
	return p
}

// alloc returns n bytes of emulator memory filled with 0xAB, freed when the
// test ends.
func alloc(t testing.TB, n int) uint64 {
	t.Helper()
	p := Alloc(n)
	require.NotZero(t, p, "alloc %d bytes", n)
	require.Zero(t, p%256, "alignment")
	Fill(p, 0xAB, n)
	t.Cleanup(func() { Free(p) })
	return p
}

// download reads n values of type T from emulator memory.
func download[T any](p uint64, n int) []T {
	s := make([]T, n)
	Read(bytesOf(s), p)
	return s
}

// launch runs a kernel and fails the test on error.
func launch(t testing.TB, name string, grid, block [3]int, shmem int, params ...uint64) {
	t.Helper()
	require.NoError(t, Launch(name, grid, block, shmem, params))
}

func d1(x int) [3]int { return [3]int{x, 1, 1} }

func f32p(f float32) uint64 { return uint64(math.Float32bits(f)) }
