package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Attention times causal softmax attention over the packed segments of the
// shapes (kernels.AttentionForward, writing o and lse) and its backward
// (kernels.AttentionBackward: dq, dk, dv), q [T,Hq,D], k and v [T,Hkv,D]
// (GQA when Hkv < Hq), for each storage type (f32 SIMT, bf16 tensor cores).
//
// FLOPs (flash-attention's convention): forward Σ_segments 4·L²·D per query
// head, halved for causal; backward 2.5× the forward. Peer, for bf16: the
// naive path on this device, per segment and query head the GEMMs of
// materialised attention — S = Q·Kᵀ and O = P·V forward, dV = Pᵀ·dO,
// dP = dO·Vᵀ, dQ = dS·K and dK = dSᵀ·Q backward (kernels.GEMM, full L×L, no
// mask) — without its softmax, so a lower bound of its time; Ratio =
// t_naive/t (the kernel's speed-up). PyTorch's SDPA, the peer of
// perf-anchors.md §3, is not available to a Go binary.
//
// Checked against float64 attention of the same inputs: o and lse of every
// head on CheckRows query rows; dq on the same rows and dk, dv on CheckRows
// key rows, from forward's o and lse as the backward takes them; relative
// to Σ P·|v| (o, dv), Σ P·(|dP|+|Δ|)·|k or q|·scale (dq, dk) and |lse|+1.
func Attention(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 15, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.attention(t)
		}
	})
}

func (r *run) attention(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	T, Hq, Hkv, D := r.sh.Tokens, r.sh.Heads, r.sh.KVHeads, r.sh.HeadDim
	group := Hq / Hkv
	cu := r.sh.segments()
	seg, err := kernels.NewAttnSegments(r.dev, cu)
	r.must(err)
	r.onRelease(seg.Free)
	q, hq := r.random(t, signed, T, Hq, D)
	k, hk := r.random(t, signed, T, Hkv, D)
	v, hv := r.random(t, signed, T, Hkv, D)
	do, hdo := r.random(t, signed, T, Hq, D)
	o, lse := r.alloc(t, T, Hq, D), r.alloc(runtime.F32, Hq, T)
	dq, dk, dv := r.alloc(t, T, Hq, D), r.alloc(t, T, Hkv, D), r.alloc(t, T, Hkv, D)
	delta := r.alloc(runtime.F32, Hq, T)
	a := kernels.Attn{Seg: seg, Causal: true}
	fwd := func() error { return kernels.AttentionForward(0, a, q, k, v, o, lse) }
	bwd := func() error { return kernels.AttentionBackward(0, a, q, k, v, o, lse, do, dq, dk, dv, delta) }

	sc := float64(float32(1 / math.Sqrt(float64(D))))
	segEnd := make([]int, T) // end of each token's segment
	segStart := make([]int, T)
	for s := 1; s < len(cu); s++ {
		for i := cu[s-1]; i < cu[s]; i++ {
			segStart[i], segEnd[i] = int(cu[s-1]), int(cu[s])
		}
	}
	// Host rows: q[i,h], do[i,h] of query heads, k[j,g], v[j,g] of kv heads.
	qRow := func(i, h int) []float64 { return hq.row(i*Hq+h, D, nil) }
	doRow := func(i, h int) []float64 { return hdo.row(i*Hq+h, D, nil) }
	kRow := func(j, g int) []float64 { return hk.row(j*Hkv+g, D, nil) }
	vRow := func(j, g int) []float64 { return hv.row(j*Hkv+g, D, nil) }

	// Forward: for each sampled query row i and head h, over keys s0..i.
	r.must(fwd())
	rows := r.sample(T)
	gotO := r.rows(o, Hq*D, rows)
	gotLSE := r.download(lse)
	var ef errMax
	for ri, i := range rows {
		for h := range Hq {
			g := h / group
			qi := qRow(i, h)
			keys := i - segStart[i] + 1
			s := make([]float64, keys)
			smax := math.Inf(-1)
			for jj := range keys {
				s[jj], _ = dotAbs(qi, kRow(segStart[i]+jj, g))
				s[jj] *= sc
				smax = math.Max(smax, s[jj])
			}
			se := 0.0
			for _, x := range s {
				se += math.Exp(x - smax)
			}
			l := smax + math.Log(se)
			ef.add(gotLSE[h*T+i], l, math.Abs(l)+1)
			ov, oa := make([]float64, D), make([]float64, D)
			for jj := range keys {
				p := math.Exp(s[jj] - l)
				for d, x := range vRow(segStart[i]+jj, g) {
					ov[d] += p * x
					oa[d] += p * math.Abs(x)
				}
			}
			for d := range D {
				ef.add(gotO[ri][h*D+d], ov[d], oa[d])
			}
		}
	}

	// Backward from the device's o and lse, as the kernel reads them.
	r.must(bwd())
	oDev := r.download(o)
	var eb errMax
	// prob returns P_ij, dP_ij and Δ_i for query i, head h, key j.
	prob := func(i, h, j int, qi, doi, kj, vj []float64) (p, dp, dl float64) {
		s, _ := dotAbs(qi, kj)
		p = math.Exp(s*sc - gotLSE[h*T+i])
		dp, _ = dotAbs(doi, vj)
		dl, _ = dotAbs(doi, oDev[(i*Hq+h)*D:(i*Hq+h+1)*D])
		return p, dp, dl
	}
	gotDQ := r.rows(dq, Hq*D, rows)
	for ri, i := range rows {
		for h := range Hq {
			g := h / group
			qi, doi := qRow(i, h), doRow(i, h)
			dqv, dqa := make([]float64, D), make([]float64, D)
			for j := segStart[i]; j <= i; j++ {
				kj := kRow(j, g)
				p, dp, dl := prob(i, h, j, qi, doi, kj, vRow(j, g))
				ds, dsa := p*(dp-dl), p*(math.Abs(dp)+math.Abs(dl))
				for d, x := range kj {
					dqv[d] += sc * ds * x
					dqa[d] += sc * dsa * math.Abs(x)
				}
			}
			for d := range D {
				eb.add(gotDQ[ri][h*D+d], dqv[d], dqa[d])
			}
		}
	}
	gotDK, gotDV := r.rows(dk, Hkv*D, rows), r.rows(dv, Hkv*D, rows)
	for ri, j := range rows {
		for g := range Hkv {
			kj, vj := kRow(j, g), vRow(j, g)
			dkv, dka := make([]float64, D), make([]float64, D)
			dvv, dva := make([]float64, D), make([]float64, D)
			for h := g * group; h < (g+1)*group; h++ {
				for i := j; i < segEnd[j]; i++ {
					qi, doi := qRow(i, h), doRow(i, h)
					p, dp, dl := prob(i, h, j, qi, doi, kj, vj)
					ds, dsa := p*(dp-dl), p*(math.Abs(dp)+math.Abs(dl))
					for d := range D {
						dkv[d] += sc * ds * qi[d]
						dka[d] += sc * dsa * math.Abs(qi[d])
						dvv[d] += p * doi[d]
						dva[d] += p * math.Abs(doi[d])
					}
				}
			}
			for d := range D {
				eb.add(gotDK[ri][g*D+d], dkv[d], dka[d])
				eb.add(gotDV[ri][g*D+d], dvv[d], dva[d])
			}
		}
	}

	flops := 0.0
	for s := 1; s < len(cu); s++ {
		l := float64(cu[s] - cu[s-1])
		flops += 4 * l * l * float64(D) * float64(Hq) / 2
	}
	name := func(kind string) string {
		return fmt.Sprintf("attn_%s_%s T%d seg%d hq%d hkv%d d%d causal", kind, dtName(t), T, r.sh.SeqLen, Hq, Hkv, D)
	}
	tol := Tolerance(t)
	resF := r.flopsResult(name("fwd"), r.time(name("fwd"), fwd), flops, ef, tol)
	resB := r.flopsResult(name("bwd"), r.time(name("bwd"), bwd), 2.5*flops, eb, tol)
	if t != runtime.BF16 {
		resF.Peer, resB.Peer = "no peer (the naive GEMM path is bf16)", "no peer (the naive GEMM path is bf16)"
	} else {
		nf, nb := r.naiveAttention(t, cu, Hq, D)
		resF.Peer, resF.Ratio = "of naive per-head GEMMs' rate (QKᵀ, PV; no softmax)", nf/resF.PerOp
		resB.Peer, resB.Ratio = "of naive per-head GEMMs' rate (4 per head; no softmax)", nb/resB.PerOp
	}
	r.add(resF)
	r.add(resB)
}

// naiveAttention times the GEMMs of materialised attention per segment and
// query head (see Attention) and returns seconds per forward and backward.
func (r *run) naiveAttention(t runtime.DType, cu []int32, heads, d int) (fwd, bwd float64) {
	m := r.mark()
	defer r.release(m)
	lmax := 0
	for s := 1; s < len(cu); s++ {
		lmax = max(lmax, int(cu[s]-cu[s-1]))
	}
	f32 := runtime.F32
	qh, _ := r.random(t, signed, lmax, d)
	kh, _ := r.random(t, signed, lmax, d)
	vh, _ := r.random(t, signed, lmax, d)
	doh, _ := r.random(t, signed, lmax, d)
	p, _ := r.random(t, positive, lmax, lmax)
	ds, _ := r.random(t, signed, lmax, lmax)
	s, dp := r.alloc(f32, lmax, lmax), r.alloc(f32, lmax, lmax)
	oh, dq, dk, dv := r.alloc(f32, lmax, d), r.alloc(f32, lmax, d), r.alloc(f32, lmax, d), r.alloc(f32, lmax, d)
	view := func(a kernels.Array, rows, cols int) kernels.Array {
		a.Shape = []int{rows, cols}
		return a
	}
	each := func(f func(l int) error) func() error {
		return func() error {
			for sg := 1; sg < len(cu); sg++ {
				l := int(cu[sg] - cu[sg-1])
				if l == 0 {
					continue
				}
				for range heads {
					if err := f(l); err != nil {
						return err
					}
				}
			}
			return nil
		}
	}
	gemm := func(c, a, b kernels.Array, transB bool) error { return kernels.GEMM(0, c, a, b, transB, 1, 0) }
	fwdF := each(func(l int) error {
		if err := gemm(view(s, l, l), view(qh, l, d), view(kh, l, d), true); err != nil {
			return err
		}
		return gemm(view(oh, l, d), view(p, l, l), view(vh, l, d), false)
	})
	bwdF := each(func(l int) error {
		for _, g := range []struct {
			c, a, b kernels.Array
			transB  bool
		}{
			{view(dv, l, d), view(p, l, l), view(doh, l, d), false},
			{view(dp, l, l), view(doh, l, d), view(vh, l, d), true},
			{view(dq, l, d), view(ds, l, l), view(kh, l, d), false},
			{view(dk, l, d), view(ds, l, l), view(qh, l, d), false},
		} {
			if err := gemm(g.c, g.a, g.b, g.transB); err != nil {
				return err
			}
		}
		return nil
	})
	var err error
	fwd, err = timeDevice(r.dev, 0, r.o.Iters, fwdF)
	r.must(err)
	bwd, err = timeDevice(r.dev, 0, r.o.Iters, bwdF)
	r.must(err)
	return fwd, bwd
}
