# cython: language_level=3
"""Thin glue between bpcore's Python API and its C core (csrc/).

Every wrapper checks that the arrays it hands to C are C-contiguous, of the
network's dtype and of the shapes the architecture implies (memory safety;
user-facing validation happened in Python already), releases the GIL for
the C call, and turns the status code into an exception in ``_check``.
"""
import numpy as np
cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.exc cimport PyErr_CheckSignals
from cpython.pythread cimport PyThread_get_thread_ident
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from bpcore._bpcore_c cimport *
from bpcore._errors import DivergenceError

cnp.import_array()
bp_init()


def _refuse_kernel_request():
    import os
    want = os.environ.get("BPCORE_KERNEL")
    r = bp_kernel_request()
    if r == BP_KERNEL_UNKNOWN:
        raise ImportError(
            f"BPCORE_KERNEL={want!r} is not a kernel: use ref, avx2 or "
            f"avx512, or unset it for the best one this machine runs")
    if r == BP_KERNEL_UNAVAILABLE:
        raise ImportError(
            f"BPCORE_KERNEL={want!r}: this machine or build cannot run that "
            f"kernel (it runs {bp_config_kernel().decode()!r}); unset "
            f"BPCORE_KERNEL for the best one")


_refuse_kernel_request()

# The C enums of bpcore.h by their C names, as Python ints: bpcore._names
# maps the accepted names to them (a test checks them against the header).
C_ENUMS = dict(
    BP_ACT_IDENTITY=BP_ACT_IDENTITY, BP_ACT_SIGMOID=BP_ACT_SIGMOID,
    BP_ACT_TANH=BP_ACT_TANH, BP_ACT_RELU=BP_ACT_RELU,
    BP_ACT_LEAKY_RELU=BP_ACT_LEAKY_RELU, BP_ACT_ELU=BP_ACT_ELU,
    BP_ACT_SOFTPLUS=BP_ACT_SOFTPLUS, BP_ACT_GELU=BP_ACT_GELU,
    BP_ACT_SOFTMAX=BP_ACT_SOFTMAX, BP_ACT_COUNT=BP_ACT_COUNT,
    BP_LOSS_MSE=BP_LOSS_MSE, BP_LOSS_CE=BP_LOSS_CE, BP_LOSS_BCE=BP_LOSS_BCE,
    BP_LOSS_MAE=BP_LOSS_MAE, BP_LOSS_HUBER=BP_LOSS_HUBER,
    BP_LOSS_POISSON=BP_LOSS_POISSON, BP_LOSS_COUNT=BP_LOSS_COUNT,
    BP_OPT_SGD=BP_OPT_SGD, BP_OPT_ADAM=BP_OPT_ADAM,
    BP_OPT_ADAMW=BP_OPT_ADAMW,
)


cdef int _check(bp_status status, str what) except -1:
    """Raise the exception that matches a C status code."""
    if status == BP_OK:
        return 0
    msg = f"{what}: {bp_status_string(status).decode()}"
    if status == BP_ENOMEM:
        raise MemoryError(msg)
    if status == BP_ENONFINITE:
        raise DivergenceError(msg)
    if status in (BP_EARG, BP_ESHAPE, BP_EOVERFLOW):
        raise ValueError(msg)
    raise RuntimeError(f"{msg} (status {status})")


def config():
    """Build facts for show_config: kernel, OpenMP, compiler."""
    return {
        "kernel": bp_config_kernel().decode(),
        "openmp": bool(bp_config_openmp()),
        "compiler": bp_config_compiler().decode(),
    }


def default_threads():
    """OpenMP's default thread count (1 in a forked child)."""
    return bp_default_threads()


# predict keeps the GIL when m times the weight count is below this (so
# little work that releasing the GIL would cost more)
cdef int64_t _KEEP_GIL_BELOW = 4096
# Multiply-adds per C call of predict (rows x weights): a fraction of a
# second per call, so that Ctrl-C is seen between calls, and few enough
# calls that their overhead stays small.  Rows are independent, so the
# split changes no bit.
cdef int64_t _PREDICT_CALL_MADDS = 7_500_000_000
# predict's workspace up to this size lives on the stack
cdef enum:
    _SMALL_WORK = 2048

cdef int _user_threads = 0  # set_num_threads; 0: OpenMP's default

from bpcore import _limits

# The most threads worth asking libgomp for: the CPUs of the affinity mask,
# capped by a cgroup CPU quota and MAX_THREADS; found once, at import.
# Asking for more only costs per-thread workspace, and where the OS refuses
# threads (a pids limit, an address-space cap) libgomp would exit(1).  With
# OMP_PROC_BIND, libgomp binds this thread to its first place when it
# loads (before this line), so the mask then holds that place only: its
# places, made from the mask it found, count instead.
cdef int _cpu_max = _limits.cpu_limit(bp_omp_places())
# the most threads a call may ask for (the fast path's bound)
cdef int _max_threads = _limits.MAX_THREADS

# BP_MAX_LAYERS of bpcore.h (tests check it against _limits.MAX_LAYERS)
C_MAX_LAYERS = BP_MAX_LAYERS

# how a team shares a training batch (bp_cut of bpcore.h; Arch.train's cut)
CUT_AUTO = BP_CUT_AUTO
CUT_COLUMNS = BP_CUT_COLUMNS
CUT_SAMPLES = BP_CUT_SAMPLES


def cpu_limit():
    """The cap on thread counts: CPUs this process may run on (affinity,
    cgroup quota), found at import."""
    return _cpu_max


def _set_cpu_limit(n):
    """Testing aid: replace the cap (the determinism tests run 3 and 4
    threads on 2-CPU machines).  Returns the previous cap."""
    global _cpu_max
    old = _cpu_max
    _cpu_max = max(1, min(int(n), _limits.MAX_THREADS))
    return old


def set_user_threads(n):
    """Record set_num_threads(n) (n an int >= 1, or None)."""
    global _user_threads
    _user_threads = 0 if n is None else n


def configured_threads():
    """set_num_threads' value, else OpenMP's default (not clamped)."""
    if _user_threads > 0:
        return _user_threads
    return max(1, bp_default_threads())


def threads_for(n_threads):
    """The thread count that runs: n_threads if given (already checked),
    else set_num_threads' value, else OpenMP's default; at most
    cpu_limit()."""
    if n_threads is not None:
        return min(<int>n_threads, _cpu_max)
    return _fast_threads(None)


cdef int _fast_threads(object n_threads):
    """The thread count for a call (at most _cpu_max), or 0 when n_threads
    needs the full check in Python (anything but None or a plain int >= 1)."""
    cdef int d
    if n_threads is None:
        if _user_threads > 0:
            d = _user_threads
        else:
            d = bp_default_threads()
    elif type(n_threads) is int and 1 <= n_threads <= _max_threads:
        d = n_threads
    else:
        return 0
    if d > _cpu_max:
        d = _cpu_max
    return d if d > 1 else 1


# Fork generation: bumped in a forked child, where every guard and busy flag
# taken before the fork belongs to a thread that does not exist; a guard
# whose generation is older starts free.
cdef long _fork_gen = 1


def _after_fork_in_child():
    global _fork_gen
    _fork_gen += 1


import os as _os
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)


cdef class Guard:
    """Readers may share a network; a writer (fit, step) needs it alone.
    Never blocks: a conflicting call raises RuntimeError.  The writer's own
    thread may read (a fit callback may predict, evaluate or save: between
    epochs the parameters are whole).  The state changes only with the GIL
    held, in code that cannot release it, so it needs no lock.

    Taking and releasing happen in C: as ``with guard.read():`` or
    ``with guard.write():``, the guard is taken inside ``__enter__`` and
    released in ``__exit__``, with no Python code between either and the
    block, so a KeyboardInterrupt cannot leave it taken.  After a fork the
    child's guards start free."""
    cdef int readers
    cdef bint writer
    cdef unsigned long owner
    cdef long gen

    cdef inline void _fresh(self):
        if self.gen != _fork_gen:
            self.readers = 0
            self.writer = False
            self.owner = 0
            self.gen = _fork_gen

    cdef long enter_read(self) except -1:
        """A token for exit_read: the generation when counted as a reader;
        0 for a read in the writer's own thread."""
        self._fresh()
        if self.writer:
            if self.owner == PyThread_get_thread_ident():
                return 0
            raise RuntimeError("the network is being trained (fit or step "
                               "running in another thread)")
        self.readers += 1
        return self.gen

    cdef void exit_read(self, long token):
        if token != 0 and token == self.gen and self.readers > 0:
            self.readers -= 1

    cdef long enter_write(self) except -1:
        self._fresh()
        if self.writer or self.readers:
            raise RuntimeError("the network is in use by another call "
                               "(fit/step cannot run concurrently with other "
                               "calls on the same network)")
        self.writer = True
        self.owner = PyThread_get_thread_ident()
        return self.gen

    cdef void exit_write(self, long token):
        if token == self.gen:
            self.writer = False
            self.owner = 0

    def read(self):
        """Context manager: hold the network as a reader."""
        cdef _Held h = _Held.__new__(_Held)
        h.guard = self
        h.writer = False
        return h

    def write(self):
        """Context manager: hold the network alone."""
        cdef _Held h = _Held.__new__(_Held)
        h.guard = self
        h.writer = True
        return h


cdef class _Held:
    cdef Guard guard
    cdef long token
    cdef bint writer
    cdef bint held

    def __enter__(self):
        if self.held:
            raise RuntimeError("internal: a guard hold entered twice")
        if self.writer:
            self.token = self.guard.enter_write()
        else:
            self.token = self.guard.enter_read()
        self.held = True
        return self

    def __exit__(self, *exc):
        if self.held:
            self.held = False
            if self.writer:
                self.guard.exit_write(self.token)
            else:
                self.guard.exit_read(self.token)
        return False


cdef class Busy:
    """Optimizer._in_use: one fit or step at a time per optimizer.  The flag
    is the optimizer's ``_busy`` attribute (False, or the fork generation it
    was set in); it is tested, set and cleared here in C, inside
    ``__enter__``/``__exit__``, so a KeyboardInterrupt cannot leave it set,
    and a forked child finds it free."""
    cdef object opt
    cdef bint held

    def __cinit__(self, opt):
        self.opt = opt

    def __enter__(self):
        v = self.opt._busy
        if type(v) is int and v == _fork_gen:
            raise RuntimeError(
                "optimizer: already in use by a fit or step running in "
                "another thread; give each concurrent training its own "
                "optimizer")
        self.opt._busy = _fork_gen
        self.held = True
        return self

    def __exit__(self, *exc):
        if self.held:
            self.held = False
            v = self.opt._busy
            if type(v) is int and v == _fork_gen:
                self.opt._busy = False
        return False


def commit_copies(list dst, list src, object owner, object t):
    """Copy each array of src into its place in dst (None entries skipped)
    and set owner.t = t, all in C: no Python code runs in between, so a
    KeyboardInterrupt lands before or after the whole commit, never inside
    it.  The arrays are C-contiguous twins (same dtype and size)."""
    cdef cnp.ndarray d, s
    cdef Py_ssize_t k
    for k in range(len(src)):
        if src[k] is None:
            continue
        d = <cnp.ndarray>dst[k]
        s = <cnp.ndarray>src[k]
        if (d.dtype != s.dtype or d.nbytes != s.nbytes
                or not d.flags.c_contiguous or not s.flags.c_contiguous):
            raise ValueError("internal: commit_copies needs twin arrays")
    for k in range(len(src)):
        if src[k] is not None:
            d = <cnp.ndarray>dst[k]
            s = <cnp.ndarray>src[k]
            memcpy(cnp.PyArray_DATA(d), cnp.PyArray_DATA(s),
                   <size_t>cnp.PyArray_NBYTES(s))
    owner.t = t


def all_finite(cnp.ndarray a):
    """True when a C-contiguous float32/float64 array holds no NaN or inf
    (one pass, GIL released; numpy's isfinite().all() allocates a mask)."""
    return _all_finite(a)


cdef bint _all_finite(cnp.ndarray a) except -1:
    cdef Py_ssize_t n = cnp.PyArray_SIZE(a)
    cdef const float *pf
    cdef const double *pd
    cdef bint ok
    cdef int tn = cnp.PyArray_TYPE(a)
    if (not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISBEHAVED_RO(a)
            or tn not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        return bool(np.isfinite(a).all())
    cdef int nt = _fast_threads(None)
    if tn == cnp.NPY_FLOAT32:
        pf = <const float *>cnp.PyArray_DATA(a)
        if n < 4096:
            return bp_all_finite_f32(pf, n, 1)
        with nogil:
            ok = bp_all_finite_f32(pf, n, nt)
    else:
        pd = <const double *>cnp.PyArray_DATA(a)
        if n < 4096:
            return bp_all_finite_f64(pd, n, 1)
        with nogil:
            ok = bp_all_finite_f64(pd, n, nt)
    return ok


def team_costs(int n_threads=2):
    """The host's measured cost of a team of n_threads (>= 2), from the C
    core's calibration (measured once per process): seconds per step of the
    calibration chain on one thread ("step_f32", "step_f64") and seconds per
    team synchronisation ("sync")."""
    cdef double s32 = 0.0, s64 = 0.0, sync = 0.0
    cdef int r
    if n_threads < 2:
        raise ValueError("team_costs: n_threads must be >= 2")
    with nogil:
        r = bp_team_costs(n_threads, &s32, &s64, &sync)
    if r != 0:
        raise MemoryError("team_costs: no memory for the calibration")
    return {"step_f32": s32, "step_f64": s64, "sync": sync}


def team_size(int n_threads, double flops, double syncs, bint f64=False):
    """Threads the C core gives work of `flops` flops with `syncs` team
    synchronisations when n_threads are allowed (n_threads or 1)."""
    cdef int r
    with nogil:
        r = bp_team_size(n_threads, flops, syncs, f64)
    return r


def matmul(cnp.ndarray A, cnp.ndarray B, bint trans_a=False,
           bint trans_b=False, int n_threads=1):
    """op(A) @ op(B) by the kernel's layer product on n_threads threads (for
    benchmarks and tests; not public API).  A and B: C-contiguous arrays of
    one float dtype; trans_a / trans_b read the stored matrix transposed
    (X^T delta and delta W^T are the second and third products of a
    layer)."""
    cdef int tn = cnp.PyArray_TYPE(A)
    if (A.ndim != 2 or B.ndim != 2 or tn not in (cnp.NPY_FLOAT32,
            cnp.NPY_FLOAT64) or cnp.PyArray_TYPE(B) != tn
            or not A.flags.c_contiguous or not B.flags.c_contiguous
            or not A.flags.aligned or not B.flags.aligned):
        raise ValueError("matmul: A and B must be aligned, C-contiguous 2-D "
                         "arrays of one dtype, float32 or float64")
    cdef int64_t m = A.shape[1] if trans_a else A.shape[0]
    cdef int64_t k = A.shape[0] if trans_a else A.shape[1]
    cdef int64_t kb = B.shape[1] if trans_b else B.shape[0]
    cdef int64_t n = B.shape[0] if trans_b else B.shape[1]
    if k != kb:
        raise ValueError(f"matmul: inner dimensions differ ({k} and {kb})")
    if n_threads < 1:
        raise ValueError("matmul: n_threads must be >= 1")
    cdef cnp.ndarray C = np.empty((m, n), dtype=A.dtype)
    cdef bp_status s
    if tn == cnp.NPY_FLOAT32:
        with nogil:
            s = bp_matmul_f32(<float *>cnp.PyArray_DATA(C),
                              <const float *>cnp.PyArray_DATA(A),
                              <const float *>cnp.PyArray_DATA(B), m, n, k,
                              trans_a, trans_b, n_threads)
    else:
        with nogil:
            s = bp_matmul_f64(<double *>cnp.PyArray_DATA(C),
                              <const double *>cnp.PyArray_DATA(A),
                              <const double *>cnp.PyArray_DATA(B), m, n, k,
                              trans_a, trans_b, n_threads)
    _check(s, "matmul")
    return C


def layout(sizes):
    """Offsets of the flat parameter buffer: (w_off, b_off, n_weights, n_params)."""
    cdef cnp.ndarray[int64_t, ndim=1] s = np.ascontiguousarray(sizes, dtype=np.int64)
    cdef int64_t L = s.shape[0] - 1
    if L < 1:
        raise ValueError("layout: need at least two layer sizes")
    cdef cnp.ndarray[int64_t, ndim=1] w_off = np.zeros(L, dtype=np.int64)
    cdef cnp.ndarray[int64_t, ndim=1] b_off = np.zeros(L, dtype=np.int64)
    cdef int64_t n_weights = 0, n_params = 0
    _check(bp_layout(&w_off[0], &b_off[0], &n_weights, &n_params, &s[0], L + 1),
           "layout")
    return w_off, b_off, n_weights, n_params


cdef void *_ptr(cnp.ndarray a):
    return cnp.PyArray_DATA(a)


cdef int _typenum(object dtype):
    return cnp.NPY_FLOAT64 if dtype == np.float64 else (
        cnp.NPY_FLOAT32 if dtype == np.float32 else cnp.NPY_INT64)


cdef _need(object a, object dtype, tuple shape, str name):
    """Check what C relies on: an ndarray of this dtype, C order and shape."""
    cdef cnp.ndarray arr
    cdef Py_ssize_t k
    if isinstance(a, np.ndarray):
        arr = <cnp.ndarray>a
        if (cnp.PyArray_TYPE(arr) == _typenum(dtype)
                and cnp.PyArray_IS_C_CONTIGUOUS(arr)
                and cnp.PyArray_ISBEHAVED_RO(arr)
                and cnp.PyArray_NDIM(arr) == len(shape)):
            for k in range(len(shape)):
                if cnp.PyArray_DIMS(arr)[k] != shape[k]:
                    break
            else:
                return
    raise ValueError(
        f"internal: {name} must be a C-contiguous {np.dtype(dtype).name} "
        f"array of shape {shape}, got {type(a).__name__} "
        f"{getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}")


cdef double _now() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + 1e-9 * <double>ts.tv_nsec


cdef inline int _size_class(int64_t m) noexcept nogil:
    """Calls of m rows within a factor of two share a race: -(bits of m)."""
    cdef int size = 0
    while m:
        size -= 1
        m >>= 1
    return size


cdef double _median(const double *v, int n) noexcept nogil:
    """The median of v[0:n] (1 <= n <= 9; the lower middle for even n)."""
    cdef double w[9]
    cdef double x
    cdef int i, j
    for i in range(n):
        x = v[i]
        j = i
        while j > 0 and w[j - 1] > x:
            w[j] = w[j - 1]
            j -= 1
        w[j] = x
    return w[(n - 1) // 2]


# PredictRace's settings: calls per probe (untimed, then timed), calls of
# the current choice in its median, the margins a change of choice needs
# (to the team, to one thread), the slowdown of the current choice that
# brings the next probe forward, and the spacing of probes (seconds, and
# in lengths of a probe)
cdef enum:
    _RACE_WARM = 4
    _RACE_PROBE = 3
    _RACE_WINDOW = 9
cdef double _RACE_TO_TEAM = 0.97
cdef double _RACE_TO_ONE = 0.85
cdef double _RACE_CHANGED = 1.25
cdef double _RACE_FIRST_INTERVAL = 0.05
cdef double _RACE_MAX_INTERVAL = 4.0
cdef double _RACE_SPACING = 50.0


cdef class PredictRace:
    """Chooses between a team and one thread for the predict calls of one
    network and one size of call, by timing both (fit's race, _race.py,
    does the same between chunks of batches).

    The C core shares a predict of enough rows, or of one to four rows,
    among the threads asked for. Whether the team wins depends on the host
    and the moment: one row of a 784-256-128-10 network takes about 7 us on
    one thread and 7-8 us on two on a quiet Xeon, 24-44 us on two when
    another process holds the second core. So the calls run on the current
    choice (at first the one the C core's calibrated team-cost model picks,
    bp_team_size), each one timed (two clock reads), and now and then a
    probe of seven calls runs on the other. Its first four are not timed:
    they pay for waking an idle thread (130-400 us for the first call of a
    team after a run of calls on one thread, on the Xeon) and for cold
    caches (9-46 us for the second, 8-13 us for the next ones, against 7-8
    us warm). The other choice is taken when the median time per row of the
    probe's three timed calls is below the median of the current choice's
    last nine calls by a margin: 3% for the team, 15% for one thread.
    Choices within noise of each other so stay as they are, the team by
    preference (what the C core chose; a team that has been idle is the
    costly one to wake for a probe), and a team several times slower (a
    core taken) is left at once. Single calls vary by 2x and more on a
    virtual machine, so the current choice's median is over nine calls: a
    short run of slow calls neither starts a probe nor decides one. Probes
    come at least 50 times a probe's length apart, so that probes of long
    calls cost at most 2%: the first after three timed calls and that
    spacing, later ones 0.05 s apart or more, the interval doubling to 4 s
    while probes confirm the choice; a probe comes at once when that median
    turns 25% slower than the other choice was at its last probe (another
    process took a core, or gave it back). No choice changes a bit."""

    cdef int nt            # the team asked for
    cdef int current       # threads of the ordinary calls
    cdef int probing       # threads of the probe in flight, 0 when none
    cdef int warm          # untimed calls left (the start of a probe)
    cdef double probe[3]   # the probe's timed calls, seconds per row
    cdef int n_probe
    cdef double recent[9]  # the current choice's last calls (a ring)
    cdef int n_recent, pos
    cdef double est[2]     # seconds per row: [0] one thread, [1] the team
    cdef double interval, next_probe
    cdef double probe_start  # when the probe in flight began

    def __cinit__(self, int nt, int first=0):
        """A race between nt threads and one, starting on `first` (1 or
        nt; by default nt)."""
        self.nt = nt
        self.current = 1 if first == 1 else nt
        self.probing = 0
        self.warm = _RACE_WARM  # the very first calls: untimed
        self.n_probe = self.n_recent = self.pos = 0
        self.est[0] = self.est[1] = 0.0
        self.interval = _RACE_FIRST_INTERVAL
        self.next_probe = -1.0  # set after three timed calls

    cdef inline int _slot(self, int threads) noexcept:
        return 0 if threads == 1 else 1

    cpdef int threads(self, double now):
        """The thread count of the next call, starting at time `now`
        (seconds, CLOCK_MONOTONIC)."""
        if self.probing:
            return self.probing
        if self.next_probe >= 0.0 and now >= self.next_probe:
            self.probing = 1 if self.current == self.nt else self.nt
            self.warm = _RACE_WARM
            self.n_probe = 0
            self.probe_start = now
            return self.probing
        return self.current

    cpdef void record(self, int threads, double seconds, int64_t rows,
                      double now):
        """What a call of `rows` rows on `threads` threads took, ending at
        time `now`."""
        cdef int other = self._slot(self.current) ^ 1
        cdef double per_row = seconds / rows
        if threads != (self.probing if self.probing else self.current):
            return  # chosen before the probe began or ended (another thread)
        if self.warm > 0:
            self.warm -= 1
            return
        if self.probing:
            self.probe[self.n_probe] = per_row
            self.n_probe += 1
            if self.n_probe == _RACE_PROBE:
                self._decide(now)
            return
        self.recent[self.pos] = per_row
        self.pos = (self.pos + 1) % _RACE_WINDOW
        if self.n_recent < _RACE_WINDOW:
            self.n_recent += 1
        if self.next_probe < 0.0 and self.n_recent == 3:
            # the first probe: soon, but no sooner than its spacing
            self.next_probe = now + _RACE_SPACING * (
                _RACE_WARM + _RACE_PROBE) * seconds
        if (self.est[other] > 0.0 and self.n_recent == _RACE_WINDOW and
                _median(self.recent, self.n_recent) >
                _RACE_CHANGED * self.est[other]):
            self.next_probe = 0.0  # the host changed: probe at once

    cdef void _decide(self, double now) noexcept:
        """After a probe: the other choice is taken only if it is faster by
        its margin, so two choices within noise of each other do not take
        turns (each change of choice pays for warming the caches and the
        idle thread)."""
        cdef int k = self._slot(self.current)
        cdef double p = _median(self.probe, _RACE_PROBE)
        cdef int i
        self.probing = 0
        self.est[k ^ 1] = p
        self.est[k] = _median(self.recent, self.n_recent)
        if p < (_RACE_TO_ONE if k else _RACE_TO_TEAM) * self.est[k]:
            self.current = 1 if self.current == self.nt else self.nt
            self.n_recent = self.pos = _RACE_PROBE
            for i in range(_RACE_PROBE):
                self.recent[i] = self.probe[i]
            self.interval = _RACE_FIRST_INTERVAL
        elif self.next_probe >= 0.0:
            self.interval = min(2.0 * self.interval, _RACE_MAX_INTERVAL)
        self.next_probe = now + max(self.interval,
                                    _RACE_SPACING * (now - self.probe_start))

    @property
    def schedule(self):
        """(probe interval, time of the next probe, threads of the probe in
        flight or 0): for tests."""
        return self.interval, self.next_probe, self.probing

    @property
    def state(self):
        """(current choice, seconds per row on one thread and on the team as
        last estimated, or None where not measured): for tests and
        benchmarks."""
        return (self.current, self.est[0] or None, self.est[1] or None)


cdef class Arch:
    """A network architecture as the C core sees it (sizes, activations, loss)."""
    cdef bp_arch arch
    cdef readonly object sizes
    cdef readonly object acts
    cdef readonly object dtype
    cdef readonly int64_t n_params
    cdef readonly int64_t n_weights
    cdef bint f64
    cdef readonly object dropout  # float64 rates of the hidden layers, or None
    cdef readonly dict races  # (call size, threads asked) -> PredictRace
    cdef int64_t race_m       # the last call's rows and threads asked,
    cdef int race_nt          # and its race (None: none), looked up once
    cdef PredictRace race_last

    def __cinit__(self, sizes, acts, int loss, dtype, double loss_param=0.0):
        cdef cnp.ndarray s = np.ascontiguousarray(sizes, dtype=np.int64)
        cdef cnp.ndarray a = np.ascontiguousarray(acts, dtype=np.int32)
        if s.ndim != 1 or a.ndim != 1 or a.shape[0] != s.shape[0] - 1:
            raise ValueError("internal: activations must number len(sizes) - 1")
        self.sizes = s
        self.acts = a
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError("internal: dtype must be float32 or float64")
        self.f64 = self.dtype == np.float64
        self.arch.n_layers = s.shape[0]
        self.arch.sizes = <const int64_t *>_ptr(s)
        self.arch.acts = <const int32_t *>_ptr(a)
        self.arch.loss = loss
        self.arch.loss_param = loss_param
        self.arch.dropout = NULL
        self.arch.drop_seed = 0
        self.dropout = None
        self.races = {}
        self.race_m = -1
        _check(bp_arch_check(&self.arch), "architecture")
        _, _, self.n_weights, self.n_params = layout(s)

    cdef int64_t size(self, Py_ssize_t k):
        return (<int64_t *>_ptr(self.sizes))[k]

    def set_dropout(self, rates):
        """Dropout rates of the hidden layers (checked in Python), or None
        for none.  Used only by calls given a drop_seed."""
        cdef bp_arch a = self.arch
        cdef cnp.ndarray r
        if rates is None:
            self.dropout = None
            return
        r = np.ascontiguousarray(rates, dtype=np.float64)
        if r.ndim != 1 or r.shape[0] != self.arch.n_layers - 2:
            raise ValueError("internal: one dropout rate per hidden layer")
        if r.shape[0] == 0 or not (r > 0).any():
            self.dropout = None
            return
        a.dropout = <const double *>_ptr(r)
        _check(bp_arch_check(&a), "dropout")
        self.dropout = r

    cdef int _with_drop(self, bp_arch *a, object drop_seed) except -1:
        """a = this architecture, with dropout when drop_seed is given and
        some rate is positive."""
        a[0] = self.arch
        if drop_seed is not None and self.dropout is not None:
            a.dropout = <const double *>_ptr(self.dropout)
            a.drop_seed = <uint64_t>drop_seed
        return 0

    def predict_fast(self, cnp.ndarray params, object X, object n_threads,
                     Guard guard):
        """predict for the common case, with the least overhead: X an
        ndarray of the network's dtype, C-contiguous, 1-D (one sample) or
        2-D, finite; n_threads None or an int >= 1.  Holds guard as a
        reader around the C call.  Returns the output, or None when an
        argument is anything else (the caller then validates it fully and
        reports what is wrong).  X is checked for NaN and infinity by the
        C call itself, block by block as it is used."""
        cdef cnp.ndarray x
        cdef int ndim
        cdef long token
        cdef int nt = _fast_threads(n_threads)
        cdef int64_t m, n0 = self.size(0)
        cdef int64_t nL = self.size(self.arch.n_layers - 1)
        cdef cnp.npy_intp dims[2]
        cdef int typenum = cnp.NPY_FLOAT64 if self.f64 else cnp.NPY_FLOAT32
        if not cnp.PyArray_CheckExact(X) or nt == 0:
            return None
        x = <cnp.ndarray>X
        ndim = cnp.PyArray_NDIM(x)
        if (cnp.PyArray_TYPE(x) != typenum or not cnp.PyArray_IS_C_CONTIGUOUS(x)
                or not cnp.PyArray_ISBEHAVED_RO(x)):  # aligned, native order
            return None
        if ndim == 1 and cnp.PyArray_DIMS(x)[0] == n0:
            m = 1
        elif ndim == 2 and cnp.PyArray_DIMS(x)[1] == n0 and cnp.PyArray_DIMS(x)[0] > 0:
            m = cnp.PyArray_DIMS(x)[0]
        else:
            return None
        if (cnp.PyArray_TYPE(params) != typenum or cnp.PyArray_NDIM(params) != 1
                or cnp.PyArray_DIMS(params)[0] != self.n_params
                or not cnp.PyArray_IS_C_CONTIGUOUS(params)):
            _need(params, self.dtype, (self.n_params,), "params")  # raises
        dims[0] = m
        dims[1] = nL
        cdef cnp.ndarray Y
        if ndim == 1:
            Y = cnp.PyArray_SimpleNew(1, &dims[1], cnp.PyArray_TYPE(x))
        else:
            Y = cnp.PyArray_SimpleNew(2, dims, cnp.PyArray_TYPE(x))
        token = guard.enter_read()
        try:
            if not self._predict(params, x, Y, m, nt, True):
                return None  # X holds NaN or inf
        finally:
            guard.exit_read(token)
        return Y

    def predict(self, cnp.ndarray params, cnp.ndarray X, cnp.ndarray Y,
                int n_threads):
        """Y = network(X); Y is overwritten."""
        cdef int64_t m = X.shape[0]
        cdef int64_t L = self.arch.n_layers - 1
        _need(params, self.dtype, (self.n_params,), "params")
        _need(X, self.dtype, (m, self.size(0)), "X")
        _need(Y, self.dtype, (m, self.size(L)), "Y")
        self._predict(params, X, Y, m, n_threads, False)

    cdef int _predict(self, cnp.ndarray params, cnp.ndarray X, cnp.ndarray Y,
                      int64_t m, int n_threads, bint checked) except -1:
        """The C call(s) of predict, on arrays already checked: one call, or
        for much work calls of whole 512-row blocks with a check for Ctrl-C
        between them.  With checked, the C calls also check X and 0 is
        returned if it holds NaN or inf (1 otherwise)."""
        cdef int64_t need = 0
        cdef bp_status st = BP_OK
        cdef char small[_SMALL_WORK]
        cdef int64_t rows = m, r0 = 0, r
        cdef int64_t n_in = self.size(0)
        cdef int64_t n_out = self.size(self.arch.n_layers - 1)
        cdef size_t isz = 8 if self.f64 else 4
        cdef PredictRace race = None
        cdef double t0 = 0.0, t1
        if m * self.n_weights >= _KEEP_GIL_BELOW and n_threads > 1:
            race = self._race(m, n_threads)
            if race is not None:
                t0 = _now()
                n_threads = race.threads(t0)
        if m * self.n_weights > _PREDICT_CALL_MADDS:
            rows = max(512, _PREDICT_CALL_MADDS // max(1, self.n_weights)
                       // 512 * 512)
        _check(bp_predict_workspace_size(&need, &self.arch, rows, n_threads),
               "predict")
        cdef void *w = <void *>small if need <= _SMALL_WORK else malloc(need)
        if w == NULL:
            raise MemoryError("predict: cannot allocate its workspace")
        cdef char *pp = <char *>_ptr(params)
        cdef char *px = <char *>_ptr(X)
        cdef char *py = <char *>_ptr(Y)
        try:
            if m * self.n_weights < _KEEP_GIL_BELOW:
                # too little work to be worth releasing the GIL
                st = self._predict_c(py, px, pp, m, w, need, n_threads,
                                     checked)
            while r0 < m and m * self.n_weights >= _KEEP_GIL_BELOW:
                r = min(rows, m - r0)
                with nogil:
                    st = self._predict_c(py + r0 * n_out * isz,
                                         px + r0 * n_in * isz, pp, r, w,
                                         need, n_threads, checked)
                if st != BP_OK:
                    break
                r0 += r
                if r0 < m:
                    PyErr_CheckSignals()  # raises KeyboardInterrupt
        finally:
            if w != <void *>small:
                free(w)
        if checked and st == BP_ENONFINITE:
            return 0
        _check(st, "predict")
        if race is not None:
            t1 = _now()
            race.record(n_threads, t1 - t0, m, t1)
        return 1

    cdef PredictRace _race(self, int64_t m, int n_threads):
        """The race of predict calls of m rows on n_threads, or None where
        the C core runs them on one thread anyway (or BPCORE_TEAM=always
        makes it run them on the team)."""
        cdef int nt
        race = None
        if m == self.race_m and n_threads == self.race_nt:
            return self.race_last  # a loop of calls of one size
        nt = bp_predict_threads(&self.arch, m, n_threads)
        if nt > 1 and not bp_team_forced():
            # one to four rows (the few-row path) each count its own race;
            # a synchronisation per layer there, one for row blocks
            race = self._race_for(
                (m if m <= 4 else _size_class(m), nt), nt, m,
                self.arch.n_layers - 1 if m <= 4 else 1)
        self.race_m = m
        self.race_nt = n_threads
        self.race_last = race
        return race

    cdef PredictRace _race_for(self, object key, int nt, int64_t m,
                               double syncs):
        """The race under key, made on first use starting from the C
        core's model of the team's cost for m rows with `syncs` team
        synchronisations (bp_team_size)."""
        race = self.races.get(key)
        if race is None:
            race = self.races[key] = PredictRace(nt, bp_team_size(
                nt, 2.0 * m * self.n_weights, syncs, self.f64))
        return race

    cdef bp_status _predict_c(self, void *py, const void *px, const void *pp,
                              int64_t m, void *w, int64_t need,
                              int n_threads, bint checked) noexcept nogil:
        if self.f64 and checked:
            return bp_predict_checked_f64(<double *>py, <const double *>px,
                                          <const double *>pp, &self.arch, m,
                                          w, need, n_threads)
        if self.f64:
            return bp_predict_f64(<double *>py, <const double *>px,
                                  <const double *>pp, &self.arch, m, w, need,
                                  n_threads)
        if checked:
            return bp_predict_checked_f32(<float *>py, <const float *>px,
                                          <const float *>pp, &self.arch, m,
                                          w, need, n_threads)
        return bp_predict_f32(<float *>py, <const float *>px,
                              <const float *>pp, &self.arch, m, w, need,
                              n_threads)

    cdef void **_pointers(self, list arrays, int64_t m, str name,
                          bint allow_none_first) except NULL:
        """C array of data pointers of per-layer arrays (entry 0 may be NULL)."""
        cdef Py_ssize_t n = self.arch.n_layers
        cdef void **p = <void **>malloc(n * sizeof(void *))
        if p == NULL:
            raise MemoryError()
        cdef Py_ssize_t k
        try:
            if len(arrays) != n:
                raise ValueError(f"internal: {name} needs {n} arrays")
            for k in range(n):
                if arrays[k] is None:
                    if k == 0 and allow_none_first:
                        p[k] = NULL
                        continue
                    raise ValueError(f"internal: {name}[{k}] is None")
                _need(arrays[k], self.dtype, (m, self.size(k)), f"{name}[{k}]")
                p[k] = _ptr(arrays[k])
        except BaseException:
            free(p)
            raise
        return p

    def forward(self, cnp.ndarray params, cnp.ndarray X, list net, list out,
                int n_threads, object drop_seed=None):
        """Fill net[k], out[k] (k >= 1) for input X (with dropout when
        drop_seed is given)."""
        cdef int64_t m = X.shape[0]
        cdef bp_status st
        cdef bp_arch a
        self._with_drop(&a, drop_seed)
        _need(params, self.dtype, (self.n_params,), "params")
        _need(X, self.dtype, (m, self.size(0)), "X")
        cdef void **pn = self._pointers(net, m, "net", True)
        cdef void **po
        try:
            po = self._pointers(out, m, "out", True)
        except BaseException:
            free(pn)
            raise
        cdef void *pp = _ptr(params)
        cdef void *px = _ptr(X)
        cdef PredictRace race = self._forward_race(m, n_threads)
        cdef double t0 = 0.0, t1
        if race is not None:
            t0 = _now()
            n_threads = race.threads(t0)
        with nogil:
            if self.f64:
                st = bp_forward_f64(<double **>pn, <double **>po,
                                    <const double *>px, <const double *>pp,
                                    &a, m, n_threads)
            else:
                st = bp_forward_f32(<float **>pn, <float **>po,
                                    <const float *>px, <const float *>pp,
                                    &a, m, n_threads)
        free(pn)
        free(po)
        _check(st, "forward")
        if race is not None:
            t1 = _now()
            race.record(n_threads, t1 - t0, m, t1)

    cdef PredictRace _forward_race(self, int64_t m, int n_threads):
        """forward's race between one thread and the team, as predict's
        (keyed ("forward", call size, threads); a synchronisation per
        layer), or None where the C core runs the call on one thread
        anyway (or BPCORE_TEAM=always)."""
        cdef int nt = bp_forward_threads(&self.arch, m, n_threads)
        if nt <= 1 or bp_team_forced():
            return None
        return self._race_for(("forward", _size_class(m), nt), nt, m,
                              self.arch.n_layers - 1)

    def backward(self, cnp.ndarray params, cnp.ndarray X, cnp.ndarray Y,
                 object sw, cnp.ndarray grad, list delta, list net, list out,
                 int n_threads, object drop_seed=None):
        """Loss, gradient (into grad) and deltas; returns the loss (with
        dropout when drop_seed is given)."""
        cdef int64_t m = X.shape[0]
        cdef int64_t L = self.arch.n_layers - 1
        cdef double loss = 0.0
        cdef bp_status st
        cdef bp_arch a
        self._with_drop(&a, drop_seed)
        cdef void *psw = NULL
        _need(params, self.dtype, (self.n_params,), "params")
        _need(grad, self.dtype, (self.n_params,), "grad")
        _need(X, self.dtype, (m, self.size(0)), "X")
        _need(Y, self.dtype, (m, self.size(L)), "Y")
        if sw is not None:
            _need(sw, self.dtype, (m,), "sample_weight")
            psw = _ptr(sw)
        cdef void **pd = self._pointers(delta, m, "delta", True)
        cdef void **pn = NULL
        cdef void **po = NULL
        try:
            pn = self._pointers(net, m, "net", True)
            po = self._pointers(out, m, "out", True)
        except BaseException:
            free(pd)
            free(pn)
            raise
        cdef void *pp = _ptr(params)
        cdef void *pg = _ptr(grad)
        cdef void *px = _ptr(X)
        cdef void *py = _ptr(Y)
        with nogil:
            if self.f64:
                st = bp_backward_f64(<double *>pg, <double **>pd, <double **>pn,
                                     <double **>po, &loss, <const double *>px,
                                     <const double *>py, <const double *>psw,
                                     <const double *>pp, &a, m,
                                     n_threads)
            else:
                st = bp_backward_f32(<float *>pg, <float **>pd, <float **>pn,
                                     <float **>po, &loss, <const float *>px,
                                     <const float *>py, <const float *>psw,
                                     <const float *>pp, &a, m,
                                     n_threads)
        free(pd)
        free(pn)
        free(po)
        _check(st, "backward")
        return loss

    def train_workspace(self, int64_t batch, int n_threads):
        """A workspace for train() with batches of at most batch rows (with
        dropout, for the general path the masks need)."""
        cdef int64_t need = 0
        cdef bp_arch a
        self._with_drop(&a, 0)
        _check(bp_train_workspace_bytes(&need, &a, batch, n_threads,
                                        self.f64), "fit")
        return np.empty(need, dtype=np.uint8)

    def train_syncs(self, int64_t batch, int cut=BP_CUT_AUTO):
        """Team synchronisations of one training batch of batch rows cut as
        cut says (CUT_*), as train() counts them for its choice of team
        (dropout included)."""
        cdef bp_arch a
        self._with_drop(&a, 0)
        return bp_train_syncs(&a, batch, self.f64, cut)

    def train_cut(self, int64_t batch, int n_threads):
        """(the cut train() takes by default for a team of n_threads on
        batches of batch rows, whether the other cut is worth timing):
        CUT_COLUMNS or CUT_SAMPLES, and a bool (bp_train_cut)."""
        cdef bp_arch a
        cdef int both = 0
        self._with_drop(&a, 0)
        cut = bp_train_cut(&a, batch, n_threads, self.f64, &both)
        return cut, bool(both)

    def train(self, cnp.ndarray params, cnp.ndarray grad, dict opt,
              cnp.ndarray X, cnp.ndarray Y, object sw, object order,
              int64_t batch, int64_t first_batch, int64_t n_batches,
              cnp.ndarray work, int n_threads, double lsum=0.0,
              double wsum=0.0, object drop_seed=None, int cut=BP_CUT_AUTO):
        """Run n_batches updates in C.

        Y is (m, n_L) targets, or for cross-entropy (m,) int64 class
        indices (expanded to one-hot rows a batch at a time in C).
        opt holds kind, lr, momentum, nesterov, weight_decay, beta1, beta2,
        eps, t, state1, state2 (arrays or None); t is updated in place,
        and so is the t of the optimizer object under "owner", if any.
        lsum and wsum are running sums that the batches add to.
        drop_seed (an int in [0, 2**64)): train with dropout, batch b's masks
        from bp_dropout_batch_seed(drop_seed, b).  cut: how a team shares a
        batch (CUT_AUTO, CUT_COLUMNS, CUT_SAMPLES); no result depends on it.
        Returns (loss_sum, weight_sum, batches_done, diverged).
        """
        cdef int64_t m = X.shape[0]
        cdef int64_t L = self.arch.n_layers - 1
        cdef bp_optim o
        cdef bp_arch a
        self._with_drop(&a, drop_seed)
        cdef int64_t done = 0
        cdef bp_status st
        cdef void *psw = NULL
        cdef void *pord = NULL
        cdef void *py = NULL
        cdef void *plab = NULL
        _need(params, self.dtype, (self.n_params,), "params")
        _need(grad, self.dtype, (self.n_params,), "grad")
        _need(X, self.dtype, (m, self.size(0)), "X")
        if Y.ndim == 1:
            _need(Y, np.int64, (m,), "labels")
            plab = _ptr(Y)
        else:
            _need(Y, self.dtype, (m, self.size(L)), "Y")
            py = _ptr(Y)
        if sw is not None:
            _need(sw, self.dtype, (m,), "sample_weight")
            psw = _ptr(sw)
        if order is not None:
            _need(order, np.int64, (m,), "order")
            pord = _ptr(order)
        if work.dtype != np.uint8 or not work.flags.c_contiguous:
            raise ValueError("internal: bad workspace")
        self._fill_optim(&o, opt)
        cdef void *pp = _ptr(params)
        cdef void *pg = _ptr(grad)
        cdef void *px = _ptr(X)
        cdef void *pw = _ptr(work)
        cdef int64_t wbytes = work.shape[0]
        with nogil:
            if self.f64:
                st = bp_train_f64(<double *>pp, <double *>pg, &o, &lsum, &wsum,
                                  &done, <const double *>px, <const double *>py,
                                  <const int64_t *>plab,
                                  <const double *>psw, <const int64_t *>pord,
                                  m, batch, first_batch, n_batches, &a,
                                  pw, wbytes, n_threads, cut)
            else:
                st = bp_train_f32(<float *>pp, <float *>pg, &o, &lsum, &wsum,
                                  &done, <const float *>px, <const float *>py,
                                  <const int64_t *>plab,
                                  <const float *>psw, <const int64_t *>pord,
                                  m, batch, first_batch, n_batches, &a,
                                  pw, wbytes, n_threads, cut)
        opt["t"] = o.t
        owner = opt.get("owner")
        if owner is not None:
            # at once, before any Python code could raise KeyboardInterrupt:
            # the step count always matches the updates made
            owner.t = o.t
        if st == BP_ENONFINITE:
            return lsum, wsum, done, True
        _check(st, "fit")
        return lsum, wsum, done, False

    def update(self, cnp.ndarray params, cnp.ndarray grad, dict opt,
               int n_threads):
        """One optimizer update of params from grad; opt['t'] is advanced."""
        cdef bp_optim o
        cdef bp_status st
        _need(params, self.dtype, (self.n_params,), "params")
        _need(grad, self.dtype, (self.n_params,), "grad")
        self._fill_optim(&o, opt)
        cdef void *pp = _ptr(params)
        cdef void *pg = _ptr(grad)
        cdef int64_t n = self.n_params
        cdef int64_t nw = self.n_weights
        with nogil:
            if self.f64:
                st = bp_optim_update_f64(<double *>pp, <const double *>pg, &o,
                                         n, nw, n_threads)
            else:
                st = bp_optim_update_f32(<float *>pp, <const float *>pg, &o,
                                         n, nw, n_threads)
        _check(st, "step")
        opt["t"] = o.t

    cdef int _fill_optim(self, bp_optim *o, dict opt) except -1:
        o.kind = opt["kind"]
        o.nesterov = 1 if opt.get("nesterov", False) else 0
        o.lr = opt["lr"]
        o.momentum = opt.get("momentum", 0.0)
        o.weight_decay = opt.get("weight_decay", 0.0)
        o.beta1 = opt.get("beta1", 0.9)
        o.beta2 = opt.get("beta2", 0.999)
        o.eps = opt.get("eps", 1e-8)
        o.t = opt["t"]
        clip = opt.get("clip_norm")
        o.clip_norm = 0.0 if clip is None else clip
        o.state1 = NULL
        o.state2 = NULL
        for key in ("state1", "state2"):
            a = opt.get(key)
            if a is not None:
                _need(a, self.dtype, (self.n_params,), key)
                if key == "state1":
                    o.state1 = _ptr(a)
                else:
                    o.state2 = _ptr(a)
        if o.kind != BP_OPT_SGD and (o.state1 == NULL or o.state2 == NULL):
            raise ValueError("internal: Adam needs both moment buffers")
        return 0
