"""Callbacks for :meth:`bpcore.Network.fit`: ``ModelCheckpoint`` and
``CSVLogger``.

Both are ``cb(epoch, logs)`` callables like any other callback; ``fit``
also calls their ``on_train_begin(network, optimizer)`` once before the
first epoch, which is how they know the network (and optimizer) to save.

Epoch numbering and resuming
----------------------------
``fit`` counts its epochs from 0 at every call.  These callbacks keep their
own count instead, which continues across ``fit`` calls that share the
callback object: the third epoch of the second ``fit`` of 10 epochs is
epoch 12.  A new ``CSVLogger(path, append=True)`` on an existing log (a new
process resuming a run) continues after the last epoch in the file; a new
``ModelCheckpoint`` starts with no best value (pass ``best=`` to resume
with the best value of an earlier run).
"""
import csv
import io as _stdio
import math
import os

from bpcore import io as _io

__all__ = ["ModelCheckpoint", "CSVLogger"]

_COLUMNS = ("epoch", "loss", "val_loss", "lr")


def _path(path, name):
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"{name}: path must be a str or path-like, got "
                        f"{type(path).__name__}") from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p:
        raise ValueError(f"{name}: path is empty")
    return p


def _flag(value, name):
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class ModelCheckpoint:
    """Save the network after epochs, atomically, through :mod:`bpcore.io`.

    Parameters
    ----------
    path : str or path-like
        The ``.safetensors`` file, replaced at each save (``bpcore.io.save``
        writes a temporary file and renames it: a crash never leaves a
        half-written file).
    monitor : {"val_loss", "loss"}, default="val_loss"
        The value compared with ``save_best_only``; without validation data
        "val_loss" falls back to the training loss (as ``EarlyStopping``).
    save_best_only : bool, default=True
        Save only when the monitored value is below the best so far (the
        first epoch always saves); False saves after every epoch.
    save_optimizer : bool, default=False
        Save the optimizer's state with the network (momentum or moments,
        step and epoch counts), so that ``bpcore.io.load(path,
        with_optimizer=True)`` resumes training exactly.  Needs an
        ``SGD``, ``Adam`` or ``AdamW`` optimizer (``LBFGS`` keeps no state
        between calls).  A learning-rate callable other than the
        ``bpcore.schedules`` classes is stored as null: pass the optimizer
        object to ``load`` then.
    best : float, default=inf
        The best value so far, to resume after an earlier run.

    Attributes
    ----------
    best : float
        Lowest monitored value seen (inf before any epoch).
    best_epoch : int or None
        This callback's epoch count at that value.
    epoch : int
        Epochs seen so far (continues across ``fit`` calls).
    n_saves : int
        Files written.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=True,
                 save_optimizer=False, best=math.inf):
        self.path = _path(path, "ModelCheckpoint")
        if monitor not in ("val_loss", "loss"):
            raise ValueError(f"monitor must be 'val_loss' or 'loss', got "
                             f"{monitor!r}")
        self.monitor = monitor
        self.save_best_only = _flag(save_best_only, "save_best_only")
        self.save_optimizer = _flag(save_optimizer, "save_optimizer")
        try:
            best = float(best)
        except (TypeError, ValueError):
            raise TypeError(f"best must be a number, got {best!r}") from None
        if math.isnan(best):
            raise ValueError("best must not be NaN")
        self.best = best
        self.best_epoch = None
        self.epoch = 0
        self.n_saves = 0
        self._net = None
        self._opt = None

    def on_train_begin(self, network, optimizer):
        """Called by ``fit`` before the first epoch."""
        if self.save_optimizer:
            from bpcore.optim import SGD, Adam, AdamW
            if type(optimizer) not in (SGD, Adam, AdamW):
                raise ValueError(
                    f"ModelCheckpoint(save_optimizer=True) saves the state "
                    f"of SGD, Adam or AdamW; {type(optimizer).__name__} has "
                    f"none to save (use save_optimizer=False)")
        self._net = network
        self._opt = optimizer

    def __call__(self, epoch, logs):
        if self._net is None:
            raise RuntimeError("ModelCheckpoint: no network; pass it in "
                               "fit(..., callbacks=[...]), which binds it")
        value = logs.get(self.monitor)
        if value is None:
            value = logs.get("loss")
        e = self.epoch
        self.epoch += 1
        improved = value is not None and value < self.best
        if improved:
            self.best = float(value)
            self.best_epoch = e
        if improved or not self.save_best_only:
            _io.save(self._net, self.path,
                     optimizer=self._opt if self.save_optimizer else None)
            self.n_saves += 1
        return None

    def __repr__(self):
        return (f"ModelCheckpoint({self.path!r}, monitor={self.monitor!r}, "
                f"save_best_only={self.save_best_only}, save_optimizer="
                f"{self.save_optimizer})")


def _fmt(v):
    return "" if v is None else repr(float(v))


class CSVLogger:
    """Write one CSV row per epoch: ``epoch,loss,val_loss,lr``.

    The header row comes first; ``val_loss`` is empty without validation
    data, ``lr`` empty for optimizers without a rate (``LBFGS``).  Numbers
    are written in full precision (Python's ``repr``).  Each row is
    appended and flushed at the end of its epoch, so the file is complete
    up to the last finished epoch even if training is interrupted.

    Parameters
    ----------
    path : str or path-like
    append : bool, default=False
        False starts a new file (at the first ``fit`` that uses this
        object).  True appends to an existing file written with the same
        header, numbering epochs after its last row; a missing or empty
        file is started with the header.  The same object used by several
        ``fit`` calls always appends, its epoch count continuing.

    Attributes
    ----------
    epoch : int
        The number of the next row.
    """

    def __init__(self, path, append=False):
        self.path = _path(path, "CSVLogger")
        self.append = _flag(append, "append")
        self.epoch = 0
        self._started = False

    def _start(self):
        if self.append and os.path.exists(self.path) and \
                os.path.getsize(self.path) > 0:
            with open(self.path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows or tuple(rows[0]) != _COLUMNS:
                raise ValueError(
                    f"CSVLogger(append=True): {self.path!r} does not start "
                    f"with the header {','.join(_COLUMNS)}")
            last = -1
            for r in rows[1:]:
                if r:
                    try:
                        last = int(r[0])
                    except ValueError:
                        raise ValueError(
                            f"CSVLogger(append=True): {self.path!r} has a "
                            f"row whose epoch is not an integer: {r!r}"
                        ) from None
            self.epoch = last + 1
        else:
            with open(self.path, "w", newline="") as f:
                f.write(",".join(_COLUMNS) + "\n")
            self.epoch = 0
        self._started = True

    def on_train_begin(self, network, optimizer):
        """Called by ``fit`` before the first epoch: opens the file."""
        if not self._started:
            self._start()

    def __call__(self, epoch, logs):
        if not self._started:
            self._start()
        buf = _stdio.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(
            [self.epoch, _fmt(logs.get("loss")), _fmt(logs.get("val_loss")),
             _fmt(logs.get("lr"))])
        with open(self.path, "a", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
        self.epoch += 1
        return None

    def __repr__(self):
        return f"CSVLogger({self.path!r}, append={self.append})"
