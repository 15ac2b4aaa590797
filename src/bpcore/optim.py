"""Optimizers with PyTorch's update rules.

The rules run in C over the flat parameter buffer; these objects hold the
hyperparameters and the state (momentum or moment buffers, the update count
``t`` and the epoch count used by learning-rate schedules).  State lives in
the optimizer, so passing the same object to a later ``fit`` or ``step``
continues where it stopped.  Weight decay applies to weights, never biases.
"""
import numpy as np

from bpcore import _core
from bpcore._validation import check_float

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "get_optimizer"]


def _check_lr(lr):
    if callable(lr):
        return lr
    return check_float(lr, "lr", low=0.0)


class Optimizer:
    """Base class.  Subclasses set ``_kind`` and their hyperparameters."""

    _kind = None
    _n_states = 0

    def __init__(self, lr):
        self.lr = _check_lr(lr)
        self.reset()

    def reset(self):
        """Forget the state: buffers, update count and epoch count."""
        self.t = 0
        self.epoch = 0
        self._state = [None] * self._n_states
        self._owner = None

    def lr_at(self, epoch=None):
        """The learning rate for an epoch (the current one by default)."""
        e = self.epoch if epoch is None else epoch
        lr = self.lr(e) if callable(self.lr) else self.lr
        return check_float(lr, "learning rate from schedule", low=0.0)

    def _bind(self, n_params, dtype):
        """Create or check the state buffers for a parameter vector."""
        key = (int(n_params), np.dtype(dtype))
        if self._owner is None:
            self._owner = key
            self._state = [np.zeros(key[0], dtype=key[1])
                           for _ in range(self._n_states)]
        elif self._owner != key:
            raise ValueError(
                f"optimizer: its state belongs to {self._owner[0]} "
                f"{self._owner[1]} parameters, not {key[0]} {key[1]}; use a "
                f"new optimizer or call optimizer.reset()")

    def _c_args(self):
        """The dict that bpcore._core reads."""
        d = dict(kind=self._kind, lr=self.lr_at(), t=self.t,
                 state1=self._state[0] if self._n_states > 0 else None,
                 state2=self._state[1] if self._n_states > 1 else None)
        d.update(self._hyper())
        return d

    def _hyper(self):
        return {}

    def state_dict(self):
        """A copy of the state: {'t', 'epoch', 'buffers'}."""
        return {"t": self.t, "epoch": self.epoch,
                "buffers": [None if s is None else s.copy()
                            for s in self._state]}

    def load_state_dict(self, state):
        """Restore a state from :meth:`state_dict`."""
        self.t = int(state["t"])
        self.epoch = int(state["epoch"])
        bufs = state["buffers"]
        self._state = [None if s is None else np.array(s, copy=True)
                       for s in bufs]
        self._owner = None
        if self._state and self._state[0] is not None:
            self._owner = (self._state[0].shape[0], self._state[0].dtype)

    def __repr__(self):
        hp = ", ".join(f"{k}={v!r}" for k, v in self._public().items())
        return f"{type(self).__name__}({hp})"

    def _public(self):
        return {"lr": self.lr}


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
    """

    _kind = _core.OPT_SGD

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False,
                 weight_decay=0.0):
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
        super().__init__(lr)

    def _hyper(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)

    def _public(self):
        return dict(lr=self.lr, momentum=self.momentum,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam, PyTorch's rule (L2 ``weight_decay`` added to the gradient).

    Parameters
    ----------
    lr : float or callable, default=0.001
    betas : (float, float) in [0, 1), default=(0.9, 0.999)
    eps : float > 0, default=1e-8
    weight_decay : float >= 0, default=0.0
    """

    _kind = _core.OPT_ADAM
    _n_states = 2

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0):
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
        super().__init__(lr)

    def _hyper(self):
        return dict(beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                    weight_decay=self.weight_decay)

    def _public(self):
        return dict(lr=self.lr, betas=self.betas, eps=self.eps,
                    weight_decay=self.weight_decay)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay, ``p *= 1 - lr * wd`` first
    (PyTorch's rule; its default ``weight_decay`` is 0.01)."""

    _kind = _core.OPT_ADAMW

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.01):
        super().__init__(lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay)


_NAMES = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(optimizer):
    """An optimizer object from an object or a name with defaults."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        key = optimizer.lower()
        if key not in _NAMES:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one "
                             f"of {', '.join(_NAMES)} or an optimizer object")
        return _NAMES[key]()
    raise TypeError(f"optimizer must be a bpcore optimizer (SGD, Adam, "
                    f"AdamW) or a name, got {type(optimizer).__name__}")
