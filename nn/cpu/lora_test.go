package cpu

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

func naiveMatMul(ta, tb bool, alpha float64, a []float64, ar, ac int, b []float64, br, bc int, beta float64, c []float64) {
	m, k := ar, ac
	if ta {
		m, k = ac, ar
	}
	n := bc
	if tb {
		n = br
	}
	at := func(i, p int) float64 {
		if ta {
			return a[p*ac+i]
		}
		return a[i*ac+p]
	}
	bt := func(p, j int) float64 {
		if tb {
			return b[j*bc+p]
		}
		return b[p*bc+j]
	}
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := 0.0
			for p := 0; p < k; p++ {
				s += at(i, p) * bt(p, j)
			}
			old := 0.0
			if beta != 0 {
				old = beta * c[i*n+j]
			}
			c[i*n+j] = alpha*s + old
		}
	}
}

func TestMatMul(t *testing.T) {
	be := New()
	rng := newRNG(1)
	for _, sz := range [][3]int{{1, 1, 1}, {7, 13, 5}, {33, 17, 65}, {3, 0, 4}} {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				m, k, n := sz[0], sz[1], sz[2]
				name := fmt.Sprintf("m=%d,k=%d,n=%d,ta=%v,tb=%v", m, k, n, ta, tb)
				t.Run(name, func(t *testing.T) {
					as, bs := []int{m, k}, []int{k, n}
					if ta {
						as = []int{k, m}
					}
					if tb {
						bs = []int{n, k}
					}
					a, av := rand64(t, rng, as...)
					b, bv := rand64(t, rng, bs...)
					c, cv := rand64(t, rng, m, n)
					want := append([]float64(nil), cv...)
					naiveMatMul(ta, tb, 0.7, av, as[0], as[1], bv, bs[0], bs[1], -0.3, want)
					c32 := to32(t, c)
					require.NoError(t, be.MatMul(ta, tb, 0.7, a, b, -0.3, c))
					requireClose(t, cv, want, 1e-14, "f64")
					require.NoError(t, be.MatMul(ta, tb, 0.7, to32(t, a), to32(t, b), -0.3, c32))
					requireClose(t, as64(t, c32), want, f32Tol, "f32")
				})
			}
		}
	}
	// beta = 0 ignores NaN in c.
	a, av := rand64(t, rng, 3, 4)
	b, bv := rand64(t, rng, 4, 2)
	c, cv := nan64(t, 3, 2)
	require.NoError(t, be.MatMul(false, false, 1, a, b, 0, c))
	want := make([]float64, 6)
	naiveMatMul(false, false, 1, av, 3, 4, bv, 4, 2, 0, want)
	requireClose(t, cv, want, 1e-14, "beta=0")
}

// loraCase is one LoRALinear configuration with float64 data.
type loraCase struct {
	n, in, out, r int
	winout, bias  bool
	p             float64
}

func (c loraCase) String() string {
	return fmt.Sprintf("N=%d,in=%d,out=%d,r=%d,inout=%v,bias=%v,p=%v", c.n, c.in, c.out, c.r, c.winout, c.bias, c.p)
}

// naiveLoRA computes y = x·Wᵀ + b + s·(drop(x)·Aᵀ)·Bᵀ with plain loops.
func naiveLoRA(c loraCase, d nn.Dropout, s float64, x, w, b, a, bb []float64) []float64 {
	y := make([]float64, c.n*c.out)
	keep := func(e int) float64 {
		if d.P == 0 {
			return 1
		}
		if DropoutKeep(d, uint64(e)) {
			return 1 / (1 - d.P)
		}
		return 0
	}
	for n := 0; n < c.n; n++ {
		xa := make([]float64, c.r)
		for r := 0; r < c.r; r++ {
			for i := 0; i < c.in; i++ {
				xa[r] += x[n*c.in+i] * keep(n*c.in+i) * a[r*c.in+i]
			}
		}
		for o := 0; o < c.out; o++ {
			v := 0.0
			for i := 0; i < c.in; i++ {
				if c.winout {
					v += x[n*c.in+i] * w[i*c.out+o]
				} else {
					v += x[n*c.in+i] * w[o*c.in+i]
				}
			}
			if b != nil {
				v += b[o]
			}
			for r := 0; r < c.r; r++ {
				v += s * xa[r] * bb[o*c.r+r]
			}
			y[n*c.out+o] = v
		}
	}
	return y
}

func TestLoRALinear(t *testing.T) {
	be := New()
	rng := newRNG(2)
	cases := []loraCase{
		{n: 1, in: 3, out: 2, r: 1},
		{n: 13, in: 17, out: 11, r: 4, bias: true, p: 0.3},
		{n: 29, in: 9, out: 23, r: 5, winout: true, bias: true, p: 0.1},
		{n: 7, in: 33, out: 5, r: 2, winout: true},
	}
	for i := 0; i < 6; i++ {
		cases = append(cases, loraCase{n: 1 + rng.IntN(40), in: 1 + rng.IntN(40), out: 1 + rng.IntN(40), r: 1 + rng.IntN(8),
			winout: rng.IntN(2) == 0, bias: rng.IntN(2) == 0, p: []float64{0, 0.1, 0.5}[rng.IntN(3)]})
	}
	for _, c := range cases {
		t.Run(c.String(), func(t *testing.T) {
			x, xv := rand64(t, rng, c.n, c.in)
			ws := []int{c.out, c.in}
			if c.winout {
				ws = []int{c.in, c.out}
			}
			w, wv := rand64(t, rng, ws...)
			var bias *nn.Tensor
			var bv []float64
			if c.bias {
				bias, bv = rand64(t, rng, c.out)
			}
			a, av := rand64(t, rng, c.r, c.in)
			b, bbv := rand64(t, rng, c.out, c.r)
			l := nn.LoRALinear{W: w, WInOut: c.winout, Bias: bias, A: a, B: b, Scale: 1.7,
				Dropout: nn.Dropout{P: c.p, Seed: 99, Step: 2, TensorID: 5}}

			// Forward against the naive loop (outputs poisoned first).
			y, yv := nan64(t, c.n, c.out)
			xa, _ := nan64(t, c.n, c.r)
			require.NoError(t, be.LoRALinearForward(l, x, y, xa))
			want := naiveLoRA(c, l.Dropout, l.Scale, xv, wv, bv, av, bbv)
			requireClose(t, yv, want, 1e-13, "forward")

			// float32 forward against float64.
			l32 := l
			l32.W, l32.Bias, l32.A, l32.B = to32(t, w), to32(t, bias), to32(t, a), to32(t, b)
			y32 := to32(t, y)
			require.NoError(t, be.LoRALinearForward(l32, to32(t, x), y32, nil))
			requireClose(t, as64(t, y32), want, f32Tol, "f32 forward")

			// Backward against finite differences of L = ⟨cy, y⟩. Parameter
			// gradients start non-zero to check that they accumulate.
			_, cy := rand64(t, rng, c.n, c.out)
			dy := t64(t, cy, c.n, c.out)
			dx, dxv := nan64(t, c.n, c.in)
			dA, dAv := rand64(t, rng, c.r, c.in)
			dB, dBv := rand64(t, rng, c.out, c.r)
			dW, dWv := rand64(t, rng, ws...)
			var dBias *nn.Tensor
			var dBiasv []float64
			if c.bias {
				dBias, dBiasv = rand64(t, rng, c.out)
			}
			initA, initB, initW := append([]float64(nil), dAv...), append([]float64(nil), dBv...), append([]float64(nil), dWv...)
			initBias := append([]float64(nil), dBiasv...)
			require.NoError(t, be.LoRALinearBackward(l, x, xa, dy, nn.LoRAGrads{DX: dx, DA: dA, DB: dB, DW: dW, DBias: dBias}))
			loss := func() []float64 {
				return terms(cy, naiveLoRA(c, l.Dropout, l.Scale, xv, wv, bv, av, bbv))
			}
			checkGrad(t, rng, "dx", xv, dxv, loss)
			checkGrad(t, rng, "dA", av, sub(dAv, initA), loss)
			checkGrad(t, rng, "dB", bbv, sub(dBv, initB), loss)
			checkGrad(t, rng, "dW", wv, sub(dWv, initW), loss)
			if c.bias {
				checkGrad(t, rng, "dBias", bv, sub(dBiasv, initBias), loss)
			}

			// Recomputing xa (xa = nil) gives the same bits.
			dx2, dx2v := nan64(t, c.n, c.in)
			dB2, dB2v := zeros64(t, c.out, c.r)
			require.NoError(t, be.LoRALinearBackward(l, x, nil, dy, nn.LoRAGrads{DX: dx2, DB: dB2}))
			require.Equal(t, dxv, dx2v)
			requireClose(t, dB2v, sub(dBv, initB), 1e-14, "dB without xa")
		})
	}
}

func TestLoRALinearNoAdapter(t *testing.T) {
	be := New()
	rng := newRNG(3)
	c := loraCase{n: 5, in: 6, out: 4, bias: true}
	x, xv := rand64(t, rng, c.n, c.in)
	w, wv := rand64(t, rng, c.out, c.in)
	bias, bv := rand64(t, rng, c.out)
	l := nn.LoRALinear{W: w, Bias: bias}
	y, yv := nan64(t, c.n, c.out)
	require.NoError(t, be.LoRALinearForward(l, x, y, nil))
	requireClose(t, yv, naiveLoRA(c, nn.Dropout{}, 0, xv, wv, bv, nil, nil), 1e-13, "forward")
	err := be.LoRALinearBackward(l, x, nil, y, nn.LoRAGrads{DA: to32(t, y)})
	require.ErrorContains(t, err, "lora_linear bwd")
}
