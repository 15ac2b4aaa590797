"""The ``bpcore`` command line, end to end in subprocesses.

Each test runs ``python -m bpcore ...`` in a temporary folder and checks
what a user sees: exit status, output, files written.  User errors must end
with exactly one ``bpcore...: error: ...`` line on stderr, a non-zero exit
status and no traceback.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

import bpcore

TIMEOUT = 300
LABELS = ("cat", "dog", "fox")


def run(args, cwd, expect_ok=True):
    """Run ``python -m bpcore *args`` in cwd; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "bpcore", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    if expect_ok:
        assert proc.returncode == 0, (
            f"bpcore {' '.join(map(str, args))} failed "
            f"({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        assert "Traceback" not in proc.stderr
    return proc


def assert_user_error(proc, *fragments):
    """Non-zero exit, one error line on stderr naming the problem."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "error:" in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def make_classification(rng, m=300):
    """Three separable classes in 4 features of different scales."""
    centres = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 3]], float)
    k = rng.integers(0, 3, size=m)
    X = centres[k] + rng.normal(0, 0.6, size=(m, 4))
    X *= np.array([1.0, 10.0, 0.1, 100.0])
    return X, k


def write_csv(path, X, y=None, header=None, target_first=False):
    with open(path, "w") as f:
        if header is not None:
            f.write(",".join(header) + "\n")
        for i, row in enumerate(X):
            cells = [repr(float(v)) for v in row]
            if y is not None:
                if target_first:
                    cells.insert(0, str(y[i]))
                else:
                    cells.append(str(y[i]))
            f.write(",".join(cells) + "\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with data files and a classifier trained on a labelled CSV."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X, k = make_classification(rng)
    labels = np.array(LABELS)[k]
    names = ["height", "weight", "speed", "age"]
    write_csv(d / "animals.csv", X, labels, names + ["animal"])
    write_csv(d / "animals_features.csv", X[:20], None, names)
    write_csv(d / "animals_shuffled.csv", X[:20, ::-1], None, names[::-1])
    proc = run(["train", "animals.csv", "--target", "animal", "--layers",
                "16", "--epochs", "30", "--out", "animals.safetensors"], d)
    return {"dir": d, "X": X, "labels": labels, "names": names,
            "train": proc, "model": d / "animals.safetensors"}


# ---------------------------------------------------------------------------
# Training and using a model
# ---------------------------------------------------------------------------

def test_train_csv_with_header(work):
    out = work["train"].stdout
    assert "classification into 3 classes (cat, dog, fox)" in out
    assert "epoch 30/30" in out and "val_accuracy" in out
    assert "samples/s" in out and "validation accuracy" in out
    assert "saved the model to" in out
    net = bpcore.load(work["model"])
    assert net.layers == (4, 16, 3)
    assert net.activation == ("relu", "softmax")
    md = net.metadata
    assert json.loads(md["feature_names"]) == work["names"]
    assert md["target_name"] == "animal"
    assert json.loads(md["classes"]) == list(LABELS)
    mean = np.array(json.loads(md["input_mean"]))
    assert mean.shape == (4,) and abs(mean[3]) > 10   # the raw scale
    summary = json.loads(md["training_summary"])
    assert summary["epochs"] == 30 and summary["val_accuracy"] > 0.9


def test_predict_gives_original_labels(work):
    d = work["dir"]
    run(["predict", work["model"], "animals.csv", "--out", "pred.csv"], d)
    lines = (d / "pred.csv").read_text().splitlines()
    assert lines[0] == "animal,p(cat),p(dog),p(fox)"
    rows = [ln.split(",") for ln in lines[1:]]
    assert len(rows) == len(work["labels"])
    predicted = np.array([r[0] for r in rows])
    assert set(predicted) <= set(LABELS)
    assert np.mean(predicted == work["labels"]) > 0.9
    proba = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-4)


def test_predict_without_target_column_and_to_stdout(work):
    d = work["dir"]
    full = run(["predict", work["model"], "animals.csv"], d).stdout
    part = run(["predict", work["model"], "animals_features.csv"], d).stdout
    assert part.splitlines() == full.splitlines()[:21]
    # Columns are matched by name, whatever their order.
    moved = run(["predict", work["model"], "animals_shuffled.csv"], d).stdout
    assert moved == part


def test_predict_applies_the_stored_standardisation(work):
    net = bpcore.load(work["model"])
    mean = np.array(json.loads(net.metadata["input_mean"]))
    std = np.array(json.loads(net.metadata["input_std"]))
    expected = net.predict((work["X"][:20] - mean) / std)
    out = run(["predict", work["model"], "animals_features.csv"],
              work["dir"]).stdout
    proba = np.array([[float(v) for v in ln.split(",")[1:]]
                      for ln in out.splitlines()[1:]])
    np.testing.assert_allclose(proba, expected, rtol=1e-5, atol=1e-6)


def test_evaluate(work):
    out = run(["evaluate", work["model"], "animals.csv"], work["dir"]).stdout
    assert "cross_entropy" in out
    acc = float(out.split("accuracy:")[1].split()[0])
    assert acc > 0.9
    for label in LABELS:
        assert f"  {label}: " in out


def test_info(work):
    out = run(["info", work["model"]], work["dir"]).stdout
    assert "4 -> 16 (relu) -> 3 (softmax)" in out
    assert "parameters:   131 (float32)" in out
    assert "format version 1" in out
    assert "classes: cat, dog, fox" in out
    assert "height, weight, speed, age" in out
    assert "trained:      30 epochs" in out and "val_accuracy" in out


def test_csv_without_header_and_integer_labels(tmp_path):
    rng = np.random.default_rng(1)
    X, k = make_classification(rng, m=200)
    write_csv(tmp_path / "data.csv", X, k)            # target last, no header
    write_csv(tmp_path / "new.csv", X[:10])           # features only
    out = run(["train", "data.csv", "--epochs", "20", "--layers", "8",
               "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "16",
               "--val-split", "0.25", "--seed", "3", "--threads", "1"],
              tmp_path).stdout
    assert "col4" in out and "classification into 3 classes (0, 1, 2)" in out
    assert "training on 150 rows, validating on 50" in out
    assert (tmp_path / "model.safetensors").exists()   # the default --out
    pred = run(["predict", "model.safetensors", "new.csv"], tmp_path).stdout
    lines = pred.splitlines()
    assert lines[0] == "col4,p(0),p(1),p(2)" and len(lines) == 11
    same = run(["predict", "model.safetensors", "data.csv"], tmp_path).stdout
    assert same.splitlines()[:11] == lines


def test_target_by_index_first_column(tmp_path):
    rng = np.random.default_rng(2)
    X, k = make_classification(rng, m=120)
    write_csv(tmp_path / "d.csv", X, np.array(LABELS)[k],
              ["label", "a", "b", "c", "d"], target_first=True)
    out = run(["train", "d.csv", "--target", "0", "--epochs", "5"],
              tmp_path).stdout
    assert "target 'label'" in out


def test_npz_regression(tmp_path):
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(400, 3))
    y = 100.0 + 50.0 * (X[:, 0] - 0.5 * X[:, 1] * X[:, 2])
    np.savez(tmp_path / "reg.npz", X=X, y=y)
    out = run(["train", "reg.npz", "--epochs", "40", "--layers", "32,32",
               "--activation", "tanh", "--out", "reg.safetensors"],
              tmp_path).stdout
    assert "task: regression" in out and "val_R2" in out
    assert "validation R2" in out
    ev = run(["evaluate", "reg.safetensors", "reg.npz"], tmp_path).stdout
    r2 = float(ev.split("R2:")[1].split()[0])
    assert r2 > 0.9
    pred = run(["predict", "reg.safetensors", "reg.npz"], tmp_path).stdout
    values = np.array([float(v) for v in pred.splitlines()[1:]])
    assert pred.splitlines()[0] == "y"
    assert np.sqrt(np.mean((values - y) ** 2)) < 0.3 * y.std()  # in y units
    info = run(["info", "reg.safetensors"], tmp_path).stdout
    assert "regression" in info and "identity" in info


def test_npy_pair_explicit_and_automatic(tmp_path):
    rng = np.random.default_rng(4)
    X, k = make_classification(rng, m=150)
    np.save(tmp_path / "X_train.npy", X)
    np.save(tmp_path / "y_train.npy", k)
    a = run(["train", "X_train.npy", "y_train.npy", "--epochs", "5",
             "--out", "a.safetensors"], tmp_path).stdout
    b = run(["train", "X_train.npy", "--epochs", "5", "--out",
             "b.safetensors"], tmp_path).stdout
    assert "150 rows from X_train.npy" in a and "classification" in b
    # Same data and seed: the same model, bit for bit.
    na, nb = (bpcore.load(tmp_path / f) for f in ("a.safetensors",
                                                   "b.safetensors"))
    assert np.array_equal(na.params, nb.params)
    ev = run(["evaluate", "a.safetensors", "X_train.npy", "y_train.npy"],
             tmp_path).stdout
    assert "accuracy" in ev


def test_model_saved_from_python(tmp_path):
    """A network without the CLI's metadata: raw features, default names."""
    net = bpcore.Network([3, 5, 2], activation="tanh", output="softmax",
                         loss="cross_entropy", seed=0)
    net.save(tmp_path / "plain.safetensors")
    X = np.random.default_rng(5).normal(size=(6, 3))
    write_csv(tmp_path / "x.csv", X)
    info = run(["info", "plain.safetensors"], tmp_path).stdout
    assert "3 -> 5 (tanh) -> 2 (softmax)" in info and "x0, x1, x2" in info
    out = run(["predict", "plain.safetensors", "x.csv"], tmp_path).stdout
    proba = np.array([[float(v) for v in ln.split(",")[1:]]
                      for ln in out.splitlines()[1:]])
    np.testing.assert_allclose(proba, net.predict(X), rtol=1e-5, atol=1e-6)


def test_plot(tmp_path, work):
    proc = run(["train", work["dir"] / "animals.csv", "--epochs", "3",
                "--plot", "curve.png", "--out", "p.safetensors"], tmp_path,
               expect_ok=False)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert_user_error(proc, "matplotlib", "pip install")
        assert not (tmp_path / "p.safetensors").exists()  # failed up front
    else:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "curve.png").stat().st_size > 1000


def test_demo(tmp_path):
    out = run(["train"], tmp_path).stdout
    assert "Part 1: the tutorial's 2-3-2-2 sigmoid network" in out
    assert "checked against the tutorial's formulas in numpy: agree" in out
    assert "Part 2: a realistic classifier" in out
    assert "samples/s" in out
    model = tmp_path / "bpcore-demo.safetensors"
    assert f"saved the model to {model}" in out
    accuracy = float(out.split("validation accuracy")[1].split()[0])
    assert accuracy > 0.75
    ev = run(["evaluate", model.name, "bpcore-demo.csv"], tmp_path).stdout
    assert "accuracy" in ev


def test_demo_honours_out(tmp_path):
    (tmp_path / "models").mkdir()
    out = run(["train", "--epochs", "1", "--out", "models/d.safetensors"],
              tmp_path).stdout
    assert (tmp_path / "models" / "d.safetensors").exists()
    assert (tmp_path / "models" / "d.csv").exists()
    assert not (tmp_path / "bpcore-demo.safetensors").exists()
    assert "models" in out


def test_version_and_help(tmp_path):
    assert bpcore.__version__ in run(["--version"], tmp_path).stdout
    helptext = run(["train", "--help"], tmp_path).stdout
    for flag in ("--target", "--layers", "--activation", "--loss", "--epochs",
                 "--batch-size", "--optimizer", "--lr", "--val-split",
                 "--seed", "--threads", "--out", "--plot", "--header"):
        assert flag in helptext
    for command in ("predict", "evaluate"):
        assert "--header {auto,yes,no}" in run([command, "--help"],
                                               tmp_path).stdout


# ---------------------------------------------------------------------------
# Header detection and class labels (audit findings B4, B5, B6, B9)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("marker", ["NA", "?", "null", ""])
@pytest.mark.parametrize("where", ["feature", "target"])
def test_missing_value_in_first_row_is_not_a_header(tmp_path, marker, where):
    """B4: a missing-value marker in row 1 of a headerless numeric file is a
    missing value (a one-line error), not a header that drops the row."""
    rows = [[str(i), str(i % 5), str(i % 3)] for i in range(1, 41)]
    rows[0][1 if where == "feature" else 2] = marker
    (tmp_path / "d.csv").write_text("".join(",".join(r) + "\n"
                                            for r in rows))
    proc = run(["train", "d.csv", "--epochs", "1"], tmp_path,
               expect_ok=False)
    assert_user_error(proc)
    line = proc.stderr.strip()
    assert "missing value" in line or "empty" in line, line
    assert "line 1," in line or "row 1)" in line, line


def test_missing_value_in_first_row_for_predict(work, tmp_path):
    (tmp_path / "na.csv").write_text("1,NA,3,4\n5,6,7,8\n")
    proc = run(["predict", work["model"], "na.csv"], tmp_path,
               expect_ok=False)
    assert_user_error(proc, "line 1", "missing value 'NA'")


def test_predict_one_headerless_row_with_text_label(work, tmp_path):
    """B5: one data row holding a text label is data, not a lone header."""
    rng = np.random.default_rng(6)
    X, k = make_classification(rng, m=120)
    write_csv(tmp_path / "train.csv", X, np.array(LABELS)[k])  # no header
    run(["train", "train.csv", "--epochs", "3", "--out", "m.safetensors"],
        tmp_path)
    write_csv(tmp_path / "one.csv", X[:1], np.array(LABELS)[k[:1]])
    out = run(["predict", "m.safetensors", "one.csv"], tmp_path).stdout
    lines = out.splitlines()
    assert lines[0] == "col4,p(cat),p(dog),p(fox)" and len(lines) == 2
    ev = run(["evaluate", "m.safetensors", "one.csv"], tmp_path).stdout
    assert "one.csv, 1 rows" in ev
    # The same with a model trained on a file with a header.
    write_csv(tmp_path / "one4.csv", work["X"][:1], work["labels"][:1])
    out = run(["predict", work["model"], "one4.csv"], tmp_path).stdout
    assert len(out.splitlines()) == 2
    # A file holding only the model's feature names is still a header.
    (tmp_path / "names.csv").write_text(",".join(work["names"]) + "\n")
    proc = run(["predict", work["model"], "names.csv"], tmp_path,
               expect_ok=False)
    assert_user_error(proc, "no data rows")


def test_class_labels_keep_their_spelling(tmp_path):
    """B6: labels read from a CSV are the strings as written; models that
    stored canonical numbers ('1' for '001') still predict and evaluate."""
    rng = np.random.default_rng(7)
    X, k = make_classification(rng, m=150)
    codes = np.array(["001", "002", "010"])[k]
    write_csv(tmp_path / "codes.csv", X, codes, ["a", "b", "c", "d", "code"])
    out = run(["train", "codes.csv", "--epochs", "20", "--out",
               "codes.safetensors"], tmp_path).stdout
    assert "3 classes (001, 002, 010)" in out
    pred = run(["predict", "codes.safetensors", "codes.csv"],
               tmp_path).stdout.splitlines()
    assert pred[0] == "code,p(001),p(002),p(010)"
    predicted = np.array([ln.split(",")[0] for ln in pred[1:]])
    assert np.mean(predicted == codes) > 0.9
    ev = run(["evaluate", "codes.safetensors", "codes.csv"], tmp_path).stdout
    assert float(ev.split("accuracy:")[1].split()[0]) > 0.9
    assert "  001: " in ev
    # '01' and '1' are two classes.
    write_csv(tmp_path / "two.csv", X, np.array(["01", "1", "2"])[k],
              ["a", "b", "c", "d", "y"])
    out = run(["train", "two.csv", "--epochs", "1", "--out",
               "two.safetensors"], tmp_path).stdout
    assert "3 classes (01, 1, 2)" in out
    # A model saved before this change stored the canonical numbers.
    net = bpcore.load(tmp_path / "codes.safetensors")
    net.metadata["classes"] = json.dumps(["1", "2", "10"])
    net.save(tmp_path / "old.safetensors")
    pred = run(["predict", "old.safetensors", "codes.csv"],
               tmp_path).stdout.splitlines()
    assert pred[0] == "code,p(1),p(2),p(10)"
    assert {ln.split(",")[0] for ln in pred[1:]} <= {"1", "2", "10"}
    ev = run(["evaluate", "old.safetensors", "codes.csv"], tmp_path).stdout
    assert float(ev.split("accuracy:")[1].split()[0]) > 0.9
    # Integer labels from .npz stay integers.
    np.savez(tmp_path / "ints.npz", X=X, y=k + 1)
    run(["train", "ints.npz", "--epochs", "1", "--out", "ints.safetensors"],
        tmp_path)
    pred = run(["predict", "ints.safetensors", "ints.npz"], tmp_path).stdout
    assert pred.splitlines()[0] == "y,p(1),p(2),p(3)"


def test_numeric_header_names_with_text_target(work, tmp_path):
    """B9: a header of numbers over a text label column is a header."""
    names = ["1", "2", "3", "4"]
    write_csv(tmp_path / "n.csv", work["X"], work["labels"],
              names + ["label"])
    out = run(["train", "n.csv", "--epochs", "3"], tmp_path).stdout
    assert "300 rows" in out and "target 'label'" in out
    assert "3 classes (cat, dog, fox)" in out
    md = bpcore.load(tmp_path / "model.safetensors").metadata
    assert json.loads(md["feature_names"]) == names
    pred = run(["predict", "model.safetensors", "n.csv"], tmp_path).stdout
    assert len(pred.splitlines()) == 301


def test_header_flag(work, tmp_path):
    """--header yes|no overrides the detection."""
    labels = list(work["labels"][:60])
    labels[0] = "bird"                     # a class seen only in row 1
    write_csv(tmp_path / "d.csv", work["X"][:60], labels)
    auto = run(["train", "d.csv", "--epochs", "1"], tmp_path).stdout
    assert "59 rows" in auto and "target 'bird'" in auto
    no = run(["train", "d.csv", "--epochs", "1", "--header", "no"],
             tmp_path).stdout
    assert "60 rows" in no and "4 classes (bird, cat, dog, fox)" in no
    one = run(["predict", "model.safetensors", "d.csv", "--header", "no"],
              tmp_path).stdout
    assert len(one.splitlines()) == 61
    write_csv(tmp_path / "n.csv", work["X"][:60])
    yes = run(["train", "n.csv", "--epochs", "1", "--header", "yes",
               "--loss", "mse"], tmp_path).stdout
    assert "59 rows" in yes
    proc = run(["predict", work["model"], "n.csv", "--header", "maybe"],
               tmp_path, expect_ok=False)
    assert_user_error(proc, "--header")


# ---------------------------------------------------------------------------
# Bad input: one line, non-zero exit, no traceback
# ---------------------------------------------------------------------------

BAD_FILES = {
    "nonnumeric.csv": "a,b,y\n1,2,0\n3,abc,1\n",
    "nan.csv": "a,b,y\n1,2,0\n3,nan,1\n",
    "inf.csv": "1,2,0\n3,inf,1\n",
    "emptycell.csv": "a,b,y\n1,2,0\n3,,1\n",
    "ragged.csv": "a,b,y\n1,2,0\n3,4\n",
    "empty.csv": "",
    "headeronly.csv": "a,b,y\n",
    "onecolumn.csv": "y\n1\n0\n",
    "oneclass.csv": "a,y\n1,0\n2,0\n",
    "garbage.safetensors": "this is not a model",
    "natarget.csv": "a,b,y\n" + "".join(
        f"{i},{i % 7},{'NA' if i == 5 else i * 0.37}\n" for i in range(60)),
}

# CLI metadata of the wrong form in a model saved from Python
BAD_METADATA = {
    "classes": "3", "feature_names": "5", "training_summary": "[1,2]",
    "data_layout": "[1]", "task": "foo",
    "input_mean": '["a", "b", "c", "d"]',
}


@pytest.fixture(scope="module")
def bad(work):
    d = work["dir"]
    for name, text in BAD_FILES.items():
        (d / name).write_text(text)
    (d / "binary.csv").write_bytes(b"\x00\xff\xfe\x00garbage")
    (d / "wide.csv").write_text("height,weight,speed\n1,2,3\n")
    (d / "narrow.csv").write_text("1,2,3\n4,5,6\n")
    raw = work["model"].read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    np.savez(d / "noX.npz", A=np.zeros((3, 2)))
    np.savez(d / "nany.npz", X=np.zeros((3, 2)), y=np.array([0, np.nan, 1]))
    np.savez(d / "mismatch.npz", X=np.zeros((3, 2)), y=np.zeros(4))
    np.savez(d / "narrow.npz", X=np.zeros((3, 2)), y=np.zeros(3))
    np.save(d / "objects.npy", np.array([1, "a"], dtype=object))
    for key, value in BAD_METADATA.items():
        net = bpcore.Network([4, 3], output="softmax", loss="cross_entropy",
                             seed=0)
        net.metadata = {key: value}
        net.save(d / f"meta_{key}.safetensors")
    return d


M = "animals.safetensors"
BAD_CASES = {
    "missing data file": (["train", "nope.csv"], ["nope.csv", "no such file"]),
    "wrong column": (["train", "animals.csv", "--target", "colour"],
                     ["colour", "no such column", "height"]),
    "index out of range": (["train", "animals.csv", "--target", "9"],
                           ["5 columns"]),
    "non-numeric cell": (["train", "nonnumeric.csv"],
                         ["line 3", "'b'", "'abc' is not a number"]),
    "NaN": (["train", "nan.csv"], ["line 3", "not a finite number"]),
    "infinity": (["train", "inf.csv"], ["line 2", "not a finite number"]),
    "empty cell": (["train", "emptycell.csv"], ["line 3", "empty cell"]),
    "ragged rows": (["train", "ragged.csv"], ["line 3 has 2 fields"]),
    "empty file": (["train", "empty.csv"], ["empty"]),
    "header only": (["train", "headeronly.csv"], ["no data rows"]),
    "no features": (["train", "onecolumn.csv"], ["one column"]),
    "single class": (["train", "oneclass.csv"], ["single class"]),
    "binary file": (["train", "binary.csv"], ["binary.csv"]),
    "npz without X": (["train", "noX.npz"], ["no array named 'X'"]),
    "npz NaN target": (["train", "nany.npz"], ["NaN"]),
    "npz rows": (["train", "mismatch.npz"], ["3 rows", "4"]),
    "object npy": (["train", "objects.npy"], ["objects.npy"]),
    "model width, header": (["predict", M, "wide.csv"], ["no column 'age'"]),
    "model width, no header": (["predict", M, "narrow.csv"],
                               ["3 columns", "expects 4 features"]),
    "model width, npz": (["evaluate", M, "narrow.npz"],
                         ["2 columns", "expects 4"]),
    "evaluate without target": (["evaluate", M, "animals_features.csv"],
                                ["no target column", "animal"]),
    "unreadable model": (["predict", "garbage.safetensors", "animals.csv"],
                         ["garbage.safetensors", "not a valid bpcore model"]),
    "truncated model": (["info", "truncated.safetensors"],
                        ["not a valid bpcore model"]),
    "missing model": (["evaluate", "nomodel.safetensors", "animals.csv"],
                      ["nomodel.safetensors", "no such file"]),
    "data as model": (["info", "animals.csv"], ["not a valid bpcore model"]),
    "bad --layers": (["train", "animals.csv", "--layers", "16,x"],
                     ["--layers"]),
    "bad --epochs": (["train", "animals.csv", "--epochs", "0"],
                     ["--epochs"]),
    "bad --lr": (["train", "animals.csv", "--lr", "-1"], ["--lr"]),
    "bad --val-split": (["train", "animals.csv", "--val-split", "1"],
                        ["--val-split"]),
    "bad --activation": (["train", "animals.csv", "--activation", "swish"],
                         ["--activation"]),
    "bad --threads": (["train", "animals.csv", "--threads", "zero"],
                      ["--threads"]),
    "mse on labels": (["train", "animals.csv", "--loss", "mse"],
                      ["numeric target"]),
    "--out in a missing folder": (
        ["train", "animals.csv", "--out", "no/such/dir/m.safetensors"],
        ["does not exist"]),
    "divergence": (["train", "animals.csv", "--optimizer", "sgd", "--lr",
                    "1e30", "--epochs", "2", "--out", "div.safetensors"],
                   ["diverged", "--lr"]),
    "unknown command": (["fit", "animals.csv"], ["invalid choice"]),
    "no command": ([], ["required"]),
    "predict without data": (["predict", M], ["DATA"]),
    "three data files": (["train", "a.npy", "b.npy", "c.npy"], ["pair"]),
    "NA in a numeric target": (["train", "natarget.csv"],
                               ["missing value 'NA'", "row 6"]),
    "demo --out over its data": (["train", "--out", "demo.csv"],
                                 ["demo.csv", "another name"]),
    **{f"metadata {key}": (["info", f"meta_{key}.safetensors"],
                           [f"metadata {key!r}", "wrong form"])
       for key in BAD_METADATA},
    "metadata on predict": (["predict", "meta_data_layout.safetensors",
                             "narrow.csv"], ["'data_layout'"]),
}


def test_train_piped_into_head_still_saves(work, tmp_path):
    """The reader of stdout leaving early (``| head -1``) does not stop
    train before it saves the model; exit status 0."""
    model = tmp_path / "piped.safetensors"
    cmd = [sys.executable, "-m", "bpcore", "train", "animals.csv", "--epochs",
           "3", "--out", str(model)]
    proc = subprocess.Popen(cmd, cwd=work["dir"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()                     # what `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(TIMEOUT) == 0, err
    assert "Traceback" not in err
    assert bpcore.load(model).layers[0] == 4


@pytest.mark.parametrize("args, fragments", list(BAD_CASES.values()),
                         ids=list(BAD_CASES))
def test_bad_input(bad, args, fragments):
    proc = run(args, bad, expect_ok=False)
    assert_user_error(proc, *fragments)


# ---------------------------------------------------------------------------
# Pieces, in process
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rows, expected", [
    ([["a", "b"], ["1", "2"]], True),
    ([["1", "2"], ["3", "4"]], False),
    ([["1", "2", "cat"], ["3", "4", "dog"]], False),     # text labels
    ([["x", "y", "label"], ["1", "2", "cat"]], True),
    ([["a", "b"]], True),
    ([["2019", "2020", "name"], ["1", "2", "x"]], False),
    ([["1", "NA", "0"], ["2", "3", "1"]], False),          # B4
    ([["?", "", "null"], ["2", "3", "1"]], False),
    ([["1", "2", "label"], ["3", "4", "cat"], ["5", "6", "cat"]], True),  # B9
    ([["1", "2", "cat"], ["3", "4", "cat"], ["5", "6", "dog"]], False),
    ([["1", "2", "cat"], ["3", "4", "dog"], ["5", "6", "fox"]], False),
], ids=["header", "numbers", "text-target", "header-text-target",
        "header-only", "numeric-header-names", "missing-markers",
        "only-missing-markers", "numeric-names-label-header",
        "label-repeated-below", "labels-never-repeat"])
def test_header_detection(rows, expected):
    from bpcore.cli import _looks_like_header
    assert _looks_like_header(rows) is expected


def test_choices_come_from_bpcore_names():
    """--activation, --loss and --optimizer offer exactly bpcore's names
    (in their --help order, the most used first)."""
    from bpcore import _names
    from bpcore.cli import build_parser
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    choices = {a.dest: a.choices for a in train._actions if a.choices}
    assert choices["activation"] == ("relu", "tanh", "sigmoid", "leaky_relu",
                                     "elu", "gelu", "softplus", "identity")
    assert sorted(choices["activation"]) == sorted(_names.ACTIVATIONS)
    assert sorted(choices["loss"]) == sorted(_names.LOSSES)
    assert sorted(choices["optimizer"]) == sorted(_names.SOLVERS)


def test_choose_task():
    from bpcore.cli import choose_task
    assert choose_task(np.array(["a", "b"]), None) == (
        "classification", "cross_entropy")
    assert choose_task(np.array([0.0, 1.0, 2.0]), None)[0] == "classification"
    assert choose_task(np.linspace(0, 1, 50), None) == ("regression", "mse")
    assert choose_task(np.arange(100.0), None)[0] == "regression"
    assert choose_task(np.array([0.0, 1.0]), "mse")[0] == "regression"
    assert choose_task(np.array([0.0, 1.0]), "binary_cross_entropy") == (
        "classification", "binary_cross_entropy")
