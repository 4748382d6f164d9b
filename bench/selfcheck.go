package bench

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// SelfCheck exercises the runtime and every kernel family on dev against
// float64 references and prints one line per check. It returns an error if
// any check fails (`make selfcheck`, `bench selfcheck`).
func SelfCheck(dev runtime.Device, w io.Writer) error {
	fmt.Fprintf(w, "self-check on %s\n", dev.Name())
	failed := 0
	report := func(what string, err error) {
		if err != nil {
			failed++
			fmt.Fprintf(w, "  FAIL  %-44s %v\n", what, err)
			return
		}
		fmt.Fprintf(w, "  ok    %s\n", what)
	}
	report("memory pool: reuse, split/coalesce, stats", checkPool(dev))
	rng := rand.New(rand.NewPCG(42, 7))
	for _, c := range []struct {
		name string
		run  func(runtime.Device, *rand.Rand) (float64, error)
		tol  float64
	}{
		{"fill f32/bf16/f16", checkFill, 0},
		{"cast f32→bf16→f32 (round-to-nearest-even)", checkCast, 0},
		{"axpy f32", checkAxpy, 1e-6},
		{"reduce sum/dot, deterministic", checkReduce, 1e-5},
		{"gemm bf16 tensor cores 70x45x83 (ragged)", checkGEMM, 1e-5},
	} {
		e, err := c.run(dev, rng)
		if err == nil && !(e <= c.tol) {
			err = fmt.Errorf("max relative error %.3g > %.3g", e, c.tol)
		}
		report(fmt.Sprintf("%-44s max rel err %.2e", c.name, e), err)
	}
	if failed > 0 {
		return fmt.Errorf("self-check: %d check(s) failed", failed)
	}
	fmt.Fprintln(w, "self-check passed")
	return nil
}

func checkPool(dev runtime.Device) error {
	p := runtime.NewPool(dev, runtime.PoolOptions{})
	defer p.Close()
	var bufs []runtime.Buffer
	for _, n := range []int{1000, 4096, 300000, 1 << 20} {
		b, err := p.Alloc(n, 0)
		if err != nil {
			return err
		}
		bufs = append(bufs, b)
	}
	for _, b := range bufs {
		if err := p.Free(b); err != nil {
			return err
		}
	}
	again, err := p.Alloc(1<<20, 0)
	if err != nil {
		return err
	}
	if err := p.Free(again); err != nil {
		return err
	}
	if err := p.Free(again); err == nil {
		return fmt.Errorf("double free was not reported")
	}
	st := p.Stats()
	if st.NumCacheHits < 1 || st.InUse != 0 {
		return fmt.Errorf("unexpected pool stats %v", st)
	}
	return nil
}

func relErr(got, want []float64) float64 {
	worst := 0.0
	for i := range want {
		d := math.Abs(got[i]-want[i]) / math.Max(math.Abs(want[i]), 1e-6)
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		worst = math.Max(worst, d)
	}
	return worst
}

func randVals(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64()*2 - 1
	}
	return v
}

// arrays holds one check's device arrays: it keeps the first allocation
// error (later calls do nothing) and frees every array at once.
type arrays struct {
	dev  runtime.Device
	held []kernels.Array
	err  error
}

func (as *arrays) keep(a kernels.Array, err error) kernels.Array {
	if err != nil {
		as.err = err
		return a
	}
	as.held = append(as.held, a)
	return a
}

// upload copies vals to a new array of type t and shape.
func (as *arrays) upload(t runtime.DType, shape []int, vals []float64) kernels.Array {
	if as.err != nil {
		return kernels.Array{}
	}
	return as.keep(kernels.Upload(as.dev, t, shape, vals))
}

// alloc makes an uninitialised array of type t and shape.
func (as *arrays) alloc(t runtime.DType, shape ...int) kernels.Array {
	if as.err != nil {
		return kernels.Array{}
	}
	return as.keep(kernels.NewArray(as.dev, t, shape...))
}

func (as *arrays) free() {
	for _, a := range as.held {
		_ = kernels.FreeArray(a)
	}
}

func checkFill(dev runtime.Device, _ *rand.Rand) (float64, error) {
	as := &arrays{dev: dev}
	defer as.free()
	worst := 0.0
	for _, t := range []runtime.DType{runtime.F32, runtime.BF16, runtime.F16} {
		a := as.alloc(t, 1001)
		if as.err != nil {
			return 0, as.err
		}
		if err := kernels.Fill(0, a, 0.1); err != nil {
			return 0, err
		}
		got, err := kernels.Download(a)
		if err != nil {
			return 0, err
		}
		want := make([]float64, len(got))
		for i := range want {
			want[i] = runtime.Round(t, 0.1)
		}
		worst = math.Max(worst, relErr(got, want))
	}
	return worst, nil
}

func checkCast(dev runtime.Device, rng *rand.Rand) (float64, error) {
	x := randVals(rng, 777)
	as := &arrays{dev: dev}
	defer as.free()
	src := as.upload(runtime.F32, []int{len(x)}, x)
	mid := as.alloc(runtime.BF16, len(x))
	back := as.alloc(runtime.F32, len(x))
	if as.err != nil {
		return 0, as.err
	}
	if err := kernels.Cast(0, mid, src); err != nil {
		return 0, err
	}
	if err := kernels.Cast(0, back, mid); err != nil {
		return 0, err
	}
	got, err := kernels.Download(back)
	if err != nil {
		return 0, err
	}
	want := make([]float64, len(x))
	for i, v := range x {
		want[i] = runtime.Round(runtime.BF16, float64(float32(v)))
	}
	return relErr(got, want), nil
}

func checkAxpy(dev runtime.Device, rng *rand.Rand) (float64, error) {
	x, y := randVals(rng, 5000), randVals(rng, 5000)
	as := &arrays{dev: dev}
	defer as.free()
	xa := as.upload(runtime.F32, []int{len(x)}, x)
	ya := as.upload(runtime.F32, []int{len(y)}, y)
	if as.err != nil {
		return 0, as.err
	}
	if err := kernels.Axpy(0, 0.75, xa, ya); err != nil {
		return 0, err
	}
	got, err := kernels.Download(ya)
	if err != nil {
		return 0, err
	}
	want := make([]float64, len(x))
	for i := range x {
		want[i] = 0.75*float64(float32(x[i])) + float64(float32(y[i]))
	}
	return relErr(got, want), nil
}

func checkReduce(dev runtime.Device, rng *rand.Rand) (float64, error) {
	x, y := randVals(rng, 20011), randVals(rng, 20011)
	as := &arrays{dev: dev}
	defer as.free()
	xa := as.upload(runtime.F32, []int{len(x)}, x)
	ya := as.upload(runtime.F32, []int{len(y)}, y)
	out := as.alloc(runtime.F32, 1)
	scratch := as.alloc(runtime.F32, kernels.ReduceGrid(len(x)))
	if as.err != nil {
		return 0, as.err
	}
	worst := 0.0
	var first float64
	for i, op := range []kernels.ReduceOp{kernels.Sum, kernels.Dot, kernels.Sum} {
		var yarg kernels.Array
		want, scale := 0.0, 0.0
		for j := range x {
			xv, yv := float64(float32(x[j])), float64(float32(y[j]))
			if op == kernels.Dot {
				want += xv * yv
				scale += math.Abs(xv * yv)
			} else {
				want += xv
				scale += math.Abs(xv)
			}
		}
		if op == kernels.Dot {
			yarg = ya
		}
		if err := kernels.Reduce(0, op, out, xa, yarg, scratch); err != nil {
			return 0, err
		}
		got, err := kernels.Download(out)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			first = got[0]
		}
		if i == 2 && got[0] != first {
			return 0, fmt.Errorf("two sums of the same data differ: %v vs %v", first, got[0])
		}
		worst = math.Max(worst, math.Abs(got[0]-want)/scale)
	}
	return worst, nil
}

func checkGEMM(dev runtime.Device, rng *rand.Rand) (float64, error) {
	m, n, k := 70, 45, 83
	av, bv := randVals(rng, m*k), randVals(rng, n*k)
	for i := range av {
		av[i] = runtime.Round(runtime.BF16, av[i])
	}
	for i := range bv {
		bv[i] = runtime.Round(runtime.BF16, bv[i])
	}
	as := &arrays{dev: dev}
	defer as.free()
	a := as.upload(runtime.BF16, []int{m, k}, av)
	b := as.upload(runtime.BF16, []int{n, k}, bv)
	c := as.alloc(runtime.F32, m, n)
	if as.err != nil {
		return 0, as.err
	}
	if err := kernels.GEMM(0, c, a, b, true, 1, 0); err != nil {
		return 0, err
	}
	got, err := kernels.Download(c)
	if err != nil {
		return 0, err
	}
	worst := 0.0
	for i := range m {
		for j := range n {
			s, sa := 0.0, 0.0
			for p := range k {
				s += av[i*k+p] * bv[j*k+p]
				sa += math.Abs(av[i*k+p] * bv[j*k+p])
			}
			worst = math.Max(worst, math.Abs(got[i*n+j]-s)/sa)
		}
	}
	return worst, nil
}
