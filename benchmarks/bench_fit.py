"""Training throughput (samples/s) of bpcore and its peers.

Configurations C1a, C1b, C1c (float32 and float64), C2, C3, C4 of
benchmarks/README.md; peers: bpcore, PyTorch eager, JAX (jitted step per batch, and
one jitted ``lax.scan`` per epoch), scikit-learn's MLP, and a plain numpy
implementation.  Every (peer, config, dtype, threads) case runs in a fresh
subprocess whose thread environment is set before any library loads; the
cases of one configuration run one after another, so the peers are
interleaved in time.

Usage::

    python benchmarks/bench_fit.py [--quick] [--only C3[,C4]] [--peers bpcore,torch]
                                   [--threads 1,2] [--reps N] [--out FILE.jsonl]

``python benchmarks/run_all.py`` runs this together with the GEMM and predict
benchmarks and prints the combined tables.
"""

import argparse
import json
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

PEERS = ("bpcore", "torch", "jax", "sklearn", "numpy")


def _batches(n, batch):
    """Batch size actually used: None means the full (sub)set."""
    return n if batch is None else batch


def _warm_batches(n, batch):
    """Number of batches of the (untimed) warm-up: about a tenth of an epoch."""
    B = _batches(n, batch)
    nb = n // B
    return min(nb, max(4, nb // 10))


# ==========================================================================
# Workers: each sets up one case, warms up, repeats; returns a dict of
# {variant: (times, extra)} where times are seconds per repetition.
# ==========================================================================

def fit_bpcore(cfg, dtype, X, Y, threads, reps, epochs):
    import bpcore

    net = bpcore.Network(list(cfg["layers"]), activation=cfg["act"],
                         output=cfg["out"], loss=cfg["loss"], dtype=dtype,
                         seed=0)
    opt = bpcore.SGD(lr=C.LR)
    bs = cfg["batch"]

    def run():
        net.fit(X, Y, epochs=epochs, batch_size=bs, optimizer=opt,
                shuffle=False, n_threads=threads)

    w = _warm_batches(len(X), bs) * _batches(len(X), bs)
    net.fit(X[:w], Y[:w], epochs=1, batch_size=bs, optimizer=opt,
            shuffle=False, n_threads=threads)  # warm-up
    times = C.repeat(run, reps)
    kernel, conf = C.bpcore_config(bpcore)
    return {"bpcore": (times, {"kernel": kernel, "bpcore_config": conf,
                               "bpcore_version": getattr(bpcore, "__version__", None)})}


def fit_torch(cfg, dtype, X, Y, threads, reps, epochs):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    torch.manual_seed(0)
    mods = []
    layers = cfg["layers"]
    act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[cfg["act"]]
    for k in range(len(layers) - 1):
        mods.append(torch.nn.Linear(layers[k], layers[k + 1]))
        if k < len(layers) - 2:
            mods.append(act())
    if cfg["out"] == "sigmoid":
        mods.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*mods).to(tdt)

    if cfg["loss"] == "mse":
        def loss_fn(o, y):
            return 0.5 * ((o - y) ** 2).sum(1).mean()
    else:  # softmax + cross-entropy on logits
        loss_fn = torch.nn.CrossEntropyLoss()

    B = _batches(len(X), cfg["batch"])
    Xb = torch.split(torch.from_numpy(X), B)
    Yb = torch.split(torch.from_numpy(Y), B)
    opt = torch.optim.SGD(model.parameters(), lr=C.LR)

    def run(nb=None, epochs=epochs):
        for _ in range(epochs):
            for xb, yb in zip(Xb[:nb], Yb[:nb]):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()

    run(_warm_batches(len(X), cfg["batch"]), 1)  # warm-up
    times = C.repeat(run, reps)
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:
        cap = None
    return {"torch": (times, {"kernel": cap,
                              "torch_threads": torch.get_num_threads()})}


def fit_jax(cfg, dtype, X, Y, threads, reps, epochs):
    import jax
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    Ws, bs = C.init_params(cfg["layers"], dtype)
    L = len(Ws)
    act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[cfg["act"]]
    mse = cfg["loss"] == "mse"

    def loss_fn(params, x, y):
        a = x
        for k, (W, b) in enumerate(params):
            z = a @ W + b
            a = act(z) if k < L - 1 else z
        if mse:
            out = jax.nn.sigmoid(a)
            return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))
        logp = jax.nn.log_softmax(a)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def sgd_step(params, x, y):
        loss, g = jax.value_and_grad(loss_fn)(params, x, y)
        params = jax.tree_util.tree_map(lambda p, gp: p - C.LR * gp, params, g)
        return params, loss

    def epoch(params, Xb, Yb):
        return lax.scan(lambda p, xy: sgd_step(p, xy[0], xy[1]), params, (Xb, Yb))

    n = len(X)
    B = _batches(n, cfg["batch"])
    nb = n // B
    Xd = [jnp.asarray(X[i * B:(i + 1) * B]) for i in range(nb)]
    Yd = [jnp.asarray(Y[i * B:(i + 1) * B]) for i in range(nb)]
    Xs = jnp.asarray(X[:nb * B].reshape((nb, B) + X.shape[1:]))
    Ys = jnp.asarray(Y[:nb * B].reshape((nb, B) + Y.shape[1:]))

    def fresh():
        return [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(Ws, bs)]

    res = {}
    # --- jitted step per batch -------------------------------------------
    params = fresh()
    t0 = time.perf_counter()
    step = jax.jit(sgd_step, donate_argnums=0).lower(params, Xd[0], Yd[0]).compile()
    compile_step = time.perf_counter() - t0
    state = [params]

    def run_step(nb=None, epochs=epochs):
        p = state[0]
        for _ in range(epochs):
            for xb, yb in zip(Xd[:nb], Yd[:nb]):
                p, _loss = step(p, xb, yb)
        jax.block_until_ready(p)
        state[0] = p

    run_step(_warm_batches(n, cfg["batch"]), 1)  # warm-up
    times = C.repeat(run_step, reps)
    res["jax_step"] = (times, {"compile_s": compile_step})

    # --- one jitted lax.scan per epoch ----------------------------------
    params = fresh()
    t0 = time.perf_counter()
    ep = jax.jit(epoch, donate_argnums=0).lower(params, Xs, Ys).compile()
    compile_scan = time.perf_counter() - t0
    state = [params]

    def run_scan():
        p = state[0]
        for _ in range(epochs):
            p, _losses = ep(p, Xs, Ys)
        jax.block_until_ready(p)
        state[0] = p

    run_scan()  # warm-up (one epoch has the compiled shape)
    times = C.repeat(run_scan, reps)
    res["jax_scan"] = (times, {"compile_s": compile_scan})
    extra = {"jax_backend": jax.default_backend(),
             "xla_flags": os.environ.get("XLA_FLAGS")}
    for v in res.values():
        v[1].update(extra)
    return res


def fit_sklearn(cfg, dtype, X, Y, threads, reps, epochs):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    # MLPRegressor has an identity output layer (sklearn offers no sigmoid
    # output with squared loss); the FLOPs are the same, 2 fewer sigmoids.
    Est = MLPRegressor if cfg["loss"] == "mse" else MLPClassifier
    kw = dict(hidden_layer_sizes=tuple(cfg["layers"][1:-1]),
              activation={"sigmoid": "logistic", "relu": "relu"}[cfg["act"]],
              solver="sgd", alpha=0.0, batch_size=_batches(len(X), cfg["batch"]),
              learning_rate="constant", learning_rate_init=C.LR, momentum=0.0,
              nesterovs_momentum=False, max_iter=epochs, shuffle=False,
              tol=0.0, n_iter_no_change=10**9, early_stopping=False,
              random_state=0)
    last = [None]

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est = Est(**kw).fit(X, Y)
        if est.n_iter_ != epochs:
            raise RuntimeError(f"sklearn ran {est.n_iter_} epochs, not {epochs}")
        last[0] = est

    w = _warm_batches(len(X), cfg["batch"]) * _batches(len(X), cfg["batch"])
    with warnings.catch_warnings():  # warm-up
        warnings.simplefilter("ignore", ConvergenceWarning)
        Est(**dict(kw, max_iter=1)).fit(X[:w], Y[:w])
    times = C.repeat(run, reps)
    return {"sklearn": (times, {"kernel": C.openblas_kernel(),
                                "blas": C.blas_info(),
                                "sklearn_dtype": str(last[0].coefs_[0].dtype),
                                "estimator": Est.__name__})}


def fit_numpy(cfg, dtype, X, Y, threads, reps, epochs):
    import numpy as np

    Ws, bs = C.init_params(cfg["layers"], dtype)
    L = len(Ws)
    mse = cfg["loss"] == "mse"
    sig = cfg["act"] == "sigmoid"
    lr = C.LR

    def train_batch(x, y):
        outs = [x]
        a = x
        for k in range(L):
            z = a @ Ws[k]
            z += bs[k]
            if k < L - 1:
                a = 1.0 / (1.0 + np.exp(-z)) if sig else np.maximum(z, 0)
                outs.append(a)
        B = x.shape[0]
        if mse:  # sigmoid output, E = 1/(2B) sum ||y - out||^2
            out = 1.0 / (1.0 + np.exp(-z))
            d = (out - y) * out * (1.0 - out) / B
        else:    # softmax + cross-entropy
            z -= z.max(axis=1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(B), y] -= 1.0
            d = p / B
        for k in range(L - 1, -1, -1):
            gW = outs[k].T @ d
            gb = d.sum(axis=0)
            if k > 0:  # delta of layer k with the weights before the update
                a = outs[k]
                d = (d @ Ws[k].T) * (a * (1.0 - a) if sig else (a > 0))
            Ws[k] -= lr * gW
            bs[k] -= lr * gb

    B = _batches(len(X), cfg["batch"])
    Xb = [X[i:i + B] for i in range(0, len(X), B)]
    Yb = [Y[i:i + B] for i in range(0, len(Y), B)]

    def run(nb=None, epochs=epochs):
        for _ in range(epochs):
            for x, y in zip(Xb[:nb], Yb[:nb]):
                train_batch(x, y)

    run(_warm_batches(len(X), cfg["batch"]), 1)  # warm-up
    assert Ws[0].dtype == np.dtype(dtype)
    times = C.repeat(run, reps)
    return {"numpy": (times, {"kernel": C.openblas_kernel(),
                              "blas": C.blas_info()})}


WORKERS = {"bpcore": fit_bpcore, "torch": fit_torch, "jax": fit_jax,
           "sklearn": fit_sklearn, "numpy": fit_numpy}


def worker_main(a):
    cpus = C.pin_threads(a.threads)
    if a.quick:
        C.MIN_TOTAL_S = min(C.MIN_TOTAL_S, 0.3)
    cfg = C.CONFIGS[a.config]
    n = cfg["n_quick"] if a.quick else cfg["n_full"]
    epochs = cfg.get("epochs_quick", cfg["epochs"]) if a.quick else cfg["epochs"]
    base = {"bench": "fit", "config": a.config, "dtype": a.dtype,
            "threads": a.threads, "peer": a.peer, "cpus": cpus,
            "layers": list(cfg["layers"]), "batch": cfg["batch"],
            "n_samples": n, "epochs": epochs, "min_reps": a.reps,
            "flops_per_sample": C.flops_per_sample(cfg["layers"])}
    X, Y = C.make_data(cfg, a.dtype, n)
    try:
        res = WORKERS[a.peer](cfg, a.dtype, X, Y, a.threads, a.reps, epochs)
    except ImportError as e:
        C.emit(dict(base, skipped=f"import failed: {e}"))
        return
    for variant, (times, extra) in res.items():
        s = C.summarize(times)
        work = n * epochs
        rec = dict(base, variant=variant, reps=len(times), **s,
                   samples_per_s_max=work / s["min_s"],
                   samples_per_s_median=work / s["median_s"], **extra)
        rec["gflops_best"] = rec["flops_per_sample"] * rec["samples_per_s_max"] / 1e9
        C.emit(rec)


# ==========================================================================
# Orchestration
# ==========================================================================

def cases(only=None):
    for name, cfg in C.CONFIGS.items():
        if only and name not in only:
            continue
        for dt in cfg["dtypes"]:
            yield name, dt


def sweep(peers, threads, quick=False, only=None, reps=None, log=print,
          facts=None):
    """Run every case in subprocesses; return the list of JSON records."""
    reps = reps or (2 if quick else 3)
    facts = facts or C.machine_facts()
    records = []
    for name, dt in cases(only):
        for t in threads:
            for peer in peers:
                args = ["--peer", peer, "--config", name, "--dtype", dt,
                        "--threads", str(t), "--reps", str(reps)]
                if quick:
                    args.append("--quick")
                t0 = time.perf_counter()
                recs = C.run_worker("bench_fit.py", args, peer, t)
                for r in recs:
                    r.setdefault("bench", "fit")
                    r.setdefault("config", name)
                    r.setdefault("dtype", dt)
                    r["machine"] = facts
                    records.append(r)
                    log(_one_line(r, time.perf_counter() - t0))
    return records


def _one_line(r, wall):
    head = f"fit {r.get('config')} {r.get('dtype')} T={r.get('threads')} " \
           f"{r.get('variant', r.get('peer'))}"
    if "error" in r:
        return f"{head}: ERROR {r['error']}"
    if "skipped" in r:
        return f"{head}: skipped ({r['skipped']})"
    extra = f" compile {r['compile_s']:.2f} s" if "compile_s" in r else ""
    return (f"{head}: {C.fmt_rate(r['samples_per_s_max'])} samples/s best, "
            f"{C.fmt_rate(r['samples_per_s_median'])} median{extra} "
            f"[{wall:.1f} s wall]")


VARIANTS = ("bpcore", "torch", "jax_step", "jax_scan", "sklearn", "numpy")
VARIANT_NAMES = {"bpcore": "bpcore", "torch": "PyTorch", "jax_step": "JAX jit step",
                 "jax_scan": "JAX lax.scan epoch", "sklearn": "scikit-learn",
                 "numpy": "numpy"}


def index(records):
    """{(config, dtype, threads, variant): record} for successful records."""
    out = {}
    for r in records:
        if r.get("bench") == "fit" and "samples_per_s_max" in r:
            out[(r["config"], r["dtype"], r["threads"], r["variant"])] = r
    return out


def table(records, threads, ceiling=None):
    """Markdown tables: throughput, ratios bpcore/peer, GFLOP/s."""
    idx = index(records)
    rows = sorted({(k[0], k[1]) for k in idx},
                  key=lambda k: (list(C.CONFIGS).index(k[0]), k[1]))
    present = [v for v in VARIANTS if any(k[3] == v for k in idx)]
    tstr = " / ".join(str(t) for t in threads)
    lines = [f"Training throughput, samples/s, best of reps (threads {tstr}):", "",
             "| config | dtype | " + " | ".join(VARIANT_NAMES[v] for v in present) + " |",
             "| --- | --- |" + " --- |" * len(present)]
    for cfgname, dt in rows:
        cells = []
        for v in present:
            vals = [idx.get((cfgname, dt, t, v)) for t in threads]
            cells.append(" / ".join(C.fmt_rate(r["samples_per_s_max"]) if r else "-"
                                    for r in vals))
        lines.append(f"| {cfgname} | f{dt[5:]} | " + " | ".join(cells) + " |")

    if "bpcore" in present:
        peers = [v for v in present if v != "bpcore"]
        lines += ["", f"Ratio bpcore / peer (>1: bpcore faster), threads {tstr}:", "",
                  "| config | dtype | " + " | ".join(VARIANT_NAMES[v] for v in peers) + " |",
                  "| --- | --- |" + " --- |" * len(peers)]
        for cfgname, dt in rows:
            cells = []
            for v in peers:
                parts = []
                for t in threads:
                    b, p = idx.get((cfgname, dt, t, "bpcore")), idx.get((cfgname, dt, t, v))
                    parts.append(f"{b['samples_per_s_max'] / p['samples_per_s_max']:.2f}"
                                 if b and p else "-")
                cells.append(" / ".join(parts))
            lines.append(f"| {cfgname} | f{dt[5:]} | " + " | ".join(cells) + " |")

    lines += ["", f"GFLOP/s (and % of the same-run GEMM ceiling for that dtype and "
              f"thread count), threads {tstr}:", "",
              "| config | dtype | FLOP/sample | " +
              " | ".join(VARIANT_NAMES[v] for v in present) + " |",
              "| --- | --- | --- |" + " --- |" * len(present)]
    for cfgname, dt in rows:
        cells = []
        for v in present:
            parts = []
            for t in threads:
                r = idx.get((cfgname, dt, t, v))
                if not r:
                    parts.append("-")
                    continue
                g = r["gflops_best"]
                ceil = (ceiling or {}).get((dt, t))
                parts.append(f"{g:.3g}" + (f" ({100 * g / ceil:.2g}%)" if ceil else ""))
            cells.append(" / ".join(parts))
        fps = C.flops_per_sample(C.CONFIGS[cfgname]["layers"])
        lines.append(f"| {cfgname} | f{dt[5:]} | {fps:,} | " + " | ".join(cells) + " |")

    comp = [(k, r["compile_s"]) for k, r in sorted(idx.items()) if "compile_s" in r]
    if comp:
        lines += ["", "JAX compile time (excluded above), s: " +
                  ", ".join(f"{k[0]} f{k[1][5:]} T={k[2]} {k[3][4:]} {c:.2f}"
                            for k, c in comp)]
    return "\n".join(lines)


def available_peers(peers, log=print):
    ok, skipped = [], []
    for p in peers:
        a, why = C.peer_available(p)
        (ok if a else skipped).append(p if a else (p, why))
    for p, why in skipped:
        log(f"skipping {p}: {why}")
    return ok, skipped


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions")
    ap.add_argument("--quick", action="store_true", help="fewer samples and reps")
    ap.add_argument("--only", default=None, help="configs, e.g. C3 or C1a,C2")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--out", default=None, help="append JSON lines to this file")
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.worker:
        a.threads = int(a.threads)
        a.reps = a.reps or 3
        worker_main(a)
        return
    threads = C.parse_list(a.threads, int)
    only = C.parse_list(a.only) if a.only else None
    peers, _ = available_peers(C.parse_list(a.peers))
    recs = sweep(peers, threads, quick=a.quick, only=only, reps=a.reps)
    if a.out:
        with open(a.out, "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print()
    print(table(recs, threads))


if __name__ == "__main__":
    main()
