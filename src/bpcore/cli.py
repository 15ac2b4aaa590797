"""The ``bpcore`` command line: train, predict, evaluate and inspect models.

::

    bpcore train data.csv --target species --layers 64,32 --out m.safetensors
    bpcore predict model.safetensors new.csv --out predictions.csv
    bpcore evaluate model.safetensors test.csv
    bpcore info model.safetensors
    bpcore export model.safetensors --format onnx --out model.onnx
    bpcore train                      # no data: the built-in demo

``python -m bpcore`` is the same program.  Data files are CSV (with or
without a header row), a pair of ``.npy`` files (features, targets), a single
2-D ``.npy`` table, or an ``.npz`` archive holding ``X`` and ``y``.

Whether a CSV's first row is a header is detected (``--header auto``; see
:func:`_looks_like_header` and :meth:`ModelInfo.looks_like_header`) or
forced with ``--header yes|no``.  Class labels read from a CSV keep their
spelling (``001`` and ``1`` are two classes, and ``predict`` writes ``001``
back); integer labels from ``.npy``/``.npz`` are written as integers.

Everything ``predict`` needs travels in the model's ``metadata``: the
feature and target names, the class labels, the input standardisation (mean
and standard deviation per feature, as JSON) and a summary of the training
run.  User errors (a missing file, a bad column, a non-numeric cell, a model
that does not fit the data) end with one ``bpcore: error: ...`` line on
stderr and exit status 1 (2 for a malformed command line); set
``BPCORE_DEBUG=1`` to see the traceback instead.
"""
import argparse
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
import zipfile

import numpy as np

import bpcore

__all__ = ["main"]

HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu",
                      "softplus", "identity")
LOSSES = ("cross_entropy", "binary_cross_entropy", "mse", "mae", "huber",
          "poisson")
# losses of a regression (the others classify)
REGRESSION_LOSSES = ("mse", "mae", "huber", "poisson")
OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs")
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1}

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


class CLIError(Exception):
    """A user error: printed as one line, exit status 1, no traceback."""


# ---------------------------------------------------------------------------
# Reading data
# ---------------------------------------------------------------------------

def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


_MISSING_MARKERS = {"", "na", "n/a", "nan", "null", "none", "?", "-", "--"}


def _is_missing(text):
    """A missing-value marker: an empty field, NA, null, ? ..."""
    return text.strip().lower() in _MISSING_MARKERS


def _is_name(text):
    """Text that can only be a name or a label: not a number, not missing."""
    return not _is_number(text) and not _is_missing(text)


class Table:
    """Rows x named columns read from a CSV file or a 2-D ``.npy`` array.

    Cells stay as read (strings for CSV) until a column is asked for as
    numbers (:meth:`numeric`) or as labels (:meth:`labels`), so that an error
    can name the file, the line and the column.
    """

    def __init__(self, source, names, header, columns=None, lines=None,
                 array=None):
        self.source = source
        self.names = list(names)
        self.header = header
        self.columns = columns      # CSV: list of lists of str
        self.lines = lines          # CSV: file line number of each row
        self.array = array          # .npy: 2-D numeric array

    @property
    def n_columns(self):
        return len(self.names)

    @property
    def n_rows(self):
        if self.array is not None:
            return self.array.shape[0]
        return len(self.lines)

    def where(self, row, j):
        if self.array is not None:
            return f"{self.source}: row {row}, column {j}"
        return (f"{self.source}: line {self.lines[row]}, column "
                f"{self.names[j]!r}")

    def numeric(self, j):
        """Column j as finite float64 values, or a CLIError naming the cell."""
        if self.array is not None:
            col = np.asarray(self.array[:, j], dtype=np.float64)
        else:
            cells = self.columns[j]
            try:
                col = np.array(cells, dtype=np.float64)
            except ValueError:
                for i, text in enumerate(cells):
                    if not text:
                        raise CLIError(f"{self.where(i, j)}: empty cell "
                                       f"(missing values are not supported)"
                                       ) from None
                    if _is_missing(text):
                        raise CLIError(f"{self.where(i, j)}: missing value "
                                       f"{text!r} (missing values are not "
                                       f"supported; remove or fill such "
                                       f"rows)") from None
                    if not _is_number(text):
                        raise CLIError(f"{self.where(i, j)}: {text!r} is not "
                                       f"a number") from None
                raise
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.argmax(bad))
            shown = (repr(self.columns[j][i]) if self.array is None
                     else str(col[i]))
            raise CLIError(f"{self.where(i, j)}: {shown} is not a finite "
                           f"number (NaN and infinity are not allowed)")
        return col

    def labels(self, j):
        """Column j as targets: float64 if every cell is a number, else str."""
        if self.array is not None:
            return self.numeric(j)
        cells = self.columns[j]
        if all(_is_number(c) for c in cells):
            return self.numeric(j)
        for i, text in enumerate(cells):
            if not text:
                raise CLIError(f"{self.where(i, j)}: empty target cell")
        return np.array(cells, dtype=str)

    def label_text(self, j):
        """Column j as class labels spelt as in the file (``001`` stays
        ``001``), checked like :meth:`labels`; None for a .npy table."""
        if self.array is not None:
            return None
        self.labels(j)
        return np.array(self.columns[j], dtype=str)

    def features(self, cols):
        """The given columns as one (m, len(cols)) float64 array."""
        if self.array is not None and cols:
            X = np.asarray(self.array[:, cols], dtype=np.float64)
            if np.isfinite(X).all():
                return X
        X = np.empty((self.n_rows, len(cols)))
        for k, j in enumerate(cols):
            X[:, k] = self.numeric(j)
        return X


class Arrays:
    """Features and (maybe) targets given as separate arrays (.npz, .npy)."""

    def __init__(self, source, X, y):
        self.source = source
        self.X = X
        self.y = y
        self.names = [f"x{j}" for j in range(X.shape[1])]
        self.target_names = ("y" if y is None or y.ndim == 1 else
                             [f"y{j}" for j in range(y.shape[1])])


def _check_exists(path):
    if not os.path.exists(path):
        raise CLIError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{path}: is a directory, not a data file")


def read_csv(path, header="auto", model=None):
    """A Table from a CSV (or TSV) file, with or without a header row.

    header: "yes", "no" or "auto" (detect it; with the ModelInfo of the
    model that will read the data, from the names and layout it stored).
    """
    _check_exists(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (UTF-8) CSV file") from None
    if "\0" in text:
        raise CLIError(f"{path}: not a text CSV file (it contains NUL bytes)")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    delimiter = ","
    if "," not in first:
        if "\t" in first:
            delimiter = "\t"
        elif ";" in first:
            delimiter = ";"
    rows, lines = [], []
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    try:
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            rows.append([c.strip() for c in row])
            lines.append(reader.line_num)
    except csv.Error as e:
        raise CLIError(f"{path}: line {reader.line_num}: {e}") from None
    if not rows:
        raise CLIError(f"{path}: the file is empty")
    width = len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise CLIError(f"{path}: line {line} has {len(row)} fields, "
                           f"expected {width} like the first line")
    if header == "auto":
        header = (_looks_like_header(rows) if model is None
                  else model.looks_like_header(rows))
    else:
        header = header == "yes"
    if header:
        names = rows[0]
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise CLIError(f"{path}: a header line but no data rows")
        seen = set()
        for j, name in enumerate(names):
            if not name:
                raise CLIError(f"{path}: header column {j} has no name")
            if name in seen:
                raise CLIError(f"{path}: the header names column {name!r} "
                               f"twice")
            seen.add(name)
    else:
        names = [f"col{j}" for j in range(width)]
    columns = [list(c) for c in zip(*rows)]
    return Table(path, names, header, columns=columns, lines=lines)


def _looks_like_header(rows):
    """Whether the first of these CSV rows is a header (``--header auto``).

    The first row is a header when one of its fields is a name (neither a
    number nor a missing-value marker such as NA or an empty field) and, in
    that column, either another row (of the next 50) holds a number, or the
    other rows hold repeated values (class labels) among which the first
    row's field never appears (``label`` above ``cat, dog, cat``).  A lone
    row is a header if it has a name.
    """
    first = rows[0]
    name_cols = [j for j, c in enumerate(first) if _is_name(c)]
    if not name_cols or len(rows) == 1:
        return bool(name_cols)
    for j in name_cols:
        column = [r[j] for r in rows[1:]]
        if any(_is_number(c) for c in column[:50]):
            return True
        values = set(column)
        if first[j] not in values and len(values) < len(column):
            return True
    return False


def _load_npy(path):
    _check_exists(path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CLIError(f"{path}: cannot read it as a numpy file ({e})"
                       ) from None


def _check_array(arr, path, what, labels=False):
    """A numeric (or, for labels, string) array with finite values."""
    kinds = "biuf" + ("US" if labels else "")
    if arr.dtype.kind not in kinds:
        raise CLIError(f"{path}: {what} holds {arr.dtype} values; expected "
                       f"numbers" + (" or text labels" if labels else ""))
    if arr.ndim == 0 or arr.ndim > 2:
        raise CLIError(f"{path}: {what} must be 1-D or 2-D, got shape "
                       f"{arr.shape}")
    if arr.shape[0] == 0:
        raise CLIError(f"{path}: {what} has no rows")
    if arr.dtype.kind in "US":
        return arr.astype(str)
    arr = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = np.unravel_index(int(np.argmax(bad)), arr.shape)
        raise CLIError(f"{path}: {what}[{', '.join(map(str, idx))}] is "
                       f"{arr[idx]} (NaN and infinity are not allowed)")
    return arr


def _pair_path(path):
    """For X.npy / train_X.npy / X_train.npy: the matching y file, if any."""
    folder, name = os.path.split(path)
    stem = name[:-4]
    for a, b in (("X", "y"), ("x", "y"), ("X", "Y")):
        k = stem.rfind(a)
        if k >= 0:
            cand = os.path.join(folder, stem[:k] + b + stem[k + 1:] + ".npy")
            if os.path.exists(cand) and os.path.abspath(cand) != \
                    os.path.abspath(path):
                return cand
    return None


def read_data(paths, want_target, header="auto", model=None):
    """A Table or Arrays from the DATA arguments.

    ``want_target``: look for the target file of a lone ``X.npy`` (train,
    evaluate); predict does not need one.  ``header`` and ``model``: see
    :func:`read_csv`.
    """
    if len(paths) > 2:
        raise CLIError(f"expected one data file or an X.npy y.npy pair, got "
                       f"{len(paths)} files")
    first = paths[0]
    ext = os.path.splitext(first)[1].lower()
    if len(paths) == 2:
        if ext != ".npy" or not paths[1].lower().endswith(".npy"):
            raise CLIError("two data files must be an X.npy y.npy pair")
        return _arrays(first, _load_npy(first), _load_npy(paths[1]),
                       paths[1])
    if ext == ".npz":
        _check_exists(first)
        try:
            with np.load(first, allow_pickle=False) as z:
                keys = list(z.files)
                xk = next((k for k in ("X", "x") if k in keys), None)
                yk = next((k for k in ("y", "Y") if k in keys), None)
                if xk is None:
                    raise CLIError(f"{first}: no array named 'X' (it holds: "
                                   f"{', '.join(keys) or 'nothing'})")
                X = z[xk]
                y = z[yk] if yk is not None else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise CLIError(f"{first}: cannot read it as an .npz archive "
                           f"({e})") from None
        return _arrays(first, X, y, f"{first}['y']")
    if ext == ".npy":
        arr = _load_npy(first)
        pair = _pair_path(first) if want_target else None
        if pair is not None:
            return _arrays(first, arr, _load_npy(pair), pair)
        arr = _check_array(arr, first, "the array")
        if arr.ndim != 2:
            raise CLIError(f"{first}: a single .npy file must be a 2-D table "
                           f"(rows x columns); for features and targets give "
                           f"X.npy y.npy")
        return Table(first, [f"col{j}" for j in range(arr.shape[1])], False,
                     array=arr)
    return read_csv(first, header, model)


def _arrays(path, X, y, ypath):
    X = _check_array(X, path, "X")
    if X.ndim == 1:
        X = X.reshape(-1, 1)
    if y is not None:
        y = _check_array(y, ypath, "y", labels=True)
        if y.shape[0] != X.shape[0]:
            raise CLIError(f"{path}: X has {X.shape[0]} rows but y has "
                           f"{y.shape[0]}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
    return Arrays(path, X, y)


# ---------------------------------------------------------------------------
# Targets, scaling and what a model remembers
# ---------------------------------------------------------------------------

def _canonical_label(v):
    """A numeric label as one string: 1, 1.0 and '01' are all '1'."""
    try:
        f = float(v)
    except ValueError:
        return str(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _label_strings(y):
    """Class labels as strings: text as it is, numbers canonical."""
    if y.dtype.kind in "US":
        return np.array([str(v) for v in y], dtype=object)
    return np.array([_canonical_label(v) for v in y.tolist()], dtype=object)


def _sort_labels(labels):
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
            if s.lower() not in _MISSING_MARKERS:
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


class ModelInfo:
    """What the CLI stored in a model's metadata, with defaults for models
    saved from Python without it."""

    def __init__(self, net, path="model"):
        self.net = net
        md = net.metadata
        n_in, n_out = net.layers[0], net.layers[-1]

        def js(key, default):
            if key not in md:
                return default
            try:
                return json.loads(md[key])
            except (ValueError, TypeError):
                raise CLIError(f"{path}: metadata {key!r} is not valid JSON"
                               ) from None

        def bad(key):
            return CLIError(f"{path}: metadata {key!r} has the wrong form "
                            f"for a bpcore command-line model")

        def strings(key, default):
            v = js(key, default)
            if not isinstance(v, list) or not all(
                    isinstance(c, (str, int, float)) for c in v):
                raise bad(key)
            return [str(c) for c in v]

        def numbers(key, n):
            v = js(key, [0.0 if key in (META_X_MEAN, META_Y_MEAN) else 1.0]
                   * n)
            try:
                a = np.asarray(v, np.float64)
            except (TypeError, ValueError):
                raise bad(key) from None
            if a.ndim != 1 or not np.isfinite(a).all():
                raise bad(key)
            return a

        def mapping(key):
            v = js(key, {})
            if not isinstance(v, dict):
                raise bad(key)
            return v

        self.task = md.get(META_TASK) or (
            "regression" if net.loss == "mse" else "classification")
        if self.task not in ("classification", "regression"):
            raise bad(META_TASK)
        self.features = strings(META_FEATURES,
                                [f"x{j}" for j in range(n_in)])
        target = md.get(META_TARGET, "y")
        if target.startswith("["):
            target = strings(META_TARGET, ["y"])
        self.target = target
        if self.task == "classification":
            default = [str(k) for k in range(max(2, n_out))]
            self.classes = strings(META_CLASSES, default)
        else:
            self.classes = None
        self.x_mean = numbers(META_X_MEAN, n_in)
        self.x_std = numbers(META_X_STD, n_in)
        self.y_mean = numbers(META_Y_MEAN, n_out)
        self.y_std = numbers(META_Y_STD, n_out)
        self.layout = mapping(META_LAYOUT)
        n_cols = self.layout.get("n_columns")
        tidx = self.layout.get("target_columns")
        if (n_cols is not None and type(n_cols) is not int) or (
                tidx is not None and not (isinstance(tidx, list) and all(
                    type(j) is int for j in tidx))):
            raise bad(META_LAYOUT)
        self.summary = mapping(META_SUMMARY)
        for key in ("seconds", "samples_per_second"):
            if not isinstance(self.summary.get(key, 0), (int, float)):
                raise bad(META_SUMMARY)
        ok = (len(self.features) == n_in and self.x_mean.shape == (n_in,)
              and self.x_std.shape == (n_in,))
        if self.task == "classification":
            k = len(self.classes)
            ok = ok and (n_out == k or (n_out == 1 and k == 2))
        else:
            ok = ok and self.y_mean.shape == self.y_std.shape == (n_out,)
        if not ok:
            raise CLIError(f"{path}: the model's metadata does not match its "
                           f"{n_in} inputs and {n_out} outputs")

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
            by_number.setdefault(_canonical_label(c), []).append(k)
        found = {}
        codes = np.empty(len(y), dtype=np.int64)
        for i, s in enumerate(_label_strings(y)):
            if s not in found:
                same = by_number.get(_canonical_label(s), [])
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

    def select(self, data, need_target):
        """(X, y or None) from DATA laid out as this model expects."""
        n_in = self.net.layers[0]
        if isinstance(data, Arrays):
            if data.X.shape[1] != n_in:
                raise CLIError(self._width_message(data.source,
                                                   data.X.shape[1], False))
            if need_target and data.y is None:
                raise CLIError(f"{data.source}: no targets (an .npz needs an "
                               f"array 'y'; .npy features need y.npy)")
            return data.X, data.y
        t = data
        tcol = None
        if t.header and self.layout.get("header"):
            missing = [f for f in self.features if f not in t.names]
            if missing:
                raise CLIError(
                    f"{t.source}: no column {missing[0]!r}; the model needs "
                    f"{_names(self.features)}")
            fcols = [t.names.index(f) for f in self.features]
            tnames = self.target_names
            if all(n in t.names for n in tnames):
                tcol = [t.names.index(n) for n in tnames]
        else:
            fcols, tcol = self._positions(t.n_columns)
            if fcols is None:
                raise CLIError(self._width_message(t.source, t.n_columns,
                                                   True))
        X = t.features(fcols)
        y = None
        if tcol is not None:
            if len(tcol) > 1:
                y = np.stack([t.numeric(j) for j in tcol], axis=1)
            elif self.task == "classification" and t.array is None:
                y = t.label_text(tcol[0])      # labels as spelt in the file
            else:
                y = t.labels(tcol[0])
        if need_target and y is None:
            raise CLIError(f"{t.source}: no target column "
                           f"{_names(self.target_names)} to evaluate against")
        return X, y

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
        numbers or missing values; otherwise :func:`_looks_like_header`
        decides."""
        first = rows[0]
        if set(self.features) <= set(first):
            return True
        fcols, _ = self._positions(len(first))
        if fcols is not None and not any(_is_name(first[j]) for j in fcols):
            return False
        return _looks_like_header(rows)

    def _width_message(self, source, width, table):
        n_in = self.net.layers[0]
        extra = ""
        n_cols = self.layout.get("n_columns")
        if table and n_cols and n_cols != n_in:
            extra = f" (or {n_cols} with the target column)"
        return (f"{source}: {width} columns, but the model expects {n_in} "
                f"features{extra}: {_names(self.features)}")


def _names(names, limit=8):
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit - 2]) + f", ... , {names[-1]}"


def load_model(path):
    """bpcore.load with the CLI's error messages."""
    _check_exists(path)
    try:
        net = bpcore.load(path)
    except bpcore.FormatError as e:
        raise CLIError(f"{path}: not a valid bpcore model file ({e})"
                       ) from None
    except OSError as e:
        raise CLIError(f"{path}: cannot read the model ({e.strerror or e})"
                       ) from None
    return net, ModelInfo(net, path)


# ---------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------

def _parse_layers(text):
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "none", "0"):
        return []
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise CLIError(f"--layers: expected hidden layer sizes like "
                           f"64,32 (positive integers), got {text!r}")
        sizes.append(int(part))
    return sizes


def _check_plot_available(path):
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed: "
                       "pip install matplotlib (or pip install 'bpcore[plot]')"
                       ) from None


def _select_target(table, target):
    """Column indices of the target in a Table (--target COL|LAST|index)."""
    spec = "LAST" if target is None else target.strip()
    if spec in table.names:
        return table.names.index(spec)
    if spec.upper() == "LAST":
        if table.n_columns < 2:
            raise CLIError(f"{table.source}: only one column; training needs "
                           f"at least one feature and the target")
        return table.n_columns - 1
    try:
        j = int(spec)
    except ValueError:
        raise CLIError(f"--target {spec!r}: no such column in {table.source}"
                       f" (columns: {_names(table.names)})") from None
    if not -table.n_columns <= j < table.n_columns:
        raise CLIError(f"--target {j}: {table.source} has {table.n_columns} "
                       f"columns (0 to {table.n_columns - 1})")
    return j % table.n_columns


class _EpochReport:
    """The per-epoch callback: validation metric, progress bar, log lines."""

    def __init__(self, net, info, epochs, Xv, yv, metric_name, out,
                 threads=None):
        self.net, self.info, self.epochs = net, info, epochs
        self.threads = threads
        self.Xv, self.yv, self.metric_name = Xv, yv, metric_name
        self.out = out
        self.metric = []
        self.every = max(1, math.ceil(epochs / 20))
        self.bar = None
        self.plain = False      # the fallback bar, drawn on a terminal only
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=epochs, unit="epoch", desc="training",
                            leave=False, disable=None, file=sys.stderr)
        except ImportError:
            self.plain = sys.stderr.isatty()

    def _write(self, line):
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=self.out)
        else:
            if self.plain:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
            print(line, file=self.out, flush=True)

    def _draw(self, e, text):
        """A one-line bar on stderr when tqdm is not installed."""
        done = int(30 * e / self.epochs)
        print(f"\r\033[Ktraining [{'#' * done}{'.' * (30 - done)}] "
              f"{e}/{self.epochs} {text}", end="", file=sys.stderr,
              flush=True)

    def __call__(self, epoch, logs):
        pred, _ = self.info.decode(self.net.predict(
            self.Xv, n_threads=self.threads))
        if self.info.task == "classification":
            value = accuracy(self.yv, pred)
        else:
            value = r2_score(self.yv, pred)
        self.metric.append(value)
        text = f"loss {logs['loss']:.4f}"
        if logs.get("val_loss") is not None:
            text += f"  val_loss {logs['val_loss']:.4f}"
        text += f"  {self.metric_name} {value:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        e = epoch + 1
        if e == 1 or e % self.every == 0 or e == self.epochs:
            self._write(f"  epoch {e:>{len(str(self.epochs))}}/{self.epochs}"
                        f"  {text}")
        if self.plain:
            self._draw(e, text)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.plain:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def train_model(X, y, *, feature_names, target_name, layout, source,
                layers=None, activation="relu", loss=None, epochs=50,
                batch_size=32, optimizer="adam", lr=None, val_split=0.2,
                seed=0, threads=None, out=None, label_text=None,
                huber_delta=1.0, plateau=None, csv_log=None,
                checkpoint=None, dropout=0.0, clip_norm=None,
                comm=None):
    """Standardise, split, build, fit and summarise; returns (net, summary).

    comm (``--mpi``): every rank has read the same data and makes the same
    split and scaling; each trains data-parallel on its share of the
    training and validation rows (contiguous blocks, rank-major).

    Shared by ``bpcore train DATA`` and the demo.  out: default stdout.
    optimizer "lbfgs": full-batch L-BFGS, epochs its iteration limit.
    plateau: the patience of a ReduceLROnPlateau (factor 0.1) on the rate;
    csv_log, checkpoint: paths for bpcore.callbacks' CSVLogger and
    ModelCheckpoint (best val_loss, or loss without a validation split).
    label_text: the target as spelt in a CSV; the class labels if the
    task is classification (so ``001`` stays ``001``).
    """
    out = sys.stdout if out is None else out
    m = X.shape[0]
    task, loss = choose_task(y, loss)
    if task == "classification" and label_text is not None:
        y = label_text
    rng = np.random.default_rng(seed)
    order = rng.permutation(m)
    n_val = int(round(m * val_split)) if val_split > 0 else 0
    if val_split > 0 and n_val == 0:
        n_val = 1
    if m - n_val < 1:
        raise CLIError(f"{source}: {m} rows leave no training data after "
                       f"--val-split {val_split}")
    tr, va = np.sort(order[n_val:]), np.sort(order[:n_val])

    md = {META_TASK: task, META_FEATURES: json.dumps(list(feature_names)),
          META_TARGET: (target_name if isinstance(target_name, str)
                        else json.dumps(list(target_name))),
          META_LAYOUT: json.dumps(layout)}
    mean = X[tr].mean(axis=0)
    std = X[tr].std(axis=0)
    std[std == 0] = 1.0
    md[META_X_MEAN] = json.dumps(mean.tolist())
    md[META_X_STD] = json.dumps(std.tolist())

    if task == "classification":
        strings = _label_strings(y)
        classes = _sort_labels(set(strings.tolist()))
        if len(classes) < 2:
            raise CLIError(f"{source}: the target has a single class "
                           f"({classes[0]!r}); nothing to learn")
        md[META_CLASSES] = json.dumps(classes)
        n_out = 1 if (loss == "binary_cross_entropy"
                      and len(classes) == 2) else len(classes)
        output = "softmax" if loss == "cross_entropy" else "sigmoid"
        metric_name = "accuracy"
    else:
        Y = y.reshape(m, -1).astype(np.float64)
        y_mean = Y[tr].mean(axis=0)
        y_std = Y[tr].std(axis=0)
        y_std[y_std == 0] = 1.0
        if loss == "poisson":
            # counts keep their scale: the network's output is the log rate
            if Y.size and Y.min() < 0:
                raise CLIError(f"{source}: --loss poisson needs targets >= 0 "
                               f"(counts or rates); the smallest is "
                               f"{Y.min():g}")
            y_mean, y_std = np.zeros_like(y_mean), np.ones_like(y_std)
        md[META_Y_MEAN] = json.dumps(y_mean.tolist())
        md[META_Y_STD] = json.dumps(y_std.tolist())
        n_out = Y.shape[1]
        output = "identity"
        metric_name = "R2"
    hidden = [64, 32] if layers is None else layers
    if dropout and not hidden:
        raise CLIError("--dropout needs hidden layers (--layers none has "
                       "none)")
    net = bpcore.Network([X.shape[1]] + hidden + [n_out],
                         activation=activation, output=output, loss=loss,
                         seed=seed, huber_delta=huber_delta,
                         dropout=dropout)
    net.metadata.update(md)
    info = ModelInfo(net, source)
    Xs = info.scale(X)
    T = info.encode(y, source)
    if optimizer == "lbfgs":
        if lr is not None or plateau is not None:
            raise CLIError("--lr and --plateau do not apply to --optimizer "
                           "lbfgs (it has no learning rate)")
        if clip_norm is not None:
            raise CLIError("--clip-norm does not apply to --optimizer lbfgs")
        opt = bpcore.LBFGS(max_iter=epochs)
    else:
        lr = DEFAULT_LR[optimizer] if lr is None else lr
        rate = lr if plateau is None else bpcore.schedules.ReduceLROnPlateau(
            lr, patience=plateau)
        opt = {"adam": bpcore.Adam, "adamw": bpcore.AdamW,
               "sgd": bpcore.SGD}[optimizer](lr=rate,
                                             clip_norm=clip_norm)
    extra_callbacks = []
    if csv_log is not None:
        extra_callbacks.append(bpcore.callbacks.CSVLogger(csv_log))
    if checkpoint is not None:
        extra_callbacks.append(bpcore.callbacks.ModelCheckpoint(checkpoint))

    if task == "classification":
        counts = ", ".join(f"{c}" for c in classes[:10])
        more = "" if len(classes) <= 10 else f", ... ({len(classes)} in all)"
        what = f"classification into {len(classes)} classes ({counts}{more})"
    else:
        what = "regression" + (f" of {n_out} targets" if n_out > 1 else "")
    print(f"data: {m} rows from {source}: {X.shape[1]} features -> "
          f"{_describe_target(target_name)}; task: {what}", file=out)
    print(f"network: {_architecture(net)}, loss {loss}, {net.n_params:,} "
          f"parameters", file=out)
    split = (f"validating on {len(va)}" if n_val else "no validation split")
    print(f"training on {len(tr)} rows, {split}; {epochs} "
          f"epochs, batch size {batch_size or 'full'}, {optimizer}"
          f"{'' if lr is None else f' lr {lr:g}'}, "
          f"seed {seed}; inputs standardised (mean/std kept in the model)",
          file=out)

    vX, vy = (X[va], y[va]) if n_val else (X[tr], y[tr])
    metric_prefix = "val_" if n_val else ""
    report = _EpochReport(net, info, epochs, info.scale(vX),
                          _truth(info, vy), metric_prefix + metric_name, out,
                          threads)
    validation = (Xs[va], T[va]) if n_val else None
    fit_rows, mpi = tr, {}
    if comm is not None:  # this rank's share of the rows
        size, rank = comm.Get_size(), comm.Get_rank()
        fit_rows = np.array_split(tr, size)[rank]
        if n_val:
            mine = np.array_split(va, size)[rank]
            validation = (Xs[mine], T[mine]) if len(mine) else None
        mpi = {"comm": comm}
    t0 = time.perf_counter()
    try:
        hist = net.fit(Xs[fit_rows], T[fit_rows], epochs=epochs,
                       batch_size=batch_size, optimizer=opt,
                       validation_data=validation,
                       callbacks=[report] + extra_callbacks,
                       n_threads=threads, **mpi)
    finally:
        report.close()
    seconds = time.perf_counter() - t0

    train_pred, _ = info.decode(net.predict(Xs[tr], n_threads=threads))
    summary = {
        "data": os.path.basename(source), "rows": m,
        "train_rows": int(len(tr)), "validation_rows": int(n_val),
        "epochs": hist.epochs_run, "batch_size": batch_size,
        "optimizer": optimizer, "lr": lr, "seed": seed,
        "seconds": round(seconds, 4),
        "samples_per_second": round(hist.epochs_run * len(tr)
                                    / max(seconds, 1e-9)),
        "loss": hist.loss[-1],
        "bpcore_version": bpcore.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    truth_tr = _truth(info, y[tr])
    if task == "classification":
        summary["train_accuracy"] = accuracy(truth_tr, train_pred)
    else:
        summary["train_R2"] = r2_score(truth_tr, train_pred)
    if n_val:
        summary["val_loss"] = hist.val_loss[-1]
        summary[f"val_{metric_name}"] = report.metric[-1]
    summary["history"] = {"loss": hist.loss, "val_loss": hist.val_loss,
                          metric_prefix + metric_name: report.metric}
    stored = {k: v for k, v in summary.items() if k != "history"}
    net.metadata[META_SUMMARY] = json.dumps(stored)

    rate = summary["samples_per_second"]
    print(f"done: {hist.epochs_run} epochs in {seconds:.2f} s "
          f"({rate:,} samples/s)", file=out)
    parts = [f"train {metric_name} {summary['train_' + metric_name]:.4f}"]
    if n_val:
        parts.append(f"validation {metric_name} "
                     f"{summary['val_' + metric_name]:.4f}")
    print("result: " + ", ".join(parts), file=out)
    return net, summary


def _truth(info, y, source="the data"):
    """Targets in the form decode() predicts them (labels or values)."""
    if info.task == "classification":
        classes = np.array(info.classes, dtype=object)
        return classes[info.class_codes(y, source)]
    return y.reshape(len(y), -1).astype(np.float64)


def _describe_target(name):
    if isinstance(name, str):
        return f"target {name!r}"
    return f"targets {_names(name)}"


def _architecture(net):
    parts = [str(net.layers[0])]
    for n, act in zip(net.layers[1:], net.activation):
        parts.append(f"{n} ({act})")
    return " -> ".join(parts)


def _check_out_folder(path):
    """Fail before training, not after, when --out cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"--out {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise CLIError(f"--out {path}: is a directory; give a file name")


def _save(net, path, out):
    _check_out_folder(path)
    try:
        net.save(path)
    except OSError as e:
        raise CLIError(f"cannot write the model to {path}: "
                       f"{e.strerror or e}") from None
    print(f"saved the model to {os.path.abspath(path)}", file=out)


def write_plot(path, history, metric_name, title):
    """Learning curves: loss (and validation loss), and the metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, history["loss"], label="training loss")
    if history.get("val_loss"):
        a.plot(epochs, history["val_loss"], label="validation loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_yscale("log")
    a.legend()
    b.plot(epochs, history[metric_name], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel(metric_name)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise CLIError(f"--plot {path}: cannot write it ({e.strerror or e})"
                       ) from None
    finally:
        plt.close(fig)


def cmd_train(args):
    if not args.data:
        return run_demo(args)
    layers = _parse_layers(args.layers)
    _check_plot_available(args.plot)
    data = read_data(args.data, want_target=True, header=args.header)
    label_text = None
    if isinstance(data, Arrays):
        if args.target is not None:
            raise CLIError(f"--target selects a column of a CSV or 2-D .npy "
                           f"table; {data.source} gives its targets "
                           f"separately")
        if data.y is None:
            raise CLIError(f"{data.source}: no targets (an .npz needs an "
                           f"array 'y'; for X.npy give X.npy y.npy)")
        X, y = data.X, data.y
        features, target = data.names, data.target_names
        layout = {"source": "arrays", "header": False,
                  "n_columns": X.shape[1]}
    else:
        j = _select_target(data, args.target)
        fcols = [k for k in range(data.n_columns) if k != j]
        if not fcols:
            raise CLIError(f"{data.source}: no feature columns besides the "
                           f"target {data.names[j]!r}")
        X = data.features(fcols)
        y = data.labels(j)
        label_text = data.label_text(j)
        features, target = [data.names[k] for k in fcols], data.names[j]
        layout = {"source": "table", "header": data.header,
                  "n_columns": data.n_columns, "target_columns": [j]}
    out_path = args.out or "model.safetensors"
    _check_out_folder(out_path)
    comm, quiet = None, contextlib.nullcontext()
    if getattr(args, "mpi", False):
        try:
            from mpi4py import MPI
        except ImportError:
            raise CLIError("--mpi needs mpi4py and an MPI: pip install "
                           "'bpcore[mpi]', then run under mpiexec -n R") \
                from None
        comm = MPI.COMM_WORLD
        if comm.Get_rank() != 0:  # rank 0 prints and saves
            quiet = _Quiet()
    with quiet:
        net, summary = train_model(
            X, y, feature_names=features, target_name=target, layout=layout,
            source=data.source, layers=layers, activation=args.activation,
            loss=args.loss, epochs=args.epochs or 50,
            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
            val_split=0.2 if args.val_split is None else args.val_split,
            seed=args.seed, threads=args.threads, label_text=label_text,
            huber_delta=args.huber_delta, plateau=args.plateau,
            csv_log=args.csv_log, checkpoint=args.checkpoint,
            dropout=args.dropout, clip_norm=args.clip_norm, comm=comm)
    if comm is not None and comm.Get_rank() != 0:
        return 0
    _save(net, out_path, sys.stdout)
    _maybe_plot(args.plot, net, summary)
    return 0


class _Quiet:
    """stdout and stderr to os.devnull (the ranks other than 0)."""

    def __enter__(self):
        self.null = open(os.devnull, "w")
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.null
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.saved
        self.null.close()
        return False


def _maybe_plot(path, net, summary):
    if path is None:
        return
    hist = summary["history"]
    metric = [k for k in hist if k not in ("loss", "val_loss")][0]
    write_plot(path, hist, metric, f"bpcore: {_architecture(net)}")
    print(f"wrote the learning curves to {os.path.abspath(path)}")


# ---------------------------------------------------------------------------
# The demo: `bpcore train` without data
# ---------------------------------------------------------------------------

TUTORIAL_X = np.array([[0.5, 1.0]])
TUTORIAL_Y = np.array([[1.0, 0.0]])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def demo_tutorial(seed, threads, out=None):
    """Part 1: the tutorial's 2-3-2-2 sigmoid network, shown and trained."""
    out = sys.stdout if out is None else out
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p("== Part 1: the tutorial's 2-3-2-2 sigmoid network ==")
    p("Two inputs, hidden layers of 3 and 2 sigmoid neurons, 2 sigmoid "
      "outputs,\nEuclidean loss E = 1/(2m) sum ||y - out||^2, plain "
      "gradient descent on the full batch.")
    net = bpcore.Network([2, 3, 2, 2], activation="sigmoid",
                         output="sigmoid", loss="mse", dtype="float64",
                         seed=seed)
    trace = net.forward(TUTORIAL_X)
    grads = net.backward(TUTORIAL_X, TUTORIAL_Y)
    p(f"One sample i = {TUTORIAL_X[0].tolist()}, target y = "
      f"{TUTORIAL_Y[0].tolist()}, random initial weights:")
    for k in range(1, 4):
        p(f"  layer {k + 1}: net = {_fmt(trace.net[k][0])}  out = "
          f"{_fmt(trace.out[k][0])}  delta = dE/dnet = "
          f"{_fmt(grads.delta[k][0])}")
    # The same numbers from the formulas, as a check anyone can read.
    out_l = [TUTORIAL_X]
    for W, b in zip(net.weights, net.biases):
        out_l.append(_sigmoid(out_l[-1] @ W + b))
    d = (out_l[-1] - TUTORIAL_Y) * out_l[-1] * (1 - out_l[-1])
    deltas = [d]
    for k in (2, 1):
        d = (d @ net.weights[k].T) * out_l[k] * (1 - out_l[k])
        deltas.insert(0, d)
    ok = all(np.allclose(deltas[k - 1], grads.delta[k]) for k in range(1, 4))
    p(f"  (checked against the tutorial's formulas in numpy: "
      f"{'agree' if ok else 'DISAGREE'})")

    # A small generated problem: is the point above the diagonal (output 1),
    # and is it inside the circle of radius 0.6 around the centre (output 2)?
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, size=(400, 2))
    Y = np.stack([X[:, 1] > X[:, 0],
                  ((X - 0.5) ** 2).sum(axis=1) < 0.36 ** 2], axis=1)
    Y = Y.astype(np.float64)
    p("Problem: 400 random points in the unit square; output 1 says 'above "
      "the diagonal', output 2 says 'inside the central circle'.")
    before = net.evaluate(X, Y)
    t0 = time.perf_counter()
    hist = net.fit(X, Y, epochs=3000, batch_size=None,
                   optimizer=bpcore.SGD(lr=2.0, momentum=0.9),
                   n_threads=threads)
    seconds = time.perf_counter() - t0
    acc = (np.round(net.predict(X)) == Y).mean(axis=0)
    p(f"Trained {hist.epochs_run} full-batch epochs in {seconds:.2f} s: "
      f"loss {before:.4f} -> {hist.loss[-1]:.4f}; accuracy per output "
      f"{acc[0]:.3f} and {acc[1]:.3f}.")
    p("")
    return ok


def _fmt(v):
    return "[" + ", ".join(f"{x:+.4f}" for x in v) + "]"


DEMO_CLASSES = ("normal", "worn_bearing", "misaligned", "overheating")


def make_demo_data(seed, m=6000, n_features=20, n_informative=8):
    """A make_classification-style problem in numpy: 4 classes, each two
    Gaussian clusters on hypercube vertices in 8 informative dimensions,
    plus 4 redundant mixtures and 8 noise features, 2 % labels flipped."""
    rng = np.random.default_rng(seed)
    n_classes, per_class = len(DEMO_CLASSES), 2
    n_clusters = n_classes * per_class
    vertices = rng.choice([-1.0, 1.0], size=(n_clusters, n_informative)) * 1.2
    cluster = rng.integers(0, n_clusters, size=m)
    labels = cluster % n_classes
    mixing = [rng.normal(size=(n_informative, n_informative)) * 0.5
              + np.eye(n_informative) for _ in range(n_clusters)]
    Xi = rng.normal(size=(m, n_informative))
    for c in range(n_clusters):
        rows = cluster == c
        Xi[rows] = Xi[rows] @ mixing[c] + vertices[c]
    n_red = 4
    redundant = Xi @ rng.normal(size=(n_informative, n_red))
    noise = rng.normal(size=(m, n_features - n_informative - n_red))
    X = np.hstack([Xi, redundant, noise])
    X = X * rng.uniform(0.5, 20.0, size=n_features) + rng.normal(
        0, 10, size=n_features)
    flip = rng.random(m) < 0.02
    labels[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    y = np.array(DEMO_CLASSES, dtype=str)[labels]
    names = [f"sensor_{j:02d}" for j in range(n_features)]
    return X, y, names


def run_demo(args):
    """`bpcore train` with no data."""
    if args.target is not None or args.loss is not None:
        raise CLIError("--target and --loss need a DATA file; without data, "
                       "train runs the built-in demo")
    layers = _parse_layers(args.layers)
    _check_plot_available(args.plot)
    out_path = args.out or "bpcore-demo.safetensors"
    csv_path = os.path.splitext(out_path)[0] + ".csv"
    if os.path.abspath(csv_path) == os.path.abspath(out_path):
        raise CLIError(f"--out {out_path}: the demo writes its data to "
                       f"{csv_path}; give the model another name, e.g. "
                       f"{os.path.splitext(out_path)[0]}.safetensors")
    _check_out_folder(out_path)
    print("bpcore demo (no DATA given): two small trainings, a few seconds "
          "in all.\n")
    ok = demo_tutorial(args.seed, args.threads)

    print("== Part 2: a realistic classifier ==")
    X, y, names = make_demo_data(args.seed)
    print("Generated a tabular problem like scikit-learn's "
          "make_classification: 6000 machines,\n20 sensor readings each "
          "(8 informative, 4 redundant, 8 noise, very different scales),\n"
          f"4 states to predict ({', '.join(DEMO_CLASSES)}), 2 % of the "
          "labels flipped.")
    _write_csv(csv_path, names + ["state"],
               [list(map(_num, row)) + [lab] for row, lab in zip(X, y)])
    print(f"wrote the data to {os.path.abspath(csv_path)}")
    layout = {"source": "table", "header": True, "n_columns": len(names) + 1,
              "target_columns": [len(names)]}
    net, summary = train_model(
        X, y, feature_names=names, target_name="state", layout=layout,
        source=os.path.basename(csv_path), layers=layers,
        activation=args.activation, loss=None, epochs=args.epochs or 15,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        val_split=0.2 if args.val_split is None else args.val_split,
        seed=args.seed, threads=args.threads, plateau=args.plateau,
        csv_log=args.csv_log, checkpoint=args.checkpoint,
        dropout=args.dropout, clip_norm=args.clip_norm)
    _save(net, out_path, sys.stdout)
    _maybe_plot(args.plot, net, summary)
    prog = "bpcore"
    print("\nNext, try:")
    print(f"  {prog} info {out_path}")
    print(f"  {prog} evaluate {out_path} {csv_path}")
    print(f"  {prog} predict {out_path} {csv_path} --out predictions.csv")
    print(f"  {prog} train {csv_path} --target state --epochs 30 "
          f"--out my-model.safetensors")
    return 0 if ok else 1


def _num(v):
    return format(float(v), ".10g")


def _write_csv(path, header, rows, stream=None):
    try:
        f = stream or open(path, "w", newline="", encoding="utf-8")
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    finally:
        if stream is None:
            f.close()


# ---------------------------------------------------------------------------
# predict, evaluate, info
# ---------------------------------------------------------------------------

def cmd_predict(args):
    net, info = load_model(args.model)
    data = read_data(args.data, want_target=False, header=args.header,
                     model=info)
    X, _ = info.select(data, need_target=False)
    pred, proba = info.decode(net.predict(info.scale(X),
                                          n_threads=args.threads))
    if info.task == "classification":
        header = [info.target_names[0]] + [f"p({c})" for c in info.classes]
        rows = ([lab] + [format(v, ".6g") for v in pr]
                for lab, pr in zip(pred, proba))
    else:
        header = info.target_names
        rows = ([_num(v) for v in row] for row in pred)
    if args.out:
        _write_csv(args.out, header, rows)
        print(f"wrote {X.shape[0]} predictions to "
              f"{os.path.abspath(args.out)}", file=sys.stderr)
    else:
        _write_csv("<stdout>", header, rows, stream=sys.stdout)
    return 0


def cmd_evaluate(args):
    net, info = load_model(args.model)
    data = read_data(args.data, want_target=True, header=args.header,
                     model=info)
    X, y = info.select(data, need_target=True)
    source = getattr(data, "source", args.data[0])
    Xs = info.scale(X)
    T = info.encode(y, source)
    loss = net.evaluate(Xs, T, n_threads=args.threads)
    pred, _ = info.decode(net.predict(Xs, n_threads=args.threads))
    truth = _truth(info, y, source)
    print(f"model:    {args.model}")
    print(f"data:     {source}, {X.shape[0]} rows")
    scaled = " on standardised targets" if info.task == "regression" else ""
    print(f"loss:     {loss:.6g} ({net.loss}{scaled})")
    if info.task == "classification":
        print(f"accuracy: {accuracy(truth, pred):.4f}")
        cls = info.classes
        print("per class (recall):")
        for c in cls:
            rows = truth == c
            if rows.any():
                print(f"  {c}: {accuracy(truth[rows], pred[rows]):.4f} "
                      f"({int(rows.sum())} rows)")
    else:
        err = pred - truth
        print(f"R2:       {r2_score(truth, pred):.4f}")
        print(f"RMSE:     {float(np.sqrt(np.mean(err ** 2))):.6g}")
        print(f"MAE:      {float(np.mean(np.abs(err))):.6g}")
    return 0


def _file_metadata(path):
    """The safetensors header's metadata (format name, version...)."""
    try:
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception:  # info must not fail on what load() accepted
        return {}


def cmd_info(args):
    net, info = load_model(args.model)
    meta = _file_metadata(args.model)
    size = os.path.getsize(args.model)
    print(f"model:        {args.model} ({size:,} bytes)")
    fmt = "safetensors"
    if meta.get("format"):
        fmt += f", {meta['format']} format"
        if meta.get("format_version"):
            fmt += f" version {meta['format_version']}"
    if meta.get("bpcore_version"):
        fmt += f" (written by bpcore {meta['bpcore_version']})"
    print(f"format:       {fmt}")
    print(f"architecture: {_architecture(net)}")
    print(f"loss:         {net.loss}")
    print(f"parameters:   {net.n_params:,} ({net.dtype.name})")
    if info.task == "classification":
        print(f"task:         classification, {len(info.classes)} classes: "
              f"{_names(info.classes, 12)}")
    else:
        print("task:         regression")
    print(f"features:     {len(info.features)}: {_names(info.features)}")
    print(f"target:       {_names(info.target_names)}")
    if META_X_MEAN in net.metadata:
        print("scaling:      inputs standardised with the training mean/std "
              "(applied by predict)")
    print(f"export:       {', '.join(EXPORT_FORMATS)} (bpcore export MODEL "
          f"--format {'|'.join(EXPORT_FORMATS)} --out PATH)")
    if info.summary:
        s = info.summary
        line = (f"trained:      {s.get('epochs')} epochs on "
                f"{s.get('train_rows')} rows of {s.get('data')} in "
                f"{s.get('seconds', 0):.2f} s "
                f"({s.get('samples_per_second', 0):,} samples/s), "
                f"{s.get('optimizer')} lr {s.get('lr')}, seed {s.get('seed')}")
        print(line)
        metrics = [f"{k} {v:.4f}" for k, v in s.items()
                   if isinstance(v, float) and ("accuracy" in k or "R2" in k
                                                or "loss" in k)]
        if metrics:
            print(f"result:       {', '.join(metrics)}")
        if s.get("date"):
            print(f"date:         {s['date']} (bpcore "
                  f"{s.get('bpcore_version', '?')})")
    others = sorted(k for k in net.metadata if k not in (
        META_TASK, META_FEATURES, META_TARGET, META_CLASSES, META_X_MEAN,
        META_X_STD, META_Y_MEAN, META_Y_STD, META_LAYOUT, META_SUMMARY))
    if others:
        print(f"metadata:     {', '.join(others)}")
    return 0


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------

EXPORT_FORMATS = ("onnx", "c", "torch")


def cmd_export(args):
    """Write MODEL as ONNX, a C99 .h/.c pair or a torch.save'd module."""
    net, info = load_model(args.model)
    from bpcore import export
    out = args.out
    what = "--out" + (" (the prefix of the .h/.c pair)" if args.format == "c"
                      else "")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise CLIError(f"{what} {out}: the folder {folder} does not exist")
    if os.path.isdir(out):
        raise CLIError(f"{what} {out}: is a directory; give a file name")
    scaling = "auto" if not args.no_scaling else False
    try:
        if args.format == "onnx":
            export.to_onnx(net, out, scaling=scaling)
            written = [out]
        elif args.format == "c":
            written = list(export.to_c(net, out, scaling=scaling))
        else:
            import torch
            if scaling and "input_mean" in net.metadata:
                print("bpcore: note: the torch module is the bare network; "
                      "standardise inputs with the model's input_mean/"
                      "input_std first", file=sys.stderr)
            torch.save(export.to_torch(net), out)
            written = [out]
    except ImportError as e:
        need = {"onnx": "onnx (pip install 'bpcore[onnx]')",
                "torch": "PyTorch (pip install torch)"}.get(args.format, "")
        raise CLIError(f"--format {args.format} needs {need}: "
                       f"{e}") from None
    except OSError as e:
        raise CLIError(f"cannot write {out}: {e.strerror or e}") from None
    for path in written:
        print(f"wrote {os.path.abspath(path)}")
    return 0


# ---------------------------------------------------------------------------
# Argument parsing and main
# ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} "
                     f"--help)\n")


def _positive_int(name):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer, got {v}")
        return v
    parse.__name__ = name
    return parse


def _nonnegative_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _batch_size(text):
    if text.lower() in ("full", "none", "all"):
        return None
    return _positive_int("batch size")(text)


def _lr(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, "
                                         f"got {text}")
    return v


def _fraction(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1), got {text}")
    return v


def _seed(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer, got {v}")
    return v


HEADER_HELP = ("is the first CSV row a header? auto (default): yes if a "
               "field is a name (not a number or a missing value like NA) "
               "where the column's other rows hold numbers, or where they "
               "hold repeated labels that never equal it; predict and "
               "evaluate also take a row holding the model's feature names "
               "as a header and a row with numbers where the model reads "
               "features as data")


def _add_header_option(parser):
    parser.add_argument("--header", choices=("auto", "yes", "no"),
                        default="auto", help=HEADER_HELP)


def build_parser():
    """The argparse parser of the ``bpcore`` command."""
    p = _Parser(prog="bpcore", description=(
        "Train and use multilayer perceptrons from the shell. Run "
        "'bpcore train' without data for a demo."))
    p.add_argument("--version", action="version",
                   version=f"bpcore {bpcore.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND",
                           parser_class=_Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a network on a data file "
                       "(or run the demo)", description=(
                           "Train an MLP on DATA: a CSV file (header "
                           "optional), X.npy y.npy, a 2-D .npy table or an "
                           ".npz with X and y. Inputs are standardised and "
                           "the scaling is stored in the model. Without "
                           "DATA, runs the built-in demo."))
    t.add_argument("data", nargs="*", metavar="DATA",
                   help="data file(s); none for the demo")
    t.add_argument("--target", metavar="COL", help="target column: a "
                   "name from the header, a 0-based index, or LAST "
                   "(default)")
    t.add_argument("--layers", metavar="N,N,...", help="hidden layer "
                   "sizes (default 64,32; 'none' for no hidden layer)")
    t.add_argument("--activation", default="relu", metavar="NAME",
                   choices=HIDDEN_ACTIVATIONS, help="hidden activation: "
                   f"{', '.join(HIDDEN_ACTIVATIONS)} (default relu)")
    t.add_argument("--loss", choices=LOSSES, metavar="NAME",
                   help=f"{', '.join(LOSSES)}; default: cross_entropy "
                   "for class labels (text, or up to "
                   f"{MAX_AUTO_CLASSES} integer values), else mse; mae, "
                   "huber and poisson (counts, kept unscaled) are "
                   "regression losses")
    t.add_argument("--huber-delta", type=_lr, default=1.0, metavar="D",
                   help="delta of --loss huber, in standardised target "
                   "units (default 1.0)")
    t.add_argument("--epochs", type=_positive_int("epochs"), metavar="N",
                   help="passes over the data (default 50; demo 15)")
    t.add_argument("--batch-size", type=_batch_size, default=32,
                   metavar="B", help="samples per update (default 32; "
                   "'full' for full batch)")
    t.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                   metavar="NAME", help=f"{', '.join(OPTIMIZERS)} (default "
                   "adam)")
    t.add_argument("--lr", type=_lr, help="learning rate (default 0.001 "
                   "for adam/adamw, 0.1 for sgd)")
    t.add_argument("--plateau", type=_nonnegative_int, metavar="P",
                   help="divide the learning rate by 10 after P epochs "
                   "without improvement of the validation loss "
                   "(ReduceLROnPlateau)")
    t.add_argument("--csv-log", metavar="CSV", help="write "
                   "epoch,loss,val_loss,lr per epoch to this file")
    t.add_argument("--checkpoint", metavar="MODEL", help="save the network "
                   "of the best epoch (lowest validation loss) to this file "
                   "during training")
    t.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                   help="dropout rate of the hidden layers while training, "
                   "in [0, 1) (default 0)")
    t.add_argument("--clip-norm", type=_lr, metavar="C",
                   help="clip the gradient's global L2 norm to C before "
                   "each update (default: no clipping)")
    t.add_argument("--val-split", type=_fraction, metavar="F",
                   help="fraction held out for validation (default 0.2; 0 "
                   "for none)")
    t.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="seed for the weights, the split and the shuffling "
                   "(default 0)")
    t.add_argument("--threads", type=_positive_int("threads"), metavar="T",
                   help="threads (default: OpenMP's, OMP_NUM_THREADS)")
    t.add_argument("--out", metavar="MODEL", help="where to save the model "
                   "(default model.safetensors; demo "
                   "bpcore-demo.safetensors) in the current directory")
    t.add_argument("--mpi", action="store_true",
                   help="train data-parallel over MPI: run as 'mpiexec -n R "
                   "bpcore train DATA --mpi ...' (needs bpcore[mpi]); every "
                   "rank reads the data and trains on its share of the rows; "
                   "rank 0 prints and saves")
    t.add_argument("--plot", metavar="PNG", help="write the learning curves "
                   "to this image (needs matplotlib)")
    _add_header_option(t)
    t.set_defaults(func=cmd_train)

    pr = sub.add_parser("predict", help="predict with a saved model",
                        description=(
                            "Predict for the rows of DATA (with or without "
                            "the target column). Class labels come out as "
                            "in the training data, with one probability "
                            "column per class."))
    pr.add_argument("model", metavar="MODEL")
    pr.add_argument("data", nargs="+", metavar="DATA")
    pr.add_argument("--out", metavar="CSV", help="write here (default: "
                    "stdout)")
    pr.add_argument("--threads", type=_positive_int("threads"), metavar="T")
    _add_header_option(pr)
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="loss and accuracy or R2 of a "
                        "saved model on labelled data")
    ev.add_argument("model", metavar="MODEL")
    ev.add_argument("data", nargs="+", metavar="DATA")
    ev.add_argument("--threads", type=_positive_int("threads"), metavar="T")
    _add_header_option(ev)
    ev.set_defaults(func=cmd_evaluate)

    inf = sub.add_parser("info", help="architecture, parameters and "
                         "training summary of a saved model")
    inf.add_argument("model", metavar="MODEL")
    inf.set_defaults(func=cmd_info)

    exp = sub.add_parser("export", help="write a saved model as ONNX, C "
                         "source or a PyTorch module", description=(
                             "Export MODEL: --format onnx (an .onnx file "
                             "for ONNX Runtime; needs onnx), c (PATH.h and "
                             "PATH.c, plain C99) or torch (torch.save of an "
                             "nn.Sequential; needs PyTorch). ONNX and C "
                             "apply the input scaling stored by 'bpcore "
                             "train', so they read raw inputs and output "
                             "what 'bpcore predict' prints."))
    exp.add_argument("model", metavar="MODEL")
    exp.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                     help="onnx, c or torch")
    exp.add_argument("--out", required=True, metavar="PATH",
                     help="output file (for c: the path prefix of the "
                     ".h/.c pair)")
    exp.add_argument("--no-scaling", action="store_true",
                     help="export the bare network, without the stored "
                     "input/output scaling")
    exp.set_defaults(func=cmd_export)
    return p


class _PipeSafe:
    """stdout that goes quiet when its reader leaves (``| head``), so the
    command still finishes its work (``train`` still saves the model)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.stream = open(os.devnull, "w")
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.stream = open(os.devnull, "w")

    def __getattr__(self, name):
        return getattr(self.stream, name)


def main(argv=None):
    """Run the ``bpcore`` command; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 for a user error (one line on stderr), 2 for a
        malformed command line, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    debug = bool(os.environ.get("BPCORE_DEBUG"))
    saved_stdout = sys.stdout
    if not isinstance(sys.stdout, _PipeSafe):
        sys.stdout = _PipeSafe(sys.stdout)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("bpcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `bpcore predict ... | head`: the reader left; not an error.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except (CLIError, bpcore.DivergenceError, bpcore.FormatError,
            ValueError, OSError, MemoryError) as e:
        if debug:
            raise
        print(f"bpcore: error: {_one_line(e)}", file=sys.stderr)
        return 1
    finally:
        # put the caller's stdout back unless its reader left (then the
        # interpreter's final flush would fail on it)
        if isinstance(sys.stdout, _PipeSafe) and \
                sys.stdout.stream is saved_stdout:
            sys.stdout = saved_stdout


def _one_line(e):
    if isinstance(e, bpcore.DivergenceError):
        text = f"training diverged ({e}); try a smaller --lr"
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename or ''}: {e.strerror}".lstrip(": ")
    elif isinstance(e, MemoryError):
        text = "out of memory"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
