"""Model files (bpcore.io): round trips, interop, optimizer state, atomic
saves, and a loader that treats files as hostile.

The malformed-file corpus edits a valid file one defect at a time; the fuzz
test runs tests/fuzz_load.py (hypothesis) in a subprocess so that a crash is
a failure rather than the end of the test run; the atomicity test SIGKILLs a
process in the middle of saving a large network.
"""
import copy
import json
import os
import pickle
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy as st_numpy
from safetensors import safe_open

import bpcore
from bpcore import _atomic, io
from bpcore.schedules import Cosine, Step

HERE = Path(__file__).resolve().parent

ARCHS = {
    "2layers-identity-mse": dict(layers=[3, 1], activation=[],
                                 output="identity", loss="mse"),
    "tutorial-2-3-2-2": dict(layers=[2, 3, 2, 2], activation="sigmoid",
                             output="sigmoid", loss="mse"),
    "relu-softmax-ce": dict(layers=[4, 8, 3], activation="relu",
                            output="softmax", loss="cross_entropy"),
    "mixed-bce": dict(layers=[5, 6, 4, 2], activation=["tanh", "gelu"],
                      output="sigmoid", loss="binary_cross_entropy"),
    "2layers-softmax-ce": dict(layers=[6, 4], activation=[],
                               output="softmax", loss="cross_entropy"),
    "elu-softplus": dict(layers=[3, 7, 5, 1], activation=["elu", "softplus"],
                         output="identity", loss="mse"),
}


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def _build(arch, dtype, seed=0):
    net = bpcore.Network(dtype=dtype, seed=seed, **ARCHS[arch])
    rng = np.random.default_rng(seed + 100)
    # Biases start at zero: give them values so they are really checked.
    for b in net.biases:
        b[...] = rng.normal(size=b.shape)
    net.metadata = {"classes": '["cat", "dog"]', "scaling": "0.5 1.5",
                    "ünïcode ✓": "välue", "": "empty key", "dots.in.key": ""}
    return net


def _through(net, channel, tmp_path):
    if channel == "file":
        path = tmp_path / "model.safetensors"
        net.save(path)
        return bpcore.load(path)
    if channel == "str-path":
        path = str(tmp_path / "model.safetensors")
        net.save(path)
        return bpcore.load(path)
    if channel == "bytes":
        return bpcore.Network.from_bytes(net.to_bytes())
    if channel == "pickle":
        return pickle.loads(pickle.dumps(net,
                                         protocol=pickle.HIGHEST_PROTOCOL))
    if channel == "deepcopy":
        return copy.deepcopy(net)
    raise AssertionError(channel)


def _assert_same(a, b):
    assert type(b) is bpcore.Network
    assert b.layers == a.layers
    assert b.activation == a.activation
    assert b.loss == a.loss
    assert b.dtype == a.dtype
    assert np.array_equal(_bits(b.params), _bits(a.params))
    for k in range(len(a.layers) - 1):
        assert np.array_equal(_bits(b.weights[k]), _bits(a.weights[k]))
        assert np.array_equal(_bits(b.biases[k]), _bits(a.biases[k]))
    assert b.metadata == a.metadata
    X = np.random.default_rng(1).normal(size=(9, a.layers[0]))
    assert np.array_equal(_bits(b.predict(X)), _bits(a.predict(X)))


# -- round trips -----------------------------------------------------------

@pytest.mark.parametrize("channel", ["file", "str-path", "bytes", "pickle",
                                     "deepcopy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_round_trip_is_bitwise(arch, dtype, channel, tmp_path):
    net = _build(arch, dtype)
    _assert_same(net, _through(net, channel, tmp_path))


def test_round_trip_after_training_and_of_copies(tmp_path):
    X = np.random.default_rng(0).normal(size=(40, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    net = bpcore.Network([4, 8, 3], activation="tanh", output="softmax",
                         loss="cross_entropy", dtype="float64", seed=3)
    net.fit(X, y, epochs=3, batch_size=8, optimizer=bpcore.Adam(lr=0.01))
    twice = _through(_through(net, "file", tmp_path), "pickle", tmp_path)
    _assert_same(net, twice)
    # A copy is independent of the original.
    clone = copy.deepcopy(net)
    clone.params[...] = 0
    clone.metadata["new"] = "x"
    assert np.any(net.params != 0) and "new" not in net.metadata


@pytest.mark.parametrize("channel", ["pickle", "deepcopy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_copies_keep_nonfinite_parameters(dtype, channel, tmp_path):
    """pickle and deepcopy hold any network, NaN and infinity included
    (a file may not: save refuses them)."""
    net = bpcore.Network([3, 4, 2], dtype=dtype, seed=0)
    net.metadata["note"] = "diverged"
    net.params[[0, 5, -1]] = [np.nan, np.inf, -np.inf]
    copied = _through(net, channel, tmp_path)
    assert copied.params.dtype == net.params.dtype
    assert np.array_equal(_bits(copied.params), _bits(net.params))
    assert copied.metadata == net.metadata and copied.layers == net.layers
    with pytest.raises(ValueError, match="NaN or infinity"):
        net.save(tmp_path / "n.safetensors")


def test_copies_keep_the_shuffling_generator():
    """pickle/deepcopy carry the generator state: fit(shuffle=True) on the
    copy and on the original give the same bits."""
    X = np.random.default_rng(0).normal(size=(30, 3))
    Y = np.random.default_rng(1).random((30, 2))
    for seed in (7, np.random.Generator(np.random.MT19937(7)),
                 np.random.Generator(np.random.Philox(7)),
                 np.random.Generator(np.random.SFC64(7))):
        net = bpcore.Network([3, 5, 2], seed=seed, dtype="float64")
        net.fit(X, Y, epochs=1, batch_size=4)  # advance the generator
        clones = [copy.deepcopy(net), pickle.loads(pickle.dumps(net)),
                  bpcore.Network.from_bytes(net.to_bytes())]
        net.fit(X, Y, epochs=2, batch_size=4, shuffle=True)
        for c in clones:
            c.fit(X, Y, epochs=2, batch_size=4, shuffle=True)
            assert np.array_equal(_bits(c.params), _bits(net.params))


def test_file_without_rng_state_loads_with_seed_zero():
    net = _build("tutorial-2-3-2-2", "float32")
    header, data = _split(net.to_bytes())
    del header["__metadata__"]["rng"]
    a = io.from_bytes(_join(header, data))
    b = io.from_bytes(_join(header, data))
    _assert_same(net, a)
    assert a._rng.random() == b._rng.random() == np.random.default_rng(
        0).random()


def test_file_layout_and_interop_with_safetensors(tmp_path):
    net = _build("mixed-bce", "float64")
    path = tmp_path / "m.safetensors"
    net.save(path)
    arrays = st_numpy.load_file(str(path))
    assert sorted(arrays) == ["biases.0", "biases.1", "biases.2",
                              "weights.0", "weights.1", "weights.2"]
    for k in range(3):
        assert arrays[f"weights.{k}"].dtype == np.float64
        assert np.array_equal(arrays[f"weights.{k}"], net.weights[k])
        assert np.array_equal(arrays[f"biases.{k}"], net.biases[k])
    assert st_numpy.load(net.to_bytes()).keys() == arrays.keys()
    with safe_open(str(path), framework="np") as f:
        meta = f.metadata()
    assert meta["format"] == "bpcore" and meta["format_version"] == "1"
    assert meta["bpcore_version"] == bpcore.__version__
    assert json.loads(meta["layers"]) == [5, 6, 4, 2]
    assert json.loads(meta["activations"]) == ["tanh", "gelu", "sigmoid"]
    assert meta["loss"] == "binary_cross_entropy"
    assert meta["dtype"] == "float64"
    assert meta["user.classes"] == '["cat", "dog"]'
    assert meta["user."] == "empty key"
    assert json.loads(meta["rng"])["bit_generator"] == "PCG64"
    assert {k for k in meta if not k.startswith("user.")} == {
        "format", "format_version", "bpcore_version", "layers",
        "activations", "loss", "dtype", "rng"}


def test_interop_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    net = _build("relu-softmax-ce", "float32")
    path = tmp_path / "m.safetensors"
    net.save(path)
    tensors = st_torch.load_file(str(path))
    assert tensors["weights.0"].dtype == torch.float32
    assert np.array_equal(tensors["weights.1"].numpy(), net.weights[1])


def test_a_file_written_by_safetensors_itself_loads(tmp_path):
    """The format is plain safetensors: writing the same tensors and
    metadata with safetensors.numpy.save_file gives a loadable model."""
    net = _build("tutorial-2-3-2-2", "float64")
    header, _ = _split(net.to_bytes())
    tensors = {f"weights.{k}": w for k, w in enumerate(net.weights)}
    tensors.update({f"biases.{k}": b for k, b in enumerate(net.biases)})
    path = tmp_path / "other.safetensors"
    st_numpy.save_file(tensors, str(path), metadata=header["__metadata__"])
    _assert_same(net, bpcore.load(path))


# -- paths and saving ------------------------------------------------------

def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        bpcore.load(tmp_path / "nope.safetensors")
    net = _build("tutorial-2-3-2-2", "float32")
    with pytest.raises(FileNotFoundError):
        net.save(tmp_path / "no" / "such" / "folder.safetensors")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="'.*d'.* directory"):
        net.save(tmp_path / "d")  # names the path given, not a temp file
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert list((tmp_path / "d").iterdir()) == []


def test_save_overwrites_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "m.safetensors"
    a = _build("tutorial-2-3-2-2", "float32", seed=1)
    b = _build("relu-softmax-ce", "float64", seed=2)
    a.save(path)
    b.save(os.fsencode(path))  # bytes paths work too
    _assert_same(b, bpcore.load(path))
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_failed_save_keeps_the_old_file_and_cleans_up(tmp_path, monkeypatch,
                                                      failing):
    path = tmp_path / "m.safetensors"
    old = _build("tutorial-2-3-2-2", "float32", seed=1)
    old.save(path)
    new = _build("tutorial-2-3-2-2", "float32", seed=2)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device (simulated)")

    if failing == "write":
        monkeypatch.setattr(_atomic, "_keep_mode", boom)
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        new.save(path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    _assert_same(old, bpcore.load(path))


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "m.safetensors"
    net = _build("tutorial-2-3-2-2", "float32")
    net.save(path)
    os.chmod(path, 0o640)
    net.save(path)
    assert (os.stat(path).st_mode & 0o777) == 0o640


def test_save_rejects_what_load_would_reject(tmp_path):
    net = _build("tutorial-2-3-2-2", "float32")
    net.metadata = {"k": 1}
    with pytest.raises(TypeError, match="str -> str"):
        net.to_bytes()
    net.metadata = [("k", "v")]
    with pytest.raises(TypeError, match="must be a dict"):
        net.to_bytes()
    net.metadata = {"bad": "\ud800"}
    with pytest.raises(ValueError, match="not valid Unicode"):
        net.to_bytes()
    net.metadata = {"big": "x" * (io.MAX_HEADER_BYTES + 1)}
    with pytest.raises(ValueError, match="header would be"):
        net.to_bytes()
    net.metadata = {}
    net.weights[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        net.save(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="bpcore.Network"):
        io.to_bytes("not a network")
    with pytest.raises(TypeError, match="must be bytes"):
        bpcore.Network.from_bytes("not bytes")


def test_from_bytes_accepts_bytearray_and_memoryview():
    net = _build("2layers-identity-mse", "float64")
    data = net.to_bytes()
    _assert_same(net, io.from_bytes(bytearray(data)))
    _assert_same(net, io.from_bytes(memoryview(data)))


# -- optimizer state ---------------------------------------------------------

def _data(m=48):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(m, 4))
    Y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    return X, Y


OPTIMIZERS = {
    "sgd-nesterov": lambda: bpcore.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                       weight_decay=1e-3),
    "sgd-plain": lambda: bpcore.SGD(lr=Step(0.1, step_size=1, gamma=0.5)),
    "adam-step": lambda: bpcore.Adam(lr=Step(0.01, step_size=2, gamma=0.5),
                                     betas=(0.8, 0.99)),
    "adamw-cosine": lambda: bpcore.AdamW(lr=Cosine(0.01, t_max=5),
                                         weight_decay=0.05),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS)
def test_resumed_training_matches_an_uninterrupted_run(make_opt, dtype,
                                                       tmp_path):
    X, Y = _data()
    kw = dict(batch_size=8, shuffle=True)

    def fresh():
        return bpcore.Network([4, 6, 2], activation="tanh", output="identity",
                              dtype=dtype, seed=5)

    straight, opt = fresh(), make_opt()
    straight.fit(X, Y, epochs=4, optimizer=opt, **kw)

    first, opt1 = fresh(), make_opt()
    first.fit(X, Y, epochs=2, optimizer=opt1, **kw)
    path = tmp_path / "checkpoint.safetensors"
    io.save(first, path, optimizer=opt1)
    del first, opt1
    resumed, opt2 = io.load(path, with_optimizer=True)
    assert type(opt2) is type(opt) and opt2.epoch == 2
    resumed.fit(X, Y, epochs=2, optimizer=opt2, **kw)

    assert np.array_equal(_bits(resumed.params), _bits(straight.params))
    assert (opt2.t, opt2.epoch) == (opt.t, opt.epoch)
    for a, b in zip(opt.state_dict()["buffers"], opt2.state_dict()["buffers"]):
        assert (a is None and b is None) or np.array_equal(_bits(a), _bits(b))
    assert repr(opt2) == repr(opt)


def test_optimizer_with_a_custom_learning_rate_callable(tmp_path):
    X, Y = _data()
    path = tmp_path / "c.safetensors"

    def lr(epoch):
        return 0.1 / (1 + epoch)

    straight, opt = bpcore.Network([4, 3, 2], seed=1), bpcore.SGD(
        lr=lr, momentum=0.5)
    straight.fit(X, Y, epochs=3, optimizer=opt, shuffle=False)
    first, opt1 = bpcore.Network([4, 3, 2], seed=1), bpcore.SGD(
        lr=lr, momentum=0.5)
    first.fit(X, Y, epochs=1, optimizer=opt1, shuffle=False)
    io.save(first, path, optimizer=opt1)
    with pytest.raises(ValueError, match="callable that cannot be stored"):
        io.load(path, with_optimizer=True)
    with pytest.raises(ValueError, match="SGD state; got a Adam"):
        io.load(path, with_optimizer=bpcore.Adam())
    with pytest.raises(ValueError, match="state buffers"):
        io.load(path, with_optimizer=bpcore.SGD(lr=lr))
    mine = bpcore.SGD(lr=lr, momentum=0.5)
    net, back = io.load(path, with_optimizer=mine)
    assert back is mine and mine.t == opt1.t
    net.fit(X, Y, epochs=2, optimizer=mine, shuffle=False)
    assert np.array_equal(_bits(net.params), _bits(straight.params))


def test_with_optimizer_on_a_file_without_one(tmp_path):
    net = _build("tutorial-2-3-2-2", "float32")
    path = tmp_path / "m.safetensors"
    net.save(path)
    back, opt = io.load(path, with_optimizer=True)
    assert opt is None
    _assert_same(net, back)
    with pytest.raises(ValueError, match="holds no optimizer"):
        io.load(path, with_optimizer=bpcore.SGD())
    with pytest.raises(TypeError, match="with_optimizer"):
        io.load(path, with_optimizer="yes")
    # An optimizer never used (no buffers yet) round trips too.
    io.save(net, path, optimizer=bpcore.Adam())
    back, opt = io.load(path, with_optimizer=True)
    assert isinstance(opt, bpcore.Adam) and opt.t == 0


def test_saving_an_optimizer_of_another_network_is_an_error():
    X, Y = _data()
    other = bpcore.Network([4, 5, 2], seed=0)
    opt = bpcore.Adam()
    other.fit(X, Y, epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match="belongs to"):
        io.to_bytes(bpcore.Network([4, 3, 2], seed=0), optimizer=opt)
    with pytest.raises(TypeError, match="SGD, Adam or AdamW"):
        io.to_bytes(other, optimizer="adam")


# -- malformed files -------------------------------------------------------

def _split(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, data, text=None):
    if text is None:
        text = json.dumps(header)
    raw = text.encode("utf-8") if isinstance(text, str) else text
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _base(optimizer=False):
    """A valid file: [3, 4, 2] float32, user metadata, optionally Adam."""
    net = bpcore.Network([3, 4, 2], seed=0, dtype="float32")
    net.metadata = {"note": "hello"}
    opt = None
    if optimizer:
        opt = bpcore.Adam(lr=Step(0.1, 2))
        X = np.linspace(0, 1, 12).reshape(4, 3)
        net.step(X, np.zeros((4, 2)), opt)
    return io.to_bytes(net, optimizer=opt)


def _edit(fn, optimizer=False):
    """A case that edits the parsed header (and maybe the data)."""
    def make():
        header, data = _split(_base(optimizer))
        out = fn(header, data)
        return _join(header, data) if out is None else out
    return make


def _meta(key, value, optimizer=False):
    def fn(h, d):
        if value is _DELETE:
            del h["__metadata__"][key]
        else:
            h["__metadata__"][key] = value
    return _edit(fn, optimizer)


def _meta_json(key, change, optimizer=False):
    """Edit a JSON value stored in a metadata string."""
    def fn(h, d):
        value = json.loads(h["__metadata__"][key])
        value = change(value)
        h["__metadata__"][key] = json.dumps(value)
    return _edit(fn, optimizer)


def _tensor(name, field, value):
    def fn(h, d):
        if field is None:
            h[name] = value
        else:
            entry = h[name]
            entry[field] = value(entry[field]) if callable(value) else value
    return _edit(fn)


def _last(h):
    return max((k for k in h if k != "__metadata__"),
               key=lambda k: h[k]["data_offsets"][0])


def _shift_last(delta, grow=0):
    def fn(h, d):
        name = _last(h)
        b, e = h[name]["data_offsets"]
        h[name]["data_offsets"] = [b + delta, e + delta]
        return _join(h, d + b"\0" * grow)
    return _edit(fn)


def _poke(name, value):
    """Write value into the first element of a tensor's data."""
    def fn(h, d):
        b = h[name]["data_offsets"][0]
        d = bytearray(d)
        d[b:b + 4] = np.float32(value).tobytes()
        return _join(h, bytes(d))
    return _edit(fn)


def _raw(fn):
    return lambda: fn(_base())


def _with_text(fn):
    """Replace the header with text made from the original header."""
    def make():
        h, d = _split(_base())
        return _join(h, d, fn(h, json.dumps(h)))
    return make


_DELETE = object()
BIG = 2 ** 64 - 1

MALFORMED = {
    # framing
    "empty": (lambda: b"", "too short"),
    "seven-bytes": (_raw(lambda b: b[:7]), "too short"),
    "header-length-2**63": (_raw(lambda b: struct.pack("<Q", 2 ** 63) + b[8:]),
                            "exceeds the limit"),
    "header-length-max-u64": (_raw(lambda b: struct.pack("<Q", BIG) + b[8:]),
                              "exceeds the limit"),
    "header-length-17MiB": (_raw(lambda b: struct.pack("<Q", 17 << 20)
                                 + b[8:]), "exceeds the limit"),
    "header-length-past-end": (_raw(lambda b: struct.pack("<Q", len(b))
                                    + b[8:]), "truncated"),
    "header-length-zero": (_raw(lambda b: struct.pack("<Q", 0) + b[8:]),
                           "too small"),
    "header-length-short": (_raw(lambda b: struct.pack("<Q", 40) + b[8:]),
                            "not valid JSON"),
    "truncated-in-header": (_raw(lambda b: b[:100]), "truncated"),
    "truncated-data": (_raw(lambda b: b[:-1]), "truncated|past the end"),
    "truncated-half": (_raw(lambda b: b[:len(b) - 40]),
                       "truncated|past the end"),
    "trailing-bytes": (_raw(lambda b: b + b"\0" * 8),
                       "unexpected bytes after the last tensor"),
    # header text
    "not-utf8": (_with_text(lambda h, t: b"{\xff\xfe" + t[3:].encode()),
                 "not valid UTF-8"),
    "not-json": (_with_text(lambda h, t: "{" + t[2:]), "not valid JSON"),
    "json-array": (_with_text(lambda h, t: "[" + t + "]"),
                   "not a JSON object"),
    "leading-space": (_with_text(lambda h, t: " " + t), "must start with"),
    "duplicate-key": (_with_text(
        lambda h, t: t[:-1] + ', "biases.0": ' + json.dumps(h["biases.0"])
        + "}"), "duplicate key 'biases.0'"),
    "duplicate-metadata-key": (_with_text(
        lambda h, t: t.replace('"loss": "mse"',
                               '"loss": "mse", "loss": "cross_entropy"')),
        "duplicate key 'loss'"),
    "nan-literal": (_tensor("biases.0", "shape", float("nan")),
                    "not valid JSON"),
    "huge-float": (_with_text(lambda h, t: t.replace(
        '"dtype": "F32"', '"dtype": 1e999', 1)), "not valid JSON"),
    "huge-int": (_with_text(lambda h, t: t.replace(
        '"dtype": "F32"', '"dtype": ' + "9" * 5000, 1)), "not valid JSON"),
    "deep-nesting": (_with_text(lambda h, t: t[:-1] + ', "x": '
                                + "[" * 100000 + "]" * 100000 + "}"),
                     "not valid JSON"),
    # tensor entries
    "offsets-past-end": (_tensor("weights.0", "data_offsets",
                                 lambda o: [o[0] + 10 ** 6,
                                            o[1] + 10 ** 6]),
                         "past the end of the file"),
    "offsets-huge": (_tensor("weights.0", "data_offsets",
                             lambda o: [2 ** 64 - 48, 2 ** 64]),
                     "past the end of the file"),
    "overlap": (_shift_last(-4), "overlaps"),
    "gap": (_shift_last(4, grow=4), "gap of 4 bytes"),
    "offsets-reversed": (_tensor("weights.0", "data_offsets",
                                 lambda o: o[::-1]), "invalid data_offsets"),
    "offsets-negative": (_tensor("weights.0", "data_offsets",
                                 lambda o: [o[0] - 8, o[1] - 8]),
                         "invalid data_offsets|overlaps"),
    "offsets-floats": (_tensor("weights.0", "data_offsets",
                               lambda o: [float(x) for x in o]),
                       "two integers"),
    "offsets-three": (_tensor("weights.0", "data_offsets",
                              lambda o: o + [0]), "two integers"),
    "span-too-long": (_tensor("weights.0", "data_offsets",
                              lambda o: [o[0], o[1] + 4]), "span 52 bytes"),
    "shape-transposed": (_tensor("weights.0", "shape", [4, 3]),
                         r"shape \[4, 3\]; the architecture"),
    "shape-flattened": (_tensor("weights.0", "shape", [12]),
                        r"needs \[3, 4\]"),
    "shape-bool": (_tensor("biases.1", "shape", [True, True]),
                   "list of integers"),
    "shape-huge": (_tensor("weights.0", "shape", [2 ** 62, 2 ** 62]),
                   "architecture"),
    "dtype-f16": (_tensor("weights.0", "dtype", "F16"), "dtype 'F16'"),
    "dtype-f64-in-float32-file": (_tensor("biases.0", "dtype", "F64"),
                                  "dtype 'F64'"),
    "dtype-not-string": (_tensor("biases.0", "dtype", 7), "has dtype"),
    "entry-not-object": (_tensor("biases.0", None, [1, 2]),
                         "exactly dtype, shape and data_offsets"),
    "entry-extra-field": (_tensor("biases.0", "extra", 1),
                          "exactly dtype, shape and data_offsets"),
    "missing-tensor": (_edit(lambda h, d: h.pop("biases.1") and None),
                       "tensor 'biases.1' is missing"),
    "renamed-tensor": (_edit(lambda h, d: h.__setitem__(
        "weights.00", h.pop("weights.0"))), "tensor 'weights.0' is missing"),
    "extra-tensor": (_edit(lambda h, d: h.__setitem__(
        "weights.2", dict(h["biases.1"]))), "unexpected tensor 'weights.2'"),
    # metadata
    "no-metadata": (_edit(lambda h, d: h.pop("__metadata__") and None),
                    "no __metadata__"),
    "not-bpcore": (lambda: st_numpy.save({"x": np.zeros(3, np.float32)},
                                         {"format": "pt"}),
                   "not a bpcore model file"),
    "metadata-not-object": (_edit(lambda h, d: h.__setitem__(
        "__metadata__", ["format"])), "must be a JSON object"),
    "format-version-2": (_meta("format_version", "2"),
                         "unsupported format version '2'"),
    "format-version-missing": (_meta("format_version", _DELETE),
                               "unsupported format version None"),
    "layers-missing": (_meta("layers", _DELETE), "'layers' is missing"),
    "unknown-key": (_meta("evil", "x"), "unknown metadata key 'evil'"),
    "value-number": (_meta("loss", 3), "value of 'loss' must be a string"),
    "value-null": (_meta("user.note", None), "must be a string, got null"),
    "value-list": (_meta("layers", [3, 4, 2]),
                   "must be a string, got a list"),
    "layers-bad-json": (_meta("layers", "[3, 4"), "'layers' is not valid"),
    "layers-object": (_meta("layers", '{"0": 3}'), "list of integers"),
    "layers-zero": (_meta("layers", "[3, 0, 2]"), r"layers\[1\] = 0"),
    "layers-negative": (_meta("layers", "[3, -4, 2]"), r"layers\[1\] = -4"),
    "layers-bool": (_meta("layers", "[3, true, 2]"), "list of integers"),
    "layers-float": (_meta("layers", "[3, 4.0, 2]"), "list of integers"),
    "layers-one": (_meta("layers", "[3]"), "2 to"),
    "layers-too-many": (_meta("layers", json.dumps([1] * 10001)), "2 to"),
    # 2**51 parameters: over MAX_PARAMS (2**48)
    "layers-absurd": (_meta("layers", "[33554432, 33554432, 33554432]"),
                      "over the limit"),
    "layers-huge-int": (_meta("layers", "[3, 4, 99999999999999999999999]"),
                        "out of range"),
    "layers-disagree": (_meta("layers", "[3, 5, 2]"), r"needs \[3, 5\]"),
    "activations-count": (_meta("activations", '["sigmoid"]'),
                          "list of 2 names"),
    "activations-unknown": (_meta("activations", '["swish", "sigmoid"]'),
                            "unknown activation 'swish'"),
    "activations-softmax-hidden": (_meta("activations",
                                         '["softmax", "sigmoid"]'),
                                   "unknown activation 'softmax' for the "
                                   "hidden layer 1"),
    "loss-unknown": (_meta("loss", "hinge"), "unknown loss 'hinge'"),
    "ce-with-sigmoid": (_meta("loss", "cross_entropy"),
                        "needs a softmax output"),
    "bce-with-identity": (_edit(lambda h, d: h["__metadata__"].update(
        loss="binary_cross_entropy",
        activations='["sigmoid", "identity"]')),
        "binary_cross_entropy needs a sigmoid output"),
    "dtype-float16": (_meta("dtype", "float16"), "metadata dtype"),
    "dtype-disagrees": (_meta("dtype", "float64"),
                        "metadata dtype float64 needs 'F64'"),
    # values
    "nan-weight": (_poke("weights.0", np.nan),
                   "'weights.0' contains NaN or infinity"),
    "inf-bias": (_poke("biases.1", np.inf),
                 "'biases.1' contains NaN or infinity"),
    # generator state
    "rng-unknown": (_meta_json("rng", lambda s: {**s, "bit_generator":
                                                 "Evil"}),
                    "unsupported bit generator 'Evil'"),
    "rng-not-json": (_meta("rng", "{"), "'rng' is not valid JSON"),
    "rng-negative": (_meta_json("rng", lambda s: {**s, "state": {
        "state": -1, "inc": 1}}), "rng.state.state"),
    "rng-too-big": (_meta_json("rng", lambda s: {**s, "state": {
        "state": 2 ** 128, "inc": 1}}), "rng.state.state"),
    "rng-extra-key": (_meta_json("rng", lambda s: {**s, "x": 1}),
                      "expected the keys"),
    "rng-mt-pos": (_meta("rng", json.dumps(
        {"bit_generator": "MT19937", "state": {"key": [1] * 624,
                                               "pos": 625}})),
                   "rng.state.pos"),
    "rng-mt-key-short": (_meta("rng", json.dumps(
        {"bit_generator": "MT19937", "state": {"key": [1] * 623,
                                               "pos": 0}})),
                         "rng.state.key"),
    "rng-philox-buffer-pos": (_meta("rng", json.dumps(
        {"bit_generator": "Philox", "state": {"counter": [0] * 4,
                                              "key": [0, 0]},
         "buffer": [0] * 4, "buffer_pos": -1, "has_uint32": 0,
         "uinteger": 0})), "rng.buffer_pos"),
    # optimizer state
    "optimizer-unknown": (_meta_json("optimizer", lambda o: {
        **o, "type": "LBFGS"}, True), "unknown type 'LBFGS'"),
    "optimizer-t-negative": (_meta_json("optimizer", lambda o: {
        **o, "t": -1}, True), "t must be an integer"),
    "optimizer-epoch-float": (_meta_json("optimizer", lambda o: {
        **o, "epoch": 1.5}, True), "epoch must be an integer"),
    "optimizer-bad-hyper": (_meta_json("optimizer", lambda o: {
        **o, "hyper": {**o["hyper"], "eps": -1.0}}, True), "eps"),
    "optimizer-missing-hyper": (_meta_json("optimizer", lambda o: {
        **o, "hyper": {}}, True), "hyper must have the keys"),
    "optimizer-lr-string": (_meta_json("optimizer", lambda o: {
        **o, "lr": "0.1"}, True), "lr must be a number"),
    "optimizer-schedule-unknown": (_meta_json("optimizer", lambda o: {
        **o, "lr": {"schedule": "os.system", "args": {}}}, True),
        "unknown schedule 'os.system'"),
    "optimizer-schedule-args": (_meta_json("optimizer", lambda o: {
        **o, "lr": {"schedule": "Step", "args": {"lr": 1, "evil": 2}}},
        True), "optimizer lr"),
    "optimizer-buffer-flag": (_meta_json("optimizer", lambda o: {
        **o, "buffers": [True]}, True), "list of 2 booleans"),
    "optimizer-buffer-missing": (_edit(lambda h, d: h.pop(
        "optimizer.buffer.1") and None, True),
        "tensor 'optimizer.buffer.1' is missing"),
    "optimizer-buffer-without-metadata": (_meta("optimizer", _DELETE, True),
                                          "unexpected tensor "
                                          "'optimizer.buffer"),
}


@pytest.mark.parametrize("make, match", MALFORMED.values(), ids=MALFORMED)
def test_malformed_files_raise_format_error(make, match, tmp_path):
    blob = make()
    with pytest.raises(bpcore.FormatError, match=match):
        bpcore.Network.from_bytes(blob)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(bpcore.FormatError, match=match):
        bpcore.load(path)
    with pytest.raises(ValueError):  # FormatError is a ValueError
        io.load(path, with_optimizer=True)


def test_corpus_bases_are_valid():
    """The corpus edits valid files: check both bases load."""
    io.from_bytes(_base())
    net, opt = io.from_bytes(_base(optimizer=True), with_optimizer=True)
    assert isinstance(opt, bpcore.Adam) and opt.t == 1


def test_absurd_sizes_are_rejected_before_allocating():
    """A 2-billion-parameter architecture in a 1 kB file: rejected with
    almost no memory allocated."""
    h, d = _split(_base())
    h["__metadata__"]["layers"] = "[46000, 46000, 2]"
    h["weights.0"]["shape"] = [46000, 46000]
    h["weights.0"]["data_offsets"] = [0, 46000 * 46000 * 4]
    blob = _join(h, d)
    tracemalloc.start()
    try:
        with pytest.raises(bpcore.FormatError):
            io.from_bytes(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20


def test_load_does_not_read_beyond_what_the_header_describes(tmp_path):
    """A file with a valid header and gigabytes of trailing garbage is
    rejected from its size, without reading the garbage."""
    path = tmp_path / "sparse.safetensors"
    blob = _base()
    with open(path, "wb") as f:
        f.write(blob)
        f.truncate(len(blob) + (4 << 30))  # sparse: costs no disk space
    tracemalloc.start()
    try:
        with pytest.raises(bpcore.FormatError, match="unexpected bytes"):
            bpcore.load(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 20


# -- fuzzing in a subprocess ---------------------------------------------

def _run_fuzzer(examples, seed=None, timeout=600):
    cmd = [sys.executable, str(HERE / "fuzz_load.py"),
           "--examples", str(examples)]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, (
        f"fuzzer failed (exit status {proc.returncode}; negative means "
        f"killed by a signal, i.e. a crash):\n{proc.stdout[-4000:]}\n"
        f"{proc.stderr[-8000:]}")
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["rejected"] + counts["loaded"] == examples
    assert counts["rejected"] > examples // 2  # the damage is usually caught
    return counts


def test_fuzz_loader_in_subprocess():
    _run_fuzzer(1000)


@pytest.mark.slow
def test_fuzz_loader_in_subprocess_long():
    _run_fuzzer(5000, seed=int(time.time()))


# -- atomicity under SIGKILL -----------------------------------------------

SAVER = textwrap.dedent("""
    import sys
    import bpcore
    path, start = sys.argv[1], int(sys.argv[2])
    # ~3.2 million float32 parameters: a 13 MB file, long enough to write
    # that a kill often lands in the middle of a save.
    net = bpcore.Network([512, 2048, 1024, 10], dtype="float32", seed=0)
    i = start
    print("ready", flush=True)
    while True:
        net.params[...] = i
        net.metadata = {"version": str(i)}
        net.save(path)
        print(i, flush=True)
        i += 1
""")


def _kill_while_saving(tmp_path, rounds, rng):
    path = tmp_path / "model.safetensors"
    first = bpcore.Network([512, 2048, 1024, 10], dtype="float32", seed=0)
    first.params[...] = -1
    first.metadata = {"version": "-1"}
    first.save(path)
    done_total, last = 0, -1
    for r in range(rounds):
        proc = subprocess.Popen(
            [sys.executable, "-c", SAVER, str(path), str(1000 * (r + 1))],
            stdout=subprocess.PIPE, text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"))
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.05, 1.2))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        done_total += len(out.split())
        net = bpcore.load(path)
        version = int(net.metadata["version"])
        # The newest complete save: of this round, or an earlier one if
        # this child was killed before finishing its first save.
        assert last <= version < 1000 * (r + 2)
        last = version
        # One whole version: every parameter holds the same number.
        assert np.all(net.params == version)
        # Only the model and, when the kill landed mid-save, the
        # temporary files of the killed saves may be in the folder.
        for p in tmp_path.iterdir():
            if p != path:
                assert re.fullmatch(r"\.model\.safetensors\.[0-9]+\.[0-9a-f]{16}"
                                    r"\.tmp", p.name), p.name
    return done_total


def test_sigkill_during_save_leaves_a_valid_file(tmp_path):
    _kill_while_saving(tmp_path, rounds=3, rng=np.random.default_rng())


@pytest.mark.slow
def test_sigkill_during_save_leaves_a_valid_file_long(tmp_path):
    _kill_while_saving(tmp_path, rounds=15, rng=np.random.default_rng())


def test_io_is_importable_as_bpcore_io(tmp_path):
    """The README's checkpoint call works in a fresh interpreter after a
    plain ``import bpcore``."""
    code = ("import bpcore; net = bpcore.Network([2, 2], seed=0); "
            "bpcore.io.save(net, 'ckpt.safetensors', "
            "optimizer=bpcore.SGD(lr=0.1, momentum=0.9)); "
            "print(bpcore.io.load('ckpt.safetensors', with_optimizer=True))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
