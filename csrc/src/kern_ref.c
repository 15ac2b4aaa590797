/*
 * kern_ref.c - the portable reference build: the network code compiled for
 * the baseline ISA with libm's functions and a plain-loop product (one sum
 * per entry of C in order of p).  It is the oracle for the SIMD builds and
 * the fallback on CPUs without them.
 */
#include "kernels.h"

#define REF_GEMM(NAME, TYPE)                                                 \
    static void                                                              \
    NAME(TYPE *C, int64_t ldc, const TYPE *A, int64_t rsa, int64_t csa,     \
         const TYPE *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,      \
         int64_t k, int accumulate, TYPE *scratch)                           \
    {                                                                        \
        (void)scratch;                                                       \
        for (int64_t i = 0; i < m; i++) {                                    \
            for (int64_t j = 0; j < n; j++) {                                \
                TYPE s = 0;                                                  \
                for (int64_t p = 0; p < k; p++) {                            \
                    s += A[i * rsa + p * csa] * B[p * rsb + j * csb];        \
                }                                                            \
                C[i * ldc + j] = accumulate ? C[i * ldc + j] + s : s;        \
            }                                                                \
        }                                                                    \
    }

REF_GEMM(gemm_ref_f32, float)
REF_GEMM(gemm_ref_f64, double)

/* The reference product sums the whole depth in one run. */
#define VEXP64 exp
#define PRODUCT_KC INT64_MAX

#include "math_f32.h"
#define SFX _ref_f32
#define VEXP expf
#define VTANH tanhf
#define VERFC erfcf
#define GEMM_FN gemm_ref_f32
#include "net_impl.h"
#include "math_undef.h"


#include "math_f64.h"
#define SFX _ref_f64
#define VEXP exp
#define VTANH tanh
#define VERFC erfc
#define GEMM_FN gemm_ref_f64
#include "net_impl.h"
#include "math_undef.h"

const kernel_table kernel_table_ref = {
    "ref", gemm_ref_f32, gemm_ref_f64, KERNEL_ENTRIES(_ref_f32, _ref_f64)};
