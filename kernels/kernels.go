// Package kernels holds the project's CUDA kernels (the *.cu files beside this
// one), the PTX built from them (ptx/, checked in and embedded), and a typed Go
// wrapper per kernel family. Wrappers check devices, dtypes and shapes, pick
// the launch grid and pack every parameter into an 8-byte slot; nothing above
// this package calls runtime.Device.Launch directly.
package kernels

import (
	"embed"
	"fmt"
	"sync"

	"github.com/perkgo/perk/runtime"
)

//go:embed ptx/*.ptx
var ptxFS embed.FS

// Array is a contiguous device array: the device it lives on, its address,
// storage type and shape (row-major).
type Array struct {
	Dev   runtime.Device
	Ptr   runtime.DevicePtr
	DType runtime.DType
	Shape []int
}

// Numel is the number of elements (the product of Shape; 1 for a scalar).
func (a Array) Numel() int {
	n := 1
	for _, s := range a.Shape {
		n *= s
	}
	return n
}

// Bytes is Numel·DType.Size().
func (a Array) Bytes() int { return a.Numel() * a.DType.Size() }

// family is one .cu file: its PTX image name and the kernels it must export.
type family struct {
	name    string
	kernels []string
}

type moduleKey struct {
	dev    runtime.Device
	family string
}

var (
	modMu   sync.Mutex
	modules = map[moduleKey]runtime.Module{}
	fnCache = map[moduleKey]map[string]runtime.Function{}
)

// PTX returns the embedded PTX of a kernel family ("gemm", "reduce", ...).
func PTX(familyName string) ([]byte, error) {
	b, err := ptxFS.ReadFile("ptx/" + familyName + ".ptx")
	if err != nil {
		return nil, fmt.Errorf("kernels: no embedded PTX for family %q: %w", familyName, err)
	}
	return b, nil
}

// function returns kernel name of family f on dev, loading the family's
// module on first use (which checks that every kernel of the family exists).
func function(dev runtime.Device, f family, name string) (runtime.Function, error) {
	if dev == nil {
		return nil, fmt.Errorf("kernel %s: nil device", name)
	}
	key := moduleKey{dev, f.name}
	modMu.Lock()
	defer modMu.Unlock()
	fns, ok := fnCache[key]
	if !ok {
		ptx, err := PTX(f.name)
		if err != nil {
			return nil, err
		}
		mod, err := dev.LoadModule(f.name, ptx, f.kernels)
		if err != nil {
			return nil, fmt.Errorf("load kernel family %s on %s: %w", f.name, dev.Name(), err)
		}
		fns = make(map[string]runtime.Function, len(f.kernels))
		for _, k := range f.kernels {
			fn, err := mod.Function(k)
			if err != nil {
				return nil, fmt.Errorf("load kernel family %s: %w", f.name, err)
			}
			fns[k] = fn
		}
		modules[key] = mod
		fnCache[key] = fns
	}
	fn, ok := fns[name]
	if !ok {
		return nil, fmt.Errorf("kernel %s is not part of family %s", name, f.name)
	}
	return fn, nil
}

// Forget drops the cached modules of dev; call it before closing a device.
func Forget(dev runtime.Device) {
	modMu.Lock()
	defer modMu.Unlock()
	for k := range modules {
		if k.dev == dev {
			delete(modules, k)
			delete(fnCache, k)
		}
	}
}

// Families lists every kernel family and its kernels, for reports and for the
// test that every kernel has a golden test.
func Families() map[string][]string {
	out := map[string][]string{}
	for _, f := range allFamilies {
		out[f.name] = append([]string(nil), f.kernels...)
	}
	return out
}

// allFamilies is filled by newFamily from each family's file.
var allFamilies []family

// newFamily declares a kernel family (one .cu file and its PTX image) and
// the kernels every device must provide for it.
func newFamily(name string, kernels ...string) family {
	f := family{name, kernels}
	allFamilies = append(allFamilies, f)
	return f
}

// launch1D runs an elementwise kernel over n elements with the grid-stride
// shape every 1-D kernel here uses.
func launch1D(dev runtime.Device, s runtime.Stream, f family, name string, n int, params ...uint64) error {
	fn, err := function(dev, f, name)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	blocks := min((n+elementwiseThreads-1)/elementwiseThreads, maxElementwiseBlocks)
	if err := dev.Launch(fn, runtime.D1(blocks), runtime.D1(elementwiseThreads), 0, s, params); err != nil {
		return fmt.Errorf("launch %s: %w", name, err)
	}
	return nil
}

const (
	elementwiseThreads   = 256
	maxElementwiseBlocks = 4096
)

// suffix is the kernel-name suffix of a storage type.
func suffix(t runtime.DType) string {
	switch t {
	case runtime.F32:
		return "f32"
	case runtime.BF16:
		return "bf16"
	case runtime.F16:
		return "f16"
	}
	return "f64"
}

// check helpers: each error names the kernel and the argument.

func checkDev(kernel string, dev runtime.Device, args ...namedArray) error {
	for _, a := range args {
		if a.a.Dev == nil {
			return fmt.Errorf("%s: argument %s has no device", kernel, a.name)
		}
		if a.a.Dev != dev {
			return fmt.Errorf("%s: argument %s is on %s, want %s", kernel, a.name, a.a.Dev.Name(), dev.Name())
		}
		if a.a.Ptr == 0 && a.a.Numel() > 0 {
			return fmt.Errorf("%s: argument %s has a nil pointer", kernel, a.name)
		}
	}
	return nil
}

func checkDType(kernel, arg string, a Array, allowed ...runtime.DType) error {
	for _, t := range allowed {
		if a.DType == t {
			return nil
		}
	}
	return fmt.Errorf("%s: argument %s has dtype %s, want one of %v", kernel, arg, a.DType, allowed)
}

func checkSameLen(kernel string, a, b namedArray) error {
	if a.a.Numel() != b.a.Numel() {
		return fmt.Errorf("%s: argument %s has %d elements but %s has %d", kernel, b.name, b.a.Numel(), a.name, a.a.Numel())
	}
	return nil
}

type namedArray struct {
	name string
	a    Array
}

func arg(name string, a Array) namedArray { return namedArray{name, a} }
