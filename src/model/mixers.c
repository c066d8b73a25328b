/* mixers.c -- which plug-in kind (mixer.h) serves a layer. One switch, so
 * that adding a kind touches one line here and its own files. */
#include "mixer.h"
#include "../nn/mamba2_layer.h"

const lina_mixer_vt *lina_mixer_vt_for(const lina_config *c, int layer)
{
    if (lina_config_is_attn_layer(c, layer)) {
        return NULL; /* model.c's softmax attention */
    }
    switch (c->model_type) {
    case LINA_MODEL_MAMBA2:
        return &lina_mamba2_mixer;
    default:
        return NULL;
    }
}

const lina_mixer_vt *lina_ffn_vt_for(const lina_config *c)
{
    (void)c;
    return NULL;
}
