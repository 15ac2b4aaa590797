"""scikit-learn estimators on bpcore: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in replacements for :mod:`sklearn.neural_network`'s estimators with the
stochastic solvers ("sgd", "adam"): the same parameter names and meanings,
the same fitted attributes, ``partial_fit``, ``predict_proba`` and
``sample_weight``; training runs in bpcore's C core.  Additions:
``class_weight`` (classifier), ``dtype``, ``n_threads``, ``init``
(scikit-learn's initialisation by default) and ``dropout`` (inverted
dropout on the hidden layers during training); the fitted
:class:`bpcore.Network` is ``network_``.

Requires scikit-learn >= 1.6 (``pip install bpcore[sklearn]``).

How scikit-learn's options map onto bpcore
------------------------------------------
- ``alpha``: scikit-learn adds ``alpha * ||W||^2 / (2 * sum of the batch's
  sample weights)`` to each batch's loss, i.e. ``alpha * W / n_batch`` to the
  weight gradient.  The optimizer gets ``weight_decay = alpha / (batch_size *
  mean sample weight)``: the same update (exactly so for full batches and
  unweighted batches of the nominal size).  Biases are never penalised.
- ``learning_rate`` (sgd only, as in scikit-learn): "constant";
  "invscaling", ``learning_rate_init / (t_ + 1) ** power_t`` with ``t_`` the
  number of samples seen, updated after each epoch; "adaptive", divided by 5
  whenever ``n_iter_no_change`` epochs fail to improve by ``tol`` (training
  stops once it is below 1e-6).
- The optimizers follow PyTorch's update rules (bpcore's ``SGD`` and
  ``Adam``).  From the same weights, SGD (with or without momentum or
  Nesterov, constant rate; "invscaling" without momentum) makes the same
  updates as scikit-learn's to rounding; Adam differs only in where
  epsilon enters (O(epsilon)).
- ``loss_`` and ``loss_curve_`` follow scikit-learn: log-loss for
  classifiers, half the mean squared error per output for regressors, plus
  the L2 term, taken at the epoch's starting weights (scikit-learn sums it
  per batch: the same value with one batch per epoch).
- Divergence: non-finite weights raise :class:`bpcore.DivergenceError`, a
  ``ValueError`` with scikit-learn's message, at the diverging epoch (the
  last finite weights are kept).  With ``early_stopping=True`` the fit
  goes on as scikit-learn's does: NaN validation scores up to
  ``max_iter``, then the best weights restored.
- ``solver="lbfgs"``: SciPy's L-BFGS-B on scikit-learn's full-batch
  objective, the loss plus ``alpha/2 ||W||^2 / sum(sample_weight)``, with
  its options (``maxiter=max_iter``, ``maxfun=max_fun``, ``gtol=tol``) and
  its ``ConvergenceWarning``; the loss and gradient come from the C core in
  one pass.  scikit-learn hands L-BFGS its ``loss_`` (for squared_error the
  mean over outputs) with the gradient of the sum over outputs, and clips
  probabilities to [eps, 1 - eps] in its log-loss value; both are
  replicated, so from the same weights the iterates agree to rounding.
  ``loss_curve_`` holds the objective after each iteration (scikit-learn
  keeps none for lbfgs); ``early_stopping`` and ``batch_size`` do not
  apply, as in scikit-learn.
- ``MLPRegressor(loss=...)``: "squared_error"; "poisson" (exponential
  output: the network's identity output is the log rate, ``loss_`` is
  scikit-learn's half Poisson deviance); bpcore's "absolute_error" and
  "huber" (``huber_delta``), reported per output like "squared_error".
- Stopping follows scikit-learn: training loss not improving by ``tol`` for
  more than ``n_iter_no_change`` epochs, or (``early_stopping=True``) the
  validation score (accuracy or R^2) on a held-out ``validation_fraction``,
  with the best parameters restored at the end.
"""
from __future__ import annotations

import numbers
import warnings
from numbers import Integral, Real
from typing import TYPE_CHECKING

try:
    from sklearn.base import (BaseEstimator, ClassifierMixin,
                              RegressorMixin, _fit_context, is_classifier)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, check_X_y, column_or_1d
    from sklearn.utils._param_validation import (Interval, Options,
                                                 StrOptions)
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call,
                                          check_classification_targets,
                                          type_of_target, unique_labels)
    from sklearn.utils.validation import (_check_sample_weight,
                                          check_is_fitted, validate_data)
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "bpcore.sklearn needs scikit-learn >= 1.6, which is not installed "
        "(or too old): pip install bpcore[sklearn]  (or: pip install "
        "'scikit-learn>=1.6')") from _exc

if TYPE_CHECKING:  # annotations only: nothing imported at run time
    from numpy.typing import ArrayLike

import numpy as np

from bpcore._errors import DivergenceError
from bpcore._config import resolve_threads
from bpcore import _dropout
from bpcore._limits import MAX_THREADS
from bpcore._names import ACTIVATIONS, INITS, SOLVERS
from bpcore.network import Network
from bpcore.optim import SGD, Adam

__all__ = ["MLPClassifier", "MLPRegressor", "from_sklearn", "to_sklearn"]

# scikit-learn's spellings -> bpcore's names (bpcore's own pass as is)
_ACTIVATION_ALIASES = {"logistic": "sigmoid"}
_SK_TO_BP_OUT = {"logistic": "sigmoid", "softmax": "softmax",
                 "identity": "identity"}
_SK_OUT_NAMES = {bp: sk for sk, bp in _SK_TO_BP_OUT.items()}
# MLPRegressor's loss names (scikit-learn's first) -> bpcore's
_REG_LOSSES = {"squared_error": "mse", "poisson": "poisson",
               "absolute_error": "mae", "huber": "huber"}
# scikit-learn's hidden activations and solvers (it has no adamw)
_SK_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")
_SK_SOLVERS = set(SOLVERS) - {"adamw"}
# bpcore's hidden activations that scikit-learn has, in its spelling
_BP_TO_SK_HIDDEN = {_ACTIVATION_ALIASES.get(a, a): a for a in _SK_ACTIVATIONS}


# -- parameter checks -----------------------------------------------------

class _Range(Interval):
    """scikit-learn's Interval, except that a bool is not a number here
    (``max_iter=True`` is an error, not 1)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


class _FloatDtype(Options):
    """float32 or float64, as a name, a numpy type or a dtype (an Options,
    so that scikit-learn's validation takes it)."""

    def __init__(self):
        super().__init__(object, {"float32", "float64"})

    def is_satisfied_by(self, val):
        try:
            return np.dtype(val) in (np.float32, np.float64)
        except (TypeError, ValueError):
            return False

    def __str__(self):
        return "'float32' or 'float64'"


def _unit(closed="left"):
    """A float in [0, 1) (or as closed says)."""
    return _Range(Real, 0, 1, closed=closed)


def _at_least(low, kind=Real, closed="left"):
    """A number >= low (> low with closed="neither"), finite."""
    return _Range(kind, low, None, closed=closed)


# How a checked parameter is handed on in _Settings: numbers as Python
# floats and ints, flags as bools; the others as given.
_CONVERT = {
    **dict.fromkeys(("alpha", "learning_rate_init", "power_t", "tol",
                     "momentum", "validation_fraction", "beta_1", "beta_2",
                     "epsilon", "huber_delta"), float),
    **dict.fromkeys(("max_iter", "max_fun"), int),
    **dict.fromkeys(("shuffle", "verbose", "warm_start",
                     "nesterovs_momentum", "early_stopping"), bool),
}


def _map_activation(name, est):
    """An activation name in bpcore's spelling ('logistic' is 'sigmoid')."""
    key = _ACTIVATION_ALIASES.get(name, name) if isinstance(name, str) \
        else None
    if key not in ACTIVATIONS:
        raise ValueError(
            f"The 'activation' parameter of {type(est).__name__} must be one "
            f"of {', '.join(map(repr, _SK_ACTIVATIONS))} (scikit-learn's "
            f"names) or bpcore's {', '.join(map(repr, ACTIVATIONS))}, got "
            f"{name!r}.")
    return key


def _sklearn_init(net, activation, seed):
    """scikit-learn's initialisation: weights and biases of layer k drawn
    from U(-b, b), b = sqrt(f / (fan_in + fan_out)), f = 2 after a logistic
    hidden activation, 6 otherwise (Glorot and Bengio)."""
    rng = np.random.default_rng(seed)
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        if isinstance(activation, str):
            logistic = activation == "sigmoid"
        else:   # one name per hidden layer; the output layer uses the last
            logistic = bool(activation) and activation[
                min(k, len(activation) - 1)] == "sigmoid"
        bound = np.sqrt((2.0 if logistic else 6.0) / sum(W.shape))
        W[...] = rng.uniform(-bound, bound, W.shape)
        b[...] = rng.uniform(-bound, bound, b.shape)


def _stochastic_solver(est):
    """partial_fit exists for the stochastic solvers only, as in
    scikit-learn (hasattr(est, "partial_fit") is False for "lbfgs")."""
    if est.solver not in ("sgd", "adam"):
        raise AttributeError(f"partial_fit is only available for stochastic "
                             f"optimizers. {est.solver} is not stochastic.")
    return True


class _Settings:
    """The validated hyperparameters of one fit call."""


def _as_given(value):
    return value


class _Rate:
    """A learning rate the estimator changes between epochs ("invscaling",
    "adaptive"): a bpcore schedule, read by the optimizer at each epoch."""

    def __init__(self, value):
        self.value = float(value)

    def __call__(self, epoch):
        return self.value

    def __repr__(self):
        return f"{self.value!r}"


# -- the shared base ------------------------------------------------------

def _keep_params(est, values):
    """Store each argument of est's __init__ (``values``: its locals())
    under its own name, and nothing else, as scikit-learn requires."""
    for name in est._get_param_names():
        setattr(est, name, values[name])


class _BaseMLP(BaseEstimator):
    """Shared logic of MLPClassifier and MLPRegressor (not for direct use)."""

    _loss_scale_by_outputs = False   # regressors report mse per output

    # scikit-learn's constraints for its own parameters, widened to
    # bpcore's names (activations, init) and narrowed where bpcore's
    # optimizers need it (momentum and the betas below 1), plus bpcore's
    # additions.  _settings adds the checks that span several parameters.
    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", _at_least(1, Integral)],
        "activation": [StrOptions(set(ACTIVATIONS) | set(_SK_ACTIVATIONS)),
                       list, tuple],
        "solver": [StrOptions(_SK_SOLVERS)],
        "alpha": [_at_least(0)],
        "batch_size": [StrOptions({"auto"}), _at_least(1, Integral)],
        "learning_rate": [StrOptions({"constant", "invscaling",
                                      "adaptive"})],
        "learning_rate_init": [_at_least(0, closed="neither")],
        "power_t": [_at_least(0)],
        "max_iter": [_at_least(1, Integral)],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [_at_least(0)],
        "verbose": ["boolean", _Range(Integral, None, None,
                                      closed="neither")],
        "warm_start": ["boolean"],
        "momentum": [_unit()],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [_unit()],
        "beta_1": [_unit()],
        "beta_2": [_unit()],
        "epsilon": [_at_least(0, closed="neither")],
        "n_iter_no_change": [_at_least(1, Integral), Options(Real, {np.inf})],
        "max_fun": [_at_least(1, Integral)],
        "init": [StrOptions({"sklearn"} | set(INITS))],
        "dtype": [None, _FloatDtype()],
        "n_threads": [None, _Range(Integral, 1, MAX_THREADS, closed="both")],
        "dropout": [_unit(), "array-like"],
        "comm": "no_validation",
    }

    # -- parameters -------------------------------------------------------

    def _settings(self, incremental=False):
        """The hyperparameters of one fit call, checked as a whole (each
        one against ``_parameter_constraints`` first), in usable form."""
        if incremental and hasattr(self, "network_"):
            # _fit_context checks them for fit and a first partial_fit;
            # set_params may have changed them since
            self._validate_params()
        s = _Settings()
        for name, value in self.get_params(deep=False).items():
            setattr(s, name, _CONVERT.get(name, _as_given)(value))
        s.hidden = self._hidden_sizes()
        s.activation = self._hidden_activations(len(s.hidden))
        if s.early_stopping and s.validation_fraction == 0:
            raise ValueError("early_stopping=True needs validation_fraction "
                             "> 0.")
        try:
            s.dropout = _dropout.check_dropout(self.dropout, len(s.hidden))
        except (TypeError, ValueError) as e:
            raise ValueError(f"The 'dropout' parameter of "
                             f"{type(self).__name__} is invalid: {e}."
                             ) from None
        s.dtype = None if self.dtype is None else np.dtype(self.dtype)
        return s

    def _hidden_sizes(self):
        """hidden_layer_sizes as a list of ints, each > 0."""
        hls = self.hidden_layer_sizes
        hls = [hls] if isinstance(hls, Integral) else list(hls)
        if not all(isinstance(h, Integral) and not isinstance(h, bool)
                   for h in hls) or any(h <= 0 for h in hls):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {hls}.")
        return [int(h) for h in hls]

    def _hidden_activations(self, n_hidden):
        """activation in bpcore's names: one, or a list of one per hidden
        layer."""
        act = self.activation
        if isinstance(act, str):
            return _map_activation(act, self)
        if len(act) != n_hidden:
            raise ValueError(
                f"The 'activation' parameter of {type(self).__name__} lists "
                f"{len(act)} names for {n_hidden} hidden layers.")
        return [_map_activation(a, self) for a in act]

    # -- fitted attributes derived from the network -----------------------

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices, ``coefs_[i]`` of shape (n_i, n_{i+1}): views into
        ``network_.params`` (writing into them changes the model).

        Assignable, as in scikit-learn: a list of arrays of those shapes is
        checked and copied into the network.  Before the first fit the list
        is kept as given and used by the first ``partial_fit`` (or a
        ``fit`` with ``warm_start=True``) as the starting weights.
        """
        if not hasattr(self, "network_") and "_coefs_set" in self.__dict__:
            return self._coefs_set
        check_is_fitted(self, "network_")
        return list(self.network_.weights)

    @coefs_.setter
    def coefs_(self, value):
        if hasattr(self, "network_"):
            self._assign_params("coefs_", value, self.network_.weights)
        else:
            self._coefs_set = value

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors, ``intercepts_[i]`` of shape (n_{i+1},): views into
        ``network_.params``; assignable like ``coefs_``."""
        if not hasattr(self, "network_") and \
                "_intercepts_set" in self.__dict__:
            return self._intercepts_set
        check_is_fitted(self, "network_")
        return list(self.network_.biases)

    @intercepts_.setter
    def intercepts_(self, value):
        if hasattr(self, "network_"):
            self._assign_params("intercepts_", value, self.network_.biases)
        else:
            self._intercepts_set = value

    def _assign_params(self, name, value, targets):
        """Check ``value`` against the arrays ``targets`` (the network's
        weights or biases) and copy it in; nothing changes on error."""
        if isinstance(value, np.ndarray) or not hasattr(value, "__len__"):
            raise TypeError(f"{name} must be a list of {len(targets)} arrays "
                            f"(one per layer), got {type(value).__name__}.")
        if len(value) != len(targets):
            raise ValueError(f"{name} must hold {len(targets)} arrays (one "
                             f"per layer), got {len(value)}.")
        arrays = []
        for k, (v, t) in enumerate(zip(value, targets)):
            try:
                a = np.asarray(v, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"{name}[{k}] must be an array of numbers "
                                f"of shape {t.shape}, got "
                                f"{type(v).__name__}.") from None
            if a.shape != t.shape:
                raise ValueError(f"{name}[{k}] must have shape {t.shape}, "
                                 f"got {a.shape}.")
            if not np.isfinite(a).all():
                raise ValueError(f"{name}[{k}] contains NaN or infinity.")
            arrays.append(a)
        for a, t in zip(arrays, targets):
            t[...] = a

    def __sklearn_is_fitted__(self):
        return hasattr(self, "network_")

    # -- training ---------------------------------------------------------

    def _validate_X_y(self, X, y, incremental, reset):
        raise NotImplementedError

    def _targets(self, y):
        """(Y for the network, output activation, loss)."""
        raise NotImplementedError

    def _extra_sample_weight(self, y, incremental):
        return None

    def _score_val(self, X, y, sample_weight):
        raise NotImplementedError

    def _make_optimizer(self, s, weight_decay):
        if s.solver == "sgd":
            return SGD(lr=s.learning_rate_init, momentum=s.momentum,
                       nesterov=bool(s.nesterovs_momentum and s.momentum > 0),
                       weight_decay=weight_decay)
        return Adam(lr=s.learning_rate_init, betas=(s.beta_1, s.beta_2),
                    eps=s.epsilon, weight_decay=weight_decay)

    def _fit(self, X, y, sample_weight=None, incremental=False):
        """fit and partial_fit: check the data, build the network on a
        first pass (or check that it still fits), then train."""
        if getattr(self, "comm", None) is not None and \
                getattr(self, "_comm_labels", None) is None:
            return self._fit_comm(X, y, sample_weight, incremental)
        s = self._settings(incremental)
        first_pass = not hasattr(self, "network_") or (
            not s.warm_start and not incremental)
        X, y = self._validate_X_y(X, y, incremental, reset=first_pass)
        dtype = self._fit_dtype(s, X, first_pass)
        X = np.ascontiguousarray(X, dtype=dtype)
        sample_weight = self._fit_sample_weight(sample_weight, X, y,
                                                incremental)
        Y, out_act, loss = self._targets(y)
        if Y.ndim == 1:  # class indices: one output unit per class
            n_outputs = len(self.classes_)
        else:
            Y = np.ascontiguousarray(Y, dtype=dtype)
            n_outputs = Y.shape[1]
        rng = check_random_state(self.random_state)
        if first_pass:
            self._new_network(s, [X.shape[1]] + s.hidden + [n_outputs],
                              out_act, loss, dtype, rng, incremental)
        else:
            self._check_continuation(s, n_outputs, loss, incremental)
        self._sync_network(s)
        if s.solver == "lbfgs":
            self._fit_lbfgs(s, X, Y, sample_weight)
        else:
            self._fit_stochastic(s, X, y, Y, sample_weight, incremental, rng)
        return self

    def _fit_dtype(self, s, X, first_pass):
        """The network's precision: dtype when set; on a first pass
        float32 for float32 X (as scikit-learn), else float64; afterwards
        the fitted network's."""
        if s.dtype is not None:
            return s.dtype
        if first_pass:
            return np.dtype(np.float32 if X.dtype == np.float32
                            else np.float64)
        return self.network_.dtype

    def _fit_sample_weight(self, sample_weight, X, y, incremental):
        """sample_weight checked, times the class weights (None if
        neither)."""
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        extra = self._extra_sample_weight(y, incremental)
        if extra is not None:
            sample_weight = (extra if sample_weight is None
                             else sample_weight * extra)
        return sample_weight

    def _new_network(self, s, layers, out_act, loss, dtype, rng,
                     incremental):
        """network_ for a first pass, with fresh fitted attributes: seeded
        from random_state, initialised as init says (or from coefs_ and
        intercepts_ assigned before a partial_fit or warm fit)."""
        if isinstance(self.random_state, numbers.Integral):
            seed = int(self.random_state)
        else:
            seed = int(rng.randint(np.iinfo(np.int32).max))
        self.network_ = Network(
            layers, activation=s.activation, output=out_act, loss=loss,
            dtype=dtype, seed=seed,
            init="xavier" if s.init == "sklearn" else s.init,
            dropout=s.dropout, **self._network_kwargs(s))
        if s.init == "sklearn":
            _sklearn_init(self.network_, s.activation, seed)
        if incremental or s.warm_start:
            self._start_from_assigned()
        self.__dict__.pop("_coefs_set", None)
        self.__dict__.pop("_intercepts_set", None)
        self._reset_fitted(s, layers, out_act)

    def _start_from_assigned(self):
        """Weights assigned before the first fit are its start, as in
        scikit-learn (which skips initialisation then); on an error there
        is no network_."""
        set_w = self.__dict__.get("_coefs_set")
        set_b = self.__dict__.get("_intercepts_set")
        try:
            if set_w is not None:
                self._assign_params("coefs_", set_w, self.network_.weights)
            if set_b is not None:
                self._assign_params("intercepts_", set_b,
                                    self.network_.biases)
        except (TypeError, ValueError):
            del self.network_
            raise

    def _reset_fitted(self, s, layers, out_act):
        """scikit-learn's fitted attributes for a new network."""
        self.n_outputs_ = layers[-1]
        self.n_layers_ = len(layers)
        self.out_activation_ = self._out_name(out_act)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if s.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _check_continuation(self, s, n_outputs, loss, incremental):
        """warm_start and partial_fit go on with the fitted network: the
        same hidden layers, outputs and loss."""
        net = self.network_
        if list(net.layers[1:-1]) != s.hidden:
            raise ValueError(
                f"hidden_layer_sizes={s.hidden} differs from the fitted "
                f"network's {list(net.layers[1:-1])}; fit again without "
                f"warm_start to change the architecture.")
        if n_outputs != net.layers[-1]:
            raise ValueError(f"y has {n_outputs} outputs; the fitted "
                             f"network has {net.layers[-1]}.")
        if net.loss != loss or self._network_kwargs(s).get(
                "huber_delta", net.huber_delta) != net.huber_delta:
            raise ValueError(
                f"the loss ({loss}) differs from the fitted network's "
                f"({net.loss}); fit again without warm_start to change "
                f"it.")
        if s.early_stopping and not incremental and \
                self.validation_scores_ is None:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf

    def _sync_network(self, s):
        """The network follows dtype and dropout set since it was built:
        dropout changes, a different dtype is an error."""
        if s.dtype is not None and self.network_.dtype != s.dtype:
            raise ValueError(f"dtype={self.dtype!r} differs from the fitted "
                             f"network's {self.network_.dtype.name}; fit "
                             f"again without warm_start to change it.")
        if self.network_.dropout != s.dropout:  # set_params between fits
            self.network_._set_dropout(s.dropout)

    def _network_kwargs(self, s):
        return {}

    def _out_name(self, out_act):
        return _SK_OUT_NAMES[out_act]

    def _loss_report(self, net, Y, sw):
        """(divisor, shift): scikit-learn's reported loss is the network's
        E / divisor + shift (plus the L2 term)."""
        return 1, 0.0

    def _lbfgs_value_fn(self, net):
        """None, or a function giving the loss value L-BFGS sees from the
        output activations (scikit-learn's own formula)."""
        return None

    def _fit_lbfgs(self, s, X, Y, sample_weight):
        """scikit-learn's lbfgs solver: SciPy's L-BFGS-B on the full-batch
        objective (the loss plus alpha/2 ||W||^2 / sum of sample weights),
        with the same options (maxiter=max_iter, maxfun=max_fun, gtol=tol)
        and the same convergence warning."""
        from bpcore import _validation as V
        from bpcore import lbfgs

        lbfgs._scipy_minimize()
        net = self.network_
        Xc, _ = net._inputs(X)
        Yc = net._targets(Y, Xc.shape[0])
        sw = V.as_sample_weight(sample_weight, "sample_weight", net.dtype,
                                Xc.shape[0])
        div, shift = self._loss_report(net, Yc, sw)
        objective = lbfgs._Objective(net, Xc, Yc, sw,
                                     resolve_threads(s.n_threads),
                                     alpha=s.alpha, loss_scale=1.0 / div,
                                     loss_shift=shift,
                                     value_fn=self._lbfgs_value_fn(net))
        opt = lbfgs.LBFGS(max_iter=s.max_iter, tol=s.tol, max_fun=s.max_fun)
        curve = []

        def on_iter(k, value, E):
            curve.append(value)
            if s.verbose:
                print("Iteration %d, loss = %.8f" % (k + 1, value))

        with net._guard.write(), opt._in_use():
            res = lbfgs.minimize(opt, objective, on_iter)
        self.n_iter_ = opt.n_iter
        self.loss_ = float(res.fun)
        self.loss_curve_ = curve
        if res.status != 0:
            warnings.warn(lbfgs.convergence_message(res, opt.n_iter,
                                                    s.max_iter, True),
                          ConvergenceWarning, stacklevel=3)

    def _fit_comm(self, X, y, sample_weight, incremental):
        """fit/partial_fit with ``comm``: every rank passes its own rows.

        The input is checked on every rank first (an error on one raises on
        all), the classes are the union over the ranks, and the network's
        fit trains data-parallel (see ``Network.fit``): "auto" batch size,
        ``t_`` and the L2 scaling use the global row count.
        """
        from bpcore._distributed import _Comm
        dc = _Comm(self.comm)
        err, labels = None, np.zeros(0)
        try:
            if self.early_stopping:
                raise ValueError("early_stopping=True is not supported with "
                                 "comm; pass validation rows to "
                                 "Network.fit(..., comm=) instead")
            self._settings(incremental)
            _, yc = check_X_y(X, y, multi_output=True, accept_sparse=True,
                              dtype=None, ensure_all_finite=False)
            if is_classifier(self) and yc.ndim == 1:
                labels = np.unique(yc)
        except BaseException as e:
            err = e
        dc.agree(err, f"{type(self).__name__}.fit")
        if labels.dtype == object:
            labels = labels.astype(str)
        parts = dc.comm.allgather(labels)
        self._comm_labels = np.unique(np.concatenate(parts))
        try:
            return self._fit(X, y, sample_weight, incremental)
        finally:
            self._comm_labels = None

    def _fit_stochastic(self, s, X, y, Y, sample_weight, incremental, rng):
        """scikit-learn's sgd and adam solvers on bpcore's fit: hold out the
        validation rows, size the batches and the L2 term, set up the
        optimizer, then run the epochs with scikit-learn's bookkeeping
        after each (see _EpochEnd)."""
        net = self.network_
        comm = getattr(self, "comm", None)
        if s.early_stopping and incremental:
            raise ValueError("partial_fit does not support "
                             "early_stopping=True")
        (X_tr, Y_tr, sw_tr), validation = self._validation_split(
            s, X, y, Y, sample_weight, rng)
        n, B, mean_sw = self._batches(s, X_tr.shape[0], sw_tr, comm)
        if sw_tr is not None:
            sw_tr = np.ascontiguousarray(sw_tr, dtype=net.dtype)
        # scikit-learn's gradient: mean loss gradient + alpha * W / sum(sw_b)
        weight_decay = s.alpha / (B * mean_sw)
        n_batches = -(-n // B)
        penalty_scale = 0.5 * s.alpha * n_batches / (n * mean_sw)
        loss_report = self._loss_report(net, Y_tr, sw_tr)
        opt = self._stochastic_optimizer(s, weight_decay, incremental)
        end = _EpochEnd(self, s, opt.lr, validation, n, penalty_scale,
                        loss_report)
        fit_args = dict(batch_size=B, optimizer=opt, shuffle=s.shuffle,
                        sample_weight=sw_tr, n_threads=s.n_threads)
        if comm is not None:
            fit_args["comm"] = comm
        self.n_iter_ = 0
        epochs = 1 if incremental else s.max_iter
        try:
            if s.early_stopping:
                self._epochs_one_by_one(X_tr, Y_tr, epochs, fit_args, end)
            else:
                self._epochs_in_one_fit(X_tr, Y_tr, epochs, fit_args, end)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")
        if not incremental and self.n_iter_ == s.max_iter:
            warnings.warn(
                "Stochastic Optimizer: Maximum iterations (%d) reached and "
                "the optimization hasn't converged yet." % s.max_iter,
                ConvergenceWarning)
        if end.best is not None:
            net.params[...] = end.best
            if end.diverged is not None and not np.isfinite(
                    self.best_validation_score_):
                # no epoch gave a finite score: nothing to fall back on
                raise _divergence(end.at_epoch) from end.diverged

    def _validation_split(self, s, X, y, Y, sample_weight, rng):
        """((X, Y, sample_weight) to train on, (X, y, sample_weight) to
        validate on): with early_stopping, validation_fraction held out
        (stratified for a classifier) as scikit-learn holds it out."""
        if not s.early_stopping:
            return (X, Y, sample_weight), (None, None, None)
        stratify = y if (self._stratify and y.ndim == 1) else None
        parts = [X, Y, y] + ([] if sample_weight is None
                             else [sample_weight])
        split = train_test_split(*parts, random_state=rng,
                                 test_size=s.validation_fraction,
                                 stratify=stratify)
        X_tr, X_val, Y_tr, _, _, y_val = split[:6]
        sw_tr, sw_val = (split[6:8] if sample_weight is not None
                         else (None, None))
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your "
                             "dataset.")
        return (X_tr, Y_tr, sw_tr), (X_val, y_val, sw_val)

    def _batches(self, s, n, sw_tr, comm):
        """(rows n, batch size, mean sample weight) as scikit-learn counts
        them; with comm, n and the mean are over every rank's rows."""
        mean_sw_global = None
        if comm is not None:  # global row count and weight sum
            from bpcore._distributed import _Comm
            tot = _Comm(comm).ordered_sum(np.array(
                [n, n if sw_tr is None else float(np.sum(sw_tr))], float))
            n = int(tot[0])
            mean_sw_global = tot[1] / tot[0]
        if s.batch_size == "auto":
            B = min(200, n)
        else:
            if s.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than "
                              "sample size. It is going to be clipped")
            B = int(np.clip(s.batch_size, 1, n))
        mean_sw = 1.0 if sw_tr is None else float(np.mean(sw_tr))
        if comm is not None:
            mean_sw = 1.0 if sw_tr is None and mean_sw_global == 1.0 else \
                float(mean_sw_global)
        if sw_tr is not None and not mean_sw > 0:
            raise ValueError("sample_weight must have a positive sum (after "
                             "class_weight)")
        return n, B, mean_sw

    def _stochastic_optimizer(self, s, weight_decay, incremental):
        """A fresh optimizer for every fit (warm_start included), the same
        one across partial_fit calls, as scikit-learn does; its rate is a
        _Rate that the schedules change between epochs."""
        opt = getattr(self, "_optimizer", None)
        if (not incremental or opt is None or
                not isinstance(opt, SGD if s.solver == "sgd" else Adam)):
            opt = self._make_optimizer(s, weight_decay)
            opt.lr = _Rate(s.learning_rate_init)
            self._optimizer = opt
        else:
            opt.weight_decay = weight_decay
        return opt

    def _epochs_in_one_fit(self, X_tr, Y_tr, epochs, fit_args, end):
        """Without early stopping: one call, the epoch loop and the batch
        loop both in bpcore, end() after each epoch."""
        try:
            self.network_.fit(X_tr, Y_tr, epochs=epochs,
                              callbacks=[lambda e, logs: end(logs["loss"])],
                              **fit_args)
        except DivergenceError as exc:
            # scikit-learn's error (a ValueError), raised at once and with
            # the weights of the last finite epoch kept
            raise _divergence(self.n_iter_ + 1) from exc

    def _epochs_one_by_one(self, X_tr, Y_tr, epochs, fit_args, end):
        """With early stopping: one fit call per epoch, since the
        validation score needs predict between epochs."""
        for _ in range(epochs):
            if end.diverged is None:
                try:
                    loss = self.network_.fit(X_tr, Y_tr, epochs=1,
                                             **fit_args).loss[0]
                except DivergenceError as exc:
                    end.diverged = exc
                    end.at_epoch = self.n_iter_ + 1
            # scikit-learn goes on with NaN weights: every later epoch's
            # loss and validation score is NaN, the NaN never counts as "no
            # improvement", so training runs to max_iter and the best
            # weights come back at the end.  Updates of NaN weights stay
            # NaN, so those epochs are only recorded, not computed.
            if end.diverged is not None:
                loss = np.nan
            if not end(loss, end.diverged is not None):
                break

    def _update_no_improvement(self, s, X_val, y_val, sw_val,
                               diverged=False):
        """scikit-learn's rule; returns True when the best model improved."""
        if s.early_stopping:
            score = (np.nan if diverged
                     else float(self._score_val(X_val, y_val, sw_val)))
            self.validation_scores_.append(score)
            if s.verbose:
                print("Validation score: %f" % score)
            if score < self.best_validation_score_ + s.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                return True
            return False
        if self.best_loss_ is None:
            self.best_loss_ = np.inf
        if self.loss_curve_[-1] > self.best_loss_ - s.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if self.loss_curve_[-1] < self.best_loss_:
            self.best_loss_ = self.loss_curve_[-1]
        return False

    def _forward(self, X):
        check_is_fitted(self, "network_")
        X = _dense(validate_data(self, X, reset=False, accept_sparse=_SPARSE,
                                 dtype=(np.float64, np.float32)))
        X = np.ascontiguousarray(X, dtype=self.network_.dtype)
        return self.network_.predict(X, n_threads=self.n_threads)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.non_deterministic = False
        return tags


class _EpochEnd:
    """scikit-learn's end-of-epoch bookkeeping for the stochastic solvers,
    called with the epoch's data loss; False stops training.

    It sets ``loss_`` (with the L2 term at the epoch's starting weights),
    ``n_iter_``, ``t_`` and ``loss_curve_``, keeps the best weights with
    early stopping, applies the "invscaling" and "adaptive" schedules to
    the rate and decides when training stops.  ``diverged`` and
    ``at_epoch`` record a divergence under early stopping.
    """

    def __init__(self, est, s, rate, validation, n, penalty_scale,
                 loss_report):
        self.est, self.s, self.rate = est, s, rate
        self.validation = validation      # (X_val, y_val, sw_val)
        self.n = n
        self.penalty_scale = penalty_scale
        self.loss_div, self.loss_shift = loss_report
        self.lr_mode = s.learning_rate if s.solver == "sgd" else "constant"
        self.best = est.network_.params.copy() if s.early_stopping else None
        self.diverged = self.at_epoch = None
        # the L2 term uses the weights at the start of the epoch, as
        # scikit-learn's loss does (exactly so for one batch per epoch)
        self.sq_start = self._sq_norm()

    def _sq_norm(self):
        """Sum of the squared weights (not biases)."""
        # huge weights (a diverging run) give inf, without a warning
        with np.errstate(over="ignore", invalid="ignore"):
            return sum(float(np.dot(w.ravel(), w.ravel()))
                       for w in self.est.network_.weights)

    def __call__(self, data_loss, diverged=False):
        est, s = self.est, self.s
        est.loss_ = float(data_loss / self.loss_div + self.loss_shift
                          + self.penalty_scale * self.sq_start)
        self.sq_start = self._sq_norm()
        est.n_iter_ += 1
        est.t_ += self.n
        est.loss_curve_.append(est.loss_)
        if s.verbose:
            print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))
        if est._update_no_improvement(s, *self.validation, diverged):
            self.best[...] = est.network_.params
        if self.lr_mode == "invscaling":
            self.rate.value = s.learning_rate_init / (est.t_ + 1) ** s.power_t
        if est._no_improvement_count > s.n_iter_no_change:
            return self._no_improvement()
        return True

    def _no_improvement(self):
        """n_iter_no_change epochs without progress: "adaptive" divides
        the rate by 5 (while it is above 1e-6); otherwise stop."""
        est, s = self.est, self.s
        what = "Validation score" if s.early_stopping else "Training loss"
        msg = (f"{what} did not improve more than tol={s.tol:f} "
               f"for {s.n_iter_no_change} consecutive epochs.")
        if self.lr_mode == "adaptive" and self.rate.value > 1e-6:
            self.rate.value /= 5.0
            est._no_improvement_count = 0
            if s.verbose:
                print(msg + " Setting learning rate to %f" % self.rate.value)
            return True
        if s.verbose:
            print(msg + " Stopping.")
        return False


def _divergence(epoch):
    """The error scikit-learn raises for non-finite weights (a ValueError),
    saying where bpcore stopped."""
    return DivergenceError(
        "Solver produced non-finite parameter weights. The input data may "
        "contain large values and need to be preprocessed. (bpcore: the "
        f"loss or the weights became NaN or infinite in epoch {epoch}; the "
        "weights of the last completed epoch were kept.)")


# Sparse X is accepted like scikit-learn's own MLPs accept it, and made
# dense: the core computes on dense rows (a TF-IDF matrix of m x vocabulary
# becomes m x vocabulary floats).
_SPARSE = ("csr", "csc", "coo")


def _dense(X):
    return X.toarray() if hasattr(X, "toarray") else X


# -- classifier ---------------------------------------------------------

class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by bpcore's C core.

    scikit-learn's :class:`sklearn.neural_network.MLPClassifier` with the
    stochastic solvers ("sgd", "adam"), plus ``class_weight``, ``dtype`` and
    ``n_threads``.  Binary problems use one sigmoid output with binary
    cross-entropy, multiclass problems a softmax output with cross-entropy,
    multilabel problems (a 2-D indicator ``y``) one sigmoid output per label
    with binary cross-entropy.  Labels may be any hashable values (strings,
    ints).

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Sizes of the hidden layers; ``()`` gives no hidden layer.
    activation : str or list of str, default="relu"
        Hidden activation: "identity", "logistic", "tanh", "relu"
        (scikit-learn's names) or any of bpcore's ("sigmoid", "leaky_relu",
        "elu", "softplus", "gelu"); a list gives one per hidden layer.
    solver : {"adam", "sgd", "lbfgs"}, default="adam"
        "lbfgs": full-batch L-BFGS with SciPy (see the module notes).
    alpha : float >= 0, default=0.0001
        L2 penalty on the weights (not the biases), as in scikit-learn.
    batch_size : int or "auto", default="auto"
        "auto" is ``min(200, n_samples)``.
    learning_rate : {"constant", "invscaling", "adaptive"}, default="constant"
        Schedule for solver="sgd" (ignored by adam), as in scikit-learn.
    learning_rate_init : float > 0, default=0.001
    power_t : float >= 0, default=0.5
        Exponent of "invscaling".
    max_iter : int, default=200
        Maximum number of epochs.
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the shuffling and the validation split.
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
        Continue from the fitted weights (with a fresh optimizer state, as
        scikit-learn does).
    momentum : float in [0, 1), default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified) and stop
        when its accuracy stops improving; the best weights are kept.
    validation_fraction : float in (0, 1), default=0.1
    beta_1, beta_2 : float in [0, 1), defaults 0.9 and 0.999
    epsilon : float > 0, default=1e-8
    n_iter_no_change : int or numpy.inf, default=10
    max_fun : int >= 1, default=15000
        Most loss evaluations of solver="lbfgs".
    init : str, default="sklearn"
        "sklearn" draws weights and biases as scikit-learn does (Glorot
        uniform, gain for logistic); bpcore's schemes ("auto", "xavier",
        "he", "lecun", "normal", "uniform", biases zero) are accepted too.
    dtype : None, "float32" or "float64", default=None
        Precision of the network.  None: float32 for float32 input (as
        scikit-learn does), float64 otherwise.
    n_threads : int or None, default=None
        Threads for training and prediction (None: bpcore's setting).
    dropout : float or sequence of float, default=0.0
        An extension (scikit-learn's MLP has none): inverted dropout after
        each hidden layer while training, a rate in [0, 1) or one per
        hidden layer; prediction never drops.  See :class:`bpcore.Network`.
    class_weight : dict, "balanced" or None, default=None
        Weights per class, multiplied into ``sample_weight``; "balanced" is
        ``n_samples / (n_classes * np.bincount(y))``.  Not for multilabel
        targets; "balanced" is not available in ``partial_fit``.
    comm : mpi4py communicator or None, default=None
        Data-parallel training over MPI (``pip install "bpcore[mpi]"``):
        every rank calls ``fit``/``partial_fit`` with its own rows; the
        classes are the union over the ranks, the batches and losses are
        global and every rank ends with the same network (see
        ``Network.fit``).  ``predict`` and ``score`` stay local.  Not with
        ``early_stopping=True``.

    Attributes
    ----------
    network_ : bpcore.Network
        The trained network.
    classes_ : ndarray or list of ndarray
        Class labels.
    coefs_, intercepts_ : lists of ndarray
        Weights ``(n_i, n_{i+1})`` and biases, views into ``network_``;
        assigning a list of arrays of those shapes copies it in.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names.
    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``).
    loss_ : float
        Loss of the last epoch (with the L2 term).
    loss_curve_ : list of float
        Loss of every epoch.
    best_loss_ : float or None
        Lowest loss reached (None with early_stopping).
    validation_scores_ : list of float or None
        Validation accuracy per epoch (early_stopping only).
    best_validation_score_ : float or None
    t_ : int
        Number of training samples seen.
    n_outputs_ : int
    n_layers_ : int
    out_activation_ : {"logistic", "softmax"}

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from bpcore.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = MLPClassifier((16,), max_iter=300, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 3)
    """

    _stratify = True
    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [None, StrOptions({"balanced"}), dict],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.001,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 init="sklearn", dtype=None, n_threads=None,
                 class_weight=None, dropout=0.0, comm=None):
        _keep_params(self, locals())

    def _validate_X_y(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True,
                             accept_sparse=_SPARSE,
                             dtype=(np.float64, np.float32), reset=reset)
        X = _dense(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start
                                             and not incremental):
            self._label_binarizer = LabelBinarizer()
            union = getattr(self, "_comm_labels", None)
            if union is not None and y.ndim == 1 and len(union):
                # with comm: the classes of every rank's rows
                self._label_binarizer.fit(union.astype(y.dtype, copy=False))
            else:
                self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start and not incremental:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same "
                        "classes as in the previous call to fit. Previously "
                        f"got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_,
                                  assume_unique=True)):
                raise ValueError(
                    "`y` has classes not in `self.classes_`. "
                    f"`self.classes_` has {self.classes_}. 'y' has "
                    f"{classes}.")
        return X, y

    def _targets(self, y):
        lb = self._label_binarizer
        if lb.y_type_ == "multiclass":
            # class indices: the network never needs the one-hot matrix
            return (np.searchsorted(lb.classes_, y), "softmax",
                    "cross_entropy")
        return lb.transform(y), "sigmoid", "binary_cross_entropy"

    def _extra_sample_weight(self, y, incremental):
        """class_weight as a weight per sample (None without it)."""
        cw = self.class_weight
        if cw is None:
            return None
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel "
                             "targets; pass sample_weight instead.")
        if isinstance(cw, str):   # "balanced", as _parameter_constraints say
            weights = self._balanced_weights(y, incremental)
        else:
            weights = self._dict_weights(cw)
        return weights[np.searchsorted(self.classes_, y)]

    def _balanced_weights(self, y, incremental):
        """n_samples / (n_classes * count) per class (0 for a class y does
        not hold)."""
        if incremental:
            raise ValueError(
                "class_weight='balanced' is not supported by "
                "partial_fit: the class frequencies of the whole stream "
                "are unknown. Compute them once, e.g. with "
                "sklearn.utils.class_weight.compute_class_weight, and "
                "pass a dict.")
        classes = self.classes_
        idx = np.searchsorted(classes, y)
        counts = np.bincount(idx, minlength=len(classes)).astype(float)
        weights = np.zeros(len(classes))
        present = counts > 0
        weights[present] = len(y) / (present.sum() * counts[present])
        return weights

    def _dict_weights(self, cw):
        """The weight of each class from a {label: weight} dict (1 for a
        class it leaves out)."""
        classes = self.classes_
        weights = np.ones(len(classes))
        for k, v in cw.items():
            pos = np.flatnonzero(classes == k) if len(classes) else []
            if len(pos) == 0:
                raise ValueError(f"class_weight: the class label {k!r} "
                                 f"is not among the classes "
                                 f"{list(classes)}.")
            if not _at_least(0).is_satisfied_by(v):
                raise ValueError(f"class_weight: the weight of class "
                                 f"{k!r} must be a finite number >= 0, "
                                 f"got {v!r}.")
            weights[pos[0]] = float(v)
        return weights

    def _score_val(self, X, y, sample_weight):
        return accuracy_score(y, self._predict_validated(X),
                              sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike,
            sample_weight: ArrayLike | None = None) -> MLPClassifier:
        """Fit the model to X and y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 2-D indicator matrix for multilabel.
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight,
                         incremental=False)

    @available_if(_stochastic_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None,
                    classes: ArrayLike | None = None) -> MLPClassifier:
        """One epoch over the given data, continuing the training.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
        sample_weight : array-like of shape (n_samples,), default=None
        classes : array of shape (n_classes,), default=None
            Every class of the stream; required on the first call (not for
            multilabel y), ignored or checked afterwards.

        Returns
        -------
        self
        """
        if (classes is None and not hasattr(self, "classes_")
                and type_of_target(y).startswith("multilabel")):
            # a multilabel indicator matrix names its labels itself
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        elif _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
            self.classes_ = self._label_binarizer.classes_
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def _lbfgs_value_fn(self, net):
        # scikit-learn's log-loss clips the probabilities to [eps, 1 - eps]
        # before taking logs; L-BFGS sees that value (its gradient is not
        # clipped): so the same steps and stopping point as scikit-learn
        # even when the outputs saturate
        from scipy.special import xlogy

        sigmoid = net.activation[-1] == "sigmoid"

        def value(P, Y, sw):
            eps = np.finfo(P.dtype).eps
            P = np.clip(P, eps, 1 - eps)
            terms = xlogy(Y, P)
            if sigmoid:
                terms = terms + xlogy(1 - Y, 1 - P)
            return float(-np.average(terms, weights=sw, axis=0).sum())

        return value

    def _predict_validated(self, X):
        p = self.network_.predict(np.ascontiguousarray(
            X, dtype=self.network_.dtype), n_threads=self.n_threads)
        return self._decode(p)

    def _decode(self, p):
        if self.n_outputs_ == 1:
            p = p.ravel()
        return self._label_binarizer.inverse_transform(p)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted class labels (an indicator matrix for multilabel)."""
        return self._decode(self._forward(X))

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes).

        Columns follow ``classes_``; for multilabel, one independent
        probability per label.
        """
        p = self._forward(X)
        if self.n_outputs_ == 1:
            p = p.ravel()
            if len(self.classes_) == 1:
                return np.ones((p.shape[0], 1), dtype=p.dtype)
            return np.column_stack([1 - p, p])
        return p

    def predict_log_proba(self, X: ArrayLike) -> np.ndarray:
        """Natural logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


# -- regressor ----------------------------------------------------------

class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by bpcore's C core.

    scikit-learn's :class:`sklearn.neural_network.MLPRegressor` with the
    stochastic solvers ("sgd", "adam"), plus ``dtype`` and ``n_threads``.
    Identity output, squared error (``loss_`` is half the mean squared
    error, as in scikit-learn); single or multiple outputs.

    Parameters
    ----------
    The same as :class:`MLPClassifier` without ``class_weight``, plus
    ``loss`` (keyword only): "squared_error" (scikit-learn's default),
    "poisson" (as scikit-learn: exponential output, targets >= 0), or
    bpcore's "absolute_error" and "huber"; ``huber_delta`` (float > 0,
    default 1.0) is the delta of "huber".  ``early_stopping`` watches the
    validation R^2.

    Attributes
    ----------
    network_ : bpcore.Network
    coefs_, intercepts_ : lists of ndarray (views into ``network_``)
    n_features_in_, feature_names_in_, n_iter_, loss_, loss_curve_,
    best_loss_, validation_scores_, best_validation_score_, t_,
    n_outputs_, n_layers_ : as in :class:`MLPClassifier`
    out_activation_ : "identity", or "exp" for loss="poisson"

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from bpcore.sklearn import MLPRegressor
    >>> X, y = make_regression(200, 5, random_state=0)
    >>> reg = MLPRegressor((32,), max_iter=50, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    _stratify = False
    _loss_scale_by_outputs = True
    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions(set(_REG_LOSSES))],
        "huber_delta": [_at_least(0, closed="neither")],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *,
                 loss="squared_error", solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 max_fun=15000, init="sklearn", dtype=None, n_threads=None,
                 huber_delta=1.0, dropout=0.0, comm=None):
        _keep_params(self, locals())

    def _network_kwargs(self, s):
        if s.loss == "huber":
            return {"huber_delta": s.huber_delta}
        return {}

    def _out_name(self, out_act):
        return "exp" if self.loss == "poisson" else _SK_OUT_NAMES[out_act]

    def _loss_report(self, net, Y, sw):
        if net.loss == "poisson":
            # scikit-learn's half Poisson deviance: the network's loss plus
            # the weighted mean of sum_j (y log y - y), a constant
            Y = np.asarray(Y, dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                c = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1.0)),
                             0.0) - Y
            c = c.sum(axis=1)
            w = None if sw is None else np.asarray(sw, dtype=np.float64)
            return 1, float(np.average(c, weights=w))
        # squared_error (and bpcore's extras): the mean over outputs
        return net.layers[-1], 0.0

    def _validate_X_y(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True,
                             accept_sparse=_SPARSE,
                             dtype=(np.float64, np.float32), reset=reset)
        X = _dense(X)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, y

    def _targets(self, y):
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        if self.loss == "poisson" and Y.size and np.min(Y) < 0:
            raise ValueError(
                f"loss='poisson' needs targets y >= 0 (counts or rates), got "
                f"a minimum of {np.min(Y)}.")
        return Y, "identity", _REG_LOSSES[self.loss]

    def _values(self, p):
        """Predictions from network outputs (the log rate for poisson)."""
        return np.exp(p) if self.loss == "poisson" else p

    def _score_val(self, X, y, sample_weight):
        p = self._values(self.network_.predict(np.ascontiguousarray(
            X, dtype=self.network_.dtype), n_threads=self.n_threads))
        if not np.isfinite(p).all():
            return np.nan
        y = y if y.ndim == 2 else y.reshape(-1, 1)
        # huge finite predictions (a diverging run) give -inf or NaN, as in
        # scikit-learn, without numpy's overflow warnings
        with np.errstate(over="ignore", invalid="ignore"):
            return r2_score(y, p, sample_weight=sample_weight)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike,
            sample_weight: ArrayLike | None = None) -> MLPRegressor:
        """Fit the model to X and y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight=sample_weight,
                         incremental=False)

    @available_if(_stochastic_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X: ArrayLike, y: ArrayLike,
                    sample_weight: ArrayLike | None = None) -> MLPRegressor:
        """One epoch over the given data, continuing the training."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predicted values, shape (n_samples,) or (n_samples, n_outputs)."""
        p = self._values(self._forward(X))
        return p.ravel() if p.shape[1] == 1 else p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags


# -- conversion from and to scikit-learn's own MLPs -----------------------

_FITTED_COPIED = ("n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
                  "validation_scores_", "best_validation_score_",
                  "n_features_in_", "feature_names_in_",
                  "_no_improvement_count")


# the loss that goes with each output activation of scikit-learn's MLPs
_OUTPUT_LOSS = {"sigmoid": "binary_cross_entropy",
                "softmax": "cross_entropy", "identity": "mse"}


def _shared_params(src, dst_cls, skip=()):
    """src's parameters that dst_cls also has (but those in skip)."""
    names = set(dst_cls().get_params()) - set(skip)
    return {k: v for k, v in src.get_params().items() if k in names}


def _counterpart(est, pairs, caller, kind, fitted_attr):
    """The class est converts to (pairs: (its class, the other)); a
    TypeError for any other object, NotFittedError if est is unfitted."""
    cls = next((dst for src, dst in pairs if isinstance(est, src)), None)
    if cls is None:
        raise TypeError(f"{caller} expects {kind} MLPClassifier or "
                        f"MLPRegressor, got {type(est).__name__}")
    check_is_fitted(est, fitted_attr, msg=(
        f"This {type(est).__name__} instance is not fitted yet: call fit "
        f"before {caller}."))
    return cls


def _copy_fitted(src, dst):
    """What a conversion copies besides the weights: the output layout and
    name, the classes and their encoding, and the fitted attributes."""
    import copy
    dst.n_outputs_ = int(src.n_outputs_)
    dst.n_layers_ = int(src.n_layers_)
    dst.out_activation_ = src.out_activation_
    if is_classifier(src):
        dst._label_binarizer = copy.deepcopy(src._label_binarizer)
        dst.classes_ = copy.deepcopy(src.classes_)
    for name in _FITTED_COPIED:
        if hasattr(src, name):
            setattr(dst, name, copy.deepcopy(getattr(src, name)))


def _network_from(est):
    """A Network holding the weights of a fitted scikit-learn MLP (float32
    when all its weights are)."""
    out = getattr(est, "out_activation_", None)
    if out not in _SK_TO_BP_OUT:
        raise ValueError(f"from_sklearn: the output activation {out!r} is "
                         f"not supported (bpcore has identity, logistic and "
                         f"softmax outputs)")
    coefs, intercepts = est.coefs_, est.intercepts_
    dtype = (np.float32 if all(c.dtype == np.float32 for c in coefs)
             else np.float64)
    layers = [coefs[0].shape[0]] + [c.shape[1] for c in coefs]
    bp_out = _SK_TO_BP_OUT[out]
    net = Network(layers, activation=_map_activation(est.activation, est),
                  output=bp_out, loss=_OUTPUT_LOSS[bp_out], dtype=dtype,
                  seed=0)
    for k, (W, b) in enumerate(zip(coefs, intercepts)):
        net.weights[k][...] = W
        net.biases[k][...] = b
    return net


def from_sklearn(est):
    """A fitted bpcore estimator equal to a fitted scikit-learn MLP.

    Parameters
    ----------
    est : sklearn.neural_network.MLPClassifier or MLPRegressor
        Fitted, with a hidden activation and output bpcore has (every
        scikit-learn choice except ``MLPRegressor(loss="poisson")``).

    Returns
    -------
    bpcore.sklearn.MLPClassifier or MLPRegressor
        With the same hyperparameters (those bpcore's estimator has), the
        same ``classes_`` and label encoding, the weights copied exactly
        into ``network_`` (float64, or float32 when ``est`` was fitted on
        float32), and scikit-learn's fitted attributes (``n_iter_``,
        ``t_``, ``loss_``, ``loss_curve_``, ``best_loss_``, ...).
        ``predict`` and ``predict_proba`` give scikit-learn's results to
        rounding; ``partial_fit`` and ``fit`` with ``warm_start=True``
        continue training (with a fresh optimizer state: scikit-learn's
        Adam moments or SGD velocities are not carried over).  Binary
        classifiers keep scikit-learn's single logistic output,
        multiclass a softmax, multilabel one logistic output per label.

    Raises
    ------
    TypeError
        If est is not a scikit-learn MLPClassifier or MLPRegressor.
    sklearn.exceptions.NotFittedError
        If est is not fitted.
    ValueError
        If est uses an output bpcore does not have.

    Examples
    --------
    >>> from sklearn.neural_network import MLPClassifier as SkMLP
    >>> from sklearn.datasets import load_iris
    >>> from bpcore.sklearn import from_sklearn
    >>> X, y = load_iris(return_X_y=True)
    >>> sk = SkMLP((8,), max_iter=20, random_state=0).fit(X, y)  # doctest: +SKIP
    >>> bp = from_sklearn(sk)                                    # doctest: +SKIP
    """
    from sklearn import neural_network as sknn
    cls = _counterpart(est, [(sknn.MLPClassifier, MLPClassifier),
                             (sknn.MLPRegressor, MLPRegressor)],
                       "from_sklearn", "a scikit-learn", "coefs_")
    net = _network_from(est)
    new = cls(**_shared_params(est, cls))
    new.network_ = net
    _copy_fitted(est, new)
    for name, default in (("n_iter_", 0), ("t_", 0), ("loss_curve_", []),
                          ("_no_improvement_count", 0),
                          ("best_loss_", np.inf)):
        if not hasattr(new, name):
            setattr(new, name, default)
    if not hasattr(new, "validation_scores_"):
        new.validation_scores_ = None
        new.best_validation_score_ = None
    return new


def to_sklearn(est):
    """A fitted scikit-learn MLP equal to a fitted bpcore estimator.

    The reverse of :func:`from_sklearn`: the weights (copied), classes and
    fitted attributes go into a :class:`sklearn.neural_network.
    MLPClassifier` or ``MLPRegressor``.  Its hidden activation must be one
    scikit-learn has (identity, logistic/sigmoid, tanh, relu), the same
    for every hidden layer.

    Raises
    ------
    TypeError
        If est is not a bpcore.sklearn MLPClassifier or MLPRegressor.
    sklearn.exceptions.NotFittedError
        If est is not fitted.
    ValueError
        If the network uses an activation scikit-learn does not have.
    """
    from sklearn import neural_network as sknn
    cls = _counterpart(est, [(MLPClassifier, sknn.MLPClassifier),
                             (MLPRegressor, sknn.MLPRegressor)],
                       "to_sklearn", "a bpcore.sklearn", "network_")
    net = est.network_
    hidden = set(net.activation[:-1])
    if len(hidden) > 1:
        raise ValueError(f"to_sklearn: scikit-learn's MLPs use one hidden "
                         f"activation; this network has {sorted(hidden)}")
    act = hidden.pop() if hidden else "relu"
    if act not in _BP_TO_SK_HIDDEN:
        raise ValueError(f"to_sklearn: scikit-learn has no {act!r} "
                         f"activation (it has {', '.join(_SK_ACTIVATIONS)})")
    params = _shared_params(est, cls, skip=("activation",))
    new = cls(activation=_BP_TO_SK_HIDDEN[act], **params)
    new.coefs_ = [np.array(W) for W in net.weights]
    new.intercepts_ = [np.array(b) for b in net.biases]
    _copy_fitted(est, new)
    if getattr(new, "best_loss_", None) is None and not new.early_stopping:
        new.best_loss_ = np.inf
    return new
