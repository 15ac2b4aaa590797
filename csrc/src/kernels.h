/*
 * kernels.h - one table of entry points per instruction set.  Each
 * kern_*.c file compiles the whole network code (net_impl.h) and its packed
 * product (gemm/) with that ISA's flags and exports one table; bp_init picks
 * a table once and the public functions in api.c call through it.
 */
#ifndef BPCORE_KERNELS_H
#define BPCORE_KERNELS_H

#include "bpcore/bpcore.h"
#include "gemm/gemm.h"

typedef struct {
    const char *name;
    gemm_f32_fn gemm_f32;
    gemm_f64_fn gemm_f64;
    bp_status (*predict_f32)(float *, const float *, const float *,
                             const bp_arch *, int64_t, void *, int64_t, int);
    bp_status (*predict_f64)(double *, const double *, const double *,
                             const bp_arch *, int64_t, void *, int64_t, int);
    bp_status (*forward_f32)(float *const *, float *const *, const float *,
                             const float *, const bp_arch *, int64_t, int);
    bp_status (*forward_f64)(double *const *, double *const *,
                             const double *, const double *, const bp_arch *,
                             int64_t, int);
    bp_status (*backward_f32)(float *, float *const *, float *const *,
                              float *const *, double *, const float *,
                              const float *, const float *, const float *,
                              const bp_arch *, int64_t, int);
    bp_status (*backward_f64)(double *, double *const *, double *const *,
                              double *const *, double *, const double *,
                              const double *, const double *, const double *,
                              const bp_arch *, int64_t, int);
    bp_status (*update_f32)(float *, const float *, bp_optim *, int64_t,
                            int64_t, int);
    bp_status (*update_f64)(double *, const double *, bp_optim *, int64_t,
                            int64_t, int);
    bp_status (*train_f32)(float *, float *, bp_optim *, double *, double *,
                           int64_t *, const float *, const float *,
                           const int64_t *, const float *, const int64_t *,
                           int64_t, int64_t,
                           int64_t, int64_t, const bp_arch *, void *, int64_t,
                           int);
    bp_status (*train_f64)(double *, double *, bp_optim *, double *, double *,
                           int64_t *, const double *, const double *,
                           const int64_t *, const double *, const int64_t *,
                           int64_t, int64_t,
                           int64_t, int64_t, const bp_arch *, void *, int64_t,
                           int);
    bp_status (*matmul_f32)(float *, const float *, const float *, int64_t,
                            int64_t, int64_t, int, int, int);
    bp_status (*matmul_f64)(double *, const double *, const double *,
                            int64_t, int64_t, int64_t, int, int, int);
    double (*cal_chain_f32)(int, int64_t, int);
    double (*cal_chain_f64)(int, int64_t, int);
} kernel_table;

extern const kernel_table kernel_table_ref;
#ifdef BPCORE_HAVE_AVX2
extern const kernel_table kernel_table_avx2;
#endif
#ifdef BPCORE_HAVE_AVX512
extern const kernel_table kernel_table_avx512;
#endif

/* The table chosen by bp_init (the reference table before it). */
const kernel_table *kernels(void);

/* Choose the table: best the CPU runs, or BPCORE_KERNEL=ref|avx2|avx512. */
void kernels_choose(void);

/* The table of entries defined by one inclusion of net_impl.h. */
#define KERNEL_ENTRIES(S32, S64)                                             \
    CAT(predict, S32), CAT(predict, S64), CAT(forward, S32),                 \
        CAT(forward, S64), CAT(backward, S32), CAT(backward, S64),           \
        CAT(update, S32), CAT(update, S64), CAT(train, S32),                 \
        CAT(train, S64), CAT(matmul, S32), CAT(matmul, S64),                 \
        CAT(cal_chain, S32), CAT(cal_chain, S64)

#endif /* BPCORE_KERNELS_H */
