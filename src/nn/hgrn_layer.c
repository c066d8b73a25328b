/* hgrn_layer.c -- FLA's HGRNAttention (docs/mixers.md section 15.1) on the hgrn
 * kernel: input and forget projections (optional short convolutions without
 * activation), the forget gate with the layer's lower bound, the input gate
 * tied to it (x = SiLU(i) * (1 - exp(g))), the element-wise recurrence, a
 * gated RMSNorm over the full width (weight times SiLU(g_proj x)) and o_proj.
 * Shapes in nn.h; N = B*T rows, E = hidden_size * expand_ratio. */
#include "nn.h"

#include "../kern/checked.h"

#include <math.h>
#include <string.h>

int lina_hgrn_check_dims(const lina_hgrn_dims *d)
{
    if (!d || d->D <= 0 || d->E <= 0 || !(d->norm_eps > 0.0f) || (d->use_short_conv && d->conv_size < 1)) {
        return lina_set_error(LINA_EINVAL, "hgrn layer: bad dims");
    }
    return LINA_OK;
}

size_t lina_hgrn_acts_floats(const lina_hgrn_dims *d, int N)
{
    return lina_szmul((size_t)N, (size_t)d->E * (d->use_short_conv ? 10 : 8) + 1);
}

void lina_hgrn_acts_carve(lina_hgrn_acts *a, float *buf, const lina_hgrn_dims *d, int N)
{
    size_t n = (size_t)N * d->E;
    float *p = buf;
    a->ip = p;   p += n;
    a->fp = p;   p += n;
    a->g = p;    p += n;
    a->k = p;    p += n;
    a->xin = p;  p += n;
    a->o = p;    p += n;
    a->gp = p;   p += n;
    a->y = p;    p += n;
    a->rstd = p; p += N;
    if (d->use_short_conv) {
        a->ic = p; p += n;
        a->fc = p;
    } else {
        a->ic = a->ip;
        a->fc = a->fp;
    }
}

size_t lina_hgrn_scratch_floats(const lina_hgrn_dims *d, int N)
{
    return lina_szmul((size_t)N, (size_t)d->E * 5);
}

size_t lina_hgrn_state_floats(const lina_hgrn_dims *d, int B)
{
    return lina_szmul((size_t)B, (size_t)d->E * (1 + (d->use_short_conv ? 2 * (size_t)d->conv_size : 0)));
}

int lina_hgrn_forward(float *out, lina_hgrn_acts *a, const float *x, const lina_hgrn_dims *d,
                      const lina_hgrn_params *p, const float *lambda, int B, int T, float *state, lina_form form,
                      lina_ws *ws)
{
    int rc = lina_hgrn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, E = d->E, W = d->conv_size;
    size_t n = (size_t)N * E;
    float *h = state, *ci = state && d->use_short_conv ? state + (size_t)B * E : NULL;
    float *cf = ci ? ci + (size_t)B * E * W : NULL;
    lina_linear_forward(a->ip, x, p->i_proj, NULL, N, D, E);
    lina_linear_forward(a->fp, x, p->f_proj, NULL, N, D, E);
    if (d->use_short_conv) {
        /* the projections into ip / fp, the convolved values into ic / fc */
        lina_conv_act_forward(a->ic, a->ip, p->i_conv, ci, B, T, E, W, LINA_ACT_NONE);
        lina_conv_act_forward(a->fc, a->fp, p->f_conv, cf, B, T, E, W, LINA_ACT_NONE);
    }
    lina_lb_gate_forward(a->g, a->k, a->fc, lambda, (size_t)N, E);
    lina_silu_forward(a->xin, a->ic, n);
    for (size_t i = 0; i < n; i++) {
        a->xin[i] *= a->k[i];
    }
    lina_mix_dims md = lina_layer_mix(B, T, E, 1, 1, 0, 0.0f);
    lina_hgrn_in in = {a->xin, a->g, h};
    lina_hgrn_out o = {a->o, h};
    if ((rc = lina_hgrn_fwd(&md, &in, &o, form, ws))) {
        return rc;
    }
    lina_linear_forward(a->gp, x, p->g_proj, NULL, N, D, E);
    lina_rmsnorm_gated_forward(a->y, a->rstd, a->o, a->gp, p->g_norm, N, E, d->norm_eps);
    lina_linear_forward(out, a->y, p->o_proj, NULL, N, E, D);
    return LINA_OK;
}

int lina_hgrn_backward(float *dx, lina_hgrn_params *gp, float *dlambda, const float *dout, const float *x,
                       const lina_hgrn_acts *a, const lina_hgrn_dims *d, const lina_hgrn_params *p,
                       const float *lambda, int B, int T, float *scratch, lina_form form, lina_ws *ws)
{
    int rc = lina_hgrn_check_dims(d);
    if (rc) {
        return rc;
    }
    int N = B * T, D = d->D, E = d->E, W = d->conv_size;
    size_t n = (size_t)N * E;
    float *dy = scratch;    /* [N,E] */
    float *dO = dy + n;     /* [N,E] */
    float *dgp = dO + n;    /* [N,E], later d(i) before the conv */
    float *dxin = dgp + n;  /* [N,E], later d(f) before the conv */
    float *dg = dxin + n;   /* [N,E] */
    memset(scratch, 0, lina_hgrn_scratch_floats(d, N) * sizeof(float));

    lina_linear_backward(dy, gp->o_proj, NULL, dout, a->y, p->o_proj, N, E, D);
    lina_rmsnorm_gated_backward(dO, dgp, gp->g_norm, dy, a->o, a->gp, p->g_norm, a->rstd, N, E);
    lina_linear_backward(dx, gp->g_proj, NULL, dgp, x, p->g_proj, N, D, E);
    lina_mix_dims md = lina_layer_mix(B, T, E, 1, 1, 0, 0.0f);
    lina_hgrn_in in = {a->xin, a->g, NULL};
    lina_hgrn_grad_in gin = {dO, NULL};
    lina_hgrn_grad_out gout = {dxin, dg, NULL};
    if ((rc = lina_hgrn_bwd(&md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    /* xin = silu(ic) * k: d(silu) into dO, dk into dy (both free now) */
    lina_silu_forward(dy, a->ic, n);
    for (size_t i = 0; i < n; i++) {
        dO[i] = dxin[i] * a->k[i];
        dy[i] *= dxin[i];
    }
    float *dic = dgp, *dfc = dxin;
    memset(dic, 0, n * sizeof(float));
    lina_silu_backward(dic, dO, a->ic, n);
    lina_lb_gate_backward(dfc, dlambda, dg, dy, a->fc, a->g, lambda, (size_t)N, E);
    const float *dip = dic, *dfp = dfc;
    if (d->use_short_conv) {
        /* the convolutions' input gradients into dO and dy */
        memset(dO, 0, n * sizeof(float));
        lina_conv_act_backward(dO, gp->i_conv, dic, a->ip, p->i_conv, B, T, E, W, LINA_ACT_NONE);
        memset(dy, 0, n * sizeof(float));
        lina_conv_act_backward(dy, gp->f_conv, dfc, a->fp, p->f_conv, B, T, E, W, LINA_ACT_NONE);
        dip = dO;
        dfp = dy;
    }
    lina_linear_backward(dx, gp->i_proj, NULL, dip, x, p->i_proj, N, D, E);
    lina_linear_backward(dx, gp->f_proj, NULL, dfp, x, p->f_proj, N, D, E);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * model_type "hgrn" (kind.h). Tensors under model.layers.{i}.attn.:
 * i_proj.weight, f_proj.weight, g_proj.weight [E, D], {i,f}_conv1d.weight
 * [E, 1, W] (use_short_conv), g_norm.weight [E] (elementwise_affine),
 * o_proj.weight [D, E]; the model-level model.lower_bounds [L, D] with
 * use_lower_bound (the lower-bound machinery of hgrn2_layer.c). Decode state:
 * h [B, E], then the conv tails of i and f [B, E, W] each. */
enum { HR_I, HR_F, HR_G, HR_NORM, HR_O, HR_IC, HR_FC };

typedef struct hgrn_kind_dims {
    lina_hgrn_dims d;
    int layer, L;
} hgrn_kind_dims;

_Static_assert(sizeof(hgrn_kind_dims) <= LINA_MIXER_DIMS_BYTES, "hgrn dims too large");

static int hgrn_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    hgrn_kind_dims *kd = dims;
    memset(kd, 0, sizeof(*kd));
    int D = c->hidden_size, r = c->expand_ratio;
    if (r < 1 || (c->use_lower_bound && r != 1)) {
        return lina_set_error(LINA_EINVAL, "hgrn: expand_ratio must be >= 1, and 1 with use_lower_bound "
                                           "(model.lower_bounds has hidden_size columns; got %d)", r);
    }
    kd->d.D = D;
    kd->d.E = D * r;
    kd->d.norm_eps = (float)c->norm_eps;
    kd->d.use_short_conv = c->use_short_conv ? 1 : 0;
    kd->d.conv_size = c->conv_size;
    kd->layer = layer;
    kd->L = c->num_hidden_layers;
    int rc = lina_hgrn_check_dims(&kd->d);
    if (rc) {
        return rc;
    }
    int64_t E = kd->d.E, W = c->conv_size;
    if ((rc = lina_mixer_add(b, HR_I, "i_proj.weight", 2, E, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, HR_F, "f_proj.weight", 2, E, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, HR_G, "g_proj.weight", 2, E, D, 0, 1, LINA_INIT_NORMAL)) ||
        (kd->d.use_short_conv &&
         (rc = lina_mixer_add(b, HR_FC, "f_conv1d.weight", 3, E, 1, W, 1, LINA_INIT_NORMAL))) ||
        (kd->d.use_short_conv &&
         (rc = lina_mixer_add(b, HR_IC, "i_conv1d.weight", 3, E, 1, W, 1, LINA_INIT_NORMAL))) ||
        (c->elementwise_affine && (rc = lina_mixer_add(b, HR_NORM, "g_norm.weight", 1, E, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, HR_O, "o_proj.weight", 2, D, E, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(hgrn_acts, lina_hgrn_acts_floats)
LINA_KIND_SIZE(hgrn_scratch, lina_hgrn_scratch_floats)
LINA_KIND_STATE(hgrn_state, lina_hgrn_state_floats)

static void hgrn_views(float *const *v, lina_hgrn_params *p)
{
    p->i_proj = v[HR_I];
    p->f_proj = v[HR_F];
    p->g_proj = v[HR_G];
    p->g_norm = v[HR_NORM];
    p->o_proj = v[HR_O];
    p->i_conv = v[HR_IC];
    p->f_conv = v[HR_FC];
}

/* layer l's lambda (which = 1) or dlambda (2) in the shared buffer; NULL for layer 0 or without lower bounds */
static float *hgrn_lb(const lina_mixer_call *c, int which)
{
    const hgrn_kind_dims *kd = c->dims;
    return c->shared && kd->layer > 0 ? c->shared + ((size_t)which * kd->L + kd->layer) * kd->d.D : NULL;
}

static int hgrn_kind_forward(const lina_mixer_call *c)
{
    const hgrn_kind_dims *kd = c->dims;
    lina_hgrn_params p;
    lina_hgrn_acts a;
    hgrn_views(c->P, &p);
    lina_hgrn_acts_carve(&a, c->acts, &kd->d, c->B * c->T);
    return lina_hgrn_forward(c->out, &a, c->x, &kd->d, &p, hgrn_lb(c, 1), c->B, c->T, c->state, c->form, c->ws);
}

static int hgrn_kind_backward(const lina_mixer_call *c)
{
    const hgrn_kind_dims *kd = c->dims;
    lina_hgrn_params p, gp;
    lina_hgrn_acts a;
    hgrn_views(c->P, &p);
    hgrn_views(c->G, &gp);
    lina_hgrn_acts_carve(&a, c->acts, &kd->d, c->B * c->T);
    return lina_hgrn_backward(c->dx, &gp, hgrn_lb(c, 2), c->dout, c->x, &a, &kd->d, &p, hgrn_lb(c, 1), c->B,
                              c->T, c->scratch, c->form, c->ws);
}

const lina_mixer_vt lina_hgrn_kind = {
    .name = "hgrn",
    .build = hgrn_build,
    .acts_floats = hgrn_acts,
    .scratch_floats = hgrn_scratch,
    .state_floats = hgrn_state,
    .forward = hgrn_kind_forward,
    .backward = hgrn_kind_backward,
    .shared_build = lina_lower_bounds_build,
    .shared_forward = lina_lower_bounds_forward,
    .shared_backward = lina_lower_bounds_backward,
};
