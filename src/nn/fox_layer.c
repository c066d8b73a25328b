/* fox_layer.c -- FLA's ForgettingAttention (docs/mixers.md section 9.2): q/k/v
 * projections (optional biases), a log forget gate per query head
 * (logsigmoid of f_proj, which has a bias), optional per-head RMSNorm on q and
 * k with full-width weights, no position encoding, forgetting attention
 * (lina_softmax_attn_fwd with the gate; causal, optional window), an optional
 * sigmoid output gate and o_proj. Forward, backward and a cached decode
 * step; shapes in nn.h. N = B*T rows, HQ = H*d, HKV = Hkv*d, G = H / Hkv. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <string.h>

#define FOX_QK_NORM_EPS 1e-5f /* FLA's GroupNorm default */

int lina_fox_check_dims(const lina_fox_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->Hkv <= 0 || d->H % d->Hkv != 0 || d->d <= 0 || d->window < 0) {
        return lina_set_error(LINA_EINVAL, "forgetting attention layer: bad dims");
    }
    return LINA_OK;
}

size_t lina_fox_acts_floats(const lina_fox_dims *d, int N)
{
    size_t HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d, H = (size_t)d->H;
    size_t n = 5 * HQ + 3 * HKV + 5 * H + (size_t)d->Hkv + (d->use_output_gate ? 2 * HQ : 0);
    return lina_szmul((size_t)N, n);
}

void lina_fox_acts_carve(lina_fox_acts *a, float *buf, const lina_fox_dims *d, int N)
{
    size_t n = (size_t)N, HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d, H = (size_t)d->H;
    float *p = buf;
    a->qp = p;   p += n * HQ;
    a->kp = p;   p += n * HKV;
    a->vp = p;   p += n * HKV;
    a->q = p;    p += n * HQ;
    a->kn = p;   p += n * HKV;
    a->rq = p;   p += n * H;
    a->rk = p;   p += n * (size_t)d->Hkv;
    a->k = p;    p += n * HQ;
    a->v = p;    p += n * HQ;
    a->fp = p;   p += n * H;
    a->f = p;    p += n * H;
    a->o = p;    p += n * HQ;
    a->stat = p; p += n * 2 * H;
    if (d->use_output_gate) {
        a->gp = p; p += n * HQ;
        a->y = p;
    } else {
        a->gp = NULL;
        a->y = a->o;
    }
}

size_t lina_fox_scratch_floats(const lina_fox_dims *d, int N)
{
    size_t HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d;
    return lina_szmul((size_t)N, 5 * HQ + 3 * HKV + (size_t)d->H);
}

/* Per-head RMSNorm with one weight per channel of the full width (FLA's
 * GroupNorm with is_rms_norm): y [N, G*d] = xhat * w, xhat the RMSNorm of each
 * d-wide group, rstd [N*G]. */
static void group_rms_forward(float *y, float *rstd, const float *x, const float *w, int N, int G, int d)
{
    size_t C = (size_t)G * d;
    lina_rmsnorm_forward(y, rstd, x, NULL, NULL, N * G, d, FOX_QK_NORM_EPS);
#pragma omp parallel for if ((size_t)N * C >= 32768)
    for (int n = 0; n < N; n++) {
        for (size_t c = 0; c < C; c++) {
            y[(size_t)n * C + c] *= w[c];
        }
    }
}

/* Its backward: dx += d/dx, dw += sum_n dy * xhat (rows in order, per channel);
 * tmp [N, G*d] scratch. */
static void group_rms_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                               const float *rstd, int N, int G, int d, float *tmp)
{
    size_t C = (size_t)G * d;
#pragma omp parallel for if ((size_t)N * C >= 32768)
    for (size_t c = 0; c < C; c++) {
        double s = 0.0;
        for (int n = 0; n < N; n++) {
            size_t j = (size_t)n * C + c;
            s += (double)dy[j] * x[j] * rstd[(size_t)n * G + c / (size_t)d];
            tmp[j] = dy[j] * w[c];
        }
        dw[c] += (float)s;
    }
    lina_rmsnorm_backward(dx, NULL, NULL, tmp, x, NULL, rstd, N * G, d);
}

/* projections, log forget gates, qk_norm: qp, kp, vp, fp, f, q, kn (and rq, rk) */
static void fox_project(lina_fox_acts *a, const float *x, const lina_fox_dims *d, const lina_fox_params *p, int N)
{
    int D = d->D, HQ = d->H * d->d, HKV = d->Hkv * d->d;
    lina_linear_forward(a->qp, x, p->q_proj, d->qkv_bias ? p->q_bias : NULL, N, D, HQ);
    lina_linear_forward(a->kp, x, p->k_proj, d->qkv_bias ? p->k_bias : NULL, N, D, HKV);
    lina_linear_forward(a->vp, x, p->v_proj, d->qkv_bias ? p->v_bias : NULL, N, D, HKV);
    lina_linear_forward(a->fp, x, p->f_proj, p->f_bias, N, D, d->H);
    lina_vlogsigmoid(a->f, a->fp, (size_t)N * d->H);
    if (d->qk_norm) {
        group_rms_forward(a->q, a->rq, a->qp, p->q_norm, N, d->H, d->d);
        group_rms_forward(a->kn, a->rk, a->kp, p->k_norm, N, d->Hkv, d->d);
    } else {
        memcpy(a->q, a->qp, (size_t)N * HQ * sizeof(float));
        memcpy(a->kn, a->kp, (size_t)N * HKV * sizeof(float));
    }
}

/* the output gate (y = sigmoid(x Wg^T) * o) and o_proj */
static void fox_output(float *out, lina_fox_acts *a, const float *x, const lina_fox_dims *d,
                       const lina_fox_params *p, int N)
{
    size_t n = (size_t)N * d->H * d->d;
    if (d->use_output_gate) {
        lina_linear_forward(a->gp, x, p->g_proj, NULL, N, d->D, d->H * d->d);
        lina_vsigmoid(a->y, a->gp, n);
        for (size_t i = 0; i < n; i++) {
            a->y[i] *= a->o[i];
        }
    }
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, d->H * d->d, d->D);
}

int lina_fox_forward(float *out, lina_fox_acts *a, const float *x, const lina_fox_dims *d,
                     const lina_fox_params *p, int B, int T, lina_ws *ws)
{
    int rc = lina_fox_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T;
    fox_project(a, x, d, p, N);
    lina_heads_repeat(a->k, a->kn, (size_t)N, d->H, d->Hkv, d->d);
    lina_heads_repeat(a->v, a->vp, (size_t)N, d->H, d->Hkv, d->d);
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->d, d->d, 0, 0.0f);
    lina_softmax_in in = {a->q, a->k, a->v, d->window, 0, a->f, 0};
    lina_softmax_out o = {a->o, a->stat};
    if ((rc = lina_softmax_attn_fwd(&md, &in, &o, ws))) {
        return rc;
    }
    fox_output(out, a, x, d, p, N);
    return LINA_OK;
}

int lina_fox_backward(float *dx, lina_fox_params *gp, const float *dout, const float *x, const lina_fox_acts *a,
                      const lina_fox_dims *d, const lina_fox_params *p, int B, int T, float *scratch, lina_ws *ws)
{
    int rc = lina_fox_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, HQ = H * d->d, HKV = d->Hkv * d->d;
    size_t nq = (size_t)N * HQ, nkv = (size_t)N * HKV;
    float *dY = scratch;        /* [N,HQ] d(gated output), later the qk_norm scratch */
    float *dO = dY + nq;        /* [N,HQ] */
    float *dq = dO + nq;        /* [N,HQ] */
    float *dk = dq + nq;        /* [N,HQ] */
    float *dv = dk + nq;        /* [N,HQ] */
    float *dkr = dv + nq;       /* [N,HKV] */
    float *dvr = dkr + nkv;     /* [N,HKV] */
    float *dkp = dvr + nkv;     /* [N,HKV] (qk_norm) */
    float *df = dkp + nkv;      /* [N,H] */
    memset(scratch, 0, lina_fox_scratch_floats(d, N) * sizeof(float));

    lina_linear_backward(dY, gp->o_proj, NULL, dout, a->y, p->o_proj, N, HQ, D);
    if (d->use_output_gate) {
        /* y = s * o, s = sigmoid(gp): dO = dY s, d(gp) = dY o s (1 - s) (into dq, free until the attention) */
        lina_vsigmoid(dq, a->gp, nq);
        for (size_t i = 0; i < nq; i++) {
            float s = dq[i];
            dO[i] = dY[i] * s;
            dq[i] = dY[i] * a->o[i] * s * (1.0f - s);
        }
        lina_linear_backward(dx, gp->g_proj, NULL, dq, x, p->g_proj, N, D, HQ);
        memset(dq, 0, nq * sizeof(float));
    } else {
        memcpy(dO, dY, nq * sizeof(float));
    }
    lina_mix_dims md = lina_layer_mix(B, T, H, d->d, d->d, 0, 0.0f);
    lina_softmax_in in = {a->q, a->k, a->v, d->window, 0, a->f, 0};
    lina_softmax_grad_in gin = {dO, a->stat};
    lina_softmax_grad_out gout = {dq, dk, dv, df};
    if ((rc = lina_softmax_attn_bwd(&md, &in, &gin, &gout, ws))) {
        return rc;
    }
    /* f = logsigmoid(fp): d(fp) = df (1 - sigmoid(fp)), in place */
    for (size_t i = 0; i < (size_t)N * H; i++) {
        df[i] *= 1.0f / (1.0f + expf(a->fp[i]));
    }
    lina_linear_backward(dx, gp->f_proj, gp->f_bias, df, x, p->f_proj, N, D, H);
    lina_heads_reduce(dkr, dk, (size_t)N, H, d->Hkv, d->d, 0);
    lina_heads_reduce(dvr, dv, (size_t)N, H, d->Hkv, d->d, 0);
    float *dqx = dq, *dkx = dkr;
    if (d->qk_norm) {
        /* the norms' input gradients into dk (free now) and dkp */
        float *tmp = dY;
        memset(dk, 0, nq * sizeof(float));
        group_rms_backward(dk, gp->q_norm, dq, a->qp, p->q_norm, a->rq, N, H, d->d, tmp);
        group_rms_backward(dkp, gp->k_norm, dkr, a->kp, p->k_norm, a->rk, N, d->Hkv, d->d, tmp);
        dqx = dk;
        dkx = dkp;
    }
    lina_linear_backward(dx, gp->q_proj, d->qkv_bias ? gp->q_bias : NULL, dqx, x, p->q_proj, N, D, HQ);
    lina_linear_backward(dx, gp->k_proj, d->qkv_bias ? gp->k_bias : NULL, dkx, x, p->k_proj, N, D, HKV);
    lina_linear_backward(dx, gp->v_proj, d->qkv_bias ? gp->v_bias : NULL, dvr, x, p->v_proj, N, D, HKV);
    return LINA_OK;
}

int lina_fox_forward_cached(float *out, lina_fox_acts *a, const float *x, const lina_fox_dims *d,
                            const lina_fox_params *p, int B, int T, float *kc, float *vc, float *fc, int pos,
                            int cap)
{
    int rc = lina_fox_check_dims(d);
    if (rc) {
        return rc;
    }
    if (pos < 0 || T < 1 || pos + T > cap) {
        return lina_set_error(LINA_EINVAL, "forgetting attention layer: KV cache full (%d + %d > %d positions)", pos,
                              T, cap);
    }
    int N = B * T, H = d->H, dh = d->d;
    fox_project(a, x, d, p, N);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            size_t row = (size_t)b * T + t;
            for (int g = 0; g < d->Hkv; g++) {
                size_t src = (row * d->Hkv + g) * dh;
                size_t dst = (((size_t)b * d->Hkv + g) * cap + (size_t)(pos + t)) * dh;
                memcpy(kc + dst, a->kn + src, (size_t)dh * sizeof(float));
                memcpy(vc + dst, a->vp + src, (size_t)dh * sizeof(float));
            }
            for (int h = 0; h < H; h++) {
                fc[((size_t)b * H + h) * cap + (size_t)(pos + t)] = a->f[row * H + h];
            }
        }
    }
    lina_attn_cache_attend(a->o, a->q, kc, vc, fc, B, T, H, d->Hkv, dh, pos, cap, d->window);
    fox_output(out, a, x, d, p, N);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "forgetting_transformer" (kind.h). Tensors under
 * model.layers.{i}.attn.: q_proj.weight [H*d, D], k_proj.weight /
 * v_proj.weight [Hkv*d, D] (biases with qkv_bias), f_proj.weight [H, D],
 * f_proj.bias [H], g_proj.weight [D, D] (use_output_gate), q_norm.weight [H*d]
 * / k_norm.weight [Hkv*d] (qk_norm), o_proj.weight [D, H*d]. The decode state
 * is the K and V caches [B, Hkv, max_len, d] each, then the per-token log
 * forget gates [B, H, max_len]. */
enum { FX_Q, FX_QB, FX_K, FX_KB, FX_V, FX_VB, FX_F, FX_FB, FX_G, FX_QN, FX_KN, FX_O };

_Static_assert(sizeof(lina_fox_dims) <= LINA_MIXER_DIMS_BYTES, "lina_fox_dims too large");

static int fox_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_fox_dims *a = dims;
    memset(a, 0, sizeof(*a));
    int D = c->hidden_size;
    if (c->use_short_conv) {
        return lina_set_error(LINA_EINVAL, "forgetting_transformer: use_short_conv is not implemented");
    }
    a->D = D;
    a->H = c->num_heads;
    a->Hkv = c->num_kv_heads ? c->num_kv_heads : c->num_heads;
    a->d = a->H > 0 ? D / a->H : 0;
    a->qkv_bias = c->qkv_bias ? 1 : 0;
    a->qk_norm = c->qk_norm[0] ? 1 : 0;
    a->use_output_gate = c->use_output_gate ? 1 : 0;
    a->window = c->window_size;
    int rc = lina_fox_check_dims(a);
    if (rc) {
        return rc;
    }
    if (a->d > LINA_ATTN_CACHE_MAX_DIM) {
        return lina_set_error(LINA_EINVAL, "forgetting_transformer: head dim %d above %d", a->d, LINA_ATTN_CACHE_MAX_DIM);
    }
    int64_t HQ = (int64_t)a->H * a->d, HKV = (int64_t)a->Hkv * a->d;
    if ((rc = lina_mixer_add(b, FX_Q, "q_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, FX_QB, "q_proj.bias", 1, HQ, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, FX_K, "k_proj.weight", 2, HKV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, FX_KB, "k_proj.bias", 1, HKV, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, FX_V, "v_proj.weight", 2, HKV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, FX_VB, "v_proj.bias", 1, HKV, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, FX_F, "f_proj.weight", 2, a->H, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, FX_FB, "f_proj.bias", 1, a->H, 0, 0, 0, LINA_INIT_ZEROS)) ||
        (a->use_output_gate && (rc = lina_mixer_add(b, FX_G, "g_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL))) ||
        (rc = lina_mixer_add(b, FX_O, "o_proj.weight", 2, D, HQ, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qk_norm && (rc = lina_mixer_add(b, FX_QN, "q_norm.weight", 1, HQ, 0, 0, 0, LINA_INIT_ONES))) ||
        (a->qk_norm && (rc = lina_mixer_add(b, FX_KN, "k_norm.weight", 1, HKV, 0, 0, 0, LINA_INIT_ONES)))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(fox_acts, lina_fox_acts_floats)
LINA_KIND_SIZE(fox_scratch, lina_fox_scratch_floats)

static size_t fox_state(const void *dims, int B, int max_len)
{
    const lina_fox_dims *a = dims;
    return lina_szmul3((size_t)B, 2 * (size_t)a->Hkv * a->d + (size_t)a->H, (size_t)max_len);
}

static void fox_views(float *const *v, lina_fox_params *p)
{
    p->q_proj = v[FX_Q];
    p->q_bias = v[FX_QB];
    p->k_proj = v[FX_K];
    p->k_bias = v[FX_KB];
    p->v_proj = v[FX_V];
    p->v_bias = v[FX_VB];
    p->f_proj = v[FX_F];
    p->f_bias = v[FX_FB];
    p->g_proj = v[FX_G];
    p->q_norm = v[FX_QN];
    p->k_norm = v[FX_KN];
    p->o_proj = v[FX_O];
}

static int fox_kind_forward(const lina_mixer_call *c)
{
    const lina_fox_dims *d = c->dims;
    lina_fox_params p;
    lina_fox_acts a;
    fox_views(c->P, &p);
    lina_fox_acts_carve(&a, c->acts, d, c->B * c->T);
    if (!c->state) {
        return lina_fox_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->ws);
    }
    size_t kv = lina_szmul3((size_t)c->B, (size_t)d->Hkv * d->d, (size_t)c->cap);
    float *kc = c->state, *vc = kc + kv, *fc = vc + kv;
    return lina_fox_forward_cached(c->out, &a, c->x, d, &p, c->B, c->T, kc, vc, fc, (int)c->pos, c->cap);
}

static int fox_kind_backward(const lina_mixer_call *c)
{
    const lina_fox_dims *d = c->dims;
    lina_fox_params p, gp;
    lina_fox_acts a;
    fox_views(c->P, &p);
    fox_views(c->G, &gp);
    lina_fox_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_fox_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->ws);
}

const lina_mixer_vt lina_fox_kind = {
    .name = "forgetting_attn",
    .build = fox_build,
    .acts_floats = fox_acts,
    .scratch_floats = fox_scratch,
    .state_floats = fox_state,
    .forward = fox_kind_forward,
    .backward = fox_kind_backward,
    .flags = LINA_KIND_KV_CACHE,
};
