package kernels

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var xentFamily = newFamily("xent",
	"xent_check_labels", "xent_combine", "xent_loss", "xent_dw",
	"xent_fwd_f32", "xent_fwd_bf16", "xent_fwd_f16",
	"xent_grad_f32", "xent_grad_bf16", "xent_grad_f16",
	"xent_dh_f32", "xent_dh_bf16", "xent_dh_f16",
	"xent_demb_f32", "xent_demb_bf16", "xent_demb_f16")

const (
	// XentIgnoreIndex is the label that cross-entropy skips (as nn.IgnoreIndex).
	XentIgnoreIndex = -100
	// XentDefaultChunk is the vocabulary chunk used when Xent.Chunk is 0.
	XentDefaultChunk = 2048

	xentTile       = 64
	xentThreads    = 128
	xentRowThreads = 256
	xentMaxGridY   = 65535
	xentAlign      = 64 // scratch regions start on 64-element (256-byte) boundaries
)

// Xent describes one fused LM-head cross-entropy: logits = H·Embᵀ for H
// [N,d] and Emb [V,d], never formed as a whole, and
//
//	loss = Σ_i w_i·CE_i / Norm over the tokens whose label is not
//	XentIgnoreIndex, CE_i = logsumexp_v(logits_i) − logits_{i,label_i}.
type Xent struct {
	// H holds the hidden states [N,d]: F32, BF16 or F16.
	H Array
	// Emb is the LM head (the tied embedding) [V,d] in H's dtype.
	Emb Array
	// Labels holds N target ids, I32, each in [0,V) or XentIgnoreIndex.
	Labels Array
	// Weights is an optional F32 [N] of per-token weights; the zero Array
	// means all ones.
	Weights Array
	// Norm divides the weighted sum (e.g. the number of target tokens); it
	// must be finite and > 0.
	Norm float64
	// Chunk is the number of vocabulary rows per chunk (rounded up to a
	// multiple of 64); 0 means XentDefaultChunk. Results agree across chunk
	// sizes up to rounding; the backward keeps N×Chunk gradient values live.
	Chunk int
}

type xentDims struct {
	dev                 runtime.Device
	dt                  runtime.DType
	n, d, v, chunk, nch int
}

// XentChunk returns the vocabulary chunk the kernels use for v rows and the
// requested chunk (0 = default): a multiple of 64, at most v rounded up to 64.
func XentChunk(v, chunk int) int {
	if chunk <= 0 {
		chunk = XentDefaultChunk
	}
	c := (chunk + xentTile - 1) / xentTile * xentTile
	return max(xentTile, min(c, (v+xentTile-1)/xentTile*xentTile))
}

func xentRoundUp(n int) int { return (n + xentAlign - 1) / xentAlign * xentAlign }

// xentLayout holds the scratch offsets (in f32 elements) of the forward's
// partial maxima, partial sums, label logits and loss partials, of the
// backward's gradient chunk and f32 dh accumulator, and the total length.
type xentLayout struct {
	pm, ps, tgt, parts int
	g, acc             int
	total              int
}

func xentScratchLayout(dt runtime.DType, n, v, d, chunk int) xentLayout {
	c := XentChunk(v, chunk)
	nch := (v + c - 1) / c
	var l xentLayout
	off := xentAlign // element 0 holds the bad-label count
	l.pm = off
	off += xentRoundUp(nch * n)
	l.ps = off
	off += xentRoundUp(nch * n)
	l.tgt = off
	off += xentRoundUp(n)
	l.parts = off
	off += xentRoundUp((n + xentRowThreads - 1) / xentRowThreads)
	fwd := off
	off = xentAlign
	l.g = off
	off += xentRoundUp((n*c*dt.Size() + 3) / 4)
	l.acc = off
	if dt != runtime.F32 {
		off += xentRoundUp(n * d)
	}
	l.total = max(fwd, off)
	return l
}

// XentScratchElems is the number of F32 scratch elements XentForward and
// XentBackward need for storage type dt, N rows, V vocabulary rows, hidden
// size d and the requested chunk.
func XentScratchElems(dt runtime.DType, n, v, d, chunk int) int {
	return xentScratchLayout(dt, n, v, d, chunk).total
}

func xentHas(a Array) bool { return a.Dev != nil || a.Ptr != 0 }

// xentVec reports whether rows of length ld starting at p allow 16-byte loads.
func xentVec(p runtime.DevicePtr, ld int, dt runtime.DType) bool {
	return p%16 == 0 && (ld*dt.Size())%16 == 0
}

func (x Xent) check(k string) (xentDims, error) {
	var dims xentDims
	dev := x.H.Dev
	if err := checkDev(k, dev, arg("H", x.H), arg("Emb", x.Emb), arg("Labels", x.Labels)); err != nil {
		return dims, err
	}
	if err := checkDType(k, "H", x.H, runtime.F32, runtime.BF16, runtime.F16); err != nil {
		return dims, err
	}
	if err := checkDType(k, "Emb", x.Emb, x.H.DType); err != nil {
		return dims, err
	}
	if err := checkDType(k, "Labels", x.Labels, runtime.I32); err != nil {
		return dims, err
	}
	if len(x.H.Shape) != 2 {
		return dims, fmt.Errorf("%s: argument H has shape %v, want [N,d]", k, x.H.Shape)
	}
	n, d := x.H.Shape[0], x.H.Shape[1]
	if len(x.Emb.Shape) != 2 || x.Emb.Shape[1] != d || x.Emb.Shape[0] < 1 {
		return dims, fmt.Errorf("%s: argument Emb has shape %v, want [V,%d] with V ≥ 1", k, x.Emb.Shape, d)
	}
	v := x.Emb.Shape[0]
	if x.Labels.Numel() != n {
		return dims, fmt.Errorf("%s: argument Labels has %d elements, want %d (one per row of H)", k, x.Labels.Numel(), n)
	}
	if xentHas(x.Weights) {
		if err := checkDev(k, dev, arg("Weights", x.Weights)); err != nil {
			return dims, err
		}
		if err := checkDType(k, "Weights", x.Weights, runtime.F32); err != nil {
			return dims, err
		}
		if x.Weights.Numel() != n {
			return dims, fmt.Errorf("%s: argument Weights has %d elements, want %d", k, x.Weights.Numel(), n)
		}
	}
	if !(x.Norm > 0) || math.IsInf(x.Norm, 0) {
		return dims, fmt.Errorf("%s: norm %v must be finite and positive", k, x.Norm)
	}
	if x.Chunk < 0 {
		return dims, fmt.Errorf("%s: chunk %d is negative", k, x.Chunk)
	}
	if (n+xentTile-1)/xentTile > xentMaxGridY {
		return dims, fmt.Errorf("%s: %d rows exceed the kernels' limit of %d", k, n, xentMaxGridY*xentTile)
	}
	if v >= math.MaxInt32-xentTile || d >= math.MaxInt32 {
		return dims, fmt.Errorf("%s: sizes N=%d V=%d d=%d are too large", k, n, v, d)
	}
	c := XentChunk(v, x.Chunk)
	if n*c >= math.MaxInt32 {
		return dims, fmt.Errorf("%s: chunk %d times %d rows exceeds the kernels' index range; use a smaller chunk", k, c, n)
	}
	return xentDims{dev: dev, dt: x.H.DType, n: n, d: d, v: v, chunk: c, nch: (v + c - 1) / c}, nil
}

func xentCheckVec(k, name string, dev runtime.Device, a Array, n int) error {
	if err := checkDev(k, dev, arg(name, a)); err != nil {
		return err
	}
	if err := checkDType(k, name, a, runtime.F32); err != nil {
		return err
	}
	if a.Numel() != n {
		return fmt.Errorf("%s: argument %s has %d elements, want %d", k, name, a.Numel(), n)
	}
	return nil
}

func xentCheckScratch(k string, x xentDims, scratch Array) (xentLayout, error) {
	l := xentScratchLayout(x.dt, x.n, x.v, x.d, x.chunk)
	if err := checkDev(k, x.dev, arg("scratch", scratch)); err != nil {
		return l, err
	}
	if err := checkDType(k, "scratch", scratch, runtime.F32); err != nil {
		return l, err
	}
	if scratch.Numel() < l.total {
		return l, fmt.Errorf("%s: argument scratch has %d elements, want at least %d (XentScratchElems)", k, scratch.Numel(), l.total)
	}
	if scratch.Ptr%16 != 0 {
		return l, fmt.Errorf("%s: argument scratch is not 16-byte aligned", k)
	}
	return l, nil
}

func xentLaunch(dev runtime.Device, s runtime.Stream, name string, grid runtime.Dim3, threads int, params ...uint64) error {
	fn, err := function(dev, xentFamily, name)
	if err != nil {
		return err
	}
	if err := dev.Launch(fn, grid, runtime.D1(threads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// checkLabels counts the labels outside [0,V) that are not XentIgnoreIndex
// on the device and reads the count back (waiting for s).
func (x Xent) checkLabels(k string, s runtime.Stream, dims xentDims, scratch Array) error {
	if dims.n == 0 {
		return nil
	}
	if err := dims.dev.Memset(scratch.Ptr, 0, 4, s); err != nil {
		return fmt.Errorf("%s: %w", k, err)
	}
	blocks := min((dims.n+xentRowThreads-1)/xentRowThreads, 1024)
	if err := xentLaunch(dims.dev, s, "xent_check_labels", runtime.D1(blocks), xentRowThreads,
		runtime.PtrParam(x.Labels.Ptr), runtime.I64Param(dims.n), runtime.I64Param(dims.v), runtime.PtrParam(scratch.Ptr)); err != nil {
		return err
	}
	var buf [4]byte
	if err := dims.dev.MemcpyDtoH(buf[:], scratch.Ptr, s); err != nil {
		return fmt.Errorf("%s: read label check: %w", k, err)
	}
	if bad := int32(binary.LittleEndian.Uint32(buf[:])); bad != 0 {
		return fmt.Errorf("%s: argument Labels has %d labels outside [0,%d) that are not XentIgnoreIndex (%d)", k, bad, dims.v, XentIgnoreIndex)
	}
	return nil
}

// xentBits packs the 16-byte-load flags of a kernel's A (bit 0) and B (bit 1) operands.
func xentBits(a, b bool) int {
	v := 0
	if a {
		v |= 1
	}
	if b {
		v |= 2
	}
	return v
}

func xentOptPtr(a Array) uint64 {
	if !xentHas(a) {
		return 0
	}
	return runtime.PtrParam(a.Ptr)
}

// XentForward computes the per-token cross-entropy into ce (F32 [N], 0 for
// ignored tokens), each row's log-sum-exp into lse (F32 [N], optional: the
// zero Array skips it; XentBackward needs it) and the loss into loss[0] (F32,
// on the device; XentLossValue reads it). scratch is F32 with at least
// XentScratchElems elements, 16-byte aligned. The labels are checked on the
// device first, which waits for s; labels outside [0,V) other than
// XentIgnoreIndex are an error and nothing else is written.
func XentForward(s runtime.Stream, x Xent, ce, lse, loss, scratch Array) error {
	const k = "xent_fwd"
	dims, err := x.check(k)
	if err != nil {
		return err
	}
	if err := xentCheckVec(k, "ce", dims.dev, ce, dims.n); err != nil {
		return err
	}
	if xentHas(lse) {
		if err := xentCheckVec(k, "lse", dims.dev, lse, dims.n); err != nil {
			return err
		}
	}
	if err := checkDev(k, dims.dev, arg("loss", loss)); err != nil {
		return err
	}
	if err := checkDType(k, "loss", loss, runtime.F32); err != nil {
		return err
	}
	if loss.Numel() < 1 {
		return fmt.Errorf("%s: argument loss has no elements", k)
	}
	l, err := xentCheckScratch(k, dims, scratch)
	if err != nil {
		return err
	}
	if err := x.checkLabels(k, s, dims, scratch); err != nil {
		return err
	}
	at := func(off int) uint64 { return runtime.PtrParam(scratch.Ptr.Add(4 * off)) }
	nparts := (dims.n + xentRowThreads - 1) / xentRowThreads
	if dims.n > 0 {
		vec := xentBits(xentVec(x.H.Ptr, dims.d, dims.dt), xentVec(x.Emb.Ptr, dims.d, dims.dt))
		grid := runtime.Dim3{X: dims.nch, Y: (dims.n + xentTile - 1) / xentTile, Z: 1}
		if err := xentLaunch(dims.dev, s, "xent_fwd_"+suffix(dims.dt), grid, xentThreads,
			runtime.PtrParam(x.H.Ptr), runtime.PtrParam(x.Emb.Ptr), runtime.PtrParam(x.Labels.Ptr),
			runtime.I64Param(dims.n), runtime.I64Param(dims.v), runtime.I64Param(dims.d), runtime.I64Param(dims.chunk),
			runtime.I64Param(vec), at(l.pm), at(l.ps), at(l.tgt)); err != nil {
			return err
		}
		if err := xentLaunch(dims.dev, s, "xent_combine", runtime.D1(nparts), xentRowThreads,
			at(l.pm), at(l.ps), at(l.tgt), runtime.PtrParam(x.Labels.Ptr), xentOptPtr(x.Weights),
			runtime.I64Param(dims.n), runtime.I64Param(dims.v), runtime.I64Param(dims.nch),
			runtime.PtrParam(ce.Ptr), xentOptPtr(lse), at(l.parts)); err != nil {
			return err
		}
	}
	return xentLaunch(dims.dev, s, "xent_loss", runtime.D1(1), xentRowThreads,
		at(l.parts), runtime.I64Param(nparts), runtime.F32Param(float32(x.Norm)), runtime.PtrParam(loss.Ptr))
}

// XentLossValue reads the loss XentForward left in loss[0] back to the host
// (waiting for the work before it on the default stream).
func XentLossValue(loss Array) (float64, error) {
	if loss.Dev == nil {
		return 0, fmt.Errorf("xent loss: argument loss has no device")
	}
	if loss.DType != runtime.F32 || loss.Numel() < 1 {
		return 0, fmt.Errorf("xent loss: argument loss is %s %v, want F32 with at least one element", loss.DType, loss.Shape)
	}
	var buf [4]byte
	if err := loss.Dev.MemcpyDtoH(buf[:], loss.Ptr, 0); err != nil {
		return 0, fmt.Errorf("xent loss: %w", err)
	}
	return float64(math.Float32frombits(binary.LittleEndian.Uint32(buf[:]))), nil
}

// XentBackward computes, for the loss cotangent dLoss, dh [N,d] (H's dtype,
// overwritten), dEmb [V,d] (H's dtype, accumulated: dEmb += …) and dw (F32
// [N], overwritten: dLoss·ce_i/Norm, 0 for ignored tokens); each output is
// optional (the zero Array skips it). lse is forward's log-sum-exp (F32 [N]);
// ce (F32 [N]) is needed only for dw. The logits are recomputed one chunk at
// a time; scratch is as for XentForward. The labels are checked first (which
// waits for s); bad labels are an error and nothing else is written.
func XentBackward(s runtime.Stream, x Xent, ce, lse Array, dLoss float64, dh, dEmb, dw, scratch Array) error {
	const k = "xent_bwd"
	dims, err := x.check(k)
	if err != nil {
		return err
	}
	if math.IsNaN(dLoss) || math.IsInf(dLoss, 0) {
		return fmt.Errorf("%s: dLoss %v is not finite", k, dLoss)
	}
	if err := xentCheckVec(k, "lse", dims.dev, lse, dims.n); err != nil {
		return err
	}
	if xentHas(dw) {
		if !xentHas(ce) {
			return fmt.Errorf("%s: argument dw needs ce", k)
		}
		if err := xentCheckVec(k, "dw", dims.dev, dw, dims.n); err != nil {
			return err
		}
	}
	if xentHas(ce) {
		if err := xentCheckVec(k, "ce", dims.dev, ce, dims.n); err != nil {
			return err
		}
	}
	for _, o := range []struct {
		name string
		a    Array
		rows int
	}{{"dh", dh, dims.n}, {"dEmb", dEmb, dims.v}} {
		if !xentHas(o.a) {
			continue
		}
		if err := checkDev(k, dims.dev, arg(o.name, o.a)); err != nil {
			return err
		}
		if err := checkDType(k, o.name, o.a, dims.dt); err != nil {
			return err
		}
		if len(o.a.Shape) != 2 || o.a.Shape[0] != o.rows || o.a.Shape[1] != dims.d {
			return fmt.Errorf("%s: argument %s has shape %v, want [%d,%d]", k, o.name, o.a.Shape, o.rows, dims.d)
		}
	}
	l, err := xentCheckScratch(k, dims, scratch)
	if err != nil {
		return err
	}
	if err := x.checkLabels(k, s, dims, scratch); err != nil {
		return err
	}
	scale := dLoss / x.Norm
	if xentHas(dw) && dims.n > 0 {
		blocks := min((dims.n+xentRowThreads-1)/xentRowThreads, 1024)
		if err := xentLaunch(dims.dev, s, "xent_dw", runtime.D1(blocks), xentRowThreads,
			runtime.PtrParam(ce.Ptr), runtime.PtrParam(x.Labels.Ptr), runtime.I64Param(dims.n),
			runtime.F32Param(float32(scale)), runtime.PtrParam(dw.Ptr)); err != nil {
			return err
		}
	}
	if (!xentHas(dh) && !xentHas(dEmb)) || dims.n == 0 || dims.d == 0 {
		return nil
	}
	sfx := suffix(dims.dt)
	g := scratch.Ptr.Add(4 * l.g)
	acc := scratch.Ptr.Add(4 * l.acc)
	hVec, eVec := xentVec(x.H.Ptr, dims.d, dims.dt), xentVec(x.Emb.Ptr, dims.d, dims.dt)
	gVec := xentVec(g, dims.chunk, dims.dt)
	rowTiles := (dims.n + xentTile - 1) / xentTile
	dTiles := (dims.d + xentTile - 1) / xentTile
	esz := dims.dt.Size()
	for c := 0; c < dims.nch; c++ {
		v0 := c * dims.chunk
		cw := min(dims.chunk, dims.v-v0)
		cTiles := (cw + xentTile - 1) / xentTile
		if err := xentLaunch(dims.dev, s, "xent_grad_"+sfx, runtime.Dim3{X: cTiles, Y: rowTiles, Z: 1}, xentThreads,
			runtime.PtrParam(x.H.Ptr), runtime.PtrParam(x.Emb.Ptr), runtime.PtrParam(x.Labels.Ptr), xentOptPtr(x.Weights),
			runtime.PtrParam(lse.Ptr), runtime.I64Param(dims.n), runtime.I64Param(dims.v), runtime.I64Param(dims.d),
			runtime.I64Param(v0), runtime.I64Param(cw), runtime.I64Param(xentBits(hVec, eVec)), runtime.PtrParam(g), runtime.I64Param(dims.chunk)); err != nil {
			return err
		}
		eChunk := x.Emb.Ptr.Add(v0 * dims.d * esz)
		if xentHas(dh) {
			// dh = Σ_chunks G_c·E_c, summed in chunk order in f32: in dh itself
			// for f32 storage, else in the f32 accumulator until the last chunk.
			var prev, outF, outT uint64
			if c > 0 {
				prev = runtime.PtrParam(acc)
			}
			switch {
			case dims.dt == runtime.F32:
				if c > 0 {
					prev = runtime.PtrParam(dh.Ptr)
				}
				outF = runtime.PtrParam(dh.Ptr)
			case c == dims.nch-1:
				outT = runtime.PtrParam(dh.Ptr)
			default:
				outF = runtime.PtrParam(acc)
			}
			if err := xentLaunch(dims.dev, s, "xent_dh_"+sfx, runtime.Dim3{X: dTiles, Y: rowTiles, Z: 1}, xentThreads,
				runtime.PtrParam(g), runtime.I64Param(dims.chunk), runtime.PtrParam(eChunk), runtime.I64Param(dims.d),
				runtime.I64Param(dims.n), runtime.I64Param(dims.d), runtime.I64Param(cw), runtime.I64Param(xentBits(gVec, eVec)),
				runtime.F32Param(float32(scale)), prev, outF, outT, runtime.I64Param(0), runtime.I64Param(dims.d)); err != nil {
				return err
			}
		}
		if xentHas(dEmb) {
			// dEmb[v0:v0+cw] += G_cᵀ·h, summed over the rows in order inside each tile.
			out := dEmb.Ptr.Add(v0 * dims.d * esz)
			if err := xentLaunch(dims.dev, s, "xent_demb_"+sfx, runtime.Dim3{X: dTiles, Y: cTiles, Z: 1}, xentThreads,
				runtime.PtrParam(g), runtime.I64Param(dims.chunk), runtime.PtrParam(x.H.Ptr), runtime.I64Param(dims.d),
				runtime.I64Param(cw), runtime.I64Param(dims.d), runtime.I64Param(dims.n), runtime.I64Param(xentBits(gVec, hVec)),
				runtime.F32Param(float32(scale)), uint64(0), uint64(0), runtime.PtrParam(out), runtime.I64Param(1), runtime.I64Param(dims.d)); err != nil {
				return err
			}
		}
	}
	return nil
}
