//go:build !cuda

package cuda

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

// RangePush would open an NVTX range; this binary was built without the cuda
// tag, so it does nothing.
func RangePush(name string) {}

// RangePop would close the innermost NVTX range; without the cuda tag it does
// nothing.
func RangePop() {}

// NVTXAvailable reports whether NVTX ranges are recorded: never without the
// cuda tag.
func NVTXAvailable() bool { return false }

// ProfilerStart would call cuProfilerStart; without the cuda tag it returns
// an error wrapping runtime.ErrNoCUDA.
func ProfilerStart() error {
	return fmt.Errorf("cuda profiler start: %w", runtime.ErrNoCUDA)
}

// ProfilerStop would call cuProfilerStop; without the cuda tag it returns an
// error wrapping runtime.ErrNoCUDA.
func ProfilerStop() error {
	return fmt.Errorf("cuda profiler stop: %w", runtime.ErrNoCUDA)
}
