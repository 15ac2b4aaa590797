"""Dropout: masks as documented (a pure-Python twin of the hash), loss and
gradients against a NumPy reference and PyTorch autograd with the same
masks, fit trajectories against the reference, bits independent of the
thread count on every training path, predict untouched, files, errors."""
import copy
import pickle

import numpy as np
import pytest

import bpcore
import _ref_train as R

CASES = [  # layers, hidden activation, output, loss, rates
    ([3, 6, 5, 2], "tanh", "identity", "mse", 0.3),
    ([4, 7, 6, 3], "sigmoid", "softmax", "cross_entropy", [0.5, 0.2]),
    ([3, 9, 2], "elu", "sigmoid", "mse", 0.25),
    ([5, 12, 10, 4], "relu", "identity", "mse", [0.0, 0.4]),
]
IDS = ["tanh-mse", "sigmoid-ce", "elu-1hidden", "relu-rate0"]


def _net(layers, act, out, loss, rates, seed=0, dtype="float64"):
    return bpcore.Network(layers, activation=act, output=out, loss=loss,
                          dtype=dtype, seed=seed, dropout=rates)


def _data(rng, layers, loss, m):
    X = rng.normal(size=(m, layers[0]))
    if loss == "cross_entropy":
        Y = np.eye(layers[-1])[rng.integers(0, layers[-1], m)]
    else:
        Y = rng.uniform(0.1, 0.9, size=(m, layers[-1]))
    return X, Y


def _rates(net):
    return list(net.dropout)


def test_masks_follow_the_documented_hash(rng):
    net = _net([3, 6, 5, 2], "tanh", "identity", "mse", [0.3, 0.6])
    X = rng.normal(size=(7, 3))
    tr = net.forward(X, training=True, dropout_seed=12345)
    assert tr.dropout_seed == 12345
    want = R.mask_factors(12345, 7, net.layers, _rates(net))
    assert tr.masks[0] is None and tr.masks[-1] is None
    for k in (1, 2):
        np.testing.assert_array_equal(tr.masks[k], want[k])
        # out[k] holds the dropped outputs (the core's tanh may differ
        # from numpy's in the last bit)
        np.testing.assert_allclose(
            tr.out[k], np.tanh(tr.net[k]) * tr.masks[k], rtol=1e-14,
            atol=1e-15)
        assert ((tr.out[k] == 0) | (tr.masks[k] != 0)).all()


def test_mask_rate_is_about_right():
    net = _net([2, 400, 400, 1], "relu", "identity", "mse", [0.2, 0.7])
    tr = net.forward(np.zeros((50, 2)), training=True, dropout_seed=3)
    assert abs((tr.masks[1] == 0).mean() - 0.2) < 0.01
    assert abs((tr.masks[2] == 0).mean() - 0.7) < 0.01


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "sw"])
def test_backward_equals_reference(rng, case, weighted):
    layers, act, out, loss, rates = case
    net = _net(layers, act, out, loss, rates)
    X, Y = _data(rng, layers, loss, 9)
    sw = rng.uniform(0.2, 2.0, 9) if weighted else None
    g = net.backward(X, Y, sample_weight=sw, training=True, dropout_seed=77)
    masks = R.mask_factors(77, 9, net.layers, _rates(net))
    E, dW, db, deltas = R.loss_grad(
        [w.astype(float) for w in net.weights],
        [b.astype(float) for b in net.biases], net.activation, loss, X, Y,
        sw, masks)
    assert g.loss == pytest.approx(E, rel=1e-12)
    for k in range(len(dW)):
        np.testing.assert_allclose(g.weights[k], dW[k], rtol=1e-10,
                                   atol=1e-13)
        np.testing.assert_allclose(g.biases[k], db[k], rtol=1e-10,
                                   atol=1e-13)
    for k in range(len(deltas)):
        np.testing.assert_allclose(g.delta[k], deltas[k], rtol=1e-10,
                                   atol=1e-13)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward_equals_torch_autograd(rng, case):
    torch = pytest.importorskip("torch")
    layers, act, out, loss, rates = case
    net = _net(layers, act, out, loss, rates)
    X, Y = _data(rng, layers, loss, 8)
    g = net.backward(X, Y, training=True)  # seed from the generator
    assert g.dropout_seed is not None
    Ws = [torch.tensor(w, requires_grad=True) for w in net.weights]
    bs = [torch.tensor(b, requires_grad=True) for b in net.biases]
    fns = {"tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "relu": torch.relu, "elu": torch.nn.functional.elu,
           "identity": lambda z: z}
    h = torch.tensor(X)
    L = len(Ws)
    for k in range(L):
        z = h @ Ws[k] + bs[k]
        if k < L - 1:
            h = fns[act](z) * torch.tensor(g.masks[k + 1])
        elif out == "softmax":
            h = z
        else:
            h = fns[out](z)
    Yt = torch.tensor(Y)
    if loss == "mse":
        E = 0.5 * ((h - Yt) ** 2).sum(1).mean()
    else:
        E = -(Yt * torch.log_softmax(h, 1)).sum(1).mean()
    E.backward()
    assert g.loss == pytest.approx(E.item(), rel=1e-12)
    for k in range(L):
        np.testing.assert_allclose(g.weights[k], Ws[k].grad.numpy(),
                                   rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(g.biases[k], bs[k].grad.numpy(),
                                   rtol=1e-10, atol=1e-13)


def test_inference_ignores_dropout(rng):
    a = _net([3, 6, 5, 2], "tanh", "identity", "mse", 0.5)
    b = _net([3, 6, 5, 2], "tanh", "identity", "mse", 0.0)
    X, Y = _data(rng, a.layers, "mse", 20)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    for k in range(4):
        np.testing.assert_array_equal(a.forward(X).out[k], b.forward(X).out[k])
    assert a.forward(X).masks is None
    assert a.evaluate(X, Y) == b.evaluate(X, Y)
    assert a.backward(X, Y).loss == b.backward(X, Y).loss
    # training=True on a network without dropout changes nothing either
    tr = b.forward(X, training=True)
    assert tr.masks is None
    np.testing.assert_array_equal(tr.out[-1], b.predict(X))


def _ref_fit(net, X, Y, epochs, B, shuffle, opt_kw, sw=None):
    """The reference replaying fit: per epoch a permutation (if shuffle),
    then a dropout seed, from a copy of the network's generator."""
    rng = copy.deepcopy(net._rng)
    Ws = [w.astype(float) for w in net.weights]
    bs = [b.astype(float) for b in net.biases]
    L = len(Ws)
    opt = R.Opt(n_w=L, **opt_kw)
    m = X.shape[0]
    for _ in range(epochs):
        order = rng.permutation(m) if shuffle else np.arange(m)
        dseed = int(rng.integers(0, 2**64, dtype=np.uint64))
        for b in range(-(-m // B)):
            idx = order[b * B:(b + 1) * B]
            masks = R.mask_factors(R.batch_seed(dseed, b), len(idx),
                                   net.layers, _rates(net))
            _, dW, db, _ = R.loss_grad(Ws, bs, net.activation, net.loss,
                                       X[idx], Y[idx],
                                       None if sw is None else sw[idx], masks)
            new = opt.step(Ws + bs, dW + db)
            Ws, bs = new[:L], new[L:]
    return np.concatenate([w.ravel() for w in Ws] + list(bs))


@pytest.mark.parametrize("layers,B", [
    ([3, 6, 5, 2], 4),        # tiny: the lanes path, routed to the general one
    ([3, 6, 5, 2], 1),        # tiny online: routed too
    ([10, 16, 12, 3], 8),     # the general path with products
], ids=["tiny-batch", "tiny-online", "general"])
def test_fit_equals_reference(rng, layers, B):
    net = _net(layers, "tanh", "identity", "mse", [0.3, 0.5], seed=4)
    X, Y = _data(rng, layers, "mse", 13)
    sw = rng.uniform(0.5, 1.5, 13)
    kw = dict(kind="sgd", lr=0.05, momentum=0.9)
    want = _ref_fit(net, X, Y, 2, B, True, kw, sw)
    net.fit(X, Y, epochs=2, batch_size=B, sample_weight=sw,
            optimizer=bpcore.SGD(lr=0.05, momentum=0.9))
    np.testing.assert_allclose(net.params, want, rtol=1e-10, atol=1e-12)


def test_step_uses_batch_zero_masks(rng):
    net = _net([3, 6, 5, 2], "tanh", "identity", "mse", 0.4)
    X, Y = _data(rng, net.layers, "mse", 6)
    twin = copy.deepcopy(net)
    seed = int(copy.deepcopy(net._rng).integers(0, 2**64, dtype=np.uint64))
    g = twin.backward(X, Y, training=True,
                      dropout_seed=R.batch_seed(seed, 0))
    loss = net.step(X, Y, bpcore.SGD(lr=0.1))
    assert loss == g.loss  # same masks, same bits
    # (the core rounds p - lr g once, with a fused multiply-add)
    np.testing.assert_allclose(net.params, twin.params - 0.1 * g.params,
                               rtol=1e-15, atol=1e-16)


def test_full_batch_fit_equals_step(rng):
    a = _net([3, 6, 5, 2], "tanh", "identity", "mse", 0.4)
    b = copy.deepcopy(a)
    X, Y = _data(rng, a.layers, "mse", 10)
    a.fit(X, Y, epochs=1, batch_size=None, shuffle=False,
          optimizer=bpcore.SGD(lr=0.1))
    b.step(X, Y, bpcore.SGD(lr=0.1))
    np.testing.assert_array_equal(a.params, b.params)


@pytest.mark.parametrize("layers,B,opt", [
    ([4, 6, 5, 3], 1, "sgd"),
    ([4, 6, 5, 3], 16, "adam"),
    ([20, 64, 48, 3], 64, "sgd"),
    ([20, 64, 48, 3], 200, "adamw"),
], ids=["tiny-online", "tiny-batch", "general", "general-fullish"])
def test_fit_bits_do_not_depend_on_threads(rng, layers, B, opt):
    X, Y = _data(rng, layers, "cross_entropy", 300)
    labels = Y.argmax(1)
    params = []
    for nt in (1, 2):
        net = bpcore.Network(layers, activation="relu", output="softmax",
                             loss="cross_entropy", seed=5, dropout=0.3)
        net.fit(X, labels, epochs=2, batch_size=B, optimizer=opt,
                n_threads=nt)
        params.append(net.params.copy())
    np.testing.assert_array_equal(params[0], params[1])
    ref = bpcore.Network(layers, activation="relu", output="softmax",
                         loss="cross_entropy", seed=5)
    ref.fit(X, labels, epochs=2, batch_size=B, optimizer=opt)
    assert not np.array_equal(ref.params, params[0])  # dropout did act


def test_same_seed_same_result_and_no_dropout_unchanged(rng):
    X, Y = _data(rng, [3, 6, 2], "mse", 40)
    a = _net([3, 6, 2], "tanh", "identity", "mse", 0.5, seed=9)
    b = _net([3, 6, 2], "tanh", "identity", "mse", 0.5, seed=9)
    a.fit(X, Y, epochs=3)
    b.fit(X, Y, epochs=3)
    np.testing.assert_array_equal(a.params, b.params)


def test_files_and_copies_keep_dropout(tmp_path):
    net = _net([3, 6, 5, 2], "tanh", "identity", "mse", [0.1, 0.35])
    net.save(tmp_path / "m.safetensors")
    for other in (bpcore.load(tmp_path / "m.safetensors"),
                  pickle.loads(pickle.dumps(net)), copy.deepcopy(net),
                  bpcore.Network.from_bytes(net.to_bytes())):
        assert other.dropout == (0.1, 0.35)
    plain = _net([3, 6, 2], "tanh", "identity", "mse", 0.0)
    assert b'"dropout"' not in plain.to_bytes()[:2000]


@pytest.mark.parametrize("text", ['[0.5]', '[0.5, 1.0]', '[0.5, -0.1]',
                                  '"0.5"', '[0.5, true]', '[0.5, NaN]'])
def test_bad_dropout_in_file(text):
    import json
    import struct
    net = _net([3, 6, 5, 2], "tanh", "identity", "mse", [0.1, 0.35])
    data = net.to_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    head["__metadata__"]["dropout"] = text
    raw = json.dumps(head).encode()
    raw += b" " * (-len(raw) % 8)
    with pytest.raises(bpcore.FormatError, match="dropout"):
        bpcore.Network.from_bytes(struct.pack("<Q", len(raw)) + raw
                                  + data[8 + n:])


@pytest.mark.parametrize("rates,exc,match", [
    (1.0, ValueError, r"dropout must be in \[0, 1\)"),
    (-0.1, ValueError, "dropout must be in"),
    (float("nan"), ValueError, "dropout must be in"),
    ("0.5", TypeError, "dropout must be"),
    (True, TypeError, "dropout must be"),
    ([0.1], ValueError, "lists 1 rates; the network has 2 hidden"),
    ([0.1, 1.5], ValueError, r"dropout\[1\] must be in"),
    ([0.1, None], TypeError, r"dropout\[1\]"),
])
def test_bad_dropout_rates(rates, exc, match):
    with pytest.raises(exc, match=match):
        bpcore.Network([3, 6, 5, 2], dropout=rates)


def test_dropout_needs_hidden_layers():
    with pytest.raises(ValueError, match="needs hidden layers"):
        bpcore.Network([3, 2], dropout=0.5)
    assert bpcore.Network([3, 2], dropout=0.0).dropout == ()


def test_bad_training_arguments(rng):
    net = _net([3, 6, 2], "tanh", "identity", "mse", 0.5)
    X, Y = _data(rng, net.layers, "mse", 4)
    before = net.params.copy()
    state = copy.deepcopy(net._rng.bit_generator.state)
    with pytest.raises(TypeError, match="training must be a bool"):
        net.forward(X, training="yes")
    with pytest.raises(ValueError, match="dropout_seed must be >= 0"):
        net.backward(X, Y, training=True, dropout_seed=-1)
    with pytest.raises(ValueError, match="dropout_seed must be < 2"):
        net.forward(X, training=True, dropout_seed=2**64)
    with pytest.raises(TypeError, match="dropout_seed must be an integer"):
        net.forward(X, training=True, dropout_seed=1.5)
    np.testing.assert_array_equal(net.params, before)
    assert net._rng.bit_generator.state == state
