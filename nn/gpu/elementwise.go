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
	ck.Tensor("x", x)
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
	ck.Tensor("dst", dst)
	ck.Tensor("src", src)
	if src != nil {
		ck.Numel("dst", dst, src.Numel())
	}
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
	ck.Tensor("dst", dst, -1, -1)
	ck.Tensor("src", src, -1, -1)
	if ck.Err() != nil {
		return ck.Err()
	}
	if dst.Dim(0) != src.Dim(0) {
		return ck.FailfErr("dst has %d rows, src has %d", dst.Dim(0), src.Dim(0))
	}
	if cols < 0 || srcOff < 0 || srcOff+cols > src.Dim(1) {
		return ck.FailfErr("source columns [%d,%d) outside src with %d columns", srcOff, srcOff+cols, src.Dim(1))
	}
	if dstOff < 0 || dstOff+cols > dst.Dim(1) {
		return ck.FailfErr("destination columns [%d,%d) outside dst with %d columns", dstOff, dstOff+cols, dst.Dim(1))
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
	ck.Tensor("a", a)
	ck.Tensor("b", c)
	ck.Tensor("out", out)
	if a != nil {
		ck.Numel("b", c, a.Numel())
		ck.Numel("out", out, a.Numel())
	}
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
	ck.Tensor("x", x)
	ck.Tensor("y", y)
	if x != nil {
		ck.Numel("y", y, x.Numel())
	}
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
	ck.Tensor("x", x)
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
	ck.Tensor("a", a, -1, -1)
	ck.Tensor("b", bm, -1, -1)
	ck.Tensor("c", c, -1, -1)
	if ck.Err() != nil {
		return ck.Err()
	}
	m, ka := a.Dim(0), a.Dim(1)
	if transA {
		m, ka = ka, m
	}
	kb, n := bm.Dim(0), bm.Dim(1)
	if transB {
		kb, n = n, kb
	}
	if ka != kb {
		return ck.FailfErr("inner dimensions differ: op(a) is [%d %d], op(b) is [%d %d]", m, ka, kb, n)
	}
	if c.Dim(0) != m || c.Dim(1) != n {
		return ck.FailfErr("c has shape %v, want [%d %d]", c.Shape(), m, n)
	}
	return wrap(op, kernels.MatMul(b.stream, transA, transB, float32(alpha), b.arr(a), b.arr(bm), float32(beta), b.arr(c)))
}
