package perk

import (
	"errors"
	"fmt"
	"io/fs"
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/runtime"
)

// Inner optimisers (InnerConfig.Optimizer).
const (
	// OptAdamW is torch.optim.AdamW with decoupled weight decay.
	OptAdamW = "adamw"
	// OptSGD is plain SGD with decoupled weight decay, no momentum.
	OptSGD = "sgd"
)

// InnerConfig configures the inner loop (test-time learning).
type InnerConfig struct {
	// Steps is the number of inner steps T.
	Steps int
	// UnrollStart is the first differentiated step: steps t < UnrollStart
	// are first-order (their gradients treated as constants in the
	// meta-gradient). 0 differentiates every step.
	UnrollStart int
	// Optimizer is OptAdamW or OptSGD.
	Optimizer string
	// Beta1, Beta2 and Eps are AdamW's moment decays and epsilon.
	Beta1, Beta2, Eps float64
	// WeightDecay is the decoupled decay λ: φ ← φ·(1−η·λ) − ….
	WeightDecay float64
	// Accum splits the segments into this many groups (torch.chunk
	// sizes: ⌈S/Accum⌉ segments per group) whose gradients are summed per
	// step; each group's loss is divided by the step's total number of
	// targets, so the gradient does not depend on Accum. 0 means 1.
	Accum int
}

// DefaultInnerConfig returns the paper's inner loop: 4 AdamW steps
// (β 0.9/0.95, ε 1e-8, λ 0.01), steps 0–1 first-order.
func DefaultInnerConfig() InnerConfig {
	return InnerConfig{Steps: 4, UnrollStart: 2, Optimizer: OptAdamW, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.01, Accum: 1}
}

// Validate checks the configuration.
func (c InnerConfig) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("inner loop: %d steps, want ≥ 1", c.Steps)
	case c.UnrollStart < 0:
		return fmt.Errorf("inner loop: unroll start %d must be ≥ 0", c.UnrollStart)
	case c.Accum < 0:
		return fmt.Errorf("inner loop: gradient accumulation %d must be ≥ 1", c.Accum)
	case math.IsNaN(c.WeightDecay) || math.IsInf(c.WeightDecay, 0):
		return fmt.Errorf("inner loop: weight decay %v is not finite", c.WeightDecay)
	}
	switch c.Optimizer {
	case OptAdamW:
		if !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1) {
			return fmt.Errorf("inner loop: AdamW betas (%v, %v) must lie in [0,1)", c.Beta1, c.Beta2)
		}
		if !(c.Eps >= 0) || math.IsInf(c.Eps, 0) {
			return fmt.Errorf("inner loop: AdamW epsilon %v must be finite and ≥ 0", c.Eps)
		}
	case OptSGD:
	default:
		return fmt.Errorf("inner loop: unknown optimiser %q (want %s or %s)", c.Optimizer, OptAdamW, OptSGD)
	}
	return nil
}

func (c InnerConfig) adamw() nn.AdamW {
	return nn.AdamW{Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.Eps, WeightDecay: c.WeightDecay}
}

// Engine runs the inner loop and computes meta-gradients for one model.
//
// The meta-gradient follows an adjoint sweep with step-level checkpointing.
// The forward sweep runs the T inner steps and keeps, per step, only the
// optimiser's state: (φ_t, m_t, v_t) for AdamW, (φ_t, g_t) for SGD — no
// activations survive a step. The reverse sweep starts from
// φ̄_T = ∇L_out(φ_T) and, for t = T−1 … 0, applies the optimiser step's VJP
// (the Backend's AdamWStepVJP / SGDStepVJP), which yields ḡ_t, η̄_t, the
// moment adjoints and the direct part of φ̄_t; for a differentiated step
// (t ≥ UnrollStart, and a SecondOrder mode that is enabled) it adds
// H_φφ(t)·ḡ_t to φ̄_t and the mixed term ∂/∂ω ⟨∇_φ L_in, ḡ_t⟩ to ω̄. For
// AdamW, g_t is recovered from the stored moments,
// g_t = (m_t − β1·m_{t−1})/(1−β1). Memory is O(T·|φ|) plus one
// forward/backward pass.
type Engine struct {
	// Model is the frozen base model.
	Model *model.Model
	// Inner configures the inner loop.
	Inner InnerConfig
	// SecondOrder supplies the second-order terms; nil means
	// FiniteDifference{} (the default step).
	SecondOrder SecondOrder
	// Policy is the activation checkpointing policy of every pass.
	Policy model.Policy
	// TrainBase also returns the gradient of the outer loss with respect
	// to the base weights at φ_T (first-order: the dependence of φ_T and
	// of the token weights on the base weights is ignored).
	TrainBase bool
	// Chunk is the LM-head vocabulary chunk (0: the backend's default).
	Chunk int
}

// MetaGrad is the meta-gradient of the outer loss of one example.
type MetaGrad struct {
	// Init is dL_out/dφ₀ in the adapter's layout (on the model's backend).
	Init *model.Adapter
	// LRs is dL_out/dη, laid out like Params.LRs.
	LRs *LearnedLRs
	// Weighting is dL_out/dω, or nil without a weighting network.
	Weighting *Weighting
	// Base is dL_out/dW at φ_T (Engine.TrainBase only), laid out like
	// Model.Params.
	Base *model.ParamSet
	// OuterLoss is L_out(φ_T).
	OuterLoss float64
	// InnerLosses[t] is L_in(φ_t), t = 0 … T−1.
	InnerLosses []float64
	// Mem reports the tracked memory of the meta-step.
	Mem MemReport
}

// Release frees the meta-gradient's tensors on backend b (the model's);
// a nil MetaGrad has none.
func (g *MetaGrad) Release(b nn.Backend) {
	if g == nil {
		return
	}
	for _, x := range tensors(g.Init) {
		_ = b.Release(x)
	}
	if g.Base != nil {
		for _, x := range g.Base.Tensors() {
			_ = b.Release(x)
		}
	}
}

// MemReport is the tracked memory of a meta-step: every tensor the engine
// allocated on the backend (optimiser state per step, adjoints, work
// buffers, per-token weights, gradients) plus the activation peak of the
// pass running at the time.
type MemReport struct {
	// PeakBytes is the most held at once.
	PeakBytes int64
	// StepStateBytes is what the forward sweep keeps per inner step.
	StepStateBytes int64
}

// memTracker counts engine-allocated bytes and the peak including the
// running pass's activations.
type memTracker struct{ live, peak int64 }

func (m *memTracker) add(n int64) { m.live += n; m.peak = max(m.peak, m.live) }
func (m *memTracker) sub(n int64) { m.live -= n }
func (m *memTracker) pass(peak int64) {
	m.peak = max(m.peak, m.live+peak)
}

// group is one gradient-accumulation group of segments.
type group struct {
	batch   model.Batch
	labels  []int32    // per row: the next token's id, or IgnoreIndex
	tgt     []int32    // per row: the global index of the target it predicts, or −1
	weights *nn.Tensor // per row (nil without weighting)
}

// run is one example's inner loop and meta-gradient.
type run struct {
	e       *Engine
	m       *model.Model
	b       nn.Backend
	dt      runtime.DType
	p       *Params
	ex      *Example
	groups  []group
	nt      int
	wc      *weightingCache
	mem     memTracker
	seed    uint64
	dropout bool
}

func adapterBytes(a *model.Adapter) int64 {
	return int64(a.Params().NumElements() * a.Params().Tensors()[0].DType().Size())
}

// zerosLike allocates a tracked zero adapter of a's layout.
func (r *run) zerosLike(a *model.Adapter) (*model.Adapter, error) {
	z, err := a.ZerosLike()
	if err != nil {
		return nil, err
	}
	r.mem.add(adapterBytes(z))
	return z, nil
}

// clone allocates a tracked copy of a.
func (r *run) clone(a *model.Adapter) (*model.Adapter, error) {
	c, err := a.Clone()
	if err != nil {
		return nil, err
	}
	r.mem.add(adapterBytes(c))
	return c, nil
}

// free releases an adapter allocated by zerosLike or clone.
func (r *run) free(a *model.Adapter) {
	if a == nil {
		return
	}
	r.mem.sub(adapterBytes(a))
	for _, t := range a.Params().Tensors() {
		_ = r.b.Release(t)
	}
}

func (r *run) allocT(n int) (*nn.Tensor, error) {
	t, err := r.b.Alloc(r.dt, n)
	if err != nil {
		return nil, err
	}
	r.mem.add(int64(n * r.dt.Size()))
	return t, nil
}

func (r *run) freeT(t *nn.Tensor) {
	if t != nil {
		r.mem.sub(int64(t.Numel() * r.dt.Size()))
		_ = r.b.Release(t)
	}
}

// check validates the engine, the parameters and the example together.
func (e *Engine) check(p *Params, ex *Example) error {
	if e.Model == nil {
		return fmt.Errorf("perk engine: no model")
	}
	if err := e.Inner.Validate(); err != nil {
		return err
	}
	if p == nil || p.Init == nil || p.LRs == nil {
		return fmt.Errorf("perk engine: incomplete meta-parameters")
	}
	if err := p.LRs.check(p.Init, e.Inner.Steps); err != nil {
		return err
	}
	if p.Weighting != nil {
		if err := p.Weighting.check(e.Model.Config().Hidden); err != nil {
			return err
		}
	}
	cfg := e.Model.Config()
	maxPos := 0
	if cfg.ModelType == model.GPT2 {
		maxPos = cfg.MaxPositions
	}
	if ex == nil {
		return fmt.Errorf("perk engine: nil example")
	}
	return ex.Validate(cfg.Vocab, maxPos)
}

// newRun prepares an example: accumulation groups, labels and (with a
// weighting network) the per-token weights from the base model's hidden
// states.
func (e *Engine) newRun(p *Params, ex *Example, seed uint64) (*run, error) {
	if err := e.check(p, ex); err != nil {
		return nil, err
	}
	r := &run{e: e, m: e.Model, b: e.Model.Backend(), dt: e.Model.DType(), p: p, ex: ex, seed: seed,
		dropout: p.Init.Config().Dropout > 0}
	S := ex.NumSegments()
	k := max(e.Inner.Accum, 1)
	chunk := (S + k - 1) / k
	cu := ex.Segments.CuSeqlens
	for s0 := 0; s0 < S; s0 += chunk {
		s1 := min(s0+chunk, S)
		lo, hi := cu[s0], cu[s1]
		g := group{batch: model.Batch{IDs: ex.Segments.IDs[lo:hi]}}
		for s := s0; s <= s1; s++ {
			g.batch.CuSeqlens = append(g.batch.CuSeqlens, cu[s]-lo)
		}
		g.labels = make([]int32, hi-lo)
		g.tgt = make([]int32, hi-lo)
		for s := s0; s < s1; s++ {
			for i := cu[s]; i < cu[s+1]; i++ {
				row := i - lo
				g.labels[row], g.tgt[row] = nn.IgnoreIndex, -1
				if pos := int(i + 1 - cu[s]); i+1 < cu[s+1] && pos >= ex.Prefix[s] {
					g.labels[row], g.tgt[row] = ex.Segments.IDs[i+1], int32(r.nt)
					r.nt++
				}
			}
		}
		r.groups = append(r.groups, g)
	}
	if p.Weighting != nil {
		if err := r.prepareWeights(); err != nil {
			r.release()
			return nil, err
		}
	}
	return r, nil
}

// prepareWeights runs the base model (no adapter) over the segments, takes
// the final hidden state at each target token's own position and evaluates
// the weighting network on them.
func (r *run) prepareWeights() error {
	d := r.m.Config().Hidden
	h := make([]float64, r.nt*d)
	for gi := range r.groups {
		g := &r.groups[gi]
		pass, err := r.m.Forward(g.batch, model.Options{Policy: r.e.Policy})
		if err != nil {
			return fmt.Errorf("weighting: base forward: %w", err)
		}
		r.mem.pass(pass.Stats().PeakBytes)
		host, err := r.b.ToHost(pass.Hidden())
		pass.Release()
		if err != nil {
			return fmt.Errorf("weighting: %w", err)
		}
		hv, err := hostF64(host)
		if err != nil {
			return fmt.Errorf("weighting: %w", err)
		}
		for row, j := range g.tgt {
			if j >= 0 {
				copy(h[int(j)*d:int(j+1)*d], hv[(row+1)*d:(row+2)*d])
			}
		}
	}
	wc, err := r.p.Weighting.forward(h, r.nt)
	if err != nil {
		return err
	}
	r.wc = wc
	for gi := range r.groups {
		g := &r.groups[gi]
		w := make([]float64, len(g.tgt))
		for row, j := range g.tgt {
			if j >= 0 {
				w[row] = wc.w[j]
			}
		}
		ht, err := nn.FromF64(w, len(w))
		if err != nil {
			return err
		}
		if g.weights, err = r.b.FromHost(ht, r.dt); err != nil {
			return fmt.Errorf("weighting: %w", err)
		}
		r.mem.add(int64(len(w) * r.dt.Size()))
	}
	return nil
}

// release frees the run's per-token weights.
func (r *run) release() {
	for gi := range r.groups {
		r.freeT(r.groups[gi].weights)
		r.groups[gi].weights = nil
	}
}

// hostF64 returns a host tensor's values as float64 (a copy for F32).
func hostF64(t *nn.Tensor) ([]float64, error) {
	if v, err := t.F64(); err == nil {
		return v, nil
	}
	v, err := t.F32()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

// stepObjective is the inner loss of one inner step (its dropout masks are
// keyed by the step), as seen by a SecondOrder mode.
type stepObjective struct {
	r    *run
	step int
}

// InnerObjective is the inner loss L_in(φ) = Σ_k w_k·CE_k(φ)/N of one
// example at one inner step, offered to SecondOrder modes.
type InnerObjective interface {
	// Backend is the model's backend.
	Backend() nn.Backend
	// DType is the model's precision.
	DType() runtime.DType
	// NumTargets is N, the number of target tokens.
	NumTargets() int
	// Gradient computes L_in(φ), accumulates ∇_φ L_in into grad and, when
	// dw is non-nil (length NumTargets), overwrites dw_k with
	// ∂L_in/∂w_k = CE_k(φ)/N. It runs one forward/backward per
	// accumulation group.
	Gradient(phi, grad *model.Adapter, dw []float64) (float64, error)
	// Scratch allocates a zero adapter of φ's layout (tracked by the
	// engine's memory report); Free releases it.
	Scratch() (*model.Adapter, error)
	// Free releases an adapter from Scratch.
	Free(a *model.Adapter)
}

// Backend implements InnerObjective.
func (o stepObjective) Backend() nn.Backend { return o.r.b }

// DType implements InnerObjective.
func (o stepObjective) DType() runtime.DType { return o.r.dt }

// NumTargets implements InnerObjective.
func (o stepObjective) NumTargets() int { return o.r.nt }

// Scratch implements InnerObjective.
func (o stepObjective) Scratch() (*model.Adapter, error) {
	return o.r.zerosLike(o.r.p.Init)
}

// Free implements InnerObjective.
func (o stepObjective) Free(a *model.Adapter) { o.r.free(a) }

// Gradient implements InnerObjective.
func (o stepObjective) Gradient(phi, grad *model.Adapter, dw []float64) (float64, error) {
	return o.r.gradient(phi, grad, dw, o.step)
}

// gradient is InnerObjective.Gradient at inner step t.
func (r *run) gradient(phi, grad *model.Adapter, dw []float64, t int) (float64, error) {
	if dw != nil && len(dw) != r.nt {
		return 0, fmt.Errorf("inner gradient: dw has %d entries for %d targets", len(dw), r.nt)
	}
	total := 0.0
	for gi := range r.groups {
		g := &r.groups[gi]
		opts := model.Options{Adapter: phi, Policy: r.e.Policy, Train: r.dropout, Seed: r.seed, Step: uint32(t)}
		pass, err := r.m.Forward(g.batch, opts)
		if err != nil {
			return 0, fmt.Errorf("inner step %d: %w", t, err)
		}
		loss, err := pass.Loss(model.Targets{Labels: g.labels, Weights: g.weights, Norm: float64(r.nt), Chunk: r.e.Chunk})
		if err != nil {
			pass.Release()
			return 0, fmt.Errorf("inner step %d: %w", t, err)
		}
		var dwT *nn.Tensor
		if dw != nil {
			if dwT, err = r.allocT(len(g.labels)); err != nil {
				pass.Release()
				return 0, fmt.Errorf("inner step %d: %w", t, err)
			}
		}
		err = pass.Backward(1, model.Grads{LoRA: grad, DWeights: dwT})
		r.mem.pass(pass.Stats().PeakBytes)
		pass.Release()
		if err == nil && dwT != nil {
			var host *nn.Tensor
			if host, err = r.b.ToHost(dwT); err == nil {
				var v []float64
				if v, err = hostF64(host); err == nil {
					for row, j := range g.tgt {
						if j >= 0 {
							dw[j] = v[row]
						}
					}
				}
			}
		}
		r.freeT(dwT)
		if err != nil {
			return 0, fmt.Errorf("inner step %d: %w", t, err)
		}
		total += loss
	}
	return total, nil
}

// outer computes L_out(φ) and accumulates its gradient into dphi (and the
// base gradient into base when non-nil).
func (r *run) outer(phi, dphi *model.Adapter, base *model.ParamSet) (float64, error) {
	ex := r.ex
	pass, err := r.m.Forward(ex.Outer, model.Options{Adapter: phi, Policy: r.e.Policy})
	if err != nil {
		return 0, fmt.Errorf("outer loss: %w", err)
	}
	defer pass.Release()
	labels := make([]int32, ex.Outer.Len())
	for i := range labels {
		labels[i] = nn.IgnoreIndex
		if i+1 >= ex.PromptLen && i+1 < len(labels) {
			labels[i] = ex.Outer.IDs[i+1]
		}
	}
	loss, err := pass.Loss(model.Targets{Labels: labels, Chunk: r.e.Chunk})
	if err != nil {
		return 0, fmt.Errorf("outer loss: %w", err)
	}
	if dphi == nil && base == nil {
		r.mem.pass(pass.Stats().PeakBytes)
		return loss, nil
	}
	err = pass.Backward(1, model.Grads{LoRA: dphi, Base: base})
	r.mem.pass(pass.Stats().PeakBytes)
	if err != nil {
		return 0, fmt.Errorf("outer loss: %w", err)
	}
	return loss, nil
}

// stepState is what the forward sweep keeps of one inner step.
type stepState struct {
	phi  *model.Adapter // φ_t, before the step
	m, v *model.Adapter // AdamW: the moments after the step
	g    *model.Adapter // SGD: the step's gradient
}

func tensors(a *model.Adapter) []*nn.Tensor { return a.Params().Tensors() }

// forwardSweep runs the inner loop from φ₀ and returns φ_T (a tracked
// adapter the caller frees), the inner losses and, when keep is set, the
// per-step state.
func (r *run) forwardSweep(keep bool) (*model.Adapter, []float64, []stepState, error) {
	c := r.e.Inner
	phi, err := r.clone(r.p.Init)
	if err != nil {
		return nil, nil, nil, err
	}
	var hist []stepState
	var m, v *model.Adapter
	fail := func(err error) (*model.Adapter, []float64, []stepState, error) {
		r.free(phi)
		r.free(m)
		r.free(v)
		r.freeHistory(hist)
		return nil, nil, nil, err
	}
	grad, err := r.zerosLike(phi)
	if err != nil {
		return fail(err)
	}
	defer r.free(grad)
	if c.Optimizer == OptAdamW {
		if m, err = r.zerosLike(phi); err != nil {
			return fail(err)
		}
		if v, err = r.zerosLike(phi); err != nil {
			return fail(err)
		}
	}
	losses := make([]float64, c.Steps)
	for t := 0; t < c.Steps; t++ {
		var st stepState
		if keep {
			if st.phi, err = r.clone(phi); err != nil {
				return fail(err)
			}
			hist = append(hist, st)
		}
		if err := r.zero(grad); err != nil {
			return fail(err)
		}
		if losses[t], err = r.gradient(phi, grad, nil, t); err != nil {
			return fail(err)
		}
		lrs := r.p.LRs.At(t)
		if c.Optimizer == OptAdamW {
			err = r.b.AdamWStep(c.adamw(), t+1, lrs, tensors(phi), tensors(grad), tensors(m), tensors(v))
		} else {
			if keep {
				if hist[t].g, err = r.clone(grad); err != nil {
					return fail(err)
				}
			}
			err = r.b.SGDStep(c.WeightDecay, lrs, tensors(phi), tensors(grad))
		}
		if err != nil {
			return fail(fmt.Errorf("inner step %d: %w", t, err))
		}
		if keep && c.Optimizer == OptAdamW {
			if hist[t].m, err = r.clone(m); err != nil {
				return fail(err)
			}
			if hist[t].v, err = r.clone(v); err != nil {
				return fail(err)
			}
		}
	}
	r.free(m)
	r.free(v)
	return phi, losses, hist, nil
}

func (r *run) freeHistory(hist []stepState) {
	for i := range hist {
		r.freeStep(&hist[i])
	}
}

func (r *run) freeStep(s *stepState) {
	r.free(s.phi)
	r.free(s.m)
	r.free(s.v)
	r.free(s.g)
	*s = stepState{}
}

func (r *run) zero(a *model.Adapter) error {
	for _, t := range tensors(a) {
		if err := r.b.Zero(t); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) axpy(alpha float64, x, y *model.Adapter) error {
	xs, ys := tensors(x), tensors(y)
	for i := range xs {
		if err := r.b.Axpy(alpha, xs[i], ys[i]); err != nil {
			return err
		}
	}
	return nil
}

// Adapt runs the inner loop on an example (test-time learning) and returns
// the adapted LoRA φ_T (a new adapter owned by the caller) and the inner
// losses L_in(φ_t). seed keys the LoRA dropout masks.
func (e *Engine) Adapt(p *Params, ex *Example, seed uint64) (*model.Adapter, []float64, error) {
	r, err := e.newRun(p, ex, seed)
	if err != nil {
		return nil, nil, err
	}
	defer r.release()
	phi, losses, _, err := r.forwardSweep(false)
	return phi, losses, err
}

// Objective returns the meta-objective L_out(φ_T) of one example without
// its gradient (for checks and evaluation).
func (e *Engine) Objective(p *Params, ex *Example, seed uint64) (float64, error) {
	r, err := e.newRun(p, ex, seed)
	if err != nil {
		return 0, err
	}
	defer r.release()
	phi, _, _, err := r.forwardSweep(false)
	if err != nil {
		return 0, err
	}
	defer r.free(phi)
	return r.outer(phi, nil, nil)
}

// MetaGradient computes the meta-gradient of the outer loss of one example
// with respect to the LoRA initialisation, the learned learning rates and
// the weighting network (see Engine). seed keys the LoRA dropout masks of
// the inner steps.
func (e *Engine) MetaGradient(p *Params, ex *Example, seed uint64) (*MetaGrad, error) {
	r, err := e.newRun(p, ex, seed)
	if err != nil {
		return nil, err
	}
	defer r.release()
	so := e.SecondOrder
	if so == nil {
		so = FiniteDifference{}
	}
	c := e.Inner
	out := &MetaGrad{LRs: p.LRs.ZerosLike()}
	if p.Weighting != nil {
		out.Weighting = p.Weighting.ZerosLike()
	}

	// Forward sweep.
	phiT, losses, hist, err := r.forwardSweep(true)
	if err != nil {
		return nil, err
	}
	defer r.freeHistory(hist)
	out.InnerLosses = losses
	if len(hist) > 0 {
		st := &hist[0]
		for _, a := range []*model.Adapter{st.phi, st.m, st.v, st.g} {
			if a != nil {
				out.Mem.StepStateBytes += adapterBytes(a)
			}
		}
	}

	// φ̄_T = ∇L_out(φ_T); the returned gradient is φ̄ itself, so it is not
	// freed here.
	dphi, err := p.Init.ZerosLike()
	if err != nil {
		r.free(phiT)
		return nil, err
	}
	r.mem.add(adapterBytes(dphi))
	if e.TrainBase {
		if out.Base, err = e.Model.NewGrads(); err != nil {
			r.free(phiT)
			return nil, err
		}
		r.mem.add(int64(out.Base.NumElements() * r.dt.Size()))
	}
	out.OuterLoss, err = r.outer(phiT, dphi, out.Base)
	r.free(phiT)
	if err != nil {
		return nil, err
	}

	// Reverse sweep.
	var dm, dv, gbuf, dg, hvp *model.Adapter
	defer func() {
		for _, a := range []*model.Adapter{dm, dv, gbuf, dg, hvp} {
			r.free(a)
		}
	}()
	if dg, err = r.zerosLike(dphi); err != nil {
		return nil, err
	}
	if c.Optimizer == OptAdamW {
		for _, pp := range []**model.Adapter{&dm, &dv, &gbuf} {
			if *pp, err = r.zerosLike(dphi); err != nil {
				return nil, err
			}
		}
	}
	second := so.Enabled()
	if second && c.UnrollStart < c.Steps {
		if hvp, err = r.zerosLike(dphi); err != nil {
			return nil, err
		}
	}
	n := len(p.LRs.Names)
	for t := c.Steps - 1; t >= 0; t-- {
		st := &hist[t]
		lrs := p.LRs.At(t)
		dl := make([]float64, n)
		if c.Optimizer == OptAdamW {
			if err := r.recoverGrad(gbuf, hist, t); err != nil {
				return nil, err
			}
			err = r.b.AdamWStepVJP(c.adamw(), t+1, lrs, tensors(st.phi), tensors(gbuf), tensors(st.m), tensors(st.v),
				tensors(dphi), tensors(dm), tensors(dv), tensors(dg), dl)
		} else {
			err = r.b.SGDStepVJP(c.WeightDecay, lrs, tensors(st.phi), tensors(st.g), tensors(dphi), tensors(dg), dl)
		}
		if err != nil {
			return nil, fmt.Errorf("inner step %d VJP: %w", t, err)
		}
		for i := range dl {
			out.LRs.Values[i][t] = dl[i]
		}
		if second && t >= c.UnrollStart {
			var dw []float64
			if p.Weighting != nil {
				dw = make([]float64, r.nt)
			}
			if err := so.DirectionalGradient(stepObjective{r, t}, st.phi, dg, hvp, dw); err != nil {
				return nil, fmt.Errorf("inner step %d, %s second-order term: %w", t, so.Name(), err)
			}
			if err := r.axpy(1, hvp, dphi); err != nil {
				return nil, err
			}
			if p.Weighting != nil {
				p.Weighting.backward(r.wc, dw, out.Weighting)
			}
		}
		// Step t+1 needed m_t to recover g_{t+1}; step t is done with all.
		r.freeStep(st)
	}
	out.Init = dphi
	out.Mem.PeakBytes = r.mem.peak
	return out, nil
}

// recoverGrad sets gbuf = g_t = (m_t − β1·m_{t−1})/(1−β1) from the stored
// AdamW moments (m_{−1} = 0).
func (r *run) recoverGrad(gbuf *model.Adapter, hist []stepState, t int) error {
	b1 := r.e.Inner.Beta1
	gs, ms := tensors(gbuf), tensors(hist[t].m)
	for i := range gs {
		if err := r.b.Copy(gs[i], ms[i]); err != nil {
			return err
		}
	}
	if b1 == 0 {
		return nil
	}
	if t > 0 {
		if err := r.axpy(-b1, hist[t-1].m, gbuf); err != nil {
			return err
		}
	}
	for _, g := range gs {
		if err := r.b.Scale(1/(1-b1), g); err != nil {
			return err
		}
	}
	return nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
