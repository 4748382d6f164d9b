// Command bench profiles the runtime and the kernels and runs the runtime
// self-check.
//
//	bench selfcheck [--device emu|cuda]
//	bench run [--device emu|cuda] [--suite pool,launch,gemm] [--iters N] [--profile]
//
// On a GPU, --profile brackets the timed region with cuProfilerStart/Stop so
// `nsys profile --capture-range=cudaProfilerApi` or `ncu --profile-from-start off`
// capture exactly it.
package main

import (
	"fmt"
	"os"
	"strings"

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

func usage(fs *pflag.FlagSet) {
	fmt.Fprintf(os.Stderr, "usage: bench selfcheck|run [flags]\n\n  selfcheck  verify the runtime and every kernel family against CPU references\n  run        time the benchmark suites\n\nflags:\n%s", fs.FlagUsages())
}

func run(args []string) error {
	fs := pflag.NewFlagSet("bench", pflag.ContinueOnError)
	device := fs.String("device", envOr("PERK_DEVICE", "emu"), "device to run on: emu or cuda")
	suites := fs.StringSlice("suite", []string{"pool", "launch", "gemm"}, "benchmark suites to run (pool, launch, gemm)")
	iters := fs.Int("iters", 0, "repetitions per benchmark (0: a default suited to the device)")
	profile := fs.Bool("profile", false, "bracket the timed region with cuProfilerStart/Stop (cuda only)")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		usage(fs)
		return fmt.Errorf("missing command: selfcheck or run")
	}
	cmd := fs.Arg(0)
	if cmd != "selfcheck" && cmd != "run" {
		usage(fs)
		return fmt.Errorf("unknown command %q (want selfcheck or run)", cmd)
	}
	dev, err := runtime.Open(*device)
	if err != nil {
		return err
	}
	defer dev.Close()
	if cmd == "selfcheck" {
		return bench.SelfCheck(dev, os.Stdout)
	}
	n := *iters
	if n <= 0 {
		n = 200
		if dev.Kind() == "emu" {
			n = 20
		}
	}
	if *profile {
		if err := profilerStart(dev); err != nil {
			return err
		}
		defer profilerStop(dev)
	}
	var rs []bench.Result
	for _, s := range *suites {
		var r []bench.Result
		switch strings.TrimSpace(s) {
		case "pool":
			for _, size := range []int{4 << 10, 1 << 20, 64 << 20} {
				x, err := bench.PoolAllocFree(dev, size, n*10)
				if err != nil {
					return err
				}
				r = append(r, x)
			}
		case "launch":
			for _, blocks := range []int{1, 64} {
				x, err := bench.LaunchOverhead(dev, blocks, n)
				if err != nil {
					return err
				}
				r = append(r, x)
			}
		case "gemm":
			shapes := [][3]int{{512, 768, 768}, {4096, 2304, 768}}
			if dev.Kind() == "emu" {
				shapes = [][3]int{{128, 128, 128}}
			}
			for _, sh := range shapes {
				x, err := bench.GEMM(dev, runtime.BF16, sh[0], sh[1], sh[2], n)
				if err != nil {
					return err
				}
				r = append(r, x)
			}
		default:
			return fmt.Errorf("unknown suite %q (want pool, launch or gemm)", s)
		}
		rs = append(rs, r...)
	}
	fmt.Printf("device: %s\n", dev.Name())
	return bench.WriteTable(os.Stdout, rs)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
