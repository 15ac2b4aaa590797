/* test_layout.c - parameter layout, overflow checks, architecture checks,
 * status strings and workspace sizes. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bpcore/bpcore.h"
#include "check.h"

/* bp_layout: offsets, bad sizes, overflow. */
static void
check_layout(void)
{
    int64_t sizes[4] = {2, 3, 2, 2};
    int64_t w_off[3], b_off[3], n_w = 0, n_p = 0;

    /* weights 2*3 + 3*2 + 2*2 = 16, then biases 3 + 2 + 2 = 7 */
    CHECK(bp_layout(w_off, b_off, &n_w, &n_p, sizes, 4) == BP_OK);
    CHECK(w_off[0] == 0 && w_off[1] == 6 && w_off[2] == 12);
    CHECK(b_off[0] == 16 && b_off[1] == 19 && b_off[2] == 21);
    CHECK(n_w == 16 && n_p == 23);

    CHECK(bp_layout(w_off, b_off, &n_w, &n_p, sizes, 1) == BP_ESHAPE);
    CHECK(bp_layout(NULL, b_off, &n_w, &n_p, sizes, 4) == BP_EARG);
    {
        int64_t bad[3] = {2, 0, 2};
        CHECK(bp_layout(w_off, b_off, &n_w, &n_p, bad, 3) == BP_ESHAPE);
    }
    {
        /* (2^31)^2 * 3 layers overflows int64 */
        int64_t huge[5] = {INT64_C(1) << 31, INT64_C(1) << 31,
                           INT64_C(1) << 31, INT64_C(1) << 31,
                           INT64_C(1) << 31};
        int64_t wo[4], bo[4];
        CHECK(bp_layout(wo, bo, &n_w, &n_p, huge, 5) == BP_EOVERFLOW);
    }
}

/* bp_arch_check on activation and loss pairings, then the workspace
 * sizes of the architecture it leaves. */
static void
check_arch_and_sizes(void)
{
    int64_t sizes[4] = {2, 3, 2, 2}, bytes = 0;
    int32_t acts[3] = {BP_ACT_SIGMOID, BP_ACT_SIGMOID, BP_ACT_SIGMOID};
    bp_arch arch = {4, sizes, acts, BP_LOSS_MSE};

    CHECK(bp_arch_check(&arch) == BP_OK);
    arch.loss = BP_LOSS_CE; /* needs softmax output */
    CHECK(bp_arch_check(&arch) == BP_EARG);
    acts[2] = BP_ACT_SOFTMAX;
    CHECK(bp_arch_check(&arch) == BP_OK);
    acts[0] = BP_ACT_SOFTMAX; /* softmax only at the output */
    CHECK(bp_arch_check(&arch) == BP_EARG);
    acts[0] = 99;
    CHECK(bp_arch_check(&arch) == BP_EARG);
    acts[0] = BP_ACT_RELU;
    arch.loss = BP_LOSS_BCE;
    CHECK(bp_arch_check(&arch) == BP_EARG);
    acts[2] = BP_ACT_SIGMOID;
    CHECK(bp_arch_check(&arch) == BP_OK);
    CHECK(bp_arch_check(NULL) == BP_EARG);

    CHECK(bp_predict_workspace_size(&bytes, &arch, 101, 2) == BP_OK && bytes > 0);
    CHECK(bp_train_workspace_size(&bytes, &arch, 32, 2) == BP_OK &&
          bytes > 0);
    CHECK(bp_train_workspace_size(&bytes, &arch, 0, 2) == BP_ESHAPE);
}

/* Status strings and build facts. */
static void
check_status_and_config(void)
{
    for (int code = 0; code >= -7; code--) {
        const char *msg = bp_status_string(code);
        CHECK(msg != NULL && strlen(msg) > 0);
    }
    CHECK(strlen(bp_config_kernel()) > 0);
    CHECK(bp_default_threads() >= 1);
}

/* Finite scans: block edges, both types, threaded, NULL/empty. */
static void
check_finite(void)
{
    static float xf[3 * 4096 + 7];
    static double xd[3 * 4096 + 7];
    int64_t n = 3 * 4096 + 7, where[] = {0, 4095, 4096, 3 * 4096 + 6};
    CHECK(bp_all_finite_f32(NULL, 0, 1) == 1);
    CHECK(bp_all_finite_f64(xd, 0, 2) == 1);
    CHECK(bp_all_finite_f32(xf, n, 2) == 1 && bp_all_finite_f64(xd, n, 1));
    for (size_t w = 0; w < sizeof where / sizeof where[0]; w++) {
        xf[where[w]] = INFINITY;
        xd[where[w]] = NAN;
        CHECK(bp_all_finite_f32(xf, n, 1) == 0);
        CHECK(bp_all_finite_f32(xf, n, 2) == 0);
        CHECK(bp_all_finite_f64(xd, n, 1) == 0);
        xf[where[w]] = 3.0e38f;
        xd[where[w]] = 4.9e-324;
        CHECK(bp_all_finite_f32(xf, n, 1) == 1);
        CHECK(bp_all_finite_f64(xd, n, 2) == 1);
    }
}

int
main(void)
{
    bp_init();
    bp_init(); /* idempotent */
    check_layout();
    check_arch_and_sizes();
    check_status_and_config();
    check_finite();
    return check_report("test_layout");
}
