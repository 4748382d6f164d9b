package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// DefaultXentChunk is the vocabulary chunk the CPU cross-entropy uses when
// nn.CrossEntropy.Chunk is 0: N×2048 logits are live at a time.
const DefaultXentChunk = 2048

type xentDims struct{ n, d, v, chunk int }

// xentDimsOf converts the shared checker's sizes and picks c's chunk.
func xentDimsOf(c nn.CrossEntropy, d nn.XentDims) xentDims {
	x := xentDims{n: d.N, d: d.D, v: d.V, chunk: c.Chunk}
	if x.chunk == 0 {
		x.chunk = DefaultXentChunk
	}
	x.chunk = min(x.chunk, x.v)
	return x
}

// CrossEntropyForward computes the weighted LM-head cross-entropy one
// vocabulary chunk at a time: for each chunk the logits h·E_chunkᵀ [N,chunk]
// come from one GEMM and are folded into each row's running maximum and sum
// of exponentials (in float64). ce [N] gets lse_i − logit_{i,y_i} (0 when
// ignored); the loss Σ w_i·ce_i / Norm is summed in row order in float64.
func (*Backend) CrossEntropyForward(c nn.CrossEntropy, h, emb, ce, lse *nn.Tensor) (float64, error) {
	ck := newChecker("xent fwd")
	x := xentDimsOf(c, nn.CheckCrossEntropyForward(ck, c, h, emb, ce, lse))
	if ck.Err() != nil {
		return 0, ck.Err()
	}
	if h.DType() == runtime.F32 {
		return xentForward(c, x, data[float32](h), data[float32](emb), data[float32](c.Weights), data[float32](ce), data[float32](lse)), nil
	}
	return xentForward(c, x, data[float64](h), data[float64](emb), data[float64](c.Weights), data[float64](ce), data[float64](lse)), nil
}

func xentForward[T Float](c nn.CrossEntropy, x xentDims, h, emb, w, ce, lse []T) float64 {
	n, d, v := x.n, x.d, x.v
	mx := make([]float64, n)
	se := make([]float64, n)
	tgt := make([]float64, n)
	for i := range mx {
		mx[i] = math.Inf(-1)
	}
	buf := make([]T, n*x.chunk)
	for v0 := 0; v0 < v; v0 += x.chunk {
		cw := min(x.chunk, v-v0)
		logits := buf[:n*cw]
		gemm(false, true, n, cw, d, 1, h, max(1, d), emb[v0*d:], max(1, d), 0, logits, cw)
		parallelFor(n, rowGrain(cw), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				row := logits[i*cw : (i+1)*cw]
				m := math.Inf(-1)
				for _, l := range row {
					m = max(m, float64(l))
				}
				if m > mx[i] {
					se[i] *= math.Exp(mx[i] - m)
					mx[i] = m
				}
				s := 0.0
				for _, l := range row {
					s += math.Exp(float64(l) - mx[i])
				}
				se[i] += s
				if y := int(c.Labels[i]); y >= v0 && y < v0+cw {
					tgt[i] = float64(row[y-v0])
				}
			}
		})
	}
	loss := 0.0
	for i := 0; i < n; i++ {
		l := mx[i] + math.Log(se[i])
		if lse != nil {
			lse[i] = T(l)
		}
		if c.Labels[i] == nn.IgnoreIndex {
			ce[i] = 0
			continue
		}
		e := l - tgt[i]
		ce[i] = T(e)
		wi := 1.0
		if w != nil {
			wi = float64(w[i])
		}
		loss += wi * e
	}
	return loss / c.Norm
}

// CrossEntropyBackward recomputes each chunk's logits, forms
// G = coef_i·(softmax − onehot) with coef_i = dLoss·w_i/Norm (0 when ignored),
// and sets dh = Σ_chunks G·E_chunk (overwritten), dEmb_chunk += Gᵀ·h and
// dw_i = dLoss·ce_i/Norm.
func (*Backend) CrossEntropyBackward(c nn.CrossEntropy, h, emb, ce, lse *nn.Tensor, dLoss float64, dh, dEmb, dw *nn.Tensor) error {
	ck := newChecker("xent bwd")
	x := xentDimsOf(c, nn.CheckCrossEntropyBackward(ck, c, h, emb, ce, lse, dh, dEmb, dw))
	if ck.Err() != nil {
		return ck.Err()
	}
	if h.DType() == runtime.F32 {
		xentBackward(c, x, data[float32](h), data[float32](emb), data[float32](c.Weights), data[float32](ce),
			data[float32](lse), dLoss, data[float32](dh), data[float32](dEmb), data[float32](dw))
	} else {
		xentBackward(c, x, data[float64](h), data[float64](emb), data[float64](c.Weights), data[float64](ce),
			data[float64](lse), dLoss, data[float64](dh), data[float64](dEmb), data[float64](dw))
	}
	return nil
}

func xentBackward[T Float](c nn.CrossEntropy, x xentDims, h, emb, w, ce, lse []T, dLoss float64, dh, dEmb, dw []T) {
	n, d, v := x.n, x.d, x.v
	if dw != nil {
		for i := range dw {
			if c.Labels[i] == nn.IgnoreIndex {
				dw[i] = 0
			} else {
				dw[i] = T(dLoss * float64(ce[i]) / c.Norm)
			}
		}
	}
	if dh == nil && dEmb == nil {
		return
	}
	coef := make([]float64, n)
	for i := range coef {
		if c.Labels[i] == nn.IgnoreIndex {
			continue
		}
		wi := 1.0
		if w != nil {
			wi = float64(w[i])
		}
		coef[i] = dLoss * wi / c.Norm
	}
	if dh != nil && d > 0 {
		clear(dh)
	}
	buf := make([]T, n*x.chunk)
	for v0 := 0; v0 < v; v0 += x.chunk {
		cw := min(x.chunk, v-v0)
		g := buf[:n*cw]
		gemm(false, true, n, cw, d, 1, h, max(1, d), emb[v0*d:], max(1, d), 0, g, cw)
		parallelFor(n, rowGrain(cw), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				row := g[i*cw : (i+1)*cw]
				if coef[i] == 0 {
					clear(row)
					continue
				}
				l, yj := float64(lse[i]), int(c.Labels[i])-v0
				for j, z := range row {
					val := coef[i] * math.Exp(float64(z)-l)
					if j == yj {
						val -= coef[i]
					}
					row[j] = T(val)
				}
			}
		})
		if dh != nil {
			gemm(false, false, n, d, cw, 1, g, cw, emb[v0*d:], max(1, d), 1, dh, max(1, d))
		}
		if dEmb != nil {
			gemm(true, false, cw, d, n, 1, g, cw, h, max(1, d), 1, dEmb[v0*d:], max(1, d))
		}
	}
}
