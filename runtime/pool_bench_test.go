package runtime

import (
	"fmt"
	"testing"
)

// benchSizes are the request sizes the alloc/free benchmarks run at: a small
// block, the largest small request, and a large one.
var benchSizes = []int{4 << 10, 1 << 20, 64 << 20}

func benchName(size int) string {
	if size >= 1<<20 {
		return fmt.Sprintf("%dMiB", size>>20)
	}
	return fmt.Sprintf("%dKiB", size>>10)
}

// BenchmarkPoolAllocFree measures an Alloc/Free pair through a Pool over the
// fake device (a cache hit every time after warm-up).
func BenchmarkPoolAllocFree(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(benchName(size), func(b *testing.B) {
			benchAllocFree(b, newFakeDevice(0), size, true)
		})
	}
}

// BenchmarkDeviceAllocFree measures the fake device's own Alloc/Free pair,
// the baseline for BenchmarkPoolAllocFree.
func BenchmarkDeviceAllocFree(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(benchName(size), func(b *testing.B) {
			benchAllocFree(b, newFakeDevice(0), size, false)
		})
	}
}

// benchAllocFree is the body of the pool benchmarks: each iteration allocates size
// bytes on the default stream and frees them again, through a fresh Pool over
// dev when pooled is true and directly with dev.Alloc and dev.Free otherwise.
// The pooled variant is timed after one warm-up allocation, so it measures
// cache hits; the pool is closed (its memory returned to dev) at the end.
func benchAllocFree(b *testing.B, dev Device, size int, pooled bool) {
	b.Helper()
	b.ReportAllocs()
	if !pooled {
		for b.Loop() {
			p, err := dev.Alloc(size)
			if err != nil {
				b.Fatalf("device alloc %d bytes: %v", size, err)
			}
			if err := dev.Free(p); err != nil {
				b.Fatalf("device free %d bytes: %v", size, err)
			}
		}
		return
	}
	pool := NewPool(dev, PoolOptions{})
	defer func() {
		if err := pool.Close(); err != nil {
			b.Errorf("close pool: %v", err)
		}
	}()
	warm, err := pool.Alloc(size, 0)
	if err != nil {
		b.Fatalf("pool alloc %d bytes: %v", size, err)
	}
	if err := pool.Free(warm); err != nil {
		b.Fatalf("pool free %d bytes: %v", size, err)
	}
	for b.Loop() {
		buf, err := pool.Alloc(size, 0)
		if err != nil {
			b.Fatalf("pool alloc %d bytes: %v", size, err)
		}
		if err := pool.Free(buf); err != nil {
			b.Fatalf("pool free %d bytes: %v", size, err)
		}
	}
}
