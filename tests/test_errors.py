"""Bad input raises ValueError or TypeError naming the argument, before any
work: the network's parameters are unchanged afterwards."""

import contextlib

import numpy as np
import pytest

import bpcore
import reference

VALUE_OR_TYPE = (ValueError, TypeError)
N_IN = 3


@contextlib.contextmanager
def unchanged(net):
    """Assert that the body leaves every parameter bit as it was."""
    before = net.params.copy()
    weights = [w.copy() for w in net.weights]
    yield
    assert np.array_equal(net.params, before)
    for w, w0 in zip(net.weights, weights):
        assert np.array_equal(w, w0)


def good_data(loss, m=6, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, N_IN))
    if loss == "cross_entropy":
        Y = rng.integers(0, n_out, size=m)
    elif loss == "binary_cross_entropy":
        Y = rng.uniform(size=(m, n_out))
    else:
        Y = rng.normal(size=(m, n_out))
    return X, Y


NETS = {
    "mse": dict(activation="tanh", output="identity", loss="mse"),
    "cross_entropy": dict(activation="tanh", output="softmax",
                          loss="cross_entropy"),
    "binary_cross_entropy": dict(activation="tanh", output="sigmoid",
                                 loss="binary_cross_entropy"),
}


def network(loss="mse", dtype="float64"):
    return bpcore.Network(layers=[N_IN, 4, 3], dtype=dtype, seed=0,
                          **NETS[loss])


def call(net, method, X, Y=None, sample_weight=None):
    if method == "predict":
        return net.predict(X)
    if method == "forward":
        return net.forward(X)
    if method == "backward":
        return net.backward(X, Y, sample_weight=sample_weight)
    if method == "evaluate":
        return net.evaluate(X, Y, sample_weight=sample_weight)
    if method == "step":
        return net.step(X, Y, bpcore.SGD(lr=0.1), sample_weight=sample_weight)
    raise AssertionError(method)


ALL_METHODS = ["predict", "forward", "backward", "evaluate", "step"]
TARGET_METHODS = ["backward", "evaluate", "step"]


def oracle(net):
    """The float64 NumPy reference network holding net's parameters."""
    return reference.MLP([w.copy() for w in net.weights],
                         [b.copy() for b in net.biases],
                         list(net.activation), net.loss)


def check_array(a, shape, dtype):
    """a is a finite ndarray of the given shape and dtype."""
    assert isinstance(a, np.ndarray)
    assert a.shape == shape and a.dtype == dtype
    assert np.isfinite(a).all()


def check_layers(got, want, m, net, tol):
    """got: one (m, n_k) array per layer, each close to want[k]."""
    assert len(got) == len(want) == len(net.layers)
    for k, n_k in enumerate(net.layers):
        check_array(got[k], (m, n_k), net.dtype)
        np.testing.assert_allclose(got[k], want[k], **tol(net.dtype))


def check_predict(net, ref, result, X, Y, sw, tol):
    check_array(result, (len(X), net.layers[-1]), net.dtype)
    np.testing.assert_allclose(result, ref.predict(X), **tol(net.dtype))


def check_forward(net, ref, result, X, Y, sw, tol):
    ref_net, ref_out = ref.forward(X)
    check_layers(result.net, ref_net, len(X), net, tol)
    check_layers(result.out, ref_out, len(X), net, tol)


def check_backward(net, ref, result, X, Y, sw, tol):
    want = ref.backward(X, Y, sample_weight=sw)
    assert result.loss == pytest.approx(want["loss"], rel=1e-10)
    check_array(result.params, net.params.shape, net.dtype)
    np.testing.assert_allclose(result.params, want["params"],
                               **tol(net.dtype))
    check_layers(result.delta, want["delta"], len(X), net, tol)


def check_evaluate(net, ref, result, X, Y, sw, tol):
    assert isinstance(result, float)
    assert result == pytest.approx(ref.loss(X, Y, sw), rel=1e-10)


def check_step(net, ref, result, X, Y, sw, tol):
    # the loss before the update, then SGD(lr=0.1)'s update, which lowers it
    check_evaluate(net, ref, result, X, Y, sw, tol)
    reference.step(ref, X, Y, reference.SGD(lr=0.1), sample_weight=sw)
    check_array(net.params, ref.params.shape, net.dtype)
    np.testing.assert_allclose(net.params, ref.params, **tol(net.dtype))
    assert net.evaluate(X, Y, sample_weight=sw) < result


CHECKS = {"predict": check_predict, "forward": check_forward,
          "backward": check_backward, "evaluate": check_evaluate,
          "step": check_step}


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("loss", NETS)
def test_good_data_is_accepted(loss, method, tol):
    # The baseline that every case below breaks in exactly one way: it is
    # accepted, and what it returns is what the NumPy oracle computes.
    net = network(loss)
    X, Y = good_data(loss)
    sw = np.ones(len(X))
    ref = oracle(net)
    before = net.params.copy()
    result = call(net, method, X, Y, sample_weight=sw)
    CHECKS[method](net, ref, result, X, Y, sw, tol)
    if method != "step":  # the other calls leave the parameters alone
        assert np.array_equal(net.params, before)


# ---------------------------------------------------------------------------
# Constructor arguments.

def _net(**kwargs):
    args = dict(layers=[3, 4, 2], seed=0)
    args.update(kwargs)
    return bpcore.Network(**args)


CONSTRUCTOR_CASES = {
    "layers-empty": (dict(layers=[]), ValueError, "layers"),
    "layers-one": (dict(layers=[3]), ValueError, "layers"),
    "layers-zero": (dict(layers=[3, 0, 2]), ValueError, "layers"),
    "layers-zero-input": (dict(layers=[0, 2]), ValueError, "layers"),
    "layers-zero-output": (dict(layers=[3, 0]), ValueError, "layers"),
    "layers-negative": (dict(layers=[3, -4, 2]), ValueError, "layers"),
    "layers-float": (dict(layers=[3, 4.5, 2]), VALUE_OR_TYPE, "layers"),
    "layers-string": (dict(layers="3,4,2"), VALUE_OR_TYPE, "layers"),
    "layers-none": (dict(layers=None), VALUE_OR_TYPE, "layers"),
    "layers-nested": (dict(layers=[[3, 4], 2]), VALUE_OR_TYPE, "layers"),
    "layers-beyond-int64": (dict(layers=[2 ** 63, 1]), ValueError, "layers"),
    "layers-too-many-params": (dict(layers=[2 ** 32 + 1, 2 ** 20]),
                               ValueError, "layers"),
    "activation-unknown": (dict(activation="sigmoidd"), ValueError,
                           "activation"),
    "activation-softmax-hidden": (dict(activation="softmax"), ValueError,
                                  "only an output"),
    "activation-list-too-short": (dict(layers=[3, 4, 5, 2],
                                       activation=["relu"]),
                                  ValueError, "activation"),
    "activation-list-too-long": (dict(activation=["relu", "tanh"]),
                                 ValueError, "activation"),
    "activation-list-unknown": (dict(layers=[3, 4, 5, 2],
                                     activation=["relu", "bogus"]),
                                ValueError, "activation"),
    "activation-not-a-name": (dict(activation=42), VALUE_OR_TYPE,
                              "activation"),
    "output-unknown": (dict(output="sofmax"), ValueError, "output"),
    "output-not-a-name": (dict(output=None), VALUE_OR_TYPE, "output"),
    "loss-unknown": (dict(loss="l2"), ValueError, "loss"),
    "loss-not-a-name": (dict(loss=3), VALUE_OR_TYPE, "loss"),
    "init-unknown": (dict(init="bogus_init"), ValueError, "init"),
    "dtype-float16": (dict(dtype="float16"), ValueError, "dtype"),
    "dtype-int32": (dict(dtype="int32"), ValueError, "dtype"),
    "dtype-unknown": (dict(dtype="float33"), VALUE_OR_TYPE, "dtype"),
    "dtype-numpy-int": (dict(dtype=np.int64), ValueError, "dtype"),
    "seed-string": (dict(seed="abc"), VALUE_OR_TYPE, "seed"),
    "ce-with-identity": (dict(output="identity", loss="cross_entropy"),
                         ValueError, "softmax"),
    "ce-with-sigmoid": (dict(output="sigmoid", loss="cross_entropy"),
                        ValueError, "softmax"),
    "bce-with-softmax": (dict(output="softmax", loss="binary_cross_entropy"),
                         ValueError, "sigmoid"),
    "bce-with-tanh": (dict(output="tanh", loss="binary_cross_entropy"),
                      ValueError, "sigmoid"),
}


@pytest.mark.parametrize("kwargs, exc, match", CONSTRUCTOR_CASES.values(),
                         ids=CONSTRUCTOR_CASES.keys())
def test_constructor(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _net(**kwargs)


@pytest.mark.parametrize("output, loss", [
    (o, "mse") for o in ("identity", "sigmoid", "tanh", "relu", "leaky_relu",
                         "elu", "softplus", "gelu", "softmax")
] + [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")])
def test_valid_output_loss_pairs_construct(output, loss):
    net = _net(output=output, loss=loss)
    assert net.loss == loss
    assert net.activation[-1] == output


# ---------------------------------------------------------------------------
# X: the same checks in every method that takes it.

def _strings(m):
    return np.array([["a", "b", "c"]] * m)


X_CASES = {
    "wrong-width": (lambda X: X[:, :2], ValueError),
    "too-wide": (lambda X: np.hstack([X, X]), ValueError),
    "3d": (lambda X: X[:, :, None], ValueError),
    "scalar": (lambda X: 1.0, ValueError),
    "nan": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 4,
                               np.nan, X), ValueError),
    "inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7,
                               np.inf, X), ValueError),
    "neg-inf": (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 0,
                                   -np.inf, X), ValueError),
    "empty": (lambda X: X[:0], ValueError),
    "no-columns": (lambda X: np.zeros((len(X), 0)), ValueError),
    "strings": (lambda X: _strings(len(X)), VALUE_OR_TYPE),
    "object-none": (lambda X: np.array([[1.0, None, 2.0]] * len(X),
                                       dtype=object), VALUE_OR_TYPE),
    "complex": (lambda X: X + 1j, VALUE_OR_TYPE),
    "none": (lambda X: None, TypeError),
    "ragged-list": (lambda X: [[1.0, 2.0, 3.0], [1.0, 2.0]], VALUE_OR_TYPE),
}


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("bad_X, exc", X_CASES.values(), ids=X_CASES.keys())
def test_bad_X(bad_X, exc, method):
    net = network()
    X, Y = good_data("mse")
    with unchanged(net), pytest.raises(exc, match="X"):
        call(net, method, bad_X(X), Y)


@pytest.mark.parametrize("method", ["predict", "forward"])
@pytest.mark.parametrize("x", [np.zeros(2), np.zeros(4), np.zeros(0)],
                         ids=["short", "long", "empty"])
def test_bad_1d_X(x, method):
    net = network()
    with pytest.raises(ValueError, match="X"):
        call(net, method, x)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_in_float32_X(dtype):
    # NaN must be caught whatever the conversion path.
    net = network(dtype=dtype)
    X, Y = good_data("mse")
    X = X.astype(np.float32)
    X[2, 1] = np.nan
    with unchanged(net), pytest.raises(ValueError, match="X"):
        net.step(X, Y, bpcore.SGD(lr=0.1))


# ---------------------------------------------------------------------------
# Y: shapes, finiteness and ranges per loss.

def _set(Y, index, value, dtype=None):
    Y = np.array(Y, dtype=dtype)
    Y[index] = value
    return Y


Y_CASES = {
    "mse-too-wide": ("mse", lambda Y: np.hstack([Y, Y[:, :1]]), ValueError),
    "mse-too-narrow": ("mse", lambda Y: Y[:, :2], ValueError),
    "mse-too-many-rows": ("mse", lambda Y: np.vstack([Y, Y[:1]]), ValueError),
    "mse-too-few-rows": ("mse", lambda Y: Y[:-1], ValueError),
    "mse-1d": ("mse", lambda Y: Y[:, 0], ValueError),
    "mse-3d": ("mse", lambda Y: Y[:, :, None], ValueError),
    "mse-nan": ("mse", lambda Y: _set(Y, (1, 2), np.nan), ValueError),
    "mse-inf": ("mse", lambda Y: _set(Y, (0, 0), np.inf), ValueError),
    "mse-strings": ("mse", lambda Y: np.full(Y.shape, "x"), VALUE_OR_TYPE),
    "mse-none": ("mse", lambda Y: None, TypeError),
    "ce-label-too-large": ("cross_entropy", lambda Y: _set(Y, 2, 3),
                           ValueError),
    "ce-label-negative": ("cross_entropy", lambda Y: _set(Y, 0, -1),
                          ValueError),
    "ce-label-fraction": ("cross_entropy",
                          lambda Y: _set(Y, 1, 1.5, dtype=np.float64),
                          ValueError),
    "ce-label-nan": ("cross_entropy",
                     lambda Y: _set(Y, 1, np.nan, dtype=np.float64),
                     ValueError),
    "ce-labels-too-many": ("cross_entropy", lambda Y: np.append(Y, 0),
                           ValueError),
    "ce-2d-wrong-width": ("cross_entropy",
                          lambda Y: np.eye(4)[np.asarray(Y)], ValueError),
    "ce-2d-negative": ("cross_entropy",
                       lambda Y: _set(np.eye(3)[np.asarray(Y)], 0,
                                      [-0.5, 1.0, 0.5]), ValueError),
    "ce-2d-nan": ("cross_entropy",
                  lambda Y: _set(np.eye(3)[np.asarray(Y)], (0, 0), np.nan),
                  ValueError),
    "bce-below-zero": ("binary_cross_entropy",
                       lambda Y: _set(Y, (0, 1), -0.1), ValueError),
    "bce-above-one": ("binary_cross_entropy",
                      lambda Y: _set(Y, (3, 2), 1.1), ValueError),
    "bce-nan": ("binary_cross_entropy", lambda Y: _set(Y, (3, 2), np.nan),
                ValueError),
    "bce-wrong-width": ("binary_cross_entropy", lambda Y: Y[:, :2],
                        ValueError),
}


@pytest.mark.parametrize("method", TARGET_METHODS)
@pytest.mark.parametrize("loss, bad_Y, exc", Y_CASES.values(),
                         ids=Y_CASES.keys())
def test_bad_Y(loss, bad_Y, exc, method):
    net = network(loss)
    X, Y = good_data(loss)
    with unchanged(net), pytest.raises(exc, match="Y"):
        call(net, method, X, bad_Y(Y))


# ---------------------------------------------------------------------------
# sample_weight.

SW_CASES = {
    "too-short": (lambda m: np.ones(m - 1), ValueError),
    "too-long": (lambda m: np.ones(m + 1), ValueError),
    "2d": (lambda m: np.ones((m, 1)), ValueError),
    "negative": (lambda m: _set(np.ones(m), 2, -0.5), ValueError),
    "nan": (lambda m: _set(np.ones(m), 1, np.nan), ValueError),
    "inf": (lambda m: _set(np.ones(m), 1, np.inf), ValueError),
    "all-zero": (lambda m: np.zeros(m), ValueError),
    "strings": (lambda m: np.full(m, "a"), VALUE_OR_TYPE),
    "scalar": (lambda m: 2.0, VALUE_OR_TYPE),
}


@pytest.mark.parametrize("method", TARGET_METHODS)
@pytest.mark.parametrize("bad_sw, exc", SW_CASES.values(),
                         ids=SW_CASES.keys())
def test_bad_sample_weight(bad_sw, exc, method):
    net = network()
    X, Y = good_data("mse")
    with unchanged(net), pytest.raises(exc, match="sample_weight"):
        call(net, method, X, Y, sample_weight=bad_sw(len(X)))


# ---------------------------------------------------------------------------
# Optimizers and thread counts.

@pytest.mark.parametrize("optimizer", [42, None, object(), np.zeros(3),
                                       bpcore.SGD],
                         ids=["int", "none", "object", "array", "class"])
def test_step_needs_an_optimizer(optimizer):
    net = network()
    X, Y = good_data("mse")
    with unchanged(net), pytest.raises(TypeError, match="optimizer"):
        net.step(X, Y, optimizer)


def test_step_unknown_optimizer_name():
    net = network()
    X, Y = good_data("mse")
    with unchanged(net), pytest.raises(VALUE_OR_TYPE, match="optimizer"):
        net.step(X, Y, "bogus_optimizer")


HYPER_CASES = {
    "sgd-lr-negative": (lambda: bpcore.SGD(lr=-0.1), "lr"),
    "sgd-lr-nan": (lambda: bpcore.SGD(lr=float("nan")), "lr"),
    "sgd-momentum-negative": (lambda: bpcore.SGD(momentum=-0.5), "momentum"),
    "sgd-weight-decay-negative": (lambda: bpcore.SGD(weight_decay=-1.0),
                                  "weight_decay"),
    "sgd-nesterov-without-momentum": (lambda: bpcore.SGD(nesterov=True),
                                      "nesterov|momentum"),
    "adam-lr-negative": (lambda: bpcore.Adam(lr=-1e-3), "lr"),
    "adam-beta1-one": (lambda: bpcore.Adam(betas=(1.0, 0.999)), "betas"),
    "adam-beta2-negative": (lambda: bpcore.Adam(betas=(0.9, -0.1)), "betas"),
    "adam-eps-negative": (lambda: bpcore.Adam(eps=-1e-8), "eps"),
    "adamw-weight-decay-negative": (lambda: bpcore.AdamW(weight_decay=-0.1),
                                    "weight_decay"),
}


@pytest.mark.parametrize("make_opt, match", HYPER_CASES.values(),
                         ids=HYPER_CASES.keys())
def test_bad_hyperparameters(make_opt, match):
    # Raised when the optimizer is built or, at the latest, on first use.
    net = network()
    X, Y = good_data("mse")
    with unchanged(net), pytest.raises(ValueError, match=match):
        net.step(X, Y, make_opt())


@pytest.mark.parametrize("n_threads, exc", [
    (0, ValueError), (1.5, VALUE_OR_TYPE), ("two", VALUE_OR_TYPE),
    (1025, ValueError), (16384, ValueError), (10**12, ValueError),
], ids=["zero", "float", "string", "1025", "16384", "huge"])
def test_bad_n_threads(n_threads, exc):
    """Up front, for every call: thousands of threads would each get a
    workspace (a MemoryError from fit) before any work."""
    net = network()
    X, Y = good_data("mse")
    for call in (lambda: net.predict(X, n_threads=n_threads),
                 lambda: net.fit(X, Y, epochs=1, n_threads=n_threads)):
        with pytest.raises(exc, match="n_threads"):
            call()


def test_many_threads_up_to_the_limit_work():
    net = network()
    X, Y = good_data("mse")
    expected = net.predict(X, n_threads=1)
    assert np.array_equal(net.predict(X, n_threads=1024), expected)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("n", [0, -3, 10**12],
                         ids=["zero", "negative", "huge"])
def test_bad_set_num_threads(n):
    with pytest.raises(ValueError, match="thread"):
        bpcore.set_num_threads(n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 3_000_001])
def test_finite_scan_finds_every_bad_value(dtype, n):
    # The scan behind input validation works on the exponent bits in
    # blocks (and with threads on large arrays): any NaN or infinity,
    # wherever it sits, is found; extremes of the finite range pass.
    from bpcore import _core
    a = np.ones(n, dtype=dtype)
    assert _core.all_finite(a)
    info = np.finfo(dtype)
    a[-1] = info.max
    a[0] = -info.smallest_subnormal
    assert _core.all_finite(a)
    for bad in (np.nan, np.inf, -np.inf):
        for pos in {0, n // 2, n - 1, min(n - 1, 4096)}:
            b = a.copy()
            b[pos] = bad
            assert not _core.all_finite(b), (bad, pos)
    net = bpcore.Network([1, 2], dtype=dtype)
    X = a.reshape(-1, 1).copy()
    X[n // 2, 0] = np.nan
    with pytest.raises(ValueError):
        net.predict(X, n_threads=2)
