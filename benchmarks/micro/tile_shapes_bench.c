/*
 * tile_shapes_bench.c - the packed product alone (warm caches, one thread)
 * on the products of a layer at the benchmark shapes, for one tile shape
 * chosen at compile time (MR x NR, VL lanes), GFLOP/s best of reps.
 * docs/perf-notes.md ("Float tile shape on AVX-512") used it to compare
 * 8x32, 12x32, 14x32, 8x48, 6x64 and 4x64:
 *   gcc -O3 -mavx512f -mfma -ffp-contract=fast -fno-trapping-math \
 *       -DMR=14 -DNR=32 -Icsrc/src benchmarks/micro/tile_shapes_bench.c \
 *       -o /tmp/tiles && taskset -c 0 /tmp/tiles 60
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "gemm/gemm.h"

#define T float
#ifndef VL
#define VL 16
#endif
#ifndef MR
#define MR 14
#endif
#ifndef NR
#define NR 32
#endif
#define NAME g32
#include "gemm/gemm_simd.h"

static float *A, *B, *C, *S;

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* GFLOP/s of C (m, n) = A B, A element (i, p) at A[i rsa + p csa], B
 * element (p, j) at B[p rsb + j csb]; best of reps. */
static double
rate(int64_t m, int64_t n, int64_t k, int64_t rsa, int64_t csa, int64_t rsb,
     int64_t csb, int reps)
{
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        g32(C, n, A, rsa, csa, B, rsb, csb, m, n, k, 0, S);
        t = now() - t;
        best = t < best ? t : best;
    }
    return 2.0 * (double)(m * n * k) / best / 1e9;
}

int
main(int argc, char **argv)
{
    int64_t big = 2 * 1024 * 1024;
    int reps = argc > 1 ? atoi(argv[1]) : 30;
    A = aligned_alloc(64, (size_t)big * 4);
    B = aligned_alloc(64, (size_t)big * 4);
    C = aligned_alloc(64, (size_t)big * 4);
    S = aligned_alloc(64, (size_t)GEMM_SCRATCH_ELEMS * 4 + 256);
    if (A == NULL || B == NULL || C == NULL || S == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < big; i++) {
        A[i] = (float)(i % 7) * 0.1f;
        B[i] = (float)(i % 5) * 0.1f;
    }
    printf("MR=%d NR=%d\n", MR, NR);
    /* X W: x (m, k) row-major, W (k, n); X^T delta: x stored (k, m);
     * delta W^T: W stored (n, k) */
    printf("C4 1024-1024, B 256:  X W %.0f  X^T delta %.0f  delta W^T %.0f\n",
           rate(256, 1024, 1024, 1024, 1, 1024, 1, reps),
           rate(1024, 1024, 256, 1, 1024, 1024, 1, reps),
           rate(256, 1024, 1024, 1024, 1, 1, 1024, reps));
    printf("C3 784-256, B 128:    X W %.0f  X^T delta %.0f  delta W^T %.0f\n",
           rate(128, 256, 784, 784, 1, 256, 1, 4 * reps),
           rate(784, 256, 128, 1, 784, 256, 1, 4 * reps),
           rate(128, 784, 256, 256, 1, 1, 256, 4 * reps));
    printf("C3 256-128, B 128:    X W %.0f  X^T delta %.0f\n",
           rate(128, 128, 256, 256, 1, 128, 1, 10 * reps),
           rate(256, 128, 128, 1, 256, 128, 1, 10 * reps));
    printf("C2, B 32:             64-128 X W %.0f  128-64 X W %.0f\n",
           rate(32, 128, 64, 64, 1, 128, 1, 100 * reps),
           rate(32, 64, 128, 128, 1, 64, 1, 100 * reps));
    free(A);
    free(B);
    free(C);
    free(S);
    return 0;
}
