/*
 * net/entry.h - the kernel-table entry points (a fragment of net_impl.h):
 * each checks its arguments, chooses the team size, and runs the path.
 */

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

/* Kernel scratch for nt threads, or NULL when out of memory. */
static T *
FN(alloc_scratch)(int nt)
{
    return (T *)malloc((size_t)nt * (size_t)GEMM_SCRATCH_ELEMS * sizeof(T));
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
