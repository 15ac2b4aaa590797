"""Model files: one ``.safetensors`` file per network, written atomically and
read as untrusted input.

File layout (format ``bpcore``, version ``1``)
----------------------------------------------
A standard safetensors file (8-byte little-endian header length, a JSON
header, then the raw little-endian tensor bytes), written with
``safetensors.numpy.save``, so any safetensors reader can load the tensors.

Tensors, all of the network's dtype (``F32`` or ``F64``):

- ``weights.K``: shape ``(n_K, n_{K+1})``, ``Network.weights[K]``;
- ``biases.K``: shape ``(n_{K+1},)``, ``Network.biases[K]``;
- ``optimizer.buffer.J`` (only in files saved with an optimizer): shape
  ``(n_params,)``, the optimizer's J-th state buffer (momentum, or Adam's
  first and second moments) in the layout of ``Network.params``.

Metadata (the header's ``__metadata__``, every value a string):

- ``format``: ``"bpcore"``; ``format_version``: ``"1"``;
- ``bpcore_version``: the version that wrote the file (informative);
- ``layers``: JSON list of ints, e.g. ``"[2, 3, 2, 2]"``;
- ``activations``: JSON list of the L activation names, output last;
- ``loss``: the loss's name; ``dtype``: ``"float32"`` or ``"float64"``;
- ``huber_delta`` (with ``loss`` ``"huber"`` only, and then required): the
  delta as a decimal float (Python's ``repr``, exact round trip);
- ``rng`` (optional): JSON of the network's random generator state
  (``numpy`` ``bit_generator.state``), so that a loaded, unpickled or
  deep-copied network shuffles exactly as the original would.  Without it
  the loaded network's generator is ``numpy.random.default_rng(0)``;
- ``dropout`` (optional, written when a rate is positive): JSON list of
  the L - 1 hidden layers' dropout rates, each in [0, 1);
- ``optimizer`` (optional): JSON ``{"type", "lr", "hyper", "t", "epoch",
  "buffers"}`` (``hyper`` holds ``clip_norm`` when it is set); ``lr`` is a
  number, ``{"schedule": name, "args": {...}}`` for the schedules of
  ``bpcore.schedules`` (``ReduceLROnPlateau`` adds ``"state"``:
  ``current_lr``, ``best`` (null while infinite), ``num_bad_epochs``,
  ``cooldown_counter``, ``last_epoch``), or ``null`` for any other
  callable (then the optimizer object must be supplied when loading);
- ``user.<key>``: one entry per item of ``Network.metadata`` (the user's
  dict of str -> str).  safetensors does not keep the order of metadata
  keys, so ``load`` returns ``metadata`` sorted by key.

Loading
-------
Files are untrusted.  Before safetensors sees the bytes, the loader reads the
header length (at most 16 MiB), parses the JSON header itself (no duplicate
keys, no NaN literals) and checks: the format name and version, the
architecture (at most 256 layer sizes, each a positive int, at most 2**48
parameters in all: the limits of Network, from bpcore._limits),
the names, activations, loss and dtype, that every metadata value is a
string and no unknown key is present, that exactly the expected tensors are
present with the expected dtype and shape, and that their byte ranges tile
the data section exactly (in range, no overlap, no gap, nothing after).
Only then, with the file size known to equal what the architecture needs, is
anything allocated.  Parameters or optimizer buffers that are NaN or
infinite are rejected (``save`` refuses to write them too).  Every problem
raises :class:`bpcore.FormatError` (a ``ValueError``) saying what is wrong;
nothing from the file is ever executed.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import struct
from typing import TYPE_CHECKING, Literal, Union, overload

import numpy as np

from bpcore import _limits
from bpcore import _validation as V
from bpcore._errors import FormatError

if TYPE_CHECKING:  # annotations only: nothing imported at run time
    from bpcore.network import Network
    from bpcore.optim import Optimizer

#: what ``path`` arguments accept
PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["save", "load", "to_bytes", "from_bytes", "FORMAT_NAME",
           "FORMAT_VERSION", "MAX_HEADER_BYTES", "MAX_PARAMS"]

FORMAT_NAME = "bpcore"
FORMAT_VERSION = "1"
#: Largest JSON header accepted (and written), in bytes.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Largest total number of weights and biases accepted (and largest layer
#: size): the same limit as Network's (bpcore._limits).
MAX_PARAMS = _limits.MAX_PARAMS
#: Largest number of layer sizes (n_0 .. n_L) accepted: the same limit as
#: Network's and the C core's (bpcore._limits).
MAX_LAYERS = _limits.MAX_LAYERS
# Bound on optimizer counters (t, epoch): they are int64 in C.
_MAX_COUNT = 2 ** 62

_DTYPES = {"F32": np.dtype(np.float32), "F64": np.dtype(np.float64)}
_DTYPE_CODES = {"float32": "F32", "float64": "F64"}
_REQUIRED = ("format", "format_version", "bpcore_version", "layers",
             "activations", "loss", "dtype")
_OPTIONAL = ("rng", "optimizer", "huber_delta", "dropout")
_USER = "user."
_BUFFER = "optimizer.buffer."


def _st_numpy():
    """safetensors.numpy, imported at first use (keeps ``import bpcore`` light)."""
    import safetensors.numpy
    return safetensors.numpy


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
    data = to_bytes(net, optimizer)
    _atomic_write(path, data)


def to_bytes(net: Network, optimizer: Optimizer | None = None) -> bytes:
    """The bytes of the ``.safetensors`` file that :func:`save` writes."""
    from bpcore.network import Network

    if not isinstance(net, Network):
        raise TypeError(f"expected a bpcore.Network, got {type(net).__name__}")
    with net._guard.read():  # never half an update from another thread
        tensors, meta = _encode(net, optimizer)
        data = _st_numpy().save(tensors, metadata=meta)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"the file header would be {n} bytes, over the "
                         f"{MAX_HEADER_BYTES}-byte limit that load accepts; "
                         f"store less in net.metadata")
    return data


def copy_state(net):
    """``(data, params)`` for pickle and copy.deepcopy: the file's bytes
    with zeros for the parameters, and the parameters beside them as they
    are (NaN and infinity included, which a file may not hold)."""
    with net._guard.read():
        params = net.params.copy()
        tensors, meta = _encode(net, None, zeros=True)
        data = _st_numpy().save(tensors, metadata=meta)
    return data, params


def pickle_state(net):
    """``(meta, spec, params)`` for pickle: the file's metadata, the names,
    shapes and dtypes of its tensors, and the parameters; no tensor bytes
    twice, so a pickle is the parameters plus a small header."""
    with net._guard.read():
        params = net.params.copy()
        tensors, meta = _encode(net, None, zeros=True)
    spec = {k: (tuple(int(n) for n in v.shape), v.dtype.str)
            for k, v in tensors.items()}
    return meta, spec, params


def from_pickle_state(meta, spec, params):
    """The network of :func:`pickle_state`'s output (checked as a file)."""
    tensors = {k: np.zeros(shape, dtype=np.dtype(dt))
               for k, (shape, dt) in spec.items()}
    return from_copy_state(_st_numpy().save(tensors, metadata=meta), params)


def from_copy_state(data, params):
    """The network of :func:`copy_state`'s output."""
    net = from_bytes(data)
    params = np.asarray(params)
    if params.shape != net._params.shape:
        raise ValueError(f"params must have shape {net._params.shape}, got "
                         f"{params.shape}")
    # as they were, NaN and infinity included (the params setter refuses
    # them; a copy keeps what it copies)
    np.copyto(net._params, params, casting="same_kind")
    return net


def _encode(net, optimizer, zeros=False):
    """Tensors and metadata for safetensors.numpy.save (zeros: zeros in
    place of the parameters)."""
    from bpcore.network import Network

    if not isinstance(net, Network):
        raise TypeError(f"expected a bpcore.Network, got {type(net).__name__}")
    if not zeros and not np.isfinite(net.params).all():
        raise ValueError("cannot save a network whose parameters contain NaN "
                         "or infinity (load would reject the file)")
    user = net.metadata
    if not isinstance(user, dict):
        raise TypeError(f"net.metadata must be a dict of str -> str, got "
                        f"{type(user).__name__}")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "bpcore_version": _version(),
        "layers": json.dumps([int(n) for n in net.layers]),
        "activations": json.dumps(list(net.activation)),
        "loss": net.loss,
        "dtype": net.dtype.name,
    }
    if net.loss == "huber":
        meta["huber_delta"] = repr(float(net.huber_delta))
    for k, v in user.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"net.metadata must map str -> str; got "
                            f"{type(k).__name__} {k!r} -> "
                            f"{type(v).__name__}")
        for s in (k, v):
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"net.metadata entry {k!r} is not valid "
                                 f"Unicode (lone surrogate)") from None
        meta[_USER + k] = v
    rng = _rng_state_json(getattr(net, "_rng", None))
    if rng is not None:
        meta["rng"] = rng
    if any(net.dropout):
        meta["dropout"] = json.dumps([float(r) for r in net.dropout])
    tensors = {}
    for k, (W, b) in enumerate(zip(net.weights, net.biases)):
        if zeros:
            W, b = np.zeros_like(W), np.zeros_like(b)
        tensors[f"weights.{k}"] = np.ascontiguousarray(W)
        tensors[f"biases.{k}"] = np.ascontiguousarray(b)
    if optimizer is not None:
        spec, buffers = _optimizer_spec(optimizer, net)
        meta["optimizer"] = json.dumps(spec)
        for j, buf in buffers.items():
            tensors[f"{_BUFFER}{j}"] = buf
    return tensors, meta


def _version():
    import bpcore
    return bpcore.__version__


def _atomic_write(path, data):
    """Write data to path via a temporary file, fsync and os.replace."""
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a "
                                f"directory; give a file name")
    folder, base = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(folder, base)
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
             | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{os.getpid()}."
                                   f"{secrets.token_hex(8)}.tmp")
        try:
            # 0o666 so the process umask applies, as for a plain open().
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 64 random bits
        raise FileExistsError(f"could not create a temporary file in {folder}")
    try:
        _lock(fd)  # held until the file is closed: "a live save owns it"
        try:
            f = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with f:
            _keep_mode(f.fileno(), path)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_folder(folder)


def _lock(fd):
    """An exclusive flock on a temporary file while it is written (POSIX;
    best effort: some file systems have no locks)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):
        pass


def _pid_alive(pid):
    if pid == os.getpid():
        return True  # another thread of ours may be saving
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, OSError):
        return True  # exists (another user's), or cannot tell: keep
    return True


def _unlocked(path):
    """True when no process holds a lock on path (the file stays as is)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _remove_stale_temporaries(folder, base):
    """Remove what saves to the same target killed mid-write (kill -9, power
    loss) left beside it: ``.<base>.<pid>.<16 hex>.tmp`` files whose pid is
    not a live process and that no process holds a lock on.  Best effort:
    any error leaves the file."""
    pattern = re.compile(r"\." + re.escape(base) + r"\.([0-9]{1,10})\."
                         r"[0-9a-f]{16}\.tmp")
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return
    for name in names:
        m = pattern.fullmatch(name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        full = os.path.join(folder, name)
        try:
            if stat.S_ISREG(os.lstat(full).st_mode) and _unlocked(full):
                os.unlink(full)
        except OSError:
            pass


def _keep_mode(fd, path):
    """Give the new file the permission bits of the file it replaces."""
    if not hasattr(os, "fchmod"):
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        except OSError:
            pass


def _fsync_folder(folder):
    """Make the rename durable (POSIX); harmless where unsupported."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        regular = stat.S_ISREG(st.st_mode)
        head = f.read(8)
        n = _header_length(head, st.st_size if regular else None)
        head += f.read(n)
        if len(head) < 8 + n:
            raise FormatError(f"truncated file: the header claims {n} bytes, "
                              f"the file holds {len(head) - 8}")
        total = st.st_size if regular else None
        plan = _Plan(head, total)
        # The size is now known to be what the architecture needs: read it.
        rest = f.read(plan.data_len + 1)
    data = head + rest
    if len(data) != plan.file_len:
        raise FormatError(f"file size changed while reading, or the file is "
                          f"{len(data)} bytes where its header describes "
                          f"{plan.file_len}")
    return _decode(data, with_optimizer)


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
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return _decode(data, with_optimizer)


def _decode(data, with_optimizer):
    from bpcore.network import Network

    plan = _Plan(data, len(data))
    try:
        arrays = _st_numpy().load(data)
    except Exception as e:  # noqa: BLE001 - anything safetensors raises
        raise FormatError(f"safetensors could not read the file: "
                          f"{e}") from None
    for name, (dt, shape) in plan.tensors.items():
        a = arrays.get(name)
        if a is None or a.dtype != dt or a.shape != tuple(shape):
            raise FormatError(f"tensor {name!r} read back differs from its "
                              f"header entry")
        if not np.isfinite(a).all():
            raise FormatError(f"tensor {name!r} contains NaN or infinity")
    if len(arrays) != len(plan.tensors):
        raise FormatError("safetensors returned unexpected tensors")
    acts = plan.activations
    try:
        net = Network(plan.layers, activation=list(acts[:-1]),
                      output=acts[-1], loss=plan.loss, dtype=plan.dtype,
                      seed=0, huber_delta=plan.huber_delta,
                      dropout=plan.dropout)
    except (TypeError, ValueError) as e:
        raise FormatError(f"invalid architecture in the file: {e}") from None
    for k in range(len(plan.layers) - 1):
        net.weights[k][...] = arrays[f"weights.{k}"]
        net.biases[k][...] = arrays[f"biases.{k}"]
    net.metadata = dict(sorted(plan.user.items()))
    # The generator that fit() shuffles with: the saved one, else a fresh
    # default_rng(0) (construction above consumed draws from its own).
    net._rng = plan.rng if plan.rng is not None else np.random.default_rng(0)
    if with_optimizer is False or with_optimizer is None:
        return net
    return net, _restore_optimizer(plan, arrays, with_optimizer)


def _header_length(head, size):
    """The header length from the first 8 bytes, checked against bounds."""
    if len(head) < 8:
        raise FormatError(f"truncated file: {len(head)} bytes, too short for "
                          f"the 8-byte header length of a safetensors file")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"header length {n} exceeds the limit of "
                          f"{MAX_HEADER_BYTES} bytes")
    if n < 2:
        raise FormatError(f"header length {n} is too small for a JSON header")
    if size is not None and 8 + n > size:
        raise FormatError(f"truncated file: the header claims {n} bytes but "
                          f"the file holds only {size - 8} after the length")
    return n


class _Plan:
    """Everything the header says, checked; nothing allocated from it yet.

    ``prefix`` holds at least the 8-byte length and the header; ``total`` is
    the size of the whole file (None if unknown, e.g. a pipe).
    """

    def __init__(self, prefix, total):
        n = _header_length(prefix, total)
        if len(prefix) < 8 + n:
            raise FormatError(f"truncated file: the header claims {n} bytes, "
                              f"the file holds {len(prefix) - 8}")
        header = _parse_header(prefix[8:8 + n])
        meta = header.pop("__metadata__", None)
        if meta is None:
            raise FormatError("not a bpcore model file: the safetensors "
                              "header has no __metadata__")
        self._check_metadata(meta)
        self._check_tensors(header, None if total is None else total - 8 - n)
        self.file_len = 8 + n + self.data_len
        if total is not None and total != self.file_len:
            if total < self.file_len:
                raise FormatError(f"truncated file: the tensors need "
                                  f"{self.data_len} bytes after the header, "
                                  f"the file holds {total - 8 - n}")
            raise FormatError(f"{total - self.file_len} unexpected bytes "
                              f"after the last tensor")

    # metadata ------------------------------------------------------------

    def _check_metadata(self, meta):
        if not isinstance(meta, dict):
            raise FormatError("__metadata__ must be a JSON object")
        for k, v in meta.items():
            if not isinstance(v, str):
                raise FormatError(f"metadata value of {k!r} must be a string, "
                                  f"got {_json_type(v)}")
        fmt = meta.get("format")
        if fmt != FORMAT_NAME:
            raise FormatError(f"not a bpcore model file (metadata format is "
                              f"{fmt!r}, expected {FORMAT_NAME!r})")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise FormatError(f"unsupported format version {version!r}: this "
                              f"bpcore reads version {FORMAT_VERSION}")
        for key in _REQUIRED:
            if key not in meta:
                raise FormatError(f"metadata key {key!r} is missing")
        for key in meta:
            if key not in _REQUIRED and key not in _OPTIONAL and not (
                    key.startswith(_USER)):
                raise FormatError(f"unknown metadata key {key!r}")
        self.layers = _check_layers(meta["layers"])
        L = len(self.layers) - 1
        acts = _json_field(meta["activations"], "activations")
        if (not isinstance(acts, list) or len(acts) != L
                or not all(isinstance(a, str) for a in acts)):
            raise FormatError(f"metadata activations must be a JSON list of "
                              f"{L} names, got {meta['activations'][:200]!r}")
        for i, a in enumerate(acts):
            choices = V.OUTPUTS if i == L - 1 else V.ACTIVATIONS
            if a not in choices:
                where = "output" if i == L - 1 else f"hidden layer {i + 1}"
                raise FormatError(f"unknown activation {a[:100]!r} for the "
                                  f"{where}")
        self.activations = tuple(acts)
        loss = meta["loss"]
        if loss not in V.LOSSES:
            raise FormatError(f"unknown loss {loss[:100]!r}")
        if loss == "cross_entropy" and acts[-1] != "softmax":
            raise FormatError("loss cross_entropy needs a softmax output, "
                              f"the file has {acts[-1]!r}")
        if loss == "binary_cross_entropy" and acts[-1] != "sigmoid":
            raise FormatError("loss binary_cross_entropy needs a sigmoid "
                              f"output, the file has {acts[-1]!r}")
        if loss == "poisson" and acts[-1] != "identity":
            raise FormatError("loss poisson needs an identity output, the "
                              f"file has {acts[-1]!r}")
        self.loss = loss
        self.huber_delta = 1.0
        if loss == "huber":
            if "huber_delta" not in meta:
                raise FormatError("metadata key 'huber_delta' is missing "
                                  "(required with loss huber)")
            self.huber_delta = _huber_delta(meta["huber_delta"])
        elif "huber_delta" in meta:
            raise FormatError(f"metadata key 'huber_delta' belongs to loss "
                              f"huber, the file's loss is {loss!r}")
        if meta["dtype"] not in _DTYPE_CODES:
            raise FormatError(f"metadata dtype must be 'float32' or "
                              f"'float64', got {meta['dtype'][:100]!r}")
        self.dtype = np.dtype(meta["dtype"])
        self.dtype_code = _DTYPE_CODES[meta["dtype"]]
        self.user = {k[len(_USER):]: v for k, v in meta.items()
                     if k.startswith(_USER)}
        self.rng = None
        if "rng" in meta:
            self.rng = _rng_from_json(meta["rng"])
        self.dropout = 0.0
        if "dropout" in meta:
            rates = _json_field(meta["dropout"], "dropout")
            if (not isinstance(rates, list) or len(rates) != L - 1 or not all(
                    _json_type(r) == "a number" and 0 <= r < 1
                    for r in rates)):
                raise FormatError(f"metadata dropout must be a JSON list of "
                                  f"{L - 1} rates in [0, 1), got "
                                  f"{meta['dropout'][:200]!r}")
            self.dropout = [float(r) for r in rates]
        self.optimizer = None
        if "optimizer" in meta:
            self.optimizer = _check_optimizer_spec(meta["optimizer"])

    # tensors ---------------------------------------------------------------

    def _check_tensors(self, header, avail):
        n_params = sum(a * b + b for a, b in zip(self.layers[:-1],
                                                   self.layers[1:]))
        expected = {}
        for k, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            expected[f"weights.{k}"] = [a, b]
            expected[f"biases.{k}"] = [b]
        if self.optimizer is not None:
            for j, present in enumerate(self.optimizer["buffers"]):
                if present:
                    expected[f"{_BUFFER}{j}"] = [n_params]
        for name in expected:
            if name not in header:
                raise FormatError(f"tensor {name!r} is missing")
        for name in header:
            if name not in expected:
                raise FormatError(f"unexpected tensor {name[:100]!r}")
        item = self.dtype.itemsize
        spans = []
        for name, shape in expected.items():
            info = header[name]
            if not isinstance(info, dict) or set(info) != {
                    "dtype", "shape", "data_offsets"}:
                raise FormatError(f"tensor {name!r}: header entry must have "
                                  f"exactly dtype, shape and data_offsets")
            dt = info["dtype"]
            if dt != self.dtype_code:
                raise FormatError(f"tensor {name!r} has dtype "
                                  f"{str(dt)[:20]!r}; the metadata dtype "
                                  f"{self.dtype.name} needs "
                                  f"{self.dtype_code!r}")
            got = info["shape"]
            if not (isinstance(got, list) and all(_is_int(x) for x in got)):
                raise FormatError(f"tensor {name!r}: shape must be a list of "
                                  f"integers")
            if got != shape:
                raise FormatError(f"tensor {name!r} has shape {got[:8]}; the "
                                  f"architecture {list(self.layers)[:16]} "
                                  f"needs {shape}")
            off = info["data_offsets"]
            if not (isinstance(off, list) and len(off) == 2
                    and all(_is_int(x) for x in off)):
                raise FormatError(f"tensor {name!r}: data_offsets must be two "
                                  f"integers [begin, end]")
            begin, end = off
            if begin < 0 or end < begin:
                raise FormatError(f"tensor {name!r}: invalid data_offsets "
                                  f"[{begin}, {end}]")
            if avail is not None and end > avail:
                raise FormatError(f"tensor {name!r}: data_offsets [{begin}, "
                                  f"{end}] run past the end of the file "
                                  f"({avail} bytes of tensor data)")
            size = math.prod(shape) * item
            if end - begin != size:
                raise FormatError(f"tensor {name!r}: data_offsets span "
                                  f"{end - begin} bytes, its shape {shape} "
                                  f"needs {size}")
            spans.append((begin, end, name))
        spans.sort()
        pos, prev = 0, None
        for begin, end, name in spans:
            if begin < pos:
                raise FormatError(f"tensor {name!r} overlaps tensor {prev!r}")
            if begin > pos:
                raise FormatError(f"gap of {begin - pos} bytes before tensor "
                                  f"{name!r}")
            pos, prev = end, name
        self.data_len = pos
        self.tensors = {name: (self.dtype, shape)
                        for name, shape in expected.items()}
        self.n_params = n_params


def _is_int(x):
    return type(x) is int


def _json_type(v):
    return {dict: "an object", list: "a list", type(None): "null",
            bool: "a boolean", int: "a number",
            float: "a number"}.get(type(v), type(v).__name__)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _huber_delta(text):
    """The huber_delta metadata value: a finite float > 0 in decimal."""
    bad = FormatError(f"metadata huber_delta must be a finite number > 0, "
                      f"got {text[:40]!r}")
    if len(text) > 40 or not text.strip() or text.strip() != text:
        raise bad
    try:
        v = float(text)
    except ValueError:
        raise bad from None
    if not (math.isfinite(v) and v > 0):
        raise bad
    return v


def _finite_float(s):
    x = float(s)
    if not math.isfinite(x):
        raise ValueError(f"number {s[:40]} is out of range")
    return x


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:100]!r}")
        out[k] = v
    return out


def _loads(text):
    """json.loads that rejects duplicate keys, NaN and infinities."""
    return json.loads(text, object_pairs_hook=_no_duplicates,
                      parse_constant=_reject_constant,
                      parse_float=_finite_float)


def _parse_header(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"header is not valid UTF-8: {e}") from None
    if not text.startswith("{"):
        raise FormatError("header is not a JSON object (it must start "
                          "with '{')")
    try:
        header = _loads(text)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"header is not valid JSON: "
                          f"{str(e)[:200]}") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    return header


def _json_field(text, key):
    try:
        return _loads(text)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"metadata {key!r} is not valid JSON: "
                          f"{str(e)[:200]}") from None


def _check_layers(text):
    layers = _json_field(text, "layers")
    if not isinstance(layers, list) or not all(_is_int(n) for n in layers):
        raise FormatError(f"metadata layers must be a JSON list of integers, "
                          f"got {text[:200]!r}")
    if not 2 <= len(layers) <= MAX_LAYERS:
        raise FormatError(f"metadata layers must list 2 to {MAX_LAYERS} "
                          f"sizes, got {len(layers)}")
    for i, n in enumerate(layers):
        if not 1 <= n <= MAX_PARAMS:
            raise FormatError(f"layer size layers[{i}] = {n} is out of range "
                              f"[1, {MAX_PARAMS}]")
    total = sum(a * b + b for a, b in zip(layers[:-1], layers[1:]))
    if total > MAX_PARAMS:
        raise FormatError(f"the architecture has {total} parameters, over the "
                          f"limit of {MAX_PARAMS}")
    return tuple(layers)


# -- random generator state ----------------------------------------------

_U32, _U64, _U128 = 2 ** 32, 2 ** 64, 2 ** 128


def _uint(bound):
    return lambda v: _is_int(v) and 0 <= v < bound


def _uints(bound, length):
    return lambda v: (isinstance(v, list) and len(v) == length
                      and all(_is_int(x) and 0 <= x < bound for x in v))


def _pcg_schema():
    return {"bit_generator": None,
            "state": {"state": _uint(_U128), "inc": _uint(_U128)},
            "has_uint32": _uint(2), "uinteger": _uint(_U32)}


# Every field of every supported generator, with its valid range: numpy's
# state setters do not all check ranges (a bad MT19937 ``pos`` or Philox
# ``buffer_pos`` would index out of bounds), so nothing unchecked reaches
# them.
_RNG_SCHEMAS = {
    "PCG64": _pcg_schema(),
    "PCG64DXSM": _pcg_schema(),
    "SFC64": {"bit_generator": None, "state": {"state": _uints(_U64, 4)},
              "has_uint32": _uint(2), "uinteger": _uint(_U32)},
    "MT19937": {"bit_generator": None,
                "state": {"key": _uints(_U32, 624),
                          "pos": lambda v: _is_int(v) and 0 <= v <= 624}},
    "Philox": {"bit_generator": None,
               "state": {"counter": _uints(_U64, 4), "key": _uints(_U64, 2)},
               "buffer": _uints(_U64, 4),
               "buffer_pos": lambda v: _is_int(v) and 0 <= v <= 4,
               "has_uint32": _uint(2), "uinteger": _uint(_U32)},
}


def _plain(obj):
    """numpy state (arrays, numpy ints) as plain JSON-able Python."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _rng_state_json(rng):
    """The generator's state as JSON, or None if not a supported one."""
    if not isinstance(rng, np.random.Generator):
        return None
    bg = rng.bit_generator
    name = type(bg).__name__
    if name not in _RNG_SCHEMAS or type(bg) is not getattr(np.random, name):
        return None
    state = _plain(bg.state)
    try:
        _check_schema(state, _RNG_SCHEMAS[name], "rng")
    except FormatError:  # pragma: no cover - numpy changed its state layout
        return None
    return json.dumps(state)


def _check_schema(value, schema, where):
    if not isinstance(value, dict) or set(value) != set(schema):
        raise FormatError(f"metadata {where}: expected the keys "
                          f"{sorted(schema)}")
    for key, check in schema.items():
        if check is None:
            continue
        if isinstance(check, dict):
            _check_schema(value[key], check, f"{where}.{key}")
        elif not check(value[key]):
            raise FormatError(f"metadata {where}.{key} is out of range or "
                              f"of the wrong type")


def _rng_from_json(text):
    state = _json_field(text, "rng")
    name = state.get("bit_generator") if isinstance(state, dict) else None
    if not isinstance(name, str) or name not in _RNG_SCHEMAS:
        raise FormatError(f"metadata rng: unsupported bit generator "
                          f"{str(name)[:40]!r}; expected one of "
                          f"{', '.join(_RNG_SCHEMAS)}")
    _check_schema(state, _RNG_SCHEMAS[name], "rng")
    bg = getattr(np.random, name)()
    try:
        bg.state = state
    except Exception as e:  # noqa: BLE001 - numpy's setters vary
        raise FormatError(f"metadata rng: invalid state: {e}") from None
    return np.random.Generator(bg)


# -- optimizer state -----------------------------------------------------

def _optimizer_classes():
    from bpcore.optim import SGD, Adam, AdamW
    return {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def _schedule_classes():
    from bpcore import schedules as S
    return {c.__name__: c for c in (S.Constant, S.Step, S.Exponential,
                                    S.Cosine, S.InverseScaling,
                                    S.ReduceLROnPlateau)}


# ReduceLROnPlateau: its constructor's arguments, and its state (kept in
# the file's "state", best as null while infinite)
_PLATEAU_ARGS = ("lr", "mode", "factor", "patience", "threshold",
                 "threshold_mode", "cooldown", "min_lr", "eps")
_PLATEAU_STATE = ("current_lr", "best", "num_bad_epochs",
                  "cooldown_counter", "last_epoch")


def _plateau_spec(lr):
    state = {k: getattr(lr, k) for k in _PLATEAU_STATE}
    if not math.isfinite(state["best"]):
        state["best"] = None
    return {"schedule": "ReduceLROnPlateau",
            "args": {k: getattr(lr, k) for k in _PLATEAU_ARGS},
            "state": state}


def _plateau_restore(sched, state):
    """Put a checked state into a new ReduceLROnPlateau."""
    if not isinstance(state, dict) or set(state) != set(_PLATEAU_STATE):
        raise FormatError(f"metadata optimizer lr: ReduceLROnPlateau state "
                          f"must have the keys {sorted(_PLATEAU_STATE)}")
    cur = state["current_lr"]
    if not (isinstance(cur, (int, float)) and not isinstance(cur, bool)
            and math.isfinite(cur) and cur >= 0):
        raise FormatError("metadata optimizer lr: ReduceLROnPlateau "
                          "current_lr must be a finite number >= 0")
    best = state["best"]
    if best is not None and not (isinstance(best, (int, float))
                                 and not isinstance(best, bool)
                                 and math.isfinite(best)):
        raise FormatError("metadata optimizer lr: ReduceLROnPlateau best "
                          "must be a finite number or null")
    for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
        if not (_is_int(state[key]) and 0 <= state[key] < _MAX_COUNT):
            raise FormatError(f"metadata optimizer lr: ReduceLROnPlateau "
                              f"{key} must be an integer in [0, 2**62)")
    sched.current_lr = float(cur)
    if best is None:
        best = math.inf if sched.mode == "min" else -math.inf
    sched.best = float(best)
    for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
        setattr(sched, key, int(state[key]))


def _hyper_names(cls):
    from bpcore.optim import SGD
    if issubclass(cls, SGD):
        return ("momentum", "nesterov", "weight_decay")
    return ("betas", "eps", "weight_decay")


def _optimizer_spec(opt, net):
    """(JSON-able description, {index: buffer}) of an optimizer."""
    classes = _optimizer_classes()
    name = type(opt).__name__
    if classes.get(name) is not type(opt):
        raise TypeError(f"optimizer must be a bpcore SGD, Adam or AdamW, got "
                        f"{type(opt).__name__}")
    state = opt.state_dict()
    buffers = {}
    for j, buf in enumerate(state["buffers"]):
        if buf is None:
            continue
        if buf.shape != (net.n_params,) or buf.dtype != net.dtype:
            raise ValueError(f"optimizer: its state belongs to {buf.shape[0]} "
                             f"{buf.dtype} parameters, not this network's "
                             f"{net.n_params} {net.dtype}")
        if not np.isfinite(buf).all():
            raise ValueError("cannot save an optimizer whose state contains "
                             "NaN or infinity")
        buffers[j] = np.ascontiguousarray(buf)
    hyper = {k: getattr(opt, k) for k in _hyper_names(type(opt))}
    if getattr(opt, "clip_norm", None) is not None:
        hyper["clip_norm"] = float(opt.clip_norm)
    if "betas" in hyper:
        hyper["betas"] = list(hyper["betas"])
    return ({"type": name, "lr": _lr_spec(opt.lr), "hyper": hyper,
             "t": int(state["t"]), "epoch": int(state["epoch"]),
             "buffers": [b is not None for b in state["buffers"]]},
            buffers)


def _lr_spec(lr):
    if not callable(lr):
        return float(lr)
    schedules = _schedule_classes()
    cls = schedules.get(type(lr).__name__)
    if cls is type(lr) and cls.__name__ == "ReduceLROnPlateau":
        return _plateau_spec(lr)
    if cls is type(lr):
        args = dict(vars(lr))
        try:
            if vars(cls(**args)) == args:
                return {"schedule": cls.__name__, "args": args}
        except (TypeError, ValueError):
            pass
    return None  # any other callable: the user supplies it when loading


def _check_optimizer_spec(text):
    """Validate the optimizer JSON; build the optimizer if its lr is known."""
    spec = _json_field(text, "optimizer")
    keys = {"type", "lr", "hyper", "t", "epoch", "buffers"}
    if not isinstance(spec, dict) or set(spec) != keys:
        raise FormatError(f"metadata optimizer must be an object with the "
                          f"keys {sorted(keys)}")
    cls = _optimizer_classes().get(spec["type"]) if isinstance(
        spec["type"], str) else None
    if cls is None:
        raise FormatError(f"metadata optimizer: unknown type "
                          f"{str(spec['type'])[:40]!r}")
    for key in ("t", "epoch"):
        v = spec[key]
        if not (_is_int(v) and 0 <= v < _MAX_COUNT):
            raise FormatError(f"metadata optimizer {key} must be an integer "
                              f"in [0, 2**62)")
    hyper = spec["hyper"]
    names = _hyper_names(cls)
    if not isinstance(hyper, dict) or set(hyper) - {"clip_norm"} != set(
            names):
        raise FormatError(f"metadata optimizer hyper must have the keys "
                          f"{sorted(names)} (and optionally clip_norm)")
    lr = spec["lr"]
    if isinstance(lr, dict):
        plateau = lr.get("schedule") == "ReduceLROnPlateau"
        keys = {"schedule", "args"} | ({"state"} if plateau else set())
        if set(lr) != keys or not isinstance(lr["args"], dict):
            raise FormatError("metadata optimizer lr: a schedule must be "
                              "{'schedule': name, 'args': {...}} (and "
                              "'state' for ReduceLROnPlateau)")
        sched = _schedule_classes().get(lr["schedule"]) if isinstance(
            lr["schedule"], str) else None
        if sched is None:
            raise FormatError(f"metadata optimizer lr: unknown schedule "
                              f"{str(lr['schedule'])[:40]!r}")
        state = lr.get("state")
        try:
            lr = sched(**lr["args"])
        except (TypeError, ValueError) as e:
            raise FormatError(f"metadata optimizer lr: {e}") from None
        if plateau:
            _plateau_restore(lr, state)
    elif lr is not None and (isinstance(lr, bool)
                             or not isinstance(lr, (int, float))):
        raise FormatError("metadata optimizer lr must be a number, a schedule "
                          "or null")
    try:
        opt = cls(lr=1.0 if lr is None else lr, **hyper)
    except (TypeError, ValueError) as e:
        raise FormatError(f"metadata optimizer: {e}") from None
    bufs = spec["buffers"]
    if (not isinstance(bufs, list) or len(bufs) != opt._n_states
            or not all(isinstance(b, bool) for b in bufs)):
        raise FormatError(f"metadata optimizer buffers must be a list of "
                          f"{opt._n_states} booleans for this {spec['type']}")
    spec["object"] = None if lr is None else opt
    spec["class"] = cls
    return spec


def _restore_optimizer(plan, arrays, with_optimizer):
    """The optimizer to return from load(..., with_optimizer=...)."""
    from bpcore.optim import Optimizer

    spec = plan.optimizer
    if isinstance(with_optimizer, Optimizer):
        opt = with_optimizer
        if spec is None:
            raise ValueError("the file holds no optimizer state to load "
                             "into the given optimizer")
        if type(opt) is not spec["class"]:
            raise ValueError(f"the file holds {spec['type']} state; got a "
                             f"{type(opt).__name__} to load it into")
        if opt._n_states != len(spec["buffers"]):
            raise ValueError(f"the file's {spec['type']} has "
                             f"{len(spec['buffers'])} state buffers, the "
                             f"given optimizer {opt._n_states} (different "
                             f"momentum setting?)")
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
    buffers = [arrays[f"{_BUFFER}{j}"] if present else None
               for j, present in enumerate(spec["buffers"])]
    opt.load_state_dict({"t": spec["t"], "epoch": spec["epoch"],
                         "buffers": buffers})
    return opt
