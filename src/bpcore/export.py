"""Take a network elsewhere: ONNX, PyTorch and plain C (and back from PyTorch).

- :func:`to_onnx` writes an ONNX model (input ``"X"``, output ``"Y"``, plus
  ``"logits"`` for a softmax output) built with the ``onnx`` package's
  helpers; it runs in ONNX Runtime (``pip install bpcore[onnx]``).
- :func:`to_torch` / :func:`from_torch` convert to and from a
  ``torch.nn.Sequential`` of ``Linear`` and activation modules.
- :func:`to_c` writes a dependency-free C99 ``.h``/``.c`` pair with one
  function ``<name>_predict(const T *x, T *y)`` for one row.

Scaling of command-line models.  ``bpcore train`` standardises the inputs
(and regression targets) and keeps the means and standard deviations in
``net.metadata``; ``bpcore predict`` applies them.  With ``scaling="auto"``
(the default) the ONNX and C exports apply them too, as separate operations
before the first layer and after the last (the weights are written exactly
as trained, not folded): the exported model reads raw inputs and returns
what ``bpcore predict`` prints (regression values in the target's units;
class probabilities, two columns for a one-output binary classifier).
``scaling=False`` exports the bare network: ``Y == net.predict(X)``.

The ``onnx`` and ``torch`` packages are imported only when used.
"""
import json
import os
import re

import numpy as np

import bpcore
from bpcore.network import Network

__all__ = ["to_onnx", "to_torch", "from_torch", "to_c"]

# ONNX operator set 17 (IR version 8): supported by ONNX Runtime >= 1.12.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

_INV_SQRT2 = 0.70710678118654752440

# Chebyshev coefficients of g in erfc(a) = e^-a^2 g(u) / (1 + 2a),
# u = (a - 3.75) / (a + 3.75), the expansion bpcore's core uses (vmath.h);
# summed by Clenshaw's recurrence, last coefficient the constant term.
_ERFC_F32 = (1.076499947e-8, -2.188640105e-7, 7.740383066e-7,
             4.139027986e-6, -6.916973303e-5, 4.907758365e-4,
             -2.41316354e-3, 9.074997671e-3, -2.665866844e-2, 5.920994e-2,
             -8.424913337e-2, -4.590054581e-3, 1.177578935)
_ERFC_F64 = (5.0681489047961113168e-17, 7.418235256624043463e-17,
             -1.2507950530688647085e-15, -1.8645628804193131015e-15,
             3.3478119482868053878e-14, 3.2525481481487398415e-14,
             -9.6546967484334389059e-13, 1.945586854577734723e-13,
             2.8687950109306698981e-11, -6.3180883408866844944e-11,
             -7.7544002088313511065e-10, 4.5219598112182868979e-9,
             1.0764999465670910377e-8, -2.1886401049234395661e-7,
             7.7403830661984906686e-7, 4.1390279860730101675e-6,
             -6.9169733025012063671e-5, 4.9077583652580863229e-4,
             -2.4131635404176081909e-3, 9.0749976707052650939e-3,
             -2.6658668435305752277e-2, 5.9209939998191890498e-2,
             -8.4249133366517915584e-2, -4.5900545806464773309e-3,
             1.1775789345674017541)


# -- shared checks --------------------------------------------------------

def _check_net(net, name="net"):
    if not isinstance(net, Network):
        raise TypeError(f"{name} must be a bpcore.Network, got "
                        f"{type(net).__name__}")
    return net


def _check_dtype(dtype, net):
    if dtype is None:
        return net.dtype
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got "
                         f"{dtype!r}")
    return dt


def _check_out_path(path, what="path", file=True):
    """The path as a str; its folder must exist (and, for a file path, it
    must not be a directory)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, got "
                        f"{type(path).__name__}")
    path = os.fspath(path)
    if not path:
        raise ValueError(f"{what} is empty")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{what} {path!r}: the folder {folder!r} "
                                f"does not exist")
    if file and os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory; give a "
                                f"file name")
    return path


class _Scaling:
    """What ``bpcore predict`` does around the network, read from the
    metadata ``bpcore train`` stores (input_mean/std, target_mean/std,
    task)."""

    def __init__(self, net, mode):
        if mode not in ("auto", False, True):
            raise ValueError(f"scaling must be 'auto', True or False, got "
                             f"{mode!r}")
        md = net.metadata
        n_in, n_out = net.layers[0], net.layers[-1]
        self.x_mean = self.x_std = self.y_mean = self.y_std = None
        self.binary = False
        present = "input_mean" in md and "input_std" in md
        if mode is True and not present:
            raise ValueError("scaling=True, but the network's metadata holds "
                             "no input_mean/input_std (models trained with "
                             "'bpcore train' have them)")
        if not mode or not present:
            return
        self.x_mean = self._vector(md, "input_mean", n_in, False)
        self.x_std = self._vector(md, "input_std", n_in, True)
        task = md.get("task") or ("regression" if net.loss == "mse"
                                  else "classification")
        if task == "regression":
            if "target_mean" in md and "target_std" in md:
                self.y_mean = self._vector(md, "target_mean", n_out, False)
                self.y_std = self._vector(md, "target_std", n_out, True)
        elif n_out == 1:
            self.binary = True     # predict prints p(class 0), p(class 1)

    @staticmethod
    def _vector(md, key, n, positive):
        try:
            v = np.asarray(json.loads(md[key]), dtype=np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"metadata {key!r} is not a JSON list of "
                             f"numbers") from None
        if v.shape != (n,) or not np.isfinite(v).all() or (
                positive and not (v != 0).all()):
            raise ValueError(f"metadata {key!r} must hold {n} finite "
                             f"numbers{' (non-zero)' if positive else ''}")
        return v

    @property
    def inputs(self):
        return self.x_mean is not None

    def n_outputs(self, net):
        return 2 if self.binary else net.layers[-1]

    def describe(self):
        parts = []
        if self.inputs:
            parts.append("inputs standardised, x' = (x - input_mean) / "
                         "input_std")
        if self.y_mean is not None:
            parts.append("outputs unstandardised, y = out * target_std + "
                         "target_mean")
        if self.binary:
            parts.append("binary classifier: y = (1 - p, p)")
        return "; ".join(parts) if parts else "none"


def _layer_summary(net):
    return {"bpcore.version": bpcore.__version__,
            "bpcore.layers": json.dumps(list(net.layers)),
            "bpcore.activations": json.dumps(list(net.activation)),
            "bpcore.loss": net.loss}


# -- ONNX -----------------------------------------------------------------

def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as e:
        raise ImportError("bpcore.export.to_onnx needs the onnx package: "
                          "pip install 'bpcore[onnx]'  (or: pip install "
                          "onnx onnxruntime)") from e
    return onnx, helper, numpy_helper


class _Graph:
    """A small builder over onnx.helper: nodes, named constants."""

    def __init__(self, helper, numpy_helper, dtype):
        self.h = helper
        self.nh = numpy_helper
        self.dtype = np.dtype(dtype)
        self.nodes = []
        self.inits = []
        self._n = 0
        self._consts = {}

    def name(self, base):
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, value, name=None, dtype=None):
        """A tensor initializer in the graph's dtype (scalars shared)."""
        arr = np.asarray(value, dtype=dtype or self.dtype)
        if arr.ndim == 0 and name is None:
            key = arr.tobytes()
            if key in self._consts:
                return self._consts[key]
            name = self.name("c")
            self._consts[key] = name
        elif name is None:
            name = self.name("c")
        self.inits.append(self.nh.from_array(arr, name))
        return name

    def op(self, op_type, *inputs, out=None, **attrs):
        out = out or self.name(op_type.lower())
        self.nodes.append(self.h.make_node(op_type, list(inputs), [out],
                                           name=out, **attrs))
        return out

    # Activations, each accurate to a few ulps over the whole range (ONNX
    # Runtime's Sigmoid saturates early, its Elu loses digits near 0, and
    # it has no float64 Elu, Softplus or Erf; these forms avoid all three).

    def sigmoid(self, x):
        # e = exp(-|x|); x >= 0: 1 / (1 + e), else e / (1 + e)
        e = self.op("Exp", self.op("Neg", self.op("Abs", x)))
        d = self.op("Add", e, self.const(1.0))
        return self.op("Where", self.op("GreaterOrEqual", x, self.const(0.0)),
                       self.op("Div", self.const(1.0), d),
                       self.op("Div", e, d))

    def expm1_neg(self, x):
        """expm1 of min(x, 0) (Kahan: (u - 1) x / log u, u = e^x)."""
        floor = -20.0 if self.dtype == np.float32 else -40.0  # expm1 = -1
        xn = self.op("Max", self.op("Min", x, self.const(0.0)),
                     self.const(floor))
        u = self.op("Exp", xn)
        r = self.op("Div", self.op("Mul", self.op("Sub", u, self.const(1.0)),
                                   xn), self.op("Log", u))
        return self.op("Where", self.op("Equal", u, self.const(1.0)), xn, r)

    def log1p_pos(self, t):
        """log1p(t) for t >= 0 (Kahan: log(u) t / (u - 1), u = 1 + t)."""
        u = self.op("Add", self.const(1.0), t)
        r = self.op("Div", self.op("Mul", self.op("Log", u), t),
                    self.op("Sub", u, self.const(1.0)))
        return self.op("Where", self.op("Equal", u, self.const(1.0)), t, r)

    def erfc_series(self, z):
        """erfc(z) by bpcore's Chebyshev expansion (vmath.h)."""
        f32 = self.dtype == np.float32
        coefs = _ERFC_F32 if f32 else _ERFC_F64
        a = self.op("Min", self.op("Abs", z), self.const(12.0 if f32
                                                         else 28.0))
        u = self.op("Div", self.op("Sub", a, self.const(3.75)),
                    self.op("Add", a, self.const(3.75)))
        u2 = self.op("Add", u, u)
        b1 = b2 = None
        for c in coefs[:-1]:
            if b1 is None:
                b0 = self.const(c)
            else:
                b0 = self.op("Add", self.op("Mul", u2, b1), self.const(c))
                if b2 is not None:
                    b0 = self.op("Sub", b0, b2)
            b1, b2 = b0, b1
        g = self.op("Sub", self.op("Add", self.op("Mul", u, b1),
                                   self.const(coefs[-1])), b2)
        y = self.op("Div", self.op("Mul", self.op("Exp", self.op(
            "Neg", self.op("Mul", a, a))), g), self.op(
            "Add", self.const(1.0), self.op("Mul", self.const(2.0), a)))
        return self.op("Where", self.op("Less", z, self.const(0.0)),
                       self.op("Sub", self.const(2.0), y), y)

    def gelu(self, x):
        # 0.5 x erfc(-x / sqrt 2).  float32: Erf where 1 + erf(x / sqrt 2)
        # does not cancel (x >= -1), the series below; float64: the series
        # (ONNX Runtime has no float64 Erf).
        z = self.op("Mul", x, self.const(-_INV_SQRT2))
        erfc = self.erfc_series(z)
        if self.dtype == np.float32:
            via_erf = self.op("Add", self.const(1.0),
                              self.op("Erf", self.op("Neg", z)))
            erfc = self.op("Where", self.op("GreaterOrEqual", x,
                                            self.const(-1.0)), via_erf, erfc)
        return self.op("Mul", self.op("Mul", self.const(0.5), x), erfc)

    def activation(self, act, x):
        if act == "identity":
            return x
        if act == "relu":
            return self.op("Relu", x)
        if act == "tanh":
            return self.op("Tanh", x)
        if act == "sigmoid":
            return self.sigmoid(x)
        if act == "leaky_relu":
            # max(x, 0.01 x) = bpcore's x > 0 ? x : (T)0.01 x, exactly
            return self.op("Max", x, self.op("Mul", x, self.const(0.01)))
        if act == "elu":
            return self.op("Where", self.op("Greater", x, self.const(0.0)),
                           x, self.expm1_neg(x))
        if act == "softplus":
            # max(x, 0) + log1p(e^-|x|)
            t = self.op("Exp", self.op("Neg", self.op("Abs", x)))
            return self.op("Add", self.op("Relu", x), self.log1p_pos(t))
        if act == "gelu":
            return self.gelu(x)
        if act == "softmax":
            return self.op("Softmax", x, axis=1)
        raise ValueError(f"unknown activation {act!r}")  # pragma: no cover


def to_onnx(net, path=None, dtype=None, scaling="auto", logits=True):
    """Write ``net`` as an ONNX model that ONNX Runtime runs.

    Parameters
    ----------
    net : bpcore.Network
    path : str or os.PathLike or None
        Where to write the ``.onnx`` file (its folder must exist); None
        only returns the model.
    dtype : {None, "float32", "float64"}, default=None
        Element type of the inputs, weights and outputs (None: the
        network's).
    scaling : {"auto", True, False}, default="auto"
        "auto": apply the input standardisation (and output transform)
        stored by ``bpcore train`` when the metadata holds it, as ``Sub``/
        ``Div`` (and ``Mul``/``Add``) operations, so ``Y`` equals what
        ``bpcore predict`` prints; False: the bare network, ``Y ==
        net.predict(X)``; True: like "auto" but the metadata must hold it.
    logits : bool, default=True
        For a softmax output, also output ``"logits"`` (net_L, before the
        softmax).

    Returns
    -------
    onnx.ModelProto
        Input ``"X"`` of shape (N, n_0), N a dynamic batch axis; output
        ``"Y"`` of shape (N, n_L) (two columns for a scaled one-output
        binary classifier), and ``"logits"`` (N, n_L) for a softmax
        output.  ``metadata_props`` holds ``net.metadata`` plus
        ``bpcore.version``, ``bpcore.layers``, ``bpcore.activations``,
        ``bpcore.loss``, ``bpcore.dtype`` and ``bpcore.scaling``.

    Notes
    -----
    Operator set 17 (ONNX Runtime 1.12 and later).  Each layer is one
    ``Gemm``.  relu, tanh and softmax use the ONNX operators; sigmoid, elu,
    softplus and leaky_relu are written from Exp/Log/Where so they keep
    full relative accuracy over the whole range (ONNX Runtime's Sigmoid
    saturates near -18 and it lacks float64 Elu, Softplus and Erf). gelu
    is 0.5 x erfc(-x/sqrt 2): through ``Erf`` in float32 for x >= -1,
    through bpcore's own erfc expansion elsewhere (no cancellation for
    negative x).
    """
    _check_net(net)
    onnx, helper, numpy_helper = _import_onnx()
    dt = _check_dtype(dtype, net)
    if path is not None:
        path = _check_out_path(path)
    sc = _Scaling(net, scaling)
    g = _Graph(helper, numpy_helper, dt)
    z = _onnx_nodes(g, net, sc)
    model = _onnx_model(g, net, sc, z if logits else None)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    return model


def _onnx_nodes(g, net, sc):
    """The nodes from "X" to "Y": scaling (in double, as bpcore predict),
    one Gemm and activation per layer, the output transform.  Returns the
    last layer's net input (the logits)."""
    helper = g.h
    elem = helper.np_dtype_to_tensor_dtype(g.dtype)
    f64 = helper.np_dtype_to_tensor_dtype(np.dtype(np.float64))
    wide = g.dtype != np.float64   # scaling runs in double
    h = "X"
    if sc.inputs:
        if wide:
            h = g.op("Cast", h, to=f64)
        h = g.op("Div", g.op("Sub", h, g.const(sc.x_mean, "input_mean",
                                               np.float64)),
                 g.const(sc.x_std, "input_std", np.float64))
        h = g.op("Cast", h, to=elem, out="X_scaled") if wide else h
    L = len(net.weights)
    z = None
    for k, (W, b, act) in enumerate(zip(net.weights, net.biases,
                                        net.activation)):
        z = g.op("Gemm", h, g.const(W, f"W{k}"), g.const(b, f"b{k}"),
                 out=f"net{k + 1}" if k < L - 1 else "net_out")
        h = g.activation(act, z)
    if sc.y_mean is not None:
        if wide:
            h = g.op("Cast", h, to=f64)
        h = g.op("Add", g.op("Mul", h, g.const(sc.y_std, "target_std",
                                               np.float64)),
                 g.const(sc.y_mean, "target_mean", np.float64))
        if wide:
            h = g.op("Cast", h, to=elem)
    if sc.binary:
        h = g.op("Concat", g.op("Sub", g.const(1.0), h), h, axis=1)
    g.op("Identity", h, out="Y")
    return z


def _onnx_model(g, net, sc, logits):
    """The model around the nodes: inputs, outputs ("logits" too for a
    softmax output when logits is its node), opset and metadata."""
    helper = g.h
    elem = helper.np_dtype_to_tensor_dtype(g.dtype)
    outputs = [helper.make_tensor_value_info(
        "Y", elem, ["N", sc.n_outputs(net)])]
    if logits is not None and net.activation[-1] == "softmax":
        g.op("Identity", logits, out="logits")
        outputs.append(helper.make_tensor_value_info(
            "logits", elem, ["N", net.layers[-1]]))
    graph = helper.make_graph(
        g.nodes, "bpcore_network",
        [helper.make_tensor_value_info("X", elem, ["N", net.layers[0]])],
        outputs, initializer=g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="bpcore", producer_version=bpcore.__version__,
        doc_string=(f"bpcore network {'-'.join(map(str, net.layers))} "
                    f"({', '.join(net.activation)}); scaling: "
                    f"{sc.describe()}"))
    model.ir_version = ONNX_IR_VERSION
    props = dict(net.metadata)
    props.update(_layer_summary(net))
    props["bpcore.dtype"] = g.dtype.name
    props["bpcore.scaling"] = sc.describe()
    helper.set_model_props(model, props)
    return model


# -- PyTorch --------------------------------------------------------------

def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError("bpcore.export needs PyTorch for this: pip install "
                          "torch") from e
    return torch


def to_torch(net):
    """The network as a ``torch.nn.Sequential`` of Linear and activations.

    Layer k becomes ``Linear(n_k, n_{k+1})`` with ``weight = W_k.T`` and
    ``bias = b_k`` (bitwise copies, in the network's dtype), followed by
    its activation module: ``Sigmoid``, ``Tanh``, ``ReLU``,
    ``LeakyReLU(0.01)``, ``ELU(1.0)``, ``Softplus(beta=1.0,
    threshold=40.0)`` (PyTorch switches to x above the threshold; at 40
    that changes no double), ``GELU()`` (exact) or ``Softmax(dim=1)``;
    identity layers get no module.

    Returns
    -------
    torch.nn.Sequential
        In eval mode, on the CPU.
    """
    _check_net(net)
    torch = _import_torch()
    nn = torch.nn
    tdt = torch.float32 if net.dtype == np.float32 else torch.float64
    mods = []
    for W, b, act in zip(net.weights, net.biases, net.activation):
        lin = nn.Linear(W.shape[0], W.shape[1], dtype=tdt)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(np.array(b)))
        mods.append(lin)
        if act != "identity":
            mods.append(_TORCH_MAKERS[act](nn))
    return nn.Sequential(*mods).eval()


_TORCH_MAKERS = {
    "sigmoid": lambda nn: nn.Sigmoid(),
    "tanh": lambda nn: nn.Tanh(),
    "relu": lambda nn: nn.ReLU(),
    "leaky_relu": lambda nn: nn.LeakyReLU(0.01),
    "elu": lambda nn: nn.ELU(alpha=1.0),
    "softplus": lambda nn: nn.Softplus(beta=1.0, threshold=40.0),
    "gelu": lambda nn: nn.GELU(approximate="none"),
    "softmax": lambda nn: nn.Softmax(dim=1),
}


# bpcore's activations as torch modules: (class name, settings that must
# hold, each with the reason to refuse another value)
_TORCH_CHECKS = {
    "Sigmoid": ("sigmoid", ()),
    "Tanh": ("tanh", ()),
    "ReLU": ("relu", ()),
    "LeakyReLU": ("leaky_relu", (
        (lambda m: m.negative_slope == 0.01,
         lambda m: f"negative_slope={m.negative_slope} (bpcore's "
                   f"leaky_relu has slope 0.01)"),)),
    "ELU": ("elu", (
        (lambda m: m.alpha == 1.0,
         lambda m: f"alpha={m.alpha} (bpcore's elu has alpha 1)"),)),
    "Softplus": ("softplus", (
        (lambda m: m.beta == 1.0,
         lambda m: f"beta={m.beta} (bpcore's softplus has beta 1)"),
        (lambda m: m.threshold >= 20,
         lambda m: f"threshold={m.threshold} (below 20 it differs from "
                   f"log(1 + e^x) by more than float32 rounding)"))),
    "GELU": ("gelu", (
        (lambda m: m.approximate == "none",
         lambda m: f"approximate={m.approximate!r} (bpcore's gelu is the "
                   f"exact one, approximate='none')"),)),
    "Softmax": ("softmax", (
        (lambda m: m.dim in (1, -1),
         lambda m: f"dim={m.dim} (softmax over features is dim=1)"),)),
}


def _torch_activation(m, nn):
    """bpcore's name for activation module m, or a reason it is not one:
    (name, None), (None, reason) or (None, None) for another module."""
    entry = _TORCH_CHECKS.get(type(m).__name__)
    if entry is None or type(m) is not getattr(nn, type(m).__name__, None):
        return None, None
    name, checks = entry
    for ok, why in checks:
        if not ok(m):
            return None, why(m)
    return name, None


def from_torch(module):
    """A :class:`bpcore.Network` from a ``torch.nn.Sequential``.

    The Sequential must hold ``Linear`` layers, each followed by at most one
    activation module (none means identity): ``Sigmoid``, ``Tanh``,
    ``ReLU``, ``LeakyReLU(0.01)``, ``ELU(1.0)``, ``Softplus(beta=1)``
    (threshold >= 20), ``GELU()`` (exact) or, after the last layer only,
    ``Softmax(dim=1)``.  ``Identity`` and ``Dropout`` modules are skipped
    (both are identities at inference) and nested Sequentials are
    flattened.  Parameters are copied bitwise; float32 and float64 keep
    their dtype.  The loss is cross_entropy for a softmax output, mse
    otherwise.

    Raises
    ------
    TypeError
        If module is not a ``torch.nn.Sequential``.
    ValueError
        Naming the index and the module that is not supported, or
        inconsistent layer sizes or dtypes.
    """
    torch = _import_torch()
    nn = torch.nn
    if not isinstance(module, nn.Sequential):
        raise TypeError(f"from_torch expects a torch.nn.Sequential of "
                        f"Linear and activation modules, got "
                        f"{type(module).__name__}")

    layers = _TorchLayers(torch)
    for where, m in _flat_children(module, nn):
        layers.add(where, m)
    return layers.network()


def _flat_children(seq, nn, prefix=""):
    """(path, module) of every module of a Sequential, nested Sequentials
    flattened, in order."""
    for name, m in seq.named_children():
        where = f"{prefix}{name}"
        if type(m) is nn.Sequential:
            yield from _flat_children(m, nn, where + ".")
        else:
            yield where, m


class _TorchLayers:
    """from_torch's reading of a flat module list: sizes, activations,
    weights and biases, each module checked as it comes."""

    def __init__(self, torch):
        self.torch, self.nn = torch, torch.nn
        self.layers, self.acts, self.Ws, self.bs = [], [], [], []
        self.dtype = None

    def add(self, where, m):
        """Take the next module (Identity and Dropout are skipped)."""
        label = f"module [{where}] ({type(m).__name__})"
        if type(m) in (self.nn.Identity, self.nn.Dropout):
            return
        if type(m) is self.nn.Linear:
            self._linear(label, m)
        else:
            self._activation(label, m)

    def _linear(self, label, m):
        """A Linear layer: its weights (transposed) and bias."""
        torch, acts = self.torch, self.acts
        if self.Ws and acts[-1] is None:
            acts[-1] = "identity"
        if acts and acts[-1] == "softmax":
            raise ValueError(f"{label}: Softmax is only supported "
                             f"after the last Linear layer")
        w = m.weight.detach().cpu()
        if w.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"{label}: dtype {w.dtype} is not "
                             f"supported (float32 or float64)")
        if self.dtype is not None and w.dtype != self.dtype:
            raise ValueError(f"{label}: dtype {w.dtype} differs from "
                             f"the earlier layers' {self.dtype}")
        self.dtype = w.dtype
        if self.Ws and m.in_features != self.layers[-1]:
            raise ValueError(f"{label}: in_features={m.in_features} "
                             f"does not match the previous layer's "
                             f"{self.layers[-1]} outputs")
        if not self.layers:
            self.layers.append(m.in_features)
        self.layers.append(m.out_features)
        self.Ws.append(w.numpy().T)
        self.bs.append(m.bias.detach().cpu().numpy() if m.bias is not None
                       else np.zeros(m.out_features, w.numpy().dtype))
        acts.append(None)

    def _activation(self, label, m):
        """An activation module: the activation of the last Linear layer."""
        name, why = _torch_activation(m, self.nn)
        if name is None:
            raise ValueError(f"{label} is not supported"
                             + (f": {why}" if why else
                                ": bpcore networks hold Linear layers and "
                                "the activations Sigmoid, Tanh, ReLU, "
                                "LeakyReLU(0.01), ELU(1.0), Softplus, GELU "
                                "and a final Softmax(dim=1)"))
        if not self.Ws:
            raise ValueError(f"{label}: an activation before the first "
                             f"Linear layer is not supported")
        if self.acts[-1] is not None:
            raise ValueError(f"{label}: a second activation after one "
                             f"Linear layer is not supported")
        self.acts[-1] = name

    def network(self):
        """The Network: cross_entropy for a softmax output, else mse."""
        if not self.Ws:
            raise ValueError("from_torch: the Sequential holds no Linear "
                             "layer")
        acts = [a or "identity" for a in self.acts]
        loss = "cross_entropy" if acts[-1] == "softmax" else "mse"
        np_dtype = (np.float32 if self.dtype == self.torch.float32
                    else np.float64)
        net = Network(self.layers, activation=acts[:-1], output=acts[-1],
                      loss=loss, dtype=np_dtype, seed=0)
        for k, (W, b) in enumerate(zip(self.Ws, self.bs)):
            if not (np.isfinite(W).all() and np.isfinite(b).all()):
                raise ValueError(f"Linear layer {k} holds NaN or infinite "
                                 f"parameters")
            net.weights[k][...] = W
            net.biases[k][...] = b
        return net


# -- plain C --------------------------------------------------------------

def _c_identifier(prefix):
    base = os.path.basename(prefix)
    name = re.sub(r"[^0-9A-Za-z_]", "_", base)
    if not name:
        raise ValueError(f"prefix {prefix!r} has no file name to make a C "
                         f"identifier from")
    if name[0].isdigit() or name[0] == "_":
        name = "m" + ("" if name[0] == "_" else "_") + name
    return name


def _c_literal(v, f32):
    s = format(float(v), ".9g" if f32 else ".17g")
    if "e" not in s and "." not in s:
        s += ".0"
    return s + ("f" if f32 else "")


def _c_array(name, arr, f32, T, comment):
    vals = [_c_literal(v, f32) for v in np.asarray(arr).ravel()]
    lines = [f"/* {comment} */",
             f"static const {T} {name}[{len(vals)}] = {{"]
    per = 6 if f32 else 4
    for i in range(0, len(vals), per):
        lines.append("    " + ", ".join(vals[i:i + per]) + ",")
    lines.append("};")
    return "\n".join(lines)


def _c_act_function(act, T, f32):
    """A static function applying act to v[0..n) in place."""
    s = "f" if f32 else ""
    one, zero, half = ("1.0f", "0.0f", "0.5f") if f32 else ("1.0", "0.0",
                                                              "0.5")
    head = f"static void\nact_{act}({T} *v, int n)\n{{\n    int j;\n"
    loop = "    for (j = 0; j < n; j++) {\n"
    if act == "sigmoid":
        body = (f"        {T} x = v[j];\n"
                f"        {T} e = exp{s}(x < {zero} ? x : -x);\n"
                f"        v[j] = x >= {zero} ? {one} / ({one} + e) "
                f": e / ({one} + e);\n")
    elif act == "tanh":
        body = f"        v[j] = tanh{s}(v[j]);\n"
    elif act == "relu":
        body = f"        v[j] = v[j] > {zero} ? v[j] : {zero};\n"
    elif act == "leaky_relu":
        body = (f"        v[j] = v[j] > {zero} ? v[j] : "
                f"({T})0.01 * v[j];\n")
    elif act == "elu":
        body = f"        v[j] = v[j] > {zero} ? v[j] : expm1{s}(v[j]);\n"
    elif act == "softplus":
        body = (f"        {T} x = v[j];\n"
                f"        v[j] = (x > {zero} ? x : {zero}) + "
                f"log1p{s}(exp{s}(x < {zero} ? x : -x));\n")
    elif act == "gelu":
        body = (f"        {T} x = v[j];\n"
                f"        v[j] = {half} * x * "
                f"erfc{s}(-x * ({T})0.70710678118654752440);\n")
    elif act == "softmax":
        return (head + f"    {T} mx = v[0];\n    double sum = 0.0;\n"
                f"    {T} inv;\n"
                "    for (j = 1; j < n; j++) {\n"
                "        mx = v[j] > mx ? v[j] : mx;\n    }\n"
                + loop + f"        v[j] = exp{s}(v[j] - mx);\n"
                "        sum += (double)v[j];\n    }\n"
                f"    inv = ({T})(1.0 / sum);\n"
                + loop + "        v[j] *= inv;\n    }\n}\n")
    else:  # pragma: no cover
        raise ValueError(act)
    return head + loop + body + "    }\n}\n"


_C_LIBM = {"sigmoid": "exp", "tanh": "tanh", "elu": "expm1",
           "softplus": "exp, log1p", "gelu": "erfc", "softmax": "exp"}


def to_c(net, prefix, scaling="auto"):
    """Write ``prefix + ".h"`` and ``prefix + ".c"``: the network in C99.

    The pair has no dependency beyond the C standard library's ``<math.h>``
    (link with ``-lm``): the weights are ``static const`` arrays whose
    decimal literals round-trip exactly (9 significant digits for float,
    17 for double), and ::

        void <name>_predict(const T *x, T *y);

    computes one row: ``x`` holds ``<NAME>_N_INPUTS`` values, ``y``
    receives ``<NAME>_N_OUTPUTS``.  ``T`` is ``float`` or ``double`` (the
    network's dtype); ``<name>`` is the file name of ``prefix`` made a C
    identifier.  No allocation, no global or static state written (two
    stack buffers as wide as the widest layer), so it is reentrant and
    thread-safe.  Math functions: only those the activations need (exp
    for sigmoid and softmax, tanh, expm1 for elu, exp and log1p for
    softplus, erfc for gelu; the float versions for float), the same
    formulas as bpcore's core.

    Parameters
    ----------
    net : bpcore.Network
    prefix : str or os.PathLike
        Path without extension; its folder must exist.
    scaling : {"auto", True, False}, default="auto"
        As in :func:`to_onnx`: apply the input standardisation and output
        transform that ``bpcore train`` stored (``y`` is then what
        ``bpcore predict`` prints), or export the bare network.

    Returns
    -------
    (str, str)
        The paths of the header and the source written.
    """
    _check_net(net)
    prefix = _check_out_path(prefix, "prefix", file=False)
    name = _c_identifier(prefix)
    sc = _Scaling(net, scaling)
    c = _CSource(net, sc, name, os.path.basename(prefix))
    h_path, c_path = prefix + ".h", prefix + ".c"
    with open(h_path, "w", encoding="ascii") as f:
        f.write(c.header())
    with open(c_path, "w", encoding="ascii") as f:
        f.write(c.source())
    return h_path, c_path


class _CSource:
    """The text of to_c's header and source for one network."""

    def __init__(self, net, sc, name, base):
        self.net, self.sc, self.name, self.base = net, sc, name, base
        self.f32 = net.dtype == np.float32
        self.T = "float" if self.f32 else "double"
        self.NAME = name.upper()
        self.n_in, self.n_out = net.layers[0], sc.n_outputs(net)
        self.acts = list(net.activation)
        libm = sorted({f for a in self.acts if a in _C_LIBM
                       for f in _C_LIBM[a].split(", ")})
        self.libm = [f + ("f" if self.f32 else "") for f in libm]
        width = max(net.layers[1:] + ((self.n_in,) if sc.inputs else ()))
        self.width = max(width, 2) if sc.binary else width

    def comment(self):
        """The lines that open both files: what the network is."""
        net, sc, T = self.net, self.sc, self.T
        return "\n".join([
            f" * Generated by bpcore {bpcore.__version__} "
            f"(bpcore.export.to_c); do not edit.",
            f" * Network: {'-'.join(map(str, net.layers))} "
            f"({T}, {net.n_params} parameters)",
            " * Layers: " + ", ".join(
                f"{a}->{b} {act}" for a, b, act in zip(
                    net.layers[:-1], net.layers[1:], self.acts)),
            f" * Scaling: {sc.describe()}",
            f" * Output: {self.n_out} values per row"
            + (" (class probabilities)"
               if self.acts[-1] == "softmax" or sc.binary else ""),
            " * libm: " + (", ".join(self.libm) if self.libm else "none"),
        ])

    def header(self):
        """The .h file: sizes and the predict declaration."""
        name, NAME, T = self.name, self.NAME, self.T
        return f"""/*
 * {self.base}.h - a bpcore network as plain C99.
{self.comment()}
 */
#ifndef {NAME}_H
#define {NAME}_H

#define {NAME}_N_INPUTS {self.n_in}
#define {NAME}_N_OUTPUTS {self.n_out}

#ifdef __cplusplus
extern "C" {{
#endif

/* y ({NAME}_N_OUTPUTS) = the network applied to one row x
 * ({NAME}_N_INPUTS); no allocation, reentrant. */
void {name}_predict(const {T} *x, {T} *y);

#ifdef __cplusplus
}}
#endif

#endif /* {NAME}_H */
"""

    def source(self):
        """The .c file: the arrays, dense, the activations and predict."""
        parts = [f"/*\n * {self.base}.c - a bpcore network as plain C99.\n"
                 f"{self.comment()}\n */\n#include \"{self.base}.h\"\n"]
        if self.libm:
            parts.append("#include <math.h>\n")
        parts.append(f"#define {self.NAME}_WIDTH {self.width}\n")
        parts += self.arrays()
        parts.append(_C_DENSE.replace("{T}", self.T))
        for act in dict.fromkeys(self.acts):
            if act != "identity":
                parts.append(_c_act_function(act, self.T, self.f32))
        parts.append(self.predict())
        return "\n".join(parts)

    def arrays(self):
        """The static arrays: scaling (in double, as in bpcore predict: a
        float32 mean would cost digits for features with a large offset),
        weights and biases."""
        net, sc, name = self.net, self.sc, self.name
        parts = []
        if sc.inputs:
            parts.append(_c_array(f"{name}_input_mean", sc.x_mean, False,
                                  "double", "input_mean, subtracted from x"))
            parts.append(_c_array(f"{name}_input_std", sc.x_std, False,
                                  "double", "input_std, divides x - "
                                  "input_mean"))
        for k, (W, b) in enumerate(zip(net.weights, net.biases)):
            parts.append(_c_array(f"{name}_w{k}", W, self.f32, self.T,
                                  f"W_{k} ({W.shape[0]}, {W.shape[1]}), "
                                  f"row-major"))
            parts.append(_c_array(f"{name}_b{k}", b, self.f32, self.T,
                                  f"b_{k} ({b.shape[0]})"))
        if sc.y_mean is not None:
            parts.append(_c_array(f"{name}_target_mean", sc.y_mean, False,
                                  "double", "target_mean"))
            parts.append(_c_array(f"{name}_target_std", sc.y_std, False,
                                  "double", "target_std"))
        return parts

    def predict(self):
        """The predict function: its declarations, then its body."""
        name, T, sc = self.name, self.T, self.sc
        body = self.predict_body()
        decl = [f"void\n{name}_predict(const {T} *x, {T} *y)\n{{"]
        decl += [f"    {T} {buf}[{self.NAME}_WIDTH];" for buf in ("a", "b")
                 if any(f"({buf}, " in line or f" {buf}[j]" in line
                        for line in body)]
        if sc.inputs or sc.y_mean is not None or sc.binary:
            decl.append("    int j;")
        return "\n".join(decl + body)

    def predict_body(self):
        """predict's statements: scale x, the layers ping-ponging between
        the buffers a and b, then the output into y."""
        net, sc, name, T = self.net, self.sc, self.name, self.T
        body, src = [], "x"
        if sc.inputs:
            body += [f"    for (j = 0; j < {self.n_in}; j++) {{",
                     f"        a[j] = ({T})(((double)x[j] - "
                     f"{name}_input_mean[j]) / {name}_input_std[j]);",
                     "    }"]
            src = "a"
        for k, act in enumerate(self.acts):
            dst = "b" if src == "a" else "a"
            n0, n1 = net.layers[k], net.layers[k + 1]
            body.append(f"    /* layer {k}: {n0} -> {n1}, {act} */")
            body.append(f"    dense({dst}, {src}, {name}_w{k}, {name}_b{k}, "
                        f"{n0}, {n1});")
            if act != "identity":
                body.append(f"    act_{act}({dst}, {n1});")
            src = dst
        return body + self.output(src) + ["}\n"]

    def output(self, src):
        """The statements that write y from the last layer's buffer."""
        n_last, name, T = self.net.layers[-1], self.name, self.T
        if self.sc.y_mean is not None:
            return [f"    for (j = 0; j < {n_last}; j++) {{",
                    f"        y[j] = ({T})((double){src}[j] * "
                    f"{name}_target_std[j] + {name}_target_mean[j]);",
                    "    }"]
        if self.sc.binary:
            one = "1.0f" if self.f32 else "1.0"
            return [f"    y[0] = {one} - {src}[0];", f"    y[1] = {src}[0];"]
        return [f"    {{\n        int j;\n"
                f"        for (j = 0; j < {n_last}; j++) {{\n"
                f"            y[j] = {src}[j];\n        }}\n    }}"]


# out (n_out) = in (n_in) @ w (n_in, n_out) + b (n_out); {T} is the type
_C_DENSE = """/* out (n_out) = in (n_in) @ w (n_in, n_out) + b (n_out) */
static void
dense({T} *restrict out, const {T} *restrict in, const {T} *restrict w,
      const {T} *restrict b, int n_in, int n_out)
{
    int i, j;
    for (j = 0; j < n_out; j++) {
        out[j] = b[j];
    }
    for (i = 0; i < n_in; i++) {
        const {T} xi = in[i];
        const {T} *w_i = w + (long)i * n_out;
        for (j = 0; j < n_out; j++) {
            out[j] += xi * w_i[j];
        }
    }
}
"""
