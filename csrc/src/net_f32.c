/* net_f32.c - the network kernels for float32 (see net_impl.h). */
#include <stdlib.h>

#define T float
#define SFX _f32
#define EXP expf
#define EXPM1 expm1f
#define LOG logf
#define LOG1P log1pf
#define TANH tanhf
#define ERF erff
#define SQRT sqrtf
#define FABS fabsf
#define GEMM_CALL(table) ((table)->gemm_f32)
#include "net_impl.h"
