package kernels

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var ropeFamily = func() family {
	var names []string
	for _, t := range []string{"f32", "bf16", "f16"} {
		names = append(names, "rope_fwd_"+t, "rope_bwd_"+t)
	}
	return newFamily("rope", names...)
}()

// RoPEInvFreq returns the D/2 rotary frequencies theta^(−2i/D), computed in
// float64 (as nn/cpu does); the kernels take them rounded to f32.
func RoPEInvFreq(theta float64, d int) ([]float64, error) {
	if !(theta > 0) || math.IsInf(theta, 0) {
		return nil, fmt.Errorf("rope: theta %v must be finite and positive", theta)
	}
	if d < 2 || d%2 != 0 {
		return nil, fmt.Errorf("rope: head dimension %d must be even and ≥ 2", d)
	}
	out := make([]float64, d/2)
	for i := range out {
		out[i] = math.Pow(theta, -float64(2*i)/float64(d))
	}
	return out, nil
}

// NewRoPEInvFreq uploads RoPEInvFreq(theta, d) to dev as an f32 [D/2] array,
// the invFreq argument of RoPEForward/RoPEBackward (Qwen2: theta = 1e6). Make
// it once per model and free it with FreeArray.
func NewRoPEInvFreq(dev runtime.Device, theta float64, d int) (Array, error) {
	f, err := RoPEInvFreq(theta, d)
	if err != nil {
		return Array{}, err
	}
	return Upload(dev, runtime.F32, []int{d / 2}, f)
}

// RoPEForward rotates each head of x [T,H,D] by its token's position with the
// rotate-half convention of HF Qwen2/Llama: for i < D/2 and angle
// a = positions[t]·invFreq[i] (an f32 product, as HF computes it),
// y[i] = x[i]·cos a − x[i+D/2]·sin a and y[i+D/2] = x[i+D/2]·cos a + x[i]·sin a.
// positions is I32 [T] (restarting at 0 in each packed segment), invFreq f32
// [D/2] from NewRoPEInvFreq; x and y share a storage type (f32, bf16 or f16)
// and y may alias x.
func RoPEForward(s runtime.Stream, x, positions, invFreq, y Array) error {
	return ropeLaunch(s, "rope_fwd", "x", "y", x, positions, invFreq, y)
}

// RoPEBackward applies the inverse rotation (angle −a) to dy [T,H,D]; dx may
// alias dy.
func RoPEBackward(s runtime.Stream, dy, positions, invFreq, dx Array) error {
	return ropeLaunch(s, "rope_bwd", "dy", "dx", dy, positions, invFreq, dx)
}

func ropeLaunch(s runtime.Stream, k, xName, yName string, x, positions, invFreq, y Array) error {
	if err := checkDev(k, x.Dev, arg(xName, x), arg(yName, y), arg("positions", positions), arg("invFreq", invFreq)); err != nil {
		return err
	}
	if err := checkDType(k, xName, x, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if err := checkDType(k, yName, y, x.DType); err != nil {
		return err
	}
	if err := checkDType(k, "positions", positions, runtime.I32); err != nil {
		return err
	}
	if err := checkDType(k, "invFreq", invFreq, runtime.F32); err != nil {
		return err
	}
	if len(x.Shape) != 3 || x.Shape[0] < 0 || x.Shape[1] < 0 || x.Shape[2] < 2 || x.Shape[2]%2 != 0 {
		return fmt.Errorf("%s: argument %s has shape %v, want [T,H,D] with D even and ≥ 2", k, xName, x.Shape)
	}
	t, h, d := x.Shape[0], x.Shape[1], x.Shape[2]
	if len(y.Shape) != 3 || y.Shape[0] != t || y.Shape[1] != h || y.Shape[2] != d {
		return fmt.Errorf("%s: argument %s has shape %v, want [%d,%d,%d]", k, yName, y.Shape, t, h, d)
	}
	if positions.Numel() != t {
		return fmt.Errorf("%s: argument positions has shape %v, want [%d] (one per token)", k, positions.Shape, t)
	}
	if invFreq.Numel() != d/2 {
		return fmt.Errorf("%s: argument invFreq has shape %v, want [%d] (D/2)", k, invFreq.Shape, d/2)
	}
	if h == 0 {
		t = 0
	}
	return launch1D(x.Dev, s, ropeFamily, k+"_"+suffix(x.DType), t*(d/2),
		runtime.PtrParam(x.Ptr), runtime.PtrParam(y.Ptr), runtime.PtrParam(positions.Ptr), runtime.PtrParam(invFreq.Ptr),
		runtime.I64Param(t), runtime.I64Param(h), runtime.I64Param(d))
}
