package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
)

// flat is the kernel view of a checked tensor as a vector.
func (b *Backend) flat(t *nn.Tensor) kernels.Array {
	if t == nil {
		return kernels.Array{}
	}
	return b.arrAs(t, t.Numel())
}

// GELUForward sets y = GELU-tanh(x) (kernel gelu_fwd); y may alias x.
func (b *Backend) GELUForward(x, y *nn.Tensor) error {
	const op = "gelu fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckGELUForward(ck, x, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.GELUForward(b.stream, b.flat(x), b.flat(y)))
}

// GELUBackward sets dx = dy·GELU'(x) (kernel gelu_bwd); dx may alias dy.
func (b *Backend) GELUBackward(x, dy, dx *nn.Tensor) error {
	const op = "gelu bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckGELUBackward(ck, x, dy, dx)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.GELUBackward(b.stream, b.flat(x), b.flat(dy), b.flat(dx)))
}

// SwiGLUForward sets y = silu(gate)·up (kernel swiglu_fwd).
func (b *Backend) SwiGLUForward(gate, up, y *nn.Tensor) error {
	const op = "swiglu fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckSwiGLUForward(ck, gate, up, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.SwiGLUForward(b.stream, b.flat(gate), b.flat(up), b.flat(y)))
}

// SwiGLUBackward computes dGate and dUp (either may be nil) from dy (kernel
// swiglu_bwd).
func (b *Backend) SwiGLUBackward(gate, up, dy, dGate, dUp *nn.Tensor) error {
	const op = "swiglu bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckSwiGLUBackward(ck, gate, up, dy, dGate, dUp)
	if ck.Err() != nil {
		return ck.Err()
	}
	return wrap(op, kernels.SwiGLUBackward(b.stream, b.flat(gate), b.flat(up), b.flat(dy), b.flat(dGate), b.flat(dUp)))
}

// RoPEForward rotates x [T,H,D] by each token's position (kernel rope_fwd;
// f32 angles pos·θ^(−2i/D) as Hugging Face computes them); y may alias x.
func (b *Backend) RoPEForward(x *nn.Tensor, positions []int32, theta float64, y *nn.Tensor) error {
	return b.rope("rope fwd", false, x, positions, theta, y)
}

// RoPEBackward applies the inverse rotation to dy (kernel rope_bwd); dx may
// alias dy.
func (b *Backend) RoPEBackward(dy *nn.Tensor, positions []int32, theta float64, dx *nn.Tensor) error {
	return b.rope("rope bwd", true, dy, positions, theta, dx)
}

func (b *Backend) rope(op string, inverse bool, x *nn.Tensor, positions []int32, theta float64, y *nn.Tensor) error {
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	xName, yName := "x", "y"
	if inverse {
		xName, yName = "dy", "dx"
	}
	t, h, d := nn.CheckRoPE(ck, x, y, xName, yName, positions, theta)
	if ck.Err() != nil {
		return ck.Err()
	}
	if t == 0 || h == 0 || d == 0 {
		return nil
	}
	pos, donePos, err := b.int32s(positions)
	if err != nil {
		return wrap(op, err)
	}
	defer donePos()
	freq, doneFreq, err := b.invFreq(theta, d)
	if err != nil {
		return wrap(op, err)
	}
	defer doneFreq()
	if inverse {
		return wrap(op, kernels.RoPEBackward(b.stream, b.arr(x), pos, freq, b.arr(y)))
	}
	return wrap(op, kernels.RoPEForward(b.stream, b.arr(x), pos, freq, b.arr(y)))
}

// EmbeddingForward gathers y[t] = table[ids[t]] (+ pos[positions[t]])
// (kernel embed_fwd).
func (b *Backend) EmbeddingForward(ids []int32, table *nn.Tensor, positions []int32, pos *nn.Tensor, y *nn.Tensor) error {
	const op = "embedding fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	t, d := nn.CheckEmbeddingForward(ck, ids, table, positions, pos, y)
	if ck.Err() != nil {
		return ck.Err()
	}
	if t == 0 || d == 0 {
		return nil
	}
	idx, done, err := b.embedIDs(ids)
	if err != nil {
		return wrap(op, err)
	}
	defer done()
	var px *kernels.EmbedIDs
	if pos != nil {
		var donePos func()
		if px, donePos, err = b.embedIDs(positions); err != nil {
			return wrap(op, err)
		}
		defer donePos()
	}
	return wrap(op, kernels.EmbedForward(b.stream, idx, b.arr(table), px, b.arr(pos), b.arr(y)))
}

// EmbeddingBackward scatter-adds dy into dTable (and dPos) in token order
// per id (kernel embed_bwd: deterministic, no atomics).
func (b *Backend) EmbeddingBackward(ids []int32, positions []int32, dy, dTable, dPos *nn.Tensor) error {
	const op = "embedding bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	d := nn.CheckEmbeddingBackward(ck, ids, positions, dy, dTable, dPos)
	if ck.Err() != nil {
		return ck.Err()
	}
	if len(ids) == 0 || d == 0 || (dTable == nil && dPos == nil) {
		return nil
	}
	var idx, px *kernels.EmbedIDs
	if dTable != nil {
		x, done, err := b.embedIDs(ids)
		if err != nil {
			return wrap(op, err)
		}
		defer done()
		idx = x
	}
	if dPos != nil {
		x, done, err := b.embedIDs(positions)
		if err != nil {
			return wrap(op, err)
		}
		defer done()
		px = x
	}
	return wrap(op, kernels.EmbedBackward(b.stream, idx, px, b.arr(dy), b.arr(dTable), b.arr(dPos)))
}
