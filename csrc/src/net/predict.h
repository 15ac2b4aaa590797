/*
 * net/predict.h - predict's team bodies (a fragment of net_impl.h): blocks
 * of rows through every layer with ping-pong buffers, and for a few rows,
 * the columns of each layer shared by the team.
 */

typedef struct {
    T *Y;
    const T *X, *params;
    const bp_arch *arch;
    const int64_t *w_off, *b_off;
    int64_t m;
    void *work;
    int64_t per_thread, width, n_blocks, L;
} FN(predict_ctx);

/* The body of predict, run by every thread of the team. */
static void
FN(predict_region)(const FN(predict_ctx) *c)
{
    T *Y = c->Y;
    const T *X = c->X, *params = c->params;
    const bp_arch *arch = c->arch;
    const int64_t *w_off = c->w_off, *b_off = c->b_off;
    int64_t m = c->m, per_thread = c->per_thread, width = c->width;
    int64_t n_blocks = c->n_blocks, L = c->L;
    void *work = c->work;
    char *mine = (char *)align64(work) + (int64_t)thread_id() * per_thread;
    int64_t brows = m <= BP_PREDICT_SMALL ? BP_PREDICT_SMALL
                                          : predict_block_rows(m);
    T *buf[2], *scratch;
    buf[0] = (T *)mine;
    buf[1] = (T *)align64(mine + width * brows * 8);
    scratch = (T *)align64((char *)buf[1] + width * brows * 8);
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t r0 = blk * brows;
        int64_t rows = m - r0 < brows ? m - r0 : brows;
        const T *x = X + r0 * arch->sizes[0];
        for (int64_t k = 0; k < L; k++) {
            int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
            const T *W = params + w_off[k], *b = params + b_off[k];
            T *dst = k == L - 1 ? Y + r0 * n_out : buf[k & 1];
            if (layer_uses_gemm(n_in, n_out) && rows <= BP_PREDICT_SMALL) {
                FN(product_small)(dst, x, W, rows, n_in, n_out, 0, n_out);
                FN(bias_rows)(dst, b, rows, n_out);
            } else if (layer_uses_gemm(n_in, n_out)) {
                FN(product)(dst, n_out, x, n_in, 1, W, n_out, 1, rows, n_out,
                            n_in, scratch);
                FN(bias_rows)(dst, b, rows, n_out);
            } else {
                FN(dense_rows)(dst, x, rows, n_in, W, b, n_out);
            }
            for (int64_t i = 0; i < rows; i++) {
                FN(act_row)(dst + i * n_out, dst + i * n_out, n_out,
                            arch->acts[k]);
            }
            x = dst;
        }
    }
}

/*
 * predict of at most BP_PREDICT_SMALL rows by a team: each layer's columns
 * are shared out in runs of whole SMALL_JB blocks, one run per thread (each
 * thread reads only its slice of W, which can then stay in its core's cache
 * from call to call), with a barrier between layers.  Entries are computed
 * as on one thread.
 */
static void
FN(predict_small_region)(const FN(predict_ctx) *c)
{
    const bp_arch *arch = c->arch;
    int64_t m = c->m, L = c->L;
    T *buf[2];
    const T *x = c->X;
    buf[0] = (T *)align64(c->work);
    buf[1] = (T *)align64((char *)buf[0] + c->width * BP_PREDICT_SMALL * 8);
    for (int64_t k = 0; k < L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = c->params + c->w_off[k], *b = c->params + c->b_off[k];
        T *dst = k == L - 1 ? c->Y : buf[k & 1];
        int act = arch->acts[k];
        /* every thread takes the same branch */
        if (layer_uses_gemm(n_in, n_out) && act != BP_ACT_SOFTMAX) {
            /* one run of whole SMALL_JB blocks of columns per thread */
            int64_t n_blk = (n_out + SMALL_JB - 1) / SMALL_JB;
            int nt = team_size(), tid = thread_id();
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
        } else {
            /* a narrow layer, or softmax (needs whole rows): by rows */
#pragma omp for schedule(static)
            for (int64_t i = 0; i < m; i++) {
                T *d_i = dst + i * n_out;
                if (layer_uses_gemm(n_in, n_out)) {
                    FN(product_small)(d_i, x + i * n_in, W, 1, n_in, n_out,
                                      0, n_out);
                    FN(bias_rows)(d_i, b, 1, n_out);
                } else {
                    FN(dense_rows)(d_i, x + i * n_in, 1, n_in, W, b, n_out);
                }
                FN(act_row)(d_i, d_i, n_out, act);
            }
        }
        x = dst;
    }
}
