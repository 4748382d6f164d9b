//go:build cuda

package gpu

// In a binary built with -tags cuda, Open("cuda") runs on the GPU.
import _ "github.com/perkgo/perk/runtime/cuda"
