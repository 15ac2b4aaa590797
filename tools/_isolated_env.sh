# Helpers for tools/test_wheel.sh and tools/test_sdist.sh (sourced).

# make_isolated_env PYTHON: a fresh venv in $WORK (a temp dir removed at
# exit), activated, with PATH = the venv's bin + $WORK/bin (links to a few
# non-compiler tools) and CC/CXX = false; fails if a compiler is reachable.
make_isolated_env() {
  local py=$1
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  "$py" -m venv "$WORK/venv"
  mkdir "$WORK/bin"
  local t p
  # shells and utilities the scripts and tests call; nm/objdump/readelf
  # inspect the built extension (binutils, not a compiler)
  for t in sh bash env cat ls cp rm mkdir mktemp tar gzip unzip grep sed \
           basename dirname \
           head tail wc sort uname nproc nm objdump readelf mpiexec; do
    p=$(command -v "$t" || true)
    if [ -n "$p" ]; then ln -s "$p" "$WORK/bin/$t"; fi
  done
  export PATH="$WORK/venv/bin:$WORK/bin"
  export CC=false CXX=false
  unset PYTHONPATH VIRTUAL_ENV PYTHONHOME
  export VIRTUAL_ENV="$WORK/venv"
  for t in cc gcc c99 clang c++ g++ clang++ x86_64-linux-gnu-gcc; do
    if command -v "$t" >/dev/null 2>&1; then
      echo "error: a compiler is reachable: $(command -v "$t")" >&2
      return 1
    fi
  done
  python -m pip install -q --upgrade pip
}

# check_installed: bpcore comes from the venv, with its metadata, its
# vendored libgomp and without files that must not ship; the CLI trains.
check_installed() {
  echo "== checking the installed package"
  (cd "$WORK" && python - <<'PY'
import importlib.metadata as md
import os
import sys

import bpcore
import bpcore._core

site = os.path.realpath(os.path.join(sys.prefix, "lib"))
assert os.path.realpath(bpcore.__file__).startswith(site), bpcore.__file__
assert md.version("bpcore") == bpcore.__version__
pkg = os.path.dirname(bpcore.__file__)
assert os.path.exists(os.path.join(pkg, "py.typed")), "py.typed missing"
assert not os.path.exists(os.path.join(pkg, "CMakeLists.txt")), "CMakeLists.txt shipped"
print("bpcore", bpcore.__version__, "from", pkg)
print("extension", os.path.basename(bpcore._core.__file__))
libs = os.path.join(os.path.dirname(pkg), "bpcore.libs")
print("vendored:", sorted(os.listdir(libs)) if os.path.isdir(libs) else "none")
PY
  )
  python -m bpcore --version
  bpcore --version
  (cd "$WORK" && python - <<'PY'
import numpy as np
rng = np.random.default_rng(0)
X = rng.normal(size=(200, 3))
with open("data.csv", "w") as f:
    f.write("a,b,c,y\n")
    for row in X:
        f.write(",".join(f"{v:.6f}" for v in row) + f",{row.sum():.6f}\n")
PY
  )
  # the README's demo, then a training on a file of our own
  (cd "$WORK" && python -m bpcore train)
  (cd "$WORK" && python -m bpcore train data.csv --target y --layers 8 \
      --epochs 5 --out model.safetensors && \
   python -m bpcore predict model.safetensors data.csv --out pred.csv && \
   head -n 3 pred.csv)
}

# run_suite PYTEST_ARGS...: the test suite of $SUITE_SRC (default: the
# repository) from a copy outside any source tree, without src/ and csrc/.
run_suite() {
  local from=${SUITE_SRC:-$ROOT}
  echo "== test suite against the installed package: pytest $*"
  mkdir "$WORK/suite"
  cp -r "$from/tests" "$from/examples" "$WORK/suite/"
  if [ -d "$from/docs" ]; then cp -r "$from/docs" "$WORK/suite/"; fi
  cp "$from/README.md" "$from/pyproject.toml" "$WORK/suite/"
  (cd "$WORK/suite" && python -m pytest -p no:cacheprovider "$@")
}
