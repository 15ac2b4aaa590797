"""Full-batch L-BFGS for :meth:`bpcore.Network.fit`, driven by SciPy.

The loss and its gradient come from the C core in one call per evaluation
(the backward pass over all rows, in blocks of rows to bound memory);
SciPy's ``minimize(method="L-BFGS-B")`` picks the points.  SciPy is an
optional dependency, imported when the optimizer is used.
"""
import contextlib
import math
import threading
import warnings

import numpy as np

from bpcore import _aligned
from bpcore import _training
from bpcore import _validation as V
from bpcore._errors import ConvergenceWarning, DivergenceError

__all__ = ["LBFGS"]

# Rows per backward call (bounds the memory of the layer traces).
_ROWS = 8192


def _scipy_minimize():
    try:
        import scipy.optimize
    except ImportError:
        raise ImportError(
            "bpcore.LBFGS (and solver='lbfgs') needs SciPy, which is not "
            "installed: pip install scipy  (or: pip install bpcore[lbfgs])"
        ) from None
    return scipy.optimize


def _one_blas_thread():
    """L-BFGS-B's BLAS calls work on vectors of n_params: one thread.  A
    multithreaded BLAS (OpenBLAS) would start and spin its threads at every
    small call, competing with the core's OpenMP threads for the CPUs;
    limited with threadpoolctl when it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _scipy_version():
    import scipy
    try:
        return tuple(int(p) for p in scipy.__version__.split(".")[:2])
    except ValueError:  # pragma: no cover - unusual version strings
        return (99, 0)


class LBFGS:
    """Full-batch L-BFGS (SciPy's L-BFGS-B without bounds) for ``fit``.

    ``net.fit(X, Y, optimizer=bpcore.LBFGS())`` runs one minimisation of the
    network's loss over all of X: every evaluation is one pass of the C
    core over the data giving the loss and the gradient.  ``epochs``,
    ``batch_size`` and ``shuffle`` do not apply (the limits are
    ``max_iter`` and ``max_fun``); the history has one entry per L-BFGS
    iteration (the loss at the iterate it reached), and the callbacks,
    ``validation_data`` and ``early_stopping`` run after each iteration (a
    callback returning False stops).  Each ``fit`` starts a fresh
    L-BFGS memory from the network's current parameters.  Stopping on the
    ``max_iter`` or ``max_fun`` limit, or on a line-search failure, warns
    :class:`bpcore.ConvergenceWarning`, as scikit-learn's lbfgs does.

    Parameters
    ----------
    max_iter : int >= 1, default=200
        Most iterations (SciPy's ``maxiter``).
    tol : float >= 0, default=1e-4
        Stop when the largest gradient component is at most ``tol``
        (SciPy's ``gtol``, as scikit-learn passes its ``tol``).
    max_fun : int >= 1, default=15000
        Most loss evaluations (SciPy's ``maxfun``).
    history : int >= 1, default=10
        Correction pairs kept (SciPy's ``maxcor``).

    Attributes (after a fit)
    ------------------------
    n_iter : int
        Iterations run (at most ``max_iter``).
    n_fun : int
        Loss evaluations.
    status, message :
        SciPy's status code and message (0: converged).
    """

    def __init__(self, max_iter=200, tol=1e-4, max_fun=15000, history=10):
        self.max_iter = V.check_int(max_iter, "max_iter", minimum=1)
        self.tol = V.check_float(tol, "tol", low=0.0)
        self.max_fun = V.check_int(max_fun, "max_fun", minimum=1)
        self.history = V.check_int(history, "history", minimum=1)
        self.n_iter = 0
        self.n_fun = 0
        self.status = None
        self.message = None
        self._lock = threading.Lock()

    # no learning rate: what fit's logs and CSVLogger show
    lr = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self):
        return (f"LBFGS(max_iter={self.max_iter}, tol={self.tol}, max_fun="
                f"{self.max_fun}, history={self.history})")

    def _in_use(self):
        opt = self

        class _Held:
            def __enter__(self):
                if not opt._lock.acquire(blocking=False):
                    raise RuntimeError(
                        "optimizer: already in use by a fit running in "
                        "another thread; give each concurrent training its "
                        "own optimizer")

            def __exit__(self, *exc):
                opt._lock.release()

        return _Held()

    def _options(self):
        opts = {"maxfun": self.max_fun, "maxiter": self.max_iter,
                "gtol": self.tol, "maxcor": self.history}
        if _scipy_version() < (1, 15):
            opts["iprint"] = -1  # older SciPy: silent, as scikit-learn
        return opts


class _Objective:
    """Loss and gradient of a network on validated arrays, for SciPy.

    value = loss_scale * E + loss_shift + alpha/2 ||W||^2 / sw_sum
    gradient = dE/dparams + alpha W / sw_sum (weights only)
    (E the network's loss, weighted mean over samples).  With
    loss_scale != 1 the value is scaled but the gradient is not: that is
    scikit-learn's squared_error for several outputs (its loss is averaged
    over outputs, its gradient is not), replicated by bpcore.sklearn.
    """

    def __init__(self, net, X, Y, sw, nt, alpha=0.0, loss_scale=1.0,
                 loss_shift=0.0, value_fn=None):
        self.net, self.X, self.Y, self.sw, self.nt = net, X, Y, sw, nt
        # value_fn(out, Y, sw) -> the data loss of a block of rows from its
        # output activations, used as E's value (the gradient stays E's)
        self.value_fn = value_fn
        self.alpha, self.loss_scale, self.loss_shift = (
            alpha, loss_scale, loss_shift)
        m = X.shape[0]
        self.sw_sum = float(m) if sw is None else float(
            sw.sum(dtype=np.float64))
        self.blocks = []
        for r0 in range(0, m, _ROWS):
            r1 = min(m, r0 + _ROWS)
            w = float(r1 - r0) if sw is None else float(
                sw[r0:r1].sum(dtype=np.float64))
            if w > 0:
                self.blocks.append((r0, r1, w))
        rows = max(r1 - r0 for r0, r1, _ in self.blocks)
        self.trace = (net._trace_arrays(rows), net._trace_arrays(rows),
                      [None] + [np.empty((rows, n), dtype=net.dtype)
                                for n in net.layers[1:]])
        self.gbuf = _aligned.empty_like(net.params)
        self.n_weights = net._n_weights
        self.n_eval = 0

    def data_loss(self, out_grad=None):
        """E at the network's current parameters (and dE/dp into
        out_grad, float64)."""
        net = self.net
        if out_grad is not None:
            out_grad[...] = 0.0
        total = 0.0
        for r0, r1, w in self.blocks:
            n = r1 - r0
            tn, to, td = self.trace
            tn = [None] + [a[:n] for a in tn[1:]]
            to = [None] + [a[:n] for a in to[1:]]
            td = [None] + [a[:n] for a in td[1:]]
            swb = None if self.sw is None else self.sw[r0:r1]
            loss = net._arch.backward(net._params, self.X[r0:r1],
                                      self.Y[r0:r1], swb, self.gbuf, td, tn,
                                      to, self.nt)
            if self.value_fn is not None:
                loss = self.value_fn(to[-1], self.Y[r0:r1], swb)
            f = w / self.sw_sum
            if len(self.blocks) == 1:
                total = loss
                if out_grad is not None:
                    out_grad[...] = self.gbuf
            else:
                total += loss * f
                if out_grad is not None:
                    out_grad += self.gbuf.astype(np.float64) * f
        return float(total)

    def __call__(self, x):
        net = self.net
        net._params[...] = x
        g = np.empty(x.shape[0], dtype=np.float64)
        E = self.data_loss(g)
        self.n_eval += 1
        self.last = (x.copy(), E)
        value = self.loss_scale * E + self.loss_shift
        if self.alpha:
            W = x[:self.n_weights]
            value += 0.5 * self.alpha * float(np.dot(W, W)) / self.sw_sum
            g[:self.n_weights] += (self.alpha / self.sw_sum) * W
        if not math.isfinite(value):
            value = math.inf  # SciPy's line search backs off from it
        return value, g



def minimize(opt, objective, on_iter=None):
    """Run SciPy's L-BFGS-B from the network's parameters.

    on_iter(k, value, E) after each iteration k (from 0) with the objective
    value and the data loss E at the new iterate; returning False stops.
    The network ends at SciPy's result (or, after an exception, at the
    last completed iterate).  Returns SciPy's OptimizeResult.
    """
    so = _scipy_minimize()
    net = objective.net
    x0 = net._params.astype(np.float64)
    last = [x0.copy()]
    objective.last = (None, None)

    def callback(intermediate_result):
        x = intermediate_result.x
        last[0] = x.copy()
        k = len(iters)
        iters.append(k)
        if on_iter is None:
            return
        value = float(intermediate_result.fun)
        x_seen, E = objective.last
        if x_seen is None or not np.array_equal(x_seen, x):
            net._params[...] = x
            E = objective.data_loss()
        # the network holds the iterate while callbacks run
        net._params[...] = x
        if on_iter(k, value, E) is False:
            raise StopIteration

    iters = []
    try:
        with _one_blas_thread():
            res = so.minimize(objective, x0, method="L-BFGS-B", jac=True,
                              callback=callback, options=opt._options())
    except BaseException:
        net._params[...] = last[0]
        raise
    _record(opt, res)
    _finish(net, res, x0)
    return res


def _record(opt, res):
    """SciPy's counts and status, kept on the LBFGS object."""
    opt.n_iter = min(int(res.nit), opt.max_iter)
    opt.n_fun = int(res.nfev)
    opt.status = int(res.status)
    opt.message = str(res.message)


def _finish(net, res, x0):
    """Put SciPy's result into the network; the start x0 instead (and
    DivergenceError) when it is not finite in the network's dtype."""
    if not np.isfinite(res.x).all() or not math.isfinite(res.fun):
        net._params[...] = x0
        raise DivergenceError("fit (LBFGS): the loss became NaN or "
                              "infinite; the starting parameters were "
                              "restored")
    net._params[...] = res.x
    if not np.isfinite(net._params).all():
        net._params[...] = x0
        raise DivergenceError("fit (LBFGS): the parameters overflow the "
                              "network's dtype; the starting parameters "
                              "were restored")


def convergence_message(res, n_iter, max_iter, scaling_hint=False):
    """scikit-learn's wording for an L-BFGS run that did not converge."""
    msg = (f"lbfgs failed to converge after {n_iter} iteration(s) "
           f"(status={res.status}):\n{res.message}\n")
    if n_iter == max_iter:
        msg += (f"\nIncrease the number of iterations to improve the "
                f"convergence (max_iter={max_iter}).")
    if scaling_hint:
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/"
                "preprocessing.html")
    return msg


def fit_network(net, X, Y, sw, val, opt, early, callbacks, progress, nt):
    """Network.fit with an LBFGS optimizer (arrays already validated)."""
    if Y.ndim == 1:  # class indices
        Y = V.one_hot(Y, net.layers[-1], net.dtype)
    objective = _Objective(net, X, Y, sw, nt)
    hist = net.history = _training.History()
    bar = _training.Progress(bool(progress), opt.max_iter)
    watch = _training.EpochWatch(early)
    val_loss = _validation_loss(net, val, nt)
    stopped = []

    def on_iter(k, value, E):
        """One iteration's history entry, callbacks and early stopping;
        False stops."""
        logs, watched = _training.record_epoch(hist, k, E, None, val_loss)
        improved = watch.update(k, watched, hist, net._params)
        bar.epoch(k, opt.max_iter, logs)
        stop = _training.run_callbacks(callbacks, k, logs)
        if stop or watch.out_of_patience(improved):
            stopped.append(k)
            return False
        return True

    try:
        res = minimize(opt, objective, on_iter)
    finally:
        bar.close()
    if stopped:
        hist.stopped_early = True
    elif res.status != 0:
        warnings.warn(convergence_message(res, opt.n_iter, opt.max_iter),
                      ConvergenceWarning, stacklevel=3)
    watch.restore_best(net._params)
    return hist


def _validation_loss(net, val, nt):
    """None without validation data, else a function computing its loss."""
    if val is None:
        return None
    Xv, Yv, swv = val
    return lambda: float(net._loss_on(Xv, Yv, swv, nt))
