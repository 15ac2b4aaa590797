#!/usr/bin/env bash
# Install the repaired wheel into a fresh venv that cannot reach a C compiler
# and run the test suite against the installed package:
#   bash tools/test_wheel.sh [WHEEL [PYTEST_ARGS...]]
# WHEEL defaults to dist/bpcore-*manylinux*.whl (tools/build_wheels.sh).
# The venv's PATH is its own bin/ plus a directory of links to a few tools the
# tests call (none of them a compiler), CC and CXX are `false`, and the tests
# run from a copy of tests/ (with examples/ and docs/) outside the source tree,
# so `import bpcore` can only find the installed wheel.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
WHL=${1:-}
if [ -z "$WHL" ]; then
  WHL=$(ls "$ROOT"/dist/bpcore-*manylinux*.whl | head -n 1)
fi
WHL=$(cd "$(dirname "$WHL")" && pwd)/$(basename "$WHL")
shift || true
PYTEST_ARGS=("$@")
[ ${#PYTEST_ARGS[@]} -eq 0 ] && PYTEST_ARGS=(-x -q)

. "$ROOT/tools/_isolated_env.sh"
make_isolated_env "$PY"

echo "== installing $(basename "$WHL") with no compiler on PATH"
python -m pip install -q "$WHL[test]"

check_installed
run_suite "${PYTEST_ARGS[@]}"
