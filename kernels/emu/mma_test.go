package emu

import (
	"math"
	"math/rand"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/x448/float16"
)

// format is a 16-bit floating-point storage format.
type format struct {
	name   string
	encode func(float32) uint16
	decode func(uint16) float32
}

var formats = []format{
	{"bf16", bf16Ref, func(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }},
	{"f16", func(f float32) uint16 { return float16.Fromfloat32(f).Bits() }, func(h uint16) float32 {
		return float16.Frombits(h).Float32()
	}},
}

// mmaCase holds count independent products D = A·B + C: A 16×16, B 16×8
// (k×n), C and D 16×8, row-major and concatenated.
type mmaCase struct {
	count int
	a, b  []uint16
	c     []float32
}

func newMMACase(rng *rand.Rand, f format, count int) mmaCase {
	mc := mmaCase{count: count, a: make([]uint16, 256*count), b: make([]uint16, 128*count), c: make([]float32, 128*count)}
	for i := range mc.a {
		mc.a[i] = f.encode(rng.Float32()*4 - 2)
	}
	for i := range mc.b {
		mc.b[i] = f.encode(rng.Float32()*4 - 2)
	}
	for i := range mc.c {
		mc.c[i] = rng.Float32()*2 - 1
	}
	return mc
}

// reference is the naive product in f32: D[m][n] = C[m][n] + Σ_k A[m][k]·B[k][n]
// accumulated in k order. With transposeA it uses A[k][m] instead, which a
// correct kernel must not match.
func (mc mmaCase) reference(f format, transposeA bool) []float32 {
	d := make([]float32, 128*mc.count)
	for p := 0; p < mc.count; p++ {
		a, b, c := mc.a[256*p:], mc.b[128*p:], mc.c[128*p:]
		for m := 0; m < 16; m++ {
			for n := 0; n < 8; n++ {
				acc := c[m*8+n]
				for k := 0; k < 16; k++ {
					ai := m*16 + k
					if transposeA {
						ai = k*16 + m
					}
					acc += f.decode(a[ai]) * f.decode(b[k*8+n])
				}
				d[128*p+m*8+n] = acc
			}
		}
	}
	return d
}

func closeEnough(got, want float32) bool {
	return math.Abs(float64(got-want)) <= 1e-5*math.Max(1, math.Abs(float64(want)))
}

func checkProduct(t *testing.T, f format, mc mmaCase, got []float32, what string) {
	t.Helper()
	want := mc.reference(f, false)
	for i := range want {
		require.True(t, closeEnough(got[i], want[i]), "%s: product %d element (%d,%d): got %v want %v",
			what, i/128, i%128/8, i%8, got[i], want[i])
	}
	// The data is not symmetric: a transposed A layout would give other numbers.
	wrong := mc.reference(f, true)
	differ := 0
	for i := range wrong {
		if !closeEnough(got[i], wrong[i]) {
			differ++
		}
	}
	assert.Greater(t, differ, len(wrong)/2, "%s: the test data must tell A from Aᵀ", what)
}

// TestMMAFragments: fragments gathered from global memory by the documented
// PTX layouts, several warps per block and several blocks.
func TestMMAFragments(t *testing.T) {
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(3))
			const blocks, warpsPerBlock = 3, 2
			mc := newMMACase(rng, f, blocks*warpsPerBlock)
			pd := alloc(t, 128*mc.count*4)
			launch(t, "emutest_mma_"+f.name, d1(blocks), d1(32*warpsPerBlock), 0,
				upload(t, mc.a), upload(t, mc.b), upload(t, mc.c), pd)
			checkProduct(t, f, mc, download[float32](pd, 128*mc.count), "mma")
		})
	}
}

// TestLdmatrixMMA: A and B staged in shared memory and loaded with every
// ldmatrix variant (x1, x2, x4, with and without .trans).
func TestLdmatrixMMA(t *testing.T) {
	for _, f := range formats {
		for mode := 0; mode < 4; mode++ {
			t.Run(f.name+"/mode"+string(rune('0'+mode)), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(4 + mode)))
				mc := newMMACase(rng, f, 3)
				pd := alloc(t, 128*mc.count*4)
				launch(t, "emutest_ldmatrix_mma_"+f.name, d1(mc.count), d1(32), 0,
					upload(t, mc.a), upload(t, mc.b), upload(t, mc.c), pd, uint64(mode))
				checkProduct(t, f, mc, download[float32](pd, 128*mc.count), "ldmatrix+mma")
			})
		}
	}
}
