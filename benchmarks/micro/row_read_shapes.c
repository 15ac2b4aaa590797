/*
 * row_read_shapes.c - one row x through a float32 layer W (k, n) row-major,
 * y = x W, the way few-row predict computes it: one FMA chain per 16
 * columns, W read once, each column summed over the rows of W in order.
 * What is timed (one thread unless said, W warm in cache, best of 7 x 3,000
 * calls):
 *   1. 400 KB of W read as contiguous rows (784 x 128) and as half of each
 *      row of a 784 x 256 W (a thread's share when the columns are split);
 *   2. a pass of 256 columns (16 sums) over 512 x 256 and 784 x 256, the
 *      row loop as written and unrolled by two into two read streams (the
 *      shape GCC's unroll-and-jam gives it at -O3);
 *   3. C3's first layer (784 x 256) on two threads, split by columns (128
 *      each, every row read half) and by the depth blocks of 256 rows of
 *      the kernel (thread 0 block 0 and half the columns of block 1, thread
 *      1 the rest; whole rows where a thread has whole blocks).
 * docs/perf-notes.md ("One-row passes: the loop's shape") quotes it:
 *   gcc -O3 -mavx512f -mfma -fopenmp benchmarks/micro/row_read_shapes.c \
 *       -o /tmp/rows && /tmp/rows
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

/* y[0, 16 NV) = x W[:, 0, 16 NV), W with row stride ld; UNROLL 1 or 2 */
#define PASS(NAME, NV, UNROLL)                                               \
    static __attribute__((noinline, noclone)) void NAME(                     \
        float *y, const float *x, const float *W, int k, int ld)            \
    {                                                                        \
        __m512 a[NV];                                                        \
        for (int v = 0; v < NV; v++) {                                       \
            a[v] = _mm512_setzero_ps();                                      \
        }                                                                    \
        _Pragma(UNROLL) for (int p = 0; p < k; p++)                          \
        {                                                                    \
            __m512 xv = _mm512_set1_ps(x[p]);                                \
            const float *w = W + (size_t)p * (size_t)ld;                     \
            _Pragma("GCC unroll 16") for (int v = 0; v < NV; v++)            \
            {                                                                \
                a[v] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(w + 16 * v),      \
                                       a[v]);                                \
            }                                                                \
        }                                                                    \
        for (int v = 0; v < NV; v++) {                                       \
            _mm512_storeu_ps(y + 16 * v, a[v]);                              \
        }                                                                    \
    }
PASS(pass8, 8, "GCC unroll 1")
PASS(pass16, 16, "GCC unroll 1")
PASS(pass16_two_streams, 16, "GCC unroll 2")

typedef void (*pass_fn)(float *, const float *, const float *, int, int);

static double
best_us(pass_fn f, float *y, const float *x, const float *W, int k, int ld)
{
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        double t = now();
        for (int i = 0; i < 3000; i++) {
            f(y, x, W, k, ld);
        }
        t = (now() - t) / 3000;
        best = t < best ? t : best;
    }
    return best * 1e6;
}

static float part[4][256], out[256];

/* thread t's share of 784 x 256, split by columns */
static void
by_columns(const float *x, const float *W, int t)
{
    pass8(out + 128 * t, x, W + 128 * t, 784, 256);
}

/* thread t's share of 784 x 256, split by depth blocks of 256 rows */
static void
by_blocks(const float *x, const float *W, int t)
{
    if (t == 0) {
        pass16(part[0], x, W, 256, 256);
        pass8(part[1], x + 256, W + 256 * 256, 256, 256);
    } else {
        pass8(part[1] + 128, x + 256, W + 256 * 256 + 128, 256, 256);
        pass16(part[2], x + 512, W + 512 * 256, 256, 256);
        pass16(part[3], x + 768, W + 768 * 256, 16, 256);
    }
}

static double
region_us(void (*share)(const float *, const float *, int), const float *x,
          const float *W)
{
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        double t = now();
        for (int i = 0; i < 3000; i++) {
#pragma omp parallel num_threads(2)
            share(x, W, omp_get_thread_num());
        }
        t = (now() - t) / 3000;
        best = t < best ? t : best;
    }
    return best * 1e6;
}

int
main(void)
{
    int rows = 1024;
    float *W = aligned_alloc(64, (size_t)rows * 256 * 4);
    float *x = aligned_alloc(64, (size_t)rows * 4);
    float y[256];
    if (W == NULL || x == NULL) {
        return 1;
    }
    for (int i = 0; i < rows * 256; i++) {
        W[i] = 0.001f * (float)(i % 17);
    }
    for (int i = 0; i < rows; i++) {
        x[i] = 0.01f * (float)(i % 5);
    }
    for (int round = 0; round < 2; round++) {
        printf("400 KB: contiguous rows (784 x 128) %.2f us, half of each "
               "row (784 x 256) %.2f us\n",
               best_us(pass8, y, x, W, 784, 128),
               best_us(pass8, y, x, W, 784, 256));
        printf("pass of 256 columns, one stream / two: 512 x 256 %.2f / "
               "%.2f us, 784 x 256 %.2f / %.2f us\n",
               best_us(pass16, y, x, W, 512, 256),
               best_us(pass16_two_streams, y, x, W, 512, 256),
               best_us(pass16, y, x, W, 784, 256),
               best_us(pass16_two_streams, y, x, W, 784, 256));
        printf("784 x 256 on 2 threads: by columns %.2f us, by depth "
               "blocks %.2f us\n",
               region_us(by_columns, x, W), region_us(by_blocks, x, W));
    }
    free(W);
    free(x);
    return 0;
}
