/* moe_mlp.c -- the softmax top-k router (shared with MoM) and the top-k
 * mixture-of-experts SwiGLU feed-forward block as a plug-in kind (kind.h).
 * Math and names in moe_mlp.h. */
#include "moe_mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(float) == sizeof(int32_t), "int32 views of float buffers");
_Static_assert(sizeof(lina_moe_dims) <= LINA_MIXER_DIMS_BYTES, "MoE dims do not fit");

/* =============================================================== router */

void lina_router_topk(float *p, float *w, int32_t *sel, const float *logits, int N, int E, int k)
{
    for (int n = 0; n < N; n++) {
        const float *z = logits + (size_t)n * E;
        float *pn = p + (size_t)n * E;
        double mx = z[0], se = 0.0;
        for (int e = 1; e < E; e++) {
            mx = z[e] > mx ? z[e] : mx;
        }
        for (int e = 0; e < E; e++) {
            se += exp((double)z[e] - mx);
        }
        for (int e = 0; e < E; e++) {
            pn[e] = (float)(exp((double)z[e] - mx) / se);
        }
        /* k passes of argmax over the not yet chosen (ties: lower index) */
        int32_t *s = sel + (size_t)n * k;
        double sum = 0.0;
        for (int j = 0; j < k; j++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                int taken = 0;
                for (int i = 0; i < j; i++) {
                    taken |= s[i] == e;
                }
                if (!taken && (best < 0 || pn[e] > pn[best])) {
                    best = e;
                }
            }
            s[j] = best;
            sum += pn[best];
        }
        for (int j = 0; j < k; j++) {
            w[(size_t)n * k + j] = (float)(pn[s[j]] / sum);
        }
    }
}

void lina_router_layout(int32_t *perm, int32_t *pos, float *wr, int32_t *off, const int32_t *sel, const float *w,
                        int B, int T, int E, int k)
{
    int nb = E * B;
    memset(off, 0, ((size_t)nb + 1) * sizeof(int32_t));
    for (int n = 0; n < B * T; n++) {
        for (int j = 0; j < k; j++) {
            off[sel[(size_t)n * k + j] * B + n / T + 1]++;
        }
    }
    for (int i = 0; i < nb; i++) {
        off[i + 1] += off[i];
    }
    /* off[i] runs as the cursor of block i, ending at the start of block i+1 */
    for (int n = 0; n < B * T; n++) {
        for (int j = 0; j < k; j++) {
            int32_t r = off[sel[(size_t)n * k + j] * B + n / T]++;
            perm[r] = n;
            pos[(size_t)n * k + j] = r;
            wr[r] = w[(size_t)n * k + j];
        }
    }
    for (int i = nb; i > 0; i--) {
        off[i] = off[i - 1];
    }
    off[0] = 0;
}

double lina_router_balance(const float *p, const int32_t *sel, int N, int E, int k)
{
    double tot = 0.0;
    for (int e = 0; e < E; e++) {
        double P = 0.0;
        int64_t cnt = 0;
        for (int n = 0; n < N; n++) {
            P += p[(size_t)n * E + e];
            for (int j = 0; j < k; j++) {
                cnt += sel[(size_t)n * k + j] == e;
            }
        }
        tot += ((double)cnt / N) * (P / N);
    }
    return E * tot;
}

void lina_router_backward(float *dlogits, const float *p, const float *w, const int32_t *sel, const float *dw,
                          double daux, int N, int E, int k)
{
    /* d(balance)/d p[n, e] = E f_e / N (E <= LINA_MIXER_MAX_SLOTS: the callers' limits) */
    double fa[LINA_MIXER_MAX_SLOTS] = {0};
    if (daux != 0.0) {
        for (int n = 0; n < N; n++) {
            for (int j = 0; j < k; j++) {
                fa[sel[(size_t)n * k + j]] += 1.0;
            }
        }
        for (int e = 0; e < E; e++) {
            fa[e] = daux * E * (fa[e] / N) / N;
        }
    }
    for (int n = 0; n < N; n++) {
        const float *pn = p + (size_t)n * E;
        float *dz = dlogits + (size_t)n * E;
        const int32_t *s = sel + (size_t)n * k;
        const float *wn = w + (size_t)n * k, *dwn = dw + (size_t)n * k;
        double S = 0.0, wd = 0.0;
        for (int j = 0; j < k; j++) {
            S += pn[s[j]];
            wd += (double)wn[j] * dwn[j];
        }
        /* dp (in dz): w_j = p_j / S -> dp_i = (dw_i - sum_j w_j dw_j) / S for chosen i */
        for (int e = 0; e < E; e++) {
            dz[e] = (float)fa[e];
        }
        for (int j = 0; j < k; j++) {
            dz[s[j]] += (float)((dwn[j] - wd) / S);
        }
        /* softmax: dz_e = p_e (dp_e - sum_i p_i dp_i) */
        double dot = 0.0;
        for (int e = 0; e < E; e++) {
            dot += (double)pn[e] * dz[e];
        }
        for (int e = 0; e < E; e++) {
            dz[e] = (float)(pn[e] * (dz[e] - dot));
        }
    }
}

/* ============================================================ MoE block */

/* tensor slots: the router, then gate/up/down of each expert */
enum { MOE_ROUTER = 0 };
#define MOE_GATE(e) (1 + 3 * (e))
#define MOE_UP(e) (2 + 3 * (e))
#define MOE_DOWN(e) (3 + 3 * (e))

/* activation views for N rows (R = N*k slot rows) */
typedef struct moe_acts {
    float *p;            /* [N, E] router probabilities */
    float *w;            /* [N, k] renormalised weights */
    int32_t *sel, *pos;  /* [N, k] chosen experts, their slot rows */
    int32_t *perm;       /* [R] token row of each slot row */
    float *wr;           /* [R] weight of each slot row */
    int32_t *off;        /* [E*B + 1] slot rows of expert e: [off[e*B], off[(e+1)*B]) */
    float *xg;           /* [R, D] gathered inputs */
    float *gate, *up, *h; /* [R, I] */
    float *ye;           /* [R, D] expert outputs */
} moe_acts;

static size_t moe_acts_floats(const void *dims, int N)
{
    const lina_moe_dims *d = dims;
    size_t n = (size_t)N, R = n * d->k;
    return n * d->E + 3 * n * d->k + 2 * R + (size_t)d->E * n + 1 + 2 * R * d->D + 3 * R * d->I;
}

static void moe_carve(moe_acts *a, float *buf, const lina_moe_dims *d, int N)
{
    size_t n = (size_t)N, R = n * d->k;
    float *p = buf;
    a->p = p;                     p += n * d->E;
    a->w = p;                     p += R;
    a->sel = (int32_t *)(void *)p; p += R;
    a->pos = (int32_t *)(void *)p; p += R;
    a->perm = (int32_t *)(void *)p; p += R;
    a->wr = p;                    p += R;
    a->off = (int32_t *)(void *)p; p += (size_t)d->E * n + 1;
    a->xg = p;                    p += R * d->D;
    a->gate = p;                  p += R * d->I;
    a->up = p;                    p += R * d->I;
    a->h = p;                     p += R * d->I;
    a->ye = p;
}

static size_t moe_scratch_floats(const void *dims, int N)
{
    const lina_moe_dims *d = dims;
    size_t n = (size_t)N;
    /* dy, dxg [N, D] per expert; dw [N, k]; dlogits [N, E] */
    return 2 * n * d->D + n * d->k + n * d->E;
}

static int moe_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_moe_dims *d = dims;
    memset(d, 0, sizeof(*d));
    d->D = c->hidden_size;
    d->E = c->num_experts;
    d->k = c->num_experts_per_tok;
    d->I = c->moe_intermediate_size > 0 ? c->moe_intermediate_size : lina_config_mlp_size(c);
    if (d->D < 1 || d->E < 1 || d->k < 1 || d->k > d->E || d->I < 1) {
        return lina_set_error(LINA_EINVAL,
                              "moe: need 1 <= num_experts_per_tok (%d) <= num_experts (%d) and a positive width "
                              "(hidden_size %d, moe_intermediate_size %d)",
                              d->k, d->E, d->D, d->I);
    }
    if (d->E > LINA_MOE_MAX_EXPERTS) {
        return lina_set_error(LINA_EINVAL, "moe: num_experts %d is above lina's limit of %d per layer", d->E,
                              LINA_MOE_MAX_EXPERTS);
    }
    if (!(c->router_aux_loss_coef >= 0.0) || !isfinite(c->router_aux_loss_coef)) {
        return lina_set_error(LINA_EINVAL, "moe: router_aux_loss_coef must be >= 0 (got %g)",
                              c->router_aux_loss_coef);
    }
    d->aux_coef = c->router_aux_loss_coef / c->num_hidden_layers; /* every layer has the block */
    int64_t D = d->D, I = d->I;
    int rc = lina_mixer_add(b, MOE_ROUTER, "gate.weight", 2, d->E, D, 0, 1, LINA_INIT_NORMAL);
    char nm[64];
    for (int e = 0; !rc && e < d->E; e++) {
        snprintf(nm, sizeof(nm), "experts.%d.gate_proj.weight", e);
        rc = lina_mixer_add(b, MOE_GATE(e), nm, 2, I, D, 0, 1, LINA_INIT_NORMAL);
        snprintf(nm, sizeof(nm), "experts.%d.up_proj.weight", e);
        rc = rc ? rc : lina_mixer_add(b, MOE_UP(e), nm, 2, I, D, 0, 1, LINA_INIT_NORMAL);
        snprintf(nm, sizeof(nm), "experts.%d.down_proj.weight", e);
        rc = rc ? rc : lina_mixer_add(b, MOE_DOWN(e), nm, 2, D, I, 0, 1, LINA_INIT_NORMAL);
    }
    return rc;
}

/* out [N, D] = MoE(x [N, D]) */
static int moe_forward(const lina_mixer_call *c)
{
    const lina_moe_dims *d = c->dims;
    if (!d || !c->x || !c->out || !c->acts || c->B < 1 || c->T < 1) {
        return lina_set_error(LINA_EINVAL, "moe: bad call");
    }
    int B = c->B, T = c->T, N = B * T, D = d->D, E = d->E, k = d->k, I = d->I;
    float *const *P = c->P;
    moe_acts a;
    moe_carve(&a, c->acts, d, N);
    lina_linear_forward(a.p, c->x, P[MOE_ROUTER], NULL, N, D, E);
    lina_router_topk(a.p, a.w, a.sel, a.p, N, E, k);
    lina_router_layout(a.perm, a.pos, a.wr, a.off, a.sel, a.w, B, T, E, k);
    size_t R = (size_t)N * k;
    for (size_t r = 0; r < R; r++) {
        memcpy(a.xg + r * D, c->x + (size_t)a.perm[r] * D, (size_t)D * sizeof(float));
    }
    for (int e = 0; e < E; e++) {
        size_t r0 = (size_t)a.off[e * B], n = (size_t)a.off[(e + 1) * B] - r0;
        if (n == 0) {
            continue;
        }
        lina_gated_mlp_forward(a.ye + r0 * D, a.gate + r0 * I, a.up + r0 * I, a.h + r0 * I, a.xg + r0 * D,
                               P[MOE_GATE(e)], P[MOE_UP(e)], P[MOE_DOWN(e)], (int)n, D, I);
    }
    /* out[n] = sum_j w[n, j] ye[pos[n, j]], in choice order */
    for (int n = 0; n < N; n++) {
        float *o = c->out + (size_t)n * D;
        memset(o, 0, (size_t)D * sizeof(float));
        for (int j = 0; j < k; j++) {
            float wj = a.w[(size_t)n * k + j];
            const float *y = a.ye + (size_t)a.pos[(size_t)n * k + j] * D;
            for (int i = 0; i < D; i++) {
                o[i] += wj * y[i];
            }
        }
    }
    if (c->aux && c->cu) { /* packed documents: the balance of each document, summed */
        for (int64_t j = 0; j + 1 < c->ncu; j++) {
            const size_t r = (size_t)c->cu[j];
            *c->aux += d->aux_coef * lina_router_balance(a.p + r * E, a.sel + r * k, (int)(c->cu[j + 1] - c->cu[j]),
                                                         E, k);
        }
    } else if (c->aux) {
        *c->aux += d->aux_coef * lina_router_balance(a.p, a.sel, N, E, k);
    }
    return LINA_OK;
}

static int moe_backward(const lina_mixer_call *c)
{
    const lina_moe_dims *d = c->dims;
    if (!d || !c->x || !c->dout || !c->dx || !c->acts || !c->scratch || c->B < 1 || c->T < 1) {
        return lina_set_error(LINA_EINVAL, "moe: bad backward call");
    }
    int B = c->B, T = c->T, N = B * T, D = d->D, E = d->E, k = d->k, I = d->I;
    float *const *P = c->P;
    float *const *G = c->G;
    moe_acts a;
    moe_carve(&a, c->acts, d, N);
    float *dy = c->scratch;              /* [N, D] per expert */
    float *dxg = dy + (size_t)N * D;     /* [N, D] per expert */
    float *dw = dxg + (size_t)N * D;     /* [N, k] */
    float *dz = dw + (size_t)N * k;      /* [N, E] */
    /* dw[n, j] = dout[n] . ye[pos[n, j]] */
    for (int n = 0; n < N; n++) {
        const float *g = c->dout + (size_t)n * D;
        for (int j = 0; j < k; j++) {
            const float *y = a.ye + (size_t)a.pos[(size_t)n * k + j] * D;
            double s = 0.0;
            for (int i = 0; i < D; i++) {
                s += (double)g[i] * y[i];
            }
            dw[(size_t)n * k + j] = (float)s;
        }
    }
    /* experts: dy = wr * dout[perm], back through the SwiGLU, scatter dx */
    for (int e = 0; e < E; e++) {
        size_t r0 = (size_t)a.off[e * B], n = (size_t)a.off[(e + 1) * B] - r0;
        if (n == 0) {
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            const float *g = c->dout + (size_t)a.perm[r0 + i] * D;
            float wr = a.wr[r0 + i];
            for (int q = 0; q < D; q++) {
                dy[i * D + q] = wr * g[q];
            }
        }
        memset(dxg, 0, n * D * sizeof(float));
        int rc = lina_gated_mlp_backward(dxg, G ? G[MOE_GATE(e)] : NULL, G ? G[MOE_UP(e)] : NULL,
                                         G ? G[MOE_DOWN(e)] : NULL, dy, a.xg + r0 * D, a.gate + r0 * I,
                                         a.up + r0 * I, a.h + r0 * I, P[MOE_GATE(e)], P[MOE_UP(e)],
                                         P[MOE_DOWN(e)], (int)n, D, I, c->ws);
        if (rc) {
            return rc;
        }
        for (size_t i = 0; i < n; i++) {
            float *dst = c->dx + (size_t)a.perm[r0 + i] * D;
            for (int q = 0; q < D; q++) {
                dst[q] += dxg[i * D + q];
            }
        }
    }
    /* router */
    const int64_t one[2] = {0, N}, *cu = c->cu ? c->cu : one, ncu = c->cu ? c->ncu : 2;
    for (int64_t j = 0; j + 1 < ncu; j++) { /* each document's balance term (one: the whole call's) */
        const size_t r = (size_t)cu[j];
        lina_router_backward(dz + r * E, a.p + r * E, a.w + r * k, a.sel + r * k, dw + r * k,
                             c->aux_grad * d->aux_coef, (int)(cu[j + 1] - cu[j]), E, k);
    }
    lina_linear_backward(c->dx, G ? G[MOE_ROUTER] : NULL, NULL, dz, c->x, P[MOE_ROUTER], N, D, E);
    return LINA_OK;
}

const lina_mixer_vt lina_moe_kind = {
    .name = "moe",
    .build = moe_build,
    .acts_floats = moe_acts_floats,
    .scratch_floats = moe_scratch_floats,
    .forward = moe_forward,
    .backward = moe_backward,
    .flags = LINA_KIND_VARLEN,
};
