// Package outdir checks the output directory of a command before any long
// work starts.
package outdir

import (
	"errors"
	"fmt"
	"os"
)

// Check creates dir (and its parents) when missing and proves it writable
// by creating and removing a probe file in it. Errors name the flag, e.g.
// "--out runs/x: mkdir runs: not a directory".
func Check(flag, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s %s: %w", flag, dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-probe-*")
	if err != nil {
		return fmt.Errorf("%s %s is not writable: %w", flag, dir, err)
	}
	_, werr := f.Write([]byte("probe\n"))
	if err := errors.Join(werr, f.Close(), os.Remove(f.Name())); err != nil {
		return fmt.Errorf("%s %s is not writable: %w", flag, dir, err)
	}
	return nil
}
