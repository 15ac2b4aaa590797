"""Data-parallel training over MPI: real mpiexec runs of tests/mpi_worker.py.

mpi4py and mpich come with the test extra; mpiexec is the one the mpich
wheel installs next to the interpreter.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bpcore

HERE = Path(__file__).resolve().parent
WORKER = HERE / "mpi_worker.py"
TIMEOUT = 90


def mpiexec():
    exe = Path(sys.executable).parent / ("mpiexec.exe" if os.name == "nt"
                                         else "mpiexec")
    assert exe.exists(), (
        f"{exe} is missing: install the test extra (pip install '.[test]') "
        f"which brings mpi4py and the mpich wheel")
    return str(exe)


def env():
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e.pop("PYTHONPATH", None)
    return e


def launch(n, scenario, outdir):
    return subprocess.Popen(
        [mpiexec(), "-n", str(n), sys.executable, str(WORKER), scenario,
         str(outdir)], env=env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def collect(proc, n, outdir):
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"mpiexec hung (> {TIMEOUT} s)\n{out}\n{err}")
    assert proc.returncode == 0, f"mpiexec failed\n{out}\n{err}"
    return [json.load(open(Path(outdir) / f"rank{r}.json"))["out"]
            for r in range(n)]


def run(n, scenario, outdir):
    return collect(launch(n, scenario, outdir), n, outdir)


@pytest.fixture(scope="module", params=[1, 2, 3])
def equivalence(request, tmp_path_factory):
    n = request.param
    return n, run(n, "equivalence", tmp_path_factory.mktemp(f"eq{n}"))


@pytest.fixture(scope="module", params=[2, 3])
def faults(request, tmp_path_factory):
    n = request.param
    return n, run(n, "faults", tmp_path_factory.mktemp(f"fa{n}"))


CASES = ["minibatch_adam", "fullbatch_sgd", "noshuffle_momentum", "classes_ce"]


def test_ranks_hold_bitwise_identical_params(equivalence):
    n, ranks = equivalence
    for case in CASES + ["f32"]:
        assert len({r[case]["hash"] for r in ranks}) == 1, case
    # step(comm=): hashed after every update
    assert all(r["step"]["hashes"] == ranks[0]["step"]["hashes"]
               for r in ranks)


def test_equals_single_process_on_the_global_order(equivalence):
    n, ranks = equivalence
    r0 = ranks[0]
    for case in CASES:
        c = r0[case]
        if n == 1:
            assert c["bitwise"], case
            assert c["loss_d"] == c["loss_s"] and c["val_d"] == c["val_s"]
        assert c["rel"] < 1e-12, (case, c["rel"])
        assert c["state_rel"] < 1e-12, (case, c["state_rel"])
        assert c["t"][0] == c["t"][1]
        np.testing.assert_allclose(c["loss_d"], c["loss_s"], rtol=1e-12)
        if c["val_s"]:
            np.testing.assert_allclose(c["val_d"], c["val_s"], rtol=1e-12)
        # callbacks saw the global values, on every rank
        for r in ranks:
            seen = [s[0] for s in r[case]["seen"]]
            np.testing.assert_allclose(seen, c["loss_s"], rtol=1e-12)
            assert r[case]["loss_d"] == c["loss_d"]  # the same History
            assert r[case]["history"] == c["history"]
        np.testing.assert_allclose(c["eval_d"], c["eval_s"], rtol=1e-12)
    st = r0["step"]
    assert st["rel"] < 1e-12
    for d, s in st["losses"]:
        np.testing.assert_allclose(d, s, rtol=1e-12)
    # early stopping is global: every rank stopped at the same epoch
    assert len({json.dumps(r["f32"]["history"]) for r in ranks}) == 1
    assert len({json.dumps(r["f32"]["loss"]) for r in ranks}) == 1


def test_sklearn_estimators_with_comm(equivalence):
    n, ranks = equivalence
    for key in ("reg", "clf"):
        assert len({r["sklearn"][key]["hash"] for r in ranks}) == 1
        c = ranks[0]["sklearn"][key]
        assert c["rel"] < 1e-12, (key, c["rel"])
        np.testing.assert_allclose(c["curve"][0], c["curve"][1], rtol=1e-12)
    assert ranks[0]["sklearn"]["reg"]["t"][0] == ranks[0]["sklearn"]["reg"]["t"][1]
    clf = ranks[0]["sklearn"]["clf"]
    assert clf["classes"][0] == clf["classes"][1] == ["a", "b", "c"]
    if n > 1:
        assert "c" not in clf["local_classes"]  # yet rank 0 knows it


def test_bad_input_on_one_rank_raises_everywhere(faults):
    n, ranks = faults
    for rank, r in enumerate(ranks):
        b = r["bad_input"]
        assert b["unchanged"]
        if rank == 1:
            assert b["raised"] == "ValueError" and "NaN" in b["message"]
        else:
            assert b["raised"] == "DistributedError"
            assert b["remote_rank"] == 1 and "NaN" in b["message"]
        s = r["step_bad"]
        if rank == 0:
            assert s["raised"] == "ValueError"
        else:
            assert s["raised"] == "DistributedError" and s["remote_rank"] == 0
        assert r["mismatch"]["raised"] == "ValueError"
        assert "differs across ranks" in r["mismatch"]["message"]
    assert len({r["step_bad"]["hash"] for r in ranks}) == 1


def test_callback_exception_on_one_rank(faults):
    n, ranks = faults
    for rank, r in enumerate(ranks):
        c = r["callback"]
        assert c["raised"] == ("RuntimeError" if rank == 1
                               else "DistributedError")
        assert "callback failed on purpose" in c["message"]
        assert c["at_last_epoch_end"] and c["epochs_run"] == 2
    assert len({r["callback"]["hash"] for r in ranks}) == 1


def test_divergence_raises_on_every_rank(faults):
    n, ranks = faults
    for r in ranks:
        d = r["divergence"]
        assert d["raised"] == "DivergenceError" and d["restored"]
    assert len({r["divergence"]["hash"] for r in ranks}) == 1


@pytest.mark.parametrize("n", [2, 3])
def test_sigint_on_one_rank_stops_every_rank(n, tmp_path):
    proc = launch(n, "sigint", tmp_path)
    deadline = time.time() + TIMEOUT
    while not all((tmp_path / f"started{r}").exists() for r in range(n)):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("the ranks did not start: "
                        + "\n".join(proc.communicate()))
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(int((tmp_path / "pid1").read_text()), signal.SIGINT)
    ranks = collect(proc, n, tmp_path)
    for rank, r in enumerate(ranks):
        assert r["raised"] == ("KeyboardInterrupt" if rank == 1
                               else "DistributedError"), r
        assert r["seconds"] < TIMEOUT
    assert len({r["hash"] for r in ranks}) == 1
    assert len({r["epochs_run"] for r in ranks}) == 1


def test_comm_self_in_process_equals_plain_fit():
    from mpi4py import MPI
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    a = bpcore.Network([3, 5, 2], output="identity", dtype="float64", seed=0)
    b = bpcore.Network([3, 5, 2], output="identity", dtype="float64", seed=0)
    ha = a.fit(X, Y, epochs=3, batch_size=8, comm=MPI.COMM_SELF)
    hb = b.fit(X, Y, epochs=3, batch_size=8)
    assert np.array_equal(a.params, b.params) and ha.loss == hb.loss
    oa, ob = bpcore.SGD(lr=0.1), bpcore.SGD(lr=0.1)
    assert a.step(X, Y, oa, comm=MPI.COMM_SELF) == b.step(X, Y, ob)
    assert a.evaluate(X, Y, comm=MPI.COMM_SELF) == b.evaluate(X, Y)


def test_comm_must_be_a_communicator():
    net = bpcore.Network([2, 2], seed=0)
    with pytest.raises(TypeError, match="comm"):
        net.fit(np.zeros((3, 2)), np.zeros((3, 2)), comm="world")
    with pytest.raises(TypeError, match="comm"):
        net.evaluate(np.zeros((3, 2)), np.zeros((3, 2)), comm=1)


def test_cli_train_mpi(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3))
    y = np.where(X[:, 0] - X[:, 2] > 0, "up", "down")
    data = tmp_path / "d.csv"
    with open(data, "w") as f:
        f.write("a,b,c,label\n")
        for row, lab in zip(X, y):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{lab}\n")
    cmd = [sys.executable, "-m", "bpcore", "train", str(data), "--epochs",
           "4", "--batch-size", "16", "--layers", "8"]
    one = subprocess.run(cmd + ["--out", str(tmp_path / "one.safetensors")],
                         env=env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([mpiexec(), "-n", "2"] + cmd + [
        "--mpi", "--out", str(tmp_path / "two.safetensors")], env=env(),
        capture_output=True, text=True, timeout=TIMEOUT)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("saved the model") == 1  # rank 0 only
    a = bpcore.load(tmp_path / "one.safetensors")
    b = bpcore.load(tmp_path / "two.safetensors")
    # float32 network: the same batches, sums in another order
    np.testing.assert_allclose(b.params, a.params, rtol=1e-4, atol=1e-5)
    assert a.metadata == b.metadata or set(a.metadata) == set(b.metadata)


def test_readme_example_under_mpiexec(tmp_path):
    script = HERE.parent / "examples" / "mpi_fit.py"
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, str(script)],
                          cwd=tmp_path, env=env(), capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "2 rank(s)" in proc.stdout and "(all equal: True)" in proc.stdout
    assert (tmp_path / "mpi_model.safetensors").exists()
