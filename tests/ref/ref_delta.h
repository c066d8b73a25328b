/* ref_delta.h -- plain double-precision recurrent reference of the delta-rule
 * engine (delta_rule, gated_delta_rule, delta_product), for the tests. */
#ifndef LINA_TEST_REF_DELTA_H
#define LINA_TEST_REF_DELTA_H

#include <stddef.h>

/* n sub-steps per token; rows r = t*n + j of k, v, beta.
 *   h <- exp(g_t) h (g may be NULL) or h <- diag(exp(gk_t)) h (KDA: gk may be
 *   NULL; not both); for j: h <- h + beta k (v - h^T k)^T; o_t = s h^T q_t.
 * q [B,T,H,K]; k [B,T*n,H,K]; v [B,T*n,H,V]; beta [B,T*n,H]; g [B,T,H] or NULL;
 * gk [B,T,H,K] or NULL; h0 [B,H,K,V] or NULL; o [B,T,H,V]; ht [B,H,K,V] or NULL. */
void ref_delta_fwd(int B, int T, int H, int K, int V, int n, double s, const double *q,
                   const double *k, const double *v, const double *beta, const double *g,
                   const double *gk, const double *h0, double *o, double *ht);

/* Exact gradients of sum(o*dout) + sum(ht*dht) (dht may be NULL) by the
 * backward recurrence (stores every state). dg is skipped when g or dg is
 * NULL, dgk when gk or dgk is NULL, dh0 when NULL. */
void ref_delta_bwd(int B, int T, int H, int K, int V, int n, double s, const double *q,
                   const double *k, const double *v, const double *beta, const double *g,
                   const double *gk, const double *h0, const double *dout, const double *dht,
                   double *dq, double *dk, double *dv, double *dbeta, double *dg, double *dgk,
                   double *dh0);

/* Row-wise L2 norm y = x / sqrt(sum x^2 + 1e-6) over `rows` rows of D, and its
 * backward dx = (dy - y (y . dy)) / sqrt(sum x^2 + 1e-6). */
void ref_l2norm_fwd(size_t rows, int D, const double *x, double *y);
void ref_l2norm_bwd(size_t rows, int D, const double *x, const double *dy, double *dx);

#endif
