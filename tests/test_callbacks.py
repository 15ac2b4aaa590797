"""bpcore.callbacks: CSVLogger rows equal the History, ModelCheckpoint
files hold the best epoch's parameters (and the optimizer state that
resumes training bit for bit); both continue across fit calls."""
import csv
import os

import numpy as np
import pytest

import bpcore
from bpcore.callbacks import CSVLogger, ModelCheckpoint


def _data(rng, m=64):
    X = rng.normal(size=(m, 3))
    Y = np.tanh(X @ rng.normal(size=(3, 2)))
    return X, Y


def _net(seed=0):
    return bpcore.Network([3, 8, 2], activation="tanh", output="identity",
                          dtype="float64", seed=seed)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_rows_equal_the_history(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "log.csv"
    net = _net()
    sched = bpcore.schedules.Step(0.2, step_size=2, gamma=0.5)
    hist = net.fit(X, Y, epochs=5, batch_size=16,
                   optimizer=bpcore.SGD(lr=sched),
                   validation_data=(X[:10], Y[:10]),
                   callbacks=[CSVLogger(path)])
    rows = _rows(path)
    assert rows[0] == ["epoch", "loss", "val_loss", "lr"]
    assert [int(r[0]) for r in rows[1:]] == list(range(5))
    assert [float(r[1]) for r in rows[1:]] == hist.loss  # full precision
    assert [float(r[2]) for r in rows[1:]] == hist.val_loss
    assert [float(r[3]) for r in rows[1:]] == [sched(e) for e in range(5)]


def test_csv_logger_continues_across_fits_and_processes(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "log.csv"
    net = _net()
    opt = bpcore.SGD(lr=0.1)
    log = CSVLogger(path)
    net.fit(X, Y, epochs=3, optimizer=opt, callbacks=[log])
    net.fit(X, Y, epochs=2, optimizer=opt, callbacks=[log])
    rows = _rows(path)
    assert [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]
    assert all(r[2] == "" for r in rows[1:])  # no validation data
    # a new logger appending (a resumed run) numbers after the last row
    net.fit(X, Y, epochs=2, optimizer=opt,
            callbacks=[CSVLogger(path, append=True)])
    rows = _rows(path)
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(7)]
    assert rows.count(["epoch", "loss", "val_loss", "lr"]) == 1
    # append=False starts over
    net.fit(X, Y, epochs=1, optimizer=opt, callbacks=[CSVLogger(path)])
    assert [r[0] for r in _rows(path)] == ["epoch", "0"]
    # append=True on a missing file writes the header
    other = tmp_path / "new.csv"
    net.fit(X, Y, epochs=1, optimizer=opt,
            callbacks=[CSVLogger(other, append=True)])
    assert _rows(other)[0] == ["epoch", "loss", "val_loss", "lr"]


def test_csv_logger_refuses_a_foreign_file(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n")
    net = _net()
    before = net.params.copy()
    with pytest.raises(ValueError, match="header"):
        net.fit(X, Y, epochs=1, callbacks=[CSVLogger(path, append=True)])
    np.testing.assert_array_equal(net.params, before)
    assert path.read_text() == "a,b\n1,2\n"


def test_checkpoint_keeps_the_best_epoch(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "best.safetensors"
    net = _net()
    snaps = []
    ck = ModelCheckpoint(path)
    hist = net.fit(X, Y, epochs=12, batch_size=8,
                   optimizer=bpcore.SGD(lr=0.3, momentum=0.9),
                   validation_data=(X[:8], Y[:8] + 0.2),
                   callbacks=[ck, lambda e, lg: snaps.append(
                       net.params.copy())])
    best = int(np.argmin(hist.val_loss))
    assert ck.best == hist.val_loss[best] and ck.best_epoch == best
    saved = bpcore.load(path)
    np.testing.assert_array_equal(saved.params, snaps[best])
    # the count of saves is the number of improvements
    improvements = sum(v < min(hist.val_loss[:i], default=np.inf)
                       for i, v in enumerate(hist.val_loss))
    assert ck.n_saves == improvements
    assert [p for p in os.listdir(tmp_path)] == ["best.safetensors"]


def test_checkpoint_every_epoch_monitor_loss(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "last.safetensors"
    net = _net()
    ck = ModelCheckpoint(path, monitor="loss", save_best_only=False)
    net.fit(X, Y, epochs=3, callbacks=[ck])
    assert ck.n_saves == 3 and ck.epoch == 3
    np.testing.assert_array_equal(bpcore.load(path).params, net.params)


def test_checkpoint_with_optimizer_resumes_exactly(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "ck.safetensors"
    # uninterrupted: 6 epochs
    a = _net(seed=5)
    a.fit(X, Y, epochs=6, batch_size=16, optimizer=bpcore.Adam(lr=0.01))
    # 3 epochs with a checkpoint of every epoch, then resume from the file
    b = _net(seed=5)
    ck = ModelCheckpoint(path, monitor="loss", save_best_only=False,
                         save_optimizer=True)
    b.fit(X, Y, epochs=3, batch_size=16, optimizer=bpcore.Adam(lr=0.01),
          callbacks=[ck])
    c, opt = bpcore.io.load(path, with_optimizer=True)
    assert opt.t == 12 and opt.epoch == 3
    c.fit(X, Y, epochs=3, batch_size=16, optimizer=opt)
    np.testing.assert_array_equal(c.params, a.params)


def test_checkpoint_continues_across_fits(tmp_path, rng):
    X, Y = _data(rng)
    path = tmp_path / "ck.safetensors"
    net = _net()
    ck = ModelCheckpoint(path, monitor="loss")
    opt = bpcore.SGD(lr=0.1)
    h1 = net.fit(X, Y, epochs=3, optimizer=opt, callbacks=[ck])
    saves = ck.n_saves
    # a much worse start: nothing beats the best of the first fit
    net.params = net.params + 5.0
    net.fit(X, Y, epochs=2, optimizer=bpcore.SGD(lr=1e-6), callbacks=[ck])
    assert ck.n_saves == saves and ck.epoch == 5
    assert ck.best == min(h1.loss)
    # best= resumes a run's best value in a new object
    ck2 = ModelCheckpoint(path, monitor="loss", best=min(h1.loss))
    net.fit(X, Y, epochs=1, optimizer=bpcore.SGD(lr=1e-6), callbacks=[ck2])
    assert ck2.n_saves == 0


def test_checkpoint_with_lbfgs(tmp_path, rng):
    pytest.importorskip("scipy")
    X, Y = _data(rng)
    path = tmp_path / "ck.safetensors"
    net = _net()
    ck = ModelCheckpoint(path, monitor="loss")
    with pytest.warns(bpcore.ConvergenceWarning):
        net.fit(X, Y, optimizer=bpcore.LBFGS(max_iter=5), callbacks=[ck])
    np.testing.assert_array_equal(bpcore.load(path).params, net.params)
    with pytest.raises(ValueError, match="save_optimizer"):
        net.fit(X, Y, optimizer=bpcore.LBFGS(max_iter=5), callbacks=[
            ModelCheckpoint(path, save_optimizer=True)])


@pytest.mark.parametrize("make,exc", [
    (lambda p: ModelCheckpoint(p, monitor="acc"), ValueError),
    (lambda p: ModelCheckpoint(p, save_best_only=1), TypeError),
    (lambda p: ModelCheckpoint(p, save_optimizer="yes"), TypeError),
    (lambda p: ModelCheckpoint(p, best=float("nan")), ValueError),
    (lambda p: ModelCheckpoint(""), ValueError),
    (lambda p: ModelCheckpoint(3), TypeError),
    (lambda p: CSVLogger(p, append=None), TypeError),
    (lambda p: CSVLogger(None), TypeError),
])
def test_bad_arguments(make, exc, tmp_path):
    with pytest.raises(exc):
        make(tmp_path / "x")


def test_checkpoint_outside_fit_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="fit"):
        ModelCheckpoint(tmp_path / "x")(0, {"loss": 1.0, "val_loss": None})
