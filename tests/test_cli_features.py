"""The CLI's training-feature flags: --loss mae|huber|poisson (with
--huber-delta), --optimizer lbfgs, --plateau, --csv-log, --checkpoint."""
import csv
import subprocess
import sys

import numpy as np
import pytest

import bpcore

TIMEOUT = 300


def run(args, cwd, expect_ok=True):
    proc = subprocess.run([sys.executable, "-m", "bpcore", *map(str, args)],
                          cwd=cwd, capture_output=True, text=True,
                          timeout=TIMEOUT)
    if expect_ok:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
    return proc


def _user_error(proc, *fragments):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    for f in fragments:
        assert f in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("clif")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    counts = rng.poisson(np.exp(0.6 * X[:, 0] + 0.3))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=200)
    np.savez(d / "reg.npz", X=X, y=y)
    np.savez(d / "counts.npz", X=X, y=counts.astype(float))
    np.savez(d / "neg.npz", X=X, y=y)
    return d


@pytest.mark.parametrize("loss", ["mae", "huber"])
def test_robust_losses(loss, data):
    out = data / f"{loss}.safetensors"
    run(["train", "reg.npz", "--loss", loss, "--huber-delta", "0.5",
         "--epochs", "5", "--out", out.name], data)
    net = bpcore.load(out)
    assert net.loss == loss and net.activation[-1] == "identity"
    if loss == "huber":
        assert net.huber_delta == 0.5
    proc = run(["evaluate", out.name, "reg.npz"], data)
    assert loss in proc.stdout


def test_poisson_predicts_rates_on_the_count_scale(data):
    run(["train", "counts.npz", "--loss", "poisson", "--optimizer", "lbfgs",
         "--epochs", "60", "--out", "p.safetensors", "--csv-log", "p.csv"],
        data)
    net = bpcore.load(data / "p.safetensors")
    assert net.loss == "poisson"
    proc = run(["predict", "p.safetensors", "counts.npz", "--out",
                "pred.csv"], data)
    with open(data / "pred.csv") as f:
        rows = list(csv.reader(f))
    pred = np.array([float(r[-1]) for r in rows[1:]])
    assert (pred > 0).all()
    z = np.load(data / "counts.npz")
    # the fitted rates follow the counts (a clear positive correlation)
    assert np.corrcoef(pred, z["y"])[0, 1] > 0.5
    with open(data / "p.csv") as f:
        log = list(csv.reader(f))
    assert log[0] == ["epoch", "loss", "val_loss", "lr"]
    assert all(r[3] == "" for r in log[1:])  # lbfgs: no learning rate
    assert proc.returncode == 0


def test_poisson_rejects_negative_targets(data):
    _user_error(run(["train", "neg.npz", "--loss", "poisson", "--out",
                     "n.safetensors"], data, expect_ok=False), ">= 0")


def test_plateau_checkpoint_and_log(data):
    run(["train", "reg.npz", "--epochs", "12", "--optimizer", "adam", "--lr",
         "0.05", "--plateau", "0", "--csv-log", "log.csv", "--checkpoint",
         "best.safetensors", "--out", "last.safetensors"], data)
    with open(data / "log.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 13
    val = [float(r[2]) for r in rows[1:]]
    lr = [float(r[3]) for r in rows[1:]]
    assert lr[0] == 0.05
    # patience 0: the rate drops by 10 after each epoch that did not
    # improve the validation loss
    best = np.inf
    for e in range(11):
        improved = val[e] < best * (1 - 1e-4)
        best = min(best, val[e]) if improved else best
        # (PyTorch's eps=1e-8: no reduction smaller than that)
        smaller = lr[e] / 10 if lr[e] - lr[e] / 10 > 1e-8 else lr[e]
        assert lr[e + 1] == pytest.approx(lr[e] if improved else smaller)
    best_net = bpcore.load(data / "best.safetensors")
    assert best_net.layers == bpcore.load(data / "last.safetensors").layers


def test_bad_flag_combinations(data):
    _user_error(run(["train", "reg.npz", "--optimizer", "lbfgs", "--lr",
                     "0.1"], data, expect_ok=False), "lbfgs")
    _user_error(run(["train", "reg.npz", "--huber-delta", "-1"], data,
                    expect_ok=False), "huber-delta")
    _user_error(run(["train", "reg.npz", "--plateau", "x"], data,
                    expect_ok=False), "plateau")
