"""Training from the shell: :func:`train_model` (shared by ``bpcore train
DATA`` and the demo), its per-epoch report, and saving what it made.

The steps of a training run, in order: choose the task, split the rows,
record the scaling and the labels in the metadata, build the network and
the optimizer, print the plan, fit (data-parallel with ``--mpi``), and
summarise.
"""
import collections
import json
import math
import os
import sys
import time

import numpy as np

import bpcore
from bpcore import _names
from bpcore.cli.common import CLIError, check_out_folder, list_names
from bpcore.cli.model import (META_CLASSES, META_FEATURES, META_LAYOUT,
                              META_SUMMARY, META_TARGET, META_TASK,
                              META_X_MEAN, META_X_STD, META_Y_MEAN,
                              META_Y_STD, ModelInfo, accuracy, choose_task,
                              label_strings, r2_score, sort_labels)


def display_order(names, first):
    """The names of a ``bpcore._names`` table for --help: those in
    ``first`` lead, in that order, the others follow as the table has
    them."""
    assert set(first) <= set(names), (first, names)
    return tuple(first) + tuple(n for n in names if n not in first)


HIDDEN_ACTIVATIONS = display_order(
    _names.ACTIVATIONS,
    ("relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "softplus"))
LOSSES = display_order(_names.LOSSES, ("cross_entropy",
                                       "binary_cross_entropy"))
OPTIMIZERS = display_order(_names.SOLVERS, ("adam", "adamw"))
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.1}
_OPTIMIZER_CLASSES = {"adam": bpcore.Adam, "adamw": bpcore.AdamW,
                      "sgd": bpcore.SGD}
DEFAULT_HIDDEN = [64, 32]

# The output end of the network for the task: units, output activation,
# the metric reported, the class labels (None for a regression) and the
# metadata that records them.
_Head = collections.namedtuple("_Head", "n_out output metric classes "
                                        "metadata")
# The data of a run: raw inputs and targets, the network's (standardised
# inputs, encoded targets), and the training and validation rows.
_Data = collections.namedtuple("_Data", "X y Xs T tr va")


def parse_layers(text):
    """--layers: None (the default), [] for none, or the hidden sizes."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "none", "0"):
        return []
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise CLIError(f"--layers: expected hidden layer sizes like "
                           f"64,32 (positive integers), got {text!r}")
        sizes.append(int(part))
    return sizes


def check_plot_available(path):
    """With --plot, fail before training when matplotlib is missing."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed: "
                       "pip install matplotlib (or pip install 'bpcore[plot]')"
                       ) from None


def train_options(args):
    """The keyword arguments of :func:`train_model` that come straight from
    the ``train`` command line (the demo's as well as DATA's)."""
    return dict(
        layers=parse_layers(args.layers), activation=args.activation,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
        val_split=0.2 if args.val_split is None else args.val_split,
        seed=args.seed, threads=args.threads, plateau=args.plateau,
        csv_log=args.csv_log, checkpoint=args.checkpoint,
        dropout=args.dropout, clip_norm=args.clip_norm)


class _EpochReport:
    """The per-epoch callback: validation metric, progress bar, log lines."""

    def __init__(self, net, info, epochs, Xv, yv, metric_name, out,
                 threads=None):
        self.net, self.info, self.epochs = net, info, epochs
        self.threads = threads
        self.Xv, self.yv, self.metric_name = Xv, yv, metric_name
        self.out = out
        self.metric = []
        self.every = max(1, math.ceil(epochs / 20))
        self.bar = None
        self.plain = False      # the fallback bar, drawn on a terminal only
        try:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=epochs, unit="epoch", desc="training",
                            leave=False, disable=None, file=sys.stderr)
        except ImportError:
            self.plain = sys.stderr.isatty()

    def _write(self, line):
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=self.out)
        else:
            if self.plain:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
            print(line, file=self.out, flush=True)

    def _draw(self, e, text):
        """A one-line bar on stderr when tqdm is not installed."""
        done = int(30 * e / self.epochs)
        print(f"\r\033[Ktraining [{'#' * done}{'.' * (30 - done)}] "
              f"{e}/{self.epochs} {text}", end="", file=sys.stderr,
              flush=True)

    def __call__(self, epoch, logs):
        pred, _ = self.info.decode(self.net.predict(
            self.Xv, n_threads=self.threads))
        if self.info.task == "classification":
            value = accuracy(self.yv, pred)
        else:
            value = r2_score(self.yv, pred)
        self.metric.append(value)
        text = f"loss {logs['loss']:.4f}"
        if logs.get("val_loss") is not None:
            text += f"  val_loss {logs['val_loss']:.4f}"
        text += f"  {self.metric_name} {value:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        e = epoch + 1
        if e == 1 or e % self.every == 0 or e == self.epochs:
            self._write(f"  epoch {e:>{len(str(self.epochs))}}/{self.epochs}"
                        f"  {text}")
        if self.plain:
            self._draw(e, text)

    def close(self):
        if self.bar is not None:
            self.bar.close()
        if self.plain:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def train_model(X, y, *, feature_names, target_name, layout, source,
                layers=None, activation="relu", loss=None, epochs=50,
                batch_size=32, optimizer="adam", lr=None, val_split=0.2,
                seed=0, threads=None, out=None, label_text=None,
                huber_delta=1.0, plateau=None, csv_log=None,
                checkpoint=None, dropout=0.0, clip_norm=None,
                comm=None):
    """Standardise, split, build, fit and summarise; returns (net, summary).

    comm (``--mpi``): every rank has read the same data and makes the same
    split and scaling; each trains data-parallel on its share of the
    training and validation rows (contiguous blocks, rank-major).

    Shared by ``bpcore train DATA`` and the demo.  out: default stdout.
    optimizer "lbfgs": full-batch L-BFGS, epochs its iteration limit.
    plateau: the patience of a ReduceLROnPlateau (factor 0.1) on the rate;
    csv_log, checkpoint: paths for bpcore.callbacks' CSVLogger and
    ModelCheckpoint (best val_loss, or loss without a validation split).
    label_text: the target as spelt in a CSV; the class labels if the
    task is classification (so ``001`` stays ``001``).
    """
    out = sys.stdout if out is None else out
    task, loss = choose_task(y, loss)
    if task == "classification" and label_text is not None:
        y = label_text
    tr, va = _split_rows(X.shape[0], val_split, seed, source)
    md = _input_metadata(X[tr], task, feature_names, target_name, layout)
    head = (_classification_head(y, loss, source) if task == "classification"
            else _regression_head(y, loss, tr, source))
    net = _build_network(X.shape[1], layers, head, activation, loss, seed,
                         huber_delta, dropout)
    net.metadata.update(md)
    net.metadata.update(head.metadata)
    info = ModelInfo(net, source)
    data = _Data(X, y, info.scale(X), info.encode(y, source), tr, va)
    opt, lr = _make_optimizer(optimizer, lr, plateau, clip_norm, epochs)
    callbacks = _file_callbacks(csv_log, checkpoint)
    _print_plan(out, net, head, data, source=source,
                target_name=target_name, epochs=epochs,
                batch_size=batch_size, optimizer=optimizer, lr=lr, seed=seed)
    hist, metric, seconds = _fit(net, info, data, head.metric, out, comm,
                                 opt=opt, epochs=epochs,
                                 batch_size=batch_size, callbacks=callbacks,
                                 threads=threads)
    summary = _summary(net, info, data, head.metric, hist, metric, seconds,
                       source=source, batch_size=batch_size,
                       optimizer=optimizer, lr=lr, seed=seed,
                       threads=threads)
    _print_result(out, summary, head.metric, len(va), hist, seconds)
    return net, summary


def _split_rows(m, val_split, seed, source):
    """(training rows, validation rows), each sorted: a seeded random
    ``val_split`` of the m rows (at least one when it is > 0) validates."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(m)
    n_val = int(round(m * val_split)) if val_split > 0 else 0
    if val_split > 0 and n_val == 0:
        n_val = 1
    if m - n_val < 1:
        raise CLIError(f"{source}: {m} rows leave no training data after "
                       f"--val-split {val_split}")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _input_metadata(X_tr, task, feature_names, target_name, layout):
    """The metadata of the inputs: task, names, layout and the training
    rows' mean and standard deviation (1 where a feature is constant)."""
    md = {META_TASK: task, META_FEATURES: json.dumps(list(feature_names)),
          META_TARGET: (target_name if isinstance(target_name, str)
                        else json.dumps(list(target_name))),
          META_LAYOUT: json.dumps(layout)}
    mean = X_tr.mean(axis=0)
    std = X_tr.std(axis=0)
    std[std == 0] = 1.0
    md[META_X_MEAN] = json.dumps(mean.tolist())
    md[META_X_STD] = json.dumps(std.tolist())
    return md


def _classification_head(y, loss, source):
    """The head of a classifier: one unit per class (one in all for
    binary_cross_entropy on two classes), softmax or sigmoid."""
    classes = sort_labels(set(label_strings(y).tolist()))
    if len(classes) < 2:
        raise CLIError(f"{source}: the target has a single class "
                       f"({classes[0]!r}); nothing to learn")
    n_out = 1 if (loss == "binary_cross_entropy"
                  and len(classes) == 2) else len(classes)
    output = "softmax" if loss == "cross_entropy" else "sigmoid"
    return _Head(n_out, output, "accuracy", classes,
                 {META_CLASSES: json.dumps(classes)})


def _regression_head(y, loss, tr, source):
    """The head of a regressor: identity outputs on targets standardised
    with the training rows (poisson keeps counts unscaled)."""
    Y = y.reshape(y.shape[0], -1).astype(np.float64)
    y_mean = Y[tr].mean(axis=0)
    y_std = Y[tr].std(axis=0)
    y_std[y_std == 0] = 1.0
    if loss == "poisson":
        # counts keep their scale: the network's output is the log rate
        if Y.size and Y.min() < 0:
            raise CLIError(f"{source}: --loss poisson needs targets >= 0 "
                           f"(counts or rates); the smallest is "
                           f"{Y.min():g}")
        y_mean, y_std = np.zeros_like(y_mean), np.ones_like(y_std)
    return _Head(Y.shape[1], "identity", "R2", None,
                 {META_Y_MEAN: json.dumps(y_mean.tolist()),
                  META_Y_STD: json.dumps(y_std.tolist())})


def _build_network(n_in, layers, head, activation, loss, seed, huber_delta,
                   dropout):
    """The network: n_in inputs, the hidden layers (default 64, 32), the
    head's outputs."""
    hidden = DEFAULT_HIDDEN if layers is None else layers
    if dropout and not hidden:
        raise CLIError("--dropout needs hidden layers (--layers none has "
                       "none)")
    return bpcore.Network([n_in] + hidden + [head.n_out],
                          activation=activation, output=head.output,
                          loss=loss, seed=seed, huber_delta=huber_delta,
                          dropout=dropout)


def _make_optimizer(name, lr, plateau, clip_norm, epochs):
    """(optimizer, learning rate or None for lbfgs): L-BFGS with epochs
    as its iteration limit, or a gradient-step optimizer whose rate
    (default DEFAULT_LR) may drop on a plateau."""
    if name == "lbfgs":
        if lr is not None or plateau is not None:
            raise CLIError("--lr and --plateau do not apply to --optimizer "
                           "lbfgs (it has no learning rate)")
        if clip_norm is not None:
            raise CLIError("--clip-norm does not apply to --optimizer lbfgs")
        return bpcore.LBFGS(max_iter=epochs), None
    lr = DEFAULT_LR[name] if lr is None else lr
    rate = lr if plateau is None else bpcore.schedules.ReduceLROnPlateau(
        lr, patience=plateau)
    return _OPTIMIZER_CLASSES[name](lr=rate, clip_norm=clip_norm), lr


def _file_callbacks(csv_log, checkpoint):
    """--csv-log and --checkpoint as bpcore.callbacks objects."""
    callbacks = []
    if csv_log is not None:
        callbacks.append(bpcore.callbacks.CSVLogger(csv_log))
    if checkpoint is not None:
        callbacks.append(bpcore.callbacks.ModelCheckpoint(checkpoint))
    return callbacks


def _print_plan(out, net, head, data, *, source, target_name, epochs,
                batch_size, optimizer, lr, seed):
    """Three lines: the data and task, the network, the training plan."""
    if head.classes is not None:
        classes = head.classes
        counts = ", ".join(f"{c}" for c in classes[:10])
        more = "" if len(classes) <= 10 else f", ... ({len(classes)} in all)"
        what = f"classification into {len(classes)} classes ({counts}{more})"
    else:
        what = "regression" + (f" of {head.n_out} targets"
                               if head.n_out > 1 else "")
    X, tr, va = data.X, data.tr, data.va
    print(f"data: {X.shape[0]} rows from {source}: {X.shape[1]} features -> "
          f"{describe_target(target_name)}; task: {what}", file=out)
    print(f"network: {architecture(net)}, loss {net.loss}, "
          f"{net.n_params:,} parameters", file=out)
    split = (f"validating on {len(va)}" if len(va) else "no validation split")
    print(f"training on {len(tr)} rows, {split}; {epochs} "
          f"epochs, batch size {batch_size or 'full'}, {optimizer}"
          f"{'' if lr is None else f' lr {lr:g}'}, "
          f"seed {seed}; inputs standardised (mean/std kept in the model)",
          file=out)


def _fit(net, info, data, metric_name, out, comm, *, opt, epochs,
         batch_size, callbacks, threads):
    """Fit on the training rows (this rank's share with comm), reporting
    each epoch; returns (History, the metric per epoch, seconds)."""
    X, y, Xs, T, tr, va = data
    n_val = len(va)
    vX, vy = (X[va], y[va]) if n_val else (X[tr], y[tr])
    report = _EpochReport(net, info, epochs, info.scale(vX), info.truth(vy),
                          ("val_" if n_val else "") + metric_name, out,
                          threads)
    fit_rows, validation = tr, (Xs[va], T[va]) if n_val else None
    mpi = {}
    if comm is not None:  # this rank's share of the rows
        size, rank = comm.Get_size(), comm.Get_rank()
        fit_rows = np.array_split(tr, size)[rank]
        if n_val:
            mine = np.array_split(va, size)[rank]
            validation = (Xs[mine], T[mine]) if len(mine) else None
        mpi = {"comm": comm}
    t0 = time.perf_counter()
    try:
        hist = net.fit(Xs[fit_rows], T[fit_rows], epochs=epochs,
                       batch_size=batch_size, optimizer=opt,
                       validation_data=validation,
                       callbacks=[report] + callbacks,
                       n_threads=threads, **mpi)
    finally:
        report.close()
    return hist, report.metric, time.perf_counter() - t0


def _summary(net, info, data, metric_name, hist, metric, seconds, *, source,
             batch_size, optimizer, lr, seed, threads):
    """What ``train`` did, with the training (and validation) metric and
    the learning curves under "history"; stored in the model without
    them."""
    tr, n_val = data.tr, len(data.va)
    summary = {
        "data": os.path.basename(source), "rows": data.X.shape[0],
        "train_rows": int(len(tr)), "validation_rows": int(n_val),
        "epochs": hist.epochs_run, "batch_size": batch_size,
        "optimizer": optimizer, "lr": lr, "seed": seed,
        "seconds": round(seconds, 4),
        "samples_per_second": round(hist.epochs_run * len(tr)
                                    / max(seconds, 1e-9)),
        "loss": hist.loss[-1],
        "bpcore_version": bpcore.__version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    train_pred, _ = info.decode(net.predict(data.Xs[tr], n_threads=threads))
    truth_tr = info.truth(data.y[tr])
    if info.task == "classification":
        summary["train_accuracy"] = accuracy(truth_tr, train_pred)
    else:
        summary["train_R2"] = r2_score(truth_tr, train_pred)
    prefix = "val_" if n_val else ""
    if n_val:
        summary["val_loss"] = hist.val_loss[-1]
        summary[f"val_{metric_name}"] = metric[-1]
    summary["history"] = {"loss": hist.loss, "val_loss": hist.val_loss,
                          prefix + metric_name: metric}
    stored = {k: v for k, v in summary.items() if k != "history"}
    net.metadata[META_SUMMARY] = json.dumps(stored)
    return summary


def _print_result(out, summary, metric_name, n_val, hist, seconds):
    """The closing lines: time and speed, then the metrics."""
    rate = summary["samples_per_second"]
    print(f"done: {hist.epochs_run} epochs in {seconds:.2f} s "
          f"({rate:,} samples/s)", file=out)
    parts = [f"train {metric_name} {summary['train_' + metric_name]:.4f}"]
    if n_val:
        parts.append(f"validation {metric_name} "
                     f"{summary['val_' + metric_name]:.4f}")
    print("result: " + ", ".join(parts), file=out)


def describe_target(name):
    """target 'y', or targets a, b for several."""
    if isinstance(name, str):
        return f"target {name!r}"
    return f"targets {list_names(name)}"


def architecture(net):
    """4 -> 8 (relu) -> 3 (softmax)."""
    parts = [str(net.layers[0])]
    for n, act in zip(net.layers[1:], net.activation):
        parts.append(f"{n} ({act})")
    return " -> ".join(parts)


# -- what training leaves behind ---------------------------------------------

def save_model(net, path, out):
    """net.save with the CLI's messages."""
    check_out_folder(path)
    try:
        net.save(path)
    except OSError as e:
        raise CLIError(f"cannot write the model to {path}: "
                       f"{e.strerror or e}") from None
    print(f"saved the model to {os.path.abspath(path)}", file=out)


def write_plot(path, history, metric_name, title):
    """Learning curves: loss (and validation loss), and the metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, history["loss"], label="training loss")
    if history.get("val_loss"):
        a.plot(epochs, history["val_loss"], label="validation loss")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.set_yscale("log")
    a.legend()
    b.plot(epochs, history[metric_name], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel(metric_name)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise CLIError(f"--plot {path}: cannot write it ({e.strerror or e})"
                       ) from None
    finally:
        plt.close(fig)


def maybe_plot(path, net, summary):
    """--plot: the learning curves of a finished run."""
    if path is None:
        return
    hist = summary["history"]
    metric = [k for k in hist if k not in ("loss", "val_loss")][0]
    write_plot(path, hist, metric, f"bpcore: {architecture(net)}")
    print(f"wrote the learning curves to {os.path.abspath(path)}")
