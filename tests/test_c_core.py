"""Build the C core on its own and run its C tests (CTest) under
AddressSanitizer and UBSan.  Skipped only where CMake or a C compiler is
missing; on a machine that has both, a failure to configure is a failure."""
import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"


def _have_c_compiler():
    """A C compiler CMake could pick: $CC, or cc, gcc or clang on PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc.split()[0]) is not None
    return any(shutil.which(c) for c in ("cc", "gcc", "clang"))


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found")
    return path


@pytest.mark.skipif(not (CSRC / "CMakeLists.txt").exists(),
                    reason="C sources not beside the tests")
@pytest.mark.parametrize("variant", [
    "native", pytest.param("avx512-tiles-on-avx2", marks=pytest.mark.slow)])
def test_c_tests_under_sanitizers(tmp_path, variant):
    # The second variant builds the AVX-512 kernel table with AVX2 flags, so
    # that its 14 x 32 / 6 x 32 tiles and every path of its network code run
    # (and are checked against the naive product) on machines without
    # AVX-512; on an AVX-512 machine the native build runs it for real.
    cmake = _tool("cmake")
    ctest = _tool("ctest")
    if not _have_c_compiler():
        pytest.skip("no C compiler")
    build = tmp_path / "build"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
    extra = (["-DBPCORE_AVX512_ON_AVX2=ON"] if variant != "native" else [])
    cfg = subprocess.run([cmake, "-S", str(CSRC), "-B", str(build),
                          "-DBPCORE_SANITIZE=ON",
                          # sanitizer builds are -O1 -g; Debug would be -O0 (slower)
                          "-DCMAKE_BUILD_TYPE=RelWithDebInfo"]
                         + extra, capture_output=True, text=True, env=env)
    assert cfg.returncode == 0, ("cmake could not configure the C core:\n"
                                 + cfg.stdout[-2000:] + cfg.stderr[-3000:])
    b = subprocess.run([cmake, "--build", str(build), "-j", "2"],
                       capture_output=True, text=True, env=env)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    r = subprocess.run([ctest, "--output-on-failure"], cwd=build,
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
