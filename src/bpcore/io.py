"""Model files: one ``.safetensors`` file per network (and optionally its
optimizer's state), written atomically and read as untrusted input.

The file layout and its checks are in ``bpcore._format`` (format
``bpcore``, version ``1``): a standard safetensors file whose tensors are
``weights.K``, ``biases.K`` and, with an optimizer, ``optimizer.buffer.J``,
and whose metadata holds the architecture, the generator state, the
optimizer's hyperparameters and counters, and ``user.<key>`` entries for
``Network.metadata``.  Loading checks everything before allocating
anything; every problem raises :class:`bpcore.FormatError`, and nothing
from the file is ever executed.
"""
from __future__ import annotations

import os
from typing import Literal, Union, overload

from bpcore import _atomic
from bpcore import _format
from bpcore._format import (FORMAT_NAME, FORMAT_VERSION, MAX_HEADER_BYTES,
                            MAX_LAYERS, MAX_PARAMS)
from bpcore.network import Network
from bpcore.optim import Optimizer

#: what ``path`` arguments accept
PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["save", "load", "to_bytes", "from_bytes", "FORMAT_NAME",
           "FORMAT_VERSION", "MAX_HEADER_BYTES", "MAX_PARAMS", "MAX_LAYERS"]


# -- saving --------------------------------------------------------------

def save(net: Network, path: PathLike,
         optimizer: Optimizer | None = None) -> None:
    """Write a network (and optionally its optimizer's state) to a file.

    The bytes go to a temporary file in the same folder, which is flushed,
    fsync'ed and then renamed over ``path`` (``os.replace``): a crash at any
    moment leaves either the old file or the new one under ``path``.  The
    temporary file is ``.<name>.<pid>.<random>.tmp``, locked (flock) while
    written; a process killed mid-save (kill -9) leaves it behind, and the
    next save to the same ``path`` removes such files whose process is gone
    and that no process holds locked.

    Parameters
    ----------
    net : Network
    path : str or path-like
    optimizer : Optimizer, optional
        Saved too (hyperparameters, step and epoch counts, state buffers) so
        that training resumes exactly; read back with
        ``load(path, with_optimizer=True)``.

    Raises
    ------
    TypeError
        If ``net.metadata`` is not a dict of str -> str.
    ValueError
        If the parameters (or optimizer buffers) hold NaN or infinity, or
        the optimizer's state belongs to another network.
    OSError
        If the file cannot be written; the temporary file is removed.
    """
    _atomic.write(path, to_bytes(net, optimizer))


def to_bytes(net: Network, optimizer: Optimizer | None = None) -> bytes:
    """The bytes of the ``.safetensors`` file that :func:`save` writes."""
    if not isinstance(net, Network):
        raise TypeError(f"expected a bpcore.Network, got {type(net).__name__}")
    tensors, meta = net._file_parts()
    if optimizer is not None:
        meta["optimizer"], buffers = _format.optimizer_parts(
            optimizer, net.n_params, net.dtype)
        tensors.update(buffers)
    return _format.pack(tensors, meta)


# -- loading -------------------------------------------------------------

@overload
def load(path: PathLike, with_optimizer: Literal[False] = ...) -> Network: ...
@overload
def load(path: PathLike, with_optimizer: Literal[True] | Optimizer
         ) -> tuple[Network, Optimizer | None]: ...
@overload
def load(path: PathLike, with_optimizer: bool | Optimizer
         ) -> Network | tuple[Network, Optimizer | None]: ...


def load(path: PathLike, with_optimizer: bool | Optimizer = False
         ) -> Network | tuple[Network, Optimizer | None]:
    """Read a network written by :func:`save` (validated first).

    Parameters
    ----------
    path : str or path-like
    with_optimizer : bool or Optimizer, default=False
        False returns the network alone.  True also rebuilds the optimizer
        saved with it and returns ``(net, optimizer)`` (``optimizer`` is None
        if the file holds none).  An optimizer object of the saved class
        receives the saved state (step and epoch counts, buffers) and keeps
        its own hyperparameters; this is how to resume with a learning-rate
        callable that is not one of ``bpcore.schedules``.

    Returns
    -------
    Network, or (Network, Optimizer or None)

    Raises
    ------
    FileNotFoundError, OSError
        If the file cannot be read.
    FormatError
        If the file is malformed, truncated, inconsistent or not a bpcore
        model file.
    """
    data, plan = _format.read_file(path)
    return _decode(data, with_optimizer, plan)


@overload
def from_bytes(data: bytes, with_optimizer: Literal[False] = ...) -> Network: ...
@overload
def from_bytes(data: bytes, with_optimizer: Literal[True] | Optimizer
         ) -> tuple[Network, Optimizer | None]: ...
@overload
def from_bytes(data: bytes, with_optimizer: bool | Optimizer
         ) -> Network | tuple[Network, Optimizer | None]: ...


def from_bytes(data: bytes, with_optimizer: bool | Optimizer = False
         ) -> Network | tuple[Network, Optimizer | None]:
    """A network from the bytes of a bpcore ``.safetensors`` file.

    Same validation, result and ``with_optimizer`` as :func:`load`.
    """
    return _decode(data, with_optimizer)


def _decode(data, with_optimizer, plan=None):
    """The network (and optimizer) of a file's bytes."""
    plan, tensors = _format.decode(data, plan)
    net = Network._from_file(plan, tensors)
    if with_optimizer is False or with_optimizer is None:
        return net
    return net, _restore_optimizer(plan, tensors, with_optimizer)


def _restore_optimizer(plan, tensors, with_optimizer):
    """The optimizer to return from load(..., with_optimizer=...): the
    file's own (True), or the given one holding the file's state."""
    spec = plan.optimizer
    if isinstance(with_optimizer, Optimizer):
        opt = with_optimizer
        _check_target(spec, opt)
    elif with_optimizer is True:
        if spec is None:
            return None
        opt = spec["object"]
        if opt is None:
            raise ValueError("the file's optimizer used a learning-rate "
                             "callable that cannot be stored; pass an "
                             "optimizer object to restore into: "
                             "load(path, with_optimizer=SGD(lr=...))")
    else:
        raise TypeError(f"with_optimizer must be a bool or a bpcore "
                        f"optimizer, got {with_optimizer!r}")
    opt.load_state_dict({"t": spec["t"], "epoch": spec["epoch"],
                         "buffers": _format.optimizer_buffers(spec, tensors)})
    return opt


def _check_target(spec, opt):
    """An optimizer given to load must be able to take the file's state."""
    if spec is None:
        raise ValueError("the file holds no optimizer state to load "
                         "into the given optimizer")
    if type(opt) is not spec["class"]:
        raise ValueError(f"the file holds {spec['type']} state; got a "
                         f"{type(opt).__name__} to load it into")
    if opt._buffer_count() != len(spec["buffers"]):
        raise ValueError(f"the file's {spec['type']} has "
                         f"{len(spec['buffers'])} state buffers, the "
                         f"given optimizer {opt._buffer_count()} (different "
                         f"momentum setting?)")
