package nn

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

// TestCheckOpsMessages pins the first-failure messages and check order of the
// per-op checks the backends share.
func TestCheckOpsMessages(t *testing.T) {
	f := func(shape ...int) *Tensor { return zeros(t, runtime.F32, shape...) }
	cases := []struct {
		name string
		run  func(ck *Checker)
		want string
	}{
		{"layernorm gamma", func(ck *Checker) { CheckLayerNormForward(ck, f(2, 3), f(4), nil, 1e-5, f(2, 3), nil, nil) },
			"op: gamma has 4 elements (shape [4]), want 3"},
		{"layernorm eps", func(ck *Checker) { CheckLayerNormForward(ck, f(2, 3), f(3), nil, -1, f(2, 3), nil, nil) },
			"op: eps -1 must be finite and ≥ 0"},
		{"layernorm bwd dy before dx", func(ck *Checker) {
			CheckLayerNormBackward(ck, f(2, 3), f(3), f(2), f(2), f(5), f(7), nil, nil)
		}, "op: dy has 5 elements (shape [5]), want 6"},
		{"rmsnorm rstd", func(ck *Checker) { CheckRMSNormForward(ck, f(2, 3), f(3), 0, f(2, 3), f(3)) },
			"op: rstd has 3 elements (shape [3]), want 2"},
		{"swiglu", func(ck *Checker) { CheckSwiGLUBackward(ck, f(4), f(4), f(4), nil, f(3)) },
			"op: dUp has 3 elements (shape [3]), want 4"},
		{"embedding positions", func(ck *Checker) { CheckEmbeddingForward(ck, []int32{0, 1}, f(3, 2), []int32{0}, f(4, 2), f(2, 2)) },
			"op: 1 positions for 2 ids"},
		{"embedding ids", func(ck *Checker) { CheckEmbeddingBackward(ck, []int32{0, 3}, nil, f(2, 2), f(3, 2), nil) },
			"op: ids[1] = 3 outside [0,3)"},
		{"copycolumns rows", func(ck *Checker) { CheckCopyColumns(ck, f(2, 3), 0, f(3, 3), 0, 1) },
			"op: dst has 2 rows, src has 3"},
		{"copycolumns dst", func(ck *Checker) { CheckCopyColumns(ck, f(2, 3), 2, f(2, 3), 0, 2) },
			"op: destination columns [2,4) outside dst with 3 columns"},
		{"add", func(ck *Checker) { CheckAdd(ck, f(3), f(3), f(2)) }, "op: out has 2 elements (shape [2]), want 3"},
		{"matmul inner", func(ck *Checker) { CheckMatMul(ck, false, true, f(2, 3), f(4, 2), f(2, 4)) },
			"op: inner dimensions differ: op(a) is [2 3], op(b) is [2 4]"},
		{"matmul c", func(ck *Checker) { CheckMatMul(ck, true, false, f(3, 2), f(3, 4), f(3, 4)) },
			"op: c has shape [3 4], want [2 4]"},
		{"clip", func(ck *Checker) { CheckClipGlobalNorm(ck, []*Tensor{f(2)}, 0) }, "op: maxNorm 0 must be positive"},
		{"clip list first", func(ck *Checker) { CheckClipGlobalNorm(ck, []*Tensor{nil}, 0) }, "op: xs[0] is nil"},
		{"sgd vjp dLRs", func(ck *Checker) {
			CheckSGDStepVJP(ck, 0, []float64{1}, []*Tensor{f(2)}, []*Tensor{f(2)}, []*Tensor{f(2)}, []*Tensor{f(2)}, nil)
		},
			"op: dLRs has 0 entries, want 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ck := NewChecker("op", hostOnly)
			c.run(ck)
			require.EqualError(t, ck.Err(), c.want)
		})
	}
}

// TestCheckOpsSizes checks the sizes the per-op checks return.
func TestCheckOpsSizes(t *testing.T) {
	f := func(shape ...int) *Tensor { return zeros(t, runtime.F32, shape...) }
	ck := NewChecker("op", hostOnly)
	rows, c := CheckLayerNormBackward(ck, f(2, 5, 3), f(3), f(10), f(10), f(2, 5, 3), nil, f(3), nil)
	require.NoError(t, ck.Err())
	require.Equal(t, [2]int{10, 3}, [2]int{rows, c})
	m, n, k := CheckMatMul(ck, true, true, f(3, 2), f(4, 3), f(2, 4))
	require.NoError(t, ck.Err())
	require.Equal(t, [3]int{2, 4, 3}, [3]int{m, n, k})
	tt, d := CheckEmbeddingForward(ck, []int32{1, 0, 2}, f(3, 4), nil, nil, f(3, 4))
	require.NoError(t, ck.Err())
	require.Equal(t, [2]int{3, 4}, [2]int{tt, d})
}
