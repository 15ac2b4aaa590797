"""What a second thread gives fit, across network sizes and batch sizes,
and which cut of a batch gives it.

For each case (layers, batch), in one process: one-epoch fits of SGD without
shuffling, on one thread and on a team of two with each cut of the batch
the C core allows (by columns; by samples where each thread has at least 8
rows and the network is not on the tiny path), alternating them every
round, and the median time of each; the ratios team / one thread (< 1: the
team is faster).  fit's race is bypassed (its choice is fixed for the
case), so each team's own speed shows even where the race would keep one
thread or the other cut.  PyTorch, where installed, runs the same network
and batches on 1 and 2 threads in the same rounds: its ratio is the peer's.

By default a team cuts a small network's batch by samples (weights within
512 KB) and a larger one's by the columns of each product
(docs/perf-notes.md, "Training cut by samples"); fit races the two where
both are allowed and the weights take at most 2 MB.  This script shows how
far that rule is from the host's best.  It prints the CPU, the ISA and the
commit with the table.  Not part of run_all; not collected by pytest.

    python benchmarks/bench_team_cut.py [--rounds 6] [--rows 20000]
        [--cases 64-128-64-10:32,784-256-128-10:128] [--out FILE.jsonl]
"""
import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common as C  # noqa: E402

CASES = ("64-128-64-10:32,64-128-64-10:64,64-128-64-10:128,"
         "64-128-64-10:256,32-64-64-64-64-10:64,32-64-64-64-64-10:256,"
         "16-32-32-32-32-32-32-4:128,128-256-128-10:128,"
         "784-256-128-10:32,784-256-128-10:128,512-512-512-10:128")


def parse_cases(text):
    out = []
    for item in text.split(","):
        layers, batch = item.split(":")
        out.append((tuple(int(v) for v in layers.split("-")), int(batch)))
    return out


def bpcore_fitter(layers, batch, X, Y):
    """(fit, choices): fit(choice) -> seconds of one epoch with the race's
    choice fixed; choices: {name: (threads, cut)} that the C core runs."""
    import bpcore
    from bpcore import _core, _race
    net = bpcore.Network(list(layers), activation="relu", output="softmax",
                         loss="cross_entropy", seed=0, dtype="float32")
    opt = bpcore.SGD(lr=0.01)
    key = (tuple(layers), "<f4", batch, 2)
    choices = {1: (1, _core.CUT_AUTO), "columns": (2, _core.CUT_COLUMNS)}
    rule, _ = net._arch.train_cut(batch, 2)
    if net._arch.train_syncs(batch, _core.CUT_SAMPLES) != \
            net._arch.train_syncs(batch, _core.CUT_COLUMNS):
        choices["samples"] = (2, _core.CUT_SAMPLES)
    default = "samples" if rule == _core.CUT_SAMPLES else "columns"

    def fit(choice):
        _race._CHOSEN[key] = choices[choice]
        _race._SCHEDULE[key] = (1e9, time.perf_counter() + 1e9)
        t0 = time.perf_counter()
        net.fit(X, Y, epochs=1, batch_size=batch, optimizer=opt,
                n_threads=2, shuffle=False)
        return time.perf_counter() - t0
    return fit, list(choices), default


def torch_fitter(layers, batch, X, Y):
    """The same epoch as a PyTorch loop of SGD steps, or None."""
    if not C.peer_available("torch"):
        return None
    import torch
    torch.manual_seed(0)
    mods = []
    for k in range(len(layers) - 1):
        mods.append(torch.nn.Linear(layers[k], layers[k + 1]))
        if k + 2 < len(layers):
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xb = torch.split(torch.from_numpy(X), batch)
    Yb = torch.split(torch.from_numpy(Y), batch)

    def fit(threads):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        for xb, yb in zip(Xb, Yb):
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()
        return time.perf_counter() - t0
    return fit


def measure(layers, batch, rows, rounds):
    import numpy as np
    rng = np.random.default_rng(12345)
    X = rng.standard_normal((rows, layers[0])).astype(np.float32)
    Y = rng.integers(0, layers[-1], size=rows).astype(np.int64)
    rec = {"layers": list(layers), "batch": batch, "rows": rows}
    for lib in ("bpcore", "torch"):
        if lib == "bpcore":
            fit, choices, default = bpcore_fitter(layers, batch, X, Y)
        else:
            fit = torch_fitter(layers, batch, X, Y)
            if fit is None:
                continue
            choices, default = [1, 2], 2
        for c in choices:
            fit(c)  # warm each
        times = {c: [] for c in choices}
        for r in range(rounds):
            for c in (choices if r % 2 == 0 else choices[::-1]):
                times[c].append(fit(c))
        one = statistics.median(times[1])
        res = {"t1_s": one, "default": default}
        for c in choices[1:]:
            res[str(c)] = {
                "t_s": statistics.median(times[c]),
                "ratio": statistics.median(times[c]) / one,
                "ratio_range": [min(b / a for a, b in zip(times[1], times[c])),
                                max(b / a for a, b in zip(times[1], times[c]))]}
        # the cut the C core takes by default (the older records' fields)
        res["t2_s"] = res[str(default)]["t_s"]
        res["ratio"] = res[str(default)]["ratio"]
        res["ratio_range"] = res[str(default)]["ratio_range"]
        rec[lib] = res
    return rec


def table(recs):
    lines = ["| layers | batch | weights | bpcore 1T | team by columns / 1T "
             "| team by samples / 1T | rule | PyTorch 2T / 1T |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(res, cut):
        r = res.get(cut)
        if r is None:
            return "-"
        return "{:.3f} ({:.2f}-{:.2f})".format(r["ratio"], *r["ratio_range"])
    for r in recs:
        w = sum(a * b for a, b in zip(r["layers"], r["layers"][1:]))
        b = r["bpcore"]
        t = r.get("torch")
        if "columns" not in b:  # a record from before the cuts were timed
            b = dict(b, **{b.get("default", "columns"): b})
        lines.append("| {} | {} | {:,} | {:.0f} k/s | {} | {} | {} | {} |"
                     .format("-".join(map(str, r["layers"])), r["batch"], w,
                             r["rows"] / b["t1_s"] / 1e3, cell(b, "columns"),
                             cell(b, "samples"), b.get("default", "-"),
                             "{:.3f}".format(t["ratio"]) if t else "-"))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=CASES,
                    help="comma list of LAYERS:BATCH, layers joined by -")
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--out", default=None, help="JSON lines output")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import bpcore
    facts = C.machine_facts()
    kernel, cfg = C.bpcore_config(bpcore)
    head = "{}, bpcore kernel {}, commit {}".format(
        C.cpu_label(facts), kernel, facts["git_commit"])
    print(head, flush=True)
    recs = []
    for layers, batch in parse_cases(a.cases):
        rec = measure(layers, batch, a.rows, a.rounds)
        rec["facts"] = facts
        rec["bpcore_config"] = cfg
        recs.append(rec)
        b = rec["bpcore"]
        print("  {} batch {}: team / 1T {}".format(
            "-".join(map(str, layers)), batch, ", ".join(
                "{} {:.3f}".format(c, b[c]["ratio"])
                for c in ("columns", "samples") if c in b)), flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(rec) + "\n")
    print()
    print(head)
    print()
    print(table(recs))


if __name__ == "__main__":
    main()
