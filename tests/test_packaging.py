"""Packaging: one version everywhere, a light import, typing, and the
binary surface of the built extension (tested on whatever is installed:
the wheel in tools/test_wheel.sh, an sdist or source build elsewhere)."""
import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import bpcore
import bpcore._core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def _run(code, **kwargs):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, **kwargs)


# -- version -------------------------------------------------------------


def test_version_is_the_package_metadata():
    from bpcore._version import __version__
    assert bpcore.__version__ == __version__
    assert importlib.metadata.version("bpcore") == bpcore.__version__
    parts = bpcore.__version__.split(".")
    assert len(parts) >= 3 and all(p.isdigit() for p in parts[:2])


def test_model_file_records_the_version():
    net = bpcore.Network([2, 3, 1], seed=0)
    data = net.to_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert meta["bpcore_version"] == bpcore.__version__


@pytest.mark.parametrize("cmd", [[sys.executable, "-m", "bpcore"], ["bpcore"]])
def test_cli_version(cmd):
    if cmd == ["bpcore"]:
        exe = shutil.which("bpcore",
                           path=os.path.dirname(sys.executable))
        if exe is None:
            pytest.skip("no bpcore script beside this interpreter")
        cmd = [exe]
    r = subprocess.run(cmd + ["--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"bpcore {bpcore.__version__}"


def test_metadata_classifiers_and_urls():
    meta = importlib.metadata.metadata("bpcore")
    classifiers = meta.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in classifiers
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Programming Language :: Python :: 3.")
               for c in classifiers)
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("Project-URL")


# -- import cost ---------------------------------------------------------


def test_import_does_not_load_optional_or_heavy_modules():
    code = (
        "import sys, json\n"
        "import bpcore\n"
        "heavy = ('sklearn', 'scipy', 'tqdm', 'torch', 'matplotlib',\n"
        "         'pandas', 'safetensors', 'safetensors.numpy', 'bpcore.cli',\n"
        "         'bpcore.sklearn')\n"
        "before = [m for m in heavy if m in sys.modules]\n"
        "bpcore.Network([2, 2, 1], seed=0).to_bytes()\n"
        "after = 'safetensors.numpy' in sys.modules\n"
        "print(json.dumps([before, after]))\n")
    r = _run(code)
    assert r.returncode == 0, r.stderr
    before, after = json.loads(r.stdout)
    assert before == []
    assert after  # imported when first used


# -- typing --------------------------------------------------------------


def test_py_typed_is_installed():
    pkg = os.path.dirname(bpcore.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    assert not os.path.exists(os.path.join(pkg, "CMakeLists.txt"))


def test_mypy_on_examples(tmp_path):
    pytest.importorskip("mypy")
    if not os.path.isdir(EXAMPLES):
        pytest.skip("examples/ not beside tests/")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"),
         "--ignore-missing-imports", "--no-error-summary",
         "--python-version", f"{sys.version_info[0]}.{sys.version_info[1]}",
         EXAMPLES],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_public_api_is_annotated():
    import inspect

    import bpcore.sklearn
    from bpcore import io, schedules

    targets = [bpcore.Network.__init__, bpcore.Network.fit,
               bpcore.Network.predict, bpcore.Network.evaluate,
               bpcore.Network.step, bpcore.Network.save,
               bpcore.SGD.__init__, bpcore.Adam.__init__,
               bpcore.AdamW.__init__, schedules.Cosine.__init__,
               io.save, io.load, bpcore.load,
               bpcore.sklearn.MLPClassifier.fit,
               bpcore.sklearn.MLPClassifier.predict,
               bpcore.sklearn.MLPRegressor.fit,
               bpcore.sklearn.MLPRegressor.predict]
    missing = []
    for f in targets:
        sig = inspect.signature(f)
        names = [p for p in sig.parameters if p not in ("self", "cls")]
        if any(sig.parameters[p].annotation is inspect.Parameter.empty
               for p in names) or (
                sig.return_annotation is inspect.Signature.empty):
            missing.append(f.__qualname__)
    assert missing == []


# -- binary surface ------------------------------------------------------


def _exported_symbols(path):
    nm = shutil.which("nm")
    if nm is not None:
        out = subprocess.run([nm, "-D", "--defined-only", path],
                             capture_output=True, text=True, check=True)
        return sorted(line.split()[-1] for line in out.stdout.splitlines()
                      if line.strip())
    objdump = shutil.which("objdump")
    if objdump is not None:
        out = subprocess.run([objdump, "-T", path], capture_output=True,
                             text=True, check=True)
        names = []
        for line in out.stdout.splitlines():
            cols = line.split()
            if len(cols) >= 6 and "*UND*" not in line and cols[2] in ("DF", "DO"):
                names.append(cols[-1])
        return sorted(names)
    pytest.skip("neither nm nor objdump is available")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF")
def test_extension_exports_only_its_init_function():
    syms = _exported_symbols(bpcore._core.__file__)
    assert syms == ["PyInit__core"], syms


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF")
def test_vendored_libgomp_is_used_when_present():
    """In the repaired wheel, the extension loads the hashed libgomp copy
    in bpcore.libs/, not the system's."""
    libs = os.path.join(os.path.dirname(os.path.dirname(bpcore.__file__)),
                        "bpcore.libs")
    if not os.path.isdir(libs):
        pytest.skip("not a repaired wheel (no bpcore.libs/)")
    with open("/proc/self/maps") as f:
        maps = f.read()
    vendored = [n for n in os.listdir(libs) if n.startswith("libgomp")]
    assert vendored
    assert any(os.path.join(libs, n) in maps for n in vendored)
    np.testing.assert_array_equal(
        bpcore.Network([3, 4, 2], seed=1).predict(np.ones((5, 3)),
                                                  n_threads=2).shape, (5, 2))
