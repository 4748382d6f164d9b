package cpu

import (
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// elemGrain is the number of elements one parallel task handles in
// elementwise ops and reductions. Reductions sum partials of exactly this many
// elements in order, which fixes their rounding independently of GOMAXPROCS.
const elemGrain = 1 << 14

// Zero sets every element of x to 0.
func (*Backend) Zero(x *nn.Tensor) error {
	ck := newChecker("zero")
	nn.CheckZero(ck, x)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		clear(data[float32](x))
	} else {
		clear(data[float64](x))
	}
	return nil
}

// Copy copies src into dst; both have the same dtype and element count.
func (*Backend) Copy(dst, src *nn.Tensor) error {
	ck := newChecker("copy")
	nn.CheckCopy(ck, dst, src)
	if ck.Err() != nil {
		return ck.Err()
	}
	if dst.DType() == runtime.F32 {
		copy(data[float32](dst), data[float32](src))
	} else {
		copy(data[float64](dst), data[float64](src))
	}
	return nil
}

// CopyColumns copies cols columns of the 2-D src, starting at srcOff, into
// the 2-D dst starting at dstOff (see nn.Backend.CopyColumns).
func (*Backend) CopyColumns(dst *nn.Tensor, dstOff int, src *nn.Tensor, srcOff int, cols int) error {
	ck := newChecker("copycolumns")
	nn.CheckCopyColumns(ck, dst, dstOff, src, srcOff, cols)
	if ck.Err() != nil {
		return ck.Err()
	}
	if dst.DType() == runtime.F32 {
		copyColumns(data[float32](dst), dst.Dim(1), dstOff, data[float32](src), src.Dim(1), srcOff, dst.Dim(0), cols)
	} else {
		copyColumns(data[float64](dst), dst.Dim(1), dstOff, data[float64](src), src.Dim(1), srcOff, dst.Dim(0), cols)
	}
	return nil
}

func copyColumns[T Float](dst []T, ldd, dstOff int, src []T, lds, srcOff, rows, cols int) {
	parallelFor(rows, rowGrain(cols), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(dst[i*ldd+dstOff:i*ldd+dstOff+cols], src[i*lds+srcOff:i*lds+srcOff+cols])
		}
	})
}

// Add sets out = a + b elementwise; out may alias a or b.
func (*Backend) Add(a, b, out *nn.Tensor) error {
	ck := newChecker("add")
	nn.CheckAdd(ck, a, b, out)
	if ck.Err() != nil {
		return ck.Err()
	}
	if a.DType() == runtime.F32 {
		add(data[float32](a), data[float32](b), data[float32](out))
	} else {
		add(data[float64](a), data[float64](b), data[float64](out))
	}
	return nil
}

func add[T Float](a, b, out []T) {
	parallelFor(len(out), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = a[i] + b[i]
		}
	})
}

// Axpy sets y += alpha·x.
func (*Backend) Axpy(alpha float64, x, y *nn.Tensor) error {
	ck := newChecker("axpy")
	nn.CheckAxpy(ck, x, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		axpy(alpha, data[float32](x), data[float32](y))
	} else {
		axpy(alpha, data[float64](x), data[float64](y))
	}
	return nil
}

func axpy[T Float](alpha float64, x, y []T) {
	a := T(alpha)
	parallelFor(len(y), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			y[i] += a * x[i]
		}
	})
}

// Scale sets x *= alpha.
func (*Backend) Scale(alpha float64, x *nn.Tensor) error {
	ck := newChecker("scale")
	nn.CheckScale(ck, x)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		scale(alpha, data[float32](x))
	} else {
		scale(alpha, data[float64](x))
	}
	return nil
}

func scale[T Float](alpha float64, x []T) {
	a := T(alpha)
	parallelFor(len(x), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			x[i] *= a
		}
	})
}
