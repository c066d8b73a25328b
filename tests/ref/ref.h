/* ref.h -- plain double-precision recurrent references used by the tests. */
#ifndef LINA_TEST_REF_H
#define LINA_TEST_REF_H

#include <stddef.h>

/* Diagonal-decay linear attention, recurrent, double.
 * gk: 0 none, 1 head (g[H]), 2 scalar (g[B,T,H]), 3 vector (g[B,T,H,K]).
 * q,k [B,T,H,K]; v, o [B,T,H,V]; h0, ht [B,H,K,V] (h0 may be NULL). */
void ref_dd_fwd(int B, int T, int H, int K, int V, double s, int gk, const double *g,
                const double *q, const double *k, const double *v, const double *h0,
                double *o, double *ht);
/* Gradients of sum(o*dout) + sum(ht*dht) (dht may be NULL). dg has g's shape
 * (head gates: [H]); dh0 may be NULL. Uses the recurrence R_{t-1} = q do^T + P^T R_t. */
void ref_dd_bwd(int B, int T, int H, int K, int V, double s, int gk, const double *g,
                const double *q, const double *k, const double *v, const double *h0,
                const double *dout, const double *dht, double *dq, double *dk, double *dv,
                double *dg, double *dh0);

#endif
