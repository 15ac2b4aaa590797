"""Peak memory of ``Network.fit``: what one epoch allocates beyond the data.

The target (the issue on fit's memory) is a peak close to the data plus the
parameters, the optimizer state and one batch of activations.  For
configurations C1a, C2, C3 and C4 (float32, the full ``m`` of each) and two
optimizers (plain SGD, no state; Adam, two state vectors), each case runs in
a fresh subprocess that creates the data, builds the network and the
optimizer, and then calls ``fit`` once, with no warm-up, so that every
allocation of the call is seen::

    net.fit(X, Y, epochs=1, batch_size=B, optimizer=opt, shuffle=True,
            n_threads=T)

Measured:

- **RSS extra**: peak resident set size during the call minus the RSS just
  before it.  The kernel's peak counter (VmHWM) is reset by writing "5" to
  ``/proc/self/clear_refs`` before the call and read after it; where that is
  not permitted, a thread samples VmRSS every millisecond instead.  Freed
  heap memory is handed back (``malloc_trim``) before the baseline, so that
  the call cannot reuse pages that were already resident.
- **tracemalloc peak**: the peak of Python-side allocations made during the
  call (numpy arrays included), traced with one frame; tracemalloc is
  started before the RSS baseline, so its own bookkeeping is small.

Expected, from the shapes (itemsize s = 4 for float32, batch B, widths n_k):

- data: ``X.nbytes + Y.nbytes`` as passed (Y is int64 labels for softmax CE);
- parameters: ``n_params * s``; optimizer state: 0 for SGD, 2 x parameters
  for Adam;
- one batch of activations: net, out and delta of layers 1..L
  (``3 * B * sum(n_1..n_L) * s``) plus the batch copies of X and Y
  (``B * (n_0 + n_L) * s``);
- shuffle index: ``8 * m`` (int64 permutation).

ratio = RSS extra / (parameters + optimizer state + activations + shuffle
index).  The parameters already exist before the call, so they stand for
the gradient buffer of the same size that training needs; a ratio near 1
means fit allocates little beyond that, a ratio well above 1 points at a
copy (of the data, the targets or the parameters).

Usage::

    python benchmarks/bench_memory.py [--only C3[,C4]] [--optimizers sgd,adam]
                                      [--threads 1] [--poll] [--out FILE.jsonl]

``python benchmarks/run_all.py --only memory`` runs it from the combined
runner (it is part of the full run too).

Out-of-core (``--memmap``): the peak RSS of ``fit`` on a float32
``np.memmap`` of ``--memmap-gb`` GB (default 2) must stay below 300 MB.  A
``.npy`` file of X (m, 64) float32 and one of y (m, 1) float32 are written
in pieces (never whole in memory) under ``--memmap-dir`` (default: the
system's temporary folder), then a fresh subprocess opens both with
``np.load(mmap_mode="r")`` and runs one shuffled epoch::

    net = bpcore.Network([64, 32, 1], activation="relu", output="identity")
    net.fit(Xm, ym, epochs=1, batch_size=256, shuffle=True)

and reports the process's peak RSS (VmHWM since it started, imports
included), the peak during fit alone, and the wall time.  The files are
removed afterwards.  Usage::

    python benchmarks/bench_memory.py --memmap [--memmap-gb 2]
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

CONFIG_NAMES = ("C1a", "C2", "C3", "C4")
OPTIMIZERS = ("sgd", "adam")
DTYPE = "float32"
POLL_S = 0.001


# ==========================================================================
# Memory probes (Linux /proc; the worker reports what it could use)
# ==========================================================================

def proc_status(*keys):
    """{key: bytes} of /proc/self/status lines such as VmRSS, VmHWM (in kB)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0]) * 1024
    return out


def reset_peak():
    """Reset VmHWM to the current RSS; True when the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    s = proc_status("VmRSS", "VmHWM")
    return s["VmHWM"] <= s["VmRSS"] + 256 * 1024


def trim_heap():
    """Give freed malloc memory back to the OS (glibc); True if it ran."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


class RssPoller:
    """A thread that samples VmRSS every POLL_S seconds and keeps the max."""

    def __init__(self):
        import threading
        self.peak = proc_status("VmRSS")["VmRSS"]
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status("VmRSS")["VmRSS"])
            self.samples += 1
            time.sleep(POLL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status("VmRSS")["VmRSS"])
        return False


# ==========================================================================
# Expected sizes
# ==========================================================================

def expected_bytes(cfg, X, Y, n_params, optimizer):
    """The sizes the issue names, in bytes, from the shapes alone."""
    import numpy as np

    s = np.dtype(DTYPE).itemsize
    layers = cfg["layers"]
    m = X.shape[0]
    B = m if cfg["batch"] is None else min(cfg["batch"], m)
    params = n_params * s
    state = {"sgd": 0, "adam": 2}[optimizer] * params
    acts = 3 * B * sum(layers[1:]) * s + B * (layers[0] + layers[-1]) * s
    shuffle = 8 * m
    data = X.nbytes + Y.nbytes
    extra = params + state + acts + shuffle
    return {"data_bytes": data, "param_bytes": params, "state_bytes": state,
            "activation_bytes": acts, "shuffle_bytes": shuffle,
            "expected_total_bytes": data + extra,
            "expected_extra_bytes": extra}


# ==========================================================================
# Worker: one (config, optimizer, threads) case in a fresh process
# ==========================================================================

def make_optimizer(bpcore, name):
    if name == "adam":
        return bpcore.Adam(lr=0.001)
    return bpcore.SGD(lr=C.LR)


def measure_fit(fit, poll):
    """Run fit() once; RSS before, peak RSS and tracemalloc peak during it."""
    import gc
    import tracemalloc

    tracemalloc.start(1)
    gc.collect()
    trimmed = trim_heap()
    before = proc_status("VmRSS")["VmRSS"]
    hwm_ok = reset_peak()
    tracemalloc.reset_peak()
    traced0 = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    if poll or not hwm_ok:
        with RssPoller() as poller:
            fit()
    else:
        poller = None
        fit()
    wall = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1] - traced0
    status = proc_status("VmRSS", "VmHWM")
    tracemalloc.stop()
    rec = {"rss_before_bytes": before, "rss_after_bytes": status["VmRSS"],
           "tracemalloc_peak_bytes": traced_peak, "fit_s": wall,
           "malloc_trim": trimmed, "hwm_reset": hwm_ok}
    if hwm_ok:
        rec["peak_method"] = "VmHWM reset by clear_refs"
        rec["rss_peak_bytes"] = status["VmHWM"]
    else:
        rec["peak_method"] = f"VmRSS polled every {POLL_S * 1e3:g} ms"
        rec["rss_peak_bytes"] = poller.peak
    if poller is not None:
        rec["rss_peak_polled_bytes"] = poller.peak
        rec["poll_samples"] = poller.samples
    return rec


def worker_main(a):
    cpus = C.pin_threads(a.threads)
    cfg = C.CONFIGS[a.config]
    base = {"bench": "memory", "config": a.config, "dtype": DTYPE,
            "threads": a.threads, "peer": "bpcore", "optimizer": a.optimizer,
            "cpus": cpus, "layers": list(cfg["layers"]), "batch": cfg["batch"],
            "n_samples": cfg["m"], "epochs": 1, "shuffle": True}
    try:
        import bpcore
    except ImportError as e:
        C.emit(dict(base, skipped=f"import failed: {e}"))
        return
    X, Y = C.make_data(cfg, DTYPE)
    net = bpcore.Network(list(cfg["layers"]), activation=cfg["act"],
                         output=cfg["out"], loss=cfg["loss"], dtype=DTYPE,
                         seed=0)
    opt = make_optimizer(bpcore, a.optimizer)

    def fit():
        net.fit(X, Y, epochs=1, batch_size=cfg["batch"], optimizer=opt,
                shuffle=True, n_threads=a.threads)

    rec = dict(base, **measure_fit(fit, a.poll),
               **expected_bytes(cfg, X, Y, net.n_params, a.optimizer))
    rec["rss_extra_bytes"] = rec["rss_peak_bytes"] - rec["rss_before_bytes"]
    rec["ratio"] = rec["rss_extra_bytes"] / rec["expected_extra_bytes"]
    kernel, _ = C.bpcore_config(bpcore)
    rec["kernel"] = kernel
    rec["bpcore_version"] = getattr(bpcore, "__version__", None)
    C.emit(rec)


# ==========================================================================
# Orchestration
# ==========================================================================

def sweep(threads, only=None, optimizers=OPTIMIZERS, poll=False, log=print,
          facts=None):
    """Run every case in a subprocess; return the list of JSON records."""
    facts = facts or C.machine_facts()
    records = []
    for name in CONFIG_NAMES:
        if only and name not in only:
            continue
        for t in threads:
            for opt in optimizers:
                args = ["--config", name, "--optimizer", opt,
                        "--threads", str(t)] + (["--poll"] if poll else [])
                t0 = time.perf_counter()
                for r in C.run_worker("bench_memory.py", args, "bpcore", t):
                    r.setdefault("bench", "memory")
                    r.setdefault("config", name)
                    r.setdefault("optimizer", opt)
                    r["machine"] = facts
                    records.append(r)
                    log(_one_line(r, time.perf_counter() - t0))
    return records


def fmt_bytes(n):
    """1234567 -> '1.18 MiB'."""
    if n is None:
        return "-"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _one_line(r, wall):
    head = f"memory {r.get('config')} {r.get('optimizer')} T={r.get('threads')}"
    if "error" in r:
        return f"{head}: ERROR {r['error']}"
    if "skipped" in r:
        return f"{head}: skipped ({r['skipped']})"
    return (f"{head}: RSS +{fmt_bytes(r['rss_extra_bytes'])} during fit, "
            f"expected +{fmt_bytes(r['expected_extra_bytes'])} "
            f"(ratio {r['ratio']:.2f}); tracemalloc peak "
            f"{fmt_bytes(r['tracemalloc_peak_bytes'])} [{wall:.1f} s wall]")


COLUMNS = (("data X+Y", "data_bytes"), ("params", "param_bytes"),
           ("opt. state", "state_bytes"), ("1 batch act.", "activation_bytes"),
           ("shuffle idx", "shuffle_bytes"), ("expected total", "expected_total_bytes"),
           ("expected extra", "expected_extra_bytes"),
           ("RSS before fit", "rss_before_bytes"),
           ("RSS extra (measured)", "rss_extra_bytes"))


def table(records):
    """Markdown table: expected sizes, measured RSS extra, ratio."""
    recs = [r for r in records if r.get("bench") == "memory" and "ratio" in r]
    recs.sort(key=lambda r: (CONFIG_NAMES.index(r["config"]), r["threads"],
                             OPTIMIZERS.index(r["optimizer"])))
    methods = sorted({r["peak_method"] for r in recs})
    lines = ["Peak memory of one fit epoch (float32, shuffle=True, no warm-up; "
             f"peak: {', '.join(methods) or '-'}):", "",
             "| config | optimizer | T | " + " | ".join(c for c, _ in COLUMNS) +
             " | ratio | tracemalloc peak |",
             "| --- | --- | --- |" + " --- |" * (len(COLUMNS) + 2)]
    for r in recs:
        cells = [fmt_bytes(r[k]) for _, k in COLUMNS]
        lines.append(f"| {r['config']} | {r['optimizer']} | {r['threads']} | " +
                     " | ".join(cells) + f" | {r['ratio']:.2f} | "
                     f"{fmt_bytes(r['tracemalloc_peak_bytes'])} |")
    lines += ["", "expected total = data + params + optimizer state + one batch "
              "of activations (net, out, delta per layer, plus the X/Y batch "
              "copies) + shuffle index (8 m); expected extra = the same without "
              "the data, which exists before fit (params stand for the "
              "gradient buffer); ratio = RSS extra / expected extra.  RSS extra "
              "= peak RSS during fit - RSS just before it; tracemalloc peak = "
              "Python-side allocations (numpy included) during fit."]
    return "\n".join(lines)


# ==========================================================================
# Out-of-core: fit on a memmap larger than the RSS budget
# ==========================================================================

MEMMAP_FEATURES = 64
MEMMAP_LIMIT = 300 * 10**6


def write_memmap_files(folder, gb):
    """X (m, 64) and y (m, 1) float32 .npy files of about gb GB in all,
    written a slab at a time; returns (x_path, y_path, m)."""
    import numpy as np
    m = int(gb * 10**9) // (4 * (MEMMAP_FEATURES + 1))
    xp, yp = os.path.join(folder, "X.npy"), os.path.join(folder, "y.npy")
    X = np.lib.format.open_memmap(xp, mode="w+", dtype=np.float32,
                                  shape=(m, MEMMAP_FEATURES))
    y = np.lib.format.open_memmap(yp, mode="w+", dtype=np.float32,
                                  shape=(m, 1))
    rng = np.random.default_rng(0)
    w = rng.normal(size=MEMMAP_FEATURES).astype(np.float32)
    step = 1 << 16
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        slab = rng.standard_normal((r1 - r0, MEMMAP_FEATURES),
                                   dtype=np.float32)
        X[r0:r1] = slab
        y[r0:r1, 0] = np.tanh(slab @ w / 8)
        X.flush()
        X._mmap.madvise(__import__("mmap").MADV_DONTNEED)
    X.flush()
    y.flush()
    del X, y
    return xp, yp, m


def memmap_worker(a):
    import numpy as np
    status0 = proc_status("VmRSS", "VmHWM")
    import bpcore
    Xm = np.load(a.x_path, mmap_mode="r")
    ym = np.load(a.y_path, mmap_mode="r")
    net = bpcore.Network([MEMMAP_FEATURES, 32, 1], activation="relu",
                         output="identity", seed=0)
    before = proc_status("VmRSS")["VmRSS"]
    hwm_ok = reset_peak()
    t0 = time.perf_counter()
    hist = net.fit(Xm, ym, epochs=1, batch_size=256, shuffle=True,
                   optimizer=bpcore.Adam(lr=0.001), n_threads=a.threads)
    wall = time.perf_counter() - t0
    status = proc_status("VmRSS", "VmHWM")
    import resource
    C.emit({"bench": "memory-memmap", "n_samples": int(Xm.shape[0]),
            "n_features": MEMMAP_FEATURES,
            "data_bytes": int(Xm.nbytes + ym.nbytes),
            "threads": a.threads, "rss_at_start_bytes": status0["VmRSS"],
            "rss_before_fit_bytes": before,
            "rss_peak_during_fit_bytes": status["VmHWM"] if hwm_ok else None,
            "rss_peak_process_bytes":
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "fit_s": wall, "loss": hist.loss[-1],
            "bpcore_version": bpcore.__version__})


def memmap_main(a):
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(dir=a.memmap_dir) as folder:
        t0 = time.perf_counter()
        xp, yp, m = write_memmap_files(folder, a.memmap_gb)
        print(f"wrote {m} rows x {MEMMAP_FEATURES} float32 "
              f"({os.path.getsize(xp) / 1e9:.2f} GB) + targets in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker",
               "--memmap", "--x-path", xp, "--y-path", yp,
               "--threads", str(a.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"worker failed:\n{out.stderr}")
        rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["machine"] = C.machine_facts()
    peak = rec["rss_peak_process_bytes"]
    rec["limit_bytes"] = MEMMAP_LIMIT
    rec["below_limit"] = peak < MEMMAP_LIMIT
    print(f"fit on a {rec['data_bytes'] / 1e9:.2f} GB memmap "
          f"({rec['n_samples']} rows, 1 epoch, batch 256, T={rec['threads']}): "
          f"peak RSS {fmt_bytes(peak)} for the whole process "
          f"(during fit {fmt_bytes(rec['rss_peak_during_fit_bytes'])}, "
          f"before it {fmt_bytes(rec['rss_before_fit_bytes'])}); limit "
          f"{fmt_bytes(MEMMAP_LIMIT)}: "
          f"{'below' if rec['below_limit'] else 'ABOVE'}; fit "
          f"{rec['fit_s']:.1f} s")
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(rec) + "\n")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--optimizer", choices=OPTIMIZERS, help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1", help="thread counts, e.g. 1,2")
    ap.add_argument("--only", default=None, help="configs, e.g. C3 or C2,C4")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    ap.add_argument("--poll", action="store_true",
                    help="also sample VmRSS every 1 ms (cross-check of VmHWM)")
    ap.add_argument("--out", default=None, help="append JSON lines to this file")
    ap.add_argument("--memmap", action="store_true",
                    help="measure fit on a float32 memmap instead")
    ap.add_argument("--memmap-gb", type=float, default=2.0)
    ap.add_argument("--memmap-dir", default=None)
    ap.add_argument("--x-path", help=argparse.SUPPRESS)
    ap.add_argument("--y-path", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.memmap:
        a.threads = int(a.threads)
        if a.worker:
            memmap_worker(a)
        else:
            memmap_main(a)
        return
    if a.worker:
        a.threads = int(a.threads)
        worker_main(a)
        return
    threads = C.parse_list(a.threads, int)
    only = C.parse_list(a.only) if a.only else None
    optimizers = C.parse_list(a.optimizers)
    bad = set(optimizers) - set(OPTIMIZERS) | set(only or ()) - set(CONFIG_NAMES)
    if bad:
        sys.exit(f"unknown {sorted(bad)}; configs {CONFIG_NAMES}, "
                 f"optimizers {OPTIMIZERS}")
    recs = sweep(threads, only=only, optimizers=optimizers, poll=a.poll)
    if a.out:
        with open(a.out, "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print()
    print(table(recs))


if __name__ == "__main__":
    main()
