// Package cuda is the real-GPU runtime.Device, built on the CUDA driver API
// through gorgonia.org/cu.
//
// Everything that touches the driver is compiled only with the cuda build tag
// (go build -tags cuda ./...), because gorgonia.org/cu initialises the driver
// in its package init and exits the process when no GPU is present. With the
// tag, importing this package registers the "cuda" device kind with
// runtime.Register, so runtime.Open("cuda") opens GPU 0.
//
// The profiling helpers (RangePush, RangePop, ProfilerStart, ProfilerStop)
// exist in both builds: with the tag they emit NVTX ranges and drive
// cuProfilerStart/cuProfilerStop; without it they are no-ops (ranges) or
// return an error wrapping runtime.ErrNoCUDA (profiler control), so callers
// compile either way.
package cuda
