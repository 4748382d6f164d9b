package gpu

import (
	"fmt"

	"github.com/perkgo/perk/nn"
	"github.com/perkgo/perk/nn/cpu"
	"github.com/perkgo/perk/runtime"
	_ "github.com/perkgo/perk/runtime/emu" // registers the "emu" device kind
)

// Kinds lists the backend names Open accepts.
func Kinds() []string { return []string{"cpu", "emu", "cuda"} }

// Open returns the backend named kind:
//
//   - "cpu": the pure-Go reference backend (nn/cpu, F32 and F64);
//   - "emu": this backend on the CUDA-on-CPU emulator (runtime/emu);
//   - "cuda": this backend on GPU 0, in a binary built with -tags cuda
//     (otherwise the error wraps runtime.ErrNoCUDA).
//
// A GPU backend from Open owns its device: it is a *Backend, whose Close
// releases the memory pool and closes the device (opts may set further
// options; they are ignored for "cpu"). Callers holding only the nn.Backend
// can close it through io.Closer.
func Open(kind string, opts ...Option) (nn.Backend, error) {
	switch kind {
	case "cpu":
		return cpu.New(), nil
	case "emu", "cuda":
		dev, err := runtime.Open(kind)
		if err != nil {
			return nil, fmt.Errorf("open backend %q: %w", kind, err)
		}
		b, err := New(dev, append(append([]Option(nil), opts...), WithDeviceOwnership())...)
		if err != nil {
			_ = dev.Close()
			return nil, fmt.Errorf("open backend %q: %w", kind, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("open backend %q: unknown backend (have %v)", kind, Kinds())
}
