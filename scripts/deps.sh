#!/usr/bin/env bash
# deps.sh: install what the build and tests need, idempotently.
#   g++, cmake, libopenblas-dev (cblas.h and libopenblas.so for the optional
#   `-tags openblas` GEMM in nn/cpu), and (when nvcc is missing) Debian's
#   nvidia-cuda-toolkit from the non-free component, enabling that component if
#   the machine lacks it.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if { [ ! -e /usr/include/x86_64-linux-gnu/cblas.h ] && [ ! -e /usr/include/cblas.h ]; } ||
  [ ! -e /usr/lib/x86_64-linux-gnu/libopenblas.so ]; then
  need+=(libopenblas-dev)
fi
if ! command -v nvcc >/dev/null 2>&1 && [ ! -x /usr/bin/nvcc ]; then
  need+=(nvidia-cuda-toolkit)
fi
if [ ${#need[@]} -eq 0 ]; then
  echo "deps: g++, cmake, OpenBLAS and nvcc present"
  exit 0
fi

enable_nonfree() {
  local changed=0
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    if ! grep -Eq '^Components:.*non-free( |$)' /etc/apt/sources.list.d/debian.sources; then
      $SUDO sed -i -E '/^Components:/{/non-free( |$)/!s/$/ contrib non-free non-free-firmware/}' \
        /etc/apt/sources.list.d/debian.sources
      changed=1
    fi
  fi
  if [ -f /etc/apt/sources.list ] && grep -Eq '^deb ' /etc/apt/sources.list; then
    if ! grep -Eq '^deb .* non-free( |$)' /etc/apt/sources.list; then
      $SUDO sed -i -E '/^deb /{/ non-free( |$)/!s/$/ contrib non-free/}' /etc/apt/sources.list
      changed=1
    fi
  fi
  [ $changed = 1 ] && echo "deps: enabled the Debian non-free component"
  return 0
}

for p in "${need[@]}"; do
  if [ "$p" = nvidia-cuda-toolkit ]; then enable_nonfree; fi
done
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "deps: installed ${need[*]}"
