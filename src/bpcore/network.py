"""The Network class: construction, inference, gradients, one step, fit.

Notation (API.md): layer k of the arrays is tutorial layer k + 1.
``weights[k]`` has shape (n_k, n_{k+1}) and ``biases[k]`` (n_{k+1},); both
are views into the flat ``params`` buffer, which holds every weight matrix
in layer order, then every bias vector in layer order.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bpcore import _core
from bpcore import _validation as V
from bpcore._config import resolve_threads
from bpcore._errors import DivergenceError
from bpcore.optim import SGD, get_optimizer

if TYPE_CHECKING:  # annotations only: nothing imported at run time
    import os
    from collections.abc import Callable, Sequence
    from typing import Any, Optional, Union

    from numpy.typing import ArrayLike, DTypeLike

    from bpcore.optim import Optimizer

    Callback = Callable[[int, dict[str, Any]], Optional[bool]]
    Validation = Union[tuple[ArrayLike, ArrayLike],
                       tuple[ArrayLike, ArrayLike, ArrayLike]]

__all__ = ["Network", "Trace", "Gradients", "History", "EarlyStopping"]

_ACT_CODES = {name: i for i, name in enumerate(V.OUTPUTS)}
_LOSS_CODES = {name: i for i, name in enumerate(V.LOSSES)}
# Most parameters (and largest layer size) a network may have.
_MAX_PARAMS = 2 ** 48
_RELU_FAMILY = ("relu", "leaky_relu", "elu", "gelu", "softplus")

# Rows per call when evaluating large data sets: bounds the trace memory.
_EVAL_ROWS = 8192


@dataclass
class Trace:
    """Result of :meth:`Network.forward`: ``net`` and ``out`` are lists of
    L + 1 arrays of shape (m, n_k); index 0 is the input layer (both are X)."""

    net: list
    out: list


@dataclass
class Gradients:
    """Result of :meth:`Network.backward`.

    Attributes
    ----------
    loss : float
        The loss E on the data.
    params : ndarray of shape (n_params,)
        dE/dparams in the layout of ``Network.params``.
    weights, biases : lists of views into ``params``.
    delta : list of L + 1 arrays of shape (m, n_k)
        dE/dnet_k; ``delta[0]`` is dE/dX.
    """

    loss: float
    params: np.ndarray
    weights: list
    biases: list
    delta: list


@dataclass
class History:
    """What :meth:`Network.fit` did, one entry per epoch."""

    loss: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    epochs_run: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False


class EarlyStopping:
    """Stop when the watched loss stops improving.

    Watches the validation loss, or the training loss without validation
    data.  An epoch improves when its loss is below ``best - min_delta``.

    Parameters
    ----------
    patience : int, default=10
        Epochs without improvement before stopping.
    min_delta : float, default=0.0
    restore_best : bool, default=True
        At the end of ``fit``, put back the parameters the best epoch ended
        with.  The training loss of an epoch is the mean of its batches'
        losses, each taken before that batch's update (as in Keras), so
        without validation data the restored parameters are one update
        past those the recorded loss was measured on.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        self.patience = V.check_int(patience, "patience", minimum=0)
        self.min_delta = V.check_float(min_delta, "min_delta", low=0.0)
        if not isinstance(restore_best, (bool, np.bool_)):
            raise TypeError(f"restore_best must be a bool, got {restore_best!r}")
        self.restore_best = bool(restore_best)

    def __repr__(self):
        return (f"EarlyStopping(patience={self.patience}, min_delta="
                f"{self.min_delta}, restore_best={self.restore_best})")


class _ViewList(list):
    """A list of parameter views; assigning an item writes into the view.
    With a guard (a network's), the write is refused while fit or step
    runs in another thread."""

    _guard = None

    def __setitem__(self, k, value):
        if isinstance(k, slice):
            raise TypeError("assign to one layer at a time")
        view = list.__getitem__(self, k)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"shape {value.shape} does not match the "
                             f"parameter's shape {view.shape}")
        if self._guard is None:
            view[...] = value
            return
        with self._guard.read():
            view[...] = value


class Network:
    """A fully connected feed-forward network (multilayer perceptron).

    Parameters
    ----------
    layers : sequence of int
        Sizes ``n_0 .. n_L``, input first, output last (at least two).
    activation : str or sequence of str, default="sigmoid"
        Hidden activation: one name for all hidden layers, or L - 1 names.
        One of identity, sigmoid, tanh, relu, leaky_relu (slope 0.01), elu
        (alpha 1), softplus (beta 1), gelu (exact, erf).
    output : str, default="sigmoid"
        Output activation: any of the above, or softmax.
    loss : {"mse", "cross_entropy", "binary_cross_entropy"}, default="mse"
        mse is E = 1/(2m) sum_i ||y_i - out_i||^2; cross_entropy needs a
        softmax output, binary_cross_entropy a sigmoid output.
    dtype : {"float32", "float64"} or numpy dtype, default="float32"
    init : {"auto", "xavier", "he", "lecun", "normal", "uniform"}, default="auto"
        auto is Glorot uniform for identity, sigmoid, tanh and softmax layers
        and He normal for the relu family (relu, leaky_relu, elu, gelu,
        softplus).  xavier: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); he:
        N(0, 2 / fan_in); lecun: N(0, 1 / fan_in); normal: N(0, 0.05^2);
        uniform: U(-0.05, 0.05).  Biases start at zero.
    seed : int, numpy Generator or None, default=None
        Seeds the initial weights and the shuffling in ``fit``.

    Examples
    --------
    >>> import bpcore
    >>> net = bpcore.Network([2, 3, 2, 2], seed=0)
    >>> net.predict([0.5, -1.0]).shape
    (2,)
    >>> [w.shape for w in net.weights]
    [(2, 3), (3, 2), (2, 2)]
    """

    def __init__(self, layers: Sequence[int],
                 activation: str | Sequence[str] = "sigmoid",
                 output: str = "sigmoid",
                 loss: str = "mse", dtype: DTypeLike = "float32",
                 init: str = "auto",
                 seed: int | np.random.Generator | None = None) -> None:
        layers = self._check_layers(layers)
        L = len(layers) - 1
        if isinstance(activation, str):
            hidden = [V.check_name(activation, "activation", V.ACTIVATIONS)] * (L - 1)
        else:
            try:
                hidden = list(activation)
            except TypeError:
                raise TypeError(f"activation must be a name or a sequence of "
                                f"names, got {activation!r}") from None
            if len(hidden) != L - 1:
                raise ValueError(f"activation lists {len(hidden)} names; the "
                                 f"network has {L - 1} hidden layers")
            hidden = [V.check_name(a, "activation", V.ACTIVATIONS)
                      for a in hidden]
        output = V.check_name(output, "output", V.OUTPUTS)
        loss = V.check_name(loss, "loss", V.LOSSES)
        if loss == "cross_entropy" and output != "softmax":
            raise ValueError(f"loss='cross_entropy' requires output='softmax', "
                             f"got output={output!r}")
        if loss == "binary_cross_entropy" and output != "sigmoid":
            raise ValueError(f"loss='binary_cross_entropy' requires "
                             f"output='sigmoid', got output={output!r}")
        self._dtype = V.check_dtype(dtype)
        init = V.check_name(init, "init", V.INITS)
        if isinstance(seed, np.random.Generator):
            rng = seed
        elif seed is None or (isinstance(seed, (int, np.integer))
                              and not isinstance(seed, bool)):
            if seed is not None and seed < 0:
                raise ValueError(f"seed must be >= 0, got {seed}")
            rng = np.random.default_rng(seed)
        else:
            raise TypeError(f"seed must be an int, a numpy Generator or None, "
                            f"got {seed!r}")

        self._layers = layers
        self._acts = tuple(hidden) + (output,)
        self._loss = loss
        self._init = init
        self._rng = rng
        self._arch = _core.Arch(np.array(layers, dtype=np.int64),
                                [_ACT_CODES[a] for a in self._acts],
                                _LOSS_CODES[loss], self._dtype)
        w_off, b_off, self._n_weights, n_params = _core.layout(layers)
        self._params = np.zeros(n_params, dtype=self._dtype)
        self._guard = _core.Guard()
        self._weights, self._biases = self._views(self._params, w_off, b_off)
        self._weights._guard = self._biases._guard = self._guard
        self.metadata = {}
        self.history = None
        self._initialise(rng)

    # -- construction helpers -------------------------------------------

    @staticmethod
    def _check_layers(layers):
        if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
            raise TypeError(f"layers must be a sequence of ints, got "
                            f"{layers!r}")
        out = []
        for i, n in enumerate(layers):
            out.append(V.check_int(n, f"layers[{i}]", minimum=1))
        if len(out) < 2:
            raise ValueError(f"layers needs at least 2 sizes (input and "
                             f"output), got {len(out)}")
        # far beyond any memory; keeps every size and offset in int64
        n_params = sum(a * b + b for a, b in zip(out, out[1:]))
        if max(out) > _MAX_PARAMS or n_params > _MAX_PARAMS:
            raise ValueError(f"layers {list(out)} would need {n_params:,} "
                             f"parameters; at most {_MAX_PARAMS:,} (2**48) "
                             f"are supported")
        return tuple(out)

    def _views(self, flat, w_off=None, b_off=None):
        if w_off is None:
            w_off, b_off, _, _ = _core.layout(self._layers)
        ws, bs = _ViewList(), _ViewList()
        for k in range(len(self._layers) - 1):
            n_in, n_out = self._layers[k], self._layers[k + 1]
            ws.append(flat[w_off[k]:w_off[k] + n_in * n_out].reshape(n_in, n_out))
            bs.append(flat[b_off[k]:b_off[k] + n_out])
        return ws, bs

    def _initialise(self, rng):
        for k, W in enumerate(self._weights):
            fan_in, fan_out = W.shape
            scheme = self._init
            if scheme == "auto":
                scheme = "he" if self._acts[k] in _RELU_FAMILY else "xavier"
            if scheme == "xavier":
                a = math.sqrt(6.0 / (fan_in + fan_out))
                W[...] = rng.uniform(-a, a, size=W.shape)
            elif scheme == "he":
                W[...] = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=W.shape)
            elif scheme == "lecun":
                W[...] = rng.normal(0.0, math.sqrt(1.0 / fan_in), size=W.shape)
            elif scheme == "normal":
                W[...] = rng.normal(0.0, 0.05, size=W.shape)
            else:
                W[...] = rng.uniform(-0.05, 0.05, size=W.shape)
        for b in self._biases:
            b[...] = 0

    # -- attributes -----------------------------------------------------

    @property
    def layers(self) -> tuple[int, ...]:
        """Layer sizes n_0 .. n_L (tuple)."""
        return self._layers

    @property
    def activation(self) -> tuple[str, ...]:
        """Activation names of layers 1 .. L, the output's last (tuple)."""
        return self._acts

    @property
    def loss(self) -> str:
        """The loss's name."""
        return self._loss

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of parameters and computations."""
        return self._dtype

    @property
    def n_params(self) -> int:
        """Number of weights and biases."""
        return self._params.shape[0]

    @property
    def params(self) -> np.ndarray:
        """Every parameter in one flat array (weights, then biases)."""
        return self._params

    @params.setter
    def params(self, value: ArrayLike) -> None:
        value = np.asarray(value)
        if value.shape != self._params.shape:
            raise ValueError(f"params must have shape {self._params.shape}, "
                             f"got {value.shape}")
        # refused while fit or step runs in another thread (allowed in a
        # fit callback, between epochs)
        with self._guard.read():
            self._params[...] = value

    @property
    def weights(self) -> list[np.ndarray]:
        """Weight matrices ``(n_k, n_{k+1})``, views into ``params``."""
        return self._weights

    @property
    def biases(self) -> list[np.ndarray]:
        """Bias vectors ``(n_{k+1},)``, views into ``params``."""
        return self._biases

    def __repr__(self):
        return (f"Network(layers={list(self._layers)}, activation="
                f"{list(self._acts[:-1])}, output={self._acts[-1]!r}, "
                f"loss={self._loss!r}, dtype={self._dtype.name!r})")

    # -- inference and gradients ----------------------------------------

    def _inputs(self, X, name="X"):
        return V.as_inputs(X, name, self._dtype, self._layers[0])

    def _targets(self, Y, m, name="Y", labels=False):
        return V.as_targets(Y, name, self._dtype, self._loss,
                            self._layers[-1], m, labels)

    def predict(self, X: ArrayLike,
                n_threads: int | None = None) -> np.ndarray:
        """Output activations.

        Parameters
        ----------
        X : array-like of shape (m, n_0), or (n_0,) for one sample
        n_threads : int, optional

        Returns
        -------
        ndarray of shape (m, n_L), or (n_L,) for a 1-D X
            The same bits as ``forward(X).out[-1]``.
        """
        Y = self._arch.predict_fast(self._params, X, n_threads, self._guard)
        if Y is not None:
            return Y
        nt = resolve_threads(n_threads)
        X, one = self._inputs(X)  # anything else: convert, or say what is wrong
        Y = np.empty((X.shape[0], self._layers[-1]), dtype=self._dtype)
        with self._guard.read():
            self._arch.predict(self._params, X, Y, nt)
        return Y[0] if one else Y

    def __call__(self, X, n_threads=None):
        """Same as :meth:`predict`."""
        return self.predict(X, n_threads=n_threads)

    def _trace_arrays(self, m):
        return [None] + [np.empty((m, n), dtype=self._dtype)
                         for n in self._layers[1:]]

    def forward(self, X: ArrayLike, n_threads: int | None = None) -> Trace:
        """Forward pass keeping every layer.

        Returns
        -------
        Trace
            ``net[k]`` and ``out[k]`` of shape (m, n_k) for k = 0..L;
            ``net[0]`` and ``out[0]`` are the input X (as the network's dtype).
        """
        X, _ = self._inputs(X)
        nt = resolve_threads(n_threads)
        net, out = self._trace_arrays(X.shape[0]), self._trace_arrays(X.shape[0])
        with self._guard.read():
            self._arch.forward(self._params, X, net, out, nt)
        net[0] = out[0] = X
        return Trace(net=net, out=out)

    def backward(self, X: ArrayLike, Y: ArrayLike,
                 sample_weight: ArrayLike | None = None,
                 n_threads: int | None = None) -> Gradients:
        """Loss, parameter gradient and every layer's delta.

        Parameters
        ----------
        X : array-like of shape (m, n_0)
        Y : array-like of shape (m, n_L); 1-D class indices for cross_entropy
        sample_weight : array-like of shape (m,), optional
        n_threads : int, optional

        Returns
        -------
        Gradients
        """
        X, _ = self._inputs(X)
        m = X.shape[0]
        Y = self._targets(Y, m)
        sw = V.as_sample_weight(sample_weight, "sample_weight", self._dtype, m)
        nt = resolve_threads(n_threads)
        grad = np.empty_like(self._params)
        net, out = self._trace_arrays(m), self._trace_arrays(m)
        delta = [np.empty((m, n), dtype=self._dtype) for n in self._layers]
        with self._guard.read():
            loss = self._arch.backward(self._params, X, Y, sw, grad, delta,
                                       net, out, nt)
        gw, gb = self._views(grad)
        return Gradients(loss=float(loss), params=grad, weights=list(gw),
                         biases=list(gb), delta=delta)

    def _loss_on(self, X, Y, sw, nt):
        """Loss on validated arrays, in blocks of rows to bound memory.

        Y may be (m,) class indices (cross_entropy): one-hot a block at a
        time.
        """
        m = X.shape[0]
        grad = np.empty_like(self._params)
        total, wtotal = 0.0, 0.0
        for r0 in range(0, m, _EVAL_ROWS):
            r1 = min(m, r0 + _EVAL_ROWS)
            swb = None if sw is None else sw[r0:r1]
            w = float(r1 - r0) if sw is None else float(swb.sum(dtype=np.float64))
            if w <= 0:
                continue
            mb = r1 - r0
            net, out = self._trace_arrays(mb), self._trace_arrays(mb)
            delta = [None] + [np.empty((mb, n), dtype=self._dtype)
                              for n in self._layers[1:]]
            Yb = Y[r0:r1]
            if Yb.ndim == 1:
                Yb = V.one_hot(Yb, self._layers[-1], self._dtype)
            loss = self._arch.backward(self._params, X[r0:r1], Yb, swb,
                                       grad, delta, net, out, nt)
            total += loss * w
            wtotal += w
        return total / wtotal

    def evaluate(self, X: ArrayLike, Y: ArrayLike,
                 sample_weight: ArrayLike | None = None,
                 n_threads: int | None = None) -> float:
        """The loss E on this data (weighted mean with ``sample_weight``)."""
        X, _ = self._inputs(X)
        Y = self._targets(Y, X.shape[0], labels=True)
        sw = V.as_sample_weight(sample_weight, "sample_weight", self._dtype,
                                X.shape[0])
        nt = resolve_threads(n_threads)
        with self._guard.read():
            return float(self._loss_on(X, Y, sw, nt))

    # -- training -------------------------------------------------------

    def step(self, X: ArrayLike, Y: ArrayLike, optimizer: Optimizer | str,
             sample_weight: ArrayLike | None = None,
             n_threads: int | None = None) -> float:
        """One optimizer update from this batch, as given (no shuffling).

        Returns
        -------
        float
            The loss before the update.

        Raises
        ------
        DivergenceError
            If the loss is NaN or infinite, or the update would make the
            parameters so; the parameters and the optimizer's state are
            left as they were.
        """
        opt = get_optimizer(optimizer)
        X, _ = self._inputs(X)
        m = X.shape[0]
        Y = self._targets(Y, m, labels=True)
        sw = V.as_sample_weight(sample_weight, "sample_weight", self._dtype, m)
        nt = resolve_threads(n_threads)
        with self._guard.write(), opt._in_use():
            opt._bind(self.n_params, self._dtype)
            work = self._arch.train_workspace(m, nt)
            grad = np.empty_like(self._params)
            # kept to undo an update that makes the parameters non-finite
            before = self._params.copy()
            bufs = [None if b is None else b.copy() for b in opt._state]
            t_before = opt.t
            args = opt._c_args()
            lsum, wsum, done, diverged = self._arch.train(
                self._params, grad, args, X, Y, sw, None, m, 0, 1, work, nt)
            if not diverged and not _core.all_finite(self._params):
                np.copyto(self._params, before)
                _copy_bufs(opt._state, bufs)
                opt.t = t_before
                raise DivergenceError("step: the update makes the parameters "
                                      "NaN or infinite; the parameters were "
                                      "not changed")
            opt.t = args["t"]
        if diverged:
            raise DivergenceError("step: the loss is NaN or infinite; the "
                                  "parameters were not changed")
        return float(lsum / wsum)

    def fit(self, X: ArrayLike, Y: ArrayLike, epochs: int = 10,
            batch_size: int | None = 32,
            optimizer: Optimizer | str | None = None,
            shuffle: bool = True, sample_weight: ArrayLike | None = None,
            validation_data: Validation | None = None,
            early_stopping: EarlyStopping | None = None,
            callbacks: Sequence[Callback] = (), progress: bool = False,
            n_threads: int | None = None) -> History:
        """Train the network; the batch loop runs in C.

        Parameters
        ----------
        X : array-like of shape (m, n_0)
        Y : array-like of shape (m, n_L); 1-D class indices for cross_entropy
        epochs : int, default=10
        batch_size : int or None, default=32
            None is full batch (one update per epoch); 1 is online learning.
            The last batch of an epoch may be smaller.
        optimizer : Optimizer or str, default=SGD(lr=0.1)
            Its state continues across calls that share the object.
        shuffle : bool, default=True
            Shuffle each epoch with the network's seeded generator.
        sample_weight : array-like of shape (m,), optional
        validation_data : (X_val, Y_val) or (X_val, Y_val, sw_val), optional
        early_stopping : EarlyStopping, optional
        callbacks : sequence of callables ``cb(epoch, logs)``
            Run after each epoch (epoch counted from 0); returning False
            (or numpy's ``np.False_``) stops training; None continues.
            ``logs`` has ``loss`` and ``val_loss``.
        progress : bool, default=False
            Show a progress bar (tqdm if installed, else a line per epoch).
        n_threads : int, optional

        Returns
        -------
        History
            Also kept as ``self.history``, from the start of training: after
            an exception it holds the epochs completed before it.

        Raises
        ------
        DivergenceError
            When the loss becomes NaN or infinite; the parameters (and the
            optimizer's state) are those of the last completed epoch.
        RuntimeError
            When another thread is training this network, or using this
            optimizer, at the same time.
        """
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
        X, _ = self._inputs(X)
        m = X.shape[0]
        Y = self._targets(Y, m, labels=True)  # class indices stay indices
        sw = V.as_sample_weight(sample_weight, "sample_weight", self._dtype, m)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(
                    validation_data) not in (2, 3):
                raise TypeError("validation_data must be a tuple (X_val, Y_val)"
                                " or (X_val, Y_val, sample_weight_val)")
            Xv, _ = self._inputs(validation_data[0], "validation_data X")
            Yv = self._targets(validation_data[1], Xv.shape[0],
                               "validation_data Y", labels=True)
            swv = None
            if len(validation_data) == 3:
                swv = V.as_sample_weight(validation_data[2],
                                         "validation_data sample_weight",
                                         self._dtype, Xv.shape[0])
            val = (Xv, Yv, swv)
        nt = resolve_threads(n_threads)
        opt.lr_at(opt.epoch)  # a schedule that fails should fail now

        with self._guard.write(), opt._in_use():
            opt._bind(self.n_params, self._dtype)
            hist = _FitLoop(self, X, Y, sw, val, epochs, batch_size, opt,
                            bool(shuffle), early_stopping, callbacks,
                            progress, nt).run()
        self.history = hist
        return hist

    # -- files (bpcore.io) ----------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network to one .safetensors file, atomically."""
        from bpcore import io
        return io.save(self, path)

    def to_bytes(self) -> bytes:
        """The network as the bytes of a .safetensors file."""
        from bpcore import io
        return io.to_bytes(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Network:
        """A network from :meth:`to_bytes` output (validated)."""
        from bpcore import io
        return io.from_bytes(data)

    def __reduce__(self):
        from bpcore import io
        return (_from_copy_state, io.copy_state(self))

    def __deepcopy__(self, memo):
        from bpcore import io
        return io.from_copy_state(*io.copy_state(self))


def _from_bytes(data):  # what pickles of earlier builds call
    from bpcore import io
    return io.from_bytes(data)


def _from_copy_state(data, params):
    from bpcore import io
    return io.from_copy_state(data, params)


class _Progress:
    """tqdm when installed, else one line per epoch on stderr."""

    def __init__(self, enabled, epochs):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=epochs, unit="epoch", desc="fit")
            except ImportError:
                self.bar = None

    def epoch(self, e, epochs, logs):
        if not self.enabled:
            return
        text = f"loss={logs['loss']:.6g}"
        if logs.get("val_loss") is not None:
            text += f" val_loss={logs['val_loss']:.6g}"
        if self.bar is not None:
            self.bar.set_postfix_str(text)
            self.bar.update(1)
        else:
            print(f"epoch {e + 1}/{epochs} {text}", file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _run_into(out, fn, args):
    """fn(*args) into out["result"], or its exception into out["error"]."""
    try:
        out["result"] = fn(*args)
    except BaseException as e:  # handed to the waiting thread
        out["error"] = e


def _is_false(r):
    """Whether a callback's return value asks to stop: False, or numpy's
    False from a comparison; None and other values continue."""
    return r is False or (isinstance(r, np.bool_) and not r)


def _copy_bufs(dst, src):
    """Copy each array of src into its place in dst (None entries skipped)."""
    for d, s in zip(dst, src):
        if s is not None:
            np.copyto(d, s)


class _FitLoop:
    """One call of Network.fit: the epoch loop around the C batch driver."""

    # Target wall time of one C call: short enough for prompt Ctrl-C.
    CHUNK_SECONDS = 0.03
    # A single batch expected to take longer than this (a large full batch)
    # runs on copies in a worker thread (see _isolated_call).
    LONG_CALL_SECONDS = 0.1
    # A speed no machine of ours falls below, for that estimate (FLOP/s).
    SLOW_FLOPS = 2e10

    def __init__(self, net, X, Y, sw, val, epochs, batch_size, opt, shuffle,
                 early, callbacks, progress, nt):
        self.net, self.X, self.Y, self.sw, self.val = net, X, Y, sw, val
        self.epochs, self.opt, self.shuffle = epochs, opt, shuffle
        self.early, self.callbacks, self.nt = early, callbacks, nt
        m = X.shape[0]
        self.B = m if batch_size is None else min(batch_size, m)
        self.n_batches = -(-m // self.B)
        self.progress = _Progress(bool(progress), epochs)

    def _isolated_call(self, call):
        """arch.train(*call) for one long batch, on copies of the parameters
        and the optimizer state, in a worker thread; the copies replace the
        originals when it ends.  This thread waits in Python, so Ctrl-C
        raises KeyboardInterrupt here at once and leaves the network and the
        optimizer as the last completed batch left them (the abandoned
        batch still runs to its end in the background, on the copies)."""
        params, grad, args = call[0], call[1], call[2]
        opt = self.opt
        p2 = params.copy()
        bufs2 = [None if s is None else s.copy() for s in opt._state]
        args2 = dict(args, owner=None)
        for j, key in enumerate(("state1", "state2")[:len(bufs2)]):
            args2[key] = bufs2[j]
        out = {}
        worker = threading.Thread(
            target=_run_into, name="bpcore-fit-batch", daemon=True,
            args=(out, self.net._arch.train,
                  (p2, np.empty_like(grad), args2) + call[3:]))
        worker.start()
        while worker.is_alive():
            worker.join(0.05)  # KeyboardInterrupt arrives here
        if "error" in out:
            raise out["error"]
        args["t"] = args2["t"]
        _core.commit_copies([params] + list(opt._state), [p2] + bufs2, opt,
                            args2["t"])
        return out["result"]

    def run(self):
        net, opt = self.net, self.opt
        arch, params = net._arch, net._params
        work = arch.train_workspace(self.B, self.nt)
        grad = np.empty_like(params)
        # kept from the start, so that after an exception (Ctrl-C, a
        # callback's, DivergenceError) it holds the completed epochs
        hist = net.history = History()
        best, best_params, wait = math.inf, None, 0
        flops = 6.0 * self.B * max(1, net._n_weights)
        chunk = max(1, int(self.CHUNK_SECONDS * 1e9 / flops))
        isolate = flops / self.SLOW_FLOPS > self.LONG_CALL_SECONDS
        # the start of each epoch, restored on divergence: buffers made once
        # and refilled, so memory does not grow with the epochs
        start_params = np.empty_like(params)
        start_bufs = [None if b is None else np.empty_like(b)
                      for b in opt._state]
        try:
            for e in range(self.epochs):
                np.copyto(start_params, params)
                _copy_bufs(start_bufs, opt._state)
                start_t, start_epoch = opt.t, opt.epoch
                args = opt._c_args()
                order = (net._rng.permutation(self.X.shape[0])
                         if self.shuffle else None)
                lsum = wsum = 0.0
                b = 0
                while b < self.n_batches:
                    n = min(chunk, self.n_batches - b)
                    t0 = time.perf_counter()
                    call = (params, grad, args, self.X, self.Y, self.sw,
                            order, self.B, b, 1 if isolate else n, work,
                            self.nt, lsum, wsum)
                    if isolate:
                        n = 1
                        lsum, wsum, done, diverged = self._isolated_call(call)
                    else:
                        lsum, wsum, done, diverged = arch.train(*call)
                    dt = time.perf_counter() - t0
                    if n == 1 and dt > self.LONG_CALL_SECONDS:
                        isolate = True
                    opt.t = args["t"]
                    if diverged:
                        what = f"the loss became NaN or infinite in epoch " \
                               f"{e} (batch {b + done})"
                    elif b + n == self.n_batches and not _core.all_finite(
                            params):
                        # the epoch's last update, whose loss no batch saw
                        what = f"the parameters became NaN or infinite in " \
                               f"the last update of epoch {e}"
                    else:
                        what = None
                    if what is not None:
                        np.copyto(params, start_params)
                        _copy_bufs(opt._state, start_bufs)
                        opt.t, opt.epoch = start_t, start_epoch
                        raise DivergenceError(
                            f"fit: {what}; the parameters of the last "
                            f"completed epoch were restored")
                    b += n
                    if dt > 0:
                        chunk = max(1, min(4 * chunk, int(
                            n * self.CHUNK_SECONDS / dt)))
                opt.epoch += 1
                loss = lsum / wsum if wsum > 0 else float("nan")
                hist.loss.append(loss)
                logs = {"loss": loss, "val_loss": None}
                if self.val is not None:
                    Xv, Yv, swv = self.val
                    logs["val_loss"] = float(net._loss_on(Xv, Yv, swv, self.nt))
                    hist.val_loss.append(logs["val_loss"])
                hist.epochs_run = e + 1
                watched = logs["val_loss"] if self.val is not None else loss
                improved = False
                if self.early is not None:
                    improved = watched < best - self.early.min_delta
                elif watched < best:
                    improved = True
                if improved:
                    best, hist.best_epoch, wait = watched, e, 0
                    if self.early is not None and self.early.restore_best:
                        if best_params is None:
                            best_params = np.empty_like(params)
                        np.copyto(best_params, params)
                else:
                    wait += 1
                self.progress.epoch(e, self.epochs, logs)
                stop = False
                for cb in self.callbacks:
                    if _is_false(cb(e, dict(logs))):
                        stop = True
                if (self.early is not None and not improved
                        and wait >= self.early.patience):
                    stop = True
                if stop:
                    hist.stopped_early = e + 1 < self.epochs
                    break
            if best_params is not None:
                params[...] = best_params
        finally:
            self.progress.close()
        return hist
