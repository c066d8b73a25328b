/* mixers.c -- which plug-in kind (mixer.h) serves a layer. One switch, so
 * that adding a kind touches one line here and its own files. */
#include "mixer.h"
extern const lina_mixer_vt lina_mixer_linear_attn;        /* mix_la.c */
extern const lina_mixer_vt lina_mixer_gated_deltaproduct; /* mix_dp.c */
#include "../nn/mlstm_layer.h"
#include "../nn/mamba2_layer.h"
#include "../nn/mom_layer.h"
#include "../nn/moe_mlp.h"

const lina_mixer_vt *lina_mixer_vt_for(const lina_config *c, int layer)
{
    if (lina_config_is_attn_layer(c, layer)) {
        return NULL; /* model.c's softmax attention */
    }
    switch (c->model_type) {
    case LINA_MODEL_LINEAR_ATTN:
        return &lina_mixer_linear_attn;
    case LINA_MODEL_GATED_DELTAPRODUCT:
        return &lina_mixer_gated_deltaproduct;
    case LINA_MODEL_MLSTM:
        return &lina_mlstm_mixer_vt;
    case LINA_MODEL_MAMBA2:
        return &lina_mamba2_mixer;
    case LINA_MODEL_MOM:
        return &lina_mom_vt;
    default:
        return NULL;
    }
}

const lina_mixer_vt *lina_ffn_vt_for(const lina_config *c)
{
    return c->num_experts > 0 ? &lina_moe_vt : NULL;
}
