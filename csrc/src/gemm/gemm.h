/*
 * gemm.h - the matrix-product kernels behind every dense layer (the
 * kernel tables of kernels.h hold one per ISA and type).
 *
 * A kernel computes C = A B (or C += A B) for a block, single-threaded:
 *   C (m, n) out, row stride ldc;
 *   A (m, k) in, element (i, p) at A[i * rsa + p * csa];
 *   B (k, n) in, element (p, j) at B[p * rsb + j * csb].
 * The strides let one kernel serve X W (forward), X^T delta (weight
 * gradient) and delta W^T (input delta).  Each entry of C is a sum over p
 * in a fixed order (blocks of GEMM_KC, in order), whatever m, n and the
 * caller's split of the rows and columns, so results do not depend on how
 * threads share the work.  With accumulate == 0 C is written without being
 * read (NaN-filled C gives clean output).
 */
#ifndef BPCORE_GEMM_H
#define BPCORE_GEMM_H

#include <stdint.h>

/* Depth of one packed block: the reduction runs in blocks of this size. */
#define GEMM_KC 256
/* Rows of A packed at once, and columns of B. */
#define GEMM_MC 120
#define GEMM_NC 1024

typedef void (*gemm_f32_fn)(float *C, int64_t ldc, const float *A,
                            int64_t rsa, int64_t csa, const float *B,
                            int64_t rsb, int64_t csb, int64_t m, int64_t n,
                            int64_t k, int accumulate, float *scratch);
typedef void (*gemm_f64_fn)(double *C, int64_t ldc, const double *A,
                            int64_t rsa, int64_t csa, const double *B,
                            int64_t rsb, int64_t csb, int64_t m, int64_t n,
                            int64_t k, int accumulate, double *scratch);

/* Elements of scratch a kernel call needs (enough for every kernel). */
#define GEMM_SCRATCH_ELEMS \
    ((int64_t)GEMM_MC * GEMM_KC + (int64_t)GEMM_KC * GEMM_NC + 64)

#endif /* BPCORE_GEMM_H */
