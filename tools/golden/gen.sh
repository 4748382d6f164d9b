#!/usr/bin/env bash
# gen.sh: regenerate the golden fixtures in nn/model/testdata/golden/.
# Installs Debian's python3-torch and python3-numpy when the system
# interpreter cannot import them (idempotent), then runs gen.py with it.
# Extra arguments are passed to gen.py (e.g. --arch gpt2, --out DIR).
# Then perk_ref.py writes the meta-gradient fixtures to perk/testdata/metagrad/
# (from the gpt2 base model in nn/model/testdata/golden/gpt2/).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY=/usr/bin/python3

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
  echo "golden: installing python3-torch and python3-numpy with apt"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    python3-torch python3-numpy >/dev/null
  "$PY" -c 'import torch, numpy' || { echo "golden: torch still not importable by $PY" >&2; exit 1; }
fi

"$PY" "$root/tools/golden/gen.py" --out "$root/nn/model/testdata/golden" "$@"
"$PY" "$root/tools/golden/perk_ref.py" --out "$root/perk/testdata/metagrad" --base "$root/nn/model/testdata/golden/gpt2"
