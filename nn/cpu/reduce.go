package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// blockSums splits [0,n) into blocks of elemGrain, computes f on each block in
// parallel and returns the block results added in block order (float64).
func blockSums(n int, f func(lo, hi int) float64) float64 {
	nb := (n + elemGrain - 1) / elemGrain
	part := make([]float64, nb)
	parallelFor(nb, 1, func(lo, hi int) {
		for b := lo; b < hi; b++ {
			part[b] = f(b*elemGrain, min((b+1)*elemGrain, n))
		}
	})
	s := 0.0
	for _, p := range part {
		s += p
	}
	return s
}

func sum[T Float](x []T) float64 {
	return blockSums(len(x), func(lo, hi int) float64 {
		s := 0.0
		for _, v := range x[lo:hi] {
			s += float64(v)
		}
		return s
	})
}

func dot[T Float](a, b []T) float64 {
	return blockSums(len(a), func(lo, hi int) float64 {
		s := 0.0
		for i := lo; i < hi; i++ {
			s += float64(a[i]) * float64(b[i])
		}
		return s
	})
}

// Sum returns Σ x, accumulated in float64.
func (*Backend) Sum(x *nn.Tensor) (float64, error) {
	ck := newChecker("sum")
	nn.CheckSum(ck, x)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	if x.DType() == runtime.F32 {
		return sum(data[float32](x)), nil
	}
	return sum(data[float64](x)), nil
}

// Dot returns Σ a·b, accumulated in float64.
func (*Backend) Dot(a, b *nn.Tensor) (float64, error) {
	ck := newChecker("dot")
	nn.CheckDot(ck, a, b)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	if a.DType() == runtime.F32 {
		return dot(data[float32](a), data[float32](b)), nil
	}
	return dot(data[float64](a), data[float64](b)), nil
}

func checkList(op string, xs []*nn.Tensor) error {
	ck := newChecker(op)
	nn.CheckList(ck, xs)
	return ck.Err()
}

// SumSquares returns Σ x² over every tensor in xs, accumulated in float64 and
// added tensor by tensor in list order.
func (*Backend) SumSquares(xs []*nn.Tensor) (float64, error) {
	if err := checkList("sumsquares", xs); err != nil {
		return 0, err
	}
	return sumSquares(xs), nil
}

func sumSquares(xs []*nn.Tensor) float64 {
	s := 0.0
	for _, x := range xs {
		if x.DType() == runtime.F32 {
			v := data[float32](x)
			s += dot(v, v)
		} else {
			v := data[float64](x)
			s += dot(v, v)
		}
	}
	return s
}

// GlobalNorm returns the L2 norm of the concatenation of xs.
func (*Backend) GlobalNorm(xs []*nn.Tensor) (float64, error) {
	if err := checkList("globalnorm", xs); err != nil {
		return 0, err
	}
	return math.Sqrt(sumSquares(xs)), nil
}

// ClipGlobalNorm scales every tensor of xs by min(1, maxNorm/(norm+1e-6)) and
// returns the norm before clipping.
func (*Backend) ClipGlobalNorm(xs []*nn.Tensor, maxNorm float64) (float64, error) {
	ck := newChecker("clipglobalnorm")
	nn.CheckClipGlobalNorm(ck, xs, maxNorm)
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	norm := math.Sqrt(sumSquares(xs))
	coef := maxNorm / (norm + 1e-6)
	if coef < 1 {
		for _, x := range xs {
			if x.DType() == runtime.F32 {
				scale(coef, data[float32](x))
			} else {
				scale(coef, data[float64](x))
			}
		}
	}
	return norm, nil
}
