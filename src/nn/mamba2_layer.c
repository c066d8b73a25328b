/* mamba2_layer.c -- FLA's Mamba2 mixer (docs/mixers.md section 6): in_proj, the
 * causal conv on xBC, softplus time steps, the SSD recurrence on the
 * diagonal-decay engine (optionally with negative decays, docs/tasks.md 2.1), the
 * D skip, the grouped gated RMSNorm and out_proj. Forward and backward; the
 * math and the symbols are in mamba2_layer.h. */
#include "mamba2_layer.h"

#include "nn.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define M2_MAX_DIM (1 << 24)

/* derived sizes */
static int m2_E(const lina_mamba2_dims *d)
{
    return d->H * d->P;
}

static int m2_Cc(const lina_mamba2_dims *d)
{
    return d->H * d->P + 2 * d->G * d->N;
}

#if LINA_ISA_PRIMARY
int lina_mamba2_check_dims(const lina_mamba2_dims *d)
{
    if (!d || d->D < 1 || d->H < 1 || d->P < 1 || d->N < 1 || d->G < 1 || d->W < 1) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: hidden_size, heads, head_dim, state_size, n_groups and "
                                           "conv_kernel must be >= 1");
    }
    if (d->H % d->G != 0) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: num_heads (%d) is not a multiple of n_groups (%d)", d->H,
                              d->G);
    }
    if ((double)d->H * d->P + 2.0 * d->G * d->N + (double)d->H * d->P + d->H > M2_MAX_DIM ||
        (double)d->H * d->N > M2_MAX_DIM || d->D > M2_MAX_DIM || d->W > 1024) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: dims too large (E=%d, N=%d, G=%d, W=%d)", d->H * d->P,
                              d->N, d->G, d->W);
    }
    if (d->chunk < 1) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: chunk_size must be >= 1 (got %d)", d->chunk);
    }
    if (d->rmsnorm && !(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

size_t lina_mamba2_acts_floats(const lina_mamba2_dims *d, int R)
{
    size_t r = (size_t)R, E = (size_t)m2_E(d), Cc = (size_t)m2_Cc(d), H = (size_t)d->H;
    size_t HN = H * (size_t)d->N;
    return r * (E + Cc + H + Cc + H + H + (d->allow_neg_eigval ? H : 0) + 2 * HN + E + E + (size_t)d->G + E);
}

void lina_mamba2_acts_carve(lina_mamba2_acts *a, float *buf, const lina_mamba2_dims *d, int R)
{
    size_t r = (size_t)R, E = (size_t)m2_E(d), Cc = (size_t)m2_Cc(d), H = (size_t)d->H;
    size_t HN = H * (size_t)d->N;
    float *p = buf;
    a->z = p;      p += r * E;
    a->xpre = p;   p += r * Cc;
    a->dtr = p;    p += r * H;
    a->xbc = p;    p += r * Cc;
    a->delta = p;  p += r * H;
    a->g = p;      p += r * H;
    a->sg = NULL;
    if (d->allow_neg_eigval) {
        a->sg = p; p += r * H;
    }
    a->q = p;      p += r * HN;
    a->k = p;      p += r * HN;
    a->v = p;      p += r * E;
    a->y = p;      p += r * E;
    a->rstd = p;   p += r * (size_t)d->G;
    a->yn = p;
}

size_t lina_mamba2_scratch_floats(const lina_mamba2_dims *d, int R)
{
    size_t r = (size_t)R, E = (size_t)m2_E(d), Cc = (size_t)m2_Cc(d), H = (size_t)d->H;
    size_t HN = H * (size_t)d->N;
    /* dyn, dy, dz, dv [E]; dxbc, dxpre [Cc]; dq, dk [HN]; dg, ddt [H] */
    return r * (4 * E + 2 * Cc + 2 * HN + 2 * H);
}

size_t lina_mamba2_state_floats(const lina_mamba2_dims *d, int B)
{
    return (size_t)B * ((size_t)m2_Cc(d) * d->W + (size_t)d->H * d->N * d->P);
}

#endif /* LINA_ISA_PRIMARY */

static double m2_sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static double m2_softplus(double x)
{
    return x > 20.0 ? x : log1p(exp(x));
}

/* ------------------------------------------------------------- forward */

/* A = -exp(A_log) per head, in double (malloc'd; NULL when out of memory): taken
 * once per call rather than once per row and head */
static double *m2_neg_A(const lina_mamba2_dims *d, const lina_mamba2_params *p)
{
    double *A = malloc((size_t)d->H * sizeof(double));
    for (int h = 0; A && h < d->H; h++) {
        A[h] = -exp((double)p->A_log[h]);
    }
    return A;
}

/* time steps, log gates, signs and the engine inputs q, k, v of row n, every head (its
 * outputs written in one pass); with negative eigenvalues sigma runs over the sequence
 * per head, read back from the previous row's sg (first: the sequence's first row) */
static void m2_prepare_row(lina_mamba2_acts *a, const lina_mamba2_dims *d, const lina_mamba2_params *p,
                           const double *Am, size_t n, int first)
{
    const int H = d->H, P = d->P, N = d->N, E = m2_E(d), Cc = m2_Cc(d), hpg = d->H / d->G;
    const float *xbc = a->xbc + n * Cc;
    for (int h = 0; h < H; h++) {
        const size_t nh = n * H + h;
        const int grp = h / hpg;
        const float *xs = xbc + (size_t)h * P;
        const float *Bm = xbc + E + (size_t)grp * N, *Cm = xbc + E + (size_t)(d->G + grp) * N;
        const double A = Am[h];
        const double dl = m2_softplus((double)a->dtr[nh] + p->dt_bias[h]);
        const double ga = dl * A;
        float gl = (float)ga, sigma = 1.0f;
        if (d->allow_neg_eigval) {
            const double av = 2.0 * exp(ga) - 1.0;
            const double la = log(fabs(av));
            gl = la > LINA_MAMBA2_LOG_DECAY_MIN ? (float)la : LINA_MAMBA2_LOG_DECAY_MIN;
            sigma = first ? 1.0f : a->sg[nh - H];
            sigma = av < 0.0 ? -sigma : sigma;
            a->sg[nh] = sigma;
        }
        a->delta[nh] = (float)dl;
        a->g[nh] = gl;
        float *q = a->q + nh * N, *k = a->k + nh * N;
#pragma omp simd
        for (int i = 0; i < N; i++) {
            q[i] = sigma * Cm[i];
            k[i] = sigma * Bm[i];
        }
        float *v = a->v + n * E + (size_t)h * P;
        const float df = (float)dl;
#pragma omp simd
        for (int j = 0; j < P; j++) {
            v[j] = df * xs[j];
        }
    }
}

/* one row: acc[i] (set: =, else +=) D_i u[i] with D per channel or per head (P channels each) */
static void m2_dskip(float *acc, const float *u, const float *Dskip, const lina_mamba2_dims *d, int set)
{
    const int E = m2_E(d), P = d->P;
    if (d->D_has_hdim) {
#pragma omp simd
        for (int i = 0; i < E; i++) {
            acc[i] = (set ? 0.0f : acc[i]) + Dskip[i] * u[i];
        }
        return;
    }
    for (int h = 0; h < E / P; h++) {
        const float dh = Dskip[h];
        float *a = acc + (size_t)h * P;
        const float *x = u + (size_t)h * P;
#pragma omp simd
        for (int j = 0; j < P; j++) {
            a[j] = (set ? 0.0f : a[j]) + dh * x[j];
        }
    }
}

/* yn = gated grouped RMSNorm of y with gate z, one row; the gate's sigmoids
 * are taken first, through the vector exp, into yn, each read before its
 * element is written */
static void m2_norm_row(float *yn, float *rstd, const float *y, const float *z, const float *w,
                        const lina_mamba2_dims *d)
{
    const int E = m2_E(d), gs = E / d->G;
    lina_vsigmoid(yn, z, (size_t)E);
    if (!d->rmsnorm) {
        for (int i = 0; i < E; i++) {
            yn[i] = y[i] * (z[i] * yn[i]);
        }
        return;
    }
    for (int gi = 0; gi < d->G; gi++) {
        const int o = gi * gs;
        double ss = 0.0;
        if (d->norm_before_gate) {
#pragma omp simd reduction(+ : ss)
            for (int i = o; i < o + gs; i++) {
                ss += (double)y[i] * y[i];
            }
        } else {
#pragma omp simd reduction(+ : ss)
            for (int i = o; i < o + gs; i++) {
                const double u = (double)y[i] * (z[i] * yn[i]);
                ss += u * u;
            }
        }
        float r = (float)(1.0 / sqrt(ss / gs + d->norm_eps));
        rstd[gi] = r;
        if (d->norm_before_gate) {
#pragma omp simd
            for (int i = o; i < o + gs; i++) {
                yn[i] = y[i] * r * w[i] * (z[i] * yn[i]);
            }
        } else {
#pragma omp simd
            for (int i = o; i < o + gs; i++) {
                yn[i] = y[i] * (z[i] * yn[i]) * r * w[i];
            }
        }
    }
}

int LINA_KFN(lina_mamba2_forward)(float *out, lina_mamba2_acts *a, const float *x, const lina_mamba2_dims *d,
                                  const lina_mamba2_params *p, int B, int T, float *state, const lina_sp *sp,
                                  lina_form form, lina_ws *ws)
{
    int rc = lina_mamba2_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!out || !a || !x || !p || B < 1 || T < 0) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: NULL argument or bad B=%d T=%d", B, T);
    }
    if (T == 0) {
        return LINA_OK;
    }
    const int D = d->D, H = d->H, E = m2_E(d), Cc = m2_Cc(d), R = B * T;
    const float *Win = p->in_proj;
    const float *bin = p->in_bias;
    /* in_proj as three row blocks: z [R,E], xBC [R,Cc], dt [R,H] */
    lina_linear_forward(a->z, x, Win, bin, R, D, E);
    lina_linear_forward(a->xpre, x, Win + (size_t)E * D, bin ? bin + E : NULL, R, D, Cc);
    lina_linear_forward(a->dtr, x, Win + (size_t)(E + Cc) * D, bin ? bin + E + Cc : NULL, R, D, H);
    /* conv + SiLU (the conv tail leads the state) */
    float *cache = state;
    float *S = state ? state + (size_t)B * Cc * d->W : NULL; /* [B,H,N,P] */
    if (sp && sp->size > 1) {
        /* with the conv's inputs before this piece */
        if (d->allow_neg_eigval) {
            return lina_set_error(LINA_EINVAL, "mamba2: sequence parallelism (--sp) with allow_neg_eigval is not "
                                               "supported");
        }
        if ((rc = lina_sp_conv_forward(sp, a->xbc, a->xpre, p->conv_w, d->use_conv_bias ? p->conv_b : NULL, B, T, Cc,
                                       d->W, LINA_ACT_SILU))) {
            return rc;
        }
    } else {
        lina_shortconv_forward(a->xbc, a->xpre, p->conv_w, d->use_conv_bias ? p->conv_b : NULL, cache, cache, B, T,
                               Cc, d->W, LINA_ACT_SILU);
    }
    double *Am = m2_neg_A(d, p);
    if (!Am) {
        return lina_set_error(LINA_ENOMEM, "mamba2 layer: out of memory");
    }
    if (d->allow_neg_eigval) {
        /* the signs run along each sequence */
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++) {
            for (int t = 0; t < T; t++) {
                m2_prepare_row(a, d, p, Am, (size_t)b * T + t, t == 0);
            }
        }
    } else {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < R; n++) {
            m2_prepare_row(a, d, p, Am, (size_t)n, 1);
        }
    }
    free(Am);
    /* the recurrence; the engine reads h0 and writes ht per (b, h) block, so
     * the state is updated in place */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->N, d->P, d->chunk, 1.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_SCALAR, a->g, S};
    lina_dd_out o = {.o = a->y, .ht = S, .states = NULL};
    if ((rc = lina_sp_dd_fwd(sp, d, &md, &in, &o, form, ws))) {
        return rc;
    }
    if (S && d->allow_neg_eigval) {
        /* S'_T = sigma_T S_T: back to the true state */
        const size_t NP = (size_t)d->N * d->P;
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                if (a->sg[((size_t)b * T + T - 1) * H + h] < 0.0f) {
                    float *s = S + ((size_t)b * H + h) * NP;
                    for (size_t i = 0; i < NP; i++) {
                        s[i] = -s[i];
                    }
                }
            }
        }
    }
    /* D skip, gated norm */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < R; n++) {
        float *y = a->y + (size_t)n * E;
        const float *xs = a->xbc + (size_t)n * Cc;
        m2_dskip(y, xs, p->Dskip, d, 0);
        m2_norm_row(a->yn + (size_t)n * E, a->rstd + (size_t)n * d->G, y, a->z + (size_t)n * E, p->norm_w, d);
    }
    lina_linear_forward(out, a->yn, p->out_proj, p->out_bias, R, E, D);
    return LINA_OK;
}

/* ------------------------------------------------------------ backward */

/* one row of the gated norm backward: dy, dz written; dw accumulated. The
 * gate's sigmoids go into dz first, each read before its element is written. */
static void m2_norm_row_bwd(float *dy, float *dz, float *dw, const float *dyn, const float *y, const float *z,
                            const float *w, const float *rstd, const lina_mamba2_dims *d)
{
    const int E = m2_E(d), gs = E / d->G;
    lina_vsigmoid(dz, z, (size_t)E);
    if (!d->rmsnorm) {
        for (int i = 0; i < E; i++) {
            const float s = dz[i];
            dy[i] = dyn[i] * (z[i] * s);
            dz[i] = dyn[i] * y[i] * (s * (1.0f + z[i] * (1.0f - s)));
        }
        return;
    }
    for (int gi = 0; gi < d->G; gi++) {
        const int o = gi * gs;
        const float r = rstd[gi];
        double m = 0.0;
#pragma omp simd reduction(+ : m)
        for (int i = o; i < o + gs; i++) {
            const float sz = z[i] * dz[i];
            float u = d->norm_before_gate ? y[i] : y[i] * sz;
            float gg = d->norm_before_gate ? dyn[i] * w[i] * sz : dyn[i] * w[i];
            m += (double)gg * u * r;
        }
        const float mm = (float)(m / gs);
        /* the same per-element arithmetic in loops without branches (they vectorise); dw
         * first, while dz still holds the gate's sigmoids */
        if (d->norm_before_gate) {
            if (dw) {
#pragma omp simd
                for (int i = o; i < o + gs; i++) {
                    dw[i] += dyn[i] * (y[i] * r) * (z[i] * dz[i]);
                }
            }
#pragma omp simd
            for (int i = o; i < o + gs; i++) {
                const float s = dz[i], sz = z[i] * s, dsz = s * (1.0f + z[i] * (1.0f - s));
                const float uh = y[i] * r;
                const float du = r * (dyn[i] * w[i] * sz - uh * mm);
                dy[i] = du;
                dz[i] = dyn[i] * uh * w[i] * dsz;
            }
        } else {
            if (dw) {
#pragma omp simd
                for (int i = o; i < o + gs; i++) {
                    dw[i] += dyn[i] * (y[i] * (z[i] * dz[i]) * r);
                }
            }
#pragma omp simd
            for (int i = o; i < o + gs; i++) {
                const float s = dz[i], sz = z[i] * s, dsz = s * (1.0f + z[i] * (1.0f - s));
                const float du = r * (dyn[i] * w[i] - y[i] * sz * r * mm);
                dy[i] = du * sz;
                dz[i] = du * y[i] * dsz;
            }
        }
    }
}

int LINA_KFN(lina_mamba2_backward)(float *dx, lina_mamba2_params *gp, const float *dout, const float *x,
                                   const lina_mamba2_acts *a, const lina_mamba2_dims *d, const lina_mamba2_params *p,
                                   int B, int T, float *scratch, const lina_sp *sp, lina_form form, lina_ws *ws)
{
    int rc = lina_mamba2_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!dout || !x || !a || !p || !gp || !scratch || B < 1 || T < 0) {
        return lina_set_error(LINA_EINVAL, "mamba2 layer: NULL argument or bad B=%d T=%d", B, T);
    }
    if (T == 0) {
        return LINA_OK;
    }
    const int D = d->D, H = d->H, P = d->P, N = d->N, G = d->G, E = m2_E(d), Cc = m2_Cc(d), R = B * T;
    const int hpg = H / G;
    const size_t r = (size_t)R, HN = (size_t)H * N;
    float *dyn = scratch;           /* [R,E] */
    float *dy = dyn + r * E;        /* [R,E] */
    float *dz = dy + r * E;         /* [R,E] */
    float *dv = dz + r * E;         /* [R,E] */
    float *dxbc = dv + r * E;       /* [R,Cc] */
    float *dxpre = dxbc + r * Cc;   /* [R,Cc] */
    float *dq = dxpre + r * Cc;     /* [R,H,N] */
    float *dk = dq + r * HN;        /* [R,H,N] */
    float *dg = dk + r * HN;        /* [R,H] */
    float *ddt = dg + r * H;        /* [R,H] */
    /* written whole: dyn (out_proj), dy, dz, ddt, dxbc (its D skip part set, B and C
     * zeroed, per row), the engine's dq, dk, dv, dg and dxpre (the conv; under sequence
     * parallelism it accumulates, zeroed there) */

    /* out_proj */
    lina_linear_backward_set(dyn, gp->out_proj, gp->out_bias, dout, a->yn, p->out_proj, R, E, D);
    /* gated norm: fixed runs of rows in parallel, each summing its rows' dw into its own
     * row of partial sums, which are then added in run order (the same bits on any
     * thread count) */
    {
        enum { M2_DW_STACK = 8192 };
        const int nrun = R < 64 ? R : 64, per = (R + nrun - 1) / nrun;
        float dws[M2_DW_STACK];
        const size_t pn = gp->norm_w ? (size_t)nrun * E : 0;
        float *part = pn <= M2_DW_STACK ? dws : calloc(pn, sizeof(float));
        if (!part) {
            return lina_set_error(LINA_ENOMEM, "mamba2 layer: out of memory");
        }
        if (part == dws) {
            memset(dws, 0, pn * sizeof(float));
        }
#pragma omp parallel for schedule(static)
        for (int run = 0; run < nrun; run++) {
            const int n1 = (run + 1) * per < R ? (run + 1) * per : R;
            for (int n = run * per; n < n1; n++) {
                m2_norm_row_bwd(dy + (size_t)n * E, dz + (size_t)n * E, pn ? part + (size_t)run * E : NULL,
                                dyn + (size_t)n * E, a->y + (size_t)n * E, a->z + (size_t)n * E, p->norm_w,
                                a->rstd + (size_t)n * G, d);
            }
        }
        for (size_t i = 0; pn && i < (size_t)E; i++) {
            double t = 0.0;
            for (int run = 0; run < nrun; run++) {
                t += part[(size_t)run * E + i];
            }
            gp->norm_w[i] += (float)t;
        }
        if (part != dws) {
            free(part);
        }
    }
    /* D skip: y += D x (x the post-conv head inputs) */
    if (gp->Dskip) {
        const int nd = d->D_has_hdim ? E : H;
        /* per head (or channel): 8 partial sums over the rows' products, element j of a
         * head's row (or row n for a channel) into lane j mod 8 (independent chains that
         * vectorise), the lanes added in order */
        double *l8 = calloc((size_t)nd * 8, sizeof(double));
        if (!l8) {
            return lina_set_error(LINA_ENOMEM, "mamba2 layer: out of memory");
        }
        for (int n = 0; n < R; n++) {
            const float *dyr = dy + (size_t)n * E, *xs = a->xbc + (size_t)n * Cc;
            if (d->D_has_hdim) {
                double *l = l8 + (size_t)(n & 7);
                for (int i = 0; i < nd; i++) {
                    l[(size_t)i * 8] += (double)dyr[i] * xs[i];
                }
                continue;
            }
            for (int i = 0; i < nd; i++) {
                const float *u = dyr + (size_t)i * P, *w = xs + (size_t)i * P;
                double *l = l8 + (size_t)i * 8;
                int j = 0;
                for (; j + 8 <= P; j += 8) {
                    for (int k = 0; k < 8; k++) {
                        l[k] += (double)u[j + k] * w[j + k];
                    }
                }
                for (int k = 0; j < P; j++, k++) {
                    l[k] += (double)u[j] * w[j];
                }
            }
        }
        for (int i = 0; i < nd; i++) {
            const double *l = l8 + (size_t)i * 8;
            gp->Dskip[i] += (float)(((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7])));
        }
        free(l8);
    }
    /* the recurrence */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->N, d->P, d->chunk, 1.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_SCALAR, a->g, NULL};
    lina_dd_grad_in gin = {dy, NULL, NULL};
    lina_dd_grad_out go = {dq, dk, dv, dg, NULL};
    if ((rc = lina_sp_dd_bwd(sp, d, &md, &in, &gin, &go, form, ws))) {
        return rc;
    }
    double *Am = m2_neg_A(d, p);
    if (!Am) {
        return lina_set_error(LINA_ENOMEM, "mamba2 layer: out of memory");
    }
    /* engine inputs back to xBC (its row set here: the D skip's part, B and C zeroed),
     * delta and the gate parameters; per row */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < R; n++) {
        const float *xbc = a->xbc + (size_t)n * Cc;
        float *dxs = dxbc + (size_t)n * Cc, *dB = dxs + E, *dC = dxs + E + (size_t)G * N;
        m2_dskip(dxs, dy + (size_t)n * E, p->Dskip, d, 1);
        memset(dB, 0, (size_t)(Cc - E) * sizeof(float));
        for (int h = 0; h < H; h++) {
            const size_t nh = (size_t)n * H + h;
            const float s = a->sg ? a->sg[nh] : 1.0f;
            const float *dqh = dq + nh * N, *dkh = dk + nh * N;
            const int grp = h / hpg;
            for (int i = 0; i < N; i++) {
                dC[(size_t)grp * N + i] += s * dqh[i];
                dB[(size_t)grp * N + i] += s * dkh[i];
            }
            const float dl = a->delta[nh];
            const float *dvh = dv + (size_t)n * E + (size_t)h * P;
            const float *xh = xbc + (size_t)h * P;
            /* d delta = dv . x: 8 double partial sums, element j into lane j mod 8
             * (independent chains), added in a fixed order */
            double l8[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int j = 0;
            for (; j + 8 <= P; j += 8) {
#pragma omp simd
                for (int u = 0; u < 8; u++) {
                    l8[u] += (double)dvh[j + u] * xh[j + u];
                }
            }
            for (int u = 0; j < P; j++, u++) {
                l8[u] += (double)dvh[j] * xh[j];
            }
            double ddl = ((l8[0] + l8[1]) + (l8[2] + l8[3])) + ((l8[4] + l8[5]) + (l8[6] + l8[7]));
            float *dxh = dxs + (size_t)h * P;
#pragma omp simd
            for (int jj = 0; jj < P; jj++) {
                dxh[jj] += dl * dvh[jj];
            }
            /* d(delta A) from d(log gate) */
            const double A = Am[h];
            double dga = dg[nh];
            if (d->allow_neg_eigval) {
                double e = exp((double)dl * A), av = 2.0 * e - 1.0;
                dga = a->g[nh] > LINA_MAMBA2_LOG_DECAY_MIN ? dga * 2.0 * e / av : 0.0;
            }
            dg[nh] = (float)dga; /* kept for dA_log below */
            ddl += A * dga;
            ddt[nh] = (float)(ddl * m2_sigmoid((double)a->dtr[nh] + p->dt_bias[h]));
        }
    }
    /* A_log, dt_bias: reductions over rows in order */
    for (int h = 0; h < H; h++) {
        double sa = 0.0, sb = 0.0;
        for (int n = 0; n < R; n++) {
            const size_t nh = (size_t)n * H + h;
            sa += (double)a->delta[nh] * dg[nh];
            sb += ddt[nh];
        }
        if (gp->A_log) {
            gp->A_log[h] += (float)(sa * Am[h]); /* dA_log = dA * A */
        }
        if (gp->dt_bias) {
            gp->dt_bias[h] += (float)sb;
        }
    }
    free(Am);
    /* conv + SiLU, then in_proj */
    if (sp && sp->size > 1) {
        /* the gradient of the inputs before the piece goes back to their pieces */
        memset(dxpre, 0, r * Cc * sizeof(float));
        if ((rc = lina_sp_conv_backward(sp, dxpre, gp->conv_w, d->use_conv_bias ? gp->conv_b : NULL, dxbc, a->xpre,
                                        p->conv_w, d->use_conv_bias ? p->conv_b : NULL, B, T, Cc, d->W,
                                        LINA_ACT_SILU))) {
            return rc;
        }
    } else {
        lina_shortconv_backward_ld(dxpre, (size_t)Cc, 1, gp->conv_w, d->use_conv_bias ? gp->conv_b : NULL, NULL, dxbc,
                                   a->xpre, (size_t)Cc, p->conv_w, d->use_conv_bias ? p->conv_b : NULL, NULL, B, T, Cc,
                                   d->W, LINA_ACT_SILU);
    }
    float *gW = gp->in_proj, *gb = gp->in_bias;
    lina_linear_backward(dx, gW, gb, dz, x, p->in_proj, R, D, E);
    lina_linear_backward(dx, gW ? gW + (size_t)E * D : NULL, gb ? gb + E : NULL, dxpre, x, p->in_proj + (size_t)E * D,
                         R, D, Cc);
    lina_linear_backward(dx, gW ? gW + (size_t)(E + Cc) * D : NULL, gb ? gb + E + Cc : NULL, ddt, x,
                         p->in_proj + (size_t)(E + Cc) * D, R, D, H);
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_mamba2_forward,
                  (float *out, lina_mamba2_acts *a, const float *x, const lina_mamba2_dims *d,
                   const lina_mamba2_params *p, int B, int T, float *state, const lina_sp *sp, lina_form form,
                   lina_ws *ws),
                  (out, a, x, d, p, B, T, state, sp, form, ws))
LINA_ISA_DISPATCH(int, lina_mamba2_backward,
                  (float *dx, lina_mamba2_params *gp, const float *dout, const float *x, const lina_mamba2_acts *a,
                   const lina_mamba2_dims *d, const lina_mamba2_params *p, int B, int T, float *scratch,
                   const lina_sp *sp, lina_form form, lina_ws *ws),
                  (dx, gp, dout, x, a, d, p, B, T, scratch, sp, form, ws))

/* ============================================================ plug-in kind
 * model_type "mamba2" (kind.h): FLA's tensor names under
 * backbone.layers.{i}.mixer. (docs/checkpoints.md 2.3), the config keys of
 * docs/mixers.md 6. */

/* tensor slots */
enum { M2_IN, M2_IN_B, M2_CONV, M2_CONV_B, M2_DT_BIAS, M2_A_LOG, M2_D, M2_NORM, M2_OUT, M2_OUT_B };

_Static_assert(sizeof(lina_mamba2_dims) <= LINA_MIXER_DIMS_BYTES, "mamba2 dims do not fit");

static int m2_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_mamba2_dims *d = dims;
    memset(d, 0, sizeof(*d));
    d->D = c->hidden_size;
    d->H = c->num_heads;
    d->P = c->head_dim;
    d->N = c->state_size;
    d->G = c->n_groups;
    d->W = c->conv_kernel;
    d->use_conv_bias = c->use_conv_bias;
    d->use_bias = c->use_bias;
    d->rmsnorm = c->rmsnorm;
    d->norm_before_gate = c->norm_before_gate;
    d->D_has_hdim = c->D_has_hdim;
    d->allow_neg_eigval = c->allow_neg_eigval;
    d->chunk = c->chunk_size;
    d->norm_eps = (float)c->norm_eps;
    if (c->expand < 1 || (double)d->H * d->P != (double)c->expand * d->D) {
        return lina_set_error(LINA_EINVAL,
                              "mamba2: num_heads * head_dim (%d * %d) must equal expand * hidden_size (%d * %d)", d->H,
                              d->P, c->expand, d->D);
    }
    int rc = lina_mamba2_check_dims(d);
    if (rc) {
        return rc;
    }
    const int64_t E = (int64_t)d->H * d->P, GN = (int64_t)d->G * d->N, H = d->H, D = d->D;
    const int64_t Cc = E + 2 * GN, Din = 2 * E + 2 * GN + H;
    /* The Mamba2 paper's init (its reference code): in_proj and conv1d keep PyTorch's default
     * U(+-1/sqrt(fan_in)) (conv fan_in = W: depthwise), out_proj the same divided by
     * sqrt(num_hidden_layers) (GPT-2's residual rescaling, one residual per layer), A = U[1, 16),
     * dt log-uniform in [dt_min, dt_max] (floor dt_init_floor) through dt_bias = softplus^-1(dt),
     * D = 1. FLA's N(0, 0.02) for in_proj and conv1d leaves B, C and x at ~1e-4 of their
     * scale: the SSM path contributes nothing at init and its gradients vanish. */
    const double a_in[3] = {1.0 / sqrt((double)D), 0, 0}, a_conv[3] = {1.0 / sqrt((double)d->W), 0, 0};
    const double a_out[3] = {1.0 / sqrt((double)E) / sqrt((double)(c->num_hidden_layers > 0 ? c->num_hidden_layers : 1)),
                             0, 0};
    if ((rc = lina_mixer_add_init(b, M2_IN, "in_proj.weight", 2, Din, D, 0, 1, LINA_INIT_UNIFORM, a_in))) {
        return rc;
    }
    if (d->use_bias && (rc = lina_mixer_add(b, M2_IN_B, "in_proj.bias", 1, Din, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    if ((rc = lina_mixer_add_init(b, M2_CONV, "conv1d.weight", 3, Cc, 1, d->W, 1, LINA_INIT_UNIFORM, a_conv))) {
        return rc;
    }
    if (d->use_conv_bias &&
        (rc = lina_mixer_add_init(b, M2_CONV_B, "conv1d.bias", 1, Cc, 0, 0, 0, LINA_INIT_UNIFORM, a_conv))) {
        return rc;
    }
    const double dt_range[3] = {c->dt_min, c->dt_max, c->dt_init_floor};
    if ((rc = lina_mixer_add_init(b, M2_DT_BIAS, "dt_bias", 1, H, 0, 0, 0, LINA_INIT_DT_BIAS, dt_range)) ||
        (rc = lina_mixer_add(b, M2_A_LOG, "A_log", 1, H, 0, 0, 0, LINA_INIT_A_LOG_1_16)) ||
        (rc = lina_mixer_add(b, M2_D, "D", 1, d->D_has_hdim ? E : H, 0, 0, 0, LINA_INIT_ONES))) {
        return rc;
    }
    if (d->rmsnorm && (rc = lina_mixer_add(b, M2_NORM, "norm.weight", 1, E, 0, 0, 0, LINA_INIT_ONES))) {
        return rc;
    }
    if ((rc = lina_mixer_add_init(b, M2_OUT, "out_proj.weight", 2, D, E, 0, 1, LINA_INIT_UNIFORM, a_out))) {
        return rc;
    }
    if (d->use_bias && (rc = lina_mixer_add(b, M2_OUT_B, "out_proj.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(m2_acts_floats, lina_mamba2_acts_floats)
LINA_KIND_SIZE(m2_scratch_floats, lina_mamba2_scratch_floats)
LINA_KIND_STATE(m2_state_floats, lina_mamba2_state_floats)

static void m2_views(float *const *V, lina_mamba2_params *p)
{
    p->in_proj = V[M2_IN];
    p->in_bias = V[M2_IN_B];
    p->conv_w = V[M2_CONV];
    p->conv_b = V[M2_CONV_B];
    p->dt_bias = V[M2_DT_BIAS];
    p->A_log = V[M2_A_LOG];
    p->Dskip = V[M2_D];
    p->norm_w = V[M2_NORM];
    p->out_proj = V[M2_OUT];
    p->out_bias = V[M2_OUT_B];
}

static int m2_forward(const lina_mixer_call *c)
{
    const lina_mamba2_dims *d = c->dims;
    lina_mamba2_params p;
    lina_mamba2_acts a;
    m2_views(c->P, &p);
    lina_mamba2_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mamba2_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->sp, c->form, c->ws);
}

static int m2_backward(const lina_mixer_call *c)
{
    const lina_mamba2_dims *d = c->dims;
    lina_mamba2_params p, gp;
    lina_mamba2_acts a;
    m2_views(c->P, &p);
    m2_views(c->G, &gp);
    lina_mamba2_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mamba2_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->sp, c->form,
                                c->ws);
}

/* FLA's Mamba2ForCausalLM and MambaForCausalLM names; the blocks have no MLP sub-block */
const lina_kind_names lina_backbone_names = {
    "backbone.embeddings.weight",
    "backbone.layers.%d.norm.weight",
    "backbone.layers.%d.mixer.",
    "backbone.norm_f.weight",
    NULL,
};

const lina_mixer_vt lina_mamba2_kind = {
    .name = "mamba2",
    .build = m2_build,
    .acts_floats = m2_acts_floats,
    .scratch_floats = m2_scratch_floats,
    .state_floats = m2_state_floats,
    .forward = m2_forward,
    .backward = m2_backward,
    .flags = LINA_KIND_NO_FFN | LINA_KIND_SP,
    .names = &lina_backbone_names,
};
#endif /* LINA_ISA_PRIMARY */
