package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// loraCase is one LoRA linear configuration. r = 0 is a plain linear layer.
type loraCase struct {
	n, in, out, r int
	winout, bias  bool
	p             float64
	dt            runtime.DType
	gradDT        runtime.DType // dtype of dA, dB, dW, dBias
}

func (c loraCase) String() string {
	return fmt.Sprintf("%s/grads=%s/N%d_in%d_out%d_r%d/winout=%v/bias=%v/p=%v", c.dt, c.gradDT, c.n, c.in, c.out, c.r, c.winout, c.bias, c.p)
}

func (c loraCase) wShape() []int {
	if c.winout {
		return []int{c.in, c.out}
	}
	return []int{c.out, c.in}
}

// loraData holds a case's host values, each already rounded to its dtype.
type loraData struct {
	x, w, bias, a, b, dy  []float64
	dA0, dB0, dW0, dBias0 []float64
	scale                 float64
	drop                  nn.Dropout
	// results (reference or device)
	y, xa, dx, dA, dB, dW, dBias []float64
}

func newLoRAData(rng *rand.Rand, c loraCase) *loraData {
	d := &loraData{
		x:     kt.Rand(rng, c.dt, c.n*c.in, 1),
		w:     kt.Rand(rng, c.dt, c.in*c.out, 0.5),
		dy:    kt.Rand(rng, c.dt, c.n*c.out, 1),
		dW0:   kt.Rand(rng, c.gradDT, c.in*c.out, 1),
		scale: 1.75,
		drop:  nn.Dropout{P: c.p, Seed: rng.Uint64(), Step: rng.Uint32(), TensorID: rng.Uint32()},
	}
	if c.bias {
		d.bias = kt.Rand(rng, c.dt, c.out, 1)
		d.dBias0 = kt.Rand(rng, c.gradDT, c.out, 1)
	}
	if c.r > 0 {
		d.a = kt.Rand(rng, c.dt, c.r*c.in, 0.5)
		d.b = kt.Rand(rng, c.dt, c.out*c.r, 0.5)
		d.dA0 = kt.Rand(rng, c.gradDT, c.r*c.in, 1)
		d.dB0 = kt.Rand(rng, c.gradDT, c.out*c.r, 1)
	}
	return d
}

func absAll(v []float64) []float64 {
	if v == nil {
		return nil
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Abs(x)
	}
	return out
}

// abs returns the case with every value replaced by its magnitude: run
// through the reference it gives Σ|terms| of every output, the scale the
// rounding error of any summation order is measured against.
func (d *loraData) abs() *loraData {
	return &loraData{x: absAll(d.x), w: absAll(d.w), bias: absAll(d.bias), a: absAll(d.a), b: absAll(d.b),
		dy: absAll(d.dy), dA0: absAll(d.dA0), dB0: absAll(d.dB0), dW0: absAll(d.dW0), dBias0: absAll(d.dBias0),
		scale: math.Abs(d.scale), drop: d.drop}
}

func f64Tensor(t *testing.T, vals []float64, shape ...int) *nn.Tensor {
	if vals == nil {
		return nil
	}
	x, err := nn.FromF64(append([]float64(nil), vals...), shape...)
	require.NoError(t, err)
	return x
}

func f64Values(t *testing.T, x *nn.Tensor) []float64 {
	if x == nil {
		return nil
	}
	v, err := x.F64()
	require.NoError(t, err)
	return v
}

// reference runs nn/cpu's LoRALinearForward and LoRALinearBackward in float64.
func (d *loraData) reference(t *testing.T, c loraCase) *loraData {
	l := nn.LoRALinear{W: f64Tensor(t, d.w, c.wShape()...), WInOut: c.winout, Bias: f64Tensor(t, d.bias, c.out),
		Scale: d.scale, Dropout: d.drop}
	var xa *nn.Tensor
	if c.r > 0 {
		l.A, l.B = f64Tensor(t, d.a, c.r, c.in), f64Tensor(t, d.b, c.out, c.r)
		xa = f64Tensor(t, make([]float64, c.n*c.r), c.n, c.r)
	}
	x := f64Tensor(t, d.x, c.n, c.in)
	y := f64Tensor(t, make([]float64, c.n*c.out), c.n, c.out)
	be := cpu.New()
	require.NoError(t, be.LoRALinearForward(l, x, y, xa))
	g := nn.LoRAGrads{DX: f64Tensor(t, make([]float64, c.n*c.in), c.n, c.in), DW: f64Tensor(t, d.dW0, c.wShape()...),
		DBias: f64Tensor(t, d.dBias0, c.out)}
	if c.r > 0 {
		g.DA, g.DB = f64Tensor(t, d.dA0, c.r, c.in), f64Tensor(t, d.dB0, c.out, c.r)
	}
	require.NoError(t, be.LoRALinearBackward(l, x, xa, f64Tensor(t, d.dy, c.n, c.out), g))
	return &loraData{y: f64Values(t, y), xa: f64Values(t, xa), dx: f64Values(t, g.DX), dA: f64Values(t, g.DA),
		dB: f64Values(t, g.DB), dW: f64Values(t, g.DW), dBias: f64Values(t, g.DBias)}
}

func kDropout(d nn.Dropout) kernels.Dropout {
	return kernels.Dropout{P: d.P, Seed: d.Seed, Step: d.Step, TensorID: d.TensorID}
}

// loraDevice is a case's arrays on the test device.
type loraDevice struct {
	l                kernels.LoRALinear
	x, y, xa, dy     kernels.Array
	g                kernels.LoRAGrads
	upload           func(t runtime.DType, shape []int, v []float64) kernels.Array
	poisoned         func(t runtime.DType, shape []int) kernels.Array
	workspaceFor     func(xa kernels.Array, g kernels.LoRAGrads) kernels.Array
	downloadOptional func(a kernels.Array) []float64
}

func uploadLoRA(t *testing.T, c loraCase, d *loraData) *loraDevice {
	dev := kt.Device(t)
	up := func(dt runtime.DType, shape []int, v []float64) kernels.Array {
		if v == nil {
			return kernels.Array{}
		}
		return kt.Upload(t, dev, dt, shape, v)
	}
	ld := &loraDevice{upload: up}
	ld.poisoned = func(dt runtime.DType, shape []int) kernels.Array { return kt.Poisoned(t, dev, dt, shape) }
	ld.workspaceFor = func(xa kernels.Array, g kernels.LoRAGrads) kernels.Array {
		n, err := kernels.LoRALinearBackwardWorkspace(ld.l, ld.x, xa, g)
		require.NoError(t, err)
		if n == 0 {
			return kernels.Array{}
		}
		return kt.Poisoned(t, dev, runtime.F32, []int{(n + 3) / 4})
	}
	ld.downloadOptional = func(a kernels.Array) []float64 {
		if a.Dev == nil {
			return nil
		}
		return kt.Download(t, a)
	}
	ld.l = kernels.LoRALinear{W: up(c.dt, c.wShape(), d.w), WInOut: c.winout, Bias: up(c.dt, []int{c.out}, d.bias),
		Scale: d.scale, Dropout: kDropout(d.drop)}
	ld.x = up(c.dt, []int{c.n, c.in}, d.x)
	ld.y = ld.poisoned(c.dt, []int{c.n, c.out})
	ld.dy = up(c.dt, []int{c.n, c.out}, d.dy)
	ld.g = kernels.LoRAGrads{DX: ld.poisoned(c.dt, []int{c.n, c.in}), DW: up(c.gradDT, c.wShape(), d.dW0),
		DBias: up(c.gradDT, []int{c.out}, d.dBias0)}
	if c.r > 0 {
		ld.l.A, ld.l.B = up(c.dt, []int{c.r, c.in}, d.a), up(c.dt, []int{c.out, c.r}, d.b)
		ld.xa = ld.poisoned(c.dt, []int{c.n, c.r})
		ld.g.DA, ld.g.DB = up(c.gradDT, []int{c.r, c.in}, d.dA0), up(c.gradDT, []int{c.out, c.r}, d.dB0)
	}
	return ld
}

func (ld *loraDevice) forward() error {
	return kernels.LoRALinearForward(0, ld.l, ld.x, ld.y, ld.xa)
}

func (ld *loraDevice) backward(xa kernels.Array, g kernels.LoRAGrads) error {
	return kernels.LoRALinearBackward(0, ld.l, ld.x, xa, ld.dy, g, ld.workspaceFor(xa, g))
}

func (ld *loraDevice) results() *loraData {
	return &loraData{y: ld.downloadOptional(ld.y), xa: ld.downloadOptional(ld.xa), dx: ld.downloadOptional(ld.g.DX),
		dA: ld.downloadOptional(ld.g.DA), dB: ld.downloadOptional(ld.g.DB), dW: ld.downloadOptional(ld.g.DW),
		dBias: ld.downloadOptional(ld.g.DBias)}
}

func wName(winout bool) string {
	if winout {
		return "nn"
	}
	return "nt"
}

// loraKernels names the kernels behind each output, for the report.
type loraKernels struct{ xa, y, dx, tn, colsum string }

func kernelsFor(c loraCase) loraKernels {
	t := kname("", c.dt)[1:]
	dxW := "nn" // dy·W with W [out,in] reads W as [K,N]
	if c.winout {
		dxW = "nt"
	}
	return loraKernels{
		xa:     "lora_mm_" + t + "_nt_nt",
		y:      "lora_mm_" + t + "_" + wName(c.winout) + "_nt",
		dx:     "lora_mm_" + t + "_" + dxW + "_nn",
		tn:     "lora_tn_" + t,
		colsum: "lora_colsum_" + t,
	}
}

// checkLoRAResults compares every output the device computed with the
// reference, each against the Σ|terms| scale, and records the kernels
// involved (lora_reduce too when a reduction was split into token chunks).
func checkLoRAResults(t *testing.T, c loraCase, got, want, scale *loraData) {
	t.Helper()
	tol := kt.Tolerance(c.dt)
	k := kernelsFor(c)
	check := func(kernel, what string, g, w, s []float64) {
		t.Helper()
		if g == nil {
			return
		}
		kt.CheckScaled(t, kernel, tol, g, w, s, c.String(), " ", what)
	}
	check(k.y, "y", got.y, want.y, scale.y)
	check(k.xa, "xa", got.xa, want.xa, scale.xa)
	check(k.dx, "dx", got.dx, want.dx, scale.dx)
	check(k.tn, "dW", got.dW, want.dW, scale.dW)
	check(k.tn, "dA", got.dA, want.dA, scale.dA)
	check(k.tn, "dB", got.dB, want.dB, scale.dB)
	check(k.colsum, "dBias", got.dBias, want.dBias, scale.dBias)
	if tn, _ := kernels.LoRAReductionChunks(c.out, c.in, c.n); tn > 1 && got.dW != nil {
		kt.CheckScaled(t, "lora_reduce", tol, got.dW, want.dW, scale.dW, c.String(), " dW")
	}
	if _, cs := kernels.LoRAReductionChunks(1, c.out, c.n); cs > 1 && got.dBias != nil {
		kt.CheckScaled(t, "lora_reduce", tol, got.dBias, want.dBias, scale.dBias, c.String(), " dBias")
	}
}

// runLoRACase runs forward and backward on the device and checks every
// output against nn/cpu in float64 on the same rounded inputs.
func runLoRACase(t *testing.T, rng *rand.Rand, c loraCase) {
	d := newLoRAData(rng, c)
	want := d.reference(t, c)
	scale := d.abs().reference(t, c)
	ld := uploadLoRA(t, c, d)
	require.NoError(t, ld.forward())
	require.NoError(t, ld.backward(ld.xa, ld.g))
	checkLoRAResults(t, c, ld.results(), want, scale)
}

// loraGrid is the brief's shape grid: tokens × in × out × rank.
var (
	loraNs    = []int{1, 7, 37, 130}
	loraDims  = []int{8, 24, 33, 96}
	loraRanks = []int{1, 4, 16}
)

// TestGoldenLoRA runs every combination of dtype, W layout, bias and dropout
// over a rotating selection of the shape grid: every N, and for each N three
// (in, out, r) triples, shifted per combination so that the combinations
// together cover every triple of the grid.
func TestGoldenLoRA(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	combo := 0
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, winout := range []bool{false, true} {
			for _, bias := range []bool{false, true} {
				for _, p := range []float64{0, 0.1} {
					for ni, n := range loraNs {
						for j := range 3 {
							idx := (combo*12 + ni*3 + j) * 7 % (len(loraDims) * len(loraDims) * len(loraRanks))
							c := loraCase{n: n, in: loraDims[idx%4], out: loraDims[idx/4%4], r: loraRanks[idx/16],
								winout: winout, bias: bias, p: p, dt: dt, gradDT: dt}
							if dt == runtime.BF16 && j == 2 {
								c.gradDT = runtime.F32 // f32 gradient accumulators with bf16 storage
							}
							t.Run(c.String(), func(t *testing.T) { runLoRACase(t, rng, c) })
						}
					}
					combo++
				}
			}
		}
	}
}

// TestGoldenLoRALarge covers what the grid does not reach: the largest rank,
// ranks spanning several k slices, several output tiles in every dimension,
// token chunking of every weight gradient, and unaligned leading dimensions.
func TestGoldenLoRALarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	shapes := []struct{ n, in, out, r int }{
		{300, 96, 72, 16},
		{70, 40, 130, 256},
		{129, 200, 65, 40},
		{257, 17, 9, 3},
		{65, 64, 64, 64},
	}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for i, s := range shapes {
			c := loraCase{n: s.n, in: s.in, out: s.out, r: s.r, winout: i%2 == 1, bias: i%3 != 2, p: []float64{0, 0.1, 0.37}[i%3],
				dt: dt, gradDT: dt}
			t.Run(c.String(), func(t *testing.T) { runLoRACase(t, rng, c) })
		}
	}
}

// TestGoldenLoRAPlainLinear: without an adapter the layer is y = x·Wᵀ + b.
func TestGoldenLoRAPlainLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, winout := range []bool{false, true} {
			c := loraCase{n: 37, in: 33, out: 70, winout: winout, bias: true, dt: dt, gradDT: dt}
			t.Run(c.String(), func(t *testing.T) { runLoRACase(t, rng, c) })
		}
	}
}

// TestGoldenLoRAPartialGrads asks for subsets of the gradients, without the
// saved xa (backward recomputes it), and checks that the others stay untouched.
func TestGoldenLoRAPartialGrads(t *testing.T) {
	rng := rand.New(rand.NewPCG(47, 48))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		c := loraCase{n: 37, in: 24, out: 33, r: 4, bias: true, p: 0.1, dt: dt, gradDT: dt}
		d := newLoRAData(rng, c)
		want := d.reference(t, c)
		scale := d.abs().reference(t, c)
		k := kernelsFor(c)
		tol := kt.Tolerance(dt)
		for _, sel := range []string{"dx", "dA", "dB", "dB+dW"} {
			t.Run(c.String()+"/"+sel, func(t *testing.T) {
				ld := uploadLoRA(t, c, d)
				g := kernels.LoRAGrads{}
				switch sel {
				case "dx":
					g.DX = ld.g.DX
				case "dA":
					g.DA = ld.g.DA
				case "dB":
					g.DB = ld.g.DB
				case "dB+dW":
					g.DB, g.DW = ld.g.DB, ld.g.DW
				}
				require.NoError(t, ld.backward(kernels.Array{}, g))
				got := ld.results()
				check := func(kernel, name string, present bool, g, w, s, initial []float64) {
					if present {
						kt.CheckScaled(t, kernel, tol, g, w, s, c.String(), " ", name)
					} else if initial != nil {
						require.Equal(t, initial, g, "%s must be untouched", name)
					}
				}
				check(k.dx, "dx", g.DX.Dev != nil, got.dx, want.dx, scale.dx, nil)
				check(k.tn, "dA", g.DA.Dev != nil, got.dA, want.dA, scale.dA, d.dA0)
				check(k.tn, "dB", g.DB.Dev != nil, got.dB, want.dB, scale.dB, d.dB0)
				check(k.tn, "dW", g.DW.Dev != nil, got.dW, want.dW, scale.dW, d.dW0)
				check(k.colsum, "dBias", false, got.dBias, want.dBias, scale.dBias, d.dBias0)
				if g.DX.Dev == nil {
					for _, v := range got.dx {
						require.True(t, math.IsNaN(v), "dx must be untouched")
					}
				}
			})
		}
	}
}

// TestLoRADeterminism: forward and backward twice on the same inputs give
// identical bits, with token-chunked reductions and dropout.
func TestLoRADeterminism(t *testing.T) {
	rng := rand.New(rand.NewPCG(49, 50))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		c := loraCase{n: 300, in: 96, out: 72, r: 16, bias: true, p: 0.1, dt: dt, gradDT: dt}
		tn, cs := kernels.LoRAReductionChunks(c.r, c.in, c.n)
		require.Greater(t, tn, 1, "the dA reduction must be split into token chunks")
		require.Greater(t, cs, 1, "the dBias reduction must be split into token chunks")
		d := newLoRAData(rng, c)
		var runs []*loraData
		for range 2 {
			ld := uploadLoRA(t, c, d)
			require.NoError(t, ld.forward())
			require.NoError(t, ld.backward(ld.xa, ld.g))
			runs = append(runs, ld.results())
		}
		for _, f := range []func(*loraData) []float64{
			func(r *loraData) []float64 { return r.y }, func(r *loraData) []float64 { return r.xa },
			func(r *loraData) []float64 { return r.dx }, func(r *loraData) []float64 { return r.dA },
			func(r *loraData) []float64 { return r.dB }, func(r *loraData) []float64 { return r.dW },
			func(r *loraData) []float64 { return r.dBias },
		} {
			a, b := f(runs[0]), f(runs[1])
			require.Equal(t, len(a), len(b))
			for i := range a {
				if math.Float64bits(a[i]) != math.Float64bits(b[i]) {
					t.Fatalf("%s: element %d differs between runs: %v vs %v", dt, i, a[i], b[i])
				}
			}
		}
	}
}

// dropoutWant is dropout(x) of element e as the kernels compute it: the
// nn/cpu mask (DropoutKeep) and x·float32(1/(1−p)) in f32, rounded to dt.
func dropoutWant(d nn.Dropout, dt runtime.DType, e uint64, x float64) float64 {
	if !cpu.DropoutKeep(d, e) {
		return 0
	}
	return runtime.Round(dt, float64(float32(x)*float32(1/(1-d.P))))
}

func requireBits(t *testing.T, what string, got, want []float64) {
	t.Helper()
	require.Equal(t, len(want), len(got), what)
	for i := range want {
		if math.Float64bits(got[i]) != math.Float64bits(want[i]) && !(got[i] == 0 && want[i] == 0) {
			t.Fatalf("%s: element %d is %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestLoRADropoutMaskBits checks the dropout mask bit for bit against nn/cpu
// at every place the kernels draw it: lora_dropout (including flat indices
// past 2³², which use the counter's second word), the x loads of the xa
// launch, the rank-r term of dx, and the dropout(x) loads of dA. With
// identity adapters each of those outputs is exactly dropout(x) or
// mask⊙dy·scale, so any mask difference shows as a wrong value.
func TestLoRADropoutMaskBits(t *testing.T) {
	dev := kt.Device(t)
	rng := rand.New(rand.NewPCG(51, 52))
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, p := range []float64{0.1, 0.5, 1.0 / 3, 0.9} {
			drop := nn.Dropout{P: p, Seed: rng.Uint64(), Step: rng.Uint32(), TensorID: rng.Uint32()}
			// lora_dropout, at offsets 0 and straddling 2³².
			const n = 4099
			x := kt.Rand(rng, dt, n, 2)
			xa := kt.Upload(t, dev, dt, []int{n}, x)
			for _, base := range []uint64{0, 1<<32 - 2000, 3<<32 + 17} {
				u := kt.Poisoned(t, dev, dt, []int{n})
				require.NoError(t, kernels.ApplyDropout(0, kDropout(drop), xa, u, base))
				want := make([]float64, n)
				kept := 0
				for i := range want {
					want[i] = dropoutWant(drop, dt, base+uint64(i), x[i])
					if cpu.DropoutKeep(drop, base+uint64(i)) {
						kept++
					}
				}
				requireBits(t, fmt.Sprintf("lora_dropout %s p=%v base=%d", dt, p, base), kt.Download(t, u), want)
				kt.Record("lora_dropout_"+kname("", dt)[1:], 0, 0)
				require.InDelta(t, 1-p, float64(kept)/n, 0.05, "keep rate")
			}

			// The fused sites: N = in = out = r = 37, A = B = I, W = 0, s = 1.
			const m = 37
			eye := make([]float64, m*m)
			for i := range m {
				eye[i*m+i] = 1
			}
			c := loraCase{n: m, in: m, out: m, r: m, p: p, dt: dt, gradDT: dt}
			d := &loraData{x: kt.Rand(rng, dt, m*m, 2), w: make([]float64, m*m), a: eye, b: eye,
				dy: kt.Rand(rng, dt, m*m, 2), scale: 1, drop: drop}
			ld := uploadLoRA(t, c, d)
			require.NoError(t, ld.forward())
			wantU := make([]float64, m*m)
			wantDX := make([]float64, m*m)
			for e := range wantU {
				wantU[e] = dropoutWant(drop, dt, uint64(e), d.x[e])
				wantDX[e] = dropoutWant(drop, dt, uint64(e), d.dy[e])
			}
			k := kernelsFor(c)
			requireBits(t, fmt.Sprintf("xa = dropout(x)·Iᵀ (%s, p=%v)", dt, p), kt.Download(t, ld.xa), wantU)
			// dx = dy·0 + mask⊙((dy·I)·I)·scale.
			dx := kt.Poisoned(t, dev, dt, []int{m, m})
			require.NoError(t, ld.backward(ld.xa, kernels.LoRAGrads{DX: dx}))
			requireBits(t, fmt.Sprintf("dx mask (%s, p=%v)", dt, p), kt.Download(t, dx), wantDX)
			// dA = 0 + (I·I)ᵀ·dropout(x) with dy = I.
			ld.dy = ld.upload(dt, []int{m, m}, eye)
			dA := ld.upload(dt, []int{m, m}, make([]float64, m*m))
			require.NoError(t, ld.backward(ld.xa, kernels.LoRAGrads{DA: dA}))
			requireBits(t, fmt.Sprintf("dA mask (%s, p=%v)", dt, p), kt.Download(t, dA), wantU)
			for _, name := range []string{k.xa, k.dx, k.tn} {
				kt.Record(name, 0, 0)
			}
		}
	}
}

func TestLoRABadInput(t *testing.T) {
	dev := kt.Device(t)
	f32, bf16 := runtime.F32, runtime.BF16
	al := func(dt runtime.DType, shape ...int) kernels.Array { return kt.Alloc(t, dev, dt, shape) }
	const n, in, out, r = 5, 8, 6, 4
	good := func() (kernels.LoRALinear, kernels.Array, kernels.Array, kernels.Array) {
		l := kernels.LoRALinear{W: al(f32, out, in), Bias: al(f32, out), A: al(f32, r, in), B: al(f32, out, r), Scale: 2,
			Dropout: kernels.Dropout{P: 0.1}}
		return l, al(f32, n, in), al(f32, n, out), al(f32, n, r)
	}
	fwd := func(mod func(l *kernels.LoRALinear, x, y, xa *kernels.Array)) error {
		l, x, y, xa := good()
		mod(&l, &x, &y, &xa)
		return kernels.LoRALinearForward(0, l, x, y, xa)
	}
	l, x, y, xa := good()
	require.NoError(t, kernels.LoRALinearForward(0, l, x, y, xa))

	for _, tc := range []struct {
		name string
		mod  func(l *kernels.LoRALinear, x, y, xa *kernels.Array)
		msg  string
	}{
		{"rank 0", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) {
			l.A, l.B, *xa = al(f32, 0, in), al(f32, out, 0), al(f32, n, 0)
		}, "lora forward: adapter rank 0 outside [1, 256]"},
		{"rank 257", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) {
			l.A, l.B, *xa = al(f32, 257, in), al(f32, out, 257), al(f32, n, 257)
		}, "lora forward: adapter rank 257 outside [1, 256]"},
		{"W in", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.W = al(f32, out, in+1) },
			"lora forward: argument W has shape [6 9], want [6 8]"},
		{"W layout", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.WInOut = true },
			"lora forward: argument W has shape [6 8], want [8 8]"},
		{"A in", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.A = al(f32, r, in+1) },
			"lora forward: argument A has shape [4 9], want [4 8]"},
		{"B", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.B = al(f32, r, out) },
			"lora forward: argument B has shape [4 6], want [6 4]"},
		{"B without A", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.A = kernels.Array{} },
			"lora forward: B is set but A is absent"},
		{"A without B", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.B = kernels.Array{} },
			"lora forward: A is set but B is absent"},
		{"bias", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.Bias = al(f32, out+1) },
			"lora forward: argument bias has shape [7], want [6]"},
		{"y", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *y = al(f32, n, out+1) },
			"lora forward: argument y has shape [5 7], want [5 6]"},
		{"x rank", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *x = al(f32, n*in) },
			"lora forward: argument x has shape [40], want a matrix [N,in]"},
		{"xa missing", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *xa = kernels.Array{} },
			"lora forward: argument xa [5,4] is required"},
		{"xa shape", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *xa = al(f32, n, r+1) },
			"lora forward: argument xa has shape [5 5], want [5 4]"},
		{"xa without adapter", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.A, l.B = kernels.Array{}, kernels.Array{} },
			"lora forward: xa is set but the layer has no adapter"},
		{"x f16", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *x = al(runtime.F16, n, in) },
			"lora forward: argument x has dtype F16"},
		{"W bf16", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.W = al(bf16, out, in) },
			"lora forward: argument W has dtype BF16"},
		{"y bf16", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { *y = al(bf16, n, out) },
			"lora forward: argument y has dtype BF16"},
		{"B f16", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.B = al(runtime.F16, out, r) },
			"lora forward: argument B has dtype F16"},
		{"dropout 1", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.Dropout.P = 1 },
			"lora forward: dropout probability 1 outside [0,1)"},
		{"dropout NaN", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.Dropout.P = math.NaN() },
			"lora forward: dropout probability NaN outside [0,1)"},
		{"scale", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.Scale = math.Inf(1) },
			"lora forward: scale +Inf is not finite"},
		{"no device", func(l *kernels.LoRALinear, x, y, xa *kernels.Array) { l.W.Dev = nil },
			"lora forward: argument W has no device"},
	} {
		require.ErrorContains(t, fwd(tc.mod), tc.msg, tc.name)
	}

	// A rejected call writes nothing.
	l, x, _, xa = good()
	yp := kt.Poisoned(t, dev, f32, []int{n, out})
	l.Dropout.P = 2
	require.Error(t, kernels.LoRALinearForward(0, l, x, yp, xa))
	for _, v := range kt.Download(t, yp) {
		require.True(t, math.IsNaN(v))
	}

	// Backward.
	l, x, _, xa = good()
	dy := al(f32, n, out)
	grads := kernels.LoRAGrads{DX: al(f32, n, in), DA: al(f32, r, in), DB: al(f32, out, r), DW: al(f32, out, in), DBias: al(f32, out)}
	need, err := kernels.LoRALinearBackwardWorkspace(l, x, xa, grads)
	require.NoError(t, err)
	require.Positive(t, need)
	ws := al(f32, need/4)
	require.NoError(t, kernels.LoRALinearBackward(0, l, x, xa, dy, grads, ws))
	bwd := func(mod func(g *kernels.LoRAGrads, dy, ws *kernels.Array)) error {
		g, dyc, wsc := grads, dy, ws
		mod(&g, &dyc, &wsc)
		return kernels.LoRALinearBackward(0, l, x, xa, dyc, g, wsc)
	}
	for _, tc := range []struct {
		name string
		mod  func(g *kernels.LoRAGrads, dy, ws *kernels.Array)
		msg  string
	}{
		{"dy", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { *dy = al(f32, n, out+1) },
			"lora backward: argument dy has shape [5 7], want [5 6]"},
		{"dx", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DX = al(f32, n, out) },
			"lora backward: argument dx has shape [5 6], want [5 8]"},
		{"dA", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DA = al(f32, in, r) },
			"lora backward: argument dA has shape [8 4], want [4 8]"},
		{"dB", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DB = al(f32, r, out) },
			"lora backward: argument dB has shape [4 6], want [6 4]"},
		{"dW", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DW = al(f32, in, out) },
			"lora backward: argument dW has shape [8 6], want [6 8]"},
		{"dBias", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DBias = al(f32, in) },
			"lora backward: argument dBias has shape [8], want [6]"},
		{"dA f16", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DA = al(runtime.F16, r, in) },
			"lora backward: argument dA has dtype F16"},
		{"dA bf16 with f32 storage", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { g.DA = al(bf16, r, in) },
			"lora backward: argument dA has dtype BF16"},
		{"dy bf16", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { *dy = al(bf16, n, out) },
			"lora backward: argument dy has dtype BF16"},
		{"workspace small", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { *ws = al(f32, need/4-1) },
			fmt.Sprintf("lora backward: workspace has %d bytes, want at least %d", need-4, need)},
		{"workspace missing", func(g *kernels.LoRAGrads, dy, ws *kernels.Array) { *ws = kernels.Array{} },
			"lora backward: argument workspace has no device"},
	} {
		require.ErrorContains(t, bwd(tc.mod), tc.msg, tc.name)
	}
	plain := kernels.LoRALinear{W: l.W}
	require.ErrorContains(t, kernels.LoRALinearBackward(0, plain, x, kernels.Array{}, dy, kernels.LoRAGrads{DA: grads.DA}, ws),
		"lora backward: xa, dA or dB is set but the layer has no adapter")
	// f32 gradients are accepted with bf16 storage.
	lb := kernels.LoRALinear{W: al(bf16, out, in), A: al(bf16, r, in), B: al(bf16, out, r), Scale: 1}
	gb := kernels.LoRAGrads{DA: al(f32, r, in), DB: al(bf16, out, r)}
	_, err = kernels.LoRALinearBackwardWorkspace(lb, al(bf16, n, in), al(bf16, n, r), gb)
	require.NoError(t, err)

	// ApplyDropout.
	u := al(f32, n, in)
	require.ErrorContains(t, kernels.ApplyDropout(0, kernels.Dropout{P: 0.1}, x, al(f32, n), 0),
		"lora_dropout: argument u has 5 elements but x has 40")
	require.ErrorContains(t, kernels.ApplyDropout(0, kernels.Dropout{P: 0.1}, x, al(bf16, n, in), 0),
		"lora_dropout: argument u has dtype BF16")
	require.ErrorContains(t, kernels.ApplyDropout(0, kernels.Dropout{P: -0.1}, x, u, 0),
		"lora_dropout: dropout probability -0.1 outside [0,1)")
}
