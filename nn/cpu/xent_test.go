package cpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

// naiveXent materialises all N×V logits.
func naiveXent(n, d, v int, h, e []float64, labels []int32, w []float64, norm float64) (loss float64, ce, lse []float64) {
	ce = make([]float64, n)
	lse = make([]float64, n)
	for i := 0; i < n; i++ {
		logits := make([]float64, v)
		m := math.Inf(-1)
		for j := 0; j < v; j++ {
			for c := 0; c < d; c++ {
				logits[j] += h[i*d+c] * e[j*d+c]
			}
			m = max(m, logits[j])
		}
		z := 0.0
		for _, l := range logits {
			z += math.Exp(l - m)
		}
		lse[i] = m + math.Log(z)
		if labels[i] == nn.IgnoreIndex {
			continue
		}
		ce[i] = lse[i] - logits[labels[i]]
		wi := 1.0
		if w != nil {
			wi = w[i]
		}
		loss += wi * ce[i]
	}
	return loss / norm, ce, lse
}

func TestCrossEntropy(t *testing.T) {
	be := New()
	rng := newRNG(11)
	const n, d, v = 23, 7, 53
	h, hv := rand64(t, rng, n, d)
	for i := range hv {
		hv[i] *= 3 // logits of a few units
	}
	e, ev := rand64(t, rng, v, d)
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(rng.IntN(v))
		if i%5 == 3 {
			labels[i] = nn.IgnoreIndex
		}
	}
	labels[0], labels[1] = 0, v-1 // first and last vocabulary rows
	w, wv := rand64(t, rng, n)
	for i := range wv {
		wv[i] = math.Abs(wv[i]) + 0.1
	}
	const norm = 17.0
	for _, weighted := range []bool{false, true} {
		var wt *nn.Tensor
		var wvv []float64
		if weighted {
			wt, wvv = w, wv
		}
		wantLoss, wantCE, wantLSE := naiveXent(n, d, v, hv, ev, labels, wvv, norm)
		for _, chunk := range []int{0, 1, 5, 16, 52, 53, 1000} {
			t.Run(fmt.Sprintf("weighted=%v/chunk=%d", weighted, chunk), func(t *testing.T) {
				c := nn.CrossEntropy{Labels: labels, Weights: wt, Norm: norm, Chunk: chunk}
				ce, cev := nan64(t, n)
				lse, lsev := nan64(t, n)
				loss, err := be.CrossEntropyForward(c, h, e, ce, lse)
				require.NoError(t, err)
				require.InEpsilon(t, wantLoss, loss, 1e-13)
				requireClose(t, cev, wantCE, 1e-13, "ce")
				requireClose(t, lsev, wantLSE, 1e-13, "lse")

				c32 := c
				c32.Weights = to32(t, wt)
				ce32, lse32 := to32(t, ce), to32(t, lse)
				loss32, err := be.CrossEntropyForward(c32, to32(t, h), to32(t, e), ce32, lse32)
				require.NoError(t, err)
				require.InEpsilon(t, wantLoss, loss32, f32Tol)
				requireClose(t, as64(t, ce32), wantCE, f32Tol, "f32 ce")

				const dLoss = 0.7
				dh, dhv := nan64(t, n, d)
				dE, dEv := rand64(t, rng, v, d)
				e0 := append([]float64(nil), dEv...)
				dw, dwv := nan64(t, n)
				require.NoError(t, be.CrossEntropyBackward(c, h, e, ce, lse, dLoss, dh, dE, dw))
				lossFn := func() []float64 {
					_, ce, _ := naiveXent(n, d, v, hv, ev, labels, wvv, norm)
					out := make([]float64, n) // per-token terms of dLoss·loss
					for i := range ce {
						wi := 1.0
						if wvv != nil {
							wi = wvv[i]
						}
						out[i] = dLoss * wi * ce[i] / norm
					}
					return out
				}
				checkGrad(t, rng, "dh", hv, dhv, lossFn)
				checkGrad(t, rng, "dE", ev, sub(dEv, e0), lossFn)
				if weighted {
					checkGrad(t, rng, "dw", wv, dwv, lossFn)
				}
				for i, l := range labels {
					if l == nn.IgnoreIndex {
						require.Zero(t, dwv[i])
						require.Zero(t, cev[i])
					}
				}
			})
		}
	}
}

// Different chunkings agree to rounding, on a larger vocabulary.
func TestCrossEntropyChunksAgree(t *testing.T) {
	be := New()
	rng := newRNG(12)
	const n, d, v = 40, 16, 3001
	h, _ := rand64(t, rng, n, d)
	e, _ := rand64(t, rng, v, d)
	labels := make([]int32, n)
	for i := range labels {
		labels[i] = int32(rng.IntN(v))
	}
	var refCE, refDh, refDE []float64
	var refLoss float64
	for _, chunk := range []int{v, 1, 7, 256, 1000, 2048} {
		c := nn.CrossEntropy{Labels: labels, Norm: n, Chunk: chunk}
		ce, cev := nan64(t, n)
		lse, _ := nan64(t, n)
		loss, err := be.CrossEntropyForward(c, h, e, ce, lse)
		require.NoError(t, err)
		dh, dhv := nan64(t, n, d)
		dE, dEv := zeros64(t, v, d)
		require.NoError(t, be.CrossEntropyBackward(c, h, e, ce, lse, 1, dh, dE, nil))
		if refCE == nil {
			refLoss, refCE, refDh, refDE = loss, cev, dhv, dEv
			continue
		}
		require.InEpsilon(t, refLoss, loss, 1e-14, "chunk %d", chunk)
		requireClose(t, cev, refCE, 1e-14, fmt.Sprintf("ce chunk %d", chunk))
		requireClose(t, dhv, refDh, 1e-13, fmt.Sprintf("dh chunk %d", chunk))
		requireClose(t, dEv, refDE, 1e-13, fmt.Sprintf("dE chunk %d", chunk))
	}
}
