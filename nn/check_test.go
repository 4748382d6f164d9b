package nn

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

// hostOnly is a storage test that accepts host tensors only.
func hostOnly(op, name string, t *Tensor) error {
	if t.Device() != "cpu" {
		return fmt.Errorf("%s: %s is on device %q", op, name, t.Device())
	}
	return nil
}

func zeros(t *testing.T, dt runtime.DType, shape ...int) *Tensor {
	t.Helper()
	x, err := Zeros(dt, shape...)
	require.NoError(t, err)
	return x
}

func TestCheckerMessages(t *testing.T) {
	x := zeros(t, runtime.F32, 2, 3)
	cases := []struct {
		name string
		run  func(ck *Checker)
		want string
	}{
		{"nil", func(ck *Checker) { ck.Tensor("x", nil) }, "op: x is nil"},
		{"device", func(ck *Checker) { ck.Tensor("x", &Tensor{data: deviceBuf{}}) }, `op: x is on device "emu"`},
		{"shape", func(ck *Checker) { ck.Tensor("x", x, -1, 4) }, "op: x has shape [2 3], want [? 4]"},
		{"dtype", func(ck *Checker) { ck.Tensor("x", x); ck.Tensor("y", zeros(t, runtime.F64, 2, 3)) },
			"op: y has dtype F64, want F32 (same as x)"},
		{"numel", func(ck *Checker) { CheckSame(ck, []string{"x", "y"}, []*Tensor{x, zeros(t, runtime.F32, 5)}, nil) },
			"op: y has 5 elements (shape [5]), want 6"},
		{"first failure kept", func(ck *Checker) { ck.Failf("a %d", 1); ck.Failf("b") }, "op: a 1"},
		{"dropout", func(ck *Checker) { CheckDropout(ck, Dropout{P: 1}) }, "op: dropout probability 1 outside [0,1)"},
		{"ids", func(ck *Checker) { CheckIDs(ck, "ids", []int32{0, 7}, 5) }, "op: ids[1] = 7 outside [0,5)"},
		{"lists", func(ck *Checker) { CheckLists(ck, []float64{1}, []string{"params", "grads"}, []*Tensor{x}, nil) },
			"op: grads has 0 tensors, want 1 (one per learning rate)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ck := NewChecker("op", hostOnly)
			c.run(ck)
			require.EqualError(t, ck.Err(), c.want)
		})
	}
}

func TestCheckerNoop(t *testing.T) {
	ck := NewChecker("op", hostOnly)
	name, _ := ck.First()
	require.Empty(t, name)
	ck.Optional("b", nil, 1, 2)
	ck.Tensor("a", zeros(t, runtime.F64, 4))
	require.NoError(t, ck.Err())
	name, dt := ck.First()
	require.Equal(t, "a", name)
	require.Equal(t, runtime.F64, dt)

	sentinel := errors.New("device says no")
	ck = NewChecker("op", func(string, string, *Tensor) error { return sentinel })
	ck.Tensor("a", zeros(t, runtime.F32, 1))
	require.ErrorIs(t, ck.Err(), sentinel)
	require.Equal(t, sentinel, ck.FailfErr("later"))
}

func TestCheckDims(t *testing.T) {
	ck := NewChecker("op", hostOnly)
	l := LoRALinear{W: zeros(t, runtime.F32, 5, 3), A: zeros(t, runtime.F32, 2, 3), B: zeros(t, runtime.F32, 5, 2)}
	require.Equal(t, LoRADims{N: 4, In: 3, Out: 5, R: 2}, CheckLoRA(ck, l, zeros(t, runtime.F32, 4, 3)))

	q, kv := zeros(t, runtime.F32, 6, 4, 16), zeros(t, runtime.F32, 6, 2, 16)
	a := CheckAttention(ck, Attention{CuSeqlens: []int32{0, 2, 6}}, q, kv, kv)
	require.Equal(t, AttentionDims{T: 6, HQ: 4, HKV: 2, D: 16, Scale: 0.25}, a)

	x := CheckXent(ck, CrossEntropy{Labels: []int32{1, IgnoreIndex}, Norm: 1}, zeros(t, runtime.F32, 2, 3), zeros(t, runtime.F32, 7, 3))
	require.Equal(t, XentDims{N: 2, D: 3, V: 7}, x)

	rows, c := NormRows(ck, zeros(t, runtime.F32, 2, 3, 4))
	require.Equal(t, [2]int{6, 4}, [2]int{rows, c})
	require.NoError(t, ck.Err())

	ck = NewChecker("op", hostOnly)
	CheckAttention(ck, Attention{CuSeqlens: []int32{0, 4, 3, 6}}, q, kv, kv)
	require.EqualError(t, ck.Err(), "op: cu_seqlens decreases at index 2 (3 < 4)")
}
