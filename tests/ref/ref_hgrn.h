/* ref_hgrn.h -- plain double-precision reference of HGRN's element-wise gated
 * recurrence (tests only): h_t = exp(g_t) h_{t-1} + x_t, o_t = h_t; x, g, o
 * [B,T,D], h0, ht [B,D]. */
#ifndef LINA_TEST_REF_HGRN_H
#define LINA_TEST_REF_HGRN_H

/* h0 NULL: zero state; ht may be NULL. */
void ref_hgrn_fwd(int B, int T, int D, const double *x, const double *g, const double *h0, double *o, double *ht);
/* Gradients of sum(o * dout) + sum(ht * dht) by reverse-mode differentiation
 * of every step; dht NULL: zero; dh0 written when non-NULL. */
void ref_hgrn_bwd(int B, int T, int D, const double *x, const double *g, const double *h0, const double *dout,
                  const double *dht, double *dx, double *dg, double *dh0);

#endif
