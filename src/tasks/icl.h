/* icl.h -- in-context linear regression with linear transformers (docs/tasks.md section 3).
 *
 * Not part of the public API (include/lina.h); used by `lina task icl-regression`
 * and by tests/test_icl.c.
 *
 * Data (Ahn et al. 2024; Vladymyrov et al. 2024): per sequence w ~ N(0, I_d),
 * x_i ~ N(0, I_d) for i = 1..n and a query x_q, y_i = <w, x_i> + sigma * xi_i
 * (xi_i ~ N(0, 1); sigma = 0 without noise, drawn per sequence with mixed noise),
 * query label y_q = <w, x_q> (noiseless). Tokens are the rows of
 *
 *     Z [T, D] = [[x_1, y_1], ..., [x_n, y_n], [x_q, 0]],   T = n + 1, D = d + 1.
 *
 * Model (the row form of Ahn et al.'s code; von Oswald's column form transposed):
 * L layers of residual linear self-attention with H heads,
 *
 *     Z <- Z + (1/n) sum_h (Z Qt_h Z^T) A (Z Pt_h^T),   A = diag(1, ..., 1, 0),
 *
 * Pt_h, Qt_h [D, D]; A removes the query token as a source (every row, the query's
 * included, attends to the n context tokens). Because A keeps only context rows this
 * equals Z <- Z + Z W with W = sum_h Qt_h G Pt_h^T and G = Zc^T Zc / n (Zc the n
 * context rows): the linear (O(T D^2)) form, which is what lina computes.
 * The prediction is -Z_L[n, d] and the loss (Z_L[n, d] + y_q)^2, averaged over a batch.
 *
 * Variants: LINA_ICL_AHN: Pt = [[P, 0], [0, 1]], Qt = [[Q, 0], [0, 0]] with trainable
 * P, Q [d, d] (Ahn et al.; 2 L H d^2 parameters); LINA_ICL_FULL: Pt, Qt entirely
 * trainable (Vladymyrov et al.'s FULL; 2 L H D^2 parameters).
 */
#ifndef LINA_ICL_H
#define LINA_ICL_H

#include <stdint.h>
#include <stdio.h>

/* ------------------------------------------------------------------ data */

enum {
    LINA_ICL_NOISE_NONE = 0,    /* y_i = <w, x_i> */
    LINA_ICL_NOISE_MIXED = 1,   /* sigma drawn uniformly from sigmas[0..nsigma-1] per sequence */
    LINA_ICL_NOISE_UNIFORM = 2  /* sigma ~ U(0, sigma_max) per sequence */
};

#define LINA_ICL_MAX_SIGMAS 8

typedef struct lina_icl_data {
    int d, n;
    int noise;
    int nsigma;
    double sigmas[LINA_ICL_MAX_SIGMAS];
    double sigma_max;
} lina_icl_data;

/* Sequences first .. first+B-1 of the stream `stream`: each is a deterministic
 * function of (stream, index) only, so any split into batches or threads gives the
 * same data. Z [B, n+1, d+1]; yq [B] the query labels; sigma [B] the noise levels
 * (may be NULL); w [B, d] the task vectors (may be NULL). d <= 256. Returns 0, or
 * LINA_EINVAL for bad settings. */
int lina_icl_sample(const lina_icl_data *g, uint64_t stream, uint64_t first, int B,
                    float *Z, float *yq, float *sigma, float *w);

/* ----------------------------------------------------------------- model */

enum { LINA_ICL_AHN = 0, LINA_ICL_FULL = 1 };

typedef struct lina_icl_model {
    int d, n, L, H, variant;
    int64_t nparams;    /* L * H * 2 * D * D entries in the buffers */
    int64_t ntrain;     /* trainable entries among them */
    float *params;      /* [L, H, 2, D, D]: Pt_h then Qt_h of every layer and head */
    unsigned char *mask;/* [nparams] 1 = trainable; fixed entries keep their value */
} lina_icl_model;

/* Both variants start alike: the x blocks (P, Q) ~ N(0, init_std^2) from
 * splitmix64(seed), Pt[d][d] = 1, every other entry 0; AHN keeps those fixed, FULL
 * trains them. */
int lina_icl_model_init(lina_icl_model *m, int d, int n, int L, int H, int variant,
                        double init_std, uint64_t seed);
void lina_icl_model_free(lina_icl_model *m);

/* Forward of B sequences Z [B, T, D]: pred [B] = -Z_L[n, d]; Zout [B, T, D] the last
 * layer's tokens (may be NULL). OpenMP over sequences. */
int lina_icl_forward(const lina_icl_model *m, const float *Z, int B, float *Zout, float *pred);

/* Loss mean_b (Z_L[b, n, d] + yq[b])^2 (double) and its exact gradient with respect
 * to every entry of params (grad [nparams], zero on fixed entries). Deterministic for
 * any thread count (per-block sums added in a fixed order). */
int lina_icl_loss_grad(const lina_icl_model *m, const float *Z, const float *yq, int B,
                       double *loss, float *grad);

/* ------------------------------------------------------------- baselines */

/* Ridge regression on one sequence's context (double): w = (X^T X + lambda I)^-1 X^T y,
 * by Cholesky; lambda = 0 is least squares (the minimum-norm solution when n < d).
 * w_out [d] may be NULL. Returns the prediction <w, x_q>. */
double lina_icl_ridge(int d, int n, const float *Z, double lambda, double *w_out);

/* Adaptive ridge (Vladymyrov's ADARR): lambda = sigma_hat^2 = RSS_ols / (n - d)
 * (least squares when n <= d). */
double lina_icl_adaridge(int d, int n, const float *Z);

/* Gradient descent on the context's least-squares loss (1/2n) sum_i (<w, x_i> - y_i)^2
 * from w = 0: `steps` steps of size eta; returns <w, x_q>. The construction an
 * L-layer linear transformer can implement with L layers (von Oswald et al.). */
double lina_icl_gd(int d, int n, const float *Z, int steps, double eta);

/* ---------------------------------------------------------------- training */

enum { LINA_ICL_ADAM = 0, LINA_ICL_SGD = 1 };

typedef struct lina_icl_opts {
    lina_icl_data data;
    int layers, heads, variant;
    int64_t steps;
    int batch;
    double lr;
    int optim;          /* LINA_ICL_ADAM (betas beta1/beta2, eps 1e-8, no decay) or LINA_ICL_SGD */
    double beta1, beta2, momentum;
    double clip;        /* global-norm clipping (<= 0: off) */
    int cosine;         /* 1: lr decays by a cosine to lr / 10 over the run */
    double init_std;
    uint64_t seed;
    int test_size;      /* fresh test sequences (also the size of the lambda-tuning set) */
    int progress;       /* progress line on stderr when it is a terminal */
    double *curve;      /* optional [steps]: the training loss of every step */
} lina_icl_opts;

typedef struct lina_icl_result {
    int64_t nparams;        /* trainable parameters */
    double final_loss;      /* mean training loss of the last 1 % of steps (at least 1) */
    double test_mse;        /* the model on the test sequences */
    double ridge_mse;       /* ridge with lambda tuned on held-out sequences (CONSTRR) */
    double ridge_lambda;
    double lstsq_mse;       /* least squares */
    double oracle_mse;      /* ridge with the true lambda = sigma^2 of each sequence */
    double adaridge_mse;    /* ADARR */
    double gd_mse;          /* `layers` steps of GD from w = 0, eta tuned on held-out sequences */
    double gd_eta;
    double wall_s;
} lina_icl_result;

/* Defaults: Ahn et al.'s set-up (d 5, n 20, no noise; mixed-noise levels {1, 3},
 * sigma_max 3), 3 layers x 1 head, AHN, Adam lr 0.02 betas (0.9, 0.9), momentum 0.9
 * for SGD, clipping 1, init std 0.05, 1000 steps x batch 256, 10000 test sequences. */
void lina_icl_opts_default(lina_icl_opts *o);
/* Train from seed (data streams and init derived from it), then evaluate the model and
 * the baselines on fresh sequences. Results are identical for any thread count. */
int lina_icl_train(const lina_icl_opts *o, lina_icl_result *r);

/* ---------------------------------------------------------------- drivers */

/* The reduced reproduction (about 5 minutes on 2 cores): appends one markdown section
 * to md and writes outdir/icl_loss.png. Returns 0 or a lina error code. */
int lina_icl_paper(const char *outdir, int threads, FILE *md);

#endif
