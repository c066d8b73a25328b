/* norm.c -- RMSNorm, FusedRMSNormGated (norm * w * silu(g)), L2Norm and LayerNorm,
 * forward and backward. Row statistics in double. Compiled once per instruction-set path
 * (Makefile KSRC, kern/isa.h): the row loops vectorise to the path's width. */
#include "../kern/isa.h"
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COLS 64
#define SG_BUF 1024 /* floats of gate sigmoids a task keeps on the stack (rows of D <= SG_BUF) */
#define DW_STACK 8192 /* partial dw / db sums kept on the stack up to this many floats */

static inline float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* ---------------------------------------------------------------- RMSNorm
 * shared by the plain and the gated form: g == NULL means no gate. The rows go in runs
 * of up to SG_BUF / D rows, whose gate sigmoids are taken in one call. */

/* sum of x[i]^2 over a row, in double */
static inline double row_sumsq(const float *x, int D)
{
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int i = 0; i < D; i++) {
        ss += (double)x[i] * x[i];
    }
    return ss;
}

static inline int sg_rows(int D)
{
    return D <= SG_BUF ? SG_BUF / D : 1;
}

/* y [N,D] = x * rstd * w (+ b) (* silu(g));  rstd [N] */
static void rms_fwd(float *y, float *rstd, const float *x, const float *g, const float *w, const float *b, int N,
                    int D, float eps)
{
    const int rb = sg_rows(D), nrun = (N + rb - 1) / rb;
#pragma omp parallel for schedule(static) if ((size_t)N * (size_t)D >= 32768)
    for (int run = 0; run < nrun; run++) {
        const int n0 = run * rb, n1 = n0 + rb < N ? n0 + rb : N;
        float sg[SG_BUF];
        const int sgv = g && D <= SG_BUF; /* sigmoids from the buffer */
        if (sgv) {
            lina_vsigmoid(sg, g + (size_t)n0 * D, (size_t)(n1 - n0) * D);
        }
        for (int n = n0; n < n1; n++) {
            const float *xr = x + (size_t)n * D;
            float *yr = y + (size_t)n * D;
            const double ss = row_sumsq(xr, D);
            const float r = (float)(1.0 / sqrt(ss / D + (double)eps));
            if (rstd) {
                rstd[n] = r;
            }
            if (!g && !b) {
                if (w) {
#pragma omp simd
                    for (int i = 0; i < D; i++) {
                        yr[i] = xr[i] * r * w[i];
                    }
                } else {
#pragma omp simd
                    for (int i = 0; i < D; i++) {
                        yr[i] = xr[i] * r;
                    }
                }
                continue;
            }
            const float *gr = g ? g + (size_t)n * D : NULL, *sr = sgv ? sg + (size_t)(n - n0) * D : NULL;
            for (int i = 0; i < D; i++) {
                float v = xr[i] * r;
                v = w ? v * w[i] : v;
                v = b ? v + b[i] : v;
                if (gr) {
                    v *= gr[i] * (sr ? sr[i] : sigmoidf_(gr[i]));
                }
                yr[i] = v;
            }
        }
    }
}

/* One pass over the rows: dx, dg per row, and the rows' share of dw, db (dn * xhat, dn
 * with dn = dy (* silu(g))) summed per fixed run of rows into part[run][D] (dw) and
 * part[nrun + run][D] (db); the runs' sums are then added in run order, so the result
 * does not depend on the thread count. */
/* set: dx and dg written (their old contents not read), else accumulated */
static void rms_bwd(float *dx, float *dg, float *dw, float *db, const float *dy, const float *x, const float *g,
                    const float *w, const float *rstd, int N, int D, int set)
{
    if (N <= 0 || (!dx && !dg && !dw && !db)) {
        return;
    }
    const int rb = sg_rows(D);
    /* runs of whole sigmoid blocks, at most 64 of them */
    int per = (N + 63) / 64;
    per = (per + rb - 1) / rb * rb;
    const int nrun = (N + per - 1) / per;
    const int sums = (dw ? 1 : 0) + (db ? 1 : 0);
    const size_t pn = (size_t)sums * (size_t)nrun * (size_t)D;
    float stackp[DW_STACK];
    float *part = pn <= DW_STACK ? stackp : malloc(pn * sizeof(float));
    if (!part) {
        /* no room for the per-run sums: one run over all rows, serial */
        rms_bwd(dx, dg, NULL, NULL, dy, x, g, w, rstd, N, D, set);
        float sgl;
        for (int c = 0; c < D; c++) {
            float aw = 0.0f, ab = 0.0f;
            for (int n = 0; n < N; n++) {
                size_t o = (size_t)n * D + c;
                float dn = dy[o];
                if (g) {
                    sgl = sigmoidf_(g[o]);
                    dn *= g[o] * sgl;
                }
                aw += dn * x[o] * rstd[n];
                ab += dn;
            }
            if (dw) {
                dw[c] += aw;
            }
            if (db) {
                db[c] += ab;
            }
        }
        return;
    }
    float *pw = dw ? part : NULL, *pb = db ? part + (dw ? (size_t)nrun * D : 0) : NULL;
#pragma omp parallel for schedule(static) if ((size_t)N * (size_t)D >= 32768)
    for (int run = 0; run < nrun; run++) {
        const int r0 = run * per, r1 = r0 + per < N ? r0 + per : N;
        float *aw = pw ? pw + (size_t)run * D : NULL, *ab = pb ? pb + (size_t)run * D : NULL;
        if (aw) {
            memset(aw, 0, (size_t)D * sizeof(float));
        }
        if (ab) {
            memset(ab, 0, (size_t)D * sizeof(float));
        }
        float sg[SG_BUF], dnb[SG_BUF];
        for (int n0 = r0; n0 < r1; n0 += rb) {
            const int n1 = n0 + rb < r1 ? n0 + rb : r1;
            const int sgv = g && D <= SG_BUF;
            if (sgv) {
                lina_vsigmoid(sg, g + (size_t)n0 * D, (size_t)(n1 - n0) * D);
            }
            for (int n = n0; n < n1; n++) {
                const size_t o = (size_t)n * D;
                const float r = rstd[n];
                const float *dyr = dy + o, *xr = x + o;
                /* dn = dy (* silu(g)): the cotangent of x * rstd * w */
                const float *dn = D <= SG_BUF ? (g ? dnb : dyr) : NULL;
                const float *sr = sgv ? sg + (size_t)(n - n0) * D : NULL;
                if (!dn) {
                    /* rows wider than the buffers: the per-element form */
                    double m = 0.0;
                    for (int i = 0; i < D; i++) {
                        float s = g ? sigmoidf_(g[o + i]) : 0.0f;
                        float d = g ? dyr[i] * g[o + i] * s : dyr[i];
                        float xh = xr[i] * r;
                        if (dg) {
                            dg[o + i] = (set ? 0.0f : dg[o + i]) +
                                        dyr[i] * xh * (w ? w[i] : 1.0f) * s * (1.0f + g[o + i] * (1.0f - s));
                        }
                        if (aw) {
                            aw[i] += d * xh;
                        }
                        if (ab) {
                            ab[i] += d;
                        }
                        m += (double)(d * (w ? w[i] : 1.0f)) * xr[i];
                    }
                    if (dx) {
                        float mm = (float)(m * r / D);
                        for (int i = 0; i < D; i++) {
                            float d = g ? dyr[i] * g[o + i] * sigmoidf_(g[o + i]) : dyr[i];
                            dx[o + i] = (set ? 0.0f : dx[o + i]) + r * (d * (w ? w[i] : 1.0f) - xr[i] * r * mm);
                        }
                    }
                    continue;
                }
                if (g) {
                    const float *gr = g + o;
#pragma omp simd
                    for (int i = 0; i < D; i++) {
                        dnb[i] = dyr[i] * gr[i] * sr[i];
                    }
                    if (dg) {
                        float *dgr = dg + o;
#pragma omp simd
                        for (int i = 0; i < D; i++) {
                            const float s = sr[i], nv = xr[i] * r * (w ? w[i] : 1.0f);
                            dgr[i] = (set ? 0.0f : dgr[i]) + dyr[i] * nv * s * (1.0f + gr[i] * (1.0f - s));
                        }
                    }
                }
                if (aw) {
#pragma omp simd
                    for (int i = 0; i < D; i++) {
                        aw[i] += dn[i] * xr[i] * r;
                    }
                }
                if (ab) {
#pragma omp simd
                    for (int i = 0; i < D; i++) {
                        ab[i] += dn[i];
                    }
                }
                if (dx) {
                    double m = 0.0;
                    if (w) {
#pragma omp simd reduction(+ : m)
                        for (int i = 0; i < D; i++) {
                            m += (double)(dn[i] * w[i]) * xr[i];
                        }
                    } else {
#pragma omp simd reduction(+ : m)
                        for (int i = 0; i < D; i++) {
                            m += (double)dn[i] * xr[i];
                        }
                    }
                    const float mm = (float)(m * r / D); /* mean(dn w * xhat) */
                    float *dxr = dx + o;
                    if (w) {
#pragma omp simd
                        for (int i = 0; i < D; i++) {
                            dxr[i] = (set ? 0.0f : dxr[i]) + r * (dn[i] * w[i] - xr[i] * r * mm);
                        }
                    } else {
#pragma omp simd
                        for (int i = 0; i < D; i++) {
                            dxr[i] = (set ? 0.0f : dxr[i]) + r * (dn[i] - xr[i] * r * mm);
                        }
                    }
                }
            }
        }
    }
    /* the runs' sums in run order, in double */
    for (int c = 0; c < D; c++) {
        if (pw) {
            double t = 0.0;
            for (int run = 0; run < nrun; run++) {
                t += pw[(size_t)run * D + c];
            }
            dw[c] += (float)t;
        }
        if (pb) {
            double t = 0.0;
            for (int run = 0; run < nrun; run++) {
                t += pb[(size_t)run * D + c];
            }
            db[c] += (float)t;
        }
    }
    if (part != stackp) {
        free(part);
    }
}

/* y, x [N,D]; w, b [D] or NULL; rstd [N] */
void LINA_KFN(lina_rmsnorm_forward)(float *y, float *rstd, const float *x, const float *w, const float *b, int N, int D,
                          float eps)
{
    rms_fwd(y, rstd, x, NULL, w, b, N, D, eps);
}

/* dx [N,D], dw [D], db [D] accumulate */
void LINA_KFN(lina_rmsnorm_backward)(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                           const float *rstd, int N, int D)
{
    rms_bwd(dx, NULL, w ? dw : NULL, db, dy, x, NULL, w, rstd, N, D, 0);
}

/* y, x, g [N,D]; w [D] or NULL; rstd [N] */
void LINA_KFN(lina_rmsnorm_gated_forward)(float *y, float *rstd, const float *x, const float *g, const float *w, int N,
                                int D, float eps)
{
    rms_fwd(y, rstd, x, g, w, NULL, N, D, eps);
}

/* dx, dg [N,D], dw [D] accumulate */
void LINA_KFN(lina_rmsnorm_gated_backward)(float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                                 const float *w, const float *rstd, int N, int D)
{
    rms_bwd(dx, dg, w ? dw : NULL, NULL, dy, x, g, w, rstd, N, D, 0);
}

/* the same two with dx (and dg) written, not accumulated */
void LINA_KFN(lina_rmsnorm_backward_set)(float *dx, float *dw, float *db, const float *dy, const float *x,
                                         const float *w, const float *rstd, int N, int D)
{
    rms_bwd(dx, NULL, w ? dw : NULL, db, dy, x, NULL, w, rstd, N, D, 1);
}

void LINA_KFN(lina_rmsnorm_gated_backward_set)(float *dx, float *dg, float *dw, const float *dy, const float *x,
                                               const float *g, const float *w, const float *rstd, int N, int D)
{
    rms_bwd(dx, dg, w ? dw : NULL, NULL, dy, x, g, w, rstd, N, D, 1);
}

/* ---------------------------------------------------------------- L2Norm */

/* y, x [N,D]; rnorm [N] */
void LINA_KFN(lina_l2norm_forward)(float *y, float *rnorm, const float *x, int N, int D, float eps)
{
#pragma omp parallel for if ((size_t)N * (size_t)D >= 32768)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (size_t)n * D;
        float *yr = y + (size_t)n * D;
        const double ss = row_sumsq(xr, D);
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
void LINA_KFN(lina_l2norm_backward)(float *dx, const float *dy, const float *y, const float *rnorm, int N, int D)
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
void LINA_KFN(lina_sumnorm_forward)(float *y, const float *x, int N, int D, double eps)
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
void LINA_KFN(lina_sumnorm_backward)(float *dx, const float *dy, const float *x, const float *y, int N, int D, double eps)
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
void LINA_KFN(lina_layernorm_forward)(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
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
void LINA_KFN(lina_layernorm_backward)(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
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

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_forward,
                       (float *y, float *rstd, const float *x, const float *w, const float *b, int N, int D,
                        float eps),
                       (y, rstd, x, w, b, N, D, eps))
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_backward,
                       (float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        const float *rstd, int N, int D),
                       (dx, dw, db, dy, x, w, rstd, N, D))
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_gated_forward,
                       (float *y, float *rstd, const float *x, const float *g, const float *w, int N, int D,
                        float eps),
                       (y, rstd, x, g, w, N, D, eps))
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_gated_backward,
                       (float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                        const float *w, const float *rstd, int N, int D),
                       (dx, dg, dw, dy, x, g, w, rstd, N, D))
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_backward_set,
                       (float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        const float *rstd, int N, int D),
                       (dx, dw, db, dy, x, w, rstd, N, D))
LINA_ISA_DISPATCH_VOID(lina_rmsnorm_gated_backward_set,
                       (float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                        const float *w, const float *rstd, int N, int D),
                       (dx, dg, dw, dy, x, g, w, rstd, N, D))
LINA_ISA_DISPATCH_VOID(lina_l2norm_forward,
                       (float *y, float *rnorm, const float *x, int N, int D, float eps),
                       (y, rnorm, x, N, D, eps))
LINA_ISA_DISPATCH_VOID(lina_l2norm_backward,
                       (float *dx, const float *dy, const float *y, const float *rnorm, int N, int D),
                       (dx, dy, y, rnorm, N, D))
LINA_ISA_DISPATCH_VOID(lina_sumnorm_forward,
                       (float *y, const float *x, int N, int D, double eps),
                       (y, x, N, D, eps))
LINA_ISA_DISPATCH_VOID(lina_sumnorm_backward,
                       (float *dx, const float *dy, const float *x, const float *y, int N, int D, double eps),
                       (dx, dy, x, y, N, D, eps))
LINA_ISA_DISPATCH_VOID(lina_layernorm_forward,
                       (float *y, float *mean, float *rstd, const float *x, const float *w, const float *b,
                        int N, int D, int G, float eps),
                       (y, mean, rstd, x, w, b, N, D, G, eps))
LINA_ISA_DISPATCH_VOID(lina_layernorm_backward,
                       (float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        const float *mean, const float *rstd, int N, int D, int G),
                       (dx, dw, db, dy, x, w, mean, rstd, N, D, G))
#endif /* LINA_ISA_PRIMARY */
