package model

import "github.com/perkgo/perk/nn"

// qwenSaved holds a Qwen2 block's activations for backward.
type qwenSaved struct {
	a1, rstd1        *nn.Tensor // input_layernorm output and statistics
	xaQ, xaK, xaV    *nn.Tensor // adapters' dropout(x)·Aᵀ (nil when not adapted)
	q, k, v          *nn.Tensor // rotated q [T,Hq,D], rotated k and v [T,Hkv,D]
	o, lse           *nn.Tensor // attention output [T,Hq,D], log-sum-exp [Hq,T]
	xaO              *nn.Tensor
	x2               *nn.Tensor // residual after attention
	a2, rstd2        *nn.Tensor // post_attention_layernorm
	gate, up, h      *nn.Tensor // [T,I]; h = silu(gate)·up
	xaGate, xaUp, xD *nn.Tensor // xD: down_proj's saved xa
}

func (s *qwenSaved) tensors() []*nn.Tensor {
	return []*nn.Tensor{s.a1, s.rstd1, s.xaQ, s.xaK, s.xaV, s.q, s.k, s.v, s.o, s.lse, s.xaO,
		s.x2, s.a2, s.rstd2, s.gate, s.up, s.h, s.xaGate, s.xaUp, s.xD}
}

// qwenForward runs block i: x2 = x + o_proj(attn(rope(q), rope(k), v)) on
// input_layernorm(x), out = x2 + down_proj(silu(gate_proj(a))·up_proj(a))
// with a = post_attention_layernorm(x2).
func (p *Pass) qwenForward(i int, x, out *nn.Tensor) saved {
	m, e, b, blk := p.m, p.e, p.m.b, &p.m.blocks[i]
	T, d, Hq, Hkv, D, I := p.ntok, m.cfg.Hidden, m.cfg.Heads, m.cfg.KVHeads, m.cfg.HeadDim(), m.cfg.Intermediate
	eps, theta := m.cfg.NormEps, m.cfg.RopeTheta
	s := &qwenSaved{}
	pre := blockPrefix(m.cfg, i)

	s.a1, s.rstd1 = e.alloc(T, d), e.alloc(T)
	e.do(pre+"input_layernorm", func() error { return b.RMSNormForward(x, blk.norm1, eps, s.a1, s.rstd1) })
	s.q, s.k, s.v = e.alloc(T, Hq, D), e.alloc(T, Hkv, D), e.alloc(T, Hkv, D)
	s.xaQ = p.linFwd(i, qwenQ, s.a1, e.view(s.q, T, Hq*D))
	s.xaK = p.linFwd(i, qwenK, s.a1, e.view(s.k, T, Hkv*D))
	s.xaV = p.linFwd(i, qwenV, s.a1, e.view(s.v, T, Hkv*D))
	e.do(pre+"rope", func() error {
		if err := b.RoPEForward(s.q, p.pos, theta, s.q); err != nil {
			return err
		}
		return b.RoPEForward(s.k, p.pos, theta, s.k)
	})
	s.o, s.lse = e.alloc(T, Hq, D), e.alloc(Hq, T)
	e.do(pre+"attn", func() error { return b.AttentionForward(p.attn(), s.q, s.k, s.v, s.o, s.lse) })
	ao := e.alloc(T, d)
	s.xaO = p.linFwd(i, qwenO, e.view(s.o, T, Hq*D), ao)
	s.x2 = e.alloc(T, d)
	e.do(pre+"attn residual", func() error { return b.Add(x, ao, s.x2) })
	e.free(ao)

	s.a2, s.rstd2 = e.alloc(T, d), e.alloc(T)
	e.do(pre+"post_attention_layernorm", func() error { return b.RMSNormForward(s.x2, blk.norm2, eps, s.a2, s.rstd2) })
	s.gate, s.up = e.alloc(T, I), e.alloc(T, I)
	s.xaGate = p.linFwd(i, qwenGate, s.a2, s.gate)
	s.xaUp = p.linFwd(i, qwenUp, s.a2, s.up)
	s.h = e.alloc(T, I)
	e.do(pre+"mlp swiglu", func() error { return b.SwiGLUForward(s.gate, s.up, s.h) })
	mo := e.alloc(T, d)
	s.xD = p.linFwd(i, qwenDown, s.h, mo)
	e.do(pre+"mlp residual", func() error { return b.Add(s.x2, mo, out) })
	e.free(mo)
	return s
}

// qwenBackward back-propagates dout through block i; dx (nil when not
// needed) receives the gradient with respect to the block input x.
func (p *Pass) qwenBackward(i int, x *nn.Tensor, s *qwenSaved, dout, dx *nn.Tensor) {
	m, e, b, blk := p.m, p.e, p.m.b, &p.m.blocks[i]
	T, d, Hq, Hkv, D, I := p.ntok, m.cfg.Hidden, m.cfg.Heads, m.cfg.KVHeads, m.cfg.HeadDim(), m.cfg.Intermediate
	theta := m.cfg.RopeTheta
	pre := blockPrefix(m.cfg, i)

	// MLP branch.
	dh := e.alloc(T, I)
	p.linBwd(i, qwenDown, s.h, s.xD, dout, dh)
	dgate, dup := e.alloc(T, I), e.alloc(T, I)
	e.do(pre+"mlp swiglu backward", func() error { return b.SwiGLUBackward(s.gate, s.up, dh, dgate, dup) })
	e.free(dh)
	da2, tmp := e.alloc(T, d), e.alloc(T, d)
	p.linBwd(i, qwenGate, s.a2, s.xaGate, dgate, da2)
	p.linBwd(i, qwenUp, s.a2, s.xaUp, dup, tmp)
	e.free(dgate, dup)
	dx2 := e.alloc(T, d)
	e.do(pre+"post_attention_layernorm backward", func() error {
		if err := b.Add(da2, tmp, da2); err != nil {
			return err
		}
		if err := b.RMSNormBackward(s.x2, blk.norm2, s.rstd2, da2, dx2, p.gb(blk.norm2)); err != nil {
			return err
		}
		return b.Add(dx2, dout, dx2)
	})
	e.free(da2)

	// Attention branch.
	do := e.alloc(T, Hq, D)
	p.linBwd(i, qwenO, e.view(s.o, T, Hq*D), s.xaO, dx2, e.view(do, T, Hq*D))
	dq, dk, dv := e.alloc(T, Hq, D), e.alloc(T, Hkv, D), e.alloc(T, Hkv, D)
	e.do(pre+"attn backward", func() error {
		if err := b.AttentionBackward(p.attn(), s.q, s.k, s.v, s.o, s.lse, do, dq, dk, dv); err != nil {
			return err
		}
		if err := b.RoPEBackward(dq, p.pos, theta, dq); err != nil {
			return err
		}
		return b.RoPEBackward(dk, p.pos, theta, dk)
	})
	e.free(do)
	var da1 *nn.Tensor
	if dx != nil {
		da1 = e.alloc(T, d)
	}
	// With da1 nil (no input gradient wanted) tmp is not needed either.
	tmpOrNil := tmp
	if dx == nil {
		tmpOrNil = nil
	}
	p.linBwd(i, qwenQ, s.a1, s.xaQ, e.view(dq, T, Hq*D), da1)
	p.linBwd(i, qwenK, s.a1, s.xaK, e.view(dk, T, Hkv*D), tmpOrNil)
	if dx != nil {
		e.do(pre+"qkv gradient sum", func() error { return b.Add(da1, tmp, da1) })
	}
	p.linBwd(i, qwenV, s.a1, s.xaV, e.view(dv, T, Hkv*D), tmpOrNil)
	e.free(dq, dk, dv)
	if dx != nil {
		e.do(pre+"input_layernorm backward", func() error {
			if err := b.Add(da1, tmp, da1); err != nil {
				return err
			}
			if err := b.RMSNormBackward(x, blk.norm1, s.rstd1, da1, dx, p.gb(blk.norm1)); err != nil {
				return err
			}
			return b.Add(dx, dx2, dx)
		})
	}
	e.free(da1, tmp, dx2)
}
