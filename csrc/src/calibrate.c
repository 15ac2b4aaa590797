/*
 * calibrate.c - what a team of threads costs on this host, measured once
 * per process, and the choice between one thread and a team (team_for).
 *
 * A team pays at each synchronisation: the barrier, and the cache lines
 * that one core wrote and the other must now read.  Both depend on the
 * host (core-to-core latency, the hypervisor, how the cores are shared),
 * so they are measured, not assumed: the calibration chain (net/team.h) is
 * a run of small products, each reading the whole output of the one
 * before, shared by a team exactly as training shares a layer.  Its step
 * on one thread gives the kernel's rate on small products; on a team, the
 * excess over a perfect split is the cost of the step's synchronisation.  Measured at the first call that could use a team
 * (a few hundred small products), then cached for the process.
 *
 * BPCORE_TEAM=always (read at the first choice) turns the choice off: any work
 * above BP_PARALLEL_MIN_FLOPS runs on the threads asked for.  The tests use
 * it to run the team code paths on small problems.
 */
#define _GNU_SOURCE  /* sched_getcpu, sched_getaffinity */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "kernels.h"

/* Team sizes measured; larger teams use the largest one's cost. */
#define CAL_MAX_TEAM 8
/* Steps per timed run, and runs (the best counts): short runs, so that on
 * a host whose other core is busy now and then some runs are undisturbed. */
#define CAL_REPS 16
#define CAL_TRIALS 6
/* The team's cost is measured again when its last measurement is older
 * than this (seconds): conditions change (another process takes a core,
 * then leaves), and a stale cost keeps the wrong choice. */
#define CAL_MAX_AGE 30.0
/* A new team's threads can start on the CPU of the thread that made them
 * and be moved by the scheduler only later; timed then, the chain measures
 * two threads taking turns on one CPU, a cost many times a real team's.
 * The calibration waits (CAL_SPREAD_WAIT_NS per try, at most
 * CAL_SPREAD_TRIES tries) for the team to be on distinct CPUs, and a cost
 * measured while it was not is measured again after CAL_RETRY_AGE s. */
#define CAL_SPREAD_TRIES 50
#define CAL_SPREAD_WAIT_NS 1000000L
#define CAL_RETRY_AGE 1.0
/* A team must beat one thread by this factor to be chosen. */
#define CAL_MARGIN 0.9

static pthread_mutex_t cal_lock = PTHREAD_MUTEX_INITIALIZER;
static double step_one[2];                /* s per chain step, f32, f64 */
static double sync_cost[CAL_MAX_TEAM + 1]; /* s per synchronisation */
static double sync_when[CAL_MAX_TEAM + 1]; /* cal_now() of that measure */
static int team_always = -1;

double
cal_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int
always_team(void)
{
    if (team_always < 0) {
        const char *v = getenv("BPCORE_TEAM");
        team_always = v != NULL && strcmp(v, "always") == 0;
    }
    return team_always;
}

/* Whether the t threads of a team are on t distinct CPUs (or on as many
 * as the process may use, if fewer).  True where that cannot be known. */
static int
team_spread(int t)
{
#if defined(_OPENMP) && defined(__linux__)
    int cpu[CAL_MAX_TEAM], distinct = 0, avail = t;
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) {
        avail = CPU_COUNT(&mask);
    }
    for (int i = 0; i < t; i++) {
        cpu[i] = -1;
    }
#pragma omp parallel num_threads(t)
    {
        int id = omp_get_thread_num();
        if (id < t) {
            cpu[id] = sched_getcpu();
        }
    }
    for (int i = 0; i < t; i++) {
        int seen = cpu[i] < 0;
        for (int j = 0; j < i && !seen; j++) {
            seen = cpu[j] == cpu[i];
        }
        distinct += !seen;
    }
    return distinct >= (t < avail ? t : avail);
#else
    (void)t;
    return 1;
#endif
}

/* Wait, a try at a time, for a team of t to be spread; whether it is. */
static int
await_spread(int t)
{
    struct timespec wait = {0, CAL_SPREAD_WAIT_NS};
    for (int i = 0; i < CAL_SPREAD_TRIES; i++) {
        if (team_spread(t)) {
            return 1;
        }
        nanosleep(&wait, NULL);
    }
    return team_spread(t);
}

/* Measure what is missing for a team of t; 0 on success. */
static int
measure(int t)
{
    const kernel_table *k = kernels();
    if (step_one[0] <= 0.0) {
        step_one[0] = k->cal_chain_f32(1, CAL_REPS, CAL_TRIALS);
        step_one[1] = k->cal_chain_f64(1, CAL_REPS, CAL_TRIALS);
        if (step_one[0] <= 0.0 || step_one[1] <= 0.0) {
            step_one[0] = step_one[1] = 0.0;
            return -1;
        }
    }
    if (sync_cost[t] <= 0.0 || cal_now() - sync_when[t] > CAL_MAX_AGE) {
        int spread = await_spread(t);
        double step_t = k->cal_chain_f32(t, CAL_REPS, CAL_TRIALS);
        double excess = step_t - step_one[0] / t;
        if (step_t <= 0.0) {
            return -1;
        }
        spread = spread && team_spread(t);
        /* one synchronisation per step; never zero, so it stays measured */
        sync_cost[t] = excess > 1e-9 ? excess : 1e-9;
        sync_when[t] = cal_now();
        if (!spread) {
            sync_when[t] -= CAL_MAX_AGE - CAL_RETRY_AGE;
        }
    }
    return 0;
}

int
bp_team_costs(int nt, double *step_f32, double *step_f64, double *sync)
{
    int t = nt < CAL_MAX_TEAM ? nt : CAL_MAX_TEAM, ok;
    if (t < 2) {
        return -1;
    }
    pthread_mutex_lock(&cal_lock);
    ok = measure(t);
    *step_f32 = step_one[0];
    *step_f64 = step_one[1];
    *sync = sync_cost[t];
    pthread_mutex_unlock(&cal_lock);
    return ok;
}

int
team_for(int nt, double flops, double syncs, int f64)
{
    double s32, s64, sync, t1, tn;
    if (nt <= 1 || flops < BP_PARALLEL_MIN_FLOPS) {
        return 1;
    }
    if (always_team()) {
        return nt;
    }
    if (bp_team_costs(nt, &s32, &s64, &sync) != 0) {
        return 1;  /* out of memory for the chain: one thread is safe */
    }
    /* the chain's step: 2 CAL_M CAL_N^2 flops and CAL_M CAL_N compares */
    t1 = flops * (f64 ? s64 : s32) / (2.0 * CAL_M * CAL_N * CAL_N);
    tn = t1 / nt + syncs * sync;
    return tn < CAL_MARGIN * t1 ? nt : 1;
}

int
bp_team_forced(void)
{
    return always_team();
}

int
bp_team_size(int n_threads, double flops, double syncs, int f64)
{
    return team_for(resolve_threads(n_threads), flops, syncs, f64);
}

double
bp_train_syncs(const bp_arch *arch, int64_t batch, int f64, int cut)
{
    return train_syncs(arch, batch, f64 ? 8 : 4, cut);
}

int
bp_train_cut(const bp_arch *arch, int64_t batch, int n_threads, int f64,
             int *both)
{
    int64_t esize = f64 ? 8 : 4;
    int nt = n_threads > 1 ? n_threads : 2;
    if (both != NULL) {
        *both = train_samples_ok(arch, batch, nt) &&
                arch_weights(arch) * (double)esize <= SAMPLES_RACE_BYTES;
    }
    return train_by_samples(arch, batch, nt, esize, BP_CUT_AUTO)
               ? BP_CUT_SAMPLES
               : BP_CUT_COLUMNS;
}
