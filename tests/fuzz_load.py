"""Property-based fuzzing of the bpcore model loader (run as a subprocess).

test_io.py runs this script in a child process so that a crash in the loader
(a segfault in numpy, safetensors or bpcore's core) shows up as a failed
exit code instead of killing pytest.  Each example starts from a valid model
file, damages it (random byte flips, truncation, inserted bytes, a new
header length, or an edit of the JSON header: a tensor's dtype, shape or
offsets, a metadata value, an added or deleted key), then loads it from
bytes or from a file.  The property: loading raises bpcore.FormatError or
returns a valid network (it predicts, and saves and reloads bit for bit).
Anything else, including another exception type, fails.

usage: python fuzz_load.py [--examples N] [--seed S]
Exit status 0 when every example held; the falsifying example is printed
otherwise.
"""
import argparse
import json
import os
import struct
import sys
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import bpcore
from bpcore import io


def _base_files():
    """Small valid files covering every optional part of the format."""
    X = np.linspace(-1, 1, 24).reshape(6, 4)
    out = []
    net = bpcore.Network([4, 3, 2], dtype="float32", seed=1)
    net.metadata = {"classes": '["a", "b"]', "note": "x"}
    out.append(io.to_bytes(net))
    net = bpcore.Network([4, 3], activation=[], output="softmax",
                         loss="cross_entropy", dtype="float64", seed=2)
    out.append(io.to_bytes(net))
    net = bpcore.Network([4, 5, 3, 1], activation=["tanh", "relu"],
                         loss="binary_cross_entropy", dtype="float64", seed=3)
    opt = bpcore.Adam(lr=bpcore.schedules.Step(0.01, 2))
    net.fit(X, np.array([[0.], [1.], [1.], [0.], [1.], [0.]]), epochs=1,
            batch_size=3, optimizer=opt)
    out.append(io.to_bytes(net, optimizer=opt))
    net = bpcore.Network([4, 2, 2], dtype="float32",
                         seed=np.random.Generator(np.random.MT19937(4)))
    opt = bpcore.SGD(lr=0.1, momentum=0.9)
    net.step(X, np.zeros((6, 2)), opt)
    out.append(io.to_bytes(net, optimizer=opt))
    return out


BASES = _base_files()


def _split(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, data, pad):
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


_SPECIAL_INTS = st.sampled_from([0, 1, 2, 3, 4, 5, 8, 12, 16, 24, -1, -8,
                                 2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, 2 ** 64,
                                 10 ** 30])
_LEAVES = (st.none() | st.booleans() | _SPECIAL_INTS
           | st.integers(-2 ** 70, 2 ** 70)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=12)
           | st.sampled_from(["F32", "F64", "F16", "I64", "BOOL", "sigmoid",
                              "softmax", "mse", "float32", "float64",
                              "bpcore", "1", "2", "PCG64", "MT19937", "Adam",
                              "Step"]))
JSON_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


@st.composite
def header_edit(draw, blob):
    """Change, delete or add one entry of the JSON header (or of a JSON
    value inside the metadata); re-serialize with a correct or stale
    length."""
    header, data = _split(blob)
    meta = header["__metadata__"]
    target = draw(st.sampled_from(["tensor", "metadata", "metadata_json",
                                   "top"]))
    if target == "tensor":
        names = sorted(k for k in header if k != "__metadata__")
        name = draw(st.sampled_from(names))
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets",
                                      "entry", "delete", "rename", "extra"]))
        if field == "delete":
            del header[name]
        elif field == "rename":
            header[draw(st.text(max_size=12))] = header.pop(name)
        elif field == "entry":
            header[name] = draw(JSON_VALUES)
        elif field == "extra":
            header[name]["extra"] = draw(JSON_VALUES)
        elif field in ("shape", "data_offsets") and draw(st.booleans()):
            # Nudge one number: the near misses are the interesting ones.
            vals = header[name][field]
            if vals:
                i = draw(st.integers(0, len(vals) - 1))
                vals[i] += draw(st.integers(-16, 16))
        else:
            header[name][field] = draw(JSON_VALUES)
    elif target == "metadata":
        key = draw(st.sampled_from(sorted(meta) + ["user.x", "extra",
                                                   "optimizer", "rng"]))
        if draw(st.booleans()) and key in meta:
            del meta[key]
        else:
            meta[key] = draw(JSON_VALUES | st.text(max_size=20))
    elif target == "metadata_json":
        keys = sorted(k for k in meta if k in ("layers", "activations",
                                               "rng", "optimizer"))
        key = draw(st.sampled_from(keys))
        value = json.loads(meta[key])
        value = _edit_json(draw, value)
        meta[key] = json.dumps(value)
    else:
        if draw(st.booleans()):
            header["__metadata__"] = draw(JSON_VALUES)
        else:
            header[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    out = _join(header, data, pad=draw(st.booleans()))
    if draw(st.integers(0, 9)) == 0:  # a stale or wrong length prefix
        out = blob[:8] + out[8:]
    return out


def _edit_json(draw, value):
    """Replace one node somewhere inside a JSON value."""
    if isinstance(value, dict) and value and draw(st.integers(0, 3)):
        k = draw(st.sampled_from(sorted(value)))
        value[k] = _edit_json(draw, value[k])
        return value
    if isinstance(value, list) and value and draw(st.integers(0, 3)):
        i = draw(st.integers(0, len(value) - 1))
        value[i] = _edit_json(draw, value[i])
        return value
    if isinstance(value, int) and not isinstance(value, bool) and draw(
            st.booleans()):
        return value + draw(st.integers(-3, 3))
    return draw(JSON_VALUES)


@st.composite
def damaged(draw):
    blob = draw(st.sampled_from(BASES))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "length",
                                 "header", "header+flip"]))
    if kind in ("header", "header+flip"):
        blob = draw(header_edit(blob))
    if kind in ("flip", "header+flip"):
        b = bytearray(blob)
        for _ in range(draw(st.integers(1, 8))):
            if not b:
                break
            i = draw(st.integers(0, len(b) - 1))
            b[i] = draw(st.integers(0, 255))
        blob = bytes(b)
    elif kind == "truncate":
        blob = blob[:draw(st.integers(0, len(blob) - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, len(blob)))
        blob = blob[:i] + draw(st.binary(min_size=1, max_size=16)) + blob[i:]
    elif kind == "length":
        n = draw(_SPECIAL_INTS.filter(lambda v: 0 <= v < 2 ** 64)
                 | st.integers(0, 2 ** 64 - 1)
                 | st.integers(0, len(blob) + 16))
        blob = struct.pack("<Q", n) + blob[8:]
    return blob


def check_one(blob, via_file, folder):
    """Load blob; only FormatError or a valid network may come out."""
    try:
        if via_file:
            # A new name each time: rewriting one file in place is slow on
            # ext4 (a truncate forces a flush).
            fd, path = tempfile.mkstemp(suffix=".safetensors", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                net = io.load(path)
            finally:
                os.unlink(path)
        else:
            net = io.from_bytes(blob)
    except bpcore.FormatError as e:
        assert str(e), "FormatError without a message"
        return "rejected"
    assert isinstance(net, bpcore.Network)
    X = np.ones((2, net.layers[0]), dtype=net.dtype)
    with np.errstate(all="ignore"):
        Y = net.predict(X)
    assert Y.shape == (2, net.layers[-1])
    again = io.from_bytes(io.to_bytes(net))
    assert np.array_equal(again.params.view(np.uint8),
                          net.params.view(np.uint8))
    assert again.metadata == net.metadata
    try:
        io.from_bytes(blob, with_optimizer=True)
    except ValueError as e:  # a valid file whose lr callable was not stored
        assert isinstance(e, bpcore.FormatError) or "callable" in str(e), e
    return "loaded"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=None,
                        help="fixed seed (default: derandomized)")
    args = parser.parse_args(argv)
    counts = {"rejected": 0, "loaded": 0}
    shm = "/dev/shm"
    where = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=where) as folder:
        options = dict(max_examples=args.examples, deadline=None,
                       database=None, derandomize=args.seed is None,
                       suppress_health_check=list(HealthCheck),
                       print_blob=True)

        @settings(**options)
        @given(blob=damaged(), via_file=st.booleans())
        def prop(blob, via_file):
            counts[check_one(blob, via_file, folder)] += 1

        if args.seed is not None:
            prop = seed(args.seed)(prop)
        prop()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
