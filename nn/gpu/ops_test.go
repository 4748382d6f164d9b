package gpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// Op-level parity: every Backend method on the gpu backend (F32 and BF16
// storage) against nn/cpu in float64 on the same rounded inputs. Outputs
// that ops overwrite start as NaN on the gpu side; accumulated gradients
// start from the same random values on both.

func TestTensorsRoundTrip(t *testing.T) {
	b := testBackend(t)
	before := b.Stats().InUse
	for _, dt := range dtypes {
		v := []float32{1, -2.5, 3.1415927, 1e-3, 65504.5, float32(math.Inf(1))}
		h, err := nn.FromF32(v, 2, 3)
		require.NoError(t, err)
		g, err := b.FromHost(h, dt)
		require.NoError(t, err)
		require.Equal(t, []int{2, 3}, g.Shape())
		require.Equal(t, dt, g.DType())
		require.Equal(t, b.Device().Kind(), g.Device())
		back := host(t, b, g)
		for i, x := range v {
			require.Equal(t, runtime.Round(dt, float64(x)), back[i], "%v element %d", dt, i)
		}
		// Views share storage; Release frees it once.
		view, err := g.Reshape(3, 2)
		require.NoError(t, err)
		require.Equal(t, back, host(t, b, view))
		z, err := b.Alloc(dt, 4, 5)
		require.NoError(t, err)
		require.Equal(t, make([]float64, 20), host(t, b, z))
		require.NoError(t, b.Release(z))
		require.NoError(t, b.Release(g))
		require.ErrorContains(t, b.Release(view), "already released")
		_, err = b.ToHost(view)
		require.ErrorContains(t, err, "gpu tohost: t was released")
		require.ErrorContains(t, b.Zero(view), "zero: x was released")
	}
	require.Equal(t, before, b.Stats().InUse, "pool bytes in use after releasing everything")

	_, err := b.Alloc(runtime.F64, 3)
	require.ErrorContains(t, err, "dtype F64 is not supported: the gpu backend stores F32 and BF16")
	h64, err := nn.FromF64([]float64{1, 2}, 2)
	require.NoError(t, err)
	_, err = b.FromHost(h64, runtime.F64)
	require.ErrorContains(t, err, "dtype F64 is not supported")
	g, err := b.FromHost(h64, runtime.F32) // F64 host data to an F32 device tensor
	require.NoError(t, err)
	require.Equal(t, []float64{1, 2}, host(t, b, g))
	_, err = b.FromHost(g, runtime.F32)
	require.ErrorContains(t, err, "want a host (cpu) tensor")
	require.NoError(t, b.Release(g))
	require.ErrorContains(t, b.Release(h64), "not a tensor of this backend")
}

func TestOpsElementwise(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 1)
		n := 1037
		x, y := e.rand(2, 17, 61), e.rand(2, 17, 61)

		z := e.out(n)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Zero(p(z)) })
		e.checkElem("zero", z)

		c := e.out(61, 17)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Copy(p(c), p(x)) })
		e.checkElem("copy", c)

		sum := e.out(17, 61)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Add(p(x), p(y), p(sum)) })
		e.checkElem("add", sum)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Add(p(x), p(sum), p(sum)) }) // out aliases b
		e.check("add in place", sum)

		acc := e.rand(1, 17, 61)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Axpy(-0.37, p(x), p(acc)) })
		e.check("axpy", acc)

		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.Scale(1.7, p(acc)) })
		e.checkElem("scale", acc)

		dst := e.rand(1, 17, 40)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.CopyColumns(p(dst), 7, p(x), 30, 23) })
		e.checkElem("copycolumns", dst)
	}
}

// matmulScale is |alpha|·|op(a)|·|op(b)| + |beta·c0|: the error scale of
// each element of a product.
func (e *env) matmulScale(transA, transB bool, alpha float64, a, b *pair, beta float64, c0 []float64, m, n int) []float64 {
	e.t.Helper()
	ta, err := nn.FromF64(abs(a.v), a.shape...)
	require.NoError(e.t, err)
	tb, err := nn.FromF64(abs(b.v), b.shape...)
	require.NoError(e.t, err)
	tc, err := nn.FromF64(abs(c0), m, n)
	require.NoError(e.t, err)
	require.NoError(e.t, e.c.MatMul(transA, transB, math.Abs(alpha), ta, tb, math.Abs(beta), tc))
	v, _ := tc.F64()
	return v
}

func TestOpsMatMul(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 2)
		for _, s := range [][3]int{{1, 1, 1}, {37, 45, 70}, {65, 3, 129}, {5, 80, 0}} {
			m, n, k := s[0], s[1], s[2]
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					as, bs := []int{m, k}, []int{k, n}
					if ta {
						as = []int{k, m}
					}
					if tb {
						bs = []int{n, k}
					}
					a, b := e.rand(1, as...), e.rand(1, bs...)
					name := fmt.Sprintf("matmul ta=%v tb=%v", ta, tb)
					c := e.out(m, n)
					e.both(func(be nn.Backend, p func(*pair) *nn.Tensor) error { return be.MatMul(ta, tb, 1, p(a), p(b), 0, p(c)) })
					e.checkScaled(name, c, e.matmulScale(ta, tb, 1, a, b, 0, make([]float64, m*n), m, n))
					c2 := e.rand(1, m, n)
					c0 := append([]float64(nil), c2.v...)
					e.both(func(be nn.Backend, p func(*pair) *nn.Tensor) error {
						return be.MatMul(ta, tb, -0.5, p(a), p(b), 1.25, p(c2))
					})
					e.checkScaled(name+" beta", c2, e.matmulScale(ta, tb, -0.5, a, b, 1.25, c0, m, n))
				}
			}
		}
	}
}

func TestOpsLoRALinear(t *testing.T) {
	const n, in, out, r = 37, 45, 29, 5
	for _, dt := range dtypes {
		for _, inOut := range []bool{false, true} {
			for _, p := range []float64{0, 0.3} {
				e := newEnv(t, dt, 3)
				wShape := []int{out, in}
				if inOut {
					wShape = []int{in, out}
				}
				x := e.rand(1, n, in)
				W, bias := e.rand(0.3, wShape...), e.rand(0.5, out)
				A, B := e.rand(0.3, r, in), e.rand(0.3, out, r)
				layer := func(px func(*pair) *nn.Tensor) nn.LoRALinear {
					return nn.LoRALinear{W: px(W), WInOut: inOut, Bias: px(bias), A: px(A), B: px(B), Scale: 1.7,
						Dropout: nn.Dropout{P: p, Seed: 0x5eed, Step: 3, TensorID: 2}}
				}
				name := fmt.Sprintf("lora inOut=%v p=%v", inOut, p)
				y, xa := e.out(n, out), e.out(n, r)
				e.both(func(b nn.Backend, px func(*pair) *nn.Tensor) error {
					return b.LoRALinearForward(layer(px), px(x), px(y), px(xa))
				})
				e.check(name+" fwd y", y)
				e.check(name+" fwd xa", xa)
				y2 := e.out(n, out) // xa not saved
				e.both(func(b nn.Backend, px func(*pair) *nn.Tensor) error {
					return b.LoRALinearForward(layer(px), px(x), px(y2), nil)
				})
				e.check(name+" fwd y (no xa)", y2)

				dy := e.rand(1, n, out)
				for _, saved := range []bool{true, false} {
					dx := e.out(n, in)
					dA, dB, dW, db := e.rand(0.1, r, in), e.rand(0.1, out, r), e.rand(0.1, wShape...), e.rand(0.1, out)
					e.both(func(b nn.Backend, px func(*pair) *nn.Tensor) error {
						var xaT *nn.Tensor
						if saved {
							xaT = px(xa)
						}
						return b.LoRALinearBackward(layer(px), px(x), xaT, px(dy),
							nn.LoRAGrads{DX: px(dx), DA: px(dA), DB: px(dB), DW: px(dW), DBias: px(db)})
					})
					for _, c := range []struct {
						n string
						p *pair
					}{{"dx", dx}, {"dA", dA}, {"dB", dB}, {"dW", dW}, {"dBias", db}} {
						e.check(fmt.Sprintf("%s bwd %s", name, c.n), c.p)
					}
				}
			}
		}
		// A plain linear layer (no adapter, no bias).
		e := newEnv(t, dt, 4)
		x, W := e.rand(1, 9, 20), e.rand(0.3, 11, 20)
		y, dy, dx, dW := e.out(9, 11), e.rand(1, 9, 11), e.out(9, 20), e.rand(0.1, 11, 20)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			if err := b.LoRALinearForward(nn.LoRALinear{W: p(W)}, p(x), p(y), nil); err != nil {
				return err
			}
			return b.LoRALinearBackward(nn.LoRALinear{W: p(W)}, p(x), nil, p(dy), nn.LoRAGrads{DX: p(dx), DW: p(dW)})
		})
		e.check("linear fwd", y)
		e.check("linear bwd dx", dx)
		e.check("linear bwd dW", dW)
	}
}

func TestOpsAttention(t *testing.T) {
	cases := []struct {
		d, hq, hkv int
		cu         []int32
		causal     bool
		scale      float64
	}{
		{16, 4, 2, []int32{0, 1, 6, 6, 29}, true, 0},
		{8, 4, 4, []int32{0, 13, 40}, true, 0}, // padded to 16
		{64, 2, 1, []int32{0, 21, 33}, false, 0.3},
		{40, 3, 1, []int32{0, 17}, true, 0}, // padded to 64
	}
	for _, dt := range dtypes {
		for _, c := range cases {
			e := newEnv(t, dt, 5)
			T := int(c.cu[len(c.cu)-1])
			name := fmt.Sprintf("attention D=%d Hq=%d Hkv=%d causal=%v", c.d, c.hq, c.hkv, c.causal)
			q, k, v := e.rand(1, T, c.hq, c.d), e.rand(1, T, c.hkv, c.d), e.rand(1, T, c.hkv, c.d)
			a := nn.Attention{CuSeqlens: c.cu, Causal: c.causal, Scale: c.scale}
			o, lse := e.out(T, c.hq, c.d), e.out(c.hq, T)
			e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
				return b.AttentionForward(a, p(q), p(k), p(v), p(o), p(lse))
			})
			e.check(name+" fwd o", o)
			e.check(name+" fwd lse", lse)
			do := e.rand(1, T, c.hq, c.d)
			dq, dk, dv := e.out(T, c.hq, c.d), e.out(T, c.hkv, c.d), e.out(T, c.hkv, c.d)
			e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
				return b.AttentionBackward(a, p(q), p(k), p(v), p(o), p(lse), p(do), p(dq), p(dk), p(dv))
			})
			e.check(name+" bwd dq", dq)
			e.check(name+" bwd dk", dk)
			e.check(name+" bwd dv", dv)
			// Only dv wanted.
			dv2 := e.out(T, c.hkv, c.d)
			e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
				return b.AttentionBackward(a, p(q), p(k), p(v), p(o), p(lse), p(do), nil, nil, p(dv2))
			})
			e.check(name+" bwd dv only", dv2)
		}
	}
}

func TestOpsNorms(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 6)
		const rows, c = 70, 45
		x, gamma, beta := e.rand(2, 7, 10, c), e.rand(1, c), e.rand(1, c)
		for i := range x.v { // an offset, so that the mean matters
			x.v[i] += 0.5
		}
		x = e.vals(x.v, 7, 10, c)
		y, mean, rstd := e.out(7, 10, c), e.out(rows), e.out(rows)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.LayerNormForward(p(x), p(gamma), p(beta), 1e-5, p(y), p(mean), p(rstd))
		})
		e.check("layernorm fwd y", y)
		e.check("layernorm fwd mean", mean)
		e.check("layernorm fwd rstd", rstd)
		y2 := e.out(7, 10, c)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.LayerNormForward(p(x), p(gamma), nil, 1e-5, p(y2), nil, nil)
		})
		e.check("layernorm fwd no beta", y2)
		dy := e.rand(1, 7, 10, c)
		dx, dg, db := e.out(7, 10, c), e.rand(1, c), e.rand(1, c)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.LayerNormBackward(p(x), p(gamma), p(mean), p(rstd), p(dy), p(dx), p(dg), p(db))
		})
		e.check("layernorm bwd dx", dx)
		e.check("layernorm bwd dgamma", dg)
		e.check("layernorm bwd dbeta", db)

		yr, rs := e.out(7, 10, c), e.out(7, 10)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.RMSNormForward(p(x), p(gamma), 1e-6, p(yr), p(rs))
		})
		e.check("rmsnorm fwd y", yr)
		e.check("rmsnorm fwd rstd", rs)
		dxr, dgr := e.out(7, 10, c), e.rand(1, c)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.RMSNormBackward(p(x), p(gamma), p(rs), p(dy), p(dxr), p(dgr))
		})
		e.check("rmsnorm bwd dx", dxr)
		e.check("rmsnorm bwd dgamma", dgr)
		dx3 := e.out(7, 10, c) // dx only
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.RMSNormBackward(p(x), p(gamma), p(rs), p(dy), p(dx3), nil)
		})
		e.check("rmsnorm bwd dx only", dx3)
	}
}

func TestOpsActivations(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 7)
		x, dy := e.rand(4, 33, 31), e.rand(1, 33, 31)
		y, dx := e.out(33, 31), e.out(33, 31)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			if err := b.GELUForward(p(x), p(y)); err != nil {
				return err
			}
			return b.GELUBackward(p(x), p(dy), p(dx))
		})
		e.checkElem("gelu fwd", y)
		e.check("gelu bwd", dx)
		g, u := e.rand(4, 1023), e.rand(2, 1023)
		s, dg, du := e.out(1023), e.out(1023), e.out(1023)
		dy2 := e.rand(1, 1023)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			if err := b.SwiGLUForward(p(g), p(u), p(s)); err != nil {
				return err
			}
			return b.SwiGLUBackward(p(g), p(u), p(dy2), p(dg), p(du))
		})
		e.checkElem("swiglu fwd", s)
		e.check("swiglu bwd dgate", dg)
		e.check("swiglu bwd dup", du)
		// In place: y aliases gate, dGate aliases dy.
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			if err := b.SwiGLUBackward(p(g), p(u), p(dy2), p(dy2), nil); err != nil {
				return err
			}
			return b.SwiGLUForward(p(g), p(u), p(g))
		})
		e.check("swiglu in place", g)
		e.check("swiglu bwd in place", dy2)
	}
}

func TestOpsRoPE(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 8)
		const T, H, D = 47, 3, 24
		pos := make([]int32, T)
		for i := range pos {
			pos[i] = int32(i % 40) // segments restart; positions ≤ 39
		}
		x := e.rand(1, T, H, D)
		y := e.out(T, H, D)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.RoPEForward(p(x), pos, 1e4, p(y)) })
		e.check("rope fwd", y)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error { return b.RoPEBackward(p(y), pos, 1e4, p(y)) }) // in place
		e.check("rope bwd in place", y)
	}
}

func TestOpsEmbedding(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 9)
		const V, P, d = 23, 16, 19
		ids := []int32{3, 0, 22, 3, 3, 7, 0, 15, 22, 1, 3}
		pos := []int32{0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 15}
		table, ptab := e.rand(1, V, d), e.rand(1, P, d)
		y, y2 := e.out(len(ids), d), e.out(len(ids), d)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			if err := b.EmbeddingForward(ids, p(table), pos, p(ptab), p(y)); err != nil {
				return err
			}
			return b.EmbeddingForward(ids, p(table), nil, nil, p(y2))
		})
		e.check("embedding fwd", y)
		e.checkElem("embedding fwd no pos", y2)
		dy := e.rand(1, len(ids), d)
		dT, dP := e.rand(0.1, V, d), e.rand(0.1, P, d)
		e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
			return b.EmbeddingBackward(ids, pos, p(dy), p(dT), p(dP))
		})
		e.check("embedding bwd dtable", dT)
		e.check("embedding bwd dpos", dP)
	}
}

func TestOpsCrossEntropy(t *testing.T) {
	for _, dt := range dtypes {
		for _, chunk := range []int{0, 64} {
			e := newEnv(t, dt, 10)
			const N, V, d = 29, 150, 40
			h, emb := e.rand(1, N, d), e.rand(1, V, d)
			labels := make([]int32, N)
			for i := range labels {
				labels[i] = int32(e.rng.IntN(V))
				if i%5 == 2 {
					labels[i] = nn.IgnoreIndex
				}
			}
			w := e.rand(1, N)
			for i := range w.v {
				w.v[i] = math.Abs(w.v[i]) + 0.1
			}
			w = e.vals(w.v, N)
			for _, weighted := range []bool{false, true} {
				name := fmt.Sprintf("xent chunk=%d weighted=%v", chunk, weighted)
				xc := func(p func(*pair) *nn.Tensor) nn.CrossEntropy {
					c := nn.CrossEntropy{Labels: labels, Norm: 23, Chunk: chunk}
					if weighted {
						c.Weights = p(w)
					}
					return c
				}
				ce, lse := e.out(N), e.out(N)
				var loss [2]float64
				i := 0
				e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
					var err error
					loss[i], err = b.CrossEntropyForward(xc(p), p(h), p(emb), p(ce), p(lse))
					i++
					return err
				})
				s := 0.0 // Σ w·|ce|/norm
				for j, c := range e.want(ce) {
					wj := 1.0
					if weighted {
						wj = w.v[j]
					}
					s += math.Abs(wj*c) / 23
				}
				e.checkScalar(name+" loss", loss[1], loss[0], s)
				e.check(name+" fwd ce", ce)
				e.check(name+" fwd lse", lse)
				dh, dE, dw := e.out(N, d), e.rand(0.1, V, d), e.out(N)
				e.both(func(b nn.Backend, p func(*pair) *nn.Tensor) error {
					return b.CrossEntropyBackward(xc(p), p(h), p(emb), p(ce), p(lse), 0.7, p(dh), p(dE), p(dw))
				})
				e.check(name+" bwd dh", dh)
				e.check(name+" bwd demb", dE)
				e.check(name+" bwd dw", dw)
			}
		}
	}
}

func TestOpsOptimizers(t *testing.T) {
	e := newEnv(t, runtime.F32, 11)
	sizes := [][]int{{13, 7}, {1}, {2049}}
	var p, g, m, v, dp, dm, dv, dg []*pair
	for _, s := range sizes {
		p = append(p, e.rand(1, s...))
		g = append(g, e.rand(1, s...))
		m = append(m, e.rand(0.1, s...))
		vv := e.rand(0.01, s...)
		for i := range vv.v {
			vv.v[i] = math.Abs(vv.v[i])
		}
		vv.v[0] = 0 // exercises v̂ = 0 after the update only when g = 0 too
		v = append(v, e.vals(vv.v, s...))
		dp = append(dp, e.rand(1, s...))
		dm = append(dm, e.rand(1, s...))
		dv = append(dv, e.rand(1, s...))
		dg = append(dg, e.out(s...))
	}
	list := func(ps []*pair, x func(*pair) *nn.Tensor) []*nn.Tensor {
		out := make([]*nn.Tensor, len(ps))
		for i, q := range ps {
			out[i] = x(q)
		}
		return out
	}
	// β2 = 0.95 as in the optim kernel tests: the kernels take β1, β2 as f32
	// and form 1−β on the device, and float32(0.999) puts a relative error of
	// 1.3e-5 into 1−β2, above the f32 tolerance for ḡ's 2(1−β2)·g·v̄ term.
	o := nn.AdamW{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.01}
	lrs := []float64{1e-2, 3e-3, 0.1}
	var dLR [2][]float64
	i := 0
	e.both(func(b nn.Backend, x func(*pair) *nn.Tensor) error {
		dLR[i] = make([]float64, len(lrs))
		err := b.AdamWStepVJP(o, 3, lrs, list(p, x), list(g, x), list(m, x), list(v, x), list(dp, x), list(dm, x), list(dv, x), list(dg, x), dLR[i])
		i++
		return err
	})
	// Error scales: the magnitudes of the terms of each adjoint (they cancel
	// where v is tiny), as the optim kernel tests use.
	bc1, bc2s := 1-math.Pow(o.Beta1, 3), math.Sqrt(1-math.Pow(o.Beta2, 3))
	lrScale := make([]float64, len(sizes))
	for j := range sizes {
		var sc [4][]float64
		for k := range p[j].v {
			pbar, lr := dp[j].v[k], lrs[j]
			ms, vs, u := math.Abs(dm[j].v[k]), math.Abs(dv[j].v[k]), 0.0
			if vk := v[j].v[k]; vk > 0 {
				sv := math.Sqrt(vk)
				den := sv/bc2s + o.Eps
				ms += math.Abs(pbar * lr / (bc1 * den))
				vs += math.Abs(pbar * lr * m[j].v[k] / bc1 / (den * den * 2 * sv * bc2s))
				u = m[j].v[k] / bc1 / den
			}
			sc[0] = append(sc[0], math.Abs(pbar*(1-lr*o.WeightDecay)))
			sc[1] = append(sc[1], o.Beta1*ms)
			sc[2] = append(sc[2], o.Beta2*vs)
			sc[3] = append(sc[3], (1-o.Beta1)*ms+2*(1-o.Beta2)*math.Abs(g[j].v[k])*vs)
			lrScale[j] += math.Abs(pbar * (-o.WeightDecay*p[j].v[k] - u))
		}
		e.checkScaled("adamw vjp dparams", dp[j], sc[0])
		e.checkScaled("adamw vjp dm", dm[j], sc[1])
		e.checkScaled("adamw vjp dv", dv[j], sc[2])
		e.checkScaled("adamw vjp dgrads", dg[j], sc[3])
	}
	for j := range lrs {
		e.checkScalar("adamw vjp dlrs", dLR[1][j], dLR[0][j], lrScale[j])
	}
	e.both(func(b nn.Backend, x func(*pair) *nn.Tensor) error {
		return b.AdamWStep(o, 3, lrs, list(p, x), list(g, x), list(m, x), list(v, x))
	})
	for j := range sizes {
		e.check("adamw step params", p[j])
		e.check("adamw step m", m[j])
		e.check("adamw step v", v[j])
	}
	// Again with the same tensors: the cached multi-tensor table is reused.
	e.both(func(b nn.Backend, x func(*pair) *nn.Tensor) error {
		return b.AdamWStep(o, 4, lrs, list(p, x), list(g, x), list(m, x), list(v, x))
	})
	for j := range sizes {
		e.check("adamw step params", p[j])
	}
	i = 0
	e.both(func(b nn.Backend, x func(*pair) *nn.Tensor) error {
		dLR[i] = make([]float64, len(lrs))
		err := b.SGDStepVJP(0.05, lrs, list(p, x), list(g, x), list(dp, x), list(dg, x), dLR[i])
		i++
		return err
	})
	for j := range sizes {
		e.check("sgd vjp dparams", dp[j])
		e.check("sgd vjp dgrads", dg[j])
	}
	e.checkVals("sgd vjp dlrs", dLR[1], dLR[0])
	e.both(func(b nn.Backend, x func(*pair) *nn.Tensor) error {
		return b.SGDStep(0.05, lrs, list(p, x), list(g, x))
	})
	for j := range sizes {
		e.check("sgd step params", p[j])
	}
	// BF16 tensors are refused, not silently mishandled.
	eb := newEnv(t, runtime.BF16, 12)
	q := eb.rand(1, 4)
	require.ErrorContains(t, eb.g.SGDStep(0, []float64{1}, []*nn.Tensor{q.g}, []*nn.Tensor{q.g}),
		"sgd step: params[0] has dtype BF16; the gpu backend runs this op on F32 tensors only")
}

func TestOpsReductions(t *testing.T) {
	for _, dt := range dtypes {
		e := newEnv(t, dt, 13)
		a, b, c := e.rand(1, 3001), e.rand(1, 3001), e.rand(2, 17, 3)
		var r [2][5]float64
		i := 0
		e.both(func(be nn.Backend, p func(*pair) *nn.Tensor) error {
			var err error
			if r[i][0], err = be.Sum(p(a)); err != nil {
				return err
			}
			if r[i][1], err = be.Dot(p(a), p(b)); err != nil {
				return err
			}
			if r[i][2], err = be.SumSquares([]*nn.Tensor{p(a), p(c)}); err != nil {
				return err
			}
			r[i][3], err = be.GlobalNorm([]*nn.Tensor{p(a), p(c)})
			i++
			return err
		})
		sa, sab := 0.0, 0.0
		for j := range a.v {
			sa += math.Abs(a.v[j])
			sab += math.Abs(a.v[j] * b.v[j])
		}
		e.checkScalar("sum", r[1][0], r[0][0], sa)
		e.checkScalar("dot", r[1][1], r[0][1], sab)
		e.checkScalar("sumsquares", r[1][2], r[0][2], r[0][2])
		e.checkScalar("globalnorm", r[1][3], r[0][3], r[0][3])
		for _, maxNorm := range []float64{1e3, 5} { // no clipping, then clipping
			i = 0
			e.both(func(be nn.Backend, p func(*pair) *nn.Tensor) error {
				var err error
				r[i][4], err = be.ClipGlobalNorm([]*nn.Tensor{p(a), p(c)}, maxNorm)
				i++
				return err
			})
			e.checkScalar("clipglobalnorm norm", r[1][4], r[0][4], r[0][4])
			e.check("clipglobalnorm a", a)
			e.check("clipglobalnorm c", c)
		}
	}
}
