#!/usr/bin/env bash
# ab_build.sh REV OUT - the C core of revision REV (anything git accepts; WORK
# for the working tree) as one shared library OUT, its bp_* functions
# visible, for ab_one_row.c to load beside another build.
#   bash benchmarks/micro/ab_build.sh HEAD /tmp/ab/old.so
#   bash benchmarks/micro/ab_build.sh WORK /tmp/ab/new.so
set -euo pipefail
rev=$1
out=$2
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
if [ "$rev" = WORK ]; then
    cp -r csrc "$src/"
else
    git archive "$rev" csrc | tar -x -C "$src"
fi
# the extension module hides the C core's symbols; a library loaded with
# dlopen needs them
sed -i 's/C_VISIBILITY_PRESET hidden/C_VISIBILITY_PRESET default/' \
    "$src/csrc/CMakeLists.txt"
cmake -S "$src/csrc" -B "$src/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$src/build" --target bpcore_c >/dev/null
mkdir -p "$(dirname "$out")"
gcc -shared -o "$out" -Wl,--whole-archive "$src/build/libbpcore_c.a" \
    -Wl,--no-whole-archive -fopenmp -lm
