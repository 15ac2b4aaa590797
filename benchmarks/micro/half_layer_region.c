/*
 * half_layer_region.c - one row through a 784x256 float32 layer, as
 * few-row predict computes it (one pass of 128 columns per half, eight
 * vector sums, W row-major), timed four ways: the whole layer on one
 * thread, one half alone, both halves in a 2-thread OpenMP region, and a
 * region in which only the worker computes its half.  docs/perf-notes.md
 * ("Alignment of the parameters, and fewer barriers for a few rows")
 * quotes it:
 *   gcc -O2 -mavx512f -fopenmp benchmarks/micro/half_layer_region.c \
 *       -o /tmp/half && /tmp/half
 */
#include <immintrin.h>
#include <omp.h>
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

/* y[j0, j0 + 128) = x W, W (k, n) row-major */
static void
half(float *y, const float *x, const float *W, int k, int n, int j0)
{
    __m512 a[8];
    for (int v = 0; v < 8; v++) {
        a[v] = _mm512_setzero_ps();
    }
    for (int p = 0; p < k; p++) {
        __m512 xv = _mm512_set1_ps(x[p]);
        const float *w = W + (size_t)p * (size_t)n + j0;
        for (int v = 0; v < 8; v++) {
            a[v] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w + 16 * v), a[v]);
        }
    }
    for (int v = 0; v < 8; v++) {
        _mm512_storeu_ps(y + j0 + 16 * v, a[v]);
    }
}

int
main(void)
{
    int k = 784, n = 256, calls = 200000;
    float *W = aligned_alloc(64, (size_t)k * (size_t)n * 4);
    float *x = aligned_alloc(64, (size_t)k * 4);
    float y[256];
    if (W == NULL || x == NULL) {
        return 1;
    }
    for (int i = 0; i < k * n; i++) {
        W[i] = 0.001f * (float)(i % 17);
    }
    for (int i = 0; i < k; i++) {
        x[i] = 0.01f * (float)(i % 5);
    }
    for (int r = 0; r < 3; r++) {
        double t = now(), whole, alone, both, worker;
        for (int i = 0; i < calls; i++) {
            half(y, x, W, k, n, 0);
            half(y, x, W, k, n, 128);
        }
        whole = (now() - t) / calls;
        t = now();
        for (int i = 0; i < calls; i++) {
            half(y, x, W, k, n, 0);
        }
        alone = (now() - t) / calls;
        t = now();
        for (int i = 0; i < calls; i++) {
#pragma omp parallel num_threads(2)
            half(y, x, W, k, n, 128 * omp_get_thread_num());
        }
        both = (now() - t) / calls;
        t = now();
        for (int i = 0; i < calls; i++) {
#pragma omp parallel num_threads(2)
            {
                if (omp_get_thread_num() == 1) {
                    half(y, x, W, k, n, 128);
                }
            }
        }
        worker = (now() - t) / calls;
        printf("whole layer, 1 thread %.2f us; one half alone %.2f us; "
               "2 threads, a half each %.2f us; region, worker's half only "
               "%.2f us\n", whole * 1e6, alone * 1e6, both * 1e6,
               worker * 1e6);
    }
    free(W);
    free(x);
    return 0;
}
