package cpu

import (
	"math"
	goruntime "runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

func TestReductions(t *testing.T) {
	be := New()
	rng := newRNG(19)
	a, av := rand64(t, rng, 50001) // several reduction blocks plus a tail
	b, bv := rand64(t, rng, 7, 3)
	c, cv := rand64(t, rng, 50001)
	naiveSum, naiveDot, naiveSS := 0.0, 0.0, 0.0
	for i := range av {
		naiveSum += av[i]
		naiveDot += av[i] * cv[i]
		naiveSS += av[i] * av[i]
	}
	for _, v := range bv {
		naiveSS += v * v
	}
	s, err := be.Sum(a)
	require.NoError(t, err)
	require.InEpsilon(t, naiveSum, s, 1e-11)
	d, err := be.Dot(a, c)
	require.NoError(t, err)
	require.InEpsilon(t, naiveDot, d, 1e-11)
	ss, err := be.SumSquares([]*nn.Tensor{a, b})
	require.NoError(t, err)
	require.InEpsilon(t, naiveSS, ss, 1e-13)
	norm, err := be.GlobalNorm([]*nn.Tensor{a, b})
	require.NoError(t, err)
	require.InEpsilon(t, math.Sqrt(naiveSS), norm, 1e-13)

	s32, err := be.Sum(to32(t, a))
	require.NoError(t, err)
	require.InEpsilon(t, naiveSum, s32, 1e-11) // inputs are f32-exact, sums in f64

	// Clipping: above the limit scales to maxNorm, below leaves values alone.
	b0 := append([]float64(nil), bv...)
	got, err := be.ClipGlobalNorm([]*nn.Tensor{a, b}, norm/2)
	require.NoError(t, err)
	require.Equal(t, norm, got)
	after, err := be.GlobalNorm([]*nn.Tensor{a, b})
	require.NoError(t, err)
	require.InEpsilon(t, norm/2, after, 1e-6)
	for i := range bv {
		require.InEpsilon(t, b0[i]*(norm/2)/(norm+1e-6), bv[i], 1e-14)
	}
	b1 := append([]float64(nil), bv...)
	_, err = be.ClipGlobalNorm([]*nn.Tensor{a, b}, norm)
	require.NoError(t, err)
	require.Equal(t, b1, bv)
}

func TestElementwise(t *testing.T) {
	be := New()
	rng := newRNG(20)
	a, av := rand64(t, rng, 5, 6)
	b, bv := rand64(t, rng, 30)
	out, outv := nan64(t, 6, 5)
	require.NoError(t, be.Add(a, b, out))
	for i := range outv {
		require.Equal(t, av[i]+bv[i], outv[i])
	}
	require.NoError(t, be.Add(out, b, out)) // aliasing
	for i := range outv {
		require.Equal(t, av[i]+bv[i]+bv[i], outv[i])
	}
	y := append([]float64(nil), bv...)
	yt := t64(t, y, 30)
	require.NoError(t, be.Axpy(-0.5, a, yt))
	for i := range y {
		require.Equal(t, bv[i]-0.5*av[i], y[i])
	}
	require.NoError(t, be.Scale(3, yt))
	for i := range y {
		require.Equal(t, 3*(bv[i]-0.5*av[i]), y[i])
	}
	require.NoError(t, be.Copy(yt, a))
	require.Equal(t, av, y)
	require.NoError(t, be.Zero(yt))
	require.Equal(t, make([]float64, 30), y)

	// CopyColumns: split a fused [N, 3C] projection and put it back.
	fused, fv := rand64(t, rng, 4, 9)
	k, kv := nan64(t, 4, 3)
	require.NoError(t, be.CopyColumns(k, 0, fused, 3, 3))
	for r := 0; r < 4; r++ {
		require.Equal(t, fv[r*9+3:r*9+6], kv[r*3:r*3+3])
	}
	back, bkv := zeros64(t, 4, 9)
	require.NoError(t, be.CopyColumns(back, 3, k, 0, 3))
	for r := 0; r < 4; r++ {
		require.Equal(t, fv[r*9+3:r*9+6], bkv[r*9+3:r*9+6])
		require.Equal(t, []float64{0, 0, 0}, bkv[r*9:r*9+3])
	}
	require.ErrorContains(t, be.CopyColumns(back, 7, k, 0, 3), "copycolumns: destination columns [7,10)")
}

func TestHostTransfers(t *testing.T) {
	be := New()
	x, xv := rand64(t, newRNG(21), 2, 3)
	y, err := be.FromHost(x, runtime.F32)
	require.NoError(t, err)
	require.Equal(t, runtime.F32, y.DType())
	require.Equal(t, []int{2, 3}, y.Shape())
	z, err := be.ToHost(y)
	require.NoError(t, err)
	requireClose(t, as64(t, z), xv, 1e-7, "round trip")
	_, err = be.FromHost(x, runtime.BF16)
	require.ErrorContains(t, err, "cpu fromhost")
	w, err := be.Alloc(runtime.F64, 3, 0)
	require.NoError(t, err)
	require.Equal(t, 0, w.Numel())
	require.NoError(t, be.Release(w))
}

// Every op that reduces in parallel gives identical bits at GOMAXPROCS 1 and 4.
func TestDeterministicAcrossGOMAXPROCS(t *testing.T) {
	run := func() [][]float64 {
		be := New()
		rng := newRNG(22)
		var outs [][]float64
		// Attention backward.
		cu := []int32{0, 40, 41, 100}
		q, _ := rand64(t, rng, 100, 4, 8)
		k, _ := rand64(t, rng, 100, 2, 8)
		v, _ := rand64(t, rng, 100, 2, 8)
		o, _ := zeros64(t, 100, 4, 8)
		lse, _ := zeros64(t, 4, 100)
		a := nn.Attention{CuSeqlens: cu, Causal: true}
		require.NoError(t, be.AttentionForward(a, q, k, v, o, lse))
		do, _ := rand64(t, rng, 100, 4, 8)
		dq, dqv := zeros64(t, 100, 4, 8)
		dk, dkv := zeros64(t, 100, 2, 8)
		dv, dvv := zeros64(t, 100, 2, 8)
		require.NoError(t, be.AttentionBackward(a, q, k, v, o, lse, do, dq, dk, dv))
		outs = append(outs, dqv, dkv, dvv)
		// LayerNorm backward over many row blocks.
		x, _ := rand64(t, rng, 1000, 12)
		g, _ := rand64(t, rng, 12)
		y, _ := zeros64(t, 1000, 12)
		mean, _ := zeros64(t, 1000)
		rstd, _ := zeros64(t, 1000)
		require.NoError(t, be.LayerNormForward(x, g, nil, 1e-5, y, mean, rstd))
		dg, dgv := zeros64(t, 12)
		db, dbv := zeros64(t, 12)
		dx, dxv := zeros64(t, 1000, 12)
		require.NoError(t, be.LayerNormBackward(x, g, mean, rstd, y, dx, dg, db))
		outs = append(outs, dgv, dbv, dxv)
		// Embedding scatter-add with many repeats.
		ids := make([]int32, 3000)
		for i := range ids {
			ids[i] = int32(rng.IntN(17))
		}
		dyE, _ := rand64(t, rng, 3000, 5)
		dT, dTv := zeros64(t, 17, 5)
		require.NoError(t, be.EmbeddingBackward(ids, nil, dyE, dT, nil))
		outs = append(outs, dTv)
		// Cross-entropy backward and a long sum.
		h, _ := rand64(t, rng, 64, 8)
		e, _ := rand64(t, rng, 300, 8)
		labels := ids[:64]
		c := nn.CrossEntropy{Labels: labels, Norm: 64, Chunk: 100}
		ce, _ := zeros64(t, 64)
		lx, _ := zeros64(t, 64)
		loss, err := be.CrossEntropyForward(c, h, e, ce, lx)
		require.NoError(t, err)
		dh, dhv := zeros64(t, 64, 8)
		dE, dEv := zeros64(t, 300, 8)
		require.NoError(t, be.CrossEntropyBackward(c, h, e, ce, lx, 1, dh, dE, nil))
		big, _ := rand64(t, rng, 100003)
		s, err := be.Sum(big)
		require.NoError(t, err)
		outs = append(outs, dhv, dEv, []float64{loss, s})
		return outs
	}
	old := goruntime.GOMAXPROCS(1)
	defer goruntime.GOMAXPROCS(old)
	one := run()
	goruntime.GOMAXPROCS(4)
	four := run()
	for i := range one {
		for j := range one[i] {
			require.Equal(t, math.Float64bits(one[i][j]), math.Float64bits(four[i][j]), "output %d element %d", i, j)
		}
	}
}
