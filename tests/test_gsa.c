/* test_gsa.c -- Gated Slot Attention: a double-precision reference of the
 * recurrence written here; both forms' outputs and final states against it,
 * every gradient of both forms against central finite differences of the
 * reference, chunk = recurrent on longer sequences (ragged last chunk, K != V
 * != M, initial states), state passing across a split, and the op wrapper's
 * checks. */
#include "harness.h"
#include "lina.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 5e-4

enum { X_Q, X_K, X_V, X_S, X_G, X_HK, X_HV, X_N };
static const char *g_names[X_N] = {"q", "k", "v", "s", "g", "hk0", "hv0"};

typedef struct gcase {
    int B, T, H, K, V, M;
    double scale;
    tb x[X_N];
    tb dout, dhk, dhv;
} gcase;

static void fill(tb *t, double lo, double hi, int normal)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)(normal ? hi * th_normal() : th_uniform(lo, hi));
        t->d[i] = t->f[i];
    }
}

static void gc_init(gcase *c, int B, int T, int H, int K, int V, int M)
{
    memset(c, 0, sizeof *c);
    c->B = B;
    c->T = T;
    c->H = H;
    c->K = K;
    c->V = V;
    c->M = M;
    c->scale = 1.0 / sqrt((double)K);
    const size_t bt = (size_t)B * T * H;
    const size_t ns[X_N] = {bt * K, bt * K, bt * V, bt * M, bt * M, (size_t)B * H * K * M, (size_t)B * H * M * V};
    for (int i = 0; i < X_N; i++) {
        c->x[i] = tb_new(ns[i]);
    }
    fill(&c->x[X_Q], 0, 1, 1);
    fill(&c->x[X_K], 0, 1, 1);
    fill(&c->x[X_V], 0, 1, 1);
    fill(&c->x[X_G], -1.0, -0.02, 0); /* layer: logsigmoid(f) / 8; wider here */
    for (size_t i = 0; i < c->x[X_S].n; i++) { /* the layer's s = 1 - exp(g), jittered */
        c->x[X_S].f[i] = (float)(1.0 - exp(c->x[X_G].d[i]) + 0.3 * th_normal());
        c->x[X_S].d[i] = c->x[X_S].f[i];
    }
    fill(&c->x[X_HK], 0, 0.5, 1);
    fill(&c->x[X_HV], 0, 0.5, 1);
    c->dout = tb_new(ns[X_V]);
    c->dhk = tb_new(ns[X_HK]);
    c->dhv = tb_new(ns[X_HV]);
    fill(&c->dout, 0, 1, 1);
    fill(&c->dhk, 0, 1, 1);
    fill(&c->dhv, 0, 1, 1);
}

static void gc_free(gcase *c)
{
    for (int i = 0; i < X_N; i++) {
        tb_free(&c->x[i]);
    }
    tb_free(&c->dout);
    tb_free(&c->dhk);
    tb_free(&c->dhv);
}

/* the recurrence in double: o [B,T,H,V], hkt [B,H,K,M], hvt [B,H,M,V] */
static void ref_gsa(const gcase *c, int init, double *o, double *hkt, double *hvt)
{
    const int T = c->T, H = c->H, K = c->K, V = c->V, M = c->M;
    double *ok = calloc((size_t)M, sizeof(double));
    for (int b = 0; b < c->B; b++) {
        for (int h = 0; h < H; h++) {
            const size_t bh = (size_t)b * H + h;
            double *Hk = hkt + bh * K * M, *Hv = hvt + bh * M * V;
            for (size_t i = 0; i < (size_t)K * M; i++) {
                Hk[i] = init ? c->x[X_HK].d[bh * K * M + i] : 0.0;
            }
            for (size_t i = 0; i < (size_t)M * V; i++) {
                Hv[i] = init ? c->x[X_HV].d[bh * M * V + i] : 0.0;
            }
            for (int t = 0; t < T; t++) {
                const size_t r = ((size_t)b * T + t) * H + h;
                const double *q = c->x[X_Q].d + r * K, *k = c->x[X_K].d + r * K, *v = c->x[X_V].d + r * V;
                const double *s = c->x[X_S].d + r * M, *g = c->x[X_G].d + r * M;
                for (int m = 0; m < M; m++) {
                    const double e = exp(g[m]);
                    ok[m] = 0.0;
                    for (int i = 0; i < K; i++) {
                        Hk[i * M + m] = Hk[i * M + m] * e + k[i] * s[m];
                        ok[m] += Hk[i * M + m] * c->scale * q[i];
                    }
                    for (int j = 0; j < V; j++) {
                        Hv[m * V + j] = e * Hv[m * V + j] + s[m] * v[j];
                    }
                }
                double mx = ok[0], z = 0.0;
                for (int m = 1; m < M; m++) {
                    mx = fmax(mx, ok[m]);
                }
                for (int m = 0; m < M; m++) {
                    z += exp(ok[m] - mx);
                }
                for (int j = 0; j < V; j++) {
                    double a = 0.0;
                    for (int m = 0; m < M; m++) {
                        a += exp(ok[m] - mx) / z * Hv[m * V + j];
                    }
                    o[r * V + j] = a;
                }
            }
        }
    }
    free(ok);
}

static double gc_loss(const gcase *c, int init)
{
    double *o = calloc(c->dout.n, sizeof(double)), *hk = calloc(c->dhk.n, sizeof(double));
    double *hv = calloc(c->dhv.n, sizeof(double)), L = 0.0;
    ref_gsa(c, init, o, hk, hv);
    for (size_t i = 0; i < c->dout.n; i++) {
        L += o[i] * c->dout.d[i];
    }
    for (size_t i = 0; i < c->dhk.n; i++) {
        L += hk[i] * c->dhk.d[i];
    }
    for (size_t i = 0; i < c->dhv.n; i++) {
        L += hv[i] * c->dhv.d[i];
    }
    free(o);
    free(hk);
    free(hv);
    return L;
}

/* forward and every gradient of one form against the reference and its finite differences */
static void check_fd(int B, int T, int H, int K, int V, int M, int init, lina_form form, int chunk, lina_ws *ws)
{
    gcase c;
    gc_init(&c, B, T, H, K, V, M);
    char tag[128];
    snprintf(tag, sizeof tag, "B=%d T=%d H=%d K=%d V=%d M=%d%s C=%d", B, T, H, K, V, M, init ? " +h0" : "", chunk);
    const char *fn = form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    double *o = calloc(c.dout.n, sizeof(double)), *hk = calloc(c.dhk.n, sizeof(double));
    double *hv = calloc(c.dhv.n, sizeof(double));
    ref_gsa(&c, init, o, hk, hv);
    lina_mix_dims d = {B, T, H, K, V, chunk, 0.0f};
    lina_gsa_in in = {c.x[X_Q].f, c.x[X_K].f, c.x[X_V].f, c.x[X_S].f, c.x[X_G].f, init ? c.x[X_HK].f : NULL,
                      init ? c.x[X_HV].f : NULL};
    float *of = calloc(c.dout.n, sizeof(float)), *hkf = calloc(c.dhk.n, sizeof(float));
    float *hvf = calloc(c.dhv.n, sizeof(float));
    lina_gsa_out out = {of, hkf, hvf};
    int rc = lina_gsa_fwd(&d, M, &in, &out, form, ws);
    double eo = th_relerr_fd(of, o, c.dout.n), ek = th_relerr_fd(hkf, hk, c.dhk.n);
    double ev = th_relerr_fd(hvf, hv, c.dhv.n);
    CHECK(rc == 0 && eo < FWD_TOL && ek < FWD_TOL && ev < FWD_TOL, "gsa %s o, hkt, hvt = reference (%s): %.2e %.2e %.2e",
          fn, tag, eo, ek, ev);
    float *gf[X_N];
    for (int i = 0; i < X_N; i++) {
        gf[i] = calloc(c.x[i].n + 1, sizeof(float));
    }
    lina_gsa_grad_in gi = {c.dout.f, c.dhk.f, c.dhv.f};
    lina_gsa_grad_out go = {gf[X_Q], gf[X_K], gf[X_V], gf[X_S], gf[X_G], init ? gf[X_HK] : NULL,
                            init ? gf[X_HV] : NULL};
    rc = lina_gsa_bwd(&d, M, &in, &gi, &go, form, ws);
    double worst = 0.0;
    int wi = 0;
    for (int i = 0; i < (init ? X_N : X_HK); i++) {
        double *fd = calloc(c.x[i].n, sizeof(double));
        for (size_t j = 0; j < c.x[i].n; j++) {
            const double x0 = c.x[i].d[j], hh = 1e-6 * (1.0 + fabs(x0));
            c.x[i].d[j] = x0 + hh;
            const double lp = gc_loss(&c, init);
            c.x[i].d[j] = x0 - hh;
            const double lm = gc_loss(&c, init);
            c.x[i].d[j] = x0;
            fd[j] = (lp - lm) / (2 * hh);
        }
        const double e = th_relerr_fd(gf[i], fd, c.x[i].n);
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
        free(fd);
    }
    CHECK(rc == 0 && worst < GRAD_TOL, "gsa %s gradients = finite differences of the reference (%s): worst d%s %.2e",
          fn, tag, g_names[wi], worst);
    /* the check can fail: a planted error in one gradient is caught */
    gf[X_G][0] += 0.05f * (1.0f + fabsf(gf[X_G][0]));
    double *fd = calloc(c.x[X_G].n, sizeof(double));
    for (size_t j = 0; j < c.x[X_G].n; j++) {
        const double x0 = c.x[X_G].d[j], hh = 1e-6 * (1.0 + fabs(x0));
        c.x[X_G].d[j] = x0 + hh;
        const double lp = gc_loss(&c, init);
        c.x[X_G].d[j] = x0 - hh;
        const double lm = gc_loss(&c, init);
        c.x[X_G].d[j] = x0;
        fd[j] = (lp - lm) / (2 * hh);
    }
    CHECK(th_relerr_fd(gf[X_G], fd, c.x[X_G].n) > GRAD_TOL, "gsa %s: the gradient check flags a planted error", fn);
    free(fd);
    for (int i = 0; i < X_N; i++) {
        free(gf[i]);
    }
    free(o), free(hk), free(hv), free(of), free(hkf), free(hvf);
    gc_free(&c);
}

/* chunk = recurrent on a longer sequence: outputs, states, every gradient */
static void check_forms(int B, int T, int H, int K, int V, int M, int chunk, lina_ws *ws)
{
    gcase c;
    gc_init(&c, B, T, H, K, V, M);
    lina_mix_dims d = {B, T, H, K, V, chunk, 0.0f};
    lina_gsa_in in = {c.x[X_Q].f, c.x[X_K].f, c.x[X_V].f, c.x[X_S].f, c.x[X_G].f, c.x[X_HK].f, c.x[X_HV].f};
    float *r[2][3 + X_N];
    for (int f = 0; f < 2; f++) {
        r[f][0] = calloc(c.dout.n, sizeof(float));
        r[f][1] = calloc(c.dhk.n, sizeof(float));
        r[f][2] = calloc(c.dhv.n, sizeof(float));
        for (int i = 0; i < X_N; i++) {
            r[f][3 + i] = calloc(c.x[i].n, sizeof(float));
        }
    }
    int rc = 0;
    for (int f = 0; f < 2; f++) {
        lina_gsa_out out = {r[f][0], r[f][1], r[f][2]};
        rc |= lina_gsa_fwd(&d, M, &in, &out, (lina_form)f, ws);
        lina_gsa_grad_in gi = {c.dout.f, c.dhk.f, c.dhv.f};
        lina_gsa_grad_out go = {r[f][3], r[f][4], r[f][5], r[f][6], r[f][7], r[f][8], r[f][9]};
        rc |= lina_gsa_bwd(&d, M, &in, &gi, &go, (lina_form)f, ws);
    }
    const size_t n[3 + X_N] = {c.dout.n, c.dhk.n, c.dhv.n, c.x[0].n, c.x[1].n, c.x[2].n, c.x[3].n, c.x[4].n,
                               c.x[5].n, c.x[6].n};
    double worst = 0.0;
    for (int i = 0; i < 3 + X_N; i++) {
        double e = th_relerr(r[1][i], r[0][i], n[i]);
        worst = e > worst || e != e ? e : worst;
    }
    CHECK(rc == 0 && worst < GRAD_TOL, "gsa chunk = recurrent (B=%d T=%d H=%d K=%d V=%d M=%d C=%d): o, states and "
          "every gradient, worst %.2e", B, T, H, K, V, M, chunk, worst);
    for (int f = 0; f < 2; f++) {
        for (int i = 0; i < 3 + X_N; i++) {
            free(r[f][i]);
        }
    }
    gc_free(&c);
}

/* T1 tokens, then the rest from the returned states (in place) = one call */
static void test_split(lina_form form, lina_ws *ws)
{
    gcase c;
    const int B = 1, T = 30, T1 = 11, H = 2, K = 4, V = 5, M = 3;
    gc_init(&c, B, T, H, K, V, M);
    lina_mix_dims d = {B, T, H, K, V, 8, 0.0f};
    lina_gsa_in in = {c.x[X_Q].f, c.x[X_K].f, c.x[X_V].f, c.x[X_S].f, c.x[X_G].f, NULL, NULL};
    float *o = calloc(c.dout.n, sizeof(float)), *o2 = calloc(c.dout.n, sizeof(float));
    float *hk = calloc(c.dhk.n, sizeof(float)), *hv = calloc(c.dhv.n, sizeof(float));
    float *hk2 = calloc(c.dhk.n, sizeof(float)), *hv2 = calloc(c.dhv.n, sizeof(float));
    lina_gsa_out out = {o, hk, hv};
    int rc = lina_gsa_fwd(&d, M, &in, &out, form, ws);
    lina_mix_dims d1 = d, d2 = d;
    d1.T = T1;
    d2.T = T - T1;
    lina_gsa_out o1 = {o2, hk2, hv2};
    rc |= lina_gsa_fwd(&d1, M, &in, &o1, form, ws);
    const size_t a = (size_t)T1 * H;
    lina_gsa_in in2 = {c.x[X_Q].f + a * K, c.x[X_K].f + a * K, c.x[X_V].f + a * V, c.x[X_S].f + a * M,
                       c.x[X_G].f + a * M, hk2, hv2};
    lina_gsa_out oo2 = {o2 + a * V, hk2, hv2};
    rc |= lina_gsa_fwd(&d2, M, &in2, &oo2, form, ws);
    double e = fmax(th_relerr(o2, o, c.dout.n), fmax(th_relerr(hk2, hk, c.dhk.n), th_relerr(hv2, hv, c.dhv.n)));
    CHECK(rc == 0 && e < 1e-5, "gsa %s: %d tokens then %d from the returned states in place = one call (%.2e)",
          form == LINA_FORM_CHUNK ? "chunk" : "recurrent", T1, T - T1, e);
    free(o), free(o2), free(hk), free(hv), free(hk2), free(hv2);
    gc_free(&c);
}

/* the op wrapper: names, shapes, the log-decay domain */
static void test_op(void)
{
    const lina_op_info *op = lina_op_find("gsa");
    CHECK(op != NULL, "gsa is in the op registry");
    if (!op) {
        return;
    }
    lina_tset in = {0}, out = {0};
    const int64_t sk[4] = {1, 5, 2, 3}, sm[4] = {1, 5, 2, 4}, sv[4] = {1, 5, 2, 6}, sbad[4] = {1, 6, 2, 4};
    float *q = lina_tset_out(&in, "q", 4, sk), *k = lina_tset_out(&in, "k", 4, sk);
    float *v = lina_tset_out(&in, "v", 4, sv), *s = lina_tset_out(&in, "s", 4, sm);
    float *g = lina_tset_out(&in, "g", 4, sm);
    for (int i = 0; i < 30; i++) {
        q[i] = k[i] = 0.1f * (float)(i % 7);
    }
    for (int i = 0; i < 60; i++) {
        v[i] = 0.05f * (float)i;
    }
    for (int i = 0; i < 40; i++) {
        s[i] = 0.3f;
        g[i] = -0.2f;
    }
    lina_op_opts o = {0};
    o.form = LINA_FORM_CHUNK;
    int rc = lina_op_run(op, &in, &out, &o, NULL);
    const lina_tensor *hk = lina_tset_cfind(&out, "hkt"), *hv = lina_tset_cfind(&out, "hvt");
    CHECK(rc == 0 && lina_tset_cfind(&out, "o") && hk && hv && hk->shape[2] == 3 && hk->shape[3] == 4 &&
              hv->shape[2] == 4 && hv->shape[3] == 6,
          "gsa op: o, hkt [B,H,K,M], hvt [B,H,M,V] (%s)", rc ? lina_last_error() : "ok");
    g[7] = 0.5f;
    rc = lina_op_run(op, &in, &out, &o, NULL);
    CHECK(rc != 0 && strstr(lina_last_error(), "g"), "gsa op refuses g > 0: %s", lina_last_error());
    g[7] = -0.2f;
    lina_tset_out(&in, "s", 4, sbad);
    rc = lina_op_run(op, &in, &out, &o, NULL);
    CHECK(rc != 0, "gsa op refuses s with another T: %s", lina_last_error());
    lina_tset_free(&in);
    lina_tset_free(&out);
}

int main(void)
{
    lina_ws ws;
    lina_ws_init(&ws);
    for (int f = 0; f < 2; f++) {
        lina_set_threads(1);
        check_fd(2, 7, 2, 3, 4, 3, 1, (lina_form)f, 4, &ws);
        check_fd(1, 9, 1, 4, 2, 5, 0, (lina_form)f, 8, &ws);
        lina_set_threads(2);
        check_fd(2, 6, 2, 3, 3, 2, 1, (lina_form)f, 64, &ws);
        test_split((lina_form)f, &ws);
    }
    check_forms(2, 70, 2, 8, 6, 5, 16, &ws);
    check_forms(1, 130, 3, 16, 16, 8, 64, &ws);
    test_op();
    lina_ws_free(&ws);
    return th_exit();
}
