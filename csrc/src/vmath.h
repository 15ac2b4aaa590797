/*
 * vmath.h - exp, tanh and erfc written without branches or libm calls, so
 * that loops over them vectorise in the SIMD builds.  exp: range reduction
 * x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts), a polynomial
 * (float: Cephes' degree-7 minimax; double: a [3/3] Pade form in r^2), and
 * 2^n applied as two exact power-of-two factors so results stay right down
 * into the subnormal range.  Accuracy: about 1 ulp for exp and tanh, 3 for
 * erfc (plus the 2 x^2 ulps that rounding a large argument costs any erfc);
 * tests/test_activations.py checks the activations built on them against
 * SciPy over the whole range.
 */
#ifndef BPCORE_VMATH_H
#define BPCORE_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float
pow2i_f32(int32_t n)
{
    /* 2^n for n in [-126, 127] */
    uint32_t bits = (uint32_t)(n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float
vexp_f32(float x)
{
    const float hi = 88.72283935546875f, lo = -104.0f;
    float xc = x >= lo ? (x > hi ? hi : x) : lo; /* NaN -> lo */
    float n = xc * 1.44269504088896341f;
    n = (n + 12582912.0f) - 12582912.0f; /* round to nearest integer */
    float r = xc - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t ni = (int32_t)n;
    int32_t n1 = ni / 2;
    float res = p * pow2i_f32(n1) * pow2i_f32(ni - n1);
    return x != x ? x : (x > hi ? INFINITY : res);
}

static inline double
pow2i_f64(int32_t n)
{
    /* 2^n for n in [-1022, 1023] */
    uint64_t bits = (uint64_t)(uint32_t)(n + 1023) << 52;
    double f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline double
vexp_f64(double x)
{
    const double hi = 709.782712893383973096, lo = -746.0;
    double xc = x >= lo ? (x > hi ? hi : x) : lo; /* NaN -> lo */
    double n = xc * 1.4426950408889634073599;
    n = (n + 6755399441055744.0) - 6755399441055744.0;
    double r = xc - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    double rr = r * r;
    double P = 1.26177193074810590878e-4;
    P = P * rr + 3.02994407707441961300e-2;
    P = P * rr + 9.99999999999999999910e-1;
    P = P * r;
    double Q = 3.00198505138664455042e-6;
    Q = Q * rr + 2.52448340349684104192e-3;
    Q = Q * rr + 2.27265548208155028766e-1;
    Q = Q * rr + 2.00000000000000000009e0;
    double e = 1.0 + 2.0 * (P / (Q - P));
    /* int32, not int64: AVX2 converts doubles to int32 lanes natively */
    int32_t ni = (int32_t)n;
    int32_t n1 = ni / 2;
    double res = e * pow2i_f64(n1) * pow2i_f64(ni - n1);
    return x != x ? x : (x > hi ? INFINITY : res);
}

/*
 * tanh, branch-free: for |x| < 0.625 the odd series x + x z P(z), z = x^2
 * (P fitted here to tanh by Chebyshev interpolation in z: float degree 4,
 * relative error 1.5e-8; double degree 11, 1.5e-18); above, 1 - 2/(e^2|x| +
 * 1), where the subtraction loses at most one bit.  Both are computed and
 * one is chosen, so loops over it vectorise.
 */
static inline float
vtanh_f32(float x)
{
    float a = fabsf(x), z = x * x;
    float p = -6.0967141659e-3f;
    p = p * z + 2.0997178999e-2f;
    p = p * z - 5.3850909579e-2f;
    p = p * z + 1.3332769737e-1f;
    p = p * z - 3.3333328944e-1f;
    float small = copysignf(x + x * (z * p), x); /* keeps -0 */
    float e = vexp_f32(2.0f * (a < 10.0f ? a : 10.0f)); /* tanh(10) = 1 */
    float large = copysignf(1.0f - 2.0f / (e + 1.0f), x);
    return a < 0.625f ? small : (x != x ? x : large);
}

static inline double
vtanh_f64(double x)
{
    double a = fabs(x), z = x * x;
    double p = 6.48516348279311315e-6;
    p = p * z - 3.1201101425797400033e-5;
    p = p * z + 9.2571161295567682707e-5;
    p = p * z - 2.3759064960555619551e-4;
    p = p * z + 5.896606577757043347e-4;
    p = p * z - 1.4557754120478055104e-3;
    p = p * z + 3.5921217511549622695e-3;
    p = p * z - 8.863235103240877925e-3;
    p = p * z + 2.1869488519008305756e-2;
    p = p * z - 5.396825396789699169e-2;
    p = p * z + 1.3333333333333041602e-1;
    p = p * z - 3.3333333333333332938e-1;
    double small = copysign(x + x * (z * p), x); /* keeps -0 */
    double e = vexp_f64(2.0 * (a < 20.0 ? a : 20.0)); /* tanh(20) = 1 */
    double large = copysign(1.0 - 2.0 / (e + 1.0), x);
    return a < 0.625 ? small : (x != x ? x : large);
}

/*
 * erfc, branch-free.  For a = |x|: erfc(a) = e^-a^2 g(u) / (1 + 2a), with
 * u = (a - 3.75) / (a + 3.75) in [-1, 1) and g smooth between 1 and 2/sqrt
 * (pi) (the form of Schonfelder's 1978 Chebyshev expansions).  g's
 * Chebyshev series was computed here with mpmath and is summed by
 * Clenshaw's recurrence: 13 terms for float (truncation 5e-9), 25 for
 * double (3e-18).  erfc(-a) = 2 - erfc(a).  Rounding a^2 costs about a^2
 * ulps, as it would for any erfc of a rounded argument this large.
 */
#define VMATH_STEP(c) (b0 = u2 * b1 - b2 + (c), b2 = b1, b1 = b0)

static inline float
verfc_f32(float x)
{
    float a = fabsf(x);
    a = a < 12.0f ? a : 12.0f; /* erfc(12) underflows to 0; NaN -> 12 */
    float u = (a - 3.75f) / (a + 3.75f), u2 = u + u;
    float b0, b1 = 0, b2 = 0;
    VMATH_STEP(1.076499947e-8f); VMATH_STEP(-2.188640105e-7f);
    VMATH_STEP(7.740383066e-7f); VMATH_STEP(4.139027986e-6f);
    VMATH_STEP(-6.916973303e-5f); VMATH_STEP(4.907758365e-4f);
    VMATH_STEP(-2.41316354e-3f); VMATH_STEP(9.074997671e-3f);
    VMATH_STEP(-2.665866844e-2f); VMATH_STEP(5.920994e-2f);
    VMATH_STEP(-8.424913337e-2f); VMATH_STEP(-4.590054581e-3f);
    float g = u * b1 - b2 + 1.177578935f;
    float y = vexp_f32(-(a * a)) * g / (1.0f + 2.0f * a);
    return x != x ? x : (x < 0 ? 2.0f - y : y);
}

static inline double
verfc_f64(double x)
{
    double a = fabs(x);
    a = a < 28.0 ? a : 28.0; /* erfc(28) underflows to 0; NaN -> 28 */
    double u = (a - 3.75) / (a + 3.75), u2 = u + u;
    double b0, b1 = 0, b2 = 0;
    VMATH_STEP(5.0681489047961113168e-17);
    VMATH_STEP(7.418235256624043463e-17);
    VMATH_STEP(-1.2507950530688647085e-15);
    VMATH_STEP(-1.8645628804193131015e-15);
    VMATH_STEP(3.3478119482868053878e-14);
    VMATH_STEP(3.2525481481487398415e-14);
    VMATH_STEP(-9.6546967484334389059e-13);
    VMATH_STEP(1.945586854577734723e-13);
    VMATH_STEP(2.8687950109306698981e-11);
    VMATH_STEP(-6.3180883408866844944e-11);
    VMATH_STEP(-7.7544002088313511065e-10);
    VMATH_STEP(4.5219598112182868979e-9);
    VMATH_STEP(1.0764999465670910377e-8);
    VMATH_STEP(-2.1886401049234395661e-7);
    VMATH_STEP(7.7403830661984906686e-7);
    VMATH_STEP(4.1390279860730101675e-6);
    VMATH_STEP(-6.9169733025012063671e-5);
    VMATH_STEP(4.9077583652580863229e-4);
    VMATH_STEP(-2.4131635404176081909e-3);
    VMATH_STEP(9.0749976707052650939e-3);
    VMATH_STEP(-2.6658668435305752277e-2);
    VMATH_STEP(5.9209939998191890498e-2);
    VMATH_STEP(-8.4249133366517915584e-2);
    VMATH_STEP(-4.5900545806464773309e-3);
    double g = u * b1 - b2 + 1.1775789345674017541;
    double y = vexp_f64(-(a * a)) * g / (1.0 + 2.0 * a);
    return x != x ? x : (x < 0 ? 2.0 - y : y);
}

#undef VMATH_STEP

#endif /* BPCORE_VMATH_H */
