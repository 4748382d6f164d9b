package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// adamCfg is PERK's AdamW (betas 0.9, 0.95) at step 3.
var adamCfg = kernels.AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.01, Step: 3}

// Optim times one multi-tensor AdamW step (kernels.AdamWStep: p, g, m, v f32,
// one launch over the whole table, per-tensor learning rates) and its VJP
// (kernels.AdamWVJP: the differentiable inner update of PERK, with η̄ per
// tensor) over the LoRA adapters of the shapes: Layers × Proj × {A [r,in],
// B [out,r]} (GPT-2 small: 96 tensors; Qwen2.5-0.5B: 336), for every rank.
//
// Bytes: step 28 per parameter (read p, g, m, v; write p, m, v) + 4 per
// tensor; VJP 44 per parameter (read p, g, m, v, p̄, m̄, v̄; write p̄, m̄, v̄,
// ḡ) + 4 per tensor and the η̄ partial sums. Peer: D2D copy bandwidth over
// the same bytes in the same run (perf-anchors.md §4: ≥ 0.8 at ≥ 50M params).
//
// Checked: every output element of CheckRows/4 tensors (all at small
// shapes) and their η̄, against nn/cpu's float64 formulas, relative to the
// magnitudes of each formula's terms.
func Optim(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 14, func(r *run) {
		for _, rank := range r.sh.Ranks {
			r.optim(rank)
		}
	})
}

func (r *run) optim(rank int) {
	m := r.mark()
	defer r.release(m)
	var sizes []int
	for range r.sh.Layers {
		for _, p := range r.sh.Proj {
			sizes = append(sizes, rank*p.In, p.Out*rank)
		}
	}
	params := 0
	lrs := make([]float64, len(sizes))
	for i, n := range sizes {
		params += n
		lrs[i] = runtime.Round(runtime.F32, 1e-4+9e-4*r.rng.Float64())
	}
	f32 := runtime.F32
	lrArr := r.upload(f32, []int{len(lrs)}, lrs)
	kinds := []valueKind{signed, signed, signed, positive, signed, signed, signed, signed} // p g m v p̄ m̄ v̄ ḡ
	step, vjp := make([][]kernels.Array, len(sizes)), make([][]kernels.Array, len(sizes))
	hStep, hVJP := make([][]host, len(sizes)), make([][]host, len(sizes))
	for i, n := range sizes {
		for j, k := range kinds {
			a, h := r.random(f32, k, n)
			if j < 4 {
				b, hb := r.random(f32, k, n)
				step[i], hStep[i] = append(step[i], b), append(hStep[i], hb)
			}
			vjp[i], hVJP[i] = append(vjp[i], a), append(hVJP[i], h)
		}
	}
	tab4, err := kernels.NewTensorTable(r.dev, 4, step)
	r.must(err)
	r.onRelease(tab4.Free)
	tab8, err := kernels.NewTensorTable(r.dev, 8, vjp)
	r.must(err)
	r.onRelease(tab8.Free)
	partials, dLRs := r.alloc(f32, tab8.Partials()), r.alloc(f32, len(sizes))
	stepF := func() error { return kernels.AdamWStep(0, tab4, lrArr, adamCfg, kernels.Array{}, kernels.Array{}) }
	vjpF := func() error { return kernels.AdamWVJP(0, tab8, lrArr, adamCfg, partials, dLRs) }

	c := adamCfg
	b1, b2, eps, wd := c.Beta1, c.Beta2, c.Eps, c.WeightDecay
	bc1, bc2s := 1-math.Pow(b1, float64(c.Step)), math.Sqrt(1-math.Pow(b2, float64(c.Step)))
	check := r.sampleFew(len(sizes))

	r.must(stepF())
	var es errMax
	for _, i := range check {
		lr, decay := lrs[i], 1-lrs[i]*wd
		got := make([][]float64, 3)
		for j := range got {
			got[j] = r.download(step[i][[]int{0, 2, 3}[j]])
		}
		h := hStep[i]
		for e := range sizes[i] {
			p, g, mo, vo := h[0].at(e), h[1].at(e), h[2].at(e), h[3].at(e)
			mn, mA := b1*mo+(1-b1)*g, b1*math.Abs(mo)+(1-b1)*math.Abs(g)
			vn := b2*vo + (1-b2)*g*g
			den := math.Sqrt(vn)/bc2s + eps
			upd := lr / bc1 * mn / den
			es.add(got[0][e], p*decay-upd, math.Abs(p*decay)+lr/bc1*mA/den)
			es.add(got[1][e], mn, mA)
			es.addRel(got[2][e], vn)
		}
	}

	r.must(vjpF())
	var ev errMax
	gotLR := r.download(dLRs)
	for _, i := range check {
		lr, decay := lrs[i], 1-lrs[i]*wd
		got := make([][]float64, 4)
		for j := range got {
			got[j] = r.download(vjp[i][4+j])
		}
		h := hVJP[i]
		dlr, dlrA := 0.0, 0.0
		for e := range sizes[i] {
			p, g, me, ve := h[0].at(e), h[1].at(e), h[2].at(e), h[3].at(e)
			pb, mb, vb := h[4].at(e), h[5].at(e), h[6].at(e)
			mA, vA := math.Abs(mb), math.Abs(vb)
			step := 0.0
			if ve > 0 {
				sv := math.Sqrt(ve)
				den := sv/bc2s + eps
				mh := me / bc1
				step = mh / den
				t1 := pb * lr / (bc1 * den)
				t2 := pb * lr * mh / (den * den * 2 * sv * bc2s)
				mb, vb = mb-t1, vb+t2
				mA, vA = mA+math.Abs(t1), vA+math.Abs(t2)
			}
			dlr += pb * (-wd*p - step)
			dlrA += math.Abs(pb) * (math.Abs(wd*p) + math.Abs(step))
			ev.add(got[0][e], pb*decay, math.Abs(pb*decay))
			ev.add(got[1][e], b1*mb, b1*mA)
			ev.add(got[2][e], b2*vb, b2*vA)
			ev.add(got[3][e], (1-b1)*mb+2*(1-b2)*g*vb, (1-b1)*mA+2*(1-b2)*math.Abs(g)*vA)
		}
		ev.add(gotLR[i], dlr, dlrA)
	}

	name := func(k string) string {
		return fmt.Sprintf("adamw_%s_f32 %d tensors %s params (r%d)", k, len(sizes), humanCount(params), rank)
	}
	rows := float64(len(sizes))
	tol := Tolerance(f32)
	stepBytes := 28*float64(params) + 4*rows
	vjpBytes := 44*float64(params) + 4*rows + 8*float64(tab8.Partials())
	r.add(r.withCopyPeer(r.bytesResult(name("step"), r.time(name("step"), stepF), stepBytes, es, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("vjp"), r.time(name("vjp"), vjpF), vjpBytes, ev, tol)))
}

// humanCount prints a count as 6144, 2.36M or 1.2G.
func humanCount(n int) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.3gG", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.3gM", float64(n)/1e6)
	}
	return fmt.Sprint(n)
}
