"""The commands: ``train``, ``predict``, ``evaluate``, ``info`` and
``export``, each ``cmd_NAME(args)`` returning the exit status."""
import contextlib
import os
import sys

import numpy as np

from bpcore.cli.common import CLIError, check_out_folder, list_names
from bpcore.cli.data import Arrays, format_number, read_data, write_csv
from bpcore.cli.demo import run_demo
from bpcore.cli.model import (META_KEYS, META_X_MEAN, accuracy, load_model,
                              r2_score)
from bpcore.cli.train import (architecture, check_plot_available,
                              maybe_plot, save_model, train_model,
                              train_options)

EXPORT_FORMATS = ("onnx", "c", "torch")


# -- train ------------------------------------------------------------------

def cmd_train(args):
    """Train on DATA and save the model (the demo without DATA)."""
    if not args.data:
        return run_demo(args)
    options = train_options(args)
    check_plot_available(args.plot)
    data = read_data(args.data, want_target=True, header=args.header)
    if isinstance(data, Arrays):
        columns = _array_columns(data, args.target)
    else:
        columns = _table_columns(data, args.target)
    out_path = args.out or "model.safetensors"
    check_out_folder(out_path)
    comm, quiet = _mpi(args)
    with quiet:
        net, summary = train_model(
            **columns, source=data.source, loss=args.loss,
            epochs=args.epochs or 50, huber_delta=args.huber_delta,
            comm=comm, **options)
    if comm is not None and comm.Get_rank() != 0:
        return 0
    save_model(net, out_path, sys.stdout)
    maybe_plot(args.plot, net, summary)
    return 0


def _array_columns(data, target):
    """train_model's data arguments (see _columns) from separate
    arrays."""
    if target is not None:
        raise CLIError(f"--target selects a column of a CSV or 2-D .npy "
                       f"table; {data.source} gives its targets separately")
    if data.y is None:
        raise CLIError(f"{data.source}: no targets (an .npz needs an "
                       f"array 'y'; for X.npy give X.npy y.npy)")
    layout = {"source": "arrays", "header": False,
              "n_columns": data.X.shape[1]}
    return _columns(data.X, data.y, data.names, data.target_names, layout,
                    None)


def _table_columns(table, target):
    """train_model's data arguments from a Table: the --target column and
    the features beside it."""
    j = select_target(table, target)
    fcols = [k for k in range(table.n_columns) if k != j]
    if not fcols:
        raise CLIError(f"{table.source}: no feature columns besides the "
                       f"target {table.names[j]!r}")
    X = table.features(fcols)
    y = table.labels(j)
    layout = {"source": "table", "header": table.header,
              "n_columns": table.n_columns, "target_columns": [j]}
    return _columns(X, y, [table.names[k] for k in fcols], table.names[j],
                    layout, table.label_text(j))


def _columns(X, y, features, target, layout, label_text):
    """The keyword arguments of train_model that give it the data."""
    return dict(X=X, y=y, feature_names=features, target_name=target,
                layout=layout, label_text=label_text)


def select_target(table, target):
    """Column index of the target in a Table (--target COL|LAST|index)."""
    spec = "LAST" if target is None else target.strip()
    if spec in table.names:
        return table.names.index(spec)
    if spec.upper() == "LAST":
        if table.n_columns < 2:
            raise CLIError(f"{table.source}: only one column; training needs "
                           f"at least one feature and the target")
        return table.n_columns - 1
    try:
        j = int(spec)
    except ValueError:
        raise CLIError(f"--target {spec!r}: no such column in {table.source}"
                       f" (columns: {list_names(table.names)})") from None
    if not -table.n_columns <= j < table.n_columns:
        raise CLIError(f"--target {j}: {table.source} has {table.n_columns} "
                       f"columns (0 to {table.n_columns - 1})")
    return j % table.n_columns


def _mpi(args):
    """(communicator or None, context): with --mpi, MPI.COMM_WORLD, and
    ranks other than 0 train quietly (rank 0 prints and saves)."""
    if not getattr(args, "mpi", False):
        return None, contextlib.nullcontext()
    try:
        from mpi4py import MPI
    except ImportError:
        raise CLIError("--mpi needs mpi4py and an MPI: pip install "
                       "'bpcore[mpi]', then run under mpiexec -n R") from None
    comm = MPI.COMM_WORLD
    if comm.Get_rank() != 0:
        return comm, _Quiet()
    return comm, contextlib.nullcontext()


class _Quiet:
    """stdout and stderr to os.devnull (the ranks other than 0)."""

    def __enter__(self):
        self.null = open(os.devnull, "w")
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = self.null
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self.saved
        self.null.close()
        return False


# -- predict, evaluate ------------------------------------------------------

def cmd_predict(args):
    """Predictions for the rows of DATA as CSV (to --out or stdout)."""
    net, info = load_model(args.model)
    data = read_data(args.data, want_target=False, header=args.header,
                     model=info)
    X, _ = info.select(data, need_target=False)
    pred, proba = info.decode(net.predict(info.scale(X),
                                          n_threads=args.threads))
    if info.task == "classification":
        header = [info.target_names[0]] + [f"p({c})" for c in info.classes]
        rows = ([lab] + [format(v, ".6g") for v in pr]
                for lab, pr in zip(pred, proba))
    else:
        header = info.target_names
        rows = ([format_number(v) for v in row] for row in pred)
    if args.out:
        write_csv(args.out, header, rows)
        print(f"wrote {X.shape[0]} predictions to "
              f"{os.path.abspath(args.out)}", file=sys.stderr)
    else:
        write_csv("<stdout>", header, rows, stream=sys.stdout)
    return 0


def cmd_evaluate(args):
    """Loss and accuracy (per class too) or R2, RMSE and MAE on DATA."""
    net, info = load_model(args.model)
    data = read_data(args.data, want_target=True, header=args.header,
                     model=info)
    X, y = info.select(data, need_target=True)
    source = getattr(data, "source", args.data[0])
    Xs = info.scale(X)
    T = info.encode(y, source)
    loss = net.evaluate(Xs, T, n_threads=args.threads)
    pred, _ = info.decode(net.predict(Xs, n_threads=args.threads))
    truth = info.truth(y, source)
    print(f"model:    {args.model}")
    print(f"data:     {source}, {X.shape[0]} rows")
    scaled = " on standardised targets" if info.task == "regression" else ""
    print(f"loss:     {loss:.6g} ({net.loss}{scaled})")
    if info.task == "classification":
        print(f"accuracy: {accuracy(truth, pred):.4f}")
        print("per class (recall):")
        for c in info.classes:
            rows = truth == c
            if rows.any():
                print(f"  {c}: {accuracy(truth[rows], pred[rows]):.4f} "
                      f"({int(rows.sum())} rows)")
    else:
        err = pred - truth
        print(f"R2:       {r2_score(truth, pred):.4f}")
        print(f"RMSE:     {float(np.sqrt(np.mean(err ** 2))):.6g}")
        print(f"MAE:      {float(np.mean(np.abs(err))):.6g}")
    return 0


# -- info -------------------------------------------------------------------

def _file_metadata(path):
    """The safetensors header's metadata (format name, version...)."""
    try:
        from safetensors import safe_open
        with safe_open(path, framework="numpy") as f:
            return dict(f.metadata() or {})
    except Exception:  # info must not fail on what load() accepted
        return {}


def cmd_info(args):
    """Architecture, task, names, scaling and training summary of MODEL."""
    net, info = load_model(args.model)
    meta = _file_metadata(args.model)
    size = os.path.getsize(args.model)
    print(f"model:        {args.model} ({size:,} bytes)")
    print(f"format:       {_format_line(meta)}")
    print(f"architecture: {architecture(net)}")
    print(f"loss:         {net.loss}")
    print(f"parameters:   {net.n_params:,} ({net.dtype.name})")
    if info.task == "classification":
        print(f"task:         classification, {len(info.classes)} classes: "
              f"{list_names(info.classes, 12)}")
    else:
        print("task:         regression")
    print(f"features:     {len(info.features)}: {list_names(info.features)}")
    print(f"target:       {list_names(info.target_names)}")
    if META_X_MEAN in net.metadata:
        print("scaling:      inputs standardised with the training mean/std "
              "(applied by predict)")
    print(f"export:       {', '.join(EXPORT_FORMATS)} (bpcore export MODEL "
          f"--format {'|'.join(EXPORT_FORMATS)} --out PATH)")
    if info.summary:
        _print_summary(info.summary)
    others = sorted(k for k in net.metadata if k not in META_KEYS)
    if others:
        print(f"metadata:     {', '.join(others)}")
    return 0


def _format_line(meta):
    """safetensors, the format name and version, and who wrote it."""
    fmt = "safetensors"
    if meta.get("format"):
        fmt += f", {meta['format']} format"
        if meta.get("format_version"):
            fmt += f" version {meta['format_version']}"
    if meta.get("bpcore_version"):
        fmt += f" (written by bpcore {meta['bpcore_version']})"
    return fmt


def _print_summary(s):
    """The training summary ``train`` stored: the run, its results and
    when."""
    print(f"trained:      {s.get('epochs')} epochs on "
          f"{s.get('train_rows')} rows of {s.get('data')} in "
          f"{s.get('seconds', 0):.2f} s "
          f"({s.get('samples_per_second', 0):,} samples/s), "
          f"{s.get('optimizer')} lr {s.get('lr')}, seed {s.get('seed')}")
    metrics = [f"{k} {v:.4f}" for k, v in s.items()
               if isinstance(v, float) and ("accuracy" in k or "R2" in k
                                            or "loss" in k)]
    if metrics:
        print(f"result:       {', '.join(metrics)}")
    if s.get("date"):
        print(f"date:         {s['date']} (bpcore "
              f"{s.get('bpcore_version', '?')})")


# -- export -----------------------------------------------------------------

def cmd_export(args):
    """Write MODEL as ONNX, a C99 .h/.c pair or a torch.save'd module."""
    net, _ = load_model(args.model)
    check_out_folder(args.out, "--out" + (
        " (the prefix of the .h/.c pair)" if args.format == "c" else ""))
    scaling = "auto" if not args.no_scaling else False
    try:
        written = _export(net, args.format, args.out, scaling)
    except ImportError as e:
        need = {"onnx": "onnx (pip install 'bpcore[onnx]')",
                "torch": "PyTorch (pip install torch)"}.get(args.format, "")
        raise CLIError(f"--format {args.format} needs {need}: "
                       f"{e}") from None
    except OSError as e:
        raise CLIError(f"cannot write {args.out}: {e.strerror or e}"
                       ) from None
    for path in written:
        print(f"wrote {os.path.abspath(path)}")
    return 0


def _export(net, fmt, out, scaling):
    """Write net in format fmt; returns the paths written."""
    from bpcore import export
    if fmt == "onnx":
        export.to_onnx(net, out, scaling=scaling)
        return [out]
    if fmt == "c":
        return list(export.to_c(net, out, scaling=scaling))
    import torch
    if scaling and "input_mean" in net.metadata:
        print("bpcore: note: the torch module is the bare network; "
              "standardise inputs with the model's input_mean/"
              "input_std first", file=sys.stderr)
    torch.save(export.to_torch(net), out)
    return [out]
