#!/usr/bin/env bash
# gpu-check.sh: the checks that need a real NVIDIA GPU (written for an H200
# with its own CUDA 13 toolkit and no network). Run from anywhere; it works in
# the repository root. Every step has a timeout and its own log,
# $GPU_CHECK_OUT/<step>.log; a failing step does not stop the others. The
# whole run stays inside GPU_CHECK_BUDGET seconds (default 540, under 10
# minutes); the last steps are skipped when the budget runs out. A summary table (step, PASS/FAIL/SKIP, seconds, note) is printed
# last and written to $GPU_CHECK_OUT/summary.md. Exit status 1 if any step
# failed.
#
# Steps:
#   nvidia-smi   GPU, driver, toolkit and Go versions
#   ptx-sm90     make ptx PTX_OUT=$GPU_CHECK_OUT/ptx-sm90 NVCC_ARCH=sm_90 (recorded, not compared)
#   build-cuda   go build -tags cuda ./... with the toolkit's headers; if that
#                fails on cuCtxCreate (gorgonia.org/cu v0.9.6 calls the
#                3-argument form, which CUDA 13's cuda.h no longer declares),
#                retry with an older cuda.h from $CUDA_COMPAT_INCLUDE
#   test-cuda    PERK_DEVICE=cuda go test -tags cuda ./runtime/cuda/ ./kernels/...
#   test-binary  go test -tags cuda -c -o $GPU_CHECK_OUT/kernels.test ./kernels/
#   memcheck     compute-sanitizer --tool memcheck   kernels.test -test.run Golden
#   racecheck    compute-sanitizer --tool racecheck  kernels.test -test.run Golden
#   bench        go test -tags cuda -run xxx -bench . -benchtime 20x ./bench/ ./runtime/... > bench.txt
#   kernel-bench cmd/bench run --device cuda --suite all: every kernel timed next to its
#                same-run peer (cuBLAS GEMM, copy bandwidth, naive attention) with its
#                error against a float64 reference > kernel-bench.txt, kernel-bench.json
#   scaling      cmd/bench scaling --device cuda --meta: PERK vs ICR per example, and a
#                meta-gradient per example, at 1K-16K tokens on a GPT-2-small-shaped
#                model > scaling/ (table, JSON, plot),
#                and with PERK learning one segment at a time > scaling-grouped/
#   e2e          the tools with -tags cuda on a tiny task: perk-data, perk-train
#                --mode pretrain, perk-train (PERK) and perk-eval, all --device cuda
#
# Environment:
#   GPU_CHECK_OUT        output folder (default ./gpu-check-out)
#   GPU_CHECK_BUDGET     total seconds for all steps (default 540)
#   CUDA_HOME            toolkit root (default: from nvcc on PATH, else /usr/local/cuda)
#   CUDA_COMPAT_INCLUDE  folder with a pre-13 cuda.h, e.g. a copy of Debian's
#                        CUDA 11.8 include/cuda.h (default ./third_party/cuda-11.8-include,
#                        else /usr/include/cuda.h when it is older than CUDA 13)
set -u
set -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || { echo "gpu-check: cannot cd to the repository root" >&2; exit 2; }
ROOT=$(pwd)

OUT=${GPU_CHECK_OUT:-./gpu-check-out}
mkdir -p "$OUT" || { echo "gpu-check: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET:-540}
START=$SECONDS
SKIP_RC=200 # a step function returns this to record SKIP

# No network: never let go reach for a proxy or a newer toolchain.
export GOPROXY=${GOPROXY:-off}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export CGO_ENABLED=1

# ---- toolchain discovery ---------------------------------------------------

if [ -z "${CUDA_HOME:-}" ]; then
  if [ -n "${CUDA_PATH:-}" ]; then
    CUDA_HOME=$CUDA_PATH
  elif command -v nvcc >/dev/null 2>&1; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
  elif [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  else
    CUDA_HOME=/usr/local/cuda
  fi
fi
export CUDA_HOME
export PATH="$CUDA_HOME/bin:$PATH"
NVCC_BIN=$(command -v nvcc 2>/dev/null || true)

SANITIZER=""
for s in "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer" "$(command -v compute-sanitizer 2>/dev/null || true)"; do
  if [ -n "$s" ] && [ -x "$s" ]; then SANITIZER=$s; break; fi
done

GO_BIN=$(command -v go 2>/dev/null || true)
if [ -z "$GO_BIN" ] && [ -x /usr/local/go/bin/go ]; then
  GO_BIN=/usr/local/go/bin/go
  export PATH="/usr/local/go/bin:$PATH"
fi

# cuda_h_version DIR prints CUDA_VERSION from DIR/cuda.h (e.g. 11080).
cuda_h_version() {
  sed -n 's/^#define CUDA_VERSION \([0-9][0-9]*\).*/\1/p' "$1/cuda.h" 2>/dev/null | head -n 1
}

# compat_include prints a folder holding a pre-CUDA-13 cuda.h, or fails.
compat_include() {
  local d v
  for d in "${CUDA_COMPAT_INCLUDE:-}" "$ROOT/third_party/cuda-11.8-include"; do
    if [ -n "$d" ] && [ -f "$d/cuda.h" ]; then
      (cd "$d" && pwd)
      return 0
    fi
  done
  # A system cuda.h (Debian's nvidia-cuda-toolkit) cannot be named with -I
  # /usr/include (gcc keeps system folders last), so copy it alone.
  v=$(cuda_h_version /usr/include)
  if [ -n "$v" ] && [ "$v" -lt 13000 ]; then
    mkdir -p "$OUT/compat-include" && cp /usr/include/cuda.h "$OUT/compat-include/" && {
      echo "$OUT/compat-include"
      return 0
    }
  fi
  return 1
}

# ---- step machinery --------------------------------------------------------

NAMES=()
RESULTS=()
TIMES=()
NOTES=()
NOTE=""

remaining() { echo $((BUDGET - (SECONDS - START))); }

# tmo LIMIT CMD... runs CMD under timeout, clipped to the time left in the
# budget (keeping 10 s in hand for the kill grace and the summary).
tmo() {
  local limit=$1 left
  shift
  left=$(($(remaining) - 10))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    echo "gpu-check: no time left in the ${BUDGET}s budget for: $*"
    return 124
  fi
  timeout -k 5 "$limit" "$@"
}

# logrun LOG LIMIT CMD... appends the command line and its output to LOG.
logrun() {
  local log=$1 limit=$2 rc
  shift 2
  printf '+ %s\n' "$*" >>"$log"
  tmo "$limit" "$@" >>"$log" 2>&1
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then echo "gpu-check: timed out after ${limit}s or less (budget)" >>"$log"; fi
  printf '# exit status %s\n' "$rc" >>"$log"
  return "$rc"
}

# step NAME FUNC runs FUNC LOG and records its result.
step() {
  local name=$1 fn=$2 log="$OUT/$1.log" t0=$SECONDS rc res
  NOTE=""
  : >"$log"
  echo "== $name"
  if [ "$(remaining)" -lt 20 ]; then
    rc=$SKIP_RC
    NOTE="time budget (${BUDGET}s) used up"
    echo "$NOTE" >>"$log"
  else
    "$fn" "$log"
    rc=$?
  fi
  case $rc in
    0) res=PASS ;;
    "$SKIP_RC") res=SKIP ;;
    124 | 137)
      res=FAIL
      NOTE="timed out${NOTE:+; $NOTE}"
      ;;
    *) res=FAIL ;;
  esac
  NAMES+=("$name")
  RESULTS+=("$res")
  TIMES+=($((SECONDS - t0)))
  NOTES+=("$NOTE")
  echo "   $res ($((SECONDS - t0))s)${NOTE:+ - $NOTE}"
}

need_go() {
  if [ -z "$GO_BIN" ]; then
    NOTE="go not found on PATH or in /usr/local/go/bin"
    echo "$NOTE" >>"$1"
    return 1
  fi
}

# test_pkgs LOG PATTERN... prints the packages among PATTERN that have tests.
test_pkgs() {
  local log=$1
  shift
  tmo 60 go list -tags cuda -e -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' "$@" 2>>"$log" | sed '/^$/d'
}

# ---- steps -----------------------------------------------------------------

step_nvidia_smi() {
  local log=$1 rc
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    NOTE="nvidia-smi not found"
    echo "$NOTE" >>"$log"
    return 1
  fi
  logrun "$log" 30 nvidia-smi
  rc=$?
  logrun "$log" 15 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv
  {
    echo "CUDA_HOME=$CUDA_HOME"
    echo "nvcc=${NVCC_BIN:-<none>}"
    [ -n "$NVCC_BIN" ] && "$NVCC_BIN" --version
    echo "cuda.h CUDA_VERSION=$(cuda_h_version "$CUDA_HOME/include")"
    echo "compute-sanitizer=${SANITIZER:-<none>}"
    echo "go=${GO_BIN:-<none>}"
    [ -n "$GO_BIN" ] && go version && go env GOOS GOARCH GOMODCACHE GOFLAGS GOPROXY
  } >>"$log" 2>&1
  if [ "$rc" = 0 ]; then
    NOTE=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n 1)
  fi
  return "$rc"
}

step_ptx() {
  local log=$1 dir="$OUT/ptx-sm90" rc
  if [ ! -f Makefile ]; then
    NOTE="no Makefile"
    echo "$NOTE" >>"$log"
    return "$SKIP_RC"
  fi
  if [ -z "$NVCC_BIN" ]; then
    NOTE="nvcc not found (CUDA_HOME=$CUDA_HOME)"
    echo "$NOTE" >>"$log"
    return 1
  fi
  rm -rf "$dir"
  logrun "$log" 90 make ptx PTX_OUT="$dir" NVCC_ARCH=sm_90 NVCC="$NVCC_BIN"
  rc=$?
  {
    echo "# produced:"
    ls -l "$dir" 2>&1
    grep -H -m 2 -E '^\.(version|target)' "$dir"/*.ptx 2>/dev/null
  } >>"$log"
  NOTE="$(find "$dir" -name '*.ptx' 2>/dev/null | wc -l) PTX files in ptx-sm90/ ($("$NVCC_BIN" --version | sed -n 's/.*release \([0-9.]*\).*/nvcc \1/p'))"
  return "$rc"
}

step_build() {
  local log=$1 rc compat
  need_go "$log" || return 1
  export CGO_CFLAGS="-I$CUDA_HOME/include"
  export CGO_LDFLAGS="-L$CUDA_HOME/lib64/stubs -L$CUDA_HOME/lib64"
  echo "# attempt 1: the toolkit's headers (CUDA_VERSION $(cuda_h_version "$CUDA_HOME/include"))" >>"$log"
  logrun "$log" 150 go build -tags cuda ./...
  rc=$?
  if [ "$rc" = 0 ]; then
    NOTE="toolkit headers"
    return 0
  fi
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then return "$rc"; fi
  if ! grep -q 'cuCtxCreate' "$log"; then
    NOTE="failed, not on cuCtxCreate; no retry"
    return "$rc"
  fi
  {
    echo
    echo "#############################################################################"
    echo "# The build failed on cuCtxCreate: gorgonia.org/cu v0.9.6 calls the 3-argument"
    echo "# cuCtxCreate, and this toolkit's cuda.h (CUDA_VERSION $(cuda_h_version "$CUDA_HOME/include"))"
    echo "# declares it differently (CUDA 13: cuCtxCreate_v4 with CUctxCreateParams)."
    grep -n -m 5 'cuCtxCreate' "$log" | sed 's/^/#   /'
    echo "#############################################################################"
  } >>"$log" 2>&1
  echo "   build failed on cuCtxCreate (gorgonia.org/cu vs CUDA 13 cuda.h); retrying with an older cuda.h"
  if ! compat=$(compat_include); then
    NOTE="cuCtxCreate vs CUDA 13 cuda.h; no compat header (set CUDA_COMPAT_INCLUDE to a folder with CUDA 11.8's cuda.h)"
    echo "# $NOTE" >>"$log"
    return "$rc"
  fi
  # The compat folder comes first so that <cuda.h> resolves there; NVTX and
  # cudaProfiler.h still come from the toolkit. The driver keeps exporting the
  # older entry points (cuCtxCreate_v2, ...), so linking and running work.
  export CGO_CFLAGS="-I$compat -I$CUDA_HOME/include"
  # Link against the driver's own libcuda.so.1 when it can be found: it keeps
  # every entry point an older cuda.h refers to, which the CUDA 13 stub may not.
  local drvlib
  drvlib=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ { print $NF; exit }')
  if [ -n "$drvlib" ] && [ -e "$drvlib" ]; then
    mkdir -p "$OUT/compat-lib" && ln -sf "$drvlib" "$OUT/compat-lib/libcuda.so"
    export CGO_LDFLAGS="-L$OUT/compat-lib $CGO_LDFLAGS"
  fi
  echo "# attempt 2: CGO_CFLAGS=$CGO_CFLAGS CGO_LDFLAGS=$CGO_LDFLAGS (compat cuda.h CUDA_VERSION $(cuda_h_version "$compat"), driver libcuda ${drvlib:-not found})" >>"$log"
  logrun "$log" 150 go build -tags cuda ./...
  rc=$?
  if [ "$rc" = 0 ]; then
    NOTE="cuCtxCreate failed with CUDA 13 headers; PASSED with compat cuda.h $(cuda_h_version "$compat") from $compat"
  else
    NOTE="cuCtxCreate failed with CUDA 13 headers; compat cuda.h ($compat) also failed"
  fi
  return "$rc"
}

step_test() {
  local log=$1 pkgs
  need_go "$log" || return 1
  pkgs=$(test_pkgs "$log" ./runtime/cuda/ ./kernels/...)
  if [ -z "$pkgs" ]; then
    NOTE="no packages with tests under ./runtime/cuda/ ./kernels/..."
    echo "$NOTE" >>"$log"
    return "$SKIP_RC"
  fi
  # shellcheck disable=SC2086 # pkgs is a list of import paths
  PERK_DEVICE=cuda PERK_GOLDEN_REPORT="$OUT/golden-report.txt" \
    logrun "$log" 180 go test -tags cuda -count=1 -timeout 170s -v $pkgs
  local rc=$?
  NOTE="$(grep -c -- '^--- PASS' "$log") passed, $(grep -c -- '^--- FAIL' "$log") failed (top-level tests)"
  if [ -s "$OUT/golden-report.txt" ]; then
    {
      echo "# golden report"
      cat "$OUT/golden-report.txt"
    } >>"$log"
  fi
  return "$rc"
}

step_test_binary() {
  local log=$1
  need_go "$log" || return 1
  rm -f "$OUT/kernels.test"
  if [ -z "$(test_pkgs "$log" ./kernels/)" ]; then
    NOTE="./kernels has no tests (or no Go package)"
    echo "$NOTE" >>"$log"
    return "$SKIP_RC"
  fi
  if ! logrun "$log" 90 go test -tags cuda -c -o "$OUT/kernels.test" ./kernels/; then
    local rc=$?
    rm -f "$OUT/kernels.test"
    return "$rc"
  fi
  if [ ! -x "$OUT/kernels.test" ]; then
    NOTE="go test -c wrote no binary"
    return 1
  fi
}

# sanitize LOG TOOL runs compute-sanitizer TOOL over the golden tests, in the
# package folder as go test would.
sanitize() {
  local log=$1 tool=$2 rc
  if [ -z "$SANITIZER" ]; then
    NOTE="compute-sanitizer not found"
    echo "$NOTE" >>"$log"
    return 1
  fi
  if [ ! -x "$OUT/kernels.test" ]; then
    NOTE="no kernels.test (see test-binary)"
    echo "$NOTE" >>"$log"
    return "$SKIP_RC"
  fi
  PERK_DEVICE=cuda logrun "$log" 120 bash -c 'cd "$1" && shift && exec "$@"' _ "$ROOT/kernels" \
    "$SANITIZER" --tool "$tool" --error-exitcode 99 --print-limit 50 \
    "$OUT/kernels.test" -test.run Golden -test.count=1 -test.timeout 110s
  rc=$?
  NOTE=$(grep -m 1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | sed 's/^=* *//')
  if [ "$rc" = 99 ]; then NOTE="sanitizer found errors: $NOTE"; fi
  return "$rc"
}

step_memcheck() { sanitize "$1" memcheck; }
step_racecheck() { sanitize "$1" racecheck; }

step_bench() {
  local log=$1 pkgs rc
  need_go "$log" || return 1
  pkgs=$(test_pkgs "$log" ./bench/ ./runtime/...)
  if [ -z "$pkgs" ]; then
    NOTE="no packages with tests under ./bench/ ./runtime/..."
    echo "$NOTE" | tee "$OUT/bench.txt" >>"$log"
    return "$SKIP_RC"
  fi
  printf '+ go test -tags cuda -run xxx -bench . -benchtime 20x %s > %s\n' "$(echo $pkgs)" "$OUT/bench.txt" >>"$log"
  # shellcheck disable=SC2086 # pkgs is a list of import paths
  PERK_DEVICE=cuda tmo 120 go test -tags cuda -run xxx -bench . -benchtime 20x -timeout 110s $pkgs >"$OUT/bench.txt" 2>&1
  rc=$?
  cat "$OUT/bench.txt" >>"$log"
  printf '# exit status %s\n' "$rc" >>"$log"
  NOTE="$(grep -c '^Benchmark' "$OUT/bench.txt") benchmark lines in bench.txt"
  return "$rc"
}

step_kernel_bench() {
  local log=$1 rc
  need_go "$log" || return 1
  printf '+ go run -tags cuda ./cmd/bench run --device cuda --suite all --json %s > %s\n' "$OUT/kernel-bench.json" "$OUT/kernel-bench.txt" >>"$log"
  tmo 120 go run -tags cuda ./cmd/bench run --device cuda --suite all --json "$OUT/kernel-bench.json" >"$OUT/kernel-bench.txt" 2>&1
  rc=$?
  cat "$OUT/kernel-bench.txt" >>"$log"
  printf '# exit status %s\n' "$rc" >>"$log"
  NOTE="kernel-bench.txt, kernel-bench.json"
  return "$rc"
}

step_scaling() {
  local log=$1
  need_go "$log" || return 1
  logrun "$log" 120 go run -tags cuda ./cmd/bench scaling --device cuda --meta --lengths 1024,4096,16384 --out "$OUT/scaling"
  local rc=$?
  # PERK learning one segment at a time with block checkpointing.
  logrun "$log" 120 go run -tags cuda ./cmd/bench scaling --device cuda --meta --lengths 1024,4096,16384 \
    --group-segments 1 --checkpoint-policy blocks --out "$OUT/scaling-grouped" || rc=$?
  NOTE="scaling/ and scaling-grouped/: scaling.md, .json, .png"
  return "$rc"
}

# step_e2e runs the tools end to end on the GPU on a tiny task: every mode
# that trains, and evaluation, with --device cuda.
step_e2e() {
  local log=$1 d="$OUT/e2e" rc
  need_go "$log" || return 1
  rm -rf "$d" && mkdir -p "$d/bin"
  logrun "$log" 90 go build -tags cuda -o "$d/bin/" ./cmd/perk-data ./cmd/perk-train ./cmd/perk-eval || return $?
  printf '%s\n' '{"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 512, "vocab_size": 1}' >"$d/config.json"
  logrun "$log" 20 "$d/bin/perk-data" babilong --task qa1 --facts 2 --tokens 96 --segment-tokens 48 --n 64 --seed 1 -q -o "$d/train.jsonl" &&
    logrun "$log" 20 "$d/bin/perk-data" babilong --task qa1 --facts 2 --tokens 96 --segment-tokens 48 --n 16 --seed 2 -q -o "$d/held.jsonl" &&
    logrun "$log" 60 "$d/bin/perk-train" --mode pretrain --device cuda --init-config "$d/config.json" --tokenizer words:400 \
      --data "$d/train.jsonl" --out "$d/base" --steps 50 --outer-lr 3e-3 --batch-tokens 512 --log-every 10 --progress lines &&
    logrun "$log" 90 "$d/bin/perk-train" --device cuda --model "$d/base" --data "$d/train.jsonl" --out "$d/perk" --steps 10 \
      --inner-steps 3 --unroll-start 1 --lora-rank 4 --lora-alpha 8 --inner-lr 1e-2 --outer-lr 3e-3 --log-every 2 --progress lines \
      --eval-data "$d/held.jsonl" --eval-max-new-tokens 12 &&
    logrun "$log" 60 "$d/bin/perk-eval" --device cuda --model "$d/base" --checkpoint "$d/perk/checkpoint-10" --data "$d/held.jsonl" \
      --mode perk --max-new-tokens 12 --out "$d/eval"
  rc=$?
  NOTE=$(grep -m 1 '^perk: [0-9]' "$log" || echo "see e2e.log")
  return "$rc"
}

# ---- run -------------------------------------------------------------------

echo "gpu-check: output in $OUT, budget ${BUDGET}s, CUDA_HOME=$CUDA_HOME"
step nvidia-smi step_nvidia_smi
step ptx-sm90 step_ptx
step build-cuda step_build
step test-cuda step_test
step test-binary step_test_binary
step memcheck step_memcheck
step racecheck step_racecheck
step bench step_bench
step kernel-bench step_kernel_bench
step scaling step_scaling
step e2e step_e2e

failed=0
{
  echo "# gpu-check summary"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M:%SZ'), $((SECONDS - START))s of a ${BUDGET}s budget, logs in $OUT"
  echo
  echo "| step | result | seconds | note |"
  echo "|---|---|---:|---|"
  for i in "${!NAMES[@]}"; do
    echo "| ${NAMES[$i]} | ${RESULTS[$i]} | ${TIMES[$i]} | ${NOTES[$i]//|/\\|} |"
    if [ "${RESULTS[$i]}" = FAIL ]; then failed=1; fi
  done
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
exit "$failed"
