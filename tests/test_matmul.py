"""The kernel's layer product through bpcore._core.matmul (the benchmark
entry): the three products of a layer against numpy, on awkward shapes,
both dtypes, with the same bits on 1 and 2 threads."""
import numpy as np
import pytest

from bpcore import _core

SHAPES = [(1, 1, 1), (7, 33, 5), (32, 128, 64), (45, 60, 40), (130, 257, 300),
          (256, 96, 520), (3, 1030, 17)]


@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-5), ("float64", 1e-12)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_three_products_match_numpy(dtype, rtol, m, k, n, rng):
    X = rng.normal(size=(m, k)).astype(dtype)
    W = rng.normal(size=(k, n)).astype(dtype)
    D = rng.normal(size=(m, n)).astype(dtype)
    ref_fw = X.astype(np.float64) @ W
    ref_dw = X.T.astype(np.float64) @ D
    ref_dx = D.astype(np.float64) @ W.T
    scale = np.sqrt(max(k, m, n))
    for nt in (1, 2):
        fw = _core.matmul(X, W, n_threads=nt)
        dw = _core.matmul(X, D, trans_a=True, n_threads=nt)
        dx = _core.matmul(D, W, trans_b=True, n_threads=nt)
        for got, want in ((fw, ref_fw), (dw, ref_dw), (dx, ref_dx)):
            assert got.dtype == np.dtype(dtype)
            np.testing.assert_allclose(got, want, rtol=rtol,
                                       atol=rtol * scale)
        if nt == 1:
            first = (fw, dw, dx)
        else:
            for a, b in zip(first, (fw, dw, dx)):
                assert np.array_equal(a, b)


def test_bad_operands_are_refused(rng):
    A = rng.normal(size=(4, 5))
    with pytest.raises(ValueError, match="inner dimensions"):
        _core.matmul(A, rng.normal(size=(4, 5)))
    with pytest.raises(ValueError, match="one dtype"):
        _core.matmul(A, rng.normal(size=(5, 3)).astype(np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.matmul(A.T, rng.normal(size=(4, 3)))
    with pytest.raises(ValueError, match="n_threads"):
        _core.matmul(A, rng.normal(size=(5, 3)), n_threads=0)
