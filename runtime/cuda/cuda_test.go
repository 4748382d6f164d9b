//go:build cuda

// These tests need an NVIDIA GPU and run only with the cuda tag:
//
//	go test -tags cuda ./runtime/cuda/
//
// Do not build or run them on a machine without a GPU: gorgonia.org/cu exits
// the process in its package init when the driver finds no device.

package cuda

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/perkgo/perk/runtime"
)

// add1PTX is a handwritten kernel: perk_test_add1(float *x, uint32 n) adds
// 1.0f to x[i] for every i < n. n is a 4-byte parameter, so it also checks
// that a value in the low half of an 8-byte slot reaches the kernel.
const add1PTX = `//
// perk_test_add1(float *x, uint32 n): x[i] += 1.0f for i < n.
//
.version 7.0
.target sm_80
.address_size 64

.visible .entry perk_test_add1(
	.param .u64 perk_test_add1_x,
	.param .u32 perk_test_add1_n
)
{
	.reg .pred  %p<2>;
	.reg .b32   %r<6>;
	.reg .f32   %f<3>;
	.reg .b64   %rd<5>;

	ld.param.u64        %rd1, [perk_test_add1_x];
	ld.param.u32        %r1, [perk_test_add1_n];
	mov.u32             %r2, %ctaid.x;
	mov.u32             %r3, %ntid.x;
	mov.u32             %r4, %tid.x;
	mad.lo.u32          %r5, %r2, %r3, %r4;
	setp.ge.u32         %p1, %r5, %r1;
	@%p1 bra            DONE;
	cvta.to.global.u64  %rd2, %rd1;
	mul.wide.u32        %rd3, %r5, 4;
	add.s64             %rd4, %rd2, %rd3;
	ld.global.f32       %f1, [%rd4];
	add.f32             %f2, %f1, 0f3F800000;
	st.global.f32       [%rd4], %f2;
DONE:
	ret;
}
`

// openDevice opens GPU 0 and closes it when the test ends.
func openDevice(t *testing.T) *Device {
	t.Helper()
	d, err := New(0)
	if err != nil {
		t.Fatalf("New(0): %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// alloc allocates n bytes and frees them when the test ends.
func alloc(t *testing.T, d *Device, n int) runtime.DevicePtr {
	t.Helper()
	p, err := d.Alloc(n)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", n, err)
	}
	t.Cleanup(func() {
		if err := d.Free(p); err != nil {
			t.Errorf("Free: %v", err)
		}
	})
	return p
}

// pattern returns n bytes of a recognisable sequence.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestDeviceInfo(t *testing.T) {
	d := openDevice(t)
	if d.Kind() != "cuda" {
		t.Errorf("Kind() = %q, want cuda", d.Kind())
	}
	if d.Name() == "" {
		t.Error("Name() is empty")
	}
	if d.TotalMem() <= 0 {
		t.Errorf("TotalMem() = %d, want > 0", d.TotalMem())
	}
	t.Logf("%v: %.1f GiB", d, float64(d.TotalMem())/(1<<30))
}

func TestRegisteredWithRuntime(t *testing.T) {
	d, err := runtime.Open("cuda")
	if err != nil {
		t.Fatalf(`runtime.Open("cuda"): %v`, err)
	}
	defer d.Close()
	if _, ok := d.(*Device); !ok {
		t.Fatalf(`runtime.Open("cuda") returned %T, want *cuda.Device`, d)
	}
}

func TestAllocAlignment(t *testing.T) {
	d := openDevice(t)
	for _, n := range []int{0, 1, 3, 255, 256, 1000, 1 << 20} {
		p := alloc(t, d, n)
		if p%256 != 0 {
			t.Errorf("Alloc(%d) = %#x, not 256-byte aligned", n, uint64(p))
		}
	}
}

func TestMemcpyRoundTrip(t *testing.T) {
	d := openDevice(t)
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyStream(s)
	for _, stream := range []runtime.Stream{0, s} {
		for _, n := range []int{1, 17, 4096, 3<<20 + 5} {
			src := pattern(n, byte(n))
			a := alloc(t, d, n)
			b := alloc(t, d, n)
			if err := d.MemcpyHtoD(a, src, stream); err != nil {
				t.Fatal(err)
			}
			if err := d.MemcpyDtoD(b, a, n, stream); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, n)
			if err := d.MemcpyDtoH(got, b, stream); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, src) {
				t.Fatalf("stream %d, %d bytes: round trip differs", stream, n)
			}
		}
	}
	// Offsets into an allocation.
	a := alloc(t, d, 1024)
	if err := d.Memset(a, 0, 1024, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.MemcpyHtoD(a.Add(100), []byte("perk"), 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 6)
	if err := d.MemcpyDtoH(got, a.Add(99), 0); err != nil {
		t.Fatal(err)
	}
	if want := []byte("\x00perk\x00"); !bytes.Equal(got, want) {
		t.Fatalf("offset copy: got %q, want %q", got, want)
	}
}

func TestMemset(t *testing.T) {
	d := openDevice(t)
	const n = 1 << 16
	p := alloc(t, d, n)
	if err := d.MemcpyHtoD(p, pattern(n, 1), 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Memset(p.Add(10), 0xAB, n-20, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	if err := d.MemcpyDtoH(got, p, 0); err != nil {
		t.Fatal(err)
	}
	want := pattern(n, 1)
	for i := 10; i < n-10; i++ {
		want[i] = 0xAB
	}
	if !bytes.Equal(got, want) {
		t.Fatal("memset result differs")
	}
}

func TestEvents(t *testing.T) {
	d := openDevice(t)
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyStream(s)
	start, err := d.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyEvent(start)
	end, err := d.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyEvent(end)

	const n = 64 << 20
	p := alloc(t, d, n)
	if err := d.Record(start, s); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := d.Memset(p, 1, n, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Record(end, s); err != nil {
		t.Fatal(err)
	}
	ms, err := d.Elapsed(start, end)
	if err != nil {
		t.Fatal(err)
	}
	if ms < 0 || math.IsNaN(float64(ms)) {
		t.Fatalf("Elapsed = %v ms", ms)
	}
	t.Logf("4 × 64 MiB memset: %.3f ms", ms)
	if err := d.Synchronize(s); err != nil {
		t.Fatal(err)
	}
	if err := d.Synchronize(0); err != nil {
		t.Fatal(err)
	}
}

func TestHandleErrors(t *testing.T) {
	d := openDevice(t)
	if err := d.Synchronize(12345); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("Synchronize(unknown stream) = %v, want ErrUnknownHandle", err)
	}
	if err := d.DestroyStream(0); err == nil {
		t.Error("DestroyStream(0) succeeded")
	}
	e, err := d.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.DestroyEvent(e); err != nil {
		t.Fatal(err)
	}
	if err := d.DestroyEvent(e); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("second DestroyEvent = %v, want ErrUnknownHandle", err)
	}
}

func TestDoubleFree(t *testing.T) {
	d := openDevice(t)
	p, err := d.Alloc(512)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Free(p); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(p); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("double free = %v, want ErrUnknownPointer", err)
	}
	q := alloc(t, d, 512)
	if err := d.Free(q.Add(256)); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("free of interior pointer = %v, want ErrUnknownPointer", err)
	}
	if err := d.Free(0); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("free of 0 = %v, want ErrUnknownPointer", err)
	}
	if n := d.LiveAllocations(); n != 1 {
		t.Errorf("LiveAllocations = %d, want 1", n)
	}
}

func TestOutOfMemory(t *testing.T) {
	d := openDevice(t)
	p, err := d.Alloc(int(2 * d.TotalMem()))
	if err == nil {
		d.Free(p)
		t.Fatal("allocating twice the device memory succeeded")
	}
	if !errors.Is(err, runtime.ErrOutOfMemory) {
		t.Fatalf("error %v does not wrap runtime.ErrOutOfMemory", err)
	}
	// The device must still work.
	alloc(t, d, 1<<20)
}

func TestLaunchAdd1(t *testing.T) {
	d := openDevice(t)
	m, err := d.LoadModule("perk_test", []byte(add1PTX+"\x00"), []string{"perk_test_add1"})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := m.Function("perk_test_add1")
	if err != nil {
		t.Fatal(err)
	}
	if fn.Name() != "perk_test_add1" {
		t.Errorf("Name() = %q", fn.Name())
	}
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	defer d.DestroyStream(s)

	const n, extra = 1000, 24 // extra elements past n must stay untouched
	host := make([]byte, 4*(n+extra))
	for i := range n + extra {
		binary.LittleEndian.PutUint32(host[4*i:], math.Float32bits(float32(i)))
	}
	p := alloc(t, d, len(host))
	if err := d.MemcpyHtoD(p, host, s); err != nil {
		t.Fatal(err)
	}
	// The upper half of the n slot is garbage: a .u32 parameter reads only
	// the low 4 bytes.
	params := []uint64{runtime.PtrParam(p), uint64(n) | 0xdead_beef<<32}
	const block = 128
	for range 2 {
		if err := d.Launch(fn, runtime.D1((n+block-1)/block), runtime.D1(block), 0, s, params); err != nil {
			t.Fatal(err)
		}
	}
	// A grid with no blocks is a no-op.
	if err := d.Launch(fn, runtime.D1(0), runtime.D1(block), 0, s, params); err != nil {
		t.Fatalf("empty grid: %v", err)
	}
	got := make([]byte, len(host))
	if err := d.MemcpyDtoH(got, p, s); err != nil {
		t.Fatal(err)
	}
	for i := range n + extra {
		v := math.Float32frombits(binary.LittleEndian.Uint32(got[4*i:]))
		want := float32(i)
		if i < n {
			want += 2
		}
		if v != want {
			t.Fatalf("x[%d] = %v, want %v", i, v, want)
		}
	}
}

func TestLaunchErrors(t *testing.T) {
	d := openDevice(t)
	m, err := d.LoadModule("perk_test", []byte(add1PTX), []string{"perk_test_add1"})
	if err != nil {
		t.Fatal(err)
	}
	fn, err := m.Function("perk_test_add1")
	if err != nil {
		t.Fatal(err)
	}
	p := alloc(t, d, 256)
	params := []uint64{runtime.PtrParam(p), 1}
	if err := d.Launch(fn, runtime.D1(1), runtime.D1(0), 0, 0, params); err == nil {
		t.Error("launch with an empty block succeeded")
	}
	if err := d.Launch(fn, runtime.D1(1), runtime.D1(1), 0, 999, params); !errors.Is(err, ErrUnknownHandle) {
		t.Errorf("launch on unknown stream = %v, want ErrUnknownHandle", err)
	}
	if err := d.Launch(fn, runtime.D1(1), runtime.D1(4096), 0, 0, params); err == nil {
		t.Error("launch with 4096 threads per block succeeded")
	}
	if err := d.Synchronize(0); err != nil {
		t.Fatalf("device unusable after rejected launches: %v", err)
	}
}

func TestMissingKernel(t *testing.T) {
	d := openDevice(t)
	_, err := d.LoadModule("perk_test", []byte(add1PTX), []string{"perk_test_add1", "perk_test_nope"})
	if !errors.Is(err, ErrKernelNotFound) {
		t.Fatalf("LoadModule with a missing kernel = %v, want ErrKernelNotFound", err)
	}
	for _, want := range []string{"perk_test", "perk_test_nope"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	m, err := d.LoadModule("perk_test", []byte(add1PTX), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Function("perk_test_nope"); !errors.Is(err, ErrKernelNotFound) {
		t.Errorf("Function(missing) = %v, want ErrKernelNotFound", err)
	}
	if _, err := m.Function("perk_test_add1"); err != nil {
		t.Errorf("Function(perk_test_add1) not listed at load: %v", err)
	}
}

func TestBadPTX(t *testing.T) {
	d := openDevice(t)
	bad := strings.Replace(add1PTX, "add.f32 ", "add.f33 ", 1)
	if _, err := d.LoadModule("perk_bad", []byte(bad), nil); err == nil {
		t.Fatal("LoadModule of invalid PTX succeeded")
	} else {
		t.Logf("invalid PTX: %v", err)
	}
	if _, err := d.LoadModule("perk_nul", []byte("abc\x00def"), nil); err == nil {
		t.Fatal("LoadModule of an image with an interior NUL succeeded")
	}
}

func TestConcurrentUse(t *testing.T) {
	d := openDevice(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			s, err := d.NewStream()
			if err != nil {
				errs <- err
				return
			}
			defer d.DestroyStream(s)
			for i := range 20 {
				n := 1000 + 37*i + g
				src := pattern(n, byte(g))
				p, err := d.Alloc(n)
				if err != nil {
					errs <- err
					return
				}
				got := make([]byte, n)
				err = d.MemcpyHtoD(p, src, s)
				if err == nil {
					err = d.MemcpyDtoH(got, p, s)
				}
				if ferr := d.Free(p); err == nil {
					err = ferr
				}
				if err == nil && !bytes.Equal(got, src) {
					err = errors.New("round trip differs")
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := d.LiveAllocations(); n != 0 {
		t.Errorf("LiveAllocations = %d after all frees", n)
	}
}

func TestClose(t *testing.T) {
	d, err := New(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Alloc(1 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := d.NewStream(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := d.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	if _, err := d.Alloc(16); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close = %v, want ErrClosed", err)
	}
}

func TestProfilerAndRanges(t *testing.T) {
	t.Logf("NVTX compiled in: %v", NVTXAvailable())
	// No device open: ranges go to the calling thread.
	RangePush("perk_test_outer")
	RangePop()
	RangePop() // unmatched: ignored

	d := openDevice(t)
	// Without an attached profiler these are no-ops; some tools report
	// profiling as disabled, so an error is logged, not fatal.
	if err := ProfilerStart(); err != nil {
		t.Logf("ProfilerStart: %v", err)
	}
	RangePush("perk_test_range")
	p := alloc(t, d, 4096)
	if err := d.Memset(p, 7, 4096, 0); err != nil {
		t.Fatal(err)
	}
	RangePop()
	if err := ProfilerStop(); err != nil {
		t.Logf("ProfilerStop: %v", err)
	}
}
