// reduce.cu: deterministic reductions to one f32 value: sum, sum of squares,
// max and dot product.
//
// Two passes, both with a fixed reduction order so that two runs give the same
// bits on any device:
//   reduce_<op>_<t>(x, y, n, partials): block b reduces the elements
//     i ≡ b·256+tid (mod grid·256) of x (and y for dot) in f32, first serially
//     per thread, then by a fixed tree (warp shuffles, then shared memory), and
//     writes partials[b].
//   reduce_final_<op>(partials, nparts, out): one block reduces the partials
//     the same way and writes out[0].
// The grid of the first pass depends on n only (wrapper: ReduceGrid), never on
// the device, so results do not change between GPUs.
// Launch: 256 threads per block. Shared memory: 8 floats (static).
// Reference: a float64 Go loop (kernels/reduce_test.go).
#include "common.cuh"

#define REDUCE_THREADS 256

struct OpSum {
  static __device__ float init() { return 0.f; }
  static __device__ float combine(float a, float b) { return a + b; }
  static __device__ float load(float x, float) { return x; }
};
struct OpSumSq {
  static __device__ float init() { return 0.f; }
  static __device__ float combine(float a, float b) { return a + b; }
  static __device__ float load(float x, float) { return x * x; }
};
struct OpMax {
  static __device__ float init() { return -INFINITY; }
  static __device__ float combine(float a, float b) { return fmaxf(a, b); }
  static __device__ float load(float x, float) { return x; }
};
struct OpDot {
  static __device__ float init() { return 0.f; }
  static __device__ float combine(float a, float b) { return a + b; }
  static __device__ float load(float x, float y) { return x * y; }
};

// block_reduce combines one value per thread of a 256-thread block in a fixed
// order and returns the result in thread 0.
template <typename Op> __device__ float block_reduce(float v) {
  __shared__ float warp_vals[REDUCE_THREADS / 32];
  for (int off = 16; off > 0; off >>= 1) v = Op::combine(v, __shfl_xor_sync(0xffffffffu, v, off));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_vals[warp] = v;
  __syncthreads();
  float r = Op::init();
  if (warp == 0) {
    r = lane < REDUCE_THREADS / 32 ? warp_vals[lane] : Op::init();
    for (int off = 4; off > 0; off >>= 1) r = Op::combine(r, __shfl_xor_sync(0xffffffffu, r, off));
  }
  return r;
}

template <typename Op, typename T>
__device__ void reduce_partial(const T* __restrict__ x, const T* __restrict__ y, long long n,
                               float* __restrict__ partials) {
  float acc = Op::init();
  for (long long i = blockIdx.x * (long long)REDUCE_THREADS + threadIdx.x; i < n;
       i += (long long)gridDim.x * REDUCE_THREADS) {
    acc = Op::combine(acc, Op::load(to_f32(x[i]), y ? to_f32(y[i]) : 0.f));
  }
  const float r = block_reduce<Op>(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = r;
}

template <typename Op>
__device__ void reduce_final(const float* __restrict__ partials, int nparts, float* __restrict__ out) {
  float acc = Op::init();
  for (int i = threadIdx.x; i < nparts; i += REDUCE_THREADS) acc = Op::combine(acc, partials[i]);
  const float r = block_reduce<Op>(acc);
  if (threadIdx.x == 0) out[0] = r;
}

#define PERK_REDUCE(op, Op, t, T)                                                              \
  extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)                                \
      reduce_##op##_##t(const T* x, const T* y, long long n, float* partials) {               \
    reduce_partial<Op, T>(x, y, n, partials);                                                  \
  }                                                                                            \
  PERK_EXPORT(reduce_##op##_##t)

#define PERK_REDUCE_ALL(op, Op)                                                                \
  PERK_REDUCE(op, Op, f32, float)                                                              \
  PERK_REDUCE(op, Op, bf16, __nv_bfloat16)                                                     \
  PERK_REDUCE(op, Op, f16, __half)                                                             \
  extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)                                \
      reduce_final_##op(const float* partials, int nparts, float* out) {                      \
    reduce_final<Op>(partials, nparts, out);                                                   \
  }                                                                                            \
  PERK_EXPORT(reduce_final_##op)

PERK_REDUCE_ALL(sum, OpSum)
PERK_REDUCE_ALL(sumsq, OpSumSq)
PERK_REDUCE_ALL(max, OpMax)
PERK_REDUCE_ALL(dot, OpDot)
