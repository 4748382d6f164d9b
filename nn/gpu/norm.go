package gpu

import (
	"github.com/perkgo/perk/kernels"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// LayerNormForward computes y = (x−mean)·rstd·γ + β over the last dimension
// (kernel layernorm_fwd: f32 two-pass statistics, one warp per row).
func (b *Backend) LayerNormForward(x, gamma, beta *nn.Tensor, eps float64, y, mean, rstd *nn.Tensor) error {
	const op = "layernorm fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckLayerNormForward(ck, x, gamma, beta, eps, y, mean, rstd)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.Numel() == 0 {
		return nil
	}
	s := b.scratch(op)
	defer s.free()
	meanA, meanDone, err := s.f32Out(mean)
	if err != nil {
		return err
	}
	rstdA, rstdDone, err := s.f32Out(rstd)
	if err != nil {
		return err
	}
	if err := kernels.LayerNormForward(b.stream, b.arr(x), b.arr(gamma), b.arr(beta), eps, b.arr(y), meanA, rstdA); err != nil {
		return wrap(op, err)
	}
	if err := meanDone(); err != nil {
		return wrap(op, err)
	}
	return wrap(op, rstdDone())
}

// LayerNormBackward computes dx (overwritten), dγ and dβ (accumulated) with
// the layernorm_bwd and norm_colsum kernels (column sums over 32-row blocks
// added in block order).
func (b *Backend) LayerNormBackward(x, gamma, mean, rstd, dy, dx, dGamma, dBeta *nn.Tensor) error {
	const op = "layernorm bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	rows, c := nn.CheckLayerNormBackward(ck, x, gamma, mean, rstd, dy, dx, dGamma, dBeta)
	if ck.Err() != nil {
		return ck.Err()
	}
	return b.normBackward(op, true, rows, c, x, gamma, mean, rstd, dy, dx, dGamma, dBeta)
}

// RMSNormForward computes y = x·rstd·γ, rstd = 1/√(mean(x²)+eps) (kernel
// rmsnorm_fwd).
func (b *Backend) RMSNormForward(x, gamma *nn.Tensor, eps float64, y, rstd *nn.Tensor) error {
	const op = "rmsnorm fwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	nn.CheckRMSNormForward(ck, x, gamma, eps, y, rstd)
	if ck.Err() != nil {
		return ck.Err()
	}
	if x.Numel() == 0 {
		return nil
	}
	s := b.scratch(op)
	defer s.free()
	rstdA, rstdDone, err := s.f32Out(rstd)
	if err != nil {
		return err
	}
	if err := kernels.RMSNormForward(b.stream, b.arr(x), b.arr(gamma), eps, b.arr(y), rstdA); err != nil {
		return wrap(op, err)
	}
	return wrap(op, rstdDone())
}

// RMSNormBackward computes dx (overwritten) and dγ (accumulated) with the
// rmsnorm_bwd and norm_colsum kernels.
func (b *Backend) RMSNormBackward(x, gamma, rstd, dy, dx, dGamma *nn.Tensor) error {
	const op = "rmsnorm bwd"
	if err := b.lock(op); err != nil {
		return err
	}
	defer b.unlock()
	ck := b.newChecker(op)
	rows, c := nn.CheckRMSNormBackward(ck, x, gamma, rstd, dy, dx, dGamma)
	if ck.Err() != nil {
		return ck.Err()
	}
	return b.normBackward(op, false, rows, c, x, gamma, nil, rstd, dy, dx, dGamma, nil)
}

func (b *Backend) normBackward(op string, centered bool, rows, c int, x, gamma, mean, rstd, dy, dx, dGamma, dBeta *nn.Tensor) error {
	if x.Numel() == 0 || (dx == nil && dGamma == nil && dBeta == nil) {
		return nil
	}
	s := b.scratch(op)
	defer s.free()
	meanA, err := s.f32(mean)
	if err != nil {
		return err
	}
	rstdA, err := s.f32(rstd)
	if err != nil {
		return err
	}
	var scr kernels.Array
	if dGamma != nil || dBeta != nil {
		if scr, err = s.alloc(runtime.F32, kernels.NormScratchLen(rows, c)); err != nil {
			return err
		}
	}
	if centered {
		err = kernels.LayerNormBackward(b.stream, b.arr(x), b.arr(gamma), meanA, rstdA, b.arr(dy), b.arr(dx), b.arr(dGamma), b.arr(dBeta), scr)
	} else {
		err = kernels.RMSNormBackward(b.stream, b.arr(x), b.arr(gamma), rstdA, b.arr(dy), b.arr(dx), b.arr(dGamma), scr)
	}
	return wrap(op, err)
}
