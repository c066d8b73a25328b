/* test_hgrn.c -- the hgrn op (HGRN's element-wise gated recurrence, src/ops/hgrn.c):
 * the double reference's gradients against its own central finite differences;
 * both forms, forward and backward, against the double reference (T not a
 * multiple of the chunk, one chunk or many, B > 1, with and without initial
 * state and final-state cotangent, gates from -30 to 0); the blocked scan
 * equal to the recurrence; T = 0; the `lina op` entry (names, errors). */
#include "harness.h"
#include "lina.h"
#include "ref/ref_hgrn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FWD_TOL 1e-5
#define GRAD_TOL 1e-5

typedef struct hcase {
    int B, T, D, h0, dht, chunk;
} hcase;

static void fill(tb *t, double lo, double hi)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)th_uniform(lo, hi);
        t->d[i] = t->f[i];
    }
}

/* loss = sum(o * dout) + sum(ht * dht) of the double reference */
static double ref_loss(const hcase *c, const double *x, const double *g, const double *h0, const double *dout,
                       const double *dht, double *o, double *ht)
{
    ref_hgrn_fwd(c->B, c->T, c->D, x, g, h0, o, ht);
    double s = 0.0;
    for (size_t i = 0; i < (size_t)c->B * c->T * c->D; i++) {
        s += o[i] * dout[i];
    }
    for (size_t i = 0; dht && i < (size_t)c->B * c->D; i++) {
        s += ht[i] * dht[i];
    }
    return s;
}

static double maxrel(const double *a, const double *b, size_t n)
{
    double e = 0.0, m = 1e-300;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return e / m;
}

/* the reference backward against central differences of the reference forward */
static void test_ref_fd(void)
{
    hcase c = {2, 9, 3, 1, 1, 0};
    size_t n = (size_t)c.B * c.T * c.D, ns = (size_t)c.B * c.D;
    tb x = tb_new(n), g = tb_new(n), h0 = tb_new(ns), dout = tb_new(n), dht = tb_new(ns);
    fill(&x, -1, 1);
    fill(&g, -2, -0.01);
    fill(&h0, -1, 1);
    fill(&dout, -1, 1);
    fill(&dht, -1, 1);
    double *o = calloc(n, 8), *ht = calloc(ns, 8), *dx = calloc(n, 8), *dg = calloc(n, 8), *dh0 = calloc(ns, 8);
    double *fx = calloc(n, 8), *fg = calloc(n, 8), *fh = calloc(ns, 8);
    ref_hgrn_bwd(c.B, c.T, c.D, x.d, g.d, h0.d, dout.d, dht.d, dx, dg, dh0);
    const double h = 1e-6;
    double *ins[3] = {x.d, g.d, h0.d}, *fds[3] = {fx, fg, fh};
    size_t ns3[3] = {n, n, ns};
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < ns3[k]; i++) {
            double v = ins[k][i];
            ins[k][i] = v + h;
            double lp = ref_loss(&c, x.d, g.d, h0.d, dout.d, dht.d, o, ht);
            ins[k][i] = v - h;
            double lm = ref_loss(&c, x.d, g.d, h0.d, dout.d, dht.d, o, ht);
            ins[k][i] = v;
            fds[k][i] = (lp - lm) / (2 * h);
        }
    }
    double e = fmax(maxrel(dx, fx, n), fmax(maxrel(dg, fg, n), maxrel(dh0, fh, ns)));
    CHECK(e < 1e-7, "hgrn double reference: dx, dg, dh0 = central differences (err %.1e)", e);
    tb_free(&x);
    tb_free(&g);
    tb_free(&h0);
    tb_free(&dout);
    tb_free(&dht);
    free(o);
    free(ht);
    free(dx);
    free(dg);
    free(dh0);
    free(fx);
    free(fg);
    free(fh);
}

static double relerr(const float *a, const double *b, size_t n)
{
    return th_relerr_fd(a, b, n);
}

/* one case, both forms against the reference and against each other */
static void run_case(const hcase *c)
{
    size_t n = (size_t)c->B * c->T * c->D, ns = (size_t)c->B * c->D;
    tb x = tb_new(n), g = tb_new(n), h0 = tb_new(ns), dout = tb_new(n), dht = tb_new(ns);
    fill(&x, -1, 1);
    fill(&g, -3, 0);
    for (size_t i = 0; i < n; i += 7) { /* long memories and vanishing ones */
        g.f[i] = (float)(i % 2 ? -1e-4 : -30.0);
        g.d[i] = g.f[i];
    }
    fill(&h0, -2, 2);
    fill(&dout, -1, 1);
    fill(&dht, -1, 1);
    double *o = calloc(n + 1, 8), *ht = calloc(ns + 1, 8), *dx = calloc(n + 1, 8), *dg = calloc(n + 1, 8);
    double *dh0 = calloc(ns + 1, 8);
    ref_hgrn_fwd(c->B, c->T, c->D, x.d, g.d, c->h0 ? h0.d : NULL, o, ht);
    ref_hgrn_bwd(c->B, c->T, c->D, x.d, g.d, c->h0 ? h0.d : NULL, dout.d, c->dht ? dht.d : NULL, dx, dg, dh0);
    lina_mix_dims d = {c->B, c->T, c->D, 1, 1, c->chunk, 0.0f};
    float *fo[2], *fht[2], *fdx[2], *fdg[2], *fdh0[2];
    char tag[96];
    snprintf(tag, sizeof tag, "B=%d T=%d D=%d chunk %d%s%s", c->B, c->T, c->D, c->chunk, c->h0 ? " h0" : "",
             c->dht ? " dht" : "");
    for (int f = 0; f < 2; f++) {
        lina_form form = f ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT;
        fo[f] = calloc(n + 1, 4);
        fht[f] = calloc(ns + 1, 4);
        fdx[f] = calloc(n + 1, 4);
        fdg[f] = calloc(n + 1, 4);
        fdh0[f] = calloc(ns + 1, 4);
        lina_hgrn_in in = {x.f, g.f, c->h0 ? h0.f : NULL};
        lina_hgrn_out out = {fo[f], fht[f]};
        lina_hgrn_grad_in gi = {dout.f, c->dht ? dht.f : NULL};
        lina_hgrn_grad_out go = {fdx[f], fdg[f], c->h0 ? fdh0[f] : NULL};
        int rc = lina_hgrn_fwd(&d, &in, &out, form, NULL);
        rc = rc ? rc : lina_hgrn_bwd(&d, &in, &gi, &go, form, NULL);
        double ef = fmax(relerr(fo[f], o, n), relerr(fht[f], ht, ns));
        double eg = fmax(relerr(fdx[f], dx, n), relerr(fdg[f], dg, n));
        if (c->h0) {
            eg = fmax(eg, relerr(fdh0[f], dh0, ns));
        }
        CHECK(rc == 0 && ef < FWD_TOL && eg < GRAD_TOL, "hgrn %s %s vs double reference: fwd %.1e, grad %.1e",
              f ? "chunk" : "recurrent", tag, ef, eg);
    }
    double e = fmax(th_relerr(fo[1], fo[0], n), th_relerr(fht[1], fht[0], ns));
    double eg = fmax(th_relerr(fdx[1], fdx[0], n), th_relerr(fdg[1], fdg[0], n));
    CHECK(e < 1e-5 && eg < 1e-5, "hgrn %s: chunk = recurrent (fwd %.1e, grad %.1e)", tag, e, eg);
    for (int f = 0; f < 2; f++) {
        free(fo[f]);
        free(fht[f]);
        free(fdx[f]);
        free(fdg[f]);
        free(fdh0[f]);
    }
    tb_free(&x);
    tb_free(&g);
    tb_free(&h0);
    tb_free(&dout);
    tb_free(&dht);
    free(o);
    free(ht);
    free(dx);
    free(dg);
    free(dh0);
}

/* ht may be h0 (the decode step's in-place update); T = 0 passes the state through */
static void test_edges(void)
{
    float x[6] = {1, 2, 3, 4, 5, 6}, g[6] = {-0.5f, -1, 0, -0.5f, -1, 0}, h[3] = {1, 1, 1}, o[6];
    lina_mix_dims d = {1, 2, 3, 1, 1, 0, 0.0f};
    lina_hgrn_in in = {x, g, h};
    lina_hgrn_out out = {o, h};
    int rc = lina_hgrn_fwd(&d, &in, &out, LINA_FORM_RECURRENT, NULL);
    double h0 = expf(-0.5f) * 1 + 1, h1 = expf(-0.5f) * h0 + 4;
    CHECK(rc == 0 && fabs(h[0] - h1) < 1e-5 && fabs(o[0] - h0) < 1e-6 && fabs(h[2] - 10.0) < 1e-5,
          "hgrn: ht in place over h0 (%.4f vs %.4f)", h[0], h1);
    float ht[3] = {9, 9, 9}, dh0[3] = {0, 0, 0}, dht[3] = {1, 2, 3};
    lina_mix_dims d0 = {1, 0, 3, 1, 1, 0, 0.0f};
    lina_hgrn_out o0 = {o, ht};
    lina_hgrn_grad_in gi = {o, dht};
    lina_hgrn_grad_out go = {o, o, dh0};
    rc = lina_hgrn_fwd(&d0, &in, &o0, LINA_FORM_CHUNK, NULL);
    rc = rc ? rc : lina_hgrn_bwd(&d0, &in, &gi, &go, LINA_FORM_CHUNK, NULL);
    CHECK(rc == 0 && ht[1] == h[1] && dh0[2] == 3.0f, "hgrn: T = 0 passes h0 to ht and dht to dh0");
    lina_hgrn_in bad = {x, NULL, NULL};
    rc = lina_hgrn_fwd(&d, &bad, &out, LINA_FORM_CHUNK, NULL);
    CHECK(rc != 0 && strstr(lina_last_error(), "hgrn"), "hgrn: missing g is an error (%s)", lina_last_error());
}

static int add(lina_tset *s, const char *name, int nd, int64_t a, int64_t b, int64_t c, float lo, float hi)
{
    lina_tensor t;
    int64_t sh[3] = {a, b, c};
    if (lina_tensor_alloc(&t, nd, sh)) {
        return -1;
    }
    for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
        t.data[i] = (float)th_uniform(lo, hi);
    }
    return lina_tset_add(s, name, &t);
}

/* the registry entry: outputs and gradients by name, and its errors */
static void test_op(void)
{
    const lina_op_info *op = lina_op_find("hgrn");
    CHECK(op != NULL, "lina op hgrn is registered");
    if (!op) {
        return;
    }
    lina_tset in = {0}, out = {0};
    add(&in, "x", 3, 2, 11, 5, -1, 1);
    add(&in, "g", 3, 2, 11, 5, -2, 0);
    add(&in, "h0", 2, 2, 5, 0, -1, 1);
    add(&in, "do", 3, 2, 11, 5, -1, 1);
    lina_op_opts o = {LINA_FORM_CHUNK, 1, 0, 0, 0, 0, 4, 0, 0};
    int rc = lina_op_run(op, &in, &out, &o, NULL);
    const lina_tensor *dh0 = lina_tset_cfind(&out, "dh0"), *ht = lina_tset_cfind(&out, "ht");
    CHECK(rc == 0 && lina_tset_cfind(&out, "o") && ht && ht->ndim == 2 && lina_tset_cfind(&out, "dx") &&
              lina_tset_cfind(&out, "dg") && dh0 && dh0->shape[1] == 5,
          "lina op hgrn --backward: o, ht, dx, dg, dh0 (%s)", rc ? lina_last_error() : "ok");
    lina_tset_free(&out);
    lina_tensor *g = lina_tset_find(&in, "g");
    g->data[7] = 0.5f;
    rc = lina_op_run(op, &in, &out, &o, NULL);
    CHECK(rc != 0 && strstr(lina_last_error(), "g"), "lina op hgrn: a positive log gate is an error (%s)",
          lina_last_error());
    lina_tset_free(&out);
    lina_tset_free(&in);
    add(&in, "x", 3, 2, 11, 5, -1, 1);
    add(&in, "g", 3, 2, 11, 4, -2, 0);
    rc = lina_op_run(op, &in, &out, &o, NULL);
    CHECK(rc != 0, "lina op hgrn: g of another width is an error (%s)", lina_last_error());
    lina_tset_free(&out);
    lina_tset_free(&in);
}

int main(void)
{
    test_ref_fd();
    const hcase cases[] = {
        {2, 150, 70, 1, 1, 16}, /* many chunks, a ragged last one, two column blocks */
        {1, 37, 5, 0, 0, 16},   /* no initial state, no dht */
        {3, 64, 9, 1, 0, 64},   /* exactly one chunk */
        {2, 10, 130, 0, 1, 64}, /* shorter than a chunk */
        {1, 1, 3, 1, 1, 16},    /* one step */
        {1, 200, 4, 1, 1, 0},   /* default chunk */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_case(&cases[i]);
    }
    test_edges();
    test_op();
    return th_exit();
}
