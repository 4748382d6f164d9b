package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// loraLayer is the kernel view of a checked layer; adapter reports whether
// the rank-r path runs (A set with r ≥ 1).
func (b *Backend) loraLayer(l nn.LoRALinear, d loraDims) (kl kernels.LoRALinear, adapter bool) {
	kl = kernels.LoRALinear{
		W: b.arr(l.W), WInOut: l.WInOut, Bias: b.arr(l.Bias), Scale: l.Scale,
		Dropout: kernels.Dropout{P: l.Dropout.P, Seed: l.Dropout.Seed, Step: l.Dropout.Step, TensorID: l.Dropout.TensorID},
	}
	if l.A != nil && d.r > 0 {
		kl.A, kl.B = b.arr(l.A), b.arr(l.B)
		adapter = true
	}
	return kl, adapter
}

// checkLoRALimits adds the kernels' limits to the shared checks.
func checkLoRALimits(ck *nn.Checker, d loraDims) {
	switch {
	case ck.Err() != nil:
	case d.r > kernels.LoRAMaxRank:
		ck.Failf("adapter rank %d exceeds the gpu kernels' maximum %d", d.r, kernels.LoRAMaxRank)
	case d.in == 0 && d.n > 0 && d.out > 0:
		ck.Failf("x has no columns (in = 0); the gpu kernels need in ≥ 1")
	}
}

// LoRALinearForward computes y = x·Wᵀ + bias + s·(dropout(x)·Aᵀ)·Bᵀ with
// the fused lora kernels; xa, when nil, goes to scratch.
func (b *Backend) LoRALinearForward(l nn.LoRALinear, x, y, xa *nn.Tensor) error {
	const op = "lora_linear fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	d := loraDimsOf(nn.CheckLoRALinearForward(ck, l, x, y, xa))
	checkLoRALimits(ck, d)
	if ck.Err() != nil {
		return ck.Err()
	}
	if d.n == 0 || d.out == 0 {
		return nil
	}
	kl, adapter := b.loraLayer(l, d)
	s := b.scratch(op)
	defer s.free()
	xaArr := kernels.Array{}
	if adapter {
		if xa != nil {
			xaArr = b.arr(xa)
		} else {
			var err error
			if xaArr, err = s.alloc(x.DType(), d.n, d.r); err != nil {
				return err
			}
		}
	}
	return wrap(op, kernels.LoRALinearForward(b.stream, kl, b.arr(x), b.arr(y), xaArr))
}

// LoRALinearBackward computes dx (overwritten) and dA, dB, dW, dBias
// (accumulated) from dy with the lora kernels; xa nil recomputes it.
func (b *Backend) LoRALinearBackward(l nn.LoRALinear, x, xa, dy *nn.Tensor, g nn.LoRAGrads) error {
	const op = "lora_linear bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	d := loraDimsOf(nn.CheckLoRALinearBackward(ck, l, x, xa, dy, g))
	checkLoRALimits(ck, d)
	if ck.Err() != nil {
		return ck.Err()
	}
	if d.n == 0 {
		return nil
	}
	if d.out == 0 { // nothing flows back: dx = 0, no gradient changes
		if g.DX != nil && d.in > 0 {
			return wrap(op, b.dev.Memset(b.ptr(g.DX), 0, g.DX.Numel()*g.DX.DType().Size(), b.stream))
		}
		return nil
	}
	kl, adapter := b.loraLayer(l, d)
	kg := kernels.LoRAGrads{DX: b.arr(g.DX), DW: b.arr(g.DW), DBias: b.arr(g.DBias)}
	var xaArr kernels.Array
	if adapter {
		kg.DA, kg.DB = b.arr(g.DA), b.arr(g.DB)
		xaArr = b.arr(xa)
	}
	ws, err := kernels.LoRALinearBackwardWorkspace(kl, b.arr(x), xaArr, kg)
	if err != nil {
		return wrap(op, err)
	}
	s := b.scratch(op)
	defer s.free()
	var wsArr kernels.Array
	if ws > 0 {
		if wsArr, err = s.alloc(runtime.F32, (ws+3)/4); err != nil {
			return err
		}
	}
	return wrap(op, kernels.LoRALinearBackward(b.stream, kl, b.arr(x), xaArr, b.arr(dy), kg, wsArr))
}
