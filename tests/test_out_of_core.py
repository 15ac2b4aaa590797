"""Out-of-core data: np.memmap, h5py datasets and any row-indexable
array-like give the in-memory results bit for bit, read bounded blocks of
rows in increasing order, never the whole input; fit_chunks; errors."""
import copy

import numpy as np
import pytest

import bpcore


class Rows:
    """A minimal row-indexable array-like that counts what is read and
    refuses what an out-of-core source could not do: more than `limit`
    rows at once, or row numbers out of increasing order (as h5py)."""

    def __init__(self, a, limit):
        self.a, self.limit = a, limit
        self.shape, self.dtype = a.shape, a.dtype
        self.rows_read = 0
        self.largest = 0

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, slice):
            n = len(range(*key.indices(self.shape[0])))
        else:
            key = np.asarray(key)
            assert key.ndim == 1 and key.dtype.kind in "iu"
            assert (np.diff(key) > 0).all(), "indices must increase"
            n = key.shape[0]
        if n > self.limit:
            raise AssertionError(f"asked for {n} rows at once")
        self.rows_read += n
        self.largest = max(self.largest, n)
        return self.a[key].copy()


def _data(rng, m=3000, n=6, classes=3):
    X = rng.normal(size=(m, n)).astype(np.float32)
    y = rng.integers(0, classes, m)
    return X, y


def _memmap(tmp_path, a, name):
    mm = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=a.dtype,
                                   shape=a.shape)
    mm[...] = a
    mm.flush()
    return np.load(tmp_path / name, mmap_mode="r")


def _net(n_in, classes=3, dropout=0.0, **kw):
    return bpcore.Network([n_in, 16, 12, classes], activation="relu",
                          output="softmax", loss="cross_entropy", seed=7,
                          dropout=dropout, **kw)


@pytest.mark.parametrize("dropout", [0.0, 0.3], ids=["plain", "dropout"])
@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffle", "ordered"])
def test_memmap_fit_equals_in_memory(tmp_path, rng, dropout, shuffle):
    X, y = _data(rng)
    sw = rng.uniform(0.5, 2.0, X.shape[0]).astype(np.float32)
    Xm = _memmap(tmp_path, X, "x.npy")
    ym = _memmap(tmp_path, y, "y.npy")
    Xv, yv = _data(rng, m=500)
    a, b = _net(6, dropout=dropout), _net(6, dropout=dropout)
    kw = dict(epochs=3, batch_size=32, shuffle=shuffle, sample_weight=sw,
              optimizer="adam")
    ha = a.fit(X, y, validation_data=(Xv, yv), **kw)
    hb = b.fit(Xm, ym, validation_data=(_memmap(tmp_path, Xv, "xv.npy"), yv),
               **kw)
    np.testing.assert_array_equal(a.params, b.params)
    assert ha.loss == hb.loss and ha.val_loss == hb.val_loss
    np.testing.assert_array_equal(a.predict(X), b.predict(Xm))
    assert a.evaluate(X, y, sample_weight=sw) == b.evaluate(
        Xm, ym, sample_weight=sw)


@pytest.mark.parametrize("B", [1, 5, 64], ids=["online", "small", "wide"])
def test_array_like_reads_bounded_blocks(rng, B, monkeypatch):
    monkeypatch.setattr(bpcore._data, "BLOCK_ROWS", 700)  # blocks < m
    X, y = _data(rng, m=2500)
    Y = np.eye(3)[y]  # 2-D targets, also out-of-core
    a = _net(6)
    b = copy.deepcopy(a)
    a.fit(X, Y, epochs=2, batch_size=B)
    src, ys = Rows(X, limit=700), Rows(Y, limit=700)
    b.fit(src, ys, epochs=2, batch_size=B)
    np.testing.assert_array_equal(a.params, b.params)
    # one checking pass, then each epoch reads each row once
    assert src.rows_read == 3 * 2500 and ys.rows_read == 3 * 2500
    assert src.largest <= 700
    np.testing.assert_array_equal(a.predict(X), b.predict(Rows(X, 700)))
    assert a.evaluate(X, Y) == b.evaluate(Rows(X, 10**6), Rows(Y, 10**6))


def test_h5py_dataset(tmp_path, rng):
    h5py = pytest.importorskip("h5py")
    X, y = _data(rng, m=1200)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["X"] = X
        f["y"] = y
    a = _net(6, dropout=0.2)
    b = copy.deepcopy(a)
    a.fit(X, y, epochs=2, batch_size=16)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        b.fit(f["X"], f["y"], epochs=2, batch_size=16)
        np.testing.assert_array_equal(a.params, b.params)
        np.testing.assert_array_equal(a.predict(X), b.predict(f["X"]))
        assert a.evaluate(X, y) == b.evaluate(f["X"], f["y"])


def test_dtype_conversion_per_block(tmp_path, rng):
    X, y = _data(rng, m=900)
    X64 = X.astype(np.float64)
    a = _net(6, dtype="float64")
    b = copy.deepcopy(a)
    a.fit(X64, y, epochs=1)
    b.fit(_memmap(tmp_path, X, "x32.npy"), y, epochs=1)  # float32 on disk
    np.testing.assert_array_equal(a.params, b.params)


def test_bad_rows_rejected_before_any_work(tmp_path, rng):
    X, y = _data(rng, m=20000)
    X[17000, 2] = np.nan
    Xm = _memmap(tmp_path, X, "bad.npy")
    net = _net(6)
    before = net.params.copy()
    state = copy.deepcopy(net._rng.bit_generator.state)
    with pytest.raises(ValueError, match="X contains NaN"):
        net.fit(Xm, y, epochs=1)
    y2 = y.copy()
    y2[19999] = 3
    with pytest.raises(ValueError, match="class labels must be in"):
        net.fit(Rows(np.nan_to_num(X), 10**6), Rows(y2, 10**6), epochs=1)
    with pytest.raises(ValueError, match="features per sample"):
        net.fit(Rows(X[:, :4], 10**6), y, epochs=1)
    with pytest.raises(ValueError, match="Y has 19999 rows for 20000"):
        net.fit(Rows(X, 10**6), y[:-1], epochs=1)
    with pytest.raises(ValueError, match="validation_data X contains NaN"):
        net.fit(X[:10], y[:10], validation_data=(Xm, y))
    np.testing.assert_array_equal(net.params, before)
    assert net._rng.bit_generator.state == state
    with pytest.raises(ValueError, match="X contains NaN"):
        net.predict(Xm)


def test_fit_chunks(rng):
    X, y = _data(rng, m=600)
    a = _net(6, dropout=0.25)
    b = copy.deepcopy(a)
    a.fit(X, y, epochs=1, batch_size=16)
    b.fit_chunks([(X, y)], batch_size=16)  # one chunk: exactly fit
    np.testing.assert_array_equal(a.params, b.params)

    parts = [(X[i:i + 250], y[i:i + 250]) for i in range(0, 600, 250)]
    c = _net(6)
    hist = c.fit_chunks(parts, epochs=3, batch_size=32, optimizer="adam")
    assert hist.epochs_run == 3 and len(hist.loss) == 3
    assert hist.loss[-1] < hist.loss[0]
    d = _net(6)
    d.fit_chunks(lambda: iter(parts), epochs=3, batch_size=32,
                 optimizer="adam")
    np.testing.assert_array_equal(c.params, d.params)
    # batch_size=None: each chunk one batch; with weights
    e = _net(6)
    e.fit_chunks([(X[:300], y[:300], np.ones(300)), (X[300:], y[300:])],
                 batch_size=None, epochs=2)
    assert np.isfinite(e.params).all()


def test_fit_chunks_errors(rng):
    X, y = _data(rng, m=100)
    net = _net(6)
    before = net.params.copy()
    with pytest.raises(ValueError, match="re-iterable"):
        net.fit_chunks(iter([(X, y)]), epochs=2)
    with pytest.raises(TypeError, match="iterable of"):
        net.fit_chunks((X, y))
    with pytest.raises(TypeError, match="chunks must be an iterable"):
        net.fit_chunks(5)
    bad = X.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="chunk 1 X contains NaN"):
        net.fit_chunks([(X, y), (bad, y)], epochs=1)
    with pytest.raises(TypeError, match="chunk 0 must be a tuple"):
        net.fit_chunks([X], epochs=1)
    # the failed epoch was undone
    np.testing.assert_array_equal(net.params, before)


def _mapped_kb(path):
    """Resident kB of this process's mappings of path (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
    return total


def test_memmap_pages_are_released(tmp_path, rng):
    """fit, predict and evaluate leave almost none of a memmap resident in
    this process (its pages are dropped after each block)."""
    import os
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("needs /proc/self/smaps")
    X, y = _data(rng, m=400_000, n=16)  # 25.6 MB
    path = tmp_path / "big.npy"
    Xm = _memmap(tmp_path, X, "big.npy")
    del X
    net = _net(16)
    net.fit(Xm, y, epochs=1, batch_size=512)
    net.predict(Xm)
    net.evaluate(Xm, y)
    assert _mapped_kb(path) < 4096  # of 25000 kB
    Xm[:].sum()  # an ordinary full read does map it all: the check works
    assert _mapped_kb(path) > 20000


@pytest.mark.parametrize("mode", ["r", "r+", "c"])
def test_memmap_modes_and_views(tmp_path, rng, mode):
    """Reads from the file (r, r+) and through a copy-on-write map (c, whose
    private changes only the mapping holds) give the mapped values; so do
    views of a memmap (a row slice)."""
    X, y = _data(rng, m=700)
    _memmap(tmp_path, X, "x.npy")
    Xm = np.load(tmp_path / "x.npy", mmap_mode=mode)
    if mode != "r":
        Xm[5] = 7.0  # r+: written to the file; c: private to this map
        X[5] = 7.0
    view, Xv = Xm[100:650], X[100:650]
    a, b = _net(6), _net(6)
    a.fit(Xv, y[100:650], epochs=2, batch_size=8)
    b.fit(view, y[100:650], epochs=2, batch_size=8)
    np.testing.assert_array_equal(a.params, b.params)
    np.testing.assert_array_equal(a.predict(X), b.predict(Xm))


def test_one_sample_memmap_is_read_in_memory(tmp_path, rng):
    X, _ = _data(rng, m=3)
    net = _net(6)
    x1 = _memmap(tmp_path, X[0], "one.npy")
    np.testing.assert_array_equal(net.predict(x1), net.predict(X[0]))
