/* hgrn2_layer.c -- FLA's HGRN2Attention (docs/mixers.md section 3.6) on the GLA
 * kernel: SiLU queries, forget gate with an optional lower bound, input gate
 * tied to it (k = 1 - exp(g)), RMSNorm over the full width, o_proj. Shapes in
 * nn.h; N = B*T rows, HK = H*K, HV = H*V. */
#include "nn.h"

#include <math.h>
#include <string.h>

int lina_hgrn2_check_dims(const lina_hgrn2_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0 || !(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "hgrn2 layer: bad dims");
    }
    return LINA_OK;
}

size_t lina_hgrn2_acts_floats(const lina_hgrn2_dims *d, int N)
{
    size_t HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    return (size_t)N * (5 * HK + 3 * HV + 1);
}

void lina_hgrn2_acts_carve(lina_hgrn2_acts *a, float *buf, const lina_hgrn2_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    float *p = buf;
    a->qp = p;   p += n * HK;
    a->q = p;    p += n * HK;
    a->f = p;    p += n * HK;
    a->g = p;    p += n * HK;
    a->k = p;    p += n * HK;
    a->v = p;    p += n * HV;
    a->o = p;    p += n * HV;
    a->rstd = p; p += n;
    a->y = p;
}

size_t lina_hgrn2_scratch_floats(const lina_hgrn2_dims *d, int N)
{
    size_t HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    return (size_t)N * (2 * HV + 4 * HK);
}

static float sigm(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static lina_mix_dims hgrn2_mix(const lina_hgrn2_dims *d, int B, int T)
{
    lina_mix_dims md = {0};
    md.B = B;
    md.T = T;
    md.H = d->H;
    md.K = d->K;
    md.V = d->V;
    md.chunk = 64;
    md.scale = 0.0f;
    return md;
}

int lina_hgrn2_forward(float *out, lina_hgrn2_acts *a, const float *x, const lina_hgrn2_dims *d,
                       const lina_hgrn2_params *p, const float *lambda, int B, int T, const float *h0, float *ht,
                       lina_form form, lina_ws *ws)
{
    int rc = lina_hgrn2_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, HK = d->H * d->K, HV = d->H * d->V;
    lina_linear_forward(a->qp, x, p->q_proj, NULL, N, D, HK);
    lina_silu_forward(a->q, a->qp, (size_t)N * HK);
    lina_linear_forward(a->f, x, p->f_proj, NULL, N, D, HK);
    lina_linear_forward(a->v, x, p->i_proj, NULL, N, D, HV);
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < HK; i++) {
            size_t j = (size_t)n * HK + i;
            float g = lambda ? logf(lambda[i] + (1.0f - lambda[i]) * sigm(a->f[j])) : lina_logsigmoidf(a->f[j]);
            a->g[j] = g;
            a->k[j] = -expm1f(g);
        }
    }
    lina_mix_dims md = hgrn2_mix(d, B, T);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, h0};
    lina_dd_out o = {a->o, ht, NULL};
    if ((rc = lina_dd_fwd(&md, &in, &o, form, ws))) {
        return rc;
    }
    lina_rmsnorm_forward(a->y, a->rstd, a->o, p->g_norm, NULL, N, HV, d->norm_eps);
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, HV, D);
    return LINA_OK;
}

int lina_hgrn2_backward(float *dx, lina_hgrn2_params *gp, float *dlambda, const float *dout, const float *x,
                        const lina_hgrn2_acts *a, const lina_hgrn2_dims *d, const lina_hgrn2_params *p,
                        const float *lambda, int B, int T, float *scratch, lina_form form, lina_ws *ws)
{
    int rc = lina_hgrn2_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, HK = d->H * d->K, HV = d->H * d->V;
    size_t nk = (size_t)N * HK, nv = (size_t)N * HV;
    float *dy = scratch;        /* [N,HV], later dv */
    float *dO = dy + nv;        /* [N,HV] */
    float *dq = dO + nv;        /* [N,HK] */
    float *dk = dq + nk;        /* [N,HK] */
    float *dg = dk + nk;        /* [N,HK], later df */
    float *dqp = dg + nk;       /* [N,HK] */
    memset(scratch, 0, lina_hgrn2_scratch_floats(d, N) * sizeof(float));

    lina_linear_backward(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, HV, D);
    lina_rmsnorm_backward(dO, gp->g_norm, NULL, dy, a->o, p->g_norm, a->rstd, N, HV);
    float *dv = dy;
    memset(dv, 0, nv * sizeof(float));
    lina_mix_dims md = hgrn2_mix(d, B, T);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, NULL};
    lina_dd_grad_in gin = {dO, NULL, NULL};
    lina_dd_grad_out gout = {dq, dk, dv, dg, NULL};
    if ((rc = lina_dd_bwd(&md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    /* k = 1 - exp(g): total dg; then through the gate to df (in place) and dlambda */
    for (int i = 0; i < HK; i++) {
        double dl = 0.0;
        for (int n = 0; n < N; n++) {
            size_t j = (size_t)n * HK + i;
            float dgt = dg[j] - dk[j] * expf(a->g[j]);
            float s = sigm(a->f[j]);
            if (lambda) {
                float den = lambda[i] + (1.0f - lambda[i]) * s;
                dg[j] = dgt * (1.0f - lambda[i]) * s * (1.0f - s) / den;
                dl += (double)dgt * (1.0f - s) / den;
            } else {
                dg[j] = dgt * (1.0f - s);
            }
        }
        if (lambda && dlambda) {
            dlambda[i] += (float)dl;
        }
    }
    lina_silu_backward(dqp, dq, a->qp, nk);
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, HK);
    lina_linear_backward(dx, gp->f_proj, NULL, dg, x, p->f_proj, N, D, HK);
    lina_linear_backward(dx, gp->i_proj, NULL, dv, x, p->i_proj, N, D, HV);
    return LINA_OK;
}
