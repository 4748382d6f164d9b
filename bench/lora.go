package bench

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/runtime"
)

// LoRA times the fused LoRA linear layer y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ
// (kernels.LoRALinearForward) and its backward with the gradients of LoRA
// training — dX, dA and dB, from the xa the forward saved; no dW, no dropout
// (kernels.LoRALinearBackward) — for every projection and rank of the shapes
// and every storage type (f32, bf16; the parameter gradients are f32), with
// s = 16/√r (rsLoRA, α = 16, as PERK).
//
// FLOPs: forward 2·N·in·out·(1+ρ) with ρ = r·(in+out)/(in·out); backward
// 2·N·in·out·(1+2ρ) (dX = dY·W + s·(dY·B)·A, dA, dB). Peers, on a GPU with
// -tags cuda: cuBLAS x·Wᵀ (forward) and dY·W (backward) alone, at the same N,
// in, out and dtype, each counting its 2·N·in·out FLOPs — so Ratio =
// (1+ρ)·t_cuBLAS/t (backward: 1+2ρ), and Ratio ≥ 1/1.10 (forward) and
// ≥ 1/1.15 (backward) meet the targets of perf-anchors.md §2.
//
// Checked: xa, y and dX on CheckRows token rows and dA, dB on a sample of
// their entries (every entry at small shapes), against float64 sums of the
// same inputs with xa and dY·B rounded to the storage type as the kernels
// store them; the error is relative to Σ|terms|.
func LoRA(dev runtime.Device, o Options) ([]Result, error) {
	return suiteRun(dev, o, 11, func(r *run) {
		for _, t := range r.sh.dtypes(runtime.F32, runtime.BF16) {
			for _, rank := range r.sh.Ranks {
				for _, p := range r.sh.Proj {
					r.lora(t, p, rank)
				}
			}
		}
	})
}

func (r *run) lora(t runtime.DType, p Proj, rank int) {
	m := r.mark()
	defer r.release(m)
	n, in, out := r.sh.Tokens, p.In, p.Out
	wShape := []int{out, in}
	if p.WInOut {
		wShape = []int{in, out}
	}
	x, hx := r.random(t, signed, n, in)
	w, hw := r.random(t, signed, wShape...)
	a, ha := r.random(t, signed, rank, in)
	b, hb := r.random(t, signed, out, rank)
	dy, hdy := r.random(t, signed, n, out)
	y, xa := r.alloc(t, n, out), r.alloc(t, n, rank)
	g := kernels.LoRAGrads{DX: r.alloc(t, n, in), DA: r.zeros(runtime.F32, rank, in), DB: r.zeros(runtime.F32, out, rank)}
	scale := 16 / math.Sqrt(float64(rank))
	l := kernels.LoRALinear{W: w, WInOut: p.WInOut, A: a, B: b, Scale: scale}
	wsBytes, err := kernels.LoRALinearBackwardWorkspace(l, x, xa, g)
	r.must(err)
	var ws kernels.Array
	if wsBytes > 0 {
		ws = r.alloc(runtime.F32, (wsBytes+3)/4)
	}
	fwd := func() error { return kernels.LoRALinearForward(0, l, x, y, xa) }
	bwd := func() error { return kernels.LoRALinearBackward(0, l, x, xa, dy, g, ws) }

	// Host copies of the (small) parameters: W as [out][in], A [r][in], B [out][r].
	W := make([][]float64, out)
	for o := range W {
		W[o] = make([]float64, in)
		for i := range W[o] {
			if p.WInOut {
				W[o][i] = hw.at(i*out + o)
			} else {
				W[o][i] = hw.at(o*in + i)
			}
		}
	}
	A := make([][]float64, rank)
	for j := range A {
		A[j] = ha.row(j, in, nil)
	}
	B := make([][]float64, out)
	for o := range B {
		B[o] = hb.row(o, rank, nil)
	}
	absS := math.Abs(scale)
	rnd := func(v float64) float64 { return runtime.Round(t, v) }

	// Forward: xa = x·Aᵀ (stored in t), y = x·Wᵀ + s·xa·Bᵀ.
	r.must(fwd())
	rowsT := r.sample(n)
	gotY, gotXA := r.rows(y, out, rowsT), r.rows(xa, rank, rowsT)
	var ef errMax
	var xr, dyr []float64
	xaR, xaA := make([]float64, rank), make([]float64, rank)
	for k, tk := range rowsT {
		xr = hx.row(tk, in, xr)
		for j := range rank {
			s, sa := dotAbs(xr, A[j])
			ef.add(gotXA[k][j], s, sa)
			xaR[j], xaA[j] = rnd(s), sa
		}
		for o := range out {
			s, sa := dotAbs(xr, W[o])
			for j := range rank {
				s += scale * xaR[j] * B[o][j]
				sa += absS * xaA[j] * math.Abs(B[o][j])
			}
			ef.add(gotY[k][o], s, sa)
		}
	}

	// Backward: gb = dy·B (stored in t), dx = dy·W + s·gb·A, dA = s·gbᵀ·x,
	// dB = s·dyᵀ·xa, on sampled rows / entries.
	r.must(bwd())
	var eb errMax
	gotDX := r.rows(g.DX, in, rowsT)
	gR, gA := make([]float64, rank), make([]float64, rank)
	for k, tk := range rowsT {
		dyr = hdy.row(tk, out, dyr)
		for j := range rank {
			s, sa := 0.0, 0.0
			for o := range out {
				v := dyr[o] * B[o][j]
				s += v
				sa += math.Abs(v)
			}
			gR[j], gA[j] = rnd(s), sa
		}
		for i := range in {
			s, sa := 0.0, 0.0
			for o := range out {
				v := dyr[o] * W[o][i]
				s += v
				sa += math.Abs(v)
			}
			for j := range rank {
				s += scale * gR[j] * A[j][i]
				sa += absS * gA[j] * math.Abs(A[j][i])
			}
			eb.add(gotDX[k][i], s, sa)
		}
	}
	js, os, is := r.sampleFew(rank), r.sample(out), r.sample(in)
	dB, dBa := make([][]float64, len(os)), make([][]float64, len(os))
	for oi := range os {
		dB[oi], dBa[oi] = make([]float64, len(js)), make([]float64, len(js))
	}
	dA, dAa := make([][]float64, len(js)), make([][]float64, len(js))
	for ji := range js {
		dA[ji], dAa[ji] = make([]float64, len(is)), make([]float64, len(is))
	}
	xaJ, gJ := make([]float64, len(js)), make([]float64, len(js))
	for tk := range n {
		xr, dyr = hx.row(tk, in, xr), hdy.row(tk, out, dyr)
		for ji, j := range js {
			s, _ := dotAbs(xr, A[j])
			xaJ[ji] = rnd(s)
			s = 0
			for o := range out {
				s += dyr[o] * B[o][j]
			}
			gJ[ji] = rnd(s)
		}
		for oi, o := range os {
			for ji := range js {
				v := dyr[o] * xaJ[ji]
				dB[oi][ji] += v
				dBa[oi][ji] += math.Abs(v)
			}
		}
		for ji := range js {
			for ii, i := range is {
				v := gJ[ji] * xr[i]
				dA[ji][ii] += v
				dAa[ji][ii] += math.Abs(v)
			}
		}
	}
	gotDA, gotDB := r.download(g.DA), r.download(g.DB)
	for oi, o := range os {
		for ji, j := range js {
			eb.add(gotDB[o*rank+j], scale*dB[oi][ji], absS*dBa[oi][ji])
		}
	}
	for ji, j := range js {
		for ii, i := range is {
			eb.add(gotDA[j*in+i], scale*dA[ji][ii], absS*dAa[ji][ii])
		}
	}

	rho := float64(rank) * float64(in+out) / (float64(in) * float64(out))
	base := 2 * float64(n) * float64(in) * float64(out)
	tol := Tolerance(t)
	name := func(k string) string {
		return fmt.Sprintf("lora_%s_%s %s N%d %dx%d r%d", k, dtName(t), p.Name, n, in, out, rank)
	}
	res := r.flopsResult(name("fwd"), r.time(name("fwd"), fwd), base*(1+rho), ef, tol)
	r.add(r.withGEMMPeer(res, t, "x·Wᵀ", gemmSpec{M: n, N: out, K: in, TransB: !p.WInOut}))
	res = r.flopsResult(name("bwd"), r.time(name("bwd"), bwd), base*(1+2*rho), eb, tol)
	r.add(r.withGEMMPeer(res, t, "dY·W", gemmSpec{M: n, N: in, K: out, TransB: p.WInOut}))
}

// dotAbs returns Σ a·b and Σ|a·b|.
func dotAbs(a, b []float64) (s, sa float64) {
	for i, x := range a {
		v := x * b[i]
		s += v
		sa += math.Abs(v)
	}
	return s, sa
}
