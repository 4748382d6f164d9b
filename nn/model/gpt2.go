package model

import "github.com/perkgo/perk/nn"

// gpt2Saved holds a GPT-2 block's activations for backward.
type gpt2Saved struct {
	a1, mean1, rstd1 *nn.Tensor // ln_1 output and statistics
	xaAttn           *nn.Tensor // c_attn's dropout(x)·Aᵀ (nil without adapter)
	q, k, v          *nn.Tensor // [T,H,D]
	o, lse           *nn.Tensor // attention output [T,H,D] and log-sum-exp [H,T]
	xaProj           *nn.Tensor
	x2               *nn.Tensor // residual after attention
	a2, mean2, rstd2 *nn.Tensor // ln_2
	xaFC             *nn.Tensor
	f, g             *nn.Tensor // c_fc output and GELU(f) [T,I]
	xaMProj          *nn.Tensor
}

func (s *gpt2Saved) tensors() []*nn.Tensor {
	return []*nn.Tensor{s.a1, s.mean1, s.rstd1, s.xaAttn, s.q, s.k, s.v, s.o, s.lse, s.xaProj,
		s.x2, s.a2, s.mean2, s.rstd2, s.xaFC, s.f, s.g, s.xaMProj}
}

// gpt2Forward runs pre-LN block i: x2 = x + c_proj(attn(c_attn(ln_1(x)))),
// out = x2 + mlp.c_proj(gelu(c_fc(ln_2(x2)))).
func (p *Pass) gpt2Forward(i int, x, out *nn.Tensor) saved {
	m, e, b, blk := p.m, p.e, p.m.b, &p.m.blocks[i]
	T, d, H, D, I := p.ntok, m.cfg.Hidden, m.cfg.Heads, m.cfg.HeadDim(), m.cfg.Intermediate
	eps := m.cfg.NormEps
	s := &gpt2Saved{}
	pre := blockPrefix(m.cfg, i)

	s.a1, s.mean1, s.rstd1 = e.alloc(T, d), e.alloc(T), e.alloc(T)
	e.do(pre+"ln_1", func() error { return b.LayerNormForward(x, blk.norm1, blk.norm1b, eps, s.a1, s.mean1, s.rstd1) })
	qkv := e.alloc(T, 3*d)
	s.xaAttn = p.linFwd(i, gpt2Attn, s.a1, qkv)
	s.q, s.k, s.v = e.alloc(T, H, D), e.alloc(T, H, D), e.alloc(T, H, D)
	q2, k2, v2 := e.view(s.q, T, d), e.view(s.k, T, d), e.view(s.v, T, d)
	e.do(pre+"attn split", func() error {
		if err := b.CopyColumns(q2, 0, qkv, 0, d); err != nil {
			return err
		}
		if err := b.CopyColumns(k2, 0, qkv, d, d); err != nil {
			return err
		}
		return b.CopyColumns(v2, 0, qkv, 2*d, d)
	})
	e.free(qkv)
	s.o, s.lse = e.alloc(T, H, D), e.alloc(H, T)
	e.do(pre+"attn", func() error { return b.AttentionForward(p.attn(), s.q, s.k, s.v, s.o, s.lse) })
	proj := e.alloc(T, d)
	s.xaProj = p.linFwd(i, gpt2AttnProj, e.view(s.o, T, d), proj)
	s.x2 = e.alloc(T, d)
	e.do(pre+"attn residual", func() error { return b.Add(x, proj, s.x2) })
	e.free(proj)

	s.a2, s.mean2, s.rstd2 = e.alloc(T, d), e.alloc(T), e.alloc(T)
	e.do(pre+"ln_2", func() error { return b.LayerNormForward(s.x2, blk.norm2, blk.norm2b, eps, s.a2, s.mean2, s.rstd2) })
	s.f = e.alloc(T, I)
	s.xaFC = p.linFwd(i, gpt2FC, s.a2, s.f)
	s.g = e.alloc(T, I)
	e.do(pre+"mlp gelu", func() error { return b.GELUForward(s.f, s.g) })
	mo := e.alloc(T, d)
	s.xaMProj = p.linFwd(i, gpt2MLPProj, s.g, mo)
	e.do(pre+"mlp residual", func() error { return b.Add(s.x2, mo, out) })
	e.free(mo)
	return s
}

// gpt2Backward back-propagates dout through block i; dx (nil when not
// needed) receives the gradient with respect to the block input x.
func (p *Pass) gpt2Backward(i int, x *nn.Tensor, s *gpt2Saved, dout, dx *nn.Tensor) {
	m, e, b, blk := p.m, p.e, p.m.b, &p.m.blocks[i]
	T, d, H, D, I := p.ntok, m.cfg.Hidden, m.cfg.Heads, m.cfg.HeadDim(), m.cfg.Intermediate
	pre := blockPrefix(m.cfg, i)

	// MLP branch.
	dg := e.alloc(T, I)
	p.linBwd(i, gpt2MLPProj, s.g, s.xaMProj, dout, dg)
	e.do(pre+"mlp gelu backward", func() error { return b.GELUBackward(s.f, dg, dg) })
	da2 := e.alloc(T, d)
	p.linBwd(i, gpt2FC, s.a2, s.xaFC, dg, da2)
	e.free(dg)
	dx2 := e.alloc(T, d)
	e.do(pre+"ln_2 backward", func() error {
		if err := b.LayerNormBackward(s.x2, blk.norm2, s.mean2, s.rstd2, da2, dx2, p.gb(blk.norm2), p.gb(blk.norm2b)); err != nil {
			return err
		}
		return b.Add(dx2, dout, dx2)
	})
	e.free(da2)

	// Attention branch.
	do := e.alloc(T, H, D)
	p.linBwd(i, gpt2AttnProj, e.view(s.o, T, d), s.xaProj, dx2, e.view(do, T, d))
	dq, dk, dv := e.alloc(T, H, D), e.alloc(T, H, D), e.alloc(T, H, D)
	e.do(pre+"attn backward", func() error {
		return b.AttentionBackward(p.attn(), s.q, s.k, s.v, s.o, s.lse, do, dq, dk, dv)
	})
	e.free(do)
	dqkv := e.alloc(T, 3*d)
	dq2, dk2, dv2 := e.view(dq, T, d), e.view(dk, T, d), e.view(dv, T, d)
	e.do(pre+"attn merge", func() error {
		if err := b.CopyColumns(dqkv, 0, dq2, 0, d); err != nil {
			return err
		}
		if err := b.CopyColumns(dqkv, d, dk2, 0, d); err != nil {
			return err
		}
		return b.CopyColumns(dqkv, 2*d, dv2, 0, d)
	})
	e.free(dq, dk, dv)
	var da1 *nn.Tensor
	if dx != nil {
		da1 = e.alloc(T, d)
	}
	p.linBwd(i, gpt2Attn, s.a1, s.xaAttn, dqkv, da1)
	e.free(dqkv)
	if dx != nil {
		e.do(pre+"ln_1 backward", func() error {
			if err := b.LayerNormBackward(x, blk.norm1, s.mean1, s.rstd1, da1, dx, p.gb(blk.norm1), p.gb(blk.norm1b)); err != nil {
				return err
			}
			return b.Add(dx, dx2, dx)
		})
	}
	e.free(da1, dx2)
}
