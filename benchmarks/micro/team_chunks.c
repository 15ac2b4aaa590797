/*
 * team_chunks.c - C4's three 1024-wide products (256 x 1024 x 1024 and
 * its transposes) on two threads, cut the two ways product_team_cut has:
 * one column slice per thread, and columns handed out in chunks (each
 * thread packs all of A, computes three quarters of its own slice, then
 * takes the rest from an OpenMP dynamic loop; product_chunks in
 * csrc/src/gemm/product.h).  Each call is timed (wall, and each thread's
 * time), the two ways alternated call by call; prints the mean wall, the
 * mean of the threads' times (wall / that = what waiting for the slower
 * thread costs), and whether both ways give the same bits (1; -1: not
 * compared).  With a second argument of 1, each thread first rewrites its
 * column half of A and B before each call, as a fit's previous layer and
 * update leave them (the inputs then change between the two ways).
 * docs/perf-notes.md ("Columns handed out in chunks") quotes it:
 *   gcc -O3 -mavx512f -mavx512dq -mavx512bw -mavx512vl -mfma \
 *       -ffp-contract=fast -fopenmp -Icsrc/src \
 *       benchmarks/micro/team_chunks.c -o /tmp/chunks && /tmp/chunks 200 0
 */
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm/gemm.h"

#define T float
#define VL 16
#define MR 14
#define NR 32
#define NAME g32
#include "gemm/gemm_simd.h"

typedef struct {
    int64_t m, n, k, rsa, csa, rsb, csb;
    int64_t a_rows, b_rows;  /* A and B as stored: rows x 1024 */
} prod;

static float *A, *B, *C[2], *S[2];

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* x[:, columns of thread t's half] += v (x rows x 1024, row-major) */
static void
touch(float *x, int64_t rows, int t, float v)
{
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 512 * t; j < 512 * (t + 1); j++) {
            x[i * 1024 + j] += v;
        }
    }
}

static void
slice(const prod *p, float *c, int t)
{
    int64_t lo = p->n / 2 * t, hi = p->n / 2 * (t + 1);
    g32(c + lo, p->n, A, p->rsa, p->csa, B + lo * p->csb, p->rsb, p->csb,
        p->m, hi - lo, p->k, 0, S[t]);
}

static void
chunks(const prod *p, float *c, int t)
{
    int64_t cw = chunk_cols_g32, n_ch = (p->n + cw - 1) / cw;
    int64_t lo = n_ch * t / 2, hi = n_ch * (t + 1) / 2;
    float *pa = (float *)(((uintptr_t)S[t] + 63u) & ~(uintptr_t)63u);
    float *pb = pa;
    int direct = direct_a_g32(A, p->rsa, p->csa);
    if (!direct) {
        pb = pack_all_g32(pa, A, p->rsa, p->csa, p->m, p->k);
    }
    for (int64_t ch = lo; ch < hi - (hi - lo) / 4; ch++) {
        int64_t j1 = (ch + 1) * cw < p->n ? (ch + 1) * cw : p->n;
        cols_g32(c, p->n, A, p->rsa, direct ? NULL : pa, B, p->rsb, p->csb,
                 p->m, ch * cw, j1, p->k, pb, NULL, NULL);
    }
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t ch = 0; ch < n_ch; ch++) {
        int64_t o = ((ch + 1) * 2 - 1) / n_ch;
        int64_t o_lo = n_ch * o / 2, o_hi = n_ch * (o + 1) / 2;
        if (ch >= o_hi - (o_hi - o_lo) / 4) {
            int64_t j1 = (ch + 1) * cw < p->n ? (ch + 1) * cw : p->n;
            cols_g32(c, p->n, A, p->rsa, direct ? NULL : pa, B, p->rsb,
                     p->csb, p->m, ch * cw, j1, p->k, pb, NULL, NULL);
        }
    }
}

int
main(int argc, char **argv)
{
    int calls = argc > 1 ? atoi(argv[1]) : 200;
    int prep = argc > 2 ? atoi(argv[2]) : 0;
    int64_t big = 1024 * 1024;
    const prod ps[3] = {{256, 1024, 1024, 1024, 1, 1024, 1, 256, 1024},
                        {1024, 1024, 256, 1, 1024, 1024, 1, 256, 256},
                        {256, 1024, 1024, 1024, 1, 1, 1024, 256, 1024}};
    const char *names[3] = {"X W", "X^T delta", "delta W^T"};
    A = aligned_alloc(64, (size_t)big * 4);
    B = aligned_alloc(64, (size_t)big * 4);
    for (int t = 0; t < 2; t++) {
        C[t] = aligned_alloc(64, (size_t)big * 4);
        S[t] = aligned_alloc(64, (size_t)GEMM_SCRATCH_ELEMS * 4 + 256);
        if (C[t] == NULL || S[t] == NULL) {
            return 1;
        }
    }
    if (A == NULL || B == NULL) {
        return 1;
    }
    for (int64_t i = 0; i < big; i++) {
        A[i] = (float)(i % 7) * 0.1f + (float)(i % 3) * 0.013f;
        B[i] = (float)(i % 5) * 0.1f - (float)(i % 11) * 0.007f;
    }
    for (int q = 0; q < 3; q++) {
        const prod *p = &ps[q];
        double wall[2] = {0, 0}, mean[2] = {0, 0};
        for (int r = 0; r < calls; r++) {
            for (int way = 0; way < 2; way++) {
                double tt[2], t0 = 0.0;
#pragma omp parallel num_threads(2)
                {
                    int t = omp_get_thread_num();
                    double s;
                    if (prep) {
                        touch(A, p->a_rows, t, 1e-7f);
                        touch(B, p->b_rows, t, 1e-7f);
                    }
#pragma omp barrier
#pragma omp master
                    t0 = now();
                    s = now();
                    if (way == 0) {
                        slice(p, C[0], t);
                    } else {
                        chunks(p, C[1], t);
                    }
                    tt[t] = now() - s;
#pragma omp barrier
#pragma omp master
                    wall[way] += now() - t0;
                }
                mean[way] += (tt[0] + tt[1]) / 2;
            }
        }
        printf("%-10s slices %.3f ms (threads' mean %.3f: x%.3f)  chunks "
               "%.3f ms (%.3f: x%.3f)  chunks / slices %.3f  same bits %d\n",
               names[q], wall[0] / calls * 1e3, mean[0] / calls * 1e3,
               wall[0] / mean[0], wall[1] / calls * 1e3,
               mean[1] / calls * 1e3, wall[1] / mean[1], wall[1] / wall[0],
               prep ? -1
                    : memcmp(C[0], C[1],
                             sizeof(float) * (size_t)(p->m * p->n)) == 0);
    }
    return 0;
}
