"""Exception classes shared by every layer of bpcore."""


class DivergenceError(FloatingPointError):
    """The training loss became NaN or infinite.

    The network keeps the parameters of its last completed epoch.
    """


class FormatError(ValueError):
    """A model file or byte string is malformed or not a bpcore model."""


class ConvergenceWarning(UserWarning):
    """An iterative solver (``bpcore.LBFGS``) stopped on its iteration or
    evaluation limit, or could not make progress, before converging."""
