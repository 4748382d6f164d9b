package runtime

import (
	"fmt"
	"math"
)

// DType is a storage element type.
type DType uint8

// The storage types kernels read and write. Accumulation is always fp32 (or
// fp64 for F64 data).
const (
	F32 DType = iota
	F16
	BF16
	F64
	I32 // int32: token ids, labels, segment offsets, counters
)

// Size is the element size in bytes.
func (t DType) Size() int {
	switch t {
	case F16, BF16:
		return 2
	case F64:
		return 8
	case I32:
		return 4
	default:
		return 4
	}
}

// String names the type as safetensors does ("F32", "F16", "BF16", "F64").
func (t DType) String() string {
	switch t {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	case F64:
		return "F64"
	case I32:
		return "I32"
	}
	return fmt.Sprintf("DType(%d)", uint8(t))
}

// ParseDType parses "f32", "F32", "bf16", ... .
func ParseDType(s string) (DType, error) {
	switch s {
	case "f32", "F32", "float32":
		return F32, nil
	case "f16", "F16", "float16":
		return F16, nil
	case "bf16", "BF16", "bfloat16":
		return BF16, nil
	case "f64", "F64", "float64":
		return F64, nil
	case "i32", "I32", "int32":
		return I32, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want f32, f16, bf16 or f64)", s)
}

func float32bits(f float32) uint32 { return math.Float32bits(f) }
