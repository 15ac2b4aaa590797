/*
 * net/team.h - what the team choice needs from the network code (a
 * fragment of net_impl.h): the calibration chain that calibrate.c times
 * (a training batch's synchronisations are train_syncs, internal.h).
 */

/* The calibration chain's activation, x <- max(x, 0) / 2 on a slice of
 * a step's output (CAL_N wide), as a layer's epilogue. */
static void
FN(cal_fin)(const void *ctx, int64_t r0, int64_t r1, int64_t c0, int64_t c1)
{
    T *dst = (T *)ctx;
    for (int64_t i = r0; i < r1; i++) {
        for (int64_t j = c0; j < c1; j++) {
            T v = dst[i * CAL_N + j];
            dst[i * CAL_N + j] = v > 0 ? v * (T)0.5 : (T)0;
        }
    }
}

/*
 * The calibration chain (see calibrate.c): reps steps of x <- x W with x
 * (CAL_M, CAL_N) and W (CAL_N, CAL_N), each step reading the whole output
 * of the one before, shared by the team as training shares a layer's
 * products (product_team: each thread's slice, its epilogue, then one
 * barrier).  work holds 2 CAL_M x CAL_N buffers, W, and the team's kernel
 * scratch.
 */
static void
FN(cal_chain_region)(T *work, int64_t reps)
{
    T *x[2], *W = work + 2 * CAL_M * CAL_N;
    T *scratch = W + CAL_N * CAL_N;
    x[0] = work;
    x[1] = work + CAL_M * CAL_N;
    for (int64_t r = 0; r < reps; r++) {
        T *src = x[r & 1], *dst = x[(r + 1) & 1];
        FN(epilogue) epi = {FN(cal_fin), dst, 0};
        FN(product_team)(dst, CAL_N, src, CAL_N, 1, W, CAL_N, 1, CAL_M,
                         CAL_N, CAL_N, scratch, &epi, 1);
    }
}

/* Seconds per step of the calibration chain on nt threads, best of
 * trials; a negative value when out of memory. */
static double
FN(cal_chain)(int nt, int64_t reps, int trials)
{
    int64_t n = 2 * CAL_M * CAL_N + CAL_N * CAL_N;
    T *work = (T *)malloc(((size_t)n + (size_t)nt * GEMM_SCRATCH_ELEMS) *
                          sizeof(T));
    double best = -1.0;
    if (work == NULL) {
        return -1.0;
    }
    for (int64_t i = 0; i < n; i++) {
        work[i] = (T)((i * 7 % 13) - 6) * (T)0.01;
    }
    RUN_TEAM(nt, FN(cal_chain_region)(work, 2));  /* warm the team */
    for (int t = 0; t < trials; t++) {
        double t0 = cal_now(), dt;
        RUN_TEAM(nt, FN(cal_chain_region)(work, reps));
        dt = (cal_now() - t0) / (double)reps;
        if (best < 0 || dt < best) {
            best = dt;
        }
    }
    free(work);
    return best;
}
