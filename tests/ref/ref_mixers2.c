/* ref_mixers2.c -- double-precision references of mlstm (step by step, with a
 * hand-written reverse pass over every step), softmax attention and LION
 * (quadratic forms). Plain loops, every intermediate stored; tests only. */
#include "ref_mixers2.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IX(b, t, h, D) ((((size_t)(b) * T + (size_t)(t)) * H + (size_t)(h)) * (size_t)(D))
#define IG(b, t, h) (((size_t)(b) * T + (size_t)(t)) * H + (size_t)(h))

static double logsig(double x)
{
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double sigm(double x)
{
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* ================================================================ mLSTM */

/* per-step record of one (b,h) for the reverse pass */
typedef struct ml_step {
    double lf, a, m, fp, ip, qn, den;
    int reset;   /* m_t = i_t (i_t > a) */
    int qbranch; /* |qn| >= exp(-m) */
} ml_step;

/* Runs one (b,h); C[(T+1)*K*V], n[(T+1)*K], st[T] filled when non-NULL. */
static void ml_run(int b, int h, int T, int H, int K, int V, double ks, const double *q,
                   const double *k, const double *v, const double *ig, const double *fg,
                   const double *h0, const double *n0, const double *m0, double *o, double *C,
                   double *n, double *mlast, ml_step *st)
{
    const size_t KV = (size_t)K * V;
    const size_t so = ((size_t)b * H + h);
    for (size_t x = 0; x < KV; x++) {
        C[x] = h0 ? h0[so * KV + x] : 0.0;
    }
    for (int x = 0; x < K; x++) {
        n[x] = n0 ? n0[so * K + x] : 0.0;
    }
    double mprev = m0 ? m0[so] : 0.0;
    for (int t = 0; t < T; t++) {
        const double *qt = q + IX(b, t, h, K), *kt = k + IX(b, t, h, K), *vt = v + IX(b, t, h, V);
        const double it = ig[IG(b, t, h)];
        ml_step s;
        s.lf = logsig(fg[IG(b, t, h)]);
        s.a = s.lf + mprev;
        s.reset = it > s.a;
        s.m = s.reset ? it : s.a;
        s.fp = exp(s.a - s.m);
        s.ip = exp(it - s.m);
        const double *Cp = C + (size_t)t * KV, *np = n + (size_t)t * K;
        double *Cn = C + (size_t)(t + 1) * KV, *nn = n + (size_t)(t + 1) * K;
        for (int x = 0; x < K; x++) {
            double kk = ks * kt[x];
            for (int j = 0; j < V; j++) {
                Cn[(size_t)x * V + j] = s.fp * Cp[(size_t)x * V + j] + s.ip * kk * vt[j];
            }
            nn[x] = s.fp * np[x] + s.ip * kk;
        }
        s.qn = 0.0;
        for (int x = 0; x < K; x++) {
            s.qn += qt[x] * nn[x];
        }
        double lo = exp(-s.m);
        s.qbranch = fabs(s.qn) >= lo;
        s.den = (s.qbranch ? fabs(s.qn) : lo) + 1e-6;
        double *ot = o + IX(b, t, h, V);
        for (int j = 0; j < V; j++) {
            double acc = 0.0;
            for (int x = 0; x < K; x++) {
                acc += qt[x] * Cn[(size_t)x * V + j];
            }
            ot[j] = acc / s.den;
        }
        if (st) {
            st[t] = s;
        }
        mprev = s.m;
    }
    *mlast = mprev;
}

void ref_mlstm_fwd(int B, int T, int H, int K, int V, double ks, const double *q, const double *k,
                   const double *v, const double *ig, const double *fg, const double *h0,
                   const double *n0, const double *m0, double *o, double *ht, double *nt,
                   double *mt)
{
    const size_t KV = (size_t)K * V;
    double *C = malloc((size_t)(T + 1) * KV * sizeof(double));
    double *n = malloc((size_t)(T + 1) * K * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            double ml;
            ml_run(b, h, T, H, K, V, ks, q, k, v, ig, fg, h0, n0, m0, o, C, n, &ml, NULL);
            size_t so = (size_t)b * H + h;
            if (ht) {
                memcpy(ht + so * KV, C + (size_t)T * KV, KV * sizeof(double));
            }
            if (nt) {
                memcpy(nt + so * K, n + (size_t)T * K, (size_t)K * sizeof(double));
            }
            if (mt) {
                mt[so] = ml;
            }
        }
    }
    free(C);
    free(n);
}

void ref_mlstm_bwd(int B, int T, int H, int K, int V, double ks, const double *q, const double *k,
                   const double *v, const double *ig, const double *fg, const double *h0,
                   const double *n0, const double *m0, const double *dout, const double *dht,
                   const double *dnt, const double *dmt, double *dq, double *dk, double *dv,
                   double *di, double *df, double *dh0, double *dn0, double *dm0)
{
    const size_t KV = (size_t)K * V;
    double *C = malloc((size_t)(T + 1) * KV * sizeof(double));
    double *n = malloc((size_t)(T + 1) * K * sizeof(double));
    double *o = malloc((size_t)B * T * H * V * sizeof(double) + 8);
    ml_step *st = malloc((size_t)(T + 1) * sizeof(ml_step));
    double *GC = malloc(KV * sizeof(double)), *Gn = malloc((size_t)K * sizeof(double));
    double *dC = malloc(KV * sizeof(double)), *dnn = malloc((size_t)K * sizeof(double));
    double *dnum = malloc((size_t)V * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            size_t so = (size_t)b * H + h;
            double ml;
            ml_run(b, h, T, H, K, V, ks, q, k, v, ig, fg, h0, n0, m0, o, C, n, &ml, st);
            for (size_t x = 0; x < KV; x++) {
                GC[x] = dht ? dht[so * KV + x] : 0.0;
            }
            for (int x = 0; x < K; x++) {
                Gn[x] = dnt ? dnt[so * K + x] : 0.0;
            }
            double Gm = dmt ? dmt[so] : 0.0;
            for (int t = T - 1; t >= 0; t--) {
                const ml_step *s = &st[t];
                const double *qt = q + IX(b, t, h, K), *kt = k + IX(b, t, h, K);
                const double *vt = v + IX(b, t, h, V), *dot = dout + IX(b, t, h, V);
                const double *ot = o + IX(b, t, h, V);
                const double *Ct = C + (size_t)(t + 1) * KV, *Cp = C + (size_t)t * KV;
                const double *nt_ = n + (size_t)(t + 1) * K, *np = n + (size_t)t * K;
                /* o = num / den */
                double dod = 0.0;
                for (int j = 0; j < V; j++) {
                    dnum[j] = dot[j] / s->den;
                    dod += dot[j] * ot[j];
                }
                double dden = -dod / s->den, dqn = 0.0, dm = Gm;
                if (s->qbranch) {
                    dqn = dden * (s->qn > 0 ? 1.0 : (s->qn < 0 ? -1.0 : 0.0));
                } else {
                    dm += dden * (-exp(-s->m));
                }
                for (int x = 0; x < K; x++) {
                    for (int j = 0; j < V; j++) {
                        dC[(size_t)x * V + j] = GC[(size_t)x * V + j] + qt[x] * dnum[j];
                    }
                    dnn[x] = Gn[x] + qt[x] * dqn;
                }
                /* dq = C_t dnum + n_t dqn */
                double *dqt = dq + IX(b, t, h, K);
                for (int x = 0; x < K; x++) {
                    double acc = 0.0;
                    for (int j = 0; j < V; j++) {
                        acc += Ct[(size_t)x * V + j] * dnum[j];
                    }
                    dqt[x] = acc + nt_[x] * dqn;
                }
                /* C_t = fp C_{t-1} + ip k~ v^T, n_t = fp n_{t-1} + ip k~ */
                double dfp = 0.0, dip = 0.0;
                double *dkt = dk + IX(b, t, h, K), *dvt = dv + IX(b, t, h, V);
                for (int j = 0; j < V; j++) {
                    dvt[j] = 0.0;
                }
                for (int x = 0; x < K; x++) {
                    double kk = ks * kt[x], dCv = 0.0;
                    for (int j = 0; j < V; j++) {
                        double g = dC[(size_t)x * V + j];
                        dfp += g * Cp[(size_t)x * V + j];
                        dCv += g * vt[j];
                        dvt[j] += s->ip * g * kk;
                    }
                    dfp += dnn[x] * np[x];
                    dip += kk * (dCv + dnn[x]);
                    dkt[x] = ks * s->ip * (dCv + dnn[x]);
                }
                /* fp = exp(a - m), ip = exp(i - m), m = max(a, i), a = lf + m_{t-1} */
                double da = dfp * s->fp, dit = dip * s->ip;
                dm -= dfp * s->fp + dip * s->ip;
                if (s->reset) {
                    dit += dm;
                } else {
                    da += dm;
                }
                di[IG(b, t, h)] = dit;
                df[IG(b, t, h)] = da * sigm(-fg[IG(b, t, h)]);
                Gm = da;
                for (size_t x = 0; x < KV; x++) {
                    GC[x] = s->fp * dC[x];
                }
                for (int x = 0; x < K; x++) {
                    Gn[x] = s->fp * dnn[x];
                }
            }
            if (dh0) {
                memcpy(dh0 + so * KV, GC, KV * sizeof(double));
            }
            if (dn0) {
                memcpy(dn0 + so * K, Gn, (size_t)K * sizeof(double));
            }
            if (dm0) {
                dm0[so] = Gm;
            }
        }
    }
    free(C);
    free(n);
    free(o);
    free(st);
    free(GC);
    free(Gn);
    free(dC);
    free(dnn);
    free(dnum);
}

/* ====================================================== softmax attention */

static int sm_allowed(int i, int j, int window, int non_causal)
{
    if (non_causal) {
        return 1;
    }
    if (j > i) {
        return 0;
    }
    return window <= 0 || j > i - window;
}

/* P[T] row of probabilities for query i of (b,h) */
/* softmax row i; with forget gates g [B,T,H] (causal) the logit of key j
 * gets sum_{j < u <= i} g_u */
static void sm_row(int b, int h, int i, int T, int H, int K, double s, int window, int non_causal,
                   const double *q, const double *k, const double *g, double *P)
{
    const double *qi = q + IX(b, i, h, K);
    double mx = -INFINITY;
    for (int j = 0; j < T; j++) {
        if (!sm_allowed(i, j, window, non_causal)) {
            P[j] = -INFINITY;
            continue;
        }
        const double *kj = k + IX(b, j, h, K);
        double acc = 0.0;
        for (int x = 0; x < K; x++) {
            acc += qi[x] * kj[x];
        }
        P[j] = s * acc;
        for (int u = j + 1; g && u <= i; u++) {
            P[j] += g[((size_t)b * T + u) * H + h];
        }
        if (P[j] > mx) {
            mx = P[j];
        }
    }
    double sum = 0.0;
    for (int j = 0; j < T; j++) {
        P[j] = sm_allowed(i, j, window, non_causal) ? exp(P[j] - mx) : 0.0;
        sum += P[j];
    }
    for (int j = 0; j < T; j++) {
        P[j] /= sum;
    }
}

void ref_softmax_fwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                     const double *q, const double *k, const double *v, double *o)
{
    ref_fox_fwd(B, T, H, K, V, s, window, non_causal, q, k, v, NULL, o);
}

void ref_softmax_bwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                     const double *q, const double *k, const double *v, const double *dout,
                     double *dq, double *dk, double *dv)
{
    ref_fox_bwd(B, T, H, K, V, s, window, non_causal, q, k, v, NULL, dout, dq, dk, dv, NULL);
}

void ref_fox_fwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                 const double *q, const double *k, const double *v, const double *g, double *o)
{
    double *P = malloc((size_t)(T + 1) * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < T; i++) {
                sm_row(b, h, i, T, H, K, s, window, non_causal, q, k, g, P);
                double *oi = o + IX(b, i, h, V);
                for (int x = 0; x < V; x++) {
                    oi[x] = 0.0;
                }
                for (int j = 0; j < T; j++) {
                    const double *vj = v + IX(b, j, h, V);
                    for (int x = 0; x < V; x++) {
                        oi[x] += P[j] * vj[x];
                    }
                }
            }
        }
    }
    free(P);
}

void ref_fox_bwd(int B, int T, int H, int K, int V, double s, int window, int non_causal,
                 const double *q, const double *k, const double *v, const double *g, const double *dout,
                 double *dq, double *dk, double *dv, double *dg)
{
    double *P = malloc((size_t)(T + 1) * sizeof(double));
    if (g && dg) {
        memset(dg, 0, (size_t)B * T * H * sizeof(double));
    }
    double *dP = malloc((size_t)(T + 1) * sizeof(double));
    memset(dq, 0, (size_t)B * T * H * K * sizeof(double));
    memset(dk, 0, (size_t)B * T * H * K * sizeof(double));
    memset(dv, 0, (size_t)B * T * H * V * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            for (int i = 0; i < T; i++) {
                sm_row(b, h, i, T, H, K, s, window, non_causal, q, k, g, P);
                const double *di = dout + IX(b, i, h, V), *qi = q + IX(b, i, h, K);
                double dot = 0.0;
                for (int j = 0; j < T; j++) {
                    const double *vj = v + IX(b, j, h, V);
                    double acc = 0.0;
                    for (int x = 0; x < V; x++) {
                        acc += di[x] * vj[x];
                    }
                    dP[j] = acc;
                    dot += P[j] * acc;
                }
                /* the gate: dg_u += sum_{j < u} dlogit_ij for u <= i */
                double run = 0.0;
                for (int u = 1; g && dg && u <= i; u++) {
                    run += P[u - 1] * (dP[u - 1] - dot);
                    dg[((size_t)b * T + u) * H + h] += run;
                }
                for (int j = 0; j < T; j++) {
                    if (P[j] == 0.0) {
                        continue;
                    }
                    double dl = P[j] * (dP[j] - dot) * s;
                    const double *kj = k + IX(b, j, h, K);
                    double *dqi = dq + IX(b, i, h, K), *dkj = dk + IX(b, j, h, K);
                    double *dvj = dv + IX(b, j, h, V);
                    for (int x = 0; x < K; x++) {
                        dqi[x] += dl * kj[x];
                        dkj[x] += dl * qi[x];
                    }
                    for (int x = 0; x < V; x++) {
                        dvj[x] += P[j] * di[x];
                    }
                }
            }
        }
    }
    free(P);
    free(dP);
}

/* ================================================================== LION */

/* log M_ij from the cumulative gate c[t] = sum_{u<=t} g_u (c[-1] = 0):
 * i > j: c[i-1] - c[j-1];  i < j: c[j] - c[i]. */
static double lion_logm(const double *c, int i, int j)
{
    if (i > j) {
        return c[i - 1] - (j > 0 ? c[j - 1] : 0.0);
    }
    if (i < j) {
        return c[j] - c[i];
    }
    return 0.0;
}

static void lion_cum(int b, int h, int T, int H, const double *g, double *c)
{
    double acc = 0.0;
    for (int t = 0; t < T; t++) {
        acc += g[IG(b, t, h)];
        c[t] = acc;
    }
}

static double dot_d(const double *a, const double *b, int n)
{
    double acc = 0.0;
    for (int x = 0; x < n; x++) {
        acc += a[x] * b[x];
    }
    return acc;
}

void ref_lion_fwd(int B, int T, int H, int K, int V, double s, int normalize, const double *q,
                  const double *k, const double *v, const double *g, double *o)
{
    double *c = malloc((size_t)(T + 1) * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            lion_cum(b, h, T, H, g, c);
            for (int i = 0; i < T; i++) {
                double *oi = o + IX(b, i, h, V), den = 0.0;
                for (int x = 0; x < V; x++) {
                    oi[x] = 0.0;
                }
                for (int j = 0; j < T; j++) {
                    double a = exp(lion_logm(c, i, j)) *
                               dot_d(q + IX(b, i, h, K), k + IX(b, j, h, K), K);
                    const double *vj = v + IX(b, j, h, V);
                    for (int x = 0; x < V; x++) {
                        oi[x] += a * vj[x];
                    }
                    den += a;
                }
                for (int x = 0; x < V; x++) {
                    oi[x] = normalize ? oi[x] / den : s * oi[x];
                }
            }
        }
    }
    free(c);
}

void ref_lion_bwd(int B, int T, int H, int K, int V, double s, int normalize, const double *q,
                  const double *k, const double *v, const double *g, const double *dout,
                  double *dq, double *dk, double *dv, double *dg)
{
    double *c = malloc((size_t)(T + 1) * sizeof(double));
    double *diff = malloc((size_t)(T + 2) * sizeof(double));
    double *o = malloc((size_t)B * T * H * V * sizeof(double) + 8);
    double *dnum = malloc((size_t)V * sizeof(double));
    ref_lion_fwd(B, T, H, K, V, s, normalize, q, k, v, g, o);
    memset(dq, 0, (size_t)B * T * H * K * sizeof(double));
    memset(dk, 0, (size_t)B * T * H * K * sizeof(double));
    memset(dv, 0, (size_t)B * T * H * V * sizeof(double));
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < H; h++) {
            lion_cum(b, h, T, H, g, c);
            memset(diff, 0, (size_t)(T + 2) * sizeof(double));
            for (int i = 0; i < T; i++) {
                const double *qi = q + IX(b, i, h, K), *doi = dout + IX(b, i, h, V);
                double dden = 0.0, den = 0.0;
                if (normalize) {
                    for (int j = 0; j < T; j++) {
                        den += exp(lion_logm(c, i, j)) * dot_d(qi, k + IX(b, j, h, K), K);
                    }
                    dden = -dot_d(doi, o + IX(b, i, h, V), V) / den;
                }
                for (int x = 0; x < V; x++) {
                    dnum[x] = normalize ? doi[x] / den : s * doi[x];
                }
                for (int j = 0; j < T; j++) {
                    const double *kj = k + IX(b, j, h, K), *vj = v + IX(b, j, h, V);
                    double M = exp(lion_logm(c, i, j)), qk = dot_d(qi, kj, K);
                    double dA = dot_d(dnum, vj, V) + dden; /* dL/dA_ij, A_ij = M_ij q_i.k_j */
                    double *dqi = dq + IX(b, i, h, K), *dkj = dk + IX(b, j, h, K);
                    double *dvj = dv + IX(b, j, h, V);
                    for (int x = 0; x < K; x++) {
                        dqi[x] += dA * M * kj[x];
                        dkj[x] += dA * M * qi[x];
                    }
                    for (int x = 0; x < V; x++) {
                        dvj[x] += M * qk * dnum[x];
                    }
                    /* d log M_ij = dA * A_ij, spread over the gates in the product */
                    double w = dA * M * qk;
                    if (i > j) {
                        diff[j] += w;
                        diff[i] -= w;
                    } else if (i < j) {
                        diff[i + 1] += w;
                        diff[j + 1] -= w;
                    }
                }
            }
            double run = 0.0;
            for (int t = 0; t < T; t++) {
                run += diff[t];
                dg[IG(b, t, h)] = run;
            }
        }
    }
    free(c);
    free(diff);
    free(o);
    free(dnum);
}
