"""clip_norm on every optimizer: trajectories against a NumPy reference
(torch.nn.utils.clip_grad_norm_'s formula, then PyTorch's update rules) and
against PyTorch itself, on every training path; bits independent of the
thread count; files; errors."""
import copy

import numpy as np
import pytest

import bpcore
import _ref_train as R

OPTS = {
    "sgd": (bpcore.SGD, dict(lr=0.1), dict(kind="sgd", lr=0.1)),
    "momentum": (bpcore.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01),
                 dict(kind="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)),
    "nesterov": (bpcore.SGD, dict(lr=0.05, momentum=0.8, nesterov=True),
                 dict(kind="sgd", lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (bpcore.Adam, dict(lr=0.01, weight_decay=0.01),
             dict(kind="adam", lr=0.01, weight_decay=0.01)),
    "adamw": (bpcore.AdamW, dict(lr=0.01), dict(kind="adamw", lr=0.01,
                                                 weight_decay=0.01)),
}


def _problem(rng, layers, m=24):
    net = bpcore.Network(layers, activation="tanh", output="identity",
                         dtype="float64", seed=3)
    X = rng.normal(size=(m, layers[0])) * 3
    Y = rng.normal(size=(m, layers[-1])) * 5  # large errors: clipping acts
    return net, X, Y


def _reference(net, X, Y, B, epochs, opt_kw, clip):
    Ws = [w.copy() for w in net.weights]
    bs = [b.copy() for b in net.biases]
    L = len(Ws)
    opt = R.Opt(n_w=L, clip_norm=clip, **opt_kw)
    norms = []
    for _ in range(epochs):
        for r0 in range(0, X.shape[0], B):
            _, dW, db, _ = R.loss_grad(Ws, bs, net.activation, "mse",
                                       X[r0:r0 + B], Y[r0:r0 + B])
            norms.append(np.sqrt(sum((g ** 2).sum() for g in dW + db)))
            new = opt.step(Ws + bs, dW + db)
            Ws, bs = new[:L], new[L:]
    return np.concatenate([w.ravel() for w in Ws] + list(bs)), norms


@pytest.mark.parametrize("name", list(OPTS))
@pytest.mark.parametrize("layers,B", [
    ([3, 5, 4, 2], 1),      # tiny online (routed off the per-layer loop)
    ([3, 5, 4, 2], 6),      # tiny lanes
    ([10, 16, 12, 3], 8),   # general
], ids=["tiny-online", "tiny-batch", "general"])
def test_fit_equals_reference(rng, name, layers, B):
    cls, kw, ref_kw = OPTS[name]
    net, X, Y = _problem(rng, layers)
    want, norms = _reference(net, X, Y, B, 2, ref_kw, 0.5)
    assert max(norms) > 0.5  # the clip is active in some steps at least
    net.fit(X, Y, epochs=2, batch_size=B, shuffle=False,
            optimizer=cls(clip_norm=0.5, **kw))
    np.testing.assert_allclose(net.params, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(OPTS))
def test_fit_equals_torch(rng, name):
    torch = pytest.importorskip("torch")
    cls, kw, ref_kw = OPTS[name]
    net, X, Y = _problem(rng, [4, 8, 6, 2], m=20)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 6),
        torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    with torch.no_grad():
        for k, lin in enumerate([model[0], model[2], model[4]]):
            lin.weight.copy_(torch.tensor(net.weights[k].T))
            lin.bias.copy_(torch.tensor(net.biases[k]))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    other = [p for n, p in model.named_parameters() if n.endswith("bias")]
    wd = ref_kw.get("weight_decay", 0.0)
    groups = [{"params": decay, "weight_decay": wd},
              {"params": other, "weight_decay": 0.0}]
    if ref_kw["kind"] == "sgd":
        topt = torch.optim.SGD(groups, lr=ref_kw["lr"],
                               momentum=ref_kw.get("momentum", 0.0),
                               nesterov=ref_kw.get("nesterov", False))
    elif ref_kw["kind"] == "adam":
        topt = torch.optim.Adam(groups, lr=ref_kw["lr"])
    else:
        topt = torch.optim.AdamW(groups, lr=ref_kw["lr"])
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    for _ in range(3):
        for r0 in range(0, 20, 5):
            topt.zero_grad()
            out = model(Xt[r0:r0 + 5])
            loss = 0.5 * ((out - Yt[r0:r0 + 5]) ** 2).sum(1).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)
            topt.step()
    net.fit(X, Y, epochs=3, batch_size=5, shuffle=False,
            optimizer=cls(clip_norm=0.3, **kw))
    for k, lin in enumerate([model[0], model[2], model[4]]):
        np.testing.assert_allclose(net.weights[k], lin.weight.detach().numpy().T,
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.biases[k], lin.bias.detach().numpy(),
                                   rtol=1e-10, atol=1e-12)


def test_step_clips(rng):
    net, X, Y = _problem(rng, [3, 5, 2], m=8)
    g = net.backward(X, Y)
    norm = np.sqrt((g.params ** 2).sum())
    assert norm > 0.2
    before = net.params.copy()
    net.step(X, Y, bpcore.SGD(lr=1.0, clip_norm=0.2))
    step = before - net.params
    np.testing.assert_allclose(np.sqrt((step ** 2).sum()),
                               0.2 * norm / (norm + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(step, g.params * 0.2 / (norm + 1e-6),
                               rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("layers,n_threads", [([6, 10, 2], 1),
                                               ([12, 40, 24, 3], 1),
                                               ([12, 40, 24, 3], 2)])
@pytest.mark.parametrize("name", sorted(OPTS))
def test_inactive_clip_changes_no_bit(rng, name, layers, n_threads):
    # Without clipping the general path updates each layer inside the
    # backward pass; with a clip that never binds (factor 1) it makes the
    # update a separate pass after the batch: the same bits.
    cls, kw, _ = OPTS[name]
    net, X, Y = _problem(rng, layers, m=30)
    other = copy.deepcopy(net)
    net.fit(X, Y, epochs=2, batch_size=4, optimizer=cls(**kw),
            n_threads=n_threads)
    other.fit(X, Y, epochs=2, batch_size=4,
              optimizer=cls(clip_norm=1e6, **kw), n_threads=n_threads)
    np.testing.assert_array_equal(net.params, other.params)


@pytest.mark.parametrize("layers,B", [([3, 5, 2], 1), ([30, 64, 48, 4], 64)],
                         ids=["online", "general"])
def test_bits_do_not_depend_on_threads(rng, layers, B):
    X = rng.normal(size=(256, layers[0])) * 3
    Y = rng.normal(size=(256, layers[-1])) * 5
    params = []
    for nt in (1, 2):
        net = bpcore.Network(layers, activation="relu", output="identity",
                             seed=1)
        net.fit(X, Y, epochs=2, batch_size=B, n_threads=nt,
                optimizer=bpcore.SGD(lr=0.01, momentum=0.9, clip_norm=0.1))
        params.append(net.params.copy())
    np.testing.assert_array_equal(params[0], params[1])


def test_float32_clips_too(rng):
    net = bpcore.Network([3, 5, 2], output="identity", seed=0)
    X = rng.normal(size=(8, 3)).astype(np.float32)
    Y = (rng.normal(size=(8, 2)) * 10).astype(np.float32)
    before = net.params.copy()
    net.step(X, Y, bpcore.SGD(lr=1.0, clip_norm=0.01))
    assert np.sqrt(((before - net.params).astype(float) ** 2).sum()) \
        == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize("cls", [bpcore.SGD, bpcore.Adam, bpcore.AdamW])
@pytest.mark.parametrize("value,exc", [
    (0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_clip_norm(cls, value, exc):
    with pytest.raises(exc, match="clip_norm"):
        cls(clip_norm=value)


def test_default_is_none_and_repr():
    for cls in (bpcore.SGD, bpcore.Adam, bpcore.AdamW):
        assert cls().clip_norm is None
        assert "clip_norm" not in repr(cls())
        assert "clip_norm=2.5" in repr(cls(clip_norm=2.5))
    assert bpcore.SGD(clip_norm=3).clip_norm == 3.0


def test_saved_with_the_optimizer(tmp_path, rng):
    from bpcore import io
    net, X, Y = _problem(rng, [3, 5, 2], m=8)
    opt = bpcore.Adam(lr=0.01, clip_norm=0.75)
    net.fit(X, Y, epochs=1, optimizer=opt)
    path = tmp_path / "m.safetensors"
    io.save(net, path, optimizer=opt)
    _, back = io.load(path, with_optimizer=True)
    assert back.clip_norm == 0.75 and back.t == opt.t
    # a file written without clipping has no clip_norm key, and loads
    io.save(net, path, optimizer=bpcore.SGD(lr=0.1))
    assert b"clip_norm" not in path.read_bytes()[:4000]
    assert io.load(path, with_optimizer=True)[1].clip_norm is None


@pytest.mark.parametrize("bad", ["-1.0", "0", "\"x\""])
def test_bad_clip_norm_in_file(bad, rng):
    import json
    import struct
    from bpcore import io
    net, X, Y = _problem(rng, [3, 5, 2], m=8)
    data = io.to_bytes(net, bpcore.SGD(lr=0.1, clip_norm=1.0))
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    spec = json.loads(head["__metadata__"]["optimizer"])
    spec["hyper"]["clip_norm"] = json.loads(bad)
    head["__metadata__"]["optimizer"] = json.dumps(spec)
    raw = json.dumps(head).encode()
    raw += b" " * (-len(raw) % 8)
    with pytest.raises(bpcore.FormatError, match="clip_norm"):
        io.from_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:],
                      with_optimizer=True)
