"""Data-parallel training over MPI: ``fit``, ``step`` and ``evaluate`` with
``comm=`` (an mpi4py communicator).  The C core knows nothing of MPI.

Semantics (also in the README, "Scaling out"):

- Every rank passes its own rows (its shard).  The *global row order* is
  the rank-major concatenation of the shards: rank 0's rows, then rank 1's,
  and so on.  ``batch_size`` is the global batch size.
- Each epoch the network's generator (broadcast from rank 0, so identical
  everywhere) draws one permutation of all M global rows, exactly as a
  single process does for ``fit`` on the concatenated rows; global batch b
  is the slice ``[b*B, (b+1)*B)`` of that order, and each rank computes the
  gradient of the rows of that batch it holds.  Shards of any sizes work:
  a rank holding no row of a batch contributes nothing to it.
- Gradients are combined as sample-weighted sums, so the loss is the global
  weighted mean, as for one process.  The reduction has a fixed order: an
  ``Alltoall`` hands chunk j of every rank's (float64) vector to rank j,
  which adds the P pieces in rank order; an ``Allgather`` then hands the
  summed chunks to every rank.  Every rank thus receives the same bits
  (which no MPI guarantees of ``Allreduce``), at the bytes of a ring
  allreduce.  All ranks then apply the same optimizer update, so the
  parameters stay bitwise identical.
- Errors: each collective carries a status flag; a rank that failed (bad
  input, an exception in a callback, Ctrl-C) still joins the next
  collective, then re-raises its own exception, while the other ranks raise
  :class:`bpcore.DistributedError` naming the failed rank.  No rank hangs;
  no update is applied half-way.

Only buffers (parameters, gradients, optimizer state) go through the
buffer methods (``Bcast``, ``Alltoall``, ``Allgather``); a few tiny values
(the generator state, error messages) use mpi4py's pickle-based
lower-case methods.
"""
import contextlib
import math
import signal
import threading

import numpy as np

from bpcore import _aligned
from bpcore import _core
from bpcore import _training
from bpcore import _validation as V
from bpcore._config import resolve_threads
from bpcore._errors import DistributedError, DivergenceError
from bpcore._fitargs import check_fit_options
from bpcore.optim import get_optimizer

__all__ = ["fit", "step", "evaluate"]

_DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2}


class _Comm:
    """The collectives bpcore needs, on an mpi4py communicator."""

    def __init__(self, comm):
        for attr in ("Get_rank", "Get_size", "Alltoall", "Allgather", "Bcast"):
            if not hasattr(comm, attr):
                raise TypeError(f"comm must be an mpi4py communicator (such "
                                f"as MPI.COMM_WORLD), got "
                                f"{type(comm).__name__}")
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())

    def gather_ints(self, values):
        """Every rank's int64 vector (same length everywhere): (P, k)."""
        a = np.ascontiguousarray(values, dtype=np.int64)
        out = np.empty((self.size, a.shape[0]), dtype=np.int64)
        self.comm.Allgather(a, out)
        return out

    def agree(self, err, what, values=()):
        """Collective status check: raise on every rank if any failed.

        Returns the (P, k) table of every rank's ``values``.
        """
        vals = [0 if err is None else 1] + [int(v) for v in values]
        table = self.gather_ints(vals)
        if table[:, 0].any():
            self.fail(err, table[:, 0], what)
        return table[:, 1:]

    def fail(self, err, flags, what):
        """Raise: the local exception on a failed rank, else a
        DistributedError naming the first failed rank (collective)."""
        msg = None if err is None else f"{type(err).__name__}: {err}"
        msgs = self.comm.allgather(msg)
        if err is not None:
            raise err
        bad = [r for r in range(self.size) if flags[r]]
        r = bad[0]
        raise DistributedError(
            f"{what}: rank {r} of {self.size} failed ({msgs[r] or 'error'}); "
            f"every rank stops, the parameters are those of the last "
            f"completed update", rank=r, remote=msgs[r])

    def ordered_sum(self, v):
        """Sum of every rank's float64 vector v, in rank order, with the
        same bits on every rank (Alltoall + add in rank order + Allgather).
        """
        P, k = self.size, v.shape[0]
        if P == 1:
            return v.copy()
        c = -(-k // P)
        send = np.zeros(P * c, dtype=np.float64)
        send[:k] = v
        recv = np.empty(P * c, dtype=np.float64)
        self.comm.Alltoall(send, recv)
        parts = recv.reshape(P, c)
        acc = parts[0].copy()
        for r in range(1, P):
            acc += parts[r]
        out = np.empty(P * c, dtype=np.float64)
        self.comm.Allgather(acc, out)
        return out[:k]

    def bcast_state(self, net, opt):
        """Rank 0's parameters, optimizer state and generator state."""
        self.comm.Bcast(net._params, root=0)
        if opt is not None:
            for s in opt._buffers():
                if s is not None:
                    self.comm.Bcast(s, root=0)
            counts = np.array([opt.t, opt.epoch], dtype=np.int64)
            self.comm.Bcast(counts, root=0)
            opt.t, opt.epoch = int(counts[0]), int(counts[1])
        state = self.comm.bcast(net._rng.bit_generator.state
                                if self.rank == 0 else None, root=0)
        net._rng.bit_generator.state = state


class _Interrupts:
    """While active (main thread only), SIGINT sets a flag instead of
    raising at once; the training loop turns it into KeyboardInterrupt at
    the next collective, so that every rank learns of it."""

    def __init__(self):
        self.fired = False
        self._old = None

    def _handler(self, signum, frame):
        self.fired = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except ValueError:
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False

    def check(self):
        if self.fired:
            self.fired = False
            raise KeyboardInterrupt("interrupted (SIGINT) on this rank")


def _one_hot_if(net, Yb):
    if Yb.ndim == 1:
        return V.one_hot(Yb, net._layers[-1], net._dtype)
    return Yb


class _Grad:
    """Buffers for the local gradient of batches of at most `rows` rows."""

    def __init__(self, net, rows):
        self.net = net
        self.rows = max(1, rows)
        self.grad = _aligned.empty_like(net._params)
        self.trn = [np.empty((self.rows, n), dtype=net._dtype)
                    for n in net._layers]
        self.tro = [np.empty((self.rows, n), dtype=net._dtype)
                    for n in net._layers]
        self.delta = [None] + [np.empty((self.rows, n), dtype=net._dtype)
                               for n in net._layers[1:]]

    def __call__(self, Xb, Yb, swb, nt):
        """(mean loss, weight sum) of these rows; grad holds the mean
        gradient.  (0, 0) and a zero gradient for no rows or no weight."""
        mb = Xb.shape[0]
        w = float(mb) if swb is None else float(swb.sum(dtype=np.float64))
        if mb == 0 or not w > 0:
            self.grad.fill(0)
            return 0.0, 0.0
        net = self.net
        Yb = np.ascontiguousarray(_one_hot_if(net, Yb))
        Xb = np.ascontiguousarray(Xb)
        if swb is not None:
            swb = np.ascontiguousarray(swb)
        loss = net._arch.backward(
            net._params, Xb, Yb, swb, self.grad,
            [None] + [d[:mb] for d in self.delta[1:]],
            [a[:mb] for a in self.trn], [a[:mb] for a in self.tro], nt)
        return float(loss), w


def _global_step(dc, gfn, Xb, Yb, swb, nt, intr, what="fit"):
    """Local gradient then the ordered exchange: returns (global gradient
    as float64 or the local one for P = 1, loss sum, weight sum)."""
    err = None
    n = gfn.grad.shape[0]
    try:
        if intr is not None:
            intr.check()
        loss, w = gfn(Xb, Yb, swb, nt)
    except BaseException as e:  # announced to every rank below
        err, loss, w = e, 0.0, 0.0
    if dc.size == 1:
        if err is not None:
            raise err
        return gfn.grad, loss * w, w
    vec = np.empty(n + 3, dtype=np.float64)
    if err is None:
        np.multiply(gfn.grad, w, out=vec[:n], dtype=np.float64,
                    casting="unsafe")
    else:
        vec[:n] = 0.0
    vec[n], vec[n + 1], vec[n + 2] = loss * w, w, 0.0 if err is None else 1.0
    tot = dc.ordered_sum(vec)
    if tot[n + 2] > 0:
        flags = dc.gather_ints([0 if err is None else 1])[:, 0]
        dc.fail(err, flags, what)
    return tot[:n], float(tot[n]), float(tot[n + 1])


def _apply(net, opt, args, g, W, nt, P):
    """The optimizer update from a global gradient (sum for P > 1)."""
    if P == 1:
        gd = g
    else:
        gd = _aligned.empty_like(net._params)
        np.divide(g, W, out=gd, casting="unsafe")
    net._arch.update(net._params, gd, args, nt)
    opt.t = args["t"]


def _validate_fit(net, X, Y, epochs, batch_size, optimizer, shuffle,
                  sample_weight, validation_data, early_stopping, callbacks):
    """The single-process fit's checks, on the local shard."""
    epochs, batch_size, opt, shuffle, callbacks = check_fit_options(
        epochs, batch_size, optimizer, shuffle, early_stopping, callbacks)
    if getattr(opt, "_kind", None) is None or not hasattr(opt, "_c_args"):
        raise ValueError(f"fit with comm: the optimizer "
                         f"{type(opt).__name__} is not supported (SGD, "
                         f"Adam, AdamW are)")
    X, Y, sw = net._checked_data(X, Y, sample_weight)
    val = net._validation(validation_data, rows=False)
    return epochs, batch_size, opt, shuffle, X, Y, sw, val, callbacks


def _local_loss(net, data, nt):
    """(loss sum, weight sum) of local (X, Y, sw), or zeros for None."""
    if data is None:
        return 0.0, 0.0
    X, Y, sw = data
    w = float(X.shape[0]) if sw is None else float(sw.sum(dtype=np.float64))
    if not w > 0:
        return 0.0, 0.0
    return float(net._loss_on(X, Y, sw, nt)) * w, w


def _global_loss(dc, net, data, nt, what):
    err = None
    try:
        ls, w = _local_loss(net, data, nt)
    except BaseException as e:
        err, ls, w = e, 0.0, 0.0
    if dc.size == 1:
        if err is not None:
            raise err
        return ls, w
    tot = dc.ordered_sum(np.array([ls, w, 0.0 if err is None else 1.0]))
    if tot[2] > 0:
        dc.fail(err, dc.gather_ints([0 if err is None else 1])[:, 0], what)
    return float(tot[0]), float(tot[1])


def _rank0_only(cb):
    """Callbacks that write files run on rank 0 only: those of
    bpcore.callbacks (ModelCheckpoint, CSVLogger) and any with a true
    ``rank_zero_only`` attribute."""
    if getattr(cb, "rank_zero_only", False):
        return True
    return type(cb).__module__ == "bpcore.callbacks"


def fit(net, comm, X, Y, epochs=10, batch_size=32, optimizer=None,
        shuffle=True, sample_weight=None, validation_data=None,
        early_stopping=None, callbacks=(), progress=False, n_threads=None):
    """Network.fit(..., comm=comm): see the module docstring."""
    dc = _Comm(comm)
    if dc.size == 1:  # one rank: the single-process fit, bit for bit
        return net.fit(X, Y, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, shuffle=shuffle,
                       sample_weight=sample_weight,
                       validation_data=validation_data,
                       early_stopping=early_stopping, callbacks=callbacks,
                       progress=progress, n_threads=n_threads)
    with _Interrupts() as intr, contextlib.ExitStack() as held:
        run = _Fit(net, dc, intr, early_stopping)
        run.setup(held, X, Y, epochs, batch_size, optimizer, shuffle,
                  sample_weight, validation_data, callbacks, n_threads)
        hist = run.train(progress)
    net.history = hist
    return hist


# fit's settings that every rank must share, in the order of _Fit.setup's
# table (the row count and the presence of validation data may differ)
_SHARED = ("", "the number of parameters", "the dtype", "epochs",
           "batch_size", "shuffle", "", "the optimizer's state",
           "the number of features")


class _Fit:
    """One data-parallel fit: the shard, the global batch layout, the
    epoch loop."""

    def __init__(self, net, dc, intr, early):
        self.net, self.dc, self.intr, self.early = net, dc, intr, early

    def setup(self, held, X, Y, epochs, batch_size, optimizer, shuffle,
              sample_weight, validation_data, callbacks, n_threads):
        """Check the arguments on every rank (an error on one raises on
        all), hold the network and the optimizer (in held), agree on the
        shared settings, lay out the global batches and broadcast rank 0's
        state."""
        net, err, info = self.net, None, [0] * len(_SHARED)
        try:
            (self.epochs, batch_size, self.opt, self.shuffle, self.X, self.Y,
             self.sw, self.val, self.callbacks) = _validate_fit(
                net, X, Y, epochs, batch_size, optimizer, shuffle,
                sample_weight, validation_data, self.early, callbacks)
            self.nt = resolve_threads(n_threads)
            opt = self.opt
            opt.lr_at(opt.epoch)
            held.enter_context(net._guard.write())
            held.enter_context(opt._in_use())
            opt._bind(net.n_params, net._dtype)
            info = [self.X.shape[0], net.n_params, _DTYPE_CODES[net._dtype],
                    self.epochs, -1 if batch_size is None else batch_size,
                    int(self.shuffle), self.val is not None,
                    opt._buffer_count(), self.X.shape[1]]
        except BaseException as e:
            err = e
        table = self.dc.agree(err, "fit", info)
        _check_shared(table)
        self._layout(table, batch_size)
        self.dc.bcast_state(net, self.opt)

    def _layout(self, table, batch_size):
        """The global rows (rank-major), this rank's share [lo, hi) of them,
        and the global batches."""
        sizes = table[:, 0]
        self.has_val = bool(table[:, 6].any())
        self.M = int(sizes.sum())
        self.lo = int(sizes[:self.dc.rank].sum())
        self.hi = self.lo + self.X.shape[0]
        self.B = self.M if batch_size is None else min(batch_size, self.M)
        self.n_batches = -(-self.M // self.B)
        self.gfn = _Grad(self.net, min(self.B, self.X.shape[0]))

    def train(self, progress):
        """The epochs; returns the History (the same on every rank)."""
        net, opt = self.net, self.opt
        hist = net.history = _training.History()
        self.watch = _training.EpochWatch(self.early)
        # the start of each epoch, restored when the epoch fails
        saved = opt._checkpoint(net._params)
        bar = _training.Progress(bool(progress) and self.dc.rank == 0,
                                 self.epochs)
        try:
            for e in range(self.epochs):
                saved.take()
                args = opt._c_args()
                args["owner"] = None
                lsum, wsum = self._epoch(e, args, saved)
                opt.epoch += 1
                if self._end_epoch(e, args, lsum, wsum, hist, bar):
                    hist.stopped_early = e + 1 < self.epochs
                    break
            self.watch.restore_best(net._params)
        finally:
            bar.close()
        return hist

    def _epoch(self, e, args, saved):
        """Every global batch of epoch e: (loss sum, weight sum)."""
        order = mine = None
        if self.shuffle:
            order = self.net._rng.permutation(self.M)
            mine = (order >= self.lo) & (order < self.hi)
        lsum = wsum = 0.0
        for b in range(self.n_batches):
            Xb, Yb, swb = self._batch_rows(b, order, mine)
            g, Lb, Wb = _global_step(self.dc, self.gfn, Xb, Yb, swb, self.nt,
                                     self.intr)
            self._update(e, b, args, g, Lb, Wb, saved)
            lsum += Lb
            wsum += Wb
        return lsum, wsum

    def _batch_rows(self, b, order, mine):
        """This rank's rows of global batch b: (X, Y, sample weights)."""
        g0, g1 = b * self.B, min(self.M, (b + 1) * self.B)
        if order is not None:
            sel = order[g0:g1][mine[g0:g1]] - self.lo
        else:  # a contiguous slice of the global order
            lo, hi = self.lo, self.hi
            sel = slice(max(g0, lo) - lo, max(min(g1, hi), lo) - lo)
        return (self.X[sel], self.Y[sel],
                None if self.sw is None else self.sw[sel])

    def _update(self, e, b, args, g, Lb, Wb, saved):
        """The optimizer update of batch b from the global gradient; the
        epoch is undone when the loss or the parameters are not finite."""
        net, what = self.net, None
        if not math.isfinite(Lb):
            what = f"the loss became NaN or infinite in epoch {e} (batch {b})"
        elif Wb > 0:
            _apply(net, self.opt, args, g, Wb, self.nt, self.dc.size)
            if (b + 1 == self.n_batches
                    and not _core.all_finite(net._params)):
                what = (f"the parameters became NaN or infinite in the last "
                        f"update of epoch {e}")
        if what is not None:
            saved.restore()
            raise DivergenceError(f"fit: {what}; the parameters of the last "
                                  f"completed epoch were restored")

    def _end_epoch(self, e, args, lsum, wsum, hist, bar):
        """Record epoch e (global losses, best parameters, progress,
        callbacks); True, on every rank alike, when training stops."""
        loss = lsum / wsum if wsum > 0 else float("nan")
        val = self._val_loss if self.has_val else None
        logs, watched = _training.record_epoch(hist, e, loss, args["lr"],
                                               val)
        improved = self.watch.update(e, watched, hist, self.net._params)
        bar.epoch(e, self.epochs, logs)
        stop = self._callbacks(e, logs)
        return stop or self.watch.out_of_patience(improved)

    def _val_loss(self):
        """The global validation loss (collective)."""
        vs, vw = _global_loss(self.dc, self.net, self.val, self.nt, "fit")
        return vs / vw if vw > 0 else float("nan")

    def _callbacks(self, e, logs):
        """Run the callbacks (rank 0's own on rank 0 only); True on every
        rank when one on any rank asks to stop (collective)."""
        stop, err = False, None
        try:
            stop = _training.run_callbacks(
                self.callbacks, e, logs,
                skip=lambda cb: self.dc.rank != 0 and _rank0_only(cb))
            self.intr.check()
        except BaseException as ex:
            err = ex
        return bool(self.dc.agree(err, "fit", [stop])[:, 0].any())


def _check_shared(table):
    """Every rank must hold the same network and fit settings."""
    for j, what in enumerate(_SHARED):
        if what and (table[:, j] != table[0, j]).any():
            raise ValueError(f"fit with comm: {what} differs across "
                             f"ranks ({table[:, j].tolist()}); every "
                             f"rank must build the same network and "
                             f"call fit with the same arguments")


def step(net, comm, X, Y, optimizer, sample_weight=None, n_threads=None):
    """Network.step(..., comm=comm): rank 0's parameters and optimizer
    state are broadcast, then one update from the global batch made of every
    rank's rows (rank-major); returns the global loss before the update."""
    dc = _Comm(comm)
    if dc.size == 1:
        return net.step(X, Y, optimizer, sample_weight, n_threads)
    with _Interrupts() as intr, contextlib.ExitStack() as held:
        opt, X, Y, sw, nt = _step_setup(dc, held, net, X, Y, optimizer,
                                        sample_weight, n_threads)
        dc.bcast_state(net, opt)
        # kept to undo an update that makes the parameters non-finite
        saved = opt._checkpoint(net._params).take()
        args = opt._c_args()
        args["owner"] = None
        g, L, W = _global_step(dc, _Grad(net, X.shape[0]), X, Y, sw, nt,
                               intr, "step")
        if not W > 0:
            raise ValueError("step: the sample weights of all ranks sum "
                             "to zero")
        if not math.isfinite(L):
            raise DivergenceError("step: the loss is NaN or infinite; the "
                                  "parameters were not changed")
        _apply(net, opt, args, g, W, nt, dc.size)
        if not _core.all_finite(net._params):
            saved.restore()
            raise DivergenceError("step: the update makes the parameters "
                                  "NaN or infinite; the parameters were not "
                                  "changed")
    return L / W


def _step_setup(dc, held, net, X, Y, optimizer, sample_weight, n_threads):
    """step's checks and holds (in held) on every rank, an error on one
    raising on all: (optimizer, X, Y, sample weights, threads)."""
    err, info = None, [0, 0, 0]
    opt, data, nt = None, (None, None, None), 1
    try:
        opt = get_optimizer(optimizer)
        data = net._checked_data(X, Y, sample_weight)
        nt = resolve_threads(n_threads)
        held.enter_context(net._guard.write())
        held.enter_context(opt._in_use())
        opt._bind(net.n_params, net._dtype)
        info = [net.n_params, _DTYPE_CODES[net._dtype], opt._buffer_count()]
    except BaseException as e:
        err = e
    table = dc.agree(err, "step", info)
    if (table != table[0]).any():
        raise ValueError("step with comm: the network or optimizer "
                         "differs across ranks (parameters, dtype or "
                         "optimizer kind)")
    return (opt,) + tuple(data) + (nt,)


def evaluate(net, comm, X, Y, sample_weight=None, n_threads=None):
    """Network.evaluate(..., comm=comm): the global weighted mean loss over
    every rank's rows, with each rank's own parameters (the same after
    fit/step with this comm)."""
    dc = _Comm(comm)
    if dc.size == 1:
        return net.evaluate(X, Y, sample_weight, n_threads)
    err, data, nt = None, None, 1
    try:
        data = net._checked_data(X, Y, sample_weight)
        nt = resolve_threads(n_threads)
    except BaseException as e:
        err = e
    dc.agree(err, "evaluate")
    with net._guard.read():
        ls, w = _global_loss(dc, net, data, nt, "evaluate")
    if not w > 0:
        raise ValueError("evaluate: the sample weights of all ranks sum to "
                         "zero")
    return ls / w
