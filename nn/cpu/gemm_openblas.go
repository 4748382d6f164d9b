//go:build openblas

package cpu

// Debian's libopenblas-dev installs cblas.h and libopenblas.so through the
// alternatives system under the multiarch directories
// (/usr/include/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu), which gcc
// searches by default; the -I flags also cover compilers that do not and
// distributions that use /usr/include/openblas. The C wrappers take plain
// ints so the Go side does not depend on the header's blasint and enum
// typedefs.

/*
#cgo CFLAGS: -I/usr/include/x86_64-linux-gnu -I/usr/include/openblas
#cgo LDFLAGS: -lopenblas
#include <cblas.h>

static void perk_sgemm(int ta, int tb, int m, int n, int k, float alpha,
		const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static void perk_dgemm(int ta, int tb, int m, int n, int k, double alpha,
		const double *a, int lda, const double *b, int ldb, double beta, double *c, int ldc) {
	cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
*/
import "C"

import (
	"fmt"
	"math"
)

// gemmLibrary names the library behind sgemm and dgemm.
const gemmLibrary = "openblas"

// sgemm forwards a gemm that checkGemm accepted to OpenBLAS's cblas_sgemm.
// The slices hold no Go pointers, so passing their first elements to C is
// allowed; checkGemm guarantees they are non-empty and long enough.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkCInt(m, n, k, lda, ldb, ldc)
	C.perk_sgemm(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k),
		C.float(alpha), (*C.float)(&a[0]), C.int(lda), (*C.float)(&b[0]), C.int(ldb),
		C.float(beta), (*C.float)(&c[0]), C.int(ldc))
}

// dgemm forwards a gemm that checkGemm accepted to OpenBLAS's cblas_dgemm,
// under the same conditions as sgemm.
func dgemm(transA, transB bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) {
	checkCInt(m, n, k, lda, ldb, ldc)
	C.perk_dgemm(cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k),
		C.double(alpha), (*C.double)(&a[0]), C.int(lda), (*C.double)(&b[0]), C.int(ldb),
		C.double(beta), (*C.double)(&c[0]), C.int(ldc))
}

// checkCInt panics if a dimension or leading dimension does not fit the C int
// that CBLAS takes.
func checkCInt(v ...int) {
	for _, x := range v {
		if x > math.MaxInt32 {
			panic(fmt.Sprintf("cpu: gemm: dimension %d too large for OpenBLAS", x))
		}
	}
}

// cbool maps a transpose flag to the wrappers' int.
func cbool(t bool) C.int {
	if t {
		return 1
	}
	return 0
}
