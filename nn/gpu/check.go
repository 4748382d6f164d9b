package gpu

// Argument validation: the shared nn.Checker and nn.Check* helpers with this
// backend's device test (a tensor must live on this backend, be unreleased
// and have dtype F32 or BF16), so both backends reject the same calls with
// the same words. The gpu-only limits (f32-only ops, kernel maximums) are
// here and beside their ops.

import (
	"fmt"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

func (b *Backend) newChecker(op string) *nn.Checker { return nn.NewChecker(op, b.devCheck) }

// devCheck verifies that t is an unreleased F32 or BF16 tensor of b.
func (b *Backend) devCheck(op, name string, t *nn.Tensor) error {
	s, ok := t.Storage().(*Storage)
	if !ok || s.b != b {
		return fmt.Errorf("%s: %s is on device %q, want a tensor of this %s backend", op, name, t.Device(), b.kind)
	}
	if s.released {
		return fmt.Errorf("%s: %s was released", op, name)
	}
	if !supported(t.DType()) {
		return fmt.Errorf("%s: %s has dtype %v, the gpu backend supports F32 and BF16", op, name, t.DType())
	}
	return nil
}

// f32Only records an error unless the checked tensors are F32 (ops whose
// kernels exist for f32 storage only).
func f32Only(ck *nn.Checker) {
	if first, dt := ck.First(); first != "" && dt != runtime.F32 {
		ck.Failf("%s has dtype %v; the gpu backend runs this op on F32 tensors only", first, dt)
	}
}

// loraDims are the sizes of one LoRALinear call.
type loraDims struct{ n, in, out, r int }

// loraDimsOf converts the shared checker's sizes.
func loraDimsOf(d nn.LoRADims) loraDims {
	return loraDims{n: d.N, in: d.In, out: d.Out, r: d.R}
}

// attnDims are the sizes of one attention call.
type attnDims struct {
	t, hq, hkv, d int
	scale         float64
}

// attnDimsOf converts the shared checker's sizes.
func attnDimsOf(d nn.AttentionDims) attnDims {
	return attnDims{t: d.T, hq: d.HQ, hkv: d.HKV, d: d.D, scale: d.Scale}
}

// xentDims are the sizes of one cross-entropy call.
type xentDims struct{ n, d, v int }

// xentDimsOf converts the shared checker's sizes.
func xentDimsOf(d nn.XentDims) xentDims {
	return xentDims{n: d.N, d: d.D, v: d.V}
}
