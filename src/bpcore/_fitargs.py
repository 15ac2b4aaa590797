"""fit's options, checked the same way by every training loop (the C
batch driver of bpcore.network and the data-parallel one of
bpcore._distributed)."""
import numpy as np

from bpcore import _validation as V
from bpcore._training import EarlyStopping
from bpcore.optim import SGD, get_optimizer

__all__ = ["check_fit_options", "check_validation_tuple"]


def check_fit_options(epochs, batch_size, optimizer, shuffle, early_stopping,
                      callbacks):
    """fit's options, checked: (epochs, batch_size, optimizer object,
    shuffle, callbacks as a tuple).  The default optimizer is SGD(lr=0.1)."""
    epochs = V.check_int(epochs, "epochs", minimum=1)
    if batch_size is not None:
        batch_size = V.check_int(batch_size, "batch_size", minimum=1)
    opt = SGD(lr=0.1) if optimizer is None else get_optimizer(optimizer)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if early_stopping is not None and not isinstance(early_stopping,
                                                     EarlyStopping):
        raise TypeError(f"early_stopping must be a bpcore.EarlyStopping, "
                        f"got {type(early_stopping).__name__}")
    return epochs, batch_size, opt, bool(shuffle), _check_callbacks(callbacks)


def _check_callbacks(callbacks):
    """A callable or a sequence of callables, as a tuple."""
    if callable(callbacks):
        callbacks = (callbacks,)
    try:
        callbacks = tuple(callbacks)
    except TypeError:
        raise TypeError("callbacks must be a sequence of callables") from None
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables cb(epoch, logs), "
                            f"got {cb!r}")
    return callbacks


def check_validation_tuple(validation_data):
    """validation_data must be (X, Y) or (X, Y, sample_weight)."""
    if not isinstance(validation_data, (tuple, list)) or len(
            validation_data) not in (2, 3):
        raise TypeError("validation_data must be a tuple (X_val, Y_val)"
                        " or (X_val, Y_val, sample_weight_val)")
