/*
 * net/batch.h - the general batch path (a fragment of net_impl.h): the
 * forward pass keeping every layer's net and out, and the backward pass
 * (loss, then the layers in reverse), work-shared over rows and over
 * blocks of the weight gradient.
 */

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
