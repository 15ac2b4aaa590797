"""Plain NumPy reference MLP: the test oracle for bpcore.

Written from the documented formulas only (the README and the docstrings of
bpcore.Network); it shares no code with bpcore and always computes in
float64. Conventions (the same as bpcore's):

- samples are rows: X (m, n_0); layer k computes
  net_{k+1} = out_k @ W_k + b_k with W_k (n_k, n_{k+1}), b_k (n_{k+1},),
  and out_{k+1} = f_k(net_{k+1}); the input layer has no activation.
- ``activations`` lists L names, one per non-input layer, output last.
- the flat parameter vector holds every weight matrix (row-major) in layer
  order, then every bias vector in layer order.
- losses over m samples with per-sample weights s_i (all ones by default):
  E = sum_i s_i * l_i / sum_i s_i, where l_i is
    mse                   0.5 * ||y_i - out_i||^2
    cross_entropy         -sum_j y_ij * log softmax(net_L)_ij
    binary_cross_entropy  sum_j [log(1 + exp(net_ij)) - y_ij * net_ij]
- ``delta[k]`` is dE/dnet_k with shape (m, n_k); delta[0] is dE/dX.
"""

import math

import numpy as np

try:  # scipy is optional; fall back to math.erf elementwise.
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

ACTIVATION_NAMES = (
    "identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus",
    "gelu",
)
OUTPUT_NAMES = ACTIVATION_NAMES + ("softmax",)
LOSS_NAMES = ("mse", "cross_entropy", "binary_cross_entropy")

# (output, loss) pairs that the public API allows: mse with any output,
# cross_entropy only with softmax, binary_cross_entropy only with sigmoid.
VALID_OUTPUT_LOSS = tuple(
    [(name, "mse") for name in OUTPUT_NAMES]
    + [("softmax", "cross_entropy"), ("sigmoid", "binary_cross_entropy")]
)

LEAKY_SLOPE = 0.01
SQRT_2 = math.sqrt(2.0)
SQRT_2PI = math.sqrt(2.0 * math.pi)


# ---------------------------------------------------------------------------
# Activations: f(x) and f'(x), both elementwise on net values.

def sigmoid(x):
    # 1 / (1 + exp(-x)) written with tanh so it cannot overflow.
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(x):
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _gelu(x):
    # x * Phi(x), Phi the standard normal CDF (PyTorch's exact GELU).
    return 0.5 * x * (1.0 + _erf(x / SQRT_2))


def _gelu_prime(x):
    # Phi(x) + x * phi(x)
    return 0.5 * (1.0 + _erf(x / SQRT_2)) + x * np.exp(-0.5 * x * x) / SQRT_2PI


ACTIVATIONS = {
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
    "sigmoid": (sigmoid, lambda x: sigmoid(x) * (1.0 - sigmoid(x))),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0.0),
             lambda x: (x > 0).astype(np.float64)),
    "leaky_relu": (lambda x: np.where(x > 0, x, LEAKY_SLOPE * x),
                   lambda x: np.where(x > 0, 1.0, LEAKY_SLOPE)),
    "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
            lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0.0)))),
    "softplus": (lambda x: np.logaddexp(0.0, x), sigmoid),
    "gelu": (_gelu, _gelu_prime),
}


def activate(name, x):
    """out = f(net) for one layer; x is (m, n)."""
    if name == "softmax":
        return softmax(x)
    return ACTIVATIONS[name][0](x)


def activation_backward(name, x, dout):
    """delta = dE/dnet from dout = dE/dout for one layer; x is net (m, n)."""
    if name == "softmax":
        # Jacobian of softmax: ds_j/dx_k = s_j (1[j=k] - s_k), so
        # delta_k = s_k * (dout_k - sum_j dout_j s_j).
        s = softmax(x)
        return s * (dout - (dout * s).sum(axis=1, keepdims=True))
    return dout * ACTIVATIONS[name][1](x)


# ---------------------------------------------------------------------------
# Parameter layout.

def flatten(weights, biases):
    """All weights (row-major) in layer order, then all biases."""
    parts = [np.asarray(w, np.float64).ravel() for w in weights]
    parts += [np.asarray(b, np.float64).ravel() for b in biases]
    return np.concatenate(parts)


def unflatten(flat, layers):
    """Inverse of flatten for layer sizes ``layers`` (n_0 .. n_L)."""
    flat = np.asarray(flat, np.float64)
    weights, biases, pos = [], [], 0
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        weights.append(flat[pos:pos + n_in * n_out].reshape(n_in, n_out))
        pos += n_in * n_out
    for n_out in layers[1:]:
        biases.append(flat[pos:pos + n_out])
        pos += n_out
    assert pos == flat.size
    return weights, biases


def n_weights(layers):
    """Length of the weight prefix of the flat vector (biases follow)."""
    return sum(a * b for a, b in zip(layers[:-1], layers[1:]))


def one_hot(labels, n_classes):
    labels = np.asarray(labels)
    y = np.zeros((labels.size, n_classes))
    y[np.arange(labels.size), labels.astype(np.int64)] = 1.0
    return y


# ---------------------------------------------------------------------------
# The network.

class MLP:
    """A float64 multilayer perceptron.

    weights: list of L arrays, weights[k] (n_k, n_{k+1})
    biases:  list of L arrays, biases[k] (n_{k+1},)
    activations: list of L names (hidden layers, then the output)
    loss: "mse" | "cross_entropy" | "binary_cross_entropy"
    """

    def __init__(self, weights, biases, activations, loss="mse"):
        self.weights = [np.array(w, dtype=np.float64) for w in weights]
        self.biases = [np.array(b, dtype=np.float64) for b in biases]
        if isinstance(activations, str):
            activations = [activations] * len(self.weights)
        self.activations = list(activations)
        self.loss_name = loss
        assert len(self.activations) == len(self.weights) == len(self.biases)
        if loss == "cross_entropy":
            assert self.activations[-1] == "softmax"
        if loss == "binary_cross_entropy":
            assert self.activations[-1] == "sigmoid"

    @property
    def layers(self):
        return [self.weights[0].shape[0]] + [w.shape[1] for w in self.weights]

    @property
    def params(self):
        return flatten(self.weights, self.biases)

    def set_params(self, flat):
        self.weights, self.biases = (
            [a.copy() for a in part] for part in unflatten(flat, self.layers))

    # -- forward -----------------------------------------------------------

    def forward(self, X):
        """Return (net, out): lists of L+1 arrays, index 0 is the input."""
        X = np.asarray(X, dtype=np.float64)
        net, out = [X], [X]
        for W, b, name in zip(self.weights, self.biases, self.activations):
            z = out[-1] @ W + b
            net.append(z)
            out.append(activate(name, z))
        return net, out

    def predict(self, X):
        return self.forward(X)[1][-1]

    # -- loss ----------------------------------------------------------------

    def _targets(self, Y):
        Y = np.asarray(Y, dtype=np.float64)
        if self.loss_name == "cross_entropy" and Y.ndim == 1:
            Y = one_hot(Y, self.layers[-1])
        return Y

    @staticmethod
    def _sample_weights(m, sample_weight):
        """Per-sample factor s_i / sum(s), or 1/m without sample weights."""
        if sample_weight is None:
            return np.full(m, 1.0 / m)
        s = np.asarray(sample_weight, dtype=np.float64)
        return s / s.sum()

    def per_sample_loss(self, X, Y):
        net, out = self.forward(X)
        Y = self._targets(Y)
        if self.loss_name == "mse":
            return 0.5 * ((Y - out[-1]) ** 2).sum(axis=1)
        if self.loss_name == "cross_entropy":
            return -(Y * log_softmax(net[-1])).sum(axis=1)
        if self.loss_name == "binary_cross_entropy":
            z = net[-1]
            return (np.logaddexp(0.0, z) - Y * z).sum(axis=1)
        raise ValueError(self.loss_name)

    def loss(self, X, Y, sample_weight=None):
        l = self.per_sample_loss(X, Y)
        return float((self._sample_weights(l.size, sample_weight) * l).sum())

    # -- backward ------------------------------------------------------------

    def backward(self, X, Y, sample_weight=None):
        """Return a dict with loss, delta (L+1), dW, db and flat params."""
        net, out = self.forward(X)
        Y = self._targets(Y)
        L = len(self.weights)
        w = self._sample_weights(net[0].shape[0], sample_weight)[:, None]

        delta = [None] * (L + 1)
        if self.loss_name == "mse":
            # E = sum_i w_i * 0.5 ||y_i - out_i||^2, dE/dout = w * (out - y)
            dout = w * (out[L] - Y)
            delta[L] = activation_backward(self.activations[-1], net[L], dout)
        elif self.loss_name == "cross_entropy":
            # d/dnet of -sum_j y_j log softmax(net)_j = softmax * sum(y) - y
            p = softmax(net[L])
            delta[L] = w * (p * Y.sum(axis=1, keepdims=True) - Y)
        else:
            # d/dnet of log(1 + e^net) - y net = sigmoid(net) - y
            delta[L] = w * (sigmoid(net[L]) - Y)

        dW, db = [None] * L, [None] * L
        for k in range(L - 1, -1, -1):
            dW[k] = out[k].T @ delta[k + 1]
            db[k] = delta[k + 1].sum(axis=0)
            dout = delta[k + 1] @ self.weights[k].T
            if k == 0:
                delta[0] = dout  # the input layer has no activation
            else:
                delta[k] = activation_backward(
                    self.activations[k - 1], net[k], dout)

        return {
            "loss": self.loss(X, Y, sample_weight),
            "delta": delta,
            "dW": dW,
            "db": db,
            "params": flatten(dW, db),
        }

    # -- numerical gradient (for checking this file itself) ------------------

    def numerical_gradient(self, X, Y, sample_weight=None, h=1e-6):
        p0 = self.params
        g = np.empty_like(p0)
        for i in range(p0.size):
            p = p0.copy()
            p[i] += h
            self.set_params(p)
            up = self.loss(X, Y, sample_weight)
            p[i] -= 2 * h
            self.set_params(p)
            down = self.loss(X, Y, sample_weight)
            g[i] = (up - down) / (2 * h)
        self.set_params(p0)
        return g


# ---------------------------------------------------------------------------
# Optimizers on flat vectors (PyTorch's update rules). Weight decay applies to
# the first ``n_weights`` entries only (the weights), never to the biases.

class SGD:
    """v = momentum*v + g; p -= lr*v; Nesterov steps with g + momentum*v.

    g includes L2 decay on weights: g = grad + weight_decay * p.
    """

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False,
                 weight_decay=0.0):
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self.buf = None

    def update(self, params, grad, n_weights):
        """Return the new flat parameter vector (float64)."""
        p = np.array(params, dtype=np.float64)
        g = np.array(grad, dtype=np.float64)
        g[:n_weights] += self.weight_decay * p[:n_weights]
        if self.momentum != 0.0:
            if self.buf is None:
                self.buf = g.copy()  # PyTorch: the first buffer is g itself
            else:
                self.buf = self.momentum * self.buf + g
            g = g + self.momentum * self.buf if self.nesterov else self.buf
        return p - self.lr * g


class Adam:
    """PyTorch Adam; weight_decay is L2 added to the gradient (weights)."""

    decoupled = False

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.weight_decay = weight_decay
        self.m = self.v = None
        self.t = 0

    def update(self, params, grad, n_weights):
        p = np.array(params, dtype=np.float64)
        g = np.array(grad, dtype=np.float64)
        if self.decoupled:
            # AdamW: p <- p * (1 - lr * wd) before the Adam step.
            p[:n_weights] *= 1.0 - self.lr * self.weight_decay
        else:
            g[:n_weights] += self.weight_decay * p[:n_weights]
        if self.m is None:
            self.m, self.v = np.zeros_like(p), np.zeros_like(p)
        b1, b2 = self.betas
        self.t += 1
        self.m = b1 * self.m + (1.0 - b1) * g
        self.v = b2 * self.v + (1.0 - b2) * g * g
        m_hat = self.m / (1.0 - b1 ** self.t)
        v_hat = self.v / (1.0 - b2 ** self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamW(Adam):
    """PyTorch AdamW: decoupled weight decay (default 0.01 as in PyTorch)."""

    decoupled = True

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


def step(mlp, X, Y, optimizer, sample_weight=None):
    """One optimizer update of ``mlp`` in place; returns the loss before it."""
    g = mlp.backward(X, Y, sample_weight)
    mlp.set_params(optimizer.update(mlp.params, g["params"],
                                    n_weights(mlp.layers)))
    return g["loss"]
