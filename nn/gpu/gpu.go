// Package gpu is the nn.Backend that runs every op as the project's CUDA
// kernels (package kernels) on a runtime.Device: the CUDA-on-CPU emulator
// ("emu", what CI runs) or a real GPU ("cuda", in a binary built with
// -tags cuda). Open picks a backend — this one or nn/cpu — by name.
//
// Tensors live in device memory handed out by a caching runtime.Pool; their
// nn.Storage is *Storage. The backend stores F32 and BF16 tensors (F64 is
// the CPU reference's precision and is rejected with an error), computes in
// f32 and keeps nn.Backend's semantics exactly: outputs are caller-provided,
// activation gradients are overwritten and parameter gradients accumulated,
// arguments are checked up front with the same checks and messages as
// nn/cpu (check.go), and results are deterministic.
//
// Where nn.Backend's contract is wider than a kernel's, the backend bridges
// the gap with more kernels instead of failing:
//
//   - statistics the kernels keep in f32 (attention's lse, the norms' mean
//     and rstd, cross-entropy's ce and lse, per-token weights) go through f32
//     scratch and a cast when the tensors are BF16;
//   - attention head dimensions other than the kernels' 16, 32, 64 and 128
//     (up to 128) are zero-padded to the next supported size, which changes
//     no result (padded q·k terms and output columns are exactly 0);
//   - optional outputs that a kernel always writes (dq, dk, dv; LoRA's xa)
//     go to scratch.
//
// Limits the kernels impose: the optimiser ops (AdamW, SGD and their VJPs)
// take F32 tensors only; LoRA ranks are at most kernels.LoRAMaxRank; RoPE
// angles are f32 products as in Hugging Face (exact to f32 accuracy for
// positions up to ~80, ≈ pos·2⁻²³ relative beyond); reductions (Sum, Dot,
// norms, the loss, dLRs) are accumulated in f32 in a fixed order, not in
// float64 as nn/cpu does.
//
// Per-call host→device uploads of small integer inputs are cached: the
// attention segment layout, embedding id groupings, label and position
// arrays, RoPE frequencies and optimiser tensor tables are kept (a few of
// each, keyed by content) and reused when the same values come again, which
// they do in every layer of a pass and across its forward and backward.
//
// A Backend is safe for concurrent use: its ops are serialised.
package gpu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// Backend is the nn.Backend on a runtime.Device.
type Backend struct {
	dev       runtime.Device
	kind      string
	pool      *runtime.Pool
	ownDevice bool
	stream    runtime.Stream

	mu     sync.Mutex
	closed bool
	c      caches
	live   map[*Storage]struct{} // tensors not yet released
}

var _ nn.Backend = (*Backend)(nil)

// Option configures New.
type Option func(*config)

type config struct {
	poolLimit int64
	cacheSize int
	ownDevice bool
}

// WithPoolLimit caps the bytes the backend's memory pool holds from the
// device (runtime.PoolOptions.Limit); allocations beyond it fail with an
// error wrapping runtime.ErrOutOfMemory.
func WithPoolLimit(bytes int64) Option { return func(c *config) { c.poolLimit = bytes } }

// WithCacheSize sets how many objects of each kind (attention segments,
// embedding ids, integer arrays, optimiser tables) the upload caches keep;
// 0 disables caching, 1 counts as 2 (one op may use two ids entries). The
// default is 8.
func WithCacheSize(n int) Option { return func(c *config) { c.cacheSize = max(n, 0) } }

// WithDeviceOwnership makes Close also close the device.
func WithDeviceOwnership() Option { return func(c *config) { c.ownDevice = true } }

// New returns a backend on dev with a fresh caching memory pool.
func New(dev runtime.Device, opts ...Option) (*Backend, error) {
	if dev == nil {
		return nil, errors.New("gpu backend: nil device")
	}
	cfg := config{cacheSize: 8}
	for _, o := range opts {
		o(&cfg)
	}
	b := &Backend{
		dev:       dev,
		kind:      dev.Kind(),
		pool:      runtime.NewPool(dev, runtime.PoolOptions{Limit: cfg.poolLimit}),
		ownDevice: cfg.ownDevice,
		live:      map[*Storage]struct{}{},
	}
	b.c.init(cfg.cacheSize)
	return b, nil
}

// Name describes the backend and its device, e.g. "gpu on emu (2 worker threads)".
func (b *Backend) Name() string { return "gpu on " + b.dev.Name() }

// Device returns the device the backend runs on.
func (b *Backend) Device() runtime.Device { return b.dev }

// Stats returns the memory pool's counters: InUse and Peak count every
// tensor, every op's scratch and the cached label/position arrays (the other
// cached uploads are small separate device allocations).
func (b *Backend) Stats() runtime.Stats { return b.pool.Stats() }

// ResetPeak sets the pool's Peak to its current InUse.
func (b *Backend) ResetPeak() { b.pool.ResetPeak() }

// FreeCaches frees the cached device copies of integer inputs, segment
// layouts and optimiser tables (see the package documentation); later ops
// rebuild what they need.
func (b *Backend) FreeCaches() error {
	if err := b.lock("gpu free caches"); err != nil {
		return err
	}
	defer b.unlock()
	return b.c.clear(b)
}

// Synchronize waits for all work the backend has issued.
func (b *Backend) Synchronize() error { return b.dev.Synchronize(b.stream) }

// Close frees the upload caches, every tensor not yet released (using one
// afterwards is an error) and the memory pool; when the backend owns its
// device (WithDeviceOwnership, or a backend from Open) it also drops the
// device's loaded kernels and closes the device.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	err := b.c.clear(b)
	for s := range b.live {
		s.released = true
		err = errors.Join(err, b.pool.Free(s.buf))
	}
	b.live = nil
	err = errors.Join(err, b.pool.Close())
	if b.ownDevice {
		kernels.Forget(b.dev)
		err = errors.Join(err, b.dev.Close())
	}
	return err
}

// lock serialises ops and refuses them after Close.
func (b *Backend) lock(op string) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return fmt.Errorf("%s: backend is closed", op)
	}
	return nil
}

func (b *Backend) unlock() { b.mu.Unlock() }

// Storage is device memory holding one tensor's elements (shared by its
// reshaped views), allocated from the backend's pool.
type Storage struct {
	b        *Backend
	buf      runtime.Buffer
	released bool
}

// Device reports the device kind ("emu" or "cuda").
func (s *Storage) Device() string { return s.b.kind }

// Ptr is the device address of the first element.
func (s *Storage) Ptr() runtime.DevicePtr { return s.buf.Ptr }

// supported reports whether dt is a storage type of the backend.
func supported(dt runtime.DType) bool { return dt == runtime.F32 || dt == runtime.BF16 }

func dtypeErr(op string, dt runtime.DType) error {
	if dt == runtime.F64 {
		return fmt.Errorf("%s: dtype F64 is not supported: the gpu backend stores F32 and BF16 (use the cpu backend for F64)", op)
	}
	return fmt.Errorf("%s: dtype %v is not supported: the gpu backend stores F32 and BF16", op, dt)
}

// alloc makes an uninitialised device tensor.
func (b *Backend) alloc(op string, dt runtime.DType, shape ...int) (*nn.Tensor, error) {
	if !supported(dt) {
		return nil, dtypeErr(op, dt)
	}
	n := 1
	for i, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("%s: shape %v has negative dimension %d", op, shape, i)
		}
		if d > 0 && n > math.MaxInt/8/d {
			return nil, fmt.Errorf("%s: shape %v is too large", op, shape)
		}
		n *= d
	}
	buf, err := b.pool.Alloc(n*dt.Size(), b.stream)
	if err != nil {
		return nil, fmt.Errorf("%s %v %v: %w", op, dt, shape, err)
	}
	st := &Storage{b: b, buf: buf}
	t, err := nn.New(dt, st, shape...)
	if err != nil {
		_ = b.pool.Free(buf)
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	b.live[st] = struct{}{}
	return t, nil
}

// Alloc returns a zero-filled F32 or BF16 tensor on the device.
func (b *Backend) Alloc(dt runtime.DType, shape ...int) (*nn.Tensor, error) {
	if err := b.lock("gpu alloc"); err != nil {
		return nil, err
	}
	defer b.unlock()
	t, err := b.alloc("gpu alloc", dt, shape...)
	if err != nil {
		return nil, err
	}
	if n := t.Numel() * dt.Size(); n > 0 {
		if err := b.dev.Memset(b.ptr(t), 0, n, b.stream); err != nil {
			b.release(t)
			return nil, fmt.Errorf("gpu alloc: %w", err)
		}
	}
	return t, nil
}

// FromHost copies a host tensor (F32 or F64) to the device as dt (F32 or
// BF16, rounded to nearest even).
func (b *Backend) FromHost(src *nn.Tensor, dt runtime.DType) (*nn.Tensor, error) {
	const op = "gpu fromhost"
	if src == nil {
		return nil, fmt.Errorf("%s: src is nil", op)
	}
	var raw []byte
	switch s := src.Storage().(type) {
	case nn.HostF32:
		if src.DType() != runtime.F32 {
			return nil, fmt.Errorf("%s: src has dtype %v with F32 host storage", op, src.DType())
		}
		if dt == runtime.F32 {
			raw = make([]byte, 4*len(s))
			for i, v := range s {
				binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
			}
		} else if supported(dt) {
			vals := make([]float64, len(s))
			for i, v := range s {
				vals[i] = float64(v)
			}
			raw = runtime.Encode(dt, vals)
		}
	case nn.HostF64:
		if src.DType() != runtime.F64 {
			return nil, fmt.Errorf("%s: src has dtype %v with F64 host storage", op, src.DType())
		}
		if supported(dt) {
			raw = runtime.Encode(dt, s)
		}
	default:
		return nil, fmt.Errorf("%s: src is on device %q, want a host (cpu) tensor", op, src.Device())
	}
	if !supported(dt) {
		return nil, dtypeErr(op, dt)
	}
	if err := b.lock(op); err != nil {
		return nil, err
	}
	defer b.unlock()
	t, err := b.alloc(op, dt, src.Shape()...)
	if err != nil {
		return nil, err
	}
	if err := b.dev.MemcpyHtoD(b.ptr(t), raw, b.stream); err != nil {
		b.release(t)
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return t, nil
}

// ToHost copies a device tensor to a new F32 host tensor (BF16 widened
// exactly).
func (b *Backend) ToHost(t *nn.Tensor) (*nn.Tensor, error) {
	const op = "gpu tohost"
	if err := b.lock(op); err != nil {
		return nil, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	ck.Tensor("t", t)
	if ck.Err() != nil {
		return nil, ck.Err()
	}
	raw := make([]byte, t.Numel()*t.DType().Size())
	if len(raw) > 0 {
		if err := b.dev.MemcpyDtoH(raw, b.ptr(t), b.stream); err != nil {
			return nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	out := make([]float32, t.Numel())
	for i := range out {
		if t.DType() == runtime.BF16 {
			out[i] = runtime.Float32FromBF16(binary.LittleEndian.Uint16(raw[2*i:]))
		} else {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
	return nn.FromF32(out, t.Shape()...)
}

// Release returns t's memory to the pool. t and every view sharing its
// storage must not be used after; using them is an error, as is releasing
// twice. After Close, Release does nothing.
func (b *Backend) Release(t *nn.Tensor) error {
	const op = "gpu release"
	if t == nil {
		return nil
	}
	s, ok := t.Storage().(*Storage)
	if !ok || s.b != b {
		return fmt.Errorf("%s: %v is not a tensor of this backend", op, t)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil // Close freed it
	}
	if s.released {
		return fmt.Errorf("%s: %v was already released", op, t)
	}
	s.released = true
	delete(b.live, s)
	if err := b.pool.Free(s.buf); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// release frees a tensor made by alloc on an error path (lock held).
func (b *Backend) release(t *nn.Tensor) {
	if s, ok := t.Storage().(*Storage); ok && !s.released {
		s.released = true
		delete(b.live, s)
		_ = b.pool.Free(s.buf)
	}
}

// ptr is the device address of a checked tensor.
func (b *Backend) ptr(t *nn.Tensor) runtime.DevicePtr { return t.Storage().(*Storage).buf.Ptr }

// arr is the kernel view of a checked tensor; nil gives the zero Array
// (absent).
func (b *Backend) arr(t *nn.Tensor) kernels.Array {
	if t == nil {
		return kernels.Array{}
	}
	return kernels.Array{Dev: b.dev, Ptr: b.ptr(t), DType: t.DType(), Shape: t.Shape()}
}

// arrAs is the kernel view of t with another shape of the same element count.
func (b *Backend) arrAs(t *nn.Tensor, shape ...int) kernels.Array {
	a := b.arr(t)
	a.Shape = shape
	return a
}

// scratch is an op's temporary device memory, freed when the op returns.
type scratch struct {
	b    *Backend
	op   string
	bufs []runtime.Buffer
}

func (b *Backend) scratch(op string) *scratch { return &scratch{b: b, op: op} }

// alloc returns an uninitialised array.
func (s *scratch) alloc(dt runtime.DType, shape ...int) (kernels.Array, error) {
	a := kernels.Array{Dev: s.b.dev, DType: dt, Shape: append([]int(nil), shape...)}
	buf, err := s.b.pool.Alloc(a.Bytes(), s.b.stream)
	if err != nil {
		return kernels.Array{}, fmt.Errorf("%s: scratch %v %v: %w", s.op, dt, shape, err)
	}
	s.bufs = append(s.bufs, buf)
	a.Ptr = buf.Ptr
	return a, nil
}

// zeros returns a zero-filled array.
func (s *scratch) zeros(dt runtime.DType, shape ...int) (kernels.Array, error) {
	a, err := s.alloc(dt, shape...)
	if err != nil {
		return a, err
	}
	if n := a.Bytes(); n > 0 {
		if err := s.b.dev.Memset(a.Ptr, 0, n, s.b.stream); err != nil {
			return kernels.Array{}, fmt.Errorf("%s: %w", s.op, err)
		}
	}
	return a, nil
}

// upload returns an I32 array holding v.
func (s *scratch) upload(v []int32) (kernels.Array, error) {
	a, err := s.alloc(runtime.I32, len(v))
	if err != nil {
		return a, err
	}
	if len(v) > 0 {
		if err := s.b.dev.MemcpyHtoD(a.Ptr, int32Bytes(v), s.b.stream); err != nil {
			return kernels.Array{}, fmt.Errorf("%s: %w", s.op, err)
		}
	}
	return a, nil
}

// uploadF32 returns an F32 array holding v rounded to f32.
func (s *scratch) uploadF32(v []float64) (kernels.Array, error) {
	a, err := s.alloc(runtime.F32, len(v))
	if err != nil {
		return a, err
	}
	if len(v) > 0 {
		if err := s.b.dev.MemcpyHtoD(a.Ptr, runtime.Encode(runtime.F32, v), s.b.stream); err != nil {
			return kernels.Array{}, fmt.Errorf("%s: %w", s.op, err)
		}
	}
	return a, nil
}

// f32 returns t's values as an F32 array: t itself when it is F32, else an
// f32 copy (cast) in scratch. nil gives the zero Array.
func (s *scratch) f32(t *nn.Tensor) (kernels.Array, error) {
	if t == nil {
		return kernels.Array{}, nil
	}
	a := s.b.arr(t)
	if a.DType == runtime.F32 {
		return a, nil
	}
	f, err := s.alloc(runtime.F32, a.Shape...)
	if err != nil {
		return f, err
	}
	if err := kernels.Cast(s.b.stream, f, a); err != nil {
		return kernels.Array{}, fmt.Errorf("%s: %w", s.op, err)
	}
	return f, nil
}

// f32Out returns an F32 array to compute output t into: t itself when it is
// F32, else scratch that done casts back into t. nil gives the zero Array.
func (s *scratch) f32Out(t *nn.Tensor) (a kernels.Array, done func() error, err error) {
	nop := func() error { return nil }
	if t == nil {
		return kernels.Array{}, nop, nil
	}
	dst := s.b.arr(t)
	if dst.DType == runtime.F32 {
		return dst, nop, nil
	}
	f, err := s.alloc(runtime.F32, dst.Shape...)
	if err != nil {
		return f, nop, err
	}
	return f, func() error { return kernels.Cast(s.b.stream, dst, f) }, nil
}

// free returns the scratch memory to the pool.
func (s *scratch) free() {
	for _, buf := range s.bufs {
		_ = s.b.pool.Free(buf)
	}
	s.bufs = nil
}

// download reads n f32 values of a back to the host as float64.
func (b *Backend) downloadF32(a kernels.Array, n int) ([]float64, error) {
	raw := make([]byte, 4*n)
	if n > 0 {
		if err := b.dev.MemcpyDtoH(raw, a.Ptr, b.stream); err != nil {
			return nil, err
		}
	}
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	}
	return out, nil
}

func int32Bytes(v []int32) []byte {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
	}
	return raw
}

// wrap prefixes a kernel error with the op.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, err)
}
