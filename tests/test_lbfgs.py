"""L-BFGS: bpcore.LBFGS in Network.fit against SciPy driving a plain NumPy
objective, and solver="lbfgs" in bpcore.sklearn against scikit-learn's own
lbfgs MLPs from the same initial weights (every loss value SciPy saw,
the parameters, the iteration count and the convergence warning)."""
import sys
import warnings

import numpy as np
import pytest

import bpcore
import reference as R

scipy_optimize = pytest.importorskip("scipy.optimize")


# -- Network.fit(optimizer=LBFGS()) -----------------------------------------

def _problem(rng, m=50):
    X = rng.normal(size=(m, 3))
    Y = np.column_stack([np.sin(X[:, 0]) + 0.5 * X[:, 1], X[:, 2] ** 2])
    return X, Y


def test_fit_equals_scipy_on_the_numpy_reference(rng):
    X, Y = _problem(rng)
    sw = rng.uniform(0.5, 2.0, X.shape[0])
    net = bpcore.Network([3, 6, 2], activation="tanh", output="identity",
                         dtype="float64", seed=4)
    layers = list(net.layers)
    mlp = R.MLP(list(net.weights), list(net.biases), ["tanh", "identity"])
    evals = []

    def fun(p):
        mlp.set_params(p)
        out = mlp.backward(X, Y, sample_weight=sw)
        evals.append(out["loss"])
        return out["loss"], out["params"]

    res = scipy_optimize.minimize(fun, net.params.copy(), method="L-BFGS-B",
                                  jac=True, options=dict(maxiter=40,
                                                         gtol=1e-6))
    opt = bpcore.LBFGS(max_iter=40, tol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpcore.ConvergenceWarning)
        hist = net.fit(X, Y, optimizer=opt, sample_weight=sw)
    assert opt.n_iter == res.nit and opt.n_fun == res.nfev
    assert hist.epochs_run == res.nit == len(hist.loss)
    np.testing.assert_allclose(net.params, res.x, rtol=1e-8, atol=1e-10)
    assert hist.loss[-1] == pytest.approx(res.fun, rel=1e-8)
    assert layers == list(net.layers)


def test_converges_on_a_small_problem_without_warning(rng):
    X = rng.normal(size=(30, 2))
    Y = X @ np.array([[1.5], [-2.0]]) + 0.3
    net = bpcore.Network([2, 1], output="identity", dtype="float64", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = net.fit(X, Y, optimizer=bpcore.LBFGS(tol=1e-10))
    np.testing.assert_allclose(net.weights[0], [[1.5], [-2.0]], atol=1e-6)
    np.testing.assert_allclose(net.biases[0], [0.3], atol=1e-6)
    assert hist.loss[-1] < 1e-10
    assert not hist.stopped_early


def test_iteration_and_evaluation_limits_warn(rng):
    X, Y = _problem(rng)
    net = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                         seed=1)
    with pytest.warns(bpcore.ConvergenceWarning, match="max_iter=3"):
        hist = net.fit(X, Y, optimizer=bpcore.LBFGS(max_iter=3))
    assert hist.epochs_run == 3
    opt = bpcore.LBFGS(max_fun=4)
    with pytest.warns(bpcore.ConvergenceWarning, match="EVALUATIONS"):
        net.fit(X, Y, optimizer=opt)
    assert opt.n_fun <= 5  # SciPy may finish the evaluation it started


def test_float32_network_and_name(rng):
    X, Y = _problem(rng)
    net = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                         seed=1)
    before = net.evaluate(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpcore.ConvergenceWarning)
        hist = net.fit(X, Y, optimizer="lbfgs")
    assert net.params.dtype == np.float32
    assert net.evaluate(X, Y) < before / 5
    assert hist.loss[-1] == pytest.approx(net.evaluate(X, Y), rel=1e-5)


def test_classification_with_labels_and_validation(rng):
    X = rng.normal(size=(60, 2))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    net = bpcore.Network([2, 6, 3], activation="tanh", output="softmax",
                         loss="cross_entropy", dtype="float64", seed=2)
    logs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpcore.ConvergenceWarning)
        hist = net.fit(X, y, optimizer=bpcore.LBFGS(max_iter=15),
                       validation_data=(X[:20], y[:20]),
                       callbacks=[lambda e, lg: logs.append((e, lg))])
    assert [e for e, _ in logs] == list(range(15))
    assert all(lg["lr"] is None for _, lg in logs)
    assert hist.val_loss == [lg["val_loss"] for _, lg in logs]
    assert hist.val_loss[-1] == pytest.approx(net.evaluate(X[:20], y[:20]))


def test_callback_and_early_stopping_stop_it(rng):
    X, Y = _problem(rng)
    net = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                         dtype="float64", seed=1)
    seen = []

    def cb(e, logs):
        seen.append(net.params.copy())
        return e < 4

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning when stopped
        hist = net.fit(X, Y, optimizer=bpcore.LBFGS(), callbacks=[cb])
    assert hist.epochs_run == 5 and hist.stopped_early
    np.testing.assert_array_equal(net.params, seen[-1])
    # early stopping on a validation set that does not improve
    net2 = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                          dtype="float64", seed=1)
    es = bpcore.EarlyStopping(patience=2, min_delta=1e9)
    hist = net2.fit(X, Y, optimizer=bpcore.LBFGS(), early_stopping=es,
                    validation_data=(X, Y))
    assert hist.epochs_run == 3 and hist.best_epoch == 0


def test_bad_use(rng):
    X, Y = _problem(rng)
    net = bpcore.Network([3, 2], output="identity")
    with pytest.raises(TypeError, match="full-batch"):
        net.step(X, Y, bpcore.LBFGS())
    for kw, exc in [(dict(max_iter=0), ValueError), (dict(tol=-1), ValueError),
                    (dict(max_fun=0), ValueError), (dict(history=0), ValueError),
                    (dict(max_iter=2.5), TypeError),
                    (dict(tol=float("nan")), ValueError)]:
        with pytest.raises(exc):
            bpcore.LBFGS(**kw)
    before = net.params.copy()
    with pytest.raises(ValueError):
        net.fit(X[:, :2], Y, optimizer=bpcore.LBFGS())
    np.testing.assert_array_equal(net.params, before)


def test_missing_scipy_is_a_clear_import_error(rng, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    monkeypatch.setitem(sys.modules, "scipy", None)
    net = bpcore.Network([3, 2], output="identity")
    X, Y = _problem(rng)
    before = net.params.copy()
    with pytest.raises(ImportError, match="pip install scipy"):
        net.fit(X, Y, optimizer=bpcore.LBFGS())
    np.testing.assert_array_equal(net.params, before)


# -- bpcore.sklearn against scikit-learn --------------------------------------

sk_nn = pytest.importorskip("sklearn.neural_network")
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning  # noqa: E402

import bpcore.sklearn as bps  # noqa: E402


class _Recorder:
    """Wraps scipy.optimize.minimize (which scikit-learn and bpcore both
    call through the module attribute) to record every loss value."""

    def __init__(self, monkeypatch):
        self.runs = []
        orig = scipy_optimize.minimize

        def minimize(fun, x0, *args, **kwargs):
            values = []

            def f(x, *a):
                v, g = fun(x, *a)
                values.append(float(v))
                return v, g

            res = orig(f, x0, *args, **kwargs)
            self.runs.append((values, res, dict(kwargs.get("options", {}))))
            return res

        monkeypatch.setattr(scipy_optimize, "minimize", minimize)


def _same_start(est, X, y, sw, seed):
    """Build the estimator's network with a 1-iteration fit, then put the
    same initial weights in (warm_start continues from them: this is how
    both libraries start from identical parameters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkConvergenceWarning)
        est.set_params(max_iter=1, warm_start=True).fit(X, y,
                                                        sample_weight=sw)
    rng = np.random.default_rng(seed)
    coefs = [rng.uniform(-0.5, 0.5, c.shape) for c in est.coefs_]
    ints = [rng.uniform(-0.5, 0.5, c.shape) for c in est.intercepts_]
    if isinstance(est, bps._BaseMLP):
        for k in range(len(coefs)):
            est.network_.weights[k] = coefs[k]
            est.network_.biases[k] = ints[k]
    else:
        est.coefs_, est.intercepts_ = coefs, ints


def _run(est, X, y, sw, max_iter, monkeypatch):
    rec = _Recorder(monkeypatch)
    _same_start(est, X, y, sw, seed=7)
    rec.runs.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.set_params(max_iter=max_iter).fit(X, y, sample_weight=sw)
    monkeypatch.undo()
    (values, res, options), = rec.runs
    params = np.concatenate([c.ravel() for c in est.coefs_]
                            + [b.ravel() for b in est.intercepts_])
    warned = [str(w.message) for w in caught
              if issubclass(w.category, SkConvergenceWarning)]
    return np.array(values), params, est, warned, options


def _data(rng, kind):
    X = rng.normal(size=(40, 3))
    if kind == "regression":
        return X, np.sin(X[:, 0]) + 0.5 * X[:, 1]
    if kind == "multioutput":
        return X, np.column_stack([np.sin(X[:, 0]), np.cos(X[:, 2])])
    if kind == "poisson":
        return X, np.round(np.exp(0.4 * X[:, 0] + 0.2))
    if kind == "binary":
        return X, (X[:, 0] + X[:, 1] > 0).astype(int)
    return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)


CASES = [("regression", {}, False), ("regression", {}, True),
         ("multioutput", {}, False), ("poisson", dict(loss="poisson"), True),
         ("binary", {}, False), ("multiclass", {}, True)]


@pytest.mark.parametrize("kind,extra,weighted", CASES)
@pytest.mark.parametrize("max_iter,max_fun", [(25, 15000), (200, 12)])
def test_matches_scikit_learn(kind, extra, weighted, max_iter, max_fun, rng,
                              monkeypatch):
    X, y = _data(rng, kind)
    sw = rng.uniform(0.5, 2.0, X.shape[0]) if weighted else None
    kw = dict(hidden_layer_sizes=(5,), activation="tanh", solver="lbfgs",
              alpha=1e-3, tol=1e-6, max_fun=max_fun, random_state=0, **extra)
    classifier = kind in ("binary", "multiclass")
    sk = (sk_nn.MLPClassifier if classifier else sk_nn.MLPRegressor)(**kw)
    bp = (bps.MLPClassifier if classifier else bps.MLPRegressor)(
        dtype="float64", **kw)
    v1, p1, e1, w1, o1 = _run(sk, X, y, sw, max_iter, monkeypatch)
    v2, p2, e2, w2, o2 = _run(bp, X, y, sw, max_iter, monkeypatch)
    assert o1 == {k: v for k, v in o2.items() if k != "maxcor"}
    assert len(v1) == len(v2)
    np.testing.assert_allclose(v2, v1, rtol=1e-8)
    np.testing.assert_allclose(p2, p1, rtol=1e-8, atol=1e-9)
    assert e1.n_iter_ == e2.n_iter_
    assert e2.loss_ == pytest.approx(e1.loss_, rel=1e-8)
    assert w1 == w2 and len(w1) == 1  # both hit a limit, the same message
    np.testing.assert_allclose(e2.predict(X), e1.predict(X), rtol=1e-7,
                               atol=1e-9)
    assert len(e2.loss_curve_) == e2.n_iter_


def test_converged_fit_does_not_warn(rng):
    X, y = _data(rng, "regression")
    est = bps.MLPRegressor((4,), solver="lbfgs", tol=1e-2, random_state=0,
                           max_iter=500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, y)
    assert est.n_iter_ < 500
    assert est.score(X, y) > 0.8


def test_partial_fit_is_for_stochastic_solvers_only():
    for cls in (bps.MLPClassifier, bps.MLPRegressor):
        est = cls(solver="lbfgs")
        assert not hasattr(est, "partial_fit")
        with pytest.raises(AttributeError):
            est.partial_fit
        assert hasattr(cls(solver="adam"), "partial_fit")


@pytest.mark.parametrize("bad", [0, -1, 2.5, "many"])
def test_bad_max_fun(bad, rng):
    X, y = _data(rng, "regression")
    est = bps.MLPRegressor((3,), solver="lbfgs", max_fun=bad)
    with pytest.raises(ValueError, match="max_fun"):
        est.fit(X, y)
    assert not hasattr(est, "network_")
