//go:build cuda

package bench

import "github.com/perkgo/perk/runtime/cuda"

// nvtxPush opens an NVTX range on every open CUDA device's worker thread, so
// Nsight Systems shows it around the kernels launched until nvtxPop.
func nvtxPush(name string) { cuda.RangePush(name) }

func nvtxPop() { cuda.RangePop() }
