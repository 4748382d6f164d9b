package emu

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels/emu/internal/srcdigest"
)

// TestKernelSourcesCurrent fails when a .cu or .cuh file changed after
// sources.h was generated: Go's build cache would then keep running the old
// kernels.
func TestKernelSourcesCurrent(t *testing.T) {
	want, err := srcdigest.Digest("..")
	require.NoError(t, err)
	b, err := os.ReadFile(srcdigest.HeaderName)
	require.NoError(t, err, "run go generate ./kernels/emu")
	got, ok := srcdigest.ParseHeader(string(b))
	require.True(t, ok, "no digest in %s; run go generate ./kernels/emu", srcdigest.HeaderName)
	require.Equal(t, want, got, "kernel sources changed since %s was generated, so this build may run stale kernels: "+
		"run go generate ./kernels/emu and test again", srcdigest.HeaderName)
}
