// rope.cu: rotary position embedding (Qwen2/Llama rotate-half convention) on
// x [T,H,D], forward and backward.
//
//   rope_fwd_<t>: for i < D/2, with a = pos[t]·inv_freq[i],
//                 y[t,h,i]     = x[t,h,i]·cos a − x[t,h,i+D/2]·sin a,
//                 y[t,h,i+D/2] = x[t,h,i+D/2]·cos a + x[t,h,i]·sin a;
//   rope_bwd_<t>: the inverse (transposed) rotation, a → −a, applied to dy.
// pos is I32 [T] (each token's position in its packed segment); inv_freq is
// f32 [D/2], inv_freq[i] = theta^(−2i/D), computed in float64 on the host and
// rounded to f32 (kernels.RoPEInvFreq). As in HF transformers the angle is
// the fp32 product pos·inv_freq and cos/sin are fp32 of that angle (sinf/cosf,
// full-range argument reduction), so the angle carries a relative error of
// at most 2·2⁻²⁴ (inv_freq's rounding and the product's): ≈ pos·2⁻²³ radians
// absolute, the dominant error at large positions.
// Launch: grid-stride over the T·D/2 (token, frequency) pairs, 256 threads, up
// to 4096 blocks; each thread computes one angle and rotates that pair in all
// H heads. Each pair is read before it is written, so y may alias x.
// No shared memory. Storage f32, bf16, f16; arithmetic in f32.
// Reference: nn/cpu RoPEForward/RoPEBackward (float64 angles;
// kernels/rope_test.go).
#include "common.cuh"

template <typename T, bool kInverse>
__device__ void rope(const T* x, T* y, const int* pos, const float* inv_freq, long long ntok, long long H,
                     long long D) {
  const long long half = D >> 1;
  const long long n = ntok * half;
  for (long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x; p < n; p += (long long)gridDim.x * blockDim.x) {
    const long long t = p / half, i = p - t * half;
    const float a = (float)pos[t] * inv_freq[i];
    const float c = cosf(a);
    const float s = kInverse ? -sinf(a) : sinf(a);
    for (long long h = 0; h < H; h++) {
      const long long e = (t * H + h) * D + i;
      const float x0 = to_f32(x[e]), x1 = to_f32(x[e + half]);
      y[e] = from_f32<T>(fmaf(x0, c, -x1 * s));
      y[e + half] = from_f32<T>(fmaf(x1, c, x0 * s));
    }
  }
}

#define PERK_ROPE(t, T)                                                                                 \
  extern "C" __global__ void rope_fwd_##t(const T* x, T* y, const int* pos, const float* inv_freq,      \
                                          long long ntok, long long H, long long D) {                   \
    rope<T, false>(x, y, pos, inv_freq, ntok, H, D);                                                    \
  }                                                                                                     \
  PERK_EXPORT(rope_fwd_##t)                                                                             \
  extern "C" __global__ void rope_bwd_##t(const T* dy, T* dx, const int* pos, const float* inv_freq,    \
                                          long long ntok, long long H, long long D) {                   \
    rope<T, true>(dy, dx, pos, inv_freq, ntok, H, D);                                                   \
  }                                                                                                     \
  PERK_EXPORT(rope_bwd_##t)

PERK_ROPE(f32, float)
PERK_ROPE(bf16, __nv_bfloat16)
PERK_ROPE(f16, __half)
