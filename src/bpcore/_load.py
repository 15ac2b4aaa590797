"""Loads the C core with a short idle spin for libgomp's threads.

Imported first by ``bpcore/__init__.py``.  After a parallel call libgomp
keeps its threads spinning for 300,000 rounds before they sleep: about
10 ms of a core on our 2-core test machine, in which a BLAS call or any
other threaded work of the host program waits for that core (a 128x128
numpy product took 5-8 ms instead of 0.06 ms right after a two-thread
predict).  10,000 rounds (about 0.3 ms) still cover back-to-back calls
and the barrier waits inside a call; training and predict measured the
same within noise.  libgomp reads the setting once, when it is loaded
(with the core, unless something loaded it before).  The variable is
removed again at once, and a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT
wins.
"""
import os

IDLE_SPIN = "10000"

if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
    from bpcore import _core  # noqa: F401
else:
    os.environ["GOMP_SPINCOUNT"] = IDLE_SPIN
    try:
        from bpcore import _core  # noqa: F401
    finally:
        del os.environ["GOMP_SPINCOUNT"]
