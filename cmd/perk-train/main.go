// Command perk-train meta-trains PERK: the LoRA initialisation, the
// per-step inner learning rates and the token-weighting network, on JSONL
// records, with a frozen base model. Two more modes train what PERK is
// compared with and built on (modes.go): --mode pretrain trains a model
// from scratch (or further) on the causal-LM loss of the records' text, and
// --mode icr fine-tunes the ICR baseline's LoRA adapter.
//
//	perk-train --model DIR --data FILE.jsonl --out DIR --steps N [flags]
//	perk-train --model DIR --data FILE.jsonl --dump-metagrad OUT.safetensors [flags]
//	perk-train --mode pretrain --init-config config.json --tokenizer words:N --data FILE.jsonl --out DIR --steps N [flags]
//	perk-train --mode icr --model DIR --data FILE.jsonl --out DIR --steps N [flags]
//
// --dump-metagrad computes the meta-gradient of the first record and writes
// it under checkpoint names (PEFT LoRA names for the initialisation,
// perk.lr.<name>, perk.weighting.*, plus outer_loss and inner_losses), then
// exits. Run with --help for every flag.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/perkgo/perk/cmd/internal/outdir"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/safetensors"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

func main() {
	// The first Ctrl-C (or SIGTERM) ends the run after the current step
	// with a checkpoint and exit status 0; a second one kills it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
		fmt.Fprintln(os.Stderr, "\nperk-train: interrupted: saving after the current step (interrupt again to quit without saving)")
	}()
	if err := runContext(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "perk-train:", err)
		os.Exit(1)
	}
}

// options holds the parsed flags.
type options struct {
	mode, dump, modelDir, data, initAdapter, initState, device, precision string
	innerSteps, unrollStart                                               int
	innerOpt                                                              string
	innerLR                                                               float64
	innerBetas                                                            []float64
	innerEps, innerWD                                                     float64
	loraRank                                                              int
	loraAlpha, loraDropout                                                float64
	rslora                                                                bool
	loraTargets                                                           []string
	weighting                                                             bool
	weightingHidden                                                       int
	weightingBeta                                                         float64
	hvp                                                                   string
	fdStep                                                                float64
	fdPoints, innerAccum                                                  int
	supportTarget, shuffleDocs                                            bool
	seed                                                                  uint64
	policy                                                                string

	steps, saveEvery, logEvery, gradAccum int
	out, resume                           string
	outerLR, outerLRLRs                   float64
	outerBetas                            []float64
	outerEps, outerWD, warmup, clip       float64
	trainBase                             bool

	initConfig, tokSpec, corpus string
	initStd                     float64
	batchTokens                 int

	evalData                         []string
	evalEvery, evalLimit, evalMaxNew int

	config, progress, bestMetric, onBadRecord string
	keepLast                                  int
	// badRecords is --on-bad-record, with skipped lines reported to stderr.
	badRecords perk.OnBadRecord
	// evalSets are the --eval-data files, read before any model is loaded.
	evalSets []evalSet
}

func newFlags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("perk-train", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.config, configFlag, "", "YAML or JSON file of flag values: keys are flag names (inner-steps: 4), lists for the list flags; a flag given on the command line wins")
	fs.StringVar(&o.mode, "mode", "perk", "training mode: perk (meta-train the LoRA init, learned inner LRs and token weighting), pretrain (causal-LM training of every base weight on the records' text, writing a model directory) or icr (fine-tune the ICR baseline's LoRA adapter with the context in the prompt, writing a PEFT adapter directory)")
	fs.StringVar(&o.dump, "dump-metagrad", "", "compute the meta-gradient of the first record, write it to this .safetensors file under checkpoint names, and exit")
	fs.StringVar(&o.modelDir, "model", "", "base model directory: Hugging Face config.json, model.safetensors (or shards) and tokenizer.json (required)")
	fs.StringVar(&o.data, "data", "", `JSONL records {"id", "context": [...], "question", "answer", "support"?: [...]} (required)`)
	fs.StringVar(&o.initAdapter, "init-adapter", "", "PEFT adapter directory for the LoRA initialisation (rank, alpha, rsLoRA, dropout and targets come from it)")
	fs.StringVar(&o.initState, "init-state", "", "perk_state.safetensors with the learned inner LRs and the weighting network to start from")
	fs.StringVar(&o.device, "device", "cpu", "device of every mode: cpu (pure-Go backend), emu (the CUDA kernels on the CPU emulator) or cuda (an NVIDIA GPU; binary built with -tags cuda)")
	fs.StringVar(&o.precision, "precision", "f32", "precision of the model and LoRA: f32, or f64 on the cpu device (bf16 is not supported yet)")
	fs.IntVar(&o.innerSteps, "inner-steps", 4, "inner (test-time learning) steps T")
	fs.IntVar(&o.unrollStart, "unroll-start", 2, "first differentiated inner step; earlier steps are first-order (0: unroll all)")
	fs.StringVar(&o.innerOpt, "inner-opt", perk.OptAdamW, "inner optimiser: adamw or sgd")
	fs.Float64Var(&o.innerLR, "inner-lr", perk.DefaultInnerLR, "initial learned inner learning rate (every tensor and step)")
	fs.Float64SliceVar(&o.innerBetas, "inner-betas", []float64{0.9, 0.95}, "inner AdamW betas b1,b2")
	fs.Float64Var(&o.innerEps, "inner-eps", 1e-8, "inner AdamW epsilon")
	fs.Float64Var(&o.innerWD, "inner-weight-decay", 0.01, "inner decoupled weight decay")
	fs.IntVar(&o.loraRank, "lora-rank", 256, "LoRA rank r")
	fs.Float64Var(&o.loraAlpha, "lora-alpha", 16, "LoRA alpha")
	fs.BoolVar(&o.rslora, "rslora", true, "rank-stabilised LoRA scale alpha/sqrt(r) (--rslora=false: alpha/r)")
	fs.Float64Var(&o.loraDropout, "lora-dropout", 0, "LoRA dropout in the inner loop (the paper uses 0.1)")
	fs.StringSliceVar(&o.loraTargets, "lora-targets", nil, "LoRA target modules (default: every linear layer of the architecture)")
	fs.BoolVar(&o.weighting, "weighting", true, "learn a token-weighting network for the inner loss (--weighting=false: all weights 1)")
	fs.IntVar(&o.weightingHidden, "weighting-hidden", perk.DefaultWeightingHidden, "hidden width H of the weighting network")
	fs.Float64Var(&o.weightingBeta, "weighting-beta", perk.DefaultWeightingBeta, "softplus beta of the weighting network")
	fs.StringVar(&o.hvp, "hvp", perk.HVPFiniteDifference, "second-order terms: fd (finite differences of the inner gradient) or first-order (none)")
	fs.Float64Var(&o.fdStep, "fd-step", 0, "fd relative step h/max(1,|phi|) (0: 1e-5 in f64, 3e-4 in f32)")
	fs.IntVar(&o.fdPoints, "fd-points", 0, "fd stencil points, 2 or 4 (0: 4 in f64, 2 in f32)")
	fs.IntVar(&o.innerAccum, "inner-accum", 1, "split the context segments into this many gradient-accumulation groups per inner step")
	fs.BoolVar(&o.supportTarget, "support-target", false, "outer target <support>...</support>\\n<output>answer</output> instead of the bare answer (an empty <support></support> for a record with no support)")
	fs.BoolVar(&o.shuffleDocs, "shuffle-docs", false, "number the documents of each example in a random order")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the initialisation, the data order, document shuffling and dropout")
	fs.StringVar(&o.policy, "checkpoint-policy", "none", "activation checkpointing: none or blocks")

	fs.IntVar(&o.steps, "steps", 0, "outer optimiser steps (training)")
	fs.StringVar(&o.out, "out", "", "output directory for checkpoints (training)")
	fs.IntVar(&o.saveEvery, "save-every", 0, "write a checkpoint every N steps (0: only at the end)")
	fs.IntVar(&o.logEvery, "log-every", 1, "print a progress line every N steps")
	fs.IntVar(&o.gradAccum, "grad-accum", 1, "examples per outer step (meta-gradients averaged)")
	fs.Float64Var(&o.outerLR, "outer-lr", 1e-5, "peak outer learning rate")
	fs.Float64Var(&o.outerLRLRs, "outer-lr-lrs", 0, "peak outer learning rate of the learned inner LRs (0: --outer-lr)")
	fs.Float64SliceVar(&o.outerBetas, "outer-betas", []float64{0.9, 0.95}, "outer AdamW betas b1,b2")
	fs.Float64Var(&o.outerEps, "outer-eps", 1e-8, "outer AdamW epsilon")
	fs.Float64Var(&o.outerWD, "outer-weight-decay", 0.01, "outer AdamW weight decay (matrices only)")
	fs.Float64Var(&o.warmup, "warmup", 0.03, "fraction of --steps spent in linear warmup before the cosine decay")
	fs.Float64Var(&o.clip, "clip", 1, "global gradient-norm clipping (0: off)")
	fs.BoolVar(&o.trainBase, "train-base", false, "also train the base weights (first-order: dL_out/dW at the adapted LoRA)")
	fs.StringVar(&o.resume, "resume", "", "checkpoint directory to resume training from")
	fs.IntVar(&o.keepLast, "keep-last", 3, "keep only the newest N checkpoint-<step> directories in --out (0: keep all)")
	fs.StringVar(&o.bestMetric, "best-metric", bestAnswerLoss, "after each evaluation of --eval-data, save --out/checkpoint-best (and best.json) when the first file's answer_loss (lower) or accuracy (higher; ties by answer loss) is the best so far")
	fs.StringVar(&o.progress, "progress", progressAuto, "progress display: bar (redrawn in place), lines (a log line every --log-every steps) or auto (bar when stdout is a terminal); every step also goes to --out/metrics.jsonl")
	fs.StringVar(&o.onBadRecord, "on-bad-record", "stop", "a --data or --eval-data line that is not a valid record: stop with its file:line error, or skip it with a warning")
	fs.StringSliceVar(&o.evalData, "eval-data", nil, "held-out JSONL records files (comma-separated): before the first step, every --eval-every steps and after the last, print each file's mean answer loss and exact-match accuracy (perk: after test-time learning; icr: context in the prompt) and append them to --out/eval.tsv")
	fs.IntVar(&o.evalEvery, "eval-every", 0, "evaluate --eval-data every N steps as well (0: only before the first and after the last step)")
	fs.IntVar(&o.evalLimit, "eval-limit", 0, "evaluate only the first N records of each --eval-data file (0: all)")
	fs.IntVar(&o.evalMaxNew, "eval-max-new-tokens", 64, "greedy decoding of --eval-data answers stops at EOS or after this many tokens")

	fs.StringVar(&o.initConfig, "init-config", "", "pretrain: Hugging Face config.json of a model to create with random weights (its vocab_size becomes the tokenizer's); without it --model is trained further")
	fs.Float64Var(&o.initStd, "init-std", 0.02, "pretrain: standard deviation of the random initial weights")
	fs.StringVar(&o.tokSpec, "tokenizer", "", "pretrain: a tokenizer.json, or words:N to build a word-level one (bytes plus the N most frequent words of --data; words:0 is byte-level) (default: --model's)")
	fs.StringVar(&o.corpus, "corpus", "docs,qa", "pretrain: sequences rendered from each record: docs (each segment as \"doc_{i}: {segment}\"), qa (the question and answer without the context), icr (the context, question and answer)")
	fs.IntVar(&o.batchTokens, "batch-tokens", 1024, "pretrain: tokens per batch (whole sequences packed, no attention across them)")
	return fs
}

// flagGroups orders --help: every flag belongs to exactly one group.
var flagGroups = []struct {
	title string
	flags []string
}{
	{"run", []string{"config", "mode", "device", "precision", "seed"}},
	{"data and model", []string{"model", "data", "on-bad-record", "support-target", "shuffle-docs", "checkpoint-policy"}},
	{"meta-parameters to start from (perk)", []string{"init-adapter", "init-state"}},
	{"inner loop (perk)", []string{"inner-steps", "unroll-start", "inner-opt", "inner-lr", "inner-betas", "inner-eps",
		"inner-weight-decay", "inner-accum"}},
	{"LoRA (perk, icr)", []string{"lora-rank", "lora-alpha", "rslora", "lora-dropout", "lora-targets"}},
	{"token weighting (perk)", []string{"weighting", "weighting-hidden", "weighting-beta"}},
	{"meta-gradient (perk)", []string{"hvp", "fd-step", "fd-points", "dump-metagrad"}},
	{"outer loop", []string{"steps", "grad-accum", "outer-lr", "outer-lr-lrs", "outer-betas", "outer-eps",
		"outer-weight-decay", "warmup", "clip", "train-base"}},
	{"held-out evaluation (perk, icr)", []string{"eval-data", "eval-every", "eval-limit", "eval-max-new-tokens"}},
	{"output", []string{"out", "save-every", "keep-last", "best-metric", "log-every", "progress", "resume"}},
	{"pretrain", []string{"init-config", "init-std", "tokenizer", "corpus", "batch-tokens"}},
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprint(w, `usage: perk-train --model DIR --data FILE.jsonl (--out DIR --steps N | --dump-metagrad OUT.safetensors) [flags]
       perk-train --mode pretrain (--init-config FILE --tokenizer SPEC | --model DIR) --data FILE.jsonl --out DIR --steps N [flags]
       perk-train --mode icr --model DIR --data FILE.jsonl --out DIR --steps N [flags]
       perk-train --config FILE.yaml [flags]

Meta-trains PERK on a frozen base model: the LoRA initialisation, per-step
per-tensor inner learning rates and a token-weighting network. --mode
pretrain trains a model's weights on the causal-LM loss of the records'
text; --mode icr fine-tunes the ICR baseline's LoRA adapter. In those modes
the outer-* flags, --warmup, --clip and --grad-accum configure the optimiser.
`)
	for _, g := range flagGroups {
		group := pflag.NewFlagSet(g.title, pflag.ContinueOnError)
		group.SortFlags = false
		for _, name := range g.flags {
			if f := fs.Lookup(name); f != nil {
				group.AddFlag(f)
			}
		}
		fmt.Fprintf(w, "\n%s:\n%s", g.title, group.FlagUsages())
	}
}

// run is runContext without an interrupt.
func run(args []string, stdout, stderr io.Writer) error {
	return runContext(context.Background(), args, stdout, stderr)
}

// runContext parses the flags (and --config) and runs the mode. When ctx
// is cancelled (Ctrl-C), training stops after the current step, saves
// what it has trained and returns nil.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(args) == 0 {
		usage(stderr, fs)
		return fmt.Errorf("nothing to do: --model and --data are required, with --out and --steps to train or --dump-metagrad to write one meta-gradient")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := applyConfig(fs, o.config); err != nil {
		return err
	}
	bad, err := perk.ParseOnBadRecord(o.onBadRecord)
	if err != nil {
		return err
	}
	bad.Skipped = func(err error) { fmt.Fprintf(stderr, "perk-train: skipping %v\n", err) }
	o.badRecords = bad
	switch o.progress {
	case progressAuto, progressBar, progressLines:
	default:
		return fmt.Errorf("unknown --progress %q (want auto, bar or lines)", o.progress)
	}
	switch o.mode {
	case modePERK:
		if err := checkModeFlags(fs, modePERK); err != nil {
			return err
		}
	case modePretrain:
		return runPretrain(ctx, fs, &o, stdout)
	case modeICR:
		return runICR(ctx, fs, &o, stdout)
	default:
		return fmt.Errorf("--mode %q is not supported (want perk, pretrain or icr)", o.mode)
	}
	if o.modelDir == "" || o.data == "" {
		return fmt.Errorf("--model and --data are required")
	}
	if o.dump == "" && (o.out == "" || o.steps <= 0) {
		return fmt.Errorf("training needs --out DIR and --steps N > 0 (or use --dump-metagrad)")
	}
	if o.evalSets, err = loadEvalSets(&o); err != nil {
		return err
	}
	if o.dump == "" {
		if o.resume == "" {
			if err := checkFreshOut(o.out); err != nil {
				return err
			}
		}
		if err := outdir.Check("--out", o.out); err != nil {
			return err
		}
		if o.bestMetric != bestAnswerLoss && o.bestMetric != bestAccuracy {
			return fmt.Errorf("unknown --best-metric %q (want answer_loss or accuracy)", o.bestMetric)
		}
		if o.keepLast < 0 {
			return fmt.Errorf("--keep-last %d must be ≥ 0", o.keepLast)
		}
	} else if err := outdir.Check("--dump-metagrad directory", filepath.Dir(o.dump)); err != nil {
		return err
	}
	dt, err := precision(o.precision)
	if err != nil {
		return err
	}
	if len(o.innerBetas) != 2 || len(o.outerBetas) != 2 {
		return fmt.Errorf("--inner-betas and --outer-betas take two values b1,b2")
	}
	policy, err := model.ParsePolicy(o.policy)
	if err != nil {
		return err
	}
	so, err := perk.ParseSecondOrder(o.hvp, o.fdStep)
	if err != nil {
		return err
	}
	if fd, ok := so.(perk.FiniteDifference); ok {
		fd.Points = o.fdPoints
		so = fd
	}

	// Model, tokenizer, records.
	modelDir := o.modelDir
	if o.resume != "" && o.trainBase {
		modelDir = filepath.Join(o.resume, perk.BaseDir)
	}
	backend, err := openDevice(&o, dt)
	if err != nil {
		return err
	}
	m, ds, err := loadModelAndData(&o, modelDir, backend, dt)
	if err != nil {
		return err
	}
	ds.ShuffleDocs = o.shuffleDocs

	inner := perk.InnerConfig{UnrollStart: o.unrollStart, Optimizer: o.innerOpt, Beta1: o.innerBetas[0], Beta2: o.innerBetas[1],
		Eps: o.innerEps, WeightDecay: o.innerWD, Accum: o.innerAccum}
	e := &perk.Engine{Model: m, Inner: inner, SecondOrder: so, Policy: policy, TrainBase: o.trainBase}
	outer := perk.OuterConfig{LR: o.outerLR, LRForLRs: o.outerLRLRs, Beta1: o.outerBetas[0], Beta2: o.outerBetas[1], Eps: o.outerEps,
		WeightDecay: o.outerWD, Steps: max(o.steps, 1), WarmupFrac: o.warmup, ClipNorm: o.clip, Accum: max(o.gradAccum, 1)}

	if o.resume != "" {
		if o.dump != "" {
			return fmt.Errorf("--resume and --dump-metagrad do not combine (use --init-adapter and --init-state)")
		}
		if o.initAdapter != "" || o.initState != "" {
			return fmt.Errorf("--resume takes everything from the checkpoint; drop --init-adapter/--init-state")
		}
		if fs.Changed("inner-steps") {
			e.Inner.Steps = o.innerSteps
		}
		tr, err := perk.LoadCheckpoint(o.resume, e, outer)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "resumed %s at step %d\n", o.resume, tr.Step)
		return train(ctx, tr, ds, &o, stdout)
	}

	p, steps, err := buildParams(m, fs, &o)
	if err != nil {
		return err
	}
	e.Inner.Steps = steps
	if o.dump != "" {
		return dump(e, p, ds, &o, dt, stdout)
	}
	tr, err := perk.NewTrainer(e, p, outer, o.seed)
	if err != nil {
		return err
	}
	return train(ctx, tr, ds, &o, stdout)
}

// buildParams creates the meta-parameters from the flags, or reads them
// from --init-adapter / --init-state, and returns the number of inner steps.
func buildParams(m *model.Model, fs *pflag.FlagSet, o *options) (*perk.Params, int, error) {
	cfg := m.Config()
	conflict := func(source string, flags ...string) error {
		for _, f := range flags {
			if fs.Changed(f) {
				return fmt.Errorf("--%s conflicts with %s, which decides it", f, source)
			}
		}
		return nil
	}
	var ad *model.Adapter
	var err error
	if o.initAdapter != "" {
		if err := conflict("--init-adapter", "lora-rank", "lora-alpha", "rslora", "lora-dropout", "lora-targets"); err != nil {
			return nil, 0, err
		}
		if ad, err = model.LoadAdapter(o.initAdapter, m); err != nil {
			return nil, 0, err
		}
	} else {
		targets := o.loraTargets
		if len(targets) == 0 {
			targets = model.DefaultTargets(cfg.ModelType)
		}
		lc := model.LoRAConfig{R: o.loraRank, Alpha: o.loraAlpha, Dropout: o.loraDropout, TargetModules: targets, UseRSLoRA: o.rslora, BaseModel: o.modelDir}
		if ad, err = model.NewAdapter(m, lc, o.seed); err != nil {
			return nil, 0, err
		}
	}
	p := &perk.Params{Init: ad}
	steps := o.innerSteps
	if o.initState != "" {
		if err := conflict("--init-state", "inner-lr", "weighting", "weighting-hidden", "weighting-beta"); err != nil {
			return nil, 0, err
		}
		lrs, w, err := perk.LoadState(o.initState, ad, cfg.Hidden)
		if err != nil {
			return nil, 0, err
		}
		if fs.Changed("inner-steps") && lrs.Steps() != steps {
			return nil, 0, fmt.Errorf("--inner-steps %d conflicts with %s, which has learning rates for %d steps", steps, o.initState, lrs.Steps())
		}
		steps = lrs.Steps()
		p.LRs, p.Weighting = lrs, w
	} else {
		if p.LRs, err = perk.NewLearnedLRs(ad.Params().Names(), steps, o.innerLR); err != nil {
			return nil, 0, err
		}
		if o.weighting {
			if p.Weighting, err = perk.NewWeighting(cfg.Hidden, o.weightingHidden, o.weightingBeta, o.seed+1); err != nil {
				return nil, 0, err
			}
		}
	}
	return p, steps, nil
}

// dump writes the meta-gradient of the first record.
func dump(e *perk.Engine, p *perk.Params, ds *perk.Dataset, o *options, dt runtime.DType, stdout io.Writer) error {
	rec := ds.Records[0]
	rng := rand.New(rand.NewPCG(o.seed, 0xd0c5))
	var ids []int
	if ds.ShuffleDocs {
		ids = rng.Perm(len(rec.Context))
	}
	ex, err := ds.Encoder.Encode(rec, ids)
	if err != nil {
		return err
	}
	start := time.Now()
	g, err := e.MetaGradient(p, ex, o.seed)
	if err != nil {
		return err
	}
	ts, err := g.Tensors(e.Model.Backend(), storage(dt))
	if err != nil {
		return err
	}
	meta := map[string]string{"record": rec.ID, "hvp": o.hvp, "inner_steps": strconv.Itoa(e.Inner.Steps), "unroll_start": strconv.Itoa(e.Inner.UnrollStart)}
	if err := safetensors.Write(o.dump, ts, meta); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "record %s: %d segments, %d targets; inner losses %s; outer loss %.6g; meta-gradient (%s) written to %s in %v (peak tracked memory %s)\n",
		rec.ID, ex.NumSegments(), ex.NumTargets(), floats(g.InnerLosses), g.OuterLoss, o.hvp, o.dump,
		time.Since(start).Round(time.Millisecond), bytesString(g.Mem.PeakBytes))
	return nil
}

// train runs the outer loop with progress, evaluations and checkpoints.
// A cancelled ctx ends it after the current step with a checkpoint.
func train(ctx context.Context, tr *perk.Trainer, ds *perk.Dataset, o *options, stdout io.Writer) (err error) {
	if tr.Step >= o.steps {
		return fmt.Errorf("the run is already at step %d of --steps %d", tr.Step, o.steps)
	}
	fmt.Fprintf(stdout, "perk-train: %d records, %d inner steps (%s, unroll from %d, hvp %s), %d outer steps of %d examples\n",
		len(ds.Records), tr.Engine.Inner.Steps, tr.Engine.Inner.Optimizer, tr.Engine.Inner.UnrollStart, o.hvp, o.steps, tr.Outer.Accum)
	prog, err := newProgress(stdout, o, modePERK, tr.Step, tr.Engine.Model.Backend())
	if err != nil {
		return err
	}
	defer func() {
		if cerr := prog.close(); err == nil {
			err = cerr
		}
	}()
	ckpt, err := newCheckpointer(tr, o.out, o.keepLast, o.bestMetric, o.resume != "", prog)
	if err != nil {
		return err
	}
	hook, err := newEvalHook(o, modePERK, tr.Step, prog, prog, func(recs []perk.Record) (evalResult, error) {
		return evalPERK(ctx, tr.Engine, tr.Params, ds.Encoder, recs, o.evalMaxNew, o.seed)
	})
	if err != nil {
		return err
	}
	evaluate := func() error {
		if err := hook.run(tr.Step); err != nil || hook == nil {
			return err
		}
		return ckpt.evaluated(hook.last[0])
	}
	// stop ends an interrupted run: a checkpoint of the step reached
	// (unless it has one already, or no step was taken) and exit status 0.
	stop := func(saved bool) error {
		if tr.Step == 0 {
			fmt.Fprintln(prog, "interrupted before the first step; nothing to save")
			return nil
		}
		dir := filepath.Join(o.out, checkpointPrefix+strconv.Itoa(tr.Step))
		if !saved {
			var err error
			if dir, err = ckpt.save(); err != nil {
				return err
			}
		}
		fmt.Fprintf(prog, "interrupted at step %d of %d; continue with --resume %s\n", tr.Step, o.steps, dir)
		return nil
	}
	if tr.Step == 0 {
		if err := evaluate(); errors.Is(err, errInterrupted) {
			return stop(false)
		} else if err != nil {
			return err
		}
	}
	for tr.Step < o.steps {
		start := time.Now()
		exs, err := tr.NextExamples(ds, tr.Outer.Accum)
		if err != nil {
			return err
		}
		rep, err := tr.TrainStep(exs)
		if err != nil {
			return err
		}
		tokens := 0
		for _, x := range exs {
			tokens += x.Segments.Len() + x.Outer.Len()
		}
		m := metric{Step: rep.Step, LR: ptr(rep.LR), OuterLoss: ptr(rep.OuterLoss), InnerFirst: ptr(rep.InnerFirst),
			InnerLast: ptr(rep.InnerLast), GradNorm: ptr(rep.GradNorm), Tokens: tokens, PeakBytes: rep.PeakBytes,
			Seconds: ptr(time.Since(start).Seconds())}
		summary := fmt.Sprintf("lr %.3g outer %.4f inner %.4f→%.4f |g| %.3g", rep.LR, rep.OuterLoss, rep.InnerFirst, rep.InnerLast, rep.GradNorm)
		if err := prog.step(m, summary); err != nil {
			return err
		}
		if ctx.Err() != nil && rep.Step < o.steps {
			return stop(false)
		}
		saved := false
		if o.saveEvery > 0 && rep.Step%o.saveEvery == 0 && rep.Step < o.steps {
			if _, err := ckpt.save(); err != nil {
				return err
			}
			saved = true
		}
		if o.evalEvery > 0 && rep.Step%o.evalEvery == 0 && rep.Step < o.steps {
			if err := evaluate(); errors.Is(err, errInterrupted) {
				return stop(saved)
			} else if err != nil {
				return err
			}
		}
	}
	if _, err := ckpt.save(); err != nil {
		return err
	}
	fmt.Fprintln(prog, learnedLRSummary(tr.Params.LRs))
	err = evaluate()
	if errors.Is(err, errInterrupted) {
		fmt.Fprintln(prog, "interrupted during the final evaluation; the final checkpoint is saved")
		return nil
	}
	return err
}

// learnedLRSummary describes the learned inner learning rates: per inner
// step, the geometric mean of the positive ones (a learned rate may turn
// negative) and their range over the LoRA tensors.
func learnedLRSummary(l *perk.LearnedLRs) string {
	var sb strings.Builder
	sb.WriteString("learned inner learning rates (per step: geometric mean of the positive ones, min–max over tensors):")
	for t := 0; t < l.Steps(); t++ {
		lo, hi, logSum, n := math.Inf(1), math.Inf(-1), 0.0, 0
		for _, v := range l.At(t) {
			lo, hi = min(lo, v), max(hi, v)
			if v > 0 {
				logSum += math.Log(v)
				n++
			}
		}
		mean := "n/a"
		if n > 0 {
			mean = strconv.FormatFloat(math.Exp(logSum/float64(n)), 'g', 3, 64)
		}
		fmt.Fprintf(&sb, " step %d %s (%.3g–%.3g);", t+1, mean, lo, hi)
	}
	return strings.TrimSuffix(sb.String(), ";")
}

func floats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'g', 6, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}

func bytesString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
