// act.cu: the elementwise activations of the two model families and their
// backward passes.
//
//   gelu_fwd_<t>:   y = 0.5·x·(1+tanh(u)), u = √(2/π)·(x+0.044715·x³) (GPT-2's
//                   gelu_new), evaluated as x·σ(2u) = x/(1+e^(−2u)), the same
//                   function without the cancellation of 1+tanh(u) for x < 0;
//   gelu_bwd_<t>:   dx = dy·GELU'(x), GELU'(x) = s·(1 + 2x·(1−s)·√(2/π)·(1+3·0.044715·x²))
//                   with s = σ(2u) (= 0.5·(1+tanh u); 1−t² = 4s(1−s));
//   swiglu_fwd_<t>: y = silu(gate)·up, silu(g) = g·σ(g) (Qwen2's MLP);
//   swiglu_bwd_<t>: dgate = dy·up·σ(g)·(1+g·(1−σ(g))), dup = dy·silu(g); either
//                   output may be null.
// 1−σ is formed as e·σ (e = the exponential in σ = 1/(1+e)) where σ ≥ ½, so it
// keeps its relative accuracy in the tails; e = +Inf gives σ = 0 and a zero
// derivative. Every element is read completely before it is written, so
// outputs may alias inputs.
// Launch: grid-stride, 256 threads, up to 4096 blocks. No shared memory.
// Storage f32, bf16, f16; arithmetic in f32 (expf, not the fast intrinsic).
// Reference: nn/cpu GELUForward/Backward, SwiGLUForward/Backward
// (kernels/act_test.go).
#include "common.cuh"

#define ACT_GELU_C 0.7978845608028654f  // √(2/π)
#define ACT_GELU_K 0.044715f

// act_sigmoid returns σ = 1/(1+e) and 1−σ for e = exp(−z) ≥ 0.
static __device__ __forceinline__ float act_sigmoid(float e, float* one_minus) {
  const float s = 1.f / (1.f + e);
  *one_minus = s < 0.5f ? 1.f - s : e * s;
  return s;
}

template <typename T> __device__ void gelu_fwd(const T* x, T* y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = to_f32(x[i]);
    const float u = ACT_GELU_C * v * fmaf(ACT_GELU_K * v, v, 1.f);
    y[i] = from_f32<T>(v / (1.f + expf(-2.f * u)));
  }
}

template <typename T> __device__ void gelu_bwd(const T* x, const T* dy, T* dx, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float v = to_f32(x[i]);
    const float u = ACT_GELU_C * v * fmaf(ACT_GELU_K * v, v, 1.f);
    float oms;
    const float s = act_sigmoid(expf(-2.f * u), &oms);
    float d = 0.f;
    if (s > 0.f) d = s * fmaf(2.f * v * oms, ACT_GELU_C * fmaf(3.f * ACT_GELU_K * v, v, 1.f), 1.f);
    dx[i] = from_f32<T>(to_f32(dy[i]) * d);
  }
}

template <typename T> __device__ void swiglu_fwd(const T* gate, const T* up, T* y, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]);
    y[i] = from_f32<T>(g / (1.f + expf(-g)) * u);
  }
}

template <typename T> __device__ void swiglu_bwd(const T* gate, const T* up, const T* dy, T* dgate, T* dup, long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float g = to_f32(gate[i]), u = to_f32(up[i]), d = to_f32(dy[i]);
    float oms;
    const float s = act_sigmoid(expf(-g), &oms);
    const float dg = s > 0.f ? d * u * s * fmaf(g, oms, 1.f) : 0.f;
    const float du = d * g * s;
    if (dgate != nullptr) dgate[i] = from_f32<T>(dg);
    if (dup != nullptr) dup[i] = from_f32<T>(du);
  }
}

#define PERK_ACT(t, T)                                                                                    \
  extern "C" __global__ void gelu_fwd_##t(const T* x, T* y, long long n) { gelu_fwd<T>(x, y, n); }        \
  PERK_EXPORT(gelu_fwd_##t)                                                                               \
  extern "C" __global__ void gelu_bwd_##t(const T* x, const T* dy, T* dx, long long n) {                  \
    gelu_bwd<T>(x, dy, dx, n);                                                                            \
  }                                                                                                       \
  PERK_EXPORT(gelu_bwd_##t)                                                                               \
  extern "C" __global__ void swiglu_fwd_##t(const T* gate, const T* up, T* y, long long n) {              \
    swiglu_fwd<T>(gate, up, y, n);                                                                        \
  }                                                                                                       \
  PERK_EXPORT(swiglu_fwd_##t)                                                                             \
  extern "C" __global__ void swiglu_bwd_##t(const T* gate, const T* up, const T* dy, T* dgate, T* dup,    \
                                            long long n) {                                                \
    swiglu_bwd<T>(gate, up, dy, dgate, dup, n);                                                           \
  }                                                                                                       \
  PERK_EXPORT(swiglu_bwd_##t)

PERK_ACT(f32, float)
PERK_ACT(bf16, __nv_bfloat16)
PERK_ACT(f16, __half)
