package gpu

import (
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// xentArgs is the kernel description of a checked call, with its scratch.
func (b *Backend) xentArgs(s *scratch, c nn.CrossEntropy, h, emb *nn.Tensor, x xentDims) (kernels.Xent, kernels.Array, func(), error) {
	nop := func() {}
	labels, done, err := b.int32s(c.Labels)
	if err != nil {
		return kernels.Xent{}, kernels.Array{}, nop, wrap(s.op, err)
	}
	w, err := s.f32(c.Weights)
	if err != nil {
		done()
		return kernels.Xent{}, kernels.Array{}, nop, err
	}
	xe := kernels.Xent{H: b.arr(h), Emb: b.arr(emb), Labels: labels, Weights: w, Norm: c.Norm, Chunk: c.Chunk}
	scr, err := s.alloc(runtime.F32, kernels.XentScratchElems(h.DType(), x.n, x.v, x.d, c.Chunk))
	if err != nil {
		done()
		return kernels.Xent{}, kernels.Array{}, nop, err
	}
	return xe, scr, done, nil
}

// CrossEntropyForward computes the weighted LM-head cross-entropy with the
// fused xent kernels (logits one vocabulary chunk at a time, never all N×V;
// the loss is summed in f32 in a fixed order).
func (b *Backend) CrossEntropyForward(c nn.CrossEntropy, h, emb, ce, lse *nn.Tensor) (float64, error) {
	const op = "xent fwd"
	if err := b.lock(op); err != nil {
		return 0, err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	x := xentDimsOf(nn.CheckCrossEntropyForward(ck, c, h, emb, ce, lse))
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	if x.n == 0 {
		return 0, nil
	}
	s := b.scratch(op)
	defer s.free()
	xe, scr, done, err := b.xentArgs(s, c, h, emb, x)
	if err != nil {
		return 0, err
	}
	defer done()
	ceA, ceDone, err := s.f32Out(ce)
	if err != nil {
		return 0, err
	}
	lseA, lseDone, err := s.f32Out(lse)
	if err != nil {
		return 0, err
	}
	loss, err := s.alloc(runtime.F32, 1)
	if err != nil {
		return 0, err
	}
	if err := kernels.XentForward(b.stream, xe, ceA, lseA, loss, scr); err != nil {
		return 0, wrap(op, err)
	}
	if err := ceDone(); err != nil {
		return 0, wrap(op, err)
	}
	if err := lseDone(); err != nil {
		return 0, wrap(op, err)
	}
	v, err := kernels.XentLossValue(loss)
	return v, wrap(op, err)
}

// CrossEntropyBackward computes dh (overwritten), dEmb (accumulated) and dw
// (overwritten) with the xent kernels, recomputing each chunk's logits.
func (b *Backend) CrossEntropyBackward(c nn.CrossEntropy, h, emb, ce, lse *nn.Tensor, dLoss float64, dh, dEmb, dw *nn.Tensor) error {
	const op = "xent bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	x := xentDimsOf(nn.CheckCrossEntropyBackward(ck, c, h, emb, ce, lse, dh, dEmb, dw))
	if math.IsNaN(dLoss) || math.IsInf(dLoss, 0) {
		ck.Failf("dLoss %v is not finite", dLoss)
	}
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.n == 0 || (dh == nil && dEmb == nil && dw == nil) {
		return nil
	}
	s := b.scratch(op)
	defer s.free()
	xe, scr, done, err := b.xentArgs(s, c, h, emb, x)
	if err != nil {
		return err
	}
	defer done()
	ceA, err := s.f32(ce)
	if err != nil {
		return err
	}
	lseA, err := s.f32(lse)
	if err != nil {
		return err
	}
	dwA, dwDone, err := s.f32Out(dw)
	if err != nil {
		return err
	}
	if err := kernels.XentBackward(b.stream, xe, ceA, lseA, dLoss, b.arr(dh), b.arr(dEmb), dwA, scr); err != nil {
		return wrap(op, err)
	}
	return wrap(op, dwDone())
}
