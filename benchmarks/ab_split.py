"""Interleaved A/B of two installed builds of bpcore on the fit benchmarks.

Given two virtual environments, each with its own bpcore installed (say
"old" = main and "new" = a branch), run the same fits in each, alternating
old and new several times, and print per configuration and thread count the
median over rounds of the ratio new time / old time.  On a shared or noisy
machine absolute times drift from minute to minute; alternating the two
builds and comparing within a round is what keeps the ratio meaningful.

    python benchmarks/ab_split.py --old /path/to/venv_old --new /path/to/venv_new
        [--configs C2,C3,C4] [--threads 1,2] [--rounds 5] [--reps 3]

Each measurement is a fresh process of that venv's Python running this file
with --worker: it builds the configuration's data (benchmarks/_common.py,
the "quick" sample count), warms up, then times --reps one-epoch fits of
SGD without shuffling (as bench_fit.py does; fast ones repeated until
half a second is measured) and prints the median.  A
ratio below 1 means new is faster.  Not collected by pytest.
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIN_TOTAL_S = 0.5


def worker(cfg_name, threads, reps):
    """Time one-epoch fits of one configuration; print a JSON line."""
    sys.path.insert(0, HERE)
    import _common as C
    import bpcore

    cfg = C.CONFIGS[cfg_name]
    dtype = cfg["dtypes"][0]
    X, Y = C.make_data(cfg, dtype, n=cfg["n_quick"])
    net = bpcore.Network(list(cfg["layers"]), activation=cfg["act"],
                         output=cfg["out"], loss=cfg["loss"], dtype=dtype,
                         seed=0)
    opt = bpcore.SGD(lr=C.LR)
    bs = cfg["batch"]
    warm = len(X) // 8 if bs is None else min(len(X), 16 * bs)
    net.fit(X[:warm], Y[:warm], epochs=1, batch_size=bs, optimizer=opt,
            shuffle=False, n_threads=threads)
    times = []
    # at least reps fits, and fast ones until MIN_TOTAL_S is measured
    while len(times) < reps or (sum(times) < MIN_TOTAL_S and len(times) < 200):
        t0 = time.perf_counter()
        net.fit(X, Y, epochs=cfg.get("epochs_quick", cfg["epochs"]),
                batch_size=bs, optimizer=opt, shuffle=False,
                n_threads=threads)
        times.append(time.perf_counter() - t0)
    kernel = bpcore.show_config(file=io.StringIO())["kernel"]
    print(json.dumps({"median_s": statistics.median(times), "kernel": kernel}))


def measure(venv, cfg_name, threads, reps):
    """Median seconds of one worker run in `venv` (and its kernel)."""
    py = os.path.join(venv, "bin", "python")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([py, os.path.abspath(__file__), "--worker", cfg_name,
                          str(threads), str(reps)], capture_output=True,
                         text=True, env=env, cwd=HERE, check=True)
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    return rec["median_s"], rec["kernel"]


def run(args):
    """All rounds; old and new alternate, the order flipping each round."""
    cases = [(c, t) for c in args.configs.split(",")
             for t in (int(x) for x in args.threads.split(","))]
    times = {case: {"old": [], "new": []} for case in cases}
    kernels = set()
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for case in cases:
            for side in order:
                venv = args.old if side == "old" else args.new
                t, kernel = measure(venv, case[0], case[1], args.reps)
                times[case][side].append(t)
                kernels.add(kernel)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    return times, kernels


def report(times, kernels):
    """One line per case: median times and the median of per-round ratios."""
    print(f"kernel(s): {', '.join(sorted(kernels))}")
    print(f"{'config':8s} {'threads':>7s} {'old s':>9s} {'new s':>9s} "
          f"{'new/old':>8s} {'range':>15s}")
    for (cfg, t), tt in times.items():
        ratios = [n / o for o, n in zip(tt["old"], tt["new"])]
        print(f"{cfg:8s} {t:7d} {statistics.median(tt['old']):9.4f} "
              f"{statistics.median(tt['new']):9.4f} "
              f"{statistics.median(ratios):8.3f} "
              f"{min(ratios):7.3f}-{max(ratios):.3f}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="venv with the old build")
    ap.add_argument("--new", required=True, help="venv with the new build")
    ap.add_argument("--configs", default="C2,C3,C4")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3,
                    help="timed fits per worker (their median counts)")
    report(*run(ap.parse_args()))


if __name__ == "__main__":
    main()
