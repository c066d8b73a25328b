/* ref_rwkv7.h -- plain double-precision reference of RWKV-7's DPLR delta rule
 * (tests only): S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,
 * o_t = s S_t^T r_t. r, w, k, a, b [B,T,H,K]; v, o [B,T,H,V]; h0, ht [B,H,K,V]
 * (h0 may be NULL, ht may be NULL). */
#ifndef LINA_TEST_REF_RWKV7_H
#define LINA_TEST_REF_RWKV7_H

void ref_rwkv7_fwd(int B, int T, int H, int K, int V, double s, const double *r, const double *w,
                   const double *k, const double *v, const double *a, const double *b, const double *h0,
                   double *o, double *ht);
/* Gradients of sum(o * dout) + sum(ht * dht) (dht may be NULL) by reverse-mode
 * differentiation of each step with every state kept; dh0 may be NULL. */
void ref_rwkv7_bwd(int B, int T, int H, int K, int V, double s, const double *r, const double *w,
                   const double *k, const double *v, const double *a, const double *b, const double *h0,
                   const double *dout, const double *dht, double *dr, double *dw, double *dk, double *dv,
                   double *da, double *db, double *dh0);

#endif
