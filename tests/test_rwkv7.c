/* test_rwkv7.c -- RWKV-7's DPLR delta rule: the double reference against central
 * finite differences, both forms against the reference (outputs and every
 * gradient) in RWKV-7's domain and with generic a, b, state passing across a
 * split, and the op wrapper's checks. */
#include "harness.h"
#include "lina.h"
#include "ref/ref_rwkv7.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 5e-4

enum { X_R, X_W, X_K, X_V, X_A, X_B, X_H0, X_N };
static const char *g_names[X_N] = {"r", "w", "k", "v", "a", "b", "h0"};

typedef struct rcase {
    int B, T, H, K, V;
    tb x[X_N];
    tb dout, dht;
} rcase;

static void fill(tb *t, double lo, double hi, int normal)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)(normal ? hi * th_normal() : th_uniform(lo, hi));
        t->d[i] = t->f[i];
    }
}

/* regime 0: RWKV-7's domain (w in (-0.61, 0), a = -kk, b = kk * iclr, kk unit norm);
 * 1: generic a, b of size ~1/sqrt(K) and strong decays w in [-5, 0];
 * 2: as 1 with adversarial decays per key channel: w ~ -1e-7 (none), w in [-120, -20]
 *    (the state forgets at once) or w in [-1, 0], mixed within every token */
static void rc_init(rcase *c, int B, int T, int H, int K, int V, int regime)
{
    memset(c, 0, sizeof *c);
    c->B = B;
    c->T = T;
    c->H = H;
    c->K = K;
    c->V = V;
    const size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
    const size_t ns[X_N] = {nk, nk, nk, nv, nk, nk, (size_t)B * H * K * V};
    for (int i = 0; i < X_N; i++) {
        c->x[i] = tb_new(ns[i]);
    }
    fill(&c->x[X_R], 0, 1, 1);
    fill(&c->x[X_W], regime ? -5.0 : -0.6065, regime ? 0.0 : -0.001, 0);
    if (regime == 2) {
        for (size_t j = 0; j < c->x[X_W].n; j++) {
            const int kind = (int)(th_uniform(0, 3));
            c->x[X_W].f[j] = (float)(kind == 0 ? -1e-7 * th_uniform(0, 1)
                                     : kind == 1 ? th_uniform(-120, -20) : th_uniform(-1, 0));
        }
    }
    fill(&c->x[X_K], 0, 0.5, 1);
    fill(&c->x[X_V], 0, 1, 1);
    fill(&c->x[X_A], 0, 1, 1);
    fill(&c->x[X_B], regime ? -1.0 : 0.0, 1.0, 0);
    fill(&c->x[X_H0], 0, 0.5, 1);
    const size_t rows = (size_t)B * T * H;
    for (size_t r = 0; r < rows; r++) {
        float *a = c->x[X_A].f + r * K, *b = c->x[X_B].f + r * K;
        double ss = 0.0;
        for (int i = 0; i < K; i++) {
            ss += (double)a[i] * a[i];
        }
        const double inv = regime ? 1.0 / sqrt((double)K) : 1.0 / sqrt(ss + 1e-6);
        for (int i = 0; i < K; i++) {
            const float kk = (float)(a[i] * inv);
            a[i] = regime ? kk : -kk;
            b[i] = regime ? (float)(b[i] / sqrt((double)K)) : kk * b[i];
        }
    }
    for (int i = 0; i < X_N; i++) {
        for (size_t j = 0; j < c->x[i].n; j++) {
            c->x[i].d[j] = c->x[i].f[j];
        }
    }
    c->dout = tb_new(nv);
    c->dht = tb_new(ns[X_H0]);
    fill(&c->dout, 0, 1, 1);
    fill(&c->dht, 0, 1, 1);
}

static void rc_free(rcase *c)
{
    for (int i = 0; i < X_N; i++) {
        tb_free(&c->x[i]);
    }
    tb_free(&c->dout);
    tb_free(&c->dht);
}

static double rc_loss(const rcase *c, int init)
{
    const size_t nv = c->dout.n, nh = c->dht.n;
    double *o = calloc(nv, sizeof(double)), *ht = calloc(nh, sizeof(double)), L = 0.0;
    ref_rwkv7_fwd(c->B, c->T, c->H, c->K, c->V, 1.0, c->x[X_R].d, c->x[X_W].d, c->x[X_K].d, c->x[X_V].d,
                  c->x[X_A].d, c->x[X_B].d, init ? c->x[X_H0].d : NULL, o, ht);
    for (size_t i = 0; i < nv; i++) {
        L += o[i] * c->dout.d[i];
    }
    for (size_t i = 0; i < nh; i++) {
        L += ht[i] * c->dht.d[i];
    }
    free(o);
    free(ht);
    return L;
}

static void test_ref_fd(int regime)
{
    rcase c;
    rc_init(&c, 2, 6, 2, 3, 4, regime);
    double *g[X_N];
    for (int i = 0; i < X_N; i++) {
        g[i] = calloc(c.x[i].n, sizeof(double));
    }
    ref_rwkv7_bwd(c.B, c.T, c.H, c.K, c.V, 1.0, c.x[X_R].d, c.x[X_W].d, c.x[X_K].d, c.x[X_V].d, c.x[X_A].d,
                  c.x[X_B].d, c.x[X_H0].d, c.dout.d, c.dht.d, g[X_R], g[X_W], g[X_K], g[X_V], g[X_A], g[X_B],
                  g[X_H0]);
    for (int i = 0; i < X_N; i++) {
        double worst = 0.0, scale = 1.0;
        for (size_t j = 0; j < c.x[i].n; j++) {
            const double x0 = c.x[i].d[j], hh = 1e-6 * (1.0 + fabs(x0));
            c.x[i].d[j] = x0 + hh;
            const double lp = rc_loss(&c, 1);
            c.x[i].d[j] = x0 - hh;
            const double lm = rc_loss(&c, 1);
            c.x[i].d[j] = x0;
            const double fd = (lp - lm) / (2 * hh);
            worst = fmax(worst, fabs(fd - g[i][j]));
            scale = fmax(scale, fabs(fd));
        }
        CHECK(worst / scale < 1e-6, "rwkv7 reference d%s = finite differences (%s): rel err %.2e", g_names[i],
              regime ? "generic a, b" : "rwkv7 domain", worst / scale);
    }
    for (int i = 0; i < X_N; i++) {
        free(g[i]);
    }
    rc_free(&c);
}

static void compare(int B, int T, int H, int K, int V, int regime, int init, lina_form form, int chunk,
                    lina_ws *ws)
{
    rcase c;
    rc_init(&c, B, T, H, K, V, regime);
    char tag[128];
    snprintf(tag, sizeof tag, "B=%d T=%d H=%d K=%d V=%d %s%s C=%d", B, T, H, K, V,
             regime == 2 ? "generic a, b, adversarial decays" : regime ? "generic a, b, strong decays" : "rwkv7 domain",
             init ? " +h0" : "", chunk);
    const char *fn = form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    const size_t nv = c.dout.n, nh = c.dht.n;
    double *o = calloc(nv, sizeof(double)), *ht = calloc(nh, sizeof(double));
    ref_rwkv7_fwd(B, T, H, K, V, 1.0, c.x[X_R].d, c.x[X_W].d, c.x[X_K].d, c.x[X_V].d, c.x[X_A].d, c.x[X_B].d,
                  init ? c.x[X_H0].d : NULL, o, ht);
    double *g[X_N];
    float *gf[X_N];
    for (int i = 0; i < X_N; i++) {
        g[i] = calloc(c.x[i].n, sizeof(double));
        gf[i] = calloc(c.x[i].n + 1, sizeof(float));
    }
    ref_rwkv7_bwd(B, T, H, K, V, 1.0, c.x[X_R].d, c.x[X_W].d, c.x[X_K].d, c.x[X_V].d, c.x[X_A].d, c.x[X_B].d,
                  init ? c.x[X_H0].d : NULL, c.dout.d, c.dht.d, g[X_R], g[X_W], g[X_K], g[X_V], g[X_A], g[X_B],
                  g[X_H0]);
    lina_mix_dims d = {B, T, H, K, V, chunk, 0.0f};
    lina_rwkv7_in in = {c.x[X_R].f, c.x[X_W].f, c.x[X_K].f, c.x[X_V].f, c.x[X_A].f, c.x[X_B].f,
                        init ? c.x[X_H0].f : NULL};
    float *of = calloc(nv, sizeof(float)), *hf = calloc(nh, sizeof(float));
    lina_rwkv7_out out = {of, hf};
    int rc = lina_rwkv7_fwd(&d, &in, &out, form, ws);
    double eo = th_relerr_fd(of, o, nv), eh = th_relerr_fd(hf, ht, nh);
    CHECK(rc == 0 && eo < FWD_TOL && eh < FWD_TOL, "rwkv7 %s o, ht = reference (%s): %.2e %.2e", fn, tag, eo, eh);
    lina_rwkv7_grad_in gi = {c.dout.f, c.dht.f};
    lina_rwkv7_grad_out go = {gf[X_R], gf[X_W], gf[X_K], gf[X_V], gf[X_A], gf[X_B], init ? gf[X_H0] : NULL};
    rc = lina_rwkv7_bwd(&d, &in, &gi, &go, form, ws);
    double worst = 0.0;
    int wi = 0;
    for (int i = 0; i < (init ? X_N : X_H0); i++) {
        const double e = th_relerr_fd(gf[i], g[i], c.x[i].n);
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
    }
    CHECK(rc == 0 && worst < GRAD_TOL, "rwkv7 %s gradients = reference (%s): worst d%s %.2e", fn, tag,
          g_names[wi], worst);
    for (int i = 0; i < X_N; i++) {
        free(g[i]);
        free(gf[i]);
    }
    free(o);
    free(ht);
    free(of);
    free(hf);
    rc_free(&c);
}

/* The chunk form's forward against the recurrent form's on the same float inputs, for
 * chunk sizes around the sub-block size, RWKV-7's domain and adversarial decays (regime 2:
 * w near 0 and far below it in the same chunk, so some sub-blocks factor through their
 * start and others take one exponential per pair). */
static void test_chunk_vs_recurrent(lina_ws *ws)
{
    const int Cs[5] = {0, 1, 16, 23, 100};
    for (int regime = 0; regime < 3; regime += 2) {
        rcase c;
        const int B = 1, T = 211, H = 2, K = 48, V = 40;
        rc_init(&c, B, T, H, K, V, regime);
        const size_t nv = c.dout.n, nh = c.dht.n;
        float *o1 = calloc(nv, sizeof(float)), *h1 = calloc(nh, sizeof(float));
        float *o2 = calloc(nv, sizeof(float)), *h2 = calloc(nh, sizeof(float));
        lina_rwkv7_in in = {c.x[X_R].f, c.x[X_W].f, c.x[X_K].f, c.x[X_V].f, c.x[X_A].f, c.x[X_B].f, c.x[X_H0].f};
        lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
        lina_rwkv7_out out1 = {o1, h1};
        int ok = lina_rwkv7_fwd(&d, &in, &out1, LINA_FORM_RECURRENT, ws) == 0;
        double worst = 0.0;
        for (int ci = 0; ci < 5; ci++) {
            d.chunk = Cs[ci];
            lina_rwkv7_out out2 = {o2, h2};
            ok &= lina_rwkv7_fwd(&d, &in, &out2, LINA_FORM_CHUNK, ws) == 0;
            double so = 1.0, sh = 1.0, eo = 0.0, eh = 0.0;
            for (size_t i = 0; i < nv; i++) {
                so = fmax(so, fabs(o1[i]));
                eo = fmax(eo, fabs(o1[i] - o2[i]));
                ok &= isfinite(o2[i]);
            }
            for (size_t i = 0; i < nh; i++) {
                sh = fmax(sh, fabs(h1[i]));
                eh = fmax(eh, fabs(h1[i] - h2[i]));
                ok &= isfinite(h2[i]);
            }
            worst = fmax(worst, fmax(eo / so, eh / sh));
        }
        CHECK(ok && worst < 2e-5, "rwkv7 chunk form = recurrent form, chunks 64, 1, 16, 23, 100 (%s): %.2e",
              regime ? "adversarial decays" : "rwkv7 domain", worst);
        free(o1);
        free(h1);
        free(o2);
        free(h2);
        rc_free(&c);
    }
}

/* T1 tokens, then the rest from the returned state in place (ht = h0) = one call */
static void test_split(lina_ws *ws)
{
    rcase c;
    const int B = 1, T = 40, T1 = 17, H = 2, K = 8, V = 6;
    rc_init(&c, B, T, H, K, V, 0);
    const size_t nv = c.dout.n, nh = c.dht.n;
    float *o = calloc(nv, sizeof(float)), *ht = calloc(nh, sizeof(float)), *o2 = calloc(nv, sizeof(float));
    float *st = calloc(nh, sizeof(float));
    lina_mix_dims d = {B, T, H, K, V, 16, 0.0f};
    lina_rwkv7_in in = {c.x[X_R].f, c.x[X_W].f, c.x[X_K].f, c.x[X_V].f, c.x[X_A].f, c.x[X_B].f, NULL};
    lina_rwkv7_out out = {o, ht};
    int ok = lina_rwkv7_fwd(&d, &in, &out, LINA_FORM_RECURRENT, ws) == 0;
    for (int part = 0; part < 2; part++) {
        const int t0 = part ? T1 : 0, L = part ? T - T1 : T1;
        lina_mix_dims pd = {B, L, H, K, V, 16, 0.0f};
        const size_t rk = (size_t)t0 * H * K, rv = (size_t)t0 * H * V;
        lina_rwkv7_in pin = {in.r + rk, in.w + rk, in.k + rk, in.v + rv, in.a + rk, in.b + rk, part ? st : NULL};
        lina_rwkv7_out pout = {o2 + rv, st};
        ok &= lina_rwkv7_fwd(&pd, &pin, &pout, LINA_FORM_CHUNK, ws) == 0;
    }
    double e = 0.0;
    for (size_t i = 0; i < nv; i++) {
        e = fmax(e, fabs(o[i] - o2[i]));
    }
    for (size_t i = 0; i < nh; i++) {
        e = fmax(e, fabs(ht[i] - st[i]));
    }
    CHECK(ok && e < 1e-5, "rwkv7: split at %d, continued from the state in place = one call (%.1e)", T1, e);
    free(o);
    free(ht);
    free(o2);
    free(st);
    rc_free(&c);
}

static void put(lina_tset *s, const char *name, int nd, const int64_t *sh, double lo, double hi)
{
    lina_tensor t;
    lina_tensor_alloc(&t, nd, sh);
    for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
        t.data[i] = (float)th_uniform(lo, hi);
    }
    lina_tset_add(s, name, &t);
}

static void test_op(void)
{
    const int64_t sk[4] = {1, 7, 2, 4}, sv[4] = {1, 7, 2, 3}, sh[4] = {1, 2, 4, 3};
    lina_tset in = {0}, out = {0};
    put(&in, "r", 4, sk, -1, 1);
    put(&in, "w", 4, sk, -0.6, -0.01);
    put(&in, "k", 4, sk, -1, 1);
    put(&in, "v", 4, sv, -1, 1);
    put(&in, "a", 4, sk, -0.5, 0);
    put(&in, "b", 4, sk, 0, 0.5);
    put(&in, "h0", 4, sh, -1, 1);
    put(&in, "do", 4, sv, -1, 1);
    lina_op_opts o = {0};
    o.form = LINA_FORM_CHUNK;
    o.backward = 1;
    const lina_op_info *op = lina_op_find("rwkv7");
    int rc = op ? lina_op_run(op, &in, &out, &o, NULL) : -1;
    const char *want[] = {"o", "ht", "dr", "dw", "dk", "dv", "da", "db", "dh0"};
    int all = rc == 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        all &= lina_tset_find(&out, want[i]) != NULL;
    }
    CHECK(all, "rwkv7 op --backward writes o, ht and d<X> for every input X");
    lina_tset_free(&out);
    lina_tset_find(&in, "w")->data[5] = 0.1f;
    rc = op ? lina_op_run(op, &in, &out, &o, NULL) : 0;
    CHECK(rc != 0 && strstr(lina_last_error(), "w.npy"), "rwkv7 op refuses a positive log decay: %s",
          lina_last_error());
    lina_tset_find(&in, "w")->data[5] = -0.1f;
    const int64_t bad[4] = {1, 7, 2, 5};
    put(&in, "b", 4, bad, 0, 0.5);
    rc = op ? lina_op_run(op, &in, &out, &o, NULL) : 0;
    CHECK(rc != 0 && strstr(lina_last_error(), "b.npy"), "rwkv7 op refuses b with another K: %s", lina_last_error());
    lina_tset_free(&out);
    lina_tset_free(&in);
}

int main(void)
{
    lina_ws ws;
    lina_ws_init(&ws);
    test_ref_fd(0);
    test_ref_fd(1);
    const lina_form forms[2] = {LINA_FORM_RECURRENT, LINA_FORM_CHUNK};
    for (int f = 0; f < 2; f++) {
        compare(1, 1, 1, 1, 1, 0, 0, forms[f], 0, &ws);
        compare(2, 70, 3, 16, 12, 0, 1, forms[f], 16, &ws);
        compare(1, 130, 2, 32, 32, 0, 0, forms[f], 64, &ws);
        compare(2, 45, 2, 8, 20, 1, 1, forms[f], 8, &ws);
        /* several value blocks with a partial last one, rows past a multiple of 16, one head
         * split over threads */
        compare(1, 40, 2, 20, 150, 1, 1, forms[f], 0, &ws);
        compare(1, 33, 1, 16, 100, 0, 1, forms[f], 0, &ws);
        compare(2, 150, 2, 32, 24, 2, 1, forms[f], 0, &ws);
        compare(1, 77, 1, 24, 16, 2, 1, forms[f], 20, &ws);
    }
    test_chunk_vs_recurrent(&ws);
    test_split(&ws);
    test_op();
    lina_ws_free(&ws);
    return th_exit();
}
