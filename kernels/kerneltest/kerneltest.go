// Package kerneltest is the golden-test harness for kernels: it opens the
// device the tests run on (PERK_DEVICE=emu, the default, or cuda in a binary
// built with -tags cuda), moves data to and from it, poisons outputs with NaN
// so unwritten elements fail, compares against float64 references with
// tolerances by storage type, and records the largest relative error of each
// kernel for the report `make test` prints.
package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
	_ "github.com/perkgo/perk/runtime/emu" // registers the emu device
)

var (
	devOnce sync.Once
	dev     runtime.Device
	devErr  error
)

// DeviceKind is the device the golden tests run on: $PERK_DEVICE or "emu".
func DeviceKind() string {
	if k := os.Getenv("PERK_DEVICE"); k != "" {
		return k
	}
	return "emu"
}

// Device returns the process-wide test device, opened on first use.
func Device(tb testing.TB) runtime.Device {
	tb.Helper()
	devOnce.Do(func() { dev, devErr = runtime.Open(DeviceKind()) })
	require.NoError(tb, devErr, "open test device")
	return dev
}

// Tolerance is the largest relative error the golden tests accept for
// results stored in t: 1e-5 for f32 (and f64), 2e-2 for bf16, 2e-3 for f16.
func Tolerance(t runtime.DType) float64 {
	switch t {
	case runtime.BF16:
		return 2e-2
	case runtime.F16:
		return 2e-3
	}
	return 1e-5
}

// Upload allocates a device array of type t and shape, filled with vals
// (rounded to t). It is freed when the test ends.
func Upload(tb testing.TB, d runtime.Device, t runtime.DType, shape []int, vals []float64) kernels.Array {
	tb.Helper()
	a, err := kernels.Upload(d, t, shape, vals)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = kernels.FreeArray(a) })
	return a
}

// Alloc allocates an uninitialised device array freed when the test ends.
func Alloc(tb testing.TB, d runtime.Device, t runtime.DType, shape []int) kernels.Array {
	tb.Helper()
	a, err := kernels.NewArray(d, t, shape...)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = kernels.FreeArray(a) })
	return a
}

// Poisoned allocates an array whose every byte is 0xFF: NaN in f32, bf16 and
// f16, so an element a kernel fails to write fails the comparison.
func Poisoned(tb testing.TB, d runtime.Device, t runtime.DType, shape []int) kernels.Array {
	tb.Helper()
	a := Alloc(tb, d, t, shape)
	if a.Bytes() > 0 {
		require.NoError(tb, d.Memset(a.Ptr, 0xFF, a.Bytes(), 0))
	}
	return a
}

// Download copies a device array back as float64 values.
func Download(tb testing.TB, a kernels.Array) []float64 {
	tb.Helper()
	v, err := kernels.Download(a)
	require.NoError(tb, err)
	return v
}

// Rand returns n values uniform in [-scale, scale) rounded to t.
func Rand(rng *rand.Rand, t runtime.DType, n int, scale float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = runtime.Round(t, (2*rng.Float64()-1)*scale)
	}
	return out
}

// RaggedSizes returns sizes that exercise tile and block edges: 1, small
// primes, a power of two ±1, and a few random sizes up to limit.
func RaggedSizes(rng *rand.Rand, limit int) []int {
	s := []int{1, 7, 31, 33, 255, 257}
	for range 3 {
		s = append(s, 1+rng.IntN(limit))
	}
	out := s[:0]
	for _, v := range s {
		if v <= limit {
			out = append(out, v)
		}
	}
	return out
}

// MaxRelErr is max_i |got_i − want_i| / max(|want_i|, floor) with floor =
// 1e-3·max_j |want_j| (and at least 1e-30), so elements that cancel to nearly
// zero are judged against the scale of the result rather than their own tiny
// magnitude. A NaN or Inf where want is finite gives +Inf.
func MaxRelErr(got, want []float64) float64 {
	scale := 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	floor := math.Max(1e-3*scale, 1e-30)
	worst := 0.0
	for i := range want {
		g, w := got[i], want[i]
		if math.IsNaN(w) && math.IsNaN(g) || math.IsInf(w, 0) && g == w {
			continue
		}
		if math.IsNaN(g) || math.IsInf(g, 0) || math.IsNaN(w) || math.IsInf(w, 0) {
			return math.Inf(1)
		}
		worst = math.Max(worst, math.Abs(g-w)/math.Max(math.Abs(w), floor))
	}
	return worst
}

var (
	reportMu sync.Mutex
	report   = map[string]*entry{}
)

type entry struct {
	maxErr float64
	tol    float64
	cases  int
}

// Check compares a kernel's output with its reference at the tolerance of
// storage type t, records the error for the report and fails the test when
// it is too large. kernel is the kernel's symbol name (e.g. "gemm_bf16_nt").
func Check(tb testing.TB, kernel string, t runtime.DType, got, want []float64, msgAndArgs ...any) {
	tb.Helper()
	CheckTol(tb, kernel, Tolerance(t), got, want, msgAndArgs...)
}

// CheckTol is Check with an explicit tolerance.
func CheckTol(tb testing.TB, kernel string, tol float64, got, want []float64, msgAndArgs ...any) {
	tb.Helper()
	require.Equal(tb, len(want), len(got), "%s: result length", kernel)
	e := MaxRelErr(got, want)
	Record(kernel, e, tol)
	if e > tol {
		worst, wi := 0.0, 0
		for i := range want {
			if d := math.Abs(got[i] - want[i]); d > worst || math.IsNaN(d) {
				worst, wi = d, i
				if math.IsNaN(d) {
					break
				}
			}
		}
		msg := fmt.Sprintf("%s: max relative error %.3g > %.3g (element %d: got %g want %g)", kernel, e, tol, wi, got[wi], want[wi])
		if len(msgAndArgs) > 0 {
			msg += " " + fmt.Sprint(msgAndArgs...)
		}
		tb.Fatal(msg)
	}
}

// CheckScaled is CheckTol with per-element denominators: the error of element
// i is |got_i − want_i| / scale_i. For sums and products the right scale is
// Σ|terms| (e.g. Σ_p |a_ip·b_pj| for a GEMM), which bounds the rounding error
// of any summation order however much the terms cancel.
func CheckScaled(tb testing.TB, kernel string, tol float64, got, want, scale []float64, msgAndArgs ...any) {
	tb.Helper()
	require.Equal(tb, len(want), len(got), "%s: result length", kernel)
	require.Equal(tb, len(want), len(scale), "%s: scale length", kernel)
	worst, wi := 0.0, -1
	for i := range want {
		e := math.Abs(got[i]-want[i]) / math.Max(scale[i], 1e-30)
		if math.IsNaN(e) || math.IsInf(e, 0) {
			worst, wi = math.Inf(1), i
			break
		}
		if e > worst {
			worst, wi = e, i
		}
	}
	Record(kernel, worst, tol)
	if worst > tol {
		tb.Fatalf("%s: max scaled error %.3g > %.3g (element %d: got %g want %g scale %g) %s", kernel, worst, tol, wi, got[wi], want[wi], scale[wi], fmt.Sprint(msgAndArgs...))
	}
}

// Record notes one comparison of kernel for the report.
func Record(kernel string, relErr, tol float64) {
	reportMu.Lock()
	defer reportMu.Unlock()
	e, ok := report[kernel]
	if !ok {
		e = &entry{tol: tol}
		report[kernel] = e
	}
	e.maxErr = math.Max(e.maxErr, relErr)
	e.tol = math.Max(e.tol, tol)
	e.cases++
}

// Report returns the markdown table of every kernel of every family with its
// largest relative error, and the kernels that no test checked.
func Report() (table string, unchecked []string) {
	reportMu.Lock()
	defer reportMu.Unlock()
	fams := kernels.Families()
	names := make([]string, 0, len(fams))
	for f := range fams {
		names = append(names, f)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "| family | kernel | cases | max rel err | tolerance | device |\n|---|---|---|---|---|---|\n")
	for _, f := range names {
		for _, k := range fams[f] {
			e, ok := report[k]
			if !ok {
				unchecked = append(unchecked, k)
				fmt.Fprintf(&b, "| %s | %s | 0 | — | — | %s |\n", f, k, DeviceKind())
				continue
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %.2e | %.0e | %s |\n", f, k, e.cases, e.maxErr, e.tol, DeviceKind())
		}
	}
	return b.String(), unchecked
}

// Main runs the tests of a kernel package and then writes the report: to
// stdout with -v, and appended to $PERK_GOLDEN_REPORT when set. When the
// whole suite ran (no -run filter) a kernel that no test checked fails it.
func Main(m *testing.M) int {
	code := m.Run()
	table, unchecked := Report()
	if testing.Verbose() {
		fmt.Print(table)
	}
	if path := os.Getenv("PERK_GOLDEN_REPORT"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			_, _ = f.WriteString(table)
			_ = f.Close()
		}
	}
	if code == 0 && len(unchecked) > 0 && runFilter() == "" {
		fmt.Fprintf(os.Stderr, "kernels without a golden test: %s\n", strings.Join(unchecked, ", "))
		return 1
	}
	return code
}

func runFilter() string {
	if f := flagValue("test.run"); f != "" {
		return f
	}
	return ""
}
