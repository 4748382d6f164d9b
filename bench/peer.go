//go:build !cuda

package bench

import "github.com/perkgo/perk/runtime"

// cublasPeer would time gemms with cuBLAS; this binary was built without the
// cuda tag, so there is no peer.
func cublasPeer(runtime.Device, runtime.DType, []gemmSpec, int) (float64, error) {
	return 0, noPeerError{"cuBLAS needs -tags cuda"}
}
