// attention.cu: softmax attention over variable-length segments packed along
// the token axis (FlashAttention-2 style), its backward, and a decode kernel
// for generation against a KV cache.
//
// Layouts (row-major): q, o, dout, dq [T,Hq,D]; k, v, dk, dv [T,Hkv,D]; lse and
// delta [Hq,T] f32. Query head h reads kv head h/(Hq/Hkv). cu [S+1] holds the
// segment boundaries; tokens attend only within their own segment (and, when
// causal, only to keys at or before themselves). lse is the natural-log
// log-sum-exp of each query's scaled scores. The T×T score matrix is never
// materialised: every block streams key tiles of its segment through shared
// memory with an online softmax (running max and sum in f32).
//
// Work lists: `tiles` holds pairs (first row, segment index) for every tile of
// B rows of every segment (built on the host); blockIdx.x picks a pair,
// blockIdx.y the head. Forward and dQ tiles are query tiles, dK/dV tiles are
// key tiles. Every kernel uses 128 threads.
//
// attn_fwd_<t>_d<D>(q, k, v, o, lse, cu, tiles, T, Hq, Hkv, causal, scale)
//   bf16: B = 64 query rows, 4 warps × 16 rows. QKᵀ and PV with
//     mma.m16n8k16 (ldmatrix; .trans for V); Q fragments stay in registers;
//     P is rounded to bf16 for PV (the sum uses the f32 probabilities). Shared:
//     K and V tiles 64×(D+8) bf16 (Q is staged through the K buffer), 2·64·(D+8)·2
//     bytes (18 KiB for D=64, 34 KiB for D=128); V of a tile loads (cp.async)
//     while QKᵀ runs, the next K while PV runs.
//   f32: SIMT FP32 FMA. B = 32 rows (D ≤ 64) or 16 (D = 128) and key tiles of
//     B; the R = 128/B threads of a row (one warp) each take the keys c ≡ i
//     (mod R) of a tile and the output columns d ≡ i (mod R). Shared: Q, K
//     [B][D+1], V [B][D], P [B][B+1] f32 (28 KiB for D=64, 25 KiB for D=128).
// attn_bwd_dq_<t>_d<D>(q, k, v, o, dout, lse, delta, dq, cu, tiles, T, Hq, Hkv,
//   causal, scale): Q-major pass. Writes delta = rowsum(dout∘o) (f32, [Hq,T])
//   for its rows first, then streams the key tiles: P = exp(scale·qkᵀ − lse),
//   dS = P∘(dout·vᵀ − delta), dq = scale·dS·k. bf16: 64 query rows, key tiles
//   of 64 (D ≤ 64) or 16 (D = 128); shared Q, dO 64×(D+8) and K, V
//   tile×(D+8) bf16 (36 KiB for D=64, 43 KiB for D=128). f32: B as forward;
//   shared Q, dO, K, V [B][D+1] and dS [B][B+1] f32.
// attn_bwd_dkdv_<t>_d<D>(q, k, v, dout, lse, delta, dk, dv, cu, tiles, T, Hq,
//   Hkv, causal, scale): K/V-major pass, grid (key tiles, Hkv); each block
//   keeps its K, V tile and loops over the query heads of its group, then the
//   query tiles of the segment (from the tile holding its first key when
//   causal), in a fixed order: dv = Σ Pᵀ·dout, dk = scale·Σ dSᵀ·q. It reads
//   the delta written by attn_bwd_dq, so it runs after it. bf16: 64 keys
//   (4 warps × 16), query tiles of 64 (D ≤ 64) or 16 (D = 128); shared K, V
//   64×(D+8), Q, dO tile×(D+8) bf16 (36 KiB / 43 KiB). f32: B as forward;
//   shared K, V, Q, dO [B][D+1], P, dS [B][B+1] f32 (42 KiB for D=64).
// attn_decode_<t>(q, k, v, lens, o, N, Hq, Hkv, D, C, scale): q, o [Bt,N,Hq,D]
//   are the N newest tokens of each of Bt sequences, k, v [Bt,C,Hkv,D] their
//   KV caches holding lens[b] ≤ C positions; query n sits at position
//   lens[b]−N+n and sees cache positions 0..lens[b]−N+n. Grid (Hq, N, Bt),
//   128 threads: groups of D/4 threads (4 elements each) take one key at a
//   time with a private online softmax, merged in a fixed order through
//   shared memory (2.3 KiB). A sequence with lens[b] outside [N, C] gets NaN.
//
// D ∈ {16, 32, 64, 128}. No atomics: every output element is written by one
// thread, every sum runs in a fixed order, so reruns are bit-identical.
// Reference: nn/cpu AttentionForward / AttentionBackward in float64 on the
// rounded inputs (kernels/attention_test.go).
#include "common.cuh"

namespace perk_attn {

typedef __nv_bfloat16 bf16;

constexpr int kThreads = 128;
constexpr int kPad = 8;  // bf16 row padding: ldmatrix rows land in distinct banks
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.69314718055994531f;

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// Tile is one work item: rows [r0, min(r0+B, seg1)) of segment [seg0, seg1).
struct Tile {
  int r0, seg0, seg1;
};

__device__ __forceinline__ Tile tile_at(const int* __restrict__ cu, const int* __restrict__ tiles, int b) {
  Tile t;
  t.r0 = tiles[2 * b];
  const int s = tiles[2 * b + 1];
  t.seg0 = cu[s];
  t.seg1 = cu[s + 1];
  return t;
}

__device__ __forceinline__ uint32_t pack_f32x2(float lo, float hi) {
  return pack2_bf16(__float2bfloat16(lo), __float2bfloat16(hi));
}

// load_rows copies rows [r0, r0+ROWS) of src (row stride ld elements, already
// offset to the head) into dst with 16-byte cp.async; rows ≥ rend are zeroed.
template <int ROWS, int D>
__device__ __forceinline__ void load_rows(bf16 (*dst)[D + kPad], const bf16* __restrict__ src, long long ld,
                                          int r0, int rend) {
  constexpr int CPR = D / 8;
  for (int ch = threadIdx.x; ch < ROWS * CPR; ch += kThreads) {
    const int r = ch / CPR, c = (ch % CPR) * 8;
    const int gr = r0 + r;
    if (gr < rend) {
      cp_async_16(&dst[r][c], src + (long long)gr * ld + c, 16);
    } else {
      cp_async_16(&dst[r][c], src, 0);
    }
  }
}

// load_rows_f32 is load_rows for f32 tiles with row pitch P.
template <int ROWS, int D, int P>
__device__ __forceinline__ void load_rows_f32(float (*dst)[P], const float* __restrict__ src, long long ld, int r0,
                                              int rend) {
  for (int i = threadIdx.x; i < ROWS * D; i += kThreads) {
    const int r = i / D, c = i % D;
    const int gr = r0 + r;
    dst[r][c] = gr < rend ? src[(long long)gr * ld + c] : 0.f;
  }
}

// Fragment addressing (PTX mma.m16n8k16 layouts): ldsm_a gives the A
// fragment of the 16×16 block at (row0, col0) of a row-major [m][k] tile;
// ldsm_b gives the B fragments of two n-tiles (rows n0..n0+15 of an [n][k]
// tile, k from col0): b[0..1] for n0..n0+7, b[2..3] for n0+8..n0+15;
// ldsm_bt the same from a k-major [k][n] tile (k rows from row0, n from col0).
template <int LD>
__device__ __forceinline__ void ldsm_a(uint32_t a[4], const bf16 (*s)[LD], int row0, int col0, int lane) {
  ldmatrix_x4(a, &s[row0 + (lane & 7) + ((lane >> 3) & 1) * 8][col0 + (lane >> 4) * 8]);
}
template <int LD>
__device__ __forceinline__ void ldsm_b(uint32_t b[4], const bf16 (*s)[LD], int n0, int col0, int lane) {
  ldmatrix_x4(b, &s[n0 + (lane & 7) + (lane >> 4) * 8][col0 + ((lane >> 3) & 1) * 8]);
}
template <int LD>
__device__ __forceinline__ void ldsm_bt(uint32_t b[4], const bf16 (*s)[LD], int row0, int col0, int lane) {
  ldmatrix_x4_trans(b, &s[row0 + (lane & 7) + ((lane >> 3) & 1) * 8][col0 + (lane >> 4) * 8]);
}

__device__ __forceinline__ void mma2(float c0[4], float c1[4], const uint32_t a[4], const uint32_t b[4]) {
  const uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
  mma_bf16_16816(c0, a, b0, c0);
  mma_bf16_16816(c1, a, b1, c1);
}

// c_to_a turns the accumulators of n-tiles (2j, 2j+1) into the bf16 A
// fragment of k-step j (the 16 columns become the 16 k indices).
__device__ __forceinline__ void c_to_a(uint32_t a[4], const float c0[4], const float c1[4]) {
  a[0] = pack_f32x2(c0[0], c0[1]);
  a[1] = pack_f32x2(c0[2], c0[3]);
  a[2] = pack_f32x2(c1[0], c1[1]);
  a[3] = pack_f32x2(c1[2], c1[3]);
}

// ---------------------------------------------------------------------------
// Forward, bf16 on the tensor cores.

template <int D>
__device__ void fwd_bf16(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                         bf16* __restrict__ o, float* __restrict__ lse, const int* __restrict__ cu,
                         const int* __restrict__ tiles, int T, int Hq, int Hkv, int causal, float scale) {
  constexpr int BR = 64, BC = 64, LDS = D + kPad, KD = D / 16, ND = D / 8, NS = BC / 8;
  __shared__ __align__(16) bf16 Ks[BC][LDS];
  __shared__ __align__(16) bf16 Vs[BC][LDS];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int h = blockIdx.y, g = h / (Hq / Hkv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t4 = lane & 3;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const bf16* kh = k + (long long)g * D;
  const bf16* vh = v + (long long)g * D;
  const int rend = min(t.r0 + BR, t.seg1);

  // Q goes through the K buffer into registers.
  load_rows<BR, D>(Ks, q + (long long)h * D, ldq, t.r0, t.seg1);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  uint32_t qf[KD][4];
#pragma unroll
  for (int kk = 0; kk < KD; kk++) ldsm_a<LDS>(qf[kk], Ks, warp * 16, kk * 16, lane);
  __syncthreads();

  const int kend = causal ? rend : t.seg1;  // keys [seg0, kend)
  const int nkt = (kend - t.seg0 + BC - 1) / BC;
  const float sl2 = scale * kLog2e;
  const int qrow = t.r0 + warp * 16 + gr;  // this thread's rows: qrow, qrow + 8
  float m[2] = {neg_inf(), neg_inf()}, l[2] = {0.f, 0.f};
  float acc[ND][4];
#pragma unroll
  for (int i = 0; i < ND; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[i][e] = 0.f;

  load_rows<BC, D>(Ks, kh, ldk, t.seg0, kend);
  cp_async_commit();
  for (int j = 0; j < nkt; j++) {
    const int k0 = t.seg0 + j * BC;
    cp_async_wait_all();
    __syncthreads();  // K_j ready; every warp is done with V_{j-1}
    load_rows<BC, D>(Vs, vh, ldk, k0, kend);
    cp_async_commit();

    float s[NS][4];
#pragma unroll
    for (int i = 0; i < NS; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
#pragma unroll
      for (int p = 0; p < NS / 2; p++) {
        uint32_t b[4];
        ldsm_b<LDS>(b, Ks, p * 16, kk * 16, lane);
        mma2(s[2 * p], s[2 * p + 1], qf[kk], b);
      }
    }
    cp_async_wait_all();
    __syncthreads();  // V_j ready; every warp is done with K_j
    if (j + 1 < nkt) {
      load_rows<BC, D>(Ks, kh, ldk, k0 + BC, kend);
      cp_async_commit();
    }

    // Mask, then the online softmax in the log2 domain.
#pragma unroll
    for (int nt = 0; nt < NS; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kj = k0 + nt * 8 + 2 * t4 + (e & 1);
        const int qi = qrow + (e >> 1) * 8;
        const bool ok = kj < kend && (!causal || kj <= qi);
        s[nt][e] = ok ? s[nt][e] * sl2 : neg_inf();
      }
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = neg_inf();
#pragma unroll
      for (int nt = 0; nt < NS; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m[r], mx);
      const float base = mn == neg_inf() ? 0.f : mn;  // a row with no key yet stays at 0
      const float alpha = exp2f(m[r] - base);
      m[r] = mn;
      float rs = 0.f;
#pragma unroll
      for (int nt = 0; nt < NS; nt++) {
        s[nt][2 * r] = exp2f(s[nt][2 * r] - base);
        s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - base);
        rs += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l[r] = l[r] * alpha + rs;
#pragma unroll
      for (int i = 0; i < ND; i++) {
        acc[i][2 * r] *= alpha;
        acc[i][2 * r + 1] *= alpha;
      }
    }

    // O += P·V.
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      uint32_t a[4];
      c_to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t b[4];
        ldsm_bt<LDS>(b, Vs, kk * 16, dp * 16, lane);
        mma2(acc[2 * dp], acc[2 * dp + 1], a, b);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int qi = qrow + r * 8;
    if (qi < t.seg1) {
      const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
      bf16* orow = o + ((long long)qi * Hq + h) * D + 2 * t4;
#pragma unroll
      for (int i = 0; i < ND; i++) {
        *reinterpret_cast<uint32_t*>(orow + i * 8) = pack_f32x2(acc[i][2 * r] * inv, acc[i][2 * r + 1] * inv);
      }
      if (t4 == 0) lse[(long long)h * T + qi] = l[r] > 0.f ? (m[r] + log2f(l[r])) * kLn2 : neg_inf();
    }
  }
}

// ---------------------------------------------------------------------------
// Forward, f32 SIMT. R rows per tile (queries) and R keys per key tile; TPR
// threads per row.

template <int D, int R>
__device__ void fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                        float* __restrict__ o, float* __restrict__ lse, const int* __restrict__ cu,
                        const int* __restrict__ tiles, int T, int Hq, int Hkv, int causal, float scale) {
  constexpr int TPR = kThreads / R, NK = R / TPR, ND = D / TPR;
  __shared__ float Qs[R][D + 1];
  __shared__ float Ks[R][D + 1];
  __shared__ float Vs[R][D];
  __shared__ float Ps[R][R + 1];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int h = blockIdx.y, g = h / (Hq / Hkv);
  const int r = threadIdx.x / TPR, gi = threadIdx.x % TPR;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const float* kh = k + (long long)g * D;
  const float* vh = v + (long long)g * D;
  const int qi = t.r0 + r;
  const int kend = causal ? min(t.r0 + R, t.seg1) : t.seg1;
  const int nkt = (kend - t.seg0 + R - 1) / R;

  load_rows_f32<R, D, D + 1>(Qs, q + (long long)h * D, ldq, t.r0, t.seg1);
  float m = neg_inf(), l = 0.f, acc[ND];
#pragma unroll
  for (int i = 0; i < ND; i++) acc[i] = 0.f;

  for (int j = 0; j < nkt; j++) {
    const int k0 = t.seg0 + j * R;
    __syncthreads();  // the previous tile is consumed (and Q is visible)
    load_rows_f32<R, D, D + 1>(Ks, kh, ldk, k0, kend);
    load_rows_f32<R, D, D>(Vs, vh, ldk, k0, kend);
    __syncthreads();
    float s[NK];
    float mx = neg_inf();
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
      const int c = gi + TPR * kk;
      float a = 0.f;
#pragma unroll 8
      for (int d = 0; d < D; d++) a = fmaf(Qs[r][d], Ks[c][d], a);
      const int kj = k0 + c;
      const bool ok = kj < kend && (!causal || kj <= qi);
      s[kk] = ok ? a * scale : neg_inf();
      mx = fmaxf(mx, s[kk]);
    }
#pragma unroll
    for (int off = TPR / 2; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float mn = fmaxf(m, mx);
    const float base = mn == neg_inf() ? 0.f : mn;
    const float alpha = expf(m - base);
    m = mn;
    float rs = 0.f;
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
      const float p = expf(s[kk] - base);
      Ps[r][gi + TPR * kk] = p;
      rs += p;
    }
    l = l * alpha + rs;
    __syncwarp();  // a row's threads share one warp
#pragma unroll
    for (int i = 0; i < ND; i++) {
      const int d = gi + TPR * i;
      float a = acc[i] * alpha;
#pragma unroll 8
      for (int c = 0; c < R; c++) a = fmaf(Ps[r][c], Vs[c][d], a);
      acc[i] = a;
    }
  }

#pragma unroll
  for (int off = TPR / 2; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  if (qi < t.seg1) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* orow = o + ((long long)qi * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < ND; i++) orow[gi + TPR * i] = acc[i] * inv;
    if (gi == 0) lse[(long long)h * T + qi] = l > 0.f ? m + logf(l) : neg_inf();
  }
}

// ---------------------------------------------------------------------------
// Backward dQ (and delta), bf16 on the tensor cores.

template <int D, int BC>
__device__ void dq_bf16(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                        const bf16* __restrict__ o, const bf16* __restrict__ dout, const float* __restrict__ lse,
                        float* __restrict__ delta, bf16* __restrict__ dq, const int* __restrict__ cu,
                        const int* __restrict__ tiles, int T, int Hq, int Hkv, int causal, float scale) {
  constexpr int BR = 64, LDS = D + kPad, KD = D / 16, ND = D / 8, NS = BC / 8;
  __shared__ __align__(16) bf16 Qs[BR][LDS];
  __shared__ __align__(16) bf16 dOs[BR][LDS];
  __shared__ __align__(16) bf16 Ks[BC][LDS];
  __shared__ __align__(16) bf16 Vs[BC][LDS];
  __shared__ float Dls[BR];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int h = blockIdx.y, g = h / (Hq / Hkv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t4 = lane & 3;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const bf16* kh = k + (long long)g * D;
  const bf16* vh = v + (long long)g * D;
  const int rend = min(t.r0 + BR, t.seg1);

  load_rows<BR, D>(Qs, q + (long long)h * D, ldq, t.r0, t.seg1);
  load_rows<BR, D>(dOs, dout + (long long)h * D, ldq, t.r0, t.seg1);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  if (threadIdx.x < BR) {  // delta = rowsum(dout∘o), one thread per row
    const int qi = t.r0 + threadIdx.x;
    float a = 0.f;
    if (qi < t.seg1) {
      const bf16* orow = o + ((long long)qi * Hq + h) * D;
      for (int d = 0; d < D; d++) a = fmaf(to_f32(dOs[threadIdx.x][d]), to_f32(orow[d]), a);
      delta[(long long)h * T + qi] = a;
    }
    Dls[threadIdx.x] = a;
  }
  __syncthreads();

  const int qrow = t.r0 + warp * 16 + gr;
  float lse2[2], dl[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int qi = qrow + 8 * r;
    lse2[r] = qi < t.seg1 ? lse[(long long)h * T + qi] * kLog2e : 0.f;
    dl[r] = Dls[warp * 16 + gr + 8 * r];
  }
  const float sl2 = scale * kLog2e;
  const int kend = causal ? rend : t.seg1;
  float acc[ND][4];
#pragma unroll
  for (int i = 0; i < ND; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[i][e] = 0.f;

  for (int k0 = t.seg0; k0 < kend; k0 += BC) {
    __syncthreads();  // every warp is done with the previous K, V
    load_rows<BC, D>(Ks, kh, ldk, k0, kend);
    load_rows<BC, D>(Vs, vh, ldk, k0, kend);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

    float s[NS][4], dp[NS][4];
#pragma unroll
    for (int i = 0; i < NS; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[i][e] = dp[i][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KD; kk++) {
      uint32_t aq[4], ad[4];
      ldsm_a<LDS>(aq, Qs, warp * 16, kk * 16, lane);
      ldsm_a<LDS>(ad, dOs, warp * 16, kk * 16, lane);
#pragma unroll
      for (int p = 0; p < NS / 2; p++) {
        uint32_t b[4];
        ldsm_b<LDS>(b, Ks, p * 16, kk * 16, lane);
        mma2(s[2 * p], s[2 * p + 1], aq, b);
        ldsm_b<LDS>(b, Vs, p * 16, kk * 16, lane);
        mma2(dp[2 * p], dp[2 * p + 1], ad, b);
      }
    }
    // dS = P∘(dP − delta), into s.
#pragma unroll
    for (int nt = 0; nt < NS; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int kj = k0 + nt * 8 + 2 * t4 + (e & 1);
        const int r = e >> 1, qi = qrow + 8 * r;
        const bool ok = qi < t.seg1 && kj < kend && (!causal || kj <= qi);
        const float p = ok ? exp2f(s[nt][e] * sl2 - lse2[r]) : 0.f;
        s[nt][e] = p * (dp[nt][e] - dl[r]);
      }
    }
    // dQ += dS·K.
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      uint32_t a[4];
      c_to_a(a, s[2 * kk], s[2 * kk + 1]);
#pragma unroll
      for (int p = 0; p < D / 16; p++) {
        uint32_t b[4];
        ldsm_bt<LDS>(b, Ks, kk * 16, p * 16, lane);
        mma2(acc[2 * p], acc[2 * p + 1], a, b);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int qi = qrow + 8 * r;
    if (qi < t.seg1) {
      bf16* row = dq + ((long long)qi * Hq + h) * D + 2 * t4;
#pragma unroll
      for (int i = 0; i < ND; i++) {
        *reinterpret_cast<uint32_t*>(row + i * 8) = pack_f32x2(acc[i][2 * r] * scale, acc[i][2 * r + 1] * scale);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Backward dK, dV, bf16 on the tensor cores. The block's warps own 16 keys
// each and compute Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ, so Pᵀ and dSᵀ are A operands of
// dV += Pᵀ·dO and dK += dSᵀ·Q.

template <int D, int BR>
__device__ void dkdv_bf16(const bf16* __restrict__ q, const bf16* __restrict__ k, const bf16* __restrict__ v,
                          const bf16* __restrict__ dout, const float* __restrict__ lse,
                          const float* __restrict__ delta, bf16* __restrict__ dk, bf16* __restrict__ dv,
                          const int* __restrict__ cu, const int* __restrict__ tiles, int T, int Hq, int Hkv,
                          int causal, float scale) {
  constexpr int BC = 64, LDS = D + kPad, KD = D / 16, ND = D / 8, NQ = BR / 8;
  __shared__ __align__(16) bf16 Ks[BC][LDS];
  __shared__ __align__(16) bf16 Vs[BC][LDS];
  __shared__ __align__(16) bf16 Qs[BR][LDS];
  __shared__ __align__(16) bf16 dOs[BR][LDS];
  __shared__ float Ls[BR];
  __shared__ float Dl[BR];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int g = blockIdx.y, grp = Hq / Hkv;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, t4 = lane & 3;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const int k0 = t.r0;
  load_rows<BC, D>(Ks, k + (long long)g * D, ldk, k0, t.seg1);
  load_rows<BC, D>(Vs, v + (long long)g * D, ldk, k0, t.seg1);
  cp_async_commit();  // waited for with the first query tile

  const int krow = k0 + warp * 16 + gr;  // this thread's keys: krow, krow + 8
  const float sl2 = scale * kLog2e;
  float accK[ND][4], accV[ND][4];
#pragma unroll
  for (int i = 0; i < ND; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) accK[i][e] = accV[i][e] = 0.f;

  const int qstart = causal ? k0 : t.seg0;
  for (int hh = 0; hh < grp; hh++) {
    const int h = g * grp + hh;
    for (int i0 = qstart; i0 < t.seg1; i0 += BR) {
      __syncthreads();  // every warp is done with the previous query tile
      load_rows<BR, D>(Qs, q + (long long)h * D, ldq, i0, t.seg1);
      load_rows<BR, D>(dOs, dout + (long long)h * D, ldq, i0, t.seg1);
      cp_async_commit();
      if (threadIdx.x < BR) {
        const int qi = i0 + threadIdx.x;
        const bool ok = qi < t.seg1;
        Ls[threadIdx.x] = ok ? lse[(long long)h * T + qi] * kLog2e : 0.f;
        Dl[threadIdx.x] = ok ? delta[(long long)h * T + qi] : 0.f;
      }
      cp_async_wait_all();
      __syncthreads();

      float st[NQ][4], dpt[NQ][4];
#pragma unroll
      for (int i = 0; i < NQ; i++)
#pragma unroll
        for (int e = 0; e < 4; e++) st[i][e] = dpt[i][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KD; kk++) {
        uint32_t ak[4], av[4];
        ldsm_a<LDS>(ak, Ks, warp * 16, kk * 16, lane);
        ldsm_a<LDS>(av, Vs, warp * 16, kk * 16, lane);
#pragma unroll
        for (int p = 0; p < NQ / 2; p++) {
          uint32_t b[4];
          ldsm_b<LDS>(b, Qs, p * 16, kk * 16, lane);
          mma2(st[2 * p], st[2 * p + 1], ak, b);
          ldsm_b<LDS>(b, dOs, p * 16, kk * 16, lane);
          mma2(dpt[2 * p], dpt[2 * p + 1], av, b);
        }
      }
      // Pᵀ into st, dSᵀ into dpt.
#pragma unroll
      for (int nt = 0; nt < NQ; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int rq = nt * 8 + 2 * t4 + (e & 1);
          const int qi = i0 + rq, kj = krow + 8 * (e >> 1);
          const bool ok = qi < t.seg1 && kj < t.seg1 && (!causal || kj <= qi);
          const float p = ok ? exp2f(st[nt][e] * sl2 - Ls[rq]) : 0.f;
          st[nt][e] = p;
          dpt[nt][e] = p * (dpt[nt][e] - Dl[rq]);
        }
      }
#pragma unroll
      for (int kq = 0; kq < BR / 16; kq++) {
        uint32_t ap[4], as[4];
        c_to_a(ap, st[2 * kq], st[2 * kq + 1]);
        c_to_a(as, dpt[2 * kq], dpt[2 * kq + 1]);
#pragma unroll
        for (int p = 0; p < D / 16; p++) {
          uint32_t b[4];
          ldsm_bt<LDS>(b, dOs, kq * 16, p * 16, lane);
          mma2(accV[2 * p], accV[2 * p + 1], ap, b);
          ldsm_bt<LDS>(b, Qs, kq * 16, p * 16, lane);
          mma2(accK[2 * p], accK[2 * p + 1], as, b);
        }
      }
    }
  }
  cp_async_wait_all();  // (an empty query loop leaves the K, V copies pending)

#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int kj = krow + 8 * r;
    if (kj < t.seg1) {
      const long long off = ((long long)kj * Hkv + g) * D + 2 * t4;
#pragma unroll
      for (int i = 0; i < ND; i++) {
        *reinterpret_cast<uint32_t*>(dk + off + i * 8) =
            pack_f32x2(accK[i][2 * r] * scale, accK[i][2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(dv + off + i * 8) = pack_f32x2(accV[i][2 * r], accV[i][2 * r + 1]);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Backward, f32 SIMT.

template <int D, int R>
__device__ void dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                       const float* __restrict__ o, const float* __restrict__ dout, const float* __restrict__ lse,
                       float* __restrict__ delta, float* __restrict__ dq, const int* __restrict__ cu,
                       const int* __restrict__ tiles, int T, int Hq, int Hkv, int causal, float scale) {
  constexpr int TPR = kThreads / R, NK = R / TPR, ND = D / TPR;
  __shared__ float Qs[R][D + 1];
  __shared__ float dOs[R][D + 1];
  __shared__ float Ks[R][D + 1];
  __shared__ float Vs[R][D + 1];
  __shared__ float dSs[R][R + 1];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int h = blockIdx.y, g = h / (Hq / Hkv);
  const int r = threadIdx.x / TPR, gi = threadIdx.x % TPR;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const float* kh = k + (long long)g * D;
  const float* vh = v + (long long)g * D;
  const int qi = t.r0 + r;
  const bool qok = qi < t.seg1;
  const int kend = causal ? min(t.r0 + R, t.seg1) : t.seg1;

  load_rows_f32<R, D, D + 1>(Qs, q + (long long)h * D, ldq, t.r0, t.seg1);
  load_rows_f32<R, D, D + 1>(dOs, dout + (long long)h * D, ldq, t.r0, t.seg1);
  __syncthreads();
  float dl = 0.f;
  if (qok) {
    const float* orow = o + ((long long)qi * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < ND; i++) dl = fmaf(dOs[r][gi + TPR * i], orow[gi + TPR * i], dl);
  }
#pragma unroll
  for (int off = TPR / 2; off > 0; off >>= 1) dl += __shfl_xor_sync(0xffffffffu, dl, off);
  if (qok && gi == 0) delta[(long long)h * T + qi] = dl;
  const float lq = qok ? lse[(long long)h * T + qi] : 0.f;

  float acc[ND];
#pragma unroll
  for (int i = 0; i < ND; i++) acc[i] = 0.f;
  for (int k0 = t.seg0; k0 < kend; k0 += R) {
    __syncthreads();
    load_rows_f32<R, D, D + 1>(Ks, kh, ldk, k0, kend);
    load_rows_f32<R, D, D + 1>(Vs, vh, ldk, k0, kend);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < NK; kk++) {
      const int c = gi + TPR * kk;
      float s = 0.f, dp = 0.f;
#pragma unroll 8
      for (int d = 0; d < D; d++) {
        s = fmaf(Qs[r][d], Ks[c][d], s);
        dp = fmaf(dOs[r][d], Vs[c][d], dp);
      }
      const int kj = k0 + c;
      const bool ok = qok && kj < kend && (!causal || kj <= qi);
      const float p = ok ? expf(s * scale - lq) : 0.f;
      dSs[r][c] = p * (dp - dl);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < ND; i++) {
      const int d = gi + TPR * i;
      float a = acc[i];
#pragma unroll 8
      for (int c = 0; c < R; c++) a = fmaf(dSs[r][c], Ks[c][d], a);
      acc[i] = a;
    }
  }
  if (qok) {
    float* row = dq + ((long long)qi * Hq + h) * D;
#pragma unroll
    for (int i = 0; i < ND; i++) row[gi + TPR * i] = acc[i] * scale;
  }
}

template <int D, int R>
__device__ void dkdv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                         const float* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, float* __restrict__ dk, float* __restrict__ dv,
                         const int* __restrict__ cu, const int* __restrict__ tiles, int T, int Hq, int Hkv,
                         int causal, float scale) {
  constexpr int TPR = kThreads / R, NQ = R / TPR, ND = D / TPR;
  __shared__ float Ks[R][D + 1];
  __shared__ float Vs[R][D + 1];
  __shared__ float Qs[R][D + 1];
  __shared__ float dOs[R][D + 1];
  __shared__ float Ps[R][R + 1];
  __shared__ float dSs[R][R + 1];
  __shared__ float Ls[R];
  __shared__ float Dl[R];

  const Tile t = tile_at(cu, tiles, blockIdx.x);
  const int g = blockIdx.y, grp = Hq / Hkv;
  const int c = threadIdx.x / TPR, gi = threadIdx.x % TPR;
  const long long ldq = (long long)Hq * D, ldk = (long long)Hkv * D;
  const int k0 = t.r0, kj = k0 + c;
  load_rows_f32<R, D, D + 1>(Ks, k + (long long)g * D, ldk, k0, t.seg1);
  load_rows_f32<R, D, D + 1>(Vs, v + (long long)g * D, ldk, k0, t.seg1);

  float accK[ND], accV[ND];
#pragma unroll
  for (int i = 0; i < ND; i++) accK[i] = accV[i] = 0.f;
  const int qstart = causal ? k0 : t.seg0;
  for (int hh = 0; hh < grp; hh++) {
    const int h = g * grp + hh;
    for (int i0 = qstart; i0 < t.seg1; i0 += R) {
      __syncthreads();
      load_rows_f32<R, D, D + 1>(Qs, q + (long long)h * D, ldq, i0, t.seg1);
      load_rows_f32<R, D, D + 1>(dOs, dout + (long long)h * D, ldq, i0, t.seg1);
      if (threadIdx.x < R) {
        const int qi = i0 + threadIdx.x;
        const bool ok = qi < t.seg1;
        Ls[threadIdx.x] = ok ? lse[(long long)h * T + qi] : 0.f;
        Dl[threadIdx.x] = ok ? delta[(long long)h * T + qi] : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < NQ; kk++) {
        const int rq = gi + TPR * kk, qi = i0 + rq;
        float s = 0.f, dp = 0.f;
#pragma unroll 8
        for (int d = 0; d < D; d++) {
          s = fmaf(Ks[c][d], Qs[rq][d], s);
          dp = fmaf(Vs[c][d], dOs[rq][d], dp);
        }
        const bool ok = qi < t.seg1 && kj < t.seg1 && (!causal || kj <= qi);
        const float p = ok ? expf(s * scale - Ls[rq]) : 0.f;
        Ps[c][rq] = p;
        dSs[c][rq] = p * (dp - Dl[rq]);
      }
      __syncwarp();
#pragma unroll
      for (int i = 0; i < ND; i++) {
        const int d = gi + TPR * i;
        float av = accV[i], ak = accK[i];
#pragma unroll 8
        for (int rq = 0; rq < R; rq++) {
          av = fmaf(Ps[c][rq], dOs[rq][d], av);
          ak = fmaf(dSs[c][rq], Qs[rq][d], ak);
        }
        accV[i] = av;
        accK[i] = ak;
      }
    }
  }
  if (kj < t.seg1) {
    const long long off = ((long long)kj * Hkv + g) * D;
#pragma unroll
    for (int i = 0; i < ND; i++) {
      dk[off + gi + TPR * i] = accK[i] * scale;
      dv[off + gi + TPR * i] = accV[i];
    }
  }
}

// ---------------------------------------------------------------------------
// Decode against a KV cache.

template <typename T>
__device__ void decode(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                       const int* __restrict__ lens, T* __restrict__ o, int N, int Hq, int Hkv, int D, int C,
                       float scale) {
  __shared__ float sm_m[32];
  __shared__ float sm_l[32];
  __shared__ float sm_acc[kThreads * 4];
  const int h = blockIdx.x, n = blockIdx.y, b = blockIdx.z;
  const int KG = D / 4, NG = kThreads / KG, grp = threadIdx.x / KG, sub = threadIdx.x % KG;
  const int g = h / (Hq / Hkv);
  const int L = lens[b];
  T* orow = o + (((long long)b * N + n) * Hq + h) * D;
  if (L < N || L > C) {  // an impossible cache length poisons the output
    for (int d = threadIdx.x; d < D; d += kThreads) orow[d] = from_f32<T>(__int_as_float(0x7fc00000));
    return;
  }
  const T* qrow = q + (((long long)b * N + n) * Hq + h) * D + sub * 4;
  float qv[4];
#pragma unroll
  for (int e = 0; e < 4; e++) qv[e] = to_f32(qrow[e]);
  const long long ldk = (long long)Hkv * D;
  const T* kb = k + ((long long)b * C * Hkv + g) * D + sub * 4;
  const T* vb = v + ((long long)b * C * Hkv + g) * D + sub * 4;
  const int nk = L - N + n + 1;  // visible cache positions
  float m = neg_inf(), l = 0.f, acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int j0 = 0; j0 < nk; j0 += NG) {
    const int j = j0 + grp;
    float s = 0.f;
    if (j < nk) {
      const T* kr = kb + j * ldk;
#pragma unroll
      for (int e = 0; e < 4; e++) s = fmaf(qv[e], to_f32(kr[e]), s);
    }
    for (int off = KG / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (j < nk) {
      const float x = s * scale;
      const float mn = fmaxf(m, x);
      const float alpha = expf(m - mn), p = expf(x - mn);
      l = l * alpha + p;
      const T* vr = vb + j * ldk;
#pragma unroll
      for (int e = 0; e < 4; e++) acc[e] = fmaf(p, to_f32(vr[e]), acc[e] * alpha);
      m = mn;
    }
  }
  if (sub == 0) {
    sm_m[grp] = m;
    sm_l[grp] = l;
  }
#pragma unroll
  for (int e = 0; e < 4; e++) sm_acc[grp * D + sub * 4 + e] = acc[e];
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += kThreads) {
    float M = neg_inf();
    for (int i = 0; i < NG; i++) M = fmaxf(M, sm_m[i]);
    float ls = 0.f, a = 0.f;
    for (int i = 0; i < NG; i++) {
      const float w = expf(sm_m[i] - M);  // 0 for a group that saw no key
      ls = fmaf(sm_l[i], w, ls);
      a = fmaf(sm_acc[i * D + d], w, a);
    }
    orow[d] = from_f32<T>(a / ls);
  }
}

}  // namespace perk_attn

// ---------------------------------------------------------------------------
// Exported kernels.

#define ATTN_F32_ROWS(D) ((D) <= 64 ? 32 : 16)
#define ATTN_BF16_TILE2(D) ((D) <= 64 ? 64 : 16)

#define ATTN_KERNELS_BF16(D)                                                                                      \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_fwd_bf16_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,                  \
                         __nv_bfloat16* o, float* lse, const int* cu, const int* tiles, int T, int Hq,            \
                         int Hkv, int causal, float scale) {                                                      \
    perk_attn::fwd_bf16<D>(q, k, v, o, lse, cu, tiles, T, Hq, Hkv, causal, scale);                                \
  }                                                                                                               \
  PERK_EXPORT(attn_fwd_bf16_d##D)                                                                                 \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_bwd_dq_bf16_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,               \
                            const __nv_bfloat16* o, const __nv_bfloat16* dout, const float* lse,                  \
                            float* delta, __nv_bfloat16* dq, const int* cu, const int* tiles, int T, int Hq,      \
                            int Hkv, int causal, float scale) {                                                   \
    perk_attn::dq_bf16<D, ATTN_BF16_TILE2(D)>(q, k, v, o, dout, lse, delta, dq, cu, tiles, T, Hq, Hkv,            \
                                                causal, scale);                                                   \
  }                                                                                                               \
  PERK_EXPORT(attn_bwd_dq_bf16_d##D)                                                                              \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_bwd_dkdv_bf16_d##D(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,             \
                              const __nv_bfloat16* dout, const float* lse, const float* delta,                    \
                              __nv_bfloat16* dk, __nv_bfloat16* dv, const int* cu, const int* tiles, int T,       \
                              int Hq, int Hkv, int causal, float scale) {                                         \
    perk_attn::dkdv_bf16<D, ATTN_BF16_TILE2(D)>(q, k, v, dout, lse, delta, dk, dv, cu, tiles, T, Hq, Hkv,         \
                                                  causal, scale);                                                 \
  }                                                                                                               \
  PERK_EXPORT(attn_bwd_dkdv_bf16_d##D)

#define ATTN_KERNELS_F32(D)                                                                                       \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_fwd_f32_d##D(const float* q, const float* k, const float* v, float* o, float* lse, const int* cu,      \
                        const int* tiles, int T, int Hq, int Hkv, int causal, float scale) {                      \
    perk_attn::fwd_f32<D, ATTN_F32_ROWS(D)>(q, k, v, o, lse, cu, tiles, T, Hq, Hkv, causal, scale);               \
  }                                                                                                               \
  PERK_EXPORT(attn_fwd_f32_d##D)                                                                                  \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_bwd_dq_f32_d##D(const float* q, const float* k, const float* v, const float* o, const float* dout,     \
                           const float* lse, float* delta, float* dq, const int* cu, const int* tiles, int T,     \
                           int Hq, int Hkv, int causal, float scale) {                                            \
    perk_attn::dq_f32<D, ATTN_F32_ROWS(D)>(q, k, v, o, dout, lse, delta, dq, cu, tiles, T, Hq, Hkv, causal,       \
                                           scale);                                                                \
  }                                                                                                               \
  PERK_EXPORT(attn_bwd_dq_f32_d##D)                                                                               \
  extern "C" __global__ void __launch_bounds__(128, 2)                                                            \
      attn_bwd_dkdv_f32_d##D(const float* q, const float* k, const float* v, const float* dout,                   \
                             const float* lse, const float* delta, float* dk, float* dv, const int* cu,           \
                             const int* tiles, int T, int Hq, int Hkv, int causal, float scale) {                 \
    perk_attn::dkdv_f32<D, ATTN_F32_ROWS(D)>(q, k, v, dout, lse, delta, dk, dv, cu, tiles, T, Hq, Hkv,            \
                                             causal, scale);                                                      \
  }                                                                                                               \
  PERK_EXPORT(attn_bwd_dkdv_f32_d##D)

ATTN_KERNELS_BF16(16)
ATTN_KERNELS_BF16(32)
ATTN_KERNELS_BF16(64)
ATTN_KERNELS_BF16(128)
ATTN_KERNELS_F32(16)
ATTN_KERNELS_F32(32)
ATTN_KERNELS_F32(64)
ATTN_KERNELS_F32(128)

extern "C" __global__ void __launch_bounds__(128, 2)
    attn_decode_f32(const float* q, const float* k, const float* v, const int* lens, float* o, int N, int Hq,
                    int Hkv, int D, int C, float scale) {
  perk_attn::decode<float>(q, k, v, lens, o, N, Hq, Hkv, D, C, scale);
}
PERK_EXPORT(attn_decode_f32)

extern "C" __global__ void __launch_bounds__(128, 2)
    attn_decode_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v, const int* lens,
                     __nv_bfloat16* o, int N, int Hq, int Hkv, int D, int C, float scale) {
  perk_attn::decode<__nv_bfloat16>(q, k, v, lens, o, N, Hq, Hkv, D, C, scale);
}
PERK_EXPORT(attn_decode_bf16)
