package main

// Checkpoints of the perk mode: OUT/checkpoint-<step> every --save-every
// steps, at the end and on an interrupt, keeping the last --keep-last of
// them, and OUT/checkpoint-best after each evaluation that improves the
// best held-out result (OUT/best.json says which step and value).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/perkgo/perk/perk"
)

// Checkpoint names under --out.
const (
	checkpointPrefix = "checkpoint-"
	bestDir          = "checkpoint-best"
	bestFile         = "best.json"
)

// Metrics --best-metric chooses from.
const (
	bestAnswerLoss = "answer_loss"
	bestAccuracy   = "accuracy"
)

// bestRecord is best.json: the step of checkpoint-best and its held-out
// result on the first --eval-data file.
type bestRecord struct {
	Step       int     `json:"step"`
	Data       string  `json:"data"`
	Metric     string  `json:"metric"`
	AnswerLoss float64 `json:"answer_loss"`
	Accuracy   float64 `json:"accuracy"`
}

// checkpointer saves the trainer's checkpoints under dir.
type checkpointer struct {
	tr     *perk.Trainer
	dir    string
	keep   int
	metric string
	out    io.Writer
	best   *bestRecord
}

// newCheckpointer checks --best-metric and, for a resumed run in a
// directory that already has a best.json, continues from its record.
func newCheckpointer(tr *perk.Trainer, dir string, keep int, metric string, resumed bool, out io.Writer) (*checkpointer, error) {
	if metric != bestAnswerLoss && metric != bestAccuracy {
		return nil, fmt.Errorf("unknown --best-metric %q (want answer_loss or accuracy)", metric)
	}
	if keep < 0 {
		return nil, fmt.Errorf("--keep-last %d must be ≥ 0", keep)
	}
	c := &checkpointer{tr: tr, dir: dir, keep: keep, metric: metric, out: out}
	if !resumed {
		return c, nil
	}
	data, err := os.ReadFile(filepath.Join(dir, bestFile))
	switch {
	case err == nil:
		var b bestRecord
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, bestFile), err)
		}
		if b.Metric == metric {
			c.best = &b
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	return c, nil
}

// save writes checkpoint-<step> and removes the oldest numbered
// checkpoints beyond --keep-last. It returns the directory written.
func (c *checkpointer) save() (string, error) {
	dir := filepath.Join(c.dir, checkpointPrefix+strconv.Itoa(c.tr.Step))
	if err := c.tr.SaveCheckpoint(dir); err != nil {
		return "", err
	}
	fmt.Fprintf(c.out, "saved %s\n", dir)
	return dir, c.prune()
}

// prune removes all but the newest --keep-last numbered checkpoints.
func (c *checkpointer) prune() error {
	if c.keep == 0 {
		return nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return err
	}
	var steps []int
	for _, e := range entries {
		n, ok := strings.CutPrefix(e.Name(), checkpointPrefix)
		if step, err := strconv.Atoi(n); ok && err == nil && e.IsDir() && step >= 0 {
			steps = append(steps, step)
		}
	}
	slices.Sort(steps)
	for len(steps) > c.keep {
		if err := os.RemoveAll(filepath.Join(c.dir, checkpointPrefix+strconv.Itoa(steps[0]))); err != nil {
			return fmt.Errorf("removing an old checkpoint: %w", err)
		}
		steps = steps[1:]
	}
	return nil
}

// better reports whether r beats the best so far on the chosen metric
// (accuracy ties are broken by the answer loss).
func (c *checkpointer) better(r evalSummary) bool {
	if c.best == nil {
		return true
	}
	if c.metric == bestAccuracy && r.accuracy != c.best.Accuracy {
		return r.accuracy > c.best.Accuracy
	}
	return r.loss < c.best.AnswerLoss
}

// evaluated saves checkpoint-best when r, the first held-out set's result
// at the trainer's step, is the best so far.
func (c *checkpointer) evaluated(r evalSummary) error {
	if !c.better(r) {
		return nil
	}
	dir := filepath.Join(c.dir, bestDir)
	if err := c.tr.SaveCheckpoint(dir); err != nil {
		return err
	}
	b := bestRecord{Step: c.tr.Step, Data: r.name, Metric: c.metric, AnswerLoss: r.loss, Accuracy: r.accuracy}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(c.dir, bestFile), append(data, '\n')); err != nil {
		return err
	}
	c.best = &b
	fmt.Fprintf(c.out, "best %s so far on %s at step %d: saved %s\n", c.metric, r.name, b.Step, dir)
	return nil
}

// checkFreshOut refuses to start a new run in a directory that holds
// another run's checkpoints, which pruning and checkpoint-best would
// overwrite or remove.
func checkFreshOut(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), checkpointPrefix) {
			return fmt.Errorf("--out %s already holds %s of another run: continue it with --resume %s, or choose another --out",
				dir, e.Name(), filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it over path (mode 0644), so a reader never sees half a file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil { // CreateTemp makes 0600
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
