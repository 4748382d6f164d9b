#!/usr/bin/env bash
# ptx-resources.sh PTXDIR OUT.md: assemble every PTX file with ptxas -v for
# sm_80 and sm_90, fail on any spill, and write a table of registers, shared
# memory, stack and spills per kernel.
set -euo pipefail
dir=$1
out=$2
ptxas=${PTXAS:-ptxas}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
spills=0
{
  echo "# Kernel resources"
  echo
  echo "Written by \`make ptx-check\` from \`ptxas -v\` ($("$ptxas" --version | tail -1))."
  echo
  echo "| family | kernel | arch | registers | shared (bytes) | stack (bytes) | spill st/ld (bytes) |"
  echo "|---|---|---|---|---|---|---|"
} >"$tmp.md"
for ptx in "$dir"/*.ptx; do
  fam=$(basename "$ptx" .ptx)
  for arch in sm_80 sm_90; do
    "$ptxas" -v -arch=$arch "$ptx" -o /dev/null 2>"$tmp" || { cat "$tmp"; exit 1; }
    awk -v fam="$fam" -v arch="$arch" '
      function num(re,   m) { if (match($0, re)) { m = substr($0, RSTART, RLENGTH); gsub(/[^0-9]/, "", m); return m } return 0 }
      /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); k = substr($0, RSTART+1, RLENGTH-2) }
      /bytes stack frame/ { st = num("[0-9]+ bytes stack"); sst = num("[0-9]+ bytes spill stores"); sld = num("[0-9]+ bytes spill loads") }
      /Used [0-9]+ registers/ { r = num("Used [0-9]+ registers"); s = num("[0-9]+ bytes smem");
        printf "| %s | %s | %s | %s | %s | %s | %s/%s |\n", fam, k, arch, r, s, st, sst, sld }' "$tmp" >>"$tmp.md"
  done
done
if awk -F'|' 'NR>7 { split($8, a, "/"); if (a[1]+0 > 0 || a[2]+0 > 0) bad=1 } END { exit !bad }' "$tmp.md"; then
  echo "ptx-check: ptxas reports spills:"; grep -v ' 0/0 |' "$tmp.md" | tail -n +8
  spills=1
fi
mv "$tmp.md" "$out"
exit $spills
