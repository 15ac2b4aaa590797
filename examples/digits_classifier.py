"""Handwritten digits with bpcore: a 64-64-10 softmax classifier.

scikit-learn's bundled 8x8 digits (1797 images, 64 pixel features, 10
classes) split into training and test sets; a ReLU hidden layer, softmax
output and cross-entropy loss trained with Adam and early stopping on a
validation set.  Prints the learning curve, the test accuracy, a confusion
matrix, the throughput, and shows that a saved model predicts the same.

Needs scikit-learn (only for the data set and the split):
    pip install scikit-learn
Run:  python examples/digits_classifier.py
"""
import os
import sys
import tempfile
import time

import numpy as np

import bpcore

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError:
    sys.exit("this example needs scikit-learn: pip install scikit-learn")

X, y = load_digits(return_X_y=True)
X = X / 16.0                                   # pixels 0..16 -> 0..1
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, stratify=y, random_state=0)
X_fit, X_val, y_fit, y_val = train_test_split(
    X_train, y_train, test_size=0.15, stratify=y_train, random_state=0)
print(f"digits: {len(X_fit)} training, {len(X_val)} validation, "
      f"{len(X_test)} test images of {X.shape[1]} pixels")

net = bpcore.Network([64, 64, 10], activation="relu", output="softmax",
                     loss="cross_entropy", seed=0)
print(net, f"- {net.n_params} parameters")


def report(epoch, logs):
    if epoch % 10 == 0:
        print(f"  epoch {epoch:3d}  loss {logs['loss']:.4f}  "
              f"val_loss {logs['val_loss']:.4f}")


t0 = time.perf_counter()
hist = net.fit(X_fit, y_fit, epochs=200, batch_size=32,
               optimizer=bpcore.Adam(lr=3e-3),
               validation_data=(X_val, y_val),
               early_stopping=bpcore.EarlyStopping(patience=15),
               callbacks=[report])
seconds = time.perf_counter() - t0
print(f"{hist.epochs_run} epochs in {seconds:.2f} s "
      f"({hist.epochs_run * len(X_fit) / seconds:,.0f} samples/s); best epoch "
      f"{hist.best_epoch}, stopped early: {hist.stopped_early}")

proba = net.predict(X_test)                    # (m, 10) class probabilities
pred = proba.argmax(axis=1)
acc = np.mean(pred == y_test)
print(f"test accuracy: {acc:.4f}")
assert acc > 0.93, acc

confusion = np.zeros((10, 10), dtype=int)
np.add.at(confusion, (y_test, pred), 1)
print("confusion matrix (rows: true digit, columns: predicted):")
print("     " + " ".join(f"{d:3d}" for d in range(10)))
for d in range(10):
    print(f"  {d}: " + " ".join(f"{c:3d}" for c in confusion[d]))

# A model file carries the architecture, the weights and any metadata.
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "digits.safetensors")
    net.metadata["classes"] = ",".join(map(str, range(10)))
    net.save(path)
    again = bpcore.load(path)
    assert np.array_equal(again.predict(X_test), proba)
    print(f"saved and reloaded ({os.path.getsize(path):,} bytes): identical "
          f"predictions")
