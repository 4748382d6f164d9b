package kernels

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

var actFamily = func() family {
	var names []string
	for _, t := range []string{"f32", "bf16", "f16"} {
		names = append(names, "gelu_fwd_"+t, "gelu_bwd_"+t, "swiglu_fwd_"+t, "swiglu_bwd_"+t)
	}
	return newFamily("act", names...)
}()

// actCheck checks that every given array is on the device of the first,
// has its storage type (f32, bf16 or f16) and its element count; arrays
// named in optional may be absent (the zero Array).
func actCheck(kernel string, args []namedArray, optional ...string) error {
	first := args[0]
	if err := checkDev(kernel, first.a.Dev, first); err != nil {
		return err
	}
	if err := checkDType(kernel, first.name, first.a, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
outer:
	for _, a := range args[1:] {
		if !normGiven(a.a) {
			for _, o := range optional {
				if o == a.name {
					continue outer
				}
			}
			return fmt.Errorf("%s: argument %s is missing", kernel, a.name)
		}
		if err := checkDev(kernel, first.a.Dev, a); err != nil {
			return err
		}
		if err := checkDType(kernel, a.name, a.a, first.a.DType); err != nil {
			return err
		}
		if err := checkSameLen(kernel, first, a); err != nil {
			return err
		}
	}
	return nil
}

// GELUForward sets y = 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))) (GPT-2's tanh
// approximation) elementwise. x and y have one storage type (f32, bf16 or
// f16) and element count; y may alias x.
func GELUForward(s runtime.Stream, x, y Array) error {
	const k = "gelu_fwd"
	if err := actCheck(k, []namedArray{arg("x", x), arg("y", y)}); err != nil {
		return err
	}
	n := x.Numel()
	return launch1D(x.Dev, s, actFamily, k+"_"+suffix(x.DType), n,
		runtime.PtrParam(x.Ptr), runtime.PtrParam(y.Ptr), runtime.I64Param(n))
}

// GELUBackward sets dx = dy·GELU'(x) elementwise; dx may alias dy or x.
func GELUBackward(s runtime.Stream, x, dy, dx Array) error {
	const k = "gelu_bwd"
	if err := actCheck(k, []namedArray{arg("x", x), arg("dy", dy), arg("dx", dx)}); err != nil {
		return err
	}
	n := x.Numel()
	return launch1D(x.Dev, s, actFamily, k+"_"+suffix(x.DType), n,
		runtime.PtrParam(x.Ptr), runtime.PtrParam(dy.Ptr), runtime.PtrParam(dx.Ptr), runtime.I64Param(n))
}

// SwiGLUForward sets y = silu(gate)·up, silu(g) = g·σ(g), elementwise (Qwen2's
// MLP); y may alias either input.
func SwiGLUForward(s runtime.Stream, gate, up, y Array) error {
	const k = "swiglu_fwd"
	if err := actCheck(k, []namedArray{arg("gate", gate), arg("up", up), arg("y", y)}); err != nil {
		return err
	}
	n := gate.Numel()
	return launch1D(gate.Dev, s, actFamily, k+"_"+suffix(gate.DType), n,
		runtime.PtrParam(gate.Ptr), runtime.PtrParam(up.Ptr), runtime.PtrParam(y.Ptr), runtime.I64Param(n))
}

// SwiGLUBackward sets dGate = dy·up·σ(g)·(1+g·(1−σ(g))) and dUp = dy·silu(g)
// elementwise; either output may be absent (the zero Array) and either may
// alias any input.
func SwiGLUBackward(s runtime.Stream, gate, up, dy, dGate, dUp Array) error {
	const k = "swiglu_bwd"
	if err := actCheck(k, []namedArray{arg("gate", gate), arg("up", up), arg("dy", dy), arg("dGate", dGate), arg("dUp", dUp)},
		"dGate", "dUp"); err != nil {
		return err
	}
	if !normGiven(dGate) && !normGiven(dUp) {
		return nil
	}
	n := gate.Numel()
	return launch1D(gate.Dev, s, actFamily, k+"_"+suffix(gate.DType), n,
		runtime.PtrParam(gate.Ptr), runtime.PtrParam(up.Ptr), runtime.PtrParam(dy.Ptr), normPtr(dGate), normPtr(dUp),
		runtime.I64Param(n))
}
