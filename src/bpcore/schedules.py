"""Learning-rate schedules, evaluated once per epoch.

A schedule is any callable ``schedule(epoch) -> lr`` with ``epoch`` counted
from 0 over the optimizer's whole life (it continues across ``fit`` calls
that share the optimizer).  The classes below cover the usual cases.
"""
from __future__ import annotations

import math

from bpcore._validation import check_float, check_int

__all__ = ["Schedule", "Constant", "Step", "Exponential", "Cosine",
           "InverseScaling", "constant", "step", "exponential", "cosine",
           "inverse_scaling"]


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


constant = Constant
step = Step
exponential = Exponential
cosine = Cosine
inverse_scaling = InverseScaling
