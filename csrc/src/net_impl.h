/*
 * net_impl.h - the network code, written once for a floating type and an
 * instruction set.  Included by the kern_*.c files (one per ISA, each
 * compiled with its own flags), once per type, after defining
 *   T        the element type
 *   SFX      the name suffix, e.g. _avx2_f32
 *   GEMM_FN  the packed product of that ISA and type (see gemm/gemm.h)
 *   EXP EXPM1 LOG LOG1P TANH ERF ERFC SQRT FABS   libm names for T
 *   VEXP     exp used by sigmoid, softmax and gelu (libm's in the
 *            reference build; a branch-free polynomial the compiler can
 *            vectorise in the SIMD builds, see vmath.h)
 *   VEXP64   the same choice for the double exp of the cross-entropy
 *   VTANH VERFC  tanh and erfc for the tanh and gelu activations, chosen
 *            the same way
 * and ends by defining the kernel-table entries FN(predict), FN(forward),
 * FN(backward), FN(update), FN(train).
 *
 * Functions named *_body contain orphaned OpenMP work-sharing loops: every
 * thread of the enclosing parallel region calls them, or a single thread
 * does when there is no region.  Each loop gives each thread disjoint
 * outputs, and every sum over samples runs in sample order, so results do
 * not depend on the number of threads.
 */
#ifndef BPCORE_NET_IMPL_COMMON
#define BPCORE_NET_IMPL_COMMON

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "gemm/gemm.h"

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* Rows per work-sharing block in the forward and delta passes. */
#define ROW_BLOCK 16
/* Rows of dW per work-sharing block (each thread owns whole blocks). */
#define DW_BLOCK 8
/* Entries of db per work-sharing block. */
#define DB_BLOCK 64

/*
 * Run CALL on nt threads, or directly on this one.  A team of one is not
 * free in libgomp (its barriers still make futex calls), and orphaned
 * work-sharing loops outside any region run serially at no cost.
 */
#define RUN_TEAM(nt, CALL)                                                   \
    do {                                                                     \
        if ((nt) > 1) {                                                      \
            _Pragma("omp parallel num_threads(nt)") CALL;                    \
        } else {                                                             \
            CALL;                                                            \
        }                                                                    \
    } while (0)

/*
 * a * b + c (MULADD64: in double).  Where the build has FMA (the SIMD
 * builds) it is written as one, rounded once, so that the paths that
 * compute the same quantity (the online loop, the tiny lanes, the row
 * functions) round alike whatever the compiler decides about contracting
 * each loop.
 */
#if defined(__FMA__)
#define MULADD(a, b, c) FMA(a, b, c)
#define MULADD64(a, b, c) fma(a, b, c)
#else
#define MULADD(a, b, c) ((a) * (b) + (c))
#define MULADD64(a, b, c) ((a) * (b) + (c))
#endif

/* Force inlining where a constant argument must specialise the code. */
#if defined(__GNUC__)
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif

/*
 * For a loop over one sample of a tiny network: every call in the body is
 * inlined and (GCC) nothing is vectorised, since vector code for loops of
 * two or three iterations is mostly set-up.  A third fewer instructions in
 * the online loop; the arithmetic, and so the bits, are the same.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define SCALAR_LOOP __attribute__((flatten, optimize("no-tree-vectorize")))
#elif defined(__GNUC__)
#define SCALAR_LOOP __attribute__((flatten))
#else
#define SCALAR_LOOP
#endif

#endif /* BPCORE_NET_IMPL_COMMON */

/* 1 / (1 + e^-x) without overflow, branch-free so loops vectorise. */
static inline T
FN(sigmoid)(T x)
{
    T e = VEXP(-FABS(x));
    /* numerator 1 for x >= 0, e below: with t = +-1 from the sign bit,
     * (1 - t) / 2 * e + (1 + t) / 2 is exactly one or the other, without
     * a data-dependent branch in scalar code (mispredicted half the time) */
    T t = COPYSIGN((T)1, x);
    T r = MULADD((T)0.5 * ((T)1 - t), e, (T)0.5 * ((T)1 + t)) / ((T)1 + e);
    return r;
}

/* out = f(net) for one row of n values; out may alias net. */
static void
FN(act_row)(T *out, const T *net, int64_t n, int act)
{
    switch (act) {
    case BP_ACT_IDENTITY:
        if (out != net) {
            memcpy(out, net, (size_t)n * sizeof(T));
        }
        break;
    case BP_ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) {
            out[j] = FN(sigmoid)(net[j]);
        }
        break;
    case BP_ACT_TANH:
        for (int64_t j = 0; j < n; j++) {
            out[j] = VTANH(net[j]);
        }
        break;
    case BP_ACT_RELU:
        for (int64_t j = 0; j < n; j++) {
            out[j] = net[j] > 0 ? net[j] : (T)0;
        }
        break;
    case BP_ACT_LEAKY_RELU:
        for (int64_t j = 0; j < n; j++) {
            out[j] = net[j] > 0 ? net[j] : (T)0.01 * net[j];
        }
        break;
    case BP_ACT_ELU:
        for (int64_t j = 0; j < n; j++) {
            out[j] = net[j] > 0 ? net[j] : EXPM1(net[j]);
        }
        break;
    case BP_ACT_SOFTPLUS:
        /* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), never overflows */
        for (int64_t j = 0; j < n; j++) {
            T x = net[j];
            out[j] = (x > 0 ? x : (T)0) + LOG1P(EXP(-FABS(x)));
        }
        break;
    case BP_ACT_GELU:
        for (int64_t j = 0; j < n; j++) {
            T x = net[j];
            /* Phi(x) = erfc(-x / sqrt 2) / 2: no cancellation for x < 0 */
            out[j] = (T)0.5 * x * VERFC(-x * (T)0.70710678118654752440);
        }
        break;
    case BP_ACT_SOFTMAX: {
        T mx = net[0];
        double sum = 0.0;
        for (int64_t j = 1; j < n; j++) {
            mx = net[j] > mx ? net[j] : mx;
        }
        for (int64_t j = 0; j < n; j++) {
            out[j] = VEXP(net[j] - mx);
            sum += (double)out[j];
        }
        T inv = (T)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) {
            out[j] *= inv;
        }
        break;
    }
    default:
        break;
    }
}

/* d *= f'(net) for one row, with out = f(net) at hand.  Not for softmax. */
static void
FN(act_grad_row)(T *d, const T *net, const T *out, int64_t n, int act)
{
    switch (act) {
    case BP_ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++) {
            d[j] *= out[j] * ((T)1 - out[j]);
        }
        break;
    case BP_ACT_TANH:
        for (int64_t j = 0; j < n; j++) {
            d[j] *= (T)1 - out[j] * out[j];
        }
        break;
    case BP_ACT_RELU:
        for (int64_t j = 0; j < n; j++) {
            d[j] = net[j] > 0 ? d[j] : (T)0;
        }
        break;
    case BP_ACT_LEAKY_RELU:
        for (int64_t j = 0; j < n; j++) {
            d[j] = net[j] > 0 ? d[j] : (T)0.01 * d[j];
        }
        break;
    case BP_ACT_ELU:
        /* for x <= 0, f(x) = e^x - 1, so f'(x) = f(x) + 1 */
        for (int64_t j = 0; j < n; j++) {
            d[j] = net[j] > 0 ? d[j] : d[j] * (out[j] + (T)1);
        }
        break;
    case BP_ACT_SOFTPLUS:
        for (int64_t j = 0; j < n; j++) {
            d[j] *= FN(sigmoid)(net[j]);
        }
        break;
    case BP_ACT_GELU:
        /* d/dx x Phi(x) = Phi(x) + x phi(x) */
        for (int64_t j = 0; j < n; j++) {
            T x = net[j];
            T cdf = (T)0.5 * VERFC(-x * (T)0.70710678118654752440);
            T pdf = (T)0.39894228040143267794 * VEXP((T)-0.5 * x * x);
            d[j] *= MULADD(x, pdf, cdf);
        }
        break;
    default: /* identity */
        break;
    }
}

/*
 * Loss of one sample and its output delta.
 *   delta (n) out: dl/dnet times scale
 *   net, out, y (n) in
 *   lp: the loss's parameter (huber's delta)
 * Returns the sample's loss l (unweighted).
 */
static double
FN(loss_row)(T *delta, const T *net, const T *out, const T *y, int64_t n,
             int act, int loss, double lp, T scale)
{
    double l = 0.0;

    switch (loss) {
    case BP_LOSS_CE: {
        /* l = -sum_j y_j log softmax_j = sum_j y_j (lse - net_j);
         * dl/dnet_j = softmax_j sum_k y_k - y_j */
        double mx = (double)net[0], sum = 0.0, sy = 0.0, lse;
        for (int64_t j = 1; j < n; j++) {
            mx = (double)net[j] > mx ? (double)net[j] : mx;
        }
        for (int64_t j = 0; j < n; j++) {
            sum += VEXP64((double)net[j] - mx);
            sy += (double)y[j];
        }
        lse = mx + log(sum);
        for (int64_t j = 0; j < n; j++) {
            if (y[j] != 0) {
                l = MULADD64((double)y[j], lse - (double)net[j], l);
            }
            delta[j] = MULADD(out[j], (T)sy, -y[j]) * scale;
        }
        break;
    }
    case BP_LOSS_BCE:
        /* l = max(z, 0) - z y + log1p(e^-|z|); dl/dz = sigmoid(z) - y */
        for (int64_t j = 0; j < n; j++) {
            double z = (double)net[j];
            l += MULADD64(-z, (double)y[j], z > 0 ? z : 0.0) +
                 log1p(exp(-fabs(z)));
            delta[j] = (out[j] - y[j]) * scale;
        }
        break;
    case BP_LOSS_POISSON:
        /* identity output read as the log rate r = out:
         * l = sum_j e^r_j - y_j r_j; dl/dr_j = e^r_j - y_j */
        for (int64_t j = 0; j < n; j++) {
            double e = exp((double)out[j]);
            l += MULADD64(-(double)y[j], (double)out[j], e);
            delta[j] = (T)(e - (double)y[j]) * scale;
        }
        break;
    default: /* elementwise in g = out - y, then the output's Jacobian */
        if (loss == BP_LOSS_MAE) {
            /* l = sum_j |g_j|; dl/dout_j = sign(g_j) (0 at 0, as torch) */
            for (int64_t j = 0; j < n; j++) {
                T g = out[j] - y[j];
                l += fabs((double)g);
                delta[j] = g > 0 ? (T)1 : (g < 0 ? (T)-1 : (T)0);
            }
        } else if (loss == BP_LOSS_HUBER) {
            /* torch.nn.HuberLoss: |g| < d ? g^2 / 2 : d (|g| - d / 2);
             * dl/dout = g clamped to [-d, d] */
            T hd = (T)lp;
            for (int64_t j = 0; j < n; j++) {
                T g = out[j] - y[j];
                double a = fabs((double)g);
                l += a < lp ? 0.5 * a * a : lp * (a - 0.5 * lp);
                delta[j] = g <= -hd ? -hd : (g >= hd ? hd : g);
            }
        } else { /* BP_LOSS_MSE: l = 1/2 sum_j (out_j - y_j)^2 */
            for (int64_t j = 0; j < n; j++) {
                T g = out[j] - y[j];
                l = MULADD64(0.5 * (double)g, (double)g, l);
                delta[j] = g;
            }
        }
        if (act == BP_ACT_SOFTMAX) {
            /* Jacobian of softmax: delta_j = s_j (g_j - sum_k g_k s_k) */
            double dot = 0.0;
            for (int64_t j = 0; j < n; j++) {
                dot = MULADD64((double)delta[j], (double)out[j], dot);
            }
            for (int64_t j = 0; j < n; j++) {
                delta[j] = out[j] * (delta[j] - (T)dot);
            }
        } else {
            FN(act_grad_row)(delta, net, out, n, act);
        }
        for (int64_t j = 0; j < n; j++) {
            delta[j] *= scale;
        }
        break;
    }
    return l;
}

/*
 * net = x W + b for a block of rows (serial).
 *   net (rows, n_out) out;  x (rows, n_in) in
 *   W (n_in, n_out) in;  b (n_out) in
 * Every entry is b_j + sum_a x_a W_aj summed in order of a, whatever the
 * blocking, so bits do not depend on how rows are split.
 */
static void
FN(dense_rows)(T *restrict net, const T *restrict x, int64_t rows,
               int64_t n_in, const T *restrict W, const T *restrict b,
               int64_t n_out)
{
    int64_t i = 0;
    for (; i + 4 <= rows; i += 4) {
        T *n0 = net + i * n_out, *n1 = n0 + n_out;
        T *n2 = n1 + n_out, *n3 = n2 + n_out;
        const T *x0 = x + i * n_in, *x1 = x0 + n_in;
        const T *x2 = x1 + n_in, *x3 = x2 + n_in;
        for (int64_t j = 0; j < n_out; j++) {
            n0[j] = b[j];
            n1[j] = b[j];
            n2[j] = b[j];
            n3[j] = b[j];
        }
        for (int64_t a = 0; a < n_in; a++) {
            const T *w_a = W + a * n_out;
            T v0 = x0[a], v1 = x1[a], v2 = x2[a], v3 = x3[a];
            for (int64_t j = 0; j < n_out; j++) {
                n0[j] += v0 * w_a[j];
                n1[j] += v1 * w_a[j];
                n2[j] += v2 * w_a[j];
                n3[j] += v3 * w_a[j];
            }
        }
    }
    for (; i < rows; i++) {
        T *n_i = net + i * n_out;
        const T *x_i = x + i * n_in;
        for (int64_t j = 0; j < n_out; j++) {
            n_i[j] = b[j];
        }
        for (int64_t a = 0; a < n_in; a++) {
            const T *w_a = W + a * n_out;
            T v = x_i[a];
            for (int64_t j = 0; j < n_out; j++) {
                n_i[j] += v * w_a[j];
            }
        }
    }
}

/* net += b for a block of rows (after a product from the kernel). */
static void
FN(bias_rows)(T *restrict net, const T *restrict b, int64_t rows,
              int64_t n_out)
{
    for (int64_t i = 0; i < rows; i++) {
        T *n_i = net + i * n_out;
        for (int64_t j = 0; j < n_out; j++) {
            n_i[j] += b[j];
        }
    }
}

/* Dot product in a fixed order (eight interleaved partial sums). */
static inline T
FN(dot)(const T *restrict u, const T *restrict v, int64_t n)
{
    T s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        for (int r = 0; r < 8; r++) {
            s[r] += u[j + r] * v[j + r];
        }
    }
    for (int r = 0; j < n; j++, r++) {
        s[r] += u[j] * v[j];
    }
    return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

/* The kernel table's product for this element type. */
static inline void
FN(product)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa, const T *B,
         int64_t rsb, int64_t csb, int64_t m, int64_t n, int64_t k,
         T *scratch)
{
    GEMM_FN(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, 0, scratch);
}

/*
 * C = x W for a few rows without packing, summing each entry exactly as
 * the kernel does: over the depth in blocks of PRODUCT_KC (the kernel's
 * GEMM_KC, or all of it in the reference build), a = x w + a per step (one
 * FMA where the build has it, as in the kernel), block sums added in
 * order.  So predict on one sample gives forward's bits, and how the
 * columns are cut into passes changes nothing.  Each row of W is read once
 * per pass for all the rows of x (R of them, a constant after inlining).
 * A pass keeps JB columns of each row's sums in registers (JB a constant):
 * wide passes keep enough FMA chains in flight and read W in long runs,
 * which is what one sample's predict is limited by.
 *   C (R, n) out, columns [j0, j0 + nj) with nj <= JB;
 *   x (R, k) in;  W (k, n) in
 */
#define SMALL_JB 32              /* columns per block when threads share */
#define SMALL_SUMS (512 / (int)sizeof(T))  /* sums per pass: 16 AVX2 regs */
#define SMALL_ACC (SMALL_SUMS > SMALL_JB ? SMALL_SUMS : SMALL_JB)
static INLINE void
FN(product_small_cols)(T *restrict C, const T *restrict x,
                       const T *restrict W, int64_t k, int64_t n, int64_t j0,
                       int64_t nj, const int R, const int JB)
{
    for (int64_t p0 = 0; p0 < k; p0 += PRODUCT_KC) {
        int64_t p1 = k - p0 < PRODUCT_KC ? k : p0 + PRODUCT_KC;
        T acc[BP_PREDICT_SMALL][SMALL_ACC];
        for (int r = 0; r < R; r++) {
            for (int64_t j = 0; j < JB; j++) {
                acc[r][j] = 0;
            }
        }
        if (nj == JB) {
            for (int64_t p = p0; p < p1; p++) {
                const T *w_p = W + p * n + j0;
                for (int r = 0; r < R; r++) {
                    T v = x[r * k + p];
                    for (int64_t j = 0; j < JB; j++) {
                        acc[r][j] = MULADD(v, w_p[j], acc[r][j]);
                    }
                }
            }
        } else {
            for (int64_t p = p0; p < p1; p++) {
                const T *w_p = W + p * n + j0;
                for (int r = 0; r < R; r++) {
                    T v = x[r * k + p];
                    for (int64_t j = 0; j < nj; j++) {
                        acc[r][j] = MULADD(v, w_p[j], acc[r][j]);
                    }
                }
            }
        }
        for (int r = 0; r < R; r++) {
            T *c_r = C + r * n + j0;
            for (int64_t j = 0; j < nj; j++) {
                c_r[j] = p0 == 0 ? acc[r][j] : c_r[j] + acc[r][j];
            }
        }
    }
}

/* Columns [j0, j1) for R rows: passes of JB columns, then of SMALL_JB. */
static INLINE void
FN(product_small_range)(T *restrict C, const T *restrict x,
                        const T *restrict W, int64_t k, int64_t n, int64_t j0,
                        int64_t j1, const int R, const int JB)
{
    int64_t j = j0;
    for (; j1 - j >= JB; j += JB) {
        FN(product_small_cols)(C, x, W, k, n, j, JB, R, JB);
    }
    for (; j < j1; j += SMALL_JB) {
        int64_t nj = j1 - j < SMALL_JB ? j1 - j : SMALL_JB;
        FN(product_small_cols)(C, x, W, k, n, j, nj, R, SMALL_JB);
    }
}

/* product_small_cols for columns [j0, j1), rows of x at most
 * BP_PREDICT_SMALL.  One row takes the widest passes, four the narrowest:
 * the sums of a pass fill about the same registers. */
static void
FN(product_small)(T *restrict C, const T *restrict x, const T *restrict W,
                  int64_t rows, int64_t k, int64_t n, int64_t j0, int64_t j1)
{
    switch (rows) {
    case 1:
        FN(product_small_range)(C, x, W, k, n, j0, j1, 1, SMALL_SUMS);
        break;
    case 2:
        FN(product_small_range)(C, x, W, k, n, j0, j1, 2, SMALL_SUMS / 2);
        break;
    case 3:
        FN(product_small_range)(C, x, W, k, n, j0, j1, 3, SMALL_SUMS / 4);
        break;
    default:
        FN(product_small_range)(C, x, W, k, n, j0, j1, BP_PREDICT_SMALL,
                                SMALL_SUMS / 4);
        break;
    }
}

/*
 * C = A B shared by the threads of the enclosing region: the larger of the
 * two output dimensions is cut into one slice per thread (whole blocks of
 * 16).  Each entry is computed by one thread in the kernel's fixed order.
 * scratch holds GEMM_SCRATCH_ELEMS per thread.  Ends with a barrier.
 */
static void
FN(product_par)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,
             const T *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,
             int64_t k, T *scratch)
{
    int nt = team_size(), tid = thread_id();
    T *mine = scratch + (int64_t)tid * GEMM_SCRATCH_ELEMS;
    int split_cols = n >= m;
    int64_t len = split_cols ? n : m;
    int64_t per = ((len + 15) / 16 + nt - 1) / nt * 16;
    int64_t lo = (int64_t)tid * per;
    int64_t hi = lo + per < len ? lo + per : len;

    if (lo < hi) {
        if (split_cols) {
            FN(product)(C + lo, ldc, A, rsa, csa, B + lo * csb, rsb, csb, m,
                     hi - lo, k, mine);
        } else {
            FN(product)(C + lo * ldc, ldc, A + lo * rsa, rsa, csa, B, rsb, csb,
                     hi - lo, n, k, mine);
        }
    }
#pragma omp barrier
}

/*
 * Inverted dropout (see bp_arch): rows [r0, r0 + rows) of hidden layer
 * k + 1's outputs out (rows, n) are kept and scaled by 1 / (1 - rate), or
 * zeroed.  No-op without dropout or at rate 0.
 */
static void
FN(drop_rows)(T *out, int64_t r0, int64_t rows, int64_t n,
              const bp_arch *arch, int64_t k)
{
    double rate = arch->dropout != NULL ? arch->dropout[k] : 0.0;
    T inv;
    if (rate == 0.0) {
        return;
    }
    inv = (T)(1.0 / (1.0 - rate));
    for (int64_t i = 0; i < rows; i++) {
        uint64_t hr = bp_dropout_row(arch->drop_seed, r0 + i);
        T *o_i = out + i * n;
        for (int64_t j = 0; j < n; j++) {
            o_i[j] = bp_dropout_keep_h(hr, k, j, rate) ? o_i[j] * inv : (T)0;
        }
    }
}

/*
 * d *= f'(net) for row i of hidden layer k + 1 (as act_grad_row), and,
 * with dropout there, by the row's mask times 1 / (1 - rate).  out then
 * holds the dropped outputs, so f(net) is computed again from net (by
 * act_row, the same bits as the forward pass) in pieces of 64 units.
 */
#define DROP_PIECE 64
static void
FN(act_grad_drop_row)(T *d, const T *net, const T *out, int64_t n, int act,
                      const bp_arch *arch, int64_t k, int64_t i)
{
    double rate = arch->dropout != NULL ? arch->dropout[k] : 0.0;
    uint64_t hr;
    T inv, f[DROP_PIECE];
    if (rate == 0.0) {
        FN(act_grad_row)(d, net, out, n, act);
        return;
    }
    hr = bp_dropout_row(arch->drop_seed, i);
    inv = (T)(1.0 / (1.0 - rate));
    for (int64_t j0 = 0; j0 < n; j0 += DROP_PIECE) {
        int64_t nj = n - j0 < DROP_PIECE ? n - j0 : DROP_PIECE;
        FN(act_row)(f, net + j0, nj, act);
        FN(act_grad_row)(d + j0, net + j0, f, nj, act);
        for (int64_t j = 0; j < nj; j++) {
            d[j0 + j] = bp_dropout_keep_h(hr, k, j0 + j, rate)
                            ? d[j0 + j] * inv : (T)0;
        }
    }
}

/*
 * Forward pass through every layer, keeping net and out.
 *   net[k], out[k] (m, n_k) out, k = 1..L;  X (m, n_0) in
 */
static void
FN(forward_body)(T *const *net, T *const *out, const T *X, const T *params,
                 const bp_arch *arch, const int64_t *w_off,
                 const int64_t *b_off, int64_t m, T *scratch)
{
    int64_t L = arch->n_layers - 1;
    int64_t n_blocks = (m + ROW_BLOCK - 1) / ROW_BLOCK;

    for (int64_t k = 0; k < L; k++) {
        const T *x = k == 0 ? X : out[k];
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = params + w_off[k], *b = params + b_off[k];
        int act = arch->acts[k];
        int big = layer_uses_gemm(n_in, n_out);
        if (big) {
            FN(product_par)(net[k + 1], n_out, x, n_in, 1, W, n_out, 1, m, n_out,
                         n_in, scratch);
        }
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < n_blocks; blk++) {
            int64_t r0 = blk * ROW_BLOCK;
            int64_t rows = m - r0 < ROW_BLOCK ? m - r0 : ROW_BLOCK;
            if (big) {
                FN(bias_rows)(net[k + 1] + r0 * n_out, b, rows, n_out);
            } else {
                FN(dense_rows)(net[k + 1] + r0 * n_out, x + r0 * n_in, rows,
                               n_in, W, b, n_out);
            }
            for (int64_t i = r0; i < r0 + rows; i++) {
                FN(act_row)(out[k + 1] + i * n_out, net[k + 1] + i * n_out,
                            n_out, act);
            }
            if (k + 1 < L) {
                FN(drop_rows)(out[k + 1] + r0 * n_out, r0, rows, n_out,
                              arch, k);
            }
        }
    }
}

/* Team synchronisations in one training batch: per layer two in the
 * forward pass and three in the backward one, then the loss, the last
 * barrier and the update (the tiny path: its two passes and the update). */
static double
FN(train_syncs)(const bp_arch *arch)
{
    return arch_is_tiny(arch) ? 5.0 : 5.0 * (double)(arch->n_layers - 1) + 3.0;
}

/* Sum of the sample weights in sample order (m without weights). */
static double
FN(weight_sum)(const T *sw, int64_t m)
{
    double s = 0.0;
    if (sw == NULL) {
        return (double)m;
    }
    for (int64_t i = 0; i < m; i++) {
        s += (double)sw[i];
    }
    return s;
}

/* Sum of the weights of rows idx[0..m) in that order: the same value as
 * weight_sum over the gathered rows, read from the caller's array. */
static double
FN(weight_sum_at)(const T *sw, const int64_t *idx, int64_t m)
{
    double s = 0.0;
    if (sw == NULL) {
        return (double)m;
    }
    for (int64_t i = 0; i < m; i++) {
        s += (double)sw[idx[i]];
    }
    return s;
}

/*
 * Forward and backward pass (see bp_backward_*).  lbuf (m) is scratch for
 * the weighted per-sample losses.  Returns the loss on every thread and the
 * weight sum through *wsum.  Ends with a barrier.
 */
static double
FN(backward_body)(T *grad, T *const *delta, T *const *net, T *const *out,
                  double *lbuf, double *wsum, const T *X, const T *Y,
                  const T *sw, const T *params, const bp_arch *arch,
                  const int64_t *w_off, const int64_t *b_off, int64_t m,
                  T *scratch)
{
    int64_t L = arch->n_layers - 1;
    int64_t n_L = arch->sizes[L];
    int64_t n_blocks = (m + ROW_BLOCK - 1) / ROW_BLOCK;
    double S, loss = 0.0;

    FN(forward_body)(net, out, X, params, arch, w_off, b_off, m, scratch);

    /* Every thread computes the same S, in the same order. */
    S = FN(weight_sum)(sw, m);
    *wsum = S;

#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        T s_i = sw != NULL ? sw[i] : (T)1;
        double l = FN(loss_row)(delta[L] + i * n_L, net[L] + i * n_L,
                                out[L] + i * n_L, Y + i * n_L, n_L,
                                arch->acts[L - 1], arch->loss,
                                arch->loss_param, (T)((double)s_i / S));
        lbuf[i] = sw != NULL ? (double)s_i * l : l;
    }
    for (int64_t i = 0; i < m; i++) {
        loss += lbuf[i];
    }
    loss /= S;

    for (int64_t k = L - 1; k >= 0; k--) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *x = k == 0 ? X : out[k];
        const T *d = delta[k + 1];
        const T *W = params + w_off[k];
        T *dW = grad + w_off[k], *db = grad + b_off[k];
        int64_t n_dw = (n_in + DW_BLOCK - 1) / DW_BLOCK;
        int64_t n_db = (n_out + DB_BLOCK - 1) / DB_BLOCK;

        int big = layer_uses_gemm(n_in, n_out);
        /* dW = x^T d: each thread owns whole blocks of rows of dW and sums
         * over samples in order. */
        if (big) {
            FN(product_par)(dW, n_out, x, 1, n_in, d, n_out, 1, n_in, n_out, m,
                         scratch);
            n_dw = 0;
        }
#pragma omp for schedule(static) nowait
        for (int64_t blk = 0; blk < n_dw; blk++) {
            int64_t a0 = blk * DW_BLOCK;
            int64_t a1 = a0 + DW_BLOCK < n_in ? a0 + DW_BLOCK : n_in;
            memset(dW + a0 * n_out, 0, (size_t)((a1 - a0) * n_out) * sizeof(T));
            for (int64_t i = 0; i < m; i++) {
                const T *x_i = x + i * n_in, *d_i = d + i * n_out;
                for (int64_t a = a0; a < a1; a++) {
                    T v = x_i[a];
                    T *dw_a = dW + a * n_out;
                    for (int64_t j = 0; j < n_out; j++) {
                        dw_a[j] += v * d_i[j];
                    }
                }
            }
        }
        /* db = sum over samples of d, accumulated in double */
#pragma omp for schedule(static) nowait
        for (int64_t blk = 0; blk < n_db; blk++) {
            double acc[DB_BLOCK];
            int64_t j0 = blk * DB_BLOCK;
            int64_t nj = n_out - j0 < DB_BLOCK ? n_out - j0 : DB_BLOCK;
            for (int64_t j = 0; j < nj; j++) {
                acc[j] = 0.0;
            }
            for (int64_t i = 0; i < m; i++) {
                const T *d_i = d + i * n_out + j0;
                for (int64_t j = 0; j < nj; j++) {
                    acc[j] += (double)d_i[j];
                }
            }
            for (int64_t j = 0; j < nj; j++) {
                db[j0 + j] = (T)acc[j];
            }
        }
        /* delta_k = f'(net_k) * (d W^T); at k = 0, dE/dX when asked for */
        if (k > 0 || delta[0] != NULL) {
            T *dp = delta[k];
            if (big) {
                FN(product_par)(dp, n_in, d, n_out, 1, W, 1, n_out, m, n_in,
                             n_out, scratch);
            }
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < n_blocks; blk++) {
                int64_t r0 = blk * ROW_BLOCK;
                int64_t r1 = r0 + ROW_BLOCK < m ? r0 + ROW_BLOCK : m;
                for (int64_t i = r0; i < r1; i++) {
                    T *dp_i = dp + i * n_in;
                    const T *d_i = d + i * n_out;
                    for (int64_t a = 0; a < n_in && !big; a++) {
                        dp_i[a] = FN(dot)(d_i, W + a * n_out, n_out);
                    }
                    if (k > 0) {
                        FN(act_grad_drop_row)(dp_i, net[k] + i * n_in,
                                              out[k] + i * n_in, n_in,
                                              arch->acts[k - 1], arch, k - 1,
                                              i);
                    }
                }
            }
        }
    }
#pragma omp barrier
    return loss;
}

/* One SGD step of parameter i, value p, gradient g: the new value. */
static INLINE T
FN(sgd_one)(T p, T g, T *restrict s1, int64_t i, T lr, T wd, T mu,
            int nesterov)
{
    if (wd != 0) {
        g = MULADD(wd, p, g);
    }
    if (s1 != NULL) {
        /* v = mu v + g (v starts at 0, so the first v is g) */
        T v = MULADD(mu, s1[i], g);
        s1[i] = v;
        g = nesterov ? MULADD(mu, v, g) : v;
    }
    return MULADD(-lr, g, p);
}

/* SGD on entries [lo, hi) with weight decay wd (0 for biases), gradients
 * scaled by gs (1, an exact no-op, unless clipping).  The loop-invariant
 * branches are hoisted by the compiler, so it vectorises. */
static void
FN(sgd_range)(T *restrict params, const T *restrict grad, T *restrict s1,
              int64_t lo, int64_t hi, T lr, T wd, T mu, int nesterov, T gs)
{
#pragma omp for schedule(static) nowait
    for (int64_t i = lo; i < hi; i++) {
        params[i] = FN(sgd_one)(params[i], grad[i] * gs, s1, i, lr, wd, mu,
                                nesterov);
    }
}

/* One Adam or AdamW step of parameter i: the new value. */
static INLINE T
FN(adam_one)(T p, T g, T *restrict s1, T *restrict s2, int64_t i, T lr, T wd,
             int decoupled, T omb1, T tb2, T omb2, T step, T bc2_sqrt, T eps)
{
    if (wd != 0) {
        if (decoupled) {
            p *= MULADD(-lr, wd, (T)1);
        } else {
            g = MULADD(wd, p, g);
        }
    }
    s1[i] = MULADD(omb1, g - s1[i], s1[i]);
    s2[i] = MULADD(tb2, s2[i], omb2 * g * g);
    return MULADD(-step, s1[i] / (SQRT(s2[i]) / bc2_sqrt + eps), p);
}

/* Adam or AdamW on entries [lo, hi) with weight decay wd (0 for biases). */
static void
FN(adam_range)(T *restrict params, const T *restrict grad, T *restrict s1,
               T *restrict s2, int64_t lo, int64_t hi, T lr, T wd,
               int decoupled, T omb1, T tb2, T omb2, T step, T bc2_sqrt,
               T eps, T gs)
{
#pragma omp for schedule(static) nowait
    for (int64_t i = lo; i < hi; i++) {
        params[i] = FN(adam_one)(params[i], grad[i] * gs, s1, s2, i, lr, wd,
                                 decoupled, omb1, tb2, omb2, step, bc2_sqrt,
                                 eps);
    }
}

/*
 * The clipping factor of torch.nn.utils.clip_grad_norm_ for grad (n):
 * min(1, clip / (||grad||_2 + 1e-6)), the squares summed in double in a
 * fixed order (eight interleaved sums), so every thread that calls it gets
 * the same bits.
 */
static T
FN(clip_scale)(const T *grad, int64_t n, double clip)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, norm, coef;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int r = 0; r < 8; r++) {
            double g = (double)grad[i + r];
            s[r] += g * g;
        }
    }
    for (int r = 0; i < n; i++, r++) {
        double g = (double)grad[i];
        s[r] += g * g;
    }
    norm = sqrt(((s[0] + s[4]) + (s[1] + s[5])) +
                ((s[2] + s[6]) + (s[3] + s[7])));
    coef = clip / (norm + 1e-6);
    return coef < 1.0 ? (T)coef : (T)1;
}

/*
 * One optimizer update over the flat buffers (work-shared over entries;
 * weights [0, n_weights) get weight decay, biases do not).  t is the
 * update's number, counted from 1.  Ends with a barrier.
 */
static void
FN(update_body)(T *params, const T *grad, const bp_optim *opt, int64_t t,
                int64_t n, int64_t n_weights)
{
    T lr = (T)opt->lr, wd = (T)opt->weight_decay;
    T *s1 = (T *)opt->state1, *s2 = (T *)opt->state2;
    /* every thread computes the same factor */
    T gs = opt->clip_norm > 0 ? FN(clip_scale)(grad, n, opt->clip_norm)
                              : (T)1;

    if (opt->kind == BP_OPT_SGD) {
        T mu = (T)opt->momentum;
        FN(sgd_range)(params, grad, s1, 0, n_weights, lr, wd, mu,
                      opt->nesterov, gs);
        FN(sgd_range)(params, grad, s1, n_weights, n, lr, 0, mu,
                      opt->nesterov, gs);
    } else {
        double b1 = opt->beta1, b2 = opt->beta2;
        T omb1 = (T)(1.0 - b1), tb2 = (T)b2, omb2 = (T)(1.0 - b2);
        T step = (T)(opt->lr / (1.0 - pow(b1, (double)t)));
        T bc2_sqrt = (T)sqrt(1.0 - pow(b2, (double)t));
        T eps = (T)opt->eps;
        int decoupled = opt->kind == BP_OPT_ADAMW;
        FN(adam_range)(params, grad, s1, s2, 0, n_weights, lr, wd, decoupled,
                       omb1, tb2, omb2, step, bc2_sqrt, eps, gs);
        FN(adam_range)(params, grad, s1, s2, n_weights, n, lr, 0, decoupled,
                       omb1, tb2, omb2, step, bc2_sqrt, eps, gs);
    }
#pragma omp barrier
}

static bp_status
FN(check_optim)(const bp_optim *opt)
{
    if (opt == NULL || !(opt->clip_norm >= 0.0)) {
        return BP_EARG;
    }
    switch (opt->kind) {
    case BP_OPT_SGD:
        return BP_OK;
    case BP_OPT_ADAM:
    case BP_OPT_ADAMW:
        return opt->state1 != NULL && opt->state2 != NULL ? BP_OK : BP_EARG;
    default:
        return BP_EARG;
    }
}

/* Layout offsets for an architecture, checked.  w_off, b_off hold L. */
static bp_status
FN(prepare)(int64_t *w_off, int64_t *b_off, int64_t *n_weights,
            int64_t *n_params, const bp_arch *arch)
{
    bp_status s = bp_arch_check(arch);
    if (s != BP_OK) {
        return s;
    }
    return bp_layout(w_off, b_off, n_weights, n_params, arch->sizes,
                     arch->n_layers);
}

typedef struct {
    T *Y;
    const T *X, *params;
    const bp_arch *arch;
    const int64_t *w_off, *b_off;
    int64_t m;
    void *work;
    int64_t per_thread, width, n_blocks, L;
} FN(predict_ctx);

/* The body of predict, run by every thread of the team. */
static void
FN(predict_region)(const FN(predict_ctx) *c)
{
    T *Y = c->Y;
    const T *X = c->X, *params = c->params;
    const bp_arch *arch = c->arch;
    const int64_t *w_off = c->w_off, *b_off = c->b_off;
    int64_t m = c->m, per_thread = c->per_thread, width = c->width;
    int64_t n_blocks = c->n_blocks, L = c->L;
    void *work = c->work;
    char *mine = (char *)align64(work) + (int64_t)thread_id() * per_thread;
    int64_t brows = m <= BP_PREDICT_SMALL ? BP_PREDICT_SMALL
                                          : predict_block_rows(m);
    T *buf[2], *scratch;
    buf[0] = (T *)mine;
    buf[1] = (T *)align64(mine + width * brows * 8);
    scratch = (T *)align64((char *)buf[1] + width * brows * 8);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t r0 = blk * brows;
        int64_t rows = m - r0 < brows ? m - r0 : brows;
        const T *x = X + r0 * arch->sizes[0];
        for (int64_t k = 0; k < L; k++) {
            int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
            const T *W = params + w_off[k], *b = params + b_off[k];
            T *dst = k == L - 1 ? Y + r0 * n_out : buf[k & 1];
            if (layer_uses_gemm(n_in, n_out) && rows <= BP_PREDICT_SMALL) {
                FN(product_small)(dst, x, W, rows, n_in, n_out, 0, n_out);
                FN(bias_rows)(dst, b, rows, n_out);
            } else if (layer_uses_gemm(n_in, n_out)) {
                FN(product)(dst, n_out, x, n_in, 1, W, n_out, 1, rows, n_out,
                            n_in, scratch);
                FN(bias_rows)(dst, b, rows, n_out);
            } else {
                FN(dense_rows)(dst, x, rows, n_in, W, b, n_out);
            }
            for (int64_t i = 0; i < rows; i++) {
                FN(act_row)(dst + i * n_out, dst + i * n_out, n_out,
                            arch->acts[k]);
            }
            x = dst;
        }
    }
}

/*
 * predict of at most BP_PREDICT_SMALL rows by a team: each layer's columns
 * are shared out in runs of whole SMALL_JB blocks, one run per thread (each
 * thread reads only its slice of W, which can then stay in its core's cache
 * from call to call), with a barrier between layers.  Entries are computed
 * as on one thread.
 */
static void
FN(predict_small_region)(const FN(predict_ctx) *c)
{
    const bp_arch *arch = c->arch;
    int64_t m = c->m, L = c->L;
    T *buf[2];
    const T *x = c->X;
    buf[0] = (T *)align64(c->work);
    buf[1] = (T *)align64((char *)buf[0] + c->width * BP_PREDICT_SMALL * 8);
    for (int64_t k = 0; k < L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = c->params + c->w_off[k], *b = c->params + c->b_off[k];
        T *dst = k == L - 1 ? c->Y : buf[k & 1];
        int act = arch->acts[k];
        /* every thread takes the same branch */
        if (layer_uses_gemm(n_in, n_out) && act != BP_ACT_SOFTMAX) {
            /* one run of whole SMALL_JB blocks of columns per thread */
            int64_t n_blk = (n_out + SMALL_JB - 1) / SMALL_JB;
            int nt = team_size(), tid = thread_id();
            int64_t j0 = n_blk * tid / nt * SMALL_JB;
            int64_t j1 = n_blk * (tid + 1) / nt * SMALL_JB;
            j1 = j1 < n_out ? j1 : n_out;
            if (j0 < j1) {
                FN(product_small)(dst, x, W, m, n_in, n_out, j0, j1);
                for (int64_t i = 0; i < m; i++) {
                    T *d_ij = dst + i * n_out + j0;
                    FN(bias_rows)(d_ij, b + j0, 1, j1 - j0);
                    FN(act_row)(d_ij, d_ij, j1 - j0, act);
                }
            }
#pragma omp barrier
        } else {
            /* a narrow layer, or softmax (needs whole rows): by rows */
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++) {
                T *d_i = dst + i * n_out;
                if (layer_uses_gemm(n_in, n_out)) {
                    FN(product_small)(d_i, x + i * n_in, W, 1, n_in, n_out,
                                      0, n_out);
                    FN(bias_rows)(d_i, b, 1, n_out);
                } else {
                    FN(dense_rows)(d_i, x + i * n_in, 1, n_in, W, b, n_out);
                }
                FN(act_row)(d_i, d_i, n_out, act);
            }
        }
        x = dst;
    }
}

static bp_status
FN(predict)(T *Y, const T *X, const T *params, const bp_arch *arch,
                     int64_t m, void *work, int64_t work_bytes, int n_threads)
{
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS], n_w, n_p, need, per_thread;
    int64_t L, n_blocks, width, brows;
    int nt;
    bp_status s;

    if (arch == NULL || arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
    }
    if ((s = FN(prepare)(w_off, b_off, &n_w, &n_p, arch)) != BP_OK) {
        return s;
    }
    if (Y == NULL || X == NULL || params == NULL || work == NULL) {
        return BP_EARG;
    }
    if (m < 0) {
        return BP_ESHAPE;
    }
    nt = resolve_threads(n_threads);
    if ((double)m * arch_weights(arch) * 2.0 < BP_PARALLEL_MIN_FLOPS ||
            (m <= BP_PREDICT_ROWS && m > BP_PREDICT_SMALL)) {
        nt = 1;  /* too little work, or one block of rows: one thread */
    }
    if ((s = bp_predict_workspace_size(&need, arch, m, nt)) != BP_OK) {
        return s;
    }
    if (work_bytes < need) {
        return BP_ENOMEM;
    }
    L = arch->n_layers - 1;
    width = arch_max_width(arch);
    per_thread = predict_thread_bytes(arch, m);
    brows = predict_block_rows(m);
    n_blocks = (m + brows - 1) / brows;

    {
        FN(predict_ctx) c = {Y, X, params, arch, w_off, b_off, m, work,
                             per_thread, width, n_blocks, L};
        if (m <= BP_PREDICT_SMALL && nt > 1) {
            RUN_TEAM(nt, FN(predict_small_region)(&c));
        } else {
            RUN_TEAM(nt, FN(predict_region)(&c));
        }
    }
    return BP_OK;
}

/* Kernel scratch for nt threads, or NULL when out of memory. */
static T *
FN(alloc_scratch)(int nt)
{
    return (T *)malloc((size_t)nt * (size_t)GEMM_SCRATCH_ELEMS * sizeof(T));
}

/*
 * The calibration chain (see calibrate.c): reps steps of x <- x W with x
 * (CAL_M, CAL_N) and W (CAL_N, CAL_N), each step reading the whole output
 * of the one before, shared by the team as training shares a layer's
 * products (product_par, its barrier, then a row loop with its barrier).
 * work holds 2 CAL_M x CAL_N buffers, W, and the team's kernel scratch.
 */
static void
FN(cal_chain_region)(T *work, int64_t reps)
{
    T *x[2], *W = work + 2 * CAL_M * CAL_N;
    T *scratch = W + CAL_N * CAL_N;
    x[0] = work;
    x[1] = work + CAL_M * CAL_N;
    for (int64_t r = 0; r < reps; r++) {
        T *src = x[r & 1], *dst = x[(r + 1) & 1];
        FN(product_par)(dst, CAL_N, src, CAL_N, 1, W, CAL_N, 1, CAL_M, CAL_N,
                        CAL_N, scratch);
#pragma omp for schedule(static)
        for (int64_t i = 0; i < CAL_M; i++) {
            for (int64_t j = 0; j < CAL_N; j++) {
                T v = dst[i * CAL_N + j];
                dst[i * CAL_N + j] = v > 0 ? v * (T)0.5 : (T)0;
            }
        }
    }
}

/* Seconds per step of the calibration chain on nt threads, best of
 * trials; a negative value when out of memory. */
static double
FN(cal_chain)(int nt, int64_t reps, int trials)
{
    int64_t n = 2 * CAL_M * CAL_N + CAL_N * CAL_N;
    T *work = (T *)malloc(((size_t)n + (size_t)nt * GEMM_SCRATCH_ELEMS) *
                          sizeof(T));
    double best = -1.0;
    if (work == NULL) {
        return -1.0;
    }
    for (int64_t i = 0; i < n; i++) {
        work[i] = (T)((i * 7 % 13) - 6) * (T)0.01;
    }
    RUN_TEAM(nt, FN(cal_chain_region)(work, 2));  /* warm the team */
    for (int t = 0; t < trials; t++) {
        double t0 = cal_now(), dt;
        RUN_TEAM(nt, FN(cal_chain_region)(work, reps));
        dt = (cal_now() - t0) / (double)reps;
        if (best < 0 || dt < best) {
            best = dt;
        }
    }
    free(work);
    return best;
}

/*
 * C (m, n) = op(A) op(B) by the layer product of this kernel on n_threads
 * threads (bp_matmul_*): A (m, k), or (k, m) stored when trans_a; B (k, n),
 * or (n, k) stored when trans_b.  The three products of a layer are
 * X W, X^T delta (trans_a) and delta W^T (trans_b).
 */
static bp_status
FN(matmul)(T *C, const T *A, const T *B, int64_t m, int64_t n, int64_t k,
           int trans_a, int trans_b, int n_threads)
{
    int64_t rsa = trans_a ? 1 : k, csa = trans_a ? m : 1;
    int64_t rsb = trans_b ? 1 : n, csb = trans_b ? k : 1;
    int nt;
    T *scratch;

    if (C == NULL || A == NULL || B == NULL) {
        return BP_EARG;
    }
    if (m < 1 || n < 1 || k < 1) {
        return BP_ESHAPE;
    }
    nt = resolve_threads(n_threads);
    if ((scratch = FN(alloc_scratch)(nt)) == NULL) {
        return BP_ENOMEM;
    }
    RUN_TEAM(nt, FN(product_par)(C, n, A, rsa, csa, B, rsb, csb, m, n, k,
                                 scratch));
    free(scratch);
    return BP_OK;
}

static bp_status
FN(forward)(T *const *net, T *const *out, const T *X,
                     const T *params, const bp_arch *arch, int64_t m,
                     int n_threads)
{
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS], n_w, n_p;
    int nt;
    T *scratch;
    bp_status s;

    if (arch == NULL || arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
    }
    if ((s = FN(prepare)(w_off, b_off, &n_w, &n_p, arch)) != BP_OK) {
        return s;
    }
    if (net == NULL || out == NULL || X == NULL || params == NULL) {
        return BP_EARG;
    }
    for (int64_t k = 1; k < arch->n_layers; k++) {
        if (net[k] == NULL || out[k] == NULL) {
            return BP_EARG;
        }
    }
    if (m < 0) {
        return BP_ESHAPE;
    }
    nt = resolve_threads(n_threads);
    if ((double)m * arch_weights(arch) * 2.0 < BP_PARALLEL_MIN_FLOPS) {
        nt = 1;
    }
    scratch = FN(alloc_scratch)(nt);
    if (scratch == NULL) {
        return BP_ENOMEM;
    }
    RUN_TEAM(nt, FN(forward_body)(net, out, X, params, arch, w_off, b_off, m,
                                  scratch));
    free(scratch);
    return BP_OK;
}

typedef struct {
    T *grad;
    T *const *delta, *const *net, *const *out;
    double *lbuf;
    const T *X, *Y, *sw, *params;
    const bp_arch *arch;
    const int64_t *w_off, *b_off;
    int64_t m;
    T *scratch;
    double loss; /* out */
} FN(backward_ctx);

static void
FN(backward_region)(FN(backward_ctx) *c)
{
    double wsum;
    double l = FN(backward_body)(c->grad, c->delta, c->net, c->out, c->lbuf,
                                 &wsum, c->X, c->Y, c->sw, c->params, c->arch,
                                 c->w_off, c->b_off, c->m, c->scratch);
    if (thread_id() == 0) {
        c->loss = l;
    }
}

static bp_status
FN(backward)(T *grad, T *const *delta, T *const *net,
                      T *const *out, double *loss, const T *X, const T *Y,
                      const T *sw, const T *params, const bp_arch *arch,
                      int64_t m, int n_threads)
{
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS], n_w, n_p;
    double *lbuf, result = 0.0;
    int nt;
    T *scratch;
    bp_status s;

    if (arch == NULL || arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
    }
    if ((s = FN(prepare)(w_off, b_off, &n_w, &n_p, arch)) != BP_OK) {
        return s;
    }
    if (grad == NULL || delta == NULL || net == NULL || out == NULL ||
            loss == NULL || X == NULL || Y == NULL || params == NULL) {
        return BP_EARG;
    }
    for (int64_t k = 1; k < arch->n_layers; k++) {
        if (net[k] == NULL || out[k] == NULL || delta[k] == NULL) {
            return BP_EARG;
        }
    }
    if (m < 1) {
        return BP_ESHAPE;
    }
    if (FN(weight_sum)(sw, m) <= 0.0) {
        return BP_EARG;
    }
    nt = team_for(resolve_threads(n_threads),
                  (double)m * arch_weights(arch) * 6.0,
                  FN(train_syncs)(arch) - 2.0, sizeof(T) == 8);
    /* Scratch: the per-sample losses and the kernel's packing buffers. */
    lbuf = (double *)malloc((size_t)m * sizeof(double));
    scratch = FN(alloc_scratch)(nt);
    if (lbuf == NULL || scratch == NULL) {
        free(lbuf);
        free(scratch);
        return BP_ENOMEM;
    }
    {
        FN(backward_ctx) c = {grad, delta, net, out, lbuf, X, Y, sw, params,
                              arch, w_off, b_off, m, scratch, 0.0};
        RUN_TEAM(nt, FN(backward_region)(&c));
        result = c.loss;
    }
    free(lbuf);
    free(scratch);
    *loss = result;
    return BP_OK;
}

static bp_status
FN(update)(T *params, const T *grad, bp_optim *opt, int64_t n,
                          int64_t n_weights, int n_threads)
{
    int nt;
    int64_t t;
    bp_status s;

    if (params == NULL || grad == NULL) {
        return BP_EARG;
    }
    if ((s = FN(check_optim)(opt)) != BP_OK) {
        return s;
    }
    if (n < 0 || n_weights < 0 || n_weights > n) {
        return BP_ESHAPE;
    }
    nt = resolve_threads(n_threads);
    if ((double)n * 8.0 < BP_PARALLEL_MIN_FLOPS) {
        nt = 1;
    }
    t = opt->t + 1;
    RUN_TEAM(nt, FN(update_body)(params, grad, opt, t, n, n_weights));
    opt->t = t;
    return BP_OK;
}

/*
 * The tiny-network path.  A group of TINY_LANES samples is held as
 * arrays [unit][lane], so every loop over lanes vectorises; activations
 * reuse the row functions on one unit's lanes.  The forward values are
 * computed as dense_rows does (b + sum over inputs in order), so they
 * equal predict's bits.
 */
typedef T FN(lanes)[TINY_LANES];

/* Loss and output delta for one group; returns the weighted loss sum.
 * z, h: output net and out [n][lanes]; y rows; scale[l] = s_l / S. */
static INLINE double
FN(tiny_loss)(FN(lanes) *d, FN(lanes) *z, FN(lanes) *h, const T *Y,
              const T *sw, int64_t i0, int nl, int64_t n, int act, int loss,
              double lp, const T *scale, const int LN)
{
    double total = 0.0;
    if (loss == BP_LOSS_MSE && act != BP_ACT_SOFTMAX) {
        /* the common case, lanes side by side (per lane the sums of
         * loss_row, in its order); unused lanes end at zero through their
         * zero scale */
        double li[TINY_LANES];
        for (int l = 0; l < LN; l++) {
            li[l] = 0.0;
        }
        for (int64_t j = 0; j < n; j++) {
            for (int l = 0; l < LN; l++) {
                T g = h[j][l] - (l < nl ? Y[(i0 + l) * n + j] : (T)0);
                li[l] = MULADD64(0.5 * (double)g, (double)g, li[l]);
                d[j][l] = g;
            }
        }
        for (int l = 0; l < nl; l++) {
            total = sw != NULL ? MULADD64((double)sw[i0 + l], li[l], total)
                               : total + li[l];
        }
        for (int64_t j = 0; j < n; j++) {
            FN(act_grad_row)(d[j], z[j], h[j], LN, act);
            for (int l = 0; l < LN; l++) {
                d[j][l] *= scale[l];
            }
        }
        return total;
    }
    for (int l = 0; l < nl; l++) {
        const T *y = Y + (i0 + l) * n;
        double li = 0.0;
        if (loss >= BP_LOSS_MAE) {
            /* mae, huber, poisson: loss_row on this lane's values */
            T zr[TINY_MAXW], hr[TINY_MAXW], dr[TINY_MAXW];
            for (int64_t j = 0; j < n; j++) {
                zr[j] = z[j][l];
                hr[j] = h[j][l];
            }
            li = FN(loss_row)(dr, zr, hr, y, n, act, loss, lp, scale[l]);
            for (int64_t j = 0; j < n; j++) {
                d[j][l] = dr[j];
            }
        } else if (loss == BP_LOSS_CE) {
            double mx = (double)z[0][l], sum = 0.0, sy = 0.0, lse;
            for (int64_t j = 1; j < n; j++) {
                mx = (double)z[j][l] > mx ? (double)z[j][l] : mx;
            }
            for (int64_t j = 0; j < n; j++) {
                sum += VEXP64((double)z[j][l] - mx);
                sy += (double)y[j];
            }
            lse = mx + log(sum);
            for (int64_t j = 0; j < n; j++) {
                if (y[j] != 0) {
                    li = MULADD64((double)y[j], lse - (double)z[j][l], li);
                }
                d[j][l] = MULADD(h[j][l], (T)sy, -y[j]) * scale[l];
            }
        } else if (loss == BP_LOSS_BCE) {
            for (int64_t j = 0; j < n; j++) {
                double zz = (double)z[j][l];
                li += MULADD64(-zz, (double)y[j], zz > 0 ? zz : 0.0) +
                      log1p(exp(-fabs(zz)));
                d[j][l] = (h[j][l] - y[j]) * scale[l];
            }
        } else {
            /* mse with a softmax output (elementwise ones returned above):
             * delta_j = s_j (g_j - sum_k g_k s_k) */
            double dot = 0.0;
            for (int64_t j = 0; j < n; j++) {
                T g = h[j][l] - y[j];
                li = MULADD64(0.5 * (double)g, (double)g, li);
                d[j][l] = g;
            }
            for (int64_t j = 0; j < n; j++) {
                dot = MULADD64((double)d[j][l], (double)h[j][l], dot);
            }
            for (int64_t j = 0; j < n; j++) {
                d[j][l] = h[j][l] * (d[j][l] - (T)dot);
                d[j][l] *= scale[l];
            }
        }
        total = sw != NULL ? MULADD64((double)sw[i0 + l], li, total)
                           : total + li;
    }
    for (int l = nl; l < LN; l++) {
        for (int64_t j = 0; j < n; j++) {
            d[j][l] = 0;
        }
    }
    return total;
}

/*
 * Gradient sums of samples [r0, r1) (at most TINY_CHUNK) into part: the
 * n_p parameter sums, then the weighted loss sum.  LN lanes per group (a
 * constant after inlining: 16, or 1 for online learning).
 */
static INLINE void
FN(tiny_chunk_lanes)(double *part, const T *X, const T *Y, const T *sw,
                     const T *params, const bp_arch *arch,
                     const int64_t *w_off, const int64_t *b_off, int64_t n_p,
                     int64_t r0, int64_t r1, double S, const int LN)
{
    int64_t L = arch->n_layers - 1;
    const int64_t *sz = arch->sizes;
    FN(lanes) z[TINY_MAXL + 1][TINY_MAXW], h[TINY_MAXL + 1][TINY_MAXW];
    FN(lanes) d[TINY_MAXW], dp[TINY_MAXW], scale;
    FN(lanes) accw[TINY_MAXL * TINY_MAXW * TINY_MAXW];
    double accb[TINY_MAXL * TINY_MAXW][TINY_LANES];
    int64_t n_wt = b_off[0];
    double lsum = 0.0;

    for (int64_t p = 0; p < n_wt; p++) {
        for (int l = 0; l < LN; l++) {
            accw[p][l] = 0;
        }
    }
    for (int64_t p = 0; p < n_p - n_wt; p++) {
        for (int l = 0; l < LN; l++) {
            accb[p][l] = 0;
        }
    }
    for (int64_t i0 = r0; i0 < r1; i0 += LN) {
        int nl = r1 - i0 < LN ? (int)(r1 - i0) : LN;
        for (int64_t a = 0; a < sz[0]; a++) {
            for (int l = 0; l < LN; l++) {
                h[0][a][l] = l < nl ? X[(i0 + l) * sz[0] + a] : (T)0;
            }
        }
        if (sw == NULL) {
            T s1 = (T)(1.0 / S); /* (double)1 / S, as below */
            for (int l = 0; l < LN; l++) {
                scale[l] = l < nl ? s1 : (T)0;
            }
        } else {
            for (int l = 0; l < LN; l++) {
                T s_l = l < nl ? sw[i0 + l] : (T)0;
                scale[l] = (T)((double)s_l / S);
            }
        }
        for (int64_t k = 0; k < L; k++) {
            const T *W = params + w_off[k], *b = params + b_off[k];
            int64_t n_in = sz[k], n_out = sz[k + 1];
            for (int64_t j = 0; j < n_out; j++) {
                for (int l = 0; l < LN; l++) {
                    z[k + 1][j][l] = b[j];
                }
                for (int64_t a = 0; a < n_in; a++) {
                    T w = W[a * n_out + j];
                    for (int l = 0; l < LN; l++) {
                        z[k + 1][j][l] = MULADD(h[k][a][l], w, z[k + 1][j][l]);
                    }
                }
            }
            if (arch->acts[k] == BP_ACT_SOFTMAX) {
                for (int l = 0; l < LN; l++) {
                    T row[TINY_MAXW];
                    for (int64_t j = 0; j < n_out; j++) {
                        row[j] = z[k + 1][j][l];
                    }
                    FN(act_row)(row, row, n_out, BP_ACT_SOFTMAX);
                    for (int64_t j = 0; j < n_out; j++) {
                        h[k + 1][j][l] = row[j];
                    }
                }
            } else {
                for (int64_t j = 0; j < n_out; j++) {
                    FN(act_row)(h[k + 1][j], z[k + 1][j], LN,
                                arch->acts[k]);
                }
            }
        }
        lsum += FN(tiny_loss)(d, z[L], h[L], Y, sw, i0, nl, sz[L],
                              arch->acts[L - 1], arch->loss,
                              arch->loss_param, scale, LN);
        for (int64_t k = L - 1; k >= 0; k--) {
            int64_t n_in = sz[k], n_out = sz[k + 1];
            const T *W = params + w_off[k];
            FN(lanes) *aw = accw + w_off[k];
            double (*ab)[TINY_LANES] = accb + (b_off[k] - n_wt);
            for (int64_t a = 0; a < n_in; a++) {
                for (int64_t j = 0; j < n_out; j++) {
                    for (int l = 0; l < LN; l++) {
                        aw[a * n_out + j][l] = MULADD(h[k][a][l], d[j][l],
                                                      aw[a * n_out + j][l]);
                    }
                }
            }
            for (int64_t j = 0; j < n_out; j++) {
                for (int l = 0; l < LN; l++) {
                    ab[j][l] += (double)d[j][l];
                }
            }
            if (k == 0) {
                break;
            }
            for (int64_t a = 0; a < n_in; a++) {
                for (int l = 0; l < LN; l++) {
                    dp[a][l] = 0;
                }
                for (int64_t j = 0; j < n_out; j++) {
                    T w = W[a * n_out + j];
                    for (int l = 0; l < LN; l++) {
                        dp[a][l] = MULADD(d[j][l], w, dp[a][l]);
                    }
                }
                FN(act_grad_row)(dp[a], z[k][a], h[k][a], LN,
                                 arch->acts[k - 1]);
            }
            for (int64_t a = 0; a < n_in; a++) {
                for (int l = 0; l < LN; l++) {
                    d[a][l] = dp[a][l];
                }
            }
        }
    }
    for (int64_t p = 0; p < n_wt; p++) {
        double s = 0.0;
        for (int l = 0; l < LN; l++) {
            s += (double)accw[p][l];
        }
        part[p] = s;
    }
    for (int64_t p = n_wt; p < n_p; p++) {
        double s = 0.0;
        for (int l = 0; l < LN; l++) {
            s += accb[p - n_wt][l];
        }
        part[p] = s;
    }
    part[n_p] = lsum;
}

static void
FN(tiny_chunk)(double *part, const T *X, const T *Y, const T *sw,
               const T *params, const bp_arch *arch, const int64_t *w_off,
               const int64_t *b_off, int64_t n_p, int64_t r0, int64_t r1,
               double S)
{
    if (r1 - r0 < TINY_LANES / 2) {
        FN(tiny_chunk_lanes)(part, X, Y, sw, params, arch, w_off, b_off, n_p,
                             r0, r1, S, 1);
    } else {
        FN(tiny_chunk_lanes)(part, X, Y, sw, params, arch, w_off, b_off, n_p,
                             r0, r1, S, TINY_LANES);
    }
}

/*
 * Loss and gradient of a batch on the tiny path (work-shared over chunks,
 * then over parameters).  part holds (TINY_MAXP + 1) doubles per chunk.
 * Returns the loss on every thread.  Ends with a barrier.
 */
static double
FN(tiny_backward_body)(T *grad, double *part, double *wsum, const T *X,
                       const T *Y, const T *sw, const T *params,
                       const bp_arch *arch, const int64_t *w_off,
                       const int64_t *b_off, int64_t m)
{
    int64_t n_p = b_off[arch->n_layers - 2] + arch->sizes[arch->n_layers - 1];
    int64_t n_chunks = (m + TINY_CHUNK - 1) / TINY_CHUNK;
    int64_t stride = TINY_MAXP + 1;
    double S = FN(weight_sum)(sw, m), loss = 0.0;

    *wsum = S;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t r0 = c * TINY_CHUNK;
        int64_t r1 = r0 + TINY_CHUNK < m ? r0 + TINY_CHUNK : m;
        FN(tiny_chunk)(part + c * stride, X, Y, sw, params, arch, w_off,
                       b_off, n_p, r0, r1, S);
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n_p; p++) {
        double s = 0.0;
        for (int64_t c = 0; c < n_chunks; c++) {
            s += part[c * stride + p];
        }
        grad[p] = (T)s;
    }
    for (int64_t c = 0; c < n_chunks; c++) {
        loss += part[c * stride + n_p];
    }
    return loss / S;
}

/* y (n) = the one-hot row of class c. */
static INLINE void
FN(onehot_row)(T *y, int64_t n, int64_t c)
{
    for (int64_t j = 0; j < n; j++) {
        y[j] = 0;
    }
    y[c] = 1;
}

/* The training workspace's arrays (see train_plan in internal.h). */
typedef struct {
    T *Xb, *Yb, *swb;
    T *net[MAX_LAYERS], *out[MAX_LAYERS], *delta[MAX_LAYERS];
    double *lbuf;
    T *scratch;
} FN(train_ws);

/* Point ws's arrays into work, where the plan puts them. */
static void
FN(carve)(FN(train_ws) *ws, const train_plan *pl, const bp_arch *arch,
          void *work)
{
    char *base = (char *)align64(work);
#define AT(type, off) ((off) >= 0 ? (type *)(base + (off)) : NULL)
    ws->Xb = AT(T, pl->xb);
    ws->Yb = AT(T, pl->yb);
    ws->swb = AT(T, pl->swb);
    ws->lbuf = AT(double, pl->lbuf);
    ws->scratch = AT(T, pl->scratch);
    ws->net[0] = ws->out[0] = ws->delta[0] = NULL;
    for (int64_t k = 1; k < arch->n_layers; k++) {
        ws->net[k] = AT(T, pl->net[k]);
        ws->out[k] = AT(T, pl->out[k]);
        ws->delta[k] = AT(T, pl->delta[k]);
    }
#undef AT
}

typedef struct {
    T *params, *grad;
    const bp_optim *opt;
    const T *X, *Y, *sw;
    const int64_t *labels, *order;
    int64_t m, batch, first_batch, n_batches;
    const bp_arch *arch;
    const int64_t *w_off, *b_off;
    int64_t n_w, n_p;
    const FN(train_ws) *ws;
    int64_t n_in, n_L, t0;
    double lsum, wsum;  /* in: running sums; out: with this call's batches */
    int64_t done;       /* out */
    int diverged;       /* out */
} FN(train_ctx);

/* The batch loop of train, run by every thread of the team. */
static void
FN(train_region)(FN(train_ctx) *c)
{
    T *params = c->params, *grad = c->grad;
    const bp_optim *opt = c->opt;
    const T *X = c->X, *Y = c->Y, *sw = c->sw;
    const int64_t *labels = c->labels, *order = c->order;
    int64_t m = c->m, batch = c->batch, first_batch = c->first_batch;
    int64_t n_batches = c->n_batches, n_w = c->n_w, n_p = c->n_p;
    const bp_arch *arch = c->arch;
    bp_arch arch_b;
    const int64_t *w_off = c->w_off, *b_off = c->b_off;
    const FN(train_ws) ws = *c->ws;
    int64_t n_in = c->n_in, n_L = c->n_L, t0 = c->t0;
    int tiny = arch_is_tiny(arch);
    /* Every thread runs the same batch loop and takes the same branches:
     * the loss and weight sums are computed identically on each. */
    double my_lsum = c->lsum, my_wsum = c->wsum;
    int64_t my_done = 0;
    int my_diverged = 0;
    for (int64_t b = first_batch; b < first_batch + n_batches; b++) {
        int64_t start = b * batch;
        int64_t mb = m - start < batch ? m - start : batch;
        const T *Xb, *Yb, *swb;
        double loss, wsum;
        /*
         * A batch whose weights are all zero teaches nothing.  The decision
         * changes the team's path, so every thread must reach the same one:
         * it is read from the caller's read-only arrays, never from the
         * shared batch buffer, which a thread that skipped would already be
         * refilling with the next batch while another still read it.
         */
        if (sw != NULL &&
                (order != NULL ? FN(weight_sum_at)(sw, order + start, mb)
                               : FN(weight_sum)(sw + start, mb)) <= 0.0) {
            continue;
        }
        if (order != NULL) {
            const int64_t *idx = order + start;
#pragma omp for schedule(static)
            for (int64_t r = 0; r < mb; r++) {
                memcpy(ws.Xb + r * n_in, X + idx[r] * n_in,
                       (size_t)n_in * sizeof(T));
                if (labels != NULL) {
                    FN(onehot_row)(ws.Yb + r * n_L, n_L, labels[idx[r]]);
                } else {
                    memcpy(ws.Yb + r * n_L, Y + idx[r] * n_L,
                           (size_t)n_L * sizeof(T));
                }
                if (sw != NULL) {
                    ws.swb[r] = sw[idx[r]];
                }
            }
            Xb = ws.Xb;
            Yb = ws.Yb;
            swb = sw != NULL ? ws.swb : NULL;
        } else {
            Xb = X + start * n_in;
            Yb = labels != NULL ? ws.Yb : Y + start * n_L;
            swb = sw != NULL ? sw + start : NULL;
            if (labels != NULL && tiny) {
#pragma omp for schedule(static)
                for (int64_t r = 0; r < mb; r++) {
                    FN(onehot_row)(ws.Yb + r * n_L, n_L, labels[start + r]);
                }
            } else if (labels != NULL) {
                /* no barrier needed: backward_body's forward pass has one
                 * before its loss loop reads Yb */
#pragma omp for schedule(static) nowait
                for (int64_t r = 0; r < mb; r++) {
                    FN(onehot_row)(ws.Yb + r * n_L, n_L, labels[start + r]);
                }
            }
        }
        if (arch->dropout != NULL) {
            /* this batch's masks: a copy of the architecture with its seed
             * (arch_b, this thread's; every thread makes the same) */
            arch_b = *c->arch;
            arch_b.drop_seed = bp_dropout_batch_seed(c->arch->drop_seed, b);
            arch = &arch_b;
        }
        if (tiny) {
            loss = FN(tiny_backward_body)(grad, ws.lbuf, &wsum, Xb, Yb, swb,
                                          params, arch, w_off, b_off, mb);
        } else {
            loss = FN(backward_body)(grad, ws.delta, ws.net, ws.out, ws.lbuf,
                                     &wsum, Xb, Yb, swb, params, arch, w_off,
                                     b_off, mb, ws.scratch);
        }
        if (!isfinite(loss)) {
            my_diverged = 1;
            break;
        }
        FN(update_body)(params, grad, opt, t0 + my_done + 1, n_p, n_w);
        my_lsum = MULADD64(loss, wsum, my_lsum);
        my_wsum += wsum;
        my_done++;
    }
    if (thread_id() == 0) {
        c->lsum = my_lsum;
        c->wsum = my_wsum;
        c->done = my_done;
        c->diverged = my_diverged;
    }
}

/* The optimizer constants of update_body, for one update at a time. */
typedef struct {
    int sgd, nesterov, decoupled;
    T lr, wd, mu, omb1, tb2, omb2, eps, step, bc2_sqrt;
    T *s1, *s2;
} FN(upd);

/* Gradient g of parameter p (weight decay wd: 0 for biases): stores it in
 * grad[p], updates params[p] as update_body would. */
static INLINE void
FN(upd_one)(const FN(upd) *u, T *params, T *grad, int64_t p, T g, T wd)
{
    grad[p] = g;
    if (u->sgd) {
        params[p] = FN(sgd_one)(params[p], g, u->s1, p, u->lr, wd, u->mu,
                                u->nesterov);
    } else {
        params[p] = FN(adam_one)(params[p], g, u->s1, u->s2, p, u->lr, wd,
                                 u->decoupled, u->omb1, u->tb2, u->omb2,
                                 u->step, u->bc2_sqrt, u->eps);
    }
}

/*
 * Pieces of the online loop for a layer of NO outputs, NO a constant after
 * inlining (BY_WIDTH picks it), so that the loops over outputs unroll and
 * only the loops over inputs remain.  Each sum runs in the same order as
 * in the batch path.
 *   online_fwd:  z_j = b_j + sum_a h_a W_aj (a in order)
 *   online_back: dp_a = sum_j d_j W_aj (j in order)
 *   online_sgd:  g = h_a d_j, W_aj -= lr g; g = d_j, b_j -= lr g
 */
static INLINE void
FN(online_fwd)(T *restrict z, const T *restrict h, const T *restrict W,
               const T *restrict bk, int64_t ni, const int NO)
{
    T acc[TINY_MAXW];
    for (int j = 0; j < NO; j++) {
        acc[j] = bk[j];
    }
    for (int64_t a = 0; a < ni; a++) {
        T h_a = h[a];
        for (int j = 0; j < NO; j++) {
            acc[j] = MULADD(h_a, W[a * NO + j], acc[j]);
        }
    }
    for (int j = 0; j < NO; j++) {
        z[j] = acc[j];
    }
}

static INLINE void
FN(online_back)(T *restrict dp, const T *restrict d, const T *restrict W,
                int64_t ni, const int NO)
{
    for (int64_t a = 0; a < ni; a++) {
        T acc = 0;
        for (int j = 0; j < NO; j++) {
            acc = MULADD(d[j], W[a * NO + j], acc);
        }
        dp[a] = acc;
    }
}

static INLINE void
FN(online_sgd)(T *restrict p_w, T *restrict g_w, T *restrict p_b,
               T *restrict g_b, const T *restrict h, const T *restrict d,
               int64_t ni, const int NO, T lr)
{
    for (int64_t a = 0; a < ni; a++) {
        T h_a = h[a];
        for (int j = 0; j < NO; j++) {
            T g = MULADD(h_a, d[j], (T)0);
            g_w[a * NO + j] = g;
            p_w[a * NO + j] = MULADD(-lr, g, p_w[a * NO + j]);
        }
    }
    for (int j = 0; j < NO; j++) {
        T g = (T)0 + d[j];
        g_b[j] = g;
        p_b[j] = MULADD(-lr, g, p_b[j]);
    }
}

/* CALL(w) with w the constant equal to no (1 <= no <= TINY_MAXW = 8). */
#define BY_WIDTH(no, CALL)                                                   \
    switch (no) {                                                            \
    case 1: CALL(1); break;                                                  \
    case 2: CALL(2); break;                                                  \
    case 3: CALL(3); break;                                                  \
    case 4: CALL(4); break;                                                  \
    case 5: CALL(5); break;                                                  \
    case 6: CALL(6); break;                                                  \
    case 7: CALL(7); break;                                                  \
    default: CALL(8); break;                                                 \
    }

/*
 * Online learning (one sample per batch) on the tiny path, serially.  Per
 * sample this is the arithmetic of tiny_backward_body with one lane and of
 * update_body (a parameter's gradient is 0 + its one product, as the lane
 * and chunk sums make it), so the bits equal the batch loop's; but a
 * layer's update follows its gradient at once (after its input delta has
 * used the old weights), with nothing else per sample.
 */
static void SCALAR_LOOP
FN(online_tiny)(FN(train_ctx) *c)
{
    T *params = c->params, *grad = c->grad;
    const bp_optim *opt = c->opt;
    const bp_arch *arch = c->arch;
    const T *X = c->X, *Y = c->Y, *sw = c->sw;
    const int64_t *order = c->order, *sz = arch->sizes;
    const int64_t *w_off = c->w_off, *b_off = c->b_off;
    int64_t L = arch->n_layers - 1, n_in = c->n_in, n_L = c->n_L;
    int act_L = arch->acts[L - 1], loss_kind = arch->loss;
    T z[TINY_MAXL + 1][TINY_MAXW], h[TINY_MAXL + 1][TINY_MAXW];
    T dbuf[2][TINY_MAXW], y1[TINY_MAXW], *d, *dp;
    double lsum = c->lsum, wsum = c->wsum;
    int64_t done = 0, t = c->t0;
    double b1 = opt->beta1, b2 = opt->beta2;
    int plain;
    FN(upd) u;

    u.sgd = opt->kind == BP_OPT_SGD;
    u.nesterov = opt->nesterov;
    u.decoupled = opt->kind == BP_OPT_ADAMW;
    u.lr = (T)opt->lr;
    u.wd = (T)opt->weight_decay;
    u.mu = (T)opt->momentum;
    u.omb1 = (T)(1.0 - b1);
    u.tb2 = (T)b2;
    u.omb2 = (T)(1.0 - b2);
    u.eps = (T)opt->eps;
    u.s1 = (T *)opt->state1;
    u.s2 = (T *)opt->state2;
    u.step = u.bc2_sqrt = 0;
    /* plain SGD (no momentum buffer, no decay) is updated inline */
    plain = u.sgd && u.s1 == NULL && u.wd == 0;
    c->diverged = 0;
    for (int64_t b = c->first_batch; b < c->first_batch + c->n_batches; b++) {
        int64_t i = order != NULL ? order[b] : b;
        const T *x = X + i * n_in, *y = y1;
        const T *swi = sw != NULL ? sw + i : NULL;
        double S = FN(weight_sum)(swi, 1), li, loss;
        T scale;
        if (S <= 0.0) {
            continue;
        }
        if (c->labels != NULL) {
            FN(onehot_row)(y1, n_L, c->labels[i]);
        } else {
            y = Y + i * n_L;
        }
        scale = (T)((swi != NULL ? (double)*swi : 1.0) / S);
        for (int64_t k = 0; k < L; k++) {
            const T *W = params + w_off[k], *bk = params + b_off[k];
            const T *hk = k == 0 ? x : h[k];
            int64_t ni = sz[k], no = sz[k + 1];
#define FWD_W(w) FN(online_fwd)(z[k + 1], hk, W, bk, ni, w)
            BY_WIDTH(no, FWD_W)
#undef FWD_W
            FN(act_row)(h[k + 1], z[k + 1], no, arch->acts[k]);
        }
        /* d: the delta of the layer above, dp: the one being computed */
        d = dbuf[0];
        dp = dbuf[1];
        li = FN(loss_row)(d, z[L], h[L], y, n_L, act_L, loss_kind,
                          arch->loss_param, scale);
        loss = (sw != NULL ? MULADD64((double)sw[i], li, 0.0) : 0.0 + li) / S;
        if (!isfinite(loss)) {
            c->diverged = 1;
            break;
        }
        t++;
        if (!u.sgd) {
            u.step = (T)(opt->lr / (1.0 - pow(b1, (double)t)));
            u.bc2_sqrt = (T)sqrt(1.0 - pow(b2, (double)t));
        }
        for (int64_t k = L - 1; k >= 0; k--) {
            int64_t ni = sz[k], no = sz[k + 1];
            const T *W = params + w_off[k], *hk = k == 0 ? x : h[k];
            if (k > 0) {
#define BACK_W(w) FN(online_back)(dp, d, W, ni, w)
                BY_WIDTH(no, BACK_W)
#undef BACK_W
                FN(act_grad_row)(dp, z[k], h[k], ni, arch->acts[k - 1]);
            }
            if (plain) {
                /* sgd_one without momentum or decay: p - lr g */
#define SGD_W(w)                                                             \
    FN(online_sgd)(params + w_off[k], grad + w_off[k], params + b_off[k],    \
                   grad + b_off[k], hk, d, ni, w, u.lr)
                BY_WIDTH(no, SGD_W)
#undef SGD_W
            } else {
                for (int64_t a = 0; a < ni; a++) {
                    for (int64_t j = 0; j < no; j++) {
                        FN(upd_one)(&u, params, grad, w_off[k] + a * no + j,
                                    MULADD(hk[a], d[j], (T)0), u.wd);
                    }
                }
                for (int64_t j = 0; j < no; j++) {
                    FN(upd_one)(&u, params, grad, b_off[k] + j, (T)0 + d[j],
                                0);
                }
            }
            {
                T *tmp = d;
                d = dp;
                dp = tmp;
            }
        }
        lsum = MULADD64(loss, S, lsum);
        wsum += S;
        done++;
    }
    c->lsum = lsum;
    c->wsum = wsum;
    c->done = done;
}

static bp_status
FN(train)(T *params, T *grad, bp_optim *opt, double *loss_sum,
                   double *weight_sum, int64_t *batches_done, const T *X,
                   const T *Y, const int64_t *labels, const T *sw,
                   const int64_t *order, int64_t m,
                   int64_t batch, int64_t first_batch, int64_t n_batches,
                   const bp_arch *arch, void *work, int64_t work_bytes,
                   int n_threads)
{
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS], n_w, n_p;
    int64_t n_in, n_L, t0;
    double lsum, wsum_total;
    int64_t done = 0;
    int nt, diverged = 0;
    train_plan plan;
    FN(train_ws) ws;
    bp_status s;

    if (arch == NULL || arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
    }
    if ((s = FN(prepare)(w_off, b_off, &n_w, &n_p, arch)) != BP_OK) {
        return s;
    }
    if ((s = FN(check_optim)(opt)) != BP_OK) {
        return s;
    }
    if (params == NULL || grad == NULL || loss_sum == NULL ||
            weight_sum == NULL || batches_done == NULL || X == NULL ||
            (Y == NULL) == (labels == NULL) || work == NULL) {
        return BP_EARG;
    }
    if (m < 1 || batch < 1 || first_batch < 0 || n_batches < 0) {
        return BP_ESHAPE;
    }
    if (first_batch > (m - 1) / batch + 1 ||
            n_batches > (m - 1) / batch + 1 - first_batch) {
        return BP_ESHAPE;
    }
    if (n_threads < 0) {  /* exactly -n_threads: the caller has chosen */
        nt = resolve_threads(-n_threads);
        if ((double)batch * arch_weights(arch) * 6.0 < BP_PARALLEL_MIN_FLOPS) {
            nt = 1;
        }
    } else {
        nt = team_for(resolve_threads(n_threads),
                      (double)batch * arch_weights(arch) * 6.0,
                      FN(train_syncs)(arch), sizeof(T) == 8);
    }
    if ((s = train_plan_make(&plan, arch, batch, sizeof(T), nt)) != BP_OK) {
        return s;
    }
    if (work_bytes < plan.total) {
        return BP_ENOMEM;
    }
    if (order != NULL) {
        for (int64_t i = 0; i < m; i++) {
            if (order[i] < 0 || order[i] >= m) {
                return BP_EARG;
            }
        }
    }
    if (labels != NULL) {
        int64_t n_out = arch->sizes[arch->n_layers - 1];
        for (int64_t i = 0; i < m; i++) {
            if (labels[i] < 0 || labels[i] >= n_out) {
                return BP_EARG;
            }
        }
    }
    FN(carve)(&ws, &plan, arch, work);
    lsum = *loss_sum;
    wsum_total = *weight_sum;
    n_in = arch->sizes[0];
    n_L = arch->sizes[arch->n_layers - 1];
    t0 = opt->t;

    {
        FN(train_ctx) c = {params, grad, opt, X, Y, sw, labels, order, m,
                           batch, first_batch, n_batches, arch, w_off, b_off,
                           n_w, n_p, &ws, n_in, n_L, t0, lsum, wsum_total, 0,
                           0};
        /* the online loop updates each layer at once: no clipping, which
         * needs the whole gradient first (nor dropout: not tiny) */
        if (batch == 1 && arch_is_tiny(arch) && opt->clip_norm == 0.0) {
            FN(online_tiny)(&c);
        } else {
            RUN_TEAM(nt, FN(train_region)(&c));
        }
        lsum = c.lsum;
        wsum_total = c.wsum;
        done = c.done;
        diverged = c.diverged;
    }
    opt->t = t0 + done;
    *loss_sum = lsum;
    *weight_sum = wsum_total;
    *batches_done = done;
    return diverged ? BP_ENONFINITE : BP_OK;
}
