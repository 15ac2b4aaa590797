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
        Results are the same bits whatever the value.  At most the CPUs
        this process may run on are used (see :func:`get_num_threads`).
    """
    _core.set_user_threads(check_threads(n))


def get_num_threads() -> int:
    """Return the thread count bpcore uses when a call does not set one.

    The value of :func:`set_num_threads`, else OpenMP's default (which honours
    ``OMP_NUM_THREADS`` and threadpoolctl limits).  Calls run at most as
    many threads as this process has CPUs: those of its affinity mask
    (``os.sched_getaffinity``), capped by a cgroup CPU quota (v2
    ``cpu.max``, v1 ``cpu.cfs_quota_us``), found once at import; the same
    clamp applies to every ``n_threads=`` argument.  More threads than CPUs
    would only cost per-thread workspace (results are the same bits for any
    count), and where the OS refuses threads libgomp would end the process.
    ``show_config()`` reports the cap as ``cpus``.
    """
    return _core.configured_threads()


def resolve_threads(n_threads):
    """The count for one call: the argument, else get_num_threads(); at
    most the CPUs this process may run on."""
    return _core.threads_for(check_threads(n_threads))


def show_config(file: IO[str] | None = None) -> dict[str, Any]:
    """Print (and return as a dict) what a bug report needs: version, kernel,
    OpenMP, threads (get_num_threads()), cpus (the cap on the threads a
    call runs: affinity and cgroup quota), compiler, numpy."""
    import numpy as np

    from bpcore import __version__
    info = dict(_core.config())
    info.update(version=__version__, threads=get_num_threads(),
                cpus=_core.cpu_limit(),
                numpy=np.__version__, python=sys.version.split()[0])
    out = file if file is not None else sys.stdout
    for key in ("version", "kernel", "openmp", "threads", "cpus", "compiler",
                "numpy", "python"):
        print(f"{key:>9}: {info[key]}", file=out)
    return info
