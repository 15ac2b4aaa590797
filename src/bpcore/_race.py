"""The thread count of fit, and a team's cut of a batch, chosen by
measuring them while training.

Results never depend on the thread count or the cut (see
docs/ARCHITECTURE.md), so fit may change them between two C calls at no
cost but time.  A team of threads wins when a batch has enough work between
two synchronisations; it loses on small batches, where the barriers and the
cache lines that cross between cores cost more than the split saves, and it
loses badly when another process holds a core (a barrier then waits for a
thread that is not running).  The C core predicts the better choice from a
cost of the team it measured once (calibrate.c); this class checks the
prediction on the network being trained, in the conditions of the moment.

The candidates are one thread and the team; where a batch may be cut either
way (the C core's bp_train_cut: enough rows per thread and weights of at
most a couple of MB), the team with each cut, by samples and by columns.
Which cut is faster depends on the host's L2 and on how its cores share
lines (docs/perf-notes.md, "Training cut by samples"), so the C core's rule,
tuned on one host, is only where the race starts.

Between ordinary chunks of batches (tens of milliseconds each) on the
current choice, a short probe of a few milliseconds runs on another
candidate (one not yet timed, else the one timed longest ago); the faster
per batch is kept.  A probe starts with one batch that is not timed:
the first batch on a team that has been idle pays for waking the other
thread and for its cold caches (55-65 us on the Zen 4 host, two batches'
worth of C2's 30 us), which spread over a 4 ms probe made a team look
about 1.5% slower than it is.  The team must beat one thread by MARGIN to be
chosen, and a cut the team's current one by MARGIN, so more threads never
cost more than noise and close choices do not take turns.  Probes come
FIRST_INTERVAL seconds apart, and the interval doubles (up to
MAX_INTERVAL) each time a probe confirms the choice, so on a steady host
they cost well under one per cent; a change of choice starts the interval
again.  Decisions and the probe schedule are kept for the process, per
network shape, batch size and thread count, so the next fit starts from the
last choice and probes when the last fit's schedule says, not at once: a
short fit called again and again (tens of milliseconds each) would
otherwise spend a probe on the slower choice in every call.  A chunk on the
current choice that runs slower per batch than another candidate did at its
last probe brings that probe forward: the host has changed.
"""
import time

from bpcore import _core

# (layer sizes, dtype, batch, threads) -> the candidate last chosen
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
    """Chooses the threads and the cut of each C call of a fit.

    A candidate is a pair (threads, cut): (1, CUT_AUTO) for one thread,
    (nt, cut) for the team with a cut of _core (CUT_AUTO where the batch
    has only one).  syncs: the team's synchronisations per batch, a number
    (the C core's rule), or a dict {cut: syncs} of the cuts to race, the
    rule's first.
    """

    PROBE_SECONDS = 0.004
    FIRST_INTERVAL = 0.25
    MAX_INTERVAL = 8.0
    MARGIN = 0.97

    def __init__(self, nt, flops, syncs, f64, key):
        self.nt = nt
        self.key = key
        if not isinstance(syncs, dict):
            syncs = {_core.CUT_AUTO: syncs}
        self.one = (1, _core.CUT_AUTO)
        self.teams = [(nt, cut) for cut in syncs]
        # the C core's cost model (calibrate.c): seconds per batch on one
        # thread and on the team, from the host's measured team costs
        c = _core.team_costs(nt)
        one = flops * c["step_f64" if f64 else "step_f32"] / CHAIN_FLOPS
        self.predicted = {self.one: one}
        for cand in self.teams:
            self.predicted[cand] = one / nt + syncs[cand[1]] * c["sync"]
        rule = self.teams[0]
        first = rule if _core.team_size(nt, flops, syncs[rule[1]], f64) > 1 \
            else self.one
        self.current = _CHOSEN.get(key, first)
        if self.current not in self.predicted:
            self.current = first
        # the team's cut when the team is chosen next
        self.team = self.current if self.current != self.one else rule
        self.per_batch = {}      # candidate -> seconds per batch, last seen
        self.timed_at = {}       # candidate -> when per_batch was set
        self.seen = set()        # candidates whose first chunk has run
        self.interval, self.resume = _SCHEDULE.get(
            key, (self.FIRST_INTERVAL, None))
        self.next_probe = None   # perf_counter() time of the next probe
        self.due = None          # the candidate the next probe must time
        self.probing = None      # the candidate of the probe in flight
        self.warming = False     # whether that probe's untimed batch runs

    def _others(self):
        return [c for c in self.predicted if c != self.current]

    def _to_probe(self):
        """The candidate of the next probe: the one asked for, else one not
        yet timed, else the one timed longest ago."""
        others = self._others()
        if self.due in others:
            return self.due
        return min(others, key=lambda c: self.timed_at.get(c, -1.0))

    def threads(self, chunk):
        """(candidate for the C call, batches in it, whether it is a probe)
        for a chunk of `chunk` batches on the current choice; the C call
        takes the candidate's threads exactly (as a negative count) and its
        cut."""
        now = time.perf_counter()
        if self.probing is not None and not self.warming:
            # the timed part of the probe, after its untimed batch, of
            # about PROBE_SECONDS at the time per batch expected (a team on
            # a busy host may be 50 times slower than the model says, and
            # the probe must stay short then too)
            est = self._estimate(self.probing)
            n = max(1, int(self.PROBE_SECONDS / max(est, 1e-9)))
            return self.probing, min(n, chunk), True
        if (self.next_probe is not None and now >= self.next_probe
                and self.current in self.per_batch):
            self.probing = self._to_probe()
            self.due = None
            self.warming = True
            return self.probing, 1, True
        self.probing = None
        self.warming = False
        return self.current, chunk, False

    def _estimate(self, cand):
        """Seconds per batch expected of cand: measured, or a measured
        candidate's time (the other cut of the team if it was timed, else
        the current choice's) scaled by the cost model."""
        if cand in self.per_batch:
            return self.per_batch[cand]
        ref = next((c for c in self.per_batch if c[0] == cand[0]),
                   self.current)
        return (self.per_batch[ref] * self.predicted[cand] /
                self.predicted[ref])

    def _best(self):
        """The choice after a probe: the team's best cut (another cut must
        beat the current one by MARGIN), then the team if it beats one
        thread by MARGIN."""
        pb = self.per_batch
        team = self.team if self.team in pb else None
        for cand in self.teams:
            if cand in pb and (team is None or
                               pb[cand] < self.MARGIN * pb[team]):
                team = cand
        if team is None or self.one not in pb:
            return self.current
        self.team = team
        return team if pb[team] < self.MARGIN * pb[self.one] else self.one

    def record(self, cand, n, dt):
        """What a C call on candidate cand and n batches took."""
        if self.warming:
            self.warming = False  # the probe's first batch: not timed
            self.seen.add(cand)
            return
        now = time.perf_counter()
        if cand not in self.seen:
            self.seen.add(cand)
            if self.probing is None:
                # warm-up of the choice: not measured; probe soon, or when
                # an earlier fit's schedule says
                self.next_probe = now if self.resume is None else self.resume
                return
        self.per_batch[cand] = dt / n
        self.timed_at[cand] = now
        if self.probing is None:
            timed = [c for c in self._others() if c in self.per_batch]
            if self.next_probe is None:
                self.next_probe = now + self.interval
            elif timed:
                fastest = min(timed, key=self.per_batch.get)
                if dt / n > self.per_batch[fastest]:
                    # now slower than another choice was at its last
                    # probe: the host changed (a core taken, or given
                    # back), so probe it at once rather than when the
                    # schedule says (up to MAX_INTERVAL away)
                    self.next_probe = now
                    self.due = fastest
            return
        self.probing = None
        best = self._best()
        if best == self.current:
            self.interval = min(2 * self.interval, self.MAX_INTERVAL)
        else:
            self.current = best
            self.interval = self.FIRST_INTERVAL
        _CHOSEN[self.key] = best
        self.next_probe = time.perf_counter() + self.interval
        _SCHEDULE[self.key] = (self.interval, self.next_probe)
