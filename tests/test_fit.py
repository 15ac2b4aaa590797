"""fit: History, validation, early stopping, callbacks, divergence,
interruption, fork safety, races, bad input, and learning real data."""
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import bpcore


def _regression(rng, m=64):
    X = rng.normal(size=(m, 3))
    Y = np.stack([X[:, 0] - X[:, 1], np.tanh(X[:, 2])], axis=1)
    return X, Y


def _net(**kw):
    kw.setdefault("seed", 1)
    return bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                          dtype=kw.pop("dtype", "float64"), **kw)


def test_history(rng):
    X, Y = _regression(rng)
    net = _net()
    hist = net.fit(X, Y, epochs=5, batch_size=16, optimizer=bpcore.SGD(lr=0.1),
                   validation_data=(X[:10], Y[:10]))
    assert hist is net.history
    assert len(hist.loss) == len(hist.val_loss) == hist.epochs_run == 5
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert not hist.stopped_early
    assert hist.loss[-1] < hist.loss[0]
    assert hist.val_loss[-1] == pytest.approx(net.evaluate(X[:10], Y[:10]))


def test_full_batch_loss_is_loss_before_update(rng):
    X, Y = _regression(rng)
    net = _net()
    before = net.evaluate(X, Y)
    hist = net.fit(X, Y, epochs=1, batch_size=None, optimizer="sgd")
    assert hist.loss[0] == pytest.approx(before, rel=1e-12)


def test_same_seed_same_result_and_shuffle_matters(rng):
    X, Y = _regression(rng)
    runs = []
    for shuffle in (True, True, False):
        net = _net(seed=7)
        net.fit(X, Y, epochs=3, batch_size=5, shuffle=shuffle)
        runs.append(net.params.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_batch_size_larger_than_data_is_full_batch(rng):
    X, Y = _regression(rng, m=10)
    a, b = _net(), _net()
    a.fit(X, Y, epochs=2, batch_size=None, shuffle=False)
    b.fit(X, Y, epochs=2, batch_size=1000, shuffle=False)
    assert np.array_equal(a.params, b.params)


def test_online_learning(rng):
    X, Y = _regression(rng, m=20)
    a, b = _net(), _net()
    a.fit(X, Y, epochs=1, batch_size=1, shuffle=False,
          optimizer=bpcore.SGD(lr=0.05))
    opt = bpcore.SGD(lr=0.05)
    for i in range(20):
        b.step(X[i:i + 1], Y[i:i + 1], opt)
    assert np.array_equal(a.params, b.params)


def test_callbacks_stop_and_see_logs(rng):
    X, Y = _regression(rng)
    seen = []

    def cb(epoch, logs):
        seen.append((epoch, logs["loss"], logs["val_loss"]))
        return epoch < 2

    hist = _net().fit(X, Y, epochs=10, callbacks=[cb])
    assert [s[0] for s in seen] == [0, 1, 2]
    assert hist.epochs_run == 3 and hist.stopped_early
    assert [s[1] for s in seen] == hist.loss and seen[0][2] is None


def test_callback_returning_numpy_false_stops(rng):
    """A comparison in numpy gives np.False_, which stops like False;
    None (no return) and other falsy values do not stop."""
    X, Y = _regression(rng)
    hist = _net().fit(X, Y, epochs=5,
                      callbacks=[lambda e, logs: np.abs(logs["loss"]) < 0])
    assert hist.epochs_run == 1 and hist.stopped_early
    for keep_going in (None, 0, np.True_, np.array(False)):
        hist = _net().fit(X, Y, epochs=3,
                          callbacks=[lambda e, logs, r=keep_going: r])
        assert hist.epochs_run == 3 and not hist.stopped_early


def test_history_keeps_the_epochs_before_an_exception(rng):
    X, Y = _regression(rng)
    net = _net()
    seen = []

    def boom(epoch, logs):
        seen.append(logs["loss"])
        assert net.history.epochs_run == epoch + 1  # visible while training
        if epoch == 2:
            raise KeyError("stop here")

    with pytest.raises(KeyError, match="stop here"):
        net.fit(X, Y, epochs=5, callbacks=[boom])
    assert net.history.epochs_run == 3 and net.history.loss == seen
    # and after a divergence: the epochs that completed
    net = bpcore.Network([3, 16, 2], activation="relu", output="identity",
                         seed=0)
    with pytest.raises(bpcore.DivergenceError):
        net.fit(X, Y * 1e3, epochs=100, batch_size=8,
                optimizer=bpcore.SGD(lr=10.0))
    assert net.history.epochs_run == len(net.history.loss)
    assert np.isfinite(net.history.loss).all()


def test_early_stopping_restores_best(rng):
    """Validation targets of the opposite sign get worse as training fits."""
    X, Y = _regression(rng)
    net = _net()
    snaps = []
    hist = net.fit(X, Y, epochs=50, batch_size=None,
                   optimizer=bpcore.SGD(lr=0.1),
                   validation_data=(X, -Y),
                   early_stopping=bpcore.EarlyStopping(patience=3),
                   callbacks=[lambda e, logs: snaps.append(net.params.copy())])
    assert hist.stopped_early
    assert hist.epochs_run == hist.best_epoch + 4
    assert hist.best_epoch == int(np.argmin(hist.val_loss))
    assert np.array_equal(net.params, snaps[hist.best_epoch])


def test_early_stopping_on_training_loss_without_restore(rng):
    X, Y = _regression(rng)
    net = _net()
    hist = net.fit(X, Y, epochs=30, optimizer=bpcore.SGD(lr=0.05),
                   early_stopping=bpcore.EarlyStopping(
                       patience=2, min_delta=1e9, restore_best=False))
    # nothing beats best - 1e9 after the first epoch
    assert hist.epochs_run == 3 and hist.best_epoch == 0


def test_divergence_restores_last_epoch(rng):
    X, Y = _regression(rng)
    Y = Y * 1e3
    net = bpcore.Network([3, 16, 2], activation="relu", output="identity",
                         dtype="float32", seed=0)
    snaps = [net.params.copy()]
    with pytest.raises(bpcore.DivergenceError, match="restored"):
        net.fit(X, Y, epochs=100, batch_size=8, optimizer=bpcore.SGD(lr=10.0),
                callbacks=[lambda e, logs: snaps.append(net.params.copy())])
    assert np.isfinite(net.params).all()
    assert np.array_equal(net.params, snaps[-1])
    assert issubclass(bpcore.DivergenceError, FloatingPointError)


def test_step_divergence_leaves_params(rng):
    net = bpcore.Network([2, 2], output="identity", dtype="float32", seed=0)
    before = net.params.copy()
    X = np.full((2, 2), 3e38, dtype=np.float32)
    with pytest.raises(bpcore.DivergenceError):
        net.step(X, np.zeros((2, 2)), bpcore.SGD(lr=0.1))
    assert np.array_equal(net.params, before)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_update_to_nonfinite_parameters_is_divergence(batch_size, rng):
    """An epoch's last update can make the parameters non-finite while
    every loss it saw was finite (full batch: every update is the last);
    fit raises and keeps the last epoch whose parameters are finite, and
    step raises and changes nothing, optimizer state included."""
    X, Y = _regression(rng)
    net = bpcore.Network([3, 4, 2], output="identity", dtype="float32",
                         seed=0)
    before = net.params.copy()
    with pytest.raises(bpcore.DivergenceError, match="restored"):
        net.fit(X, Y, epochs=1, batch_size=batch_size,
                optimizer=bpcore.SGD(lr=1e39))
    assert np.array_equal(net.params, before)
    opt = bpcore.SGD(lr=1e39, momentum=0.9)
    with pytest.raises(bpcore.DivergenceError, match="not changed"):
        net.step(X, Y, opt)
    assert np.array_equal(net.params, before)
    assert opt.t == 0 and not np.any(opt.state_dict()["buffers"][0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(epochs=0), "epochs"),
    (dict(epochs=2.5), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=True), "batch_size"),
    (dict(optimizer="nope"), "optimizer"),
    (dict(optimizer=object()), "optimizer"),
    (dict(n_threads=0), "n_threads"),
    (dict(sample_weight=np.ones(3)), "sample_weight"),
    (dict(sample_weight=-np.ones(64)), "sample_weight"),
    (dict(sample_weight=np.full(64, np.nan)), "sample_weight"),
    (dict(validation_data=(np.ones((4, 2)), np.ones((4, 2)))), "validation_data X"),
    (dict(validation_data=(np.ones((4, 3)), np.ones((5, 2)))), "validation_data Y"),
    (dict(validation_data=np.ones((4, 3))), "validation_data"),
    (dict(early_stopping=5), "early_stopping"),
    (dict(callbacks=[1]), "callbacks"),
    (dict(shuffle="yes"), "shuffle"),
], ids=lambda v: str(v)[:40])
def test_bad_fit_input_leaves_network(kwargs, match, rng):
    X, Y = _regression(rng)
    net = _net()
    before = net.params.copy()
    with pytest.raises((ValueError, TypeError), match=match):
        net.fit(X, Y, **kwargs)
    assert np.array_equal(net.params, before)
    assert net.history is None


def test_racing_fit_is_refused(rng):
    X = rng.normal(size=(20000, 20))
    Y = rng.normal(size=(20000, 4))
    net = bpcore.Network([20, 64, 4], activation="relu", output="identity",
                         seed=0)
    started, errors = threading.Event(), []

    def train():
        net.fit(X, Y, epochs=30, batch_size=16,
                callbacks=[lambda e, logs: started.set()])

    t = threading.Thread(target=train)
    t.start()
    started.wait(30)
    for call in (lambda: net.fit(X, Y, epochs=1),
                 lambda: net.step(X[:4], Y[:4], "sgd"),
                 lambda: net.predict(X[:4])):
        try:
            call()
        except RuntimeError as e:
            errors.append(str(e))
    t.join()
    assert len(errors) == 3 and all("network" in e for e in errors)
    net.predict(X[:4])  # usable again


def test_parameter_assignment_racing_fit_is_refused(rng):
    """Assigning params, weights[k] or biases[k] from another thread while
    fit runs raises and leaves the fit's result whole; a callback (fit's
    own thread, between epochs) may assign."""
    X = rng.normal(size=(64, 3))
    Y = rng.normal(size=(64, 2))

    def run(interfere):
        net = bpcore.Network([3, 4, 2], output="identity", seed=0)
        go, release = threading.Event(), threading.Event()

        def cb(epoch, logs):
            if epoch == 0:
                go.set()
                release.wait(30)

        t = threading.Thread(target=lambda: net.fit(
            X, Y, epochs=3, batch_size=8, shuffle=False, callbacks=[cb]))
        t.start()
        go.wait(30)
        errors = []
        if interfere:
            for assign in (
                    lambda: setattr(net, "params", np.zeros(net.n_params)),
                    lambda: net.weights.__setitem__(0, np.zeros((3, 4))),
                    lambda: net.biases.__setitem__(1, np.zeros(2))):
                try:
                    assign()
                except RuntimeError as e:
                    errors.append(str(e))
        release.set()
        t.join()
        return net.params.copy(), errors

    clean, _ = run(False)
    raced, errors = run(True)
    assert len(errors) == 3 and all("network" in e for e in errors)
    assert np.array_equal(raced, clean)

    net = bpcore.Network([3, 4, 2], output="identity", seed=0)

    def clip(epoch, logs):
        net.params = np.clip(net.params, -0.1, 0.1)
        net.weights[0] = net.weights[0] * 0.5

    net.fit(X, Y, epochs=2, callbacks=[clip])
    assert np.abs(net.weights[0]).max() <= 0.05


def test_concurrent_predicts_agree(rng):
    net = bpcore.Network([30, 64, 10], activation="relu", output="softmax",
                         loss="cross_entropy", seed=0)
    X = rng.normal(size=(3000, 30))
    expected = net.predict(X, n_threads=1)
    results = [None] * 6

    def run(i):
        results[i] = net.predict(X, n_threads=2)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(r, expected) for r in results)


def _run_script(code, timeout=120, **kw):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_ctrl_c_is_prompt_and_leaves_whole_updates():
    code = """
        import sys, time, numpy as np, bpcore
        rng = np.random.default_rng(0)
        X = rng.normal(size=(200000, 32)); Y = rng.normal(size=(200000, 4))
        net = bpcore.Network([32, 128, 4], activation="relu",
                             output="identity", seed=0)
        print("ready", flush=True)
        try:
            net.fit(X, Y, epochs=1000, batch_size=8,
                    optimizer=bpcore.SGD(lr=1e-4))
        except KeyboardInterrupt:
            t = time.perf_counter()
            print("interrupted", np.isfinite(net.params).all(), flush=True)
            sys.exit(0)
        sys.exit(3)
    """
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0, out
    assert "interrupted True" in out
    assert elapsed < 2.0


def test_interrupt_right_after_a_c_call_keeps_the_step_count(monkeypatch):
    # Ctrl-C lands as soon as the GIL is back: here, as the first C call of
    # the batch loop returns.  Adam's step count must then still equal the
    # number of updates in the parameters (bias correction of a resumed run).
    import bpcore.network as network_module
    rng = np.random.default_rng(0)
    X = rng.normal(size=(640, 5))
    Y = rng.normal(size=(640, 2))
    net = bpcore.Network([5, 6, 2], activation="tanh", output="identity",
                         seed=0)
    p0 = net.params.copy()
    opt = bpcore.Adam(lr=1e-2)
    calls = []
    real = time.perf_counter

    def perf_counter():
        calls.append(None)
        if len(calls) == 2:  # the clock read right after the C call
            raise KeyboardInterrupt
        return real()

    monkeypatch.setattr(network_module.time, "perf_counter", perf_counter)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, Y, epochs=1, batch_size=8, optimizer=opt, shuffle=False)
    monkeypatch.undo()
    assert opt.t > 0
    # replay opt.t updates one batch at a time from the same start
    replay = bpcore.Network([5, 6, 2], activation="tanh", output="identity",
                            seed=0)
    replay.params = p0
    opt2 = bpcore.Adam(lr=1e-2)
    for b in range(opt.t):
        replay.step(X[8 * b:8 * b + 8], Y[8 * b:8 * b + 8], opt2)
    assert np.array_equal(replay.params, net.params)
    assert opt2.t == opt.t


@pytest.mark.parametrize("batch_size", [None, 16])
@pytest.mark.parametrize("make_opt", [
    lambda: bpcore.Adam(lr=1e-2),
    lambda: bpcore.SGD(lr=0.05, momentum=0.9)], ids=["adam", "momentum"])
def test_long_batches_on_copies_give_the_same_bits(make_opt, batch_size,
                                                   monkeypatch, rng):
    # Batches expected to take long run on copies in a worker thread (for
    # prompt Ctrl-C); forcing that path here must not change a bit.
    import bpcore.network as network_module
    X, Y = rng.normal(size=(64, 5)), rng.normal(size=(64, 2))

    def train():
        net = bpcore.Network([5, 8, 2], activation="tanh",
                             output="identity", seed=0)
        opt = make_opt()
        hist = net.fit(X, Y, epochs=3, batch_size=batch_size, optimizer=opt)
        return net, opt, hist

    net1, opt1, hist1 = train()
    monkeypatch.setattr(network_module._FitLoop, "LONG_CALL_SECONDS", -1.0)
    net2, opt2, hist2 = train()
    assert np.array_equal(net1.params, net2.params)
    assert opt1.t == opt2.t and hist1.loss == hist2.loss
    for a, b in zip(opt1.state_dict()["buffers"], opt2.state_dict()["buffers"]):
        assert np.array_equal(a, b)


def test_ctrl_c_during_a_long_full_batch_is_prompt():
    # One full-batch update of this network is long (its forward pass alone
    # is about 26 billion multiply-adds): Ctrl-C must not wait for it, and
    # the network keeps the last completed update.
    code = """
        import sys, time, numpy as np, bpcore
        rng = np.random.default_rng(0)
        X = rng.normal(size=(16384, 512)).astype(np.float32)
        y = rng.integers(0, 10, 16384)
        net = bpcore.Network([512, 1024, 1024, 10], activation="relu",
                             output="softmax", loss="cross_entropy", seed=0)
        opt = bpcore.Adam(lr=1e-3)
        snaps = [net.params.copy()]
        print("ready", flush=True)
        try:
            net.fit(X, y, epochs=100, batch_size=None, optimizer=opt,
                    callbacks=[lambda e, logs: snaps.append(net.params.copy())])
        except KeyboardInterrupt:
            print("interrupted", time.perf_counter(), flush=True)
            # the updates completed, and no part of the interrupted one
            assert net.history.epochs_run == len(snaps) - 1
            assert opt.t in (len(snaps) - 1, len(snaps))
            if opt.t == len(snaps) - 1:  # (else: just before its callback)
                assert np.array_equal(net.params, snaps[-1])
            print("consistent", flush=True)
            sys.exit(0)
        sys.exit(3)
    """
    p = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # into the first update
    t0 = time.perf_counter()
    p.send_signal(signal.SIGINT)
    line = p.stdout.readline().split()
    elapsed = float(line[1]) - t0
    out = p.stdout.read()  # (communicate would skip what readline buffered)
    assert p.wait(timeout=60) == 0, out
    assert "consistent" in out
    assert elapsed < 0.5


def test_fork_child_does_not_hang():
    code = """
        import multiprocessing as mp, numpy as np, bpcore
        net = bpcore.Network([64, 256, 10], activation="relu",
                             output="softmax", loss="cross_entropy", seed=0)
        X = np.random.default_rng(0).normal(size=(4000, 64))
        y = (X[:, 0] > 0).astype(int)
        parent = net.predict(X, n_threads=2)   # the parent used OpenMP
        net.fit(X, y, epochs=1, batch_size=256, n_threads=2)
        after = net.predict(X, n_threads=2)

        def child(_):
            net.fit(X[:512], y[:512], epochs=1, batch_size=256, n_threads=2,
                    shuffle=False)
            return net.predict(X, n_threads=2)

        with mp.get_context("fork").Pool(2) as pool:
            outs = pool.map(child, range(2))
        assert np.array_equal(outs[0], outs[1])
        print("ok")
    """
    r = _run_script(code, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_learns_digits():
    datasets = pytest.importorskip("sklearn.datasets")
    X, y = datasets.load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(0).permutation(len(y))
    X, y = X[perm], y[perm]
    Xtr, ytr, Xte, yte = X[:1400], y[:1400], X[1400:], y[1400:]
    net = bpcore.Network([64, 128, 10], activation="relu", output="softmax",
                         loss="cross_entropy", seed=0)
    net.fit(Xtr, ytr, epochs=40, batch_size=32, optimizer=bpcore.Adam(lr=2e-3))
    acc = (net.predict(Xte).argmax(axis=1) == yte).mean()
    assert acc >= 0.97


def test_callback_may_predict_evaluate_and_save(rng, tmp_path):
    X, Y = _regression(rng)
    net = _net()
    seen = []

    def cb(epoch, logs):
        seen.append((net.predict(X[:3]).shape, net.evaluate(X, Y)))
        net.save(tmp_path / f"e{epoch}.safetensors")

    net.fit(X, Y, epochs=2, batch_size=None, shuffle=False, callbacks=[cb])
    assert seen[1][1] == pytest.approx(net.evaluate(X, Y))
    np.testing.assert_array_equal(
        bpcore.load(tmp_path / "e1.safetensors").params, net.params)


# -- class indices ------------------------------------------------------------

@pytest.mark.parametrize("layers,batch", [
    ([3, 4, 5], 7),        # tiny path
    ([3, 4, 5], 1),        # tiny online path
    ([3, 4, 5], None),     # tiny, full batch
    ([3, 12, 9, 5], 7),    # general path
    ([3, 12, 9, 5], 1),
    ([3, 12, 9, 5], None),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_class_indices_train_as_their_one_hot_rows(layers, batch, dtype,
                                                   shuffle, rng):
    """fit/step/evaluate take 1-D class indices without building the
    (m, n_L) one-hot array; the result is bitwise that of the one-hot
    targets, with sample weights and validation data too."""
    m, n_out = 150, layers[-1]
    X = rng.normal(size=(m, layers[0]))
    y = rng.integers(0, n_out, size=m)
    Y = np.eye(n_out)[y]
    sw = rng.uniform(0.5, 2.0, size=m)
    nets, hists = [], []
    for targets, val in ((y, y[:40]), (Y, Y[:40])):
        net = bpcore.Network(layers, activation="tanh", output="softmax",
                             loss="cross_entropy", dtype=dtype, seed=3)
        hists.append(net.fit(X, targets, epochs=3, batch_size=batch,
                             optimizer=bpcore.Adam(lr=0.01),
                             sample_weight=sw, shuffle=shuffle,
                             validation_data=(X[:40], val), n_threads=2))
        net.step(X[:20], targets[:20], bpcore.SGD(lr=0.1))
        nets.append(net)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    assert hists[0].loss == hists[1].loss
    assert hists[0].val_loss == hists[1].val_loss
    assert nets[0].evaluate(X, y, sample_weight=sw) == \
        nets[1].evaluate(X, Y, sample_weight=sw)


def test_class_indices_need_no_one_hot_copy():
    """Training on class indices of many classes holds no (m, n_L) array:
    the targets become one-hot rows a batch at a time inside the loop."""
    import tracemalloc

    rng = np.random.default_rng(0)
    m, n_out = 100_000, 100  # one-hot float32 targets: 40 MB
    X = rng.normal(size=(m, 4)).astype(np.float32)
    y = rng.integers(0, n_out, size=m)
    net = bpcore.Network([4, 8, n_out], activation="relu", output="softmax",
                         loss="cross_entropy", dtype="float32", seed=0)
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=256, shuffle=True, n_threads=1)
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        net.evaluate(X, y)
        _, eval_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # fit: the labels as int64 (0.8 MB), the shuffle order, a batch's work
    assert fit_peak < 8e6, fit_peak
    # evaluate: one block of 8192 rows at a time (about 21 MB here)
    assert eval_peak < 30e6, eval_peak


def test_class_indices_out_of_range_are_refused(rng):
    net = bpcore.Network([3, 4, 5], output="softmax", loss="cross_entropy")
    X = rng.normal(size=(10, 3))
    before = net.params.copy()
    for bad in (np.r_[np.zeros(9, int), 5], np.r_[np.zeros(9, int), -1],
                np.r_[np.zeros(9), 0.5]):
        with pytest.raises(ValueError, match="labels"):
            net.fit(X, bad, epochs=1)
        with pytest.raises(ValueError, match="labels"):
            net.step(X, bad, "sgd")
    np.testing.assert_array_equal(net.params, before)
