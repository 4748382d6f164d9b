package nn

// Argument validation shared by the backends. A Checker records the first
// problem with an op's arguments as an error of the form "op: message"; the
// Check* helpers validate one op's arguments and return the sizes derived
// from them. Only the storage test differs between backends: it is the
// onDevice function given to NewChecker. Backend-specific limits (kernel
// maximums, supported dtypes) stay in the backend and are added with Failf.

import (
	"fmt"
	"math"

	"github.com/perkgo/perk/runtime"
)

// Checker validates an op's tensor arguments: presence, storage (the backend's
// onDevice test), one shared dtype, and shape. The first failure is kept;
// later calls are no-ops.
type Checker struct {
	op       string
	onDevice func(op, name string, t *Tensor) error
	dt       runtime.DType
	first    string
	err      error
}

// NewChecker returns a Checker for op. onDevice reports why the non-nil
// tensor t, argument name of op, cannot be used by the backend (its error
// is recorded as is), or nil when it can.
func NewChecker(op string, onDevice func(op, name string, t *Tensor) error) *Checker {
	return &Checker{op: op, onDevice: onDevice}
}

// Err is the first recorded failure, or nil.
func (c *Checker) Err() error { return c.err }

// First is the name and dtype of the first tensor checked; name is "" when
// none has been.
func (c *Checker) First() (name string, dt runtime.DType) { return c.first, c.dt }

// Tensor checks a required tensor. dims gives the expected shape, -1 meaning
// any size; no dims means any shape.
func (c *Checker) Tensor(name string, t *Tensor, dims ...int) {
	if c.err != nil {
		return
	}
	if t == nil {
		c.err = fmt.Errorf("%s: %s is nil", c.op, name)
		return
	}
	c.check(name, t, dims)
}

// Optional checks t like Tensor when t is non-nil.
func (c *Checker) Optional(name string, t *Tensor, dims ...int) {
	if c.err != nil || t == nil {
		return
	}
	c.check(name, t, dims)
}

func (c *Checker) check(name string, t *Tensor, dims []int) {
	if err := c.onDevice(c.op, name, t); err != nil {
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

// Numel checks that t (already checked) has n elements; nil t passes.
func (c *Checker) Numel(name string, t *Tensor, n int) {
	if c.err != nil || t == nil {
		return
	}
	if t.Numel() != n {
		c.err = fmt.Errorf("%s: %s has %d elements (shape %v), want %d", c.op, name, t.Numel(), t.Shape(), n)
	}
}

// Failf records "op: " + the formatted message unless an error is already
// recorded.
func (c *Checker) Failf(format string, args ...any) {
	if c.err == nil {
		c.err = fmt.Errorf(c.op+": "+format, args...)
	}
}

// FailfErr is Failf returning the recorded error.
func (c *Checker) FailfErr(format string, args ...any) error {
	c.Failf(format, args...)
	return c.err
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

// CheckSame checks that every named tensor is present (or optional and nil)
// and has the element count of the first. optional may be nil.
func CheckSame(ck *Checker, names []string, ts []*Tensor, optional []bool) {
	for i, t := range ts {
		if optional != nil && optional[i] {
			ck.Optional(names[i], t)
		} else {
			ck.Tensor(names[i], t)
		}
		if i > 0 && ts[0] != nil {
			ck.Numel(names[i], t, ts[0].Numel())
		}
	}
}

// CheckList checks that every tensor of xs is present.
func CheckList(ck *Checker, xs []*Tensor) {
	for i, x := range xs {
		ck.Tensor(fmt.Sprintf("xs[%d]", i), x)
	}
}

// CheckDropout checks that the dropout probability is in [0,1).
func CheckDropout(ck *Checker, d Dropout) {
	if !(d.P >= 0 && d.P < 1) {
		ck.Failf("dropout probability %v outside [0,1)", d.P)
	}
}

// LoRADims are the sizes of one LoRALinear call: x is [N,In], y is [N,Out],
// R is the adapter rank (0 without adapter).
type LoRADims struct{ N, In, Out, R int }

// CheckLoRA validates the layer's weights against x [N,in] and returns the
// sizes known so far.
func CheckLoRA(ck *Checker, l LoRALinear, x *Tensor) LoRADims {
	ck.Tensor("x", x, -1, -1)
	ck.Tensor("W", l.W, -1, -1)
	if ck.err != nil {
		return LoRADims{}
	}
	d := LoRADims{N: x.Dim(0), In: x.Dim(1)}
	if l.WInOut {
		ck.Tensor("W", l.W, d.In, -1)
		d.Out = l.W.Dim(1)
	} else {
		ck.Tensor("W", l.W, -1, d.In)
		d.Out = l.W.Dim(0)
	}
	ck.Optional("bias", l.Bias, d.Out)
	switch {
	case l.A == nil && l.B != nil:
		ck.Failf("B is set but A is nil")
	case l.A != nil:
		ck.Tensor("A", l.A, -1, d.In)
		if ck.err == nil {
			d.R = l.A.Dim(0)
		}
		ck.Tensor("B", l.B, d.Out, d.R)
	}
	if ck.err == nil {
		CheckDropout(ck, l.Dropout)
	}
	return d
}

// AttentionDims are the sizes of one attention call: q is [T,HQ,D], k and v
// are [T,HKV,D]; Scale is a.Scale, or 1/√D when that is 0.
type AttentionDims struct {
	T, HQ, HKV, D int
	Scale         float64
}

// CheckAttention validates q, k, v and a's segments and scale, and returns
// the sizes known so far.
func CheckAttention(ck *Checker, a Attention, q, k, v *Tensor) AttentionDims {
	ck.Tensor("q", q, -1, -1, -1)
	if ck.err != nil {
		return AttentionDims{}
	}
	d := AttentionDims{T: q.Dim(0), HQ: q.Dim(1), D: q.Dim(2), Scale: a.Scale}
	ck.Tensor("k", k, d.T, -1, d.D)
	if ck.err != nil {
		return d
	}
	d.HKV = k.Dim(1)
	ck.Tensor("v", v, d.T, d.HKV, d.D)
	if ck.err != nil {
		return d
	}
	if d.HKV == 0 || d.HQ%d.HKV != 0 {
		ck.Failf("q has %d heads, not a positive multiple of k's %d heads", d.HQ, d.HKV)
		return d
	}
	cu := a.CuSeqlens
	if len(cu) < 1 || cu[0] != 0 || int(cu[len(cu)-1]) != d.T {
		ck.Failf("cu_seqlens %v must start at 0 and end at T = %d", cu, d.T)
		return d
	}
	for i := 1; i < len(cu); i++ {
		if cu[i] < cu[i-1] {
			ck.Failf("cu_seqlens decreases at index %d (%d < %d)", i, cu[i], cu[i-1])
			return d
		}
	}
	if d.Scale == 0 {
		d.Scale = 1 / math.Sqrt(float64(d.D))
	}
	if math.IsNaN(d.Scale) || math.IsInf(d.Scale, 0) {
		ck.Failf("scale %v is not finite", d.Scale)
	}
	return d
}

// NormRows checks x (rank ≥ 1) and returns rows = numel/C and C = last dim.
func NormRows(ck *Checker, x *Tensor) (rows, c int) {
	ck.Tensor("x", x)
	if ck.err != nil {
		return 0, 0
	}
	if x.Rank() < 1 {
		ck.Failf("x must have rank ≥ 1, has shape %v", x.Shape())
		return 0, 0
	}
	rows = 1
	for i := 0; i < x.Rank()-1; i++ {
		rows *= x.Dim(i)
	}
	return rows, x.Dim(-1)
}

// CheckEps checks that a normalisation epsilon is finite and ≥ 0.
func CheckEps(ck *Checker, eps float64) {
	if !(eps >= 0) || math.IsInf(eps, 0) {
		ck.Failf("eps %v must be finite and ≥ 0", eps)
	}
}

// CheckRoPE validates x [T,H,D] (argument xName), y of the same shape
// (yName), one position per token and theta, and returns T, H and D.
func CheckRoPE(ck *Checker, x, y *Tensor, xName, yName string, positions []int32, theta float64) (t, h, d int) {
	ck.Tensor(xName, x, -1, -1, -1)
	if ck.err != nil {
		return
	}
	t, h, d = x.Dim(0), x.Dim(1), x.Dim(2)
	ck.Tensor(yName, y, t, h, d)
	if d%2 != 0 {
		ck.Failf("head dimension %d of %s is odd", d, xName)
	}
	if len(positions) != t {
		ck.Failf("%d positions for %d tokens", len(positions), t)
	}
	if !(theta > 0) || math.IsInf(theta, 0) {
		ck.Failf("theta %v must be finite and positive", theta)
	}
	return
}

// CheckIDs checks that every id is in [0,n); what names the list.
func CheckIDs(ck *Checker, what string, ids []int32, n int) {
	for i, id := range ids {
		if id < 0 || int(id) >= n {
			ck.Failf("%s[%d] = %d outside [0,%d)", what, i, id, n)
			return
		}
	}
}

// XentDims are the sizes of one cross-entropy call: h is [N,D], emb is [V,D].
type XentDims struct{ N, D, V int }

// CheckXent validates h, emb and c's labels, weights, norm and chunk, and
// returns the sizes known so far.
func CheckXent(ck *Checker, c CrossEntropy, h, emb *Tensor) XentDims {
	ck.Tensor("h", h, -1, -1)
	if ck.err != nil {
		return XentDims{}
	}
	x := XentDims{N: h.Dim(0), D: h.Dim(1)}
	ck.Tensor("emb", emb, -1, x.D)
	if ck.err != nil {
		return x
	}
	x.V = emb.Dim(0)
	if x.V == 0 {
		ck.Failf("emb has no vocabulary rows")
	}
	if len(c.Labels) != x.N {
		ck.Failf("%d labels for %d rows of h", len(c.Labels), x.N)
	}
	for i, l := range c.Labels {
		if l != IgnoreIndex && (l < 0 || int(l) >= x.V) {
			ck.Failf("labels[%d] = %d outside [0,%d) and not IgnoreIndex", i, l, x.V)
			break
		}
	}
	ck.Optional("weights", c.Weights, x.N)
	if !(c.Norm > 0) || math.IsInf(c.Norm, 0) {
		ck.Failf("norm %v must be finite and positive", c.Norm)
	}
	if c.Chunk < 0 {
		ck.Failf("chunk %d is negative", c.Chunk)
	}
	return x
}

// CheckLists validates parallel tensor lists for an optimiser step: every
// list (named by names) has len(lrs) entries, entry i of every list has the
// element count of entry i of the first list, and every rate is finite.
func CheckLists(ck *Checker, lrs []float64, names []string, lists ...[]*Tensor) {
	n := len(lrs)
	for li, l := range lists {
		if len(l) != n {
			ck.Failf("%s has %d tensors, want %d (one per learning rate)", names[li], len(l), n)
			return
		}
	}
	for i := 0; i < n; i++ {
		for li, l := range lists {
			ck.Tensor(fmt.Sprintf("%s[%d]", names[li], i), l[i])
			if li > 0 && ck.err == nil {
				ck.Numel(fmt.Sprintf("%s[%d]", names[li], i), l[i], lists[0][i].Numel())
			}
		}
		if ck.err != nil {
			return
		}
	}
	for i, lr := range lrs {
		if math.IsNaN(lr) || math.IsInf(lr, 0) {
			ck.Failf("lrs[%d] = %v is not finite", i, lr)
			return
		}
	}
}

// CheckAdamW checks the AdamW hyperparameters and the step count t.
func CheckAdamW(ck *Checker, o AdamW, t int) {
	switch {
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		ck.Failf("beta1 %v outside [0,1)", o.Beta1)
	case !(o.Beta2 >= 0 && o.Beta2 < 1):
		ck.Failf("beta2 %v outside [0,1)", o.Beta2)
	case !(o.Eps >= 0) || math.IsInf(o.Eps, 0):
		ck.Failf("eps %v must be finite and ≥ 0", o.Eps)
	case math.IsNaN(o.WeightDecay) || math.IsInf(o.WeightDecay, 0):
		ck.Failf("weight decay %v is not finite", o.WeightDecay)
	case t < 1:
		ck.Failf("step count t = %d, want ≥ 1", t)
	}
}

// CheckWeightDecay checks that an SGD weight decay is finite.
func CheckWeightDecay(ck *Checker, wd float64) {
	if math.IsNaN(wd) || math.IsInf(wd, 0) {
		ck.Failf("weight decay %v is not finite", wd)
	}
}
