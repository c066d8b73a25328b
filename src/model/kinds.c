/* kinds.c -- the registry of kinds: which table (src/nn/kind.h) serves a
 * model_type, a layer and a feed-forward block. Each table lives in its layer
 * file in src/nn/; adding a mixer adds one line to LINA_KINDS. */
#include "model.h"

/* model_type -> kind table (defined in the layer file named on the right) */
#define LINA_KINDS(X)                                                                     \
    X(LINA_MODEL_GLA, lina_gla_kind)                               /* gla_layer.c */     \
    X(LINA_MODEL_RETNET, lina_gla_kind)                            /* gla_layer.c */     \
    X(LINA_MODEL_DELTA_NET, lina_delta_kind)                       /* delta_layer.c */   \
    X(LINA_MODEL_GATED_DELTANET, lina_delta_kind)                  /* delta_layer.c */   \
    X(LINA_MODEL_GATED_DELTAPRODUCT, lina_delta_kind)              /* delta_layer.c */   \
    X(LINA_MODEL_LINEAR_ATTN, lina_linear_attn_kind)               /* la_layer.c */      \
    X(LINA_MODEL_TRANSFORMER, lina_attn_kind)                      /* attn_layer.c */    \
    X(LINA_MODEL_HGRN2, lina_hgrn2_kind)                           /* hgrn2_layer.c */   \
    X(LINA_MODEL_MAMBA2, lina_mamba2_kind)                         /* mamba2_layer.c */  \
    X(LINA_MODEL_MOM, lina_mom_kind)                               /* mom_layer.c */     \
    X(LINA_MODEL_MLSTM, lina_mlstm_kind)                           /* mlstm_layer.c */   \
    X(LINA_MODEL_KDA, lina_delta_kind)                             /* delta_layer.c */   \
    X(LINA_MODEL_MAMBA, lina_mamba_kind)                           /* mamba_layer.c */   \
    X(LINA_MODEL_FORGETTING_TRANSFORMER, lina_fox_kind)            /* fox_layer.c */     \
    X(LINA_MODEL_HGRN, lina_hgrn_kind)                             /* hgrn_layer.c */   \
    X(LINA_MODEL_RWKV7, lina_rwkv7_kind)                           /* rwkv7_layer.c */   \
    X(LINA_MODEL_GSA, lina_gsa_kind)                               /* gsa_layer.c */

/* the feed-forward kinds: dense GatedMLP (mlp.c), top-k mixture of experts (moe_mlp.c) */
extern const lina_mixer_vt lina_mlp_kind, lina_moe_kind;

#define KIND_DECLARE(type, table) extern const lina_mixer_vt table;
LINA_KINDS(KIND_DECLARE)

#define KIND_ROW(type, table) {type, &table},
static const struct {
    lina_model_type type;
    const lina_mixer_vt *vt;
} kinds[] = {LINA_KINDS(KIND_ROW)};

/* a transformer with a linear_method: linearized attention (linattn_layer.c) in every layer */
extern const lina_mixer_vt lina_linattn_kind;

const lina_mixer_vt *lina_kind_of_model(const lina_config *c)
{
    if (c->model_type == LINA_MODEL_TRANSFORMER && c->linear_method[0]) {
        return &lina_linattn_kind;
    }
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        if (kinds[i].type == c->model_type) {
            return kinds[i].vt;
        }
    }
    return NULL;
}

const lina_mixer_vt *lina_kind_of_layer(const lina_config *c, int layer)
{
    return lina_config_is_attn_layer(c, layer) ? &lina_attn_kind : lina_kind_of_model(c);
}

const lina_mixer_vt *lina_kind_of_ffn(const lina_config *c)
{
    return c->num_experts > 0 ? &lina_moe_kind : &lina_mlp_kind;
}
