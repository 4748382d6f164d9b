// norm.cu: LayerNorm (GPT-2) and RMSNorm (Qwen2) over the last dimension C of
// a row-major [rows, C] array, forward and backward, with fp32 statistics.
//
// Forward (one warp per row; 8 rows per 256-thread block, grid ceil(rows/8)):
//   layernorm_fwd_<t>: y = (h − μ)·r·γ + β with μ = mean(h), r = 1/√(var(h)+eps)
//     (biased variance, two passes over the row: mean, then Σ(h−μ)²);
//   rmsnorm_fwd_<t>:   y = h·r·γ with r = 1/√(mean(h²)+eps).
//   h is x, or — the fused residual-add variant, when `res` is not null —
//   h = x + res rounded to the storage type and written to `hout` (the residual
//   stream GPT-2/Qwen2 blocks carry), then normalised; the backward of the
//   fused variant is the plain backward applied to hout, the caller adding the
//   gradient that flows into hout to dx. β, mean and rstd may be null; mean and
//   rstd are f32 [rows] whatever the storage type. Every thread reads and
//   writes only its own elements of a row, so y may alias x, and hout x or res.
// Backward (256-thread block per 32-row block, grid ceil(rows/32)):
//   layernorm_bwd_<t> / rmsnorm_bwd_<t>: with x̂ = (x−μ)·r and g = dy·γ,
//     dx = r·(g − mean(g) − x̂·mean(g·x̂)) (RMSNorm: no mean(g) term, μ = 0),
//     one warp per row; and the block's partial column sums over its rows,
//     pg[blk, c] = Σ dy·x̂ (dγ) and pb[blk, c] = Σ dy (dβ), one thread per
//     column summing rows in order. The partials are read before dx is written
//     (barrier between), so dx may alias dy. dx, pg and pb may each be null.
//   norm_colsum_<t>: dγ[c] += Σ_blk pg[blk, c] and dβ[c] += Σ_blk pb[blk, c],
//     blocks added in index order (1-D grid over columns, 256 threads).
// No float atomics anywhere: two runs give identical bits, and the reduction
// order depends on the shape only.
// Storage: f32, bf16, f16 for x, γ, β, y (one type per launch); dγ/dβ have
// their own type (the colsum kernel's); all arithmetic in f32.
// Shared memory: 256 bytes static (the backward block's μ and r).
// Reference: nn/cpu LayerNormForward/Backward, RMSNormForward/Backward
// (kernels/norm_test.go).
#include "common.cuh"

#define NORM_THREADS 256
#define NORM_WARPS (NORM_THREADS / 32)
#define NORM_BWD_ROWS 32

// norm_warp_sum adds v over the 32 lanes in a fixed butterfly order; every
// lane gets the same result.
static __device__ __forceinline__ float norm_warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// norm_fwd: one warp per row. Pass 1 forms h (writing hout when fused) and
// sums h (LayerNorm) or h² (RMSNorm); LayerNorm's pass 2 sums (h−μ)²; the
// last pass writes y. Each lane touches columns lane, lane+32, ... in every
// pass, so it rereads only what it wrote itself.
template <typename T, bool kCentered>
__device__ void norm_fwd(const T* x, const T* res, T* hout, const T* gamma, const T* beta, T* y, float* mean,
                         float* rstd, long long rows, long long C, float eps) {
  const int lane = threadIdx.x & 31;
  const long long row = (long long)blockIdx.x * NORM_WARPS + (threadIdx.x >> 5);
  if (row >= rows) return;  // the whole warp leaves together
  const long long off = row * C;
  const T* src = x + off;
  float s = 0.f;
  if (res != nullptr) {
    const T* rr = res + off;
    T* hr = hout + off;
    for (long long c = lane; c < C; c += 32) {
      const T h = from_f32<T>(to_f32(src[c]) + to_f32(rr[c]));
      hr[c] = h;
      const float hf = to_f32(h);
      s = kCentered ? s + hf : fmaf(hf, hf, s);
    }
    src = hr;
  } else {
    for (long long c = lane; c < C; c += 32) {
      const float hf = to_f32(src[c]);
      s = kCentered ? s + hf : fmaf(hf, hf, s);
    }
  }
  s = norm_warp_sum(s);
  const float inv_c = 1.f / (float)C;
  float mu = 0.f, var;
  if (kCentered) {
    mu = s * inv_c;
    float v = 0.f;
    for (long long c = lane; c < C; c += 32) {
      const float d = to_f32(src[c]) - mu;
      v = fmaf(d, d, v);
    }
    var = norm_warp_sum(v) * inv_c;
  } else {
    var = s * inv_c;
  }
  const float r = 1.f / sqrtf(var + eps);
  T* yr = y + off;
  for (long long c = lane; c < C; c += 32) {
    const float xh = (to_f32(src[c]) - mu) * r;
    float o = xh * to_f32(gamma[c]);
    if (beta != nullptr) o += to_f32(beta[c]);
    yr[c] = from_f32<T>(o);
  }
  if (lane == 0) {
    if (mean != nullptr) mean[row] = mu;
    if (rstd != nullptr) rstd[row] = r;
  }
}

// norm_bwd: block blk owns rows [32·blk, 32·blk+32).
template <typename T, bool kCentered>
__device__ void norm_bwd(const T* x, const T* gamma, const float* mean, const float* rstd, const T* dy, T* dx,
                         float* pg, float* pb, long long rows, long long C) {
  __shared__ float s_mu[NORM_BWD_ROWS];
  __shared__ float s_r[NORM_BWD_ROWS];
  const long long r0 = (long long)blockIdx.x * NORM_BWD_ROWS;
  const int nr = (int)min((long long)NORM_BWD_ROWS, rows - r0);
  if (threadIdx.x < NORM_BWD_ROWS) {
    const bool ok = (int)threadIdx.x < nr;
    s_mu[threadIdx.x] = (kCentered && ok) ? mean[r0 + threadIdx.x] : 0.f;
    s_r[threadIdx.x] = ok ? rstd[r0 + threadIdx.x] : 0.f;
  }
  __syncthreads();

  // Column partials: thread t sums columns t, t+256, ... over the block's
  // rows in row order.
  if (pg != nullptr || pb != nullptr) {
    for (long long c = threadIdx.x; c < C; c += NORM_THREADS) {
      float ag = 0.f, ab = 0.f;
      for (int i = 0; i < nr; i++) {
        const long long e = (r0 + i) * C + c;
        const float d = to_f32(dy[e]);
        ag = fmaf(d, (to_f32(x[e]) - s_mu[i]) * s_r[i], ag);
        ab += d;
      }
      if (pg != nullptr) pg[(long long)blockIdx.x * C + c] = ag;
      if (pb != nullptr) pb[(long long)blockIdx.x * C + c] = ab;
    }
  }
  __syncthreads();  // dy is fully read before dx (which may alias it) is written

  if (dx == nullptr) return;
  const int lane = threadIdx.x & 31;
  const float inv_c = 1.f / (float)C;
  for (int i = threadIdx.x >> 5; i < nr; i += NORM_WARPS) {
    const long long off = (r0 + i) * C;
    const float mu = s_mu[i], r = s_r[i];
    float sg = 0.f, sgx = 0.f;
    for (long long c = lane; c < C; c += 32) {
      const float g = to_f32(dy[off + c]) * to_f32(gamma[c]);
      sgx = fmaf(g, (to_f32(x[off + c]) - mu) * r, sgx);
      if (kCentered) sg += g;
    }
    sgx = norm_warp_sum(sgx) * inv_c;
    if (kCentered) sg = norm_warp_sum(sg) * inv_c;
    for (long long c = lane; c < C; c += 32) {
      const float g = to_f32(dy[off + c]) * to_f32(gamma[c]);
      const float xh = (to_f32(x[off + c]) - mu) * r;
      dx[off + c] = from_f32<T>(r * (g - sg - xh * sgx));
    }
  }
}

// norm_colsum: out[c] = out[c] + Σ_b part[b·C + c] for each non-null pair.
template <typename T>
__device__ void norm_colsum(const float* pg, const float* pb, long long nb, long long C, T* dg, T* db) {
  for (long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (long long)gridDim.x * blockDim.x) {
    if (dg != nullptr) {
      float s = 0.f;
      for (long long b = 0; b < nb; b++) s += pg[b * C + c];
      dg[c] = from_f32<T>(to_f32(dg[c]) + s);
    }
    if (db != nullptr) {
      float s = 0.f;
      for (long long b = 0; b < nb; b++) s += pb[b * C + c];
      db[c] = from_f32<T>(to_f32(db[c]) + s);
    }
  }
}

#define PERK_NORM(t, T)                                                                                      \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      layernorm_fwd_##t(const T* x, const T* res, T* hout, const T* gamma, const T* beta, T* y, float* mean, \
                        float* rstd, long long rows, long long C, float eps) {                              \
    norm_fwd<T, true>(x, res, hout, gamma, beta, y, mean, rstd, rows, C, eps);                               \
  }                                                                                                          \
  PERK_EXPORT(layernorm_fwd_##t)                                                                             \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      rmsnorm_fwd_##t(const T* x, const T* res, T* hout, const T* gamma, T* y, float* rstd, long long rows,  \
                      long long C, float eps) {                                                              \
    norm_fwd<T, false>(x, res, hout, gamma, nullptr, y, nullptr, rstd, rows, C, eps);                        \
  }                                                                                                          \
  PERK_EXPORT(rmsnorm_fwd_##t)                                                                               \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      layernorm_bwd_##t(const T* x, const T* gamma, const float* mean, const float* rstd, const T* dy, T* dx, \
                        float* pg, float* pb, long long rows, long long C) {                                 \
    norm_bwd<T, true>(x, gamma, mean, rstd, dy, dx, pg, pb, rows, C);                                        \
  }                                                                                                          \
  PERK_EXPORT(layernorm_bwd_##t)                                                                             \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      rmsnorm_bwd_##t(const T* x, const T* gamma, const float* rstd, const T* dy, T* dx, float* pg,          \
                      long long rows, long long C) {                                                         \
    norm_bwd<T, false>(x, gamma, nullptr, rstd, dy, dx, pg, nullptr, rows, C);                               \
  }                                                                                                          \
  PERK_EXPORT(rmsnorm_bwd_##t)                                                                               \
  extern "C" __global__ void __launch_bounds__(NORM_THREADS)                                                \
      norm_colsum_##t(const float* pg, const float* pb, long long nb, long long C, T* dg, T* db) {          \
    norm_colsum<T>(pg, pb, nb, C, dg, db);                                                                   \
  }                                                                                                          \
  PERK_EXPORT(norm_colsum_##t)

PERK_NORM(f32, float)
PERK_NORM(bf16, __nv_bfloat16)
PERK_NORM(f16, __half)
