// Package nn holds the device-agnostic pieces of the model code: the Tensor
// handle, the Backend interface that the CPU reference (nn/cpu) and the GPU
// backend (nn/gpu) implement, and, in later files and sub-packages, the layers,
// architectures, weight loading and tokenizer.
package nn

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

// Storage is where a tensor's elements live. Host memory is HostF32 or HostF64;
// a device backend defines its own Storage (a device buffer) and is the only
// code that looks inside it.
type Storage interface {
	// Device names the device that owns the memory: "cpu" for host memory,
	// otherwise the device kind ("emu", "cuda").
	Device() string
}

// HostF32 is host memory holding float32 elements.
type HostF32 []float32

// Device reports "cpu".
func (HostF32) Device() string { return "cpu" }

// HostF64 is host memory holding float64 elements.
type HostF64 []float64

// Device reports "cpu".
func (HostF64) Device() string { return "cpu" }

// Tensor is a dense, row-major array with a shape, a storage dtype and its
// storage. Tensors carry no strides and no autograd state; a Backend's ops
// read and write them. Several Tensors may share one Storage (see Reshape).
type Tensor struct {
	shape []int
	dtype runtime.DType
	data  Storage
}

// New wraps storage as a tensor of the given dtype and shape. For host
// storage the dtype must match the slice type (F32 for HostF32, F64 for
// HostF64) and the slice must hold exactly the shape's element count; device
// storage is taken as given, its backend having sized it.
func New(dt runtime.DType, data Storage, shape ...int) (*Tensor, error) {
	n, err := numel(shape)
	if err != nil {
		return nil, err
	}
	if data == nil {
		return nil, fmt.Errorf("nn.New: nil storage")
	}
	switch s := data.(type) {
	case HostF32:
		if dt != runtime.F32 {
			return nil, fmt.Errorf("nn.New: HostF32 storage with dtype %v", dt)
		}
		if len(s) != n {
			return nil, fmt.Errorf("nn.New: HostF32 storage has %d elements, shape %v needs %d", len(s), shape, n)
		}
	case HostF64:
		if dt != runtime.F64 {
			return nil, fmt.Errorf("nn.New: HostF64 storage with dtype %v", dt)
		}
		if len(s) != n {
			return nil, fmt.Errorf("nn.New: HostF64 storage has %d elements, shape %v needs %d", len(s), shape, n)
		}
	}
	return &Tensor{shape: append([]int(nil), shape...), dtype: dt, data: data}, nil
}

// Zeros returns a zero-filled host tensor. Host tensors are F32 or F64.
func Zeros(dt runtime.DType, shape ...int) (*Tensor, error) {
	n, err := numel(shape)
	if err != nil {
		return nil, err
	}
	switch dt {
	case runtime.F32:
		return New(dt, HostF32(make([]float32, n)), shape...)
	case runtime.F64:
		return New(dt, HostF64(make([]float64, n)), shape...)
	}
	return nil, fmt.Errorf("nn.Zeros: host tensors are F32 or F64, not %v", dt)
}

// FromF32 wraps data (not a copy) as an F32 host tensor of the given shape.
func FromF32(data []float32, shape ...int) (*Tensor, error) {
	return New(runtime.F32, HostF32(data), shape...)
}

// FromF64 wraps data (not a copy) as an F64 host tensor of the given shape.
func FromF64(data []float64, shape ...int) (*Tensor, error) {
	return New(runtime.F64, HostF64(data), shape...)
}

func numel(shape []int) (int, error) {
	n := 1
	for i, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("nn: shape %v has negative dimension %d", shape, i)
		}
		n *= d
	}
	return n, nil
}

// Shape returns a copy of the tensor's shape.
func (t *Tensor) Shape() []int { return append([]int(nil), t.shape...) }

// Rank is the number of dimensions.
func (t *Tensor) Rank() int { return len(t.shape) }

// Dim returns the size of dimension i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.shape)
	}
	return t.shape[i]
}

// Numel is the number of elements (1 for a rank-0 tensor).
func (t *Tensor) Numel() int {
	n := 1
	for _, d := range t.shape {
		n *= d
	}
	return n
}

// DType is the storage element type.
func (t *Tensor) DType() runtime.DType { return t.dtype }

// Storage returns the tensor's storage.
func (t *Tensor) Storage() Storage { return t.data }

// Device names the device holding the tensor ("cpu" for host tensors).
func (t *Tensor) Device() string { return t.data.Device() }

// F32 returns the host slice of an F32 host tensor (not a copy).
func (t *Tensor) F32() ([]float32, error) {
	s, ok := t.data.(HostF32)
	if !ok {
		return nil, fmt.Errorf("tensor %v %v on %s is not an F32 host tensor", t.shape, t.dtype, t.Device())
	}
	return s, nil
}

// F64 returns the host slice of an F64 host tensor (not a copy).
func (t *Tensor) F64() ([]float64, error) {
	s, ok := t.data.(HostF64)
	if !ok {
		return nil, fmt.Errorf("tensor %v %v on %s is not an F64 host tensor", t.shape, t.dtype, t.Device())
	}
	return s, nil
}

// Reshape returns a tensor with a new shape over the same storage; the
// element count must not change.
func (t *Tensor) Reshape(shape ...int) (*Tensor, error) {
	n, err := numel(shape)
	if err != nil {
		return nil, err
	}
	if n != t.Numel() {
		return nil, fmt.Errorf("reshape %v to %v: element count %d != %d", t.shape, shape, t.Numel(), n)
	}
	return &Tensor{shape: append([]int(nil), shape...), dtype: t.dtype, data: t.data}, nil
}

// String describes the tensor without its elements, e.g. "Tensor[4 8]F32@cpu".
func (t *Tensor) String() string {
	if t == nil {
		return "Tensor(nil)"
	}
	return fmt.Sprintf("Tensor%v%v@%s", t.shape, t.dtype, t.Device())
}
