/*
 * net/layers.h - the layers, each forward beside its backward, in the
 * order of the derivation (a fragment of net_impl.h):
 *   activation   out = f(net)              d *= f'(net)
 *   dropout      out *= mask / (1 - rate)  d *= mask / (1 - rate)
 *   dense        net = x W + b             dW = x^T d, db = sum_i d_i,
 *                                          dx = d W^T
 *   loss         l(out, y)                 dl/dnet of the output layer
 * Arrays are row-major, one row per sample; (m, n) is m rows of n.
 */

/* ---- activation ------------------------------------------------------ */

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

/*
 * out = softmax(net) for rows [0, rows) of width n (out may be net): per
 * row its maximum subtracted, the exponentials (those of all the rows in
 * one loop, which vectorises where a row alone is shorter than a vector,
 * 10 classes), their sum in double in order, then the division.  Row by
 * row or many at once, the same bits.
 */
static void
FN(softmax_rows)(T *out, const T *net, int64_t rows, int64_t n)
{
    for (int64_t i = 0; i < rows; i++) {
        const T *z = net + i * n;
        T *h = out + i * n, mx = z[0];
        for (int64_t j = 1; j < n; j++) {
            mx = z[j] > mx ? z[j] : mx;
        }
        for (int64_t j = 0; j < n; j++) {
            h[j] = z[j] - mx;
        }
    }
    for (int64_t t = 0; t < rows * n; t++) {
        out[t] = VEXP(out[t]);
    }
    for (int64_t i = 0; i < rows; i++) {
        T *h = out + i * n, inv;
        double sum = 0.0;
        for (int64_t j = 0; j < n; j++) {
            sum += (double)h[j];
        }
        inv = (T)(1.0 / sum);
        for (int64_t j = 0; j < n; j++) {
            h[j] *= inv;
        }
    }
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
    case BP_ACT_SOFTMAX:
        FN(softmax_rows)(out, net, 1, n);
        break;
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
 * d = J^T d through softmax for one sample (the backward of act_row's
 * softmax): d_j = s_j (d_j - sum_k d_k s_k), the dot in double.
 *   d (n) inout, s (n) in: softmax's output; both with stride st
 */
static INLINE void
FN(softmax_grad)(T *d, const T *s, int64_t n, int64_t st)
{
    double dot = 0.0;
    for (int64_t j = 0; j < n; j++) {
        dot = MULADD64((double)d[j * st], (double)s[j * st], dot);
    }
    for (int64_t j = 0; j < n; j++) {
        d[j * st] = s[j * st] * (d[j * st] - (T)dot);
    }
}

/* ---- dropout (after a hidden layer's activation) -------------------- */

/*
 * Inverted dropout (see bp_arch) of columns [c0, c1) of row i of hidden
 * layer k + 1's outputs, o_i (the row): kept and scaled by 1 / (1 - rate),
 * or zeroed.  No-op without dropout or at rate 0.
 */
static void
FN(drop_cols)(T *o_i, int64_t i, int64_t c0, int64_t c1, const bp_arch *arch,
              int64_t k)
{
    double rate = arch->dropout != NULL ? arch->dropout[k] : 0.0;
    uint64_t hr;
    T inv;
    if (rate == 0.0) {
        return;
    }
    hr = bp_dropout_row(arch->drop_seed, i);
    inv = (T)(1.0 / (1.0 - rate));
    for (int64_t j = c0; j < c1; j++) {
        o_i[j] = bp_dropout_keep_h(hr, k, j, rate) ? o_i[j] * inv : (T)0;
    }
}

/*
 * d *= f'(net) for columns [c0, c1) of row i of hidden layer k + 1 (as
 * act_grad_row), and, with dropout there, by the row's mask times
 * 1 / (1 - rate).  out then holds the dropped outputs, so f(net) is
 * computed again from net (by act_row, the same bits as the forward pass)
 * in pieces of 64 units.
 *   d, net, out: the whole row (n values)
 */
#define DROP_PIECE 64
static void
FN(act_grad_drop_cols)(T *d, const T *net, const T *out, int64_t c0,
                       int64_t c1, int act, const bp_arch *arch, int64_t k,
                       int64_t i)
{
    double rate = arch->dropout != NULL ? arch->dropout[k] : 0.0;
    uint64_t hr;
    T inv, f[DROP_PIECE];
    if (rate == 0.0) {
        FN(act_grad_row)(d + c0, net + c0, out + c0, c1 - c0, act);
        return;
    }
    hr = bp_dropout_row(arch->drop_seed, i);
    inv = (T)(1.0 / (1.0 - rate));
    for (int64_t j0 = c0; j0 < c1; j0 += DROP_PIECE) {
        int64_t nj = c1 - j0 < DROP_PIECE ? c1 - j0 : DROP_PIECE;
        FN(act_row)(f, net + j0, nj, act);
        FN(act_grad_row)(d + j0, net + j0, f, nj, act);
        for (int64_t j = 0; j < nj; j++) {
            d[j0 + j] = bp_dropout_keep_h(hr, k, j0 + j, rate)
                            ? d[j0 + j] * inv : (T)0;
        }
    }
}

/*
 * The loss of a batch's rows, taken as the output layer's forward pass
 * finishes them (loss_rows, with the loss below).
 */
typedef struct {
    T *delta;      /* (m, n_L) out: the output layer's delta */
    double *lbuf;  /* (m) out: each row's loss, times its weight if any */
    const T *Y;    /* (m, n_L) in: the targets */
    const T *sw;   /* (m) in, or NULL: the sample weights */
    double S;      /* the batch's weight sum */
} FN(loss_args);

static void FN(loss_rows)(const FN(loss_args) *la, const T *net,
                          const T *out, const bp_arch *arch, int64_t r0,
                          int64_t r1);

/* ---- dense ------------------------------------------------------------ */

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
 * What follows a layer's product, for the block of rows [r0, r1) and
 * columns [c0, c1) that one thread has just computed (an epilogue, see
 * product_team; the direct loops call them on whole rows).
 */
typedef struct {
    T *net, *out;
    const T *b;  /* NULL: already added */
    const bp_arch *arch;
    int64_t k, n;  /* the layer, and the width of its rows */
    const FN(loss_args) *loss;  /* the output layer's, or NULL */
} FN(fwd_epi);

typedef struct {
    T *dx;
    const T *net, *out;
    const bp_arch *arch;
    int64_t k, n;
} FN(dx_epi);

/* Forward: net += b, out = f(net), then a hidden layer's dropout, or the
 * output layer's loss (whole rows). */
static void
FN(forward_fin)(const void *ctx, int64_t r0, int64_t r1, int64_t c0,
                int64_t c1)
{
    const FN(fwd_epi) *e = (const FN(fwd_epi) *)ctx;
    int64_t n = e->n, k = e->k;
    int act = e->arch->acts[k], hidden = k + 2 < e->arch->n_layers;
    if (act == BP_ACT_SOFTMAX) {  /* whole rows (the epilogue's whole_rows) */
        if (e->b != NULL) {
            FN(bias_rows)(e->net + r0 * n, e->b, r1 - r0, n);
        }
        FN(softmax_rows)(e->out + r0 * n, e->net + r0 * n, r1 - r0, n);
    } else {
        for (int64_t i = r0; i < r1; i++) {
            T *z = e->net + i * n, *h = e->out + i * n;
            if (e->b != NULL) {
                FN(bias_rows)(z + c0, e->b + c0, 1, c1 - c0);
            }
            FN(act_row)(h + c0, z + c0, c1 - c0, act);
            if (hidden) {
                FN(drop_cols)(h, i, c0, c1, e->arch, k);
            }
        }
    }
    if (e->loss != NULL) {
        FN(loss_rows)(e->loss, e->net, e->out, e->arch, r0, r1);
    }
}

/* Backward to a hidden input (layer k > 0): dx *= f'(net_k) and its
 * dropout mask; net, out and dx are layer k's (width n). */
static void
FN(dx_fin)(const void *ctx, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const FN(dx_epi) *e = (const FN(dx_epi) *)ctx;
    int64_t n = e->n, k = e->k;
    for (int64_t i = r0; i < r1; i++) {
        FN(act_grad_drop_cols)(e->dx + i * n, e->net + i * n, e->out + i * n,
                               c0, c1, e->arch->acts[k - 1], e->arch, k - 1,
                               i);
    }
}

/*
 * Rows [r0, r1) of layer k forward, by one thread: net = x W + b, out =
 * f(net), a hidden layer's dropout, or with loss the loss of each row.
 * Every entry is summed over its own row alone, so the bits do not depend
 * on how the rows are cut (dense_forward's direct rows, a batch cut by
 * samples).  mine: the thread's kernel scratch (unused by a layer that
 * does not take the kernel).
 */
static void
FN(forward_rows)(T *net, T *out, const T *x, const T *W, const T *b,
                 const bp_arch *arch, int64_t k, int64_t r0, int64_t r1,
                 T *mine, const FN(loss_args) *loss)
{
    int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
    FN(fwd_epi) e = {net, out, b, arch, k, n_out, loss};

    if (layer_uses_gemm(n_in, n_out)) {
        FN(product)(net + r0 * n_out, n_out, x + r0 * n_in, n_in, 1, W,
                    n_out, 1, r1 - r0, n_out, n_in, mine);
    } else {
        e.b = NULL;  /* dense_rows adds it */
        FN(dense_rows)(net + r0 * n_out, x + r0 * n_in, r1 - r0, n_in, W, b,
                       n_out);
    }
    FN(forward_fin)(&e, r0, r1, 0, n_out);
}

/*
 * Layer k forward for m rows, shared by the team: net = x W + b, then
 * out = f(net), then the dropout of a hidden layer, or with loss (the
 * output layer's), the loss of each row.  Big layers take the product
 * from the kernel (product_team, each thread finishing its own slice),
 * small ones the direct rows.
 *   net, out (m, n_out) out;  x (m, n_in) in
 *   W (n_in, n_out) in;  b (n_out) in
 * Ends with a barrier, unless sync is 0 and the layer takes the kernel's
 * product (then each thread has finished its own slice only).
 */
static void
FN(dense_forward)(T *net, T *out, const T *x, const T *W, const T *b,
                  const bp_arch *arch, int64_t k, int64_t m, T *scratch,
                  const FN(loss_args) *loss, int sync)
{
    int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
    int64_t n_blocks = (m + ROW_BLOCK - 1) / ROW_BLOCK;
    FN(fwd_epi) e = {net, out, b, arch, k, n_out, loss};
    FN(epilogue) epi = {FN(forward_fin), &e, 0};

    if (layer_uses_gemm(n_in, n_out)) {
        epi.whole_rows = arch->acts[k] == BP_ACT_SOFTMAX || loss != NULL;
        FN(product_team)(net, n_out, x, n_in, 1, W, n_out, 1, m, n_out, n_in,
                         scratch, &epi, sync);
        return;
    }
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t r0 = blk * ROW_BLOCK;
        int64_t r1 = r0 + ROW_BLOCK < m ? r0 + ROW_BLOCK : m;
        FN(forward_rows)(net, out, x, W, b, arch, k, r0, r1, NULL, loss);
    }
}

/* The optimizer's update of the entries of a weight gradient that a
 * thread has just computed (an epilogue, see product_team). */
typedef struct {
    const FN(upd) *u;
    T *params;
    const T *grad;
    int64_t off, n;  /* the layer's offset in the flat buffers, its width */
} FN(dw_epi);

static void
FN(dw_fin)(const void *ctx, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    const FN(dw_epi) *e = (const FN(dw_epi) *)ctx;
    if (c0 == 0 && c1 == e->n) {  /* whole rows: one run of entries */
        FN(upd_span)(e->u, e->params, e->grad, e->off + r0 * e->n,
                     e->off + r1 * e->n, e->u->wd);
        return;
    }
    for (int64_t a = r0; a < r1; a++) {
        int64_t p = e->off + a * e->n;
        FN(upd_span)(e->u, e->params, e->grad, p + c0, p + c1, e->u->wd);
    }
}

/*
 * dW = x^T d (overwritten), shared by the team: each thread owns whole
 * blocks of rows of dW and sums over samples in order (or product_team
 * splits it, each entry summed by one thread in the kernel's order).
 * With u, the thread then updates the weights of the entries it computed
 * (params + w_off: the layer's W), so nothing may read W meanwhile.
 *   grad (n_in, n_out) out: the layer's dW, at grad + w_off
 *   x (m, n_in) in;  d (m, n_out) in
 * No barrier: another thread may still be writing its part.
 */
static void
FN(dense_backward_dw)(T *grad, int64_t w_off, const T *x, const T *d,
                      int64_t m, int64_t n_in, int64_t n_out, T *scratch,
                      const FN(upd) *u, T *params)
{
    int64_t n_dw = (n_in + DW_BLOCK - 1) / DW_BLOCK;
    T *dW = grad + w_off;
    FN(dw_epi) e = {u, params, grad, w_off, n_out};
    FN(epilogue) epi = {FN(dw_fin), &e, 0};

    if (layer_uses_gemm(n_in, n_out)) {
        FN(product_team)(dW, n_out, x, 1, n_in, d, n_out, 1, n_in, n_out, m,
                         scratch, u != NULL ? &epi : NULL, 0);
        return;
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
        if (u != NULL) {
            FN(dw_fin)(&e, a0, a1, 0, n_out);
        }
    }
}

/* Sums over the m rows of d (row stride n_out) of W columns from j, in
 * double, in sample order, into db[j..j+W).  W is a constant at every call,
 * so the sums stay in registers (an array sized at run time was kept in
 * memory: a store and a reload per row in every sum's chain). */
#define DB_COLS(W)                                                           \
    static INLINE void                                                       \
    FN(db_cols_##W)(T *restrict db, const T *restrict d, int64_t m,          \
                    int64_t n_out, int64_t j)                                \
    {                                                                        \
        double acc[W];                                                       \
        for (int c = 0; c < W; c++) {                                        \
            acc[c] = 0.0;                                                    \
        }                                                                    \
        for (int64_t i = 0; i < m; i++) {                                    \
            const T *d_i = d + i * n_out + j;                                \
            for (int c = 0; c < W; c++) {                                    \
                acc[c] += (double)d_i[c];                                    \
            }                                                                \
        }                                                                    \
        for (int c = 0; c < W; c++) {                                        \
            db[j + c] = (T)acc[c];                                           \
        }                                                                    \
    }
DB_COLS(32)
DB_COLS(8)
DB_COLS(1)
#undef DB_COLS

/*
 * db = sum over samples of d (overwritten), accumulated in double in
 * sample order, work-shared over blocks of entries; with u, each block's
 * biases (params + b_off) are then updated by the thread that summed it.
 * A block's columns are summed 32, then 8, then 1 at a time (how they are
 * grouped changes no sum).
 *   grad (n_out) out: the layer's db, at grad + b_off;  d (m, n_out) in
 * No barrier.
 */
static void
FN(dense_backward_db)(T *grad, int64_t b_off, const T *d, int64_t m,
                      int64_t n_out, const FN(upd) *u, T *params)
{
    int64_t n_db = (n_out + DB_BLOCK - 1) / DB_BLOCK;
    T *db = grad + b_off;

#pragma omp for schedule(static) nowait
    for (int64_t blk = 0; blk < n_db; blk++) {
        int64_t j = blk * DB_BLOCK;
        int64_t j1 = n_out - j < DB_BLOCK ? n_out : j + DB_BLOCK;
        for (; j + 32 <= j1; j += 32) {
            FN(db_cols_32)(db, d, m, n_out, j);
        }
        for (; j + 8 <= j1; j += 8) {
            FN(db_cols_8)(db, d, m, n_out, j);
        }
        for (; j < j1; j++) {
            FN(db_cols_1)(db, d, m, n_out, j);
        }
        if (u != NULL) {
            FN(upd_span)(u, params, grad, b_off + blk * DB_BLOCK, b_off + j1,
                         0);
        }
    }
}

/* Rows [r0, r1) of layer k's input delta, by one thread, each from its
 * own row of d (dense_backward_dx's direct rows, a batch cut by samples);
 * mine as forward_rows'. */
static void
FN(dx_rows)(T *dx, const T *d, const T *W, const T *net, const T *out,
            const bp_arch *arch, int64_t k, int64_t r0, int64_t r1, T *mine)
{
    int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
    FN(dx_epi) e = {dx, net, out, arch, k, n_in};

    if (layer_uses_gemm(n_in, n_out)) {
        FN(product)(dx + r0 * n_in, n_in, d + r0 * n_out, n_out, 1, W, 1,
                    n_out, r1 - r0, n_in, n_out, mine);
    } else {
        for (int64_t i = r0; i < r1; i++) {
            for (int64_t a = 0; a < n_in; a++) {
                dx[i * n_in + a] = FN(dot)(d + i * n_out, W + a * n_out,
                                           n_out);
            }
        }
    }
    if (k > 0) {
        FN(dx_fin)(&e, r0, r1, 0, n_in);
    }
}

/*
 * The delta of layer k's input, shared by the team: dx = d W^T; for a
 * hidden input (k > 0) then times f'(net_k) and its dropout mask, so that
 * dx is layer k's delta: delta_k = f'(net_k) * (delta_{k+1} W_k^T).  At
 * k = 0 it is dE/dX.
 *   dx (m, n_in) out;  d (m, n_out) in;  W (n_in, n_out) in
 *   net, out (m, n_in) in: layer k's (unused at k = 0)
 * With by_rows, a kernel product is cut by rows (see product_team_cut).
 * Ends with a barrier.
 */
static void
FN(dense_backward_dx)(T *dx, const T *d, const T *W, const T *net,
                      const T *out, const bp_arch *arch, int64_t k, int64_t m,
                      T *scratch, int by_rows)
{
    int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
    int64_t n_blocks = (m + ROW_BLOCK - 1) / ROW_BLOCK;
    FN(dx_epi) e = {dx, net, out, arch, k, n_in};
    FN(epilogue) epi = {FN(dx_fin), &e, 0};

    if (layer_uses_gemm(n_in, n_out)) {
        FN(product_team_cut)(dx, n_in, d, n_out, 1, W, 1, n_out, m, n_in,
                             n_out, scratch, k > 0 ? &epi : NULL, 1, by_rows);
        return;
    }
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t r0 = blk * ROW_BLOCK;
        int64_t r1 = r0 + ROW_BLOCK < m ? r0 + ROW_BLOCK : m;
        FN(dx_rows)(dx, d, W, net, out, arch, k, r0, r1, NULL);
    }
}

/* ---- loss ------------------------------------------------------------ */

/*
 * One output's share of a loss elementwise in g = out - y: adds it to *l
 * and returns its dl/dout.  LOSS is a constant after inlining.
 *   mse    1/2 g^2             g
 *   mae    |g|                 sign(g) (0 at 0, as torch)
 *   huber  torch.nn.HuberLoss: |g| < d ? g^2 / 2 : d (|g| - d / 2);
 *          dl/dout = g clamped to [-d, d], d = lp
 */
static INLINE T
FN(loss_elem)(double *l, T g, double lp, const int LOSS)
{
    if (LOSS == BP_LOSS_MAE) {
        *l += fabs((double)g);
        return g > 0 ? (T)1 : (g < 0 ? (T)-1 : (T)0);
    }
    if (LOSS == BP_LOSS_HUBER) {
        T hd = (T)lp;
        double a = fabs((double)g);
        *l += a < lp ? 0.5 * a * a : lp * (a - 0.5 * lp);
        return g <= -hd ? -hd : (g >= hd ? hd : g);
    }
    *l = MULADD64(0.5 * (double)g, (double)g, *l);
    return g;
}

/*
 * An elementwise loss (LOSS: mse, mae, huber) of LN samples side by side:
 * li[ln] = sum_j e(g_j) in order of j, d = de/dout.  Lanes nl.. are
 * padding, with target 0.
 *   li (LN) out;  d (n, LN) out, unit j of lane ln at d[j * st + ln]
 *   h (n, LN) in, as d: the outputs;  y (nl, n) in: the lanes' targets
 */
static INLINE void
FN(loss_elementwise)(double *li, T *d, const T *h, int64_t st, const T *y,
                     int64_t n, int nl, double lp, const int LN,
                     const int LOSS)
{
    for (int ln = 0; ln < LN; ln++) {
        li[ln] = 0.0;
    }
    for (int64_t j = 0; j < n; j++) {
        for (int ln = 0; ln < LN; ln++) {
            T g = h[j * st + ln] - (ln < nl ? y[ln * n + j] : (T)0);
            d[j * st + ln] = FN(loss_elem)(&li[ln], g, lp, LOSS);
        }
    }
}

/*
 * The losses taken with respect to net (their output activation folded
 * in) for one sample, outputs st apart; returns l, and d = dl/dnet times
 * scale.
 *   cross-entropy (softmax): l = -sum_j y_j log softmax_j
 *       = sum_j y_j (lse - net_j);  dl/dnet_j = softmax_j sum_k y_k - y_j
 *   binary cross-entropy (sigmoid): l = max(z, 0) - z y + log1p(e^-|z|);
 *       dl/dz = sigmoid(z) - y
 *   poisson (identity, out read as the log rate r):
 *       l = sum_j e^r_j - y_j r_j;  dl/dr_j = e^r_j - y_j
 */
#define LOSS_PIECE 64

/* The cross-entropy's loss and delta of one sample from the maximum mx of
 * its net, the sum of e^(net_j - mx) and the sum of its targets sy. */
static INLINE double
FN(ce_finish)(T *d, const T *z, const T *h, int64_t st, const T *y,
              int64_t n, double mx, double sum, double sy, T scale)
{
    double l = 0.0, lse = mx + log(sum);
    for (int64_t j = 0; j < n; j++) {
        if (y[j] != 0) {
            l = MULADD64((double)y[j], lse - (double)z[j * st], l);
        }
        d[j * st] = MULADD(h[j * st], (T)sy, -y[j]) * scale;
    }
    return l;
}

static INLINE double
FN(loss_on_net)(T *d, const T *z, const T *h, int64_t st, const T *y,
                int64_t n, int loss, T scale)
{
    double l = 0.0;

    if (loss == BP_LOSS_CE) {
        double mx = (double)z[0], sum = 0.0, sy = 0.0, e[LOSS_PIECE];
        for (int64_t j = 1; j < n; j++) {
            mx = (double)z[j * st] > mx ? (double)z[j * st] : mx;
        }
        /* the exponentials a piece at a time in a loop of their own (it
         * vectorises), then their sum in order */
        for (int64_t j0 = 0; j0 < n; j0 += LOSS_PIECE) {
            int64_t nj = n - j0 < LOSS_PIECE ? n - j0 : LOSS_PIECE;
            for (int64_t j = 0; j < nj; j++) {
                e[j] = VEXP64((double)z[(j0 + j) * st] - mx);
            }
            for (int64_t j = 0; j < nj; j++) {
                sum += e[j];
                sy += (double)y[j0 + j];
            }
        }
        l = FN(ce_finish)(d, z, h, st, y, n, mx, sum, sy, scale);
    } else if (loss == BP_LOSS_BCE) {
        for (int64_t j = 0; j < n; j++) {
            double zz = (double)z[j * st];
            l += MULADD64(-zz, (double)y[j], zz > 0 ? zz : 0.0) +
                 log1p(exp(-fabs(zz)));
            d[j * st] = (h[j * st] - y[j]) * scale;
        }
    } else { /* BP_LOSS_POISSON */
        for (int64_t j = 0; j < n; j++) {
            double e = exp((double)h[j * st]);
            l += MULADD64(-(double)y[j], (double)h[j * st], e);
            d[j * st] = (T)(e - (double)y[j]) * scale;
        }
    }
    return l;
}

/*
 * The loss of LN samples side by side and their output deltas: the one
 * place the loss maths lives, for the rows of the batch path (LN = 1,
 * through loss_row) and the lanes of the tiny path.  LN is a constant
 * after inlining.
 *   li (LN) out: each sample's loss l (unweighted)
 *   d (n, LN) out: dl/dnet times scale[ln]; unit j of lane ln at
 *       d[j * st + ln], and so for z and h
 *   z, h (n, LN) in: the output layer's net and out
 *   y (nl, n) in: the samples' targets;  scale (LN) in
 * Lanes nl.. are padding: their d ends at 0 (through a zero scale for the
 * elementwise losses) and their li is not to be read.
 */
static INLINE void
FN(loss_lanes)(double *li, T *d, const T *z, const T *h, int64_t st,
               const T *y, int64_t n, int nl, const T *scale,
               const bp_arch *arch, const int LN)
{
    int act = arch->acts[arch->n_layers - 2], loss = arch->loss;
    double lp = arch->loss_param;

    switch (loss) {
    case BP_LOSS_CE:
    case BP_LOSS_BCE:
    case BP_LOSS_POISSON:
        for (int ln = 0; ln < nl; ln++) {
            li[ln] = FN(loss_on_net)(d + ln, z + ln, h + ln, st, y + ln * n,
                                     n, loss, scale[ln]);
        }
        for (int64_t j = 0; j < n; j++) {
            for (int ln = nl; ln < LN; ln++) {
                d[j * st + ln] = 0;
            }
        }
        return;
    case BP_LOSS_MAE:
        FN(loss_elementwise)(li, d, h, st, y, n, nl, lp, LN, BP_LOSS_MAE);
        break;
    case BP_LOSS_HUBER:
        FN(loss_elementwise)(li, d, h, st, y, n, nl, lp, LN, BP_LOSS_HUBER);
        break;
    default:
        FN(loss_elementwise)(li, d, h, st, y, n, nl, lp, LN, BP_LOSS_MSE);
        break;
    }
    /* dl/dout to dl/dnet through the output activation, then the scale */
    if (act == BP_ACT_SOFTMAX) {
        for (int ln = 0; ln < LN; ln++) {
            FN(softmax_grad)(d + ln, h + ln, n, st);
        }
    } else if (st == 1) {
        FN(act_grad_row)(d, z, h, n, act);
    } else {
        for (int64_t j = 0; j < n; j++) {
            FN(act_grad_row)(d + j * st, z + j * st, h + j * st, LN, act);
        }
    }
    for (int64_t j = 0; j < n; j++) {
        for (int ln = 0; ln < LN; ln++) {
            d[j * st + ln] *= scale[ln];
        }
    }
}

/*
 * The loss of one sample and its output delta.
 *   delta (n) out: dl/dnet times scale
 *   net, out, y (n) in
 * Returns the sample's loss l (unweighted).
 */
static double
FN(loss_row)(T *delta, const T *net, const T *out, const T *y, int64_t n,
             const bp_arch *arch, T scale)
{
    double l;
    FN(loss_lanes)(&l, delta, net, out, 1, y, n, 1, &scale, arch, 1);
    return l;
}

/*
 * loss_rows for the cross-entropy of narrow outputs (n <= LOSS_PIECE):
 * the exponentials of several rows in one loop, which vectorises where a
 * row alone is shorter than a vector (10 classes), then each row's sums in
 * order and ce_finish.  The same arithmetic as loss_on_net row by row.
 */
static void
FN(ce_rows)(const FN(loss_args) *la, const T *net, const T *out, int64_t n,
            int64_t r0, int64_t r1)
{
    double e[4 * LOSS_PIECE], mx[4 * LOSS_PIECE];
    int64_t g = 4 * LOSS_PIECE / n;  /* rows per group */
    for (int64_t i0 = r0; i0 < r1; i0 += g) {
        int64_t i1 = r1 - i0 < g ? r1 : i0 + g;
        for (int64_t i = i0; i < i1; i++) {
            const T *z = net + i * n;
            double m = (double)z[0];
            for (int64_t j = 1; j < n; j++) {
                m = (double)z[j] > m ? (double)z[j] : m;
            }
            mx[i - i0] = m;
            for (int64_t j = 0; j < n; j++) {
                e[(i - i0) * n + j] = (double)z[j] - m;
            }
        }
        for (int64_t t = 0; t < (i1 - i0) * n; t++) {
            e[t] = VEXP64(e[t]);
        }
        for (int64_t i = i0; i < i1; i++) {
            const T *y = la->Y + i * n;
            T s_i = la->sw != NULL ? la->sw[i] : (T)1;
            double sum = 0.0, sy = 0.0, l;
            for (int64_t j = 0; j < n; j++) {
                sum += e[(i - i0) * n + j];
                sy += (double)y[j];
            }
            l = FN(ce_finish)(la->delta + i * n, net + i * n, out + i * n, 1,
                              y, n, mx[i - i0], sum, sy,
                              (T)((double)s_i / la->S));
            la->lbuf[i] = la->sw != NULL ? (double)s_i * l : l;
        }
    }
}

/*
 * Rows [r0, r1) of a batch through the loss: each row's output delta,
 * scaled by its weight over the batch's (s_i / S), and its loss, times
 * s_i when weighted, in lbuf.
 *   net, out (m, n_L) in: the output layer's
 */
static void
FN(loss_rows)(const FN(loss_args) *la, const T *net, const T *out,
              const bp_arch *arch, int64_t r0, int64_t r1)
{
    int64_t n_L = arch->sizes[arch->n_layers - 1];
    if (arch->loss == BP_LOSS_CE && n_L <= LOSS_PIECE) {
        FN(ce_rows)(la, net, out, n_L, r0, r1);
        return;
    }
    for (int64_t i = r0; i < r1; i++) {
        T s_i = la->sw != NULL ? la->sw[i] : (T)1;
        double l = FN(loss_row)(la->delta + i * n_L, net + i * n_L,
                                out + i * n_L, la->Y + i * n_L, n_L, arch,
                                (T)((double)s_i / la->S));
        la->lbuf[i] = la->sw != NULL ? (double)s_i * l : l;
    }
}
