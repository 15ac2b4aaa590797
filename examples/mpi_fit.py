"""Data-parallel training over MPI.

    pip install ".[mpi]"
    mpiexec -n 2 python examples/mpi_fit.py

Every rank holds its own rows (here: a slice of one synthetic data set);
the network trains on all of them as if they were in one process, and every
rank ends with the same parameters.  Rank 0 prints and saves.
"""
import hashlib
import os

import numpy as np
from mpi4py import MPI

import bpcore

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()

# the whole data set, then this rank's share (rank-major: rank 0 first)
rng = np.random.default_rng(0)
X = rng.normal(size=(4000, 8))
y = (X[:, 0] * X[:, 1] + np.sin(X[:, 2]) > 0).astype(np.int64)
rows = np.array_split(np.arange(len(X)), size)[rank]
X_local, y_local = X[rows], y[rows]
Xv, yv = X_local[:100], y_local[:100]          # each rank's validation rows

net = bpcore.Network([8, 32, 32, 2], activation="relu", output="softmax",
                     loss="cross_entropy", seed=0)
hist = net.fit(X_local[100:], y_local[100:], epochs=20, batch_size=64,
               optimizer=bpcore.Adam(lr=0.01), validation_data=(Xv, yv),
               early_stopping=bpcore.EarlyStopping(patience=3),
               comm=comm)

digest = hashlib.sha256(net.params.tobytes()).hexdigest()[:16]
digests = comm.gather(digest, root=0)
acc = float(np.mean(net.predict(X_local).argmax(axis=1) == y_local))
accs = comm.gather(acc, root=0)
if rank == 0:
    assert digests is not None and accs is not None  # gathered on rank 0
    print(f"{size} rank(s): {hist.epochs_run} epochs, loss "
          f"{hist.loss[-1]:.4f}, val_loss {hist.val_loss[-1]:.4f}")
    print(f"local accuracies {[round(a, 3) for a in accs]}; params hash "
          f"on every rank {digests} (all equal: {len(set(digests)) == 1})")
    assert len(set(digests)) == 1 and min(accs) > 0.85
    path = os.path.abspath("mpi_model.safetensors")
    net.save(path)
    print(f"saved {path}")
