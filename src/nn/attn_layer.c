/* attn_layer.c -- FLA's softmax Attention layer (docs/mixers.md section 9): q/k/v
 * projections (optional biases), optional per-head RMSNorm on q and k, RoPE,
 * grouped-query softmax attention (lina_softmax_attn_fwd, causal, optional
 * window) and o_proj. Forward and backward; shapes in nn.h. N = B*T rows,
 * HQ = H*d, HKV = Hkv*d, G = H / Hkv. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <string.h>

int lina_attn_check_dims(const lina_attn_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->Hkv <= 0 || d->H % d->Hkv != 0 || d->d <= 0 || d->d % 2 != 0 ||
        d->window < 0 || !(d->rope_theta > 0.0)) {
        return lina_set_error(LINA_EINVAL, "attention layer: bad dims (head dim must be even)");
    }
    return LINA_OK;
}

size_t lina_attn_acts_floats(const lina_attn_dims *d, int N)
{
    size_t HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d;
    size_t conv = d->use_short_conv ? HQ + 2 * HKV + LINA_PROJ_PAD : 0; /* fused: rows padded */
    return (size_t)N * (6 * HQ + 3 * HKV + 3 * (size_t)d->H + (size_t)d->Hkv + conv);
}

size_t lina_attn_conv_cache_floats(const lina_attn_dims *d, int B)
{
    size_t C = (size_t)d->H * d->d + 2 * (size_t)d->Hkv * d->d;
    return d->use_short_conv ? (size_t)B * C * (size_t)d->conv_size : 0;
}

void lina_attn_acts_carve(lina_attn_acts *a, float *buf, const lina_attn_dims *d, int N)
{
    size_t n = (size_t)N, HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d;
    float *p = buf;
    a->qp = p;  p += n * HQ;
    a->kp = p;  p += n * HKV;
    a->vp = p;  p += n * HKV;
    a->qn = p;  p += n * HQ;
    a->kn = p;  p += n * HKV;
    a->rq = p;  p += n * (size_t)d->H;
    a->rk = p;  p += n * (size_t)d->Hkv;
    a->q = p;   p += n * HQ;
    a->k = p;   p += n * HQ;
    a->v = p;   p += n * HQ;
    a->o = p;   p += n * HQ;
    a->stat = p; p += n * 2 * (size_t)d->H;
    if (d->use_short_conv) {
        a->qc = p; p += n * HQ;
        a->kc = p; p += n * HKV;
        a->vc = p;
    } else {
        a->qc = a->qp;
        a->kc = a->kp;
        a->vc = a->vp;
    }
}

size_t lina_attn_scratch_floats(const lina_attn_dims *d, int N)
{
    size_t HQ = (size_t)d->H * d->d, HKV = (size_t)d->Hkv * d->d;
    size_t conv = d->use_short_conv ? HQ + 2 * HKV + LINA_PROJ_PAD : 0; /* fused: rows padded */
    return (size_t)N * (4 * HQ + 2 * HKV + conv);
}

static int sp_on(const lina_sp *sp)
{
    return sp && sp->size > 1;
}

/* the values the kernel reads: repeated over the grouped heads into v, or vp itself */
static const float *attn_v(const lina_attn_acts *a, const lina_attn_dims *d)
{
    return d->Hkv != d->H ? a->v : a->vp;
}

/* q, k, v projections with their SiLU short convs as one fused product
 * (nn.h lina_proj_*) when the layer has the convs, runs on whole sequences
 * (no sequence-parallel pieces) and the three weights lie back to back (no
 * biases between them); pt[0..2] filled, 1 returned then */
static int attn_qkv_parts(lina_proj_part *pt, const lina_attn_dims *d, const lina_attn_params *p, const lina_sp *sp)
{
    if (!d->use_short_conv || d->qkv_bias || sp_on(sp)) {
        return 0;
    }
    const int HQ = d->H * d->d, HKV = d->Hkv * d->d;
    memset(pt, 0, 3 * sizeof(*pt));
    pt[0] = (lina_proj_part){.w = p->q_proj, .cols = HQ, .conv = p->q_conv, .act = LINA_ACT_SILU};
    pt[1] = (lina_proj_part){.w = p->k_proj, .cols = HKV, .conv = p->k_conv, .act = LINA_ACT_SILU};
    pt[2] = (lina_proj_part){.w = p->v_proj, .cols = HKV, .conv = p->v_conv, .act = LINA_ACT_SILU};
    return lina_proj_fusable(pt, 3, d->D);
}

/* qp, kp, vp [N, *] from x: the projections (into qc, kc, vc), then the SiLU short convs
 * with the decode tails conv (NULL: zeros, not kept) when the layer has them (with sp:
 * the inputs before the piece from the pieces before it) */
static int attn_project(lina_attn_acts *a, const float *x, const lina_attn_dims *d, const lina_attn_params *p,
                        int B, int T, float *conv, const lina_sp *sp)
{
    int N = B * T, D = d->D, HQ = d->H * d->d, HKV = d->Hkv * d->d, W = d->conv_size;
    lina_proj_part pt[3];
    if (attn_qkv_parts(pt, d, p, sp)) {
        /* pre-activations [N, HQ + 2 HKV] in the qc, kc, vc space */
        float *cq = conv, *ck = cq ? cq + (size_t)B * HQ * W : NULL, *cv = ck ? ck + (size_t)B * HKV * W : NULL;
        lina_proj_qkv_out(pt, a->qp, a->kp, a->vp, cq, ck, cv);
        lina_proj_forward(a->qc, pt, 3, x, B, T, D, W);
        return LINA_OK;
    }
    lina_linear_forward(a->qc, x, p->q_proj, d->qkv_bias ? p->q_bias : NULL, N, D, HQ);
    lina_linear_forward(a->kc, x, p->k_proj, d->qkv_bias ? p->k_bias : NULL, N, D, HKV);
    lina_linear_forward(a->vc, x, p->v_proj, d->qkv_bias ? p->v_bias : NULL, N, D, HKV);
    if (d->use_short_conv && sp_on(sp)) {
        int rc;
        if ((rc = lina_sp_conv_forward(sp, a->qp, a->qc, p->q_conv, NULL, B, T, HQ, W, LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_forward(sp, a->kp, a->kc, p->k_conv, NULL, B, T, HKV, W, LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_forward(sp, a->vp, a->vc, p->v_conv, NULL, B, T, HKV, W, LINA_ACT_SILU))) {
            return rc;
        }
    } else if (d->use_short_conv) {
        float *cq = conv, *ck = cq ? cq + (size_t)B * HQ * W : NULL, *cv = ck ? ck + (size_t)B * HKV * W : NULL;
        lina_conv_act_forward(a->qp, a->qc, p->q_conv, cq, B, T, HQ, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->kp, a->kc, p->k_conv, ck, B, T, HKV, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->vp, a->vc, p->v_conv, cv, B, T, HKV, W, LINA_ACT_SILU);
    }
    return LINA_OK;
}

int lina_attn_forward(float *out, lina_attn_acts *a, const float *x, const lina_attn_dims *d,
                      const lina_attn_params *p, int B, int T, const lina_sp *sp, lina_ws *ws)
{
    int rc = lina_attn_check_dims(d);
    if (rc || (rc = attn_project(a, x, d, p, B, T, NULL, sp))) {
        return rc;
    }
    int N = B * T, D = d->D, HQ = d->H * d->d;
    const float *qs = a->qp, *ks = a->kp;
    if (d->qk_norm) {
        lina_rmsnorm_forward(a->qn, a->rq, a->qp, p->q_norm, NULL, N * d->H, d->d, LINA_ATTN_QK_NORM_EPS);
        lina_rmsnorm_forward(a->kn, a->rk, a->kp, p->k_norm, NULL, N * d->Hkv, d->d, LINA_ATTN_QK_NORM_EPS);
        qs = a->qn;
        ks = a->kn;
    }
    if (sp_on(sp)) {
        /* LASP-2H: q and k rotated at the piece's positions (k [N, HKV] in a->k), the keys and
         * values of the pieces before it gathered */
        if ((rc = lina_rope_forward(a->q, qs, B, T, d->H, d->d, sp->pos0, d->rope_theta)) ||
            (rc = lina_rope_forward(a->k, ks, B, T, d->Hkv, d->d, sp->pos0, d->rope_theta)) ||
            (rc = lina_sp_attn_fwd(sp, d, B, T, d->H, d->Hkv, d->d, d->window, a->q, a->k, a->vp, a->o, a->stat,
                                   ws))) {
            return rc;
        }
        lina_linear_forward(out, a->o, p->o_proj, NULL, N, HQ, D);
        return LINA_OK;
    }
    /* RoPE: q [B,T,H,d]; k rotated into o (scratch), then repeated over the grouped
     * heads (without groups: rotated into k, and v read where it is) */
    const int grouped = d->Hkv != d->H;
    if ((rc = lina_rope_forward(a->q, qs, B, T, d->H, d->d, 0, d->rope_theta)) ||
        (rc = lina_rope_forward(grouped ? a->o : a->k, ks, B, T, d->Hkv, d->d, 0, d->rope_theta))) {
        return rc;
    }
    if (grouped) {
        lina_heads_repeat(a->k, a->o, (size_t)N, d->H, d->Hkv, d->d);
        lina_heads_repeat(a->v, a->vp, (size_t)N, d->H, d->Hkv, d->d);
    }
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->d, d->d, 0, 0.0f);
    lina_softmax_in in = {a->q, a->k, attn_v(a, d), d->window, 0, NULL, 0};
    lina_softmax_out o = {a->o, a->stat};
    if ((rc = lina_softmax_attn_fwd(&md, &in, &o, ws))) {
        return rc;
    }
    lina_linear_forward(out, a->o, p->o_proj, NULL, N, HQ, D);
    return LINA_OK;
}

int lina_attn_backward(float *dx, lina_attn_params *gp, const float *dout, const float *x,
                       const lina_attn_acts *a, const lina_attn_dims *d, const lina_attn_params *p, int B, int T,
                       float *scratch, const lina_sp *sp, lina_ws *ws)
{
    int rc = lina_attn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, HQ = d->H * d->d, HKV = d->Hkv * d->d;
    size_t nq = (size_t)N * HQ, nkv = (size_t)N * HKV;
    float *dO = scratch;        /* [N,HQ], later dqp */
    float *dq = dO + nq;        /* [N,HQ] */
    float *dk = dq + nq;        /* [N,HQ], later dkp */
    float *dv = dk + nq;        /* [N,HQ] */
    float *dkr = dv + nq;       /* [N,HKV] */
    float *dvr = dkr + nkv;     /* [N,HKV] */
    /* o_proj's backward, the kernel and the head reduction write theirs, the fused
     * projection writes its own part (the unfused convs accumulate: below) */
    lina_linear_backward_set(dO, gp->o_proj, NULL, dout, a->o, p->o_proj, N, HQ, D);
    const int64_t pos0 = sp_on(sp) ? sp->pos0 : 0;
    if (sp_on(sp)) {
        /* LASP-2H: dk, dv of this piece's keys summed over the pieces that read them */
        if ((rc = lina_sp_attn_bwd(sp, d, B, T, d->H, d->Hkv, d->d, d->window, a->q, a->stat, dO, dq, dkr, dvr,
                                   ws))) {
            return rc;
        }
    } else {
        lina_mix_dims md = lina_layer_mix(B, T, d->H, d->d, d->d, 0, 0.0f);
        /* without groups the kernel writes dk, dv straight into dkr, dvr */
        const int grouped = d->Hkv != d->H;
        lina_softmax_in in = {a->q, a->k, attn_v(a, d), d->window, 0, NULL, 0};
        lina_softmax_grad_in gin = {dO, a->stat};
        lina_softmax_grad_out gout = {dq, grouped ? dk : dkr, grouped ? dv : dvr, NULL};
        if ((rc = lina_softmax_attn_bwd(&md, &in, &gin, &gout, ws))) {
            return rc;
        }
        if (grouped) {
            lina_heads_reduce(dkr, dk, (size_t)N, d->H, d->Hkv, d->d, 0);
            lina_heads_reduce(dvr, dv, (size_t)N, d->H, d->Hkv, d->d, 0);
        }
    }
    /* RoPE transposed, in place */
    if ((rc = lina_rope_backward(dq, dq, B, T, d->H, d->d, pos0, d->rope_theta)) ||
        (rc = lina_rope_backward(dkr, dkr, B, T, d->Hkv, d->d, pos0, d->rope_theta))) {
        return rc;
    }
    float *dqp = dq, *dkp = dkr;
    if (d->qk_norm) {
        dqp = dO;
        dkp = dk;
        lina_rmsnorm_backward_set(dqp, gp->q_norm, NULL, dq, a->qp, p->q_norm, a->rq, N * d->H, d->d);
        lina_rmsnorm_backward_set(dkp, gp->k_norm, NULL, dkr, a->kp, p->k_norm, a->rk, N * d->Hkv, d->d);
    }
    float *dvp = dvr;
    lina_proj_part pt[3];
    if (attn_qkv_parts(pt, d, p, sp)) {
        /* one product each for dx and the weights; the conv gradients go to dvr + nkv.. as [N, HQ + 2 HKV] */
        lina_proj_qkv_grad(pt, dqp, dkp, dvr, gp->q_proj, gp->k_proj, gp->v_proj, gp->q_conv, gp->k_conv,
                           gp->v_conv);
        lina_proj_backward(dx, dvr + nkv, pt, 3, a->qc, x, B, T, D, d->conv_size);
        return LINA_OK;
    }
    if (d->use_short_conv) {
        /* SiLU short convs: gradients into the projections' own buffers after dvr */
        int W = d->conv_size;
        float *dqc = dvr + nkv, *dkc = dqc + nq, *dvc = dkc + nkv;
        memset(dqc, 0, (nq + 2 * nkv) * sizeof(float));
        if (sp_on(sp)) {
            if ((rc = lina_sp_conv_backward(sp, dqc, gp->q_conv, NULL, dqp, a->qc, p->q_conv, NULL, B, T, HQ, W,
                                            LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward(sp, dkc, gp->k_conv, NULL, dkp, a->kc, p->k_conv, NULL, B, T, HKV, W,
                                            LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward(sp, dvc, gp->v_conv, NULL, dvr, a->vc, p->v_conv, NULL, B, T, HKV, W,
                                            LINA_ACT_SILU))) {
                return rc;
            }
        } else {
            lina_conv_act_backward(dqc, gp->q_conv, dqp, a->qc, p->q_conv, B, T, HQ, W, LINA_ACT_SILU);
            lina_conv_act_backward(dkc, gp->k_conv, dkp, a->kc, p->k_conv, B, T, HKV, W, LINA_ACT_SILU);
            lina_conv_act_backward(dvc, gp->v_conv, dvr, a->vc, p->v_conv, B, T, HKV, W, LINA_ACT_SILU);
        }
        dqp = dqc;
        dkp = dkc;
        dvp = dvc;
    }
    lina_linear_backward(dx, gp->q_proj, d->qkv_bias ? gp->q_bias : NULL, dqp, x, p->q_proj, N, D, HQ);
    lina_linear_backward(dx, gp->k_proj, d->qkv_bias ? gp->k_bias : NULL, dkp, x, p->k_proj, N, D, HKV);
    lina_linear_backward(dx, gp->v_proj, d->qkv_bias ? gp->v_bias : NULL, dvp, x, p->v_proj, N, D, HKV);
    return LINA_OK;
}

void lina_attn_cache_attend(float *o, const float *q, const float *kc, const float *vc, const float *fc, int B,
                            int T, int H, int Hkv, int dh, int pos, int cap, int window)
{
    double scale = 1.0 / sqrt((double)dh);
    int G = H / Hkv;
    /* each query against its keys from the newest back: with gates, the bias c_i - c_j (the
       sum of the gates after j) accumulates in double as j moves back */
#pragma omp parallel for if ((size_t)B * T * H * (size_t)(pos + T) * dh >= 65536)
    for (int bth = 0; bth < B * T * H; bth++) {
        int h = bth % H, t = (bth / H) % T, b = bth / (H * T), g = h / G, pt = pos + t;
        int j0 = window > 0 && pt - window + 1 > 0 ? pt - window + 1 : 0;
        const float *qr = q + (size_t)bth * dh, *fh = fc ? fc + ((size_t)b * H + h) * cap : NULL;
        const float *K = kc + ((size_t)b * Hkv + g) * cap * dh, *Vv = vc + ((size_t)b * Hkv + g) * cap * dh;
        float *orow = o + (size_t)bth * dh;
        double mx = -INFINITY, se = 0.0, bias = 0.0, acc[LINA_ATTN_CACHE_MAX_DIM];
        for (int i = 0; i < dh; i++) {
            acc[i] = 0.0;
        }
        for (int j = pt; j >= j0; j--) {
            double s = 0.0;
            for (int i = 0; i < dh; i++) {
                s += (double)qr[i] * K[(size_t)j * dh + i];
            }
            s = s * scale + bias;
            bias += fh ? fh[j] : 0.0;
            if (s > mx) {
                double f = exp(mx - s);
                se *= f;
                for (int i = 0; i < dh; i++) {
                    acc[i] *= f;
                }
                mx = s;
            }
            double w = exp(s - mx);
            se += w;
            for (int i = 0; i < dh; i++) {
                acc[i] += w * Vv[(size_t)j * dh + i];
            }
        }
        for (int i = 0; i < dh; i++) {
            orow[i] = (float)(acc[i] / se);
        }
    }
}

int lina_attn_forward_cached(float *out, lina_attn_acts *a, const float *x, const lina_attn_dims *d,
                             const lina_attn_params *p, int B, int T, float *kc, float *vc, float *conv, int pos,
                             int cap)
{
    int rc = lina_attn_check_dims(d);
    if (rc) {
        return rc;
    }
    if (pos < 0 || T < 1 || pos + T > cap) {
        return lina_set_error(LINA_EINVAL, "attention layer: KV cache full (%d + %d > %d positions)", pos, T, cap);
    }
    int N = B * T, D = d->D, HQ = d->H * d->d, dh = d->d;
    if ((rc = attn_project(a, x, d, p, B, T, conv, NULL))) {
        return rc;
    }
    const float *qs = a->qp, *ks = a->kp;
    if (d->qk_norm) {
        lina_rmsnorm_forward(a->qn, a->rq, a->qp, p->q_norm, NULL, N * d->H, dh, LINA_ATTN_QK_NORM_EPS);
        lina_rmsnorm_forward(a->kn, a->rk, a->kp, p->k_norm, NULL, N * d->Hkv, dh, LINA_ATTN_QK_NORM_EPS);
        qs = a->qn;
        ks = a->kn;
    }
    /* q [B,T,H,d] and rotated k [B,T,Hkv,d] (in a->k) at positions pos.. */
    if ((rc = lina_rope_forward(a->q, qs, B, T, d->H, dh, pos, d->rope_theta)) ||
        (rc = lina_rope_forward(a->k, ks, B, T, d->Hkv, dh, pos, d->rope_theta))) {
        return rc;
    }
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int g = 0; g < d->Hkv; g++) {
                size_t src = (((size_t)b * T + t) * d->Hkv + g) * dh;
                size_t dst = (((size_t)b * d->Hkv + g) * cap + (size_t)(pos + t)) * dh;
                memcpy(kc + dst, a->k + src, (size_t)dh * sizeof(float));
                memcpy(vc + dst, a->vp + src, (size_t)dh * sizeof(float));
            }
        }
    }
    lina_attn_cache_attend(a->o, a->q, kc, vc, NULL, B, T, d->H, d->Hkv, dh, pos, cap, d->window);
    lina_linear_forward(out, a->o, p->o_proj, NULL, N, HQ, D);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * Softmax attention (kind.h): the layers of model_type "transformer" (the
 * config's own keys) and the "attn" layers of a hybrid (the config's "attn"
 * block). Tensors under model.layers.{i}.attn.: q_proj.weight [H*d, D],
 * k_proj.weight / v_proj.weight [Hkv*d, D], their biases (qkv_bias),
 * q_norm.weight / k_norm.weight [d] (qk_norm), o_proj.weight [D, H*d],
 * {q,k,v}_conv1d.weight [C, 1, W] (use_short_conv, model_type "transformer" only).
 * The decode state is the K and V caches [B, Hkv, max_len, d] each, then the conv tails. */
enum { ATT_Q, ATT_QB, ATT_K, ATT_KB, ATT_V, ATT_VB, ATT_QN, ATT_KN, ATT_O, ATT_QC, ATT_KC, ATT_VC };

_Static_assert(sizeof(lina_attn_dims) <= LINA_MIXER_DIMS_BYTES, "lina_attn_dims too large");

static int attn_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_attn_dims *a = dims;
    memset(a, 0, sizeof(*a));
    int D = c->hidden_size;
    if (c->model_type == LINA_MODEL_TRANSFORMER) {
        a->H = c->num_heads;
        a->Hkv = c->num_kv_heads ? c->num_kv_heads : c->num_heads;
        a->qkv_bias = c->qkv_bias ? 1 : 0;
        a->qk_norm = c->qk_norm[0] ? 1 : 0;
        a->window = c->window_size;
        a->rope_theta = c->rope_theta > 0.0 ? c->rope_theta : 10000.0;
        a->use_short_conv = c->use_short_conv ? 1 : 0;
        a->conv_size = c->conv_size;
    } else {
        a->H = c->attn.num_heads;
        a->Hkv = c->attn.num_kv_heads ? c->attn.num_kv_heads : c->attn.num_heads;
        a->qkv_bias = c->attn.qkv_bias ? 1 : 0;
        a->qk_norm = 0;
        a->window = c->attn.window_size;
        a->rope_theta = c->attn.rope_theta > 0.0 ? c->attn.rope_theta : 10000.0;
    }
    a->D = D;
    a->d = a->H > 0 ? D / a->H : 0;
    int rc = lina_attn_check_dims(a);
    if (rc) {
        return rc;
    }
    int64_t HQ = (int64_t)a->H * a->d, HKV = (int64_t)a->Hkv * a->d;
    if ((rc = lina_mixer_add(b, ATT_Q, "q_proj.weight", 2, HQ, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, ATT_QB, "q_proj.bias", 1, HQ, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, ATT_K, "k_proj.weight", 2, HKV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, ATT_KB, "k_proj.bias", 1, HKV, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, ATT_V, "v_proj.weight", 2, HKV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (a->qkv_bias && (rc = lina_mixer_add(b, ATT_VB, "v_proj.bias", 1, HKV, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (a->qk_norm && (rc = lina_mixer_add(b, ATT_QN, "q_norm.weight", 1, a->d, 0, 0, 0, LINA_INIT_ONES))) ||
        (a->qk_norm && (rc = lina_mixer_add(b, ATT_KN, "k_norm.weight", 1, a->d, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, ATT_O, "o_proj.weight", 2, D, HQ, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    int64_t W = a->conv_size;
    if (a->use_short_conv && (rc = lina_mixer_add_qkv_convs(b, ATT_QC, ATT_KC, ATT_VC, HQ, HKV, HKV, W))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(attn_acts, lina_attn_acts_floats)
LINA_KIND_SIZE(attn_scratch, lina_attn_scratch_floats)

static size_t attn_state(const void *dims, int B, int max_len)
{
    const lina_attn_dims *a = dims;
    return lina_szadd(lina_szmul3(2 * (size_t)B, (size_t)a->Hkv * a->d, (size_t)max_len),
                      lina_attn_conv_cache_floats(a, B));
}

static void attn_views(float *const *v, lina_attn_params *p)
{
    p->q_proj = v[ATT_Q];
    p->q_bias = v[ATT_QB];
    p->k_proj = v[ATT_K];
    p->k_bias = v[ATT_KB];
    p->v_proj = v[ATT_V];
    p->v_bias = v[ATT_VB];
    p->q_norm = v[ATT_QN];
    p->k_norm = v[ATT_KN];
    p->o_proj = v[ATT_O];
    p->q_conv = v[ATT_QC];
    p->k_conv = v[ATT_KC];
    p->v_conv = v[ATT_VC];
}

static int attn_kind_forward(const lina_mixer_call *c)
{
    const lina_attn_dims *d = c->dims;
    lina_attn_params p;
    lina_attn_acts a;
    attn_views(c->P, &p);
    lina_attn_acts_carve(&a, c->acts, d, c->B * c->T);
    if (!c->state) {
        return lina_attn_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->sp, c->ws);
    }
    size_t kv = lina_szmul3((size_t)c->B, (size_t)d->Hkv * d->d, (size_t)c->cap);
    float *kc = c->state, *vc = kc + kv, *conv = d->use_short_conv ? vc + kv : NULL;
    return lina_attn_forward_cached(c->out, &a, c->x, d, &p, c->B, c->T, kc, vc, conv, (int)c->pos, c->cap);
}

static int attn_kind_backward(const lina_mixer_call *c)
{
    const lina_attn_dims *d = c->dims;
    lina_attn_params p, gp;
    lina_attn_acts a;
    attn_views(c->P, &p);
    attn_views(c->G, &gp);
    lina_attn_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_attn_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->sp, c->ws);
}

const lina_mixer_vt lina_attn_kind = {
    .name = "attn",
    .build = attn_build,
    .acts_floats = attn_acts,
    .scratch_floats = attn_scratch,
    .state_floats = attn_state,
    .forward = attn_kind_forward,
    .backward = attn_kind_backward,
    .flags = LINA_KIND_KV_CACHE | LINA_KIND_SP,
};
