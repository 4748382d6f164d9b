// fill.cu: fill and copy.
//
// fill_<t>(dst, n, value): dst[i] = value (converted to the storage type with
//   round-to-nearest-even) for i < n.
// copy_<t>(dst, src, n): dst[i] = src[i] for i < n (element copy; buffers must
//   not overlap).
// Launch: 1-D grid-stride, 256 threads per block, any grid (the wrapper uses
// min(ceil(n/256), 4096) blocks). Shared memory: none.
// Reference: a Go loop (kernels/fill_test.go).
#include "common.cuh"

template <typename T> __device__ void fill_impl(T* __restrict__ dst, long long n, float value) {
  const T v = from_f32<T>(value);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    dst[i] = v;
  }
}

template <typename T>
__device__ void copy_impl(T* __restrict__ dst, const T* __restrict__ src, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    dst[i] = src[i];
  }
}

extern "C" __global__ void fill_f32(float* dst, long long n, float v) { fill_impl(dst, n, v); }
extern "C" __global__ void fill_bf16(__nv_bfloat16* dst, long long n, float v) { fill_impl(dst, n, v); }
extern "C" __global__ void fill_f16(__half* dst, long long n, float v) { fill_impl(dst, n, v); }
// copy_b32 / copy_b16 copy 4- and 2-byte elements of any type.
extern "C" __global__ void copy_b32(uint32_t* dst, const uint32_t* src, long long n) {
  copy_impl(dst, src, n);
}
extern "C" __global__ void copy_b16(unsigned short* dst, const unsigned short* src, long long n) {
  copy_impl(dst, src, n);
}

PERK_EXPORT(fill_f32)
PERK_EXPORT(fill_bf16)
PERK_EXPORT(fill_f16)
PERK_EXPORT(copy_b32)
PERK_EXPORT(copy_b16)
