// Package cpu is the pure-Go reference implementation of nn.Backend: the
// specification every GPU kernel is tested against, and a backend that trains
// tiny models on a laptop.
//
// Every op is written once, generic over the element type (Float), and runs
// on F32 and F64 tensors. Work is split over rows (or fixed-size element
// blocks) across at most GOMAXPROCS goroutines; each output element is written
// by exactly one goroutine and every reduction adds fixed-size partials in a
// fixed order, so results are bit-identical run to run and do not depend on
// GOMAXPROCS. Matrix products go through gonum's blas32/blas64 (whose Sgemm and
// Dgemm run k in order, independent of the thread count), or, in a binary built
// with -tags openblas, through OpenBLAS's cblas_sgemm/cblas_dgemm for speed
// (there the thread-count independence is OpenBLAS's own, not ours).
//
// Precision: F64 tensors are computed in float64 throughout. For F32 tensors
// the GEMMs (linear layers, LM-head logits) run in float32 as BLAS does, while
// everything cheap relative to a GEMM is carried in float64 and rounded once
// on store: attention scores, softmax sums and outputs, norm statistics,
// activation functions, RoPE angles, cross-entropy log-sum-exp, optimiser
// updates, embedding scatter sums and all reductions.
package cpu

import (
	"fmt"
	goruntime "runtime"
	"sync"
	"sync/atomic"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// Float is the element type the reference ops are written over.
type Float interface{ ~float32 | ~float64 }

// Backend is the CPU reference nn.Backend. The zero value is ready to use.
type Backend struct{}

var _ nn.Backend = (*Backend)(nil)

// New returns a CPU backend.
func New() *Backend { return &Backend{} }

// Name describes the backend and its parallelism.
func (*Backend) Name() string {
	return fmt.Sprintf("cpu (%d goroutines)", goruntime.GOMAXPROCS(0))
}

// Alloc returns a zero-filled F32 or F64 host tensor.
func (*Backend) Alloc(dt runtime.DType, shape ...int) (*nn.Tensor, error) {
	t, err := nn.Zeros(dt, shape...)
	if err != nil {
		return nil, fmt.Errorf("cpu alloc: %w", err)
	}
	return t, nil
}

// FromHost copies a host tensor into a new host tensor of dtype dt (F32 or
// F64), converting elements.
func (b *Backend) FromHost(src *nn.Tensor, dt runtime.DType) (*nn.Tensor, error) {
	if src == nil {
		return nil, fmt.Errorf("cpu fromhost: src is nil")
	}
	if err := hostCheck("fromhost", "src", src); err != nil {
		return nil, err
	}
	dst, err := b.Alloc(dt, src.Shape()...)
	if err != nil {
		return nil, fmt.Errorf("cpu fromhost: %w", err)
	}
	convertInto(dst, src)
	return dst, nil
}

// ToHost returns a copy of t (host tensors are already on the host).
func (b *Backend) ToHost(t *nn.Tensor) (*nn.Tensor, error) {
	if t == nil {
		return nil, fmt.Errorf("cpu tohost: t is nil")
	}
	if err := hostCheck("tohost", "t", t); err != nil {
		return nil, err
	}
	return b.FromHost(t, t.DType())
}

// Release does nothing: host tensors are garbage collected.
func (*Backend) Release(*nn.Tensor) error { return nil }

func convertInto(dst, src *nn.Tensor) {
	switch d := dst.Storage().(type) {
	case nn.HostF32:
		switch s := src.Storage().(type) {
		case nn.HostF32:
			copy(d, s)
		case nn.HostF64:
			for i, v := range s {
				d[i] = float32(v)
			}
		}
	case nn.HostF64:
		switch s := src.Storage().(type) {
		case nn.HostF32:
			for i, v := range s {
				d[i] = float64(v)
			}
		case nn.HostF64:
			copy(d, s)
		}
	}
}

// hostCheck verifies that t is an F32 or F64 host tensor whose storage agrees
// with its dtype.
func hostCheck(op, name string, t *nn.Tensor) error {
	switch t.Storage().(type) {
	case nn.HostF32:
		if t.DType() == runtime.F32 {
			return nil
		}
	case nn.HostF64:
		if t.DType() == runtime.F64 {
			return nil
		}
	default:
		return fmt.Errorf("%s: %s is on device %q, want a cpu tensor", op, name, t.Device())
	}
	return fmt.Errorf("%s: %s has dtype %v, the cpu backend supports F32 and F64", op, name, t.DType())
}

// newChecker returns the shared argument checker with the host storage test.
func newChecker(op string) *nn.Checker { return nn.NewChecker(op, hostCheck) }

// data returns t's elements as []T; t must have passed the op's checks.
func data[T Float](t *nn.Tensor) []T {
	if t == nil {
		return nil
	}
	var out any
	switch s := t.Storage().(type) {
	case nn.HostF32:
		out = []float32(s)
	case nn.HostF64:
		out = []float64(s)
	}
	v, ok := out.([]T)
	if !ok {
		panic("cpu: internal error: tensor dtype does not match the instantiated op")
	}
	return v
}

// parallelFor calls fn on consecutive ranges [lo,hi) of at most grain items
// covering [0,n), on up to GOMAXPROCS goroutines. Which goroutine runs which
// range varies, so fn must write disjoint outputs per range.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	workers := min(goruntime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		fn(0, n)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				c := int(next.Add(1)) - 1
				if c >= chunks {
					return
				}
				lo := c * grain
				fn(lo, min(lo+grain, n))
			}
		})
	}
	wg.Wait()
}

// rowGrain picks how many rows of width cols one parallel task handles, so a
// task does at least ~16k element operations.
func rowGrain(cols int) int {
	return max(1, (1<<14)/max(1, cols))
}
