"""Forward pass and predict against the NumPy reference (reference.py)."""

import numpy as np
import pytest

import bpcore
import reference as ref

DTYPES = ("float32", "float64")

ARCHITECTURES = {
    "1-1": [1, 1],
    "5-3": [5, 3],
    "3-5-2": [3, 5, 2],
    "4-7-6-3": [4, 7, 6, 3],
    "2-3-2-2": [2, 3, 2, 2],
    "13-1-9": [13, 1, 9],
    "6-17-33-8-4": [6, 17, 33, 8, 4],
}


def build(make_net, random_params, rng, layers, dtype, activation="tanh",
          output="identity", loss="mse", m=11):
    """A bpcore network, its float64 oracle and an input X rounded to dtype."""
    weights, biases = random_params(rng, layers, dtype)
    net = make_net(layers, weights, biases, activation=activation,
                   output=output, loss=loss, dtype=dtype)
    if isinstance(activation, str):
        activation = [activation] * (len(layers) - 2)
    oracle = ref.MLP(weights, biases, list(activation) + [output], loss)
    X = rng.normal(size=(m, layers[0])).astype(dtype)
    return net, oracle, X


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers", ARCHITECTURES.values(),
                         ids=ARCHITECTURES.keys())
def test_architectures(layers, dtype, make_net, random_params, rng, tol):
    net, oracle, X = build(make_net, random_params, rng, layers, dtype)
    np.testing.assert_allclose(net.predict(X), oracle.predict(X), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ref.OUTPUT_NAMES)
@pytest.mark.parametrize("activation", ref.ACTIVATION_NAMES)
def test_activations(activation, output, dtype, make_net, random_params, rng,
                     tol):
    layers = [4, 6, 5, 3]
    net, oracle, X = build(make_net, random_params, rng, layers, dtype,
                           activation=activation, output=output, m=23)
    trace = net.forward(X)
    ref_net, ref_out = oracle.forward(X)
    assert len(trace.net) == len(trace.out) == len(layers)
    for k in range(1, len(layers)):
        np.testing.assert_allclose(trace.net[k], ref_net[k], **tol(dtype),
                                   err_msg=f"net[{k}]")
        np.testing.assert_allclose(trace.out[k], ref_out[k], **tol(dtype),
                                   err_msg=f"out[{k}]")
    np.testing.assert_allclose(net.predict(X), ref_out[-1], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_hidden_activations(dtype, make_net, random_params, rng, tol):
    layers = [3, 5, 4, 6, 5, 4, 3, 5, 4, 2]
    acts = list(ref.ACTIVATION_NAMES)
    net, oracle, X = build(make_net, random_params, rng, layers, dtype,
                           activation=acts, output="softmax")
    assert tuple(net.activation) == tuple(acts) + ("softmax",)
    np.testing.assert_allclose(net.predict(X), oracle.predict(X), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output", ["sigmoid", "softmax", "softplus", "elu",
                                    "gelu", "tanh"])
def test_large_inputs_stay_finite(output, dtype, make_net, random_params, rng,
                                  tol):
    # Stable forms: no overflow to inf or NaN for |net| in the hundreds.
    layers = [3, 4, 3]
    net, oracle, _ = build(make_net, random_params, rng, layers, dtype,
                           activation="identity", output=output)
    X = np.array([[1e3, -1e3, 5e2], [-1e3, 1e3, -5e2]], dtype=dtype)
    out = net.predict(X)
    assert np.all(np.isfinite(out))
    # rtol >= 1e-8: PyTorch's softplus returns x itself above x = 20, an
    # absolute difference up to 2e-9 from log(1 + e^x).
    t = tol(dtype)
    t["rtol"] = max(t["rtol"], 1e-8)
    np.testing.assert_allclose(out, oracle.predict(X), **t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_equals_forward_bitwise(dtype, make_net, random_params, rng):
    net, _, X = build(make_net, random_params, rng, [7, 9, 4], dtype,
                      output="softmax", m=57)
    assert np.array_equal(net.predict(X), net.forward(X).out[-1])


@pytest.mark.parametrize("n_threads", [1, 2])
def test_long_predict_in_several_calls_keeps_the_bits(n_threads, rng):
    # Much work is split into C calls of whole row blocks (to see Ctrl-C
    # between them): 4001 rows x 2.1 M weights take two calls here.
    net = bpcore.Network([1024, 2048, 10], activation="tanh",
                         output="softmax", loss="cross_entropy", seed=0)
    X = rng.normal(size=(4001, 1024)).astype(np.float32)
    out = net.predict(X, n_threads=n_threads)
    assert np.array_equal(out, net.forward(X, n_threads=n_threads).out[-1])
    assert np.array_equal(out[:5], net.predict(X[:5]))
    assert np.array_equal(out[-500:], net.predict(X[-500:]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_long_predict_packs_the_weights_once_same_bits(dtype, rng):
    # From 4,096 rows predict packs each layer's W once for every block of
    # rows (of 64), the team sharing the packing out; so does a call of 512
    # rows or more whose X outweighs the packed weights (784-256-128-10 and
    # 20-70-3 at 1,000 rows, not 300-1100-40-5).  The bits stay forward's,
    # on any thread count, and those of shorter calls (300 rows: blocks of
    # 128, each packing W).
    for layers in ([784, 256, 128, 10], [300, 1100, 40, 5], [20, 70, 3]):
        net = bpcore.Network(layers, activation="relu", output="softmax",
                             loss="cross_entropy", seed=3, dtype=dtype)
        X = rng.normal(size=(4099, layers[0])).astype(dtype)
        out = net.predict(X, n_threads=1)
        assert np.array_equal(out, net.forward(X).out[-1])
        for nt in (2, 3):
            assert np.array_equal(out, net.predict(X, n_threads=nt))
        for rows in (1000, 300):
            for nt in (1, 2):
                parts = [net.predict(X[i:i + rows], n_threads=nt)
                         for i in range(0, 4099, rows)]
                assert np.array_equal(out, np.concatenate(parts))


def test_predict_split_into_calls_fits_its_workspace(rng):
    # Much work is cut into C calls of fewer rows, all with the workspace
    # sized for the first: its bytes may never shrink with the rows.  Here
    # calls of 2,048, 2,048 and 904 rows: the last in 8 blocks of 128, the
    # others in 4 of 512 (a rule that packed W once from 8 blocks wanted
    # more workspace for the last call than for the first).
    net = bpcore.Network([100, 1500, 2000, 7], activation="relu",
                         output="softmax", loss="cross_entropy", seed=4)
    X = rng.normal(size=(5000, 100)).astype(np.float32)
    out = net.predict(X, n_threads=2)
    assert np.array_equal(out, net.forward(X).out[-1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_trace_layout(dtype, make_net, random_params, rng):
    layers = [5, 8, 3, 2]
    net, _, X = build(make_net, random_params, rng, layers, dtype, m=13)
    trace = net.forward(X)
    assert len(trace.net) == len(trace.out) == len(layers)
    # The input layer has no activation: net[0] is out[0], equal to X.
    assert trace.net[0] is trace.out[0]
    assert np.array_equal(trace.net[0], X)
    assert np.array_equal(trace.out[0], X)
    for k, n in enumerate(layers):
        assert trace.net[k].shape == (13, n)
        assert trace.out[k].shape == (13, n)
        assert trace.net[k].dtype == np.dtype(dtype)
        assert trace.out[k].dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_dtype_and_shape(dtype, make_net, random_params, rng):
    net, _, X = build(make_net, random_params, rng, [5, 8, 3], dtype, m=9)
    out = net.predict(X)
    assert out.shape == (9, 3)
    assert out.dtype == np.dtype(dtype)
    assert np.dtype(net.dtype) == np.dtype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sample_1d(dtype, make_net, random_params, rng, tol):
    net, oracle, X = build(make_net, random_params, rng, [5, 8, 3], dtype)
    x = X[3]
    y = net.predict(x)
    assert y.shape == (3,)
    assert np.array_equal(y, net.predict(x[None, :])[0])
    np.testing.assert_allclose(y, oracle.predict(x[None, :])[0], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_output_unit(dtype, make_net, random_params, rng, tol):
    net, oracle, X = build(make_net, random_params, rng, [4, 6, 1], dtype)
    out = net.predict(X)
    assert out.shape == (X.shape[0], 1)
    np.testing.assert_allclose(out, oracle.predict(X), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sample_2d(dtype, make_net, random_params, rng, tol):
    net, oracle, X = build(make_net, random_params, rng, [5, 8, 3], dtype,
                           m=1)
    out = net.predict(X)
    assert out.shape == (1, 3)
    np.testing.assert_allclose(out, oracle.predict(X), **tol(dtype))


CONVERSIONS = {
    "list": lambda X: X.tolist(),
    "fortran": np.asfortranarray,
    "row-strided": lambda X: np.repeat(X, 2, axis=0)[::2],
    "col-strided": lambda X: np.repeat(X, 3, axis=1)[:, ::3],
    "negative-stride": lambda X: np.ascontiguousarray(X[::-1])[::-1],
    "readonly": lambda X: _readonly(X),
    "other-float": lambda X: X.astype(
        np.float64 if X.dtype == np.float32 else np.float32),
    # the network's float type, but bytes C cannot read as they are
    "big-endian": lambda X: X.astype(X.dtype.newbyteorder(">")),
    "misaligned": lambda X: _misaligned(X),
}


def _misaligned(a):
    """A C-contiguous copy of a whose data starts one byte off alignment."""
    buf = np.empty(a.nbytes + 1, dtype=np.uint8)
    out = buf[1:].view(a.dtype).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


def _readonly(X):
    X = X.copy()
    X.flags.writeable = False
    return X


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convert", CONVERSIONS.values(),
                         ids=CONVERSIONS.keys())
def test_input_layouts(convert, dtype, make_net, random_params, rng):
    net, _, X = build(make_net, random_params, rng, [6, 7, 4], dtype, m=15)
    if convert is CONVERSIONS["other-float"]:
        # A float32 copy of float64 data loses bits; compare on values that
        # both types hold exactly.
        X = X.astype(np.float32).astype(dtype)
    expected = net.predict(np.ascontiguousarray(X, dtype=dtype))
    assert np.array_equal(net.predict(convert(X)), expected)
    assert np.array_equal(net.forward(convert(X)).out[-1], expected)
    # a few rows (the small-batch predict path), and one sample
    assert np.array_equal(net.predict(convert(X[:3])), expected[:3])
    if convert is not CONVERSIONS["col-strided"]:  # that one needs 2-D
        assert np.array_equal(net.predict(convert(X[0])), expected[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("int_dtype", ["int32", "int64", "uint8"])
def test_integer_input(int_dtype, dtype, make_net, random_params, rng, tol):
    net, oracle, _ = build(make_net, random_params, rng, [6, 7, 4], dtype)
    X = rng.integers(0, 2, size=(10, 6)).astype(int_dtype)
    out = net.predict(X)
    assert np.array_equal(out, net.predict(X.astype(dtype)))
    np.testing.assert_allclose(out, oracle.predict(X.astype(np.float64)),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_does_not_modify_input(dtype, make_net, random_params, rng):
    net, _, X = build(make_net, random_params, rng, [6, 7, 4], dtype)
    X_copy = X.copy()
    net.predict(X)
    net.forward(X)
    assert np.array_equal(X, X_copy)


@pytest.mark.parametrize("dtype", DTYPES)
def test_predict_n_threads_argument(dtype, make_net, random_params, rng):
    net, _, X = build(make_net, random_params, rng, [6, 7, 4], dtype)
    assert np.array_equal(net.predict(X, n_threads=1), net.predict(X))


@pytest.mark.parametrize("dtype", DTYPES)
def test_writing_weights_changes_predictions(dtype, make_net, random_params,
                                             rng, tol):
    net, oracle, X = build(make_net, random_params, rng, [3, 4, 2], dtype)
    before = net.predict(X)
    net.weights[1][2, 1] += 0.5
    net.biases[0][...] = 0.25
    oracle.weights[1][2, 1] = float(np.asarray(net.weights[1][2, 1]))
    oracle.biases[0][...] = 0.25
    after = net.predict(X)
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, oracle.predict(X), **tol(dtype))


def test_default_network_predicts(rng):
    # Defaults: float32, sigmoid/sigmoid/mse, init="auto".
    net = bpcore.Network(layers=[3, 4, 2], seed=1)
    out = net.predict(rng.normal(size=(5, 3)))
    assert out.shape == (5, 2)
    assert np.all((out > 0) & (out < 1))


MEDIUM = {
    "37-64-33-5-m1000": ([37, 64, 33, 5], 1000),
    "129-67-31-3-m257": ([129, 67, 31, 3], 257),
    "8-8-8-m8": ([8, 8, 8], 8),
    "9-17-15-m7": ([9, 17, 15], 7),
    "16-48-24-m1": ([16, 48, 24], 1),
    "300-10-9-m33": ([300, 10, 9], 33),
    "1-300-1-m65": ([1, 300, 1], 65),
    "50-1-50-m129": ([50, 1, 50], 129),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers, m", MEDIUM.values(), ids=MEDIUM.keys())
def test_medium_networks(layers, m, dtype, make_net, random_params, rng, tol):
    # Large enough for the blocked and multi-threaded paths.
    net, oracle, X = build(make_net, random_params, rng, layers, dtype,
                           activation="gelu", output="softmax", m=m)
    trace = net.forward(X)
    ref_net, ref_out = oracle.forward(X)
    for k in range(1, len(layers)):
        np.testing.assert_allclose(trace.net[k], ref_net[k], **tol(dtype),
                                   err_msg=f"net[{k}]")
    np.testing.assert_allclose(net.predict(X), ref_out[-1], **tol(dtype))
