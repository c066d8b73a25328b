/*
 * gsa.c -- Gated Slot Attention (docs/ops.md, docs/mixers.md 16): M memory
 * slots per head, written with weights s and forgotten with exp(g), read by a
 * softmax over the slots:
 *
 *   Hk_t = Hk_{t-1} diag(exp g_t) + k_t s_t^T      ok_t = Hk_t^T (scale q_t)   [K, M]
 *   p_t  = softmax(ok_t)
 *   Hv_t = diag(exp g_t) Hv_{t-1} + s_t v_t^T      o_t  = Hv_t^T p_t            [M, V]
 *
 * RECURRENT: one task per (batch, head), both states in place; the backward
 * keeps the states every `chunk` steps, recomputes each segment and walks it
 * backwards with RK = dL/dHk, RV = dL/dHv:
 *   RV += p do^T,  dp = Hv do,  dok = p (dp - p.dp),  RK += (scale q) dok^T,
 *   dq = scale Hk dok,  ds = RV v + RK^T k,  dv = RV^T s,  dk = RK s,
 *   dg = exp(g) (rowsum(RV Hv_{t-1}) + colsum(RK Hk_{t-1})),  RV, RK *= exp(g).
 *
 * CHUNK: two passes of the diagonal-decay engine with the softmax between.
 * Pass 1 puts the decay on the slot axis, which the engine holds on the key
 * axis only, so each slot is a head of its own with K keys, one value and a
 * scalar gate (q, k repeated over the M slots, v = s, g = g); pass 2 is a gla
 * call (q = p, k = s, v, vector gate g, scale 1). The backward runs the two
 * engine backwards in reverse with the softmax's between.
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct gs_ctx {
    int B, T, H, K, V, M, S;
    float scale;
} gs_ctx;

static int gs_setup(gs_ctx *c, const lina_mix_dims *d, int M, const lina_gsa_in *in)
{
    if (!d || !in) {
        return lina_set_error(LINA_EINVAL, "gsa: NULL dims or inputs");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0 || M <= 0) {
        return lina_set_error(LINA_EINVAL, "gsa: bad dims B=%d T=%d H=%d K=%d V=%d M=%d", d->B, d->T, d->H, d->K,
                              d->V, M);
    }
    if (!in->q || !in->k || !in->v || !in->s || !in->g) {
        return lina_set_error(LINA_EINVAL, "gsa: q, k, v, s and g are required");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->M = M;
    c->S = d->chunk > 0 ? d->chunk : 64;
    c->scale = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    return LINA_OK;
}

#define GS_ROW(c, b, t, h, D) ((((size_t)(b) * (c)->T + (t)) * (c)->H + (h)) * (size_t)(D))

/* p = softmax(x) over M (in place allowed) */
static void gs_softmax(float *p, const float *x, int M)
{
    float mx = x[0];
    for (int m = 1; m < M; m++) {
        mx = x[m] > mx ? x[m] : mx;
    }
    double z = 0.0;
    for (int m = 0; m < M; m++) {
        p[m] = expf(x[m] - mx);
        z += p[m];
    }
    const float iz = (float)(1.0 / z);
    for (int m = 0; m < M; m++) {
        p[m] *= iz;
    }
}

/* one step of both states; eg = exp(g_t) [M]; ok (optional) = Hk^T (scale q) */
static void gs_step(const gs_ctx *c, float *Hk, float *Hv, const float *eg, const float *q, const float *k,
                    const float *v, const float *s, float *ok)
{
    const int K = c->K, V = c->V, M = c->M;
    for (int i = 0; i < K; i++) {
        float *r = Hk + (size_t)i * M;
        const float ki = k[i];
#pragma omp simd
        for (int m = 0; m < M; m++) {
            r[m] = r[m] * eg[m] + ki * s[m];
        }
    }
    for (int m = 0; m < M; m++) {
        float *r = Hv + (size_t)m * V;
        const float e = eg[m], sm = s[m];
#pragma omp simd
        for (int j = 0; j < V; j++) {
            r[j] = e * r[j] + sm * v[j];
        }
    }
    if (ok) {
        memset(ok, 0, (size_t)M * sizeof(float));
        for (int i = 0; i < K; i++) {
            const float qi = c->scale * q[i], *r = Hk + (size_t)i * M;
#pragma omp simd
            for (int m = 0; m < M; m++) {
                ok[m] += qi * r[m];
            }
        }
    }
}

/* ============================================================ recurrent */

static int gs_rec_fwd(const gs_ctx *c, const lina_gsa_in *in, lina_gsa_out *out, lina_ws *ws)
{
    const int K = c->K, V = c->V, M = c->M, BH = c->B * c->H;
    const size_t KM = (size_t)K * M, MV = (size_t)M * V;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < BH; bh++) {
        const int b = bh / c->H, h = bh % c->H;
        float *Hk = lina_ws_get(ws, lina_thread_id(), (KM + MV + 3 * (size_t)M) * sizeof(float));
        if (!Hk) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *Hv = Hk + KM, *eg = Hv + MV, *ok = eg + M, *p = ok + M;
        lina_state_pass(Hk, in->hk0 ? in->hk0 + (size_t)bh * KM : NULL, KM);
        lina_state_pass(Hv, in->hv0 ? in->hv0 + (size_t)bh * MV : NULL, MV);
        for (int t = 0; t < c->T; t++) {
            const size_t rk = GS_ROW(c, b, t, h, K), rv = GS_ROW(c, b, t, h, V), rm = GS_ROW(c, b, t, h, M);
            lina_vexp(eg, in->g + rm, (size_t)M);
            gs_step(c, Hk, Hv, eg, in->q + rk, in->k + rk, in->v + rv, in->s + rm, ok);
            gs_softmax(p, ok, M);
            float *o = out->o + rv;
            memset(o, 0, (size_t)V * sizeof(float));
            for (int m = 0; m < M; m++) {
                const float pm = p[m], *r = Hv + (size_t)m * V;
#pragma omp simd
                for (int j = 0; j < V; j++) {
                    o[j] += pm * r[j];
                }
            }
        }
        if (out->hkt) {
            memcpy(out->hkt + (size_t)bh * KM, Hk, KM * sizeof(float));
        }
        if (out->hvt) {
            memcpy(out->hvt + (size_t)bh * MV, Hv, MV * sizeof(float));
        }
    }
    return rc;
}

static size_t gs_bwd_floats(const gs_ctx *c)
{
    const size_t St = (size_t)c->K * c->M + (size_t)c->M * c->V, nseg = ((size_t)c->T + c->S - 1) / c->S;
    return (nseg + 1) * St + (size_t)(c->S + 1) * St + 2 * (size_t)c->S * c->M + St + 4 * (size_t)c->M;
}

static int gs_rec_bwd(const gs_ctx *c, const lina_gsa_in *in, const lina_gsa_grad_in *gin,
                      lina_gsa_grad_out *gout, lina_ws *ws)
{
    const int T = c->T, K = c->K, V = c->V, M = c->M, S = c->S, BH = c->B * c->H;
    const size_t KM = (size_t)K * M, MV = (size_t)M * V, St = KM + MV, nseg = ((size_t)T + S - 1) / S;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < BH; bh++) {
        const int b = bh / c->H, h = bh % c->H;
        float *ck = lina_ws_get(ws, lina_thread_id(), gs_bwd_floats(c) * sizeof(float));
        if (!ck) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *hs = ck + (nseg + 1) * St, *ps = hs + (size_t)(S + 1) * St, *egs = ps + (size_t)S * M;
        float *RK = egs + (size_t)S * M, *RV = RK + KM, *ok = RV + MV, *dp = ok + M, *dok = dp + M;
        /* pass 1: the states at the segment starts */
        float *Hk = hs, *Hv = hs + KM;
        lina_state_pass(Hk, in->hk0 ? in->hk0 + (size_t)bh * KM : NULL, KM);
        lina_state_pass(Hv, in->hv0 ? in->hv0 + (size_t)bh * MV : NULL, MV);
        for (int t = 0; t < T; t++) {
            if (t % S == 0) {
                memcpy(ck + (size_t)(t / S) * St, hs, St * sizeof(float));
            }
            const size_t rk = GS_ROW(c, b, t, h, K), rv = GS_ROW(c, b, t, h, V), rm = GS_ROW(c, b, t, h, M);
            lina_vexp(egs, in->g + rm, (size_t)M);
            gs_step(c, Hk, Hv, egs, in->q + rk, in->k + rk, in->v + rv, in->s + rm, NULL);
        }
        lina_state_pass(RK, gin->dhkt ? gin->dhkt + (size_t)bh * KM : NULL, KM);
        lina_state_pass(RV, gin->dhvt ? gin->dhvt + (size_t)bh * MV : NULL, MV);
        for (int sg = (int)nseg - 1; sg >= 0; sg--) {
            const int t0 = sg * S, L = T - t0 < S ? T - t0 : S;
            memcpy(hs, ck + (size_t)sg * St, St * sizeof(float));
            for (int r = 0; r < L; r++) {
                const int t = t0 + r;
                const size_t rk = GS_ROW(c, b, t, h, K), rv = GS_ROW(c, b, t, h, V), rm = GS_ROW(c, b, t, h, M);
                float *nx = hs + (size_t)(r + 1) * St;
                memcpy(nx, hs + (size_t)r * St, St * sizeof(float));
                lina_vexp(egs + (size_t)r * M, in->g + rm, (size_t)M);
                gs_step(c, nx, nx + KM, egs + (size_t)r * M, in->q + rk, in->k + rk, in->v + rv, in->s + rm, ok);
                gs_softmax(ps + (size_t)r * M, ok, M);
            }
            for (int r = L - 1; r >= 0; r--) {
                const int t = t0 + r;
                const size_t rk = GS_ROW(c, b, t, h, K), rv = GS_ROW(c, b, t, h, V), rm = GS_ROW(c, b, t, h, M);
                const float *Hkt = hs + (size_t)(r + 1) * St, *Hvt = Hkt + KM;
                const float *Hkp = hs + (size_t)r * St, *Hvp = Hkp + KM;
                const float *p = ps + (size_t)r * M, *eg = egs + (size_t)r * M, *dO = gin->do_ + rv;
                const float *q = in->q + rk, *k = in->k + rk, *v = in->v + rv, *s = in->s + rm;
                /* o = Hv^T p */
                double pdp = 0.0;
                for (int m = 0; m < M; m++) {
                    float *R = RV + (size_t)m * V;
                    const float *Hr = Hvt + (size_t)m * V;
                    float a = 0.0f;
#pragma omp simd reduction(+ : a)
                    for (int j = 0; j < V; j++) {
                        R[j] += p[m] * dO[j];
                        a += Hr[j] * dO[j];
                    }
                    dp[m] = a;
                    pdp += (double)p[m] * a;
                }
                for (int m = 0; m < M; m++) {
                    dok[m] = p[m] * (dp[m] - (float)pdp);
                }
                /* ok = Hk^T (scale q) */
                float *dq = gout->dq + rk, *dk = gout->dk + rk;
                for (int i = 0; i < K; i++) {
                    float *R = RK + (size_t)i * M;
                    const float *Hr = Hkt + (size_t)i * M, qi = c->scale * q[i];
                    float a = 0.0f;
#pragma omp simd reduction(+ : a)
                    for (int m = 0; m < M; m++) {
                        R[m] += qi * dok[m];
                        a += Hr[m] * dok[m];
                    }
                    dq[i] = c->scale * a;
                }
                /* the updates of both states */
                float *ds = gout->ds + rm, *dg = gout->dg + rm, *dv = gout->dv + rv;
                for (int m = 0; m < M; m++) {
                    const float *R = RV + (size_t)m * V, *Hp = Hvp + (size_t)m * V;
                    float a = 0.0f, e = 0.0f;
#pragma omp simd reduction(+ : a, e)
                    for (int j = 0; j < V; j++) {
                        a += R[j] * v[j];
                        e += R[j] * Hp[j];
                    }
                    ds[m] = a;
                    dg[m] = e;
                }
                memset(dv, 0, (size_t)V * sizeof(float));
                for (int m = 0; m < M; m++) {
                    const float sm = s[m], *R = RV + (size_t)m * V;
#pragma omp simd
                    for (int j = 0; j < V; j++) {
                        dv[j] += R[j] * sm;
                    }
                }
                for (int i = 0; i < K; i++) {
                    const float *R = RK + (size_t)i * M, *Hp = Hkp + (size_t)i * M, ki = k[i];
                    float a = 0.0f;
#pragma omp simd reduction(+ : a)
                    for (int m = 0; m < M; m++) {
                        a += R[m] * s[m];
                        ds[m] += R[m] * ki;
                        dg[m] += R[m] * Hp[m];
                    }
                    dk[i] = a;
                }
                for (int m = 0; m < M; m++) {
                    dg[m] *= eg[m];
                    float *R = RV + (size_t)m * V;
                    for (int j = 0; j < V; j++) {
                        R[j] *= eg[m];
                    }
                }
                for (int i = 0; i < K; i++) {
                    float *R = RK + (size_t)i * M;
#pragma omp simd
                    for (int m = 0; m < M; m++) {
                        R[m] *= eg[m];
                    }
                }
            }
        }
        if (gout->dhk0) {
            memcpy(gout->dhk0 + (size_t)bh * KM, RK, KM * sizeof(float));
        }
        if (gout->dhv0) {
            memcpy(gout->dhv0 + (size_t)bh * MV, RV, MV * sizeof(float));
        }
    }
    return rc;
}

/* ============================================================ chunk */

/* pass 1 through the engine: H*M heads of K keys, one value, a scalar gate.
 * q1, k1 [B,T,H*M,K] (q, k repeated over the slots); v = s and g = g as they
 * are ([B,T,H,M] is [B,T,H*M]); h01 [B,H*M,K] = hk0 [B,H,K,M] transposed. */
typedef struct gs_eng {
    float *q1, *k1, *h01, *ok, *p, *hk1; /* hk1: pass 1's final state [B,H*M,K] */
    float *dq1, *dk1, *dok, *dp, *ds2, *dg2, *dh01; /* backward */
} gs_eng;

static int gs_eng_begin(const gs_ctx *c, const lina_gsa_in *in, int bwd, lina_ws *ws, gs_eng *e)
{
    const size_t BTH = (size_t)c->B * c->T * c->H, big = BTH * c->M * c->K, row = BTH * c->M;
    const size_t st = (size_t)c->B * c->H * c->M * c->K;
    const size_t n = 2 * big + 3 * row + 2 * st + (bwd ? 2 * big + 4 * row + st : 0);
    float *mem = lina_ws_get(ws, lina_ws_extra_slot(), n * sizeof(float));
    if (!mem) {
        return LINA_ENOMEM;
    }
    memset(e, 0, sizeof *e);
    e->q1 = mem;
    e->k1 = e->q1 + big;
    e->ok = e->k1 + big;
    e->p = e->ok + row;
    e->h01 = e->p + row + row; /* one row of slack keeps the layout simple */
    e->hk1 = e->h01 + st;
    if (bwd) {
        e->dq1 = e->hk1 + st;
        e->dk1 = e->dq1 + big;
        e->dok = e->dk1 + big;
        e->dp = e->dok + row;
        e->ds2 = e->dp + row;
        e->dg2 = e->ds2 + row;
        e->dh01 = e->dg2 + row;
    }
    const int K = c->K, M = c->M;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < BTH; r++) {
        for (int m = 0; m < M; m++) {
            memcpy(e->q1 + (r * M + m) * K, in->q + r * K, (size_t)K * sizeof(float));
            memcpy(e->k1 + (r * M + m) * K, in->k + r * K, (size_t)K * sizeof(float));
        }
    }
    const size_t BH = (size_t)c->B * c->H;
    for (size_t bh = 0; bh < BH; bh++) {
        for (int i = 0; i < K; i++) {
            for (int m = 0; m < M; m++) {
                e->h01[(bh * M + m) * K + i] = in->hk0 ? in->hk0[(bh * K + i) * M + m] : 0.0f;
            }
        }
    }
    return LINA_OK;
}

static lina_mix_dims gs_d1(const gs_ctx *c)
{
    lina_mix_dims d = {c->B, c->T, c->H * c->M, c->K, 1, c->S, c->scale};
    return d;
}

static lina_mix_dims gs_d2(const gs_ctx *c)
{
    lina_mix_dims d = {c->B, c->T, c->H, c->M, c->V, c->S, 1.0f};
    return d;
}

/* pass 1 and the softmax: ok, p; pass 1's final state into e->hk1 */
static int gs_pass1(const gs_ctx *c, const lina_gsa_in *in, gs_eng *e, lina_ws *ws)
{
    lina_mix_dims d1 = gs_d1(c);
    lina_dd_in i1 = {.q = e->q1, .k = e->k1, .v = in->s, .gate = LINA_GATE_SCALAR, .g = in->g, .h0 = e->h01};
    lina_dd_out o1 = {.o = e->ok, .ht = e->hk1};
    int rc = lina_dd_fwd(&d1, &i1, &o1, LINA_FORM_CHUNK, ws);
    if (rc) {
        return rc;
    }
    const size_t rows = (size_t)c->B * c->T * c->H;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        gs_softmax(e->p + r * c->M, e->ok + r * c->M, c->M);
    }
    return LINA_OK;
}

/* [B,H*M,K] -> [B,H,K,M] */
static void gs_untranspose(const gs_ctx *c, float *dst, const float *src)
{
    const size_t BH = (size_t)c->B * c->H;
    for (size_t bh = 0; bh < BH; bh++) {
        for (int i = 0; i < c->K; i++) {
            for (int m = 0; m < c->M; m++) {
                dst[(bh * c->K + i) * c->M + m] = src[(bh * c->M + m) * c->K + i];
            }
        }
    }
}

static int gs_chunk_fwd(const gs_ctx *c, const lina_gsa_in *in, lina_gsa_out *out, lina_ws *ws)
{
    gs_eng e;
    int rc = gs_eng_begin(c, in, 0, ws, &e);
    if (rc || (rc = gs_pass1(c, in, &e, ws))) {
        return rc;
    }
    if (out->hkt) {
        gs_untranspose(c, out->hkt, e.hk1);
    }
    lina_mix_dims d2 = gs_d2(c);
    lina_dd_in i2 = {.q = e.p, .k = in->s, .v = in->v, .gate = LINA_GATE_VECTOR, .g = in->g, .h0 = in->hv0};
    lina_dd_out o2 = {.o = out->o, .ht = out->hvt};
    return lina_dd_fwd(&d2, &i2, &o2, LINA_FORM_CHUNK, ws);
}

static int gs_chunk_bwd(const gs_ctx *c, const lina_gsa_in *in, const lina_gsa_grad_in *gin,
                        lina_gsa_grad_out *gout, lina_ws *ws)
{
    gs_eng e;
    int rc = gs_eng_begin(c, in, 1, ws, &e);
    if (rc || (rc = gs_pass1(c, in, &e, ws))) {
        return rc;
    }
    const int K = c->K, M = c->M;
    const size_t rows = (size_t)c->B * c->T * c->H;
    /* pass 2: dp, ds, dv, dg, dhv0 */
    lina_mix_dims d2 = gs_d2(c);
    lina_dd_in i2 = {.q = e.p, .k = in->s, .v = in->v, .gate = LINA_GATE_VECTOR, .g = in->g, .h0 = in->hv0};
    lina_dd_grad_in g2 = {.do_ = gin->do_, .dht = gin->dhvt};
    lina_dd_grad_out r2 = {.dq = e.dp, .dk = e.ds2, .dv = gout->dv, .dg = e.dg2, .dh0 = gout->dhv0};
    if ((rc = lina_dd_bwd(&d2, &i2, &g2, &r2, LINA_FORM_CHUNK, ws))) {
        return rc;
    }
    /* the softmax */
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        const float *p = e.p + r * M, *dp = e.dp + r * M;
        double pdp = 0.0;
        for (int m = 0; m < M; m++) {
            pdp += (double)p[m] * dp[m];
        }
        for (int m = 0; m < M; m++) {
            e.dok[r * M + m] = p[m] * (dp[m] - (float)pdp);
        }
    }
    /* pass 1: dq1, dk1, ds (its v), dg (its scalar gate), dh01 */
    float *dhkt1 = NULL;
    if (gin->dhkt) { /* [B,H,K,M] -> [B,H*M,K] into e.hk1 (free now) */
        const size_t BH = (size_t)c->B * c->H;
        for (size_t bh = 0; bh < BH; bh++) {
            for (int i = 0; i < K; i++) {
                for (int m = 0; m < M; m++) {
                    e.hk1[(bh * M + m) * K + i] = gin->dhkt[(bh * K + i) * M + m];
                }
            }
        }
        dhkt1 = e.hk1;
    }
    lina_mix_dims d1 = gs_d1(c);
    lina_dd_in i1 = {.q = e.q1, .k = e.k1, .v = in->s, .gate = LINA_GATE_SCALAR, .g = in->g, .h0 = e.h01};
    lina_dd_grad_in g1 = {.do_ = e.dok, .dht = dhkt1};
    lina_dd_grad_out r1 = {.dq = e.dq1, .dk = e.dk1, .dv = gout->ds, .dg = gout->dg,
                           .dh0 = gout->dhk0 ? e.dh01 : NULL};
    if ((rc = lina_dd_bwd(&d1, &i1, &g1, &r1, LINA_FORM_CHUNK, ws))) {
        return rc;
    }
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        for (int m = 0; m < M; m++) {
            gout->ds[r * M + m] += e.ds2[r * M + m];
            gout->dg[r * M + m] += e.dg2[r * M + m];
        }
        for (int i = 0; i < K; i++) { /* the slots' sums, in slot order */
            double aq = 0.0, ak = 0.0;
            for (int m = 0; m < M; m++) {
                aq += e.dq1[(r * M + m) * K + i];
                ak += e.dk1[(r * M + m) * K + i];
            }
            gout->dq[r * K + i] = (float)aq;
            gout->dk[r * K + i] = (float)ak;
        }
    }
    if (gout->dhk0) {
        gs_untranspose(c, gout->dhk0, e.dh01);
    }
    return LINA_OK;
}

/* ============================================================ entry points */

int LINA_KFN(lina_gsa_fwd)(const lina_mix_dims *d, int M, const lina_gsa_in *in, lina_gsa_out *out,
                           lina_form form, lina_ws *ws)
{
    gs_ctx c;
    int rc = gs_setup(&c, d, M, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "gsa: output o is NULL");
    }
    if (c.T == 0) {
        lina_state_pass(out->hkt, in->hk0, (size_t)c.B * c.H * c.K * c.M);
        lina_state_pass(out->hvt, in->hv0, (size_t)c.B * c.H * c.M * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_ws_extra_slot() + 1))) {
        return rc;
    }
    rc = form == LINA_FORM_CHUNK ? gs_chunk_fwd(&c, in, out, sc.ws) : gs_rec_fwd(&c, in, out, sc.ws);
    lina_ws_scope_close(&sc);
    return rc == LINA_ENOMEM ? lina_set_error(rc, "gsa: out of memory") : rc;
}

int LINA_KFN(lina_gsa_bwd)(const lina_mix_dims *d, int M, const lina_gsa_in *in, const lina_gsa_grad_in *gin,
                           lina_gsa_grad_out *gout, lina_form form, lina_ws *ws)
{
    gs_ctx c;
    int rc = gs_setup(&c, d, M, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dq || !gout->dk || !gout->dv || !gout->ds || !gout->dg) {
        return lina_set_error(LINA_EINVAL, "gsa: do and the outputs dq, dk, dv, ds, dg are required");
    }
    if (c.T == 0) {
        lina_state_pass(gout->dhk0, gin->dhkt, (size_t)c.B * c.H * c.K * c.M);
        lina_state_pass(gout->dhv0, gin->dhvt, (size_t)c.B * c.H * c.M * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_ws_extra_slot() + 1))) {
        return rc;
    }
    rc = form == LINA_FORM_CHUNK ? gs_chunk_bwd(&c, in, gin, gout, sc.ws) : gs_rec_bwd(&c, in, gin, gout, sc.ws);
    lina_ws_scope_close(&sc);
    return rc == LINA_ENOMEM ? lina_set_error(rc, "gsa: out of memory") : rc;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_gsa_fwd,
                  (const lina_mix_dims *d, int M, const lina_gsa_in *in, lina_gsa_out *out, lina_form form,
                   lina_ws *ws),
                  (d, M, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_gsa_bwd,
                  (const lina_mix_dims *d, int M, const lina_gsa_in *in, const lina_gsa_grad_in *gin,
                   lina_gsa_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, M, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_gsa(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    const lina_tensor *q = lina_op_input(in, "q", "BTHK", &bd, 0, &err);
    const lina_tensor *k = err ? NULL : lina_op_input(in, "k", "BTHK", &bd, 0, &err);
    const lina_tensor *v = err ? NULL : lina_op_input(in, "v", "BTHV", &bd, 0, &err);
    const lina_tensor *s = err ? NULL : lina_op_input(in, "s", "BTHM", &bd, 0, &err);
    const lina_tensor *g = err ? NULL : lina_op_input(in, "g", "BTHM", &bd, 0, &err);
    const lina_tensor *hk0 = err ? NULL : lina_op_input(in, "hk0", "BHKM", &bd, 1, &err);
    const lina_tensor *hv0 = err ? NULL : lina_op_input(in, "hv0", "BHMV", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((err = lina_op_check_nonpos(g, "g", "g holds log decays"))) {
        return err;
    }
    const lina_tensor *dO = NULL, *dhk = NULL, *dhv = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        dhk = err ? NULL : lina_op_input(in, "dhkt", "BHKM", &bd, 1, &err);
        dhv = err ? NULL : lina_op_input(in, "dhvt", "BHMV", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    const int M = (int)bd.v['M' - 'A'];
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'], (int)bd.v['K' - 'A'],
                       (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_gsa_in gi = {q->data, k->data, v->data, s->data, g->data, hk0 ? hk0->data : NULL, hv0 ? hv0->data : NULL};
    lina_gsa_out go = {lina_op_output(out, "o", "BTHV", &bd), lina_op_output(out, "hkt", "BHKM", &bd),
                       lina_op_output(out, "hvt", "BHMV", &bd)};
    if (!go.o || !go.hkt || !go.hvt) {
        return LINA_ENOMEM;
    }
    int rc = lina_gsa_fwd(&d, M, &gi, &go, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_gsa_grad_out gr = {lina_op_output(out, "dq", "BTHK", &bd), lina_op_output(out, "dk", "BTHK", &bd),
                            lina_op_output(out, "dv", "BTHV", &bd), lina_op_output(out, "ds", "BTHM", &bd),
                            lina_op_output(out, "dg", "BTHM", &bd),
                            hk0 ? lina_op_output(out, "dhk0", "BHKM", &bd) : NULL,
                            hv0 ? lina_op_output(out, "dhv0", "BHMV", &bd) : NULL};
    if (!gr.dq || !gr.dk || !gr.dv || !gr.ds || !gr.dg || (hk0 && !gr.dhk0) || (hv0 && !gr.dhv0)) {
        return LINA_ENOMEM;
    }
    lina_gsa_grad_in gg = {dO->data, dhk ? dhk->data : NULL, dhv ? dhv->data : NULL};
    return lina_gsa_bwd(&d, M, &gi, &gg, &gr, o->form, ws);
}

/* Benchmark inputs in the layer's domain: g = logsigmoid(f) / 8, s = 1 - exp(g). M = 64 slots. */
#define GS_BENCH_M 64
static int mk_gsa(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V}, sm[4] = {d->B, d->T, d->H, GS_BENCH_M};
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "g", 4, sm, &rng, -0.5f, -0.01f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "s", 4, sm, &rng, 0, 1, 0);
    if (!rc) {
        lina_tensor *g = lina_tset_find(in, "g"), *s = lina_tset_find(in, "s");
        for (int64_t i = 0; i < lina_tensor_numel(g); i++) {
            s->data[i] = 1.0f - expf(g->data[i]);
        }
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule) per step: pass 1 the K x M update and read (4 K M), pass 2 the M x V
 * update and read (4 M V), the softmax not counted; M = 64 slots at the bench shape. */
static double gsa_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    (void)o;
    return 4.0 * d->B * d->H * (double)d->T * GS_BENCH_M * (d->K + d->V);
}

const lina_op_info lina_op_gsa = {
    "gsa", "Gated Slot Attention (q, k, v, s, g [, hk0, hv0]): two diagonal-decay passes with a softmax over slots",
    {NULL},
    run_gsa, mk_gsa, gsa_flops};
#endif /* LINA_ISA_PRIMARY */
