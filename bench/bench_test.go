package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
	_ "github.com/perkgo/perk/runtime/emu"
)

// TestSuitesSmallEmu runs every kernel suite once on the emulator at the
// tiny shapes (and the small ones, the emulator default of cmd/bench, both
// checking every output and, as the GPU presets do, a sample of rows) and
// requires every kernel to pass its correctness check: max relative error
// within 1e-5 (f32) or 2e-2 (bf16).
func TestSuitesSmallEmu(t *testing.T) {
	dev := openEmu(t)
	start := time.Now()
	for _, shapes := range []string{"tiny", "small", "small-sampled"} {
		sh, err := ShapesByName(strings.TrimSuffix(shapes, "-sampled"))
		require.NoError(t, err)
		if strings.HasSuffix(shapes, "-sampled") {
			sh.CheckRows = 5
		}
		for _, s := range Suites() {
			t.Run(shapes+"/"+s.Name, func(t *testing.T) {
				rs, err := s.Run(dev, Options{Shapes: sh, Iters: 1})
				require.NoError(t, err)
				require.NotEmpty(t, rs)
				for _, r := range rs {
					want := 1e-5
					if strings.Contains(r.Name, "_bf16") {
						want = 2e-2
					}
					assert.True(t, r.Checked, "%s: not checked", r.Name)
					assert.Equal(t, want, r.Tol, "%s: tolerance", r.Name)
					assert.False(t, math.IsNaN(r.MaxRelErr), "%s: NaN error", r.Name)
					assert.LessOrEqual(t, r.MaxRelErr, r.Tol, "%s: max relative error", r.Name)
					assert.False(t, r.Failed(), r.Name)
					assert.Equal(t, 1, r.Iters, r.Name)
					assert.Greater(t, r.PerOp, 0.0, r.Name)
					assert.Greater(t, r.Value, 0.0, r.Name)
					assert.NotEmpty(t, r.Metric, r.Name)
					assert.NotEmpty(t, r.Peer, r.Name)
					assert.True(t, r.FLOPs > 0 || r.Bytes > 0, "%s: no work counted", r.Name)
				}
			})
		}
	}
	t.Logf("all suites in %v", time.Since(start))
}

// TestSuiteNamesAndShapes checks the registry and the presets.
func TestSuiteNamesAndShapes(t *testing.T) {
	var names []string
	for _, s := range Suites() {
		names = append(names, s.Name)
		got, ok := SuiteByName(s.Name)
		require.True(t, ok)
		assert.Equal(t, s.Name, got.Name)
		assert.NotEmpty(t, s.Doc)
	}
	assert.Equal(t, []string{"lora", "xent", "embed", "optim", "attention", "norm", "act", "rope"}, names)
	_, ok := SuiteByName("pool")
	assert.False(t, ok)
	for _, n := range ShapesNames() {
		sh, err := ShapesByName(n)
		require.NoError(t, err)
		require.NoError(t, sh.validate(), n)
		cu := sh.segments()
		assert.Equal(t, int32(0), cu[0])
		assert.Equal(t, int32(sh.Tokens), cu[len(cu)-1])
		for i := 1; i < len(cu); i++ {
			assert.LessOrEqual(t, int(cu[i]-cu[i-1]), sh.SeqLen)
		}
		for _, p := range sh.positions() {
			assert.Less(t, int(p), sh.SeqLen)
			if sh.MaxPos > 0 {
				assert.Less(t, int(p), sh.MaxPos)
			}
		}
	}
	_, err := ShapesByName("huge")
	assert.ErrorContains(t, err, `unknown shapes "huge"`)
	assert.Equal(t, "small", DefaultShapes("emu"))
	assert.Equal(t, "gpt2", DefaultShapes("cuda"))
	gpt2, _ := ShapesByName("gpt2")
	assert.Equal(t, 768, gpt2.Hidden)
	assert.Equal(t, 50257, gpt2.Vocab)
	qwen, _ := ShapesByName("qwen")
	assert.Equal(t, 896, qwen.Hidden)
	assert.Equal(t, 151936, qwen.Vocab)
	assert.Equal(t, []int{16, 256}, qwen.Ranks)
}

// TestRandomArrays checks that the pool tiling gives the values the host
// view reports, for arrays shorter and several times longer than the pool.
func TestRandomArrays(t *testing.T) {
	dev := openEmu(t)
	sh, _ := ShapesByName("tiny")
	_, err := suiteRun(dev, Options{Shapes: sh}, 1, func(r *run) {
		for _, n := range []int{1, 100, poolLen, poolLen + 1, 3*poolLen + 17} {
			for _, tk := range []struct {
				t runtime.DType
				k valueKind
			}{{runtime.F32, signed}, {runtime.BF16, positive}} {
				a, h := r.random(tk.t, tk.k, n)
				got := r.download(a)
				for i, v := range got {
					if v != h.at(i) {
						t.Fatalf("%s n=%d: element %d is %v, host view says %v", tk.t, n, i, v, h.at(i))
					}
					if tk.k == positive && !(v > 0 && v <= 1) {
						t.Fatalf("positive value %v", v)
					}
				}
				row := h.row(1, n/2, nil)
				for i, v := range row {
					require.Equal(t, h.at(n/2+i), v)
				}
			}
		}
	})
	require.NoError(t, err)
}

func TestSampleN(t *testing.T) {
	assert.Equal(t, []int{0, 1, 2}, sampleN(3, 0))
	assert.Equal(t, []int{0, 1, 2}, sampleN(3, 5))
	assert.Equal(t, []int{0, 4, 9}, sampleN(10, 3))
	s := sampleN(8192, 16)
	assert.Len(t, s, 16)
	assert.Equal(t, 0, s[0])
	assert.Equal(t, 8191, s[15])
}

func TestErrMax(t *testing.T) {
	var e errMax
	e.add(1, 1, 0)
	assert.Zero(t, e.worst)
	e.add(1.5, 1, 10)
	assert.InDelta(t, 0.05, e.worst, 1e-15)
	e.addRel(2, 1)
	assert.Equal(t, 1.0, e.worst)
	e.add(math.NaN(), 1, 1)
	assert.True(t, math.IsInf(e.worst, 1))
}

func TestWriteTableAndJSON(t *testing.T) {
	rs := []Result{
		{Name: "lora_fwd_bf16 x", Iters: 3, PerOp: 1e-3, Metric: "TFLOP/s", Value: 400, FLOPs: 4e11,
			Peer: "of cuBLAS x·Wᵀ FLOP/s", Ratio: 0.93, Checked: true, MaxRelErr: 1e-3, Tol: 2e-2},
		{Name: "norm bad", Iters: 3, PerOp: 2e-6, Metric: "GB/s", Value: 3000, Bytes: 6e6,
			Peer: "no peer (why)", Checked: true, MaxRelErr: math.Inf(1), Tol: 1e-5},
		{Name: "pool alloc+free 4 KiB", Iters: 10, PerOp: 1e-7, Metric: "ns/op", Value: 100},
	}
	var b bytes.Buffer
	require.NoError(t, WriteTable(&b, rs))
	out := b.String()
	assert.Contains(t, out, "max rel err")
	assert.Contains(t, out, "0.93x of cuBLAS x·Wᵀ FLOP/s")
	assert.Contains(t, out, "1.0e-03 (tol 2e-02)")
	assert.Contains(t, out, "no peer (why)")
	assert.Contains(t, out, "FAIL")
	assert.True(t, rs[1].Failed())
	assert.False(t, rs[0].Failed())
	assert.False(t, rs[2].Failed())

	b.Reset()
	require.NoError(t, WriteJSON(&b, Report{Device: "emu", Kind: "emu", Shapes: "small", Results: rs}))
	var back Report
	require.NoError(t, json.Unmarshal(b.Bytes(), &back))
	require.Len(t, back.Results, 3)
	assert.Equal(t, rs[0], back.Results[0])
	assert.Equal(t, math.MaxFloat64, back.Results[1].MaxRelErr)
	assert.True(t, math.IsInf(rs[1].MaxRelErr, 1), "WriteJSON must not modify its argument")
}

// ---- Go benchmarks ---------------------------------------------------------------

// The benchmarks run each suite on $PERK_DEVICE (default emu) at the shapes
// $PERK_BENCH_SHAPES (default small), with b.N timed repetitions per kernel,
// and report every result's rate, peer ratio and correctness error as
// metrics named after the result; ns/op is the sum over the suite's kernels
// of the time per repetition.

var benchDev struct {
	once sync.Once
	dev  runtime.Device
	err  error
}

func benchDevice(tb testing.TB) runtime.Device {
	tb.Helper()
	benchDev.once.Do(func() {
		kind := os.Getenv("PERK_DEVICE")
		if kind == "" {
			kind = "emu"
		}
		benchDev.dev, benchDev.err = runtime.Open(kind)
	})
	require.NoError(tb, benchDev.err)
	return benchDev.dev
}

func benchShapes(tb testing.TB) Shapes {
	name := os.Getenv("PERK_BENCH_SHAPES")
	if name == "" {
		name = "small"
	}
	sh, err := ShapesByName(name)
	require.NoError(tb, err)
	return sh
}

func BenchmarkLoRA(b *testing.B)      { benchSuite(b, "lora") }
func BenchmarkXent(b *testing.B)      { benchSuite(b, "xent") }
func BenchmarkEmbed(b *testing.B)     { benchSuite(b, "embed") }
func BenchmarkOptim(b *testing.B)     { benchSuite(b, "optim") }
func BenchmarkAttention(b *testing.B) { benchSuite(b, "attention") }
func BenchmarkNorm(b *testing.B)      { benchSuite(b, "norm") }
func BenchmarkAct(b *testing.B)       { benchSuite(b, "act") }
func BenchmarkRoPE(b *testing.B)      { benchSuite(b, "rope") }

func BenchmarkPool(b *testing.B) {
	dev := benchDevice(b)
	var rs []Result
	for _, size := range []int{4 << 10, 1 << 20, 64 << 20} {
		r, err := PoolAllocFree(dev, size, b.N)
		require.NoError(b, err)
		rs = append(rs, r)
	}
	report(b, rs)
}

func BenchmarkLaunch(b *testing.B) {
	dev := benchDevice(b)
	var rs []Result
	for _, blocks := range []int{1, 64} {
		r, err := LaunchOverhead(dev, blocks, b.N)
		require.NoError(b, err)
		rs = append(rs, r)
	}
	report(b, rs)
}

func BenchmarkGEMM(b *testing.B) {
	dev := benchDevice(b)
	m := 128
	if dev.Kind() == "cuda" {
		m = 1024
	}
	r, err := GEMM(dev, runtime.BF16, m, m, m, b.N)
	require.NoError(b, err)
	report(b, []Result{r})
}

func benchSuite(b *testing.B, name string) {
	s, ok := SuiteByName(name)
	require.True(b, ok)
	rs, err := s.Run(benchDevice(b), Options{Shapes: benchShapes(b), Iters: b.N})
	require.NoError(b, err)
	report(b, rs)
}

// report turns results into benchmark metrics.
func report(b *testing.B, rs []Result) {
	b.Helper()
	total := 0.0
	for _, r := range rs {
		total += r.PerOp
		key := metricKey(r.Name)
		if r.Metric != "" {
			b.ReportMetric(r.Value, key+":"+metricKey(r.Metric))
		}
		if r.Ratio != 0 {
			b.ReportMetric(r.Ratio, key+":x_peer")
		}
		if r.Checked {
			b.ReportMetric(r.MaxRelErr, key+":max_rel_err")
			if r.Failed() {
				b.Errorf("%s: max relative error %.3g > tolerance %.3g", r.Name, r.MaxRelErr, r.Tol)
			}
		}
	}
	b.ReportMetric(total*1e9, "ns/op")
}

// metricKey makes a metric unit of a result name (no whitespace allowed).
func metricKey(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, s)
}

func openEmu(t *testing.T) runtime.Device {
	t.Helper()
	dev, err := runtime.Open("emu")
	require.NoError(t, err)
	t.Cleanup(func() {
		kernels.Forget(dev)
		_ = dev.Close()
	})
	return dev
}
