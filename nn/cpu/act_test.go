package cpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func naiveGELU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*math.Pow(v, 3))))
	}
	return y
}

func naiveSwiGLU(g, u []float64) []float64 {
	y := make([]float64, len(g))
	for i := range g {
		y[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
	}
	return y
}

func TestGELU(t *testing.T) {
	be := New()
	rng := newRNG(7)
	x, xv := rand64(t, rng, 37, 5)
	for i := range xv {
		xv[i] *= 4 // cover the tails
	}
	y, yv := nan64(t, 37, 5)
	require.NoError(t, be.GELUForward(x, y))
	want := naiveGELU(xv)
	requireClose(t, yv, want, 1e-14, "y")
	y32 := to32(t, y)
	require.NoError(t, be.GELUForward(to32(t, x), y32))
	requireClose(t, as64(t, y32), want, f32Tol, "f32 y")

	_, cy := rand64(t, rng, 37, 5)
	dx, dxv := nan64(t, 37, 5)
	require.NoError(t, be.GELUBackward(x, t64(t, cy, 37, 5), dx))
	checkGrad(t, rng, "dx", xv, dxv, func() []float64 { return terms(cy, naiveGELU(xv)) })

	// In place: y aliases x.
	cp := t64(t, append([]float64(nil), xv...), 37, 5)
	require.NoError(t, be.GELUForward(cp, cp))
	require.Equal(t, yv, as64(t, cp))
}

func TestSwiGLU(t *testing.T) {
	be := New()
	rng := newRNG(8)
	g, gv := rand64(t, rng, 19, 7)
	for i := range gv {
		gv[i] *= 5
	}
	u, uv := rand64(t, rng, 19, 7)
	y, yv := nan64(t, 19, 7)
	require.NoError(t, be.SwiGLUForward(g, u, y))
	want := naiveSwiGLU(gv, uv)
	requireClose(t, yv, want, 1e-14, "y")
	y32 := to32(t, y)
	require.NoError(t, be.SwiGLUForward(to32(t, g), to32(t, u), y32))
	requireClose(t, as64(t, y32), want, f32Tol, "f32 y")

	_, cy := rand64(t, rng, 19, 7)
	dg, dgv := nan64(t, 19, 7)
	du, duv := nan64(t, 19, 7)
	require.NoError(t, be.SwiGLUBackward(g, u, t64(t, cy, 19, 7), dg, du))
	loss := func() []float64 { return terms(cy, naiveSwiGLU(gv, uv)) }
	checkGrad(t, rng, "dgate", gv, dgv, loss)
	checkGrad(t, rng, "dup", uv, duv, loss)
}

// naiveRoPE follows HF's rotate_half: y = x·cos + rotate_half(x)·sin with
// cos, sin repeated over both halves.
func naiveRoPE(t, h, d int, x []float64, pos []int32, theta float64) []float64 {
	y := make([]float64, len(x))
	for tok := 0; tok < t; tok++ {
		cos := make([]float64, d)
		sin := make([]float64, d)
		for i := 0; i < d/2; i++ {
			f := 1 / math.Pow(theta, float64(2*i)/float64(d))
			cos[i], cos[i+d/2] = math.Cos(float64(pos[tok])*f), math.Cos(float64(pos[tok])*f)
			sin[i], sin[i+d/2] = math.Sin(float64(pos[tok])*f), math.Sin(float64(pos[tok])*f)
		}
		for hd := 0; hd < h; hd++ {
			xr := x[(tok*h+hd)*d : (tok*h+hd+1)*d]
			rot := make([]float64, d)
			for i := 0; i < d/2; i++ {
				rot[i], rot[i+d/2] = -xr[i+d/2], xr[i]
			}
			for i := 0; i < d; i++ {
				y[(tok*h+hd)*d+i] = xr[i]*cos[i] + rot[i]*sin[i]
			}
		}
	}
	return y
}

func TestRoPE(t *testing.T) {
	be := New()
	rng := newRNG(9)
	for _, c := range []struct{ t, h, d int }{{1, 1, 2}, {21, 3, 8}, {13, 14, 4}} {
		t.Run(fmt.Sprintf("T=%d,H=%d,D=%d", c.t, c.h, c.d), func(t *testing.T) {
			const theta = 1e6 // Qwen2's rope_theta
			// Positions restart per packed segment, as the model passes them.
			pos := make([]int32, c.t)
			for i := range pos {
				pos[i] = int32(i % 7 * 301)
			}
			x, xv := rand64(t, rng, c.t, c.h, c.d)
			y, yv := nan64(t, c.t, c.h, c.d)
			require.NoError(t, be.RoPEForward(x, pos, theta, y))
			want := naiveRoPE(c.t, c.h, c.d, xv, pos, theta)
			requireClose(t, yv, want, 1e-14, "y")
			y32 := to32(t, y)
			require.NoError(t, be.RoPEForward(to32(t, x), pos, theta, y32))
			requireClose(t, as64(t, y32), want, f32Tol, "f32 y")

			_, cy := rand64(t, rng, c.t, c.h, c.d)
			dx, dxv := nan64(t, c.t, c.h, c.d)
			require.NoError(t, be.RoPEBackward(t64(t, cy, c.t, c.h, c.d), pos, theta, dx))
			checkGrad(t, rng, "dx", xv, dxv, func() []float64 { return terms(cy, naiveRoPE(c.t, c.h, c.d, xv, pos, theta)) })

			// Backward undoes forward.
			back, backv := nan64(t, c.t, c.h, c.d)
			require.NoError(t, be.RoPEBackward(y, pos, theta, back))
			requireClose(t, backv, xv, 1e-14, "inverse")
		})
	}
}

func naiveEmbedding(ids, positions []int32, table, pos []float64, d int) []float64 {
	y := make([]float64, len(ids)*d)
	for t, id := range ids {
		for i := 0; i < d; i++ {
			y[t*d+i] = table[int(id)*d+i]
			if pos != nil {
				y[t*d+i] += pos[int(positions[t])*d+i]
			}
		}
	}
	return y
}

func TestEmbedding(t *testing.T) {
	be := New()
	rng := newRNG(10)
	const v, p, d, n = 11, 9, 6, 40
	ids := make([]int32, n)
	positions := make([]int32, n)
	for i := range ids {
		ids[i] = int32(rng.IntN(v / 2)) // repeated ids, some rows unused
		positions[i] = int32(i % p)
	}
	table, tv := rand64(t, rng, v, d)
	pos, pv := rand64(t, rng, p, d)
	for _, withPos := range []bool{false, true} {
		t.Run(fmt.Sprintf("pos=%v", withPos), func(t *testing.T) {
			pt, pvv := pos, pv
			if !withPos {
				pt, pvv = nil, nil
			}
			y, yv := nan64(t, n, d)
			require.NoError(t, be.EmbeddingForward(ids, table, positions, pt, y))
			want := naiveEmbedding(ids, positions, tv, pvv, d)
			requireClose(t, yv, want, 0, "y")
			y32 := to32(t, y)
			require.NoError(t, be.EmbeddingForward(ids, to32(t, table), positions, to32(t, pt), y32))
			requireClose(t, as64(t, y32), want, f32Tol, "f32 y")

			_, cy := rand64(t, rng, n, d)
			dT, dTv := rand64(t, rng, v, d)
			dP, dPv := rand64(t, rng, p, d)
			t0, p0 := append([]float64(nil), dTv...), append([]float64(nil), dPv...)
			if !withPos {
				dP = nil
			}
			require.NoError(t, be.EmbeddingBackward(ids, positions, t64(t, cy, n, d), dT, dP))
			loss := func() []float64 { return terms(cy, naiveEmbedding(ids, positions, tv, pvv, d)) }
			checkGrad(t, rng, "dtable", tv, sub(dTv, t0), loss)
			if withPos {
				checkGrad(t, rng, "dpos", pv, sub(dPv, p0), loss)
			} else {
				require.Equal(t, p0, dPv)
			}
		})
	}
}

func TestEmbeddingRejectsBadIDs(t *testing.T) {
	be := New()
	table, _ := zeros64(t, 4, 2)
	y, _ := zeros64(t, 2, 2)
	err := be.EmbeddingForward([]int32{1, 4}, table, nil, nil, y)
	require.ErrorContains(t, err, "embedding fwd: ids[1] = 4 outside [0,4)")
	err = be.EmbeddingBackward([]int32{-1, 0}, nil, y, table, nil)
	require.ErrorContains(t, err, "ids[0] = -1")
}
