/* delta_layer.c -- FLA's GatedDeltaNet layer (docs/mixers.md section 4.2): q/k/v
 * projections through short convolutions (SiLU), L2-normalised q and k, the
 * decay g = -exp(A_log) softplus(a + dt_bias), beta = sigmoid(b), the gated
 * delta rule (lina_delta_fwd), the per-head FusedRMSNormGated output and
 * o_proj. Forward (with an optional decode cache) and backward. Shapes in
 * nn.h; N = B*T rows, HK = H*K, HV = H*V. */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GDN_L2_EPS 1e-6f

/* value heads */
static int nv_of(const lina_gdn_dims *d)
{
    return d->num_v_heads > 0 ? d->num_v_heads : d->H;
}

int lina_gdn_check_dims(const lina_gdn_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0 || (d->use_short_conv && d->conv_size <= 0) ||
        d->num_v_heads < 0 || nv_of(d) % d->H != 0) {
        return lina_set_error(LINA_EINVAL, "gated_deltanet layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "gated_deltanet layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

size_t lina_gdn_acts_floats(const lina_gdn_dims *d, int N)
{
    size_t H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K, VK = NV * d->K, VV = NV * d->V;
    size_t rep = NV != H ? 2 * VK : 0;
    return (size_t)N * (6 * HK + rep + 5 * VV + 2 * H + 5 * NV);
}

void lina_gdn_acts_carve(lina_gdn_acts *a, float *buf, const lina_gdn_dims *d, int N)
{
    size_t n = (size_t)N, H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K, VK = NV * d->K,
           VV = NV * d->V;
    float *p = buf;
    a->qp = p;   p += n * HK;
    a->kp = p;   p += n * HK;
    a->vp = p;   p += n * VV;
    a->qc = p;   p += n * HK;
    a->kc = p;   p += n * HK;
    a->qn = p;   p += n * HK;
    a->kn = p;   p += n * HK;
    a->rq = p;   p += n * H;
    a->rk = p;   p += n * H;
    if (NV != H) {
        a->qe = p; p += n * VK;
        a->ke = p; p += n * VK;
    } else {
        a->qe = a->qn;
        a->ke = a->kn;
    }
    a->v = p;    p += n * VV;
    a->a = p;    p += n * NV;
    a->g = p;    p += n * NV;
    a->bl = p;   p += n * NV;
    a->beta = p; p += n * NV;
    a->gate = p; p += n * VV;
    a->o = p;    p += n * VV;
    a->rstd = p; p += n * NV;
    a->y = p;
}

size_t lina_gdn_scratch_floats(const lina_gdn_dims *d, int N)
{
    size_t H = (size_t)d->H, NV = (size_t)nv_of(d), HK = H * d->K, VK = NV * d->K, VV = NV * d->V;
    size_t rep = NV != H ? 2 * VK : 0;
    return (size_t)N * (3 * VV + 4 * HK + rep + 2 * NV);
}

size_t lina_gdn_cache_floats(const lina_gdn_dims *d, int B)
{
    size_t HK = (size_t)d->H * d->K, VV = (size_t)nv_of(d) * d->V;
    size_t conv = d->use_short_conv ? (2 * HK + VV) * (size_t)d->conv_size : 0;
    return (size_t)B * (conv + (size_t)nv_of(d) * d->K * (size_t)d->V);
}

static lina_mix_dims gdn_mix(const lina_gdn_dims *d, int B, int T)
{
    lina_mix_dims md = {0};
    md.B = B;
    md.T = T;
    md.H = nv_of(d);
    md.K = d->K;
    md.V = d->V;
    md.chunk = 64;
    md.scale = 0.0f;
    return md;
}

static float sigm(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* conv (or plain SiLU): y [B,T,C] from x [B,T,C]; cache [B,C,W] or NULL */
static void conv_or_silu(float *y, const float *x, const float *w, float *cache, const lina_gdn_dims *d, int B,
                         int T, int C)
{
    if (d->use_short_conv) {
        lina_shortconv_forward(y, x, w, NULL, cache, cache, B, T, C, d->conv_size, LINA_ACT_SILU);
    } else {
        lina_silu_forward(y, x, (size_t)B * T * C);
    }
}

/* dst [N, NV*K] = src [N, H*K] with q/k head j / (NV/H) for value head j */
static void repeat_qk(float *dst, const float *src, const lina_gdn_dims *d, int N)
{
    int NV = nv_of(d), G = NV / d->H;
    for (int n = 0; n < N; n++) {
        for (int j = 0; j < NV; j++) {
            memcpy(dst + ((size_t)n * NV + j) * d->K, src + ((size_t)n * d->H + j / G) * d->K,
                   (size_t)d->K * sizeof(float));
        }
    }
}

/* dst [N, H*K] = group sums of src [N, NV*K] (written) */
static void reduce_qk(float *dst, const float *src, const lina_gdn_dims *d, int N)
{
    int NV = nv_of(d), G = NV / d->H;
    memset(dst, 0, (size_t)N * d->H * d->K * sizeof(float));
    for (int n = 0; n < N; n++) {
        for (int j = 0; j < NV; j++) {
            float *o = dst + ((size_t)n * d->H + j / G) * d->K;
            const float *x = src + ((size_t)n * NV + j) * d->K;
            for (int i = 0; i < d->K; i++) {
                o[i] += x[i];
            }
        }
    }
}

int lina_gdn_forward(float *out, lina_gdn_acts *a, const float *x, const lina_gdn_dims *d,
                     const lina_gdn_params *p, int B, int T, float *cache, lina_form form, lina_ws *ws)
{
    int rc = lina_gdn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, NV = nv_of(d), HK = H * d->K, VV = NV * d->V, W = d->conv_size;
    /* cache views: conv tails [B,HK,W], [B,HK,W], [B,VV,W]; state [B,NV,K,V] */
    float *cq = NULL, *ck = NULL, *cv = NULL, *st = NULL;
    if (cache) {
        size_t ct = d->use_short_conv ? (size_t)B * W : 0;
        cq = d->use_short_conv ? cache : NULL;
        ck = d->use_short_conv ? cache + ct * HK : NULL;
        cv = d->use_short_conv ? cache + 2 * ct * HK : NULL;
        st = cache + ct * (2 * (size_t)HK + VV);
    }
    /* projections and short convs */
    lina_linear_forward(a->qp, x, p->q_proj, NULL, N, D, HK);
    lina_linear_forward(a->kp, x, p->k_proj, NULL, N, D, HK);
    lina_linear_forward(a->vp, x, p->v_proj, NULL, N, D, VV);
    conv_or_silu(a->qc, a->qp, p->q_conv, cq, d, B, T, HK);
    conv_or_silu(a->kc, a->kp, p->k_conv, ck, d, B, T, HK);
    conv_or_silu(a->v, a->vp, p->v_conv, cv, d, B, T, VV);
    lina_l2norm_forward(a->qn, a->rq, a->qc, N * H, d->K, GDN_L2_EPS);
    lina_l2norm_forward(a->kn, a->rk, a->kc, N * H, d->K, GDN_L2_EPS);
    if (NV != H) {
        repeat_qk(a->qe, a->qn, d, N);
        repeat_qk(a->ke, a->kn, d, N);
    }
    /* gates: a, g, b logits, beta [N,NV] */
    if (d->gated) {
        lina_linear_forward(a->a, x, p->a_proj, NULL, N, D, NV);
    }
    if (d->use_beta) {
        lina_linear_forward(a->bl, x, p->b_proj, NULL, N, D, NV);
    }
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < NV; h++) {
            size_t i = (size_t)n * NV + h;
            a->g[i] = d->gated ? -expf(p->A_log[h]) * lina_softplusf(a->a[i] + p->dt_bias[h]) : 0.0f;
            a->beta[i] = (d->allow_neg_eigval ? 2.0f : 1.0f) * (d->use_beta ? sigm(a->bl[i]) : 1.0f);
        }
    }
    if (d->use_gate) {
        lina_linear_forward(a->gate, x, p->g_proj, NULL, N, D, VV);
    }
    /* kernel over the value heads */
    lina_mix_dims md = gdn_mix(d, B, T);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->gated ? a->g : NULL, st, 1};
    lina_delta_out o = {a->o, st, NULL}; /* the state is updated in place */
    rc = lina_delta_fwd(&md, &in, &o, form, ws);
    if (rc) {
        return rc;
    }
    /* output norm per value head, o_proj */
    if (d->use_gate) {
        lina_rmsnorm_gated_forward(a->y, a->rstd, a->o, a->gate, p->o_norm, N * NV, d->V, d->norm_eps);
    } else {
        lina_rmsnorm_forward(a->y, a->rstd, a->o, p->o_norm, NULL, N * NV, d->V, d->norm_eps);
    }
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, VV, D);
    return LINA_OK;
}

/* d(pre) += backward of conv_or_silu; dy [B,T,C] */
static void conv_or_silu_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                  const lina_gdn_dims *d, int B, int T, int C)
{
    if (d->use_short_conv) {
        lina_shortconv_backward(dx, dw, NULL, NULL, dy, x, w, NULL, NULL, B, T, C, d->conv_size, LINA_ACT_SILU);
    } else {
        lina_silu_backward(dx, dy, x, (size_t)B * T * C);
    }
}

int lina_gdn_backward(float *dx, lina_gdn_params *gp, const float *dout, const float *x, const lina_gdn_acts *a,
                      const lina_gdn_dims *d, const lina_gdn_params *p, int B, int T, float *scratch,
                      lina_form form, lina_ws *ws)
{
    int rc = lina_gdn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, NV = nv_of(d), HK = H * d->K, VK = NV * d->K, VV = NV * d->V;
    size_t nk = (size_t)N * HK, nvv = (size_t)N * VV, nh = (size_t)N * NV, nvk = (size_t)N * VK;
    float *dy = scratch;          /* [N,VV], later dv */
    float *dO = dy + nvv;         /* [N,VV], later dvp */
    float *dgate = dO + nvv;      /* [N,VV] */
    float *dqn = dgate + nvv;     /* [N,HK], later dqp */
    float *dkn = dqn + nk;        /* [N,HK], later dkp */
    float *dqc = dkn + nk;        /* [N,HK] */
    float *dkc = dqc + nk;        /* [N,HK] */
    float *dbeta = dkc + nk;      /* [N,NV] */
    float *dg = dbeta + nh;       /* [N,NV] */
    float *dqe = dqn, *dke = dkn; /* [N,VK] kernel gradients (own buffers with GVA) */
    if (NV != H) {
        dqe = dg + nh;
        dke = dqe + nvk;
    }
    memset(scratch, 0, lina_gdn_scratch_floats(d, N) * sizeof(float));

    lina_linear_backward(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, VV, D);
    if (d->use_gate) {
        lina_rmsnorm_gated_backward(dO, dgate, gp->o_norm, dy, a->o, a->gate, p->o_norm, a->rstd, N * NV, d->V);
    } else {
        lina_rmsnorm_backward(dO, gp->o_norm, NULL, dy, a->o, p->o_norm, a->rstd, N * NV, d->V);
    }
    /* kernel: dqe, dke, dv (into dy), dbeta, dg */
    float *dv = dy;
    memset(dv, 0, nvv * sizeof(float));
    lina_mix_dims md = gdn_mix(d, B, T);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->gated ? a->g : NULL, NULL, 1};
    lina_delta_grad_in gin = {dO, NULL, NULL};
    lina_delta_grad_out gout = {dqe, dke, dv, dbeta, dg, NULL};
    if ((rc = lina_delta_bwd(&md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    if (NV != H) {
        reduce_qk(dqn, dqe, d, N);
        reduce_qk(dkn, dke, d, N);
    }
    /* L2Norms, then convs: dqp into dqn, dkp into dkn, dvp into dO */
    lina_l2norm_backward(dqc, dqn, a->qn, a->rq, N * H, d->K);
    lina_l2norm_backward(dkc, dkn, a->kn, a->rk, N * H, d->K);
    float *dqp = dqn, *dkp = dkn, *dvp = dO;
    memset(dqp, 0, nk * sizeof(float));
    memset(dkp, 0, nk * sizeof(float));
    memset(dvp, 0, nvv * sizeof(float));
    conv_or_silu_backward(dqp, gp->q_conv, dqc, a->qp, p->q_conv, d, B, T, HK);
    conv_or_silu_backward(dkp, gp->k_conv, dkc, a->kp, p->k_conv, d, B, T, HK);
    conv_or_silu_backward(dvp, gp->v_conv, dv, a->vp, p->v_conv, d, B, T, VV);
    /* gates: g = -exp(A_log) softplus(z), z = a + dt_bias; beta = c sigmoid(bl) */
    for (int h = 0; h < NV && (d->gated || d->use_beta); h++) {
        double sA = 0.0, sdt = 0.0;
        float eA = d->gated ? expf(p->A_log[h]) : 0.0f;
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)n * NV + h;
            if (d->gated) {
                float z = a->a[i] + p->dt_bias[h];
                float dz = dg[i] * -eA * sigm(z);
                sA += (double)dg[i] * a->g[i];
                sdt += dz;
                dg[i] = dz; /* now d(a) */
            }
            float s = d->use_beta ? sigm(a->bl[i]) : 0.0f;
            dbeta[i] = dbeta[i] * (d->allow_neg_eigval ? 2.0f : 1.0f) * s * (1.0f - s); /* now d(bl) */
        }
        if (gp->A_log && d->gated) {
            gp->A_log[h] += (float)sA;
        }
        if (gp->dt_bias && d->gated) {
            gp->dt_bias[h] += (float)sdt;
        }
    }
    if (d->gated) {
        lina_linear_backward(dx, gp->a_proj, NULL, dg, x, p->a_proj, N, D, NV);
    }
    if (d->use_beta) {
        lina_linear_backward(dx, gp->b_proj, NULL, dbeta, x, p->b_proj, N, D, NV);
    }
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, HK);
    lina_linear_backward(dx, gp->k_proj, NULL, dkp, x, p->k_proj, N, D, HK);
    lina_linear_backward(dx, gp->v_proj, NULL, dvp, x, p->v_proj, N, D, VV);
    if (d->use_gate) {
        lina_linear_backward(dx, gp->g_proj, NULL, dgate, x, p->g_proj, N, D, VV);
    }
    return LINA_OK;
}
