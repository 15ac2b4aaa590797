"""Thread settings, and training results that are the same bits for any
number of threads (the shuffled order, batch splits and gradient sums do
not depend on it)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import bpcore
import reference as ref

CASES = {
    "full-batch": dict(batch_size=None),
    "batch-7": dict(batch_size=7),
    "batch-64": dict(batch_size=64),
    "batch-333": dict(batch_size=333),
    "online": dict(batch_size=1),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("optimizer", ["sgd-momentum", "adam"])
@pytest.mark.usefixtures("unclamped_threads")  # 3 and 4 really run
def test_fit_bits_independent_of_threads(dtype, case, optimizer, rng):
    m = 400 if case == "online" else 1000
    X = rng.normal(size=(m, 50))
    y = rng.integers(0, 3, size=m)
    sw = rng.uniform(0.1, 1.0, size=m)
    results = []
    for nt in (1, 2, 3, 4):
        net = bpcore.Network([50, 128, 64, 3], activation="gelu",
                             output="softmax", loss="cross_entropy",
                             dtype=dtype, seed=11)
        opt = (bpcore.SGD(lr=0.01, momentum=0.9) if optimizer != "adam"
               else bpcore.Adam(lr=1e-3))
        hist = net.fit(X, y, epochs=2, optimizer=opt, sample_weight=sw,
                       n_threads=nt, **CASES[case])
        results.append((net.params.copy(), hist.loss))
    for params, loss in results[1:]:
        assert np.array_equal(params, results[0][0])
        assert loss == results[0][1]


def test_set_and_get_num_threads(restore_threads):
    bpcore.set_num_threads(3)
    assert bpcore.get_num_threads() == 3
    with pytest.raises(ValueError, match="n_threads"):
        bpcore.set_num_threads(0)
    with pytest.raises(TypeError, match="n_threads"):
        bpcore.set_num_threads(1.5)
    bpcore.set_num_threads(None)
    assert bpcore.get_num_threads() >= 1


def test_omp_num_threads_is_the_default():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    r = subprocess.run([sys.executable, "-c",
                        "import bpcore; print(bpcore.get_num_threads())"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.strip() == "3", r.stderr


def _cpus_seen(**env_vars):
    """bpcore's CPU cap (show_config's `cpus`) in a fresh process with
    env_vars set."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OMP_PROC_BIND", "OMP_PLACES"))}
    env.update(env_vars)
    code = ("import bpcore, os; "
            "print(bpcore.show_config(file=open(os.devnull, 'w'))['cpus'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_omp_proc_bind_keeps_every_cpu():
    # With OMP_PROC_BIND, libgomp binds the importing thread to its first
    # place as it loads, so that thread's affinity mask holds one CPU; the
    # cap counts the places instead and the team still gets every CPU.
    plain = _cpus_seen()
    assert _cpus_seen(OMP_PROC_BIND="true") == plain
    assert _cpus_seen(OMP_PROC_BIND="spread", OMP_PLACES="threads") == plain
    # places that the user narrows still narrow the cap
    first = min(os.sched_getaffinity(0))
    assert _cpus_seen(OMP_PLACES="{%d}" % first) == 1


def _gomp_spincount(**env_vars):
    """The spin count libgomp reports in a fresh `import bpcore`, and
    whether the import left GOMP_SPINCOUNT in os.environ."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_vars, OMP_DISPLAY_ENV="VERBOSE")
    code = "import os, bpcore; print(os.environ.get('GOMP_SPINCOUNT'))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = [v for v in (r.stderr + r.stdout).splitlines()
             if v.strip().startswith("GOMP_SPINCOUNT")]
    if not lines:
        pytest.skip("OpenMP runtime is not libgomp")
    return lines[0].split("=")[1].strip().strip("'"), r.stdout.split()[-1]


def test_idle_spin_is_short_and_user_settings_win():
    # libgomp's default (300,000 rounds) would hold a core after
    # every parallel call; bpcore loads it with 10,000 and cleans up
    spin, left = _gomp_spincount()
    assert spin == "10000"
    assert left == "None"
    assert _gomp_spincount(GOMP_SPINCOUNT="77") == ("77", "77")
    spin, _ = _gomp_spincount(OMP_WAIT_POLICY="active")
    assert spin != "10000"


def test_threadpoolctl_limits_apply(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bpcore.set_num_threads(None)  # back to OpenMP's default
    if not bpcore.show_config(file=open(os.devnull, "w"))["openmp"]:
        pytest.skip("built without OpenMP")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert bpcore.get_num_threads() == 1


def test_show_config_reports_build():
    import io
    buf = io.StringIO()
    info = bpcore.show_config(file=buf)
    assert info["version"] == bpcore.__version__
    assert {"kernel", "openmp", "threads", "compiler"} <= set(info)
    assert "kernel" in buf.getvalue()
    # the kernel is the best this CPU runs (unless one was asked for)
    flags = _cpu_flags()
    if flags and not os.environ.get("BPCORE_KERNEL"):
        best = ("avx512" if "avx512f" in flags else
                "avx2" if {"avx2", "fma"} <= flags else "ref")
        assert info["kernel"] == best, (info["kernel"], best)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@pytest.mark.parametrize("value,words", [
    ("avx2x", "is not a kernel: use ref, avx2 or avx512"),
    ("AVX2", "is not a kernel"),
    ("avx512 ", "is not a kernel")])
def test_misspelt_kernel_request_is_refused(value, words):
    env = dict(os.environ, BPCORE_KERNEL=value)
    r = subprocess.run([sys.executable, "-c", "import bpcore"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and words in r.stderr


@pytest.mark.parametrize("kernel,flag", [("avx2", "avx2"),
                                         ("avx512", "avx512f")])
def test_kernel_request_runs_or_is_refused(kernel, flag):
    # a kernel the CPU runs is used; one it cannot run is refused at import
    env = dict(os.environ, BPCORE_KERNEL=kernel)
    r = subprocess.run([sys.executable, "-c", "import bpcore, os; print("
                        "bpcore.show_config(file=open(os.devnull, 'w'))"
                        "['kernel'])"], capture_output=True, text=True,
                       env=env, timeout=120)
    flags = _cpu_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo")
    if flag in flags:
        assert r.returncode == 0 and r.stdout.strip() == kernel, r.stderr
    else:
        assert r.returncode != 0 and "cannot run that kernel" in r.stderr


TINY_CASES = [("sigmoid", "sigmoid", "mse"), ("gelu", "softmax",
              "cross_entropy"), ("elu", "sigmoid", "binary_cross_entropy"),
              ("softplus", "softmax", "mse"), ("leaky_relu", "identity", "mse")]


@pytest.mark.parametrize("act, out, loss", TINY_CASES,
                         ids=["-".join(c) for c in TINY_CASES])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tiny_network_path(act, out, loss, dtype, rng):
    """Networks with layers <= 8 wide train on the lane path: one step
    matches the NumPy oracle, and full batches spanning several 1024-sample
    chunks give the same bits for any thread count."""

    layers = [3, 7, 5, 4]
    m = 2500
    X = rng.normal(size=(m, 3))
    if loss == "cross_entropy":
        Y = rng.integers(0, 4, size=m)
    else:
        Y = rng.uniform(0, 1, size=(m, 4))
    sw = rng.uniform(0.2, 2.0, size=m)
    ws = [rng.normal(0, 0.5, (a, b)) for a, b in zip(layers, layers[1:])]
    bs = [rng.normal(0, 0.1, b) for b in layers[1:]]
    ws = [w.astype(dtype).astype(np.float64) for w in ws]
    bs = [b.astype(dtype).astype(np.float64) for b in bs]
    nets = []
    for nt in (1, 2, 3):
        net = bpcore.Network(layers, activation=act, output=out, loss=loss,
                             dtype=dtype, seed=0)
        for k in range(3):
            net.weights[k][...] = ws[k]
            net.biases[k][...] = bs[k]
        net.step(X, Y, bpcore.SGD(lr=0.5), sample_weight=sw, n_threads=nt)
        nets.append(net.params.copy())
    assert all(np.array_equal(p, nets[0]) for p in nets[1:])
    mlp = ref.MLP(ws, bs, [act, act, out], loss)
    ref.step(mlp, X.astype(dtype), Y, ref.SGD(lr=0.5), sw.astype(dtype))
    tol = dict(rtol=1e-4, atol=2e-5) if dtype == "float32" else dict(
        rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(nets[0], mlp.params, **tol)
    # online and small batches take the one-lane and 16-lane groups
    a = bpcore.Network(layers, activation=act, output=out, loss=loss,
                       dtype=dtype, seed=1)
    b = bpcore.Network(layers, activation=act, output=out, loss=loss,
                       dtype=dtype, seed=1)
    a.fit(X[:40], Y[:40], epochs=1, batch_size=1, shuffle=False,
          optimizer=bpcore.SGD(lr=0.1))
    opt = bpcore.SGD(lr=0.1)
    for i in range(40):
        b.step(X[i:i + 1], Y[i:i + 1], opt)
    assert np.array_equal(a.params, b.params)


_HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
           "softplus", "gelu"]
_HEADS = [(o, "mse") for o in _HIDDEN + ["softmax"]] + [
    ("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")]


@pytest.mark.parametrize("head", _HEADS, ids=["-".join(h) for h in _HEADS])
@pytest.mark.parametrize("act", _HIDDEN)
def test_tiny_path_every_activation_and_loss(act, head, rng):
    """One weighted step of a tiny network (the lane path; 53 samples: three
    full 16-lane groups and a partial one) against the NumPy oracle."""

    out, loss = head
    layers = [2, 3, 2, 3]
    m = 53
    X = rng.normal(size=(m, 2))
    Y = (rng.integers(0, 3, size=m) if loss == "cross_entropy"
         else rng.uniform(0, 1, size=(m, 3)))
    sw = rng.uniform(0.2, 2.0, size=m)
    ws = [rng.normal(0, 0.7, (a, b)) for a, b in zip(layers, layers[1:])]
    bs = [rng.normal(0, 0.1, b) for b in layers[1:]]
    net = bpcore.Network(layers, activation=act, output=out, loss=loss,
                         dtype="float64", seed=0)
    for k in range(3):
        net.weights[k][...] = ws[k]
        net.biases[k][...] = bs[k]
    got = net.step(X, Y, bpcore.SGD(lr=0.3), sample_weight=sw)
    mlp = ref.MLP(ws, bs, [act, act, out], loss)
    want = ref.step(mlp, X, Y, ref.SGD(lr=0.3), sw)
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(net.params, mlp.params, rtol=1e-9, atol=1e-12)


# name -> (hyperparameters, bpcore optimizer, oracle optimizer)
_ONLINE_OPTS = {
    "sgd": (dict(lr=0.1), bpcore.SGD, ref.SGD),
    "sgd-decay": (dict(lr=0.1, weight_decay=0.01), bpcore.SGD, ref.SGD),
    "nesterov": (dict(lr=0.05, momentum=0.9, nesterov=True,
                      weight_decay=0.01), bpcore.SGD, ref.SGD),
    "adam": (dict(lr=0.01, weight_decay=0.01), bpcore.Adam, ref.Adam),
    "adamw": (dict(lr=0.01, weight_decay=0.1), bpcore.AdamW, ref.AdamW),
}


def _online_and_batch(make_net, X, Y, sw, opt_a, opt_b, epochs):
    """Two equal networks: one fit online (batch 1), one by the batch loop
    with each batch the sample and a zero-weighted filler, which gives the
    online updates exactly.  Asserts equal bits and losses; returns the
    online one."""
    a, b = make_net(), make_net()
    hist_a = a.fit(X, Y, epochs=epochs, batch_size=1, shuffle=False,
                   optimizer=opt_a, sample_weight=sw)
    sw2 = np.zeros(2 * X.shape[0])
    sw2[::2] = 1.0 if sw is None else sw
    hist_b = b.fit(np.repeat(X, 2, axis=0), np.repeat(Y, 2, axis=0),
                   epochs=epochs, batch_size=2, shuffle=False,
                   optimizer=opt_b, sample_weight=sw2)
    assert np.array_equal(a.params, b.params)
    assert hist_a.loss == hist_b.loss
    return a


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name", _ONLINE_OPTS)
@pytest.mark.parametrize("act,out,loss", [
    ("sigmoid", "sigmoid", "mse"), ("tanh", "softmax", "cross_entropy"),
    ("relu", "sigmoid", "binary_cross_entropy"), ("gelu", "softmax", "mse")])
def test_online_path_equals_batch_path(dtype, opt_name, act, out, loss, rng):
    # Online learning on a tiny network has its own fused loop in C.  The
    # batch loop gives the same updates when every batch holds the sample
    # and a zero-weighted filler: its gradient, loss and weight sums are the
    # online ones exactly, so the bits must agree.  Both are checked against
    # the NumPy oracle, sample by sample.
    layers = [3, 5, 4, 3]
    m = 60
    X = rng.normal(size=(m, 3))
    if loss == "cross_entropy":
        Y = np.eye(3)[rng.integers(0, 3, size=m)]
    else:
        Y = rng.uniform(size=(m, 3))
    sw = rng.uniform(0.2, 2.0, size=m)
    sw[7] = 0
    hyper, make, make_ref = _ONLINE_OPTS[opt_name]

    def make_net():
        return bpcore.Network(layers, activation=act, output=out, loss=loss,
                              dtype=dtype, seed=5)

    start = make_net()
    mlp = ref.MLP([w.astype(np.float64) for w in start.weights],
                  [v.astype(np.float64) for v in start.biases],
                  [act, act, out], loss)
    opt_a, opt_b = make(**hyper), make(**hyper)
    a = _online_and_batch(make_net, X, Y, sw, opt_a, opt_b, epochs=1)
    assert opt_a.t == opt_b.t == m - 1
    opt_r = make_ref(**hyper)
    for i in range(m):
        if sw[i] > 0:
            ref.step(mlp, X[i:i + 1], Y[i:i + 1], opt_r, sw[i:i + 1])
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == "float32" else dict(
        rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(a.params, mlp.params, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name", ["sgd", "nesterov"])
def test_online_path_equals_batch_path_every_width(dtype, opt_name, rng):
    # The online loop's dense pieces are compiled once per output count
    # (1..8, the widths of a tiny network): every count appears as some
    # layer's width here, and the bits must still be the batch loop's.
    hyper, make, _ = _ONLINE_OPTS[opt_name]
    for layers in ([8, 1, 7, 2], [3, 6, 5, 4], [2, 8, 3, 8]):
        X = rng.normal(size=(40, layers[0]))
        Y = rng.uniform(size=(40, layers[-1]))
        _online_and_batch(
            lambda: bpcore.Network(layers, activation="tanh",
                                   output="sigmoid", loss="mse",
                                   dtype=dtype, seed=3),
            X, Y, None, make(**hyper), make(**hyper), epochs=2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_predict_few_rows_equals_forward_any_threads(dtype, output, rng):
    # One to four rows take a direct product (rows read each weight row
    # once; with several threads each layer's columns are shared out), five
    # and more the packed kernel: every way must give forward's bits.  The
    # first layer is deep enough for several kernel depth blocks and wide
    # enough for the threaded path; widths are not multiples of the blocks.
    net = bpcore.Network([300, 700, 45, 10], activation="tanh",
                         output=output, dtype=dtype, seed=2)
    X = rng.normal(size=(6, 300)).astype(dtype)
    for m in range(1, 7):
        want = net.forward(X[:m], n_threads=1).out[-1]
        for nt in (1, 2, 3):
            assert np.array_equal(net.predict(X[:m], n_threads=nt), want)
    for nt in (1, 2):
        assert np.array_equal(net.predict(X[2], n_threads=nt),
                              net.forward(X[2:3]).out[-1][0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("layers", [[784, 256, 128, 10], [600, 240, 400, 5],
                                    [2000, 120, 10], [1100, 200, 300, 7]])
def test_predict_one_row_depth_blocks_equal_forward(layers, dtype, rng):
    # One row through a deep layer no wider than one pass of the ISA (256
    # floats or 128 doubles on AVX-512) shares the layer's depth blocks
    # among the team, so each thread reads whole rows of W; the block sums
    # are added after the barrier in block order.  Forward's bits on any
    # team, whether the next layer is shared too ([600, 240, 400, 5]) or
    # thread 0 goes on alone; on other ISAs the columns are shared as before.
    net = bpcore.Network(layers, activation="relu", output="softmax",
                         loss="cross_entropy", dtype=dtype, seed=6)
    X = rng.normal(size=(3, layers[0])).astype(dtype)
    for i in range(3):
        want = net.forward(X[i:i + 1], n_threads=1).out[-1][0]
        for nt in (1, 2, 3, 4):
            assert np.array_equal(net.predict(X[i], n_threads=nt), want)


@pytest.mark.parametrize("layers", [[64, 16, 600, 300], [300, 700, 400],
                                    [500, 300, 8, 400, 9]])
def test_predict_few_rows_shares_only_leading_large_layers(layers, rng):
    # A few rows share a layer's columns among the team only while the
    # layers are large; from the first small one thread 0 goes on alone,
    # even past a large layer further on (the others have left, so a
    # barrier there would never be met).  The bits are forward's.
    net = bpcore.Network(layers, activation="relu", output="sigmoid",
                         loss="mse", dtype="float32", seed=4)
    X = rng.normal(size=(4, layers[0])).astype(np.float32)
    for m in range(1, 5):
        want = net.forward(X[:m], n_threads=1).out[-1]
        for nt in (1, 2, 4):
            assert np.array_equal(net.predict(X[:m], n_threads=nt), want)


@pytest.mark.parametrize("m", [1000, 2000, 4099])  # 128, 256, 512
def test_predict_row_blocks_equal_forward_any_threads(m, rng):
    # Many rows go in blocks of 128, 256 or 512 rows by the row count (the
    # last block short, down to three rows): forward's bits whatever the
    # block size and thread count.
    net = bpcore.Network([40, 33, 17, 5], activation="relu",
                         output="softmax", dtype="float32", seed=4)
    X = rng.normal(size=(m, 40)).astype(np.float32)
    want = net.forward(X, n_threads=1).out[-1]
    for nt in (1, 2, 3):
        assert np.array_equal(net.predict(X, n_threads=nt), want)


DEADLOCK_SCRIPT = """
import numpy as np, bpcore
rng = np.random.default_rng(0)
m = 600
X = rng.normal(size=(m, 64))
y = rng.integers(0, 10, size=m)
sw = np.where(rng.uniform(size=m) < 0.8, 0.0, 1.0)   # 80% of rows weigh 0
out = []
for nt in (1, 2):
    net = bpcore.Network([64, 128, 64, 10], activation="relu", output="softmax",
                         loss="cross_entropy", seed=1)
    h = net.fit(X, y, epochs=2, batch_size=8, sample_weight=sw, n_threads=nt)
    tiny = bpcore.Network([4, 8, 3], output="softmax", loss="cross_entropy",
                          seed=1)
    tiny.fit(X[:, :4], y % 3, epochs=2, batch_size=8, sample_weight=sw,
             n_threads=nt)
    out.append((net.params.copy(), h.loss, tiny.params.copy()))
    for bs in (1, 3):
        net = bpcore.Network([64, 256, 10], activation="relu",
                             output="softmax", loss="cross_entropy", seed=2)
        net.fit(X[:200], y[:200], epochs=1, batch_size=bs,
                sample_weight=sw[:200], n_threads=nt)
        out.append((net.params.copy(),))
a, b = out[:3], out[3:]
for u, v in zip(a, b):
    for p, q in zip(u, v):
        assert np.array_equal(p, q), "thread count changed the result"
print("done")
"""


def test_fit_with_zero_weight_batches_does_not_deadlock():
    """Batches whose weights are all zero are skipped by every thread alike
    (the decision was once taken per thread from a shared buffer that a
    thread running ahead overwrote: two threads then waited at different
    barriers for ever). Run in a subprocess so a hang fails the test."""
    try:
        r = subprocess.run([sys.executable, "-c", DEADLOCK_SCRIPT],
                           capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("fit with zero-weight batches hung at 2 threads")
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout


def _run_choosing_teams(code):
    """Run code (which prints "done" at its end) in a Python without the
    suite's BPCORE_TEAM=always, so that teams are chosen and raced."""
    env = {k: v for k, v in os.environ.items() if k != "BPCORE_TEAM"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout


def test_team_choice_is_measured_and_changes_no_result():
    """Without BPCORE_TEAM=always (the suite's setting), the core measures
    what a team costs on this host and picks one thread or the team per
    call; fit also races the two.  Neither may change a bit."""
    code = r"""
import numpy as np, bpcore
from bpcore import _core
c = _core.team_costs(2)
assert c["step_f32"] > 0 and c["step_f64"] > 0 and c["sync"] > 0, c
assert _core.team_size(2, 1e5, 10) == 1          # below any team's worth
assert _core.team_size(2, 1e13, 10) == 2         # seconds of work
assert _core.team_size(1, 1e13, 10) == 1
rng = np.random.default_rng(3)
X = rng.normal(size=(3000, 40))
y = rng.integers(0, 5, 3000)
res = []
for nt in (1, 2):
    for layers, bs in (([40, 64, 64, 5], 16), ([40, 256, 5], 512)):
        net = bpcore.Network(layers, activation="relu", output="softmax",
                             loss="cross_entropy", seed=4)
        net.fit(X, y, epochs=3, batch_size=bs, n_threads=nt)
        res.append(net.params.copy())
for a, b in zip(res[:2], res[2:]):
    assert np.array_equal(a, b)
print("done")
"""
    _run_choosing_teams(code)


def test_train_syncs_counts_the_batch_barriers():
    # the count fit's race and the C core's team choice use.  Cut by
    # samples (weights within 512 KB, at least 8 rows per thread of two):
    # its 2 barriers + 2 for what crosses between the cores.  Cut by
    # columns: 2 per layer + 1, less 1 when the output layer is a kernel
    # product narrower than the batch (no barrier before the delta below
    # it).  The tiny path: 5.
    def syncs(layers, batch, **kw):
        return bpcore.Network(layers, **kw)._arch.train_syncs(batch)
    assert syncs([64, 128, 64, 10], 32) == 4
    assert syncs([64, 10], 32) == 4
    assert syncs([64, 128, 64, 10], 15) == 6     # 7 rows per thread
    assert syncs([64, 128, 64, 10], 16) == 4
    assert syncs([600, 512, 64, 10], 32) == 6    # 1.2 MB of float32
    assert syncs([32768, 10], 32) == 3
    assert syncs([400, 256, 4], 32) == 4         # 0.4 MB
    assert syncs([400, 256, 4], 32, dtype="float64") == 5
    assert syncs([784, 256, 128, 10], 128) == 6  # C3: 0.94 MB
    assert syncs([2, 3, 2, 2], 32) == 5
    assert syncs([2, 3, 2, 2], 32, dropout=0.5) == 4  # the general path
    assert syncs([2, 3, 2, 2], 15, dropout=0.5) == 7


def test_train_cut_names_the_rule_and_when_to_race_both():
    # bp_train_cut: the cut a team takes by default, and whether the other
    # is worth timing (both allowed, weights within 2 MB); train_syncs
    # counts each cut's synchronisations.
    from bpcore import _core
    S, C = _core.CUT_SAMPLES, _core.CUT_COLUMNS

    def arch(layers, **kw):
        return bpcore.Network(layers, **kw)._arch
    assert arch([64, 128, 64, 10]).train_cut(32, 2) == (S, True)
    assert arch([64, 128, 64, 10]).train_cut(15, 2) == (C, False)
    assert arch([784, 256, 128, 10]).train_cut(128, 2) == (C, True)
    assert arch([784, 256, 128, 10],
                dtype="float64").train_cut(128, 2) == (C, True)
    assert arch([1024, 1024, 10]).train_cut(64, 2) == (C, False)  # 4.2 MB
    assert arch([2, 3, 2, 2]).train_cut(64, 2) == (C, False)  # tiny path
    assert arch([64, 128, 64, 10]).train_cut(23, 3) == (C, False)
    assert arch([64, 128, 64, 10]).train_cut(24, 3) == (S, True)
    c3 = arch([784, 256, 128, 10])
    assert c3.train_syncs(128) == c3.train_syncs(128, C) == 6
    assert c3.train_syncs(128, S) == 4
    c2 = arch([64, 128, 64, 10])
    assert c2.train_syncs(32) == c2.train_syncs(32, S) == 4
    assert c2.train_syncs(32, C) == 6
    assert c2.train_syncs(15, S) == 6  # too few rows: cut by columns


def test_every_cut_trains_the_same_bits():
    """A team cut by samples or by columns, whichever the rule would take,
    gives the bits of one thread: float32 and float64, labels and targets,
    shuffled, a last batch too short to cut by samples, momentum."""
    from bpcore import _core

    class Spy:
        """The network's Arch, recording the cut of each train call."""
        def __init__(self, arch):
            self.arch, self.cuts = arch, []

        def __getattr__(self, name):
            return getattr(self.arch, name)

        def train(self, *args):
            self.cuts.append(args[15])
            return self.arch.train(*args)

    rng = np.random.default_rng(11)
    for layers, dtype, B in (([64, 128, 64, 10], "float32", 32),
                             ([600, 512, 64, 10], "float32", 48),
                             ([30, 50, 40, 3], "float64", 40)):
        X = rng.normal(size=(203, layers[0])).astype(dtype)
        y = rng.integers(0, layers[-1], 203)
        Y = np.eye(layers[-1], dtype=dtype)[y]
        for target in (y, Y):
            got = []
            for threads, cut in ((1, None), (2, _core.CUT_COLUMNS),
                                 (2, _core.CUT_SAMPLES)):
                net = bpcore.Network(layers, activation="tanh",
                                     output="softmax", loss="cross_entropy",
                                     seed=5, dtype=dtype)
                if cut is not None:
                    key = (tuple(layers), np.dtype(dtype).str, B, 2)
                    # the race fixed on this choice, no probe
                    bpcore._race._CHOSEN[key] = (2, cut)
                    bpcore._race._SCHEDULE[key] = (1e9, 1e18)
                    net._arch = Spy(net._arch)
                net.fit(X, target, epochs=2, batch_size=B, n_threads=threads,
                        optimizer=bpcore.SGD(lr=0.05, momentum=0.9),
                        shuffle=True)
                if cut is not None:
                    assert set(net._arch.cuts) == {cut}
                    del bpcore._race._CHOSEN[key], bpcore._race._SCHEDULE[key]
                got.append((net.params.copy(), net.history.loss))
            for params, loss in got[1:]:
                assert np.array_equal(params, got[0][0])
                assert loss == got[0][1]


def test_train_refuses_an_unknown_cut():
    net = bpcore.Network([4, 6, 2], seed=0)
    X = np.zeros((8, 4), np.float32)
    Y = np.zeros((8, 2), np.float32)
    a = net._arch
    opt = dict(kind=0, lr=0.1, momentum=0.0, nesterov=False,
               weight_decay=0.0, beta1=0.9, beta2=0.999, eps=1e-8, t=0,
               state1=None, state2=None)
    work = a.train_workspace(8, 1)
    with pytest.raises(ValueError):
        a.train(net._params, np.empty_like(net._params), opt, X, Y, None,
                None, 8, 0, 1, work, 1, cut=3)


# fit's race candidates with one cut (the C core's rule): (threads, cut)
ONE = (1, 0)
TEAM = (2, 0)


def test_thread_race_keeps_the_faster_choice(monkeypatch):
    """fit's chooser (bpcore._race) with made-up timings: it probes the
    other choice, keeps the faster per batch, wants the team clearly
    faster, and spaces its probes out while they confirm the choice."""
    from bpcore import _race
    clock = [0.0]
    monkeypatch.setattr(_race.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(_race, "_CHOSEN", {})
    monkeypatch.setattr(_race, "_SCHEDULE", {})
    speed = {1: 1e-3, 2: 0.4e-3}        # seconds per batch

    def run(race, calls):
        log = []
        for _ in range(calls):
            cand, n, probe = race.threads(30)
            dt = speed[cand[0]] * n
            clock[0] += dt
            race.record(cand, n, dt)
            log.append((cand[0], n, probe))
        return log

    race = _race.ThreadRace(2, 1e7, 20, False, "k")
    race.current = ONE                    # start from the wrong choice
    log = run(race, 6)
    # a warm-up chunk (not timed), a timed one, then the probe: one untimed
    # batch, then the timed part
    assert [(t, p) for t, n, p in log[:4]] == [(1, False), (1, False),
                                               (2, True), (2, True)]
    assert log[2][1] == 1
    assert race.current == TEAM and log[-1][0] == 2
    # the team loses its edge (another process took a core): back to one,
    # at once, not when the probe schedule says
    run(race, 1000)
    assert race.interval == race.MAX_INTERVAL
    speed[2] = 5e-3
    log = run(race, 3)
    assert race.current == ONE
    log = run(race, 400)
    assert race.current == ONE
    probes = [n for t, n, p in log if p]
    assert all(n <= 30 for n in probes)
    # a team within MARGIN of one thread is not worth it
    speed[2] = 0.99e-3
    run(race, 400)
    assert race.current == ONE
    assert _race._CHOSEN["k"] == ONE
    # probes become rarer while they confirm the choice
    assert race.interval == race.MAX_INTERVAL

    # the next fit on the same problem starts from that choice and keeps
    # the schedule: no probe until the time the last fit set
    due = _race._SCHEDULE["k"][1]
    again = _race.ThreadRace(2, 1e7, 20, False, "k")
    assert again.current == ONE
    clock[0] = due - 1.0                  # a second before the probe is due
    log = run(again, 5)
    assert clock[0] < due and not any(p for t, n, p in log)
    assert again.next_probe == due
    clock[0] = due
    log = run(again, 2)
    assert log[0][2] and log[0][0] == 2
    # another problem (a new key) probes at once, as before
    other = _race.ThreadRace(2, 1e7, 20, False, "k2")
    log = run(other, 3)
    assert log[2][2]


def test_thread_race_times_both_cuts(monkeypatch):
    """Where a batch may be cut either way, fit's race has three
    candidates: one thread and the team with each cut, starting from the
    rule's cut.  It probes each, keeps the fastest, switches cut only for a
    clear gain, and follows the host when the other cut becomes faster."""
    from bpcore import _race, _core
    S, C = _core.CUT_SAMPLES, _core.CUT_COLUMNS
    clock = [0.0]
    monkeypatch.setattr(_race.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(_race, "_CHOSEN", {})
    monkeypatch.setattr(_race, "_SCHEDULE", {})
    one, by_s, by_c = (1, 0), (2, S), (2, C)
    speed = {one: 1e-3, by_s: 0.7e-3, by_c: 0.5e-3}

    def run(race, calls):
        log = []
        for _ in range(calls):
            cand, n, probe = race.threads(30)
            dt = speed[cand] * n
            clock[0] += dt
            race.record(cand, n, dt)
            log.append((cand, n, probe))
        return log

    race = _race.ThreadRace(2, 1e7, {S: 4, C: 6}, False, "c")
    assert set(race.predicted) == {one, by_s, by_c}
    race.current = by_s                  # the rule's cut, the wrong one
    log = run(race, 40)
    probed = {c for c, n, p in log if p}
    assert probed == {one, by_c}
    assert race.current == by_c and _race._CHOSEN["c"] == by_c
    # a cut within MARGIN of the current one does not take over
    speed[by_s] = 0.495e-3
    run(race, 2000)
    assert race.current == by_c
    # the other cut clearly faster now: taken
    speed[by_s] = 0.3e-3
    run(race, 2000)
    assert race.current == by_s
    # a core taken: both teams slow, one thread chosen, the team's cut kept
    speed[by_s] = speed[by_c] = 5e-3
    run(race, 2000)
    assert race.current == one and race.team == by_s
    # the next fit starts from the choice
    assert _race.ThreadRace(2, 1e7, {S: 4, C: 6}, False, "c").current == one

    # both teams 50 times slower than one thread (a busy core): once one
    # cut has been timed, the other's first probe is sized from it, one
    # batch, not from the model's idea of a team
    speed.update({one: 1e-3, by_s: 50e-3, by_c: 50e-3})
    race = _race.ThreadRace(2, 1e7, {S: 4, C: 6}, False, "busy")
    race.current = one
    race.predicted = {one: 1.0, by_s: 0.5, by_c: 0.5}
    log = run(race, 40)
    first = [(c, n) for c, n, p in log if p]
    # per candidate: its untimed batch, then its timed part
    assert [c for c, n in first[:4]] == [by_s, by_s, by_c, by_c]
    assert first[1][1] == 8               # by the model: 4 ms at 0.5 ms
    assert first[3][1] == 1               # sized by the other cut's time
    assert race.current == one


def test_thread_race_probe_does_not_time_its_first_batch(monkeypatch):
    """The first batch on a team that has been idle pays for waking the
    other thread; a probe runs it untimed, so a team a few per cent faster
    per batch is still found faster (with that batch timed, this one
    would lose: 2 ms of wake-up over a probe of about 4 batches)."""
    from bpcore import _race
    clock = [0.0]
    monkeypatch.setattr(_race.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(_race, "_CHOSEN", {})
    monkeypatch.setattr(_race, "_SCHEDULE", {})
    speed = {1: 1e-3, 2: 0.94e-3}       # seconds per batch, warm
    last = [None]

    def run(race, calls):
        log = []
        for _ in range(calls):
            cand, n, probe = race.threads(30)
            dt = speed[cand[0]] * n
            if cand[0] == 2 and last[0] != 2:
                dt += 2e-3                # waking the idle thread
            last[0] = cand[0]
            clock[0] += dt
            race.record(cand, n, dt)
            log.append((cand[0], n, probe))
        return log

    race = _race.ThreadRace(2, 1e7, 20, False, "w")
    race.current = ONE
    # the cost model's guess for the first probe's length: the host's
    # calibration, replaced by "as fast as one thread" (a 4-batch probe)
    race.predicted = {ONE: 1.0, TEAM: 1.0}
    log = run(race, 8)
    assert log[2] == (2, 1, True)         # the untimed batch
    assert log[3][0] == 2 and log[3][2] and log[3][1] > 1
    assert race.per_batch[TEAM] == pytest.approx(0.94e-3)
    assert race.current == TEAM


def test_training_workspace_is_what_the_batch_needs():
    # One plan sizes and carves the workspace: the batch's activations at
    # the network's element size, the tiny path's sums per chunk of 1024
    # samples (not per sample), and packing buffers only for layers that
    # use the packed product.
    def mib(layers, dtype, batch, nt=2):
        net = bpcore.Network(layers, dtype=dtype)
        return net._arch.train_workspace(batch, nt).nbytes / 2 ** 20

    m = 100_000
    # X batch, 3 arrays per layer of (256 + 10) values, f32: ~610 MiB
    used = (784 + 10 + 1 + 3 * (256 + 10)) * m * 4 / 2 ** 20
    assert used < mib([784, 256, 10], "float32", m) < used + 8
    assert mib([784, 256, 10], "float64", m) < 2 * used + 12
    assert mib([2, 3, 2, 2], "float32", m) < 4
    # every batch size fits what fit needs (the C call checks it, and a
    # short workspace is a MemoryError there): train on odd sizes
    for layers in ([2, 3, 2, 2], [9, 17, 5], [3, 40, 2]):
        for dtype in ("float32", "float64"):
            net = bpcore.Network(layers, dtype=dtype, seed=1)
            X = np.ones((37, layers[0]))
            Y = np.zeros((37, layers[-1]))
            for bs in (1, 7, 37):
                net.fit(X, Y, epochs=1, batch_size=bs, n_threads=2)


def test_predict_race_keeps_the_faster_choice():
    """predict's chooser (_core.PredictRace) with made-up timings: probes
    of seven calls (four untimed), spaced by their length at first, then
    0.05 s doubling to 4 s while they confirm the choice; the other choice
    taken only by a margin (3% for the team, 15% for one thread); a probe
    at once when the current choice turns 25% slower than the other was."""
    from bpcore._core import PredictRace
    clock = [100.0]
    speed = {1: 1e-6, 2: 0.5e-6}         # seconds per row
    rows = 10

    def run(race, calls):
        log = []
        for _ in range(calls):
            t = race.threads(clock[0])
            dt = speed[t] * rows
            clock[0] += dt
            race.record(t, dt, rows, clock[0])
            log.append(t)
        return log

    race = PredictRace(2)
    assert race.state == (2, None, None)
    # four untimed calls and three timed ones on the team (what the C core
    # chose); the first probe no sooner than 50 probes' length after
    assert run(race, 7) == [2] * 7
    assert race.schedule[1] == pytest.approx(clock[0] + 50 * 7 * 5e-6)
    assert run(race, 10) == [2] * 10
    clock[0] += 0.002
    assert run(race, 7) == [1] * 7       # the probe
    assert race.state == (2, 1e-6, 0.5e-6)
    interval, due, probing = race.schedule
    assert probing == 0 and interval == 0.1  # confirmed: twice 0.05
    assert run(race, 50) == [2] * 50     # no probe before then
    # the team slows down (another process took a core): once most of the
    # last nine calls are slow, a probe at once, and one thread from then on
    speed[2] = 5e-6
    assert run(race, 5) == [2] * 5 and race.schedule[1] == 0.0
    assert run(race, 7) == [1] * 7
    assert race.state[0] == 1 and race.schedule[0] == 0.05
    assert run(race, 10) == [1] * 10
    # a team within 3% of one thread is not taken back
    speed[2] = 0.99e-6
    for _ in range(10):
        clock[0] += 5.0
        run(race, 20)
        assert race.state[0] == 1
    assert race.schedule[0] == 4.0       # probes every 4 s at most
    # a clearly faster team is, at the next probe
    speed[2] = 0.6e-6
    clock[0] += 5.0
    run(race, 20)
    assert race.state[0] == 2
    # one thread 10% faster than the team does not replace it (15% needed)
    speed[1], speed[2] = 0.9e-6, 1e-6
    clock[0] += 5.0
    run(race, 40)
    clock[0] += 5.0
    run(race, 40)
    assert race.state == (2, pytest.approx(0.9e-6), pytest.approx(1e-6))


def test_predict_race_calls_from_other_threads_are_ignored_in_a_probe():
    from bpcore._core import PredictRace
    race = PredictRace(2)
    t = 10.0
    for _ in range(7):                   # four untimed calls, three timed
        assert race.threads(t) == 2
        race.record(2, 10e-6, 10, t)
        t += 1e-5
    assert race.threads(11.0) == 1       # the probe begins
    race.record(2, 90e-6, 10, 11.0)      # a team call that began earlier
    assert race.schedule[2] == 1         # still probing, nothing taken
    for _ in range(7):                   # the probe's own calls
        assert race.threads(11.1) == 1
        race.record(1, 30e-6, 10, 11.1)
    assert race.state == (2, pytest.approx(3e-6), pytest.approx(1e-6))


def test_races_are_off_with_team_always(rng):
    # the suite runs with BPCORE_TEAM=always: predict uses the team
    # asked for, no race
    net = bpcore.Network([784, 256, 128, 10], activation="relu",
                         output="softmax", loss="cross_entropy", seed=1)
    X = rng.normal(size=(300, 784))
    for rows in (1, 3, 300):
        net.predict(X[:rows], n_threads=2)
    net.predict(X[:64], n_threads=2)     # one block of rows: one thread
    net.forward(X[:3], n_threads=2)      # forward likewise
    assert net._arch.races == {}


def test_predict_race_changes_no_result():
    """Without BPCORE_TEAM=always, predict races one thread against the
    team per network and size of call; whatever it picks, the bits are
    those of one thread."""
    code = r"""
import time
import numpy as np, bpcore
rng = np.random.default_rng(5)
for dtype in ("float32", "float64"):
    net = bpcore.Network([800, 256, 64, 7], activation="tanh",
                         output="softmax", loss="cross_entropy", seed=2,
                         dtype=dtype)
    X = rng.normal(size=(700, 800)).astype(dtype)
    for rows in (1, 2, 4, 64, 129, 700):
        ref = net.predict(X[:rows], n_threads=1)
        end = time.perf_counter() + 3.0
        race = None
        # until the race has probed one thread (or 3 s)
        while race is None or race.state[1] is None:
            assert np.array_equal(net.predict(X[:rows], n_threads=2), ref)
            race = net._arch.races.get((rows if rows <= 4 else
                                        -rows.bit_length(), 2))
            if rows == 64 or time.perf_counter() > end:
                break
        assert np.array_equal(net.predict(X[0], n_threads=2), ref[0])
    for rows in (1, 30, 700):         # forward races the same way
        one = net.forward(X[:rows], n_threads=1).out
        for i in range(60):
            two = net.forward(X[:rows], n_threads=2).out
            assert all(np.array_equal(u, v) for u, v in zip(one[1:], two[1:]))
    races = net._arch.races
    assert set(races) == {(1, 2), (2, 2), (4, 2), (-8, 2), (-10, 2),
                          ("forward", -1, 2), ("forward", -5, 2),
                          ("forward", -10, 2)}, races
    for key, race in races.items():
        choice, one, team = race.state
        assert choice in (1, 2), race.state
        assert key[0] == "forward" or (one > 0 and team > 0), race.state
print("done")
"""
    _run_choosing_teams(code)
