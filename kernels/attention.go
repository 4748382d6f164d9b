package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"

	"github.com/perkgo/perk/runtime"
)

var attentionFamily = newFamily("attention", attentionKernels()...)

func attentionKernels() []string {
	var ks []string
	for _, t := range []string{"f32", "bf16"} {
		for _, d := range attnHeadDims {
			for _, k := range []string{"attn_fwd", "attn_bwd_dq", "attn_bwd_dkdv"} {
				ks = append(ks, fmt.Sprintf("%s_%s_d%d", k, t, d))
			}
		}
	}
	return append(ks, "attn_decode_f32", "attn_decode_bf16")
}

// attnHeadDims are the head dimensions the attention kernels are built for.
var attnHeadDims = []int{16, 32, 64, 128}

const (
	attnThreads  = 128
	attnMaxGridY = 65535
)

// attnTile is the tile size (rows per block) of a kernel: 64 on the bf16
// tensor-core path; 32 (D ≤ 64) or 16 (D = 128) on the f32 SIMT path.
func attnTile(dt runtime.DType, d int) int {
	if dt == runtime.BF16 {
		return 64
	}
	if d <= 64 {
		return 32
	}
	return 16
}

// attnTileSizes are the tile sizes AttnSegments prepares work lists for.
var attnTileSizes = []int{16, 32, 64}

// AttnSegments is the packed-segment layout of one attention batch on a
// device: the S+1 boundaries cu_seqlens (0 = c[0] ≤ c[1] ≤ … ≤ c[S] = T,
// empty segments allowed), validated on the host and uploaded together with
// the per-tile work lists the kernels walk. Build it once per batch (it
// serves every layer, forward and backward) and Free it afterwards.
type AttnSegments struct {
	Dev    runtime.Device
	T      int // total tokens
	S      int // segments
	MaxLen int // longest segment

	cu   []int32
	buf  runtime.DevicePtr
	tabs map[int]attnTable
}

// attnTable locates the work list for one tile size in the device buffer:
// n pairs (first row, segment) starting at int32 element off.
type attnTable struct{ off, n int }

// NewAttnSegments validates cuSeqlens and uploads it with its work lists to dev.
func NewAttnSegments(dev runtime.Device, cuSeqlens []int32) (*AttnSegments, error) {
	const k = "attention segments"
	if dev == nil {
		return nil, fmt.Errorf("%s: nil device", k)
	}
	if len(cuSeqlens) == 0 {
		return nil, fmt.Errorf("%s: argument cu_seqlens is empty, want S+1 boundaries starting at 0", k)
	}
	if cuSeqlens[0] != 0 {
		return nil, fmt.Errorf("%s: argument cu_seqlens starts at %d, want 0", k, cuSeqlens[0])
	}
	seg := &AttnSegments{Dev: dev, S: len(cuSeqlens) - 1, cu: append([]int32(nil), cuSeqlens...), tabs: map[int]attnTable{}}
	for i := 1; i < len(cuSeqlens); i++ {
		if cuSeqlens[i] < cuSeqlens[i-1] {
			return nil, fmt.Errorf("%s: argument cu_seqlens decreases at index %d (%d < %d)", k, i, cuSeqlens[i], cuSeqlens[i-1])
		}
		seg.MaxLen = max(seg.MaxLen, int(cuSeqlens[i]-cuSeqlens[i-1]))
	}
	seg.T = int(cuSeqlens[seg.S])
	// Segments longest first, so the blocks with the most work start first.
	order := make([]int, seg.S)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return cuSeqlens[order[a]+1]-cuSeqlens[order[a]] > cuSeqlens[order[b]+1]-cuSeqlens[order[b]]
	})
	words := append([]int32(nil), cuSeqlens...)
	for _, size := range attnTileSizes {
		tab := attnTable{off: len(words)}
		for _, s := range order {
			for r := cuSeqlens[s]; r < cuSeqlens[s+1]; r += int32(size) {
				words = append(words, r, int32(s))
				tab.n++
			}
		}
		seg.tabs[size] = tab
	}
	if tiles := seg.tabs[attnTileSizes[0]].n; tiles > math.MaxInt32/2 {
		return nil, fmt.Errorf("%s: %d tiles exceed the grid limit", k, tiles)
	}
	raw := make([]byte, 4*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(w))
	}
	p, err := dev.Alloc(len(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	if err := dev.MemcpyHtoD(p, raw, 0); err != nil {
		_ = dev.Free(p)
		return nil, fmt.Errorf("%s: %w", k, err)
	}
	seg.buf = p
	return seg, nil
}

// CuSeqlens returns a copy of the segment boundaries.
func (s *AttnSegments) CuSeqlens() []int32 { return append([]int32(nil), s.cu...) }

// Free releases the device copy; call it once the work that uses it is done.
func (s *AttnSegments) Free() error {
	if s == nil || s.buf == 0 {
		return nil
	}
	err := s.Dev.Free(s.buf)
	s.buf = 0
	return err
}

// Attn describes one attention call over packed segments.
type Attn struct {
	// Seg holds the segment boundaries; tokens attend only within their
	// own segment.
	Seg *AttnSegments
	// Causal restricts query t to keys ≤ t.
	Causal bool
	// Scale multiplies q·k; 0 means 1/√D.
	Scale float64
}

// attnDims are the checked sizes of one call.
type attnDims struct {
	t, hq, hkv, d int
	dt            runtime.DType
	scale         float32
}

func (a Attn) check(kernel string, q, k, v Array) (attnDims, error) {
	var dm attnDims
	if a.Seg == nil {
		return dm, fmt.Errorf("%s: nil segments (cu_seqlens)", kernel)
	}
	if a.Seg.buf == 0 {
		return dm, fmt.Errorf("%s: segments (cu_seqlens) already freed", kernel)
	}
	if err := checkDev(kernel, a.Seg.Dev, arg("q", q), arg("k", k), arg("v", v)); err != nil {
		return dm, err
	}
	if err := checkDType(kernel, "q", q, runtime.F32, runtime.BF16); err != nil {
		return dm, err
	}
	for _, x := range []namedArray{arg("k", k), arg("v", v)} {
		if err := checkDType(kernel, x.name, x.a, q.DType); err != nil {
			return dm, err
		}
	}
	if len(q.Shape) != 3 {
		return dm, fmt.Errorf("%s: argument q has shape %v, want [T,Hq,D]", kernel, q.Shape)
	}
	dm = attnDims{t: q.Shape[0], hq: q.Shape[1], d: q.Shape[2], dt: q.DType}
	if dm.t != a.Seg.T {
		return dm, fmt.Errorf("%s: argument q has %d tokens but cu_seqlens ends at %d", kernel, dm.t, a.Seg.T)
	}
	if !attnHeadDimOK(dm.d) {
		return dm, fmt.Errorf("%s: argument q has head dim %d; supported head dims are %v", kernel, dm.d, attnHeadDims)
	}
	if dm.hq < 1 || dm.hq > attnMaxGridY {
		return dm, fmt.Errorf("%s: argument q has %d heads, want 1..%d", kernel, dm.hq, attnMaxGridY)
	}
	if len(k.Shape) != 3 || k.Shape[0] != dm.t || k.Shape[2] != dm.d {
		return dm, fmt.Errorf("%s: argument k has shape %v, want [%d,Hkv,%d]", kernel, k.Shape, dm.t, dm.d)
	}
	dm.hkv = k.Shape[1]
	if dm.hkv < 1 || dm.hq%dm.hkv != 0 {
		return dm, fmt.Errorf("%s: argument k has %d heads; q's %d heads must be a positive multiple of it", kernel, dm.hkv, dm.hq)
	}
	if err := attnCheckShape(kernel, "v", v, dm.t, dm.hkv, dm.d); err != nil {
		return dm, err
	}
	sc := a.Scale
	if sc == 0 {
		sc = 1 / math.Sqrt(float64(dm.d))
	}
	if math.IsNaN(sc) || math.IsInf(sc, 0) || math.Abs(sc) > math.MaxFloat32 {
		return dm, fmt.Errorf("%s: scale %v is not a finite float32", kernel, a.Scale)
	}
	dm.scale = float32(sc)
	return dm, nil
}

func attnHeadDimOK(d int) bool {
	for _, x := range attnHeadDims {
		if d == x {
			return true
		}
	}
	return false
}

// attnCheckShape requires a to have exactly shape want.
func attnCheckShape(kernel, name string, a Array, want ...int) error {
	ok := len(a.Shape) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = a.Shape[i] == want[i]
	}
	if !ok {
		return fmt.Errorf("%s: argument %s has shape %v, want %v", kernel, name, a.Shape, want)
	}
	return nil
}

// attnCheckAligned16 requires the 16-byte alignment the bf16 kernels' vector
// loads need.
func attnCheckAligned16(kernel string, args ...namedArray) error {
	for _, x := range args {
		if x.a.Ptr%16 != 0 {
			return fmt.Errorf("%s: argument %s is not 16-byte aligned (address %#x)", kernel, x.name, uint64(x.a.Ptr))
		}
	}
	return nil
}

// launch runs kernel name of the family over the work list of its tile size.
func (a Attn) launch(s runtime.Stream, dm attnDims, kind string, heads int, params ...uint64) error {
	name := fmt.Sprintf("%s_%s_d%d", kind, suffix(dm.dt), dm.d)
	fn, err := function(a.Seg.Dev, attentionFamily, name)
	if err != nil {
		return err
	}
	tab := a.Seg.tabs[attnTile(dm.dt, dm.d)]
	if tab.n == 0 {
		return nil
	}
	causal := 0
	if a.Causal {
		causal = 1
	}
	params = append(params, runtime.PtrParam(a.Seg.buf), runtime.PtrParam(a.Seg.buf.Add(4*tab.off)),
		runtime.I64Param(dm.t), runtime.I64Param(dm.hq), runtime.I64Param(dm.hkv), runtime.I64Param(causal),
		runtime.F32Param(dm.scale))
	if err := a.Seg.Dev.Launch(fn, runtime.Dim3{X: tab.n, Y: heads, Z: 1}, runtime.D1(attnThreads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// AttentionForward computes softmax attention over the packed segments of
// a.Seg, as nn.Backend.AttentionForward: q [T,Hq,D], k and v [T,Hkv,D] (Hq a
// multiple of Hkv; query head h uses kv head h/(Hq/Hkv)), all f32 or all
// bf16, D ∈ {16, 32, 64, 128}; o [T,Hq,D] (the dtype of q) receives the
// output and lse (f32 [Hq,T], for the backward) the natural-log log-sum-exp
// of each query's scaled scores. bf16 runs on the tensor cores and needs
// 16-byte aligned arrays; f32 uses FP32 FMA. Outputs must not overlap inputs.
func AttentionForward(s runtime.Stream, a Attn, q, k, v, o, lse Array) error {
	const kn = "attention_fwd"
	dm, err := a.check(kn, q, k, v)
	if err != nil {
		return err
	}
	if err := checkDev(kn, a.Seg.Dev, arg("o", o), arg("lse", lse)); err != nil {
		return err
	}
	if err := checkDType(kn, "o", o, dm.dt); err != nil {
		return err
	}
	if err := checkDType(kn, "lse", lse, runtime.F32); err != nil {
		return err
	}
	if err := attnCheckShape(kn, "o", o, dm.t, dm.hq, dm.d); err != nil {
		return err
	}
	if err := attnCheckShape(kn, "lse", lse, dm.hq, dm.t); err != nil {
		return err
	}
	if dm.dt == runtime.BF16 {
		if err := attnCheckAligned16(kn, arg("q", q), arg("k", k), arg("v", v), arg("o", o)); err != nil {
			return err
		}
	}
	return a.launch(s, dm, "attn_fwd", dm.hq, runtime.PtrParam(q.Ptr), runtime.PtrParam(k.Ptr), runtime.PtrParam(v.Ptr),
		runtime.PtrParam(o.Ptr), runtime.PtrParam(lse.Ptr))
}

// AttentionBackward computes dq [T,Hq,D], dk and dv [T,Hkv,D] (the dtype of
// q) from do [T,Hq,D], as nn.Backend.AttentionBackward, recomputing the
// probabilities from q, k and forward's lse (f32 [Hq,T]) and o. delta (f32
// [Hq,T]) is scratch that receives rowsum(do∘o). Two launches: a query-major
// pass for dq (which writes delta) and a key-major pass for dk and dv that
// sums the query heads of each kv head in a fixed order; no atomics, so
// reruns give identical bits. Outputs must not overlap inputs.
func AttentionBackward(s runtime.Stream, a Attn, q, k, v, o, lse, do, dq, dk, dv, delta Array) error {
	const kn = "attention_bwd"
	dm, err := a.check(kn, q, k, v)
	if err != nil {
		return err
	}
	if err := checkDev(kn, a.Seg.Dev, arg("o", o), arg("lse", lse), arg("do", do), arg("dq", dq), arg("dk", dk),
		arg("dv", dv), arg("delta", delta)); err != nil {
		return err
	}
	for _, x := range []namedArray{arg("o", o), arg("do", do), arg("dq", dq), arg("dk", dk), arg("dv", dv)} {
		if err := checkDType(kn, x.name, x.a, dm.dt); err != nil {
			return err
		}
	}
	for _, x := range []namedArray{arg("lse", lse), arg("delta", delta)} {
		if err := checkDType(kn, x.name, x.a, runtime.F32); err != nil {
			return err
		}
		if err := attnCheckShape(kn, x.name, x.a, dm.hq, dm.t); err != nil {
			return err
		}
	}
	for _, x := range []namedArray{arg("o", o), arg("do", do), arg("dq", dq)} {
		if err := attnCheckShape(kn, x.name, x.a, dm.t, dm.hq, dm.d); err != nil {
			return err
		}
	}
	for _, x := range []namedArray{arg("dk", dk), arg("dv", dv)} {
		if err := attnCheckShape(kn, x.name, x.a, dm.t, dm.hkv, dm.d); err != nil {
			return err
		}
	}
	if dm.dt == runtime.BF16 {
		if err := attnCheckAligned16(kn, arg("q", q), arg("k", k), arg("v", v), arg("o", o), arg("do", do), arg("dq", dq),
			arg("dk", dk), arg("dv", dv)); err != nil {
			return err
		}
	}
	if err := a.launch(s, dm, "attn_bwd_dq", dm.hq, runtime.PtrParam(q.Ptr), runtime.PtrParam(k.Ptr), runtime.PtrParam(v.Ptr),
		runtime.PtrParam(o.Ptr), runtime.PtrParam(do.Ptr), runtime.PtrParam(lse.Ptr), runtime.PtrParam(delta.Ptr),
		runtime.PtrParam(dq.Ptr)); err != nil {
		return err
	}
	return a.launch(s, dm, "attn_bwd_dkdv", dm.hkv, runtime.PtrParam(q.Ptr), runtime.PtrParam(k.Ptr), runtime.PtrParam(v.Ptr),
		runtime.PtrParam(do.Ptr), runtime.PtrParam(lse.Ptr), runtime.PtrParam(delta.Ptr), runtime.PtrParam(dk.Ptr),
		runtime.PtrParam(dv.Ptr))
}

// AttentionDecode attends the N newest tokens of each of B sequences to
// their KV caches, for generation: q and o [B,N,Hq,D], k and v [B,C,Hkv,D]
// (capacity C; the new tokens' keys and values already appended), lens (I32
// [B], on the device) the number of cache positions filled per sequence.
// Query n of sequence b sits at position lens[b]−N+n and sees positions
// 0..lens[b]−N+n — the rows of a causal one-segment AttentionForward over
// the first lens[b] positions. Storage f32 or bf16 (all alike), D ∈ {16, 32,
// 64, 128}; scale 0 means 1/√D. lens lives on the device so a generation
// loop can advance it without a host round trip; a sequence whose lens[b]
// lies outside [N, C] gets NaN outputs.
func AttentionDecode(s runtime.Stream, q, k, v, lens, o Array, scale float64) error {
	const kn = "attention_decode"
	if err := checkDev(kn, q.Dev, arg("q", q), arg("k", k), arg("v", v), arg("lens", lens), arg("o", o)); err != nil {
		return err
	}
	if err := checkDType(kn, "q", q, runtime.F32, runtime.BF16); err != nil {
		return err
	}
	for _, x := range []namedArray{arg("k", k), arg("v", v), arg("o", o)} {
		if err := checkDType(kn, x.name, x.a, q.DType); err != nil {
			return err
		}
	}
	if err := checkDType(kn, "lens", lens, runtime.I32); err != nil {
		return err
	}
	if len(q.Shape) != 4 {
		return fmt.Errorf("%s: argument q has shape %v, want [B,N,Hq,D]", kn, q.Shape)
	}
	b, n, hq, d := q.Shape[0], q.Shape[1], q.Shape[2], q.Shape[3]
	if !attnHeadDimOK(d) {
		return fmt.Errorf("%s: argument q has head dim %d; supported head dims are %v", kn, d, attnHeadDims)
	}
	if b < 0 || b > attnMaxGridY || n < 0 || n > attnMaxGridY || hq < 1 {
		return fmt.Errorf("%s: argument q has shape %v; B and N must be in [0, %d], Hq ≥ 1", kn, q.Shape, attnMaxGridY)
	}
	if len(k.Shape) != 4 || k.Shape[0] != b || k.Shape[3] != d {
		return fmt.Errorf("%s: argument k has shape %v, want [%d,C,Hkv,%d]", kn, k.Shape, b, d)
	}
	c, hkv := k.Shape[1], k.Shape[2]
	if hkv < 1 || hq%hkv != 0 {
		return fmt.Errorf("%s: argument k has %d heads; q's %d heads must be a positive multiple of it", kn, hkv, hq)
	}
	if c < n {
		return fmt.Errorf("%s: argument k has capacity %d, less than the %d new tokens", kn, c, n)
	}
	if err := attnCheckShape(kn, "v", v, b, c, hkv, d); err != nil {
		return err
	}
	if err := attnCheckShape(kn, "lens", lens, b); err != nil {
		return err
	}
	if err := attnCheckShape(kn, "o", o, b, n, hq, d); err != nil {
		return err
	}
	sc := scale
	if sc == 0 {
		sc = 1 / math.Sqrt(float64(d))
	}
	if math.IsNaN(sc) || math.IsInf(sc, 0) || math.Abs(sc) > math.MaxFloat32 {
		return fmt.Errorf("%s: scale %v is not a finite float32", kn, scale)
	}
	name := "attn_decode_" + suffix(q.DType)
	fn, err := function(q.Dev, attentionFamily, name)
	if err != nil {
		return err
	}
	if b == 0 || n == 0 {
		return nil
	}
	if err := q.Dev.Launch(fn, runtime.Dim3{X: hq, Y: n, Z: b}, runtime.D1(attnThreads), 0, s, []uint64{
		runtime.PtrParam(q.Ptr), runtime.PtrParam(k.Ptr), runtime.PtrParam(v.Ptr), runtime.PtrParam(lens.Ptr),
		runtime.PtrParam(o.Ptr), runtime.I64Param(n), runtime.I64Param(hq), runtime.I64Param(hkv), runtime.I64Param(d),
		runtime.I64Param(c), runtime.F32Param(float32(sc)),
	}); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}
