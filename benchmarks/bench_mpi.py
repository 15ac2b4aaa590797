"""Data-parallel training over MPI: measured step times and a projection.

Measures, for C2, C3 and C4 (configurations of benchmarks/README.md, float32):

- ``mpiexec -n 2`` x 1 thread each: time per global batch of ``fit(...,
  comm=)`` and the part of it spent in the gradient exchange (bpcore's
  fixed-order Alltoall + Allgather, timed around the call);
- one process x 2 threads, and one process x 1 thread: time per batch of
  the plain ``fit`` on the same global batch size.

Then projects the step time of P = 2..64 ranks on 10 and 100 Gb/s networks
with the cost model of docs/SCALING.md, writes a Markdown table and a PNG
plot.

Usage::

    python benchmarks/bench_mpi.py [--quick] [--out benchmarks/results/mpi.json]
                                   [--plot docs/scaling.png]

Needs ``pip install ".[mpi]"`` (and matplotlib for the plot).  Each case
runs in a fresh process with its thread environment set before bpcore
loads.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common as C  # noqa: E402

CASES = ("C2", "C3", "C4")
STEPS = {"C2": 300, "C3": 60, "C4": 8}
# the exchange carries float64 whatever the network's dtype
EXCHANGE_BYTES = 8
ALPHA = 5e-6        # assumed latency per message (s)
NETWORKS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8}   # bytes/s


def worker(name, steps, use_comm, threads):
    import numpy as np
    import bpcore
    from bpcore import _distributed
    cfg = C.CONFIGS[name]
    comm, rank, P = None, 0, 1
    if use_comm:
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        rank, P = comm.Get_rank(), comm.Get_size()
    B = cfg["batch"]
    layers = cfg["layers"]
    M = B * steps
    lo, hi = rank * M // P, (rank + 1) * M // P
    rng = np.random.default_rng(rank)
    X = rng.normal(size=(hi - lo, layers[0])).astype(np.float32)
    y = rng.integers(0, layers[-1], size=hi - lo)
    net = bpcore.Network(layers, activation=cfg["act"], output=cfg["out"],
                         loss=cfg["loss"], seed=0)
    spent = [0.0]
    original = _distributed._Comm.ordered_sum

    def timed(self, v):
        t = time.perf_counter()
        try:
            return original(self, v)
        finally:
            spent[0] += time.perf_counter() - t
    _distributed._Comm.ordered_sum = timed
    kw = dict(batch_size=B, optimizer=bpcore.SGD(lr=C.LR), shuffle=True,
              n_threads=threads)
    if comm is not None:
        kw["comm"] = comm
    net.fit(X[:max(1, (hi - lo) // 10)], y[:max(1, (hi - lo) // 10)],
            epochs=1, **kw)  # warm-up
    if comm is not None:
        comm.Barrier()
    spent[0] = 0.0
    t = time.perf_counter()
    net.fit(X, y, epochs=1, **kw)
    total = time.perf_counter() - t
    if rank == 0:
        print(json.dumps({"config": name, "ranks": P, "threads": threads,
                          "batch": B, "steps": steps,
                          "n_params": net.n_params,
                          "step_s": total / steps,
                          "exchange_s": spent[0] / steps}))


def run_case(name, steps, ranks, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
           "--steps", str(steps), "--threads", str(threads)]
    if ranks:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd + ["--comm"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                         timeout=900)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def exchange_model(n_params, P, bw):
    """Seconds of one ring-optimal exchange: 2 (P - 1) messages of n/P
    elements (Alltoall, then Allgather)."""
    return 2 * (P - 1) * ALPHA + 2 * (P - 1) / P * n_params * \
        EXCHANGE_BYTES / bw


def project(rows):
    """Step time for P ranks x 1 thread, fixed global batch: the measured
    1-thread compute of a global batch split P ways, plus the exchange."""
    table = []
    for name in CASES:
        one = rows[(name, 0, 1)]
        for P in (2, 4, 8, 16, 32, 64):
            for net_name, bw in NETWORKS.items():
                comm_s = exchange_model(one["n_params"], P, bw)
                step = one["step_s"] / P + comm_s
                table.append({"config": name, "P": P, "network": net_name,
                              "step_s": step, "comm_share": comm_s / step,
                              "speedup": one["step_s"] / step,
                              # global batch at which the exchange is 20 %
                              "batch_for_20pct": int(
                                  4 * comm_s * P / one["step_s"]
                                  * one["batch"]) + 1})
    return table


def plot(table, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, name in enumerate(CASES):
        for style, net_name in zip(("-", "--"), NETWORKS):
            pts = [r for r in table if r["config"] == name
                   and r["network"] == net_name]
            ax.plot([r["P"] for r in pts], [r["speedup"] for r in pts],
                    style, color=f"C{i}", marker="o",
                    label=f"{name}, {net_name}")
    ax.plot([2, 64], [2, 64], ":", color="grey", label="linear")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("ranks P (1 thread each), fixed global batch")
    ax.set_ylabel("projected speed-up over 1 rank")
    ax.set_title("bpcore data-parallel fit: projection from measured compute")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--comm", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results",
                                                  "mpi.json"))
    ap.add_argument("--plot", default=os.path.join(C.REPO, "docs",
                                                   "scaling.png"))
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.steps, a.comm, a.threads)
    rows = {}
    for name in CASES:
        steps = STEPS[name] // (3 if a.quick else 1)
        for ranks, threads in ((2, 1), (0, 2), (0, 1)):
            r = run_case(name, steps, ranks, threads)
            rows[(name, ranks, threads)] = r
            print(f"{name}: {'mpiexec -n 2 x 1 thread' if ranks else f'1 process x {threads} thread(s)'}: "
                  f"{r['step_s'] * 1e3:.2f} ms/step"
                  + (f", exchange {r['exchange_s'] * 1e3:.2f} ms "
                     f"({100 * r['exchange_s'] / r['step_s']:.0f} %)"
                     if ranks else ""), flush=True)
    table = project(rows)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"machine": C.machine_facts(),
                   "load_average": os.getloadavg(),
                   "date": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                         time.gmtime()),
                   "measured": [dict(v) for v in rows.values()],
                   "projection": table, "alpha_s": ALPHA}, f, indent=1)
    print("\n| config | P | network | step (ms) | exchange share | "
          "speed-up | global batch for 20 % |")
    print("|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['config']} | {r['P']} | {r['network']} | "
              f"{r['step_s'] * 1e3:.2f} | {100 * r['comm_share']:.0f} % | "
              f"{r['speedup']:.1f} | {r['batch_for_20pct']} |")
    try:
        plot(table, a.plot)
        print(f"\nplot: {a.plot}")
    except ImportError:
        print("matplotlib missing: no plot")


if __name__ == "__main__":
    main()
