//go:build cuda

package bench

// The cuBLAS peer. gorgonia.org/cu/blas (v0.9.6) wraps only cublas[SDCZ]gemm
// on Go slices — no cublasGemmEx, so no bf16 — and keeps its handle
// unexported, so the peer calls cuBLAS through this small shim instead.
//
// The shim loads libcudart and libcublas with dlopen on first use (from
// $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64, then the
// loader's path), so building needs no CUDA headers beyond the driver's and
// the binary starts where cuBLAS is missing; the peer then says why. It runs
// on its own thread in the device's primary context (the cuda.Device's context
// belongs to its worker thread), with its own buffers filled with random
// values (never zeros: tensor cores run faster on zeros), and times the GEMMs
// with CUDA events on the default stream (bf16 or f32 storage, f32
// accumulation, default math mode: no TF32).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The few runtime and cuBLAS entry points used, with their C ABI (enums are
// ints, handles and events pointers). Values from driver_types.h,
// library_types.h and cublas_api.h, stable across CUDA 11–13.
enum {
	PERK_MEMCPY_H2D = 1, PERK_MEMCPY_D2D = 3,
	PERK_OP_N = 0, PERK_OP_T = 1,
	PERK_R_32F = 0, PERK_R_16BF = 14,
	PERK_COMPUTE_32F = 68, PERK_GEMM_DEFAULT = -1,
};

static struct {
	int loaded;
	char err[512];
	int (*setDevice)(int);
	int (*malloc_)(void **, size_t);
	int (*free_)(void *);
	int (*memcpy_)(void *, const void *, size_t, int);
	int (*deviceSynchronize)(void);
	int (*eventCreate)(void **);
	int (*eventRecord)(void *, void *);
	int (*eventSynchronize)(void *);
	int (*eventElapsedTime)(float *, void *, void *);
	int (*eventDestroy)(void *);
	const char *(*getErrorString)(int);
	int (*create)(void **);
	int (*destroy)(void *);
	int (*gemmEx)(void *, int, int, int, int, int, const void *, const void *, int, int, const void *, int, int,
		const void *, void *, int, int, int, int);
} perk_cu;

static void *perk_open(const char *dirs, const char *base, const char *const *sfx, int global) {
	char path[1024];
	const char *d = dirs;
	for (;;) {
		const char *end = strchr(d, ':');
		size_t n = end ? (size_t)(end - d) : strlen(d);
		for (int i = 0; sfx[i]; i++) {
			if (n > 0)
				snprintf(path, sizeof path, "%.*s/%s%s", (int)n, d, base, sfx[i]);
			else
				snprintf(path, sizeof path, "%s%s", base, sfx[i]);
			void *h = dlopen(path, RTLD_NOW | (global ? RTLD_GLOBAL : RTLD_LOCAL));
			if (h) return h;
		}
		if (!end) return NULL;
		d = end + 1;
	}
}

// perk_load resolves the entry points once; dirs is a ':'-separated list of
// folders, an empty entry meaning the loader's own search.
static int perk_load(const char *dirs) {
	if (perk_cu.loaded) return perk_cu.loaded > 0 ? 0 : -1;
	static const char *const sfx[] = {".so", ".so.13", ".so.12", ".so.11", ".so.11.0", NULL};
	perk_cu.loaded = -1;
	void *rt = perk_open(dirs, "libcudart", sfx, 0);
	if (!rt) {
		snprintf(perk_cu.err, sizeof perk_cu.err, "cannot load libcudart (tried %s)", dirs);
		return -1;
	}
	perk_open(dirs, "libcublasLt", sfx, 1); // cuBLAS's dependency, found beside it
	void *bl = perk_open(dirs, "libcublas", sfx, 0);
	if (!bl) {
		snprintf(perk_cu.err, sizeof perk_cu.err, "cannot load libcublas (tried %s): %s", dirs, dlerror());
		return -1;
	}
#define PERK_SYM(lib, field, name) do { *(void **)(&perk_cu.field) = dlsym(lib, name); } while (0)
	PERK_SYM(rt, setDevice, "cudaSetDevice");
	PERK_SYM(rt, malloc_, "cudaMalloc");
	PERK_SYM(rt, free_, "cudaFree");
	PERK_SYM(rt, memcpy_, "cudaMemcpy");
	PERK_SYM(rt, deviceSynchronize, "cudaDeviceSynchronize");
	PERK_SYM(rt, eventCreate, "cudaEventCreate");
	PERK_SYM(rt, eventRecord, "cudaEventRecord");
	PERK_SYM(rt, eventSynchronize, "cudaEventSynchronize");
	PERK_SYM(rt, eventElapsedTime, "cudaEventElapsedTime");
	if (!perk_cu.eventElapsedTime) PERK_SYM(rt, eventElapsedTime, "cudaEventElapsedTime_v2");
	PERK_SYM(rt, eventDestroy, "cudaEventDestroy");
	PERK_SYM(rt, getErrorString, "cudaGetErrorString");
	PERK_SYM(bl, create, "cublasCreate_v2");
	PERK_SYM(bl, destroy, "cublasDestroy_v2");
	PERK_SYM(bl, gemmEx, "cublasGemmEx");
#undef PERK_SYM
	if (!perk_cu.setDevice || !perk_cu.malloc_ || !perk_cu.free_ || !perk_cu.memcpy_ || !perk_cu.deviceSynchronize ||
		!perk_cu.eventCreate || !perk_cu.eventRecord || !perk_cu.eventSynchronize || !perk_cu.eventElapsedTime ||
		!perk_cu.eventDestroy || !perk_cu.getErrorString || !perk_cu.create || !perk_cu.destroy || !perk_cu.gemmEx) {
		snprintf(perk_cu.err, sizeof perk_cu.err, "libcudart/libcublas lack an entry point this peer needs");
		return -1;
	}
	perk_cu.loaded = 1;
	return 0;
}

static const char *perk_load_error(void) { return perk_cu.err; }

// Row-major C[m,n] = A[m,k]·op(B); B is [n,k] when transb, else [k,n].
typedef struct { int m, n, k, transb; } perk_gemm;

static int perk_gemm_run(void *h, int t, perk_gemm g, const void *A, const void *B, void *C) {
	// Column-major, the same product is Cᵀ[n,m] = op(B)ᵀ·Aᵀ.
	const float alpha = 1.0f, beta = 0.0f;
	return perk_cu.gemmEx(h, g.transb ? PERK_OP_T : PERK_OP_N, PERK_OP_N, g.n, g.m, g.k, &alpha,
		B, t, g.transb ? g.k : g.n, A, t, g.k, &beta, C, t, g.n, PERK_COMPUTE_32F, PERK_GEMM_DEFAULT);
}

// perk_fill fills n elements (bf16 or f32) of dev with values uniform in
// [-1,1): a pattern of up to 2^20 values, copied up and then doubled.
static int perk_fill(void *dev, size_t n, int bf16, uint64_t seed) {
	size_t es = bf16 ? 2 : 4, pat = n < ((size_t)1 << 20) ? n : ((size_t)1 << 20);
	void *buf = malloc(pat * es);
	if (buf == NULL) return 2; // cudaErrorMemoryAllocation
	uint64_t s = seed;
	for (size_t i = 0; i < pat; i++) {
		s = s * 6364136223846793005ULL + 1442695040888963407ULL;
		float v = (float)(s >> 40) / 16777216.0f * 2.0f - 1.0f;
		if (bf16) {
			uint32_t b;
			memcpy(&b, &v, 4);
			((uint16_t *)buf)[i] = (uint16_t)(b >> 16);
		} else {
			((float *)buf)[i] = v;
		}
	}
	int e = perk_cu.memcpy_(dev, buf, pat * es, PERK_MEMCPY_H2D);
	free(buf);
	for (size_t done = pat; e == 0 && done < n; ) {
		size_t c = done < n - done ? done : n - done;
		e = perk_cu.memcpy_((char *)dev + done * es, dev, c * es, PERK_MEMCPY_D2D);
		done += c;
	}
	return e;
}

// perk_cublas_time runs the ng GEMMs once (warm-up), then iters times
// between two events, and stores the elapsed milliseconds in *ms. It returns
// 0, or 1 with a message in msg.
static int perk_cublas_time(int device, int bf16, const perk_gemm *g, int ng, int iters, float *ms, char *msg, int msglen) {
	int rc = 0, e;
	size_t es = bf16 ? 2 : 4, na = 1, nb = 1, nc = 1;
	void *A = NULL, *B = NULL, *C = NULL, *h = NULL, *e0 = NULL, *e1 = NULL;
	int t = bf16 ? PERK_R_16BF : PERK_R_32F;
#define PERK_CK(call) do { if ((e = (call)) != 0) { snprintf(msg, msglen, "%s: %s", #call, perk_cu.getErrorString(e)); rc = 1; goto done; } } while (0)
#define PERK_CB(call) do { if ((e = (call)) != 0) { snprintf(msg, msglen, "%s: cuBLAS status %d", #call, e); rc = 1; goto done; } } while (0)
	for (int i = 0; i < ng; i++) {
		size_t a = (size_t)g[i].m * g[i].k, b = (size_t)g[i].n * g[i].k, c = (size_t)g[i].m * g[i].n;
		if (a > na) na = a;
		if (b > nb) nb = b;
		if (c > nc) nc = c;
	}
	PERK_CK(perk_cu.setDevice(device));
	PERK_CK(perk_cu.malloc_(&A, na * es));
	PERK_CK(perk_cu.malloc_(&B, nb * es));
	PERK_CK(perk_cu.malloc_(&C, nc * es));
	PERK_CK(perk_fill(A, na, bf16, 1));
	PERK_CK(perk_fill(B, nb, bf16, 2));
	PERK_CB(perk_cu.create(&h));
	PERK_CK(perk_cu.eventCreate(&e0));
	PERK_CK(perk_cu.eventCreate(&e1));
	for (int i = 0; i < ng; i++) PERK_CB(perk_gemm_run(h, t, g[i], A, B, C));
	PERK_CK(perk_cu.deviceSynchronize());
	PERK_CK(perk_cu.eventRecord(e0, NULL));
	for (int it = 0; it < iters; it++)
		for (int i = 0; i < ng; i++) PERK_CB(perk_gemm_run(h, t, g[i], A, B, C));
	PERK_CK(perk_cu.eventRecord(e1, NULL));
	PERK_CK(perk_cu.eventSynchronize(e1));
	PERK_CK(perk_cu.eventElapsedTime(ms, e0, e1));
done:
	if (e0) perk_cu.eventDestroy(e0);
	if (e1) perk_cu.eventDestroy(e1);
	if (h) perk_cu.destroy(h);
	if (A) perk_cu.free_(A);
	if (B) perk_cu.free_(B);
	if (C) perk_cu.free_(C);
#undef PERK_CK
#undef PERK_CB
	return rc;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"unsafe"

	"github.com/perkgo/perk/runtime"
	"github.com/perkgo/perk/runtime/cuda"
)

var cublasLoad struct {
	once sync.Once
	err  error
}

// loadCUBLAS dlopens the libraries once.
func loadCUBLAS() error {
	cublasLoad.once.Do(func() {
		var dirs []string
		for _, env := range []string{"CUDA_HOME", "CUDA_PATH"} {
			if v := os.Getenv(env); v != "" {
				dirs = append(dirs, v+"/lib64")
			}
		}
		dirs = append(dirs, "/usr/local/cuda/lib64", "") // "": the loader's search path
		cs := C.CString(strings.Join(dirs, ":"))
		defer C.free(unsafe.Pointer(cs))
		if C.perk_load(cs) != 0 {
			cublasLoad.err = noPeerError{C.GoString(C.perk_load_error())}
		}
	})
	return cublasLoad.err
}

// cublasPeer times gemms (in dtype t: f32 or bf16) with cuBLAS on dev's GPU
// and returns seconds per run of the list.
func cublasPeer(dev runtime.Device, t runtime.DType, gemms []gemmSpec, iters int) (float64, error) {
	d, ok := dev.(*cuda.Device)
	if !ok {
		return 0, noPeerError{"cuBLAS runs only with --device cuda"}
	}
	if t != runtime.F32 && t != runtime.BF16 {
		return 0, noPeerError{fmt.Sprintf("no cuBLAS peer for %s", t)}
	}
	if len(gemms) == 0 {
		return 0, fmt.Errorf("cublas peer: no GEMMs")
	}
	if err := loadCUBLAS(); err != nil {
		return 0, err
	}
	gs := make([]C.perk_gemm, len(gemms))
	for i, g := range gemms {
		tb := 0
		if g.TransB {
			tb = 1
		}
		gs[i] = C.perk_gemm{m: C.int(g.M), n: C.int(g.N), k: C.int(g.K), transb: C.int(tb)}
	}
	bf16 := 0
	if t == runtime.BF16 {
		bf16 = 1
	}
	const msgLen = 512
	msg := (*C.char)(C.calloc(msgLen, 1))
	defer C.free(unsafe.Pointer(msg))
	iters = max(iters, 1)
	var ms C.float
	if C.perk_cublas_time(C.int(d.Ordinal()), C.int(bf16), &gs[0], C.int(len(gs)), C.int(iters), &ms, msg, msgLen) != 0 {
		return 0, fmt.Errorf("cublas peer on %v: %s", d, C.GoString(msg))
	}
	return float64(ms) / 1e3 / float64(iters), nil
}
