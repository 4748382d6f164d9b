package emu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

func newDevice(t testing.TB, opts ...Option) *Device {
	t.Helper()
	d, err := New(opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, d.Close()) })
	return d
}

func TestOpenRegistered(t *testing.T) {
	d, err := runtime.Open("emu")
	require.NoError(t, err)
	defer d.Close()
	assert.Equal(t, "emu", d.Kind())
	assert.Contains(t, d.Name(), "emu (")
	assert.Contains(t, d.Name(), "worker threads)")
	assert.Equal(t, DefaultMemLimit, d.TotalMem())
}

func TestAllocFree(t *testing.T) {
	d := newDevice(t)
	var ptrs []runtime.DevicePtr
	for _, n := range []int{1, 255, 256, 257, 4096, 1 << 20} {
		p, err := d.Alloc(n)
		require.NoError(t, err)
		assert.Zero(t, uint64(p)%256, "alloc %d not 256-byte aligned", n)
		ptrs = append(ptrs, p)
	}
	assert.Equal(t, int64(256+256+256+512+4096+(1<<20)), d.MemUsed())
	for _, p := range ptrs {
		require.NoError(t, d.Free(p))
	}
	assert.Zero(t, d.MemUsed())

	_, err := d.Alloc(0)
	assert.Error(t, err)
	_, err = d.Alloc(-5)
	assert.Error(t, err)
}

func TestFreeErrors(t *testing.T) {
	d := newDevice(t)
	p, err := d.Alloc(1024)
	require.NoError(t, err)
	assert.ErrorContains(t, d.Free(p+16), "not the start of a live allocation", "interior pointer")
	assert.Error(t, d.Free(0xdead0000), "unknown pointer")
	require.NoError(t, d.Free(p))
	assert.ErrorContains(t, d.Free(p), "not the start of a live allocation", "double free")
}

func TestMemcpyRoundTrip(t *testing.T) {
	d := newDevice(t)
	const n = 1000
	src := make([]byte, n)
	for i := range src {
		src[i] = byte(i * 7)
	}
	a, err := d.Alloc(n)
	require.NoError(t, err)
	b, err := d.Alloc(n)
	require.NoError(t, err)
	require.NoError(t, d.MemcpyHtoD(a, src, 0))
	require.NoError(t, d.MemcpyDtoD(b, a, n, 0))
	got := make([]byte, n)
	require.NoError(t, d.MemcpyDtoH(got, b, 0))
	assert.Equal(t, src, got)

	// Offsets inside an allocation, and overlapping device copies.
	require.NoError(t, d.MemcpyHtoD(a.Add(100), []byte{1, 2, 3}, 0))
	part := make([]byte, 5)
	require.NoError(t, d.MemcpyDtoH(part, a.Add(99), 0))
	assert.Equal(t, []byte{src[99], 1, 2, 3, src[103]}, part)
	require.NoError(t, d.MemcpyDtoD(a.Add(1), a, 10, 0))
	require.NoError(t, d.MemcpyDtoH(part, a, 0))
	assert.Equal(t, []byte{src[0], src[0], src[1], src[2], src[3]}, part)

	// Zero-length copies are no-ops.
	require.NoError(t, d.MemcpyHtoD(a, nil, 0))
	require.NoError(t, d.MemcpyDtoH(nil, a, 0))
}

func TestMemcpyBounds(t *testing.T) {
	d := newDevice(t)
	a, err := d.Alloc(100)
	require.NoError(t, err)
	buf := make([]byte, 101)
	assert.ErrorContains(t, d.MemcpyHtoD(a, buf, 0), "overrun")
	assert.ErrorContains(t, d.MemcpyDtoH(buf, a, 0), "overrun")
	assert.ErrorContains(t, d.MemcpyHtoD(a.Add(50), buf[:51], 0), "overrun")
	assert.ErrorContains(t, d.MemcpyHtoD(a.Add(100), buf[:1], 0), "not in a live allocation", "one past the end")
	assert.ErrorContains(t, d.MemcpyDtoD(a, a.Add(1), 100, 0), "overrun")
	assert.ErrorContains(t, d.Memset(a, 0, 101, 0), "overrun")
	assert.ErrorContains(t, d.MemcpyHtoD(1, buf[:1], 0), "not in a live allocation")
	assert.ErrorContains(t, d.Memset(a, 0, -1, 0), "negative size")
	require.NoError(t, d.Free(a))
	assert.ErrorContains(t, d.MemcpyHtoD(a, buf[:1], 0), "not in a live allocation", "freed memory")
}

func TestMemset(t *testing.T) {
	d := newDevice(t)
	a, err := d.Alloc(64)
	require.NoError(t, err)
	require.NoError(t, d.Memset(a, 0, 64, 0))
	require.NoError(t, d.Memset(a.Add(8), 0x5a, 16, 0))
	got := make([]byte, 64)
	require.NoError(t, d.MemcpyDtoH(got, a, 0))
	want := make([]byte, 64)
	for i := 8; i < 24; i++ {
		want[i] = 0x5a
	}
	assert.Equal(t, want, got)
}

func TestOutOfMemory(t *testing.T) {
	d := newDevice(t, WithMemLimit(1<<20))
	assert.Equal(t, int64(1<<20), d.TotalMem())
	_, err := d.Alloc(2 << 20)
	require.ErrorIs(t, err, runtime.ErrOutOfMemory)
	_, err = d.Alloc(math.MaxInt)
	require.ErrorIs(t, err, runtime.ErrOutOfMemory)
	p, err := d.Alloc(768 << 10)
	require.NoError(t, err)
	_, err = d.Alloc(512 << 10)
	require.ErrorIs(t, err, runtime.ErrOutOfMemory, "the limit counts live allocations")
	require.NoError(t, d.Free(p))
	p, err = d.Alloc(512 << 10)
	require.NoError(t, err, "freed memory counts again")
	require.NoError(t, d.Free(p))
}

func TestMemLimitEnv(t *testing.T) {
	t.Setenv(MemLimitEnv, "4096")
	d := newDevice(t)
	assert.Equal(t, int64(4096), d.TotalMem())
	_, err := d.Alloc(4097)
	assert.True(t, errors.Is(err, runtime.ErrOutOfMemory))

	t.Setenv(MemLimitEnv, "lots")
	_, err = New()
	assert.ErrorContains(t, err, MemLimitEnv)
}

func TestStreamsAndEvents(t *testing.T) {
	d := newDevice(t)
	s, err := d.NewStream()
	require.NoError(t, err)
	require.NoError(t, d.Synchronize(s))
	require.NoError(t, d.Synchronize(0))
	e1, err := d.NewEvent()
	require.NoError(t, err)
	e2, err := d.NewEvent()
	require.NoError(t, err)
	_, err = d.Elapsed(e1, e2)
	assert.ErrorContains(t, err, "not recorded")
	require.NoError(t, d.Record(e1, s))
	require.NoError(t, d.Record(e2, 0))
	ms, err := d.Elapsed(e1, e2)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, ms, float32(0))
	require.NoError(t, d.DestroyEvent(e1))
	assert.Error(t, d.DestroyEvent(e1))
	require.NoError(t, d.DestroyStream(s))
	assert.Error(t, d.DestroyStream(s))
	assert.Error(t, d.Synchronize(s))
	assert.Error(t, d.Record(e2, s), "destroyed stream")
	a, err := d.Alloc(16)
	require.NoError(t, err)
	assert.ErrorContains(t, d.MemcpyHtoD(a, []byte{1}, s), "unknown stream")
}

func TestLoadModule(t *testing.T) {
	d := newDevice(t)
	m, err := d.LoadModule("selftest", []byte("ignored"), []string{"emutest_empty", "emutest_params"})
	require.NoError(t, err)
	f, err := m.Function("emutest_params")
	require.NoError(t, err)
	assert.Equal(t, "emutest_params", f.Name())
	_, err = m.Function("nope")
	assert.ErrorContains(t, err, `"nope"`)

	_, err = d.LoadModule("fused", nil, []string{"emutest_empty", "missing_kernel"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"fused"`)
	assert.Contains(t, err.Error(), `"missing_kernel"`)
}

func TestLaunch(t *testing.T) {
	d := newDevice(t)
	m, err := d.LoadModule("selftest", nil, []string{"emutest_params", "emutest_block_sum"})
	require.NoError(t, err)
	params, err := m.Function("emutest_params")
	require.NoError(t, err)

	err = d.Launch(params, runtime.D1(1), runtime.D1(1), 0, 0, []uint64{1, 2, 3})
	require.ErrorContains(t, err, "takes 8 parameters, got 3")

	fo, err := d.Alloc(4)
	require.NoError(t, err)
	lo, err := d.Alloc(40)
	require.NoError(t, err)
	err = d.Launch(params, runtime.D1(1), runtime.D1(1), 0, 0, []uint64{
		runtime.PtrParam(fo), runtime.PtrParam(lo), runtime.F32Param(-2.5), runtime.I64Param(-9),
		runtime.I64Param(1 << 40), math.Float64bits(0.25), 200, 0x3c00,
	})
	require.NoError(t, err)
	out := make([]byte, 4)
	require.NoError(t, d.MemcpyDtoH(out, fo, 0))
	assert.Equal(t, float32(-2.5), math.Float32frombits(binary.LittleEndian.Uint32(out)))
	outl := make([]byte, 40)
	require.NoError(t, d.MemcpyDtoH(outl, lo, 0))
	assert.Equal(t, int64(-9), int64(binary.LittleEndian.Uint64(outl)))
	assert.Equal(t, int64(1<<40), int64(binary.LittleEndian.Uint64(outl[8:])))

	err = d.Launch(params, runtime.D1(1), runtime.Dim3{X: 2048, Y: 1, Z: 1}, 0, 0, make([]uint64, 8))
	assert.ErrorContains(t, err, "invalid launch shape")
	err = d.Launch(nil, runtime.D1(1), runtime.D1(1), 0, 0, nil)
	assert.Error(t, err)
	err = d.Launch(params, runtime.D1(1), runtime.D1(1), 0, runtime.Stream(12345), make([]uint64, 8))
	assert.ErrorContains(t, err, "unknown stream")
}

// TestConcurrentUse exercises the device from several goroutines at once
// (meant for -race).
func TestConcurrentUse(t *testing.T) {
	d := newDevice(t)
	m, err := d.LoadModule("selftest", nil, []string{"emutest_block_sum"})
	require.NoError(t, err)
	sum, err := m.Function("emutest_block_sum")
	require.NoError(t, err)
	const blocks = 4
	in := make([]byte, blocks*256*4)
	for i := 0; i < blocks*256; i++ {
		binary.LittleEndian.PutUint32(in[4*i:], math.Float32bits(float32(i%7)))
	}
	want := make([]float32, blocks)
	for i := 0; i < blocks*256; i++ {
		want[i/256] += float32(i % 7)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := 0; it < 5; it++ {
				pin, err := d.Alloc(len(in))
				if err != nil {
					errs <- err
					return
				}
				pout, err := d.Alloc(blocks * 4)
				if err != nil {
					errs <- err
					return
				}
				if err := d.MemcpyHtoD(pin, in, 0); err != nil {
					errs <- err
					return
				}
				if err := d.Launch(sum, runtime.D1(blocks), runtime.D1(256), 0, 0,
					[]uint64{runtime.PtrParam(pin), runtime.PtrParam(pout)}); err != nil {
					errs <- err
					return
				}
				out := make([]byte, blocks*4)
				if err := d.MemcpyDtoH(out, pout, 0); err != nil {
					errs <- err
					return
				}
				for b := 0; b < blocks; b++ {
					if got := math.Float32frombits(binary.LittleEndian.Uint32(out[4*b:])); got != want[b] {
						errs <- fmt.Errorf("block %d: sum %v, want %v", b, got, want[b])
						return
					}
				}
				if err := d.Free(pin); err != nil {
					errs <- err
					return
				}
				if err := d.Free(pout); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Zero(t, d.MemUsed())
}

func TestClose(t *testing.T) {
	d, err := New()
	require.NoError(t, err)
	_, err = d.Alloc(100)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	require.NoError(t, d.Close())
	_, err = d.Alloc(1)
	assert.ErrorIs(t, err, ErrClosed)
}
