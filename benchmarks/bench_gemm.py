"""The machine's large-GEMM ceiling in GFLOP/s (2*n^3 over time).

numpy (OpenBLAS), PyTorch and JAX ``matmul``, and bpcore's own layer
product, on square n x n matrices, n in {1024, 2048, 4096}, float32 and
float64, 1 and 2 threads; each (library, threads) case runs in a fresh
subprocess with the thread environment set.  The best rate per (dtype,
threads) is the ceiling that ``run_all.py`` divides the training GFLOP/s by.
All four count: on the Zen 5 host PyTorch's matmul ran at half of what
the others reached (108 against 224-249 GFLOP/s at n = 1024), and where
OPENBLAS_CORETYPE is left set (the worker unsets it) OpenBLAS does the same.

Usage::

    python benchmarks/bench_gemm.py [--quick] [--threads 1,2] [--sizes 2048,4096]
                                    [--out FILE.jsonl]
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

LIBS = ("numpy", "torch", "jax", "bpcore")


def worker_main(a):
    cpus = C.pin_threads(a.threads)
    if a.quick:
        C.MIN_TOTAL_S = min(C.MIN_TOTAL_S, 0.3)
    import numpy as np

    sizes = C.parse_list(a.sizes, int)
    base = {"bench": "gemm", "peer": a.lib, "variant": a.lib,
            "threads": a.threads, "cpus": cpus}
    if a.lib == "torch":
        try:
            import torch
        except ImportError as e:
            C.emit(dict(base, skipped=f"import failed: {e}"))
            return
        torch.set_num_threads(a.threads)
        kernel = torch.backends.cpu.get_cpu_capability()
    elif a.lib in ("jax", "bpcore"):
        try:
            mod = __import__(a.lib)
        except ImportError as e:
            C.emit(dict(base, skipped=f"import failed: {e}"))
            return
        if a.lib == "jax":
            mod.config.update("jax_enable_x64", True)
            kernel = mod.default_backend()
        else:
            kernel = mod.show_config(file=open(os.devnull, "w"))["kernel"]
    else:
        kernel = C.openblas_kernel()
    rng = np.random.default_rng(0)
    for dt in ("float32", "float64"):
        for n in sizes:
            A = rng.standard_normal((n, n)).astype(dt)
            B = rng.standard_normal((n, n)).astype(dt)
            if a.lib == "torch":
                A, B = torch.from_numpy(A), torch.from_numpy(B)
                Cm = torch.empty_like(A)

                def run():
                    torch.matmul(A, B, out=Cm)
            elif a.lib == "jax":
                import jax
                A, B = jax.device_put(A), jax.device_put(B)
                mm = jax.jit(jax.numpy.matmul)

                def run():
                    mm(A, B).block_until_ready()
            elif a.lib == "bpcore":
                from bpcore import _core

                def run():
                    _core.matmul(A, B, False, False, a.threads)
            else:
                Cm = np.empty_like(A)

                def run():
                    np.matmul(A, B, out=Cm)
            run()  # warm-up
            times = C.repeat(run, a.reps)
            s = C.summarize(times)
            flop = 2.0 * n ** 3
            C.emit(dict(base, dtype=dt, n=n, reps=len(times), **s,
                        gflops_best=flop / s["min_s"] / 1e9,
                        gflops_median=flop / s["median_s"] / 1e9,
                        kernel=kernel,
                        blas=C.blas_info() if a.lib == "numpy" else None))


def sweep(threads, quick=False, sizes=None, reps=None, libs=LIBS, log=print,
          facts=None):
    """Run the GEMM cases in subprocesses; return JSON records."""
    sizes = sizes or ([2048] if quick else [1024, 2048, 4096])
    reps = reps or (2 if quick else 3)
    facts = facts or C.machine_facts()
    records = []
    for t in threads:
        for lib in libs:
            ok, why = C.peer_available(lib)
            if not ok:
                log(f"gemm: skipping {lib}: {why}")
                continue
            args = ["--lib", lib, "--threads", str(t), "--reps", str(reps),
                    "--sizes", ",".join(map(str, sizes))]
            if quick:
                args.append("--quick")
            for r in C.run_worker("bench_gemm.py", args, lib, t):
                r["machine"] = facts
                records.append(r)
                if "gflops_best" in r:
                    log(f"gemm {lib} {r['dtype']} n={r['n']} T={t}: "
                        f"{r['gflops_best']:.1f} GFLOP/s best, "
                        f"{r['gflops_median']:.1f} median")
                else:
                    log(f"gemm {lib} T={t}: {r.get('error') or r.get('skipped')}")
    return records


def ceiling(records):
    """{(dtype, threads): best GFLOP/s over libraries and sizes}."""
    out = {}
    for r in records:
        if r.get("bench") == "gemm" and "gflops_best" in r:
            k = (r["dtype"], r["threads"])
            out[k] = max(out.get(k, 0.0), r["gflops_best"])
    return out


def table(records, threads):
    rows = {}
    for r in records:
        if r.get("bench") == "gemm" and "gflops_best" in r:
            rows.setdefault((r["peer"], r["dtype"], r["n"]), {})[r["threads"]] = r
    tstr = " / ".join(str(t) for t in threads)
    lines = [f"Large-GEMM rate, GFLOP/s best (median), threads {tstr}:", "",
             "| library | dtype | n | GFLOP/s | kernel |", "| --- | --- | --- | --- | --- |"]
    for (lib, dt, n), byt in sorted(rows.items()):
        cells = " / ".join(f"{byt[t]['gflops_best']:.1f} ({byt[t]['gflops_median']:.1f})"
                           if t in byt else "-" for t in threads)
        kern = next(iter(byt.values())).get("kernel")
        lines.append(f"| {lib} | f{dt[5:]} | {n} | {cells} | {kern} |")
    ceil = ceiling(records)
    lines += ["", "Ceiling (best of the above): " + ", ".join(
        f"f{dt[5:]} T={t}: {g:.1f}" for (dt, t), g in sorted(ceil.items()))]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lib", choices=LIBS, help=argparse.SUPPRESS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--sizes", default=None, help="e.g. 2048,4096")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.worker:
        a.threads = int(a.threads)
        a.reps = a.reps or 3
        worker_main(a)
        return
    threads = C.parse_list(a.threads, int)
    sizes = C.parse_list(a.sizes, int) if a.sizes else None
    recs = sweep(threads, quick=a.quick, sizes=sizes, reps=a.reps)
    if a.out:
        with open(a.out, "a") as f:
            for r in recs:
                f.write(json.dumps(r) + "\n")
    print()
    print(table(recs, threads))


if __name__ == "__main__":
    main()
