//go:build ignore

// gensources writes sources.h, the digest of the kernel sources (see package
// internal/srcdigest). Run it with "go generate" in this directory.
package main

import (
	"fmt"
	"os"

	"github.com/perkgo/perk/kernels/emu/internal/srcdigest"
)

func main() {
	d, err := srcdigest.Digest("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gensources:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(srcdigest.HeaderName, []byte(srcdigest.Header(d)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gensources:", err)
		os.Exit(1)
	}
}
