/* linattn_layer.c -- linearized attention: the attention layer of a softmax
 * transformer turned into a constant-memory one (docs/linearize.md). Every
 * head mixes sliding-window softmax attention (window W) with linear attention
 * on feature maps:
 *
 *   q, k = RoPE(x Wq^T), RoPE(x Wk^T);  v = x Wv^T           (LoRA on each when lora_rank > 0)
 *   window:  s_j = q.k_j / sqrt(d), j in (t - W, t];  m = max_j s_j;  e_j = exp(s_j - m)
 *            Nw = sum_j e_j v_j,  Dw = sum_j e_j
 *   linear:  S_t = diag(exp(g_u)) S + phi_k(k_u) [v_u, 1]^T  over u <= t - W  ("lolcats")
 *            or over u <= t ("liger");  [L, Z] = phi_q(q_t)^T S_t
 *   lolcats: y = (f Nw + L) / (f Dw + Z),  f = sigmoid(window_factors[h])  (learned per head)
 *   liger:   y = a Nw / Dw + (1 - a) L,     a = window_factor (0.5)
 *   out = y Wo^T
 *
 * Feature maps: hedgehog, phi(x) = [softmax(x Wf^T), softmax(-x Wf^T)] with a
 * learned Wf [d, d] per head (identity at init), F = 2d; or softmax(x) (no
 * parameters), F = d. The optional gate is GLA's from the key projection:
 * g_c = logsigmoid(k_proj_c) / 16 (channel c mod d of the head, before RoPE).
 * The linear branch runs on the diagonal-decay engine (lina_dd_fwd, scale 1):
 * for "lolcats" on the keys, values and gates shifted W positions later, so
 * that the state a query reads holds the tokens outside its window.
 *
 * Decode state per (batch, head): S [F, Vx] (Vx = d + 1 with the normaliser
 * column of "lolcats", d for "liger"), then a ring of the last W rotated keys
 * and values [W, d] each, then (gated "lolcats") the ring's gates [W, F]:
 * constant in the context length.
 *
 * Attention transfer (lina_config.attn_transfer, stage 1 of `lina linearize`):
 * the layer outputs the teacher's full causal softmax attention of the same
 * q, k, v (lina_softmax_attn_fwd) and adds mean((y - y_softmax)^2) over the
 * N x H*d head outputs to the auxiliary loss. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GATE_NORM 16.0f /* GLA's gate logit normaliser */

typedef struct la_dims {
    int D, H, d, F, Vx, W;
    int hedgehog, gate, all, shared; /* shared: lolcats (shared normaliser, learned factor) */
    float mix;                       /* liger: the window share */
    double rope_theta;
    int r;                           /* LoRA rank (0: none) */
    float s;                         /* LoRA scale alpha / r */
    int transfer;
} la_dims;

_Static_assert(sizeof(la_dims) <= LINA_MIXER_DIMS_BYTES, "la_dims too large");

enum { LZ_Q, LZ_K, LZ_V, LZ_O, LZ_FQ, LZ_FK, LZ_WF, LZ_QA, LZ_QB, LZ_KA, LZ_KB, LZ_VA, LZ_VB, LZ_OA, LZ_OB };

typedef struct la_acts {
    float *qp, *kp, *vp;  /* [N, HQ] projections */
    float *q, *k;         /* [N, HQ] rotated */
    float *fq, *fk;       /* [N, H*F] feature maps */
    float *ks, *vs, *gs;  /* engine inputs [N, H*F], [N, H*Vx], [N, H*F] (shifted for lolcats) */
    float *lo;            /* [N, H*Vx] engine output */
    float *wm, *wd;       /* [N, H] window max and denominator */
    float *wn;            /* [N, HQ] window numerator */
    float *t[4];          /* [N, r] LoRA x A^T of q, k, v, o */
    float *ot, *st;       /* transfer: [N, HQ] softmax output, [N, 2H] its statistics */
} la_acts;

static size_t la_acts_floats(const la_dims *d, int N)
{
    size_t n = (size_t)N, HQ = (size_t)d->H * d->d, HF = (size_t)d->H * d->F, HV = (size_t)d->H * d->Vx;
    size_t f = n * (6 * HQ + 4 * HF + 2 * HV + 2 * (size_t)d->H + 4 * (size_t)d->r);
    if (d->transfer) {
        f += n * (HQ + 2 * (size_t)d->H);
    }
    return f;
}

static void la_carve(la_acts *a, float *p, const la_dims *d, int N)
{
    size_t n = (size_t)N, HQ = (size_t)d->H * d->d, HF = (size_t)d->H * d->F, HV = (size_t)d->H * d->Vx;
    a->qp = p; p += n * HQ;
    a->kp = p; p += n * HQ;
    a->vp = p; p += n * HQ;
    a->q = p;  p += n * HQ;
    a->k = p;  p += n * HQ;
    a->wn = p; p += n * HQ;
    a->fq = p; p += n * HF;
    a->fk = p; p += n * HF;
    a->ks = p; p += n * HF;
    a->gs = p; p += n * HF;
    a->vs = p; p += n * HV;
    a->lo = p; p += n * HV;
    a->wm = p; p += n * (size_t)d->H;
    a->wd = p; p += n * (size_t)d->H;
    for (int i = 0; i < 4; i++) {
        a->t[i] = p;
        p += n * (size_t)d->r;
    }
    a->ot = a->st = NULL;
    if (d->transfer) {
        a->ot = p; p += n * HQ;
        a->st = p;
    }
}

/* la_acts_floats, then y [N, HQ] (the mixed head outputs, o_proj's input) */
static size_t la_acts_total(const void *dims, int N)
{
    const la_dims *d = dims;
    return la_acts_floats(d, N) + (size_t)N * d->H * d->d;
}

static size_t la_scratch_floats(const void *dims, int N)
{
    const la_dims *d = dims;
    size_t n = (size_t)N, HQ = (size_t)d->H * d->d, HF = (size_t)d->H * d->F, HV = (size_t)d->H * d->Vx;
    return n * (5 * HQ + 5 * HF + 2 * HV + (size_t)d->H + (size_t)d->r) + (d->transfer ? n * 4 * HQ : 0);
}

static size_t la_state_floats(const void *dims, int B, int max_len)
{
    (void)max_len;
    const la_dims *d = dims;
    size_t per = (size_t)d->F * d->Vx + 2 * (size_t)d->W * d->d + (d->gate && !d->all ? (size_t)d->W * d->F : 0);
    return lina_szmul3((size_t)B, (size_t)d->H, per);
}

/* ------------------------------------------------------------ feature maps */

static void softmax_row(float *y, const float *u, int n, float sign)
{
    double mx = -INFINITY, s = 0.0;
    for (int i = 0; i < n; i++) {
        mx = sign * u[i] > mx ? sign * u[i] : mx;
    }
    for (int i = 0; i < n; i++) {
        double e = exp(sign * u[i] - mx);
        y[i] = (float)e;
        s += e;
    }
    for (int i = 0; i < n; i++) {
        y[i] = (float)(y[i] / s);
    }
}

/* phi [F] of one head vector x [d]; Wf [d, d] (hedgehog) or NULL (softmax) */
static void fmap_row(float *phi, const float *x, const float *Wf, int d)
{
    if (!Wf) {
        softmax_row(phi, x, d, 1.0f);
        return;
    }
    float u[LINA_ROPE_MAX_DIM];
    for (int c = 0; c < d; c++) {
        double s = 0.0;
        for (int i = 0; i < d; i++) {
            s += (double)Wf[(size_t)c * d + i] * x[i];
        }
        u[c] = (float)s;
    }
    softmax_row(phi, u, d, 1.0f);
    softmax_row(phi + d, u, d, -1.0f);
}

/* dx [d] += d phi / dx^T dphi; dWf [d, d] += (hedgehog) */
static void fmap_row_bwd(float *dx, float *dWf, const float *dphi, const float *phi, const float *x,
                         const float *Wf, int d)
{
    float du[LINA_ROPE_MAX_DIM];
    int halves = Wf ? 2 : 1;
    for (int c = 0; c < d; c++) {
        du[c] = 0.0f;
    }
    for (int hh = 0; hh < halves; hh++) {
        const float *p = phi + hh * d, *dp = dphi + hh * d;
        double dot = 0.0;
        for (int c = 0; c < d; c++) {
            dot += (double)dp[c] * p[c];
        }
        for (int c = 0; c < d; c++) {
            float g = (float)(p[c] * (dp[c] - dot));
            du[c] += hh ? -g : g;
        }
    }
    if (!Wf) {
        for (int c = 0; c < d; c++) {
            dx[c] += du[c];
        }
        return;
    }
    for (int c = 0; c < d; c++) {
        for (int i = 0; i < d; i++) {
            dx[i] += du[c] * Wf[(size_t)c * d + i];
            if (dWf) {
                dWf[(size_t)c * d + i] += du[c] * x[i];
            }
        }
    }
}

/* phi of every row [N, H, d] -> [N, H, F] */
static void fmap_forward(float *phi, const float *x, const float *Wf, const la_dims *d, int N)
{
#pragma omp parallel for if ((size_t)N * d->H * d->d * d->d >= 65536)
    for (int nh = 0; nh < N * d->H; nh++) {
        int h = nh % d->H;
        fmap_row(phi + (size_t)nh * d->F, x + (size_t)nh * d->d, Wf ? Wf + (size_t)h * d->d * d->d : NULL, d->d);
    }
}

/* dx [N, H, d] += ..., dWf [H, d, d] += ... (rows in order per head: deterministic) */
static void fmap_backward(float *dx, float *dWf, const float *dphi, const float *phi, const float *x,
                          const float *Wf, const la_dims *d, int N)
{
#pragma omp parallel for if ((size_t)N * d->H * d->d * d->d >= 65536)
    for (int h = 0; h < d->H; h++) {
        for (int n = 0; n < N; n++) {
            size_t nh = (size_t)n * d->H + h;
            fmap_row_bwd(dx + nh * d->d, dWf ? dWf + (size_t)h * d->d * d->d : NULL, dphi + nh * d->F,
                         phi + nh * d->F, x + nh * d->d, Wf ? Wf + (size_t)h * d->d * d->d : NULL, d->d);
        }
    }
}

/* ------------------------------------------------------------ projections */

static void la_views(float *const *P, const float **W, const float **A, const float **Bm)
{
    for (int i = 0; i < 4; i++) {
        W[i] = P[LZ_Q + i];
        A[i] = P[LZ_QA + 2 * i];
        Bm[i] = P[LZ_QB + 2 * i];
    }
}

static void la_project(la_acts *a, const float *x, const la_dims *d, float *const *P, int N)
{
    const float *W[4], *A[4], *Bm[4];
    la_views(P, W, A, Bm);
    int HQ = d->H * d->d;
    float *dst[3] = {a->qp, a->kp, a->vp};
    for (int i = 0; i < 3; i++) {
        lina_lora_forward(dst[i], a->t[i], x, W[i], A[i], Bm[i], d->s, N, d->D, HQ, d->r);
    }
}

/* ------------------------------------------------------------ window part */

static float la_factor(const la_dims *d, float *const *P, int h)
{
    return d->shared ? 1.0f / (1.0f + expf(-P[LZ_WF][h])) : d->mix;
}

/* combine one (row, head): y [d] from the window sums and the engine output lo [Vx] */
static void la_combine(float *y, const float *wn, float wd, const float *lo, const la_dims *d, float f)
{
    if (d->shared) {
        double den = (double)f * wd + lo[d->d];
        for (int i = 0; i < d->d; i++) {
            y[i] = (float)(((double)f * wn[i] + lo[i]) / den);
        }
    } else {
        for (int i = 0; i < d->d; i++) {
            y[i] = (float)((double)f * wn[i] / wd + (1.0 - f) * lo[i]);
        }
    }
}

/* the window sums of query q over keys / values j0..j1: row j at K / V + (j mod ring) * stride */
static void win_sums(const float *q, const float *K, const float *V, size_t stride, int64_t j0, int64_t j1,
                     int64_t ring, int dh, double *mx, double *den, double *acc)
{
    double scale = 1.0 / sqrt((double)dh), m = -INFINITY, s = 0.0;
    for (int64_t j = j0; j <= j1; j++) {
        const float *kj = K + (size_t)(j % ring) * stride;
        double dot = 0.0;
        for (int i = 0; i < dh; i++) {
            dot += (double)q[i] * kj[i];
        }
        m = dot * scale > m ? dot * scale : m;
    }
    for (int i = 0; i < dh; i++) {
        acc[i] = 0.0;
    }
    for (int64_t j = j0; j <= j1; j++) {
        const float *kj = K + (size_t)(j % ring) * stride, *vj = V + (size_t)(j % ring) * stride;
        double dot = 0.0;
        for (int i = 0; i < dh; i++) {
            dot += (double)q[i] * kj[i];
        }
        double e = exp(dot * scale - m);
        s += e;
        for (int i = 0; i < dh; i++) {
            acc[i] += e * vj[i];
        }
    }
    *mx = m;
    *den = s;
}

/* window sums of every (b, h, t) without a state: wm, wd [N, H], wn [N, HQ] */
static void window_forward(la_acts *a, const la_dims *d, int B, int T)
{
    int H = d->H, dh = d->d, HQ = H * dh;
#pragma omp parallel for if ((size_t)B * T * H * d->W * dh >= 65536)
    for (int bth = 0; bth < B * T * H; bth++) {
        int h = bth % H, t = (bth / H) % T, b = bth / (H * T);
        int j0 = t - d->W + 1 > 0 ? t - d->W + 1 : 0;
        size_t base = (size_t)b * T * HQ + (size_t)h * dh;
        double mx, den, acc[LINA_ROPE_MAX_DIM];
        win_sums(a->q + (size_t)bth * dh, a->k + base, a->vp + base, (size_t)HQ, j0, t, INT64_MAX, dh, &mx, &den,
                 acc);
        a->wm[bth] = (float)mx;
        a->wd[bth] = (float)den;
        for (int i = 0; i < dh; i++) {
            a->wn[(size_t)bth * dh + i] = (float)acc[i];
        }
    }
}

/* ------------------------------------------------------------ stateless forward */

/* the engine's inputs from fk, vp, kp: shifted W rows later for lolcats */
static void engine_inputs(la_acts *a, const la_dims *d, int B, int T)
{
    int H = d->H, F = d->F, Vx = d->Vx, dh = d->d, sh = d->all ? 0 : d->W;
#pragma omp parallel for if ((size_t)B * T * H * F >= 65536)
    for (int bt = 0; bt < B * T; bt++) {
        int t = bt % T;
        for (int h = 0; h < H; h++) {
            float *ks = a->ks + ((size_t)bt * H + h) * F, *gs = a->gs + ((size_t)bt * H + h) * F;
            float *vs = a->vs + ((size_t)bt * H + h) * Vx;
            if (t < sh) {
                memset(ks, 0, (size_t)F * sizeof(float));
                memset(gs, 0, (size_t)F * sizeof(float));
                memset(vs, 0, (size_t)Vx * sizeof(float));
                continue;
            }
            size_t src = (size_t)(bt - sh) * H + h;
            memcpy(ks, a->fk + src * F, (size_t)F * sizeof(float));
            memcpy(vs, a->vp + src * dh, (size_t)dh * sizeof(float));
            if (Vx > dh) {
                vs[dh] = 1.0f;
            }
            for (int c = 0; c < F; c++) {
                gs[c] = d->gate ? lina_logsigmoidf(a->kp[src * dh + c % dh]) / GATE_NORM : 0.0f;
            }
        }
    }
}

static lina_dd_in engine_in(const la_acts *a, const la_dims *d)
{
    lina_dd_in in = {a->fq, a->ks, a->vs, d->gate ? LINA_GATE_VECTOR : LINA_GATE_NONE, d->gate ? a->gs : NULL,
                     NULL};
    return in;
}

static int la_forward(const lina_mixer_call *c)
{
    const la_dims *d = c->dims;
    int B = c->B, T = c->T, N = B * T, H = d->H, dh = d->d, HQ = H * dh;
    la_acts a;
    la_carve(&a, c->acts, d, N);
    float *y = c->acts + la_acts_floats(d, N);
    la_project(&a, c->x, d, c->P, N);
    int rc;
    if ((rc = lina_rope_forward(a.q, a.qp, B, T, H, dh, 0, d->rope_theta)) ||
        (rc = lina_rope_forward(a.k, a.kp, B, T, H, dh, 0, d->rope_theta))) {
        return rc;
    }
    fmap_forward(a.fq, a.q, d->hedgehog ? c->P[LZ_FQ] : NULL, d, N);
    fmap_forward(a.fk, a.k, d->hedgehog ? c->P[LZ_FK] : NULL, d, N);
    engine_inputs(&a, d, B, T);
    lina_mix_dims md = lina_layer_mix(B, T, H, d->F, d->Vx, 0, 1.0f);
    lina_dd_in in = engine_in(&a, d);
    lina_dd_out o = {.o = a.lo, .ht = NULL, .states = NULL};
    if ((rc = lina_dd_fwd(&md, &in, &o, c->form, c->ws))) {
        return rc;
    }
    window_forward(&a, d, B, T);
    for (int nh = 0; nh < N * H; nh++) {
        la_combine(y + (size_t)nh * dh, a.wn + (size_t)nh * dh, a.wd[nh], a.lo + (size_t)nh * d->Vx, d,
                   la_factor(d, c->P, nh % H));
    }
    const float *W[4], *A[4], *Bm[4];
    la_views(c->P, W, A, Bm);
    if (!d->transfer) {
        lina_lora_forward(c->out, a.t[3], y, W[3], A[3], Bm[3], d->s, N, HQ, d->D, d->r);
        return LINA_OK;
    }
    /* attention transfer: the teacher's softmax attention goes on, the MSE is the auxiliary loss */
    lina_mix_dims sd = lina_layer_mix(B, T, H, dh, dh, 0, 0.0f);
    lina_softmax_in si = {a.q, a.k, a.vp, 0, 0, NULL, 0};
    lina_softmax_out so = {a.ot, a.st};
    if ((rc = lina_softmax_attn_fwd(&sd, &si, &so, c->ws))) {
        return rc;
    }
    lina_lora_forward(c->out, a.t[3], a.ot, W[3], A[3], Bm[3], d->s, N, HQ, d->D, d->r);
    if (c->aux) {
        double se = 0.0;
        for (size_t i = 0; i < (size_t)N * HQ; i++) {
            double e = (double)y[i] - a.ot[i];
            se += e * e;
        }
        *c->aux += se / ((double)N * HQ);
    }
    return LINA_OK;
}

/* ------------------------------------------------------------ backward */

static int la_backward(const lina_mixer_call *c)
{
    const la_dims *d = c->dims;
    int B = c->B, T = c->T, N = B * T, H = d->H, dh = d->d, HQ = H * dh, F = d->F, Vx = d->Vx;
    size_t n = (size_t)N, nq = n * HQ, nf = n * H * F, nv = n * H * Vx;
    la_acts a;
    la_carve(&a, c->acts, d, N);
    const float *y = c->acts + la_acts_floats(d, N);
    const float *W[4], *A[4], *Bm[4];
    la_views(c->P, W, A, Bm);
    float *const *G = c->G;
    float *dy = c->scratch, *dq = dy + nq, *dk = dq + nq, *dv = dk + nq, *dxp = dv + nq;
    float *dfq = dxp + nq, *dfk = dfq + nf, *dks = dfk + nf, *dgs = dks + nf, *dg = dgs + nf;
    float *dlo = dg + nf, *dvs = dlo + nv, *dwf = dvs + nv, *u = dwf + n * H;
    float *dot_ = u + n * d->r, *dqt = dot_ + (d->transfer ? nq : 0), *dkt = dqt + (d->transfer ? nq : 0);
    float *dvt = dkt + (d->transfer ? nq : 0);
    memset(c->scratch, 0, la_scratch_floats(d, N) * sizeof(float));
    int rc;
    /* o_proj */
    lina_lora_backward(d->transfer ? dot_ : dy, G[LZ_O], G[LZ_OA], G[LZ_OB], u, c->dout, d->transfer ? a.ot : y,
                       a.t[3], W[3], A[3], Bm[3], d->s, N, HQ, d->D, d->r);
    if (d->transfer) {
        double k = 2.0 * c->aux_grad / ((double)N * HQ);
        for (size_t i = 0; i < nq; i++) {
            float e = (float)(k * ((double)y[i] - a.ot[i]));
            dy[i] += e;
            dot_[i] -= e;
        }
        lina_mix_dims sd = lina_layer_mix(B, T, H, dh, dh, 0, 0.0f);
        lina_softmax_in si = {a.q, a.k, a.vp, 0, 0, NULL, 0};
        lina_softmax_grad_in sgi = {dot_, a.st};
        lina_softmax_grad_out sgo = {dqt, dkt, dvt, NULL};
        if ((rc = lina_softmax_attn_bwd(&sd, &si, &sgi, &sgo, c->ws))) {
            return rc;
        }
        for (size_t i = 0; i < nq; i++) {
            dq[i] += dqt[i];
            dk[i] += dkt[i];
            dv[i] += dvt[i];
        }
    }
    /* combine and window, per (b, h): keys and values of a row get gradient from later rows */
    double scale = 1.0 / sqrt((double)dh);
#pragma omp parallel for if ((size_t)B * T * H * d->W * dh >= 65536)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float f = la_factor(d, c->P, h);
        for (int t = 0; t < T; t++) {
            size_t nh = ((size_t)b * T + t) * H + h;
            const float *dyt = dy + nh * dh, *yt = y + nh * dh, *wn = a.wn + nh * dh, *lo = a.lo + nh * Vx;
            float *dl = dlo + nh * Vx;
            double wd = a.wd[nh], dNw[LINA_ROPE_MAX_DIM], dDw;
            if (d->shared) {
                double den = (double)f * wd + lo[dh], dyy = 0.0, dyn = 0.0;
                for (int i = 0; i < dh; i++) {
                    dyy += (double)dyt[i] * yt[i];
                    dyn += (double)dyt[i] * wn[i];
                }
                for (int i = 0; i < dh; i++) {
                    dNw[i] = f * dyt[i] / den;
                    dl[i] = (float)(dyt[i] / den);
                }
                dDw = -f * dyy / den;
                dl[dh] = (float)(-dyy / den);
                dwf[nh] = (float)((dyn - dyy * wd) / den * f * (1.0 - f));
            } else {
                double dyn = 0.0;
                for (int i = 0; i < dh; i++) {
                    dyn += (double)dyt[i] * wn[i];
                    dNw[i] = f * dyt[i] / wd;
                    dl[i] = (float)((1.0 - f) * dyt[i]);
                }
                dDw = -f * dyn / (wd * wd);
            }
            int j0 = t - d->W + 1 > 0 ? t - d->W + 1 : 0, jm = j0;
            const float *q = a.q + nh * dh;
            float *dqr = dq + nh * dh;
            double mx = a.wm[nh], dm = 0.0, best = -INFINITY;
            for (int j = j0; j <= t; j++) {
                size_t rj = (((size_t)b * T + j) * H + h) * dh;
                const float *kj = a.k + rj, *vj = a.vp + rj;
                double s = 0.0, dvn = 0.0;
                for (int i = 0; i < dh; i++) {
                    s += (double)q[i] * kj[i];
                    dvn += dNw[i] * vj[i];
                }
                s *= scale;
                if (s > best) {
                    best = s;
                    jm = j;
                }
                double e = exp(s - mx), ds = e * (dvn + dDw);
                dm -= ds;
                for (int i = 0; i < dh; i++) {
                    dv[rj + i] += (float)(e * dNw[i]);
                    dqr[i] += (float)(ds * scale * kj[i]);
                    dk[rj + i] += (float)(ds * scale * q[i]);
                }
            }
            /* m = max_j s_j: its gradient goes to the argmax */
            size_t rm = (((size_t)b * T + jm) * H + h) * dh;
            for (int i = 0; i < dh; i++) {
                dqr[i] += (float)(dm * scale * a.k[rm + i]);
                dk[rm + i] += (float)(dm * scale * q[i]);
            }
        }
    }
    if (d->shared && G[LZ_WF]) {
        for (int h = 0; h < H; h++) {
            double s = 0.0;
            for (int nn = 0; nn < N; nn++) {
                s += dwf[(size_t)nn * H + h];
            }
            G[LZ_WF][h] += (float)s;
        }
    }
    /* the linear branch */
    lina_mix_dims md = lina_layer_mix(B, T, H, F, Vx, 0, 1.0f);
    lina_dd_in in = engine_in(&a, d);
    lina_dd_grad_in gin = {dlo, NULL, NULL};
    lina_dd_grad_out gout = {dfq, dks, dvs, d->gate ? dgs : NULL, NULL};
    if ((rc = lina_dd_bwd(&md, &in, &gin, &gout, c->form, c->ws))) {
        return rc;
    }
    /* shift back: row t - sh receives what row t's engine inputs got */
    int sh = d->all ? 0 : d->W;
    for (int b = 0; b < B; b++) {
        for (int t = sh; t < T; t++) {
            for (int h = 0; h < H; h++) {
                size_t dst = ((size_t)b * T + t - sh) * H + h, src = ((size_t)b * T + t) * H + h;
                for (int cc = 0; cc < F; cc++) {
                    dfk[dst * F + cc] += dks[src * F + cc];
                    dg[dst * F + cc] += dgs[src * F + cc];
                }
                for (int i = 0; i < dh; i++) {
                    dv[dst * dh + i] += dvs[src * Vx + i];
                }
            }
        }
    }
    fmap_backward(dq, d->hedgehog ? G[LZ_FQ] : NULL, dfq, a.fq, a.q, d->hedgehog ? c->P[LZ_FQ] : NULL, d, N);
    fmap_backward(dk, d->hedgehog ? G[LZ_FK] : NULL, dfk, a.fk, a.k, d->hedgehog ? c->P[LZ_FK] : NULL, d, N);
    if ((rc = lina_rope_backward(dq, dq, B, T, H, dh, 0, d->rope_theta)) ||
        (rc = lina_rope_backward(dk, dk, B, T, H, dh, 0, d->rope_theta))) {
        return rc;
    }
    if (d->gate) {
        for (size_t nh = 0; nh < n * H; nh++) {
            for (int cc = 0; cc < F; cc++) {
                size_t ki = nh * dh + cc % dh;
                dk[ki] += dg[nh * F + cc] / GATE_NORM / (1.0f + expf(a.kp[ki])); /* logsigmoid' = sigmoid(-x) */
            }
        }
    }
    float *dsrc[3] = {dq, dk, dv};
    for (int i = 0; i < 3; i++) {
        lina_lora_backward(c->dx, G[LZ_Q + i], G[LZ_QA + 2 * i], G[LZ_QB + 2 * i], u, dsrc[i], c->x, a.t[i], W[i],
                           A[i], Bm[i], d->s, N, d->D, HQ, d->r);
    }
    return LINA_OK;
}

/* ------------------------------------------------------------ decode (state) */

/* token by token on the state: the linear state S, the window ring of keys and values */
static int la_forward_state(const lina_mixer_call *c)
{
    const la_dims *d = c->dims;
    int B = c->B, T = c->T, N = B * T, H = d->H, dh = d->d, HQ = H * dh, F = d->F, Vx = d->Vx, W = d->W;
    la_acts a;
    la_carve(&a, c->acts, d, N);
    float *y = c->acts + la_acts_floats(d, N);
    la_project(&a, c->x, d, c->P, N);
    int rc;
    if ((rc = lina_rope_forward(a.q, a.qp, B, T, H, dh, c->pos, d->rope_theta)) ||
        (rc = lina_rope_forward(a.k, a.kp, B, T, H, dh, c->pos, d->rope_theta))) {
        return rc;
    }
    fmap_forward(a.fq, a.q, d->hedgehog ? c->P[LZ_FQ] : NULL, d, N);
    int ring_g = d->gate && !d->all;
    size_t per = (size_t)F * Vx + 2 * (size_t)W * dh + (ring_g ? (size_t)W * F : 0);
    const float *Wfk = d->hedgehog ? c->P[LZ_FK] : NULL;
#pragma omp parallel for if ((size_t)B * H * T * (W * dh + F * Vx) >= 65536)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        float *S = c->state + (size_t)bh * per, *rk = S + (size_t)F * Vx, *rv = rk + (size_t)W * dh;
        float *rg = rv + (size_t)W * dh;
        float f = la_factor(d, c->P, h), phi[2 * LINA_ROPE_MAX_DIM], g[2 * LINA_ROPE_MAX_DIM];
        const float *wf = Wfk ? Wfk + (size_t)h * dh * dh : NULL;
        for (int t = 0; t < T; t++) {
            int64_t p = c->pos + t;
            size_t nh = ((size_t)b * T + t) * H + h;
            const float *kp = a.kp + nh * dh;
            /* 1. the token that joins the linear state: p - W (lolcats, from the ring) or p */
            int joins = d->all || p >= W;
            if (joins) {
                const float *kk = d->all ? a.k + nh * dh : rk + (size_t)(p % W) * dh;
                const float *vv = d->all ? a.vp + nh * dh : rv + (size_t)(p % W) * dh;
                fmap_row(phi, kk, wf, dh);
                for (int cc = 0; cc < F; cc++) {
                    g[cc] = !d->gate ? 0.0f
                            : d->all ? lina_logsigmoidf(kp[cc % dh]) / GATE_NORM
                                     : rg[(size_t)(p % W) * F + cc];
                }
                for (int cc = 0; cc < F; cc++) {
                    float dec = d->gate ? expf(g[cc]) : 1.0f, *row = S + (size_t)cc * Vx;
                    for (int i = 0; i < dh; i++) {
                        row[i] = dec * row[i] + phi[cc] * vv[i];
                    }
                    if (Vx > dh) {
                        row[dh] = dec * row[dh] + phi[cc];
                    }
                }
            }
            /* 2. the token enters the ring */
            memcpy(rk + (size_t)(p % W) * dh, a.k + nh * dh, (size_t)dh * sizeof(float));
            memcpy(rv + (size_t)(p % W) * dh, a.vp + nh * dh, (size_t)dh * sizeof(float));
            if (ring_g) {
                for (int cc = 0; cc < F; cc++) {
                    rg[(size_t)(p % W) * F + cc] = lina_logsigmoidf(kp[cc % dh]) / GATE_NORM;
                }
            }
            /* 3. the window (p - W, p] from the ring */
            double mx, den, acc[LINA_ROPE_MAX_DIM];
            win_sums(a.q + nh * dh, rk, rv, (size_t)dh, p - W + 1 > 0 ? p - W + 1 : 0, p, W, dh, &mx, &den, acc);
            /* 4. the linear read-out, 5. the mix */
            float lo[LINA_ROPE_MAX_DIM + 1], wn[LINA_ROPE_MAX_DIM];
            const float *fq = a.fq + nh * F;
            for (int i = 0; i < Vx; i++) {
                double s = 0.0;
                for (int cc = 0; cc < F; cc++) {
                    s += (double)fq[cc] * S[(size_t)cc * Vx + i];
                }
                lo[i] = (float)s;
            }
            for (int i = 0; i < dh; i++) {
                wn[i] = (float)acc[i];
            }
            la_combine(y + nh * dh, wn, (float)den, lo, d, f);
        }
    }
    const float *Wv[4], *A[4], *Bm[4];
    la_views(c->P, Wv, A, Bm);
    lina_lora_forward(c->out, a.t[3], y, Wv[3], A[3], Bm[3], d->s, N, HQ, d->D, d->r);
    return LINA_OK;
}

/* ------------------------------------------------------------ plug-in kind
 * Tensors under model.layers.{i}.attn.: q_proj / k_proj / v_proj.weight [H*d, D] and
 * o_proj.weight [D, H*d] (the teacher's names), feature_map_q.weight and
 * feature_map_k.weight [H, d, d] (hedgehog, identity at init), window_factors [H]
 * (lolcats, zeros: f = 1/2 at init), {q,k,v,o}_proj.lora_A.weight [r, in] (U(+-1/sqrt(in)))
 * and .lora_B.weight [out, r] (zeros) with lora_rank r > 0. */

static int la_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    la_dims *d = dims;
    memset(d, 0, sizeof(*d));
    d->D = c->hidden_size;
    d->H = c->num_heads;
    d->d = d->H > 0 ? d->D / d->H : 0;
    d->W = c->window_size;
    d->hedgehog = strcmp(c->linear_feature_map, "hedgehog") == 0;
    d->F = d->hedgehog ? 2 * d->d : d->d;
    d->gate = c->linear_gate ? 1 : 0;
    d->shared = strcmp(c->linear_method, "lolcats") == 0;
    d->all = !d->shared;
    d->Vx = d->d + (d->shared ? 1 : 0);
    d->mix = (float)c->window_factor;
    d->rope_theta = c->rope_theta > 0.0 ? c->rope_theta : 10000.0;
    d->r = c->lora_rank;
    d->s = d->r > 0 ? (float)(c->lora_alpha / d->r) : 0.0f;
    d->transfer = c->attn_transfer ? 1 : 0;
    if (d->H < 1 || d->d < 2 || d->d % 2 || d->d > LINA_ROPE_MAX_DIM || d->W < 1 ||
        (c->num_kv_heads && c->num_kv_heads != c->num_heads)) {
        return lina_set_error(LINA_EINVAL, "linearized attention: bad dims (even head dim, window >= 1, "
                                           "num_kv_heads = num_heads)");
    }
    int64_t D = d->D, HQ = (int64_t)d->H * d->d, r = d->r;
    int rc;
    if ((rc = lina_mixer_add(b, LZ_Q, "q_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LZ_K, "k_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LZ_V, "v_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LZ_O, "o_proj.weight", 2, D, HQ, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->hedgehog &&
        ((rc = lina_mixer_add(b, LZ_FQ, "feature_map_q.weight", 3, d->H, d->d, d->d, 0, LINA_INIT_EYE)) ||
         (rc = lina_mixer_add(b, LZ_FK, "feature_map_k.weight", 3, d->H, d->d, d->d, 0, LINA_INIT_EYE)))) {
        return rc;
    }
    if (d->shared && (rc = lina_mixer_add(b, LZ_WF, "window_factors", 1, d->H, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    static const char *const nm[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int i = 0; i < 4 && r > 0; i++) {
        int64_t in = i == 3 ? HQ : D, out = i == 3 ? D : HQ;
        char sa[48], sb[48];
        snprintf(sa, sizeof sa, "%s.lora_A.weight", nm[i]);
        snprintf(sb, sizeof sb, "%s.lora_B.weight", nm[i]);
        double ua[3] = {1.0 / sqrt((double)in), 0.0, 0.0};
        if ((rc = lina_mixer_add_init(b, LZ_QA + 2 * i, sa, 2, r, in, 0, 0, LINA_INIT_UNIFORM, ua)) ||
            (rc = lina_mixer_add(b, LZ_QB + 2 * i, sb, 2, out, r, 0, 0, LINA_INIT_ZEROS))) {
            return rc;
        }
    }
    return LINA_OK;
}

static int la_kind_forward(const lina_mixer_call *c)
{
    return c->state ? la_forward_state(c) : la_forward(c);
}

const lina_mixer_vt lina_linattn_kind = {
    .name = "linattn",
    .build = la_build,
    .acts_floats = la_acts_total,
    .scratch_floats = la_scratch_floats,
    .state_floats = la_state_floats,
    .forward = la_kind_forward,
    .backward = la_backward,
};
