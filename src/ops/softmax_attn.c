/*
 * softmax_attn.c -- exact softmax attention, tiled ("flash" style), forward
 * and backward, memory O(T*(K+V)):
 *
 *   o_i = sum_j softmax_j(s q_i.k_j) v_j,   j in J(i):
 *         causal j <= i;  --window W: i - W < j <= i;  --non-causal: all j.
 *
 * Forward, per (b,h) and tile of SA_BR query rows: loop over the key tiles of
 * SA_BC keys that hold allowed keys; S = s Q K^T (lina_sgemm), masked per
 * row to its allowed column range, running max m and sum l per row:
 *   m' = max(m, max_j S_j),  P = exp(S - m'),  l = l exp(m - m') + sum P,
 *   O = O exp(m - m') + P V;
 * finally o = O / l and lse = m + log l (kept for the backward pass).
 * Backward, per (b,h) and key tile (accumulating dK, dV of the tile), over the
 * query tiles that see it: P = exp(S - lse), dV += P^T dO, dP = dO V^T,
 * dS = P (dP - D), D_i = do_i . o_i, dQ += s dS K, dK += s dS^T Q.
 * Threads: forward over (b,h) x query tiles, backward over (b,h).
 */
#include "ops_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define SA_BR 128  /* query rows per tile */
#define SA_BC 128  /* keys per tile */

typedef struct sa_ctx {
    int B, T, H, K, V;
    int window;      /* 0: none */
    int causal;
    float s;
} sa_ctx;

static size_t sa_al64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

static int sa_setup(sa_ctx *c, const lina_mix_dims *d, const lina_softmax_in *in)
{
    if (!d || !in || !in->q || !in->k || !in->v) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: missing q, k or v");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: bad dims B=%d T=%d H=%d K=%d V=%d",
                              d->B, d->T, d->H, d->K, d->V);
    }
    if (in->window < 0) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: window must be >= 1 (got %d)", in->window);
    }
    if (in->window > 0 && in->non_causal) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: a window applies only to causal attention");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->window = in->window;
    c->causal = !in->non_causal;
    c->s = d->scale != 0.0f ? d->scale : 1.0f / sqrtf((float)d->K);
    return LINA_OK;
}

/* Allowed key range [lo, hi) of query row i. */
static inline void sa_keys(const sa_ctx *c, int i, int *lo, int *hi)
{
    if (!c->causal) {
        *lo = 0;
        *hi = c->T;
        return;
    }
    *hi = i + 1;
    *lo = c->window > 0 && i - c->window + 1 > 0 ? i - c->window + 1 : 0;
}

/* -------------------------------------------------------------- forward */

static size_t sa_fwd_bytes(const sa_ctx *c)
{
    return sa_al64((size_t)SA_BR * SA_BC * sizeof(float)) +
           sa_al64((size_t)SA_BR * c->V * sizeof(float)) + 2 * sa_al64(SA_BR * sizeof(float)) + 64;
}

/* One query tile [i0, i1) of (b,h). */
static void sa_fwd_tile(const sa_ctx *c, const lina_softmax_in *in, float *o, float *lse, int b,
                        int h, int i0, int i1, char *mem)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V, nr = i1 - i0;
    const int ldk = H * K, ldv = H * V;
    float *S = (float *)mem;                                        /* [BR][BC] */
    float *O = (float *)(mem + sa_al64((size_t)SA_BR * SA_BC * sizeof(float))); /* [BR][V] */
    float *mr = O + sa_al64((size_t)SA_BR * V * sizeof(float)) / sizeof(float); /* [BR] */
    float *lr = mr + sa_al64(SA_BR * sizeof(float)) / sizeof(float);            /* [BR] */
    memset(O, 0, (size_t)nr * V * sizeof(float));
    for (int r = 0; r < nr; r++) {
        mr[r] = -INFINITY;
        lr[r] = 0.0f;
    }
    int jlo, jhi, dummy;
    sa_keys(c, i0, &jlo, &dummy);
    sa_keys(c, i1 - 1, &dummy, &jhi);
    const float *Q = LINA_ROW(in->q, b, i0, h, T, H, K);
    for (int j0 = jlo; j0 < jhi; j0 += SA_BC) {
        const int nc = jhi - j0 < SA_BC ? jhi - j0 : SA_BC;
        lina_sgemm(0, 1, nr, nc, K, c->s, Q, ldk, LINA_ROW(in->k, b, j0, h, T, H, K), ldk, 0.0f,
                   S, SA_BC);
        for (int r = 0; r < nr; r++) {
            float *Sr = S + (size_t)r * SA_BC;
            int lo, hi;
            sa_keys(c, i0 + r, &lo, &hi);
            lo = lo > j0 ? lo - j0 : 0;
            hi = hi < j0 + nc ? hi - j0 : nc;
            if (hi <= lo) {
                memset(Sr, 0, (size_t)nc * sizeof(float));
                continue;
            }
            float mx = -INFINITY;
            for (int j = lo; j < hi; j++) {
                mx = Sr[j] > mx ? Sr[j] : mx;
            }
            const float mnew = mx > mr[r] ? mx : mr[r];
            for (int j = lo; j < hi; j++) {
                Sr[j] -= mnew;
            }
            lina_vexp(Sr + lo, Sr + lo, (size_t)(hi - lo));
            float sum = 0.0f;
            for (int j = lo; j < hi; j++) {
                sum += Sr[j];
            }
            for (int j = 0; j < lo; j++) {
                Sr[j] = 0.0f;
            }
            for (int j = hi; j < nc; j++) {
                Sr[j] = 0.0f;
            }
            if (mnew > mr[r]) {
                const float alpha = expf(mr[r] - mnew); /* 0 on the first visit */
                float *Or = O + (size_t)r * V;
                for (int x = 0; x < V; x++) {
                    Or[x] *= alpha;
                }
                lr[r] *= alpha;
                mr[r] = mnew;
            }
            lr[r] += sum;
        }
        lina_sgemm(0, 0, nr, V, nc, 1.0f, S, SA_BC, LINA_ROW(in->v, b, j0, h, T, H, V), ldv, 1.0f,
                   O, V);
    }
    for (int r = 0; r < nr; r++) {
        const float inv = 1.0f / lr[r];
        float *dst = LINA_ROW(o, b, i0 + r, h, T, H, V);
        const float *Or = O + (size_t)r * V;
        for (int x = 0; x < V; x++) {
            dst[x] = Or[x] * inv;
        }
        if (lse) {
            lse[((size_t)b * T + i0 + r) * H + h] = mr[r] + logf(lr[r]);
        }
    }
}

static int sa_fwd(const sa_ctx *c, const lina_softmax_in *in, float *o, float *lse, lina_ws *ws)
{
    const int nt = (c->T + SA_BR - 1) / SA_BR, ntask = c->B * c->H * nt;
    int rc = LINA_OK;
    const size_t need = sa_fwd_bytes(c);
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = ntask - 1; task >= 0; task--) {
        /* descending: the long (late) causal tiles start first */
        const int ti = task % nt, bh = task / nt;
        char *mem = lina_ws_get(ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        const int i0 = ti * SA_BR, i1 = i0 + SA_BR < c->T ? i0 + SA_BR : c->T;
        sa_fwd_tile(c, in, o, lse, bh / c->H, bh % c->H, i0, i1, mem);
    }
    return rc;
}

int lina_softmax_attn_fwd(const lina_mix_dims *d, const lina_softmax_in *in,
                          lina_softmax_out *out, lina_ws *ws)
{
    sa_ctx c;
    int rc = sa_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: output o is NULL");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    rc = sa_fwd(&c, in, out->o, out->lse, sc.ws);
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "softmax_attn: out of memory");
    }
    return LINA_OK;
}

/* -------------------------------------------------------------- backward */

static size_t sa_bwd_bytes(const sa_ctx *c)
{
    return 2 * sa_al64((size_t)SA_BR * SA_BC * sizeof(float)) +
           sa_al64((size_t)SA_BC * c->K * sizeof(float)) +
           sa_al64((size_t)SA_BC * c->V * sizeof(float)) + sa_al64((size_t)c->T * sizeof(float)) +
           64;
}

static void sa_bwd_head(const sa_ctx *c, const lina_softmax_in *in, const float *o,
                        const float *lse, const float *dO, lina_softmax_grad_out *g, int b, int h,
                        char *mem)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V;
    const int ldk = H * K, ldv = H * V;
    float *P = (float *)mem;                                                      /* [BR][BC] */
    float *dP = P + sa_al64((size_t)SA_BR * SA_BC * sizeof(float)) / sizeof(float); /* [BR][BC] */
    float *dKa = dP + sa_al64((size_t)SA_BR * SA_BC * sizeof(float)) / sizeof(float); /* [BC][K] */
    float *dVa = dKa + sa_al64((size_t)SA_BC * K * sizeof(float)) / sizeof(float);  /* [BC][V] */
    float *D = dVa + sa_al64((size_t)SA_BC * V * sizeof(float)) / sizeof(float);    /* [T] */
    for (int i = 0; i < T; i++) {
        const float *oi = LINA_ROW(o, b, i, h, T, H, V), *di = LINA_ROW(dO, b, i, h, T, H, V);
        double acc = 0.0;
        for (int x = 0; x < V; x++) {
            acc += (double)oi[x] * di[x];
        }
        D[i] = (float)acc;
        memset(LINA_ROW(g->dq, b, i, h, T, H, K), 0, (size_t)K * sizeof(float));
    }
    for (int j0 = 0; j0 < T; j0 += SA_BC) {
        const int nc = T - j0 < SA_BC ? T - j0 : SA_BC;
        const float *Kt = LINA_ROW(in->k, b, j0, h, T, H, K);
        const float *Vt = LINA_ROW(in->v, b, j0, h, T, H, V);
        memset(dKa, 0, (size_t)nc * K * sizeof(float));
        memset(dVa, 0, (size_t)nc * V * sizeof(float));
        /* queries that see some key of [j0, j0+nc) */
        int ilo = 0, ihi = T;
        if (c->causal) {
            ilo = j0;
            if (c->window > 0) {
                long long e = (long long)j0 + nc - 1 + c->window;
                ihi = e < T ? (int)e : T;
            }
        }
        for (int i0 = ilo; i0 < ihi; i0 += SA_BR) {
            const int nr = ihi - i0 < SA_BR ? ihi - i0 : SA_BR;
            const float *Q = LINA_ROW(in->q, b, i0, h, T, H, K);
            const float *dOt = LINA_ROW(dO, b, i0, h, T, H, V);
            lina_sgemm(0, 1, nr, nc, K, c->s, Q, ldk, Kt, ldk, 0.0f, P, SA_BC);
            for (int r = 0; r < nr; r++) {
                float *Pr = P + (size_t)r * SA_BC;
                int lo, hi;
                sa_keys(c, i0 + r, &lo, &hi);
                lo = lo > j0 ? lo - j0 : 0;
                hi = hi < j0 + nc ? hi - j0 : nc;
                if (hi <= lo) {
                    memset(Pr, 0, (size_t)nc * sizeof(float));
                    continue;
                }
                const float l = lse[((size_t)b * T + i0 + r) * H + h];
                for (int j = lo; j < hi; j++) {
                    Pr[j] -= l;
                }
                lina_vexp(Pr + lo, Pr + lo, (size_t)(hi - lo));
                for (int j = 0; j < lo; j++) {
                    Pr[j] = 0.0f;
                }
                for (int j = hi; j < nc; j++) {
                    Pr[j] = 0.0f;
                }
            }
            /* dV += P^T dO;  dP = dO V^T */
            lina_sgemm(1, 0, nc, V, nr, 1.0f, P, SA_BC, dOt, ldv, 1.0f, dVa, V);
            lina_sgemm(0, 1, nr, nc, V, 1.0f, dOt, ldv, Vt, ldv, 0.0f, dP, SA_BC);
            for (int r = 0; r < nr; r++) {
                float *Pr = P + (size_t)r * SA_BC;
                const float *dPr = dP + (size_t)r * SA_BC;
                const float Di = D[i0 + r];
                for (int j = 0; j < nc; j++) {
                    Pr[j] *= dPr[j] - Di; /* dS, in place */
                }
            }
            lina_sgemm(0, 0, nr, K, nc, c->s, P, SA_BC, Kt, ldk, 1.0f,
                       LINA_ROW(g->dq, b, i0, h, T, H, K), ldk);
            lina_sgemm(1, 0, nc, K, nr, c->s, P, SA_BC, Q, ldk, 1.0f, dKa, K);
        }
        for (int j = 0; j < nc; j++) {
            memcpy(LINA_ROW(g->dk, b, j0 + j, h, T, H, K), dKa + (size_t)j * K,
                   (size_t)K * sizeof(float));
            memcpy(LINA_ROW(g->dv, b, j0 + j, h, T, H, V), dVa + (size_t)j * V,
                   (size_t)V * sizeof(float));
        }
    }
}

int lina_softmax_attn_bwd(const lina_mix_dims *d, const lina_softmax_in *in,
                          const lina_softmax_grad_in *gin, lina_softmax_grad_out *gout,
                          lina_ws *ws)
{
    sa_ctx c;
    int rc = sa_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dq || !gout->dk || !gout->dv) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: do and the outputs dq, dk, dv are required");
    }
    if (!gin->o != !gin->lse) {
        return lina_set_error(LINA_EINVAL, "softmax_attn: give both o and lse, or neither");
    }
    if (c.T == 0) {
        return LINA_OK;
    }
    const int slot = lina_ws_extra_slot();
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, slot + 1))) {
        return rc;
    }
    const float *o = gin->o, *lse = gin->lse;
    if (!o) {
        const size_t nr = (size_t)c.B * c.T * c.H;
        char *mem = lina_ws_get(sc.ws, slot, sa_al64(nr * c.V * sizeof(float)) + nr * sizeof(float));
        if (!mem) {
            lina_ws_scope_close(&sc);
            return lina_set_error(LINA_ENOMEM, "softmax_attn: out of memory");
        }
        float *ob = (float *)mem, *lb = (float *)(mem + sa_al64(nr * c.V * sizeof(float)));
        if ((rc = sa_fwd(&c, in, ob, lb, sc.ws))) {
            lina_ws_scope_close(&sc);
            return lina_set_error(rc, "softmax_attn: out of memory");
        }
        o = ob;
        lse = lb;
    }
    const size_t need = sa_bwd_bytes(&c);
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c.B * c.H; bh++) {
        char *mem = lina_ws_get(sc.ws, lina_thread_id(), need);
        if (!mem) {
            rc = LINA_ENOMEM;
            continue;
        }
        sa_bwd_head(&c, in, o, lse, gin->do_, gout, bh / c.H, bh % c.H, mem);
    }
    lina_ws_scope_close(&sc);
    if (rc) {
        return lina_set_error(rc, "softmax_attn: out of memory");
    }
    return LINA_OK;
}

/* ================================================ op for `lina op` / bench */

static int run_softmax_attn(const lina_tset *in, lina_tset *out, const lina_op_opts *o,
                            lina_ws *ws)
{
    lina_binds bd;
    const lina_tensor *q, *k, *v;
    int err = lina_op_qkv(in, &bd, &q, &k, &v);
    if (err) {
        return err;
    }
    if (lina_tset_cfind(in, "h0")) {
        return lina_set_error(LINA_EINVAL, "h0.npy given, but softmax_attn has no initial state");
    }
    if (o->window < 0) {
        return lina_set_error(LINA_EINVAL, "--window must be >= 1 (got %d)", o->window);
    }
    if (o->window > 0 && o->non_causal) {
        return lina_set_error(LINA_EINVAL, "--window and --non-causal exclude each other");
    }
    const lina_tensor *dO = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'],
                       (int)bd.v['K' - 'A'], (int)bd.v['V' - 'A'], o->chunk, 0.0f};
    lina_softmax_in sin = {q->data, k->data, v->data, o->window, o->non_causal};
    float *po = lina_op_output(out, "o", "BTHV", &bd);
    if (!po) {
        return LINA_ENOMEM;
    }
    float *lse = NULL;
    if (o->backward) {
        lse = malloc(((size_t)d.B * d.T * d.H + 1) * sizeof(float));
        if (!lse) {
            return lina_set_error(LINA_ENOMEM, "softmax_attn: out of memory");
        }
    }
    lina_softmax_out so = {po, lse};
    int rc = lina_softmax_attn_fwd(&d, &sin, &so, ws);
    if (!rc && o->backward) {
        lina_softmax_grad_out g = {lina_op_output(out, "dq", "BTHK", &bd),
                                   lina_op_output(out, "dk", "BTHK", &bd),
                                   lina_op_output(out, "dv", "BTHV", &bd)};
        if (!g.dq || !g.dk || !g.dv) {
            rc = LINA_ENOMEM;
        } else {
            lina_softmax_grad_in gi = {dO->data, po, lse};
            rc = lina_softmax_attn_bwd(&d, &sin, &gi, &g, ws);
        }
    }
    free(lse);
    return rc;
}

static int mk_softmax_attn(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "q", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): 2*B*H*P*(K+V), P the number of allowed (query, key)
 * pairs -- QK^T and PV, 2 flops per multiply-add; the softmax itself is not
 * counted:
 *   causal          P = T(T+1)/2
 *   window W < T    P = W(W+1)/2 + (T-W) W     (W >= T: as causal)
 *   non-causal      P = T^2 */
static double softmax_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    const double T = d->T;
    double P;
    if (o->non_causal) {
        P = T * T;
    } else if (o->window > 0 && o->window < d->T) {
        const double W = o->window;
        P = W * (W + 1) / 2 + (T - W) * W;
    } else {
        P = T * (T + 1) / 2;
    }
    return 2.0 * d->B * d->H * P * (d->K + d->V);
}

const lina_op_info lina_op_softmax_attn = {
    "softmax_attn", "exact softmax attention (causal, sliding window or non-causal), tiled",
    {"--window", "--non-causal", NULL},
    run_softmax_attn, mk_softmax_attn, softmax_flops};
