/*
 * rwkv7.c -- RWKV-7's generalized delta rule with a diagonal-plus-low-rank
 * transition (docs/ops.md, docs/mixers.md 13), per head, K x V state:
 *
 *   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T
 *   o_t = scale S_t^T r_t                                   (scale 1 by default)
 *
 * Both transition terms read S_{t-1}. One task per (batch, head) runs the
 * recurrence with the state in place; per step u = S_{t-1}^T a, then every
 * row i is S[i,:] = e^{w_i} S[i,:] + b_i u + k_i v, then o = S^T r.
 * Backward: the state every `chunk` steps, each segment recomputed, then with
 * R_t = dL/dS_t = scale r_t do_t^T + P_{t+1}^T R_{t+1}, P_t = diag(e^{w_t}) + b_t a_t^T:
 *   dr = scale S_t do,  dk = R v,  dv = R^T k,  db = R u,  c = R^T b,
 *   da = S_{t-1} c,  dw = e^{w} rowsum(R o S_{t-1}),  dS_{t-1} = e^{w} R + a c^T.
 * The chunk form runs the same recurrence (no chunkwise DPLR algorithm yet).
 */
#include "ops_internal.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct rw_ctx {
    int B, T, H, K, V, S;
    float scale;
} rw_ctx;

static int rw_setup(rw_ctx *c, const lina_mix_dims *d, const lina_rwkv7_in *in)
{
    if (!d || !in) {
        return lina_set_error(LINA_EINVAL, "rwkv7: NULL dims or inputs");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "rwkv7: bad dims B=%d T=%d H=%d K=%d V=%d", d->B, d->T, d->H, d->K,
                              d->V);
    }
    if (!in->r || !in->w || !in->k || !in->v || !in->a || !in->b) {
        return lina_set_error(LINA_EINVAL, "rwkv7: r, w, k, v, a and b are required");
    }
    c->B = d->B;
    c->T = d->T;
    c->H = d->H;
    c->K = d->K;
    c->V = d->V;
    c->S = d->chunk > 0 ? d->chunk : 64;
    c->scale = d->scale != 0.0f ? d->scale : 1.0f;
    return LINA_OK;
}

/* one step on the state S [K,V]: u = S^T a (into u), S = diag(ew) S + b u^T + k v^T */
static void rw_step(int K, int V, float *S, const float *ew, const float *a, const float *b, const float *k,
                    const float *v, float *u)
{
    memset(u, 0, (size_t)V * sizeof(float));
    for (int i = 0; i < K; i++) {
        const float ai = a[i], *Si = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) {
            u[j] += ai * Si[j];
        }
    }
    for (int i = 0; i < K; i++) {
        const float ei = ew[i], bi = b[i], ki = k[i];
        float *Si = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) {
            Si[j] = ei * Si[j] + bi * u[j] + ki * v[j];
        }
    }
}

/* o = scale S^T r */
static void rw_read(int K, int V, const float *S, const float *r, float scale, float *o)
{
    memset(o, 0, (size_t)V * sizeof(float));
    for (int i = 0; i < K; i++) {
        const float ri = scale * r[i], *Si = S + (size_t)i * V;
#pragma omp simd
        for (int j = 0; j < V; j++) {
            o[j] += ri * Si[j];
        }
    }
}

static int rw_fwd(const rw_ctx *c, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_ws *ws)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V;
    const size_t KV = (size_t)K * V;
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c->B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *S = lina_ws_get(ws, lina_thread_id(), (KV + (size_t)V + (size_t)K) * sizeof(float));
        if (!S) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *u = S + KV, *ew = u + V;
        if (in->h0) {
            memcpy(S, LINA_STATE(in->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(S, 0, KV * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            const size_t rk = (((size_t)b * T + t) * H + h) * K;
            lina_vexp(ew, in->w + rk, (size_t)K);
            rw_step(K, V, S, ew, in->a + rk, in->b + rk, in->k + rk, LINA_ROW(in->v, b, t, h, T, H, V), u);
            rw_read(K, V, S, in->r + rk, c->scale, LINA_ROW(out->o, b, t, h, T, H, V));
        }
        if (out->ht) {
            memcpy(LINA_STATE(out->ht, b, h, H, KV), S, KV * sizeof(float));
        }
    }
    return rc;
}

static int rw_bwd(const rw_ctx *c, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                  lina_rwkv7_grad_out *go, lina_ws *ws)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V, S = c->S;
    const size_t KV = (size_t)K * V, nseg = ((size_t)T + S - 1) / S;
    const size_t need = ((nseg + 1) * KV + (size_t)(S + 1) * KV + KV + 2 * (size_t)V + (size_t)S * K) * sizeof(float);
    int rc = LINA_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < c->B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *ck = lina_ws_get(ws, lina_thread_id(), need);
        if (!ck) {
            rc = LINA_ENOMEM;
            continue;
        }
        float *hs = ck + (nseg + 1) * KV, *R = hs + (size_t)(S + 1) * KV, *u = R + KV, *cv = u + V;
        float *ew = cv + V; /* [S, K] */
        float *St = hs;
        if (in->h0) {
            memcpy(St, LINA_STATE(in->h0, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(St, 0, KV * sizeof(float));
        }
        for (int t = 0; t < T; t++) {
            if (t % S == 0) {
                memcpy(ck + (size_t)(t / S) * KV, St, KV * sizeof(float));
            }
            const size_t rk = (((size_t)b * T + t) * H + h) * K;
            lina_vexp(ew, in->w + rk, (size_t)K);
            rw_step(K, V, St, ew, in->a + rk, in->b + rk, in->k + rk, LINA_ROW(in->v, b, t, h, T, H, V), u);
        }
        if (gin->dht) {
            memcpy(R, LINA_STATE(gin->dht, b, h, H, KV), KV * sizeof(float));
        } else {
            memset(R, 0, KV * sizeof(float));
        }
        for (int s = (int)nseg - 1; s >= 0; s--) {
            const int t0 = s * S, L = T - t0 < S ? T - t0 : S;
            memcpy(hs, ck + (size_t)s * KV, KV * sizeof(float));
            for (int q = 0; q < L; q++) {
                const size_t rk = (((size_t)b * T + t0 + q) * H + h) * K;
                float *e = ew + (size_t)q * K;
                lina_vexp(e, in->w + rk, (size_t)K);
                memcpy(hs + (size_t)(q + 1) * KV, hs + (size_t)q * KV, KV * sizeof(float));
                rw_step(K, V, hs + (size_t)(q + 1) * KV, e, in->a + rk, in->b + rk, in->k + rk,
                        LINA_ROW(in->v, b, t0 + q, h, T, H, V), u);
            }
            for (int q = L - 1; q >= 0; q--) {
                const int t = t0 + q;
                const size_t rk = (((size_t)b * T + t) * H + h) * K;
                const float *Sc = hs + (size_t)(q + 1) * KV, *Sp = hs + (size_t)q * KV, *e = ew + (size_t)q * K;
                const float *r = in->r + rk, *a = in->a + rk, *bb = in->b + rk, *k = in->k + rk;
                const float *v = LINA_ROW(in->v, b, t, h, T, H, V), *dO = LINA_ROW(gin->do_, b, t, h, T, H, V);
                float *dr = go->dr + rk, *dk = go->dk + rk, *dw = go->dw + rk, *da = go->da + rk, *db = go->db + rk;
                float *dv = LINA_ROW(go->dv, b, t, h, T, H, V);
                /* u = S_{t-1}^T a; R += scale r do^T; c = R^T b; dv = R^T k */
                memset(u, 0, (size_t)V * sizeof(float));
                memset(cv, 0, (size_t)V * sizeof(float));
                memset(dv, 0, (size_t)V * sizeof(float));
                for (int i = 0; i < K; i++) {
                    const float ai = a[i], ri = c->scale * r[i], bi = bb[i], ki = k[i];
                    const float *Spi = Sp + (size_t)i * V;
                    float *Ri = R + (size_t)i * V;
                    float sr = 0.0f;
#pragma omp simd reduction(+ : sr)
                    for (int j = 0; j < V; j++) {
                        u[j] += ai * Spi[j];
                        Ri[j] += ri * dO[j];
                        cv[j] += bi * Ri[j];
                        dv[j] += ki * Ri[j];
                        sr += Sc[(size_t)i * V + j] * dO[j];
                    }
                    dr[i] = c->scale * sr;
                }
                for (int i = 0; i < K; i++) {
                    const float *Spi = Sp + (size_t)i * V;
                    float *Ri = R + (size_t)i * V;
                    float sk = 0.0f, sb = 0.0f, sa = 0.0f, sw = 0.0f;
#pragma omp simd reduction(+ : sk, sb, sa, sw)
                    for (int j = 0; j < V; j++) {
                        sk += Ri[j] * v[j];
                        sb += Ri[j] * u[j];
                        sa += Spi[j] * cv[j];
                        sw += Ri[j] * Spi[j];
                    }
                    dk[i] = sk;
                    db[i] = sb;
                    da[i] = sa;
                    dw[i] = e[i] * sw;
                    const float ei = e[i], ai = a[i];
#pragma omp simd
                    for (int j = 0; j < V; j++) {
                        Ri[j] = ei * Ri[j] + ai * cv[j];
                    }
                }
            }
        }
        if (go->dh0) {
            memcpy(LINA_STATE(go->dh0, b, h, H, KV), R, KV * sizeof(float));
        }
    }
    return rc;
}

int LINA_KFN(lina_rwkv7_fwd)(const lina_mix_dims *d, const lina_rwkv7_in *in, lina_rwkv7_out *out,
                             lina_form form, lina_ws *ws)
{
    (void)form; /* both forms run the recurrence */
    rw_ctx c;
    int rc = rw_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "rwkv7: output o is NULL");
    }
    if (c.T == 0) {
        lina_state_pass(out->ht, in->h0, (size_t)c.B * c.H * c.K * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    rc = rw_fwd(&c, in, out, sc.ws);
    lina_ws_scope_close(&sc);
    return rc ? lina_set_error(rc, "rwkv7: out of memory") : LINA_OK;
}

int LINA_KFN(lina_rwkv7_bwd)(const lina_mix_dims *d, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                             lina_rwkv7_grad_out *gout, lina_form form, lina_ws *ws)
{
    (void)form;
    rw_ctx c;
    int rc = rw_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dr || !gout->dw || !gout->dk || !gout->dv || !gout->da ||
        !gout->db) {
        return lina_set_error(LINA_EINVAL, "rwkv7: do and the outputs dr, dw, dk, dv, da, db are required");
    }
    if (c.T == 0) {
        lina_state_pass(gout->dh0, gin->dht, (size_t)c.B * c.H * c.K * c.V);
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, lina_get_threads()))) {
        return rc;
    }
    rc = rw_bwd(&c, in, gin, gout, sc.ws);
    lina_ws_scope_close(&sc);
    return rc ? lina_set_error(rc, "rwkv7: out of memory") : LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_rwkv7_fwd,
                  (const lina_mix_dims *d, const lina_rwkv7_in *in, lina_rwkv7_out *out, lina_form form,
                   lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_rwkv7_bwd,
                  (const lina_mix_dims *d, const lina_rwkv7_in *in, const lina_rwkv7_grad_in *gin,
                   lina_rwkv7_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_rwkv7(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    const lina_tensor *r = lina_op_input(in, "r", "BTHK", &bd, 0, &err);
    const lina_tensor *w = err ? NULL : lina_op_input(in, "w", "BTHK", &bd, 0, &err);
    const lina_tensor *k = err ? NULL : lina_op_input(in, "k", "BTHK", &bd, 0, &err);
    const lina_tensor *v = err ? NULL : lina_op_input(in, "v", "BTHV", &bd, 0, &err);
    const lina_tensor *a = err ? NULL : lina_op_input(in, "a", "BTHK", &bd, 0, &err);
    const lina_tensor *b = err ? NULL : lina_op_input(in, "b", "BTHK", &bd, 0, &err);
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BHKV", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((err = lina_op_check_nonpos(w, "w", "w holds log decays"))) {
        return err;
    }
    const lina_tensor *dO = NULL, *dht = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTHV", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BHKV", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['H' - 'A'], (int)bd.v['K' - 'A'],
                       (int)bd.v['V' - 'A'], o->chunk, 1.0f};
    lina_rwkv7_in rin = {r->data, w->data, k->data, v->data, a->data, b->data, h0 ? h0->data : NULL};
    lina_rwkv7_out ro = {lina_op_output(out, "o", "BTHV", &bd), lina_op_output(out, "ht", "BHKV", &bd)};
    if (!ro.o || !ro.ht) {
        return LINA_ENOMEM;
    }
    int rc = lina_rwkv7_fwd(&d, &rin, &ro, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_rwkv7_grad_out go = {lina_op_output(out, "dr", "BTHK", &bd), lina_op_output(out, "dw", "BTHK", &bd),
                              lina_op_output(out, "dk", "BTHK", &bd), lina_op_output(out, "dv", "BTHV", &bd),
                              lina_op_output(out, "da", "BTHK", &bd), lina_op_output(out, "db", "BTHK", &bd),
                              h0 ? lina_op_output(out, "dh0", "BHKV", &bd) : NULL};
    if (!go.dr || !go.dw || !go.dk || !go.dv || !go.da || !go.db || (h0 && !go.dh0)) {
        return LINA_ENOMEM;
    }
    lina_rwkv7_grad_in gi = {dO->data, dht ? dht->data : NULL};
    return lina_rwkv7_bwd(&d, &rin, &gi, &go, o->form, ws);
}

/* Benchmark inputs in RWKV-7's domain: w = -e^{-1/2} sigmoid(z), a = -kk, b = kk * iclr
 * with kk L2-normalised per head and iclr in (0, 1). */
static int mk_rwkv7(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sk[4] = {d->B, d->T, d->H, d->K}, sv[4] = {d->B, d->T, d->H, d->V};
    int rc = lina_bench_tensor(in, "r", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "w", 4, sk, &rng, -0.6065f, -0.001f, 0);
    rc = rc ? rc : lina_bench_tensor(in, "k", 4, sk, &rng, 0, 0.3f, 1);
    rc = rc ? rc : lina_bench_tensor(in, "v", 4, sv, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "a", 4, sk, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "b", 4, sk, &rng, 0.0f, 1.0f, 0);
    if (!rc) {
        lina_tensor *a = lina_tset_find(in, "a"), *b = lina_tset_find(in, "b");
        const int64_t rows = (int64_t)d->B * d->T * d->H;
        for (int64_t r = 0; r < rows; r++) {
            float *ar = a->data + r * d->K, *br = b->data + r * d->K;
            double ss = 0.0;
            for (int i = 0; i < d->K; i++) {
                ss += (double)ar[i] * ar[i];
            }
            const float inv = (float)(1.0 / sqrt(ss + 1e-6));
            for (int i = 0; i < d->K; i++) {
                const float kk = ar[i] * inv;
                ar[i] = -kk;
                br[i] = kk * br[i];
            }
        }
    }
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 4, sv, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): 6*B*H*T*K*V per step (a^T S, the decay / low-rank / k v^T update, the
 * read), both forms. */
static double rwkv7_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    (void)o;
    return 6.0 * d->B * d->H * (double)d->T * d->K * d->V;
}

const lina_op_info lina_op_rwkv7 = {
    "rwkv7", "RWKV-7 DPLR delta rule (r, w, k, v, a, b [, h0]), scale 1; one recurrent kernel for both forms",
    {NULL},
    run_rwkv7, mk_rwkv7, rwkv7_flops};
#endif /* LINA_ISA_PRIMARY */
