"""The Network class: construction, inference, gradients, one step, fit.

Notation: layer k of the arrays is tutorial layer k + 1.
``weights[k]`` has shape (n_k, n_{k+1}) and ``biases[k]`` (n_{k+1},); both
are views into the flat ``params`` buffer, which holds every weight matrix
in layer order, then every bias vector in layer order.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from bpcore import _aligned
from bpcore import _atomic
from bpcore import _core
from bpcore import _data
from bpcore import _distributed
from bpcore import _dropout
from bpcore import _format
from bpcore import _limits
from bpcore import _names
from bpcore import _race
from bpcore import _training
from bpcore import _validation as V
from bpcore import lbfgs
from bpcore._config import resolve_threads
from bpcore._errors import DivergenceError, FormatError
from bpcore._fitargs import check_fit_options, check_validation_tuple
from bpcore._training import EarlyStopping, History
from bpcore.lbfgs import LBFGS
from bpcore.optim import get_optimizer
from bpcore.schedules import ReduceLROnPlateau

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

_RELU_FAMILY = ("relu", "leaky_relu", "elu", "gelu", "softplus")

# Rows per call when evaluating large data sets: bounds the trace memory.
_EVAL_ROWS = 8192


@dataclass
class Trace:
    """Result of :meth:`Network.forward`: ``net`` and ``out`` are lists of
    L + 1 arrays of shape (m, n_k); index 0 is the input layer (both are X)."""

    net: list
    out: list
    #: forward(..., training=True) of a network with dropout: L + 1
    #: entries, the factor (0 or 1 / (1 - rate)) each hidden layer's
    #: outputs were multiplied by (``out[k]`` holds the dropped outputs);
    #: None at the input and output layers.  None otherwise.
    masks: list = None
    #: the dropout seed those masks came from (None without dropout)
    dropout_seed: int = None


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
    #: backward(..., training=True) with dropout: as ``Trace.masks``
    masks: list = None
    dropout_seed: int = None


def _finite_cast(value, dtype, name):
    """value (an ndarray) as dtype, refused with a ValueError naming it when
    that holds NaN or infinity (also a finite float64 too large for
    float32): a network never takes non-finite parameters."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(value, dtype=dtype)
    if not _core.all_finite(out):
        raise ValueError(f"{name} must be finite: it holds NaN or infinity "
                         f"(as {np.dtype(dtype).name}); the network was not "
                         f"changed")
    return out


class _ViewList(list):
    """A list of parameter views; assigning an item writes into the view.
    With a guard (a network's), the write is refused while fit or step
    runs in another thread."""

    _guard = None
    _name = "parameters"

    def __setitem__(self, k, value):
        if isinstance(k, slice):
            raise TypeError("assign to one layer at a time")
        view = list.__getitem__(self, k)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"shape {value.shape} does not match the "
                             f"parameter's shape {view.shape}")
        if self._guard is not None:
            idx = k if k >= 0 else k + len(self)
            value = _finite_cast(value, view.dtype, f"{self._name}[{idx}]")
        if self._guard is None:
            view[...] = value
            return
        with self._guard.read():
            view[...] = value


def _check_architecture(layers, activation, output, loss, dtype,
                        huber_delta, dropout):
    """Network's arguments, checked: (layers, activations (output last),
    loss, huber_delta, dtype, dropout rates)."""
    layers = _check_layers(layers)
    L = len(layers) - 1
    dropout = _dropout.check_dropout(dropout, L - 1)
    hidden = _check_hidden(activation, L - 1)
    output = V.check_name(output, "output", _names.OUTPUTS)
    loss = V.check_name(loss, "loss", _names.LOSSES)
    need = _names.LOSS_OUTPUT.get(loss)
    if need is not None and output != need:
        why = " (the output is read as the log rate)" if loss == "poisson" \
            else ""
        raise ValueError(f"loss={loss!r} requires output={need!r}{why}, got "
                         f"output={output!r}")
    huber_delta = V.check_float(huber_delta, "huber_delta", low=0.0,
                                low_open=True)
    dtype = V.check_dtype(dtype)
    return layers, hidden + (output,), loss, huber_delta, dtype, dropout


def _check_layers(layers):
    """Layer sizes as a tuple of ints >= 1, within the limits."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a sequence of ints, got "
                        f"{layers!r}")
    out = tuple(V.check_int(n, f"layers[{i}]", minimum=1)
                for i, n in enumerate(layers))
    if len(out) < 2:
        raise ValueError(f"layers needs at least 2 sizes (input and "
                         f"output), got {len(out)}")
    if len(out) > _limits.MAX_LAYERS:
        raise ValueError(f"layers lists {len(out)} sizes; at most "
                         f"{_limits.MAX_LAYERS} are supported (input, "
                         f"output and {_limits.MAX_LAYERS - 2} hidden "
                         f"layers)")
    n_params = _limits.n_params(out)
    if max(out) > _limits.MAX_PARAMS or n_params > _limits.MAX_PARAMS:
        raise ValueError(f"layers {list(out)} would need {n_params:,} "
                         f"parameters; at most {_limits.MAX_PARAMS:,} "
                         f"are supported")
    return out


def _check_hidden(activation, n_hidden):
    """The hidden activations: one name for all, or one per hidden layer."""
    if isinstance(activation, str):
        name = V.check_name(activation, "activation", _names.ACTIVATIONS)
        return (name,) * n_hidden
    try:
        hidden = list(activation)
    except TypeError:
        raise TypeError(f"activation must be a name or a sequence of "
                        f"names, got {activation!r}") from None
    if len(hidden) != n_hidden:
        raise ValueError(f"activation lists {len(hidden)} names; the "
                         f"network has {n_hidden} hidden layers")
    return tuple(V.check_name(a, "activation", _names.ACTIVATIONS)
                 for a in hidden)


def _generator(seed):
    """The network's generator from a seed: an int >= 0, a numpy
    Generator (used as it is) or None (fresh entropy)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, (int, np.integer))
                        and not isinstance(seed, bool)):
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, a numpy Generator or None, "
                    f"got {seed!r}")


def _check_chunks(chunks, epochs):
    """fit_chunks' chunks: a callable, or an iterable of (X, Y) tuples that
    can be walked once per epoch."""
    if callable(chunks):
        return
    if isinstance(chunks, (tuple, list)) and len(chunks) in (2, 3) \
            and not isinstance(chunks[0], (tuple, list)) \
            and np.ndim(chunks[0]) == 2:
        raise TypeError("fit_chunks: chunks must be an iterable of (X, Y) "
                        "tuples; for one (X, Y) pair use fit, or pass "
                        "[(X, Y)]")
    if not hasattr(chunks, "__iter__") or isinstance(chunks, (str, bytes)):
        raise TypeError(f"fit_chunks: chunks must be an iterable of "
                        f"(X, Y) tuples or a callable returning one, got "
                        f"{type(chunks).__name__}")
    if epochs > 1 and iter(chunks) is chunks:
        raise ValueError("fit_chunks: with epochs > 1, chunks must be "
                         "re-iterable (a list) or a callable returning a "
                         "fresh iterable per epoch; a one-shot iterator "
                         "would be empty after the first epoch")


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
    loss : {"mse", "cross_entropy", "binary_cross_entropy", "mae", "huber", \
"poisson"}, default="mse"
        mse is E = 1/(2m) sum_i ||y_i - out_i||^2; cross_entropy needs a
        softmax output, binary_cross_entropy a sigmoid output.  Like mse,
        the others sum over a sample's outputs and average over samples:
        mae sum_j |y_j - out_j|; huber sum_j h(y_j - out_j) with h as
        ``torch.nn.HuberLoss(delta=huber_delta)``; poisson reads an identity
        output as the log rate, sum_j (exp(out_j) - y_j out_j) (as
        ``torch.nn.PoissonNLLLoss(log_input=True, full=False)``), targets
        >= 0.  mae and huber take any output activation, poisson identity.
    dtype : {"float32", "float64"} or numpy dtype, default="float32"
    init : {"auto", "xavier", "he", "lecun", "normal", "uniform"}, default="auto"
        auto is Glorot uniform for identity, sigmoid, tanh and softmax layers
        and He normal for the relu family (relu, leaky_relu, elu, gelu,
        softplus).  xavier: U(-a, a), a = sqrt(6 / (fan_in + fan_out)); he:
        N(0, 2 / fan_in); lecun: N(0, 1 / fan_in); normal: N(0, 0.05^2);
        uniform: U(-0.05, 0.05).  Biases start at zero.
    seed : int, numpy Generator or None, default=None
        Seeds the initial weights, the shuffling and the dropout masks in
        ``fit``.
    huber_delta : float > 0, default=1.0
        The delta of ``loss="huber"`` (as ``torch.nn.HuberLoss(delta=...)``);
        saved with the network.
    dropout : float or sequence of float, default=0.0
        Inverted dropout after each hidden activation: a rate in [0, 1)
        for every hidden layer, or one rate per hidden layer.  Active in
        ``fit`` and ``step`` only (and in ``forward``/``backward`` with
        ``training=True``), never in ``predict``; kept units are scaled by
        1 / (1 - rate).  The masks come from the network's generator and do
        not depend on the thread count.

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
                 seed: int | np.random.Generator | None = None,
                 huber_delta: float = 1.0,
                 dropout: float | Sequence[float] = 0.0) -> None:
        arch = _check_architecture(layers, activation, output, loss, dtype,
                                   huber_delta, dropout)
        init = V.check_name(init, "init", _names.INITS)
        rng = _generator(seed)
        self._build(*arch, init=init, rng=rng)
        self._initialise(rng)

    def _build(self, layers, acts, loss, huber_delta, dtype, dropout, init,
               rng):
        """Set up a network of a checked architecture: the C core's view
        of it, the zeroed flat parameters and the views into them."""
        self._layers = layers
        self._acts = acts
        self._loss = loss
        self._huber_delta = huber_delta
        self._dtype = dtype
        self._init = init
        self._rng = rng
        self._arch = _core.Arch(np.array(layers, dtype=np.int64),
                                [_names.ACT_CODES[a] for a in acts],
                                _names.LOSS_CODES[loss], dtype, huber_delta)
        self._dropout = dropout
        self._arch.set_dropout(dropout)
        w_off, b_off, self._n_weights, n_params = _core.layout(layers)
        self._params = _aligned.zeros(n_params, dtype)
        self._guard = _core.Guard()
        self._weights, self._biases = self._views(self._params, w_off, b_off)
        self._weights._guard = self._biases._guard = self._guard
        self._weights._name, self._biases._name = "weights", "biases"
        self.metadata = {}
        self.history = None

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
    def huber_delta(self):
        """The delta of the huber loss (float; unused by other losses)."""
        return self._huber_delta

    @property
    def dropout(self):
        """Dropout rates of the hidden layers 1 .. L - 1 (tuple)."""
        return self._dropout

    def _set_dropout(self, dropout):
        """Change the dropout rates (the sklearn estimators' set_params
        between warm-started fits)."""
        rates = _dropout.check_dropout(dropout, len(self._layers) - 2)
        with self._guard.write():
            self._arch.set_dropout(rates)
            self._dropout = rates

    def _drop_seed(self, training=True, seed=None):
        """A dropout seed: the given one, a fresh draw from the network's
        generator, or None when no dropout applies."""
        if not training or self._arch.dropout is None:
            return None
        if seed is not None:
            return V.check_int(seed, "dropout_seed", minimum=0) & (2**64 - 1)
        return int(self._rng.integers(0, 2**64, dtype=np.uint64))

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
        value = _finite_cast(value, self._dtype, "params")
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
        drop = (f", dropout={list(self._dropout)}"
                if any(self._dropout) else "")
        return (f"Network(layers={list(self._layers)}, activation="
                f"{list(self._acts[:-1])}, output={self._acts[-1]!r}, "
                f"loss={self._loss!r}, dtype={self._dtype.name!r}"
                + (f", huber_delta={self._huber_delta!r}"
                   if self._loss == "huber" else "") + f"{drop})")

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
        if _data.is_out_of_core(X, 2):
            return self._predict_rows(_data.Rows(X, "X", self._layers[0]), nt)
        X, one = self._inputs(X)  # anything else: convert, or say what is wrong
        Y = np.empty((X.shape[0], self._layers[-1]), dtype=self._dtype)
        with self._guard.read():
            self._arch.predict(self._params, X, Y, nt)
        return Y[0] if one else Y

    def _predict_rows(self, src, nt):
        """predict on an out-of-core source, a block of rows at a time."""
        Y = np.empty((src.m, self._layers[-1]), dtype=self._dtype)
        with self._guard.read():
            for r0, r1 in src.blocks():
                Xb = src.read_inputs(r0, r1, self._dtype)
                self._arch.predict(self._params, Xb, Y[r0:r1], nt)
        return Y

    def __call__(self, X, n_threads=None):
        """Same as :meth:`predict`."""
        return self.predict(X, n_threads=n_threads)

    def _trace_arrays(self, m):
        return [None] + [np.empty((m, n), dtype=self._dtype)
                         for n in self._layers[1:]]

    def forward(self, X: ArrayLike, n_threads: int | None = None,
                training: bool = False,
                dropout_seed: int | None = None) -> Trace:
        """Forward pass keeping every layer.

        Parameters
        ----------
        X : array-like of shape (m, n_0)
        n_threads : int, optional
        training : bool, default=False
            Apply the network's dropout, as ``fit`` does; the masks are
            returned in ``Trace.masks``.
        dropout_seed : int >= 0, optional
            The masks' seed (row i of the masks is row i of X); by default
            a fresh draw from the network's generator.

        Returns
        -------
        Trace
            ``net[k]`` and ``out[k]`` of shape (m, n_k) for k = 0..L;
            ``net[0]`` and ``out[0]`` are the input X (as the network's dtype).
        """
        X, _ = self._inputs(X)
        nt = resolve_threads(n_threads)
        seed = self._check_training(training, dropout_seed)
        net, out = self._trace_arrays(X.shape[0]), self._trace_arrays(X.shape[0])
        with self._guard.read():
            self._arch.forward(self._params, X, net, out, nt, seed)
        net[0] = out[0] = X
        return Trace(net=net, out=out, masks=self._masks(seed, X.shape[0]),
                     dropout_seed=seed)

    def _check_training(self, training, dropout_seed):
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"training must be a bool, got {training!r}")
        if dropout_seed is not None:
            V.check_int(dropout_seed, "dropout_seed", minimum=0)
            if dropout_seed >= 2**64:
                raise ValueError(f"dropout_seed must be < 2**64, got "
                                 f"{dropout_seed}")
        return self._drop_seed(bool(training), dropout_seed)

    def _masks(self, seed, m):
        if seed is None:
            return None
        return _dropout.masks(seed, m, self._layers, self._dropout,
                              self._dtype)

    def backward(self, X: ArrayLike, Y: ArrayLike,
                 sample_weight: ArrayLike | None = None,
                 n_threads: int | None = None, training: bool = False,
                 dropout_seed: int | None = None) -> Gradients:
        """Loss, parameter gradient and every layer's delta.

        Parameters
        ----------
        X : array-like of shape (m, n_0)
        Y : array-like of shape (m, n_L); 1-D class indices for cross_entropy
        sample_weight : array-like of shape (m,), optional
        n_threads : int, optional
        training, dropout_seed :
            As in :meth:`forward`: with ``training=True`` the loss and
            gradients are those of the dropped-out network (the masks in
            ``Gradients.masks``).

        Returns
        -------
        Gradients
        """
        X, _ = self._inputs(X)
        m = X.shape[0]
        Y = self._targets(Y, m)
        sw = V.as_sample_weight(sample_weight, "sample_weight", self._dtype, m)
        nt = resolve_threads(n_threads)
        seed = self._check_training(training, dropout_seed)
        grad = _aligned.empty_like(self._params)
        net, out = self._trace_arrays(m), self._trace_arrays(m)
        delta = [np.empty((m, n), dtype=self._dtype) for n in self._layers]
        with self._guard.read():
            loss = self._arch.backward(self._params, X, Y, sw, grad, delta,
                                       net, out, nt, seed)
        gw, gb = self._views(grad)
        return Gradients(loss=float(loss), params=grad, weights=list(gw),
                         biases=list(gb), delta=delta,
                         masks=self._masks(seed, m), dropout_seed=seed)

    def _loss_on(self, X, Y, sw, nt):
        """Loss on validated arrays, in blocks of rows to bound memory.

        Y may be (m,) class indices (cross_entropy): one-hot a block at a
        time.
        """
        m = X.shape[0]
        grad = _aligned.empty_like(self._params)
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

    def _loss_on_rows(self, src, ys, sw, nt):
        """_loss_on for an out-of-core source: blocks of rows, each
        validated as it is read."""
        total, wtotal = 0.0, 0.0
        # the blocks of _loss_on, so the sum is the in-memory one
        for r0, r1 in src.blocks(_EVAL_ROWS):
            Xb = src.read_inputs(r0, r1, self._dtype)
            Yb = _data.read_targets(self, ys, r0, r1)
            swb = None if sw is None else sw[r0:r1]
            w = (float(r1 - r0) if sw is None
                 else float(swb.sum(dtype=np.float64)))
            if w <= 0:
                continue
            total += self._block_loss(Xb, Yb, swb, nt) * w
            wtotal += w
        return total / wtotal

    def _block_loss(self, Xb, Yb, swb, nt):
        """Loss of one block of validated rows (Yb may be labels)."""
        mb = Xb.shape[0]
        net, out = self._trace_arrays(mb), self._trace_arrays(mb)
        delta = [None] + [np.empty((mb, n), dtype=self._dtype)
                          for n in self._layers[1:]]
        if Yb.ndim == 1:
            Yb = V.one_hot(Yb, self._layers[-1], self._dtype)
        return self._arch.backward(self._params, Xb, Yb, swb,
                                   _aligned.empty_like(self._params), delta,
                                   net, out, nt)

    def evaluate(self, X: ArrayLike, Y: ArrayLike,
                 sample_weight: ArrayLike | None = None,
                 n_threads: int | None = None, comm: Any = None) -> float:
        """The loss E on this data (weighted mean with ``sample_weight``).

        X (and Y) may be out-of-core (``np.memmap``, h5py datasets, any
        row-indexable array-like): read a block of rows at a time.  With
        ``comm`` (an mpi4py communicator; every rank calls it with its own
        rows) the loss is the weighted mean over all ranks' rows.
        """
        if comm is not None:
            return _distributed.evaluate(self, comm, X, Y, sample_weight,
                                         n_threads)
        if _data.is_out_of_core(X, 2):
            nt = resolve_threads(n_threads)
            src = _data.Rows(X, "X", self._layers[0])
            ys = _data.targets_source(Y, src.m)
            sw = V.as_sample_weight(sample_weight, "sample_weight",
                                    self._dtype, src.m)
            with self._guard.read():
                return float(self._loss_on_rows(src, ys, sw, nt))
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
             n_threads: int | None = None, comm: Any = None) -> float:
        """One optimizer update from this batch, as given (no shuffling).

        With ``comm`` (an mpi4py communicator), every rank passes its own
        rows: rank 0's parameters and optimizer state are broadcast, the
        batch is all ranks' rows (rank-major), the loss and gradient are
        its global weighted mean, and every rank applies the same update.

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
        if comm is not None:
            return _distributed.step(self, comm, X, Y, optimizer,
                                     sample_weight, n_threads)
        opt = get_optimizer(optimizer)
        if isinstance(opt, LBFGS):
            raise TypeError("step: LBFGS is a full-batch optimizer for fit "
                            "(net.fit(X, Y, optimizer=bpcore.LBFGS())); step "
                            "takes SGD, Adam or AdamW")
        X, Y, sw = self._checked_data(X, Y, sample_weight)
        nt = resolve_threads(n_threads)
        with self._guard.write(), opt._in_use():
            lsum, wsum, diverged = self._step_held(opt, X, Y, sw, nt)
        if diverged:
            raise DivergenceError("step: the loss is NaN or infinite; the "
                                  "parameters were not changed")
        return float(lsum / wsum)

    def _step_held(self, opt, X, Y, sw, nt):
        """step's update in C, with the network and the optimizer held;
        undone when it makes the parameters non-finite.  Returns (loss sum,
        weight sum, diverged)."""
        opt._bind(self.n_params, self._dtype)
        m = X.shape[0]
        work = self._arch.train_workspace(m, nt)
        grad = _aligned.empty_like(self._params)
        # kept to undo an update that makes the parameters non-finite
        saved = opt._checkpoint(self._params).take()
        args = opt._c_args()
        lsum, wsum, done, diverged = self._arch.train(
            self._params, grad, args, X, Y, sw, None, m, 0, 1, work, nt,
            drop_seed=self._drop_seed())
        if not diverged and not _core.all_finite(self._params):
            saved.restore()
            raise DivergenceError("step: the update makes the parameters "
                                  "NaN or infinite; the parameters were "
                                  "not changed")
        opt.t = args["t"]
        return lsum, wsum, diverged

    def _checked_data(self, X, Y, sample_weight, what=""):
        """(X, Y, sample weights) as validated arrays; class indices stay
        indices.  what prefixes the names in messages."""
        X, _ = self._inputs(X, f"{what}X")
        m = X.shape[0]
        Y = self._targets(Y, m, f"{what}Y", labels=True)
        sw = V.as_sample_weight(sample_weight, f"{what}sample_weight",
                                self._dtype, m)
        return X, Y, sw

    def fit(self, X: ArrayLike, Y: ArrayLike, epochs: int = 10,
            batch_size: int | None = 32,
            optimizer: Optimizer | str | None = None,
            shuffle: bool = True, sample_weight: ArrayLike | None = None,
            validation_data: Validation | None = None,
            early_stopping: EarlyStopping | None = None,
            callbacks: Sequence[Callback] = (), progress: bool = False,
            n_threads: int | None = None, comm: Any = None,
            _chunks: Any = None) -> History:
        """Train the network; the batch loop runs in C.

        Parameters
        ----------
        X : array-like of shape (m, n_0)
            Also an ``np.memmap`` or a row-indexable array-like (an h5py
            dataset): then read a block of rows at a time (the rows of each
            chunk of batches, in increasing order), never copied whole; the
            result is the in-memory one, bit for bit.  Every block is read
            and checked once before training.
        Y : array-like of shape (m, n_L); 1-D class indices for cross_entropy
        epochs : int, default=10
        batch_size : int or None, default=32
            None is full batch (one update per epoch); 1 is online learning.
            The last batch of an epoch may be smaller.
        optimizer : Optimizer or str, default=SGD(lr=0.1)
            Its state continues across calls that share the object.
            ``bpcore.LBFGS`` (or "lbfgs") minimises the full-batch loss
            with SciPy's L-BFGS-B instead: ``epochs``, ``batch_size`` and
            ``shuffle`` do not apply, and the history has one entry per
            L-BFGS iteration (see :class:`bpcore.LBFGS`).
        shuffle : bool, default=True
            Shuffle each epoch with the network's seeded generator.
        sample_weight : array-like of shape (m,), optional
        validation_data : (X_val, Y_val) or (X_val, Y_val, sw_val), optional
        early_stopping : EarlyStopping, optional
        callbacks : sequence of callables ``cb(epoch, logs)``
            Run after each epoch (epoch counted from 0); returning False
            (or numpy's ``np.False_``) stops training; None continues.
            ``logs`` has ``loss``, ``val_loss`` and ``lr`` (the rate used
            in that epoch).  A callback with a method
            ``on_train_begin(network, optimizer)`` (as those of
            :mod:`bpcore.callbacks`) has it called once before training.
            A :class:`bpcore.schedules.ReduceLROnPlateau` rate is stepped
            after each epoch with ``val_loss`` (``loss`` without validation
            data).
        progress : bool, default=False
            Show a progress bar (tqdm if installed, else a line per epoch).
        n_threads : int, optional
        comm : mpi4py communicator, optional
            Data-parallel training (``pip install "bpcore[mpi]"``): every
            rank passes its own shard of the rows.  Rank 0's parameters,
            optimizer state and generator are broadcast at the start.  The
            global row order is the rank-major concatenation of the shards;
            ``batch_size`` is global, and each epoch's shuffle is one
            permutation of all rows from the network's seed, so the batches
            are those of a single-process ``fit`` on the concatenated rows.
            Gradients are summed across ranks with the sample weights in a
            fixed order, so every rank holds bitwise the same parameters
            after each update.  ``validation_data`` is each rank's share
            (None on ranks without any); losses, early stopping and
            ``History`` are global and the same on every rank; callbacks
            run on every rank with global ``logs``, except those of
            ``bpcore.callbacks`` (and any with ``rank_zero_only = True``),
            which run on rank 0 only.  An error on any rank raises on every
            rank (``bpcore.DistributedError`` on the others).  The batch
            loop runs in Python, one exchange per batch.

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
        if comm is not None:
            return self._fit_comm(
                comm, X, Y, epochs=epochs, batch_size=batch_size,
                optimizer=optimizer, shuffle=shuffle,
                sample_weight=sample_weight, validation_data=validation_data,
                early_stopping=early_stopping, callbacks=callbacks,
                progress=progress, n_threads=n_threads)
        epochs, batch_size, opt, shuffle, callbacks = check_fit_options(
            epochs, batch_size, optimizer, shuffle, early_stopping, callbacks)
        X, Y, sw = self._fit_data(X, Y, sample_weight, _chunks)
        val = self._validation(validation_data)
        nt = resolve_threads(n_threads)
        if isinstance(opt, LBFGS):
            return self._fit_lbfgs(X, Y, sw, val, opt, early_stopping,
                                   callbacks, progress, nt)
        opt.lr_at(opt.epoch)  # a schedule that fails should fail now
        with self._guard.write(), opt._in_use():
            opt._bind(self.n_params, self._dtype)
            _training.train_begin(callbacks, self, opt)
            hist = _FitLoop(self, X, Y, sw, val, epochs, batch_size, opt,
                            shuffle, early_stopping, callbacks, progress, nt,
                            chunks=_chunks).run()
        self.history = hist
        return hist

    def _fit_comm(self, comm, X, Y, optimizer, **options):
        """fit(..., comm=comm): the data-parallel loop of _distributed."""
        # it computes gradients through backward: no dropout masks there,
        # and L-BFGS is a full-batch solver of its own (every rank refuses
        # alike: the settings are shared)
        if any(self._dropout):
            raise ValueError("fit with comm does not support dropout")
        if (optimizer == "lbfgs" if isinstance(optimizer, str)
                else isinstance(optimizer, LBFGS)):
            raise ValueError("fit with comm does not support L-BFGS")
        return _distributed.fit(self, comm, X, Y, optimizer=optimizer,
                                **options)

    def _fit_lbfgs(self, X, Y, sw, val, opt, early_stopping, callbacks,
                   progress, nt):
        """fit with bpcore.LBFGS: one full-batch minimisation by SciPy."""
        lbfgs._scipy_minimize()  # SciPy missing: ImportError now
        with self._guard.write(), opt._in_use():
            _training.train_begin(callbacks, self, opt)
            hist = lbfgs.fit_network(self, X, Y, sw, val, opt,
                                     early_stopping, callbacks, progress, nt)
        self.history = hist
        return hist

    def _fit_data(self, X, Y, sample_weight, chunks):
        """fit's training data, checked: arrays, or for out-of-core data a
        source of rows (every block read and checked once, here), or
        nothing yet for fit_chunks (each chunk is checked on arrival)."""
        if chunks is not None:
            return X, Y, None
        if _data.is_out_of_core(X, 2):
            X, Y = self._rows_checked(X, Y, "X", "Y")
            sw = V.as_sample_weight(sample_weight, "sample_weight",
                                    self._dtype, X.m)
            return X, Y, sw
        return self._checked_data(X, Y, sample_weight)

    def _validation(self, validation_data, rows=True):
        """validation_data checked: (X, Y, sample weights or None), or None.
        With rows, out-of-core X stays a source of rows."""
        if validation_data is None:
            return None
        check_validation_tuple(validation_data)
        Xv, Yv = validation_data[0], validation_data[1]
        if rows and _data.is_out_of_core(Xv, 2):
            Xv, Yv = self._rows_checked(Xv, Yv, "validation_data X",
                                        "validation_data Y")
        else:
            Xv, _ = self._inputs(Xv, "validation_data X")
            Yv = self._targets(Yv, Xv.shape[0], "validation_data Y",
                               labels=True)
        swv = None
        if len(validation_data) == 3:
            swv = V.as_sample_weight(validation_data[2],
                                     "validation_data sample_weight",
                                     self._dtype, Xv.shape[0])
        return Xv, Yv, swv

    def _rows_checked(self, X, Y, xname, yname):
        """(Rows of X, targets source) for out-of-core data, after reading
        and checking every block once (bounded memory)."""
        src = _data.Rows(X, xname, self._layers[0])
        ys = _data.targets_source(Y, src.m, yname)
        if not isinstance(ys, _data.Rows):
            ys = self._targets(ys, src.m, yname, labels=True)
        for r0, r1 in src.blocks():
            src.read_inputs(r0, r1, self._dtype)
            if isinstance(ys, _data.Rows):
                _data.read_targets(self, ys, r0, r1)
        return src, ys

    def _check_chunk(self, chunk, i):
        """One (X, Y) or (X, Y, sample_weight) chunk of fit_chunks,
        validated: (X, Y, sw) arrays."""
        if not isinstance(chunk, (tuple, list)) or len(chunk) not in (2, 3):
            raise TypeError(f"fit_chunks: chunk {i} must be a tuple (X, Y) "
                            f"or (X, Y, sample_weight), got "
                            f"{type(chunk).__name__}")
        X, _ = self._inputs(chunk[0], f"chunk {i} X")
        Y = self._targets(chunk[1], X.shape[0], f"chunk {i} Y", labels=True)
        sw = None
        if len(chunk) == 3:
            sw = V.as_sample_weight(chunk[2], f"chunk {i} sample_weight",
                                    self._dtype, X.shape[0])
        return X, Y, sw

    def fit_chunks(self, chunks, epochs=1, batch_size=32, optimizer=None,
                   shuffle=True, validation_data=None, early_stopping=None,
                   callbacks=(), progress=False, n_threads=None):
        """Train on data that arrives in chunks (an extension of the API).

        For sources that cannot be indexed by row (a database cursor, a
        stream of files): each epoch walks the chunks in turn and trains on
        each with batches of ``batch_size`` rows from that chunk (shuffled
        within the chunk; the last batch of a chunk may be smaller).  On a
        single chunk it is exactly :meth:`fit`.

        Parameters
        ----------
        chunks : iterable of (X, Y) or (X, Y, sample_weight), or a callable
            returning such an iterable
            With ``epochs > 1``, a callable (called once per epoch) or a
            re-iterable collection (a list); a one-shot iterator (a
            generator) is refused.
        epochs, batch_size, optimizer, shuffle, validation_data,
        early_stopping, callbacks, progress, n_threads
            As in :meth:`fit`; ``batch_size=None`` makes each chunk one
            batch.

        Returns
        -------
        History
            ``loss`` is the mean of the epoch's batch losses, weighted by
            each batch's weight.

        Raises
        ------
        ValueError, TypeError
            For a chunk that fails validation; checked as it arrives, so
            the epoch it belongs to is undone (the parameters and the
            optimizer's state are those of the last completed epoch).
        """
        epochs = V.check_int(epochs, "epochs", minimum=1)
        _check_chunks(chunks, epochs)
        return self.fit(None, None, epochs=epochs, batch_size=batch_size,
                        optimizer=optimizer, shuffle=shuffle,
                        validation_data=validation_data,
                        early_stopping=early_stopping, callbacks=callbacks,
                        progress=progress, n_threads=n_threads,
                        _chunks=chunks)

    # -- files (bpcore._format) and copies -----------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network to one .safetensors file, atomically."""
        _atomic.write(path, self.to_bytes())

    def to_bytes(self) -> bytes:
        """The network as the bytes of a .safetensors file."""
        return _format.pack(*self._file_parts())

    @classmethod
    def from_bytes(cls, data: bytes) -> Network:
        """A network from :meth:`to_bytes` output (validated)."""
        return cls._from_file(*_format.decode(data))

    def _file_parts(self):
        """(tensors, metadata) of this network's file, from copies taken
        while no fit or step runs (never half an update)."""
        with self._guard.read():
            if not _core.all_finite(self._params):
                raise ValueError("cannot save a network whose parameters "
                                 "contain NaN or infinity (load would "
                                 "reject the file)")
            meta = _format.network_metadata(
                self._layers, self._acts, self._loss, self._dtype,
                self._huber_delta, self._dropout, self._rng, self.metadata)
            params = self._params.copy()
        weights, biases = self._views(params)
        return _format.network_tensors(weights, biases), meta

    @classmethod
    def _from_file(cls, plan, tensors):
        """The network of a checked file: its plan (bpcore._format.Plan)
        and tensors."""
        acts = plan.activations
        try:
            arch = _check_architecture(plan.layers, acts[:-1], acts[-1],
                                       plan.loss, plan.dtype,
                                       plan.huber_delta, plan.dropout)
        except (TypeError, ValueError) as e:
            raise FormatError(f"invalid architecture in the file: "
                              f"{e}") from None
        # the generator that fit() shuffles with: the saved one, else a
        # fresh default_rng(0)
        rng = plan.rng if plan.rng is not None else np.random.default_rng(0)
        net = cls.__new__(cls)
        net._build(*arch, init="auto", rng=rng)
        for k in range(len(plan.layers) - 1):
            net._weights[k][...] = tensors[f"weights.{k}"]
            net._biases[k][...] = tensors[f"biases.{k}"]
        net.metadata = dict(sorted(plan.user.items()))
        return net

    def __getstate__(self):
        """A plain tuple for pickle and copy: the architecture, the
        metadata, the generator and the parameters (as they are, NaN and
        infinity included), copied while no fit or step runs."""
        with self._guard.read():
            return (self._layers, self._acts, self._loss, self._huber_delta,
                    self._dtype.name, self._dropout,
                    copy.deepcopy(self.metadata), copy.deepcopy(self._rng),
                    self._params.copy())

    def __setstate__(self, state):
        (layers, acts, loss, huber_delta, dtype, dropout, metadata, rng,
         params) = state
        self._build(tuple(layers), tuple(acts), loss, huber_delta,
                    np.dtype(dtype), tuple(dropout), "auto", rng)
        params = np.asarray(params)
        if params.shape != self._params.shape:
            raise ValueError(f"params must have shape {self._params.shape}, "
                             f"got {params.shape}")
        np.copyto(self._params, params, casting="same_kind")
        self.metadata = metadata

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        new.__setstate__(self.__getstate__())
        return new


def _run_into(out, fn, args):
    """fn(*args) into out["result"], or its exception into out["error"]."""
    try:
        out["result"] = fn(*args)
    except BaseException as e:  # handed to the waiting thread
        out["error"] = e


def _seed_at(seed, b):
    """The dropout seed that makes batch 0 of a call use batch b's masks
    (see bp_dropout_batch_seed: seed + b * GOLDEN, wrapped)."""
    if seed is None:
        return None
    return (seed + b * _dropout.GOLDEN) & (2**64 - 1)


class _FitLoop:
    """One call of Network.fit: the epoch loop around the C batch driver."""

    # Target wall time of one C call: short enough for prompt Ctrl-C.
    CHUNK_SECONDS = 0.03
    # A single batch measured to take longer than this (a large full batch)
    # runs on copies in a worker thread (see _isolated_call) ...
    LONG_CALL_SECONDS = 0.1
    # ... and so does one estimated to take longer than
    # START_ISOLATED_SECONDS at SLOW_FLOPS, from the first batch on.  The
    # speed is set far below any machine's, so that only batches that
    # surely take long pay for the copies and a new thread per batch.
    SLOW_FLOPS = 2e10
    START_ISOLATED_SECONDS = 1.0

    def __init__(self, net, X, Y, sw, val, epochs, batch_size, opt, shuffle,
                 early, callbacks, progress, nt, chunks=None):
        self.net, self.X, self.Y, self.sw, self.val = net, X, Y, sw, val
        self.epochs, self.opt, self.shuffle = epochs, opt, shuffle
        self.early, self.callbacks, self.nt = early, callbacks, nt
        self.chunks = chunks
        if chunks is not None:  # fit_chunks: batches of each chunk
            self.batch_size = batch_size
            self.B = 1  # grows to the largest batch met
        else:
            m = X.shape[0]
            self.B = m if batch_size is None else min(batch_size, m)
            self.n_batches = -(-m // self.B)
        self.progress = _training.Progress(bool(progress), epochs)

    def _segments(self):
        """The data of one epoch, as tuples (X, Y, sw, order, batch,
        n_batches, dropout seed): fit's whole data set, or fit_chunks'
        chunks one by one (each validated as it arrives).  The shuffling
        order, then the dropout seed, are drawn from the network's
        generator in that order."""
        net = self.net
        if self.chunks is None:
            order = (net._rng.permutation(self.X.shape[0])
                     if self.shuffle else None)
            yield (self.X, self.Y, self.sw, order, self.B, self.n_batches,
                   net._drop_seed())
            return
        source = self.chunks() if callable(self.chunks) else self.chunks
        for i, chunk in enumerate(source):
            X, Y, sw = net._check_chunk(chunk, i)
            m = X.shape[0]
            B = m if self.batch_size is None else min(self.batch_size, m)
            order = net._rng.permutation(m) if self.shuffle else None
            yield X, Y, sw, order, B, -(-m // B), net._drop_seed()

    def _gather(self, X, Y, sw, order, B, b, n):
        """The rows of batches b .. b + n - 1 from out-of-core sources,
        in the order the batches use them: (X, Y, sample weights)."""
        net = self.net
        r0, r1 = b * B, min(X.m, (b + n) * B)
        idx = None if order is None else order[r0:r1]
        if idx is None:
            Xc = X.read_inputs(r0, r1, net._dtype)
        else:
            Xc = V.as_inputs(X.take(idx), X.name, net._dtype, X.shape[1])[0]
        Yc = _data.read_targets(net, Y, r0, r1, idx)
        swc = None
        if sw is not None:
            swc = np.ascontiguousarray(sw[r0:r1] if idx is None else sw[idx])
        return Xc, Yc, swc

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
        bufs2 = [None if s is None else s.copy() for s in opt._buffers()]
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
        _core.commit_copies([params] + list(opt._buffers()), [p2] + bufs2,
                            opt, args2["t"])
        return out["result"]

    def run(self):
        """Train for the epochs; returns the History, kept as net.history
        from the start, so that after an exception (Ctrl-C, a callback's,
        DivergenceError) it holds the completed epochs."""
        net, opt = self.net, self.opt
        self._plan_calls()
        hist = net.history = History()
        watch = _training.EpochWatch(self.early)
        # the start of each epoch, restored when the epoch fails
        saved = opt._checkpoint(net._params)
        try:
            for e in range(self.epochs):
                saved.take()
                args = opt._c_args()
                lsum, wsum = self._epoch(e, args, saved)
                opt.epoch += 1
                if self._end_epoch(e, args, lsum, wsum, hist, watch):
                    hist.stopped_early = e + 1 < self.epochs
                    break
            watch.restore_best(net._params)
        finally:
            self.progress.close()
        return hist

    def _plan_calls(self):
        """The workspace and gradient buffers, the batches of the first C
        call, whether batches run isolated from the start, and the thread
        race (with several threads and enough work per batch)."""
        net = self.net
        self.work = net._arch.train_workspace(self.B, self.nt)
        self.grad = _aligned.empty_like(net._params)
        flops = 6.0 * self.B * max(1, net._n_weights)
        self.chunk = max(1, int(self.CHUNK_SECONDS * 1e9 / flops))
        self.isolate = flops / self.SLOW_FLOPS > self.START_ISOLATED_SECONDS
        self.race = None
        if self.nt > 1 and flops >= _race.MIN_TEAM_FLOPS:
            arch = net._arch
            rule, both = arch.train_cut(self.B, self.nt)
            cuts = (_core.CUT_AUTO,)
            if both:  # race the team's two cuts, the rule's first
                cuts = (rule, _core.CUT_COLUMNS if rule == _core.CUT_SAMPLES
                        else _core.CUT_SAMPLES)
            syncs = {cut: arch.train_syncs(self.B, cut) for cut in cuts}
            f64 = net._dtype == np.float64
            self.race = _race.ThreadRace(
                self.nt, flops, syncs, f64,
                (tuple(net._layers), net._dtype.str, self.B, self.nt))

    def _epoch(self, e, args, saved):
        """Every batch of epoch e: (loss sum, weight sum).  A chunk of
        fit_chunks that fails validation undoes the epoch, as divergence
        does."""
        lsum = wsum = 0.0
        try:
            for seg in self._segments():
                lsum, wsum = self._segment(e, seg, args, saved, lsum, wsum)
        except (ValueError, TypeError):
            saved.restore()
            raise
        return lsum, wsum

    def _segment(self, e, seg, args, saved, lsum, wsum):
        """The batches of one segment (the data, or one chunk), a few per
        C call: as many as take about CHUNK_SECONDS."""
        X, Y, sw, order, B, n_batches, dseed = seg
        if B > self.B:  # fit_chunks with batch_size=None
            self.B = B
            self.work = self.net._arch.train_workspace(B, self.nt)
        b = 0
        while b < n_batches:
            n, cand, probe = self._call_size(n_batches - b)
            t0 = time.perf_counter()
            call, n = self._call(X, Y, sw, order, B, b, n, args, cand,
                                 lsum, wsum, dseed)
            if self.isolate:
                lsum, wsum, done, diverged = self._isolated_call(call)
            else:
                lsum, wsum, done, diverged = self.net._arch.train(*call)
            dt = time.perf_counter() - t0
            self._timed(cand, n, done, dt)
            self.opt.t = args["t"]
            self._check_divergence(e, b, n, done, n_batches, diverged, saved)
            b += n
            if dt > 0 and not probe:
                self.chunk = max(1, min(4 * self.chunk, int(
                    n * self.CHUNK_SECONDS / dt)))
        return lsum, wsum

    def _call_size(self, remaining):
        """(batches, candidate, probe) of the next C call: the race may try
        another team size or cut (a probe) on fewer batches; an isolated
        call runs one batch.  The candidate is (threads, cut): the threads
        asked for (C may use fewer) and the C core's rule, or the race's
        exact choice (threads < 0)."""
        n = min(self.chunk, remaining)
        cand, probe = (self.nt, _core.CUT_AUTO), False
        if self.race is not None and not self.isolate:
            raced, n, probe = self.race.threads(n)
            cand = (-raced[0], raced[1])
        if self.isolate:
            n = 1
        return n, cand, probe

    def _call(self, X, Y, sw, order, B, b, n, args, cand, lsum, wsum,
              dseed):
        """(arguments of arch.train, batches) for batches b .. b + n - 1 on
        candidate cand (_call_size); out-of-core data gives its rows for
        them, at most a block."""
        params, grad, work = self.net._params, self.grad, self.work
        threads, cut = cand
        if isinstance(X, _data.Rows):
            n = min(n, max(1, X.block // B))
            Xc, Yc, swc = self._gather(X, Y, sw, order, B, b, n)
            return (params, grad, args, Xc, Yc, swc, None, B, 0, n, work,
                    threads, lsum, wsum, _seed_at(dseed, b), cut), n
        return (params, grad, args, X, Y, sw, order, B, b, n, work, threads,
                lsum, wsum, dseed, cut), n

    def _timed(self, cand, n, done, dt):
        """Learn from a call's time: the race's record of team sizes and
        cuts, and whether single batches are long enough to isolate."""
        threads, cut = cand
        if threads < 0 and done == n:
            self.race.record((-threads, cut), n, dt)
        if n == 1:
            self.isolate = dt > self.LONG_CALL_SECONDS

    def _check_divergence(self, e, b, n, done, n_batches, diverged, saved):
        """Raise DivergenceError, with the epoch's start restored, when the
        loss or (after the epoch's last update) the parameters are not
        finite."""
        if diverged:
            # counted from 1, as the progress lines count
            what = (f"the loss became NaN or infinite in epoch {e + 1} of "
                    f"{self.epochs} (batch {b + done + 1} of {n_batches})")
        elif b + n == n_batches and not _core.all_finite(self.net._params):
            # the last update, whose loss no batch saw
            what = (f"the parameters became NaN or infinite in the last "
                    f"update of epoch {e + 1} of {self.epochs}")
        else:
            return
        saved.restore()
        raise DivergenceError(f"fit: {what}; the parameters of the last "
                              f"completed epoch were restored")

    def _end_epoch(self, e, args, lsum, wsum, hist, watch):
        """Record epoch e (losses, plateau schedule, best parameters,
        progress, callbacks); True when training stops here."""
        net = self.net
        loss = lsum / wsum if wsum > 0 else float("nan")
        val = None if self.val is None else self._val_loss
        logs, watched = _training.record_epoch(hist, e, loss, args["lr"],
                                               val)
        if isinstance(self.opt.lr, ReduceLROnPlateau):
            self.opt.lr.step(watched)  # sets the next epoch's rate
        improved = watch.update(e, watched, hist, net._params)
        self.progress.epoch(e, self.epochs, logs)
        stop = _training.run_callbacks(self.callbacks, e, logs)
        return stop or watch.out_of_patience(improved)

    def _val_loss(self):
        """The loss on the validation data (in memory or out-of-core)."""
        Xv, Yv, swv = self.val
        if isinstance(Xv, _data.Rows):
            return float(self.net._loss_on_rows(Xv, Yv, swv, self.nt))
        return float(self.net._loss_on(Xv, Yv, swv, self.nt))
