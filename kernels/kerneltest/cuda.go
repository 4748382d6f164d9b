//go:build cuda

package kerneltest

// In a binary built with -tags cuda, PERK_DEVICE=cuda runs the golden tests
// on the GPU.
import _ "github.com/perkgo/perk/runtime/cuda"
