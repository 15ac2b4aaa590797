"""The names bpcore accepts, in one place.

Every front end (Network, the file loader, the CLI, the scikit-learn
estimators) reads its choices from here.  The C codes that go with the
names are the enums of ``bpcore.h`` (``bp_act``, ``bp_loss``,
``bp_opt_kind``), declared by name in ``_bpcore_c.pxd`` and exposed as
``_core.C_ENUMS``; ``ACT_CODES``, ``LOSS_CODES`` and ``OPT_CODES`` map each
name to the enumerator of the same name (``BP_ACT_`` + the name in upper
case, and so on), never to a position in a tuple.
"""
from bpcore import _core

# hidden-layer activations; every one is also a valid output
ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
               "softplus", "gelu")
# output activations: the hidden ones plus softmax
OUTPUTS = ACTIVATIONS + ("softmax",)
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy", "mae", "huber",
          "poisson")
# the output activation a loss needs (the others take any output)
LOSS_OUTPUT = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid",
               "poisson": "identity"}
# losses for real-valued targets (no class labels)
REGRESSION_LOSSES = ("mse", "mae", "huber", "poisson")
# gradient-step optimizers of bpcore.optim; "lbfgs" is bpcore.LBFGS
OPTIMIZERS = ("sgd", "adam", "adamw")
SOLVERS = OPTIMIZERS + ("lbfgs",)
INITS = ("auto", "xavier", "he", "lecun", "normal", "uniform")


# C spellings that are not the name in upper case
_C_SPELLING = {"cross_entropy": "CE", "binary_cross_entropy": "BCE"}


def _codes(prefix, names):
    """name -> the C enumerator prefix + NAME (bpcore.h)."""
    return {n: _core.C_ENUMS[prefix + _C_SPELLING.get(n, n.upper())]
            for n in names}


ACT_CODES = _codes("BP_ACT_", OUTPUTS)
LOSS_CODES = _codes("BP_LOSS_", LOSSES)
OPT_CODES = _codes("BP_OPT_", OPTIMIZERS)
