package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
)

// Zero sets every element of x to 0 (a device memset).
func (b *Backend) Zero(x *nn.Tensor) error {
	const op = "zero"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckZero(ck, x)
	if ck.Err() != nil {
		return ck.Err()
	}
	if n := x.Numel() * x.DType().Size(); n > 0 {
		return wrap(op, b.dev.Memset(b.ptr(x), 0, n, b.stream))
	}
	return nil
}

// Copy copies src into dst (same dtype and element count) device to device.
func (b *Backend) Copy(dst, src *nn.Tensor) error {
	const op = "copy"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckCopy(ck, dst, src)
	if ck.Err() != nil {
		return ck.Err()
	}
	n := src.Numel() * src.DType().Size()
	if n == 0 || b.ptr(dst) == b.ptr(src) {
		return nil
	}
	return wrap(op, b.dev.MemcpyDtoD(b.ptr(dst), b.ptr(src), n, b.stream))
}

// CopyColumns copies cols columns of the 2-D src, starting at srcOff, into
// the 2-D dst starting at dstOff (kernel misc_copy_cols).
func (b *Backend) CopyColumns(dst *nn.Tensor, dstOff int, src *nn.Tensor, srcOff int, cols int) error {
	const op = "copycolumns"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckCopyColumns(ck, dst, dstOff, src, srcOff, cols)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.CopyColumns(b.stream, b.arr(dst), dstOff, b.arr(src), srcOff, cols))
}

// Add sets out = a + b elementwise (kernel misc_axpby); out may alias a or b.
func (b *Backend) Add(a, c, out *nn.Tensor) error {
	const op = "add"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckAdd(ck, a, c, out)
	if ck.Err() != nil {
		return ck.Err()
	}
	n := []int{a.Numel()}
	return wrap(op, kernels.Axpby(b.stream, 1, b.arrAs(a, n...), 1, b.arrAs(c, n...), b.arrAs(out, n...)))
}

// Axpy sets y += alpha·x (kernel axpy).
func (b *Backend) Axpy(alpha float64, x, y *nn.Tensor) error {
	const op = "axpy"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckAxpy(ck, x, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	n := []int{x.Numel()}
	return wrap(op, kernels.Axpy(b.stream, float32(alpha), b.arrAs(x, n...), b.arrAs(y, n...)))
}

// Scale sets x *= alpha (kernel misc_axpby).
func (b *Backend) Scale(alpha float64, x *nn.Tensor) error {
	const op = "scale"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckScale(ck, x)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, b.scale(alpha, x))
}

func (b *Backend) scale(alpha float64, x *nn.Tensor) error {
	a := b.arrAs(x, x.Numel())
	return kernels.Axpby(b.stream, float32(alpha), a, 0, kernels.Array{}, a)
}

// MatMul sets c = alpha·op(a)·op(b) + beta·c (kernel misc_gemm: f32
// accumulation, F32 or BF16 storage). c must not overlap a or b.
func (b *Backend) MatMul(transA, transB bool, alpha float64, a, bm *nn.Tensor, beta float64, c *nn.Tensor) error {
	const op = "matmul"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckMatMul(ck, transA, transB, a, bm, c)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.MatMul(b.stream, transA, transB, float32(alpha), b.arr(a), b.arr(bm), float32(beta), b.arr(c)))
}
