package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Act times GELU (GPT-2's tanh approximation; kernels.GELUForward /
// GELUBackward) and SwiGLU (Qwen2's silu(gate)·up; SwiGLUForward /
// SwiGLUBackward with dGate and dUp) elementwise over [Tokens, FFN], for
// each storage type (f32, bf16).
//
// Bytes (n elements of e bytes): GELU forward 2·n·e, backward 3·n·e; SwiGLU
// forward 3·n·e, backward 5·n·e. Peer: D2D copy bandwidth over the same bytes
// in the same run (perf-anchors.md §6: ≥ 0.8).
//
// Checked: CheckRows rows of every output against float64 formulas,
// relative to the magnitudes of each formula's terms.
func Act(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 17, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.gelu(t)
			r.swiglu(t)
		}
	})
}

const geluK = 0.7978845608028654 // √(2/π)

func (r *run) gelu(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	n, f := r.sh.Tokens, r.sh.FFN
	x, hx := r.random(t, signed, n, f)
	dy, hdy := r.random(t, signed, n, f)
	y, dx := r.alloc(t, n, f), r.alloc(t, n, f)
	fwd := func() error { return kernels.GELUForward(0, x, y) }
	bwd := func() error { return kernels.GELUBackward(0, x, dy, dx) }
	r.must(fwd())
	r.must(bwd())
	rows := r.sample(n)
	gotY, gotDX := r.rows(y, f, rows), r.rows(dx, f, rows)
	var ef, eb errMax
	for k, i := range rows {
		for j := range f {
			v, g := hx.at(i*f+j), hdy.at(i*f+j)
			u := geluK * (v + 0.044715*v*v*v)
			th := math.Tanh(u)
			ef.addRel(gotY[k][j], 0.5*v*(1+th))
			a := 0.5 * (1 + th)
			b := 0.5 * v * (1 - th*th) * geluK * (1 + 3*0.044715*v*v)
			eb.add(gotDX[k][j], g*(a+b), math.Abs(g)*(math.Abs(a)+math.Abs(b)))
		}
	}
	e, nn := float64(t.Size()), float64(n*f)
	name := func(k string) string { return fmt.Sprintf("gelu_%s_%s %dx%d", k, dtName(t), n, f) }
	tol := Tolerance(t)
	r.add(r.withCopyPeer(r.bytesResult(name("fwd"), r.time(name("fwd"), fwd), 2*nn*e, ef, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("bwd"), r.time(name("bwd"), bwd), 3*nn*e, eb, tol)))
}

func (r *run) swiglu(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	n, f := r.sh.Tokens, r.sh.FFN
	gate, hg := r.random(t, signed, n, f)
	up, hu := r.random(t, signed, n, f)
	dy, hdy := r.random(t, signed, n, f)
	y, dGate, dUp := r.alloc(t, n, f), r.alloc(t, n, f), r.alloc(t, n, f)
	fwd := func() error { return kernels.SwiGLUForward(0, gate, up, y) }
	bwd := func() error { return kernels.SwiGLUBackward(0, gate, up, dy, dGate, dUp) }
	r.must(fwd())
	r.must(bwd())
	rows := r.sample(n)
	gotY, gotDG, gotDU := r.rows(y, f, rows), r.rows(dGate, f, rows), r.rows(dUp, f, rows)
	var ef, eb errMax
	for k, i := range rows {
		for j := range f {
			g, u, d := hg.at(i*f+j), hu.at(i*f+j), hdy.at(i*f+j)
			sg := 1 / (1 + math.Exp(-g))
			ef.addRel(gotY[k][j], g*sg*u)
			c := g * (1 - sg)
			eb.add(gotDG[k][j], d*u*sg*(1+c), math.Abs(d*u*sg)*(1+math.Abs(c)))
			eb.addRel(gotDU[k][j], d*g*sg)
		}
	}
	e, nn := float64(t.Size()), float64(n*f)
	name := func(k string) string { return fmt.Sprintf("swiglu_%s_%s %dx%d", k, dtName(t), n, f) }
	tol := Tolerance(t)
	r.add(r.withCopyPeer(r.bytesResult(name("fwd"), r.time(name("fwd"), fwd), 3*nn*e, ef, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("bwd"), r.time(name("bwd"), bwd), 5*nn*e, eb, tol)))
}
