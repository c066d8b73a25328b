/* ref_rwkv7.c -- the DPLR recurrence in double, token by token, and its
 * reverse-mode gradient (every state kept). */
#include "ref_rwkv7.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RW_ROW(b, t, h, D) ((((size_t)(b) * T + (t)) * H + (h)) * (size_t)(D))

/* states of head (b, h): S[t] for t = 0..T (S[0] = h0) */
static double *rw_states(int b, int h, int T, int H, int K, int V, const double *w, const double *k,
                         const double *v, const double *a, const double *bb, const double *h0)
{
    const size_t KV = (size_t)K * V;
    double *S = calloc((size_t)(T + 1) * KV, sizeof(double));
    double *u = calloc((size_t)V, sizeof(double));
    if (h0) {
        memcpy(S, h0 + ((size_t)b * H + h) * KV, KV * sizeof(double));
    }
    for (int t = 0; t < T; t++) {
        const double *Sp = S + (size_t)t * KV;
        double *Sc = S + (size_t)(t + 1) * KV;
        const size_t rk = RW_ROW(b, t, h, K), rv = RW_ROW(b, t, h, V);
        for (int j = 0; j < V; j++) {
            u[j] = 0.0;
            for (int i = 0; i < K; i++) {
                u[j] += a[rk + i] * Sp[(size_t)i * V + j];
            }
        }
        for (int i = 0; i < K; i++) {
            for (int j = 0; j < V; j++) {
                Sc[(size_t)i * V + j] = exp(w[rk + i]) * Sp[(size_t)i * V + j] + bb[rk + i] * u[j] +
                                        k[rk + i] * v[rv + j];
            }
        }
    }
    free(u);
    return S;
}

void ref_rwkv7_fwd(int B, int T, int H, int K, int V, double s, const double *r, const double *w,
                   const double *k, const double *v, const double *a, const double *b, const double *h0,
                   double *o, double *ht)
{
    const size_t KV = (size_t)K * V;
    for (int bi = 0; bi < B; bi++) {
        for (int h = 0; h < H; h++) {
            double *S = rw_states(bi, h, T, H, K, V, w, k, v, a, b, h0);
            for (int t = 0; t < T; t++) {
                const double *St = S + (size_t)(t + 1) * KV;
                for (int j = 0; j < V; j++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += r[RW_ROW(bi, t, h, K) + i] * St[(size_t)i * V + j];
                    }
                    o[RW_ROW(bi, t, h, V) + j] = s * acc;
                }
            }
            if (ht) {
                memcpy(ht + ((size_t)bi * H + h) * KV, S + (size_t)T * KV, KV * sizeof(double));
            }
            free(S);
        }
    }
}

void ref_rwkv7_bwd(int B, int T, int H, int K, int V, double s, const double *r, const double *w,
                   const double *k, const double *v, const double *a, const double *b, const double *h0,
                   const double *dout, const double *dht, double *dr, double *dw, double *dk, double *dv,
                   double *da, double *db, double *dh0)
{
    const size_t KV = (size_t)K * V;
    double *R = malloc(KV * sizeof(double)), *u = malloc((size_t)V * sizeof(double));
    double *c = malloc((size_t)V * sizeof(double));
    for (int bi = 0; bi < B; bi++) {
        for (int h = 0; h < H; h++) {
            double *S = rw_states(bi, h, T, H, K, V, w, k, v, a, b, h0);
            if (dht) {
                memcpy(R, dht + ((size_t)bi * H + h) * KV, KV * sizeof(double));
            } else {
                memset(R, 0, KV * sizeof(double));
            }
            for (int t = T - 1; t >= 0; t--) {
                const double *St = S + (size_t)(t + 1) * KV, *Sp = S + (size_t)t * KV;
                const size_t rk = RW_ROW(bi, t, h, K), rv = RW_ROW(bi, t, h, V);
                /* o = s St^T r */
                for (int i = 0; i < K; i++) {
                    double acc = 0.0;
                    for (int j = 0; j < V; j++) {
                        R[(size_t)i * V + j] += s * r[rk + i] * dout[rv + j];
                        acc += St[(size_t)i * V + j] * dout[rv + j];
                    }
                    dr[rk + i] = s * acc;
                }
                /* St = diag(e) Sp + b (Sp^T a)^T + k v^T */
                for (int j = 0; j < V; j++) {
                    u[j] = 0.0;
                    c[j] = 0.0;
                    dv[rv + j] = 0.0;
                    for (int i = 0; i < K; i++) {
                        u[j] += a[rk + i] * Sp[(size_t)i * V + j];
                        c[j] += b[rk + i] * R[(size_t)i * V + j];
                        dv[rv + j] += k[rk + i] * R[(size_t)i * V + j];
                    }
                }
                for (int i = 0; i < K; i++) {
                    const double e = exp(w[rk + i]);
                    double sk = 0.0, sb = 0.0, sa = 0.0, sw = 0.0;
                    for (int j = 0; j < V; j++) {
                        const double Rij = R[(size_t)i * V + j], Sij = Sp[(size_t)i * V + j];
                        sk += Rij * v[rv + j];
                        sb += Rij * u[j];
                        sa += Sij * c[j];
                        sw += Rij * Sij;
                    }
                    dk[rk + i] = sk;
                    db[rk + i] = sb;
                    da[rk + i] = sa;
                    dw[rk + i] = e * sw;
                }
                for (int i = 0; i < K; i++) {
                    const double e = exp(w[rk + i]);
                    for (int j = 0; j < V; j++) {
                        R[(size_t)i * V + j] = e * R[(size_t)i * V + j] + a[rk + i] * c[j];
                    }
                }
            }
            if (dh0) {
                memcpy(dh0 + ((size_t)bi * H + h) * KV, R, KV * sizeof(double));
            }
            free(S);
        }
    }
    free(R);
    free(u);
    free(c);
}
