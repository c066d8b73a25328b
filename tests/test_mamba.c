/* test_mamba.c -- the Mamba-1 selective scan: the double reference against
 * central finite differences, both kernel forms against the reference
 * (outputs and every gradient), thread-count invariance of the gradients,
 * state passing across a split, and the op wrapper's checks. */
#include "harness.h"
#include "lina.h"
#include "ref/ref_mamba.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 5e-4

static void tb_fill(tb *t, double lo, double hi, int normal)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)(normal ? hi * th_normal() : th_uniform(lo, hi));
        t->d[i] = t->f[i];
    }
}

enum { I_U, I_DL, I_A, I_B, I_C, I_D, I_Z, I_DB, I_H0, I_N };
static const char *g_names[I_N] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"};

typedef struct mcase {
    int B, T, E, N, softplus;
    int has[I_N];
    tb x[I_N];
    tb dout, dht;
} mcase;

static size_t mc_size(const mcase *c, int i)
{
    const size_t BTE = (size_t)c->B * c->T * c->E, BTN = (size_t)c->B * c->T * c->N;
    switch (i) {
    case I_U: case I_DL: case I_Z:
        return BTE;
    case I_A:
        return (size_t)c->E * c->N;
    case I_B: case I_C:
        return BTN;
    case I_D: case I_DB:
        return (size_t)c->E;
    default:
        return (size_t)c->B * c->E * c->N;
    }
}

/* regime 0: the layer's domain; 1: strong decays (dt A down to about -20 per step) */
static void mc_init(mcase *c, int B, int T, int E, int N, int softplus, int opt, int regime)
{
    memset(c, 0, sizeof *c);
    c->B = B;
    c->T = T;
    c->E = E;
    c->N = N;
    c->softplus = softplus;
    for (int i = 0; i < I_N; i++) {
        c->has[i] = i <= I_C || opt;
        c->x[i] = tb_new(mc_size(c, i));
    }
    tb_fill(&c->x[I_U], 0, 1, 1);
    if (softplus) {
        tb_fill(&c->x[I_DL], 0, regime ? 2.0 : 1.0, 1);
    } else {
        tb_fill(&c->x[I_DL], 0.0, regime ? 2.0 : 0.3, 0);
    }
    tb_fill(&c->x[I_A], regime ? -10.0 : -1.5, -0.05, 0);
    tb_fill(&c->x[I_B], 0, 1, 1);
    tb_fill(&c->x[I_C], 0, 1, 1);
    tb_fill(&c->x[I_D], 0.5, 1.5, 0);
    tb_fill(&c->x[I_Z], 0, 1, 1);
    tb_fill(&c->x[I_DB], softplus ? -1.0 : 0.0, softplus ? 0.5 : 0.2, 0);
    tb_fill(&c->x[I_H0], 0, 1, 1);
    c->dout = tb_new(mc_size(c, I_U));
    c->dht = tb_new(mc_size(c, I_H0));
    tb_fill(&c->dout, 0, 1, 1);
    tb_fill(&c->dht, 0, 1, 1);
}

static void mc_free(mcase *c)
{
    for (int i = 0; i < I_N; i++) {
        tb_free(&c->x[i]);
    }
    tb_free(&c->dout);
    tb_free(&c->dht);
}

static ref_mamba_in mc_ref(const mcase *c)
{
    ref_mamba_in r = {c->B, c->T, c->E, c->N, c->softplus, c->x[I_U].d, c->x[I_DL].d, c->x[I_A].d,
                      c->x[I_B].d, c->x[I_C].d, NULL, NULL, NULL, NULL};
    r.D = c->has[I_D] ? c->x[I_D].d : NULL;
    r.z = c->has[I_Z] ? c->x[I_Z].d : NULL;
    r.delta_bias = c->has[I_DB] ? c->x[I_DB].d : NULL;
    r.h0 = c->has[I_H0] ? c->x[I_H0].d : NULL;
    return r;
}

static lina_mamba_in mc_in(const mcase *c)
{
    lina_mamba_in r = {c->x[I_U].f, c->x[I_DL].f, c->x[I_A].f, c->x[I_B].f, c->x[I_C].f,
                       c->has[I_D] ? c->x[I_D].f : NULL, c->has[I_Z] ? c->x[I_Z].f : NULL,
                       c->has[I_DB] ? c->x[I_DB].f : NULL, c->has[I_H0] ? c->x[I_H0].f : NULL,
                       c->softplus};
    return r;
}

static double mc_loss(const mcase *c)
{
    ref_mamba_in r = mc_ref(c);
    const size_t no = mc_size(c, I_U), nh = mc_size(c, I_H0);
    double *o = calloc(no, sizeof(double)), *ht = calloc(nh, sizeof(double)), L = 0.0;
    ref_mamba_fwd(&r, o, ht);
    for (size_t i = 0; i < no; i++) {
        L += o[i] * c->dout.d[i];
    }
    for (size_t i = 0; i < nh; i++) {
        L += ht[i] * c->dht.d[i];
    }
    free(o);
    free(ht);
    return L;
}

/* the reference's gradient of every input against central differences */
static void test_ref_fd(int softplus)
{
    mcase c;
    mc_init(&c, 2, 7, 3, 4, softplus, 1, 0);
    ref_mamba_in r = mc_ref(&c);
    double *gr[I_N];
    for (int i = 0; i < I_N; i++) {
        gr[i] = calloc(mc_size(&c, i), sizeof(double));
    }
    ref_mamba_grad g = {gr[I_U], gr[I_DL], gr[I_A], gr[I_B], gr[I_C], gr[I_D], gr[I_Z], gr[I_DB], gr[I_H0]};
    ref_mamba_bwd(&r, c.dout.d, c.dht.d, &g);
    for (int i = 0; i < I_N; i++) {
        double worst = 0.0, scale = 1.0;
        for (size_t j = 0; j < c.x[i].n; j++) {
            const double x0 = c.x[i].d[j], h = 1e-6 * (1.0 + fabs(x0));
            c.x[i].d[j] = x0 + h;
            const double lp = mc_loss(&c);
            c.x[i].d[j] = x0 - h;
            const double lm = mc_loss(&c);
            c.x[i].d[j] = x0;
            const double fd = (lp - lm) / (2 * h);
            worst = fmax(worst, fabs(fd - gr[i][j]));
            scale = fmax(scale, fabs(fd));
        }
        CHECK(worst / scale < 1e-6, "mamba reference d%s = finite differences (%s): rel err %.2e",
              g_names[i], softplus ? "softplus" : "raw dt", worst / scale);
    }
    for (int i = 0; i < I_N; i++) {
        free(gr[i]);
    }
    mc_free(&c);
}

static double relerr(const float *a, const double *b, size_t n)
{
    return th_relerr_fd(a, b, n);
}

/* run the kernel (form) against the reference: o, ht and every gradient */
static void compare(int B, int T, int E, int N, int softplus, int opt, int regime, lina_form form,
                    int chunk, lina_ws *ws)
{
    mcase c;
    mc_init(&c, B, T, E, N, softplus, opt, regime);
    const char *fn = form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    char tag[160];
    snprintf(tag, sizeof tag, "B=%d T=%d E=%d N=%d %s%s%s C=%d", B, T, E, N,
             softplus ? "softplus" : "raw dt", opt ? " +D,z,bias,h0" : "", regime ? " strong decays" : "",
             chunk);
    ref_mamba_in r = mc_ref(&c);
    const size_t no = mc_size(&c, I_U), nh = mc_size(&c, I_H0);
    double *o = calloc(no, sizeof(double)), *ht = calloc(nh, sizeof(double));
    ref_mamba_fwd(&r, o, ht);
    double *gr[I_N];
    float *gf[I_N];
    for (int i = 0; i < I_N; i++) {
        gr[i] = calloc(mc_size(&c, i), sizeof(double));
        gf[i] = calloc(mc_size(&c, i) + 1, sizeof(float));
    }
    ref_mamba_grad g = {gr[I_U], gr[I_DL], gr[I_A], gr[I_B], gr[I_C], gr[I_D], gr[I_Z], gr[I_DB], gr[I_H0]};
    ref_mamba_bwd(&r, c.dout.d, c.dht.d, &g);

    lina_mix_dims d = {B, T, E, N, 1, chunk, 0.0f};
    lina_mamba_in in = mc_in(&c);
    float *of = calloc(no, sizeof(float)), *hf = calloc(nh, sizeof(float));
    lina_mamba_out out = {of, hf};
    int rc = lina_mamba_fwd(&d, &in, &out, form, ws);
    CHECK(rc == 0, "mamba %s fwd runs (%s): %s", fn, tag, rc ? lina_last_error() : "");
    double eo = relerr(of, o, no), eh = relerr(hf, ht, nh);
    CHECK(eo < FWD_TOL && eh < FWD_TOL, "mamba %s o, ht = reference (%s): %.2e %.2e", fn, tag, eo, eh);
    lina_mamba_grad_in gi = {c.dout.f, c.dht.f};
    lina_mamba_grad_out go = {gf[I_U], gf[I_DL], gf[I_A], gf[I_B], gf[I_C],
                              opt ? gf[I_D] : NULL, opt ? gf[I_Z] : NULL, opt ? gf[I_DB] : NULL,
                              opt ? gf[I_H0] : NULL};
    rc = lina_mamba_bwd(&d, &in, &gi, &go, form, ws);
    CHECK(rc == 0, "mamba %s bwd runs (%s): %s", fn, tag, rc ? lina_last_error() : "");
    double worst = 0.0;
    int wi = 0;
    for (int i = 0; i < I_N; i++) {
        if (!c.has[i]) {
            continue;
        }
        double e = relerr(gf[i], gr[i], mc_size(&c, i));
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
    }
    CHECK(worst < GRAD_TOL, "mamba %s gradients = reference (%s): worst d%s %.2e", fn, tag, g_names[wi],
          worst);
    for (int i = 0; i < I_N; i++) {
        free(gr[i]);
        free(gf[i]);
    }
    free(o);
    free(ht);
    free(of);
    free(hf);
    mc_free(&c);
}

/* gradients bit-identical for 1 and 3 threads (fixed-order reductions) */
static void test_threads(lina_form form, lina_ws *ws)
{
    mcase c;
    mc_init(&c, 2, 45, 70, 8, 1, 1, 0);
    lina_mix_dims d = {c.B, c.T, c.E, c.N, 1, 16, 0.0f};
    lina_mamba_in in = mc_in(&c);
    lina_mamba_grad_in gi = {c.dout.f, c.dht.f};
    float *gf[2][I_N];
    const int thr[2] = {1, 3};
    const int saved = lina_get_threads();
    int ok = 1;
    for (int k = 0; k < 2; k++) {
        lina_set_threads(thr[k]);
        for (int i = 0; i < I_N; i++) {
            gf[k][i] = calloc(mc_size(&c, i), sizeof(float));
        }
        lina_mamba_grad_out go = {gf[k][I_U], gf[k][I_DL], gf[k][I_A], gf[k][I_B], gf[k][I_C],
                                  gf[k][I_D], gf[k][I_Z], gf[k][I_DB], gf[k][I_H0]};
        ok &= lina_mamba_bwd(&d, &in, &gi, &go, form, ws) == 0;
    }
    lina_set_threads(saved);
    for (int i = 0; i < I_N; i++) {
        ok &= memcmp(gf[0][i], gf[1][i], mc_size(&c, i) * sizeof(float)) == 0;
        free(gf[0][i]);
        free(gf[1][i]);
    }
    CHECK(ok, "mamba %s gradients identical on 1 and 3 threads",
          form == LINA_FORM_CHUNK ? "chunk" : "recurrent");
    mc_free(&c);
}

/* running T1 tokens, then T - T1 from the returned state (in place: ht = h0)
 * gives the same outputs and final state as one call */
static void test_split(lina_form form, lina_ws *ws)
{
    mcase c;
    const int B = 2, T = 50, T1 = 19, E = 40, N = 16;
    mc_init(&c, B, T, E, N, 1, 1, 0);
    lina_mamba_in in = mc_in(&c);
    const size_t no = mc_size(&c, I_U), nh = mc_size(&c, I_H0);
    float *o = calloc(no, sizeof(float)), *ht = calloc(nh, sizeof(float));
    lina_mix_dims d = {B, T, E, N, 1, 16, 0.0f};
    lina_mamba_out out = {o, ht};
    int ok = lina_mamba_fwd(&d, &in, &out, form, ws) == 0;
    /* the two parts need [B, T1, *] and [B, T - T1, *] copies */
    float *st = malloc(nh * sizeof(float)), *o2 = calloc(no, sizeof(float));
    memcpy(st, c.x[I_H0].f, nh * sizeof(float));
    for (int part = 0; part < 2 && ok; part++) {
        const int t0 = part ? T1 : 0, L = part ? T - T1 : T1;
        float *p[5];
        const int idx[5] = {I_U, I_DL, I_Z, I_B, I_C};
        for (int j = 0; j < 5; j++) {
            const int w = j < 3 ? E : N;
            p[j] = malloc((size_t)B * L * w * sizeof(float));
            for (int b = 0; b < B; b++) {
                memcpy(p[j] + (size_t)b * L * w, c.x[idx[j]].f + ((size_t)b * T + t0) * w,
                       (size_t)L * w * sizeof(float));
            }
        }
        lina_mamba_in pin = in;
        pin.u = p[0];
        pin.delta = p[1];
        pin.z = p[2];
        pin.Bm = p[3];
        pin.Cm = p[4];
        pin.h0 = st;
        float *po = malloc((size_t)B * L * E * sizeof(float));
        lina_mix_dims pd = {B, L, E, N, 1, 16, 0.0f};
        lina_mamba_out pout = {po, st};
        ok &= lina_mamba_fwd(&pd, &pin, &pout, form, ws) == 0;
        for (int b = 0; b < B; b++) {
            memcpy(o2 + ((size_t)b * T + t0) * E, po + (size_t)b * L * E, (size_t)L * E * sizeof(float));
        }
        free(po);
        for (int j = 0; j < 5; j++) {
            free(p[j]);
        }
    }
    double eo = 0.0, eh = 0.0;
    for (size_t i = 0; i < no; i++) {
        eo = fmax(eo, fabs(o[i] - o2[i]));
    }
    for (size_t i = 0; i < nh; i++) {
        eh = fmax(eh, fabs(ht[i] - st[i]));
    }
    CHECK(ok && eo < 1e-5 && eh < 1e-5, "mamba %s: split at %d then continue from the state in place = one call (%.1e %.1e)",
          form == LINA_FORM_CHUNK ? "chunk" : "recurrent", T1, eo, eh);
    free(o);
    free(ht);
    free(st);
    free(o2);
    mc_free(&c);
}

/* ------------------------------------------------------------- op wrapper */

static void put(lina_tset *s, const char *name, int nd, const int64_t *sh, double lo, double hi)
{
    lina_tensor t;
    lina_tensor_alloc(&t, nd, sh);
    for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
        t.data[i] = (float)th_uniform(lo, hi);
    }
    lina_tset_add(s, name, &t);
}

static int run_op(const lina_tset *in, int softplus, int backward, lina_tset *out)
{
    lina_op_opts o = {0};
    o.form = LINA_FORM_RECURRENT;
    o.backward = backward;
    o.delta_softplus = softplus;
    return lina_op_run(lina_op_find("mamba"), in, out, &o, NULL);
}

static void test_op(void)
{
    const int64_t se[3] = {1, 9, 5}, sn[3] = {1, 9, 3}, sa[2] = {5, 3}, s1[1] = {5}, sh[3] = {1, 5, 3};
    lina_tset in = {0}, out = {0};
    put(&in, "u", 3, se, -1, 1);
    put(&in, "delta", 3, se, 0, 0.2);
    put(&in, "A", 2, sa, -2, -0.1);
    put(&in, "B", 3, sn, -1, 1);
    put(&in, "C", 3, sn, -1, 1);
    put(&in, "D", 1, s1, 0, 1);
    put(&in, "z", 3, se, -1, 1);
    put(&in, "delta_bias", 1, s1, 0, 0.1);
    put(&in, "h0", 3, sh, -1, 1);
    put(&in, "do", 3, se, -1, 1);
    int rc = run_op(&in, 0, 1, &out);
    const char *want[] = {"o", "ht", "du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "dh0"};
    int all = rc == 0;
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        all &= lina_tset_find(&out, want[i]) != NULL;
    }
    CHECK(all, "mamba op --backward writes o, ht and d<X> for every input X (%s)", rc ? lina_last_error() : "");
    lina_tset_free(&out);
    /* negative dt without --delta-softplus: refused, named */
    lina_tset_find(&in, "delta")->data[7] = -0.5f;
    rc = run_op(&in, 0, 0, &out);
    CHECK(rc != 0 && strstr(lina_last_error(), "--delta-softplus"),
          "mamba op refuses delta + delta_bias < 0 without --delta-softplus: %s", lina_last_error());
    rc = run_op(&in, 1, 0, &out);
    CHECK(rc == 0, "mamba op takes a negative delta with --delta-softplus");
    lina_tset_free(&out);
    lina_tset_find(&in, "A")->data[3] = 0.25f;
    rc = run_op(&in, 1, 0, &out);
    CHECK(rc != 0 && strstr(lina_last_error(), "A.npy"), "mamba op refuses A > 0: %s", lina_last_error());
    lina_tset_find(&in, "A")->data[3] = -0.25f;
    const int64_t bad[3] = {1, 8, 3};
    put(&in, "C", 3, bad, -1, 1);
    rc = run_op(&in, 1, 0, &out);
    CHECK(rc != 0 && strstr(lina_last_error(), "C.npy"), "mamba op refuses C with another T: %s",
          lina_last_error());
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
        compare(1, 1, 1, 1, 0, 0, 0, forms[f], 0, &ws);
        compare(2, 70, 37, 16, 1, 1, 0, forms[f], 16, &ws);
        compare(2, 70, 37, 16, 0, 0, 0, forms[f], 64, &ws);
        compare(1, 130, 65, 5, 1, 1, 1, forms[f], 32, &ws);
        compare(3, 33, 8, 24, 0, 1, 1, forms[f], 8, &ws);
        test_threads(forms[f], &ws);
        test_split(forms[f], &ws);
    }
    test_op();
    lina_ws_free(&ws);
    return th_exit();
}
