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

from bpcore import _core
from bpcore import _validation as V
from bpcore._config import resolve_threads
from bpcore._errors import DistributedError, DivergenceError
from bpcore.optim import SGD, get_optimizer

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
            for s in opt._state:
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
        self.grad = np.empty_like(net._params)
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
        gd = np.empty_like(net._params)
        np.divide(g, W, out=gd, casting="unsafe")
    net._arch.update(net._params, gd, args, nt)
    opt.t = args["t"]


def _validate_fit(net, X, Y, epochs, batch_size, optimizer, shuffle,
                  sample_weight, validation_data, early_stopping, callbacks):
    """The single-process fit's checks, on the local shard."""
    from bpcore.network import EarlyStopping
    epochs = V.check_int(epochs, "epochs", minimum=1)
    if batch_size is not None:
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    opt = SGD(lr=0.1) if optimizer is None else get_optimizer(optimizer)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if early_stopping is not None and not isinstance(early_stopping,
                                                     EarlyStopping):
        raise TypeError(f"early_stopping must be a bpcore.EarlyStopping, "
                        f"got {type(early_stopping).__name__}")
    if callable(callbacks):
        callbacks = (callbacks,)
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError("callbacks must be a sequence of callables") from None
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables cb(epoch, logs), "
                            f"got {cb!r}")
    if getattr(opt, "_kind", None) is None or not hasattr(opt, "_c_args"):
        raise ValueError(f"fit with comm: the optimizer "
                         f"{type(opt).__name__} is not supported (SGD, "
                         f"Adam, AdamW are)")
    X, _ = net._inputs(X)
    m = X.shape[0]
    Y = net._targets(Y, m, labels=True)
    sw = V.as_sample_weight(sample_weight, "sample_weight", net._dtype, m)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(
                validation_data) not in (2, 3):
            raise TypeError("validation_data must be a tuple (X_val, Y_val)"
                            " or (X_val, Y_val, sample_weight_val)")
        Xv, _ = net._inputs(validation_data[0], "validation_data X")
        Yv = net._targets(validation_data[1], Xv.shape[0],
                          "validation_data Y", labels=True)
        swv = None
        if len(validation_data) == 3:
            swv = V.as_sample_weight(validation_data[2],
                                     "validation_data sample_weight",
                                     net._dtype, Xv.shape[0])
        val = (Xv, Yv, swv)
    return epochs, batch_size, opt, bool(shuffle), X, Y, sw, val, callbacks


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
    from bpcore.network import History, _Progress, _copy_bufs, _is_false
    dc = _Comm(comm)
    P = dc.size
    if P == 1:  # one rank: the single-process fit, bit for bit
        return net.fit(X, Y, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, shuffle=shuffle,
                       sample_weight=sample_weight,
                       validation_data=validation_data,
                       early_stopping=early_stopping, callbacks=callbacks,
                       progress=progress, n_threads=n_threads)
    with _Interrupts() as intr, contextlib.ExitStack() as held:
        err, info = None, [0] * 9
        try:
            (epochs, batch_size, opt, shuffle, X, Y, sw, val,
             callbacks) = _validate_fit(
                net, X, Y, epochs, batch_size, optimizer, shuffle,
                sample_weight, validation_data, early_stopping, callbacks)
            nt = resolve_threads(n_threads)
            opt.lr_at(opt.epoch)
            held.enter_context(net._guard.write())
            held.enter_context(opt._in_use())
            opt._bind(net.n_params, net._dtype)
            info = [X.shape[0], net.n_params, _DTYPE_CODES[net._dtype],
                    epochs, -1 if batch_size is None else batch_size,
                    int(shuffle), val is not None, len(opt._state),
                    X.shape[1]]
        except BaseException as e:
            err = e
        table = dc.agree(err, "fit", info)
        names = ("", "the number of parameters", "the dtype", "epochs",
                 "batch_size", "shuffle", "", "the optimizer's state",
                 "the number of features")
        for j, what in enumerate(names):
            if what and (table[:, j] != table[0, j]).any():
                raise ValueError(f"fit with comm: {what} differs across "
                                 f"ranks ({table[:, j].tolist()}); every "
                                 f"rank must build the same network and "
                                 f"call fit with the same arguments")
        sizes = table[:, 0]
        has_val = bool(table[:, 6].any())
        dc.bcast_state(net, opt)

        M = int(sizes.sum())
        lo = int(sizes[:dc.rank].sum())
        hi = lo + X.shape[0]
        B = M if batch_size is None else min(batch_size, M)
        n_batches = -(-M // B)
        params = net._params
        gfn = _Grad(net, min(B, X.shape[0]))
        hist = net.history = History()
        best, best_params, wait = math.inf, None, 0
        start_params = np.empty_like(params)
        start_bufs = [None if b is None else np.empty_like(b)
                      for b in opt._state]
        bar = _Progress(bool(progress) and dc.rank == 0, epochs)
        try:
            for e in range(epochs):
                np.copyto(start_params, params)
                _copy_bufs(start_bufs, opt._state)
                start_t, start_epoch = opt.t, opt.epoch
                args = opt._c_args()
                args["owner"] = None
                if shuffle:
                    order = net._rng.permutation(M)
                    mine = (order >= lo) & (order < hi)
                lsum = wsum = 0.0
                for b in range(n_batches):
                    g0, g1 = b * B, min(M, (b + 1) * B)
                    if shuffle:
                        sel = order[g0:g1][mine[g0:g1]] - lo
                        Xb, Yb = X[sel], Y[sel]
                        swb = None if sw is None else sw[sel]
                    else:  # a contiguous slice of the global order
                        s0, s1 = max(g0, lo) - lo, max(min(g1, hi), lo) - lo
                        Xb, Yb = X[s0:s1], Y[s0:s1]
                        swb = None if sw is None else sw[s0:s1]
                    g, Lb, Wb = _global_step(dc, gfn, Xb, Yb, swb, nt, intr)
                    what = None
                    if not math.isfinite(Lb):
                        what = (f"the loss became NaN or infinite in epoch "
                                f"{e} (batch {b})")
                    elif Wb > 0:
                        _apply(net, opt, args, g, Wb, nt, P)
                        if b + 1 == n_batches and not _core.all_finite(params):
                            what = (f"the parameters became NaN or infinite "
                                    f"in the last update of epoch {e}")
                    if what is not None:
                        np.copyto(params, start_params)
                        _copy_bufs(opt._state, start_bufs)
                        opt.t, opt.epoch = start_t, start_epoch
                        raise DivergenceError(
                            f"fit: {what}; the parameters of the last "
                            f"completed epoch were restored")
                    lsum += Lb
                    wsum += Wb
                opt.epoch += 1
                loss = lsum / wsum if wsum > 0 else float("nan")
                hist.loss.append(loss)
                logs = {"loss": loss, "val_loss": None, "lr": args["lr"]}
                if has_val:
                    vs, vw = _global_loss(dc, net, val, nt, "fit")
                    logs["val_loss"] = vs / vw if vw > 0 else float("nan")
                    hist.val_loss.append(logs["val_loss"])
                hist.epochs_run = e + 1
                watched = logs["val_loss"] if has_val else loss
                if early_stopping is not None:
                    improved = watched < best - early_stopping.min_delta
                else:
                    improved = watched < best
                if improved:
                    best, hist.best_epoch, wait = watched, e, 0
                    if early_stopping is not None and \
                            early_stopping.restore_best:
                        if best_params is None:
                            best_params = np.empty_like(params)
                        np.copyto(best_params, params)
                else:
                    wait += 1
                bar.epoch(e, epochs, logs)
                stop, err = False, None
                try:
                    for cb in callbacks:
                        if dc.rank != 0 and _rank0_only(cb):
                            continue
                        if _is_false(cb(e, dict(logs))):
                            stop = True
                    intr.check()
                except BaseException as ex:
                    err = ex
                if P == 1:
                    if err is not None:
                        raise err
                else:
                    stop = bool(dc.agree(err, "fit", [stop])[:, 0].any())
                if (early_stopping is not None and not improved
                        and wait >= early_stopping.patience):
                    stop = True
                if stop:
                    hist.stopped_early = e + 1 < epochs
                    break
            if best_params is not None:
                params[...] = best_params
        finally:
            bar.close()
    net.history = hist
    return hist


def step(net, comm, X, Y, optimizer, sample_weight=None, n_threads=None):
    """Network.step(..., comm=comm): rank 0's parameters and optimizer
    state are broadcast, then one update from the global batch made of every
    rank's rows (rank-major); returns the global loss before the update."""
    dc = _Comm(comm)
    if dc.size == 1:
        return net.step(X, Y, optimizer, sample_weight, n_threads)
    with _Interrupts() as intr, contextlib.ExitStack() as held:
        err, info = None, [0, 0, 0]
        try:
            opt = get_optimizer(optimizer)
            X, _ = net._inputs(X)
            m = X.shape[0]
            Y = net._targets(Y, m, labels=True)
            sw = V.as_sample_weight(sample_weight, "sample_weight",
                                    net._dtype, m)
            nt = resolve_threads(n_threads)
            held.enter_context(net._guard.write())
            held.enter_context(opt._in_use())
            opt._bind(net.n_params, net._dtype)
            info = [net.n_params, _DTYPE_CODES[net._dtype], len(opt._state)]
        except BaseException as e:
            err = e
        table = dc.agree(err, "step", info)
        if (table != table[0]).any():
            raise ValueError("step with comm: the network or optimizer "
                             "differs across ranks (parameters, dtype or "
                             "optimizer kind)")
        dc.bcast_state(net, opt)
        before = net._params.copy()
        bufs = [None if b is None else b.copy() for b in opt._state]
        t_before = opt.t
        args = opt._c_args()
        args["owner"] = None
        gfn = _Grad(net, m)
        g, L, W = _global_step(dc, gfn, X, Y, sw, nt, intr, "step")
        if not math.isfinite(L) or not W > 0:
            if not W > 0:
                raise ValueError("step: the sample weights of all ranks sum "
                                 "to zero")
            raise DivergenceError("step: the loss is NaN or infinite; the "
                                  "parameters were not changed")
        _apply(net, opt, args, g, W, nt, dc.size)
        if not _core.all_finite(net._params):
            from bpcore.network import _copy_bufs
            np.copyto(net._params, before)
            _copy_bufs(opt._state, bufs)
            opt.t = t_before
            raise DivergenceError("step: the update makes the parameters "
                                  "NaN or infinite; the parameters were not "
                                  "changed")
    return L / W


def evaluate(net, comm, X, Y, sample_weight=None, n_threads=None):
    """Network.evaluate(..., comm=comm): the global weighted mean loss over
    every rank's rows, with each rank's own parameters (the same after
    fit/step with this comm)."""
    dc = _Comm(comm)
    if dc.size == 1:
        return net.evaluate(X, Y, sample_weight, n_threads)
    err, data, nt = None, None, 1
    try:
        X, _ = net._inputs(X)
        Y = net._targets(Y, X.shape[0], labels=True)
        sw = V.as_sample_weight(sample_weight, "sample_weight", net._dtype,
                                X.shape[0])
        nt = resolve_threads(n_threads)
        data = (X, Y, sw)
    except BaseException as e:
        err = e
    dc.agree(err, "evaluate")
    with net._guard.read():
        ls, w = _global_loss(dc, net, data, nt, "evaluate")
    if not w > 0:
        raise ValueError("evaluate: the sample weights of all ranks sum to "
                         "zero")
    return ls / w
