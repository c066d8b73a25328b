/* test_mixers2.c -- mlstm, softmax_attn and lion against double-precision
 * references (tests/ref/ref_mixers2.c), the references against central finite
 * differences, prefix-then-continue for mlstm, and the op wrappers' checks. */
#include "harness.h"
#include "lina.h"
#include "ref/ref_mixers2.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 5e-4
/* mLSTM cases whose inputs make o and its gradients well conditioned: the
 * kernel must then be as close as float round-off allows */
#define ML_TIGHT_TOL 1e-5
/* softmax attention with logits exact in float: near one-hot rows; logits
 * ~4e4 (there dq = s dS K sums terms 400 times larger than dq itself, so
 * float's own rounding of those terms is ~3e-5) */
#define SM_TIGHT_TOL 1e-5
#define SM_LARGE_TOL 1e-4

/* ---------------------------------------------------------------- buffers */

static void tb_sync(tb *t)
{
    for (size_t i = 0; i < t->n; i++) {
        t->d[i] = t->f[i];
    }
}

static void tb_normal(tb *t, double sd)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)(sd * th_normal());
    }
    tb_sync(t);
}

static void tb_uniform(tb *t, double lo, double hi)
{
    for (size_t i = 0; i < t->n; i++) {
        t->f[i] = (float)th_uniform(lo, hi);
    }
    tb_sync(t);
}

static double *dnew(size_t n)
{
    return calloc(n + 1, sizeof(double));
}

static float *fnew(size_t n)
{
    return calloc(n + 1, sizeof(float));
}

/* worst of several relative errors, with the name of the worst */
typedef struct worst {
    double e;
    const char *name;
} worst;

static void wupd(worst *w, const char *name, const float *a, const double *b, size_t n)
{
    double e = th_relerr_fd(a, b, n);
    if (!(e <= w->e)) {
        w->e = e;
        w->name = name;
    }
}

static double g_worst_fwd, g_worst_grad;

static void note(double *acc, double e)
{
    if (!(e <= *acc)) {
        *acc = e;
    }
}

/* max |a - b| / max(1, max |b|) for double arrays */
static double relerr_dd(const double *a, const double *b, size_t n)
{
    double m = 1.0, e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (!(d <= e)) {
            e = d;
        }
        if (fabs(b[i]) > m) {
            m = fabs(b[i]);
        }
    }
    return e / m;
}

static double ddot(const double *a, const double *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

/* ================================================= finite-difference checks */

#define FD_H 1e-6

/* mLSTM reference: loss = sum(o do) + sum(ht dht) + sum(nt dnt) + sum(mt dmt) */
typedef struct ml_fd {
    int B, T, H, K, V, init;
    double ks;
    double *q, *k, *v, *i, *f, *h0, *n0, *m0;
    double *dout, *dht, *dnt, *dmt;
} ml_fd;

static double ml_loss(const ml_fd *p)
{
    size_t nO = (size_t)p->B * p->T * p->H * p->V, BH = (size_t)p->B * p->H;
    double *o = dnew(nO), *ht = dnew(BH * p->K * p->V), *nt = dnew(BH * p->K), *mt = dnew(BH);
    ref_mlstm_fwd(p->B, p->T, p->H, p->K, p->V, p->ks, p->q, p->k, p->v, p->i, p->f,
                  p->init ? p->h0 : NULL, p->init ? p->n0 : NULL, p->init ? p->m0 : NULL, o, ht,
                  nt, mt);
    double L = ddot(o, p->dout, nO) + ddot(ht, p->dht, BH * p->K * p->V) +
               ddot(nt, p->dnt, BH * p->K) + ddot(mt, p->dmt, BH);
    free(o);
    free(ht);
    free(nt);
    free(mt);
    return L;
}

/* central differences of ml_loss in every entry of x[n]; returns rel. error vs g */
static double ml_fd_check(ml_fd *p, double *x, size_t n, const double *g, double hstep)
{
    double *fd = dnew(n);
    for (size_t j = 0; j < n; j++) {
        double x0 = x[j];
        x[j] = x0 + hstep;
        double Lp = ml_loss(p);
        x[j] = x0 - hstep;
        double Lm = ml_loss(p);
        x[j] = x0;
        fd[j] = (Lp - Lm) / (2 * hstep);
    }
    double e = relerr_dd(g, fd, n);
    free(fd);
    return e;
}

/* qscale: size of q (tiny q makes the 1e-6 term and exp(-m) decide den) */
/* m0fix: when non-zero, every m0 is m0fix (a large initial stabiliser) */
static void fd_mlstm(int init, double ilo, double ihi, double qscale, double m0fix, const char *tag)
{
    ml_fd p;
    memset(&p, 0, sizeof p);
    p.B = 1;
    p.T = 7;
    p.H = 2;
    p.K = 3;
    p.V = 2;
    p.init = init;
    p.ks = 1.0 / sqrt(3.0);
    const int B = p.B, T = p.T, H = p.H, K = p.K, V = p.V;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    size_t BH = (size_t)B * H;
    p.q = dnew(nk);
    p.k = dnew(nk);
    p.v = dnew(nv);
    p.i = dnew(ng);
    p.f = dnew(ng);
    p.h0 = dnew(BH * K * V);
    p.n0 = dnew(BH * K);
    p.m0 = dnew(BH);
    p.dout = dnew(nv);
    p.dht = dnew(BH * K * V);
    p.dnt = dnew(BH * K);
    p.dmt = dnew(BH);
    for (size_t x = 0; x < nk; x++) {
        p.q[x] = qscale * th_normal();
        p.k[x] = th_normal();
    }
    for (size_t x = 0; x < nv; x++) {
        p.v[x] = th_normal();
        p.dout[x] = th_normal();
    }
    for (size_t x = 0; x < ng; x++) {
        p.i[x] = th_uniform(ilo, ihi);
        p.f[x] = th_uniform(-3, 4);
    }
    for (size_t x = 0; x < BH * K * V; x++) {
        p.h0[x] = 0.5 * th_normal();
        p.dht[x] = th_normal();
    }
    for (size_t x = 0; x < BH * K; x++) {
        p.n0[x] = 0.5 * th_normal();
        p.dnt[x] = th_normal();
    }
    for (size_t x = 0; x < BH; x++) {
        p.m0[x] = qscale < 1 ? th_uniform(-20, 20) : th_normal();
        if (m0fix != 0.0) {
            p.m0[x] = m0fix;
        }
        p.dmt[x] = th_normal();
    }
    double *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *di = dnew(ng), *df = dnew(ng);
    double *dh0 = dnew(BH * K * V), *dn0 = dnew(BH * K), *dm0 = dnew(BH);
    ref_mlstm_bwd(B, T, H, K, V, p.ks, p.q, p.k, p.v, p.i, p.f, init ? p.h0 : NULL,
                  init ? p.n0 : NULL, init ? p.m0 : NULL, p.dout, p.dht, p.dnt, p.dmt, dq, dk, dv,
                  di, df, init ? dh0 : NULL, init ? dn0 : NULL, init ? dm0 : NULL);
    double e = 0.0;
    note(&e, ml_fd_check(&p, p.q, nk, dq, FD_H * qscale));
    note(&e, ml_fd_check(&p, p.k, nk, dk, FD_H));
    note(&e, ml_fd_check(&p, p.v, nv, dv, FD_H));
    note(&e, ml_fd_check(&p, p.i, ng, di, FD_H));
    note(&e, ml_fd_check(&p, p.f, ng, df, FD_H));
    if (init) {
        note(&e, ml_fd_check(&p, p.h0, BH * K * V, dh0, FD_H));
        note(&e, ml_fd_check(&p, p.n0, BH * K, dn0, FD_H));
        note(&e, ml_fd_check(&p, p.m0, BH, dm0, FD_H));
    }
    CHECK(e < 1e-6, "ref mlstm gradients = finite differences (%s, init=%d): rel err %.2e", tag,
          init, e);
    free(p.q);
    free(p.k);
    free(p.v);
    free(p.i);
    free(p.f);
    free(p.h0);
    free(p.n0);
    free(p.m0);
    free(p.dout);
    free(p.dht);
    free(p.dnt);
    free(p.dmt);
    free(dq);
    free(dk);
    free(dv);
    free(di);
    free(df);
    free(dh0);
    free(dn0);
    free(dm0);
}

/* softmax / lion / forgetting-attention references: loss = sum(o do) */
typedef struct qf_fd {
    int which; /* 0 softmax, 1 lion, 2 forgetting attention */
    int B, T, H, K, V, window, non_causal, normalize;
    double s;
    double *q, *k, *v, *g, *dout;
} qf_fd;

static double qf_loss(const qf_fd *p)
{
    size_t nO = (size_t)p->B * p->T * p->H * p->V;
    double *o = dnew(nO);
    if (p->which != 1) {
        ref_fox_fwd(p->B, p->T, p->H, p->K, p->V, p->s, p->window, p->non_causal, p->q, p->k, p->v,
                    p->which == 2 ? p->g : NULL, o);
    } else {
        ref_lion_fwd(p->B, p->T, p->H, p->K, p->V, p->s, p->normalize, p->q, p->k, p->v, p->g, o);
    }
    double L = ddot(o, p->dout, nO);
    free(o);
    return L;
}

static double qf_fd_check(qf_fd *p, double *x, size_t n, const double *g)
{
    double *fd = dnew(n);
    for (size_t j = 0; j < n; j++) {
        double x0 = x[j];
        x[j] = x0 + FD_H;
        double Lp = qf_loss(p);
        x[j] = x0 - FD_H;
        double Lm = qf_loss(p);
        x[j] = x0;
        fd[j] = (Lp - Lm) / (2 * FD_H);
    }
    double e = relerr_dd(g, fd, n);
    free(fd);
    return e;
}

static void fd_quadratic(int which, int window, int non_causal, int normalize, double glo)
{
    qf_fd p = {which, 2, 9, 2, 3, 4, window, non_causal, normalize, 1.0 / sqrt(3.0),
               NULL, NULL, NULL, NULL, NULL};
    size_t nk = (size_t)p.B * p.T * p.H * p.K, nv = (size_t)p.B * p.T * p.H * p.V;
    size_t ng = (size_t)p.B * p.T * p.H;
    p.q = dnew(nk);
    p.k = dnew(nk);
    p.v = dnew(nv);
    p.g = dnew(ng);
    p.dout = dnew(nv);
    for (size_t x = 0; x < nk; x++) {
        p.q[x] = normalize ? th_uniform(0.1, 1) : th_normal();
        p.k[x] = normalize ? th_uniform(0.1, 1) : th_normal();
    }
    for (size_t x = 0; x < nv; x++) {
        p.v[x] = th_normal();
        p.dout[x] = th_normal();
    }
    for (size_t x = 0; x < ng; x++) {
        p.g[x] = th_uniform(glo, 0);
    }
    double *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *dg = dnew(ng);
    if (which != 1) {
        ref_fox_bwd(p.B, p.T, p.H, p.K, p.V, p.s, window, non_causal, p.q, p.k, p.v, which == 2 ? p.g : NULL,
                    p.dout, dq, dk, dv, dg);
    } else {
        ref_lion_bwd(p.B, p.T, p.H, p.K, p.V, p.s, normalize, p.q, p.k, p.v, p.g, p.dout, dq, dk,
                     dv, dg);
    }
    double e = 0.0;
    note(&e, qf_fd_check(&p, p.q, nk, dq));
    note(&e, qf_fd_check(&p, p.k, nk, dk));
    note(&e, qf_fd_check(&p, p.v, nv, dv));
    if (which != 0) {
        note(&e, qf_fd_check(&p, p.g, ng, dg));
    }
    if (which == 2) {
        CHECK(e < 1e-6, "ref forgetting attention gradients (incl. dg) = finite differences (window=%d, g in "
              "[%g,0]): rel err %.2e", window, glo, e);
    } else if (which == 0) {
        CHECK(e < 1e-6, "ref softmax gradients = finite differences (window=%d non_causal=%d): rel err %.2e",
              window, non_causal, e);
    } else {
        CHECK(e < 1e-6, "ref lion gradients = finite differences (normalize=%d, g in [%g,0]): rel err %.2e",
              normalize, glo, e);
    }
    free(p.q);
    free(p.k);
    free(p.v);
    free(p.g);
    free(p.dout);
    free(dq);
    free(dk);
    free(dv);
    free(dg);
}

/* ================================================================= mLSTM */

enum { ML_NORMAL = 0, ML_LARGE = 1, ML_EPS = 2, ML_BIG_M0 = 3, ML_SHUT = 4 };
static const char *ml_regime[] = {"normal-gates", "large-gates", "eps-dominated", "large-m0",
                                  "shut-forget"};

typedef struct ml_case {
    int B, T, H, K, V;
    tb q, k, v, i, f, h0, n0, m0, dO, dht, dnt, dmt;
} ml_case;

/* Inputs. ML_NORMAL: normal q, k, v, moderate gates. ML_LARGE: input gates
 * in [-30, 30], m0 in [-20, 20]; k > 0 and each query row of one sign so that
 * q.n stays away from 0 (den is decided by the stabiliser, not round-off).
 * ML_EPS: as ML_LARGE with |q| ~ 3e-7, so |q.n| is of the order of the 1e-6
 * term and often below exp(-m): both the eps term and the exp(-m) branch
 * change o at O(1), and the gradient through m of the stabiliser matters.
 * ML_BIG_M0: as ML_LARGE with moderate gates (i in [-3, 3], f in [2, 6], so
 * m stays above every i over 130 steps from m0 = 20) and a small
 * positive n0 (|q.n| ~ 1e-3, so o ~ 1e3): the caller sets m0 >= 20, the
 * initial state outweighs every token by exp(m0 - i), and dm0, df are tiny
 * differences of O(|o|) sensitivities.
 * ML_SHUT: normal q, k, v with the forget gate nearly shut (f in [-20, -10])
 * and input gates up to the layer's soft cap (i in [10, 15]): every step
 * resets the stabiliser, the state is almost k v^T, and o = q.k v / |q.k|
 * with q.k often a small difference. */
static void ml_case_init(ml_case *c, int B, int T, int H, int K, int V, int regime)
{
    c->B = B;
    c->T = T;
    c->H = H;
    c->K = K;
    c->V = V;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    size_t BH = (size_t)B * H;
    c->q = tb_new(nk);
    c->k = tb_new(nk);
    c->v = tb_new(nv);
    c->i = tb_new(ng);
    c->f = tb_new(ng);
    c->h0 = tb_new(BH * K * V);
    c->n0 = tb_new(BH * K);
    c->m0 = tb_new(BH);
    c->dO = tb_new(nv);
    c->dht = tb_new(BH * K * V);
    c->dnt = tb_new(BH * K);
    c->dmt = tb_new(BH);
    tb_normal(&c->v, 1.0);
    tb_normal(&c->dO, 1.0);
    tb_normal(&c->h0, 0.5);
    tb_normal(&c->dht, 1.0);
    tb_normal(&c->dnt, 1.0);
    tb_normal(&c->dmt, 1.0);
    if (regime == ML_NORMAL || regime == ML_SHUT) {
        tb_normal(&c->q, 1.0);
        tb_normal(&c->k, 1.0);
        tb_normal(&c->i, 1.5);
        tb_uniform(&c->f, -1.0, 5.0);
        tb_normal(&c->n0, 0.5);
        tb_normal(&c->m0, 1.0);
        if (regime == ML_SHUT) {
            tb_uniform(&c->i, 10.0, 15.0);
            tb_uniform(&c->f, -20.0, -10.0);
        }
    } else {
        for (size_t r = 0; r < ng; r++) {
            float sg = th_uniform(0, 1) < 0.5 ? -1.0f : 1.0f;
            for (int x = 0; x < K; x++) {
                c->q.f[r * K + x] = sg * (float)((0.1 + fabs(th_normal())) *
                                                 (regime == ML_EPS ? 3e-7 : 1.0));
                c->k.f[r * K + x] = (float)(0.1 + fabs(th_normal()));
            }
        }
        tb_sync(&c->q);
        tb_sync(&c->k);
        if (regime == ML_BIG_M0) {
            tb_uniform(&c->i, -3.0, 3.0);
            tb_uniform(&c->f, 2.0, 6.0);
            tb_uniform(&c->n0, 0.05e-3, 1e-3);
        } else {
            tb_uniform(&c->i, -30.0, 30.0);
            tb_uniform(&c->f, -4.0, 8.0);
            tb_uniform(&c->n0, 0.05, 1.0);
        }
        tb_uniform(&c->m0, -20.0, 20.0);
    }
}

static void ml_case_free(ml_case *c)
{
    tb *all[] = {&c->q, &c->k, &c->v, &c->i, &c->f, &c->h0, &c->n0, &c->m0,
                 &c->dO, &c->dht, &c->dnt, &c->dmt};
    for (size_t x = 0; x < sizeof all / sizeof all[0]; x++) {
        tb_free(all[x]);
    }
}

static const char *form_name(lina_form f)
{
    return f == LINA_FORM_CHUNK ? "chunk" : "recurrent";
}

/* one forward + backward of the float kernel vs the reference */
static void ml_compare_tol(ml_case *c, lina_form form, int init, int cot, const char *tag,
                           double gtol, lina_ws *ws)
{
    const int B = c->B, T = c->T, H = c->H, K = c->K, V = c->V;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    size_t BH = (size_t)B * H;
    double ks = 1.0 / sqrt((double)K);
    /* reference */
    double *o = dnew(nv), *ht = dnew(BH * K * V), *nt = dnew(BH * K), *mt = dnew(BH);
    ref_mlstm_fwd(B, T, H, K, V, ks, c->q.d, c->k.d, c->v.d, c->i.d, c->f.d,
                  init ? c->h0.d : NULL, init ? c->n0.d : NULL, init ? c->m0.d : NULL, o, ht, nt,
                  mt);
    double *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *di = dnew(ng), *df = dnew(ng);
    double *dh0 = dnew(BH * K * V), *dn0 = dnew(BH * K), *dm0 = dnew(BH);
    ref_mlstm_bwd(B, T, H, K, V, ks, c->q.d, c->k.d, c->v.d, c->i.d, c->f.d,
                  init ? c->h0.d : NULL, init ? c->n0.d : NULL, init ? c->m0.d : NULL, c->dO.d,
                  cot ? c->dht.d : NULL, cot ? c->dnt.d : NULL, cot ? c->dmt.d : NULL, dq, dk, dv,
                  di, df, dh0, dn0, dm0);
    /* kernel */
    lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
    lina_mlstm_in in = {c->q.f, c->k.f, c->v.f, c->i.f, c->f.f, init ? c->h0.f : NULL,
                        init ? c->n0.f : NULL, init ? c->m0.f : NULL};
    float *fo = fnew(nv), *fht = fnew(BH * K * V), *fnt = fnew(BH * K), *fmt = fnew(BH);
    lina_mlstm_out out = {fo, fht, fnt, fmt};
    int rc = lina_mlstm_fwd(&d, &in, &out, form, ws);
    worst wf = {0.0, "-"};
    wupd(&wf, "o", fo, o, nv);
    wupd(&wf, "ht", fht, ht, BH * K * V);
    wupd(&wf, "nt", fnt, nt, BH * K);
    wupd(&wf, "mt", fmt, mt, BH);
    note(&g_worst_fwd, wf.e);
    CHECK(rc == 0 && wf.e <= FWD_TOL, "mlstm %s fwd %s init=%d T=%d: worst %s %.2e", form_name(form),
          tag, init, T, wf.name, wf.e);
    float *gq = fnew(nk), *gk = fnew(nk), *gv = fnew(nv), *gi = fnew(ng), *gf = fnew(ng);
    float *gh0 = fnew(BH * K * V), *gn0 = fnew(BH * K), *gm0 = fnew(BH);
    lina_mlstm_grad_in gin = {c->dO.f, cot ? c->dht.f : NULL, cot ? c->dnt.f : NULL,
                              cot ? c->dmt.f : NULL};
    lina_mlstm_grad_out gout = {gq, gk, gv, gi, gf, gh0, gn0, gm0};
    rc = lina_mlstm_bwd(&d, &in, &gin, &gout, form, ws);
    worst wg = {0.0, "-"};
    wupd(&wg, "dq", gq, dq, nk);
    wupd(&wg, "dk", gk, dk, nk);
    wupd(&wg, "dv", gv, dv, nv);
    wupd(&wg, "di", gi, di, ng);
    wupd(&wg, "df", gf, df, ng);
    if (init) {
        wupd(&wg, "dh0", gh0, dh0, BH * K * V);
        wupd(&wg, "dn0", gn0, dn0, BH * K);
        wupd(&wg, "dm0", gm0, dm0, BH);
    }
    note(&g_worst_grad, wg.e);
    CHECK(rc == 0 && wg.e <= gtol, "mlstm %s bwd %s init=%d cot=%d T=%d: worst %s %.2e (tol %.0e)",
          form_name(form), tag, init, cot, T, wg.name, wg.e, gtol);
    free(o);
    free(ht);
    free(nt);
    free(mt);
    free(dq);
    free(dk);
    free(dv);
    free(di);
    free(df);
    free(dh0);
    free(dn0);
    free(dm0);
    free(fo);
    free(fht);
    free(fnt);
    free(fmt);
    free(gq);
    free(gk);
    free(gv);
    free(gi);
    free(gf);
    free(gh0);
    free(gn0);
    free(gm0);
}

static void ml_compare(ml_case *c, lina_form form, int init, int cot, const char *tag, lina_ws *ws)
{
    ml_compare_tol(c, form, init, cot, tag, GRAD_TOL, ws);
}

static void test_mlstm_forms(lina_ws *ws)
{
    const int Ts[] = {1, 63, 64, 65, 200};
    const int regimes[] = {ML_NORMAL, ML_LARGE, ML_EPS, ML_SHUT};
    for (size_t ri = 0; ri < sizeof regimes / sizeof regimes[0]; ri++) {
        const int regime = regimes[ri];
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            ml_case c;
            ml_case_init(&c, 2, Ts[ti], 3, 32, 48, regime);
            const char *tag = ml_regime[regime];
            for (int form = 0; form < 2; form++) {
                ml_compare(&c, (lina_form)form, 0, 0, tag, ws);
                ml_compare(&c, (lina_form)form, 0, 1, tag, ws);
                ml_compare(&c, (lina_form)form, 1, 1, tag, ws);
            }
            ml_case_free(&c);
        }
    }
}

/* A large initial stabiliser m0 in {20, 40, 80}: dm0 and df must not come
 * out as the difference of the large sensitivities to the scaled initial
 * state (<dh0,h0> + dn0.n0) and to the final state; the kernel then matches
 * the reference to float round-off, as dq does. */
static void test_mlstm_large_m0(lina_ws *ws)
{
    const double m0s[] = {20.0, 40.0, 80.0};
    for (size_t x = 0; x < sizeof m0s / sizeof m0s[0]; x++) {
        ml_case c;
        ml_case_init(&c, 2, 130, 3, 32, 48, ML_BIG_M0);
        for (size_t r = 0; r < c.m0.n; r++) {
            c.m0.f[r] = (float)m0s[x];
        }
        tb_sync(&c.m0);
        char tag[32];
        snprintf(tag, sizeof tag, "m0=%g", m0s[x]);
        for (int form = 0; form < 2; form++) {
            ml_compare_tol(&c, (lina_form)form, 1, 0, tag, ML_TIGHT_TOL, ws);
            ml_compare_tol(&c, (lina_form)form, 1, 1, tag, ML_TIGHT_TOL, ws);
        }
        ml_case_free(&c);
    }
}

/* A tie lf_1 + m0 == i_1 (f = 200: lf is 0 in float and -1e-87 in double,
 * so lf + 0.5 == 0.5 in both) resolves to the carry branch in every form:
 * the cotangent dmt then reaches dm0, not di_1. */
static void test_mlstm_tie(lina_ws *ws)
{
    ml_case c;
    ml_case_init(&c, 1, 5, 1, 4, 3, ML_NORMAL);
    c.f.f[0] = 200.0f;
    c.i.f[0] = 0.5f;
    c.m0.f[0] = 0.5f;
    for (int t = 1; t < 5; t++) {
        c.i.f[t] = -10.0f; /* no later reset: the tied path reaches mt, so dmt flows through it */
    }
    tb_sync(&c.f);
    tb_sync(&c.i);
    tb_sync(&c.m0);
    for (int form = 0; form < 2; form++) {
        ml_compare(&c, (lina_form)form, 1, 1, "tie", ws);
    }
    ml_case_free(&c);
}

/* prefix then continue (states handed over) equals one call */
static void test_mlstm_continue(lina_ws *ws)
{
    const int B = 2, T = 130, T1 = 50, H = 3, K = 32, V = 48;
    for (int init = 0; init < 2; init++) {
        for (int form = 0; form < 2; form++) {
            ml_case c;
            ml_case_init(&c, B, T, H, K, V, init ? ML_LARGE : ML_NORMAL);
            size_t BH = (size_t)B * H, nv = (size_t)B * T * H * V;
            lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
            lina_mlstm_in in = {c.q.f, c.k.f, c.v.f, c.i.f, c.f.f, init ? c.h0.f : NULL,
                                init ? c.n0.f : NULL, init ? c.m0.f : NULL};
            float *o = fnew(nv), *ht = fnew(BH * K * V), *nt = fnew(BH * K), *mt = fnew(BH);
            lina_mlstm_out out = {o, ht, nt, mt};
            int rc = lina_mlstm_fwd(&d, &in, &out, (lina_form)form, ws);
            /* split along T: copy the two parts into [B,T1,...] and [B,T-T1,...] */
            const int T2 = T - T1;
            float *part[2][6];
            const int Tp[2] = {T1, T2};
            const tb *src[5] = {&c.q, &c.k, &c.v, &c.i, &c.f};
            const int dim[5] = {K, K, V, 1, 1};
            for (int p = 0; p < 2; p++) {
                for (int s = 0; s < 5; s++) {
                    part[p][s] = fnew((size_t)B * Tp[p] * H * dim[s]);
                    for (int b = 0; b < B; b++) {
                        memcpy(part[p][s] + (size_t)b * Tp[p] * H * dim[s],
                               src[s]->f + ((size_t)b * T + (p ? T1 : 0)) * H * dim[s],
                               (size_t)Tp[p] * H * dim[s] * sizeof(float));
                    }
                }
                part[p][5] = fnew((size_t)B * Tp[p] * H * V);
            }
            float *h1 = fnew(BH * K * V), *n1 = fnew(BH * K), *m1 = fnew(BH);
            float *h2 = fnew(BH * K * V), *n2 = fnew(BH * K), *m2 = fnew(BH);
            lina_mix_dims d1 = {B, T1, H, K, V, 0, 0.0f}, d2 = {B, T2, H, K, V, 0, 0.0f};
            lina_mlstm_in in1 = {part[0][0], part[0][1], part[0][2], part[0][3], part[0][4],
                                 in.h0, in.n0, in.m0};
            lina_mlstm_out out1 = {part[0][5], h1, n1, m1};
            rc |= lina_mlstm_fwd(&d1, &in1, &out1, (lina_form)form, ws);
            lina_mlstm_in in2 = {part[1][0], part[1][1], part[1][2], part[1][3], part[1][4],
                                 h1, n1, m1};
            lina_mlstm_out out2 = {part[1][5], h2, n2, m2};
            rc |= lina_mlstm_fwd(&d2, &in2, &out2, (lina_form)form, ws);
            double e = 0.0, *ref = dnew(nv);
            for (size_t x = 0; x < nv; x++) {
                ref[x] = o[x];
            }
            float *cat = fnew(nv);
            for (int b = 0; b < B; b++) {
                memcpy(cat + (size_t)b * T * H * V, part[0][5] + (size_t)b * T1 * H * V,
                       (size_t)T1 * H * V * sizeof(float));
                memcpy(cat + ((size_t)b * T + T1) * H * V, part[1][5] + (size_t)b * T2 * H * V,
                       (size_t)T2 * H * V * sizeof(float));
            }
            note(&e, th_relerr_fd(cat, ref, nv));
            double *rh = dnew(BH * K * V);
            for (size_t x = 0; x < BH * K * V; x++) {
                rh[x] = ht[x];
            }
            note(&e, th_relerr_fd(h2, rh, BH * K * V));
            for (size_t x = 0; x < BH * K; x++) {
                rh[x] = nt[x];
            }
            note(&e, th_relerr_fd(n2, rh, BH * K));
            for (size_t x = 0; x < BH; x++) {
                rh[x] = mt[x];
            }
            note(&e, th_relerr_fd(m2, rh, BH));
            CHECK(rc == 0 && e <= 1e-5, "mlstm %s prefix(50)+continue(80) = one call (init=%d): %.2e",
                  form_name((lina_form)form), init, e);
            for (int p = 0; p < 2; p++) {
                for (int s = 0; s < 6; s++) {
                    free(part[p][s]);
                }
            }
            free(o);
            free(ht);
            free(nt);
            free(mt);
            free(h1);
            free(n1);
            free(m1);
            free(h2);
            free(n2);
            free(m2);
            free(ref);
            free(cat);
            free(rh);
            ml_case_free(&c);
        }
    }
}

/* ====================================================== softmax attention */

enum { SM_NORMAL = 0, SM_LARGE = 1, SM_ONEHOT = 2 };
static const char *sm_regime[] = {"", " |logits|~4e4", " near one-hot"};

/* Inputs. SM_NORMAL: normal q, k, v. The other two are integers with K = 16
 * (scale 1/4), so every logit is exact in float and the reference sees the
 * same logits as the kernel. SM_LARGE: q_0 = +-400, k_0 = 400, the other
 * channels in [-2, 2]: logits 4e4 +- a few, so lse ~ +-4e4 while the softmax
 * is spread over several keys. SM_ONEHOT: k in [-32, 32], q_i = 4 k_i: the
 * diagonal logit (~5e3) leads the others by hundreds, P is one-hot and the
 * exact dq, dk are ~0. */
static void sm_inputs(int regime, int B, int T, int H, int K, tb *q, tb *k)
{
    if (regime == SM_NORMAL) {
        tb_normal(q, 1.5);
        tb_normal(k, 1.5);
        return;
    }
    for (size_t r = 0; r < (size_t)B * T * H; r++) {
        float *qr = q->f + r * K, *kr = k->f + r * K;
        for (int x = 0; x < K; x++) {
            if (regime == SM_LARGE) {
                kr[x] = x == 0 ? 400.0f : (float)floor(th_uniform(-2.0, 3.0));
                qr[x] = x == 0 ? (th_uniform(0, 1) < 0.5 ? -400.0f : 400.0f)
                               : (float)floor(th_uniform(-2.0, 3.0));
            } else {
                kr[x] = (float)floor(th_uniform(-32.0, 33.0));
                qr[x] = 4.0f * kr[x];
            }
        }
    }
    tb_sync(q);
    tb_sync(k);
}

static void sm_compare_in(int T, int window, int non_causal, int regime, lina_ws *ws)
{
    const int B = 2, H = 3, K = regime == SM_NORMAL ? 32 : 16, V = 48;
    const double tol = regime == SM_NORMAL ? GRAD_TOL : (regime == SM_LARGE ? SM_LARGE_TOL : SM_TIGHT_TOL);
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
    tb q = tb_new(nk), k = tb_new(nk), v = tb_new(nv), dO = tb_new(nv);
    sm_inputs(regime, B, T, H, K, &q, &k);
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    double s = 1.0 / sqrt((double)K);
    double *o = dnew(nv), *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv);
    ref_softmax_fwd(B, T, H, K, V, s, window, non_causal, q.d, k.d, v.d, o);
    ref_softmax_bwd(B, T, H, K, V, s, window, non_causal, q.d, k.d, v.d, dO.d, dq, dk, dv);
    lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
    lina_softmax_in in = {q.f, k.f, v.f, window, non_causal, NULL, 0};
    float *fo = fnew(nv), *stat = fnew((size_t)B * T * H * 2);
    lina_softmax_out out = {fo, stat};
    int rc = lina_softmax_attn_fwd(&d, &in, &out, ws);
    double ef = th_relerr_fd(fo, o, nv);
    note(&g_worst_fwd, ef);
    char mode[48];
    if (non_causal) {
        snprintf(mode, sizeof mode, "non-causal");
    } else if (window) {
        snprintf(mode, sizeof mode, "window=%d", window);
    } else {
        snprintf(mode, sizeof mode, "causal");
    }
    CHECK(rc == 0 && ef <= FWD_TOL, "softmax_attn fwd %s%s T=%d: o %.2e", mode, sm_regime[regime], T,
          ef);
    float *gq = fnew(nk), *gk = fnew(nk), *gv = fnew(nv);
    lina_softmax_grad_out g = {gq, gk, gv, NULL};
    worst w = {0.0, "-"};
    /* with the forward's statistics, and recomputing them */
    for (int re = 0; re < 2; re++) {
        lina_softmax_grad_in gi = {dO.f, re ? NULL : stat};
        memset(gq, 0xff, nk * sizeof(float)); /* NaN: every entry must be written */
        rc |= lina_softmax_attn_bwd(&d, &in, &gi, &g, ws);
        wupd(&w, "dq", gq, dq, nk);
        wupd(&w, "dk", gk, dk, nk);
        wupd(&w, "dv", gv, dv, nv);
    }
    note(&g_worst_grad, w.e);
    CHECK(rc == 0 && w.e <= tol, "softmax_attn bwd %s%s T=%d: worst %s %.2e (tol %.0e)", mode,
          sm_regime[regime], T, w.name, w.e, tol);
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&dO);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(fo);
    free(stat);
    free(gq);
    free(gk);
    free(gv);
}

static void sm_compare(int T, int window, int non_causal, lina_ws *ws)
{
    sm_compare_in(T, window, non_causal, SM_NORMAL, ws);
}

/* forgetting attention: the kernel (both forms of the op run the same code)
 * against the double reference, with and without the forward's statistics;
 * the op with grouped query heads; bad inputs */
static void fox_compare(int T, int window, double glo, lina_ws *ws)
{
    const int B = 2, H = 3, K = 16, V = 24;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    tb q = tb_new(nk), k = tb_new(nk), v = tb_new(nv), dO = tb_new(nv), g = tb_new(ng);
    tb_normal(&q, 1.0);
    tb_normal(&k, 1.0);
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    tb_uniform(&g, glo, 0.0);
    const double s = 1.0 / sqrt((double)K);
    double *o = dnew(nv), *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *dg = dnew(ng);
    ref_fox_fwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, g.d, o);
    ref_fox_bwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, g.d, dO.d, dq, dk, dv, dg);
    lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
    lina_softmax_in in = {q.f, k.f, v.f, window, 0, g.f, 0};
    float *fo = fnew(nv), *stat = fnew(ng * 2), *gq = fnew(nk), *gk = fnew(nk), *gv = fnew(nv), *gg = fnew(ng);
    lina_softmax_out out = {fo, stat};
    int rc = lina_softmax_attn_fwd(&d, &in, &out, ws);
    double ef = th_relerr_fd(fo, o, nv);
    note(&g_worst_fwd, ef);
    lina_softmax_grad_out gr = {gq, gk, gv, gg};
    worst w = {0.0, "-"};
    for (int re = 0; re < 2; re++) {
        lina_softmax_grad_in gi = {dO.f, re ? NULL : stat};
        memset(gg, 0xff, ng * sizeof(float)); /* NaN: every entry must be written */
        rc |= lina_softmax_attn_bwd(&d, &in, &gi, &gr, ws);
        wupd(&w, "dq", gq, dq, nk);
        wupd(&w, "dk", gk, dk, nk);
        wupd(&w, "dv", gv, dv, nv);
        wupd(&w, "dg", gg, dg, ng);
    }
    note(&g_worst_grad, w.e);
    CHECK(rc == 0 && ef <= FWD_TOL && w.e <= GRAD_TOL,
          "forgetting attention T=%d window=%d g in [%g,0]: o %.2e, worst %s %.2e", T, window, glo, ef, w.name, w.e);
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&dO);
    tb_free(&g);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(dg);
    free(fo);
    free(stat);
    free(gq);
    free(gk);
    free(gv);
    free(gg);
}

static void tset_put(lina_tset *s, const char *name, int nd, const int64_t *shape, const float *x)
{
    lina_tensor t;
    if (lina_tensor_alloc(&t, nd, shape) != 0) {
        exit(2);
    }
    memcpy(t.data, x, (size_t)lina_tensor_numel(&t) * sizeof(float));
    lina_tset_add(s, name, &t);
}

static void fox_op(lina_ws *ws)
{
    /* 4 query heads over 2 kv heads: the reference with k, v repeated per query head */
    const int B = 2, T = 70, HQ = 4, HK = 2, K = 8, V = 12, G = HQ / HK;
    size_t nq = (size_t)B * T * HQ * K, nkr = (size_t)B * T * HK * K, nvr = (size_t)B * T * HK * V;
    size_t nvq = (size_t)B * T * HQ * V, ng = (size_t)B * T * HQ;
    tb q = tb_new(nq), k = tb_new(nkr), v = tb_new(nvr), dO = tb_new(nvq), g = tb_new(ng);
    tb_normal(&q, 1.0);
    tb_normal(&k, 1.0);
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    tb_uniform(&g, -1.0, 0.0);
    double *ke = dnew(nq), *ve = dnew(nvq), *o = dnew(nvq), *dq = dnew(nq), *dke = dnew(nq), *dve = dnew(nvq);
    double *dg = dnew(ng), *dk = dnew(nkr), *dv = dnew(nvr);
    for (size_t r = 0; r < (size_t)B * T; r++) {
        for (int h = 0; h < HQ; h++) {
            memcpy(ke + (r * HQ + h) * K, k.d + (r * HK + h / G) * K, K * sizeof(double));
            memcpy(ve + (r * HQ + h) * V, v.d + (r * HK + h / G) * V, V * sizeof(double));
        }
    }
    const double s = 1.0 / sqrt((double)K);
    ref_fox_fwd(B, T, HQ, K, V, s, 0, 0, q.d, ke, ve, g.d, o);
    ref_fox_bwd(B, T, HQ, K, V, s, 0, 0, q.d, ke, ve, g.d, dO.d, dq, dke, dve, dg);
    for (size_t r = 0; r < (size_t)B * T; r++) {
        for (int h = 0; h < HQ; h++) {
            for (int x = 0; x < K; x++) {
                dk[(r * HK + h / G) * K + x] += dke[(r * HQ + h) * K + x];
            }
            for (int x = 0; x < V; x++) {
                dv[(r * HK + h / G) * V + x] += dve[(r * HQ + h) * V + x];
            }
        }
    }
    const lina_op_info *op = lina_op_find("forgetting_attn");
    int64_t sq[4] = {B, T, HQ, K}, sk[4] = {B, T, HK, K}, sv[4] = {B, T, HK, V}, so[4] = {B, T, HQ, V};
    int64_t sg[3] = {B, T, HQ};
    for (int form = 0; form < 2 && op; form++) {
        lina_tset in = {0}, out = {0};
        tset_put(&in, "q", 4, sq, q.f);
        tset_put(&in, "k", 4, sk, k.f);
        tset_put(&in, "v", 4, sv, v.f);
        tset_put(&in, "g", 3, sg, g.f);
        tset_put(&in, "do", 4, so, dO.f);
        lina_op_opts oo = {0};
        oo.form = form ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT;
        oo.backward = 1;
        int rc = lina_op_run(op, &in, &out, &oo, ws);
        double ef = 1e30, eg = 1e30;
        if (rc == 0) {
            ef = th_relerr_fd(lina_tset_find(&out, "o")->data, o, nvq);
            eg = th_relerr_fd(lina_tset_find(&out, "dq")->data, dq, nq);
            eg = fmax(eg, th_relerr_fd(lina_tset_find(&out, "dk")->data, dk, nkr));
            eg = fmax(eg, th_relerr_fd(lina_tset_find(&out, "dv")->data, dv, nvr));
            eg = fmax(eg, th_relerr_fd(lina_tset_find(&out, "dg")->data, dg, ng));
        }
        CHECK(rc == 0 && ef <= FWD_TOL && eg <= GRAD_TOL, "lina_op_run forgetting_attn 4 q heads / 2 kv heads %s: "
              "fwd %.2e grad %.2e %s", form ? "chunk" : "recurrent", ef, eg, rc ? lina_last_error() : "");
        lina_tset_free(&in);
        lina_tset_free(&out);
    }
    CHECK(op != NULL, "forgetting_attn is registered");
    /* bad inputs: 3 query heads over 2 kv heads; a positive gate */
    for (int bad = 0; bad < 2 && op; bad++) {
        lina_tset in = {0}, out = {0};
        int64_t sq3[4] = {B, T, 3, K}, sg3[3] = {B, T, 3};
        tset_put(&in, "q", 4, bad ? sq : sq3, q.f);
        tset_put(&in, "k", 4, sk, k.f);
        tset_put(&in, "v", 4, sv, v.f);
        if (bad) {
            g.f[7] = 0.5f;
        }
        tset_put(&in, "g", 3, bad ? sg : sg3, g.f);
        lina_op_opts oo = {0};
        oo.form = LINA_FORM_CHUNK;
        int rc = lina_op_run(op, &in, &out, &oo, ws);
        const char *want = bad ? "log forget gates <= 0" : "not a multiple of the 2 heads";
        CHECK(rc != 0 && strstr(lina_last_error(), want), "forgetting_attn: %s rejected (%s)",
              bad ? "a positive gate" : "3 query heads over 2 kv heads", lina_last_error());
        lina_tset_free(&in);
        lina_tset_free(&out);
    }
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&dO);
    tb_free(&g);
    free(ke);
    free(ve);
    free(o);
    free(dq);
    free(dke);
    free(dve);
    free(dg);
    free(dk);
    free(dv);
}

static void test_fox(lina_ws *ws)
{
    const int Ts[] = {1, 63, 130, 300};
    for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++) {
        fox_compare(Ts[i], 0, -0.5, ws);
        fox_compare(Ts[i], 0, -6.0, ws); /* strong forgetting: near one-hot rows */
    }
    fox_compare(300, 129, -0.2, ws);
    fox_compare(65, 5, -1.0, ws);
    fox_compare(200, 0, -1e-3, ws);
    fox_op(ws);
}

/* q_from: the rows from q0 of a whole-sequence run with the rows before q0
 * of do zeroed (their o and dq are not written; q rows before q0 hold NaN,
 * not read); every dk, dv row written (NaN before the call); with and
 * without a forget gate */
static void sm_qfrom(int T, int q0, int window, int fox, lina_ws *ws)
{
    const int B = 2, H = 2, K = 16, V = 24;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    tb q = tb_new(nk), k = tb_new(nk), v = tb_new(nv), dO = tb_new(nv), g = tb_new(ng);
    tb_normal(&q, 1.0);
    tb_normal(&k, 1.0);
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    tb_uniform(&g, -1.0, 0.0);
    for (size_t r = 0; r < (size_t)B * T; r++) {
        if ((int)(r % T) < q0) {
            for (int x = 0; x < H * V; x++) {
                dO.f[r * H * V + x] = 0.0f;
            }
            for (int x = 0; x < H * K; x++) {
                q.f[r * H * K + x] = NAN;
                q.d[r * H * K + x] = 0.0;
            }
        }
    }
    tb_sync(&dO);
    const double s = 1.0 / sqrt((double)K);
    double *o = dnew(nv), *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *dg = dnew(ng);
    if (fox) {
        ref_fox_fwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, g.d, o);
        ref_fox_bwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, g.d, dO.d, dq, dk, dv, dg);
    } else {
        ref_softmax_fwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, o);
        ref_softmax_bwd(B, T, H, K, V, s, window, 0, q.d, k.d, v.d, dO.d, dq, dk, dv);
    }
    lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
    lina_softmax_in in = {q.f, k.f, v.f, window, 0, fox ? g.f : NULL, q0};
    float *fo = fnew(nv), *stat = fnew(ng * 2), *gq = fnew(nk), *gk = fnew(nk), *gv = fnew(nv), *gg = fnew(ng);
    for (size_t i = 0; i < nv; i++) {
        fo[i] = 7.0f; /* rows before q0 keep it */
    }
    lina_softmax_out out = {fo, stat};
    int rc = lina_softmax_attn_fwd(&d, &in, &out, ws);
    double ef = 0.0, eg = 0.0;
    int kept = 1;
    for (size_t r = 0; r < (size_t)B * T; r++) {
        const int mine = (int)(r % T) >= q0;
        for (int x = 0; x < H * V; x++) {
            if (!mine) {
                kept &= fo[r * H * V + x] == 7.0f;
                fo[r * H * V + x] = (float)o[r * H * V + x];
            }
        }
    }
    ef = th_relerr_fd(fo, o, nv);
    lina_softmax_grad_out gr = {gq, gk, gv, fox ? gg : NULL};
    for (int re = 0; re < 2; re++) {
        lina_softmax_grad_in gi = {dO.f, re ? NULL : stat};
        for (size_t i = 0; i < nk; i++) {
            gq[i] = 7.0f;
            gk[i] = NAN;
        }
        for (size_t i = 0; i < nv; i++) {
            gv[i] = NAN;
        }
        rc |= lina_softmax_attn_bwd(&d, &in, &gi, &gr, ws);
        for (size_t r = 0; r < (size_t)B * T; r++) {
            for (int x = 0; (int)(r % T) < q0 && x < H * K; x++) {
                kept &= gq[r * H * K + x] == 7.0f;
                gq[r * H * K + x] = (float)dq[r * H * K + x];
            }
        }
        eg = fmax(eg, th_relerr_fd(gq, dq, nk));
        eg = fmax(eg, th_relerr_fd(gk, dk, nk));
        eg = fmax(eg, th_relerr_fd(gv, dv, nv));
        if (fox) {
            eg = fmax(eg, th_relerr_fd(gg, dg, ng));
        }
    }
    CHECK(rc == 0 && kept && ef <= FWD_TOL && eg <= GRAD_TOL,
          "softmax_attn q_from %d of T=%d window=%d%s: o %.2e, gradients %.2e, rows before q_from untouched %d", q0,
          T, window, fox ? " forget gate" : "", ef, eg, kept);
    lina_softmax_in bad = in;
    bad.q_from = T + 1;
    CHECK(lina_softmax_attn_fwd(&d, &bad, &out, ws) == LINA_EINVAL && strstr(lina_last_error(), "q_from"),
          "softmax_attn: q_from past T is one error (%s)", lina_last_error());
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&dO);
    tb_free(&g);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(dg);
    free(fo);
    free(stat);
    free(gq);
    free(gk);
    free(gv);
    free(gg);
}

static void test_softmax(lina_ws *ws)
{
    const int Ts[] = {1, 63, 64, 65, 200};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        const int T = Ts[ti];
        sm_compare(T, 0, 0, ws);
        sm_compare(T, 1, 0, ws);
        if (T > 17) {
            sm_compare(T, 17, 0, ws);
        }
        sm_compare(T, T, 0, ws);
        sm_compare(T, T + 7, 0, ws);
        sm_compare(T, 0, 1, ws);
    }
    /* several key and query tiles, window across tile borders */
    sm_compare(300, 150, 0, ws);
    sm_compare(300, 129, 0, ws);
    /* a piece's queries over the keys before it: q_from off and on the tile grid, at T, with windows
     * that leave keys before the first query unseen */
    const int qf[][3] = {{37, 20, 0}, {300, 129, 0}, {300, 128, 0}, {300, 200, 17}, {300, 300, 0}, {70, 1, 3},
                         {200, 150, 0}};
    for (size_t i = 0; i < sizeof qf / sizeof qf[0]; i++) {
        sm_qfrom(qf[i][0], qf[i][1], qf[i][2], 0, ws);
    }
    sm_qfrom(300, 140, 0, 1, ws);
    sm_qfrom(150, 77, 9, 1, ws);
    /* large logits and near one-hot rows: the probabilities recomputed in
     * the backward and the row term of dS must be exact to float rounding */
    for (int regime = SM_LARGE; regime <= SM_ONEHOT; regime++) {
        const int Ta[] = {63, 300};
        for (size_t ti = 0; ti < sizeof Ta / sizeof Ta[0]; ti++) {
            sm_compare_in(Ta[ti], 0, 0, regime, ws);
            sm_compare_in(Ta[ti], 17, 0, regime, ws);
            sm_compare_in(Ta[ti], 0, 1, regime, ws);
        }
    }
}

/* ================================================================== LION */

enum { LG_WEAK = 0, LG_STRONG, LG_ZERO, LG_MIXED };
static const char *lg_name[] = {"weak g in [-0.1,0]", "strong g in [-20,0]", "g = 0",
                                "g in {0,-20}"};

static void li_compare(int T, int normalize, int gates, lina_form form, lina_ws *ws)
{
    const int B = 2, H = 3, K = 32, V = 48;
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    tb q = tb_new(nk), k = tb_new(nk), v = tb_new(nv), g = tb_new(ng), dO = tb_new(nv);
    if (normalize) {
        tb_uniform(&q, 0.0, 1.0);
        tb_uniform(&k, 0.0, 1.0);
    } else {
        tb_normal(&q, 1.0);
        tb_normal(&k, 1.0);
    }
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    for (size_t x = 0; x < ng; x++) {
        switch (gates) {
        case LG_WEAK:
            g.f[x] = (float)th_uniform(-0.1, 0.0);
            break;
        case LG_STRONG:
            g.f[x] = (float)th_uniform(-20.0, 0.0);
            break;
        case LG_ZERO:
            g.f[x] = 0.0f;
            break;
        default:
            g.f[x] = th_uniform(0, 1) < 0.5 ? 0.0f : -20.0f;
            break;
        }
    }
    tb_sync(&g);
    double s = 1.0 / sqrt((double)K);
    double *o = dnew(nv), *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *dg = dnew(ng);
    ref_lion_fwd(B, T, H, K, V, s, normalize, q.d, k.d, v.d, g.d, o);
    ref_lion_bwd(B, T, H, K, V, s, normalize, q.d, k.d, v.d, g.d, dO.d, dq, dk, dv, dg);
    lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
    lina_lion_in in = {q.f, k.f, v.f, g.f, normalize};
    float *fo = fnew(nv);
    lina_lion_out out = {fo};
    int rc = lina_lion_fwd(&d, &in, &out, form, ws);
    double ef = th_relerr_fd(fo, o, nv);
    note(&g_worst_fwd, ef);
    CHECK(rc == 0 && ef <= FWD_TOL, "lion %s fwd normalize=%d %s T=%d: o %.2e", form_name(form),
          normalize, lg_name[gates], T, ef);
    float *gq = fnew(nk), *gk = fnew(nk), *gv = fnew(nv), *gg = fnew(ng);
    lina_lion_grad_in gi = {dO.f};
    lina_lion_grad_out go = {gq, gk, gv, gg};
    rc = lina_lion_bwd(&d, &in, &gi, &go, form, ws);
    worst w = {0.0, "-"};
    wupd(&w, "dq", gq, dq, nk);
    wupd(&w, "dk", gk, dk, nk);
    wupd(&w, "dv", gv, dv, nv);
    wupd(&w, "dg", gg, dg, ng);
    note(&g_worst_grad, w.e);
    CHECK(rc == 0 && w.e <= GRAD_TOL, "lion %s bwd normalize=%d %s T=%d: worst %s %.2e",
          form_name(form), normalize, lg_name[gates], T, w.name, w.e);
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&g);
    tb_free(&dO);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(dg);
    free(fo);
    free(gq);
    free(gk);
    free(gv);
    free(gg);
}

static void test_lion(lina_ws *ws)
{
    const int Ts[] = {1, 63, 64, 65, 200};
    for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
        for (int norm = 0; norm < 2; norm++) {
            for (int gates = 0; gates < 4; gates++) {
                for (int form = 0; form < 2; form++) {
                    li_compare(Ts[ti], norm, gates, (lina_form)form, ws);
                }
            }
        }
    }
}

/* ============================================================ op wrappers */

static void add_rand(lina_tset *s, const char *name, int nd, const int64_t *shape, double lo,
                     double hi)
{
    lina_tensor t;
    lina_tensor_alloc(&t, nd, shape);
    for (int64_t x = 0; x < lina_tensor_numel(&t); x++) {
        t.data[x] = (float)th_uniform(lo, hi);
    }
    lina_tset_add(s, name, &t);
}

static void test_ops(lina_ws *ws)
{
    const int B = 2, T = 37, H = 2, K = 8, V = 5;
    int64_t sk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H};
    int64_t sh[4] = {B, H, K, V}, sn[3] = {B, H, K}, sm[2] = {B, H};
    const lina_op_info *ml = lina_op_find("mlstm"), *sa = lina_op_find("softmax_attn"),
                       *li = lina_op_find("lion");
    CHECK(ml && sa && li, "ops mlstm, softmax_attn, lion are registered");
    if (!ml || !sa || !li) {
        return;
    }
    lina_op_opts o = {0};
    o.form = LINA_FORM_CHUNK;
    o.backward = 1;
    /* mlstm with states: every output and gradient is written, equal to the typed API */
    lina_tset in = {0}, out = {0};
    add_rand(&in, "q", 4, sk, -1, 1);
    add_rand(&in, "k", 4, sk, -1, 1);
    add_rand(&in, "v", 4, sv, -1, 1);
    add_rand(&in, "i", 3, sg, -3, 3);
    add_rand(&in, "f", 3, sg, -1, 4);
    add_rand(&in, "h0", 4, sh, -1, 1);
    add_rand(&in, "n0", 3, sn, -1, 1);
    add_rand(&in, "m0", 2, sm, -1, 1);
    add_rand(&in, "do", 4, sv, -1, 1);
    add_rand(&in, "dht", 4, sh, -1, 1);
    add_rand(&in, "dnt", 3, sn, -1, 1);
    add_rand(&in, "dmt", 2, sm, -1, 1);
    int rc = lina_op_run(ml, &in, &out, &o, ws);
    const char *names[] = {"o", "ht", "nt", "mt", "dq", "dk", "dv", "di", "df", "dh0", "dn0", "dm0"};
    int have = 1;
    for (size_t x = 0; x < sizeof names / sizeof names[0]; x++) {
        have &= lina_tset_cfind(&out, names[x]) != NULL;
    }
    CHECK(rc == 0 && have && out.n == 12, "op mlstm --backward with states writes o ht nt mt and 8 gradients (%d outputs) %s",
          out.n, lina_last_error());
    if (rc == 0 && have) {
        lina_mix_dims d = {B, T, H, K, V, 0, 0.0f};
        lina_mlstm_in mi = {lina_tset_cfind(&in, "q")->data, lina_tset_cfind(&in, "k")->data,
                            lina_tset_cfind(&in, "v")->data, lina_tset_cfind(&in, "i")->data,
                            lina_tset_cfind(&in, "f")->data, lina_tset_cfind(&in, "h0")->data,
                            lina_tset_cfind(&in, "n0")->data, lina_tset_cfind(&in, "m0")->data};
        float *dm0 = fnew((size_t)B * H), *gq = fnew((size_t)B * T * H * K);
        float *gk = fnew((size_t)B * T * H * K), *gv = fnew((size_t)B * T * H * V);
        float *gi = fnew((size_t)B * T * H), *gf = fnew((size_t)B * T * H);
        lina_mlstm_grad_in gi_ = {lina_tset_cfind(&in, "do")->data, lina_tset_cfind(&in, "dht")->data,
                                  lina_tset_cfind(&in, "dnt")->data, lina_tset_cfind(&in, "dmt")->data};
        lina_mlstm_grad_out go = {gq, gk, gv, gi, gf, NULL, NULL, dm0};
        rc = lina_mlstm_bwd(&d, &mi, &gi_, &go, LINA_FORM_CHUNK, ws);
        CHECK(rc == 0 && memcmp(dm0, lina_tset_cfind(&out, "dm0")->data, (size_t)B * H * sizeof(float)) == 0 &&
                  memcmp(gf, lina_tset_cfind(&out, "df")->data, (size_t)B * T * H * sizeof(float)) == 0,
              "op mlstm gradients equal the typed API's");
        free(dm0);
        free(gq);
        free(gk);
        free(gv);
        free(gi);
        free(gf);
    }
    lina_tset_free(&out);
    /* bad inputs: one clear message naming the file */
    struct {
        const char *drop, *expect;
    } partial[] = {{"n0", "n0.npy"}, {"h0", "h0.npy"}, {"m0", "m0.npy"}};
    for (size_t x = 0; x < 3; x++) {
        lina_tset in2 = {0};
        for (int j = 0; j < in.n; j++) {
            if (strcmp(in.names[j], partial[x].drop) != 0) {
                lina_tensor t;
                lina_tensor_alloc(&t, in.t[j].ndim, in.t[j].shape);
                memcpy(t.data, in.t[j].data, (size_t)lina_tensor_numel(&t) * sizeof(float));
                lina_tset_add(&in2, in.names[j], &t);
            }
        }
        rc = lina_op_run(ml, &in2, &out, &o, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), partial[x].expect),
              "op mlstm without %s.npy but other states rejected: %s", partial[x].drop, lina_last_error());
        lina_tset_free(&out);
        lina_tset_free(&in2);
    }
    /* wrong shape */
    {
        int64_t bad[3] = {B, T + 1, H};
        lina_tensor t;
        lina_tensor_alloc(&t, 3, bad);
        lina_tset_add(&in, "f", &t);
        rc = lina_op_run(ml, &in, &out, &o, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "f.npy"), "op mlstm f.npy with wrong T rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        add_rand(&in, "f", 3, sg, -1, 4);
    }
    /* non-finite input */
    {
        lina_tensor *qq = lina_tset_find(&in, "q");
        float keep = qq->data[5];
        qq->data[5] = NAN;
        rc = lina_op_run(ml, &in, &out, &o, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "q.npy"), "op mlstm NaN in q.npy rejected: %s",
              lina_last_error());
        qq->data[5] = keep;
        lina_tset_free(&out);
    }
    /* missing do in a backward run */
    {
        lina_tset in3 = {0};
        add_rand(&in3, "q", 4, sk, -1, 1);
        add_rand(&in3, "k", 4, sk, -1, 1);
        add_rand(&in3, "v", 4, sv, -1, 1);
        add_rand(&in3, "i", 3, sg, -1, 1);
        add_rand(&in3, "f", 3, sg, -1, 1);
        rc = lina_op_run(ml, &in3, &out, &o, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "do.npy"), "op mlstm --backward without do.npy rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        /* forward only: o ht nt mt */
        lina_op_opts of = o;
        of.backward = 0;
        rc = lina_op_run(ml, &in3, &out, &of, ws);
        CHECK(rc == 0 && out.n == 4 && lina_tset_cfind(&out, "mt"), "op mlstm forward writes o ht nt mt");
        lina_tset_free(&out);
        /* softmax: forward + backward; window with non-causal rejected; h0 rejected */
        add_rand(&in3, "do", 4, sv, -1, 1);
        rc = lina_op_run(sa, &in3, &out, &o, ws);
        CHECK(rc == 0 && out.n == 4 && lina_tset_cfind(&out, "dv"), "op softmax_attn --backward writes o dq dk dv");
        lina_tset_free(&out);
        lina_op_opts ow = o;
        ow.window = 4;
        ow.non_causal = 1;
        rc = lina_op_run(sa, &in3, &out, &ow, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "--window"), "op softmax_attn --window with --non-causal rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        add_rand(&in3, "h0", 4, sh, -1, 1);
        rc = lina_op_run(sa, &in3, &out, &o, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "h0.npy"), "op softmax_attn with h0.npy rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        /* lion: g missing, g > 0, then fine */
        lina_op_opts on = o;
        on.normalize = 1;
        lina_tset in4 = {0};
        add_rand(&in4, "q", 4, sk, 0, 1);
        add_rand(&in4, "k", 4, sk, 0, 1);
        add_rand(&in4, "v", 4, sv, -1, 1);
        add_rand(&in4, "do", 4, sv, -1, 1);
        rc = lina_op_run(li, &in4, &out, &on, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "g.npy"), "op lion without g.npy rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        add_rand(&in4, "g", 3, sg, -1, 0.5);
        rc = lina_op_run(li, &in4, &out, &on, ws);
        CHECK(rc != 0 && strstr(lina_last_error(), "g.npy"), "op lion with g > 0 rejected: %s",
              lina_last_error());
        lina_tset_free(&out);
        add_rand(&in4, "g", 3, sg, -1, 0);
        rc = lina_op_run(li, &in4, &out, &on, ws);
        CHECK(rc == 0 && out.n == 5 && lina_tset_cfind(&out, "dg"), "op lion --normalize --backward writes o dq dk dv dg");
        lina_tset_free(&out);
        lina_tset_free(&in4);
        lina_tset_free(&in3);
    }
    lina_tset_free(&in);
    /* typed API: T = 0 passes the states through */
    {
        float h0[2 * 3 * 2] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, n0[2 * 3] = {1, 2, 3, 4, 5, 6};
        float m0[2] = {0.5f, -0.5f}, ht[12] = {0}, nt[6] = {0}, mt[2] = {0}, dummy[1] = {0};
        lina_mix_dims d = {1, 0, 2, 3, 2, 0, 0.0f};
        lina_mlstm_in mi = {dummy, dummy, dummy, dummy, dummy, h0, n0, m0};
        lina_mlstm_out mo = {dummy, ht, nt, mt};
        rc = lina_mlstm_fwd(&d, &mi, &mo, LINA_FORM_CHUNK, ws);
        CHECK(rc == 0 && memcmp(ht, h0, sizeof ht) == 0 && memcmp(nt, n0, sizeof nt) == 0 &&
                  mt[1] == -0.5f,
              "mlstm T=0 returns the initial states");
    }
}


/* ============================================== `lina op` end to end */

static const char *g_bin;
static char g_dir[64];

static void npy_put(const char *dir, const char *name, int nd, const int64_t *sh, const float *x)
{
    lina_tensor t;
    lina_tensor_alloc(&t, nd, sh);
    memcpy(t.data, x, (size_t)lina_tensor_numel(&t) * sizeof(float));
    char p[256];
    snprintf(p, sizeof p, "%s/%s.npy", dir, name);
    lina_npy_write(p, &t);
    lina_tensor_free(&t);
}

/* relative error of DIR/out/NAME.npy against ref[n]; 1e30 when unreadable */
static double npy_err(const char *name, const double *ref, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/out/%s.npy", g_dir, name);
    lina_tensor t;
    if (lina_npy_read(p, &t) != 0) {
        return 1e30;
    }
    double e = (size_t)lina_tensor_numel(&t) == n ? th_relerr_fd(t.data, ref, n) : 1e30;
    lina_tensor_free(&t);
    return e;
}

/* run `lina ARGS`; exit status, stderr in err */
static int lina_run(const char *args, char *err, size_t errn)
{
    char cmd[1024], out[1];
    snprintf(cmd, sizeof cmd, "%s %s", g_bin, args);
    return th_sh_capture(cmd, g_dir, out, sizeof out, err, errn);
}

static void clean_dir(const char *sub)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s/%s && mkdir -p %s/%s", g_dir, sub, g_dir, sub);
    if (system(cmd) != 0) {
        printf("# could not reset %s/%s\n", g_dir, sub);
    }
}

static int one_line(const char *e)
{
    size_t n = strlen(e);
    return n > 6 && strncmp(e, "lina: ", 6) == 0 && strchr(e, '\n') == e + n - 1;
}

static void test_cli(void)
{
    g_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    snprintf(g_dir, sizeof g_dir, "/tmp/lina_mixers2_XXXXXX");
    if (!mkdtemp(g_dir) || access(g_bin, X_OK) != 0) {
        CHECK(0, "lina op end to end: need %s and a temporary directory", g_bin);
        return;
    }
    char in[128], err[2048], args[512];
    snprintf(in, sizeof in, "%s/in", g_dir);
    const int B = 2, T = 70, H = 2, K = 16, V = 24;
    int64_t sk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[3] = {B, T, H};
    int64_t sh[4] = {B, H, K, V}, sn[3] = {B, H, K}, sm[2] = {B, H};
    size_t nk = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ng = (size_t)B * T * H;
    size_t BH = (size_t)B * H;
    const double s = 1.0 / sqrt((double)K);
    /* mlstm, with states and all cotangents */
    {
        ml_case c;
        ml_case_init(&c, B, T, H, K, V, ML_LARGE);
        clean_dir("in");
        npy_put(in, "q", 4, sk, c.q.f);
        npy_put(in, "k", 4, sk, c.k.f);
        npy_put(in, "v", 4, sv, c.v.f);
        npy_put(in, "i", 3, sg, c.i.f);
        npy_put(in, "f", 3, sg, c.f.f);
        npy_put(in, "h0", 4, sh, c.h0.f);
        npy_put(in, "n0", 3, sn, c.n0.f);
        npy_put(in, "m0", 2, sm, c.m0.f);
        npy_put(in, "do", 4, sv, c.dO.f);
        npy_put(in, "dht", 4, sh, c.dht.f);
        npy_put(in, "dnt", 3, sn, c.dnt.f);
        npy_put(in, "dmt", 2, sm, c.dmt.f);
        double *o = dnew(nv), *ht = dnew(BH * K * V), *nt = dnew(BH * K), *mt = dnew(BH);
        double *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *di = dnew(ng), *df = dnew(ng);
        double *dh0 = dnew(BH * K * V), *dn0 = dnew(BH * K), *dm0 = dnew(BH);
        ref_mlstm_fwd(B, T, H, K, V, s, c.q.d, c.k.d, c.v.d, c.i.d, c.f.d, c.h0.d, c.n0.d, c.m0.d,
                      o, ht, nt, mt);
        ref_mlstm_bwd(B, T, H, K, V, s, c.q.d, c.k.d, c.v.d, c.i.d, c.f.d, c.h0.d, c.n0.d,
                      c.m0.d, c.dO.d, c.dht.d, c.dnt.d, c.dmt.d, dq, dk, dv, di, df, dh0, dn0, dm0);
        for (int form = 0; form < 2; form++) {
            clean_dir("out");
            snprintf(args, sizeof args, "op mlstm --in %s --out %s/out --form %s --backward", in,
                     g_dir, form_name((lina_form)form));
            int rc = lina_run(args, err, sizeof err);
            double ef = 0.0, eg = 0.0;
            note(&ef, npy_err("o", o, nv));
            note(&ef, npy_err("ht", ht, BH * K * V));
            note(&ef, npy_err("nt", nt, BH * K));
            note(&ef, npy_err("mt", mt, BH));
            note(&eg, npy_err("dq", dq, nk));
            note(&eg, npy_err("dk", dk, nk));
            note(&eg, npy_err("dv", dv, nv));
            note(&eg, npy_err("di", di, ng));
            note(&eg, npy_err("df", df, ng));
            note(&eg, npy_err("dh0", dh0, BH * K * V));
            note(&eg, npy_err("dn0", dn0, BH * K));
            note(&eg, npy_err("dm0", dm0, BH));
            CHECK(rc == 0 && ef <= FWD_TOL && eg <= GRAD_TOL,
                  "lina op mlstm --form %s --backward (states, dht dnt dmt): o ht nt mt %.2e, d* %.2e %s",
                  form_name((lina_form)form), ef, eg, err);
        }
        free(o);
        free(ht);
        free(nt);
        free(mt);
        free(dq);
        free(dk);
        free(dv);
        free(di);
        free(df);
        free(dh0);
        free(dn0);
        free(dm0);
        ml_case_free(&c);
    }
    /* softmax_attn and lion share q, k, v, do */
    tb q = tb_new(nk), k = tb_new(nk), v = tb_new(nv), g = tb_new(ng), dO = tb_new(nv);
    tb_uniform(&q, 0.0, 1.0);
    tb_uniform(&k, 0.0, 1.0);
    tb_normal(&v, 1.0);
    tb_normal(&dO, 1.0);
    tb_uniform(&g, -3.0, 0.0);
    clean_dir("in");
    npy_put(in, "q", 4, sk, q.f);
    npy_put(in, "k", 4, sk, k.f);
    npy_put(in, "v", 4, sv, v.f);
    npy_put(in, "do", 4, sv, dO.f);
    double *o = dnew(nv), *dq = dnew(nk), *dk = dnew(nk), *dv = dnew(nv), *dg = dnew(ng);
    const struct {
        const char *flags;
        int window, non_causal;
    } sm_modes[] = {{"", 0, 0}, {"--window 9", 9, 0}, {"--non-causal", 0, 1}};
    for (int m = 0; m < 3; m++) {
        ref_softmax_fwd(B, T, H, K, V, s, sm_modes[m].window, sm_modes[m].non_causal, q.d, k.d,
                        v.d, o);
        ref_softmax_bwd(B, T, H, K, V, s, sm_modes[m].window, sm_modes[m].non_causal, q.d, k.d,
                        v.d, dO.d, dq, dk, dv);
        for (int form = 0; form < 2; form++) {
            clean_dir("out");
            snprintf(args, sizeof args, "op softmax_attn --in %s --out %s/out --form %s --backward %s",
                     in, g_dir, form_name((lina_form)form), sm_modes[m].flags);
            int rc = lina_run(args, err, sizeof err);
            double ef = npy_err("o", o, nv), eg = 0.0;
            note(&eg, npy_err("dq", dq, nk));
            note(&eg, npy_err("dk", dk, nk));
            note(&eg, npy_err("dv", dv, nv));
            CHECK(rc == 0 && ef <= FWD_TOL && eg <= GRAD_TOL,
                  "lina op softmax_attn --form %s --backward %s: o %.2e, d* %.2e %s",
                  form_name((lina_form)form), sm_modes[m].flags, ef, eg, err);
        }
    }
    npy_put(in, "g", 3, sg, g.f);
    for (int norm = 0; norm < 2; norm++) {
        ref_lion_fwd(B, T, H, K, V, s, norm, q.d, k.d, v.d, g.d, o);
        ref_lion_bwd(B, T, H, K, V, s, norm, q.d, k.d, v.d, g.d, dO.d, dq, dk, dv, dg);
        for (int form = 0; form < 2; form++) {
            clean_dir("out");
            snprintf(args, sizeof args, "op lion --in %s --out %s/out --form %s --backward%s", in,
                     g_dir, form_name((lina_form)form), norm ? " --normalize" : "");
            int rc = lina_run(args, err, sizeof err);
            double ef = npy_err("o", o, nv), eg = 0.0;
            note(&eg, npy_err("dq", dq, nk));
            note(&eg, npy_err("dk", dk, nk));
            note(&eg, npy_err("dv", dv, nv));
            note(&eg, npy_err("dg", dg, ng));
            CHECK(rc == 0 && ef <= FWD_TOL && eg <= GRAD_TOL,
                  "lina op lion --form %s --backward%s: o %.2e, d* %.2e %s",
                  form_name((lina_form)form), norm ? " --normalize" : "", ef, eg, err);
        }
    }
    /* bad command lines: non-zero exit, one "lina: ..." line */
    const char *bad[][3] = {
        {"softmax_attn", "--window 4 --non-causal", "--non-causal"},
        {"softmax_attn", "--window 0", "--window"},
        {"lion", "--window 3", "--window"},
        {"mlstm", "", "i.npy"},
    };
    for (size_t x = 0; x < sizeof bad / sizeof bad[0]; x++) {
        snprintf(args, sizeof args, "op %s --in %s --out %s/out --form chunk %s", bad[x][0], in,
                 g_dir, bad[x][1]);
        int rc = lina_run(args, err, sizeof err);
        CHECK(rc != 0 && one_line(err) && strstr(err, bad[x][2]), "lina op %s %s fails with one line: %s",
              bad[x][0], bad[x][1], err);
    }
    tb_free(&q);
    tb_free(&k);
    tb_free(&v);
    tb_free(&g);
    tb_free(&dO);
    free(o);
    free(dq);
    free(dk);
    free(dv);
    free(dg);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", g_dir);
    }
}

int main(void)
{
    lina_set_threads(2);
    lina_ws ws;
    lina_ws_init(&ws);
    /* references against finite differences */
    fd_mlstm(0, -3, 3, 1.0, 0.0, "moderate gates");
    fd_mlstm(1, -3, 3, 1.0, 0.0, "moderate gates");
    fd_mlstm(1, -30, 30, 1.0, 0.0, "i in [-30,30]");
    fd_mlstm(1, -30, 30, 3e-7, 0.0, "i in [-30,30], |q| ~ 3e-7: eps and exp(-m) decide den");
    fd_mlstm(1, -3, 3, 1.0, 20.0, "m0 = 20");
    fd_mlstm(1, -3, 3, 1.0, 40.0, "m0 = 40");
    fd_mlstm(1, -3, 3, 1.0, 80.0, "m0 = 80");
    fd_quadratic(0, 0, 0, 0, 0);
    fd_quadratic(0, 3, 0, 0, 0);
    fd_quadratic(0, 0, 1, 0, 0);
    fd_quadratic(2, 0, 0, 0, -1.0);
    fd_quadratic(2, 3, 0, 0, -2.0);
    fd_quadratic(1, 0, 0, 0, -1.0);
    fd_quadratic(1, 0, 0, 1, -1.0);
    fd_quadratic(1, 0, 0, 1, -8.0);
    /* float kernels against the references */
    test_mlstm_forms(&ws);
    test_mlstm_large_m0(&ws);
    test_mlstm_tie(&ws);
    test_mlstm_continue(&ws);
    test_softmax(&ws);
    test_fox(&ws);
    test_lion(&ws);
    test_ops(&ws);
    test_cli();
    printf("# worst relative error: forward %.2e (tol %.0e), gradients %.2e (tol %.0e)\n",
           g_worst_fwd, FWD_TOL, g_worst_grad, GRAD_TOL);
    lina_ws_free(&ws);
    return th_exit();
}
