"""Optimizer trajectories against the NumPy oracle (and torch.optim when
installed), hyperparameter validation, state continuity and schedules."""

import numpy as np
import pytest

import bpcore
import reference as ref

LAYERS = [3, 5, 4, 2]

OPTIMIZERS = {
    "sgd": (dict(lr=0.1), "SGD"),
    "sgd-momentum": (dict(lr=0.05, momentum=0.9), "SGD"),
    "sgd-nesterov": (dict(lr=0.05, momentum=0.8, nesterov=True), "SGD"),
    "sgd-decay": (dict(lr=0.1, momentum=0.5, weight_decay=0.1), "SGD"),
    "adam": (dict(lr=0.01), "Adam"),
    "adam-decay": (dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), "Adam"),
    "adamw": (dict(lr=0.01, weight_decay=0.2), "AdamW"),
}


def _pair(rng, random_params, make_net, dtype="float64", loss="mse"):
    ws, bs = random_params(rng, LAYERS, dtype)
    out = "softmax" if loss == "cross_entropy" else "identity"
    net = make_net(LAYERS, ws, bs, activation="tanh", output=out, loss=loss,
                   dtype=dtype)
    mlp = ref.MLP(ws, bs, ["tanh", "tanh", out], loss)
    return net, mlp


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_trajectory_matches_reference(name, rng, random_params,
                                           make_net):
    kwargs, cls = OPTIMIZERS[name]
    net, mlp = _pair(rng, random_params, make_net)
    opt = getattr(bpcore, cls)(**kwargs)
    ropt = getattr(ref, cls)(**kwargs)
    for _ in range(6):
        X = rng.normal(size=(9, 3))
        Y = rng.normal(size=(9, 2))
        loss = net.step(X, Y, opt)
        rloss = ref.step(mlp, X, Y, ropt)
        assert loss == pytest.approx(rloss, rel=1e-12)
    np.testing.assert_allclose(net.params, mlp.params, rtol=1e-10, atol=1e-12)
    assert opt.t == 6


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fit_full_batch_equals_steps(name, rng, random_params, make_net):
    """fit(batch_size=None, shuffle=False) is one step per epoch."""
    kwargs, cls = OPTIMIZERS[name]
    net, mlp = _pair(rng, random_params, make_net)
    X, Y = rng.normal(size=(20, 3)), rng.normal(size=(20, 2))
    ropt = getattr(ref, cls)(**kwargs)
    hist = net.fit(X, Y, epochs=4, batch_size=None, shuffle=False,
                   optimizer=getattr(bpcore, cls)(**kwargs))
    losses = [ref.step(mlp, X, Y, ropt) for _ in range(4)]
    np.testing.assert_allclose(hist.loss, losses, rtol=1e-12)
    np.testing.assert_allclose(net.params, mlp.params, rtol=1e-10, atol=1e-12)


def test_minibatches_in_order(rng, random_params, make_net):
    """Without shuffling, batches are consecutive rows; the last is smaller."""
    net, mlp = _pair(rng, random_params, make_net)
    X, Y = rng.normal(size=(23, 3)), rng.normal(size=(23, 2))
    sw = rng.uniform(0.5, 2.0, size=23)
    net.fit(X, Y, epochs=2, batch_size=7, shuffle=False, sample_weight=sw,
            optimizer=bpcore.SGD(lr=0.2, momentum=0.5))
    ropt = ref.SGD(lr=0.2, momentum=0.5)
    for _ in range(2):
        for s in range(0, 23, 7):
            ref.step(mlp, X[s:s + 7], Y[s:s + 7], ropt, sw[s:s + 7])
    np.testing.assert_allclose(net.params, mlp.params, rtol=1e-10, atol=1e-12)


def test_state_continues_across_fits(rng):
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    a = bpcore.Network(LAYERS, activation="tanh", output="identity",
                       dtype="float64", seed=3)
    b = bpcore.Network(LAYERS, activation="tanh", output="identity",
                       dtype="float64", seed=3)
    sched = bpcore.schedules.Step(0.01, step_size=1, gamma=0.5)
    oa, ob = bpcore.Adam(lr=sched), bpcore.Adam(lr=sched)
    a.fit(X, Y, epochs=4, batch_size=8, optimizer=oa, shuffle=False)
    b.fit(X, Y, epochs=2, batch_size=8, optimizer=ob, shuffle=False)
    b.fit(X, Y, epochs=2, batch_size=8, optimizer=ob, shuffle=False)
    assert np.array_equal(a.params, b.params)
    assert oa.t == ob.t == 20 and ob.epoch == 4


def test_optimizer_bound_to_one_shape(rng):
    opt = bpcore.SGD(lr=0.1, momentum=0.9)
    X = rng.normal(size=(4, 3))
    bpcore.Network([3, 2]).step(X, rng.normal(size=(4, 2)), opt)
    with pytest.raises(ValueError, match="optimizer"):
        bpcore.Network([3, 4]).step(X, rng.normal(size=(4, 4)), opt)
    opt.reset()
    bpcore.Network([3, 4]).step(X, rng.normal(size=(4, 4)), opt)


def test_one_optimizer_trains_one_network_at_a_time(rng):
    # Two trainings sharing an optimizer would interleave its state and
    # step count: the second is refused while the first runs.
    import threading
    X, Y = rng.normal(size=(16, 3)), rng.normal(size=(16, 2))
    a = bpcore.Network(LAYERS, activation="tanh", output="identity", seed=0)
    b = bpcore.Network(LAYERS, activation="tanh", output="identity", seed=1)
    opt = bpcore.Adam(lr=1e-3)
    inside, release = threading.Event(), threading.Event()

    def wait(epoch, logs):  # runs inside a's fit, which holds opt
        inside.set()
        release.wait(30)

    worker = threading.Thread(target=a.fit, args=(X, Y), kwargs=dict(
        epochs=1, optimizer=opt, callbacks=[wait]))
    worker.start()
    try:
        assert inside.wait(30)
        before = b.params.copy()
        with pytest.raises(RuntimeError, match="optimizer"):
            b.step(X, Y, opt)
        with pytest.raises(RuntimeError, match="optimizer"):
            b.fit(X, Y, epochs=1, optimizer=opt)
        assert np.array_equal(b.params, before)
    finally:
        release.set()
        worker.join()
    assert opt.t == 1  # only a's update
    b.step(X, Y, bpcore.Adam(lr=1e-3))  # free again, and with a fresh one
    opt.reset()
    b.step(X, Y, opt)


def _adam_state(rng):
    opt = bpcore.Adam(lr=1e-3)
    X, Y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
    bpcore.Network(LAYERS, activation="tanh", output="identity").step(X, Y, opt)
    return opt.state_dict()


LOAD_CASES = {
    "none": (lambda sd: None, TypeError),
    "list": (lambda sd: [sd["t"], sd["epoch"]], TypeError),
    "no-epoch": (lambda sd: {"t": 1, "buffers": sd["buffers"]}, ValueError),
    "fractional-t": (lambda sd: {**sd, "t": 2.5}, ValueError),
    "negative-t": (lambda sd: {**sd, "t": -1}, ValueError),
    "bool-epoch": (lambda sd: {**sd, "epoch": True}, ValueError),
    "one-buffer": (lambda sd: {**sd, "buffers": sd["buffers"][:1]},
                   ValueError),
    "2d-buffer": (lambda sd: {**sd, "buffers": [b[:, None]
                                                for b in sd["buffers"]]},
                  ValueError),
    "mixed-shapes": (lambda sd: {**sd, "buffers": [sd["buffers"][0],
                                                   sd["buffers"][1][:-1]]},
                     ValueError),
    "nan": (lambda sd: {**sd, "buffers": [sd["buffers"][0],
                                          sd["buffers"][1] * np.nan]},
            ValueError),
    "negative-moment": (lambda sd: {**sd, "buffers": [sd["buffers"][0],
                                                      -sd["buffers"][1] - 1]},
                        ValueError),
}


@pytest.mark.parametrize("make, exc", LOAD_CASES.values(),
                         ids=LOAD_CASES.keys())
def test_load_state_dict_checks_its_input(make, exc, rng):
    sd = _adam_state(rng)
    opt = bpcore.Adam(lr=1e-3)
    opt.load_state_dict(sd)
    with pytest.raises(exc, match="state"):
        opt.load_state_dict(make(sd))
    # nothing changed
    after = opt.state_dict()
    assert after["t"] == sd["t"] and after["epoch"] == sd["epoch"]
    for x, y in zip(after["buffers"], sd["buffers"]):
        assert np.array_equal(x, y)


def test_load_state_dict_across_kinds_is_refused(rng):
    adam = _adam_state(rng)
    with pytest.raises(ValueError, match="buffer"):
        bpcore.SGD(lr=0.1, momentum=0.9).load_state_dict(adam)
    sgd = bpcore.SGD(lr=0.1, momentum=0.9).state_dict()
    with pytest.raises(ValueError, match="buffer"):
        bpcore.Adam().load_state_dict(sgd)
    # a state round-trips, also for a fresh optimizer (no buffers yet)
    for opt in (bpcore.SGD(), bpcore.SGD(momentum=0.5), bpcore.Adam()):
        type(opt)(**({"momentum": opt.momentum}
                     if isinstance(opt, bpcore.SGD) else {})).load_state_dict(
            opt.state_dict())


def test_names_give_defaults():
    from bpcore.optim import get_optimizer
    assert isinstance(get_optimizer("sgd"), bpcore.SGD)
    assert get_optimizer("Adam").lr == 0.001
    assert get_optimizer("adamw").weight_decay == 0.01
    with pytest.raises(ValueError, match="optimizer"):
        get_optimizer("rmsprop")
    with pytest.raises(TypeError, match="optimizer"):
        get_optimizer(42)


@pytest.mark.parametrize("make", [
    lambda: bpcore.SGD(lr=-1),
    lambda: bpcore.SGD(lr=float("nan")),
    lambda: bpcore.SGD(momentum=1.0),
    lambda: bpcore.SGD(momentum=-0.1),
    lambda: bpcore.SGD(nesterov=True),
    lambda: bpcore.SGD(weight_decay=-1),
    lambda: bpcore.Adam(betas=(1.0, 0.999)),
    lambda: bpcore.Adam(betas=(0.9, -0.1)),
    lambda: bpcore.Adam(eps=0),
    lambda: bpcore.AdamW(weight_decay=float("inf")),
], ids=["neg-lr", "nan-lr", "momentum-1", "neg-momentum", "nesterov-no-mom",
        "neg-decay", "beta1-1", "neg-beta2", "eps-0", "inf-decay"])
def test_bad_hyperparameters(make):
    with pytest.raises(ValueError):
        make()


def test_decay_spares_biases(rng):
    """With zero gradient signal, decay shrinks weights and leaves biases."""
    net = bpcore.Network([2, 3], output="identity", dtype="float64", seed=0)
    net.biases[0][...] = 1.0
    w0 = net.weights[0].copy()
    X = np.zeros((4, 2))
    Y = np.ones((4, 3))  # out = b = 1 = Y: zero loss, zero gradient
    net.step(X, Y, bpcore.SGD(lr=0.5, weight_decay=0.1))
    np.testing.assert_allclose(net.weights[0], w0 * (1 - 0.05))
    np.testing.assert_array_equal(net.biases[0], 1.0)


def test_schedules():
    s = bpcore.schedules
    assert s.Constant(0.1)(7) == 0.1
    assert s.Step(1.0, step_size=2, gamma=0.5)(5) == 0.25
    assert s.Exponential(1.0, 0.9)(2) == pytest.approx(0.81)
    assert s.Cosine(1.0, t_max=10)(5) == pytest.approx(0.5)
    assert s.Cosine(1.0, t_max=10, eta_min=0.1)(20) == pytest.approx(0.1)
    assert s.cosine(1.0, T_max=4)(2) == pytest.approx(0.5)
    assert s.InverseScaling(1.0, power_t=0.5)(3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="step_size"):
        s.Step(1.0, step_size=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_growing_schedule_ends_in_a_clear_error(dtype, rng):
    """gamma > 1 for long enough overflows: the schedule gives inf (not
    OverflowError), and fit stops with DivergenceError or the schedule's
    ValueError, the parameters whole."""
    s = bpcore.schedules
    assert s.Exponential(1.0, 10.0)(400) == np.inf
    assert s.Step(1.0, step_size=1, gamma=10.0)(400) == np.inf
    net = bpcore.Network([3, 4, 2], output="identity", dtype=dtype, seed=0)
    X, Y = rng.normal(size=(16, 3)), 1e-300 * rng.normal(size=(16, 2))
    with pytest.raises((bpcore.DivergenceError, ValueError)):
        net.fit(X, Y, epochs=5, batch_size=None,
                optimizer=bpcore.SGD(lr=s.Exponential(1e-3, 1e200)))
    assert np.isfinite(net.params).all()


def test_schedule_changes_lr_per_epoch(rng, random_params, make_net):
    net, mlp = _pair(rng, random_params, make_net)
    X, Y = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    sched = bpcore.schedules.Exponential(0.2, 0.5)
    net.fit(X, Y, epochs=3, batch_size=None, shuffle=False,
            optimizer=bpcore.SGD(lr=sched))
    for e in range(3):
        ref.step(mlp, X, Y, ref.SGD(lr=0.2 * 0.5 ** e))
    np.testing.assert_allclose(net.params, mlp.params, rtol=1e-10)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_against_torch(name, rng, random_params, make_net):
    torch = pytest.importorskip("torch")
    kwargs, cls = OPTIMIZERS[name]
    net, mlp = _pair(rng, random_params, make_net)
    lin = [torch.nn.Linear(a, b).double() for a, b in zip(LAYERS, LAYERS[1:])]
    with torch.no_grad():
        for k, layer in enumerate(lin):
            layer.weight.copy_(torch.from_numpy(net.weights[k].T.copy()))
            layer.bias.copy_(torch.from_numpy(net.biases[k].copy()))
    tkw = dict(kwargs)
    decay = tkw.pop("weight_decay", 0.0)
    groups = [{"params": [l.weight for l in lin], "weight_decay": decay},
              {"params": [l.bias for l in lin], "weight_decay": 0.0}]
    topt = getattr(torch.optim, cls)(groups, **tkw)
    opt = getattr(bpcore, cls)(**kwargs)
    for _ in range(5):
        X, Y = rng.normal(size=(8, 3)), rng.normal(size=(8, 2))
        net.step(X, Y, opt)
        h = torch.from_numpy(X)
        for k, layer in enumerate(lin):
            h = layer(h)
            h = torch.tanh(h) if k < len(lin) - 1 else h
        loss = 0.5 * ((h - torch.from_numpy(Y)) ** 2).sum(dim=1).mean()
        topt.zero_grad()
        loss.backward()
        topt.step()
    for k, layer in enumerate(lin):
        np.testing.assert_allclose(net.weights[k], layer.weight.detach().numpy().T,
                                   rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(net.biases[k], layer.bias.detach().numpy(),
                                   rtol=1e-9, atol=1e-12)
