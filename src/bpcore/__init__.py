"""bpcore: a fast, exact, reproducible multilayer-perceptron engine.

The forward and backward passes, the optimizers and the whole batch loop
run in C with OpenMP over samples; this package is the Python API around
them.  See ``bpcore.Network`` to start.
"""
from __future__ import annotations

import os

from bpcore._version import __version__

from bpcore import _load  # noqa: F401  (first: loads the C core)
from bpcore._errors import (ConvergenceWarning, DistributedError,
                            DivergenceError, FormatError)
from bpcore._config import get_num_threads, set_num_threads, show_config
from bpcore.optim import SGD, Adam, AdamW, Optimizer
from bpcore import schedules
from bpcore.lbfgs import LBFGS
from bpcore import io
from bpcore import export  # onnx and torch are imported only when used
from bpcore.network import (EarlyStopping, Gradients, History, Network,
                            Trace)
from bpcore import callbacks


def load(path: str | os.PathLike[str]) -> Network:
    """Read a network written by :meth:`Network.save` (validated).

    Raises
    ------
    FormatError
        If the file is malformed, truncated or not a bpcore model.
    """
    return io.load(path)


__all__ = [
    "Network", "Trace", "Gradients", "History", "EarlyStopping",
    "SGD", "Adam", "AdamW", "Optimizer", "schedules", "io", "export",
    "DivergenceError", "FormatError", "DistributedError", "load",
    "LBFGS", "ConvergenceWarning", "callbacks",
    "set_num_threads", "get_num_threads", "show_config", "__version__",
]
