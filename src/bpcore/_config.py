"""Thread settings and build facts."""
import sys

from bpcore import _core
from bpcore._validation import check_threads

_num_threads = None


def set_num_threads(n):
    """Set the number of threads bpcore uses (None restores OpenMP's default).

    Parameters
    ----------
    n : int or None
        Threads for every later call without an explicit ``n_threads``.
        Results are the same bits whatever the value.
    """
    global _num_threads
    _num_threads = check_threads(n)
    _core.set_user_threads(_num_threads)


def get_num_threads():
    """Return the thread count bpcore uses when a call does not set one.

    The value of :func:`set_num_threads`, else OpenMP's default (which honours
    ``OMP_NUM_THREADS`` and threadpoolctl limits).
    """
    if _num_threads is not None:
        return _num_threads
    return max(1, _core.default_threads())


def resolve_threads(n_threads):
    """The count for one call: the argument, else get_num_threads()."""
    if n_threads is None:
        if _num_threads is not None:
            return _num_threads
        return max(1, _core.default_threads())
    n = check_threads(n_threads)
    return n if n is not None else get_num_threads()


def show_config(file=None):
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
