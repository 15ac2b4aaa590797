/*
 * net/entry.h - the kernel-table entry points (a fragment of net_impl.h).
 * Each takes its arguments as one struct (kernels.h), checks them in the
 * order bpcore.h documents (so a call gets the same status whatever else
 * is wrong), chooses the team size, and runs its path.
 */

/* The checked layout of an architecture (arch NULL or too deep: BP_EARG,
 * as before any other check). */
static bp_status
FN(prepare)(net_layout *lay, const bp_arch *arch)
{
    bp_status s;
    if (arch == NULL || arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
    }
    if ((s = bp_arch_check(arch)) != BP_OK) {
        return s;
    }
    return bp_layout(lay->w_off, lay->b_off, &lay->n_w, &lay->n_p,
                     arch->sizes, arch->n_layers);
}

/* Whether the per-layer arrays k = 1..L are all given (delta: when not
 * NULL itself). */
static int
FN(layers_given)(T *const *net, T *const *out, T *const *delta,
                 const bp_arch *arch)
{
    for (int64_t k = 1; k < arch->n_layers; k++) {
        if (net[k] == NULL || out[k] == NULL ||
                (delta != NULL && delta[k] == NULL)) {
            return 0;
        }
    }
    return 1;
}

/* nt, or 1 when work of this many flops is too small to share. */
static int
FN(worth_sharing)(int nt, double flops)
{
    return flops < BP_PARALLEL_MIN_FLOPS ? 1 : nt;
}

/* Kernel scratch for nt threads, or NULL when out of memory. */
static T *
FN(alloc_scratch)(int nt)
{
    return (T *)malloc((size_t)nt * (size_t)GEMM_SCRATCH_ELEMS * sizeof(T));
}

static bp_status
FN(predict)(const ARGS(predict) *a)
{
    net_layout lay;
    FN(predict_ctx) c;
    int64_t need, m = a->m, brows;
    int nt, bad = 0;
    bp_status s;

    if ((s = FN(prepare)(&lay, a->arch)) != BP_OK) {
        return s;
    }
    if (a->Y == NULL || a->X == NULL || a->params == NULL || a->work == NULL) {
        return BP_EARG;
    }
    if (m < 0) {
        return BP_ESHAPE;
    }
    nt = predict_team(a->arch, m, resolve_threads(a->n_threads));
    if ((s = bp_predict_workspace_size(&need, a->arch, m, nt)) != BP_OK) {
        return s;
    }
    if (a->work_bytes < need) {
        return BP_ENOMEM;
    }
    brows = predict_block_rows(a->arch, m, (int)sizeof(T));
    c.a = a;
    c.w_off = lay.w_off;
    c.b_off = lay.b_off;
    c.per_thread = predict_thread_bytes(a->arch, m);
    c.width = arch_max_width(a->arch);
    c.brows = brows;
    c.n_blocks = (m + brows - 1) / brows;
    c.L = a->arch->n_layers - 1;
    c.bad = &bad;
    /* the shared part after every thread's own (predict_region) */
    c.packed = NULL;
    if (predict_packed_bytes(a->arch, m) > 0) {
        c.packed = (char *)align64((char *)align64(a->work) +
                                   (int64_t)nt * c.per_thread);
    }
    if (m <= BP_PREDICT_SMALL && nt > 1) {
        /* a few rows: checked whole, before the team starts */
        if (a->check_finite &&
            ANY_NONFINITE_T(a->X, m * a->arch->sizes[0])) {
            return BP_ENONFINITE;
        }
        RUN_TEAM(nt, FN(predict_small_region)(&c));
    } else {
        RUN_TEAM(nt, FN(predict_region)(&c));
    }
    return bad ? BP_ENONFINITE : BP_OK;
}

/*
 * C (m, n) = op(A) op(B) by the layer product of this kernel on n_threads
 * threads (bp_matmul_*): A (m, k), or (k, m) stored when trans_a; B (k, n),
 * or (n, k) stored when trans_b.  The three products of a layer are
 * X W, X^T delta (trans_a) and delta W^T (trans_b).
 */
static bp_status
FN(matmul)(const ARGS(matmul) *a)
{
    int64_t m = a->m, n = a->n, k = a->k;
    int64_t rsa = a->trans_a ? 1 : k, csa = a->trans_a ? m : 1;
    int64_t rsb = a->trans_b ? 1 : n, csb = a->trans_b ? k : 1;
    int nt;
    T *scratch;

    if (a->C == NULL || a->A == NULL || a->B == NULL) {
        return BP_EARG;
    }
    if (m < 1 || n < 1 || k < 1) {
        return BP_ESHAPE;
    }
    nt = resolve_threads(a->n_threads);
    if ((scratch = FN(alloc_scratch)(nt)) == NULL) {
        return BP_ENOMEM;
    }
    RUN_TEAM(nt, FN(product_par)(a->C, n, a->A, rsa, csa, a->B, rsb, csb, m,
                                 n, k, scratch));
    free(scratch);
    return BP_OK;
}

static bp_status
FN(forward)(const ARGS(forward) *a)
{
    net_layout lay;
    int nt;
    T *scratch;
    bp_status s;

    if ((s = FN(prepare)(&lay, a->arch)) != BP_OK) {
        return s;
    }
    if (a->net == NULL || a->out == NULL || a->X == NULL ||
            a->params == NULL ||
            !FN(layers_given)(a->net, a->out, NULL, a->arch)) {
        return BP_EARG;
    }
    if (a->m < 0) {
        return BP_ESHAPE;
    }
    nt = forward_team(a->arch, a->m, resolve_threads(a->n_threads));
    scratch = FN(alloc_scratch)(nt);
    if (scratch == NULL) {
        return BP_ENOMEM;
    }
    RUN_TEAM(nt, FN(forward_body)(a->net, a->out, a->X, a->params, a->arch,
                                  lay.w_off, lay.b_off, a->m, scratch,
                                  NULL, 1));
    free(scratch);
    return BP_OK;
}

/* What backward's team shares. */
typedef struct {
    const ARGS(backward) *a;
    const int64_t *w_off, *b_off;
    double *lbuf;
    T *scratch;
    double loss; /* out */
} FN(backward_ctx);

static void
FN(backward_region)(FN(backward_ctx) *c)
{
    const ARGS(backward) *a = c->a;
    double wsum;
    double l = FN(backward_body)(a->grad, a->delta, a->net, a->out, c->lbuf,
                                 &wsum, a->X, a->Y, a->sw, a->params,
                                 a->arch, c->w_off, c->b_off, a->m,
                                 c->scratch, NULL, NULL, 1, BP_CUT_AUTO);
    if (thread_id() == 0) {
        c->loss = l;
    }
}

static bp_status
FN(backward)(const ARGS(backward) *a)
{
    net_layout lay;
    FN(backward_ctx) c;
    int nt;
    bp_status s;

    if ((s = FN(prepare)(&lay, a->arch)) != BP_OK) {
        return s;
    }
    if (a->grad == NULL || a->delta == NULL || a->net == NULL ||
            a->out == NULL || a->loss == NULL || a->X == NULL ||
            a->Y == NULL || a->params == NULL ||
            !FN(layers_given)(a->net, a->out, a->delta, a->arch)) {
        return BP_EARG;
    }
    if (a->m < 1) {
        return BP_ESHAPE;
    }
    if (FN(weight_sum)(a->sw, a->m) <= 0.0) {
        return BP_EARG;
    }
    nt = team_for(resolve_threads(a->n_threads),
                  (double)a->m * arch_weights(a->arch) * 6.0,
                  train_syncs(a->arch, a->m, (int64_t)sizeof(T),
                              BP_CUT_AUTO),
                  sizeof(T) == 8);
    /* Scratch: the per-sample losses and the kernel's packing buffers. */
    c.a = a;
    c.w_off = lay.w_off;
    c.b_off = lay.b_off;
    c.lbuf = (double *)malloc((size_t)a->m * sizeof(double));
    c.scratch = FN(alloc_scratch)(nt);
    c.loss = 0.0;
    if (c.lbuf != NULL && c.scratch != NULL) {
        RUN_TEAM(nt, FN(backward_region)(&c));
        *a->loss = c.loss;
    }
    s = c.lbuf != NULL && c.scratch != NULL ? BP_OK : BP_ENOMEM;
    free(c.lbuf);
    free(c.scratch);
    return s;
}

static bp_status
FN(update)(const ARGS(update) *a)
{
    int nt;
    int64_t t;
    bp_status s;

    if (a->params == NULL || a->grad == NULL) {
        return BP_EARG;
    }
    if ((s = FN(check_optim)(a->opt)) != BP_OK) {
        return s;
    }
    if (a->n < 0 || a->n_weights < 0 || a->n_weights > a->n) {
        return BP_ESHAPE;
    }
    nt = FN(worth_sharing)(resolve_threads(a->n_threads), (double)a->n * 8.0);
    t = a->opt->t + 1;
    RUN_TEAM(nt, FN(update_body)(a->params, a->grad, a->opt, t, a->n,
                                 a->n_weights));
    a->opt->t = t;
    return BP_OK;
}

/* train's checks before any sizing: the architecture and its layout, the
 * optimizer, the pointers, and the batch range. */
static bp_status
FN(train_check)(net_layout *lay, const ARGS(train) *a)
{
    int64_t n_all;
    bp_status s;

    if ((s = FN(prepare)(lay, a->arch)) != BP_OK ||
            (s = FN(check_optim)(a->opt)) != BP_OK) {
        return s;
    }
    if (a->params == NULL || a->grad == NULL || a->loss_sum == NULL ||
            a->weight_sum == NULL || a->batches_done == NULL ||
            a->X == NULL || (a->Y == NULL) == (a->labels == NULL) ||
            a->work == NULL || a->cut < BP_CUT_AUTO ||
            a->cut > BP_CUT_SAMPLES) {
        return BP_EARG;
    }
    if (a->m < 1 || a->batch < 1 || a->first_batch < 0 || a->n_batches < 0) {
        return BP_ESHAPE;
    }
    n_all = (a->m - 1) / a->batch + 1;  /* batches in the data */
    if (a->first_batch > n_all || a->n_batches > n_all - a->first_batch) {
        return BP_ESHAPE;
    }
    return BP_OK;
}

/* Whether the row order (a permutation's range) and the class labels are
 * in range, checked once before the team starts. */
static bp_status
FN(train_check_indices)(const ARGS(train) *a)
{
    int64_t n_L = a->arch->sizes[a->arch->n_layers - 1];
    for (int64_t i = 0; a->order != NULL && i < a->m; i++) {
        if (a->order[i] < 0 || a->order[i] >= a->m) {
            return BP_EARG;
        }
    }
    for (int64_t i = 0; a->labels != NULL && i < a->m; i++) {
        if (a->labels[i] < 0 || a->labels[i] >= n_L) {
            return BP_EARG;
        }
    }
    return BP_OK;
}

/* train's team size: exactly -n_threads when the caller has chosen (then
 * still 1 for too little work), else what the team's measured cost says. */
static int
FN(train_team)(const ARGS(train) *a)
{
    double flops = (double)a->batch * arch_weights(a->arch) * 6.0;
    if (a->n_threads < 0) {
        return FN(worth_sharing)(resolve_threads(-a->n_threads), flops);
    }
    return team_for(resolve_threads(a->n_threads), flops,
                    train_syncs(a->arch, a->batch, (int64_t)sizeof(T),
                                a->cut),
                    sizeof(T) == 8);
}

static bp_status
FN(train)(const ARGS(train) *a)
{
    net_layout lay;
    train_plan plan;
    FN(train_ctx) c;
    int nt;
    bp_status s;

    if ((s = FN(train_check)(&lay, a)) != BP_OK) {
        return s;
    }
    nt = FN(train_team)(a);
    if ((s = train_plan_make(&plan, a->arch, a->batch, sizeof(T), nt)) !=
            BP_OK) {
        return s;
    }
    if (a->work_bytes < plan.total) {
        return BP_ENOMEM;
    }
    if ((s = FN(train_check_indices)(a)) != BP_OK) {
        return s;
    }
    c.a = a;
    c.w_off = lay.w_off;
    c.b_off = lay.b_off;
    c.n_w = lay.n_w;
    c.n_p = lay.n_p;
    FN(carve)(&c.ws, &plan, a->arch, a->work);
    c.t0 = a->opt->t;
    c.lsum = *a->loss_sum;
    c.wsum = *a->weight_sum;
    c.done = 0;
    c.diverged = 0;
    /* the online loop updates each layer at once: no clipping, which needs
     * the whole gradient first (nor dropout: not tiny) */
    if (a->batch == 1 && arch_is_tiny(a->arch) && a->opt->clip_norm == 0.0) {
        FN(online_tiny)(&c);
    } else {
        RUN_TEAM(nt, FN(train_region)(&c));
    }
    a->opt->t = c.t0 + c.done;
    *a->loss_sum = c.lsum;
    *a->weight_sum = c.wsum;
    *a->batches_done = c.done;
    return c.diverged ? BP_ENONFINITE : BP_OK;
}
