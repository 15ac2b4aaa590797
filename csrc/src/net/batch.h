/*
 * net/batch.h - the general batch path (a fragment of net_impl.h): the
 * forward pass keeping every layer's net and out (the output layer's rows
 * then through the loss), and the backward pass (the layers in reverse,
 * each thread updating the parameters whose gradient it computed),
 * work-shared over rows and over blocks of the weight gradient.
 */

/*
 * Forward pass through every layer, keeping net and out; with loss, the
 * output layer's rows then go through the loss as they are finished.
 *   net[k], out[k] (m, n_k) out, k = 1..L;  X (m, n_0) in
 * Ends with a barrier, unless last_sync is 0: then each thread has only
 * finished its own rows of the output layer (cut by rows: out_rows_own).
 */
static void
FN(forward_body)(T *const *net, T *const *out, const T *X, const T *params,
                 const bp_arch *arch, const int64_t *w_off,
                 const int64_t *b_off, int64_t m, T *scratch,
                 const FN(loss_args) *loss, int last_sync)
{
    for (int64_t k = 0; k + 1 < arch->n_layers; k++) {
        int last = k + 2 == arch->n_layers;
        FN(dense_forward)(net[k + 1], out[k + 1], k == 0 ? X : out[k],
                          params + w_off[k], params + b_off[k], arch, k, m,
                          scratch, last ? loss : NULL, !last || last_sync);
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

/* The mean loss sum_i s_i l_i / S from lbuf (m), summed in sample order:
 * the same on every thread. */
static double
FN(loss_mean)(const double *lbuf, int64_t m, double S)
{
    double loss = 0.0;
    for (int64_t i = 0; i < m; i++) {
        loss += lbuf[i];
    }
    return loss / S;
}

/*
 * backward_body cut by samples (train_by_samples): each thread takes rows
 * [m t / nt, m (t + 1) / nt) through the forward pass, the loss and every
 * input delta, reading W only; one barrier; then the weight and bias
 * gradients of every layer, shared as backward_body shares them, each
 * thread updating what it computed.  Every value is computed as
 * backward_body computes it, so the bits are the same.
 */
static double
FN(backward_samples)(T *grad, T *const *delta, T *const *net,
                     T *const *out, double *lbuf, double *wsum, const T *X,
                     const T *Y, const T *sw, const T *params,
                     const bp_arch *arch, const int64_t *w_off,
                     const int64_t *b_off, int64_t m, T *scratch,
                     const FN(upd) *u, T *upd_params, int last_sync)
{
    int64_t L = arch->n_layers - 1;
    int nt = team_size(), tid = thread_id();
    int64_t r0 = m * tid / nt, r1 = m * (tid + 1) / nt;
    T *mine = scratch != NULL ? scratch + (int64_t)tid * GEMM_SCRATCH_ELEMS
                              : NULL;
    FN(loss_args) la = {delta[L], lbuf, Y, sw, 0.0};
    double loss;

    la.S = *wsum = FN(weight_sum)(sw, m);
    for (int64_t k = 0; k < L; k++) {
        FN(forward_rows)(net[k + 1], out[k + 1], k == 0 ? X : out[k],
                         params + w_off[k], params + b_off[k], arch, k, r0,
                         r1, mine, k + 1 == L ? &la : NULL);
    }
    for (int64_t k = L - 1; k >= 0; k--) {
        if (k > 0 || delta[0] != NULL) {
            FN(dx_rows)(delta[k], delta[k + 1], params + w_off[k], net[k],
                        out[k], arch, k, r0, r1, mine);
        }
    }
#pragma omp barrier
    loss = FN(loss_mean)(lbuf, m, la.S);
    if (!isfinite(loss)) {
        u = NULL;  /* as backward_body: every thread agrees */
    }
    for (int64_t k = L - 1; k >= 0; k--) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        FN(dense_backward_dw)(grad, w_off[k], k == 0 ? X : out[k],
                              delta[k + 1], m, n_in, n_out, scratch, u,
                              upd_params);
        FN(dense_backward_db)(grad, b_off[k], delta[k + 1], m, n_out, u,
                              upd_params);
    }
    if (last_sync) {
#pragma omp barrier
    }
    return loss;
}

/*
 * Forward and backward pass (see bp_backward_*): the forward pass with
 * the loss of each row, then from the top down each layer's input delta, then its
 * gradient.  With u (and a finite loss), each thread applies the update to
 * the parameters whose gradient it has just computed, in upd_params
 * (params itself; NULL without u): a layer's W is read by its input delta
 * before that, and by nothing after it in this batch.
 * lbuf (m) is scratch for the per-sample losses.  Returns the loss on
 * every thread and the weight sum through *wsum.  Ends with a barrier when
 * last_sync is set (without it, other threads may still be computing).
 * cut (bp_cut): how a team shares the batch (train_by_samples).
 */
static double
FN(backward_body)(T *grad, T *const *delta, T *const *net, T *const *out,
                  double *lbuf, double *wsum, const T *X, const T *Y,
                  const T *sw, const T *params, const bp_arch *arch,
                  const int64_t *w_off, const int64_t *b_off, int64_t m,
                  T *scratch, const FN(upd) *u, T *upd_params, int last_sync,
                  int cut)
{
    int64_t L = arch->n_layers - 1;
    FN(loss_args) la = {delta[L], lbuf, Y, sw, 0.0};
    int own = out_rows_own(arch, m);  /* then: L >= 2, so k = L - 1 > 0 */
    double loss;

    if (train_by_samples(arch, m, team_size(), (int64_t)sizeof(T), cut)) {
        return FN(backward_samples)(grad, delta, net, out, lbuf, wsum, X, Y,
                                    sw, params, arch, w_off, b_off, m,
                                    scratch, u, upd_params, last_sync);
    }
    /* Every thread computes the same S, in the same order. */
    la.S = *wsum = FN(weight_sum)(sw, m);
    FN(forward_body)(net, out, X, params, arch, w_off, b_off, m, scratch,
                     &la, !own);
    loss = own ? 0.0 : FN(loss_mean)(lbuf, m, la.S);

    for (int64_t k = L - 1; k >= 0; k--) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *x = k == 0 ? X : out[k];
        /* at k = 0, dE/dX only when asked for */
        if (k > 0 || delta[0] != NULL) {
            FN(dense_backward_dx)(delta[k], delta[k + 1], params + w_off[k],
                                  net[k], out[k], arch, k, m, scratch,
                                  own && k == L - 1);
        }
        if (k == L - 1) {
            /* every row's loss is in lbuf: one barrier has passed since
             * the output layer (its own, or the delta's just above) */
            loss = own ? FN(loss_mean)(lbuf, m, la.S) : loss;
            if (!isfinite(loss)) {
                u = NULL;  /* a diverged batch teaches nothing (every thread
                            * agrees) */
            }
        }
        FN(dense_backward_dw)(grad, w_off[k], x, delta[k + 1], m, n_in,
                              n_out, scratch, u, upd_params);
        FN(dense_backward_db)(grad, b_off[k], delta[k + 1], m, n_out, u,
                              upd_params);
    }
    if (last_sync) {
#pragma omp barrier
    }
    return loss;
}
