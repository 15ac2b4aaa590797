"""bpcore.export.to_torch / from_torch, checked by running the modules in
PyTorch (skipped without it: pip install torch==2.13.0)."""
import subprocess
import sys

import numpy as np
import pytest

import bpcore
from bpcore import export

torch = pytest.importorskip("torch")
nn = torch.nn

OUTPUTS = ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
           "softplus", "gelu", "softmax")
RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-12}


def assert_close(y, ref, dtype):
    """Relative to the output's scale (see test_export.py)."""
    rtol = RTOL[np.dtype(dtype)]
    ref = np.asarray(ref, np.float64)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=rtol,
                               atol=rtol * max(np.abs(ref).max(), 1e-30))


def saved_net(tmp_path, layers, hidden, output, dtype, seed=1):
    loss = "cross_entropy" if output == "softmax" else "mse"
    net = bpcore.Network(layers, activation=hidden, output=output,
                         loss=loss, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for b in net.biases:
        b[...] = rng.normal(0.0, 0.5, b.shape)
    net.save(tmp_path / "net.safetensors")
    return bpcore.load(tmp_path / "net.safetensors")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", OUTPUTS)
def test_to_torch_matches_predict_and_round_trips(tmp_path, act, dtype):
    hidden = "softplus" if act == "softmax" else act
    net = saved_net(tmp_path, [5, 16, 7, 3], hidden, act, dtype)
    mod = export.to_torch(net)
    assert isinstance(mod, nn.Sequential)
    linears = [m for m in mod if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    tdt = torch.float32 if dtype == "float32" else torch.float64
    for lin, W, b in zip(linears, net.weights, net.biases):
        assert lin.weight.dtype == tdt
        assert np.array_equal(lin.weight.detach().numpy(), W.T)
        assert np.array_equal(lin.bias.detach().numpy(), b)
    X = np.random.default_rng(2).normal(0, 3, (1000, 5)).astype(dtype)
    with torch.no_grad():
        y = mod(torch.from_numpy(X)).numpy()
    ref = net.predict(X)
    # (torch's GELU is 0.5 x (1 + erf(x / sqrt 2)), which cancels for
    # negative x where bpcore uses erfc: on the output's scale they agree)
    assert_close(y, ref, dtype)
    back = export.from_torch(mod)
    assert back.layers == net.layers and back.activation == net.activation
    assert back.dtype == net.dtype
    assert np.array_equal(back.params, net.params)
    assert np.array_equal(back.predict(X), ref)


def test_from_torch_accepts_usual_modules():
    torch.manual_seed(0)
    mod = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.1),
                        nn.Sequential(nn.Linear(8, 6), nn.Softplus()),
                        nn.Linear(6, 5, bias=False), nn.GELU(),
                        nn.Linear(5, 2), nn.Identity()).double().eval()
    net = export.from_torch(mod)
    assert net.layers == (4, 8, 6, 5, 2)
    assert net.activation == ("relu", "softplus", "gelu", "identity")
    assert net.dtype == np.float64
    assert np.array_equal(net.biases[2], np.zeros(5))
    X = np.random.default_rng(0).normal(size=(300, 4))
    with torch.no_grad():
        y = mod(torch.from_numpy(X)).numpy()
    assert_close(net.predict(X), y, np.float64)
    soft = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3),
                         nn.Softmax(dim=-1))
    net = export.from_torch(soft)
    assert net.activation == ("tanh", "softmax")
    assert net.loss == "cross_entropy" and net.dtype == np.float32


@pytest.mark.parametrize("mods, match", [
    ([nn.Linear(3, 4), nn.Conv1d(1, 1, 1)], r"\[1\] \(Conv1d\)"),
    ([nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)],
     r"\[1\] \(BatchNorm1d\)"),
    ([nn.Linear(3, 4), nn.LeakyReLU(0.2)], r"\[1\].*negative_slope=0.2"),
    ([nn.Linear(3, 4), nn.ELU(alpha=0.5)], r"alpha=0.5"),
    ([nn.Linear(3, 4), nn.Softplus(beta=2.0)], r"beta=2.0"),
    ([nn.Linear(3, 4), nn.GELU(approximate="tanh")], r"approximate"),
    ([nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 2)],
     r"\[2\].*Softmax is only supported after the last"),
    ([nn.ReLU(), nn.Linear(3, 4)], r"\[0\].*before the first Linear"),
    ([nn.Linear(3, 4), nn.ReLU(), nn.Tanh()], r"\[2\].*second activation"),
    ([nn.Linear(3, 4), nn.Linear(5, 2)], r"\[1\].*in_features=5"),
    ([nn.Linear(3, 4), nn.Linear(4, 2).double()], r"\[1\].*dtype"),
    ([nn.Linear(3, 4).half()], r"float16"),
    ([], r"no Linear layer"),
])
def test_from_torch_rejects_with_the_module_named(mods, match):
    with pytest.raises(ValueError, match=match):
        export.from_torch(nn.Sequential(*mods))


def test_from_torch_rejects_non_sequential():
    with pytest.raises(TypeError, match="nn.Sequential"):
        export.from_torch(nn.Linear(3, 2))


def test_cli_export_torch(tmp_path):
    net = saved_net(tmp_path, [4, 6, 2], "elu", "sigmoid", "float64")
    proc = subprocess.run([sys.executable, "-m", "bpcore", "export",
                           "net.safetensors", "--format", "torch", "--out",
                           "net.pt"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    mod = torch.load(tmp_path / "net.pt", weights_only=False)
    X = np.random.default_rng(0).normal(size=(20, 4))
    with torch.no_grad():
        y = mod(torch.from_numpy(X)).numpy()
    assert_close(y, net.predict(X), np.float64)
