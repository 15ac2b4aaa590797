/*
 * gemm_avx512.c - AVX-512F kernels: 8 x 32 float tiles and 8 x 16 double
 * tiles (16 accumulator registers of 32).  Compiled with -mavx512f -mfma
 * and FP contraction on.
 */
#include <stdint.h>

#include "gemm.h"

#define T float
#define VL 16
#define MR 8
#define NR 32
#define NAME gemm_avx512_8x32_f32
#include "gemm_simd.h"
#undef T
#undef VL
#undef MR
#undef NR
#undef NAME

#define T double
#define VL 8
#define MR 8
#define NR 16
#define NAME gemm_avx512_8x16_f64
#include "gemm_simd.h"

const gemm_table gemm_table_avx512 = {"avx512", gemm_avx512_8x32_f32,
                                      gemm_avx512_8x16_f64};
