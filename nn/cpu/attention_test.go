package cpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

// naiveAttention computes o and lse with plain loops, one query at a time.
func naiveAttention(cu []int32, causal bool, scale float64, t, hq, hkv, d int, q, k, v []float64) (o, lse []float64) {
	o = make([]float64, t*hq*d)
	lse = make([]float64, hq*t)
	for s := 0; s+1 < len(cu); s++ {
		s0, s1 := int(cu[s]), int(cu[s+1])
		for h := 0; h < hq; h++ {
			g := h / (hq / hkv)
			for i := s0; i < s1; i++ {
				var sc []float64
				var js []int
				for j := s0; j < s1; j++ {
					if causal && j > i {
						continue
					}
					x := 0.0
					for c := 0; c < d; c++ {
						x += q[(i*hq+h)*d+c] * k[(j*hkv+g)*d+c]
					}
					sc = append(sc, scale*x)
					js = append(js, j)
				}
				m := math.Inf(-1)
				for _, x := range sc {
					m = max(m, x)
				}
				z := 0.0
				for _, x := range sc {
					z += math.Exp(x - m)
				}
				for n, j := range js {
					p := math.Exp(sc[n]-m) / z
					for c := 0; c < d; c++ {
						o[(i*hq+h)*d+c] += p * v[(j*hkv+g)*d+c]
					}
				}
				lse[h*t+i] = m + math.Log(z)
			}
		}
	}
	return o, lse
}

func TestAttention(t *testing.T) {
	be := New()
	rng := newRNG(4)
	cases := []struct {
		segs        []int
		hq, hkv, d  int
		causal      bool
		scale       float64
		description string
	}{
		{[]int{1, 7, 13}, 4, 2, 8, true, 0, "GQA 4:2"},
		{[]int{1, 7, 13}, 14, 2, 4, true, 0, "GQA 14:2"},
		{[]int{5, 1, 11}, 3, 3, 6, false, 0, "MHA non-causal"},
		{[]int{37}, 2, 1, 5, true, 0.37, "one segment, MQA, explicit scale"},
		{[]int{0, 3, 0, 2}, 2, 2, 2, true, 0, "empty segments"},
	}
	// Random packings: 1–4 segments of 1–20 tokens, ratios Hq:Hkv up to 4:1.
	for i := 0; i < 6; i++ {
		segs := make([]int, 1+rng.IntN(4))
		for j := range segs {
			segs[j] = 1 + rng.IntN(20)
		}
		hkv := 1 + rng.IntN(3)
		cases = append(cases, struct {
			segs        []int
			hq, hkv, d  int
			causal      bool
			scale       float64
			description string
		}{segs, hkv * (1 + rng.IntN(4)), hkv, 1 + rng.IntN(9), rng.IntN(4) != 0, 0, fmt.Sprintf("random %d", i)})
	}
	for _, c := range cases {
		name := fmt.Sprintf("%s/segs=%v,hq=%d,hkv=%d,d=%d,causal=%v", c.description, c.segs, c.hq, c.hkv, c.d, c.causal)
		t.Run(name, func(t *testing.T) {
			cu := []int32{0}
			for _, l := range c.segs {
				cu = append(cu, cu[len(cu)-1]+int32(l))
			}
			T := int(cu[len(cu)-1])
			a := nn.Attention{CuSeqlens: cu, Causal: c.causal, Scale: c.scale}
			scale := c.scale
			if scale == 0 {
				scale = 1 / math.Sqrt(float64(c.d))
			}
			// Scores of O(1–3) exercise the softmax beyond its linear regime.
			q, qv := rand64(t, rng, T, c.hq, c.d)
			for i := range qv {
				qv[i] *= 3
			}
			k, kv := rand64(t, rng, T, c.hkv, c.d)
			v, vv := rand64(t, rng, T, c.hkv, c.d)
			o, ov := nan64(t, T, c.hq, c.d)
			lse, lsev := nan64(t, c.hq, T)
			require.NoError(t, be.AttentionForward(a, q, k, v, o, lse))
			wantO, wantL := naiveAttention(cu, c.causal, scale, T, c.hq, c.hkv, c.d, qv, kv, vv)
			requireClose(t, ov, wantO, 1e-13, "o")
			requireClose(t, lsev, wantL, 1e-13, "lse")

			o32, lse32 := to32(t, o), to32(t, lse)
			require.NoError(t, be.AttentionForward(a, to32(t, q), to32(t, k), to32(t, v), o32, lse32))
			requireClose(t, as64(t, o32), wantO, f32Tol, "f32 o")
			requireClose(t, as64(t, lse32), wantL, f32Tol, "f32 lse")

			_, cov := rand64(t, rng, T, c.hq, c.d)
			do := t64(t, cov, T, c.hq, c.d)
			dq, dqv := nan64(t, T, c.hq, c.d)
			dk, dkv := nan64(t, T, c.hkv, c.d)
			dv, dvv := nan64(t, T, c.hkv, c.d)
			require.NoError(t, be.AttentionBackward(a, q, k, v, o, lse, do, dq, dk, dv))
			loss := func() []float64 {
				o, _ := naiveAttention(cu, c.causal, scale, T, c.hq, c.hkv, c.d, qv, kv, vv)
				return terms(cov, o)
			}
			if T > 0 {
				checkGrad(t, rng, "dq", qv, dqv, loss)
				checkGrad(t, rng, "dk", kv, dkv, loss)
				checkGrad(t, rng, "dv", vv, dvv, loss)
			}
		})
	}
}
