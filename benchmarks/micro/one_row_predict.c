/*
 * one_row_predict.c - one row through C3 (784-256-128-10, float32) by the
 * C core's public bp_predict_f32, on 1 and 2 threads, without Python:
 * best of 7 x 4,000 calls, three rounds.  docs/perf-notes.md ("The Xeon
 * model 167, second session") compares builds with it.  Build the static
 * library with CMake first:
 *   cmake -S csrc -B /tmp/bpc -DCMAKE_BUILD_TYPE=Release &&
 *   cmake --build /tmp/bpc --target bpcore_c &&
 *   gcc -O2 -fopenmp -Icsrc/include benchmarks/micro/one_row_predict.c \
 *       /tmp/bpc/libbpcore_c.a -lm -o /tmp/one_row && /tmp/one_row
 */
#include "bpcore/bpcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int
main(void)
{
    int64_t sizes[4] = {784, 256, 128, 10};
    int32_t acts[3] = {BP_ACT_RELU, BP_ACT_RELU, BP_ACT_SOFTMAX};
    bp_arch arch = {4, sizes, acts, BP_LOSS_CE, 0.0, NULL, 0};
    int64_t w_off[3], b_off[3], n_weights, n_params;
    float *params, *x, y[10];

    bp_init();
    if (bp_layout(w_off, b_off, &n_weights, &n_params, sizes, 4) != BP_OK) {
        return 1;
    }
    params = aligned_alloc(64, (size_t)(n_params + 16) / 16 * 64);
    x = aligned_alloc(64, 784 * sizeof(float));
    if (params == NULL || x == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < n_params; i++) {
        params[i] = 0.01f * (float)((i * 7) % 13 - 6);
    }
    for (int i = 0; i < 784; i++) {
        x[i] = 0.1f * (float)(i % 5);
    }
    for (int round = 0; round < 3; round++) {
        for (int nt = 1; nt <= 2; nt++) {
            int64_t need;
            void *work;
            double best = 1e30;
            if (bp_predict_workspace_size(&need, &arch, 1, nt) != BP_OK ||
                    (work = aligned_alloc(64, (size_t)(need + 63) / 64 * 64))
                        == NULL) {
                return 1;
            }
            for (int r = 0; r < 7; r++) {
                double t = now();
                for (int i = 0; i < 4000; i++) {
                    bp_predict_f32(y, x, params, &arch, 1, work, need, nt);
                }
                t = (now() - t) / 4000;
                best = t < best ? t : best;
            }
            printf("%d thread%s %.2f us   ", nt, nt > 1 ? "s" : "", best * 1e6);
            free(work);
        }
        printf("\n");
    }
    free(params);
    free(x);
    return 0;
}
