/*
 * net/optim.h - the optimizer updates over the flat parameter buffer (a
 * fragment of net_impl.h): SGD (momentum, Nesterov), Adam and AdamW,
 * gradient-norm clipping, and the one-parameter form the online path uses.
 */

/* One SGD step of parameter i, value p, gradient g: the new value. */
static INLINE T
FN(sgd_one)(T p, T g, T *restrict s1, int64_t i, T lr, T wd, T mu,
            int nesterov)
{
    if (wd != 0) {
        g = MULADD(wd, p, g);
    }
    if (s1 != NULL) {
        /* v = mu v + g (v starts at 0, so the first v is g) */
        T v = MULADD(mu, s1[i], g);
        s1[i] = v;
        g = nesterov ? MULADD(mu, v, g) : v;
    }
    return MULADD(-lr, g, p);
}

/* SGD on entries [lo, hi) with weight decay wd (0 for biases), gradients
 * scaled by gs (1, an exact no-op, unless clipping).  The loop-invariant
 * branches are hoisted by the compiler, so it vectorises. */
static void
FN(sgd_range)(T *restrict params, const T *restrict grad, T *restrict s1,
              int64_t lo, int64_t hi, T lr, T wd, T mu, int nesterov, T gs)
{
#pragma omp for schedule(static) nowait
    for (int64_t i = lo; i < hi; i++) {
        params[i] = FN(sgd_one)(params[i], grad[i] * gs, s1, i, lr, wd, mu,
                                nesterov);
    }
}

/* One Adam or AdamW step of parameter i: the new value. */
static INLINE T
FN(adam_one)(T p, T g, T *restrict s1, T *restrict s2, int64_t i, T lr, T wd,
             int decoupled, T omb1, T tb2, T omb2, T step, T bc2_sqrt, T eps)
{
    if (wd != 0) {
        if (decoupled) {
            p *= MULADD(-lr, wd, (T)1);
        } else {
            g = MULADD(wd, p, g);
        }
    }
    s1[i] = MULADD(omb1, g - s1[i], s1[i]);
    s2[i] = MULADD(tb2, s2[i], omb2 * g * g);
    return MULADD(-step, s1[i] / (SQRT(s2[i]) / bc2_sqrt + eps), p);
}

/* Adam or AdamW on entries [lo, hi) with weight decay wd (0 for biases). */
static void
FN(adam_range)(T *restrict params, const T *restrict grad, T *restrict s1,
               T *restrict s2, int64_t lo, int64_t hi, T lr, T wd,
               int decoupled, T omb1, T tb2, T omb2, T step, T bc2_sqrt,
               T eps, T gs)
{
#pragma omp for schedule(static) nowait
    for (int64_t i = lo; i < hi; i++) {
        params[i] = FN(adam_one)(params[i], grad[i] * gs, s1, s2, i, lr, wd,
                                 decoupled, omb1, tb2, omb2, step, bc2_sqrt,
                                 eps);
    }
}

/*
 * The clipping factor of torch.nn.utils.clip_grad_norm_ for grad (n):
 * min(1, clip / (||grad||_2 + 1e-6)), the squares summed in double in a
 * fixed order (eight interleaved sums), so every thread that calls it gets
 * the same bits.
 */
static T
FN(clip_scale)(const T *grad, int64_t n, double clip)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0}, norm, coef;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int r = 0; r < 8; r++) {
            double g = (double)grad[i + r];
            s[r] += g * g;
        }
    }
    for (int r = 0; i < n; i++, r++) {
        double g = (double)grad[i];
        s[r] += g * g;
    }
    norm = sqrt(((s[0] + s[4]) + (s[1] + s[5])) +
                ((s[2] + s[6]) + (s[3] + s[7])));
    coef = clip / (norm + 1e-6);
    return coef < 1.0 ? (T)coef : (T)1;
}

/*
 * One optimizer update over the flat buffers (work-shared over entries;
 * weights [0, n_weights) get weight decay, biases do not).  t is the
 * update's number, counted from 1.  Ends with a barrier.
 */
static void
FN(update_body)(T *params, const T *grad, const bp_optim *opt, int64_t t,
                int64_t n, int64_t n_weights)
{
    T lr = (T)opt->lr, wd = (T)opt->weight_decay;
    T *s1 = (T *)opt->state1, *s2 = (T *)opt->state2;
    /* every thread computes the same factor */
    T gs = opt->clip_norm > 0 ? FN(clip_scale)(grad, n, opt->clip_norm)
                              : (T)1;

    if (opt->kind == BP_OPT_SGD) {
        T mu = (T)opt->momentum;
        FN(sgd_range)(params, grad, s1, 0, n_weights, lr, wd, mu,
                      opt->nesterov, gs);
        FN(sgd_range)(params, grad, s1, n_weights, n, lr, 0, mu,
                      opt->nesterov, gs);
    } else {
        double b1 = opt->beta1, b2 = opt->beta2;
        T omb1 = (T)(1.0 - b1), tb2 = (T)b2, omb2 = (T)(1.0 - b2);
        T step = (T)(opt->lr / (1.0 - pow(b1, (double)t)));
        T bc2_sqrt = (T)sqrt(1.0 - pow(b2, (double)t));
        T eps = (T)opt->eps;
        int decoupled = opt->kind == BP_OPT_ADAMW;
        FN(adam_range)(params, grad, s1, s2, 0, n_weights, lr, wd, decoupled,
                       omb1, tb2, omb2, step, bc2_sqrt, eps, gs);
        FN(adam_range)(params, grad, s1, s2, n_weights, n, lr, 0, decoupled,
                       omb1, tb2, omb2, step, bc2_sqrt, eps, gs);
    }
#pragma omp barrier
}

static bp_status
FN(check_optim)(const bp_optim *opt)
{
    if (opt == NULL || !(opt->clip_norm >= 0.0)) {
        return BP_EARG;
    }
    switch (opt->kind) {
    case BP_OPT_SGD:
        return BP_OK;
    case BP_OPT_ADAM:
    case BP_OPT_ADAMW:
        return opt->state1 != NULL && opt->state2 != NULL ? BP_OK : BP_EARG;
    default:
        return BP_EARG;
    }
}

/* The optimizer constants of update_body, for one update at a time. */
typedef struct {
    int sgd, nesterov, decoupled;
    T lr, wd, mu, omb1, tb2, omb2, eps, step, bc2_sqrt;
    T *s1, *s2;
} FN(upd);

/* Fill u with opt's constants (step and bc2_sqrt: upd_step); returns
 * whether the update is plain SGD (no momentum buffer, no decay). */
static INLINE int
FN(upd_init)(FN(upd) *u, const bp_optim *opt)
{
    double b1 = opt->beta1, b2 = opt->beta2;
    u->sgd = opt->kind == BP_OPT_SGD;
    u->nesterov = opt->nesterov;
    u->decoupled = opt->kind == BP_OPT_ADAMW;
    u->lr = (T)opt->lr;
    u->wd = (T)opt->weight_decay;
    u->mu = (T)opt->momentum;
    u->omb1 = (T)(1.0 - b1);
    u->tb2 = (T)b2;
    u->omb2 = (T)(1.0 - b2);
    u->eps = (T)opt->eps;
    u->s1 = (T *)opt->state1;
    u->s2 = (T *)opt->state2;
    u->step = u->bc2_sqrt = 0;
    return u->sgd && u->s1 == NULL && u->wd == 0;
}

/* The constants of update number t (from 1) that depend on t (Adam's bias
 * corrections, as update_body computes them). */
static INLINE void
FN(upd_step)(FN(upd) *u, const bp_optim *opt, int64_t t)
{
    if (!u->sgd) {
        u->step = (T)(opt->lr / (1.0 - pow(opt->beta1, (double)t)));
        u->bc2_sqrt = (T)sqrt(1.0 - pow(opt->beta2, (double)t));
    }
}

/* The update of entries [lo, hi) from their gradients in grad, as
 * update_body makes it without clipping (weight decay wd: 0 for biases),
 * by the thread that has just computed those gradients. */
static void
FN(upd_span)(const FN(upd) *u, T *restrict params, const T *restrict grad,
             int64_t lo, int64_t hi, T wd)
{
    if (u->sgd) {
        for (int64_t i = lo; i < hi; i++) {
            params[i] = FN(sgd_one)(params[i], grad[i], u->s1, i, u->lr, wd,
                                    u->mu, u->nesterov);
        }
        return;
    }
    for (int64_t i = lo; i < hi; i++) {
        params[i] = FN(adam_one)(params[i], grad[i], u->s1, u->s2, i, u->lr,
                                 wd, u->decoupled, u->omb1, u->tb2, u->omb2,
                                 u->step, u->bc2_sqrt, u->eps);
    }
}

/* Gradient g of parameter p (weight decay wd: 0 for biases): stores it in
 * grad[p], updates params[p] as update_body would. */
static INLINE void
FN(upd_one)(const FN(upd) *u, T *params, T *grad, int64_t p, T g, T wd)
{
    grad[p] = g;
    if (u->sgd) {
        params[p] = FN(sgd_one)(params[p], g, u->s1, p, u->lr, wd, u->mu,
                                u->nesterov);
    } else {
        params[p] = FN(adam_one)(params[p], g, u->s1, u->s2, p, u->lr, wd,
                                 u->decoupled, u->omb1, u->tb2, u->omb2,
                                 u->step, u->bc2_sqrt, u->eps);
    }
}
