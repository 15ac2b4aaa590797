"""Activation functions over their whole range, extremes included, against
SciPy/NumPy in float64, on every kernel the machine runs (each kernel has
its own exp).  A [1, 1] network with weight 1 and bias 0 gives net = x
exactly, so predict returns f(x)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    from scipy import special
    import bpcore

    x64 = np.concatenate([np.linspace(-120, 120, 24001),
                          -np.logspace(-30, 2.5, 400),
                          np.logspace(-30, 2.5, 400), [0.0, -0.0]])
    exact = {
        "identity": lambda x: x,
        "sigmoid": special.expit,
        "tanh": np.tanh,
        "relu": lambda x: np.maximum(x, 0),
        "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
        "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
        "softplus": lambda x: np.logaddexp(0, x),
        "gelu": lambda x: 0.5 * x * special.erfc(-x / np.sqrt(2)),
    }
    report = {}
    for dtype in ("float32", "float64"):
        info = np.finfo(dtype)
        x = x64.astype(dtype)
        for name, f in exact.items():
            net = bpcore.Network([1, 1], output=name, dtype=dtype, seed=0)
            net.weights[0][...] = 1
            net.biases[0][...] = 0
            got = net.predict(x[:, None])[:, 0].astype(np.float64)
            want = f(x.astype(np.float64))
            # error in units of the result's last place where the result
            # (and gelu's intermediate Phi(x) = f(x) / x) is a normal
            # number; below that, within the smallest normal
            normal = np.abs(want) >= 64 * info.tiny
            err = np.abs(got - want)[normal] / (np.abs(want[normal]) * info.eps)
            if name == "gelu":
                # Phi's tail is ill-conditioned: rounding x / sqrt(2) to the
                # dtype moves erfc by about x^2 ulps (PyTorch's too)
                err = err / (1 + x.astype(np.float64)[normal] ** 2)
            worst = float(np.max(err))
            assert np.all(np.abs(got - want)[~normal] <= 64 * info.tiny), name
            report[f"{name}-{dtype}"] = worst
            assert np.isfinite(got).all(), name
        # softmax rows with extreme spreads
        rng = np.random.default_rng(0)
        z = (rng.normal(size=(500, 7)) * np.array([1, 10, 50, 80, 0.1, 3, 30])).astype(dtype)
        net = bpcore.Network([7, 7], output="softmax", loss="cross_entropy",
                             dtype=dtype, seed=0)
        net.weights[0][...] = np.eye(7)
        net.biases[0][...] = 0
        got = net.predict(z).astype(np.float64)
        want = special.softmax(z.astype(np.float64), axis=1)
        normal = want >= info.tiny
        # exp(z - max z) inherits the rounding of z - max z in the dtype:
        # about |z - max z| ulps of conditioning
        spread = 1 + np.abs(z - z.max(axis=1, keepdims=True)).astype(np.float64)
        report[f"softmax-{dtype}"] = float(np.max(
            (np.abs(got - want) / want / spread)[normal] / info.eps))
    print(json.dumps(report))
""")


def _run(kernel):
    env = dict(os.environ, BPCORE_KERNEL=kernel)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kernel", ["ref", "avx2", "avx512"])
def test_activations_accurate_everywhere(kernel):
    pytest.importorskip("scipy")
    env = dict(os.environ, BPCORE_KERNEL=kernel)
    probe = subprocess.run([sys.executable, "-c", "import bpcore, os; print("
                            "bpcore.show_config(file=open(os.devnull, 'w'))"
                            "['kernel'])"], capture_output=True, text=True,
                           env=env, timeout=120)
    if probe.stdout.strip() != kernel:
        pytest.skip(f"{kernel} kernel not supported here")
    report = _run(kernel)
    # a few ulps everywhere; softmax rows sum in double then divide once
    for key, ulps in report.items():
        limit = 8 if key.startswith(("gelu", "softmax")) else 4
        assert ulps <= limit, (key, ulps, report)
