// misc.cu: the small general-purpose kernels of the GPU backend.
//
// misc_gemm_<t>_<ab>(C, A, B, M, N, K, alpha, beta)
//   C[M,N] = alpha·op(A)·op(B) + beta·C for row-major matrices in storage
//   type <t> (f32 | bf16). <ab> gives the layouts: op(A) is A [M,K] ("n") or
//   A [K,M] transposed ("t"); op(B) is B [K,N] ("n") or B [N,K] transposed
//   ("t"). Each output element is accumulated by one thread in f32 FMA over k
//   in increasing order (no tensor cores, no split-K), so f32 results meet
//   f32 accuracy and reruns give identical bits. beta == 0 never reads C.
//   Any M, N ≥ 1, K ≥ 0 (K = 0 gives beta·C).
// misc_axpby_<t>(out, a, b, n, alpha, beta)
//   out[i] = alpha·a[i] + beta·b[i] in f32 (one fused multiply-add, rounded
//   once to the storage type); b null means out[i] = alpha·a[i]. out may
//   alias a or b (each element is read before it is written by the same
//   thread). Residual adds (1, 1) and scaling (alpha, null).
// misc_copy_cols_<b32|b16>(dst, ldd, src, lds, rows, cols)
//   dst[r·ldd + c] = src[r·lds + c] for r < rows, c < cols: a block of
//   columns of one row-major matrix into another (the caller offsets dst and
//   src to the first column). 4- or 2-byte elements of any type; dst and src
//   must not overlap.
//
// Launch shapes. misc_gemm: grid (⌈N/64⌉, ⌈M/64⌉), 256 threads; thread
// (ty, tx) = (tid/16, tid%16) accumulates the 4×4 elements (ty + 16i,
// tx + 16j) of the 64×64 output tile in registers, so a warp's shared-memory
// reads are broadcasts or consecutive words and its stores are coalesced; k
// slices of 16 are staged k-major (converted to f32) in static shared memory
// As[16][68], Bs[16][68] (8704 bytes), and consecutive threads load
// consecutive addresses whichever layout an operand has. (This layout also
// keeps the PTX nvcc emits for the file identical from build to build, which
// a float4 micro-tile variant of the same loop did not.) misc_axpby
// and misc_copy_cols: 1-D grid-stride, 256 threads per block. No dynamic
// shared memory.
// Reference: nn/cpu MatMul, Add, Scale and CopyColumns on float64 tensors
// holding the same (rounded) inputs (kernels/misc_test.go).
#include "common.cuh"

namespace misc {

constexpr int kTile = 64;
constexpr int kBK = 16;
constexpr int kPitch = kTile + 4;  // spreads the stores of a row-major tile over the banks
constexpr int kThreads = 256;

// load stages rows [r0, r0+64) × k [k0, k0+16) of an operand in s[k][r] as
// f32, zero outside [0,ext) × [0,K). KMAJ: the operand is stored [K][ext]
// (element (r,k) at src[k·ld + r]), otherwise [ext][K] (at src[r·ld + k]).
template <typename T, bool KMAJ>
__device__ __forceinline__ void load(float* s, const T* __restrict__ src, int ld, int ext, int r0, int k0, int K) {
#pragma unroll(kBK * kTile / kThreads)
  for (int i = threadIdx.x; i < kBK * kTile; i += kThreads) {
    const int r = KMAJ ? i % kTile : i / kBK;
    const int k = KMAJ ? i / kTile : i % kBK;
    const int gr = r0 + r, gk = k0 + k;
    float v = 0.f;
    if (gr < ext && gk < K) v = to_f32(src[KMAJ ? (long long)gk * ld + gr : (long long)gr * ld + gk]);
    s[k * kPitch + r] = v;
  }
}

// gemm: op(A) element (m,k) is A[m·K + k] (!TA) or A[k·M + m] (TA); op(B)
// element (k,n) is B[k·N + n] (!TB) or B[n·K + k] (TB). Seen as the rows of
// an operand tile, A is k-major exactly when transposed and B exactly when
// not.
template <typename T, bool TA, bool TB>
__device__ __forceinline__ void gemm(T* __restrict__ C, const T* __restrict__ A, const T* __restrict__ B, int M,
                                     int N, int K, float alpha, float beta) {
  __shared__ __align__(16) float As[kBK * kPitch];
  __shared__ __align__(16) float Bs[kBK * kPitch];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.f;

  for (int kt = 0; kt < K; kt += kBK) {
    load<T, TA>(As, A, TA ? M : K, M, m0, kt, K);
    load<T, !TB>(Bs, B, TB ? K : N, N, n0, kt, K);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kBK; k++) {
      float ar[4], br[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        ar[i] = As[k * kPitch + ty + 16 * i];
        br[i] = Bs[k * kPitch + tx + 16 * i];
      }
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int row = m0 + ty + 16 * i;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int col = n0 + tx + 16 * j;
      if (col >= N) continue;
      const long long e = (long long)row * N + col;
      float v = alpha * acc[i][j];
      if (beta != 0.f) v = fmaf(beta, to_f32(C[e]), v);
      C[e] = from_f32<T>(v);
    }
  }
}

template <typename T>
__device__ __forceinline__ void axpby(T* out, const T* a, const T* b, long long n, float alpha, float beta) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const float x = to_f32(a[i]);
    out[i] = from_f32<T>(b ? fmaf(alpha, x, beta * to_f32(b[i])) : alpha * x);
  }
}

template <typename T>
__device__ __forceinline__ void copy_cols(T* __restrict__ dst, long long ldd, const T* __restrict__ src, long long lds,
                                          long long rows, long long cols) {
  const long long n = rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / cols, c = i - r * cols;
    dst[r * ldd + c] = src[r * lds + c];
  }
}

}  // namespace misc

typedef __nv_bfloat16 bf16;

#define MISC_GEMM(T, name, TA, TB)                                                                               \
  extern "C" __global__ void name(T* C, const T* A, const T* B, int M, int N, int K, float alpha, float beta) { \
    misc::gemm<T, TA, TB>(C, A, B, M, N, K, alpha, beta);                                                        \
  }                                                                                                              \
  PERK_EXPORT(name)

MISC_GEMM(float, misc_gemm_f32_nn, false, false)
MISC_GEMM(float, misc_gemm_f32_nt, false, true)
MISC_GEMM(float, misc_gemm_f32_tn, true, false)
MISC_GEMM(float, misc_gemm_f32_tt, true, true)
MISC_GEMM(bf16, misc_gemm_bf16_nn, false, false)
MISC_GEMM(bf16, misc_gemm_bf16_nt, false, true)
MISC_GEMM(bf16, misc_gemm_bf16_tn, true, false)
MISC_GEMM(bf16, misc_gemm_bf16_tt, true, true)

extern "C" __global__ void misc_axpby_f32(float* out, const float* a, const float* b, long long n, float alpha,
                                          float beta) {
  misc::axpby(out, a, b, n, alpha, beta);
}
extern "C" __global__ void misc_axpby_bf16(bf16* out, const bf16* a, const bf16* b, long long n, float alpha,
                                           float beta) {
  misc::axpby(out, a, b, n, alpha, beta);
}
extern "C" __global__ void misc_copy_cols_b32(uint32_t* dst, long long ldd, const uint32_t* src, long long lds,
                                              long long rows, long long cols) {
  misc::copy_cols(dst, ldd, src, lds, rows, cols);
}
extern "C" __global__ void misc_copy_cols_b16(unsigned short* dst, long long ldd, const unsigned short* src,
                                              long long lds, long long rows, long long cols) {
  misc::copy_cols(dst, ldd, src, lds, rows, cols);
}

PERK_EXPORT(misc_axpby_f32)
PERK_EXPORT(misc_axpby_bf16)
PERK_EXPORT(misc_copy_cols_b32)
PERK_EXPORT(misc_copy_cols_b16)
