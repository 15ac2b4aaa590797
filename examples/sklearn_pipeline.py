"""bpcore inside scikit-learn: a pipeline, cross-validation, a grid search.

``bpcore.sklearn.MLPClassifier`` takes scikit-learn's parameter names
(``hidden_layer_sizes``, ``alpha``, ``learning_rate_init``, ``max_iter``,
``random_state``...), so it drops into any scikit-learn workflow.  Here it
sits behind a StandardScaler in a Pipeline on the breast-cancer data set:
5-fold cross-validation, then a small grid search over the hidden layer size
and the L2 penalty, then a test score for the best model, compared with
scikit-learn's own MLPClassifier with the same settings.

Needs scikit-learn:  pip install scikit-learn
Run:  python examples/sklearn_pipeline.py
"""
import sys
import time
import warnings

try:
    from sklearn.datasets import load_breast_cancer
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import (GridSearchCV, cross_val_score,
                                         train_test_split)
    from sklearn.neural_network import MLPClassifier as SkMLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
except ImportError:
    sys.exit("this example needs scikit-learn: pip install scikit-learn")

from bpcore.sklearn import MLPClassifier

# 100 epochs is enough here; neither MLP needs to say it could go on.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0)
print(f"breast cancer: {X.shape[0]} samples, {X.shape[1]} features, "
      f"classes {sorted(set(y.tolist()))}")

model = make_pipeline(
    StandardScaler(),
    MLPClassifier(hidden_layer_sizes=(32,), max_iter=100,
                  learning_rate_init=1e-3, random_state=0))

t0 = time.perf_counter()
scores = cross_val_score(model, X_train, y_train, cv=5)
print(f"5-fold cross-validation accuracy: {scores.mean():.4f} "
      f"+/- {scores.std():.4f} ({time.perf_counter() - t0:.2f} s)")

grid = GridSearchCV(model, {
    "mlpclassifier__hidden_layer_sizes": [(16,), (64,)],
    "mlpclassifier__alpha": [1e-4, 1e-2],
}, cv=3)
t0 = time.perf_counter()
grid.fit(X_train, y_train)
print(f"grid search: best {grid.best_params_} with CV accuracy "
      f"{grid.best_score_:.4f} ({time.perf_counter() - t0:.2f} s)")

test_acc = grid.score(X_test, y_test)
print(f"test accuracy of the best pipeline: {test_acc:.4f}")
assert test_acc > 0.9, test_acc

# The fitted bpcore network is available for anything the Network API does.
net = grid.best_estimator_[-1].network_
print(f"its network: {net} ({net.n_params} parameters)")
proba = grid.predict_proba(X_test[:3])
print(f"predict_proba for three test samples:\n{proba.round(4)}")

# The same pipeline with scikit-learn's own MLP, for comparison.
reference = make_pipeline(
    StandardScaler(),
    SkMLPClassifier(hidden_layer_sizes=(32,), max_iter=100,
                    learning_rate_init=1e-3, random_state=0))
for name, est in (("bpcore", model), ("scikit-learn", reference)):
    t0 = time.perf_counter()
    est.fit(X_train, y_train)
    seconds = time.perf_counter() - t0
    print(f"{name:>12} MLPClassifier: fit {seconds:.3f} s, "
          f"test accuracy {est.score(X_test, y_test):.4f}")
