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
    """A file's text, or None when it cannot be read."""
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
    limits = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, rel = fields
        if controllers == "":  # v2 unified hierarchy
            limits += _v2_quotas(root, rel)
        elif "cpu" in controllers.split(","):  # v1
            limits += _v1_quotas(root, controllers, rel)
    return min(limits) if limits else None


def _cpus(quota, period):
    """CPUs a quota per period allows (rounded up); None for no quota."""
    if quota > 0 and period > 0:
        return max(1, math.ceil(quota / period))
    return None


def _v2_quotas(root, rel):
    """The CPU counts of cgroup v2 ``cpu.max`` along the group's path."""
    out = []
    for d in _ancestors(root, rel):
        v = _read(os.path.join(d, "cpu.max"))
        q = v.split() if v is not None else []
        if len(q) == 2 and q[0] != "max":
            try:
                n = _cpus(int(q[0]), int(q[1]))
            except ValueError:
                continue
            if n is not None:
                out.append(n)
    return out


def _v1_quotas(root, controllers, rel):
    """The CPU counts of cgroup v1 quotas along the group's path, in the
    first mount of the cpu controller found."""
    for mount in (controllers, "cpu,cpuacct", "cpuacct,cpu", "cpu"):
        base = os.path.join(root, mount)
        if os.path.isdir(base):
            return [n for n in map(_v1_quota, _ancestors(base, rel))
                    if n is not None]
    return []


def _v1_quota(folder):
    """The CPU count of one v1 group's quota, or None."""
    q = _read(os.path.join(folder, "cpu.cfs_quota_us"))
    p = _read(os.path.join(folder, "cpu.cfs_period_us"))
    if q is None or p is None:
        return None
    try:
        return _cpus(int(q), int(p))
    except ValueError:
        return None


def cpu_limit(places=0):
    """The most threads worth running: CPUs in the affinity mask, or the
    OpenMP places (`places`) where there are more of those (the mask of a
    thread that libgomp bound to its first place), capped by a cgroup CPU
    quota and by MAX_THREADS (at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    n = max(n, places)
    q = cgroup_cpus()
    if q is not None:
        n = min(n, q)
    return max(1, min(n, MAX_THREADS))
