"""The arrays the kernels stream with vector loads start on a cache line.

numpy aligns to 16 bytes only; a parameter vector off a 64-byte boundary
made every vector load of the weights touch two cache lines (one-row
predict of a 784-256-128-10 network: 11 us instead of 7 us, depending on
what the process had allocated before).  These tests check the addresses,
never the time.
"""
import copy
import pickle

import numpy as np
import pytest

import bpcore
from bpcore import _aligned


def _offset(a):
    return a.ctypes.data % 64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 3, 17, 1000])
def test_allocator(dtype, n):
    # many allocations, so that numpy's 16-byte alignment alone would
    # almost surely miss a line boundary somewhere
    arrays = [_aligned.zeros(n, dtype) for _ in range(16)]
    arrays += [_aligned.empty_like(a) for a in arrays[:4]]
    arrays += [_aligned.copy(np.arange(n, dtype=dtype)) for _ in range(4)]
    assert [_offset(a) for a in arrays] == [0] * len(arrays)
    assert all(a.dtype == np.dtype(dtype) and a.shape == (n,) for a in arrays)
    assert not arrays[0].any()
    np.testing.assert_array_equal(arrays[-1], np.arange(n, dtype=dtype))
    assert all(a.flags.c_contiguous and a.flags.writeable for a in arrays)


def test_object_dtype_is_left_to_numpy():
    a = _aligned.copy(np.array(["x", "y"], dtype=object))
    assert list(a) == ["x", "y"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parameters_and_optimizer_state_are_aligned(dtype, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 7)).astype(dtype)
    Y = rng.standard_normal((64, 3)).astype(dtype)
    nets = []
    for layers in ([7, 5, 3], [7, 13, 3], [7, 33, 17, 3]):
        for _ in range(4):
            # unaligned arrays between the networks shift the heap
            nets.append((bpcore.Network(layers, dtype=dtype, seed=1),
                         np.empty(rng.integers(1, 9), dtype=np.uint8)))
    assert [_offset(n.params) for n, _ in nets] == [0] * len(nets)

    net = bpcore.Network([7, 13, 3], dtype=dtype, seed=1)
    opt = bpcore.Adam(lr=1e-3)
    net.fit(X, Y, epochs=1, batch_size=16, optimizer=opt)
    assert all(_offset(s) == 0 for s in opt._state)
    state = opt.state_dict()
    other = bpcore.Adam(lr=1e-3)
    other.load_state_dict(state)
    assert all(_offset(s) == 0 for s in other._state)
    np.testing.assert_array_equal(other._state[0], opt._state[0])

    path = tmp_path / "m.safetensors"
    net.save(path)
    copies = [bpcore.load(path), pickle.loads(pickle.dumps(net)),
              copy.deepcopy(net)]
    for c in copies:
        assert _offset(c.params) == 0
        np.testing.assert_array_equal(c.params, net.params)
