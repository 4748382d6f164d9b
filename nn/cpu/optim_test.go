package cpu

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/nn"
)

var testAdam = nn.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.05}

// naiveAdamW is one torch.optim.AdamW step on flat slices, returning new
// (p, m, v).
func naiveAdamW(o nn.AdamW, t int, lr float64, p, g, m, v []float64) (pn, mn, vn []float64) {
	pn, mn, vn = make([]float64, len(p)), make([]float64, len(p)), make([]float64, len(p))
	bc1 := 1 - math.Pow(o.Beta1, float64(t))
	bc2 := 1 - math.Pow(o.Beta2, float64(t))
	for i := range p {
		mn[i] = o.Beta1*m[i] + (1-o.Beta1)*g[i]
		vn[i] = o.Beta2*v[i] + (1-o.Beta2)*g[i]*g[i]
		pn[i] = p[i] * (1 - lr*o.WeightDecay)
		if vn[i] > 0 {
			pn[i] -= lr / bc1 * mn[i] / (math.Sqrt(vn[i])/math.Sqrt(bc2) + o.Eps)
		}
	}
	return
}

func clone(v []float64) []float64 { return append([]float64(nil), v...) }

// optimTensors is a list of two tensors of sizes 13 and 40000 (the latter
// spans several reduction blocks) with random contents.
type optimState struct {
	p, g, m, v     [][]float64
	pt, gt, mt, vt []*nn.Tensor
	lrs            []float64
}

func newOptimState(t *testing.T, seed uint64) *optimState {
	rng := newRNG(seed)
	s := &optimState{lrs: []float64{0.03, 0.002}}
	for _, n := range []int{13, 40000} {
		pt, p := rand64(t, rng, n)
		gt, g := rand64(t, rng, n)
		mt, m := rand64(t, rng, n)
		vt, v := rand64(t, rng, n)
		for i := range v {
			v[i] = v[i]*v[i] + 1e-3 // second moments are positive
			m[i] *= 0.1
		}
		s.p, s.g, s.m, s.v = append(s.p, p), append(s.g, g), append(s.m, m), append(s.v, v)
		s.pt, s.gt, s.mt, s.vt = append(s.pt, pt), append(s.gt, gt), append(s.mt, mt), append(s.vt, vt)
	}
	return s
}

func TestAdamWStep(t *testing.T) {
	be := New()
	s := newOptimState(t, 13)
	const step = 3
	var want [][3][]float64
	for i := range s.p {
		pn, mn, vn := naiveAdamW(testAdam, step, s.lrs[i], s.p[i], s.g[i], s.m[i], s.v[i])
		want = append(want, [3][]float64{pn, mn, vn})
	}
	p32, g32, m32, v32 := make([]*nn.Tensor, 2), make([]*nn.Tensor, 2), make([]*nn.Tensor, 2), make([]*nn.Tensor, 2)
	for i := range s.p {
		p32[i], g32[i], m32[i], v32[i] = to32(t, s.pt[i]), to32(t, s.gt[i]), to32(t, s.mt[i]), to32(t, s.vt[i])
	}
	require.NoError(t, be.AdamWStep(testAdam, step, s.lrs, s.pt, s.gt, s.mt, s.vt))
	require.NoError(t, be.AdamWStep(testAdam, step, s.lrs, p32, g32, m32, v32))
	for i := range s.p {
		requireClose(t, s.p[i], want[i][0], 1e-15, "p")
		requireClose(t, s.m[i], want[i][1], 1e-15, "m")
		requireClose(t, s.v[i], want[i][2], 1e-15, "v")
		requireClose(t, as64(t, p32[i]), want[i][0], f32Tol, "f32 p")
		requireClose(t, as64(t, m32[i]), want[i][1], f32Tol, "f32 m")
		requireClose(t, as64(t, v32[i]), want[i][2], f32Tol, "f32 v")
	}
}

// TestAdamWStepVJP checks the VJP against central differences of
// J = ⟨c_p, p_{t+1}⟩ + ⟨c_m, m_t⟩ + ⟨c_v, v_t⟩ as a function of
// (p_t, m_{t−1}, v_{t−1}, g_t, η).
func TestAdamWStepVJP(t *testing.T) {
	be := New()
	s := newOptimState(t, 14)
	rng := newRNG(15)
	const step = 4
	// Inputs of the step: p_t, m_{t−1}, v_{t−1}, g_t, lrs.
	p0, m0, v0, g0, lrs := s.p, s.m, s.v, s.g, clone(s.lrs)
	cp, cm, cv := make([][]float64, 2), make([][]float64, 2), make([][]float64, 2)
	for i := range p0 {
		cp[i], cm[i], cv[i] = randVec(rng, len(p0[i])), randVec(rng, len(p0[i])), randVec(rng, len(p0[i]))
	}
	objective := func() []float64 {
		var j []float64
		for i := range p0 {
			pn, mn, vn := naiveAdamW(testAdam, step, lrs[i], p0[i], g0[i], m0[i], v0[i])
			j = append(j, terms(cp[i], pn)...)
			j = append(j, terms(cm[i], mn)...)
			j = append(j, terms(cv[i], vn)...)
		}
		return j
	}
	// Run the step on copies to get m_t, v_t; the VJP takes p_t, g_t, m_t, v_t.
	var pt, gt, mt, vt, dP, dM, dV, dG []*nn.Tensor
	var dPv, dMv, dVv, dGv [][]float64
	for i := range p0 {
		n := len(p0[i])
		pc, mc, vc := t64(t, clone(p0[i]), n), t64(t, clone(m0[i]), n), t64(t, clone(v0[i]), n)
		require.NoError(t, be.AdamWStep(testAdam, step, lrs[i:i+1], []*nn.Tensor{pc}, []*nn.Tensor{s.gt[i]}, []*nn.Tensor{mc}, []*nn.Tensor{vc}))
		pt = append(pt, t64(t, clone(p0[i]), n))
		gt = append(gt, t64(t, clone(g0[i]), n))
		mt, vt = append(mt, mc), append(vt, vc)
		a, b, c := clone(cp[i]), clone(cm[i]), clone(cv[i])
		dgv := make([]float64, n)
		dP, dM, dV, dG = append(dP, t64(t, a, n)), append(dM, t64(t, b, n)), append(dV, t64(t, c, n)), append(dG, t64(t, dgv, n))
		dPv, dMv, dVv, dGv = append(dPv, a), append(dMv, b), append(dVv, c), append(dGv, dgv)
	}
	dLRs := make([]float64, 2)
	require.NoError(t, be.AdamWStepVJP(testAdam, step, lrs, pt, gt, mt, vt, dP, dM, dV, dG, dLRs))
	for i := range p0 {
		checkGrad(t, rng, "dp", p0[i], dPv[i], objective)
		checkGrad(t, rng, "dm", m0[i], dMv[i], objective)
		checkGrad(t, rng, "dv", v0[i], dVv[i], objective)
		checkGrad(t, rng, "dg", g0[i], dGv[i], objective)
		lr := lrs[i : i+1]
		checkGrad(t, rng, "dlr", lr, dLRs[i:i+1], objective)
	}
}

// An element with v̂ = 0 (zero gradient, zero moments) gets only the decay
// and contributes nothing to the Adam-term VJP.
func TestAdamWZeroSecondMoment(t *testing.T) {
	be := New()
	p, pv := rand64(t, newRNG(16), 3)
	p0 := clone(pv)
	g, _ := zeros64(t, 3)
	m, _ := zeros64(t, 3)
	v, _ := zeros64(t, 3)
	lrs := []float64{0.1}
	require.NoError(t, be.AdamWStep(testAdam, 1, lrs, []*nn.Tensor{p}, []*nn.Tensor{g}, []*nn.Tensor{m}, []*nn.Tensor{v}))
	for i := range pv {
		require.Equal(t, p0[i]*(1-0.1*testAdam.WeightDecay), pv[i])
	}
	pt := t64(t, clone(p0), 3)
	dP, dPv := t64(t, []float64{1, 2, 3}, 3), []float64{1, 2, 3}
	dM, dMv := zeros64(t, 3)
	dV, dVv := zeros64(t, 3)
	dG, dGv := nan64(t, 3)
	dLR := []float64{math.NaN()}
	require.NoError(t, be.AdamWStepVJP(testAdam, 1, lrs, []*nn.Tensor{pt}, []*nn.Tensor{g}, []*nn.Tensor{m}, []*nn.Tensor{v},
		[]*nn.Tensor{dP}, []*nn.Tensor{dM}, []*nn.Tensor{dV}, []*nn.Tensor{dG}, dLR))
	got := as64(t, dP)
	wantLR := 0.0
	for i := range got {
		require.Equal(t, dPv[i]*(1-0.1*testAdam.WeightDecay), got[i])
		wantLR += dPv[i] * (-testAdam.WeightDecay * p0[i])
	}
	require.Equal(t, []float64{0, 0, 0}, dGv)
	require.Equal(t, []float64{0, 0, 0}, dMv)
	require.Equal(t, []float64{0, 0, 0}, dVv)
	require.InEpsilon(t, wantLR, dLR[0], 1e-15)
}

func naiveSGD(wd, lr float64, p, g []float64) []float64 {
	out := make([]float64, len(p))
	for i := range p {
		out[i] = p[i]*(1-lr*wd) - lr*g[i]
	}
	return out
}

func TestSGDStepAndVJP(t *testing.T) {
	be := New()
	s := newOptimState(t, 17)
	rng := newRNG(18)
	const wd = 0.01
	want := [][]float64{naiveSGD(wd, s.lrs[0], s.p[0], s.g[0]), naiveSGD(wd, s.lrs[1], s.p[1], s.g[1])}
	p0 := [][]float64{clone(s.p[0]), clone(s.p[1])}
	p32 := []*nn.Tensor{to32(t, s.pt[0]), to32(t, s.pt[1])}
	require.NoError(t, be.SGDStep(wd, s.lrs, s.pt, s.gt))
	require.NoError(t, be.SGDStep(wd, s.lrs, p32, []*nn.Tensor{to32(t, s.gt[0]), to32(t, s.gt[1])}))
	for i := range want {
		requireClose(t, s.p[i], want[i], 1e-15, "p")
		requireClose(t, as64(t, p32[i]), want[i], f32Tol, "f32 p")
	}

	lrs := clone(s.lrs)
	cp := [][]float64{randVec(rng, len(p0[0])), randVec(rng, len(p0[1]))}
	objective := func() []float64 {
		return append(terms(cp[0], naiveSGD(wd, lrs[0], p0[0], s.g[0])), terms(cp[1], naiveSGD(wd, lrs[1], p0[1], s.g[1]))...)
	}
	dPv := [][]float64{clone(cp[0]), clone(cp[1])}
	dGv := [][]float64{make([]float64, len(p0[0])), make([]float64, len(p0[1]))}
	pt := []*nn.Tensor{t64(t, clone(p0[0]), len(p0[0])), t64(t, clone(p0[1]), len(p0[1]))}
	dP := []*nn.Tensor{t64(t, dPv[0], len(p0[0])), t64(t, dPv[1], len(p0[1]))}
	dG := []*nn.Tensor{t64(t, dGv[0], len(p0[0])), t64(t, dGv[1], len(p0[1]))}
	dLRs := make([]float64, 2)
	require.NoError(t, be.SGDStepVJP(wd, lrs, pt, s.gt, dP, dG, dLRs))
	for i := range p0 {
		checkGrad(t, rng, "dp", p0[i], dPv[i], objective)
		checkGrad(t, rng, "dg", s.g[i], dGv[i], objective)
		checkGrad(t, rng, "dlr", lrs[i:i+1], dLRs[i:i+1], objective)
	}
}
