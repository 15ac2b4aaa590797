/*
 * ab_one_row.c - one row through an n0-n1-n2-10 float32 network (relu,
 * relu, softmax; C3 by default) by bp_predict_f32 of two builds of the C
 * core, loaded side by side in one process (ab_build.sh makes them) and
 * alternated round by round: per round and build, the median of 4,000
 * calls timed one by one.  Two processes run minutes apart on this
 * project's hosts differ by more than most changes to this path; two
 * builds alternated in one process, seconds apart, do not (the same build
 * loaded twice: within 1%).  docs/perf-notes.md ("The Xeon model 167,
 * sixth session") quotes it:
 *   bash benchmarks/micro/ab_build.sh HEAD /tmp/ab/old.so
 *   bash benchmarks/micro/ab_build.sh WORK /tmp/ab/new.so
 *   gcc -O2 -Icsrc/include benchmarks/micro/ab_one_row.c -ldl -o /tmp/ab/run
 *   /tmp/ab/run /tmp/ab/old.so /tmp/ab/new.so 2 [n1 n2]
 * (the last arguments: threads, then the hidden widths, 256 and 128).
 */
#include "bpcore/bpcore.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CALLS 4000
#define ROUNDS 10

typedef void (*init_fn)(void);
typedef bp_status (*predict_fn)(float *, const float *, const float *,
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
    int64_t w_off[3], b_off[3], n_weights, n_params, need = 0;
    predict_fn predict[2];
    float *params, *x, y[2][10];
    double med[2][ROUNDS], *t;
    void *work;
    int nt, wins = 0;

    if (argc < 4) {
        fprintf(stderr, "usage: %s OLD.so NEW.so THREADS [N1 N2]\n", argv[0]);
        return 2;
    }
    nt = atoi(argv[3]);
    if (argc > 5) {
        sizes[1] = atoi(argv[4]);
        sizes[2] = atoi(argv[5]);
    }
    for (int v = 0; v < 2; v++) {
        void *h = dlopen(argv[1 + v], RTLD_NOW | RTLD_LOCAL);
        int64_t w;
        if (h == NULL) {
            fprintf(stderr, "%s\n", dlerror());
            return 1;
        }
        ((init_fn)dlsym(h, "bp_init"))();
        predict[v] = (predict_fn)dlsym(h, "bp_predict_f32");
        if (v == 0 && ((layout_fn)dlsym(h, "bp_layout"))(
                          w_off, b_off, &n_weights, &n_params, sizes, 4) !=
                          BP_OK) {
            return 1;
        }
        if (((work_fn)dlsym(h, "bp_predict_workspace_size"))(&w, &arch, 1,
                                                             nt) != BP_OK) {
            return 1;
        }
        need = w > need ? w : need;
    }
    params = aligned_alloc(64, (size_t)(n_params + 16) / 16 * 64);
    x = aligned_alloc(64, (size_t)(sizes[0] + 16) / 16 * 64);
    work = aligned_alloc(64, (size_t)(need + 63) / 64 * 64);
    t = malloc(CALLS * sizeof(double));
    if (params == NULL || x == NULL || work == NULL || t == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < n_params; i++) {
        params[i] = 0.01f * (float)((i * 7) % 13 - 6);
    }
    for (int64_t i = 0; i < sizes[0]; i++) {
        x[i] = 0.1f * (float)(i % 5);
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (int s = 0; s < 2; s++) {
            int v = r % 2 == 0 ? s : 1 - s;  /* old first in even rounds */
            for (int i = 0; i < CALLS / 4; i++) {
                predict[v](y[v], x, params, &arch, 1, work, need, nt);
            }
            for (int i = 0; i < CALLS; i++) {
                double t0 = now();
                predict[v](y[v], x, params, &arch, 1, work, need, nt);
                t[i] = now() - t0;
            }
            qsort(t, CALLS, sizeof(double), by_value);
            med[v][r] = t[CALLS / 2] * 1e6;
        }
        wins += med[1][r] < med[0][r];
    }
    for (int v = 0; v < 2; v++) {
        printf("%s median per call, us:", v == 0 ? "old" : "new");
        for (int r = 0; r < ROUNDS; r++) {
            printf(" %.2f", med[v][r]);
        }
        printf("\n");
    }
    printf("new faster in %d of %d rounds; outputs %s\n", wins, ROUNDS,
           memcmp(y[0], y[1], sizeof y[0]) == 0 ? "the same bits"
                                                : "DIFFER");
    return 0;
}
