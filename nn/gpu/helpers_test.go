package gpu

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

	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// The tests run on kerneltest's device: the emulator, or the GPU with
// -tags cuda and PERK_DEVICE=cuda.

var (
	sharedOnce sync.Once
	shared     *Backend
)

// testBackend returns the backend the op tests share (one pool, one set of
// loaded kernels).
func testBackend(t testing.TB) *Backend {
	t.Helper()
	dev := kt.Device(t)
	sharedOnce.Do(func() {
		b, err := New(dev)
		if err != nil {
			panic(err)
		}
		shared = b
	})
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testing.Verbose() || os.Getenv("PERK_GPU_ERRORS") != "" {
		fmt.Print(errorTable())
	}
	os.Exit(code)
}

// Largest error seen per check name, for the summary TestMain prints with -v.
var (
	errMu  sync.Mutex
	errMax = map[string][2]float64{} // name → {max error, tolerance}
)

func recordErr(name string, e, tol float64) {
	errMu.Lock()
	defer errMu.Unlock()
	v := errMax[name]
	errMax[name] = [2]float64{math.Max(v[0], e), math.Max(v[1], tol)}
}

func errorTable() string {
	errMu.Lock()
	defer errMu.Unlock()
	names := make([]string, 0, len(errMax))
	for n := range errMax {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	sb.WriteString("| check | max error | tolerance |\n|---|---|---|\n")
	for _, n := range names {
		fmt.Fprintf(&sb, "| %s | %.2e | %.0e |\n", n, errMax[n][0], errMax[n][1])
	}
	return sb.String()
}

// tol is the accepted relative error for results stored as dt.
func tol(dt runtime.DType) float64 { return kt.Tolerance(dt) }

// pair is one tensor on both backends: c on nn/cpu (F64, the reference) and
// g on the gpu backend (F32 or BF16), holding the same values (v, already
// rounded to the gpu dtype).
type pair struct {
	c, g  *nn.Tensor
	v     []float64
	shape []int
}

// env builds pairs and runs an op on both backends.
type env struct {
	t   *testing.T
	g   *Backend
	c   *cpu.Backend
	dt  runtime.DType
	rng *rand.Rand
}

func newEnv(t *testing.T, dt runtime.DType, seed uint64) *env {
	return &env{t: t, g: testBackend(t), c: cpu.New(), dt: dt, rng: rand.New(rand.NewPCG(seed, 99))}
}

// vals makes a pair holding v (rounded to the gpu dtype); the gpu tensor is
// released when the test ends.
func (e *env) vals(v []float64, shape ...int) *pair {
	e.t.Helper()
	r := make([]float64, len(v))
	for i, x := range v {
		r[i] = runtime.Round(e.dt, x)
	}
	h, err := nn.FromF64(r, shape...)
	require.NoError(e.t, err)
	c, err := e.c.FromHost(h, runtime.F64)
	require.NoError(e.t, err)
	g, err := e.g.FromHost(h, e.dt)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { _ = e.g.Release(g) })
	return &pair{c: c, g: g, v: r, shape: append([]int(nil), shape...)}
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// rand is a pair of uniform values in [-scale, scale).
func (e *env) rand(scale float64, shape ...int) *pair {
	v := make([]float64, numel(shape))
	for i := range v {
		v[i] = (2*e.rng.Float64() - 1) * scale
	}
	return e.vals(v, shape...)
}

// out is an output pair: zeros on the cpu, NaN on the gpu, so an element the
// gpu backend fails to write fails the comparison.
func (e *env) out(shape ...int) *pair {
	e.t.Helper()
	p := e.vals(make([]float64, numel(shape)), shape...)
	nan := make([]float64, numel(shape))
	for i := range nan {
		nan[i] = math.NaN()
	}
	h, err := nn.FromF64(nan, shape...)
	require.NoError(e.t, err)
	g, err := e.g.FromHost(h, e.dt)
	require.NoError(e.t, err)
	require.NoError(e.t, e.g.Copy(p.g, g))
	require.NoError(e.t, e.g.Release(g))
	return p
}

// both runs f on the cpu backend (with the pairs' cpu tensors) and on the
// gpu backend (with their gpu tensors).
func (e *env) both(f func(b nn.Backend, x func(*pair) *nn.Tensor) error) {
	e.t.Helper()
	cx := func(p *pair) *nn.Tensor {
		if p == nil {
			return nil
		}
		return p.c
	}
	gx := func(p *pair) *nn.Tensor {
		if p == nil {
			return nil
		}
		return p.g
	}
	require.NoError(e.t, f(e.c, cx), "cpu")
	require.NoError(e.t, f(e.g, gx), "gpu")
}

// host returns a tensor's values as float64.
func host(t testing.TB, b nn.Backend, x *nn.Tensor) []float64 {
	t.Helper()
	h, err := b.ToHost(x)
	require.NoError(t, err)
	if v, err := h.F64(); err == nil {
		return v
	}
	v, err := h.F32()
	require.NoError(t, err)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// got and want are the gpu and cpu values of a pair.
func (e *env) got(p *pair) []float64  { return host(e.t, e.g, p.g) }
func (e *env) want(p *pair) []float64 { return host(e.t, e.c, p.c) }

// normErr is max_i |got_i − want_i| / max_i |want_i| (normwise relative
// error; +Inf for a NaN where want is finite).
func normErr(got, want []float64) float64 {
	scale, worst := 0.0, 0.0
	for _, w := range want {
		scale = math.Max(scale, math.Abs(w))
	}
	for i := range want {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(d) || math.IsInf(d, 0) {
			return math.Inf(1)
		}
		worst = math.Max(worst, d)
	}
	if worst == 0 {
		return 0
	}
	return worst / math.Max(scale, 1e-30)
}

// scaledErr is max_i |got_i − want_i| / scale_i.
func scaledErr(got, want, scale []float64) float64 {
	worst := 0.0
	for i := range want {
		d := math.Abs(got[i]-want[i]) / math.Max(scale[i], 1e-30)
		if math.IsNaN(d) || math.IsInf(d, 0) {
			return math.Inf(1)
		}
		worst = math.Max(worst, d)
	}
	return worst
}

// check compares pair p (after an op) normwise at the dtype's tolerance.
func (e *env) check(name string, p *pair) {
	e.t.Helper()
	e.checkVals(name, e.got(p), e.want(p))
}

func (e *env) checkVals(name string, got, want []float64) {
	e.t.Helper()
	require.Equal(e.t, len(want), len(got), name)
	err := normErr(got, want)
	name = fmt.Sprintf("%s %v", name, e.dt)

	recordErr(name, err, tol(e.dt))
	require.LessOrEqual(e.t, err, tol(e.dt), "%s: relative error", name)
}

// checkElem compares pair p element by element (kerneltest.MaxRelErr:
// relative to each element, floored at 1e-3 of the largest), for ops
// without cancellation.
func (e *env) checkElem(name string, p *pair) {
	e.t.Helper()
	err := kt.MaxRelErr(e.got(p), e.want(p))
	name = fmt.Sprintf("%s %v", name, e.dt)
	recordErr(name, err, tol(e.dt))
	require.LessOrEqual(e.t, err, tol(e.dt), "%s: elementwise relative error", name)
}

// checkScaled compares pair p element by element against scale.
func (e *env) checkScaled(name string, p *pair, scale []float64) {
	e.t.Helper()
	err := scaledErr(e.got(p), e.want(p), scale)
	name = fmt.Sprintf("%s %v", name, e.dt)
	recordErr(name, err, tol(e.dt))
	require.LessOrEqual(e.t, err, tol(e.dt), "%s: scaled error", name)
}

// checkScalar compares two results of a scalar op with error scale s.
func (e *env) checkScalar(name string, got, want, s float64) {
	e.t.Helper()
	err := math.Abs(got-want) / math.Max(s, 1e-30)
	if math.IsNaN(err) {
		err = math.Inf(1)
	}
	name = fmt.Sprintf("%s %v", name, e.dt)
	recordErr(name, err, tol(e.dt))
	require.LessOrEqual(e.t, err, tol(e.dt), "%s: got %v want %v", name, got, want)
}

// abs returns |v| elementwise.
func abs(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Abs(x)
	}
	return out
}

var dtypes = []runtime.DType{runtime.F32, runtime.BF16}
