"""The losses mae, huber and poisson: values and gradients against a plain
NumPy reference (checked itself by finite differences) and PyTorch autograd
(skipped without torch), with sample weights, on the general and the tiny
(narrow network) paths and in training; bad targets and options rejected
before any work; huber_delta kept by the model file."""
import copy
import json
import pickle
import struct

import numpy as np
import pytest

import bpcore
import reference as R


# -- a NumPy reference sharing no code with bpcore --------------------------

def _loss_rows(name, out, Y, delta):
    """Per-sample loss and dl/dout (summed over the outputs of a sample)."""
    g = out - Y
    if name == "mae":
        return np.abs(g).sum(axis=1), np.sign(g)
    if name == "huber":
        a = np.abs(g)
        l = np.where(a < delta, 0.5 * g * g, delta * (a - 0.5 * delta))
        return l.sum(axis=1), np.clip(g, -delta, delta)
    if name == "poisson":  # out is the log rate
        return (np.exp(out) - Y * out).sum(axis=1), np.exp(out) - Y
    raise ValueError(name)


def ref_backward(weights, biases, acts, name, X, Y, sw=None, delta=1.0):
    """(loss, flat gradient) of E = sum_i s_i l_i / sum_i s_i."""
    net, out = [X], [X]
    for W, b, a in zip(weights, biases, acts):
        z = out[-1] @ W + b
        net.append(z)
        out.append(R.activate(a, z))
    l, dout = _loss_rows(name, out[-1], Y, delta)
    m = X.shape[0]
    w = np.full(m, 1.0 / m) if sw is None else sw / sw.sum()
    loss = float((w * l).sum())
    d = R.activation_backward(acts[-1], net[-1], w[:, None] * dout)
    L = len(weights)
    dW, db = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        dW[k] = out[k].T @ d
        db[k] = d.sum(axis=0)
        if k > 0:
            d = R.activation_backward(acts[k - 1], net[k], d @ weights[k].T)
    return loss, R.flatten(dW, db)


def _targets(name, rng, m, n):
    if name == "poisson":
        return rng.poisson(1.5, size=(m, n)).astype(np.float64)
    return rng.normal(size=(m, n))


CASES = [
    ("mae", "identity"), ("mae", "tanh"), ("mae", "sigmoid"),
    ("mae", "softmax"), ("huber", "identity"), ("huber", "tanh"),
    ("huber", "softmax"), ("poisson", "identity"),
]


def _net(layers, name, output, rng, delta=0.7, dtype="float64"):
    net = bpcore.Network(layers, activation="tanh", output=output, loss=name,
                         dtype=dtype, seed=0, huber_delta=delta)
    ws, bs = [], []
    for k, W in enumerate(net.weights):
        W[...] = rng.normal(0, 1.0 / np.sqrt(W.shape[0]), W.shape)
        net.biases[k][...] = rng.normal(0, 0.3, net.biases[k].shape)
        ws.append(W.astype(np.float64))
        bs.append(net.biases[k].astype(np.float64))
    return net, ws, bs


@pytest.mark.parametrize("name,output", CASES)
@pytest.mark.parametrize("layers", [[3, 4, 2], [5, 40, 70, 3]],
                         ids=["tiny", "wide"])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_and_gradient_match_numpy(name, output, layers, weighted, rng):
    net, ws, bs = _net(layers, name, output, rng)
    m = 37
    X = rng.normal(size=(m, layers[0]))
    Y = _targets(name, rng, m, layers[-1])
    sw = rng.uniform(0.2, 3.0, m) if weighted else None
    acts = list(net.activation)
    want_loss, want_grad = ref_backward(ws, bs, acts, name, X, Y, sw, 0.7)
    g = net.backward(X, Y, sample_weight=sw)
    np.testing.assert_allclose(g.loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(g.params, want_grad, rtol=1e-10, atol=1e-13)
    assert net.evaluate(X, Y, sample_weight=sw) == pytest.approx(
        want_loss, rel=1e-12)


@pytest.mark.parametrize("name,output", CASES)
def test_reference_matches_finite_differences(name, output, rng):
    """The reference itself, against central differences (away from the
    kinks of mae and huber, which random data avoids)."""
    net, ws, bs = _net([3, 5, 2], name, output, rng)
    X = rng.normal(size=(11, 3))
    Y = _targets(name, rng, 11, 2)
    sw = rng.uniform(0.5, 2.0, 11)
    acts = list(net.activation)
    _, grad = ref_backward(ws, bs, acts, name, X, Y, sw, 0.7)
    flat = R.flatten(ws, bs)
    layers = [3, 5, 2]
    h = 1e-6
    num = np.empty_like(flat)
    for i in range(flat.size):
        p = flat.copy()
        p[i] += h
        up = ref_backward(*R.unflatten(p, layers), acts, name, X, Y, sw, 0.7)[0]
        p[i] -= 2 * h
        down = ref_backward(*R.unflatten(p, layers), acts, name, X, Y, sw,
                            0.7)[0]
        num[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)
    # and bpcore's gradient equals the reference
    np.testing.assert_allclose(net.backward(X, Y, sample_weight=sw).params,
                               grad, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,output", [("mae", "identity"),
                                         ("huber", "tanh"),
                                         ("poisson", "identity")])
def test_gradients_equal_torch_autograd(name, output, rng):
    torch = pytest.importorskip("torch")
    net, ws, bs = _net([4, 6, 3], name, output, rng, delta=0.45)
    m = 29
    X = rng.normal(size=(m, 4))
    Y = _targets(name, rng, m, 3)
    sw = rng.uniform(0.2, 2.0, m)
    tw = [torch.tensor(w, requires_grad=True) for w in ws]
    tb = [torch.tensor(b, requires_grad=True) for b in bs]
    h = torch.tensor(X)
    h = torch.tanh(h @ tw[0] + tb[0])
    z = h @ tw[1] + tb[1]
    out = torch.tanh(z) if output == "tanh" else z
    y = torch.tensor(Y)
    if name == "mae":
        per = torch.nn.L1Loss(reduction="none")(out, y)
    elif name == "huber":
        per = torch.nn.HuberLoss(reduction="none", delta=0.45)(out, y)
    else:
        per = torch.nn.PoissonNLLLoss(log_input=True, full=False,
                                      reduction="none")(out, y)
    s = torch.tensor(sw)
    loss = (per.sum(dim=1) * s).sum() / s.sum()
    loss.backward()
    want = np.concatenate([t.grad.numpy().ravel() for t in tw]
                          + [t.grad.numpy().ravel() for t in tb])
    g = net.backward(X, Y, sample_weight=sw)
    np.testing.assert_allclose(g.loss, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(g.params, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,output", [("mae", "tanh"), ("huber", "identity"),
                                         ("poisson", "identity")])
@pytest.mark.parametrize("batch_size", [1, 8, None])
def test_training_follows_the_reference(name, output, batch_size, rng):
    """fit (C batch loop: online, tiny mini-batch and full-batch paths)
    makes the updates of plain SGD on the reference gradients."""
    layers = [3, 4, 2]
    net, ws, bs = _net(layers, name, output, rng)
    m = 16
    X = rng.normal(size=(m, 3))
    Y = _targets(name, rng, m, 2)
    sw = rng.uniform(0.5, 2.0, m)
    lr = 0.05
    flat = R.flatten(ws, bs)
    B = m if batch_size is None else batch_size
    for _ in range(2):
        for s in range(0, m, B):
            sl = slice(s, s + B)
            _, g = ref_backward(*R.unflatten(flat, layers), list(net.activation),
                                name, X[sl], Y[sl], sw[sl], 0.7)
            flat = flat - lr * g
    net.fit(X, Y, epochs=2, batch_size=batch_size, shuffle=False,
            optimizer=bpcore.SGD(lr=lr), sample_weight=sw)
    np.testing.assert_allclose(net.params, flat, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layers", [[2, 3, 3], [2, 50, 3]])
def test_kinks_follow_torch(layers):
    """At a zero residual the mae gradient is 0 (torch's sign(0)); at
    |residual| = delta huber's is +-delta and its loss delta^2 / 2."""
    for name in ("mae", "huber"):
        net = bpcore.Network(layers, activation="tanh", output="identity",
                             loss=name, dtype="float64", huber_delta=0.5)
        net.weights[-1][...] = 0.0
        net.biases[-1][...] = [0.25, -1.0, 2.0]
        X = np.ones((2, 2))
        Y = np.array([[0.25, -1.5, 1.5], [0.25, -0.5, 2.5]])
        g = net.backward(X, Y)
        d = g.delta[-1] * 2  # the mean over the 2 samples undone
        if name == "mae":
            np.testing.assert_array_equal(d, [[0, 1, 1], [0, -1, -1]])
            assert g.loss == pytest.approx(1.0)
        else:
            np.testing.assert_array_equal(d, [[0, .5, .5], [0, -.5, -.5]])
            assert g.loss == pytest.approx(0.25)


def test_float32_close_to_float64(rng):
    for name, output in CASES:
        n64, _, _ = _net([3, 5, 2], name, output, rng)
        n32 = bpcore.Network([3, 5, 2], activation="tanh", output=output,
                             loss=name, dtype="float32", huber_delta=0.7)
        n32.params = n64.params.astype(np.float32)
        n64.params = n32.params.astype(np.float64)
        X = rng.normal(size=(9, 3))
        Y = _targets(name, rng, 9, 2)
        a, b = n32.backward(X, Y), n64.backward(X, Y)
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
        np.testing.assert_allclose(a.params, b.params, rtol=1e-3, atol=1e-5)


def test_huber_delta_changes_the_loss_and_defaults_to_one(rng):
    X = rng.normal(size=(10, 2))
    Y = 5 * rng.normal(size=(10, 1))
    a = bpcore.Network([2, 1], output="identity", loss="huber", seed=1,
                       dtype="float64")
    assert a.huber_delta == 1.0
    b = bpcore.Network([2, 1], output="identity", loss="huber", seed=1,
                       dtype="float64", huber_delta=2.5)
    assert a.evaluate(X, Y) != b.evaluate(X, Y)
    assert "huber_delta=2.5" in repr(b)


# -- bad input ----------------------------------------------------------------

def test_poisson_rejects_negative_targets_before_any_work(rng):
    net = bpcore.Network([2, 3, 1], output="identity", loss="poisson", seed=0)
    before = net.params.copy()
    X = rng.normal(size=(5, 2))
    Y = np.array([[1.0], [0.0], [-1.0], [2.0], [3.0]])
    opt = bpcore.SGD(lr=0.1, momentum=0.9)
    for call in (lambda: net.fit(X, Y, epochs=1, optimizer=opt),
                 lambda: net.step(X, Y, opt),
                 lambda: net.backward(X, Y),
                 lambda: net.evaluate(X, Y),
                 lambda: net.fit(X, np.abs(Y), epochs=1,
                                 validation_data=(X, Y))):
        with pytest.raises(ValueError, match="poisson targets .* >= 0"):
            call()
    np.testing.assert_array_equal(net.params, before)
    assert opt.t == 0


@pytest.mark.parametrize("output", ["sigmoid", "tanh", "softmax", "relu"])
def test_poisson_needs_an_identity_output(output):
    with pytest.raises(ValueError, match="poisson.*identity"):
        bpcore.Network([2, 2], output=output, loss="poisson")


@pytest.mark.parametrize("bad,exc", [(0.0, ValueError), (-1.0, ValueError),
                                     (float("nan"), ValueError),
                                     (float("inf"), ValueError),
                                     (True, TypeError), ("1", TypeError)])
def test_bad_huber_delta(bad, exc):
    with pytest.raises(exc, match="huber_delta"):
        bpcore.Network([2, 1], output="identity", loss="huber",
                       huber_delta=bad)


@pytest.mark.parametrize("name", ["mae", "huber"])
def test_nonfinite_targets_rejected(name):
    net = bpcore.Network([2, 1], output="identity", loss=name)
    with pytest.raises(ValueError, match="NaN"):
        net.backward(np.zeros((2, 2)), np.array([[0.0], [np.nan]]))


# -- the model file -----------------------------------------------------------

def _split(blob):
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


@pytest.mark.parametrize("name,output,delta", [("huber", "tanh", 0.3125),
                                               ("huber", "identity", 1e-3),
                                               ("mae", "sigmoid", 1.0),
                                               ("poisson", "identity", 1.0)])
def test_round_trip_keeps_loss_and_delta(name, output, delta, tmp_path, rng):
    net = bpcore.Network([3, 4, 2], output=output, loss=name, seed=3,
                         huber_delta=delta)
    path = tmp_path / "m.safetensors"
    net.save(path)
    for back in (bpcore.load(path), pickle.loads(pickle.dumps(net)),
                 copy.deepcopy(net), bpcore.Network.from_bytes(net.to_bytes())):
        assert back.loss == name
        assert back.huber_delta == delta
        X = rng.normal(size=(4, 3))
        Y = np.abs(rng.normal(size=(4, 2)))
        assert back.evaluate(X, Y) == net.evaluate(X, Y)
    header, _ = _split(net.to_bytes())
    assert ("huber_delta" in header["__metadata__"]) == (name == "huber")


@pytest.mark.parametrize("change,match", [
    (lambda m: m.pop("huber_delta"), "huber_delta.*missing"),
    (lambda m: m.update(huber_delta="0"), "huber_delta"),
    (lambda m: m.update(huber_delta="-1.5"), "huber_delta"),
    (lambda m: m.update(huber_delta="nan"), "huber_delta"),
    (lambda m: m.update(huber_delta="inf"), "huber_delta"),
    (lambda m: m.update(huber_delta="abc"), "huber_delta"),
    (lambda m: m.update(huber_delta=" 1"), "huber_delta"),
    (lambda m: m.update(loss="mse"), "huber_delta.*belongs"),
    (lambda m: m.update(loss="poisson"), "poisson needs an identity"),
])
def test_malformed_huber_files_raise_format_error(change, match):
    net = bpcore.Network([2, 3, 1], output="sigmoid", loss="huber",
                         huber_delta=0.5)
    header, data = _split(net.to_bytes())
    change(header["__metadata__"])
    with pytest.raises(bpcore.FormatError, match=match):
        bpcore.Network.from_bytes(_join(header, data))


@pytest.mark.parametrize("name,output", [("mae", "tanh"), ("huber", "softmax"),
                                         ("poisson", "identity")])
@pytest.mark.parametrize("layers", [[3, 4, 2], [5, 40, 70, 3]])
def test_bitwise_identical_for_any_thread_count(name, output, layers, rng):
    X = rng.normal(size=(300, layers[0]))
    Y = _targets(name, rng, 300, layers[-1])
    sw = rng.uniform(0.5, 2.0, 300)
    params = []
    for nt in (1, 2, 3):
        net = bpcore.Network(layers, activation="tanh", output=output,
                             loss=name, seed=5, huber_delta=0.3)
        net.fit(X, Y, epochs=2, batch_size=32, sample_weight=sw,
                optimizer=bpcore.Adam(lr=0.01), n_threads=nt)
        params.append(net.params.copy())
    for p in params[1:]:
        np.testing.assert_array_equal(p, params[0])
