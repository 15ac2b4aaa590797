"""Shared fixtures and helpers for the bpcore test suite.

Helpers are reached through fixtures of the same name (importing conftest
from a test module is fragile across pytest import modes):

- ``rng``: a seeded numpy Generator, fresh for every test.
- ``tol(dtype)``: assert_allclose tolerances for results computed in dtype
  and compared with the float64 reference on well-scaled data.
- ``make_net(layers, weights=..., biases=..., **kwargs)``: a bpcore.Network
  with the given parameters copied into its views.
- ``restore_threads``: puts bpcore's global thread count back afterwards.
- ``random_params(rng, layers, dtype)``: well-scaled weights and biases,
  already rounded to dtype so bpcore and the reference see the same values.

Tests import the installed bpcore, never the source tree; this directory is
put on sys.path only so that ``import reference`` works in every import mode.
"""

import os
import sys

import numpy as np
import pytest

# Small test problems would run on one thread under the core's measured
# choice of team size; this makes every call that may use a team use it, so
# the tests exercise the team code paths (the choice changes no result; the
# default is tested in test_threads.py, in subprocesses without this).
os.environ.setdefault("BPCORE_TEAM", "always")

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_TOLERANCES = {
    np.dtype(np.float32): dict(rtol=1e-4, atol=1e-5),
    np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12),
}


def tol(dtype):
    """Tolerances for comparing a dtype result with the float64 oracle."""
    return dict(_TOLERANCES[np.dtype(dtype)])


def random_params(rng, layers, dtype="float64", scale=1.0):
    """Weights ~ N(0, scale^2/fan_in), biases ~ N(0, 0.1^2), rounded to dtype.

    Returned as float64 arrays whose values are exactly representable in
    dtype.
    """
    weights, biases = [], []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        w = rng.normal(0.0, scale / np.sqrt(n_in), size=(n_in, n_out))
        b = rng.normal(0.0, 0.1, size=n_out)
        weights.append(w.astype(dtype).astype(np.float64))
        biases.append(b.astype(dtype).astype(np.float64))
    return weights, biases


def make_net(layers, weights=None, biases=None, **kwargs):
    """Build bpcore.Network(layers, **kwargs) and copy parameters into it."""
    import bpcore

    kwargs.setdefault("seed", 0)
    net = bpcore.Network(layers=list(layers), **kwargs)
    if weights is not None:
        for k, w in enumerate(weights):
            net.weights[k][...] = w
    if biases is not None:
        for k, b in enumerate(biases):
            net.biases[k][...] = b
    return net


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(name="tol")
def tol_fixture():
    return tol


@pytest.fixture(name="make_net")
def make_net_fixture():
    return make_net


@pytest.fixture(name="random_params")
def random_params_fixture():
    return random_params


@pytest.fixture
def restore_threads():
    """Restore bpcore's global thread count after the test."""
    import bpcore

    before = bpcore.get_num_threads()
    yield before
    bpcore.set_num_threads(before)


@pytest.fixture
def unclamped_threads():
    """Lift bpcore's cap of thread counts at the CPUs (affinity, cgroup
    quota) for the test, so that 3 or 4 threads really run on a 2-CPU
    machine (the determinism tests)."""
    from bpcore import _core

    old = _core._set_cpu_limit(64)
    yield
    _core._set_cpu_limit(old)
