/* la_layer.h -- FLA's LinearAttention layer (docs/mixers.md section 3.3), la_layer.c
 * (internal; not public API):
 *
 *   q = x Wq^T [N, H*K],  k = x Wk^T [N, Hkv*K],  v = x Wv^T [N, Hkv*V]
 *   use_short_conv: q, k, v <- SiLU(ShortConvolution(.)) over all channels
 *   ({q,k,v}_conv1d.weight [C, 1, W]; a lina option, FLA's layer has none)
 *   q' = phi_q(q), k' = phi_k(k) per head (feature map, K -> F features)
 *   norm_q / norm_k:  x <- x / (sum_i x_i + 1e-4)
 *   k, v repeated over the kv groups (query head j reads kv head j / (H/Hkv))
 *   o = linear attention(q', k', v), scale F^-1/2   (lina_dd_fwd, no gate)
 *   normalize (norm_feature_map):  o_t <- o_t / (scale q'_t . z_t + 1e-10),
 *                                  z_t = z_0 + sum_{s<=t} k'_s
 *   y = RMSNorm(o) per head over V (weight norm.weight unless !affine)
 *   out = y Wo^T
 *
 * Feature maps (FLA's versions; z a head vector of size K):
 *   identity  phi = z                                    F = K
 *   elu       phi = elu(z) + 1                           F = K
 *   relu      phi = max(z, 0)                            F = K
 *   elementwise_product  (W1 z + b1) * (W2 z + b2)       F = K   layer1.{weight,bias}, layer2.{weight,bias}
 *   hedgehog  u = W z + b, phi = softmax([2u, -2u])      F = 2K  layer.{weight,bias}
 *   t2r       phi = relu(W z)                            F = K   layer.weight
 *   dpfp      r = [relu(z), -relu(z)] (2K),
 *             phi[(j-1)*2K + i] = r[i] * r[(i - j) mod 2K], j = 1..4    F = 8K
 * With tie_feature_map_qk the k map uses the q map's parameters.
 *
 * N = B*T rows; HQ = H*K, GK = Hkv*K, GV = Hkv*V, HF = H*F, GF = Hkv*F,
 * HV = H*V. The decode state is [B,H,F,V] followed (normalize) by z [B,H,F], then
 * (use_short_conv) the conv tails q [B,HQ,W], k [B,GK,W], v [B,GV,W].
 */
#ifndef LINA_LA_LAYER_H
#define LINA_LA_LAYER_H

#include "lina.h"
#include "kind.h"

#include <stddef.h>

typedef enum lina_la_fmap {
    LINA_LA_FM_IDENTITY = 0,
    LINA_LA_FM_ELU = 1,
    LINA_LA_FM_RELU = 2,
    LINA_LA_FM_HADAMARD = 3, /* "elementwise_product" */
    LINA_LA_FM_HEDGEHOG = 4,
    LINA_LA_FM_T2R = 5,
    LINA_LA_FM_DPFP = 6
} lina_la_fmap;

#define LINA_LA_DPFP_NU 4

/* "elu" -> LINA_LA_FM_ELU, ...; LINA_EINVAL with a message naming the
 * accepted values for anything else (also NULL or ""). */
int lina_la_fmap_parse(const char *name, int *fmap);
/* Feature dim F of map fmap on head vectors of size K. */
int lina_la_fmap_dim(int fmap, int K);
/* Parameters of the map: 0 none, 1 one Linear (hedgehog with bias, t2r
 * without), 2 two Linears with bias (elementwise_product). */
int lina_la_fmap_linears(int fmap);

typedef struct lina_la_dims {
    int D;              /* model width */
    int H, Hkv;         /* query heads, kv heads (H a multiple of Hkv) */
    int K, V;           /* head_k_dim (before the map), head_v_dim */
    int F;              /* feature dim after the map (lina_la_fmap_dim) */
    int fmap;           /* lina_la_fmap */
    int tie;            /* tie_feature_map_qk: one set of map parameters */
    int norm_q, norm_k;
    int normalize;      /* norm_feature_map */
    int affine;         /* output RMSNorm has a weight (elementwise_affine) */
    float norm_eps;
    int use_short_conv; /* SiLU short convs on the q, k, v projections */
    int conv_size;      /* W */
} lina_la_dims;

/* Parameter (or gradient) views; FLA names under model.layers.{i}.attn. */
typedef struct lina_la_params {
    float *q_proj;      /* [HQ, D] */
    float *k_proj;      /* [GK, D] */
    float *v_proj;      /* [GV, D] */
    float *fq_w1, *fq_b1; /* feature_map_q.layer1 (elementwise_product) or .layer: [K, K], [K] */
    float *fq_w2, *fq_b2; /* feature_map_q.layer2 (elementwise_product) */
    float *fk_w1, *fk_b1, *fk_w2, *fk_b2; /* feature_map_k.* (the q views when tied) */
    float *norm_w;      /* [V] norm.weight, NULL without affine */
    float *o_proj;      /* [D, HV] */
    float *q_conv, *k_conv, *v_conv; /* [HQ, W], [GK, W], [GV, W] (use_short_conv only) */
} lina_la_params;

/* What the forward keeps for backward. */
typedef struct lina_la_acts {
    float *qp, *kp;     /* [N, HQ], [N, GK] projections (map inputs) */
    float *vv;          /* [N, GV] projected values */
    float *q1, *q2;     /* [N*H, K] each: the q map's Linear outputs (elementwise_product:
                           both; t2r: q1; other maps: unused) */
    float *k1, *k2;     /* [N*Hkv, K] each */
    float *qf, *kf;     /* [N, HF], [N, GF] map outputs */
    float *q, *kn;      /* [N, HF], [N, GF] after norm_q / norm_k (== qf, kf without) */
    float *k, *v;       /* [N, HF], [N, HV] kernel inputs (== kn, vv without groups) */
    float *num;         /* [N, HV] kernel output */
    float *den;         /* [N*H] normaliser scale q.z + 1e-10 (normalize only) */
    float *o;           /* [N, HV] normalised output (== num without normalize) */
    float *rstd;        /* [N*H] */
    float *y;           /* [N, HV] input of o_proj */
    float *qc, *kc, *vc; /* [N, HQ], [N, GK], [N, GV] projections before the short convs
                            (== qp, kp, vv without convs) */
} lina_la_acts;

int lina_la_check_dims(const lina_la_dims *d);
size_t lina_la_acts_floats(const lina_la_dims *d, int N);
void lina_la_acts_carve(lina_la_acts *a, float *buf, const lina_la_dims *d, int N);
size_t lina_la_scratch_floats(const lina_la_dims *d, int N);
/* Decode state floats: B*H*F*V (+ B*H*F with normalize, + the conv tails). */
size_t lina_la_state_floats(const lina_la_dims *d, int B);

/* out [B*T, D] = layer(x [B*T, D]). state: NULL (zero initial state, nothing
 * kept) or lina_la_state_floats floats read as the initial state and
 * overwritten with the final one. sp: one piece of sequence-parallel
 * sequences (kind.h; not with norm_feature_map), or NULL. */
int lina_la_forward(float *out, lina_la_acts *a, const float *x, const lina_la_dims *d, const lina_la_params *p,
                    int B, int T, float *state, const lina_sp *sp, lina_form form, lina_ws *ws);
/* dx [B*T, D] and every non-NULL view of *gp accumulate; dout [B*T, D]; x, a
 * as in a forward with state NULL; scratch lina_la_scratch_floats floats. */
int lina_la_backward(float *dx, lina_la_params *gp, const float *dout, const float *x, const lina_la_acts *a,
                     const lina_la_dims *d, const lina_la_params *p, int B, int T, float *scratch,
                     const lina_sp *sp, lina_form form, lina_ws *ws);

#endif
