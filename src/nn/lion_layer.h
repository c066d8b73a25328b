/* lion_layer.h -- the LION-S attention layer (docs/mixers.md section 10), a
 * bidirectional (non-causal) layer, lion_layer.c (internal; not public API).
 * There is no causal LM for it: it is used stand-alone (encoders, ViT-style
 * blocks), so it is not a model_type.
 *
 *   qp = x Wq^T (+ bq), kp = x Wk^T (+ bk)          [N, HK]
 *   v  = x Wv^T (+ bv)                               [N, HV]   (no feature map on v)
 *   q  = phi(qp), k = phi(kp) per head,  phi(z) = (SiLU(z) + 1/2) / ||SiLU(z) + 1/2||_2
 *   a  = x Wa^T + ba                                  [N, H]
 *   g  = log(1 - sigmoid(a)) = logsigmoid(-a)          (lambda_t = 1 - sigmoid(a_t), LION-S;
 *                                                      exact, no 1e-7 inside the log)
 *   o_i = sum_j M_ij (q_i.k_j) v_j / sum_j M_ij (q_i.k_j)   over ALL j (lina_lion_fwd, normalize)
 *         M_ij = prod_{m=j..i-1} lambda_m (i > j), prod_{m=i+1..j} lambda_m (i < j), M_ii = 1
 *   y  = RMSNorm(o) * w per head over V  (o_norm; off: y = o)
 *   out = y Wo^T (+ bo)                               [N, D]
 *
 * The decay between query i and key j is the product of the gates of the
 * tokens from the key (inclusive) to the query (exclusive), in both
 * directions (the convention of LION's reference code, docs/mixers.md 10); every
 * token's gate is learned (no gate forced to 1 for a first / CLS token). The
 * phi features are positive, so the denominator is positive; no eps.
 *
 * Names (FLA style; LION's fused qkv.weight [3D, D] is q_proj, k_proj,
 * v_proj stacked, its a_i is a_proj, its proj is o_proj):
 *   q_proj.weight [HK, D], k_proj.weight [HK, D], v_proj.weight [HV, D]
 *   (+ .bias with qkv_bias), a_proj.weight [H, D], a_proj.bias [H],
 *   o_norm.weight [V] (o_norm only), o_proj.weight [D, HV] (+ o_proj.bias [D]
 *   with proj_bias).
 * N = B*T rows; HK = H*K, HV = H*V. */
#ifndef LINA_LION_LAYER_H
#define LINA_LION_LAYER_H

#include "lina.h"

#include <stddef.h>

typedef struct lina_lion_layer_dims {
    int D, H, K, V;
    int qkv_bias;       /* biases on q_proj, k_proj, v_proj */
    int proj_bias;      /* bias on o_proj (LION's proj has one) */
    int o_norm;         /* per-head RMSNorm of the mixer output (not in LION's block) */
    float norm_eps;     /* o_norm eps */
    int chunk;          /* chunk size of the two scans in the chunk form (<= 0: 64) */
} lina_lion_layer_dims;

/* Parameter (or gradient) views; a bias / norm pointer is NULL when absent. */
typedef struct lina_lion_layer_params {
    float *q_proj, *q_bias;   /* [HK, D], [HK] */
    float *k_proj, *k_bias;   /* [HK, D], [HK] */
    float *v_proj, *v_bias;   /* [HV, D], [HV] */
    float *a_proj, *a_bias;   /* [H, D], [H] */
    float *o_norm;            /* [V] */
    float *o_proj, *o_bias;   /* [D, HV], [D] */
} lina_lion_layer_params;

typedef struct lina_lion_layer_acts {
    float *qp, *kp;     /* [N, HK] projections */
    float *q, *k;       /* [N, HK] features phi(qp), phi(kp) */
    float *rq, *rk;     /* [N*H] 1 / ||SiLU + 1/2|| */
    float *v;           /* [N, HV] */
    float *a, *g;       /* [N, H] gate logits and log decays */
    float *o;           /* [N, HV] mixer output */
    float *rstd;        /* [N*H] o_norm statistics */
    float *y;           /* [N, HV] input of o_proj (== o without o_norm) */
} lina_lion_layer_acts;

int lina_lion_layer_check_dims(const lina_lion_layer_dims *d);
size_t lina_lion_layer_acts_floats(const lina_lion_layer_dims *d, int N);
void lina_lion_layer_acts_carve(lina_lion_layer_acts *a, float *buf, const lina_lion_layer_dims *d, int N);
size_t lina_lion_layer_scratch_floats(const lina_lion_layer_dims *d, int N);

/* out [B*T, D] = layer(x [B*T, D]); each sequence of T tokens is mixed as a
 * whole (bidirectional). form: the engine form of the two scans
 * (LINA_FORM_CHUNK or LINA_FORM_RECURRENT; equal results). */
int lina_lion_layer_forward(float *out, lina_lion_layer_acts *a, const float *x, const lina_lion_layer_dims *d,
                            const lina_lion_layer_params *p, int B, int T, lina_form form, lina_ws *ws);
/* dx [B*T, D] and every non-NULL gradient in *gp accumulate; scratch
 * lina_lion_layer_scratch_floats floats. */
int lina_lion_layer_backward(float *dx, lina_lion_layer_params *gp, const float *dout, const float *x,
                             const lina_lion_layer_acts *a, const lina_lion_layer_dims *d,
                             const lina_lion_layer_params *p, int B, int T, float *scratch, lina_form form,
                             lina_ws *ws);

#endif
