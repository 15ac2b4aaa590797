/*
 * ab_fit.c - training batches of a float32 MLP (relu hidden layers,
 * softmax output, cross-entropy on class labels, plain SGD; C4 by
 * default) by bp_train_f32 of two builds of the C core, loaded side by
 * side in one process (ab_build.sh makes them) and alternated: each round
 * runs 8 batches on each build, in alternating order, and times each
 * batch.  Prints, per build, the median batch time over all rounds and
 * the median over rounds of new / old (each round's medians), and whether
 * the two builds' parameters end with the same bits (each build trains
 * its own copy from the same start on the same batches).  Threads: 2
 * means exactly two (bp_train's n_threads -2), as fit's race with the
 * team chosen.
 *   bash benchmarks/micro/ab_build.sh HEAD /tmp/ab/old.so
 *   bash benchmarks/micro/ab_build.sh WORK /tmp/ab/new.so
 *   gcc -O2 -Icsrc/include benchmarks/micro/ab_fit.c -ldl -lm -o /tmp/ab/fit
 *   /tmp/ab/fit /tmp/ab/old.so /tmp/ab/new.so 2 [rounds [batch [sizes...]]]
 * e.g. sizes 784 256 128 10 for C3 (with batch 128).  Built with
 * -DAB_F64, the same in float64 (bp_train_f64).
 */
#include "bpcore/bpcore.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef AB_F64
typedef double T;
#define TRAIN_NAME "bp_train_f64"
#else
typedef float T;
#define TRAIN_NAME "bp_train_f32"
#endif

#define PER_ROUND 8
#define MAX_LAYERS 16

typedef void (*init_fn)(void);
typedef bp_status (*train_fn)(T *, T *, bp_optim *, double *, double *,
                              int64_t *, const T *, const T *,
                              const int64_t *, const T *,
                              const int64_t *, int64_t, int64_t, int64_t,
                              int64_t, const bp_arch *, void *, int64_t, int,
                              int);
typedef bp_status (*layout_fn)(int64_t *, int64_t *, int64_t *, int64_t *,
                               const int64_t *, int64_t);
typedef bp_status (*work_fn)(int64_t *, const bp_arch *, int64_t, int, int);

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int
by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), by_value);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int
main(int argc, char **argv)
{
    int64_t sizes[MAX_LAYERS] = {1024, 1024, 1024, 1024, 10};
    int32_t acts[MAX_LAYERS];
    int64_t n_layers = 5, batch = 256, n_params = 0, n_weights, need = 0;
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS], m, *labels;
    int rounds = 30, nt;
    train_fn train[2];
    T *params[2], *grad[2], *X;
    void *work[2];
    double *all[2], *ratio;

    if (argc < 4) {
        fprintf(stderr, "usage: %s OLD.so NEW.so THREADS [ROUNDS [BATCH "
                        "[SIZES...]]]\n", argv[0]);
        return 2;
    }
    nt = atoi(argv[3]);
    if (argc > 4) {
        rounds = atoi(argv[4]);
    }
    if (argc > 5) {
        batch = atoi(argv[5]);
    }
    if (argc > 7) {
        n_layers = argc - 6 < MAX_LAYERS ? argc - 6 : MAX_LAYERS;
        for (int64_t k = 0; k < n_layers; k++) {
            sizes[k] = atoi(argv[6 + k]);
        }
    }
    for (int64_t k = 0; k + 1 < n_layers; k++) {
        acts[k] = k + 2 < n_layers ? BP_ACT_RELU : BP_ACT_SOFTMAX;
    }
    bp_arch arch = {n_layers, sizes, acts, BP_LOSS_CE, 0.0, NULL, 0};
    m = batch * PER_ROUND;
    for (int v = 0; v < 2; v++) {
        void *h = dlopen(argv[1 + v], RTLD_NOW | RTLD_LOCAL);
        int64_t w;
        if (h == NULL) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        ((init_fn)dlsym(h, "bp_init"))();
        train[v] = (train_fn)dlsym(h, TRAIN_NAME);
        if (v == 0 && ((layout_fn)dlsym(h, "bp_layout"))(
                          w_off, b_off, &n_weights, &n_params, sizes,
                          n_layers) != BP_OK) {
            return 1;
        }
        if (((work_fn)dlsym(h, "bp_train_workspace_bytes"))(
                &w, &arch, batch, nt, sizeof(T) == 8) != BP_OK) {
            return 1;
        }
        need = w > need ? w : need;
    }
    X = aligned_alloc(64, (size_t)(m * sizes[0] + 16) * sizeof(T));
    labels = malloc((size_t)m * sizeof(int64_t));
    all[0] = malloc((size_t)rounds * PER_ROUND * sizeof(double));
    all[1] = malloc((size_t)rounds * PER_ROUND * sizeof(double));
    ratio = malloc((size_t)rounds * sizeof(double));
    if (X == NULL || labels == NULL || all[0] == NULL || all[1] == NULL ||
            ratio == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < m * sizes[0]; i++) {
        X[i] = (T)0.1 * (T)((i * 7) % 11 - 5);
    }
    for (int64_t i = 0; i < m; i++) {
        labels[i] = i % sizes[n_layers - 1];
    }
    for (int v = 0; v < 2; v++) {
        params[v] = aligned_alloc(64, (size_t)(n_params + 16) * sizeof(T));
        grad[v] = aligned_alloc(64, (size_t)(n_params + 16) * sizeof(T));
        work[v] = aligned_alloc(64, (size_t)(need + 63) / 64 * 64);
        if (params[v] == NULL || grad[v] == NULL || work[v] == NULL) {
            return 1;
        }
        for (int64_t i = 0; i < n_params; i++) {
            params[v][i] = (T)0.02 * (T)((i * 13) % 17 - 8) / (T)8;
        }
    }
    for (int r = -1; r < rounds; r++) {  /* round -1: warm-up, untimed */
        double med[2];
        for (int s = 0; s < 2; s++) {
            int v = r % 2 == 0 ? s : 1 - s;
            double t[PER_ROUND];
            for (int b = 0; b < PER_ROUND; b++) {
                bp_optim opt = {BP_OPT_SGD, 0, 1e-3, 0, 0, 0.9, 0.999, 1e-8,
                                0, NULL, NULL, 0};
                double loss = 0, wsum = 0, t0;
                int64_t done = 0;
                t0 = now();
                if (train[v](params[v], grad[v], &opt, &loss, &wsum, &done,
                             X, NULL, labels, NULL, NULL, m, batch, b, 1,
                             &arch, work[v], need, -nt,
                             BP_CUT_AUTO) != BP_OK) {
                    fprintf(stderr, TRAIN_NAME " failed\n");
                    return 1;
                }
                t[b] = now() - t0;
                if (r >= 0) {
                    all[v][r * PER_ROUND + b] = t[b];
                }
            }
            med[v] = median(t, PER_ROUND);
        }
        if (r >= 0) {
            ratio[r] = med[1] / med[0];
        }
    }
    double mid = median(ratio, rounds);  /* sorts ratio */
    double t_old = median(all[0], rounds * PER_ROUND);
    double t_new = median(all[1], rounds * PER_ROUND);
    printf("batch %lld, %d threads, %d rounds of %d batches each: median "
           "batch old %.3f ms, new %.3f ms; new/old by round: median %.3f "
           "(%.3f-%.3f); parameters %s\n",
           (long long)batch, nt, rounds, PER_ROUND, 1e3 * t_old, 1e3 * t_new,
           mid, ratio[0], ratio[rounds - 1],
           memcmp(params[0], params[1], (size_t)n_params * sizeof(T))
                   == 0 ? "the same bits" : "DIFFER");
    return 0;
}
