/* mix_la.c -- the linear_attn model type (FLA's LinearAttention layer,
 * docs/mixers.md section 3.3) as a plug-in mixer kind (mixer.h) over
 * src/nn/la_layer.c. Tensors under model.layers.{i}.attn.:
 *   q_proj.weight [H*K, D], k_proj.weight [Hkv*K, D], v_proj.weight [Hkv*V, D],
 *   feature_map_q.* / feature_map_k.* (elementwise_product: layer1.{weight,bias},
 *   layer2.{weight,bias} [K, K], [K]; hedgehog: layer.{weight,bias}; t2r:
 *   layer.weight; only feature_map_q.* when tie_feature_map_qk),
 *   norm.weight [V] (unless elementwise_affine is false), o_proj.weight [D, H*V]
 * with K = hidden_size*expand_k/H, V = hidden_size*expand_v/H. */
#include "mixer.h"

#include "../nn/la_layer.h"

#include <stdio.h>
#include <string.h>

enum {
    LA_Q = 0,
    LA_K,
    LA_V,
    LA_FQ_W1,
    LA_FQ_B1,
    LA_FQ_W2,
    LA_FQ_B2,
    LA_FK_W1,
    LA_FK_B1,
    LA_FK_W2,
    LA_FK_B2,
    LA_NORM,
    LA_O
};

_Static_assert(sizeof(lina_la_dims) <= LINA_MIXER_DIMS_BYTES, "lina_la_dims too large");

/* declare one feature map's parameters under "feature_map_<qk>." */
static int add_fmap(lina_mixer_builder *b, const lina_la_dims *d, char qk, int s0)
{
    int nl = lina_la_fmap_linears(d->fmap), rc = LINA_OK;
    char nm[64];
    int64_t K = d->K;
    if (nl == 2) {
        for (int j = 0; j < 2 && !rc; j++) {
            snprintf(nm, sizeof(nm), "feature_map_%c.layer%d.weight", qk, j + 1);
            rc = lina_mixer_add(b, s0 + 2 * j, nm, 2, K, K, 0, 1, LINA_INIT_NORMAL);
            snprintf(nm, sizeof(nm), "feature_map_%c.layer%d.bias", qk, j + 1);
            rc = rc ? rc : lina_mixer_add(b, s0 + 2 * j + 1, nm, 1, K, 0, 0, 0, LINA_INIT_ZEROS);
        }
    } else if (nl == 1) {
        int hh = d->fmap == LINA_LA_FM_HEDGEHOG;
        snprintf(nm, sizeof(nm), "feature_map_%c.layer.weight", qk);
        /* hedgehog starts at the identity map (FLA's HedgehogFeatureMap init) */
        rc = lina_mixer_add(b, s0, nm, 2, K, K, 0, 1, hh ? LINA_INIT_EYE : LINA_INIT_NORMAL);
        if (!rc && hh) {
            snprintf(nm, sizeof(nm), "feature_map_%c.layer.bias", qk);
            rc = lina_mixer_add(b, s0 + 1, nm, 1, K, 0, 0, 0, LINA_INIT_ZEROS);
        }
    }
    return rc;
}

static int la_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_la_dims *d = dims;
    memset(d, 0, sizeof(*d));
    int rc = lina_la_fmap_parse(c->feature_map, &d->fmap);
    if (rc) {
        return rc;
    }
    int H = c->num_heads, D = c->hidden_size;
    int kd = (int)(D * c->expand_k), vd = (int)(D * c->expand_v);
    int Hkv = c->num_kv_heads > 0 ? c->num_kv_heads : H;
    if (H < 1 || kd < H || vd < H || kd % H != 0 || vd % H != 0 || Hkv < 1 || H % Hkv != 0) {
        return lina_set_error(LINA_EINVAL,
                              "linear_attn: key dim %d and value dim %d must be multiples of num_heads %d, and "
                              "num_heads a multiple of num_kv_heads %d",
                              kd, vd, H, Hkv);
    }
    d->D = D;
    d->H = H;
    d->Hkv = Hkv;
    d->K = kd / H;
    d->V = vd / H;
    d->F = lina_la_fmap_dim(d->fmap, d->K);
    d->tie = c->tie_feature_map_qk && lina_la_fmap_linears(d->fmap) > 0;
    d->norm_q = c->norm_q;
    d->norm_k = c->norm_k;
    d->normalize = c->norm_feature_map;
    d->affine = c->elementwise_affine;
    d->norm_eps = (float)c->norm_eps;
    if ((rc = lina_la_check_dims(d))) {
        return rc;
    }
    int64_t HK = (int64_t)H * d->K, GK = (int64_t)Hkv * d->K, GV = (int64_t)Hkv * d->V, HV = (int64_t)H * d->V;
    if ((rc = lina_mixer_add(b, LA_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LA_K, "k_proj.weight", 2, GK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, LA_V, "v_proj.weight", 2, GV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = add_fmap(b, d, 'q', LA_FQ_W1)) || (!d->tie && (rc = add_fmap(b, d, 'k', LA_FK_W1))) ||
        (d->affine && (rc = lina_mixer_add(b, LA_NORM, "norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES))) ||
        (rc = lina_mixer_add(b, LA_O, "o_proj.weight", 2, D, HV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

static size_t la_acts(const void *dims, int N)
{
    return lina_la_acts_floats(dims, N);
}

static size_t la_scratch(const void *dims, int N)
{
    return lina_la_scratch_floats(dims, N);
}

static size_t la_state(const void *dims, int B)
{
    return lina_la_state_floats(dims, B);
}

static void la_views(const lina_la_dims *d, float *const *v, lina_la_params *p)
{
    p->q_proj = v[LA_Q];
    p->k_proj = v[LA_K];
    p->v_proj = v[LA_V];
    p->fq_w1 = v[LA_FQ_W1];
    p->fq_b1 = v[LA_FQ_B1];
    p->fq_w2 = v[LA_FQ_W2];
    p->fq_b2 = v[LA_FQ_B2];
    int t = d->tie;
    p->fk_w1 = v[t ? LA_FQ_W1 : LA_FK_W1];
    p->fk_b1 = v[t ? LA_FQ_B1 : LA_FK_B1];
    p->fk_w2 = v[t ? LA_FQ_W2 : LA_FK_W2];
    p->fk_b2 = v[t ? LA_FQ_B2 : LA_FK_B2];
    p->norm_w = v[LA_NORM];
    p->o_proj = v[LA_O];
}

static int la_forward(const lina_mixer_call *c)
{
    const lina_la_dims *d = c->dims;
    lina_la_params p;
    lina_la_acts a;
    la_views(d, c->P, &p);
    lina_la_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_la_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->form, c->ws);
}

static int la_backward(const lina_mixer_call *c)
{
    const lina_la_dims *d = c->dims;
    lina_la_params p, gp;
    lina_la_acts a;
    la_views(d, c->P, &p);
    la_views(d, c->G, &gp);
    lina_la_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_la_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->form, c->ws);
}

const lina_mixer_vt lina_mixer_linear_attn = {
    "linear_attn", la_build, la_acts, la_scratch, la_state, la_forward, la_backward,
};
