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
 * Gradient sums of samples [r0, r1) (at most TINY_CHUNK) into part: the
 * n_p parameter sums, then the weighted loss sum.  LN lanes per group (a
 * constant after inlining: 16, or 1 for online learning).
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
        for (int64_t a = 0; a < sz[0]; a++) {
            for (int l = 0; l < LN; l++) {
                h[0][a][l] = l < nl ? X[(i0 + l) * sz[0] + a] : (T)0;
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
        for (int64_t k = 0; k < L; k++) {
            const T *W = params + w_off[k], *b = params + b_off[k];
            int64_t n_in = sz[k], n_out = sz[k + 1];
            for (int64_t j = 0; j < n_out; j++) {
                for (int l = 0; l < LN; l++) {
                    z[k + 1][j][l] = b[j];
                }
                for (int64_t a = 0; a < n_in; a++) {
                    T w = W[a * n_out + j];
                    for (int l = 0; l < LN; l++) {
                        z[k + 1][j][l] = MULADD(h[k][a][l], w, z[k + 1][j][l]);
                    }
                }
            }
            if (arch->acts[k] == BP_ACT_SOFTMAX) {
                for (int l = 0; l < LN; l++) {
                    T row[TINY_MAXW];
                    for (int64_t j = 0; j < n_out; j++) {
                        row[j] = z[k + 1][j][l];
                    }
                    FN(act_row)(row, row, n_out, BP_ACT_SOFTMAX);
                    for (int64_t j = 0; j < n_out; j++) {
                        h[k + 1][j][l] = row[j];
                    }
                }
            } else {
                for (int64_t j = 0; j < n_out; j++) {
                    FN(act_row)(h[k + 1][j], z[k + 1][j], LN,
                                arch->acts[k]);
                }
            }
        }
        lsum += FN(tiny_loss)(d, z[L], h[L], Y, sw, i0, nl, sz[L], arch,
                              scale, LN);
        for (int64_t k = L - 1; k >= 0; k--) {
            int64_t n_in = sz[k], n_out = sz[k + 1];
            const T *W = params + w_off[k];
            FN(lanes) *aw = accw + w_off[k];
            double (*ab)[TINY_LANES] = accb + (b_off[k] - n_wt);
            for (int64_t a = 0; a < n_in; a++) {
                for (int64_t j = 0; j < n_out; j++) {
                    for (int l = 0; l < LN; l++) {
                        aw[a * n_out + j][l] = MULADD(h[k][a][l], d[j][l],
                                                      aw[a * n_out + j][l]);
                    }
                }
            }
            for (int64_t j = 0; j < n_out; j++) {
                for (int l = 0; l < LN; l++) {
                    ab[j][l] += (double)d[j][l];
                }
            }
            if (k == 0) {
                break;
            }
            for (int64_t a = 0; a < n_in; a++) {
                for (int l = 0; l < LN; l++) {
                    dp[a][l] = 0;
                }
                for (int64_t j = 0; j < n_out; j++) {
                    T w = W[a * n_out + j];
                    for (int l = 0; l < LN; l++) {
                        dp[a][l] = MULADD(d[j][l], w, dp[a][l]);
                    }
                }
                FN(act_grad_row)(dp[a], z[k][a], h[k][a], LN,
                                 arch->acts[k - 1]);
            }
            for (int64_t a = 0; a < n_in; a++) {
                for (int l = 0; l < LN; l++) {
                    d[a][l] = dp[a][l];
                }
            }
        }
    }
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
