package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// Norm times LayerNorm (GPT-2, eps 1e-5) and RMSNorm (Qwen2, eps 1e-6) over
// x [Tokens, Hidden], forward (kernels.LayerNormForward / RMSNormForward,
// saving the f32 row statistics) and backward (LayerNormBackward /
// RMSNormBackward: dx, and f32 dγ (dβ) summed deterministically), for each
// storage type (f32, bf16).
//
// Bytes (e = element size, N rows, C columns, nb = ⌈N/32⌉ partial rows):
// LayerNorm forward 2·N·C·e + 2·C·e + 8·N, backward 3·N·C·e + C·e + 8·N +
// 2·(2·nb·C·4) + 2·C·4·2; RMSNorm the same without the mean and β. Peer: D2D
// copy bandwidth over the same bytes in the same run (perf-anchors.md §6:
// ≥ 0.8).
//
// Checked: y, mean and rstd, and dx on CheckRows rows, dγ and dβ in full,
// against float64 formulas; backward from forward's statistics as the
// kernels read them.
func Norm(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 16, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			r.norm(t, true)
			r.norm(t, false)
		}
	})
}

func (r *run) norm(t runtime.DType, layer bool) {
	m := r.mark()
	defer r.release(m)
	n, c := r.sh.Tokens, r.sh.Hidden
	f32 := runtime.F32
	x, hx := r.random(t, signed, n, c)
	gamma, hg := r.random(t, positive, c)
	var beta, mean, dBeta kernels.Array
	var hb host
	eps := 1e-6
	if layer {
		beta, hb = r.random(t, signed, c)
		mean, dBeta = r.alloc(f32, n), r.zeros(f32, c)
		eps = 1e-5
	}
	y, rstd := r.alloc(t, n, c), r.alloc(f32, n)
	dy, hdy := r.random(t, signed, n, c)
	dx, dGamma := r.alloc(t, n, c), r.zeros(f32, c)
	scratch := r.alloc(f32, kernels.NormScratchLen(n, c))
	var fwd, bwd func() error
	if layer {
		fwd = func() error { return kernels.LayerNormForward(0, x, gamma, beta, eps, y, mean, rstd) }
		bwd = func() error {
			return kernels.LayerNormBackward(0, x, gamma, mean, rstd, dy, dx, dGamma, dBeta, scratch)
		}
	} else {
		fwd = func() error { return kernels.RMSNormForward(0, x, gamma, eps, y, rstd) }
		bwd = func() error { return kernels.RMSNormBackward(0, x, gamma, rstd, dy, dx, dGamma, scratch) }
	}
	G := hg.row(0, c, nil)
	var Bt []float64
	if layer {
		Bt = hb.row(0, c, nil)
	}

	r.must(fwd())
	rows := r.sample(n)
	gotY := r.rows(y, c, rows)
	gotRstd := r.download(rstd)
	var gotMean []float64
	if layer {
		gotMean = r.download(mean)
	}
	var ef errMax
	var xr, dyr []float64
	for k, i := range rows {
		xr = hx.row(i, c, xr)
		mu, ma := 0.0, 0.0
		if layer {
			for _, v := range xr {
				mu += v
				ma += math.Abs(v)
			}
			mu /= float64(c)
			ef.add(gotMean[i], mu, ma/float64(c))
		}
		ss := 0.0
		for _, v := range xr {
			ss += (v - mu) * (v - mu)
		}
		rs := 1 / math.Sqrt(ss/float64(c)+eps)
		ef.addRel(gotRstd[i], rs)
		for j, v := range xr {
			xh := (v - mu) * rs
			want, sc := xh*G[j], math.Abs(xh*G[j])
			if layer {
				want += Bt[j]
				sc += math.Abs(Bt[j])
			}
			ef.add(gotY[k][j], want, sc)
		}
	}

	r.must(bwd())
	var eb errMax
	gotDX := r.rows(dx, c, rows)
	check := map[int]int{}
	for k, i := range rows {
		check[i] = k
	}
	dg, dga := make([]float64, c), make([]float64, c)
	db, dba := make([]float64, c), make([]float64, c)
	xh, gg := make([]float64, c), make([]float64, c)
	for i := range n {
		xr, dyr = hx.row(i, c, xr), hdy.row(i, c, dyr)
		mu := 0.0
		if layer {
			mu = gotMean[i]
		}
		rs := gotRstd[i]
		mg, mga, mgx, mgxa := 0.0, 0.0, 0.0, 0.0
		for j := range c {
			xh[j] = (xr[j] - mu) * rs
			gg[j] = dyr[j] * G[j]
			mg += gg[j]
			mga += math.Abs(gg[j])
			mgx += gg[j] * xh[j]
			mgxa += math.Abs(gg[j] * xh[j])
			dg[j] += dyr[j] * xh[j]
			dga[j] += math.Abs(dyr[j] * xh[j])
			db[j] += dyr[j]
			dba[j] += math.Abs(dyr[j])
		}
		mg, mga, mgx, mgxa = mg/float64(c), mga/float64(c), mgx/float64(c), mgxa/float64(c)
		if !layer {
			mg, mga = 0, 0
		}
		if k, ok := check[i]; ok {
			for j := range c {
				want := rs * (gg[j] - mg - xh[j]*mgx)
				sc := rs * (math.Abs(gg[j]) + mga + math.Abs(xh[j])*mgxa)
				eb.add(gotDX[k][j], want, sc)
			}
		}
	}
	gotDG := r.download(dGamma)
	for j := range c {
		eb.add(gotDG[j], dg[j], dga[j])
	}
	if layer {
		gotDB := r.download(dBeta)
		for j := range c {
			eb.add(gotDB[j], db[j], dba[j])
		}
	}

	e, nc, N, C := float64(t.Size()), float64(n*c), float64(n), float64(c)
	nb := float64((n + 31) / 32)
	kind, stats, params, sums := "rmsnorm", 4*N, C*e, 1.0
	if layer {
		kind, stats, params, sums = "layernorm", 8*N, 2*C*e, 2
	}
	fwdBytes := 2*nc*e + params + stats
	bwdBytes := 3*nc*e + C*e + stats + sums*(2*nb*C*4+2*C*4)
	name := func(k string) string { return fmt.Sprintf("%s_%s_%s %dx%d", kind, k, dtName(t), n, c) }
	tol := Tolerance(t)
	r.add(r.withCopyPeer(r.bytesResult(name("fwd"), r.time(name("fwd"), fwd), fwdBytes, ef, tol)))
	r.add(r.withCopyPeer(r.bytesResult(name("bwd"), r.time(name("bwd"), bwd), bwdBytes, eb, tol)))
}
