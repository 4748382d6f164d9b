package kernels

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

// ReduceOp selects a reduction.
type ReduceOp string

// The reductions of reduce.cu.
const (
	Sum   ReduceOp = "sum"
	SumSq ReduceOp = "sumsq"
	Max   ReduceOp = "max"
	Dot   ReduceOp = "dot"
)

var reduceFamily = func() family {
	var names []string
	for _, op := range []ReduceOp{Sum, SumSq, Max, Dot} {
		for _, t := range []string{"f32", "bf16", "f16"} {
			names = append(names, "reduce_"+string(op)+"_"+t)
		}
		names = append(names, "reduce_final_"+string(op))
	}
	return newFamily("reduce", names...)
}()

const (
	reduceThreads   = 256
	reduceMaxBlocks = 1024
	reduceItems     = 4 // elements per thread before the grid grows
)

// ReduceGrid is the number of first-pass blocks (and partials) for n
// elements. It depends on n only, so results are identical on every device.
func ReduceGrid(n int) int {
	b := (n + reduceThreads*reduceItems - 1) / (reduceThreads * reduceItems)
	return max(1, min(b, reduceMaxBlocks))
}

// Reduce computes op over x (and y for Dot) into out[0] (an f32 array with at
// least one element), deterministically. scratch is an f32 array of at least
// ReduceGrid(x.Numel()) elements. Max over zero elements is -Inf; the sums are 0.
func Reduce(s runtime.Stream, op ReduceOp, out, x, y, scratch Array) error {
	k := "reduce_" + string(op)
	switch op {
	case Sum, SumSq, Max, Dot:
	default:
		return fmt.Errorf("reduce: unknown op %q", op)
	}
	args := []namedArray{arg("out", out), arg("x", x), arg("scratch", scratch)}
	if op == Dot {
		args = append(args, arg("y", y))
	} else if y.Dev != nil || y.Ptr != 0 {
		return fmt.Errorf("%s: argument y is only used by dot", k)
	}
	if err := checkDev(k, x.Dev, args...); err != nil {
		return err
	}
	if err := checkDType(k, "x", x, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return err
	}
	if op == Dot {
		if err := checkDType(k, "y", y, x.DType); err != nil {
			return err
		}
		if err := checkSameLen(k, arg("x", x), arg("y", y)); err != nil {
			return err
		}
	}
	if err := checkDType(k, "out", out, runtime.F32); err != nil {
		return err
	}
	if out.Numel() < 1 {
		return fmt.Errorf("%s: argument out has no elements", k)
	}
	n := x.Numel()
	grid := ReduceGrid(n)
	if err := checkDType(k, "scratch", scratch, runtime.F32); err != nil {
		return err
	}
	if scratch.Numel() < grid {
		return fmt.Errorf("%s: argument scratch has %d elements, want at least %d", k, scratch.Numel(), grid)
	}
	dev := x.Dev
	fn, err := function(dev, reduceFamily, k+"_"+suffix(x.DType))
	if err != nil {
		return err
	}
	final, err := function(dev, reduceFamily, "reduce_final_"+string(op))
	if err != nil {
		return err
	}
	var yp runtime.DevicePtr
	if op == Dot {
		yp = y.Ptr
	}
	if err := dev.Launch(fn, runtime.D1(grid), runtime.D1(reduceThreads), 0, s,
		[]uint64{runtime.PtrParam(x.Ptr), runtime.PtrParam(yp), runtime.I64Param(n), runtime.PtrParam(scratch.Ptr)}); err != nil {
		return fmt.Errorf("launch %s: %w", k, err)
	}
	if err := dev.Launch(final, runtime.D1(1), runtime.D1(reduceThreads), 0, s,
		[]uint64{runtime.PtrParam(scratch.Ptr), runtime.I64Param(grid), runtime.PtrParam(out.Ptr)}); err != nil {
		return fmt.Errorf("launch reduce_final_%s: %w", op, err)
	}
	return nil
}
