/* dp_layer.c -- FLA's GatedDeltaProduct layer (docs/mixers.md section 4.3): q and
 * n_h keys / values / betas per token through short convolutions (SiLU),
 * L2-normalised q and keys, the optional forget gate
 * g = -exp(A_log) softplus(a + dt_bias), the delta product on the delta-rule
 * engine (lina_delta_fwd with n = num_householder sub-steps), the per-head
 * output norm (gated or plain) and o_proj. Forward (with an optional decode
 * state) and backward. Shapes in dp_layer.h. */
#include "dp_layer.h"

#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DP_L2_EPS 1e-6f

int lina_dp_check_dims(const lina_dp_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->HV <= 0 || d->HV % d->H != 0 || d->K <= 0 || d->V <= 0 || d->n < 1 ||
        (d->use_short_conv && d->conv_size <= 0)) {
        return lina_set_error(LINA_EINVAL, "gated_deltaproduct layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "gated_deltaproduct layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

size_t lina_dp_acts_floats(const lina_dp_dims *d, int N)
{
    size_t m = (size_t)d->n, H = (size_t)d->H, HV = (size_t)d->HV, HK = H * d->K, VK = HV * d->K,
           VV = HV * d->V;
    size_t s = 3 * (HK + m * HK) + m * VV;  /* qp, kp, qc, kc, qn, kn; vp */
    s += H + m * H;                          /* rq, rk */
    s += HV != H ? VK + m * VK : 0;          /* qe, ke */
    s += m * VV;                             /* v */
    s += 2 * HV + 2 * m * HV;                /* a, g, bl, beta */
    s += 3 * VV + HV;                        /* gate, o, y, rstd */
    return (size_t)N * s;
}

void lina_dp_acts_carve(lina_dp_acts *a, float *buf, const lina_dp_dims *d, int N)
{
    size_t n = (size_t)N, m = (size_t)d->n, H = (size_t)d->H, HV = (size_t)d->HV, HK = H * d->K,
           VK = HV * d->K, VV = HV * d->V;
    float *p = buf;
    a->qp = p;   p += n * HK;
    a->kp = p;   p += n * m * HK;
    a->vp = p;   p += n * m * VV;
    a->qc = p;   p += n * HK;
    a->kc = p;   p += n * m * HK;
    a->qn = p;   p += n * HK;
    a->kn = p;   p += n * m * HK;
    a->rq = p;   p += n * H;
    a->rk = p;   p += n * m * H;
    a->qe = a->qn;
    a->ke = a->kn;
    if (HV != H) {
        a->qe = p; p += n * VK;
        a->ke = p; p += n * m * VK;
    }
    a->v = p;    p += n * m * VV;
    a->a = p;    p += n * HV;
    a->g = p;    p += n * HV;
    a->bl = p;   p += n * m * HV;
    a->beta = p; p += n * m * HV;
    a->gate = p; p += n * VV;
    a->o = p;    p += n * VV;
    a->rstd = p; p += n * HV;
    a->y = p;
}

size_t lina_dp_scratch_floats(const lina_dp_dims *d, int N)
{
    size_t m = (size_t)d->n, H = (size_t)d->H, HV = (size_t)d->HV, HK = H * d->K, VK = HV * d->K,
           VV = HV * d->V;
    size_t s = 3 * VV + 2 * m * VV;          /* dy, dO, dgate, dv, dvp */
    s += 3 * (HK + m * HK);                  /* dqn, dkn, dqc, dkc, dqp, dkp */
    s += m * HV + HV;                        /* dbeta, dg */
    s += HV != H ? VK + m * VK : 0;          /* dqe, dke */
    return (size_t)N * s;
}

size_t lina_dp_state_floats(const lina_dp_dims *d, int B)
{
    size_t m = (size_t)d->n, HK = (size_t)d->H * d->K, VV = (size_t)d->HV * d->V;
    size_t conv = d->use_short_conv ? (HK + m * HK + m * VV) * (size_t)d->conv_size : 0;
    return (size_t)B * (conv + (size_t)d->HV * d->K * (size_t)d->V);
}

static lina_mix_dims dp_mix(const lina_dp_dims *d, int B, int T)
{
    lina_mix_dims md = {0};
    md.B = B;
    md.T = T;
    md.H = d->HV;
    md.K = d->K;
    md.V = d->V;
    md.chunk = 64;
    md.scale = 0.0f; /* K^-1/2 */
    return md;
}

static float sigm(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* y [B,T,C] = SiLU(conv(x)) (cache [B,C,W] or NULL) or SiLU(x) */
static void conv_or_silu(float *y, const float *x, const float *w, float *cache, const lina_dp_dims *d, int B, int T,
                         int C)
{
    if (d->use_short_conv) {
        lina_shortconv_forward(y, x, w, NULL, cache, cache, B, T, C, d->conv_size, LINA_ACT_SILU);
    } else {
        lina_silu_forward(y, x, (size_t)B * T * C);
    }
}

static void conv_or_silu_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                  const lina_dp_dims *d, int B, int T, int C)
{
    if (d->use_short_conv) {
        lina_shortconv_backward(dx, dw, NULL, NULL, dy, x, w, NULL, NULL, B, T, C, d->conv_size, LINA_ACT_SILU);
    } else {
        lina_silu_backward(dx, dy, x, (size_t)B * T * C);
    }
}

/* dst [R, HV*K] = src [R, H*K], q/k head h / (HV/H) for value head h */
static void repeat_heads(float *dst, const float *src, size_t R, int H, int HV, int K)
{
    int G = HV / H;
    for (size_t r = 0; r < R; r++) {
        for (int h = 0; h < HV; h++) {
            memcpy(dst + (r * HV + h) * K, src + (r * H + h / G) * K, (size_t)K * sizeof(float));
        }
    }
}

/* dst [R, H*K] += group sums of src [R, HV*K] */
static void reduce_heads(float *dst, const float *src, size_t R, int H, int HV, int K)
{
    int G = HV / H;
    for (size_t r = 0; r < R; r++) {
        for (int h = 0; h < HV; h++) {
            float *o = dst + (r * H + h / G) * K;
            const float *x = src + (r * HV + h) * K;
            for (int i = 0; i < K; i++) {
                o[i] += x[i];
            }
        }
    }
}

int lina_dp_forward(float *out, lina_dp_acts *a, const float *x, const lina_dp_dims *d, const lina_dp_params *p,
                    int B, int T, float *state, lina_form form, lina_ws *ws)
{
    int rc = lina_dp_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, HV = d->HV, m = d->n, HK = H * d->K, VV = HV * d->V, W = d->conv_size;
    /* state views: conv tails [B,HK,W], [B,m*HK,W], [B,m*VV,W]; recurrent state [B,HV,K,V] */
    float *cq = NULL, *ck = NULL, *cv = NULL, *st = NULL;
    if (state) {
        size_t ct = d->use_short_conv ? (size_t)B * W : 0;
        cq = d->use_short_conv ? state : NULL;
        ck = d->use_short_conv ? state + ct * HK : NULL;
        cv = d->use_short_conv ? state + ct * (HK + (size_t)m * HK) : NULL;
        st = state + ct * (HK + (size_t)m * HK + (size_t)m * VV);
    }
    /* projections, short convs, L2Norms */
    lina_linear_forward(a->qp, x, p->q_proj, NULL, N, D, HK);
    lina_linear_forward(a->kp, x, p->k_proj, NULL, N, D, m * HK);
    lina_linear_forward(a->vp, x, p->v_proj, NULL, N, D, m * VV);
    conv_or_silu(a->qc, a->qp, p->q_conv, cq, d, B, T, HK);
    conv_or_silu(a->kc, a->kp, p->k_conv, ck, d, B, T, m * HK);
    conv_or_silu(a->v, a->vp, p->v_conv, cv, d, B, T, m * VV);
    lina_l2norm_forward(a->qn, a->rq, a->qc, N * H, d->K, DP_L2_EPS);
    lina_l2norm_forward(a->kn, a->rk, a->kc, N * m * H, d->K, DP_L2_EPS);
    if (HV != H) {
        repeat_heads(a->qe, a->qn, (size_t)N, H, HV, d->K);
        repeat_heads(a->ke, a->kn, (size_t)N * m, H, HV, d->K);
    }
    /* beta [N*m, HV], forget gate [N, HV] */
    lina_linear_forward(a->bl, x, p->b_proj, NULL, N, D, m * HV);
    float bs = d->allow_neg_eigval ? 2.0f : 1.0f;
    for (size_t i = 0; i < (size_t)N * m * HV; i++) {
        a->beta[i] = bs * sigm(a->bl[i]);
    }
    if (d->use_forget_gate) {
        lina_linear_forward(a->a, x, p->a_proj, NULL, N, D, HV);
        for (int r = 0; r < N; r++) {
            for (int h = 0; h < HV; h++) {
                size_t i = (size_t)r * HV + h;
                a->g[i] = -expf(p->A_log[h]) * lina_softplusf(a->a[i] + p->dt_bias[h]);
            }
        }
    }
    if (d->use_gate) {
        lina_linear_forward(a->gate, x, p->g_proj, NULL, N, D, VV);
    }
    /* the delta product over the value heads */
    lina_mix_dims md = dp_mix(d, B, T);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->use_forget_gate ? a->g : NULL, st, m};
    lina_delta_out o = {a->o, st, NULL}; /* the state is updated in place */
    rc = lina_delta_fwd(&md, &in, &o, form, ws);
    if (rc) {
        return rc;
    }
    /* output norm per value head, o_proj */
    if (d->use_gate) {
        lina_rmsnorm_gated_forward(a->y, a->rstd, a->o, a->gate, p->o_norm, N * HV, d->V, d->norm_eps);
    } else {
        lina_rmsnorm_forward(a->y, a->rstd, a->o, p->o_norm, NULL, N * HV, d->V, d->norm_eps);
    }
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, VV, D);
    return LINA_OK;
}

int lina_dp_backward(float *dx, lina_dp_params *gp, const float *dout, const float *x, const lina_dp_acts *a,
                     const lina_dp_dims *d, const lina_dp_params *p, int B, int T, float *scratch, lina_form form,
                     lina_ws *ws)
{
    int rc = lina_dp_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, H = d->H, HV = d->HV, m = d->n, HK = H * d->K, VK = HV * d->K, VV = HV * d->V;
    size_t n = (size_t)N, nm = n * m;
    memset(scratch, 0, lina_dp_scratch_floats(d, N) * sizeof(float));
    float *s = scratch;
    float *dy = s;    s += n * VV;
    float *dO = s;    s += n * VV;
    float *dgate = s; s += n * VV;
    float *dv = s;    s += nm * VV;
    float *dvp = s;   s += nm * VV;
    float *dqn = s;   s += n * HK;
    float *dkn = s;   s += nm * HK;
    float *dqc = s;   s += n * HK;
    float *dkc = s;   s += nm * HK;
    float *dqp = s;   s += n * HK;
    float *dkp = s;   s += nm * HK;
    float *dbeta = s; s += nm * HV;
    float *dg = s;    s += n * HV;
    float *dqe = dqn, *dke = dkn;
    if (HV != H) {
        dqe = s; s += n * VK;
        dke = s;
    }

    lina_linear_backward(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, VV, D);
    if (d->use_gate) {
        lina_rmsnorm_gated_backward(dO, dgate, gp->o_norm, dy, a->o, a->gate, p->o_norm, a->rstd, N * HV, d->V);
    } else {
        lina_rmsnorm_backward(dO, gp->o_norm, NULL, dy, a->o, p->o_norm, a->rstd, N * HV, d->V);
    }
    lina_mix_dims md = dp_mix(d, B, T);
    lina_delta_in in = {a->qe, a->ke, a->v, a->beta, d->use_forget_gate ? a->g : NULL, NULL, m};
    lina_delta_grad_in gin = {dO, NULL, NULL};
    lina_delta_grad_out gout = {dqe, dke, dv, dbeta, d->use_forget_gate ? dg : NULL, NULL};
    if ((rc = lina_delta_bwd(&md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    if (HV != H) {
        reduce_heads(dqn, dqe, n, H, HV, d->K);
        reduce_heads(dkn, dke, nm, H, HV, d->K);
    }
    lina_l2norm_backward(dqc, dqn, a->qn, a->rq, N * H, d->K);
    lina_l2norm_backward(dkc, dkn, a->kn, a->rk, N * m * H, d->K);
    conv_or_silu_backward(dqp, gp->q_conv, dqc, a->qp, p->q_conv, d, B, T, HK);
    conv_or_silu_backward(dkp, gp->k_conv, dkc, a->kp, p->k_conv, d, B, T, m * HK);
    conv_or_silu_backward(dvp, gp->v_conv, dv, a->vp, p->v_conv, d, B, T, m * VV);
    /* beta = c sigmoid(bl): d bl = d beta c s (1 - s) (in place) */
    float bs = d->allow_neg_eigval ? 2.0f : 1.0f;
    for (size_t i = 0; i < nm * HV; i++) {
        float sg = sigm(a->bl[i]);
        dbeta[i] *= bs * sg * (1.0f - sg);
    }
    /* g = -exp(A_log) softplus(z), z = a + dt_bias: da = dg (-exp(A_log)) sigmoid(z) (in place) */
    if (d->use_forget_gate) {
        for (int h = 0; h < HV; h++) {
            double sA = 0.0, sdt = 0.0;
            float eA = expf(p->A_log[h]);
            for (int r = 0; r < N; r++) {
                size_t i = (size_t)r * HV + h;
                float dz = dg[i] * -eA * sigm(a->a[i] + p->dt_bias[h]);
                sA += (double)dg[i] * a->g[i];
                sdt += dz;
                dg[i] = dz;
            }
            if (gp->A_log) {
                gp->A_log[h] += (float)sA;
            }
            if (gp->dt_bias) {
                gp->dt_bias[h] += (float)sdt;
            }
        }
        lina_linear_backward(dx, gp->a_proj, NULL, dg, x, p->a_proj, N, D, HV);
    }
    lina_linear_backward(dx, gp->b_proj, NULL, dbeta, x, p->b_proj, N, D, m * HV);
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, HK);
    lina_linear_backward(dx, gp->k_proj, NULL, dkp, x, p->k_proj, N, D, m * HK);
    lina_linear_backward(dx, gp->v_proj, NULL, dvp, x, p->v_proj, N, D, m * VV);
    if (d->use_gate) {
        lina_linear_backward(dx, gp->g_proj, NULL, dgate, x, p->g_proj, N, D, VV);
    }
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "gated_deltaproduct" (kind.h; docs/mixers.md section 4.3,
 * docs/checkpoints.md section 2.2). Tensors under model.layers.{i}.attn.
 * (n = num_householder, K = head_dim, V = head_dim*expand_v, HV = num_v_heads
 * or num_heads):
 *   q_proj.weight [H*K, D], k_proj.weight [n*H*K, D], v_proj.weight [n*HV*V, D],
 *   b_proj.weight [n*HV, D], a_proj.weight [HV, D], A_log [HV], dt_bias [HV]
 *   (the last three only with use_forget_gate), q_conv1d.weight [H*K, 1, W],
 *   k_conv1d.weight [n*H*K, 1, W], v_conv1d.weight [n*HV*V, 1, W] (short convs),
 *   g_proj.weight [HV*V, D] (output gate), o_norm.weight [V], o_proj.weight [D, HV*V].
 * The output gate follows the config's use_output_gate (FLA's key for this
 * class). */

enum { DP_Q = 0, DP_K, DP_V, DP_B, DP_A, DP_ALOG, DP_DT, DP_QC, DP_KC, DP_VC, DP_G, DP_NORM, DP_O };

_Static_assert(sizeof(lina_dp_dims) <= LINA_MIXER_DIMS_BYTES, "lina_dp_dims too large");

static int dp_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_dp_dims *d = dims;
    memset(d, 0, sizeof(*d));
    int H = c->num_heads, HV = c->num_v_heads > 0 ? c->num_v_heads : H;
    double vd = c->head_dim * c->expand_v;
    if (H < 1 || c->head_dim < 1 || vd < 1 || vd != floor(vd) || HV % H != 0) {
        return lina_set_error(LINA_EINVAL,
                              "gated_deltaproduct: need head_dim >= 1, head_dim * expand_v (%g) a positive integer "
                              "and num_v_heads (%d) a multiple of num_heads (%d)",
                              vd, HV, H);
    }
    if (c->num_householder < 1 || c->num_householder > 16) {
        return lina_set_error(LINA_EINVAL, "gated_deltaproduct: num_householder must be in [1, 16] (got %d)",
                              c->num_householder);
    }
    d->D = c->hidden_size;
    d->H = H;
    d->HV = HV;
    d->K = c->head_dim;
    d->V = (int)vd;
    d->n = c->num_householder;
    d->use_forget_gate = c->use_forget_gate;
    d->use_gate = c->use_output_gate;
    d->use_short_conv = c->use_short_conv;
    d->conv_size = c->conv_size;
    d->allow_neg_eigval = c->allow_neg_eigval;
    d->norm_eps = (float)c->norm_eps;
    int rc = lina_dp_check_dims(d);
    if (rc) {
        return rc;
    }
    int64_t D = d->D, n = d->n, HK = (int64_t)H * d->K, VV = (int64_t)HV * d->V, W = d->conv_size;
    if ((rc = lina_mixer_add(b, DP_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, DP_K, "k_proj.weight", 2, n * HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, DP_V, "v_proj.weight", 2, n * VV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, DP_B, "b_proj.weight", 2, n * HV, D, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->use_forget_gate &&
        ((rc = lina_mixer_add(b, DP_A, "a_proj.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, DP_ALOG, "A_log", 1, HV, 0, 0, 0, LINA_INIT_A_LOG)) ||
         (rc = lina_mixer_add(b, DP_DT, "dt_bias", 1, HV, 0, 0, 0, LINA_INIT_DT_BIAS)))) {
        return rc;
    }
    if (d->use_short_conv &&
        ((rc = lina_mixer_add(b, DP_QC, "q_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, DP_KC, "k_conv1d.weight", 3, n * HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, DP_VC, "v_conv1d.weight", 3, n * VV, 1, W, 1, LINA_INIT_NORMAL)))) {
        return rc;
    }
    if (d->use_gate && (rc = lina_mixer_add(b, DP_G, "g_proj.weight", 2, VV, D, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if ((rc = lina_mixer_add(b, DP_NORM, "o_norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, DP_O, "o_proj.weight", 2, D, VV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

static size_t dp_acts(const void *dims, int N)
{
    return lina_dp_acts_floats(dims, N);
}

static size_t dp_scratch(const void *dims, int N)
{
    return lina_dp_scratch_floats(dims, N);
}

static size_t dp_state(const void *dims, int B, int max_len)
{
    (void)max_len;
    return lina_dp_state_floats(dims, B);
}

static void dp_views(float *const *v, lina_dp_params *p)
{
    p->q_proj = v[DP_Q];
    p->k_proj = v[DP_K];
    p->v_proj = v[DP_V];
    p->b_proj = v[DP_B];
    p->a_proj = v[DP_A];
    p->A_log = v[DP_ALOG];
    p->dt_bias = v[DP_DT];
    p->q_conv = v[DP_QC];
    p->k_conv = v[DP_KC];
    p->v_conv = v[DP_VC];
    p->g_proj = v[DP_G];
    p->o_norm = v[DP_NORM];
    p->o_proj = v[DP_O];
}

static int dp_forward(const lina_mixer_call *c)
{
    const lina_dp_dims *d = c->dims;
    lina_dp_params p;
    lina_dp_acts a;
    dp_views(c->P, &p);
    lina_dp_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_dp_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->form, c->ws);
}

static int dp_backward(const lina_mixer_call *c)
{
    const lina_dp_dims *d = c->dims;
    lina_dp_params p, gp;
    lina_dp_acts a;
    dp_views(c->P, &p);
    dp_views(c->G, &gp);
    lina_dp_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_dp_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->form, c->ws);
}

const lina_mixer_vt lina_gated_deltaproduct_kind = {
    .name = "gated_deltaproduct",
    .build = dp_build,
    .acts_floats = dp_acts,
    .scratch_floats = dp_scratch,
    .state_floats = dp_state,
    .forward = dp_forward,
    .backward = dp_backward,
};
