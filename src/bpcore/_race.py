"""The thread count of fit, chosen by measuring it while training.

Results never depend on the thread count (see docs/ARCHITECTURE.md), so
fit may change it between two C calls at no cost but time.  A team of
threads wins when a batch has enough work between two synchronisations;
it loses on small batches, where the barriers and the cache lines that
cross between cores cost more than the split saves, and it loses badly
when another process holds a core (a barrier then waits for a thread that
is not running).  The C core predicts the better choice from a cost of
the team it measured once (calibrate.c); this class checks the
prediction on the network being trained, in the conditions of the moment.

Between ordinary chunks of batches (tens of milliseconds each) on the
current choice, a short probe of a few milliseconds runs on the other; the
faster per batch is kept.  A probe starts with one batch that is not timed:
the first batch on a team that has been idle pays for waking the other
thread and for its cold caches (55-65 us on the Zen 4 host, two batches'
worth of C2's 30 us), which spread over a 4 ms probe made a team look
about 1.5% slower than it is.  The team must beat one thread by MARGIN to be
chosen, so more threads never cost more than noise.  Probes come
FIRST_INTERVAL seconds apart, and the interval doubles (up to
MAX_INTERVAL) each time a probe confirms the choice, so on a steady host
they cost well under one per cent; a change of choice starts the interval
again.  Decisions and the probe schedule are kept for the process, per
network shape, batch size and thread count, so the next fit starts from the
last choice and probes when the last fit's schedule says, not at once: a
short fit called again and again (tens of milliseconds each) would
otherwise spend a probe on the slower choice in every call.  A chunk on the
current choice that runs slower per batch than the other choice did at its
last probe brings the probe forward: the host has changed.
"""
import time

from bpcore import _core

# (layer sizes, dtype, batch, threads) -> the thread count last chosen
_CHOSEN = {}
# the same key -> (probe interval, perf_counter() time of the next probe)
_SCHEDULE = {}

# Work per batch (flops) below which the C core uses one thread whatever it
# is asked (BP_PARALLEL_MIN_FLOPS): nothing to choose.
MIN_TEAM_FLOPS = 400000.0

# Flops of one step of the C core's calibration chain (a 32 x 128 by
# 128 x 128 product; CAL_M, CAL_N in internal.h).
CHAIN_FLOPS = 2.0 * 32 * 128 * 128


class ThreadRace:
    """Chooses between nt threads and one for each C call of a fit."""

    PROBE_SECONDS = 0.004
    FIRST_INTERVAL = 0.25
    MAX_INTERVAL = 8.0
    MARGIN = 0.97

    def __init__(self, nt, flops, syncs, f64, key):
        self.nt = nt
        self.key = key
        # the C core's cost model (calibrate.c): seconds per batch on one
        # thread and on the team, from the host's measured team costs
        c = _core.team_costs(nt)
        one = flops * c["step_f64" if f64 else "step_f32"] / CHAIN_FLOPS
        self.predicted = {1: one, nt: one / nt + syncs * c["sync"]}
        predicted = _core.team_size(nt, flops, syncs, f64)
        self.current = _CHOSEN.get(key, predicted)
        self.per_batch = {}      # threads -> seconds per batch, last seen
        self.seen = set()        # candidates whose first chunk has run
        self.interval, self.resume = _SCHEDULE.get(
            key, (self.FIRST_INTERVAL, None))
        self.next_probe = None   # perf_counter() time of the next probe
        self.probing = None      # the candidate of the probe in flight
        self.warming = False     # whether that probe's untimed batch runs

    def _other(self):
        return 1 if self.current == self.nt else self.nt

    def threads(self, chunk):
        """(threads for the C call, batches in it, whether it is a probe)
        for a chunk of `chunk` batches on the current choice; the threads
        are exact (negative, as the C core takes a count chosen by the
        caller)."""
        now = time.perf_counter()
        if self.probing is not None and not self.warming:
            # the timed part of the probe, after its untimed batch; the
            # other's time per batch: measured, or this one's scaled by the
            # model (a team on a busy host may be 50 times slower, and the
            # probe must stay short then too)
            other = self.probing
            est = self.per_batch.get(other, self.per_batch[self.current] *
                                     self.predicted[other] /
                                     self.predicted[self.current])
            n = max(1, int(self.PROBE_SECONDS / max(est, 1e-9)))
            return -other, min(n, chunk), True
        if (self.next_probe is not None and now >= self.next_probe
                and self.current in self.per_batch):
            self.probing = self._other()
            self.warming = True
            return -self.probing, 1, True
        self.probing = None
        self.warming = False
        return -self.current, chunk, False

    def record(self, threads, n, dt):
        """What a C call on -threads threads and n batches took."""
        t = -threads
        if self.warming:
            self.warming = False  # the probe's first batch: not timed
            self.seen.add(t)
            return
        if t not in self.seen:
            self.seen.add(t)
            if self.probing is None:
                # warm-up of the choice: not measured; probe soon, or when
                # an earlier fit's schedule says
                self.next_probe = (time.perf_counter() if self.resume is None
                                   else self.resume)
                return
        self.per_batch[t] = dt / n
        if self.probing is None:
            other = self.per_batch.get(self._other())
            if self.next_probe is None:
                self.next_probe = time.perf_counter() + self.interval
            elif other is not None and dt / n > other:
                # now slower than the other choice was at its last probe:
                # the host changed (a core taken, or given back), so probe
                # at once rather than when the schedule says (up to
                # MAX_INTERVAL away)
                self.next_probe = time.perf_counter()
            return
        self.probing = None
        if self.nt in self.per_batch and 1 in self.per_batch:
            team = self.per_batch[self.nt] < self.MARGIN * self.per_batch[1]
            best = self.nt if team else 1
        else:
            best = self.current
        if best == self.current:
            self.interval = min(2 * self.interval, self.MAX_INTERVAL)
        else:
            self.current = best
            self.interval = self.FIRST_INTERVAL
        _CHOSEN[self.key] = best
        self.next_probe = time.perf_counter() + self.interval
        _SCHEDULE[self.key] = (self.interval, self.next_probe)
