// emu_runtime.cc: the CUDA-on-CPU emulator's runtime: kernel registry, the
// worker pool that runs the blocks of a grid, the per-block fiber scheduler,
// barriers, warp collectives (shuffles, votes, ldmatrix, mma) and divergence
// detection, and the C interface of emu_api.h.
//
// Scheduling. A worker runs one block at a time, one fiber per CUDA thread.
// A fiber runs until it exits or waits at a __syncthreads, an __activemask or
// a warp collective (__shfl*_sync, votes, __syncwarp, ldmatrix, mma); nothing
// else switches fibers. A warp collective completes (and its result is
// computed) as soon as every existing lane named by its mask waits at it; a
// block barrier releases when every thread of the block waits at the same
// barrier; an __activemask call returns once no other lane of its warp can
// run, with the lanes waiting at the same call. When no fiber of the block
// can run and nothing can release, the threads disagree: the runtime prints a
// "barrier divergence" message naming the kernel, the block and what
// disagreed, and aborts.
//
// The order in which runnable fibers run is adversarial but deterministic:
// it runs warps as far ahead of each other as the synchronisation allows, so
// that where a __syncthreads is missing, a warp that the order puts first
// reads shared memory before a later warp has written it, or overwrites it
// before a later warp has read it, and the kernel gives a wrong answer on
// every run. (Dynamic shared memory starts as all-ones bytes in every block;
// static __shared__ arrays keep what the worker's previous block left there,
// so tests of racy kernels should give every block different data.) The
// environment variable PERK_EMU_SCHEDULE (read at the first launch of the
// process) chooses the order:
//   ahead (default)  the lowest-numbered warp that can run runs alone, lanes
//                    in increasing order, each lane until it blocks; a warp
//                    collective that completes lets the same warp go on at
//                    once. Only when the warp waits at __syncthreads (or has
//                    exited) does the next warp run, so warp 0 reaches each
//                    barrier before warp 1 starts the phase. Exposes a warp
//                    reading data that a higher warp writes (block
//                    reductions: warp 0 reads every warp's partial sum), and
//                    a lower warp overwriting data that a higher warp has yet
//                    to read (the __syncthreads at the end of a k-loop).
//   reverse          as ahead with the warp and lane order reversed: the
//                    highest warp runs first. Exposes the mirror images, such
//                    as a value that thread 0 writes for the whole block
//                    (a broadcast) read by the other warps without a barrier.
//   alternate        ahead in blocks with an even linear index, reverse in
//                    blocks with an odd one: a grid of two or more blocks
//                    gets both. (Per block rather than per launch, so that
//                    a kernel's schedule never depends on what ran before.)
//   roundrobin       the old order: sweeps over the block's fibers in thread
//                    order, running each runnable fiber until it blocks, so
//                    warps advance in lockstep from collective to collective.
//                    Hides races across a warp collective; only for
//                    comparison.
// An unknown value makes every launch fail with an invalid-launch error.

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if !defined(__x86_64__) || defined(PERK_EMU_UCONTEXT)
#define PERK_EMU_USE_UCONTEXT 1
#include <ucontext.h>
#endif

#include "emu.h"
#include "emu_api.h"

// ---------------------------------------------------------------------------
// Context switching. On x86-64 a fiber switch saves the callee-saved
// registers and the SSE/x87 control words on the old stack and restores them
// from the new one; elsewhere it falls back to ucontext.

#ifndef PERK_EMU_USE_UCONTEXT
extern "C" void perk_emu_ctx_switch(void** save_sp, void* to_sp);
extern "C" void perk_emu_ctx_entry();
asm(R"(
  .pushsection .text
  .globl perk_emu_ctx_switch
  .hidden perk_emu_ctx_switch
  .type perk_emu_ctx_switch, @function
  .p2align 4
perk_emu_ctx_switch:
  .cfi_startproc
  endbr64
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .cfi_endproc
  .size perk_emu_ctx_switch, .-perk_emu_ctx_switch

  .globl perk_emu_ctx_entry
  .hidden perk_emu_ctx_entry
  .type perk_emu_ctx_entry, @function
  .p2align 4
perk_emu_ctx_entry:
  .cfi_startproc
  .cfi_undefined rip
  endbr64
  movq %r12, %rdi
  callq *%r13
  ud2
  .cfi_endproc
  .size perk_emu_ctx_entry, .-perk_emu_ctx_entry
  .popsection
)");
#endif

namespace perk_emu {

__thread ThreadVars* tls_thread = nullptr;
__thread BlockVars* tls_block = nullptr;

namespace {

constexpr int kMaxThreads = 1024;
constexpr size_t kStackBytes = 256 * 1024;
constexpr int64_t kMaxDynamicSmem = 227 * 1024;  // the sm_90 per-block limit
constexpr int kMaxWorkers = 1024;

// ---------------------------------------------------------------------------
// Kernel registry.

struct Kernel {
  std::string name;
  int nparams;
  KernelEntry entry;
};

struct Registry {
  std::mutex mu;
  std::vector<Kernel*> kernels;
  std::unordered_map<std::string, int> index;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: kernels may run during exit
  return *r;
}

const Kernel* kernel_by_id(int id) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (id < 0 || id >= (int)r.kernels.size()) return nullptr;
  return r.kernels[id];
}

// ---------------------------------------------------------------------------
// Fibers.

struct Fiber;

#ifndef PERK_EMU_USE_UCONTEXT
struct Context {
  void* sp = nullptr;
};
inline void ctx_switch(Context* from, Context* to) { perk_emu_ctx_switch(&from->sp, to->sp); }
void ctx_make(Context* c, char* lo, size_t size, void (*fn)(void*), void* arg, uint64_t csr) {
  // Initial frame, popped by perk_emu_ctx_switch: control words, r15, r14,
  // r13 (fn), r12 (arg), rbx, rbp, then the return address into
  // perk_emu_ctx_entry, which calls fn(arg) with a 16-byte aligned stack.
  uintptr_t top = ((uintptr_t)(lo + size)) & ~(uintptr_t)15;
  uint64_t* sp = (uint64_t*)(top - 80);
  sp[0] = csr;
  sp[1] = 0;
  sp[2] = 0;
  sp[3] = (uint64_t)(uintptr_t)fn;
  sp[4] = (uint64_t)(uintptr_t)arg;
  sp[5] = 0;
  sp[6] = 0;
  sp[7] = (uint64_t)(uintptr_t)&perk_emu_ctx_entry;
  c->sp = sp;
}
uint64_t current_csr() {
  uint32_t mxcsr = 0;
  uint16_t fpcw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  return (uint64_t)mxcsr | ((uint64_t)fpcw << 32);
}
#else
struct Context {
  ucontext_t uc;
};
inline void ctx_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
void ucontext_entry();
void ctx_make(Context* c, char* lo, size_t size, void (*)(void*), void*, uint64_t) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = lo;
  c->uc.uc_stack.ss_size = size;
  c->uc.uc_link = nullptr;
  makecontext(&c->uc, (void (*)())ucontext_entry, 0);
}
uint64_t current_csr() { return 0; }
#endif

enum State : uint8_t { kRun, kBarrier, kWarp, kActiveMask, kDone };
enum Coll : uint8_t { kCollShfl, kCollVote, kCollSync, kCollLdmatrix, kCollMma };

struct Fiber {
  ThreadVars vars;
  Context ctx;
  int linear = 0, warp = 0, lane = 0;
  State state = kDone;
  // What the fiber waits at.
  Coll coll = kCollSync;
  int mode = 0;
  unsigned mask = 0;
  unsigned arg = 0;
  int width = 32;
  const char* op = "";
  const char* file = "";
  int line = 0;
  uint64_t in[10] = {};
  uint64_t out[4] = {};
};

struct Block {
  BlockVars vars;
  const Kernel* kernel = nullptr;
  const uint64_t* params = nullptr;
  int n = 0;
  int nwarps = 0;
  int ndone = 0;
  bool reverse = false;  // run the highest warp and lane first
  unsigned exists[kMaxThreads / 32] = {};   // lanes present in each warp
  unsigned waiting[kMaxThreads / 32] = {};  // lanes waiting at a warp collective
  unsigned ready[kMaxThreads / 32] = {};    // lanes in state kRun, not running now
  unsigned amask[kMaxThreads / 32] = {};    // lanes waiting at an __activemask
};

// Schedule is the fiber order of PERK_EMU_SCHEDULE (see the top of the file).
enum Schedule : uint8_t { kAhead, kReverse, kAlternate, kRoundRobin };

struct Job {
  const Kernel* kernel = nullptr;
  std::vector<uint64_t> params;
  unsigned grid[3] = {1, 1, 1};
  unsigned block[3] = {1, 1, 1};
  int nthreads = 0;
  size_t shmem = 0;
  Schedule sched = kAhead;
  uint64_t nblocks = 0;
  std::atomic<uint64_t> next{0};
  std::atomic<int> remaining{0};
};

struct Worker {
  Context sched;
  Fiber* fibers = nullptr;
  Fiber* cur = nullptr;
  char* stacks = nullptr;
  size_t stack_slot = 0;
  size_t guard = 0;
  int nstacks = 0;
  void* smem = nullptr;
  size_t smem_cap = 0;
  uint64_t csr = 0;
  Block block;
  sem_t go;
  bool quit = false;
  std::thread thread;
};

__thread Worker* tls_worker = nullptr;

// ---------------------------------------------------------------------------
// Messages.

std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string strf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

std::string site(const char* file, int line) {
  const char* base = file ? strrchr(file, '/') : nullptr;
  return strf("%s:%d", base ? base + 1 : (file ? file : "?"), line);
}

std::string where(const Fiber& f) {
  if (f.file && f.file[0]) return strf("%s (%s)", f.op, site(f.file, f.line).c_str());
  return f.op;
}

std::string tid(const Fiber& f) { return strf("(%u,%u,%u)", f.vars.idx.x, f.vars.idx.y, f.vars.idx.z); }

[[noreturn]] void divergence(Worker* w, const std::string& what) {
  const Block& b = w->block;
  fprintf(stderr, "perk emu: barrier divergence in kernel %s, block (%u,%u,%u): %s\n", b.kernel->name.c_str(),
          b.vars.idx.x, b.vars.idx.y, b.vars.idx.z, what.c_str());
  fflush(stderr);
  abort();
}

[[noreturn]] void thread_fatal(Worker* w, const Fiber* f, const std::string& what) {
  const Block& b = w->block;
  fprintf(stderr, "perk emu: kernel %s, block (%u,%u,%u), thread %s: %s\n", b.kernel->name.c_str(), b.vars.idx.x,
          b.vars.idx.y, b.vars.idx.z, f ? tid(*f).c_str() : "?", what.c_str());
  fflush(stderr);
  abort();
}

Fiber* current(Worker** wp, const char* op) {
  Worker* w = tls_worker;
  if (w == nullptr || w->cur == nullptr) {
    fprintf(stderr, "perk emu: %s called outside a kernel\n", op);
    fflush(stderr);
    abort();
  }
  *wp = w;
  return w->cur;
}

// ---------------------------------------------------------------------------
// Scheduling.

inline void park(Worker* w, Fiber* f) { ctx_switch(&f->ctx, &w->sched); }

void fiber_main(void* arg) {
  Fiber* f = static_cast<Fiber*>(arg);
  Worker* w = tls_worker;
  w->block.kernel->entry(w->block.params);
  f->state = kDone;
  w->block.ndone++;
  ctx_switch(&f->ctx, &w->sched);
  __builtin_trap();  // a finished fiber is never resumed
}

#ifdef PERK_EMU_USE_UCONTEXT
void ucontext_entry() { fiber_main(tls_worker->cur); }
#endif

bool same_site(const Fiber& a, const Fiber& b) {
  return a.line == b.line && a.mode == b.mode && (a.file == b.file || strcmp(a.file, b.file) == 0);
}

std::string lanes_str(unsigned m) { return strf("0x%08x", m); }

// describe_stuck explains why no fiber of the block can make progress.
std::string describe_stuck(Worker* w) {
  Block& b = w->block;
  Fiber* fs = w->fibers;
  std::string s;
  int nbar = 0;
  for (int i = 0; i < b.n; ++i) nbar += fs[i].state == kBarrier;
  if (nbar > 0) {
    // Group the barrier waiters by call site.
    std::vector<int> firsts;
    for (int i = 0; i < b.n; ++i) {
      if (fs[i].state != kBarrier) continue;
      bool seen = false;
      for (int j : firsts) seen = seen || same_site(fs[i], fs[j]);
      if (!seen) firsts.push_back(i);
    }
    for (size_t k = 0; k < firsts.size(); ++k) {
      int count = 0;
      for (int i = 0; i < b.n; ++i) count += fs[i].state == kBarrier && same_site(fs[i], fs[firsts[k]]);
      if (!s.empty()) s += "; ";
      s += strf("%d of %d threads wait at %s (first thread %s)", count, b.n, where(fs[firsts[k]]).c_str(),
                tid(fs[firsts[k]]).c_str());
    }
    if (firsts.size() > 1) s += "; threads wait at different barrier call sites";
  }
  if (b.ndone > 0) {
    if (!s.empty()) s += "; ";
    s += strf("%d of %d threads have exited", b.ndone, b.n);
  }
  for (int wi = 0; wi < b.nwarps; ++wi) {
    if (b.waiting[wi] == 0) continue;
    const Fiber* lanes = &fs[wi * 32];
    int first = __builtin_ctz(b.waiting[wi]);
    const Fiber& f = lanes[first];
    unsigned group = 0, exited = 0, barrier = 0, other = 0;
    unsigned need = f.mask & b.exists[wi];
    for (int j = 0; j < 32; ++j) {
      if (!(need >> j & 1)) continue;
      const Fiber& g = lanes[j];
      if (g.state == kWarp && g.mask == f.mask && g.coll == f.coll) {
        group |= 1u << j;
      } else if (g.state == kDone) {
        exited |= 1u << j;
      } else if (g.state == kBarrier) {
        barrier |= 1u << j;
      } else {
        other |= 1u << j;
      }
    }
    if (!s.empty()) s += "; ";
    s += strf("warp %d: lanes %s wait at %s with mask %s", wi, lanes_str(group).c_str(), where(f).c_str(),
              lanes_str(f.mask).c_str());
    if (exited) s += strf(", but lanes %s have exited", lanes_str(exited).c_str());
    if (barrier) s += strf(", but lanes %s wait at a block barrier", lanes_str(barrier).c_str());
    if (other) s += strf(", but lanes %s wait at another warp operation", lanes_str(other).c_str());
  }
  if (s.empty()) s = "no thread can make progress";
  return s;
}

// release_active_mask returns from __activemask the lanes of warp wi that
// wait at the same call as its first waiting lane, all other lanes of the
// warp having run until they blocked or exited: those are the active lanes.
void release_active_mask(Block& b, Fiber* fs, int wi) {
  const unsigned waiting = b.amask[wi];
  if (waiting == 0) return;
  Fiber* lanes = &fs[wi * 32];
  const Fiber& first = lanes[__builtin_ctz(waiting)];
  unsigned group = 0;
  for (unsigned m = waiting; m != 0; m &= m - 1) {
    const int j = __builtin_ctz(m);
    if (same_site(lanes[j], first)) group |= 1u << j;
  }
  for (unsigned m = group; m != 0; m &= m - 1) {
    Fiber& g = lanes[__builtin_ctz(m)];
    g.out[0] = group;
    g.state = kRun;
  }
  b.amask[wi] &= ~group;
  b.ready[wi] |= group;
}

// resolve_stuck runs when no fiber of the block is runnable: it releases a
// complete block barrier or pending __activemask calls, or reports divergence.
void resolve_stuck(Worker* w) {
  Block& b = w->block;
  Fiber* fs = w->fibers;
  int nbar = 0;
  for (int i = 0; i < b.n; ++i) nbar += fs[i].state == kBarrier;
  if (nbar == b.n) {
    for (int i = 1; i < b.n; ++i) {
      if (!same_site(fs[i], fs[0])) divergence(w, describe_stuck(w));
    }
    int count = 0;
    for (int i = 0; i < b.n; ++i) count += fs[i].in[0] != 0;
    uint64_t r = 0;
    switch (fs[0].mode) {
      case kBarCount:
        r = (uint64_t)count;
        break;
      case kBarAnd:
        r = count == b.n;
        break;
      case kBarOr:
        r = count > 0;
        break;
      default:
        break;
    }
    for (int i = 0; i < b.n; ++i) {
      fs[i].out[0] = r;
      fs[i].state = kRun;
    }
    for (int wi = 0; wi < b.nwarps; ++wi) b.ready[wi] = b.exists[wi];
    return;
  }
  bool released = false;
  for (int wi = 0; wi < b.nwarps; ++wi) {
    if (b.amask[wi] == 0) continue;
    release_active_mask(b, fs, wi);
    released = true;
  }
  if (!released) divergence(w, describe_stuck(w));
}

// run_fiber runs f until it blocks or exits.
inline void run_fiber(Worker* w, Fiber* f) {
  w->cur = f;
  tls_thread = &f->vars;
  ctx_switch(&w->sched, &f->ctx);
}

// run_warp runs warp wi alone, lane after lane, each until it blocks, and
// again as long as a completed warp collective or __activemask lets one of
// its lanes go on; it reports whether any lane ran.
bool run_warp(Worker* w, int wi) {
  Block& b = w->block;
  Fiber* lanes = &w->fibers[wi * 32];
  const bool rev = b.reverse;
  bool ran = false;
  for (;;) {
    unsigned r;
    while ((r = b.ready[wi]) != 0) {
      const int j = rev ? 31 - __builtin_clz(r) : __builtin_ctz(r);
      b.ready[wi] = r & ~(1u << j);
      run_fiber(w, &lanes[j]);
      ran = true;
    }
    if (b.amask[wi] == 0) return ran;
    release_active_mask(b, w->fibers, wi);
  }
}

// run_round_robin runs every runnable fiber once, in thread order (the
// roundrobin schedule); it reports whether any fiber ran.
bool run_round_robin(Worker* w) {
  Block& b = w->block;
  bool ran = false;
  for (int wi = 0; wi < b.nwarps; ++wi) {
    Fiber* lanes = &w->fibers[wi * 32];
    for (int j = 0; j < 32; ++j) {
      const unsigned bit = 1u << j;
      if (!(b.ready[wi] & bit)) continue;  // lanes may become ready during the sweep
      b.ready[wi] &= ~bit;
      run_fiber(w, &lanes[j]);
      ran = true;
    }
  }
  return ran;
}

// ---------------------------------------------------------------------------
// Warp collectives.

inline uint16_t load_u16(const unsigned char* p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}

void compute_shfl(Fiber* lanes, unsigned need) {
  for (int j = 0; j < 32; ++j) {
    if (!(need >> j & 1)) continue;
    Fiber& g = lanes[j];
    const uint64_t w = (uint64_t)g.width;
    const uint64_t lane = (uint64_t)j;
    const uint64_t base = lane & ~(w - 1);
    uint64_t src = lane;
    switch (g.mode) {
      case kShflIdx:
        src = base + (g.arg & (w - 1));
        break;
      case kShflUp:
        src = lane - base >= g.arg ? lane - g.arg : lane;
        break;
      case kShflDown:
        src = lane - base + g.arg < w ? lane + g.arg : lane;
        break;
      case kShflXor:
        src = lane ^ (uint64_t)g.arg;
        if (src >= base + w) src = lane;
        break;
    }
    g.out[0] = (src < 32 && (need >> src & 1)) ? lanes[src].in[0] : g.in[0];
  }
}

void compute_vote(Fiber* lanes, unsigned need) {
  unsigned ballot = 0;
  for (int j = 0; j < 32; ++j) {
    if ((need >> j & 1) && lanes[j].in[0] != 0) ballot |= 1u << j;
  }
  for (int j = 0; j < 32; ++j) {
    if (!(need >> j & 1)) continue;
    lanes[j].out[0] = ballot;
    lanes[j].out[1] = need;
  }
}

// compute_ldmatrix: matrix i has its row r at the address of lane 8i+r; lane
// l receives, for each matrix, the b16 pair (row l/4, columns 2(l%4) and
// 2(l%4)+1), or with .trans the pair (rows 2(l%4) and 2(l%4)+1, column l/4).
void compute_ldmatrix(Worker* w, Fiber* lanes, int n, bool trans) {
  for (int i = 0; i < n; ++i) {
    const unsigned char* rows[8];
    for (int r = 0; r < 8; ++r) {
      const Fiber& g = lanes[8 * i + r];
      rows[r] = reinterpret_cast<const unsigned char*>((uintptr_t)g.in[0]);
      if (rows[r] == nullptr || ((uintptr_t)rows[r] & 15u) != 0) {
        thread_fatal(w, &g, strf("%s: row address %p of matrix %d is not 16-byte aligned", g.op, (const void*)rows[r], i));
      }
    }
    for (int l = 0; l < 32; ++l) {
      const int gr = l >> 2, t = l & 3;
      uint16_t lo, hi;
      if (!trans) {
        lo = load_u16(rows[gr] + 4 * t);
        hi = load_u16(rows[gr] + 4 * t + 2);
      } else {
        lo = load_u16(rows[2 * t] + 2 * gr);
        hi = load_u16(rows[2 * t + 1] + 2 * gr);
      }
      lanes[l].out[i] = (uint64_t)lo | ((uint64_t)hi << 16);
    }
  }
}

// compute_mma: mma.m16n8k16.row.col with f32 accumulators. With g = lane/4
// and t = lane%4, lane l holds
//   A (16x16): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1],
//              a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9];
//   B (16x8):  b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g];
//   C, D (16x8): c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1];
// the lower index of each pair in the low 16 bits. D[m][n] starts at C[m][n]
// and adds A[m][k]·B[k][n] for k = 0..15 in order, in f32.
void compute_mma(Fiber* lanes, bool f16) {
  float A[16][16], B[16][8], C[16][8];
  auto cvt = [f16](uint32_t h) { return f16 ? f16_to_f32((unsigned short)h) : bits_f32(h << 16); };
  for (int l = 0; l < 32; ++l) {
    const Fiber& g = lanes[l];
    const int gr = l >> 2, t = l & 3;
    const uint32_t a0 = (uint32_t)g.in[0], a1 = (uint32_t)g.in[1], a2 = (uint32_t)g.in[2], a3 = (uint32_t)g.in[3];
    const uint32_t b0 = (uint32_t)g.in[4], b1 = (uint32_t)g.in[5];
    A[gr][2 * t] = cvt(a0 & 0xffffu);
    A[gr][2 * t + 1] = cvt(a0 >> 16);
    A[gr + 8][2 * t] = cvt(a1 & 0xffffu);
    A[gr + 8][2 * t + 1] = cvt(a1 >> 16);
    A[gr][2 * t + 8] = cvt(a2 & 0xffffu);
    A[gr][2 * t + 9] = cvt(a2 >> 16);
    A[gr + 8][2 * t + 8] = cvt(a3 & 0xffffu);
    A[gr + 8][2 * t + 9] = cvt(a3 >> 16);
    B[2 * t][gr] = cvt(b0 & 0xffffu);
    B[2 * t + 1][gr] = cvt(b0 >> 16);
    B[2 * t + 8][gr] = cvt(b1 & 0xffffu);
    B[2 * t + 9][gr] = cvt(b1 >> 16);
    C[gr][2 * t] = bits_f32((uint32_t)g.in[6]);
    C[gr][2 * t + 1] = bits_f32((uint32_t)g.in[7]);
    C[gr + 8][2 * t] = bits_f32((uint32_t)g.in[8]);
    C[gr + 8][2 * t + 1] = bits_f32((uint32_t)g.in[9]);
  }
  float D[16][8];
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 8; ++n) {
      float acc = C[m][n];
      for (int k = 0; k < 16; ++k) acc += A[m][k] * B[k][n];
      D[m][n] = acc;
    }
  }
  for (int l = 0; l < 32; ++l) {
    const int gr = l >> 2, t = l & 3;
    lanes[l].out[0] = f32_bits(D[gr][2 * t]);
    lanes[l].out[1] = f32_bits(D[gr][2 * t + 1]);
    lanes[l].out[2] = f32_bits(D[gr + 8][2 * t]);
    lanes[l].out[3] = f32_bits(D[gr + 8][2 * t + 1]);
  }
}

// try_complete runs when every existing lane named by f's mask waits at a
// warp collective: if they all wait at f's collective, it computes the
// results and makes the lanes runnable.
void try_complete(Worker* w, Fiber* f, unsigned need) {
  Block& b = w->block;
  Fiber* lanes = &w->fibers[f->warp * 32];
  for (int j = 0; j < 32; ++j) {
    if ((need >> j & 1) && lanes[j].mask != f->mask) return;  // waits in another group; resolved later
  }
  for (int j = 0; j < 32; ++j) {
    if (!(need >> j & 1)) continue;
    const Fiber& g = lanes[j];
    const bool fixed = f->coll == kCollLdmatrix || f->coll == kCollMma;
    if (g.coll != f->coll || (fixed && g.mode != f->mode)) {
      divergence(w, strf("warp %d: lanes disagree on the warp operation: lane %d waits at %s, lane %d at %s", f->warp,
                         f->lane, where(*f).c_str(), j, where(g).c_str()));
    }
  }
  switch (f->coll) {
    case kCollShfl:
      compute_shfl(lanes, need);
      break;
    case kCollVote:
      compute_vote(lanes, need);
      break;
    case kCollSync:
      break;
    case kCollLdmatrix:
      compute_ldmatrix(w, lanes, f->mode & 7, (f->mode >> 4) != 0);
      break;
    case kCollMma:
      compute_mma(lanes, f->mode != 0);
      break;
  }
  for (int j = 0; j < 32; ++j) {
    if (need >> j & 1) lanes[j].state = kRun;
  }
  b.waiting[f->warp] &= ~need;
  b.ready[f->warp] |= need;  // run_warp goes on with this warp
}

void warp_arrive(Worker* w, Fiber* f) {
  Block& b = w->block;
  const unsigned bit = 1u << f->lane;
  if (!(f->mask & bit)) {
    thread_fatal(w, f, strf("%s: mask 0x%08x does not include the calling lane %d", where(*f).c_str(), f->mask, f->lane));
  }
  f->state = kWarp;
  b.waiting[f->warp] |= bit;
  const unsigned need = f->mask & b.exists[f->warp];
  if ((b.waiting[f->warp] & need) == need) try_complete(w, f, need);
  park(w, f);
}

void need_full_warp(Worker* w, Fiber* f) {
  const Block& b = w->block;
  if (b.exists[f->warp] != 0xffffffffu) {
    divergence(w, strf("warp %d has only %d lanes, but %s (thread %s) needs all 32", f->warp,
                       __builtin_popcount(b.exists[f->warp]), f->op, tid(*f).c_str()));
  }
}

// ---------------------------------------------------------------------------
// Blocks and workers.

void ensure_stacks(Worker* w, int n) {
  if (n <= w->nstacks) return;
  if (w->stacks) munmap(w->stacks, w->stack_slot * (size_t)w->nstacks);
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  w->guard = page;
  w->stack_slot = kStackBytes + page;
  const size_t bytes = w->stack_slot * (size_t)n;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    fprintf(stderr, "perk emu: cannot map %zu bytes of fiber stacks: %s\n", bytes, strerror(errno));
    abort();
  }
  w->stacks = static_cast<char*>(p);
  for (int i = 0; i < n; ++i) mprotect(w->stacks + (size_t)i * w->stack_slot, page, PROT_NONE);  // guard page
  w->nstacks = n;
}

void ensure_smem(Worker* w, size_t bytes) {
  if (bytes <= w->smem_cap) return;
  free(w->smem);
  w->smem = nullptr;
  if (posix_memalign(&w->smem, 128, bytes) != 0) {
    fprintf(stderr, "perk emu: cannot allocate %zu bytes of dynamic shared memory\n", bytes);
    abort();
  }
  w->smem_cap = bytes;
}

void run_block(Worker* w, Job* job, uint64_t lb) {
  Block& b = w->block;
  const unsigned gx = job->grid[0], gy = job->grid[1];
  const unsigned bx = job->block[0], by = job->block[1];
  b.vars.idx.x = (unsigned)(lb % gx);
  b.vars.idx.y = (unsigned)((lb / gx) % gy);
  b.vars.idx.z = (unsigned)(lb / ((uint64_t)gx * gy));
  b.vars.dim = dim3(job->block[0], job->block[1], job->block[2]);
  b.vars.grid = dim3(job->grid[0], job->grid[1], job->grid[2]);
  b.kernel = job->kernel;
  b.params = job->params.data();
  b.n = job->nthreads;
  b.nwarps = (b.n + 31) / 32;
  b.ndone = 0;
  for (int wi = 0; wi < b.nwarps; ++wi) {
    const int lanes = b.n - wi * 32 >= 32 ? 32 : b.n - wi * 32;
    b.exists[wi] = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
    b.waiting[wi] = 0;
    b.ready[wi] = b.exists[wi];
    b.amask[wi] = 0;
  }
  b.reverse = job->sched == kReverse || (job->sched == kAlternate && (lb & 1) != 0);
  // Shared memory starts with garbage on a GPU; make reads before writes
  // visible (all-ones bytes: NaN floats, -1 integers).
  if (job->shmem > 0) memset(w->smem, 0xff, job->shmem);
  for (int i = 0; i < b.n; ++i) {
    Fiber& f = w->fibers[i];
    f.vars.idx.x = (unsigned)i % bx;
    f.vars.idx.y = ((unsigned)i / bx) % by;
    f.vars.idx.z = (unsigned)i / (bx * by);
    f.linear = i;
    f.warp = i >> 5;
    f.lane = i & 31;
    f.state = kRun;
    f.mask = 0;
    f.op = "";
    f.file = "";
    f.line = 0;
    ctx_make(&f.ctx, w->stacks + (size_t)i * w->stack_slot + w->guard, kStackBytes, fiber_main, &f, w->csr);
  }
  tls_block = &b.vars;
  while (b.ndone < b.n) {
    bool ran = false;
    if (job->sched == kRoundRobin) {
      ran = run_round_robin(w);
    } else {
      // Warps cannot release each other except at a block barrier, so one
      // pass in priority order is "the first warp that can make progress"
      // at every step.
      for (int k = 0; k < b.nwarps; ++k) ran |= run_warp(w, b.reverse ? b.nwarps - 1 - k : k);
    }
    w->cur = nullptr;
    tls_thread = nullptr;
    if (!ran) resolve_stuck(w);
  }
  tls_block = nullptr;
}

struct Pool {
  std::mutex mu;  // held for a whole launch, and while resizing
  std::vector<Worker*> workers;
  int want = 0;  // worker count; 0 means one per CPU
  Job* job = nullptr;
  sem_t done;
  Pool() { sem_init(&done, 0, 0); }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may outlive static destruction
  return *p;
}

void sem_wait_retry(sem_t* s) {
  while (sem_wait(s) != 0 && errno == EINTR) {
  }
}

void worker_loop(Worker* w) {
  // Leave asynchronous signals to the host program's own threads.
  sigset_t set;
  sigfillset(&set);
  const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
  for (int s : sync_signals) sigdelset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  tls_worker = w;
  w->csr = current_csr();
  for (;;) {
    sem_wait_retry(&w->go);
    if (w->quit) break;
    Job* job = pool().job;
    ensure_stacks(w, job->nthreads);
    ensure_smem(w, job->shmem);
    for (;;) {
      const uint64_t lb = job->next.fetch_add(1);
      if (lb >= job->nblocks) break;
      run_block(w, job, lb);
    }
    if (job->remaining.fetch_sub(1) == 1) sem_post(&pool().done);
  }
  if (w->stacks) munmap(w->stacks, w->stack_slot * (size_t)w->nstacks);
  free(w->smem);
  tls_worker = nullptr;
}

int default_workers() {
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? (int)n : 1;
}

int target_workers(const Pool& p) { return p.want > 0 ? p.want : default_workers(); }

void stop_workers(Pool& p) {
  for (Worker* w : p.workers) {
    w->quit = true;
    sem_post(&w->go);
  }
  for (Worker* w : p.workers) {
    w->thread.join();
    sem_destroy(&w->go);
    delete[] w->fibers;
    delete w;
  }
  p.workers.clear();
}

void start_workers(Pool& p) {
  const int n = target_workers(p);
  while ((int)p.workers.size() < n) {
    Worker* w = new Worker();
    w->fibers = new Fiber[kMaxThreads];
    sem_init(&w->go, 0, 0);
    w->thread = std::thread(worker_loop, w);
    p.workers.push_back(w);
  }
}

// ScheduleSetting is PERK_EMU_SCHEDULE as read at the first launch.
struct ScheduleSetting {
  Schedule sched = kAhead;
  std::string error;  // non-empty for an unknown value
};

const ScheduleSetting& schedule_setting() {
  static const ScheduleSetting* s = [] {
    ScheduleSetting* r = new ScheduleSetting();  // never destroyed: launches may run during exit
    const char* v = getenv("PERK_EMU_SCHEDULE");
    if (v == nullptr || v[0] == 0 || strcmp(v, "ahead") == 0) {
      r->sched = kAhead;
    } else if (strcmp(v, "reverse") == 0) {
      r->sched = kReverse;
    } else if (strcmp(v, "alternate") == 0) {
      r->sched = kAlternate;
    } else if (strcmp(v, "roundrobin") == 0) {
      r->sched = kRoundRobin;
    } else {
      r->error = strf("PERK_EMU_SCHEDULE=\"%.64s\" is not one of ahead, reverse, alternate, roundrobin", v);
    }
    return r;
  }();
  return *s;
}

int set_err(char* err, size_t errlen, int code, const std::string& msg) {
  if (err != nullptr && errlen > 0) snprintf(err, errlen, "%s", msg.c_str());
  return code;
}

int launch(const Kernel* k, const int64_t grid[3], const int64_t block[3], int64_t shmem, const uint64_t* params,
           int nparams, char* err, size_t errlen) {
  if (nparams != k->nparams) {
    return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH,
                   strf("kernel %s takes %d parameters, got %d", k->name.c_str(), k->nparams, nparams));
  }
  if (nparams > 0 && params == nullptr) {
    return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH, strf("kernel %s: no parameter slots", k->name.c_str()));
  }
  static const int64_t grid_max[3] = {2147483647, 65535, 65535};
  static const int64_t block_max[3] = {1024, 1024, 64};
  for (int i = 0; i < 3; ++i) {
    if (grid[i] < 1 || grid[i] > grid_max[i] || block[i] < 1 || block[i] > block_max[i]) {
      return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH,
                     strf("kernel %s: invalid launch shape grid (%lld,%lld,%lld) block (%lld,%lld,%lld)",
                          k->name.c_str(), (long long)grid[0], (long long)grid[1], (long long)grid[2],
                          (long long)block[0], (long long)block[1], (long long)block[2]));
    }
  }
  const int64_t nthreads = block[0] * block[1] * block[2];
  if (nthreads > kMaxThreads) {
    return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH,
                   strf("kernel %s: block of %lld threads exceeds %d", k->name.c_str(), (long long)nthreads,
                        kMaxThreads));
  }
  if (shmem < 0 || shmem > kMaxDynamicSmem) {
    return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH,
                   strf("kernel %s: %lld bytes of dynamic shared memory (limit %lld)", k->name.c_str(),
                        (long long)shmem, (long long)kMaxDynamicSmem));
  }
  const ScheduleSetting& ss = schedule_setting();
  if (!ss.error.empty()) {
    return set_err(err, errlen, PERK_EMU_INVALID_LAUNCH, strf("kernel %s: %s", k->name.c_str(), ss.error.c_str()));
  }
  Job job;
  job.kernel = k;
  job.sched = ss.sched;
  job.params.assign(params, params + nparams);
  job.params.push_back(0);  // keeps data() valid for kernels without parameters
  for (int i = 0; i < 3; ++i) {
    job.grid[i] = (unsigned)grid[i];
    job.block[i] = (unsigned)block[i];
  }
  job.nthreads = (int)nthreads;
  job.shmem = (size_t)shmem;
  job.nblocks = (uint64_t)grid[0] * (uint64_t)grid[1] * (uint64_t)grid[2];

  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  start_workers(p);
  const uint64_t nw = p.workers.size();
  const int k_workers = (int)(job.nblocks < nw ? job.nblocks : nw);
  job.remaining.store(k_workers);
  p.job = &job;
  for (int i = 0; i < k_workers; ++i) sem_post(&p.workers[i]->go);
  sem_wait_retry(&p.done);
  p.job = nullptr;
  return PERK_EMU_OK;
}

}  // namespace

// ---------------------------------------------------------------------------
// Entry points used by emu.h.

int register_kernel(const char* name, int nparams, KernelEntry entry) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.index.find(name);
  if (it != r.index.end()) {
    fprintf(stderr, "perk emu: kernel %s registered twice\n", name);
    abort();
  }
  const int id = (int)r.kernels.size();
  r.kernels.push_back(new Kernel{name, nparams, entry});
  r.index.emplace(name, id);
  return id;
}

void* dynamic_smem() {
  Worker* w;
  current(&w, "dynamic shared memory");
  return w->smem;
}

int block_barrier(int pred, int mode, const char* op, const char* file, int line) {
  Worker* w;
  Fiber* f = current(&w, op);
  f->state = kBarrier;
  f->op = op;
  f->file = file;
  f->line = line;
  f->mode = mode;
  f->in[0] = pred != 0;
  park(w, f);
  return (int)f->out[0];
}

uint64_t warp_shfl(unsigned mask, uint64_t v, int mode, unsigned arg, int width, const char* op, const char* file,
                   int line) {
  Worker* w;
  Fiber* f = current(&w, op);
  f->op = op;
  f->file = file;
  f->line = line;
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    thread_fatal(w, f, strf("%s: width %d is not a power of two in 1..32", where(*f).c_str(), width));
  }
  f->coll = kCollShfl;
  f->mode = mode;
  f->arg = arg;
  f->width = width;
  f->mask = mask;
  f->in[0] = v;
  warp_arrive(w, f);
  return f->out[0];
}

unsigned warp_vote(unsigned mask, int pred, unsigned* participants, const char* op, const char* file, int line) {
  Worker* w;
  Fiber* f = current(&w, op);
  f->op = op;
  f->file = file;
  f->line = line;
  f->coll = kCollVote;
  f->mode = 0;
  f->mask = mask;
  f->in[0] = pred != 0;
  warp_arrive(w, f);
  if (participants) *participants = (unsigned)f->out[1];
  return (unsigned)f->out[0];
}

void warp_sync(unsigned mask, const char* file, int line) {
  Worker* w;
  Fiber* f = current(&w, "__syncwarp");
  f->op = "__syncwarp";
  f->file = file;
  f->line = line;
  f->coll = kCollSync;
  f->mode = 0;
  f->mask = mask;
  warp_arrive(w, f);
}

unsigned active_mask(const char* file, int line) {
  Worker* w;
  Fiber* f = current(&w, "__activemask");
  f->op = "__activemask";
  f->file = file;
  f->line = line;
  f->mode = 0;
  f->state = kActiveMask;
  w->block.amask[f->warp] |= 1u << f->lane;
  park(w, f);
  return (unsigned)f->out[0];
}

void warp_ldmatrix(uint32_t* r, int n, bool trans, const void* p, const char* op) {
  Worker* w;
  Fiber* f = current(&w, op);
  f->op = op;
  f->file = "";
  f->line = 0;
  need_full_warp(w, f);
  f->coll = kCollLdmatrix;
  f->mode = n | (trans ? 16 : 0);
  f->mask = 0xffffffffu;
  f->in[0] = (uint64_t)(uintptr_t)p;
  warp_arrive(w, f);
  for (int i = 0; i < n; ++i) r[i] = (uint32_t)f->out[i];
}

void warp_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4], bool f16,
                    const char* op) {
  Worker* w;
  Fiber* f = current(&w, op);
  f->op = op;
  f->file = "";
  f->line = 0;
  need_full_warp(w, f);
  f->coll = kCollMma;
  f->mode = f16 ? 1 : 0;
  f->mask = 0xffffffffu;
  for (int i = 0; i < 4; ++i) f->in[i] = a[i];
  f->in[4] = b[0];
  f->in[5] = b[1];
  for (int i = 0; i < 4; ++i) f->in[6 + i] = f32_bits(c[i]);
  warp_arrive(w, f);
  for (int i = 0; i < 4; ++i) d[i] = bits_f32((uint32_t)f->out[i]);
}

void kernel_fatal(const char* msg) {
  Worker* w;
  Fiber* f = current(&w, msg);
  thread_fatal(w, f, msg);
}

}  // namespace perk_emu

// ---------------------------------------------------------------------------
// C interface (emu_api.h).

using perk_emu::Kernel;

extern "C" {

int perk_emu_find(const char* name, int* nparams) {
  if (name == nullptr) return -1;
  perk_emu::Registry& r = perk_emu::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.index.find(name);
  if (it == r.index.end()) return -1;
  if (nparams) *nparams = r.kernels[it->second]->nparams;
  return it->second;
}

int perk_emu_kernel_count(void) {
  perk_emu::Registry& r = perk_emu::registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return (int)r.kernels.size();
}

const char* perk_emu_kernel_name(int id) {
  const Kernel* k = perk_emu::kernel_by_id(id);
  return k ? k->name.c_str() : nullptr;
}

int perk_emu_launch_id(int id, const int64_t grid[3], const int64_t block[3], int64_t shmem, const uint64_t* params,
                       int nparams, char* err, size_t errlen) {
  const Kernel* k = perk_emu::kernel_by_id(id);
  if (k == nullptr) {
    return perk_emu::set_err(err, errlen, PERK_EMU_UNKNOWN_KERNEL, perk_emu::strf("no kernel with id %d", id));
  }
  return perk_emu::launch(k, grid, block, shmem, params, nparams, err, errlen);
}

int perk_emu_launch(const char* name, const int64_t grid[3], const int64_t block[3], int64_t shmem,
                    const uint64_t* params, int nparams, char* err, size_t errlen) {
  const int id = perk_emu_find(name, nullptr);
  if (id < 0) {
    return perk_emu::set_err(err, errlen, PERK_EMU_UNKNOWN_KERNEL,
                             perk_emu::strf("no kernel named %s", name ? name : "(null)"));
  }
  return perk_emu_launch_id(id, grid, block, shmem, params, nparams, err, errlen);
}

void perk_emu_set_workers(int n) {
  perk_emu::Pool& p = perk_emu::pool();
  std::lock_guard<std::mutex> lock(p.mu);
  const int want = n > 0 ? (n < perk_emu::kMaxWorkers ? n : perk_emu::kMaxWorkers) : 0;
  if (want == p.want) return;
  perk_emu::stop_workers(p);
  p.want = want;
}

int perk_emu_workers(void) {
  perk_emu::Pool& p = perk_emu::pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return perk_emu::target_workers(p);
}

uint64_t perk_emu_alloc(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, 256, n > 0 ? n : 1) != 0) return 0;
  return (uint64_t)(uintptr_t)p;
}

void perk_emu_free(uint64_t p) { free(reinterpret_cast<void*>((uintptr_t)p)); }

void perk_emu_write(uint64_t dst, const void* src, size_t n) {
  if (n > 0) memcpy(reinterpret_cast<void*>((uintptr_t)dst), src, n);
}

void perk_emu_read(void* dst, uint64_t src, size_t n) {
  if (n > 0) memcpy(dst, reinterpret_cast<const void*>((uintptr_t)src), n);
}

void perk_emu_copy(uint64_t dst, uint64_t src, size_t n) {
  if (n > 0) memmove(reinterpret_cast<void*>((uintptr_t)dst), reinterpret_cast<const void*>((uintptr_t)src), n);
}

void perk_emu_fill(uint64_t dst, int value, size_t n) {
  if (n > 0) memset(reinterpret_cast<void*>((uintptr_t)dst), value, n);
}

}  // extern "C"
