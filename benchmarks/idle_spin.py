"""CPU burnt by bpcore's OpenMP threads after a call returns (idle spin).

    python benchmarks/idle_spin.py            # one child per setting

Each setting runs in a fresh interpreter (libgomp reads its environment
once, at load): 20 two-thread predicts, each followed by 50 ms in which the
main thread sleeps; the process CPU time used during each sleep is what
libgomp's workers burn spinning before they block.  Printed: which libgomp
is mapped (the wheel's hashed copy in bpcore.libs/, or the system's), and
the median and max CPU ms per call for bpcore's default (GOMP_SPINCOUNT
10000, set by bpcore/_load.py), libgomp's own default (300000, set
explicitly) and OMP_WAIT_POLICY=passive (no spin).
"""
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, statistics, time
import numpy as np
import bpcore
X = np.random.default_rng(0).normal(size=(4096, 64)).astype(np.float32)
net = bpcore.Network([64, 256, 256, 10], seed=0)
gomp = sorted({l.split()[-1] for l in open("/proc/self/maps")
               if "libgomp" in l})
net.predict(X, n_threads=2)
burnt = []
for _ in range(20):
    net.predict(X, n_threads=2)
    c0 = time.process_time()
    time.sleep(0.05)
    burnt.append((time.process_time() - c0) * 1e3)
print(json.dumps({"gomp": gomp, "median_ms": statistics.median(burnt),
                  "max_ms": max(burnt)}))
"""

SETTINGS = [
    ("bpcore default (GOMP_SPINCOUNT=10000 via _load.py)", {}),
    ("GOMP_SPINCOUNT=300000 (libgomp's default)", {"GOMP_SPINCOUNT": "300000"}),
    ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}),
]


def main():
    base = {k: v for k, v in os.environ.items()
            if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    for name, extra in SETTINGS:
        r = subprocess.run([sys.executable, "-c", CHILD], env={**base, **extra},
                           capture_output=True, text=True, check=True,
                           cwd="/")
        out = json.loads(r.stdout)
        print(f"{name:52s} median {out['median_ms']:6.2f} ms  "
              f"max {out['max_ms']:6.2f} ms  libgomp: {', '.join(out['gomp'])}")


if __name__ == "__main__":
    main()
