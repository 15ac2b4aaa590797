/*
 * layout.c - the architecture check, the flat parameter layout and the
 * workspace sizes of predict and train (one plan, train_plan, gives both
 * the training workspace's size and where each array lies), with the
 * checked size arithmetic they use.
 */
#include <math.h>
#include <stdint.h>

#include "internal.h"
#include "gemm/gemm.h"

bp_status
mul_checked(int64_t *r, int64_t a, int64_t b)
{
    if (a < 0 || b < 0) {
        return BP_ESHAPE;
    }
    if (a != 0 && b > INT64_MAX / a) {
        return BP_EOVERFLOW;
    }
    *r = a * b;
    return BP_OK;
}

bp_status
add_checked(int64_t *r, int64_t a, int64_t b)
{
    if (a < 0 || b < 0) {
        return BP_ESHAPE;
    }
    if (b > INT64_MAX - a) {
        return BP_EOVERFLOW;
    }
    *r = a + b;
    return BP_OK;
}

void *
align64(void *p)
{
    uintptr_t u = (uintptr_t)p;
    return (void *)((u + 63u) & ~(uintptr_t)63u);
}

/* Whether every layer width is in [1, BP_MAX_WIDTH]. */
static int
widths_ok(const int64_t *sizes, int64_t n_layers)
{
    for (int64_t k = 0; k < n_layers; k++) {
        if (sizes[k] < 1 || sizes[k] > BP_MAX_WIDTH) {
            return 0;
        }
    }
    return 1;
}

bp_status
bp_layout(int64_t *w_off, int64_t *b_off, int64_t *n_weights,
          int64_t *n_params, const int64_t *sizes, int64_t n_layers)
{
    int64_t total = 0;
    bp_status s;

    if (w_off == NULL || b_off == NULL || n_weights == NULL ||
            n_params == NULL || sizes == NULL) {
        return BP_EARG;
    }
    if (n_layers < 2) {
        return BP_ESHAPE;
    }
    if (!widths_ok(sizes, n_layers)) {
        return BP_ESHAPE;
    }
    for (int64_t k = 0; k + 1 < n_layers; k++) {
        int64_t nw;
        w_off[k] = total;
        if ((s = mul_checked(&nw, sizes[k], sizes[k + 1])) != BP_OK ||
                (s = add_checked(&total, total, nw)) != BP_OK) {
            return s;
        }
    }
    *n_weights = total;
    for (int64_t k = 0; k + 1 < n_layers; k++) {
        b_off[k] = total;
        if ((s = add_checked(&total, total, sizes[k + 1])) != BP_OK) {
            return s;
        }
    }
    *n_params = total;
    return BP_OK;
}

/* Whether the L activation codes are known, softmax only at the output. */
static int
acts_ok(const int32_t *acts, int64_t L)
{
    for (int64_t k = 0; k < L; k++) {
        if (acts[k] < 0 || acts[k] >= BP_ACT_COUNT) {
            return 0;
        }
        if (acts[k] == BP_ACT_SOFTMAX && k != L - 1) {
            return 0;
        }
    }
    return 1;
}

/* Whether the L - 1 hidden layers' dropout rates (if any) are in [0, 1). */
static int
dropout_ok(const double *dropout, int64_t L)
{
    for (int64_t k = 0; dropout != NULL && k + 1 < L; k++) {
        if (!(dropout[k] >= 0.0 && dropout[k] < 1.0)) {
            return 0;
        }
    }
    return 1;
}

/* Whether the loss code is known and fits the output activation. */
static int
loss_ok(int32_t loss, double loss_param, int32_t out_act)
{
    switch (loss) {
    case BP_LOSS_MSE:
    case BP_LOSS_MAE:
        return 1;
    case BP_LOSS_CE:
        return out_act == BP_ACT_SOFTMAX;
    case BP_LOSS_BCE:
        return out_act == BP_ACT_SIGMOID;
    case BP_LOSS_HUBER:
        /* delta finite and > 0 */
        return isfinite(loss_param) && loss_param > 0.0;
    case BP_LOSS_POISSON:
        return out_act == BP_ACT_IDENTITY;
    default:
        return 0;
    }
}

bp_status
bp_arch_check(const bp_arch *arch)
{
    int64_t L;

    if (arch == NULL || arch->sizes == NULL || arch->acts == NULL) {
        return BP_EARG;
    }
    if (arch->n_layers < 2 || arch->n_layers > BP_MAX_LAYERS) {
        return BP_ESHAPE;
    }
    L = arch->n_layers - 1;
    if (!widths_ok(arch->sizes, arch->n_layers)) {
        return BP_ESHAPE;
    }
    if (!acts_ok(arch->acts, L) || !dropout_ok(arch->dropout, L) ||
            !loss_ok(arch->loss, arch->loss_param, arch->acts[L - 1])) {
        return BP_EARG;
    }
    return BP_OK;
}

double
arch_weights(const bp_arch *arch)
{
    double w = 0.0;
    for (int64_t k = 0; k + 1 < arch->n_layers; k++) {
        w += (double)arch->sizes[k] * (double)arch->sizes[k + 1];
    }
    return w;
}

int64_t
arch_max_width(const bp_arch *arch)
{
    int64_t w = 0;
    for (int64_t k = 0; k < arch->n_layers; k++) {
        if (arch->sizes[k] > w) {
            w = arch->sizes[k];
        }
    }
    return w;
}

/* Bytes of one thread's predict area: two ping-pong row blocks and the
 * kernel's packing scratch, each 64-byte aligned. */
int64_t
predict_thread_bytes(const bp_arch *arch, int64_t m)
{
    if (m <= BP_PREDICT_SMALL) {
        /* a few rows use the direct products: no packing scratch */
        return (arch_max_width(arch) * BP_PREDICT_SMALL * 8 + 64) * 2;
    }
    return (arch_max_width(arch) * predict_area_rows(m) * 8 + 64) * 2 +
           GEMM_SCRATCH_ELEMS * 8 + 64;
}

int64_t
predict_packed_offset(const bp_arch *arch, int64_t k)
{
    int64_t off = 0;
    for (int64_t j = 0; j < k; j++) {
        int64_t n_in = arch->sizes[j], n_out = arch->sizes[j + 1];
        if (layer_uses_gemm(n_in, n_out)) {
            off += (n_in * ((n_out + 63) / 64 * 64) * 8 + 63) / 64 * 64;
        }
    }
    return off;
}

int64_t
predict_packed_total(const bp_arch *arch)
{
    double widths = 0.0;
    for (int64_t k = 0; k + 1 < arch->n_layers; k++) {
        widths += (double)arch->sizes[k];
    }
    /* far from overflow (any network whose weights can be allocated) */
    if ((arch_weights(arch) + 64.0 * widths) * 8.0 > 1e18) {
        return 0;
    }
    return predict_packed_offset(arch, arch->n_layers - 1) + 64;
}

/* The arguments every workspace-size query checks first (bp_arch_check
 * bounds n_layers by BP_MAX_LAYERS, so the offsets fit MAX_LAYERS). */
static bp_status
sizing_args_check(const int64_t *bytes, const bp_arch *arch)
{
    return bytes == NULL ? BP_EARG : bp_arch_check(arch);
}

int
forward_team(const bp_arch *arch, int64_t m, int nt)
{
    return (double)m * arch_weights(arch) * 2.0 < BP_PARALLEL_MIN_FLOPS ? 1
                                                                        : nt;
}

int
predict_team(const bp_arch *arch, int64_t m, int nt)
{
    if (m <= BP_PREDICT_ROWS && m > BP_PREDICT_SMALL) {
        return 1;  /* one block of rows: one thread */
    }
    return forward_team(arch, m, nt);  /* or too little work */
}

int
bp_predict_threads(const bp_arch *arch, int64_t m, int n_threads)
{
    if (arch == NULL || bp_arch_check(arch) != BP_OK || m < 0) {
        return 1;
    }
    return predict_team(arch, m, resolve_threads(n_threads));
}

int
bp_forward_threads(const bp_arch *arch, int64_t m, int n_threads)
{
    if (arch == NULL || bp_arch_check(arch) != BP_OK || m < 0) {
        return 1;
    }
    return forward_team(arch, m, resolve_threads(n_threads));
}

bp_status
bp_predict_workspace_size(int64_t *bytes, const bp_arch *arch, int64_t m,
                          int n_threads)
{
    int64_t total;
    bp_status s;

    if ((s = sizing_args_check(bytes, arch)) != BP_OK) {
        return s;
    }
    /* widths are at most BP_MAX_WIDTH, so one thread's area cannot
     * overflow; the thread count multiplies it */
    if (m < 0) {
        return BP_ESHAPE;
    }
    if ((s = mul_checked(&total, predict_thread_bytes(arch, m),
                         resolve_threads(n_threads))) != BP_OK ||
            (s = add_checked(&total, total, 64)) != BP_OK ||
            (s = add_checked(&total, total,
                             predict_packed_bytes(arch, m))) != BP_OK) {
        return s;
    }
    *bytes = total;
    return BP_OK;
}

/* Take rows * cols * size bytes (rounded up to 64) at *off for *field. */
static bp_status
plan_take(int64_t *field, int64_t *off, int64_t rows, int64_t cols,
          int64_t size)
{
    int64_t bytes;
    bp_status s;
    if ((s = mul_checked(&bytes, rows, cols)) != BP_OK ||
            (s = mul_checked(&bytes, bytes, size)) != BP_OK ||
            (s = add_checked(&bytes, bytes, 63)) != BP_OK) {
        return s;
    }
    *field = *off;
    return add_checked(off, *off, bytes / 64 * 64);
}

bp_status
train_plan_make(train_plan *pl, const bp_arch *arch, int64_t batch,
                int64_t esize, int nt)
{
    int64_t L = arch->n_layers - 1, off = 0, n_chunks;
    int tiny = arch_is_tiny(arch), gemm = 0;
    bp_status s;

    if (batch < 1 || nt < 1 || L < 1 || L >= MAX_LAYERS) {
        return batch < 1 ? BP_ESHAPE : BP_EARG;
    }
    n_chunks = (batch + TINY_CHUNK - 1) / TINY_CHUNK;
    for (int64_t k = 0; k < MAX_LAYERS; k++) {
        pl->net[k] = pl->out[k] = pl->delta[k] = -1;
    }
    if ((s = plan_take(&pl->xb, &off, batch, arch->sizes[0], esize)) ||
            (s = plan_take(&pl->yb, &off, batch, arch->sizes[L], esize)) ||
            (s = plan_take(&pl->swb, &off, batch, 1, esize)) ||
            (s = plan_take(&pl->lbuf, &off, tiny ? n_chunks : batch,
                           tiny ? TINY_MAXP + 1 : 1, 8))) {
        return s;
    }
    pl->xb2 = pl->yb2 = pl->swb2 = -1;
    if (!tiny && pl->lbuf - pl->xb <= TRAIN_DOUBLE_BYTES &&
            ((s = plan_take(&pl->xb2, &off, batch, arch->sizes[0], esize)) ||
             (s = plan_take(&pl->yb2, &off, batch, arch->sizes[L], esize)) ||
             (s = plan_take(&pl->swb2, &off, batch, 1, esize)))) {
        return s;
    }
    for (int64_t k = 1; k <= L && !tiny; k++) {
        int64_t n = arch->sizes[k];
        if ((s = plan_take(&pl->net[k], &off, batch, n, esize)) ||
                (s = plan_take(&pl->out[k], &off, batch, n, esize)) ||
                (s = plan_take(&pl->delta[k], &off, batch, n, esize))) {
            return s;
        }
        gemm |= layer_uses_gemm(arch->sizes[k - 1], n);
    }
    pl->scratch = -1;
    if (gemm && (s = plan_take(&pl->scratch, &off, nt, GEMM_SCRATCH_ELEMS,
                               esize))) {
        return s;
    }
    return add_checked(&pl->total, off, 64);
}

bp_status
bp_train_workspace_bytes(int64_t *bytes, const bp_arch *arch, int64_t batch,
                         int n_threads, int f64)
{
    train_plan pl;
    bp_status s;

    if ((s = sizing_args_check(bytes, arch)) != BP_OK) {
        return s;
    }
    if ((s = train_plan_make(&pl, arch, batch, f64 ? 8 : 4,
                             resolve_threads(n_threads))) != BP_OK) {
        return s;
    }
    *bytes = pl.total;
    return BP_OK;
}

bp_status
bp_train_workspace_size(int64_t *bytes, const bp_arch *arch, int64_t batch,
                        int n_threads)
{
    return bp_train_workspace_bytes(bytes, arch, batch, n_threads, 1);
}
