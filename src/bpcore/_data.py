"""Out-of-core inputs: ``np.memmap`` and row-indexable array-likes.

An array-like with ``shape``, ``dtype``, ``__len__`` and ``__getitem__`` on
arrays of increasing row numbers (an h5py dataset, a zarr array, a memmap)
is read a block of rows at a time and never copied whole.  ``fit`` gathers
the rows of each chunk of batches (sorted, then put back in the shuffled
order) and hands them to the C batch loop in that order, which computes
exactly what it computes on the in-memory array.

A memmap is read with ``os.preadv`` from its file (into the block's own
buffer), not through the mapping: touching a mapped page makes the kernel
map whole large folios around it (measured: 256 scattered rows of a 250 MB
file mapped 174 MB), so scattered reads through the mapping would make the
resident memory grow with the file.  Where that is not possible (a
copy-on-write map, whose private changes only the mapping holds; a file
gone; rows not contiguous), the mapping is read and its pages released
(``madvise(MADV_DONTNEED)``) after each block and every few rows.
"""
import mmap
import os

import numpy as np

from bpcore import _validation as V

__all__ = ["is_out_of_core", "Rows", "targets_source", "read_targets"]

# Rows per block read: bounded in bytes, and in rows (a shuffled read may
# touch one page per row).
BLOCK_BYTES = 8 << 20
BLOCK_ROWS = 8192
# Rows per gather from a memmap between two page releases: the kernel maps
# up to 64 KiB around each faulting page (fault-around), so a scattered
# read of r rows may map r * 64 KiB; 256 rows keep that near 16 MiB.
SCATTER_ROWS = 256


def _array_like(obj):
    """Whether obj looks like a row-indexable array (not an ndarray)."""
    if isinstance(obj, (np.ndarray, list, tuple, str, bytes, dict)):
        return False
    if hasattr(obj, "iloc") or hasattr(obj, "tocsr"):  # pandas, scipy.sparse
        return False
    if not all(hasattr(obj, a) for a in ("shape", "dtype", "__getitem__",
                                         "__len__")):
        return False
    try:
        np.dtype(obj.dtype)
        return len(tuple(obj.shape)) in (1, 2)
    except (TypeError, ValueError):
        return False


def is_out_of_core(X, ndim=None):
    """True for an np.memmap or a row-indexable array-like (of ndim
    dimensions, when given: a 1-D X is one sample, read in memory)."""
    if not (isinstance(X, np.memmap) or _array_like(X)):
        return False
    return ndim is None or len(tuple(X.shape)) == ndim


class Rows:
    """Blocks of rows of an out-of-core 2-D input (or 1-D targets)."""

    def __init__(self, X, name, n_features=None):
        self.X, self.name = X, name
        shape = tuple(int(s) for s in X.shape)
        kind = np.dtype(X.dtype).kind
        if kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype "
                            f"{np.dtype(X.dtype)}")
        if n_features is not None:
            if len(shape) != 2:
                raise ValueError(f"{name} must be 2-D (m, {n_features}), got "
                                 f"{len(shape)}-D shape {shape}")
            if shape[1] != n_features:
                raise ValueError(f"{name} has {shape[1]} features per "
                                 f"sample; the network expects {n_features}")
        if shape[0] == 0:
            raise ValueError(f"{name} is empty: it needs at least one sample")
        self.shape = shape
        self.m = shape[0]
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64))
                        * np.dtype(X.dtype).itemsize)
        self.block = max(1, min(BLOCK_ROWS, BLOCK_BYTES // row_bytes))
        self._mm = None
        self._fd = None
        if isinstance(X, np.memmap) and getattr(X, "mode", "c") != "c":
            mm = getattr(X, "_mmap", None)
            if mm is not None and hasattr(mm, "madvise") and hasattr(
                    mmap, "MADV_DONTNEED"):
                self._mm = mm
            self._open_file(X, mm)

    def _open_file(self, X, mm):
        """Set up reads from the memmap's file (see the module's notes);
        left off when anything about the file or the layout is unclear."""
        if (mm is None or not X.flags.c_contiguous or X.size == 0
                or not isinstance(getattr(X, "filename", None), str)
                or not hasattr(os, "preadv")):
            return
        try:
            base = np.frombuffer(mm, dtype=np.uint8)
            delta = X.ctypes.data - base.ctypes.data
            del base
            start = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
            fd = os.open(X.filename, os.O_RDONLY)
        except (OSError, ValueError, TypeError, BufferError):
            return
        self._fd, self._pos0 = fd, start + delta
        self._row_bytes = X.strides[0]
        try:  # the offsets must find the mapped bytes
            first = np.empty((1,) + self.shape[1:], dtype=X.dtype)
            self._pread(first, [0])
            ok = first.tobytes() == np.asarray(X[:1]).tobytes()
        except OSError:
            ok = False
        if not ok:
            self.close()

    def close(self):
        """Close the file read by preadv, if any."""
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None

    def __del__(self):
        self.close()

    def _pread(self, out, rows, contiguous=False):
        """Rows (sorted row numbers; or [r0] with contiguous) into out."""
        rb = self._row_bytes
        view = memoryview(out.reshape(-1).view(np.uint8))
        if contiguous:
            runs = [(rows[0], out.shape[0])]
        else:
            runs = [(r, 1) for r in rows]
        at = 0
        for r, n in runs:
            want, pos = n * rb, self._pos0 + int(r) * rb
            while want:
                got = os.preadv(self._fd, [view[at:at + want]], pos)
                if got <= 0:
                    raise OSError(f"{self.name}: short read from "
                                  f"{self.X.filename}")
                at, pos, want = at + got, pos + got, want - got

    def blocks(self, rows=None):
        """(r0, r1) ranges covering the rows, rows (or self.block) each."""
        step = rows or self.block
        for r0 in range(0, self.m, step):
            yield r0, min(self.m, r0 + step)

    def release(self):
        """Drop the memmap's pages from this process (they stay in the
        page cache): resident memory no longer grows with what was read."""
        if self._mm is not None:
            try:
                self._mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):
                self._mm = None

    def read(self, r0, r1):
        """Rows [r0, r1) as an ndarray."""
        if self._fd is not None:
            out = np.empty((r1 - r0,) + self.shape[1:],
                           dtype=np.dtype(self.X.dtype))
            self._pread(out, [r0], contiguous=True)
            return out
        out = np.array(self.X[r0:r1])
        self.release()
        return out

    def take(self, idx):
        """Rows idx (distinct row numbers, any order) as an ndarray, read
        in increasing order (as h5py requires) and put back in idx's."""
        o = np.argsort(idx, kind="stable")
        s = idx[o]
        if self._fd is not None:
            block = np.empty((len(s),) + self.shape[1:],
                             dtype=np.dtype(self.X.dtype))
            self._pread(block, s.tolist())
        elif self._mm is None:
            block = np.asarray(self.X[s])
        else:
            block = np.empty((len(s),) + self.shape[1:],
                             dtype=np.dtype(self.X.dtype))
            for p0 in range(0, len(s), SCATTER_ROWS):
                block[p0:p0 + SCATTER_ROWS] = self.X[s[p0:p0 + SCATTER_ROWS]]
                self.release()
        out = np.empty_like(block)
        out[o] = block
        self.release()
        return out

    def read_inputs(self, r0, r1, dtype):
        """Rows [r0, r1) validated as inputs (C order, dtype, finite)."""
        return V.as_inputs(self.read(r0, r1), self.name, dtype,
                           self.shape[1])[0]


def targets_source(Y, m, name="Y"):
    """Targets beside an out-of-core X: a Rows when Y is out-of-core too,
    else an ndarray (targets are small); the length must be m."""
    if is_out_of_core(Y):
        ys = Rows(Y, name)
        n = ys.m
    else:
        ys = V._numeric(Y, name)
        n = ys.shape[0] if ys.ndim else 0
    if n != m:
        raise ValueError(f"{name} has {n} rows for {m} samples")
    return ys


def _slice(ys, r0, r1, idx=None):
    if isinstance(ys, Rows):
        return ys.read(r0, r1) if idx is None else ys.take(idx)
    return ys[r0:r1] if idx is None else ys[idx]


def read_targets(net, ys, r0, r1, idx=None, labels=True):
    """Targets of rows [r0, r1) (or rows idx) validated for net."""
    Yb = _slice(ys, r0, r1, idx)
    n = r1 - r0 if idx is None else len(idx)
    return net._targets(Yb, n, labels=labels)
