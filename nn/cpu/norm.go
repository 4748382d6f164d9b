package cpu

import (
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// normRowBlock is the number of rows per partial sum of dγ and dβ; partials
// are added in block order, so the result does not depend on GOMAXPROCS.
const normRowBlock = 64

// LayerNormForward computes y = (x−mean)·rstd·γ + β over the last dimension
// (biased variance, two-pass), saving mean and rstd when non-nil.
func (*Backend) LayerNormForward(x, gamma, beta *nn.Tensor, eps float64, y, mean, rstd *nn.Tensor) error {
	ck := newChecker("layernorm fwd")
	rows, c := nn.CheckLayerNormForward(ck, x, gamma, beta, eps, y, mean, rstd)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		layerNormForward(rows, c, data[float32](x), data[float32](gamma), data[float32](beta), eps, data[float32](y), data[float32](mean), data[float32](rstd))
	} else {
		layerNormForward(rows, c, data[float64](x), data[float64](gamma), data[float64](beta), eps, data[float64](y), data[float64](mean), data[float64](rstd))
	}
	return nil
}

func layerNormForward[T Float](rows, c int, x, gamma, beta []T, eps float64, y, mean, rstd []T) {
	parallelFor(rows, rowGrain(c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*c:(r+1)*c], y[r*c:(r+1)*c]
			mu := 0.0
			for _, v := range xr {
				mu += float64(v)
			}
			mu /= float64(c)
			va := 0.0
			for _, v := range xr {
				dv := float64(v) - mu
				va += dv * dv
			}
			va /= float64(c)
			rs := 1 / math.Sqrt(va+eps)
			for i, v := range xr {
				o := (float64(v) - mu) * rs * float64(gamma[i])
				if beta != nil {
					o += float64(beta[i])
				}
				yr[i] = T(o)
			}
			if mean != nil {
				mean[r] = T(mu)
			}
			if rstd != nil {
				rstd[r] = T(rs)
			}
		}
	})
}

// LayerNormBackward computes, with x̂ = (x−mean)·rstd and g = dy·γ,
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (overwritten), dγ += Σ dy·x̂ and
// dβ += Σ dy (accumulated).
func (*Backend) LayerNormBackward(x, gamma, mean, rstd, dy, dx, dGamma, dBeta *nn.Tensor) error {
	ck := newChecker("layernorm bwd")
	rows, c := nn.CheckLayerNormBackward(ck, x, gamma, mean, rstd, dy, dx, dGamma, dBeta)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		normBackward(true, rows, c, data[float32](x), data[float32](gamma), data[float32](mean), data[float32](rstd),
			data[float32](dy), data[float32](dx), data[float32](dGamma), data[float32](dBeta))
	} else {
		normBackward(true, rows, c, data[float64](x), data[float64](gamma), data[float64](mean), data[float64](rstd),
			data[float64](dy), data[float64](dx), data[float64](dGamma), data[float64](dBeta))
	}
	return nil
}

// RMSNormForward computes y = x·rstd·γ, rstd = 1/√(mean(x²)+eps), over the
// last dimension, saving rstd when non-nil.
func (*Backend) RMSNormForward(x, gamma *nn.Tensor, eps float64, y, rstd *nn.Tensor) error {
	ck := newChecker("rmsnorm fwd")
	rows, c := nn.CheckRMSNormForward(ck, x, gamma, eps, y, rstd)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		rmsNormForward(rows, c, data[float32](x), data[float32](gamma), eps, data[float32](y), data[float32](rstd))
	} else {
		rmsNormForward(rows, c, data[float64](x), data[float64](gamma), eps, data[float64](y), data[float64](rstd))
	}
	return nil
}

func rmsNormForward[T Float](rows, c int, x, gamma []T, eps float64, y, rstd []T) {
	parallelFor(rows, rowGrain(c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xr, yr := x[r*c:(r+1)*c], y[r*c:(r+1)*c]
			ss := 0.0
			for _, v := range xr {
				ss += float64(v) * float64(v)
			}
			rs := 1 / math.Sqrt(ss/float64(c)+eps)
			for i, v := range xr {
				yr[i] = T(float64(v) * rs * float64(gamma[i]))
			}
			if rstd != nil {
				rstd[r] = T(rs)
			}
		}
	})
}

// RMSNormBackward computes, with x̂ = x·rstd and g = dy·γ,
// dx = rstd·(g − x̂·mean(g·x̂)) (overwritten) and dγ += Σ dy·x̂.
func (*Backend) RMSNormBackward(x, gamma, rstd, dy, dx, dGamma *nn.Tensor) error {
	ck := newChecker("rmsnorm bwd")
	rows, c := nn.CheckRMSNormBackward(ck, x, gamma, rstd, dy, dx, dGamma)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.DType() == runtime.F32 {
		normBackward(false, rows, c, data[float32](x), data[float32](gamma), nil, data[float32](rstd),
			data[float32](dy), data[float32](dx), data[float32](dGamma), nil)
	} else {
		normBackward(false, rows, c, data[float64](x), data[float64](gamma), nil, data[float64](rstd),
			data[float64](dy), data[float64](dx), data[float64](dGamma), nil)
	}
	return nil
}

// normBackward is the backward of LayerNorm (centered) or RMSNorm. Row
// blocks of normRowBlock rows each produce partial dγ/dβ sums that are then
// added in block order.
func normBackward[T Float](centered bool, rows, c int, x, gamma, mean, rstd, dy, dx, dGamma, dBeta []T) {
	nb := (rows + normRowBlock - 1) / normRowBlock
	var pg, pb []float64
	if dGamma != nil {
		pg = make([]float64, nb*c)
	}
	if dBeta != nil {
		pb = make([]float64, nb*c)
	}
	parallelFor(nb, max(1, rowGrain(c)/normRowBlock), func(lo, hi int) {
		xh := make([]float64, c)
		g := make([]float64, c)
		for blk := lo; blk < hi; blk++ {
			for r := blk * normRowBlock; r < min((blk+1)*normRowBlock, rows); r++ {
				xr, dyr := x[r*c:(r+1)*c], dy[r*c:(r+1)*c]
				rs, mu := float64(rstd[r]), 0.0
				if centered {
					mu = float64(mean[r])
				}
				sg, sgx := 0.0, 0.0
				for i, v := range xr {
					xh[i] = (float64(v) - mu) * rs
					g[i] = float64(dyr[i]) * float64(gamma[i])
					sg += g[i]
					sgx += g[i] * xh[i]
				}
				sg /= float64(c)
				sgx /= float64(c)
				if !centered {
					sg = 0
				}
				if dx != nil {
					dxr := dx[r*c : (r+1)*c]
					for i := range dxr {
						dxr[i] = T(rs * (g[i] - sg - xh[i]*sgx))
					}
				}
				if pg != nil {
					p := pg[blk*c : (blk+1)*c]
					for i, v := range dyr {
						p[i] += float64(v) * xh[i]
					}
				}
				if pb != nil {
					p := pb[blk*c : (blk+1)*c]
					for i, v := range dyr {
						p[i] += float64(v)
					}
				}
			}
		}
	})
	for _, acc := range []struct {
		part []float64
		dst  []T
	}{{pg, dGamma}, {pb, dBeta}} {
		if acc.dst == nil {
			continue
		}
		for i := range acc.dst {
			s := 0.0
			for blk := 0; blk < nb; blk++ {
				s += acc.part[blk*c+i]
			}
			acc.dst[i] = T(float64(acc.dst[i]) + s)
		}
	}
}
