package model

import (
	"fmt"

	"github.com/perkgo/perk/nn"
)

// Param is one named tensor of a model or adapter.
type Param struct {
	// Name is the tensor's checkpoint name (Hugging Face or PEFT).
	Name string
	// Value is the tensor; it is shared, not copied.
	Value *nn.Tensor
}

// ParamSet is an ordered set of named tensors: a model's base weights, an
// adapter's LoRA tensors, or gradients laid out like either.
type ParamSet struct {
	list  []Param
	index map[string]int
}

// NewParamSet builds a set from params in order; names must be unique and
// tensors non-nil.
func NewParamSet(params []Param) (*ParamSet, error) {
	s := &ParamSet{list: make([]Param, 0, len(params)), index: make(map[string]int, len(params))}
	for _, p := range params {
		if p.Value == nil {
			return nil, fmt.Errorf("param set: %s is nil", p.Name)
		}
		if _, dup := s.index[p.Name]; dup {
			return nil, fmt.Errorf("param set: %s given twice", p.Name)
		}
		s.index[p.Name] = len(s.list)
		s.list = append(s.list, p)
	}
	return s, nil
}

// Len is the number of tensors.
func (s *ParamSet) Len() int { return len(s.list) }

// Params returns the tensors with their names, in order (a copy of the list;
// the tensors are shared).
func (s *ParamSet) Params() []Param { return append([]Param(nil), s.list...) }

// Names returns the names in order.
func (s *ParamSet) Names() []string {
	out := make([]string, len(s.list))
	for i, p := range s.list {
		out[i] = p.Name
	}
	return out
}

// Tensors returns the tensors in order (shared, not copied), e.g. for an
// optimiser step.
func (s *ParamSet) Tensors() []*nn.Tensor {
	out := make([]*nn.Tensor, len(s.list))
	for i, p := range s.list {
		out[i] = p.Value
	}
	return out
}

// Get returns the tensor called name.
func (s *ParamSet) Get(name string) (*nn.Tensor, bool) {
	i, ok := s.index[name]
	if !ok {
		return nil, false
	}
	return s.list[i].Value, true
}

// NumElements is the total element count.
func (s *ParamSet) NumElements() int {
	n := 0
	for _, p := range s.list {
		n += p.Value.Numel()
	}
	return n
}

// ZerosLike allocates a zero-filled set with the same names, shapes and
// dtypes on backend b (for gradients).
func (s *ParamSet) ZerosLike(b nn.Backend) (*ParamSet, error) {
	out := make([]Param, len(s.list))
	for i, p := range s.list {
		t, err := b.Alloc(p.Value.DType(), p.Value.Shape()...)
		if err != nil {
			return nil, fmt.Errorf("param set: %s: %w", p.Name, err)
		}
		out[i] = Param{Name: p.Name, Value: t}
	}
	return NewParamSet(out)
}

// Zero sets every tensor of the set to zero.
func (s *ParamSet) Zero(b nn.Backend) error {
	for _, p := range s.list {
		if err := b.Zero(p.Value); err != nil {
			return fmt.Errorf("param set: %s: %w", p.Name, err)
		}
	}
	return nil
}

// sameLayout reports the first difference in names or shapes between s and
// o, or nil.
func (s *ParamSet) sameLayout(o *ParamSet) error {
	if len(s.list) != len(o.list) {
		return fmt.Errorf("%d tensors, want %d", len(o.list), len(s.list))
	}
	for i, p := range s.list {
		q := o.list[i]
		if q.Name != p.Name {
			return fmt.Errorf("tensor %d is %s, want %s", i, q.Name, p.Name)
		}
		if !sameShape(q.Value.Shape(), p.Value.Shape()) {
			return fmt.Errorf("%s has shape %v, want %v", q.Name, q.Value.Shape(), p.Value.Shape())
		}
	}
	return nil
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
