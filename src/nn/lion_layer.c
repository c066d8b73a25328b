/* lion_layer.c -- the LION-S attention layer of docs/mixers.md section 10:
 * projections, the positive normalised feature map on q and k, the selective
 * per-token decay lambda = 1 - sigmoid(a), the bidirectional normalised mixing
 * (lina_lion_fwd / lina_lion_bwd), an optional per-head RMSNorm and o_proj.
 * Forward and exact backward. Shapes and names are in lion_layer.h;
 * N = B*T, HK = H*K, HV = H*V. */
#include "lion_layer.h"
#include "nn.h"

#include <math.h>
#include <string.h>

#define LION_FEATURE_SHIFT 0.5f

int lina_lion_layer_check_dims(const lina_lion_layer_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "lion layer: bad dims");
    }
    if (d->o_norm && !(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "lion layer: norm_eps must be > 0");
    }
    return LINA_OK;
}

size_t lina_lion_layer_acts_floats(const lina_lion_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    return n * (4 * HK + 5 * H + HV + HV + (d->o_norm ? HV : 0));
}

void lina_lion_layer_acts_carve(lina_lion_layer_acts *a, float *buf, const lina_lion_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    float *p = buf;
    a->qp = p;   p += n * HK;
    a->kp = p;   p += n * HK;
    a->q = p;    p += n * HK;
    a->k = p;    p += n * HK;
    a->rq = p;   p += n * H;
    a->rk = p;   p += n * H;
    a->a = p;    p += n * H;
    a->g = p;    p += n * H;
    a->rstd = p; p += n * H;
    a->v = p;    p += n * HV;
    a->o = p;    p += n * HV;
    a->y = d->o_norm ? p : a->o;
}

size_t lina_lion_layer_scratch_floats(const lina_lion_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    /* dy, dO, dv [HV]; dq, dk, dqp, tmp [HK]; dg [H] */
    return n * (3 * HV + 4 * HK + H);
}

/* phi per head: f = (SiLU(z) + 1/2) / ||SiLU(z) + 1/2||; rows N*H of width K */
static void lion_feature_forward(float *f, float *rn, const float *z, int rows, int K)
{
    size_t n = (size_t)rows * K;
    lina_silu_forward(f, z, n);
    for (size_t j = 0; j < n; j++) {
        f[j] += LION_FEATURE_SHIFT;
    }
    lina_l2norm_forward(f, rn, f, rows, K, 0.0f); /* SiLU + 1/2 > 0.2: no eps needed */
}

/* dz += d phi^T df; tmp [rows*K] scratch */
static void lion_feature_backward(float *dz, float *tmp, const float *df, const float *f, const float *rn,
                                  const float *z, int rows, int K)
{
    size_t n = (size_t)rows * K;
    memset(tmp, 0, n * sizeof(float));
    lina_l2norm_backward(tmp, df, f, rn, rows, K);
    lina_silu_backward(dz, tmp, z, n);
}

int lina_lion_layer_forward(float *out, lina_lion_layer_acts *a, const float *x, const lina_lion_layer_dims *d,
                            const lina_lion_layer_params *p, int B, int T, lina_form form, lina_ws *ws)
{
    int rc = lina_lion_layer_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!out || !a || !x || !p || !p->q_proj || !p->k_proj || !p->v_proj || !p->a_proj || !p->o_proj || B < 1 ||
        T < 1 || (d->o_norm && !p->o_norm)) {
        return lina_set_error(LINA_EINVAL, "lion layer: bad arguments");
    }
    int N = B * T, D = d->D, H = d->H, HK = d->H * d->K, HV = d->H * d->V;
    lina_linear_forward(a->qp, x, p->q_proj, d->qkv_bias ? p->q_bias : NULL, N, D, HK);
    lina_linear_forward(a->kp, x, p->k_proj, d->qkv_bias ? p->k_bias : NULL, N, D, HK);
    lina_linear_forward(a->v, x, p->v_proj, d->qkv_bias ? p->v_bias : NULL, N, D, HV);
    lion_feature_forward(a->q, a->rq, a->qp, N * H, d->K);
    lion_feature_forward(a->k, a->rk, a->kp, N * H, d->K);
    lina_linear_forward(a->a, x, p->a_proj, p->a_bias, N, D, H);
    for (size_t j = 0; j < (size_t)N * H; j++) {
        a->g[j] = lina_logsigmoidf(-a->a[j]); /* log(1 - sigmoid(a)) <= 0 */
    }
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, d->chunk > 0 ? d->chunk : 64, 0.0f);
    lina_lion_in in = {a->q, a->k, a->v, a->g, 1};
    lina_lion_out o = {a->o};
    if ((rc = lina_lion_fwd(&md, &in, &o, form, ws))) {
        return rc;
    }
    if (d->o_norm) {
        lina_rmsnorm_forward(a->y, a->rstd, a->o, p->o_norm, NULL, N * H, d->V, d->norm_eps);
    }
    lina_linear_forward(out, a->y, p->o_proj, d->proj_bias ? p->o_bias : NULL, N, HV, D);
    return LINA_OK;
}

int lina_lion_layer_backward(float *dx, lina_lion_layer_params *gp, const float *dout, const float *x,
                             const lina_lion_layer_acts *a, const lina_lion_layer_dims *d,
                             const lina_lion_layer_params *p, int B, int T, float *scratch, lina_form form,
                             lina_ws *ws)
{
    int rc = lina_lion_layer_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!dx || !gp || !dout || !x || !a || !p || !scratch || B < 1 || T < 1) {
        return lina_set_error(LINA_EINVAL, "lion layer: bad arguments");
    }
    int N = B * T, D = d->D, H = d->H, HK = d->H * d->K, HV = d->H * d->V;
    size_t nk = (size_t)N * HK, nv = (size_t)N * HV, nh = (size_t)N * H;
    float *dy = scratch;   /* [N,HV] */
    float *dO = dy + nv;   /* [N,HV] */
    float *dv = dO + nv;   /* [N,HV] */
    float *dq = dv + nv;   /* [N,HK] */
    float *dk = dq + nk;   /* [N,HK] */
    float *dqp = dk + nk;  /* [N,HK] */
    float *tmp = dqp + nk; /* [N,HK] */
    float *dg = tmp + nk;  /* [N,H] */
    memset(scratch, 0, lina_lion_layer_scratch_floats(d, N) * sizeof(float));

    /* o_proj, o_norm */
    lina_linear_backward(dy, gp->o_proj, d->proj_bias ? gp->o_bias : NULL, dout, a->y, p->o_proj, N, HV, D);
    const float *dmix = dy;
    if (d->o_norm) {
        lina_rmsnorm_backward(dO, gp->o_norm, NULL, dy, a->o, p->o_norm, a->rstd, N * H, d->V);
        dmix = dO;
    }
    /* the bidirectional mixing */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, d->chunk > 0 ? d->chunk : 64, 0.0f);
    lina_lion_in in = {a->q, a->k, a->v, a->g, 1};
    lina_lion_grad_in gin = {dmix};
    lina_lion_grad_out gout = {dq, dk, dv, dg};
    if ((rc = lina_lion_bwd(&md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    /* gate: g = logsigmoid(-a), dg/da = -sigmoid(a) */
    for (size_t j = 0; j < nh; j++) {
        float s = 1.0f / (1.0f + expf(-a->a[j]));
        dg[j] *= -s;
    }
    lina_linear_backward(dx, gp->a_proj, gp->a_bias, dg, x, p->a_proj, N, D, H);
    /* feature maps, then the projections */
    lion_feature_backward(dqp, tmp, dq, a->q, a->rq, a->qp, N * H, d->K);
    lina_linear_backward(dx, gp->q_proj, d->qkv_bias ? gp->q_bias : NULL, dqp, x, p->q_proj, N, D, HK);
    memset(dqp, 0, nk * sizeof(float));
    lion_feature_backward(dqp, tmp, dk, a->k, a->rk, a->kp, N * H, d->K);
    lina_linear_backward(dx, gp->k_proj, d->qkv_bias ? gp->k_bias : NULL, dqp, x, p->k_proj, N, D, HK);
    lina_linear_backward(dx, gp->v_proj, d->qkv_bias ? gp->v_bias : NULL, dv, x, p->v_proj, N, D, HV);
    return LINA_OK;
}
