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
    T *Xb[2], *Yb[2], *swb[2];  /* [1]: NULL, or the plan's second set */
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
    ws->Xb[0] = AT(T, pl->xb);
    ws->Yb[0] = AT(T, pl->yb);
    ws->swb[0] = AT(T, pl->swb);
    ws->Xb[1] = AT(T, pl->xb2);
    ws->Yb[1] = AT(T, pl->yb2);
    ws->swb[1] = AT(T, pl->swb2);
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

/* What the batch loop shares (filled by FN(train), entry.h). */
typedef struct {
    const ARGS(train) *a;
    const int64_t *w_off, *b_off;
    int64_t n_w, n_p;
    FN(train_ws) ws;
    int64_t t0;         /* the optimizer's step count before this call */
    double lsum, wsum;  /* in: running sums; out: with this call's batches */
    int64_t done;       /* out */
    int diverged;       /* out */
} FN(train_ctx);

/*
 * Whether batch [start, start + mb) has no weight (all zero): it teaches
 * nothing and is skipped.  The decision changes the team's path, so every
 * thread must reach the same one: it is read from the caller's read-only
 * arrays, never from the shared batch buffer, which a thread that skipped
 * would already be refilling with the next batch while another still read
 * it.
 */
static int
FN(batch_weightless)(const ARGS(train) *a, int64_t start, int64_t mb)
{
    if (a->sw == NULL) {
        return 0;
    }
    return (a->order != NULL ? FN(weight_sum_at)(a->sw, a->order + start, mb)
                             : FN(weight_sum)(a->sw + start, mb)) <= 0.0;
}

/* The rows of one batch: X (mb, n_0), Y (mb, n_L), sw (mb) or NULL. */
typedef struct {
    const T *X, *Y, *sw;
} FN(batch_rows);

/*
 * Batch [start, start + mb) (shared by the team): the caller's rows in
 * place, or gathered into the workspace's set `set` of batch arrays when
 * shuffled (order), with class labels written as one-hot rows.  Rows
 * gathered by one thread are read by another only after a barrier (a
 * shuffled batch's gather ends with one).
 */
static FN(batch_rows)
FN(batch_gather)(const ARGS(train) *a, const FN(train_ws) *ws, int64_t start,
                 int64_t mb, int tiny, int set)
{
    int64_t n_in = a->arch->sizes[0];
    int64_t n_L = a->arch->sizes[a->arch->n_layers - 1];
    const int64_t *labels = a->labels;
    T *Xb = ws->Xb[set], *Yb = ws->Yb[set], *swb = ws->swb[set];
    FN(batch_rows) r;

    if (a->order != NULL) {
        const int64_t *idx = a->order + start;
#pragma omp for schedule(static)
        for (int64_t i = 0; i < mb; i++) {
            memcpy(Xb + i * n_in, a->X + idx[i] * n_in,
                   (size_t)n_in * sizeof(T));
            if (labels != NULL) {
                FN(onehot_row)(Yb + i * n_L, n_L, labels[idx[i]]);
            } else {
                memcpy(Yb + i * n_L, a->Y + idx[i] * n_L,
                       (size_t)n_L * sizeof(T));
            }
            if (a->sw != NULL) {
                swb[i] = a->sw[idx[i]];
            }
        }
        r.X = Xb;
        r.Y = Yb;
        r.sw = a->sw != NULL ? swb : NULL;
        return r;
    }
    r.X = a->X + start * n_in;
    r.Y = labels != NULL ? Yb : a->Y + start * n_L;
    r.sw = a->sw != NULL ? a->sw + start : NULL;
    if (labels != NULL && (tiny || a->arch->n_layers == 2)) {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < mb; i++) {
            FN(onehot_row)(Yb + i * n_L, n_L, labels[start + i]);
        }
    } else if (labels != NULL) {
        /* no barrier needed: backward_body's forward pass has one (after
         * its first layer) before the output layer's loss reads Y, and
         * cut by samples, each thread's loss reads the rows it wrote */
        int nt = team_size(), tid = thread_id();
        for (int64_t i = mb * tid / nt; i < mb * (tid + 1) / nt; i++) {
            FN(onehot_row)(Yb + i * n_L, n_L, labels[start + i]);
        }
    }
    return r;
}

/*
 * The batch loop of train, run by every thread of the team: per batch,
 * gather its rows, the loss and gradient (tiny or general path), then the
 * update.  Every thread runs the same loop and takes the same branches:
 * the loss and weight sums are computed identically on each.
 */
static void
FN(train_region)(FN(train_ctx) *c)
{
    const ARGS(train) *a = c->a;
    const FN(train_ws) ws = c->ws;
    const bp_arch *arch = a->arch;
    bp_arch arch_b;
    int tiny = arch_is_tiny(arch);
    double my_lsum = c->lsum, my_wsum = c->wsum;
    int64_t my_done = 0;
    int my_diverged = 0;
    /* the general path updates each layer as its gradient is computed,
     * unless clipping needs the whole gradient first */
    FN(upd) u;
    int fused = !tiny && a->opt->clip_norm == 0.0;
    /* Shuffled batches gathered into the two sets of batch arrays in turn
     * end with no barrier: the next batch's gather ends with one, which
     * every thread reaches only once done with this batch, and writes only
     * the other set meanwhile.  (The last batch has the region's end.) */
    int overlap = fused && a->order != NULL && ws.Xb[1] != NULL;
    int set = 0;
    FN(upd_init)(&u, a->opt);

    for (int64_t b = a->first_batch; b < a->first_batch + a->n_batches; b++) {
        int64_t start = b * a->batch;
        int64_t mb = a->m - start < a->batch ? a->m - start : a->batch;
        FN(batch_rows) r;
        double loss, wsum;
        if (FN(batch_weightless)(a, start, mb)) {
            continue;
        }
        r = FN(batch_gather)(a, &ws, start, mb, tiny, set);
        set = overlap ? !set : 0;
        if (arch->dropout != NULL) {
            /* this batch's masks: a copy of the architecture with its seed
             * (arch_b, this thread's; every thread makes the same) */
            arch_b = *a->arch;
            arch_b.drop_seed = bp_dropout_batch_seed(a->arch->drop_seed, b);
            arch = &arch_b;
        }
        FN(upd_step)(&u, a->opt, c->t0 + my_done + 1);
        if (tiny) {
            loss = FN(tiny_backward_body)(a->grad, ws.lbuf, &wsum, r.X, r.Y,
                                          r.sw, a->params, arch, c->w_off,
                                          c->b_off, mb);
        } else {
            loss = FN(backward_body)(a->grad, ws.delta, ws.net, ws.out,
                                     ws.lbuf, &wsum, r.X, r.Y, r.sw,
                                     a->params, arch, c->w_off, c->b_off, mb,
                                     ws.scratch, fused ? &u : NULL,
                                     a->params, !overlap, a->cut);
        }
        if (!isfinite(loss)) {
            my_diverged = 1;
            break;
        }
        if (!fused) {
            FN(update_body)(a->params, a->grad, a->opt, c->t0 + my_done + 1,
                            c->n_p, c->n_w);
        }
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
