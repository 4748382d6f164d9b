// gemm.cu: tiled tensor-core GEMM, 16-bit inputs, f32 accumulate and output.
//
// gemm_<t>_nt(C, A, B, M, N, K, alpha, beta): C[M,N] = alpha·A·Bᵀ + beta·C with
//   A [M,K] and B [N,K] row-major (B is a PyTorch Linear weight: y = x·Wᵀ).
// gemm_<t>_nn(C, A, B, M, N, K, alpha, beta): C = alpha·A·B + beta·C with
//   B [K,N] row-major.
// <t> is bf16 or f16; C is f32 row-major [M,N]. beta == 0 never reads C.
// Any M, N, K ≥ 1: tiles past the edges are zero-filled in shared memory and
// stores are masked. vec16 != 0 (set by the wrapper when K (nt) or N (nn) is a
// multiple of 8 and A, B are 16-byte aligned) enables 16-byte cp.async loads
// for full chunks.
//
// Launch: grid (ceil(N/64), ceil(M/64)), block 128 threads = 4 warps in a 2×2
// arrangement; each warp computes a 32×32 sub-tile as 2×4 mma.m16n8k16 tiles.
// Per 32-wide k slice: A tile 64×32 and B tile (64×32 for nt, 32×64 for nn)
// staged in static shared memory (row pitch padded by 8 elements so ldmatrix
// rows fall in distinct banks): 2·64·40·2 = 10240 bytes (nt),
// 64·40·2 + 32·72·2 = 9728 bytes (nn). Fragments come from ldmatrix (.trans
// for the nn B operand).
// Reference: nn/cpu GEMM in float64 on the bf16/f16-rounded inputs
// (kernels/gemm_test.go).
#include "common.cuh"

#define GEMM_BM 64
#define GEMM_BN 64
#define GEMM_BK 32
#define GEMM_PAD 8
#define GEMM_THREADS 128

template <typename T> __device__ __forceinline__ void mma16816(float d[4], const uint32_t a[4], const uint32_t b[2]);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  mma_bf16_16816(d, a, b, d);
}
template <> __device__ __forceinline__ void mma16816<__half>(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  mma_f16_16816(d, a, b, d);
}

// load_tile copies a rows×cols tile whose top-left element is src[r0·ld + c0]
// of a [R,Cn] row-major matrix into dst (pitch dst_ld), zero-filling outside.
template <typename T, int ROWS, int COLS>
__device__ __forceinline__ void load_tile(T* dst, int dst_ld, const T* __restrict__ src, int R, int Cn,
                                          int ld, int r0, int c0, int vec16) {
  constexpr int CHUNKS = ROWS * COLS / 8;
  for (int ch = threadIdx.x; ch < CHUNKS; ch += GEMM_THREADS) {
    const int r = ch / (COLS / 8), c = (ch % (COLS / 8)) * 8;
    const int gr = r0 + r, gc = c0 + c;
    T* d = dst + r * dst_ld + c;
    if (vec16 && gr < R && gc + 8 <= Cn) {
      cp_async_16(d, src + (long long)gr * ld + gc, 16);
    } else {
      for (int e = 0; e < 8; e++) {
        d[e] = (gr < R && gc + e < Cn) ? src[(long long)gr * ld + gc + e] : from_f32<T>(0.f);
      }
    }
  }
}

template <typename T, bool NN>
__device__ void gemm_impl(float* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int M,
                          int N, int K, float alpha, float beta, int vec16) {
  __shared__ __align__(16) T As[GEMM_BM][GEMM_BK + GEMM_PAD];
  // nt: Bs[n][k] (64×40); nn: Bs[k][n] (32×72). One array sized for the larger.
  __shared__ __align__(16) T Bs[NN ? GEMM_BK * (GEMM_BN + GEMM_PAD) : GEMM_BN * (GEMM_BK + GEMM_PAD)];

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int m0 = blockIdx.y * GEMM_BM, n0 = blockIdx.x * GEMM_BN;

  float acc[2][4][4];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++)
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  for (int k0 = 0; k0 < K; k0 += GEMM_BK) {
    load_tile<T, GEMM_BM, GEMM_BK>(&As[0][0], GEMM_BK + GEMM_PAD, A, M, K, K, m0, k0, vec16);
    if (NN) {
      load_tile<T, GEMM_BK, GEMM_BN>(Bs, GEMM_BN + GEMM_PAD, B, K, N, N, k0, n0, vec16);
    } else {
      load_tile<T, GEMM_BN, GEMM_BK>(Bs, GEMM_BK + GEMM_PAD, B, N, K, K, n0, k0, vec16);
    }
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();

#pragma unroll
    for (int kk = 0; kk < GEMM_BK; kk += 16) {
      uint32_t af[2][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        // Matrices 0..3 of x4: (rows 0-7, k 0-7), (rows 8-15, k 0-7),
        // (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a[0..3].
        const int r = wm + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int c = kk + (lane >> 4) * 8;
        ldmatrix_x4(af[i], &As[r][c]);
      }
#pragma unroll
      for (int j = 0; j < 2; j++) {
        uint32_t t[4];
        if (NN) {
          // Bs[k][n]; .trans gives lane l the pair B[k=2(l%4)+{0,1}][n=l/4].
          // Matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
          const int r = kk + (lane & 7) + ((lane >> 3) & 1) * 8;
          const int c = wn + j * 16 + (lane >> 4) * 8;
          ldmatrix_x4_trans(t, &Bs[r * (GEMM_BN + GEMM_PAD) + c]);
        } else {
          // Bs[n][k]; matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15).
          const int r = wn + j * 16 + (lane & 7) + (lane >> 4) * 8;
          const int c = kk + ((lane >> 3) & 1) * 8;
          ldmatrix_x4(t, &Bs[r * (GEMM_BK + GEMM_PAD) + c]);
        }
        bf[2 * j][0] = t[0];
        bf[2 * j][1] = t[1];
        bf[2 * j + 1][0] = t[2];
        bf[2 * j + 1][1] = t[3];
      }
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) mma16816<T>(acc[i][j], af[i], bf[j]);
    }
    __syncthreads();
  }

  // Accumulator layout: c0,c1 at (row g, cols 2·t4, 2·t4+1); c2,c3 at row g+8.
  const int g = lane >> 2, t4 = lane & 3;
  for (int i = 0; i < 2; i++) {
    for (int j = 0; j < 4; j++) {
      for (int e = 0; e < 4; e++) {
        const int row = m0 + wm + i * 16 + g + (e >> 1) * 8;
        const int col = n0 + wn + j * 8 + t4 * 2 + (e & 1);
        if (row < M && col < N) {
          float* p = C + (long long)row * N + col;
          const float v = alpha * acc[i][j][e];
          *p = beta == 0.f ? v : v + beta * *p;
        }
      }
    }
  }
}

#define PERK_GEMM(name, T, NN)                                                                  \
  extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                  \
      name(float* C, const T* A, const T* B, int M, int N, int K, float alpha, float beta, int vec16) { \
    gemm_impl<T, NN>(C, A, B, M, N, K, alpha, beta, vec16);                                    \
  }                                                                                            \
  PERK_EXPORT(name)

PERK_GEMM(gemm_bf16_nt, __nv_bfloat16, false)
PERK_GEMM(gemm_bf16_nn, __nv_bfloat16, true)
PERK_GEMM(gemm_f16_nt, __half, false)
PERK_GEMM(gemm_f16_nn, __half, true)
