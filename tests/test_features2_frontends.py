"""Dropout and clip_norm through the front ends: the scikit-learn
estimators (dropout, an extension) and the CLI (--dropout, --clip-norm)."""
import subprocess
import sys

import numpy as np
import pytest

import bpcore


def _cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "bpcore", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _csv(path, rng, m=200):
    X = rng.normal(size=(m, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    with open(path, "w") as f:
        f.write("a,b,c,label\n")
        for row, t in zip(X, y):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{t}\n")


def test_cli_dropout_and_clip_norm(tmp_path, rng):
    _csv(tmp_path / "d.csv", rng)
    p = _cli(["train", "d.csv", "--epochs", "3", "--dropout", "0.3",
              "--clip-norm", "0.5", "--layers", "8", "--out", "m.safetensors"],
             tmp_path)
    assert p.returncode == 0, p.stderr
    net = bpcore.load(tmp_path / "m.safetensors")
    assert net.dropout == (0.3,)
    help_text = _cli(["train", "--help"], tmp_path).stdout
    assert "--dropout" in help_text and "--clip-norm" in help_text


@pytest.mark.parametrize("args,fragment", [
    (["--dropout", "1"], "--dropout"),
    (["--dropout", "x"], "--dropout"),
    (["--clip-norm", "0"], "--clip-norm"),
    (["--clip-norm", "nan"], "--clip-norm"),
    (["--dropout", "0.2", "--layers", "none"], "--dropout needs hidden"),
])
def test_cli_bad_values(tmp_path, rng, args, fragment):
    _csv(tmp_path / "d.csv", rng, m=50)
    p = _cli(["train", "d.csv", "--epochs", "1", *args], tmp_path)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert fragment in p.stderr
    assert not (tmp_path / "model.safetensors").exists()


@pytest.mark.filterwarnings("ignore:Stochastic Optimizer")
def test_sklearn_dropout(rng):
    pytest.importorskip("sklearn")
    from bpcore.sklearn import MLPClassifier, MLPRegressor
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] > 0).astype(int)
    clf = MLPClassifier((16, 8), dropout=[0.2, 0.1], max_iter=30,
                        random_state=0).fit(X, y)
    assert clf.network_.dropout == (0.2, 0.1)
    assert clf.get_params()["dropout"] == [0.2, 0.1]
    # prediction never drops: repeated calls agree, and equal the network's
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))
    plain = MLPClassifier((16, 8), max_iter=30, random_state=0).fit(X, y)
    assert not np.array_equal(plain.network_.params, clf.network_.params)
    # same seed: same result
    again = MLPClassifier((16, 8), dropout=[0.2, 0.1], max_iter=30,
                          random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.network_.params, clf.network_.params)
    reg = MLPRegressor((8,), dropout=0.5, max_iter=20, random_state=0)
    reg.fit(X, X[:, 0])
    assert reg.network_.dropout == (0.5,)
    # set_params between warm-started fits reaches the network
    reg.set_params(dropout=0.1, warm_start=True).fit(X, X[:, 0])
    assert reg.network_.dropout == (0.1,)


@pytest.mark.parametrize("bad", [1.0, -0.5, "x", [0.1, 0.2]])
def test_sklearn_bad_dropout(rng, bad):
    pytest.importorskip("sklearn")
    from bpcore.sklearn import MLPClassifier
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="'dropout' parameter of "
                                         "MLPClassifier"):
        MLPClassifier((5,), dropout=bad).fit(X, y)
