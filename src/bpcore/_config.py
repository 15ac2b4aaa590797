"""Thread settings and build facts."""
from __future__ import annotations

import sys
from typing import IO, TYPE_CHECKING

from bpcore import _core
from bpcore._validation import check_threads

if TYPE_CHECKING:  # annotations only
    from typing import Any


def set_num_threads(n: int | None) -> None:
    """Set the number of threads bpcore uses (None restores OpenMP's default).

    Parameters
    ----------
    n : int or None
        Threads for every later call without an explicit ``n_threads``.
        Results are the same bits whatever the value.
    """
    _core.set_user_threads(check_threads(n))


def get_num_threads() -> int:
    """Return the thread count bpcore uses when a call does not set one.

    The value of :func:`set_num_threads`, else OpenMP's default (which honours
    ``OMP_NUM_THREADS`` and threadpoolctl limits).
    """
    return _core.threads_for(None)


def resolve_threads(n_threads):
    """The count for one call: the argument, else get_num_threads()."""
    return _core.threads_for(check_threads(n_threads))


def show_config(file: IO[str] | None = None) -> dict[str, Any]:
    """Print (and return as a dict) what a bug report needs: version, kernel,
    OpenMP, threads, compiler, numpy."""
    import numpy as np

    from bpcore import __version__
    info = dict(_core.config())
    info.update(version=__version__, threads=get_num_threads(),
                numpy=np.__version__, python=sys.version.split()[0])
    out = file if file is not None else sys.stdout
    for key in ("version", "kernel", "openmp", "threads", "compiler", "numpy",
                "python"):
        print(f"{key:>9}: {info[key]}", file=out)
    return info
