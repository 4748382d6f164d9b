// emu.h: the CUDA device built-ins for compiling kernels as host C++ (g++,
// C++17, PERK_EMU defined). common.cuh includes it in place of the CUDA
// headers, so every kernel in kernels/*.cu also builds for the CPU emulator.
//
// Execution model (implemented in emu_runtime.cc):
//   - every CUDA thread is a fiber; the fibers of one block run on one OS
//     worker thread and switch only at barriers and warp collectives, in an
//     adversarial but fixed order: each warp runs alone as far ahead of the
//     others as the barriers allow (warp 0 first by default;
//     PERK_EMU_SCHEDULE=reverse|alternate|roundrobin chooses another order,
//     see emu_runtime.cc). A missing __syncthreads then gives the same wrong
//     answer on every run whenever the order runs a warp that reads shared
//     memory ahead of the warp that writes it, or a warp that overwrites it
//     ahead of one that still reads it, warp collectives in between or not;
//   - blocks of a grid run on a pool of worker threads at once, so atomics are
//     real atomics;
//   - __shared__ variables are thread_local: each worker thread runs one block
//     at a time, and that block's fibers share the worker's copy;
//   - threads that disagree on a barrier, or warp collectives whose lanes never
//     all arrive, abort the process with a "barrier divergence" message that
//     names the kernel and the block.
//
// Rules for kernels that this header cannot enforce:
//   - types used in __shared__ memory must be trivially default-constructible;
//   - PERK_DYNAMIC_SMEM must be used inside the kernel body;
//   - kernel names are unique across all kernel files (they share one binary),
//     and non-template __device__ functions in shared headers are inline.
#pragma once

#ifndef PERK_EMU
#error "emu.h is the emulator shim: compile with -DPERK_EMU"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------
// Qualifiers.

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__ static
// Fibers of a block interleave at barriers, which restrict would let the
// compiler ignore; the emulator drops it.
#define __restrict__

// ---------------------------------------------------------------------------
// Built-in vector types and index variables.

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned int x, y; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(16) double2 { double x, y; };
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline uint2 make_uint2(unsigned int x, unsigned int y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return uint4{x, y, z, w};
}
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }

constexpr int warpSize = 32;

namespace perk_emu {
// Per-fiber and per-block built-in variables; the runtime points these
// thread-local pointers at the running fiber and block.
struct ThreadVars {
  uint3 idx;
};
struct BlockVars {
  uint3 idx;
  dim3 dim;
  dim3 grid;
};
extern __thread ThreadVars* tls_thread;
extern __thread BlockVars* tls_block;
inline const uint3& thread_idx() { return tls_thread->idx; }
inline const uint3& block_idx() { return tls_block->idx; }
inline const dim3& block_dim() { return tls_block->dim; }
inline const dim3& grid_dim() { return tls_block->grid; }
}  // namespace perk_emu

#define threadIdx (::perk_emu::thread_idx())
#define blockIdx (::perk_emu::block_idx())
#define blockDim (::perk_emu::block_dim())
#define gridDim (::perk_emu::grid_dim())

// ---------------------------------------------------------------------------
// Runtime entry points (emu_runtime.cc). Kernels use the CUDA names below.

namespace perk_emu {
typedef void (*KernelEntry)(const uint64_t* params);
int register_kernel(const char* name, int nparams, KernelEntry entry);
void* dynamic_smem();

enum ShflMode { kShflIdx = 0, kShflUp = 1, kShflDown = 2, kShflXor = 3 };
enum BarMode { kBarPlain = 0, kBarCount = 1, kBarAnd = 2, kBarOr = 3 };
int block_barrier(int pred, int mode, const char* op, const char* file, int line);
uint64_t warp_shfl(unsigned mask, uint64_t v, int mode, unsigned arg, int width, const char* op,
                   const char* file, int line);
unsigned warp_vote(unsigned mask, int pred, unsigned* participants, const char* op, const char* file,
                   int line);
void warp_sync(unsigned mask, const char* file, int line);
unsigned active_mask(const char* file, int line);
void warp_ldmatrix(uint32_t* r, int n, bool trans, const void* p, const char* op);
void warp_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool f16,
                    const char* op);
[[noreturn]] void kernel_fatal(const char* msg);

inline void compiler_barrier() { asm volatile("" ::: "memory"); }

// Kernel parameters arrive as 8-byte slots; parameter i is the first
// sizeof(T_i) bytes of slot i (little-endian: the low bytes of the value).
template <typename T> inline T load_param(const uint64_t* slot) {
  typedef typename std::remove_cv<T>::type U;
  static_assert(sizeof(U) <= 8, "kernel parameters must fit in an 8-byte slot");
  static_assert(std::is_trivially_copyable<U>::value, "kernel parameters must be trivially copyable");
  U v;
  std::memcpy(&v, slot, sizeof(U));
  return v;
}

// Thunk<&kernel>::call unpacks the parameter slots into kernel's parameters.
template <auto F> struct Thunk;
template <typename... A, void (*F)(A...)> struct Thunk<F> {
  static constexpr int nparams = sizeof...(A);
  template <std::size_t... I> static void call_with(const uint64_t* slots, std::index_sequence<I...>) {
    (void)slots;
    F(load_param<A>(slots + I)...);
  }
  static void call(const uint64_t* slots) { call_with(slots, std::index_sequence_for<A...>{}); }
};

template <typename T> inline uint64_t to_bits64(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "warp shuffles move trivially copyable values of at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T> inline T from_bits64(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
}  // namespace perk_emu

// PERK_EXPORT(name) registers the extern "C" kernel name with the emulator.
#define PERK_EXPORT(name)                                                                              \
  [[maybe_unused]] static const int perk_emu_registered_##name = ::perk_emu::register_kernel(          \
      #name, ::perk_emu::Thunk<&name>::nparams, &::perk_emu::Thunk<&name>::call);

// PERK_DYNAMIC_SMEM(type, name) declares the block's dynamic shared memory
// (the launch's shmem bytes, 16-byte aligned). Use it inside the kernel body.
#define PERK_DYNAMIC_SMEM(type, name) type* name = static_cast<type*>(::perk_emu::dynamic_smem())

// ---------------------------------------------------------------------------
// Barriers and warp collectives. The trailing file/line parameters default to
// the call site and only serve the divergence messages.

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  perk_emu::block_barrier(0, perk_emu::kBarPlain, "__syncthreads", file, line);
  perk_emu::compiler_barrier();
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  int r = perk_emu::block_barrier(pred, perk_emu::kBarCount, "__syncthreads_count", file, line);
  perk_emu::compiler_barrier();
  return r;
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  int r = perk_emu::block_barrier(pred, perk_emu::kBarAnd, "__syncthreads_and", file, line);
  perk_emu::compiler_barrier();
  return r;
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  int r = perk_emu::block_barrier(pred, perk_emu::kBarOr, "__syncthreads_or", file, line);
  perk_emu::compiler_barrier();
  return r;
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  perk_emu::warp_sync(mask, file, line);
  perk_emu::compiler_barrier();
}
// __activemask returns the lanes of the warp that reach this call site
// together: the scheduler lets every other lane of the warp run until it
// blocks or exits, then groups the lanes waiting at the same call.
inline unsigned __activemask(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  unsigned r = perk_emu::active_mask(file, line);
  perk_emu::compiler_barrier();
  return r;
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { perk_emu::compiler_barrier(); }

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  uint64_t r = perk_emu::warp_shfl(mask, perk_emu::to_bits64(var), perk_emu::kShflIdx, (unsigned)srcLane, width,
                                   "__shfl_sync", file, line);
  perk_emu::compiler_barrier();
  return perk_emu::from_bits64<T>(r);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  uint64_t r = perk_emu::warp_shfl(mask, perk_emu::to_bits64(var), perk_emu::kShflUp, delta, width,
                                   "__shfl_up_sync", file, line);
  perk_emu::compiler_barrier();
  return perk_emu::from_bits64<T>(r);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  uint64_t r = perk_emu::warp_shfl(mask, perk_emu::to_bits64(var), perk_emu::kShflDown, delta, width,
                                   "__shfl_down_sync", file, line);
  perk_emu::compiler_barrier();
  return perk_emu::from_bits64<T>(r);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  uint64_t r = perk_emu::warp_shfl(mask, perk_emu::to_bits64(var), perk_emu::kShflXor, (unsigned)laneMask, width,
                                   "__shfl_xor_sync", file, line);
  perk_emu::compiler_barrier();
  return perk_emu::from_bits64<T>(r);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  unsigned r = perk_emu::warp_vote(mask, pred, nullptr, "__ballot_sync", file, line);
  perk_emu::compiler_barrier();
  return r;
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  unsigned r = perk_emu::warp_vote(mask, pred, nullptr, "__any_sync", file, line);
  perk_emu::compiler_barrier();
  return r != 0;
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  perk_emu::compiler_barrier();
  unsigned part = 0;
  unsigned r = perk_emu::warp_vote(mask, pred, &part, "__all_sync", file, line);
  perk_emu::compiler_barrier();
  return (r & part) == part;
}

// ---------------------------------------------------------------------------
// Atomics: real atomics, since blocks run on several OS threads at once.

namespace perk_emu {
template <typename T, typename F> inline T atomic_update(T* p, F f) {
  T old;
  __atomic_load(p, &old, __ATOMIC_SEQ_CST);
  T want;
  do {
    want = f(old);
  } while (!__atomic_compare_exchange(p, &old, &want, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}
}  // namespace perk_emu

inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* p, float v) {
  return perk_emu::atomic_update(p, [v](float o) { return o + v; });
}
inline double atomicAdd(double* p, double v) {
  return perk_emu::atomic_update(p, [v](double o) { return o + v; });
}
inline int atomicSub(int* p, int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicSub(unsigned int* p, unsigned int v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
inline int atomicExch(int* p, int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicExch(unsigned int* p, unsigned int v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
  return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
}
inline float atomicExch(float* p, float v) {
  float old;
  __atomic_exchange(p, &v, &old, __ATOMIC_SEQ_CST);
  return old;
}
inline int atomicMax(int* p, int v) {
  return perk_emu::atomic_update(p, [v](int o) { return o > v ? o : v; });
}
inline unsigned int atomicMax(unsigned int* p, unsigned int v) {
  return perk_emu::atomic_update(p, [v](unsigned int o) { return o > v ? o : v; });
}
inline long long atomicMax(long long* p, long long v) {
  return perk_emu::atomic_update(p, [v](long long o) { return o > v ? o : v; });
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  return perk_emu::atomic_update(p, [v](unsigned long long o) { return o > v ? o : v; });
}
inline int atomicMin(int* p, int v) {
  return perk_emu::atomic_update(p, [v](int o) { return o < v ? o : v; });
}
inline unsigned int atomicMin(unsigned int* p, unsigned int v) {
  return perk_emu::atomic_update(p, [v](unsigned int o) { return o < v ? o : v; });
}
inline long long atomicMin(long long* p, long long v) {
  return perk_emu::atomic_update(p, [v](long long o) { return o < v ? o : v; });
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  return perk_emu::atomic_update(p, [v](unsigned long long o) { return o < v ? o : v; });
}
inline int atomicCAS(int* p, int cmp, int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned int atomicCAS(unsigned int* p, unsigned int cmp, unsigned int v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
inline int atomicAnd(int* p, int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicAnd(unsigned int* p, unsigned int v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
inline int atomicOr(int* p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicOr(unsigned int* p, unsigned int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicXor(int* p, int v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
inline unsigned int atomicXor(unsigned int* p, unsigned int v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }

// ---------------------------------------------------------------------------
// 16-bit floating-point storage types and conversions (round to nearest even).

struct __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
};
struct __half {
  unsigned short __x;
  __half() = default;
};
typedef __nv_bfloat16 nv_bfloat16;
typedef __half half;

namespace perk_emu {
inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// f32_to_bf16 rounds to nearest even; NaN stays a (quiet) NaN.
inline unsigned short f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
// f32_to_f16 rounds to nearest even, with f16 subnormals, overflow to ±Inf
// and NaN kept a (quiet) NaN.
inline unsigned short f32_to_f16(float f) {
  const uint32_t u = f32_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (a >= 0x38800000u) {                                         // normal f16 range (>= 2^-14)
    uint32_t h = (a - 0x38000000u) >> 13;                           // rebias exponent 127 -> 15
    const uint32_t rest = a & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
  }
  if (a <= 0x33000000u) return (unsigned short)sign;  // <= 2^-25 rounds to zero
  // Subnormal result: the f16 unit is 2^-24, so the value in units is
  // mantissa * 2^(e - 150 + 24) with e the f32 biased exponent (102..112).
  const uint32_t e = a >> 23;
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;  // 14..24
  uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1u);
  if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
  return (unsigned short)(sign | q);
}
inline float f16_to_f32(unsigned short h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1fu) return bits_f32(sign | 0x7f800000u | (m << 13));
  if (e == 0) {
    const float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return sign ? -v : v;
  }
  return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}
}  // namespace perk_emu

inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
  __nv_bfloat16 h;
  h.__x = u;
  return h;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __half __ushort_as_half(unsigned short u) {
  __half h;
  h.__x = u;
  return h;
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(perk_emu::f32_to_bf16(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return perk_emu::bits_f32((uint32_t)h.__x << 16); }
inline __half __float2half(float f) { return __ushort_as_half(perk_emu::f32_to_f16(f)); }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float __half2float(__half h) { return perk_emu::f16_to_f32(h.__x); }

// ---------------------------------------------------------------------------
// Math and bit intrinsics. Device-only CUDA names map to exact host versions.

inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline unsigned int __float_as_uint(float x) { return perk_emu::f32_bits(x); }
inline float __uint_as_float(unsigned int u) { return perk_emu::bits_f32(u); }
inline int __float_as_int(float x) { return (int)perk_emu::f32_bits(x); }
inline float __int_as_float(int i) { return perk_emu::bits_f32((uint32_t)i); }
inline long long __double_as_longlong(double x) {
  long long i;
  std::memcpy(&i, &x, 8);
  return i;
}
inline double __longlong_as_double(long long i) {
  double x;
  std::memcpy(&x, &i, 8);
  return x;
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned int)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
  return (x >> 16) | (x << 16);
}
template <typename T> inline T __ldg(const T* p) { return *p; }

// min and max as CUDA's overloads (functions, not macros): the usual
// arithmetic conversions, fminf/fmaxf semantics for floating point.
template <typename A, typename B> inline typename std::common_type<A, B>::type min(A a, B b) {
  typedef typename std::common_type<A, B>::type T;
  if constexpr (std::is_floating_point<T>::value) {
    return std::fmin((T)a, (T)b);
  } else {
    return (T)b < (T)a ? (T)b : (T)a;
  }
}
template <typename A, typename B> inline typename std::common_type<A, B>::type max(A a, B b) {
  typedef typename std::common_type<A, B>::type T;
  if constexpr (std::is_floating_point<T>::value) {
    return std::fmax((T)a, (T)b);
  } else {
    return (T)a < (T)b ? (T)b : (T)a;
  }
}

// ---------------------------------------------------------------------------
// Warp-level matrix instructions, emulated per the PTX ISA fragment layouts
// (mma.sync.aligned.m16n8k16.row.col with f32 accumulators; ldmatrix
// .sync.aligned.m8n8 .x1/.x2/.x4 [.trans] .b16). All 32 lanes take part.

// mma_bf16_16816: D = A·B + C for one warp, m16n8k16, bf16 inputs, f32
// accumulators, fragments in the PTX ISA layout for mma.m16n8k16.row.col.
inline void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  perk_emu::compiler_barrier();
  perk_emu::warp_mma_16816(d, a, b, c, false, "mma.m16n8k16.bf16");
  perk_emu::compiler_barrier();
}
// mma_f16_16816: as mma_bf16_16816 with f16 inputs.
inline void mma_f16_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  perk_emu::compiler_barrier();
  perk_emu::warp_mma_16816(d, a, b, c, true, "mma.m16n8k16.f16");
  perk_emu::compiler_barrier();
}
// ldmatrix_x{1,2,4}[_trans]: load 1, 2 or 4 8x8 b16 matrices from shared
// memory; lanes 8i..8i+7 supply the row addresses of matrix i.
inline void ldmatrix_x1(uint32_t r[1], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 1, false, p, "ldmatrix.x1");
  perk_emu::compiler_barrier();
}
inline void ldmatrix_x2(uint32_t r[2], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 2, false, p, "ldmatrix.x2");
  perk_emu::compiler_barrier();
}
inline void ldmatrix_x4(uint32_t r[4], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 4, false, p, "ldmatrix.x4");
  perk_emu::compiler_barrier();
}
inline void ldmatrix_x1_trans(uint32_t r[1], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 1, true, p, "ldmatrix.x1.trans");
  perk_emu::compiler_barrier();
}
inline void ldmatrix_x2_trans(uint32_t r[2], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 2, true, p, "ldmatrix.x2.trans");
  perk_emu::compiler_barrier();
}
inline void ldmatrix_x4_trans(uint32_t r[4], const void* p) {
  perk_emu::compiler_barrier();
  perk_emu::warp_ldmatrix(r, 4, true, p, "ldmatrix.x4.trans");
  perk_emu::compiler_barrier();
}

// cp_async_16: the 16-byte global→shared copy, done synchronously; src_bytes
// (0..16) are copied and the rest of the 16 bytes zero-filled. Both addresses
// must be 16-byte aligned, as on the GPU.
inline void cp_async_16(void* smem, const void* gmem, int src_bytes) {
  if ((((uintptr_t)smem) | ((uintptr_t)gmem)) & 15u) perk_emu::kernel_fatal("cp_async_16: address not 16-byte aligned");
  if (src_bytes < 0 || src_bytes > 16) perk_emu::kernel_fatal("cp_async_16: src_bytes outside 0..16");
  if (src_bytes > 0) std::memcpy(smem, gmem, (size_t)src_bytes);
  if (src_bytes < 16) std::memset((char*)smem + src_bytes, 0, (size_t)(16 - src_bytes));
}
inline void cp_async_commit() { perk_emu::compiler_barrier(); }
inline void cp_async_wait_all() { perk_emu::compiler_barrier(); }
