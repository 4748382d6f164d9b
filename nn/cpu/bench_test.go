package cpu

import (
	"fmt"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/perkgo/perk/nn"
)

// BenchmarkGEMM times the backend's MatMul (a linear layer's x·Wᵀ in float32)
// against calling gonum's Sgemm directly on the same operands, and reports
// GFLOP/s = 2·M·K·N / time for each. Built with -tags openblas, MatMul goes
// through OpenBLAS and an openblas/ case also times cblas_sgemm directly, so
// the two libraries are reported side by side on the same shapes; gonum is
// always timed as the peer.
func BenchmarkGEMM(b *testing.B) {
	shapes := []struct {
		m, k, n int
		large   bool
	}{
		{512, 768, 768, false},
		{2048, 768, 3072, true},
	}
	for _, s := range shapes {
		rng := newRNG(1)
		rnd := func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.Float64() - 0.5)
			}
			return v
		}
		x, w, y := rnd(s.m*s.k), rnd(s.n*s.k), make([]float32, s.m*s.n)
		flop := 2 * float64(s.m) * float64(s.k) * float64(s.n)
		report := func(b *testing.B) {
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		}
		shape := fmt.Sprintf("%dx%dx%d", s.m, s.k, s.n)
		b.Run("nn/"+shape, func(b *testing.B) {
			if s.large && testing.Short() {
				b.Skip("large shape skipped with -short")
			}
			be := New()
			xt, _ := nn.FromF32(x, s.m, s.k)
			wt, _ := nn.FromF32(w, s.n, s.k)
			yt, _ := nn.FromF32(y, s.m, s.n)
			for b.Loop() {
				if err := be.MatMul(false, true, 1, xt, wt, 0, yt); err != nil {
					b.Fatal(err)
				}
			}
			report(b)
		})
		b.Run("gonum/"+shape, func(b *testing.B) {
			if s.large && testing.Short() {
				b.Skip("large shape skipped with -short")
			}
			impl := blas32.Implementation()
			for b.Loop() {
				impl.Sgemm(blas.NoTrans, blas.Trans, s.m, s.n, s.k, 1, x, s.k, w, s.k, 0, y, s.n)
			}
			report(b)
		})
		if gemmLibrary != "gonum" {
			b.Run(gemmLibrary+"/"+shape, func(b *testing.B) {
				if s.large && testing.Short() {
					b.Skip("large shape skipped with -short")
				}
				for b.Loop() {
					sgemm(false, true, s.m, s.n, s.k, 1, x, s.k, w, s.k, 0, y, s.n)
				}
				report(b)
			})
		}
	}
}
