package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// ropeTolF32 is the error bound of the f32 kernels, relative to the norm r
// of each rotated pair (x[i], x[i+D/2]), for positions up to maxPos:
//   - the angle a = pos·f is the f32 product of pos (exact) and f = inv_freq
//     rounded to f32, two roundings of ≤ 2⁻²⁴ relative each, so
//     |Δa| ≤ 2·2⁻²⁴·pos·f ≤ pos·2⁻²³ (f ≤ 1; f = 1 for i = 0 is exact);
//   - cos/sin of the f32 angle err by ≤ 2 ulp (≤ 2⁻²³ absolute) each, which
//     multiply |x0| and |x1| ≤ r;
//   - each output takes one product rounding and one FMA rounding, ≤ 2·2⁻²⁴·r.
//
// A component therefore errs by at most r·(pos·2⁻²³ + 2·2⁻²³ + 2⁻²³) =
// r·(pos+3)·2⁻²³: below the f32 golden tolerance 1e-5 for pos ≤ 80, and
// ≈ 3.8e-3 at pos ≈ 32000, where nn/cpu's float64 angles and the fp32 angles
// (as HF computes them) differ by that much.
func ropeTolF32(maxPos int) float64 { return float64(maxPos+3) * 0x1p-23 }

// ropeMaxPos is the largest position of the main golden test (segments of
// at most 81 tokens), so that ropeTolF32 stays ≤ 1e-5.
const ropeMaxPos = 80

// ropePositions returns positions for t tokens packed in segments of random
// lengths up to maxLen, each restarting at 0.
func ropePositions(rng *rand.Rand, t, maxLen int) []float64 {
	out := make([]float64, 0, t)
	for len(out) < t {
		l := 1 + rng.IntN(maxLen)
		for p := 0; p < l && len(out) < t; p++ {
			out = append(out, float64(p))
		}
	}
	return out
}

// ropePairScale is the norm of the pair each element belongs to: a rotation
// keeps it, and the angle error moves a component by up to it times the
// angle error.
func ropePairScale(x []float64, d int) []float64 {
	out := make([]float64, len(x))
	half := d / 2
	for off := 0; off < len(x); off += d {
		for i := range half {
			r := math.Hypot(x[off+i], x[off+i+half])
			out[off+i], out[off+i+half] = r, r
		}
	}
	return out
}

func int32s(p []float64) []int32 {
	out := make([]int32, len(p))
	for i, v := range p {
		out[i] = int32(v)
	}
	return out
}

func TestGoldenRoPE(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(41, 42))
	require.LessOrEqual(t, ropeTolF32(ropeMaxPos), 1e-5)
	shapes := [][3]int{{1, 1, 2}, {5, 3, 8}, {33, 2, 66}, {130, 2, 64}, {37, 14, 128}}
	for _, dt := range storage {
		for si, sh := range shapes {
			tt, h, dd := sh[0], sh[1], sh[2]
			theta := []float64{1e6, 1e4}[si%2]
			name := fmt.Sprintf("%s T=%d H=%d D=%d theta=%g", dt, tt, h, dd, theta)
			pos := ropePositions(rng, tt, ropeMaxPos+1)
			x, dy := kt.Rand(rng, dt, tt*h*dd, 1), kt.Rand(rng, dt, tt*h*dd, 1)
			freq, err := kernels.NewRoPEInvFreq(d, theta, dd)
			require.NoError(t, err)
			t.Cleanup(func() { _ = kernels.FreeArray(freq) })
			pa := kt.Upload(t, d, runtime.I32, []int{tt}, pos)
			tol := kt.Tolerance(dt)
			if dt == runtime.F32 {
				tol = ropeTolF32(ropeMaxPos)
			}
			shape := []int{tt, h, dd}

			xa := kt.Upload(t, d, dt, shape, x)
			ya := kt.Poisoned(t, d, dt, shape)
			require.NoError(t, kernels.RoPEForward(0, xa, pa, freq, ya), name)
			y := f64T(t, make([]float64, len(x)), shape...)
			require.NoError(t, be.RoPEForward(f64T(t, x, shape...), int32s(pos), theta, y))
			kt.CheckScaled(t, kname("rope_fwd", dt), tol, kt.Download(t, ya), f64V(t, y), floored(dt, ropePairScale(x, dd)), name)

			// Backward in place over dy.
			dya := kt.Upload(t, d, dt, shape, dy)
			require.NoError(t, kernels.RoPEBackward(0, dya, pa, freq, dya), name)
			dx := f64T(t, make([]float64, len(x)), shape...)
			require.NoError(t, be.RoPEBackward(f64T(t, dy, shape...), int32s(pos), theta, dx))
			kt.CheckScaled(t, kname("rope_bwd", dt), tol, kt.Download(t, dya), f64V(t, dx), floored(dt, ropePairScale(dy, dd)), name)

			// Forward in place over x.
			require.NoError(t, kernels.RoPEForward(0, xa, pa, freq, xa), name)
			kt.CheckScaled(t, kname("rope_fwd", dt), tol, kt.Download(t, xa), f64V(t, y), floored(dt, ropePairScale(x, dd)), name, " in place")
		}
	}
}

// TestRoPELongPositions documents the error of fp32 angles at positions
// near 32000 (Qwen2's context length) against nn/cpu's float64 angles: it is
// bounded by ropeTolF32(maxPos) ≈ maxPos·2⁻²³ (see there), three orders above
// the f32 golden tolerance, and it is what HF's fp32 computation also has.
// The error is measured and logged here rather than recorded for the golden
// report, whose per-kernel tolerance column belongs to the main test.
func TestRoPELongPositions(t *testing.T) {
	d := kt.Device(t)
	be := cpu.New()
	rng := rand.New(rand.NewPCG(43, 44))
	const tt, h, dd, theta = 64, 2, 64, 1e6
	pos := make([]float64, tt)
	for i := range pos {
		pos[i] = float64(31968 + i)
	}
	maxPos := int(pos[tt-1])
	freq, err := kernels.NewRoPEInvFreq(d, theta, dd)
	require.NoError(t, err)
	t.Cleanup(func() { _ = kernels.FreeArray(freq) })
	pa := kt.Upload(t, d, runtime.I32, []int{tt}, pos)
	shape := []int{tt, h, dd}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		x := kt.Rand(rng, dt, tt*h*dd, 1)
		xa := kt.Upload(t, d, dt, shape, x)
		ya := kt.Poisoned(t, d, dt, shape)
		require.NoError(t, kernels.RoPEForward(0, xa, pa, freq, ya))
		y := f64T(t, make([]float64, len(x)), shape...)
		require.NoError(t, be.RoPEForward(f64T(t, x, shape...), int32s(pos), theta, y))
		got, want, scale := kt.Download(t, ya), f64V(t, y), ropePairScale(x, dd)
		worst := 0.0
		for i := range got {
			worst = math.Max(worst, math.Abs(got[i]-want[i])/scale[i])
		}
		tol := ropeTolF32(maxPos)
		if dt != runtime.F32 {
			tol += 0x1p-9 // bf16's output rounding
		}
		t.Logf("%s: positions %d..%d: max error %.3g of the pair norm (bound %.3g)", dt, int(pos[0]), maxPos, worst, tol)
		require.False(t, math.IsNaN(worst))
		require.LessOrEqual(t, worst, tol, "%s", dt)
	}
}

func TestRoPEBadInput(t *testing.T) {
	d := kt.Device(t)
	x, y := kt.Alloc(t, d, runtime.F32, []int{4, 2, 8}), kt.Alloc(t, d, runtime.F32, []int{4, 2, 8})
	pos := kt.Alloc(t, d, runtime.I32, []int{4})
	freq, err := kernels.NewRoPEInvFreq(d, 1e6, 8)
	require.NoError(t, err)
	t.Cleanup(func() { _ = kernels.FreeArray(freq) })
	require.NoError(t, kernels.RoPEForward(0, x, pos, freq, y))
	require.ErrorContains(t, kernels.RoPEForward(0, kt.Alloc(t, d, runtime.F32, []int{4, 2, 7}), pos, freq, y),
		"rope_fwd: argument x has shape [4 2 7], want [T,H,D] with D even")
	require.ErrorContains(t, kernels.RoPEForward(0, kt.Alloc(t, d, runtime.F32, []int{4, 16}), pos, freq, y),
		"rope_fwd: argument x has shape [4 16]")
	require.ErrorContains(t, kernels.RoPEForward(0, x, pos, freq, kt.Alloc(t, d, runtime.F32, []int{4, 1, 16})),
		"rope_fwd: argument y has shape [4 1 16], want [4,2,8]")
	require.ErrorContains(t, kernels.RoPEForward(0, x, kt.Alloc(t, d, runtime.I32, []int{5}), freq, y),
		"rope_fwd: argument positions has shape [5], want [4]")
	require.ErrorContains(t, kernels.RoPEForward(0, x, kt.Alloc(t, d, runtime.F32, []int{4}), freq, y),
		"rope_fwd: argument positions has dtype F32")
	require.ErrorContains(t, kernels.RoPEForward(0, x, pos, kt.Alloc(t, d, runtime.F32, []int{8}), y),
		"rope_fwd: argument invFreq has shape [8], want [4]")
	require.ErrorContains(t, kernels.RoPEBackward(0, x, pos, freq, kt.Alloc(t, d, runtime.BF16, []int{4, 2, 8})),
		"rope_bwd: argument dx has dtype BF16")
	require.ErrorContains(t, kernels.RoPEBackward(0, x, kernels.Array{}, freq, y), "rope_bwd: argument positions has no device")
	_, err = kernels.NewRoPEInvFreq(d, 0, 8)
	require.ErrorContains(t, err, "theta 0 must be finite and positive")
	_, err = kernels.NewRoPEInvFreq(d, 1e4, 7)
	require.ErrorContains(t, err, "head dimension 7 must be even")
}
