"""Shared pieces of the benchmark scripts: configurations, machine facts,
subprocess workers with a controlled thread count, timing statistics.

Not part of bpcore and not collected by pytest.  The scripts in this folder
import it as a sibling module (they are run as ``python benchmarks/X.py``).
"""

import datetime
import importlib.util
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# --------------------------------------------------------------------------
# Configurations (benchmarks/README.md).  "n_full" and "n_quick" are the number of
# training samples actually used per repetition (the same for every peer);
# "epochs" is how many passes over those samples make one repetition.  Both
# are chosen so that one repetition of the slowest peer lasts seconds, not
# minutes.
# n is always a multiple of the batch size so that every peer (including
# JAX's lax.scan, which needs equal batches) does exactly the same updates.
# --------------------------------------------------------------------------

CONFIGS = {
    "C1a": dict(layers=(2, 3, 2, 2), act="sigmoid", out="sigmoid", loss="mse",
                m=100_000, batch=32, dtypes=("float32", "float64"),
                n_full=100_000, n_quick=20_000, epochs=1),
    "C1b": dict(layers=(2, 3, 2, 2), act="sigmoid", out="sigmoid", loss="mse",
                m=100_000, batch=None, dtypes=("float32", "float64"),
                n_full=100_000, n_quick=100_000, epochs=40, epochs_quick=10),
    "C1c": dict(layers=(2, 3, 2, 2), act="sigmoid", out="sigmoid", loss="mse",
                m=100_000, batch=1, dtypes=("float32", "float64"),
                n_full=8_000, n_quick=2_000, epochs=1),
    "C2": dict(layers=(64, 128, 64, 10), act="relu", out="softmax",
               loss="cross_entropy", m=50_000, batch=32, dtypes=("float32",),
               n_full=49_984, n_quick=9_984, epochs=1),
    "C3": dict(layers=(784, 256, 128, 10), act="relu", out="softmax",
               loss="cross_entropy", m=60_000, batch=128, dtypes=("float32",),
               n_full=59_904, n_quick=12_800, epochs=1),
    "C4": dict(layers=(1024, 1024, 1024, 1024, 10), act="relu", out="softmax",
               loss="cross_entropy", m=16_384, batch=256, dtypes=("float32",),
               n_full=8_192, n_quick=2_048, epochs=1),
}

LR = 0.01


def flops_per_sample(layers):
    """Training FLOPs per sample as benchmarks/README.md counts them.

    2 per weight for the forward product, 2 for the weight gradient, 2 for the
    input delta except at the first layer (dE/dX is not needed in training).
    """
    total = 0
    for k in range(len(layers) - 1):
        w = layers[k] * layers[k + 1]
        total += 4 * w + (2 * w if k > 0 else 0)
    return total


def make_data(cfg, dtype, n=None):
    """Synthetic data with a fixed seed: X (m, n_0), Y (targets).

    mse configs get targets in [0, 1] of shape (m, n_L); cross-entropy configs
    get int64 class indices of shape (m,).
    """
    import numpy as np

    rng = np.random.default_rng(12345)
    m = cfg["m"] if n is None else n
    n0, nL = cfg["layers"][0], cfg["layers"][-1]
    if cfg["loss"] == "mse":
        X = rng.random((m, n0)).astype(dtype)
        Y = rng.random((m, nL)).astype(dtype)
    else:
        X = rng.standard_normal((m, n0)).astype(dtype)
        Y = rng.integers(0, nL, size=m).astype(np.int64)
    return X, Y


def init_params(layers, dtype, seed=0):
    """Glorot-uniform weights (n_k, n_{k+1}) and zero biases, as numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)
    Ws, bs = [], []
    for a, b in zip(layers[:-1], layers[1:]):
        lim = (6.0 / (a + b)) ** 0.5
        Ws.append(rng.uniform(-lim, lim, size=(a, b)).astype(dtype))
        bs.append(np.zeros(b, dtype=dtype))
    return Ws, bs


# --------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------

def summarize(times):
    """min / median / all of a list of seconds."""
    return {"min_s": min(times), "median_s": statistics.median(times),
            "times_s": [float(f"{t:.6g}") for t in times]}


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# Fast cases repeat until this much time was measured (same work per
# repetition for every peer; only the number of repetitions grows).
MIN_TOTAL_S = float(os.environ.get("BENCH_MIN_TOTAL_S", "1.0"))
MAX_REPS = 200


def repeat(fn, reps):
    """Time `fn` at least `reps` times and until MIN_TOTAL_S is measured."""
    times = []
    while len(times) < reps or (sum(times) < MIN_TOTAL_S and len(times) < MAX_REPS):
        times.append(timed(fn))
    return times


# Rates derived from a record's best time (min_s) or its median time.
_RATES_OF = {"min_s": ("samples_per_s_max", "gflops_best"),
             "median_s": ("samples_per_s_median", "gflops_median")}
# Fields that name a case: records equal in these are one case's rounds.
_CASE_FIELDS = ("bench", "config", "case", "dtype", "peer", "variant",
                "threads", "lib", "n", "rows")
_VARIANT = _CASE_FIELDS.index("variant")


def merge_rounds(rounds):
    """One record per case from several rounds of the same sweep.

    A case's timed repetitions (times_s) of every round are pooled; min_s,
    median_s and the rates derived from them are recomputed from the pool,
    and "round_min_s" keeps each round's best, so the spread between rounds
    stays visible.  A case that failed or was skipped in some round keeps
    the first record that has times.
    """
    if len(rounds) == 1:
        return list(rounds[0])
    cases, order = {}, []
    for recs in rounds:
        for r in recs:
            key = tuple(str(r.get(f)) for f in _CASE_FIELDS)
            if key not in cases:
                order.append(key)
                cases[key] = []
            cases[key].append(r)
    def but_variant(key):
        return key[:_VARIANT] + key[_VARIANT + 1:]

    out = []
    # a failure record has no variant: it stands only if no round of the
    # same peer and case has times
    timed_cases = {but_variant(k) for k in order
                   if any(r.get("times_s") for r in cases[k])}
    for key in order:
        timed_recs = [r for r in cases[key] if r.get("times_s")]
        if not timed_recs:
            if but_variant(key) not in timed_cases:
                out.append(cases[key][0])
            continue
        m = dict(timed_recs[0])
        pool = [t for r in timed_recs for t in r["times_s"]]
        new = summarize(pool)
        for f, rates in _RATES_OF.items():
            if f in m:
                for rate in rates:
                    if rate in m:
                        m[rate] = m[rate] * m[f] / new[f]
        m.update(new, reps=len(pool), rounds=len(timed_recs),
                 round_min_s=[r["min_s"] for r in timed_recs])
        meds = [r["call_median_s"] for r in timed_recs if "call_median_s" in r]
        if meds:
            m["call_median_s"] = min(meds)
        out.append(m)
    return out


# --------------------------------------------------------------------------
# Machine facts
# --------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_id():
    """(vendor, family, model) of the first CPU in /proc/cpuinfo; None for
    what is missing.  VMs often name the CPU only "AMD EPYC": the family
    and model say which generation it is."""
    vendor = family = model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "vendor_id" and vendor is None:
                    vendor = val
                elif key == "cpu family" and family is None:
                    family = int(val)
                elif key == "model" and model is None:
                    model = int(val)
                elif not key and vendor is not None:
                    break  # end of the first CPU's block
    except (OSError, ValueError):
        pass
    return vendor, family, model


def amd_generation(family, model):
    """'zen2'...'zen5' from an AMD family and model number, else None."""
    if family == 23:
        return "zen2" if model is not None and model >= 0x30 else "zen1"
    if family == 25 and model is not None:
        zen4 = (0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F
                or 0xA0 <= model <= 0xAF)
        return "zen4" if zen4 else "zen3"
    if family == 26:
        return "zen5"
    return None


# Intel server cores by family-6 model number (VMs often name the CPU only
# "Intel(R) Xeon(R) Processor" and may hide AMX, so the number tells).
INTEL_SERVER = {0x55: "skx", 0x6A: "icx", 0x6C: "icx", 0x8F: "spr",
                0xCF: "emr", 0xAD: "gnr", 0xAE: "gnr"}


def intel_generation(family, model):
    """'spr' (Sapphire Rapids), 'emr' (Emerald Rapids), ... from an Intel
    family and model number, else None."""
    return INTEL_SERVER.get(model) if family == 6 else None


def cpu_generation(facts):
    """The core generation from the vendor, family and model, else None."""
    family, model = facts.get("cpu_family"), facts.get("cpu_model_number")
    vendor = facts.get("cpu_vendor")
    if vendor == "AuthenticAMD":
        return amd_generation(family, model)
    if vendor == "GenuineIntel":
        return intel_generation(family, model)
    return None


def cpu_label(facts):
    """The model name, with the family and model numbers and the
    generation where known: 'AMD EPYC (family 26, model 2: zen5)',
    'Intel(R) Xeon(R) Processor (family 6, model 207: emr)'."""
    name = facts.get("cpu_model") or "unknown"
    family, model = facts.get("cpu_family"), facts.get("cpu_model_number")
    if family is None:
        return name
    gen = cpu_generation(facts)
    return (f"{name} (family {family}, model {model}"
            + (f": {gen})" if gen else ")"))


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx", "avx2", "fma", "avx512f",
                                        "avx512_vnni", "avx512_bf16", "amx_tile")
                            if x in have]
    except OSError:
        pass
    return []


def git_commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "none"
        st = subprocess.run(["git", "-C", REPO, "status", "--porcelain"],
                            capture_output=True, text=True, timeout=10)
        dirty = bool(st.stdout.strip())
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dist_version(name):
    """Installed version of a distribution without importing it."""
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def machine_facts():
    """Facts recorded with every JSON line (cheap; no heavy imports)."""
    try:
        ncpu_aff = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu_aff = os.cpu_count()
    vendor, family, model = cpu_id()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_vendor": vendor,
        "cpu_family": family,
        "cpu_model_number": model,
        "cpu_flags": cpu_flags(),
        "n_cpus": os.cpu_count(),
        "n_cpus_affinity": ncpu_aff,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {k: dist_version(k) for k in
                     ("bpcore", "numpy", "scipy", "torch", "jax", "jaxlib",
                      "scikit-learn", "threadpoolctl")},
        "git_commit": git_commit(),
        "env": {k: os.environ.get(k) for k in
                ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS",
                 "XLA_FLAGS") if os.environ.get(k) is not None},
    }


def blas_info():
    """What threadpoolctl reports for the loaded BLAS/OpenMP libraries."""
    try:
        from threadpoolctl import threadpool_info
        return [{k: d.get(k) for k in ("internal_api", "prefix", "version",
                                       "architecture", "num_threads",
                                       "threading_layer")}
                for d in threadpool_info()]
    except Exception as e:  # threadpoolctl missing
        return [{"error": repr(e)}]


def one_blas_thread():
    """Context in which numpy's BLAS runs on the calling thread only.

    For correctness checks inside a timed worker: a multi-threaded OpenBLAS
    call leaves its threads spinning for a while after it returns, and a
    2-thread bpcore predict timed in that window competes with them for the
    cores.
    """
    import contextlib
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def openblas_kernel():
    for d in blas_info():
        if d.get("internal_api") == "openblas":
            return "openblas:" + str(d.get("architecture"))
    return None


def bpcore_config(bpcore):
    """(kernel name, config dict) as bpcore reports them, or (None, None).

    Prefers the quiet ``_core.config()``; ``show_config()`` prints, so its
    output is swallowed (workers speak JSON on stdout).
    """
    import contextlib
    import io
    getters = (lambda: bpcore._core.config(), lambda: bpcore.show_config())
    for get in getters:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                conf = get()
        except Exception:
            continue
        if isinstance(conf, dict):
            return conf.get("kernel"), {k: str(v) for k, v in conf.items()}
    return None, None


# --------------------------------------------------------------------------
# Peers and subprocess workers
# --------------------------------------------------------------------------

# import name of each peer's main module (to decide what is installed)
PEER_MODULES = {
    "bpcore": "bpcore",
    "torch": "torch",
    "jax": "jax",
    "sklearn": "sklearn",
    "numpy": "numpy",
}


def peer_available(peer):
    """(available, reason). A cheap check; the worker re-checks by importing."""
    mod = PEER_MODULES[peer]
    if importlib.util.find_spec(mod) is None:
        return False, f"module {mod!r} not installed"
    return True, ""


def worker_env(peer, threads):
    """Environment of a worker subprocess running `peer` on `threads` threads."""
    env = dict(os.environ)
    t = str(threads)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[k] = t
    if peer in ("numpy", "sklearn"):
        # These pessimise OpenBLAS on some machines; unset for these peers only
        # (benchmarks/README.md). The kernel that runs is recorded via threadpoolctl.
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    if peer == "jax" and threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1").strip()
    env["BENCH_THREADS"] = t
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def pin_threads(threads):
    """Restrict this process to the first `threads` CPUs it may run on.

    Applied in every worker, so that "1 thread" means one core for every peer
    (helper threads included, e.g. JAX's dispatch thread).
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if threads < len(cpus):
            os.sched_setaffinity(0, cpus[:threads])
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None


# Orchestrator hook: called with each record as soon as a worker returns it
# (run_all.py uses it to write JSON lines incrementally).
RECORD_SINK = None


def run_worker(script, args, peer, threads, timeout=900):
    """Run `python script --worker args...` with the peer's environment.

    Returns the list of JSON records the worker printed (one per line on
    stdout), or one record with "error" when it failed.
    """
    cmd = [sys.executable, os.path.join(HERE, script), "--worker"] + list(args)
    try:
        p = subprocess.run(cmd, env=worker_env(peer, threads),
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"peer": peer, "threads": threads,
                 "error": f"timeout after {timeout} s", "args": args}]
    recs = []
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if p.returncode != 0 and not recs:
        tail = (p.stderr or "").strip().splitlines()[-5:]
        how = f"exit {p.returncode}"
        if p.returncode < 0:
            import signal
            try:
                how = f"killed by {signal.Signals(-p.returncode).name}"
            except ValueError:
                pass
        recs.append({"peer": peer, "threads": threads, "args": args,
                     "error": how + (": " + " | ".join(tail) if tail else "")})
    if RECORD_SINK is not None:
        for r in recs:
            RECORD_SINK(dict(r, script=script))
    return recs


def import_torch(base, threads):
    """PyTorch set to `threads` threads (and one inter-op thread), or None
    after emitting `base` with why it is skipped."""
    try:
        import torch
    except ImportError as e:
        emit(dict(base, skipped=f"import failed: {e}"))
        return None
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    return torch


def emit(rec):
    """Worker side: print one JSON record on stdout."""
    print(json.dumps(rec), flush=True)


def fmt_rate(x):
    """1234567 -> '1.23 M'."""
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.3g} us"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def parse_list(s, conv=str):
    return [conv(x) for x in s.split(",") if x.strip()]
