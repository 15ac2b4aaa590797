/*
 * ab_predict.c - predict throughput of two builds of the C core, loaded
 * side by side in one process (ab_build.sh makes them) and alternated
 * round by round: C3 (784-256-128-10, relu, relu, softmax), float32, many
 * rows (60,000 by default, 188 MB of X: read from memory, as the
 * benchmarks' predict is), checked for NaN and inf as Python's predict
 * does (bp_predict_checked_f32).  Per round each build makes CALLS calls,
 * in alternating order; reported: each build's best call per round, the
 * median over rounds of new / old, and whether the outputs are the same
 * bits.
 *   bash benchmarks/micro/ab_build.sh HEAD /tmp/ab/old.so
 *   bash benchmarks/micro/ab_build.sh WORK /tmp/ab/new.so
 *   gcc -O2 -Icsrc/include benchmarks/micro/ab_predict.c -ldl -o /tmp/ab/pr
 *   /tmp/ab/pr /tmp/ab/old.so /tmp/ab/new.so THREADS [ROUNDS [ROWS [N0 N1 N2]]]
 * (the last three: the input and hidden widths, 784 256 128).  Built with
 * -DAB_F64, the same in float64 (bp_predict_checked_f64).
 */
#include "bpcore/bpcore.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#ifdef AB_F64
typedef double T;
#define PREDICT_NAME "bp_predict_checked_f64"
#else
typedef float T;
#define PREDICT_NAME "bp_predict_checked_f32"
#endif

#define CALLS 3

typedef void (*init_fn)(void);
typedef bp_status (*predict_fn)(T *, const T *, const T *,
                                const bp_arch *, int64_t, void *, int64_t,
                                int);
typedef bp_status (*layout_fn)(int64_t *, int64_t *, int64_t *, int64_t *,
                               const int64_t *, int64_t);
typedef bp_status (*work_fn)(int64_t *, const bp_arch *, int64_t, int);

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

int
main(int argc, char **argv)
{
    int64_t sizes[4] = {784, 256, 128, 10};
    int32_t acts[3] = {BP_ACT_RELU, BP_ACT_RELU, BP_ACT_SOFTMAX};
    bp_arch arch = {4, sizes, acts, BP_LOSS_CE, 0.0, NULL, 0};
    int64_t w_off[3], b_off[3], n_weights, n_params, need = 0, m = 60000;
    predict_fn predict[2];
    T *params, *x, *y[2];
    double *best[2], *ratio;
    void *work;
    int nt, rounds = 20, wins = 0;
    uint64_t s = 88172645463325252u;

    if (argc < 4) {
        fprintf(stderr, "usage: %s OLD.so NEW.so THREADS [ROUNDS [ROWS [N0 N1 N2]]]\n",
                argv[0]);
        return 2;
    }
    nt = atoi(argv[3]);
    if (argc > 4) {
        rounds = atoi(argv[4]);
    }
    if (argc > 5) {
        m = atol(argv[5]);
    }
    if (argc > 8) {
        sizes[0] = atol(argv[6]);
        sizes[1] = atol(argv[7]);
        sizes[2] = atol(argv[8]);
    }
    for (int v = 0; v < 2; v++) {
        void *h = dlopen(argv[1 + v], RTLD_NOW | RTLD_LOCAL);
        int64_t w;
        if (h == NULL) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        ((init_fn)dlsym(h, "bp_init"))();
        predict[v] = (predict_fn)dlsym(h, PREDICT_NAME);
        if (v == 0 && ((layout_fn)dlsym(h, "bp_layout"))(
                          w_off, b_off, &n_weights, &n_params, sizes, 4) !=
                          BP_OK) {
            return 1;
        }
        if (((work_fn)dlsym(h, "bp_predict_workspace_size"))(&w, &arch, m,
                                                             nt) != BP_OK) {
            return 1;
        }
        need = w > need ? w : need;
    }
    params = aligned_alloc(64, (size_t)(n_params + 8) / 8 * 64);
    /* X on 2 MB pages where the kernel allows, as numpy asks for arrays
     * of 4 MB or more */
    x = aligned_alloc(1 << 21, ((size_t)m * sizes[0] * sizeof(T) +
                                (1 << 21) - 1) >> 21 << 21);
    if (x != NULL) {
        madvise(x, ((size_t)m * sizes[0] * sizeof(T) + (1 << 21) - 1) >>
                       21 << 21,
                MADV_HUGEPAGE);
    }
    work = aligned_alloc(64, (size_t)(need + 63) / 64 * 64);
    for (int v = 0; v < 2; v++) {
        y[v] = aligned_alloc(64, (size_t)(m * 10 + 8) / 8 * 64);
        best[v] = malloc((size_t)rounds * sizeof(double));
    }
    ratio = malloc((size_t)rounds * sizeof(double));
    if (params == NULL || x == NULL || work == NULL || y[0] == NULL ||
            y[1] == NULL || ratio == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < n_params; i++) {
        params[i] = (T)0.01 * (T)((i * 7) % 13 - 6);
    }
    for (int64_t i = 0; i < m * sizes[0]; i++) {  /* xorshift, in [-1, 1) */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (T)(s >> 40) / (T)(1 << 23) - (T)1;
    }
    for (int r = 0; r < rounds; r++) {
        for (int q = 0; q < 2; q++) {
            int v = r % 2 == 0 ? q : 1 - q;  /* old first in even rounds */
            best[v][r] = 1e30;
            for (int i = 0; i < CALLS; i++) {
                double t0 = now(), t;
                if (predict[v](y[v], x, params, &arch, m, work, need, nt) !=
                        BP_OK) {
                    return 1;
                }
                t = now() - t0;
                best[v][r] = t < best[v][r] ? t : best[v][r];
            }
        }
        ratio[r] = best[1][r] / best[0][r];
        wins += best[1][r] < best[0][r];
    }
    for (int v = 0; v < 2; v++) {
        printf("%s best call per round, ms:", v == 0 ? "old" : "new");
        for (int r = 0; r < rounds; r++) {
            printf(" %.1f", best[v][r] * 1e3);
        }
        printf("\n");
    }
    qsort(ratio, (size_t)rounds, sizeof(double), by_value);
    printf("new / old time: median %.3f (%.3f-%.3f); new faster in %d of %d "
           "rounds; outputs %s\n",
           ratio[rounds / 2], ratio[0], ratio[rounds - 1], wins, rounds,
           memcmp(y[0], y[1], (size_t)m * 10 * sizeof(T)) == 0
               ? "the same bits"
               : "DIFFER");
    return 0;
}
