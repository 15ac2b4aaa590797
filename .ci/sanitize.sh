#!/usr/bin/env bash
# Sanitizer job: AddressSanitizer + UBSan on the C core and on the _core
# extension, each run on the portable ref kernel and on the host's best SIMD
# kernel.  A few minutes on 2 cores.  Called by .ci/run after the test suite;
# runs on its own too:  bash .ci/sanitize.sh
#
#   1. csrc built alone (cmake -DBPCORE_SANITIZE=ON), its C tests (CTest)
#      with BPCORE_KERNEL=ref and with the host's kernel, leak checks on;
#   2. the package built with -C cmake.define.BPCORE_SANITIZE=ON into a
#      separate folder (build/sanitize/site, put first on PYTHONPATH, so
#      the regular install is untouched), and a chosen subset of the Python
#      tests (small sizes) run against it with libasan preloaded, once per
#      kernel.  Leak checks are off for Python itself (the interpreter keeps
#      memory at exit by design).
#
# Any sanitizer report fails the job (halt_on_error, abort_on_error).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${BPCORE_SANITIZE_DIR:-$ROOT/build/sanitize}
PY=${PYTHON:-python}
JOBS=${JOBS:-2}

if ! command -v cmake >/dev/null || ! command -v cc >/dev/null; then
    echo "sanitize: cmake or a C compiler is missing; skipped" >&2
    exit 0
fi
CC_BIN=${CC:-cc}
LIBASAN=$("$CC_BIN" -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    echo "sanitize: the compiler has no libasan.so; skipped" >&2
    exit 0
fi

HOST_KERNEL=$(BPCORE_KERNEL= "$PY" -c \
    "import bpcore, io; print(bpcore.show_config(file=io.StringIO())['kernel'])")
KERNELS="ref"
if [ "$HOST_KERNEL" != "ref" ]; then
    KERNELS="ref $HOST_KERNEL"
fi
echo "sanitize: kernels: $KERNELS"

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
ASAN_COMMON=abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=0

# -- 1. the C core and its C tests --------------------------------------------
start=$SECONDS
cmake -S csrc -B "$OUT/c" -DBPCORE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBPCORE_BUILD_CTESTS=ON >/dev/null
cmake --build "$OUT/c" -j "$JOBS" >/dev/null
for k in $KERNELS; do
    echo "sanitize: C tests, BPCORE_KERNEL=$k"
    (cd "$OUT/c" && BPCORE_KERNEL=$k ASAN_OPTIONS=$ASAN_COMMON:detect_leaks=1 \
        ctest --output-on-failure --timeout 300)
done
echo "sanitize: C part took $((SECONDS - start)) s"

# -- 2. the extension and a subset of the Python tests -------------------------
start=$SECONDS
rm -rf "$OUT/site"
"$PY" -m pip install --no-deps --quiet --target "$OUT/site" \
    -C cmake.define.BPCORE_SANITIZE=ON -C build-dir="$OUT/py-build" .
echo "sanitize: sanitized build took $((SECONDS - start)) s"

# Tests with small networks that reach every C entry point: forward,
# backward and gradients against the NumPy oracle, fit/step with every
# optimizer, files, errors, guards and Ctrl-C storms.  Slow-marked tests stay
# out (the default addopts), and so do the ones that time whole suites.
TESTS=(
    tests/test_gradients.py
    tests/test_forward.py
    tests/test_optim.py
    tests/test_io.py
    tests/test_errors.py
    tests/test_reliability.py
)
where=$(PYTHONPATH="$OUT/site" LD_PRELOAD="$LIBASAN" \
    ASAN_OPTIONS=detect_leaks=0 "$PY" -c "import bpcore; print(bpcore.__file__)")
case "$where" in
    "$OUT/site/"*) ;;
    *) echo "sanitize: tests would import $where, not the sanitized build" >&2
       exit 1 ;;
esac
for k in $KERNELS; do
    echo "sanitize: Python tests, BPCORE_KERNEL=$k"
    start=$SECONDS
    BPCORE_KERNEL=$k \
    PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}" \
    LD_PRELOAD="$LIBASAN" \
    ASAN_OPTIONS=$ASAN_COMMON:detect_leaks=0 \
        "$PY" -m pytest -q -x -p no:cacheprovider "${TESTS[@]}"
    echo "sanitize: BPCORE_KERNEL=$k took $((SECONDS - start)) s"
done
echo "sanitize: all clean"
