"""Arrays whose data start on a 64-byte boundary (a cache line, one
AVX-512 vector).

numpy aligns its allocations to 16 bytes only, so where a large array lands
relative to a cache line depends on what the process allocated before.  The
kernels read the parameters, gradients and optimizer state with full-width
vector loads; off a line boundary every such load touches two lines.  The
single-row predict of a 784-256-128-10 network, which streams its weights,
took 11 us instead of 7 us that way.  The parameter vector and the arrays
the C code reads beside it come from here, so the speed does not depend on
the allocator's luck.
"""
from __future__ import annotations

import numpy as np

ALIGN = 64


def empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of n elements of dtype, 64-byte aligned."""
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.itemsize == 0:
        return np.empty(n, dtype=dtype)  # nothing to align
    nbytes = int(n) * dtype.itemsize
    raw = np.empty(nbytes + ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes].view(dtype)


def zeros(n: int, dtype) -> np.ndarray:
    """A zero-filled 1-D array of n elements of dtype, 64-byte aligned."""
    a = empty(n, dtype)
    a.fill(0)
    return a


def empty_like(a: np.ndarray) -> np.ndarray:
    """An uninitialised aligned 1-D array with a's size and dtype."""
    return empty(a.size, a.dtype).reshape(a.shape)


def copy(a: np.ndarray) -> np.ndarray:
    """An aligned C-contiguous copy of a."""
    out = empty_like(a)
    np.copyto(out, a)
    return out
