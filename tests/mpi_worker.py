"""Run under mpiexec by tests/test_mpi.py: one scenario, one JSON per rank.

usage: mpiexec -n P python mpi_worker.py SCENARIO OUTDIR
"""
import hashlib
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI

import bpcore

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
scenario, outdir = sys.argv[1], sys.argv[2]
result = {"rank": rank, "size": P}


def digest(net):
    return hashlib.sha256(net.params.tobytes()).hexdigest()


def data(M=101, seed=3, classes=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(M, 5))
    if classes:
        Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    else:
        Y = np.stack([np.sin(X[:, 0]) + X[:, 1] * X[:, 2], X[:, 3] ** 2],
                     axis=1)
    sw = rng.uniform(0.5, 2.0, size=M)
    return X, Y, sw


def bounds(M):
    """Uneven shards: rank r holds rows [b[r], b[r+1]) of the global order."""
    w = np.arange(1, P + 1, dtype=float)  # rank r gets a share ~ r + 1
    cuts = np.floor(np.cumsum(w) / w.sum() * M).astype(int)
    return np.concatenate([[0], cuts])


def shard(arrays, M):
    b = bounds(M)
    return [None if a is None else a[b[rank]:b[rank + 1]] for a in arrays]


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b))))


def equivalence():
    out = {}
    cases = {
        "minibatch_adam": dict(batch_size=16, epochs=5, shuffle=True,
                               optimizer="adam", weights=True, val=True),
        "fullbatch_sgd": dict(batch_size=None, epochs=6, shuffle=True,
                              optimizer="sgd", weights=False, val=False),
        "noshuffle_momentum": dict(batch_size=10, epochs=3, shuffle=False,
                                   optimizer="momentum", weights=True,
                                   val=True),
        "classes_ce": dict(batch_size=8, epochs=3, shuffle=True,
                           optimizer="adam", weights=False, val=False,
                           classes=True),
    }
    for name, c in cases.items():
        M = 101
        X, Y, sw = data(M, classes=c.get("classes", False))
        Xv, Yv, swv = data(37, seed=9, classes=c.get("classes", False))
        sw = sw if c["weights"] else None
        results = []
        for distributed in (True, False):
            if c.get("classes"):
                net = bpcore.Network([5, 8, 3], activation="tanh",
                                     output="softmax", loss="cross_entropy",
                                     dtype="float64", seed=7)
            else:
                net = bpcore.Network([5, 8, 6, 2], activation="tanh",
                                     output="identity", loss="mse",
                                     dtype="float64", seed=7)
            if distributed and rank != 0:
                net.params[...] = 0.5  # replaced by rank 0's broadcast
            opt = {"adam": lambda: bpcore.Adam(lr=0.01),
                   "sgd": lambda: bpcore.SGD(lr=0.05),
                   "momentum": lambda: bpcore.SGD(lr=0.02, momentum=0.9,
                                                  nesterov=True)}[
                c["optimizer"]]()
            seen = []
            kw = dict(epochs=c["epochs"], batch_size=c["batch_size"],
                      optimizer=opt, shuffle=c["shuffle"],
                      callbacks=[lambda e, logs: seen.append(
                          (logs["loss"], logs["val_loss"]))])
            if distributed:
                Xs, Ys, sws, Xvs, Yvs, swvs = (shard([X, Y, sw], M)
                                               + shard([Xv, Yv, swv], 37))
                if c["val"]:
                    kw["validation_data"] = (Xvs, Yvs, swvs)
                h = net.fit(Xs, Ys, sample_weight=sws, comm=comm, **kw)
            else:
                if c["val"]:
                    kw["validation_data"] = (Xv, Yv, swv)
                h = net.fit(X, Y, sample_weight=sw, **kw)
            results.append((net, h, seen, opt))
        (nd, hd, sd, od), (ns, hs, ss, os_) = results
        out[name] = {
            "hash": digest(nd),
            "bitwise": bool(np.array_equal(nd.params, ns.params)),
            "rel": rel(nd.params, ns.params),
            "loss_d": hd.loss, "loss_s": hs.loss,
            "val_d": hd.val_loss, "val_s": hs.val_loss,
            "seen": sd, "t": [od.t, os_.t],
            "state_rel": (rel(od._state[0], os_._state[0])
                          if od._state and od._state[0] is not None else 0.0),
            "history": [hd.epochs_run, hd.best_epoch, hd.stopped_early],
            "eval_d": nd.evaluate(*shard([X, Y, sw], M), comm=comm),
            "eval_s": ns.evaluate(X, Y, sw),
        }
    # step(comm=): one global batch per call; hash after every update
    X, Y, sw = data(60)
    net = bpcore.Network([5, 8, 2], activation="relu", output="identity",
                         dtype="float64", seed=1)
    ref = bpcore.Network([5, 8, 2], activation="relu", output="identity",
                         dtype="float64", seed=1)
    opt, ropt = bpcore.Adam(lr=0.01), bpcore.Adam(lr=0.01)
    hashes, losses = [], []
    for k in range(6):
        rows = slice(10 * k, 10 * k + 10)
        Xs, Ys, sws = shard([X[rows], Y[rows], sw[rows]], 10)
        losses.append([net.step(Xs, Ys, opt, sample_weight=sws, comm=comm),
                       ref.step(X[rows], Y[rows], ropt,
                                sample_weight=sw[rows])])
        hashes.append(digest(net))
    out["step"] = {"hashes": hashes, "losses": losses,
                   "rel": rel(net.params, ref.params)}
    # float32 with sample weights and early stopping: ranks agree bitwise
    X, Y, sw = data(90)
    net = bpcore.Network([5, 16, 2], activation="relu", output="identity",
                         seed=2)
    Xs, Ys, sws = shard([X, Y, sw], 90)
    h = net.fit(Xs, Ys, epochs=30, batch_size=32, sample_weight=sws,
                optimizer=bpcore.SGD(lr=0.5), validation_data=(Xs, Ys),
                early_stopping=bpcore.EarlyStopping(patience=2), comm=comm)
    out["f32"] = {"hash": digest(net), "loss": h.loss,
                  "history": [h.epochs_run, h.best_epoch, h.stopped_early]}
    out["sklearn"] = sklearn_estimators()
    return out


def sklearn_estimators():
    import warnings
    from bpcore.sklearn import MLPClassifier, MLPRegressor
    warnings.simplefilter("ignore")
    res = {}
    X, Y, sw = data(120)
    kw = dict(hidden_layer_sizes=(8,), max_iter=4, batch_size=16,
              random_state=0, dtype="float64")
    d = MLPRegressor(comm=comm, **kw).fit(*shard([X, Y], 120),
                                          sample_weight=shard([sw], 120)[0])
    s = MLPRegressor(**kw).fit(X, Y, sample_weight=sw)
    res["reg"] = {"hash": digest(d.network_),
                  "rel": rel(d.network_.params, s.network_.params),
                  "curve": [d.loss_curve_, s.loss_curve_], "t": [d.t_, s.t_]}
    # labels sorted: the first rank never sees the last class
    Xc, yc, _ = data(120, seed=5, classes=True)
    names = np.array(["a", "b", "c"])[yc]
    order = np.argsort(names, kind="stable")
    Xc, names = Xc[order], names[order]
    d = MLPClassifier(comm=comm, solver="sgd", learning_rate_init=0.1,
                      **kw).fit(*shard([Xc, names], 120))
    s = MLPClassifier(solver="sgd", learning_rate_init=0.1,
                      **kw).fit(Xc, names)
    res["clf"] = {"hash": digest(d.network_),
                  "rel": rel(d.network_.params, s.network_.params),
                  "classes": [list(d.classes_), list(s.classes_)],
                  "local_classes": sorted(set(shard([names], 120)[0])),
                  "curve": [d.loss_curve_, s.loss_curve_]}
    return res


def outcome(fn):
    """Run fn; record the exception type, message and the params hash."""
    try:
        fn()
        return {"raised": None}
    except BaseException as e:  # noqa: B902 (recorded for the test)
        return {"raised": type(e).__name__, "message": str(e),
                "remote_rank": getattr(e, "rank", None)}


def faults():
    out = {}
    X, Y, sw = data(80)
    Xs, Ys = shard([X, Y], 80)

    def fresh():
        return bpcore.Network([5, 8, 2], activation="tanh",
                              output="identity", dtype="float64", seed=4)

    # bad input on rank 1 only: nothing trains, params untouched
    net = fresh()
    before = digest(net)
    Xbad = Xs.copy()
    if rank == 1:
        Xbad[0, 0] = np.nan
    r = outcome(lambda: net.fit(Xbad, Ys, epochs=2, comm=comm))
    r["unchanged"] = digest(net) == before
    r["hash"] = digest(net)
    out["bad_input"] = r

    # an exception in a callback on rank 1 after epoch 1 (the second)
    net = fresh()
    marks = []

    def cb(e, logs):
        marks.append(digest(net))
        if rank == 1 and e == 1:
            raise RuntimeError("callback failed on purpose")
    r = outcome(lambda: net.fit(Xs, Ys, epochs=5, batch_size=16,
                                callbacks=[cb], comm=comm))
    r["hash"] = digest(net)
    r["at_last_epoch_end"] = bool(marks) and marks[-1] == digest(net)
    r["epochs_run"] = net.history.epochs_run
    out["callback"] = r

    # divergence: every rank raises DivergenceError, epoch-start params back
    net = fresh()
    net.fit(Xs, Ys, epochs=1, batch_size=16, comm=comm)
    marks = [digest(net)]
    r = outcome(lambda: net.fit(Xs, Ys * 1e10, epochs=3, batch_size=16,
                                optimizer=bpcore.SGD(lr=1e30), comm=comm,
                                callbacks=[lambda e, l: marks.append(
                                    digest(net))]))
    r["restored"] = digest(net) == marks[-1]
    r["hash"] = digest(net)
    out["divergence"] = r

    # step with bad targets on rank 0 only
    net = fresh()
    Ybad = Ys[:, :1] if rank == 0 else Ys
    r = outcome(lambda: net.step(Xs, Ybad, bpcore.SGD(lr=0.1), comm=comm))
    r["hash"] = digest(net)
    out["step_bad"] = r

    # the network differs across ranks
    net = (bpcore.Network([5, 8, 2], seed=1) if rank == 0 else
           bpcore.Network([5, 9, 2], seed=1))
    out["mismatch"] = outcome(lambda: net.fit(Xs, Ys, epochs=1, comm=comm))
    return out


def sigint():
    """The test sends SIGINT to rank 1 once every rank has started."""
    X, Y, sw = data(64)
    Xs, Ys = shard([X, Y], 64)
    net = bpcore.Network([5, 8, 2], activation="tanh", output="identity",
                         dtype="float64", seed=4)
    with open(os.path.join(outdir, f"pid{rank}"), "w") as f:
        f.write(str(os.getpid()))
    marks = []

    def cb(e, logs):
        marks.append(digest(net))
        if e == 0:
            open(os.path.join(outdir, f"started{rank}"), "w").close()
        time.sleep(0.01)
    t0 = time.time()
    r = outcome(lambda: net.fit(Xs, Ys, epochs=100000, batch_size=8,
                                callbacks=[cb], comm=comm))
    r["seconds"] = time.time() - t0
    r["hash"] = digest(net)
    r["epochs_run"] = net.history.epochs_run
    r["last_epoch_hash"] = marks[-1] if marks else None
    return r


result["out"] = {"equivalence": equivalence, "faults": faults,
                 "sigint": sigint}[scenario]()
with open(os.path.join(outdir, f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
