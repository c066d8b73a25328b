/* ref_hgrn.c -- the double reference of HGRN's recurrence, step by step. */
#include "ref_hgrn.h"

#include <math.h>
#include <stdlib.h>

void ref_hgrn_fwd(int B, int T, int D, const double *x, const double *g, const double *h0, double *o, double *ht)
{
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < D; c++) {
            double h = h0 ? h0[(size_t)b * D + c] : 0.0;
            for (int t = 0; t < T; t++) {
                size_t i = ((size_t)b * T + t) * D + c;
                h = exp(g[i]) * h + x[i];
                o[i] = h;
            }
            if (ht) {
                ht[(size_t)b * D + c] = h;
            }
        }
    }
}

void ref_hgrn_bwd(int B, int T, int D, const double *x, const double *g, const double *h0, const double *dout,
                  const double *dht, double *dx, double *dg, double *dh0)
{
    double *h = malloc(((size_t)T + 1) * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < D; c++) {
            h[0] = h0 ? h0[(size_t)b * D + c] : 0.0; /* h[t + 1] = h_t */
            for (int t = 0; t < T; t++) {
                size_t i = ((size_t)b * T + t) * D + c;
                h[t + 1] = exp(g[i]) * h[t] + x[i];
            }
            double dh = dht ? dht[(size_t)b * D + c] : 0.0; /* dL/dh_t, going back */
            for (int t = T - 1; t >= 0; t--) {
                size_t i = ((size_t)b * T + t) * D + c;
                dh += dout[i];
                dx[i] = dh;
                dg[i] = dh * exp(g[i]) * h[t];
                dh *= exp(g[i]);
            }
            if (dh0) {
                dh0[(size_t)b * D + c] = dh;
            }
        }
    }
    free(h);
}
