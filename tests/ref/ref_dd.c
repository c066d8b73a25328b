/* ref_dd.c -- double-precision step-by-step reference of
 *   S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,  o_t = s S_t^T q_t
 * and its exact gradients (stores every state; for tests only). */
#include "ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double gate(int gk, const double *g, int b, int t, int h, int i, int T, int H, int K)
{
    switch (gk) {
    case 1:
        return g[h];
    case 2:
        return g[((size_t)b * T + t) * H + h];
    case 3:
        return g[(((size_t)b * T + t) * H + h) * K + i];
    default:
        return 0.0;
    }
}

#define IX(b, t, h, D) ((((size_t)(b) * T + (t)) * H + (h)) * (D))

void ref_dd_fwd(int B, int T, int H, int K, int V, double s, int gk, const double *g,
                const double *q, const double *k, const double *v, const double *h0,
                double *o, double *ht)
{
    double *S = malloc((size_t)K * V * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            size_t so = ((size_t)b * H + h) * K * V;
            for (size_t x = 0; x < (size_t)K * V; x++) {
                S[x] = h0 ? h0[so + x] : 0.0;
            }
            for (int t = 0; t < T; t++) {
                const double *qt = q + IX(b, t, h, K), *kt = k + IX(b, t, h, K), *vt = v + IX(b, t, h, V);
                for (int i = 0; i < K; i++) {
                    double a = exp(gate(gk, g, b, t, h, i, T, H, K));
                    for (int j = 0; j < V; j++) {
                        S[(size_t)i * V + j] = a * S[(size_t)i * V + j] + kt[i] * vt[j];
                    }
                }
                double *ot = o + IX(b, t, h, V);
                for (int j = 0; j < V; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += qt[i] * S[(size_t)i * V + j];
                    }
                    ot[j] = s * acc;
                }
            }
            if (ht) {
                memcpy(ht + so, S, (size_t)K * V * sizeof(double));
            }
        }
    }
    free(S);
}

void ref_dd_bwd(int B, int T, int H, int K, int V, double s, int gk, const double *g,
                const double *q, const double *k, const double *v, const double *h0,
                const double *dout, const double *dht, double *dq, double *dk, double *dv,
                double *dg, double *dh0)
{
    size_t KV = (size_t)K * V;
    double *S = malloc((size_t)(T + 1) * KV * sizeof(double));
    double *R = malloc(KV * sizeof(double));
    if (gk == 1 && dg) {
        memset(dg, 0, (size_t)H * sizeof(double));
    }
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            size_t so = ((size_t)b * H + h) * KV;
            for (size_t x = 0; x < KV; x++) {
                S[x] = h0 ? h0[so + x] : 0.0;
            }
            for (int t = 0; t < T; t++) {
                const double *kt = k + IX(b, t, h, K), *vt = v + IX(b, t, h, V);
                double *Sp = S + (size_t)t * KV, *Sn = Sp + KV;
                for (int i = 0; i < K; i++) {
                    double a = exp(gate(gk, g, b, t, h, i, T, H, K));
                    for (int j = 0; j < V; j++) {
                        Sn[(size_t)i * V + j] = a * Sp[(size_t)i * V + j] + kt[i] * vt[j];
                    }
                }
            }
            for (size_t x = 0; x < KV; x++) {
                R[x] = dht ? dht[so + x] : 0.0;
            }
            for (int t = T - 1; t >= 0; t--) {
                const double *qt = q + IX(b, t, h, K), *kt = k + IX(b, t, h, K), *vt = v + IX(b, t, h, V);
                const double *dot = dout + IX(b, t, h, V);
                const double *Sp = S + (size_t)t * KV, *Sn = Sp + KV;
                /* R_t = total gradient of S_t */
                for (int i = 0; i < K; i++) {
                    for (int j = 0; j < V; j++) {
                        R[(size_t)i * V + j] += s * qt[i] * dot[j];
                    }
                }
                for (int i = 0; i < K; i++) {
                    double aq = 0.0, ak = 0.0;
                    for (int j = 0; j < V; j++) {
                        aq += Sn[(size_t)i * V + j] * dot[j];
                        ak += R[(size_t)i * V + j] * vt[j];
                    }
                    dq[IX(b, t, h, K) + i] = s * aq;
                    dk[IX(b, t, h, K) + i] = ak;
                }
                for (int j = 0; j < V; j++) {
                    double a = 0.0;
                    for (int i = 0; i < K; i++) {
                        a += R[(size_t)i * V + j] * kt[i];
                    }
                    dv[IX(b, t, h, V) + j] = a;
                }
                /* dP = R S_{t-1}^T, diagonal part times exp(g) */
                double dsc = 0.0;
                for (int i = 0; i < K; i++) {
                    double a = exp(gate(gk, g, b, t, h, i, T, H, K)), acc = 0.0;
                    for (int j = 0; j < V; j++) {
                        acc += R[(size_t)i * V + j] * Sp[(size_t)i * V + j];
                    }
                    if (gk == 3 && dg) {
                        dg[IX(b, t, h, K) + i] = a * acc;
                    }
                    dsc += a * acc;
                    for (int j = 0; j < V; j++) {
                        R[(size_t)i * V + j] *= a;
                    }
                }
                if (gk == 2 && dg) {
                    dg[((size_t)b * T + t) * H + h] = dsc;
                } else if (gk == 1 && dg) {
                    dg[h] += dsc;
                }
            }
            if (dh0) {
                memcpy(dh0 + so, R, KV * sizeof(double));
            }
        }
    }
    free(S);
    free(R);
}
