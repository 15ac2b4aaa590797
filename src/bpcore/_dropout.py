"""Dropout masks, the numpy twin of the C core's counter-based generator.

A mask depends only on (seed, row, layer, unit), never on the thread count
or on how rows are split (see ``bp_arch`` in ``csrc/include/bpcore/bpcore.h``):
the row hash is ``mix(seed ^ mix(i))``, unit j of hidden layer k + 1 hashes
to ``h = mix(row_hash ^ (k << 40) ^ j)`` and is kept when
``(h >> 11) / 2**53 >= rate``, with ``mix`` splitmix64's finaliser.  In
``fit``, batch b of a pass uses ``batch_seed(seed, b)`` and rows counted
within the batch.  Kept units are scaled by ``1 / (1 - rate)``
(inverted dropout), so predict needs no rescaling.
"""
import numbers

import numpy as np

__all__ = ["check_dropout", "batch_seed", "keep_mask", "masks", "GOLDEN"]

_U64 = np.uint64
GOLDEN = 0x9E3779B97F4A7C15
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(x):
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    x = x + _U64(GOLDEN)
    x = (x ^ (x >> _U64(30))) * _M1
    x = (x ^ (x >> _U64(27))) * _M2
    return x ^ (x >> _U64(31))


def batch_seed(seed, b):
    """The seed of batch b (counted from 0) of a pass with this seed."""
    x = np.array([(int(seed) + int(b) * GOLDEN) & _MASK64], dtype=_U64)
    return int(_mix(x)[0])


def keep_mask(seed, m, k, n, rate):
    """Boolean (m, n): which units of hidden layer k + 1 the rows keep."""
    rows = _mix(np.array([seed], dtype=_U64) ^ _mix(np.arange(m, dtype=_U64)))
    cols = np.arange(n, dtype=_U64) ^ _U64((int(k) << 40) & _MASK64)
    h = _mix(rows[:, None] ^ cols[None, :])
    return (h >> _U64(11)).astype(np.float64) * 2.0 ** -53 >= rate


def masks(seed, m, layers, rates, dtype):
    """L + 1 entries: None for the input and output layers, and for hidden
    layer k an (m, n_k) array of dtype holding 0 (dropped) or 1 / (1 -
    rate) (kept), the factor the layer's outputs are multiplied by."""
    L = len(layers) - 1
    out = [None] * (L + 1)
    for k in range(L - 1):
        rate = rates[k]
        scale = np.asarray(1.0 / (1.0 - rate)).astype(dtype)
        keep = keep_mask(seed, m, k, layers[k + 1], rate)
        out[k + 1] = np.where(keep, scale, dtype.type(0)).astype(dtype)
    return out


def check_dropout(value, n_hidden, name="dropout"):
    """A tuple of n_hidden rates in [0, 1) from a rate or a sequence."""
    def rate(v, where):
        if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (numbers.Real, np.floating, np.integer)):
            raise TypeError(f"{where} must be a real number in [0, 1), got "
                            f"{v!r}")
        v = float(v)
        if not 0.0 <= v < 1.0:  # also rejects NaN
            raise ValueError(f"{where} must be in [0, 1), got {v}")
        return v

    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a rate or a sequence of rates, got "
                        f"{value!r}")
    if hasattr(value, "__iter__"):
        rates = [rate(v, f"{name}[{i}]") for i, v in enumerate(value)]
        if len(rates) != n_hidden:
            raise ValueError(f"{name} lists {len(rates)} rates; the network "
                             f"has {n_hidden} hidden layers")
        return tuple(rates)
    r = rate(value, name)
    if r > 0 and n_hidden == 0:
        raise ValueError(f"{name}={r} needs hidden layers; the network has "
                         f"none")
    return (r,) * n_hidden
