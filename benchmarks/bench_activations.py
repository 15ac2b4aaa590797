"""What each hidden activation costs: the C3 shape (784-256-128-10, softmax
+ cross-entropy, float32) with relu, sigmoid, tanh and gelu, for bpcore and
PyTorch (when installed), predict and training throughput at 1 and 2
threads.  The libraries alternate within each repetition; the table gives
medians (samples/s), the ratio bpcore/PyTorch, and each activation's rate
as a share of relu's for the same library (relu costs next to nothing, so
the share shows what the activation adds).

    python benchmarks/bench_activations.py [--threads 1,2] [--reps 5]
"""
import argparse
import statistics
import sys
import time

import numpy as np

import bpcore

LAYERS = [784, 256, 128, 10]
ACTS = ["relu", "sigmoid", "tanh", "gelu"]
M_PREDICT, M_FIT, BATCH, LR = 60_000, 20_000, 128, 0.01


def bpcore_case(act, X, y, threads):
    net = bpcore.Network(LAYERS, activation=act, output="softmax",
                         loss="cross_entropy", dtype="float32", seed=0)

    def predict():
        net.predict(X, n_threads=threads)

    def fit():
        net.fit(X[:M_FIT], y[:M_FIT], epochs=1, batch_size=BATCH,
                optimizer=bpcore.SGD(lr=LR), shuffle=False,
                n_threads=threads)
    return predict, fit


def torch_case(act, X, y, threads):
    import torch
    torch.set_num_threads(threads)
    f = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid,
         "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}[act]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), f(), torch.nn.Linear(256, 128), f(),
        torch.nn.Linear(128, 10))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def predict():
        with torch.no_grad():
            torch.softmax(model(Xt), dim=1)

    def fit():
        for i in range(0, M_FIT, BATCH):
            opt.zero_grad()
            loss_fn(model(Xt[i:i + BATCH]), yt[i:i + BATCH]).backward()
            opt.step()
    return predict, fit


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(M_PREDICT, 784)).astype(np.float32)
    y = rng.integers(0, 10, M_PREDICT)
    libs = {"bpcore": bpcore_case}
    try:
        import torch
        libs["torch"] = torch_case
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        print("PyTorch not installed: bpcore only", file=sys.stderr)
    rates = {}
    for threads in [int(t) for t in a.threads.split(",")]:
        for act in ACTS:
            cases = {lib: make(act, X, y, threads)
                     for lib, make in libs.items()}
            for lib, (predict, fit) in cases.items():  # warm-up
                predict()
                fit()
            times = {(lib, what): [] for lib in cases
                     for what in ("predict", "fit")}
            for _ in range(a.reps):
                for lib, (predict, fit) in cases.items():
                    times[lib, "predict"].append(timed(predict))
                    times[lib, "fit"].append(timed(fit))
            for (lib, what), ts in times.items():
                m = M_PREDICT if what == "predict" else M_FIT
                rates[threads, act, lib, what] = m / statistics.median(ts)
            print(f"done: {act}, {threads} thread(s)", file=sys.stderr,
                  flush=True)
    print(f"bpcore {bpcore.__version__} "
          f"({bpcore.show_config(file=open('/dev/null', 'w'))['kernel']}), "
          f"PyTorch {torch_version}; {LAYERS} float32, median of {a.reps}\n")
    head = "| threads | activation | what | bpcore | % of relu |"
    sep = "| --- | --- | --- | --- | --- |"
    if "torch" in libs:
        head += " PyTorch | % of relu | bpcore / PyTorch |"
        sep += " --- | --- | --- |"
    print(head)
    print(sep)
    for (threads, act, lib, what), r in rates.items():
        if lib != "bpcore":
            continue
        row = (f"| {threads} | {act} | {what} | {r / 1e3:,.1f} k | "
               f"{100 * r / rates[threads, 'relu', lib, what]:.0f}% |")
        if "torch" in libs:
            t = rates[threads, act, "torch", what]
            row += (f" {t / 1e3:,.1f} k | "
                    f"{100 * t / rates[threads, 'relu', 'torch', what]:.0f}%"
                    f" | {r / t:.2f} |")
        print(row)


if __name__ == "__main__":
    main()
