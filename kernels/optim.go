package kernels

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

var optimFamily = newFamily("optim",
	"adamw_step_f32", "adamw_vjp_f32", "sgd_step_f32", "sgd_vjp_f32",
	"multi_sumsq_f32", "optim_reduce_rows", "clip_scale")

const (
	optimThreads   = 256
	optimMaxChunks = 256
	optimItems     = 4
)

// TensorTable is a device-resident table of f32 tensors for the multi-tensor
// optimiser kernels: row i holds Stride arrays of equal length (for AdamW:
// p, g, m, v). Build it once for a fixed set of tensors and reuse it across
// steps; Free releases it.
type TensorTable struct {
	Dev    runtime.Device
	Stride int // arrays per tensor
	Rows   int // tensors
	Chunks int // blocks per tensor in every launch (depends on sizes only)
	sizes  []int
	ptrs   runtime.DevicePtr
	lens   runtime.DevicePtr
}

// NewTensorTable uploads rows (each with stride f32 arrays of one length) to dev.
func NewTensorTable(dev runtime.Device, stride int, rows [][]Array) (*TensorTable, error) {
	if len(rows) == 0 {
		return nil, fmt.Errorf("tensor table: no tensors")
	}
	t := &TensorTable{Dev: dev, Stride: stride, Rows: len(rows), sizes: make([]int, len(rows))}
	ptrs := make([]byte, 8*stride*len(rows))
	lens := make([]byte, 8*len(rows))
	maxN := 0
	for i, row := range rows {
		if len(row) != stride {
			return nil, fmt.Errorf("tensor table: row %d has %d arrays, want %d", i, len(row), stride)
		}
		for j, a := range row {
			name := fmt.Sprintf("row %d array %d", i, j)
			if err := checkDev("tensor table", dev, arg(name, a)); err != nil {
				return nil, err
			}
			if err := checkDType("tensor table", name, a, runtime.F32); err != nil {
				return nil, err
			}
			if a.Numel() != row[0].Numel() {
				return nil, fmt.Errorf("tensor table: %s has %d elements, want %d like array 0", name, a.Numel(), row[0].Numel())
			}
			binary.LittleEndian.PutUint64(ptrs[8*(i*stride+j):], uint64(a.Ptr))
		}
		t.sizes[i] = row[0].Numel()
		binary.LittleEndian.PutUint64(lens[8*i:], uint64(t.sizes[i]))
		maxN = max(maxN, t.sizes[i])
	}
	t.Chunks = max(1, min((maxN+optimThreads*optimItems-1)/(optimThreads*optimItems), optimMaxChunks))
	var err error
	if t.ptrs, err = dev.Alloc(len(ptrs)); err != nil {
		return nil, fmt.Errorf("tensor table: %w", err)
	}
	if t.lens, err = dev.Alloc(len(lens)); err != nil {
		_ = dev.Free(t.ptrs)
		return nil, fmt.Errorf("tensor table: %w", err)
	}
	if err := dev.MemcpyHtoD(t.ptrs, ptrs, 0); err != nil {
		_ = t.Free()
		return nil, fmt.Errorf("tensor table: %w", err)
	}
	if err := dev.MemcpyHtoD(t.lens, lens, 0); err != nil {
		_ = t.Free()
		return nil, fmt.Errorf("tensor table: %w", err)
	}
	return t, nil
}

// Partials is the number of f32 scratch elements the VJP and norm kernels
// need for this table.
func (t *TensorTable) Partials() int { return t.Rows * t.Chunks }

// Free releases the table's device memory (not the tensors).
func (t *TensorTable) Free() error {
	err1 := t.Dev.Free(t.ptrs)
	err2 := t.Dev.Free(t.lens)
	if err1 != nil {
		return err1
	}
	return err2
}

// AdamWConfig holds torch.optim.AdamW's hyper-parameters and the 1-based
// step count t used for bias correction.
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Step                           int
}

func (c AdamWConfig) check(kernel string) error {
	switch {
	case !(c.Beta1 >= 0 && c.Beta1 < 1), !(c.Beta2 >= 0 && c.Beta2 < 1):
		return fmt.Errorf("%s: betas (%v, %v) outside [0,1)", kernel, c.Beta1, c.Beta2)
	case !(c.Eps >= 0) || math.IsInf(c.Eps, 0):
		return fmt.Errorf("%s: eps %v must be finite and ≥ 0", kernel, c.Eps)
	case math.IsNaN(c.WeightDecay) || math.IsInf(c.WeightDecay, 0):
		return fmt.Errorf("%s: weight decay %v is not finite", kernel, c.WeightDecay)
	case c.Step < 1:
		return fmt.Errorf("%s: step %d, want ≥ 1", kernel, c.Step)
	}
	return nil
}

// bias returns 1−β1ᵗ and √(1−β2ᵗ), computed in float64 on the host.
func (c AdamWConfig) bias() (float32, float32) {
	return float32(1 - math.Pow(c.Beta1, float64(c.Step))), float32(math.Sqrt(1 - math.Pow(c.Beta2, float64(c.Step))))
}

// checkUse checks the table's stride and, when lrs is not nil, the
// learning-rate array.
func (t *TensorTable) checkUse(kernel string, stride int, lrs *Array) error {
	if t == nil {
		return fmt.Errorf("%s: nil tensor table", kernel)
	}
	if t.Stride != stride {
		return fmt.Errorf("%s: tensor table has %d arrays per tensor, want %d", kernel, t.Stride, stride)
	}
	if lrs == nil {
		return nil
	}
	if err := checkDev(kernel, t.Dev, arg("lrs", *lrs)); err != nil {
		return err
	}
	if err := checkDType(kernel, "lrs", *lrs, runtime.F32); err != nil {
		return err
	}
	if lrs.Numel() != t.Rows {
		return fmt.Errorf("%s: argument lrs has %d elements, want one per tensor (%d)", kernel, lrs.Numel(), t.Rows)
	}
	return nil
}

func optionalPtr(kernel, name string, dev runtime.Device, a Array, dt runtime.DType, n int) (uint64, error) {
	if a.Dev == nil && a.Ptr == 0 {
		return 0, nil
	}
	if err := checkDev(kernel, dev, arg(name, a)); err != nil {
		return 0, err
	}
	if err := checkDType(kernel, name, a, dt); err != nil {
		return 0, err
	}
	if a.Numel() < n {
		return 0, fmt.Errorf("%s: argument %s has %d elements, want at least %d", kernel, name, a.Numel(), n)
	}
	return runtime.PtrParam(a.Ptr), nil
}

func (t *TensorTable) launch(s runtime.Stream, name string, params ...uint64) error {
	fn, err := function(t.Dev, optimFamily, name)
	if err != nil {
		return err
	}
	if err := t.Dev.Launch(fn, runtime.Dim3{X: t.Chunks, Y: t.Rows, Z: 1}, runtime.D1(optimThreads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

// reduceRows sums partials row by row into out (one f32 per tensor).
func (t *TensorTable) reduceRows(s runtime.Stream, partials, out Array) error {
	fn, err := function(t.Dev, optimFamily, "optim_reduce_rows")
	if err != nil {
		return err
	}
	if err := t.Dev.Launch(fn, runtime.D1(t.Rows), runtime.D1(optimThreads), 0, s, []uint64{
		runtime.PtrParam(partials.Ptr), runtime.I64Param(t.Chunks), runtime.PtrParam(out.Ptr),
	}); err != nil {
		return fmt.Errorf("launch optim_reduce_rows: %w", err)
	}
	return nil
}

// AdamWStep applies one AdamW step to every tensor of tab (stride 4: p, g, m,
// v) in one launch, with per-tensor learning rates lrs (f32 [Rows], on the
// device: the learned rates of this step). gscale (optional f32 [1]) scales
// every gradient (global-norm clipping); nonfinite (optional I32 [1]) has the
// number of non-finite gradient elements added to it.
func AdamWStep(s runtime.Stream, tab *TensorTable, lrs Array, c AdamWConfig, gscale, nonfinite Array) error {
	const k = "adamw_step"
	if err := c.check(k); err != nil {
		return err
	}
	if err := tab.checkUse(k, 4, &lrs); err != nil {
		return err
	}
	gs, err := optionalPtr(k, "gscale", tab.Dev, gscale, runtime.F32, 1)
	if err != nil {
		return err
	}
	nf, err := optionalPtr(k, "nonfinite", tab.Dev, nonfinite, runtime.I32, 1)
	if err != nil {
		return err
	}
	bc1, bc2s := c.bias()
	return tab.launch(s, "adamw_step_f32", runtime.PtrParam(tab.ptrs), runtime.PtrParam(tab.lens), runtime.PtrParam(lrs.Ptr),
		runtime.F32Param(float32(c.Beta1)), runtime.F32Param(float32(c.Beta2)),
		runtime.F32Param(float32(1-c.Beta1)), runtime.F32Param(float32(1-c.Beta2)), runtime.F32Param(float32(c.Eps)),
		runtime.F32Param(float32(c.WeightDecay)), runtime.F32Param(bc1), runtime.F32Param(bc2s), gs, nf)
}

// AdamWVJP is the vector-Jacobian product of one AdamW step over tab (stride
// 8: p_t, g_t, m_t, v_t with the moments after the step, then the adjoints
// p̄, m̄, v̄ — overwritten with those of p_t, m_{t−1}, v_{t−1} — and ḡ, written).
// dLRs (f32 [Rows]) receives η̄ per tensor; partials is f32 scratch of
// tab.Partials() elements.
func AdamWVJP(s runtime.Stream, tab *TensorTable, lrs Array, c AdamWConfig, partials, dLRs Array) error {
	const k = "adamw_vjp"
	if err := c.check(k); err != nil {
		return err
	}
	if err := tab.checkUse(k, 8, &lrs); err != nil {
		return err
	}
	if err := tab.checkScratch(k, partials, dLRs, tab.Rows); err != nil {
		return err
	}
	bc1, bc2s := c.bias()
	if err := tab.launch(s, "adamw_vjp_f32", runtime.PtrParam(tab.ptrs), runtime.PtrParam(tab.lens), runtime.PtrParam(lrs.Ptr),
		runtime.F32Param(float32(c.Beta1)), runtime.F32Param(float32(c.Beta2)),
		runtime.F32Param(float32(1-c.Beta1)), runtime.F32Param(float32(1-c.Beta2)), runtime.F32Param(float32(c.Eps)),
		runtime.F32Param(float32(c.WeightDecay)), runtime.F32Param(bc1), runtime.F32Param(bc2s), runtime.PtrParam(partials.Ptr)); err != nil {
		return err
	}
	return tab.reduceRows(s, partials, dLRs)
}

// SGDStep applies p ← p·(1−ηλ) − η·g (g scaled by *gscale when given) to
// every tensor of tab (stride 2: p, g).
func SGDStep(s runtime.Stream, tab *TensorTable, lrs Array, weightDecay float64, gscale, nonfinite Array) error {
	const k = "sgd_step"
	if math.IsNaN(weightDecay) || math.IsInf(weightDecay, 0) {
		return fmt.Errorf("%s: weight decay %v is not finite", k, weightDecay)
	}
	if err := tab.checkUse(k, 2, &lrs); err != nil {
		return err
	}
	gs, err := optionalPtr(k, "gscale", tab.Dev, gscale, runtime.F32, 1)
	if err != nil {
		return err
	}
	nf, err := optionalPtr(k, "nonfinite", tab.Dev, nonfinite, runtime.I32, 1)
	if err != nil {
		return err
	}
	return tab.launch(s, "sgd_step_f32", runtime.PtrParam(tab.ptrs), runtime.PtrParam(tab.lens), runtime.PtrParam(lrs.Ptr),
		runtime.F32Param(float32(weightDecay)), gs, nf)
}

// SGDVJP is the VJP of SGDStep over tab (stride 4: p_t, g_t, p̄ (in/out), ḡ
// (out)); dLRs receives η̄ per tensor.
func SGDVJP(s runtime.Stream, tab *TensorTable, lrs Array, weightDecay float64, partials, dLRs Array) error {
	const k = "sgd_vjp"
	if math.IsNaN(weightDecay) || math.IsInf(weightDecay, 0) {
		return fmt.Errorf("%s: weight decay %v is not finite", k, weightDecay)
	}
	if err := tab.checkUse(k, 4, &lrs); err != nil {
		return err
	}
	if err := tab.checkScratch(k, partials, dLRs, tab.Rows); err != nil {
		return err
	}
	if err := tab.launch(s, "sgd_vjp_f32", runtime.PtrParam(tab.ptrs), runtime.PtrParam(tab.lens), runtime.PtrParam(lrs.Ptr),
		runtime.F32Param(float32(weightDecay)), runtime.PtrParam(partials.Ptr)); err != nil {
		return err
	}
	return tab.reduceRows(s, partials, dLRs)
}

// ClipScale computes the global L2 norm of every tensor of tab (stride 1)
// into out[0] and torch's clipping coefficient min(1, maxNorm/(norm+1e-6))
// into out[1], which AdamWStep/SGDStep take as gscale (a view of out at
// element 1).
func ClipScale(s runtime.Stream, tab *TensorTable, maxNorm float64, partials, out Array) error {
	const k = "clip_scale"
	if !(maxNorm > 0) || math.IsInf(maxNorm, 0) {
		return fmt.Errorf("%s: max norm %v must be positive and finite", k, maxNorm)
	}
	if err := tab.checkUse(k, 1, nil); err != nil {
		return err
	}
	if err := tab.checkScratch(k, partials, out, 2); err != nil {
		return err
	}
	if err := tab.launch(s, "multi_sumsq_f32", runtime.PtrParam(tab.ptrs), runtime.PtrParam(tab.lens), runtime.PtrParam(partials.Ptr)); err != nil {
		return err
	}
	fn, err := function(tab.Dev, optimFamily, "clip_scale")
	if err != nil {
		return err
	}
	if err := tab.Dev.Launch(fn, runtime.D1(1), runtime.D1(optimThreads), 0, s, []uint64{
		runtime.PtrParam(partials.Ptr), runtime.I64Param(tab.Partials()), runtime.F32Param(float32(maxNorm)), runtime.PtrParam(out.Ptr),
	}); err != nil {
		return fmt.Errorf("launch clip_scale: %w", err)
	}
	return nil
}

func (t *TensorTable) checkScratch(kernel string, partials, out Array, outLen int) error {
	if err := checkDev(kernel, t.Dev, arg("partials", partials), arg("out", out)); err != nil {
		return err
	}
	if err := checkDType(kernel, "partials", partials, runtime.F32); err != nil {
		return err
	}
	if partials.Numel() < t.Partials() {
		return fmt.Errorf("%s: argument partials has %d elements, want at least %d", kernel, partials.Numel(), t.Partials())
	}
	if err := checkDType(kernel, "out", out, runtime.F32); err != nil {
		return err
	}
	if out.Numel() < outLen {
		return fmt.Errorf("%s: output has %d elements, want %d", kernel, out.Numel(), outLen)
	}
	return nil
}

// Elem returns a one-element view of a at flat index i.
func (a Array) Elem(i int) Array {
	return Array{Dev: a.Dev, Ptr: a.Ptr.Add(i * a.DType.Size()), DType: a.DType, Shape: []int{1}}
}
