package kernels

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var normFamily = func() family {
	var names []string
	for _, t := range []string{"f32", "bf16", "f16"} {
		names = append(names, "layernorm_fwd_"+t, "rmsnorm_fwd_"+t, "layernorm_bwd_"+t, "rmsnorm_bwd_"+t, "norm_colsum_"+t)
	}
	return newFamily("norm", names...)
}()

const (
	normThreads  = 256
	normFwdRows  = normThreads / 32 // one warp per row
	normBwdRows  = 32               // rows per backward block (one partial row each)
	normMaxBlock = 1<<31 - 1
)

// NormScratchLen is the number of f32 scratch elements LayerNormBackward and
// RMSNormBackward need for x with the given rows and last dimension C: one
// partial row of dγ and one of dβ per block of 32 rows (RMSNorm uses half).
func NormScratchLen(rows, c int) int { return 2 * normBwdBlocks(rows) * c }

func normBwdBlocks(rows int) int { return (rows + normBwdRows - 1) / normBwdRows }

// normGiven reports whether an optional array argument was given (the zero
// Array means absent).
func normGiven(a Array) bool { return a.Dev != nil || a.Ptr != 0 }

// normPtr is the kernel parameter of an optional array: its address or null.
func normPtr(a Array) uint64 {
	if !normGiven(a) {
		return 0
	}
	return runtime.PtrParam(a.Ptr)
}

// normArgs checks the arguments shared by the norm wrappers and returns rows
// and C. data are the arrays of x's storage type with x's element count;
// params those of x's type with C elements; stats the f32 [rows] arrays.
// Arrays listed in optional may be absent (the zero Array).
type normArgs struct {
	kernel   string
	x        namedArray
	data     []namedArray
	params   []namedArray
	stats    []namedArray
	optional map[string]bool
}

func (n normArgs) check() (rows, c int, err error) {
	k, x := n.kernel, n.x.a
	if err := checkDev(k, x.Dev, n.x); err != nil {
		return 0, 0, err
	}
	if err := checkDType(k, "x", x, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return 0, 0, err
	}
	if len(x.Shape) < 1 || x.Shape[len(x.Shape)-1] < 1 {
		return 0, 0, fmt.Errorf("%s: argument x has shape %v, want [..., C] with C ≥ 1", k, x.Shape)
	}
	c = x.Shape[len(x.Shape)-1]
	rows = x.Numel() / c
	if (rows+normFwdRows-1)/normFwdRows > normMaxBlock {
		return 0, 0, fmt.Errorf("%s: argument x has shape %v: too many rows", k, x.Shape)
	}
	check := func(list []namedArray, dt runtime.DType, want int, what string) error {
		for _, a := range list {
			if !normGiven(a.a) {
				if n.optional[a.name] {
					continue
				}
				return fmt.Errorf("%s: argument %s is missing", k, a.name)
			}
			if err := checkDev(k, x.Dev, a); err != nil {
				return err
			}
			if err := checkDType(k, a.name, a.a, dt); err != nil {
				return err
			}
			if a.a.Numel() != want {
				return fmt.Errorf("%s: argument %s has shape %v, want %s (%d elements)", k, a.name, a.a.Shape, what, want)
			}
		}
		return nil
	}
	if err := check(n.data, x.DType, x.Numel(), fmt.Sprintf("the shape of x %v", x.Shape)); err != nil {
		return 0, 0, err
	}
	if err := check(n.params, x.DType, c, fmt.Sprintf("[%d]", c)); err != nil {
		return 0, 0, err
	}
	if err := check(n.stats, runtime.F32, rows, fmt.Sprintf("f32 [%d]", rows)); err != nil {
		return 0, 0, err
	}
	return rows, c, nil
}

func checkNormEps(kernel string, eps float64) error {
	if !(eps >= 0) || math.IsInf(eps, 0) || eps > math.MaxFloat32 {
		return fmt.Errorf("%s: eps %v must be finite and ≥ 0", kernel, eps)
	}
	return nil
}

func optionalSet(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

func normLaunch(dev runtime.Device, s runtime.Stream, name string, blocks int, params ...uint64) error {
	fn, err := function(dev, normFamily, name)
	if err != nil {
		return err
	}
	if blocks == 0 {
		return nil
	}
	if err := dev.Launch(fn, runtime.D1(blocks), runtime.D1(normThreads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// LayerNormForward normalises each row of x [..., C] over its last dimension:
// y = (x−mean)·rstd·gamma + beta, rstd = 1/√(var+eps) (biased variance, f32
// two-pass statistics). gamma and beta are [C] in x's storage type (f32, bf16
// or f16; beta may be absent); y has x's shape and type and may alias x. mean
// and rstd are f32 [rows] and may be absent. One warp per row.
func LayerNormForward(s runtime.Stream, x, gamma, beta Array, eps float64, y, mean, rstd Array) error {
	return layerNormForward(s, "layernorm_fwd", x, Array{}, Array{}, gamma, beta, eps, y, mean, rstd)
}

// AddLayerNormForward is the fused residual add + LayerNorm of GPT-2 blocks:
// sum = x + residual (rounded to the storage type) is written out, then
// normalised into y exactly as LayerNormForward(sum, ...). residual and sum
// have x's shape and type; sum may alias x or residual. There is no fused
// backward: LayerNormBackward with x = sum gives the gradient of sum, to which
// the caller adds the gradient that reaches sum from the residual stream.
func AddLayerNormForward(s runtime.Stream, x, residual, gamma, beta Array, eps float64, sum, y, mean, rstd Array) error {
	const k = "add_layernorm_fwd"
	if !normGiven(residual) {
		return fmt.Errorf("%s: argument residual is missing", k)
	}
	if !normGiven(sum) {
		return fmt.Errorf("%s: argument sum is missing", k)
	}
	return layerNormForward(s, k, x, residual, sum, gamma, beta, eps, y, mean, rstd)
}

func layerNormForward(s runtime.Stream, k string, x, res, hout, gamma, beta Array, eps float64, y, mean, rstd Array) error {
	rows, c, err := normArgs{
		kernel:   k,
		x:        arg("x", x),
		data:     []namedArray{arg("y", y), arg("residual", res), arg("sum", hout)},
		params:   []namedArray{arg("gamma", gamma), arg("beta", beta)},
		stats:    []namedArray{arg("mean", mean), arg("rstd", rstd)},
		optional: optionalSet("beta", "mean", "rstd", "residual", "sum"),
	}.check()
	if err != nil {
		return err
	}
	if err := checkNormEps(k, eps); err != nil {
		return err
	}
	return normLaunch(x.Dev, s, "layernorm_fwd_"+suffix(x.DType), (rows+normFwdRows-1)/normFwdRows,
		runtime.PtrParam(x.Ptr), normPtr(res), normPtr(hout), runtime.PtrParam(gamma.Ptr), normPtr(beta),
		runtime.PtrParam(y.Ptr), normPtr(mean), normPtr(rstd), runtime.I64Param(rows), runtime.I64Param(c),
		runtime.F32Param(float32(eps)))
}

// RMSNormForward computes y = x·rstd·gamma, rstd = 1/√(mean(x²)+eps), over
// the last dimension C of x [..., C] (f32, bf16 or f16; gamma [C] of the same
// type; y may alias x). rstd, f32 [rows], may be absent. One warp per row.
func RMSNormForward(s runtime.Stream, x, gamma Array, eps float64, y, rstd Array) error {
	return rmsNormForward(s, "rmsnorm_fwd", x, Array{}, Array{}, gamma, eps, y, rstd)
}

// AddRMSNormForward is the fused residual add + RMSNorm of Qwen2 blocks: sum =
// x + residual (rounded to the storage type) is written out, then normalised
// into y exactly as RMSNormForward(sum, ...). Forward only, as
// AddLayerNormForward.
func AddRMSNormForward(s runtime.Stream, x, residual, gamma Array, eps float64, sum, y, rstd Array) error {
	const k = "add_rmsnorm_fwd"
	if !normGiven(residual) {
		return fmt.Errorf("%s: argument residual is missing", k)
	}
	if !normGiven(sum) {
		return fmt.Errorf("%s: argument sum is missing", k)
	}
	return rmsNormForward(s, k, x, residual, sum, gamma, eps, y, rstd)
}

func rmsNormForward(s runtime.Stream, k string, x, res, hout, gamma Array, eps float64, y, rstd Array) error {
	rows, c, err := normArgs{
		kernel:   k,
		x:        arg("x", x),
		data:     []namedArray{arg("y", y), arg("residual", res), arg("sum", hout)},
		params:   []namedArray{arg("gamma", gamma)},
		stats:    []namedArray{arg("rstd", rstd)},
		optional: optionalSet("rstd", "residual", "sum"),
	}.check()
	if err != nil {
		return err
	}
	if err := checkNormEps(k, eps); err != nil {
		return err
	}
	return normLaunch(x.Dev, s, "rmsnorm_fwd_"+suffix(x.DType), (rows+normFwdRows-1)/normFwdRows,
		runtime.PtrParam(x.Ptr), normPtr(res), normPtr(hout), runtime.PtrParam(gamma.Ptr),
		runtime.PtrParam(y.Ptr), normPtr(rstd), runtime.I64Param(rows), runtime.I64Param(c),
		runtime.F32Param(float32(eps)))
}

// LayerNormBackward computes, with x̂ = (x−mean)·rstd and g = dy·gamma,
// dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) (overwritten; may alias dy),
// dGamma += Σ_rows dy·x̂ and dBeta += Σ_rows dy (accumulated), from forward's
// f32 mean and rstd [rows]. dx, dGamma and dBeta may each be absent. dGamma
// and dBeta are [C] in f32 or x's storage type (the same for both). The
// column sums are deterministic: per-block partials (32 rows each) go to
// scratch (f32, at least NormScratchLen(rows, C) elements) and a second
// kernel adds them in block order.
func LayerNormBackward(s runtime.Stream, x, gamma, mean, rstd, dy, dx, dGamma, dBeta, scratch Array) error {
	return normBackward(s, true, x, gamma, mean, rstd, dy, dx, dGamma, dBeta, scratch)
}

// RMSNormBackward computes, with x̂ = x·rstd and g = dy·gamma,
// dx = rstd·(g − x̂·mean(g·x̂)) (overwritten; may alias dy) and
// dGamma += Σ_rows dy·x̂, as LayerNormBackward without the mean and dBeta.
func RMSNormBackward(s runtime.Stream, x, gamma, rstd, dy, dx, dGamma, scratch Array) error {
	return normBackward(s, false, x, gamma, Array{}, rstd, dy, dx, dGamma, Array{}, scratch)
}

func normBackward(s runtime.Stream, centered bool, x, gamma, mean, rstd, dy, dx, dGamma, dBeta, scratch Array) error {
	k, stats := "rmsnorm_bwd", []namedArray{arg("rstd", rstd)}
	if centered {
		k, stats = "layernorm_bwd", []namedArray{arg("mean", mean), arg("rstd", rstd)}
	}
	rows, c, err := normArgs{
		kernel:   k,
		x:        arg("x", x),
		data:     []namedArray{arg("dy", dy), arg("dx", dx)},
		params:   []namedArray{arg("gamma", gamma)},
		stats:    stats,
		optional: optionalSet("dx"),
	}.check()
	if err != nil {
		return err
	}
	sums := []namedArray{}
	for _, a := range []namedArray{arg("dGamma", dGamma), arg("dBeta", dBeta)} {
		if !normGiven(a.a) {
			continue
		}
		if err := checkDev(k, x.Dev, a); err != nil {
			return err
		}
		if err := checkDType(k, a.name, a.a, runtime.F32, x.DType); err != nil {
			return err
		}
		if a.a.Numel() != c {
			return fmt.Errorf("%s: argument %s has shape %v, want [%d]", k, a.name, a.a.Shape, c)
		}
		if len(sums) > 0 && sums[0].a.DType != a.a.DType {
			return fmt.Errorf("%s: argument %s has dtype %s but %s has %s", k, a.name, a.a.DType, sums[0].name, sums[0].a.DType)
		}
		sums = append(sums, a)
	}
	nb := normBwdBlocks(rows)
	var pg, pb uint64
	if len(sums) > 0 {
		if err := checkDev(k, x.Dev, arg("scratch", scratch)); err != nil {
			return err
		}
		if err := checkDType(k, "scratch", scratch, runtime.F32); err != nil {
			return err
		}
		need := len(sums) * nb * c
		if normGiven(dGamma) && normGiven(dBeta) {
			need = NormScratchLen(rows, c)
		}
		if scratch.Numel() < need {
			return fmt.Errorf("%s: argument scratch has %d elements, want at least %d", k, scratch.Numel(), need)
		}
		if normGiven(dGamma) {
			pg = runtime.PtrParam(scratch.Ptr)
		}
		if normGiven(dBeta) {
			pb = runtime.PtrParam(scratch.Ptr.Add(nb * c * 4))
			if !normGiven(dGamma) {
				pb = runtime.PtrParam(scratch.Ptr)
			}
		}
	}
	if !normGiven(dx) && len(sums) == 0 {
		return nil
	}
	name := k + "_" + suffix(x.DType)
	var params []uint64
	if centered {
		params = []uint64{runtime.PtrParam(x.Ptr), runtime.PtrParam(gamma.Ptr), runtime.PtrParam(mean.Ptr),
			runtime.PtrParam(rstd.Ptr), runtime.PtrParam(dy.Ptr), normPtr(dx), pg, pb, runtime.I64Param(rows), runtime.I64Param(c)}
	} else {
		params = []uint64{runtime.PtrParam(x.Ptr), runtime.PtrParam(gamma.Ptr), runtime.PtrParam(rstd.Ptr),
			runtime.PtrParam(dy.Ptr), normPtr(dx), pg, runtime.I64Param(rows), runtime.I64Param(c)}
	}
	if err := normLaunch(x.Dev, s, name, nb, params...); err != nil {
		return err
	}
	if len(sums) == 0 || rows == 0 {
		return nil
	}
	return launch1D(x.Dev, s, normFamily, "norm_colsum_"+suffix(sums[0].a.DType), c,
		pg, pb, runtime.I64Param(nb), runtime.I64Param(c), normPtr(dGamma), normPtr(dBeta))
}
