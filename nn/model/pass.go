package model

import (
	"fmt"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// Policy is an activation checkpointing policy.
type Policy uint8

const (
	// PolicyNone keeps every block's internal activations from forward
	// until backward.
	PolicyNone Policy = iota
	// PolicyBlocks keeps only each block's input (the residual stream) and
	// recomputes the block's internals during backward.
	PolicyBlocks
)

// String names the policy as ParsePolicy accepts it.
func (p Policy) String() string {
	switch p {
	case PolicyNone:
		return "none"
	case PolicyBlocks:
		return "blocks"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// ParsePolicy parses "none" or "blocks".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "none":
		return PolicyNone, nil
	case "blocks":
		return PolicyBlocks, nil
	}
	return 0, fmt.Errorf("unknown checkpoint policy %q (want none or blocks)", s)
}

// Options configures a forward pass.
type Options struct {
	// Adapter is the LoRA adapter to apply, or nil for the base model.
	Adapter *Adapter
	// Policy is the activation checkpointing policy.
	Policy Policy
	// Train enables the adapter's LoRA dropout; the mask of each module is
	// drawn from Philox keyed by (Seed, Step, the module's index in the
	// adapter), so backward and recomputation see the same mask.
	Train bool
	// Seed and Step key the dropout masks (Train only).
	Seed uint64
	Step uint32
}

// Targets are the labels of a pass's loss,
// loss = Σ_t w_t·CE_t / Norm over tokens whose label is not nn.IgnoreIndex.
type Targets struct {
	// Labels holds one target id per token (see Batch.CausalLabels).
	Labels []int32
	// Weights [T] holds per-token weights on the model's backend, in its
	// dtype; nil means all ones.
	Weights *nn.Tensor
	// Norm divides the weighted sum; 0 means the number of labelled
	// tokens (1 if there are none).
	Norm float64
	// Chunk is the LM-head vocabulary chunk (0: the backend's default).
	Chunk int
}

// Grads says what Backward computes. Parameter gradients accumulate (+=)
// into the given tensors, so zero them before a fresh pass; nil entries are
// skipped.
type Grads struct {
	// LoRA receives dL/dA and dL/dB; it must have the layout of the pass's
	// adapter (Adapter.ZerosLike).
	LoRA *Adapter
	// Base receives the base-weight gradients (full training); it must
	// have the layout of Model.Params (Model.NewGrads).
	Base *ParamSet
	// DHiddenIn [T,d], if set, is an extra cotangent on the final hidden
	// states (from a consumer of Pass.Hidden other than the loss).
	DHiddenIn *nn.Tensor
	// DHidden [T,d], if set, receives the total cotangent of the final
	// hidden states (overwritten).
	DHidden *nn.Tensor
	// DWeights [T], if set, receives dL/dw_t = dLoss·CE_t/Norm
	// (overwritten); it needs a Loss.
	DWeights *nn.Tensor
}

// MemStats reports the bytes of activation tensors a pass held: every
// tensor it allocated on the backend for activations, their gradients and
// temporaries (parameters and parameter gradients excluded).
type MemStats struct {
	// PeakBytes is the most held at once since Forward began.
	PeakBytes int64
	// LiveBytes is what the pass holds now.
	LiveBytes int64
}

// exec runs backend ops, keeps the first error and tracks activation bytes.
// After an error every op is skipped, so nil tensors never reach the backend.
type exec struct {
	b          nn.Backend
	dt         runtime.DType
	err        error
	live, peak int64
}

func (e *exec) alloc(shape ...int) *nn.Tensor {
	if e.err != nil {
		return nil
	}
	t, err := e.b.Alloc(e.dt, shape...)
	if err != nil {
		e.err = fmt.Errorf("allocating activation %v: %w", shape, err)
		return nil
	}
	e.live += int64(t.Numel() * e.dt.Size())
	e.peak = max(e.peak, e.live)
	return t
}

// free releases tensors allocated by alloc (never views of them).
func (e *exec) free(ts ...*nn.Tensor) {
	for _, t := range ts {
		if t == nil {
			continue
		}
		e.live -= int64(t.Numel() * e.dt.Size())
		if err := e.b.Release(t); err != nil && e.err == nil {
			e.err = fmt.Errorf("releasing activation %v: %w", t, err)
		}
	}
}

func (e *exec) do(what string, f func() error) {
	if e.err != nil {
		return
	}
	if err := f(); err != nil {
		e.err = fmt.Errorf("%s: %w", what, err)
	}
}

// view reshapes t (nil after an error).
func (e *exec) view(t *nn.Tensor, shape ...int) *nn.Tensor {
	if e.err != nil || t == nil {
		return nil
	}
	v, err := t.Reshape(shape...)
	if err != nil {
		e.err = err
		return nil
	}
	return v
}

// saved is a block's activations kept for backward.
type saved interface {
	tensors() []*nn.Tensor
}

// Pass is one forward pass of a Model over a Batch, holding what backward
// needs. Use it from one goroutine. Loss and Logits may be called after
// Forward; Backward once; Release frees what remains.
type Pass struct {
	m     *Model
	batch Batch
	cu    []int32
	pos   []int32
	opts  Options
	e     *exec
	ntok  int // tokens in the batch

	lins    [][]nn.LoRALinear // per block, per module: the op's layer
	loraIdx [][]int           // adapter module index, −1 when not adapted

	xs    []*nn.Tensor // residual stream: xs[i] enters block i, xs[L] the final norm
	saves []saved      // per block (nil under PolicyBlocks)

	hidden       *nn.Tensor // final hidden states [T,d]
	fmean, frstd *nn.Tensor // final norm statistics

	loss *lossState // the last Loss, nil if none

	// Backward state.
	gLoRA *Adapter
	gBase map[*nn.Tensor]*nn.Tensor
	done  bool
}

// Forward runs the model over a packed batch and returns the pass, whose
// Hidden holds the final (normalised) hidden states [T, Hidden]. The pass
// reads the model's and the adapter's tensors again during Backward (and
// recomputes blocks from them under PolicyBlocks), so neither may change
// until Backward returns.
func (m *Model) Forward(batch Batch, opts Options) (*Pass, error) {
	if err := batch.Validate(); err != nil {
		return nil, err
	}
	for i, id := range batch.IDs {
		if id < 0 || int(id) >= m.cfg.Vocab {
			return nil, fmt.Errorf("batch: token %d has id %d outside the vocabulary [0,%d)", i, id, m.cfg.Vocab)
		}
	}
	if m.cfg.ModelType == GPT2 && batch.MaxSegment() > m.cfg.MaxPositions {
		return nil, fmt.Errorf("batch: a segment of %d tokens exceeds GPT-2's %d positions", batch.MaxSegment(), m.cfg.MaxPositions)
	}
	if opts.Policy != PolicyNone && opts.Policy != PolicyBlocks {
		return nil, fmt.Errorf("forward: unknown checkpoint policy %v", opts.Policy)
	}
	ad := opts.Adapter
	if ad != nil {
		if err := ad.checkFor(m); err != nil {
			return nil, fmt.Errorf("forward: %w", err)
		}
	}
	p := &Pass{m: m, batch: batch, cu: batch.cu(), pos: batch.Positions(), opts: opts,
		e: &exec{b: m.b, dt: m.dt}, ntok: batch.Len()}
	L := len(m.blocks)
	p.lins = make([][]nn.LoRALinear, L)
	p.loraIdx = make([][]int, L)
	for i, blk := range m.blocks {
		for _, l := range blk.lin {
			ll := nn.LoRALinear{W: l.w, WInOut: l.inOut, Bias: l.bias}
			idx := -1
			if ad != nil {
				if j, ok := ad.index[l.path]; ok {
					idx = j
					ll.A, ll.B, ll.Scale = ad.mods[j].a, ad.mods[j].b, ad.cfg.Scale()
					if opts.Train && ad.cfg.Dropout > 0 {
						ll.Dropout = nn.Dropout{P: ad.cfg.Dropout, Seed: opts.Seed, Step: opts.Step, TensorID: uint32(j)}
					}
				}
			}
			p.lins[i] = append(p.lins[i], ll)
			p.loraIdx[i] = append(p.loraIdx[i], idx)
		}
	}

	e, b, T, d := p.e, m.b, p.ntok, m.cfg.Hidden
	p.xs = make([]*nn.Tensor, L+1)
	p.saves = make([]saved, L)
	p.xs[0] = e.alloc(T, d)
	e.do("embedding forward", func() error {
		if m.cfg.ModelType == GPT2 {
			return b.EmbeddingForward(batch.IDs, m.wte, p.pos, m.wpe, p.xs[0])
		}
		return b.EmbeddingForward(batch.IDs, m.wte, nil, nil, p.xs[0])
	})
	for i := range m.blocks {
		p.xs[i+1] = e.alloc(T, d)
		s := p.blockForward(i, p.xs[i], p.xs[i+1])
		if opts.Policy == PolicyBlocks {
			if s != nil {
				e.free(s.tensors()...)
			}
		} else {
			p.saves[i] = s
		}
	}
	p.hidden = e.alloc(T, d)
	p.frstd = e.alloc(T)
	if m.cfg.ModelType == GPT2 {
		p.fmean = e.alloc(T)
		e.do("final norm forward", func() error {
			return b.LayerNormForward(p.xs[L], m.normF, m.normFb, m.cfg.NormEps, p.hidden, p.fmean, p.frstd)
		})
	} else {
		e.do("final norm forward", func() error {
			return b.RMSNormForward(p.xs[L], m.normF, m.cfg.NormEps, p.hidden, p.frstd)
		})
	}
	if e.err != nil {
		err := e.err
		p.Release()
		return nil, fmt.Errorf("%s forward: %w", m.cfg.ModelType, err)
	}
	return p, nil
}

func (p *Pass) blockForward(i int, x, out *nn.Tensor) saved {
	if p.m.cfg.ModelType == GPT2 {
		return p.gpt2Forward(i, x, out)
	}
	return p.qwenForward(i, x, out)
}

func (p *Pass) blockBackward(i int, x *nn.Tensor, s saved, dout, dx *nn.Tensor) {
	if p.m.cfg.ModelType == GPT2 {
		p.gpt2Backward(i, x, s.(*gpt2Saved), dout, dx)
	} else {
		p.qwenBackward(i, x, s.(*qwenSaved), dout, dx)
	}
}

// linFwd runs module j of block i: y = layer(x); it returns the saved
// xa = dropout(x)·Aᵀ when the module is adapted.
func (p *Pass) linFwd(i, j int, x, y *nn.Tensor) *nn.Tensor {
	l := p.lins[i][j]
	var xa *nn.Tensor
	if l.A != nil {
		xa = p.e.alloc(p.ntok, l.A.Dim(0))
	}
	p.e.do(p.m.blocks[i].lin[j].path, func() error { return p.m.b.LoRALinearForward(l, x, y, xa) })
	return xa
}

// linBwd back-propagates dy through module j of block i: dx (may be nil) is
// overwritten, LoRA and base gradients accumulate where requested.
func (p *Pass) linBwd(i, j int, x, xa, dy, dx *nn.Tensor) {
	l := p.lins[i][j]
	g := nn.LoRAGrads{DX: dx}
	if k := p.loraIdx[i][j]; k >= 0 && p.gLoRA != nil {
		g.DA, g.DB = p.gLoRA.mods[k].a, p.gLoRA.mods[k].b
	}
	if p.gBase != nil {
		g.DW = p.gBase[l.W]
		if l.Bias != nil {
			g.DBias = p.gBase[l.Bias]
		}
	}
	if g.DX == nil && g.DA == nil && g.DB == nil && g.DW == nil && g.DBias == nil {
		return
	}
	p.e.do(p.m.blocks[i].lin[j].path+" backward", func() error { return p.m.b.LoRALinearBackward(l, x, xa, dy, g) })
}

// attn describes the pass's causal packed attention.
func (p *Pass) attn() nn.Attention { return nn.Attention{CuSeqlens: p.cu, Causal: true} }

// gb returns the base gradient of param t, or nil.
func (p *Pass) gb(t *nn.Tensor) *nn.Tensor {
	if p.gBase == nil || t == nil {
		return nil
	}
	return p.gBase[t]
}

// Hidden returns the final hidden states [T, Hidden] (owned by the pass,
// valid until Release).
func (p *Pass) Hidden() *nn.Tensor { return p.hidden }

// Batch returns the pass's batch.
func (p *Pass) Batch() Batch { return p.batch }

// Stats reports the pass's activation memory.
func (p *Pass) Stats() MemStats { return MemStats{PeakBytes: p.e.peak, LiveBytes: p.e.live} }

// lossState is what Loss keeps for Backward. When some labels are
// IgnoreIndex only the labelled rows of the hidden states (and weights) are
// gathered and sent through the LM head, so a loss over a few answer tokens
// costs a few rows of the vocabulary GEMM, not T.
type lossState struct {
	xe      nn.CrossEntropy // over the rows used
	rows    []int32         // the labelled rows when a subset, nil when all
	n       int             // rows used
	h       *nn.Tensor      // the rows' hidden states (Hidden itself when all)
	owned   []*nn.Tensor    // gathered tensors to free
	ce, lse *nn.Tensor
}

func (p *Pass) freeLoss() {
	if p.loss != nil {
		p.e.free(p.loss.owned...)
		p.e.free(p.loss.ce, p.loss.lse)
		p.loss = nil
	}
}

// Loss computes the weighted cross-entropy of the LM head over the pass's
// hidden states with the backend's fused op (no [T,V] logits), and keeps
// what Backward needs. Calling it again replaces the previous targets.
func (p *Pass) Loss(t Targets) (float64, error) {
	if p.done || p.hidden == nil {
		return 0, fmt.Errorf("loss: the pass was already back-propagated or released")
	}
	if len(t.Labels) != p.ntok {
		return 0, fmt.Errorf("loss: %d labels for %d tokens", len(t.Labels), p.ntok)
	}
	if t.Weights != nil && (t.Weights.Rank() != 1 || t.Weights.Dim(0) != p.ntok || t.Weights.DType() != p.m.dt) {
		return 0, fmt.Errorf("loss: weights are %v, want [%d] %v", t.Weights, p.ntok, p.m.dt)
	}
	p.freeLoss()
	var rows []int32
	for i, l := range t.Labels {
		if l != nn.IgnoreIndex {
			rows = append(rows, int32(i))
		}
	}
	if t.Norm == 0 {
		t.Norm = float64(max(len(rows), 1))
	}
	ls := &lossState{n: len(rows), h: p.hidden,
		xe: nn.CrossEntropy{Labels: t.Labels, Weights: t.Weights, Norm: t.Norm, Chunk: t.Chunk}}
	if ls.n == 0 {
		p.loss = ls
		return 0, nil
	}
	e, b, n, d := p.e, p.m.b, ls.n, p.m.cfg.Hidden
	if n < p.ntok {
		// Gather the labelled rows with the embedding op (a row gather).
		ls.rows = rows
		ls.h = e.alloc(n, d)
		ls.owned = append(ls.owned, ls.h)
		ls.xe.Labels = make([]int32, n)
		for k, r := range rows {
			ls.xe.Labels[k] = t.Labels[r]
		}
		e.do("loss row gather", func() error { return b.EmbeddingForward(rows, p.hidden, nil, nil, ls.h) })
		if t.Weights != nil {
			w := e.alloc(n)
			ls.owned = append(ls.owned, w)
			ls.xe.Weights = w
			wt, w2 := e.view(t.Weights, p.ntok, 1), e.view(w, n, 1)
			e.do("loss weight gather", func() error { return b.EmbeddingForward(rows, wt, nil, nil, w2) })
		}
	}
	ls.ce, ls.lse = e.alloc(n), e.alloc(n)
	var loss float64
	e.do("loss", func() error {
		var err error
		loss, err = b.CrossEntropyForward(ls.xe, ls.h, p.m.head, ls.ce, ls.lse)
		return err
	})
	p.loss = ls
	if err := e.err; err != nil {
		p.freeLoss()
		e.err = nil
		return 0, err
	}
	return loss, nil
}

// Logits returns the LM-head logits of tokens [lo,hi) as a host tensor
// [hi−lo, Vocab]. It materialises all T×V logits on the backend, so it is
// meant for tests and small vocabularies. Call it before Backward.
func (p *Pass) Logits(lo, hi int) (*nn.Tensor, error) {
	if p.done || p.hidden == nil {
		return nil, fmt.Errorf("logits: the pass was already back-propagated or released")
	}
	if lo < 0 || hi > p.ntok || lo > hi {
		return nil, fmt.Errorf("logits: token range [%d,%d) outside [0,%d)", lo, hi, p.ntok)
	}
	b, V := p.m.b, p.m.cfg.Vocab
	full, err := b.Alloc(p.m.dt, p.ntok, V)
	if err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	defer b.Release(full)
	if err := b.MatMul(false, true, 1, p.hidden, p.m.head, 0, full); err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	host, err := b.ToHost(full)
	if err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	if v, err := host.F64(); err == nil {
		return nn.FromF64(append([]float64(nil), v[lo*V:hi*V]...), hi-lo, V)
	}
	v, err := host.F32()
	if err != nil {
		return nil, fmt.Errorf("logits: %w", err)
	}
	return nn.FromF32(append([]float32(nil), v[lo*V:hi*V]...), hi-lo, V)
}

// Backward propagates the cotangent dLoss of the last Loss (pass 0 when no
// Loss was computed) and g.DHiddenIn back through the model, accumulating
// the gradients g asks for. Block internals are freed as backward passes
// them (recomputed first under PolicyBlocks); Hidden stays valid.
func (p *Pass) Backward(dLoss float64, g Grads) error {
	if p.done || p.hidden == nil {
		return fmt.Errorf("backward: the pass was already back-propagated or released")
	}
	if err := p.checkGrads(dLoss, g); err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	p.done = true
	m, e, b, T, d := p.m, p.e, p.m.b, p.ntok, p.m.cfg.Hidden
	p.gLoRA = g.LoRA
	if g.Base != nil {
		p.gBase = make(map[*nn.Tensor]*nn.Tensor, g.Base.Len())
		for k, prm := range m.params.list {
			p.gBase[prm.Value] = g.Base.list[k].Value
		}
	}

	// Loss → dh (scattered back to all rows when only some were labelled).
	dh := e.alloc(T, d)
	if ls := p.loss; ls != nil && ls.n > 0 {
		dhRows, dwRows := dh, g.DWeights
		if ls.rows != nil {
			dhRows = e.alloc(ls.n, d)
			if g.DWeights != nil {
				dwRows = e.alloc(ls.n)
			}
		}
		e.do("loss backward", func() error {
			return b.CrossEntropyBackward(ls.xe, ls.h, m.head, ls.ce, ls.lse, dLoss, dhRows, p.gb(m.head), dwRows)
		})
		if ls.rows != nil {
			e.do("loss row scatter", func() error { return b.EmbeddingBackward(ls.rows, nil, dhRows, dh, nil) })
			if g.DWeights != nil {
				dw, dwr := e.view(g.DWeights, T, 1), e.view(dwRows, ls.n, 1)
				e.do("loss weight scatter", func() error {
					if err := b.Zero(dw); err != nil {
						return err
					}
					return b.EmbeddingBackward(ls.rows, nil, dwr, dw, nil)
				})
			}
			e.free(dhRows, dwRows)
		}
	} else if g.DWeights != nil {
		e.do("loss backward", func() error { return b.Zero(g.DWeights) })
	}
	p.freeLoss()
	if g.DHiddenIn != nil {
		e.do("hidden cotangent", func() error { return b.Axpy(1, g.DHiddenIn, dh) })
	}
	if g.DHidden != nil {
		e.do("hidden cotangent", func() error { return b.Copy(g.DHidden, dh) })
	}

	// Final norm.
	L := len(m.blocks)
	dx := e.alloc(T, d)
	e.do("final norm backward", func() error {
		if m.cfg.ModelType == GPT2 {
			return b.LayerNormBackward(p.xs[L], m.normF, p.fmean, p.frstd, dh, dx, p.gb(m.normF), p.gb(m.normFb))
		}
		return b.RMSNormBackward(p.xs[L], m.normF, p.frstd, dh, dx, p.gb(m.normF))
	})
	e.free(dh, p.fmean, p.frstd, p.xs[L])
	p.fmean, p.frstd, p.xs[L] = nil, nil, nil

	// Blocks, last to first. Block 0's input gradient is only needed for
	// the embedding gradients.
	for i := L - 1; i >= 0; i-- {
		s := p.saves[i]
		if s == nil && e.err == nil {
			tmp := e.alloc(T, d)
			s = p.blockForward(i, p.xs[i], tmp)
			e.free(tmp)
		}
		var dxi *nn.Tensor
		if i > 0 || p.gBase != nil {
			dxi = e.alloc(T, d)
		}
		if s != nil {
			p.blockBackward(i, p.xs[i], s, dx, dxi)
			e.free(s.tensors()...)
		}
		p.saves[i] = nil
		e.free(dx)
		dx = dxi
		if i > 0 {
			e.free(p.xs[i])
			p.xs[i] = nil
		}
	}
	if p.gBase != nil {
		e.do("embedding backward", func() error {
			if m.cfg.ModelType == GPT2 {
				return b.EmbeddingBackward(p.batch.IDs, p.pos, dx, p.gb(m.wte), p.gb(m.wpe))
			}
			return b.EmbeddingBackward(p.batch.IDs, nil, dx, p.gb(m.wte), nil)
		})
	}
	e.free(dx, p.xs[0])
	p.xs[0] = nil
	p.gLoRA, p.gBase = nil, nil
	if e.err != nil {
		return fmt.Errorf("%s backward: %w", m.cfg.ModelType, e.err)
	}
	return nil
}

// checkGrads validates Backward's arguments against the pass.
func (p *Pass) checkGrads(dLoss float64, g Grads) error {
	if dLoss != 0 && p.loss == nil {
		return fmt.Errorf("dLoss = %v but no Loss was computed", dLoss)
	}
	if g.DWeights != nil && p.loss == nil {
		return fmt.Errorf("DWeights needs a Loss")
	}
	T, d := p.ntok, p.m.cfg.Hidden
	for _, c := range []struct {
		name  string
		t     *nn.Tensor
		shape []int
	}{{"DHiddenIn", g.DHiddenIn, []int{T, d}}, {"DHidden", g.DHidden, []int{T, d}}, {"DWeights", g.DWeights, []int{T}}} {
		if c.t != nil && (!sameShape(c.t.Shape(), c.shape) || c.t.DType() != p.m.dt) {
			return fmt.Errorf("%s is %v, want shape %v dtype %v", c.name, c.t, c.shape, p.m.dt)
		}
	}
	if g.LoRA != nil {
		if p.opts.Adapter == nil {
			return fmt.Errorf("LoRA gradients requested but the pass ran without an adapter")
		}
		if err := p.opts.Adapter.sameLayout(g.LoRA); err != nil {
			return fmt.Errorf("LoRA gradients: %w", err)
		}
	}
	if g.Base != nil {
		if err := p.m.params.sameLayout(g.Base); err != nil {
			return fmt.Errorf("base gradients: %w", err)
		}
	}
	return nil
}

// Release frees every activation the pass still holds, Hidden included.
func (p *Pass) Release() {
	e := p.e
	err := e.err
	for _, s := range p.saves {
		if s != nil {
			e.free(s.tensors()...)
		}
	}
	e.free(p.xs...)
	p.freeLoss()
	e.free(p.hidden, p.fmean, p.frstd)
	p.saves, p.xs = nil, nil
	p.hidden, p.fmean, p.frstd = nil, nil, nil
	p.done = true
	e.err = err
}

// Logits runs the model on a packed batch and returns the logits of tokens
// [lo,hi) as a host tensor [hi−lo, Vocab] (see Pass.Logits), for comparing
// against reference implementations.
func (m *Model) Logits(batch Batch, adapter *Adapter, lo, hi int) (*nn.Tensor, error) {
	p, err := m.Forward(batch, Options{Adapter: adapter})
	if err != nil {
		return nil, err
	}
	defer p.Release()
	return p.Logits(lo, hi)
}
