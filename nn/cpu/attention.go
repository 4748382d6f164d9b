package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// attnDims are the sizes of one attention call.
type attnDims struct {
	t, hq, hkv, d int
	causal        bool
	scale         float64
	cu            []int32
}

// attnTask is a block of query rows of one segment for one query head.
type attnTask struct {
	seg0, seg1 int // the segment's token range
	q0, q1     int // the query rows of this task
	h          int // query head
}

const attnRowBlock = 16

// attnDimsOf converts the shared checker's sizes for a.
func attnDimsOf(a nn.Attention, d nn.AttentionDims) attnDims {
	return attnDims{t: d.T, hq: d.HQ, hkv: d.HKV, d: d.D, causal: a.Causal, scale: d.Scale, cu: a.CuSeqlens}
}

// tasks lists the (segment, head, row block) work items.
func (d attnDims) tasks() []attnTask {
	var ts []attnTask
	for s := 0; s+1 < len(d.cu); s++ {
		s0, s1 := int(d.cu[s]), int(d.cu[s+1])
		for h := 0; h < d.hq; h++ {
			for q0 := s0; q0 < s1; q0 += attnRowBlock {
				ts = append(ts, attnTask{seg0: s0, seg1: s1, q0: q0, q1: min(q0+attnRowBlock, s1), h: h})
			}
		}
	}
	return ts
}

// AttentionForward computes o = softmax(scale·q·kᵀ + mask)·v per segment and
// head, and lse = log Σ exp(scale·q·kᵀ) over the visible keys.
func (*Backend) AttentionForward(a nn.Attention, q, k, v, o, lse *nn.Tensor) error {
	ck := newChecker("attention fwd")
	d := attnDimsOf(a, nn.CheckAttentionForward(ck, a, q, k, v, o, lse))
	if ck.Err() != nil {
		return ck.Err()
	}
	if q.DType() == runtime.F32 {
		attentionForward(d, data[float32](q), data[float32](k), data[float32](v), data[float32](o), data[float32](lse))
	} else {
		attentionForward(d, data[float64](q), data[float64](k), data[float64](v), data[float64](o), data[float64](lse))
	}
	return nil
}

func attentionForward[T Float](d attnDims, q, k, v, o, lse []T) {
	tasks := d.tasks()
	group := d.hq / d.hkv
	D := d.d
	parallelFor(len(tasks), 1, func(lo, hi int) {
		qf := make([]float64, D)
		acc := make([]float64, D)
		var p []float64
		for _, tk := range tasks[lo:hi] {
			if n := tk.seg1 - tk.seg0; len(p) < n {
				p = make([]float64, n)
			}
			g := tk.h / group
			for t := tk.q0; t < tk.q1; t++ {
				qrow := q[(t*d.hq+tk.h)*D:][:D]
				for i, x := range qrow {
					qf[i] = float64(x)
				}
				end := tk.seg1
				if d.causal {
					end = t + 1
				}
				mx := math.Inf(-1)
				for j := tk.seg0; j < end; j++ {
					krow := k[(j*d.hkv+g)*D:][:D]
					s := 0.0
					for i, x := range krow {
						s += qf[i] * float64(x)
					}
					s *= d.scale
					p[j-tk.seg0] = s
					mx = max(mx, s)
				}
				sum := 0.0
				clear(acc)
				for j := tk.seg0; j < end; j++ {
					e := math.Exp(p[j-tk.seg0] - mx)
					sum += e
					vrow := v[(j*d.hkv+g)*D:][:D]
					for i, x := range vrow {
						acc[i] += e * float64(x)
					}
				}
				orow := o[(t*d.hq+tk.h)*D:][:D]
				for i := range orow {
					orow[i] = T(acc[i] / sum)
				}
				lse[tk.h*d.t+t] = T(mx + math.Log(sum))
			}
		}
	})
}

// AttentionBackward computes dq, dk, dv from do, recomputing each probability
// p = exp(scale·q·k − lse) from the saved lse (flash-attention style):
// with Δ_i = do_i·o_i, ds = p·(do_i·v_j − Δ_i),
// dq_i = scale·Σ_j ds·k_j, dk_j = scale·Σ_i ds·q_i, dv_j = Σ_i p·do_i.
// dk and dv sum over the query heads sharing a kv head.
func (*Backend) AttentionBackward(a nn.Attention, q, k, v, o, lse, do, dq, dk, dv *nn.Tensor) error {
	ck := newChecker("attention bwd")
	d := attnDimsOf(a, nn.CheckAttentionBackward(ck, a, q, k, v, o, lse, do, dq, dk, dv))
	if ck.Err() != nil {
		return ck.Err()
	}
	if q.DType() == runtime.F32 {
		attentionBackward(d, data[float32](q), data[float32](k), data[float32](v), data[float32](o),
			data[float32](lse), data[float32](do), data[float32](dq), data[float32](dk), data[float32](dv))
	} else {
		attentionBackward(d, data[float64](q), data[float64](k), data[float64](v), data[float64](o),
			data[float64](lse), data[float64](do), data[float64](dq), data[float64](dk), data[float64](dv))
	}
	return nil
}

func attentionBackward[T Float](d attnDims, q, k, v, o, lse, do, dq, dk, dv []T) {
	D, group := d.d, d.hq/d.hkv
	// Δ[h·T+t] = do·o for every query row.
	delta := make([]float64, d.hq*d.t)
	parallelFor(d.t, rowGrain(d.hq*D), func(lo, hi int) {
		for t := lo; t < hi; t++ {
			for h := 0; h < d.hq; h++ {
				off := (t*d.hq + h) * D
				s := 0.0
				for i := 0; i < D; i++ {
					s += float64(do[off+i]) * float64(o[off+i])
				}
				delta[h*d.t+t] = s
			}
		}
	})
	dot := func(a, b []T) float64 {
		s := 0.0
		for i, x := range a {
			s += float64(x) * float64(b[i])
		}
		return s
	}
	if dq != nil {
		tasks := d.tasks()
		parallelFor(len(tasks), 1, func(lo, hi int) {
			acc := make([]float64, D)
			for _, tk := range tasks[lo:hi] {
				g := tk.h / group
				for t := tk.q0; t < tk.q1; t++ {
					off := (t*d.hq + tk.h) * D
					qrow, dorow := q[off:off+D], do[off:off+D]
					l, dl := float64(lse[tk.h*d.t+t]), delta[tk.h*d.t+t]
					end := tk.seg1
					if d.causal {
						end = t + 1
					}
					clear(acc)
					for j := tk.seg0; j < end; j++ {
						koff := (j*d.hkv + g) * D
						krow, vrow := k[koff:koff+D], v[koff:koff+D]
						p := math.Exp(d.scale*dot(qrow, krow) - l)
						ds := p * (dot(dorow, vrow) - dl)
						for i, x := range krow {
							acc[i] += ds * float64(x)
						}
					}
					out := dq[off : off+D]
					for i := range out {
						out[i] = T(d.scale * acc[i])
					}
				}
			}
		})
	}
	if dk == nil && dv == nil {
		return
	}
	// Key-side pass: one task per (segment, kv head, block of key rows).
	type keyTask struct{ seg0, seg1, k0, k1, g int }
	var tasks []keyTask
	for s := 0; s+1 < len(d.cu); s++ {
		s0, s1 := int(d.cu[s]), int(d.cu[s+1])
		for g := 0; g < d.hkv; g++ {
			for k0 := s0; k0 < s1; k0 += attnRowBlock {
				tasks = append(tasks, keyTask{s0, s1, k0, min(k0+attnRowBlock, s1), g})
			}
		}
	}
	parallelFor(len(tasks), 1, func(lo, hi int) {
		accK := make([]float64, D)
		accV := make([]float64, D)
		for _, tk := range tasks[lo:hi] {
			for j := tk.k0; j < tk.k1; j++ {
				koff := (j*d.hkv + tk.g) * D
				krow, vrow := k[koff:koff+D], v[koff:koff+D]
				clear(accK)
				clear(accV)
				start := tk.seg0
				if d.causal {
					start = j
				}
				for h := tk.g * group; h < (tk.g+1)*group; h++ {
					for t := start; t < tk.seg1; t++ {
						off := (t*d.hq + h) * D
						qrow, dorow := q[off:off+D], do[off:off+D]
						p := math.Exp(d.scale*dot(qrow, krow) - float64(lse[h*d.t+t]))
						ds := p * (dot(dorow, vrow) - delta[h*d.t+t])
						for i := 0; i < D; i++ {
							accV[i] += p * float64(dorow[i])
							accK[i] += ds * float64(qrow[i])
						}
					}
				}
				if dk != nil {
					out := dk[koff : koff+D]
					for i := range out {
						out[i] = T(d.scale * accK[i])
					}
				}
				if dv != nil {
					out := dv[koff : koff+D]
					for i := range out {
						out[i] = T(accV[i])
					}
				}
			}
		}
	})
}
