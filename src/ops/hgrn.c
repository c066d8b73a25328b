/*
 * hgrn.c -- HGRN's element-wise gated recurrence (docs/ops.md, docs/mixers.md 15),
 * per channel:
 *
 *   h_t = exp(g_t) h_{t-1} + x_t,   o_t = h_t          x, g, o [B,T,D]; h0, ht [B,D]
 *
 * Both directions are one scan, s_t = exp(G_t) s_{t-1} + y_t over a sequence of
 * rows: the forward runs over t = 0..T-1 with G_t = g_t; the backward's state
 * gradient dh_t = do_t + exp(g_{t+1}) dh_{t+1} runs over t = T-1..0 with G_t =
 * g_{t+1} (0 for the last row, whose incoming state is dht). Then dx = dh,
 * dg_t = dh_t exp(g_t) h_{t-1} (h_{-1} = h0) and dh0 = exp(g_0) dh_0.
 * Forms of the scan: RECURRENT walks the rows per block of channels; CHUNK
 * runs every chunk of rows from a zero state in parallel, passes the chunk
 * states along in order (s_in(c+1) = exp(sum of the chunk's G) s_in(c) + the
 * chunk's last local row), then adds exp(the inclusive cumulative G within
 * the chunk) s_in(c) to each row.
 */
#include "ops_internal.h"
#include "../kern/checked.h"
#include "../kern/isa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HG_COLS 64 /* channels per task of the row-sequential loops */

typedef struct hg_ctx {
    int B, T, D, S;
} hg_ctx;

static int hg_setup(hg_ctx *c, const lina_mix_dims *d, const lina_hgrn_in *in)
{
    if (!d || !in) {
        return lina_set_error(LINA_EINVAL, "hgrn: NULL dims or inputs");
    }
    if (d->B <= 0 || d->T < 0 || d->H <= 0) {
        return lina_set_error(LINA_EINVAL, "hgrn: bad dims B=%d T=%d D=%d", d->B, d->T, d->H);
    }
    if (!in->x || !in->g) {
        return lina_set_error(LINA_EINVAL, "hgrn: x and g are required");
    }
    c->B = d->B;
    c->T = d->T;
    c->D = d->H;
    c->S = d->chunk > 0 ? d->chunk : 64;
    return LINA_OK;
}

/* the log decay applied to the state entering sequence position t (row tt = the
 * time index): G = g[tt] forward, g[tt + 1] (0 past the end) backward */
static inline const float *hg_gate_row(const hg_ctx *c, const float *g, int tt, int rev)
{
    if (!rev) {
        return g + (size_t)tt * c->D;
    }
    return tt + 1 < c->T ? g + (size_t)(tt + 1) * c->D : NULL;
}

/* exp of the gate row G over columns [c0, c0 + n) into e (1 where G is NULL) */
static inline void hg_exp_row(float *e, const float *G, int c0, int n)
{
    if (G) {
        lina_vexp(e, G + c0, (size_t)n);
    } else {
        for (int i = 0; i < n; i++) {
            e[i] = 1.0f;
        }
    }
}

/* One batch row's scan over sequence positions [k0, k1) and columns [c0, c0 + n):
 * s_t = exp(G_t) s_{t-1} + y_t in the direction rev, from the state st (updated);
 * y, s [T, D] (s may be y); with gsum, also the sum of the G over the rows into it. */
static void hg_scan_block(const hg_ctx *c, float *s, const float *y, const float *g, float *st, float *gsum, int rev,
                          int k0, int k1, int c0, int n)
{
    float e[HG_COLS];
    for (int k = k0; k < k1; k++) {
        const int tt = rev ? c->T - 1 - k : k;
        const float *G = hg_gate_row(c, g, tt, rev), *yr = y + (size_t)tt * c->D + c0;
        float *sr = s + (size_t)tt * c->D + c0;
        hg_exp_row(e, G, c0, n);
#pragma omp simd
        for (int i = 0; i < n; i++) {
            st[i] = e[i] * st[i] + yr[i];
            sr[i] = st[i];
        }
        if (gsum && G) {
#pragma omp simd
            for (int i = 0; i < n; i++) {
                gsum[i] += G[c0 + i];
            }
        }
    }
}

/* s [B,T,D] from y [B,T,D] (s may be y), s0, sT [B,D] (each may be NULL); buf:
 * 2*B*nchunk*D floats (chunk form only) */
static void hg_scan(const hg_ctx *c, float *s, const float *y, const float *g, const float *s0, float *sT, int rev,
                    lina_form form, float *buf)
{
    const int B = c->B, T = c->T, D = c->D, ncol = (D + HG_COLS - 1) / HG_COLS;
    const size_t TD = (size_t)T * D;
    if (form != LINA_FORM_CHUNK || T <= c->S) {
#pragma omp parallel for collapse(2) if ((size_t)B * TD >= 16384)
        for (int b = 0; b < B; b++) {
            for (int cb = 0; cb < ncol; cb++) {
                const int c0 = cb * HG_COLS, n = c0 + HG_COLS < D ? HG_COLS : D - c0;
                float st[HG_COLS];
                for (int i = 0; i < n; i++) {
                    st[i] = s0 ? s0[(size_t)b * D + c0 + i] : 0.0f;
                }
                hg_scan_block(c, s + b * TD, y + b * TD, g + b * TD, st, NULL, rev, 0, T, c0, n);
                if (sT) {
                    memcpy(sT + (size_t)b * D + c0, st, (size_t)n * sizeof(float));
                }
            }
        }
        return;
    }
    const int S = c->S, nch = (T + S - 1) / S;
    float *A = buf, *hin = buf + (size_t)B * nch * D; /* [B, nch, D] each: chunk gate sums, incoming states */
    /* 1. every chunk from a zero state, and its gate sum */
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int ch = 0; ch < nch; ch++) {
            for (int cb = 0; cb < ncol; cb++) {
                const int c0 = cb * HG_COLS, n = c0 + HG_COLS < D ? HG_COLS : D - c0;
                const int k1 = (ch + 1) * S < T ? (ch + 1) * S : T;
                float st[HG_COLS] = {0}, *Ab = A + ((size_t)b * nch + ch) * D + c0;
                memset(Ab, 0, (size_t)n * sizeof(float));
                hg_scan_block(c, s + b * TD, y + b * TD, g + b * TD, st, Ab, rev, ch * S, k1, c0, n);
            }
        }
    }
    /* 2. the states entering each chunk, in order */
#pragma omp parallel for collapse(2) if ((size_t)B * nch * D >= 4096)
    for (int b = 0; b < B; b++) {
        for (int cb = 0; cb < ncol; cb++) {
            const int c0 = cb * HG_COLS, n = c0 + HG_COLS < D ? HG_COLS : D - c0;
            float h[HG_COLS], e[HG_COLS];
            for (int i = 0; i < n; i++) {
                h[i] = s0 ? s0[(size_t)b * D + c0 + i] : 0.0f;
            }
            for (int ch = 0; ch < nch; ch++) {
                const size_t o = ((size_t)b * nch + ch) * D + c0;
                const int kl = (ch + 1) * S < T ? (ch + 1) * S - 1 : T - 1;
                const float *last = s + b * TD + (size_t)(rev ? T - 1 - kl : kl) * D + c0;
                memcpy(hin + o, h, (size_t)n * sizeof(float));
                lina_vexp(e, A + o, (size_t)n);
#pragma omp simd
                for (int i = 0; i < n; i++) {
                    h[i] = e[i] * h[i] + last[i];
                }
            }
            if (sT) {
                memcpy(sT + (size_t)b * D + c0, h, (size_t)n * sizeof(float));
            }
        }
    }
    /* 3. each row gets exp(cumulative gate) times its chunk's incoming state */
#pragma omp parallel for collapse(3)
    for (int b = 0; b < B; b++) {
        for (int cc = 0; cc < nch; cc++) {
            for (int cb = 0; cb < ncol; cb++) {
                const int c0 = cb * HG_COLS, n = c0 + HG_COLS < D ? HG_COLS : D - c0;
                const int k1 = (cc + 1) * S < T ? (cc + 1) * S : T;
                const float *hb = hin + ((size_t)b * nch + cc) * D + c0;
                float cum[HG_COLS] = {0}, e[HG_COLS];
                for (int k = cc * S; k < k1; k++) {
                    const int tt = rev ? T - 1 - k : k;
                    const float *G = hg_gate_row(c, g + b * TD, tt, rev);
                    float *sr = s + b * TD + (size_t)tt * D + c0;
                    if (G) {
#pragma omp simd
                        for (int i = 0; i < n; i++) {
                            cum[i] += G[c0 + i];
                        }
                    }
                    lina_vexp(e, cum, (size_t)n);
#pragma omp simd
                    for (int i = 0; i < n; i++) {
                        sr[i] += e[i] * hb[i];
                    }
                }
            }
        }
    }
}

static size_t hg_buf_floats(const hg_ctx *c, lina_form form)
{
    const size_t nch = (size_t)(c->T + c->S - 1) / (size_t)c->S;
    return form == LINA_FORM_CHUNK && c->T > c->S ? 2 * (size_t)c->B * nch * c->D : 0;
}

int LINA_KFN(lina_hgrn_fwd)(const lina_mix_dims *d, const lina_hgrn_in *in, lina_hgrn_out *out, lina_form form,
                            lina_ws *ws)
{
    hg_ctx c;
    int rc = hg_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!out || !out->o) {
        return lina_set_error(LINA_EINVAL, "hgrn: output o is NULL");
    }
    if (c.T == 0) {
        if (out->ht) {
            if (in->h0) {
                memmove(out->ht, in->h0, (size_t)c.B * c.D * sizeof(float));
            } else {
                memset(out->ht, 0, (size_t)c.B * c.D * sizeof(float));
            }
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, 1))) {
        return rc;
    }
    const size_t nb = hg_buf_floats(&c, form);
    float *buf = nb ? lina_ws_get(sc.ws, 0, nb * sizeof(float)) : NULL;
    if (nb && !buf) {
        lina_ws_scope_close(&sc);
        return lina_set_error(LINA_ENOMEM, "hgrn: out of memory");
    }
    hg_scan(&c, out->o, in->x, in->g, in->h0, out->ht, 0, form, buf);
    lina_ws_scope_close(&sc);
    return LINA_OK;
}

int LINA_KFN(lina_hgrn_bwd)(const lina_mix_dims *d, const lina_hgrn_in *in, const lina_hgrn_grad_in *gin,
                            lina_hgrn_grad_out *gout, lina_form form, lina_ws *ws)
{
    hg_ctx c;
    int rc = hg_setup(&c, d, in);
    if (rc) {
        return rc;
    }
    if (!gin || !gin->do_ || !gout || !gout->dx || !gout->dg) {
        return lina_set_error(LINA_EINVAL, "hgrn: do and the outputs dx, dg are required");
    }
    const int B = c.B, T = c.T, D = c.D;
    if (T == 0) {
        if (gout->dh0) {
            if (gin->dht) {
                memcpy(gout->dh0, gin->dht, (size_t)B * D * sizeof(float));
            } else {
                memset(gout->dh0, 0, (size_t)B * D * sizeof(float));
            }
        }
        return LINA_OK;
    }
    lina_ws_scope sc;
    if ((rc = lina_ws_scope_open(&sc, ws, 1))) {
        return rc;
    }
    const size_t TD = (size_t)T * D, nb = hg_buf_floats(&c, form);
    float *h = lina_ws_get(sc.ws, 0, (lina_szmul((size_t)B, TD) + nb) * sizeof(float));
    if (!h) {
        lina_ws_scope_close(&sc);
        return lina_set_error(LINA_ENOMEM, "hgrn: out of memory");
    }
    float *buf = nb ? h + (size_t)B * TD : NULL;
    /* the forward states, then dh into dx */
    hg_scan(&c, h, in->x, in->g, in->h0, NULL, 0, form, buf);
    hg_scan(&c, gout->dx, gin->do_, in->g, gin->dht, NULL, 1, form, buf);
#pragma omp parallel for collapse(2) if ((size_t)B * TD >= 16384)
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            const size_t o = b * TD + (size_t)t * D;
            const float *hp = t ? h + o - D : in->h0 ? in->h0 + (size_t)b * D : NULL;
            float *dg = gout->dg + o;
            const float *dh = gout->dx + o, *g = in->g + o;
            if (!hp) {
                memset(dg, 0, (size_t)D * sizeof(float));
                continue;
            }
            lina_vexp(dg, g, (size_t)D);
#pragma omp simd
            for (int i = 0; i < D; i++) {
                dg[i] *= dh[i] * hp[i];
            }
        }
    }
    if (gout->dh0) {
        for (size_t i = 0; i < (size_t)B * D; i++) {
            const size_t o = (i / D) * TD + i % D;
            gout->dh0[i] = expf(in->g[o]) * gout->dx[o];
        }
    }
    lina_ws_scope_close(&sc);
    return LINA_OK;
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_hgrn_fwd,
                  (const lina_mix_dims *d, const lina_hgrn_in *in, lina_hgrn_out *out, lina_form form,
                   lina_ws *ws),
                  (d, in, out, form, ws))
LINA_ISA_DISPATCH(int, lina_hgrn_bwd,
                  (const lina_mix_dims *d, const lina_hgrn_in *in, const lina_hgrn_grad_in *gin,
                   lina_hgrn_grad_out *gout, lina_form form, lina_ws *ws),
                  (d, in, gin, gout, form, ws))

/* ================================================ op for `lina op` / bench */

static int run_hgrn(const lina_tset *in, lina_tset *out, const lina_op_opts *o, lina_ws *ws)
{
    lina_binds bd;
    lina_binds_init(&bd);
    int err = 0;
    const lina_tensor *x = lina_op_input(in, "x", "BTD", &bd, 0, &err);
    const lina_tensor *g = err ? NULL : lina_op_input(in, "g", "BTD", &bd, 0, &err);
    const lina_tensor *h0 = err ? NULL : lina_op_input(in, "h0", "BD", &bd, 1, &err);
    if (err) {
        return err;
    }
    if ((err = lina_op_check_nonpos(g, "g", "g holds log decays"))) {
        return err;
    }
    const lina_tensor *dO = NULL, *dht = NULL;
    if (o->backward) {
        dO = lina_op_input(in, "do", "BTD", &bd, 0, &err);
        dht = err ? NULL : lina_op_input(in, "dht", "BD", &bd, 1, &err);
        if (err) {
            return err;
        }
    }
    lina_mix_dims d = {(int)bd.v['B' - 'A'], (int)bd.v['T' - 'A'], (int)bd.v['D' - 'A'], 1, 1, o->chunk, 0.0f};
    lina_hgrn_in hin = {x->data, g->data, h0 ? h0->data : NULL};
    lina_hgrn_out ho = {lina_op_output(out, "o", "BTD", &bd), lina_op_output(out, "ht", "BD", &bd)};
    if (!ho.o || !ho.ht) {
        return LINA_ENOMEM;
    }
    int rc = lina_hgrn_fwd(&d, &hin, &ho, o->form, ws);
    if (rc || !o->backward) {
        return rc;
    }
    lina_hgrn_grad_out go = {lina_op_output(out, "dx", "BTD", &bd), lina_op_output(out, "dg", "BTD", &bd),
                             h0 ? lina_op_output(out, "dh0", "BD", &bd) : NULL};
    if (!go.dx || !go.dg || (h0 && !go.dh0)) {
        return LINA_ENOMEM;
    }
    lina_hgrn_grad_in gi = {dO->data, dht ? dht->data : NULL};
    return lina_hgrn_bwd(&d, &hin, &gi, &go, o->form, ws);
}

/* Benchmark inputs: D = H*K channels of the benchmark shape, g log-sigmoid-like in [-3, -0.01] */
static int mk_hgrn(const lina_mix_dims *d, int backward, uint64_t seed, lina_tset *in)
{
    uint64_t rng = seed;
    int64_t sh[3] = {d->B, d->T, (int64_t)d->H * d->K};
    int rc = lina_bench_tensor(in, "x", 3, sh, &rng, 0, 1, 1);
    rc = rc ? rc : lina_bench_tensor(in, "g", 3, sh, &rng, -3.0f, -0.01f, 0);
    if (!rc && backward) {
        rc = lina_bench_tensor(in, "do", 3, sh, &rng, 0, 1, 1);
    }
    return rc;
}

/* FLOPs (README rule): 2 per element and step (a multiply and an add; the exp not
 * counted), D = H*K channels at the benchmark shape. */
static double hgrn_flops(const lina_mix_dims *d, const lina_op_opts *o)
{
    (void)o;
    return 2.0 * d->B * (double)d->T * d->H * d->K;
}

const lina_op_info lina_op_hgrn = {
    "hgrn", "HGRN element-wise gated recurrence h = exp(g) h + x (x, g [, h0]); recurrent and blocked-scan forms",
    {NULL},
    run_hgrn, mk_hgrn, hgrn_flops};
#endif /* LINA_ISA_PRIMARY */
