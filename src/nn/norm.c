/* norm.c -- RMSNorm, FusedRMSNormGated (norm * w * silu(g)) and L2Norm,
 * forward and backward. Row statistics in double. */
#include "nn.h"

#include <math.h>
#include <string.h>

#define COLS 64
#define ROW_MAX 1024 /* widest row whose gate sigmoids rms_bwd keeps on the stack */

static inline float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* ---------------------------------------------------------------- RMSNorm
 * shared by the plain and the gated form: g == NULL means no gate */

/* y [N,D] = x * rstd * w (+ b) (* silu(g));  rstd [N] */
static void rms_fwd(float *y, float *rstd, const float *x, const float *g, const float *w, const float *b, int N,
                    int D, float eps)
{
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < D; i++) {
            ss += (double)xr[i] * xr[i];
        }
        float r = (float)(1.0 / sqrt(ss / D + (double)eps));
        if (rstd) {
            rstd[n] = r;
        }
        const float *gr = g ? g + (size_t)n * D : NULL;
        float sg[ROW_MAX];
        if (gr && D <= ROW_MAX) {
            lina_vsigmoid(sg, gr, (size_t)D);
        }
        for (int i = 0; i < D; i++) {
            float v = xr[i] * r;
            v = w ? v * w[i] : v;
            v = b ? v + b[i] : v;
            if (gr) {
                v *= gr[i] * (D <= ROW_MAX ? sg[i] : sigmoidf_(gr[i]));
            }
            yr[i] = v;
        }
    }
}

/* cotangent of the normalised-and-scaled value n = x*rstd*w: dy, or dy*silu(g) */
static inline float rms_dn(const float *dy, const float *g, size_t k)
{
    return g ? dy[k] * g[k] * sigmoidf_(g[k]) : dy[k];
}

static void rms_bwd(float *dx, float *dg, float *dw, float *db, const float *dy, const float *x, const float *g,
                    const float *w, const float *rstd, int N, int D)
{
    if (dx || dg) {
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
        for (int n = 0; n < N; n++) {
            size_t o = (size_t)n * D;
            float r = rstd[n];
            if (g && D <= ROW_MAX) {
                /* the gate's sigmoid once per element (the loops below would take it three times) */
                float sg[ROW_MAX], dn[ROW_MAX];
                lina_vsigmoid(sg, g + o, (size_t)D);
                for (int i = 0; i < D; i++) {
                    dn[i] = dy[o + i] * g[o + i] * sg[i];
                }
                if (dg) {
                    for (int i = 0; i < D; i++) {
                        float gv = g[o + i], s = sg[i];
                        float nv = x[o + i] * r * (w ? w[i] : 1.0f);
                        dg[o + i] += dy[o + i] * nv * s * (1.0f + gv * (1.0f - s));
                    }
                }
                if (dx) {
                    double m = 0.0;
                    for (int i = 0; i < D; i++) {
                        float gi = dn[i] * (w ? w[i] : 1.0f);
                        m += (double)gi * x[o + i];
                    }
                    float mm = (float)(m * r / D); /* mean(g * xhat) */
                    for (int i = 0; i < D; i++) {
                        float gi = dn[i] * (w ? w[i] : 1.0f);
                        dx[o + i] += r * (gi - x[o + i] * r * mm);
                    }
                }
                continue;
            }
            if (dg) {
                for (int i = 0; i < D; i++) {
                    float gv = g[o + i], s = sigmoidf_(gv);
                    float nv = x[o + i] * r * (w ? w[i] : 1.0f);
                    dg[o + i] += dy[o + i] * nv * s * (1.0f + gv * (1.0f - s));
                }
            }
            if (dx) {
                double m = 0.0;
                for (int i = 0; i < D; i++) {
                    float gi = rms_dn(dy, g, o + i) * (w ? w[i] : 1.0f);
                    m += (double)gi * x[o + i];
                }
                float mm = (float)(m * r / D); /* mean(g * xhat) */
                for (int i = 0; i < D; i++) {
                    float gi = rms_dn(dy, g, o + i) * (w ? w[i] : 1.0f);
                    dx[o + i] += r * (gi - x[o + i] * r * mm);
                }
            }
        }
    }
    if (dw || db) {
        int nb = (D + COLS - 1) / COLS;
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
        for (int cb = 0; cb < nb; cb++) {
            int c0 = cb * COLS, c1 = c0 + COLS < D ? c0 + COLS : D;
            float aw[COLS] = {0}, ab[COLS] = {0}, dn[COLS];
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)n * D + c0;
                if (g) {
                    lina_vsigmoid(dn, g + o, (size_t)(c1 - c0));
                    for (int c = 0; c < c1 - c0; c++) {
                        dn[c] *= dy[o + c] * g[o + c];
                    }
                } else {
                    memcpy(dn, dy + o, (size_t)(c1 - c0) * sizeof(float));
                }
                for (int c = 0; c < c1 - c0; c++) {
                    aw[c] += dn[c] * x[o + c] * rstd[n];
                    ab[c] += dn[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dw) {
                    dw[c] += aw[c - c0];
                }
                if (db) {
                    db[c] += ab[c - c0];
                }
            }
        }
    }
}

/* y, x [N,D]; w, b [D] or NULL; rstd [N] */
void lina_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, const float *b, int N, int D,
                          float eps)
{
    rms_fwd(y, rstd, x, NULL, w, b, N, D, eps);
}

/* dx [N,D], dw [D], db [D] accumulate */
void lina_rmsnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                           const float *rstd, int N, int D)
{
    rms_bwd(dx, NULL, w ? dw : NULL, db, dy, x, NULL, w, rstd, N, D);
}

/* y, x, g [N,D]; w [D] or NULL; rstd [N] */
void lina_rmsnorm_gated_forward(float *y, float *rstd, const float *x, const float *g, const float *w, int N,
                                int D, float eps)
{
    rms_fwd(y, rstd, x, g, w, NULL, N, D, eps);
}

/* dx, dg [N,D], dw [D] accumulate */
void lina_rmsnorm_gated_backward(float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                                 const float *w, const float *rstd, int N, int D)
{
    rms_bwd(dx, dg, w ? dw : NULL, NULL, dy, x, g, w, rstd, N, D);
}

/* ---------------------------------------------------------------- L2Norm */

/* y, x [N,D]; rnorm [N] */
void lina_l2norm_forward(float *y, float *rnorm, const float *x, int N, int D, float eps)
{
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        double ss = 0.0;
#pragma omp simd reduction(+ : ss)
        for (int i = 0; i < D; i++) {
            ss += (double)xr[i] * xr[i];
        }
        float r = (float)(1.0 / sqrt(ss + (double)eps));
        if (rnorm) {
            rnorm[n] = r;
        }
        for (int i = 0; i < D; i++) {
            yr[i] = xr[i] * r;
        }
    }
}

/* dx [N,D] += (dy - y (y.dy)) * rnorm */
void lina_l2norm_backward(float *dx, const float *dy, const float *y, const float *rnorm, int N, int D)
{
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
    for (int n = 0; n < N; n++) {
        size_t o = (size_t)n * D;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < D; i++) {
            s += (double)y[o + i] * dy[o + i];
        }
        float sf = (float)s, r = rnorm[n];
        for (int i = 0; i < D; i++) {
            dx[o + i] += (dy[o + i] - y[o + i] * sf) * r;
        }
    }
}

/* y [N,D] = x / (sum x + eps) per row */
void lina_sumnorm_forward(float *y, const float *x, int N, int D, double eps)
{
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * D;
        double s = eps;
        for (int i = 0; i < D; i++) {
            s += xr[i];
        }
        float inv = (float)(1.0 / s);
        for (int i = 0; i < D; i++) {
            y[(size_t)r * D + i] = xr[i] * inv;
        }
    }
}

/* dx [N,D] += (dy - (dy . y)) / (sum x + eps) */
void lina_sumnorm_backward(float *dx, const float *dy, const float *x, const float *y, int N, int D, double eps)
{
    for (int r = 0; r < N; r++) {
        const float *xr = x + (size_t)r * D, *yr = y + (size_t)r * D, *g = dy + (size_t)r * D;
        double s = eps, c = 0.0;
        for (int i = 0; i < D; i++) {
            s += xr[i];
            c += (double)g[i] * yr[i];
        }
        for (int i = 0; i < D; i++) {
            dx[(size_t)r * D + i] += (float)((g[i] - c) / s);
        }
    }
}

/* ---------------------------------------------------------------- LayerNorm
 * per group of S = D / G columns (G = 1: nn.LayerNorm; G = heads: GroupNorm) */

/* y, x [N,D]; w, b [D] or NULL; mean, rstd [N*G] */
void lina_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                            int D, int G, float eps)
{
    const int S = D / G;
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
    for (int n = 0; n < N; n++) {
        for (int gr = 0; gr < G; gr++) {
            const size_t o = (size_t)n * D + (size_t)gr * S;
            const float *xr = x + o;
            double s = 0.0, ss = 0.0;
            for (int i = 0; i < S; i++) {
                s += xr[i];
            }
            const double mu = s / S;
            for (int i = 0; i < S; i++) {
                const double d = xr[i] - mu;
                ss += d * d;
            }
            const float r = (float)(1.0 / sqrt(ss / S + (double)eps)), m = (float)mu;
            if (mean) {
                mean[(size_t)n * G + gr] = m;
                rstd[(size_t)n * G + gr] = r;
            }
            for (int i = 0; i < S; i++) {
                const int c = gr * S + i;
                float v = (xr[i] - m) * r;
                v = w ? v * w[c] : v;
                y[o + i] = b ? v + b[c] : v;
            }
        }
    }
}

/* dx [N,D], dw, db [D] accumulate */
void lina_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                             const float *mean, const float *rstd, int N, int D, int G)
{
    const int S = D / G;
    if (dx) {
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
        for (int n = 0; n < N; n++) {
            for (int gr = 0; gr < G; gr++) {
                const size_t o = (size_t)n * D + (size_t)gr * S;
                const float m = mean[(size_t)n * G + gr], r = rstd[(size_t)n * G + gr];
                double sg = 0.0, sgx = 0.0;
                for (int i = 0; i < S; i++) {
                    const float gi = dy[o + i] * (w ? w[gr * S + i] : 1.0f);
                    sg += gi;
                    sgx += (double)gi * (x[o + i] - m) * r;
                }
                const float mg = (float)(sg / S), mgx = (float)(sgx / S);
                for (int i = 0; i < S; i++) {
                    const float gi = dy[o + i] * (w ? w[gr * S + i] : 1.0f);
                    dx[o + i] += r * (gi - mg - (x[o + i] - m) * r * mgx);
                }
            }
        }
    }
    if (dw || db) {
        int nb = (D + COLS - 1) / COLS;
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
        for (int cb = 0; cb < nb; cb++) {
            int c0 = cb * COLS, c1 = c0 + COLS < D ? c0 + COLS : D;
            float aw[COLS] = {0}, ab[COLS] = {0};
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)n * D;
                for (int c = c0; c < c1; c++) {
                    const size_t st = (size_t)n * G + (size_t)(c / S);
                    aw[c - c0] += dy[o + c] * (x[o + c] - mean[st]) * rstd[st];
                    ab[c - c0] += dy[o + c];
                }
            }
            for (int c = c0; c < c1; c++) {
                if (dw) {
                    dw[c] += aw[c - c0];
                }
                if (db) {
                    db[c] += ab[c - c0];
                }
            }
        }
    }
}
