package cpu

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func naiveLayerNorm(rows, c int, x, g, b []float64, eps float64) (y, mean, rstd []float64) {
	y = make([]float64, rows*c)
	mean = make([]float64, rows)
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		mu := 0.0
		for i := 0; i < c; i++ {
			mu += x[r*c+i]
		}
		mu /= float64(c)
		va := 0.0
		for i := 0; i < c; i++ {
			va += (x[r*c+i] - mu) * (x[r*c+i] - mu)
		}
		va /= float64(c)
		rs := 1 / math.Sqrt(va+eps)
		for i := 0; i < c; i++ {
			y[r*c+i] = (x[r*c+i]-mu)*rs*g[i] + b[i]
		}
		mean[r], rstd[r] = mu, rs
	}
	return
}

func naiveRMSNorm(rows, c int, x, g []float64, eps float64) (y, rstd []float64) {
	y = make([]float64, rows*c)
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		ss := 0.0
		for i := 0; i < c; i++ {
			ss += x[r*c+i] * x[r*c+i]
		}
		rs := 1 / math.Sqrt(ss/float64(c)+eps)
		for i := 0; i < c; i++ {
			y[r*c+i] = x[r*c+i] * rs * g[i]
		}
		rstd[r] = rs
	}
	return
}

func TestLayerNorm(t *testing.T) {
	be := New()
	rng := newRNG(5)
	// Shapes: [rows, C] and [B, T, C]; 131 rows spans several row blocks.
	for _, shape := range [][]int{{1, 1}, {3, 7}, {131, 5}, {2, 9, 17}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			c := shape[len(shape)-1]
			rows := 1
			for _, d := range shape[:len(shape)-1] {
				rows *= d
			}
			const eps = 1e-5
			x, xv := rand64(t, rng, shape...)
			g, gv := rand64(t, rng, c)
			b, bv := rand64(t, rng, c)
			y, yv := nan64(t, shape...)
			mean, meanv := nan64(t, rows)
			rstd, rstdv := nan64(t, rows)
			require.NoError(t, be.LayerNormForward(x, g, b, eps, y, mean, rstd))
			wy, wm, wr := naiveLayerNorm(rows, c, xv, gv, bv, eps)
			requireClose(t, yv, wy, 1e-13, "y")
			requireClose(t, meanv, wm, 1e-13, "mean")
			requireClose(t, rstdv, wr, 1e-13, "rstd")

			y32 := to32(t, y)
			require.NoError(t, be.LayerNormForward(to32(t, x), to32(t, g), to32(t, b), eps, y32, nil, nil))
			requireClose(t, as64(t, y32), wy, f32Tol, "f32 y")

			_, cy := rand64(t, rng, shape...)
			dy := t64(t, cy, shape...)
			dx, dxv := nan64(t, shape...)
			dg, dgv := rand64(t, rng, c)
			db, dbv := rand64(t, rng, c)
			g0, b0 := append([]float64(nil), dgv...), append([]float64(nil), dbv...)
			require.NoError(t, be.LayerNormBackward(x, g, mean, rstd, dy, dx, dg, db))
			loss := func() []float64 {
				y, _, _ := naiveLayerNorm(rows, c, xv, gv, bv, eps)
				return terms(cy, y)
			}
			if c > 1 { // with C = 1 the output does not depend on x
				checkGrad(t, rng, "dx", xv, dxv, loss)
			}
			checkGrad(t, rng, "dgamma", gv, sub(dgv, g0), loss)
			checkGrad(t, rng, "dbeta", bv, sub(dbv, b0), loss)
		})
	}
}

func TestRMSNorm(t *testing.T) {
	be := New()
	rng := newRNG(6)
	for _, shape := range [][]int{{1, 1}, {5, 8}, {67, 3}, {3, 4, 14}} {
		t.Run(fmt.Sprint(shape), func(t *testing.T) {
			c := shape[len(shape)-1]
			rows := 1
			for _, d := range shape[:len(shape)-1] {
				rows *= d
			}
			const eps = 1e-6
			x, xv := rand64(t, rng, shape...)
			g, gv := rand64(t, rng, c)
			y, yv := nan64(t, shape...)
			rstd, rstdv := nan64(t, rows)
			require.NoError(t, be.RMSNormForward(x, g, eps, y, rstd))
			wy, wr := naiveRMSNorm(rows, c, xv, gv, eps)
			requireClose(t, yv, wy, 1e-13, "y")
			requireClose(t, rstdv, wr, 1e-13, "rstd")

			y32 := to32(t, y)
			require.NoError(t, be.RMSNormForward(to32(t, x), to32(t, g), eps, y32, nil))
			requireClose(t, as64(t, y32), wy, f32Tol, "f32 y")

			_, cy := rand64(t, rng, shape...)
			dy := t64(t, cy, shape...)
			dx, dxv := nan64(t, shape...)
			dg, dgv := rand64(t, rng, c)
			g0 := append([]float64(nil), dgv...)
			require.NoError(t, be.RMSNormBackward(x, g, rstd, dy, dx, dg))
			loss := func() []float64 {
				y, _ := naiveRMSNorm(rows, c, xv, gv, eps)
				return terms(cy, y)
			}
			if c > 1 { // with C = 1, y ≈ sign(x)·γ: dx is ~eps, below FD resolution
				checkGrad(t, rng, "dx", xv, dxv, loss)
			}
			checkGrad(t, rng, "dgamma", gv, sub(dgv, g0), loss)
		})
	}
}
