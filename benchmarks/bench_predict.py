"""Inference: C3 ``predict`` throughput and single-sample latency.

- Throughput: one call on 60,000 C3 samples (784-256-128-10, relu, softmax
  output), samples/s.
- Latency: one sample per call from Python, numpy array in and numpy array
  out, on C1 (2-3-2-2 sigmoid) and C3.

Peers: bpcore ``net.predict``, PyTorch eager (``inference_mode``), JAX (jitted
forward; ``np.asarray`` of the result), scikit-learn (``predict_proba`` for
C3, ``MLPRegressor.predict`` for C1, whose output layer is the identity),
and numpy.  Every peer gets the same weights; its outputs are checked
against the numpy forward pass (``max_abs_diff``).

Usage::

    python benchmarks/bench_predict.py [--quick] [--threads 1,2] [--peers ...]
                                       [--out FILE.jsonl]
"""

import argparse
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

PEERS = ("bpcore", "torch", "jax", "sklearn", "numpy")
N_THROUGHPUT = 60_000


def numpy_forward(cfg, Ws, bs):
    import numpy as np
    sig = cfg["act"] == "sigmoid"
    L = len(Ws)

    def f(x):
        a = x
        for k in range(L):
            z = a @ Ws[k] + bs[k]
            if k < L - 1:
                a = 1.0 / (1.0 + np.exp(-z)) if sig else np.maximum(z, 0)
        if cfg["out"] == "identity":
            return z
        if cfg["out"] == "sigmoid":
            return 1.0 / (1.0 + np.exp(-z))
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)
    return f


def make_predictor(peer, cfg, Ws, bs, threads):
    """Return f(x) -> numpy output for a (m, n_0) or (n_0,) numpy input."""
    import numpy as np
    dtype = str(Ws[0].dtype)
    if peer == "numpy":
        return numpy_forward(cfg, Ws, bs)
    if peer == "bpcore":
        import bpcore
        net = bpcore.Network(list(cfg["layers"]), activation=cfg["act"],
                             output=cfg["out"], loss=cfg["loss"], dtype=dtype, seed=0)
        for k in range(len(Ws)):
            net.weights[k][...] = Ws[k]
            net.biases[k][...] = bs[k]
        return lambda x: net.predict(x, n_threads=threads)
    if peer == "torch":
        import torch
        torch.set_num_threads(threads)
        mods = []
        act = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}[cfg["act"]]
        for k in range(len(Ws)):
            lin = torch.nn.Linear(*Ws[k].shape).to(getattr(torch, dtype))
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(Ws[k].T.copy()))
                lin.bias.copy_(torch.from_numpy(bs[k]))
            mods.append(lin)
            if k < len(Ws) - 1:
                mods.append(act())
        mods.append(torch.nn.Sigmoid() if cfg["out"] == "sigmoid"
                    else torch.nn.Softmax(dim=-1))
        model = torch.nn.Sequential(*mods).eval()

        def f(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()
        return f
    if peer == "jax":
        import jax
        import jax.numpy as jnp
        params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(Ws, bs)]
        act = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}[cfg["act"]]
        outf = jax.nn.sigmoid if cfg["out"] == "sigmoid" else jax.nn.softmax

        @jax.jit
        def fwd(params, x):
            a = x
            for k, (W, b) in enumerate(params):
                z = a @ W + b
                a = act(z) if k < len(params) - 1 else outf(z)
            return a
        return lambda x: np.asarray(fwd(params, x))
    if peer == "sklearn":
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier, MLPRegressor
        reg = cfg["loss"] == "mse"
        Est = MLPRegressor if reg else MLPClassifier
        est = Est(hidden_layer_sizes=tuple(cfg["layers"][1:-1]),
                  activation={"sigmoid": "logistic", "relu": "relu"}[cfg["act"]],
                  solver="sgd", max_iter=1, random_state=0)
        nL = cfg["layers"][-1]
        Xf = np.zeros((nL * 2, cfg["layers"][0]), dtype=dtype)
        Yf = (np.zeros((nL * 2, nL), dtype=dtype) if reg
              else np.arange(nL * 2) % nL)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Xf, Yf)
        est.coefs_ = [W.copy() for W in Ws]
        est.intercepts_ = [b.copy() for b in bs]
        if reg:
            return lambda x: est.predict(x.reshape(-1, x.shape[-1]))
        return lambda x: est.predict_proba(x.reshape(-1, x.shape[-1]))
    raise ValueError(peer)


def latency(f, x, reps):
    """Seconds per call of f(x): calibrated batches of calls, repeated."""
    f(x)
    n = 1
    while True:
        t = C.timed(lambda: [f(x) for _ in range(n)])
        if t > 0.1 or n >= 1 << 20:
            break
        n *= 4
    times = [C.timed(lambda: [f(x) for _ in range(n)]) / n for _ in range(reps)]
    return times, n


def call_median(f, x, calls):
    """Median seconds of `calls` single calls of f(x), each timed alone,
    less the median cost of the two clock reads.  Where a host slows some
    calls (on one Xeon a quarter of one-row calls took twice the median:
    perf-notes), the mean of a batch of calls above mixes both kinds; the
    median is the call as it runs undisturbed."""
    pc = time.perf_counter
    clock = []
    for _ in range(1000):
        t0 = pc()
        clock.append(pc() - t0)
    ts = []
    for _ in range(calls):
        t0 = pc()
        f(x)
        ts.append(pc() - t0)
    return statistics.median(ts) - statistics.median(clock)


def worker_main(a):
    import numpy as np
    cpus = C.pin_threads(a.threads)
    if a.quick:
        C.MIN_TOTAL_S = min(C.MIN_TOTAL_S, 0.3)
    base = {"bench": "predict", "peer": a.peer, "variant": a.peer,
            "threads": a.threads, "cpus": cpus, "dtype": "float32"}
    try:
        if a.peer != "numpy":
            __import__(C.PEER_MODULES[a.peer])
    except ImportError as e:
        C.emit(dict(base, skipped=f"import failed: {e}"))
        return
    kern = None
    if a.peer in ("numpy", "sklearn"):
        kern = C.openblas_kernel()
    elif a.peer == "torch":
        import torch
        kern = torch.backends.cpu.get_cpu_capability()
    elif a.peer == "bpcore":
        import bpcore
        kern = C.bpcore_config(bpcore)[0]

    # C3 throughput: one call on 60,000 samples
    cfg = C.CONFIGS["C3"]
    Ws, bs = C.init_params(cfg["layers"], "float32", seed=1)
    X, _ = C.make_data(cfg, "float32", a.n)
    f = make_predictor(a.peer, cfg, Ws, bs, a.threads)
    ref = numpy_forward(cfg, Ws, bs)
    with C.one_blas_thread():
        diff = float(np.abs(f(X[:1000]) - ref(X[:1000])).max())
    f(X)  # warm-up
    times = C.repeat(lambda: f(X), a.reps)
    s = C.summarize(times)
    C.emit(dict(base, case="C3 throughput", config="C3", n_samples=a.n,
                reps=len(times), **s, samples_per_s_max=a.n / s["min_s"],
                samples_per_s_median=a.n / s["median_s"],
                max_abs_diff=diff, kernel=kern))
    del X

    # single-sample latency, C1 and C3
    for name in ("C1a", "C3"):
        cfg = C.CONFIGS[name]
        Ws, bs = C.init_params(cfg["layers"], "float32", seed=1)
        X, _ = C.make_data(cfg, "float32", 16)
        x = X[3].copy()
        f = make_predictor(a.peer, cfg, Ws, bs, a.threads)
        out = np.asarray(f(x)).reshape(-1)
        # sklearn's MLPRegressor has an identity output layer
        rcfg = dict(cfg, out="identity") if (a.peer == "sklearn" and cfg["loss"] == "mse") else cfg
        with C.one_blas_thread():
            diff = float(np.abs(out - numpy_forward(rcfg, Ws, bs)(x)).max())
        times, ncalls = latency(f, x, a.reps)
        s = C.summarize(times)
        med = call_median(f, x, min(ncalls, 20000))
        C.emit(dict(base, case=f"{name[:2]} latency", config=name[:2],
                    calls_per_rep=ncalls, reps=len(times), **s,
                    call_median_s=med,
                    max_abs_diff=diff, out_shape=list(np.shape(f(x))), kernel=kern))


def sweep(peers, threads, quick=False, reps=None, log=print, facts=None):
    reps = reps or (3 if quick else 5)
    facts = facts or C.machine_facts()
    records = []
    for t in threads:
        for peer in peers:
            args = ["--peer", peer, "--threads", str(t), "--reps", str(reps),
                    "--n", str(N_THROUGHPUT)]
            if quick:
                args.append("--quick")
            for r in C.run_worker("bench_predict.py", args, peer, t):
                r.setdefault("bench", "predict")
                r["machine"] = facts
                records.append(r)
                head = f"predict {r.get('case', '')} T={t} {peer}"
                if "error" in r or "skipped" in r:
                    log(f"{head}: {r.get('error') or r.get('skipped')}")
                elif "samples_per_s_max" in r:
                    log(f"{head}: {C.fmt_rate(r['samples_per_s_max'])} samples/s best "
                        f"(diff {r['max_abs_diff']:.1e})")
                else:
                    log(f"{head}: {C.fmt_time(r['min_s'])} per call best, "
                        f"{C.fmt_time(r['median_s'])} median (diff {r['max_abs_diff']:.1e})")
    return records


# Rows of the tables: a record's case, or ", median call" after it for its
# call_median_s (absent from records made before it was measured)
CASES = ("C3 throughput", "C1 latency", "C3 latency",
         "C1 latency, median call", "C3 latency, median call")


def table(records, threads):
    idx = {}
    for r in records:
        if r.get("bench") == "predict" and "min_s" in r:
            idx[(r["case"], r["threads"], r["peer"])] = r
    peers = [p for p in PEERS if any(k[2] == p for k in idx)]
    tstr = " / ".join(str(t) for t in threads)
    lines = [f"Inference, float32, threads {tstr} (best of reps):", "",
             "| case | " + " | ".join(peers) + " |", "| --- |" + " --- |" * len(peers)]
    for case in CASES:
        base_case, _, median = case.partition(", ")
        cells = []
        for p in peers:
            parts = []
            for t in threads:
                r = idx.get((base_case, t, p))
                if r is None or (median and "call_median_s" not in r):
                    parts.append("-")
                elif "throughput" in case:
                    parts.append(C.fmt_rate(r["samples_per_s_max"]) + "/s")
                else:
                    parts.append(C.fmt_time(r["call_median_s" if median
                                              else "min_s"]))
            cells.append(" / ".join(parts))
        if median and all(c.strip("- /") == "" for c in cells):
            continue  # records from before the median was measured
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    lines += ["", "(latency: best over reps of the mean of a batch of calls; "
              "median call: the median of single calls timed one by one)"]
    if "bpcore" in peers:
        lines += ["", "Ratio bpcore / peer (>1: bpcore faster):", "",
                  "| case | " + " | ".join(p for p in peers if p != "bpcore") + " |",
                  "| --- |" + " --- |" * (len(peers) - 1)]
        for case in CASES:
            base_case, _, median = case.partition(", ")
            key = "call_median_s" if median else "min_s"
            cells = []
            for p in peers:
                if p == "bpcore":
                    continue
                parts = []
                for t in threads:
                    b = idx.get((base_case, t, "bpcore"))
                    r = idx.get((base_case, t, p))
                    parts.append(f"{r[key] / b[key]:.2f}"
                                 if b and r and key in b and key in r else "-")
                cells.append(" / ".join(parts))
            if median and all(c.strip("- /") == "" for c in cells):
                continue
            lines.append(f"| {case} | " + " | ".join(cells) + " |")
    bad = [(k, r["max_abs_diff"]) for k, r in idx.items() if r.get("max_abs_diff", 0) > 1e-4]
    if bad:
        lines += ["", "WARNING, outputs differ from numpy: " +
                  ", ".join(f"{k}: {d:.2e}" for k, d in bad)]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--peer", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=N_THROUGHPUT, help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.worker:
        a.threads = int(a.threads)
        a.reps = a.reps or 5
        worker_main(a)
        return
    threads = C.parse_list(a.threads, int)
    peers = []
    for p in C.parse_list(a.peers):
        ok, why = C.peer_available(p)
        if ok:
            peers.append(p)
        else:
            print(f"skipping {p}: {why}")
    recs = sweep(peers, threads, quick=a.quick, reps=a.reps)
    if a.out:
        with open(a.out, "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print()
    print(table(recs, threads))


if __name__ == "__main__":
    main()
