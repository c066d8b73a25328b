/* ref_delta.c -- double-precision step-by-step reference of the delta-rule
 * engine and its exact gradients (stores every state; for tests only).
 *
 * Per token t: S' = exp(g_t) S (first sub-step only), then per sub-step
 *   u = v - S'^T k,  S = S' + beta k u^T;  o_t = s S^T q_t after the last one.
 * Backward (docs/mixers.md section 4.2), R = total gradient of the state after a row:
 *   dv = beta R^T k,  dbeta = k^T R u,  dk = beta (R u - S' R^T k),
 *   dS' = R - beta k (k^T R),  dg = sum(dS' * S'),  R_prev = exp(g) dS'.
 * A per-channel gate gk (KDA) decays row i of S by exp(gk_t[i]) instead:
 *   dgk[i] = sum_j (dS' * S')_ij,  R_prev = diag(exp(gk_t)) dS'. */
#include "ref_delta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RIX(b, t, h, TT, D) ((((size_t)(b) * (TT) + (size_t)(t)) * H + (size_t)(h)) * (size_t)(D))

/* one sub-step on S [K,V]: u = v - S^T k, S += beta k u^T (u may be NULL) */
static void ref_step(int K, int V, double *S, const double *k, const double *v, double beta,
                     double *u)
{
    for (int j = 0; j < V; j++) {
        double w = 0.0;
        for (int i = 0; i < K; i++) {
            w += S[(size_t)i * V + j] * k[i];
        }
        double uj = v[j] - w;
        if (u) {
            u[j] = uj;
        }
        for (int i = 0; i < K; i++) {
            S[(size_t)i * V + j] += beta * k[i] * uj;
        }
    }
}

/* S' = decay of token t's first sub-step applied to S (scalar g or per-channel gk) */
static void ref_decay(int b, int t, int h, int T, int H, int K, int V, const double *g,
                      const double *gk, double *S)
{
    for (int i = 0; i < K; i++) {
        const double a = exp(g ? g[((size_t)b * T + t) * H + h] : gk[RIX(b, t, h, T, K) + i]);
        for (int j = 0; j < V; j++) {
            S[(size_t)i * V + j] *= a;
        }
    }
}

void ref_delta_fwd(int B, int T, int H, int K, int V, int n, double s, const double *q,
                   const double *k, const double *v, const double *beta, const double *g,
                   const double *gk, const double *h0, double *o, double *ht)
{
    const size_t KV = (size_t)K * V;
    const int N = T * n;
    double *S = malloc(KV * sizeof(double)); /* [K,V] */
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const size_t so = ((size_t)b * H + h) * KV;
            for (size_t x = 0; x < KV; x++) {
                S[x] = h0 ? h0[so + x] : 0.0;
            }
            for (int t = 0; t < T; t++) {
                if (g || gk) {
                    ref_decay(b, t, h, T, H, K, V, g, gk, S);
                }
                for (int j = 0; j < n; j++) {
                    const int r = t * n + j;
                    ref_step(K, V, S, k + RIX(b, r, h, N, K), v + RIX(b, r, h, N, V),
                             beta[((size_t)b * N + r) * H + h], NULL);
                }
                const double *qt = q + RIX(b, t, h, T, K);
                double *ot = o + RIX(b, t, h, T, V);
                for (int jv = 0; jv < V; jv++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += qt[i] * S[(size_t)i * V + jv];
                    }
                    ot[jv] = s * acc;
                }
            }
            if (ht) {
                memcpy(ht + so, S, KV * sizeof(double));
            }
        }
    }
    free(S);
}

void ref_delta_bwd(int B, int T, int H, int K, int V, int n, double s, const double *q,
                   const double *k, const double *v, const double *beta, const double *g,
                   const double *gk, const double *h0, const double *dout, const double *dht,
                   double *dq, double *dk, double *dv, double *dbeta, double *dg, double *dgk,
                   double *dh0)
{
    const size_t KV = (size_t)K * V;
    const int N = T * n;
    double *St = malloc(((size_t)N + 1) * KV * sizeof(double)); /* [N+1][K,V] state before row r */
    double *Sp = malloc(KV * sizeof(double));                     /* [K,V] S' of a row */
    double *R = malloc(KV * sizeof(double));                      /* [K,V] */
    double *u = malloc((size_t)V * sizeof(double));               /* [V] */
    double *w = malloc((size_t)V * sizeof(double));               /* [V] */
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            const size_t so = ((size_t)b * H + h) * KV;
            for (size_t x = 0; x < KV; x++) {
                St[x] = h0 ? h0[so + x] : 0.0;
            }
            for (int r = 0; r < N; r++) {
                double *S = St + (size_t)(r + 1) * KV;
                memcpy(S, St + (size_t)r * KV, KV * sizeof(double));
                if ((g || gk) && r % n == 0) {
                    ref_decay(b, r / n, h, T, H, K, V, g, gk, S);
                }
                ref_step(K, V, S, k + RIX(b, r, h, N, K), v + RIX(b, r, h, N, V),
                         beta[((size_t)b * N + r) * H + h], NULL);
            }
            for (size_t x = 0; x < KV; x++) {
                R[x] = dht ? dht[so + x] : 0.0;
            }
            for (int t = T - 1; t >= 0; t--) {
                const double *qt = q + RIX(b, t, h, T, K), *dot = dout + RIX(b, t, h, T, V);
                const double *Sa = St + (size_t)(t * n + n) * KV; /* state after token t */
                double *dqt = dq + RIX(b, t, h, T, K);
                for (int i = 0; i < K; i++) {
                    double acc = 0.0;
                    for (int jv = 0; jv < V; jv++) {
                        R[(size_t)i * V + jv] += s * qt[i] * dot[jv];
                        acc += Sa[(size_t)i * V + jv] * dot[jv];
                    }
                    dqt[i] = s * acc;
                }
                for (int j = n - 1; j >= 0; j--) {
                    const int r = t * n + j;
                    const double *kr = k + RIX(b, r, h, N, K), *vr = v + RIX(b, r, h, N, V);
                    const double br = beta[((size_t)b * N + r) * H + h];
                    const double a = (g && j == 0) ? exp(g[((size_t)b * T + t) * H + h]) : 1.0;
                    for (size_t x = 0; x < KV; x++) {
                        Sp[x] = a * St[(size_t)r * KV + x];
                    }
                    if (gk && j == 0) {
                        ref_decay(b, t, h, T, H, K, V, NULL, gk, Sp);
                    }
                    for (int jv = 0; jv < V; jv++) {
                        double p = 0.0, ww = 0.0;
                        for (int i = 0; i < K; i++) {
                            p += Sp[(size_t)i * V + jv] * kr[i];
                            ww += R[(size_t)i * V + jv] * kr[i];
                        }
                        u[jv] = vr[jv] - p;
                        w[jv] = ww;
                    }
                    double db = 0.0;
                    for (int jv = 0; jv < V; jv++) {
                        dv[RIX(b, r, h, N, V) + jv] = br * w[jv];
                        db += w[jv] * u[jv];
                    }
                    dbeta[((size_t)b * N + r) * H + h] = db;
                    for (int i = 0; i < K; i++) {
                        double ru = 0.0, sw = 0.0;
                        for (int jv = 0; jv < V; jv++) {
                            ru += R[(size_t)i * V + jv] * u[jv];
                            sw += Sp[(size_t)i * V + jv] * w[jv];
                        }
                        dk[RIX(b, r, h, N, K) + i] = br * (ru - sw);
                    }
                    for (int i = 0; i < K; i++) {
                        for (int jv = 0; jv < V; jv++) {
                            R[(size_t)i * V + jv] -= br * kr[i] * w[jv];
                        }
                    }
                    if (g && j == 0) {
                        double acc = 0.0;
                        for (size_t x = 0; x < KV; x++) {
                            acc += R[x] * Sp[x];
                            R[x] *= a;
                        }
                        if (dg) {
                            dg[((size_t)b * T + t) * H + h] = acc;
                        }
                    }
                    if (gk && j == 0) {
                        for (int i = 0; i < K; i++) {
                            const double ai = exp(gk[RIX(b, t, h, T, K) + i]);
                            double acc = 0.0;
                            for (int jv = 0; jv < V; jv++) {
                                acc += R[(size_t)i * V + jv] * Sp[(size_t)i * V + jv];
                                R[(size_t)i * V + jv] *= ai;
                            }
                            if (dgk) {
                                dgk[RIX(b, t, h, T, K) + i] = acc;
                            }
                        }
                    }
                }
            }
            if (dh0) {
                memcpy(dh0 + so, R, KV * sizeof(double));
            }
        }
    }
    free(St);
    free(Sp);
    free(R);
    free(u);
    free(w);
}

void ref_l2norm_fwd(size_t rows, int D, const double *x, double *y)
{
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            ss += xr[i] * xr[i];
        }
        double inv = 1.0 / sqrt(ss + 1e-6);
        for (int i = 0; i < D; i++) {
            y[r * D + i] = xr[i] * inv;
        }
    }
}

void ref_l2norm_bwd(size_t rows, int D, const double *x, const double *dy, double *dx)
{
    for (size_t r = 0; r < rows; r++) {
        const double *xr = x + r * D, *dyr = dy + r * D;
        double ss = 0.0;
        for (int i = 0; i < D; i++) {
            ss += xr[i] * xr[i];
        }
        double inv = 1.0 / sqrt(ss + 1e-6), yd = 0.0;
        for (int i = 0; i < D; i++) {
            yd += xr[i] * inv * dyr[i];
        }
        for (int i = 0; i < D; i++) {
            dx[r * D + i] = (dyr[i] - xr[i] * inv * yd) * inv;
        }
    }
}
