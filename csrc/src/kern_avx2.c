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

#define VEXP64 vexp_f64
#define PRODUCT_KC GEMM_KC

#include "math_f32.h"
#define SFX _avx2_f32
#define VEXP vexp_f32
#define VTANH vtanh_f32
#define VERFC verfc_f32
#define GEMM_FN gemm_avx2_6x16_f32
#include "net_impl.h"
#include "math_undef.h"

#include "math_f64.h"
#define SFX _avx2_f64
#define VEXP vexp_f64
#define VTANH vtanh_f64
#define VERFC verfc_f64
#define GEMM_FN gemm_avx2_6x8_f64
#include "net_impl.h"
#include "math_undef.h"

const kernel_table kernel_table_avx2 = {
    "avx2", gemm_avx2_6x16_f32, gemm_avx2_6x8_f64,
    KERNEL_ENTRIES(_avx2_f32, _avx2_f64)};
