"""What every training loop shares: the History and EarlyStopping of the
API, the progress display and the end of an epoch (the watched loss, the
best parameters, callbacks, patience).

Used by Network.fit's C batch driver (bpcore.network), the data-parallel
loop (bpcore._distributed) and L-BFGS (bpcore.lbfgs); knows nothing of
Network.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from bpcore import _validation as V

__all__ = ["History", "EarlyStopping", "Progress", "EpochWatch",
           "run_callbacks", "is_false", "train_begin", "record_epoch"]


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


def train_begin(callbacks, net, opt):
    """Call ``on_train_begin(network, optimizer)`` of the callbacks that
    have one, before the first epoch."""
    for cb in callbacks:
        begin = getattr(cb, "on_train_begin", None)
        if callable(begin):
            begin(net, opt)


def is_false(r):
    """Whether a callback's return value asks to stop: False, or numpy's
    False from a comparison; None and other values continue."""
    return r is False or (isinstance(r, np.bool_) and not r)


def run_callbacks(callbacks, epoch, logs, skip=None):
    """Run every callback (each on its own copy of logs); True when one
    asks to stop.  ``skip(cb)`` true leaves a callback out."""
    stop = False
    for cb in callbacks:
        if skip is not None and skip(cb):
            continue
        if is_false(cb(epoch, dict(logs))):
            stop = True
    return stop


def record_epoch(hist, epoch, loss, lr, val_loss=None):
    """Append an epoch's losses to hist: (its logs, the watched loss).
    ``val_loss`` is None without validation data, else a callable that
    computes the validation loss."""
    hist.loss.append(loss)
    logs = {"loss": loss, "val_loss": None, "lr": lr}
    if val_loss is not None:
        logs["val_loss"] = val_loss()
        hist.val_loss.append(logs["val_loss"])
    hist.epochs_run = epoch + 1
    watched = logs["val_loss"] if val_loss is not None else loss
    return logs, watched


class EpochWatch:
    """The watched loss across epochs: the best one, the epochs since it,
    and (with ``early.restore_best``) the parameters it ended with."""

    def __init__(self, early):
        self.early = early
        self.best = math.inf
        self.best_params = None
        self.wait = 0

    def update(self, epoch, watched, hist, params):
        """Record an epoch's watched loss; True when it improved."""
        if self.early is not None:
            improved = watched < self.best - self.early.min_delta
        else:
            improved = watched < self.best
        if improved:
            self.best, hist.best_epoch, self.wait = watched, epoch, 0
            if self.early is not None and self.early.restore_best:
                if self.best_params is None:
                    self.best_params = np.empty_like(params)
                np.copyto(self.best_params, params)
        else:
            self.wait += 1
        return improved

    def out_of_patience(self, improved):
        """True when early stopping ends the training after this epoch."""
        return (self.early is not None and not improved
                and self.wait >= self.early.patience)

    def restore_best(self, params):
        """Put back the best epoch's parameters, when kept."""
        if self.best_params is not None:
            params[...] = self.best_params


class Progress:
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
        """Show one epoch's losses."""
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
        """Close the bar (tqdm)."""
        if self.bar is not None:
            self.bar.close()
