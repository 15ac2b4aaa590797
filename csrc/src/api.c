/*
 * api.c - the public entry points of bpcore.h that depend on the element
 * type: each gathers its arguments into the entry's struct (kernels.h) and
 * calls the kernel table chosen by bp_init.
 */
#include "kernels.h"

bp_status
bp_predict_f32(float *Y, const float *X, const float *params,
               const bp_arch *arch, int64_t m, void *work, int64_t work_bytes,
               int n_threads)
{
    const predict_args_f32 a = {Y, X, params, arch, m, work, work_bytes,
                                n_threads, 0};
    return kernels()->predict_f32(&a);
}

bp_status
bp_predict_checked_f32(float *Y, const float *X, const float *params,
                       const bp_arch *arch, int64_t m, void *work,
                       int64_t work_bytes, int n_threads)
{
    const predict_args_f32 a = {Y, X, params, arch, m, work, work_bytes,
                                n_threads, 1};
    return kernels()->predict_f32(&a);
}

bp_status
bp_predict_f64(double *Y, const double *X, const double *params,
               const bp_arch *arch, int64_t m, void *work, int64_t work_bytes,
               int n_threads)
{
    const predict_args_f64 a = {Y, X, params, arch, m, work, work_bytes,
                                n_threads, 0};
    return kernels()->predict_f64(&a);
}

bp_status
bp_predict_checked_f64(double *Y, const double *X, const double *params,
                       const bp_arch *arch, int64_t m, void *work,
                       int64_t work_bytes, int n_threads)
{
    const predict_args_f64 a = {Y, X, params, arch, m, work, work_bytes,
                                n_threads, 1};
    return kernels()->predict_f64(&a);
}

bp_status
bp_forward_f32(float *const *net, float *const *out, const float *X,
               const float *params, const bp_arch *arch, int64_t m,
               int n_threads)
{
    const forward_args_f32 a = {net, out, X, params, arch, m, n_threads};
    return kernels()->forward_f32(&a);
}

bp_status
bp_forward_f64(double *const *net, double *const *out, const double *X,
               const double *params, const bp_arch *arch, int64_t m,
               int n_threads)
{
    const forward_args_f64 a = {net, out, X, params, arch, m, n_threads};
    return kernels()->forward_f64(&a);
}

bp_status
bp_backward_f32(float *grad, float *const *delta, float *const *net,
                float *const *out, double *loss, const float *X,
                const float *Y, const float *sw, const float *params,
                const bp_arch *arch, int64_t m, int n_threads)
{
    const backward_args_f32 a = {grad, delta, net, out, loss, X, Y,
                                 sw, params, arch, m, n_threads};
    return kernels()->backward_f32(&a);
}

bp_status
bp_backward_f64(double *grad, double *const *delta, double *const *net,
                double *const *out, double *loss, const double *X,
                const double *Y, const double *sw, const double *params,
                const bp_arch *arch, int64_t m, int n_threads)
{
    const backward_args_f64 a = {grad, delta, net, out, loss, X, Y,
                                 sw, params, arch, m, n_threads};
    return kernels()->backward_f64(&a);
}

bp_status
bp_optim_update_f32(float *params, const float *grad, bp_optim *opt,
                    int64_t n, int64_t n_weights, int n_threads)
{
    const update_args_f32 a = {params, grad, opt, n, n_weights, n_threads};
    return kernels()->update_f32(&a);
}

bp_status
bp_optim_update_f64(double *params, const double *grad, bp_optim *opt,
                    int64_t n, int64_t n_weights, int n_threads)
{
    const update_args_f64 a = {params, grad, opt, n, n_weights, n_threads};
    return kernels()->update_f64(&a);
}

bp_status
bp_train_f32(float *params, float *grad, bp_optim *opt, double *loss_sum,
             double *weight_sum, int64_t *batches_done, const float *X,
             const float *Y, const int64_t *labels, const float *sw,
             const int64_t *order, int64_t m, int64_t batch,
             int64_t first_batch, int64_t n_batches, const bp_arch *arch,
             void *work, int64_t work_bytes, int n_threads, int cut)
{
    const train_args_f32 a = {params, grad, opt, loss_sum, weight_sum,
                              batches_done, X, Y, labels, sw, order, m,
                              batch, first_batch, n_batches, arch, work,
                              work_bytes, n_threads, cut};
    return kernels()->train_f32(&a);
}

bp_status
bp_train_f64(double *params, double *grad, bp_optim *opt, double *loss_sum,
             double *weight_sum, int64_t *batches_done, const double *X,
             const double *Y, const int64_t *labels, const double *sw,
             const int64_t *order, int64_t m, int64_t batch,
             int64_t first_batch, int64_t n_batches, const bp_arch *arch,
             void *work, int64_t work_bytes, int n_threads, int cut)
{
    const train_args_f64 a = {params, grad, opt, loss_sum, weight_sum,
                              batches_done, X, Y, labels, sw, order, m,
                              batch, first_batch, n_batches, arch, work,
                              work_bytes, n_threads, cut};
    return kernels()->train_f64(&a);
}

bp_status
bp_matmul_f32(float *C, const float *A, const float *B, int64_t m, int64_t n,
              int64_t k, int trans_a, int trans_b, int n_threads)
{
    const matmul_args_f32 a = {C, A, B, m, n, k, trans_a, trans_b, n_threads};
    return kernels()->matmul_f32(&a);
}

bp_status
bp_matmul_f64(double *C, const double *A, const double *B, int64_t m,
              int64_t n, int64_t k, int trans_a, int trans_b, int n_threads)
{
    const matmul_args_f64 a = {C, A, B, m, n, k, trans_a, trans_b, n_threads};
    return kernels()->matmul_f64(&a);
}
