// selftest.cu: kernels that test the emulator itself (names emutest_*); only
// the emulator's tests launch them.
// Reference: the Go tests in kernels/emu (naive loops in Go).
#include "../common.cuh"

// ---------------------------------------------------------------------------
// emutest_empty(): does nothing. Launch: any shape. Shared memory: none.
// Used to measure launch overhead.
extern "C" __global__ void emutest_empty() {}

// ---------------------------------------------------------------------------
// emutest_params(fo, lo, a, b, c, d, e, h): stores its scalar parameters so
// the test can check the 8-byte slot unpacking: fo[0] = a; lo[0] = b;
// lo[1] = c; lo[2] = bits of d; lo[3] = e; lo[4] = bits of h.
// Launch: 1 block × 1 thread. Shared memory: none.
extern "C" __global__ void emutest_params(float* fo, long long* lo, float a, int b, long long c, double d,
                                          unsigned char e, __half h) {
  fo[0] = a;
  lo[0] = b;
  lo[1] = c;
  lo[2] = __double_as_longlong(d);
  lo[3] = e;
  lo[4] = __half_as_ushort(h);
}

// ---------------------------------------------------------------------------
// emutest_index(out): every thread writes threadIdx, blockIdx, blockDim,
// gridDim (12 ints) at out[12 * (linear block · threads per block + linear
// thread)]. Launch: any 3-D shape. Shared memory: none.
extern "C" __global__ void emutest_index(int* out) {
  const long long bl = blockIdx.x + (long long)gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
  const int tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int* o = out + 12 * (bl * (long long)(blockDim.x * blockDim.y * blockDim.z) + tl);
  const unsigned v[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                          blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int i = 0; i < 12; ++i) o[i] = (int)v[i];
}

// ---------------------------------------------------------------------------
// emutest_block_sum(in, out) / emutest_block_sum_nosync(in, out): block b
// sums in[256b .. 256b+255] by a shared-memory tree and writes out[b]. The
// _nosync variant omits the __syncthreads between filling shared memory and
// the first tree step, so it reads elements other threads have not stored
// yet: a deliberately wrong kernel. Launch: 256 threads per block, any grid.
// Shared memory: 256 floats (static).
template <bool Sync> __device__ void block_sum(const float* in, float* out) {
  __shared__ float s[256];
  const int t = threadIdx.x;
  s[t] = in[blockIdx.x * 256 + t];
  if (Sync) __syncthreads();
  for (int stride = 128; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}
extern "C" __global__ void emutest_block_sum(const float* in, float* out) { block_sum<true>(in, out); }
extern "C" __global__ void emutest_block_sum_nosync(const float* in, float* out) { block_sum<false>(in, out); }

// ---------------------------------------------------------------------------
// emutest_transpose(in, out, n) / emutest_transpose_nosync(in, out, n):
// out = inᵀ for an n×n row-major matrix (n a multiple of 32) through a 32×33
// shared tile; the _nosync variant omits the __syncthreads between writing
// and reading the tile (deliberately wrong). Launch: grid (n/32, n/32),
// block (32, 32). Shared memory: 32×33 floats (static).
template <bool Sync> __device__ void transpose(const float* in, float* out, int n) {
  __shared__ float tile[32][33];
  const int tx = threadIdx.x, ty = threadIdx.y;
  tile[ty][tx] = in[(blockIdx.y * 32 + ty) * n + blockIdx.x * 32 + tx];
  if (Sync) __syncthreads();
  out[(blockIdx.x * 32 + ty) * n + blockIdx.y * 32 + tx] = tile[tx][ty];
}
extern "C" __global__ void emutest_transpose(const float* in, float* out, int n) { transpose<true>(in, out, n); }
extern "C" __global__ void emutest_transpose_nosync(const float* in, float* out, int n) {
  transpose<false>(in, out, n);
}

// ---------------------------------------------------------------------------
// Divergent kernels: each makes the emulator report "barrier divergence".
// Launch: 1 block of 64 threads. Shared memory: none.
//   emutest_diverge_exit: the upper half of the block returns, the lower half
//     waits at __syncthreads.
//   emutest_diverge_sites: even and odd threads wait at different
//     __syncthreads calls.
//   emutest_diverge_warp: lanes 16..31 of each warp return, the rest shuffle
//     with a full mask.
//   emutest_diverge_mma: lanes 8..31 return, lanes 0..7 issue an mma.
extern "C" __global__ void emutest_diverge_exit(int* out) {
  if (threadIdx.x >= blockDim.x / 2) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}
extern "C" __global__ void emutest_diverge_sites(int* out) {
  if (threadIdx.x & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}
extern "C" __global__ void emutest_diverge_warp(int* out) {
  if ((threadIdx.x & 31) >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}
extern "C" __global__ void emutest_diverge_mma(float* out) {
  if ((threadIdx.x & 31) >= 8) return;
  const uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
  const float c[4] = {0, 0, 0, 0};
  float d[4];
  mma_bf16_16816(d, a, b, c);
  out[threadIdx.x] = d[0];
}

// ---------------------------------------------------------------------------
// emutest_shfl(in, io, fo, dout, lout): warp shuffles, votes, __syncwarp and
// __activemask. Thread g (global index, lane = g % 32) with v = in[g] writes
// io[16g + k] for the cases listed in kernels/emu/selftest_test.go, fo[2g..]
// (float shuffles), dout[g] (double) and lout[g] (64-bit integer).
// Launch: blocks of 64 threads, any grid. Shared memory: 2×32 ints (static).
extern "C" __global__ void emutest_shfl(const int* in, int* io, float* fo, double* dout, long long* lout) {
  __shared__ int s[2][32];
  const unsigned full = 0xffffffffu;
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int v = in[g];
  int* o = io + 16 * g;
  o[0] = __shfl_sync(full, v, (lane * 7 + 3) & 31);
  o[1] = __shfl_sync(full, v, lane + 1, 8);
  o[2] = __shfl_xor_sync(full, v, 5);
  o[3] = __shfl_xor_sync(full, v, 17, 16);
  o[4] = __shfl_up_sync(full, v, 3);
  o[5] = __shfl_up_sync(full, v, 2, 8);
  o[6] = __shfl_down_sync(full, v, 2);
  o[7] = __shfl_down_sync(full, v, 3, 16);
  o[8] = (int)__ballot_sync(full, v & 1);
  o[9] = __any_sync(full, v == 1000);
  o[10] = __all_sync(full, v >= 0);
  if (lane < 16) {
    o[11] = __shfl_down_sync(0x0000ffffu, v, 1, 16);
  } else {
    o[11] = __shfl_up_sync(0xffff0000u, v, 1, 16);
  }
  if (((lane >> 2) & 1) == 0) {
    o[12] = (int)__ballot_sync(0x0f0f0f0fu, v & 2);
  } else {
    o[12] = -1;
  }
  if (lane < 10) {
    o[13] = (int)__activemask();
  } else {
    o[13] = (int)__activemask();
  }
  s[warp][lane] = v;
  __syncwarp();
  o[14] = s[warp][(lane + 1) & 31];
  o[15] = (int)__shfl_up_sync(full, (unsigned)v, 1);
  fo[2 * g] = __shfl_down_sync(full, (float)v * 0.25f, 4);
  fo[2 * g + 1] = __shfl_xor_sync(full, (float)v * 0.5f, 1, 4);
  dout[g] = __shfl_sync(full, (double)v * 0.125, 31 - lane);
  lout[g] = __shfl_xor_sync(full, ((long long)v << 32) | lane, 3);
}

// ---------------------------------------------------------------------------
// emutest_syncthreads_ops(in, out): out[3b..3b+2] = __syncthreads_count,
// _and, _or of (in[g] != 0) over block b (written by thread 0).
// Launch: any 1-D shape. Shared memory: none.
extern "C" __global__ void emutest_syncthreads_ops(const int* in, int* out) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  const int p = in[g] != 0;
  const int c = __syncthreads_count(p);
  const int a = __syncthreads_and(p);
  const int o = __syncthreads_or(p);
  if (threadIdx.x == 0) {
    out[3 * blockIdx.x] = c;
    out[3 * blockIdx.x + 1] = a;
    out[3 * blockIdx.x + 2] = o;
  }
}

// ---------------------------------------------------------------------------
// emutest_atomics(ctr, xs, exch_out): every thread g of the grid (T threads in
// all) does, on the zero-initialised counters in ctr (int32 slots) and xs:
//   ctr[0] += 1 (atomicAdd int);  ctr[1] -= 2 (atomicSub);
//   ctr[2] = max(ctr[2], g);  ctr[3] = min(ctr[3], g + 5) (unsigned, starts at ~0);
//   ctr[4] += 1 through an atomicCAS loop;  ctr[5] += 1 (unsigned atomicAdd);
//   ctr[6] |= 1 << (g % 32);  exch_out[g] = atomicExch(&ctr[7], g);
//   fsum (float, ctr[8]) += 1;  xs[0] += 1 (unsigned long long);
//   xs[1] (double) += 0.5;
// Launch: any 1-D shape. Shared memory: none.
extern "C" __global__ void emutest_atomics(int* ctr, unsigned long long* xs, int* exch_out) {
  const int g = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&ctr[0], 1);
  atomicSub(&ctr[1], 2);
  atomicMax(&ctr[2], g);
  atomicMin((unsigned*)&ctr[3], (unsigned)g + 5u);
  int old = ctr[4];
  for (;;) {
    const int seen = atomicCAS(&ctr[4], old, old + 1);
    if (seen == old) break;
    old = seen;
  }
  atomicAdd((unsigned*)&ctr[5], 1u);
  atomicOr(&ctr[6], 1 << (g % 32));
  exch_out[g] = atomicExch(&ctr[7], g);
  atomicAdd((float*)&ctr[8], 1.0f);
  atomicAdd(&xs[0], 1ull);
  atomicAdd((double*)&xs[1], 0.5);
  __threadfence();
}

// ---------------------------------------------------------------------------
// emutest_dyn_smem(in, out, aligned): with n = 2·blockDim floats of dynamic
// shared memory, block b stores in[b·n .. b·n+n-1] to shared memory and reads
// it back reversed: out[b·n + i] = in[b·n + n-1-i]; aligned[b] = 1 when the
// dynamic shared memory is 16-byte aligned. Launch: any 1-D shape, shmem =
// 8·blockDim bytes.
extern "C" __global__ void emutest_dyn_smem(const float* in, float* out, int* aligned) {
  PERK_DYNAMIC_SMEM(float, buf);
  const int n = 2 * blockDim.x, t = threadIdx.x;
  const float* src = in + (long long)blockIdx.x * n;
  float* dst = out + (long long)blockIdx.x * n;
  buf[t] = src[t];
  buf[t + blockDim.x] = src[t + blockDim.x];
  __syncthreads();
  dst[t] = buf[n - 1 - t];
  dst[t + blockDim.x] = buf[n - 1 - t - blockDim.x];
  if (t == 0) aligned[blockIdx.x] = ((uintptr_t)buf & 15u) == 0;
}

// ---------------------------------------------------------------------------
// emutest_cp_async(in, out, valid): each of 16 threads copies 16 bytes (4
// floats) from in + 4t into shared memory with cp_async_16, of which only the
// first valid bytes of the 256-byte source count (the rest is zero-filled);
// then out[0..63] = the shared tile. Launch: 1 block × 16 threads.
// Shared memory: 64 floats (static).
extern "C" __global__ void emutest_cp_async(const float* in, float* out, int valid) {
  __shared__ __align__(16) float tile[64];
  const int t = threadIdx.x;
  int bytes = valid - 16 * t;
  bytes = bytes < 0 ? 0 : (bytes > 16 ? 16 : bytes);
  cp_async_16(&tile[4 * t], in + 4 * t, bytes);
  cp_async_commit();
  cp_async_wait_all();
  __syncthreads();
  for (int i = 0; i < 4; ++i) out[4 * t + i] = tile[4 * t + i];
}

// ---------------------------------------------------------------------------
// emutest_convert(in, h, bf, hback, bfback, n): for i < n, h[i] and bf[i]
// are the f16 and bf16 bits of __float2half(in[i]) and __float2bfloat16(in[i]);
// hback[i] and bfback[i] convert them back to float.
// Launch: 1-D grid-stride, any shape. Shared memory: none.
extern "C" __global__ void emutest_convert(const float* in, unsigned short* h, unsigned short* bf, float* hback,
                                           float* bfback, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const __half x = __float2half(in[i]);
    const __nv_bfloat16 y = __float2bfloat16(in[i]);
    h[i] = __half_as_ushort(x);
    bf[i] = __bfloat16_as_ushort(y);
    hback[i] = __half2float(x);
    bfback[i] = __bfloat162float(y);
  }
}

// ---------------------------------------------------------------------------
// emutest_mma_{bf16,f16}(A, B, C, D): each warp w (global warp index) computes
// D_w = A_w·B_w + C_w with A_w 16×16, B_w 16×8 (k×n), C_w and D_w 16×8, all
// row-major at A + 256w, B + 128w, C + 128w, D + 128w. Each lane gathers
// its fragments from global memory by the PTX ISA layout of
// mma.m16n8k16.row.col (g = lane/4, t = lane%4):
//   a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..2t+9],
//   a[3] = A[g+8][2t+8..2t+9]; b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g];
//   c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1] (D likewise).
// Launch: blocks of a multiple of 32 threads. Shared memory: none.
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 lo, __nv_bfloat16 hi) { return pack2_bf16(lo, hi); }
__device__ __forceinline__ uint32_t pack2(__half lo, __half hi) { return pack2_f16(lo, hi); }
template <typename T, bool F16> __device__ void mma_direct(const T* A, const T* B, const float* C, float* D) {
  const int lane = threadIdx.x & 31;
  const long long w = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  A += 256 * w;
  B += 128 * w;
  C += 128 * w;
  D += 128 * w;
  const int g = lane >> 2, t = lane & 3;
  uint32_t a[4], b[2];
  const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
  for (int i = 0; i < 4; ++i) {
    a[i] = pack2(A[rows[i] * 16 + cols[i]], A[rows[i] * 16 + cols[i] + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    const int k = 2 * t + 8 * i;
    b[i] = pack2(B[k * 8 + g], B[(k + 1) * 8 + g]);
  }
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  if (F16) {
    mma_f16_16816(d, a, b, c);
  } else {
    mma_bf16_16816(d, a, b, c);
  }
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
extern "C" __global__ void emutest_mma_bf16(const __nv_bfloat16* A, const __nv_bfloat16* B, const float* C, float* D) {
  mma_direct<__nv_bfloat16, false>(A, B, C, D);
}
extern "C" __global__ void emutest_mma_f16(const __half* A, const __half* B, const float* C, float* D) {
  mma_direct<__half, true>(A, B, C, D);
}

// ---------------------------------------------------------------------------
// emutest_ldmatrix_mma_{bf16,f16}(A, B, C, D, mode): block b (one warp)
// computes D_b = A_b·B_b + C_b (shapes and offsets as emutest_mma_*) by
// staging A and B in shared memory and loading the fragments with ldmatrix:
//   mode 0: A row-major, ldmatrix_x4;        B k×n, ldmatrix_x2_trans;
//   mode 1: Aᵀ (k×m), ldmatrix_x4_trans;     Bᵀ (n×k), ldmatrix_x2;
//   mode 2: A row-major, 4× ldmatrix_x1;     B k×n, 2× ldmatrix_x1_trans;
//   mode 3: Aᵀ, 2× ldmatrix_x2_trans;        Bᵀ, 2× ldmatrix_x1.
// Fragment register i of A is the 8×8 tile (rows 8(i%2).., columns 8(i/2)..)
// of A; register j of B is rows 8j.. of B (k×n).
// Launch: grid = number of products, block = 32 threads. Shared memory:
// 2·(16×16 + 16×8) 16-bit values (static).
template <bool F16> __device__ void ldmatrix_mma(const unsigned short* A, const unsigned short* B, const float* C,
                                                 float* D, int mode) {
  __shared__ __align__(16) unsigned short As[16][16];  // A[m][k]
  __shared__ __align__(16) unsigned short At[16][16];  // A[m][k] at At[k][m]
  __shared__ __align__(16) unsigned short Bs[16][8];   // B[k][n]
  __shared__ __align__(16) unsigned short Bt[8][16];   // B[k][n] at Bt[n][k]
  const int lane = threadIdx.x;
  A += 256 * blockIdx.x;
  B += 128 * blockIdx.x;
  C += 128 * blockIdx.x;
  D += 128 * blockIdx.x;
  for (int e = lane; e < 256; e += 32) {
    const int m = e / 16, k = e % 16;
    As[m][k] = A[e];
    At[k][m] = A[e];
  }
  for (int e = lane; e < 128; e += 32) {
    const int k = e / 8, n = e % 8;
    Bs[k][n] = B[e];
    Bt[n][k] = B[e];
  }
  __syncthreads();
  const int r = lane & 7, q = lane >> 3;  // row within a matrix, matrix index
  uint32_t a[4], b[2];
  switch (mode) {
    case 0:
      ldmatrix_x4(a, &As[r + (q & 1) * 8][(q >> 1) * 8]);
      ldmatrix_x2_trans(b, &Bs[lane & 15][0]);
      break;
    case 1:
      ldmatrix_x4_trans(a, &At[(q >> 1) * 8 + r][(q & 1) * 8]);
      ldmatrix_x2(b, &Bt[r][(q & 1) * 8]);
      break;
    case 2:
      for (int i = 0; i < 4; ++i) ldmatrix_x1(&a[i], &As[r + (i & 1) * 8][(i >> 1) * 8]);
      for (int j = 0; j < 2; ++j) ldmatrix_x1_trans(&b[j], &Bs[r + 8 * j][0]);
      break;
    default:
      for (int h = 0; h < 2; ++h) {
        const int i = 2 * h + (q & 1);
        ldmatrix_x2_trans(&a[2 * h], &At[(i >> 1) * 8 + r][(i & 1) * 8]);
      }
      for (int j = 0; j < 2; ++j) ldmatrix_x1(&b[j], &Bt[r][8 * j]);
      break;
  }
  const int g = lane >> 2, t = lane & 3;
  const float c[4] = {C[g * 8 + 2 * t], C[g * 8 + 2 * t + 1], C[(g + 8) * 8 + 2 * t], C[(g + 8) * 8 + 2 * t + 1]};
  float d[4];
  if (F16) {
    mma_f16_16816(d, a, b, c);
  } else {
    mma_bf16_16816(d, a, b, c);
  }
  D[g * 8 + 2 * t] = d[0];
  D[g * 8 + 2 * t + 1] = d[1];
  D[(g + 8) * 8 + 2 * t] = d[2];
  D[(g + 8) * 8 + 2 * t + 1] = d[3];
}
extern "C" __global__ void emutest_ldmatrix_mma_bf16(const unsigned short* A, const unsigned short* B, const float* C,
                                                     float* D, int mode) {
  ldmatrix_mma<false>(A, B, C, D, mode);
}
extern "C" __global__ void emutest_ldmatrix_mma_f16(const unsigned short* A, const unsigned short* B, const float* C,
                                                    float* D, int mode) {
  ldmatrix_mma<true>(A, B, C, D, mode);
}

// ---------------------------------------------------------------------------
// Races that a warp collective sits in (deliberately wrong without sync != 0).
// The emulator's schedule decides which of them give a wrong answer; see
// "Scheduling" in emu_runtime.cc and kernels/emu/race_test.go.
//
// emutest_race_shfl(in, out, writer, reader, sync): in block b, warp `writer`
// stores in[32b .. 32b+31] to a shared array s, then (sync != 0)
// __syncthreads, then every warp shuffles (src = lane ^ 1), and warp `reader`
// reads the array after the shuffle: out[32b + lane] = s[lane ^ 1] =
// in[32b + (lane ^ 1)].
// Launch: blocks of a multiple of 32 threads, any grid. Shared memory: 32
// ints (static).
extern "C" __global__ void emutest_race_shfl(const int* in, int* out, int writer, int reader, int sync) {
  __shared__ int s[32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp == writer) s[lane] = in[blockIdx.x * 32 + lane];
  if (sync) __syncthreads();
  const int src = __shfl_xor_sync(0xffffffffu, lane, 1);
  if (warp == reader) out[blockIdx.x * 32 + lane] = s[src];
}

// emutest_race_ldmatrix(in, out, writer, reader, sync): in block b, warp
// `writer` stores the 8×8 row-major b16 matrix at in + 64b to shared memory
// (lane l stores elements 2l and 2l+1), then (sync != 0) __syncthreads, then
// warp `reader` loads it with ldmatrix_x1: out[32b + l] = in[64b + 2l] |
// in[64b + 2l + 1] << 16.
// Launch: blocks of a multiple of 32 threads, any grid. Shared memory: 64
// 16-bit values (static).
extern "C" __global__ void emutest_race_ldmatrix(const unsigned short* in, unsigned* out, int writer, int reader,
                                                 int sync) {
  __shared__ __align__(16) unsigned short tile[8][8];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (warp == writer) {
    const unsigned short* m = in + 64 * blockIdx.x;
    tile[lane >> 2][2 * (lane & 3)] = m[2 * lane];
    tile[lane >> 2][2 * (lane & 3) + 1] = m[2 * lane + 1];
  }
  if (sync) __syncthreads();
  if (warp == reader) {
    uint32_t r[1];
    ldmatrix_x1(r, &tile[lane & 7][0]);
    out[blockIdx.x * 32 + lane] = r[0];
  }
}

// emutest_race_loop(in, out, iters, sync_end): a k-loop over a shared array
// s of 64 ints. With n = 64 and x = in + b·iters·n in block b, iteration i:
// thread t stores x[i·n + t] to s[t]; __syncthreads; reads v = s[t ^ 32] (a
// slot of the other warp); shuffles it (xor 1) and adds it up; then
// (sync_end != 0) the __syncthreads that keeps the next iteration's stores
// from overwriting s while the other warp still reads it.
// out[b·n + t] = Σ_i x[i·n + (t ^ 33)].
// Launch: blocks of 64 threads, any grid. Shared memory: 64 ints (static).
extern "C" __global__ void emutest_race_loop(const int* in, int* out, int iters, int sync_end) {
  __shared__ int s[64];
  const int t = threadIdx.x, n = 64;
  const int* x = in + (long long)blockIdx.x * iters * n;
  int acc = 0;
  for (int i = 0; i < iters; ++i) {
    s[t] = x[i * n + t];
    __syncthreads();
    const int v = s[t ^ 32];
    acc += __shfl_xor_sync(0xffffffffu, v, 1);
    if (sync_end) __syncthreads();
  }
  out[blockIdx.x * n + t] = acc;
}

PERK_EXPORT(emutest_empty)
PERK_EXPORT(emutest_params)
PERK_EXPORT(emutest_index)
PERK_EXPORT(emutest_block_sum)
PERK_EXPORT(emutest_block_sum_nosync)
PERK_EXPORT(emutest_transpose)
PERK_EXPORT(emutest_transpose_nosync)
PERK_EXPORT(emutest_diverge_exit)
PERK_EXPORT(emutest_diverge_sites)
PERK_EXPORT(emutest_diverge_warp)
PERK_EXPORT(emutest_diverge_mma)
PERK_EXPORT(emutest_shfl)
PERK_EXPORT(emutest_syncthreads_ops)
PERK_EXPORT(emutest_atomics)
PERK_EXPORT(emutest_dyn_smem)
PERK_EXPORT(emutest_cp_async)
PERK_EXPORT(emutest_convert)
PERK_EXPORT(emutest_mma_bf16)
PERK_EXPORT(emutest_mma_f16)
PERK_EXPORT(emutest_ldmatrix_mma_bf16)
PERK_EXPORT(emutest_ldmatrix_mma_f16)
PERK_EXPORT(emutest_race_shfl)
PERK_EXPORT(emutest_race_ldmatrix)
PERK_EXPORT(emutest_race_loop)
