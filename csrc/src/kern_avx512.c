/*
 * kern_avx512.c - the AVX-512F build: 14 x 32 float GEMM tiles (28
 * accumulator registers of 32: fewer loads of the B panel per FMA than 8 x
 * 32) and 6 x 32 double ones (24 accumulators: fewer broadcasts of A per
 * FMA than 8 x 16: 6-24% faster on a Xeon), and the network code compiled with
 * -mavx512f -mfma and FP contraction, with the vectorisable exp.  The tile
 * shape changes no bit: every entry sums over the depth in the same order.
 */
#include "kernels.h"
#include "vmath.h"

#define T float
#define VL 16
#define MR 14
#define NR 32
#define NAME gemm_avx512_14x32_f32
#include "gemm/gemm_simd.h"
#undef T
#undef VL
#undef MR
#undef NR
#undef NAME

#define T double
#define VL 8
#define MR 6
#define NR 32
#define NAME gemm_avx512_6x32_f64
#include "gemm/gemm_simd.h"
#undef T
#undef VL
#undef MR
#undef NR
#undef NAME

#define SFX_F32 _avx512_f32
#define SFX_F64 _avx512_f64
#define GEMM_F32 gemm_avx512_14x32_f32
#define GEMM_F64 gemm_avx512_6x32_f64
#define SMALL_WIDE_BYTES 1024  /* one row's passes: 16 of the 32 registers */
#include "kern_simd.h"

const kernel_table kernel_table_avx512 = {
    "avx512", gemm_avx512_14x32_f32, gemm_avx512_6x32_f64,
    KERNEL_ENTRIES(_avx512_f32, _avx512_f64)};
