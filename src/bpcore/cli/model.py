"""What a model remembers: targets, class labels, scaling and the metadata
keys the command line stores, read back by :class:`ModelInfo`.

Everything ``predict`` needs travels in the model's ``metadata`` (a dict of
str -> str; lists and numbers as JSON).
"""
import json

import numpy as np

import bpcore
from bpcore import _names
from bpcore.cli.common import CLIError, check_exists, list_names
from bpcore.cli.data import (MISSING_MARKERS, Arrays, is_name,
                             looks_like_header)

# losses of a regression (the others classify)
REGRESSION_LOSSES = _names.REGRESSION_LOSSES

# A numeric target with integer values and at most this many distinct
# values is taken as class labels (override with --loss mse).
MAX_AUTO_CLASSES = 20

# Metadata keys written by the CLI (all values are str; lists are JSON).
META_TASK = "task"                    # "classification" | "regression"
META_FEATURES = "feature_names"       # JSON list of str
META_TARGET = "target_name"           # str, or JSON list for several targets
META_CLASSES = "classes"              # JSON list of str (class labels)
META_X_MEAN = "input_mean"            # JSON list of float
META_X_STD = "input_std"
META_Y_MEAN = "target_mean"           # regression only
META_Y_STD = "target_std"
META_LAYOUT = "data_layout"           # JSON: how the training table looked
META_SUMMARY = "training_summary"     # JSON: what `train` did
META_KEYS = (META_TASK, META_FEATURES, META_TARGET, META_CLASSES,
             META_X_MEAN, META_X_STD, META_Y_MEAN, META_Y_STD, META_LAYOUT,
             META_SUMMARY)


# -- class labels -----------------------------------------------------------

def canonical_label(v):
    """A numeric label as one string: 1, 1.0 and '01' are all '1'."""
    try:
        f = float(v)
    except ValueError:
        return str(v)
    return str(int(f)) if f.is_integer() else repr(f)


def label_strings(y):
    """Class labels as strings: text as it is, numbers canonical."""
    if y.dtype.kind in "US":
        return np.array([str(v) for v in y], dtype=object)
    return np.array([canonical_label(v) for v in y.tolist()], dtype=object)


def sort_labels(labels):
    """Numbers in numeric order ('01' before '1'), then text in text
    order."""
    def key(s):
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)
    return sorted(labels, key=key)


def _refuse_missing_numbers(y):
    """A text target whose values are numbers but for missing-value markers
    ('NA', 'null', ...) is a numeric target with holes, not hundreds of
    class labels."""
    seen_number = False
    first_missing = None
    for i, v in enumerate(y.tolist()):
        s = str(v).strip()
        try:
            float(s)
            seen_number = True
        except ValueError:
            if s.lower() not in MISSING_MARKERS:
                return
            if first_missing is None:
                first_missing = (i, s)
    if seen_number and first_missing is not None:
        i, s = first_missing
        raise CLIError(f"the target has a missing value {s!r} (data row "
                       f"{i + 1}); remove or fill such rows")


def choose_task(y, loss):
    """('classification' | 'regression', loss name) for these targets."""
    numeric = y.dtype.kind in "biuf"
    if y.ndim == 2:
        if loss not in (None,) + REGRESSION_LOSSES:
            raise CLIError(f"--loss {loss} needs one column of class labels; "
                           f"the data has {y.shape[1]} target columns")
        return "regression", loss or "mse"
    if loss in REGRESSION_LOSSES:
        if not numeric:
            raise CLIError(f"--loss {loss} needs a numeric target; this "
                           f"target holds text labels")
        return "regression", loss
    if loss is not None:
        return "classification", loss
    if not numeric:
        _refuse_missing_numbers(y)
        return "classification", "cross_entropy"
    values = np.unique(y)
    if np.all(values == np.round(values)) and len(values) <= MAX_AUTO_CLASSES:
        return "classification", "cross_entropy"
    return "regression", "mse"


# -- the metadata as stored -------------------------------------------------

class _Metadata:
    """Typed reads of a model's metadata, each a CLIError naming the key
    when the value has the wrong form."""

    def __init__(self, md, path):
        self.md, self.path = md, path

    def bad(self, key):
        return CLIError(f"{self.path}: metadata {key!r} has the wrong form "
                        f"for a bpcore command-line model")

    def json(self, key, default):
        if key not in self.md:
            return default
        try:
            return json.loads(self.md[key])
        except (ValueError, TypeError):
            raise CLIError(f"{self.path}: metadata {key!r} is not valid JSON"
                           ) from None

    def strings(self, key, default):
        """A JSON list of str (numbers allowed, made str)."""
        v = self.json(key, default)
        if not isinstance(v, list) or not all(
                isinstance(c, (str, int, float)) for c in v):
            raise self.bad(key)
        return [str(c) for c in v]

    def numbers(self, key, default):
        """A JSON list of finite numbers as a 1-D float64 array."""
        try:
            a = np.asarray(self.json(key, default), np.float64)
        except (TypeError, ValueError):
            raise self.bad(key) from None
        if a.ndim != 1 or not np.isfinite(a).all():
            raise self.bad(key)
        return a

    def mapping(self, key):
        """A JSON object (default empty)."""
        v = self.json(key, {})
        if not isinstance(v, dict):
            raise self.bad(key)
        return v


class ModelInfo:
    """What the CLI stored in a model's metadata, with defaults for models
    saved from Python without it."""

    def __init__(self, net, path="model"):
        self.net = net
        read = _Metadata(net.metadata, path)
        self._read_task(read)
        self._read_names(read)
        self._read_scaling(read)
        self._read_records(read)
        if not self._sizes_match():
            raise CLIError(f"{path}: the model's metadata does not match its "
                           f"{net.layers[0]} inputs and {net.layers[-1]} "
                           f"outputs")

    def _read_task(self, read):
        """classification or regression (the default from the loss)."""
        self.task = read.md.get(META_TASK) or (
            "regression" if self.net.loss == "mse" else "classification")
        if self.task not in ("classification", "regression"):
            raise read.bad(META_TASK)

    def _read_names(self, read):
        """Feature names, target name(s) and class labels."""
        n_in, n_out = self.net.layers[0], self.net.layers[-1]
        self.features = read.strings(META_FEATURES,
                                     [f"x{j}" for j in range(n_in)])
        target = read.md.get(META_TARGET, "y")
        if target.startswith("["):
            target = read.strings(META_TARGET, ["y"])
        self.target = target
        if self.task == "classification":
            default = [str(k) for k in range(max(2, n_out))]
            self.classes = read.strings(META_CLASSES, default)
        else:
            self.classes = None

    def _read_scaling(self, read):
        """Mean and standard deviation of the inputs and targets."""
        n_in, n_out = self.net.layers[0], self.net.layers[-1]
        self.x_mean = read.numbers(META_X_MEAN, [0.0] * n_in)
        self.x_std = read.numbers(META_X_STD, [1.0] * n_in)
        self.y_mean = read.numbers(META_Y_MEAN, [0.0] * n_out)
        self.y_std = read.numbers(META_Y_STD, [1.0] * n_out)

    def _read_records(self, read):
        """The training table's layout and the training summary."""
        self.layout = read.mapping(META_LAYOUT)
        n_cols = self.layout.get("n_columns")
        tidx = self.layout.get("target_columns")
        if (n_cols is not None and type(n_cols) is not int) or (
                tidx is not None and not (isinstance(tidx, list) and all(
                    type(j) is int for j in tidx))):
            raise read.bad(META_LAYOUT)
        self.summary = read.mapping(META_SUMMARY)
        for key in ("seconds", "samples_per_second"):
            if not isinstance(self.summary.get(key, 0), (int, float)):
                raise read.bad(META_SUMMARY)

    def _sizes_match(self):
        """Whether names, classes and scaling fit the network's ends."""
        n_in, n_out = self.net.layers[0], self.net.layers[-1]
        ok = (len(self.features) == n_in and self.x_mean.shape == (n_in,)
              and self.x_std.shape == (n_in,))
        if self.task == "classification":
            k = len(self.classes)
            return ok and (n_out == k or (n_out == 1 and k == 2))
        return ok and self.y_mean.shape == self.y_std.shape == (n_out,)

    # -- targets ----------------------------------------------------------

    @property
    def target_names(self):
        if isinstance(self.target, list):
            return self.target
        if self.task == "regression" and self.net.layers[-1] > 1:
            return [f"{self.target}{j}" for j in range(self.net.layers[-1])]
        return [self.target]

    def scale(self, X):
        return (X - self.x_mean) / self.x_std

    def encode(self, y, source):
        """Targets as the network's training targets."""
        net = self.net
        if self.task == "regression":
            if y.dtype.kind not in "biuf":
                raise CLIError(f"{source}: the target holds text; the model "
                               f"is a regressor")
            y = y.reshape(len(y), -1)
            if y.shape[1] != net.layers[-1]:
                raise CLIError(f"{source}: {y.shape[1]} target columns; the "
                               f"model predicts {net.layers[-1]}")
            return (y - self.y_mean) / self.y_std
        codes = self.class_codes(y, source)
        if net.loss == "cross_entropy":
            return codes
        if net.layers[-1] == 1:
            return codes.reshape(-1, 1).astype(np.float64)
        return np.eye(net.layers[-1])[codes]

    def class_codes(self, y, source):
        """Class labels -> indices into self.classes.  A label is found as
        written or, failing that, by its number when one class has it
        (``1.0`` or ``01`` finds a class ``1``: models saved before labels
        kept their spelling stored ``1`` for ``001``)."""
        if y.ndim != 1:
            raise CLIError(f"{source}: expected one column of class labels")
        exact = {c: k for k, c in enumerate(self.classes)}
        by_number = {}
        for k, c in enumerate(self.classes):
            by_number.setdefault(canonical_label(c), []).append(k)
        found = {}
        codes = np.empty(len(y), dtype=np.int64)
        for i, s in enumerate(label_strings(y)):
            if s not in found:
                same = by_number.get(canonical_label(s), [])
                if s not in exact and len(same) != 1:
                    raise CLIError(f"{source}: label {s!r} is not one of the "
                                   f"model's classes "
                                   f"({', '.join(self.classes)})")
                found[s] = exact[s] if s in exact else same[0]
            codes[i] = found[s]
        return codes

    def decode(self, out):
        """Network outputs -> (predictions, probabilities or None)."""
        out = np.asarray(out, dtype=np.float64)
        if self.task == "regression":
            if self.net.loss == "poisson":  # the output is the log rate
                out = np.exp(out)
            return out * self.y_std + self.y_mean, None
        if out.shape[1] == 1:
            proba = np.hstack([1.0 - out, out])
        else:
            proba = out
        labels = np.array(self.classes, dtype=object)[np.argmax(proba, 1)]
        return labels, proba

    def truth(self, y, source="the data"):
        """Targets in the form decode() predicts them (labels or values)."""
        if self.task == "classification":
            classes = np.array(self.classes, dtype=object)
            return classes[self.class_codes(y, source)]
        return y.reshape(len(y), -1).astype(np.float64)

    # -- the columns of DATA ----------------------------------------------

    def select(self, data, need_target):
        """(X, y or None) from DATA laid out as this model expects."""
        if isinstance(data, Arrays):
            return self._select_arrays(data, need_target)
        t = data
        fcols, tcol = self._columns(t)
        X = t.features(fcols)
        y = None if tcol is None else self._target(t, tcol)
        if need_target and y is None:
            raise CLIError(f"{t.source}: no target column "
                           f"{list_names(self.target_names)} to evaluate "
                           f"against")
        return X, y

    def _select_arrays(self, data, need_target):
        """(X, y or None) from separate arrays."""
        if data.X.shape[1] != self.net.layers[0]:
            raise CLIError(self._width_message(data.source, data.X.shape[1],
                                               False))
        if need_target and data.y is None:
            raise CLIError(f"{data.source}: no targets (an .npz needs an "
                           f"array 'y'; .npy features need y.npy)")
        return data.X, data.y

    def _columns(self, t):
        """(feature columns, target columns or None) of a Table: by name
        when both it and the training data had a header, else by
        position."""
        if t.header and self.layout.get("header"):
            missing = [f for f in self.features if f not in t.names]
            if missing:
                raise CLIError(
                    f"{t.source}: no column {missing[0]!r}; the model needs "
                    f"{list_names(self.features)}")
            fcols = [t.names.index(f) for f in self.features]
            tcol = None
            if all(n in t.names for n in self.target_names):
                tcol = [t.names.index(n) for n in self.target_names]
            return fcols, tcol
        fcols, tcol = self._positions(t.n_columns)
        if fcols is None:
            raise CLIError(self._width_message(t.source, t.n_columns, True))
        return fcols, tcol

    def _target(self, t, tcol):
        """The target column(s) of a Table as the model reads them."""
        if len(tcol) > 1:
            return np.stack([t.numeric(j) for j in tcol], axis=1)
        if self.task == "classification" and t.array is None:
            return t.label_text(tcol[0])      # labels as spelt in the file
        return t.labels(tcol[0])

    def _positions(self, width):
        """(feature columns, target columns or None) of a table of this
        width read by position; (None, None) when the width does not fit."""
        n_in = self.net.layers[0]
        n_cols = self.layout.get("n_columns")
        tidx = self.layout.get("target_columns")
        if width == n_in:
            return list(range(n_in)), None
        if n_cols == width and tidx:
            return [j for j in range(n_cols) if j not in tidx], list(tidx)
        return None, None

    def looks_like_header(self, rows):
        """``--header auto`` for predict and evaluate: the first row is a
        header when it holds every feature name of the model; it is data
        when the fields the model would read as features by position are
        numbers or missing values; otherwise
        :func:`bpcore.cli.data.looks_like_header` decides."""
        first = rows[0]
        if set(self.features) <= set(first):
            return True
        fcols, _ = self._positions(len(first))
        if fcols is not None and not any(is_name(first[j]) for j in fcols):
            return False
        return looks_like_header(rows)

    def _width_message(self, source, width, table):
        n_in = self.net.layers[0]
        extra = ""
        n_cols = self.layout.get("n_columns")
        if table and n_cols and n_cols != n_in:
            extra = f" (or {n_cols} with the target column)"
        return (f"{source}: {width} columns, but the model expects {n_in} "
                f"features{extra}: {list_names(self.features)}")


def load_model(path):
    """bpcore.load with the CLI's error messages; returns (net, ModelInfo)."""
    check_exists(path)
    try:
        net = bpcore.load(path)
    except bpcore.FormatError as e:
        raise CLIError(f"{path}: not a valid bpcore model file ({e})"
                       ) from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read the model ({e.strerror or e})"
                       ) from None
    return net, ModelInfo(net, path)


# -- metrics ----------------------------------------------------------------

def accuracy(labels, predicted):
    return float(np.mean(np.asarray(labels) == np.asarray(predicted)))


def r2_score(y, p):
    """Coefficient of determination, averaged over target columns."""
    y = y.reshape(len(y), -1)
    p = p.reshape(len(p), -1)
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot,
                                                          1.0),
                      np.where(ss_res > 0, 0.0, 1.0))
    return float(np.mean(r2))
