# Declarations mirroring csrc/include/bpcore/bpcore.h, in the same order.
from libc.stdint cimport int32_t, int64_t, uint64_t

cdef extern from "bpcore/bpcore.h" nogil:
    ctypedef int bp_status
    enum:
        BP_OK
        BP_EARG
        BP_ESHAPE
        BP_ENOMEM
        BP_EOVERFLOW
        BP_ENONFINITE
        BP_EINTERNAL

    # the codes that bpcore._names maps the names to (never by position)
    ctypedef enum bp_act:
        BP_ACT_IDENTITY
        BP_ACT_SIGMOID
        BP_ACT_TANH
        BP_ACT_RELU
        BP_ACT_LEAKY_RELU
        BP_ACT_ELU
        BP_ACT_SOFTPLUS
        BP_ACT_GELU
        BP_ACT_SOFTMAX
        BP_ACT_COUNT

    ctypedef enum bp_loss:
        BP_LOSS_MSE
        BP_LOSS_CE
        BP_LOSS_BCE
        BP_LOSS_MAE
        BP_LOSS_HUBER
        BP_LOSS_POISSON
        BP_LOSS_COUNT

    enum:
        BP_MAX_LAYERS

    ctypedef struct bp_arch:
        int64_t n_layers
        const int64_t *sizes
        const int32_t *acts
        int32_t loss
        double loss_param
        const double *dropout
        uint64_t drop_seed

    ctypedef enum bp_opt_kind:
        BP_OPT_SGD
        BP_OPT_ADAM
        BP_OPT_ADAMW

    ctypedef struct bp_optim:
        int32_t kind
        int32_t nesterov
        double lr
        double momentum
        double weight_decay
        double beta1
        double beta2
        double eps
        int64_t t
        void *state1
        void *state2
        double clip_norm

    const char *bp_status_string(int status)
    void bp_init()
    const char *bp_config_kernel()
    const char *bp_config_compiler()
    int bp_config_openmp()
    int bp_default_threads()
    int bp_omp_places()
    int bp_all_finite_f32(const float *x, int64_t n, int n_threads) nogil
    int bp_all_finite_f64(const double *x, int64_t n, int n_threads) nogil

    bp_status bp_layout(int64_t *w_off, int64_t *b_off, int64_t *n_weights,
                        int64_t *n_params, const int64_t *sizes,
                        int64_t n_layers)
    bp_status bp_arch_check(const bp_arch *arch)
    bp_status bp_predict_workspace_size(int64_t *bytes, const bp_arch *arch,
                                        int64_t m, int n_threads)

    bp_status bp_predict_f32(float *Y, const float *X, const float *params,
                             const bp_arch *arch, int64_t m, void *work,
                             int64_t work_bytes, int n_threads)
    bp_status bp_predict_f64(double *Y, const double *X, const double *params,
                             const bp_arch *arch, int64_t m, void *work,
                             int64_t work_bytes, int n_threads)
    bp_status bp_predict_checked_f32(float *Y, const float *X,
                                     const float *params, const bp_arch *arch,
                                     int64_t m, void *work,
                                     int64_t work_bytes, int n_threads)
    bp_status bp_predict_checked_f64(double *Y, const double *X,
                                     const double *params,
                                     const bp_arch *arch, int64_t m,
                                     void *work, int64_t work_bytes,
                                     int n_threads)
    bp_status bp_forward_f32(float **net, float **out, const float *X,
                             const float *params, const bp_arch *arch,
                             int64_t m, int n_threads)
    bp_status bp_forward_f64(double **net, double **out, const double *X,
                             const double *params, const bp_arch *arch,
                             int64_t m, int n_threads)
    bp_status bp_backward_f32(float *grad, float **delta, float **net,
                              float **out, double *loss, const float *X,
                              const float *Y, const float *sw,
                              const float *params, const bp_arch *arch,
                              int64_t m, int n_threads)
    bp_status bp_backward_f64(double *grad, double **delta, double **net,
                              double **out, double *loss, const double *X,
                              const double *Y, const double *sw,
                              const double *params, const bp_arch *arch,
                              int64_t m, int n_threads)
    bp_status bp_train_workspace_size(int64_t *bytes, const bp_arch *arch,
                                      int64_t batch, int n_threads)
    bp_status bp_train_f32(float *params, float *grad, bp_optim *opt,
                           double *loss_sum, double *weight_sum,
                           int64_t *batches_done, const float *X,
                           const float *Y, const int64_t *labels,
                           const float *sw, const int64_t *order, int64_t m,
                           int64_t batch, int64_t first_batch,
                           int64_t n_batches,
                           const bp_arch *arch, void *work,
                           int64_t work_bytes, int n_threads, int cut)
    bp_status bp_train_f64(double *params, double *grad, bp_optim *opt,
                           double *loss_sum, double *weight_sum,
                           int64_t *batches_done, const double *X,
                           const double *Y, const int64_t *labels,
                           const double *sw, const int64_t *order, int64_t m,
                           int64_t batch, int64_t first_batch,
                           int64_t n_batches,
                           const bp_arch *arch, void *work,
                           int64_t work_bytes, int n_threads, int cut)
    bp_status bp_optim_update_f32(float *params, const float *grad,
                                  bp_optim *opt, int64_t n, int64_t n_weights,
                                  int n_threads)
    bp_status bp_optim_update_f64(double *params, const double *grad,
                                  bp_optim *opt, int64_t n, int64_t n_weights,
                                  int n_threads)
    bp_status bp_matmul_f32(float *C, const float *A, const float *B,
                            int64_t m, int64_t n, int64_t k, int trans_a,
                            int trans_b, int n_threads)
    bp_status bp_matmul_f64(double *C, const double *A, const double *B,
                            int64_t m, int64_t n, int64_t k, int trans_a,
                            int trans_b, int n_threads)
    int bp_team_costs(int n_threads, double *step_f32, double *step_f64,
                      double *sync)
    int bp_team_size(int n_threads, double flops, double syncs, int f64)
    int bp_team_forced()
    int bp_predict_threads(const bp_arch *arch, int64_t m, int n_threads)
    int bp_forward_threads(const bp_arch *arch, int64_t m, int n_threads)
    double bp_train_syncs(const bp_arch *arch, int64_t batch, int f64,
                          int cut)
    int bp_train_cut(const bp_arch *arch, int64_t batch, int n_threads,
                     int f64, int *both)
    enum:
        BP_CUT_AUTO
        BP_CUT_COLUMNS
        BP_CUT_SAMPLES
    int bp_kernel_request()
    enum:
        BP_KERNEL_UNAVAILABLE
        BP_KERNEL_UNKNOWN
    bp_status bp_train_workspace_bytes(int64_t *bytes, const bp_arch *arch,
                                       int64_t batch, int n_threads, int f64)
