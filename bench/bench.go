// Package bench measures the runtime and the kernels: memory-pool allocation
// against the raw device, kernel launch overhead, and kernel throughput, each
// reported next to a peer measured in the same run. cmd/bench and the Go
// benchmarks in this package call it. Timing uses device events, which on the
// emulator are host timestamps.
//
// The kernel suites (LoRA, Xent, Embed, Optim, Attention, Norm, Act, RoPE;
// see Suites) first run each kernel once on random data and compare a sample
// of its outputs with a float64 host reference computed from the same data,
// recording the largest error in Result.MaxRelErr, and only then time it.
package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/perkgo/perk/runtime"
)

// Result is one measured figure.
type Result struct {
	Name   string  `json:"name"`             // what was measured, e.g. "gemm_bf16_nt 512x768x768"
	Iters  int     `json:"iters"`            // repetitions timed
	PerOp  float64 `json:"sec_per_op"`       // seconds per repetition
	Metric string  `json:"metric,omitempty"` // unit of Value ("GFLOP/s", "TFLOP/s", "GB/s", "ns/op"), empty if none
	Value  float64 `json:"value"`
	Peer   string  `json:"peer,omitempty"`  // what Ratio compares against, empty if none; "no peer (…)" when it could not be timed
	Ratio  float64 `json:"ratio,omitempty"` // Value relative to the peer measured in the same run (0: no peer)

	// FLOPs and Bytes are the work of one repetition that Value was computed
	// from (0 when not used); see each suite for its formula.
	FLOPs float64 `json:"flops,omitempty"`
	Bytes float64 `json:"bytes,omitempty"`

	// Checked reports that the kernel's outputs were compared with a float64
	// host reference on the same data before timing. MaxRelErr is the largest
	// error of that comparison, relative to the magnitude of the terms each
	// output is made of (Σ|terms| for sums and products, as the golden tests'
	// CheckScaled), and Tol the kernel's tolerance for its storage type.
	Checked   bool    `json:"checked"`
	MaxRelErr float64 `json:"max_rel_err"`
	Tol       float64 `json:"tol,omitempty"`
}

// Failed reports whether the correctness check ran and exceeded the tolerance.
func (r Result) Failed() bool { return r.Checked && !(r.MaxRelErr <= r.Tol) }

// WriteTable prints results as an aligned table.
func WriteTable(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark\titers\ttime/op\tvalue\tvs peer\tmax rel err")
	for _, r := range rs {
		val, ratio, check := "", "", "—"
		if r.Metric != "" {
			val = fmt.Sprintf("%.4g %s", r.Value, r.Metric)
		}
		switch {
		case r.Peer != "" && r.Ratio != 0:
			ratio = fmt.Sprintf("%.3gx %s", r.Ratio, r.Peer)
		case r.Peer != "":
			ratio = r.Peer
		}
		if r.Checked {
			check = fmt.Sprintf("%.1e (tol %.0e)", r.MaxRelErr, r.Tol)
			if r.Failed() {
				check += " FAIL"
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", r.Name, r.Iters, time.Duration(r.PerOp*1e9), val, ratio, check)
	}
	return tw.Flush()
}

// Report is what WriteJSON writes: the device and settings of a run and its
// results.
type Report struct {
	Device  string   `json:"device"`
	Kind    string   `json:"kind"`
	Shapes  string   `json:"shapes,omitempty"`
	Suites  []string `json:"suites,omitempty"`
	Iters   int      `json:"iters,omitempty"`
	Date    string   `json:"date,omitempty"`
	Results []Result `json:"results"`
}

// WriteJSON writes rep as indented JSON. Non-finite numbers (an error that
// is NaN or Inf) are written as the largest float64, which JSON can hold.
func WriteJSON(w io.Writer, rep Report) error {
	rs := make([]Result, len(rep.Results))
	for i, r := range rep.Results {
		for _, f := range []*float64{&r.PerOp, &r.Value, &r.Ratio, &r.FLOPs, &r.Bytes, &r.MaxRelErr, &r.Tol} {
			if math.IsNaN(*f) || math.IsInf(*f, 0) {
				*f = math.MaxFloat64
			}
		}
		rs[i] = r
	}
	rep.Results = rs
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// timeDevice runs f iters times after one warm-up call and returns seconds
// per call measured with events on stream s.
func timeDevice(dev runtime.Device, s runtime.Stream, iters int, f func() error) (float64, error) {
	if err := f(); err != nil {
		return 0, err
	}
	return timeEvents(dev, s, iters, f)
}

// timeEvents is timeDevice without the warm-up call.
func timeEvents(dev runtime.Device, s runtime.Stream, iters int, f func() error) (float64, error) {
	iters = max(iters, 1)
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
