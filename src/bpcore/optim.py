"""Optimizers with PyTorch's update rules.

The rules run in C over the flat parameter buffer; these objects hold the
hyperparameters and the state (momentum or moment buffers, the update count
``t`` and the epoch count used by learning-rate schedules).  State lives in
the optimizer, so passing the same object to a later ``fit`` or ``step``
continues where it stopped.  Weight decay applies to weights, never biases.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from bpcore import _aligned
from bpcore import _core
from bpcore._names import OPT_CODES
from bpcore._validation import check_float
from bpcore.lbfgs import LBFGS

if TYPE_CHECKING:  # annotations only: nothing imported at run time
    from collections.abc import Callable
    from typing import Any, Union

    #: a rate, or a schedule: epoch -> rate
    LR = Union[float, Callable[[int], float]]

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer"]


def _check_clip(clip_norm):
    """None, or a positive finite float."""
    if clip_norm is None:
        return None
    return check_float(clip_norm, "clip_norm", low=0.0, low_open=True)


def _check_lr(lr):
    if callable(lr):
        return lr
    return check_float(lr, "lr", low=0.0)


class Optimizer:
    """Base class.  Subclasses set ``_name`` (in bpcore._names.OPTIMIZERS),
    ``_kind`` (the C code of their rule, ``OPT_CODES[_name]``), ``_HYPER``
    (their constructor's arguments but lr and clip_norm, in order) and
    those hyperparameters."""

    _name = None
    _kind = None
    _n_states = 0
    _HYPER = ()

    def __init__(self, lr: LR, clip_norm: float | None = None) -> None:
        self.lr = _check_lr(lr)
        self.clip_norm = _check_clip(clip_norm)
        self._busy = False
        self.reset()

    def _in_use(self):
        """Held by fit and step: one training at a time per optimizer (its
        state and step count belong to one sequence of updates).  A context
        manager that tests and sets the flag in C (_core.Busy), so Ctrl-C
        cannot leave it set; a forked child finds it free."""
        return _core.Busy(self)

    def __getstate__(self):
        """A plain tuple for pickle and copy: the constructor's arguments,
        the counters, the state buffers and the shape they belong to.  A
        copy is never in use."""
        return (self.lr, self._hyperparameters(), self.t, self.epoch,
                list(self._state), self._owner)

    def __setstate__(self, state):
        lr, hyper, t, epoch, buffers, owner = state
        self.__init__(lr=lr, **hyper)
        self.t, self.epoch = t, epoch
        self._state, self._owner = buffers, owner

    def reset(self) -> None:
        """Forget the state: buffers, update count and epoch count."""
        self.t = 0
        self.epoch = 0
        self._state = [None] * self._n_states
        self._owner = None

    def lr_at(self, epoch: int | None = None) -> float:
        """The learning rate for an epoch (the current one by default)."""
        e = self.epoch if epoch is None else epoch
        lr = self.lr(e) if callable(self.lr) else self.lr
        return check_float(lr, "learning rate from schedule", low=0.0)

    def _bind(self, n_params, dtype):
        """Create or check the state buffers for a parameter vector."""
        key = (int(n_params), np.dtype(dtype))
        if self._owner is None:
            self._owner = key
            self._state = [_aligned.zeros(key[0], key[1])
                           for _ in range(self._n_states)]
        elif self._owner != key:
            raise ValueError(
                f"optimizer: its state belongs to {self._owner[0]} "
                f"{self._owner[1]} parameters, not {key[0]} {key[1]}; use a "
                f"new optimizer or call optimizer.reset()")

    def _buffer_count(self):
        """How many state buffers this optimizer keeps (with these
        settings): 0, 1 (SGD's momentum) or 2 (Adam's moments)."""
        return self._n_states

    def _buffers(self):
        """The live state buffers (None before the first update), in the
        layout of the parameters: what the training loops update."""
        return self._state

    def _checkpoint(self, params):
        """A :class:`_Checkpoint` of params and this optimizer's state."""
        return _Checkpoint(params, self)

    def _c_args(self):
        """The dict that bpcore._core reads."""
        d = dict(kind=self._kind, lr=self.lr_at(), t=self.t, owner=self,
                 state1=self._state[0] if self._n_states > 0 else None,
                 state2=self._state[1] if self._n_states > 1 else None,
                 clip_norm=self.clip_norm)
        d.update(self._hyper())
        return d

    def _hyper(self):
        """The hyperparameters as _core reads them."""
        return {}

    def _hyperparameters(self):
        """The constructor's arguments but lr (clip_norm only when set):
        what a model file stores."""
        hyper = {k: getattr(self, k) for k in self._HYPER}
        if self.clip_norm is not None:
            hyper["clip_norm"] = float(self.clip_norm)
        return hyper

    def state_dict(self) -> dict[str, Any]:
        """A copy of the state: {'t', 'epoch', 'buffers'}."""
        return {"t": self.t, "epoch": self.epoch,
                "buffers": [None if s is None else s.copy()
                            for s in self._state]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`.

        The state is checked first (the keys, ``t`` and ``epoch`` whole
        numbers >= 0, one buffer per state this optimizer keeps: all None,
        or 1-D finite float arrays of one shape and dtype); on an error
        nothing changes.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"load_state_dict: state must be a dict from "
                            f"state_dict(), got {type(state).__name__}")
        missing = [k for k in ("t", "epoch", "buffers") if k not in state]
        if missing:
            raise ValueError(f"load_state_dict: state lacks {missing}")
        counts = {key: _check_count(state[key], key) for key in ("t", "epoch")}
        new = self._checked_buffers(state["buffers"])
        self.t = counts["t"]
        self.epoch = counts["epoch"]
        self._state = new
        self._owner = None
        if new and new[0] is not None:
            self._owner = (new[0].shape[0], new[0].dtype)

    def _checked_buffers(self, bufs):
        """Copies of the buffers of a state_dict, checked: one per state
        this optimizer keeps, all None or all alike finite 1-D arrays."""
        if not isinstance(bufs, (list, tuple)) or len(bufs) != self._n_states:
            raise ValueError(
                f"load_state_dict: {type(self).__name__} with these settings "
                f"keeps {self._n_states} state buffer(s), got "
                f"{len(bufs) if isinstance(bufs, (list, tuple)) else bufs!r}"
                f" (a state from another kind of optimizer?)")
        new = [None if b is None else _aligned.copy(np.asarray(b))
               for b in bufs]
        if all(b is None for b in new):
            return new
        _check_alike(new)
        if self._kind in (OPT_CODES["adam"], OPT_CODES["adamw"]) and (
                new[1] < 0).any():
            raise ValueError("load_state_dict: Adam's second moments "
                             "(buffer 1) must be >= 0")
        return new

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self._public().items())
        return f"{type(self).__name__}({hp})"

    def _public(self):
        """The constructor's arguments, as repr shows them."""
        return {"lr": self.lr, **self._hyperparameters()}


def _check_count(v, key):
    """t or epoch of a state_dict: a whole number >= 0."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, np.integer)) or v < 0:
        raise ValueError(f"load_state_dict: {key} must be a whole "
                         f"number >= 0, got {v!r}")
    return int(v)


def _check_alike(buffers):
    """State buffers must be non-empty finite 1-D float arrays of one shape
    and dtype."""
    first = buffers[0]
    for j, b in enumerate(buffers):
        if (b is None or b.ndim != 1 or b.dtype not in
                (np.float32, np.float64) or b.shape != first.shape
                or b.dtype != first.dtype or b.size == 0):
            raise ValueError(
                "load_state_dict: buffers must all be None, or all "
                "non-empty 1-D float32/float64 arrays of one shape "
                "and dtype")
        if not np.isfinite(b).all():
            raise ValueError(f"load_state_dict: buffer {j} holds NaN or "
                             f"infinity")


def _copy_bufs(dst, src):
    """Copy each array of src into its place in dst (None entries skipped)."""
    for d, s in zip(dst, src):
        if s is not None:
            np.copyto(d, s)


class _Checkpoint:
    """The parameters and an optimizer's state (buffers, t, epoch) at a
    point of training, put back when what followed fails.  The copies are
    made once and refilled, so memory does not grow with the epochs."""

    def __init__(self, params, opt):
        self.params, self.opt = params, opt
        self.saved_params = np.empty_like(params)
        self.saved_bufs = [None if b is None else np.empty_like(b)
                           for b in opt._state]
        self.t = self.epoch = 0

    def take(self):
        """Copy the current parameters and state."""
        np.copyto(self.saved_params, self.params)
        _copy_bufs(self.saved_bufs, self.opt._state)
        self.t, self.epoch = self.opt.t, self.opt.epoch
        return self

    def restore(self):
        """Put the copied parameters and state back."""
        np.copyto(self.params, self.saved_params)
        _copy_bufs(self.opt._state, self.saved_bufs)
        self.opt.t, self.opt.epoch = self.t, self.epoch


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's rule.

    ``v = momentum * v + g``; ``p -= lr * v`` (Nesterov: ``p -= lr * (g +
    momentum * v)``), with ``g`` the gradient plus ``weight_decay * p`` for
    weights.

    Parameters
    ----------
    lr : float or callable, default=0.01
        Learning rate, or a schedule ``lr(epoch)``.
    momentum : float in [0, 1), default=0.0
    nesterov : bool, default=False
        Requires ``momentum > 0``.
    weight_decay : float >= 0, default=0.0
        L2 penalty on weights (not biases).
    clip_norm : float > 0 or None, default=None
        Before each update, scale the gradient so that its L2 norm over all
        parameters is at most ``clip_norm``, as
        ``torch.nn.utils.clip_grad_norm_``: ``g *= min(1, clip_norm /
        (||g|| + 1e-6))`` (the norm summed in double, in a fixed order).
    """

    _name = "sgd"
    _kind = OPT_CODES["sgd"]
    _HYPER = ("momentum", "nesterov", "weight_decay")

    def __init__(self, lr: LR = 0.01, momentum: float = 0.0,
                 nesterov: bool = False,
                 weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        self.momentum = check_float(momentum, "momentum", low=0.0, high=1.0,
                                    high_open=True)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov momentum requires momentum > 0")
        self.nesterov = bool(nesterov)
        self.weight_decay = check_float(weight_decay, "weight_decay",
                                        low=0.0)
        self._n_states = 1 if self.momentum > 0 else 0
        super().__init__(lr, clip_norm)

    def _hyper(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam, PyTorch's rule (L2 ``weight_decay`` added to the gradient).

    Parameters
    ----------
    lr : float or callable, default=0.001
    betas : (float, float) in [0, 1), default=(0.9, 0.999)
    eps : float > 0, default=1e-8
    weight_decay : float >= 0, default=0.0
    clip_norm : float > 0 or None, default=None
        Global L2 gradient-norm clipping, as in :class:`SGD`.
    """

    _name = "adam"
    _kind = OPT_CODES["adam"]
    _n_states = 2
    _HYPER = ("betas", "eps", "weight_decay")

    def __init__(self, lr: LR = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0,
                 clip_norm: float | None = None) -> None:
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise TypeError(f"betas must be a pair of floats, "
                            f"got {betas!r}") from None
        self.betas = (check_float(b1, "betas[0]", low=0.0, high=1.0,
                                  high_open=True),
                      check_float(b2, "betas[1]", low=0.0, high=1.0,
                                  high_open=True))
        self.eps = check_float(eps, "eps", low=0.0, low_open=True)
        self.weight_decay = check_float(weight_decay, "weight_decay",
                                        low=0.0)
        super().__init__(lr, clip_norm)

    def _hyper(self):
        return dict(beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                    weight_decay=self.weight_decay)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * wd`` first
    (PyTorch's rule; its default ``weight_decay`` is 0.01)."""

    _name = "adamw"
    _kind = OPT_CODES["adamw"]

    def __init__(self, lr: LR = 0.001,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01,
                 clip_norm: float | None = None) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, clip_norm=clip_norm)


_NAMES = {cls._name: cls for cls in (SGD, Adam, AdamW)}


def get_optimizer(optimizer: Optimizer | str) -> Optimizer:
    """An optimizer object from an object or a name with defaults."""
    if isinstance(optimizer, (Optimizer, LBFGS)):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key == "lbfgs":
            return LBFGS()
        if key not in _NAMES:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one "
                             f"of {', '.join(_NAMES)}, lbfgs or an optimizer "
                             f"object")
        return _NAMES[key]()
    raise TypeError(f"optimizer must be a bpcore optimizer (SGD, Adam, "
                    f"AdamW, LBFGS) or a name, got {type(optimizer).__name__}")
