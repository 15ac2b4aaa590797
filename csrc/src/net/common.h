/*
 * net/common.h - what every inclusion of net_impl.h shares: name building
 * (FN, ARGS), the parameter layout, work-sharing block sizes, running a
 * team (RUN_TEAM), the rounding of a * b + c (MULADD), and the inlining
 * attributes.
 */
#ifndef BPCORE_NET_COMMON_H
#define BPCORE_NET_COMMON_H

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)
/* The argument struct of an entry point for this element type (kernels.h),
 * e.g. ARGS(train) is train_args_f32 in a float build. */
#define ARGS(name) CAT(name, CAT(_args, TSFX))

/* The flat parameter layout of one architecture (bp_layout). */
typedef struct {
    int64_t w_off[MAX_LAYERS], b_off[MAX_LAYERS];  /* per layer */
    int64_t n_w, n_p;  /* weights, then all parameters */
} net_layout;

/* Rows per work-sharing block in the forward and delta passes. */
#define ROW_BLOCK 16
/* Rows of dW per work-sharing block (each thread owns whole blocks). */
#define DW_BLOCK 8
/* Entries of db per work-sharing block. */
#define DB_BLOCK 64

/*
 * Run CALL on nt threads, or directly on this one.  A team of one is not
 * free in libgomp (its barriers still make futex calls), and orphaned
 * work-sharing loops outside any region run serially at no cost.
 */
#define RUN_TEAM(nt, CALL)                                                   \
    do {                                                                     \
        if ((nt) > 1) {                                                      \
            _Pragma("omp parallel num_threads(nt)") CALL;                    \
        } else {                                                             \
            CALL;                                                            \
        }                                                                    \
    } while (0)

/*
 * a * b + c (MULADD64: in double).  Where the build has FMA (the SIMD
 * builds) it is written as one, rounded once, so that the paths that
 * compute the same quantity (the online loop, the tiny lanes, the row
 * functions) round alike whatever the compiler decides about contracting
 * each loop.
 */
#if defined(__FMA__)
#define MULADD(a, b, c) FMA(a, b, c)
#define MULADD64(a, b, c) fma(a, b, c)
#else
#define MULADD(a, b, c) ((a) * (b) + (c))
#define MULADD64(a, b, c) ((a) * (b) + (c))
#endif

/* Force inlining where a constant argument must specialise the code. */
#if defined(__GNUC__)
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif

/*
 * For a loop over one sample of a tiny network: every call in the body is
 * inlined and (GCC) nothing is vectorised, since vector code for loops of
 * two or three iterations is mostly set-up.  The arithmetic, and so the
 * bits, are the same either way; only the instruction count falls.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define SCALAR_LOOP __attribute__((flatten, optimize("no-tree-vectorize")))
#elif defined(__GNUC__)
#define SCALAR_LOOP __attribute__((flatten))
#else
#define SCALAR_LOOP
#endif

/*
 * For the few-row products: GCC's unroll-and-jam (on at -O3) would read two
 * rows of W per step through two pointers, which on Zen 5 halved the rate
 * at which 1 KB rows are read (docs/perf-notes.md, "One-row passes: the
 * loop's shape").  Each column's sum order is the same either way.
 */
#if defined(__GNUC__) && !defined(__clang__)
#define NO_JAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define NO_JAM
#endif

#endif /* BPCORE_NET_COMMON_H */
