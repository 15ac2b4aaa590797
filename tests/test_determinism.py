"""Bitwise reproducibility: thread counts and seeds; initial weight scales."""

import numpy as np
import pytest

import bpcore

# Every test here may change the global thread count; put it back after.
# unclamped_threads: 4 threads really run, even on 2 CPUs
pytestmark = pytest.mark.usefixtures("restore_threads", "unclamped_threads")

DTYPES = ("float32", "float64")
THREADS = (1, 2, 4)
LAYERS = [37, 64, 33, 5]
M = 1000

CONFIGS = {
    "tanh-softmax-ce": dict(activation="tanh", output="softmax",
                            loss="cross_entropy"),
    "relu-identity-mse": dict(activation="relu", output="identity",
                              loss="mse"),
    "gelu-sigmoid-bce": dict(activation="gelu", output="sigmoid",
                             loss="binary_cross_entropy"),
}


def data(config, seed=7):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, LAYERS[0]))
    if config["loss"] == "cross_entropy":
        Y = rng.integers(0, LAYERS[-1], size=M)
    elif config["loss"] == "binary_cross_entropy":
        Y = (rng.uniform(size=(M, LAYERS[-1])) < 0.3).astype(np.float64)
    else:
        Y = rng.normal(size=(M, LAYERS[-1]))
    sw = rng.uniform(0.5, 2.0, size=M)
    return X, Y, sw


def network(config, dtype, seed=3):
    return bpcore.Network(layers=LAYERS, dtype=dtype, seed=seed, **config)


def assert_fit_same_bits(make_net, make_opt, X, Y, **fit_kw):
    """A fresh network fitted on each of THREADS (passed as n_threads)
    ends with the same parameters and loss history as on one thread."""
    params, losses = {}, {}
    for n in THREADS:
        net = make_net()
        hist = net.fit(X, Y, n_threads=n, optimizer=make_opt(), **fit_kw)
        params[n], losses[n] = net.params.copy(), list(hist.loss)
    for n in THREADS[1:]:
        assert losses[n] == losses[1], n
        assert np.array_equal(params[n], params[1]), n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_predict_any_thread_count(config, dtype):
    net = network(config, dtype)
    X, _, _ = data(config)
    bpcore.set_num_threads(1)
    expected = net.predict(X)
    for n in THREADS:
        assert np.array_equal(net.predict(X, n_threads=n), expected), n
        bpcore.set_num_threads(n)
        assert np.array_equal(net.predict(X), expected), n
        assert np.array_equal(net.forward(X).out[-1], expected), n


@pytest.mark.parametrize("weighted", [False, True],
                         ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_backward_any_thread_count(config, dtype, weighted):
    net = network(config, dtype)
    X, Y, sw = data(config)
    sw = sw if weighted else None
    results = {}
    for n in THREADS:
        bpcore.set_num_threads(n)
        results[n] = (net.backward(X, Y, sample_weight=sw),
                      net.evaluate(X, Y, sample_weight=sw))
    g1, e1 = results[1]
    for n in THREADS[1:]:
        g, e = results[n]
        assert g.loss == g1.loss, n
        assert e == e1, n
        assert np.array_equal(g.params, g1.params), n
        for k in range(len(LAYERS)):
            assert np.array_equal(g.delta[k], g1.delta[k]), (n, k)


OPTIMIZERS = {
    "sgd": lambda: bpcore.SGD(lr=0.05),
    "sgd-momentum": lambda: bpcore.SGD(lr=0.05, momentum=0.9, nesterov=True,
                                       weight_decay=1e-3),
    "adam": lambda: bpcore.Adam(lr=1e-3, weight_decay=1e-3),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(),
                         ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_step_any_thread_count(config, make_opt, dtype):
    X, Y, sw = data(config)
    params, losses = {}, {}
    for n in THREADS:
        bpcore.set_num_threads(n)
        net, opt = network(config, dtype), make_opt()
        losses[n] = [net.step(X, Y, opt),
                     net.step(X[:500], Y[:500], opt, sample_weight=sw[:500]),
                     net.step(X, Y, opt)]
        params[n] = net.params.copy()
    for n in THREADS[1:]:
        assert losses[n] == losses[1], n
        assert np.array_equal(params[n], params[1]), n


def test_num_threads_round_trip(restore_threads):
    for n in (1, 3, 2):
        bpcore.set_num_threads(n)
        assert bpcore.get_num_threads() == n
    assert restore_threads >= 1


def test_predict_n_threads_leaves_global_setting():
    net = network(CONFIGS["tanh-softmax-ce"], "float32")
    bpcore.set_num_threads(2)
    net.predict(np.zeros((3, LAYERS[0])), n_threads=1)
    assert bpcore.get_num_threads() == 2


# ---------------------------------------------------------------------------
# Seeds.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", ["auto", "xavier", "he", "lecun", "normal",
                                  "uniform"])
def test_same_seed_same_params(init, dtype):
    a = bpcore.Network(layers=[6, 9, 4], init=init, dtype=dtype, seed=42)
    b = bpcore.Network(layers=[6, 9, 4], init=init, dtype=dtype, seed=42)
    assert np.array_equal(a.params, b.params)
    c = bpcore.Network(layers=[6, 9, 4], init=init, dtype=dtype, seed=43)
    assert not np.array_equal(a.params, c.params)


def test_generator_seed():
    a = bpcore.Network(layers=[6, 9, 4], seed=np.random.default_rng(5))
    b = bpcore.Network(layers=[6, 9, 4], seed=np.random.default_rng(5))
    assert np.array_equal(a.params, b.params)
    c = bpcore.Network(layers=[6, 9, 4], seed=np.random.default_rng(6))
    assert not np.array_equal(a.params, c.params)


def test_no_seed_differs():
    a = bpcore.Network(layers=[6, 9, 4])
    b = bpcore.Network(layers=[6, 9, 4])
    assert not np.array_equal(a.params, b.params)


# ---------------------------------------------------------------------------
# Initial weight scales (loose statistics on 400-wide layers).

def excess_kurtosis(w):
    z = (w - w.mean()) / w.std()
    return float((z ** 4).mean() - 3.0)


def check_std(w, std):
    assert abs(w.std() / std - 1.0) < 0.03, (w.std(), std)
    # mean within 5 standard errors of zero
    assert abs(w.mean()) < 5 * std / np.sqrt(w.size), w.mean()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init, activation", [
    ("xavier", "relu"), ("auto", "tanh"), ("auto", "sigmoid"),
    ("auto", "identity"),
])
def test_xavier_uniform(init, activation, dtype):
    net = bpcore.Network(layers=[400, 400, 400], activation=activation,
                         output=activation, init=init, dtype=dtype, seed=0)
    bound = np.sqrt(6.0 / (400 + 400))
    for w in net.weights:
        w = np.asarray(w, dtype=np.float64)
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.99 * bound
        check_std(w, bound / np.sqrt(3.0))
        assert abs(excess_kurtosis(w) + 1.2) < 0.1  # uniform


def test_xavier_rectangular():
    net = bpcore.Network(layers=[100, 700], init="xavier", seed=0,
                         dtype="float64")
    bound = np.sqrt(6.0 / 800)
    assert np.abs(net.weights[0]).max() <= bound
    check_std(net.weights[0], bound / np.sqrt(3.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init, activation", [
    ("he", "tanh"), ("he", "relu"), ("auto", "relu"), ("auto", "leaky_relu"),
])
def test_he_scale(init, activation, dtype):
    # fan_in = n_k, the rows of weights[k]; rectangular layers tell it from
    # fan_out: std sqrt(2/200) = 0.1 vs sqrt(2/400) = 0.071.
    net = bpcore.Network(layers=[200, 400, 800], activation=activation,
                         output=activation, init=init, dtype=dtype, seed=0)
    for w in net.weights:
        fan_in = w.shape[0]
        check_std(np.asarray(w, dtype=np.float64), np.sqrt(2.0 / fan_in))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lecun_scale(dtype):
    net = bpcore.Network(layers=[200, 400, 800], init="lecun", dtype=dtype,
                         seed=0)
    for w in net.weights:
        check_std(np.asarray(w, dtype=np.float64), np.sqrt(1.0 / w.shape[0]))


@pytest.mark.parametrize("init, kurtosis", [("normal", 0.0),
                                            ("uniform", -1.2)])
def test_normal_and_uniform_shapes(init, kurtosis):
    net = bpcore.Network(layers=[400, 400], init=init, seed=0,
                         dtype="float64")
    w = net.weights[0]
    assert w.std() > 0
    assert abs(excess_kurtosis(w) - kurtosis) < 0.1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", ["auto", "xavier", "he", "lecun", "normal",
                                  "uniform"])
def test_biases_start_at_zero(init, dtype):
    net = bpcore.Network(layers=[5, 7, 3], init=init, dtype=dtype, seed=0)
    for b in net.biases:
        assert np.array_equal(b, np.zeros_like(b))
    for w in net.weights:
        assert np.all(np.isfinite(w)) and np.any(w != 0)


# ---------------------------------------------------------------------------
# fit: same seed, same data, same options -> the same bits for any threads.

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_fit_any_thread_count(config, dtype):
    X, Y, sw = data(config)
    params, losses = {}, {}
    for n in THREADS:
        bpcore.set_num_threads(n)
        net = network(config, dtype)
        hist = net.fit(X, Y, epochs=3, batch_size=64, shuffle=True,
                       sample_weight=sw,
                       optimizer=bpcore.SGD(lr=0.05, momentum=0.9))
        params[n], losses[n] = net.params.copy(), list(hist.loss)
    for n in THREADS[1:]:
        assert losses[n] == losses[1], n
        assert np.array_equal(params[n], params[1]), n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fit_any_thread_count_wide_layers(opt, dtype):
    # layers 1024 and 2048 wide: a team then hands out the columns of the
    # big products in chunks as the threads come for them (product_chunks
    # in csrc/src/gemm/product.h), and applies the epilogues (the update
    # among them) after a barrier over whole rows; which thread takes
    # which chunk or row must not show in the bits (a build whose update
    # skipped the last row failed here)
    layers = [300, 2048, 1024, 10]
    rng = np.random.default_rng(5)
    X = rng.normal(size=(256, layers[0]))
    Y = rng.integers(0, 10, size=256)
    assert_fit_same_bits(
        lambda: bpcore.Network(layers=layers, dtype=dtype, seed=3,
                               activation="relu", output="softmax",
                               loss="cross_entropy"),
        lambda: (bpcore.SGD(lr=0.01, momentum=0.9) if opt == "sgd"
                 else bpcore.Adam(lr=1e-3)),
        X, Y, epochs=2, batch_size=128, shuffle=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [10, 13, 64])
@pytest.mark.parametrize("config", ["tanh-softmax-ce", "relu-identity-mse"])
def test_fit_any_thread_count_wide_output(config, batch, dtype):
    # an output layer of 12 takes the kernel's product; narrower than the
    # batch (13, 64), the output layer and the input delta below it are
    # cut by rows with no barrier between them (out_rows_own in
    # csrc/src/internal.h); at batch 10 they are not
    layers = [37, 64, 33, 12]
    cfg = CONFIGS[config]
    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, layers[0]))
    Y = (rng.integers(0, 12, size=300) if cfg["loss"] == "cross_entropy"
         else rng.normal(size=(300, 12)))
    sw = rng.uniform(0.5, 2.0, size=300)
    assert_fit_same_bits(
        lambda: bpcore.Network(layers=layers, dtype=dtype, seed=3,
                               dropout=0.2, **cfg),
        lambda: bpcore.Adam(lr=1e-3),
        X, Y, epochs=2, batch_size=batch, shuffle=True, sample_weight=sw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [16, 37, 100])
def test_fit_any_thread_count_cut_by_samples(batch, dtype):
    # a small network (weights within 512 KB) and at least 8 rows per thread:
    # a team cuts the batch by samples, each thread taking its own rows
    # through the forward pass, the loss and the input deltas, then the
    # weight gradients by entries (train_by_samples in
    # csrc/src/internal.h).  Unshuffled class labels: each thread writes
    # the one-hot rows its loss reads; 37 and 100 rows split unevenly, and
    # the last batch is short; dropout's masks follow the row
    layers = [37, 64, 33, 12]
    rng = np.random.default_rng(13)
    X = rng.normal(size=(333, layers[0]))
    Y = rng.integers(0, 12, size=333)
    assert_fit_same_bits(
        lambda: bpcore.Network(layers=layers, dtype=dtype, seed=3,
                               activation="tanh", output="softmax",
                               loss="cross_entropy", dropout=0.1),
        lambda: bpcore.SGD(lr=0.05, momentum=0.9),
        X, Y, epochs=2, batch_size=batch, shuffle=False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_n_threads_argument(dtype):
    config = CONFIGS["tanh-softmax-ce"]
    X, Y, _ = data(config)
    results = []
    for n in THREADS:
        net = network(config, dtype)
        net.fit(X, Y, epochs=2, batch_size=100, optimizer=bpcore.Adam(),
                n_threads=n)
        results.append(net.params.copy())
    for n, p in zip(THREADS[1:], results[1:]):
        assert np.array_equal(p, results[0]), n


def test_fit_same_seed_same_result():
    config = CONFIGS["relu-identity-mse"]
    X, Y, _ = data(config)
    nets = [network(config, "float32", seed=11) for _ in range(2)]
    for net in nets:
        net.fit(X[:300], Y[:300], epochs=2, batch_size=16, shuffle=True,
                optimizer=bpcore.SGD(lr=0.01))
    assert np.array_equal(nets[0].params, nets[1].params)
    other = network(config, "float32", seed=12)
    other.fit(X[:300], Y[:300], epochs=2, batch_size=16, shuffle=True,
              optimizer=bpcore.SGD(lr=0.01))
    assert not np.array_equal(nets[0].params, other.params)
