/*
 * status.c - status messages, build configuration, kernel choice, thread
 * defaults, fork detection and the parameter layout.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <pthread.h>
#endif

#include "internal.h"
#include "kernels.h"

const char *
bp_status_string(int status)
{
    switch (status) {
    case BP_OK:
        return "success";
    case BP_EARG:
        return "invalid argument (NULL pointer or unknown code)";
    case BP_ESHAPE:
        return "invalid size or shape";
    case BP_ENOMEM:
        return "workspace too small or out of memory";
    case BP_EOVERFLOW:
        return "size computation overflows";
    case BP_ENONFINITE:
        return "the loss is not finite (NaN or infinity)";
    case BP_EINTERNAL:
        return "internal error";
    default:
        return "unknown status code";
    }
}

/* Written once by bp_init (under the GIL in Python, or once by a C host). */
static int initialised = 0;
static volatile int forked = 0;

#ifndef _WIN32
static void
mark_forked_child(void)
{
    forked = 1;
}
#endif

void
bp_init(void)
{
    if (initialised) {
        return;
    }
    initialised = 1;
    kernels_choose();
#ifndef _WIN32
    pthread_atfork(NULL, NULL, mark_forked_child);
#endif
}

int
in_forked_child(void)
{
    return forked;
}

const char *
bp_config_kernel(void)
{
    return kernels()->name;
}

const char *
bp_config_compiler(void)
{
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

int
bp_config_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int
bp_default_threads(void)
{
#ifdef _OPENMP
    if (!forked) {
        return omp_get_max_threads();
    }
#endif
    return 1;
}

int
resolve_threads(int n_threads)
{
#ifdef _OPENMP
    if (n_threads < 1 || forked) {
        return 1;
    }
    return n_threads;
#else
    (void)n_threads;
    return 1;
#endif
}

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
    for (int64_t k = 0; k < n_layers; k++) {
        if (sizes[k] < 1 || sizes[k] > BP_MAX_WIDTH) {
            return BP_ESHAPE;
        }
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

bp_status
bp_arch_check(const bp_arch *arch)
{
    int64_t L;
    int32_t out_act;

    if (arch == NULL || arch->sizes == NULL || arch->acts == NULL) {
        return BP_EARG;
    }
    if (arch->n_layers < 2 || arch->n_layers > BP_MAX_LAYERS) {
        return BP_ESHAPE;
    }
    L = arch->n_layers - 1;
    for (int64_t k = 0; k <= L; k++) {
        if (arch->sizes[k] < 1 || arch->sizes[k] > BP_MAX_WIDTH) {
            return BP_ESHAPE;
        }
    }
    for (int64_t k = 0; k < L; k++) {
        int32_t a = arch->acts[k];
        if (a < 0 || a >= BP_ACT_COUNT) {
            return BP_EARG;
        }
        if (a == BP_ACT_SOFTMAX && k != L - 1) {
            return BP_EARG;
        }
    }
    if (arch->dropout != NULL) {
        for (int64_t k = 0; k + 1 < L; k++) {
            double r = arch->dropout[k];
            if (!(r >= 0.0 && r < 1.0)) {
                return BP_EARG;
            }
        }
    }
    out_act = arch->acts[L - 1];
    switch (arch->loss) {
    case BP_LOSS_MSE:
        return BP_OK;
    case BP_LOSS_CE:
        return out_act == BP_ACT_SOFTMAX ? BP_OK : BP_EARG;
    case BP_LOSS_BCE:
        return out_act == BP_ACT_SIGMOID ? BP_OK : BP_EARG;
    case BP_LOSS_MAE:
        return BP_OK;
    case BP_LOSS_HUBER:
        /* delta finite and > 0 */
        return isfinite(arch->loss_param) && arch->loss_param > 0.0 ? BP_OK
                                                                    : BP_EARG;
    case BP_LOSS_POISSON:
        return out_act == BP_ACT_IDENTITY ? BP_OK : BP_EARG;
    default:
        return BP_EARG;
    }
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
    return (arch_max_width(arch) * predict_block_rows(m) * 8 + 64) * 2 +
           GEMM_SCRATCH_ELEMS * 8 + 64;
}

bp_status
bp_predict_workspace_size(int64_t *bytes, const bp_arch *arch, int64_t m,
                          int n_threads)
{
    int64_t total;
    bp_status s;

    if (bytes == NULL) {
        return BP_EARG;
    }
    if ((s = bp_arch_check(arch)) != BP_OK) {
        return s;
    }
    /* widths are at most BP_MAX_WIDTH, so one thread's area cannot
     * overflow; the thread count multiplies it */
    if (m < 0) {
        return BP_ESHAPE;
    }
    if ((s = mul_checked(&total, predict_thread_bytes(arch, m),
                         resolve_threads(n_threads))) != BP_OK ||
            (s = add_checked(&total, total, 64)) != BP_OK) {
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

    if (bytes == NULL) {
        return BP_EARG;
    }
    if ((s = bp_arch_check(arch)) != BP_OK) {
        return s;
    }
    if (arch->n_layers > MAX_LAYERS) {
        return BP_EARG;
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

/*
 * Finite-value scans.  A value is NaN or infinite exactly when its exponent
 * bits are all ones; the test on the bits is an integer operation that
 * vectorises at any ISA level.  Blocks of FINITE_BLOCK values are checked
 * whole (no branch inside), and the scan stops at the first bad block.
 */
#define FINITE_BLOCK 4096
#define FINITE_PARALLEL_MIN ((int64_t)1 << 21)

static int
block_bad_f32(const float *x, int64_t n)
{
    uint32_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
    }
    return bad != 0;
}

static int
block_bad_f64(const double *x, int64_t n)
{
    uint64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, x + i, sizeof u);
        bad |= (uint64_t)((u & 0x7ff0000000000000u) ==
                          0x7ff0000000000000u);
    }
    return bad != 0;
}

#define ALL_FINITE_BODY(BLOCK_BAD)                                           \
    int64_t n_blocks = (n + FINITE_BLOCK - 1) / FINITE_BLOCK;                \
    int bad = 0;                                                             \
    int nt = n >= FINITE_PARALLEL_MIN ? resolve_threads(n_threads) : 1;      \
    if (x == NULL || n <= 0) {                                               \
        return 1;                                                            \
    }                                                                        \
    if (nt <= 1) {                                                           \
        for (int64_t b = 0; b < n_blocks && !bad; b++) {                     \
            int64_t lo = b * FINITE_BLOCK;                                   \
            bad = BLOCK_BAD(x + lo, n - lo < FINITE_BLOCK ? n - lo           \
                                                          : FINITE_BLOCK);   \
        }                                                                    \
        return !bad;                                                         \
    }                                                                        \
    _Pragma("omp parallel for schedule(static) reduction(|:bad) num_threads(nt)") \
    for (int64_t b = 0; b < n_blocks; b++) {                                 \
        int64_t lo = b * FINITE_BLOCK;                                       \
        bad |= BLOCK_BAD(x + lo, n - lo < FINITE_BLOCK ? n - lo              \
                                                       : FINITE_BLOCK);      \
    }                                                                        \
    return !bad;

int
bp_all_finite_f32(const float *x, int64_t n, int n_threads)
{
    ALL_FINITE_BODY(block_bad_f32)
}

int
bp_all_finite_f64(const double *x, int64_t n, int n_threads)
{
    ALL_FINITE_BODY(block_bad_f64)
}
