/* mom_layer.h -- MoM, mixture of memories (docs/mixers.md 7; FLA's MomAttention
 * with Gated DeltaNet memories), mom_layer.c, as a plug-in mixer kind
 * (kind.h) of model_type "mom" (internal; not public API).
 *
 *   p = softmax(x Wr^T) [N, M] (float32 router);  S_t = the top-k memories of
 *   token t, w_{t,m} = p_{t,m} / sum_{m' in S_t} p_{t,m'}
 *   memory m: a Gated DeltaNet (docs/mixers.md 4.2) over the sub-sequence of the
 *     tokens routed to it (time order, per sequence of the batch): shared
 *     q_proj and short convs (SiLU; the convs see neighbours *within* the
 *     sub-sequence), its own k/v/b/a projections, shared A_log and dt_bias,
 *     L2-normalised q and k, scale K^-1/2, beta = sigmoid(b) (x2 with
 *     allow_neg_eigval); its state decays only at its own tokens
 *   shared memory (shared_mem): the same over every token with
 *     shared_k/shared_v/shared_b/shared_a (single_kv_proj: every memory uses
 *     those), added with weight 1
 *   O_t = sum_{m in S_t} w_{t,m} o_t^(m) + o_t^(shared)
 *   out = o_proj(FusedRMSNormGated(O_t, g_proj x_t)) per head  (RMSNorm * w
 *     without use_gate)
 *   aux = aux_loss_scale / L_mom * M * sum_m f_m P_m, per layer: f_m = share of
 *     the N tokens with m among their top-k (sum_m f_m = k), P_m = mean p;
 *     L_mom = number of MoM layers, so the model's total is the mean over
 *     layers ("layer-wise balance").
 *
 * Gradients flow through every weight, the renormalised routing weights and
 * the router softmax (top-k choice constant) and through aux. capacity is
 * accepted and ignored: no token is dropped (FLA's layer ignores it too).
 *
 * Tensors under model.layers.{i}.attn. (H heads, K = head_dim,
 * V = head_dim * expand_v, HK = H*K, HV = H*V, W = conv_size):
 *   q_proj.weight [HK, D], gate.weight [M, D],
 *   k_proj.{m}.weight [HK, D], v_proj.{m}.weight [HV, D],
 *   b_proj.{m}.weight [H, D], a_proj.{m}.weight [H, D]   (m < M; not with single_kv_proj),
 *   shared_k.weight [HK, D], shared_v.weight [HV, D], shared_b.weight [H, D],
 *   shared_a.weight [H, D]                 (shared_mem or single_kv_proj),
 *   A_log [H], dt_bias [H], q_conv1d.weight [HK, 1, W], k_conv1d.weight [HK, 1, W],
 *   v_conv1d.weight [HV, 1, W] (use_short_conv), g_proj.weight [HV, D] (use_gate),
 *   o_norm.weight [V], o_proj.weight [D, HV].
 *
 * Decode state per layer, constant in T: for each memory (the shared one
 * last) and each sequence b: conv tails q [HK, W], k [HK, W], v [HV, W]
 * (use_short_conv) and the state [H, K, V].
 */
#ifndef LINA_MOM_LAYER_H
#define LINA_MOM_LAYER_H

#include "kind.h"
#include "nn.h"

/* tensor slots 0..13 are shared; memory m uses 14 + 4m .. 17 + 4m */
#define LINA_MOM_MAX_MEMORIES ((LINA_MIXER_MAX_SLOTS - 14) / 4)

typedef struct lina_mom_dims {
    int D, H, K, V;       /* width; heads; key and value dims per head */
    int M, topk;          /* memories; memories per token */
    int shared_mem;       /* one more memory over every token */
    int single_kv_proj;   /* the routed memories use shared_k/v/b/a */
    int use_gate;         /* g_proj + FusedRMSNormGated (else RMSNorm) */
    int use_short_conv, conv_size;
    int allow_neg_eigval; /* beta = 2 sigmoid(b) */
    float norm_eps;
    double aux_coef;      /* aux_loss_scale / number of MoM layers */
} lina_mom_dims;

#endif
