"""Input checks shared by the API: every user-facing error is raised here,
before any work, with a message naming the argument."""
import numbers
import operator

import numpy as np

from bpcore import _core
from bpcore import _limits

from bpcore._names import ACTIVATIONS, INITS, LOSSES, OUTPUTS  # noqa: F401


def check_int(value, name, minimum=None, allow_none=False):
    """Return value as an int; bools and non-integers are rejected."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = operator.index(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_float(value, name, low=None, high=None, low_open=False,
                high_open=False):
    """Return value as a finite float inside the given bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        op = ">" if low_open else ">="
        raise ValueError(f"{name} must be {op} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        op = "<" if high_open else "<="
        raise ValueError(f"{name} must be {op} {high}, got {value}")
    return value


def check_name(value, name, choices):
    """Return a lower-case name from choices."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {choices}, "
                        f"got {value!r}")
    key = value.lower()
    if key not in choices:
        if key == "softmax" and name == "activation":
            raise ValueError("activation 'softmax' is only an output: pass "
                             "output='softmax'; hidden layers take one of "
                             f"{', '.join(choices)}")
        raise ValueError(f"unknown {name} {value!r}; expected one of "
                         f"{', '.join(choices)}")
    return key


def check_dtype(value):
    """Return np.float32 or np.float64 from a name or numpy dtype."""
    try:
        dt = np.dtype(value)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', "
                        f"got {value!r}") from None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dt}")
    return dt


def _numeric(a, name):
    """np.asarray(a) with a numeric (bool, int or float) dtype, or an error."""
    if a is None:
        raise TypeError(f"{name} must be an array of numbers, got None")
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name} must be a numeric array: {e}") from None
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (ValueError, TypeError):
                raise TypeError(f"{name} must hold numbers, got objects "
                                f"that are not numbers") from None
        else:
            raise TypeError(f"{name} must hold real numbers, got dtype "
                            f"{arr.dtype}")
    return arr


def c_array(arr, dtype):
    """arr as an array C can read directly: dtype (native byte order), C
    order, aligned.  No copy when it already is one."""
    arr = np.asarray(arr)
    if arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.aligned:
        return arr
    out = np.empty(arr.shape, dtype=dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        out[...] = arr
    return out


def _finite(arr, name):
    if arr.size and not _core.all_finite(arr):
        raise ValueError(f"{name} contains NaN or infinity "
                         f"(or values too large for {arr.dtype})")


def as_inputs(X, name, dtype, n_features):
    """X as a C-contiguous (m, n_features) array of dtype, checked.

    Returns (array, was_1d).  A 1-D X of length n_features is one sample.
    """
    if (type(X) is np.ndarray and X.dtype == dtype and X.flags.c_contiguous
            and X.flags.aligned and X.ndim == 2 and X.shape[0] > 0 and X.shape[1] == n_features):
        _finite(X, name)  # the common case: used as it is, no copy
        return X, False
    arr = _numeric(X, name)
    was_1d = arr.ndim == 1
    if was_1d:
        if arr.shape[0] != n_features:
            raise ValueError(f"{name} is 1-D of length {arr.shape[0]}; a single "
                             f"sample needs {n_features} features")
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (m, {n_features}), got "
                         f"{arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one sample")
    if arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} features per sample; "
                         f"the network expects {n_features}")
    arr = c_array(arr, dtype)
    _finite(arr, name)
    return arr, was_1d


def one_hot(labels, n_outputs, dtype):
    """(len(labels), n_outputs) rows of dtype: 1 at each label, else 0."""
    rows = np.zeros((labels.shape[0], n_outputs), dtype=dtype)
    rows[np.arange(labels.shape[0]), labels.astype(np.intp, copy=False)] = 1
    return rows


def as_targets(Y, name, dtype, loss, n_outputs, m, labels=False):
    """Targets as a C-contiguous (m, n_outputs) array of dtype, checked.

    cross_entropy also takes 1-D class indices, turned into one-hot rows;
    with labels=True they come back as a checked (m,) int64 array instead
    (the training loop expands them a batch at a time).
    """
    arr = _numeric(Y, name)
    if loss == "cross_entropy" and arr.ndim == 1:
        arr = _class_indices(arr, name, n_outputs, m)
        if labels:
            return c_array(arr, np.int64)
        return one_hot(arr, n_outputs, dtype)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim == 1 and m == 1 and arr.shape[0] == n_outputs:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape != (m, n_outputs):
        hint = (" (or 1-D class indices)" if loss == "cross_entropy" else "")
        raise ValueError(f"{name} must have shape ({m}, {n_outputs}){hint}, "
                         f"got {arr.shape}")
    arr = c_array(arr, dtype)
    _finite(arr, name)
    _check_target_range(arr, name, loss)
    return arr


def _class_indices(arr, name, n_outputs, m):
    """1-D class indices checked: m of them, integers in [0, n_outputs)."""
    if arr.shape[0] != m:
        raise ValueError(f"{name} has {arr.shape[0]} labels for {m} "
                         f"samples")
    if arr.dtype.kind == "f":
        _finite(arr, name)
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name}: class labels must be integers")
    if arr.dtype.kind == "b":
        raise TypeError(f"{name}: class labels must be integers, got bool")
    if arr.size and (arr.min() < 0 or arr.max() >= n_outputs):
        raise ValueError(f"{name}: class labels must be in "
                         f"[0, {n_outputs - 1}], got values from "
                         f"{arr.min()} to {arr.max()}")
    return arr


def _check_target_range(arr, name, loss):
    """The values the loss allows: probabilities in [0, 1] for the cross
    entropies, counts or rates >= 0 for poisson."""
    if loss in ("cross_entropy", "binary_cross_entropy") and arr.size and (
            arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"{name}: {loss} targets must lie in [0, 1], got "
                         f"values from {arr.min()} to {arr.max()}")
    if loss == "poisson" and arr.size and arr.min() < 0:
        raise ValueError(f"{name}: poisson targets are counts or rates and "
                         f"must be >= 0, got a minimum of {arr.min()}")


def as_sample_weight(sw, name, dtype, m):
    """Sample weights as a C-contiguous (m,) array, or None."""
    if sw is None:
        return None
    arr = _numeric(sw, name)
    if arr.ndim != 1 or arr.shape[0] != m:
        raise ValueError(f"{name} must have shape ({m},), got {arr.shape}")
    arr = c_array(arr, dtype)
    _finite(arr, name)
    if (arr < 0).any():
        raise ValueError(f"{name} must be >= 0")
    with np.errstate(over="ignore"):
        total = arr.sum(dtype=np.float64)
    if not total > 0:
        raise ValueError(f"{name} must have a positive sum")
    if not np.isfinite(total):
        raise ValueError(f"{name} sums to infinity; rescale the weights "
                         f"(only their ratios matter)")
    return arr


# Most threads a call may ask for (as _core's fast path checks): each gets
# a workspace of up to a few MB, so thousands would exhaust memory.  (The
# count that runs is further clamped to the CPUs: _limits.cpu_limit.)
MAX_THREADS = _limits.MAX_THREADS


def check_threads(n_threads):
    """None or an int in [1, MAX_THREADS]."""
    n = check_int(n_threads, "n_threads", minimum=1, allow_none=True)
    if n is not None and n > MAX_THREADS:
        raise ValueError(f"n_threads must be <= {MAX_THREADS}, got {n}")
    return n
