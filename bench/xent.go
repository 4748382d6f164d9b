package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Xent times the fused LM-head cross-entropy (kernels.XentForward: per-token
// CE, log-sum-exp and the loss, logits never materialised; it checks the
// labels on the device first, a host round trip that is part of the time)
// and its backward for dh only (kernels.XentBackward; the tied LM head is
// frozen in LoRA training, so no dEmb), with every 13th label ignored, for
// each storage type (f32, bf16; f16 is supported but not timed).
//
// FLOPs: forward 2·N·d·V (the logits); backward 4·N·d·V (logits again, then
// dh = G·Emb). Peers, on a GPU with -tags cuda: cuBLAS logits H·Embᵀ
// (forward) and logits + G·Emb (backward) at the same sizes and dtype, with
// the same FLOP counts, so Ratio = t_cuBLAS/t; perf-anchors.md §5's target is
// fwd+bwd ≤ 1.15× the GEMMs (Ratio ≥ 0.87).
//
// Checked: ce and lse on CheckRows/4 rows (with the loss when every row is
// checked) and dh on the same rows, against float64 logits of the same
// inputs; ce and lse relative to |lse|+|logit_label|, dh to Σ_v|p−δ|·|e|.
func Xent(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 12, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.xent(t)
		}
	})
}

func (r *run) xent(t runtime.DType) {
	m := r.mark()
	defer r.release(m)
	n, d, v := r.sh.Tokens, r.sh.Hidden, r.sh.Vocab
	h, hh := r.random(t, signed, n, d)
	emb, he := r.random(t, signed, v, d)
	labels := make([]int32, n)
	norm := 0.0
	for i := range labels {
		if i%13 == 12 {
			labels[i] = kernels.XentIgnoreIndex
			continue
		}
		labels[i] = int32(r.rng.IntN(v))
		norm++
	}
	x := kernels.Xent{H: h, Emb: emb, Labels: r.uploadI32(labels), Norm: norm}
	scratch := r.alloc(runtime.F32, kernels.XentScratchElems(t, n, v, d, 0))
	ce, lse, loss := r.alloc(runtime.F32, n), r.alloc(runtime.F32, n), r.alloc(runtime.F32, 1)
	dh := r.alloc(t, n, d)
	fwd := func() error { return kernels.XentForward(0, x, ce, lse, loss, scratch) }
	bwd := func() error {
		return kernels.XentBackward(0, x, ce, lse, 1, dh, kernels.Array{}, kernels.Array{}, scratch)
	}

	r.must(fwd())
	rows := r.sampleFew(n)
	gotCE, gotLSE := r.download(ce), r.download(lse)
	r.must(bwd())
	gotDH := r.rows(dh, d, rows)

	var ef, eb errMax
	var hr, er []float64
	z := make([]float64, v)
	dhR, dhA := make([]float64, d), make([]float64, d)
	sumCE := 0.0
	for k, i := range rows {
		hr = hh.row(i, d, hr)
		zmax := math.Inf(-1)
		for u := range v {
			er = he.row(u, d, er)
			z[u], _ = dotAbs(hr, er)
			zmax = math.Max(zmax, z[u])
		}
		se := 0.0
		for _, zu := range z {
			se += math.Exp(zu - zmax)
		}
		l := zmax + math.Log(se)
		ef.add(gotLSE[i], l, math.Abs(l)+1)
		clear(dhR)
		clear(dhA)
		if labels[i] != kernels.XentIgnoreIndex {
			lab := int(labels[i])
			c := l - z[lab]
			sumCE += c
			ef.add(gotCE[i], c, math.Abs(l)+math.Abs(z[lab])+1)
			for u := range v {
				g := math.Exp(z[u] - l)
				if u == lab {
					g--
				}
				er = he.row(u, d, er)
				for kk, e := range er {
					dhR[kk] += g * e
					dhA[kk] += math.Abs(g * e)
				}
			}
		} else {
			ef.add(gotCE[i], 0, 1)
		}
		for kk := range d {
			eb.add(gotDH[k][kk], dhR[kk]/norm, dhA[kk]/norm)
		}
	}
	if len(rows) == n {
		got, err := kernels.XentLossValue(loss)
		r.must(err)
		ef.add(got, sumCE/norm, math.Abs(sumCE/norm)+1)
	}

	name := func(k string) string { return fmt.Sprintf("xent_%s_%s N%d d%d V%d", k, dtName(t), n, d, v) }
	flops := 2 * float64(n) * float64(d) * float64(v)
	tol := Tolerance(t)
	logits := gemmSpec{M: n, N: v, K: d, TransB: true}
	res := r.flopsResult(name("fwd"), r.time(name("fwd"), fwd), flops, ef, tol)
	r.add(r.withGEMMPeer(res, t, "logits H·Embᵀ", logits))
	res = r.flopsResult(name("bwd"), r.time(name("bwd"), bwd), 2*flops, eb, tol)
	r.add(r.withGEMMPeer(res, t, "logits + G·Emb", logits, gemmSpec{M: n, N: d, K: v}))
}
