/*
 * gemm_simd.h - a packed, register-blocked product (the BLIS loop nest at
 * small scale), written once with GCC/Clang vector types.  Included by one
 * file per ISA, compiled with that ISA's flags, after defining
 *   T      element type          VL  lanes per vector
 *   MR     rows of the C tile    NR  columns of the C tile (multiple of VL)
 *   NAME   the function's name
 * Loops: columns of B in blocks of GEMM_NC, depth in blocks of GEMM_KC
 * (packed B panel, zero-padded to NR), rows in blocks of MC_ROWS (GEMM_MC
 * rounded down to whole MR-row panels, so the packed A block fits; packed A
 * panel, zero-padded to MR, or a row-major A read in place, see direct_a_),
 * then MR x NR tiles held in registers.
 */
#include <string.h>

#define SIMD_CAT_(a, b) a##b
#define SIMD_CAT(a, b) SIMD_CAT_(a, b)
#define VT SIMD_CAT(vec_, NAME)
#define NV (NR / VL)
#define MC_ROWS (GEMM_MC / MR * MR)

typedef T VT __attribute__((vector_size(VL * sizeof(T))));

/* dst[s * lds + q] = src[q * lss + s] for q < R, s < 8: an R x 8 block
 * (R <= 8, a constant after inlining; rows R.. read as zeros) transposed
 * through registers (three rounds of pairwise interleaves). */
typedef T SIMD_CAT(v8_, NAME) __attribute__((vector_size(8 * sizeof(T))));
static inline __attribute__((always_inline)) void
SIMD_CAT(transpose8_, NAME)(T *restrict dst, int64_t lds,
                            const T *restrict src, int64_t lss, const int R)
{
    typedef SIMD_CAT(v8_, NAME) V8;
    V8 r[8], t[8], u[8];
    for (int q = 0; q < 8; q++) {
        if (q < R) {
            memcpy(&r[q], src + q * lss, sizeof(V8));
        } else {
            r[q] = (V8){0};
        }
    }
    for (int q = 0; q < 8; q += 2) {
        t[q] = __builtin_shufflevector(r[q], r[q + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[q + 1] = __builtin_shufflevector(r[q], r[q + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int q = 0; q < 8; q += 4) {
        for (int h = 0; h < 2; h++) {
            u[q + 2 * h] = __builtin_shufflevector(t[q + h], t[q + h + 2], 0, 1, 8, 9, 4, 5, 12, 13);
            u[q + 2 * h + 1] = __builtin_shufflevector(
                t[q + h], t[q + h + 2], 2, 3, 10, 11, 6, 7, 14, 15);
        }
    }
    for (int q = 0; q < 4; q++) {
        V8 lo = __builtin_shufflevector(u[q], u[q + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        V8 hi = __builtin_shufflevector(u[q], u[q + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(dst + q * lds, &lo, (size_t)R * sizeof(T));
        memcpy(dst + (q + 4) * lds, &hi, (size_t)R * sizeof(T));
    }
}

/* Pack rows [0, mc) x depth [0, kc) of A into MR-row panels: p-major. */
static void
SIMD_CAT(pack_a_, NAME)(T *restrict pa, const T *A, int64_t rsa, int64_t csa,
                        int64_t mc, int64_t kc)
{
    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
        int64_t mr = mc - i0 < MR ? mc - i0 : MR;
        if (csa == 1 && mr == MR && kc >= 8) {
            /* A row-major (x W, delta W^T): a panel row takes one element
             * from each of MR rows; blocks of 8 rows x 8 depths are read
             * as runs and transposed in registers (element by element,
             * this pack cost 6% of a 128 x 784 x 256 product) */
            int64_t p = 0;
            for (; p + 8 <= kc; p += 8) {
                for (int i = 0; i + 8 <= MR; i += 8) {
                    SIMD_CAT(transpose8_, NAME)(pa + p * MR + i, MR,
                                                A + (i0 + i) * rsa + p, rsa,
                                                8);
                }
                if (MR % 8 != 0) {
                    SIMD_CAT(transpose8_, NAME)(
                        pa + p * MR + MR / 8 * 8, MR,
                        A + (i0 + MR / 8 * 8) * rsa + p, rsa, MR % 8);
                }
            }
            for (; p < kc; p++) {
                for (int64_t i = 0; i < MR; i++) {
                    pa[p * MR + i] = A[(i0 + i) * rsa + p];
                }
            }
            pa += MR * kc;
            continue;
        }
        if (rsa == 1 && mr == MR) {
            /* A stored transposed (x^T delta): a panel row is MR
             * contiguous elements, one fixed-size copy (left to the
             * compiler, it would call memmove for every row) */
            for (int64_t p = 0; p < kc; p++) {
                memcpy(pa + p * MR, A + i0 + p * csa, MR * sizeof(T));
            }
            pa += MR * kc;
            continue;
        }
        for (int64_t p = 0; p < kc; p++) {
            for (int64_t i = 0; i < mr; i++) {
                pa[p * MR + i] = A[(i0 + i) * rsa + p * csa];
            }
            for (int64_t i = mr; i < MR; i++) {
                pa[p * MR + i] = 0;
            }
        }
        pa += MR * kc;
    }
}

/* Pack depth [0, kc) x columns [0, nc) of B into NR-column panels.  With
 * contiguous rows, B is read row by row across all the full panels (one
 * sequential stream, rather than one line from each of kc rows per panel,
 * which for wide rows is a page per line). */
static void
SIMD_CAT(pack_b_, NAME)(T *restrict pb, const T *B, int64_t rsb, int64_t csb,
                        int64_t kc, int64_t nc)
{
    int64_t j_full = csb == 1 ? nc / NR * NR : 0;

    for (int64_t p = 0; p < kc; p++) {
        const T *b_p = B + p * rsb;
        for (int64_t j0 = 0; j0 < j_full; j0 += NR) {
            memcpy(pb + j0 * kc + p * NR, b_p + j0, NR * sizeof(T));
        }
    }
    pb += j_full * kc;
    if (rsb == 1 && kc >= 8) {
        /* B stored transposed (delta W^T): column j of B is a contiguous
         * run of memory.  Full panels are filled by 8 x 8 blocks: eight
         * columns' runs are read, transposed in registers and written as
         * eight panel rows.  Gathering element by element instead reads
         * NR lines a row stride apart per element (about 2.5x the time of
         * the plain pack, measured on 1024 x 1024). */
        for (; j_full + NR <= nc; j_full += NR) {
            int64_t p = 0;
            for (; p + 8 <= kc; p += 8) {
                for (int64_t j = 0; j < NR; j += 8) {
                    SIMD_CAT(transpose8_, NAME)(pb + p * NR + j, NR,
                                                B + (j_full + j) * csb + p,
                                                csb, 8);
                }
            }
            for (; p < kc; p++) {
                for (int64_t j = 0; j < NR; j++) {
                    pb[p * NR + j] = B[(j_full + j) * csb + p];
                }
            }
            pb += NR * kc;
        }
    }
    for (int64_t j0 = j_full; j0 < nc; j0 += NR) {
        int64_t nr = nc - j0 < NR ? nc - j0 : NR;
        for (int64_t p = 0; p < kc; p++) {
            const T *b_p = B + p * rsb + j0 * csb;
            for (int64_t j = 0; j < nr; j++) {
                pb[p * NR + j] = b_p[j * csb];
            }
            for (int64_t j = nr; j < NR; j++) {
                pb[p * NR + j] = 0;
            }
        }
        pb += NR * kc;
    }
}

/*
 * C tile (R <= MR rows, nr <= NR columns) = or += A panel x B panel:
 * element (i, p) of the A panel at a[i * ars + p * acs], row p of the B
 * panel at b + p * brs (packed panels: ars = 1, acs = MR, brs = NR).  The
 * R x NR sums run over p in order, one FMA each, whatever the layout and
 * R, so packed and unpacked operands and short and full tiles give the
 * same bits.  R rows of A are read, and NR columns of B: a narrow tile
 * needs a packed, zero-padded B panel.  R is a constant after inlining,
 * so a short tile costs its rows only.
 */
static inline __attribute__((always_inline)) void
SIMD_CAT(tile_, NAME)(T *restrict c, int64_t ldc, const T *restrict a,
                      int64_t ars, int64_t acs, const T *restrict b,
                      int64_t brs, int64_t kc, const int R, int64_t nr,
                      int accumulate)
{
    VT acc[MR][NV];
    for (int i = 0; i < R; i++) {
        for (int v = 0; v < NV; v++) {
            acc[i][v] = (VT){0};
        }
    }
    for (int64_t p = 0; p < kc; p++) {
        VT bv[NV];
        for (int v = 0; v < NV; v++) {
            memcpy(&bv[v], b + p * brs + v * VL, sizeof(VT));
        }
        for (int i = 0; i < R; i++) {
            T ai = a[i * ars + p * acs];
            for (int v = 0; v < NV; v++) {
                acc[i][v] += ai * bv[v];
            }
        }
    }
    if (nr == NR) {
        for (int i = 0; i < R; i++) {
            for (int v = 0; v < NV; v++) {
                T *c_iv = c + i * ldc + v * VL;
                VT cv = acc[i][v];
                if (accumulate) {
                    VT old;
                    memcpy(&old, c_iv, sizeof(VT));
                    cv = old + cv;
                }
                memcpy(c_iv, &cv, sizeof(VT));
            }
        }
    } else {
        T tmp[MR * NR];
        for (int i = 0; i < R; i++) {
            for (int v = 0; v < NV; v++) {
                memcpy(tmp + i * NR + v * VL, &acc[i][v], sizeof(VT));
            }
        }
        for (int64_t i = 0; i < R; i++) {
            for (int64_t j = 0; j < nr; j++) {
                T s = tmp[i * NR + j];
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
            }
        }
    }
}

/* tile_ for mr rows (1 <= mr <= MR), each row count its own code. */
static inline __attribute__((always_inline)) void
SIMD_CAT(tile_rows_, NAME)(T *restrict c, int64_t ldc, const T *restrict a,
                           int64_t ars, int64_t acs, const T *restrict b,
                           int64_t brs, int64_t kc, int64_t mr, int64_t nr,
                           int accumulate)
{
#define TILE_R(r)                                                            \
    SIMD_CAT(tile_, NAME)(c, ldc, a, ars, acs, b, brs, kc, r, nr, accumulate)
    switch (mr) {
#define TILE_CASE(r)                                                         \
    case r:                                                                  \
        TILE_R(r);                                                           \
        break;
        TILE_CASE(1)
        TILE_CASE(2)
        TILE_CASE(3)
        TILE_CASE(4)
        TILE_CASE(5)
#if MR > 6
        TILE_CASE(6)
        TILE_CASE(7)
#endif
#if MR > 8
        TILE_CASE(8)
        TILE_CASE(9)
        TILE_CASE(10)
        TILE_CASE(11)
#endif
#if MR > 12
        TILE_CASE(12)
        TILE_CASE(13)
#endif
#if MR > 14
#error "tile_rows_ covers MR <= 14"
#endif
#undef TILE_CASE
    default:
        TILE_R(MR);
        break;
    }
#undef TILE_R
}

/* Multiples of r at least x. */
#define SIMD_ROUND_UP(x, r) (((x) + (r) - 1) / (r) * (r))

/*
 * Whether C = A B is better computed as C^T = B^T A^T: a narrow C (a
 * layer of a few outputs) fills few of a tile's NR columns, while its
 * transpose has few rows, which fill most of an MR-row tile.  Chosen for
 * C narrower than a tile when the tiles, padding included, then cover at
 * least a quarter less.
 */
static inline int
SIMD_CAT(narrow_, NAME)(int64_t m, int64_t n)
{
    int64_t direct = SIMD_ROUND_UP(m, MR) * SIMD_ROUND_UP(n, NR);
    int64_t flipped = SIMD_ROUND_UP(n, MR) * SIMD_ROUND_UP(m, NR);
    return n < NR && 4 * flipped <= 3 * direct;
}

/* Rows of C per transposed pass: the pass's packed B' panel stays within
 * the first half of the B area of the scratch, and its C^T (n x this)
 * goes in the second half. */
#define NARROW_ROWS (GEMM_NC / 2)

/*
 * Whether the tiles read a row-major A where it is rather than packed:
 * each tile row then reads its own row of A, and MR rows a stride apart
 * are MR separate runs.  Only when the first lines of MR consecutive rows
 * fall in MR different sets of a 64-set L1 (Zen 4 and Sapphire Rapids
 * both have 64): a stride of 4 KB puts them all in one set, where they
 * evict one another (C4's 1024-wide rows: 99 -> 59 GFLOP/s direct).
 */
static inline int
SIMD_CAT(direct_a_, NAME)(const T *A, int64_t rsa, int64_t csa)
{
    uint64_t seen = 0;
    if (csa != 1) {
        return 0;
    }
    for (int64_t i = 0; i < MR; i++) {
        uint64_t set = ((uintptr_t)(A + i * rsa) >> 6) & 63u;
        if (seen & ((uint64_t)1 << set)) {
            return 0;
        }
        seen |= (uint64_t)1 << set;
    }
    return 1;
}

#ifndef GEMM_PF_DEFINED
#define GEMM_PF_DEFINED
/* Memory to bring into L2 while a product runs, [p, end), per_tile lines
 * before each tile (predict so reads its next block of rows of X during
 * the current block's first product, rather than from memory after it).
 * prefetcht1: prefetcht0 measured 1.1-1.4% slower. */
typedef struct {
    const char *p, *end;
    int64_t per_tile;
} gemm_pf;

static inline __attribute__((always_inline)) void
gemm_pf_lines(gemm_pf *pf)
{
    for (int64_t q = 0; q < pf->per_tile && pf->p < pf->end; q++) {
        __builtin_prefetch(pf->p, 0, 2);
        pf->p += 64;
    }
}
#endif

/* The tiles of an mc x nc block of C over one depth block: row i of the
 * block's A at a + (i / MR) * MR * aps + (i % MR) * ars, depth p at
 * + p * acs (packed panels: ars 1, acs MR, aps kc; A in place: ars and
 * aps its row stride, acs 1).  Inlined with constant strides for the
 * packed case, so its tiles index as before. */
static inline __attribute__((always_inline)) void
SIMD_CAT(block_, NAME)(T *C, int64_t ldc, const T *a, int64_t ars,
                       int64_t acs, int64_t aps, const T *pb, int64_t mc,
                       int64_t nc, int64_t kc, int acc, gemm_pf *pf)
{
    for (int64_t jr = 0; jr < nc; jr += NR) {
        int64_t nr = nc - jr < NR ? nc - jr : NR;
        for (int64_t ir = 0; ir < mc; ir += MR) {
            int64_t mr = mc - ir < MR ? mc - ir : MR;
            if (pf != NULL) {
                gemm_pf_lines(pf);
            }
            SIMD_CAT(tile_rows_, NAME)(C + ir * ldc + jr, ldc, a + ir * aps,
                                       ars, acs, pb + jr * kc, NR, kc, mr, nr,
                                       acc);
        }
    }
}

typedef void (*SIMD_CAT(fin_fn_, NAME))(const void *, int64_t, int64_t,
                                        int64_t, int64_t);

/* The packed A block at the start of a kernel scratch, 64-byte aligned
 * (packed B follows it, GEMM_MC x GEMM_KC elements on). */
static inline T *
SIMD_CAT(scratch_a_, NAME)(T *scratch)
{
    return (T *)(((uintptr_t)scratch + 63u) & ~(uintptr_t)63u);
}

/* The packed loop nest of NAME (see the top of this file), kept out of
 * NAME, whose small-product path is what small layers run.  B is packed
 * block by block into pb, or given packed whole in pball (prepacked_).
 * fin (NULL: none) is called on each block of rows of C as soon as its
 * last depth block is done, as fin(ctx, fr0 + i0, fr0 + i1, fc0 + j0,
 * fc0 + j1), while those rows are still in this core's cache (cols_ does
 * the same for a chunk's columns).  pf (NULL: none): memory to prefetch
 * meanwhile (gemm_pf); nest_pf_ is the nest with it, nest_ without, so
 * that the products of fit carry no test for it (with one, C4's batch
 * took 1.033x the time at one thread). */
static inline __attribute__((always_inline)) void
SIMD_CAT(nest_body_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                           int64_t csa, const T *B, int64_t rsb, int64_t csb,
                           int64_t m, int64_t n, int64_t k, int accumulate,
                           T *restrict pa, T *restrict pb, const T *pball,
                           SIMD_CAT(fin_fn_, NAME) fin, const void *ctx,
                           int64_t fr0, int64_t fc0, gemm_pf *pf)
{
    int direct_a = SIMD_CAT(direct_a_, NAME)(A, rsa, csa);
    for (int64_t jc = 0; jc < n; jc += GEMM_NC) {
        int64_t nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;
        for (int64_t pc = 0; pc < k; pc += GEMM_KC) {
            int64_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
            int acc = accumulate || pc > 0;
            const T *b = pb;
            if (pball != NULL) {  /* B packed whole (pack_b_unit_) */
                b = pball + jc * k + pc * SIMD_ROUND_UP(nc, NR);
            } else {
                SIMD_CAT(pack_b_, NAME)(pb, B + pc * rsb + jc * csb, rsb, csb,
                                        kc, nc);
            }
            for (int64_t ic = 0; ic < m; ic += MC_ROWS) {
                int64_t mc = m - ic < MC_ROWS ? m - ic : MC_ROWS;
                T *c = C + ic * ldc + jc;
                if (direct_a) {
                    SIMD_CAT(block_, NAME)(c, ldc, A + ic * rsa + pc, rsa, 1,
                                           rsa, b, mc, nc, kc, acc, pf);
                } else {
                    SIMD_CAT(pack_a_, NAME)(pa, A + ic * rsa + pc * csa, rsa,
                                            csa, mc, kc);
                    SIMD_CAT(block_, NAME)(c, ldc, pa, 1, MR, kc, b, mc, nc,
                                           kc, acc, pf);
                }
                if (fin != NULL && pc + kc >= k) {
                    fin(ctx, fr0 + ic, fr0 + ic + mc, fc0 + jc,
                        fc0 + jc + nc);
                }
            }
        }
    }
}

static __attribute__((noinline)) void
SIMD_CAT(nest_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                      int64_t csa, const T *B, int64_t rsb, int64_t csb,
                      int64_t m, int64_t n, int64_t k, int accumulate,
                      T *restrict pa, T *restrict pb, const T *pball,
                      SIMD_CAT(fin_fn_, NAME) fin, const void *ctx,
                      int64_t fr0, int64_t fc0)
{
    SIMD_CAT(nest_body_, NAME)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k,
                               accumulate, pa, pb, pball, fin, ctx, fr0, fc0,
                               NULL);
}

static __attribute__((noinline)) void
SIMD_CAT(nest_pf_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                         int64_t csa, const T *pball, int64_t m, int64_t n,
                         int64_t k, T *restrict pa, gemm_pf *pf)
{
    SIMD_CAT(nest_body_, NAME)(C, ldc, A, rsa, csa, NULL, 0, 0, m, n, k, 0,
                               pa, NULL, pball, NULL, NULL, 0, 0, pf);
}

/*
 * A product whose team hands out the columns of C in chunks (see
 * product_chunks in gemm/product.h): each thread packs all of A once, then
 * computes whole chunks of CHUNK_COLS columns, depth block by depth block,
 * as they come.  The same tiles over the same depth blocks in the same
 * order as nest_, so the same bits whoever takes which chunk.
 */
#define CHUNK_COLS (2 * NR)
static const int64_t SIMD_CAT(chunk_cols_, NAME) = CHUNK_COLS;

/* Elements of a thread's scratch that it needs: the packed A (none when
 * read in place), one chunk's packed B block and the 64-byte alignment; 0
 * for a product that does not take the packed nest (small, narrow). */
static inline int64_t
SIMD_CAT(chunk_need_, NAME)(const T *A, int64_t rsa, int64_t csa, int64_t m,
                            int64_t n, int64_t k)
{
    if (SIMD_CAT(narrow_, NAME)(m, n) || (k <= GEMM_KC && m * k <= 32768)) {
        return 0;
    }
    return (SIMD_CAT(direct_a_, NAME)(A, rsa, csa) ? 0
                                                   : SIMD_ROUND_UP(m, MR) * k) +
           (int64_t)GEMM_KC * CHUNK_COLS + 64 / (int64_t)sizeof(T);
}

/* All of A (m x k) packed, depth block after depth block: block pc's
 * panels from pa + pc * m_pad (m rounded up to MR), row panel i0 at
 * + i0 * kc, each as nest_ packs it.  Returns the end of the packed A. */
static T *
SIMD_CAT(pack_all_, NAME)(T *restrict pa, const T *A, int64_t rsa,
                          int64_t csa, int64_t m, int64_t k)
{
    int64_t m_pad = SIMD_ROUND_UP(m, MR);
    for (int64_t pc = 0; pc < k; pc += GEMM_KC) {
        int64_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
        for (int64_t ic = 0; ic < m; ic += MC_ROWS) {
            int64_t mc = m - ic < MC_ROWS ? m - ic : MC_ROWS;
            SIMD_CAT(pack_a_, NAME)(pa + pc * m_pad + ic * kc,
                                    A + ic * rsa + pc * csa, rsa, csa, mc,
                                    kc);
        }
    }
    return pa + m_pad * k;
}

/* Columns [j0, j1) of C = A B (overwritten), A packed by pack_all_ into pa,
 * or read in place when pa is NULL; pb holds a GEMM_KC x (j1 - j0) block.
 * fin (NULL: none) is called on each block of rows of C as soon as its
 * last depth block is done (fin(ctx, i0, i1, j0, j1): rows [i0, i1)),
 * while those rows are still in this core's nearest cache. */
static __attribute__((noinline)) void
SIMD_CAT(cols_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                      const T *pa, const T *B, int64_t rsb, int64_t csb,
                      int64_t m, int64_t j0, int64_t j1, int64_t k,
                      T *restrict pb,
                      void (*fin)(const void *, int64_t, int64_t, int64_t,
                                  int64_t),
                      const void *ctx)
{
    int64_t m_pad = SIMD_ROUND_UP(m, MR), nc = j1 - j0;
    for (int64_t pc = 0; pc < k; pc += GEMM_KC) {
        int64_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
        SIMD_CAT(pack_b_, NAME)(pb, B + pc * rsb + j0 * csb, rsb, csb, kc,
                                nc);
        for (int64_t ic = 0; ic < m; ic += MC_ROWS) {
            int64_t mc = m - ic < MC_ROWS ? m - ic : MC_ROWS;
            T *c = C + ic * ldc + j0;
            if (pa == NULL) {
                SIMD_CAT(block_, NAME)(c, ldc, A + ic * rsa + pc, rsa, 1,
                                       rsa, pb, mc, nc, kc, pc > 0, NULL);
            } else {
                SIMD_CAT(block_, NAME)(c, ldc, pa + pc * m_pad + ic * kc, 1,
                                       MR, kc, pb, mc, nc, kc, pc > 0, NULL);
            }
            if (fin != NULL && pc + kc >= k) {
                fin(ctx, ic, ic + mc, j0, j1);
            }
        }
    }
}

static void SIMD_CAT(unflipped_, NAME)(T *C, int64_t ldc, const T *A,
                                       int64_t rsa, int64_t csa, const T *B,
                                       int64_t rsb, int64_t csb, int64_t m,
                                       int64_t n, int64_t k, int accumulate,
                                       T *scratch);

/* C = A B for a narrow C through C^T = B^T A^T, NARROW_ROWS rows of C at
 * a time into the scratch, then transposed into place.  Entry (i, j) is
 * the same sum in the same order as in the direct product (an FMA does
 * not care which factor is broadcast), so the bits are those of C = A B. */
static void
SIMD_CAT(product_flipped_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                                 int64_t csa, const T *B, int64_t rsb,
                                 int64_t csb, int64_t m, int64_t n,
                                 int64_t k, T *scratch)
{
    T *pa = SIMD_CAT(scratch_a_, NAME)(scratch);
    T *ct = pa + (int64_t)GEMM_MC * GEMM_KC +
            (int64_t)GEMM_KC * (GEMM_NC / 2);
    for (int64_t i0 = 0; i0 < m; i0 += NARROW_ROWS) {
        int64_t mc = m - i0 < NARROW_ROWS ? m - i0 : NARROW_ROWS;
        /* C^T (n, mc) = B^T (n, k) A^T (k, mc), row stride mc; never
         * flipped back (a short last pass can look narrow the other way,
         * and its own pass would overwrite ct) */
        SIMD_CAT(unflipped_, NAME)(ct, mc, B, csb, rsb, A + i0 * rsa, csa,
                                   rsa, n, mc, k, 0, scratch);
        for (int64_t i = 0; i < mc; i++) {
            T *c_i = C + (i0 + i) * ldc;
            for (int64_t j = 0; j < n; j++) {
                c_i[j] = ct[j * mc + i];
            }
        }
    }
}

/* NAME without the narrow check: C = A B as it is. */
static void
SIMD_CAT(unflipped_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                           int64_t csa, const T *B, int64_t rsb, int64_t csb,
                           int64_t m, int64_t n, int64_t k, int accumulate,
                           T *scratch)
{
    T *pa = SIMD_CAT(scratch_a_, NAME)(scratch);
    T *pb = pa + (int64_t)GEMM_MC * GEMM_KC;

    if (k <= GEMM_KC && m * k <= 32768) {
        /* Depth within one block and A small: operands stay in cache as
         * they are, so the tiles read A and contiguous B directly; only
         * narrow B panels are packed (zero-padded). */
        for (int64_t jr = 0; jr < n; jr += NR) {
            int64_t nr = n - jr < NR ? n - jr : NR;
            const T *b = pb;
            int64_t brs = NR;
            if (csb == 1 && nr == NR) {
                b = B + jr;
                brs = rsb;
            } else {
                SIMD_CAT(pack_b_, NAME)(pb, B + jr * csb, rsb, csb, k, nr);
            }
            /* tall tiles (MR >= 8: AVX-512's float table) take the rows
             * in n_t tiles of as even a height as they allow (32 rows:
             * 11, 11, 10 rather than 14, 14, 4, whose short tile keeps
             * few FMA chains in flight): +2-5% on C2's products on the
             * Xeon.  The 6-row tiles keep a short last one (AVX2's
             * measured -3% to +3% balanced; docs/perf-notes.md) */
            int64_t n_t = (m + MR - 1) / MR;
            for (int64_t t = 0; t < n_t; t++) {
                int64_t ir = MR >= 8 ? m * t / n_t : t * MR;
                int64_t ir1 = MR >= 8 ? m * (t + 1) / n_t : ir + MR;
                int64_t mr = (ir1 < m ? ir1 : m) - ir;
                if (csa == 1) {
                    SIMD_CAT(tile_rows_, NAME)(C + ir * ldc + jr, ldc,
                                               A + ir * rsa, rsa, 1, b, brs,
                                               k, mr, nr, accumulate);
                } else if (rsa == 1) {
                    SIMD_CAT(tile_rows_, NAME)(C + ir * ldc + jr, ldc, A + ir,
                                               1, csa, b, brs, k, mr, nr,
                                               accumulate);
                } else {
                    SIMD_CAT(tile_rows_, NAME)(C + ir * ldc + jr, ldc,
                                               A + ir * rsa, rsa, csa, b, brs,
                                               k, mr, nr, accumulate);
                }
            }
        }
        return;
    }

    SIMD_CAT(nest_, NAME)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k,
                          accumulate, pa, pb, NULL, NULL, NULL, 0, 0);
}

/*
 * B (k x n) packed whole, each (column block, depth block) as nest_ packs
 * it, block (jc, pc) at pball + jc k + pc (nc rounded up to NR), at most
 * k x (n rounded up to NR) elements, in units of one such block, which a
 * team may share out: how many, and unit u.  prepacked_ then runs nest_
 * on it without packing B.  For a B that several products read unchanged
 * (predict's W, block of rows after block of rows).  Same bits: the same
 * panels in the same nest.
 */
static inline int64_t
SIMD_CAT(pack_b_units_, NAME)(int64_t k, int64_t n)
{
    return (n + GEMM_NC - 1) / GEMM_NC * ((k + GEMM_KC - 1) / GEMM_KC);
}

static void
SIMD_CAT(pack_b_unit_, NAME)(T *restrict pball, const T *B, int64_t rsb,
                             int64_t csb, int64_t k, int64_t n, int64_t u)
{
    int64_t n_depth = (k + GEMM_KC - 1) / GEMM_KC;
    int64_t jc = u / n_depth * GEMM_NC, pc = u % n_depth * GEMM_KC;
    int64_t nc = n - jc < GEMM_NC ? n - jc : GEMM_NC;
    int64_t kc = k - pc < GEMM_KC ? k - pc : GEMM_KC;
    SIMD_CAT(pack_b_, NAME)(pball + jc * k + pc * SIMD_ROUND_UP(nc, NR),
                            B + pc * rsb + jc * csb, rsb, csb, kc, nc);
}

/* Whether NAME computes C (m x n) = A B (depth k) by the packed nest: not
 * narrow (flipped), not small (B read in place). */
static inline int
SIMD_CAT(takes_nest_, NAME)(int64_t m, int64_t n, int64_t k)
{
    return !SIMD_CAT(narrow_, NAME)(m, n) && !(k <= GEMM_KC && m * k <= 32768);
}

/* NAME for a product that takes_nest_, B given packed whole; pf_bytes at
 * pf (none: 0) prefetched into L2 meanwhile, spread evenly over the
 * product's tiles. */
static void
SIMD_CAT(prepacked_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                           int64_t csa, const T *pball, int64_t m, int64_t n,
                           int64_t k, T *scratch, const void *pf,
                           int64_t pf_bytes)
{
    T *pa = SIMD_CAT(scratch_a_, NAME)(scratch);
    if (pf_bytes > 0) {
        int64_t row_tiles = m / MC_ROWS * (MC_ROWS / MR) +
                            (m % MC_ROWS + MR - 1) / MR;
        int64_t tiles = row_tiles * ((n + NR - 1) / NR) *
                        ((k + GEMM_KC - 1) / GEMM_KC);
        gemm_pf cur = {(const char *)pf, (const char *)pf + pf_bytes,
                       (pf_bytes / 64 + tiles) / tiles};
        SIMD_CAT(nest_pf_, NAME)(C, ldc, A, rsa, csa, pball, m, n, k, pa,
                                 &cur);
        return;
    }
    SIMD_CAT(nest_, NAME)(C, ldc, A, rsa, csa, NULL, 0, 0, m, n, k, 0, pa,
                          NULL, pball, NULL, NULL, 0, 0);
}

/* NAME for a product that takes_nest_ (C overwritten), with an epilogue
 * on each block of rows as nest_ finishes it (fin, ctx, fr0, fc0: see
 * nest_). */
static void
SIMD_CAT(fused_, NAME)(T *C, int64_t ldc, const T *A, int64_t rsa,
                       int64_t csa, const T *B, int64_t rsb, int64_t csb,
                       int64_t m, int64_t n, int64_t k, T *scratch,
                       SIMD_CAT(fin_fn_, NAME) fin, const void *ctx,
                       int64_t fr0, int64_t fc0)
{
    T *pa = SIMD_CAT(scratch_a_, NAME)(scratch);
    SIMD_CAT(nest_, NAME)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k, 0, pa,
                          pa + (int64_t)GEMM_MC * GEMM_KC, NULL, fin, ctx,
                          fr0, fc0);
}

static void
NAME(T *C, int64_t ldc, const T *A, int64_t rsa, int64_t csa, const T *B,
     int64_t rsb, int64_t csb, int64_t m, int64_t n, int64_t k,
     int accumulate, T *scratch)
{
    if (!accumulate && SIMD_CAT(narrow_, NAME)(m, n)) {
        SIMD_CAT(product_flipped_, NAME)(C, ldc, A, rsa, csa, B, rsb, csb, m,
                                         n, k, scratch);
        return;
    }
    SIMD_CAT(unflipped_, NAME)(C, ldc, A, rsa, csa, B, rsb, csb, m, n, k,
                               accumulate, scratch);
}

#undef VT
#undef NV
#undef MC_ROWS
#undef SIMD_ROUND_UP
#undef NARROW_ROWS
#undef CHUNK_COLS
