package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/perkgo/perk/kernels"
	kt "github.com/perkgo/perk/kernels/kerneltest"
	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
)

// attnCase is one packed attention problem.
type attnCase struct {
	lens         []int
	hq, hkv, d   int
	causal       bool
	scale        float64 // 0: 1/√D
	qScale       float64 // magnitude of q (sharpens the softmax)
	seed         uint64
	skipBackward bool
}

func (c attnCase) cu() []int32 {
	cu := []int32{0}
	for _, l := range c.lens {
		cu = append(cu, cu[len(cu)-1]+int32(l))
	}
	return cu
}

func (c attnCase) t() int { return int(c.cu()[len(c.lens)]) }

func (c attnCase) realScale() float64 {
	if c.scale == 0 {
		return 1 / math.Sqrt(float64(c.d))
	}
	return c.scale
}

func (c attnCase) String() string {
	return fmt.Sprintf("lens=%v/H=%d:%d/D=%d/causal=%v", c.lens, c.hq, c.hkv, c.d, c.causal)
}

// attnData holds the host values of one case, rounded to the storage type.
type attnData struct {
	q, k, v, do []float64
	o, lse      []float64 // reference forward (o rounded to the storage type, lse to f32)
}

func attnTensor(t *testing.T, vals []float64, shape ...int) *nn.Tensor {
	x, err := nn.FromF64(append([]float64(nil), vals...), shape...)
	require.NoError(t, err)
	return x
}

func attnValues(t *testing.T, x *nn.Tensor) []float64 {
	v, err := x.F64()
	require.NoError(t, err)
	return v
}

// attnRef runs nn/cpu's forward in float64.
func attnRef(t *testing.T, c attnCase, q, k, v []float64) (o, lse []float64) {
	T := c.t()
	ot := attnTensor(t, make([]float64, T*c.hq*c.d), T, c.hq, c.d)
	lt := attnTensor(t, make([]float64, c.hq*T), c.hq, T)
	a := nn.Attention{CuSeqlens: c.cu(), Causal: c.causal, Scale: c.scale}
	require.NoError(t, cpu.New().AttentionForward(a, attnTensor(t, q, T, c.hq, c.d), attnTensor(t, k, T, c.hkv, c.d),
		attnTensor(t, v, T, c.hkv, c.d), ot, lt))
	return attnValues(t, ot), attnValues(t, lt)
}

// attnRefBackward runs nn/cpu's backward in float64.
func attnRefBackward(t *testing.T, c attnCase, x attnData) (dq, dk, dv []float64) {
	T := c.t()
	dqt := attnTensor(t, make([]float64, T*c.hq*c.d), T, c.hq, c.d)
	dkt := attnTensor(t, make([]float64, T*c.hkv*c.d), T, c.hkv, c.d)
	dvt := attnTensor(t, make([]float64, T*c.hkv*c.d), T, c.hkv, c.d)
	a := nn.Attention{CuSeqlens: c.cu(), Causal: c.causal, Scale: c.scale}
	require.NoError(t, cpu.New().AttentionBackward(a, attnTensor(t, x.q, T, c.hq, c.d), attnTensor(t, x.k, T, c.hkv, c.d),
		attnTensor(t, x.v, T, c.hkv, c.d), attnTensor(t, x.o, T, c.hq, c.d), attnTensor(t, x.lse, c.hq, T),
		attnTensor(t, x.do, T, c.hq, c.d), dqt, dkt, dvt))
	return attnValues(t, dqt), attnValues(t, dkt), attnValues(t, dvt)
}

func attnMake(t *testing.T, c attnCase, dt runtime.DType) attnData {
	rng := rand.New(rand.NewPCG(c.seed, uint64(c.d)))
	T := c.t()
	qs := c.qScale
	if qs == 0 {
		qs = 1
	}
	x := attnData{
		q:  kt.Rand(rng, dt, T*c.hq*c.d, qs),
		k:  kt.Rand(rng, dt, T*c.hkv*c.d, 1),
		v:  kt.Rand(rng, dt, T*c.hkv*c.d, 1),
		do: kt.Rand(rng, dt, T*c.hq*c.d, 1),
	}
	o, lse := attnRef(t, c, x.q, x.k, x.v)
	x.o = make([]float64, len(o))
	for i, val := range o {
		x.o[i] = runtime.Round(dt, val)
	}
	x.lse = make([]float64, len(lse))
	for i, val := range lse {
		x.lse[i] = runtime.Round(runtime.F32, val)
	}
	return x
}

// attnScales are per-element error scales for CheckScaled: for each result,
// the sum of the magnitudes of the terms that make it, widened by the size
// of each exponent's argument (its f32 rounding error is relative to it).
type attnScales struct {
	o, lse, dq, dk, dv []float64
}

func attnErrScales(c attnCase, x attnData) attnScales {
	T, D, grp := c.t(), c.d, c.hq/c.hkv
	sc := math.Abs(c.realScale())
	s := attnScales{
		o: make([]float64, T*c.hq*D), lse: make([]float64, c.hq*T),
		dq: make([]float64, T*c.hq*D), dk: make([]float64, T*c.hkv*D), dv: make([]float64, T*c.hkv*D),
	}
	cu := c.cu()
	for seg := range c.lens {
		s0, s1 := int(cu[seg]), int(cu[seg+1])
		for h := 0; h < c.hq; h++ {
			g := h / grp
			for i := s0; i < s1; i++ {
				qrow := x.q[(i*c.hq+h)*D:][:D]
				dorow := x.do[(i*c.hq+h)*D:][:D]
				orow := x.o[(i*c.hq+h)*D:][:D]
				lse := x.lse[h*T+i]
				delta, deltaAbs := 0.0, 0.0
				for d := range D {
					delta += dorow[d] * orow[d]
					deltaAbs += math.Abs(dorow[d] * orow[d])
				}
				end := s1
				if c.causal {
					end = i + 1
				}
				maxA := 0.0
				for j := s0; j < end; j++ {
					krow := x.k[(j*c.hkv+g)*D:][:D]
					vrow := x.v[(j*c.hkv+g)*D:][:D]
					dot, a, dp, b := 0.0, 0.0, 0.0, 0.0
					for d := range D {
						dot += qrow[d] * krow[d]
						a += math.Abs(qrow[d] * krow[d])
						dp += dorow[d] * vrow[d]
						b += math.Abs(dorow[d] * vrow[d])
					}
					a *= sc
					maxA = max(maxA, a)
					p := math.Exp(c.realScale()*dot - lse)
					e := 1 + a + math.Abs(lse)
					w := p * (e*(math.Abs(dp)+math.Abs(delta)) + b + deltaAbs)
					for d := range D {
						s.o[(i*c.hq+h)*D+d] += p * math.Abs(vrow[d]) * e
						s.dv[(j*c.hkv+g)*D+d] += p * math.Abs(dorow[d]) * e
						s.dq[(i*c.hq+h)*D+d] += sc * w * math.Abs(krow[d])
						s.dk[(j*c.hkv+g)*D+d] += sc * w * math.Abs(qrow[d])
					}
				}
				s.lse[h*T+i] = 1 + maxA + math.Abs(lse)
			}
		}
	}
	return s
}

func attnKernel(kind string, dt runtime.DType, d int) string {
	return fmt.Sprintf("%s_%s_d%d", kind, map[runtime.DType]string{runtime.F32: "f32", runtime.BF16: "bf16"}[dt], d)
}

// attnOutputs are the device results of one forward + backward run.
type attnOutputs struct {
	o, lse, dq, dk, dv []float64
}

// attnRun uploads x, runs the forward (and, unless skipped, the backward on
// the reference o and lse) into NaN-poisoned outputs and downloads them.
func attnRun(t *testing.T, c attnCase, dt runtime.DType, x attnData) attnOutputs {
	dev := kt.Device(t)
	T := c.t()
	seg, err := kernels.NewAttnSegments(dev, c.cu())
	require.NoError(t, err)
	t.Cleanup(func() { _ = seg.Free() })
	a := kernels.Attn{Seg: seg, Causal: c.causal, Scale: c.scale}
	qa := kt.Upload(t, dev, dt, []int{T, c.hq, c.d}, x.q)
	ka := kt.Upload(t, dev, dt, []int{T, c.hkv, c.d}, x.k)
	va := kt.Upload(t, dev, dt, []int{T, c.hkv, c.d}, x.v)
	oa := kt.Poisoned(t, dev, dt, []int{T, c.hq, c.d})
	la := kt.Poisoned(t, dev, runtime.F32, []int{c.hq, T})
	require.NoError(t, kernels.AttentionForward(0, a, qa, ka, va, oa, la))
	out := attnOutputs{o: kt.Download(t, oa), lse: kt.Download(t, la)}
	if c.skipBackward {
		return out
	}
	ro := kt.Upload(t, dev, dt, []int{T, c.hq, c.d}, x.o)
	rl := kt.Upload(t, dev, runtime.F32, []int{c.hq, T}, x.lse)
	doa := kt.Upload(t, dev, dt, []int{T, c.hq, c.d}, x.do)
	dqa := kt.Poisoned(t, dev, dt, []int{T, c.hq, c.d})
	dka := kt.Poisoned(t, dev, dt, []int{T, c.hkv, c.d})
	dva := kt.Poisoned(t, dev, dt, []int{T, c.hkv, c.d})
	delta := kt.Poisoned(t, dev, runtime.F32, []int{c.hq, T})
	require.NoError(t, kernels.AttentionBackward(0, a, qa, ka, va, ro, rl, doa, dqa, dka, dva, delta))
	out.dq, out.dk, out.dv = kt.Download(t, dqa), kt.Download(t, dka), kt.Download(t, dva)
	return out
}

// attnLSETol is the tolerance of lse, stored in f32 by both paths; the bf16
// path's scores come from the tensor cores' f32 accumulation.
func attnLSETol(dt runtime.DType) float64 {
	if dt == runtime.BF16 {
		return 1e-4
	}
	return 1e-5
}

func attnCheckCase(t *testing.T, c attnCase, dt runtime.DType) {
	x := attnMake(t, c, dt)
	got := attnRun(t, c, dt, x)
	oRef, lseRef := attnRef(t, c, x.q, x.k, x.v)
	sc := attnErrScales(c, x)
	tol := kt.Tolerance(dt)
	fwd := attnKernel("attn_fwd", dt, c.d)
	kt.CheckScaled(t, fwd, tol, got.o, oRef, sc.o, "o ", c)
	kt.CheckScaled(t, fwd, attnLSETol(dt), got.lse, lseRef, sc.lse, "lse ", c)
	if c.skipBackward {
		return
	}
	dq, dk, dv := attnRefBackward(t, c, x)
	kt.CheckScaled(t, attnKernel("attn_bwd_dq", dt, c.d), tol, got.dq, dq, sc.dq, "dq ", c)
	dkdv := attnKernel("attn_bwd_dkdv", dt, c.d)
	kt.CheckScaled(t, dkdv, tol, got.dk, dk, sc.dk, "dk ", c)
	kt.CheckScaled(t, dkdv, tol, got.dv, dv, sc.dv, "dv ", c)
}

var attnGoldenCases = []attnCase{
	{lens: []int{1, 7, 64, 129}, hq: 4, hkv: 2, d: 64, causal: true, qScale: 3, seed: 1},
	{lens: []int{129, 1, 64, 7}, hq: 2, hkv: 2, d: 32, causal: false, scale: 0.3, seed: 2},
	{lens: []int{5, 19}, hq: 14, hkv: 2, d: 16, causal: true, qScale: 2, seed: 3},
	{lens: []int{5, 19}, hq: 14, hkv: 2, d: 16, causal: false, seed: 4},
	{lens: []int{33, 70}, hq: 2, hkv: 1, d: 128, causal: true, qScale: 2, seed: 5},
	{lens: []int{33, 17}, hq: 4, hkv: 4, d: 128, causal: false, seed: 6},
	{lens: []int{0, 3, 0, 17, 1}, hq: 4, hkv: 1, d: 32, causal: true, seed: 7},
	{lens: []int{90, 41}, hq: 2, hkv: 1, d: 64, causal: false, scale: -0.2, qScale: 2, seed: 8},
}

func TestGoldenAttention(t *testing.T) {
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, c := range attnGoldenCases {
			t.Run(fmt.Sprintf("%s/%s", dt, c), func(t *testing.T) { attnCheckCase(t, c, dt) })
		}
	}
}

// TestGoldenAttentionLongSegment runs one 300-token causal segment.
func TestGoldenAttentionLongSegment(t *testing.T) {
	c := attnCase{lens: []int{300}, hq: 2, hkv: 1, d: 64, causal: true, qScale: 3, seed: 9}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		t.Run(dt.String(), func(t *testing.T) { attnCheckCase(t, c, dt) })
	}
}

func attnBits(vals ...[]float64) []uint64 {
	var out []uint64
	for _, v := range vals {
		for _, x := range v {
			out = append(out, math.Float64bits(x))
		}
	}
	return out
}

func TestAttentionDeterministic(t *testing.T) {
	c := attnCase{lens: []int{70, 3, 100}, hq: 4, hkv: 2, d: 32, causal: true, qScale: 2, seed: 10}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		t.Run(dt.String(), func(t *testing.T) {
			x := attnMake(t, c, dt)
			a := attnRun(t, c, dt, x)
			b := attnRun(t, c, dt, x)
			require.Equal(t, attnBits(a.o, a.lse, a.dq, a.dk, a.dv), attnBits(b.o, b.lse, b.dq, b.dk, b.dv))
		})
	}
}

// TestAttentionNoNaN packs length-1 and empty segments: every query sees only
// itself (or, non-causal, its whole one-token segment), so o = v, lse = the
// one score, dv = do and dq = dk = 0, all finite.
func TestAttentionNoNaN(t *testing.T) {
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for _, causal := range []bool{true, false} {
			c := attnCase{lens: []int{1, 0, 1, 1, 0, 0, 1, 1}, hq: 4, hkv: 2, d: 16, causal: causal, qScale: 4, seed: 11}
			t.Run(fmt.Sprintf("%s/causal=%v", dt, causal), func(t *testing.T) {
				x := attnMake(t, c, dt)
				got := attnRun(t, c, dt, x)
				for name, vals := range map[string][]float64{"o": got.o, "lse": got.lse, "dq": got.dq, "dk": got.dk, "dv": got.dv} {
					for i, v := range vals {
						require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%s[%d] = %v", name, i, v)
					}
				}
				oRef, lseRef := attnRef(t, c, x.q, x.k, x.v)
				sc := attnErrScales(c, x)
				kt.CheckScaled(t, attnKernel("attn_fwd", dt, c.d), kt.Tolerance(dt), got.o, oRef, sc.o)
				kt.CheckScaled(t, attnKernel("attn_fwd", dt, c.d), attnLSETol(dt), got.lse, lseRef, sc.lse)
				dq, dk, dv := attnRefBackward(t, c, x)
				kt.CheckScaled(t, attnKernel("attn_bwd_dq", dt, c.d), kt.Tolerance(dt), got.dq, dq, sc.dq)
				kt.CheckScaled(t, attnKernel("attn_bwd_dkdv", dt, c.d), kt.Tolerance(dt), got.dk, dk, sc.dk)
				kt.CheckScaled(t, attnKernel("attn_bwd_dkdv", dt, c.d), kt.Tolerance(dt), got.dv, dv, sc.dv)
			})
		}
	}
}

// TestGoldenAttentionDecode checks the KV-cache decode kernel against the
// rows of a causal one-segment forward over each sequence's cache.
func TestGoldenAttentionDecode(t *testing.T) {
	dev := kt.Device(t)
	type decCase struct {
		b, n, hq, hkv, d, capacity int
		lens                       []int
	}
	cases := []decCase{
		{b: 2, n: 1, hq: 4, hkv: 2, d: 64, capacity: 40, lens: []int{17, 40}},
		{b: 3, n: 3, hq: 14, hkv: 2, d: 16, capacity: 33, lens: []int{3, 9, 33}},
		{b: 1, n: 2, hq: 2, hkv: 1, d: 128, capacity: 300, lens: []int{259}},
		{b: 2, n: 1, hq: 2, hkv: 2, d: 32, capacity: 8, lens: []int{1, 8}},
	}
	for _, dt := range []runtime.DType{runtime.F32, runtime.BF16} {
		for ci, dc := range cases {
			t.Run(fmt.Sprintf("%s/%+v", dt, dc), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(ci), 77))
				qv := kt.Rand(rng, dt, dc.b*dc.n*dc.hq*dc.d, 2)
				kv := kt.Rand(rng, dt, dc.b*dc.capacity*dc.hkv*dc.d, 1)
				vv := kt.Rand(rng, dt, dc.b*dc.capacity*dc.hkv*dc.d, 1)
				lens := make([]float64, dc.b)
				for i, l := range dc.lens {
					lens[i] = float64(l)
				}
				qa := kt.Upload(t, dev, dt, []int{dc.b, dc.n, dc.hq, dc.d}, qv)
				ka := kt.Upload(t, dev, dt, []int{dc.b, dc.capacity, dc.hkv, dc.d}, kv)
				va := kt.Upload(t, dev, dt, []int{dc.b, dc.capacity, dc.hkv, dc.d}, vv)
				la := kt.Upload(t, dev, runtime.I32, []int{dc.b}, lens)
				oa := kt.Poisoned(t, dev, dt, []int{dc.b, dc.n, dc.hq, dc.d})
				require.NoError(t, kernels.AttentionDecode(0, qa, ka, va, la, oa, 0))
				got := kt.Download(t, oa)
				rowQ := dc.hq * dc.d
				rowK := dc.hkv * dc.d
				for b, L := range dc.lens {
					// The equivalent packed call: one causal segment of L
					// tokens whose last N queries are the new ones.
					c := attnCase{lens: []int{L}, hq: dc.hq, hkv: dc.hkv, d: dc.d, causal: true}
					x := attnData{q: kt.Rand(rng, dt, L*rowQ, 2)}
					copy(x.q[(L-dc.n)*rowQ:], qv[b*dc.n*rowQ:(b+1)*dc.n*rowQ])
					x.k = kv[b*dc.capacity*rowK:][:L*rowK]
					x.v = vv[b*dc.capacity*rowK:][:L*rowK]
					x.o, x.lse = attnRef(t, c, x.q, x.k, x.v)
					x.do = make([]float64, len(x.q))
					sc := attnErrScales(c, x)
					from := (L - dc.n) * rowQ
					kt.CheckScaled(t, "attn_decode_"+map[runtime.DType]string{runtime.F32: "f32", runtime.BF16: "bf16"}[dt],
						kt.Tolerance(dt), got[b*dc.n*rowQ:(b+1)*dc.n*rowQ], x.o[from:], sc.o[from:], "sequence ", b)
				}
			})
		}
	}
	t.Run("bad length gives NaN", func(t *testing.T) {
		qa := kt.Upload(t, dev, runtime.F32, []int{2, 2, 1, 16}, make([]float64, 64))
		ka := kt.Upload(t, dev, runtime.F32, []int{2, 4, 1, 16}, make([]float64, 128))
		la := kt.Upload(t, dev, runtime.I32, []int{2}, []float64{1, 4}) // 1 < N = 2
		oa := kt.Poisoned(t, dev, runtime.F32, []int{2, 2, 1, 16})
		require.NoError(t, kernels.AttentionDecode(0, qa, ka, ka, la, oa, 0))
		got := kt.Download(t, oa)
		for i, v := range got {
			require.Equal(t, i < 32, math.IsNaN(v), "element %d = %v", i, v)
		}
	})
}

func TestAttentionBadInput(t *testing.T) {
	dev := kt.Device(t)
	_, err := kernels.NewAttnSegments(dev, nil)
	require.ErrorContains(t, err, "argument cu_seqlens is empty")
	_, err = kernels.NewAttnSegments(dev, []int32{1, 4})
	require.ErrorContains(t, err, "argument cu_seqlens starts at 1, want 0")
	_, err = kernels.NewAttnSegments(dev, []int32{0, 5, 3, 8})
	require.ErrorContains(t, err, "argument cu_seqlens decreases at index 2")

	seg, err := kernels.NewAttnSegments(dev, []int32{0, 3, 8})
	require.NoError(t, err)
	defer func() { _ = seg.Free() }()
	a := kernels.Attn{Seg: seg, Causal: true}
	f32 := func(shape ...int) kernels.Array { return kt.Alloc(t, dev, runtime.F32, shape) }
	bf := func(shape ...int) kernels.Array { return kt.Alloc(t, dev, runtime.BF16, shape) }
	q, k, v, o, lse := f32(8, 4, 16), f32(8, 2, 16), f32(8, 2, 16), f32(8, 4, 16), f32(4, 8)
	require.NoError(t, kernels.AttentionForward(0, a, q, k, v, o, lse))

	fwd := func(a kernels.Attn, q, k, v, o, lse kernels.Array) error {
		return kernels.AttentionForward(0, a, q, k, v, o, lse)
	}
	require.ErrorContains(t, fwd(a, f32(9, 4, 16), k, v, o, lse), "attention_fwd: argument q has 9 tokens but cu_seqlens ends at 8")
	require.ErrorContains(t, fwd(a, q, f32(8, 3, 16), f32(8, 3, 16), o, lse), "attention_fwd: argument k has 3 heads; q's 4 heads must be a positive multiple of it")
	require.ErrorContains(t, fwd(a, f32(8, 4, 48), f32(8, 2, 48), f32(8, 2, 48), f32(8, 4, 48), lse), "attention_fwd: argument q has head dim 48")
	require.ErrorContains(t, fwd(a, q, bf(8, 2, 16), v, o, lse), "attention_fwd: argument k has dtype BF16")
	require.ErrorContains(t, fwd(a, q, k, f32(8, 2, 32), o, lse), "attention_fwd: argument v has shape [8 2 32], want [8 2 16]")
	require.ErrorContains(t, fwd(a, q, k, v, f32(8, 4, 8), lse), "attention_fwd: argument o has shape")
	require.ErrorContains(t, fwd(a, q, k, v, o, bf(4, 8)), "attention_fwd: argument lse has dtype BF16")
	require.ErrorContains(t, fwd(a, q, k, v, o, f32(8, 4)), "attention_fwd: argument lse has shape [8 4], want [4 8]")
	require.ErrorContains(t, fwd(kernels.Attn{Seg: seg, Scale: math.NaN()}, q, k, v, o, lse), "attention_fwd: scale NaN")
	require.ErrorContains(t, fwd(kernels.Attn{}, q, k, v, o, lse), "attention_fwd: nil segments")
	require.ErrorContains(t, fwd(a, kt.Alloc(t, dev, runtime.F16, []int{8, 4, 16}), k, v, o, lse), "attention_fwd: argument q has dtype F16")
	qb := bf(8, 4, 16)
	qb.Ptr = qb.Ptr.Add(2)
	require.ErrorContains(t, fwd(a, qb, bf(8, 2, 16), bf(8, 2, 16), bf(8, 4, 16), lse), "attention_fwd: argument q is not 16-byte aligned")

	dq, dk, dv, delta := f32(8, 4, 16), f32(8, 2, 16), f32(8, 2, 16), f32(4, 8)
	require.NoError(t, kernels.AttentionBackward(0, a, q, k, v, o, lse, o, dq, dk, dv, delta))
	require.ErrorContains(t, kernels.AttentionBackward(0, a, q, k, v, o, lse, o, dq, dk, dv, f32(8, 4)), "attention_bwd: argument delta has shape [8 4], want [4 8]")
	require.ErrorContains(t, kernels.AttentionBackward(0, a, q, k, v, o, lse, o, dq, f32(8, 4, 16), dv, delta), "attention_bwd: argument dk has shape [8 4 16], want [8 2 16]")
	require.ErrorContains(t, kernels.AttentionBackward(0, a, q, k, v, o, lse, bf(8, 4, 16), dq, dk, dv, delta), "attention_bwd: argument do has dtype BF16")

	// Only empty segments: nothing to launch, no error.
	empty, err := kernels.NewAttnSegments(dev, []int32{0, 0, 0})
	require.NoError(t, err)
	defer func() { _ = empty.Free() }()
	ea := kernels.Attn{Seg: empty, Causal: true}
	q0, k0 := f32(0, 4, 16), f32(0, 2, 16)
	require.NoError(t, fwd(ea, q0, k0, k0, q0, f32(4, 0)))
	require.NoError(t, kernels.AttentionBackward(0, ea, q0, k0, k0, q0, f32(4, 0), q0, f32(0, 4, 16), f32(0, 2, 16), f32(0, 2, 16), f32(4, 0)))

	freed, err := kernels.NewAttnSegments(dev, []int32{0, 8})
	require.NoError(t, err)
	require.NoError(t, freed.Free())
	require.ErrorContains(t, fwd(kernels.Attn{Seg: freed}, q, k, v, o, lse), "already freed")

	dq4, dk4, lens := f32(2, 1, 4, 16), f32(2, 6, 2, 16), kt.Upload(t, dev, runtime.I32, []int{2}, []float64{1, 6})
	require.NoError(t, kernels.AttentionDecode(0, dq4, dk4, dk4, lens, f32(2, 1, 4, 16), 0))
	require.ErrorContains(t, kernels.AttentionDecode(0, dq4, dk4, dk4, f32(2), f32(2, 1, 4, 16), 0), "attention_decode: argument lens has dtype F32")
	require.ErrorContains(t, kernels.AttentionDecode(0, f32(2, 7, 4, 16), dk4, dk4, lens, f32(2, 7, 4, 16), 0), "attention_decode: argument k has capacity 6, less than the 7 new tokens")
	require.ErrorContains(t, kernels.AttentionDecode(0, f32(2, 1, 4, 24), f32(2, 6, 2, 24), f32(2, 6, 2, 24), lens, f32(2, 1, 4, 24), 0), "attention_decode: argument q has head dim 24")
	require.ErrorContains(t, kernels.AttentionDecode(0, dq4, f32(2, 6, 3, 16), f32(2, 6, 3, 16), lens, f32(2, 1, 4, 16), 0), "attention_decode: argument k has 3 heads")
	require.ErrorContains(t, kernels.AttentionDecode(0, dq4, dk4, dk4, lens, f32(2, 1, 4, 8), 0), "attention_decode: argument o has shape")
}
