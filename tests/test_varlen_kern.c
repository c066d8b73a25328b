/* test_varlen_kern.c -- cu_seqlens inside the two chunk engines (lina_dd_*_varlen,
 * lina_delta_*_varlen): a packed call equals every document run alone as a B = 1
 * sequence (outputs, final states, every gradient), in both forms, with documents of
 * one token, documents shorter than a chunk, boundaries on chunk edges and a document
 * over many chunks; the forward's saved states / cache give the backward the same
 * gradients; bad offsets are refused with one error. */
#include "harness.h"
#include "lina.h"

#include <stdint.h>
#include <string.h>

enum { H = 2, K = 8, V = 6, C = 16 };

#define TOL 2e-5

/* the offsets: 1-token documents, short ones, a boundary on the chunk edges 16 and 32,
 * one document over five chunks */
static const int64_t CU[] = {0, 1, 5, 16, 32, 33, 40, 111, 112, 130};
#define NCU ((int64_t)(sizeof CU / sizeof CU[0]))
#define NDOC (NCU - 1)
#define TT 130

static float *rnd(size_t n, double lo, double hi)
{
    float *p = malloc((n + 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        p[i] = (float)th_uniform(lo, hi);
    }
    return p;
}

static float *zeros(size_t n)
{
    return calloc(n + 1, sizeof(float));
}

/* rows [a, a+L) of a [1, T, f] tensor, copied (a fresh buffer: other alignment) */
static float *slice(const float *p, int64_t a, int64_t L, size_t f)
{
    float *s = malloc(((size_t)L * f + 1) * sizeof(float));
    memcpy(s, p + (size_t)a * f, (size_t)L * f * sizeof(float));
    return s;
}

static void put(float *dst, const float *s, int64_t a, int64_t L, size_t f)
{
    memcpy(dst + (size_t)a * f, s, (size_t)L * f * sizeof(float));
}

static double err(const float *a, const float *b, size_t n)
{
    return th_relerr(a, b, n);
}

/* ------------------------------------------------------------ diagonal decay */

static void test_dd(lina_gate_kind gk, int with_h0, lina_form form, lina_ws *ws)
{
    const char *gn[] = {"none", "head", "scalar", "vector"};
    const char *fn = form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    const size_t KV = (size_t)K * V, gf = gk == LINA_GATE_VECTOR ? (size_t)H * K : (size_t)H;
    float *q = rnd((size_t)TT * H * K, -1, 1), *k = rnd((size_t)TT * H * K, -1, 1), *v = rnd((size_t)TT * H * V, -1, 1);
    float *g = gk == LINA_GATE_HEAD ? rnd(H, -0.3, -0.01) : gk ? rnd((size_t)TT * gf, -0.5, -0.01) : NULL;
    float *h0 = with_h0 ? rnd(NDOC * H * KV, -0.5, 0.5) : NULL;
    float *dO = rnd((size_t)TT * H * V, -1, 1), *dht = rnd(NDOC * H * KV, -1, 1);
    lina_mix_dims d = {1, TT, H, K, V, C, 0};
    /* packed */
    float *o = zeros((size_t)TT * H * V), *ht = zeros(NDOC * H * KV);
    float *st = zeros(lina_dd_states_size_varlen(&d, CU, NCU));
    float *dq = zeros((size_t)TT * H * K), *dk = zeros((size_t)TT * H * K), *dv = zeros((size_t)TT * H * V);
    float *dg = g ? zeros(gk == LINA_GATE_HEAD ? H : (size_t)TT * gf) : NULL, *dh0 = zeros(NDOC * H * KV);
    lina_dd_in in = {q, k, v, gk, g, h0};
    lina_dd_out out = {.o = o, .ht = ht, .states = st};
    int rc = lina_dd_fwd_varlen(&d, CU, NCU, &in, &out, form, ws);
    lina_dd_grad_in gin = {dO, dht, NULL};
    lina_dd_grad_out gout = {dq, dk, dv, dg, dh0};
    rc = rc ? rc : lina_dd_bwd_varlen(&d, CU, NCU, &in, &gin, &gout, form, ws);
    CHECK(rc == 0, "dd varlen %s gate %s h0 %d: runs (%s)", fn, gn[gk], with_h0, rc ? lina_last_error() : "");
    /* each document alone */
    float *eo = zeros((size_t)TT * H * V), *eht = zeros(NDOC * H * KV), *edq = zeros((size_t)TT * H * K);
    float *edk = zeros((size_t)TT * H * K), *edv = zeros((size_t)TT * H * V);
    float *edg = g ? zeros(gk == LINA_GATE_HEAD ? H : (size_t)TT * gf) : NULL, *edh0 = zeros(NDOC * H * KV);
    for (int j = 0; j < NDOC; j++) {
        int64_t a = CU[j], L = CU[j + 1] - a;
        lina_mix_dims dj = {1, (int)L, H, K, V, C, 0};
        float *qj = slice(q, a, L, (size_t)H * K), *kj = slice(k, a, L, (size_t)H * K), *vj = slice(v, a, L, (size_t)H * V);
        float *gj = gk == LINA_GATE_HEAD ? g : g ? slice(g, a, L, gf) : NULL, *dOj = slice(dO, a, L, (size_t)H * V);
        float *oj = zeros((size_t)L * H * V), *dqj = zeros((size_t)L * H * K), *dkj = zeros((size_t)L * H * K);
        float *dvj = zeros((size_t)L * H * V), *dgj = g ? zeros(gk == LINA_GATE_HEAD ? H : (size_t)L * gf) : NULL;
        lina_dd_in ij = {qj, kj, vj, gk, gj, h0 ? h0 + (size_t)j * H * KV : NULL};
        lina_dd_out oj_ = {.o = oj, .ht = eht + (size_t)j * H * KV, .states = NULL};
        lina_dd_grad_in gij = {dOj, dht + (size_t)j * H * KV, NULL};
        lina_dd_grad_out goj = {dqj, dkj, dvj, dgj, edh0 + (size_t)j * H * KV};
        if (lina_dd_fwd(&dj, &ij, &oj_, form, ws) || lina_dd_bwd(&dj, &ij, &gij, &goj, form, ws)) {
            CHECK(0, "dd alone: %s", lina_last_error());
        }
        put(eo, oj, a, L, (size_t)H * V);
        put(edq, dqj, a, L, (size_t)H * K);
        put(edk, dkj, a, L, (size_t)H * K);
        put(edv, dvj, a, L, (size_t)H * V);
        if (gk == LINA_GATE_HEAD) {
            for (int h = 0; h < H; h++) {
                edg[h] += dgj[h];
            }
        } else if (g) {
            put(edg, dgj, a, L, gf);
        }
        free(qj), free(kj), free(vj), free(dOj), free(oj), free(dqj), free(dkj), free(dvj), free(dgj);
        if (gk != LINA_GATE_HEAD) {
            free(gj);
        }
    }
    double e[7] = {err(o, eo, (size_t)TT * H * V), err(ht, eht, NDOC * H * KV), err(dq, edq, (size_t)TT * H * K),
                   err(dk, edk, (size_t)TT * H * K), err(dv, edv, (size_t)TT * H * V),
                   g ? err(dg, edg, gk == LINA_GATE_HEAD ? H : (size_t)TT * gf) : 0.0, err(dh0, edh0, NDOC * H * KV)};
    double m = 0;
    for (int i = 0; i < 7; i++) {
        m = e[i] > m || e[i] != e[i] ? e[i] : m;
    }
    CHECK(m <= TOL, "dd varlen %s gate %s h0 %d = each document alone (o %.1e ht %.1e dq %.1e dk %.1e dv %.1e dg %.1e dh0 %.1e)",
          fn, gn[gk], with_h0, e[0], e[1], e[2], e[3], e[4], e[5], e[6]);
    /* the backward from the forward's saved states */
    float *dq2 = zeros((size_t)TT * H * K), *dk2 = zeros((size_t)TT * H * K), *dv2 = zeros((size_t)TT * H * V);
    float *dg2 = g ? zeros(gk == LINA_GATE_HEAD ? H : (size_t)TT * gf) : NULL, *dh02 = zeros(NDOC * H * KV);
    lina_dd_grad_in gs = {dO, dht, st};
    lina_dd_grad_out gs_out = {dq2, dk2, dv2, dg2, dh02};
    rc = lina_dd_bwd_varlen(&d, CU, NCU, &in, &gs, &gs_out, form, ws);
    double es = rc ? 1.0 : err(dq2, dq, (size_t)TT * H * K) + err(dk2, dk, (size_t)TT * H * K) +
                             err(dv2, dv, (size_t)TT * H * V) + err(dh02, dh0, NDOC * H * KV) +
                             (g ? err(dg2, dg, gk == LINA_GATE_HEAD ? H : (size_t)TT * gf) : 0.0);
    CHECK(es <= TOL, "dd varlen %s gate %s h0 %d: backward from the saved states (%.1e)", fn, gn[gk], with_h0, es);
    float *all[] = {q, k, v, g, h0, dO, dht, o, ht, st, dq, dk, dv, dg, dh0, eo, eht, edq, edk, edv, edg, edh0,
                    dq2, dk2, dv2, dg2, dh02};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]);
    }
}

/* ------------------------------------------------------------ delta rule */

typedef struct dcase {
    const char *name;
    int n, gated, kda;
} dcase;

static void l2rows(float *x, size_t rows)
{
    for (size_t r = 0; r < rows; r++) {
        double s = 0;
        for (int i = 0; i < K; i++) {
            s += (double)x[r * K + i] * x[r * K + i];
        }
        for (int i = 0; i < K; i++) {
            x[r * K + i] = (float)(x[r * K + i] / sqrt(s));
        }
    }
}

static void test_delta(const dcase *dc, int with_h0, lina_form form, lina_ws *ws)
{
    const char *fn = form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    const int n = dc->n;
    const size_t KV = (size_t)K * V, R = (size_t)TT * n;
    float *q = rnd((size_t)TT * H * K, -1, 1), *k = rnd(R * H * K, -1, 1), *v = rnd(R * H * V, -1, 1);
    l2rows(k, R * H);
    float *beta = rnd(R * H, 0.1, 0.9), *g = dc->gated ? rnd((size_t)TT * H, -0.4, -0.01) : NULL;
    float *gkk = dc->kda ? rnd((size_t)TT * H * K, -0.4, -0.01) : NULL;
    float *h0 = with_h0 ? rnd(NDOC * H * KV, -0.5, 0.5) : NULL;
    float *dO = rnd((size_t)TT * H * V, -1, 1), *dht = rnd(NDOC * H * KV, -1, 1);
    lina_mix_dims d = {1, TT, H, K, V, C, 0};
    float *o = zeros((size_t)TT * H * V), *ht = zeros(NDOC * H * KV);
    float *cache = form == LINA_FORM_CHUNK ? zeros(lina_delta_cache_floats_varlen(&d, n, CU, NCU)) : NULL;
    float *dq = zeros((size_t)TT * H * K), *dk = zeros(R * H * K), *dv = zeros(R * H * V), *db = zeros(R * H);
    float *dg = g ? zeros((size_t)TT * H) : NULL, *dgk = gkk ? zeros((size_t)TT * H * K) : NULL;
    float *dh0 = zeros(NDOC * H * KV);
    lina_delta_in in = {q, k, v, beta, g, h0, n, gkk};
    lina_delta_out out = {.o = o, .ht = ht, .cache = NULL};
    int rc = lina_delta_fwd_varlen(&d, CU, NCU, &in, &out, form, ws);
    lina_delta_grad_in gin = {dO, dht, NULL};
    lina_delta_grad_out gout = {dq, dk, dv, db, dg, dh0, dgk};
    rc = rc ? rc : lina_delta_bwd_varlen(&d, CU, NCU, &in, &gin, &gout, form, ws);
    CHECK(rc == 0, "delta varlen %s %s h0 %d: runs (%s)", fn, dc->name, with_h0, rc ? lina_last_error() : "");
    float *eo = zeros((size_t)TT * H * V), *eht = zeros(NDOC * H * KV), *edq = zeros((size_t)TT * H * K);
    float *edk = zeros(R * H * K), *edv = zeros(R * H * V), *edb = zeros(R * H);
    float *edg = g ? zeros((size_t)TT * H) : NULL, *edgk = gkk ? zeros((size_t)TT * H * K) : NULL;
    float *edh0 = zeros(NDOC * H * KV);
    for (int j = 0; j < NDOC; j++) {
        int64_t a = CU[j], L = CU[j + 1] - a;
        lina_mix_dims dj = {1, (int)L, H, K, V, C, 0};
        float *qj = slice(q, a, L, (size_t)H * K), *kj = slice(k, a * n, L * n, (size_t)H * K);
        float *vj = slice(v, a * n, L * n, (size_t)H * V), *bj = slice(beta, a * n, L * n, H);
        float *gj = g ? slice(g, a, L, H) : NULL, *gkj = gkk ? slice(gkk, a, L, (size_t)H * K) : NULL;
        float *dOj = slice(dO, a, L, (size_t)H * V), *oj = zeros((size_t)L * H * V);
        float *dqj = zeros((size_t)L * H * K), *dkj = zeros((size_t)L * n * H * K), *dvj = zeros((size_t)L * n * H * V);
        float *dbj = zeros((size_t)L * n * H), *dgj = g ? zeros((size_t)L * H) : NULL;
        float *dgkj = gkk ? zeros((size_t)L * H * K) : NULL;
        lina_delta_in ij = {qj, kj, vj, bj, gj, h0 ? h0 + (size_t)j * H * KV : NULL, n, gkj};
        lina_delta_out oo = {.o = oj, .ht = eht + (size_t)j * H * KV, .cache = NULL};
        lina_delta_grad_in gij = {dOj, dht + (size_t)j * H * KV, NULL};
        lina_delta_grad_out goj = {dqj, dkj, dvj, dbj, dgj, edh0 + (size_t)j * H * KV, dgkj};
        if (lina_delta_fwd(&dj, &ij, &oo, form, ws) || lina_delta_bwd(&dj, &ij, &gij, &goj, form, ws)) {
            CHECK(0, "delta alone: %s", lina_last_error());
        }
        put(eo, oj, a, L, (size_t)H * V);
        put(edq, dqj, a, L, (size_t)H * K);
        put(edk, dkj, a * n, L * n, (size_t)H * K);
        put(edv, dvj, a * n, L * n, (size_t)H * V);
        put(edb, dbj, a * n, L * n, H);
        if (g) {
            put(edg, dgj, a, L, H);
        }
        if (gkk) {
            put(edgk, dgkj, a, L, (size_t)H * K);
        }
        float *f[] = {qj, kj, vj, bj, gj, gkj, dOj, oj, dqj, dkj, dvj, dbj, dgj, dgkj};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            free(f[i]);
        }
    }
    double e[9] = {err(o, eo, (size_t)TT * H * V), err(ht, eht, NDOC * H * KV), err(dq, edq, (size_t)TT * H * K),
                   err(dk, edk, R * H * K), err(dv, edv, R * H * V), err(db, edb, R * H),
                   g ? err(dg, edg, (size_t)TT * H) : 0.0, gkk ? err(dgk, edgk, (size_t)TT * H * K) : 0.0,
                   err(dh0, edh0, NDOC * H * KV)};
    double m = 0;
    for (int i = 0; i < 9; i++) {
        m = e[i] > m || e[i] != e[i] ? e[i] : m;
    }
    CHECK(m <= TOL,
          "delta varlen %s %s h0 %d = each document alone (o %.1e ht %.1e dq %.1e dk %.1e dv %.1e dbeta %.1e "
          "dg %.1e dgk %.1e dh0 %.1e)",
          fn, dc->name, with_h0, e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8]);
    if (cache) { /* the backward from the forward's cache */
        lina_delta_out oc = {.o = o, .ht = ht, .cache = cache};
        float *dq2 = zeros((size_t)TT * H * K), *dk2 = zeros(R * H * K), *dv2 = zeros(R * H * V), *db2 = zeros(R * H);
        float *dg2 = g ? zeros((size_t)TT * H) : NULL, *dgk2 = gkk ? zeros((size_t)TT * H * K) : NULL;
        float *dh02 = zeros(NDOC * H * KV);
        lina_delta_grad_in gc = {dO, dht, cache};
        lina_delta_grad_out go2 = {dq2, dk2, dv2, db2, dg2, dh02, dgk2};
        rc = lina_delta_fwd_varlen(&d, CU, NCU, &in, &oc, form, ws);
        rc = rc ? rc : lina_delta_bwd_varlen(&d, CU, NCU, &in, &gc, &go2, form, ws);
        double es = rc ? 1.0 : err(dq2, dq, (size_t)TT * H * K) + err(dk2, dk, R * H * K) + err(dv2, dv, R * H * V) +
                                 err(db2, db, R * H) + err(dh02, dh0, NDOC * H * KV) +
                                 (g ? err(dg2, dg, (size_t)TT * H) : 0.0) +
                                 (gkk ? err(dgk2, dgk, (size_t)TT * H * K) : 0.0);
        CHECK(es <= TOL, "delta varlen chunk %s h0 %d: backward from the forward's cache (%.1e)", dc->name, with_h0,
              es);
        float *f[] = {dq2, dk2, dv2, db2, dg2, dgk2, dh02};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            free(f[i]);
        }
    }
    float *all[] = {q, k, v, beta, g, gkk, h0, dO, dht, o, ht, cache, dq, dk, dv, db, dg, dgk, dh0,
                    eo, eht, edq, edk, edv, edb, edg, edgk, edh0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]);
    }
}

/* ------------------------------------------------------------ bad offsets */

static void test_errors(lina_ws *ws)
{
    float *q = zeros(8 * H * K), *k = zeros(8 * H * K), *v = zeros(8 * H * V), *o = zeros(8 * H * V);
    float *beta = zeros(8 * H);
    lina_mix_dims d = {1, 8, H, K, V, C, 0};
    lina_dd_in in = {q, k, v, LINA_GATE_NONE, NULL, NULL};
    lina_dd_out out = {.o = o, .ht = NULL, .states = NULL};
    lina_delta_in din = {q, k, v, beta, NULL, NULL, 1, NULL};
    lina_delta_out dout = {.o = o, .ht = NULL, .cache = NULL};
    const struct {
        int64_t cu[4];
        int n;
        const char *want;
    } bad[] = {
        {{1, 4, 8}, 3, "must start at 0"},
        {{0, 4, 4, 8}, 4, "strictly increasing"},
        {{0, 5, 3, 8}, 4, "strictly increasing"},
        {{0, 4, 7}, 3, "must end at T = 8"},
        {{0}, 1, "at least 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = lina_dd_fwd_varlen(&d, bad[i].cu, bad[i].n, &in, &out, LINA_FORM_CHUNK, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), bad[i].want) && strstr(lina_last_error(), "dd:"),
              "dd varlen refuses bad offsets %zu: %s", i, lina_last_error());
        rc = lina_delta_fwd_varlen(&d, bad[i].cu, bad[i].n, &din, &dout, LINA_FORM_RECURRENT, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), bad[i].want) && strstr(lina_last_error(), "delta:"),
              "delta varlen refuses bad offsets %zu: %s", i, lina_last_error());
    }
    lina_mix_dims d2 = {2, 4, H, K, V, C, 0};
    int64_t cu[2] = {0, 4};
    int rc = lina_dd_fwd_varlen(&d2, cu, 2, &in, &out, LINA_FORM_CHUNK, ws);
    CHECK(rc != 0 && strstr(lina_last_error(), "batch dim must be 1"), "dd varlen refuses B = 2: %s",
          lina_last_error());
    rc = lina_delta_fwd_varlen(&d, NULL, 2, &din, &dout, LINA_FORM_CHUNK, ws);
    CHECK(rc != 0 && strstr(lina_last_error(), "cu_seqlens is NULL"), "delta varlen refuses NULL offsets: %s",
          lina_last_error());
    free(q), free(k), free(v), free(o), free(beta);
}

int main(void)
{
    lina_set_threads(2);
    lina_ws ws;
    lina_ws_init(&ws);
    for (int f = 0; f < 2; f++) {
        lina_form form = f ? LINA_FORM_RECURRENT : LINA_FORM_CHUNK;
        for (int gk = LINA_GATE_NONE; gk <= LINA_GATE_VECTOR; gk++) {
            test_dd((lina_gate_kind)gk, gk != LINA_GATE_SCALAR, form, &ws);
        }
        test_dd(LINA_GATE_SCALAR, 1, form, &ws);
        const dcase dcs[] = {{"delta_rule", 1, 0, 0}, {"gated_delta_rule", 1, 1, 0},
                             {"delta_product n=2", 2, 1, 0}, {"kda", 1, 0, 1}};
        for (size_t i = 0; i < sizeof dcs / sizeof dcs[0]; i++) {
            test_delta(&dcs[i], i != 0, form, &ws);
        }
        test_delta(&dcs[0], 1, form, &ws);
    }
    test_errors(&ws);
    lina_ws_free(&ws);
    return th_exit();
}
