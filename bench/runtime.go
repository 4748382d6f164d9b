package bench

import (
	"fmt"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// PoolAllocFree times an Alloc+Free pair of size bytes through a caching Pool
// and directly on the device (the peer).
func PoolAllocFree(dev runtime.Device, size, iters int) (Result, error) {
	direct, err := timeHost(iters, func() error {
		p, err := dev.Alloc(size)
		if err != nil {
			return err
		}
		return dev.Free(p)
	})
	if err != nil {
		return Result{}, fmt.Errorf("device alloc/free %d bytes: %w", size, err)
	}
	pool := runtime.NewPool(dev, runtime.PoolOptions{})
	defer pool.Close()
	pooled, err := timeHost(iters, func() error {
		b, err := pool.Alloc(size, 0)
		if err != nil {
			return err
		}
		return pool.Free(b)
	})
	if err != nil {
		return Result{}, fmt.Errorf("pool alloc/free %d bytes: %w", size, err)
	}
	return Result{
		Name: fmt.Sprintf("pool alloc+free %s", humanBytes(size)), Iters: iters, PerOp: pooled,
		Metric: "ns/op", Value: pooled * 1e9, Peer: "faster than device alloc+free", Ratio: direct / pooled,
	}, nil
}

// LaunchOverhead times a launch of the smallest kernel (fill of one element)
// with the given number of blocks of 256 threads. The peer is a 4-byte
// host-to-device copy.
func LaunchOverhead(dev runtime.Device, blocks, iters int) (Result, error) {
	n := blocks * 256
	a, err := kernels.NewArray(dev, runtime.F32, n)
	if err != nil {
		return Result{}, err
	}
	defer kernels.FreeArray(a)
	t, err := timeDevice(dev, 0, iters, func() error { return kernels.Fill(0, a, 1) })
	if err != nil {
		return Result{}, fmt.Errorf("launch overhead: %w", err)
	}
	word := make([]byte, 4)
	copyT, err := timeDevice(dev, 0, iters, func() error { return dev.MemcpyHtoD(a.Ptr, word, 0) })
	if err != nil {
		return Result{}, fmt.Errorf("launch overhead peer: %w", err)
	}
	return Result{
		Name: fmt.Sprintf("launch fill %d×256 threads", blocks), Iters: iters, PerOp: t,
		Metric: "µs/launch", Value: t * 1e6, Peer: "of a 4-byte H2D copy's time", Ratio: t / copyT,
	}, nil
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
