"""Thread settings, and training results that are the same bits for any
number of threads (the shuffled order, batch splits and gradient sums do
not depend on it)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import bpcore

CASES = {
    "full-batch": dict(batch_size=None),
    "batch-7": dict(batch_size=7),
    "batch-64": dict(batch_size=64),
    "batch-333": dict(batch_size=333),
    "online": dict(batch_size=1),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adam"])
def test_fit_bits_independent_of_threads(dtype, case, optimizer, rng):
    m = 400 if case == "online" else 1000
    X = rng.normal(size=(m, 50))
    y = rng.integers(0, 3, size=m)
    sw = rng.uniform(0.1, 1.0, size=m)
    results = []
    for nt in (1, 2, 3, 4):
        net = bpcore.Network([50, 128, 64, 3], activation="gelu",
                             output="softmax", loss="cross_entropy",
                             dtype=dtype, seed=11)
        opt = (bpcore.SGD(lr=0.01, momentum=0.9) if optimizer != "adam"
               else bpcore.Adam(lr=1e-3))
        hist = net.fit(X, y, epochs=2, optimizer=opt, sample_weight=sw,
                       n_threads=nt, **CASES[case])
        results.append((net.params.copy(), hist.loss))
    for params, loss in results[1:]:
        assert np.array_equal(params, results[0][0])
        assert loss == results[0][1]


def test_set_and_get_num_threads(restore_threads):
    bpcore.set_num_threads(3)
    assert bpcore.get_num_threads() == 3
    with pytest.raises(ValueError, match="n_threads"):
        bpcore.set_num_threads(0)
    with pytest.raises(TypeError, match="n_threads"):
        bpcore.set_num_threads(1.5)
    bpcore.set_num_threads(None)
    assert bpcore.get_num_threads() >= 1


def test_omp_num_threads_is_the_default():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    r = subprocess.run([sys.executable, "-c",
                        "import bpcore; print(bpcore.get_num_threads())"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip() == "3", r.stderr


def test_threadpoolctl_limits_apply(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bpcore.set_num_threads(None)  # back to OpenMP's default
    if not bpcore.show_config(file=open(os.devnull, "w"))["openmp"]:
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert bpcore.get_num_threads() == 1


def test_show_config_reports_build():
    import io
    buf = io.StringIO()
    info = bpcore.show_config(file=buf)
    assert info["version"] == bpcore.__version__
    assert {"kernel", "openmp", "threads", "compiler"} <= set(info)
    assert "kernel" in buf.getvalue()
