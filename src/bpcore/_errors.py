"""Exception classes shared by every layer of bpcore."""


class DivergenceError(FloatingPointError, ValueError):
    """The training loss or the parameters became NaN or infinite.

    The network keeps the parameters of its last completed epoch.  It is a
    ``FloatingPointError`` and also a ``ValueError``, the exception that
    scikit-learn's MLPs raise for non-finite weights, so code written for
    either catches it.
    """


class FormatError(ValueError):
    """A model file or byte string is malformed or not a bpcore model."""


class ConvergenceWarning(UserWarning):
    """An iterative solver (``bpcore.LBFGS``) stopped on its iteration or
    evaluation limit, or could not make progress, before converging."""


class DistributedError(RuntimeError):
    """Another MPI rank failed during a ``fit``, ``step`` or ``evaluate``
    with ``comm=``; this rank stopped too.

    ``rank`` is the failed rank, ``remote`` its exception as text.  The
    failed rank itself raises its own exception.
    """

    def __init__(self, message, rank=None, remote=None):
        super().__init__(message)
        self.rank = rank
        self.remote = remote
