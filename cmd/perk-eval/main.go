// Command perk-eval evaluates a PERK checkpoint or an ICR (in-context
// reasoning) baseline adapter on JSONL records and writes predictions, a
// markdown comparison table and PNG charts.
//
//	perk-eval --model DIR --checkpoint DIR --data FILE.jsonl --mode perk --out DIR [flags]
//	perk-eval --model DIR --checkpoint DIR --data FILE.jsonl --mode icr  --out DIR [flags]
//
// In perk mode each record's context is learned at test time from the
// checkpoint's meta-learned parameters (the PEFT adapter and
// perk_state.safetensors written by perk-train), then the answer is decoded
// greedily from "You have memorized {N} documents.\n{question}\nAnswer:"
// without the context. In icr mode the context is in the prompt and the
// answer is decoded with the checkpoint's PEFT adapter (no --checkpoint:
// the base model). Answers are scored by exact match on the text inside
// <output>…</output> when present (see perk.ExactMatch).
//
// Each run writes predictions-<mode>.jsonl to --out and then rebuilds the
// report from every mode's predictions found there, so running both modes
// with the same --out gives side-by-side PERK and ICR columns: report.md,
// report.json, accuracy_vs_length.png, accuracy_by_depth.png (when records
// carry meta.depth), memory_vs_length.png and time_vs_length.png. Run with
// --help for every flag.
//
// A --data line that is not a valid record stops the run with its
// "file:line: ..." error, or with --on-bad-record skip is reported on stderr
// and left out. The flags, the records and the --out directory (created,
// and a probe file written and removed) are all checked before the model
// is loaded.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/pflag"

	"github.com/perkgo/perk/cmd/internal/outdir"
	"github.com/perkgo/perk/nn/gpu"
	"github.com/perkgo/perk/nn/model"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/runtime"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "perk-eval:", err)
		os.Exit(1)
	}
}

// options holds the parsed flags.
type options struct {
	modelDir, checkpoint, data, mode, device, out, precision, policy, onBad string
	maxNew, limit, innerAccum                                               int
	seed                                                                    uint64
}

func newFlags(o *options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("perk-eval", pflag.ContinueOnError)
	fs.SortFlags = false
	fs.StringVar(&o.modelDir, "model", "", "base model directory: Hugging Face config.json, model.safetensors (or shards) and tokenizer.json (required)")
	fs.StringVar(&o.checkpoint, "checkpoint", "", "perk mode: a perk-train checkpoint directory (PEFT adapter + perk_state.safetensors, and base/ when the base model was trained; required); icr mode: a PEFT adapter directory (optional, default the base model)")
	fs.StringVar(&o.data, "data", "", `JSONL records {"id", "context": [...], "question", "answer", "support"?, "meta"?: {"tokens": n, "depth": d}} (required)`)
	fs.StringVar(&o.mode, "mode", perk.ModePERK, "perk (test-time learning, no context in the prompt) or icr (context in the prompt)")
	fs.StringVar(&o.device, "device", "cpu", "device: cpu (pure-Go backend), emu (the CUDA kernels on the CPU emulator) or cuda (an NVIDIA GPU; binary built with -tags cuda)")
	fs.IntVar(&o.maxNew, "max-new-tokens", 128, "greedy decoding stops at EOS or after this many tokens (the paper uses 512)")
	fs.StringVar(&o.out, "out", "", "output directory for predictions, report.md/report.json and the PNG charts (required)")
	fs.IntVar(&o.limit, "limit", 0, "evaluate only the first N records (0: all)")
	fs.StringVar(&o.onBad, "on-bad-record", "stop", "a --data line that is not a valid record: stop (fail with its file:line error) or skip (warn on stderr with its file:line, evaluate the rest)")
	fs.StringVar(&o.precision, "precision", "f32", "precision of the model and LoRA: f32, or f64 on the cpu device (bf16 is not supported yet)")
	fs.IntVar(&o.innerAccum, "inner-accum", 1, "perk mode: split the context segments into this many gradient-accumulation groups per inner step (less memory, same result up to rounding)")
	fs.StringVar(&o.policy, "checkpoint-policy", "none", "perk mode: activation checkpointing of test-time learning, none or blocks")
	fs.Uint64Var(&o.seed, "seed", 0, "perk mode: seed of the LoRA dropout masks of test-time learning (per record)")
	return fs
}

func usage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, `usage: perk-eval --model DIR --data FILE.jsonl --mode perk|icr --checkpoint DIR --out DIR [flags]

Evaluates PERK (test-time learning of the context, then answering without
it) or the ICR baseline (context in the prompt) by exact match, overall, by
context length and by needle depth. Predictions go to
OUT/predictions-<mode>.jsonl; report.md, report.json and the PNG charts
compare every mode whose predictions are in OUT, so run both modes with the
same --out for a PERK vs ICR comparison.

flags:
%s`, fs.FlagUsages())
}

func run(args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr, fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(args) == 0 {
		usage(stderr, fs)
		return fmt.Errorf("nothing to do: --model, --data and --out are required (and --checkpoint in perk mode)")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.modelDir == "" || o.data == "" || o.out == "" {
		return fmt.Errorf("--model, --data and --out are required")
	}
	switch o.mode {
	case perk.ModePERK:
		if o.checkpoint == "" {
			return fmt.Errorf("--mode perk needs --checkpoint (a perk-train checkpoint directory)")
		}
	case perk.ModeICR:
	default:
		return fmt.Errorf("unknown --mode %q (want perk or icr)", o.mode)
	}
	switch o.device {
	case "cpu", "emu", "cuda":
	default:
		return fmt.Errorf("unknown --device %q (want cpu, emu or cuda)", o.device)
	}
	var dt runtime.DType
	switch o.precision {
	case "f32":
		dt = runtime.F32
	case "f64":
		dt = runtime.F64
		if o.device != "cpu" {
			return fmt.Errorf("--precision f64 needs --device cpu (the GPU backend runs f32 models)")
		}
	case "bf16":
		return fmt.Errorf("--precision bf16 is not supported yet: models run in f32 (or f64 on cpu)")
	default:
		return fmt.Errorf("unknown --precision %q (want f32, f64 or bf16)", o.precision)
	}
	if o.maxNew < 1 {
		return fmt.Errorf("--max-new-tokens %d must be ≥ 1", o.maxNew)
	}
	if o.limit < 0 {
		return fmt.Errorf("--limit %d must be ≥ 0", o.limit)
	}
	if o.innerAccum < 1 {
		return fmt.Errorf("--inner-accum %d must be ≥ 1", o.innerAccum)
	}
	policy, err := model.ParsePolicy(o.policy)
	if err != nil {
		return err
	}
	bad, err := perk.ParseOnBadRecord(o.onBad)
	if err != nil {
		return err
	}
	skipped := 0
	bad.Skipped = func(err error) {
		skipped++
		fmt.Fprintf(stderr, "perk-eval: warning: skipping %v\n", err)
	}

	// Everything that does not need the model is checked before it is
	// loaded: the records, then that --out can be written.
	recs, err := perk.ReadEvalRecordsWith(o.data, bad)
	if err != nil {
		return err
	}
	if o.limit > 0 && o.limit < len(recs) {
		recs = recs[:o.limit]
	}
	if err := outdir.Check("--out", o.out); err != nil {
		return err
	}
	ev, err := buildEvaluator(&o, dt, policy, stdout)
	if err != nil {
		return err
	}

	// Predict, writing each line as it comes (to a temporary file renamed
	// at the end, so an interrupted run leaves the previous predictions).
	predPath := filepath.Join(o.out, perk.PredictionsFile(o.mode))
	tmp, err := os.CreateTemp(o.out, ".predictions-*.tmp")
	if err != nil {
		return fmt.Errorf("predictions: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	start := time.Now()
	correct := 0
	preds, err := ev.Evaluate(recs, func(i int, p perk.Prediction) error {
		if p.Correct {
			correct++
		}
		status := "wrong"
		switch {
		case p.Error != "":
			status = "error: " + p.Error
		case p.Correct:
			status = "correct"
		}
		fmt.Fprintf(stdout, "[%d/%d] %s: %d context tokens, %.2fs, %s\n", i+1, len(recs), p.ID, p.ContextTokens, p.Seconds, status)
		return perk.WritePredictions(w, []perk.Prediction{p})
	})
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("predictions: %w", err)
	}
	if err := os.Rename(tmp.Name(), predPath); err != nil {
		return fmt.Errorf("predictions: %w", err)
	}
	fmt.Fprintf(stdout, "%s: %d/%d correct (%.1f%%) in %v; predictions in %s\n", o.mode, correct, len(preds),
		100*float64(correct)/float64(len(preds)), time.Since(start).Round(time.Millisecond), predPath)

	if err := writeReport(o.out, gonumCharts{}, stdout); err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "perk-eval: warning: skipped %d bad %s of %s (--on-bad-record skip)\n",
			skipped, plural(skipped, "line", "lines"), o.data)
	}
	return nil
}

// plural returns one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// buildEvaluator loads the model, the tokenizer and the checkpoint.
func buildEvaluator(o *options, dt runtime.DType, policy model.Policy, stdout io.Writer) (*perk.Evaluator, error) {
	modelDir := o.modelDir
	if o.mode == perk.ModePERK {
		trainsBase, err := perk.CheckpointTrainsBase(o.checkpoint)
		if err != nil {
			return nil, fmt.Errorf("--checkpoint: %w", err)
		}
		if trainsBase {
			modelDir = filepath.Join(o.checkpoint, perk.BaseDir)
		}
	}
	backend, err := gpu.Open(o.device)
	if err != nil {
		return nil, fmt.Errorf("--device %s: %w", o.device, err)
	}
	m, err := model.LoadModel(modelDir, backend, dt)
	if err != nil {
		return nil, err
	}
	enc, err := perk.LoadEncoder(o.modelDir, m.Config())
	if err != nil {
		return nil, err
	}
	ev := &perk.Evaluator{Mode: o.mode, MaxNewTokens: o.maxNew, Seed: o.seed, Encoder: enc}
	if o.mode == perk.ModeICR {
		ev.Model = m
		if o.checkpoint == "" {
			fmt.Fprintln(stdout, "icr: no --checkpoint, evaluating the base model")
			return ev, nil
		}
		if ev.Adapter, err = model.LoadAdapter(o.checkpoint, m); err != nil {
			return nil, fmt.Errorf("--checkpoint: %w", err)
		}
		return ev, nil
	}
	p, err := perk.LoadParams(m, o.checkpoint, filepath.Join(o.checkpoint, perk.StateFile))
	if err != nil {
		return nil, fmt.Errorf("--checkpoint: %w", err)
	}
	inner, ok, err := perk.CheckpointInnerConfig(o.checkpoint)
	if err != nil {
		return nil, fmt.Errorf("--checkpoint: %w", err)
	}
	if !ok {
		inner = perk.DefaultInnerConfig()
		inner.Steps = p.LRs.Steps()
		fmt.Fprintf(stdout, "perk: %s records no inner-loop configuration; using the default (AdamW) with %d steps\n", o.checkpoint, inner.Steps)
	}
	inner.Accum = o.innerAccum
	ev.Engine = &perk.Engine{Model: m, Inner: inner, Policy: policy}
	ev.Params = p
	return ev, nil
}

// writeReport rebuilds report.md, report.json and the charts from every
// mode's predictions in dir.
func writeReport(dir string, cw chartWriter, stdout io.Writer) error {
	byMode, err := perk.LoadPredictionsDir(dir)
	if err != nil {
		return err
	}
	r := perk.NewReport(byMode)
	md := filepath.Join(dir, "report.md")
	if err := os.WriteFile(md, []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	charts, err := writeCharts(cw, dir, r, func(name string) string { return filepath.Join(dir, name) })
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "report: %s (modes: %v)\n", md, r.Modes)
	for _, c := range charts {
		fmt.Fprintf(stdout, "chart: %s\n", c)
	}
	return nil
}
