package nn

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
)

type deviceBuf struct{}

func (deviceBuf) Device() string { return "emu" }

func TestTensorConstructors(t *testing.T) {
	x, err := FromF32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	require.NoError(t, err)
	require.Equal(t, []int{2, 3}, x.Shape())
	require.Equal(t, 2, x.Rank())
	require.Equal(t, 3, x.Dim(-1))
	require.Equal(t, 6, x.Numel())
	require.Equal(t, runtime.F32, x.DType())
	require.Equal(t, "cpu", x.Device())
	require.Equal(t, "Tensor[2 3]F32@cpu", x.String())
	v, err := x.F32()
	require.NoError(t, err)
	require.Equal(t, []float32{1, 2, 3, 4, 5, 6}, v)
	_, err = x.F64()
	require.ErrorContains(t, err, "not an F64 host tensor")

	// Shape() is a copy.
	s := x.Shape()
	s[0] = 99
	require.Equal(t, 2, x.Dim(0))

	z, err := Zeros(runtime.F64, 3, 0, 2)
	require.NoError(t, err)
	require.Equal(t, 0, z.Numel())
	scalar, err := FromF64([]float64{7})
	require.NoError(t, err)
	require.Equal(t, 1, scalar.Numel())
	require.Equal(t, 0, scalar.Rank())

	_, err = FromF32([]float32{1, 2}, 3)
	require.ErrorContains(t, err, "HostF32 storage has 2 elements, shape [3] needs 3")
	_, err = New(runtime.F64, HostF32{1}, 1)
	require.ErrorContains(t, err, "HostF32 storage with dtype F64")
	_, err = Zeros(runtime.BF16, 2)
	require.ErrorContains(t, err, "host tensors are F32 or F64")
	_, err = Zeros(runtime.F32, 2, -1)
	require.ErrorContains(t, err, "negative dimension 1")
	_, err = New(runtime.F32, nil, 1)
	require.Error(t, err)

	// Device storage is accepted as is.
	d, err := New(runtime.BF16, deviceBuf{}, 4, 4)
	require.NoError(t, err)
	require.Equal(t, "emu", d.Device())
	_, err = d.F32()
	require.ErrorContains(t, err, "on emu is not an F32 host tensor")
}

func TestTensorReshape(t *testing.T) {
	x, err := FromF64([]float64{1, 2, 3, 4, 5, 6}, 2, 3)
	require.NoError(t, err)
	y, err := x.Reshape(3, 2)
	require.NoError(t, err)
	require.Equal(t, []int{3, 2}, y.Shape())
	yv, _ := y.F64()
	yv[0] = 42 // shares storage
	xv, _ := x.F64()
	require.Equal(t, 42.0, xv[0])
	_, err = x.Reshape(4, 2)
	require.ErrorContains(t, err, "reshape [2 3] to [4 2]")
}
