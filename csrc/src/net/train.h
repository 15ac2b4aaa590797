/*
 * net/train.h - the training batch loop (a fragment of net_impl.h): the
 * workspace's arrays, gathering a batch, then the backward pass (general
 * or tiny) and the update, batch after batch.
 */

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
