/*
 * net/batch.h - the general batch path (a fragment of net_impl.h): the
 * forward pass keeping every layer's net and out, and the backward pass
 * (loss, then the layers in reverse), work-shared over rows and over
 * blocks of the weight gradient.
 */

/*
 * Forward pass through every layer, keeping net and out.
 *   net[k], out[k] (m, n_k) out, k = 1..L;  X (m, n_0) in
 * Ends with a barrier.
 */
static void
FN(forward_body)(T *const *net, T *const *out, const T *X, const T *params,
                 const bp_arch *arch, const int64_t *w_off,
                 const int64_t *b_off, int64_t m, T *scratch)
{
    for (int64_t k = 0; k + 1 < arch->n_layers; k++) {
        FN(dense_forward)(net[k + 1], out[k + 1], k == 0 ? X : out[k],
                          params + w_off[k], params + b_off[k], arch, k, m,
                          scratch);
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
 * The loss of m rows and the output layer's delta (the loss layer's
 * forward and backward), work-shared over rows.  lbuf (m) is scratch for
 * the weighted per-sample losses; S is the weight sum.  Returns the mean
 * loss sum_i s_i l_i / S on every thread, summed in sample order.
 *   delta (m, n_L) out;  net, out, Y (m, n_L) in;  sw (m) in or NULL
 */
static double
FN(loss_body)(T *delta, double *lbuf, const T *net, const T *out, const T *Y,
              const T *sw, double S, const bp_arch *arch, int64_t m)
{
    int64_t n_L = arch->sizes[arch->n_layers - 1];
    double loss = 0.0;

#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        T s_i = sw != NULL ? sw[i] : (T)1;
        double l = FN(loss_row)(delta + i * n_L, net + i * n_L,
                                out + i * n_L, Y + i * n_L, n_L, arch,
                                (T)((double)s_i / S));
        lbuf[i] = sw != NULL ? (double)s_i * l : l;
    }
    for (int64_t i = 0; i < m; i++) {
        loss += lbuf[i];
    }
    return loss / S;
}

/*
 * Forward and backward pass (see bp_backward_*): the forward pass, the
 * loss, then each layer's gradient and input delta from the top down.
 * lbuf (m) is scratch for the per-sample losses.  Returns the loss on
 * every thread and the weight sum through *wsum.  Ends with a barrier.
 */
static double
FN(backward_body)(T *grad, T *const *delta, T *const *net, T *const *out,
                  double *lbuf, double *wsum, const T *X, const T *Y,
                  const T *sw, const T *params, const bp_arch *arch,
                  const int64_t *w_off, const int64_t *b_off, int64_t m,
                  T *scratch)
{
    int64_t L = arch->n_layers - 1;
    double S, loss;

    FN(forward_body)(net, out, X, params, arch, w_off, b_off, m, scratch);
    /* Every thread computes the same S, in the same order. */
    S = FN(weight_sum)(sw, m);
    *wsum = S;
    loss = FN(loss_body)(delta[L], lbuf, net[L], out[L], Y, sw, S, arch, m);

    for (int64_t k = L - 1; k >= 0; k--) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *x = k == 0 ? X : out[k];
        FN(dense_backward_dw)(grad + w_off[k], x, delta[k + 1], m, n_in,
                              n_out, scratch);
        FN(dense_backward_db)(grad + b_off[k], delta[k + 1], m, n_out);
        /* at k = 0, dE/dX only when asked for */
        if (k > 0 || delta[0] != NULL) {
            FN(dense_backward_dx)(delta[k], delta[k + 1], params + w_off[k],
                                  net[k], out[k], arch, k, m, scratch);
        }
    }
#pragma omp barrier
    return loss;
}
