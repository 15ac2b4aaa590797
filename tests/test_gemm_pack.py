"""The GEMM packing paths build the same panels, whatever the storage.

A C program (csrc/tests/gemm_pack_check.c) computes products with A and B
stored as they are and transposed, over about 1,300 shapes per tile, and
compares the bits.  It is compiled here with cc for every tile of
csrc/src/kern_*.c that this CPU can run.
"""
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SRC = ROOT / "csrc" / "tests" / "gemm_pack_check.c"

# (ISA flag, the CPU flag it needs, defines) as in kern_avx2.c/kern_avx512.c
TILES = [
    ("-mavx2", "avx2", "-DVL=8 -DMR=6 -DNR=16"),
    ("-mavx2", "avx2", "-DTT=double -DVL=4 -DMR=6 -DNR=8"),
    ("-mavx512f", "avx512f", "-DVL=16 -DMR=14 -DNR=32"),
    ("-mavx512f", "avx512f", "-DTT=double -DVL=8 -DMR=8 -DNR=16"),
]


def _cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not SRC.exists(), reason="needs the source tree")
@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
@pytest.mark.parametrize("isa,flag,defines", TILES,
                         ids=[f"{t[1]}-{'f64' if 'double' in t[2] else 'f32'}"
                              for t in TILES])
def test_transposed_packing_gives_the_same_bits(tmp_path, isa, flag, defines):
    if flag not in _cpu_flags():
        pytest.skip(f"this CPU has no {flag}")
    exe = tmp_path / "check"
    cmd = (["cc", "-O2", isa, "-mfma", "-ffp-contract=fast"] +
           defines.split() + [f"-I{ROOT / 'csrc' / 'src'}", str(SRC),
                              "-o", str(exe)])
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "0 differ" in run.stdout
