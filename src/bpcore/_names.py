"""The names bpcore accepts, in one place.

Every front end (Network, the file loader, the CLI, the scikit-learn
estimators) reads its choices from here.  The C codes that go with the
names are declared in ``_bpcore_c.pxd`` from ``bpcore.h``; the mapping from
name to code lives beside the names (see ``ACT_CODES`` and friends once
the core exposes them).
"""

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
