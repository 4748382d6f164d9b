package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// AdamWStep applies one torch-style AdamW step in place (see
// nn.Backend.AdamWStep). The update is computed per element in float64 in
// torch's order: denom = √v/√(1−β2ᵗ) + ε, p ← p·(1−ηλ) − (η/(1−β1ᵗ))·m/denom.
func (*Backend) AdamWStep(o nn.AdamW, t int, lrs []float64, params, grads, m, v []*nn.Tensor) error {
	ck := newChecker("adamw step")
	nn.CheckAdamWStep(ck, o, t, lrs, params, grads, m, v)
	if ck.Err() != nil {
		return ck.Err()
	}
	for i := range params {
		if params[i].DType() == runtime.F32 {
			adamw(o, t, lrs[i], data[float32](params[i]), data[float32](grads[i]), data[float32](m[i]), data[float32](v[i]))
		} else {
			adamw(o, t, lrs[i], data[float64](params[i]), data[float64](grads[i]), data[float64](m[i]), data[float64](v[i]))
		}
	}
	return nil
}

// adamCoefs returns 1−β1ᵗ and √(1−β2ᵗ).
func adamCoefs(o nn.AdamW, t int) (bc1, bc2sqrt float64) {
	return 1 - math.Pow(o.Beta1, float64(t)), math.Sqrt(1 - math.Pow(o.Beta2, float64(t)))
}

func adamw[T Float](o nn.AdamW, t int, lr float64, p, g, m, v []T) {
	bc1, bc2s := adamCoefs(o, t)
	decay := 1 - lr*o.WeightDecay
	parallelFor(len(p), elemGrain, func(lo, hi int) {
		for e := lo; e < hi; e++ {
			ge := float64(g[e])
			me := o.Beta1*float64(m[e]) + (1-o.Beta1)*ge
			ve := o.Beta2*float64(v[e]) + (1-o.Beta2)*ge*ge
			pe := float64(p[e]) * decay
			if ve > 0 {
				pe -= lr / bc1 * me / (math.Sqrt(ve)/bc2s + o.Eps)
			}
			p[e], m[e], v[e] = T(pe), T(me), T(ve)
		}
	})
}

// AdamWStepVJP is the VJP of one AdamW step (see nn.Backend.AdamWStepVJP).
// Per element, with den = √v/√(1−β2ᵗ) + ε, m̂ = m/(1−β1ᵗ), u = m̂/den:
//
//	p̄_t     = p̄'·(1−ηλ)
//	m̄_t     = m̄ − p̄'·η/((1−β1ᵗ)·den)
//	v̄_t     = v̄ + p̄'·η·m̂/(den²·2·√v·√(1−β2ᵗ))
//	ḡ       = (1−β1)·m̄_t + 2·(1−β2)·g·v̄_t
//	m̄_{t−1} = β1·m̄_t,  v̄_{t−1} = β2·v̄_t
//	η̄      += p̄'·(−λ·p_t − u)
//
// and elements with v = 0 drop the u terms. η̄ is summed in fixed element
// blocks, in order, in float64.
func (*Backend) AdamWStepVJP(o nn.AdamW, t int, lrs []float64, params, grads, m, v, dParams, dM, dV, dGrads []*nn.Tensor, dLRs []float64) error {
	ck := newChecker("adamw vjp")
	nn.CheckAdamWStepVJP(ck, o, t, lrs, params, grads, m, v, dParams, dM, dV, dGrads, dLRs)
	if ck.Err() != nil {
		return ck.Err()
	}
	for i := range params {
		if params[i].DType() == runtime.F32 {
			dLRs[i] = adamwVJP(o, t, lrs[i], data[float32](params[i]), data[float32](grads[i]), data[float32](m[i]), data[float32](v[i]),
				data[float32](dParams[i]), data[float32](dM[i]), data[float32](dV[i]), data[float32](dGrads[i]))
		} else {
			dLRs[i] = adamwVJP(o, t, lrs[i], data[float64](params[i]), data[float64](grads[i]), data[float64](m[i]), data[float64](v[i]),
				data[float64](dParams[i]), data[float64](dM[i]), data[float64](dV[i]), data[float64](dGrads[i]))
		}
	}
	return nil
}

func adamwVJP[T Float](o nn.AdamW, t int, lr float64, p, g, m, v, dp, dm, dv, dg []T) float64 {
	bc1, bc2s := adamCoefs(o, t)
	decay := 1 - lr*o.WeightDecay
	return blockSums(len(p), func(lo, hi int) float64 {
		dlr := 0.0
		for e := lo; e < hi; e++ {
			pbar := float64(dp[e])
			mbar, vbar := float64(dm[e]), float64(dv[e])
			ve, me := float64(v[e]), float64(m[e])
			step := 0.0
			if ve > 0 {
				sv := math.Sqrt(ve)
				den := sv/bc2s + o.Eps
				mh := me / bc1
				step = mh / den
				mbar -= pbar * lr / (bc1 * den)
				vbar += pbar * lr * mh / (den * den * 2 * sv * bc2s)
			}
			dlr += pbar * (-o.WeightDecay*float64(p[e]) - step)
			ge := float64(g[e])
			dg[e] = T((1-o.Beta1)*mbar + 2*(1-o.Beta2)*ge*vbar)
			dp[e] = T(pbar * decay)
			dm[e] = T(o.Beta1 * mbar)
			dv[e] = T(o.Beta2 * vbar)
		}
		return dlr
	})
}

// SGDStep sets p ← p·(1−ηλ) − η·g for each tensor.
func (*Backend) SGDStep(weightDecay float64, lrs []float64, params, grads []*nn.Tensor) error {
	ck := newChecker("sgd step")
	nn.CheckSGDStep(ck, weightDecay, lrs, params, grads)
	if ck.Err() != nil {
		return ck.Err()
	}
	for i := range params {
		if params[i].DType() == runtime.F32 {
			sgd(weightDecay, lrs[i], data[float32](params[i]), data[float32](grads[i]))
		} else {
			sgd(weightDecay, lrs[i], data[float64](params[i]), data[float64](grads[i]))
		}
	}
	return nil
}

func sgd[T Float](wd, lr float64, p, g []T) {
	decay := 1 - lr*wd
	parallelFor(len(p), elemGrain, func(lo, hi int) {
		for e := lo; e < hi; e++ {
			p[e] = T(float64(p[e])*decay - lr*float64(g[e]))
		}
	})
}

// SGDStepVJP is the VJP of SGDStep: p̄_t = p̄'·(1−ηλ), ḡ = −η·p̄',
// η̄ = Σ p̄'·(−λ·p_t − g).
func (*Backend) SGDStepVJP(weightDecay float64, lrs []float64, params, grads, dParams, dGrads []*nn.Tensor, dLRs []float64) error {
	ck := newChecker("sgd vjp")
	nn.CheckSGDStepVJP(ck, weightDecay, lrs, params, grads, dParams, dGrads, dLRs)
	if ck.Err() != nil {
		return ck.Err()
	}
	for i := range params {
		if params[i].DType() == runtime.F32 {
			dLRs[i] = sgdVJP(weightDecay, lrs[i], data[float32](params[i]), data[float32](grads[i]), data[float32](dParams[i]), data[float32](dGrads[i]))
		} else {
			dLRs[i] = sgdVJP(weightDecay, lrs[i], data[float64](params[i]), data[float64](grads[i]), data[float64](dParams[i]), data[float64](dGrads[i]))
		}
	}
	return nil
}

func sgdVJP[T Float](wd, lr float64, p, g, dp, dg []T) float64 {
	decay := 1 - lr*wd
	return blockSums(len(p), func(lo, hi int) float64 {
		dlr := 0.0
		for e := lo; e < hi; e++ {
			pbar, ge := float64(dp[e]), float64(g[e])
			dlr += pbar * (-wd*float64(p[e]) - ge)
			dg[e] = T(-lr * pbar)
			dp[e] = T(pbar * decay)
		}
		return dlr
	})
}
