/* moe_mlp.h -- the top-k mixture-of-experts feed-forward block and the
 * softmax top-k router it shares with MoM (moe_mlp.c; internal, not public
 * API).
 *
 * MoE block (every model type when num_experts > 0), names under
 * model.layers.{i}.mlp.:
 *
 *   p = softmax(x Wr^T)                      [N, E]   gate.weight [E, D]
 *   S = the k largest p (k = num_experts_per_tok), w_e = p_e / sum_{e' in S} p_e'
 *   y = sum_{e in S} w_e * W_down,e (silu(W_gate,e x) * (W_up,e x))
 *        experts.{e}.gate_proj.weight [I, D], experts.{e}.up_proj.weight [I, D],
 *        experts.{e}.down_proj.weight [D, I]   (I = moe_intermediate_size, or
 *        lina_config_mlp_size when 0)
 *   aux = router_aux_loss_coef / L_moe * E * sum_e f_e P_e
 *        f_e = share of the N tokens that have e among their k (sum_e f_e = k),
 *        P_e = mean_n p[n, e]; L_moe = number of layers with the block, so the
 *        model's total is the mean over layers (k * coef at perfect balance).
 *
 * Tokens are gathered per expert (slot rows sorted by expert, then token) and
 * each expert runs as dense GEMMs over its rows. The top-k choice is constant
 * for the gradient; w and the aux loss carry gradient into the router.
 */
#ifndef LINA_MOE_MLP_H
#define LINA_MOE_MLP_H

#include "kind.h"
#include "nn.h"

#include <stdint.h>

/* --------------------------------------------------------------- router */

/*
 * p [N, E] = softmax of logits [N, E] (in double; p may alias logits);
 * sel [N, k] = the k largest p per row, largest first (ties: lower index);
 * w [N, k] = p[sel] renormalised to sum 1. 1 <= k <= E.
 */
void lina_router_topk(float *p, float *w, int32_t *sel, const float *logits, int N, int E, int k);

/*
 * Slot rows: the N*k (token, choice) pairs sorted by (choice, sequence,
 * time); B sequences of T tokens (N = B*T). Writes
 *   perm [N*k]  token row of each slot row,
 *   pos  [N*k]  slot row of pair (n, j) at n*k + j,
 *   wr   [N*k]  routing weight of each slot row,
 *   off  [E*B + 1]  block (e, b) = slot rows [off[e*B + b], off[e*B + b + 1]).
 */
void lina_router_layout(int32_t *perm, int32_t *pos, float *wr, int32_t *off, const int32_t *sel, const float *w,
                        int B, int T, int E, int k);

/* E * sum_e f_e P_e (f_e: share of rows with e among sel, P_e: mean p). */
double lina_router_balance(const float *p, const int32_t *sel, int N, int E, int k);

/*
 * dlogits [N, E] (written) from dw [N, k] (gradient of w) and the balance
 * term: daux = d loss / d(E sum_e f_e P_e) (0: none). The top-k choice is
 * constant. dlogits may alias nothing else.
 */
void lina_router_backward(float *dlogits, const float *p, const float *w, const int32_t *sel, const float *dw,
                          double daux, int N, int E, int k);

/* ------------------------------------------------------------ MoE block */

#define LINA_MOE_MAX_EXPERTS ((LINA_MIXER_MAX_SLOTS - 1) / 3)

typedef struct lina_moe_dims {
    int D, E, k, I;      /* width, experts, experts per token, expert width */
    double aux_coef;     /* router_aux_loss_coef / number of MoE layers */
} lina_moe_dims;

#endif
