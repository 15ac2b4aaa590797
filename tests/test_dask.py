"""bpcore.sklearn inside Dask: dask-ml wrappers and joblib's dask backend on
a real distributed.LocalCluster with worker processes (2 x 1 thread)."""
import os
import pickle
import warnings

import numpy as np
import pytest

import bpcore
from bpcore.sklearn import MLPClassifier, MLPRegressor

da = pytest.importorskip("dask.array")  # in the test extra: never skips there
distributed = pytest.importorskip("distributed")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")


@pytest.fixture(scope="module")
def client():
    # distributed writes its workers' settings (OMP_NUM_THREADS=1, ...) into
    # this process's environment; later tests' subprocesses must not see it
    saved = dict(os.environ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            dashboard_address=None, worker_dashboard_address=None)
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()
        os.environ.clear()
        os.environ.update(saved)


def regression(m, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, 6))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    return X, y


def test_workers_are_processes(client):
    import os
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2 and os.getpid() not in pids


def test_incremental_streams_blocks_through_partial_fit(client):
    from dask_ml.wrappers import Incremental
    X, y = regression(1200)
    dX, dy = da.from_array(X, chunks=300), da.from_array(y, chunks=300)
    kw = dict(hidden_layer_sizes=(16,), batch_size=50, random_state=0,
              learning_rate_init=0.01)
    inc = Incremental(MLPRegressor(**kw), shuffle_blocks=False).fit(dX, dy)
    # the same blocks, in order, through partial_fit in this process
    ref = MLPRegressor(**kw)
    for k in range(0, 1200, 300):
        ref.partial_fit(X[k:k + 300], y[k:k + 300])
    got = inc.estimator_
    assert np.array_equal(got.network_.params, ref.network_.params)
    assert got.t_ == ref.t_ == 1200
    # predict through the wrapper: a dask array, computed on the workers
    pred = inc.predict(dX)
    assert isinstance(pred, da.Array)
    assert np.array_equal(pred.compute(), ref.predict(X))


def test_incremental_classifier(client):
    from dask_ml.wrappers import Incremental
    X, y = regression(900, seed=1)
    labels = np.array(["low", "mid", "high"])[np.digitize(y, [-0.5, 0.5])]
    dX = da.from_array(X, chunks=300)
    dy = da.from_array(labels, chunks=300)
    kw = dict(hidden_layer_sizes=(12,), random_state=1, batch_size=30)
    inc = Incremental(MLPClassifier(**kw), shuffle_blocks=False).fit(
        dX, dy, classes=["high", "low", "mid"])
    ref = MLPClassifier(**kw)
    for k in range(0, 900, 300):
        ref.partial_fit(X[k:k + 300], labels[k:k + 300],
                        classes=["high", "low", "mid"])
    assert np.array_equal(inc.estimator_.network_.params,
                          ref.network_.params)
    assert list(inc.estimator_.classes_) == ["high", "low", "mid"]


def _parallel_post_fit(client, m, chunks):
    from dask_ml.wrappers import ParallelPostFit
    X, y = regression(2000)
    est = MLPRegressor((32, 16), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    big = da.random.RandomState(7).normal(size=(m, 6), chunks=(chunks, 6))
    ppf = ParallelPostFit(est)
    dpred = ppf.predict(big)
    assert dpred.numblocks[0] == -(-m // chunks)
    got = dpred.compute()
    local = est.predict(big.compute())
    assert got.shape == (m,)
    assert np.array_equal(got, local)  # bitwise


def test_parallel_post_fit_predict_bitwise(client):
    _parallel_post_fit(client, 100_000, 25_000)


@pytest.mark.slow
def test_parallel_post_fit_predict_one_million_rows(client):
    _parallel_post_fit(client, 1_000_000, 125_000)


def test_grid_search_with_joblib_dask_backend(client):
    import joblib
    from sklearn.model_selection import GridSearchCV
    X, y = regression(300)
    grid = {"hidden_layer_sizes": [(8,), (16,)],
            "learning_rate_init": [0.01, 0.001]}
    kw = dict(max_iter=15, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with joblib.parallel_backend("dask"):
            gs = GridSearchCV(MLPRegressor(**kw), grid, cv=3).fit(X, y)
        ref = GridSearchCV(MLPRegressor(**kw), grid, cv=3, n_jobs=1).fit(X, y)
    np.testing.assert_array_equal(gs.cv_results_["mean_test_score"],
                                  ref.cv_results_["mean_test_score"])
    assert gs.best_params_ == ref.best_params_
    assert np.array_equal(gs.best_estimator_.network_.params,
                          ref.best_estimator_.network_.params)


def _threads_in_task(limit):
    import bpcore
    import threadpoolctl
    out = {"default": bpcore.get_num_threads()}
    with threadpoolctl.threadpool_limits(limit):
        out["limited"] = bpcore.get_num_threads()
        X = np.random.default_rng(0).normal(size=(5000, 6))
        net = bpcore.Network([6, 32, 1], seed=0)
        out["pred_ok"] = bool(np.isfinite(net.predict(X)).all())
    return out


def test_worker_thread_budget(client):
    """A worker with one thread runs bpcore on one thread (the nanny sets
    OMP_NUM_THREADS=1 for its worker), and threadpoolctl limits inside a
    task apply to bpcore."""
    res = client.submit(_threads_in_task, 1, pure=False).result()
    assert res["default"] == 1
    assert res["limited"] == 1 and res["pred_ok"]
    nthreads = client.nthreads()
    assert set(nthreads.values()) == {1}


def test_pickles_small_and_fast():
    net = bpcore.Network([784, 256, 128, 10], seed=0)
    net.metadata["note"] = "x"
    b = pickle.dumps(net)
    # the parameters and a header of a few hundred bytes; no workspaces
    assert net.params.nbytes < len(b) < net.params.nbytes + 4096
    back = pickle.loads(b)
    assert np.array_equal(back.params, net.params)
    assert back.metadata == net.metadata and back.layers == net.layers
    X, y = regression(400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPRegressor((64, 32), max_iter=3, solver="sgd",
                           momentum=0.0, random_state=0).fit(X, y)
    pb = est.network_.params.nbytes
    assert len(pickle.dumps(est)) < pb + 16384
    # adam keeps two moment buffers for partial_fit: they travel too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = MLPRegressor((64, 32), max_iter=3, random_state=0).fit(X, y)
    assert len(pickle.dumps(est)) < 3 * pb + 16384
