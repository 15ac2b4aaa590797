#!/usr/bin/env bash
# Build and install bpcore from the sdist in a fresh venv, then run the test
# suite against that install (from a copy of tests/ outside the tree):
#   bash tools/test_sdist.sh [SDIST [PYTEST_ARGS...]]
# SDIST defaults to dist/bpcore-*.tar.gz (tools/build_wheels.sh).  This one
# needs the C compiler (it builds); the wheel's test is tools/test_wheel.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
SDIST=${1:-}
if [ -z "$SDIST" ]; then
  SDIST=$(ls "$ROOT"/dist/bpcore-*.tar.gz | head -n 1)
fi
SDIST=$(cd "$(dirname "$SDIST")" && pwd)/$(basename "$SDIST")
shift || true
PYTEST_ARGS=("$@")
[ ${#PYTEST_ARGS[@]} -eq 0 ] && PYTEST_ARGS=(-x -q)

. "$ROOT/tools/_isolated_env.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m venv "$WORK/venv"
. "$WORK/venv/bin/activate"
unset PYTHONPATH
python -m pip install -q --upgrade pip

echo "== unpacking $(basename "$SDIST")"
mkdir "$WORK/src"
tar xzf "$SDIST" -C "$WORK/src"
SRC=$(ls -d "$WORK"/src/bpcore-*)
if [ -e "$SRC/benchmarks/results" ]; then
  echo "error: benchmarks/results in the sdist" >&2; exit 1
fi
echo "== pip install from the sdist (compiles)"
python -m pip install -q "$SDIST[test]"

check_installed
SUITE_SRC=$SRC run_suite "${PYTEST_ARGS[@]}"
