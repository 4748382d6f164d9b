// Command perk-data writes PERK task data as JSONL records
// {"id", "context": [segments], "question", "answer", "support"?, "meta"?}:
// it generates BabiLong-style, needle-in-a-haystack and student-records
// tasks and converts the reference implementation's JSON.
//
// A generated record carries "meta": {"tokens": n, "depth": d}, the
// convention perk.ReadEvalRecords reads: tokens is the context length as
// the generator counted it (--tokenizer, or the 4-bytes-a-token estimate),
// the sum of its segments' counts; depth is the --depths value the
// record's supporting facts were placed at, left out when they were placed
// at random (no --depths, or a record with no support). Converted records
// have no "meta".
//
//	perk-data babilong --task qa2 --tokens 8192 --n 1000 --depths 0,0.25,0.5,0.75,1 --seed 1 -o train.jsonl
//	perk-data needle --kind multikey --tokens 8192 --n 1000 -o needle.jsonl
//	perk-data students --query aggregate --tokens 8192 --n 1000 -o students.jsonl
//	perk-data convert --from babilong|students IN -o OUT
//
// Output is written to a temporary file next to OUT and renamed into place
// when complete. Run "perk-data COMMAND --help" for a command's flags.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/perkgo/perk/nn/tokenizer"
	"github.com/perkgo/perk/perk"
	"github.com/perkgo/perk/perk/tasks"
)

// errUsage reports that the usage was printed instead of doing anything.
var errUsage = errors.New("usage")

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		cleanup.run()
		os.Exit(130)
	}()
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil, errors.Is(err, pflag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "perk-data:", err)
		os.Exit(1)
	}
}

// command is one subcommand.
type command struct {
	name, summary, synopsis string
	// flags defines the command's flags and returns what runs it.
	flags func(fs *pflag.FlagSet) func(args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"babilong", "bAbI-style stories (qa1-qa5) hidden in distractor prose",
		"perk-data babilong --task qa1|qa2|qa3|qa4|qa5 -o OUT [flags]", babilongFlags},
	{"needle", "needles in a haystack (RULER-style): single, multikey, multivalue, multiquery",
		"perk-data needle [--kind single|multikey|multivalue|multiquery] -o OUT [flags]", needleFlags},
	{"students", "student records (Drops-in-the-Ocean-style): recall, relation and aggregate questions",
		"perk-data students [--query recall|relation|aggregate|mixed] -o OUT [flags]", studentsFlags},
	{"convert", "convert the reference implementation's BabiLong or student-records JSON to JSONL",
		"perk-data convert --from babilong|students IN -o OUT [flags]", convertFlags},
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: perk-data COMMAND [flags]

Writes PERK task data as JSONL records, one per line:
  {"id": "...", "context": ["segment", ...], "question": "...", "answer": "...", "support": ["fact", ...],
   "meta": {"tokens": n, "depth": d}}
Every context is cut into segments of at most --segment-tokens tokens at
sentence boundaries. Generated records carry "meta": the context length in
tokens as counted (the sum of the segments' counts) and, when --depths
placed the supporting facts, their depth; converted records have none.
Output goes to a temporary file next to OUT and is renamed into place when
complete.

commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `  help      print a command's flags: perk-data help COMMAND

examples:
  perk-data babilong --task qa2 --tokens 8192 --n 1000 --depths 0,0.25,0.5,0.75,1 --seed 1 -o train.jsonl
  perk-data needle --kind multivalue --tokens 32768 --n 200 -o needle.jsonl
  perk-data students --query relation --tokens 4096 --n 500 -o students.jsonl
  perk-data convert --from babilong qa2.json -o qa2.jsonl
`)
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "help":
		if name == "help" && len(rest) > 0 {
			return run([]string{rest[0], "--help"}, stdout, stderr)
		}
		usage(stdout)
		return nil
	}
	for _, c := range commands {
		if c.name != name {
			continue
		}
		fs := pflag.NewFlagSet("perk-data "+c.name, pflag.ContinueOnError)
		fs.SortFlags = false
		fs.SetOutput(io.Discard)
		fs.Usage = func() {}
		exec := c.flags(fs)
		cmdUsage := func(w io.Writer) {
			fmt.Fprintf(w, "usage: %s\n\n%s: %s.\n\nflags:\n%s", c.synopsis, c.name, c.summary, fs.FlagUsages())
		}
		if len(rest) == 0 {
			cmdUsage(stderr)
			return errUsage
		}
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, pflag.ErrHelp) {
				cmdUsage(stdout)
				return err
			}
			return fmt.Errorf("%s: %w (see perk-data %s --help)", c.name, err, c.name)
		}
		if err := exec(fs.Args(), stdout, stderr); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
		return nil
	}
	return fmt.Errorf("unknown command %q (want babilong, needle, students, convert or help)", name)
}

// genOptions are the flags every generating command shares.
type genOptions struct {
	out                     string
	n, tokens, seg, workers int
	depths                  []float64
	seed                    uint64
	tokPath                 string
	quiet                   bool
}

func addGenFlags(fs *pflag.FlagSet, g *genOptions) {
	fs.StringVarP(&g.out, "output", "o", "", "output JSONL file (missing directories are created), or - for stdout (required)")
	fs.IntVar(&g.n, "n", 100, "number of records to write; record i has the id {command}-{task}-{i}")
	fs.IntVar(&g.tokens, "tokens", 8192, fmt.Sprintf("context length in tokens: the segments of a record count at most this many together (1 to %d); the count is written as meta.tokens", tasks.MaxTokens))
	fs.Float64SliceVar(&g.depths, "depths", nil, "depths in [0,1] at which the facts the answer rests on are placed (0: start of the context, 1: end); record i uses depth i mod the list's length and writes it as meta.depth; empty: random places")
	fs.Uint64Var(&g.seed, "seed", 1, "random seed; record i depends only on the seed, i and the other flags")
	fs.IntVar(&g.seg, "segment-tokens", tasks.DefaultSegmentTokens, "largest segment in tokens; segments are cut at sentence boundaries")
	fs.StringVar(&g.tokPath, "tokenizer", "", "tokenizer.json (or .json.gz) to count tokens exactly; default: an estimate of 1 token per 4 bytes")
	fs.IntVar(&g.workers, "workers", 0, "records generated in parallel (0: one per CPU); the output does not depend on it")
	fs.BoolVarP(&g.quiet, "quiet", "q", false, "print nothing on stderr (by default: progress every 10% when --n is at least 100, and a summary)")
}

// common checks the shared flags and returns the library options.
func (g *genOptions) common(args []string) (tasks.Options, error) {
	if len(args) > 0 {
		return tasks.Options{}, fmt.Errorf("unexpected arguments %q", args)
	}
	if g.out == "" {
		return tasks.Options{}, fmt.Errorf("-o/--output is required")
	}
	if g.n < 1 {
		return tasks.Options{}, fmt.Errorf("--n %d: must be at least 1", g.n)
	}
	if g.seg < 1 {
		return tasks.Options{}, fmt.Errorf("--segment-tokens %d: must be at least 1", g.seg)
	}
	if err := tasks.CheckDepths(g.depths); err != nil {
		return tasks.Options{}, fmt.Errorf("--depths: %w", err)
	}
	c, err := loadCounter(g.tokPath)
	if err != nil {
		return tasks.Options{}, err
	}
	return tasks.Options{Tokens: g.tokens, SegmentTokens: g.seg, Depths: g.depths, Seed: g.seed, Counter: c}, nil
}

// loadCounter loads a tokenizer for exact counts; "" gives the estimate.
func loadCounter(path string) (tasks.Counter, error) {
	if path == "" {
		return tasks.ApproxCounter{}, nil
	}
	tok, err := tokenizer.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--tokenizer: %w", err)
	}
	return tasks.TokenizerCounter(tok), nil
}

// generate writes n records of gen to the output, with progress on stderr.
func (g *genOptions) generate(gen tasks.Generator, stdout, stderr io.Writer) error {
	out, err := createOutput(g.out, stdout)
	if err != nil {
		return err
	}
	start := time.Now()
	done, segs, shown := 0, 0, 0
	err = tasks.Run(gen, g.n, g.workers, func(it tasks.Item) error {
		line, err := tasks.MarshalItem(it)
		if err != nil {
			return err
		}
		if _, err := out.w.Write(line); err != nil {
			return fmt.Errorf("write %s: %w", out.name(), err)
		}
		done++
		segs += len(it.Record.Context)
		if !g.quiet && g.n >= 100 && done*10/g.n > shown {
			shown = done * 10 / g.n
			fmt.Fprintf(stderr, "perk-data: %d/%d records (%d%%), %.1fs\n", done, g.n, shown*10, time.Since(start).Seconds())
		}
		return nil
	})
	if err != nil {
		out.abort()
		return err
	}
	if err := out.commit(); err != nil {
		return err
	}
	if !g.quiet {
		fmt.Fprintf(stderr, "perk-data: wrote %d records (%.1f segments each) to %s in %.1fs\n",
			done, float64(segs)/float64(done), out.name(), time.Since(start).Seconds())
	}
	return nil
}

func babilongFlags(fs *pflag.FlagSet) func([]string, io.Writer, io.Writer) error {
	var g genOptions
	var task string
	var facts int
	fs.StringVar(&task, "task", "", "task: qa1 (single supporting fact), qa2 (two), qa3 (three), qa4 (two-argument relations) or qa5 (three-argument relations) (required)")
	fs.IntVar(&facts, "facts", 0, "story facts per record (0: the task's default, qa1 10, qa2 20, qa3 30, qa4 4, qa5 20)")
	addGenFlags(fs, &g)
	return func(args []string, stdout, stderr io.Writer) error {
		if task == "" {
			return fmt.Errorf("--task is required (one of %s)", strings.Join(tasks.BabiLongTasks, ", "))
		}
		o, err := g.common(args)
		if err != nil {
			return err
		}
		gen, err := tasks.NewBabiLong(tasks.BabiLongOptions{Options: o, Task: task, Facts: facts})
		if err != nil {
			return err
		}
		return g.generate(gen, stdout, stderr)
	}
}

func needleFlags(fs *pflag.FlagSet) func([]string, io.Writer, io.Writer) error {
	var g genOptions
	var kind string
	var needles int
	fs.StringVar(&kind, "kind", "single", "needle task: single, multikey (one of several keys is asked), multivalue (all values of one key) or multiquery (the values of several keys)")
	fs.IntVar(&needles, "needles", 0, fmt.Sprintf("needles per record for the multi kinds, 2 to %d (0: %d)", tasks.MaxNeedles, tasks.DefaultNeedles))
	addGenFlags(fs, &g)
	return func(args []string, stdout, stderr io.Writer) error {
		o, err := g.common(args)
		if err != nil {
			return err
		}
		gen, err := tasks.NewNeedle(tasks.NeedleOptions{Options: o, Kind: kind, Needles: needles})
		if err != nil {
			return err
		}
		return g.generate(gen, stdout, stderr)
	}
}

func studentsFlags(fs *pflag.FlagSet) func([]string, io.Writer, io.Writer) error {
	var g genOptions
	var query string
	fs.StringVar(&query, "query", "mixed", "question class: recall (an attribute by id), relation (yes/no comparison of two students), aggregate (highest, lowest or average grade) or mixed")
	addGenFlags(fs, &g)
	return func(args []string, stdout, stderr io.Writer) error {
		o, err := g.common(args)
		if err != nil {
			return err
		}
		gen, err := tasks.NewStudents(tasks.StudentsOptions{Options: o, Query: query})
		if err != nil {
			return err
		}
		return g.generate(gen, stdout, stderr)
	}
}

func convertFlags(fs *pflag.FlagSet) func([]string, io.Writer, io.Writer) error {
	var from, out, tokPath, prefix, onBad string
	var seg int
	var quiet bool
	fs.StringVar(&from, "from", "", `input format (required): babilong ({"context": text or [segments], "question", "answer", "support"}) or students ({"database": [rows], "questions": [...]})`)
	fs.StringVarP(&out, "output", "o", "", "output JSONL file (missing directories are created), or - for stdout (required)")
	fs.IntVar(&seg, "segment-tokens", tasks.DefaultSegmentTokens, "largest segment in tokens; BabiLong text is cut at sentence boundaries, a student record longer than this is an error")
	fs.StringVar(&tokPath, "tokenizer", "", "tokenizer.json (or .json.gz) to count tokens exactly; default: an estimate of 1 token per 4 bytes")
	fs.StringVar(&prefix, "id-prefix", "", "id prefix of items without an id: PREFIX-ITEM (default: the input's base name)")
	fs.StringVar(&onBad, "on-bad-record", "stop", "an input item that is valid JSON but not a valid item (no answer, say): stop with its file:line error, or skip it with a warning on stderr (invalid JSON always stops)")
	fs.BoolVarP(&quiet, "quiet", "q", false, "print no summary on stderr")
	return func(args []string, stdout, stderr io.Writer) error {
		var conv func(string, tasks.ConvertOptions) ([]perk.Record, error)
		switch from {
		case "babilong":
			conv = tasks.ReadBabiLong
		case "students":
			conv = tasks.ReadStudents
		case "":
			return fmt.Errorf("--from is required (babilong or students)")
		default:
			return fmt.Errorf("unknown --from %q (want babilong or students)", from)
		}
		if len(args) != 1 {
			return fmt.Errorf("want one input file, got %d arguments", len(args))
		}
		if out == "" {
			return fmt.Errorf("-o/--output is required")
		}
		if seg < 1 {
			return fmt.Errorf("--segment-tokens %d: must be at least 1", seg)
		}
		bad, err := perk.ParseOnBadRecord(onBad)
		if err != nil {
			return err
		}
		skipped := 0
		bad.Skipped = func(err error) {
			skipped++
			fmt.Fprintf(stderr, "perk-data: skipping %v\n", err)
		}
		c, err := loadCounter(tokPath)
		if err != nil {
			return err
		}
		if _, err := os.Stat(args[0]); err != nil {
			return fmt.Errorf("input: %w", err)
		}
		o, err := createOutput(out, stdout)
		if err != nil {
			return err
		}
		recs, err := conv(args[0], tasks.ConvertOptions{SegmentTokens: seg, Counter: c, IDPrefix: prefix, OnBad: bad})
		if err == nil {
			err = tasks.WriteRecords(o.w, recs)
		}
		if err != nil {
			o.abort()
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		if !quiet {
			note := ""
			if skipped > 0 {
				note = fmt.Sprintf(" (%d bad items skipped)", skipped)
			}
			fmt.Fprintf(stderr, "perk-data: converted %s: %d records written to %s%s\n", args[0], len(recs), o.name(), note)
		}
		return nil
	}
}

// output is the destination of a command: a temporary file next to the
// final path, renamed into place by commit, or stdout.
type output struct {
	path, tmp string
	f         *os.File
	w         *bufio.Writer
}

// tempFile remembers the temporary output file, so that an interrupted
// run removes it.
type tempFile struct {
	mu   sync.Mutex
	path string
}

var cleanup tempFile

func (t *tempFile) set(path string) {
	t.mu.Lock()
	t.path = path
	t.mu.Unlock()
}

func (t *tempFile) run() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.path != "" {
		os.Remove(t.path)
	}
}

// createOutput checks that path can be written, before any work is done,
// by creating the temporary file it will be written through.
func createOutput(path string, stdout io.Writer) (*output, error) {
	if path == "-" {
		return &output{path: "-", w: bufio.NewWriterSize(stdout, 1<<20)}, nil
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("output %s is a directory", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("output directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("cannot write to output directory %s: %w", dir, err)
	}
	cleanup.set(f.Name())
	return &output{path: path, tmp: f.Name(), f: f, w: bufio.NewWriterSize(f, 1<<20)}, nil
}

func (o *output) name() string {
	if o.path == "-" {
		return "stdout"
	}
	return o.path
}

// commit flushes the output and moves it into place.
func (o *output) commit() error {
	if err := o.w.Flush(); err != nil {
		o.abort()
		return fmt.Errorf("write %s: %w", o.name(), err)
	}
	if o.f == nil {
		return nil
	}
	err := o.f.Sync()
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(o.tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(o.tmp, o.path)
	}
	if err != nil {
		os.Remove(o.tmp)
		cleanup.set("")
		return fmt.Errorf("write %s: %w", o.path, err)
	}
	cleanup.set("")
	return nil
}

// abort discards a temporary output file.
func (o *output) abort() {
	if o.f == nil {
		return
	}
	o.f.Close()
	os.Remove(o.tmp)
	cleanup.set("")
}
