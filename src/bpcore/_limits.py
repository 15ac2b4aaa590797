"""bpcore's limits, in one place: Network construction, the file loader and
the thread resolution all read them from here.

- ``MAX_LAYERS``: most layer sizes n_0 .. n_L (so at most MAX_LAYERS - 1
  weight layers).  The C core keeps per-layer offsets on the stack and has
  the same bound (``BP_MAX_LAYERS`` in bpcore.h, ``MAX_LAYERS`` in
  net_impl.h); a test checks that the three agree.
- ``MAX_PARAMS``: most weights and biases (and the largest layer size):
  far beyond any memory, and keeps every size and offset in int64.
- ``MAX_THREADS``: most threads a call may ask for (as the fast path of
  _core checks).  The count that runs is further clamped to the CPUs the
  process may use (:func:`cpu_limit`).

Nothing here imports the compiled extension.
"""
import math
import os

MAX_LAYERS = 256
MAX_PARAMS = 2 ** 48
MAX_THREADS = 1024

_CGROUP_ROOT = "/sys/fs/cgroup"


def n_params(layers):
    """Weights and biases of a network with layer sizes n_0 .. n_L."""
    return sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _ancestors(root, rel):
    """root/rel, then each parent folder up to root itself."""
    parts = [p for p in rel.split("/") if p and p != ".."]
    for k in range(len(parts), -1, -1):
        yield os.path.join(root, *parts[:k])


def cgroup_cpus(root=_CGROUP_ROOT, proc="/proc/self/cgroup"):
    """CPUs the process's cgroup CPU quota allows (rounded up), or None
    without a quota.  Reads cgroup v2 ``cpu.max`` and cgroup v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` of the process's group and
    of every ancestor (all of them apply), and returns the smallest."""
    text = _read(proc)
    if not text:
        return None
    best = None

    def take(quota, period):
        nonlocal best
        if quota > 0 and period > 0:
            n = max(1, math.ceil(quota / period))
            best = n if best is None else min(best, n)

    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controllers == "":  # v2 unified hierarchy
            for d in _ancestors(root, rel):
                v = _read(os.path.join(d, "cpu.max"))
                if v is None:
                    continue
                q = v.split()
                if len(q) == 2 and q[0] != "max":
                    try:
                        take(int(q[0]), int(q[1]))
                    except ValueError:
                        pass
        elif "cpu" in controllers.split(","):  # v1
            for mount in (controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu"):
                base = os.path.join(root, mount)
                if not os.path.isdir(base):
                    continue
                for d in _ancestors(base, rel):
                    q = _read(os.path.join(d, "cpu.cfs_quota_us"))
                    p = _read(os.path.join(d, "cpu.cfs_period_us"))
                    if q is None or p is None:
                        continue
                    try:
                        take(int(q), int(p))
                    except ValueError:
                        pass
                break
    return best


def cpu_limit():
    """The most threads worth running: CPUs in the affinity mask, capped by
    a cgroup CPU quota and by MAX_THREADS (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    q = cgroup_cpus()
    if q is not None:
        n = min(n, q)
    return max(1, min(n, MAX_THREADS))
