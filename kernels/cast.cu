// cast.cu: storage-type conversion between f32, bf16 and f16.
//
// cast_<from>_<to>(dst, src, n): dst[i] = round_to_nearest_even(src[i]).
// 16-bit to 16-bit casts go through f32, which holds every bf16 and f16 value
// exactly, so each cast rounds once. NaN stays NaN; overflow gives ±Inf.
// Launch: 1-D grid-stride, 256 threads per block. Shared memory: none.
// Reference: github.com/x448/float16 (f16) and a Go bf16 RNE (kernels/cast_test.go).
#include "common.cuh"

template <typename S, typename D>
__device__ void cast_impl(D* __restrict__ dst, const S* __restrict__ src, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x) {
    dst[i] = from_f32<D>(to_f32(src[i]));
  }
}

#define PERK_CAST(name, S, D)                                                         \
  extern "C" __global__ void name(D* dst, const S* src, long long n) { cast_impl(dst, src, n); } \
  PERK_EXPORT(name)

PERK_CAST(cast_f32_bf16, float, __nv_bfloat16)
PERK_CAST(cast_f32_f16, float, __half)
PERK_CAST(cast_bf16_f32, __nv_bfloat16, float)
PERK_CAST(cast_f16_f32, __half, float)
PERK_CAST(cast_bf16_f16, __nv_bfloat16, __half)
PERK_CAST(cast_f16_bf16, __half, __nv_bfloat16)
