/* net_f64.c - the network kernels for float64 (see net_impl.h). */
#include <stdlib.h>

#define T double
#define SFX _f64
#define EXP exp
#define EXPM1 expm1
#define LOG log
#define LOG1P log1p
#define TANH tanh
#define ERF erf
#define SQRT sqrt
#define FABS fabs
#define GEMM_CALL(table) ((table)->gemm_f64)
#include "net_impl.h"
