package bench

import (
	"fmt"
	"math/rand/v2"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// GEMM times C = A·Bᵀ (the nt layout of a Linear layer) for M×N×K in dtype t
// and reports GFLOP/s. The peer is the device's copy bandwidth over the same
// bytes the GEMM must at least move (A, B and C once), expressed as the
// GEMM's share of that copy time, so a memory-bound kernel shows ≈1.
func GEMM(dev runtime.Device, t runtime.DType, m, n, k, iters int) (Result, error) {
	rng := rand.New(rand.NewPCG(1, uint64(m*n*k)))
	rnd := func(c int) []float64 {
		v := make([]float64, c)
		for i := range v {
			v[i] = rng.Float64()*2 - 1
		}
		return v
	}
	a, err := kernels.Upload(dev, t, []int{m, k}, rnd(m*k))
	if err != nil {
		return Result{}, err
	}
	defer kernels.FreeArray(a)
	b, err := kernels.Upload(dev, t, []int{n, k}, rnd(n*k))
	if err != nil {
		return Result{}, err
	}
	defer kernels.FreeArray(b)
	c, err := kernels.NewArray(dev, runtime.F32, m, n)
	if err != nil {
		return Result{}, err
	}
	defer kernels.FreeArray(c)
	sec, err := timeDevice(dev, 0, iters, func() error { return kernels.GEMM(0, c, a, b, true, 1, 0) })
	if err != nil {
		return Result{}, fmt.Errorf("gemm %dx%dx%d: %w", m, n, k, err)
	}
	bytes := a.Bytes() + b.Bytes() + c.Bytes()
	dst, err := dev.Alloc(bytes)
	if err != nil {
		return Result{}, err
	}
	defer dev.Free(dst)
	src, err := dev.Alloc(bytes)
	if err != nil {
		return Result{}, err
	}
	defer dev.Free(src)
	copySec, err := timeDevice(dev, 0, iters, func() error { return dev.MemcpyDtoD(dst, src, bytes, 0) })
	if err != nil {
		return Result{}, err
	}
	return Result{
		Name: fmt.Sprintf("gemm_%s_nt %dx%dx%d", map[runtime.DType]string{runtime.BF16: "bf16", runtime.F16: "f16"}[t], m, n, k), Iters: iters, PerOp: sec,
		Metric: "GFLOP/s", Value: 2 * float64(m) * float64(n) * float64(k) / sec / 1e9,
		Peer: "of memcpy time for its bytes", Ratio: sec / copySec,
	}, nil
}
