/*
 * net/predict.h - predict's team bodies (a fragment of net_impl.h): blocks
 * of rows through every layer with ping-pong buffers, and for a few rows,
 * the columns of each layer shared by the team.
 */

/* What predict's team bodies share (filled by FN(predict), entry.h). */
typedef struct {
    const ARGS(predict) *a;
    const int64_t *w_off, *b_off;
    int64_t per_thread, width, brows, n_blocks, L;
    int *bad;  /* set when a checked block of X holds NaN or inf */
    char *packed;  /* the layers' W packed once (predict_packed_bytes), or
                    * NULL: each block packs them */
} FN(predict_ctx);

#ifdef GEMM_CHUNK
/* Layer k's W packed once for every block of rows (packed when the full
 * blocks' product takes the packed nest), for a block of `rows` rows: NULL
 * where it is not packed or this block's product does not take the nest. */
static T *
FN(packed_w)(const FN(predict_ctx) *c, int64_t k, int64_t rows)
{
    const bp_arch *arch = c->a->arch;
    int64_t n_in, n_out;
    if (c->packed == NULL) {
        return NULL;
    }
    n_in = arch->sizes[k];
    n_out = arch->sizes[k + 1];
    if (!layer_uses_gemm(n_in, n_out) ||
            !GEMM_CHUNK(takes_nest_)(c->brows, n_out, n_in) ||
            !GEMM_CHUNK(takes_nest_)(rows, n_out, n_in)) {
        return NULL;
    }
    return (T *)(c->packed + predict_packed_offset(arch, k));
}

/* Packing units of layer k's W (0 where it is not packed once). */
static int64_t
FN(pack_units)(const FN(predict_ctx) *c, int64_t k, int64_t brows)
{
    const int64_t *sizes = c->a->arch->sizes;
    return FN(packed_w)(c, k, brows) == NULL
               ? 0
               : GEMM_CHUNK(pack_b_units_)(sizes[k], sizes[k + 1]);
}
#endif

/*
 * One block of rows through every layer: out = f(x W + b), layer after
 * layer, in the ping-pong buffers buf[0], buf[1], the last into Y.
 *   Y (rows, n_L) out;  x (rows, n_0) in
 *   buf[2] (rows, widest layer), scratch: the thread's own
 *   next (n_next elements): the next block's rows of X, brought into L2
 *   during the first layer's product where W is packed once, in float32
 *   (C3: 0.97x the time at 2 threads, 0.99x at 1, where the check would
 *   read them from memory; float64 measured 1.01-1.05x, so not)
 */
static void
FN(predict_block)(T *Y, const T *x, int64_t rows, const FN(predict_ctx) *c,
                  T *const *buf, T *scratch, const T *next, int64_t n_next)
{
    const bp_arch *arch = c->a->arch;
    const T *params = c->a->params;

    for (int64_t k = 0; k < c->L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = params + c->w_off[k], *b = params + c->b_off[k];
        T *dst = k == c->L - 1 ? Y : buf[k & 1];
#ifdef GEMM_CHUNK
        const T *pw = FN(packed_w)(c, k, rows);
#else
        const T *pw = NULL;
        (void)next;
        (void)n_next;
#endif
        if (layer_uses_gemm(n_in, n_out) && rows <= BP_PREDICT_SMALL) {
            FN(product_small)(dst, x, W, rows, n_in, n_out, 0, n_out);
        } else if (pw != NULL) {
#ifdef GEMM_CHUNK
            int pf = k == 0 && sizeof(T) == 4;
            GEMM_CHUNK(prepacked_)(dst, n_out, x, n_in, 1, pw, rows, n_out,
                                   n_in, scratch, pf ? next : NULL,
                                   pf ? n_next * (int64_t)sizeof(T) : 0);
#endif
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
                                          : c->brows;
    T *buf[2], *scratch;
    buf[0] = (T *)mine;
    buf[1] = (T *)align64(mine + width * brows * 8);
    scratch = (T *)align64((char *)buf[1] + width * brows * 8);
#ifdef GEMM_CHUNK
    if (c->packed != NULL) {
        /* every layer's W packed once, in units of a (column block, depth
         * block) taken as they come (the loop's end is the barrier before
         * any block of rows reads them) */
        int64_t units = 0;
        for (int64_t k = 0; k < c->L; k++) {
            units += FN(pack_units)(c, k, brows);
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t u = 0; u < units; u++) {
            int64_t k = 0, v = u;
            while (v >= FN(pack_units)(c, k, brows)) {
                v -= FN(pack_units)(c, k, brows);
                k++;
            }
            GEMM_CHUNK(pack_b_unit_)(FN(packed_w)(c, k, brows),
                                     a->params + c->w_off[k],
                                     a->arch->sizes[k + 1], 1,
                                     a->arch->sizes[k],
                                     a->arch->sizes[k + 1], v);
        }
    }
#endif
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < c->n_blocks; blk++) {
        int64_t r0 = blk * brows, r1 = r0 + brows < m ? r0 + brows : m;
        int64_t rows = r1 - r0;
        int64_t n_next = m - r1 < brows ? m - r1 : brows;
        const T *x = a->X + r0 * a->arch->sizes[0];
        /* checked just before use: the rows are then read from cache by
         * the first layer rather than from memory a second time */
        if (a->check_finite &&
            ANY_NONFINITE_T(x, rows * a->arch->sizes[0])) {
#pragma omp atomic write
            *c->bad = 1;
            continue;
        }
        /* the next block (the thread's own but at the end of its share:
         * static schedule) */
        FN(predict_block)(a->Y + r0 * a->arch->sizes[c->L], x, rows, c, buf,
                          scratch, a->X + r1 * a->arch->sizes[0],
                          n_next * a->arch->sizes[0]);
    }
}

/* Thread tid's run of columns of a layer n wide shared by nt threads:
 * [*j0, *j1), whole SMALL_JB blocks, as even as they allow. */
static void
FN(col_run)(int64_t n, int tid, int nt, int64_t *j0, int64_t *j1)
{
    int64_t n_blk = (n + SMALL_JB - 1) / SMALL_JB;
    int64_t hi = n_blk * (tid + 1) / nt * SMALL_JB;
    *j0 = n_blk * tid / nt * SMALL_JB;
    *j1 = hi < n ? hi : n;
}

/*
 * Where a split of one row's layer into depth blocks and columns is cut:
 * the point at cost L (L in [0, k n), the cells of W in block order, a
 * block's columns in order) falls in block [p0, p0 + kb) at a column
 * rounded to whole SMALL_JB blocks.  Threads cutting at the same L cut at
 * the same column, so their shares tile the layer.
 */
static int64_t
FN(share_cut)(int64_t L, int64_t p0, int64_t kb, int64_t n)
{
    int64_t j;
    if (L <= p0 * n) {
        return 0;
    }
    if (L >= (p0 + kb) * n) {
        return n;
    }
    j = ((L - p0 * n) / kb + SMALL_JB / 2) / SMALL_JB * SMALL_JB;
    return j < n ? j : n;
}

/*
 * One thread's share of y = x W for one row x, with W (k, n) cut into the
 * kernel's depth blocks of PRODUCT_KC rows and each block's columns: the
 * cells from cost tid / nt to (tid + 1) / nt of the layer, so a thread
 * reads whole rows of W, contiguous, wherever its share holds whole blocks
 * (a thread reading half of every row of W read it about 1.5x slower on
 * Zen 5).  Block b's sums go to row b of P (nb rows of n), each a sum over
 * the block in order as product_small forms it; share_sum adds the rows in
 * block order, which gives product_small's bits.
 */
static void
FN(share_depth)(T *P, const T *x, const T *W, int64_t k, int64_t n, int tid,
                int nt)
{
    int64_t lo = k * n * tid / nt, hi = k * n * (tid + 1) / nt;
    for (int64_t p0 = 0; p0 < k; p0 += PRODUCT_KC) {
        int64_t kb = k - p0 < PRODUCT_KC ? k - p0 : PRODUCT_KC;
        int64_t j0 = FN(share_cut)(lo, p0, kb, n);
        int64_t j1 = FN(share_cut)(hi, p0, kb, n);
        if (j0 < j1) {
            FN(product_small)(P + p0 / PRODUCT_KC * n, x + p0, W + p0 * n, 1,
                              kb, n, j0, j1);
        }
    }
}

/* y[0, len) = the nb rows of P (row stride n) added in order, as
 * product_small adds its block sums. */
static void
FN(share_sum)(T *y, const T *P, int64_t nb, int64_t n, int64_t len)
{
    for (int64_t j = 0; j < len; j++) {
        y[j] = P[j];
    }
    for (int64_t b = 1; b < nb; b++) {
        const T *P_b = P + b * n;
        for (int64_t j = 0; j < len; j++) {
            y[j] = y[j] + P_b[j];
        }
    }
}

/*
 * predict of at most BP_PREDICT_SMALL rows by a team.  A few rows are
 * limited by reading the weights, so the large leading layers have their
 * columns shared out in runs of whole SMALL_JB blocks, one run per thread
 * (each thread reads only its slice of W, which can then stay in its core's
 * cache from call to call), with a barrier after each.  One row, on an ISA
 * whose passes take whole rows of such a layer (SMALL_WIDE), shares its
 * depth blocks instead (share_depth), so that each thread reads its part
 * of W in contiguous rows; the block sums are added after the barrier.
 * From the first layer that is small, narrow or softmax (which needs whole
 * rows), thread 0 goes on alone and the others leave: such a layer costs
 * less than the barrier that sharing it would need.  Entries are computed
 * as on one thread.
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
    /* the other threads' areas of the workspace, unused here, hold the
     * block sums of share_depth */
    T *P = (T *)align64((char *)align64(c->a->work) + c->per_thread);
    int64_t spare = c->per_thread * (nt - 1) - 64;
    for (int64_t k = 0; k < L; k++) {
        int64_t n_in = arch->sizes[k], n_out = arch->sizes[k + 1];
        const T *W = c->a->params + c->w_off[k];
        const T *b = c->a->params + c->b_off[k];
        T *dst = k == L - 1 ? c->a->Y : buf[k & 1];
        int act = arch->acts[k];
        int64_t nb = (n_in + PRODUCT_KC - 1) / PRODUCT_KC;
        /* every thread reaches the same decisions (they read arch and the
         * team size only) */
        if (shared && predict_layer_shared(n_in, n_out, act) && m == 1 &&
                SMALL_WIDE > SMALL_SUMS && n_out <= SMALL_WIDE && nb > 1 &&
                nb * n_out * (int64_t)sizeof(T) <= spare) {
            /* one row: depth blocks and columns shared out, the block
             * sums added by the threads that go on */
            int next = k + 1 < L &&
                       predict_layer_shared(n_out, arch->sizes[k + 2],
                                            arch->acts[k + 1]);
            int64_t j0 = 0, j1 = n_out;
            /* shares in reverse thread order: the threads that start
             * last take the first depth blocks, whole rows of W read in
             * one run, and thread 0, which starts first, the last ones
             * (C3's first layer on 2 threads of the Xeon model 167:
             * the worker's share took 3.2 us instead of 3.5, the call
             * 6.2-6.6 us instead of 6.5-6.8; docs/perf-notes.md) */
            FN(share_depth)(P, x, W, n_in, n_out, nt - 1 - tid, nt);
#pragma omp barrier
            if (next) {
                FN(col_run)(n_out, tid, nt, &j0, &j1);
            } else if (tid != 0) {
                return;  /* thread 0 finishes, as below */
            } else {
                shared = 0;
            }
            if (j0 < j1) {
                FN(share_sum)(dst + j0, P + j0, nb, n_out, j1 - j0);
                FN(bias_rows)(dst + j0, b + j0, 1, j1 - j0);
                FN(act_row)(dst + j0, dst + j0, j1 - j0, act);
            }
            if (next) {
#pragma omp barrier
            }
            x = dst;
            continue;
        }
        if (shared && predict_layer_shared(n_in, n_out, act)) {
            /* one run of whole SMALL_JB blocks of columns per thread */
            int64_t j0, j1;
            FN(col_run)(n_out, tid, nt, &j0, &j1);
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
