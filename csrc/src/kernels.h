/*
 * kernels.h - one table of entry points per instruction set.  Each
 * kern_*.c file compiles the whole network code (net_impl.h) and its packed
 * product (gemm/) with that ISA's flags and exports one table; bp_init picks
 * a table once and the public functions in api.c call through it, each
 * passing its arguments as one struct.
 */
#ifndef BPCORE_KERNELS_H
#define BPCORE_KERNELS_H

#include "bpcore/bpcore.h"
#include "gemm/gemm.h"

/*
 * The arguments of the entry points, one struct per entry point and
 * element type (T and its suffix S), in the order of the public functions
 * of bpcore.h that fill them (api.c); bpcore.h documents each argument.
 */
#define KERNEL_ARGS(T, S)                                                    \
    typedef struct {                                                         \
        T *Y;                    /* (m, n_L) out */                          \
        const T *X, *params;     /* (m, n_0), (n_params) in */               \
        const bp_arch *arch;                                                 \
        int64_t m;                                                           \
        void *work;                                                          \
        int64_t work_bytes;                                                  \
        int n_threads;                                                       \
        int check_finite;        /* 1: X checked block by block */           \
    } predict_args##S;                                                       \
    typedef struct {                                                         \
        T *const *net, *const *out;  /* [k] (m, n_k) out, k = 1..L */        \
        const T *X, *params;                                                 \
        const bp_arch *arch;                                                 \
        int64_t m;                                                           \
        int n_threads;                                                       \
    } forward_args##S;                                                       \
    typedef struct {                                                         \
        T *grad;                     /* (n_params) out */                    \
        T *const *delta, *const *net, *const *out;  /* [k] (m, n_k) out */   \
        double *loss;                                                        \
        const T *X, *Y, *sw, *params;  /* sw (m) or NULL */                  \
        const bp_arch *arch;                                                 \
        int64_t m;                                                           \
        int n_threads;                                                       \
    } backward_args##S;                                                      \
    typedef struct {                                                         \
        T *params;                   /* (n) inout */                         \
        const T *grad;               /* (n) in */                            \
        bp_optim *opt;                                                       \
        int64_t n, n_weights;                                                \
        int n_threads;                                                       \
    } update_args##S;                                                        \
    typedef struct {                                                         \
        T *params, *grad;                                                    \
        bp_optim *opt;                                                       \
        double *loss_sum, *weight_sum;  /* inout: running sums */            \
        int64_t *batches_done;                                               \
        const T *X, *Y;              /* (m, n_0), (m, n_L) or NULL */        \
        const int64_t *labels;       /* (m) or NULL */                       \
        const T *sw;                 /* (m) or NULL */                       \
        const int64_t *order;        /* (m) or NULL */                       \
        int64_t m, batch, first_batch, n_batches;                            \
        const bp_arch *arch;                                                 \
        void *work;                                                          \
        int64_t work_bytes;                                                  \
        int n_threads;                                                       \
        int cut;                     /* bp_cut */                            \
    } train_args##S;                                                         \
    typedef struct {                                                         \
        T *C;                        /* (m, n) out */                        \
        const T *A, *B;              /* op(A) (m, k), op(B) (k, n) in */     \
        int64_t m, n, k;                                                     \
        int trans_a, trans_b, n_threads;                                     \
    } matmul_args##S;

KERNEL_ARGS(float, _f32)
KERNEL_ARGS(double, _f64)

/* An entry point of the table for both types: name_f32 and name_f64. */
#define KERNEL_ENTRY(name)                                                   \
    bp_status (*name##_f32)(const name##_args_f32 *);                        \
    bp_status (*name##_f64)(const name##_args_f64 *);

typedef struct {
    const char *name;
    gemm_f32_fn gemm_f32;
    gemm_f64_fn gemm_f64;
    KERNEL_ENTRY(predict)
    KERNEL_ENTRY(forward)
    KERNEL_ENTRY(backward)
    KERNEL_ENTRY(update)
    KERNEL_ENTRY(train)
    KERNEL_ENTRY(matmul)
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
