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
:func:`bpcore.cli.data.looks_like_header` and
:meth:`ModelInfo.looks_like_header`) or forced with ``--header yes|no``.
Class labels read from a CSV keep their spelling (``001`` and ``1`` are two
classes, and ``predict`` writes ``001`` back); integer labels from
``.npy``/``.npz`` are written as integers.

Everything ``predict`` needs travels in the model's ``metadata``: the
feature and target names, the class labels, the input standardisation (mean
and standard deviation per feature, as JSON) and a summary of the training
run.  User errors (a missing file, a bad column, a non-numeric cell, a model
that does not fit the data) end with one ``bpcore: error: ...`` line on
stderr and exit status 1 (2 for a malformed command line); set
``BPCORE_DEBUG=1`` to see the traceback instead.

The package, by concern: :mod:`~bpcore.cli.data` reads and writes data
files, :mod:`~bpcore.cli.model` is what a model remembers
(:class:`ModelInfo`), :mod:`~bpcore.cli.train` trains,
:mod:`~bpcore.cli.commands` holds the commands, :mod:`~bpcore.cli.demo` the
demo and :mod:`~bpcore.cli.parser` the argument parser; :func:`main` runs
them.
"""
import os
import sys

import bpcore
from bpcore.cli.common import CLIError
from bpcore.cli.parser import build_parser
# importable from bpcore.cli as before it became a package
from bpcore.cli.data import (Arrays, Table, read_csv,  # noqa: F401
                             read_data)
from bpcore.cli.data import (  # noqa: F401
    looks_like_header as _looks_like_header)
from bpcore.cli.model import (ModelInfo, accuracy,  # noqa: F401
                              choose_task, load_model, r2_score)
from bpcore.cli.train import train_model  # noqa: F401
from bpcore.cli.commands import (cmd_evaluate, cmd_export,  # noqa: F401
                                 cmd_info, cmd_predict, cmd_train)
from bpcore.cli.demo import (demo_tutorial, make_demo_data,  # noqa: F401
                             run_demo)

__all__ = ["main"]


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
    """An exception as the one line after ``bpcore: error:``."""
    if isinstance(e, bpcore.DivergenceError):
        text = f"training diverged ({e}); try a smaller --lr"
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename or ''}: {e.strerror}".lstrip(": ")
    elif isinstance(e, MemoryError):
        text = "out of memory"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())
