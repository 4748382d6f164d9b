package main

// The pretrain and icr modes: plain causal-LM training of a model created
// from a configuration (or continued from --model), and fine-tuning of the
// ICR baseline's LoRA adapter on prompts that hold the whole context.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/perkgo/perk/cmd/internal/outdir"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/gpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

// Modes of perk-train.
const (
	modePERK     = "perk"
	modePretrain = "pretrain"
	modeICR      = "icr"
)

// tokenizerConfigFile names the control tokens next to tokenizer.json.
const tokenizerConfigFile = "tokenizer_config.json"

// flagModes lists the flags that only some modes use: giving one to
// another mode is an error rather than silently ignored.
var flagModes = func() map[string][]string {
	m := map[string][]string{}
	add := func(modes []string, flags ...string) {
		for _, f := range flags {
			m[f] = modes
		}
	}
	add([]string{modePretrain}, "init-config", "init-std", "tokenizer", "corpus", "batch-tokens")
	add([]string{modePERK}, "dump-metagrad", "init-adapter", "init-state", "inner-steps", "unroll-start", "inner-opt", "inner-lr",
		"inner-betas", "inner-eps", "inner-weight-decay", "weighting", "weighting-hidden", "weighting-beta", "hvp",
		"fd-step", "fd-points", "inner-accum", "shuffle-docs", "outer-lr-lrs", "train-base", "resume", "save-every",
		"keep-last", "best-metric")
	add([]string{modePERK, modeICR}, "lora-rank", "lora-alpha", "rslora", "lora-dropout", "lora-targets",
		"eval-data", "eval-every", "eval-limit", "eval-max-new-tokens")
	return m
}()

// checkModeFlags rejects flags that mode does not use.
func checkModeFlags(fs *pflag.FlagSet, mode string) error {
	var bad []string
	fs.Visit(func(f *pflag.Flag) {
		if modes, ok := flagModes[f.Name]; ok && !slices.Contains(modes, mode) {
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return fmt.Errorf("--mode %s does not use %s", mode, strings.Join(bad, ", "))
	}
	return nil
}

// precision maps --precision to a dtype.
func precision(s string) (runtime.DType, error) {
	switch s {
	case "f32":
		return runtime.F32, nil
	case "f64":
		return runtime.F64, nil
	case "bf16":
		return 0, fmt.Errorf("--precision bf16 is not supported yet: models run in f32 (or f64 on cpu)")
	}
	return 0, fmt.Errorf("unknown --precision %q (want f32, f64 or bf16)", s)
}

// loadModelAndData loads the model in modelDir on backend, the tokenizer
// of --model and the records of --data, encoded for that model.
func loadModelAndData(o *options, modelDir string, backend nn.Backend, dt runtime.DType) (*model.Model, *perk.Dataset, error) {
	m, err := model.LoadModel(modelDir, backend, dt)
	if err != nil {
		return nil, nil, err
	}
	enc, err := perk.LoadEncoder(o.modelDir, m.Config())
	if err != nil {
		return nil, nil, err
	}
	enc.SupportTarget = o.supportTarget
	recs, err := perk.ReadRecordsWith(o.data, o.badRecords)
	if err != nil {
		return nil, nil, err
	}
	return m, &perk.Dataset{Records: recs, Encoder: enc}, nil
}

// openDevice opens --device's backend, after checking that --precision
// suits it (the GPU backend runs f32 models).
func openDevice(o *options, dt runtime.DType) (nn.Backend, error) {
	switch o.device {
	case "cpu", "emu", "cuda":
	default:
		return nil, fmt.Errorf("unknown --device %q (want cpu, emu or cuda)", o.device)
	}
	if dt == runtime.F64 && o.device != "cpu" {
		return nil, fmt.Errorf("--precision f64 needs --device cpu (the GPU backend runs f32 models)")
	}
	b, err := gpu.Open(o.device)
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w", o.device, err)
	}
	return b, nil
}

func (o *options) outerConfig() (perk.OuterConfig, error) {
	if len(o.outerBetas) != 2 {
		return perk.OuterConfig{}, fmt.Errorf("--outer-betas takes two values b1,b2")
	}
	c := perk.OuterConfig{LR: o.outerLR, Beta1: o.outerBetas[0], Beta2: o.outerBetas[1], Eps: o.outerEps,
		WeightDecay: o.outerWD, Steps: max(o.steps, 1), WarmupFrac: o.warmup, ClipNorm: o.clip, Accum: max(o.gradAccum, 1)}
	return c, c.Validate()
}

// loadTokenizer resolves --tokenizer for pretraining: a tokenizer.json
// path, "words:N" (built from the records), or, when empty, the one in
// --model. It returns the tokenizer, its JSON and the tokenizer_config.json
// to copy next to it (nil when there is none).
func loadTokenizer(o *options, recs []perk.Record) (*tokenizer.Tokenizer, []byte, []byte, error) {
	spec := o.tokSpec
	if spec == "" {
		if o.modelDir == "" {
			return nil, nil, nil, fmt.Errorf("--mode pretrain needs --tokenizer (a tokenizer.json or words:N) with --init-config")
		}
		spec = filepath.Join(o.modelDir, "tokenizer.json")
	}
	if n, ok := strings.CutPrefix(spec, "words:"); ok {
		k, err := strconv.Atoi(n)
		if err != nil || k < 0 {
			return nil, nil, nil, fmt.Errorf("--tokenizer %s: want words:N with N ≥ 0", spec)
		}
		var texts []string
		for _, r := range recs {
			texts = append(texts, r.Context...)
			texts = append(texts, perk.Prompt(len(r.Context), r.Question), " "+r.Answer)
			texts = append(texts, r.Support...)
		}
		data, err := tokenizer.BuildWordLevel(texts, k, 2)
		if err != nil {
			return nil, nil, nil, err
		}
		tok, err := tokenizer.Parse(data)
		return tok, data, nil, err
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--tokenizer: %w", err)
	}
	tok, err := tokenizer.Load(spec)
	if err != nil {
		return nil, nil, nil, err
	}
	tc, err := os.ReadFile(filepath.Join(filepath.Dir(spec), tokenizerConfigFile))
	if err != nil && !os.IsNotExist(err) {
		return nil, nil, nil, err
	}
	return tok, data, tc, nil
}

// runPretrain trains every base weight on the causal-LM loss of sequences
// rendered from the records and writes a model directory.
func runPretrain(ctx context.Context, fs *pflag.FlagSet, o *options, stdout io.Writer) (err error) {
	if err := checkModeFlags(fs, modePretrain); err != nil {
		return err
	}
	if (o.modelDir == "") == (o.initConfig == "") {
		return fmt.Errorf("--mode pretrain needs exactly one of --init-config (a new model) and --model (continue training one)")
	}
	if o.data == "" || o.out == "" || o.steps <= 0 {
		return fmt.Errorf("--mode pretrain needs --data, --out DIR and --steps N > 0")
	}
	dt, err := precision(o.precision)
	if err != nil {
		return err
	}
	if err := outdir.Check("--out", o.out); err != nil {
		return err
	}
	policy, err := model.ParsePolicy(o.policy)
	if err != nil {
		return err
	}
	kinds, err := perk.ParseCorpusKinds(o.corpus)
	if err != nil {
		return fmt.Errorf("--corpus: %w", err)
	}
	if o.batchTokens < 1 {
		return fmt.Errorf("--batch-tokens %d must be ≥ 1", o.batchTokens)
	}
	oc, err := o.outerConfig()
	if err != nil {
		return err
	}
	recs, err := perk.ReadRecordsWith(o.data, o.badRecords)
	if err != nil {
		return err
	}
	tok, tokJSON, tokConfig, err := loadTokenizer(o, recs)
	if err != nil {
		return err
	}
	backend, err := openDevice(o, dt)
	if err != nil {
		return err
	}
	var m *model.Model
	if o.initConfig != "" {
		cfg, err := model.LoadConfig(o.initConfig)
		if err != nil {
			return err
		}
		if cfg.Vocab != tok.VocabSize() {
			fmt.Fprintf(stdout, "vocabulary: %d tokens (the tokenizer's; the config said %d)\n", tok.VocabSize(), cfg.Vocab)
			cfg.Vocab = tok.VocabSize()
		}
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("--init-config %s: %w", o.initConfig, err)
		}
		if m, err = model.NewRandom(cfg, backend, dt, model.RandomOptions{Seed: o.seed, Std: o.initStd}); err != nil {
			return err
		}
	} else if m, err = model.LoadModel(o.modelDir, backend, dt); err != nil {
		return err
	}
	cfg := m.Config()
	if tok.VocabSize() > cfg.Vocab {
		return fmt.Errorf("the tokenizer has %d tokens, more than the model's vocabulary of %d", tok.VocabSize(), cfg.Vocab)
	}
	eos, ok := tok.TokenID(tokenizer.EndOfText)
	if tc, err := tokenizer.ParseConfig(tokConfig); tokConfig != nil && err == nil && tc.EOSToken != "" {
		eos, ok = tok.TokenID(tc.EOSToken)
	}
	if !ok {
		return fmt.Errorf("the tokenizer has no end-of-sequence token")
	}
	enc := perk.NewEncoder(tok, eos, cfg)
	enc.SupportTarget = o.supportTarget
	seqs, err := perk.PretrainCorpus(enc, recs, kinds, o.seed)
	if err != nil {
		return err
	}
	ntok := 0
	for _, s := range seqs {
		ntok += len(s)
	}
	pk, err := perk.NewPacker(seqs, o.seed)
	if err != nil {
		return err
	}
	pt, err := perk.NewPretrainer(m, oc)
	if err != nil {
		return err
	}
	pt.Policy = policy
	nparams := m.Params().NumElements()
	fmt.Fprintf(stdout, "perk-train pretrain: %s d=%d layers=%d heads=%d vocab=%d (%d parameters); corpus %s: %d sequences, %d tokens; %d steps of ≤%d tokens\n",
		cfg.ModelType, cfg.Hidden, cfg.Layers, cfg.Heads, cfg.Vocab, nparams, strings.Join(kinds, ","), len(seqs), ntok, o.steps, o.batchTokens)
	prog, err := newProgress(stdout, o, modePretrain, 0, backend)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := prog.close(); err == nil {
			err = cerr
		}
	}()
	start := time.Now()
	seen := 0
	for pt.Step < o.steps {
		t0 := time.Now()
		rep, err := pt.TrainStep(pk.Next(o.batchTokens))
		if err != nil {
			return err
		}
		seen += rep.Tokens
		m := metric{Step: rep.Step, LR: ptr(rep.LR), Loss: ptr(rep.Loss), GradNorm: ptr(rep.GradNorm), Tokens: rep.Tokens,
			PeakBytes: rep.PeakBytes, Seconds: ptr(time.Since(t0).Seconds())}
		summary := fmt.Sprintf("lr %.3g loss %.4f |g| %.3g epoch %.2f", rep.LR, rep.Loss, rep.GradNorm, float64(seen)/float64(ntok))
		if err := prog.step(m, summary); err != nil {
			return err
		}
		if ctx.Err() != nil && rep.Step < o.steps {
			fmt.Fprintf(prog, "interrupted at step %d of %d; saving the model trained so far\n", rep.Step, o.steps)
			break
		}
	}
	if err := model.SaveModel(o.out, m, model.SaveOptions{DType: storage(dt)}); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(o.out, "tokenizer.json"), tokJSON, 0o644); err != nil {
		return err
	}
	if tokConfig != nil {
		if err := os.WriteFile(filepath.Join(o.out, tokenizerConfigFile), tokConfig, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(prog, "saved %s (%d steps, %.1f epochs, %v)\n", o.out, pt.Step, float64(seen)/float64(ntok), time.Since(start).Round(time.Millisecond))
	return nil
}

func storage(dt runtime.DType) runtime.DType {
	if dt == runtime.F64 {
		return runtime.F64
	}
	return runtime.F32
}

// runICR fine-tunes the ICR baseline's LoRA adapter (frozen base) on the
// records with the context in the prompt and writes it as a PEFT adapter
// directory, the checkpoint perk-eval reads in icr mode.
func runICR(ctx context.Context, fs *pflag.FlagSet, o *options, stdout io.Writer) (err error) {
	if err := checkModeFlags(fs, modeICR); err != nil {
		return err
	}
	if o.modelDir == "" || o.data == "" || o.out == "" || o.steps <= 0 {
		return fmt.Errorf("--mode icr needs --model, --data, --out DIR and --steps N > 0")
	}
	if o.evalSets, err = loadEvalSets(o); err != nil {
		return err
	}
	dt, err := precision(o.precision)
	if err != nil {
		return err
	}
	if err := outdir.Check("--out", o.out); err != nil {
		return err
	}
	policy, err := model.ParsePolicy(o.policy)
	if err != nil {
		return err
	}
	oc, err := o.outerConfig()
	if err != nil {
		return err
	}
	backend, err := openDevice(o, dt)
	if err != nil {
		return err
	}
	m, ds, err := loadModelAndData(o, o.modelDir, backend, dt)
	if err != nil {
		return err
	}
	cfg := m.Config()
	targets := o.loraTargets
	if len(targets) == 0 {
		targets = model.DefaultTargets(cfg.ModelType)
	}
	lc := model.LoRAConfig{R: o.loraRank, Alpha: o.loraAlpha, Dropout: o.loraDropout, TargetModules: targets, UseRSLoRA: o.rslora, BaseModel: o.modelDir}
	ad, err := model.NewAdapter(m, lc, o.seed)
	if err != nil {
		return err
	}
	tr, err := perk.NewICRTrainer(m, ad, oc, o.seed)
	if err != nil {
		return err
	}
	tr.Policy = policy
	fmt.Fprintf(stdout, "perk-train icr: %d records, LoRA r=%d on %s, %d steps of %d examples\n",
		len(ds.Records), lc.R, strings.Join(targets, ","), o.steps, oc.Accum)
	prog, err := newProgress(stdout, o, modeICR, 0, backend)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := prog.close(); err == nil {
			err = cerr
		}
	}()
	hook, err := newEvalHook(o, modeICR, 0, prog, prog, func(recs []perk.Record) (evalResult, error) {
		return evalICR(ctx, m, ad, ds.Encoder, recs, o.evalMaxNew)
	})
	if err != nil {
		return err
	}
	if err := hook.run(0); errors.Is(err, errInterrupted) {
		fmt.Fprintln(prog, "interrupted before the first step; nothing to save")
		return nil
	} else if err != nil {
		return err
	}
	for tr.Step < o.steps {
		t0 := time.Now()
		xs, err := tr.NextExamples(ds, oc.Accum)
		if err != nil {
			return err
		}
		rep, err := tr.TrainStep(xs)
		if err != nil {
			return err
		}
		tokens := 0
		for _, x := range xs {
			tokens += x.Seq.Len()
		}
		m := metric{Step: rep.Step, LR: ptr(rep.LR), Loss: ptr(rep.Loss), GradNorm: ptr(rep.GradNorm), Tokens: tokens,
			PeakBytes: rep.PeakBytes, Seconds: ptr(time.Since(t0).Seconds())}
		if err := prog.step(m, fmt.Sprintf("lr %.3g loss %.4f |g| %.3g", rep.LR, rep.Loss, rep.GradNorm)); err != nil {
			return err
		}
		if ctx.Err() != nil && rep.Step < o.steps {
			fmt.Fprintf(prog, "interrupted at step %d of %d; saving the adapter trained so far\n", rep.Step, o.steps)
			break
		}
		if o.evalEvery > 0 && rep.Step%o.evalEvery == 0 && rep.Step < o.steps {
			if err := hook.run(rep.Step); errors.Is(err, errInterrupted) {
				fmt.Fprintf(prog, "interrupted at step %d of %d; saving the adapter trained so far\n", rep.Step, o.steps)
				break
			} else if err != nil {
				return err
			}
		}
	}
	// Saving replaces --out atomically: the logs are written back into it.
	if err := prog.preserve(func() error { return tr.Save(o.out) }); err != nil {
		return err
	}
	fmt.Fprintf(prog, "saved %s\n", o.out)
	if hook != nil {
		if err := hook.write(); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	err = hook.run(tr.Step)
	if errors.Is(err, errInterrupted) {
		fmt.Fprintln(prog, "interrupted during the final evaluation; the adapter is saved")
		return nil
	}
	return err
}

// evalSet is one held-out records file of --eval-data.
type evalSet struct {
	name string
	recs []perk.Record
}

// evalFile is the table of held-out results written to --out.
const evalFile = "eval.tsv"

// loadEvalSets reads --eval-data (at most --eval-limit records of each).
func loadEvalSets(o *options) ([]evalSet, error) {
	var out []evalSet
	for _, path := range o.evalData {
		recs, err := perk.ReadRecordsWith(path, o.badRecords)
		if err != nil {
			return nil, fmt.Errorf("--eval-data: %w", err)
		}
		if o.evalLimit > 0 && len(recs) > o.evalLimit {
			recs = recs[:o.evalLimit]
		}
		name := strings.TrimSuffix(filepath.Base(path), ".jsonl")
		for _, prev := range out {
			if prev.name == name {
				return nil, fmt.Errorf("--eval-data: two files named %s (eval.tsv and metrics.jsonl tell sets apart by file name); rename one", name)
			}
		}
		out = append(out, evalSet{name: name, recs: recs})
	}
	return out, nil
}

// evalResult is one held-out evaluation: the mean answer loss (the
// cross-entropy of the target and EOS tokens, as in training) and the
// exact-match accuracy of greedy answers.
type evalResult struct {
	n, correct, errors int
	loss               float64
}

// answerLoss is the mean cross-entropy of the tokens after promptLen of seq
// under the model with adapter ad.
func answerLoss(m *model.Model, ad *model.Adapter, seq model.Batch, promptLen int) (float64, error) {
	pass, err := m.Forward(seq, model.Options{Adapter: ad})
	if err != nil {
		return 0, err
	}
	defer pass.Release()
	labels := make([]int32, seq.Len())
	for i := range labels {
		labels[i] = nn.IgnoreIndex
		if i+1 >= promptLen && i+1 < len(labels) {
			labels[i] = seq.IDs[i+1]
		}
	}
	return pass.Loss(model.Targets{Labels: labels})
}

// errInterrupted ends an evaluation that an interrupt (Ctrl-C) cut short.
var errInterrupted = errors.New("interrupted")

// evalPERK learns each record's context at test time from p, then scores
// the answer loss and the greedy answer from the adapted LoRA. A cancelled
// ctx stops it between records with errInterrupted.
func evalPERK(ctx context.Context, e *perk.Engine, p *perk.Params, enc *perk.Encoder, recs []perk.Record, maxNew int, seed uint64) (evalResult, error) {
	var res evalResult
	b := e.Model.Backend()
	for i, r := range recs {
		if ctx.Err() != nil {
			return res, errInterrupted
		}
		res.n++
		ex, err := enc.Encode(r, nil)
		if err != nil {
			res.errors++
			continue
		}
		phi, _, err := e.Adapt(p, ex, seed+uint64(i))
		if err != nil {
			return res, fmt.Errorf("record %q: %w", r.ID, err)
		}
		loss, err := answerLoss(e.Model, phi, ex.Outer, ex.PromptLen)
		var g *perk.Generation
		if err == nil {
			prompt := make([]int, ex.PromptLen)
			for k := range prompt {
				prompt[k] = int(ex.Outer.IDs[k])
			}
			g, err = perk.Greedy(e.Model, phi, prompt, perk.GenerateConfig{MaxNewTokens: maxNew, EOS: enc.EOS})
		}
		for _, t := range phi.Params().Tensors() {
			_ = b.Release(t)
		}
		if err != nil {
			return res, fmt.Errorf("record %q: %w", r.ID, err)
		}
		res.loss += loss
		if perk.ExactMatch(enc.Tok.DecodeSkipSpecial(g.IDs), r.Answer) {
			res.correct++
		}
	}
	return res, nil
}

// evalICR scores the answer loss and the greedy answer with the context in
// the prompt and the adapter ad; a cancelled ctx stops it between records
// with errInterrupted.
func evalICR(ctx context.Context, m *model.Model, ad *model.Adapter, enc *perk.Encoder, recs []perk.Record, maxNew int) (evalResult, error) {
	var res evalResult
	for _, r := range recs {
		if ctx.Err() != nil {
			return res, errInterrupted
		}
		res.n++
		x, err := enc.EncodeICR(r)
		if err != nil { // e.g. longer than the model's positions: wrong
			res.errors++
			continue
		}
		loss, err := answerLoss(m, ad, x.Seq, x.PromptLen)
		if err != nil {
			return res, fmt.Errorf("record %q: %w", r.ID, err)
		}
		a, err := perk.ICRAnswer(m, ad, enc, r, perk.GenerateConfig{MaxNewTokens: maxNew, EOS: enc.EOS})
		if err != nil {
			return res, fmt.Errorf("record %q: %w", r.ID, err)
		}
		res.loss += loss
		if perk.ExactMatch(a.Text, r.Answer) {
			res.correct++
		}
	}
	return res, nil
}

// evalSummary is one held-out set's result at one step.
type evalSummary struct {
	name           string
	n, unanswered  int
	loss, accuracy float64
}

// evalHook evaluates every held-out set at a step, prints one line per set
// and records a row per set in --out/eval.tsv (and metrics.jsonl). The
// rows are kept and the whole file rewritten each time, so that it
// survives the atomic replacement of --out by an adapter checkpoint (icr
// mode); a resumed run keeps the rows of the steps up to its start.
type evalHook struct {
	sets    []evalSet
	mode    string
	path    string
	rows    []string
	out     io.Writer
	metrics *progress
	score   func(recs []perk.Record) (evalResult, error)
	// last holds the results of the latest run, one per set.
	last []evalSummary
}

const evalHeader = "mode\tstep\tdata\tn\tanswer_loss\taccuracy\tunanswered"

// newEvalHook loads --eval-data; it returns nil when there is none. A
// resumed run (first > 0) keeps eval.tsv's rows up to step first.
func newEvalHook(o *options, mode string, first int, out io.Writer, metrics *progress, score func([]perk.Record) (evalResult, error)) (*evalHook, error) {
	sets := o.evalSets
	if len(sets) == 0 {
		return nil, nil
	}
	h := &evalHook{sets: sets, mode: mode, path: filepath.Join(o.out, evalFile), out: out, metrics: metrics, score: score}
	if first > 0 {
		if data, err := os.ReadFile(h.path); err == nil {
			for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
				f := strings.Split(l, "\t")
				if l == "" || l == evalHeader || len(f) < 2 {
					continue
				}
				if step, err := strconv.Atoi(f[1]); err == nil && step <= first {
					h.rows = append(h.rows, l)
				}
			}
		}
	}
	return h, nil
}

// run evaluates at step.
func (h *evalHook) run(step int) error {
	if h == nil {
		return nil
	}
	h.last = h.last[:0]
	for _, s := range h.sets {
		t0 := time.Now()
		r, err := h.score(s.recs)
		if err != nil {
			return fmt.Errorf("evaluating %s: %w", s.name, err)
		}
		sum := evalSummary{name: s.name, n: r.n, unanswered: r.errors, accuracy: float64(r.correct) / float64(max(r.n, 1))}
		if answered := r.n - r.errors; answered > 0 {
			sum.loss = r.loss / float64(answered)
		}
		note := ""
		if r.errors > 0 {
			note = fmt.Sprintf(", %d unanswered (counted wrong)", r.errors)
		}
		fmt.Fprintf(h.out, "eval step %d %s: answer loss %.4f, exact match %.1f%% (%d/%d%s) %.1fs\n", step, s.name, sum.loss,
			100*sum.accuracy, r.correct, r.n, note, time.Since(t0).Seconds())
		h.rows = append(h.rows, fmt.Sprintf("%s\t%d\t%s\t%d\t%.6f\t%.6f\t%d", h.mode, step, s.name, r.n, sum.loss, sum.accuracy, r.errors))
		h.last = append(h.last, sum)
		if h.metrics != nil {
			m := metric{Kind: "eval", Step: step, Data: s.name, N: r.n, AnswerLoss: ptr(sum.loss), Accuracy: ptr(sum.accuracy),
				Unanswered: ptr(r.errors), Seconds: ptr(time.Since(t0).Seconds())}
			if err := h.metrics.log(m); err != nil {
				return err
			}
		}
	}
	return h.write()
}

// write rewrites eval.tsv from the rows kept.
func (h *evalHook) write() error {
	if err := os.MkdirAll(filepath.Dir(h.path), 0o755); err != nil {
		return err
	}
	return writeFileAtomic(h.path, []byte(evalHeader+"\n"+strings.Join(h.rows, "\n")+"\n"))
}
