/* ref_mixers2.h -- plain double-precision references for mlstm, softmax_attn
 * and lion (tests only). Layouts as in lina.h: [B,T,H,D] activations,
 * [B,H,K,V] states. */
#ifndef LINA_TEST_REF_MIX2_H
#define LINA_TEST_REF_MIX2_H

#include <stddef.h>

/* mLSTM, step by step (docs/ops.md section 3). ks: key scale. h0, n0, m0 all given or all
 * NULL (zero states, m0 = 0). ht, nt, mt may be NULL. */
void ref_mlstm_fwd(int B, int T, int H, int K, int V, double ks, const double *q, const double *k,
                   const double *v, const double *ig, const double *fg, const double *h0,
                   const double *n0, const double *m0, double *o, double *ht, double *nt,
                   double *mt);
/* Gradients of sum(o*dout) + sum(ht*dht) + sum(nt*dnt) + sum(mt*dmt) by
 * reverse-mode differentiation of every step, through both maxes (ties: carry
 * branch lf+m_{t-1} >= i; |q.n| >= exp(-m)). dht, dnt, dmt may be NULL; dh0,
 * dn0, dm0 are written when non-NULL. */
void ref_mlstm_bwd(int B, int T, int H, int K, int V, double ks, const double *q, const double *k,
                   const double *v, const double *ig, const double *fg, const double *h0,
                   const double *n0, const double *m0, const double *dout, const double *dht,
                   const double *dnt, const double *dmt, double *dq, double *dk, double *dv,
                   double *di, double *df, double *dh0, double *dn0, double *dm0);

/* Softmax attention, quadratic. window 0 = none; non_causal: all keys. */
void ref_softmax_fwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                     const double *q, const double *k, const double *v, double *o);
void ref_softmax_bwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                     const double *q, const double *k, const double *v, const double *dout,
                     double *dq, double *dk, double *dv);

/* Forgetting attention: softmax attention (causal, optional window) whose
 * logit of key j in row i gets sum_{j < u <= i} g_u (g [B,T,H] log forget
 * gates; NULL: plain softmax attention); dg [B,T,H] (skipped when NULL). */
void ref_fox_fwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                 const double *q, const double *k, const double *v, const double *g, double *o);
void ref_fox_bwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                 const double *q, const double *k, const double *v, const double *g, const double *dout,
                 double *dq, double *dk, double *dv, double *dg);

/* LION-S, quadratic masked form with M_ij of docs/ops.md section 3. */
void ref_lion_fwd(int B, int T, int H, int K, int V, double s, int normalize, const double *q,
                  const double *k, const double *v, const double *g, double *o);
void ref_lion_bwd(int B, int T, int H, int K, int V, double s, int normalize, const double *q,
                  const double *k, const double *v, const double *g, const double *dout,
                  double *dq, double *dk, double *dv, double *dg);

#endif
