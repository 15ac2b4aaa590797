/* test_kernels.c - every compiled GEMM kernel the CPU runs against a naive
 * double-precision product, on awkward shapes and strides (transposed A and
 * B), with NaN-filled output for the overwrite case; then one small
 * training run through the public API (for the sanitizers' sake). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bpcore/bpcore.h"
#include "check.h"
#include "kernels.h"

static uint64_t rng_state = 88172645463325252ULL;

static double
uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Compare one kernel on one shape; trans_a/trans_b store A or B transposed. */
static void
check_shape(const kernel_table *t, int64_t m, int64_t n, int64_t k, int trans_a,
            int trans_b)
{
    float *A = malloc(sizeof(float) * (size_t)(m * k));
    float *B = malloc(sizeof(float) * (size_t)(k * n));
    float *C = malloc(sizeof(float) * (size_t)(m * n));
    double *Ad = malloc(sizeof(double) * (size_t)(m * k));
    double *Bd = malloc(sizeof(double) * (size_t)(k * n));
    double *Cd = malloc(sizeof(double) * (size_t)(m * n));
    float *sf = malloc(sizeof(float) * (size_t)GEMM_SCRATCH_ELEMS);
    double *sd = malloc(sizeof(double) * (size_t)GEMM_SCRATCH_ELEMS);
    int64_t rsa = trans_a ? 1 : k, csa = trans_a ? m : 1;
    int64_t rsb = trans_b ? 1 : n, csb = trans_b ? k : 1;
    int ok_f = 1, ok_d = 1;

    for (int64_t i = 0; i < m * k; i++) {
        A[i] = (float)uniform();
        Ad[i] = A[i];
    }
    for (int64_t i = 0; i < k * n; i++) {
        B[i] = (float)uniform();
        Bd[i] = B[i];
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int64_t i = 0; i < m * n; i++) {
            C[i] = pass == 0 ? NAN : 0.5f;
            Cd[i] = pass == 0 ? NAN : 0.5;
        }
        t->gemm_f32(C, n, A, rsa, csa, B, rsb, csb, m, n, k, pass, sf);
        t->gemm_f64(Cd, n, Ad, rsa, csa, Bd, rsb, csb, m, n, k, pass, sd);
        for (int64_t i = 0; i < m; i++) {
            for (int64_t j = 0; j < n; j++) {
                double s = pass ? 0.5 : 0.0, mag = pass ? 0.5 : 0.0;
                for (int64_t p = 0; p < k; p++) {
                    double v = Ad[i * rsa + p * csa] * Bd[p * rsb + j * csb];
                    s += v;
                    mag += fabs(v);
                }
                if (!(fabs(C[i * n + j] - s) <= 1e-5 * mag + 1e-6)) {
                    ok_f = 0;
                }
                if (!(fabs(Cd[i * n + j] - s) <= 1e-13 * mag + 1e-14)) {
                    ok_d = 0;
                }
            }
        }
    }
    if (!ok_f || !ok_d) {
        fprintf(stderr, "kernel %s shape m=%lld n=%lld k=%lld ta=%d tb=%d\n",
                t->name, (long long)m, (long long)n, (long long)k, trans_a,
                trans_b);
    }
    CHECK(ok_f);
    CHECK(ok_d);
    free(A);
    free(B);
    free(C);
    free(Ad);
    free(Bd);
    free(Cd);
    free(sf);
    free(sd);
}

/* Rows of a product do not depend on how many rows are computed at once:
 * a block small enough for the unpacked path (m <= GEMM_MC, k <= GEMM_KC)
 * gives the same bits as the packed loop nest on a taller A. */
static void
check_rows_independent(const kernel_table *t, int trans_a, int trans_b)
{
    const int64_t m = 130, n = 37, k = 100, few = 61;
    float *A = malloc(sizeof(float) * (size_t)(m * k));
    float *B = malloc(sizeof(float) * (size_t)(k * n));
    float *C = malloc(sizeof(float) * (size_t)(m * n));
    float *C2 = malloc(sizeof(float) * (size_t)(few * n));
    float *s = malloc(sizeof(float) * (size_t)GEMM_SCRATCH_ELEMS);
    int64_t rsa = trans_a ? 1 : k, csa = trans_a ? m : 1;
    int64_t rsb = trans_b ? 1 : n, csb = trans_b ? k : 1;
    for (int64_t i = 0; i < m * k; i++) {
        A[i] = (float)uniform();
    }
    for (int64_t i = 0; i < k * n; i++) {
        B[i] = (float)uniform();
    }
    t->gemm_f32(C, n, A, rsa, csa, B, rsb, csb, m, n, k, 0, s);
    t->gemm_f32(C2, n, A, rsa, csa, B, rsb, csb, few, n, k, 0, s);
    CHECK(memcmp(C, C2, sizeof(float) * (size_t)(few * n)) == 0);
    free(A);
    free(B);
    free(C);
    free(C2);
    free(s);
}

/* A narrow C (a few columns, many rows) may be computed transposed, as
 * C^T = B^T A^T; it must give the bits of the direct product.  The direct
 * product is what accumulating onto zeros computes (the kernel never
 * flips when accumulating, and 0 + x == x), on every layout, across the
 * depth blocking (k > GEMM_KC) and the flipped pass length (m > 512). */
static void
check_narrow_same_bits(const kernel_table *t)
{
    const int64_t ms[] = {5, 16, 40, 130, 600};
    const int64_t ns[] = {1, 4, 7, 8, 10, 13, 15};
    const int64_t ks[] = {7, 100, 300};
    int ok = 1;
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++) {
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
            for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
                int64_t m = ms[a], n = ns[b], k = ks[c];
                int ta = (int)((a + b) & 1), tb = (int)((b + c) & 1);
                int64_t rsa = ta ? 1 : k, csa = ta ? m : 1;
                int64_t rsb = tb ? 1 : n, csb = tb ? k : 1;
                size_t la = (size_t)(m * k), lb = (size_t)(k * n);
                size_t lc = (size_t)(m * n);
                float *A = malloc(sizeof(float) * la);
                float *B = malloc(sizeof(float) * lb);
                float *C = malloc(sizeof(float) * lc);
                float *C0 = calloc(lc, sizeof(float));
                double *Ad = malloc(sizeof(double) * la);
                double *Bd = malloc(sizeof(double) * lb);
                double *Cd = malloc(sizeof(double) * lc);
                double *Cd0 = calloc(lc, sizeof(double));
                float *sf = malloc(sizeof(float) * (size_t)GEMM_SCRATCH_ELEMS);
                double *sd =
                    malloc(sizeof(double) * (size_t)GEMM_SCRATCH_ELEMS);
                for (size_t i = 0; i < la; i++) {
                    Ad[i] = A[i] = (float)uniform();
                }
                for (size_t i = 0; i < lb; i++) {
                    Bd[i] = B[i] = (float)uniform();
                }
                t->gemm_f32(C, n, A, rsa, csa, B, rsb, csb, m, n, k, 0, sf);
                t->gemm_f32(C0, n, A, rsa, csa, B, rsb, csb, m, n, k, 1, sf);
                t->gemm_f64(Cd, n, Ad, rsa, csa, Bd, rsb, csb, m, n, k, 0,
                            sd);
                t->gemm_f64(Cd0, n, Ad, rsa, csa, Bd, rsb, csb, m, n, k, 1,
                            sd);
                for (size_t i = 0; i < lc; i++) {
                    if (!(C[i] == C0[i]) || !(Cd[i] == Cd0[i])) {
                        fprintf(stderr,
                                "kernel %s narrow m=%lld n=%lld k=%lld: "
                                "bits differ at %zu\n",
                                t->name, (long long)m, (long long)n,
                                (long long)k, i);
                        ok = 0;
                        break;
                    }
                }
                free(A);
                free(B);
                free(C);
                free(C0);
                free(Ad);
                free(Bd);
                free(Cd);
                free(Cd0);
                free(sf);
                free(sd);
            }
        }
    }
    CHECK(ok);
}

/* A row-major A is read in place by the tiles or packed first, depending
 * on its row stride (MR rows 4 KB apart share an L1 set, so such an A is
 * packed); both must give the same bits.  The same A is stored with row
 * stride k (read in place for these k) and 1024 (4 or 8 KB: packed), in
 * products on the packed path (k > GEMM_KC). */
static void
check_direct_a_same_bits(const kernel_table *t)
{
    const int64_t ms[] = {3, 14, 130, 250};
    const int64_t ns[] = {10, 33, 100};
    const int64_t ks[] = {300, 520, 784};
    const int64_t wide = 1024;
    int ok = 1;
    for (size_t a = 0; a < sizeof ms / sizeof ms[0]; a++) {
        for (size_t b = 0; b < sizeof ns / sizeof ns[0]; b++) {
            for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
                int64_t m = ms[a], n = ns[b], k = ks[c];
                size_t lc = (size_t)(m * n);
                float *A = malloc(sizeof(float) * (size_t)(m * k));
                float *Aw = malloc(sizeof(float) * (size_t)(m * wide));
                double *Ad = malloc(sizeof(double) * (size_t)(m * k));
                double *Adw = malloc(sizeof(double) * (size_t)(m * wide));
                float *B = malloc(sizeof(float) * (size_t)(k * n));
                double *Bd = malloc(sizeof(double) * (size_t)(k * n));
                float *C = malloc(sizeof(float) * lc);
                float *Cw = malloc(sizeof(float) * lc);
                double *Cd = malloc(sizeof(double) * lc);
                double *Cdw = malloc(sizeof(double) * lc);
                float *sf = malloc(sizeof(float) * (size_t)GEMM_SCRATCH_ELEMS);
                double *sd =
                    malloc(sizeof(double) * (size_t)GEMM_SCRATCH_ELEMS);
                for (int64_t i = 0; i < m; i++) {
                    for (int64_t p = 0; p < k; p++) {
                        float v = (float)uniform();
                        A[i * k + p] = Aw[i * wide + p] = v;
                        Ad[i * k + p] = Adw[i * wide + p] = v;
                    }
                }
                for (int64_t i = 0; i < k * n; i++) {
                    Bd[i] = B[i] = (float)uniform();
                }
                t->gemm_f32(C, n, A, k, 1, B, n, 1, m, n, k, 0, sf);
                t->gemm_f32(Cw, n, Aw, wide, 1, B, n, 1, m, n, k, 0, sf);
                t->gemm_f64(Cd, n, Ad, k, 1, Bd, n, 1, m, n, k, 0, sd);
                t->gemm_f64(Cdw, n, Adw, wide, 1, Bd, n, 1, m, n, k, 0, sd);
                if (memcmp(C, Cw, sizeof(float) * lc) != 0 ||
                    memcmp(Cd, Cdw, sizeof(double) * lc) != 0) {
                    fprintf(stderr,
                            "kernel %s A in place m=%lld n=%lld k=%lld: "
                            "bits differ from packed\n",
                            t->name, (long long)m, (long long)n,
                            (long long)k);
                    ok = 0;
                }
                free(A);
                free(Aw);
                free(Ad);
                free(Adw);
                free(B);
                free(Bd);
                free(C);
                free(Cw);
                free(Cd);
                free(Cdw);
                free(sf);
                free(sd);
            }
        }
    }
    CHECK(ok);
}

/*
 * One to four rows through wide, deep layers on 1 to 3 threads give the
 * bits of the packed product (the first rows of a 6-row call): the
 * few-row passes, their tails of constant width, and on a team the columns
 * or, for one row, the depth blocks shared out (share_depth, with its
 * block sums in the workspace's spare part, sized here exactly so that the
 * sanitizers see any overrun).  Float and double.
 */
static void
check_few_rows_predict(const kernel_table *t)
{
    static const int64_t shapes[][4] = {
        {784, 256, 128, 10}, {600, 240, 400, 5}, {2000, 120, 10, 0}};
    static const int32_t acts[3] = {BP_ACT_RELU, BP_ACT_TANH,
                                    BP_ACT_SOFTMAX};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t sizes[4], w_off[3], b_off[3], n_w, n_p;
        int n_layers = shapes[s][3] ? 4 : 3;
        int32_t a[3];
        memcpy(sizes, shapes[s], sizeof sizes);
        a[0] = acts[0];
        a[1] = n_layers == 4 ? acts[1] : BP_ACT_SOFTMAX;
        a[2] = BP_ACT_SOFTMAX;
        bp_arch arch = {n_layers, sizes, a, BP_LOSS_CE};
        int64_t n_in = sizes[0], n_out = sizes[n_layers - 1];
        CHECK(bp_layout(w_off, b_off, &n_w, &n_p, sizes, n_layers) == BP_OK);
        double *pd = malloc(sizeof(double) * (size_t)n_p);
        double *xd = malloc(sizeof(double) * (size_t)(6 * n_in));
        double *yd = malloc(sizeof(double) * (size_t)(6 * n_out));
        double *od = malloc(sizeof(double) * (size_t)(4 * n_out));
        float *pf = malloc(sizeof(float) * (size_t)n_p);
        float *xf = malloc(sizeof(float) * (size_t)(6 * n_in));
        float *yf = malloc(sizeof(float) * (size_t)(6 * n_out));
        float *of = malloc(sizeof(float) * (size_t)(4 * n_out));
        for (int64_t i = 0; i < n_p; i++) {
            pd[i] = pf[i] = (float)(0.1 * uniform());
        }
        for (int64_t i = 0; i < 6 * n_in; i++) {
            xd[i] = xf[i] = (float)uniform();
        }
        for (int nt = 1; nt <= 3; nt++) {
            int64_t bytes6 = 0;
            CHECK(bp_predict_workspace_size(&bytes6, &arch, 6, nt) == BP_OK);
            void *w6 = malloc((size_t)bytes6);
            predict_args_f32 a6 = {yf, xf, pf, &arch, 6, w6, bytes6, nt, 0};
            predict_args_f64 d6 = {yd, xd, pd, &arch, 6, w6, bytes6, nt, 0};
            CHECK(t->predict_f32(&a6) == BP_OK);
            CHECK(t->predict_f64(&d6) == BP_OK);
            for (int64_t m = 1; m <= 4; m++) {
                int64_t bytes = 0;
                CHECK(bp_predict_workspace_size(&bytes, &arch, m, nt) ==
                      BP_OK);
                void *w = malloc((size_t)bytes);
                predict_args_f32 a1 = {of, xf, pf, &arch, m, w, bytes, nt, 0};
                predict_args_f64 d1 = {od, xd, pd, &arch, m, w, bytes, nt, 0};
                CHECK(t->predict_f32(&a1) == BP_OK);
                CHECK(memcmp(of, yf, sizeof(float) * (size_t)(m * n_out)) ==
                      0);
                CHECK(t->predict_f64(&d1) == BP_OK);
                CHECK(memcmp(od, yd, sizeof(double) * (size_t)(m * n_out)) ==
                      0);
                free(w);
            }
            free(w6);
        }
        free(pd);
        free(xd);
        free(yd);
        free(od);
        free(pf);
        free(xf);
        free(yf);
        free(of);
    }
}

/* A team's product gives one thread's bits however it shares the work:
 * products wide enough for the team to hand out their columns in chunks
 * (gemm/product.h, product_chunks: n at least CHUNKS_PER_THREAD chunks of
 * 2 NR columns per thread; 300 columns in chunks on two threads, not on
 * three, with AVX-512) and narrower ones (100 columns: slices with every
 * table), on the three layouts of a layer's
 * products, with a partial last chunk (n = 1050), rows not a multiple of
 * any tile (250), depths not a multiple of GEMM_KC, A packed (rows of 4 KB
 * and A stored transposed) and read in place (the other row-major A); 2
 * and 3 threads against 1, and against a double product within rounding. */
static void
check_team_matmul(const kernel_table *t)
{
    static const int64_t shapes[][5] = {
        /* m, n, k, trans_a, trans_b */
        {32, 1024, 1024, 0, 0}, {400, 1024, 100, 1, 0},
        {60, 1024, 520, 0, 1}, {50, 1050, 1000, 0, 0},
        {250, 1050, 300, 1, 1}, {64, 2048, 600, 0, 1}, {40, 300, 700, 0, 0},
        {40, 100, 700, 0, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int64_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        int ta = (int)shapes[s][3], tb = (int)shapes[s][4];
        float *A = malloc(sizeof(float) * (size_t)(m * k));
        float *B = malloc(sizeof(float) * (size_t)(k * n));
        float *C1 = malloc(sizeof(float) * (size_t)(m * n));
        float *Cn = malloc(sizeof(float) * (size_t)(m * n));
        double *Ad = malloc(sizeof(double) * (size_t)(m * k));
        double *Bd = malloc(sizeof(double) * (size_t)(k * n));
        double *D1 = malloc(sizeof(double) * (size_t)(m * n));
        double *Dn = malloc(sizeof(double) * (size_t)(m * n));
        int64_t rsa = ta ? 1 : k, csa = ta ? m : 1;
        int64_t rsb = tb ? 1 : n, csb = tb ? k : 1;
        int close = 1;
        for (int64_t i = 0; i < m * k; i++) {
            Ad[i] = A[i] = (float)uniform();
        }
        for (int64_t i = 0; i < k * n; i++) {
            Bd[i] = B[i] = (float)uniform();
        }
        matmul_args_f32 af = {C1, A, B, m, n, k, ta, tb, 1};
        matmul_args_f64 ad = {D1, Ad, Bd, m, n, k, ta, tb, 1};
        CHECK(t->matmul_f32(&af) == BP_OK);
        CHECK(t->matmul_f64(&ad) == BP_OK);
        for (int nt = 2; nt <= 3; nt++) {
            for (int64_t i = 0; i < m * n; i++) {
                Cn[i] = NAN;
                Dn[i] = NAN;
            }
            af.C = Cn;
            ad.C = Dn;
            af.n_threads = ad.n_threads = nt;
            CHECK(t->matmul_f32(&af) == BP_OK);
            CHECK(t->matmul_f64(&ad) == BP_OK);
            CHECK(memcmp(C1, Cn, sizeof(float) * (size_t)(m * n)) == 0);
            CHECK(memcmp(D1, Dn, sizeof(double) * (size_t)(m * n)) == 0);
        }
        /* a sample of entries against the double sum */
        for (int64_t e = 0; e < m * n; e += 997) {
            int64_t i = e / n, j = e % n;
            double sum = 0.0, mag = 0.0;
            for (int64_t p = 0; p < k; p++) {
                double v = Ad[i * rsa + p * csa] * Bd[p * rsb + j * csb];
                sum += v;
                mag += fabs(v);
            }
            close &= fabs(C1[e] - sum) <= 1e-5 * mag + 1e-6;
            close &= fabs(D1[e] - sum) <= 1e-13 * mag + 1e-14;
        }
        CHECK(close);
        free(A);
        free(B);
        free(C1);
        free(Cn);
        free(Ad);
        free(Bd);
        free(D1);
        free(Dn);
    }
}

static void
check_kernel(const kernel_table *t)
{
    check_few_rows_predict(t);
    check_team_matmul(t);
    check_narrow_same_bits(t);
    check_direct_a_same_bits(t);
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            check_rows_independent(t, ta, tb);
        }
    }
    /* 1, tile edges (MR 6/8/14, NR 8/16/32 +-1), primes, k = 1, KC + 1,
     * MC + 1, the AVX-512 float row block (112) + 1 */
    const int64_t dims[] = {1, 5, 7, 9, 13, 15, 17, 29, 33, 61, 113, 121};
    const int64_t ks[] = {1, 3, 16, 257};
    for (size_t a = 0; a < sizeof dims / sizeof dims[0]; a++) {
        for (size_t b = 0; b < sizeof dims / sizeof dims[0]; b += 2) {
            for (size_t c = 0; c < sizeof ks / sizeof ks[0]; c++) {
                check_shape(t, dims[a], dims[b], ks[c], (int)(a & 1),
                            (int)((b / 2 + c) & 1));
            }
        }
    }
    /* crosses MC, NC and KC; and a depth that is a multiple of every
     * vector length, with B stored either way */
    for (int tb = 0; tb < 2; tb++) {
        check_shape(t, 130, 1030, 300, 0, tb);
        check_shape(t, 241, 47, 300, 1, tb);
        check_shape(t, 13, 35, 64, 1, tb);
    }
}

/* A small training problem for the public API: 13-17-9-3 (tanh, relu,
 * softmax, cross-entropy), 101 samples, SGD with momentum, batches of 10. */
typedef struct {
    int64_t sizes[4];
    int32_t acts[3];
    bp_arch arch;
    int64_t n_p, m, bytes;
    float *params, *grad, *X, *Y, *s1;
    int64_t *order, *labels;
    bp_optim opt;
    void *work;
} problem;

static void
problem_make(problem *P)
{
    int64_t w_off[3], b_off[3], n_w;
    const int64_t sizes[4] = {13, 17, 9, 3};
    const int32_t acts[3] = {BP_ACT_TANH, BP_ACT_RELU, BP_ACT_SOFTMAX};
    const bp_optim opt = {BP_OPT_SGD, 1, 0.05, 0.9, 0.01, 0.9, 0.999, 1e-8,
                          0, NULL, NULL};
    int64_t m = 101;

    memcpy(P->sizes, sizes, sizeof sizes);
    memcpy(P->acts, acts, sizeof acts);
    P->arch = (bp_arch){4, P->sizes, P->acts, BP_LOSS_CE};
    P->m = m;
    P->opt = opt;
    CHECK(bp_layout(w_off, b_off, &n_w, &P->n_p, P->sizes, 4) == BP_OK);
    P->params = calloc((size_t)P->n_p, sizeof(float));
    P->grad = calloc((size_t)P->n_p, sizeof(float));
    P->s1 = calloc((size_t)P->n_p, sizeof(float));
    P->X = malloc(sizeof(float) * (size_t)(m * 13));
    P->Y = calloc((size_t)(m * 3), sizeof(float));
    P->order = malloc(sizeof(int64_t) * (size_t)m);
    P->labels = malloc(sizeof(int64_t) * (size_t)m);
    for (int64_t i = 0; i < n_w; i++) {
        P->params[i] = (float)(0.3 * uniform());
    }
    for (int64_t i = 0; i < m * 13; i++) {
        P->X[i] = (float)uniform();
    }
    for (int64_t i = 0; i < m; i++) {
        P->Y[i * 3 + (i % 3)] = 1.0f;
        P->labels[i] = i % 3;
        P->order[i] = (i * 37) % m; /* a permutation: 37 is prime to 101 */
    }
    P->opt.state1 = P->s1;
    CHECK(bp_train_workspace_size(&P->bytes, &P->arch, 10, 2) == BP_OK);
    P->work = malloc((size_t)P->bytes);
}

static void
problem_free(problem *P)
{
    free(P->params);
    free(P->grad);
    free(P->s1);
    free(P->X);
    free(P->Y);
    free(P->order);
    free(P->labels);
    free(P->work);
}

/* A run over every batch; too little workspace and batches past the end
 * are refused. */
static void
check_train_runs(problem *P)
{
    double lsum = 0.0, wsum = 0.0;
    int64_t done = 0, m = P->m;

    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, NULL, NULL, P->order, m, 10, 0, 11,
                       &P->arch, P->work, P->bytes, 2,
                       BP_CUT_AUTO) == BP_OK);
    CHECK(done == 11 && P->opt.t == 11 && isfinite(lsum) && wsum == 101.0);
    /* too little workspace is refused, not overrun */
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, NULL, NULL, P->order, m, 10, 0, 1,
                       &P->arch, P->work, 100, 2,
                       BP_CUT_AUTO) == BP_ENOMEM);
    /* batches past the end are refused */
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, NULL, NULL, P->order, m, 10, 5, 7,
                       &P->arch, P->work, P->bytes, 2,
                       BP_CUT_AUTO) == BP_ESHAPE);
}

/* Class indices train exactly as their one-hot rows, shuffled or not, on
 * 1 and 2 threads. */
static void
check_labels_as_onehot(problem *P)
{
    size_t pbytes = sizeof(float) * (size_t)P->n_p;
    float *p1 = malloc(pbytes), *p2 = malloc(pbytes);
    int64_t done = 0;

    for (int shuffled = 0; shuffled < 2; shuffled++) {
        for (int nt = 1; nt <= 2; nt++) {
            int64_t *ord = shuffled ? P->order : NULL;
            double l1 = 0.0, w1 = 0.0, l2 = 0.0, w2 = 0.0;
            memcpy(p1, P->params, pbytes);
            memcpy(p2, P->params, pbytes);
            memset(P->s1, 0, pbytes);
            P->opt.t = 0;
            CHECK(bp_train_f32(p1, P->grad, &P->opt, &l1, &w1, &done, P->X,
                               P->Y, NULL, NULL, ord, P->m, 10, 0, 11,
                               &P->arch, P->work, P->bytes, nt,
                               BP_CUT_AUTO) == BP_OK);
            memset(P->s1, 0, pbytes);
            P->opt.t = 0;
            CHECK(bp_train_f32(p2, P->grad, &P->opt, &l2, &w2, &done, P->X,
                               NULL, P->labels, NULL, ord, P->m, 10, 0, 11,
                               &P->arch, P->work, P->bytes, nt,
                               BP_CUT_AUTO) == BP_OK);
            CHECK(memcmp(p1, p2, pbytes) == 0);
            CHECK(l1 == l2 && w1 == w2 && done == 11);
        }
    }
    free(p1);
    free(p2);
}

/* Exactly one of Y and labels; labels in range. */
static void
check_train_refusals(problem *P)
{
    double lsum = 0.0, wsum = 0.0;
    int64_t done = 0, m = P->m;

    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, P->labels, NULL, NULL, m, 10, 0, 1,
                       &P->arch, P->work, P->bytes, 1,
                       BP_CUT_AUTO) == BP_EARG);
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, NULL, NULL, NULL, NULL, m, 10, 0, 1, &P->arch,
                       P->work, P->bytes, 1,
                       BP_CUT_AUTO) == BP_EARG);
    P->labels[50] = 3;
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, NULL, P->labels, NULL, NULL, m, 10, 0, 1,
                       &P->arch, P->work, P->bytes, 1,
                       BP_CUT_AUTO) == BP_EARG);
    P->labels[50] = -1;
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, NULL, P->labels, NULL, NULL, m, 10, 0, 1,
                       &P->arch, P->work, P->bytes, 1,
                       BP_CUT_AUTO) == BP_EARG);
    P->labels[50] = 50 % 3;
    /* a cut that bp_cut does not name */
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, NULL, NULL, NULL, m, 10, 0, 1, &P->arch,
                       P->work, P->bytes, 1, 3) == BP_EARG);
    CHECK(bp_train_f32(P->params, P->grad, &P->opt, &lsum, &wsum, &done,
                       P->X, P->Y, NULL, NULL, NULL, m, 10, 0, 1, &P->arch,
                       P->work, P->bytes, 1, -1) == BP_EARG);
}

/* predict gives the same bits on 1 and 2 threads. */
static void
check_predict_threads(const problem *P)
{
    int64_t bytes = 0, m = P->m;
    float *out = malloc(sizeof(float) * (size_t)(m * 3));
    float *out2 = malloc(sizeof(float) * (size_t)(m * 3));
    void *work;

    CHECK(bp_predict_workspace_size(&bytes, &P->arch, 101, 2) == BP_OK);
    work = malloc((size_t)bytes);
    CHECK(bp_predict_f32(out, P->X, P->params, &P->arch, m, work, bytes, 2) ==
          BP_OK);
    CHECK(bp_predict_f32(out2, P->X, P->params, &P->arch, m, work, bytes, 1) ==
          BP_OK);
    CHECK(memcmp(out, out2, sizeof(float) * (size_t)(m * 3)) == 0);
    /* the checked call gives the same bits on finite input, and
     * BP_ENONFINITE for a NaN or an infinity in the last row */
    for (int nt = 1; nt <= 2; nt++) {
        float *X = malloc(sizeof(float) * (size_t)(m * P->arch.sizes[0]));
        int64_t last = (m - 1) * P->arch.sizes[0];
        memcpy(X, P->X, sizeof(float) * (size_t)(m * P->arch.sizes[0]));
        CHECK(bp_predict_checked_f32(out2, X, P->params, &P->arch, m, work,
                                     bytes, nt) == BP_OK);
        CHECK(memcmp(out, out2, sizeof(float) * (size_t)(m * 3)) == 0);
        X[last + 1] = NAN;
        CHECK(bp_predict_checked_f32(out2, X, P->params, &P->arch, m, work,
                                     bytes, nt) == BP_ENONFINITE);
        X[last + 1] = -INFINITY;
        CHECK(bp_predict_checked_f32(out2, X, P->params, &P->arch, 1, work,
                                     bytes, nt) == BP_OK);
        CHECK(bp_predict_checked_f32(out2, X + last, P->params, &P->arch, 1,
                                     work, bytes, nt) == BP_ENONFINITE);
        free(X);
    }
    free(work);
    free(out);
    free(out2);
}

/* One small training run through the public API, for the sanitizers'
 * sake, with its refusals. */
static void
check_training(void)
{
    problem P;
    problem_make(&P);
    check_train_runs(&P);
    check_labels_as_onehot(&P);
    check_train_refusals(&P);
    check_predict_threads(&P);
    problem_free(&P);
}

int
main(void)
{
    bp_init();
    check_kernel(&kernel_table_ref);
#if defined(BPCORE_HAVE_AVX2) && defined(__GNUC__)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        check_kernel(&kernel_table_avx2);
    }
#endif
#if defined(BPCORE_HAVE_AVX512) && defined(__GNUC__)
#ifdef BPCORE_AVX512_ON_AVX2
    /* the AVX-512 table built with AVX2 flags (a testing aid) */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        check_kernel(&kernel_table_avx512);
    }
#else
    if (__builtin_cpu_supports("avx512f")) {
        check_kernel(&kernel_table_avx512);
    }
#endif
#endif
    check_training();
    return check_report("test_kernels");
}
