/*
 * vmath.h - exp written without branches or libm calls, so that loops over
 * it vectorise in the SIMD builds.  Range reduction x = n ln2 + r with
 * |r| <= ln2/2 (ln2 split in two parts), a polynomial (float: Cephes'
 * degree-7 minimax; double: a [3/3] Pade form in r^2), and 2^n applied as
 * two exact power-of-two factors so results stay right down into the
 * subnormal range.  Accuracy: about 1 ulp; tests/test_activations.py
 * checks the activations built on it against SciPy over the whole range.
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

#endif /* BPCORE_VMATH_H */
