# PERK in Go. `make test` and `make demo` work on a fresh machine with Go, gcc
# and git: they install what else they need (scripts/deps.sh).

GO        ?= go
NVCC      ?= nvcc
PTXAS     ?= ptxas
CMAKE     ?= cmake
NVCC_ARCH ?= compute_80
PTX_OUT   ?= kernels/ptx
GPU_CHECK_OUT ?= ./gpu-check-out
BUILD     ?= build

KERNEL_SRCS := $(sort $(wildcard kernels/*.cu))
KERNEL_HDRS := $(wildcard kernels/*.cuh)
FAMILIES    := $(basename $(notdir $(KERNEL_SRCS)))

.PHONY: all deps ptx ptx-check cmake-check build build-cuda vet test test-go fuzz golden bench bench-smoke gpu-check demo selfcheck clean

all: build

deps:
	@./scripts/deps.sh

# Generic PTX (compute_80: runs on Ampere and, by JIT, on Hopper), checked in
# and embedded. PTX_OUT and NVCC_ARCH may be overridden (gpu-check builds sm_90).
ptx:
	@mkdir -p $(PTX_OUT)
	@for f in $(FAMILIES); do \
	  $(NVCC) -ptx -arch=$(NVCC_ARCH) -Ikernels -o $(PTX_OUT)/$$f.ptx kernels/$$f.cu || exit 1; \
	done
	@echo "ptx: $(FAMILIES) -> $(PTX_OUT) ($(NVCC_ARCH))"
	@if [ "$(PTX_OUT)" = kernels/ptx ]; then $(GO) generate ./kernels/emu; fi  # emulator rebuild digest

# Rebuild into a temp dir, fail if the checked-in PTX differs; ptxas -v for
# sm_80 and sm_90, fail on any spill, write kernels/ptx/RESOURCES.md.
ptx-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(MAKE) -s ptx PTX_OUT=$$tmp >/dev/null || exit 1; \
	if ! diff -r -q $$tmp kernels/ptx --exclude=RESOURCES.md >/dev/null; then \
	  echo "ptx-check: kernels/ptx is stale; run 'make ptx' and commit:"; diff -r -q $$tmp kernels/ptx --exclude=RESOURCES.md; exit 1; \
	fi; \
	./scripts/ptx-resources.sh kernels/ptx kernels/ptx/RESOURCES.md && echo "ptx-check: PTX up to date, no spills (kernels/ptx/RESOURCES.md)"

# CMake's CUDA language must build the same PTX.
cmake-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(CMAKE) -S . -B $$tmp -DCMAKE_CUDA_COMPILER=$$(command -v $(NVCC)) >$$tmp.log 2>&1 && \
	$(CMAKE) --build $$tmp >>$$tmp.log 2>&1 || { cat $$tmp.log; rm -f $$tmp.log; exit 1; }; rm -f $$tmp.log; \
	for f in $(FAMILIES); do \
	  cmp -s $$tmp/ptx/$$f.ptx kernels/ptx/$$f.ptx || { echo "cmake-check: $$f.ptx differs between CMake and make ptx"; exit 1; }; \
	done; echo "cmake-check: CMake builds identical PTX for $(FAMILIES)"

# The library and, in $(BUILD)/, the four commands.
build:
	$(GO) build ./...
	$(GO) build -o $(BUILD)/ ./cmd/...

# CUDA 13's cuda.h declares cuCtxCreate in a form gorgonia.org/cu does not
# call; with CUDA 13, set CUDA_COMPAT_INCLUDE to a folder holding an older
# cuda.h (e.g. a copy of Debian nvidia-cuda-toolkit's /usr/include/cuda.h).
# (Go's default CGO_CFLAGS, -O2 -g, are kept.)
CUDA_CGO_ENV = $(if $(CUDA_COMPAT_INCLUDE),CGO_CFLAGS="-I$(CUDA_COMPAT_INCLUDE) $(or $(CGO_CFLAGS),-O2 -g)")

build-cuda:
	$(CUDA_CGO_ENV) $(GO) build -tags cuda ./...
	$(CUDA_CGO_ENV) $(GO) build -tags cuda -o $(BUILD)/ ./cmd/...

vet:
	$(GO) vet ./...
	$(GO) vet -tags cuda ./...
	$(GO) vet -tags openblas ./nn/cpu/
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "gofmt needed: $$bad"; exit 1; fi

test: deps ptx-check cmake-check vet test-go fuzz bench-smoke

# The Go tests; the golden harness writes the per-kernel error table, shown last.
test-go:
	@report=$$(mktemp); trap 'rm -f $$report' EXIT; \
	PERK_GOLDEN_REPORT=$$report $(GO) test -count=1 -timeout 25m ./... || exit 1; \
	$(GO) test -count=1 -race ./runtime/... || exit 1; \
	PERK_EMU_SCHEDULE=reverse $(GO) test -count=1 ./kernels/ || exit 1; \
	echo; echo "Golden kernel tests (emu device): max relative error per kernel"; cat $$report

# Brief runs of the fuzzers over their committed seeds and new inputs. The
# budgets are execution counts, not durations: a duration-based -fuzztime can
# end with a spurious "context deadline exceeded" in Go 1.26's fuzz
# coordinator (go.dev/issue/75804) on a loaded machine.
FUZZ_HEADER_EXECS ?= 60000x
FUZZ_ENCODE_EXECS ?= 15000x
fuzz:
	$(GO) test -run xxx -fuzz FuzzParseHeader -fuzztime $(FUZZ_HEADER_EXECS) ./nn/safetensors/
	$(GO) test -run xxx -fuzz FuzzEncode -fuzztime $(FUZZ_ENCODE_EXECS) -fuzzminimizetime 100x ./nn/tokenizer/

# Regenerate the PyTorch reference fixtures (installs Debian's python3-torch).
golden:
	./tools/golden/gen.sh

# cmd/bench on the emulator at tiny shapes: every suite's correctness column.
bench-smoke:
	$(GO) run ./cmd/bench run --device emu --suite all --shapes tiny --iters 2 >/dev/null
	@d=$$(mktemp -d); trap 'rm -rf $$d' EXIT; \
	$(GO) run ./cmd/bench scaling --device cpu --lengths 128,256 --examples 1 --out $$d >/dev/null
	@echo "bench-smoke: cmd/bench ran every suite on the emu device and the PERK vs ICR scaling run on the cpu"

bench:
	$(GO) test -run xxx -bench . -benchtime 200x ./runtime/... ./bench/...

gpu-check:
	GPU_CHECK_OUT=$(GPU_CHECK_OUT) ./scripts/gpu-check.sh

demo:
	GO=$(GO) bash scripts/demo.sh

selfcheck:
	$(GO) run ./cmd/bench selfcheck

clean:
	rm -rf $(BUILD) $(GPU_CHECK_OUT)
