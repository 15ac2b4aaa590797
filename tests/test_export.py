"""bpcore.export: ONNX (run in onnxruntime), plain C (compiled with the
system's cc and run), the ``bpcore export`` command, and conversions from
and to scikit-learn's MLPs.

Every exported model comes from a saved ``.safetensors`` file.  Results
are compared with ``net.predict`` elementwise relative to the output's
scale: |y - ref| <= rtol * (|ref| + max |ref|), rtol 1e-6 for float32 and
1e-12 for float64 (the last layer's sum may cancel, so an entry near zero
carries the rounding of the larger terms it was summed from).  PyTorch
tests are in test_export_torch.py.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import bpcore
from bpcore import export

ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
               "softplus", "gelu")
OUTPUTS = ACTIVATIONS + ("softmax",)
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler on PATH")


def assert_close(y, ref, dtype):
    ref = np.asarray(ref, np.float64)
    rtol = RTOL[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=rtol,
                               atol=rtol * max(np.abs(ref).max(), 1e-30))


def saved_net(tmp_path, layers, hidden, output, dtype, seed=1):
    """A network with nonzero biases, saved and loaded back."""
    loss = "cross_entropy" if output == "softmax" else "mse"
    net = bpcore.Network(layers, activation=hidden, output=output,
                         loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for b in net.biases:
        b[...] = rng.normal(0.0, 0.5, b.shape)
    net.metadata["note"] = "exported by a test"
    path = tmp_path / "net.safetensors"
    net.save(path)
    return bpcore.load(path)


def run_onnx(path, X, outputs=("Y",)):
    sess = ort.InferenceSession(str(path),
                                providers=["CPUExecutionProvider"])
    return sess.run(list(outputs), {"X": X})


# ---------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", OUTPUTS)
def test_onnx_matches_predict(tmp_path, act, dtype):
    hidden = "tanh" if act == "softmax" else act
    net = saved_net(tmp_path, [5, 16, 7, 3], hidden, act, dtype)
    path = tmp_path / "m.onnx"
    export.to_onnx(net, path)
    rng = np.random.default_rng(2)
    for m in (1, 1000):
        X = (rng.normal(0, 3, (m, 5))).astype(dtype)
        outs = ["Y", "logits"] if act == "softmax" else ["Y"]
        got = run_onnx(path, X, outs)
        assert got[0].dtype == np.dtype(dtype) and got[0].shape == (m, 3)
        assert_close(got[0], net.predict(X), dtype)
        if act == "softmax":
            assert_close(got[1], net.forward(X).net[-1], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_onnx_activation_over_the_whole_range(tmp_path, act, dtype):
    """One identity layer: Y = act(X) elementwise, from -40 to 40 and near
    zero, within a few ulps of bpcore's own activation (no atol)."""
    net = bpcore.Network([1, 1], output=act, dtype=dtype)
    net.weights[0][...] = 1.0
    net.biases[0][...] = 0.0
    x = np.concatenate([np.linspace(-40, 40, 8001),
                        -np.logspace(-12, 1, 300), np.logspace(-12, 1, 300)])
    X = x.astype(dtype).reshape(-1, 1)
    export.to_onnx(net, tmp_path / "a.onnx")
    (y,) = run_onnx(tmp_path / "a.onnx", X)
    ref = net.predict(X)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(y, ref, rtol=16 * eps,
                               atol=np.finfo(dtype).tiny)


def test_onnx_model_facts(tmp_path):
    net = saved_net(tmp_path, [4, 8, 3], ["gelu"], "softmax", "float32")
    net.metadata["classes"] = '["a", "b", "c"]'
    model = export.to_onnx(net, tmp_path / "m.onnx")
    loaded = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded == model
    props = {p.key: p.value for p in loaded.metadata_props}
    for k, v in net.metadata.items():
        assert props[k] == v
    assert json.loads(props["bpcore.layers"]) == [4, 8, 3]
    assert json.loads(props["bpcore.activations"]) == ["gelu", "softmax"]
    assert props["bpcore.version"] == bpcore.__version__
    assert props["bpcore.dtype"] == "float32"
    assert props["bpcore.scaling"] == "none"
    opset = {o.domain: o.version for o in loaded.opset_import}[""]
    assert opset <= onnx.defs.onnx_opset_version()
    assert "Erf" in {n.op_type for n in loaded.graph.node}
    (x_in,) = loaded.graph.input
    dims = x_in.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value   # dynamic batch
    assert dims[1].dim_value == 4
    assert [o.name for o in loaded.graph.output] == ["Y", "logits"]
    # logits=False drops the second output
    m2 = export.to_onnx(net, None, logits=False)
    assert [o.name for o in m2.graph.output] == ["Y"]


def test_onnx_dtype_override(tmp_path):
    net = saved_net(tmp_path, [3, 6, 2], "elu", "sigmoid", "float64")
    export.to_onnx(net, tmp_path / "f32.onnx", dtype="float32")
    X = np.random.default_rng(0).normal(size=(50, 3))
    (y,) = run_onnx(tmp_path / "f32.onnx", X.astype(np.float32))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, net.predict(X), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dtype"):
        export.to_onnx(net, None, dtype="float16")


def test_onnx_bad_input(tmp_path):
    net = bpcore.Network([2, 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.to_onnx(net, tmp_path / "missing" / "m.onnx")
    with pytest.raises(TypeError, match="bpcore.Network"):
        export.to_onnx("net.safetensors", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="scaling"):
        export.to_onnx(net, None, scaling="yes")
    with pytest.raises(ValueError, match="input_mean"):
        export.to_onnx(net, None, scaling=True)
    net.metadata["input_mean"] = "[1, 2, 3]"
    net.metadata["input_std"] = "[1, 1]"
    with pytest.raises(ValueError, match="input_mean"):
        export.to_onnx(net, None)


# ---------------------------------------------------------------------------
# Plain C
# ---------------------------------------------------------------------------

DRIVER = r"""
#include <stdio.h>
#include "%(header)s"

/* reads rows of %(NAME)s_N_INPUTS numbers from stdin, prints outputs */
int
main(void)
{
    %(T)s x[%(NAME)s_N_INPUTS];
    %(T)s y[%(NAME)s_N_OUTPUTS];
    int i;
    for (;;) {
        for (i = 0; i < %(NAME)s_N_INPUTS; i++) {
            double v;
            if (scanf("%%lf", &v) != 1) {
                return 0;
            }
            x[i] = (%(T)s)v;
        }
        %(name)s_predict(x, y);
        for (i = 0; i < %(NAME)s_N_OUTPUTS; i++) {
            printf("%%.17g%%c", (double)y[i],
                   i + 1 < %(NAME)s_N_OUTPUTS ? ' ' : '\n');
        }
    }
}
"""


def run_c(prefix, name, X, dtype):
    """Compile prefix.c with a driver (strict C99) and run it on X."""
    folder = os.path.dirname(prefix)
    T = "float" if np.dtype(dtype) == np.float32 else "double"
    drv = os.path.join(folder, "driver.c")
    with open(drv, "w") as f:
        f.write(DRIVER % dict(header=os.path.basename(prefix) + ".h",
                              NAME=name.upper(), name=name, T=T))
    exe = os.path.join(folder, "predict_exe")
    subprocess.run([CC, *CFLAGS, "-O2", "-o", exe, drv, prefix + ".c",
                    "-lm"], check=True, capture_output=True, text=True)
    text = "\n".join(" ".join(repr(float(v)) for v in row) for row in X)
    out = subprocess.run([exe], input=text, capture_output=True, text=True,
                         check=True).stdout
    return np.array([[float(t) for t in line.split()]
                     for line in out.splitlines()])


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", OUTPUTS)
def test_c_matches_predict(tmp_path, act, dtype):
    hidden = "gelu" if act == "softmax" else act
    net = saved_net(tmp_path, [5, 16, 7, 3], hidden, act, dtype)
    h, c = export.to_c(net, str(tmp_path / "my-net"))
    assert (h, c) == (str(tmp_path / "my-net.h"), str(tmp_path / "my-net.c"))
    X = np.random.default_rng(3).normal(0, 3, (1000, 5)).astype(dtype)
    y = run_c(str(tmp_path / "my-net"), "my_net", X, dtype)
    assert y.shape == (1000, 3)
    assert_close(y, net.predict(X), dtype)


def _c_arrays(text):
    """{name: list of literal strings} of the static const arrays."""
    found = {}
    for m in re.finditer(r"static const (?:float|double) (\w+)\[(\d+)\] = "
                         r"\{([^}]*)\}", text):
        vals = [v.strip() for v in m.group(3).split(",") if v.strip()]
        assert len(vals) == int(m.group(2))
        found[m.group(1)] = vals
    return found


@needs_cc
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_c_source_facts(tmp_path, dtype):
    net = saved_net(tmp_path, [3, 9, 4, 2], ["softplus", "elu"], "sigmoid",
                    dtype)
    h, c = export.to_c(net, tmp_path / "3d model")
    text = open(c).read()
    header = open(h).read()
    assert "void m_3d_model_predict(const %s *x, %s *y);" % (
        ("float",) * 2 if dtype == "float32" else ("double",) * 2) in header
    assert "M_3D_MODEL_N_INPUTS 3" in header
    assert "M_3D_MODEL_N_OUTPUTS 2" in header
    for fact in ("3-9-4-2", "softplus", "elu", "sigmoid", "Scaling: none",
                 f"bpcore {bpcore.__version__}"):
        assert fact in text and fact in header
    # weights round-trip exactly through their literals
    arrays = _c_arrays(text)
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        for name, arr in ((f"m_3d_model_w{k}", W), (f"m_3d_model_b{k}", b)):
            parsed = np.array([float(v.rstrip("f")) for v in arrays[name]])
            assert np.array_equal(parsed.astype(dtype), arr.ravel())
    # no allocation, nothing but const data at file scope
    assert "malloc" not in text and "alloc(" not in text
    for line in text.splitlines():
        if line.startswith("static"):
            assert line.startswith(("static const", "static void")), line
    obj = tmp_path / "m.o"
    subprocess.run([CC, *CFLAGS, "-c", "-o", str(obj), c], check=True,
                   cwd=tmp_path)
    nm = shutil.which("nm")
    if nm:
        syms = subprocess.run([nm, str(obj)], capture_output=True,
                              text=True, check=True).stdout.split("\n")
        kinds = {line.split()[-2] for line in syms if len(line.split()) >= 2}
        assert not kinds & set("BbDdCG"), syms   # no writable data
        undefined = {line.split()[-1] for line in syms
                     if line.split()[:1] == ["U"]}
        allowed = ({"expf", "log1pf", "expm1f"} if dtype == "float32"
                   else {"exp", "log1p", "expm1"})
        assert undefined <= allowed, undefined


def test_c_bad_input(tmp_path):
    net = bpcore.Network([2, 2])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export.to_c(net, tmp_path / "missing" / "m")
    with pytest.raises(ValueError, match="C identifier"):
        export.to_c(net, str(tmp_path) + os.sep)


# ---------------------------------------------------------------------------
# Models trained by the command line: stored standardisation
# ---------------------------------------------------------------------------

def cli(args, cwd, ok=True):
    proc = subprocess.run([sys.executable, "-m", "bpcore", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_error_line(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def read_csv(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def cli_models(tmp_path_factory):
    """Three CLI-trained models (softmax classifier, binary classifier
    with one sigmoid output, regressor) on features of very
    different scales, with `bpcore predict`'s output for each."""
    d = tmp_path_factory.mktemp("export_cli")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 4)) * [1.0, 50.0, 0.01, 300.0] + [0, 10, 5, -40]
    z = X / [1.0, 50.0, 0.01, 300.0]
    k = (z[:, 0] + z[:, 1] > 0).astype(int) + (z[:, 3] > 0.5)
    names = ["a", "b", "c", "d"]

    def write(path, cols, target_names):
        with open(d / path, "w") as f:
            f.write(",".join(names + target_names) + "\n")
            for row, t in zip(X, cols):
                f.write(",".join([repr(float(v)) for v in row]
                                 + [str(v) for v in t]) + "\n")

    write("multi.csv", np.array(["low", "mid", "high"])[k][:, None],
          ["level"])
    write("binary.csv", np.array(["no", "yes"])[(k > 0).astype(int)][:, None],
          ["ok"])
    write("reg.csv", (z[:, 0] * 3 + 100 + z[:, 1] ** 2)[:, None], ["u"])
    write("features.csv", np.zeros((240, 0)), [])
    common = ["--layers", "8", "--epochs", "3", "--val-split", "0"]
    cli(["train", "multi.csv", "--out", "multi.safetensors", *common], d)
    cli(["train", "binary.csv", "--loss", "binary_cross_entropy", "--out",
         "binary.safetensors", *common], d)
    cli(["train", "reg.csv", "--out", "reg.safetensors",
         "--activation", "tanh", *common], d)
    return d, X


@pytest.mark.parametrize("kind", ["multi", "binary", "reg"])
def test_cli_model_onnx_and_c_apply_its_scaling(cli_models, kind):
    d, X = cli_models
    from bpcore import cli as bcli
    model = d / f"{kind}.safetensors"
    net = bpcore.load(model)
    info = bcli.ModelInfo(net)
    assert "input_mean" in net.metadata
    # what cmd_predict computes, at full precision
    pred, proba = info.decode(net.predict(info.scale(X)))
    expected = proba if kind != "reg" else pred
    # and what it prints (6 significant digits for probabilities)
    cli(["predict", model, "features.csv", "--out", f"{kind}_pred.csv"], d)
    head, rows = read_csv(d / f"{kind}_pred.csv")
    first = 0 if kind == "reg" else 1
    printed = np.array([[float(v) for v in r[first:]] for r in rows])
    np.testing.assert_allclose(printed, expected, rtol=1e-5, atol=1e-6)

    # the exported models read float32 rows: bpcore predict on the same
    # (rounded) values
    X32 = X.astype(np.float32)
    pred, proba = info.decode(net.predict(info.scale(X32.astype(float))))
    expected = proba if kind != "reg" else pred
    export.to_onnx(net, d / f"{kind}.onnx")
    (y,) = run_onnx(d / f"{kind}.onnx", X32)
    assert y.shape == expected.shape
    assert_close(y, expected, np.float32)
    props = {p.key: p.value for p in onnx.load(str(d / f"{kind}.onnx"))
             .metadata_props}
    assert "standardised" in props["bpcore.scaling"]
    # scaling=False: the bare network
    export.to_onnx(net, d / f"{kind}_bare.onnx", scaling=False)
    (y,) = run_onnx(d / f"{kind}_bare.onnx", X32)
    assert_close(y, net.predict(X32), np.float32)

    if CC is not None:
        prefix = str(d / f"{kind}_c")
        export.to_c(net, prefix)
        assert "input_std" in open(prefix + ".c").read()
        y = run_c(prefix, f"{kind}_c", X32, np.float32)
        assert_close(y, expected, np.float32)


def test_cli_export_command(cli_models):
    d, X = cli_models
    from bpcore import cli as bcli
    net = bpcore.load(d / "multi.safetensors")
    info = bcli.ModelInfo(net)
    X = X.astype(np.float32)
    _, expected = info.decode(net.predict(info.scale(X.astype(float))))
    proc = cli(["export", "multi.safetensors", "--format", "onnx", "--out",
                "cmd.onnx"], d)
    assert "cmd.onnx" in proc.stdout
    (y,) = run_onnx(d / "cmd.onnx", X.astype(np.float32))
    assert_close(y, expected, np.float32)
    proc = cli(["export", "multi.safetensors", "--format", "c", "--out",
                "cmd_c"], d)
    assert "cmd_c.h" in proc.stdout and "cmd_c.c" in proc.stdout
    if CC is not None:
        y = run_c(str(d / "cmd_c"), "cmd_c", X.astype(np.float32),
                  np.float32)
        assert_close(y, expected, np.float32)
    info_out = cli(["info", "multi.safetensors"], d).stdout
    assert re.search(r"export: +onnx, c, torch", info_out), info_out


def test_cli_export_errors(cli_models, tmp_path):
    d, _ = cli_models
    one_error_line(cli(["export", "nope.safetensors", "--format", "onnx",
                        "--out", "x.onnx"], d, ok=False), "nope.safetensors")
    proc = cli(["export", "multi.safetensors", "--format", "xml", "--out",
                "x.xml"], d, ok=False)
    assert proc.returncode == 2
    one_error_line(proc, "xml")
    one_error_line(cli(["export", "multi.safetensors", "--format", "onnx",
                        "--out", "no_such_dir/x.onnx"], d, ok=False),
                   "does not exist")
    one_error_line(cli(["export", "multi.safetensors", "--format", "c",
                        "--out", "no_such_dir/x"], d, ok=False),
                   "does not exist")
    # PyTorch missing: a stand-in package that fails to import
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text(
        "raise ImportError('No module named torch')\n")
    env = dict(os.environ, PYTHONPATH=str(fake))
    proc = subprocess.run([sys.executable, "-m", "bpcore", "export",
                           "multi.safetensors", "--format", "torch", "--out",
                           "m.pt"], cwd=d, capture_output=True, text=True,
                          env=env, timeout=300)
    one_error_line(proc, "torch")
    assert not (d / "m.pt").exists()


# ---------------------------------------------------------------------------
# scikit-learn's MLPs <-> bpcore.sklearn
# ---------------------------------------------------------------------------

def _sk_fit(est, X, y):
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


@pytest.mark.parametrize("target", ["binary", "multiclass", "strings",
                                    "multilabel"])
@pytest.mark.parametrize("act", ["relu", "logistic", "tanh", "identity"])
def test_from_sklearn_classifier(rng, target, act):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPClassifier
    from bpcore.sklearn import MLPClassifier as BpClassifier
    from bpcore.sklearn import from_sklearn, to_sklearn
    X = rng.normal(size=(200, 6))
    score = X[:, 0] + X[:, 1] * X[:, 2]
    y = {"binary": (score > 0).astype(int),
         "multiclass": np.digitize(score, [-0.5, 0.5]),
         "strings": np.array(["x", "y", "z"])[np.digitize(score, [-.5, .5])],
         "multilabel": np.stack([score > 0, X[:, 3] > 0], 1).astype(int),
         }[target]
    sk = _sk_fit(MLPClassifier((12, 5), activation=act, max_iter=20,
                               random_state=0), X, y)
    bp = from_sklearn(sk)
    assert isinstance(bp, BpClassifier)
    assert bp.get_params()["hidden_layer_sizes"] == (12, 5)
    assert bp.network_.dtype == np.float64
    np.testing.assert_array_equal(bp.classes_, sk.classes_)
    np.testing.assert_allclose(bp.predict_proba(X), sk.predict_proba(X),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(bp.predict(X), sk.predict(X))
    # back to scikit-learn
    sk2 = to_sklearn(bp)
    np.testing.assert_allclose(sk2.predict_proba(X), sk.predict_proba(X),
                               rtol=1e-12, atol=1e-12)
    # training goes on
    before = bp.network_.params.copy()
    t = bp.t_
    bp.partial_fit(X, y)
    assert bp.t_ == t + len(X)
    assert not np.array_equal(before, bp.network_.params)
    assert bp.score(X, y) > 0


def test_from_sklearn_regressor_and_float32(rng):
    pytest.importorskip("sklearn")
    from sklearn.neural_network import MLPRegressor
    from bpcore.sklearn import MLPRegressor as BpRegressor
    from bpcore.sklearn import from_sklearn, to_sklearn
    X = rng.normal(size=(150, 4))
    Y = np.stack([X[:, 0] * 2 + 1, np.sin(X[:, 1])], 1)
    for y in (Y, Y[:, 0]):
        sk = _sk_fit(MLPRegressor(hidden_layer_sizes=(10,), max_iter=20,
                                  random_state=0), X, y)
        bp = from_sklearn(sk)
        assert isinstance(bp, BpRegressor)
        np.testing.assert_allclose(bp.predict(X), sk.predict(X),
                                   rtol=1e-12, atol=1e-12)
        assert bp.predict(X).shape == sk.predict(X).shape
        bp.partial_fit(X, y)
        np.testing.assert_allclose(to_sklearn(bp).predict(X), bp.predict(X),
                                   rtol=1e-12, atol=1e-12)
    X32 = X.astype(np.float32)
    sk = _sk_fit(MLPRegressor(hidden_layer_sizes=(10,), max_iter=5,
                              random_state=0), X32, Y[:, 0])
    bp = from_sklearn(sk)
    assert bp.network_.dtype == np.float32
    np.testing.assert_allclose(bp.predict(X32), sk.predict(X32), rtol=1e-5,
                               atol=1e-5)


def test_sklearn_conversion_errors(rng):
    pytest.importorskip("sklearn")
    from sklearn.exceptions import NotFittedError
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from bpcore.sklearn import MLPClassifier as BpClassifier
    from bpcore.sklearn import from_sklearn, to_sklearn
    with pytest.raises(NotFittedError, match="not fitted"):
        from_sklearn(MLPClassifier())
    with pytest.raises(TypeError, match="MLPClassifier or MLPRegressor"):
        from_sklearn(LogisticRegression())
    X = np.abs(rng.normal(size=(40, 3)))
    sk = _sk_fit(MLPRegressor(loss="poisson", max_iter=3), X, X[:, 0])
    with pytest.raises(ValueError, match="output activation"):
        from_sklearn(sk)
    with pytest.raises(NotFittedError, match="not fitted"):
        to_sklearn(BpClassifier())
    bp = _sk_fit(BpClassifier((4,), activation="gelu", max_iter=2), X,
                 X[:, 0] > 0.5)
    with pytest.raises(ValueError, match="gelu"):
        to_sklearn(bp)


def test_import_bpcore_stays_light():
    code = ("import sys, bpcore; bpcore.export.to_c; "
            "print(sorted(m for m in ('onnx', 'onnxruntime', 'torch') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
