"""The argument parser of the ``bpcore`` command: one sub-parser per
command, each option checked as it is read (a malformed command line
exits with status 2 and one error line)."""
import argparse
import math

import bpcore
from bpcore.cli.commands import (EXPORT_FORMATS, cmd_evaluate, cmd_export,
                                 cmd_info, cmd_predict, cmd_train)
from bpcore.cli.model import MAX_AUTO_CLASSES
from bpcore.cli.train import HIDDEN_ACTIVATIONS, LOSSES, OPTIMIZERS


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} "
                     f"--help)\n")


# -- option types -----------------------------------------------------------

def _number_type(convert, accept, expected, name, not_a_number=None):
    """An argparse type: convert(text) (int or float) that accept() takes,
    else 'expected <expected>, got ...' (<not_a_number> when convert fails;
    an int is shown as read, a float as written)."""
    def parse(text):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {not_a_number or expected}, got {text!r}"
            ) from None
        if not accept(v):
            shown = v if convert is int else text
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {shown}")
        return v
    parse.__name__ = name
    return parse


def _positive_int(name):
    return _number_type(int, lambda v: v >= 1, "a positive integer", name)


_nonnegative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0",
                                "_nonnegative_int")
_seed = _number_type(int, lambda v: v >= 0, "a non-negative integer",
                     "_seed")
_lr = _number_type(float, lambda v: math.isfinite(v) and v > 0,
                   "a positive number", "_lr", not_a_number="a number")
_fraction = _number_type(float, lambda v: 0 <= v < 1, "a number in [0, 1)",
                         "_fraction")


def _batch_size(text):
    if text.lower() in ("full", "none", "all"):
        return None
    return _positive_int("batch size")(text)


HEADER_HELP = ("is the first CSV row a header? auto (default): yes if a "
               "field is a name (not a number or a missing value like NA) "
               "where the column's other rows hold numbers, or where they "
               "hold repeated labels that never equal it; predict and "
               "evaluate also take a row holding the model's feature names "
               "as a header and a row with numbers where the model reads "
               "features as data")


TRAIN_DESCRIPTION = (
    "Train an MLP on DATA: a CSV file (header optional), X.npy y.npy, a 2-D "
    ".npy table or an .npz with X and y. Inputs are standardised and the "
    "scaling is stored in the model. Without DATA, runs the built-in demo.")
EXPORT_DESCRIPTION = (
    "Export MODEL: --format onnx (an .onnx file for ONNX Runtime; needs "
    "onnx), c (PATH.h and PATH.c, plain C99) or torch (torch.save of an "
    "nn.Sequential; needs PyTorch). ONNX and C apply the input scaling "
    "stored by 'bpcore train', so they read raw inputs and output what "
    "'bpcore predict' prints.")


def _add_header_option(parser):
    parser.add_argument("--header", choices=("auto", "yes", "no"),
                        default="auto", help=HEADER_HELP)


# -- the commands -----------------------------------------------------------

def build_parser():
    """The argparse parser of the ``bpcore`` command."""
    p = _Parser(prog="bpcore", description=(
        "Train and use multilayer perceptrons from the shell. Run "
        "'bpcore train' without data for a demo."))
    p.add_argument("--version", action="version",
                   version=f"bpcore {bpcore.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND",
                           parser_class=_Parser)
    sub.required = True
    _add_train(sub)
    _add_predict(sub)
    _add_evaluate(sub)
    _add_info(sub)
    _add_export(sub)
    return p


def _add_train(sub):
    t = sub.add_parser("train", help="train a network on a data file "
                       "(or run the demo)", description=TRAIN_DESCRIPTION)
    t.add_argument("data", nargs="*", metavar="DATA",
                   help="data file(s); none for the demo")
    t.add_argument("--target", metavar="COL", help="target column: a "
                   "name from the header, a 0-based index, or LAST "
                   "(default)")
    _add_network_options(t)
    _add_training_options(t)
    _add_output_options(t)
    _add_header_option(t)
    t.set_defaults(func=cmd_train)


def _add_network_options(t):
    """train: --layers, --activation, --loss, --huber-delta."""
    t.add_argument("--layers", metavar="N,N,...", help="hidden layer "
                   "sizes (default 64,32; 'none' for no hidden layer)")
    t.add_argument("--activation", default="relu", metavar="NAME",
                   choices=HIDDEN_ACTIVATIONS, help="hidden activation: "
                   f"{', '.join(HIDDEN_ACTIVATIONS)} (default relu)")
    t.add_argument("--loss", choices=LOSSES, metavar="NAME",
                   help=f"{', '.join(LOSSES)}; default: cross_entropy "
                   "for class labels (text, or up to "
                   f"{MAX_AUTO_CLASSES} integer values), else mse; mae, "
                   "huber and poisson (counts, kept unscaled) are "
                   "regression losses")
    t.add_argument("--huber-delta", type=_lr, default=1.0, metavar="D",
                   help="delta of --loss huber, in standardised target "
                   "units (default 1.0)")


def _add_training_options(t):
    """train: how it trains, --epochs to --threads (in --help order, so
    --csv-log and --checkpoint too)."""
    t.add_argument("--epochs", type=_positive_int("epochs"), metavar="N",
                   help="passes over the data (default 50; demo 15)")
    t.add_argument("--batch-size", type=_batch_size, default=32,
                   metavar="B", help="samples per update (default 32; "
                   "'full' for full batch)")
    t.add_argument("--optimizer", default="adam", choices=OPTIMIZERS,
                   metavar="NAME", help=f"{', '.join(OPTIMIZERS)} (default "
                   "adam)")
    t.add_argument("--lr", type=_lr, help="learning rate (default 0.001 "
                   "for adam/adamw, 0.1 for sgd)")
    t.add_argument("--plateau", type=_nonnegative_int, metavar="P",
                   help="divide the learning rate by 10 after P epochs "
                   "without improvement of the validation loss "
                   "(ReduceLROnPlateau)")
    t.add_argument("--csv-log", metavar="CSV", help="write "
                   "epoch,loss,val_loss,lr per epoch to this file")
    t.add_argument("--checkpoint", metavar="MODEL", help="save the network "
                   "of the best epoch (lowest validation loss) to this file "
                   "during training")
    t.add_argument("--dropout", type=_fraction, default=0.0, metavar="P",
                   help="dropout rate of the hidden layers while training, "
                   "in [0, 1) (default 0)")
    t.add_argument("--clip-norm", type=_lr, metavar="C",
                   help="clip the gradient's global L2 norm to C before "
                   "each update (default: no clipping)")
    t.add_argument("--val-split", type=_fraction, metavar="F",
                   help="fraction held out for validation (default 0.2; 0 "
                   "for none)")
    t.add_argument("--seed", type=_seed, default=0, metavar="S",
                   help="seed for the weights, the split and the shuffling "
                   "(default 0)")
    t.add_argument("--threads", type=_positive_int("threads"), metavar="T",
                   help="threads (default: OpenMP's, OMP_NUM_THREADS)")


def _add_output_options(t):
    """train: --out, --mpi, --plot."""
    t.add_argument("--out", metavar="MODEL", help="where to save the model "
                   "(default model.safetensors; demo "
                   "bpcore-demo.safetensors) in the current directory")
    t.add_argument("--mpi", action="store_true",
                   help="train data-parallel over MPI: run as 'mpiexec -n R "
                   "bpcore train DATA --mpi ...' (needs bpcore[mpi]); every "
                   "rank reads the data and trains on its share of the rows; "
                   "rank 0 prints and saves")
    t.add_argument("--plot", metavar="PNG", help="write the learning curves "
                   "to this image (needs matplotlib)")


def _add_predict(sub):
    pr = sub.add_parser("predict", help="predict with a saved model",
                        description=(
                            "Predict for the rows of DATA (with or without "
                            "the target column). Class labels come out as "
                            "in the training data, with one probability "
                            "column per class."))
    _add_model_and_data(pr, cmd_predict, out_help="write here (default: "
                        "stdout)")


def _add_evaluate(sub):
    ev = sub.add_parser("evaluate", help="loss and accuracy or R2 of a "
                        "saved model on labelled data")
    _add_model_and_data(ev, cmd_evaluate)


def _add_model_and_data(parser, func, out_help=None):
    """predict and evaluate: MODEL DATA... [--out CSV] [--threads T]
    [--header ...], run by func."""
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("data", nargs="+", metavar="DATA")
    if out_help is not None:
        parser.add_argument("--out", metavar="CSV", help=out_help)
    parser.add_argument("--threads", type=_positive_int("threads"),
                        metavar="T")
    _add_header_option(parser)
    parser.set_defaults(func=func)


def _add_info(sub):
    inf = sub.add_parser("info", help="architecture, parameters and "
                         "training summary of a saved model")
    inf.add_argument("model", metavar="MODEL")
    inf.set_defaults(func=cmd_info)


def _add_export(sub):
    exp = sub.add_parser("export", help="write a saved model as ONNX, C "
                         "source or a PyTorch module",
                         description=EXPORT_DESCRIPTION)
    exp.add_argument("model", metavar="MODEL")
    exp.add_argument("--format", required=True, choices=EXPORT_FORMATS,
                     help="onnx, c or torch")
    exp.add_argument("--out", required=True, metavar="PATH",
                     help="output file (for c: the path prefix of the "
                     ".h/.c pair)")
    exp.add_argument("--no-scaling", action="store_true",
                     help="export the bare network, without the stored "
                     "input/output scaling")
    exp.set_defaults(func=cmd_export)
