package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Options configure one run of a kernel suite.
type Options struct {
	// Shapes are the sizes (ShapesByName).
	Shapes Shapes
	// Iters is the number of timed repetitions of each kernel (≥ 1), after
	// one untimed correctness run and one warm-up call.
	Iters int
	// Timed, when set, is called as each timed region begins, with the
	// region's name, and the function it returns as the region ends; cmd/bench
	// brackets the regions with cuProfilerStart/Stop there. On a CUDA device
	// every timed region is also an NVTX range of that name.
	Timed func(name string) (end func())
}

// Suite is one named kernel suite.
type Suite struct {
	Name string
	Doc  string
	Run  func(runtime.Device, Options) ([]Result, error)
}

// Suites returns the kernel suites in the order `--suite all` runs them.
func Suites() []Suite {
	return []Suite{
		{"lora", "fused LoRA linear forward and backward (dX, dA, dB) vs cuBLAS x·Wᵀ / dY·W", LoRA},
		{"xent", "fused LM-head cross-entropy forward and backward (dh) vs cuBLAS logits (+dh) GEMMs", Xent},
		{"embed", "embedding gather (+ learned positions) and its deterministic backward vs D2D copy bandwidth", Embed},
		{"optim", "multi-tensor AdamW step and its VJP over a LoRA table vs D2D copy bandwidth", Optim},
		{"attention", "packed causal attention forward and backward vs the naive per-head GEMM path", Attention},
		{"norm", "LayerNorm and RMSNorm forward and backward vs D2D copy bandwidth", Norm},
		{"act", "GELU (tanh) and SwiGLU forward and backward vs D2D copy bandwidth", Act},
		{"rope", "rotary embedding forward and backward vs D2D copy bandwidth", RoPE},
	}
}

// SuiteByName returns the kernel suite called name.
func SuiteByName(name string) (Suite, bool) {
	for _, s := range Suites() {
		if s.Name == name {
			return s, true
		}
	}
	return Suite{}, false
}

// TimedRegion marks a timed region for profilers: an NVTX range called name
// on a CUDA device, and hook (when not nil) called at its start, the function
// it returns at its end. Call the returned function to close the region.
func TimedRegion(dev runtime.Device, name string, hook func(string) func()) (end func()) {
	cudaDev := dev.Kind() == "cuda"
	if cudaDev {
		nvtxPush(name)
	}
	var hookEnd func()
	if hook != nil {
		hookEnd = hook(name)
	}
	return func() {
		if hookEnd != nil {
			hookEnd()
		}
		if cudaDev {
			nvtxPop()
		}
	}
}

// Tolerance is the largest error a suite accepts for results stored in t:
// 1e-5 for f32, 2e-2 for bf16 and 2e-3 for f16, as the golden tests.
func Tolerance(t runtime.DType) float64 {
	switch t {
	case runtime.BF16:
		return 2e-2
	case runtime.F16:
		return 2e-3
	}
	return 1e-5
}

// ---- the harness every suite runs in ----------------------------------------

// runErr carries an error out of a suite through panic; finish recovers it.
type runErr struct{ err error }

// run is the state of one suite run: the device, a seeded generator, the
// random pools arrays are filled from, the arrays to free and the results.
type run struct {
	dev    runtime.Device
	o      Options
	sh     Shapes
	rng    *rand.Rand
	pools  map[poolKey]*pool
	arrays []kernels.Array
	frees  []func() error
	rs     []Result
}

func newRun(dev runtime.Device, o Options, seed uint64) (*run, error) {
	if dev == nil {
		return nil, errors.New("bench: nil device")
	}
	if err := o.Shapes.validate(); err != nil {
		return nil, err
	}
	o.Iters = max(o.Iters, 1)
	return &run{dev: dev, o: o, sh: o.Shapes, rng: rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		pools: map[poolKey]*pool{}}, nil
}

// must panics with err (if not nil) for finish to return.
func (r *run) must(err error) {
	if err != nil {
		panic(runErr{err})
	}
}

// finish frees everything and turns a must panic into *errp.
func (r *run) finish(errp *error) {
	if p := recover(); p != nil {
		re, ok := p.(runErr)
		if !ok {
			panic(p)
		}
		*errp = re.err
	}
	r.release(0)
	for _, p := range r.pools {
		_ = kernels.FreeArray(p.arr)
	}
	if *errp == nil {
		*errp = r.dev.Synchronize(0)
	}
}

// mark and release scope allocations: release(m) frees what was allocated
// after mark() returned m, newest first.
func (r *run) mark() int { return len(r.frees) }

func (r *run) release(m int) {
	_ = r.dev.Synchronize(0)
	for i := len(r.frees) - 1; i >= m; i-- {
		_ = r.frees[i]()
	}
	r.frees = r.frees[:m]
}

func (r *run) onRelease(f func() error) { r.frees = append(r.frees, f) }

// alloc returns an uninitialised array.
func (r *run) alloc(t runtime.DType, shape ...int) kernels.Array {
	a, err := kernels.NewArray(r.dev, t, shape...)
	r.must(err)
	r.onRelease(func() error { return kernels.FreeArray(a) })
	return a
}

// zeros returns an array of zeros (all-zero bytes are 0 in every dtype).
func (r *run) zeros(t runtime.DType, shape ...int) kernels.Array {
	a := r.alloc(t, shape...)
	if a.Bytes() > 0 {
		r.must(r.dev.Memset(a.Ptr, 0, a.Bytes(), 0))
	}
	return a
}

// upload returns an array holding vals (rounded to t).
func (r *run) upload(t runtime.DType, shape []int, vals []float64) kernels.Array {
	a, err := kernels.Upload(r.dev, t, shape, vals)
	r.must(err)
	r.onRelease(func() error { return kernels.FreeArray(a) })
	return a
}

func (r *run) uploadI32(vals []int32) kernels.Array {
	f := make([]float64, len(vals))
	for i, v := range vals {
		f[i] = float64(v)
	}
	return r.upload(runtime.I32, []int{len(vals)}, f)
}

// ---- random arrays ------------------------------------------------------------

// Random arrays are tiled from a pool of poolLen random values uploaded once
// per dtype and kind: element i of an array made at pool offset off is
// pool[(off+i) mod poolLen], so the host knows every value without keeping a
// copy, and filling an array of any size takes O(log n) device copies. The
// pool length is prime so rows of power-of-two length do not line up with it.
const poolLen = 65521

type valueKind int

const (
	signed   valueKind = iota // uniform in [-1, 1)
	positive                  // uniform in [1/64, 1]: second moments, gammas
)

type poolKey struct {
	t    runtime.DType
	kind valueKind
}

type pool struct {
	vals []float64
	arr  kernels.Array
}

// host is the host view of a random array.
type host struct {
	vals []float64
	off  int
}

// at returns element i.
func (h host) at(i int) float64 { return h.vals[(h.off+i)%len(h.vals)] }

// row copies elements [i·n, (i+1)·n) into buf (grown as needed).
func (h host) row(i, n int, buf []float64) []float64 {
	if cap(buf) < n {
		buf = make([]float64, n)
	}
	buf = buf[:n]
	p := (h.off + i*n) % len(h.vals)
	for j := range buf {
		buf[j] = h.vals[p]
		if p++; p == len(h.vals) {
			p = 0
		}
	}
	return buf
}

func (r *run) pool(t runtime.DType, kind valueKind) *pool {
	k := poolKey{t, kind}
	if p, ok := r.pools[k]; ok {
		return p
	}
	vals := make([]float64, poolLen)
	for i := range vals {
		v := 2*r.rng.Float64() - 1
		if kind == positive {
			v = 1.0/64 + (1-1.0/64)*r.rng.Float64()
		}
		vals[i] = runtime.Round(t, v)
	}
	a, err := kernels.Upload(r.dev, t, []int{poolLen}, vals)
	r.must(err)
	p := &pool{vals: vals, arr: a}
	r.pools[k] = p
	return p
}

// random returns an array of random values of the kind and its host view.
func (r *run) random(t runtime.DType, kind valueKind, shape ...int) (kernels.Array, host) {
	p := r.pool(t, kind)
	a := r.alloc(t, shape...)
	off := r.rng.IntN(poolLen)
	n, es := a.Numel(), t.Size()
	// First min(n, poolLen) elements from the pool (wrapping once), then
	// double the filled prefix: element i stays pool[(off+i) mod poolLen].
	first := min(n, poolLen)
	head := min(first, poolLen-off)
	if head > 0 {
		r.must(r.dev.MemcpyDtoD(a.Ptr, p.arr.Ptr.Add(off*es), head*es, 0))
	}
	if first > head {
		r.must(r.dev.MemcpyDtoD(a.Ptr.Add(head*es), p.arr.Ptr, (first-head)*es, 0))
	}
	for filled := first; filled < n; {
		c := min(filled/poolLen*poolLen, n-filled)
		if c == 0 {
			c = min(poolLen, n-filled)
		}
		r.must(r.dev.MemcpyDtoD(a.Ptr.Add(filled*es), a.Ptr, c*es, 0))
		filled += c
	}
	return a, host{vals: p.vals, off: off}
}

// ---- downloads and sampling ---------------------------------------------------

// rows downloads rows idx of a, seen as [*, n].
func (r *run) rows(a kernels.Array, n int, idx []int) [][]float64 {
	out := make([][]float64, len(idx))
	es := a.DType.Size()
	buf := make([]byte, n*es)
	for k, i := range idx {
		r.must(r.dev.MemcpyDtoH(buf, a.Ptr.Add(i*n*es), 0))
		v, err := runtime.Decode(a.DType, buf)
		r.must(err)
		out[k] = v
	}
	return out
}

// download copies all of a back.
func (r *run) download(a kernels.Array) []float64 {
	v, err := kernels.Download(a)
	r.must(err)
	return v
}

// sample returns the indices in [0,n) to check: all of them when CheckRows
// is 0 or at least n, else CheckRows indices spread evenly from 0 to n−1.
func (r *run) sample(n int) []int {
	return sampleN(n, r.sh.CheckRows)
}

// sampleFew is sample for expensive references: a quarter of CheckRows
// (at least 2) indices.
func (r *run) sampleFew(n int) []int {
	if r.sh.CheckRows <= 0 {
		return sampleN(n, 0)
	}
	return sampleN(n, max(r.sh.CheckRows/4, 2))
}

func sampleN(n, k int) []int {
	if k <= 0 || k >= n {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, 0, k)
	for j := range k {
		i := int(int64(j) * int64(n-1) / int64(max(k-1, 1)))
		if len(out) == 0 || out[len(out)-1] != i {
			out = append(out, i)
		}
	}
	return out
}

// errMax accumulates the worst error of got against want, relative to scale
// (Σ|terms| of the output, or |want| for a single rounding).
type errMax struct{ worst float64 }

func (e *errMax) add(got, want, scale float64) {
	d := math.Abs(got - want)
	if d == 0 {
		return
	}
	v := d / math.Max(scale, 1e-30)
	if math.IsNaN(v) || math.IsInf(got, 0) {
		v = math.Inf(1)
	}
	e.worst = math.Max(e.worst, v)
}

// addRel compares with |want| as the scale.
func (e *errMax) addRel(got, want float64) { e.add(got, want, math.Abs(want)) }

// ---- timing and results ---------------------------------------------------------

// time runs f once as a warm-up, then Iters times inside a timed region, and
// returns seconds per call.
func (r *run) time(name string, f func() error) float64 {
	r.must(f())
	r.must(r.dev.Synchronize(0))
	end := TimedRegion(r.dev, name, r.o.Timed)
	sec, err := timeEvents(r.dev, 0, r.o.Iters, f)
	end()
	r.must(err)
	return sec
}

// flopsResult builds a FLOP-rate result: TFLOP/s on a GPU, GFLOP/s on the
// emulator.
func (r *run) flopsResult(name string, sec, flops float64, e errMax, tol float64) Result {
	unit, div := "GFLOP/s", 1e9
	if r.dev.Kind() == "cuda" {
		unit, div = "TFLOP/s", 1e12
	}
	return Result{Name: name, Iters: r.o.Iters, PerOp: sec, Metric: unit, Value: flops / sec / div, FLOPs: flops,
		Checked: true, MaxRelErr: e.worst, Tol: tol}
}

// bytesResult builds a bandwidth result in GB/s (bytes read + written).
func (r *run) bytesResult(name string, sec, bytes float64, e errMax, tol float64) Result {
	return Result{Name: name, Iters: r.o.Iters, PerOp: sec, Metric: "GB/s", Value: bytes / sec / 1e9, Bytes: bytes,
		Checked: true, MaxRelErr: e.worst, Tol: tol}
}

// withCopyPeer sets res's peer to the device's D2D copy bandwidth measured
// now over the same number of bytes moved (a copy of Bytes/2 reads and
// writes Bytes): Ratio = the kernel's GB/s / the copy's.
func (r *run) withCopyPeer(res Result) Result {
	n := max(int(res.Bytes/2), 256)
	m := r.mark()
	defer r.release(m)
	src := r.alloc(runtime.F32, (n+3)/4)
	dst := r.alloc(runtime.F32, (n+3)/4)
	r.must(r.dev.Memset(src.Ptr, 0x3c, n, 0))
	sec, err := timeDevice(r.dev, 0, r.o.Iters, func() error { return r.dev.MemcpyDtoD(dst.Ptr, src.Ptr, n, 0) })
	r.must(err)
	res.Peer = "of D2D copy GB/s"
	res.Ratio = res.Value / (2 * float64(n) / sec / 1e9)
	return res
}

// withGEMMPeer sets res's peer to cuBLAS running gemms (in dtype t) in the
// same run: Ratio = the kernel's FLOP rate / cuBLAS's, each counting its own
// FLOPs (2·M·N·K per GEMM for cuBLAS). Without cuBLAS (emulator, or a binary
// built without -tags cuda) the peer says why.
func (r *run) withGEMMPeer(res Result, t runtime.DType, what string, gemms ...gemmSpec) Result {
	r.must(r.dev.Synchronize(0))
	sec, err := cublasPeer(r.dev, t, gemms, r.o.Iters)
	var np noPeerError
	if errors.As(err, &np) {
		res.Peer = "no peer (" + np.why + ")"
		return res
	}
	r.must(err)
	flops := 0.0
	for _, g := range gemms {
		flops += g.flops()
	}
	res.Peer = "of cuBLAS " + what + " FLOP/s"
	res.Ratio = (res.FLOPs / res.PerOp) / (flops / sec)
	return res
}

// gemmSpec is a row-major GEMM C[M,N] = A[M,K]·op(B), B [N,K] when TransB
// (a Linear weight, C = A·Bᵀ) else [K,N]; A, B and C share one dtype.
type gemmSpec struct {
	M, N, K int
	TransB  bool
}

func (g gemmSpec) flops() float64 { return 2 * float64(g.M) * float64(g.N) * float64(g.K) }

// noPeerError says why a peer could not be timed.
type noPeerError struct{ why string }

func (e noPeerError) Error() string { return "no peer: " + e.why }

// add appends a result.
func (r *run) add(res Result) { r.rs = append(r.rs, res) }

// suiteRun is the body shared by every suite: open the harness, run body,
// free everything.
func suiteRun(dev runtime.Device, o Options, seed uint64, body func(r *run)) (rs []Result, err error) {
	r, err := newRun(dev, o, seed)
	if err != nil {
		return nil, err
	}
	defer r.finish(&err)
	body(r)
	return r.rs, nil
}

func fmtShape(dims ...int) string {
	s := ""
	for i, d := range dims {
		if i > 0 {
			s += "x"
		}
		s += fmt.Sprint(d)
	}
	return s
}
