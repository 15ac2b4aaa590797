"""The demo: ``bpcore train`` without data.

Part 1 shows the tutorial's 2-3-2-2 sigmoid network on one sample (each
layer's net, out and delta, checked against the formulas in numpy) and
trains it on a small generated problem; part 2 trains a realistic
classifier on a generated table, saves it and its data, and says what to
try next.
"""
import os
import sys
import time

import numpy as np

import bpcore
from bpcore.cli.common import CLIError, check_out_folder
from bpcore.cli.data import format_number, write_csv
from bpcore.cli.train import (check_plot_available, maybe_plot, save_model,
                              train_model, train_options)

TUTORIAL_X = np.array([[0.5, 1.0]])
TUTORIAL_Y = np.array([[1.0, 0.0]])
DEMO_CLASSES = ("normal", "worn_bearing", "misaligned", "overheating")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _fmt(v):
    return "[" + ", ".join(f"{x:+.4f}" for x in v) + "]"


def demo_tutorial(seed, threads, out=None):
    """Part 1: the tutorial's 2-3-2-2 sigmoid network, shown and trained."""
    out = sys.stdout if out is None else out
    p = lambda *a: print(*a, file=out)  # noqa: E731
    p("== Part 1: the tutorial's 2-3-2-2 sigmoid network ==")
    p("Two inputs, hidden layers of 3 and 2 sigmoid neurons, 2 sigmoid "
      "outputs,\nEuclidean loss E = 1/(2m) sum ||y - out||^2, plain "
      "gradient descent on the full batch.")
    net = bpcore.Network([2, 3, 2, 2], activation="sigmoid",
                         output="sigmoid", loss="mse", dtype="float64",
                         seed=seed)
    trace = net.forward(TUTORIAL_X)
    grads = net.backward(TUTORIAL_X, TUTORIAL_Y)
    p(f"One sample i = {TUTORIAL_X[0].tolist()}, target y = "
      f"{TUTORIAL_Y[0].tolist()}, random initial weights:")
    for k in range(1, 4):
        p(f"  layer {k + 1}: net = {_fmt(trace.net[k][0])}  out = "
          f"{_fmt(trace.out[k][0])}  delta = dE/dnet = "
          f"{_fmt(grads.delta[k][0])}")
    ok = _formulas_agree(net, grads)
    p(f"  (checked against the tutorial's formulas in numpy: "
      f"{'agree' if ok else 'DISAGREE'})")
    _train_tutorial_net(net, seed, threads, p)
    p("")
    return ok


def _formulas_agree(net, grads):
    """The deltas of the tutorial sample from the formulas, in numpy (a
    check anyone can read), against the core's."""
    out_l = [TUTORIAL_X]
    for W, b in zip(net.weights, net.biases):
        out_l.append(_sigmoid(out_l[-1] @ W + b))
    d = (out_l[-1] - TUTORIAL_Y) * out_l[-1] * (1 - out_l[-1])
    deltas = [d]
    for k in (2, 1):
        d = (d @ net.weights[k].T) * out_l[k] * (1 - out_l[k])
        deltas.insert(0, d)
    return all(np.allclose(deltas[k - 1], grads.delta[k])
               for k in range(1, 4))


def _train_tutorial_net(net, seed, threads, p):
    """Full-batch SGD on a small generated problem: is the point above the
    diagonal (output 1), and is it inside the circle of radius 0.36 around
    the centre (output 2)?"""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, size=(400, 2))
    Y = np.stack([X[:, 1] > X[:, 0],
                  ((X - 0.5) ** 2).sum(axis=1) < 0.36 ** 2], axis=1)
    Y = Y.astype(np.float64)
    p("Problem: 400 random points in the unit square; output 1 says 'above "
      "the diagonal', output 2 says 'inside the central circle'.")
    before = net.evaluate(X, Y)
    t0 = time.perf_counter()
    hist = net.fit(X, Y, epochs=3000, batch_size=None,
                   optimizer=bpcore.SGD(lr=2.0, momentum=0.9),
                   n_threads=threads)
    seconds = time.perf_counter() - t0
    acc = (np.round(net.predict(X)) == Y).mean(axis=0)
    p(f"Trained {hist.epochs_run} full-batch epochs in {seconds:.2f} s: "
      f"loss {before:.4f} -> {hist.loss[-1]:.4f}; accuracy per output "
      f"{acc[0]:.3f} and {acc[1]:.3f}.")


def make_demo_data(seed, m=6000, n_features=20, n_informative=8):
    """A make_classification-style problem in numpy: 4 classes, each two
    Gaussian clusters on hypercube vertices in 8 informative dimensions,
    plus 4 redundant mixtures and 8 noise features, 2 % labels flipped."""
    rng = np.random.default_rng(seed)
    n_classes, per_class = len(DEMO_CLASSES), 2
    n_clusters = n_classes * per_class
    vertices = rng.choice([-1.0, 1.0], size=(n_clusters, n_informative)) * 1.2
    cluster = rng.integers(0, n_clusters, size=m)
    labels = cluster % n_classes
    mixing = [rng.normal(size=(n_informative, n_informative)) * 0.5
              + np.eye(n_informative) for _ in range(n_clusters)]
    Xi = rng.normal(size=(m, n_informative))
    for c in range(n_clusters):
        rows = cluster == c
        Xi[rows] = Xi[rows] @ mixing[c] + vertices[c]
    n_red = 4
    redundant = Xi @ rng.normal(size=(n_informative, n_red))
    noise = rng.normal(size=(m, n_features - n_informative - n_red))
    X = np.hstack([Xi, redundant, noise])
    X = X * rng.uniform(0.5, 20.0, size=n_features) + rng.normal(
        0, 10, size=n_features)
    flip = rng.random(m) < 0.02
    labels[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    y = np.array(DEMO_CLASSES, dtype=str)[labels]
    names = [f"sensor_{j:02d}" for j in range(n_features)]
    return X, y, names


def run_demo(args):
    """`bpcore train` with no data."""
    if args.target is not None or args.loss is not None:
        raise CLIError("--target and --loss need a DATA file; without data, "
                       "train runs the built-in demo")
    options = train_options(args)
    check_plot_available(args.plot)
    out_path = args.out or "bpcore-demo.safetensors"
    csv_path = os.path.splitext(out_path)[0] + ".csv"
    if os.path.abspath(csv_path) == os.path.abspath(out_path):
        raise CLIError(f"--out {out_path}: the demo writes its data to "
                       f"{csv_path}; give the model another name, e.g. "
                       f"{os.path.splitext(out_path)[0]}.safetensors")
    check_out_folder(out_path)
    print("bpcore demo (no DATA given): two small trainings, a few seconds "
          "in all.\n")
    ok = demo_tutorial(args.seed, args.threads)
    net, summary = _demo_classifier(args, options, csv_path)
    save_model(net, out_path, sys.stdout)
    maybe_plot(args.plot, net, summary)
    prog = "bpcore"
    print("\nNext, try:")
    print(f"  {prog} info {out_path}")
    print(f"  {prog} evaluate {out_path} {csv_path}")
    print(f"  {prog} predict {out_path} {csv_path} --out predictions.csv")
    print(f"  {prog} train {csv_path} --target state --epochs 30 "
          f"--out my-model.safetensors")
    return 0 if ok else 1


def _demo_classifier(args, options, csv_path):
    """Part 2: generate the sensor table, write it to csv_path and train
    on it; returns (net, summary)."""
    print("== Part 2: a realistic classifier ==")
    X, y, names = make_demo_data(args.seed)
    print("Generated a tabular problem like scikit-learn's "
          "make_classification: 6000 machines,\n20 sensor readings each "
          "(8 informative, 4 redundant, 8 noise, very different scales),\n"
          f"4 states to predict ({', '.join(DEMO_CLASSES)}), 2 % of the "
          "labels flipped.")
    write_csv(csv_path, names + ["state"],
              [list(map(format_number, row)) + [lab]
               for row, lab in zip(X, y)])
    print(f"wrote the data to {os.path.abspath(csv_path)}")
    layout = {"source": "table", "header": True, "n_columns": len(names) + 1,
              "target_columns": [len(names)]}
    return train_model(
        X, y, feature_names=names, target_name="state", layout=layout,
        source=os.path.basename(csv_path), loss=None,
        epochs=args.epochs or 15, **options)
