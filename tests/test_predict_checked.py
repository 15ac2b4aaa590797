"""predict checks its input inside the C call, block by block as the rows
are used: a NaN or an infinity anywhere in X is still the clear ValueError
of the full validation, whatever the thread count, the row count (one row,
a few rows shared by a team, many blocks) and the dtype."""
import numpy as np
import pytest

import bpcore


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m", [1, 3, 700, 5000])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_input_anywhere_is_a_clear_error(dtype, m, bad):
    net = bpcore.Network([300, 400, 10], activation="relu", output="softmax",
                         dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    X = rng.standard_normal((m, 300)).astype(dtype)
    want = net.predict(X, n_threads=1)
    for row in sorted({0, m // 2, m - 1}):
        Xb = X.copy()
        Xb[row, 299] = bad
        for nt in (1, 2):
            with pytest.raises(ValueError, match="X.*(NaN|inf|finite)"):
                net.predict(Xb, n_threads=nt)
            if m == 1:
                with pytest.raises(ValueError, match="(NaN|inf|finite)"):
                    net.predict(Xb[0], n_threads=nt)
    # the network is usable and the results unchanged afterwards
    for nt in (1, 2):
        assert np.array_equal(net.predict(X, n_threads=nt), want)
