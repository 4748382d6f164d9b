package perk

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/model"
)

// The in-context reasoning (ICR) baseline — the paper's FT-ICR, "standard
// long-context fine-tuning" — fine-tunes a LoRA adapter on prompts that
// hold the whole context, and answers with the context in the prompt. It
// shares the encoder's target format, the decoder and the scorer with
// PERK, so the two are compared on equal terms.

// ICRPrompt returns the baseline's prompt: the context segments joined by
// newlines, then the question and "Answer:" on lines of their own:
//
//	{segment 0}\n{segment 1}\n…\n{question}\nAnswer:
func ICRPrompt(context []string, question string) string {
	return strings.Join(context, "\n") + "\n" + question + "\nAnswer:"
}

// ICRExample is one tokenized ICR problem: prompt + " " + target + EOS as
// one sequence, with the loss on the tokens after the prompt.
type ICRExample struct {
	// ID names the record it came from.
	ID string
	// Seq is the sequence (one segment).
	Seq model.Batch
	// PromptLen is the number of prompt tokens of Seq.
	PromptLen int
}

// Labels returns the next-token labels of the answer tokens (target and
// EOS); prompt positions are nn.IgnoreIndex.
func (x *ICRExample) Labels() []int32 {
	lab := make([]int32, x.Seq.Len())
	for i := range lab {
		lab[i] = nn.IgnoreIndex
		if i+1 >= x.PromptLen && i+1 < len(lab) {
			lab[i] = x.Seq.IDs[i+1]
		}
	}
	return lab
}

// ICRPromptIDs tokenizes a record's ICR prompt; a prompt longer than
// MaxPositions is an error.
func (enc *Encoder) ICRPromptIDs(r Record) ([]int, error) {
	if enc.Tok == nil {
		return nil, fmt.Errorf("encoder: no tokenizer")
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	ids := enc.Tok.Encode(ICRPrompt(r.Context, r.Question))
	if enc.MaxPositions > 0 && len(ids) > enc.MaxPositions {
		return nil, fmt.Errorf("record %q: the ICR prompt has %d tokens, more than the model's %d positions", r.ID, len(ids), enc.MaxPositions)
	}
	for i, id := range ids {
		if id < 0 || id >= enc.Vocab {
			return nil, fmt.Errorf("record %q: ICR prompt token %d has id %d outside the vocabulary [0,%d)", r.ID, i, id, enc.Vocab)
		}
	}
	return ids, nil
}

// EncodeICR tokenizes a record for the ICR baseline: tokenize(ICRPrompt) +
// tokenize(" " + target) + EOS, with the target of Encoder.Target. A
// sequence longer than MaxPositions is an error naming the record.
func (enc *Encoder) EncodeICR(r Record) (*ICRExample, error) {
	prompt, err := enc.ICRPromptIDs(r)
	if err != nil {
		return nil, err
	}
	target, err := enc.Target(r)
	if err != nil {
		return nil, err
	}
	seq := append(append(prompt, enc.Tok.Encode(" "+target)...), enc.EOS)
	if enc.MaxPositions > 0 && len(seq) > enc.MaxPositions {
		return nil, fmt.Errorf("record %q: the ICR sequence has %d tokens, more than the model's %d positions", r.ID, len(seq), enc.MaxPositions)
	}
	x := &ICRExample{ID: r.ID, PromptLen: len(prompt)}
	for i, t := range seq {
		if t < 0 || t >= enc.Vocab {
			return nil, fmt.Errorf("record %q: ICR token %d has id %d outside the vocabulary [0,%d)", r.ID, i, t, enc.Vocab)
		}
		x.Seq.IDs = append(x.Seq.IDs, int32(t))
	}
	return x, nil
}

// ICRTrainer fine-tunes the baseline's LoRA adapter: per optimiser step it
// averages the answer-token cross-entropy gradients of Opt.Accum examples,
// clips their global norm and applies AdamW (decoupled decay on every LoRA
// tensor) with the same warmup + cosine schedule as the PERK trainer. The
// base model stays frozen; LoRA dropout is active when the adapter has
// any.
type ICRTrainer struct {
	// Model is the frozen base model.
	Model *model.Model
	// Adapter is trained in place.
	Adapter *model.Adapter
	// Opt configures the optimiser (LRForLRs is unused).
	Opt OuterConfig
	// Policy is the activation checkpointing policy of the passes.
	Policy model.Policy
	// Chunk is the LM-head vocabulary chunk (0: the backend's default).
	Chunk int
	// Step counts the optimiser steps taken.
	Step int
	// Seen counts the examples consumed (the data position).
	Seen int
	// Seed keys the per-epoch data order and the dropout masks.
	Seed uint64

	rng        *rand.Rand
	grad, m, v *model.Adapter
	orderEpoch int
	orderCache []int
}

// ICRStepReport summarises one ICR optimiser step.
type ICRStepReport struct {
	// Step is the number of optimiser steps taken after this one.
	Step int
	// LR is the scheduled learning rate used.
	LR float64
	// Loss is the mean answer-token cross-entropy of the step's examples.
	Loss float64
	// GradNorm is the global gradient norm before clipping.
	GradNorm float64
	// PeakBytes is the largest activation peak of the step's passes.
	PeakBytes int64
}

// NewICRTrainer starts fine-tuning ad (an adapter of m, e.g. from
// model.NewAdapter) with zero optimiser moments; seed keys the data order
// and dropout.
func NewICRTrainer(m *model.Model, ad *model.Adapter, cfg OuterConfig, seed uint64) (*ICRTrainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("icr trainer: %w", err)
	}
	if m == nil || ad == nil {
		return nil, fmt.Errorf("icr trainer: no model or adapter")
	}
	t := &ICRTrainer{Model: m, Adapter: ad, Opt: cfg, Seed: seed, rng: rand.New(rand.NewPCG(seed, 0x1c2_7a1e))}
	var err error
	for _, p := range []**model.Adapter{&t.grad, &t.m, &t.v} {
		if *p, err = ad.ZerosLike(); err != nil {
			return nil, fmt.Errorf("icr trainer: %w", err)
		}
	}
	return t, nil
}

// order returns the example order of an epoch, a permutation keyed by the
// seed and the epoch.
func (t *ICRTrainer) order(epoch, n int) []int {
	if t.orderCache == nil || t.orderEpoch != epoch || len(t.orderCache) != n {
		t.orderCache = rand.New(rand.NewPCG(t.Seed, uint64(epoch)+0x1c2_0de)).Perm(n)
		t.orderEpoch = epoch
	}
	return t.orderCache
}

// NextExamples encodes the next n examples of the data stream (epoch after
// epoch, each in its own shuffled order) and advances the data position.
// The documents keep their order (ds.ShuffleDocs does not apply: ICR
// prompts carry no document numbers).
func (t *ICRTrainer) NextExamples(ds *Dataset, n int) ([]*ICRExample, error) {
	if ds == nil || len(ds.Records) == 0 || ds.Encoder == nil {
		return nil, fmt.Errorf("icr trainer: empty dataset")
	}
	var out []*ICRExample
	N := len(ds.Records)
	for k := 0; k < n; k++ {
		epoch, i := t.Seen/N, t.Seen%N
		x, err := ds.Encoder.EncodeICR(ds.Records[t.order(epoch, N)[i]])
		if err != nil {
			return nil, err
		}
		out = append(out, x)
		t.Seen++
	}
	return out, nil
}

// TrainStep takes one optimiser step on the mean loss of exs.
func (t *ICRTrainer) TrainStep(exs []*ICRExample) (ICRStepReport, error) {
	rep := ICRStepReport{}
	if len(exs) == 0 {
		return rep, fmt.Errorf("icr trainer: no examples")
	}
	b := t.Model.Backend()
	grads := tensors(t.grad)
	for _, g := range grads {
		if err := b.Zero(g); err != nil {
			return rep, fmt.Errorf("icr step %d: %w", t.Step+1, err)
		}
	}
	dropout := t.Adapter.Config().Dropout > 0
	scale := 1 / float64(len(exs))
	for _, x := range exs {
		opts := model.Options{Adapter: t.Adapter, Policy: t.Policy, Train: dropout, Seed: t.rng.Uint64(), Step: uint32(t.Step)}
		pass, err := t.Model.Forward(x.Seq, opts)
		if err != nil {
			return rep, fmt.Errorf("icr step %d, example %q: %w", t.Step+1, x.ID, err)
		}
		loss, err := pass.Loss(model.Targets{Labels: x.Labels(), Chunk: t.Chunk})
		if err == nil {
			err = pass.Backward(scale, model.Grads{LoRA: t.grad})
		}
		rep.PeakBytes = max(rep.PeakBytes, pass.Stats().PeakBytes)
		pass.Release()
		if err != nil {
			return rep, fmt.Errorf("icr step %d, example %q: %w", t.Step+1, x.ID, err)
		}
		rep.Loss += loss * scale
	}
	var err error
	if c := t.Opt.ClipNorm; c > 0 {
		rep.GradNorm, err = b.ClipGlobalNorm(grads, c)
	} else {
		rep.GradNorm, err = b.GlobalNorm(grads)
	}
	if err != nil {
		return rep, fmt.Errorf("icr step %d: %w", t.Step+1, err)
	}
	rep.LR = t.Opt.LR * t.Opt.Schedule(t.Step)
	o := t.Opt
	lrs := make([]float64, len(grads))
	for i := range lrs {
		lrs[i] = rep.LR
	}
	opt := nn.AdamW{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay}
	if err := b.AdamWStep(opt, t.Step+1, lrs, tensors(t.Adapter), grads, tensors(t.m), tensors(t.v)); err != nil {
		return rep, fmt.Errorf("icr step %d: AdamW: %w", t.Step+1, err)
	}
	t.Step++
	rep.Step = t.Step
	return rep, nil
}

// Loss returns the answer-token cross-entropy of one example with the
// current adapter (no dropout, no gradient).
func (t *ICRTrainer) Loss(x *ICRExample) (float64, error) {
	pass, err := t.Model.Forward(x.Seq, model.Options{Adapter: t.Adapter, Policy: t.Policy})
	if err != nil {
		return 0, fmt.Errorf("icr loss %q: %w", x.ID, err)
	}
	defer pass.Release()
	loss, err := pass.Loss(model.Targets{Labels: x.Labels(), Chunk: t.Chunk})
	if err != nil {
		return 0, fmt.Errorf("icr loss %q: %w", x.ID, err)
	}
	return loss, nil
}

// Save writes the trained adapter to dir as a PEFT adapter directory
// (replaced atomically), the checkpoint perk-eval reads in icr mode.
func (t *ICRTrainer) Save(dir string) error { return SaveICRAdapter(dir, t.Adapter) }

// SaveICRAdapter writes an ICR adapter to dir as a PEFT adapter directory,
// replacing dir atomically; tensors are stored in the adapter's precision
// (F64 stays F64, anything else is F32).
func SaveICRAdapter(dir string, ad *model.Adapter) error {
	return writeDirAtomic(dir, func(tmp string) error {
		return model.SaveAdapter(tmp, ad, storageType(ad.Params().Tensors()[0].DType()))
	})
}

// ICRAnswer answers a record the ICR way: the whole context in the prompt
// (ICRPrompt), greedy decoding with the adapter ad (nil for the base
// model).
func ICRAnswer(m *model.Model, ad *model.Adapter, enc *Encoder, rec Record, gen GenerateConfig) (*Answer, error) {
	if enc == nil || enc.Tok == nil {
		return nil, fmt.Errorf("answer: no encoder")
	}
	prompt, err := enc.ICRPromptIDs(rec)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	g, err := Greedy(m, ad, prompt, gen)
	if err != nil {
		return nil, fmt.Errorf("record %q: %w", rec.ID, err)
	}
	return &Answer{Text: enc.Tok.DecodeSkipSpecial(g.IDs), Generation: *g, DecodeTime: time.Since(start)}, nil
}
