/*
 * mlstm.c -- the stabilised mLSTM of xLSTM (docs/mixers.md 5), forward and backward,
 * recurrent and chunkwise:
 *
 *   lf_t = logsigmoid(f_t),   m_t = max(lf_t + m_{t-1}, i_t)        (m_0 = m0 or 0)
 *   C_t = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k~_t v_t^T,   k~ = scale k
 *   n_t = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(i_t - m_t) k~_t
 *   o_t = q_t^T C_t / (max(|q_t . n_t|, exp(-m_t)) + 1e-6)
 *
 * Method. The stabiliser is a scalar recurrence, computed first for every
 * (b,h) in double (O(T)). With it the matrix part is a scalar-gated linear
 * attention in the stabilised variables:
 *
 *   g'_t = lf_t + m_{t-1} - m_t  (<= 0),   k'_t = exp(i_t - m_t) k~_t  (|.| <= |k~|),
 *   [C_t | n_t] = exp(g'_t) [C_{t-1} | n_{t-1}] + k'_t [v_t | 1]^T
 *
 * i.e. the diagonal-decay engine (lina_dd_*, LINA_GATE_SCALAR, scale 1) on
 * values augmented with a ones column, whose last output column is q.n. Its
 * recurrent form is the step-by-step recurrence; its chunk form is exactly
 * the per-chunk stabilised form of docs/mixers.md section 5: inside a chunk the
 * weight of key c for query r is exp(b_r - b_c) exp(i_c - m_c) =
 * exp(lf-sum + i_c - m_r) = exp(logD_rc - mu_r), with mu_r = m_r the running
 * max of that sketch, every exponent <= 0; between chunks the state carries
 * its own stabiliser.
 *
 * Backward. Write L as a function of the inputs and of the stabilisers
 * m_1..m_T as free variables. lina_dd_bwd on the augmented problem gives the
 * partials with m held fixed: dh0, dn0, dq, dv, dk = exp(i - m) scale dk',
 * kap_t = k'_t . dk'_t (the write weight's partial) and dg'_t. The gradients
 * of the scalar chain (i, lf, m0) are not formed as "partial + dL/dm routed
 * along the argmax path": with a large m0 (or a long carry) that sum is the
 * tiny difference of O(|o|) terms such as <dh0,h0> + dn0.n0 and
 * -(<dht,ht> + dnt.nt), and float keeps none of it. Instead, use the exact
 * scaling identity of a carry segment [t, s) (s = next reset, m_u for t <= u < s
 * all shifted by the same amount): multiplying the segment's states by e^d
 * (g'_t += d, k'_u *= e^d, g'_s -= d) changes only the readouts' eps and
 * exp(-m) terms. It gives, backwards from N_T = dmt + e_T,
 *     carry step (m_t = lf_t + m_{t-1}):  di_t = kap_t,        dlf_t = N_t - kap_t
 *     reset step (m_t = i_t):             di_t = N_t - dg'_t,  dlf_t = dg'_t
 *     N_{t-1} = e_{t-1} + dlf_t,          dm0 = dlf_1,
 *     e_t = (do_t . o_t) exp(-m_t) / den_t  when exp(-m_t) > |q.n_t|, else 0,
 * where every term is small when the true gradient is (kap_t carries the
 * token's own weight exp(i_t - m_t)). Checked against the step-by-step double
 * reference, which differentiates through both maxes directly.
 * df = dlf sigmoid(-f). Ties: lf_t + m_{t-1} == i_t takes the carry branch,
 * |q.n| == exp(-m) the |q.n| branch (documented in lina.h; the test
 * reference uses the same rules).
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define ML_EPS 1e-6

/* ---------------------------------------------------------------- scratch */

typedef struct ml_ctx {
    int B, T, H, K, V, Va; /* Va = V + 1: value columns plus the normaliser column */
    float ks;              /* key scale */
    size_t nr;             /* B*T*H rows */
} ml_ctx;

/* buffers carved from the big slot */
typedef struct ml_buf {
    float *kp;         /* [B,T,H,K]  k' = exp(i - m) ks k */
    float *va;         /* [B,T,H,Va] [v | 1] */
    float *gp;         /* [B,T,H]    g' = lf + m_{t-1} - m_t */
    float *oa;         /* [B,T,H,Va] [q^T C | q.n]; recurrent form: o1 (see below) */
    float *h0a;        /* [B,H,K,Va] [h0 | n0] (initial states only) */
    float *hta;        /* [B,H,K,Va] [C_T | n_T] */
    double *m;         /* [B,T,H]    m_t */
    unsigned char *rs; /* [B,T,H]    1 where m_t = i_t */
    /* backward only */
    float *doa;        /* [B,T,H,Va] */
    float *dhta;       /* [B,H,K,Va] */
    float *dkp;        /* [B,T,H,K] */
    float *dva;        /* [B,T,H,Va] */
    float *dgp;        /* [B,T,H] */
    float *dh0a;       /* [B,H,K,Va] */
    double *gm;        /* [B,T,H] e_t of the stabiliser chain (see the backward) */
    float *st;         /* [B,H,nC+1,K,Va] chunk-start states of the recomputed forward */
    /* recurrent form: the engine reads with the next token's query (below) */
    float *qs;         /* [B,T,H,K]  q_{t+1} (0 at t = T-1) */
    float *p0;         /* [B,H,Va]   [h0 | n0]^T q_0 (initial states only) */
    float *dop;        /* [B,T,H,Va] cotangent of o1 (backward) */
    float *dqs;        /* [B,T,H,K]  gradient of qs (backward) */
    float *xg;         /* [B,T,H]    exp(g'_t) o1_{t-1} . doa_t (backward) */
} ml_buf;

static size_t al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

/* engine dims: the augmented problem, scale 1 */
static lina_mix_dims ml_engine_dims(const ml_ctx *c, const lina_mix_dims *d)
{
    lina_mix_dims dd = {c->B, c->T, c->H, c->K, c->Va, d->chunk, 1.0f};
    return dd;
}

/* Carves the buffers from mem (bwd: backward buffers too; init: initial
 * states given; rec: recurrent form) and returns the bytes used; with
 * mem == NULL only the size is computed. */
static size_t ml_buf_carve(const ml_ctx *c, const lina_mix_dims *d, void *mem, int bwd, int init,
                           int rec, ml_buf *b)
{
    const size_t rows = c->nr, BH = (size_t)c->B * c->H;
    const size_t sa = BH * (size_t)c->K * c->Va;
    size_t off = 0;
    memset(b, 0, sizeof *b);
#define ML_TAKE(ptr, type, cnt)                                       \
    do {                                                              \
        b->ptr = mem ? (type *)((char *)mem + off) : NULL;            \
        off += al64((cnt) * sizeof(type));                            \
    } while (0)
    ML_TAKE(kp, float, rows * c->K);
    ML_TAKE(va, float, rows * c->Va);
    ML_TAKE(gp, float, rows);
    ML_TAKE(oa, float, rows * c->Va);
    if (init) {
        ML_TAKE(h0a, float, sa);
    }
    ML_TAKE(hta, float, sa);
    ML_TAKE(m, double, rows);
    ML_TAKE(rs, unsigned char, rows);
    if (rec) {
        ML_TAKE(qs, float, rows * c->K);
        if (init) {
            ML_TAKE(p0, float, BH * c->Va);
        }
    }
    if (bwd) {
        ML_TAKE(doa, float, rows * c->Va);
        ML_TAKE(dhta, float, sa);
        ML_TAKE(dkp, float, rows * c->K);
        ML_TAKE(dva, float, rows * c->Va);
        ML_TAKE(dgp, float, rows);
        if (init) {
            ML_TAKE(dh0a, float, sa);
        }
        ML_TAKE(gm, double, rows);
        lina_mix_dims dd = ml_engine_dims(c, d);
        ML_TAKE(st, float, lina_dd_states_size(&dd));
        if (rec) {
            ML_TAKE(dop, float, rows * c->Va);
            ML_TAKE(dqs, float, rows * c->K);
            ML_TAKE(xg, float, rows);
        }
    }
#undef ML_TAKE
    return off + 64;
}

/* ------------------------------------------------------------------ math */

static double ml_logsig(double x)
{
    return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x));
}

static double ml_sigmoid(double x)
{
    return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
}

/* den_t = max(|qn|, exp(-m)) + eps; *qbr = 1 when the |qn| branch is taken */
static double ml_den(double qn, double m, int *qbr)
{
    double lo = exp(-m), a = fabs(qn);
    *qbr = a >= lo;
    return (*qbr ? a : lo) + ML_EPS;
}

static int ml_setup(ml_ctx *c, const lina_mix_dims *d, const lina_mlstm_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v || !in->i || !in->f) {
        return lina_set_error(LINA_EINVAL, "mlstm: missing q, k, v, i or f");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "mlstm: bad dims B=%d T=%d H=%d K=%d V=%d", d->B,
                              d->T, d->H, d->K, d->V);
    }
    int ninit = !!in->h0 + !!in->n0 + !!in->m0;
    if (ninit != 0 && ninit != 3) {
        return lina_set_error(LINA_EINVAL, "mlstm: h0, n0 and m0 must be given together or not at all");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->Va = d->V + 1;
    c->ks = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    c->nr = (size_t)d->B * d->T * d->H;
    return LINA_OK;
}

/* Stabiliser chain and the engine's inputs: m, rs, g', k', [v | 1], [h0 | n0]. */
static void ml_prepare(const ml_ctx *c, const lina_mlstm_in *in, ml_buf *bf)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V, Va = c->Va;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        double mprev = in->m0 ? (double)in->m0[bh] : 0.0;
        for (int t = 0; t < T; t++) {
            const size_t r = ((size_t)b * T + t) * H + h;
            const double it = in->i[r];
            const double a = ml_logsig((double)in->f[r]) + mprev;
            const int reset = it > a; /* tie: carry branch */
            const double m = reset ? it : a;
            bf->m[r] = m;
            bf->rs[r] = (unsigned char)reset;
            bf->gp[r] = (float)(a - m);
            const float w = (float)(exp(it - m) * (double)c->ks);
            const float *k = in->k + r * K;
            float *kp = bf->kp + r * K;
            for (int x = 0; x < K; x++) {
                kp[x] = w * k[x];
            }
            memcpy(bf->va + r * Va, in->v + r * V, (size_t)V * sizeof(float));
            bf->va[r * Va + V] = 1.0f;
            mprev = m;
        }
        if (in->h0) {
            const float *h0 = LINA_STATE(in->h0, b, h, H, (size_t)K * V);
            const float *n0 = in->n0 + (size_t)bh * K;
            float *h0a = LINA_STATE(bf->h0a, b, h, H, (size_t)K * Va);
            for (int x = 0; x < K; x++) {
                memcpy(h0a + (size_t)x * Va, h0 + (size_t)x * V, (size_t)V * sizeof(float));
                h0a[(size_t)x * Va + V] = n0[x];
            }
            if (bf->p0) { /* recurrent form: p0 = [h0 | n0]^T q_0 (see ml_engine_fwd) */
                const float *q0 = in->q + ((size_t)b * T * H + h) * K;
                float *restrict p0 = bf->p0 + (size_t)bh * Va;
                memset(p0, 0, (size_t)Va * sizeof(float));
                for (int x = 0; x < K; x++) {
                    const float qx = q0[x], *restrict hx = h0a + (size_t)x * Va;
                    for (int j = 0; j < Va; j++) {
                        p0[j] += qx * hx[j];
                    }
                }
            }
        }
    }
}

/* Recurrent form. Read as o_t = [C_t | n_t]^T q_t, the state holds the
 * token's own term k'_t [v_t | 1]^T rounded into each column separately, so
 * q_t . k'_t comes out with a different rounding in every column of o_t and
 * in q.n_t. When q.k is a small difference and the state is little more than
 * that one term (forget gate shut, every step a reset), o = q.C / |q.n| then
 * loses the agreement of its numerator and denominator, and the backward
 * amplifies the disagreement by 1/|q.n|. So the engine reads each state with
 * the next token's query, o1_t = [C_t | n_t]^T q_{t+1} (kept in bf->oa), and
 *     oa_t = exp(g'_t) o1_{t-1} + (q_t . k'_t) [v_t | 1],    o1_{-1} = S_0^T q_0 (p0),
 * one scalar q_t . k'_t for every column, as in the chunk form's diagonal. */
static double ml_dot(const float *restrict a, const float *restrict b, int n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int x = 0; x < n; x++) {
        s += (double)a[x] * b[x];
    }
    return s;
}

/* How row r (token t of head bh) is read: the chunk form's oa row, or the
 * recurrent form's a = exp(g'_t), qk = q_t . k'_t and prev = o1_{t-1} / p0
 * (NULL: zero initial state). */
typedef struct ml_rd {
    const float *oa, *prev, *v;
    float a, qk;
} ml_rd;

static ml_rd ml_read(const ml_ctx *c, const lina_mlstm_in *in, const ml_buf *bf, int rec, int bh,
                     int t, size_t r)
{
    ml_rd rd = {NULL, NULL, in->v + r * c->V, 1.0f, 0.0f};
    if (!rec) {
        rd.oa = bf->oa + r * c->Va;
        return rd;
    }
    rd.a = (float)exp((double)bf->gp[r]);
    rd.qk = (float)ml_dot(in->q + r * c->K, bf->kp + r * c->K, c->K);
    rd.prev = t > 0 ? bf->oa + (r - c->H) * c->Va : (bf->p0 ? bf->p0 + (size_t)bh * c->Va : NULL);
    return rd;
}

/* num[0..V) = C_t^T q_t; returns q_t . n_t */
static double ml_num(const ml_rd *rd, int V, float *restrict num)
{
    if (rd->oa) {
        memcpy(num, rd->oa, (size_t)V * sizeof(float));
        return rd->oa[V];
    }
    const float a = rd->a, qk = rd->qk, *restrict v = rd->v, *restrict p = rd->prev;
    if (!p) {
        for (int j = 0; j < V; j++) {
            num[j] = qk * v[j];
        }
        return qk;
    }
    for (int j = 0; j < V; j++) {
        num[j] = a * p[j] + qk * v[j];
    }
    return (double)a * p[V] + qk;
}

/* Engine forward on the augmented problem: oa (chunk) or o1 (recurrent; p0
 * comes from ml_prepare), hta, and the chunk-start states when bf->st is set
 * (backward). */
static int ml_engine_fwd(const ml_ctx *c, const lina_mix_dims *d, const lina_mlstm_in *in,
                         ml_buf *bf, lina_form form, lina_ws *ws)
{
    lina_mix_dims dd = ml_engine_dims(c, d);
    const int rec = form == LINA_FORM_RECURRENT;
    if (rec) {
        const size_t rowK = (size_t)c->H * c->K;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < c->B; b++) {
            const size_t base = (size_t)b * c->T * rowK;
            memcpy(bf->qs + base, in->q + base + rowK, (size_t)(c->T - 1) * rowK * sizeof(float));
            memset(bf->qs + base + (size_t)(c->T - 1) * rowK, 0, rowK * sizeof(float));
        }
    }
    lina_dd_in din = {.q = rec ? bf->qs : in->q, .k = bf->kp, .v = bf->va,
                      .gate = LINA_GATE_SCALAR, .g = bf->gp, .h0 = bf->h0a};
    lina_dd_out dout = {.o = bf->oa, .ht = bf->hta, .states = bf->st};
    return lina_dd_fwd(&dd, &din, &dout, form, ws);
}

/* Recurrent backward of the reads: the diagonal and the exp(g'_t) read of
 * o1_{t-1} (p0 at t = 0) into dq (from the engine's dqs), dk', [dv | .], dg'
 * (xg holds exp(g'_t) prev . doa_t) and d[h0 | n0]. */
static void ml_rec_read_bwd(const ml_ctx *c, const lina_mlstm_in *in, ml_buf *bf, float *dq)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, Va = c->Va;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const size_t r = ((size_t)b * T + t) * H + h;
            const float *restrict q = in->q + r * K, *restrict kp = bf->kp + r * K;
            const float *restrict va = bf->va + r * Va, *restrict doa = bf->doa + r * Va;
            const float qk = (float)ml_dot(q, kp, K), s = (float)ml_dot(doa, va, Va);
            float *restrict dqt = dq + r * K, *restrict dkp = bf->dkp + r * K;
            float *restrict dva = bf->dva + r * Va;
            if (t > 0) {
                memcpy(dqt, bf->dqs + (r - H) * K, (size_t)K * sizeof(float));
            } else if (bf->p0) {
                const float a = (float)exp((double)bf->gp[r]);
                const float *h0a = LINA_STATE(bf->h0a, b, h, H, (size_t)K * Va);
                float *dh0a = LINA_STATE(bf->dh0a, b, h, H, (size_t)K * Va);
                for (int x = 0; x < K; x++) {
                    dqt[x] = a * (float)ml_dot(h0a + (size_t)x * Va, doa, Va);
                    const float w = a * q[x];
                    for (int j = 0; j < Va; j++) {
                        dh0a[(size_t)x * Va + j] += w * doa[j];
                    }
                }
            } else {
                memset(dqt, 0, (size_t)K * sizeof(float));
            }
            for (int x = 0; x < K; x++) {
                dqt[x] += s * kp[x];
                dkp[x] += s * q[x];
            }
            for (int j = 0; j < Va; j++) {
                dva[j] += qk * doa[j];
            }
            bf->dgp[r] += bf->xg[r];
        }
    }
}

/* T = 0: the states pass through. */
static void ml_empty(const ml_ctx *c, const lina_mlstm_in *in, float *ht, float *nt, float *mt)
{
    const size_t BH = (size_t)c->B * c->H, KV = (size_t)c->K * c->V;
    if (ht) {
        if (in->h0) {
            memcpy(ht, in->h0, BH * KV * sizeof(float));
        } else {
            memset(ht, 0, BH * KV * sizeof(float));
        }
    }
    if (nt) {
        if (in->n0) {
            memcpy(nt, in->n0, BH * c->K * sizeof(float));
        } else {
            memset(nt, 0, BH * c->K * sizeof(float));
        }
    }
    if (mt) {
        if (in->m0) {
            memcpy(mt, in->m0, BH * sizeof(float));
        } else {
            memset(mt, 0, BH * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------- forward */

int LINA_KFN(lina_mlstm_fwd)(const lina_mix_dims *d, const lina_mlstm_in *in, lina_mlstm_out *out,
                   lina_form form, lina_ws *ws)
{
    ml_ctx c;
    int rc = ml_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "mlstm: output o is NULL");
    }
    if (c.T == 0) {
        ml_empty(&c, in, out->ht, out->nt, out->mt);
        return LINA_OK;
    }
    const int init = in->h0 != NULL, slot = lina_ws_extra_slot();
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, slot + 1))) {
        return rc;
    }
    const int rec = form == LINA_FORM_RECURRENT;
    ml_buf bf;
    void *mem = lina_ws_get(sc.ws, slot, ml_buf_carve(&c, d, NULL, 0, init, rec, &bf));
    if (!mem) {
        lina_ws_scope_close(&sc);
        return lina_set_error(LINA_ENOMEM, "mlstm: out of memory");
    }
    ml_buf_carve(&c, d, mem, 0, init, rec, &bf);
    ml_prepare(&c, in, &bf);
    rc = ml_engine_fwd(&c, d, in, &bf, form, sc.ws);
    if (rc == LINA_OK) {
        const int B = c.B, T = c.T, H = c.H, K = c.K, V = c.V, Va = c.Va;
#pragma omp parallel for schedule(static)
        for (int bh = 0; bh < B * H; bh++) {
            const int b = bh / H, h = bh % H;
            for (int t = 0; t < T; t++) {
                const size_t r = ((size_t)b * T + t) * H + h;
                const ml_rd rd = ml_read(&c, in, &bf, rec, bh, t, r);
                float *o = out->o + r * V;
                int qbr;
                const double qn = ml_num(&rd, V, o);
                const float inv = (float)(1.0 / ml_den(qn, bf.m[r], &qbr));
                for (int j = 0; j < V; j++) {
                    o[j] *= inv;
                }
            }
            const float *hta = LINA_STATE(bf.hta, b, h, H, (size_t)K * Va);
            if (out->ht) {
                float *ht = LINA_STATE(out->ht, b, h, H, (size_t)K * V);
                for (int x = 0; x < K; x++) {
                    memcpy(ht + (size_t)x * V, hta + (size_t)x * Va, (size_t)V * sizeof(float));
                }
            }
            if (out->nt) {
                for (int x = 0; x < K; x++) {
                    out->nt[(size_t)bh * K + x] = hta[(size_t)x * Va + V];
                }
            }
            if (out->mt) {
                out->mt[bh] = (float)bf.m[((size_t)b * T + (T - 1)) * H + h];
            }
        }
    }
    lina_ws_scope_close(&sc);
    return rc;
}

/* --------------------------------------------------------------- backward */

int LINA_KFN(lina_mlstm_bwd)(const lina_mix_dims *d, const lina_mlstm_in *in,
                   const lina_mlstm_grad_in *gin, lina_mlstm_grad_out *gout, lina_form form,
                   lina_ws *ws)
{
    ml_ctx c;
    int rc = ml_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gout || !gout->dq || !gout->dk || !gout->dv || !gout->di || !gout->df) {
        return lina_set_error(LINA_EINVAL, "mlstm: gradient outputs dq, dk, dv, di, df are required");
    }
    const int B = c.B, T = c.T, H = c.H, K = c.K, V = c.V, Va = c.Va;
    const size_t KV = (size_t)K * V, KVa = (size_t)K * Va;
    const int init = in->h0 != NULL;
    if (T == 0) {
        if (init) {
            lina_mlstm_grad_in z = *gin;
            ml_empty(&c, &(lina_mlstm_in){.h0 = z.dht, .n0 = z.dnt, .m0 = z.dmt}, gout->dh0,
                     gout->dn0, gout->dm0);
        }
        return LINA_OK;
    }
    const int slot = lina_ws_extra_slot();
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, slot + 1))) {
        return rc;
    }
    const int rec = form == LINA_FORM_RECURRENT;
    ml_buf bf;
    void *mem = lina_ws_get(sc.ws, slot, ml_buf_carve(&c, d, NULL, 1, init, rec, &bf));
    if (!mem) {
        lina_ws_scope_close(&sc);
        return lina_set_error(LINA_ENOMEM, "mlstm: out of memory");
    }
    ml_buf_carve(&c, d, mem, 1, init, rec, &bf);
    ml_prepare(&c, in, &bf);
    if ((rc = ml_engine_fwd(&c, d, in, &bf, form, sc.ws))) {
        lina_ws_scope_close(&sc);
        return rc;
    }
    /* cotangents of the augmented outputs (recurrent: of o1, dop, and the
     * read weight's xg); e_t of the stabiliser chain */
    const int have_dht = gin->dht || gin->dnt;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const size_t r = ((size_t)b * T + t) * H + h;
            float *doa = bf.doa + r * Va;
            if (rec && t == T - 1) {
                memset(bf.dop + r * Va, 0, (size_t)Va * sizeof(float));
            }
            if (!gin->do_) {
                memset(doa, 0, (size_t)Va * sizeof(float));
                bf.gm[r] = 0.0;
                if (rec) {
                    bf.xg[r] = 0.0f;
                    if (t > 0) {
                        memset(bf.dop + (r - H) * Va, 0, (size_t)Va * sizeof(float));
                    }
                }
                continue;
            }
            const ml_rd rd = ml_read(&c, in, &bf, rec, bh, t, r);
            const float *dO = gin->do_ + r * V;
            int qbr;
            const double qn = ml_num(&rd, V, doa), den = ml_den(qn, bf.m[r], &qbr);
            double dod = 0.0; /* do . o */
            for (int j = 0; j < V; j++) {
                dod += (double)dO[j] * (doa[j] / den);
                doa[j] = (float)(dO[j] / den);
            }
            const double dden = -dod / den;
            doa[V] = qbr ? (float)(qn > 0 ? dden : (qn < 0 ? -dden : 0.0)) : 0.0f;
            bf.gm[r] = qbr ? 0.0 : dod * exp(-bf.m[r]) / den;
            if (rec) {
                bf.xg[r] = rd.prev ? rd.a * (float)ml_dot(rd.prev, doa, Va) : 0.0f;
                if (t > 0) {
                    float *dop = bf.dop + (r - H) * Va;
                    for (int j = 0; j < Va; j++) {
                        dop[j] = rd.a * doa[j];
                    }
                }
            }
        }
        if (have_dht) {
            float *dhta = LINA_STATE(bf.dhta, b, h, H, KVa);
            for (int x = 0; x < K; x++) {
                for (int j = 0; j < V; j++) {
                    dhta[(size_t)x * Va + j] =
                        gin->dht ? LINA_STATE(gin->dht, b, h, H, KV)[(size_t)x * V + j] : 0.0f;
                }
                dhta[(size_t)x * Va + V] = gin->dnt ? gin->dnt[(size_t)bh * K + x] : 0.0f;
            }
        }
    }
    {
        lina_mix_dims dd = ml_engine_dims(&c, d);
        lina_dd_in din = {.q = rec ? bf.qs : in->q, .k = bf.kp, .v = bf.va,
                          .gate = LINA_GATE_SCALAR, .g = bf.gp, .h0 = bf.h0a};
        lina_dd_grad_in dgi = {.do_ = rec ? bf.dop : bf.doa, .dht = have_dht ? bf.dhta : NULL,
                               .states = bf.st};
        lina_dd_grad_out dgo = {.dq = rec ? bf.dqs : gout->dq, .dk = bf.dkp, .dv = bf.dva,
                                .dg = bf.dgp, .dh0 = bf.dh0a};
        if ((rc = lina_dd_bwd(&dd, &din, &dgi, &dgo, form, sc.ws))) {
            lina_ws_scope_close(&sc);
            return rc;
        }
    }
    if (rec) {
        ml_rec_read_bwd(&c, in, &bf, gout->dq);
    }
    /* chain rule back to k, v, i, f and the states, with the stabiliser chain
     * in the cancellation-free form (see the head of this file) */
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        double next = gin->dmt ? (double)gin->dmt[bh] : 0.0; /* N_t - e_t */
        for (int t = T - 1; t >= 0; t--) {
            const size_t r = ((size_t)b * T + t) * H + h;
            const float *kp = bf.kp + r * K, *dkp = bf.dkp + r * K;
            const float w = (float)(exp((double)in->i[r] - bf.m[r]) * (double)c.ks);
            float *dk = gout->dk + r * K;
            double kap = 0.0; /* k'_t . dk'_t */
            for (int x = 0; x < K; x++) {
                kap += (double)kp[x] * dkp[x];
                dk[x] = w * dkp[x];
            }
            memcpy(gout->dv + r * V, bf.dva + r * Va, (size_t)V * sizeof(float));
            const double N = bf.gm[r] + next, dg = bf.dgp[r];
            double di, dlf;
            if (bf.rs[r]) {
                di = N - dg;
                dlf = dg;
            } else {
                di = kap;
                dlf = N - kap;
            }
            next = dlf;
            gout->di[r] = (float)di;
            gout->df[r] = (float)(dlf * ml_sigmoid(-(double)in->f[r]));
        }
        if (init) {
            const float *dh0a = LINA_STATE(bf.dh0a, b, h, H, KVa);
            if (gout->dh0) {
                float *dh0 = LINA_STATE(gout->dh0, b, h, H, KV);
                for (int x = 0; x < K; x++) {
                    memcpy(dh0 + (size_t)x * V, dh0a + (size_t)x * Va, (size_t)V * sizeof(float));
                }
            }
            if (gout->dn0) {
                for (int x = 0; x < K; x++) {
                    gout->dn0[(size_t)bh * K + x] = dh0a[(size_t)x * Va + V];
                }
            }
            if (gout->dm0) {
                gout->dm0[bh] = (float)next;
            }
        }
    }
    lina_ws_scope_close(&sc);
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_mlstm_fwd,
                  (const lina_mix_dims *d, const lina_mlstm_in *in, lina_mlstm_out *out,
                   lina_form form, lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_mlstm_bwd,
                  (const lina_mix_dims *d, const lina_mlstm_in *in, const lina_mlstm_grad_in *gin,
                   lina_mlstm_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_mlstm(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    const lina_tensor *q, *k, *v;
    int err = lina_op_qkv(in, &bd, &q, &k, &v);
    const lina_tensor *ig = err ? NULL : lina_op_input(in, "i", "BTH", &bd, 0, &err);
    const lina_tensor *fg = err ? NULL : lina_op_input(in, "f", "BTH", &bd, 0, &err);
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BHKV", &bd, 1, &err);
    const lina_tensor *n0 = err ? NULL : lina_op_input(in, "n0", "BHK", &bd, 1, &err);
    const lina_tensor *m0 = err ? NULL : lina_op_input(in, "m0", "BH", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((h0 || n0 || m0) && !(h0 && n0 && m0)) {
        return lina_set_error(LINA_EINVAL,
                              "h0.npy, n0.npy and m0.npy must be given together (%s missing)",
                              !h0 ? "h0.npy" : (!n0 ? "n0.npy" : "m0.npy"));
    }
    const lina_tensor *dO = NULL, *dht = NULL, *dnt = NULL, *dmt = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BHKV", &bd, 1, &err);
        dnt = err ? NULL : lina_op_input(in, "dnt", "BHK", &bd, 1, &err);
        dmt = err ? NULL : lina_op_input(in, "dmt", "BH", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'],
                       (int)bd.v['K' - 'A'], (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_mlstm_in min = {q->data, k->data, v->data, ig->data, fg->data,
                         h0 ? h0->data : NULL, n0 ? n0->data : NULL, m0 ? m0->data : NULL};
    lina_mlstm_out mout = {lina_op_output(out, "o", "BTHV", &bd),
                           lina_op_output(out, "ht", "BHKV", &bd),
                           lina_op_output(out, "nt", "BHK", &bd),
                           lina_op_output(out, "mt", "BH", &bd)};
    if (!mout.o || !mout.ht || !mout.nt || !mout.mt) {
        return LINA_ENOMEM;
    }
    int rc = lina_mlstm_fwd(&d, &min, &mout, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_mlstm_grad_out g = {lina_op_output(out, "dq", "BTHK", &bd),
                             lina_op_output(out, "dk", "BTHK", &bd),
                             lina_op_output(out, "dv", "BTHV", &bd),
                             lina_op_output(out, "di", "BTH", &bd),
                             lina_op_output(out, "df", "BTH", &bd),
                             NULL, NULL, NULL};
    if (h0) {
        g.dh0 = lina_op_output(out, "dh0", "BHKV", &bd);
        g.dn0 = lina_op_output(out, "dn0", "BHK", &bd);
        g.dm0 = lina_op_output(out, "dm0", "BH", &bd);
    }
    if (!g.dq || !g.dk || !g.dv || !g.di || !g.df || (h0 && (!g.dh0 || !g.dn0 || !g.dm0))) {
        return LINA_ENOMEM;
    }
    lina_mlstm_grad_in gi = {dO->data, dht ? dht->data : NULL, dnt ? dnt->data : NULL,
                             dmt ? dmt->data : NULL};
    return lina_mlstm_bwd(&d, &min, &gi, &g, o->form, ws);
}

static int mk_mlstm(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "i", 3, sk, &rng, -3.0f, 3.0f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "f", 3, sk, &rng, 0.0f, 6.0f, 0);
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): the matrix work is simple_gla's chunk form with V+1
 * value columns (the normaliser n rides along as one more column):
 *   B*H*T*(2*C*K + 2*C*(V+1) + 4*K*(V+1)),  C the chunk size (64);
 * the O(B*T*H) scalar stabiliser work and the O(B*T*H*(K+V)) scalings are
 * not counted. */
static double mlstm_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    double C = o->chunk > 0 ? o->chunk : 64, Va = d->V + 1.0;
    if (o->form == LINA_FORM_RECURRENT) {
        return 4.0 * d->B * d->H * d->T * d->K * Va; /* recurrent: 4*B*H*T*K*(V+1) */
    }
    return (double)d->B * d->H * d->T * (2 * C * d->K + 2 * C * Va + 4.0 * d->K * Va);
}

const lina_op_info lina_op_mlstm = {
    "mlstm", "xLSTM mLSTM cell (exponential gating, max stabiliser, normaliser state)", {NULL},
    run_mlstm, mk_mlstm, mlstm_flops};
#endif /* LINA_ISA_PRIMARY */
