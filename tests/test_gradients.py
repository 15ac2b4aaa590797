"""backward / evaluate against the NumPy reference and finite differences,
plus the flat parameter and gradient layout."""

import numpy as np
import pytest

import reference as ref

DTYPES = ("float32", "float64")
PAIRS = [pytest.param(output, loss, id=f"{output}-{loss}")
         for output, loss in ref.VALID_OUTPUT_LOSS]
WEIGHTING = [pytest.param(False, id="unweighted"),
             pytest.param(True, id="weighted")]


def make_targets(rng, loss, m, n_out, kind="default"):
    """Targets for ``loss``: regression values, class labels or bits."""
    if loss == "mse":
        return rng.normal(size=(m, n_out))
    if loss == "cross_entropy":
        labels = rng.integers(0, n_out, size=m)
        if kind == "probabilities":
            p = rng.uniform(0.05, 1.0, size=(m, n_out))
            return p / p.sum(axis=1, keepdims=True)
        if kind == "one-hot":
            return ref.one_hot(labels, n_out)
        return labels
    if loss == "binary_cross_entropy":
        y = rng.uniform(0.0, 1.0, size=(m, n_out))
        y[0, 0], y[-1, -1] = 0.0, 1.0  # the ends of [0, 1] are valid targets
        return y
    raise AssertionError(loss)


def make_case(make_net, random_params, rng, layers, activation, output, loss,
              dtype, m, weighted):
    weights, biases = random_params(rng, layers, dtype)
    net = make_net(layers, weights, biases, activation=activation,
                   output=output, loss=loss, dtype=dtype)
    oracle = ref.MLP(weights, biases,
                     [activation] * (len(layers) - 2) + [output], loss)
    X = rng.normal(size=(m, layers[0])).astype(dtype)
    Y = make_targets(rng, loss, m, layers[-1])
    if loss != "cross_entropy" or np.ndim(Y) == 2:
        Y = np.asarray(Y, dtype=dtype)
    sw = rng.uniform(0.1, 3.0, size=m) if weighted else None
    return net, oracle, X, Y, sw


# ---------------------------------------------------------------------------
# backward against the reference: every hidden activation x (output, loss).

@pytest.mark.parametrize("weighted", WEIGHTING)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", ref.ACTIVATION_NAMES)
def test_backward_matches_reference(activation, output, loss, dtype, weighted,
                                    make_net, random_params, rng, tol):
    layers = [4, 6, 5, 3]
    net, oracle, X, Y, sw = make_case(make_net, random_params, rng, layers,
                                      activation, output, loss, dtype, 17,
                                      weighted)
    grads = net.backward(X, Y, sample_weight=sw)
    expected = oracle.backward(X, Y, sample_weight=sw)
    t = tol(dtype)
    np.testing.assert_allclose(grads.loss, expected["loss"], **t)
    np.testing.assert_allclose(grads.params, expected["params"], **t)
    assert len(grads.delta) == len(layers)
    for k in range(len(layers)):
        np.testing.assert_allclose(grads.delta[k], expected["delta"][k], **t,
                                   err_msg=f"delta[{k}]")
    for k in range(len(layers) - 1):
        np.testing.assert_allclose(grads.weights[k], expected["dW"][k], **t,
                                   err_msg=f"weights[{k}]")
        np.testing.assert_allclose(grads.biases[k], expected["db"][k], **t,
                                   err_msg=f"biases[{k}]")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["probabilities", "one-hot"])
def test_cross_entropy_2d_targets(kind, dtype, make_net, random_params, rng,
                                  tol):
    layers = [5, 7, 4]
    net, oracle, X, _, _ = make_case(make_net, random_params, rng, layers,
                                     "tanh", "softmax", "cross_entropy",
                                     dtype, 19, False)
    Y = make_targets(rng, "cross_entropy", 19, 4, kind).astype(dtype)
    grads = net.backward(X, Y)
    expected = oracle.backward(X, Y)
    np.testing.assert_allclose(grads.loss, expected["loss"], **tol(dtype))
    np.testing.assert_allclose(grads.params, expected["params"], **tol(dtype))
    np.testing.assert_allclose(grads.delta[0], expected["delta"][0],
                               **tol(dtype))


@pytest.mark.parametrize("weighted", WEIGHTING)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", ["int64", "int32", "uint8"])
def test_cross_entropy_labels_equal_one_hot(label_dtype, dtype, weighted,
                                            make_net, random_params, rng,
                                            tol):
    layers = [5, 7, 4]
    net, _, X, labels, sw = make_case(make_net, random_params, rng, layers,
                                      "relu", "softmax", "cross_entropy",
                                      dtype, 23, weighted)
    labels = np.asarray(labels).astype(label_dtype)
    onehot = ref.one_hot(labels, 4).astype(dtype)
    g1 = net.backward(X, labels, sample_weight=sw)
    g2 = net.backward(X, onehot, sample_weight=sw)
    np.testing.assert_allclose(g1.loss, g2.loss, **tol(dtype))
    np.testing.assert_allclose(g1.params, g2.params, **tol(dtype))
    np.testing.assert_allclose(g1.delta[0], g2.delta[0], **tol(dtype))
    np.testing.assert_allclose(net.evaluate(X, labels, sample_weight=sw),
                               net.evaluate(X, onehot, sample_weight=sw),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_labels_as_list(dtype, make_net, random_params, rng, tol):
    net, _, X, labels, _ = make_case(make_net, random_params, rng, [3, 4, 3],
                                     "tanh", "softmax", "cross_entropy",
                                     dtype, 9, False)
    np.testing.assert_allclose(net.evaluate(X, list(labels)),
                               net.evaluate(X, labels), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_sample_weight_is_unweighted(dtype, make_net, random_params,
                                             rng, tol):
    net, _, X, Y, _ = make_case(make_net, random_params, rng, [4, 5, 3],
                                "gelu", "identity", "mse", dtype, 12, False)
    g1 = net.backward(X, Y)
    g2 = net.backward(X, Y, sample_weight=np.full(12, 7.5))
    np.testing.assert_allclose(g2.loss, g1.loss, **tol(dtype))
    np.testing.assert_allclose(g2.params, g1.params, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_sample_weight_is_repetition(dtype, make_net, random_params,
                                             rng, tol):
    # sample_weight = 2 on a row is the same as that row appearing twice.
    net, _, X, Y, _ = make_case(make_net, random_params, rng, [4, 5, 3],
                                "tanh", "sigmoid", "binary_cross_entropy",
                                dtype, 6, False)
    sw = np.array([1, 2, 1, 1, 3, 1])
    rows = np.repeat(np.arange(6), sw)
    g1 = net.backward(X, Y, sample_weight=sw)
    g2 = net.backward(X[rows], Y[rows])
    np.testing.assert_allclose(g1.loss, g2.loss, **tol(dtype))
    np.testing.assert_allclose(g1.params, g2.params, **tol(dtype))


# ---------------------------------------------------------------------------
# evaluate, loss values, and side effects.

@pytest.mark.parametrize("weighted", WEIGHTING)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output, loss", PAIRS)
def test_evaluate_equals_backward_loss(output, loss, dtype, weighted,
                                       make_net, random_params, rng, tol):
    net, oracle, X, Y, sw = make_case(make_net, random_params, rng,
                                      [4, 6, 3], "elu", output, loss, dtype,
                                      21, weighted)
    value = net.evaluate(X, Y, sample_weight=sw)
    assert isinstance(value, float)
    grads = net.backward(X, Y, sample_weight=sw)
    assert isinstance(grads.loss, float)
    np.testing.assert_allclose(value, grads.loss, **tol(dtype))
    np.testing.assert_allclose(value, oracle.loss(X, Y, sw), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_leaves_network_and_inputs_alone(dtype, make_net,
                                                  random_params, rng):
    net, _, X, Y, sw = make_case(make_net, random_params, rng, [4, 6, 3],
                                 "tanh", "identity", "mse", dtype, 8, True)
    params, X0, Y0 = net.params.copy(), X.copy(), Y.copy()
    net.backward(X, Y, sample_weight=sw)
    net.evaluate(X, Y, sample_weight=sw)
    assert np.array_equal(net.params, params)
    assert np.array_equal(X, X0) and np.array_equal(Y, Y0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_shapes_and_dtypes(dtype, make_net, random_params, rng):
    layers = [5, 8, 3, 2]
    net, _, X, Y, _ = make_case(make_net, random_params, rng, layers,
                                "tanh", "identity", "mse", dtype, 13, False)
    grads = net.backward(X, Y)
    assert grads.params.shape == (net.n_params,)
    assert grads.params.dtype == np.dtype(dtype)
    for k, n in enumerate(layers):
        assert grads.delta[k].shape == (13, n)
        assert grads.delta[k].dtype == np.dtype(dtype)
    for k in range(len(layers) - 1):
        assert grads.weights[k].shape == (layers[k], layers[k + 1])
        assert grads.biases[k].shape == (layers[k + 1],)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sample_backward(dtype, make_net, random_params, rng, tol):
    net, oracle, X, Y, _ = make_case(make_net, random_params, rng, [3, 4, 2],
                                     "softplus", "tanh", "mse", dtype, 1,
                                     False)
    grads = net.backward(X, Y)
    expected = oracle.backward(X, Y)
    np.testing.assert_allclose(grads.params, expected["params"], **tol(dtype))


# ---------------------------------------------------------------------------
# Central finite differences in float64 on tiny networks.

def numerical_gradient(f, x, h=1e-6):
    """Central differences of f() over every entry of x, perturbed in place."""
    g = np.empty(x.size)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        g[i] = (up - down) / (2 * h)
    return g.reshape(x.shape)


FD_TOL = dict(rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("weighted", WEIGHTING)
@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", ref.ACTIVATION_NAMES)
def test_finite_differences(activation, output, loss, weighted, make_net,
                            random_params, rng):
    layers = [3, 4, 3]  # 31 parameters
    net, _, X, Y, sw = make_case(make_net, random_params, rng, layers,
                                 activation, output, loss, "float64", 5,
                                 weighted)
    grads = net.backward(X, Y, sample_weight=sw)
    params = net.params  # a view: writing into it changes the network

    def E():
        return net.evaluate(X, Y, sample_weight=sw)

    np.testing.assert_allclose(grads.params, numerical_gradient(E, params),
                               **FD_TOL, err_msg="params")
    np.testing.assert_allclose(grads.delta[0], numerical_gradient(E, X),
                               **FD_TOL, err_msg="delta[0]")


@pytest.mark.parametrize("output, loss", PAIRS)
@pytest.mark.parametrize("activation", ref.ACTIVATION_NAMES)
def test_reference_passes_finite_differences(activation, output, loss, rng):
    # The oracle itself, so a disagreement points at the right side.
    layers = [3, 4, 3]
    weights = [rng.normal(0, 0.7, (a, b))
               for a, b in zip(layers[:-1], layers[1:])]
    biases = [rng.normal(0, 0.1, b) for b in layers[1:]]
    oracle = ref.MLP(weights, biases, [activation, output], loss)
    X = rng.normal(size=(5, 3))
    Y = make_targets(rng, loss, 5, 3)
    sw = rng.uniform(0.1, 3.0, size=5)
    np.testing.assert_allclose(oracle.backward(X, Y, sw)["params"],
                               oracle.numerical_gradient(X, Y, sw), **FD_TOL)


# ---------------------------------------------------------------------------
# Layout: one flat buffer, weights in layer order, then biases.

LAYOUTS = {"2-3-2-2": [2, 3, 2, 2], "5-1": [5, 1], "4-7-6-3": [4, 7, 6, 3]}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layers", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_network_layout(layers, dtype, make_net):
    net = make_net(layers, dtype=dtype)
    L = len(layers) - 1
    n_w = ref.n_weights(layers)
    assert net.layers == tuple(layers)
    assert isinstance(net.layers, tuple)
    assert len(net.activation) == L
    assert net.n_params == n_w + sum(layers[1:])
    assert net.params.shape == (net.n_params,)
    assert net.params.dtype == np.dtype(dtype)
    assert net.params.flags.c_contiguous
    assert len(net.weights) == len(net.biases) == L

    # Fill params with 0, 1, 2, ... so every entry says where it lives.
    net.params[...] = np.arange(net.n_params)
    pos = 0
    for k in range(L):
        shape = (layers[k], layers[k + 1])
        assert net.weights[k].shape == shape
        assert np.shares_memory(net.weights[k], net.params)
        expected = np.arange(pos, pos + shape[0] * shape[1]).reshape(shape)
        assert np.array_equal(net.weights[k], expected), f"weights[{k}]"
        pos += shape[0] * shape[1]
    for k in range(L):
        assert net.biases[k].shape == (layers[k + 1],)
        assert np.shares_memory(net.biases[k], net.params)
        expected = np.arange(pos, pos + layers[k + 1])
        assert np.array_equal(net.biases[k], expected), f"biases[{k}]"
        pos += layers[k + 1]
    assert pos == net.n_params


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_layout(dtype, make_net, random_params, rng):
    layers = [4, 7, 6, 3]
    net, _, X, Y, _ = make_case(make_net, random_params, rng, layers,
                                     "tanh", "softmax", "cross_entropy",
                                     dtype, 10, False)
    grads = net.backward(X, Y)
    assert grads.params.shape == net.params.shape
    assert grads.params.flags.c_contiguous
    pos = 0
    for k, w in enumerate(grads.weights):
        assert np.shares_memory(w, grads.params)
        assert np.array_equal(w.ravel(), grads.params[pos:pos + w.size])
        pos += w.size
    for k, b in enumerate(grads.biases):
        assert np.shares_memory(b, grads.params)
        assert np.array_equal(b, grads.params[pos:pos + b.size])
        pos += b.size
    assert pos == grads.params.size
    # The gradient must not alias the network's own parameters.
    assert not np.shares_memory(grads.params, net.params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_writing_params_changes_predictions(dtype, make_net, random_params,
                                            rng, tol):
    layers = [4, 5, 3]
    net = make_net(layers, activation="tanh", output="identity", dtype=dtype)
    X = rng.normal(size=(9, 4)).astype(dtype)
    before = net.predict(X)
    weights, biases = random_params(rng, layers, dtype)
    net.params[...] = ref.flatten(weights, biases)
    oracle = ref.MLP(weights, biases, ["tanh", "identity"])
    after = net.predict(X)
    assert not np.array_equal(before, after)
    np.testing.assert_allclose(after, oracle.predict(X), **tol(dtype))
    for k in range(2):
        np.testing.assert_array_equal(net.weights[k], weights[k])
        np.testing.assert_array_equal(net.biases[k], biases[k])


@pytest.mark.parametrize("dtype", DTYPES)
def test_writing_biases_view_changes_params(dtype, make_net):
    net = make_net([3, 4, 2], dtype=dtype)
    net.biases[1][...] = [1.5, -2.5]
    assert np.array_equal(net.params[-2:], [1.5, -2.5])
    net.weights[0][0, 0] = 3.25
    assert net.params[0] == 3.25


def test_network_attributes(make_net):
    net = make_net([3, 4, 5, 2], activation=["relu", "tanh"],
                   output="softmax", loss="cross_entropy", dtype=np.float64)
    assert net.activation == ("relu", "tanh", "softmax")
    assert net.loss == "cross_entropy"
    assert np.dtype(net.dtype) == np.float64
    net = make_net([3, 2], activation="elu", output="sigmoid",
                   loss="binary_cross_entropy")
    assert net.activation == ("sigmoid",)
    assert np.dtype(net.dtype) == np.float32  # the documented default


MEDIUM = {
    "37-64-33-5-m1000": ([37, 64, 33, 5], 1000),
    "129-67-31-3-m257": ([129, 67, 31, 3], 257),
    "8-8-8-m8": ([8, 8, 8], 8),
    "9-17-15-m7": ([9, 17, 15], 7),
    "16-48-24-m1": ([16, 48, 24], 1),
    "300-10-9-m33": ([300, 10, 9], 33),
    "1-300-2-m65": ([1, 300, 2], 65),
}


@pytest.mark.parametrize("weighted", WEIGHTING)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output, loss", [
    pytest.param("softmax", "cross_entropy", id="softmax-cross_entropy"),
    pytest.param("identity", "mse", id="identity-mse"),
])
@pytest.mark.parametrize("layers, m", MEDIUM.values(), ids=MEDIUM.keys())
def test_medium_networks(layers, m, output, loss, dtype, weighted, make_net,
                         random_params, rng, tol):
    # Large enough for the blocked and multi-threaded paths.
    net, oracle, X, Y, sw = make_case(make_net, random_params, rng, layers,
                                      "tanh", output, loss, dtype, m,
                                      weighted)
    grads = net.backward(X, Y, sample_weight=sw)
    expected = oracle.backward(X, Y, sample_weight=sw)
    t = tol(dtype)
    np.testing.assert_allclose(grads.loss, expected["loss"], **t)
    np.testing.assert_allclose(grads.params, expected["params"], **t)
    for k in range(len(layers)):
        np.testing.assert_allclose(grads.delta[k], expected["delta"][k], **t,
                                   err_msg=f"delta[{k}]")


# ---------------------------------------------------------------------------
# Numerical stability and input conversions.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output, loss", PAIRS)
def test_huge_logits_stay_finite(output, loss, dtype, make_net, rng, tol):
    # |net_L| in the hundreds: softmax / log-softmax with the max subtracted,
    # BCE from logits, sigmoid and softplus without overflow.
    W = np.array([[300.0, -300.0, 25.0], [-200.0, 100.0, 7.0]])
    b = np.zeros(3)
    net = make_net([2, 3], [W], [b], activation="identity", output=output,
                   loss=loss, dtype=dtype)
    oracle = ref.MLP([W], [b], [output], loss)
    X = np.array([[1.0, 1.0], [2.0, -1.0], [0.1, 0.0], [-1.0, -1.0]])
    Y = make_targets(rng, loss, 4, 3)
    grads = net.backward(X, Y)
    expected = oracle.backward(X, Y)
    assert np.isfinite(grads.loss)
    assert np.all(np.isfinite(grads.params))
    assert np.all(np.isfinite(grads.delta[0]))
    # The loss reaches ~1e5 for mse: compare relatively.
    np.testing.assert_allclose(grads.loss, expected["loss"],
                               rtol=tol(dtype)["rtol"])
    scale = np.abs(expected["params"]).max()
    np.testing.assert_allclose(grads.params, expected["params"],
                               rtol=tol(dtype)["rtol"],
                               atol=tol(dtype)["atol"] * max(scale, 1.0))


TARGET_CONVERSIONS = {
    "lists": lambda Y, sw: (Y.tolist(), sw.tolist()),
    "fortran": lambda Y, sw: (np.asfortranarray(Y), sw),
    "strided": lambda Y, sw: (np.repeat(Y, 2, axis=0)[::2],
                              np.repeat(sw, 3)[::3]),
    "readonly": lambda Y, sw: (_readonly(Y), _readonly(sw)),
    "float32": lambda Y, sw: (Y.astype(np.float32), sw.astype(np.float32)),
    "big-endian": lambda Y, sw: (Y.astype(Y.dtype.newbyteorder(">")),
                                 sw.astype(sw.dtype.newbyteorder(">"))),
}


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("convert", TARGET_CONVERSIONS.values(),
                         ids=TARGET_CONVERSIONS.keys())
def test_target_layouts(convert, dtype, make_net, random_params, rng):
    net, _, X, Y, sw = make_case(make_net, random_params, rng, [4, 5, 3],
                                 "tanh", "identity", "mse", dtype, 9, True)
    # Values that float32 holds exactly, so every conversion is lossless.
    Y = Y.astype(np.float32).astype(np.float64)
    sw = sw.astype(np.float32).astype(np.float64)
    expected = net.backward(X, Y.astype(dtype), sample_weight=sw)
    Y2, sw2 = convert(Y, sw)
    grads = net.backward(X, Y2, sample_weight=sw2)
    assert np.array_equal(grads.params, expected.params)
    assert grads.loss == expected.loss


@pytest.mark.parametrize("dtype", DTYPES)
def test_integer_targets_for_mse(dtype, make_net, random_params, rng):
    net, _, X, _, _ = make_case(make_net, random_params, rng, [4, 5, 3],
                                "tanh", "identity", "mse", dtype, 9, False)
    Y = rng.integers(-3, 4, size=(9, 3))
    g1 = net.backward(X, Y)
    g2 = net.backward(X, Y.astype(dtype))
    assert np.array_equal(g1.params, g2.params)


@pytest.mark.parametrize("scale", [1e300, 1e308, 1e-300],
                         ids=["1e300", "1e308", "1e-300"])
def test_sample_weight_scale_invariance(scale, make_net, random_params, rng,
                                        tol):
    # sum(s_i l_i) / sum(s_i) does not change when every s_i is scaled, even
    # where sum(s_i) overflows in floating point; refusing such weights with
    # a ValueError is also acceptable, silently returning NaN is not.
    net, _, X, Y, sw = make_case(make_net, random_params, rng, [4, 5, 3],
                                 "tanh", "softmax", "cross_entropy",
                                 "float64", 8, True)
    sw = sw / sw.max()
    expected = net.backward(X, Y, sample_weight=sw)
    try:
        grads = net.backward(X, Y, sample_weight=sw * scale)
    except ValueError as exc:
        assert "sample_weight" in str(exc)
        return
    np.testing.assert_allclose(grads.loss, expected.loss, **tol("float64"))
    np.testing.assert_allclose(grads.params, expected.params,
                               **tol("float64"))
