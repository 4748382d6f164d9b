package perk

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
)

// OuterConfig configures the outer (meta-training) optimiser: AdamW with a
// linear warmup and cosine decay, global-norm clipping and gradient
// accumulation over examples.
type OuterConfig struct {
	// LR is the peak learning rate of the LoRA initialisation, the
	// weighting network and (with TrainBase) the base weights.
	LR float64
	// LRForLRs is the peak learning rate of the learned inner learning
	// rates; 0 means LR.
	LRForLRs float64
	// Beta1, Beta2 and Eps are AdamW's.
	Beta1, Beta2, Eps float64
	// WeightDecay is the decoupled decay of matrices (LoRA, ω's weights,
	// base matrices); biases, norms and learning rates are not decayed.
	WeightDecay float64
	// Steps is the total number of optimiser steps (for the schedule).
	Steps int
	// WarmupFrac is the fraction of Steps spent warming up linearly.
	WarmupFrac float64
	// ClipNorm is the global gradient-norm limit; 0 disables clipping.
	ClipNorm float64
	// Accum is the number of examples whose meta-gradients are averaged
	// per optimiser step (0 means 1).
	Accum int
}

// DefaultOuterConfig returns the paper's outer optimiser: AdamW lr 1e-5,
// β (0.9, 0.95), ε 1e-8, weight decay 0.01, 3% warmup then cosine, clipping
// at 1.0, one example per step.
func DefaultOuterConfig(steps int) OuterConfig {
	return OuterConfig{LR: 1e-5, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.01, Steps: steps, WarmupFrac: 0.03, ClipNorm: 1, Accum: 1}
}

// Validate checks the configuration.
func (c OuterConfig) Validate() error {
	switch {
	case !(c.LR >= 0) || math.IsInf(c.LR, 0) || !(c.LRForLRs >= 0) || math.IsInf(c.LRForLRs, 0):
		return fmt.Errorf("outer optimiser: learning rates %v, %v must be finite and ≥ 0", c.LR, c.LRForLRs)
	case !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("outer optimiser: betas (%v, %v) must lie in [0,1)", c.Beta1, c.Beta2)
	case !(c.Eps >= 0) || math.IsInf(c.Eps, 0) || math.IsNaN(c.WeightDecay) || math.IsInf(c.WeightDecay, 0):
		return fmt.Errorf("outer optimiser: epsilon %v and weight decay %v must be finite", c.Eps, c.WeightDecay)
	case c.Steps < 1:
		return fmt.Errorf("outer optimiser: %d steps, want ≥ 1", c.Steps)
	case !(c.WarmupFrac >= 0 && c.WarmupFrac <= 1):
		return fmt.Errorf("outer optimiser: warmup fraction %v outside [0,1]", c.WarmupFrac)
	case !(c.ClipNorm >= 0) || math.IsInf(c.ClipNorm, 0):
		return fmt.Errorf("outer optimiser: clip norm %v must be finite and ≥ 0", c.ClipNorm)
	case c.Accum < 0:
		return fmt.Errorf("outer optimiser: accumulation %d must be ≥ 1", c.Accum)
	}
	return nil
}

// WarmupSteps is ⌈WarmupFrac·Steps⌉.
func (c OuterConfig) WarmupSteps() int { return int(math.Ceil(c.WarmupFrac * float64(c.Steps))) }

// Schedule returns the learning-rate multiplier of optimiser step s
// (0-based), as transformers' cosine schedule with warmup: s/W during the
// W warmup steps, then ½(1+cos(π·(s−W)/(Steps−W))).
func (c OuterConfig) Schedule(s int) float64 {
	w := c.WarmupSteps()
	if s < w {
		return float64(s) / float64(max(1, w))
	}
	prog := float64(s-w) / float64(max(1, c.Steps-w))
	return math.Max(0, 0.5*(1+math.Cos(math.Pi*math.Min(prog, 1))))
}

// Trainer meta-trains Params with an Engine: per optimiser step it
// averages the meta-gradients of Accum examples, clips their global norm,
// and applies AdamW to the LoRA initialisation, the learned learning
// rates, the weighting network and (Engine.TrainBase) the base weights.
// Its whole state — parameters, moments, step, data position, RNG — is
// saved by SaveCheckpoint and restored by LoadCheckpoint, so a resumed run
// continues bit for bit.
type Trainer struct {
	// Engine computes meta-gradients.
	Engine *Engine
	// Params are trained in place.
	Params *Params
	// Outer configures the optimiser.
	Outer OuterConfig
	// Step counts the optimiser steps taken.
	Step int
	// Seen counts the examples consumed (the data position).
	Seen int
	// Seed keys the per-epoch data order.
	Seed uint64

	orderEpoch       int
	orderCache       []int
	pcg              *rand.PCG
	rng              *rand.Rand
	mInit, vInit     *model.Adapter
	mBase, vBase     *model.ParamSet
	mLR, vLR         *LearnedLRs
	mW, vW           *Weighting
	initDecay, baseD []bool
}

// NewTrainer starts meta-training p with zero optimiser moments; seed keys
// the data order, the document shuffling and the dropout masks.
func NewTrainer(e *Engine, p *Params, cfg OuterConfig, seed uint64) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if e == nil || e.Model == nil || p == nil || p.Init == nil || p.LRs == nil {
		return nil, fmt.Errorf("trainer: incomplete engine or parameters")
	}
	t := &Trainer{Engine: e, Params: p, Outer: cfg, Seed: seed, pcg: rand.NewPCG(seed, 0x7ea1_2e55)}
	t.rng = rand.New(t.pcg)
	var err error
	if t.mInit, err = p.Init.ZerosLike(); err != nil {
		return nil, err
	}
	if t.vInit, err = p.Init.ZerosLike(); err != nil {
		return nil, err
	}
	t.mLR, t.vLR = p.LRs.ZerosLike(), p.LRs.ZerosLike()
	if p.Weighting != nil {
		t.mW, t.vW = p.Weighting.ZerosLike(), p.Weighting.ZerosLike()
	}
	if e.TrainBase {
		b := e.Model.Backend()
		if t.mBase, err = e.Model.Params().ZerosLike(b); err != nil {
			return nil, err
		}
		if t.vBase, err = e.Model.Params().ZerosLike(b); err != nil {
			return nil, err
		}
		for _, prm := range e.Model.Params().Params() {
			t.baseD = append(t.baseD, prm.Value.Rank() >= 2)
		}
	}
	return t, nil
}

// StepReport summarises one optimiser step.
type StepReport struct {
	// Step is the number of optimiser steps taken after this one.
	Step int
	// LR is the scheduled learning rate used.
	LR float64
	// OuterLoss is the mean L_out(φ_T) over the step's examples.
	OuterLoss float64
	// InnerFirst and InnerLast are the mean inner losses at φ₀ and φ_{T−1}.
	InnerFirst, InnerLast float64
	// GradNorm is the global norm of the averaged meta-gradient before
	// clipping.
	GradNorm float64
	// PeakBytes is the largest tracked meta-step memory of the step.
	PeakBytes int64
}

// Dataset is a list of records with the encoder that turns them into
// examples.
type Dataset struct {
	// Records are the problems.
	Records []Record
	// Encoder tokenizes them.
	Encoder *Encoder
	// ShuffleDocs numbers the documents of every example by a random
	// permutation (drawn from the trainer's RNG) instead of in order.
	ShuffleDocs bool
}

// order returns the example order of an epoch: a permutation keyed by the
// trainer's seed and the epoch, so it is a function of the data position.
func (t *Trainer) order(epoch, n int) []int {
	if t.orderCache == nil || t.orderEpoch != epoch || len(t.orderCache) != n {
		t.orderCache = rand.New(rand.NewPCG(t.Seed, uint64(epoch)+0x0de_5eed)).Perm(n)
		t.orderEpoch = epoch
	}
	return t.orderCache
}

// NextExamples encodes the next n examples of the data stream (epoch after
// epoch, each in its own shuffled order) and advances the data position.
func (t *Trainer) NextExamples(ds *Dataset, n int) ([]*Example, error) {
	if ds == nil || len(ds.Records) == 0 || ds.Encoder == nil {
		return nil, fmt.Errorf("trainer: empty dataset")
	}
	var out []*Example
	N := len(ds.Records)
	for k := 0; k < n; k++ {
		epoch, i := t.Seen/N, t.Seen%N
		rec := ds.Records[t.order(epoch, N)[i]]
		var ids []int
		if ds.ShuffleDocs {
			ids = t.rng.Perm(len(rec.Context))
		}
		ex, err := ds.Encoder.Encode(rec, ids)
		if err != nil {
			return nil, err
		}
		out = append(out, ex)
		t.Seen++
	}
	return out, nil
}

// TrainStep takes one optimiser step on the meta-gradients of exs (their
// mean), which must hold Outer.Accum examples (or at least one).
func (t *Trainer) TrainStep(exs []*Example) (StepReport, error) {
	if len(exs) == 0 {
		return StepReport{}, fmt.Errorf("trainer: no examples")
	}
	e, p := t.Engine, t.Params
	b := e.Model.Backend()
	rep := StepReport{}
	var acc *MetaGrad
	// The meta-gradients live on the backend: each one is released once
	// it is added in, and the sum once it is applied.
	defer func() { acc.Release(b) }()
	scale := 1 / float64(len(exs))
	for _, ex := range exs {
		g, err := e.MetaGradient(p, ex, t.rng.Uint64())
		if err != nil {
			return rep, fmt.Errorf("step %d: %w", t.Step+1, err)
		}
		rep.OuterLoss += g.OuterLoss * scale
		rep.InnerFirst += g.InnerLosses[0] * scale
		rep.InnerLast += g.InnerLosses[len(g.InnerLosses)-1] * scale
		rep.PeakBytes = max(rep.PeakBytes, g.Mem.PeakBytes)
		if acc == nil {
			acc = g
			continue
		}
		err = addGrad(b, acc, g)
		g.Release(b)
		if err != nil {
			return rep, err
		}
	}
	if len(exs) > 1 {
		if err := scaleGrad(b, acc, scale); err != nil {
			return rep, err
		}
	}
	norm, err := gradNorm(b, acc)
	if err != nil {
		return rep, err
	}
	rep.GradNorm = norm
	if c := t.Outer.ClipNorm; c > 0 {
		// torch.nn.utils.clip_grad_norm_: scale by min(1, c/(norm+1e-6)).
		if f := c / (norm + 1e-6); f < 1 {
			if err := scaleGrad(b, acc, f); err != nil {
				return rep, err
			}
		}
	}
	rep.LR = t.Outer.LR * t.Outer.Schedule(t.Step)
	lrLR := t.Outer.LRForLRs
	if lrLR == 0 {
		lrLR = t.Outer.LR
	}
	lrLR *= t.Outer.Schedule(t.Step)
	if err := t.apply(acc, rep.LR, lrLR); err != nil {
		return rep, fmt.Errorf("step %d: %w", t.Step+1, err)
	}
	t.Step++
	rep.Step = t.Step
	return rep, nil
}

// apply takes the AdamW step with learning rate lr (lrLR for the inner
// learning rates).
func (t *Trainer) apply(g *MetaGrad, lr, lrLR float64) error {
	o := t.Outer
	step := t.Step + 1
	b := t.Engine.Model.Backend()
	p := t.Params
	opt := nn.AdamW{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay}
	ps, gs, ms, vs := tensors(p.Init), tensors(g.Init), tensors(t.mInit), tensors(t.vInit)
	lrs := make([]float64, len(ps))
	for i := range lrs {
		lrs[i] = lr
	}
	if err := b.AdamWStep(opt, step, lrs, ps, gs, ms, vs); err != nil {
		return fmt.Errorf("outer AdamW (LoRA): %w", err)
	}
	if g.Base != nil && t.mBase != nil {
		for _, decay := range []bool{true, false} {
			var pp, gg, mm, vv []*nn.Tensor
			for i, prm := range t.Engine.Model.Params().Tensors() {
				if t.baseD[i] == decay {
					pp = append(pp, prm)
					gg = append(gg, g.Base.Tensors()[i])
					mm = append(mm, t.mBase.Tensors()[i])
					vv = append(vv, t.vBase.Tensors()[i])
				}
			}
			oo := opt
			if !decay {
				oo.WeightDecay = 0
			}
			l := make([]float64, len(pp))
			for i := range l {
				l[i] = lr
			}
			if err := b.AdamWStep(oo, step, l, pp, gg, mm, vv); err != nil {
				return fmt.Errorf("outer AdamW (base): %w", err)
			}
		}
	}
	hostAdam := func(par, grad, m, v []NamedSlice, lr float64) {
		for i := range par {
			wd := o.WeightDecay
			if par[i].NoDecay {
				wd = 0
			}
			adamwHost(o, step, lr, wd, par[i].Data, grad[i].Data, m[i].Data, v[i].Data)
		}
	}
	hostAdam(p.LRs.Tensors(), g.LRs.Tensors(), t.mLR.Tensors(), t.vLR.Tensors(), lrLR)
	if p.Weighting != nil {
		hostAdam(p.Weighting.Tensors(), g.Weighting.Tensors(), t.mW.Tensors(), t.vW.Tensors(), lr)
	}
	return nil
}

// adamwHost is torch's AdamW step on host float64 slices (the same
// arithmetic as nn/cpu's AdamWStep).
func adamwHost(o OuterConfig, t int, lr, wd float64, p, g, m, v []float64) {
	bc1 := 1 - math.Pow(o.Beta1, float64(t))
	bc2s := math.Sqrt(1 - math.Pow(o.Beta2, float64(t)))
	decay := 1 - lr*wd
	for e := range p {
		m[e] = o.Beta1*m[e] + (1-o.Beta1)*g[e]
		v[e] = o.Beta2*v[e] + (1-o.Beta2)*g[e]*g[e]
		p[e] *= decay
		if v[e] > 0 {
			p[e] -= lr / bc1 * m[e] / (math.Sqrt(v[e])/bc2s + o.Eps)
		}
	}
}

// hostGroups lists a meta-gradient's host tensors.
func hostGroups(g *MetaGrad) []NamedSlice {
	out := g.LRs.Tensors()
	if g.Weighting != nil {
		out = append(out, g.Weighting.Tensors()...)
	}
	return out
}

func addGrad(b nn.Backend, acc, g *MetaGrad) error {
	as, gs := tensors(acc.Init), tensors(g.Init)
	for i := range as {
		if err := b.Axpy(1, gs[i], as[i]); err != nil {
			return err
		}
	}
	if acc.Base != nil && g.Base != nil {
		as, gs := acc.Base.Tensors(), g.Base.Tensors()
		for i := range as {
			if err := b.Axpy(1, gs[i], as[i]); err != nil {
				return err
			}
		}
	}
	ah, gh := hostGroups(acc), hostGroups(g)
	for i := range ah {
		for k := range ah[i].Data {
			ah[i].Data[k] += gh[i].Data[k]
		}
	}
	return nil
}

func scaleGrad(b nn.Backend, g *MetaGrad, f float64) error {
	ts := tensors(g.Init)
	if g.Base != nil {
		ts = append(ts, g.Base.Tensors()...)
	}
	for _, x := range ts {
		if err := b.Scale(f, x); err != nil {
			return err
		}
	}
	for _, h := range hostGroups(g) {
		for k := range h.Data {
			h.Data[k] *= f
		}
	}
	return nil
}

func gradNorm(b nn.Backend, g *MetaGrad) (float64, error) {
	ts := tensors(g.Init)
	if g.Base != nil {
		ts = append(ts, g.Base.Tensors()...)
	}
	ss, err := b.SumSquares(ts)
	if err != nil {
		return 0, err
	}
	for _, h := range hostGroups(g) {
		for _, v := range h.Data {
			ss += v * v
		}
	}
	return math.Sqrt(ss), nil
}
