/* config.c -- HF-style config.json (flash-linear-attention classes) <-> lina_config.
 *
 * One table lists every key, the lina_config field it fills, its JSON type and
 * the model types whose class has it; the reader and the writer both walk the
 * table, so whatever is written reads back identically. Defaults are FLA's
 * class defaults (docs/checkpoints.md section 1, and per type docs/mixers.md).
 */
#include "io_internal.h"
#include "lina.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_MAX_FILE (16u * 1024u * 1024u)

/* model-type masks */
#define M_GLA (1u << LINA_MODEL_GLA)
#define M_DN (1u << LINA_MODEL_DELTA_NET)
#define M_GDN (1u << LINA_MODEL_GATED_DELTANET)
#define M_RET (1u << LINA_MODEL_RETNET)
#define M_LA (1u << LINA_MODEL_LINEAR_ATTN)
#define M_TR (1u << LINA_MODEL_TRANSFORMER)
#define M_HG (1u << LINA_MODEL_HGRN2)
#define M_GDP (1u << LINA_MODEL_GATED_DELTAPRODUCT)
#define M_M2 (1u << LINA_MODEL_MAMBA2)
#define M_MOM (1u << LINA_MODEL_MOM)
#define M_ML (1u << LINA_MODEL_MLSTM)
#define M_KDA (1u << LINA_MODEL_KDA)
#define M_MB (1u << LINA_MODEL_MAMBA)
#define M_FOX (1u << LINA_MODEL_FORGETTING_TRANSFORMER)
#define M_HGRN (1u << LINA_MODEL_HGRN)
#define M_RW (1u << LINA_MODEL_RWKV7)
#define M_GSA (1u << LINA_MODEL_GSA)
#define M_ALL (M_GLA | M_DN | M_GDN | M_RET | M_LA | M_TR | M_HG | M_GDP | M_M2 | M_MOM | M_ML | M_KDA | M_MB | M_FOX | M_HGRN | M_RW | M_GSA)
#define M_LIN (M_ALL & ~M_TR & ~M_FOX)

static const char *const type_names[LINA_MODEL_COUNT] = {
    "gla", "delta_net", "gated_deltanet", "retnet", "linear_attn", "transformer", "hgrn2",
    "gated_deltaproduct", "mamba2", "mom", "mlstm", "kda", "mamba", "forgetting_transformer", "hgrn", "rwkv7", "gsa",
};
static const char *const arch_names[LINA_MODEL_COUNT] = {
    "GLAForCausalLM",         "DeltaNetForCausalLM",    "GatedDeltaNetForCausalLM", "RetNetForCausalLM",
    "LinearAttentionForCausalLM", "TransformerForCausalLM", "HGRN2ForCausalLM",
    "GatedDeltaProductForCausalLM", "Mamba2ForCausalLM", "MomForCausalLM", "MLSTMForCausalLM",
    "KDAForCausalLM",
    "MambaForCausalLM",
    "ForgettingTransformerForCausalLM",
    "HGRNForCausalLM",
    "RWKV7ForCausalLM",
    "GSAForCausalLM",
};

const char *lina_model_type_name(lina_model_type t)
{
    return ((int)t >= 0 && t < LINA_MODEL_COUNT) ? type_names[t] : NULL;
}

/* ------------------------------------------------------------ key table */

enum {
    K_INT,    /* integer */
    K_NINT,   /* integer or null (null -> nullv) */
    K_DBL,    /* number */
    K_NDBL,   /* number or null (null -> 0) */
    K_OPTDBL, /* number or null, with a has-flag int at off2 */
    K_BOOL,   /* true/false */
    K_NBOOL,  /* true/false/null (null -> 0) */
    K_STR,    /* string */
    K_NSTR,   /* string or null (null -> "") */
    K_QKBOOL, /* transformer qk_norm: bool stored as "rms" / "" */
    K_AUTOINT /* integer >= 1 or "auto" (-> 0) */
};

#define W_SKIPNULL 1 /* do not write the key when it is null */
#define W_MOE 2      /* written only with num_experts > 0 (the MoE feed-forward block's keys) */
#define W_LINATTN 8   /* written only with a linear_method (linearized attention's keys) */
#define W_LORA 16     /* written only with lora_rank > 0 */
#define R_LIST 4     /* K_NINT: a list of integers is accepted too, its first element is kept
                        (eos_token_id, as HF configs may give several stop tokens) */

typedef struct keydesc {
    const char *key;
    int kind;
    size_t off, size;
    unsigned types;
    int nullv;
    size_t off2;
    int flags;
} keydesc;

#define FLD(f) offsetof(lina_config, f), sizeof(((lina_config *)0)->f)

static const keydesc keys[] = {
    {"attn_mode", K_STR, FLD(attn_mode), M_LIN & ~M_MB & ~M_GSA, 0, 0, 0},
    {"hidden_size", K_INT, FLD(hidden_size), M_ALL, 0, 0, 0},
    {"expand_k", K_DBL, FLD(expand_k), M_GLA | M_DN | M_RET | M_LA | M_ML | M_GSA, 0, 0, 0},
    {"expand_v", K_DBL, FLD(expand_v), M_GLA | M_DN | M_GDN | M_RET | M_LA | M_GDP | M_MOM | M_ML | M_KDA | M_GSA, 0, 0, 0},
    {"head_dim", K_INT, FLD(head_dim), M_GDN | M_GDP | M_M2 | M_MOM | M_KDA | M_RW, 0, 0, 0},
    {"num_heads", K_NINT, FLD(num_heads), M_ALL & ~M_MB & ~M_HGRN, 0, 0, 0},
    {"num_v_heads", K_NINT, FLD(num_v_heads), M_GDN | M_GDP | M_KDA, 0, 0, 0},
    {"num_kv_heads", K_NINT, FLD(num_kv_heads), M_GLA | M_RET | M_LA | M_TR | M_FOX | M_GSA, 0, 0, 0},
    {"expand_ratio", K_NINT, FLD(expand_ratio), M_HG | M_HGRN, 0, 0, 0},
    {"hidden_ratio", K_NDBL, FLD(hidden_ratio), M_ALL & ~M_MB, 0, 0, 0},
    {"intermediate_size", K_NINT, FLD(intermediate_size), M_ALL, 0, 0, 0},
    {"num_hidden_layers", K_INT, FLD(num_hidden_layers), M_ALL, 0, 0, 0},
    {"feature_map", K_NSTR, FLD(feature_map), M_GLA | M_RET | M_LA | M_GSA, 0, 0, 0},
    {"tie_feature_map_qk", K_BOOL, FLD(tie_feature_map_qk), M_LA, 0, 0, 0},
    {"norm_q", K_BOOL, FLD(norm_q), M_LA, 0, 0, 0},
    {"norm_k", K_BOOL, FLD(norm_k), M_LA, 0, 0, 0},
    {"norm_feature_map", K_BOOL, FLD(norm_feature_map), M_LA, 0, 0, 0},
    {"use_short_conv", K_BOOL, FLD(use_short_conv), M_ALL & ~M_M2 & ~M_FOX & ~M_RW, 0, 0, 0},
    {"conv_size", K_INT, FLD(conv_size), M_ALL & ~M_M2 & ~M_FOX & ~M_RW, 0, 0, 0},
    {"use_output_gate", K_BOOL, FLD(use_output_gate), M_GLA | M_RET | M_ML | M_GDP | M_MOM | M_FOX | M_GSA, 0, 0, 0},
    {"use_gate", K_BOOL, FLD(use_gate), M_DN | M_GDN, 0, 0, 0},
    {"use_beta", K_BOOL, FLD(use_beta), M_DN, 0, 0, 0},
    {"use_output_norm", K_BOOL, FLD(use_output_norm), M_DN, 0, 0, 0},
    {"allow_neg_eigval", K_BOOL, FLD(allow_neg_eigval), M_DN | M_GDN | M_GDP | M_M2 | M_MOM | M_KDA, 0, 0, 0},
    {"safe_gate", K_BOOL, FLD(safe_gate), M_KDA, 0, 0, 0},
    {"lower_bound", K_OPTDBL, FLD(lower_bound), M_KDA, 0, offsetof(lina_config, has_lower_bound), 0},
    {"qk_norm", K_STR, FLD(qk_norm), M_DN, 0, 0, 0},
    {"qk_norm", K_QKBOOL, FLD(qk_norm), M_TR | M_FOX, 0, 0, 0},
    {"qk_activation", K_STR, FLD(qk_activation), M_DN, 0, 0, 0},
    {"clamp_min", K_OPTDBL, FLD(clamp_min), M_GLA, 0, offsetof(lina_config, has_clamp_min), 0},
    {"use_gk", K_BOOL, FLD(use_gk), M_GLA, 0, 0, 0},
    {"use_gv", K_BOOL, FLD(use_gv), M_GLA, 0, 0, 0},
    {"use_lower_bound", K_BOOL, FLD(use_lower_bound), M_HG | M_HGRN, 0, 0, 0},
    {"num_householder", K_INT, FLD(num_householder), M_GDP, 0, 0, 0},
    {"use_forget_gate", K_BOOL, FLD(use_forget_gate), M_GDP, 0, 0, 0},
    {"state_size", K_INT, FLD(state_size), M_M2 | M_MB, 0, 0, 0},
    {"expand", K_INT, FLD(expand), M_M2 | M_MB, 0, 0, 0},
    {"n_groups", K_INT, FLD(n_groups), M_M2, 0, 0, 0},
    {"conv_kernel", K_INT, FLD(conv_kernel), M_M2 | M_MB, 0, 0, 0},
    {"use_conv_bias", K_BOOL, FLD(use_conv_bias), M_M2 | M_MB, 0, 0, 0},
    {"use_bias", K_BOOL, FLD(use_bias), M_M2 | M_MB, 0, 0, 0},
    {"rmsnorm", K_BOOL, FLD(rmsnorm), M_M2, 0, 0, 0},
    {"norm_before_gate", K_BOOL, FLD(norm_before_gate), M_M2, 0, 0, 0},
    {"chunk_size", K_INT, FLD(chunk_size), M_M2, 0, 0, 0},
    {"D_has_hdim", K_BOOL, FLD(D_has_hdim), M_M2, 0, 0, 0},
    {"residual_in_fp32", K_BOOL, FLD(residual_in_fp32), M_M2 | M_MB, 0, 0, 0},
    {"dt_min", K_DBL, FLD(dt_min), M_M2 | M_MB, 0, 0, 0},
    {"dt_max", K_DBL, FLD(dt_max), M_M2 | M_MB, 0, 0, 0},
    {"dt_init_floor", K_DBL, FLD(dt_init_floor), M_M2 | M_MB, 0, 0, 0},
    {"dt_rank", K_AUTOINT, FLD(dt_rank), M_MB, 0, 0, 0},
    {"dt_scale", K_DBL, FLD(dt_scale), M_MB, 0, 0, 0},
    {"dt_init_scheme", K_STR, FLD(dt_init_scheme), M_MB, 0, 0, 0},
    {"rescale_prenorm_residual", K_BOOL, FLD(rescale_prenorm_residual), M_MB, 0, 0, 0},
    {"decay_low_rank_dim", K_INT, FLD(decay_low_rank_dim), M_RW, 0, 0, 0},
    {"gate_low_rank_dim", K_INT, FLD(gate_low_rank_dim), M_RW, 0, 0, 0},
    {"a_low_rank_dim", K_INT, FLD(a_low_rank_dim), M_RW, 0, 0, 0},
    {"v_low_rank_dim", K_INT, FLD(v_low_rank_dim), M_RW, 0, 0, 0},
    {"value_dim", K_NINT, FLD(value_dim), M_RW, 0, 0, 0},
    {"norm_first", K_BOOL, FLD(norm_first), M_RW, 0, 0, 0},
    {"norm_bias", K_BOOL, FLD(norm_bias), M_RW, 0, 0, 0},
    {"num_slots", K_NINT, FLD(num_slots), M_GSA, 0, 0, 0},
    {"gate_logit_normalizer", K_DBL, FLD(gate_logit_normalizer), M_GSA, 0, 0, 0},
    {"use_norm", K_BOOL, FLD(use_norm), M_GSA, 0, 0, 0},
    {"num_memories", K_INT, FLD(num_memories), M_MOM, 0, 0, 0},
    {"topk", K_INT, FLD(topk), M_MOM, 0, 0, 0},
    {"capacity", K_DBL, FLD(capacity), M_MOM, 0, 0, 0},
    {"shared_mem", K_BOOL, FLD(shared_mem), M_MOM, 0, 0, 0},
    {"single_kv_proj", K_BOOL, FLD(single_kv_proj), M_MOM, 0, 0, 0},
    {"use_layer_wise_balance", K_BOOL, FLD(use_layer_wise_balance), M_MOM, 0, 0, 0},
    {"aux_loss_scale", K_DBL, FLD(aux_loss_scale), M_MOM, 0, 0, 0},
    {"mom_backend", K_STR, FLD(mom_backend), M_MOM, 0, 0, 0},
    {"num_experts", K_NINT, FLD(num_experts), M_ALL, 0, 0, W_SKIPNULL},
    {"num_experts_per_tok", K_INT, FLD(num_experts_per_tok), M_ALL, 0, 0, W_MOE},
    {"moe_intermediate_size", K_NINT, FLD(moe_intermediate_size), M_ALL, 0, 0, W_SKIPNULL},
    {"router_aux_loss_coef", K_DBL, FLD(router_aux_loss_coef), M_ALL, 0, 0, W_MOE},
    {"qkv_bias", K_BOOL, FLD(qkv_bias), M_TR | M_FOX, 0, 0, 0},
    {"window_size", K_NINT, FLD(window_size), M_TR | M_FOX, 0, 0, 0},
    {"rope_theta", K_NDBL, FLD(rope_theta), M_TR, 0, 0, 0},
    {"linear_method", K_NSTR, FLD(linear_method), M_TR, 0, 0, W_LINATTN},
    {"linear_feature_map", K_STR, FLD(linear_feature_map), M_TR, 0, 0, W_LINATTN},
    {"linear_gate", K_BOOL, FLD(linear_gate), M_TR, 0, 0, W_LINATTN},
    {"window_factor", K_DBL, FLD(window_factor), M_TR, 0, 0, W_LINATTN},
    {"lora_rank", K_INT, FLD(lora_rank), M_TR, 0, 0, W_LORA},
    {"lora_alpha", K_DBL, FLD(lora_alpha), M_TR, 0, 0, W_LORA},
    {"hidden_act", K_STR, FLD(hidden_act), M_ALL, 0, 0, 0},
    {"max_position_embeddings", K_INT, FLD(max_position_embeddings), M_ALL, 0, 0, 0},
    {"elementwise_affine", K_NBOOL, FLD(elementwise_affine), M_GLA | M_RET | M_LA | M_TR | M_HG | M_FOX | M_HGRN | M_GSA, 0, 0, 0},
    {"norm_eps", K_DBL, FLD(norm_eps), M_ALL, 0, 0, 0},
    {"use_cache", K_BOOL, FLD(use_cache), M_ALL, 0, 0, 0},
    {"pad_token_id", K_NINT, FLD(pad_token_id), M_ALL, -1, 0, 0},
    {"bos_token_id", K_NINT, FLD(bos_token_id), M_ALL, -1, 0, 0},
    {"eos_token_id", K_NINT, FLD(eos_token_id), M_ALL, -1, 0, R_LIST},
    {"tie_word_embeddings", K_BOOL, FLD(tie_word_embeddings), M_ALL, 0, 0, 0},
    {"initializer_range", K_DBL, FLD(initializer_range), M_ALL, 0, 0, 0},
    {"fuse_norm", K_BOOL, FLD(fuse_norm), M_ALL, 0, 0, 0},
    {"fuse_swiglu", K_BOOL, FLD(fuse_swiglu), M_ALL, 0, 0, 0},
    {"fuse_cross_entropy", K_BOOL, FLD(fuse_cross_entropy), M_ALL, 0, 0, 0},
    {"fuse_linear_cross_entropy", K_BOOL, FLD(fuse_linear_cross_entropy), M_ALL, 0, 0, 0},
    {"use_l2warp", K_BOOL, FLD(use_l2warp), M_ALL, 0, 0, 0},
    {"vocab_size", K_INT, FLD(vocab_size), M_ALL, 0, 0, 0},
    {"attnres_block_size", K_NINT, FLD(attnres_block_size), M_ALL, 0, 0, W_SKIPNULL},
    {"no_mlp", K_BOOL, FLD(no_mlp), M_ALL, 0, 0, W_SKIPNULL},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))

/* ------------------------------------------------------------ defaults */

static void set_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s);
}

int lina_config_default(lina_config *c, lina_model_type t)
{
    if ((int)t < 0 || t >= LINA_MODEL_COUNT) {
        return lina_set_error(LINA_EINVAL, "unknown model type %d", (int)t);
    }
    memset(c, 0, sizeof *c);
    c->model_type = t;
    c->hidden_size = 2048;
    c->num_hidden_layers = 24;
    c->num_heads = 4;
    c->vocab_size = 32000;
    c->hidden_ratio = 4;
    c->intermediate_size = 0;
    c->norm_eps = 1e-6;
    set_str(c->hidden_act, sizeof c->hidden_act, "swish");
    c->max_position_embeddings = 2048;
    c->elementwise_affine = 1;
    c->tie_word_embeddings = 0;
    c->initializer_range = 0.02;
    c->use_cache = 1;
    c->pad_token_id = -1;
    c->bos_token_id = 1;
    c->eos_token_id = 2;
    c->fuse_norm = 1;
    c->fuse_swiglu = 1;
    c->fuse_cross_entropy = 1;
    c->fuse_linear_cross_entropy = 0;
    c->use_l2warp = 0;
    set_str(c->attn_mode, sizeof c->attn_mode, "chunk");
    c->expand_k = 1.0;
    c->expand_v = 1.0;
    c->conv_size = 4;
    c->attn.rope_theta = 10000.0;
    c->num_experts_per_tok = 2;
    c->router_aux_loss_coef = 0.01;
    switch (t) {
    case LINA_MODEL_GLA:
        c->expand_k = 0.5;
        c->use_output_gate = 1;
        c->use_gk = 1;
        break;
    case LINA_MODEL_DELTA_NET:
        c->num_heads = 16;
        c->use_short_conv = 1;
        c->use_beta = 1;
        c->use_output_norm = 1;
        set_str(c->qk_norm, sizeof c->qk_norm, "l2");
        set_str(c->qk_activation, sizeof c->qk_activation, "silu");
        break;
    case LINA_MODEL_GATED_DELTANET:
        c->num_hidden_layers = 21;
        c->num_heads = 6;
        c->head_dim = 256;
        c->expand_v = 2.0;
        c->use_gate = 1;
        c->use_short_conv = 1;
        break;
    case LINA_MODEL_RETNET:
        c->num_heads = 8;
        c->expand_v = 2.0;
        c->hidden_ratio = 2;
        c->use_output_gate = 1;
        break;
    case LINA_MODEL_LINEAR_ATTN:
        set_str(c->attn_mode, sizeof c->attn_mode, "fused_chunk");
        set_str(c->feature_map, sizeof c->feature_map, "elementwise_product");
        break;
    case LINA_MODEL_TRANSFORMER:
        c->num_heads = 32;
        c->attn_mode[0] = '\0';
        c->rope_theta = 10000.0;
        set_str(c->linear_feature_map, sizeof c->linear_feature_map, "hedgehog");
        c->lora_alpha = 16.0;
        break;
    case LINA_MODEL_FORGETTING_TRANSFORMER: /* FLA's ForgettingTransformerConfig */
        c->num_heads = 32;
        c->attn_mode[0] = '\0';
        break;
    case LINA_MODEL_GSA: /* FLA's GSAConfig */
        c->num_slots = 64;
        c->gate_logit_normalizer = 8.0;
        c->use_norm = 1;
        set_str(c->feature_map, sizeof c->feature_map, "swish");
        c->attn_mode[0] = '\0';
        break;
    case LINA_MODEL_HGRN: /* FLA's HGRNConfig */
        set_str(c->attn_mode, sizeof c->attn_mode, "fused_recurrent");
        c->expand_ratio = 1;
        c->use_lower_bound = 1;
        break;
    case LINA_MODEL_HGRN2:
        c->num_heads = 0; /* derived from expand_ratio */
        c->expand_ratio = 128;
        c->use_lower_bound = 1;
        break;
    case LINA_MODEL_GATED_DELTAPRODUCT: /* the config class's defaults (docs/mixers.md 4.3) */
        c->num_hidden_layers = 21;
        c->num_heads = 6;
        c->head_dim = 256;
        c->expand_v = 2.0;
        c->use_output_gate = 1;
        c->use_short_conv = 1;
        c->num_householder = 1;
        c->use_forget_gate = 0;
        break;
    case LINA_MODEL_MAMBA2:
        c->num_hidden_layers = 48;
        c->num_heads = 0; /* derived: expand * hidden_size / head_dim */
        c->head_dim = 64;
        c->state_size = 128;
        c->expand = 2;
        c->n_groups = 1;
        c->conv_kernel = 4;
        c->use_conv_bias = 1;
        c->use_bias = 0;
        c->rmsnorm = 1;
        c->norm_before_gate = 0;
        c->chunk_size = 256;
        c->residual_in_fp32 = 1;
        c->dt_min = 1e-3;
        c->dt_max = 0.1;
        c->dt_init_floor = 1e-4;
        c->norm_eps = 1e-5;
        c->pad_token_id = 0;
        c->attn_mode[0] = '\0';
        break;
    case LINA_MODEL_MOM:
        c->num_heads = 4;
        c->head_dim = 256;
        c->expand_v = 1.0;
        c->use_output_gate = 1;
        c->use_short_conv = 1;
        c->num_memories = 4;
        c->topk = 2;
        c->capacity = 1.0;
        c->shared_mem = 1;
        c->single_kv_proj = 0;
        c->use_layer_wise_balance = 1;
        c->aux_loss_scale = 0.01;
        set_str(c->mom_backend, sizeof c->mom_backend, "gated_deltanet");
        break;
    case LINA_MODEL_MAMBA: /* FLA's MambaConfig (docs/mixers.md 12) */
        c->num_hidden_layers = 48;
        c->state_size = 16;
        c->expand = 2;
        c->conv_kernel = 4;
        c->use_bias = 0;
        c->use_conv_bias = 1;
        set_str(c->hidden_act, sizeof c->hidden_act, "silu");
        c->residual_in_fp32 = 0;
        c->dt_rank = 0; /* auto */
        c->dt_scale = 1.0;
        c->dt_min = 1e-3;
        c->dt_max = 0.1;
        set_str(c->dt_init_scheme, sizeof c->dt_init_scheme, "random");
        c->dt_init_floor = 1e-4;
        c->norm_eps = 1e-5;
        c->pad_token_id = 0;
        c->attn_mode[0] = '\0';
        break;
    case LINA_MODEL_RWKV7: /* FLA's RWKV7Config */
        c->num_heads = 0; /* null: hidden_size / head_dim */
        c->head_dim = 64;
        c->decay_low_rank_dim = 64;
        c->gate_low_rank_dim = 128;
        c->a_low_rank_dim = 64;
        c->v_low_rank_dim = 16;
        set_str(c->hidden_act, sizeof c->hidden_act, "sqrelu");
        c->norm_first = 1;
        c->norm_bias = 1;
        c->norm_eps = 1e-5;
        c->use_l2warp = 1;
        break;
    case LINA_MODEL_MLSTM:
        c->expand_k = 0.5;
        c->expand_v = 1.0;
        c->use_output_gate = 1;
        break;
    case LINA_MODEL_KDA:
        c->num_heads = 16;
        c->head_dim = 128;
        c->expand_v = 1.0;
        c->use_short_conv = 1;
        break;
    default:
        break;
    }
    return LINA_OK;
}

/* ------------------------------------------------------------- reading */

static const char *json_type(const cJSON *it)
{
    if (cJSON_IsNull(it)) {
        return "null";
    }
    if (cJSON_IsBool(it)) {
        return "a boolean";
    }
    if (cJSON_IsNumber(it)) {
        return "a number";
    }
    if (cJSON_IsString(it)) {
        return "a string";
    }
    if (cJSON_IsArray(it)) {
        return "an array";
    }
    if (cJSON_IsObject(it)) {
        return "an object";
    }
    return "invalid";
}

/* integral JSON number that fits in int */
static int get_int(const cJSON *it, int *v)
{
    if (!cJSON_IsNumber(it)) {
        return 0;
    }
    double x = it->valuedouble;
    if (!(x >= (double)INT_MIN && x <= (double)INT_MAX) || x != floor(x)) {
        return 0;
    }
    *v = (int)x;
    return 1;
}

static int read_key(const keydesc *k, const cJSON *it, lina_config *c, const char *name, const char *where)
{
    char *base = (char *)c;
    void *p = base + k->off;
    int isnull = cJSON_IsNull(it);
    switch (k->kind) {
    case K_INT:
    case K_NINT:
        if (isnull && k->kind == K_NINT) {
            *(int *)p = k->nullv;
            return LINA_OK;
        }
        if ((k->flags & R_LIST) && cJSON_IsArray(it)) {
            if (cJSON_GetArraySize(it) < 1) {
                return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" is an empty list", name, where, k->key);
            }
            it = cJSON_GetArrayItem(it, 0); /* the first of several ids */
        }
        if (!get_int(it, (int *)p)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must be an integer%s (got %s)", name, where,
                                  k->key, k->kind == K_NINT ? " or null" : "",
                                  cJSON_IsNumber(it) ? "a non-integral or out-of-range number" : json_type(it));
        }
        if (k->kind == K_NINT && *(int *)p < 0) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must not be negative (got %d)", name, where,
                                  k->key, *(int *)p);
        }
        return LINA_OK;
    case K_DBL:
    case K_NDBL:
    case K_OPTDBL:
        if (isnull && k->kind != K_DBL) {
            *(double *)p = 0.0;
            if (k->kind == K_OPTDBL) {
                *(int *)(base + k->off2) = 0;
            }
            return LINA_OK;
        }
        if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must be a number%s (got %s)", name, where, k->key,
                                  k->kind == K_DBL ? "" : " or null", json_type(it));
        }
        *(double *)p = it->valuedouble;
        if (k->kind == K_OPTDBL) {
            *(int *)(base + k->off2) = 1;
        }
        return LINA_OK;
    case K_BOOL:
    case K_NBOOL:
    case K_QKBOOL:
        if (isnull && k->kind == K_NBOOL) {
            *(int *)p = 0;
            return LINA_OK;
        }
        if (isnull && k->kind == K_QKBOOL) {
            ((char *)p)[0] = '\0'; /* FLA's qk_norm: null = none */
            return LINA_OK;
        }
        if (!cJSON_IsBool(it)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must be true or false (got %s)", name, where,
                                  k->key, json_type(it));
        }
        if (k->kind == K_QKBOOL) {
            snprintf((char *)p, k->size, "%s", cJSON_IsTrue(it) ? "rms" : "");
        } else {
            *(int *)p = cJSON_IsTrue(it) ? 1 : 0;
        }
        return LINA_OK;
    case K_AUTOINT:
        if (cJSON_IsString(it) && strcmp(it->valuestring, "auto") == 0) {
            *(int *)p = 0;
            return LINA_OK;
        }
        if (!get_int(it, (int *)p) || *(int *)p < 1) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must be \"auto\" or an integer >= 1", name, where,
                                  k->key);
        }
        return LINA_OK;
    case K_STR:
    case K_NSTR:
        if (isnull && k->kind == K_NSTR) {
            ((char *)p)[0] = '\0';
            return LINA_OK;
        }
        if (!cJSON_IsString(it)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" must be a string%s (got %s)", name, where, k->key,
                                  k->kind == K_NSTR ? " or null" : "", json_type(it));
        }
        if (strlen(it->valuestring) >= k->size) {
            return lina_set_error(LINA_EFORMAT, "%s: \"%s%s\" is too long (\"%.40s\")", name, where, k->key,
                                  it->valuestring);
        }
        snprintf((char *)p, k->size, "%s", it->valuestring);
        return LINA_OK;
    default:
        return lina_set_error(LINA_EINVAL, "internal: bad key kind");
    }
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int read_attn_spec(const cJSON *a, lina_config *c, const char *name);

/* "attn": null, one spec, or (FLA's hybrid format) a list of specs. A list is
 * read as one spec over the union of its layers; its specs must agree on
 * everything else (lina has one attention configuration per model). */
static int read_attn(const cJSON *a, lina_config *c, const char *name)
{
    if (!cJSON_IsArray(a)) {
        return read_attn_spec(a, c, name);
    }
    c->attn.enabled = 0;
    int all[LINA_CONFIG_MAX_LAYERS], nall = 0, i = 0, rc;
    lina_config first = *c;
    const cJSON *spec;
    cJSON_ArrayForEach(spec, a)
    {
        if (!cJSON_IsObject(spec)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"attn\" must be an object or null, or a list of objects "
                                  "(entry %d is %s)", name, i, json_type(spec));
        }
        if ((rc = read_attn_spec(spec, c, name))) {
            return rc;
        }
        if (i == 0) {
            first = *c;
        } else if (c->attn.num_heads != first.attn.num_heads || c->attn.num_kv_heads != first.attn.num_kv_heads ||
                   c->attn.qkv_bias != first.attn.qkv_bias || c->attn.window_size != first.attn.window_size ||
                   c->attn.rope_theta != first.attn.rope_theta) {
            return lina_set_error(LINA_EFORMAT, "%s: \"attn\" list entry %d differs from entry 0 in num_heads, "
                                  "num_kv_heads, qkv_bias, window_size or rope_theta (one setting for all attention "
                                  "layers is supported)", name, i);
        }
        if (nall + c->attn.n_layers > LINA_CONFIG_MAX_LAYERS) {
            return lina_set_error(LINA_EFORMAT, "%s: \"attn\" lists more than %d layers", name,
                                  LINA_CONFIG_MAX_LAYERS);
        }
        memcpy(all + nall, c->attn.layers, (size_t)c->attn.n_layers * sizeof(int));
        nall += c->attn.n_layers;
        i++;
    }
    if (i == 0) {
        return LINA_OK; /* an empty list: no attention layers */
    }
    c->attn = first.attn;
    memcpy(c->attn.layers, all, (size_t)nall * sizeof(int));
    c->attn.n_layers = nall;
    qsort(c->attn.layers, (size_t)nall, sizeof(int), cmp_int);
    return LINA_OK;
}

static int read_attn_spec(const cJSON *a, lina_config *c, const char *name)
{
    if (cJSON_IsNull(a)) {
        c->attn.enabled = 0;
        return LINA_OK;
    }
    if (!cJSON_IsObject(a)) {
        return lina_set_error(LINA_EFORMAT, "%s: \"attn\" must be an object or null (got %s)", name, json_type(a));
    }
    c->attn.enabled = 1;
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(a, "layers");
    const cJSON *nh = cJSON_GetObjectItemCaseSensitive(a, "num_heads");
    if (!layers) {
        return lina_set_error(LINA_EFORMAT, "%s: \"attn\" needs \"layers\" (the softmax-attention layer indices)",
                              name);
    }
    if (!nh) {
        return lina_set_error(LINA_EFORMAT, "%s: \"attn\" needs \"num_heads\"", name);
    }
    if (!cJSON_IsArray(layers)) {
        return lina_set_error(LINA_EFORMAT, "%s: \"attn.layers\" must be an array of integers (got %s)", name,
                              json_type(layers));
    }
    if (cJSON_GetArraySize(layers) > LINA_CONFIG_MAX_LAYERS) {
        return lina_set_error(LINA_EFORMAT, "%s: \"attn.layers\" has more than %d entries", name,
                              LINA_CONFIG_MAX_LAYERS);
    }
    c->attn.n_layers = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, layers)
    {
        int v;
        if (!get_int(it, &v)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"attn.layers\" entries must be integers (got %s)", name,
                                  json_type(it));
        }
        c->attn.layers[c->attn.n_layers++] = v;
    }
    qsort(c->attn.layers, (size_t)c->attn.n_layers, sizeof(int), cmp_int);
    static const keydesc ak[] = {
        {"num_heads", K_INT, offsetof(lina_config, attn.num_heads), sizeof(int), M_ALL, 0, 0, 0},
        {"num_kv_heads", K_NINT, offsetof(lina_config, attn.num_kv_heads), sizeof(int), M_ALL, 0, 0, 0},
        {"qkv_bias", K_BOOL, offsetof(lina_config, attn.qkv_bias), sizeof(int), M_ALL, 0, 0, 0},
        {"window_size", K_NINT, offsetof(lina_config, attn.window_size), sizeof(int), M_ALL, 0, 0, 0},
        {"rope_theta", K_NDBL, offsetof(lina_config, attn.rope_theta), sizeof(double), M_ALL, 0, 0, 0},
    };
    c->attn.num_kv_heads = 0;
    c->attn.qkv_bias = 0;
    c->attn.window_size = 0;
    c->attn.rope_theta = 10000.0;
    for (size_t i = 0; i < sizeof ak / sizeof ak[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(a, ak[i].key);
        if (v) {
            int rc = read_key(&ak[i], v, c, name, "attn.");
            if (rc) {
                return rc;
            }
        }
    }
    if (c->attn.num_kv_heads == 0) {
        c->attn.num_kv_heads = c->attn.num_heads;
    }
    return LINA_OK;
}

int lina_config_parse(const char *json, size_t len, const char *name, lina_config *c)
{
    memset(c, 0, sizeof *c);
    if (!name) {
        name = "config.json";
    }
    const char *end = NULL;
    cJSON *root = json ? cJSON_ParseWithLengthOpts(json, len, &end, 0) : NULL;
    if (!root) {
        size_t pos = (json && end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        return lina_set_error(LINA_EFORMAT, "%s: not valid JSON (error near byte %zu)", name, pos);
    }
    for (const char *p = end; p && p < json + len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return lina_set_error(LINA_EFORMAT, "%s: unexpected text after the JSON object", name);
        }
    }
    int rc = LINA_OK;
    if (!cJSON_IsObject(root)) {
        rc = lina_set_error(LINA_EFORMAT, "%s: must be a JSON object", name);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!mt) {
        rc = lina_set_error(LINA_EFORMAT, "%s: missing \"model_type\"", name);
        goto done;
    }
    if (!cJSON_IsString(mt)) {
        rc = lina_set_error(LINA_EFORMAT, "%s: \"model_type\" must be a string (got %s)", name, json_type(mt));
        goto done;
    }
    int t = -1;
    for (int i = 0; i < LINA_MODEL_COUNT; i++) {
        if (strcmp(mt->valuestring, type_names[i]) == 0) {
            t = i;
        }
    }
    if (t < 0) {
        rc = lina_set_error(LINA_EFORMAT,
                            "%s: unknown model_type \"%.40s\" (supported: gla, delta_net, gated_deltanet, "
                            "retnet, linear_attn, transformer, hgrn2, gated_deltaproduct, mamba2, mom, mlstm, kda, mamba, "
                            "forgetting_transformer, hgrn, rwkv7, gsa)",
                            name, mt->valuestring);
        goto done;
    }
    lina_config_default(c, (lina_model_type)t);
    unsigned mask = 1u << t;
    for (int i = 0; i < NKEYS && !rc; i++) {
        if (!(keys[i].types & mask)) {
            continue;
        }
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, keys[i].key);
        if (it) {
            rc = read_key(&keys[i], it, c, name, "");
        }
    }
    if (!rc && (mask & M_LIN)) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "attn");
        if (a) {
            rc = read_attn(a, c, name);
        }
    }
    if (!rc && t == LINA_MODEL_HGRN2) {
        /* FLA: one of expand_ratio / num_heads given; the other is derived */
        if (c->num_heads == 0 && c->expand_ratio == 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: hgrn2 needs \"num_heads\" or \"expand_ratio\"", name);
        } else if (c->num_heads == 0) {
            c->num_heads = c->hidden_size / c->expand_ratio;
        } else if (c->expand_ratio == 0) {
            c->expand_ratio = c->hidden_size / c->num_heads;
        }
    }
    if (!rc && t == LINA_MODEL_MAMBA2 && c->num_heads == 0 && c->head_dim > 0) {
        /* FLA: num_heads = E / head_dim (out of range: left for lina_config_validate to name) */
        long long nh = (long long)c->expand * c->hidden_size / c->head_dim;
        c->num_heads = nh <= INT_MAX ? (int)nh : INT_MAX;
    }
    if (!rc && t == LINA_MODEL_MAMBA) {
        /* FLA stores the derived sizes: intermediate_size = expand * hidden_size,
           dt_rank "auto" = ceil(hidden_size / 16) (out of range: named by lina_config_validate) */
        long long e = (long long)c->expand * c->hidden_size;
        if (c->intermediate_size == 0) {
            c->intermediate_size = e <= INT_MAX ? (int)e : INT_MAX;
        }
        if (c->dt_rank == 0) {
            c->dt_rank = (c->hidden_size + 15) / 16;
        }
    }
    if (!rc && t == LINA_MODEL_RWKV7 && c->num_heads == 0 && c->head_dim > 0) {
        c->num_heads = c->hidden_size / c->head_dim; /* FLA: H = hidden_size // head_dim */
    }
    if (!rc) {
        rc = lina_config_validate(c, name);
    }
done:
    cJSON_Delete(root);
    return rc;
}

int lina_config_read(const char *path, lina_config *c)
{
    memset(c, 0, sizeof *c);
    char *buf;
    size_t n;
    int rc = lina_read_file(path, CFG_MAX_FILE, "config file", &buf, &n);
    if (rc) {
        return rc;
    }
    rc = lina_config_parse(buf, n, path, c);
    free(buf);
    return rc;
}

/* ----------------------------------------------------------- validation */

/* lo <= v <= hi, or an error naming the key */
static int in_range(const char *name, const char *key, long long v, long long lo, long long hi)
{
    if (v < lo || v > hi) {
        return lina_set_error(LINA_EFORMAT, "%s: %s must be in [%lld, %lld] (got %lld)", name, key, lo, hi, v);
    }
    return LINA_OK;
}

/* A width computed in floating point (hidden_size * expand_k, ...), range-checked
 * before it is converted to int: 1 <= w <= LINA_CONFIG_MAX_WIDTH. */
static int width_of(const char *name, const char *what, double w, int *out)
{
    if (!(w >= 1.0) || w > (double)LINA_CONFIG_MAX_WIDTH) {
        return lina_set_error(LINA_EFORMAT, "%s: %s (%g) must be in [1, %d]", name, what, w, LINA_CONFIG_MAX_WIDTH);
    }
    *out = (int)w;
    return LINA_OK;
}

/* per-head size: 1 <= total / heads <= LINA_CONFIG_MAX_HEAD_DIM */
static int head_size(const char *name, const char *what, long long total, long long heads)
{
    if (heads < 1 || total / heads < 1 || total / heads > LINA_CONFIG_MAX_HEAD_DIM) {
        return lina_set_error(LINA_EFORMAT, "%s: the %s per head (%lld / %lld heads) must be in [1, %d]", name,
                              what, total, heads, LINA_CONFIG_MAX_HEAD_DIM);
    }
    return LINA_OK;
}

static int head_split(const char *name, const char *what, int total, int heads)
{
    if (total < 1 || heads < 1 || total % heads != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: %s (%d) is not a positive multiple of the number of heads (%d)",
                              name, what, total, heads);
    }
    return LINA_OK;
}

/* key / value widths hidden_size * expand_k / expand_v: in range, split evenly over the heads */
static int expand_dims(const char *name, const lina_config *c)
{
    int kd = 0, vd = 0, H = c->num_heads;
    int rc = width_of(name, "key dim hidden_size*expand_k", (double)c->hidden_size * c->expand_k, &kd);
    rc = rc ? rc : width_of(name, "value dim hidden_size*expand_v", (double)c->hidden_size * c->expand_v, &vd);
    rc = rc ? rc : head_split(name, "key dim hidden_size*expand_k", kd, H);
    rc = rc ? rc : head_split(name, "value dim hidden_size*expand_v", vd, H);
    rc = rc ? rc : head_size(name, "key dim", kd, H);
    return rc ? rc : head_size(name, "value dim", vd, H);
}

/* head_dim-based models (gated_deltanet, gated_deltaproduct, mom): per-head value
 * size head_dim * expand_v (integral, checked by the caller) and the key / value widths in range */
static int head_dim_widths(const char *name, const lina_config *c)
{
    double hv = c->head_dim * c->expand_v;
    int nv = c->num_v_heads ? c->num_v_heads : c->num_heads;
    int rc = in_range(name, "head_dim * expand_v", (long long)fmin(hv, 1e18), 1, LINA_CONFIG_MAX_HEAD_DIM);
    rc = rc ? rc : width_of(name, "key width num_heads*head_dim", (double)c->num_heads * c->head_dim, &(int){0});
    return rc ? rc : width_of(name, "value width num_v_heads*head_dim*expand_v", (double)nv * hv, &(int){0});
}

/* transformer: the keys of linearized attention and LoRA (src/nn/linattn_layer.c) */
static int linattn_check(const char *name, const lina_config *c, int nkv)
{
    const char *m = c->linear_method;
    if (m[0] && strcmp(m, "lolcats") != 0 && strcmp(m, "liger") != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: linear_method \"%s\" is not one of lolcats, liger, null", name, m);
    }
    if (c->lora_rank < 0 || (c->lora_rank > 0 && !(c->lora_alpha > 0.0))) {
        return lina_set_error(LINA_EFORMAT, "%s: lora_rank must be >= 0 and lora_alpha > 0", name);
    }
    if (!m[0]) {
        return c->lora_rank > 0 ? lina_set_error(LINA_EFORMAT, "%s: lora_rank needs a linear_method (LoRA wraps the "
                                                               "linearized attention layers)", name)
                                : LINA_OK;
    }
    if (strcmp(c->linear_feature_map, "hedgehog") != 0 && strcmp(c->linear_feature_map, "softmax") != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: linear_feature_map \"%s\" is not one of hedgehog, softmax", name,
                              c->linear_feature_map);
    }
    if (c->window_size < 1) {
        return lina_set_error(LINA_EFORMAT, "%s: linear_method needs window_size >= 1 (the softmax window)", name);
    }
    if (nkv != c->num_heads) {
        return lina_set_error(LINA_EFORMAT, "%s: linear_method needs num_kv_heads = num_heads", name);
    }
    if (c->qkv_bias || c->qk_norm[0] || c->use_short_conv) {
        return lina_set_error(LINA_EFORMAT, "%s: linear_method does not take qkv_bias, qk_norm or use_short_conv",
                              name);
    }
    if (!isfinite(c->window_factor) || (!strcmp(m, "liger") && (c->window_factor < 0.0 || c->window_factor > 1.0))) {
        return lina_set_error(LINA_EFORMAT, "%s: window_factor must be finite (liger: in [0, 1])", name);
    }
    return LINA_OK;
}

int lina_config_validate(const lina_config *c, const char *name)
{
    if (!name) {
        name = "config";
    }
    if ((int)c->model_type < 0 || c->model_type >= LINA_MODEL_COUNT) {
        return lina_set_error(LINA_EFORMAT, "%s: invalid model type %d", name, (int)c->model_type);
    }
    /* every dimension within its LINA_CONFIG_MAX_* bound (0 = null where a key may be null) */
    int rc = in_range(name, "hidden_size", c->hidden_size, 1, LINA_CONFIG_MAX_HIDDEN);
    rc = rc ? rc : in_range(name, "num_hidden_layers", c->num_hidden_layers, 1, LINA_CONFIG_MAX_LAYERS);
    rc = rc ? rc : in_range(name, "vocab_size", c->vocab_size, 1, LINA_CONFIG_MAX_VOCAB);
    rc = rc ? rc : in_range(name, "intermediate_size", c->intermediate_size, 0, LINA_CONFIG_MAX_WIDTH);
    rc = rc ? rc : in_range(name, "moe_intermediate_size", c->moe_intermediate_size, 0, LINA_CONFIG_MAX_WIDTH);
    rc = rc ? rc : in_range(name, "num_kv_heads", c->num_kv_heads, 0, LINA_CONFIG_MAX_HEADS);
    rc = rc ? rc : in_range(name, "num_v_heads", c->num_v_heads, 0, LINA_CONFIG_MAX_HEADS);
    rc = rc ? rc : in_range(name, "head_dim", c->head_dim, 0, LINA_CONFIG_MAX_HEAD_DIM);
    rc = rc ? rc : in_range(name, "expand_ratio", c->expand_ratio, 0, LINA_CONFIG_MAX_HEAD_DIM);
    rc = rc ? rc : in_range(name, "state_size", c->state_size, 0, LINA_CONFIG_MAX_HEAD_DIM);
    rc = rc ? rc : in_range(name, "n_groups", c->n_groups, 0, LINA_CONFIG_MAX_HEADS);
    rc = rc ? rc : in_range(name, "expand", c->expand, 0, LINA_CONFIG_MAX_WIDTH);
    rc = rc ? rc : in_range(name, "conv_size", c->conv_size, 1, LINA_CONFIG_MAX_CONV);
    rc = rc ? rc : in_range(name, "conv_kernel", c->conv_kernel, 0, LINA_CONFIG_MAX_CONV);
    rc = rc ? rc : in_range(name, "num_experts", c->num_experts, 0, LINA_CONFIG_MAX_EXPERTS);
    rc = rc ? rc : in_range(name, "num_memories", c->num_memories, 0, LINA_CONFIG_MAX_EXPERTS);
    rc = rc ? rc : in_range(name, "attn.num_heads", c->attn.num_heads, 0, LINA_CONFIG_MAX_HEADS);
    rc = rc ? rc : in_range(name, "attn.num_kv_heads", c->attn.num_kv_heads, 0, LINA_CONFIG_MAX_HEADS);
    /* after expand / expand_ratio / head_dim: hgrn2 and mamba2 derive num_heads from them */
    rc = rc ? rc : in_range(name, "num_heads", c->num_heads, 1, LINA_CONFIG_MAX_HEADS);
    if (rc) {
        return rc;
    }
    if (!(c->expand_k > 0.0) || !(c->expand_v > 0.0) || !isfinite(c->expand_k) || !isfinite(c->expand_v)) {
        return lina_set_error(LINA_EFORMAT, "%s: expand_k and expand_v must be positive (got %g, %g)", name,
                              c->expand_k, c->expand_v);
    }
    if (!(c->norm_eps > 0.0) || !isfinite(c->norm_eps)) {
        return lina_set_error(LINA_EFORMAT, "%s: norm_eps must be positive (got %g)", name, c->norm_eps);
    }
    /* FLA's kernel choices; every one computes the same function (lina picks its own form) */
    if (c->attn_mode[0] && strcmp(c->attn_mode, "chunk") != 0 && strcmp(c->attn_mode, "fused_chunk") != 0 &&
        strcmp(c->attn_mode, "fused_recurrent") != 0 && strcmp(c->attn_mode, "parallel") != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: attn_mode \"%s\" is not one of chunk, fused_chunk, "
                              "fused_recurrent, parallel", name, c->attn_mode);
    }
    if (!(c->hidden_ratio >= 0.0) || lina_config_mlp_size(c) < 1 || lina_config_mlp_size(c) > LINA_CONFIG_MAX_WIDTH) {
        return lina_set_error(LINA_EFORMAT, "%s: hidden_ratio (%g) / intermediate_size (%d) give an MLP width outside "
                              "[1, %d]", name, c->hidden_ratio, c->intermediate_size, LINA_CONFIG_MAX_WIDTH);
    }
    if (c->model_type == LINA_MODEL_RWKV7 ? strcmp(c->hidden_act, "sqrelu") != 0
                                          : strcmp(c->hidden_act, "swish") != 0 && strcmp(c->hidden_act, "silu") != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: hidden_act \"%s\" is not supported (%s)", name, c->hidden_act,
                              c->model_type == LINA_MODEL_RWKV7 ? "sqrelu" : "swish");
    }
    if (c->attnres_block_size != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: attnres_block_size is not supported (must be null)", name);
    }
    if (c->pad_token_id < -1 || c->bos_token_id < -1 || c->eos_token_id < -1) {
        return lina_set_error(LINA_EFORMAT, "%s: token ids must be >= 0 or null", name);
    }
    int H = c->num_heads, D = c->hidden_size;
    int nkv = c->num_kv_heads ? c->num_kv_heads : H;
    switch (c->model_type) {
    case LINA_MODEL_GLA:
    case LINA_MODEL_DELTA_NET:
    case LINA_MODEL_RETNET:
    case LINA_MODEL_LINEAR_ATTN:
    case LINA_MODEL_GSA: {
        rc = expand_dims(name, c);
        if (!rc && (nkv < 1 || H % nkv != 0)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: num_heads (%d) is not a multiple of num_kv_heads (%d)", name, H,
                                nkv);
        }
        if (!rc && c->model_type == LINA_MODEL_DELTA_NET) {
            if (strcmp(c->qk_norm, "l2") != 0 && strcmp(c->qk_norm, "sum") != 0) {
                rc = lina_set_error(LINA_EFORMAT, "%s: qk_norm \"%s\" is not one of l2, sum", name, c->qk_norm);
            } else if (strcmp(c->qk_activation, "silu") != 0 && strcmp(c->qk_activation, "relu") != 0 &&
                       strcmp(c->qk_activation, "elu") != 0 && strcmp(c->qk_activation, "identity") != 0) {
                rc = lina_set_error(LINA_EFORMAT, "%s: qk_activation \"%s\" is not one of silu, relu, elu, identity",
                                    name, c->qk_activation);
            }
        }
        if (!rc && c->model_type == LINA_MODEL_GSA) {
            rc = in_range(name, "num_slots", c->num_slots, 0, LINA_CONFIG_MAX_HEAD_DIM);
            if (!rc && (!(c->gate_logit_normalizer > 0.0) || !isfinite(c->gate_logit_normalizer))) {
                rc = lina_set_error(LINA_EFORMAT, "%s: gate_logit_normalizer must be positive (got %g)", name,
                                    c->gate_logit_normalizer);
            }
            if (!rc && strcmp(c->feature_map, "swish") != 0 && strcmp(c->feature_map, "relu") != 0 &&
                strcmp(c->feature_map, "t2r") != 0) {
                rc = lina_set_error(LINA_EFORMAT, "%s: feature_map \"%s\" is not one of swish, relu, t2r", name,
                                    c->feature_map[0] ? c->feature_map : "null");
            }
        }
        break;
    }
    case LINA_MODEL_GATED_DELTANET:
    case LINA_MODEL_KDA: {
        if (c->model_type == LINA_MODEL_KDA && c->has_lower_bound &&
            (!(c->lower_bound < 0.0) || !isfinite(c->lower_bound))) {
            return lina_set_error(LINA_EFORMAT, "%s: lower_bound must be negative or null (got %g)", name,
                                  c->lower_bound);
        }
        if (c->model_type == LINA_MODEL_KDA && c->safe_gate && !c->has_lower_bound) {
            return lina_set_error(LINA_EFORMAT, "%s: safe_gate needs a lower_bound", name);
        }
        if (c->head_dim < 1 || !(c->expand_v > 0.0)) {
            return lina_set_error(LINA_EFORMAT, "%s: head_dim and expand_v must be positive", name);
        }
        double hv = c->head_dim * c->expand_v;
        if (hv != floor(hv) || hv < 1) {
            return lina_set_error(LINA_EFORMAT, "%s: head_dim * expand_v (%g) is not an integer", name, hv);
        }
        int nv = c->num_v_heads ? c->num_v_heads : H;
        rc = head_dim_widths(name, c);
        if (!rc && nv % H != 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: num_v_heads (%d) is not a multiple of num_heads (%d)", name, nv,
                                H);
        }
        break;
    }
    case LINA_MODEL_TRANSFORMER:
    case LINA_MODEL_FORGETTING_TRANSFORMER:
        rc = head_split(name, "hidden_size", D, H);
        if (!rc && (nkv < 1 || H % nkv != 0)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: num_heads (%d) is not a multiple of num_kv_heads (%d)", name, H,
                                nkv);
        }
        if (!rc && c->window_size < 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: window_size must be positive or null", name);
        }
        if (!rc) {
            rc = linattn_check(name, c, nkv);
        }
        break;
    case LINA_MODEL_HGRN2:
        rc = head_split(name, "hidden_size", D, H);
        if (!rc && c->expand_ratio < 1) {
            rc = lina_set_error(LINA_EFORMAT, "%s: expand_ratio must be >= 1", name);
        }
        rc = rc ? rc : width_of(name, "num_heads*expand_ratio", (double)H * c->expand_ratio, &(int){0});
        break;
    case LINA_MODEL_HGRN:
        if (c->expand_ratio < 1) {
            return lina_set_error(LINA_EFORMAT, "%s: expand_ratio must be >= 1", name);
        }
        rc = width_of(name, "hidden_size*expand_ratio", (double)D * c->expand_ratio, &(int){0});
        break;
    case LINA_MODEL_GATED_DELTAPRODUCT:
    case LINA_MODEL_MOM:
        if (c->head_dim < 1 || !(c->expand_v > 0.0) || c->head_dim * c->expand_v != floor(c->head_dim * c->expand_v)) {
            return lina_set_error(LINA_EFORMAT, "%s: head_dim and head_dim * expand_v must be positive integers", name);
        }
        rc = head_dim_widths(name, c);
        if (!rc && c->model_type == LINA_MODEL_GATED_DELTAPRODUCT &&
            (c->num_householder < 1 || c->num_householder > 16)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: num_householder must be in [1, 16] (got %d)", name,
                                c->num_householder);
        }
        if (!rc && (c->num_v_heads ? c->num_v_heads : H) % H != 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: num_v_heads (%d) is not a multiple of num_heads (%d)", name,
                                c->num_v_heads, H);
        }
        if (!rc && c->model_type == LINA_MODEL_MOM &&
            (c->num_memories < 1 || c->topk < 1 || c->topk > c->num_memories || !(c->aux_loss_scale >= 0.0))) {
            rc = lina_set_error(LINA_EFORMAT, "%s: need 1 <= topk (%d) <= num_memories (%d), aux_loss_scale >= 0",
                                name, c->topk, c->num_memories);
        }
        break;
    case LINA_MODEL_MAMBA2:
        if (c->head_dim < 1 || c->state_size < 1 || c->expand < 1 || c->n_groups < 1 || c->conv_kernel < 1) {
            return lina_set_error(LINA_EFORMAT, "%s: head_dim, state_size, expand, n_groups, conv_kernel must be >= 1",
                                  name);
        }
        int E = 0;
        rc = width_of(name, "expand*hidden_size", (double)c->expand * D, &E);
        rc = rc ? rc : width_of(name, "n_groups*state_size", (double)c->n_groups * c->state_size, &(int){0});
        rc = rc ? rc : in_range(name, "chunk_size", c->chunk_size, 1, LINA_CONFIG_MAX_CHUNK);
        if (!rc && (E % c->head_dim != 0 || (long long)H * c->head_dim != E || H % c->n_groups != 0)) {
            rc = lina_set_error(LINA_EFORMAT,
                                "%s: mamba2 needs num_heads * head_dim == expand * hidden_size (%d * %d vs %d) and "
                                "num_heads a multiple of n_groups (%d)",
                                name, H, c->head_dim, E, c->n_groups);
        }
        if (!rc && !(c->dt_min > 0.0 && c->dt_max >= c->dt_min && c->dt_init_floor > 0.0)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: need 0 < dt_min <= dt_max and dt_init_floor > 0", name);
        }
        break;
    case LINA_MODEL_MLSTM: {
        rc = expand_dims(name, c);
        break;
    }
    case LINA_MODEL_RWKV7: {
        int Vd = c->value_dim ? c->value_dim : D;
        if (c->head_dim < 1 || H < 1 || (long long)H * c->head_dim != D || Vd % H != 0) {
            return lina_set_error(LINA_EFORMAT, "%s: rwkv7 needs num_heads * head_dim == hidden_size (%d * %d vs %d) "
                                  "and value_dim (%d) a multiple of num_heads", name, H, c->head_dim, D, Vd);
        }
        rc = in_range(name, "head_dim", c->head_dim, 1, LINA_CONFIG_MAX_HEAD_DIM);
        rc = rc ? rc : in_range(name, "value_dim", Vd, 1, LINA_CONFIG_MAX_WIDTH);
        rc = rc ? rc : in_range(name, "decay_low_rank_dim", c->decay_low_rank_dim, 1, LINA_CONFIG_MAX_WIDTH);
        rc = rc ? rc : in_range(name, "gate_low_rank_dim", c->gate_low_rank_dim, 1, LINA_CONFIG_MAX_WIDTH);
        rc = rc ? rc : in_range(name, "a_low_rank_dim", c->a_low_rank_dim, 1, LINA_CONFIG_MAX_WIDTH);
        rc = rc ? rc : in_range(name, "v_low_rank_dim", c->v_low_rank_dim, 1, LINA_CONFIG_MAX_WIDTH);
        if (!rc && c->attn.enabled) {
            rc = lina_set_error(LINA_EFORMAT, "%s: rwkv7 with hybrid \"attn\" layers is not supported", name);
        }
        if (!rc && c->num_experts > 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: rwkv7 has its own feed-forward block (num_experts must be null)",
                                name);
        }
        break;
    }
    case LINA_MODEL_MAMBA: {
        if (c->state_size < 1 || c->expand < 1 || c->conv_kernel < 1) {
            return lina_set_error(LINA_EFORMAT, "%s: state_size, expand, conv_kernel must be >= 1", name);
        }
        int E = 0;
        rc = width_of(name, "expand*hidden_size", (double)c->expand * D, &E);
        if (!rc && c->intermediate_size != 0 && c->intermediate_size != E) {
            rc = lina_set_error(LINA_EFORMAT, "%s: mamba's intermediate_size (%d) must equal expand * hidden_size (%d)",
                                name, c->intermediate_size, E);
        }
        rc = rc ? rc : in_range(name, "dt_rank", c->dt_rank, 0, LINA_CONFIG_MAX_WIDTH);
        if (!rc && !(c->dt_min > 0.0 && c->dt_max >= c->dt_min && c->dt_init_floor > 0.0 && c->dt_scale >= 0.0)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: need 0 < dt_min <= dt_max, dt_init_floor > 0 and dt_scale >= 0",
                                name);
        }
        if (!rc && strcmp(c->dt_init_scheme, "random") != 0 && strcmp(c->dt_init_scheme, "constant") != 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: dt_init_scheme must be \"random\" or \"constant\" (got \"%s\")",
                                name, c->dt_init_scheme);
        }
        break;
    }
    default:
        break;
    }
    if (rc) {
        return rc;
    }
    if (c->num_experts < 0 || (c->num_experts > 0 && (c->num_experts_per_tok < 1 ||
                                                      c->num_experts_per_tok > c->num_experts)) ||
        c->moe_intermediate_size < 0 || !(c->router_aux_loss_coef >= 0.0)) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: MoE needs 1 <= num_experts_per_tok (%d) <= num_experts (%d), "
                              "moe_intermediate_size >= 0, router_aux_loss_coef >= 0",
                              name, c->num_experts_per_tok, c->num_experts);
    }
    if (c->attn.enabled) {
        if (!((1u << c->model_type) & M_LIN)) {
            return lina_set_error(LINA_EFORMAT, "%s: \"attn\" (hybrid layers) does not apply to %s", name,
                                  type_names[c->model_type]);
        }
        if (c->attn.n_layers < 0 || c->attn.n_layers > LINA_CONFIG_MAX_LAYERS) {
            return lina_set_error(LINA_EFORMAT, "%s: bad attn layer count", name);
        }
        for (int i = 0; i < c->attn.n_layers; i++) {
            int l = c->attn.layers[i];
            if (l < 0 || l >= c->num_hidden_layers) {
                return lina_set_error(LINA_EFORMAT, "%s: attn layer %d is out of range [0, %d)", name, l,
                                      c->num_hidden_layers);
            }
            if (i && c->attn.layers[i - 1] >= l) {
                return lina_set_error(LINA_EFORMAT, "%s: attn layer %d is listed twice (or unsorted)", name, l);
            }
        }
        int ah = c->attn.num_heads, akv = c->attn.num_kv_heads ? c->attn.num_kv_heads : ah;
        rc = head_split(name, "hidden_size (attn layers)", D, ah);
        if (!rc && (akv < 1 || ah % akv != 0)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: attn.num_heads (%d) is not a multiple of attn.num_kv_heads (%d)",
                                name, ah, akv);
        }
        if (!rc && (c->attn.window_size < 0 || !(c->attn.rope_theta >= 0.0))) {
            rc = lina_set_error(LINA_EFORMAT, "%s: attn.window_size / attn.rope_theta out of range", name);
        }
    }
    return rc;
}

int lina_mlp_width(int hidden_size, double hidden_ratio, int intermediate_size)
{
    if (intermediate_size > 0) {
        return intermediate_size;
    }
    double ratio = hidden_ratio > 0.0 ? hidden_ratio : 4.0;
    double w = floor((double)hidden_size * ratio * 2.0 / 3.0);
    if (!(w >= 0.0) || w > (double)INT_MAX - 256.0) {
        return -1;
    }
    long long iw = (long long)w;
    return (int)(256 * ((iw + 255) / 256));
}

int lina_config_mlp_size(const lina_config *c)
{
    if (c->model_type == LINA_MODEL_RWKV7 && c->intermediate_size <= 0) {
        /* RWKV7FeedForward: int(D * hidden_ratio) rounded up to a multiple of 32 */
        double w = (double)c->hidden_size * (c->hidden_ratio > 0.0 ? c->hidden_ratio : 4.0);
        w = 32.0 * ceil(floor(w) / 32.0);
        return w >= 1.0 && w <= (double)INT_MAX ? (int)w : -1;
    }
    return lina_mlp_width(c->hidden_size, c->hidden_ratio, c->intermediate_size);
}

int lina_config_is_attn_layer(const lina_config *c, int i)
{
    if (c->model_type == LINA_MODEL_TRANSFORMER) {
        return !c->linear_method[0]; /* linearized attention is not softmax attention */
    }
    if (!c->attn.enabled) {
        return 0;
    }
    for (int j = 0; j < c->attn.n_layers; j++) {
        if (c->attn.layers[j] == i) {
            return 1;
        }
    }
    return 0;
}

/* -------------------------------------------------------------- writing */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->oom) {
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 2048;
        while (cap < b->n + n + 1) {
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n + 1);
    b->n += n;
}

static void sb_str(sbuf *b, const char *s)
{
    char esc[8];
    sb_add(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            esc[2] = '\0';
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
        } else {
            esc[0] = (char)*p;
            esc[1] = '\0';
        }
        sb_add(b, esc);
    }
    sb_add(b, "\"");
}

static void sb_int(sbuf *b, int v)
{
    char t[24];
    snprintf(t, sizeof t, "%d", v);
    sb_add(b, t);
}

/* shortest representation that reads back exactly; always with a '.' or exponent */
static void sb_dbl(sbuf *b, double v)
{
    char t[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, v);
        if (strtod(t, NULL) == v) {
            break;
        }
    }
    if (!strpbrk(t, ".eEn")) {
        strcat(t, ".0");
    }
    sb_add(b, t);
}

static void write_key(sbuf *b, const keydesc *k, const lina_config *c, const char *indent)
{
    const char *base = (const char *)c;
    const void *p = base + k->off;
    sb_add(b, indent);
    sb_str(b, k->key);
    sb_add(b, ": ");
    switch (k->kind) {
    case K_INT:
        sb_int(b, *(const int *)p);
        break;
    case K_NINT:
        if (*(const int *)p == k->nullv) {
            sb_add(b, "null");
        } else {
            sb_int(b, *(const int *)p);
        }
        break;
    case K_DBL:
        sb_dbl(b, *(const double *)p);
        break;
    case K_NDBL:
        if (*(const double *)p == 0.0) {
            sb_add(b, "null");
        } else {
            sb_dbl(b, *(const double *)p);
        }
        break;
    case K_OPTDBL:
        if (!*(const int *)(base + k->off2)) {
            sb_add(b, "null");
        } else {
            sb_dbl(b, *(const double *)p);
        }
        break;
    case K_BOOL:
    case K_NBOOL:
        sb_add(b, *(const int *)p ? "true" : "false");
        break;
    case K_QKBOOL:
        sb_add(b, ((const char *)p)[0] ? "true" : "false");
        break;
    case K_AUTOINT:
        if (*(const int *)p == 0) {
            sb_str(b, "auto");
        } else {
            sb_int(b, *(const int *)p);
        }
        break;
    case K_STR:
        sb_str(b, (const char *)p);
        break;
    case K_NSTR:
        if (((const char *)p)[0]) {
            sb_str(b, (const char *)p);
        } else {
            sb_add(b, "null");
        }
        break;
    default:
        break;
    }
}

char *lina_config_json(const lina_config *c)
{
    if ((int)c->model_type < 0 || c->model_type >= LINA_MODEL_COUNT) {
        lina_set_error(LINA_EINVAL, "invalid model type %d", (int)c->model_type);
        return NULL;
    }
    sbuf b = {0};
    unsigned mask = 1u << c->model_type;
    sb_add(&b, "{\n  \"model_type\": ");
    sb_str(&b, type_names[c->model_type]);
    sb_add(&b, ",\n  \"architectures\": [");
    sb_str(&b, arch_names[c->model_type]);
    sb_add(&b, "]");
    for (int i = 0; i < NKEYS; i++) {
        if (!(keys[i].types & mask)) {
            continue;
        }
        if ((keys[i].flags & W_SKIPNULL) && *(const int *)((const char *)c + keys[i].off) == keys[i].nullv) {
            continue;
        }
        if ((keys[i].flags & W_MOE) && c->num_experts <= 0) {
            continue;
        }
        if (((keys[i].flags & W_LINATTN) && !c->linear_method[0]) || ((keys[i].flags & W_LORA) && c->lora_rank <= 0)) {
            continue;
        }
        sb_add(&b, ",\n");
        write_key(&b, &keys[i], c, "  ");
    }
    if (mask & M_LIN) {
        sb_add(&b, ",\n  \"attn\": ");
        if (!c->attn.enabled) {
            sb_add(&b, "null");
        } else {
            sb_add(&b, "{\n    \"layers\": [");
            for (int i = 0; i < c->attn.n_layers; i++) {
                if (i) {
                    sb_add(&b, ", ");
                }
                sb_int(&b, c->attn.layers[i]);
            }
            sb_add(&b, "],\n    \"num_heads\": ");
            sb_int(&b, c->attn.num_heads);
            sb_add(&b, ",\n    \"num_kv_heads\": ");
            sb_int(&b, c->attn.num_kv_heads ? c->attn.num_kv_heads : c->attn.num_heads);
            sb_add(&b, ",\n    \"qkv_bias\": ");
            sb_add(&b, c->attn.qkv_bias ? "true" : "false");
            sb_add(&b, ",\n    \"window_size\": ");
            if (c->attn.window_size) {
                sb_int(&b, c->attn.window_size);
            } else {
                sb_add(&b, "null");
            }
            sb_add(&b, ",\n    \"rope_theta\": ");
            if (c->attn.rope_theta != 0.0) {
                sb_dbl(&b, c->attn.rope_theta);
            } else {
                sb_add(&b, "null");
            }
            sb_add(&b, "\n  }");
        }
    }
    sb_add(&b, "\n}\n");
    if (b.oom) {
        free(b.p);
        lina_set_error(LINA_ENOMEM, "out of memory (config JSON)");
        return NULL;
    }
    return b.p;
}

int lina_config_write(const char *path, const lina_config *c)
{
    int rc = lina_config_validate(c, path);
    if (rc) {
        return rc;
    }
    char *js = lina_config_json(c);
    if (!js) {
        return LINA_ENOMEM;
    }
    lina_afile f;
    rc = lina_afile_open(&f, path);
    if (rc == LINA_OK) {
        lina_afile_write(&f, js, strlen(js));
        rc = lina_afile_commit(&f);
    }
    free(js);
    return rc;
}
