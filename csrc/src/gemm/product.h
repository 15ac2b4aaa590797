/*
 * gemm/product.h - the layer product: the kernel table's GEMM for this
 * element type (product), the direct products of a few rows that sum as
 * the kernel does (product_small), and the product shared by a team
 * (product_par).  A fragment of net_impl.h (T, SFX, GEMM_FN and
 * PRODUCT_KC defined by the including kern_*.c file).
 */

/* The kernel table's product for this element type. */
static inline void
FN(product)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa, const T *B,
         int64_t rsb, int64_t csb, int64_t m, int64_t n, int64_t k,
         T *scratch)
{
    GEMM_FN(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, 0, scratch);
}

/*
 * C = x W for a few rows without packing, summing each entry exactly as
 * the kernel does: over the depth in blocks of PRODUCT_KC (the kernel's
 * GEMM_KC, or all of it in the reference build), a = x w + a per step (one
 * FMA where the build has it, as in the kernel), block sums added in
 * order.  So predict on one sample gives forward's bits, and how the
 * columns are cut into passes changes nothing.  Each row of W is read once
 * per pass for all the rows of x (R of them, a constant after inlining).
 * A pass keeps JB columns of each row's sums in registers (JB a constant):
 * wide passes keep enough FMA chains in flight and read W in long runs,
 * which is what one sample's predict is limited by.
 *   C (R, n) out, columns [j0, j0 + JB);  x (R, k) in;  W (k, n) in
 */
#define SMALL_JB 32              /* columns per block when threads share */
#define SMALL_SUMS (512 / (int)sizeof(T))  /* sums per pass: 16 AVX2 regs */
#ifdef SMALL_WIDE_BYTES         /* one row's widest pass, by the ISA */
#define SMALL_WIDE (SMALL_WIDE_BYTES / (int)sizeof(T))
#define SMALL_ROW_ATTR NO_JAM
#else
#define SMALL_WIDE SMALL_SUMS
#define SMALL_ROW_ATTR
#endif
#define SMALL_ACC (SMALL_WIDE > SMALL_JB ? SMALL_WIDE : SMALL_JB)
static INLINE void
FN(product_small_cols)(T *restrict C, const T *restrict x,
                       const T *restrict W, int64_t k, int64_t n, int64_t j0,
                       const int R, const int JB)
{
    for (int64_t p0 = 0; p0 < k; p0 += PRODUCT_KC) {
        int64_t p1 = k - p0 < PRODUCT_KC ? k : p0 + PRODUCT_KC;
        T acc[BP_PREDICT_SMALL][SMALL_ACC];
        for (int r = 0; r < R; r++) {
            for (int64_t j = 0; j < JB; j++) {
                acc[r][j] = 0;
            }
        }
        for (int64_t p = p0; p < p1; p++) {
            const T *w_p = W + p * n + j0;
            for (int r = 0; r < R; r++) {
                T v = x[r * k + p];
                for (int64_t j = 0; j < JB; j++) {
                    acc[r][j] = MULADD(v, w_p[j], acc[r][j]);
                }
            }
        }
        for (int r = 0; r < R; r++) {
            T *c_r = C + r * n + j0;
            for (int64_t j = 0; j < JB; j++) {
                c_r[j] = p0 == 0 ? acc[r][j] : c_r[j] + acc[r][j];
            }
        }
    }
}

/* One row's last columns, fewer than 16: one pass of exactly that width, a
 * constant in each case, so that its sums stay in registers (a pass of a
 * width known only at run time kept them in memory: a 128 x 10 output
 * layer took 0.41 us). */
#define SMALL_TAIL(c)                                                        \
    case c:                                                                  \
        FN(product_small_cols)(C, x, W, k, n, j0, 1, c);                     \
        break;

/*
 * product_small_cols for one row, columns [j0, j1): passes of SMALL_WIDE
 * columns where the ISA has the registers for them (AVX-512: 1 KB of sums,
 * half its registers), then of SMALL_SUMS, 32 and 16, and one of the rest.
 * A row of W up to SMALL_WIDE wide is then read in one contiguous run,
 * which on Zen 5 is 1.5x faster than in two halves (docs/perf-notes.md,
 * "One-row passes: the loop's shape").  Wide passes are not
 * unrolled-and-jammed: GCC's jam of two rows of W per step halved their
 * rate there (it helps AVX2's passes, which keep it).
 */
static SMALL_ROW_ATTR void
FN(product_small_row)(T *restrict C, const T *restrict x, const T *restrict W,
                      int64_t k, int64_t n, int64_t j0, int64_t j1)
{
    for (; SMALL_WIDE > SMALL_SUMS && j1 - j0 >= SMALL_WIDE;
         j0 += SMALL_WIDE) {
        FN(product_small_cols)(C, x, W, k, n, j0, 1, SMALL_WIDE);
    }
    for (; j1 - j0 >= SMALL_SUMS; j0 += SMALL_SUMS) {
        FN(product_small_cols)(C, x, W, k, n, j0, 1, SMALL_SUMS);
    }
    for (; j1 - j0 >= SMALL_JB; j0 += SMALL_JB) {
        FN(product_small_cols)(C, x, W, k, n, j0, 1, SMALL_JB);
    }
    if (j1 - j0 >= 16) {
        FN(product_small_cols)(C, x, W, k, n, j0, 1, 16);
        j0 += 16;
    }
    switch (j1 - j0) {
    SMALL_TAIL(1) SMALL_TAIL(2) SMALL_TAIL(3) SMALL_TAIL(4) SMALL_TAIL(5)
    SMALL_TAIL(6) SMALL_TAIL(7) SMALL_TAIL(8) SMALL_TAIL(9) SMALL_TAIL(10)
    SMALL_TAIL(11) SMALL_TAIL(12) SMALL_TAIL(13) SMALL_TAIL(14)
    SMALL_TAIL(15)
    default:
        break;
    }
}
#undef SMALL_TAIL

/* Columns [j0, j1) for R rows: passes of JB columns, then of SMALL_JB;
 * the last columns, fewer than SMALL_JB, row by row in product_small_row's
 * passes of constant width (a pass of a width known only at run time keeps
 * its sums in memory).  W's last columns are then read R times, from
 * cache. */
static INLINE void
FN(product_small_range)(T *restrict C, const T *restrict x,
                        const T *restrict W, int64_t k, int64_t n, int64_t j0,
                        int64_t j1, const int R, const int JB)
{
    int64_t j = j0;
    for (; j1 - j >= JB; j += JB) {
        FN(product_small_cols)(C, x, W, k, n, j, R, JB);
    }
    for (; j1 - j >= SMALL_JB; j += SMALL_JB) {
        FN(product_small_cols)(C, x, W, k, n, j, R, SMALL_JB);
    }
    for (int r = 0; j < j1 && r < R; r++) {
        FN(product_small_row)(C + r * n, x + r * k, W, k, n, j, j1);
    }
}

/* product_small_cols for columns [j0, j1), rows of x at most
 * BP_PREDICT_SMALL.  One row takes the widest passes, four the narrowest:
 * the sums of a pass fill about the same registers. */
static void
FN(product_small)(T *restrict C, const T *restrict x, const T *restrict W,
                  int64_t rows, int64_t k, int64_t n, int64_t j0, int64_t j1)
{
    switch (rows) {
    case 1:
        FN(product_small_row)(C, x, W, k, n, j0, j1);
        break;
    case 2:
        FN(product_small_range)(C, x, W, k, n, j0, j1, 2, SMALL_SUMS / 2);
        break;
    case 3:
        FN(product_small_range)(C, x, W, k, n, j0, j1, 3, SMALL_SUMS / 4);
        break;
    default:
        FN(product_small_range)(C, x, W, k, n, j0, j1, BP_PREDICT_SMALL,
                                SMALL_SUMS / 4);
        break;
    }
}

/*
 * What a thread of a team product does to its own part of the output
 * right after computing it, while that part is still in its core's cache:
 * add the bias and apply the activation, multiply by the activation's
 * derivative, or apply the optimizer's update.  fn works on rows [r0, r1)
 * and columns [c0, c1) of C, elementwise, so how the team cuts C changes
 * no bits.  whole_rows: fn needs whole rows (softmax); when the team cuts
 * the columns, it then runs after a barrier, over rows shared out.
 */
typedef struct {
    void (*fn)(const void *ctx, int64_t r0, int64_t r1, int64_t c0,
               int64_t c1);
    const void *ctx;
    int whole_rows;
} FN(epilogue);

#ifdef GEMM_CHUNK
/* Chunks per thread below which a team keeps one slice per thread.  8
 * until 2026-12-08; 2 puts C3's first layer (256 columns) in chunks, two
 * per thread, none shared: its batch at 2 threads 0.957-0.975x the time on
 * Zen 4 (AVX2 table 0.981, float64 0.976), a 512-wide network's 0.945,
 * same bits (docs/perf-notes.md, "Zen 4, third session"). */
#define CHUNKS_PER_THREAD 2

/*
 * Whether a team of nt cutting the columns of C = A B should hand them out
 * in chunks as the threads come for them (product_chunks) rather than one
 * slice per thread: a product that takes the kernel's packed nest, with
 * at least CHUNKS_PER_THREAD chunks per thread and the whole packed A
 * fitting in a thread's scratch (GEMM_SCRATCH_ELEMS).  Every thread
 * decides alike.
 */
static inline int
FN(chunked)(const T *A, int64_t rsa, int64_t csa, int64_t m, int64_t n,
            int64_t k, int nt)
{
    int64_t need = GEMM_CHUNK(chunk_need_)(A, rsa, csa, m, n, k);
    return need > 0 && need <= GEMM_SCRATCH_ELEMS &&
           n >= (int64_t)CHUNKS_PER_THREAD * nt * GEMM_CHUNK(chunk_cols_);
}

/* One chunk of product_chunks: columns [c cw, (c + 1) cw) of C, each
 * block of its rows through the epilogue as soon as it is done. */
static void
FN(chunk_run)(T *C, int64_t ldc, const T *A, int64_t rsa, const T *pa,
              const T *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,
              int64_t k, T *pb, const FN(epilogue) *epi, int64_t c)
{
    int64_t cw = GEMM_CHUNK(chunk_cols_);
    int64_t j0 = c * cw, j1 = j0 + cw < n ? j0 + cw : n;
    GEMM_CHUNK(cols_)(C, ldc, A, rsa, pa, B, rsb, csb, m, j0, j1, k, pb,
                      epi != NULL ? epi->fn : NULL,
                      epi != NULL ? epi->ctx : NULL);
}

/*
 * C = A B by the team, its columns handed out in chunks: each thread packs
 * all of A into its scratch (mine), computes the first three quarters of
 * the chunks of its own slice (the slice product_team_cut would give it,
 * so a thread keeps its columns from one batch to the next), then takes
 * the rest of every slice's chunks one at a time as it comes for them (an
 * OpenMP dynamic loop, no barrier).  A core slowed for a while then leaves
 * more of them to the other instead of holding the team at the next
 * barrier (docs/perf-notes.md, "Columns handed out in chunks").  Each
 * chunk goes through epi (NULL: none) right after it is computed.  Each
 * entry is computed by one thread in the kernel's order, so the bits are
 * those of one thread.
 */
static void
FN(product_chunks)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,
                   const T *B, int64_t rsb, int64_t csb, int64_t m,
                   int64_t n, int64_t k, T *mine, const FN(epilogue) *epi)
{
    int nt = team_size(), tid = thread_id();
    int64_t cw = GEMM_CHUNK(chunk_cols_), n_chunks = (n + cw - 1) / cw;
    int64_t lo = n_chunks * tid / nt, hi = n_chunks * (tid + 1) / nt;
    T *pa = (T *)align64(mine), *pb = pa;

    if (GEMM_CHUNK(direct_a_)(A, rsa, csa)) {
        pa = NULL;  /* A read in place */
    } else {
        pb = GEMM_CHUNK(pack_all_)(pa, A, rsa, csa, m, k);
    }
    for (int64_t c = lo; c < hi - (hi - lo) / 4; c++) {
        FN(chunk_run)(C, ldc, A, rsa, pa, B, rsb, csb, m, n, k, pb, epi, c);
    }
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t c = 0; c < n_chunks; c++) {
        /* the thread whose slice holds chunk c, and where its slice's
         * last quarter starts */
        int64_t t = ((c + 1) * nt - 1) / n_chunks;
        int64_t t_lo = n_chunks * t / nt, t_hi = n_chunks * (t + 1) / nt;
        if (c >= t_hi - (t_hi - t_lo) / 4) {
            FN(chunk_run)(C, ldc, A, rsa, pa, B, rsb, csb, m, n, k, pb, epi,
                          c);
        }
    }
}
#endif

/*
 * C = A B shared by the threads of the enclosing region: the larger of the
 * two output dimensions (the rows, with by_rows) is cut into one slice per
 * thread, as evenly as whole blocks allow (columns in blocks of 16, rows
 * one by one; leftover blocks go to the last threads, thread 0 having the
 * serial work of the region).  A large product cut by columns hands them
 * out in chunks instead, where the ISA's kernel can (product_chunks).
 * Each entry is computed by one thread in the kernel's fixed order, then
 * passed through epi (NULL: none) by the same thread; or, where epi needs
 * whole rows or the columns went in chunks, after a barrier, each thread
 * taking whole rows (then the call ends with a barrier).  scratch holds
 * GEMM_SCRATCH_ELEMS per thread.  Ends with a barrier when sync is set;
 * without it, another thread may still be writing its part of C.
 */
static void
FN(product_team_cut)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,
                     const T *B, int64_t rsb, int64_t csb, int64_t m,
                     int64_t n, int64_t k, T *scratch,
                     const FN(epilogue) *epi, int sync, int by_rows)
{
    int nt = team_size(), tid = thread_id();
    T *mine = scratch + (int64_t)tid * GEMM_SCRATCH_ELEMS;
    int split_cols = !by_rows && n >= m;
    int64_t len = split_cols ? n : m;
    int64_t unit = split_cols ? 16 : 1;
    int64_t nb = (len + unit - 1) / unit;
    int64_t lo = nb * tid / nt * unit;
    int64_t hi = nb * (tid + 1) / nt * unit;
    int chunks = 0, late;

    hi = hi < len ? hi : len;
#ifdef GEMM_CHUNK
    chunks = split_cols && nt > 1 && FN(chunked)(A, rsa, csa, m, n, k, nt);
#endif
    /* the epilogue after a barrier, over whole rows shared out: where it
     * needs them, and where the columns go in chunks (a chunk's rows of
     * C, and of W for an update, are a whole row apart, and per chunk the
     * epilogue waited on them one by one from L3; C4's batch at 2 threads
     * 5-6% faster with whole rows, docs/perf-notes.md) */
    late = epi != NULL && (epi->whole_rows || chunks) && split_cols &&
           nt > 1 && nb > 1;

#ifdef GEMM_CHUNK
    if (chunks) {
        FN(product_chunks)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, mine,
                           late ? NULL : epi);
    } else
#endif
    if (lo < hi) {
        int64_t sm = split_cols ? m : hi - lo, sn = split_cols ? hi - lo : n;
        const T *sa = split_cols ? A : A + lo * rsa;
        const T *sb = split_cols ? B + lo * csb : B;
        T *sc = split_cols ? C + lo : C + lo * ldc;
        int64_t r0 = split_cols ? 0 : lo, c0 = split_cols ? lo : 0;
#ifdef GEMM_CHUNK
        if (epi != NULL && !late && GEMM_CHUNK(takes_nest_)(sm, sn, k)) {
            /* the epilogue on each block of rows as the nest finishes it,
             * while it is in cache, rather than after the whole slice */
            GEMM_CHUNK(fused_)(sc, ldc, sa, rsa, csa, sb, rsb, csb, sm, sn,
                               k, mine, epi->fn, epi->ctx, r0, c0);
        } else
#endif
        {
            FN(product)(sc, ldc, sa, rsa, csa, sb, rsb, csb, sm, sn, k,
                        mine);
            if (epi != NULL && !late) {
                epi->fn(epi->ctx, r0, r0 + sm, c0, c0 + sn);
            }
        }
    }
    if (late) {
#pragma omp barrier
#pragma omp for schedule(static)
        for (int64_t i = 0; i < m; i++) {
            epi->fn(epi->ctx, i, i + 1, 0, n);
        }
        return;  /* the loop's barrier */
    }
    if (sync) {
#pragma omp barrier
    }
}

/* product_team_cut choosing the cut: the rows when C has more rows than
 * columns, else the columns.  A thread's rows are then rows
 * [m t / nt, m (t + 1) / nt), whatever the product. */
static void
FN(product_team)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,
                 const T *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,
                 int64_t k, T *scratch, const FN(epilogue) *epi, int sync)
{
    FN(product_team_cut)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, scratch,
                         epi, sync, 0);
}

/* C = A B shared by the team, no epilogue; ends with a barrier. */
static void
FN(product_par)(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa,
             const T *B, int64_t rsb, int64_t csb, int64_t m, int64_t n,
             int64_t k, T *scratch)
{
    FN(product_team)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, scratch,
                     NULL, 1);
}
