"""Where the time goes at 1 and 2 threads: products, fit, synchronisation.

Four sections, each case in a fresh subprocess whose thread environment is
set before any library loads (``_common.worker_env``), pinned to as many
CPUs as it has threads; at each thread count the cases run one after
another, so that the libraries and thread counts are interleaved in time.

``products``
    The three products of a layer, bpcore's kernel against ``torch.mm`` on
    the same shapes, GFLOP/s = 2 B n_in n_out / time (best and median of
    the repetitions), for each distinct layer shape of C3 (784-256-128-10,
    batch 128) and C4 (1024x4-10, batch 256): forward ``X W`` (B, n_in) @
    (n_in, n_out); weight gradient ``X^T delta`` (n_in, B) @ (B, n_out);
    input delta ``delta W^T`` (B, n_out) @ (n_out, n_in).  bpcore runs the
    private ``bpcore._core.matmul`` (its layer product on exactly the threads
    asked for), which allocates its output and its packing scratch at each
    call; torch gets the transposed views (``X.t() @ D``, ``D @ W.t()``)
    and allocates its output too.
``fit``
    ``Network.fit`` against a Python loop of ``Network.step`` over the same
    batches (SGD lr 0.01, no shuffling, float32), alternating in one
    process: samples/s of each and the ratio fit / step-loop (>= 1 means
    fit's own loop costs nothing).  C2, C3, C4 and a deep narrow network
    (32-64x6-10, batch 16).
``c2``
    The per-batch time of C2 fit broken into compute and synchronisation:
    t1 on one thread; t2 on a forced team of T threads (``BPCORE_TEAM=always``
    and fit's thread race told to always choose the team); compute share
    t1 / T; synchronisation + imbalance t2 - t1 / T, next to the host's
    calibrated cost of one team synchronisation times the synchronisations
    per batch (2 per layer + 1, less 1 when the output layer is narrower
    than the batch: the C core's count).  Also fit with ``n_threads=T`` and the
    automatic choice, as a ratio to the 1-thread rate.
``busy``
    Contention: a busy loop (a Python ``while`` loop, nothing else) pinned
    to the second allowed CPU runs while C2, C3, C4 and the deep network are
    trained at 1 and T threads by bpcore (automatic choice) and PyTorch;
    the table gives the T-thread / 1-thread ratio (the target: >= 0.5).
    The 1-thread cases are pinned to the first CPU, so they are not
    slowed by the loop; the team shares its second CPU with the loop.
    Then predict on C3 (one row, four rows and 1,000 rows per call) the
    same way, bpcore (its race between one thread and the team) against
    PyTorch (``torch.no_grad``): time per call, and the T-thread /
    1-thread ratio of the calls' rates.

Usage::

    python benchmarks/bench_threads.py [--quick] [--threads 1,2] [--reps N]
                                       [--only products,fit,c2,busy]
                                       [--busy] [--out FILE.jsonl]

``--busy`` is the contention mode alone (``--only busy``).  Writes the JSON
lines to ``--out`` (default ``benchmarks/out/threads-DATE-HOST.jsonl``) and
the tables beside it (same name, ``.md``).  A full run takes about 3-5
minutes on 2 cores; ``--quick`` about 1-2.
"""

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

SECTIONS = ("products", "fit", "c2", "busy")

# Product shapes: (config, batch, n_in, n_out), each distinct layer once.
PRODUCT_SHAPES = (("C3", 128, 784, 256), ("C3", 128, 256, 128),
                  ("C3", 128, 128, 10), ("C4", 256, 1024, 1024),
                  ("C4", 256, 1024, 10))
PRODUCTS = ("forward", "wgrad", "dinput")
PRODUCT_NAMES = {"forward": "X W", "wgrad": "X^T delta", "dinput": "delta W^T"}

# The fit configurations: C2, C3, C4 of benchmarks/README.md and a deep
# narrow network at batch 16 (the case where a second thread used to cost
# more than it saved).
DEEP = dict(layers=(32, 64, 64, 64, 64, 64, 64, 10), act="relu",
            out="softmax", loss="cross_entropy", batch=16,
            dtypes=("float32",))
FIT_CONFIGS = {"C2": C.CONFIGS["C2"], "C3": C.CONFIGS["C3"],
               "C4": C.CONFIGS["C4"], "Deep": DEEP}
# Samples per timed repetition, (full, quick): multiples of the batch size,
# a fraction of a second of training each on one core.
FIT_N = {"C2": (16_000, 4_000), "C3": (12_800, 3_840), "C4": (4_096, 1_024),
         "Deep": (16_000, 4_000)}
# The contention section: at most these many samples per repetition.
BUSY_N = {"C2": (8_000, 4_000), "C3": (6_400, 2_560), "C4": (2_048, 1_024),
          "Deep": (8_000, 4_000)}
# Every fit-type repetition is sized (in whole batches, at most the samples
# above) to last about REP_S seconds, from a warm-up of about WARM_S: a case
# that collapses (a team waiting for a descheduled thread can be 50 times
# slower) still ends in seconds.  Fast cases repeat until C.MIN_TOTAL_S.
REP_S = {False: 0.3, True: 0.1}
WARM_S = 0.1
# The contention section's predict: C3, these rows per call.
BUSY_PREDICT_ROWS = (1, 4, 1000)

# Minimum measured seconds per product (each is timed as a run of calls).
PRODUCT_MIN_TOTAL_S = {False: 0.3, True: 0.1}
PRODUCT_MIN_REP_S = {False: 0.005, True: 0.002}


def _layer_desc(cfg):
    ls = list(cfg["layers"])
    return "-".join(map(str, ls)) + f", batch {cfg['batch']}"


# ==========================================================================
# Workers
# ==========================================================================

def _make_net(bpcore, cfg):
    return bpcore.Network(list(cfg["layers"]), activation=cfg["act"],
                          output=cfg["out"], loss=cfg["loss"],
                          dtype="float32", seed=0)


def _chosen(race_mod, cfg, threads):
    """What fit's race last chose for this network (None: none): the thread
    count, with the team's cut when it chose one ("2 samples")."""
    try:
        for key, v in race_mod._CHOSEN.items():
            if tuple(key[0]) == tuple(cfg["layers"]) and key[2] == cfg["batch"] \
                    and key[3] == threads:
                if isinstance(v, int):  # a build from before the cut race
                    return v
                cut = {1: "columns", 2: "samples"}.get(v[1])
                return v[0] if cut is None else f"{v[0]} {cut}"
    except Exception:
        pass
    return None


def worker_products(a):
    import numpy as np
    quick = a.quick
    min_total, min_rep = PRODUCT_MIN_TOTAL_S[quick], PRODUCT_MIN_REP_S[quick]
    base = {"bench": "product", "peer": a.lib, "variant": a.lib,
            "threads": a.threads, "cpus": a.cpus, "dtype": "float32"}
    if a.lib == "torch":
        torch = C.import_torch(base, a.threads)
        if torch is None:
            return
        kernel = torch.backends.cpu.get_cpu_capability()
    else:
        import bpcore
        from bpcore import _core
        kernel, _ = C.bpcore_config(bpcore)

    rng = np.random.default_rng(0)
    for cfg, B, n_in, n_out in PRODUCT_SHAPES:
        X = rng.standard_normal((B, n_in)).astype(np.float32)
        W = rng.standard_normal((n_in, n_out)).astype(np.float32)
        D = rng.standard_normal((B, n_out)).astype(np.float32)
        with C.one_blas_thread():
            ref = {"forward": X.astype(np.float64) @ W,
                   "wgrad": X.T.astype(np.float64) @ D,
                   "dinput": D.astype(np.float64) @ W.T}
        if a.lib == "torch":
            Xt, Wt, Dt = (torch.from_numpy(v) for v in (X, W, D))
            calls = {"forward": lambda: torch.mm(Xt, Wt),
                     "wgrad": lambda: torch.mm(Xt.t(), Dt),
                     "dinput": lambda: torch.mm(Dt, Wt.t())}
        else:
            t = a.threads
            calls = {"forward": lambda: _core.matmul(X, W, n_threads=t),
                     "wgrad": lambda: _core.matmul(X, D, trans_a=True,
                                                   n_threads=t),
                     "dinput": lambda: _core.matmul(D, W, trans_b=True,
                                                    n_threads=t)}
        for prod in PRODUCTS:
            fn = calls[prod]
            out = fn()
            out = out.numpy() if a.lib == "torch" else out
            r = ref[prod]
            err = float(np.abs(out - r).max() / max(np.abs(r).max(), 1e-30))
            # warm-up, then as many calls per repetition as make min_rep
            t0 = time.perf_counter()
            n_calls = 0
            while n_calls < 2 or time.perf_counter() - t0 < min_rep:
                fn()
                n_calls += 1
            per = (time.perf_counter() - t0) / n_calls
            k = max(1, int(min_rep / max(per, 1e-9)))

            def run(fn=fn, k=k):
                for _ in range(k):
                    fn()
            times = []
            while (len(times) < a.reps or sum(times) < min_total) \
                    and len(times) < C.MAX_REPS:
                times.append(C.timed(run) / k)
            s = C.summarize(times)
            flop = 2.0 * B * n_in * n_out
            m, kk, n = {"forward": (B, n_in, n_out),
                        "wgrad": (n_in, B, n_out),
                        "dinput": (B, n_out, n_in)}[prod]
            C.emit(dict(base, config=cfg, batch=B, n_in=n_in, n_out=n_out,
                        product=prod, m=m, k=kk, n=n, calls_per_rep=k,
                        reps=len(times), **s, flop=flop,
                        gflops_best=flop / s["min_s"] / 1e9,
                        gflops_median=flop / s["median_s"] / 1e9,
                        max_rel_err=err, kernel=kernel))


def _fit_call(net, opt, X, Y, cfg, threads):
    """run(nb): fit on the first nb batches of X, Y."""
    B = cfg["batch"]

    def run(nb):
        net.fit(X[:nb * B], Y[:nb * B], epochs=1, batch_size=B,
                optimizer=opt, shuffle=False, n_threads=threads)
    return run


def _torch_mlp(torch, layers, head=None):
    """nn.Sequential of Linear layers with ReLU between them, and `head`
    (a module, or None) after the last."""
    mods = []
    for k in range(len(layers) - 1):
        mods.append(torch.nn.Linear(layers[k], layers[k + 1]))
        if k < len(layers) - 2:
            mods.append(torch.nn.ReLU())
    if head is not None:
        mods.append(head)
    return torch.nn.Sequential(*mods)


def _torch_call(cfg, X, Y, threads):
    """run(nb): PyTorch eager training on the first nb batches, as in
    bench_fit.py (nn.Sequential, CrossEntropyLoss, torch.optim.SGD)."""
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    model = _torch_mlp(torch, cfg["layers"])
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=C.LR)
    B = cfg["batch"]
    Xb = torch.split(torch.from_numpy(X), B)
    Yb = torch.split(torch.from_numpy(Y), B)

    def run(nb):
        for xb, yb in zip(Xb[:nb], Yb[:nb]):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
    return run, torch.backends.cpu.get_cpu_capability()


def _rep_batches(runs, nb_max, quick):
    """Warm up each run(nb) and return the batches of one repetition.

    One batch first (one-time costs), then about WARM_S seconds of batches;
    the slowest run's time per batch in that second call sizes the
    repetition to about REP_S seconds (at most nb_max batches), so that a
    case that collapses under contention still ends in seconds.
    """
    per = 0.0
    for run in runs:
        first = C.timed(lambda: run(1))
        nw = max(1, min(nb_max, int(WARM_S / max(first, 1e-9))))
        per = max(per, C.timed(lambda: run(nw)) / nw)
    return max(1, min(nb_max, int(REP_S[quick] / max(per, 1e-9))))


def worker_fit(a):
    """fit against a loop of step, alternating in one process."""
    import bpcore
    from bpcore import _race
    cfg = FIT_CONFIGS[a.config]
    n = FIT_N[a.config][1 if a.quick else 0]
    X, Y = C.make_data(dict(cfg, m=n), "float32", n)
    net = _make_net(bpcore, cfg)
    opt = bpcore.SGD(lr=C.LR)
    B, t = cfg["batch"], a.threads
    batches = [(X[i:i + B], Y[i:i + B]) for i in range(0, n, B)]
    fit_nb = _fit_call(net, opt, X, Y, cfg, t)

    def steps_nb(nb):
        for xb, yb in batches[:nb]:
            net.step(xb, yb, opt, n_threads=t)

    nb = _rep_batches((fit_nb, steps_nb), len(batches), a.quick)
    tf, ts = [], []
    while (len(tf) < a.reps or min(sum(tf), sum(ts)) < C.MIN_TOTAL_S) \
            and len(tf) < C.MAX_REPS:
        tf.append(C.timed(lambda: fit_nb(nb)))
        ts.append(C.timed(lambda: steps_nb(nb)))
    kernel, _ = C.bpcore_config(bpcore)
    sf, ss = C.summarize(tf), C.summarize(ts)
    m = nb * B
    C.emit({"bench": "fit_step", "config": a.config, "peer": "bpcore",
            "variant": "bpcore", "threads": t, "cpus": a.cpus,
            "dtype": "float32", "layers": list(cfg["layers"]), "batch": B,
            "n_samples": m, "reps": len(tf), "kernel": kernel,
            "fit": sf, "step": ss,
            "fit_samples_per_s_max": m / sf["min_s"],
            "fit_samples_per_s_median": m / sf["median_s"],
            "step_samples_per_s_max": m / ss["min_s"],
            "step_samples_per_s_median": m / ss["median_s"],
            "ratio_best": ss["min_s"] / sf["min_s"],
            "ratio_median": ss["median_s"] / sf["median_s"],
            "fit_chosen_threads": _chosen(_race, cfg, t)})


def worker_c2(a):
    """C2 fit per batch: one thread, a forced team, the automatic choice.

    The forced team is fit's own loop (no Python between batches) with the
    race's choice replaced by the team, so that t1 and t2 time the same C
    batch loop; a loop of step would add step's Python cost per batch
    (validation, the copy kept to undo a diverging update) to both.
    """
    if a.mode == "team":
        # read by the C core at its first choice: any work above its
        # minimum runs on the threads asked for
        os.environ["BPCORE_TEAM"] = "always"
    import bpcore
    from bpcore import _core, _race
    if a.mode == "team":
        def forced(self, chunk):
            # the team with the C core's rule for the cut
            return self.teams[0], chunk, False
        _race.ThreadRace.threads = forced
    cfg = C.CONFIGS["C2"]
    n = FIT_N["C2"][1 if a.quick else 0]
    X, Y = C.make_data(cfg, "float32", n)
    net = _make_net(bpcore, cfg)
    t = a.threads
    run_nb = _fit_call(net, bpcore.SGD(lr=C.LR), X, Y, cfg, t)
    nb = _rep_batches((run_nb,), n // cfg["batch"], a.quick)
    times = C.repeat(lambda: run_nb(nb), a.reps)
    s = C.summarize(times)
    m = nb * cfg["batch"]
    rec = {"bench": "c2_sync", "config": "C2", "mode": a.mode,
           "peer": "bpcore", "variant": "bpcore", "threads": t,
           "cpus": a.cpus, "dtype": "float32", "layers": list(cfg["layers"]),
           "batch": cfg["batch"], "n_samples": m, "n_batches": nb,
           "reps": len(times), **s,
           "batch_s_min": s["min_s"] / nb, "batch_s_median": s["median_s"] / nb,
           "samples_per_s_max": m / s["min_s"],
           "samples_per_s_median": m / s["median_s"],
           "bpcore_team_env": os.environ.get("BPCORE_TEAM"),
           "syncs_per_batch": net._arch.train_syncs(cfg["batch"]),
           "flops_per_batch_model": 6.0 * cfg["batch"] * net._n_weights,
           "kernel": C.bpcore_config(bpcore)[0],
           "fit_chosen_threads": _chosen(_race, cfg, t)}
    if t > 1:
        rec["team_costs"] = _core.team_costs(t)
        rec["chain_flops"] = getattr(_race, "CHAIN_FLOPS", None)
    C.emit(rec)


def worker_busy_fit(a):
    """bpcore (automatic choice) or PyTorch fit, for the contention table."""
    cfg = FIT_CONFIGS[a.config]
    n = BUSY_N[a.config][1 if a.quick else 0]
    X, Y = C.make_data(dict(cfg, m=n), "float32", n)
    base = {"bench": "busy_fit", "config": a.config, "peer": a.lib,
            "variant": a.lib, "threads": a.threads, "cpus": a.cpus,
            "dtype": "float32", "layers": list(cfg["layers"]),
            "batch": cfg["batch"], "busy_cpu": a.busy_cpu}
    if a.lib == "torch":
        try:
            run_nb, kernel = _torch_call(cfg, X, Y, a.threads)
        except ImportError as e:
            C.emit(dict(base, skipped=f"import failed: {e}"))
            return
        race = None
    else:
        import bpcore
        from bpcore import _race as race
        net = _make_net(bpcore, cfg)
        run_nb = _fit_call(net, bpcore.SGD(lr=C.LR), X, Y, cfg, a.threads)
        kernel = C.bpcore_config(bpcore)[0]
    nb = _rep_batches((run_nb,), n // cfg["batch"], a.quick)
    times = C.repeat(lambda: run_nb(nb), a.reps)
    s = C.summarize(times)
    m = nb * cfg["batch"]
    C.emit(dict(base, n_samples=m, reps=len(times), **s,
                samples_per_s_max=m / s["min_s"],
                samples_per_s_median=m / s["median_s"], kernel=kernel,
                fit_chosen_threads=race and _chosen(race, cfg, a.threads)))


def worker_busy_predict(a):
    """bpcore or PyTorch predict on C3, a.rows rows per call, for the
    contention table: seconds per call."""
    import numpy as np
    cfg = C.CONFIGS["C3"]
    X = np.random.default_rng(0).standard_normal(
        (a.rows, cfg["layers"][0])).astype(np.float32)
    base = {"bench": "busy_predict", "config": "C3", "peer": a.lib,
            "variant": a.lib, "threads": a.threads, "cpus": a.cpus,
            "dtype": "float32", "rows": a.rows, "busy_cpu": a.busy_cpu}
    chosen = None
    if a.lib == "torch":
        torch = C.import_torch(base, a.threads)
        if torch is None:
            return
        model = _torch_mlp(torch, cfg["layers"],
                           torch.nn.Softmax(dim=-1)).eval()
        tx = torch.from_numpy(X)

        def call():
            with torch.no_grad():
                model(tx)
        kernel = torch.backends.cpu.get_cpu_capability()
    else:
        import bpcore
        net = _make_net(bpcore, cfg)

        def call():
            net.predict(X, n_threads=a.threads)
        kernel = C.bpcore_config(bpcore)[0]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < WARM_S:  # warm-up; bpcore's race settles
        call()
    t0 = time.perf_counter()
    call()
    per = max(time.perf_counter() - t0, 1e-7)
    n = max(1, int(0.02 / per))  # calls per repetition: about 20 ms

    def run():
        for _ in range(n):
            call()
    times = [t / n for t in C.repeat(run, a.reps)]
    if a.lib == "bpcore":
        races = list(getattr(net._arch, "races", {}).values())
        chosen = races[0].state[0] if len(races) == 1 else None
    C.emit(dict(base, calls_per_rep=n, reps=len(times), **C.summarize(times),
                kernel=kernel, predict_chosen_threads=chosen))


def worker_main(a):
    a.cpus = C.pin_threads(a.threads)
    if a.quick:
        C.MIN_TOTAL_S = min(C.MIN_TOTAL_S, 0.3)
    {"products": worker_products, "fit": worker_fit, "c2": worker_c2,
     "busy": worker_busy_fit,
     "busy_predict": worker_busy_predict}[a.section](a)


# ==========================================================================
# The busy process
# ==========================================================================

# A spin loop on one CPU, nothing else; it leaves when its parent is gone
# (checked every few million iterations), so that it never outlives a
# killed benchmark.
_SPIN = """
import os
os.sched_setaffinity(0, {{{cpu}}})
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(2_000_000):
        pass
"""


class BusyLoop:
    """A process spinning on one CPU for the duration of a `with` block.

    Started, given `settle` seconds to be scheduled, and killed on leaving
    the block, whatever ends it (exception, Ctrl-C).  Its CPU time over the
    block is read from /proc, so the report says how much of the CPU it
    actually held ("calibrated": measured, not assumed).
    """

    def __init__(self, cpu, settle=0.5):
        self.cpu, self.settle = cpu, settle
        self.proc = None
        self.t0 = self.cpu0 = None
        self.share = None

    def _cpu_seconds(self):
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SPIN.format(cpu=self.cpu)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            time.sleep(self.settle)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the busy loop exited "
                                   f"(code {self.proc.returncode})")
            self.t0, self.cpu0 = time.perf_counter(), self._cpu_seconds()
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self):
        if self.proc is not None and self.proc.poll() is None:
            cpu1 = self._cpu_seconds()
            if self.t0 is not None and None not in (cpu1, self.cpu0):
                self.share = (cpu1 - self.cpu0) / (time.perf_counter() - self.t0)
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()

    def __exit__(self, *exc):
        self._stop()
        return False


# ==========================================================================
# Orchestration
# ==========================================================================

def _worker(section, threads, quick, reps, lib="bpcore", extra=()):
    args = ["--section", section, "--threads", str(threads),
            "--reps", str(reps), "--lib", lib] + list(extra)
    if quick:
        args.append("--quick")
    return C.run_worker("bench_threads.py", args,
                        "torch" if lib == "torch" else "bpcore", threads,
                        timeout=600)


def _libs(log):
    libs = ["bpcore"]
    ok, why = C.peer_available("torch")
    if ok:
        libs.append("torch")
    else:
        log(f"PyTorch not available ({why}): bpcore only")
    return libs


def sweep_products(threads, quick, reps, log):
    recs = []
    for t in threads:
        for lib in _libs(log):
            t0 = time.perf_counter()
            for r in _worker("products", t, quick, reps, lib):
                recs.append(r)
                if "gflops_best" in r:
                    log(f"products {r['config']} {r['n_in']}x{r['n_out']} "
                        f"{r['product']} T={t} {lib}: "
                        f"{r['gflops_best']:.1f} GFLOP/s best, "
                        f"{r['gflops_median']:.1f} median")
                else:
                    log(f"products T={t} {lib}: "
                        f"{r.get('error') or r.get('skipped')}")
            log(f"  [{time.perf_counter() - t0:.1f} s wall]")
    return recs


def sweep_fit(threads, quick, reps, log):
    recs = []
    for name in FIT_CONFIGS:
        for t in threads:
            for r in _worker("fit", t, quick, reps, extra=("--config", name)):
                recs.append(r)
                if "ratio_best" in r:
                    log(f"fit/step {name} T={t}: fit "
                        f"{C.fmt_rate(r['fit_samples_per_s_max'])}, step loop "
                        f"{C.fmt_rate(r['step_samples_per_s_max'])} samples/s"
                        f", ratio {r['ratio_best']:.2f}")
                else:
                    log(f"fit/step {name} T={t}: "
                        f"{r.get('error') or r.get('skipped')}")
    return recs


def sweep_c2(threads, quick, reps, log):
    T = max(threads)
    cases = [(1, "one")] + ([(T, "team"), (T, "auto")] if T > 1 else [])
    recs = []
    for t, mode in cases:
        for r in _worker("c2", t, quick, reps, extra=("--mode", mode)):
            recs.append(r)
            if "batch_s_min" in r:
                log(f"c2 {mode} T={t}: {C.fmt_time(r['batch_s_min'])} per "
                    f"batch, {C.fmt_rate(r['samples_per_s_max'])} samples/s")
            else:
                log(f"c2 {mode} T={t}: {r.get('error') or r.get('skipped')}")
    return recs


def sweep_busy(threads, quick, reps, log):
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(os.cpu_count() or 1))
    if len(cpus) < 2:
        log("busy: fewer than 2 CPUs usable; contention mode skipped")
        return [{"bench": "busy_fit", "skipped": "fewer than 2 CPUs"}]
    cpu = cpus[1]
    recs = []
    log(f"busy: starting a spin loop on CPU {cpu}")
    with BusyLoop(cpu) as busy:
        for name in FIT_CONFIGS:
            for t in threads:
                for lib in _libs(lambda s: None):
                    for r in _worker("busy", t, quick, reps, lib,
                                     extra=("--config", name, "--busy-cpu",
                                            str(cpu))):
                        recs.append(r)
                        if "samples_per_s_max" in r:
                            log(f"busy {name} T={t} {lib}: "
                                f"{C.fmt_rate(r['samples_per_s_max'])} "
                                f"samples/s best")
                        else:
                            log(f"busy {name} T={t} {lib}: "
                                f"{r.get('error') or r.get('skipped')}")
        for rows in BUSY_PREDICT_ROWS:
            for t in threads:
                for lib in _libs(lambda s: None):
                    for r in _worker("busy_predict", t, quick, reps, lib,
                                     extra=("--rows", str(rows), "--busy-cpu",
                                            str(cpu))):
                        recs.append(r)
                        if "min_s" in r:
                            log(f"busy predict C3 {rows} rows T={t} {lib}: "
                                f"{C.fmt_time(r['min_s'])} per call best, "
                                f"{C.fmt_time(r['median_s'])} median")
                        else:
                            log(f"busy predict C3 {rows} rows T={t} {lib}: "
                                f"{r.get('error') or r.get('skipped')}")
    share = busy.share
    log(f"busy: loop stopped; it held {100 * share:.0f}% of CPU {cpu}"
        if share is not None else "busy: loop stopped")
    recs.append({"bench": "busy_loop", "cpu": cpu, "cpu_share": share,
                 "settle_s": busy.settle})
    return recs


# ==========================================================================
# Tables
# ==========================================================================

def _ok(recs, bench):
    return [r for r in recs if r.get("bench") == bench
            and "error" not in r and "skipped" not in r]


def _ratio(a, b, fmt="{:.2f}"):
    return fmt.format(a / b) if a and b else "-"


def _first_layer_only(cfg, n_in, n_out):
    """Whether (n_in, n_out) is the first layer of cfg and no other one
    (the first layer's input delta is not needed in training)."""
    ls = C.CONFIGS[cfg]["layers"]
    pairs = list(zip(ls[:-1], ls[1:]))
    return pairs[0] == (n_in, n_out) and (n_in, n_out) not in pairs[1:]


def table_products(recs, threads):
    idx = {(r["config"], r["n_in"], r["n_out"], r["product"], r["peer"],
            r["threads"]): r for r in _ok(recs, "product")}
    if not idx:
        return ""
    tstr = " / ".join(map(str, threads))
    kern = {p: next((r.get("kernel") for k, r in idx.items() if k[4] == p),
                    None) for p in ("bpcore", "torch")}
    lines = [f"The three products of a layer, float32, GFLOP/s best (median), "
             f"threads {tstr}. bpcore: `_core.matmul` ({kern['bpcore']}), "
             f"which allocates its output and packing scratch per call; "
             f"PyTorch: `torch.mm` ({kern['torch']}), output allocated per "
             f"call too. m x k x n is the product's shape, (m, k) @ (k, n).",
             "", "| config | layer | product | m x k x n | bpcore | PyTorch "
             "| bpcore / PyTorch |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def cell(r):
        return f"{r['gflops_best']:.1f} ({r['gflops_median']:.1f})" if r else "-"
    for cfg, B, n_in, n_out in PRODUCT_SHAPES:
        for prod in PRODUCTS:
            bs = [idx.get((cfg, n_in, n_out, prod, "bpcore", t)) for t in threads]
            ts = [idx.get((cfg, n_in, n_out, prod, "torch", t)) for t in threads]
            any_r = next((r for r in bs + ts if r), None)
            if any_r is None:
                continue
            shape = f"{any_r['m']} x {any_r['k']} x {any_r['n']}"
            ratios = " / ".join(
                _ratio(b and b["gflops_best"], p and p["gflops_best"])
                for b, p in zip(bs, ts))
            note = " (*)" if prod == "dinput" and \
                _first_layer_only(cfg, n_in, n_out) else ""
            lines.append(f"| {cfg} | {n_in}-{n_out}, B {B} | "
                         f"{PRODUCT_NAMES[prod]}{note} | {shape} | "
                         f"{' / '.join(cell(r) for r in bs)} | "
                         f"{' / '.join(cell(r) for r in ts)} | {ratios} |")
    lines += ["", "(*) not computed in training (the first layer needs no "
              "input delta). Worst relative error against float64 numpy: "
              f"{max(r['max_rel_err'] for r in idx.values()):.1e}."]
    return "\n".join(lines)


def table_fit(recs, threads):
    idx = {(r["config"], r["threads"]): r for r in _ok(recs, "fit_step")}
    if not idx:
        return ""
    tstr = " / ".join(map(str, threads))
    lines = [f"`fit` against a Python loop of `step` on the same batches "
             f"(SGD, no shuffling, float32), samples/s best, threads {tstr}; "
             f"ratio = step-loop time / fit time, best (median) (>= 1: fit "
             f"is not slower); team = the thread count fit's race last chose "
             f"(-: no race, at 1 thread or when fit runs long batches one "
             f"by one).", "",
             "| config | fit | step loop | fit / step loop | "
             "fit T-thread / 1-thread | team |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, cfg in FIT_CONFIGS.items():
        rs = [idx.get((name, t)) for t in threads]
        if not any(rs):
            continue
        f = " / ".join(C.fmt_rate(r["fit_samples_per_s_max"]) if r else "-"
                       for r in rs)
        s = " / ".join(C.fmt_rate(r["step_samples_per_s_max"]) if r else "-"
                       for r in rs)
        ra = " / ".join(f"{r['ratio_best']:.2f} ({r['ratio_median']:.2f})"
                        if r else "-" for r in rs)
        one = idx.get((name, 1))
        sc = " / ".join(_ratio(r and r["fit_samples_per_s_max"],
                               one and one["fit_samples_per_s_max"])
                        for r in rs)
        ch = " / ".join(str(r.get("fit_chosen_threads") or "-") if r else "-"
                        for r in rs)
        lines.append(f"| {name} ({_layer_desc(cfg)}) | {f} | {s} | {ra} | "
                     f"{sc} | {ch} |")
    return "\n".join(lines)


def table_c2(recs):
    by = {r["mode"]: r for r in _ok(recs, "c2_sync")}
    one = by.get("one")
    if one is None:
        return ""
    team, auto = by.get("team"), by.get("auto")
    syncs = one["syncs_per_batch"]
    lines = ["C2 (64-128-64-10, batch 32) per batch, from fit's own loop "
             "(best repetition; median in brackets):", "",
             "| quantity | time per batch | samples/s | note |",
             "| --- | --- | --- | --- |"]

    def row(what, r, note=""):
        lines.append(f"| {what} | {C.fmt_time(r['batch_s_min'])} "
                     f"({C.fmt_time(r['batch_s_median'])}) | "
                     f"{C.fmt_rate(r['samples_per_s_max'])} | {note} |")
    t1 = one["batch_s_min"]
    row("t1: 1 thread", one)
    if team is not None:
        T = team["threads"]
        t2 = team["batch_s_min"]
        row(f"t2: forced team of {T}", team,
            "`BPCORE_TEAM=always`, race forced to the team")
        lines.append(f"| compute share t1/{T} | {C.fmt_time(t1 / T)} | | "
                     f"a perfect split of t1 |")
        lines.append(f"| synchronisation + imbalance t2 - t1/{T} | "
                     f"{C.fmt_time(t2 - t1 / T)} | | "
                     f"{100 * (t2 - t1 / T) / t2:.0f}% of t2 |")
        tc = team.get("team_costs") or {}
        if tc.get("sync"):
            lines.append(f"| calibrated: {tc['sync'] * 1e6:.3g} us per sync x "
                         f"{syncs:.0f} syncs | {C.fmt_time(tc['sync'] * syncs)}"
                         f" | | `_core.team_costs({T})['sync']`, "
                         f"measured in the forced run |")
            cf = team.get("chain_flops")
            if cf and tc.get("step_f32"):
                one_m = team["flops_per_batch_model"] * tc["step_f32"] / cf
                lines.append(f"| model: 1 thread / team | {C.fmt_time(one_m)}"
                             f" / {C.fmt_time(one_m / T + syncs * tc['sync'])}"
                             f" | | fit's cost model (calibration chain) |")
    if auto is not None:
        T = auto["threads"]
        ch = auto.get("fit_chosen_threads")
        row(f"automatic, n_threads={T}", auto,
            f"{auto['samples_per_s_max'] / one['samples_per_s_max']:.2f}x "
            f"the 1-thread rate (target >= 0.97); race chose "
            f"{ch if ch is not None else '-'}")
    return "\n".join(lines)


def table_busy(recs, threads):
    idx = {(r["config"], r["peer"], r["threads"]): r
           for r in _ok(recs, "busy_fit")}
    loop = next((r for r in recs if r.get("bench") == "busy_loop"), None)
    if not idx:
        skipped = next((r for r in recs if r.get("bench") == "busy_fit"
                        and "skipped" in r), None)
        return f"Contention: skipped ({skipped['skipped']})." if skipped else ""
    T = max(threads)
    tstr = " / ".join(map(str, threads))
    share = loop and loop.get("cpu_share")
    held = (f", which held {100 * share:.0f}% of that CPU over the section"
            if share is not None else "")
    lines = [f"Contention: a spin loop pinned to CPU {loop and loop['cpu']}"
             f"{held}. fit samples/s best, threads {tstr} (the 1-thread case "
             f"runs on the other CPU); ratio = {T}-thread / 1-thread rate "
             f"(target >= 0.5).", "",
             "team = the thread count bpcore's race last chose (-: none).", "",
             "| config | bpcore | ratio | team | PyTorch | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, cfg in FIT_CONFIGS.items():
        cells = []
        for lib in ("bpcore", "torch"):
            rs = [idx.get((name, lib, t)) for t in threads]
            cells.append(" / ".join(C.fmt_rate(r["samples_per_s_max"])
                                    if r else "-" for r in rs))
            one, top = idx.get((name, lib, 1)), idx.get((name, lib, T))
            cells.append(_ratio(top and top["samples_per_s_max"],
                                one and one["samples_per_s_max"]))
            if lib == "bpcore":
                cells.append(" / ".join(str(r.get("fit_chosen_threads") or "-")
                                        if r else "-" for r in rs))
        if any(c not in ("-", "- / -") for c in cells):
            lines.append(f"| {name} ({_layer_desc(cfg)}) | " +
                         " | ".join(cells) + " |")
    return "\n".join(lines)


def table_busy_predict(recs, threads):
    idx = {(r["rows"], r["peer"], r["threads"]): r
           for r in _ok(recs, "busy_predict")}
    if not idx:
        return ""
    T = max(threads)
    tstr = " / ".join(map(str, threads))
    lines = [f"Contention, predict on C3: time per call (median), threads "
             f"{tstr}; ratio = {T}-thread / 1-thread rate of calls (target "
             f">= 0.5). team = the thread count bpcore's predict race last "
             f"chose.", "",
             "| rows per call | bpcore | ratio | team | PyTorch | ratio |",
             "| --- | --- | --- | --- | --- | --- |"]
    for rows in sorted({k[0] for k in idx}):
        cells = []
        for lib in ("bpcore", "torch"):
            rs = [idx.get((rows, lib, t)) for t in threads]
            cells.append(" / ".join(C.fmt_time(r["median_s"]) if r else "-"
                                    for r in rs))
            one, top = idx.get((rows, lib, 1)), idx.get((rows, lib, T))
            cells.append(_ratio(one and one["median_s"],
                                top and top["median_s"]))
            if lib == "bpcore":
                cells.append(" / ".join(
                    str(r.get("predict_chosen_threads") or "-") if r else "-"
                    for r in rs))
        lines.append(f"| {rows} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_short(facts, kernel):
    """File-name tag of the host: e.g. 'xeon-spr-avx512-2core'."""
    model = (facts.get("cpu_model") or "").lower()
    flags = facts.get("cpu_flags") or []
    gen = C.cpu_generation(facts)
    if "epyc" in model:
        name = f"epyc-{gen}" if gen else "epyc"
    elif "xeon" in model:
        # AMX appeared with Sapphire Rapids; some VMs hide it, and the
        # model number then tells
        name = (f"xeon-{gen}" if gen else
                "xeon-spr" if "amx_tile" in flags else "xeon")
    else:
        name = (model.split() or ["cpu"])[0].strip("()")
    isa = (kernel or "unknown").lower()
    return f"{name}-{isa}-{facts.get('n_cpus_affinity')}core"


def report_text(recs, threads, facts, mode, wall=None, load=None):
    vers = facts.get("versions", {})
    kernel = next((r.get("kernel") for r in recs if r.get("peer") == "bpcore"
                   and r.get("kernel")), None)
    lines = [f"# bpcore threads benchmark, {facts.get('date')}", "",
             f"- CPU: {C.cpu_label(facts)}, {facts.get('n_cpus_affinity')}"
             f" usable CPUs, flags: {' '.join(facts.get('cpu_flags', []))}; "
             f"bpcore kernel: {kernel}",
             f"- git commit: {facts.get('git_commit')}; Python "
             f"{facts.get('python')}; " +
             ", ".join(f"{k} {v}" for k, v in vers.items() if v),
             f"- mode: {mode}; threads {threads}" +
             (f"; wall time {wall:.0f} s" if wall is not None else "") +
             (f"; load average before / after: {load[0]:.2f} / {load[1]:.2f}"
              if load else ""),
             "- Absolute numbers drift between runs on shared VMs (and "
             "collapse at 2 threads when anything else runs); compare ratios "
             "within this run.", ""]
    for r in recs:
        if "error" in r:
            lines.append(f"- error: {r.get('bench') or r.get('args')} "
                         f"T={r.get('threads')} {r.get('peer')}: {r['error']}")
    for part in (table_products(recs, threads), table_fit(recs, threads),
                 table_c2(recs), table_busy(recs, threads),
                 table_busy_predict(recs, threads)):
        if part:
            lines += [part, ""]
    lines.append(f"Curated file name for this host: `benchmarks/results/"
                 f"{datetime.date.today().isoformat()}-threads-"
                 f"{cpu_short(facts, kernel)}.{{md,jsonl}}`")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--section", help=argparse.SUPPRESS)
    ap.add_argument("--lib", default="bpcore", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2", help="thread counts, e.g. 1,2")
    ap.add_argument("--reps", type=int, default=None,
                    help="minimum timed repetitions (3; 2 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, shorter measurements")
    ap.add_argument("--only", default=None,
                    help="sections: " + ",".join(SECTIONS))
    ap.add_argument("--busy", action="store_true",
                    help="contention mode alone (same as --only busy)")
    ap.add_argument("--busy-cpu", type=int, default=None,
                    help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None,
                    help="JSON lines (default benchmarks/out/"
                         "threads-DATE-HOST.jsonl); the .md goes beside it")
    ap.add_argument("--report", default=None, metavar="FILE.jsonl",
                    help="only print the tables of an earlier run")
    return ap.parse_args(argv)


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through BusyLoop's cleanup


def main(argv=None):
    a = parse_args(argv)
    if a.worker:
        a.threads = int(a.threads)
        a.reps = a.reps or 3
        worker_main(a)
        return
    if a.report:
        with open(a.report) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        thr = sorted({r["threads"] for r in recs if "threads" in r})
        facts = next((r["machine"] for r in recs if "machine" in r), {})
        print(report_text(recs, thr, facts, "report"))
        return
    threads = sorted(set(C.parse_list(a.threads, int)))
    if 1 not in threads:
        sys.exit("--threads must include 1 (every ratio is to 1 thread)")
    sections = C.parse_list(a.only) if a.only else list(SECTIONS)
    if a.busy:
        sections = ["busy"]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        sys.exit(f"--only: unknown {sorted(unknown)}; sections are "
                 f"{','.join(SECTIONS)}")
    reps = a.reps or (2 if a.quick else 3)
    if os.environ.pop("BPCORE_TEAM", None) is not None:
        print("note: BPCORE_TEAM removed from the workers' environment "
              "(only the forced-team case sets it)")
    signal.signal(signal.SIGTERM, _sigterm)

    facts = C.machine_facts()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or os.path.join(C.HERE, "out",
                                f"threads-{stamp}-{socket.gethostname()}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    mode = "quick" if a.quick else "full"
    load0 = os.getloadavg()[0]
    print(f"# bpcore threads benchmark {facts['date']}: {C.cpu_label(facts)}, "
          f"{facts['n_cpus_affinity']} CPUs, git {facts['git_commit']}; "
          f"sections {','.join(sections)}; threads {threads}; {mode}; "
          f"load average {load0:.2f}", flush=True)
    partial = open(out + ".partial", "w")

    def sink(rec):  # an interrupted run keeps what it measured
        partial.write(json.dumps(dict(rec, machine=facts)) + "\n")
        partial.flush()
    C.RECORD_SINK = sink

    def log(s):
        print(s, flush=True)

    t_start = time.perf_counter()
    recs = []
    sweeps = {"products": lambda: sweep_products(threads, a.quick, reps, log),
              "fit": lambda: sweep_fit(threads, a.quick, reps, log),
              "c2": lambda: sweep_c2(threads, a.quick, reps, log),
              "busy": lambda: sweep_busy(threads, a.quick, reps, log)}
    for s in SECTIONS:
        if s in sections:
            recs += sweeps[s]()
    partial.close()
    for r in recs:
        r["machine"] = facts
    with open(out, "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    os.remove(out + ".partial")
    text = report_text(recs, threads, facts, mode,
                       wall=time.perf_counter() - t_start,
                       load=(load0, os.getloadavg()[0]))
    md = os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nJSON lines: {out}\nmarkdown:   {md}")


if __name__ == "__main__":
    main()
