"""Regression with bpcore: learn a smooth function of three variables.

Only numpy is needed.  The target is y = sin(2 x1) + x2 * x3 + noise; a
tanh network with a linear (identity) output and the mse loss learns it.
Inputs and target are standardised with statistics of the training set
(as the command line does), Adam with a cosine learning-rate schedule
trains it, early stopping watches a validation set, and the result is
reported as R^2 and RMSE on a test set, with a few sample predictions.

Run:  python examples/regression.py
"""
import time

import numpy as np

import bpcore

rng = np.random.default_rng(0)
m = 3000
X = rng.uniform(-2.0, 2.0, size=(m, 3))
y = np.sin(2.0 * X[:, 0]) + X[:, 1] * X[:, 2] + rng.normal(0.0, 0.05, m)

train, val, test = np.split(rng.permutation(m), [2000, 2500])
x_mean, x_std = X[train].mean(axis=0), X[train].std(axis=0)
y_mean, y_std = y[train].mean(), y[train].std()


def scale(A):
    return (A - x_mean) / x_std


Xs = scale(X)
ys = ((y - y_mean) / y_std).reshape(-1, 1)     # (m, 1): one output neuron

net = bpcore.Network([3, 64, 64, 1], activation="tanh", output="identity",
                     loss="mse", seed=0)
print(net, f"- {net.n_params} parameters")

epochs = 150
opt = bpcore.Adam(lr=bpcore.schedules.Cosine(3e-3, t_max=epochs))
t0 = time.perf_counter()
hist = net.fit(Xs[train], ys[train], epochs=epochs, batch_size=64,
               optimizer=opt, validation_data=(Xs[val], ys[val]),
               early_stopping=bpcore.EarlyStopping(patience=20))
seconds = time.perf_counter() - t0
print(f"{hist.epochs_run} epochs in {seconds:.2f} s; loss "
      f"{hist.loss[0]:.4f} -> {hist.loss[-1]:.4f}, best validation loss "
      f"{min(hist.val_loss):.5f} at epoch {hist.best_epoch}")

pred = net.predict(Xs[test])[:, 0] * y_std + y_mean    # back to y's units
resid = y[test] - pred
r2 = 1.0 - np.sum(resid ** 2) / np.sum((y[test] - y[test].mean()) ** 2)
rmse = np.sqrt(np.mean(resid ** 2))
print(f"test R^2 = {r2:.4f}, RMSE = {rmse:.4f} (noise level 0.05)")
assert r2 > 0.95, r2

print("\n     x1      x2      x3  |  true y   predicted")
for i in test[:6]:
    p = net.predict(scale(X[i]))[0] * y_std + y_mean   # 1-D in, 1-D out
    print(f"  {X[i, 0]:+.3f}  {X[i, 1]:+.3f}  {X[i, 2]:+.3f}  |  "
          f"{y[i]:+.4f}  {p:+.4f}")
