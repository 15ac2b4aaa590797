/*
 * kern_simd.h - the network code of a SIMD build, for both element types
 * (included once by kern_avx2.c and kern_avx512.c), with the vectorisable
 * exp, tanh and erfc of vmath.h and the kernel's depth blocking.  The
 * including file defines
 *   SFX_F32 SFX_F64    the name suffixes, e.g. _avx2_f32 and _avx2_f64
 *   GEMM_F32 GEMM_F64  its packed products (gemm/gemm_simd.h)
 * GEMM_CHUNK(part) names that product's pieces for a team that hands out
 * its columns in chunks (product_chunks in gemm/product.h).
 */
#define VEXP64 vexp_f64
#define PRODUCT_KC GEMM_KC

#include "math_f32.h"
#define SFX SFX_F32
#define VEXP vexp_f32
#define VTANH vtanh_f32
#define VERFC verfc_f32
#define GEMM_FN GEMM_F32
#define GEMM_CHUNK(part) SIMD_CAT(part, GEMM_F32)
#include "net_impl.h"
#undef GEMM_CHUNK
#include "math_undef.h"

#include "math_f64.h"
#define SFX SFX_F64
#define VEXP vexp_f64
#define VTANH vtanh_f64
#define VERFC verfc_f64
#define GEMM_FN GEMM_F64
#define GEMM_CHUNK(part) SIMD_CAT(part, GEMM_F64)
#include "net_impl.h"
#undef GEMM_CHUNK
#include "math_undef.h"
