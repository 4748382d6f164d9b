// lora.cu: the fused LoRA linear layer, forward and backward.
//
//   forward   y  = x·Wᵀ + b + s·(dropout(x)·Aᵀ)·Bᵀ,  xa = dropout(x)·Aᵀ saved
//   backward  g  = dy·B
//             dx = dy·W + s·mask⊙(g·A)                        (overwritten)
//             dA += s·gᵀ·dropout(x),  dB += s·dyᵀ·xa          (accumulated)
//             dW += dyᵀ·x (W [out,in]) or xᵀ·dy (W [in,out]), db += Σ_n dy
// x [N,in], W [out,in] (PyTorch Linear) or [in,out] (GPT-2 Conv1D, read in
// place), A [r,in], B [out,r]; mask = the dropout mask scaled by 1/(1−p),
// drawn from Philox-4x32-10 exactly as nn/cpu (lora.cuh). The Go wrapper
// (kernels/lora.go) sequences the launches.
//
// Kernels (<t> = f32 | bf16 storage; every product accumulates in f32):
//
// lora_mm_<t>_<w>_<b2>(C, X, W, bias, A2, B2, M, N, K, R, s, drop_mode, dropout…)
//   C[M,N] = X·op(W) + bias + s·D(A2·op(B2)) with X [M,K], A2 [M,R]; op(W) is
//   W [N,K] transposed for <w> = nt, W [K,N] for nn; likewise B2 [N,R] (nt) or
//   [R,N] (nn) for <b2>. bias and A2 may be null (no bias, no rank-R term).
//   drop_mode 1 applies dropout to X as it is loaded (flat index m·K + k),
//   drop_mode 2 applies the mask to the rank-R term (flat index m·N + n), 0
//   none. The rank-R term is computed first, scaled and masked in registers,
//   and the main K loop accumulates on top of it, so one accumulator serves
//   both. Forward: xa = lora_mm_nt(x, A) with drop_mode 1, then
//   y = lora_mm_<w>_nt(x, W, b, xa, B). Backward: g = lora_mm_nn(dy, B), then
//   dx = lora_mm_<w'>_nn(dy, W, –, g, A) with drop_mode 2.
// lora_tn_<t>(partials, dst, dst_bf16, P, Q, M, N, T, chunk, alpha, drop_q, dropout…)
//   The weight gradients Σ_t P[t,m]·Q[t,n] for P [T,M], Q [T,N] (dropout on
//   Q's loads when drop_q). Block z sums tokens [z·chunk, (z+1)·chunk) in
//   order; with partials set it writes partials[z][M][N] (f32), otherwise
//   (one chunk) it adds alpha·sum to dst.
// lora_colsum_<t>(partials, dst, dst_bf16, dy, T, N, chunk, alpha)
//   db: column sums of dy [T,N] over the same token chunks.
// lora_reduce(dst, dst_bf16, partials, len, chunks, alpha)
//   dst[i] += alpha·Σ_z partials[z·len + i], z in order.
// lora_dropout_<t>(u, x, n, base, dropout…)
//   u[i] = dropout(x[i]) with element index base + i (the mask on its own).
// dst of lora_tn / lora_colsum / lora_reduce is f32, or bf16 when dst_bf16.
// Every reduction over tokens has a fixed order (chunks chosen from the shapes
// only, partials summed in chunk order) and no float atomics, so results are
// bit-identical run to run.
//
// Launch shapes. f32: 64×64 output tiles, 256 threads, each a 4×4 register
// micro-tile; k slices of 16 staged k-major in static shared memory
// As[16][68], Bs[16][68] (8704 bytes). bf16: 64×64 tiles, 128 threads = 2×2
// warps of 32×32 (2×4 mma.m16n8k16), k slices of 32 staged in the operand's
// own layout ([64][40] when k is contiguous, [32][72] when m/n is; 8 elements
// of padding so ldmatrix rows fall in distinct banks), fragments by ldmatrix
// (.trans for k-major operands): 2·2560·2 = 10240 bytes. Grid (⌈N/64⌉, ⌈M/64⌉,
// chunks). lora_colsum: 256 threads, grid (⌈N/256⌉, chunks). lora_reduce and
// lora_dropout: 1-D grid-stride, 256 threads.
// Reference: nn/cpu LoRALinearForward / LoRALinearBackward in float64 on the
// same (rounded) inputs (kernels/lora_test.go).
#include "lora.cuh"

namespace lora {

enum { kDropNone = 0, kDropIn = 1, kDropOut = 2 };

// add_out adds v to element i of dst (f32, or bf16 when dst_bf16).
__device__ __forceinline__ void add_out(void* dst, int dst_bf16, long long i, float v) {
  if (dst_bf16) {
    __nv_bfloat16* p = static_cast<__nv_bfloat16*>(dst) + i;
    *p = __float2bfloat16(__bfloat162float(*p) + v);
  } else {
    static_cast<float*>(dst)[i] += v;
  }
}

// ---------------------------------------------------------------------------
// f32: SIMT tiles.

constexpr int kF32Tile = 64;
constexpr int kF32BK = 16;
constexpr int kF32Pitch = kF32Tile + 4;  // keeps rows 16-byte aligned for vector reads
constexpr int kF32Threads = 256;

// load_f32 stages rows [r0, r0+64) × k [k0, k0+16) of an operand in s[k][r],
// zero outside [0,ext) × [0,k1). KMAJ: the operand is stored [K][ext] (element
// (r,k) at src[k·ld + r]), otherwise [ext][K] (at src[r·ld + k]); consecutive
// threads read consecutive addresses either way. With use_d, dropout d is
// applied with the element's storage index as its flat index.
template <bool KMAJ, bool DROP>
__device__ __forceinline__ void load_f32_impl(float* s, const float* __restrict__ src, int ld, int ext, int r0, int k0,
                                              int k1, const Drop d) {
  // The dropout path is not unrolled: four inlined Philox draws per thread
  // make ptxas spill.
#pragma unroll(DROP ? 1 : kF32BK * kF32Tile / kF32Threads)
  for (int i = threadIdx.x; i < kF32BK * kF32Tile; i += kF32Threads) {
    const int r = KMAJ ? i % kF32Tile : i / kF32BK;
    const int k = KMAJ ? i / kF32Tile : i % kF32BK;
    const int gr = r0 + r, gk = k0 + k;
    float v = 0.f;
    if (gr < ext && gk < k1) {
      const long long e = KMAJ ? (long long)gk * ld + gr : (long long)gr * ld + gk;
      v = src[e];
      if (DROP) v = apply(d, (unsigned long long)e, v);
    }
    s[k * kF32Pitch + r] = v;
  }
}

template <bool KMAJ>
__device__ __forceinline__ void load_f32(float* s, const float* __restrict__ src, int ld, int ext, int r0, int k0,
                                         int k1, bool use_d, const Drop d) {
  if (use_d) {
    load_f32_impl<KMAJ, true>(s, src, ld, ext, r0, k0, k1, d);
  } else {
    load_f32_impl<KMAJ, false>(s, src, ld, ext, r0, k0, k1, d);
  }
}

// mainloop_f32 adds op(a)[m0:m0+64, k0:k1] · op(b)[k0:k1, n0:n0+64] to acc;
// thread (ty, tx) = (tid/16, tid%16) owns rows m0+4ty.. and columns n0+4tx..
// a is [M][K] (AK false) or [K][M]; b is [N][K] (BK false) or [K][N].
template <bool AK, bool BK>
__device__ __forceinline__ void mainloop_f32(float acc[4][4], float* As, float* Bs, const float* a, int lda, int M,
                                             int m0, bool a_drop, const float* b, int ldb, int N, int n0, bool b_drop,
                                             const Drop d, int k0, int k1) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (int kt = k0; kt < k1; kt += kF32BK) {
    load_f32<AK>(As, a, lda, M, m0, kt, k1, a_drop, d);
    load_f32<BK>(Bs, b, ldb, N, n0, kt, k1, b_drop, d);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kF32BK; k++) {
      // Scalar reads that nvcc still merges into ld.shared.v4; reading
      // through float4 pointers made its PTX differ from build to build.
      float ar[4], br[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        ar[i] = As[k * kF32Pitch + 4 * ty + i];
        br[i] = Bs[k * kF32Pitch + 4 * tx + i];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += ar[i] * br[j];
    }
    __syncthreads();
  }
}

template <bool W_NN, bool B2_NN>
__device__ __forceinline__ void mm_f32(float* __restrict__ C, const float* X, const float* W, const float* bias,
                                       const float* A2, const float* B2, int M, int N, int K, int R, float s,
                                       int drop_mode, const Drop d) {
  __shared__ __align__(16) float As[kF32BK * kF32Pitch];
  __shared__ __align__(16) float Bs[kF32BK * kF32Pitch];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * kF32Tile, n0 = blockIdx.x * kF32Tile;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

  if (A2 != nullptr) {  // the rank-R term first: acc = s·D(A2·op(B2))
    mainloop_f32<false, B2_NN>(acc, As, Bs, A2, R, M, m0, false, B2, B2_NN ? N : R, N, n0, false, d, 0, R);
#pragma unroll
    for (int i = 0; i < 4; i++) {
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int row = m0 + 4 * ty + i, col = n0 + 4 * tx + j;
        float v = s * acc[i][j];
        if (drop_mode == kDropOut && row < M && col < N) v = apply(d, (unsigned long long)row * N + col, v);
        acc[i][j] = v;
      }
    }
  }
  mainloop_f32<false, W_NN>(acc, As, Bs, X, K, M, m0, drop_mode == kDropIn, W, W_NN ? N : K, N, n0, false, d, 0, K);

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int row = m0 + 4 * ty + i;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int col = n0 + 4 * tx + j;
      if (col < N) C[(long long)row * N + col] = acc[i][j] + (bias ? bias[col] : 0.f);
    }
  }
}

__device__ __forceinline__ void tn_f32(float* partials, void* dst, int dst_bf16, const float* P, const float* Q, int M,
                                       int N, int T, int chunk, float alpha, bool drop_q, const Drop d) {
  __shared__ __align__(16) float As[kF32BK * kF32Pitch];
  __shared__ __align__(16) float Bs[kF32BK * kF32Pitch];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * kF32Tile, n0 = blockIdx.x * kF32Tile;
  const int k0 = blockIdx.z * chunk, k1 = min(T, k0 + chunk);
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
  mainloop_f32<true, true>(acc, As, Bs, P, M, M, m0, false, Q, N, N, n0, drop_q, d, k0, k1);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int row = m0 + 4 * ty + i;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int col = n0 + 4 * tx + j;
      if (col >= N) continue;
      const long long e = (long long)row * N + col;
      if (partials) {
        partials[(long long)blockIdx.z * M * N + e] = acc[i][j];
      } else {
        add_out(dst, dst_bf16, e, alpha * acc[i][j]);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// bf16: tensor-core tiles (mma.sync m16n8k16, ldmatrix).

typedef __nv_bfloat16 bf16;
constexpr int kBfTile = 64;
constexpr int kBfBK = 32;
constexpr int kBfThreads = 128;
constexpr int kBfPitchK = kBfBK + 8;    // tiles [64][k]: k contiguous
constexpr int kBfPitchR = kBfTile + 8;  // tiles [k][64]: m or n contiguous
constexpr int kBfStage = kBfTile * kBfPitchK > kBfBK * kBfPitchR ? kBfTile * kBfPitchK : kBfBK * kBfPitchR;

// load_bf16 stages rows [r0, r0+64) × k [k0, k0+32) of an operand in its own
// layout: s[r][k] (pitch 40) when the operand is [ext][K], s[k][r] (pitch 72)
// when KMAJ ([K][ext]); zero outside [0,ext) × [0,k1). Full 8-element chunks
// of 16-byte-aligned rows go by cp.async unless dropout is applied (use_d),
// which rounds dropout(x) to bf16 in shared memory.
template <bool KMAJ>
__device__ __forceinline__ void load_bf16(bf16* s, const bf16* __restrict__ src, int ld, int ext, int r0, int k0,
                                          int k1, bool use_d, const Drop d) {
  constexpr int ROWS = KMAJ ? kBfBK : kBfTile, COLS = KMAJ ? kBfTile : kBfBK, PITCH = COLS + 8;
  const int row0 = KMAJ ? k0 : r0, col0 = KMAJ ? r0 : k0;
  const int row_end = KMAJ ? k1 : ext, col_end = KMAJ ? ext : k1;
  const bool vec = !use_d && ((reinterpret_cast<uintptr_t>(src) | ((uintptr_t)ld * sizeof(bf16))) & 15) == 0;
  for (int ch = threadIdx.x; ch < ROWS * COLS / 8; ch += kBfThreads) {
    const int r = ch / (COLS / 8), c = (ch % (COLS / 8)) * 8;
    const int gr = row0 + r, gc = col0 + c;
    bf16* p = s + r * PITCH + c;
    if (vec && gr < row_end && gc + 8 <= col_end) {
      cp_async_16(p, src + (long long)gr * ld + gc, 16);
    } else {
#pragma unroll
      for (int e = 0; e < 8; e++) {
        float v = 0.f;
        if (gr < row_end && gc + e < col_end) {
          const long long idx = (long long)gr * ld + gc + e;
          v = to_f32(src[idx]);
          if (use_d) v = apply(d, (unsigned long long)idx, v);
        }
        p[e] = __float2bfloat16(v);
      }
    }
  }
}

// frag_a loads the A fragment of rows m..m+15, k kk..kk+15. Matrices 0..3 of
// the x4 are (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
// (rows 8-15, k 8-15); from s[k][m] (KMAJ) .trans gives the same fragment.
template <bool KMAJ>
__device__ __forceinline__ void frag_a(uint32_t a[4], const bf16* s, int m, int kk, int lane) {
  if (KMAJ) {
    ldmatrix_x4_trans(a, &s[(kk + (lane & 7) + (lane >> 4) * 8) * kBfPitchR + m + ((lane >> 3) & 1) * 8]);
  } else {
    ldmatrix_x4(a, &s[(m + (lane & 7) + ((lane >> 3) & 1) * 8) * kBfPitchK + kk + (lane >> 4) * 8]);
  }
}

// frag_b loads the B fragments of columns n..n+7 (b0) and n+8..n+15 (b1),
// k kk..kk+15, from s[n][k] or (KMAJ) s[k][n] with .trans.
template <bool KMAJ>
__device__ __forceinline__ void frag_b(uint32_t b0[2], uint32_t b1[2], const bf16* s, int n, int kk, int lane) {
  uint32_t t[4];
  if (KMAJ) {
    ldmatrix_x4_trans(t, &s[(kk + (lane & 7) + ((lane >> 3) & 1) * 8) * kBfPitchR + n + (lane >> 4) * 8]);
  } else {
    ldmatrix_x4(t, &s[(n + (lane & 7) + (lane >> 4) * 8) * kBfPitchK + kk + ((lane >> 3) & 1) * 8]);
  }
  b0[0] = t[0];
  b0[1] = t[1];
  b1[0] = t[2];
  b1[1] = t[3];
}

// mainloop_bf16: as mainloop_f32; warp w owns the 32×32 sub-tile at
// (wm, wn) = (32·(w/2), 32·(w%2)) as acc[i][j] = rows wm+16i.., columns wn+8j..
template <bool AK, bool BK>
__device__ __forceinline__ void mainloop_bf16(float acc[2][4][4], bf16* As, bf16* Bs, const bf16* a, int lda, int M,
                                              int m0, bool a_drop, const bf16* b, int ldb, int N, int n0, bool b_drop,
                                              const Drop d, int k0, int k1) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  for (int kt = k0; kt < k1; kt += kBfBK) {
    load_bf16<AK>(As, a, lda, M, m0, kt, k1, a_drop, d);
    load_bf16<BK>(Bs, b, ldb, N, n0, kt, k1, b_drop, d);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBfBK; kk += 16) {
      uint32_t af[2][4], bfr[4][2];
#pragma unroll
      for (int i = 0; i < 2; i++) frag_a<AK>(af[i], As, wm + i * 16, kk, lane);
#pragma unroll
      for (int j = 0; j < 2; j++) frag_b<BK>(bfr[2 * j], bfr[2 * j + 1], Bs, wn + j * 16, kk, lane);
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) mma_bf16_16816(acc[i][j], af[i], bfr[j], acc[i][j]);
    }
    __syncthreads();
  }
}

// The accumulator layout of mma.m16n8k16: element e of acc[i][j] is at row
// wm + 16i + lane/4 + 8·(e/2), column wn + 8j + 2·(lane%4) + e%2.
__device__ __forceinline__ int acc_row(int i, int e) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  return (warp >> 1) * 32 + i * 16 + (lane >> 2) + (e >> 1) * 8;
}
__device__ __forceinline__ int acc_col(int j, int e) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  return (warp & 1) * 32 + j * 8 + (lane & 3) * 2 + (e & 1);
}

template <bool W_NN, bool B2_NN>
__device__ __forceinline__ void mm_bf16(bf16* __restrict__ C, const bf16* X, const bf16* W, const bf16* bias,
                                        const bf16* A2, const bf16* B2, int M, int N, int K, int R, float s,
                                        int drop_mode, const Drop d) {
  __shared__ __align__(16) bf16 As[kBfStage];
  __shared__ __align__(16) bf16 Bs[kBfStage];
  const int m0 = blockIdx.y * kBfTile, n0 = blockIdx.x * kBfTile;
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  if (A2 != nullptr) {  // the rank-R term first: acc = s·D(A2·op(B2))
    mainloop_bf16<false, B2_NN>(acc, As, Bs, A2, R, M, m0, false, B2, B2_NN ? N : R, N, n0, false, d, 0, R);
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int row = m0 + acc_row(i, e), col = n0 + acc_col(j, e);
          float v = s * acc[i][j][e];
          if (drop_mode == kDropOut && row < M && col < N) v = apply(d, (unsigned long long)row * N + col, v);
          acc[i][j][e] = v;
        }
  }
  mainloop_bf16<false, W_NN>(acc, As, Bs, X, K, M, m0, drop_mode == kDropIn, W, W_NN ? N : K, N, n0, false, d, 0, K);

#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int row = m0 + acc_row(i, e), col = n0 + acc_col(j, e);
        if (row < M && col < N) {
          C[(long long)row * N + col] = __float2bfloat16(acc[i][j][e] + (bias ? __bfloat162float(bias[col]) : 0.f));
        }
      }
}

__device__ __forceinline__ void tn_bf16(float* partials, void* dst, int dst_bf16, const bf16* P, const bf16* Q, int M,
                                        int N, int T, int chunk, float alpha, bool drop_q, const Drop d) {
  __shared__ __align__(16) bf16 As[kBfStage];
  __shared__ __align__(16) bf16 Bs[kBfStage];
  const int m0 = blockIdx.y * kBfTile, n0 = blockIdx.x * kBfTile;
  const int k0 = blockIdx.z * chunk, k1 = min(T, k0 + chunk);
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;
  mainloop_bf16<true, true>(acc, As, Bs, P, M, M, m0, false, Q, N, N, n0, drop_q, d, k0, k1);
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int row = m0 + acc_row(i, e), col = n0 + acc_col(j, e);
        if (row >= M || col >= N) continue;
        const long long idx = (long long)row * N + col;
        if (partials) {
          partials[(long long)blockIdx.z * M * N + idx] = acc[i][j][e];
        } else {
          add_out(dst, dst_bf16, idx, alpha * acc[i][j][e]);
        }
      }
}

// ---------------------------------------------------------------------------
// Column sums, the partial reduction and the bare dropout.

constexpr int kVecThreads = 256;

template <typename T>
__device__ __forceinline__ void colsum(float* partials, void* dst, int dst_bf16, const T* m, int T_, int N, int chunk,
                                       float alpha) {
  const int col = blockIdx.x * kVecThreads + threadIdx.x;
  const int k0 = blockIdx.y * chunk, k1 = min(T_, k0 + chunk);
  if (col >= N) return;
  float s = 0.f;
  for (int t = k0; t < k1; t++) s += to_f32(m[(long long)t * N + col]);
  if (partials) {
    partials[(long long)blockIdx.y * N + col] = s;
  } else {
    add_out(dst, dst_bf16, col, alpha * s);
  }
}

template <typename T>
__device__ __forceinline__ void dropout(T* u, const T* x, long long n, unsigned long long base, const Drop d) {
  for (long long i = blockIdx.x * (long long)kVecThreads + threadIdx.x; i < n;
       i += (long long)gridDim.x * kVecThreads) {
    u[i] = from_f32<T>(apply(d, base + (unsigned long long)i, to_f32(x[i])));
  }
}

}  // namespace lora

// ---------------------------------------------------------------------------
// Entry points.

#define LORA_DROP_PARAMS unsigned long long seed, unsigned int tensor_id, unsigned int step, unsigned int thr, float dscale
#define LORA_DROP lora::make_drop(seed, tensor_id, step, thr, dscale)

#define LORA_MM(name, impl, T, threads, WNN, BNN)                                                                 \
  extern "C" __global__ void __launch_bounds__(threads)                                                           \
      name(T* C, const T* X, const T* W, const T* bias, const T* A2, const T* B2, int M, int N, int K, int R,     \
           float s, int drop_mode, LORA_DROP_PARAMS) {                                                            \
    lora::impl<WNN, BNN>(C, X, W, bias, A2, B2, M, N, K, R, s, drop_mode, LORA_DROP);                             \
  }                                                                                                               \
  PERK_EXPORT(name)

LORA_MM(lora_mm_f32_nt_nt, mm_f32, float, lora::kF32Threads, false, false)
LORA_MM(lora_mm_f32_nn_nt, mm_f32, float, lora::kF32Threads, true, false)
LORA_MM(lora_mm_f32_nt_nn, mm_f32, float, lora::kF32Threads, false, true)
LORA_MM(lora_mm_f32_nn_nn, mm_f32, float, lora::kF32Threads, true, true)
LORA_MM(lora_mm_bf16_nt_nt, mm_bf16, __nv_bfloat16, lora::kBfThreads, false, false)
LORA_MM(lora_mm_bf16_nn_nt, mm_bf16, __nv_bfloat16, lora::kBfThreads, true, false)
LORA_MM(lora_mm_bf16_nt_nn, mm_bf16, __nv_bfloat16, lora::kBfThreads, false, true)
LORA_MM(lora_mm_bf16_nn_nn, mm_bf16, __nv_bfloat16, lora::kBfThreads, true, true)

#define LORA_TN(name, impl, T, threads)                                                                            \
  extern "C" __global__ void __launch_bounds__(threads)                                                            \
      name(float* partials, void* dst, int dst_bf16, const T* P, const T* Q, int M, int N, int T_, int chunk,       \
           float alpha, int drop_q, LORA_DROP_PARAMS) {                                                            \
    lora::impl(partials, dst, dst_bf16, P, Q, M, N, T_, chunk, alpha, drop_q != 0, LORA_DROP);                     \
  }                                                                                                                \
  PERK_EXPORT(name)

LORA_TN(lora_tn_f32, tn_f32, float, lora::kF32Threads)
LORA_TN(lora_tn_bf16, tn_bf16, __nv_bfloat16, lora::kBfThreads)

#define LORA_COLSUM(name, T)                                                                                       \
  extern "C" __global__ void __launch_bounds__(lora::kVecThreads)                                                  \
      name(float* partials, void* dst, int dst_bf16, const T* m, int T_, int N, int chunk, float alpha) {          \
    lora::colsum<T>(partials, dst, dst_bf16, m, T_, N, chunk, alpha);                                              \
  }                                                                                                                \
  PERK_EXPORT(name)

LORA_COLSUM(lora_colsum_f32, float)
LORA_COLSUM(lora_colsum_bf16, __nv_bfloat16)

extern "C" __global__ void __launch_bounds__(lora::kVecThreads)
    lora_reduce(void* dst, int dst_bf16, const float* partials, long long len, int chunks, float alpha) {
  for (long long i = blockIdx.x * (long long)lora::kVecThreads + threadIdx.x; i < len;
       i += (long long)gridDim.x * lora::kVecThreads) {
    float s = 0.f;
    for (int z = 0; z < chunks; z++) s += partials[(long long)z * len + i];
    lora::add_out(dst, dst_bf16, i, alpha * s);
  }
}
PERK_EXPORT(lora_reduce)

#define LORA_DROPOUT(name, T)                                                                                      \
  extern "C" __global__ void __launch_bounds__(lora::kVecThreads)                                                  \
      name(T* u, const T* x, long long n, unsigned long long base, LORA_DROP_PARAMS) {                             \
    lora::dropout<T>(u, x, n, base, LORA_DROP);                                                                    \
  }                                                                                                                \
  PERK_EXPORT(name)

LORA_DROPOUT(lora_dropout_f32, float)
LORA_DROPOUT(lora_dropout_bf16, __nv_bfloat16)
