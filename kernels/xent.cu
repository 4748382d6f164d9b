// xent.cu: weighted token cross-entropy fused with the LM head, one
// vocabulary chunk at a time, so the N×V logits never exist in memory.
//
// For hidden states h [N,d] and the head (tied embedding) E [V,d], both in
// storage type T (f32, bf16 or f16), logits z = h·Eᵀ, labels y [N] (int32,
// −100 = ignored) and optional f32 weights w [N]:
//   lse_i = log Σ_v exp z_iv,  ce_i = lse_i − z_{i,y_i} (0 when ignored),
//   loss  = Σ_i w_i·ce_i / norm,
// and the backward, for a loss cotangent folded into scale = dLoss/norm:
//   G_iv = w_i·(softmax_iv − [v = y_i])  (0 for ignored rows),
//   dh = scale·G·E (overwritten),  dE += scale·Gᵀ·h,  dw_i = scale·ce_i.
// (scale multiplies the GEMM results rather than G, so a small dLoss/norm
// does not push the stored G towards the 16-bit types' subnormal range.)
// Every result accumulates in f32; per-token vectors (w, ce, lse, dw) are f32.
//
// Kernels (C = the vocabulary chunk, a multiple of 64; chunks = ⌈V/C⌉):
//   xent_check_labels  grid-stride, 256 threads: counts labels outside [0,V)
//                      that are not −100 (integer atomics; the wrapper reads
//                      the count back and refuses to go on when it is not 0).
//   xent_fwd_<t>       grid (chunks, ⌈N/64⌉), 128 threads. Block (c, r) walks
//                      the 64-wide vocabulary tiles of chunk c for rows
//                      64r..64r+63: each tile's logits come from a 64×64 GEMM
//                      into shared memory, then two threads per row fold the
//                      tile into the row's running max and sum of exponentials
//                      (online log-sum-exp). Writes the chunk's (max, sum) per
//                      row, and the label's logit from the one tile that holds it.
//   xent_combine       grid ⌈N/256⌉, 256 threads: merges the chunk partials of
//                      each row in chunk order into lse and ce, and one
//                      partial of Σ w·ce per block.
//   xent_loss          1 block of 256: loss = Σ partials / norm (fixed order).
//   xent_dw            grid-stride, 256 threads: dw_i = scale·ce_i.
//   xent_grad_<t>      grid (⌈Cw/64⌉, ⌈N/64⌉), 128 threads, for the chunk at
//                      v0 of width Cw: recomputes a 64×64 logits tile and
//                      writes G for it (storage T) into the [N, C] chunk buffer.
//   xent_dh_<t>        grid (⌈d/64⌉, ⌈N/64⌉), 128 threads: a 64×64 tile of
//                      scale·G_chunk·E_chunk, added to the f32 running dh of
//                      the earlier chunks; the last chunk stores dh in T.
//   xent_demb_<t>      grid (⌈d/64⌉, ⌈Cw/64⌉), 128 threads: a 64×64 tile of
//                      scale·G_chunkᵀ·h added into dE's chunk rows (read, add,
//                      store).
// Sums over N (dE) run inside one block in row order and sums over V (lse,
// dh) in chunk order, so results are bit-identical run to run: no float
// atomics anywhere.
//
// GEMM tiles: f32 storage uses SIMT FMA (each thread an 8×4 sub-tile, k slices
// of 32 staged in shared memory, rows padded to 33 or 68 floats); 16-bit
// storage uses mma.m16n8k16 (4 warps in 2×2, each 32×32, fragments from
// ldmatrix, .trans for operands stored k-major, rows padded by 8 elements)
// with two slice buffers filled by cp.async, the next slice loading while the
// current one is multiplied.
// Shared memory (static): the f32 tile 64×68×4 = 17408 bytes plus the operand
// slices (f32: one stage, ≤ 17408 bytes; 16-bit: two stages, ≤ 20480 bytes)
// and, in xent_grad, 768 bytes of per-row values; the 256-thread kernels use
// 32 bytes.
// Reference: nn/cpu CrossEntropyForward / CrossEntropyBackward
// (kernels/xent_test.go).
#include "common.cuh"

#define XENT_BM 64
#define XENT_BN 64
#define XENT_BK 32
#define XENT_THREADS 128
#define XENT_SP 68  // row pitch (floats) of the f32 tile in shared memory
#define XENT_ROW_THREADS 256
#define XENT_IGNORE (-100)

// Row pitches of the staged operand slices: XentPitch<T>::K for a slice of
// 64 rows (m or n) by 32 k, ::X for one of 32 k-rows by 64 (m or n). 16-bit
// rows are padded by 8 elements (16 bytes) so ldmatrix rows fall in distinct
// banks; the f32 64×32 slices have an odd pitch for conflict-free SIMT reads.
template <typename T> struct XentPitch {
  enum { K = XENT_BK + 8, X = XENT_BN + 8 };
};
template <> struct XentPitch<float> {
  enum { K = XENT_BK + 1, X = XENT_BN + 4 };
};

// xent_copy16 copies 16 bytes from global to shared memory: asynchronously
// (cp.async) for the 16-bit types, whose slices are 16-byte aligned in shared
// memory, through registers for f32 (odd row pitch).
template <typename T> __device__ __forceinline__ void xent_copy16(T* dst, const T* src) {
  cp_async_16(dst, src, 16);
}
template <> __device__ __forceinline__ void xent_copy16<float>(float* dst, const float* src) {
  const float4 v = *reinterpret_cast<const float4*>(src);
  dst[0] = v.x;
  dst[1] = v.y;
  dst[2] = v.z;
  dst[3] = v.w;
}

// xent_load_window copies the ROWS×COLS window at (r0, c0) of a row-major
// [nrows, ncols] matrix with leading dimension ld into dst (row pitch pitch),
// zero-filling outside the matrix. vec != 0 allows 16-byte loads (the wrapper
// checked alignment of the base and ld); for 16-bit T those are cp.async copies
// that the caller must commit and wait for.
template <typename T, int ROWS, int COLS>
__device__ __forceinline__ void xent_load_window(T* dst, int pitch, const T* __restrict__ src, int nrows,
                                                 int ncols, long long ld, int r0, int c0, int vec) {
  const int EPV = 16 / sizeof(T);
  const int PER_ROW = COLS / EPV;
  for (int ch = threadIdx.x; ch < ROWS * PER_ROW; ch += XENT_THREADS) {
    const int r = ch / PER_ROW, c = (ch % PER_ROW) * EPV;
    const int gr = r0 + r, gc = c0 + c;
    T* d = dst + r * pitch + c;
    if (vec && gr < nrows && gc + EPV <= ncols) {
      xent_copy16<T>(d, src + gr * ld + gc);
    } else {
      for (int e = 0; e < EPV; e++) {
        d[e] = (gr < nrows && gc + e < ncols) ? src[gr * ld + gc + e] : from_f32<T>(0.f);
      }
    }
  }
}

__device__ __forceinline__ void xent_mma(float d[4], const uint32_t a[4], const uint32_t b[2], __nv_bfloat16) {
  mma_bf16_16816(d, a, b, d);
}
__device__ __forceinline__ void xent_mma(float d[4], const uint32_t a[4], const uint32_t b[2], __half) {
  mma_f16_16816(d, a, b, d);
}

// XentMM<T, AKM, BKM>::run sets S[r][c] (pitch XENT_SP) = Σ_k A(m0+r, k)·B(k, n0+c)
// for the 64×64 tile, zero outside [M, N]. A(m, k) is stored row-major as
// [M, K] (lda) or, with AKM, as [K, M]; B(k, n) as [N, K] (ldb) or, with BKM,
// as [K, N]. vec bit 0 (A) and bit 1 (B) allow 16-byte loads. Ends with a
// barrier, so S is ready for every thread of the block.
template <typename T, bool AKM, bool BKM> struct XentMM {
  // load stages the k slice at k0 of both operands into As and Bs (one stage).
  static __device__ __forceinline__ void load(T* As, T* Bs, const T* __restrict__ A, long long lda,
                                              const T* __restrict__ B, long long ldb, int M, int N, int K,
                                              int m0, int n0, int k0, int vec) {
    const int PK = XentPitch<T>::K, PX = XentPitch<T>::X;
    if (AKM) {
      xent_load_window<T, XENT_BK, XENT_BM>(As, PX, A, K, M, lda, k0, m0, vec & 1);
    } else {
      xent_load_window<T, XENT_BM, XENT_BK>(As, PK, A, M, K, lda, m0, k0, vec & 1);
    }
    if (BKM) {
      xent_load_window<T, XENT_BK, XENT_BN>(Bs, PX, B, K, N, ldb, k0, n0, vec & 2);
    } else {
      xent_load_window<T, XENT_BN, XENT_BK>(Bs, PK, B, N, K, ldb, n0, k0, vec & 2);
    }
    cp_async_commit();
  }

  static __device__ __forceinline__ void run(float* S, const T* __restrict__ A, long long lda,
                                             const T* __restrict__ B, long long ldb, int M, int N, int K,
                                             int m0, int n0, int vec) {
    const int PK = XentPitch<T>::K, PX = XentPitch<T>::X;
    const int A_ELEMS = AKM ? XENT_BK * (XENT_BM + 8) : XENT_BM * (XENT_BK + 8);
    const int B_ELEMS = BKM ? XENT_BK * (XENT_BN + 8) : XENT_BN * (XENT_BK + 8);
    // Two stages: the copies of slice k+1 run while slice k is multiplied.
    __shared__ __align__(16) T As[2 * A_ELEMS];
    __shared__ __align__(16) T Bs[2 * B_ELEMS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

    if (K > 0) load(As, Bs, A, lda, B, ldb, M, N, K, m0, n0, 0, vec);
    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += XENT_BK, buf ^= 1) {
      // Slice k0 has landed, and every warp is done with the other buffer.
      cp_async_wait_all();
      __syncthreads();
      if (k0 + XENT_BK < K) {
        load(As + (buf ^ 1) * A_ELEMS, Bs + (buf ^ 1) * B_ELEMS, A, lda, B, ldb, M, N, K, m0, n0, k0 + XENT_BK, vec);
      }
      const T* as = As + buf * A_ELEMS;
      const T* bs = Bs + buf * B_ELEMS;
#pragma unroll
      for (int kk = 0; kk < XENT_BK; kk += 16) {
        // A fragments: matrices (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15),
        // (m 8-15, k 8-15); lane l gives row l%8 of matrix q = l/8.
        uint32_t af[2][4], bf[4][2];
        const int q = lane >> 3, r8 = lane & 7;
#pragma unroll
        for (int i = 0; i < 2; i++) {
          if (AKM) {  // as[k][m]: transpose while loading
            ldmatrix_x4_trans(af[i], &as[(kk + (q >> 1) * 8 + r8) * PX + wm + i * 16 + (q & 1) * 8]);
          } else {
            ldmatrix_x4(af[i], &as[(wm + i * 16 + (q & 1) * 8 + r8) * PK + kk + (q >> 1) * 8]);
          }
        }
#pragma unroll
        for (int j = 0; j < 2; j++) {
          // B fragments of two n8 tiles: matrices (n 0-7: k 0-7, k 8-15), then n 8-15.
          uint32_t t[4];
          if (BKM) {  // bs[k][n]
            ldmatrix_x4_trans(t, &bs[(kk + (q & 1) * 8 + r8) * PX + wn + j * 16 + (q >> 1) * 8]);
          } else {  // bs[n][k]
            ldmatrix_x4(t, &bs[(wn + j * 16 + (q >> 1) * 8 + r8) * PK + kk + (q & 1) * 8]);
          }
          bf[2 * j][0] = t[0];
          bf[2 * j][1] = t[1];
          bf[2 * j + 1][0] = t[2];
          bf[2 * j + 1][1] = t[3];
        }
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) xent_mma(acc[i][j], af[i], bf[j], T());
      }
    }
    __syncthreads();  // the next call's first copies must not overwrite a slice in use
    // Accumulator layout: c0,c1 at (row l/4, cols 2(l%4)+{0,1}); c2,c3 at row +8.
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int r = wm + i * 16 + (lane >> 2), c = wn + j * 8 + (lane & 3) * 2;
        S[r * XENT_SP + c] = acc[i][j][0];
        S[r * XENT_SP + c + 1] = acc[i][j][1];
        S[(r + 8) * XENT_SP + c] = acc[i][j][2];
        S[(r + 8) * XENT_SP + c + 1] = acc[i][j][3];
      }
    __syncthreads();
  }
};

// f32 storage: SIMT FMA, thread (tx = t%16, ty = t/16) owns rows ty+8i and
// columns tx+16j of the tile; each dot product is one FMA chain in k order.
template <bool AKM, bool BKM> struct XentMM<float, AKM, BKM> {
  static __device__ __forceinline__ void run(float* S, const float* __restrict__ A, long long lda,
                                             const float* __restrict__ B, long long ldb, int M, int N, int K,
                                             int m0, int n0, int vec) {
    const int PK = XentPitch<float>::K, PX = XentPitch<float>::X;
    __shared__ __align__(16) float As[AKM ? XENT_BK * (XENT_BM + 4) : XENT_BM * (XENT_BK + 1)];
    __shared__ __align__(16) float Bs[BKM ? XENT_BK * (XENT_BN + 4) : XENT_BN * (XENT_BK + 1)];
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[8][4];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < K; k0 += XENT_BK) {
      if (AKM) {
        xent_load_window<float, XENT_BK, XENT_BM>(As, PX, A, K, M, lda, k0, m0, vec & 1);
      } else {
        xent_load_window<float, XENT_BM, XENT_BK>(As, PK, A, M, K, lda, m0, k0, vec & 1);
      }
      if (BKM) {
        xent_load_window<float, XENT_BK, XENT_BN>(Bs, PX, B, K, N, ldb, k0, n0, vec & 2);
      } else {
        xent_load_window<float, XENT_BN, XENT_BK>(Bs, PK, B, N, K, ldb, n0, k0, vec & 2);
      }
      __syncthreads();
      const int kn = min(XENT_BK, K - k0);
      for (int k = 0; k < kn; k++) {
        float a[8], b[4];
#pragma unroll
        for (int i = 0; i < 8; i++) a[i] = AKM ? As[k * PX + ty + 8 * i] : As[(ty + 8 * i) * PK + k];
#pragma unroll
        for (int j = 0; j < 4; j++) b[j] = BKM ? Bs[k * PX + tx + 16 * j] : Bs[(tx + 16 * j) * PK + k];
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
      for (int j = 0; j < 4; j++) S[(ty + 8 * i) * XENT_SP + tx + 16 * j] = acc[i][j];
    __syncthreads();
  }
};

// xent_check_labels: count[0] += the number of labels outside [0, v) that are
// not −100.
extern "C" __global__ void __launch_bounds__(XENT_ROW_THREADS)
    xent_check_labels(const int* __restrict__ labels, int n, int v, int* count) {
  int bad = 0;
  for (int i = blockIdx.x * XENT_ROW_THREADS + threadIdx.x; i < n; i += gridDim.x * XENT_ROW_THREADS) {
    const int y = labels[i];
    if (y != XENT_IGNORE && (y < 0 || y >= v)) bad++;
  }
  if (bad) atomicAdd(count, bad);
}
PERK_EXPORT(xent_check_labels)

// xent_fwd: partial online log-sum-exp of chunk blockIdx.x for rows
// 64·blockIdx.y.. (see the header). pm, ps are [chunks, n]; tgt [n] gets the
// label's logit.
template <typename T>
__device__ __forceinline__ void xent_fwd_impl(const T* __restrict__ h, const T* __restrict__ emb,
                                              const int* __restrict__ labels, int n, int v, int d, int chunk,
                                              int vec, float* __restrict__ pm, float* __restrict__ ps,
                                              float* __restrict__ tgt) {
  __shared__ __align__(16) float S[XENT_BM * XENT_SP];
  const int split = blockIdx.x, m0 = blockIdx.y * XENT_BM;
  const int vb = split * chunk, ve = min(v, vb + chunk);
  // Two threads per row; thread `half` takes the row's columns c ≡ half (mod 2).
  const int r = threadIdx.x >> 1, half = threadIdx.x & 1, i = m0 + r;
  const int y = i < n ? labels[i] : XENT_IGNORE;
  float run_m = -INFINITY, run_s = 0.f;
  for (int n0 = vb; n0 < ve; n0 += XENT_BN) {
    XentMM<T, false, false>::run(S, h, d, emb, d, n, v, d, m0, n0, vec);
    const int w = min(XENT_BN, ve - n0);
    const float* row = S + r * XENT_SP;
    float tm = -INFINITY;
    for (int c = half; c < w; c += 2) tm = fmaxf(tm, row[c]);
    tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
    const float nm = fmaxf(run_m, tm);
    float ts = 0.f;
    for (int c = half; c < w; c += 2) ts += expf(row[c] - nm);
    ts += __shfl_xor_sync(0xffffffffu, ts, 1);
    run_s = run_s * expf(run_m - nm) + ts;
    run_m = nm;
    if (y >= n0 && y < n0 + w && ((y - n0) & 1) == half) tgt[i] = row[y - n0];
    __syncthreads();  // S is rewritten by the next tile
  }
  if (i < n && half == 0) {
    pm[(long long)split * n + i] = run_m;
    ps[(long long)split * n + i] = run_s;
  }
}

// xent_combine: lse and ce per row from the chunk partials (chunk order), and
// partials[blockIdx.x] = Σ w·ce over the block's rows. A label outside [0,v)
// that is not −100 (the wrapper rejects those first) gives ce = NaN.
extern "C" __global__ void __launch_bounds__(XENT_ROW_THREADS)
    xent_combine(const float* __restrict__ pm, const float* __restrict__ ps, const float* __restrict__ tgt,
                 const int* __restrict__ labels, const float* __restrict__ weights, int n, int v, int splits,
                 float* __restrict__ ce, float* __restrict__ lse, float* __restrict__ partials) {
  const int i = blockIdx.x * XENT_ROW_THREADS + threadIdx.x;
  float contrib = 0.f;
  if (i < n) {
    float m = -INFINITY;
    for (int j = 0; j < splits; j++) m = fmaxf(m, pm[(long long)j * n + i]);
    float s = 0.f;
    for (int j = 0; j < splits; j++) s += ps[(long long)j * n + i] * expf(pm[(long long)j * n + i] - m);
    const float l = m + logf(s);
    if (lse) lse[i] = l;
    const int y = labels[i];
    float e = 0.f;
    if (y != XENT_IGNORE) {
      e = (y >= 0 && y < v) ? l - tgt[i] : NAN;
      contrib = (weights ? weights[i] : 1.f) * e;
    }
    ce[i] = e;
  }
  const float r = block_sum<XENT_ROW_THREADS>(contrib);
  if (threadIdx.x == 0) partials[blockIdx.x] = r;
}
PERK_EXPORT(xent_combine)

// xent_loss: one block; loss[0] = (Σ partials in a fixed order) / norm.
extern "C" __global__ void __launch_bounds__(XENT_ROW_THREADS)
    xent_loss(const float* __restrict__ partials, int nparts, float norm, float* __restrict__ loss) {
  float s = 0.f;
  for (int c = threadIdx.x; c < nparts; c += XENT_ROW_THREADS) s += partials[c];
  const float r = block_sum<XENT_ROW_THREADS>(s);
  if (threadIdx.x == 0) loss[0] = r / norm;
}
PERK_EXPORT(xent_loss)

// xent_dw: dw_i = scale·ce_i, 0 for ignored rows.
extern "C" __global__ void __launch_bounds__(XENT_ROW_THREADS)
    xent_dw(const float* __restrict__ ce, const int* __restrict__ labels, int n, float scale,
            float* __restrict__ dw) {
  for (int i = blockIdx.x * XENT_ROW_THREADS + threadIdx.x; i < n; i += gridDim.x * XENT_ROW_THREADS) {
    dw[i] = labels[i] == XENT_IGNORE ? 0.f : scale * ce[i];
  }
}
PERK_EXPORT(xent_dw)

// xent_grad: G[i][vv−v0] (leading dimension ldg) for the 64×64 tile of rows
// 64·blockIdx.y.. and vocabulary v0 + 64·blockIdx.x.., inside the chunk
// [v0, v0+cw).
template <typename T>
__device__ __forceinline__ void xent_grad_impl(const T* __restrict__ h, const T* __restrict__ emb,
                                               const int* __restrict__ labels, const float* __restrict__ weights,
                                               const float* __restrict__ lse, int n, int v, int d, int v0, int cw,
                                               int vec, T* __restrict__ G, int ldg) {
  __shared__ __align__(16) float S[XENT_BM * XENT_SP];
  __shared__ float row_coef[XENT_BM], row_lse[XENT_BM];
  __shared__ int row_label[XENT_BM];
  const int m0 = blockIdx.y * XENT_BM, n0 = v0 + blockIdx.x * XENT_BN;
  if (threadIdx.x < XENT_BM) {
    const int i = m0 + threadIdx.x;
    int y = XENT_IGNORE;
    float coef = 0.f, l = 0.f;
    if (i < n) {
      y = labels[i];
      if (y != XENT_IGNORE) coef = weights ? weights[i] : 1.f;
      l = lse[i];
    }
    row_coef[threadIdx.x] = coef;
    row_lse[threadIdx.x] = l;
    row_label[threadIdx.x] = y;
  }
  XentMM<T, false, false>::run(S, h, d, emb, d, n, v, d, m0, n0, vec);  // its barriers publish the row values
  const int rows = min(XENT_BM, n - m0), cols = min(XENT_BN, v0 + cw - n0);
  for (int idx = threadIdx.x; idx < XENT_BM * XENT_BN; idx += XENT_THREADS) {
    const int r = idx / XENT_BN, c = idx % XENT_BN;
    if (r >= rows || c >= cols) continue;
    const float coef = row_coef[r];
    float g = 0.f;
    if (coef != 0.f) {
      g = expf(S[r * XENT_SP + c] - row_lse[r]);
      if (n0 + c == row_label[r]) g -= 1.f;
      g *= coef;
    }
    G[(long long)(m0 + r) * ldg + (n0 - v0 + c)] = from_f32<T>(g);
  }
}

// xent_mm (xent_dh with AKM = false, xent_demb with AKM = true): the 64×64
// tile (blockIdx.y, blockIdx.x) of A·B, B row-major [K, N], then
// out = alpha·tile + prev (if prev) + outT (if addT), stored to outF when it is
// not null, else to outT in storage T. prev, outF and outT have leading
// dimension ldo.
template <typename T, bool AKM>
__device__ __forceinline__ void xent_mm_impl(const T* __restrict__ A, long long lda, const T* __restrict__ B,
                                             long long ldb, int M, int N, int K, int vec, float alpha,
                                             const float* prev, float* outF, T* outT, int addT, long long ldo) {
  __shared__ __align__(16) float S[XENT_BM * XENT_SP];
  const int m0 = blockIdx.y * XENT_BM, n0 = blockIdx.x * XENT_BN;
  XentMM<T, AKM, true>::run(S, A, lda, B, ldb, M, N, K, m0, n0, vec);
  const int rows = min(XENT_BM, M - m0), cols = min(XENT_BN, N - n0);
  for (int idx = threadIdx.x; idx < XENT_BM * XENT_BN; idx += XENT_THREADS) {
    const int r = idx / XENT_BN, c = idx % XENT_BN;
    if (r >= rows || c >= cols) continue;
    const long long o = (long long)(m0 + r) * ldo + n0 + c;
    float val = alpha * S[r * XENT_SP + c];
    if (prev) val += prev[o];
    if (addT) val += to_f32(outT[o]);
    if (outF) {
      outF[o] = val;
    } else {
      outT[o] = from_f32<T>(val);
    }
  }
}

#define XENT_KERNELS(SFX, T)                                                                                \
  extern "C" __global__ void __launch_bounds__(XENT_THREADS)                                                \
      xent_fwd_##SFX(const T* h, const T* emb, const int* labels, int n, int v, int d, int chunk, int vec, \
                     float* pm, float* ps, float* tgt) {                                                   \
    xent_fwd_impl<T>(h, emb, labels, n, v, d, chunk, vec, pm, ps, tgt);                                    \
  }                                                                                                         \
  PERK_EXPORT(xent_fwd_##SFX)                                                                               \
  extern "C" __global__ void __launch_bounds__(XENT_THREADS)                                                \
      xent_grad_##SFX(const T* h, const T* emb, const int* labels, const float* weights, const float* lse, \
                      int n, int v, int d, int v0, int cw, int vec, T* G, int ldg) {                        \
    xent_grad_impl<T>(h, emb, labels, weights, lse, n, v, d, v0, cw, vec, G, ldg);                         \
  }                                                                                                         \
  PERK_EXPORT(xent_grad_##SFX)                                                                              \
  extern "C" __global__ void __launch_bounds__(XENT_THREADS)                                                \
      xent_dh_##SFX(const T* A, long long lda, const T* B, long long ldb, int M, int N, int K, int vec,     \
                    float alpha, const float* prev, float* outF, T* outT, int addT, long long ldo) {        \
    xent_mm_impl<T, false>(A, lda, B, ldb, M, N, K, vec, alpha, prev, outF, outT, addT, ldo);               \
  }                                                                                                         \
  PERK_EXPORT(xent_dh_##SFX)                                                                                \
  extern "C" __global__ void __launch_bounds__(XENT_THREADS)                                                \
      xent_demb_##SFX(const T* A, long long lda, const T* B, long long ldb, int M, int N, int K, int vec,   \
                      float alpha, const float* prev, float* outF, T* outT, int addT, long long ldo) {      \
    xent_mm_impl<T, true>(A, lda, B, ldb, M, N, K, vec, alpha, prev, outF, outT, addT, ldo);                \
  }                                                                                                         \
  PERK_EXPORT(xent_demb_##SFX)

XENT_KERNELS(f32, float)
XENT_KERNELS(bf16, __nv_bfloat16)
XENT_KERNELS(f16, __half)
