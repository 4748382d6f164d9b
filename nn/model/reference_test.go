package model

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

// This file is an independent, loop-by-loop float64 reference of both
// architectures written from the Hugging Face definitions (GPT2LMHeadModel:
// Conv1D y = x·W + b with W [in,out], q/k/v = column thirds of c_attn;
// Qwen2ForCausalLM: nn.Linear y = x·Wᵀ + b, rotate-half RoPE, repeat_kv
// grouping), with PEFT LoRA y += s·(x·Aᵀ)·Bᵀ. It checks the semantics the
// gradient tests cannot: that the model computes the right function.

type refModel struct {
	t   *testing.T
	m   *Model
	ad  *Adapter
	cfg Config
}

func (r refModel) w(name string) []float64 {
	x, ok := r.m.Params().Get(name)
	require.True(r.t, ok, name)
	return f64(r.t, x)
}

// linear applies module path to rows x [T,in] and returns [T,out].
func (r refModel) linear(path string, x [][]float64, inOut, bias bool) [][]float64 {
	W := r.w(path + ".weight")
	var b []float64
	if bias {
		b = r.w(path + ".bias")
	}
	l := r.m.byPath[path]
	in, out := l.in, l.out
	y := make([][]float64, len(x))
	for t, row := range x {
		y[t] = make([]float64, out)
		for o := 0; o < out; o++ {
			s := 0.0
			for i := 0; i < in; i++ {
				if inOut {
					s += row[i] * W[i*out+o]
				} else {
					s += row[i] * W[o*in+i]
				}
			}
			if b != nil {
				s += b[o]
			}
			y[t][o] = s
		}
	}
	if r.ad != nil {
		if A, B, ok := r.ad.Module(path); ok {
			a, bb, rank, sc := f64(r.t, A), f64(r.t, B), A.Dim(0), r.ad.Config().Scale()
			for t, row := range x {
				xa := make([]float64, rank)
				for k := 0; k < rank; k++ {
					for i := 0; i < in; i++ {
						xa[k] += row[i] * a[k*in+i]
					}
				}
				for o := 0; o < out; o++ {
					for k := 0; k < rank; k++ {
						y[t][o] += sc * xa[k] * bb[o*rank+k]
					}
				}
			}
		}
	}
	return y
}

func refLayerNorm(x [][]float64, g, b []float64, eps float64) [][]float64 {
	y := make([][]float64, len(x))
	for t, row := range x {
		mu, va := 0.0, 0.0
		for _, v := range row {
			mu += v
		}
		mu /= float64(len(row))
		for _, v := range row {
			va += (v - mu) * (v - mu)
		}
		va /= float64(len(row))
		y[t] = make([]float64, len(row))
		for i, v := range row {
			y[t][i] = (v-mu)/math.Sqrt(va+eps)*g[i] + b[i]
		}
	}
	return y
}

func refRMSNorm(x [][]float64, g []float64, eps float64) [][]float64 {
	y := make([][]float64, len(x))
	for t, row := range x {
		ms := 0.0
		for _, v := range row {
			ms += v * v
		}
		ms /= float64(len(row))
		y[t] = make([]float64, len(row))
		for i, v := range row {
			y[t][i] = v / math.Sqrt(ms+eps) * g[i]
		}
	}
	return y
}

// refAttention: q [T][Hq·D], k, v [T][Hkv·D]; causal within segments.
func refAttention(q, k, v [][]float64, cu []int32, hq, hkv, D int) [][]float64 {
	o := make([][]float64, len(q))
	seg := func(t int) int {
		for s := 0; s+1 < len(cu); s++ {
			if t < int(cu[s+1]) {
				return int(cu[s])
			}
		}
		return 0
	}
	for t := range q {
		o[t] = make([]float64, hq*D)
		start := seg(t)
		for h := 0; h < hq; h++ {
			g := h / (hq / hkv)
			scores := make([]float64, t+1-start)
			mx := math.Inf(-1)
			for j := start; j <= t; j++ {
				s := 0.0
				for i := 0; i < D; i++ {
					s += q[t][h*D+i] * k[j][g*D+i]
				}
				s /= math.Sqrt(float64(D))
				scores[j-start] = s
				mx = max(mx, s)
			}
			sum := 0.0
			for i := range scores {
				scores[i] = math.Exp(scores[i] - mx)
				sum += scores[i]
			}
			for j := start; j <= t; j++ {
				p := scores[j-start] / sum
				for i := 0; i < D; i++ {
					o[t][h*D+i] += p * v[j][g*D+i]
				}
			}
		}
	}
	return o
}

func addRows(a, b [][]float64) [][]float64 {
	for t := range a {
		for i := range a[t] {
			a[t][i] += b[t][i]
		}
	}
	return a
}

func (r refModel) logits(b Batch) [][]float64 {
	c := r.cfg
	d, D := c.Hidden, c.HeadDim()
	pos := b.Positions()
	cu := b.cu()
	emb := r.w(map[bool]string{true: gpt2WTE, false: qwenEmbed}[c.ModelType == GPT2])
	x := make([][]float64, b.Len())
	for t, id := range b.IDs {
		x[t] = append([]float64(nil), emb[int(id)*d:(int(id)+1)*d]...)
		if c.ModelType == GPT2 {
			wpe := r.w(gpt2WPE)
			for i := range x[t] {
				x[t][i] += wpe[int(pos[t])*d+i]
			}
		}
	}
	for l := 0; l < c.Layers; l++ {
		p := blockPrefix(c, l)
		if c.ModelType == GPT2 {
			a := refLayerNorm(x, r.w(p+"ln_1.weight"), r.w(p+"ln_1.bias"), c.NormEps)
			qkv := r.linear(p+"attn.c_attn", a, true, true)
			q, k, v := make([][]float64, len(qkv)), make([][]float64, len(qkv)), make([][]float64, len(qkv))
			for t, row := range qkv {
				q[t], k[t], v[t] = row[:d], row[d:2*d], row[2*d:]
			}
			o := refAttention(q, k, v, cu, c.Heads, c.Heads, D)
			x = addRows(x, r.linear(p+"attn.c_proj", o, true, true))
			a2 := refLayerNorm(x, r.w(p+"ln_2.weight"), r.w(p+"ln_2.bias"), c.NormEps)
			f := r.linear(p+"mlp.c_fc", a2, true, true)
			for _, row := range f {
				for i, z := range row {
					row[i] = 0.5 * z * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(z+0.044715*z*z*z)))
				}
			}
			x = addRows(x, r.linear(p+"mlp.c_proj", f, true, true))
		} else {
			a := refRMSNorm(x, r.w(p+"input_layernorm.weight"), c.NormEps)
			q := r.linear(p+"self_attn.q_proj", a, false, true)
			k := r.linear(p+"self_attn.k_proj", a, false, true)
			v := r.linear(p+"self_attn.v_proj", a, false, true)
			rope := func(rows [][]float64, heads int) {
				for t, row := range rows {
					for h := 0; h < heads; h++ {
						hd := row[h*D : (h+1)*D]
						for i := 0; i < D/2; i++ {
							th := float64(pos[t]) / math.Pow(c.RopeTheta, float64(2*i)/float64(D))
							x1, x2 := hd[i], hd[i+D/2]
							hd[i] = x1*math.Cos(th) - x2*math.Sin(th)
							hd[i+D/2] = x2*math.Cos(th) + x1*math.Sin(th)
						}
					}
				}
			}
			rope(q, c.Heads)
			rope(k, c.KVHeads)
			o := refAttention(q, k, v, cu, c.Heads, c.KVHeads, D)
			x = addRows(x, r.linear(p+"self_attn.o_proj", o, false, false))
			a2 := refRMSNorm(x, r.w(p+"post_attention_layernorm.weight"), c.NormEps)
			gate := r.linear(p+"mlp.gate_proj", a2, false, false)
			up := r.linear(p+"mlp.up_proj", a2, false, false)
			for t := range gate {
				for i, g := range gate[t] {
					gate[t][i] = g / (1 + math.Exp(-g)) * up[t][i]
				}
			}
			x = addRows(x, r.linear(p+"mlp.down_proj", gate, false, false))
		}
	}
	var h [][]float64
	if c.ModelType == GPT2 {
		h = refLayerNorm(x, r.w(gpt2LNFW), r.w(gpt2LNFB), c.NormEps)
	} else {
		h = refRMSNorm(x, r.w(qwenNorm), c.NormEps)
	}
	head := f64(r.t, r.m.HeadWeight())
	out := make([][]float64, len(h))
	for t, row := range h {
		out[t] = make([]float64, c.Vocab)
		for v := 0; v < c.Vocab; v++ {
			for i := 0; i < d; i++ {
				out[t][v] += row[i] * head[v*d+i]
			}
		}
	}
	return out
}

// TestForwardMatchesReference compares logits (and the fused loss) with the
// loop reference on packed batches, adapters applied.
func TestForwardMatchesReference(t *testing.T) {
	for k, cfg := range []Config{tinyGPT2(2), tinyQwen2(2, false), tinyQwen2(1, true)} {
		t.Run(cfg.ModelType, func(t *testing.T) {
			m := randomModel(t, cfg, uint64(100+k))
			ad := randomAdapter(t, m, uint64(110+k), 0)
			batch := packed(newRNG(uint64(120+k)), cfg.Vocab)
			want := refModel{t: t, m: m, ad: ad, cfg: cfg}.logits(batch)

			p, err := m.Forward(batch, Options{Adapter: ad})
			require.NoError(t, err)
			defer p.Release()
			got, err := p.Logits(2, 9)
			require.NoError(t, err)
			require.Equal(t, []int{7, cfg.Vocab}, got.Shape())
			g := f64(t, got)
			for tk := 2; tk < 9; tk++ {
				for v := 0; v < cfg.Vocab; v++ {
					require.InDelta(t, want[tk][v], g[(tk-2)*cfg.Vocab+v], 1e-11*(1+math.Abs(want[tk][v])), "token %d vocab %d", tk, v)
				}
			}

			// The fused loss equals the mean CE computed from the reference logits.
			labels := batch.CausalLabels()
			loss, err := p.Loss(Targets{Labels: labels})
			require.NoError(t, err)
			sum, n := 0.0, 0
			for tk, y := range labels {
				if y == nn.IgnoreIndex {
					continue
				}
				mx := math.Inf(-1)
				for _, z := range want[tk] {
					mx = max(mx, z)
				}
				se := 0.0
				for _, z := range want[tk] {
					se += math.Exp(z - mx)
				}
				sum += mx + math.Log(se) - want[tk][y]
				n++
			}
			require.InDelta(t, sum/float64(n), loss, 1e-11)
		})
	}
}
