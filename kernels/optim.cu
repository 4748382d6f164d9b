// optim.cu: multi-tensor optimiser steps and their vector-Jacobian products,
// the kernels that carry PERK's inner loop and its meta-gradient.
//
// All kernels take a tensor table in device memory so one launch covers every
// LoRA tensor: `ptrs` holds, per tensor, a fixed number of f32 array pointers
// (listed per kernel), `sizes[i]` the element count of tensor i and `lrs[i]`
// its learning rate η_i (the learned per-step, per-tensor rate).
// Launch: grid (chunks, ntensors), 256 threads; block (c, i) handles elements
// e ≡ c·256 + tid (mod chunks·256) of tensor i. Shared memory: 8 floats for the
// reductions. All arithmetic is f32; η̄ and norms are reduced in a fixed order
// (per-block partials, then one block per tensor), never with float atomics,
// so results are bit-identical run to run.
// Reference: nn/cpu AdamWStep / AdamWStepVJP / SGDStep / SGDStepVJP /
// ClipGlobalNorm (kernels/optim_test.go).
//
// AdamW (torch.optim.AdamW at step t, bc1 = 1−β1ᵗ, bc2s = √(1−β2ᵗ), and
// omb1 = 1−β1, omb2 = 1−β2 all computed in float64 on the host: 1−β2 formed
// in f32 from β2 = 0.999 would carry a 1e-5 relative error): m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
// p ← p·(1−ηλ) − (η/bc1)·m/(√v/bc2s + ε), where elements with v = 0 take only
// the decay. g is first multiplied by *gscale when gscale is not null (global
// norm clipping without a host round trip).
#include "common.cuh"

#define OPT_THREADS 256

__device__ __forceinline__ float* tab(const unsigned long long* ptrs, int stride, int i, int j) {
  return reinterpret_cast<float*>(ptrs[(long long)i * stride + j]);
}

// adamw_step_f32: table of 4 pointers per tensor (p, g, m, v); updates p, m, v
// in place. nonfinite (nullable) counts elements whose g is NaN or ±Inf
// (integer atomics only); those elements are still updated, the caller decides.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    adamw_step_f32(const unsigned long long* ptrs, const long long* sizes, const float* lrs, float beta1,
                   float beta2, float omb1, float omb2, float eps, float wd, float bc1, float bc2s,
                   const float* gscale,
                   unsigned int* nonfinite) {
  const int i = blockIdx.y;
  float *p = tab(ptrs, 4, i, 0), *g = tab(ptrs, 4, i, 1), *m = tab(ptrs, 4, i, 2), *v = tab(ptrs, 4, i, 3);
  const long long n = sizes[i];
  const float lr = lrs[i], decay = 1.f - lr * wd, gs = gscale ? *gscale : 1.f;
  unsigned int bad = 0;
  for (long long e = blockIdx.x * (long long)OPT_THREADS + threadIdx.x; e < n;
       e += (long long)gridDim.x * OPT_THREADS) {
    const float ge = g[e] * gs;
    if (!isfinite(ge)) bad++;
    const float me = beta1 * m[e] + omb1 * ge;
    const float ve = beta2 * v[e] + omb2 * ge * ge;
    float pe = p[e] * decay;
    if (ve > 0.f) pe -= (lr / bc1) * me / (sqrtf(ve) / bc2s + eps);
    p[e] = pe;
    m[e] = me;
    v[e] = ve;
  }
  if (nonfinite && bad) atomicAdd(nonfinite, bad);
}
PERK_EXPORT(adamw_step_f32)

// adamw_vjp_f32: table of 8 pointers per tensor (p_t, g_t, m_t, v_t — the
// moments after the step — and the adjoints p̄, m̄, v̄, ḡ). In place:
// p̄ ← p̄·(1−ηλ), m̄ ← β1·m̄_t, v̄ ← β2·v̄_t, ḡ ← (1−β1)·m̄_t + 2(1−β2)·g·v̄_t with
// m̄_t = m̄ − p̄·η/(bc1·den), v̄_t = v̄ + p̄·η·m̂/(den²·2√v·bc2s), den = √v/bc2s + ε,
// m̂ = m/bc1 (the v-terms vanish where v = 0). Writes the block partials of
// η̄_i = Σ p̄·(−λ·p_t − m̂/den) to partials[i·gridDim.x + blockIdx.x];
// optim_reduce_rows turns them into one value per tensor.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    adamw_vjp_f32(const unsigned long long* ptrs, const long long* sizes, const float* lrs, float beta1,
                  float beta2, float omb1, float omb2, float eps, float wd, float bc1, float bc2s,
                  float* partials) {
  const int i = blockIdx.y;
  const float *p = tab(ptrs, 8, i, 0), *g = tab(ptrs, 8, i, 1), *m = tab(ptrs, 8, i, 2), *v = tab(ptrs, 8, i, 3);
  float *dp = tab(ptrs, 8, i, 4), *dm = tab(ptrs, 8, i, 5), *dv = tab(ptrs, 8, i, 6), *dg = tab(ptrs, 8, i, 7);
  const long long n = sizes[i];
  const float lr = lrs[i], decay = 1.f - lr * wd;
  float dlr = 0.f;
  for (long long e = blockIdx.x * (long long)OPT_THREADS + threadIdx.x; e < n;
       e += (long long)gridDim.x * OPT_THREADS) {
    const float pbar = dp[e], ve = v[e], me = m[e];
    float mbar = dm[e], vbar = dv[e], step = 0.f;
    if (ve > 0.f) {
      const float sv = sqrtf(ve), den = sv / bc2s + eps, mh = me / bc1;
      step = mh / den;
      mbar -= pbar * lr / (bc1 * den);
      vbar += pbar * lr * mh / (den * den * 2.f * sv * bc2s);
    }
    dlr += pbar * (-wd * p[e] - step);
    dg[e] = omb1 * mbar + 2.f * omb2 * g[e] * vbar;
    dp[e] = pbar * decay;
    dm[e] = beta1 * mbar;
    dv[e] = beta2 * vbar;
  }
  const float r = block_sum<OPT_THREADS>(dlr);
  if (threadIdx.x == 0) partials[(long long)i * gridDim.x + blockIdx.x] = r;
}
PERK_EXPORT(adamw_vjp_f32)

// sgd_step_f32: table of 2 pointers per tensor (p, g): p ← p·(1−ηλ) − η·g·gs.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    sgd_step_f32(const unsigned long long* ptrs, const long long* sizes, const float* lrs, float wd,
                 const float* gscale, unsigned int* nonfinite) {
  const int i = blockIdx.y;
  float *p = tab(ptrs, 2, i, 0), *g = tab(ptrs, 2, i, 1);
  const long long n = sizes[i];
  const float lr = lrs[i], decay = 1.f - lr * wd, gs = gscale ? *gscale : 1.f;
  unsigned int bad = 0;
  for (long long e = blockIdx.x * (long long)OPT_THREADS + threadIdx.x; e < n;
       e += (long long)gridDim.x * OPT_THREADS) {
    const float ge = g[e] * gs;
    if (!isfinite(ge)) bad++;
    p[e] = p[e] * decay - lr * ge;
  }
  if (nonfinite && bad) atomicAdd(nonfinite, bad);
}
PERK_EXPORT(sgd_step_f32)

// sgd_vjp_f32: table of 4 pointers per tensor (p_t, g_t, p̄, ḡ): ḡ ← −η·p̄,
// p̄ ← p̄·(1−ηλ); partials of η̄_i = Σ p̄·(−λ·p_t − g) as in adamw_vjp_f32.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    sgd_vjp_f32(const unsigned long long* ptrs, const long long* sizes, const float* lrs, float wd,
                float* partials) {
  const int i = blockIdx.y;
  const float *p = tab(ptrs, 4, i, 0), *g = tab(ptrs, 4, i, 1);
  float *dp = tab(ptrs, 4, i, 2), *dg = tab(ptrs, 4, i, 3);
  const long long n = sizes[i];
  const float lr = lrs[i], decay = 1.f - lr * wd;
  float dlr = 0.f;
  for (long long e = blockIdx.x * (long long)OPT_THREADS + threadIdx.x; e < n;
       e += (long long)gridDim.x * OPT_THREADS) {
    const float pbar = dp[e];
    dlr += pbar * (-wd * p[e] - g[e]);
    dg[e] = -lr * pbar;
    dp[e] = pbar * decay;
  }
  const float r = block_sum<OPT_THREADS>(dlr);
  if (threadIdx.x == 0) partials[(long long)i * gridDim.x + blockIdx.x] = r;
}
PERK_EXPORT(sgd_vjp_f32)

// multi_sumsq_f32: table of 1 pointer per tensor; partials[i·gridDim.x + c] =
// Σ x² over block c's elements of tensor i.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    multi_sumsq_f32(const unsigned long long* ptrs, const long long* sizes, float* partials) {
  const int i = blockIdx.y;
  const float* x = tab(ptrs, 1, i, 0);
  const long long n = sizes[i];
  float s = 0.f;
  for (long long e = blockIdx.x * (long long)OPT_THREADS + threadIdx.x; e < n;
       e += (long long)gridDim.x * OPT_THREADS) {
    s += x[e] * x[e];
  }
  const float r = block_sum<OPT_THREADS>(s);
  if (threadIdx.x == 0) partials[(long long)i * gridDim.x + blockIdx.x] = r;
}
PERK_EXPORT(multi_sumsq_f32)

// optim_reduce_rows: grid (rows), 256 threads; out[row] = Σ_c partials[row·cols + c]
// in a fixed order.
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    optim_reduce_rows(const float* partials, int cols, float* out) {
  float s = 0.f;
  for (int c = threadIdx.x; c < cols; c += OPT_THREADS) s += partials[(long long)blockIdx.x * cols + c];
  const float r = block_sum<OPT_THREADS>(s);
  if (threadIdx.x == 0) out[blockIdx.x] = r;
}
PERK_EXPORT(optim_reduce_rows)

// clip_scale: one block of 256 threads; from n sum-of-squares partials computes
// norm = √Σ and writes out[0] = norm, out[1] = min(1, max_norm/(norm + 1e-6))
// (torch.nn.utils.clip_grad_norm_'s coefficient).
extern "C" __global__ void __launch_bounds__(OPT_THREADS)
    clip_scale(const float* partials, int n, float max_norm, float* out) {
  float s = 0.f;
  for (int c = threadIdx.x; c < n; c += OPT_THREADS) s += partials[c];
  const float r = block_sum<OPT_THREADS>(s);
  if (threadIdx.x == 0) {
    const float norm = sqrtf(r);
    out[0] = norm;
    out[1] = fminf(1.f, max_norm / (norm + 1e-6f));
  }
}
PERK_EXPORT(clip_scale)
