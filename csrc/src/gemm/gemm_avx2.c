/*
 * gemm_avx2.c - AVX2 + FMA kernels: 6 x 16 float tiles and 6 x 8 double
 * tiles (12 accumulator registers of 16).  Compiled with -mavx2 -mfma and
 * FP contraction on, so a += b * c becomes one FMA.
 */
#include <stdint.h>

#include "gemm.h"

#define T float
#define VL 8
#define MR 6
#define NR 16
#define NAME gemm_avx2_6x16_f32
#include "gemm_simd.h"
#undef T
#undef VL
#undef MR
#undef NR
#undef NAME

#define T double
#define VL 4
#define MR 6
#define NR 8
#define NAME gemm_avx2_6x8_f64
#include "gemm_simd.h"

const gemm_table gemm_table_avx2 = {"avx2", gemm_avx2_6x16_f32,
                                    gemm_avx2_6x8_f64};
