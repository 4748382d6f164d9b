package perk

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/perkgo/perk/nn/model"
)

// Evaluation modes.
const (
	// ModePERK answers after test-time learning of the context, with no
	// context in the prompt (Engine.Answer).
	ModePERK = "perk"
	// ModeICR answers with the context in the prompt (ICRAnswer).
	ModeICR = "icr"
)

// EvalModes lists the evaluation modes in report column order.
func EvalModes() []string { return []string{ModePERK, ModeICR} }

// modeTitle is a mode's column title.
func modeTitle(mode string) string { return strings.ToUpper(mode) }

// RecordMeta is optional information about how a record was built, read
// from its "meta" object: {"tokens": n, "depth": d}.
type RecordMeta struct {
	// Tokens is the context length in tokens; nil when not given (the
	// evaluation then counts it with the tokenizer).
	Tokens *int `json:"tokens,omitempty"`
	// Depth is the position of the relevant fact (the needle) in the
	// context, by convention a fraction in [0, 1] (0: the start); nil when
	// unknown.
	Depth *float64 `json:"depth,omitempty"`
}

// EvalRecord is a record with its optional metadata.
type EvalRecord struct {
	Record
	// Meta is the record's "meta" object (zero when absent).
	Meta RecordMeta
}

// ReadEvalRecords reads a JSONL file of records with optional "meta"
// (see ParseEvalRecords), stopping at the first bad line.
func ReadEvalRecords(path string) ([]EvalRecord, error) {
	return ReadEvalRecordsWith(path, OnBadRecord{})
}

// ReadEvalRecordsWith reads a JSONL file of records with optional "meta",
// handling bad lines per bad.
func ReadEvalRecordsWith(path string, bad OnBadRecord) ([]EvalRecord, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("records: %w", err)
	}
	defer f.Close()
	return parseEvalRecords(path, f, bad)
}

// ParseEvalRecords decodes JSONL records as ParseRecords does and, from
// each line, the optional "meta": {"tokens": n, "depth": d} (tokens a
// non-negative integer, depth a finite number; either may be absent or
// null). Errors name the input and the line.
func ParseEvalRecords(name string, data []byte) ([]EvalRecord, error) {
	return parseEvalRecords(name, bytes.NewReader(data), OnBadRecord{})
}

func parseEvalRecords(name string, r io.Reader, bad OnBadRecord) ([]EvalRecord, error) {
	var out []EvalRecord
	err := scanRecordLines(name, r, bad, func(text []byte) error {
		rec, err := parseRecord(text)
		if err != nil {
			return err
		}
		meta, err := parseMeta(text)
		if err != nil {
			return fmt.Errorf("record %q: %w", rec.ID, err)
		}
		out = append(out, EvalRecord{Record: rec, Meta: meta})
		return nil
	})
	return out, err
}

// parseMeta reads the "meta" object of one record line.
func parseMeta(text []byte) (RecordMeta, error) {
	var line struct {
		Meta json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(text, &line); err != nil {
		return RecordMeta{}, fmt.Errorf("invalid record: %w", err)
	}
	var meta RecordMeta
	if len(line.Meta) == 0 || string(line.Meta) == "null" {
		return meta, nil
	}
	var raw struct {
		Tokens *float64 `json:"tokens"`
		Depth  *float64 `json:"depth"`
	}
	if err := json.Unmarshal(line.Meta, &raw); err != nil {
		return meta, fmt.Errorf("meta: %w", err)
	}
	if raw.Tokens != nil {
		n := *raw.Tokens
		if n < 0 || n != math.Trunc(n) || n > 1<<40 {
			return meta, fmt.Errorf("meta: tokens %v is not a non-negative integer", n)
		}
		v := int(n)
		meta.Tokens = &v
	}
	if raw.Depth != nil {
		d := *raw.Depth
		if math.IsNaN(d) || math.IsInf(d, 0) {
			return meta, fmt.Errorf("meta: depth %v is not finite", d)
		}
		meta.Depth = &d
	}
	return meta, nil
}

// Prediction is the evaluation of one record in one mode, written as one
// line of the predictions JSONL.
type Prediction struct {
	// ID is the record's id.
	ID string `json:"id"`
	// Mode is ModePERK or ModeICR.
	Mode string `json:"mode"`
	// Question and Reference are the record's question and answer.
	Question  string `json:"question"`
	Reference string `json:"reference"`
	// Response is the generated text (special tokens left out; bytes that
	// are not UTF-8 become U+FFFD in JSON), ResponseIDs its tokens and
	// Extracted the part scored.
	Response    string `json:"response"`
	ResponseIDs []int  `json:"response_ids"`
	Extracted   string `json:"extracted"`
	// Correct is the exact match of Response and Reference (ExactMatch);
	// false when Error is set.
	Correct bool `json:"correct"`
	// ContextTokens is the context length: meta.tokens when given, else
	// the tokens of the segments counted one by one with the tokenizer
	// (no document prefixes, separators or EOS), the same for both modes.
	ContextTokens int `json:"context_tokens"`
	// TokensFromMeta says ContextTokens came from the record's meta.
	TokensFromMeta bool `json:"tokens_from_meta"`
	// Depth is meta.depth, nil when unknown.
	Depth *float64 `json:"depth"`
	// Segments is the number of context segments.
	Segments int `json:"segments"`
	// PromptTokens and GeneratedTokens count the decoding's tokens.
	PromptTokens    int `json:"prompt_tokens"`
	GeneratedTokens int `json:"generated_tokens"`
	// Stop says why decoding ended (see Generation.Stop).
	Stop string `json:"stop,omitempty"`
	// InnerLosses are the test-time learning losses (perk mode).
	InnerLosses []float64 `json:"inner_losses,omitempty"`
	// AdaptSeconds, DecodeSeconds and Seconds are the wall-clock times of
	// test-time learning, decoding and the whole example.
	AdaptSeconds  float64 `json:"adapt_seconds"`
	DecodeSeconds float64 `json:"decode_seconds"`
	Seconds       float64 `json:"seconds"`
	// PeakBytes is the tracked peak memory of the example (Answer.PeakBytes).
	PeakBytes int64 `json:"peak_bytes"`
	// Error is set when the record could not be answered (it then counts
	// as wrong), e.g. a prompt longer than the model's positions.
	Error string `json:"error,omitempty"`
}

// Evaluator answers records in one mode and scores them.
type Evaluator struct {
	// Mode is ModePERK or ModeICR.
	Mode string
	// Encoder tokenizes records (its EOS also stops decoding).
	Encoder *Encoder
	// Engine runs test-time learning (perk mode); its Model is the model.
	Engine *Engine
	// Params are the meta-learned parameters (perk mode).
	Params *Params
	// Model is the model of icr mode.
	Model *model.Model
	// Adapter is the ICR adapter (icr mode; nil evaluates the base model).
	Adapter *model.Adapter
	// MaxNewTokens bounds the generated tokens.
	MaxNewTokens int
	// Seed keys the per-record dropout masks of test-time learning.
	Seed uint64
}

// Validate checks that the evaluator has what its mode needs.
func (ev *Evaluator) Validate() error {
	if ev.Encoder == nil || ev.Encoder.Tok == nil {
		return fmt.Errorf("evaluator: no encoder")
	}
	if ev.MaxNewTokens < 1 {
		return fmt.Errorf("evaluator: max new tokens %d, want ≥ 1", ev.MaxNewTokens)
	}
	switch ev.Mode {
	case ModePERK:
		if ev.Engine == nil || ev.Engine.Model == nil || ev.Params == nil {
			return fmt.Errorf("evaluator: perk mode needs an engine and meta-parameters")
		}
	case ModeICR:
		if ev.Model == nil {
			return fmt.Errorf("evaluator: icr mode needs a model")
		}
	default:
		return fmt.Errorf("evaluator: unknown mode %q (want %s or %s)", ev.Mode, ModePERK, ModeICR)
	}
	return nil
}

// recordSeed derives the dropout seed of record i.
func recordSeed(seed uint64, i int) uint64 {
	return rand.New(rand.NewPCG(seed, uint64(i)^0xe7a1_5eed)).Uint64()
}

// Predict answers record i (the index keys its dropout seed) and scores
// it. A record that cannot be answered gives a Prediction with Error set.
func (ev *Evaluator) Predict(rec EvalRecord, i int) Prediction {
	p := Prediction{ID: rec.ID, Mode: ev.Mode, Question: rec.Question, Reference: rec.Answer,
		Depth: rec.Meta.Depth, Segments: len(rec.Context)}
	if rec.Meta.Tokens != nil {
		p.ContextTokens, p.TokensFromMeta = *rec.Meta.Tokens, true
	} else if ev.Encoder != nil && ev.Encoder.Tok != nil {
		for _, s := range rec.Context {
			p.ContextTokens += len(ev.Encoder.Tok.Encode(s))
		}
	}
	if err := ev.Validate(); err != nil {
		p.Error = err.Error()
		return p
	}
	gen := GenerateConfig{MaxNewTokens: ev.MaxNewTokens, EOS: ev.Encoder.EOS}
	start := time.Now()
	var a *Answer
	var err error
	if ev.Mode == ModePERK {
		a, err = ev.Engine.Answer(ev.Params, ev.Encoder, rec.Record, gen, recordSeed(ev.Seed, i))
	} else {
		a, err = ICRAnswer(ev.Model, ev.Adapter, ev.Encoder, rec.Record, gen)
	}
	p.Seconds = time.Since(start).Seconds()
	if err != nil {
		p.Error = err.Error()
		return p
	}
	p.Response, p.ResponseIDs = a.Text, a.IDs
	p.Extracted = ExtractAnswer(a.Text)
	p.Correct = ExactMatch(a.Text, rec.Answer)
	p.PromptTokens, p.GeneratedTokens, p.Stop = a.PromptTokens, len(a.IDs), a.Stop
	p.InnerLosses = a.InnerLosses
	p.AdaptSeconds, p.DecodeSeconds = a.AdaptTime.Seconds(), a.DecodeTime.Seconds()
	p.PeakBytes = a.PeakBytes()
	return p
}

// Evaluate predicts every record in order, calling each (when non-nil)
// after every prediction; an error from each stops the evaluation.
func (ev *Evaluator) Evaluate(recs []EvalRecord, each func(i int, p Prediction) error) ([]Prediction, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	out := make([]Prediction, 0, len(recs))
	for i, r := range recs {
		p := ev.Predict(r, i)
		out = append(out, p)
		if each != nil {
			if err := each(i, p); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// WritePredictions writes predictions as JSONL.
func WritePredictions(w io.Writer, preds []Prediction) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, p := range preds {
		if err := enc.Encode(p); err != nil {
			return fmt.Errorf("predictions: %w", err)
		}
	}
	return nil
}

// ReadPredictions reads a predictions JSONL file.
func ReadPredictions(path string) ([]Prediction, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("predictions: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), maxRecordLine)
	var out []Prediction
	line := 0
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var p Prediction
		if err := json.Unmarshal(text, &p); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	return out, nil
}

// CheckpointInnerConfig returns the inner-loop configuration a checkpoint
// written by Trainer.SaveCheckpoint was trained with (Accum reset to 1; the
// number of steps is the learned rates'), and false for a StateFile that
// does not record it (e.g. one written by SaveParams).
func CheckpointInnerConfig(dir string) (InnerConfig, bool, error) {
	f, meta, err := readState(filepath.Join(dir, StateFile))
	if err != nil {
		return InnerConfig{}, false, err
	}
	defer f.Close()
	s, ok := meta[metaInner]
	if !ok {
		return InnerConfig{}, false, nil
	}
	var c InnerConfig
	if err := json.Unmarshal([]byte(s), &c); err != nil {
		return InnerConfig{}, false, fmt.Errorf("checkpoint %s: metadata %s: %w", dir, metaInner, err)
	}
	c.Accum = 1
	if n, err := strconv.Atoi(meta[metaSteps]); err == nil && n > 0 {
		c.Steps = n
	}
	return c, true, nil
}

// Cell is one mode's result on a group of records.
type Cell struct {
	// N is the number of records; Correct of them were answered right and
	// Errors could not be answered.
	N       int `json:"n"`
	Correct int `json:"correct"`
	Errors  int `json:"errors"`
	// Accuracy is Correct/N (0 when N is 0).
	Accuracy float64 `json:"accuracy"`
	// MeanSeconds is the mean wall-clock time per answered record.
	MeanSeconds float64 `json:"mean_seconds"`
	// MeanPeakBytes and MaxPeakBytes summarise the answered records' peak
	// tracked memory.
	MeanPeakBytes float64 `json:"mean_peak_bytes"`
	MaxPeakBytes  int64   `json:"max_peak_bytes"`
}

func cellOf(preds []Prediction) Cell {
	var c Cell
	ok := 0
	for _, p := range preds {
		c.N++
		if p.Correct {
			c.Correct++
		}
		if p.Error != "" {
			c.Errors++
			continue
		}
		ok++
		c.MeanSeconds += p.Seconds
		c.MeanPeakBytes += float64(p.PeakBytes)
		c.MaxPeakBytes = max(c.MaxPeakBytes, p.PeakBytes)
	}
	if c.N > 0 {
		c.Accuracy = float64(c.Correct) / float64(c.N)
	}
	if ok > 0 {
		c.MeanSeconds /= float64(ok)
		c.MeanPeakBytes /= float64(ok)
	}
	return c
}

// Row is a group of records — a context-length or depth bucket — with each
// mode's result.
type Row struct {
	// Label names the bucket, e.g. "1024", "513–1024", "0.25" or "unknown".
	Label string `json:"label"`
	// X is the bucket's value on a plot axis: the length, the bucket's
	// upper bound, the depth or the bin's centre (0 when Unknown).
	X float64 `json:"x"`
	// Unknown marks the bucket of records without a depth.
	Unknown bool `json:"unknown,omitempty"`
	// Cells holds each evaluated mode's result (modes without records in
	// the bucket are absent).
	Cells map[string]Cell `json:"cells"`
}

// Report compares the evaluated modes: overall, by context length and by
// needle depth.
type Report struct {
	// Modes are the modes with predictions, in EvalModes order.
	Modes []string `json:"modes"`
	// Overall holds each mode's result on all its records.
	Overall map[string]Cell `json:"overall"`
	// Length groups records by context length.
	Length []Row `json:"by_length"`
	// Depth groups records by needle depth (empty when no record has one).
	Depth []Row `json:"by_depth"`
	// Notes explain the report (sources of lengths, mismatched record
	// sets, memory accounting).
	Notes []string `json:"notes"`
}

// maxExactBuckets is the most distinct lengths (or depths) that get a
// bucket each; more are grouped.
const maxExactBuckets = 8

// NewReport summarises predictions by mode (keys ModePERK, ModeICR). Both
// modes' records are bucketed on the same edges: each distinct context
// length is a bucket when there are at most 8 of them, otherwise lengths
// go into power-of-two buckets (2^(k−1), 2^k]; each distinct depth is a
// bucket when there are at most 8, otherwise depths go into 5 equal-width
// bins (over [0,1] when every depth lies there); records without a depth
// form an "unknown" bucket.
func NewReport(byMode map[string][]Prediction) *Report {
	r := &Report{Overall: map[string]Cell{}}
	var all []Prediction
	for _, m := range EvalModes() {
		if ps := byMode[m]; len(ps) > 0 {
			r.Modes = append(r.Modes, m)
			r.Overall[m] = cellOf(ps)
			all = append(all, ps...)
		}
	}
	if len(all) == 0 {
		r.Notes = append(r.Notes, "no predictions")
		return r
	}
	// Context length.
	lengths := map[int]bool{}
	meta := 0
	for _, p := range all {
		lengths[p.ContextTokens] = true
		if p.TokensFromMeta {
			meta++
		}
	}
	lenKey := func(n int) (string, float64) { return strconv.Itoa(n), float64(n) }
	if len(lengths) > maxExactBuckets {
		lenKey = func(n int) (string, float64) {
			hi := 1
			for hi < n {
				hi *= 2
			}
			if hi <= 1 {
				return strconv.Itoa(hi), float64(hi)
			}
			return fmt.Sprintf("%d–%d", hi/2+1, hi), float64(hi)
		}
	}
	r.Length = groupRows(byMode, func(p Prediction) (string, float64, bool) {
		l, x := lenKey(p.ContextTokens)
		return l, x, true
	})
	switch {
	case meta == len(all):
		r.Notes = append(r.Notes, "Context lengths are the records' meta.tokens.")
	case meta == 0:
		r.Notes = append(r.Notes, "Context lengths are counted with the tokenizer (the segments' tokens, without document prefixes or separators).")
	default:
		r.Notes = append(r.Notes, fmt.Sprintf("Context lengths: %d of %d predictions from meta.tokens, the rest counted with the tokenizer.", meta, len(all)))
	}
	// Depth.
	depths := map[float64]bool{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range all {
		if p.Depth != nil {
			depths[*p.Depth] = true
			lo, hi = math.Min(lo, *p.Depth), math.Max(hi, *p.Depth)
		}
	}
	if len(depths) > 0 {
		depthKey := func(d float64) (string, float64) { return strconv.FormatFloat(d, 'g', 4, 64), d }
		if len(depths) > maxExactBuckets {
			if lo >= 0 && hi <= 1 {
				lo, hi = 0, 1
			}
			const bins = 5
			w := (hi - lo) / bins
			depthKey = func(d float64) (string, float64) {
				k := min(int((d-lo)/w), bins-1)
				a, b := lo+float64(k)*w, lo+float64(k+1)*w
				return fmt.Sprintf("%.3g–%.3g", a, b), (a + b) / 2
			}
		}
		r.Depth = groupRows(byMode, func(p Prediction) (string, float64, bool) {
			if p.Depth == nil {
				return "unknown", 0, false
			}
			l, x := depthKey(*p.Depth)
			return l, x, true
		})
	}
	// Record sets.
	if len(r.Modes) == 2 {
		a, b := ids(byMode[r.Modes[0]]), ids(byMode[r.Modes[1]])
		if !slices.Equal(a, b) {
			r.Notes = append(r.Notes, fmt.Sprintf("The modes were evaluated on different records (%d %s, %d %s); compare with care.",
				len(a), r.Modes[0], len(b), r.Modes[1]))
		}
	}
	r.Notes = append(r.Notes, "Peak memory is the tracked bytes of activations, optimiser state, per-token weights, the key/value cache and the adapted LoRA; model weights and trained parameters are excluded. Times are wall-clock per record.")
	return r
}

// ids returns the sorted record ids of predictions.
func ids(ps []Prediction) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	slices.Sort(out)
	return out
}

// groupRows buckets every mode's predictions with key (label, x, known) and
// returns the rows sorted by x, the unknown bucket last.
func groupRows(byMode map[string][]Prediction, key func(Prediction) (string, float64, bool)) []Row {
	type bucket struct {
		row   Row
		preds map[string][]Prediction
	}
	buckets := map[string]*bucket{}
	for _, m := range EvalModes() {
		for _, p := range byMode[m] {
			l, x, known := key(p)
			bk := buckets[l]
			if bk == nil {
				bk = &bucket{row: Row{Label: l, X: x, Unknown: !known, Cells: map[string]Cell{}}, preds: map[string][]Prediction{}}
				buckets[l] = bk
			}
			bk.preds[m] = append(bk.preds[m], p)
		}
	}
	rows := make([]Row, 0, len(buckets))
	for _, bk := range buckets {
		for m, ps := range bk.preds {
			bk.row.Cells[m] = cellOf(ps)
		}
		rows = append(rows, bk.row)
	}
	slices.SortFunc(rows, func(a, b Row) int {
		switch {
		case a.Unknown != b.Unknown:
			if a.Unknown {
				return 1
			}
			return -1
		case a.X < b.X:
			return -1
		case a.X > b.X:
			return 1
		}
		return strings.Compare(a.Label, b.Label)
	})
	return rows
}

// accString formats a cell's accuracy, "–" for a mode without records.
func accString(c Cell, ok bool) string {
	if !ok || c.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%% (%d/%d)", 100*c.Accuracy, c.Correct, c.N)
}

// BytesString formats a byte count with a binary unit.
func BytesString(n float64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", n/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", n/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", n/(1<<10))
	}
	return fmt.Sprintf("%.0f B", n)
}

// SecondsString formats a duration in seconds with a unit that keeps three
// significant digits: "1234 s", "1.23 s", "45.6 ms", "789 µs".
func SecondsString(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.0f s", s)
	case s >= 1 || s == 0:
		return fmt.Sprintf("%.3g s", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.3g ms", s*1e3)
	}
	return fmt.Sprintf("%.3g µs", s*1e6)
}

// Markdown renders the report as markdown tables with one column per mode
// (PERK and ICR always; "–" marks a mode that was not evaluated).
func (r *Report) Markdown() string {
	var sb strings.Builder
	modes := EvalModes()
	head := func(first string, cols ...string) {
		sb.WriteString(strings.Replace("| "+first+" |", "|  |", "| |", 1))
		for _, c := range cols {
			sb.WriteString(" " + c + " |")
		}
		sb.WriteString("\n|---|")
		for range cols {
			sb.WriteString("---|")
		}
		sb.WriteString("\n")
	}
	titles := make([]string, len(modes))
	for i, m := range modes {
		titles[i] = modeTitle(m)
	}
	cellRow := func(label string, cells map[string]Cell, f func(Cell, bool) string) {
		sb.WriteString("| " + label + " |")
		for _, m := range modes {
			c, ok := cells[m]
			sb.WriteString(" " + f(c, ok) + " |")
		}
		sb.WriteString("\n")
	}
	sb.WriteString("# PERK vs ICR evaluation\n\n")
	head("", titles...)
	cellRow("accuracy", r.Overall, accString)
	cellRow("unanswered (errors)", r.Overall, func(c Cell, ok bool) string {
		if !ok {
			return "–"
		}
		return strconv.Itoa(c.Errors)
	})
	cellRow("mean time / record", r.Overall, func(c Cell, ok bool) string {
		if !ok {
			return "–"
		}
		return SecondsString(c.MeanSeconds)
	})
	cellRow("mean peak memory / record", r.Overall, func(c Cell, ok bool) string {
		if !ok {
			return "–"
		}
		return BytesString(c.MeanPeakBytes)
	})
	if len(r.Length) > 0 {
		sb.WriteString("\n## Accuracy by context length (tokens)\n\n")
		head("context tokens", titles...)
		for _, row := range r.Length {
			cellRow(row.Label, row.Cells, accString)
		}
	}
	sb.WriteString("\n## Accuracy by needle depth\n\n")
	if len(r.Depth) == 0 {
		sb.WriteString("No record has a depth (meta.depth).\n")
	} else {
		head("depth", titles...)
		for _, row := range r.Depth {
			cellRow(row.Label, row.Cells, accString)
		}
	}
	if len(r.Length) > 0 {
		sb.WriteString("\n## Cost per record by context length\n\n")
		var cols []string
		for _, t := range titles {
			cols = append(cols, t+" time")
		}
		for _, t := range titles {
			cols = append(cols, t+" peak memory")
		}
		head("context tokens", cols...)
		for _, row := range r.Length {
			sb.WriteString("| " + row.Label + " |")
			for _, m := range modes {
				c, ok := row.Cells[m]
				if !ok || c.N == c.Errors {
					sb.WriteString(" – |")
					continue
				}
				sb.WriteString(" " + SecondsString(c.MeanSeconds) + " |")
			}
			for _, m := range modes {
				c, ok := row.Cells[m]
				if !ok || c.N == c.Errors {
					sb.WriteString(" – |")
					continue
				}
				sb.WriteString(" " + BytesString(c.MeanPeakBytes) + " |")
			}
			sb.WriteString("\n")
		}
	}
	var missing []string
	for _, m := range modes {
		if _, ok := r.Overall[m]; !ok {
			missing = append(missing, m)
		}
	}
	notes := append([]string(nil), r.Notes...)
	if len(missing) > 0 {
		notes = append(notes, fmt.Sprintf("Not evaluated: %s (run perk-eval with --mode %s and the same --out to fill the column).",
			strings.Join(missing, ", "), strings.Join(missing, "/")))
	}
	if len(notes) > 0 {
		sb.WriteString("\n")
		for _, n := range notes {
			sb.WriteString("- " + n + "\n")
		}
	}
	return sb.String()
}

// ErrNoPredictions is returned by LoadPredictionsDir when the directory
// holds no predictions file.
var ErrNoPredictions = errors.New("no predictions")

// PredictionsFile is the name of a mode's predictions file in an output
// directory.
func PredictionsFile(mode string) string { return "predictions-" + mode + ".jsonl" }

// LoadPredictionsDir reads the predictions of every mode present in dir
// (files named by PredictionsFile), keyed by mode.
func LoadPredictionsDir(dir string) (map[string][]Prediction, error) {
	out := map[string][]Prediction{}
	for _, m := range EvalModes() {
		ps, err := ReadPredictions(filepath.Join(dir, PredictionsFile(m)))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		out[m] = ps
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w", dir, ErrNoPredictions)
	}
	return out, nil
}
