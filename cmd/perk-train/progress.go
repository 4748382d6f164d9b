package main

// Progress of a training run: a bar redrawn in place when stdout is a
// terminal, plain log lines every --log-every steps otherwise, and one
// JSON object per step and per evaluation in OUT/metrics.jsonl.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// metricsFile is the JSONL log of a run, written to --out.
const metricsFile = "metrics.jsonl"

// metric is one line of metrics.jsonl: kind "step" after an optimiser
// step, kind "eval" after evaluating one held-out set. Fields a mode does
// not have are left out.
type metric struct {
	Kind string `json:"kind"`
	Mode string `json:"mode"`
	Step int    `json:"step"`

	Steps      int      `json:"steps,omitempty"`
	LR         *float64 `json:"lr,omitempty"`
	Loss       *float64 `json:"loss,omitempty"`
	OuterLoss  *float64 `json:"outer_loss,omitempty"`
	InnerFirst *float64 `json:"inner_first,omitempty"`
	InnerLast  *float64 `json:"inner_last,omitempty"`
	GradNorm   *float64 `json:"grad_norm,omitempty"`
	Tokens     int      `json:"tokens,omitempty"`
	TokensPerS *float64 `json:"tokens_per_s,omitempty"`
	PeakBytes  int64    `json:"peak_bytes,omitempty"`
	// DevicePeakBytes is the GPU memory pool's peak since the previous
	// step (weights included); absent on the cpu device.
	DevicePeakBytes int64    `json:"device_peak_bytes,omitempty"`
	Seconds         *float64 `json:"seconds,omitempty"`

	Data       string   `json:"data,omitempty"`
	N          int      `json:"n,omitempty"`
	AnswerLoss *float64 `json:"answer_loss,omitempty"`
	Accuracy   *float64 `json:"accuracy,omitempty"`
	Unanswered *int     `json:"unanswered,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// Progress display styles (--progress).
const (
	progressAuto  = "auto"
	progressBar   = "bar"
	progressLines = "lines"
)

// devicePool is the memory pool of a GPU backend (nn/gpu).
type devicePool interface {
	Stats() runtime.Stats
	ResetPeak()
}

// progress reports a run. It is also the io.Writer every other message of
// the run goes through, so that a message first clears the bar.
type progress struct {
	// pool, when the backend has one, gives each step's device peak.
	pool     devicePool
	out      io.Writer
	bar      bool
	every    int
	total    int
	mode     string
	path     string
	file     *os.File
	start    time.Time
	first    int // step the run (or its resumption) started at
	tokens   int64
	barShown bool
}

// isTerminal reports whether w is a character device (and TERM is not dumb).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// newProgress starts reporting a run of mode on backend, from step first
// to --steps, to out (--progress, --log-every), logging metrics to
// --out/metrics.jsonl. A fresh run (first 0) starts the file anew; a
// resumed one keeps the lines of steps up to first.
func newProgress(out io.Writer, o *options, mode string, first int, backend nn.Backend) (*progress, error) {
	p := &progress{out: out, every: o.logEvery, total: o.steps, mode: mode, start: time.Now(), first: first,
		path: filepath.Join(o.out, metricsFile)}
	if pool, ok := backend.(devicePool); ok {
		p.pool = pool
		pool.ResetPeak()
	}
	switch style := o.progress; style {
	case progressAuto:
		p.bar = isTerminal(out)
	case progressBar:
		p.bar = true
	case progressLines:
	default:
		return nil, fmt.Errorf("unknown --progress %q (want auto, bar or lines)", style)
	}
	var keep []byte
	if first > 0 {
		var err error
		if keep, err = p.rowsUpTo(first); err != nil {
			return nil, err
		}
	}
	return p, p.open(keep)
}

// rowsUpTo returns the lines of an earlier run's metrics.jsonl whose step
// is at most last.
func (p *progress) rowsUpTo(last int) ([]byte, error) {
	f, err := os.Open(p.path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer f.Close()
	var keep []byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		var m metric
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Step <= last {
			keep = append(append(keep, sc.Bytes()...), '\n')
		}
	}
	return keep, sc.Err()
}

// open writes content to a new metrics.jsonl and leaves it open for
// appending.
func (p *progress) open(content []byte) error {
	if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	f, err := os.Create(p.path)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	p.file = f
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// preserve runs replace, which may replace the whole output directory (an
// adapter save), and puts metrics.jsonl back as it was, open for appending.
func (p *progress) preserve(replace func() error) error {
	if err := p.file.Close(); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	p.file = nil
	content, err := os.ReadFile(p.path)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	if err := replace(); err != nil {
		return err
	}
	return p.open(content)
}

// log appends m to metrics.jsonl.
func (p *progress) log(m metric) error {
	m.Mode = p.mode
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintln(p.file, string(data)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// step records one optimiser step: m for metrics.jsonl, and summary, the
// mode's losses as text, for the bar or the log line.
func (p *progress) step(m metric, summary string) error {
	p.tokens += int64(m.Tokens)
	elapsed := time.Since(p.start).Seconds()
	done := m.Step - p.first
	rate := 0.0
	if elapsed > 0 {
		rate = float64(p.tokens) / elapsed
	}
	m.Kind, m.Steps, m.TokensPerS = "step", p.total, ptr(rate)
	mem := bytesString(m.PeakBytes)
	if p.pool != nil {
		m.DevicePeakBytes = p.pool.Stats().Peak
		p.pool.ResetPeak()
		mem = "dev " + bytesString(m.DevicePeakBytes)
	}
	if err := p.log(m); err != nil {
		return err
	}
	eta := "?"
	if done > 0 {
		eta = durationString(time.Duration(elapsed / float64(done) * float64(p.total-m.Step) * float64(time.Second)))
	}
	stats := fmt.Sprintf("%s tok/s mem %s ETA %s", countString(rate), mem, eta)
	if p.bar {
		const width = 24
		fill := width * m.Step / max(p.total, 1)
		fmt.Fprintf(p.out, "\r\x1b[2K[%s%s] %d/%d %s %s", strings.Repeat("#", fill), strings.Repeat(".", width-fill),
			m.Step, p.total, summary, stats)
		p.barShown = true
		return nil
	}
	if p.every > 0 && (m.Step%p.every == 0 || m.Step == p.total) {
		prefix := ""
		if p.mode != modePERK {
			prefix = p.mode + " "
		}
		fmt.Fprintf(p.out, "%sstep %d/%d %s %.2fs %s\n", prefix, m.Step, p.total, summary, *m.Seconds, stats)
	}
	return nil
}

// Write prints b below the bar: it clears the bar's line first; the next
// step redraws it.
func (p *progress) Write(b []byte) (int, error) {
	if p.barShown {
		fmt.Fprint(p.out, "\r\x1b[2K")
		p.barShown = false
	}
	return p.out.Write(b)
}

// close ends the bar's line and closes metrics.jsonl.
func (p *progress) close() error {
	if p.barShown {
		fmt.Fprintln(p.out)
		p.barShown = false
	}
	if p.file == nil {
		return nil
	}
	err := p.file.Close()
	p.file = nil
	return err
}

// countString writes n with a k/M suffix.
func countString(n float64) string {
	switch {
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", n/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fk", n/1e3)
	}
	return fmt.Sprintf("%.0f", n)
}

// durationString writes d rounded to the second (or 0.1 s below 10 s).
func durationString(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
