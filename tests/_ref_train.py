"""A small float64 NumPy MLP for the dropout, clipping and out-of-core
tests: forward and backward with optional dropout masks, gradient-norm
clipping as torch.nn.utils.clip_grad_norm_, and PyTorch's SGD / Adam /
AdamW rules.  Written from the documented formulas; it shares no
code with bpcore.  Also a pure-Python twin of the documented dropout hash.
"""
import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def mix(x):
    """splitmix64's finaliser on a Python int."""
    x = (x + GOLDEN) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def batch_seed(seed, b):
    return mix((seed + b * GOLDEN) & M64)


def keep(seed, i, k, j, rate):
    """The documented rule: row hash mix(seed ^ mix(i)), unit hash
    mix(row ^ (k << 40) ^ j), kept when (h >> 11) / 2**53 >= rate."""
    h = mix(mix(seed ^ mix(i)) ^ (k << 40) ^ j)
    return (h >> 11) / 2.0 ** 53 >= rate


def mask_factors(seed, m, layers, rates):
    """L + 1 entries: None, then (m, n_k) factors 0 or 1/(1-rate) for the
    hidden layers, then None."""
    L = len(layers) - 1
    out = [None] * (L + 1)
    for k in range(L - 1):
        n = layers[k + 1]
        f = np.zeros((m, n))
        for i in range(m):
            for j in range(n):
                if keep(seed, i, k, j, rates[k]):
                    f[i, j] = 1.0 / (1.0 - rates[k])
        out[k + 1] = f
    return out


def _sig(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


ACTS = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (_sig, lambda z: _sig(z) * (1.0 - _sig(z))),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0) * 1.0),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))),
}


def loss_grad(Ws, bs, acts, loss, X, Y, sw=None, masks=None):
    """(E, dWs, dbs, deltas) for mse (any output in ACTS) or
    cross_entropy (softmax output, Y one-hot rows)."""
    L = len(Ws)
    m = X.shape[0]
    s = np.ones(m) if sw is None else np.asarray(sw, float)
    S = s.sum()
    hs, zs = [X], [None]
    for k in range(L):
        z = hs[-1] @ Ws[k] + bs[k]
        zs.append(z)
        if k == L - 1 and acts[k] == "softmax":
            e = np.exp(z - z.max(1, keepdims=True))
            h = e / e.sum(1, keepdims=True)
        else:
            h = ACTS[acts[k]][0](z)
        if k < L - 1 and masks is not None and masks[k + 1] is not None:
            h = h * masks[k + 1]
        hs.append(h)
    if loss == "mse":
        li = 0.5 * ((hs[-1] - Y) ** 2).sum(1)
        delta = (s / S)[:, None] * (hs[-1] - Y) * ACTS[acts[-1]][1](zs[-1])
    else:
        z = zs[-1]
        lse = z.max(1) + np.log(np.exp(z - z.max(1, keepdims=True)).sum(1))
        li = (Y * (lse[:, None] - z)).sum(1)
        delta = (s / S)[:, None] * (hs[-1] * Y.sum(1, keepdims=True) - Y)
    E = (s * li).sum() / S
    dWs, dbs, deltas = [None] * L, [None] * L, [None] * (L + 1)
    deltas[L] = delta
    for k in range(L - 1, -1, -1):
        dWs[k] = hs[k].T @ delta
        dbs[k] = delta.sum(0)
        dh = delta @ Ws[k].T
        if k == 0:
            deltas[0] = dh
            break
        if masks is not None and masks[k] is not None:
            dh = dh * masks[k]
        delta = dh * ACTS[acts[k - 1]][1](zs[k])
        deltas[k] = delta
    return E, dWs, dbs, deltas


def clip(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_: scale by min(1, c / (norm + 1e-6))."""
    if max_norm is None:
        return grads
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads))
    coef = min(1.0, max_norm / (norm + 1e-6))
    return [g * coef for g in grads]


class Opt:
    """PyTorch's SGD / Adam / AdamW on lists of arrays; decay on weights
    (the first n_w arrays) only."""

    def __init__(self, kind, n_w, lr, momentum=0.0, nesterov=False,
                 weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8,
                 clip_norm=None):
        self.kind, self.n_w, self.lr = kind, n_w, lr
        self.mu, self.nesterov, self.wd = momentum, nesterov, weight_decay
        self.b1, self.b2 = betas
        self.eps, self.clip_norm = eps, clip_norm
        self.t = 0
        self.s1 = self.s2 = None

    def step(self, params, grads):
        grads = clip(grads, self.clip_norm)
        if self.s1 is None:
            self.s1 = [np.zeros_like(p) for p in params]
            self.s2 = [np.zeros_like(p) for p in params]
        self.t += 1
        out = []
        for i, (p, g) in enumerate(zip(params, grads)):
            wd = self.wd if i < self.n_w else 0.0
            if self.kind == "sgd":
                g = g + wd * p
                if self.mu > 0:
                    v = g if self.t == 1 else self.mu * self.s1[i] + g
                    self.s1[i] = v
                    g = g + self.mu * v if self.nesterov else v
                out.append(p - self.lr * g)
                continue
            if self.kind == "adamw":
                p = p * (1 - self.lr * wd)
            else:
                g = g + wd * p
            self.s1[i] = self.b1 * self.s1[i] + (1 - self.b1) * g
            self.s2[i] = self.b2 * self.s2[i] + (1 - self.b2) * g * g
            mhat = self.s1[i] / (1 - self.b1 ** self.t)
            vhat = self.s2[i] / (1 - self.b2 ** self.t)
            out.append(p - self.lr * mhat / (np.sqrt(vhat) + self.eps))
        return out
