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

/* ============================================================ plug-in kind
 * model_type "gated_deltanet" and "delta_net" (kind.h). Tensors under
 * model.layers.{i}.attn. (HK = H*K, HV = value heads, VV = HV*V):
 *   q_proj.weight, k_proj.weight [HK, D], v_proj.weight [VV, D],
 *   a_proj.weight [HV, D] (gated), b_proj.weight [HV, D] (use_beta),
 *   A_log, dt_bias [HV] (gated), {q,k,v}_conv1d.weight [C, 1, W]
 *   (use_short_conv), g_proj.weight [VV, D] (use_gate), o_norm.weight [V],
 *   o_proj.weight [D, VV]. */
enum { GDN_Q, GDN_K, GDN_V, GDN_A, GDN_B, GDN_ALOG, GDN_DT, GDN_QC, GDN_KC, GDN_VC, GDN_G, GDN_NORM, GDN_O };

_Static_assert(sizeof(lina_gdn_dims) <= LINA_MIXER_DIMS_BYTES, "lina_gdn_dims too large");

static int gdn_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_gdn_dims *d = dims;
    memset(d, 0, sizeof(*d));
    int gated = c->model_type == LINA_MODEL_GATED_DELTANET;
    int D = c->hidden_size, H = c->num_heads, W = c->conv_size;
    int K = gated ? c->head_dim : (int)(D * c->expand_k) / H;
    int V = gated ? (int)(c->head_dim * c->expand_v) : (int)(D * c->expand_v) / H;
    int NV = gated && c->num_v_heads > 0 ? c->num_v_heads : H; /* value heads (GVA) */
    if (!gated && (strcmp(c->qk_activation, "silu") != 0 || strcmp(c->qk_norm, "l2") != 0)) {
        return lina_set_error(LINA_EINVAL, "delta_net: qk_activation \"%s\" / qk_norm \"%s\" is not implemented yet "
                              "(silu / l2 are)", c->qk_activation, c->qk_norm);
    }
    d->D = D;
    d->H = H;
    d->K = K;
    d->V = V;
    d->use_gate = c->use_gate ? 1 : 0;
    d->use_short_conv = c->use_short_conv ? 1 : 0;
    d->conv_size = W;
    d->allow_neg_eigval = c->allow_neg_eigval ? 1 : 0;
    d->norm_eps = (float)c->norm_eps;
    d->gated = gated;
    d->use_beta = gated || c->use_beta ? 1 : 0;
    d->num_v_heads = NV;
    int64_t HK = (int64_t)H * K, HV = (int64_t)NV * V;
    int rc;
    if ((rc = lina_mixer_add(b, GDN_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GDN_K, "k_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, GDN_V, "v_proj.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (gated && (rc = lina_mixer_add(b, GDN_A, "a_proj.weight", 2, NV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (d->use_beta && (rc = lina_mixer_add(b, GDN_B, "b_proj.weight", 2, NV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (gated && (rc = lina_mixer_add(b, GDN_ALOG, "A_log", 1, NV, 0, 0, 0, LINA_INIT_A_LOG))) ||
        (gated && (rc = lina_mixer_add(b, GDN_DT, "dt_bias", 1, NV, 0, 0, 0, LINA_INIT_DT_BIAS)))) {
        return rc;
    }
    if (d->use_short_conv &&
        ((rc = lina_mixer_add(b, GDN_QC, "q_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GDN_KC, "k_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, GDN_VC, "v_conv1d.weight", 3, HV, 1, W, 1, LINA_INIT_NORMAL)))) {
        return rc;
    }
    if ((d->use_gate && (rc = lina_mixer_add(b, GDN_G, "g_proj.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL))) ||
        (rc = lina_mixer_add(b, GDN_NORM, "o_norm.weight", 1, V, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, GDN_O, "o_proj.weight", 2, D, HV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

static size_t gdn_acts(const void *dims, int N)
{
    return lina_gdn_acts_floats(dims, N);
}

static size_t gdn_scratch(const void *dims, int N)
{
    return lina_gdn_scratch_floats(dims, N);
}

static size_t gdn_state(const void *dims, int B, int max_len)
{
    (void)max_len;
    return lina_gdn_cache_floats(dims, B);
}

static void gdn_views(float *const *v, lina_gdn_params *p)
{
    p->q_proj = v[GDN_Q];
    p->k_proj = v[GDN_K];
    p->v_proj = v[GDN_V];
    p->a_proj = v[GDN_A];
    p->b_proj = v[GDN_B];
    p->A_log = v[GDN_ALOG];
    p->dt_bias = v[GDN_DT];
    p->q_conv = v[GDN_QC];
    p->k_conv = v[GDN_KC];
    p->v_conv = v[GDN_VC];
    p->g_proj = v[GDN_G];
    p->o_norm = v[GDN_NORM];
    p->o_proj = v[GDN_O];
}

static int gdn_kind_forward(const lina_mixer_call *c)
{
    const lina_gdn_dims *d = c->dims;
    lina_gdn_params p;
    lina_gdn_acts a;
    gdn_views(c->P, &p);
    lina_gdn_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_gdn_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->form, c->ws);
}

static int gdn_kind_backward(const lina_mixer_call *c)
{
    const lina_gdn_dims *d = c->dims;
    lina_gdn_params p, gp;
    lina_gdn_acts a;
    gdn_views(c->P, &p);
    gdn_views(c->G, &gp);
    lina_gdn_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_gdn_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->form, c->ws);
}

const lina_mixer_vt lina_gdn_kind = {
    .name = "gated_deltanet",
    .build = gdn_build,
    .acts_floats = gdn_acts,
    .scratch_floats = gdn_scratch,
    .state_floats = gdn_state,
    .forward = gdn_kind_forward,
    .backward = gdn_kind_backward,
};
