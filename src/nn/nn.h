/* nn.h -- the shared building blocks of lina's layers (internal; not part of
 * the public API while the layer API settles). The math is
 * docs/mixers.md section 2 (flash-linear-attention's blocks).
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
#include "kind.h"

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
/* The same with dx written (dx = dy W, its old contents never read): no zeroing
 * pass before it. */
void lina_linear_backward_set(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                              int N, int in, int out);

/* LoRA-wrapped Linear (lora.c): y = x W^T + s (x A^T) B^T, s = alpha / r, with
 * A [r, in] and B [out, r] the adapter (PEFT's lora_A / lora_B; r = 0 or A NULL:
 * the plain Linear). t [N, r] receives x A^T, which the backward reads. */
void lina_lora_forward(float *y, float *t, const float *x, const float *W, const float *A, const float *Bm, float s,
                       int N, int in, int out, int r);
/* dx += dy W + s (dy B) A;  dW += dy^T x;  dA += s (dy B)^T x;  dB += s dy^T t.
 * u [N, r] is scratch. Each of dx, dW, dA, dB may be NULL. */
void lina_lora_backward(float *dx, float *dW, float *dA, float *dB, float *u, const float *dy, const float *x,
                        const float *t, const float *W, const float *A, const float *Bm, float s, int N, int in,
                        int out, int r);
/* W += s B A: the adapter merged into the base weight. */
void lina_lora_merge(float *W, const float *A, const float *Bm, float s, int in, int out, int r);

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

/* LayerNorm over each of G groups of S = D / G columns (G = 1: nn.LayerNorm;
 * G = heads: GroupNorm, RWKV-7's per-head output norm): y = (x - mean) * rstd
 * * w + b, rstd = (var + eps)^(-1/2) (statistics in double). y, x [N, D]; w, b
 * [D] or NULL; mean, rstd [N * G] saved for backward (both NULL: not kept). */
void lina_layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int N,
                            int D, int G, float eps);
/* dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; dw += sum_n dy
 * * xhat; db += sum_n dy (fixed order). x is the forward input; dx, dw, db may be NULL. */
void lina_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                             const float *mean, const float *rstd, int N, int D, int G);

/* FusedRMSNormGated (FLA g_norm_swish_gate / o_norm with a gate), per head
 * over D = V:  y = (x * rstd * w) * g * sigmoid(g).
 * y, x, g [N, D]; w [D] or NULL; rstd [N]. y may alias x. */
void lina_rmsnorm_gated_forward(float *y, float *rstd, const float *x, const float *g, const float *w, int N,
                                int D, float eps);
void lina_rmsnorm_gated_backward(float *dx, float *dg, float *dw, const float *dy, const float *x, const float *g,
                                 const float *w, const float *rstd, int N, int D);
/* The two backwards with dx (and dg) written, their old contents never read (no
 * zeroing pass first); dw, db still accumulate. */
void lina_rmsnorm_backward_set(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                               const float *rstd, int N, int D);
void lina_rmsnorm_gated_backward_set(float *dx, float *dg, float *dw, const float *dy, const float *x,
                                     const float *g, const float *w, const float *rstd, int N, int D);

/* L2Norm (q/k normalisation of the delta rule): y = x / sqrt(sum x^2 + eps),
 * FLA's eps = 1e-6. y, x [N, D]; rnorm [N] = 1 / sqrt(sum x^2 + eps). */
void lina_l2norm_forward(float *y, float *rnorm, const float *x, int N, int D, float eps);
/* dx += (dy - y * (y . dy)) * rnorm, y the forward output. */
void lina_l2norm_backward(float *dx, const float *dy, const float *y, const float *rnorm, int N, int D);

/* Sum norm per row: y = x / (sum x + eps), y, x [N, D] (FLA's DeltaNet
 * qk_norm "sum": eps 0; linear attention's norm_q / norm_k: eps 1e-4). */
void lina_sumnorm_forward(float *y, const float *x, int N, int D, double eps);
/* dx += (dy - (dy . y)) / (sum x + eps) */
void lina_sumnorm_backward(float *dx, const float *dy, const float *x, const float *y, int N, int D, double eps);

/* ---------------------------------------------------------- activations */

typedef enum lina_act {
    LINA_ACT_NONE = 0,
    LINA_ACT_SILU = 1   /* x * sigmoid(x) ("swish") */
} lina_act;

/* s = sigmoid(x) = 1 / (1 + exp(-x)), n elements through the vector exp
 * (s may alias x). */
void lina_vsigmoid(float *s, const float *x, size_t n);
/* y = logsigmoid(x) = -log(1 + exp(-x)), n elements (y may alias x); within
 * a few ulps of the exact value. */
void lina_vlogsigmoid(float *y, const float *x, size_t n);
/* y = silu(x), n elements (y may alias x). */
void lina_silu_forward(float *y, const float *x, size_t n);
/* dx += dy * silu'(x). */
void lina_silu_backward(float *dx, const float *dy, const float *x, size_t n);

/* Feature maps: y = relu(x) (elu1 = 0) or elu(x) + 1 (elu1 = 1), n elements
 * (y may alias x). */
void lina_phi_forward(float *y, const float *x, size_t n, int elu1);
/* dx += dy * phi'(x), the derivative read from the output y (relu: y > 0;
 * elu + 1: 1 where y > 1, else y). */
void lina_phi_backward(float *dx, const float *dy, const float *y, size_t n, int elu1);

/* ------------------------------------------------------ short convolution */

/*
 * ShortConvolution: depthwise causal conv over time with an optional
 * activation (docs/mixers.md 2):
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
/* The short conv on one piece of sequence-parallel sequences (kind.h): the
 * W inputs before the piece come from the pieces before it (lina_sp_conv_halo,
 * kept under the key w for the backward); the backward (dx, dw, dbias
 * accumulate) sends their gradient back (lina_sp_conv_halo_bwd). One
 * all-gather each. */
int lina_sp_conv_forward(const lina_sp *sp, float *y, const float *x, const float *w, const float *bias, int B,
                         int T, int C, int W, lina_act act);
int lina_sp_conv_backward(const lina_sp *sp, float *dx, float *dw, float *dbias, const float *dy, const float *x,
                          const float *w, const float *bias, int B, int T, int C, int W, lina_act act);
/* The same with the rows of x (and of dx) ldx (lddx) floats apart, for inputs that are a
 * column block of a wider matrix (lina_proj_forward); y and dy are [B,T,C]. dx_set: dx
 * written (its old contents not read), else accumulated. */
void lina_shortconv_forward_ld(float *y, const float *x, size_t ldx, const float *w, const float *bias,
                               const float *cache, float *cache_out, int B, int T, int C, int W, lina_act act);
void lina_shortconv_backward_ld(float *dx, size_t lddx, int dx_set, float *dw, float *dbias, float *dcache, const float *dy,
                                const float *x, size_t ldx, const float *w, const float *bias, const float *cache,
                                int B, int T, int C, int W, lina_act act);
/* The same with the halo kept under `key` (a layer with several convolutions per weight). */
int lina_sp_conv_forward_key(const lina_sp *sp, const void *key, float *y, const float *x, const float *w,
                             const float *bias, int B, int T, int C, int W, lina_act act);
int lina_sp_conv_backward_key(const lina_sp *sp, const void *key, float *dx, float *dw, float *dbias, const float *dy,
                              const float *x, const float *w, const float *bias, int B, int T, int C, int W,
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
 * ws (3*N*I fused; NULL: a private arena). When Wu follows Wg in memory (one
 * [2I, D] matrix) and up follows gate ([N, I] each), gate and up are one
 * product and gate..up holds [N, 2I] rows [gate | up] instead (the forward
 * and the backward decide alike; lina_proj_set_fused(0) turns it off). */
int lina_gated_mlp_backward(float *dx, float *dWg, float *dWu, float *dWd, const float *dy, const float *x,
                            const float *gate, const float *up, const float *h, const float *Wg, const float *Wu,
                            const float *Wd, int N, int D, int I, lina_ws *ws);

/* ---------------------------------------------------- cross-entropy loss */

/* LINA_IGNORE_INDEX (-100, include/lina.h): targets equal to it are skipped */

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
/* Both in one pass over the rows (each row's exp and gradient while it is in cache):
 * the loss, count and lse of lina_cross_entropy_forward, then the logits overwritten
 * with lina_cross_entropy_backward's dlogits for dloss and that count (the same bits as
 * the two calls); tl [N] receives the target logits (0 for ignored rows). */
int lina_cross_entropy_fused(double *loss, int64_t *count, float *lse, float *tl, float *logits,
                             const int32_t *targets, int N, int V, float dloss);

/* ------------------------------------------------------ shared layer glue */

/* layer.c: the kernel dims of one layer call (chunk 0: the kernel's default;
 * scale 0: K^-1/2). */
lina_mix_dims lina_layer_mix(int B, int T, int H, int K, int V, int chunk, float scale);
/* dst [R, H*E] = src [R, Hsrc*E], source head h / (H/Hsrc) for head h (grouped
 * kv heads, GVA); H a multiple of Hsrc. */
void lina_heads_repeat(float *dst, const float *src, size_t R, int H, int Hsrc, int E);
/* Its adjoint: dst [R, Hdst*E] (+)= the group sums of src [R, H*E]; add = 0
 * writes dst. */
void lina_heads_reduce(float *dst, const float *src, size_t R, int H, int Hdst, int E, int add);
/* The output block of a mixer layer: y = FusedRMSNormGated(o, gate) per head
 * (RMSNorm(o) * w when gate is NULL), out = y Wo^T. o, gate, y [N, H*V],
 * rstd [N*H], norm_w [V], o_proj [D, H*V], out [N, D]. */
void lina_out_forward(float *out, float *y, float *rstd, const float *o, const float *gate, const float *norm_w,
                      const float *o_proj, int N, int H, int V, int D, float eps);
/* Its backward: dy [N, H*V] (scratch), dO and dgate [N, H*V] written (dgate only
 * with a gate; none is read first); dnorm_w, do_proj accumulate (may be NULL). */
void lina_out_backward(float *dO, float *dgate, float *dy, float *dnorm_w, float *do_proj, const float *dout,
                       const float *y, const float *o, const float *gate, const float *norm_w, const float *o_proj,
                       const float *rstd, int N, int H, int V, int D);
/* y [B,T,C] = act(conv(x)) with the short conv (conv_w [C, W], cache as in
 * lina_shortconv_forward) or act(x) when conv_w is NULL (act NONE: a copy,
 * nothing when y == x). */
void lina_conv_act_forward(float *y, const float *x, const float *conv_w, float *cache, int B, int T, int C, int W,
                           lina_act act);
/* dx (and dconv_w) += its backward given dy. */
void lina_conv_act_backward(float *dx, float *dconv_w, const float *dy, const float *x, const float *conv_w, int B,
                            int T, int C, int W, lina_act act);
/*
 * Fused input projections: the projections of a layer that read the same x
 * (q, k, v, and gates) as ONE product over the concatenated weight
 * [tot, D], tot = the sum of the parts' columns, when the weights lie back
 * to back (a model's parameter buffer holds FLA's tensors in declaration
 * order, so q_proj, k_proj, v_proj, ... are one matrix there): x is read and
 * packed once instead of once per part, and the backward is one product for
 * dx and one for the weight gradients. The pre-activations stay in one
 * [N, tot] matrix; a part with a short conv reads its column block through
 * the conv's row stride, a part without one gets its columns copied out.
 */
#define LINA_PROJ_MAX 8
typedef struct lina_proj_part {
    const float *w;    /* weight [cols, D] */
    float *gw;         /* its gradient (backward; accumulated), or NULL */
    int cols;
    const float *conv; /* short conv [cols, W] after the projection, or NULL (a plain copy) */
    float *gconv;      /* its gradient (backward; accumulated), or NULL */
    lina_act act;      /* the conv's activation */
    float *cache;      /* the conv's decode tail [B, cols, W] (forward), or NULL */
    float *y;          /* forward: the part's output [N, cols] (written) */
    const float *dy;   /* backward: the gradient of y */
} lina_proj_part;

/* The rows of pre / dpre are tot rounded up to LINA_PROJ_PAD floats (64
 * bytes) apart: a conv reading a column block of rows at an odd stride runs
 * at half speed (cache-line splits). Buffers hold N * (tot + LINA_PROJ_PAD). */
#define LINA_PROJ_PAD 16
/* 1 when the n parts (1 <= n <= LINA_PROJ_MAX) can run fused: each weight
 * starts where the previous one ends. */
int lina_proj_fusable(const lina_proj_part *pt, int n, int D);
/* pre [N, tot] (rows padded) = x Wcat^T (N = B*T); then each part's y: act(conv(its
 * columns)) with its cache, or a copy of its columns. */
void lina_proj_forward(float *pre, const lina_proj_part *pt, int n, const float *x, int B, int T, int D, int W);
/* Its backward given each part's dy: dpre [N, tot] (scratch, written) =
 * the gradient of pre; dx += dpre Wcat; each gw += dpre_part^T x (one
 * product when the gradients lie back to back as the weights do); the conv
 * weight gradients accumulate. pre is the forward's. */
void lina_proj_backward(float *dx, float *dpre, const lina_proj_part *pt, int n, const float *pre, const float *x,
                        int B, int T, int D, int W);
/* The forward fields of parts 0..2 (q, k, v): outputs y and conv tails
 * (NULL: none), and their backward fields: dy, gw, gconv. */
void lina_proj_qkv_out(lina_proj_part *pt, float *yq, float *yk, float *yv, float *cq, float *ck, float *cv);
void lina_proj_qkv_grad(lina_proj_part *pt, const float *dq, const float *dk, const float *dv, float *gq, float *gk,
                        float *gv, float *gcq, float *gck, float *gcv);
/* Fusion on (1, the default) or off (0: every projection its own product, as
 * the environment variable LINA_FUSED_PROJ=0 also sets); for tests and
 * measurements. lina_proj_fused_calls: fused forward products run so far
 * (lina_proj_forward and the MLP's gate + up, which call lina_proj_fused_note). */
void lina_proj_set_fused(int on);
long lina_proj_fused_calls(void);
void lina_proj_fused_note(void);

/* Packed documents (docs.c; B = 1, cu[0..ncu-1] offsets over the rows): lina_conv_act_*
 * on each document alone (zeros before its first token); RoPE (forward, or its
 * transpose with `backward`) with positions from 0 in each document. */
void lina_docs_conv_forward(float *y, const float *x, const float *conv_w, const int64_t *cu, int64_t ncu, int C,
                            int W, lina_act act);
void lina_docs_conv_backward(float *dx, float *dconv_w, const float *dy, const float *x, const float *conv_w,
                             const int64_t *cu, int64_t ncu, int C, int W, lina_act act);
int lina_docs_rope(float *y, const float *x, const int64_t *cu, int64_t ncu, int H, int d, double base, int backward);
/* The decay of Gated DeltaNet / DeltaProduct / MoM memories:
 * g [N, H] = -exp(A_log) softplus(a + dt_bias). */
void lina_decay_forward(float *g, const float *a, const float *A_log, const float *dt_bias, size_t N, int H);
/* dg [N, H] becomes d(a) in place; dA_log, ddt_bias [H] accumulate (may be NULL). */
void lina_decay_backward(float *dg, float *dA_log, float *ddt_bias, const float *a, const float *g,
                         const float *A_log, const float *dt_bias, size_t N, int H);

/* ------------------------------------------------------------ GLA layer */

/*
 * FLA's GatedLinearAttention layer (docs/mixers.md section 3.5), gla_layer.c:
 *
 *   q = x Wq^T,  k = x Wk^T,  v = x Wv^T
 *   gk = (x W0^T) W1^T + b1,  g = logsigmoid(gk) / 16   (optionally max(g, clamp_min))
 *   o = GLA(q, k, v, g)               (lina_dd_fwd, vector gate, scale K^-1/2)
 *   y = FusedRMSNormGated(o, x Wg^T) per head   (RMSNorm(o) * w without output gate)
 *   out = y Wo^T
 *
 * N = B*T rows; HK = H*K, HV = H*V (K, V per head); R = 16 (gate rank).
 * With kv groups (num_kv_heads = Hkv < H): k_proj, v_proj, gk_proj.1 have Hkv
 * heads (HKVK = Hkv*K, HKVV = Hkv*V rows). Optional short convs; no feature map.
 * With retention = 1 the same layer is RetNet's (no gk_proj tensors).
 */
#define LINA_GLA_GATE_RANK 16
#define LINA_GLA_GATE_NORMALIZER 16.0f

typedef struct lina_gla_dims {
    int D;              /* model width */
    int H, K, V;        /* heads, key and value dims per head */
    int output_gate;    /* use_output_gate: g_proj + FusedRMSNormGated */
    float norm_eps;
    int has_clamp_min;
    float clamp_min;
    int retention;      /* RetNet MultiScaleRetention (docs/mixers.md 3.4): constant decay
                           g_h = ln(1 - 2^(-5-h)) instead of gk_proj, RoPE (base 10000)
                           on q and k */
    int num_kv_heads;   /* Hkv (num_kv_heads), H a multiple of it; 0 = H. k, v and the
                           gate have Hkv heads; query head j reads kv head j / (H/Hkv) */
    int use_short_conv; /* SiLU short convs on the q, k, v projections (before RoPE) */
    int conv_size;      /* W */
} lina_gla_dims;

/* Parameter (or gradient) views; FLA names under model.layers.{i}.attn. */
typedef struct lina_gla_params {
    float *q_proj;      /* [HK, D]  q_proj.weight */
    float *k_proj;      /* [HKVK, D] k_proj.weight */
    float *v_proj;      /* [HKVV, D] v_proj.weight */
    float *g_proj;      /* [HV, D]  g_proj.weight (output gate only, else NULL) */
    float *gk0;         /* [R, D]   gk_proj.0.weight */
    float *gk1;         /* [HKVK, R] gk_proj.1.weight */
    float *gk1_b;       /* [HKVK]   gk_proj.1.bias */
    float *norm_w;      /* [V]      g_norm_swish_gate.weight (g_norm.weight without gate) */
    float *o_proj;      /* [D, HV]  o_proj.weight */
    float *q_conv;      /* [HK, W]  q_conv1d.weight (use_short_conv only) */
    float *k_conv;      /* [HKVK, W] */
    float *v_conv;      /* [HKVV, W] */
} lina_gla_params;

/* What the forward keeps for backward (views into one caller buffer). */
typedef struct lina_gla_acts {
    float *q, *k;       /* [N, HK] kernel inputs (k, v, g repeated over the kv groups) */
    float *v;           /* [N, HV] */
    float *gr;          /* [N, R]  low-rank gate */
    float *gk;          /* [N, HKVK] gate logits */
    float *g;           /* [N, HK] log gate */
    float *kk, *vv, *gg; /* [N, HKVK], [N, HKVV], [N, HKVK] per kv head (== k, v, g without groups) */
    float *gate;        /* [N, HV] output gate x Wg^T (unused without output gate) */
    float *o;           /* [N, HV] kernel output */
    float *rstd;        /* [N*H]   per-head norm statistics */
    float *y;           /* [N, HV] input of o_proj */
    float *qc, *kc, *vc; /* [N, HK], [N, HKVK], [N, HKVV] projections before the short convs
                            (== q, kk, vv without convs) */
} lina_gla_acts;

int lina_gla_check_dims(const lina_gla_dims *d);
/* Floats of the activations for N rows, and carving them out of buf. */
size_t lina_gla_acts_floats(const lina_gla_dims *d, int N);
void lina_gla_acts_carve(lina_gla_acts *a, float *buf, const lina_gla_dims *d, int N);
/* Floats of scratch lina_gla_backward needs for N rows. */
size_t lina_gla_scratch_floats(const lina_gla_dims *d, int N);

/* out [B*T, D] = layer(x [B*T, D]); h0 [B,H,K,V] or NULL; ht [B,H,K,V] or NULL.
 * form: LINA_FORM_CHUNK (training, prefill) or LINA_FORM_RECURRENT. */
int lina_gla_forward(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                     const lina_gla_params *p, int B, int T, const float *h0, float *ht,
                     lina_form form, lina_ws *ws);
/* The same at token positions pos0.. (only RoPE, i.e. retention, depends on it). */
int lina_gla_forward_at(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                        const lina_gla_params *p, int B, int T, const float *h0, float *ht, int64_t pos0,
                        lina_form form, lina_ws *ws);
/* Floats of the short-conv decode cache (q, k, v tails [B, C, W]); 0 without convs. */
size_t lina_gla_conv_cache_floats(const lina_gla_dims *d, int B);
/* The same with conv_cache (lina_gla_conv_cache_floats, or NULL = zeros and
 * not kept): read as the conv tails before the call, overwritten after it;
 * sp: this call is one piece of sequence-parallel sequences (kind.h; pos0 is
 * then the piece's first position), or NULL; cu: packed documents (B = 1,
 * ncu offsets over T, no state or cache, kind.h), or NULL. */
int lina_gla_forward_cached(float *out, lina_gla_acts *a, const float *x, const lina_gla_dims *d,
                            const lina_gla_params *p, int B, int T, const float *h0, float *ht,
                            float *conv_cache, int64_t pos0, const lina_sp *sp, const int64_t *cu, int64_t ncu,
                            lina_form form, lina_ws *ws);
/* dx [B*T, D] and every non-NULL gradient in *gp accumulate; dout [B*T, D];
 * x, a, h0, sp as given to the forward; scratch lina_gla_scratch_floats floats. */
int lina_gla_backward(float *dx, lina_gla_params *gp, const float *dout, const float *x,
                      const lina_gla_acts *a, const lina_gla_dims *d, const lina_gla_params *p,
                      int B, int T, const float *h0, float *scratch, const lina_sp *sp, const int64_t *cu,
                      int64_t ncu, lina_form form, lina_ws *ws);
/* Floats of scratch for lina_gla_step with batch B. */
size_t lina_gla_step_floats(const lina_gla_dims *d, int B);
/* One decode token: out [B, D] from x [B, D]; state [B,H,K,V] is updated in
 * place (recurrent form). Equals the forward with T = 1 and h0 = state. */
int lina_gla_step(float *out, const float *x, const lina_gla_dims *d, const lina_gla_params *p, int B,
                  float *state, float *scratch, lina_ws *ws);

/* ------------------- the delta-rule layer: DeltaNet, Gated DeltaNet, Gated DeltaProduct */

/*
 * FLA's DeltaNet, GatedDeltaNet and GatedDeltaProduct layers
 * (docs/mixers.md sections 4.1, 4.2, 4.3), delta_layer.c. With n sub-steps per
 * token (num_householder; n = 1 is Gated DeltaNet):
 *
 *   q = L2Norm(SiLU(conv(x Wq^T)))                       [N, H*K]
 *   k = L2Norm(SiLU(conv(x Wk^T)))                       [N, n*H*K]   features (j, h, d)
 *   v = SiLU(conv(x Wv^T))                               [N, n*HV*V]  features (j, h, d)
 *   (without short convs: SiLU on the projections; the convs run over all
 *    n*H*K / n*HV*V channels before the split into sub-steps)
 *   beta = sigmoid(x Wb^T) (x2 with allow_neg_eigval; 1 without use_beta)  [N, n*HV]
 *   g = -exp(A_log) * softplus(x Wa^T + dt_bias)         [N, HV]  (gated only)
 *   o = gated delta rule / delta product(q, k, v, g, beta)  (lina_delta_fwd, scale K^-1/2)
 *   y = FusedRMSNormGated(o, x Wg^T) per value head (RMSNorm(o) * w without use_gate)
 *   out = y Wo^T
 *
 * N = B*T; HK = H*K, VV = HV*V (HV value heads, see num_v_heads; value head j
 * reads q/k head j / (HV/H)); a, g, A_log, dt_bias per value head; conv
 * weights [C, W] (FLA [C, 1, W]), no bias. Row t of [N, n*C] is rows t*n + j
 * (j = sub-step) of [N*n, C]: exactly the kernel's interleaved layout.
 * With gated = 0 the layer is FLA's DeltaNet (no decay: no a_proj, A_log,
 * dt_bias) or GatedDeltaProduct without its forget gate. DeltaNet's
 * qk_activation / qk_norm (qk_act, qk_sum): the q/k convs run without SiLU
 * unless qk_act is silu, then relu / elu + 1 / identity, then the L2Norm or
 * the sum norm x / sum x per head (no eps, as FLA).
 */
typedef struct lina_gdn_dims {
    int D, H, K, V;
    int use_gate;        /* g_proj + FusedRMSNormGated */
    int use_short_conv;
    int conv_size;       /* W */
    int allow_neg_eigval;
    float norm_eps;
    int gated;           /* 1: the decay (a_proj, A_log, dt_bias); 0: none */
    int use_beta;        /* b_proj; 0: beta = 1 (DeltaNet use_beta = false) */
    int num_v_heads;     /* HV value heads (GVA), a multiple of H; 0 = H */
    int n;               /* sub-steps per token (num_householder); 0 = 1 */
    int qk_act;          /* lina_qk_act: q/k activation (0 = SiLU) */
    int qk_sum;          /* 1: sum norm on q, k instead of the L2Norm */
    int kda;             /* Kimi Delta Attention: per-key-channel decay from the low-rank f_proj,
                            output gate sigma(g_proj) (low rank, bias) after the plain RMSNorm */
    int has_lower_bound; /* kda: bounded gate lower_bound * sigmoid(exp(A_log) (f + dt_bias)) */
    float lower_bound;
} lina_gdn_dims;

/* DeltaNet qk_activation */
typedef enum lina_qk_act {
    LINA_QK_SILU = 0,
    LINA_QK_RELU = 1,
    LINA_QK_ELU = 2,     /* elu(x) + 1 (FLA's elu_p1) */
    LINA_QK_IDENTITY = 3
} lina_qk_act;

/* Parameter (or gradient) views; FLA names under model.layers.{i}.attn. */
typedef struct lina_gdn_params {
    float *q_proj;       /* [HK, D] */
    float *k_proj;       /* [n*HK, D] */
    float *v_proj;       /* [n*VV, D] */
    float *a_proj;       /* [HV, D] (gated) */
    float *b_proj;       /* [n*HV, D] (use_beta) */
    float *A_log;        /* [HV] */
    float *dt_bias;      /* [HV] (kda: [HV*K]) */
    float *q_conv;       /* [HK, W]  q_conv1d.weight (short conv only) */
    float *k_conv;       /* [n*HK, W] */
    float *v_conv;       /* [n*VV, W] */
    float *g_proj;       /* [VV, D]  (use_gate only) */
    float *o_norm;       /* [V] */
    float *o_proj;       /* [D, VV] */
    float *f_proj0, *f_proj1; /* kda: f_proj.0.weight [V, D], f_proj.1.weight [HV*K, V] */
    float *g_proj0, *g_proj1, *g_bias; /* kda: g_proj.0.weight [V, D], g_proj.1.weight [VV, V], .bias [VV] */
} lina_gdn_params;

typedef struct lina_gdn_acts {
    float *qp, *kp;      /* [N, HK], [N, n*HK] projections (conv inputs) */
    float *vp;           /* [N, n*VV] */
    float *qc, *kc;      /* conv (or SiLU) outputs after qk_act, before the norms */
    float *qn, *kn;      /* [N, HK], [N, n*HK] L2- (or sum-) normalised */
    float *rq, *rk;      /* [N*H], [N*n*H] 1 / norms (L2Norm only) */
    float *qe, *ke;      /* [N, HV*K], [N, n*HV*K] kernel q, k (== qn, kn without GVA) */
    float *v;            /* [N, n*VV] after conv + SiLU */
    float *a, *g;        /* [N, HV] gate input and log gate (kda: [N, HV*K]) */
    float *f1, *z1;      /* kda: [N, V] low-rank gate and output-gate hidden rows */
    float *yn;           /* kda: [N, VV] RMSNorm(o) * w before the sigmoid gate */
    float *bl, *beta;    /* [N, n*HV] beta logits and beta */
    float *gate;         /* [N, VV] output gate */
    float *o;            /* [N, VV] kernel output */
    float *rstd;         /* [N*HV] */
    float *y;            /* [N, VV] */
} lina_gdn_acts;

/* Decode / prefill cache: conv tails q [B,HK,W], k [B,n*HK,W], v [B,n*VV,W]
 * (short convs only), then the state [B,HV,K,V]. */
size_t lina_gdn_cache_floats(const lina_gdn_dims *d, int B);

int lina_gdn_check_dims(const lina_gdn_dims *d);
size_t lina_gdn_acts_floats(const lina_gdn_dims *d, int N);
void lina_gdn_acts_carve(lina_gdn_acts *a, float *buf, const lina_gdn_dims *d, int N);
size_t lina_gdn_scratch_floats(const lina_gdn_dims *d, int N);

/* out [B*T, D] = layer(x [B*T, D]). cache (lina_gdn_cache_floats, or NULL =
 * zeros and not kept): read as the initial conv tails and state, then
 * overwritten with the final ones. Training passes NULL. */
int lina_gdn_forward(float *out, lina_gdn_acts *a, const float *x, const lina_gdn_dims *d,
                     const lina_gdn_params *p, int B, int T, float *cache, lina_form form, lina_ws *ws);
/* The same for one piece of sequence-parallel sequences (sp, kind.h; NULL:
 * whole sequences; not with use_short_conv), or on packed documents (cu: B = 1,
 * ncu offsets over T, no cache; NULL: none). */
int lina_gdn_forward_sp(float *out, lina_gdn_acts *a, const float *x, const lina_gdn_dims *d,
                        const lina_gdn_params *p, int B, int T, float *cache, const lina_sp *sp, const int64_t *cu,
                        int64_t ncu, lina_form form, lina_ws *ws);
/* dx and every non-NULL gradient in *gp accumulate (forward run without
 * cache, with the same sp). */
int lina_gdn_backward(float *dx, lina_gdn_params *gp, const float *dout, const float *x, const lina_gdn_acts *a,
                      const lina_gdn_dims *d, const lina_gdn_params *p, int B, int T, float *scratch,
                      const lina_sp *sp, const int64_t *cu, int64_t ncu, lina_form form, lina_ws *ws);

/* ------------------------------------------------- softmax attention layer */

/*
 * FLA's Attention layer (docs/mixers.md section 9), attn_layer.c:
 *
 *   q = x Wq^T (+ bq), k = x Wk^T (+ bk), v = x Wv^T (+ bv)
 *   (use_short_conv: q, k, v <- SiLU(ShortConvolution(.)) over all channels, weights
 *   {q,k,v}_conv1d.weight [C, 1, W]; a lina option for the synthetic-task models)
 *   (qk_norm: RMSNorm(d, eps 1e-5) on q and k per head), RoPE on q and k
 *   o = softmax attention (causal, optional window; kv head j/G for query head j)
 *   out = o Wo^T
 *
 * N = B*T; d = head dim (even); HQ = H*d, HKV = Hkv*d. Positions start at 0.
 */
#define LINA_ATTN_QK_NORM_EPS 1e-5f

typedef struct lina_attn_dims {
    int D, H, Hkv, d;
    int qkv_bias;
    int qk_norm;
    int window;          /* 0 = none */
    double rope_theta;   /* base, > 0 */
    int use_short_conv;  /* SiLU short convs on the q, k, v projections */
    int conv_size;       /* W */
} lina_attn_dims;

typedef struct lina_attn_params {
    float *q_proj, *q_bias;  /* [HQ, D], [HQ] (bias only with qkv_bias) */
    float *k_proj, *k_bias;  /* [HKV, D], [HKV] */
    float *v_proj, *v_bias;  /* [HKV, D], [HKV] */
    float *q_norm, *k_norm;  /* [d] (qk_norm only) */
    float *o_proj;           /* [D, HQ] */
    float *q_conv, *k_conv, *v_conv; /* [HQ, W], [HKV, W], [HKV, W] (use_short_conv only) */
} lina_attn_params;

typedef struct lina_attn_acts {
    float *qp;           /* [N, HQ] projection */
    float *kp, *vp;      /* [N, HKV] */
    float *qn, *kn;      /* [N, HQ], [N, HKV] after qk_norm (== qp, kp without) */
    float *rq, *rk;      /* [N*H], [N*Hkv] */
    float *q, *k, *v;    /* [N, HQ] after RoPE, kv heads repeated */
    float *o;            /* [N, HQ] */
    float *stat;         /* [N*H*2] softmax row statistics */
    float *qc, *kc, *vc; /* [N, HQ], [N, HKV], [N, HKV] projections before the short convs
                            (== qp, kp, vp without convs) */
} lina_attn_acts;

int lina_attn_check_dims(const lina_attn_dims *d);
size_t lina_attn_acts_floats(const lina_attn_dims *d, int N);
void lina_attn_acts_carve(lina_attn_acts *a, float *buf, const lina_attn_dims *d, int N);
size_t lina_attn_scratch_floats(const lina_attn_dims *d, int N);
/* sp: NULL, or this call is one piece of sequence-parallel sequences (kind.h; LASP-2H). */
int lina_attn_forward(float *out, lina_attn_acts *a, const float *x, const lina_attn_dims *d,
                      const lina_attn_params *p, int B, int T, const lina_sp *sp, lina_ws *ws);
/* Inference with a KV cache: kc, vc [B, Hkv, cap, d] hold the rotated keys and
 * the values of positions [0, pos); this call appends positions [pos, pos+T)
 * and attends from them (causal, window). pos + T <= cap. conv: the short-conv
 * tails q [B,HQ,W], k [B,HKV,W], v [B,HKV,W] (use_short_conv; read, then
 * overwritten), else unused. */
int lina_attn_forward_cached(float *out, lina_attn_acts *a, const float *x, const lina_attn_dims *d,
                             const lina_attn_params *p, int B, int T, float *kc, float *vc, float *conv, int pos,
                             int cap);
/* The attention of T new queries against a cache (both layers' decode step):
 * o, q [B, T, H, dh]; kc, vc [B, Hkv, cap, dh] holding positions [0, pos + T);
 * fc [B, H, cap] per-token log forget gates (logit += the sum of the gates
 * after the key, Forgetting Transformer) or NULL; window 0 = none. Scores in
 * double; dh <= LINA_ATTN_CACHE_MAX_DIM. */
#define LINA_ATTN_CACHE_MAX_DIM 1024
void lina_attn_cache_attend(float *o, const float *q, const float *kc, const float *vc, const float *fc, int B,
                            int T, int H, int Hkv, int dh, int pos, int cap, int window);
/* Floats of the short-conv decode tails (0 without convs). */
size_t lina_attn_conv_cache_floats(const lina_attn_dims *d, int B);
int lina_attn_backward(float *dx, lina_attn_params *gp, const float *dout, const float *x,
                       const lina_attn_acts *a, const lina_attn_dims *d, const lina_attn_params *p, int B, int T,
                       float *scratch, const lina_sp *sp, lina_ws *ws);

/* ------------------------------------------------------------ HGRN2 layer */

/*
 * FLA's HGRN2Attention (docs/mixers.md section 3.6), hgrn2_layer.c, on the GLA kernel:
 *
 *   q = SiLU(x Wq^T),  f = x Wf^T,  v = x Wi^T                 [N, HK], [N, HK], [N, HV]
 *   g = logsigmoid(f)                    (lambda NULL: layer 0 or no lower bound)
 *   g = log(lambda + (1 - lambda) sigmoid(f))   (lambda [HK]: the layer's lower bound)
 *   k = 1 - exp(g);  o = GLA(q, k, v, g);  y = RMSNorm(o) over the full width HV;  out = y Wo^T
 *
 * H heads, K = expand_ratio, V = HV / H; N = B*T, HK = H*K, HV = H*V (= D in FLA).
 */
typedef struct lina_hgrn2_dims {
    int D, H, K, V;
    float norm_eps;
} lina_hgrn2_dims;

typedef struct lina_hgrn2_params {
    float *q_proj;      /* [HK, D] */
    float *f_proj;      /* [HK, D] */
    float *i_proj;      /* [HV, D] */
    float *g_norm;      /* [HV] */
    float *o_proj;      /* [D, HV] */
} lina_hgrn2_params;

typedef struct lina_hgrn2_acts {
    float *qp, *q;      /* [N, HK] pre- and post-SiLU */
    float *f, *g, *k;   /* [N, HK] */
    float *v;           /* [N, HV] */
    float *o;           /* [N, HV] */
    float *rstd;        /* [N] */
    float *y;           /* [N, HV] */
} lina_hgrn2_acts;

int lina_hgrn2_check_dims(const lina_hgrn2_dims *d);
size_t lina_hgrn2_acts_floats(const lina_hgrn2_dims *d, int N);
void lina_hgrn2_acts_carve(lina_hgrn2_acts *a, float *buf, const lina_hgrn2_dims *d, int N);
size_t lina_hgrn2_scratch_floats(const lina_hgrn2_dims *d, int N);
/* lambda [HK] or NULL; h0, ht [B,H,K,V] or NULL */
int lina_hgrn2_forward(float *out, lina_hgrn2_acts *a, const float *x, const lina_hgrn2_dims *d,
                       const lina_hgrn2_params *p, const float *lambda, int B, int T, const float *h0, float *ht,
                       const lina_sp *sp, lina_form form, lina_ws *ws);
/* dx, *gp and dlambda [HK] (if lambda and dlambda are non-NULL) accumulate;
 * sp as given to the forward (kind.h; NULL: whole sequences). */
int lina_hgrn2_backward(float *dx, lina_hgrn2_params *gp, float *dlambda, const float *dout, const float *x,
                        const lina_hgrn2_acts *a, const lina_hgrn2_dims *d, const lina_hgrn2_params *p,
                        const float *lambda, int B, int T, float *scratch, const lina_sp *sp, lina_form form,
                        lina_ws *ws);

/* ------------------------------------------- Forgetting Transformer layer */

/*
 * FLA's ForgettingAttention (docs/mixers.md section 9.2), fox_layer.c:
 *
 *   q = x Wq^T (+ bq), k = x Wk^T (+ bk), v = x Wv^T (+ bv)      [N, HQ], [N, HKV], [N, HKV]
 *   f = logsigmoid(x Wf^T + bf)                                  [N, H] (one gate per query head)
 *   (qk_norm: per-head RMSNorm, eps 1e-5, weights over the full width [HQ] / [HKV])
 *   o = forgetting attention (causal, logit_ij += c_i - c_j, c = cumsum f; optional window;
 *       kv head j/G for query head j; no position encoding)
 *   (use_output_gate: o <- sigmoid(x Wg^T) * o)
 *   out = o Wo^T
 *
 * N = B*T; d = D / H; HQ = H*d, HKV = Hkv*d.
 */
typedef struct lina_fox_dims {
    int D, H, Hkv, d;
    int qkv_bias, qk_norm, use_output_gate;
    int window;          /* 0 = none */
} lina_fox_dims;

typedef struct lina_fox_params {
    float *q_proj, *q_bias;  /* [HQ, D], [HQ] (bias only with qkv_bias) */
    float *k_proj, *k_bias;  /* [HKV, D], [HKV] */
    float *v_proj, *v_bias;  /* [HKV, D], [HKV] */
    float *f_proj, *f_bias;  /* [H, D], [H] */
    float *g_proj;           /* [HQ, D] (use_output_gate only) */
    float *q_norm, *k_norm;  /* [HQ], [HKV] (qk_norm only) */
    float *o_proj;           /* [D, HQ] */
} lina_fox_params;

typedef struct lina_fox_acts {
    float *qp, *kp, *vp;   /* [N, HQ], [N, HKV], [N, HKV] projections */
    float *q, *kn;         /* [N, HQ], [N, HKV] after qk_norm (== qp, kp without) */
    float *rq, *rk;        /* [N*H], [N*Hkv] qk_norm statistics */
    float *k, *v;          /* [N, HQ] kv heads repeated */
    float *fp, *f;         /* [N, H] gate logits and log forget gates */
    float *o;              /* [N, HQ] attention output */
    float *stat;           /* [N*H*2] softmax row statistics */
    float *gp, *y;         /* [N, HQ] output-gate logits and the gated output (== o without the gate) */
} lina_fox_acts;

int lina_fox_check_dims(const lina_fox_dims *d);
size_t lina_fox_acts_floats(const lina_fox_dims *d, int N);
void lina_fox_acts_carve(lina_fox_acts *a, float *buf, const lina_fox_dims *d, int N);
size_t lina_fox_scratch_floats(const lina_fox_dims *d, int N);
int lina_fox_forward(float *out, lina_fox_acts *a, const float *x, const lina_fox_dims *d,
                     const lina_fox_params *p, int B, int T, lina_ws *ws);
/* Inference with a cache: kc, vc [B, Hkv, cap, d] the keys and values, fc [B, H, cap] the
 * per-token log forget gates of positions [0, pos); this call appends [pos, pos+T) and
 * attends from them (the gate sums re-accumulated in double from the cached gates). */
int lina_fox_forward_cached(float *out, lina_fox_acts *a, const float *x, const lina_fox_dims *d,
                            const lina_fox_params *p, int B, int T, float *kc, float *vc, float *fc, int pos,
                            int cap);
int lina_fox_backward(float *dx, lina_fox_params *gp, const float *dout, const float *x, const lina_fox_acts *a,
                      const lina_fox_dims *d, const lina_fox_params *p, int B, int T, float *scratch, lina_ws *ws);

/* ----------------------------------------------- HGRN / HGRN2 lower bounds */

/* The forget gate with an optional lower bound (HGRN, HGRN2; hgrn2_layer.c):
 * g = log(lambda + (1 - lambda) sigmoid(f)) with lambda [C] per channel, or
 * logsigmoid(f) (lambda NULL); k = 1 - exp(g). g, k, f [N, C]. */
void lina_lb_gate_forward(float *g, float *k, const float *f, const float *lambda, size_t N, int C);
/* Its backward from dg and dk [N, C]: df [N, C] written (may be dg), dlambda
 * [C] accumulated (lambda and dlambda non-NULL), rows in order per channel. */
void lina_lb_gate_backward(float *df, float *dlambda, const float *dg, const float *dk, const float *f,
                           const float *g, const float *lambda, size_t N, int C);
/* The model-level lower bounds of HGRN and HGRN2 (a kind's shared_* table entries):
 * model.lower_bounds [L, D] (zeros, no weight decay) when use_lower_bound; layer l > 0
 * gets lambda_l = sum_{j=1..l} softmax over the layers of lower_bounds, at
 * shared + (L + l) * D; its gradient accumulates at shared + (2L + l) * D. */
int lina_lower_bounds_build(lina_mixer_builder *b, const lina_config *c, void *dims, size_t *work);
int lina_lower_bounds_forward(const lina_mixer_call *c);
int lina_lower_bounds_backward(const lina_mixer_call *c);

/* ------------------------------------------------------------- HGRN layer */

/*
 * FLA's HGRNAttention (docs/mixers.md section 15.1), hgrn_layer.c, on the hgrn kernel:
 *
 *   i = x Wi^T, f = x Wf^T                        [N, E] (use_short_conv: each through a
 *                                                 ShortConvolution without activation)
 *   g = logsigmoid(f), or log(lambda + (1 - lambda) sigmoid(f)) with the layer's lower bound
 *   h_t = exp(g_t) h_{t-1} + SiLU(i_t) (1 - exp(g_t));  o = h
 *   y = RMSNorm(o) over E * w * SiLU(x Wg^T);  out = y Wo^T
 *
 * N = B*T, E = D * expand_ratio.
 */
typedef struct lina_hgrn_dims {
    int D, E;
    float norm_eps;
    int use_short_conv, conv_size;
} lina_hgrn_dims;

typedef struct lina_hgrn_params {
    float *i_proj, *f_proj, *g_proj;  /* [E, D] */
    float *g_norm;                    /* [E] or NULL (elementwise_affine false) */
    float *o_proj;                    /* [D, E] */
    float *i_conv, *f_conv;           /* [E, W] (use_short_conv) */
} lina_hgrn_params;

typedef struct lina_hgrn_acts {
    float *ip, *fp;     /* [N, E] projections */
    float *ic, *fc;     /* [N, E] after the short convs (== ip, fp without) */
    float *g, *k;       /* [N, E] log forget gate, 1 - exp(g) */
    float *xin, *o;     /* [N, E] recurrence input and output */
    float *gp, *y;      /* [N, E] output-gate logits, normed output */
    float *rstd;        /* [N] */
} lina_hgrn_acts;

int lina_hgrn_check_dims(const lina_hgrn_dims *d);
size_t lina_hgrn_acts_floats(const lina_hgrn_dims *d, int N);
void lina_hgrn_acts_carve(lina_hgrn_acts *a, float *buf, const lina_hgrn_dims *d, int N);
size_t lina_hgrn_scratch_floats(const lina_hgrn_dims *d, int N);
/* decode state: h [B, E], then the i and f conv tails [B, E, W] each (use_short_conv) */
size_t lina_hgrn_state_floats(const lina_hgrn_dims *d, int B);
/* lambda [E] or NULL; state (lina_hgrn_state_floats) read and overwritten, or NULL (zeros, not kept) */
int lina_hgrn_forward(float *out, lina_hgrn_acts *a, const float *x, const lina_hgrn_dims *d,
                      const lina_hgrn_params *p, const float *lambda, int B, int T, float *state, lina_form form,
                      lina_ws *ws);
/* dx, *gp and dlambda [E] (with lambda) accumulate; the forward ran without a state. */
int lina_hgrn_backward(float *dx, lina_hgrn_params *gp, float *dlambda, const float *dout, const float *x,
                       const lina_hgrn_acts *a, const lina_hgrn_dims *d, const lina_hgrn_params *p,
                       const float *lambda, int B, int T, float *scratch, lina_form form, lina_ws *ws);

#endif
