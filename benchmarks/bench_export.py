"""Latency of an exported C3 network (784-256-128-10, relu, softmax,
float32): ONNX Runtime against ``net.predict`` (and the exported C code,
compiled here with ``cc -O2``), at 1 and 1,000 rows, in one run.

    python benchmarks/bench_export.py [--reps 7] [--threads 1,2] [--no-c]

Each repetition times a batch of calls (1 row: 2,000 calls; 1,000 rows: 20
calls) for every runtime in turn, so the host's load hits all of them
alike; reported: microseconds per call, min and median over repetitions.
Prints one JSON line per case, then a markdown table.  Needs onnx and
onnxruntime (``pip install "bpcore[onnx]"``).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

LAYERS = (784, 256, 128, 10)
CALLS = {1: 2000, 1000: 20}

C_TIMER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "c3.h"

/* argv: rows calls reps; x from stdin (rows * N_INPUTS floats, binary).
 * Prints one line per repetition: seconds per call of predicting all rows. */
static float x[1000 * C3_N_INPUTS], y[1000 * C3_N_OUTPUTS];

int
main(int argc, char **argv)
{
    int rows, calls, reps, r, c, i;
    if (argc != 4) {
        return 2;
    }
    rows = atoi(argv[1]);
    calls = atoi(argv[2]);
    reps = atoi(argv[3]);
    if (fread(x, sizeof(float), (size_t)rows * C3_N_INPUTS, stdin) !=
        (size_t)rows * C3_N_INPUTS) {
        return 3;
    }
    for (r = 0; r < reps; r++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (c = 0; c < calls; c++) {
            for (i = 0; i < rows; i++) {
                c3_predict(x + (long)i * C3_N_INPUTS, y + (long)i * C3_N_OUTPUTS);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("%.9f\n", ((t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec -
               t0.tv_nsec)) / calls);
    }
    return 0;
}
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-c", action="store_true")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    import bpcore
    import onnxruntime as ort
    from bpcore import export

    net = bpcore.Network(LAYERS, activation="relu", output="softmax",
                         loss="cross_entropy", dtype="float32", seed=0)
    rng = np.random.default_rng(0)
    X = rng.random((1000, LAYERS[0]), dtype=np.float32)
    tmp = tempfile.mkdtemp(prefix="bench_export_")
    onnx_path = os.path.join(tmp, "c3.onnx")
    export.to_onnx(net, onnx_path)
    sessions = {}
    for t in threads:
        so = ort.SessionOptions()
        so.intra_op_num_threads = t
        so.inter_op_num_threads = 1
        sessions[t] = ort.InferenceSession(
            onnx_path, so, providers=["CPUExecutionProvider"])
    # same answers before timing anything
    y_ort = sessions[threads[0]].run(["Y"], {"X": X})[0]
    np.testing.assert_allclose(y_ort, net.predict(X), rtol=1e-5, atol=1e-6)

    c_exe = None
    cc = shutil.which("cc")
    if cc and not args.no_c:
        export.to_c(net, os.path.join(tmp, "c3"))
        with open(os.path.join(tmp, "timer.c"), "w") as f:
            f.write(C_TIMER)
        c_exe = os.path.join(tmp, "timer")
        subprocess.run([cc, "-std=c99", "-O2", "-o", c_exe,
                        os.path.join(tmp, "timer.c"),
                        os.path.join(tmp, "c3.c"), "-lm"], check=True)

    facts = _common.machine_facts()
    facts["versions"]["onnxruntime"] = ort.__version__
    kernel, _ = _common.bpcore_config(bpcore)
    records = []
    for rows, calls in CALLS.items():
        Xr = np.ascontiguousarray(X[:rows])
        for t in threads:
            sess = sessions[t]
            peers = {
                "bpcore predict": lambda: net.predict(Xr, n_threads=t),
                "onnxruntime": lambda: sess.run(["Y"], {"X": Xr}),
            }
            times = {k: [] for k in peers}
            for fn in peers.values():      # warm-up
                for _ in range(min(calls, 50)):
                    fn()
            for _ in range(args.reps):
                for name, fn in peers.items():
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    times[name].append((time.perf_counter() - t0) / calls)
            for name, ts in times.items():
                rec = dict(case="export-latency", runtime=name, rows=rows,
                           threads=t, dtype="float32", layers=list(LAYERS),
                           bpcore_kernel=kernel, **_common.summarize(ts), **facts)
                records.append(rec)
                print(json.dumps(rec), flush=True)
        if c_exe:
            out = subprocess.run([c_exe, str(rows), str(calls),
                                  str(args.reps)], input=Xr.tobytes(),
                                 capture_output=True, check=True).stdout
            ts = [float(v) for v in out.split()]
            rec = dict(case="export-latency", runtime="exported C (cc -O2)",
                       rows=rows, threads=1, dtype="float32",
                       layers=list(LAYERS), bpcore_kernel=None,
                       **_common.summarize(ts), **facts)
            records.append(rec)
            print(json.dumps(rec), flush=True)

    print(f"\n{_common.cpu_label(facts)} ({', '.join(facts['cpu_flags'])}), "
          f"{facts['n_cpus']} vCPUs; bpcore {facts['versions']['bpcore']} "
          f"(kernel {kernel}), onnxruntime {ort.__version__}; "
          f"C3 {'-'.join(map(str, LAYERS))} relu/softmax float32; "
          f"{args.reps} repetitions\n")
    print("| rows | threads | runtime | min us/call | median us/call | "
          "ratio to bpcore (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = {(r["rows"], r["threads"]): r["median_s"] for r in records
            if r["runtime"] == "bpcore predict"}
    for r in records:
        ref = base.get((r["rows"], r["threads"])) or base.get((r["rows"], 1))
        print(f"| {r['rows']} | {r['threads']} | {r['runtime']} | "
              f"{r['min_s'] * 1e6:.1f} | {r['median_s'] * 1e6:.1f} | "
              f"{r['median_s'] / ref:.2f} |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
