/* nn.h -- the shared building blocks of lina's layers (internal; not part of
 * the public API while the layer API settles). The math is
 * ../shared/spec/MIXERS.md section 1.4 (flash-linear-attention's blocks).
 *
 * Conventions, as in llm.c:
 *   - every block is a <block>_forward / <block>_backward pair, side by side,
 *     each opening with its shapes;
 *   - float32, row-major; N rows (tokens = B*T, or B*T*H for per-head
 *     blocks), D features; weights are stored as PyTorch stores them
 *     (Linear W [out, in], conv weight [C, 1, W] = [C, W]);
 *   - backward ADDS into every gradient buffer it is given (parameter and
 *     input gradients alike), so contributions from several paths sum; the
 *     caller zeroes them once per step. A NULL gradient pointer means "not
 *     needed". Exceptions (documented there): lina_rope_backward and
 *     lina_cross_entropy_backward write their result (in place allowed);
 *   - forward saves only small per-row statistics (rstd, lse); everything
 *     else needed by backward is an input the caller already holds;
 *   - reductions that decide a result (norm statistics, losses) accumulate
 *     in double; parameter-gradient reductions over rows run in a fixed order
 *     for a given thread count, so results repeat bit for bit;
 *   - functions whose inputs can be invalid (token ids, targets, sizes)
 *     return a lina error code; pure arithmetic returns void.
 */
#ifndef LINA_NN_H
#define LINA_NN_H

#include "lina.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ embedding */

/* out[n, :] = W[ids[n], :].
 * out [N, D]; ids [N]; W [vocab, D]. Ids outside [0, vocab) fail (LINA_EINVAL). */
int lina_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int D, int vocab);
/* dW[ids[n], :] += dout[n, :] (ids already validated by the forward). */
void lina_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int D);

/* --------------------------------------------------------------- linear */

/* y = x W^T (+ b).
 * y [N, out]; x [N, in]; W [out, in]; b [out] or NULL. */
void lina_linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out);
/* dx += dy W;  dW += dy^T x;  db += sum_n dy[n].  Each may be NULL. */
void lina_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                          int N, int in, int out);

/* ---------------------------------------------------------------- norms */

/* RMSNorm: y = x * rstd * w (+ b), rstd = (mean(x^2) + eps)^(-1/2) (statistics
 * in double, no "+1" on w).
 * y, x [N, D]; w [D] or NULL (no affine weight); b [D] or NULL; rstd [N] saved
 * for backward (may be NULL if no backward follows). y may alias x. */
void lina_rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, const float *b, int N, int D,
                          float eps);
/* dx += rstd * (g - xhat * mean(g * xhat)) with g = dy * w, xhat = x * rstd;
 * dw += sum_n dy * xhat;  db += sum_n dy.  x is the forward input. */
void lina_rmsnorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                           const float *rstd, int N, int D);

/* FusedRMSNormGated (FLA g_norm_swish_gate / o_norm with a gate), per head
 * over D = V:  y = (x * rstd * w) * g * sigmoid(g).
 * y, x, g [N, D]; w [D] or NULL; rstd [N]. y may alias x. */
void lina_rmsnorm_gated_forward(float *y, float *rstd, const float *x, const float *g, const float *w, int N,
                                int D, float eps);
void lina_rmsnorm_gated_backward(float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                                 const float *w, const float *rstd, int N, int D);

/* L2Norm (q/k normalisation of the delta rule): y = x / sqrt(sum x^2 + eps),
 * FLA's eps = 1e-6. y, x [N, D]; rnorm [N] = 1 / sqrt(sum x^2 + eps). */
void lina_l2norm_forward(float *y, float *rnorm, const float *x, int N, int D, float eps);
/* dx += (dy - y * (y . dy)) * rnorm, y the forward output. */
void lina_l2norm_backward(float *dx, const float *dy, const float *y, const float *rnorm, int N, int D);

/* ---------------------------------------------------------- activations */

typedef enum lina_act {
    LINA_ACT_NONE = 0,
    LINA_ACT_SILU = 1   /* x * sigmoid(x) ("swish") */
} lina_act;

/* y = silu(x), n elements (y may alias x). */
void lina_silu_forward(float *y, const float *x, size_t n);
/* dx += dy * silu'(x). */
void lina_silu_backward(float *dx, const float *dy, const float *x, size_t n);

/* ------------------------------------------------------ short convolution */

/*
 * ShortConvolution: depthwise causal conv over time with an optional
 * activation (MIXERS.md 1.4):
 *
 *   y[b,t,c] = act(bias[c] + sum_{j=0..W-1} w[c,j] * x[b, t-W+1+j, c])
 *
 * w[c, W-1] multiplies the current token. Inputs before the first token are
 * zero, or come from `cache`: the last W inputs seen before this call, oldest
 * first (FLA's conv cache [N, C, W]; only the newest W-1 are used).
 *   y, x [B, T, C]; w [C, W]; bias [C] or NULL; cache, cache_out [B, C, W] or NULL.
 * cache_out receives the last W inputs after this call (zeros / old cache
 * entries where T < W); it may alias cache.
 */
void lina_shortconv_forward(float *y, const float *x, const float *w, const float *bias, const float *cache,
                            float *cache_out, int B, int T, int C, int W, lina_act act);
/* Gradients of sum(y * dy): dx [B,T,C], dw [C,W], dbias [C], dcache [B,C,W]
 * (w.r.t. the cache passed to the forward); each may be NULL. The
 * pre-activation is recomputed, nothing is saved by the forward. */
void lina_shortconv_backward(float *dx, float *dw, float *dbias, float *dcache, const float *dy, const float *x,
                             const float *w, const float *bias, const float *cache, int B, int T, int C, int W,
                             lina_act act);
/* One decode step: roll cache [B,C,W] left, put x [B,C] in the newest slot,
 * y [B,C] = act(bias + sum_j w[c,j] cache[b,c,j]). Equals the forward with T=1. */
void lina_shortconv_step(float *y, const float *x, const float *w, const float *bias, float *cache, int B, int C,
                         int W, lina_act act);

/* ----------------------------------------------------------------- RoPE */

#define LINA_ROPE_MAX_DIM 1024

/*
 * Rotary embedding, rotate-half (non-interleaved): for head vector x of even
 * size d split in halves [x1, x2], position p = pos0 + t,
 * theta_i = base^(-2i/d), angle_i = p * theta_i (in double):
 *   y1 = x1 cos - x2 sin,   y2 = x2 cos + x1 sin.
 * y, x [B, T, H, d]; y may alias x. d even, <= LINA_ROPE_MAX_DIM. base > 0
 * (FLA: 10000 or rope_theta).
 */
int lina_rope_forward(float *y, const float *x, int B, int T, int H, int d, int64_t pos0, double base);
/* The transpose (rotation by -angle): dx = R^T dy. WRITES dx (not added);
 * dx may alias dy. */
int lina_rope_backward(float *dx, const float *dy, int B, int T, int H, int d, int64_t pos0, double base);

/* ------------------------------------------------------------ gated MLP */

/* SwiGLU activation: h = silu(gate) * up, n elements. */
void lina_swiglu_forward(float *h, const float *gate, const float *up, size_t n);
/* dgate += dh * up * silu'(gate);  dup += dh * silu(gate). */
void lina_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n);

/*
 * GatedMLP: y = W_down (silu(W_gate x) * (W_up x)); width I from
 * lina_mlp_width (FLA's rule). The forward keeps gate, up and h for backward.
 *   y, x [N, D]; gate, up, h [N, I]; Wg, Wu [I, D]; Wd [D, I].
 */
void lina_gated_mlp_forward(float *y, float *gate, float *up, float *h, const float *x, const float *Wg,
                            const float *Wu, const float *Wd, int N, int D, int I);
/* dx, dWg, dWu, dWd accumulate (each may be NULL); scratch 2*N*I floats from
 * ws (NULL: a private arena). */
int lina_gated_mlp_backward(float *dx, float *dWg, float *dWu, float *dWd, const float *dy, const float *x,
                            const float *gate, const float *up, const float *h, const float *Wg, const float *Wu,
                            const float *Wd, int N, int D, int I, lina_ws *ws);

/* ---------------------------------------------------- cross-entropy loss */

#define LINA_IGNORE_INDEX (-100) /* targets equal to this are skipped (PyTorch's default) */

/*
 * Softmax cross-entropy, mean over the counted tokens:
 *   loss = (1/count) sum_{n: target != ignore} (lse_n - logits[n, target_n]),
 *   lse_n = log sum_v exp(logits[n, v]),
 * rows and the total accumulated in double (the total in row order).
 *   logits [N, V]; targets [N]; lse [N] (required: saved for backward).
 * *count receives the number of counted tokens (loss 0 when none). Targets
 * outside [0, V) other than LINA_IGNORE_INDEX fail with LINA_EINVAL.
 */
int lina_cross_entropy_forward(double *loss, int64_t *count, float *lse, const float *logits,
                               const int32_t *targets, int N, int V);
/* dlogits[n] = dloss / count * (softmax(logits[n]) - onehot(target_n)), zero
 * rows for ignored targets. WRITES dlogits (not added); it may alias logits. */
void lina_cross_entropy_backward(float *dlogits, const float *logits, const float *lse, const int32_t *targets,
                                 int N, int V, float dloss, int64_t count);

#endif
