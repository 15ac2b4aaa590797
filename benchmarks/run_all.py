"""Run every benchmark in one interleaved pass and print markdown tables.

Runs the GEMM ceiling (bench_gemm.py), training throughput (bench_fit.py),
inference (bench_predict.py) for bpcore and whichever peers are installed,
and the peak memory of bpcore's fit (bench_memory.py), each case in a fresh
subprocess with its thread count set.  Prints
samples/s per configuration and thread count, ratios bpcore/peer, and
GFLOP/s as a share of the GEMM ceiling measured in the same run; writes one
JSON line per case (with machine facts) to ``--out``.

Usage::

    python benchmarks/run_all.py                 # everything
    python benchmarks/run_all.py --quick         # smoke run: fewer samples and reps
    python benchmarks/run_all.py --only C3       # one config (+ GEMM ceiling)
    python benchmarks/run_all.py --only C1a,predict --peers bpcore,jax
    python benchmarks/run_all.py --only memory   # fit's peak memory alone
    python benchmarks/run_all.py --rounds 3      # fit and predict 3 times, alternated

``--rounds N`` repeats the fit and predict sweeps N times, the thread counts
and the peers in reverse order every other round (1 then 2 threads, then 2
then 1), and keeps each case's best over all rounds.  On a host whose speed
drifts, or where the first of two back-to-back runs tends to be the faster,
one pass in a fixed order favours whatever runs first; alternated rounds
give every thread count and every peer the same chances.

``--only`` takes configuration names (C1a C1b C1c C2 C3 C4) and/or the words
``fit``, ``predict``, ``gemm`` and ``memory``.  The GEMM ceiling is always
measured (it is the denominator of the GFLOP/s share) unless ``--no-gemm`` or
``--only memory`` alone.
"""

import argparse
import datetime
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
import bench_fit  # noqa: E402
import bench_gemm  # noqa: E402
import bench_memory  # noqa: E402
import bench_predict  # noqa: E402

ALL_PEERS = ("bpcore", "torch", "jax", "sklearn", "numpy")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="fewer samples, repetitions and GEMM sizes")
    ap.add_argument("--only", default=None,
                    help="comma list of configs (C1a,...,C4) and/or "
                         "fit,predict,gemm,memory")
    ap.add_argument("--peers", default=",".join(ALL_PEERS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=None, help="minimum timed repetitions")
    ap.add_argument("--rounds", type=int, default=1,
                    help="fit and predict sweeps, alternating the order of "
                         "thread counts and peers; best over rounds")
    ap.add_argument("--no-gemm", action="store_true")
    ap.add_argument("--report", default=None, metavar="FILE.jsonl",
                    help="only print the tables of an earlier run's JSON lines")
    ap.add_argument("--out", default=None,
                    help="JSON-lines output (default benchmarks/out/run-DATE-HOST.jsonl)")
    a = ap.parse_args(argv)

    if a.report:
        with open(a.report) as f:
            recs = [json.loads(line) for line in f if line.strip()]
        thr = sorted({r["threads"] for r in recs if "threads" in r})
        print(report_text(recs, thr, recs[0].get("machine", {}) if recs else {}))
        return

    threads = C.parse_list(a.threads, int)
    only = set(C.parse_list(a.only)) if a.only else None
    configs = None
    do_fit = do_predict = do_memory = True
    do_gemm = not a.no_gemm
    if only:
        unknown = only - set(C.CONFIGS) - {"fit", "predict", "gemm", "memory"}
        if unknown:
            ap.error(f"--only: unknown {sorted(unknown)}; configs are {list(C.CONFIGS)}")
        configs = sorted(only & set(C.CONFIGS)) or None
        do_fit = "fit" in only or configs is not None
        do_predict = "predict" in only
        do_memory = "memory" in only
        if only == {"memory"}:
            do_gemm = False  # nothing selected uses the ceiling
        if not (do_fit or do_predict or do_memory) and "gemm" not in only:
            do_fit = True

    facts = C.machine_facts()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = a.out or os.path.join(C.HERE, "out",
                                f"run-{stamp}-{socket.gethostname()}.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

    log_lines = []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    log(f"# bpcore benchmarks {facts['date']}")
    log(f"CPU: {C.cpu_label(facts)} ({facts['n_cpus_affinity']} CPUs usable, "
        f"flags {' '.join(facts['cpu_flags'])}); kernel {facts['kernel']}; "
        f"Python {facts['python']}; git {facts['git_commit']}")
    log("versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v))
    if facts["env"]:
        log(f"environment: {facts['env']} (OPENBLAS_* unset for numpy/sklearn only)")

    peers, skipped = [], []
    for p in C.parse_list(a.peers):
        ok, why = C.peer_available(p)
        if ok:
            peers.append(p)
        else:
            skipped.append((p, why))
    for p, why in skipped:
        log(f"skipping peer {p}: {why}")
    log(f"peers: {', '.join(peers)}; threads: {threads}; "
        f"mode: {'quick' if a.quick else 'full'}; output: {out}")
    log("")

    t_start = time.perf_counter()
    partial = open(out + ".partial", "w")

    def sink(rec):  # keep results of an interrupted run
        partial.write(json.dumps(dict(rec, machine=facts)) + "\n")
        partial.flush()
    C.RECORD_SINK = sink
    records = []
    if do_gemm:
        records += bench_gemm.sweep(threads, quick=a.quick, reps=a.reps, log=log,
                                    facts=facts)
    rounds = []
    for k in range(max(1, a.rounds)):
        # odd rounds run the thread counts and the peers in reverse order
        thr = threads if k % 2 == 0 else threads[::-1]
        prs = peers if k % 2 == 0 else peers[::-1]
        if a.rounds > 1:
            log(f"round {k + 1}/{a.rounds}: threads {thr}, peers {prs}")
        one = []
        if do_fit:
            one += bench_fit.sweep(prs, thr, quick=a.quick, only=configs,
                                   reps=a.reps, log=log, facts=facts)
        if do_predict:
            one += bench_predict.sweep(prs, thr, quick=a.quick, reps=a.reps,
                                       log=log, facts=facts)
        rounds.append(one)
    records += C.merge_rounds(rounds)
    if do_memory and "bpcore" in peers:
        records += bench_memory.sweep(threads, log=log, facts=facts)

    with open(out, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    partial.close()
    os.remove(out + ".partial")

    text = report_text(records, threads, facts, skipped=skipped,
                       mode=("quick" if a.quick else "full") +
                       (f", {a.rounds} alternated rounds" if a.rounds > 1 else ""),
                       wall=time.perf_counter() - t_start)
    md = os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(text + "\n")
    print()
    print(text)
    print(f"\nJSON lines: {out}\nmarkdown:   {md}")


def report_text(records, threads, facts, skipped=(), mode=None, wall=None):
    """Markdown report: machine facts, skipped peers, the tables."""
    # peers that were installed but whose worker could not import / failed
    failed = sorted({(r.get("peer"), r.get("skipped") or r.get("error"))
                     for r in records if "skipped" in r or "error" in r},
                    key=str)
    vers = facts.get("versions", {})
    report = [f"# bpcore benchmarks, {facts.get('date')}", "",
              f"- CPU: {C.cpu_label(facts)}, {facts.get('n_cpus_affinity')} usable "
              f"CPUs, flags: {' '.join(facts.get('cpu_flags', []))}",
              f"- git commit: {facts.get('git_commit')}; Python {facts.get('python')}; " +
              ", ".join(f"{k} {v}" for k, v in vers.items() if v),
              (f"- mode: {mode}; " if mode else "- ") + f"threads {threads}" +
              (f"; wall time {wall:.0f} s" if wall is not None else ""),
              "- Absolute numbers drift 10-50% between runs on shared 2-core VMs; "
              "ratios within this one interleaved run are what to compare.",
              ]
    for p, why in skipped:
        report.append(f"- skipped {p}: {why}")
    for p, why in failed:
        report.append(f"- {p}: {why}")
    report.append("")
    benches = {r.get("bench") for r in records}
    ceil = bench_gemm.ceiling(records)
    if "gemm" in benches:
        report += [bench_gemm.table(records, threads), ""]
    if "fit" in benches:
        report += [bench_fit.table(records, threads, ceiling=ceil), ""]
    if "predict" in benches:
        report += [bench_predict.table(records, threads), ""]
    if "memory" in benches:
        report += [bench_memory.table(records), ""]
    return "\n".join(report)


if __name__ == "__main__":
    main()
