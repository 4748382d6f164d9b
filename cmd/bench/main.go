// Command bench profiles the runtime and the kernels, runs the runtime
// self-check and measures PERK against ICR end to end.
//
//	bench selfcheck [--device emu|cuda]
//	bench run [--device emu|cuda] [--suite all|pool,launch,gemm,lora,xent,embed,optim,attention,norm,act,rope]
//	          [--shapes small|gpt2|qwen] [--iters N] [--profile] [--json FILE]
//	bench scaling [--device cpu|emu|cuda] [--lengths N,N,...] [--model DIR] [--examples N]
//	          [--inner-steps N] [--lora-rank N] [--segment-tokens N] [--max-new-tokens N] [--seed N]
//	          [--out DIR] [--json]
//
// bench scaling answers needle records at growing context lengths with
// PERK (test-time learning, no context in the prompt) and with ICR (the
// context in the prompt) and reports wall time and peak memory per example
// as a table, scaling.json, scaling.md and scaling.png (see
// `bench scaling --help`).
//
// The kernel suites check each kernel against a float64 host reference on the
// data they time it on and print the largest error next to the timing; the run
// fails (after printing the table) when any error exceeds its tolerance.
//
// On a GPU every timed region is an NVTX range named after the kernel, and
// --profile also brackets each one with cuProfilerStart/Stop, so
// `ncu --profile-from-start off --clock-control none` profiles exactly the timed
// launches (use a small --iters) and `nsys profile --capture-range=cudaProfilerApi
// --capture-range-end=repeat` records one report per timed region.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/perkgo/perk/bench"
	"github.com/perkgo/perk/runtime"
	_ "github.com/perkgo/perk/runtime/emu"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runtimeSuites are the suites that time the runtime rather than a kernel family.
var runtimeSuites = []string{"pool", "launch", "gemm"}

func allSuites() []string {
	names := append([]string(nil), runtimeSuites...)
	for _, s := range bench.Suites() {
		names = append(names, s.Name)
	}
	return names
}

func usage(fs *pflag.FlagSet) {
	var b strings.Builder
	for _, s := range bench.Suites() {
		fmt.Fprintf(&b, "  %-10s %s\n", s.Name, s.Doc)
	}
	fmt.Fprintf(os.Stderr, `usage: bench selfcheck|run [flags]
       bench scaling [flags]   (its flags: bench scaling --help)

  selfcheck  verify the runtime and every kernel family against CPU references
  run        time the benchmark suites
  scaling    PERK vs ICR end to end: time and peak memory per example by context length

suites (--suite, comma-separated, or all):
  pool       caching pool alloc+free vs the device's own
  launch     kernel launch overhead vs a 4-byte copy
  gemm       bf16 tensor-core GEMM vs D2D copy time for its bytes
%s
shapes (--shapes): small (emulator default), gpt2 (GPU default), qwen, tiny

flags:
%s`, b.String(), fs.FlagUsages())
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "scaling" {
		return runScaling(args[1:], os.Stdout, os.Stderr)
	}
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	device := fs.String("device", envOr("PERK_DEVICE", "emu"), "device to run on: emu or cuda")
	suites := fs.StringSlice("suite", runtimeSuites, "benchmark suites to run, or all ("+strings.Join(allSuites(), ", ")+")")
	shapes := fs.String("shapes", "", "kernel-suite sizes: small, gpt2, qwen or tiny (default small on emu, gpt2 on cuda)")
	iters := fs.Int("iters", 0, "repetitions per benchmark (0: a default suited to the device)")
	profile := fs.Bool("profile", false, "bracket each timed region with cuProfilerStart/Stop (cuda only)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		usage(fs)
		return fmt.Errorf("missing command: selfcheck, run or scaling")
	}
	cmd := fs.Arg(0)
	if cmd == "scaling" {
		return fmt.Errorf("scaling takes its own flags after the command: bench scaling [flags]")
	}
	if cmd != "selfcheck" && cmd != "run" {
		usage(fs)
		return fmt.Errorf("unknown command %q (want selfcheck, run or scaling)", cmd)
	}
	names, err := expandSuites(*suites)
	if err != nil {
		return err
	}
	dev, err := runtime.Open(*device)
	if err != nil {
		return err
	}
	defer dev.Close()
	if cmd == "selfcheck" {
		return bench.SelfCheck(dev, os.Stdout)
	}
	shapesName := *shapes
	if shapesName == "" {
		shapesName = bench.DefaultShapes(dev.Kind())
	}
	sh, err := bench.ShapesByName(shapesName)
	if err != nil {
		return err
	}
	// Default repetitions: fewer on the emulator, which runs kernels on the
	// CPU (there the kernel suites' correctness column is the point).
	n := *iters
	if n <= 0 {
		n = 200
		if dev.Kind() == "emu" {
			n = 20
		}
	}
	var hook func(string) func()
	if *profile {
		if err := profilerCheck(dev); err != nil {
			return err
		}
		hook = func(name string) func() {
			if err := profilerStart(dev); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s: %v\n", name, err)
			}
			return func() { profilerStop(dev) }
		}
	}
	var rs []bench.Result
	for _, s := range names {
		t0 := time.Now()
		r, err := runSuite(dev, s, sh, n, hook)
		if err != nil {
			return fmt.Errorf("suite %s: %w", s, err)
		}
		fmt.Fprintf(os.Stderr, "bench: %s: %d results in %.1fs\n", s, len(r), time.Since(t0).Seconds())
		rs = append(rs, r...)
	}
	fmt.Printf("device: %s, shapes: %s\n", dev.Name(), sh.Name)
	if err := bench.WriteTable(os.Stdout, rs); err != nil {
		return err
	}
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return err
		}
		rep := bench.Report{Device: dev.Name(), Kind: dev.Kind(), Shapes: sh.Name, Suites: names, Iters: n,
			Date: time.Now().UTC().Format(time.RFC3339), Results: rs}
		if err := bench.WriteJSON(f, rep); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	var failed []string
	for _, r := range rs {
		if r.Failed() {
			failed = append(failed, r.Name)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d correctness check(s) above tolerance: %s", len(failed), strings.Join(failed, "; "))
	}
	return nil
}

// expandSuites resolves "all" and checks every name before anything runs.
func expandSuites(in []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, s := range in {
		s = strings.TrimSpace(s)
		list := []string{s}
		if s == "all" {
			list = allSuites()
		}
		for _, x := range list {
			known := false
			for _, k := range allSuites() {
				known = known || k == x
			}
			if !known {
				return nil, fmt.Errorf("unknown suite %q (want all or one of %s)", x, strings.Join(allSuites(), ", "))
			}
			if !seen[x] {
				seen[x] = true
				out = append(out, x)
			}
		}
	}
	return out, nil
}

func runSuite(dev runtime.Device, name string, sh bench.Shapes, n int, hook func(string) func()) ([]bench.Result, error) {
	if s, ok := bench.SuiteByName(name); ok {
		return s.Run(dev, bench.Options{Shapes: sh, Iters: n, Timed: hook})
	}
	var r []bench.Result
	end := bench.TimedRegion(dev, name, hook)
	defer end()
	switch name {
	case "pool":
		for _, size := range []int{4 << 10, 1 << 20, 64 << 20} {
			x, err := bench.PoolAllocFree(dev, size, n*10)
			if err != nil {
				return nil, err
			}
			r = append(r, x)
		}
	case "launch":
		for _, blocks := range []int{1, 64} {
			x, err := bench.LaunchOverhead(dev, blocks, n)
			if err != nil {
				return nil, err
			}
			r = append(r, x)
		}
	case "gemm":
		shapes := [][3]int{{512, 768, 768}, {4096, 2304, 768}}
		if dev.Kind() == "emu" {
			shapes = [][3]int{{128, 128, 128}}
		}
		for _, s := range shapes {
			x, err := bench.GEMM(dev, runtime.BF16, s[0], s[1], s[2], n)
			if err != nil {
				return nil, err
			}
			r = append(r, x)
		}
	}
	return r, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
