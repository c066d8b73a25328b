/* ref_mamba.c -- the selective scan in double, token by token, and its
 * reverse-mode gradient (every state kept). */
#include "ref_mamba.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double rm_sig(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

static double rm_pre(const ref_mamba_in *in, size_t r, int c)
{
    return in->delta[r] + (in->delta_bias ? in->delta_bias[c] : 0.0);
}

static double rm_dt(const ref_mamba_in *in, size_t r, int c)
{
    const double x = rm_pre(in, r, c);
    return in->softplus ? log1p(exp(x)) : x;
}

/* all states: hs[b][t+1][c][n], hs[b][0] = h0 */
static double *rm_states(const ref_mamba_in *in)
{
    const int B = in->B, T = in->T, E = in->E, N = in->N;
    const size_t EN = (size_t)E * N;
    double *hs = calloc((size_t)B * (T + 1) * EN + 1, sizeof(double));
    for (int b = 0; b < B; b++) {
        double *h = hs + (size_t)b * (T + 1) * EN;
        if (in->h0) {
            memcpy(h, in->h0 + (size_t)b * EN, EN * sizeof(double));
        }
        for (int t = 0; t < T; t++) {
            const double *Bt = in->Bm + ((size_t)b * T + t) * N;
            for (int c = 0; c < E; c++) {
                const size_t r = ((size_t)b * T + t) * E + c;
                const double dt = rm_dt(in, r, c);
                for (int n = 0; n < N; n++) {
                    const size_t i = (size_t)c * N + n;
                    h[EN + i] = exp(dt * in->A[i]) * h[i] + dt * in->u[r] * Bt[n];
                }
            }
            h += EN;
        }
    }
    return hs;
}

void ref_mamba_fwd(const ref_mamba_in *in, double *o, double *ht)
{
    const int B = in->B, T = in->T, E = in->E, N = in->N;
    const size_t EN = (size_t)E * N;
    double *hs = rm_states(in);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const double *h = hs + ((size_t)b * (T + 1) + t + 1) * EN;
            const double *Ct = in->Cm + ((size_t)b * T + t) * N;
            for (int c = 0; c < E; c++) {
                const size_t r = ((size_t)b * T + t) * E + c;
                double y = in->D ? in->D[c] * in->u[r] : 0.0;
                for (int n = 0; n < N; n++) {
                    y += h[(size_t)c * N + n] * Ct[n];
                }
                if (in->z) {
                    y *= in->z[r] * rm_sig(in->z[r]);
                }
                o[r] = y;
            }
        }
        if (ht) {
            memcpy(ht + (size_t)b * EN, hs + ((size_t)b * (T + 1) + T) * EN, EN * sizeof(double));
        }
    }
    free(hs);
}

static void rm_zero(double *p, size_t n)
{
    if (p) {
        memset(p, 0, n * sizeof(double));
    }
}

void ref_mamba_bwd(const ref_mamba_in *in, const double *dout, const double *dht, ref_mamba_grad *g)
{
    const int B = in->B, T = in->T, E = in->E, N = in->N;
    const size_t EN = (size_t)E * N, BTE = (size_t)B * T * E, BTN = (size_t)B * T * N;
    double *hs = rm_states(in);
    double *R = calloc(EN + 1, sizeof(double));
    rm_zero(g->du, BTE);
    rm_zero(g->ddelta, BTE);
    rm_zero(g->dz, BTE);
    rm_zero(g->dA, EN);
    rm_zero(g->dB, BTN);
    rm_zero(g->dC, BTN);
    rm_zero(g->dD, (size_t)E);
    rm_zero(g->ddelta_bias, (size_t)E);
    for (int b = 0; b < B; b++) {
        if (dht) {
            memcpy(R, dht + (size_t)b * EN, EN * sizeof(double));
        } else {
            memset(R, 0, EN * sizeof(double));
        }
        for (int t = T - 1; t >= 0; t--) {
            const double *h = hs + ((size_t)b * (T + 1) + t + 1) * EN, *hp = h - EN;
            const double *Bt = in->Bm + ((size_t)b * T + t) * N, *Ct = in->Cm + ((size_t)b * T + t) * N;
            for (int c = 0; c < E; c++) {
                const size_t r = ((size_t)b * T + t) * E + c;
                double s = 0.0;
                for (int n = 0; n < N; n++) {
                    s += h[(size_t)c * N + n] * Ct[n];
                }
                const double y = s + (in->D ? in->D[c] * in->u[r] : 0.0);
                double dy = dout[r];
                if (in->z) {
                    const double z = in->z[r], sg = rm_sig(z);
                    if (g->dz) {
                        g->dz[r] = dout[r] * y * (sg + z * sg * (1.0 - sg));
                    }
                    dy = dout[r] * z * sg;
                }
                if (g->dD && in->D) {
                    g->dD[c] += dy * in->u[r];
                }
                double du = in->D ? in->D[c] * dy : 0.0;
                const double dt = rm_dt(in, r, c);
                double ddt = 0.0;
                for (int n = 0; n < N; n++) {
                    const size_t i = (size_t)c * N + n;
                    R[i] += Ct[n] * dy;
                    if (g->dC) {
                        g->dC[((size_t)b * T + t) * N + n] += h[i] * dy;
                    }
                    const double e = exp(dt * in->A[i]);
                    /* h = e hp + dt u B */
                    ddt += R[i] * (in->A[i] * e * hp[i] + in->u[r] * Bt[n]);
                    du += R[i] * dt * Bt[n];
                    if (g->dB) {
                        g->dB[((size_t)b * T + t) * N + n] += R[i] * dt * in->u[r];
                    }
                    if (g->dA) {
                        g->dA[i] += R[i] * dt * e * hp[i];
                    }
                    R[i] *= e;
                }
                const double dpre = in->softplus ? ddt * rm_sig(rm_pre(in, r, c)) : ddt;
                if (g->du) {
                    g->du[r] = du;
                }
                if (g->ddelta) {
                    g->ddelta[r] = dpre;
                }
                if (g->ddelta_bias && in->delta_bias) {
                    g->ddelta_bias[c] += dpre;
                }
            }
        }
        if (g->dh0) {
            memcpy(g->dh0 + (size_t)b * EN, R, EN * sizeof(double));
        }
    }
    free(R);
    free(hs);
}
