/* mlstm_layer.h -- the mLSTM layer (docs/mixers.md section 5, the xLSTM-7B
 * mLSTMLayer) in FLA's LM frame, mlstm_layer.c (internal; not public API).
 *
 *   q = x Wq^T, k = x Wk^T                               [N, HK]
 *   v = x Wv^T                                           [N, HV]
 *   (use_short_conv: SiLU(causal depthwise conv) on each of q, k, v, as FLA's layers)
 *   i = cap(x Wi^T + bi),  f = cap(x Wf^T + bf)          [N, H],  cap(z) = 15 tanh(z / 15)
 *   o = mLSTM(q, k, v, i, f)      stabilised cell, sigmoid forget gate
 *                                 (lina_mlstm_fwd; key scale K^-1/2, eps 1e-6)
 *   hn = LayerNorm(o) per head over V (mean and variance, no bias) * w   w [HV]
 *   y = sigmoid(x Wog^T) * hn     (use_output_gate; else y = hn)
 *   out = y Wout^T                                       [N, D]
 *
 * N = B*T rows; H heads, K = D*expand_k/H, V = D*expand_v/H per head;
 * HK = H*K, HV = H*V; LayerNorm eps = norm_eps.
 *
 * Tensor names under model.layers.{i}.attn. (xLSTM-7B's mlstm_layer names):
 *   q.weight [HK, D], k.weight [HK, D], v.weight [HV, D],
 *   igate_preact.weight [H, D], igate_preact.bias [H],
 *   fgate_preact.weight [H, D], fgate_preact.bias [H],
 *   ogate_preact.weight [HV, D]          (use_output_gate only),
 *   multihead_norm.weight [HV], out_proj.weight [D, HV],
 *   q_conv1d.weight [HK, 1, W], k_conv1d.weight [HK, 1, W],
 *   v_conv1d.weight [HV, 1, W]           (use_short_conv only; no bias).
 *
 * Decode state per layer (constant in T): C [B,H,K,V], n [B,H,K], m [B,H],
 * then the conv tails [B,HK,W], [B,HK,W], [B,HV,W] with short convs. */
#ifndef LINA_MLSTM_LAYER_H
#define LINA_MLSTM_LAYER_H

#include "lina.h"
#include "kind.h"

#include <stddef.h>

#define LINA_MLSTM_GATE_CAP 15.0f

typedef struct lina_mlstm_layer_dims {
    int D, H, K, V;
    int output_gate;    /* use_output_gate: ogate_preact + sigmoid gate */
    int use_short_conv;
    int conv_size;      /* W */
    float norm_eps;     /* multihead_norm eps */
} lina_mlstm_layer_dims;

/* Parameter (or gradient) views. */
typedef struct lina_mlstm_layer_params {
    float *q, *k;       /* [HK, D] */
    float *v;           /* [HV, D] */
    float *wi, *bi;     /* [H, D], [H]  igate_preact */
    float *wf, *bf;     /* [H, D], [H]  fgate_preact */
    float *wog;         /* [HV, D]      ogate_preact (output gate only, else NULL) */
    float *norm_w;      /* [HV]         multihead_norm */
    float *out_proj;    /* [D, HV] */
    float *q_conv, *k_conv; /* [HK, W] (short conv only) */
    float *v_conv;      /* [HV, W] */
} lina_mlstm_layer_params;

/* What the forward keeps for backward (views into one caller buffer). */
typedef struct lina_mlstm_layer_acts {
    float *qc, *kc;     /* [N, HK] projections before the convs (== q, k without) */
    float *vc;          /* [N, HV] */
    float *q, *k;       /* [N, HK] cell inputs */
    float *v;           /* [N, HV] */
    float *ip, *fp;     /* [N, H] gate pre-activations before the cap */
    float *i, *f;       /* [N, H] capped (cell inputs) */
    float *og;          /* [N, HV] output-gate logits (output gate only) */
    float *o;           /* [N, HV] cell output */
    float *mu, *rstd;   /* [N*H] norm statistics */
    float *hn;          /* [N, HV] normalised (== y without output gate) */
    float *y;           /* [N, HV] input of out_proj */
} lina_mlstm_layer_acts;

int lina_mlstm_layer_check_dims(const lina_mlstm_layer_dims *d);
size_t lina_mlstm_layer_acts_floats(const lina_mlstm_layer_dims *d, int N);
void lina_mlstm_layer_acts_carve(lina_mlstm_layer_acts *a, float *buf, const lina_mlstm_layer_dims *d, int N);
size_t lina_mlstm_layer_scratch_floats(const lina_mlstm_layer_dims *d, int N);
/* Floats of the decode state (C, n, m, conv tails) for batch B. */
size_t lina_mlstm_layer_state_floats(const lina_mlstm_layer_dims *d, int B);

/* out [B*T, D] = layer(x [B*T, D]). state (lina_mlstm_layer_state_floats, or
 * NULL = zero initial state, nothing kept): read as the initial C, n, m and
 * conv tails, overwritten with the final ones. sp: NULL, or one piece of
 * sequence-parallel sequences (kind.h; no state then). */
int lina_mlstm_layer_forward(float *out, lina_mlstm_layer_acts *a, const float *x, const lina_mlstm_layer_dims *d,
                             const lina_mlstm_layer_params *p, int B, int T, float *state, const lina_sp *sp,
                             lina_form form, lina_ws *ws);
/* dx and every non-NULL gradient in *gp accumulate (forward run without a
 * state); scratch lina_mlstm_layer_scratch_floats floats. */
int lina_mlstm_layer_backward(float *dx, lina_mlstm_layer_params *gp, const float *dout, const float *x,
                              const lina_mlstm_layer_acts *a, const lina_mlstm_layer_dims *d,
                              const lina_mlstm_layer_params *p, int B, int T, float *scratch, const lina_sp *sp,
                              lina_form form, lina_ws *ws);

#endif
