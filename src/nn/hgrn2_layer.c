/* hgrn2_layer.c -- FLA's HGRN2Attention (docs/mixers.md section 3.6) on the GLA
 * kernel: SiLU queries, forget gate with an optional lower bound, input gate
 * tied to it (k = 1 - exp(g)), RMSNorm over the full width, o_proj. Shapes in
 * nn.h; N = B*T rows, HK = H*K, HV = H*V. */
#include "nn.h"

#include "../kern/checked.h"

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

void lina_lb_gate_forward(float *g, float *k, const float *f, const float *lambda, size_t N, int C)
{
    for (size_t n = 0; n < N; n++) {
        for (int i = 0; i < C; i++) {
            size_t j = n * C + i;
            float gj = lambda ? logf(lambda[i] + (1.0f - lambda[i]) * sigm(f[j])) : lina_logsigmoidf(f[j]);
            g[j] = gj;
            k[j] = -expm1f(gj);
        }
    }
}

void lina_lb_gate_backward(float *df, float *dlambda, const float *dg, const float *dk, const float *f,
                           const float *g, const float *lambda, size_t N, int C)
{
    for (int i = 0; i < C; i++) {
        double dl = 0.0;
        for (size_t n = 0; n < N; n++) {
            size_t j = n * C + i;
            float dgt = dg[j] - dk[j] * expf(g[j]); /* k = 1 - exp(g) */
            float s = sigm(f[j]);
            if (lambda) {
                float den = lambda[i] + (1.0f - lambda[i]) * s;
                df[j] = dgt * (1.0f - lambda[i]) * s * (1.0f - s) / den;
                dl += (double)dgt * (1.0f - s) / den;
            } else {
                df[j] = dgt * (1.0f - s);
            }
        }
        if (lambda && dlambda) {
            dlambda[i] += (float)dl;
        }
    }
}

int lina_hgrn2_forward(float *out, lina_hgrn2_acts *a, const float *x, const lina_hgrn2_dims *d,
                       const lina_hgrn2_params *p, const float *lambda, int B, int T, const float *h0, float *ht,
                       const lina_sp *sp, lina_form form, lina_ws *ws)
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
    lina_lb_gate_forward(a->g, a->k, a->f, lambda, (size_t)N, HK);
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, h0};
    lina_dd_out o = {.o = a->o, .ht = ht, .states = NULL};
    if ((rc = lina_sp_dd_fwd(sp, d, &md, &in, &o, form, ws))) {
        return rc;
    }
    lina_rmsnorm_forward(a->y, a->rstd, a->o, p->g_norm, NULL, N, HV, d->norm_eps);
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, HV, D);
    return LINA_OK;
}

int lina_hgrn2_backward(float *dx, lina_hgrn2_params *gp, float *dlambda, const float *dout, const float *x,
                        const lina_hgrn2_acts *a, const lina_hgrn2_dims *d, const lina_hgrn2_params *p,
                        const float *lambda, int B, int T, float *scratch, const lina_sp *sp, lina_form form,
                        lina_ws *ws)
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
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_dd_in in = {a->q, a->k, a->v, LINA_GATE_VECTOR, a->g, NULL};
    lina_dd_grad_in gin = {dO, NULL, NULL};
    lina_dd_grad_out gout = {dq, dk, dv, dg, NULL};
    if ((rc = lina_sp_dd_bwd(sp, d, &md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    /* k = 1 - exp(g): through the gate to df (in place) and dlambda */
    lina_lb_gate_backward(dg, dlambda, dg, dk, a->f, a->g, lambda, (size_t)N, HK);
    lina_silu_backward(dqp, dq, a->qp, nk);
    lina_linear_backward(dx, gp->q_proj, NULL, dqp, x, p->q_proj, N, D, HK);
    lina_linear_backward(dx, gp->f_proj, NULL, dg, x, p->f_proj, N, D, HK);
    lina_linear_backward(dx, gp->i_proj, NULL, dv, x, p->i_proj, N, D, HV);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "hgrn2" (kind.h). Tensors under model.layers.{i}.attn.:
 * q_proj.weight [H*K, D], f_proj.weight [H*K, D], i_proj.weight [D, D],
 * g_norm.weight [D], o_proj.weight [D, D]; decode state [B,H,K,V].
 * With use_lower_bound the model-level model.lower_bounds [L, D] (zeros, no
 * weight decay) gives layer l > 0 the lower bound
 *   lambda_l = sum_{j=1..l} P_j,  P = softmax over the layers of lower_bounds
 * (layer 0 has none); the kind's shared work buffer holds P, lambda and
 * dlambda [L, D] each. */
enum { HG_Q, HG_F, HG_I, HG_NORM, HG_O };

typedef struct hgrn2_kind_dims {
    lina_hgrn2_dims d;
    int layer, L;
} hgrn2_kind_dims;

typedef struct lb_shared_dims {
    int L, D;
} lb_shared_dims;

_Static_assert(sizeof(hgrn2_kind_dims) <= LINA_MIXER_DIMS_BYTES, "hgrn2 dims too large");

static int hgrn2_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    hgrn2_kind_dims *kd = dims;
    memset(kd, 0, sizeof(*kd));
    int D = c->hidden_size, H = c->num_heads, K = c->expand_ratio;
    if (c->use_short_conv || !c->elementwise_affine) {
        return lina_set_error(LINA_EINVAL, "hgrn2: use_short_conv / elementwise_affine = false are not implemented yet");
    }
    if (H < 1 || K < 1 || D % H != 0 || (c->use_lower_bound && H * K != D)) {
        return lina_set_error(LINA_EINVAL, "hgrn2: num_heads (%d) * expand_ratio (%d) must equal hidden_size (%d)", H,
                              K, D);
    }
    kd->d.D = D;
    kd->d.H = H;
    kd->d.K = K;
    kd->d.V = D / H;
    kd->d.norm_eps = (float)c->norm_eps;
    kd->layer = layer;
    kd->L = c->num_hidden_layers;
    int64_t HK = (int64_t)H * K;
    int rc;
    if ((rc = lina_mixer_add(b, HG_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, HG_F, "f_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, HG_I, "i_proj.weight", 2, D, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, HG_NORM, "g_norm.weight", 1, D, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, HG_O, "o_proj.weight", 2, D, D, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(hgrn2_acts, lina_hgrn2_acts_floats)
LINA_KIND_SIZE(hgrn2_scratch, lina_hgrn2_scratch_floats)

static size_t hgrn2_state(const void *dims, int B, int max_len)
{
    (void)max_len;
    const lina_hgrn2_dims *d = dims;
    return lina_szmul3((size_t)B, (size_t)d->H * d->K, (size_t)d->V);
}

static void hgrn2_views(float *const *v, lina_hgrn2_params *p)
{
    p->q_proj = v[HG_Q];
    p->f_proj = v[HG_F];
    p->i_proj = v[HG_I];
    p->g_norm = v[HG_NORM];
    p->o_proj = v[HG_O];
}

/* layer l's lambda (or dlambda, which = 2) in the shared buffer; NULL for layer 0 or without lower bounds */
static float *hgrn2_lb(const lina_mixer_call *c, int which)
{
    const hgrn2_kind_dims *kd = c->dims;
    return c->shared && kd->layer > 0 ? c->shared + ((size_t)which * kd->L + kd->layer) * kd->d.D : NULL;
}

static int hgrn2_kind_forward(const lina_mixer_call *c)
{
    const hgrn2_kind_dims *kd = c->dims;
    lina_hgrn2_params p;
    lina_hgrn2_acts a;
    hgrn2_views(c->P, &p);
    lina_hgrn2_acts_carve(&a, c->acts, &kd->d, c->B * c->T);
    float *hs = c->state; /* updated in place */
    return lina_hgrn2_forward(c->out, &a, c->x, &kd->d, &p, hgrn2_lb(c, 1), c->B, c->T, hs, hs, c->sp, c->form,
                              c->ws);
}

static int hgrn2_kind_backward(const lina_mixer_call *c)
{
    const hgrn2_kind_dims *kd = c->dims;
    lina_hgrn2_params p, gp;
    lina_hgrn2_acts a;
    hgrn2_views(c->P, &p);
    hgrn2_views(c->G, &gp);
    lina_hgrn2_acts_carve(&a, c->acts, &kd->d, c->B * c->T);
    return lina_hgrn2_backward(c->dx, &gp, hgrn2_lb(c, 2), c->dout, c->x, &a, &kd->d, &p, hgrn2_lb(c, 1), c->B,
                               c->T, c->scratch, c->sp, c->form, c->ws);
}

int lina_lower_bounds_build(lina_mixer_builder *b, const lina_config *c, void *dims, size_t *work)
{
    lb_shared_dims *sd = dims;
    sd->L = c->num_hidden_layers;
    sd->D = c->hidden_size;
    *work = 0;
    if (!c->use_lower_bound) {
        return LINA_OK;
    }
    /* no weight decay (a bias-like table); FLA initialises it to zeros */
    int rc = lina_mixer_add(b, 0, "model.lower_bounds", 2, sd->L, sd->D, 0, 0, LINA_INIT_ZEROS);
    *work = 3 * (size_t)sd->L * sd->D;
    return rc;
}

/* P = softmax over layers of Lambda [L,D]; lambda_l = sum_{j=1..l} P_j; dlambda = 0 */
int lina_lower_bounds_forward(const lina_mixer_call *c)
{
    const lb_shared_dims *sd = c->dims;
    int L = sd->L, D = sd->D;
    const float *Lb = c->P[0];
    float *P = c->shared, *lam = P + (size_t)L * D;
    for (int i = 0; i < D; i++) {
        double mx = -INFINITY, se = 0.0, cum = 0.0;
        for (int l = 0; l < L; l++) {
            mx = Lb[(size_t)l * D + i] > mx ? Lb[(size_t)l * D + i] : mx;
        }
        for (int l = 0; l < L; l++) {
            se += exp(Lb[(size_t)l * D + i] - mx);
        }
        for (int l = 0; l < L; l++) {
            double pl = exp(Lb[(size_t)l * D + i] - mx) / se;
            P[(size_t)l * D + i] = (float)pl;
            cum += l > 0 ? pl : 0.0;
            lam[(size_t)l * D + i] = (float)cum;
        }
    }
    memset(lam + (size_t)L * D, 0, (size_t)L * D * sizeof(float));
    return LINA_OK;
}

/* lambda_l = sum_{j=1..l} P_j: dP_j = sum_{l>=j} dlambda_l (j >= 1), dP_0 = 0;
 * softmax over layers: dLambda_j = P_j (dP_j - sum_i P_i dP_i) */
int lina_lower_bounds_backward(const lina_mixer_call *c)
{
    const lb_shared_dims *sd = c->dims;
    int L = sd->L, D = sd->D;
    float *dLb = c->G[0];
    const float *P = c->shared;
    float *dl = c->shared + 2 * (size_t)L * D;
    for (int i = 0; i < D; i++) {
        double suf = 0.0, dot = 0.0;
        for (int l = L - 1; l >= 0; l--) {
            suf += l > 0 ? dl[(size_t)l * D + i] : 0.0;
            double dP = l > 0 ? suf : 0.0;
            dl[(size_t)l * D + i] = (float)dP; /* now dP */
            dot += (double)P[(size_t)l * D + i] * dP;
        }
        for (int l = 0; l < L; l++) {
            size_t j = (size_t)l * D + i;
            dLb[j] += (float)(P[j] * (dl[j] - dot));
        }
    }
    return LINA_OK;
}

const lina_mixer_vt lina_hgrn2_kind = {
    .name = "hgrn2",
    .build = hgrn2_build,
    .acts_floats = hgrn2_acts,
    .scratch_floats = hgrn2_scratch,
    .state_floats = hgrn2_state,
    .forward = hgrn2_kind_forward,
    .backward = hgrn2_kind_backward,
    .flags = LINA_KIND_SP,
    .shared_build = lina_lower_bounds_build,
    .shared_forward = lina_lower_bounds_forward,
    .shared_backward = lina_lower_bounds_backward,
};
