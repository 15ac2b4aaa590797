"""bpcore.sklearn: solver="lbfgs" and MLPRegressor's losses ("poisson" as
scikit-learn has it; "absolute_error" and "huber" as bpcore extensions)
pass scikit-learn's estimator checks and report scikit-learn's losses."""
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa

import bpcore  # noqa: E402
from bpcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _one_thread(restore_threads):
    """One thread (conftest's restore_threads puts the count back)."""
    bpcore.set_num_threads(1)


def _expected_failed_checks(estimator):
    if isinstance(estimator, MLPClassifier):
        return {"check_classifiers_multilabel_output_format_predict_proba":
                "scikit-learn's own MLPClassifier(solver='lbfgs') fails it "
                "as well: on its 2-feature data the fit saturates sigmoid "
                "outputs to exactly 1.0 in float64 (checked with "
                "scikit-learn 1.9.1)"}
    if estimator.loss == "poisson":
        return {"check_regressor_multioutput":
                "its targets are negative (it ignores the positive_only "
                "tag); poisson rejects them with a ValueError, as it must"}
    return {}


@parametrize_with_checks([MLPClassifier((20,), solver="lbfgs"),
                          MLPRegressor((20,), solver="lbfgs"),
                          MLPRegressor((20,), loss="poisson", solver="lbfgs"),
                          MLPRegressor((20,), loss="huber", solver="lbfgs")],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _l2(est):
    return sum(float((W ** 2).sum()) for W in est.coefs_)


def test_poisson_reports_the_half_deviance_and_predicts_rates(rng):
    X = rng.normal(size=(80, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0] + 0.2)).astype(float)
    sw = rng.uniform(0.5, 2.0, 80)
    est = MLPRegressor((6,), loss="poisson", solver="lbfgs", alpha=1e-2,
                       max_iter=50, random_state=0).fit(X, y, sample_weight=sw)
    assert est.out_activation_ == "exp"
    assert est.network_.loss == "poisson"
    p = est.predict(X)
    np.testing.assert_allclose(p, np.exp(est.network_.predict(X)[:, 0]),
                               rtol=1e-15)
    # scikit-learn's loss: weighted mean of y log(y / p) - y + p, plus the
    # L2 term alpha/2 ||W||^2 / sum(sw)
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0.0)
    want = np.average(ylogy - y + p, weights=sw) + 0.5 * 1e-2 * _l2(
        est) / sw.sum()
    assert est.loss_ == pytest.approx(want, rel=1e-9)
    # the stochastic solvers report the same quantity
    est2 = MLPRegressor((6,), loss="poisson", solver="adam", max_iter=3,
                        batch_size=80, shuffle=False, alpha=0.0,
                        random_state=0)
    est2.fit(X, y)
    before = est2.network_.params.copy()
    est2.partial_fit(X, y)
    after = est2.network_.params.copy()
    est2.network_.params = before
    p = est2.predict(X)
    ylogy = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0.0)
    assert est2.loss_ == pytest.approx(np.mean(ylogy - y + p), rel=1e-6)
    est2.network_.params = after


def test_poisson_rejects_negative_targets_before_fitting(rng):
    X = rng.normal(size=(10, 2))
    y = np.arange(10.0) - 1
    est = MLPRegressor((3,), loss="poisson")
    with pytest.raises(ValueError, match="poisson"):
        est.fit(X, y)
    assert not hasattr(est, "network_")


@pytest.mark.parametrize("loss,net_loss", [("absolute_error", "mae"),
                                           ("huber", "huber")])
def test_extra_losses(loss, net_loss, rng):
    X = rng.normal(size=(60, 3))
    Y = np.column_stack([X[:, 0] - X[:, 1], X[:, 2]])
    Y[:5] += 20  # outliers
    est = MLPRegressor((8,), loss=loss, huber_delta=0.5, solver="lbfgs",
                       alpha=1e-3, max_iter=40, random_state=0).fit(X, Y)
    net = est.network_
    assert net.loss == net_loss
    if loss == "huber":
        assert net.huber_delta == 0.5
    # loss_: the network's loss per output plus the L2 term (as for
    # squared_error)
    want = net.evaluate(X, Y) / 2 + 0.5 * 1e-3 * _l2(est) / 60
    assert est.loss_ == pytest.approx(want, rel=1e-9)
    assert est.out_activation_ == "identity"


def test_warm_start_with_another_loss_is_an_error(rng):
    X = rng.normal(size=(20, 2))
    y = np.abs(X[:, 0])
    est = MLPRegressor((3,), solver="lbfgs", max_iter=5, warm_start=True)
    est.fit(X, y)
    est.set_params(loss="poisson")
    with pytest.raises(ValueError, match="loss"):
        est.fit(X, y)


@pytest.mark.parametrize("kw", [dict(loss="mse"), dict(loss="huber",
                                                       huber_delta=0),
                                dict(loss="huber", huber_delta="a"),
                                dict(solver="newton")])
def test_bad_parameters(kw, rng):
    X = rng.normal(size=(10, 2))
    est = MLPRegressor((3,), **kw)
    with pytest.raises(ValueError):
        est.fit(X, X[:, 0])
    assert not hasattr(est, "network_")


def test_lbfgs_float32_and_classifier_probabilities(rng):
    X = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.array(["a", "b", "c"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
    clf = MLPClassifier((10,), solver="lbfgs", max_iter=100,
                        random_state=0).fit(X, y)
    assert clf.network_.dtype == np.float32
    assert clf.score(X, y) > 0.9
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1,
                               rtol=1e-5)
    assert clf.n_iter_ <= 100 and len(clf.loss_curve_) == clf.n_iter_
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning, match="max_iter=2"):
            MLPClassifier((10,), solver="lbfgs", max_iter=2).fit(X, y)
    assert bpcore  # the package imported
