package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// RoPE times the rotary embedding of q [Tokens, Heads, HeadDim]
// (kernels.RoPEForward, rotate-half convention, positions restarting in each
// packed segment, theta from the shapes) and its inverse rotation for the
// gradient (RoPEBackward), for each storage type (f32, bf16).
//
// Bytes: 2·T·H·D·e + 4·T (positions) + 2·D (inverse frequencies), forward and
// backward alike. Peer: D2D copy bandwidth over the same bytes in the same
// run (perf-anchors.md §6: ≥ 0.8).
//
// Checked: every head of CheckRows tokens, against a float64 rotation by the
// kernels' fp32 angle pos·f (f the f32 inverse frequency, the product rounded
// to f32, as HF computes it), relative to the norm of each rotated pair.
func RoPE(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 18, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.rope(t)
		}
	})
}

func (r *run) rope(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	n, h, d := r.sh.Tokens, r.sh.Heads, r.sh.HeadDim
	half := d / 2
	positions := r.sh.positions()
	pos := r.uploadI32(positions)
	inv, err := kernels.NewRoPEInvFreq(r.dev, r.sh.RoPETheta, d)
	r.must(err)
	r.onRelease(func() error { return kernels.FreeArray(inv) })
	freq, err := kernels.RoPEInvFreq(r.sh.RoPETheta, d)
	r.must(err)
	x, hx := r.random(t, signed, n, h, d)
	dy, hdy := r.random(t, signed, n, h, d)
	y, dx := r.alloc(t, n, h, d), r.alloc(t, n, h, d)
	fwd := func() error { return kernels.RoPEForward(0, x, pos, inv, y) }
	bwd := func() error { return kernels.RoPEBackward(0, dy, pos, inv, dx) }
	r.must(fwd())
	r.must(bwd())
	rows := r.sample(n)
	gotY, gotDX := r.rows(y, h*d, rows), r.rows(dx, h*d, rows)
	var ef, eb errMax
	for k, i := range rows {
		for i2 := range half {
			a := float64(float32(positions[i]) * float32(freq[i2]))
			sn, cs := math.Sincos(a)
			for hd := range h {
				off := (i*h + hd) * d
				for _, c := range []struct {
					src  host
					got  []float64
					e    *errMax
					sign float64
				}{{hx, gotY[k], &ef, 1}, {hdy, gotDX[k], &eb, -1}} {
					x0, x1 := c.src.at(off+i2), c.src.at(off+i2+half)
					s := c.sign * sn
					nrm := math.Hypot(x0, x1)
					c.e.add(c.got[hd*d+i2], x0*cs-x1*s, nrm)
					c.e.add(c.got[hd*d+i2+half], x1*cs+x0*s, nrm)
				}
			}
		}
	}
	bytes := 2*float64(n*h*d)*float64(t.Size()) + 4*float64(n) + 2*float64(d)
	name := func(k string) string {
		return fmt.Sprintf("rope_%s_%s %dx%dx%d theta%g", k, dtName(t), n, h, d, r.sh.RoPETheta)
	}
	tol := Tolerance(t)
	r.add(r.withCopyPeer(r.bytesResult(name("fwd"), r.time(name("fwd"), fwd), bytes, ef, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("bwd"), r.time(name("bwd"), bwd), bytes, eb, tol)))
}
