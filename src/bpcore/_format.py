"""The model file format: encoding and checking, knowing nothing of Network.

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
  (``numpy`` ``bit_generator.state``), so that a loaded network shuffles
  exactly as the original would.  Without it the loaded network's
  generator is ``numpy.random.default_rng(0)``;
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
  keys, so a loaded network's ``metadata`` is sorted by key.

Checking
--------
Files are untrusted.  Before safetensors sees the bytes, :class:`Plan`
reads the header length (at most 16 MiB), parses the JSON header itself (no
duplicate keys, no NaN literals) and checks: the format name and version,
the architecture (at most MAX_LAYERS layer sizes, each a positive int, at
most MAX_PARAMS parameters in all: the limits of Network, from
bpcore._limits), the names, activations, loss and dtype, that every
metadata value is a string and no unknown key is present, that exactly the
expected tensors are present with the expected dtype and shape, and that
their byte ranges tile the data section exactly (in range, no overlap, no
gap, nothing after).  Only then, with the file size known to equal what
the architecture needs, is anything allocated.  Parameters or optimizer
buffers that are NaN or infinite are rejected.  Every problem raises
:class:`bpcore.FormatError` (a ``ValueError``) saying what is wrong;
nothing from the file is ever executed.

This module knows the optimizers and schedules (their state is part of the
format) but not Network: ``bpcore.network`` and ``bpcore.io`` build on it.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct

import numpy as np

from bpcore import _limits
from bpcore import _names
from bpcore import schedules as _schedules
from bpcore._errors import FormatError
from bpcore._version import __version__
from bpcore.optim import SGD, Adam, AdamW

FORMAT_NAME = "bpcore"
FORMAT_VERSION = "1"
#: Largest JSON header accepted (and written), in bytes.
MAX_HEADER_BYTES = 16 * 1024 * 1024
#: Largest total number of weights and biases (and largest layer size).
MAX_PARAMS = _limits.MAX_PARAMS
#: Largest number of layer sizes (n_0 .. n_L).
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


# -- writing -------------------------------------------------------------

def network_metadata(layers, activations, loss, dtype, huber_delta, dropout,
                     rng, user):
    """The metadata of a network's file, every value a string.

    ``user`` is the network's ``metadata`` (checked: a dict of str -> str);
    ``rng`` its generator (stored when it is one numpy can restore).
    """
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "bpcore_version": __version__,
        "layers": json.dumps([int(n) for n in layers]),
        "activations": json.dumps(list(activations)),
        "loss": loss,
        "dtype": np.dtype(dtype).name,
    }
    if loss == "huber":
        meta["huber_delta"] = repr(float(huber_delta))
    meta.update(_user_entries(user))
    rng_json = rng_state_json(rng)
    if rng_json is not None:
        meta["rng"] = rng_json
    if any(dropout):
        meta["dropout"] = json.dumps([float(r) for r in dropout])
    return meta


def _user_entries(user):
    """The ``user.<key>`` entries of a network's metadata dict, checked."""
    if not isinstance(user, dict):
        raise TypeError(f"net.metadata must be a dict of str -> str, got "
                        f"{type(user).__name__}")
    out = {}
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
        out[_USER + k] = v
    return out


def network_tensors(weights, biases):
    """The ``weights.K`` and ``biases.K`` tensors of a network's file."""
    tensors = {}
    for k, (W, b) in enumerate(zip(weights, biases)):
        tensors[f"weights.{k}"] = np.ascontiguousarray(W)
        tensors[f"biases.{k}"] = np.ascontiguousarray(b)
    return tensors


def pack(tensors, meta):
    """The bytes of the safetensors file; refused when its header would be
    larger than :func:`Plan` accepts."""
    data = _st_numpy().save(tensors, metadata=meta)
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise ValueError(f"the file header would be {n} bytes, over the "
                         f"{MAX_HEADER_BYTES}-byte limit that load accepts; "
                         f"store less in net.metadata")
    return data


# -- reading -------------------------------------------------------------

def read_file(path):
    """The bytes of a model file, read no further than its checked header
    says the file extends: (data, plan)."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
        head = f.read(8)
        n = header_length(head, total)
        head += f.read(n)
        if len(head) < 8 + n:
            raise FormatError(f"truncated file: the header claims {n} bytes, "
                              f"the file holds {len(head) - 8}")
        plan = Plan(head, total)
        # The size is now known to be what the architecture needs: read it.
        rest = f.read(plan.data_len + 1)
    data = head + rest
    if len(data) != plan.file_len:
        raise FormatError(f"file size changed while reading, or the file is "
                          f"{len(data)} bytes where its header describes "
                          f"{plan.file_len}")
    return data, plan


def decode(data, plan=None):
    """(plan, tensors) of a file's bytes, all checked.

    ``tensors`` maps each name to its array; none holds NaN or infinity.
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    if plan is None:
        plan = Plan(data, len(data))
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
    return plan, arrays


def header_length(head, size):
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


class Plan:
    """Everything the header says, checked; nothing allocated from it yet.

    ``prefix`` holds at least the 8-byte length and the header; ``total`` is
    the size of the whole file (None if unknown, e.g. a pipe).

    Attributes: ``layers``, ``activations``, ``loss``, ``huber_delta``,
    ``dtype``, ``dropout``, ``user`` (the network's metadata), ``rng`` (a
    Generator or None), ``optimizer`` (see :func:`check_optimizer_spec`,
    or None), ``tensors`` (name -> (dtype, shape)), ``n_params``,
    ``data_len`` and ``file_len``.
    """

    def __init__(self, prefix, total):
        n = header_length(prefix, total)
        if len(prefix) < 8 + n:
            raise FormatError(f"truncated file: the header claims {n} bytes, "
                              f"the file holds {len(prefix) - 8}")
        header = parse_header(prefix[8:8 + n])
        meta = header.pop("__metadata__", None)
        if meta is None:
            raise FormatError("not a bpcore model file: the safetensors "
                              "header has no __metadata__")
        self._read_metadata(meta)
        self._read_tensors(header, None if total is None else total - 8 - n)
        self.file_len = 8 + n + self.data_len
        if total is not None and total != self.file_len:
            if total < self.file_len:
                raise FormatError(f"truncated file: the tensors need "
                                  f"{self.data_len} bytes after the header, "
                                  f"the file holds {total - 8 - n}")
            raise FormatError(f"{total - self.file_len} unexpected bytes "
                              f"after the last tensor")

    def _read_metadata(self, meta):
        """The architecture and the optional entries, each checked."""
        _check_metadata_keys(meta)
        self.layers = check_layers(meta["layers"])
        self.activations = _check_activations(meta["activations"],
                                              len(self.layers) - 1)
        self.loss = _check_loss(meta["loss"], self.activations[-1])
        self.huber_delta = _check_huber(meta, self.loss)
        if meta["dtype"] not in _DTYPE_CODES:
            raise FormatError(f"metadata dtype must be 'float32' or "
                              f"'float64', got {meta['dtype'][:100]!r}")
        self.dtype = np.dtype(meta["dtype"])
        self.dtype_code = _DTYPE_CODES[meta["dtype"]]
        self.user = {k[len(_USER):]: v for k, v in meta.items()
                     if k.startswith(_USER)}
        self.rng = rng_from_json(meta["rng"]) if "rng" in meta else None
        self.dropout = 0.0
        if "dropout" in meta:
            self.dropout = _check_dropout(meta["dropout"],
                                          len(self.layers) - 2)
        self.optimizer = None
        if "optimizer" in meta:
            self.optimizer = check_optimizer_spec(meta["optimizer"])

    def _expected_tensors(self):
        """name -> shape of every tensor the metadata calls for."""
        expected = {}
        for k, (a, b) in enumerate(zip(self.layers[:-1], self.layers[1:])):
            expected[f"weights.{k}"] = [a, b]
            expected[f"biases.{k}"] = [b]
        if self.optimizer is not None:
            for j, present in enumerate(self.optimizer["buffers"]):
                if present:
                    expected[f"{_BUFFER}{j}"] = [self.n_params]
        return expected

    def _read_tensors(self, header, avail):
        """Check the tensor entries against the metadata; their byte spans
        must tile the data section (avail bytes, None if unknown)."""
        self.n_params = _limits.n_params(self.layers)
        expected = self._expected_tensors()
        for name in expected:
            if name not in header:
                raise FormatError(f"tensor {name!r} is missing")
        for name in header:
            if name not in expected:
                raise FormatError(f"unexpected tensor {name[:100]!r}")
        spans = [self._check_entry(name, header[name], shape, avail)
                 for name, shape in expected.items()]
        self.data_len = _check_tiling(spans)
        self.tensors = {name: (self.dtype, shape)
                        for name, shape in expected.items()}

    def _check_entry(self, name, info, shape, avail):
        """One tensor's header entry, checked: its (begin, end, name)."""
        if not isinstance(info, dict) or set(info) != {
                "dtype", "shape", "data_offsets"}:
            raise FormatError(f"tensor {name!r}: header entry must have "
                              f"exactly dtype, shape and data_offsets")
        dt = info["dtype"]
        if dt != self.dtype_code:
            raise FormatError(f"tensor {name!r} has dtype {str(dt)[:20]!r}; "
                              f"the metadata dtype {self.dtype.name} needs "
                              f"{self.dtype_code!r}")
        got = info["shape"]
        if not (isinstance(got, list) and all(_is_int(x) for x in got)):
            raise FormatError(f"tensor {name!r}: shape must be a list of "
                              f"integers")
        if got != shape:
            raise FormatError(f"tensor {name!r} has shape {got[:8]}; the "
                              f"architecture {list(self.layers)[:16]} "
                              f"needs {shape}")
        begin, end = _check_offsets(name, info["data_offsets"], avail)
        size = math.prod(shape) * self.dtype.itemsize
        if end - begin != size:
            raise FormatError(f"tensor {name!r}: data_offsets span "
                              f"{end - begin} bytes, its shape {shape} "
                              f"needs {size}")
        return begin, end, name


def _check_offsets(name, off, avail):
    """A tensor's data_offsets as (begin, end), in range."""
    if not (isinstance(off, list) and len(off) == 2
            and all(_is_int(x) for x in off)):
        raise FormatError(f"tensor {name!r}: data_offsets must be two "
                          f"integers [begin, end]")
    begin, end = off
    if begin < 0 or end < begin:
        raise FormatError(f"tensor {name!r}: invalid data_offsets "
                          f"[{begin}, {end}]")
    if avail is not None and end > avail:
        raise FormatError(f"tensor {name!r}: data_offsets [{begin}, {end}] "
                          f"run past the end of the file ({avail} bytes of "
                          f"tensor data)")
    return begin, end


def _check_tiling(spans):
    """The length of the data section that spans (begin, end, name) tile
    with no overlap and no gap."""
    pos, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < pos:
            raise FormatError(f"tensor {name!r} overlaps tensor {prev!r}")
        if begin > pos:
            raise FormatError(f"gap of {begin - pos} bytes before tensor "
                              f"{name!r}")
        pos, prev = end, name
    return pos


# -- metadata entries ----------------------------------------------------

def _check_metadata_keys(meta):
    """String values, the format and version, the required keys, and no
    key that the format does not know."""
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


def check_layers(text):
    """The ``layers`` entry: 2 to MAX_LAYERS sizes within MAX_PARAMS."""
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
    total = _limits.n_params(layers)
    if total > MAX_PARAMS:
        raise FormatError(f"the architecture has {total} parameters, over the "
                          f"limit of {MAX_PARAMS}")
    return tuple(layers)


def _check_activations(text, L):
    """The ``activations`` entry: L known names, softmax only last."""
    acts = _json_field(text, "activations")
    if (not isinstance(acts, list) or len(acts) != L
            or not all(isinstance(a, str) for a in acts)):
        raise FormatError(f"metadata activations must be a JSON list of "
                          f"{L} names, got {text[:200]!r}")
    for i, a in enumerate(acts):
        choices = _names.OUTPUTS if i == L - 1 else _names.ACTIVATIONS
        if a not in choices:
            where = "output" if i == L - 1 else f"hidden layer {i + 1}"
            raise FormatError(f"unknown activation {a[:100]!r} for the "
                              f"{where}")
    return tuple(acts)


def _check_loss(loss, output):
    """The ``loss`` entry: a known loss that the output activation suits."""
    if loss not in _names.LOSSES:
        raise FormatError(f"unknown loss {loss[:100]!r}")
    need = _names.LOSS_OUTPUT.get(loss)
    if need is not None and output != need:
        article = "an" if need[0] in "aeiou" else "a"
        raise FormatError(f"loss {loss} needs {article} {need} output, the "
                          f"file has {output!r}")
    return loss


def _check_huber(meta, loss):
    """huber_delta: required with loss huber (a finite float > 0 in
    decimal), absent otherwise; 1.0 for the other losses."""
    if loss != "huber":
        if "huber_delta" in meta:
            raise FormatError(f"metadata key 'huber_delta' belongs to loss "
                              f"huber, the file's loss is {loss!r}")
        return 1.0
    if "huber_delta" not in meta:
        raise FormatError("metadata key 'huber_delta' is missing "
                          "(required with loss huber)")
    text = meta["huber_delta"]
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


def _check_dropout(text, n_hidden):
    """The ``dropout`` entry: n_hidden rates in [0, 1)."""
    rates = _json_field(text, "dropout")
    if (not isinstance(rates, list) or len(rates) != n_hidden or not all(
            _json_type(r) == "a number" and 0 <= r < 1 for r in rates)):
        raise FormatError(f"metadata dropout must be a JSON list of "
                          f"{n_hidden} rates in [0, 1), got {text[:200]!r}")
    return [float(r) for r in rates]


# -- strict JSON ---------------------------------------------------------

def _is_int(x):
    return type(x) is int


def _json_type(v):
    return {dict: "an object", list: "a list", type(None): "null",
            bool: "a boolean", int: "a number",
            float: "a number"}.get(type(v), type(v).__name__)


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


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


def parse_header(raw):
    """The safetensors header (bytes) as a dict, strictly parsed."""
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


def rng_state_json(rng):
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


def rng_from_json(text):
    """A numpy Generator from the ``rng`` entry, every field checked."""
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

_OPTIMIZERS = {c.__name__: c for c in (SGD, Adam, AdamW)}
_SCHEDULES = {c.__name__: c for c in (
    _schedules.Constant, _schedules.Step, _schedules.Exponential,
    _schedules.Cosine, _schedules.InverseScaling,
    _schedules.ReduceLROnPlateau)}
_SPEC_KEYS = {"type", "lr", "hyper", "t", "epoch", "buffers"}

# ReduceLROnPlateau: its constructor's arguments, and its state (kept in
# the file's "state", best as null while infinite)
_PLATEAU_ARGS = ("lr", "mode", "factor", "patience", "threshold",
                 "threshold_mode", "cooldown", "min_lr", "eps")
_PLATEAU_STATE = ("current_lr", "best", "num_bad_epochs",
                  "cooldown_counter", "last_epoch")
_PLATEAU_COUNTS = ("num_bad_epochs", "cooldown_counter", "last_epoch")


def optimizer_parts(opt, n_params, dtype):
    """(metadata entry, tensors) for an optimizer saved with a network of
    n_params parameters of dtype."""
    if _OPTIMIZERS.get(type(opt).__name__) is not type(opt):
        raise TypeError(f"optimizer must be a bpcore SGD, Adam or AdamW, got "
                        f"{type(opt).__name__}")
    state = opt.state_dict()
    tensors = {}
    for j, buf in enumerate(state["buffers"]):
        if buf is None:
            continue
        if buf.shape != (n_params,) or buf.dtype != dtype:
            raise ValueError(f"optimizer: its state belongs to {buf.shape[0]} "
                             f"{buf.dtype} parameters, not this network's "
                             f"{n_params} {dtype}")
        if not np.isfinite(buf).all():
            raise ValueError("cannot save an optimizer whose state contains "
                             "NaN or infinity")
        tensors[f"{_BUFFER}{j}"] = np.ascontiguousarray(buf)
    hyper = opt._hyperparameters()
    if "betas" in hyper:
        hyper["betas"] = list(hyper["betas"])
    spec = {"type": type(opt).__name__, "lr": _lr_spec(opt.lr),
            "hyper": hyper, "t": int(state["t"]),
            "epoch": int(state["epoch"]),
            "buffers": [b is not None for b in state["buffers"]]}
    return json.dumps(spec), tensors


def _lr_spec(lr):
    """The ``lr`` of the optimizer entry: a number, a schedule of
    bpcore.schedules, or None for any other callable."""
    if not callable(lr):
        return float(lr)
    cls = _SCHEDULES.get(type(lr).__name__)
    if cls is not type(lr):
        return None  # any other callable: the user supplies it when loading
    if cls is _schedules.ReduceLROnPlateau:
        state = {k: getattr(lr, k) for k in _PLATEAU_STATE}
        if not math.isfinite(state["best"]):
            state["best"] = None
        return {"schedule": cls.__name__,
                "args": {k: getattr(lr, k) for k in _PLATEAU_ARGS},
                "state": state}
    args = dict(vars(lr))
    try:
        if vars(cls(**args)) == args:
            return {"schedule": cls.__name__, "args": args}
    except (TypeError, ValueError):
        pass
    return None


def check_optimizer_spec(text):
    """The optimizer entry, checked: its dict, with ``class`` (the
    optimizer's class) and ``object`` (the optimizer rebuilt from it, or
    None when its learning rate was a callable the file cannot hold)."""
    spec = _json_field(text, "optimizer")
    cls = _check_spec_fields(spec)
    lr = _lr_from_spec(spec["lr"])
    try:
        opt = cls(lr=1.0 if lr is None else lr, **spec["hyper"])
    except (TypeError, ValueError) as e:
        raise FormatError(f"metadata optimizer: {e}") from None
    bufs, n = spec["buffers"], opt._buffer_count()
    if (not isinstance(bufs, list) or len(bufs) != n
            or not all(isinstance(b, bool) for b in bufs)):
        raise FormatError(f"metadata optimizer buffers must be a list of "
                          f"{n} booleans for this {spec['type']}")
    spec["object"] = None if lr is None else opt
    spec["class"] = cls
    return spec


def _check_spec_fields(spec):
    """The keys, type, counters and hyperparameter names of an optimizer
    entry: the optimizer's class."""
    if not isinstance(spec, dict) or set(spec) != _SPEC_KEYS:
        raise FormatError(f"metadata optimizer must be an object with the "
                          f"keys {sorted(_SPEC_KEYS)}")
    cls = _OPTIMIZERS.get(spec["type"]) if isinstance(
        spec["type"], str) else None
    if cls is None:
        raise FormatError(f"metadata optimizer: unknown type "
                          f"{str(spec['type'])[:40]!r}")
    for key in ("t", "epoch"):
        if not _is_count(spec[key]):
            raise FormatError(f"metadata optimizer {key} must be an integer "
                              f"in [0, 2**62)")
    names = cls._HYPER
    hyper = spec["hyper"]
    if not isinstance(hyper, dict) or set(hyper) - {"clip_norm"} != set(
            names):
        raise FormatError(f"metadata optimizer hyper must have the keys "
                          f"{sorted(names)} (and optionally clip_norm)")
    return cls


def _is_count(v):
    """An optimizer or schedule counter: an int in [0, 2**62)."""
    return _is_int(v) and 0 <= v < _MAX_COUNT


def _lr_from_spec(lr):
    """The learning rate of an optimizer entry: a number, a schedule
    object, or None (a callable the file could not hold)."""
    if isinstance(lr, dict):
        return _schedule_from_spec(lr)
    if lr is not None and (isinstance(lr, bool)
                           or not isinstance(lr, (int, float))):
        raise FormatError("metadata optimizer lr must be a number, a schedule "
                          "or null")
    return lr


def _schedule_from_spec(lr):
    """A schedule of bpcore.schedules from its entry."""
    plateau = lr.get("schedule") == "ReduceLROnPlateau"
    keys = {"schedule", "args"} | ({"state"} if plateau else set())
    if set(lr) != keys or not isinstance(lr["args"], dict):
        raise FormatError("metadata optimizer lr: a schedule must be "
                          "{'schedule': name, 'args': {...}} (and "
                          "'state' for ReduceLROnPlateau)")
    cls = _SCHEDULES.get(lr["schedule"]) if isinstance(
        lr["schedule"], str) else None
    if cls is None:
        raise FormatError(f"metadata optimizer lr: unknown schedule "
                          f"{str(lr['schedule'])[:40]!r}")
    try:
        sched = cls(**lr["args"])
    except (TypeError, ValueError) as e:
        raise FormatError(f"metadata optimizer lr: {e}") from None
    if plateau:
        _plateau_restore(sched, lr["state"])
    return sched


def _finite_number(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v))


def _plateau_restore(sched, state):
    """Put a checked state into a new ReduceLROnPlateau."""
    if not isinstance(state, dict) or set(state) != set(_PLATEAU_STATE):
        raise FormatError(f"metadata optimizer lr: ReduceLROnPlateau state "
                          f"must have the keys {sorted(_PLATEAU_STATE)}")
    cur, best = state["current_lr"], state["best"]
    if not (_finite_number(cur) and cur >= 0):
        raise FormatError("metadata optimizer lr: ReduceLROnPlateau "
                          "current_lr must be a finite number >= 0")
    if best is not None and not _finite_number(best):
        raise FormatError("metadata optimizer lr: ReduceLROnPlateau best "
                          "must be a finite number or null")
    for key in _PLATEAU_COUNTS:
        if not _is_count(state[key]):
            raise FormatError(f"metadata optimizer lr: ReduceLROnPlateau "
                              f"{key} must be an integer in [0, 2**62)")
    sched.current_lr = float(cur)
    if best is None:
        best = math.inf if sched.mode == "min" else -math.inf
    sched.best = float(best)
    for key in _PLATEAU_COUNTS:
        setattr(sched, key, int(state[key]))


def optimizer_buffers(spec, tensors):
    """The state buffers of a checked optimizer entry (None where the
    optimizer had none), from the file's tensors."""
    return [tensors[f"{_BUFFER}{j}"] if present else None
            for j, present in enumerate(spec["buffers"])]
