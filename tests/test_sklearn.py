"""bpcore.sklearn: MLPClassifier / MLPRegressor as scikit-learn estimators.

- every check of scikit-learn's ``parametrize_with_checks`` on both;
- update-for-update equality with scikit-learn's own MLP (SGD, alpha,
  momentum, Nesterov, invscaling) from the same starting weights;
- Pipeline + GridSearchCV + cross_val_score on digits, diabetes and breast
  cancer, scoring at least as well as scikit-learn's MLP at the same
  settings;
- partial_fit streaming, sample_weight (zero = dropped), class_weight,
  float32, pickling, cloning, string labels, multilabel, multi-output.

Tests run bpcore single-threaded (fixture below): these problems are tiny,
and results do not depend on the thread count (tested separately).
"""
import copy
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import bpcore  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.datasets import (load_breast_cancer, load_diabetes,  # noqa: E402
                              load_digits, make_classification,
                              make_multilabel_classification,
                              make_regression)
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.metrics import recall_score  # noqa: E402
from sklearn.model_selection import (GridSearchCV, KFold,  # noqa: E402
                                     StratifiedKFold, cross_val_score,
                                     train_test_split)
from sklearn.neural_network import MLPClassifier as SkMLPClassifier  # noqa
from sklearn.neural_network import MLPRegressor as SkMLPRegressor  # noqa
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa
from sklearn.utils._param_validation import InvalidParameterError  # noqa

from bpcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _one_thread(restore_threads):
    """One thread (conftest's restore_threads puts the count back)."""
    bpcore.set_num_threads(1)


def _expected_failed_checks(estimator):
    # Every check passes; a check that truly cannot apply would be listed
    # here (check name -> reason).
    return {}


# -- scikit-learn's estimator checks --------------------------------------

@parametrize_with_checks([MLPClassifier(), MLPRegressor()],
                         expected_failed_checks=_expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_import_error_without_sklearn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n"
            "    import bpcore.sklearn\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120).stdout
    assert "pip install bpcore[sklearn]" in out
    # bpcore itself does not need scikit-learn
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import bpcore; print(bpcore.Network([2, 1]).n_params)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120).stdout
    assert out.strip() == "3"


# -- same updates as scikit-learn's MLP ----------------------------------

def _from_same_start(ours_cls, sk_cls, X, y, **params):
    """One epoch each, then copy scikit-learn's weights into ours and
    continue both (warm_start) for 20 epochs."""
    p = dict(hidden_layer_sizes=(7, 4), activation="tanh", solver="sgd",
             learning_rate_init=0.05, alpha=0.01, batch_size=len(X),
             shuffle=False, max_iter=1, random_state=0, warm_start=True,
             tol=0.0, n_iter_no_change=1000)
    p.update(params)
    sk = sk_cls(**p).fit(X, y)
    ours = ours_cls(dtype="float64", **p).fit(X, y)
    for k in range(len(sk.coefs_)):
        ours.coefs_[k][...] = sk.coefs_[k]
        ours.intercepts_[k][...] = sk.intercepts_[k]
    sk.set_params(max_iter=20).fit(X, y)
    ours.set_params(max_iter=20).fit(X, y)
    return sk, ours


_SGD_VARIANTS = [
    dict(momentum=0.0),
    dict(momentum=0.9, nesterovs_momentum=True),
    dict(momentum=0.5, nesterovs_momentum=False),
    dict(momentum=0.0, learning_rate="invscaling", power_t=0.3),
    dict(momentum=0.9, batch_size=20),   # three batches per epoch
]


@pytest.mark.parametrize("variant", _SGD_VARIANTS)
@pytest.mark.parametrize("task", ["multiclass", "binary", "regression2"])
def test_sgd_matches_sklearn_update_for_update(task, variant):
    if task == "regression2":
        X, y = make_regression(60, 5, n_targets=2, random_state=0)
        y = y / 100
        classes = (MLPRegressor, SkMLPRegressor)
    else:
        X, y = make_classification(60, 5, n_informative=3, n_classes=3,
                                   random_state=0)
        if task == "binary":
            y = y % 2
        classes = (MLPClassifier, SkMLPClassifier)
    sk, ours = _from_same_start(*classes, X, y, **variant)
    for a, b in zip(sk.coefs_ + sk.intercepts_,
                    ours.coefs_ + ours.intercepts_):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert ours.t_ == sk.t_ and ours.n_iter_ == sk.n_iter_ == 20
    if variant.get("batch_size") is None:
        # one batch per epoch: the loss (with the L2 term) is the same too
        np.testing.assert_allclose(ours.loss_curve_[1:], sk.loss_curve_[1:],
                                   rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X) if task != "regression2"
                               else ours.predict(X),
                               sk.predict_proba(X) if task != "regression2"
                               else sk.predict(X), rtol=1e-8, atol=1e-10)


def test_adam_close_to_sklearn():
    # PyTorch's Adam puts epsilon after the bias correction, scikit-learn
    # before it: the same up to O(epsilon).
    X, y = make_classification(60, 5, n_informative=3, n_classes=3,
                               random_state=0)
    sk, ours = _from_same_start(MLPClassifier, SkMLPClassifier, X, y,
                                solver="adam", learning_rate_init=0.01,
                                activation="relu", hidden_layer_sizes=(7,))
    for a, b in zip(sk.coefs_ + sk.intercepts_,
                    ours.coefs_ + ours.intercepts_):
        np.testing.assert_allclose(b, a, atol=1e-5)
    np.testing.assert_allclose(ours.loss_curve_[1:], sk.loss_curve_[1:],
                               rtol=1e-4)


# -- pipelines, grid search, cross-validation on bundled data sets -------

_MARGIN = 0.02


def test_digits_pipeline_cross_val_score_vs_sklearn():
    X, y = load_digits(return_X_y=True)
    settings = dict(hidden_layer_sizes=(32,), max_iter=50, random_state=0)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    ours = cross_val_score(make_pipeline(StandardScaler(),
                                         MLPClassifier(**settings)), X, y,
                           cv=cv)
    theirs = cross_val_score(make_pipeline(StandardScaler(),
                                           SkMLPClassifier(**settings)),
                             X, y, cv=cv)
    assert ours.mean() >= theirs.mean() - _MARGIN, (ours, theirs)
    assert ours.mean() > 0.93


def test_breast_cancer_grid_search_vs_sklearn():
    X, y = load_breast_cancer(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3,
                                          random_state=0, stratify=y)
    grid = {"mlp__alpha": [1e-4, 1.0], "mlp__hidden_layer_sizes": [(8,),
                                                                    (16,)]}
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    results = {}
    for name, cls in [("ours", MLPClassifier), ("sklearn", SkMLPClassifier)]:
        from sklearn.pipeline import Pipeline
        pipe = Pipeline([("scale", StandardScaler()),
                         ("mlp", cls(max_iter=30, learning_rate_init=0.01,
                                     random_state=0))])
        search = GridSearchCV(pipe, grid, cv=cv).fit(Xtr, ytr)
        results[name] = (search.best_score_, search.score(Xte, yte))
    ours, theirs = results["ours"], results["sklearn"]
    assert ours[0] >= theirs[0] - _MARGIN, results
    assert ours[1] >= theirs[1] - _MARGIN, results
    assert ours[1] > 0.93


def test_diabetes_pipeline_cross_val_score_vs_sklearn():
    X, y = load_diabetes(return_X_y=True)
    settings = dict(hidden_layer_sizes=(16,), max_iter=60,
                    learning_rate_init=0.01, random_state=0)
    cv = KFold(3, shuffle=True, random_state=0)
    scores = {}
    for name, cls in [("ours", MLPRegressor), ("sklearn", SkMLPRegressor)]:
        model = TransformedTargetRegressor(
            make_pipeline(StandardScaler(), cls(**settings)),
            transformer=StandardScaler())
        scores[name] = cross_val_score(model, X, y, cv=cv, scoring="r2")
    assert scores["ours"].mean() >= scores["sklearn"].mean() - _MARGIN, scores
    assert scores["ours"].mean() > 0.35


# -- partial_fit ---------------------------------------------------------

def test_partial_fit_streaming_classifier():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25,
                                          random_state=0, stratify=y)
    clf = MLPClassifier((32,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(Xtr[:50], ytr[:50])
    classes = np.unique(y)
    seen, first = 0, None
    for epoch in range(4):
        for start in range(0, len(Xtr), 100):
            xb, yb = Xtr[start:start + 100], ytr[start:start + 100]
            clf.partial_fit(xb, yb, classes=classes if seen == 0 else None)
            seen += len(xb)
            assert clf.t_ == seen and clf.n_iter_ == 1
        if first is None:
            first = clf.score(Xte, yte)
    assert len(clf.loss_curve_) == 4 * -(-len(Xtr) // 100)
    assert clf.score(Xte, yte) > 0.9
    assert clf.score(Xte, yte) >= first
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(Xtr[:5], np.array([10] * 5))   # unknown class
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(Xtr[:5, :10], ytr[:5])


def test_partial_fit_is_one_epoch_of_fit():
    X, y = make_classification(80, 6, n_classes=3, n_informative=4,
                               random_state=1)
    for est in (MLPClassifier((5,), random_state=3),
                MLPRegressor((5,), random_state=3)):
        target = y if isinstance(est, MLPClassifier) else X[:, 0] + y
        a = clone(est).set_params(max_iter=1).fit(X, target)
        b = clone(est)
        if isinstance(est, MLPClassifier):
            b.partial_fit(X, target, classes=np.unique(y))
        else:
            b.partial_fit(X, target)
        np.testing.assert_array_equal(a.network_.params, b.network_.params)
        assert a.loss_ == b.loss_
        # a second call continues (the optimizer state is kept)
        b.partial_fit(X, target)
        assert not np.array_equal(a.network_.params, b.network_.params)
        assert len(b.loss_curve_) == 2


def test_partial_fit_regressor_stream_and_early_stopping_refused():
    X, y = make_regression(400, 5, noise=1.0, random_state=0)
    y = y / y.std()
    reg = MLPRegressor((16,), learning_rate_init=0.01, random_state=0)
    for _ in range(10):
        for start in range(0, 400, 50):
            reg.partial_fit(X[start:start + 50], y[start:start + 50])
    assert reg.score(X, y) > 0.9
    with pytest.raises(ValueError, match="early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, y)


# -- sample_weight and class_weight ----------------------------------------

@pytest.mark.filterwarnings("ignore:Got `batch_size`")   # full batches
@pytest.mark.parametrize("solver", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_zero_sample_weight_equals_dropping_rows(kind, solver):
    X, y = make_classification(90, 5, n_classes=3, n_informative=3,
                               random_state=0)
    est = (MLPClassifier if kind == "classifier" else MLPRegressor)(
        (6,), solver=solver, alpha=0.05, batch_size=500, max_iter=30,
        random_state=0, dtype="float64")
    if kind == "regressor":
        y = X[:, 0] - 2 * X[:, 1] + y
    sw = np.ones(len(X))
    sw[::3] = 0.0
    keep = sw > 0
    a = clone(est).fit(X, y, sample_weight=sw)
    b = clone(est).fit(X[keep], y[keep])
    np.testing.assert_allclose(a.network_.params, b.network_.params,
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-9)
    # integer weights = repeated rows
    sw2 = np.where(keep, 2.0, 0.0)
    c = clone(est).fit(X, y, sample_weight=sw2)
    d = clone(est).fit(np.repeat(X[keep], 2, axis=0),
                       np.repeat(y[keep], 2, axis=0))
    np.testing.assert_allclose(c.network_.params, d.network_.params,
                               rtol=1e-9, atol=1e-12)


def test_class_weight_on_imbalanced_data():
    X, y = make_classification(600, 6, n_informative=3, weights=[0.92],
                               flip_y=0.02, class_sep=0.6, random_state=0)
    labels = np.array(["common", "rare"])[y]
    Xtr, Xte, ytr, yte = train_test_split(X, labels, test_size=0.5,
                                          stratify=labels, random_state=0)
    base = MLPClassifier((8,), max_iter=60, learning_rate_init=0.01,
                         random_state=0)
    plain = clone(base).fit(Xtr, ytr)
    balanced = clone(base).set_params(class_weight="balanced").fit(Xtr, ytr)
    r_plain = recall_score(yte, plain.predict(Xte), pos_label="rare")
    r_bal = recall_score(yte, balanced.predict(Xte), pos_label="rare")
    assert r_bal > r_plain + 0.1, (r_plain, r_bal)
    assert (balanced.predict_proba(Xte)[:, 1].mean()
            > plain.predict_proba(Xte)[:, 1].mean())
    # a dict is the same as multiplying sample_weight by the class weights
    w = {"rare": 5.0}
    a = clone(base).set_params(class_weight=w, max_iter=5).fit(Xtr, ytr)
    b = clone(base).set_params(max_iter=5).fit(
        Xtr, ytr, sample_weight=np.where(ytr == "rare", 5.0, 1.0))
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    with pytest.raises(ValueError, match="not among the classes"):
        clone(base).set_params(class_weight={"nope": 2.0}).fit(Xtr, ytr)
    with pytest.raises(ValueError, match="partial_fit"):
        clone(base).set_params(class_weight="balanced").partial_fit(
            Xtr, ytr, classes=["common", "rare"])
    # partial_fit takes a dict
    clone(base).set_params(class_weight=w).partial_fit(
        Xtr, ytr, classes=["common", "rare"])


# -- targets, dtypes, attributes -----------------------------------------

def test_binary_multiclass_multilabel_and_string_labels():
    X, y = make_classification(120, 5, n_classes=3, n_informative=3,
                               random_state=0)
    names = np.array(["cat", "dog", "eel"])
    clf = MLPClassifier((10,), max_iter=50, random_state=0).fit(X, names[y])
    assert list(clf.classes_) == ["cat", "dog", "eel"]
    assert clf.out_activation_ == "softmax" and clf.n_outputs_ == 3
    assert clf.network_.loss == "cross_entropy"
    assert set(clf.predict(X)) <= set(names)
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X),
                                  clf.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))

    yb = np.where(y == 0, "no", "yes")
    clf = MLPClassifier((10,), max_iter=50, random_state=0).fit(X, yb)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert clf.network_.loss == "binary_cross_entropy"
    proba = clf.predict_proba(X)
    assert proba.shape == (120, 2)
    np.testing.assert_array_equal(clf.predict(X),
                                  clf.classes_[proba.argmax(axis=1)])

    Xm, Ym = make_multilabel_classification(120, 6, n_classes=4,
                                            random_state=0)
    Xm = StandardScaler().fit_transform(Xm)
    settings = dict(hidden_layer_sizes=(16,), max_iter=200,
                    learning_rate_init=0.01, random_state=0)
    clf = MLPClassifier(**settings).fit(Xm, Ym)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 4
    assert clf.network_.loss == "binary_cross_entropy"
    assert clf.predict(Xm).shape == (120, 4)
    assert clf.predict_proba(Xm).shape == (120, 4)
    sk = SkMLPClassifier(**settings).fit(Xm, Ym)
    assert clf.score(Xm, Ym) >= sk.score(Xm, Ym) - _MARGIN   # subset acc.
    assert (clf.predict(Xm) == Ym).mean() > 0.8


def test_regressor_single_and_multi_output():
    X, Y = make_regression(150, 4, n_targets=3, noise=0.1, random_state=0)
    Y = Y / Y.std(axis=0)
    reg = MLPRegressor((16,), max_iter=200, learning_rate_init=0.01,
                       random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (150, 3) and reg.n_outputs_ == 3
    assert reg.out_activation_ == "identity" and reg.score(X, Y) > 0.9
    reg = MLPRegressor((16,), max_iter=20, random_state=0).fit(X, Y[:, 0])
    assert reg.predict(X).shape == (150,)


def test_loss_matches_sklearn_definition():
    # With a negligible learning rate and one batch the epoch's loss is the
    # loss at the starting weights: half MSE per output (regression) or log
    # loss (classification), plus alpha/2 ||W||^2 / n.
    from sklearn.metrics import log_loss
    X, Y = make_regression(50, 4, n_targets=2, random_state=0)
    Y = Y / 100
    reg = MLPRegressor((5,), learning_rate_init=1e-12, alpha=0.3,
                       max_iter=1, random_state=0).fit(X, Y)
    sq = sum((w ** 2).sum() for w in reg.coefs_)
    expected = 0.5 * np.mean((Y - reg.predict(X)) ** 2) + 0.15 * sq / 50
    assert reg.loss_ == pytest.approx(expected, rel=1e-8)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    clf = MLPClassifier((5,), learning_rate_init=1e-12, alpha=0.3,
                        max_iter=1, random_state=0).fit(X, y)
    sq = sum((w ** 2).sum() for w in clf.coefs_)
    expected = log_loss(y, clf.predict_proba(X)) + 0.15 * sq / 50
    assert clf.loss_ == pytest.approx(expected, rel=1e-8)


def test_fitted_attributes():
    X, y = make_classification(100, 7, n_classes=3, n_informative=4,
                               random_state=0)
    clf = MLPClassifier((9, 5), max_iter=15, random_state=0).fit(X, y)
    sk = SkMLPClassifier((9, 5), max_iter=15, random_state=0).fit(X, y)
    assert [c.shape for c in clf.coefs_] == [c.shape for c in sk.coefs_]
    assert [b.shape for b in clf.intercepts_] == [b.shape for b in
                                                   sk.intercepts_]
    assert clf.n_layers_ == sk.n_layers_ == 4
    assert clf.n_features_in_ == 7 and isinstance(clf.network_,
                                                  bpcore.Network)
    assert clf.n_iter_ == 15 and len(clf.loss_curve_) == 15
    assert clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.t_ == 15 * 100
    assert clf.validation_scores_ is None
    assert clf.best_validation_score_ is None
    # coefs_ and intercepts_ are views into the network
    clf.coefs_[0][0, 0] = 123.0
    assert clf.network_.weights[0][0, 0] == 123.0
    clf.intercepts_[1][...] = 0.5
    assert np.all(clf.network_.biases[1] == 0.5)

    es = MLPClassifier((9,), max_iter=200, early_stopping=True,
                       n_iter_no_change=3, random_state=0).fit(X, y)
    assert es.best_loss_ is None
    assert len(es.validation_scores_) == es.n_iter_ < 200
    assert es.best_validation_score_ == max(es.validation_scores_)
    assert es.t_ == es.n_iter_ * 90    # 10% held out


def test_stopping_and_learning_rate_schedules_as_sklearn():
    X, y = make_classification(100, 5, random_state=0)
    cases = [
        # tol-based stopping on the training loss
        dict(tol=1e3, n_iter_no_change=2),
        dict(tol=1e-2, n_iter_no_change=3, max_iter=300),
        # adaptive: the rate is divided by 5 instead of stopping
        dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.1,
             tol=1e3, n_iter_no_change=1, max_iter=6),
        dict(solver="sgd", learning_rate="adaptive", learning_rate_init=1e-5,
             tol=1e3, n_iter_no_change=1, max_iter=50),
        # never stops early
        dict(tol=1e3, n_iter_no_change=np.inf, max_iter=7),
    ]
    for params in cases:
        ours = MLPClassifier((5,), random_state=0, **params).fit(X, y)
        sk = SkMLPClassifier((5,), random_state=0, **params).fit(X, y)
        assert ours.n_iter_ == sk.n_iter_, params
        if params.get("learning_rate") == "adaptive":
            assert ours._optimizer.lr_at() == pytest.approx(
                sk._optimizer.learning_rate)
    with pytest.warns(ConvergenceWarning):
        MLPClassifier((5,), max_iter=3).fit(X, y)


def test_float32_trains_in_float32_and_dtype_parameter():
    X, y = make_classification(80, 5, random_state=0)
    X32 = X.astype(np.float32)
    clf = MLPClassifier((6,), max_iter=10, random_state=0).fit(X32, y)
    assert clf.network_.dtype == np.float32
    assert clf.coefs_[0].dtype == np.float32
    assert clf.predict_proba(X32).dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float32
    clf = MLPClassifier((6,), max_iter=10, random_state=0).fit(X, y)
    assert clf.network_.dtype == np.float64
    clf = MLPClassifier((6,), max_iter=10, dtype="float32",
                        random_state=0).fit(X, y)
    assert clf.network_.dtype == np.float32
    reg = MLPRegressor((6,), max_iter=10, dtype=np.float64,
                       random_state=0).fit(X32, X[:, 0])
    assert reg.network_.dtype == np.float64
    assert reg.predict(X32).dtype == np.float64
    with pytest.raises(ValueError, match="dtype"):
        MLPRegressor(dtype="int8").fit(X, X[:, 0])


def test_results_do_not_depend_on_n_threads():
    X, y = make_classification(150, 6, n_classes=3, n_informative=4,
                               random_state=0)
    a = MLPClassifier((12,), max_iter=10, batch_size=32, random_state=0,
                      n_threads=1).fit(X, y)
    b = MLPClassifier((12,), max_iter=10, batch_size=32, random_state=0,
                      n_threads=2).fit(X, y)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))


def test_pickle_clone_deepcopy_and_warm_start():
    X, y = make_classification(80, 5, random_state=0)
    labels = np.array(["neg", "pos"])[y]
    clf = MLPClassifier((6,), max_iter=20, random_state=0).fit(X, labels)
    for other in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        np.testing.assert_array_equal(other.predict_proba(X),
                                      clf.predict_proba(X))
        np.testing.assert_array_equal(other.predict(X), clf.predict(X))
        other.partial_fit(X, labels)          # still trainable
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(clf)).coefs_[0],
                                  clf.coefs_[0])
    c = clone(clf)
    assert c.get_params() == clf.get_params()
    assert not hasattr(c, "network_") and not hasattr(c, "coefs_")
    # warm_start continues from the fitted weights
    clf.set_params(warm_start=True, max_iter=5)
    before = clf.network_.params.copy()
    net = clf.network_
    clf.fit(X, labels)
    assert clf.network_ is net and len(clf.loss_curve_) == 25
    assert not np.array_equal(before, clf.network_.params)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, np.where(y == 0, "neg", "other"))


def test_parameter_errors():
    X, y = make_classification(40, 4, random_state=0)
    for params, match in [(dict(solver="newton"), "solver"),
                          (dict(activation="swish"), "activation"),
                          (dict(hidden_layer_sizes=(4, 0)), "hidden_layer"),
                          (dict(batch_size=0), "batch_size"),
                          (dict(momentum=1.5), "momentum"),
                          (dict(n_threads=0), "n_threads"),
                          (dict(class_weight="often"), "class_weight")]:
        with pytest.raises(ValueError, match=match):
            MLPClassifier(**params).fit(X, y)
    # each is checked by scikit-learn's _parameter_constraints, with its
    # message naming the parameter, the estimator and the value
    for params, name in [(dict(solver="newton"), "solver"),
                         (dict(activation="swish"), "activation"),
                         (dict(batch_size=0), "batch_size"),
                         (dict(momentum=1.5), "momentum"),
                         (dict(n_threads=0), "n_threads"),
                         (dict(class_weight="often"), "class_weight")]:
        with pytest.raises(InvalidParameterError,
                           match=rf"The '{name}' parameter of MLPClassifier "
                                 rf"must be .* Got .* instead"):
            MLPClassifier(**params).fit(X, y)


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_parameter_constraints_pass_sklearns_check(cls):
    """scikit-learn's own check of _parameter_constraints: one entry per
    parameter, and an informative error from fit and partial_fit for a
    value of no valid type and for each out-of-range value it makes up."""
    from sklearn.utils.estimator_checks import check_param_validation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_param_validation(cls.__name__, cls(max_iter=2))


def test_parameter_names_come_from_bpcore_names():
    """Every name bpcore has is accepted, scikit-learn's spellings too,
    and a bool is not a number."""
    from bpcore import _names
    for act in _names.ACTIVATIONS + ("logistic",):
        MLPClassifier(activation=act)._validate_params()
    for init in _names.INITS + ("sklearn",):
        MLPClassifier(init=init)._validate_params()
    for solver in ("sgd", "adam", "lbfgs"):
        MLPRegressor(solver=solver)._validate_params()
    for loss in ("squared_error", "poisson", "absolute_error", "huber"):
        MLPRegressor(loss=loss)._validate_params()
    for bad in [dict(solver="adamw"), dict(activation="softmax"),
                dict(max_iter=True), dict(alpha=np.nan),
                dict(n_threads=bpcore._limits.MAX_THREADS + 1)]:
        with pytest.raises(InvalidParameterError):
            MLPClassifier(**bad)._validate_params()


def test_partial_fit_checks_parameters_set_after_the_first_call():
    """scikit-learn's _fit_context checks the parameters of a first
    partial_fit only; bpcore checks them at every call."""
    X, y = make_classification(40, 4, random_state=0)
    clf = MLPClassifier((3,), solver="sgd").partial_fit(X, y, classes=[0, 1])
    clf.set_params(alpha=-1.0)
    with pytest.raises(InvalidParameterError, match="'alpha' parameter"):
        clf.partial_fit(X, y)
    # scikit-learn's and bpcore's activation names both work
    for act in ("logistic", "sigmoid", "gelu", ["tanh", "elu"]):
        hls = (4, 3) if isinstance(act, list) else (4,)
        clf = MLPClassifier(hls, activation=act, max_iter=2).fit(X, y)
        expect = ["tanh", "elu"] if isinstance(act, list) else [
            "sigmoid" if act == "logistic" else act]
        assert list(clf.network_.activation[:-1]) == expect


def test_verbose_prints_progress(capsys):
    X, y = make_classification(40, 4, random_state=0)
    MLPClassifier((3,), max_iter=2, verbose=True, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Iteration 2, loss = " in out


def test_feature_names_in():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(40, 3, n_informative=2, n_redundant=0,
                               random_state=0)
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    clf = MLPClassifier((3,), max_iter=2).fit(df, y)
    assert list(clf.feature_names_in_) == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        clf.predict(df)


def test_sparse_input_works_like_dense():
    # scikit-learn's MLPs take sparse X (a TF-IDF pipeline); so do ours,
    # made dense: the same bits as the dense matrix.
    sparse = pytest.importorskip("scipy.sparse")
    from sklearn.feature_extraction.text import TfidfVectorizer
    docs = ["red apple pie", "green apple", "blue sky", "grey sky rain",
            "apple tart", "rain and sky", "sweet apple jam", "stormy sky"]
    y = [0, 0, 1, 1, 0, 1, 0, 1]
    pipe = make_pipeline(TfidfVectorizer(), MLPClassifier(
        hidden_layer_sizes=(8,), max_iter=200, random_state=0))
    pipe.fit(docs, y)
    assert pipe.score(docs, y) == 1.0
    rng = np.random.default_rng(0)
    X = sparse.random(40, 12, density=0.3, format="csr", random_state=0)
    yr = rng.normal(size=40)
    for fmt in ("csr", "csc", "coo"):
        Xs = X.asformat(fmt)
        a = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5,
                         random_state=0).fit(Xs, yr)
        b = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5,
                         random_state=0).fit(X.toarray(), yr)
        assert np.array_equal(a.network_.params, b.network_.params)
        assert np.array_equal(a.predict(Xs), b.predict(X.toarray()))


# -- parity with scikit-learn's own MLP tests (issue 21) -------------------

def test_divergence_error_is_a_value_error_with_sklearn_message():
    """Non-finite weights: scikit-learn raises ValueError with this
    message; bpcore's DivergenceError is that and a FloatingPointError."""
    assert issubclass(bpcore.DivergenceError, ValueError)
    assert issubclass(bpcore.DivergenceError, FloatingPointError)
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    msg = ("Solver produced non-finite parameter weights. The input data may "
           "contain large values and need to be preprocessed.")
    for est in (MLPRegressor(), MLPRegressor(solver="sgd")):
        with warnings.catch_warnings():
            warnings.simplefilter("error")   # and no numpy warning
            with pytest.raises(ValueError, match=msg) as info:
                est.fit(X, y)
        assert isinstance(info.value, bpcore.DivergenceError)
        assert "epoch 1" in str(info.value)
        assert np.isfinite(est.network_.params).all()
    with pytest.raises(ValueError, match=msg):
        MLPRegressor().partial_fit(X, y)


def test_divergence_with_early_stopping_follows_sklearn():
    """scikit-learn's run: fit returns, the validation score of the
    diverged epochs is NaN, training goes on to max_iter, the best weights
    come back; no RuntimeWarning from bpcore's code on the way."""
    from sklearn.datasets import load_iris
    X, y = load_iris(return_X_y=True)
    params = dict(hidden_layer_sizes=100, activation="identity",
                  solver="sgd", learning_rate_init=1, max_iter=20,
                  early_stopping=True, n_iter_no_change=10, random_state=0)
    sk = SkMLPRegressor(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
    ours = MLPRegressor(**params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours.fit(X, y)
    kinds = {type(w.message) for w in caught}
    assert kinds == {ConvergenceWarning}, [str(w.message) for w in caught]
    for est in (sk, ours):
        assert est.n_iter_ == 20 == len(est.validation_scores_)
        assert len(est.loss_curve_) == 20
        last = est.validation_scores_[-1]
        assert isinstance(last, float) and np.isnan(last)
        finite = [v for v in est.validation_scores_ if np.isfinite(v)]
        assert est.best_validation_score_ == max(finite)
    assert np.isfinite(ours.network_.params).all()
    # the restored weights are those of the best epoch: an epoch of the
    # same run stopped there ends with the same weights
    best_epoch = int(np.nanargmax(ours.validation_scores_)) + 1
    again = MLPRegressor(**dict(params, max_iter=best_epoch)).fit(X, y)
    np.testing.assert_array_equal(again.network_.params,
                                  ours.network_.params)
    # diverged from the first epoch on: no weights to fall back on
    rng = np.random.RandomState(0)
    X_huge = np.finfo(np.float64).max * rng.uniform(size=(20, 2))
    with pytest.raises(ValueError, match="non-finite parameter weights"):
        MLPRegressor(**params).fit(X_huge, rng.normal(size=20))


def test_network_divergence_message_counts_epochs():
    """The 6th epoch is epoch 6, not epoch 0 (nor 5)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    Y = 10 * rng.normal(size=(64, 2))
    net = bpcore.Network([3, 16, 2], activation="relu", output="identity",
                         dtype="float32", seed=0)
    done = []
    # a sane rate for 5 epochs, then one that blows up in the 6th
    opt = bpcore.SGD(lr=lambda e: 0.01 if e < 5 else 1e30)
    with pytest.raises(bpcore.DivergenceError) as info:
        net.fit(X, Y, epochs=100, batch_size=8, optimizer=opt,
                callbacks=[lambda e, logs: done.append(e)])
    assert done == [0, 1, 2, 3, 4]
    assert "in epoch 6 of 100 (batch " in str(info.value)
    assert "of 8)" in str(info.value)    # the batch, of 64 / 8


def _hand_mlp_step(W, b, X, y, lr):
    """One full-batch SGD step of a logistic-hidden, identity-output
    regressor with scikit-learn's loss 1/(2m) sum (y - out)^2 (numpy)."""
    h = 1 / (1 + np.exp(-(X @ W[0] + b[0])))
    out = h @ W[1] + b[1]
    d2 = (out - y[:, None]) / len(X)
    d1 = (d2 @ W[1].T) * h * (1 - h)
    grads = [X.T @ d1, h.T @ d2], [d1.sum(0), d2.sum(0)]
    return ([w - lr * g for w, g in zip(W, grads[0])],
            [c - lr * g for c, g in zip(b, grads[1])])


def test_coefs_and_intercepts_are_assignable():
    X, y = make_regression(30, 3, random_state=0)
    reg = MLPRegressor((4,), activation="logistic", solver="sgd",
                       max_iter=2, random_state=0).fit(X, y)
    rng = np.random.default_rng(1)
    W = [rng.normal(size=(3, 4)), rng.normal(size=(4, 1))]
    b = [rng.normal(size=4), rng.normal(size=1)]
    reg.coefs_ = W
    reg.intercepts_ = b
    h = 1 / (1 + np.exp(-(X @ W[0] + b[0])))
    np.testing.assert_allclose(reg.predict(X), (h @ W[1] + b[1]).ravel(),
                               rtol=1e-12)
    W[0][0, 0] = 99.0                      # copied, not kept by reference
    assert reg.coefs_[0][0, 0] != 99.0
    before = reg.network_.params.copy()
    for value, err, match in [
            (W[:1], ValueError, r"coefs_ must hold 2 arrays"),
            ([W[0], W[1].T], ValueError, r"coefs_\[1\] must have shape "
                                         r"\(4, 1\), got \(1, 4\)"),
            ([W[0], np.full((4, 1), np.nan)], ValueError, r"coefs_\[1\]"),
            (np.zeros((3, 4)), TypeError, "list of 2 arrays"),
            ([W[0], "abc"], TypeError, r"coefs_\[1\]")]:
        with pytest.raises(err, match=match):
            reg.coefs_ = value
    with pytest.raises(ValueError, match=r"intercepts_\[0\] must have shape"):
        reg.intercepts_ = [np.zeros(3), np.zeros(1)]
    np.testing.assert_array_equal(reg.network_.params, before)


def test_coefs_assigned_before_partial_fit_are_its_start():
    """As in scikit-learn: weights set on an unfitted estimator (even a
    list filled in afterwards) are where partial_fit starts."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    W = [rng.normal(size=(3, 2)), rng.normal(size=(2, 1))]
    b = [rng.normal(size=2), rng.normal(size=1)]
    reg = MLPRegressor(2, activation="logistic", solver="sgd", momentum=0,
                       alpha=0, learning_rate_init=0.1, batch_size=5,
                       shuffle=False)
    reg.coefs_ = [None, None]
    reg.coefs_[0], reg.coefs_[1] = W      # scikit-learn's test does this
    reg.intercepts_ = b
    reg.partial_fit(X, y)
    W1, b1 = _hand_mlp_step(W, b, X, y, 0.1)
    for got, want in zip(reg.coefs_ + reg.intercepts_, W1 + b1):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # a plain fit starts from its own initialisation, as scikit-learn's
    fresh = MLPRegressor(2, random_state=0, max_iter=1)
    fresh.coefs_ = W
    fresh.intercepts_ = b
    fresh.fit(X, y)
    ref = MLPRegressor(2, random_state=0, max_iter=1).fit(X, y)
    np.testing.assert_array_equal(fresh.network_.params, ref.network_.params)
    bad = MLPRegressor(2)
    bad.coefs_ = [np.zeros((4, 2)), np.zeros((2, 1))]
    with pytest.raises(ValueError, match=r"coefs_\[0\] must have shape"):
        bad.partial_fit(X, y)
    assert not hasattr(bad, "network_")


@pytest.mark.parametrize("params", [
    {},
    dict(solver="sgd", learning_rate="adaptive", momentum=0.5,
         nesterovs_momentum=False, early_stopping=True, alpha=1e-3,
         batch_size=16, power_t=0.3, verbose=0, warm_start=True,
         n_iter_no_change=5, max_fun=100, validation_fraction=0.2),
    dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-7,
         learning_rate="invscaling", tol=1e-3, shuffle=False,
         hidden_layer_sizes=(8, 4), activation="tanh", random_state=3),
], ids=["defaults", "sgd", "adam"])
def test_constructs_from_sklearn_get_params(params):
    X, y = make_classification(60, 4, random_state=0)
    for sk_cls, ours_cls, target in [(SkMLPClassifier, MLPClassifier, y),
                                     (SkMLPRegressor, MLPRegressor,
                                      y.astype(float))]:
        sk_params = sk_cls(**params).get_params()
        ours = ours_cls(**sk_params)
        mine = ours.get_params()
        assert {k: mine[k] for k in sk_params} == sk_params
        ours.set_params(max_iter=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.fit(X, target)
        assert ours.n_iter_ <= 3


def test_max_fun_checked_as_sklearn():
    X, y = make_classification(30, 4, random_state=0)
    assert MLPClassifier().max_fun == 15000 == MLPRegressor().max_fun
    for bad in (0, -1, 2.5, "10", True):
        with pytest.raises(ValueError, match="max_fun"):
            MLPClassifier(max_fun=bad, max_iter=1).fit(X, y)
    MLPClassifier(max_fun=1, max_iter=1).fit(X, y)   # not used by sgd/adam


def test_partial_fit_only_for_stochastic_solvers():
    for cls in (MLPClassifier, MLPRegressor):
        assert hasattr(cls(solver="sgd"), "partial_fit")
        assert hasattr(cls(solver="adam"), "partial_fit")
        assert not hasattr(cls(solver="lbfgs"), "partial_fit")
        with pytest.raises(AttributeError, match="partial_fit"):
            cls(solver="lbfgs").partial_fit


def test_invscaling_continues_over_warm_start_as_sklearn():
    """scikit-learn's test_learning_rate_warmstart, reading each
    estimator's own optimizer: after two warm fits of 4 samples the rate
    is learning_rate_init / (8 + 1) ** power_t."""
    X = [[3, 2], [1, 6], [5, 6], [-2, -4]]
    y = [1, 1, 1, 0]
    for cls in (MLPClassifier, SkMLPClassifier):
        clf = cls(solver="sgd", hidden_layer_sizes=4, max_iter=1,
                  learning_rate="invscaling", power_t=0.25, warm_start=True,
                  random_state=0)
        clf.fit(X, y)
        clf.fit(X, y)
        rate = (clf._optimizer.lr_at() if cls is MLPClassifier
                else clf._optimizer.learning_rate)
        assert rate == pytest.approx(0.001 / 9 ** 0.25, rel=1e-12)
