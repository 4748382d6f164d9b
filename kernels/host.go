package kernels

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

// NewArray allocates an uninitialised array on dev. Free it with FreeArray.
func NewArray(dev runtime.Device, t runtime.DType, shape ...int) (Array, error) {
	a := Array{Dev: dev, DType: t, Shape: append([]int(nil), shape...)}
	for _, s := range shape {
		if s < 0 {
			return Array{}, fmt.Errorf("new array: negative dimension in shape %v", shape)
		}
	}
	p, err := dev.Alloc(max(a.Bytes(), 1))
	if err != nil {
		return Array{}, fmt.Errorf("new %s array %v: %w", t, shape, err)
	}
	a.Ptr = p
	return a, nil
}

// FreeArray releases an array made by NewArray or Upload.
func FreeArray(a Array) error { return a.Dev.Free(a.Ptr) }

// Upload allocates an array of type t and shape on dev holding vals, each
// rounded to t.
func Upload(dev runtime.Device, t runtime.DType, shape []int, vals []float64) (Array, error) {
	a, err := NewArray(dev, t, shape...)
	if err != nil {
		return Array{}, err
	}
	if a.Numel() != len(vals) {
		_ = FreeArray(a)
		return Array{}, fmt.Errorf("upload: shape %v holds %d values, got %d", shape, a.Numel(), len(vals))
	}
	if len(vals) > 0 {
		if err := dev.MemcpyHtoD(a.Ptr, runtime.Encode(t, vals), 0); err != nil {
			_ = FreeArray(a)
			return Array{}, fmt.Errorf("upload: %w", err)
		}
	}
	return a, nil
}

// Download copies an array back to the host as float64 values.
func Download(a Array) ([]float64, error) {
	buf := make([]byte, a.Bytes())
	if len(buf) > 0 {
		if err := a.Dev.MemcpyDtoH(buf, a.Ptr, 0); err != nil {
			return nil, fmt.Errorf("download: %w", err)
		}
	}
	return runtime.Decode(a.DType, buf)
}
