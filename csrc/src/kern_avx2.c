/*
 * kern_avx2.c - the AVX2 + FMA build: 6 x 16 float and 6 x 8 double GEMM
 * tiles (12 accumulator registers of 16), and the network code compiled
 * with -mavx2 -mfma and FP contraction, with the vectorisable exp.
 */
#include "kernels.h"
#include "vmath.h"

#define T float
#define VL 8
#define MR 6
#define NR 16
#define NAME gemm_avx2_6x16_f32
#include "gemm/gemm_simd.h"
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
#include "gemm/gemm_simd.h"
#undef T
#undef VL
#undef MR
#undef NR
#undef NAME

#define SFX_F32 _avx2_f32
#define SFX_F64 _avx2_f64
#define GEMM_F32 gemm_avx2_6x16_f32
#define GEMM_F64 gemm_avx2_6x8_f64
#include "kern_simd.h"

const kernel_table kernel_table_avx2 = {
    "avx2", gemm_avx2_6x16_f32, gemm_avx2_6x8_f64,
    KERNEL_ENTRIES(_avx2_f32, _avx2_f64)};
