package gpu

import (
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// reduce runs op over each x[i] (with y[i] for Dot) into element i of one
// f32 array and reads the results back: one deterministic two-pass reduction
// per tensor (kernel reduce_<op>), summed in f32 in a fixed order.
func (b *Backend) reduce(opName string, op kernels.ReduceOp, xs, ys []*nn.Tensor) ([]float64, error) {
	if len(xs) == 0 {
		return nil, nil
	}
	s := b.scratch(opName)
	defer s.free()
	grid := 1
	for _, x := range xs {
		grid = max(grid, kernels.ReduceGrid(x.Numel()))
	}
	part, err := s.alloc(runtime.F32, grid)
	if err != nil {
		return nil, err
	}
	out, err := s.alloc(runtime.F32, len(xs))
	if err != nil {
		return nil, err
	}
	for i, x := range xs {
		var y kernels.Array
		if ys != nil {
			y = b.flat(ys[i])
		}
		if err := kernels.Reduce(b.stream, op, out.Elem(i), b.flat(x), y, part); err != nil {
			return nil, wrap(opName, err)
		}
	}
	v, err := b.downloadF32(out, len(xs))
	return v, wrap(opName, err)
}

// Sum returns Σ x (accumulated in f32 on the device).
func (b *Backend) Sum(x *nn.Tensor) (float64, error) {
	const op = "sum"
	if err := b.lock(op); err != nil {
		return 0, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckSum(ck, x)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	v, err := b.reduce(op, kernels.Sum, []*nn.Tensor{x}, nil)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// Dot returns Σ a·b (accumulated in f32 on the device).
func (b *Backend) Dot(a, c *nn.Tensor) (float64, error) {
	const op = "dot"
	if err := b.lock(op); err != nil {
		return 0, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckDot(ck, a, c)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	v, err := b.reduce(op, kernels.Dot, []*nn.Tensor{a}, []*nn.Tensor{c})
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

// sumSquares returns Σ x² over xs: per-tensor f32 sums on the device, added
// in list order in float64.
func (b *Backend) sumSquares(op string, xs []*nn.Tensor) (float64, error) {
	v, err := b.reduce(op, kernels.SumSq, xs, nil)
	if err != nil {
		return 0, err
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s, nil
}

// SumSquares returns Σ x² over every tensor in xs.
func (b *Backend) SumSquares(xs []*nn.Tensor) (float64, error) {
	return b.checkedSumSquares("sumsquares", xs)
}

// GlobalNorm returns the L2 norm of the concatenation of xs.
func (b *Backend) GlobalNorm(xs []*nn.Tensor) (float64, error) {
	s, err := b.checkedSumSquares("globalnorm", xs)
	return math.Sqrt(s), err
}

// checkedSumSquares is sumSquares behind the backend lock and the argument
// check, errors named after op.
func (b *Backend) checkedSumSquares(op string, xs []*nn.Tensor) (float64, error) {
	if err := b.lock(op); err != nil {
		return 0, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckList(ck, xs)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	return b.sumSquares(op, xs)
}

// ClipGlobalNorm scales every tensor of xs by min(1, maxNorm/(norm+1e-6))
// (the coefficient computed on the host in float64, as nn/cpu does) and
// returns the norm before clipping.
func (b *Backend) ClipGlobalNorm(xs []*nn.Tensor, maxNorm float64) (float64, error) {
	const op = "clipglobalnorm"
	if err := b.lock(op); err != nil {
		return 0, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckClipGlobalNorm(ck, xs, maxNorm)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	s, err := b.sumSquares(op, xs)
	if err != nil {
		return 0, err
	}
	norm := math.Sqrt(s)
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		for _, x := range xs {
			if err := b.scale(coef, x); err != nil {
				return 0, wrap(op, err)
			}
		}
	}
	return norm, nil
}
