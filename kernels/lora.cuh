// lora.cuh: the counter-based dropout RNG the LoRA kernels share with nn/cpu.
//
// Philox-4x32-10 (Salmon et al., SC 2011) and the element → mask mapping of
// nn.Dropout, bit for bit as nn/cpu/philox.go: for element index e (the flat,
// row-major index into the dropped tensor)
//   key     = (lo32(seed), hi32(seed))
//   counter = (lo32(e), hi32(e), tensor_id, step)
//   keep    ⇔ (word 0 of Philox4x32-10(counter, key)) >> 8 ≥ thr
// with thr = ⌈p·2²⁴⌉ computed on the host in float64; a kept element is
// multiplied by scale = 1/(1−p) (float64 on the host, rounded to f32).
#pragma once

#include "common.cuh"

namespace lora {

// Round multipliers and Weyl key increments of Philox-4x32.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// philox4x32_10 maps a 128-bit counter and a 64-bit key to 128 random bits:
// ten rounds, each multiplying words 0 and 2 by the round constants and
// crossing the high halves with words 1 and 3 and the key, which is bumped by
// the Weyl constants between rounds. The 32×32→64 products are written as
// 64-bit multiplies (mul.wide.u32 under nvcc) so the emulator needs no
// __umulhi.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
  for (int r = 0; r < 10; r++) {
    if (r > 0) {
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const uint64_t p0 = (uint64_t)kPhiloxM0 * c.x;
    const uint64_t p1 = (uint64_t)kPhiloxM1 * c.z;
    c = make_uint4((uint32_t)(p1 >> 32) ^ c.y ^ k0, (uint32_t)p1, (uint32_t)(p0 >> 32) ^ c.w ^ k1, (uint32_t)p0);
  }
  return c;
}

// Drop is one call's dropout as the kernels see it (built from kernel
// parameters; nn.Dropout describes the fields).
struct Drop {
  unsigned long long seed;
  uint32_t tensor_id, step;
  uint32_t thr;  // ⌈p·2²⁴⌉
  float scale;   // 1/(1−p)
};

__device__ __forceinline__ Drop make_drop(unsigned long long seed, unsigned int tensor_id, unsigned int step,
                                          unsigned int thr, float scale) {
  Drop d;
  d.seed = seed;
  d.tensor_id = tensor_id;
  d.step = step;
  d.thr = thr;
  d.scale = scale;
  return d;
}

// keep reports whether element e survives dropout d.
__device__ __forceinline__ bool keep(const Drop& d, unsigned long long e) {
  const uint4 w = philox4x32_10(make_uint4((uint32_t)e, (uint32_t)(e >> 32), d.tensor_id, d.step), (uint32_t)d.seed,
                                (uint32_t)(d.seed >> 32));
  return (w.x >> 8) >= d.thr;
}

// apply returns dropout(v) for element e: v·scale when kept, else 0.
__device__ __forceinline__ float apply(const Drop& d, unsigned long long e, float v) {
  return keep(d, e) ? v * d.scale : 0.f;
}

}  // namespace lora
