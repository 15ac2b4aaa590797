/*
 * bpcore.h - the public C interface of bpcore's multilayer-perceptron core.
 *
 * Conventions: every array is row-major and C-contiguous; samples are rows.
 * Layer k (0-based) maps out_k (m, n_k) to net_{k+1} = out_k W_k + b_k and
 * out_{k+1} = f_{k+1}(net_{k+1}); W_k has shape (n_k, n_{k+1}).  All
 * parameters live in one flat buffer: every W_k in layer order, then every
 * b_k in layer order (see bp_layout).  Gradients and optimizer state share
 * that layout.  Functions never print, exit or abort; they return bp_status.
 * Results never depend on n_threads (no floating-point reductions across
 * threads: each thread owns disjoint outputs and sums samples in order).
 */
#ifndef BPCORE_BPCORE_H
#define BPCORE_BPCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BP_OK = 0,
    BP_EARG = -1,        /* NULL pointer or invalid enum value */
    BP_ESHAPE = -2,      /* negative or zero size where one is needed */
    BP_ENOMEM = -3,      /* workspace too small */
    BP_EOVERFLOW = -4,   /* a size computation overflowed int64 */
    BP_ENONFINITE = -5,  /* the loss became NaN or infinite (or, for
                            bp_predict_checked_*, X holds NaN or inf) */
    BP_EINTERNAL = -6
} bp_status;

/* Activation codes; BP_ACT_SOFTMAX is valid only for the output layer. */
typedef enum {
    BP_ACT_IDENTITY = 0,
    BP_ACT_SIGMOID = 1,
    BP_ACT_TANH = 2,
    BP_ACT_RELU = 3,
    BP_ACT_LEAKY_RELU = 4,  /* slope 0.01 */
    BP_ACT_ELU = 5,         /* alpha 1 */
    BP_ACT_SOFTPLUS = 6,    /* beta 1 */
    BP_ACT_GELU = 7,        /* exact: x/2 (1 + erf(x/sqrt 2)) */
    BP_ACT_SOFTMAX = 8,
    BP_ACT_COUNT = 9
} bp_act;

typedef enum {
    BP_LOSS_MSE = 0,   /* 1/2 sum_j (out_j - y_j)^2 per sample */
    BP_LOSS_CE = 1,    /* -sum_j y_j log softmax(net)_j; softmax output */
    BP_LOSS_BCE = 2,   /* sum_j logistic loss of net_j; sigmoid output */
    BP_LOSS_MAE = 3,   /* sum_j |out_j - y_j| per sample */
    BP_LOSS_HUBER = 4, /* sum_j huber_delta(out_j - y_j); loss_param delta */
    BP_LOSS_POISSON = 5, /* sum_j exp(out_j) - y_j out_j; identity output */
    BP_LOSS_COUNT = 6
} bp_loss;

/* Most entries of sizes (n_0..n_L) an architecture may have; bp_arch_check
 * refuses more with BP_ESHAPE.  bpcore/_limits.py holds the same number. */
#define BP_MAX_LAYERS 256

/*
 * A network's architecture.  sizes has n_layers = L + 1 entries n_0..n_L;
 * acts has L entries, acts[k] being the activation of layer k + 1.
 *
 * dropout: NULL (none; predict always ignores it), or L - 1 rates in
 * [0, 1), rate k for hidden layer k + 1.  With it, bp_forward, bp_backward
 * and bp_train apply inverted dropout after each hidden activation: unit j
 * of row i of layer k + 1 is kept, and scaled by 1 / (1 - rate), when
 * bp_dropout_keep(seed, i, k, j, rate) is 1, else zeroed.  seed is
 * drop_seed in bp_forward and bp_backward; bp_train uses, for batch b,
 * bp_dropout_batch_seed(drop_seed, b) and rows counted within the batch.
 * The masks depend on these numbers only, never on the thread count.
 */
typedef struct {
    int64_t n_layers;
    const int64_t *sizes;
    const int32_t *acts;
    int32_t loss;
    double loss_param; /* huber: delta > 0; unused by the other losses */
    const double *dropout;
    uint64_t drop_seed;
} bp_arch;

/* The mixing function of splitmix64 (a bijection of 64-bit words). */
static inline uint64_t
bp_mix64(uint64_t x)
{
    x += UINT64_C(0x9E3779B97F4A7C15);
    x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
    return x ^ (x >> 31);
}

/* The dropout seed of batch b of a bp_train call (b counted from 0 as
 * first_batch counts). */
static inline uint64_t
bp_dropout_batch_seed(uint64_t seed, int64_t b)
{
    return bp_mix64(seed + (uint64_t)b * UINT64_C(0x9E3779B97F4A7C15));
}

/* The hash of row i under a seed; bp_dropout_keep's first step. */
static inline uint64_t
bp_dropout_row(uint64_t seed, int64_t i)
{
    return bp_mix64(seed ^ bp_mix64((uint64_t)i));
}

/* 1 when unit j of layer k + 1 of the row with hash row_hash is kept:
 * u = top 53 bits of the unit's hash / 2^53, kept when u >= rate. */
static inline int
bp_dropout_keep_h(uint64_t row_hash, int64_t k, int64_t j, double rate)
{
    uint64_t h = bp_mix64(row_hash ^ ((uint64_t)k << 40) ^ (uint64_t)j);
    return (double)(h >> 11) * (1.0 / 9007199254740992.0) >= rate;
}

static inline int
bp_dropout_keep(uint64_t seed, int64_t i, int64_t k, int64_t j, double rate)
{
    return bp_dropout_keep_h(bp_dropout_row(seed, i), k, j, rate);
}

typedef enum {
    BP_OPT_SGD = 0,
    BP_OPT_ADAM = 1,
    BP_OPT_ADAMW = 2
} bp_opt_kind;

/*
 * Optimizer hyperparameters and state (PyTorch's update rules).
 * state1 is SGD's momentum buffer or Adam's first moment, state2 Adam's
 * second moment; both n_params long, in the parameters' dtype, NULL when the
 * rule does not need them.  t counts the updates done; each update adds 1.
 * Weight decay applies to the first n_weights entries (the weights) only.
 */
typedef struct {
    int32_t kind;
    int32_t nesterov;
    double lr;
    double momentum;
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
    int64_t t;
    void *state1;
    void *state2;
    /* > 0: before each update, scale the gradient by min(1, clip_norm /
     * (||g||_2 + 1e-6)), ||g||_2 over all parameters (summed in double in
     * a fixed order), as torch.nn.utils.clip_grad_norm_; 0: no clipping */
    double clip_norm;
} bp_optim;

/* A static message for a status code. Thread-safe. */
const char *bp_status_string(int status);

/*
 * Pick the kernels once (idempotent): the best of avx512, avx2 and the
 * portable ref that the CPU runs, or BPCORE_KERNEL=ref|avx2|avx512.
 * Called by the Python extension at import.
 */
void bp_init(void);

/* Static strings describing the build: kernel in use, OpenMP, compiler. */
const char *bp_config_kernel(void);
const char *bp_config_compiler(void);
int bp_config_openmp(void);

/* omp_get_max_threads() (1 without OpenMP); 1 in a forked child. */
int bp_default_threads(void);

/* omp_get_num_places(): the places of OMP_PLACES or, with OMP_PROC_BIND,
 * libgomp's default ones (0: none; OpenMP older than 4.5: 0). */
int bp_omp_places(void);

/* 1 when none of the n values is NaN or infinite, else 0 (large arrays
 * are scanned by up to n_threads threads). */
int bp_all_finite_f32(const float *x, int64_t n, int n_threads);
int bp_all_finite_f64(const double *x, int64_t n, int n_threads);

/*
 * Offsets of the flat parameter buffer.
 *   w_off (L) out: offset of W_k;  b_off (L) out: offset of b_k
 *   n_weights out: total count of weights (the prefix that decay touches)
 *   n_params out: total count
 * Returns BP_ESHAPE for fewer than 2 layers or a size < 1, BP_EOVERFLOW.
 */
bp_status bp_layout(int64_t *w_off, int64_t *b_off, int64_t *n_weights,
                    int64_t *n_params, const int64_t *sizes,
                    int64_t n_layers);

/* Validate an architecture: sizes, activation and loss codes, pairings. */
bp_status bp_arch_check(const bp_arch *arch);

/*
 * Bytes of workspace that bp_predict_* needs for m rows and the given
 * thread count (never fewer for more rows: the bytes for m rows serve any
 * call of fewer).  From 4,096 rows it includes a part where each layer's W
 * is packed once for the whole call.
 */
bp_status bp_predict_workspace_size(int64_t *bytes, const bp_arch *arch,
                                    int64_t m, int n_threads);

/*
 * The threads bp_predict_* runs m rows on when n_threads are allowed:
 * n_threads, or 1 where the work is too small to share or is one block of
 * rows (1 for an invalid arch).  The Python layer races this team against
 * one thread on the calls it makes (see _core.pyx, PredictRace).
 */
int bp_predict_threads(const bp_arch *arch, int64_t m, int n_threads);
/* The same for bp_forward_*: n_threads, or 1 where the work is too small
 * to share (the Python layer races forward calls too). */
int bp_forward_threads(const bp_arch *arch, int64_t m, int n_threads);
/* Whether BPCORE_TEAM=always turns the choice of threads off (then any work
 * above the minimum runs on the threads asked for). */
int bp_team_forced(void);

/*
 * Output activations of the network.
 *   Y (m, n_L) out;  X (m, n_0) in;  params (n_params) in
 *   work (bytes from bp_predict_workspace_size) scratch
 * Uses OpenMP over blocks of rows.  Thread-safe for concurrent calls that do
 * not share Y or work.
 */
bp_status bp_predict_f32(float *Y, const float *X, const float *params,
                         const bp_arch *arch, int64_t m, void *work,
                         int64_t work_bytes, int n_threads);
bp_status bp_predict_f64(double *Y, const double *X, const double *params,
                         const bp_arch *arch, int64_t m, void *work,
                         int64_t work_bytes, int n_threads);

/*
 * bp_predict_* that also checks X: each block of rows is checked for NaN
 * and infinity just before it is used (one pass over X instead of a
 * separate scan first).  Returns BP_ENONFINITE when X holds such a value;
 * Y is then unspecified.
 */
bp_status bp_predict_checked_f32(float *Y, const float *X,
                                 const float *params, const bp_arch *arch,
                                 int64_t m, void *work, int64_t work_bytes,
                                 int n_threads);
bp_status bp_predict_checked_f64(double *Y, const double *X,
                                 const double *params, const bp_arch *arch,
                                 int64_t m, void *work, int64_t work_bytes,
                                 int n_threads);

/*
 * Forward pass keeping every layer.
 *   net[k], out[k] (m, n_k) out for k = 1..L (entries 0 are ignored)
 *   X (m, n_0) in;  params in
 */
bp_status bp_forward_f32(float *const *net, float *const *out, const float *X,
                         const float *params, const bp_arch *arch, int64_t m,
                         int n_threads);
bp_status bp_forward_f64(double *const *net, double *const *out,
                         const double *X, const double *params,
                         const bp_arch *arch, int64_t m, int n_threads);

/*
 * Forward and backward pass: loss, parameter gradient and deltas.
 *   grad (n_params) out, overwritten
 *   delta[k] (m, n_k) out for k = 1..L; delta[0] (m, n_0) out, dE/dX, or
 *     NULL to skip the input gradient
 *   net[k], out[k] (m, n_k) out for k = 1..L, as bp_forward
 *   loss out: E = sum_i s_i l_i / sum_i s_i (s_i = 1 without weights)
 *   X (m, n_0) in;  Y (m, n_L) in (class probabilities for CE)
 *   sw (m) in or NULL; weights must be >= 0 with a positive sum
 */
bp_status bp_backward_f32(float *grad, float *const *delta, float *const *net,
                          float *const *out, double *loss, const float *X,
                          const float *Y, const float *sw,
                          const float *params, const bp_arch *arch,
                          int64_t m, int n_threads);
bp_status bp_backward_f64(double *grad, double *const *delta,
                          double *const *net, double *const *out,
                          double *loss, const double *X, const double *Y,
                          const double *sw, const double *params,
                          const bp_arch *arch, int64_t m, int n_threads);

/* Bytes of workspace for bp_train_* with batches of at most batch rows
 * and at most n_threads threads. */
bp_status bp_train_workspace_size(int64_t *bytes, const bp_arch *arch,
                                  int64_t batch, int n_threads);
/* The same for one element type (f64: double, else float); smaller for
 * float.  bp_train_workspace_size is this for double. */
bp_status bp_train_workspace_bytes(int64_t *bytes, const bp_arch *arch,
                                   int64_t batch, int n_threads, int f64);

/*
 * How a team of threads shares a training batch (bp_train_*'s cut):
 *   BP_CUT_AUTO: as the C core's rule says (bp_train_cut);
 *   BP_CUT_COLUMNS: each product cut by its output columns or rows, a
 *     barrier after each (reads W once across the team);
 *   BP_CUT_SAMPLES: each thread takes its own rows through every layer's
 *     forward pass and input delta, then the gradients are shared by
 *     entries (each thread reads all of W); only for a batch with at least
 *     8 rows per thread, and not for the smallest networks (their own
 *     path): elsewhere it means BP_CUT_COLUMNS.
 * The cut changes no result, only the time.
 */
typedef enum {
    BP_CUT_AUTO = 0,
    BP_CUT_COLUMNS = 1,
    BP_CUT_SAMPLES = 2
} bp_cut;

/*
 * Run n_batches optimizer updates, in one OpenMP parallel region.
 * Batch b (0-based, counted from first_batch) holds samples
 * order[b * batch .. min((b + 1) * batch, m) - 1] (or those row numbers
 * directly when order is NULL).
 *   params (n_params) inout;  grad (n_params) scratch, holds the last
 *     batch's gradient on return;  opt inout (state and t)
 *   loss_sum inout: each batch adds (batch loss * batch weight), in
 *     batch order, so a loop of calls sums exactly like one call
 *   weight_sum inout: each batch adds its weight (sum of its s_i)
 *   batches_done out
 *   X (m, n_0), sw (m) or NULL, order (m) or NULL in
 *   Y (m, n_L) in, or NULL with labels (m) in: class indices in
 *     [0, n_L), each standing for a one-hot row of Y (cross-entropy
 *     targets without the m x n_L array); exactly one of the two
 * Stops with BP_ENONFINITE after the first batch whose loss is not finite;
 * that batch's update is not applied.
 * n_threads > 0: at most that many threads, one when the host's measured
 * team cost says a team would be slower (bp_team_size); n_threads < 0:
 * exactly -n_threads (above a minimum of work), the caller having chosen.
 * cut (bp_cut): how a team shares each batch.  None changes any result.
 */
bp_status bp_train_f32(float *params, float *grad, bp_optim *opt,
                       double *loss_sum, double *weight_sum,
                       int64_t *batches_done, const float *X, const float *Y,
                       const int64_t *labels, const float *sw,
                       const int64_t *order, int64_t m,
                       int64_t batch, int64_t first_batch, int64_t n_batches,
                       const bp_arch *arch, void *work, int64_t work_bytes,
                       int n_threads, int cut);
bp_status bp_train_f64(double *params, double *grad, bp_optim *opt,
                       double *loss_sum, double *weight_sum,
                       int64_t *batches_done, const double *X,
                       const double *Y, const int64_t *labels,
                       const double *sw, const int64_t *order, int64_t m,
                       int64_t batch, int64_t first_batch, int64_t n_batches,
                       const bp_arch *arch, void *work, int64_t work_bytes,
                       int n_threads, int cut);

/*
 * One optimizer update of the flat parameters from the gradient (clipped
 * first as opt->clip_norm says; grad itself is not changed).
 *   params (n) inout;  grad (n) in;  opt inout
 */
bp_status bp_optim_update_f32(float *params, const float *grad,
                              bp_optim *opt, int64_t n, int64_t n_weights,
                              int n_threads);
bp_status bp_optim_update_f64(double *params, const double *grad,
                              bp_optim *opt, int64_t n, int64_t n_weights,
                              int n_threads);

/*
 * C = op(A) op(B) by the layer product of the chosen kernel, shared by
 * n_threads threads as in training (for benchmarks and tests).
 *   C (m, n) out;  A (m, k), or (k, m) when trans_a;  B (k, n), or (n, k)
 *   when trans_b; all row-major and contiguous
 */
bp_status bp_matmul_f32(float *C, const float *A, const float *B, int64_t m,
                        int64_t n, int64_t k, int trans_a, int trans_b,
                        int n_threads);
bp_status bp_matmul_f64(double *C, const double *A, const double *B,
                        int64_t m, int64_t n, int64_t k, int trans_a,
                        int trans_b, int n_threads);

/*
 * The host's cost of a team of n_threads (2 or more), measured once per
 * process: seconds per step of the calibration chain on one thread (float,
 * double; a 32 x 128 by 128 x 128 product and a row pass) and seconds per
 * team synchronisation.  0 on success, -1 for n_threads < 2 or no memory.
 */
int bp_team_costs(int n_threads, double *step_f32, double *step_f64,
                  double *sync);
/* The threads that work of `flops` with `syncs` team synchronisations runs
 * on when n_threads are allowed: n_threads or 1 (see calibrate.c). */
int bp_team_size(int n_threads, double flops, double syncs, int f64);
/* Team synchronisations of one training batch of `batch` rows, float or
 * double (f64), cut as `cut` says (bp_cut) (the count bp_train_* gives
 * bp_team_size; fit's thread race uses it too). */
double bp_train_syncs(const bp_arch *arch, int64_t batch, int f64, int cut);
/* The cut BP_CUT_AUTO takes for a team of n_threads (2 or more) on batches
 * of `batch` rows, float or double (f64): BP_CUT_COLUMNS or BP_CUT_SAMPLES.
 * *both (may be NULL): 1 when the two cuts differ for such a batch and the
 * weights are small enough that the other may be the faster on some host
 * (fit's race then times both), else 0. */
int bp_train_cut(const bp_arch *arch, int64_t batch, int n_threads, int f64,
                 int *both);

/*
 * What bp_init made of the environment variable BPCORE_KERNEL: unset
 * (the best kernel the machine runs), the kernel asked for, a kernel this
 * machine or build cannot run, or a name that is none of ref, avx2,
 * avx512.  In the last two cases the best available kernel is in use.
 */
enum {
    BP_KERNEL_DEFAULT = 0,
    BP_KERNEL_AS_ASKED = 1,
    BP_KERNEL_UNAVAILABLE = 2,
    BP_KERNEL_UNKNOWN = 3
};
int bp_kernel_request(void);

#ifdef __cplusplus
}
#endif

#endif /* BPCORE_BPCORE_H */
