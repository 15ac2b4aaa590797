"""Every kernel the machine runs (forced with BPCORE_KERNEL) against the
NumPy oracle on awkward layer shapes, both dtypes, with thread-count
invariance and predict == forward bitwise.  Kernels are chosen at import,
so each runs in its own subprocess."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

HERE = pathlib.Path(__file__).resolve().parent

SCRIPT = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import bpcore, reference as ref
    kernel = bpcore.show_config(file=open("/dev/null", "w"))["kernel"]
    rng = np.random.default_rng(5)
    # sizes around the tiles (6, 8, 16, 32), primes, KC + 1 = 257
    shapes = [[8, 8, 8], [9, 17, 8], [31, 33, 15], [257, 13, 10],
              [16, 97, 7, 8], [8, 120, 130, 9], [3, 8, 2]]
    worst = {}
    for dtype, rtol in (("float64", 1e-10), ("float32", 2e-4)):
        for layers in shapes:
            for m in (1, 5, 7, 130):
                L = len(layers) - 1
                ws = [rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(dtype)
                      for a, b in zip(layers, layers[1:])]
                bs = [rng.normal(0, 0.1, b).astype(dtype) for b in layers[1:]]
                net = bpcore.Network(layers, activation="tanh",
                                     output="softmax", loss="cross_entropy",
                                     dtype=dtype, seed=0)
                for k in range(L):
                    net.weights[k][...] = ws[k]
                    net.biases[k][...] = bs[k]
                mlp = ref.MLP(ws, bs, ["tanh"] * (L - 1) + ["softmax"],
                              "cross_entropy")
                X = rng.normal(size=(m, layers[0])).astype(dtype)
                y = rng.integers(0, layers[-1], m)
                p1 = net.predict(X, n_threads=1)
                p2 = net.predict(X, n_threads=2)
                assert np.array_equal(p1, p2), "predict threads"
                assert np.array_equal(p1, net.forward(X).out[-1]), "forward"
                g1 = net.backward(X, y, n_threads=1)
                g2 = net.backward(X, y, n_threads=4)
                assert np.array_equal(g1.params, g2.params), "grad threads"
                r = mlp.backward(X, y)
                for name, got, want in (("predict", p1, mlp.predict(X)),
                                        ("grad", g1.params, r["params"]),
                                        ("dX", g1.delta[0], r["delta"][0])):
                    scale = np.abs(want).max() + 1e-30
                    err = float(np.abs(got - want).max() / scale)
                    assert err < rtol, (name, dtype, layers, m, err)
                    worst[dtype] = max(worst.get(dtype, 0.0), err)
    # a long predict packs each W once for all its blocks of rows (4,096
    # rows and more): two column blocks and two depth blocks in the first
    # layer, the same bits as forward and on any thread count
    for dtype in ("float64", "float32"):
        net = bpcore.Network([300, 1100, 40, 5], activation="tanh",
                             output="softmax", dtype=dtype, seed=2)
        X = rng.normal(size=(4100, 300)).astype(dtype)
        p1 = net.predict(X, n_threads=1)
        assert np.array_equal(p1, net.predict(X, n_threads=2)), "long threads"
        assert np.array_equal(p1, net.forward(X).out[-1]), "long forward"
        assert np.array_equal(p1[:1000], net.predict(X[:1000])), "long short"
    print(json.dumps({"kernel": kernel, "worst": worst}))
""")


def _run(kernel):
    env = dict(os.environ, BPCORE_KERNEL=kernel)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(HERE)],
                          capture_output=True, text=True, env=env,
                          timeout=600)


def _available(kernel):
    env = dict(os.environ, BPCORE_KERNEL=kernel)
    r = subprocess.run([sys.executable, "-c", "import bpcore, os; print("
                        "bpcore.show_config(file=open(os.devnull, 'w'))"
                        "['kernel'])"], capture_output=True, text=True,
                       env=env, timeout=120)
    return r.stdout.strip() == kernel


@pytest.mark.parametrize("kernel", ["ref", "avx2", "avx512"])
def test_kernel_against_oracle(kernel):
    if kernel != "ref" and not _available(kernel):
        pytest.skip(f"{kernel} kernel not supported on this machine")
    r = _run(kernel)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["kernel"] == kernel
