package kernels

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var loraFamily = newFamily("lora",
	"lora_mm_f32_nt_nt", "lora_mm_f32_nn_nt", "lora_mm_f32_nt_nn", "lora_mm_f32_nn_nn",
	"lora_mm_bf16_nt_nt", "lora_mm_bf16_nn_nt", "lora_mm_bf16_nt_nn", "lora_mm_bf16_nn_nn",
	"lora_tn_f32", "lora_tn_bf16", "lora_colsum_f32", "lora_colsum_bf16", "lora_reduce",
	"lora_dropout_f32", "lora_dropout_bf16")

// LoRAMaxRank is the largest adapter rank the LoRA kernels accept.
const LoRAMaxRank = 256

const (
	loraTile = 64 // output tile edge of lora_mm and lora_tn
	// Weight-gradient launches aim for loraTargetBlocks blocks: when the output
	// tiles are fewer, the tokens are split into chunks (multiples of
	// loraChunkAlign) whose partial sums lora_reduce adds in order. The split
	// depends on the shapes only, so results do not depend on the device.
	loraTargetBlocks = 512
	loraChunkAlign   = 64
	loraVecThreads   = 256 // lora_colsum, lora_reduce, lora_dropout
	loraMaxBlocks    = 4096
	loraMaxGridY     = 65535
	loraWSAlign      = 256 // byte alignment of each workspace region
)

// Dropout is inverted dropout drawn from Philox-4x32-10, field for field as
// nn.Dropout (which documents the exact mapping): element e is kept iff
// word0(Philox(counter=(e lo, e hi, TensorID, Step), key=Seed))>>8 ≥ ⌈P·2²⁴⌉,
// and kept elements are multiplied by 1/(1−P).
type Dropout struct {
	P        float64
	Seed     uint64
	Step     uint32
	TensorID uint32
}

func (d Dropout) check(kernel string) error {
	if !(d.P >= 0 && d.P < 1) {
		return fmt.Errorf("%s: dropout probability %v outside [0,1)", kernel, d.P)
	}
	return nil
}

// params are the five kernel slots of the dropout: seed, tensor id, step,
// the integer threshold ⌈P·2²⁴⌉ and the f32 scale 1/(1−P), both computed in
// float64 here so every device compares the same integers.
func (d Dropout) params() []uint64 {
	thr := uint32(math.Ceil(d.P * 0x1p24))
	return []uint64{d.Seed, uint64(d.TensorID), uint64(d.Step), uint64(thr), runtime.F32Param(float32(1 / (1 - d.P)))}
}

// LoRALinear is a linear layer with a LoRA adapter on the device:
// y = x·Wᵀ + Bias + Scale·(dropout(x)·Aᵀ)·Bᵀ. All arrays share x's storage
// type (F32 or BF16). Optional arrays are the zero Array when absent.
type LoRALinear struct {
	// W is [out,in], or [in,out] (GPT-2 Conv1D, read in place) with WInOut.
	W      Array
	WInOut bool
	// Bias is [out] or absent.
	Bias Array
	// A [r,in] and B [out,r], 1 ≤ r ≤ LoRAMaxRank; both absent for a plain
	// linear layer.
	A, B Array
	// Scale multiplies the adapter path.
	Scale float64
	// Dropout applies to the adapter's input only.
	Dropout Dropout
}

// LoRAGrads are the outputs of LoRALinearBackward; absent entries are
// skipped. DX is overwritten; DA, DB, DW and DBias are accumulated (+=), as
// in nn.Backend. DX has x's storage type; the parameter gradients have it
// too or, for BF16 storage, may be F32.
type LoRAGrads struct {
	DX, DA, DB, DW, DBias Array
}

func present(a Array) bool { return a.Dev != nil || a.Ptr != 0 }

// loraDims are the sizes of one call.
type loraDims struct {
	n, in, out, r int
	dt            runtime.DType
	dev           runtime.Device
}

func checkShape(kernel, name string, a Array, want ...int) error {
	ok := len(a.Shape) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = a.Shape[i] == want[i]
	}
	if !ok {
		return fmt.Errorf("%s: argument %s has shape %v, want %v", kernel, name, a.Shape, want)
	}
	return nil
}

// checkArray checks an array's device, dtype (one of dts), element alignment
// and shape.
func checkArray(kernel, name string, dev runtime.Device, a Array, dts []runtime.DType, shape ...int) error {
	if err := checkDev(kernel, dev, arg(name, a)); err != nil {
		return err
	}
	if err := checkDType(kernel, name, a, dts...); err != nil {
		return err
	}
	if int(a.Ptr)%a.DType.Size() != 0 {
		return fmt.Errorf("%s: argument %s is not aligned to its %d-byte elements", kernel, name, a.DType.Size())
	}
	return checkShape(kernel, name, a, shape...)
}

// checkLoRA validates the layer against x [N,in] and returns the sizes.
func checkLoRA(kernel string, l LoRALinear, x Array) (loraDims, error) {
	if err := checkDev(kernel, x.Dev, arg("x", x)); err != nil {
		return loraDims{}, err
	}
	if err := checkDType(kernel, "x", x, runtime.F32, runtime.BF16); err != nil {
		return loraDims{}, err
	}
	if len(x.Shape) != 2 {
		return loraDims{}, fmt.Errorf("%s: argument x has shape %v, want a matrix [N,in]", kernel, x.Shape)
	}
	d := loraDims{n: x.Shape[0], in: x.Shape[1], dt: x.DType, dev: x.Dev}
	same := []runtime.DType{d.dt}
	if err := checkArray(kernel, "x", d.dev, x, same, d.n, d.in); err != nil {
		return d, err
	}
	if len(l.W.Shape) != 2 {
		return d, fmt.Errorf("%s: argument W has shape %v, want a matrix", kernel, l.W.Shape)
	}
	if l.WInOut {
		d.out = l.W.Shape[1]
		if err := checkArray(kernel, "W", d.dev, l.W, same, d.in, d.out); err != nil {
			return d, err
		}
	} else {
		d.out = l.W.Shape[0]
		if err := checkArray(kernel, "W", d.dev, l.W, same, d.out, d.in); err != nil {
			return d, err
		}
	}
	// Every size can be a grid's y extent in 64-row tiles.
	const maxDim = loraMaxGridY * loraTile
	if d.in < 1 || d.out < 1 || d.in > maxDim || d.out > maxDim || d.n > maxDim {
		return d, fmt.Errorf("%s: sizes N=%d in=%d out=%d outside the supported range (1 ≤ in, out ≤ %d, N ≤ %d)",
			kernel, d.n, d.in, d.out, maxDim, maxDim)
	}
	if present(l.Bias) {
		if err := checkArray(kernel, "bias", d.dev, l.Bias, same, d.out); err != nil {
			return d, err
		}
	}
	switch {
	case present(l.B) && !present(l.A):
		return d, fmt.Errorf("%s: B is set but A is absent", kernel)
	case present(l.A):
		if len(l.A.Shape) != 2 {
			return d, fmt.Errorf("%s: argument A has shape %v, want [r,%d]", kernel, l.A.Shape, d.in)
		}
		d.r = l.A.Shape[0]
		if d.r < 1 || d.r > LoRAMaxRank {
			return d, fmt.Errorf("%s: adapter rank %d outside [1, %d]", kernel, d.r, LoRAMaxRank)
		}
		if err := checkArray(kernel, "A", d.dev, l.A, same, d.r, d.in); err != nil {
			return d, err
		}
		if !present(l.B) {
			return d, fmt.Errorf("%s: A is set but B is absent", kernel)
		}
		if err := checkArray(kernel, "B", d.dev, l.B, same, d.out, d.r); err != nil {
			return d, err
		}
		if math.IsNaN(l.Scale) || math.IsInf(l.Scale, 0) {
			return d, fmt.Errorf("%s: scale %v is not finite", kernel, l.Scale)
		}
	}
	return d, l.Dropout.check(kernel)
}

// gradTypes are the dtypes a parameter gradient may have.
func (d loraDims) gradTypes() []runtime.DType {
	if d.dt == runtime.BF16 {
		return []runtime.DType{runtime.BF16, runtime.F32}
	}
	return []runtime.DType{d.dt}
}

// loraRun launches the family's kernels on one device and stream.
type loraRun struct {
	d loraDims
	s runtime.Stream
}

func (r loraRun) launch(name string, grid runtime.Dim3, threads int, params []uint64) error {
	fn, err := function(r.d.dev, loraFamily, name)
	if err != nil {
		return err
	}
	if err := r.d.dev.Launch(fn, grid, runtime.D1(threads), 0, r.s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

func (r loraRun) threads() int {
	if r.d.dt == runtime.BF16 {
		return 128
	}
	return 256
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// mmName is the lora_mm kernel for W's and B2's layouts (nn: [K,N], nt: [N,K]).
func (r loraRun) mmName(wNN, b2NN bool) string {
	l := func(nn bool) string {
		if nn {
			return "nn"
		}
		return "nt"
	}
	return "lora_mm_" + suffix(r.d.dt) + "_" + l(wNN) + "_" + l(b2NN)
}

const (
	dropNone = 0
	dropIn   = 1 // dropout on X's loads
	dropOut  = 2 // mask on the rank-R term
)

// mm runs C[m,n] = X·op(W) + bias + s·D(A2·op(B2)) (A2 = 0: no rank-R term).
func (r loraRun) mm(wNN, b2NN bool, c, x, w, bias, a2, b2 runtime.DevicePtr, m, n, k, rank int, s float32,
	dropMode int, drop Dropout) error {
	params := append([]uint64{
		runtime.PtrParam(c), runtime.PtrParam(x), runtime.PtrParam(w), runtime.PtrParam(bias),
		runtime.PtrParam(a2), runtime.PtrParam(b2),
		runtime.I64Param(m), runtime.I64Param(n), runtime.I64Param(k), runtime.I64Param(rank),
		runtime.F32Param(s), runtime.I64Param(dropMode),
	}, drop.params()...)
	grid := runtime.Dim3{X: ceilDiv(n, loraTile), Y: ceilDiv(m, loraTile), Z: 1}
	return r.launch(r.mmName(wNN, b2NN), grid, r.threads(), params)
}

// tokenChunks splits n tokens for a reduction with `blocks` blocks per
// chunk: one chunk when those already reach loraTargetBlocks, otherwise
// chunks of a multiple of loraChunkAlign tokens.
func tokenChunks(blocks, n int) (chunks, chunkLen int) {
	want := ceilDiv(loraTargetBlocks, blocks)
	if want <= 1 || n <= loraChunkAlign {
		return 1, max(n, 1)
	}
	chunkLen = ceilDiv(ceilDiv(n, want), loraChunkAlign) * loraChunkAlign
	return ceilDiv(n, chunkLen), chunkLen
}

func tnChunks(m, n, tokens int) (chunks, chunkLen int) {
	return tokenChunks(ceilDiv(m, loraTile)*ceilDiv(n, loraTile), tokens)
}

func colsumChunks(n, tokens int) (chunks, chunkLen int) {
	return tokenChunks(ceilDiv(n, loraVecThreads), tokens)
}

// partialElems is the f32 scratch a reduction of len outputs over chunks needs.
func partialElems(chunks, length int) int {
	if chunks == 1 {
		return 0
	}
	return chunks * length
}

// reduce finishes a chunked reduction: dst += alpha·Σ_z partials[z].
func (r loraRun) reduce(dst Array, partials runtime.DevicePtr, length, chunks int, alpha float32) error {
	blocks := min(ceilDiv(length, loraVecThreads), loraMaxBlocks)
	return r.launch("lora_reduce", runtime.D1(blocks), loraVecThreads, []uint64{
		runtime.PtrParam(dst.Ptr), bf16Flag(dst), runtime.PtrParam(partials), runtime.I64Param(length),
		runtime.I64Param(chunks), runtime.F32Param(alpha),
	})
}

func bf16Flag(a Array) uint64 {
	if a.DType == runtime.BF16 {
		return 1
	}
	return 0
}

// tn adds alpha·Σ_t P[t,m]·Q[t,n] to dst [m,n] (P [T,m], Q [T,n]), with
// dropout on Q's loads when dropQ.
func (r loraRun) tn(dst Array, p, q runtime.DevicePtr, m, n int, alpha float32, dropQ bool, drop Dropout,
	partials runtime.DevicePtr) error {
	chunks, chunkLen := tnChunks(m, n, r.d.n)
	part := partials
	if chunks == 1 {
		part = 0
	}
	dq := 0
	if dropQ {
		dq = 1
	}
	params := append([]uint64{
		runtime.PtrParam(part), runtime.PtrParam(dst.Ptr), bf16Flag(dst), runtime.PtrParam(p), runtime.PtrParam(q),
		runtime.I64Param(m), runtime.I64Param(n), runtime.I64Param(r.d.n), runtime.I64Param(chunkLen),
		runtime.F32Param(alpha), runtime.I64Param(dq),
	}, drop.params()...)
	grid := runtime.Dim3{X: ceilDiv(n, loraTile), Y: ceilDiv(m, loraTile), Z: chunks}
	if err := r.launch("lora_tn_"+suffix(r.d.dt), grid, r.threads(), params); err != nil {
		return err
	}
	if chunks == 1 {
		return nil
	}
	return r.reduce(dst, partials, m*n, chunks, alpha)
}

// colsum adds Σ_t dy[t,:] to dst [out].
func (r loraRun) colsum(dst Array, dy runtime.DevicePtr, partials runtime.DevicePtr) error {
	chunks, chunkLen := colsumChunks(r.d.out, r.d.n)
	part := partials
	if chunks == 1 {
		part = 0
	}
	grid := runtime.Dim3{X: ceilDiv(r.d.out, loraVecThreads), Y: chunks, Z: 1}
	if err := r.launch("lora_colsum_"+suffix(r.d.dt), grid, loraVecThreads, []uint64{
		runtime.PtrParam(part), runtime.PtrParam(dst.Ptr), bf16Flag(dst), runtime.PtrParam(dy),
		runtime.I64Param(r.d.n), runtime.I64Param(r.d.out), runtime.I64Param(chunkLen), runtime.F32Param(1),
	}); err != nil {
		return err
	}
	if chunks == 1 {
		return nil
	}
	return r.reduce(dst, partials, r.d.out, chunks, 1)
}

// LoRALinearForward computes y [N,out] = x·Wᵀ + bias + s·(dropout(x)·Aᵀ)·Bᵀ
// for x [N,in] and, when the layer has an adapter, writes xa [N,r] =
// dropout(x)·Aᵀ (required then: backward reads it, and the rank-r term is
// computed from it). Two launches: lora_mm_<t>_nt_nt for xa (dropout applied
// as x is loaded), then lora_mm_<t>_<w>_nt for y, which adds the rank-r term
// to the x·Wᵀ tile in the same kernel.
func LoRALinearForward(s runtime.Stream, l LoRALinear, x, y, xa Array) error {
	const k = "lora forward"
	d, err := checkLoRA(k, l, x)
	if err != nil {
		return err
	}
	same := []runtime.DType{d.dt}
	if err := checkArray(k, "y", d.dev, y, same, d.n, d.out); err != nil {
		return err
	}
	switch {
	case d.r > 0 && !present(xa):
		return fmt.Errorf("%s: argument xa [%d,%d] is required when the layer has an adapter", k, d.n, d.r)
	case d.r > 0:
		if err := checkArray(k, "xa", d.dev, xa, same, d.n, d.r); err != nil {
			return err
		}
	case present(xa):
		return fmt.Errorf("%s: xa is set but the layer has no adapter (A is absent)", k)
	}
	if d.n == 0 {
		return nil
	}
	r := loraRun{d: d, s: s}
	if d.r > 0 {
		mode := dropNone
		if l.Dropout.P > 0 {
			mode = dropIn
		}
		if err := r.mm(false, false, xa.Ptr, x.Ptr, l.A.Ptr, 0, 0, 0, d.n, d.r, d.in, 0, 0, mode, l.Dropout); err != nil {
			return err
		}
	}
	return r.mm(l.WInOut, false, y.Ptr, x.Ptr, l.W.Ptr, l.Bias.Ptr, xa.Ptr, l.B.Ptr, d.n, d.out, d.in, d.r,
		float32(l.Scale), dropNone, l.Dropout)
}

// loraBwdPlan lays out the backward workspace: g = dy·B and the recomputed xa
// (storage type, [N,r] each) and the f32 partial sums of the chunked
// reductions (one region, reused by each reduction in turn).
type loraBwdPlan struct {
	gOff, xaOff, partOff int // byte offsets; -1 when unused
	bytes                int
}

func planLoRABackward(d loraDims, haveXA bool, g LoRAGrads) loraBwdPlan {
	p := loraBwdPlan{gOff: -1, xaOff: -1, partOff: -1}
	region := func(n int) int {
		off := p.bytes
		p.bytes += ceilDiv(n, loraWSAlign) * loraWSAlign
		return off
	}
	nr := d.n * d.r * d.dt.Size()
	if d.r > 0 && (present(g.DX) || present(g.DA)) {
		p.gOff = region(nr)
	}
	if d.r > 0 && present(g.DB) && !haveXA {
		p.xaOff = region(nr)
	}
	part := 0
	tnPart := func(m, n int) {
		c, _ := tnChunks(m, n, d.n)
		part = max(part, partialElems(c, m*n))
	}
	if present(g.DW) {
		tnPart(d.out, d.in)
	}
	if present(g.DBias) {
		c, _ := colsumChunks(d.out, d.n)
		part = max(part, partialElems(c, d.out))
	}
	if d.r > 0 && present(g.DB) {
		tnPart(d.out, d.r)
	}
	if d.r > 0 && present(g.DA) {
		tnPart(d.r, d.in)
	}
	if part > 0 {
		p.partOff = region(4 * part)
	}
	return p
}

// checkBackward validates a backward call and returns its sizes and plan.
func checkBackward(k string, l LoRALinear, x, xa Array, g LoRAGrads) (loraDims, loraBwdPlan, error) {
	d, err := checkLoRA(k, l, x)
	if err != nil {
		return d, loraBwdPlan{}, err
	}
	same := []runtime.DType{d.dt}
	if present(g.DX) {
		if err := checkArray(k, "dx", d.dev, g.DX, same, d.n, d.in); err != nil {
			return d, loraBwdPlan{}, err
		}
	}
	if d.r == 0 && (present(xa) || present(g.DA) || present(g.DB)) {
		return d, loraBwdPlan{}, fmt.Errorf("%s: xa, dA or dB is set but the layer has no adapter (A is absent)", k)
	}
	checks := []struct {
		name  string
		a     Array
		dts   []runtime.DType
		shape []int
	}{
		{"xa", xa, same, []int{d.n, d.r}},
		{"dA", g.DA, d.gradTypes(), []int{d.r, d.in}},
		{"dB", g.DB, d.gradTypes(), []int{d.out, d.r}},
		{"dW", g.DW, d.gradTypes(), l.W.Shape},
		{"dBias", g.DBias, d.gradTypes(), []int{d.out}},
	}
	for _, c := range checks {
		if present(c.a) {
			if err := checkArray(k, c.name, d.dev, c.a, c.dts, c.shape...); err != nil {
				return d, loraBwdPlan{}, err
			}
		}
	}
	return d, planLoRABackward(d, present(xa), g), nil
}

// LoRALinearBackwardWorkspace returns the bytes of workspace
// LoRALinearBackward needs for these arguments (0 when none).
func LoRALinearBackwardWorkspace(l LoRALinear, x, xa Array, g LoRAGrads) (int, error) {
	_, p, err := checkBackward("lora backward", l, x, xa, g)
	return p.bytes, err
}

// LoRALinearBackward computes, from dy [N,out], the gradients in g:
//
//	dx  = dy·W + s·mask⊙((dy·B)·A)        (overwritten)
//	dA += s·(dy·B)ᵀ·dropout(x)             (accumulated)
//	dB += s·dyᵀ·xa
//	dW += dyᵀ·x, or xᵀ·dy for W [in,out]
//	db += Σ_n dy
//
// where mask is the dropout mask scaled by 1/(1−p), regenerated from
// l.Dropout. xa is forward's saved dropout(x)·Aᵀ, or absent to recompute it.
// ws is device scratch of at least LoRALinearBackwardWorkspace bytes,
// 16-byte aligned (absent when that is 0). Kernels: lora_mm_<t>_nn_nn for
// g = dy·B, lora_mm_<t>_{nn,nt}_nn for dx (W [out,in] / [in,out]), lora_tn_<t>
// for dA, dB and dW, lora_colsum_<t> for db, and lora_reduce to add token
// chunks' partial sums in order; no float atomics, so results are
// bit-identical run to run.
func LoRALinearBackward(s runtime.Stream, l LoRALinear, x, xa, dy Array, g LoRAGrads, ws Array) error {
	const k = "lora backward"
	d, p, err := checkBackward(k, l, x, xa, g)
	if err != nil {
		return err
	}
	if err := checkArray(k, "dy", d.dev, dy, []runtime.DType{d.dt}, d.n, d.out); err != nil {
		return err
	}
	if p.bytes > 0 {
		if err := checkDev(k, d.dev, arg("workspace", ws)); err != nil {
			return err
		}
		if ws.Bytes() < p.bytes {
			return fmt.Errorf("%s: workspace has %d bytes, want at least %d (LoRALinearBackwardWorkspace)", k, ws.Bytes(), p.bytes)
		}
		if ws.Ptr%16 != 0 {
			return fmt.Errorf("%s: workspace is not 16-byte aligned", k)
		}
	}
	if d.n == 0 {
		return nil
	}
	at := func(off int) runtime.DevicePtr {
		if off < 0 {
			return 0
		}
		return ws.Ptr.Add(off)
	}
	gBuf, part := at(p.gOff), at(p.partOff)
	r := loraRun{d: d, s: s}
	scale := float32(l.Scale)

	if present(g.DW) {
		if l.WInOut { // dW [in,out] += xᵀ·dy
			err = r.tn(g.DW, x.Ptr, dy.Ptr, d.in, d.out, 1, false, l.Dropout, part)
		} else { // dW [out,in] += dyᵀ·x
			err = r.tn(g.DW, dy.Ptr, x.Ptr, d.out, d.in, 1, false, l.Dropout, part)
		}
		if err != nil {
			return err
		}
	}
	if present(g.DBias) {
		if err := r.colsum(g.DBias, dy.Ptr, part); err != nil {
			return err
		}
	}
	dropX := l.Dropout.P > 0
	if present(g.DB) {
		xaPtr := xa.Ptr
		if !present(xa) {
			xaPtr = at(p.xaOff)
			mode := dropNone
			if dropX {
				mode = dropIn
			}
			if err := r.mm(false, false, xaPtr, x.Ptr, l.A.Ptr, 0, 0, 0, d.n, d.r, d.in, 0, 0, mode, l.Dropout); err != nil {
				return err
			}
		}
		if err := r.tn(g.DB, dy.Ptr, xaPtr, d.out, d.r, scale, false, l.Dropout, part); err != nil {
			return err
		}
	}
	if gBuf != 0 { // g = dy·B [N,r], B [out,r] read as [K,N]
		if err := r.mm(true, true, gBuf, dy.Ptr, l.B.Ptr, 0, 0, 0, d.n, d.r, d.out, 0, 0, dropNone, l.Dropout); err != nil {
			return err
		}
	}
	if present(g.DA) {
		if err := r.tn(g.DA, gBuf, x.Ptr, d.r, d.in, scale, dropX, l.Dropout, part); err != nil {
			return err
		}
	}
	if present(g.DX) {
		// dx = dy·W (W [out,in] read as [K,N]: nn; W [in,out]: nt) + s·mask⊙(g·A), A [r,in] read as [K,N].
		mode := dropNone
		if dropX {
			mode = dropOut
		}
		if err := r.mm(!l.WInOut, true, g.DX.Ptr, dy.Ptr, l.W.Ptr, 0, gBuf, l.A.Ptr, d.n, d.in, d.out, d.r, scale,
			mode, l.Dropout); err != nil {
			return err
		}
	}
	return nil
}

// ApplyDropout writes u = dropout(x) elementwise (F32 or BF16, same shape),
// element i drawing the mask of flat index base+i: the mask the LoRA kernels
// apply, on its own (kernel lora_dropout_<t>).
func ApplyDropout(s runtime.Stream, d Dropout, x, u Array, base uint64) error {
	const k = "lora_dropout"
	if err := checkDev(k, x.Dev, arg("x", x), arg("u", u)); err != nil {
		return err
	}
	if err := checkDType(k, "x", x, runtime.F32, runtime.BF16); err != nil {
		return err
	}
	if err := checkDType(k, "u", u, x.DType); err != nil {
		return err
	}
	if err := checkSameLen(k, arg("x", x), arg("u", u)); err != nil {
		return err
	}
	if err := d.check(k); err != nil {
		return err
	}
	return launch1D(x.Dev, s, loraFamily, "lora_dropout_"+suffix(x.DType), x.Numel(), append([]uint64{
		runtime.PtrParam(u.Ptr), runtime.PtrParam(x.Ptr), runtime.I64Param(x.Numel()), base,
	}, d.params()...)...)
}
