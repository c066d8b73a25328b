/* mix_dp.c -- the gated_deltaproduct model type (FLA's GatedDeltaProduct
 * layer, docs/mixers.md section 4.3, docs/checkpoints.md section 2.2) as a
 * plug-in mixer kind (mixer.h) over src/nn/dp_layer.c. Tensors under
 * model.layers.{i}.attn. (n = num_householder, K = head_dim,
 * V = head_dim*expand_v, HV = num_v_heads or num_heads):
 *   q_proj.weight [H*K, D], k_proj.weight [n*H*K, D], v_proj.weight [n*HV*V, D],
 *   b_proj.weight [n*HV, D], a_proj.weight [HV, D], A_log [HV], dt_bias [HV]
 *   (the last three only with use_forget_gate), q_conv1d.weight [H*K, 1, W],
 *   k_conv1d.weight [n*H*K, 1, W], v_conv1d.weight [n*HV*V, 1, W] (short convs),
 *   g_proj.weight [HV*V, D] (output gate), o_norm.weight [V], o_proj.weight [D, HV*V].
 * The output gate follows the config's use_output_gate (FLA's key for this
 * class). */
#include "mixer.h"

#include "../nn/dp_layer.h"

#include <math.h>
#include <string.h>

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

static size_t dp_state(const void *dims, int B)
{
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

const lina_mixer_vt lina_mixer_gated_deltaproduct = {
    "gated_deltaproduct", dp_build, dp_acts, dp_scratch, dp_state, dp_forward, dp_backward,
};
