package gpu

// Argument validation. The checks and their messages follow nn/cpu's exactly
// (op names, argument names, expected shapes), so both backends reject the
// same calls with the same words; only the device test differs: a tensor must
// live on this backend, be unreleased and have dtype F32 or BF16. Everything
// here except that device test is backend-independent and could move into
// package nn as a shared validator parameterised by a storage predicate.

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/runtime"
)

// checker validates an op's tensor arguments: presence, device, one shared
// dtype, and shape. The first failure is kept; later calls are no-ops.
type checker struct {
	b     *Backend
	op    string
	dt    runtime.DType
	first string
	err   error
}

func (b *Backend) newChecker(op string) *checker { return &checker{b: b, op: op} }

// devCheck verifies that t is an unreleased F32 or BF16 tensor of b.
func (b *Backend) devCheck(op, name string, t *nn.Tensor) error {
	s, ok := t.Storage().(*Storage)
	if !ok || s.b != b {
		return fmt.Errorf("%s: %s is on device %q, want a tensor of this %s backend", op, name, t.Device(), b.kind)
	}
	if s.released {
		return fmt.Errorf("%s: %s was released", op, name)
	}
	if !supported(t.DType()) {
		return fmt.Errorf("%s: %s has dtype %v, the gpu backend supports F32 and BF16", op, name, t.DType())
	}
	return nil
}

// tensor checks a required tensor. dims gives the expected shape, -1 meaning
// any size; no dims means any shape.
func (c *checker) tensor(name string, t *nn.Tensor, dims ...int) {
	if c.err != nil {
		return
	}
	if t == nil {
		c.err = fmt.Errorf("%s: %s is nil", c.op, name)
		return
	}
	c.check(name, t, dims)
}

// optional checks t like tensor when t is non-nil.
func (c *checker) optional(name string, t *nn.Tensor, dims ...int) {
	if c.err != nil || t == nil {
		return
	}
	c.check(name, t, dims)
}

func (c *checker) check(name string, t *nn.Tensor, dims []int) {
	if err := c.b.devCheck(c.op, name, t); err != nil {
		c.err = err
		return
	}
	if c.first == "" {
		c.first, c.dt = name, t.DType()
	} else if t.DType() != c.dt {
		c.err = fmt.Errorf("%s: %s has dtype %v, want %v (same as %s)", c.op, name, t.DType(), c.dt, c.first)
		return
	}
	if dims == nil {
		return
	}
	ok := t.Rank() == len(dims)
	for i := 0; ok && i < len(dims); i++ {
		ok = dims[i] < 0 || dims[i] == t.Dim(i)
	}
	if !ok {
		c.err = fmt.Errorf("%s: %s has shape %v, want %s", c.op, name, t.Shape(), dimString(dims))
	}
}

// numel checks that t (already checked) has n elements.
func (c *checker) numel(name string, t *nn.Tensor, n int) {
	if c.err != nil || t == nil {
		return
	}
	if t.Numel() != n {
		c.err = fmt.Errorf("%s: %s has %d elements (shape %v), want %d", c.op, name, t.Numel(), t.Shape(), n)
	}
}

// failf records an error unless one is already recorded.
func (c *checker) failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(c.op+": "+format, args...)
	}
}

// failfErr records and returns an error.
func (c *checker) failfErr(format string, args ...any) error {
	c.failf(format, args...)
	return c.err
}

// f32Only records an error unless the checked tensors are F32 (ops whose
// kernels exist for f32 storage only).
func (c *checker) f32Only() {
	if c.err == nil && c.first != "" && c.dt != runtime.F32 {
		c.err = fmt.Errorf("%s: %s has dtype %v; the gpu backend runs this op on F32 tensors only", c.op, c.first, c.dt)
	}
}

func dimString(dims []int) string {
	s := "["
	for i, d := range dims {
		if i > 0 {
			s += " "
		}
		if d < 0 {
			s += "?"
		} else {
			s += fmt.Sprint(d)
		}
	}
	return s + "]"
}

// checkSame checks that every named tensor is present (or optional and nil)
// and has the element count of the first.
func checkSame(ck *checker, names []string, ts []*nn.Tensor, optional []bool) {
	for i, t := range ts {
		if optional != nil && optional[i] {
			ck.optional(names[i], t)
		} else {
			ck.tensor(names[i], t)
		}
		if i > 0 && ts[0] != nil {
			ck.numel(names[i], t, ts[0].Numel())
		}
	}
}

func checkDropout(ck *checker, d nn.Dropout) {
	if !(d.P >= 0 && d.P < 1) {
		ck.failf("dropout probability %v outside [0,1)", d.P)
	}
}

// loraDims are the sizes of one LoRALinear call.
type loraDims struct{ n, in, out, r int }

// checkLoRA validates the layer's weights against x [N,in] and returns the
// sizes.
func checkLoRA(ck *checker, l nn.LoRALinear, x *nn.Tensor) loraDims {
	ck.tensor("x", x, -1, -1)
	ck.tensor("W", l.W, -1, -1)
	if ck.err != nil {
		return loraDims{}
	}
	d := loraDims{n: x.Dim(0), in: x.Dim(1)}
	if l.WInOut {
		ck.tensor("W", l.W, d.in, -1)
		d.out = l.W.Dim(1)
	} else {
		ck.tensor("W", l.W, -1, d.in)
		d.out = l.W.Dim(0)
	}
	ck.optional("bias", l.Bias, d.out)
	switch {
	case l.A == nil && l.B != nil:
		ck.failf("B is set but A is nil")
	case l.A != nil:
		ck.tensor("A", l.A, -1, d.in)
		if ck.err == nil {
			d.r = l.A.Dim(0)
		}
		ck.tensor("B", l.B, d.out, d.r)
	}
	if ck.err == nil {
		checkDropout(ck, l.Dropout)
	}
	return d
}

// attnDims are the sizes of one attention call.
type attnDims struct {
	t, hq, hkv, d int
	scale         float64
}

func checkAttention(ck *checker, a nn.Attention, q, k, v *nn.Tensor) attnDims {
	ck.tensor("q", q, -1, -1, -1)
	if ck.err != nil {
		return attnDims{}
	}
	d := attnDims{t: q.Dim(0), hq: q.Dim(1), d: q.Dim(2), scale: a.Scale}
	ck.tensor("k", k, d.t, -1, d.d)
	if ck.err != nil {
		return d
	}
	d.hkv = k.Dim(1)
	ck.tensor("v", v, d.t, d.hkv, d.d)
	if ck.err != nil {
		return d
	}
	if d.hkv == 0 || d.hq%d.hkv != 0 {
		ck.failf("q has %d heads, not a positive multiple of k's %d heads", d.hq, d.hkv)
		return d
	}
	cu := a.CuSeqlens
	if len(cu) < 1 || cu[0] != 0 || int(cu[len(cu)-1]) != d.t {
		ck.failf("cu_seqlens %v must start at 0 and end at T = %d", cu, d.t)
		return d
	}
	for i := 1; i < len(cu); i++ {
		if cu[i] < cu[i-1] {
			ck.failf("cu_seqlens decreases at index %d (%d < %d)", i, cu[i], cu[i-1])
			return d
		}
	}
	if d.scale == 0 {
		d.scale = 1 / math.Sqrt(float64(d.d))
	}
	if math.IsNaN(d.scale) || math.IsInf(d.scale, 0) {
		ck.failf("scale %v is not finite", d.scale)
	}
	return d
}

// normRows checks x (rank ≥ 1) and returns rows = numel/C and C = last dim.
func normRows(ck *checker, x *nn.Tensor) (rows, c int) {
	ck.tensor("x", x)
	if ck.err != nil {
		return 0, 0
	}
	if x.Rank() < 1 {
		ck.failf("x must have rank ≥ 1, has shape %v", x.Shape())
		return 0, 0
	}
	rows = 1
	for i := 0; i < x.Rank()-1; i++ {
		rows *= x.Dim(i)
	}
	return rows, x.Dim(-1)
}

func checkEps(ck *checker, eps float64) {
	if !(eps >= 0) || math.IsInf(eps, 0) {
		ck.failf("eps %v must be finite and ≥ 0", eps)
	}
}

func checkRoPE(ck *checker, x, y *nn.Tensor, xName, yName string, positions []int32, theta float64) (t, h, d int) {
	ck.tensor(xName, x, -1, -1, -1)
	if ck.err != nil {
		return
	}
	t, h, d = x.Dim(0), x.Dim(1), x.Dim(2)
	ck.tensor(yName, y, t, h, d)
	if d%2 != 0 {
		ck.failf("head dimension %d of %s is odd", d, xName)
	}
	if len(positions) != t {
		ck.failf("%d positions for %d tokens", len(positions), t)
	}
	if !(theta > 0) || math.IsInf(theta, 0) {
		ck.failf("theta %v must be finite and positive", theta)
	}
	return
}

func checkIDs(ck *checker, what string, ids []int32, n int) {
	for i, id := range ids {
		if id < 0 || int(id) >= n {
			ck.failf("%s[%d] = %d outside [0,%d)", what, i, id, n)
			return
		}
	}
}

// xentDims are the sizes of one cross-entropy call.
type xentDims struct{ n, d, v int }

func checkXent(ck *checker, c nn.CrossEntropy, h, emb *nn.Tensor) xentDims {
	ck.tensor("h", h, -1, -1)
	if ck.err != nil {
		return xentDims{}
	}
	x := xentDims{n: h.Dim(0), d: h.Dim(1)}
	ck.tensor("emb", emb, -1, x.d)
	if ck.err != nil {
		return x
	}
	x.v = emb.Dim(0)
	if x.v == 0 {
		ck.failf("emb has no vocabulary rows")
	}
	if len(c.Labels) != x.n {
		ck.failf("%d labels for %d rows of h", len(c.Labels), x.n)
	}
	for i, l := range c.Labels {
		if l != nn.IgnoreIndex && (l < 0 || int(l) >= x.v) {
			ck.failf("labels[%d] = %d outside [0,%d) and not IgnoreIndex", i, l, x.v)
			break
		}
	}
	ck.optional("weights", c.Weights, x.n)
	if !(c.Norm > 0) || math.IsInf(c.Norm, 0) {
		ck.failf("norm %v must be finite and positive", c.Norm)
	}
	if c.Chunk < 0 {
		ck.failf("chunk %d is negative", c.Chunk)
	}
	return x
}

// checkLists validates parallel tensor lists: every list has len(lrs)
// entries and entry i of every list has the element count of entry i of the
// first list.
func checkLists(ck *checker, lrs []float64, names []string, lists ...[]*nn.Tensor) {
	n := len(lrs)
	for li, l := range lists {
		if len(l) != n {
			ck.failf("%s has %d tensors, want %d (one per learning rate)", names[li], len(l), n)
			return
		}
	}
	for i := 0; i < n; i++ {
		for li, l := range lists {
			ck.tensor(fmt.Sprintf("%s[%d]", names[li], i), l[i])
			if li > 0 && ck.err == nil {
				ck.numel(fmt.Sprintf("%s[%d]", names[li], i), l[i], lists[0][i].Numel())
			}
		}
		if ck.err != nil {
			return
		}
	}
	for i, lr := range lrs {
		if math.IsNaN(lr) || math.IsInf(lr, 0) {
			ck.failf("lrs[%d] = %v is not finite", i, lr)
			return
		}
	}
}

func checkAdamW(ck *checker, o nn.AdamW, t int) {
	switch {
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		ck.failf("beta1 %v outside [0,1)", o.Beta1)
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		ck.failf("beta2 %v outside [0,1)", o.Beta2)
	case !(o.Eps >= 0) || math.IsInf(o.Eps, 0):
		ck.failf("eps %v must be finite and ≥ 0", o.Eps)
	case math.IsNaN(o.WeightDecay) || math.IsInf(o.WeightDecay, 0):
		ck.failf("weight decay %v is not finite", o.WeightDecay)
	case t < 1:
		ck.failf("step count t = %d, want ≥ 1", t)
	}
}

func checkWeightDecay(ck *checker, wd float64) {
	if math.IsNaN(wd) || math.IsInf(wd, 0) {
		ck.failf("weight decay %v is not finite", wd)
	}
}

func checkList(ck *checker, xs []*nn.Tensor) {
	for i, x := range xs {
		ck.tensor(fmt.Sprintf("xs[%d]", i), x)
	}
}
