package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/x448/float16"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/runtime"
)

var storage = []runtime.DType{runtime.F32, runtime.BF16, runtime.F16}

func kname(prefix string, t runtime.DType) string {
	return prefix + "_" + map[runtime.DType]string{runtime.F32: "f32", runtime.BF16: "bf16", runtime.F16: "f16"}[t]
}

func TestGoldenFill(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dt := range storage {
		for _, n := range kt.RaggedSizes(rng, 5000) {
			v := float32(rng.NormFloat64())
			dst := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.Fill(0, dst, v))
			want := make([]float64, n)
			for i := range want {
				want[i] = runtime.Round(dt, float64(v))
			}
			kt.CheckTol(t, kname("fill", dt), 0, kt.Download(t, dst), want, "n=", n)
		}
	}
}

func TestGoldenCopy(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, dt := range storage {
		for _, n := range kt.RaggedSizes(rng, 5000) {
			want := kt.Rand(rng, dt, n, 3)
			src := kt.Upload(t, d, dt, []int{n}, want)
			dst := kt.Poisoned(t, d, dt, []int{n})
			require.NoError(t, kernels.Copy(0, dst, src))
			k := "copy_b32"
			if dt.Size() == 2 {
				k = "copy_b16"
			}
			kt.CheckTol(t, k, 0, kt.Download(t, dst), want, "n=", n)
		}
	}
}

// castInputs covers normal values, values near bf16/f16 rounding ties,
// f16 subnormals and overflow, signed zeros, infinities and NaN.
func castInputs(rng *rand.Rand, n int) []float32 {
	out := []float32{0, float32(math.Copysign(0, -1)), 1, -1, 65504, 65520, 65519.99, 1e-8, 6e-8, 3e-5, -2.5e-6,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 3.4e38, 1.00390625, 1.01171875}
	for len(out) < n {
		switch rng.IntN(3) {
		case 0:
			out = append(out, float32(rng.NormFloat64()*math.Pow(10, float64(rng.IntN(12)-6))))
		case 1: // exact ties for bf16 (bit 15 set, low bits zero) and neighbours
			b := rng.Uint32()&0xffff0000 | 0x8000 + uint32(rng.IntN(3)) - 1
			out = append(out, math.Float32frombits(b&0xbfffffff))
		default: // f16 ties
			b := rng.Uint32()&0xffffe000 | 0x1000
			out = append(out, math.Float32frombits(b&0x47ffffff))
		}
	}
	return out
}

func bf16RNE(f float32) uint16 {
	// Reference written independently of runtime.BF16FromFloat32: drop the
	// low 16 bits, rounding up above the half-way point and at ties to even.
	if math.IsNaN(float64(f)) {
		return 0x7fc0
	}
	b := math.Float32bits(f)
	lo := b & 0xffff
	hi := b >> 16
	switch {
	case lo > 0x8000, lo == 0x8000 && hi&1 == 1:
		hi++
	}
	return uint16(hi)
}

func TestGoldenCast(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(5, 6))
	in := castInputs(rng, 3000)
	f64 := make([]float64, len(in))
	for i, v := range in {
		f64[i] = float64(v)
	}
	n := len(in)
	src := kt.Upload(t, d, runtime.F32, []int{n}, f64)

	// f32 → bf16 and f32 → f16: bit-exact against the Go references.
	raw := func(a kernels.Array) []uint16 {
		buf := make([]byte, a.Bytes())
		require.NoError(t, d.MemcpyDtoH(buf, a.Ptr, 0))
		out := make([]uint16, a.Numel())
		for i := range out {
			out[i] = uint16(buf[2*i]) | uint16(buf[2*i+1])<<8
		}
		return out
	}
	bf := kt.Poisoned(t, d, runtime.BF16, []int{n})
	require.NoError(t, kernels.Cast(0, bf, src))
	gotBF := raw(bf)
	for i, v := range in {
		want := bf16RNE(v)
		if math.IsNaN(float64(v)) {
			require.True(t, gotBF[i]&0x7fff > 0x7f80, "cast_f32_bf16: NaN became %#04x", gotBF[i])
			continue
		}
		require.Equal(t, want, gotBF[i], "cast_f32_bf16(%g = %#08x)", v, math.Float32bits(v))
	}
	kt.Record("cast_f32_bf16", 0, 0)

	hf := kt.Poisoned(t, d, runtime.F16, []int{n})
	require.NoError(t, kernels.Cast(0, hf, src))
	gotHF := raw(hf)
	for i, v := range in {
		want := float16.Fromfloat32(v).Bits()
		if math.IsNaN(float64(v)) {
			require.True(t, gotHF[i]&0x7fff > 0x7c00, "cast_f32_f16: NaN became %#04x", gotHF[i])
			continue
		}
		require.Equal(t, want, gotHF[i], "cast_f32_f16(%g = %#08x)", v, math.Float32bits(v))
	}
	kt.Record("cast_f32_f16", 0, 0)

	// Widening casts are exact; 16↔16 casts round once through f32.
	finite := make([]float64, 0, n)
	for _, v := range f64 {
		if !math.IsNaN(v) {
			finite = append(finite, v)
		}
	}
	m := len(finite)
	for _, c := range []struct {
		from, to runtime.DType
	}{{runtime.BF16, runtime.F32}, {runtime.F16, runtime.F32}, {runtime.BF16, runtime.F16}, {runtime.F16, runtime.BF16}} {
		vals := make([]float64, m)
		for i, v := range finite {
			vals[i] = runtime.Round(c.from, v)
		}
		s := kt.Upload(t, d, c.from, []int{m}, vals)
		dst := kt.Poisoned(t, d, c.to, []int{m})
		require.NoError(t, kernels.Cast(0, dst, s))
		want := make([]float64, m)
		for i, v := range vals {
			want[i] = runtime.Round(c.to, v)
		}
		got := kt.Download(t, dst)
		for i := range want {
			require.True(t, got[i] == want[i] || math.IsInf(want[i], 0) && got[i] == want[i], "cast %s→%s of %g: got %g want %g", c.from, c.to, vals[i], got[i], want[i])
		}
		kt.Record(kname(kname("cast", c.from), c.to), 0, 0)
	}
}

func TestGoldenAxpy(t *testing.T) {
	d := kt.Device(t)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, dt := range storage {
		for _, n := range kt.RaggedSizes(rng, 5000) {
			a := float32(rng.NormFloat64())
			x := kt.Rand(rng, dt, n, 2)
			y := kt.Rand(rng, dt, n, 2)
			xa := kt.Upload(t, d, dt, []int{n}, x)
			ya := kt.Upload(t, d, dt, []int{n}, y)
			require.NoError(t, kernels.Axpy(0, a, xa, ya))
			want := make([]float64, n)
			for i := range want {
				want[i] = float64(a)*x[i] + y[i]
			}
			kt.Check(t, kname("axpy", dt), dt, kt.Download(t, ya), want, "n=", n)
		}
	}
}

func TestElementwiseBadInput(t *testing.T) {
	d := kt.Device(t)
	a := kt.Alloc(t, d, runtime.F32, []int{10})
	b := kt.Alloc(t, d, runtime.F32, []int{11})
	h := kt.Alloc(t, d, runtime.BF16, []int{10})
	require.ErrorContains(t, kernels.Copy(0, a, b), "copy: argument src has 11 elements")
	require.ErrorContains(t, kernels.Copy(0, a, h), "copy: argument src has dtype BF16")
	require.ErrorContains(t, kernels.Axpy(0, 1, b, a), "axpy: argument x has 11 elements")
	require.ErrorContains(t, kernels.Fill(0, kernels.Array{DType: runtime.F32, Shape: []int{3}}, 1), "fill: argument dst has no device")
	f64 := kt.Alloc(t, d, runtime.F64, []int{10})
	require.ErrorContains(t, kernels.Fill(0, f64, 1), "fill: argument dst has dtype F64")
}
