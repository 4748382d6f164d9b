//go:build !cuda

package bench

// Without the cuda tag there is no GPU and no NVTX: the ranges are no-ops.

func nvtxPush(string) {}
func nvtxPop()        {}
