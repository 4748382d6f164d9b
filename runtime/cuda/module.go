//go:build cuda

package cuda

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"gorgonia.org/cu"

	"github.com/perkgo/perk/runtime"
)

// ErrKernelNotFound is wrapped by LoadModule and Module.Function when a
// kernel is not in the module.
var ErrKernelNotFound = errors.New("kernel not found in module")

// jitLogSize is the size of the buffer the PTX JIT writes its error log to.
const jitLogSize = 16 << 10

// module is a loaded PTX image; it implements runtime.Module.
type module struct {
	dev  *Device
	name string
	mod  cu.Module // set on the worker; valid until the device is closed

	mu  sync.Mutex
	fns map[string]*function
}

// function is a kernel of a module; it implements runtime.Function.
type function struct {
	dev  *Device
	mod  *module
	name string
	fn   cu.Function
}

var (
	_ runtime.Module   = (*module)(nil)
	_ runtime.Function = (*function)(nil)
)

// Name returns the kernel's symbol name.
func (f *function) Name() string { return f.name }

// LoadModule JIT-compiles the PTX image ptx (cuModuleLoadDataEx) and looks up
// every kernel in kernels; a missing kernel is an error wrapping
// ErrKernelNotFound that names the module and the kernel. Trailing NUL bytes
// are allowed (the image is passed to the driver NUL-terminated); an interior
// NUL is an error, because only text PTX is accepted. A JIT failure includes
// the driver's error log.
func (d *Device) LoadModule(name string, ptx []byte, kernels []string) (runtime.Module, error) {
	image := bytes.TrimRight(ptx, "\x00")
	if len(image) == 0 {
		return nil, fmt.Errorf("cuda load module %q: empty PTX image", name)
	}
	if i := bytes.IndexByte(image, 0); i >= 0 {
		return nil, fmt.Errorf("cuda load module %q: NUL byte at offset %d; only text PTX is supported", name, i)
	}
	text := string(image)
	m := &module{dev: d, name: name, fns: make(map[string]*function, len(kernels))}
	err := d.do(func() error {
		mod, err := loadPTX(text)
		if err != nil {
			return err
		}
		for _, k := range kernels {
			fn, err := mod.Function(k)
			if err != nil {
				_ = mod.Unload()
				return kernelError(name, k, err)
			}
			m.fns[k] = &function{dev: d, mod: m, name: k, fn: fn}
		}
		m.mod = mod
		d.modules = append(d.modules, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cuda load module %q: %w", name, err)
	}
	return m, nil
}

// kernelError describes a failed cuModuleGetFunction.
func kernelError(module, kernel string, err error) error {
	if errors.Is(err, cu.NotFound) {
		return fmt.Errorf("kernel %q in module %q: %w (%w)", kernel, module, ErrKernelNotFound, err)
	}
	return fmt.Errorf("look up kernel %q in module %q: %w", kernel, module, err)
}

// loadPTX loads a PTX text image into the current context, collecting the
// JIT's error log into C memory so that the driver never writes to Go memory.
// Worker only.
func loadPTX(text string) (cu.Module, error) {
	logBuf := cBytes(jitLogSize)
	defer freeCBytes(logBuf)
	mod, err := cu.LoadDataEx(text, &cu.JITErrorLogBuffer{Buffer: logBuf})
	if err != nil {
		if log := cBytesString(logBuf); log != "" {
			return mod, fmt.Errorf("JIT-compile PTX: %w\n%s", err, log)
		}
		return mod, fmt.Errorf("JIT-compile PTX: %w", err)
	}
	return mod, nil
}

// Function returns the kernel called name, looking it up in the module if it
// was not among the kernels listed at load time.
func (m *module) Function(name string) (runtime.Function, error) {
	m.mu.Lock()
	f, ok := m.fns[name]
	m.mu.Unlock()
	if ok {
		return f, nil
	}
	var fn cu.Function
	err := m.dev.do(func() error {
		var err error
		fn, err = m.mod.Function(name)
		if err != nil {
			return kernelError(m.name, name, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cuda module %q: %w", m.name, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.fns[name]; ok {
		return f, nil
	}
	f = &function{dev: m.dev, mod: m, name: name, fn: fn}
	m.fns[name] = f
	return f, nil
}

// Launch runs fn (a Function from this device's LoadModule) on grid×block
// threads with shmem bytes of dynamic shared memory, ordered on stream s. Each
// element of params is one 8-byte kernel-parameter slot; the slots are copied
// into C memory, so the driver reads each parameter's size (4 or 8 bytes) from
// the start of its slot. A grid with no blocks is a no-op; negative
// dimensions, an empty block or a negative shmem are errors. Launch returns
// when the kernel is queued; execution errors surface at the next
// synchronising call.
func (d *Device) Launch(fn runtime.Function, grid, block runtime.Dim3, shmem int, s runtime.Stream, params []uint64) error {
	f, ok := fn.(*function)
	if !ok || f == nil {
		return fmt.Errorf("cuda launch: %T is not a function loaded by a cuda device", fn)
	}
	if f.dev != d {
		return fmt.Errorf("cuda launch %s: function was loaded on %v, not %v", f.name, f.dev, d)
	}
	if grid.X < 0 || grid.Y < 0 || grid.Z < 0 || block.X < 0 || block.Y < 0 || block.Z < 0 || shmem < 0 {
		return fmt.Errorf("cuda launch %s: negative dimension (grid %v, block %v, shmem %d)", f.name, grid, block, shmem)
	}
	if block.Count() == 0 {
		return fmt.Errorf("cuda launch %s: empty block %v", f.name, block)
	}
	if grid.Count() == 0 {
		return nil
	}
	err := d.do(func() error {
		cs, err := d.stream(s)
		if err != nil {
			return err
		}
		args := d.params.load(params)
		return f.fn.Launch(grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, shmem, cs, args)
	})
	if err != nil {
		return fmt.Errorf("cuda launch %s (module %q) grid %v block %v shmem %d stream %d: %w",
			f.name, f.mod.name, grid, block, shmem, uintptr(s), err)
	}
	return nil
}
