/*
 * net/layers.h - the layers, forward and backward side by side (a
 * fragment of net_impl.h): activations, the per-sample loss, the dense
 * layer's row pieces, and dropout.
 */

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
