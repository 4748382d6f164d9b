package main

// bench scaling: the end-to-end run the PERK paper reports. For each context
// length it generates needle records (perk/tasks), answers each one with
// test-time learning (PERK: perk.Engine.Answer, no context in the prompt)
// and with the context in the prompt (ICR: perk.ICRAnswer) — the two calls
// perk.Evaluator makes — and reports wall time and peak memory per example;
// with --meta it also measures meta-training, one meta-gradient per example.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/gpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/perk/tasks"
	"github.com/perkgo/perk/runtime"
)

// Files written to --out.
const (
	scalingJSONFile = "scaling.json"
	scalingMDFile   = "scaling.md"
	scalingPNGFile  = "scaling.png"
)

// modeMeta is the mode that measures meta-training: one meta-gradient per
// example (the inner steps, their VJPs and the second-order terms).
const modeMeta = "meta"

// Status of a (length, mode) cell.
const (
	statusOK      = "ok"
	statusOOM     = "oom"     // ran out of memory at this length
	statusSkipped = "skipped" // not run: out of memory at a shorter length
)

// scalingOptions holds the flags of `bench scaling`.
type scalingOptions struct {
	device, lengths, modelDir, out, policy                                  string
	examples, innerSteps, loraRank, segmentTokens, maxNewTok, groupSegments int
	seed                                                                    uint64
	json, meta                                                              bool
}

func newScalingFlags(o *scalingOptions) *pflag.FlagSet {
	fs := pflag.NewFlagSet("bench scaling", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.device, "device", "cpu", "device: cpu (pure-Go backend), emu (the CUDA kernels on the CPU emulator) or cuda (an NVIDIA GPU; needs a binary built with -tags cuda)")
	fs.StringVar(&o.lengths, "lengths", "", "comma-separated context lengths in tokens, e.g. `256,512` (default "+joinInts(defaultLengths("cpu"))+" on cpu and emu, "+joinInts(defaultLengths("cuda"))+" on cuda)")
	fs.StringVar(&o.modelDir, "model", "", "Hugging Face model `DIR` (config.json, model.safetensors, tokenizer.json); default: a random GPT-2 built in memory (d=64, 2 layers on cpu/emu; GPT-2 small's shape on cuda) with a byte-level tokenizer and n_positions sized for the longest length")
	fs.IntVar(&o.examples, "examples", 1, "`N` records per length (each answered in both modes)")
	fs.IntVar(&o.innerSteps, "inner-steps", perk.DefaultInnerConfig().Steps, "PERK inner (test-time learning) steps")
	fs.IntVar(&o.loraRank, "lora-rank", 16, "LoRA rank of PERK's adapter and of ICR's")
	fs.IntVar(&o.segmentTokens, "segment-tokens", tasks.DefaultSegmentTokens, "most tokens per context segment")
	fs.IntVar(&o.groupSegments, "group-segments", 0, "PERK: learn at most `G` segments at a time, accumulating the gradient of each inner step over groups (perk-train's --inner-accum; less memory, same result up to rounding); 0: all segments at once")
	fs.StringVar(&o.policy, "checkpoint-policy", "none", "PERK: activation checkpointing of test-time learning, none or blocks")
	fs.BoolVar(&o.meta, "meta", false, "also measure meta-training: one meta-gradient per example (the inner steps, their VJPs and finite-difference HVPs through the last two), with the same segments grouping and checkpointing")
	fs.IntVar(&o.maxNewTok, "max-new-tokens", 16, "tokens decoded per answer, in both modes (no early stop at EOS, so both decode the same number)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the records, the random model and the LoRA initialisation")
	fs.StringVar(&o.out, "out", "", "output `DIR` for scaling.json, scaling.md and scaling.png (created; default: no files)")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON (scaling.json's content) instead of the table")
	return fs
}

func scalingUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, `usage: bench scaling [flags]

PERK (test-time learning of the context into a LoRA adapter, then answering
without it) vs ICR (the context in the prompt) at growing context lengths:
wall time and peak memory per example, as far as memory allows (a mode that
runs out of device memory is marked OOM and stops). Records are
single-needle tasks; the meta-parameters are freshly initialised, so the
figures measure cost, not accuracy.

flags:
%s`, fs.FlagUsages())
}

// defaultLengths returns the context lengths of a device: small ones on
// the CPU, the paper's 1K…128K on a GPU.
func defaultLengths(device string) []int {
	if device == "cuda" {
		return []int{1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14, 1 << 15, 1 << 16, 1 << 17}
	}
	return []int{256, 512, 1024, 2048}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// parseLengths reads a comma-separated list of positive token counts and
// returns it sorted, without repeats.
func parseLengths(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--lengths is empty (want comma-separated token counts, e.g. 256,512)")
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		switch {
		case f == "":
			return nil, fmt.Errorf("--lengths %q: empty entry", s)
		case err != nil:
			return nil, fmt.Errorf("--lengths %q: %q is not a whole number of tokens", s, f)
		case n <= 0:
			return nil, fmt.Errorf("--lengths %q: %d must be positive", s, n)
		case n > tasks.MaxTokens:
			return nil, fmt.Errorf("--lengths %q: %d is more than the maximum of %d tokens", s, n, tasks.MaxTokens)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// parseScaling parses and checks the flags; help is true when --help was
// asked for (usage is then printed and there is nothing to run).
func parseScaling(args []string, stderr io.Writer) (o scalingOptions, lengths []int, help bool, err error) {
	fs := newScalingFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() { scalingUsage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return o, nil, true, nil
		}
		return o, nil, false, err
	}
	if fs.NArg() > 0 {
		return o, nil, false, fmt.Errorf("scaling: unexpected arguments %q", fs.Args())
	}
	if !slices.Contains(gpu.Kinds(), o.device) {
		return o, nil, false, fmt.Errorf("unknown --device %q (want cpu, emu or cuda)", o.device)
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"examples", o.examples}, {"inner-steps", o.innerSteps}, {"lora-rank", o.loraRank},
		{"segment-tokens", o.segmentTokens}, {"max-new-tokens", o.maxNewTok}} {
		if f.v < 1 {
			return o, nil, false, fmt.Errorf("--%s %d must be at least 1", f.name, f.v)
		}
	}
	if o.groupSegments < 0 {
		return o, nil, false, fmt.Errorf("--group-segments %d must be ≥ 0", o.groupSegments)
	}
	if _, err := model.ParsePolicy(o.policy); err != nil {
		return o, nil, false, err
	}
	lengths = defaultLengths(o.device)
	if fs.Changed("lengths") {
		if lengths, err = parseLengths(o.lengths); err != nil {
			return o, nil, false, err
		}
	}
	return o, lengths, false, nil
}

// runScaling is `bench scaling`: the table (or JSON) goes to stdout,
// progress to stderr.
func runScaling(args []string, stdout, stderr io.Writer) error {
	return runScalingWith(args, stdout, stderr)
}

// runScalingWith is runScaling with extra options for a GPU backend (a
// test caps the memory pool with gpu.WithPoolLimit).
func runScalingWith(args []string, stdout, stderr io.Writer, opts ...gpu.Option) error {
	o, lengths, help, err := parseScaling(args, stderr)
	if err != nil || help {
		return err
	}
	b, err := gpu.Open(o.device, opts...)
	if err != nil {
		return fmt.Errorf("--device %s: %w", o.device, err)
	}
	defer closeBackend(b)
	src, err := loadTextSource(o.modelDir)
	if err != nil {
		return err
	}
	recs, err := scalingRecords(&o, lengths, src.tok)
	if err != nil {
		return err
	}
	if err := src.checkPositions(lengths, recs); err != nil {
		return err
	}
	m, desc, err := src.model(&o, b, recs)
	if err != nil {
		return err
	}
	r, err := newScalingRunner(&o, m, src)
	if err != nil {
		return err
	}
	if o.device != "cuda" {
		fmt.Fprintf(stderr, "bench scaling: --device %s runs small lengths (%s tokens) on the CPU; the paper's 1K…128K lengths need --device cuda\n", o.device, joinInts(lengths))
	}
	measure := func(mode string, k int) (scalingResult, error) { return r.measure(mode, recs[k]) }
	modes := perk.EvalModes()
	if o.meta {
		modes = append(modes, modeMeta)
	}
	results, err := sweep(lengths, modes, measure, func(res scalingResult) { progress(stderr, res) })
	if err != nil {
		return err
	}
	rep := newScalingReport(&o, b, desc, lengths, results)
	return writeScaling(rep, o.out, o.json, stdout)
}

// closeBackend releases a GPU backend's pool and device (nn/cpu has
// nothing to close).
func closeBackend(b nn.Backend) {
	if c, ok := b.(io.Closer); ok {
		_ = c.Close()
	}
}

// textSource is the tokenizer and, for --model, the configuration of the
// model the run uses, available before any weight is loaded.
type textSource struct {
	dir string // --model, or "" for the built-in model
	tok *tokenizer.Tokenizer
	eos int
	cfg model.Config // of --model; the built-in one is sized later
}

// loadTextSource reads the tokenizer and configuration of --model, or
// builds the byte-level tokenizer of the built-in model.
func loadTextSource(dir string) (*textSource, error) {
	if dir == "" {
		data, err := tokenizer.BuildWordLevel(nil, 0, 0)
		if err != nil {
			return nil, fmt.Errorf("built-in tokenizer: %w", err)
		}
		tok, err := tokenizer.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("built-in tokenizer: %w", err)
		}
		eos, ok := tok.TokenID(tokenizer.EndOfText)
		if !ok {
			return nil, fmt.Errorf("built-in tokenizer: no %s token", tokenizer.EndOfText)
		}
		return &textSource{tok: tok, eos: eos}, nil
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("--model %s: %w", dir, err)
	}
	eos, err := perk.EOSToken(tok, dir)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	return &textSource{dir: dir, tok: tok, eos: eos, cfg: cfg}, nil
}

// scalingRecords generates o.examples single-needle records per length,
// counting tokens exactly with the model's tokenizer. A length too short
// for the needle, or a segment limit too small for it, is an error here,
// before any model is built.
func scalingRecords(o *scalingOptions, lengths []int, tok *tokenizer.Tokenizer) ([][]tasks.Item, error) {
	out := make([][]tasks.Item, len(lengths))
	for k, n := range lengths {
		g, err := tasks.NewNeedle(tasks.NeedleOptions{Kind: "single", Options: tasks.Options{
			Tokens: n, SegmentTokens: o.segmentTokens, Seed: o.seed, Counter: tasks.TokenizerCounter(tok)}})
		if err != nil {
			return nil, fmt.Errorf("--lengths %d: %w", n, err)
		}
		for i := range o.examples {
			it, err := g.Item(i)
			if err != nil {
				return nil, fmt.Errorf("--lengths %d: %w", n, err)
			}
			out[k] = append(out[k], it)
		}
	}
	return out, nil
}

// builtinConfig is the built-in random GPT-2: tiny on the CPU, GPT-2
// small's shape on a GPU, with the byte-level vocabulary.
func builtinConfig(device string, positions, vocab int) model.Config {
	c := model.Config{ModelType: model.GPT2, Hidden: 64, Layers: 2, Heads: 4, KVHeads: 4, Intermediate: 256,
		Vocab: vocab, MaxPositions: positions, NormEps: 1e-5, Activation: "gelu_new", TieWordEmbeddings: true}
	if device == "cuda" {
		c.Hidden, c.Layers, c.Heads, c.KVHeads, c.Intermediate = 768, 12, 12, 12, 3072
	}
	return c
}

// encoder returns the records' encoder for a model configuration.
func (s *textSource) encoder(cfg model.Config) *perk.Encoder {
	return perk.NewEncoder(s.tok, s.eos, cfg)
}

// longestPrompt returns the most tokens an ICR prompt of the records has
// (PERK's sequences are shorter: a segment, or the question alone).
func (s *textSource) longestPrompt(recs [][]tasks.Item) int {
	longest := 0
	for _, items := range recs {
		for _, it := range items {
			longest = max(longest, len(s.tok.Encode(perk.ICRPrompt(it.Record.Context, it.Record.Question))))
		}
	}
	return longest
}

// checkPositions reports a record whose ICR prompt does not fit --model's
// positions (the built-in model is sized to fit them all).
func (s *textSource) checkPositions(lengths []int, recs [][]tasks.Item) error {
	if s.dir == "" {
		return nil
	}
	enc := s.encoder(s.cfg)
	for k, items := range recs {
		for _, it := range items {
			if _, err := enc.ICRPromptIDs(it.Record); err != nil {
				return fmt.Errorf("length %d: %w", lengths[k], err)
			}
		}
	}
	return nil
}

// model builds the built-in random model, with positions for the longest
// ICR prompt plus the decoded tokens, or loads --model. It returns the
// model and a description.
func (s *textSource) model(o *scalingOptions, b nn.Backend, recs [][]tasks.Item) (*model.Model, string, error) {
	if s.dir == "" {
		cfg := builtinConfig(o.device, s.longestPrompt(recs)+o.maxNewTok, s.tok.VocabSize())
		m, err := model.NewRandom(cfg, b, runtime.F32, model.RandomOptions{Seed: o.seed})
		if err != nil {
			return nil, "", fmt.Errorf("built-in model: %w", err)
		}
		return m, fmt.Sprintf("random GPT-2 built in memory: d=%d, %d layers, %d heads, FFN %d, byte-level vocabulary of %d, %d positions",
			cfg.Hidden, cfg.Layers, cfg.Heads, cfg.Intermediate, cfg.Vocab, cfg.MaxPositions), nil
	}
	m, err := model.LoadModel(s.dir, b, runtime.F32)
	if err != nil {
		return nil, "", fmt.Errorf("--model: %w", err)
	}
	c := m.Config()
	return m, fmt.Sprintf("%s (%s: d=%d, %d layers, vocabulary %d)", s.dir, c.ModelType, c.Hidden, c.Layers, c.Vocab), nil
}

// poolStats is what a GPU backend reports of its memory pool.
type poolStats interface {
	Stats() runtime.Stats
	ResetPeak()
}

// scalingRunner answers records in both modes on one model: PERK with
// freshly initialised meta-parameters (perk-train's LoRA alpha, rsLoRA and
// token weighting), ICR with an adapter of the same rank.
type scalingRunner struct {
	evals map[string]*perk.Evaluator
	gen   perk.GenerateConfig
	pool  poolStats // nil on the CPU backend
	warm  map[string]bool
	group int // --group-segments
}

func newScalingRunner(o *scalingOptions, m *model.Model, src *textSource) (*scalingRunner, error) {
	cfg := m.Config()
	lora := model.LoRAConfig{R: o.loraRank, Alpha: 16, UseRSLoRA: true, TargetModules: model.DefaultTargets(cfg.ModelType)}
	params, err := perk.NewParams(m, perk.ParamsConfig{LoRA: lora, Steps: o.innerSteps, LR: perk.DefaultInnerLR, Weighting: true, Seed: o.seed})
	if err != nil {
		return nil, fmt.Errorf("PERK parameters: %w", err)
	}
	icrAdapter, err := model.NewAdapter(m, lora, o.seed+1)
	if err != nil {
		return nil, fmt.Errorf("ICR adapter: %w", err)
	}
	inner := perk.DefaultInnerConfig()
	inner.Steps = o.innerSteps
	policy, err := model.ParsePolicy(o.policy)
	if err != nil {
		return nil, err
	}
	enc := src.encoder(cfg)
	r := &scalingRunner{
		evals: map[string]*perk.Evaluator{
			perk.ModePERK: {Mode: perk.ModePERK, Encoder: enc, Engine: &perk.Engine{Model: m, Inner: inner, Policy: policy}, Params: params,
				MaxNewTokens: o.maxNewTok, Seed: o.seed},
			perk.ModeICR: {Mode: perk.ModeICR, Encoder: enc, Model: m, Adapter: icrAdapter, MaxNewTokens: o.maxNewTok},
		},
		// EOS -1: decode exactly MaxNewTokens in both modes.
		gen:   perk.GenerateConfig{MaxNewTokens: o.maxNewTok, EOS: -1},
		warm:  map[string]bool{},
		group: o.groupSegments,
	}
	for _, ev := range r.evals {
		if err := ev.Validate(); err != nil {
			return nil, err
		}
	}
	if p, ok := m.Backend().(poolStats); ok {
		r.pool = p
	}
	return r, nil
}

// cost is what one example cost in one mode.
type cost struct {
	promptTokens  int
	adapt, decode time.Duration
	peak          int64 // tracked
}

// run answers record i of a length the way perk.Evaluator.Predict does,
// keeping the error (an out-of-memory error must stay recognisable), or in
// the meta mode computes its meta-gradient with PERK's engine.
func (r *scalingRunner) run(mode string, rec perk.Record, i int) (cost, error) {
	ev := r.evals[perk.ModePERK]
	if mode != perk.ModeICR && r.group > 0 { // groups of at most r.group segments
		ev.Engine.Inner.Accum = (len(rec.Context) + r.group - 1) / r.group
	}
	var a *perk.Answer
	var err error
	switch mode {
	case perk.ModePERK:
		a, err = ev.Engine.Answer(ev.Params, ev.Encoder, rec, r.gen, ev.Seed+uint64(i))
	case perk.ModeICR:
		icr := r.evals[perk.ModeICR]
		a, err = perk.ICRAnswer(icr.Model, icr.Adapter, icr.Encoder, rec, r.gen)
	case modeMeta:
		ex, err := ev.Encoder.Encode(rec, nil)
		if err != nil {
			return cost{}, err
		}
		start := time.Now()
		g, err := ev.Engine.MetaGradient(ev.Params, ex, ev.Seed+uint64(i))
		if err != nil {
			return cost{}, err
		}
		g.Release(ev.Engine.Model.Backend())
		return cost{adapt: time.Since(start), peak: g.Mem.PeakBytes}, nil
	default:
		return cost{}, fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		return cost{}, err
	}
	return cost{promptTokens: a.PromptTokens, adapt: a.AdaptTime, decode: a.DecodeTime, peak: a.PeakBytes()}, nil
}

// measure answers one length's records in one mode, after one untimed
// warm-up answer the first time a mode runs.
func (r *scalingRunner) measure(mode string, items []tasks.Item) (scalingResult, error) {
	if !r.warm[mode] {
		if _, err := r.run(mode, items[0].Record, 0); err != nil {
			return scalingResult{}, fmt.Errorf("warm-up: %w", err)
		}
		r.warm[mode] = true
	}
	var res scalingResult
	for i, it := range items {
		var base int64
		if r.pool != nil {
			r.pool.ResetPeak()
			base = r.pool.Stats().InUse
		}
		start := time.Now()
		c, err := r.run(mode, it.Record, i)
		if err != nil {
			return scalingResult{}, err
		}
		secs := time.Since(start).Seconds()
		var pool int64
		if r.pool != nil {
			pool = r.pool.Stats().Peak - base
		}
		res.add(it, c, secs, pool)
	}
	res.finish(len(items))
	return res, nil
}

// scalingResult is one mode at one length, averaged over its examples.
type scalingResult struct {
	// Length is the requested context length; Mode is perk or icr.
	Length int    `json:"length"`
	Mode   string `json:"mode"`
	// Status is ok, oom (out of memory at this length) or skipped (out of
	// memory at a shorter one); Error is the out-of-memory error.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Examples is the number of records answered.
	Examples int `json:"examples"`
	// ContextTokens is the records' mean context length (their
	// meta.tokens, at most Length); PromptTokens the mean decoding prompt.
	ContextTokens float64 `json:"context_tokens"`
	PromptTokens  float64 `json:"prompt_tokens"`
	// Seconds, AdaptSeconds and DecodeSeconds are mean wall-clock times per
	// example: the whole answer, test-time learning (PERK) and decoding.
	Seconds       float64 `json:"seconds_per_example"`
	AdaptSeconds  float64 `json:"adapt_seconds"`
	DecodeSeconds float64 `json:"decode_seconds"`
	// PeakBytes is the largest tracked peak of an example
	// (perk.Answer.PeakBytes, what perk.Evaluator reports).
	PeakBytes int64 `json:"tracked_peak_bytes"`
	// PoolPeakBytes is the largest rise of the GPU memory pool's peak above
	// what was in use before an example (GPU backends only).
	PoolPeakBytes int64 `json:"pool_peak_bytes,omitempty"`
}

func (r *scalingResult) add(it tasks.Item, c cost, secs float64, pool int64) {
	if it.Meta.Tokens != nil {
		r.ContextTokens += float64(*it.Meta.Tokens)
	}
	r.PromptTokens += float64(c.promptTokens)
	r.Seconds += secs
	r.AdaptSeconds += c.adapt.Seconds()
	r.DecodeSeconds += c.decode.Seconds()
	r.PeakBytes = max(r.PeakBytes, c.peak)
	r.PoolPeakBytes = max(r.PoolPeakBytes, pool)
}

func (r *scalingResult) finish(n int) {
	r.Examples = n
	f := float64(max(n, 1))
	r.ContextTokens /= f
	r.PromptTokens /= f
	r.Seconds /= f
	r.AdaptSeconds /= f
	r.DecodeSeconds /= f
}

// progress prints one measured cell.
func progress(w io.Writer, r scalingResult) {
	switch r.Status {
	case statusOK:
		fmt.Fprintf(w, "bench scaling: %d tokens, %s: %s per example, tracked peak %s\n", r.Length, modeTitle(r.Mode),
			perk.SecondsString(r.Seconds), perk.BytesString(float64(r.PeakBytes)))
	case statusOOM:
		fmt.Fprintf(w, "bench scaling: %d tokens, %s: out of memory, not run at longer lengths (%s)\n", r.Length, modeTitle(r.Mode), r.Error)
	}
}

// sweep measures every mode at every length, shortest first, and calls
// each (when non-nil) with every measured result. An out-of-memory error
// marks the mode's cell OOM and skips the mode at the longer lengths; any
// other error stops the sweep.
func sweep(lengths []int, modes []string, measure func(mode string, k int) (scalingResult, error), each func(scalingResult)) ([]scalingResult, error) {
	var out []scalingResult
	stopped := map[string]bool{}
	for k, n := range lengths {
		for _, mode := range modes {
			res := scalingResult{Status: statusSkipped}
			if !stopped[mode] {
				r, err := measure(mode, k)
				switch {
				case err == nil:
					res, res.Status = r, statusOK
				case errors.Is(err, runtime.ErrOutOfMemory):
					res.Status, res.Error = statusOOM, err.Error()
					stopped[mode] = true
				default:
					return nil, fmt.Errorf("length %d: %s: %w", n, mode, err)
				}
			}
			res.Length, res.Mode = n, mode
			if each != nil && res.Status != statusSkipped {
				each(res)
			}
			out = append(out, res)
		}
	}
	return out, nil
}

func modeTitle(mode string) string {
	if mode == modeMeta {
		return "meta-gradient"
	}
	return strings.ToUpper(mode)
}

// scalingReport is the run's result, written as scaling.json.
type scalingReport struct {
	// Device is the backend, Kind its --device name.
	Device string `json:"device"`
	Kind   string `json:"kind"`
	// Model describes the model; Task the records.
	Model string `json:"model"`
	Task  string `json:"task"`
	// The run's settings.
	Examples      int `json:"examples_per_length"`
	InnerSteps    int `json:"inner_steps"`
	LoRARank      int `json:"lora_rank"`
	SegmentTokens int `json:"segment_tokens"`
	// GroupSegments is --group-segments (0: all at once); Policy is
	// PERK's activation checkpointing.
	GroupSegments int    `json:"group_segments"`
	Policy        string `json:"checkpoint_policy"`
	DecodeTokens  int    `json:"decode_tokens"`
	Seed          uint64 `json:"seed"`
	// Date is when the run ended (UTC, RFC 3339).
	Date    string `json:"date"`
	Lengths []int  `json:"lengths"`
	// Results has one entry per length and mode, in length order.
	Results []scalingResult `json:"results"`
	// Notes explain the figures.
	Notes []string `json:"notes"`
}

func newScalingReport(o *scalingOptions, b nn.Backend, desc string, lengths []int, results []scalingResult) *scalingReport {
	rep := &scalingReport{Device: b.Name(), Kind: o.device, Model: desc,
		Task:     "single needle-in-a-haystack records (perk/tasks), context lengths counted with the model's tokenizer",
		Examples: o.examples, InnerSteps: o.innerSteps, LoRARank: o.loraRank, SegmentTokens: o.segmentTokens,
		GroupSegments: o.groupSegments, Policy: o.policy, DecodeTokens: o.maxNewTok, Seed: o.seed, Date: time.Now().UTC().Format(time.RFC3339), Lengths: lengths, Results: results}
	rep.Notes = []string{
		"Times are wall-clock per example: PERK's test-time learning (inner steps over the context segments) plus decoding without the context; ICR's prefill of the whole context plus decoding. Both decode exactly the same number of tokens. One untimed warm-up answer per mode precedes the first length.",
		"Tracked peak is what perk.Evaluator reports (perk.Answer.PeakBytes): activations, optimiser state, per-token weights, the key/value cache and the adapted LoRA, counted by the model code; model weights and meta-parameters are excluded.",
		"Context tokens is the requested length; a record's context holds at most that many tokens (distractor sentences fill it to within about one sentence; context_tokens in scaling.json is the actual mean).",
		"The meta-parameters are freshly initialised (not trained): the figures measure cost, not accuracy.",
	}
	if rep.hasPool() {
		rep.Notes = append(rep.Notes, "Pool peak is the GPU memory pool's peak during an example above what was in use before it (the weights): every tensor, kernel scratch and cached index arrays.")
	}
	if o.meta {
		rep.Notes = append(rep.Notes, "Meta-gradient is meta-training's cost per example: PERK's inner steps, their VJPs and the finite-difference Hessian-vector products through the differentiated steps (the last two of the four), with the same segment grouping and checkpointing; tracked peak is perk.MetaGrad.Mem.PeakBytes.")
	}
	if o.device != "cuda" {
		rep.Notes = append(rep.Notes, "CPU figures at small lengths; the paper's 1K…128K lengths need --device cuda.")
	}
	return rep
}

func (rep *scalingReport) hasPool() bool {
	return slices.ContainsFunc(rep.Results, func(r scalingResult) bool { return r.PoolPeakBytes > 0 })
}

// scalingColumn is one column of the markdown table: its title and its
// text for a length's results, by mode.
type scalingColumn struct {
	title string
	text  func(c map[string]scalingResult) string
}

// value formats one mode's figure, or says why there is none.
func value(r scalingResult, f func(scalingResult) string) string {
	switch r.Status {
	case statusOK:
		return f(r)
	case statusOOM:
		return "OOM"
	}
	return "–"
}

// ratio formats PERK's figure over ICR's, "–" when either is missing.
func ratio(p, i scalingResult, f func(scalingResult) float64) string {
	if p.Status != statusOK || i.Status != statusOK || f(i) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", f(p)/f(i))
}

// hasMode reports whether the run measured mode.
func (rep *scalingReport) hasMode(mode string) bool {
	return slices.ContainsFunc(rep.Results, func(r scalingResult) bool { return r.Mode == mode })
}

func (rep *scalingReport) columns() []scalingColumn {
	secs := func(r scalingResult) string { return perk.SecondsString(r.Seconds) }
	tracked := func(r scalingResult) string { return perk.BytesString(float64(r.PeakBytes)) }
	pooled := func(r scalingResult) string { return perk.BytesString(float64(r.PoolPeakBytes)) }
	of := func(mode string, f func(scalingResult) string) func(map[string]scalingResult) string {
		return func(c map[string]scalingResult) string { return value(c[mode], f) }
	}
	perkOverICR := func(f func(scalingResult) float64) func(map[string]scalingResult) string {
		return func(c map[string]scalingResult) string { return ratio(c[perk.ModePERK], c[perk.ModeICR], f) }
	}
	cols := []scalingColumn{
		{"PERK time / example", of(perk.ModePERK, secs)},
		{"PERK tracked peak", of(perk.ModePERK, tracked)},
		{"ICR time / example", of(perk.ModeICR, secs)},
		{"ICR tracked peak", of(perk.ModeICR, tracked)},
		{"time PERK/ICR", perkOverICR(func(r scalingResult) float64 { return r.Seconds })},
		{"tracked peak PERK/ICR", perkOverICR(func(r scalingResult) float64 { return float64(r.PeakBytes) })},
	}
	if rep.hasPool() {
		cols = append(cols,
			scalingColumn{"PERK pool peak", of(perk.ModePERK, pooled)},
			scalingColumn{"ICR pool peak", of(perk.ModeICR, pooled)},
			scalingColumn{"pool peak PERK/ICR", perkOverICR(func(r scalingResult) float64 { return float64(r.PoolPeakBytes) })})
	}
	if rep.hasMode(modeMeta) {
		cols = append(cols,
			scalingColumn{"meta-gradient time / example", of(modeMeta, secs)},
			scalingColumn{"meta-gradient tracked peak", of(modeMeta, tracked)})
		if rep.hasPool() {
			cols = append(cols, scalingColumn{"meta-gradient pool peak", of(modeMeta, pooled)})
		}
	}
	return cols
}

// table renders the markdown table: one row per length.
func (rep *scalingReport) table() string {
	var sb strings.Builder
	cols := rep.columns()
	sb.WriteString("| context tokens |")
	for _, c := range cols {
		sb.WriteString(" " + c.title + " |")
	}
	sb.WriteString("\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	for _, n := range rep.Lengths {
		cells := map[string]scalingResult{}
		for _, r := range rep.Results {
			if r.Length == n {
				cells[r.Mode] = r
			}
		}
		sb.WriteString("| " + strconv.Itoa(n) + " |")
		for _, c := range cols {
			sb.WriteString(" " + c.text(cells) + " |")
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

// markdown renders scaling.md: the settings, the table and the notes.
func (rep *scalingReport) markdown() string {
	var sb strings.Builder
	sb.WriteString("# End-to-end scaling: PERK vs ICR\n\n")
	fmt.Fprintf(&sb, "- device: %s\n- model: %s\n- task: %s, %d per length\n", rep.Device, rep.Model, rep.Task, rep.Examples)
	groups := "all segments at once"
	if rep.GroupSegments > 0 {
		groups = fmt.Sprintf("at most %d segments at a time (gradient accumulation)", rep.GroupSegments)
	}
	fmt.Fprintf(&sb, "- PERK: %d inner steps (AdamW), LoRA rank %d on every linear layer, token weighting, segments of at most %d tokens, %s, activation checkpointing %s\n",
		rep.InnerSteps, rep.LoRARank, rep.SegmentTokens, groups, rep.Policy)
	fmt.Fprintf(&sb, "- ICR: LoRA rank %d, the whole context in the prompt\n- both: %d decoded tokens per answer; seed %d\n\n",
		rep.LoRARank, rep.DecodeTokens, rep.Seed)
	sb.WriteString(rep.table())
	sb.WriteString("\nOOM: out of device memory at that length; –: not run (out of memory at a shorter length).\n\n")
	for _, n := range rep.Notes {
		sb.WriteString("- " + n + "\n")
	}
	return sb.String()
}

// writeScaling prints the table (or the JSON) and writes the files to dir
// when it is not empty.
func writeScaling(rep *scalingReport, dir string, asJSON bool, stdout io.Writer) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("scaling report: %w", err)
	}
	js = append(js, '\n')
	if asJSON {
		if _, err := stdout.Write(js); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stdout, "PERK vs ICR on %s (%s)\n\n%s", rep.Device, rep.Model, rep.table())
	}
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, scalingJSONFile), js, 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, scalingMDFile), []byte(rep.markdown()), 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return plotScaling(filepath.Join(dir, scalingPNGFile), rep)
}

// plotScaling draws memory and time against context length, both modes,
// as two panels of one PNG with a logarithmic length axis.
func plotScaling(path string, rep *scalingReport) error {
	mem, err := rep.panel("Peak tracked memory per example", "MiB", func(r scalingResult) float64 { return float64(r.PeakBytes) / (1 << 20) })
	if err != nil {
		return err
	}
	secs, err := rep.panel("Time per example", "seconds", func(r scalingResult) float64 { return r.Seconds })
	if err != nil {
		return err
	}
	img := vgimg.New(12*vg.Inch, 4.5*vg.Inch)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 4}
	plots := [][]*plot.Plot{{mem, secs}}
	canvases := plot.Align(plots, tiles, draw.New(img))
	for i, p := range plots[0] {
		p.Draw(canvases[0][i])
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return nil
}

// panel is one chart: y of each mode's measured lengths, a line per mode.
func (rep *scalingReport) panel(title, yLabel string, y func(scalingResult) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "context length (tokens)"
	p.Y.Label.Text = yLabel
	p.X.Scale = plot.LogScale{}
	var ticks plot.ConstantTicks
	for _, n := range rep.Lengths {
		ticks = append(ticks, plot.Tick{Value: float64(n), Label: lengthLabel(n)})
	}
	p.X.Tick.Marker = ticks
	lo, hi := float64(rep.Lengths[0]), float64(rep.Lengths[len(rep.Lengths)-1])
	p.X.Min, p.X.Max = lo/math.Sqrt2, hi*math.Sqrt2
	p.Add(plotter.NewGrid())
	p.Legend.Top, p.Legend.Left = true, true
	top := 0.0
	for c, mode := range append(perk.EvalModes(), modeMeta) {
		var xys plotter.XYs
		for _, r := range rep.Results {
			if r.Mode == mode && r.Status == statusOK {
				xys = append(xys, plotter.XY{X: float64(r.Length), Y: y(r)})
				top = max(top, y(r))
			}
		}
		if len(xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("plot %s: %w", title, err)
		}
		l.Color, pts.Color, pts.Shape = plotutil.Color(c), plotutil.Color(c), plotutil.Shape(c)
		p.Add(l, pts)
		p.Legend.Add(modeTitle(mode), l, pts)
	}
	p.Y.Min, p.Y.Max = 0, 1.25*top
	if top == 0 {
		p.Y.Max = 1
	}
	return p, nil
}

// lengthLabel writes a token count the way the paper does: 512, 1K, 128K.
func lengthLabel(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return strconv.Itoa(n/1024) + "K"
	}
	return strconv.Itoa(n)
}
