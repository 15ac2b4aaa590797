"""Backpropagation in a 2-3-2-2 sigmoid network, step by step.

The classic derivation: two inputs, hidden layers of 3 and 2 sigmoid
neurons, two sigmoid outputs, the Euclidean cost E = 1/(2m) sum ||y - out||^2.
This script sets the tutorial's weights by hand, then prints for every layer
the summed inputs net and the outputs out (forward pass), the error values
delta = dE/dnet (backward pass), the weight gradients and the updates of one
gradient-descent step, and checks each number that bpcore computes against
the tutorial's formulas evaluated in numpy.

Notation (array index = tutorial layer number - 1):

    i_n     input n                        X[:, n-1]
    net_ln  summed input of neuron n       trace.net[l-1][:, n-1]
    out_ln  output of neuron n, f(net_ln)  trace.out[l-1][:, n-1]
    w_lnd   weight from neuron n of layer  net.weights[l-1][n-1, d-1]
            l to neuron d of layer l+1
    b_ln    bias of neuron n of layer l    net.biases[l-2][n-1]
    delta   dE/dnet of a neuron            grads.delta[l-1][:, n-1]

Run:  python examples/tutorial_2_3_2_2.py
"""
import numpy as np

import bpcore

np.set_printoptions(precision=6, suppress=True)

# The tutorial's sample, targets, weights and biases (float64 for exactness).
X = np.array([[0.5, 1.0]])            # i_1, i_2
Y = np.array([[1.0, 0.0]])            # y_1, y_2
W = [np.array([[0.1, 0.3, 0.5],       # W_1: layer 1 -> 2, shape (2, 3)
               [0.2, 0.4, 0.6]]),
     np.array([[0.1, -0.2],           # W_2: layer 2 -> 3, shape (3, 2)
               [0.3, 0.4],
               [-0.5, 0.6]]),
     np.array([[0.5, -0.5],           # W_3: layer 3 -> 4, shape (2, 2)
               [0.3, 0.7]])]
B = [np.array([0.1, 0.2, 0.3]),       # b_2
     np.array([0.1, -0.1]),           # b_3
     np.array([0.2, -0.2])]           # b_4
ETA = 0.5                             # learning rate of the update step


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def check(name, ours, formula):
    """Print one quantity and assert that bpcore agrees with the formula."""
    np.testing.assert_allclose(ours, formula, rtol=1e-12, atol=1e-15,
                               err_msg=name)
    print(f"  {name:<10} = {np.array2string(np.ravel(ours), separator=', ')}"
          f"   (formula agrees)")


net = bpcore.Network([2, 3, 2, 2], activation="sigmoid", output="sigmoid",
                     loss="mse", dtype="float64")
for k in range(3):
    net.weights[k][...] = W[k]
    net.biases[k][...] = B[k]
m = X.shape[0]

print("Network 2-3-2-2, sigmoid everywhere, E = 1/(2m) sum ||y - out||^2")
print(f"inputs i = {X[0]}, targets y = {Y[0]}\n")

# ---------------------------------------------------------------------------
print("1. Forward pass: net_l = out_(l-1) W_(l-1) + b_l, out_l = f(net_l)")
trace = net.forward(X)
out = [X]                              # out[k] is tutorial layer k+1
nets = [X]
for k in range(3):
    # net_ld = sum_n out_(l-1)n * w_(l-1)nd + b_ld
    nets.append(out[k] @ W[k] + B[k])
    out.append(sigmoid(nets[-1]))
for k in range(1, 4):
    print(f" layer {k + 1}:")
    check(f"net_{k + 1}", trace.net[k], nets[k])
    check(f"out_{k + 1}", trace.out[k], out[k])

E = 0.5 / m * np.sum((Y - out[3]) ** 2)
print(f"\n error E = 1/(2m) sum (y - out_4)^2 = {E:.12f}")
assert np.isclose(net.evaluate(X, Y), E, rtol=1e-12)

# ---------------------------------------------------------------------------
print("\n2. Backward pass: the error value delta = dE/dnet of every neuron")
print("  output layer:  delta_4 = (out_4 - y) * out_4 * (1 - out_4) / m")
print("  hidden layers: delta_l = (delta_(l+1) W_l^T) * out_l * (1 - out_l)")
grads = net.backward(X, Y)
delta: list = [None] * 4
delta[3] = (out[3] - Y) * out[3] * (1 - out[3]) / m
for k in (2, 1):
    delta[k] = (delta[k + 1] @ W[k].T) * out[k] * (1 - out[k])
delta[0] = delta[1] @ W[0].T           # dE/di: the gradient for the inputs
for k in (3, 2, 1):
    check(f"delta_{k + 1}", grads.delta[k], delta[k])
check("dE/di", grads.delta[0], delta[0])

# ---------------------------------------------------------------------------
print("\n3. Gradients: dE/dw_lnd = out_ln * delta_(l+1)d, "
      "dE/db_ln = delta_ln")
dW = [out[k].T @ delta[k + 1] for k in range(3)]
dB = [delta[k + 1].sum(axis=0) for k in range(3)]
for k in range(3):
    check(f"dE/dW_{k + 1}", grads.weights[k], dW[k])
    check(f"dE/db_{k + 2}", grads.biases[k], dB[k])

# Central differences confirm the formulas themselves.
eps = 1e-6
w = net.weights[1]
w[2, 1] += eps
e_plus = net.evaluate(X, Y)
w[2, 1] -= 2 * eps
e_minus = net.evaluate(X, Y)
w[2, 1] += eps
numeric = (e_plus - e_minus) / (2 * eps)
print(f"  finite difference for w_232: {numeric:.10f} vs "
      f"dE/dw_232 = {dW[1][2, 1]:.10f}")
assert abs(numeric - dW[1][2, 1]) < 1e-8

# ---------------------------------------------------------------------------
print(f"\n4. One gradient-descent step, eta = {ETA}: w <- w - eta * dE/dw")
before = [w.copy() for w in net.weights]
loss_before = net.step(X, Y, bpcore.SGD(lr=ETA))
assert np.isclose(loss_before, E, rtol=1e-12)
for k in range(3):
    new_w = W[k] - ETA * dW[k]
    new_b = B[k] - ETA * dB[k]
    change = (net.weights[k] - before[k]).ravel()
    print(f" W_{k + 1}: change = {np.array2string(change, separator=', ')}")
    check(f"W_{k + 1} new", net.weights[k], new_w)
    check(f"b_{k + 2} new", net.biases[k], new_b)
E_after = net.evaluate(X, Y)
print(f"\n error after the step: {E_after:.12f} (was {E:.12f})")
assert E_after < E

# ---------------------------------------------------------------------------
print("\n5. Repeat: 200 steps of the same rule")
hist = net.fit(X, Y, epochs=200, batch_size=None, optimizer=bpcore.SGD(lr=ETA),
               shuffle=False)
print(f" error {hist.loss[0]:.6f} -> {hist.loss[-1]:.6f}; "
      f"out_4 = {net.predict(X)[0]} for y = {Y[0]}")
assert hist.loss[-1] < hist.loss[0]
print("\nEvery number matched the tutorial's formulas.")
