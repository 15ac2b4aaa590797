"""Learning-rate schedules, evaluated once per epoch.

A schedule is any callable ``schedule(epoch) -> lr`` with ``epoch`` counted
from 0 over the optimizer's whole life (it continues across ``fit`` calls
that share the optimizer).  The classes below cover the usual cases.
"""
from __future__ import annotations

import math

from bpcore._validation import check_float, check_int

__all__ = ["Schedule", "Constant", "Step", "Exponential", "Cosine",
           "InverseScaling", "ReduceLROnPlateau", "constant", "step",
           "exponential", "cosine", "inverse_scaling"]


def _scaled(lr, gamma, k):
    """lr * gamma ** k, infinite rather than OverflowError (gamma > 1 for
    many epochs); fit then reports the divergence."""
    try:
        return lr * gamma ** k
    except OverflowError:
        return math.inf


class Schedule:
    """Base class: subclasses implement ``__call__(epoch) -> float``."""

    def __call__(self, epoch: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr(epoch) = lr."""

    def __init__(self, lr: float) -> None:
        self.lr = check_float(lr, "lr", low=0.0)

    def __call__(self, epoch: int) -> float:
        return self.lr


class Step(Schedule):
    """lr(epoch) = lr * gamma ** (epoch // step_size)."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = check_float(lr, "lr", low=0.0)
        self.step_size = check_int(step_size, "step_size", minimum=1)
        self.gamma = check_float(gamma, "gamma", low=0.0)

    def __call__(self, epoch: int) -> float:
        return _scaled(self.lr, self.gamma, epoch // self.step_size)


class Exponential(Schedule):
    """lr(epoch) = lr * gamma ** epoch."""

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = check_float(lr, "lr", low=0.0)
        self.gamma = check_float(gamma, "gamma", low=0.0)

    def __call__(self, epoch: int) -> float:
        return _scaled(self.lr, self.gamma, epoch)


class Cosine(Schedule):
    """Cosine annealing from lr to eta_min over t_max epochs, then eta_min:
    lr(e) = eta_min + (lr - eta_min) (1 + cos(pi e / t_max)) / 2."""

    def __init__(self, lr: float, t_max: int | None = None, eta_min: float = 0.0,
                 *, T_max: int | None = None) -> None:
        if t_max is None:
            t_max = T_max  # PyTorch's spelling
        if t_max is None:
            raise TypeError("Cosine needs t_max, the epochs of the descent")
        self.lr = check_float(lr, "lr", low=0.0)
        self.t_max = check_int(t_max, "t_max", minimum=1)
        self.eta_min = check_float(eta_min, "eta_min", low=0.0)

    def __call__(self, epoch: int) -> float:
        e = min(epoch, self.t_max)
        return self.eta_min + (self.lr - self.eta_min) * (
            1 + math.cos(math.pi * e / self.t_max)) / 2


class InverseScaling(Schedule):
    """scikit-learn's 'invscaling': lr(epoch) = lr / (epoch + 1) ** power_t."""

    def __init__(self, lr: float, power_t: float = 0.5) -> None:
        self.lr = check_float(lr, "lr", low=0.0)
        self.power_t = check_float(power_t, "power_t", low=0.0)

    def __call__(self, epoch: int) -> float:
        return self.lr / (epoch + 1) ** self.power_t


class ReduceLROnPlateau(Schedule):
    """Divide the rate when a monitored value stops improving (PyTorch's
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``, the same rules).

    ``fit`` steps it once per epoch, after the epoch, with the validation
    loss when there is validation data and the training loss otherwise; the
    new rate applies from the next epoch.  Call :meth:`step` yourself when
    training with ``Network.step``.

    A value improves on ``best`` when, for mode "min", it is below
    ``best * (1 - threshold)`` (threshold_mode "rel") or ``best - threshold``
    ("abs"); for mode "max", above ``best * (1 + threshold)`` or ``best +
    threshold``.  After more than ``patience`` epochs without improvement
    the rate becomes ``max(rate * factor, min_lr)`` (unchanged when that
    changes it by ``eps`` or less), then ``cooldown`` epochs pass in which
    bad epochs are not counted.

    Parameters
    ----------
    lr : float >= 0
        The starting rate.
    mode : {"min", "max"}, default="min"
    factor : float in [0, 1), default=0.1
    patience : int >= 0, default=10
    threshold : float >= 0, default=1e-4
    threshold_mode : {"rel", "abs"}, default="rel"
    cooldown : int >= 0, default=0
    min_lr : float >= 0, default=0.0
    eps : float >= 0, default=1e-8

    The state (the current rate, ``best``, the bad-epoch and cooldown
    counters) lives in the object and continues across ``fit`` calls that
    share it; :meth:`reset` starts over.
    """

    def __init__(self, lr, mode="min", factor=0.1, patience=10,
                 threshold=1e-4, threshold_mode="rel", cooldown=0,
                 min_lr=0.0, eps=1e-8):
        self.lr = check_float(lr, "lr", low=0.0)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.factor = check_float(factor, "factor", low=0.0, high=1.0,
                                  high_open=True)
        self.patience = check_int(patience, "patience", minimum=0)
        self.threshold = check_float(threshold, "threshold", low=0.0)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got "
                             f"{threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.cooldown = check_int(cooldown, "cooldown", minimum=0)
        self.min_lr = check_float(min_lr, "min_lr", low=0.0)
        self.eps = check_float(eps, "eps", low=0.0)
        self.reset()

    def reset(self):
        """Back to the starting rate, with no best value seen."""
        self.current_lr = self.lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _better(self, value):
        t, best = self.threshold, self.best
        if self.mode == "min":
            bound = best * (1.0 - t) if self.threshold_mode == "rel" \
                else best - t
            return value < bound
        bound = best * (1.0 + t) if self.threshold_mode == "rel" \
            else best + t
        return value > bound

    def step(self, value):
        """Record one epoch's monitored value; returns the rate for the next
        epoch."""
        value = float(value)
        self.last_epoch += 1
        if self._better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new = max(self.current_lr * self.factor, self.min_lr)
            if self.current_lr - new > self.eps:
                self.current_lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.current_lr

    def __call__(self, epoch):
        return self.current_lr

    def __repr__(self):
        return (f"ReduceLROnPlateau(lr={self.lr!r}, mode={self.mode!r}, "
                f"factor={self.factor!r}, patience={self.patience!r}, "
                f"threshold={self.threshold!r}, threshold_mode="
                f"{self.threshold_mode!r}, cooldown={self.cooldown!r}, "
                f"min_lr={self.min_lr!r}, eps={self.eps!r}; current_lr="
                f"{self.current_lr!r})")


constant = Constant
step = Step
exponential = Exponential
cosine = Cosine
inverse_scaling = InverseScaling
