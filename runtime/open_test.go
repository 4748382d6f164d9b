//go:build !cuda

package runtime_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/runtime"
	_ "github.com/perkgo/perk/runtime/emu"
)

func TestOpenCUDAWithoutTag(t *testing.T) {
	_, err := runtime.Open("cuda")
	require.Error(t, err)
	require.True(t, errors.Is(err, runtime.ErrNoCUDA))
	require.Contains(t, err.Error(), "make build-cuda")
}

func TestOpenUnknown(t *testing.T) {
	_, err := runtime.Open("tpu")
	require.ErrorContains(t, err, `unknown device kind`)
}

func TestOpenEmu(t *testing.T) {
	d, err := runtime.Open("emu")
	require.NoError(t, err)
	require.Equal(t, "emu", d.Kind())
	require.NoError(t, d.Close())
}
