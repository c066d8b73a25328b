/* dp_layer.h -- FLA's GatedDeltaProduct layer (docs/mixers.md section 4.3),
 * dp_layer.c (internal; not public API):
 *
 *   q  = L2Norm(SiLU(conv(x Wq^T)))                       [N, H*K]
 *   k  = L2Norm(SiLU(conv(x Wk^T)))                       [N, n*H*K]  features (j, h, d)
 *   v  = SiLU(conv(x Wv^T))                               [N, n*HV*V] features (j, h, d)
 *   (without short convs: SiLU on the projections; the convs run over all
 *    n*H*K / n*HV*V channels before the split into sub-steps)
 *   beta = sigmoid(x Wb^T) (x2 with allow_neg_eigval)     [N, n*HV]
 *   g = -exp(A_log) softplus(x Wa^T + dt_bias)            [N, HV]   (use_forget_gate only)
 *   o = delta product(q, k, v, beta, g), n sub-steps per token (lina_delta_fwd, scale K^-1/2)
 *   y = FusedRMSNormGated(o, x Wg^T) per value head (use_gate), else RMSNorm(o)
 *   out = y Wo^T
 *
 * Row t of [N, n*C] is rows t*n + j (j = sub-step) of [N*n, C]: exactly the
 * kernel's interleaved layout. GVA: HV value heads (a multiple of H); value
 * head j reads q/k head j / (HV/H). N = B*T; HK = H*K, VK = HV*K, VV = HV*V.
 * The decode state is the conv tails q [B,HK,W], k [B,n*HK,W], v [B,n*VV,W]
 * (with short convs) followed by the recurrent state [B,HV,K,V].
 */
#ifndef LINA_DP_LAYER_H
#define LINA_DP_LAYER_H

#include "lina.h"

#include <stddef.h>

typedef struct lina_dp_dims {
    int D;              /* model width */
    int H, HV;          /* q/k heads, value heads (HV a multiple of H) */
    int K, V;           /* head_dim, head_dim * expand_v */
    int n;              /* num_householder */
    int use_forget_gate;
    int use_gate;       /* output gate: g_proj + FusedRMSNormGated */
    int use_short_conv;
    int conv_size;      /* W */
    int allow_neg_eigval;
    float norm_eps;
} lina_dp_dims;

/* Parameter (or gradient) views; FLA names under model.layers.{i}.attn. */
typedef struct lina_dp_params {
    float *q_proj;      /* [HK, D] */
    float *k_proj;      /* [n*HK, D] */
    float *v_proj;      /* [n*VV, D] */
    float *b_proj;      /* [n*HV, D] */
    float *a_proj;      /* [HV, D]   (forget gate) */
    float *A_log;       /* [HV]      (forget gate) */
    float *dt_bias;     /* [HV]      (forget gate) */
    float *q_conv;      /* [HK, W]   q_conv1d.weight [HK, 1, W] (short convs) */
    float *k_conv;      /* [n*HK, W] */
    float *v_conv;      /* [n*VV, W] */
    float *g_proj;      /* [VV, D]   (output gate) */
    float *o_norm;      /* [V] */
    float *o_proj;      /* [D, VV] */
} lina_dp_params;

typedef struct lina_dp_acts {
    float *qp, *kp, *vp; /* [N,HK], [N,n*HK], [N,n*VV] projections */
    float *qc, *kc;      /* conv (or SiLU) outputs before the L2Norms */
    float *qn, *kn;      /* [N,HK], [N,n*HK] L2-normalised */
    float *rq, *rk;      /* [N*H], [N*n*H] L2Norm statistics */
    float *qe, *ke;      /* [N,VK], [N,n*VK] kernel q, k (== qn, kn without GVA) */
    float *v;            /* [N,n*VV] kernel v */
    float *a, *g;        /* [N,HV] gate logits and log decay (forget gate) */
    float *bl, *beta;    /* [N,n*HV] */
    float *gate;         /* [N,VV] output gate */
    float *o;            /* [N,VV] kernel output */
    float *rstd;         /* [N*HV] */
    float *y;            /* [N,VV] input of o_proj */
} lina_dp_acts;

int lina_dp_check_dims(const lina_dp_dims *d);
size_t lina_dp_acts_floats(const lina_dp_dims *d, int N);
void lina_dp_acts_carve(lina_dp_acts *a, float *buf, const lina_dp_dims *d, int N);
size_t lina_dp_scratch_floats(const lina_dp_dims *d, int N);
size_t lina_dp_state_floats(const lina_dp_dims *d, int B);

/* out [B*T, D] = layer(x [B*T, D]). state: NULL (zero state, nothing kept)
 * or lina_dp_state_floats floats, read before and overwritten after. */
int lina_dp_forward(float *out, lina_dp_acts *a, const float *x, const lina_dp_dims *d, const lina_dp_params *p,
                    int B, int T, float *state, lina_form form, lina_ws *ws);
/* dx and every non-NULL view of *gp accumulate; x, a as in a forward with
 * state NULL; scratch lina_dp_scratch_floats floats. */
int lina_dp_backward(float *dx, lina_dp_params *gp, const float *dout, const float *x, const lina_dp_acts *a,
                     const lina_dp_dims *d, const lina_dp_params *p, int B, int T, float *scratch, lina_form form,
                     lina_ws *ws);

#endif
