// axpy.cu: y = a·x + y.
//
// axpy_<t>(y, x, n, a): y[i] = a·x[i] + y[i] computed in f32 (one fused
// multiply-add) and stored with round-to-nearest-even.
// Launch: 1-D grid-stride, 256 threads per block. Shared memory: none.
// Reference: a float64 Go loop (kernels/axpy_test.go).
#include "common.cuh"

template <typename T>
__device__ void axpy_impl(T* __restrict__ y, const T* __restrict__ x, long long n, float a) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    y[i] = from_f32<T>(fmaf(a, to_f32(x[i]), to_f32(y[i])));
  }
}

extern "C" __global__ void axpy_f32(float* y, const float* x, long long n, float a) { axpy_impl(y, x, n, a); }
extern "C" __global__ void axpy_bf16(__nv_bfloat16* y, const __nv_bfloat16* x, long long n, float a) {
  axpy_impl(y, x, n, a);
}
extern "C" __global__ void axpy_f16(__half* y, const __half* x, long long n, float a) { axpy_impl(y, x, n, a); }

PERK_EXPORT(axpy_f32)
PERK_EXPORT(axpy_bf16)
PERK_EXPORT(axpy_f16)
