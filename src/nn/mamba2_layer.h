/* mamba2_layer.h -- FLA's Mamba2 mixer (docs/mixers.md section 6), mamba2_layer.c
 * (internal; its plug-in table, kind.h, is at the end of mamba2_layer.c).
 *
 *   [z | xBC | dt] = x Win^T (+ bin)           z [E], xBC [E + 2GN], dt [H]
 *   xBC = SiLU(causal depthwise conv(xBC) + conv bias)      kernel W
 *   x [H, P], B [G, N], C [G, N] = split(xBC); head h reads group h / (H/G)
 *   delta = softplus(dt + dt_bias),  A = -exp(A_log)
 *   a_t = exp(delta A)               (decay in (0, 1])
 *   a_t = 2 exp(delta A) - 1         (allow_neg_eigval: decay in (-1, 1],
 *                                     Grazzi et al., docs/tasks.md 2.1)
 *   S_t = a_t S_{t-1} + B_t (delta x_t)^T,  y_t = S_t^T C_t + D x_t   (S [N, P])
 *   rmsnorm, !norm_before_gate: yn = RMSNorm_G(y * silu(z)) * w   (groups of E/G)
 *   rmsnorm,  norm_before_gate: yn = RMSNorm_G(y) * w * silu(z)
 *   !rmsnorm:                   yn = y * silu(z)        (no norm.weight)
 *   out = yn Wout^T (+ bout)
 *
 * The recurrence runs on the diagonal-decay engine (lina_dd_fwd/bwd, scalar
 * gate, scale 1) as linear attention with q = C, k = B, v = delta x and log
 * gate g = delta A. Negative decays: with a_t = s_t |a_t| (s_t = +-1) and
 * sigma_t = s_1 ... s_t, S'_t = sigma_t S_t obeys S'_t = |a_t| S'_{t-1} +
 * sigma_t k_t v_t^T and y_t = S'^T_t (sigma_t q_t): the engine runs with
 * g = max(log|a_t|, LINA_MAMBA2_LOG_DECAY_MIN), k' = sigma k, q' = sigma q,
 * and the returned state is multiplied by sigma_T. The gradient flows through
 * |a_t| only (the sign is piecewise constant) and is zero where the clamp is
 * active (|a_t| < e^-30).
 *
 * Symbols: D model width, E = H*P inner width, H heads of size P, N state
 * size, G groups, W conv kernel, Cc = E + 2GN conv channels, Din = 2E + 2GN
 * + H in_proj rows; rows R = B*T, token-major.
 */
#ifndef LINA_MAMBA2_LAYER_H
#define LINA_MAMBA2_LAYER_H

#include "lina.h"
#include "kind.h"

#include <stddef.h>

#define LINA_MAMBA2_LOG_DECAY_MIN (-30.0f) /* clamp of log|a_t| with allow_neg_eigval */

typedef struct lina_mamba2_dims {
    int D, H, P, N, G, W;
    int use_conv_bias;    /* conv1d.bias */
    int use_bias;         /* in_proj.bias, out_proj.bias */
    int rmsnorm;          /* grouped gated RMSNorm with norm.weight [E] */
    int norm_before_gate;
    int D_has_hdim;       /* D [E] instead of [H] */
    int allow_neg_eigval; /* decay 2 exp(delta A) - 1 in (-1, 1] */
    int chunk;            /* chunk size of the chunk form */
    float norm_eps;
} lina_mamba2_dims;

/* Parameter (or gradient) views; FLA names under backbone.layers.{i}.mixer. */
typedef struct lina_mamba2_params {
    float *in_proj;       /* [Din, D]   in_proj.weight */
    float *in_bias;       /* [Din]      in_proj.bias (use_bias), else NULL */
    float *conv_w;        /* [Cc, W]    conv1d.weight (FLA [Cc, 1, W]) */
    float *conv_b;        /* [Cc]       conv1d.bias (use_conv_bias), else NULL */
    float *dt_bias;       /* [H] */
    float *A_log;         /* [H] */
    float *Dskip;         /* [H] or [E] (D_has_hdim)   D */
    float *norm_w;        /* [E]        norm.weight (rmsnorm), else NULL */
    float *out_proj;      /* [D, E]     out_proj.weight */
    float *out_bias;      /* [D]        out_proj.bias (use_bias), else NULL */
} lina_mamba2_params;

/* What the forward keeps for backward (views into one caller buffer). */
typedef struct lina_mamba2_acts {
    float *z;             /* [R, E]    gate branch of in_proj */
    float *xpre;          /* [R, Cc]   xBC before the conv */
    float *dtr;           /* [R, H]    dt before softplus (without dt_bias) */
    float *xbc;           /* [R, Cc]   xBC after conv + SiLU */
    float *delta;         /* [R, H]    softplus(dt + dt_bias) */
    float *g;             /* [R, H]    engine log gate */
    float *sg;            /* [R, H]    sigma_t (+-1), allow_neg_eigval only (else NULL) */
    float *q, *k;         /* [R, H, N] C and B per head (times sigma) */
    float *v;             /* [R, E]    delta x */
    float *y;             /* [R, E]    engine output + D x */
    float *rstd;          /* [R, G]    norm statistics (rmsnorm) */
    float *yn;            /* [R, E]    input of out_proj */
} lina_mamba2_acts;

int lina_mamba2_check_dims(const lina_mamba2_dims *d);
size_t lina_mamba2_acts_floats(const lina_mamba2_dims *d, int R);
void lina_mamba2_acts_carve(lina_mamba2_acts *a, float *buf, const lina_mamba2_dims *d, int R);
size_t lina_mamba2_scratch_floats(const lina_mamba2_dims *d, int R);
/* Decode / prefill state: conv tail [B, Cc, W], then the SSM state
 * [B, H, N, P] (lina's canonical [B,H,K,V]; FLA caches its transpose). */
size_t lina_mamba2_state_floats(const lina_mamba2_dims *d, int B);

/* out [B*T, D] = layer(x [B*T, D]). state (lina_mamba2_state_floats, or NULL
 * = zeros and not kept): read as the initial conv tail and SSM state, then
 * overwritten with the final ones. Training passes NULL.
 * form: LINA_FORM_CHUNK (training, prefill) or LINA_FORM_RECURRENT (decode).
 * sp: one piece of sequence-parallel sequences (kind.h; not with
 * allow_neg_eigval, whose sign runs across the pieces), or NULL; the backward
 * takes the same. */
int lina_mamba2_forward(float *out, lina_mamba2_acts *a, const float *x, const lina_mamba2_dims *d,
                        const lina_mamba2_params *p, int B, int T, float *state, const lina_sp *sp, lina_form form,
                        lina_ws *ws);
/* dx [B*T, D] and every non-NULL gradient in *gp accumulate; dout [B*T, D];
 * x and a as given to / written by a forward run without state; scratch
 * lina_mamba2_scratch_floats floats. */
int lina_mamba2_backward(float *dx, lina_mamba2_params *gp, const float *dout, const float *x,
                         const lina_mamba2_acts *a, const lina_mamba2_dims *d, const lina_mamba2_params *p, int B,
                         int T, float *scratch, const lina_sp *sp, lina_form form, lina_ws *ws);

#endif
