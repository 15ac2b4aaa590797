/*
 * net/online.h - online learning (one sample per batch) on the tiny path
 * (a fragment of net_impl.h), serial, each layer updated as soon as its
 * gradient is known.
 */

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
 * One sample forward through a tiny network: z[k + 1] = h[k] W + b,
 * h[k + 1] = f(z[k + 1]), with h[0] = x.
 *   z, h [L + 1][TINY_MAXW] out (rows 1..L);  x (n_0) in
 */
static void
FN(online_forward)(T (*z)[TINY_MAXW], T (*h)[TINY_MAXW], const T *x,
                   const T *params, const bp_arch *arch,
                   const int64_t *w_off, const int64_t *b_off)
{
    for (int64_t k = 0; k + 1 < arch->n_layers; k++) {
        const T *W = params + w_off[k], *bk = params + b_off[k];
        const T *hk = k == 0 ? x : h[k];
        int64_t ni = arch->sizes[k], no = arch->sizes[k + 1];
#define FWD_W(w) FN(online_fwd)(z[k + 1], hk, W, bk, ni, w)
        BY_WIDTH(no, FWD_W)
#undef FWD_W
        FN(act_row)(h[k + 1], z[k + 1], no, arch->acts[k]);
    }
}

/*
 * One sample backward through a tiny network, from the output delta d
 * down, each layer updated as soon as its input delta has used its old
 * weights (plain: SGD without momentum or decay, updated inline).  dp is
 * scratch of TINY_MAXW; a parameter's gradient is 0 + its one product,
 * as the batch path's sums make it.
 *   d (n_L) inout;  z, h as online_forward's;  x (n_0) in
 */
static void
FN(online_backward)(T *params, T *grad, const FN(upd) *u, int plain, T *d,
                    T *dp, T (*z)[TINY_MAXW], T (*h)[TINY_MAXW], const T *x,
                    const bp_arch *arch, const int64_t *w_off,
                    const int64_t *b_off)
{
    const int64_t *sz = arch->sizes;
    for (int64_t k = arch->n_layers - 2; k >= 0; k--) {
        int64_t ni = sz[k], no = sz[k + 1];
        const T *W = params + w_off[k], *hk = k == 0 ? x : h[k];
        T *tmp;
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
                   grad + b_off[k], hk, d, ni, w, u->lr)
            BY_WIDTH(no, SGD_W)
#undef SGD_W
        } else {
            for (int64_t a = 0; a < ni; a++) {
                for (int64_t j = 0; j < no; j++) {
                    FN(upd_one)(u, params, grad, w_off[k] + a * no + j,
                                MULADD(hk[a], d[j], (T)0), u->wd);
                }
            }
            for (int64_t j = 0; j < no; j++) {
                FN(upd_one)(u, params, grad, b_off[k] + j, (T)0 + d[j], 0);
            }
        }
        tmp = d;
        d = dp;
        dp = tmp;
    }
}

/*
 * Online learning (one sample per batch) on the tiny path, serially.  Per
 * sample this is the arithmetic of tiny_backward_body with one lane and of
 * update_body, so the bits equal the batch loop's; but a layer's update
 * follows its gradient at once (after its input delta has used the old
 * weights), with nothing else per sample.  SCALAR_LOOP inlines every call
 * below it: online_forward and online_backward are plain static functions
 * so that GCC's flatten reaches through them into act_row and act_grad_row
 * too.
 */
static void SCALAR_LOOP
FN(online_tiny)(FN(train_ctx) *c)
{
    const ARGS(train) *a = c->a;
    T *params = a->params, *grad = a->grad;
    const bp_arch *arch = a->arch;
    const T *X = a->X, *Y = a->Y, *sw = a->sw;
    const int64_t *order = a->order, *labels = a->labels;
    const int64_t *w_off = c->w_off, *b_off = c->b_off;
    int64_t L = arch->n_layers - 1, n_in = arch->sizes[0];
    int64_t n_L = arch->sizes[L];
    T z[TINY_MAXL + 1][TINY_MAXW], h[TINY_MAXL + 1][TINY_MAXW];
    T dbuf[2][TINY_MAXW], y1[TINY_MAXW];
    double lsum = c->lsum, wsum = c->wsum;
    int64_t done = 0, t = c->t0;
    FN(upd) u;
    int plain = FN(upd_init)(&u, a->opt);

    c->diverged = 0;
    for (int64_t b = a->first_batch; b < a->first_batch + a->n_batches; b++) {
        int64_t i = order != NULL ? order[b] : b;
        const T *x = X + i * n_in, *y = y1;
        const T *swi = sw != NULL ? sw + i : NULL;
        double S = FN(weight_sum)(swi, 1), li, loss;
        T scale;
        if (S <= 0.0) {
            continue;
        }
        if (labels != NULL) {
            FN(onehot_row)(y1, n_L, labels[i]);
        } else {
            y = Y + i * n_L;
        }
        scale = (T)((swi != NULL ? (double)*swi : 1.0) / S);
        FN(online_forward)(z, h, x, params, arch, w_off, b_off);
        li = FN(loss_row)(dbuf[0], z[L], h[L], y, n_L, arch, scale);
        loss = (sw != NULL ? MULADD64((double)sw[i], li, 0.0) : 0.0 + li) / S;
        if (!isfinite(loss)) {
            c->diverged = 1;
            break;
        }
        FN(upd_step)(&u, a->opt, ++t);
        /* dbuf[0]: the output delta; dbuf[1]: scratch for the next one */
        FN(online_backward)(params, grad, &u, plain, dbuf[0], dbuf[1], z, h,
                            x, arch, w_off, b_off);
        lsum = MULADD64(loss, S, lsum);
        wsum += S;
        done++;
    }
    c->lsum = lsum;
    c->wsum = wsum;
    c->done = done;
}
