/*
 * net/predict.h - predict's team bodies (a fragment of net_impl.h): blocks
 * of rows through every layer with ping-pong buffers, and for a few rows,
 * the columns of each layer shared by the team.
 */

/* What predict's team bodies share (filled by FN(predict), entry.h). */
typedef struct {
    const ARGS(predict) *a;
    const int64_t *w_off, *b_off;
    int64_t per_thread, width, n_blocks, L;
    int *bad;  /* set when a checked block of X holds NaN or inf */
} FN(predict_ctx);

/*
 * One block of rows through every layer: out = f(x W + b), layer after
 * layer, in the ping-pong buffers buf[0], buf[1], the last into Y.
 *   Y (rows, n_L) out;  x (rows, n_0) in
 *   buf[2] (rows, widest layer), scratch: the thread's own
 */
static void
FN(predict_block)(T *Y, const T *x, int64_t rows, const FN(predict_ctx) *c,
                  T *const *buf, T *scratch)
{
    const bp_arch *arch = c->a->arch;
    const T *params = c->a->params;

    for (int64_t k = 0; k < c->L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = params + c->w_off[k], *b = params + c->b_off[k];
        T *dst = k == c->L - 1 ? Y : buf[k & 1];
        if (layer_uses_gemm(n_in, n_out) && rows <= BP_PREDICT_SMALL) {
            FN(product_small)(dst, x, W, rows, n_in, n_out, 0, n_out);
        } else if (layer_uses_gemm(n_in, n_out)) {
            FN(product)(dst, n_out, x, n_in, 1, W, n_out, 1, rows, n_out,
                        n_in, scratch);
        } else {
            FN(dense_rows)(dst, x, rows, n_in, W, b, n_out);
            b = NULL;
        }
        if (arch->acts[k] == BP_ACT_SOFTMAX) {
            if (b != NULL) {
                FN(bias_rows)(dst, b, rows, n_out);
            }
            FN(softmax_rows)(dst, dst, rows, n_out);
            x = dst;
            continue;
        }
        /* the bias and the activation in one pass, a row at a time */
        for (int64_t i = 0; i < rows; i++) {
            T *d_i = dst + i * n_out;
            if (b != NULL) {
                FN(bias_rows)(d_i, b, 1, n_out);
            }
            FN(act_row)(d_i, d_i, n_out, arch->acts[k]);
        }
        x = dst;
    }
}

/* The body of predict, run by every thread of the team: blocks of rows
 * shared out, each in the thread's own area of the workspace. */
static void
FN(predict_region)(const FN(predict_ctx) *c)
{
    const ARGS(predict) *a = c->a;
    int64_t m = a->m, width = c->width;
    char *mine = (char *)align64(a->work) + (int64_t)thread_id() *
                                            c->per_thread;
    int64_t brows = m <= BP_PREDICT_SMALL ? BP_PREDICT_SMALL
                                          : predict_block_rows(m);
    T *buf[2], *scratch;
    buf[0] = (T *)mine;
    buf[1] = (T *)align64(mine + width * brows * 8);
    scratch = (T *)align64((char *)buf[1] + width * brows * 8);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < c->n_blocks; blk++) {
        int64_t r0 = blk * brows;
        int64_t rows = m - r0 < brows ? m - r0 : brows;
        const T *x = a->X + r0 * a->arch->sizes[0];
        /* checked just before use: the rows are then read from cache by
         * the first layer rather than from memory a second time */
        if (a->check_finite &&
            ANY_NONFINITE_T(x, rows * a->arch->sizes[0])) {
#pragma omp atomic write
            *c->bad = 1;
            continue;
        }
        FN(predict_block)(a->Y + r0 * a->arch->sizes[c->L], x, rows, c, buf,
                          scratch);
    }
}

/*
 * predict of at most BP_PREDICT_SMALL rows by a team.  A few rows are
 * limited by reading the weights, so the large leading layers have their
 * columns shared out in runs of whole SMALL_JB blocks, one run per thread
 * (each thread reads only its slice of W, which can then stay in its core's
 * cache from call to call), with a barrier after each.  From the first
 * layer that is small, narrow or softmax (which needs whole rows), thread 0
 * goes on alone and the others leave: such a layer costs less than the
 * barrier that sharing it would need.  Entries are computed as on one
 * thread.
 */
static void
FN(predict_small_region)(const FN(predict_ctx) *c)
{
    const bp_arch *arch = c->a->arch;
    int64_t m = c->a->m, L = c->L;
    int nt = team_size(), tid = thread_id();
    int shared = 1;  /* 0 once thread 0 goes on alone */
    T *buf[2];
    const T *x = c->a->X;
    buf[0] = (T *)align64(c->a->work);
    buf[1] = (T *)align64((char *)buf[0] + c->width * BP_PREDICT_SMALL * 8);
    for (int64_t k = 0; k < L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = c->a->params + c->w_off[k];
        const T *b = c->a->params + c->b_off[k];
        T *dst = k == L - 1 ? c->a->Y : buf[k & 1];
        int act = arch->acts[k];
        /* every thread reaches the same decision (it reads arch only) */
        if (shared && predict_layer_shared(n_in, n_out, act)) {
            /* one run of whole SMALL_JB blocks of columns per thread */
            int64_t n_blk = (n_out + SMALL_JB - 1) / SMALL_JB;
            int64_t j0 = n_blk * tid / nt * SMALL_JB;
            int64_t j1 = n_blk * (tid + 1) / nt * SMALL_JB;
            j1 = j1 < n_out ? j1 : n_out;
            if (j0 < j1) {
                FN(product_small)(dst, x, W, m, n_in, n_out, j0, j1);
                for (int64_t i = 0; i < m; i++) {
                    T *d_ij = dst + i * n_out + j0;
                    FN(bias_rows)(d_ij, b + j0, 1, j1 - j0);
                    FN(act_row)(d_ij, d_ij, j1 - j0, act);
                }
            }
#pragma omp barrier
            x = dst;
            continue;
        }
        if (tid != 0) {
            return;  /* thread 0 finishes: no barrier from here on */
        }
        shared = 0;
        for (int64_t i = 0; i < m; i++) {
            T *d_i = dst + i * n_out;
            if (layer_uses_gemm(n_in, n_out)) {
                FN(product_small)(d_i, x + i * n_in, W, 1, n_in, n_out, 0,
                                  n_out);
                FN(bias_rows)(d_i, b, 1, n_out);
            } else {
                FN(dense_rows)(d_i, x + i * n_in, 1, n_in, W, b, n_out);
            }
            FN(act_row)(d_i, d_i, n_out, act);
        }
        x = dst;
    }
}
