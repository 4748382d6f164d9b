// embed.cu: token embedding (with GPT-2's optional learned positions) and its
// deterministic scatter-add backward.
//
// embed_fwd_<t>(ids, table, positions, pos, n, d, y):
//   y[t] = table[ids[t]] (+ pos[positions[t]] when pos is not null), rows of
//   length d, the sum formed in f32 and rounded once to the storage type.
//   Launch: grid ⌈n/8⌉, 256 threads; warp w of block b copies token 8b+w,
//   lanes striding over the row (coalesced). No shared memory.
// embed_bwd_<t>(order, uniq, start, nuniq, dy, d, dst):
//   for each distinct row id uniq[u]: dst[uniq[u]] += Σ_{s ∈ [start[u],
//   start[u+1])} dy[order[s]], where order lists the token indices grouped by
//   id, in token order within each group (a stable sort built once on the
//   host). Each sum runs in f32 in token order, then is added to the row once;
//   every destination row has exactly one writer, so there are no atomics and
//   the result is bit-identical run to run. The same kernel serves dTable
//   (token ids) and dPos (positions).
//   Launch: grid ⌈nuniq/8⌉, 256 threads; warp w of block b owns distinct id
//   8b+w, lanes striding over the row. No shared memory.
// Ids are validated on the host (kernels.EmbedIDs); the kernels trust them.
// Reference: nn/cpu EmbeddingForward / EmbeddingBackward (kernels/embed_test.go).
#include "common.cuh"

#define EMBED_THREADS 256
#define EMBED_WARPS (EMBED_THREADS / 32)

template <typename T>
__device__ __forceinline__ void embed_fwd_impl(const int* __restrict__ ids, const T* __restrict__ table,
                                               const int* __restrict__ positions, const T* __restrict__ pos, int n,
                                               int d, T* __restrict__ y) {
  const int t = blockIdx.x * EMBED_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (t >= n) return;
  const T* tr = table + (long long)ids[t] * d;
  T* yr = y + (long long)t * d;
  if (pos) {
    const T* pr = pos + (long long)positions[t] * d;
    for (int c = lane; c < d; c += 32) yr[c] = from_f32<T>(to_f32(tr[c]) + to_f32(pr[c]));
  } else {
    for (int c = lane; c < d; c += 32) yr[c] = tr[c];
  }
}

template <typename T>
__device__ __forceinline__ void embed_bwd_impl(const int* __restrict__ order, const int* __restrict__ uniq,
                                               const int* __restrict__ start, int nuniq, const T* __restrict__ dy,
                                               int d, T* __restrict__ dst) {
  const int u = blockIdx.x * EMBED_WARPS + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (u >= nuniq) return;
  const int s0 = start[u], s1 = start[u + 1];
  T* row = dst + (long long)uniq[u] * d;
  for (int c = lane; c < d; c += 32) {
    float acc = 0.f;
    for (int s = s0; s < s1; s++) acc += to_f32(dy[(long long)order[s] * d + c]);
    row[c] = from_f32<T>(to_f32(row[c]) + acc);
  }
}

#define EMBED_KERNELS(SFX, T)                                                                             \
  extern "C" __global__ void __launch_bounds__(EMBED_THREADS)                                             \
      embed_fwd_##SFX(const int* ids, const T* table, const int* positions, const T* pos, int n, int d, \
                      T* y) {                                                                             \
    embed_fwd_impl<T>(ids, table, positions, pos, n, d, y);                                               \
  }                                                                                                       \
  PERK_EXPORT(embed_fwd_##SFX)                                                                            \
  extern "C" __global__ void __launch_bounds__(EMBED_THREADS)                                             \
      embed_bwd_##SFX(const int* order, const int* uniq, const int* start, int nuniq, const T* dy, int d, \
                      T* dst) {                                                                           \
    embed_bwd_impl<T>(order, uniq, start, nuniq, dy, d, dst);                                             \
  }                                                                                                       \
  PERK_EXPORT(embed_bwd_##SFX)

EMBED_KERNELS(f32, float)
EMBED_KERNELS(bf16, __nv_bfloat16)
EMBED_KERNELS(f16, __half)
