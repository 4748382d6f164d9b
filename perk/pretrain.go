package perk

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
)

// Pretraining is plain causal-LM training of every base weight, for a
// model created from a configuration (model.NewRandom) when no pretrained
// checkpoint is at hand — the demo's tiny models. The corpus is rendered
// from PERK records, so the model learns the language of the task before
// PERK or the ICR baseline are trained on it.

// Kinds of pretraining sequences rendered from a record (PretrainCorpus).
const (
	// CorpusDocs: every context segment as the inner loop sees it,
	// "doc_{i}: {segment}" + EOS, with i a random document number.
	CorpusDocs = "docs"
	// CorpusQA: the closed-book question and answer, PERK's outer
	// sequence (prompt + " " + target + EOS) with no context: the model
	// learns the format and the answers' distribution, not the answer of
	// a given context.
	CorpusQA = "qa"
	// CorpusICR: the ICR sequence, the context in the prompt followed by
	// the question and the answer (EncodeICR): in-context reading.
	CorpusICR = "icr"
)

// CorpusKinds lists the kinds of pretraining sequences.
func CorpusKinds() []string { return []string{CorpusDocs, CorpusQA, CorpusICR} }

// ParseCorpusKinds checks a comma-separated list of corpus kinds.
func ParseCorpusKinds(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		switch k {
		case CorpusDocs, CorpusQA, CorpusICR:
		default:
			return nil, fmt.Errorf("unknown corpus kind %q (want %s)", k, strings.Join(CorpusKinds(), ", "))
		}
		if !seen[k] {
			out = append(out, k)
			seen[k] = true
		}
	}
	return out, nil
}

// PretrainCorpus renders records as token sequences of the given kinds,
// record by record in kind order; seed keys the document numbers of
// CorpusDocs. A sequence longer than enc.MaxPositions is an error naming
// its record.
func PretrainCorpus(enc *Encoder, recs []Record, kinds []string, seed uint64) ([][]int32, error) {
	if enc == nil || enc.Tok == nil {
		return nil, fmt.Errorf("pretraining corpus: no encoder")
	}
	if len(kinds) == 0 {
		return nil, fmt.Errorf("pretraining corpus: no kinds of sequences")
	}
	rng := rand.New(rand.NewPCG(seed, 0xc0_7905))
	var out [][]int32
	add := func(r Record, what string, ids []int) error {
		if enc.MaxPositions > 0 && len(ids) > enc.MaxPositions {
			return fmt.Errorf("record %q: the %s sequence has %d tokens, more than the model's %d positions", r.ID, what, len(ids), enc.MaxPositions)
		}
		s := make([]int32, len(ids))
		for i, id := range ids {
			if id < 0 || id >= enc.Vocab {
				return fmt.Errorf("record %q: %s token %d has id %d outside the vocabulary [0,%d)", r.ID, what, i, id, enc.Vocab)
			}
			s[i] = int32(id)
		}
		out = append(out, s)
		return nil
	}
	for _, r := range recs {
		for _, k := range kinds {
			switch k {
			case CorpusDocs:
				ex, err := enc.Encode(r, rng.Perm(len(r.Context)))
				if err != nil {
					return nil, err
				}
				cu := ex.Segments.CuSeqlens
				for s := 0; s+1 < len(cu); s++ {
					ids := make([]int, 0, cu[s+1]-cu[s])
					for _, id := range ex.Segments.IDs[cu[s]:cu[s+1]] {
						ids = append(ids, int(id))
					}
					if err := add(r, "document", ids); err != nil {
						return nil, err
					}
				}
			case CorpusQA:
				if err := r.Validate(); err != nil {
					return nil, err
				}
				target, err := enc.Target(r)
				if err != nil {
					return nil, err
				}
				ids := append(enc.Tok.Encode(Prompt(len(r.Context), r.Question)), enc.Tok.Encode(" "+target)...)
				if err := add(r, "question", append(ids, enc.EOS)); err != nil {
					return nil, err
				}
			case CorpusICR:
				x, err := enc.EncodeICR(r)
				if err != nil {
					return nil, err
				}
				ids := make([]int, len(x.Seq.IDs))
				for i, id := range x.Seq.IDs {
					ids[i] = int(id)
				}
				if err := add(r, "ICR", ids); err != nil {
					return nil, err
				}
			default:
				return nil, fmt.Errorf("unknown corpus kind %q (want %s)", k, strings.Join(CorpusKinds(), ", "))
			}
		}
	}
	return out, nil
}

// Packer packs token sequences into batches: epoch after epoch, each in its
// own order (a permutation keyed by the seed and the epoch), it lays
// sequences end to end until the next one would pass the token budget.
type Packer struct {
	seqs  [][]int32
	seed  uint64
	epoch int
	pos   int
	order []int
}

// NewPacker returns a packer over seqs (none may be empty).
func NewPacker(seqs [][]int32, seed uint64) (*Packer, error) {
	if len(seqs) == 0 {
		return nil, fmt.Errorf("packer: no sequences")
	}
	for i, s := range seqs {
		if len(s) == 0 {
			return nil, fmt.Errorf("packer: sequence %d is empty", i)
		}
	}
	p := &Packer{seqs: seqs, seed: seed}
	p.order = rand.New(rand.NewPCG(seed, 0)).Perm(len(seqs))
	return p, nil
}

// Epoch is the number of complete passes over the sequences.
func (p *Packer) Epoch() int { return p.epoch }

// Next returns the next batch: at least one sequence, and more while the
// batch stays within maxTokens tokens. Sequences are never cut; each is
// one segment (no attention across sequences).
func (p *Packer) Next(maxTokens int) model.Batch {
	b := model.Batch{CuSeqlens: []int32{0}}
	for {
		s := p.seqs[p.order[p.pos]]
		if len(b.IDs) > 0 && len(b.IDs)+len(s) > maxTokens {
			return b
		}
		b.IDs = append(b.IDs, s...)
		b.CuSeqlens = append(b.CuSeqlens, int32(len(b.IDs)))
		p.pos++
		if p.pos == len(p.order) {
			p.epoch++
			p.pos = 0
			p.order = rand.New(rand.NewPCG(p.seed, uint64(p.epoch))).Perm(len(p.seqs))
		}
	}
}

// Pretrainer trains every base weight of a model on the causal-LM loss of
// packed batches (mean cross-entropy of each token's successor within its
// sequence), with the outer loop's optimiser: AdamW (decoupled decay on
// matrices only), linear warmup then cosine decay, global-norm clipping.
// OuterConfig.LRForLRs and Accum are unused.
type Pretrainer struct {
	// Model is trained in place.
	Model *model.Model
	// Opt configures the optimiser.
	Opt OuterConfig
	// Policy is the activation checkpointing policy of the passes.
	Policy model.Policy
	// Chunk is the LM-head vocabulary chunk (0: the backend's default).
	Chunk int
	// Step counts the optimiser steps taken.
	Step int

	grads, m, v *model.ParamSet
	decay       []bool
}

// PretrainReport summarises one pretraining step.
type PretrainReport struct {
	// Step is the number of optimiser steps taken after this one.
	Step int
	// LR is the scheduled learning rate used.
	LR float64
	// Loss is the batch's mean next-token cross-entropy.
	Loss float64
	// GradNorm is the global gradient norm before clipping.
	GradNorm float64
	// Tokens is the number of tokens in the batch.
	Tokens int
	// PeakBytes is the pass's activation peak.
	PeakBytes int64
}

// NewPretrainer starts training m with zero optimiser moments.
func NewPretrainer(m *model.Model, cfg OuterConfig) (*Pretrainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pretrainer: %w", err)
	}
	if m == nil {
		return nil, fmt.Errorf("pretrainer: no model")
	}
	p := &Pretrainer{Model: m, Opt: cfg}
	b := m.Backend()
	var err error
	for _, s := range []**model.ParamSet{&p.grads, &p.m, &p.v} {
		if *s, err = m.Params().ZerosLike(b); err != nil {
			return nil, fmt.Errorf("pretrainer: %w", err)
		}
	}
	for _, t := range m.Params().Tensors() {
		p.decay = append(p.decay, t.Rank() >= 2)
	}
	return p, nil
}

// Loss returns the batch's mean next-token cross-entropy (no gradient).
func (p *Pretrainer) Loss(b model.Batch) (float64, error) {
	pass, err := p.Model.Forward(b, model.Options{Policy: p.Policy})
	if err != nil {
		return 0, fmt.Errorf("pretrain loss: %w", err)
	}
	defer pass.Release()
	loss, err := pass.Loss(model.Targets{Labels: b.CausalLabels(), Chunk: p.Chunk})
	if err != nil {
		return 0, fmt.Errorf("pretrain loss: %w", err)
	}
	return loss, nil
}

// TrainStep takes one optimiser step on the batch's loss.
func (p *Pretrainer) TrainStep(batch model.Batch) (PretrainReport, error) {
	rep := PretrainReport{Tokens: batch.Len()}
	m, b := p.Model, p.Model.Backend()
	fail := func(err error) (PretrainReport, error) {
		return rep, fmt.Errorf("pretrain step %d: %w", p.Step+1, err)
	}
	if err := p.grads.Zero(b); err != nil {
		return fail(err)
	}
	pass, err := m.Forward(batch, model.Options{Policy: p.Policy})
	if err != nil {
		return fail(err)
	}
	rep.Loss, err = pass.Loss(model.Targets{Labels: batch.CausalLabels(), Chunk: p.Chunk})
	if err == nil {
		err = pass.Backward(1, model.Grads{Base: p.grads})
	}
	rep.PeakBytes = pass.Stats().PeakBytes
	pass.Release()
	if err != nil {
		return fail(err)
	}
	gs := p.grads.Tensors()
	if c := p.Opt.ClipNorm; c > 0 {
		rep.GradNorm, err = b.ClipGlobalNorm(gs, c)
	} else {
		rep.GradNorm, err = b.GlobalNorm(gs)
	}
	if err != nil {
		return fail(err)
	}
	rep.LR = p.Opt.LR * p.Opt.Schedule(p.Step)
	ps, ms, vs := m.Params().Tensors(), p.m.Tensors(), p.v.Tensors()
	for _, decay := range []bool{true, false} {
		opt := nn.AdamW{Beta1: p.Opt.Beta1, Beta2: p.Opt.Beta2, Eps: p.Opt.Eps, WeightDecay: p.Opt.WeightDecay}
		if !decay {
			opt.WeightDecay = 0
		}
		var pp, gg, mm, vv []*nn.Tensor
		var lrs []float64
		for i := range ps {
			if p.decay[i] == decay {
				pp, gg, mm, vv = append(pp, ps[i]), append(gg, gs[i]), append(mm, ms[i]), append(vv, vs[i])
				lrs = append(lrs, rep.LR)
			}
		}
		if len(pp) == 0 {
			continue
		}
		if err := b.AdamWStep(opt, p.Step+1, lrs, pp, gg, mm, vv); err != nil {
			return fail(err)
		}
	}
	p.Step++
	rep.Step = p.Step
	return rep, nil
}
