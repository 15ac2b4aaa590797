/*
 * gemm_ref.c - the portable reference product: plain loops, one sum per
 * entry of C in order of p.  It is the oracle for the SIMD kernels and the
 * fallback on CPUs without them.
 */
#include "gemm.h"

#define REF_GEMM(NAME, T)                                                    \
    static void                                                              \
    NAME(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,           \
         const T *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,         \
         int64_t k, int accumulate, T *scratch)                              \
    {                                                                        \
        (void)scratch;                                                       \
        for (int64_t i = 0; i < m; i++) {                                    \
            for (int64_t j = 0; j < n; j++) {                                \
                T s = 0;                                                     \
                for (int64_t p = 0; p < k; p++) {                            \
                    s += A[i * rsa + p * csa] * B[p * rsb + j * csb];        \
                }                                                            \
                C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;        \
            }                                                                \
        }                                                                    \
    }

REF_GEMM(gemm_ref_f32, float)
REF_GEMM(gemm_ref_f64, double)

const gemm_table gemm_table_ref = {"ref", gemm_ref_f32, gemm_ref_f64};
