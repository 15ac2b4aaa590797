/*
 * net/tiny.h - the tiny-network path (a fragment of net_impl.h): samples
 * side by side in vector lanes, a sample's whole chain in registers.
 */

/*
 * The tiny-network path.  A group of TINY_LANES samples is held as
 * arrays [unit][lane], so every loop over lanes vectorises; activations
 * reuse the row functions on one unit's lanes.  The forward values are
 * computed as dense_rows does (b + sum over inputs in order), so they
 * equal predict's bits.
 */
typedef T FN(lanes)[TINY_LANES];

/* Loss and output delta for one group (loss_lanes); returns the
 * weighted loss sum of its nl samples, in lane order.
 * z, h: output net and out [n][lanes]; Y rows; scale[l] = s_l / S. */
static INLINE double
FN(tiny_loss)(FN(lanes) *d, FN(lanes) *z, FN(lanes) *h, const T *Y,
              const T *sw, int64_t i0, int nl, int64_t n,
              const bp_arch *arch, const T *scale, const int LN)
{
    double li[TINY_LANES], total = 0.0;
    FN(loss_lanes)(li, d[0], z[0], h[0], TINY_LANES, Y + i0 * n, n, nl,
                   scale, arch, LN);
    for (int l = 0; l < nl; l++) {
        total = sw != NULL ? MULADD64((double)sw[i0 + l], li[l], total)
                           : total + li[l];
    }
    return total;
}

/*
 * A group's inputs and scales: h0 = the rows of samples i0.. in lanes
 * (padding lanes 0), scale[l] = s_l / S (padding lanes 0).
 *   h0 [n_0][lanes] out;  scale [lanes] out;  X (m, n_0), sw (m) in
 */
static INLINE void
FN(tiny_load)(FN(lanes) *h0, T *scale, const T *X, const T *sw, int64_t n0,
              int64_t i0, int nl, double S, const int LN)
{
    for (int64_t a = 0; a < n0; a++) {
        for (int l = 0; l < LN; l++) {
            h0[a][l] = l < nl ? X[(i0 + l) * n0 + a] : (T)0;
        }
    }
    if (sw == NULL) {
        T s1 = (T)(1.0 / S); /* (double)1 / S, as below */
        for (int l = 0; l < LN; l++) {
            scale[l] = l < nl ? s1 : (T)0;
        }
    } else {
        for (int l = 0; l < LN; l++) {
            T s_l = l < nl ? sw[i0 + l] : (T)0;
            scale[l] = (T)((double)s_l / S);
        }
    }
}

/*
 * A dense layer forward for a group: z = x W + b (b + sum over inputs in
 * order, as dense_rows), then h = f(z), lanes side by side.
 *   z, h [n_out][lanes] out;  x [n_in][lanes] in
 *   W (n_in, n_out), b (n_out) in
 */
static INLINE void
FN(tiny_dense_forward)(FN(lanes) *restrict z, FN(lanes) *restrict h,
                       const FN(lanes) *restrict x,
                       const T *W, const T *b, int64_t n_in, int64_t n_out,
                       int act, const int LN)
{
    for (int64_t j = 0; j < n_out; j++) {
        for (int l = 0; l < LN; l++) {
            z[j][l] = b[j];
        }
        for (int64_t a = 0; a < n_in; a++) {
            T w = W[a * n_out + j];
            for (int l = 0; l < LN; l++) {
                z[j][l] = MULADD(x[a][l], w, z[j][l]);
            }
        }
    }
    if (act == BP_ACT_SOFTMAX) {
        /* softmax needs a sample's whole row */
        for (int l = 0; l < LN; l++) {
            T row[TINY_MAXW];
            for (int64_t j = 0; j < n_out; j++) {
                row[j] = z[j][l];
            }
            FN(act_row)(row, row, n_out, BP_ACT_SOFTMAX);
            for (int64_t j = 0; j < n_out; j++) {
                h[j][l] = row[j];
            }
        }
    } else {
        for (int64_t j = 0; j < n_out; j++) {
            FN(act_row)(h[j], z[j], LN, act);
        }
    }
}

/*
 * A dense layer backward for a group: the lane sums aw += x^T d and
 * ab += d; then, when the input is a hidden layer (act_in >= 0), its delta
 * dx = f'(z_in) * (d W^T).
 *   aw [n_in * n_out][lanes], ab [n_out][lanes] inout
 *   dx [n_in][lanes] out;  d [n_out][lanes] in
 *   x, z_in [n_in][lanes] in: the layer's input (h below) and its net
 */
static INLINE void
FN(tiny_dense_backward)(FN(lanes) *restrict aw,
                        double (*restrict ab)[TINY_LANES],
                        FN(lanes) *restrict dx, const FN(lanes) *restrict d,
                        const FN(lanes) *restrict x,
                        const FN(lanes) *restrict z_in, const T *W, int64_t n_in,
                        int64_t n_out, int act_in, const int LN)
{
    for (int64_t a = 0; a < n_in; a++) {
        for (int64_t j = 0; j < n_out; j++) {
            for (int l = 0; l < LN; l++) {
                aw[a * n_out + j][l] = MULADD(x[a][l], d[j][l],
                                              aw[a * n_out + j][l]);
            }
        }
    }
    for (int64_t j = 0; j < n_out; j++) {
        for (int l = 0; l < LN; l++) {
            ab[j][l] += (double)d[j][l];
        }
    }
    if (act_in < 0) {
        return;
    }
    for (int64_t a = 0; a < n_in; a++) {
        for (int l = 0; l < LN; l++) {
            dx[a][l] = 0;
        }
        for (int64_t j = 0; j < n_out; j++) {
            T w = W[a * n_out + j];
            for (int l = 0; l < LN; l++) {
                dx[a][l] = MULADD(d[j][l], w, dx[a][l]);
            }
        }
        FN(act_grad_row)(dx[a], z_in[a], x[a], LN, act_in);
    }
}

/* part[p] = the sum over lanes of accumulator p, in lane order: the n_wt
 * weights (accw), then the biases (accb) up to n_p. */
static INLINE void
FN(tiny_lane_sums)(double *part, const FN(lanes) *accw,
                   double (*accb)[TINY_LANES], int64_t n_wt, int64_t n_p,
                   const int LN)
{
    for (int64_t p = 0; p < n_wt; p++) {
        double s = 0.0;
        for (int l = 0; l < LN; l++) {
            s += (double)accw[p][l];
        }
        part[p] = s;
    }
    for (int64_t p = n_wt; p < n_p; p++) {
        double s = 0.0;
        for (int l = 0; l < LN; l++) {
            s += accb[p - n_wt][l];
        }
        part[p] = s;
    }
}

/*
 * Gradient sums of samples [r0, r1) (at most TINY_CHUNK) into part: the
 * n_p parameter sums, then the weighted loss sum.  LN lanes per group (a
 * constant after inlining: 16, or 1 for short chunks).  Groups of LN
 * samples go forward, through the loss and backward; each lane keeps its
 * own sums, added up at the end.
 */
static INLINE void
FN(tiny_chunk_lanes)(double *part, const T *X, const T *Y, const T *sw,
                     const T *params, const bp_arch *arch,
                     const int64_t *w_off, const int64_t *b_off, int64_t n_p,
                     int64_t r0, int64_t r1, double S, const int LN)
{
    int64_t L = arch->n_layers - 1;
    const int64_t *sz = arch->sizes;
    FN(lanes) z[TINY_MAXL + 1][TINY_MAXW], h[TINY_MAXL + 1][TINY_MAXW];
    FN(lanes) d[TINY_MAXW], dp[TINY_MAXW], scale;
    FN(lanes) accw[TINY_MAXL * TINY_MAXW * TINY_MAXW];
    double accb[TINY_MAXL * TINY_MAXW][TINY_LANES];
    int64_t n_wt = b_off[0];
    double lsum = 0.0;

    for (int64_t p = 0; p < n_wt; p++) {
        for (int l = 0; l < LN; l++) {
            accw[p][l] = 0;
        }
    }
    for (int64_t p = 0; p < n_p - n_wt; p++) {
        for (int l = 0; l < LN; l++) {
            accb[p][l] = 0;
        }
    }
    for (int64_t i0 = r0; i0 < r1; i0 += LN) {
        int nl = r1 - i0 < LN ? (int)(r1 - i0) : LN;
        FN(tiny_load)(h[0], scale, X, sw, sz[0], i0, nl, S, LN);
        for (int64_t k = 0; k < L; k++) {
            FN(tiny_dense_forward)(z[k + 1], h[k + 1], h[k], params + w_off[k],
                                   params + b_off[k], sz[k], sz[k + 1],
                                   arch->acts[k], LN);
        }
        lsum += FN(tiny_loss)(d, z[L], h[L], Y, sw, i0, nl, sz[L], arch,
                              scale, LN);
        for (int64_t k = L - 1; k >= 0; k--) {
            FN(tiny_dense_backward)(accw + w_off[k], accb + (b_off[k] - n_wt),
                                    dp, d, h[k], z[k], params + w_off[k],
                                    sz[k], sz[k + 1],
                                    k > 0 ? arch->acts[k - 1] : -1, LN);
            for (int64_t a = 0; k > 0 && a < sz[k]; a++) {
                for (int l = 0; l < LN; l++) {
                    d[a][l] = dp[a][l];
                }
            }
        }
    }
    FN(tiny_lane_sums)(part, accw, accb, n_wt, n_p, LN);
    part[n_p] = lsum;
}

static void
FN(tiny_chunk)(double *part, const T *X, const T *Y, const T *sw,
               const T *params, const bp_arch *arch, const int64_t *w_off,
               const int64_t *b_off, int64_t n_p, int64_t r0, int64_t r1,
               double S)
{
    if (r1 - r0 < TINY_LANES / 2) {
        FN(tiny_chunk_lanes)(part, X, Y, sw, params, arch, w_off, b_off, n_p,
                             r0, r1, S, 1);
    } else {
        FN(tiny_chunk_lanes)(part, X, Y, sw, params, arch, w_off, b_off, n_p,
                             r0, r1, S, TINY_LANES);
    }
}

/*
 * Loss and gradient of a batch on the tiny path (work-shared over chunks,
 * then over parameters).  part holds (TINY_MAXP + 1) doubles per chunk.
 * Returns the loss on every thread.  Ends with a barrier.
 */
static double
FN(tiny_backward_body)(T *grad, double *part, double *wsum, const T *X,
                       const T *Y, const T *sw, const T *params,
                       const bp_arch *arch, const int64_t *w_off,
                       const int64_t *b_off, int64_t m)
{
    int64_t n_p = b_off[arch->n_layers - 2] + arch->sizes[arch->n_layers - 1];
    int64_t n_chunks = (m + TINY_CHUNK - 1) / TINY_CHUNK;
    int64_t stride = TINY_MAXP + 1;
    double S = FN(weight_sum)(sw, m), loss = 0.0;

    *wsum = S;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < n_chunks; c++) {
        int64_t r0 = c * TINY_CHUNK;
        int64_t r1 = r0 + TINY_CHUNK < m ? r0 + TINY_CHUNK : m;
        FN(tiny_chunk)(part + c * stride, X, Y, sw, params, arch, w_off,
                       b_off, n_p, r0, r1, S);
    }
#pragma omp for schedule(static)
    for (int64_t p = 0; p < n_p; p++) {
        double s = 0.0;
        for (int64_t c = 0; c < n_chunks; c++) {
            s += part[c * stride + p];
        }
        grad[p] = (T)s;
    }
    for (int64_t c = 0; c < n_chunks; c++) {
        loss += part[c * stride + n_p];
    }
    return loss / S;
}
