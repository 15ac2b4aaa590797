"""ReduceLROnPlateau: PyTorch's rules, checked against a hand-computed
trajectory (always) and torch.optim.lr_scheduler.ReduceLROnPlateau on the
same values (skipped without torch); stepped by fit once per epoch with
val_loss, or loss without validation data."""
import pickle

import numpy as np
import pytest

import bpcore
from bpcore.schedules import ReduceLROnPlateau


def _trajectory(sched, values):
    """The rate after each step."""
    return [sched.step(v) for v in values]


def test_hand_computed_min_rel():
    s = ReduceLROnPlateau(1.0, factor=0.5, patience=2)
    # best 10 at step 1; 10, 9.9995 (not below 10 * (1 - 1e-4) = 9.999),
    # 11 are bad: the third bad epoch (> patience 2) halves the rate
    values = [10, 10, 9.9995, 11, 8, 8, 8, 8, 8, 8, 8]
    want = [1, 1, 1, .5, .5, .5, .5, .25, .25, .25, .125]
    assert _trajectory(s, values) == want
    assert s(123) == 0.125  # the epoch does not matter
    assert s.best == 8


def test_hand_computed_cooldown_min_lr_abs_and_max():
    s = ReduceLROnPlateau(0.1, factor=0.1, patience=0, cooldown=2,
                          min_lr=0.0005, threshold=0.5, threshold_mode="abs")
    # patience 0: every bad epoch reduces, except during the cooldown
    values = [5, 4.8, 4.7, 4.6, 4.5, 4.4, 4.3, 1.0]
    want = [0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001]
    got = _trajectory(s, values)
    np.testing.assert_allclose(got, want, rtol=1e-15)
    s = ReduceLROnPlateau(0.001, factor=0.1, patience=0, min_lr=0.0005)
    assert _trajectory(s, [1, 2, 3]) == [0.001, 0.0005, 0.0005]
    s = ReduceLROnPlateau(1.0, mode="max", factor=0.5, patience=1)
    assert _trajectory(s, [1, 2, 1.5, 1.9, 3, 2]) == [1, 1, 1, .5, .5, .5]
    # eps: a reduction smaller than eps is skipped
    s = ReduceLROnPlateau(1e-8, patience=0)
    assert _trajectory(s, [1, 2]) == [1e-8, 1e-8]


def test_reset_and_pickle():
    s = ReduceLROnPlateau(1.0, patience=0)
    _trajectory(s, [1, 2])
    t = pickle.loads(pickle.dumps(s))
    assert t.current_lr == s.current_lr == 0.1 and t.best == 1
    s.reset()
    assert s.current_lr == 1.0 and s.best == np.inf


@pytest.mark.parametrize("kw,exc", [
    (dict(mode="avg"), ValueError), (dict(factor=1.0), ValueError),
    (dict(factor=-0.1), ValueError), (dict(patience=-1), ValueError),
    (dict(patience=1.5), TypeError), (dict(threshold=-1), ValueError),
    (dict(threshold_mode="x"), ValueError), (dict(cooldown=-1), ValueError),
    (dict(min_lr=-1), ValueError), (dict(min_lr=float("nan")), ValueError),
])
def test_bad_arguments(kw, exc):
    with pytest.raises(exc):
        ReduceLROnPlateau(0.1, **kw)
    with pytest.raises(ValueError):
        ReduceLROnPlateau(-0.1)


CONFIGS = [
    dict(),
    dict(mode="max", factor=0.3, patience=2),
    dict(factor=0.5, patience=1, threshold=0.05, threshold_mode="abs",
         cooldown=2, min_lr=1e-3),
    dict(mode="max", factor=0.9, patience=0, threshold=0.01, cooldown=1),
    dict(factor=0.2, patience=3, threshold=0.0, min_lr=0.002, eps=1e-3),
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_equals_torch(kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    # plateaus, noise, improvements and repeats
    values = np.concatenate([np.linspace(5, 1, 20), np.full(15, 1.0),
                             1 + 0.05 * rng.standard_normal(40),
                             np.linspace(1, 0.2, 15), np.full(30, 0.2)])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
    s = ReduceLROnPlateau(0.1, **kw)
    for v in values:
        ref.step(float(v))
        assert s.step(float(v)) == opt.param_groups[0]["lr"]
    assert s.best == ref.best
    assert s.num_bad_epochs == ref.num_bad_epochs


def _data(rng):
    X = rng.normal(size=(64, 3))
    Y = np.tanh(X @ rng.normal(size=(3, 2)))
    return X, Y


def test_fit_steps_it_with_val_loss(rng):
    X, Y = _data(rng)
    net = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                         dtype="float64", seed=0)
    sched = ReduceLROnPlateau(0.5, factor=0.5, patience=1)
    logs = []
    hist = net.fit(X, Y, epochs=25, batch_size=16,
                   optimizer=bpcore.SGD(lr=sched),
                   validation_data=(X[:20], Y[:20] + 0.3),
                   callbacks=[lambda e, lg: logs.append(lg)])
    # replay: the rate of each epoch follows the val_loss of those before
    check = ReduceLROnPlateau(0.5, factor=0.5, patience=1)
    rates = [0.5]
    for v in hist.val_loss:
        rates.append(check.step(v))
    assert [lg["lr"] for lg in logs] == rates[:-1]
    assert sched.current_lr == rates[-1] < 0.5


def test_fit_steps_it_with_loss_without_validation_and_continues(rng):
    X, Y = _data(rng)
    net = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                         dtype="float64", seed=0)
    sched = ReduceLROnPlateau(3.0, factor=0.5, patience=0)
    opt = bpcore.SGD(lr=sched)
    rates, losses = [], []

    def cb(e, lg):
        rates.append(lg["lr"])
        losses.append(lg["loss"])

    net.fit(X, Y, epochs=6, batch_size=16, optimizer=opt, callbacks=[cb])
    net.fit(X, Y, epochs=6, batch_size=16, optimizer=opt, callbacks=[cb])
    check = ReduceLROnPlateau(3.0, factor=0.5, patience=0)
    want = [3.0] + [check.step(v) for v in losses]
    assert rates == want[:-1]
    assert sched.last_epoch == 12


def test_saved_with_the_optimizer_and_resumed_exactly(tmp_path, rng):
    X, Y = _data(rng)
    kw = dict(factor=0.5, patience=0, cooldown=1)
    a = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                       dtype="float64", seed=0)
    a.fit(X, Y, epochs=8, batch_size=16,
          optimizer=bpcore.SGD(lr=ReduceLROnPlateau(2.0, **kw)))
    b = bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                       dtype="float64", seed=0)
    sched = ReduceLROnPlateau(2.0, **kw)
    opt = bpcore.SGD(lr=sched)
    b.fit(X, Y, epochs=4, batch_size=16, optimizer=opt)
    path = tmp_path / "m.safetensors"
    bpcore.io.save(b, path, optimizer=opt)
    c, opt2 = bpcore.io.load(path, with_optimizer=True)
    s2 = opt2.lr
    assert isinstance(s2, ReduceLROnPlateau)
    for k in ("current_lr", "best", "num_bad_epochs", "cooldown_counter",
              "last_epoch", "factor", "patience", "cooldown"):
        assert getattr(s2, k) == getattr(sched, k)
    c.fit(X, Y, epochs=4, batch_size=16, optimizer=opt2)
    np.testing.assert_array_equal(c.params, a.params)
    # a fresh schedule (best infinite) round-trips too
    fresh = bpcore.SGD(lr=ReduceLROnPlateau(0.1, mode="max"))
    fresh._bind(b.n_params, b.dtype)
    _, o = bpcore.io.from_bytes(bpcore.io.to_bytes(b, fresh),
                                with_optimizer=True)
    assert o.lr.best == -np.inf and o.lr.mode == "max"


@pytest.mark.parametrize("field,value", [
    ("current_lr", -1.0), ("current_lr", "x"), ("best", "inf"),
    ("num_bad_epochs", -1), ("last_epoch", 1.5), ("cooldown_counter", True),
])
def test_malformed_plateau_state_is_a_format_error(field, value, rng):
    import json
    import struct
    net = bpcore.Network([2, 2], output="identity")
    opt = bpcore.SGD(lr=ReduceLROnPlateau(0.1))
    net.fit(np.ones((4, 2)), np.ones((4, 2)), epochs=2, optimizer=opt)
    blob = bpcore.io.to_bytes(net, opt)
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    spec = json.loads(header["__metadata__"]["optimizer"])
    spec["lr"]["state"][field] = value
    header["__metadata__"]["optimizer"] = json.dumps(spec)
    text = json.dumps(header).encode()
    bad = struct.pack("<Q", len(text)) + text + blob[8 + n:]
    with pytest.raises(bpcore.FormatError, match="ReduceLROnPlateau"):
        bpcore.io.from_bytes(bad, with_optimizer=True)
