// Package bench measures the runtime and the kernels: memory-pool allocation
// against the raw device, kernel launch overhead, and kernel throughput, each
// reported next to a peer measured in the same run. cmd/bench and the Go
// benchmarks in this package call it. Timing uses device events, which on the
// emulator are host timestamps.
package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/perkgo/perk/runtime"
)

// Result is one measured figure.
type Result struct {
	Name   string  // what was measured, e.g. "gemm_bf16_nt 512x768x768"
	Iters  int     // repetitions timed
	PerOp  float64 // seconds per repetition
	Metric string  // unit of Value ("GFLOP/s", "GB/s", "ns/op"), empty if none
	Value  float64
	Peer   string  // what Ratio compares against, empty if none
	Ratio  float64 // Value relative to the peer measured in the same run
}

// WriteTable prints results as an aligned table.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\titers\ttime/op\tvalue\tvs peer")
	for _, r := range rs {
		val, ratio := "", ""
		if r.Metric != "" {
			val = fmt.Sprintf("%.4g %s", r.Value, r.Metric)
		}
		if r.Peer != "" {
			ratio = fmt.Sprintf("%.3gx %s", r.Ratio, r.Peer)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", r.Name, r.Iters, time.Duration(r.PerOp*1e9), val, ratio)
	}
	return tw.Flush()
}

// timeDevice runs f iters times after one warm-up call and returns seconds
// per call measured with events on stream s.
func timeDevice(dev runtime.Device, s runtime.Stream, iters int, f func() error) (float64, error) {
	if err := f(); err != nil {
		return 0, err
	}
	start, err := dev.NewEvent()
	if err != nil {
		return 0, err
	}
	defer dev.DestroyEvent(start)
	stop, err := dev.NewEvent()
	if err != nil {
		return 0, err
	}
	defer dev.DestroyEvent(stop)
	if err := dev.Record(start, s); err != nil {
		return 0, err
	}
	for range iters {
		if err := f(); err != nil {
			return 0, err
		}
	}
	if err := dev.Record(stop, s); err != nil {
		return 0, err
	}
	if err := dev.Synchronize(s); err != nil {
		return 0, err
	}
	ms, err := dev.Elapsed(start, stop)
	if err != nil {
		return 0, err
	}
	return float64(ms) / 1e3 / float64(iters), nil
}

// timeHost is timeDevice for host-side work (allocation calls).
func timeHost(iters int, f func() error) (float64, error) {
	if err := f(); err != nil {
		return 0, err
	}
	t0 := time.Now()
	for range iters {
		if err := f(); err != nil {
			return 0, err
		}
	}
	return time.Since(t0).Seconds() / float64(iters), nil
}
