/*
 * finite.c - bp_all_finite_*: whether an array holds only finite values.
 * A value is NaN or infinite exactly when its exponent bits are all ones;
 * the test on the bits is an integer operation that vectorises at any ISA
 * level.  Blocks of FINITE_BLOCK values are checked whole (no branch
 * inside), and the scan stops at the first bad block.
 */
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define FINITE_BLOCK 4096
#define FINITE_PARALLEL_MIN ((int64_t)1 << 21)

#define ALL_FINITE_BODY(BLOCK_BAD)                                           \
    int64_t n_blocks = (n + FINITE_BLOCK - 1) / FINITE_BLOCK;                \
    int bad = 0;                                                             \
    int nt = n >= FINITE_PARALLEL_MIN ? resolve_threads(n_threads) : 1;      \
    if (x == NULL || n <= 0) {                                               \
        return 1;                                                            \
    }                                                                        \
    if (nt <= 1) {                                                           \
        for (int64_t b = 0; b < n_blocks && !bad; b++) {                     \
            int64_t lo = b * FINITE_BLOCK;                                   \
            bad = BLOCK_BAD(x + lo, n - lo < FINITE_BLOCK ? n - lo           \
                                                          : FINITE_BLOCK);   \
        }                                                                    \
        return !bad;                                                         \
    }                                                                        \
    _Pragma("omp parallel for schedule(static) reduction(|:bad) num_threads(nt)") \
    for (int64_t b = 0; b < n_blocks; b++) {                                 \
        int64_t lo = b * FINITE_BLOCK;                                       \
        bad |= BLOCK_BAD(x + lo, n - lo < FINITE_BLOCK ? n - lo              \
                                                       : FINITE_BLOCK);      \
    }                                                                        \
    return !bad;

int
bp_all_finite_f32(const float *x, int64_t n, int n_threads)
{
    ALL_FINITE_BODY(any_nonfinite_f32)
}

int
bp_all_finite_f64(const double *x, int64_t n, int n_threads)
{
    ALL_FINITE_BODY(any_nonfinite_f64)
}
