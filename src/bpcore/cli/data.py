"""Reading the DATA arguments (CSV, ``.npy``, ``.npz``) and writing CSV.

A CSV becomes a :class:`Table` whose cells stay text until a column is
asked for, so that an error names the file, the line and the column;
separate feature and target arrays become :class:`Arrays`.
"""
import csv
import io
import os
import zipfile

import numpy as np

from bpcore.cli.common import CLIError, check_exists

# Fields read as a missing value (compared in lower case, stripped).
MISSING_MARKERS = {"", "na", "n/a", "nan", "null", "none", "?", "-", "--"}


def is_number(text):
    """Whether float() reads text."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_missing(text):
    """A missing-value marker: an empty field, NA, null, ? ..."""
    return text.strip().lower() in MISSING_MARKERS


def is_name(text):
    """Text that can only be a name or a label: not a number, not missing."""
    return not is_number(text) and not is_missing(text)


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
        """The cell (row, j) as a message names it."""
        if self.array is not None:
            return f"{self.source}: row {row}, column {j}"
        return (f"{self.source}: line {self.lines[row]}, column "
                f"{self.names[j]!r}")

    def numeric(self, j):
        """Column j as finite float64 values, or a CLIError naming the cell."""
        if self.array is not None:
            col = np.asarray(self.array[:, j], dtype=np.float64)
        else:
            try:
                col = np.array(self.columns[j], dtype=np.float64)
            except ValueError:
                self._refuse_text(j)
                raise
        bad = ~np.isfinite(col)
        if bad.any():
            i = int(np.argmax(bad))
            shown = (repr(self.columns[j][i]) if self.array is None
                     else str(col[i]))
            raise CLIError(f"{self.where(i, j)}: {shown} is not a finite "
                           f"number (NaN and infinity are not allowed)")
        return col

    def _refuse_text(self, j):
        """The CLIError for the first cell of CSV column j that is not a
        number: empty, a missing-value marker or text."""
        for i, text in enumerate(self.columns[j]):
            if not text:
                raise CLIError(f"{self.where(i, j)}: empty cell (missing "
                               f"values are not supported)") from None
            if is_missing(text):
                raise CLIError(f"{self.where(i, j)}: missing value {text!r} "
                               f"(missing values are not supported; remove "
                               f"or fill such rows)") from None
            if not is_number(text):
                raise CLIError(f"{self.where(i, j)}: {text!r} is not a "
                               f"number") from None

    def labels(self, j):
        """Column j as targets: float64 if every cell is a number, else str."""
        if self.array is not None:
            return self.numeric(j)
        cells = self.columns[j]
        if all(is_number(c) for c in cells):
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


# -- CSV --------------------------------------------------------------------

def read_csv(path, header="auto", model=None):
    """A Table from a CSV (or TSV) file, with or without a header row.

    header: "yes", "no" or "auto" (detect it; with the ModelInfo of the
    model that will read the data, from the names and layout it stored).
    """
    text = _read_text(path)
    rows, lines = _parse_rows(path, text, _delimiter(text))
    if header == "auto":
        header = (looks_like_header(rows) if model is None
                  else model.looks_like_header(rows))
    else:
        header = header == "yes"
    if header:
        names = _header_names(path, rows[0])
        rows, lines = rows[1:], lines[1:]
        if not rows:
            raise CLIError(f"{path}: a header line but no data rows")
    else:
        names = [f"col{j}" for j in range(len(rows[0]))]
    columns = [list(c) for c in zip(*rows)]
    return Table(path, names, header, columns=columns, lines=lines)


def _read_text(path):
    """The whole file as text (UTF-8, a byte-order mark dropped)."""
    check_exists(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise CLIError(f"{path}: not a text (UTF-8) CSV file") from None
    if "\0" in text:
        raise CLIError(f"{path}: not a text CSV file (it contains NUL bytes)")
    return text


def _delimiter(text):
    """Comma, unless the first non-blank line has none but a tab or a
    semicolon."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if "," not in first:
        if "\t" in first:
            return "\t"
        if ";" in first:
            return ";"
    return ","


def _parse_rows(path, text, delimiter):
    """(rows of stripped fields, file line of each row), blank rows
    skipped; every row as wide as the first."""
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
    return rows, lines


def _header_names(path, names):
    """The header row's names: each non-empty, none twice."""
    seen = set()
    for j, name in enumerate(names):
        if not name:
            raise CLIError(f"{path}: header column {j} has no name")
        if name in seen:
            raise CLIError(f"{path}: the header names column {name!r} twice")
        seen.add(name)
    return names


def looks_like_header(rows):
    """Whether the first of these CSV rows is a header (``--header auto``).

    The first row is a header when one of its fields is a name (neither a
    number nor a missing-value marker such as NA or an empty field) and, in
    that column, either another row (of the next 50) holds a number, or the
    other rows hold repeated values (class labels) among which the first
    row's field never appears (``label`` above ``cat, dog, cat``).  A lone
    row is a header if it has a name.
    """
    first = rows[0]
    name_cols = [j for j, c in enumerate(first) if is_name(c)]
    if not name_cols or len(rows) == 1:
        return bool(name_cols)
    for j in name_cols:
        column = [r[j] for r in rows[1:]]
        if any(is_number(c) for c in column[:50]):
            return True
        values = set(column)
        if first[j] not in values and len(values) < len(column):
            return True
    return False


# -- numpy files ------------------------------------------------------------

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
        return _read_npz(first)
    if ext == ".npy":
        return _read_npy(first, want_target)
    return read_csv(first, header, model)


def _read_npz(path):
    """Arrays from an .npz archive holding X (or x) and maybe y (or Y)."""
    check_exists(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            xk = next((k for k in ("X", "x") if k in keys), None)
            yk = next((k for k in ("y", "Y") if k in keys), None)
            if xk is None:
                raise CLIError(f"{path}: no array named 'X' (it holds: "
                               f"{', '.join(keys) or 'nothing'})")
            X = z[xk]
            y = z[yk] if yk is not None else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise CLIError(f"{path}: cannot read it as an .npz archive "
                       f"({e})") from None
    return _arrays(path, X, y, f"{path}['y']")


def _read_npy(path, want_target):
    """Arrays from X.npy and its y.npy beside it, else a Table from a 2-D
    .npy."""
    arr = _load_npy(path)
    pair = _pair_path(path) if want_target else None
    if pair is not None:
        return _arrays(path, arr, _load_npy(pair), pair)
    arr = _check_array(arr, path, "the array")
    if arr.ndim != 2:
        raise CLIError(f"{path}: a single .npy file must be a 2-D table "
                       f"(rows x columns); for features and targets give "
                       f"X.npy y.npy")
    return Table(path, [f"col{j}" for j in range(arr.shape[1])], False,
                 array=arr)


def _load_npy(path):
    check_exists(path)
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


def _arrays(path, X, y, ypath):
    """Arrays from checked X (a 1-D X is one feature) and y (a single
    column becomes 1-D), with as many rows each."""
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


# -- writing ----------------------------------------------------------------

def format_number(v):
    """A value as written to a CSV: 10 significant digits."""
    return format(float(v), ".10g")


def write_csv(path, header, rows, stream=None):
    """A header row then rows, to path (or to an open stream)."""
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
