package outdir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	require.NoError(t, Check("--out", dir))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "the probe file is removed")

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	err = Check("--out", filepath.Join(file, "x"))
	require.ErrorContains(t, err, "--out "+filepath.Join(file, "x")+": ")
	err = Check("--out", file)
	require.ErrorContains(t, err, "--out "+file)

	if os.Geteuid() != 0 { // root writes anywhere
		ro := t.TempDir()
		require.NoError(t, os.Chmod(ro, 0o555))
		err = Check("--out", ro)
		require.ErrorContains(t, err, "is not writable")
	}
}
