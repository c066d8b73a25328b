/* ref_mamba.h -- plain double-precision reference of the Mamba-1 selective
 * scan (tests only). Layouts as lina_mamba_fwd: u, delta, z, o [B,T,E];
 * A [E,N]; Bm, Cm [B,T,N]; D, delta_bias [E]; h0, ht [B,E,N]. D, z,
 * delta_bias, h0 may be NULL. */
#ifndef LINA_TEST_REF_MAMBA_H
#define LINA_TEST_REF_MAMBA_H

typedef struct ref_mamba_in {
    int B, T, E, N;
    int softplus;
    const double *u, *delta, *A, *Bm, *Cm, *D, *z, *delta_bias, *h0;
} ref_mamba_in;

/* ht may be NULL */
void ref_mamba_fwd(const ref_mamba_in *in, double *o, double *ht);

typedef struct ref_mamba_grad {
    double *du, *ddelta, *dA, *dB, *dC, *dD, *dz, *ddelta_bias, *dh0; /* each may be NULL */
} ref_mamba_grad;

/* Gradients of sum(o * dout) + sum(ht * dht) (dht may be NULL), by reverse-mode
 * differentiation of each step with every state kept. */
void ref_mamba_bwd(const ref_mamba_in *in, const double *dout, const double *dht, ref_mamba_grad *g);

#endif
