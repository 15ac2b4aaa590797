/*
 * internal.h - helpers shared by the .c files of bpcore, not part of the
 * public interface: checked size arithmetic, workspace carving, OpenMP
 * shims and the fork flag.
 */
#ifndef BPCORE_INTERNAL_H
#define BPCORE_INTERNAL_H

#include <stdint.h>
#include <string.h>

#include "bpcore/bpcore.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Largest layer width we accept; keeps every product far from overflow. */
#define BP_MAX_WIDTH (INT64_C(1) << 31)

/* Rows per block in predict where each block packs every weight matrix:
 * BP_PREDICT_ROWS, or for more rows up to BP_PREDICT_MAX_ROWS (larger
 * blocks pack less often), as long as there are at least eight blocks to
 * share out.  Also the rows a thread's buffers hold (predict_thread_bytes),
 * so that the workspace never shrinks as m grows. */
#define BP_PREDICT_ROWS 128
#define BP_PREDICT_MAX_ROWS 512

static inline int64_t
predict_area_rows(int64_t m)
{
    int64_t r = BP_PREDICT_ROWS;
    while (r < BP_PREDICT_MAX_ROWS && m >= 8 * r) {
        r *= 2;
    }
    return r;
}

/* Predict calls of at most this many rows skip packing: direct products
 * that sum in the kernel's order (same bits, no scratch, low latency). */
#define BP_PREDICT_SMALL 4

/* Batches cheaper than this many flops run on one thread: waking the other
 * core costs more than the work.  Changes no result. */
#define BP_PARALLEL_MIN_FLOPS 400000.0

/* Most layers an architecture may have (keeps offsets on the stack):
 * the public limit, which bp_arch_check enforces. */
#define MAX_LAYERS BP_MAX_LAYERS

/*
 * The training workspace of bp_train_*: one plan gives both its size and
 * where each array lies, as byte offsets from the 64-aligned start (-1:
 * not needed).  Each array is rounded up to 64 bytes.
 *   xb, yb, swb   the batch's gathered rows, targets, weights (T)
 *   xb2, yb2, swb2  a second set, where the three are small (at most
 *                 TRAIN_DOUBLE_BYTES): shuffled batches are then gathered
 *                 into the two sets in turn, so that the next batch can be
 *                 gathered while a slower thread still reads this one
 *                 (train_region: no barrier at the end of a batch)
 *   lbuf          doubles: the per-sample losses (general path), or the
 *                 tiny path's partial sums, TINY_MAXP + 1 per chunk of
 *                 TINY_CHUNK samples
 *   net, out, delta [k], k = 1..L   each (batch, n_k) of T (general path)
 *   scratch       the kernel's packing buffers, one set per thread (T)
 */
typedef struct {
    int64_t xb, yb, swb, xb2, yb2, swb2, lbuf, scratch;
    int64_t net[MAX_LAYERS], out[MAX_LAYERS], delta[MAX_LAYERS];
    int64_t total;  /* bytes to allocate, alignment slack included */
} train_plan;

#define TRAIN_DOUBLE_BYTES (4 << 20)

/* The plan for batches of at most `batch` rows, elements of esize bytes
 * (4 or 8) and nt threads; BP_EOVERFLOW when it does not fit in int64. */
bp_status train_plan_make(train_plan *pl, const bp_arch *arch,
                          int64_t batch, int64_t esize, int nt);

/* The calibration chain's shape (calibrate.c): rows, and columns = depth. */
#define CAL_M 32
#define CAL_N 128

/* Monotonic seconds. */
double cal_now(void);

/*
 * The team size for a piece of work of `flops` floating-point operations
 * that synchronises its team `syncs` times, when nt threads are allowed:
 * nt when the host's measured cost of a team step (calibrate.c, measured
 * once per process) leaves the work faster on nt threads than on one,
 * else 1.  f64: the element type is double.  Changes no result.
 */
int team_for(int nt, double flops, double syncs, int f64);

/* *r = a * b, or BP_EOVERFLOW; a and b must be >= 0. */
bp_status mul_checked(int64_t *r, int64_t a, int64_t b);
/* *r = a + b, or BP_EOVERFLOW; a and b must be >= 0. */
bp_status add_checked(int64_t *r, int64_t a, int64_t b);

/* Round a pointer up to a multiple of 64 bytes. */
void *align64(void *p);

/* Nonzero in a child process after fork(): OpenMP must not be used there. */
int in_forked_child(void);

/* The thread count to use: 1 when n < 1 is asked for, in a forked child, or
 * without OpenMP. */
int resolve_threads(int n_threads);

/* Total weights of an architecture (sum n_k n_{k+1}) as a double. */
double arch_weights(const bp_arch *arch);
/* The threads predict runs m rows on when nt (resolved) are allowed. */
int predict_team(const bp_arch *arch, int64_t m, int nt);
/* The threads forward runs m rows on when nt (resolved) are allowed. */
int forward_team(const bp_arch *arch, int64_t m, int nt);

/* Bytes of one thread's share of the predict workspace. */
int64_t predict_thread_bytes(const bp_arch *arch, int64_t m);

/* Predict calls of at least this many blocks of the largest size
 * (BP_PREDICT_MAX_ROWS) pack each weight matrix once for all of them (in a
 * shared part of the workspace) rather than once per block; so do calls
 * of at least one such block whose X, at 8 bytes an element, takes at
 * least the packed weights' bytes (the shared part then never outgrows
 * the input much).  From 600 to 3,000 rows of C3, packing once took
 * 0.94-0.96x the time of packing per block (Xeon model 167, one thread). */
#define BP_PREDICT_PREPACK_BLOCKS 8
#define PREDICT_PREPACK_ROWS \
    ((int64_t)BP_PREDICT_PREPACK_BLOCKS * BP_PREDICT_MAX_ROWS)
/* Bytes of the shared part when it is used: room for every layer's W at
 * the widest panel padding (64 columns) and 8-byte elements, whatever the
 * ISA (0 for weights too many to count so). */
int64_t predict_packed_total(const bp_arch *arch);
/* The same for m rows, 0 where the weights are packed block by block: never
 * shrinks as m grows (a workspace for m rows serves fewer).  Inline:
 * one-row calls (a fraction of a microsecond) ask too. */
static inline int64_t
predict_packed_bytes(const bp_arch *arch, int64_t m)
{
    int64_t total;
    if (m < BP_PREDICT_MAX_ROWS) {
        return 0;
    }
    total = predict_packed_total(arch);
    return m >= PREDICT_PREPACK_ROWS || total <= m * arch->sizes[0] * 8
               ? total
               : 0;
}

/* Rows per block where the weights are packed once: few enough that a
 * block's rows of X and its layers' outputs stay in L2 beside the packed
 * weights.  A layer's output is read and written once per depth block
 * (GEMM_KC), and a 512-row block of a 1024-wide layer is 2 MB.  Measured
 * against 512 (Xeon model 167, one thread): float32 in 64 rows took 0.93x
 * the time on C3 and 0.91-0.93x on 1024-wide and 64-128-64 networks;
 * float64 (6-row tiles whose B panels exceed L1) gained less and lost
 * below 256 rows: 0.98-0.99x in 256, 1.01-1.06x in 64. */
#define BP_PREDICT_PACKED_ROWS_F32 64
#define BP_PREDICT_PACKED_ROWS_F64 256

/* Rows per block of a predict call of m rows of elem_bytes elements: never
 * more than a thread's buffers hold (predict_area_rows). */
static inline int64_t
predict_block_rows(const bp_arch *arch, int64_t m, int elem_bytes)
{
    int64_t area = predict_area_rows(m), rows;
    if (predict_packed_bytes(arch, m) == 0) {
        return area;
    }
    rows = elem_bytes == 4 ? BP_PREDICT_PACKED_ROWS_F32
                           : BP_PREDICT_PACKED_ROWS_F64;
    return rows < area ? rows : area;
}
/* Where layer k's packed W starts in that part (bytes from its start). */
int64_t predict_packed_offset(const bp_arch *arch, int64_t k);

/* Widest layer of an architecture. */
int64_t arch_max_width(const bp_arch *arch);

/* Threads in the current team (1 outside a parallel region). */
static inline int
team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* Whether a layer's products go through the kernel table (packed GEMM) or
 * the direct loops for tiny layers.  Depends on the shape only, so every
 * call (predict, forward, fit) computes a layer the same way. */
static inline int
layer_uses_gemm(int64_t n_in, int64_t n_out)
{
    return n_in >= 8 && n_out >= 8;
}

/* Whether any of x[0..n) is NaN or infinite: its exponent bits (MASK) all
 * ones, tested on the bits (UINT, the float's width) of every value, with
 * no branch in the loop (it vectorises).  Static inline, so each kernel
 * file compiles it with its ISA (predict checks its input block by block;
 * finite.c scans whole arrays). */
#define ANY_NONFINITE(NAME, FLOAT, UINT, MASK)                               \
    static inline int                                                        \
    NAME(const FLOAT *x, int64_t n)                                          \
    {                                                                        \
        UINT bad = 0;                                                        \
        for (int64_t i = 0; i < n; i++) {                                    \
            UINT u;                                                          \
            memcpy(&u, x + i, sizeof u);                                     \
            bad |= (UINT)((u & (MASK)) == (MASK));                           \
        }                                                                    \
        return bad != 0;                                                     \
    }
ANY_NONFINITE(any_nonfinite_f32, float, uint32_t, UINT32_C(0x7f800000))
ANY_NONFINITE(any_nonfinite_f64, double, uint64_t,
              UINT64_C(0x7ff0000000000000))
#undef ANY_NONFINITE

/* Whether predict of a few rows shares a layer's columns across its team:
 * a wide layer (whole blocks of 32 columns for two threads), not softmax,
 * with enough weights that reading half of them takes clearly longer than
 * the barrier that follows (a few rows are limited by reading W).  Below
 * that, thread 0 computes the rest of the network alone. */
#define BP_PREDICT_SHARE_MIN 65536
static inline int
predict_layer_shared(int64_t n_in, int64_t n_out, int act)
{
    return layer_uses_gemm(n_in, n_out) && act != BP_ACT_SOFTMAX &&
           n_out >= 64 && n_in * n_out >= BP_PREDICT_SHARE_MIN;
}

/*
 * Tiny networks (every layer at most TINY_MAXW wide, at most TINY_MAXL
 * layers) train on a path that puts TINY_LANES samples side by side in
 * vector lanes and keeps a sample's whole chain in registers.  Gradients
 * are summed per lane, then per chunk of TINY_CHUNK samples, then over
 * chunks in order: the grouping depends on the batch only, never on the
 * thread count.
 */
#define TINY_MAXW 8
#define TINY_MAXL 6
#define TINY_LANES 16
#define TINY_CHUNK 1024
#define TINY_MAXP (TINY_MAXL * (TINY_MAXW * TINY_MAXW + TINY_MAXW))

static inline int
arch_is_tiny(const bp_arch *arch)
{
    /* dropout (a training-time option) takes the general path, which
     * applies the masks */
    if (arch->n_layers - 1 > TINY_MAXL || arch->dropout != NULL) {
        return 0;
    }
    for (int64_t k = 0; k < arch->n_layers; k++) {
        if (arch->sizes[k] > TINY_MAXW) {
            return 0;
        }
    }
    return 1;
}

/*
 * Whether the output layer's forward product and the input delta below it
 * (layer L - 1's, in the backward pass) are both cut by rows, the same
 * rows to each thread: then the delta needs only the output rows its own
 * thread has just finished, and no barrier is needed between the two.  So
 * with two layers or more whose top one is a kernel product narrower than
 * the batch of m rows (a classifier's few outputs).
 */
static inline int
out_rows_own(const bp_arch *arch, int64_t m)
{
    int64_t L = arch->n_layers - 1;
    return L >= 2 && layer_uses_gemm(arch->sizes[L - 1], arch->sizes[L]) &&
           arch->sizes[L] < m;
}

/*
 * Whether a team trains a batch of m rows cut by samples (batch.h,
 * backward_samples): each thread takes its own rows through every layer's
 * forward pass, the loss and every input delta, with no barrier between
 * layers; one barrier; then the weight gradients and their updates are cut
 * by entries, each summed over all the rows in order.  Each thread then
 * reads all of W, which pays while W (weights of esize bytes) is small
 * next to a core's L2.  Larger networks cut each product by columns, which
 * reads W once across the team.  C3 (0.94 MB of floats) measured 8%
 * faster cut by samples in one hour on the Xeon and 2-10% slower in
 * another, so it keeps the cut it had (docs/perf-notes.md, "Training cut
 * by samples").  That is the rule (BP_CUT_AUTO); the caller may choose
 * either cut instead (bp_cut), and fit races them where both are allowed
 * and W is within SAMPLES_RACE_BYTES.  Every thread decides alike.
 */
#define SAMPLES_MAX_BYTES (512.0 * 1024.0)
#define SAMPLES_MIN_ROWS 8  /* per thread */
/* Weights up to this many bytes: the cut the rule does not take may still
 * be the faster on some host (its L2, its cores), so fit's race times both
 * (bp_train_cut).  Beyond it the cut by samples measured 25-30% slower on
 * every host tried (C4, 1024-1024-10; perf-notes). */
#define SAMPLES_RACE_BYTES (4.0 * SAMPLES_MAX_BYTES)

/* Whether a batch of m rows on nt threads may be cut by samples at all. */
static inline int
train_samples_ok(const bp_arch *arch, int64_t m, int nt)
{
    return nt > 1 && m >= (int64_t)SAMPLES_MIN_ROWS * nt &&
           !arch_is_tiny(arch);
}

static inline int
train_by_samples(const bp_arch *arch, int64_t m, int nt, int64_t esize,
                 int cut)
{
    if (!train_samples_ok(arch, m, nt) || cut == BP_CUT_COLUMNS) {
        return 0;
    }
    return cut == BP_CUT_SAMPLES ||
           arch_weights(arch) * (double)esize <= SAMPLES_MAX_BYTES;
}

/* Team synchronisations in one training batch of m rows (elements of
 * esize bytes) cut as `cut` says: per layer one in the forward pass (the
 * output layer's with the loss, but none when the input delta below it
 * takes the same rows, out_rows_own) and one in the backward pass (the
 * input delta, but for the first layer), then the last barrier and, with
 * clipping, the update (the tiny path: its two passes and the update).
 * Cut by samples: its two barriers and two more for W and the rows crossing
 * between the cores (C2 at batch 32 cost 4.3 barriers' worth beyond half
 * its one-thread time).  bp_train_syncs exports it. */
static inline double
train_syncs(const bp_arch *arch, int64_t m, int64_t esize, int cut)
{
    if (arch_is_tiny(arch)) {
        return 5.0;
    }
    if (train_by_samples(arch, m, 2, esize, cut)) {
        return 4.0;
    }
    return 2.0 * (double)(arch->n_layers - 1) + 1.0 -
           (out_rows_own(arch, m) ? 1.0 : 0.0);
}

static inline int
thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

#endif /* BPCORE_INTERNAL_H */
