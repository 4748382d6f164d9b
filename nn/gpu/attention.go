package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// attnHeadDims are the head dimensions the attention kernels are built for.
var attnHeadDims = []int{16, 32, 64, 128}

// padDim is the kernels' head dimension that holds d (0 when none does).
func padDim(d int) int {
	for _, x := range attnHeadDims {
		if d <= x {
			return x
		}
	}
	return 0
}

func checkAttnLimits(ck *nn.Checker, d attnDims) {
	if ck.Err() == nil && padDim(d.d) == 0 {
		ck.Failf("head dimension %d exceeds the gpu kernels' maximum %d", d.d, attnHeadDims[len(attnHeadDims)-1])
	}
}

// padder moves [T,H,D] tensors to and from [T,H,Dp] scratch whose extra
// columns are zero, for head dimensions the kernels are not built for.
type padder struct {
	b     *Backend
	s     *scratch
	d, dp int
}

// in returns t as a kernel array of head dimension dp: t itself when d = dp,
// else a zero-padded copy.
func (p padder) in(t *nn.Tensor) (kernels.Array, error) {
	if p.d == p.dp {
		return p.b.arr(t), nil
	}
	rows := t.Dim(0) * t.Dim(1)
	a, err := p.s.zeros(t.DType(), t.Dim(0), t.Dim(1), p.dp)
	if err != nil {
		return a, err
	}
	dst := a
	dst.Shape = []int{rows, p.dp}
	return a, kernels.CopyColumns(p.b.stream, dst, 0, p.b.arrAs(t, rows, p.d), 0, p.d)
}

// out returns an array of head dimension dp for output t (scratch when
// padding, or when t is nil) and the function that moves it into t.
func (p padder) out(t *nn.Tensor, dt runtime.DType, tt, h int) (kernels.Array, func() error, error) {
	nop := func() error { return nil }
	if t != nil && p.d == p.dp {
		return p.b.arr(t), nop, nil
	}
	a, err := p.s.alloc(dt, tt, h, p.dp)
	if err != nil || t == nil {
		return a, nop, err
	}
	return a, func() error {
		src := a
		src.Shape = []int{tt * h, p.dp}
		return kernels.CopyColumns(p.b.stream, p.b.arrAs(t, tt*h, p.d), 0, src, 0, p.d)
	}, nil
}

// AttentionForward computes softmax attention over packed segments with the
// attention kernels (head dimensions other than 16, 32, 64, 128 are padded).
func (b *Backend) AttentionForward(a nn.Attention, q, k, v, o, lse *nn.Tensor) error {
	const op = "attention fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	d := attnDimsOf(nn.CheckAttentionForward(ck, a, q, k, v, o, lse))
	checkAttnLimits(ck, d)
	if ck.Err() != nil {
		return ck.Err()
	}
	if d.t == 0 || d.hq == 0 {
		return nil
	}
	seg, done, err := b.segments(a.CuSeqlens)
	if err != nil {
		return wrap(op, err)
	}
	defer done()
	s := b.scratch(op)
	defer s.free()
	p := padder{b: b, s: s, d: d.d, dp: padDim(d.d)}
	lseF, lseDone, err := s.f32Out(lse)
	if err != nil {
		return err
	}
	var in [3]kernels.Array
	for i, t := range []*nn.Tensor{q, k, v} {
		if in[i], err = p.in(t); err != nil {
			return wrap(op, err)
		}
	}
	oA, oDone, err := p.out(o, q.DType(), d.t, d.hq)
	if err != nil {
		return err
	}
	at := kernels.Attn{Seg: seg, Causal: a.Causal, Scale: d.scale}
	if err := kernels.AttentionForward(b.stream, at, in[0], in[1], in[2], oA, lseF); err != nil {
		return wrap(op, err)
	}
	if err := oDone(); err != nil {
		return wrap(op, err)
	}
	return wrap(op, lseDone())
}

// AttentionBackward computes dq, dk, dv from do with the attention kernels,
// recomputing the probabilities from q, k and lse; nil outputs go to scratch.
func (b *Backend) AttentionBackward(a nn.Attention, q, k, v, o, lse, do, dq, dk, dv *nn.Tensor) error {
	const op = "attention bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	d := attnDimsOf(nn.CheckAttentionBackward(ck, a, q, k, v, o, lse, do, dq, dk, dv))
	checkAttnLimits(ck, d)
	if ck.Err() != nil {
		return ck.Err()
	}
	if d.t == 0 || d.hq == 0 || (dq == nil && dk == nil && dv == nil) {
		return nil
	}
	seg, done, err := b.segments(a.CuSeqlens)
	if err != nil {
		return wrap(op, err)
	}
	defer done()
	s := b.scratch(op)
	defer s.free()
	p := padder{b: b, s: s, d: d.d, dp: padDim(d.d)}
	lseF, err := s.f32(lse)
	if err != nil {
		return err
	}
	delta, err := s.alloc(runtime.F32, d.hq, d.t)
	if err != nil {
		return err
	}
	var in [5]kernels.Array
	for i, t := range []*nn.Tensor{q, k, v, o, do} {
		if in[i], err = p.in(t); err != nil {
			return wrap(op, err)
		}
	}
	dt := q.DType()
	dqA, dqDone, err := p.out(dq, dt, d.t, d.hq)
	if err != nil {
		return err
	}
	dkA, dkDone, err := p.out(dk, dt, d.t, d.hkv)
	if err != nil {
		return err
	}
	dvA, dvDone, err := p.out(dv, dt, d.t, d.hkv)
	if err != nil {
		return err
	}
	at := kernels.Attn{Seg: seg, Causal: a.Causal, Scale: d.scale}
	if err := kernels.AttentionBackward(b.stream, at, in[0], in[1], in[2], in[3], lseF, in[4], dqA, dkA, dvA, delta); err != nil {
		return wrap(op, err)
	}
	for _, f := range []func() error{dqDone, dkDone, dvDone} {
		if err := f(); err != nil {
			return wrap(op, err)
		}
	}
	return nil
}
