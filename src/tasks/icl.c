/* icl.c -- in-context linear regression with linear transformers: data, model
 * (forward + exact backward), ridge baselines, training (Adam / SGD with momentum),
 * `lina task icl-regression` and the reduced paper reproduction. See icl.h. */
#include "icl.h"

#include "../io/plot.h"
#include "lina.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ================================================================== random */

typedef struct rng {
    uint64_t s;
    int have;
    double spare;
} rng;

static void rng_seed(rng *r, uint64_t stream, uint64_t index)
{
    uint64_t s = stream ^ (index * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    r->s = lina_splitmix64(&s);
    r->have = 0;
    r->spare = 0.0;
}

static double rng_uniform(rng *r) /* [0, 1) */
{
    return (double)(lina_splitmix64(&r->s) >> 11) * (1.0 / 9007199254740992.0);
}

static double rng_normal(rng *r)
{
    if (r->have) {
        r->have = 0;
        return r->spare;
    }
    double u1 = 1.0 - rng_uniform(r); /* (0, 1] */
    double u2 = rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(6.283185307179586 * u2);
    r->have = 1;
    return rad * cos(6.283185307179586 * u2);
}

static uint64_t stream_of(uint64_t seed, uint64_t which)
{
    uint64_t s = seed * 0xD1B54A32D192ED03ull + which;
    return lina_splitmix64(&s);
}

/* ==================================================================== data */

#define ICL_MAXD 256 /* largest d of the generator and the model */

/* Sequences b0 .. b1-1 of lina_icl_sample (serial; callers parallelise). */
static void sample_range(const lina_icl_data *g, uint64_t stream, uint64_t first, int b0, int b1,
                         float *Z, float *yq, float *sigma, float *w)
{
    const int d = g->d, n = g->n, D = d + 1, T = n + 1;
    for (int b = b0; b < b1; b++) {
        rng r;
        rng_seed(&r, stream, first + (uint64_t)b);
        double sg = 0.0;
        if (g->noise == LINA_ICL_NOISE_MIXED && g->nsigma > 0) {
            int k = (int)(rng_uniform(&r) * g->nsigma);
            sg = g->sigmas[k < g->nsigma ? k : g->nsigma - 1];
        } else if (g->noise == LINA_ICL_NOISE_UNIFORM) {
            sg = g->sigma_max * rng_uniform(&r);
        }
        double wp[ICL_MAXD];
        for (int j = 0; j < d; j++) {
            wp[j] = rng_normal(&r);
        }
        float *z = Z + (size_t)b * T * D;
        for (int i = 0; i < T; i++) {
            double y = 0.0;
            for (int j = 0; j < d; j++) {
                double x = rng_normal(&r);
                z[i * D + j] = (float)x;
                y += wp[j] * (double)(float)x;
            }
            if (i < n) {
                y += sg * rng_normal(&r);
                z[i * D + d] = (float)y;
            } else {
                z[i * D + d] = 0.0f;
                yq[b] = (float)y;
            }
        }
        if (sigma) {
            sigma[b] = (float)sg;
        }
        if (w) {
            for (int j = 0; j < d; j++) {
                w[(size_t)b * d + j] = (float)wp[j];
            }
        }
    }
}

int lina_icl_sample(const lina_icl_data *g, uint64_t stream, uint64_t first, int B,
                    float *Z, float *yq, float *sigma, float *w)
{
    if (g->d < 1 || g->d > ICL_MAXD || g->n < 1 || B < 0 ||
        (g->noise == LINA_ICL_NOISE_MIXED && (g->nsigma < 1 || g->nsigma > LINA_ICL_MAX_SIGMAS))) {
        return lina_set_error(LINA_EINVAL, "icl: bad data settings (d %d, n %d)", g->d, g->n);
    }
    const int nb = B < 64 ? 1 : 64;
#pragma omp parallel for schedule(static)
    for (int k = 0; k < nb; k++) {
        sample_range(g, stream, first, (int)((int64_t)B * k / nb), (int)((int64_t)B * (k + 1) / nb),
                     Z, yq, sigma, w);
    }
    return LINA_OK;
}

/* =================================================================== model */

int lina_icl_model_init(lina_icl_model *m, int d, int n, int L, int H, int variant,
                        double init_std, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    if (d < 1 || d > ICL_MAXD || n < 1 || L < 1 || L > 64 || H < 1 || H > 64 ||
        (variant != LINA_ICL_AHN && variant != LINA_ICL_FULL) || !(init_std >= 0.0)) {
        return lina_set_error(LINA_EINVAL, "icl: bad model (d %d, n %d, layers %d, heads %d)", d,
                              n, L, H);
    }
    const int D = d + 1;
    m->d = d;
    m->n = n;
    m->L = L;
    m->H = H;
    m->variant = variant;
    m->nparams = (int64_t)L * H * 2 * D * D;
    m->params = calloc((size_t)m->nparams, sizeof(float));
    m->mask = calloc((size_t)m->nparams, 1);
    if (!m->params || !m->mask) {
        lina_icl_model_free(m);
        return lina_set_error(LINA_ENOMEM, "icl: out of memory");
    }
    rng r;
    rng_seed(&r, stream_of(seed, 7), 0);
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < H; h++) {
            float *Pt = m->params + ((size_t)(l * H + h) * 2) * D * D;
            unsigned char *mk = m->mask + ((size_t)(l * H + h) * 2) * D * D;
            for (int t = 0; t < 2; t++) { /* 0: Pt, 1: Qt */
                for (int a = 0; a < D; a++) {
                    for (int c = 0; c < D; c++) {
                        size_t i = (size_t)t * D * D + (size_t)a * D + c;
                        /* both variants start from the same point: random x blocks,
                         * Pt[d][d] = 1, the rest 0 (random y rows / columns make deep
                         * FULL models blow up at the start); FULL trains every entry */
                        const int xblock = a < d && c < d;
                        const double base = (t == 0 && a == d && c == d) ? 1.0 : 0.0;
                        mk[i] = (unsigned char)(variant == LINA_ICL_FULL || xblock);
                        Pt[i] = (float)(base + (xblock ? init_std * rng_normal(&r) : 0.0));
                    }
                }
            }
        }
    }
    m->ntrain = 0;
    for (int64_t i = 0; i < m->nparams; i++) {
        m->ntrain += m->mask[i];
    }
    return LINA_OK;
}

void lina_icl_model_free(lina_icl_model *m)
{
    free(m->params);
    free(m->mask);
    memset(m, 0, sizeof *m);
}

/* Per-thread scratch of one sequence: the tokens entering every layer and the
 * layer's G and W (kept for backward), plus temporaries. */
typedef struct seq_ws {
    float *Zs;   /* [L+1, T, D] */
    float *Gs;   /* [L, D, D] */
    float *Ws;   /* [L, D, D] */
    float *dZ;   /* [T, D] */
    float *dZ2;  /* [T, D] */
    float *t1, *t2, *t3, *dW, *dG; /* [D, D] each */
    float *dp;   /* [nparams] per-sequence gradient */
} seq_ws;

static int seq_ws_alloc(seq_ws *w, const lina_icl_model *m, int need_grad)
{
    const int D = m->d + 1, T = m->n + 1, L = m->L;
    size_t dd = (size_t)D * D;
    size_t tot = (size_t)(L + 1) * T * D + 2 * (size_t)L * dd + 2 * (size_t)T * D + 5 * dd +
                 (need_grad ? (size_t)m->nparams : 0);
    float *p = calloc(tot, sizeof(float));
    if (!p) {
        return lina_set_error(LINA_ENOMEM, "icl: out of memory");
    }
    w->Zs = p;
    p += (size_t)(L + 1) * T * D;
    w->Gs = p;
    p += (size_t)L * dd;
    w->Ws = p;
    p += (size_t)L * dd;
    w->dZ = p;
    p += (size_t)T * D;
    w->dZ2 = p;
    p += (size_t)T * D;
    w->t1 = p;
    w->t2 = p + dd;
    w->t3 = p + 2 * dd;
    w->dW = p + 3 * dd;
    w->dG = p + 4 * dd;
    p += 5 * dd;
    w->dp = need_grad ? p : NULL;
    return LINA_OK;
}

static void seq_ws_free(seq_ws *w)
{
    free(w->Zs);
}

/* One layer, one sequence.
 *   Z [T, D] in, Zn [T, D] out, p [H, 2, D, D] (Pt_h, Qt_h), G [D, D], W [D, D] out;
 *   G = Zc^T Zc / n, W = sum_h Qt_h G Pt_h^T, Zn = Z + Z W. tmp [D, D] scratch. */
static void layer_forward(int T, int n, int D, int H, const float *p, const float *Z, float *Zn,
                          float *G, float *W, float *tmp)
{
    const float inv_n = 1.0f / (float)n;
    for (int a = 0; a < D; a++) {
        for (int b = 0; b <= a; b++) {
            float s = 0.0f;
            for (int i = 0; i < n; i++) {
                s += Z[i * D + a] * Z[i * D + b];
            }
            G[a * D + b] = G[b * D + a] = s * inv_n;
        }
    }
    memset(W, 0, sizeof(float) * (size_t)D * D);
    for (int h = 0; h < H; h++) {
        const float *Pt = p + (size_t)h * 2 * D * D, *Qt = Pt + (size_t)D * D;
        /* tmp = G Pt^T: tmp[a][c] = sum_b G[a][b] Pt[c][b] */
        for (int a = 0; a < D; a++) {
            for (int c = 0; c < D; c++) {
                float s = 0.0f;
                for (int b = 0; b < D; b++) {
                    s += G[a * D + b] * Pt[c * D + b];
                }
                tmp[a * D + c] = s;
            }
        }
        /* W += Qt tmp */
        for (int r = 0; r < D; r++) {
            for (int a = 0; a < D; a++) {
                const float q = Qt[r * D + a];
                for (int c = 0; c < D; c++) {
                    W[r * D + c] += q * tmp[a * D + c];
                }
            }
        }
    }
    for (int i = 0; i < T; i++) {
        for (int c = 0; c < D; c++) {
            Zn[i * D + c] = Z[i * D + c];
        }
        for (int r = 0; r < D; r++) {
            const float z = Z[i * D + r];
            for (int c = 0; c < D; c++) {
                Zn[i * D + c] += z * W[r * D + c];
            }
        }
    }
}

/* Backward of layer_forward for one sequence.
 *   dZn [T, D] the gradient at the layer output; dZ [T, D] out: at its input;
 *   dp [H, 2, D, D] += the gradients of Pt_h, Qt_h.
 *   dW = Z^T dZn;  dZ = dZn + dZn W^T + Zc (dG + dG^T) / n  (context rows only);
 *   dQt_h = dW Pt_h G;  dPt_h = dW^T Qt_h G;  dG = sum_h Qt_h^T dW Pt_h. */
static void layer_backward(int T, int n, int D, int H, const float *p, const float *Z,
                           const float *G, const float *W, const float *dZn, float *dZ,
                           float *dp, seq_ws *w)
{
    float *dW = w->dW, *dG = w->dG, *PG = w->t1, *QG = w->t2, *t3 = w->t3;
    const size_t dd = (size_t)D * D;
    memset(dW, 0, sizeof(float) * dd);
    for (int i = 0; i < T; i++) {
        for (int r = 0; r < D; r++) {
            const float z = Z[i * D + r];
            for (int c = 0; c < D; c++) {
                dW[r * D + c] += z * dZn[i * D + c];
            }
        }
    }
    for (int i = 0; i < T; i++) {
        for (int r = 0; r < D; r++) {
            float s = dZn[i * D + r];
            for (int c = 0; c < D; c++) {
                s += dZn[i * D + c] * W[r * D + c];
            }
            dZ[i * D + r] = s;
        }
    }
    memset(dG, 0, sizeof(float) * dd);
    for (int h = 0; h < H; h++) {
        const float *Pt = p + (size_t)h * 2 * dd, *Qt = Pt + dd;
        float *dPt = dp + (size_t)h * 2 * dd, *dQt = dPt + dd;
        /* PG = Pt G, QG = Qt G */
        for (int a = 0; a < D; a++) {
            for (int b = 0; b < D; b++) {
                float s1 = 0.0f, s2 = 0.0f;
                for (int c = 0; c < D; c++) {
                    s1 += Pt[a * D + c] * G[c * D + b];
                    s2 += Qt[a * D + c] * G[c * D + b];
                }
                PG[a * D + b] = s1;
                QG[a * D + b] = s2;
            }
        }
        /* dQt += dW PG;  dPt += dW^T QG;  t3 = dW Pt */
        for (int r = 0; r < D; r++) {
            for (int c = 0; c < D; c++) {
                const float g = dW[r * D + c];
                for (int a = 0; a < D; a++) {
                    dQt[r * D + a] += g * PG[c * D + a];
                    dPt[c * D + a] += g * QG[r * D + a];
                }
            }
        }
        for (int r = 0; r < D; r++) {
            for (int b = 0; b < D; b++) {
                float s = 0.0f;
                for (int c = 0; c < D; c++) {
                    s += dW[r * D + c] * Pt[c * D + b];
                }
                t3[r * D + b] = s;
            }
        }
        /* dG += Qt^T t3 */
        for (int r = 0; r < D; r++) {
            for (int a = 0; a < D; a++) {
                const float q = Qt[r * D + a];
                for (int b = 0; b < D; b++) {
                    dG[a * D + b] += q * t3[r * D + b];
                }
            }
        }
    }
    /* S = (dG + dG^T) / n, kept in PG; dZ[:n] += Zc S */
    const float inv_n = 1.0f / (float)n;
    for (int a = 0; a < D; a++) {
        for (int b = 0; b < D; b++) {
            PG[a * D + b] = (dG[a * D + b] + dG[b * D + a]) * inv_n;
        }
    }
    for (int i = 0; i < n; i++) {
        for (int b = 0; b < D; b++) {
            const float z = Z[i * D + b];
            for (int a = 0; a < D; a++) {
                dZ[i * D + a] += z * PG[b * D + a];
            }
        }
    }
}

/* Forward of one sequence through all layers: w->Zs[l] holds layer l's input. */
static void seq_forward(const lina_icl_model *m, const float *Z0, seq_ws *w)
{
    const int D = m->d + 1, T = m->n + 1;
    const size_t dd = (size_t)D * D, td = (size_t)T * D, lp = (size_t)m->H * 2 * dd;
    memcpy(w->Zs, Z0, sizeof(float) * td);
    for (int l = 0; l < m->L; l++) {
        layer_forward(T, m->n, D, m->H, m->params + l * lp, w->Zs + l * td, w->Zs + (l + 1) * td,
                      w->Gs + l * dd, w->Ws + l * dd, w->t1);
    }
}

int lina_icl_forward(const lina_icl_model *m, const float *Z, int B, float *Zout, float *pred)
{
    const int D = m->d + 1, T = m->n + 1;
    const size_t td = (size_t)T * D;
    int err = 0;
#pragma omp parallel
    {
        seq_ws w;
        int ok = seq_ws_alloc(&w, m, 0) == LINA_OK;
        if (!ok) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            if (!ok) {
                continue;
            }
            seq_forward(m, Z + (size_t)b * td, &w);
            const float *zl = w.Zs + (size_t)m->L * td;
            if (Zout) {
                memcpy(Zout + (size_t)b * td, zl, sizeof(float) * td);
            }
            if (pred) {
                pred[b] = -zl[(size_t)m->n * D + m->d];
            }
        }
        if (ok) {
            seq_ws_free(&w);
        }
    }
    return err ? lina_set_error(LINA_ENOMEM, "icl: out of memory") : LINA_OK;
}

#define ICL_NBLOCKS 16

/* lina_icl_loss_grad; with g != NULL each block first draws its sequences
 * (stream, first + b) into Z / yq, so a training step is one parallel region. */
static int loss_grad_impl(const lina_icl_model *m, float *Z, float *yq, int B, double *loss,
                          float *grad, const lina_icl_data *g, uint64_t stream, uint64_t first)
{
    const int D = m->d + 1, T = m->n + 1, L = m->L;
    const size_t dd = (size_t)D * D, td = (size_t)T * D, lp = (size_t)m->H * 2 * dd;
    const size_t np = (size_t)m->nparams;
    const int nb = B < ICL_NBLOCKS ? B : ICL_NBLOCKS;
    double *acc = calloc((size_t)nb * (np + 1), sizeof(double));
    if (!acc) {
        return lina_set_error(LINA_ENOMEM, "icl: out of memory");
    }
    int err = 0;
#pragma omp parallel
    {
        seq_ws w;
        int ok = seq_ws_alloc(&w, m, 1) == LINA_OK;
        if (!ok) {
#pragma omp atomic write
            err = 1;
        }
#pragma omp for schedule(static)
        for (int k = 0; k < nb; k++) {
            if (!ok) {
                continue;
            }
            double *ak = acc + (size_t)k * (np + 1);
            const int b0 = (int)((int64_t)B * k / nb), b1 = (int)((int64_t)B * (k + 1) / nb);
            if (g) {
                sample_range(g, stream, first, b0, b1, Z, yq, NULL, NULL);
            }
            for (int b = b0; b < b1; b++) {
                seq_forward(m, Z + (size_t)b * td, &w);
                const float out = w.Zs[(size_t)L * td + (size_t)m->n * D + m->d];
                const double r = (double)out + (double)yq[b];
                ak[np] += r * r;
                memset(w.dZ, 0, sizeof(float) * td);
                w.dZ[(size_t)m->n * D + m->d] = (float)(2.0 * r / B);
                memset(w.dp, 0, sizeof(float) * np);
                for (int l = L - 1; l >= 0; l--) {
                    layer_backward(T, m->n, D, m->H, m->params + l * lp, w.Zs + l * td,
                                   w.Gs + l * dd, w.Ws + l * dd, w.dZ, w.dZ2, w.dp + l * lp, &w);
                    float *t = w.dZ;
                    w.dZ = w.dZ2;
                    w.dZ2 = t;
                }
                for (size_t i = 0; i < np; i++) {
                    ak[i] += w.dp[i];
                }
            }
        }
        if (ok) {
            seq_ws_free(&w);
        }
    }
    if (err) {
        free(acc);
        return lina_set_error(LINA_ENOMEM, "icl: out of memory");
    }
    double ls = 0.0;
    for (size_t i = 0; i <= np; i++) {
        double s = 0.0;
        for (int k = 0; k < nb; k++) {
            s += acc[(size_t)k * (np + 1) + i];
        }
        if (i < np) {
            grad[i] = m->mask[i] ? (float)s : 0.0f;
        } else {
            ls = s;
        }
    }
    free(acc);
    if (loss) {
        *loss = ls / B;
    }
    return LINA_OK;
}

int lina_icl_loss_grad(const lina_icl_model *m, const float *Z, const float *yq, int B,
                       double *loss, float *grad)
{
    /* Z and yq are only read when no generator is given */
    return loss_grad_impl(m, (float *)Z, (float *)yq, B, loss, grad, NULL, 0, 0);
}

/* =============================================================== baselines */

/* Solve A x = b for symmetric positive definite A [k, k] (overwritten by its
 * Cholesky factor). Returns 0, or -1 when A is not positive definite. */
static int chol_solve(int k, double *A, double *b)
{
    for (int j = 0; j < k; j++) {
        double s = A[j * k + j];
        for (int t = 0; t < j; t++) {
            s -= A[j * k + t] * A[j * k + t];
        }
        if (!(s > 0.0)) {
            return -1;
        }
        s = sqrt(s);
        A[j * k + j] = s;
        for (int i = j + 1; i < k; i++) {
            double u = A[i * k + j];
            for (int t = 0; t < j; t++) {
                u -= A[i * k + t] * A[j * k + t];
            }
            A[i * k + j] = u / s;
        }
    }
    for (int i = 0; i < k; i++) { /* L y = b */
        double s = b[i];
        for (int t = 0; t < i; t++) {
            s -= A[i * k + t] * b[t];
        }
        b[i] = s / A[i * k + i];
    }
    for (int i = k - 1; i >= 0; i--) { /* L^T x = y */
        double s = b[i];
        for (int t = i + 1; t < k; t++) {
            s -= A[t * k + i] * b[t];
        }
        b[i] = s / A[i * k + i];
    }
    return 0;
}

#define ICL_MAXK 64 /* largest d the baselines handle (d x d systems on the stack) */

double lina_icl_ridge(int d, int n, const float *Z, double lambda, double *w_out)
{
    const int D = d + 1;
    double M[ICL_MAXK * ICL_MAXK];
    double w[ICL_MAXK];
    if (d < 1 || d > ICL_MAXK || n < 1 || !(lambda >= 0.0)) {
        return NAN;
    }
    int primal = lambda > 0.0 || n >= d;
    int rc = -1;
    for (int attempt = 0; attempt < 2 && rc != 0; attempt++) {
        double jitter = attempt ? 1e-10 : 0.0;
        if (primal) {
            for (int a = 0; a < d; a++) {
                for (int b = 0; b <= a; b++) {
                    double s = 0.0;
                    for (int i = 0; i < n; i++) {
                        s += (double)Z[i * D + a] * (double)Z[i * D + b];
                    }
                    M[a * d + b] = M[b * d + a] = s;
                }
                M[a * d + a] += lambda + jitter * (M[a * d + a] + 1.0);
                double s = 0.0;
                for (int i = 0; i < n; i++) {
                    s += (double)Z[i * D + a] * (double)Z[i * D + d];
                }
                w[a] = s;
            }
            rc = chol_solve(d, M, w);
        } else { /* min-norm: w = X^T (X X^T)^-1 y */
            double al[ICL_MAXK];
            for (int i = 0; i < n; i++) {
                for (int j = 0; j <= i; j++) {
                    double s = 0.0;
                    for (int a = 0; a < d; a++) {
                        s += (double)Z[i * D + a] * (double)Z[j * D + a];
                    }
                    M[i * n + j] = M[j * n + i] = s;
                }
                M[i * n + i] += jitter * (M[i * n + i] + 1.0);
                al[i] = Z[i * D + d];
            }
            rc = chol_solve(n, M, al); /* n < d <= ICL_MAXK */
            if (rc == 0) {
                for (int a = 0; a < d; a++) {
                    double s = 0.0;
                    for (int i = 0; i < n; i++) {
                        s += (double)Z[i * D + a] * al[i];
                    }
                    w[a] = s;
                }
            }
        }
    }
    if (rc != 0) {
        return NAN;
    }
    double pred = 0.0;
    for (int a = 0; a < d; a++) {
        pred += w[a] * (double)Z[(size_t)n * D + a];
        if (w_out) {
            w_out[a] = w[a];
        }
    }
    return pred;
}

double lina_icl_adaridge(int d, int n, const float *Z)
{
    if (n <= d || d > ICL_MAXK) {
        return lina_icl_ridge(d, n, Z, 0.0, NULL);
    }
    const int D = d + 1;
    double w[ICL_MAXK];
    lina_icl_ridge(d, n, Z, 0.0, w);
    double rss = 0.0;
    for (int i = 0; i < n; i++) {
        double p = 0.0;
        for (int a = 0; a < d; a++) {
            p += w[a] * (double)Z[i * D + a];
        }
        double e = (double)Z[i * D + d] - p;
        rss += e * e;
    }
    return lina_icl_ridge(d, n, Z, rss / (n - d), NULL);
}

double lina_icl_gd(int d, int n, const float *Z, int steps, double eta)
{
    const int D = d + 1;
    double w[ICL_MAXK], gr[ICL_MAXK];
    if (d < 1 || d > ICL_MAXK || n < 1 || steps < 0) {
        return NAN;
    }
    memset(w, 0, sizeof(double) * (size_t)d);
    for (int k = 0; k < steps; k++) {
        memset(gr, 0, sizeof(double) * (size_t)d);
        for (int i = 0; i < n; i++) {
            double r = -(double)Z[i * D + d];
            for (int a = 0; a < d; a++) {
                r += w[a] * (double)Z[i * D + a];
            }
            for (int a = 0; a < d; a++) {
                gr[a] += r * (double)Z[i * D + a];
            }
        }
        for (int a = 0; a < d; a++) {
            w[a] -= eta / n * gr[a];
        }
    }
    double pred = 0.0;
    for (int a = 0; a < d; a++) {
        pred += w[a] * (double)Z[(size_t)n * D + a];
    }
    return pred;
}

/* ================================================================ training */

/* The tuning grids: lambda for CONSTRR, the step size of L-step GD. */
static const double LAMBDA_GRID[] = {0.0, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.2, 0.5, 1.0, 2.0,
                                     3.0, 5.0,  7.0,  10.0, 15.0, 20.0, 30.0, 50.0, 100.0};
#define ICL_NLAMBDA ((int)(sizeof LAMBDA_GRID / sizeof LAMBDA_GRID[0]))
#define ICL_NETA 40
#define ETA_STEP 0.05
#define ICL_NGRID (ICL_NLAMBDA + ICL_NETA) /* >= 6: also the test pass's row width */

void lina_icl_opts_default(lina_icl_opts *o)
{
    memset(o, 0, sizeof *o);
    o->data.d = 5;
    o->data.n = 20;
    o->data.noise = LINA_ICL_NOISE_NONE;
    o->data.nsigma = 2;
    o->data.sigmas[0] = 1.0;
    o->data.sigmas[1] = 3.0;
    o->data.sigma_max = 3.0;
    o->layers = 3;
    o->heads = 1;
    o->variant = LINA_ICL_AHN;
    o->steps = 1000;
    o->batch = 256;
    o->lr = 0.02;
    o->optim = LINA_ICL_ADAM;
    o->beta1 = 0.9;
    o->beta2 = 0.9;
    o->momentum = 0.9;
    o->clip = 1.0;
    o->init_std = 0.05;
    o->seed = 0;
    o->test_size = 10000;
    o->progress = 1;
}

static void fmt_eta(char *buf, size_t cap, double s)
{
    if (!(s >= 0.0) || s > 1e7) {
        snprintf(buf, cap, "?");
    } else if (s >= 3600.0) {
        snprintf(buf, cap, "%dh%02dm", (int)(s / 3600.0), (int)fmod(s / 60.0, 60.0));
    } else if (s >= 60.0) {
        snprintf(buf, cap, "%dm%02ds", (int)(s / 60.0), (int)fmod(s, 60.0));
    } else {
        snprintf(buf, cap, "%.0fs", s);
    }
}

static int check_opts(const lina_icl_opts *o)
{
    const lina_icl_data *g = &o->data;
    if (g->d < 1 || g->d > 64 || g->n < 1 || g->n > 4096) {
        return lina_set_error(LINA_EINVAL, "icl: d must be in 1..64 and n in 1..4096");
    }
    if (g->noise < LINA_ICL_NOISE_NONE || g->noise > LINA_ICL_NOISE_UNIFORM ||
        (g->noise == LINA_ICL_NOISE_MIXED && (g->nsigma < 1 || g->nsigma > LINA_ICL_MAX_SIGMAS)) ||
        !(g->sigma_max >= 0.0 && isfinite(g->sigma_max))) {
        return lina_set_error(LINA_EINVAL, "icl: bad noise settings");
    }
    for (int i = 0; i < g->nsigma; i++) {
        if (!(g->sigmas[i] >= 0.0 && isfinite(g->sigmas[i]))) {
            return lina_set_error(LINA_EINVAL, "icl: noise levels must be finite and >= 0");
        }
    }
    if (o->layers < 1 || o->layers > 64 || o->heads < 1 || o->heads > 64 || o->steps < 1 ||
        o->batch < 1 || o->batch > 1000000 || o->test_size < 1 || o->test_size > 10000000) {
        return lina_set_error(LINA_EINVAL, "icl: layers, heads, steps, batch and test size must be "
                                           ">= 1 (layers, heads <= 64)");
    }
    if (!(o->lr > 0.0 && isfinite(o->lr)) || !(o->beta1 >= 0.0 && o->beta1 < 1.0) ||
        !(o->beta2 >= 0.0 && o->beta2 < 1.0) || !(o->momentum >= 0.0 && o->momentum < 1.0) ||
        !(o->init_std >= 0.0 && isfinite(o->init_std)) || isnan(o->clip) ||
        (o->optim != LINA_ICL_ADAM && o->optim != LINA_ICL_SGD)) {
        return lina_set_error(LINA_EINVAL, "icl: bad optimizer settings");
    }
    return LINA_OK;
}

int lina_icl_train(const lina_icl_opts *o, lina_icl_result *res)
{
    int rc = check_opts(o);
    if (rc != LINA_OK) {
        return rc;
    }
    const double t_start = lina_now();
    const lina_icl_data *g = &o->data;
    const int d = g->d, n = g->n, B = o->batch, NT = o->test_size;
    const size_t td = (size_t)(n + 1) * (d + 1);
    memset(res, 0, sizeof *res);

    lina_icl_model m;
    rc = lina_icl_model_init(&m, d, n, o->layers, o->heads, o->variant, o->init_std, o->seed);
    if (rc != LINA_OK) {
        return rc;
    }
    const size_t np = (size_t)m.nparams;
    size_t nbig = (size_t)(B > NT ? B : NT);
    float *Z = malloc(sizeof(float) * nbig * td);
    float *yq = malloc(sizeof(float) * nbig);
    float *sg = malloc(sizeof(float) * nbig);
    float *pred = malloc(sizeof(float) * nbig);
    float *grad = malloc(sizeof(float) * np);
    float *mom = calloc(np, sizeof(float));
    double *err = malloc(sizeof(double) * ICL_NGRID * (size_t)NT);
    float *am = calloc(np, sizeof(float)), *av = calloc(np, sizeof(float)); /* Adam moments */
    if (!Z || !yq || !sg || !pred || !grad || !mom || !err || !am || !av) {
        rc = lina_set_error(LINA_ENOMEM, "icl: out of memory");
    }
    const uint64_t s_train = stream_of(o->seed, 1), s_val = stream_of(o->seed, 2),
                   s_test = stream_of(o->seed, 3);
    const int tty = o->progress && isatty(fileno(stderr));
    const int64_t tail = o->steps / 100 > 1 ? o->steps / 100 : 1;
    double tail_sum = 0.0, last_print = 0.0;
    for (int64_t s = 0; s < o->steps && rc == LINA_OK; s++) {
        double loss = 0.0;
        rc = loss_grad_impl(&m, Z, yq, B, &loss, grad, g, s_train, (uint64_t)s * (uint64_t)B);
        if (rc != LINA_OK) {
            break;
        }
        if (!isfinite(loss)) {
            rc = lina_set_error(LINA_ENONFINITE, "icl: training loss is not finite at step %lld "
                                                 "(lower --lr)",
                                (long long)s + 1);
            break;
        }
        if (o->curve) {
            o->curve[s] = loss;
        }
        if (s >= o->steps - tail) {
            tail_sum += loss;
        }
        double lr = o->lr;
        if (o->cosine) {
            double f = (double)s / (double)o->steps;
            lr = o->lr * (0.1 + 0.9 * 0.5 * (1.0 + cos(3.141592653589793 * f)));
        }
        /* global-norm clipping and the update: serial (a few thousand entries at most;
         * no parallel region, so a step has one barrier) */
        double gn = 0.0;
        for (size_t i = 0; i < np; i++) {
            gn += (double)grad[i] * grad[i];
        }
        gn = sqrt(gn);
        const double clipf = o->clip > 0.0 && gn > o->clip ? o->clip / (gn + 1e-6) : 1.0;
        if (o->optim == LINA_ICL_ADAM) {
            /* Adam (torch semantics, no weight decay): bias-corrected moments */
            const double t = (double)(s + 1);
            const double c1 = 1.0 - pow(o->beta1, t), c2 = 1.0 - pow(o->beta2, t);
            for (size_t i = 0; i < np; i++) {
                const double gi = grad[i] * clipf;
                am[i] = (float)(o->beta1 * am[i] + (1.0 - o->beta1) * gi);
                av[i] = (float)(o->beta2 * av[i] + (1.0 - o->beta2) * gi * gi);
                m.params[i] -= (float)(lr * (am[i] / c1) / (sqrt(av[i] / c2) + 1e-8));
            }
        } else { /* SGD with momentum (heavy ball): b = mu b + g; p -= lr b */
            for (size_t i = 0; i < np; i++) {
                float gi = (float)(grad[i] * clipf);
                mom[i] = s == 0 ? gi : (float)(o->momentum * mom[i] + gi);
                m.params[i] -= (float)(lr * mom[i]);
            }
        }
        if (tty) {
            double now = lina_now();
            if (now - last_print > 0.2 || s + 1 == o->steps) {
                last_print = now;
                char eta[32];
                double el = now - t_start;
                fmt_eta(eta, sizeof eta, el / (double)(s + 1) * (double)(o->steps - s - 1));
                fprintf(stderr, "\rstep %lld/%lld  loss %.4g  lr %.3g  ETA %s   ", (long long)s + 1,
                        (long long)o->steps, loss, lr, eta);
                if (s + 1 == o->steps) {
                    fprintf(stderr, "\n");
                }
                fflush(stderr);
            }
        }
    }
    if (rc == LINA_OK) {
        res->nparams = m.ntrain;
        res->final_loss = tail_sum / (double)tail;
        /* lambda for CONSTRR and the step of L-step GD: tuned on held-out sequences,
         * every grid point in one pass (squared errors per sequence, summed in order) */
        rc = lina_icl_sample(g, s_val, 0, NT, Z, yq, sg, NULL);
#pragma omp parallel for schedule(static)
        for (int b = 0; b < NT; b++) {
            const float *z = Z + (size_t)b * td;
            double *e = err + (size_t)ICL_NGRID * b;
            for (int i = 0; i < ICL_NLAMBDA; i++) {
                double r = lina_icl_ridge(d, n, z, LAMBDA_GRID[i], NULL) - yq[b];
                e[i] = r * r;
            }
            for (int i = 0; i < ICL_NETA; i++) {
                double r = lina_icl_gd(d, n, z, o->layers, ETA_STEP * (i + 1)) - yq[b];
                e[ICL_NLAMBDA + i] = r * r;
            }
        }
        double best_r = INFINITY, best_g = INFINITY;
        for (int i = 0; i < ICL_NGRID; i++) {
            double sum = 0.0;
            for (int b = 0; b < NT; b++) {
                sum += err[(size_t)ICL_NGRID * b + i];
            }
            if (i < ICL_NLAMBDA && sum < best_r) {
                best_r = sum;
                res->ridge_lambda = LAMBDA_GRID[i];
            } else if (i >= ICL_NLAMBDA && sum < best_g) {
                best_g = sum;
                res->gd_eta = ETA_STEP * (i - ICL_NLAMBDA + 1);
            }
        }
        /* test */
        if (rc == LINA_OK) {
            rc = lina_icl_sample(g, s_test, 0, NT, Z, yq, sg, NULL);
        }
        if (rc == LINA_OK) {
            rc = lina_icl_forward(&m, Z, NT, NULL, pred);
        }
    }
    if (rc == LINA_OK) {
        const double lam = res->ridge_lambda;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < NT; b++) {
            const float *z = Z + (size_t)b * td;
            double y = yq[b], *e = err + (size_t)ICL_NGRID * b;
            e[0] = (double)pred[b] - y;
            e[1] = lina_icl_ridge(d, n, z, lam, NULL) - y;
            e[2] = lina_icl_ridge(d, n, z, 0.0, NULL) - y;
            e[3] = lina_icl_ridge(d, n, z, (double)sg[b] * sg[b], NULL) - y;
            e[4] = lina_icl_adaridge(d, n, z) - y;
            e[5] = lina_icl_gd(d, n, z, o->layers, res->gd_eta) - y;
        }
        double se = 0.0, sr = 0.0, sl = 0.0, so = 0.0, sa = 0.0, sd = 0.0;
        for (int b = 0; b < NT; b++) {
            const double *e = err + (size_t)ICL_NGRID * b;
            sd += e[5] * e[5];
            se += e[0] * e[0];
            sr += e[1] * e[1];
            sl += e[2] * e[2];
            so += e[3] * e[3];
            sa += e[4] * e[4];
        }
        res->test_mse = se / NT;
        res->ridge_mse = sr / NT;
        res->lstsq_mse = sl / NT;
        res->oracle_mse = so / NT;
        res->adaridge_mse = sa / NT;
        res->gd_mse = sd / NT;
        if (!isfinite(res->test_mse)) {
            rc = lina_set_error(LINA_ENONFINITE, "icl: test error is not finite");
        }
    }
    res->wall_s = lina_now() - t_start;
    free(am);
    free(av);
    free(Z);
    free(yq);
    free(sg);
    free(pred);
    free(grad);
    free(mom);
    free(err);
    lina_icl_model_free(&m);
    return rc;
}

/* =========================================================== paper sweep */

/* Part A: Ahn et al. (d 5, n 20, noiseless, AHN parametrisation), Adam vs SGD with
 * momentum at depths 1..3. Part B: Vladymyrov et al.'s mixed noise (d 10, n 20,
 * sigma in {1, 3}, FULL), Adam at depths 1..4, against the ridge baselines. */
#define PA_STEPS 1500
#define PA_BATCH 1000
#define PB_STEPS 3000
#define PB_BATCH 256
#define PA_DEPTHS 3
#define PB_DEPTHS 4
#define PB_LR 3e-3
#define PB_BETA2 0.9
#define PB_INIT 0.05

/* Moving average over w steps, sampled at most every `stride` steps, into x/y. */
static int smooth_curve(const double *c, int64_t n, int w, double *x, double *y)
{
    int k = 0;
    const int64_t stride = (n + 399) / 400; /* at most 400 points */
    for (int64_t i = 0; i < n; i += stride) {
        int64_t lo = i - w + 1 > 0 ? i - w + 1 : 0;
        double s = 0.0;
        for (int64_t j = lo; j <= i; j++) {
            s += c[j];
        }
        x[k] = (double)(i + 1);
        y[k] = s / (double)(i - lo + 1);
        k++;
    }
    return k;
}

static void fmt_sci(char *buf, size_t cap, double v)
{
    if (!isfinite(v)) {
        snprintf(buf, cap, "n/a");
    } else if (fabs(v) >= 0.01 && fabs(v) < 1000.0) {
        snprintf(buf, cap, "%.3g", v);
    } else {
        snprintf(buf, cap, "%.2e", v);
    }
}

int lina_icl_paper(const char *outdir, int threads, FILE *md)
{
    if (!outdir || !md) {
        return lina_set_error(LINA_EINVAL, "icl: paper: output directory and report are required");
    }
    if (threads > 0) {
        lina_set_threads(threads);
    }
    const double t0 = lina_now();
    const int na = 2 * PA_DEPTHS, nbm = PB_DEPTHS;
    lina_icl_result ra[2 * PA_DEPTHS], rb[PB_DEPTHS];
    double *curves = malloc(sizeof(double) * ((size_t)na * PA_STEPS + (size_t)nbm * PB_STEPS));
    double *px = malloc(sizeof(double) * 8 * 401), *py = malloc(sizeof(double) * 8 * 401);
    if (!curves || !px || !py) {
        free(curves);
        free(px);
        free(py);
        return lina_set_error(LINA_ENOMEM, "icl: paper: out of memory");
    }
    /* The runs are independent: they run concurrently, one per thread (each run's
     * own parallel regions are then nested and run serially). A run's numbers do not
     * depend on how many threads it gets, so the report is the same for any count. */
    const int nrun = na + nbm;
    int order[2 * PA_DEPTHS + PB_DEPTHS], rcs[2 * PA_DEPTHS + PB_DEPTHS];
    int k = 0;
    for (int i = nbm - 1; i >= 0; i--) { /* longest first: mixed noise, deepest first */
        order[k++] = na + i;
    }
    for (int L = PA_DEPTHS; L >= 1; L--) {
        order[k++] = L - 1;
        order[k++] = PA_DEPTHS + L - 1;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int j = 0; j < nrun; j++) {
        const int i = order[j];
        lina_icl_opts o;
        lina_icl_opts_default(&o);
        o.progress = 0;
        if (i < na) {
            o.optim = i < PA_DEPTHS ? LINA_ICL_ADAM : LINA_ICL_SGD;
            o.layers = i % PA_DEPTHS + 1;
            o.steps = PA_STEPS;
            o.batch = PA_BATCH;
            o.curve = curves + (size_t)i * PA_STEPS;
            rcs[i] = lina_icl_train(&o, &ra[i]);
            if (rcs[i] == LINA_OK) {
#pragma omp critical(icl_paper_log)
                fprintf(stderr, "icl paper: Ahn set-up, %s, %d layer(s): test MSE %.3g (%.1f s)\n",
                        o.optim == LINA_ICL_ADAM ? "Adam" : "SGD-momentum", o.layers,
                        ra[i].test_mse, ra[i].wall_s);
            }
        } else {
            const int ib = i - na;
            o.data.d = 10;
            o.data.n = 20;
            o.data.noise = LINA_ICL_NOISE_MIXED;
            o.data.nsigma = 2;
            o.data.sigmas[0] = 1.0;
            o.data.sigmas[1] = 3.0;
            o.variant = LINA_ICL_FULL;
            o.layers = ib + 1;
            o.steps = PB_STEPS;
            o.batch = PB_BATCH;
            o.lr = PB_LR;
            o.beta2 = PB_BETA2;
            o.cosine = 1;
            o.init_std = PB_INIT;
            o.curve = curves + (size_t)na * PA_STEPS + (size_t)ib * PB_STEPS;
            rcs[i] = lina_icl_train(&o, &rb[ib]);
            if (rcs[i] == LINA_OK) {
#pragma omp critical(icl_paper_log)
                fprintf(stderr, "icl paper: mixed noise, FULL, %d layer(s): test MSE %.3g, oracle "
                                "%.3g (%.1f s)\n",
                        o.layers, rb[ib].test_mse, rb[ib].oracle_mse, rb[ib].wall_s);
            }
        }
    }
    int rc = LINA_OK;
    for (int i = 0; i < nrun && rc == LINA_OK; i++) {
        if (rcs[i] != LINA_OK) {
            rc = lina_set_error(rcs[i], "icl: paper: a run failed (run %d)", i);
        }
    }
    const double wall = lina_now() - t0;
    if (rc == LINA_OK) {
        /* loss curves: Ahn set-up at 3 layers (both optimisers), mixed noise at every depth */
        char path[4096];
        snprintf(path, sizeof path, "%s/icl_loss.png", outdir);
        lina_plot_series s[2 + PB_DEPTHS];
        char labels[2 + PB_DEPTHS][64];
        int ns = 0;
        for (int k = 0; k < 2; k++) {
            const int i = k * PA_DEPTHS + PA_DEPTHS - 1;
            snprintf(labels[ns], sizeof labels[ns], "Ahn d=5, L=%d, %s", PA_DEPTHS,
                     k == 0 ? "Adam" : "SGD-momentum");
            s[ns].label = labels[ns];
            s[ns].x = px + ns * 401;
            s[ns].y = py + ns * 401;
            s[ns].n = smooth_curve(curves + (size_t)i * PA_STEPS, PA_STEPS, 20, px + ns * 401,
                                   py + ns * 401);
            ns++;
        }
        for (int i = 0; i < nbm; i++) {
            snprintf(labels[ns], sizeof labels[ns], "mixed noise d=10, L=%d, Adam", i + 1);
            s[ns].label = labels[ns];
            s[ns].x = px + ns * 401;
            s[ns].y = py + ns * 401;
            s[ns].n = smooth_curve(curves + (size_t)na * PA_STEPS + (size_t)i * PB_STEPS, PB_STEPS,
                                   20, px + ns * 401, py + ns * 401);
            ns++;
        }
        lina_plot_opts po = {"in-context linear regression: training loss (20-step mean)", "step",
                             "squared error of the query prediction", 0, 1, 0, 0};
        rc = lina_plot_png(path, &po, s, ns);
    }
    if (rc == LINA_OK) {
        char a[32], b[32], c[32];
        fprintf(md, "\n## In-context linear regression (Ahn et al. 2024; Vladymyrov et al. "
                    "2024)\n\n");
        fprintf(md,
                "Linear transformers of L layers of residual linear self-attention, "
                "Z <- Z + (1/n) sum_h (Z Qt_h Z^T) A (Z Pt_h^T) with the query token masked "
                "as a source, 1 head, no MLP or normalisation; the query label is read as "
                "-Z[n, d]. Test MSE on 10000 fresh sequences; seed 0 for every run (one seed; "
                "the papers use 6 seeds and best of 5). Reduced budgets: Ahn set-up "
                "%d steps x batch %d (paper: 10000 x 1000), lr 0.02, clipping 1, Adam betas "
                "(0.9, 0.9) or SGD momentum 0.9, P/Q-only parametrisation (2 L d^2 parameters); "
                "mixed noise %d steps x batch %d (paper: 200000 x 2048, lr 1e-4), Adam lr %g "
                "with cosine decay to %g, same betas and clipping, FULL parametrisation "
                "(2 L (d+1)^2 parameters), sigma drawn from {1, 3} per sequence. Baselines in "
                "double: ridge with the true sigma^2 (oracle), one lambda tuned on 10000 "
                "held-out sequences (CONSTRR), lambda = RSS/(n - d) (ADARR), least squares, "
                "and L steps of gradient descent from w = 0 with the step tuned on the held-out "
                "sequences. \"adjusted\" = MSE - oracle MSE (Vladymyrov et al.'s metric).\n\n",
                PA_STEPS, PA_BATCH, PB_STEPS, PB_BATCH, PB_LR, PB_LR / 10);
        fprintf(md, "| set-up | model | optimiser | lina test MSE | lina adjusted | paper |\n");
        fprintf(md, "|---|---|---|---|---|---|\n");
        for (int i = 0; i < na; i++) {
            const int L = i % PA_DEPTHS + 1, adam = i < PA_DEPTHS;
            const char *paper = "-";
            if (L == 3) {
                paper = adam ? "~1.5e-3 within ~1k it. [fig]"
                             : "~2e-2 plateau, ~8e-3 at 10k it. [fig]";
            }
            fmt_sci(a, sizeof a, ra[i].test_mse);
            fprintf(md, "| Ahn d=5 n=20 noiseless | L=%d | %s | %s | - | %s |\n", L,
                    adam ? "Adam" : "SGD-mom.", a, paper);
        }
        for (int i = 0; i < PA_DEPTHS; i++) {
            fmt_sci(a, sizeof a, ra[i].gd_mse);
            fmt_sci(b, sizeof b, ra[i].gd_eta);
            fprintf(md, "| Ahn d=5 n=20 noiseless | %d step(s) of GD, eta %s | closed form | %s "
                        "| - | L-layer LT <= L steps of (preconditioned) GD [Ahn et al. 2023] |\n",
                    i + 1, b, a);
        }
        fmt_sci(a, sizeof a, ra[0].lstsq_mse);
        fprintf(md, "| Ahn d=5 n=20 noiseless | least squares | closed form | %s | - | "
                    "0 (exact) |\n",
                a);
        for (int i = 0; i < nbm; i++) {
            fmt_sci(a, sizeof a, rb[i].test_mse);
            fmt_sci(b, sizeof b, rb[i].test_mse - rb[i].oracle_mse);
            const char *paper = i == 0   ? "-"
                                : i == 1 ? "2-layer FULL behaves like GD++ (~ CONSTRR level)"
                                         : ">= 3 layers adapt to sigma (below CONSTRR); "
                                           "adjusted O(1e-2..1e-1)";
            fprintf(md, "| mixed noise d=10 n=20 sigma {1,3} | FULL L=%d | Adam | %s | %s | %s |\n",
                    i + 1, a, b, paper);
        }
        const lina_icl_result *r0 = &rb[0];
        fmt_sci(a, sizeof a, r0->oracle_mse);
        fprintf(md, "| mixed noise | ridge, true sigma (oracle) | closed form | %s | 0 | 0 |\n", a);
        fmt_sci(a, sizeof a, r0->ridge_mse);
        fmt_sci(b, sizeof b, r0->ridge_mse - r0->oracle_mse);
        fmt_sci(c, sizeof c, r0->ridge_lambda);
        fprintf(md, "| mixed noise | CONSTRR (lambda %s) | closed form | %s | %s | - |\n", c, a, b);
        fmt_sci(a, sizeof a, r0->adaridge_mse);
        fmt_sci(b, sizeof b, r0->adaridge_mse - r0->oracle_mse);
        fprintf(md, "| mixed noise | ADARR | closed form | %s | %s | - |\n", a, b);
        fmt_sci(a, sizeof a, r0->lstsq_mse);
        fmt_sci(b, sizeof b, r0->lstsq_mse - r0->oracle_mse);
        fprintf(md, "| mixed noise | least squares | closed form | %s | %s | - |\n\n", a, b);

        /* plain statements of agreement / disagreement, from the numbers above */
        const double adam3 = ra[PA_DEPTHS - 1].test_mse, sgd3 = ra[2 * PA_DEPTHS - 1].test_mse;
        fprintf(md, "Findings (wall time %.0f s for all %d runs, %d thread(s)):\n\n", wall,
                na + nbm, lina_get_threads());
        if (adam3 < sgd3 / 3.0) {
            fprintf(md, "- Adam >> SGD: agrees with the paper (3 layers: Adam %.2e vs SGD-momentum "
                        "%.2e, %.0fx lower).\n",
                    adam3, sgd3, sgd3 / adam3);
        } else {
            fprintf(md, "- Disagrees with the paper: Adam is not clearly better than SGD-momentum "
                        "here (3 layers: Adam %.2e vs SGD %.2e).\n",
                    adam3, sgd3);
        }
        if (adam3 > 1.5e-3 / 3.0 && adam3 < 1.5e-3 * 3.0) {
            fprintf(md, "- The 3-layer Adam loss (%.2e) matches the paper's ~1.5e-3 within a "
                        "factor of 3 after %d steps.\n",
                    adam3, PA_STEPS);
        } else {
            fprintf(md, "- Disagrees: the 3-layer Adam loss is %.2e, not within a factor 3 of the "
                        "paper's ~1.5e-3 (lina ran %d steps x batch %d, the paper 10000 x 1000).\n",
                    adam3, PA_STEPS, PA_BATCH);
        }
        if (sgd3 > 8e-3 / 3.0 && sgd3 < 2e-2 * 3.0) {
            fprintf(md, "- SGD-momentum at 3 layers (%.2e) sits in the paper's band (~2e-2 plateau "
                        "to ~8e-3 at 10k steps).\n",
                    sgd3);
        } else {
            fprintf(md, "- Disagrees: SGD-momentum at 3 layers reaches %.2e, outside the paper's "
                        "~8e-3 .. ~2e-2 band.\n",
                    sgd3);
        }
        int mono = 1;
        for (int i = 1; i < PA_DEPTHS; i++) {
            mono &= ra[i].test_mse < ra[i - 1].test_mse;
        }
        fprintf(md, "- Depth (Adam, noiseless): %s.\n",
                mono ? "the error falls with every added layer, as an L-layer model implementing "
                       "L steps of preconditioned GD predicts"
                     : "the error does NOT fall with every added layer here");
        int beat_gd = 1;
        for (int i = 0; i < PA_DEPTHS; i++) {
            beat_gd &= ra[i].test_mse <= 1.05 * ra[i].gd_mse; /* 5 %: one seed's noise */
        }
        fprintf(md, "- L-layer linear transformer (Adam) vs L steps of GD with a tuned step (");
        for (int i = 0; i < PA_DEPTHS; i++) {
            fprintf(md, "%sL=%d: %.3g vs %.3g", i ? "; " : "", i + 1, ra[i].test_mse,
                    ra[i].gd_mse);
        }
        fprintf(md, "): %s.\n",
                beat_gd ? "the transformer is as good (within 5 %) or better at every depth, as "
                          "Ahn et al. (2023) report"
                        : "Disagrees at some depth: the transformer is more than 5 % worse than "
                          "plain GD there");
        const double cr = r0->ridge_mse, ar = r0->adaridge_mse;
        int best = 0;
        for (int i = 1; i < nbm; i++) {
            if (rb[i].test_mse < rb[best].test_mse) {
                best = i;
            }
        }
        fprintf(md, "- Mixed noise: the best depth is L=%d (adjusted %.3g; CONSTRR %.3g, ADARR "
                    "%.3g). ",
                best + 1, rb[best].test_mse - r0->oracle_mse, cr - r0->oracle_mse,
                ar - r0->oracle_mse);
        int deep_beat = 0;
        for (int i = 2; i < nbm; i++) {
            deep_beat |= rb[i].test_mse < cr;
        }
        for (int i = 2; i < nbm; i++) {
            const double adj = rb[i].test_mse - r0->oracle_mse;
            fprintf(md, "L=%d adjusted %.3g: %s. ", i + 1, adj,
                    adj <= 0.1 ? "within the paper's O(1e-2..1e-1)"
                               : "above the paper's O(1e-2..1e-1) (shorter training)");
        }
        for (int i = 0; i < nbm; i++) {
            const double *c = curves + (size_t)na * PA_STEPS + (size_t)i * PB_STEPS;
            double mx = 0.0;
            for (int t = 100; t < PB_STEPS; t++) {
                mx = c[t] > mx ? c[t] : mx;
            }
            if (mx > 10.0 * rb[i].final_loss) {
                fprintf(md, "L=%d training is spiky (largest batch loss after step 100 is %.0fx "
                            "the final one; see icl_loss.png). ",
                        i + 1, mx / rb[i].final_loss);
            }
        }
        if (deep_beat) {
            fprintf(md, "A model with >= 3 layers beats the single tuned lambda (CONSTRR), i.e. it "
                        "adapts to the noise level: agrees with the paper.\n");
        } else {
            fprintf(md, "No model with >= 3 layers beats the single tuned lambda (CONSTRR) at this "
                        "budget: lina does not reproduce the paper's noise adaptation here (the "
                        "paper trains ~500x more sequences).\n");
        }
        fprintf(md, "\nReproduce one row: `lina task icl-regression --layers 3 --optim sgd --steps "
                    "%d --batch %d` or `lina task icl-regression --d 10 --noise mixed --sigmas 1,3 "
                    "--layers 3 --steps %d --batch %d --lr %g --cosine` (add `--json` for "
                    "every number). Loss curves: `icl_loss.png`.\n",
                PA_STEPS, PA_BATCH, PB_STEPS, PB_BATCH, PB_LR);
        fflush(md);
        if (ferror(md)) {
            rc = lina_set_error(LINA_EIO, "icl: paper: could not write the report");
        }
    }
    free(curves);
    free(px);
    free(py);
    return rc;
}
