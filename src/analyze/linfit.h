/* linfit.h -- linear fits between two sets of activations: the linearity score of
 * "Your Transformer is Secretly Linear" (Razzhigaev et al., 2024) and the closed-form
 * least-squares map that replaces a span of blocks (ReplaceMe, Shopkhoev et al., 2025).
 *
 * Both work on rows: X [n, din], Y [n, dout], float32 row-major, and compute in
 * double. Not public API (include/lina.h); used by `lina analyze` and the tests. */
#ifndef LINA_LINFIT_H
#define LINA_LINFIT_H

#include <stdint.h>

/* The linearity score of Y against X (din = dout = d): both are centred (column
 * means removed) and scaled to unit Frobenius norm, then
 *     score = 1 - min_A || X~ A - Y~ ||_F^2,
 * the share of Y's (centred) variation an unconstrained linear map of X explains.
 * An exact linear (or affine) map scores 1; Y independent of X scores about d / n.
 * A tiny ridge (1e-9 of the mean diagonal) keeps rank-deficient X solvable.
 * Returns 0, or a lina error code (bad sizes, n < 2, a constant Y, non-finite data)
 * with lina_last_error() set. */
int lina_linearity_score(const float *X, const float *Y, int64_t n, int d, double *score);

/* The least-squares map W [dout, din] (nn.Linear layout) minimising
 *     || X W^T - Y ||_F^2 + lambda || W ||_F^2,   lambda = ridge * trace(X^T X) / din,
 * solved by a Cholesky factorisation of X^T X + lambda I. With ridge 0 and X of
 * full column rank, a planted W is recovered to round-off. Also returns the
 * relative residual ||X W^T - Y||^2 / ||Y||^2 when rel_resid is not NULL. */
int lina_lstsq(const float *X, const float *Y, int64_t n, int din, int dout, double ridge, float *W,
               double *rel_resid);

#endif
