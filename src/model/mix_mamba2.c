/* mix_mamba2.c -- the Mamba2 mixer as a plug-in kind (mixer.h) of
 * model_type "mamba2": FLA's tensor names under backbone.layers.{i}.mixer.
 * (docs/checkpoints.md 2.3), the config keys of docs/mixers.md 6, the layer math in
 * src/nn/mamba2_layer.c. */
#include "mixer.h"

#include "../nn/mamba2_layer.h"

#include <string.h>

/* tensor slots */
enum { M2_IN, M2_IN_B, M2_CONV, M2_CONV_B, M2_DT_BIAS, M2_A_LOG, M2_D, M2_NORM, M2_OUT, M2_OUT_B };

_Static_assert(sizeof(lina_mamba2_dims) <= LINA_MIXER_DIMS_BYTES, "mamba2 dims do not fit");

static int m2_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_mamba2_dims *d = dims;
    memset(d, 0, sizeof(*d));
    d->D = c->hidden_size;
    d->H = c->num_heads;
    d->P = c->head_dim;
    d->N = c->state_size;
    d->G = c->n_groups;
    d->W = c->conv_kernel;
    d->use_conv_bias = c->use_conv_bias;
    d->use_bias = c->use_bias;
    d->rmsnorm = c->rmsnorm;
    d->norm_before_gate = c->norm_before_gate;
    d->D_has_hdim = c->D_has_hdim;
    d->allow_neg_eigval = c->allow_neg_eigval;
    d->chunk = c->chunk_size;
    d->norm_eps = (float)c->norm_eps;
    if (c->expand < 1 || (double)d->H * d->P != (double)c->expand * d->D) {
        return lina_set_error(LINA_EINVAL,
                              "mamba2: num_heads * head_dim (%d * %d) must equal expand * hidden_size (%d * %d)", d->H,
                              d->P, c->expand, d->D);
    }
    int rc = lina_mamba2_check_dims(d);
    if (rc) {
        return rc;
    }
    const int64_t E = (int64_t)d->H * d->P, GN = (int64_t)d->G * d->N, H = d->H, D = d->D;
    const int64_t Cc = E + 2 * GN, Din = 2 * E + 2 * GN + H;
    if ((rc = lina_mixer_add(b, M2_IN, "in_proj.weight", 2, Din, D, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->use_bias && (rc = lina_mixer_add(b, M2_IN_B, "in_proj.bias", 1, Din, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    if ((rc = lina_mixer_add(b, M2_CONV, "conv1d.weight", 3, Cc, 1, d->W, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->use_conv_bias && (rc = lina_mixer_add(b, M2_CONV_B, "conv1d.bias", 1, Cc, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    if ((rc = lina_mixer_add(b, M2_DT_BIAS, "dt_bias", 1, H, 0, 0, 0, LINA_INIT_DT_BIAS)) ||
        (rc = lina_mixer_add(b, M2_A_LOG, "A_log", 1, H, 0, 0, 0, LINA_INIT_A_LOG_1_16)) ||
        (rc = lina_mixer_add(b, M2_D, "D", 1, d->D_has_hdim ? E : H, 0, 0, 0, LINA_INIT_ONES))) {
        return rc;
    }
    if (d->rmsnorm && (rc = lina_mixer_add(b, M2_NORM, "norm.weight", 1, E, 0, 0, 0, LINA_INIT_ONES))) {
        return rc;
    }
    if ((rc = lina_mixer_add(b, M2_OUT, "out_proj.weight", 2, D, E, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->use_bias && (rc = lina_mixer_add(b, M2_OUT_B, "out_proj.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS))) {
        return rc;
    }
    return LINA_OK;
}

static size_t m2_acts_floats(const void *dims, int N)
{
    return lina_mamba2_acts_floats(dims, N);
}

static size_t m2_scratch_floats(const void *dims, int N)
{
    return lina_mamba2_scratch_floats(dims, N);
}

static size_t m2_state_floats(const void *dims, int B)
{
    return lina_mamba2_state_floats(dims, B);
}

static void m2_views(float *const *V, lina_mamba2_params *p)
{
    p->in_proj = V[M2_IN];
    p->in_bias = V[M2_IN_B];
    p->conv_w = V[M2_CONV];
    p->conv_b = V[M2_CONV_B];
    p->dt_bias = V[M2_DT_BIAS];
    p->A_log = V[M2_A_LOG];
    p->Dskip = V[M2_D];
    p->norm_w = V[M2_NORM];
    p->out_proj = V[M2_OUT];
    p->out_bias = V[M2_OUT_B];
}

static int m2_forward(const lina_mixer_call *c)
{
    const lina_mamba2_dims *d = c->dims;
    lina_mamba2_params p;
    lina_mamba2_acts a;
    m2_views(c->P, &p);
    lina_mamba2_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mamba2_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->form, c->ws);
}

static int m2_backward(const lina_mixer_call *c)
{
    const lina_mamba2_dims *d = c->dims;
    lina_mamba2_params p, gp;
    lina_mamba2_acts a;
    m2_views(c->P, &p);
    m2_views(c->G, &gp);
    lina_mamba2_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mamba2_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->form, c->ws);
}

const lina_mixer_vt lina_mamba2_mixer = {
    "mamba2", m2_build, m2_acts_floats, m2_scratch_floats, m2_state_floats, m2_forward, m2_backward,
};
