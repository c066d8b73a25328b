/* test_lion_layer.c -- the LION-S attention layer (src/nn/lion_layer.c)
 * against a double-precision reference written here straight from docs/mixers.md
 * section 13 in its full (parallel) form: the T x T decay mask built from
 * products of the per-token gates, scores phi(q_i).phi(k_j), row-normalised,
 * over all keys. Checks: forward vs the reference; every parameter gradient
 * and dx against central finite differences of the reference (in double);
 * chunk form = recurrent form across chunk boundaries (forward and
 * backward); non-causality (changing the last token changes the first
 * output); backward accumulates; bad arguments fail with a message. */
#include "harness.h"
#include "lina.h"
#include "../src/nn/lion_layer.h"

#include <stdint.h>
#include <string.h>

#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

/* ------------------------------------------------- parameters in one buffer */

enum { T_QW, T_QB, T_KW, T_KB, T_VW, T_VB, T_AW, T_AB, T_NORM, T_OW, T_OB, T_COUNT };
static const char *tname[T_COUNT] = {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                                     "v_proj.weight", "v_proj.bias", "a_proj.weight", "a_proj.bias",
                                     "o_norm.weight", "o_proj.weight", "o_proj.bias"};

typedef struct layout {
    size_t off[T_COUNT + 1];
    size_t n[T_COUNT];
} layout;

static layout make_layout(const lina_lion_layer_dims *d)
{
    size_t HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, D = (size_t)d->D, H = (size_t)d->H;
    size_t n[T_COUNT] = {HK * D, d->qkv_bias ? HK : 0, HK * D, d->qkv_bias ? HK : 0, HV * D, d->qkv_bias ? HV : 0,
                         H * D, H, d->o_norm ? (size_t)d->V : 0, D * HV, d->proj_bias ? D : 0};
    layout L;
    L.off[0] = 0;
    for (int i = 0; i < T_COUNT; i++) {
        L.n[i] = n[i];
        L.off[i + 1] = L.off[i] + n[i];
    }
    return L;
}

static void views(lina_lion_layer_params *p, float *buf, const layout *L)
{
    float *v[T_COUNT];
    for (int i = 0; i < T_COUNT; i++) {
        v[i] = L->n[i] ? buf + L->off[i] : NULL;
    }
    p->q_proj = v[T_QW];
    p->q_bias = v[T_QB];
    p->k_proj = v[T_KW];
    p->k_bias = v[T_KB];
    p->v_proj = v[T_VW];
    p->v_bias = v[T_VB];
    p->a_proj = v[T_AW];
    p->a_bias = v[T_AB];
    p->o_norm = v[T_NORM];
    p->o_proj = v[T_OW];
    p->o_bias = v[T_OB];
}

/* ------------------------------------------------------- double reference */

static double rsilu(double z)
{
    return z / (1.0 + exp(-z));
}

static double rlogsig(double x)
{
    return x < 0 ? x - log1p(exp(x)) : -log1p(exp(-x));
}

/* y [out] = W [out, in] x [in] (+ b) */
static void rlin(double *y, const double *W, const double *b, const double *x, int in, int out)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++) {
            s += W[(size_t)o * in + i] * x[i];
        }
        y[o] = s;
    }
}

/* phi over one head vector, in place */
static void rphi(double *z, int K)
{
    double ss = 0.0;
    for (int i = 0; i < K; i++) {
        z[i] = rsilu(z[i]) + 0.5;
        ss += z[i] * z[i];
    }
    double r = 1.0 / sqrt(ss);
    for (int i = 0; i < K; i++) {
        z[i] *= r;
    }
}

/* out [B*T, D] from x [B*T, D]: the full masked attention form */
static void ref_lion(const lina_lion_layer_dims *d, const layout *L, const double *P, const double *x, double *out,
                     int B, int T)
{
    int D = d->D, H = d->H, K = d->K, V = d->V, HK = H * K, HV = H * V;
    const double *b[T_COUNT];
    for (int i = 0; i < T_COUNT; i++) {
        b[i] = L->n[i] ? P + L->off[i] : NULL;
    }
    double *q = calloc((size_t)T * HK, 8), *k = calloc((size_t)T * HK, 8), *v = calloc((size_t)T * HV, 8);
    double *lg = calloc((size_t)T * H, 8), *o = calloc((size_t)HV, 8), *y = calloc((size_t)HV, 8);
    double *cum = calloc((size_t)T + 1, 8);
    for (int bb = 0; bb < B; bb++) {
        const double *xb = x + (size_t)bb * T * D;
        for (int t = 0; t < T; t++) {
            rlin(q + (size_t)t * HK, b[T_QW], b[T_QB], xb + (size_t)t * D, D, HK);
            rlin(k + (size_t)t * HK, b[T_KW], b[T_KB], xb + (size_t)t * D, D, HK);
            rlin(v + (size_t)t * HV, b[T_VW], b[T_VB], xb + (size_t)t * D, D, HV);
            rlin(lg + (size_t)t * H, b[T_AW], b[T_AB], xb + (size_t)t * D, D, H);
            for (int h = 0; h < H; h++) {
                rphi(q + (size_t)t * HK + h * K, K);
                rphi(k + (size_t)t * HK + h * K, K);
                lg[(size_t)t * H + h] = rlogsig(-lg[(size_t)t * H + h]); /* log(1 - sigmoid(a)) */
            }
        }
        for (int i = 0; i < T; i++) {
            for (int h = 0; h < H; h++) {
                /* cum[m] = sum_{r < m} log lambda_r */
                cum[0] = 0.0;
                for (int m = 0; m < T; m++) {
                    cum[m + 1] = cum[m] + lg[(size_t)m * H + h];
                }
                double den = 0.0;
                for (int j2 = 0; j2 < V; j2++) {
                    o[h * V + j2] = 0.0;
                }
                for (int j = 0; j < T; j++) {
                    /* i > j: lambda_j .. lambda_{i-1};  i < j: lambda_{i+1} .. lambda_j */
                    double lm = i > j ? cum[i] - cum[j] : i < j ? cum[j + 1] - cum[i + 1] : 0.0;
                    double s = 0.0;
                    for (int a = 0; a < K; a++) {
                        s += q[(size_t)i * HK + h * K + a] * k[(size_t)j * HK + h * K + a];
                    }
                    s *= exp(lm);
                    den += s;
                    for (int j2 = 0; j2 < V; j2++) {
                        o[h * V + j2] += s * v[(size_t)j * HV + h * V + j2];
                    }
                }
                double ss = 0.0;
                for (int j2 = 0; j2 < V; j2++) {
                    o[h * V + j2] /= den;
                    ss += o[h * V + j2] * o[h * V + j2];
                }
                double r = 1.0 / sqrt(ss / V + d->norm_eps);
                for (int j2 = 0; j2 < V; j2++) {
                    y[h * V + j2] = d->o_norm ? o[h * V + j2] * r * b[T_NORM][j2] : o[h * V + j2];
                }
            }
            rlin(out + ((size_t)bb * T + i) * D, b[T_OW], b[T_OB], y, HV, D);
        }
    }
    free(q);
    free(k);
    free(v);
    free(lg);
    free(o);
    free(y);
    free(cum);
}

static double ref_loss(const lina_lion_layer_dims *d, const layout *L, const double *P, const double *x,
                       const double *w, int B, int T, double *tmp)
{
    ref_lion(d, L, P, x, tmp, B, T);
    double s = 0.0;
    for (size_t i = 0; i < (size_t)B * T * d->D; i++) {
        s += tmp[i] * w[i];
    }
    return s;
}

/* ------------------------------------------------------------------ tests */

typedef struct setup {
    lina_lion_layer_dims d;
    layout L;
    int B, T;
    size_t np, nx;
    float *P, *G, *x, *dx, *dout, *out, *acts, *scratch;
    double *Pd, *xd, *wd;
} setup;

static void setup_init(setup *s, lina_lion_layer_dims d, int B, int T)
{
    memset(s, 0, sizeof(*s));
    s->d = d;
    s->L = make_layout(&d);
    s->B = B;
    s->T = T;
    s->np = s->L.off[T_COUNT];
    s->nx = (size_t)B * T * d.D;
    int N = B * T;
    s->P = malloc(s->np * 4);
    s->G = calloc(s->np, 4);
    s->x = malloc(s->nx * 4);
    s->dx = calloc(s->nx, 4);
    s->dout = malloc(s->nx * 4);
    s->out = malloc(s->nx * 4);
    s->acts = malloc(lina_lion_layer_acts_floats(&d, N) * 4);
    s->scratch = malloc(lina_lion_layer_scratch_floats(&d, N) * 4);
    s->Pd = malloc(s->np * 8);
    s->xd = malloc(s->nx * 8);
    s->wd = malloc(s->nx * 8);
    for (int t = 0; t < T_COUNT; t++) {
        for (size_t j = 0; j < s->L.n[t]; j++) {
            double z = th_normal();
            s->P[s->L.off[t] + j] = (float)(t == T_NORM ? 1.0 + 0.2 * z : t == T_AB ? 1.0 * z : 0.4 * z);
        }
    }
    for (size_t i = 0; i < s->nx; i++) {
        s->x[i] = (float)th_normal();
        s->dout[i] = (float)th_normal();
    }
    for (size_t i = 0; i < s->np; i++) {
        s->Pd[i] = s->P[i];
    }
    for (size_t i = 0; i < s->nx; i++) {
        s->xd[i] = s->x[i];
        s->wd[i] = s->dout[i];
    }
}

static void setup_free(setup *s)
{
    free(s->P);
    free(s->G);
    free(s->x);
    free(s->dx);
    free(s->dout);
    free(s->out);
    free(s->acts);
    free(s->scratch);
    free(s->Pd);
    free(s->xd);
    free(s->wd);
}

/* forward + backward of the float layer (gradients zeroed first) */
static int run_layer(setup *s, lina_form form, lina_ws *ws)
{
    lina_lion_layer_params p, gp;
    lina_lion_layer_acts a;
    views(&p, s->P, &s->L);
    views(&gp, s->G, &s->L);
    lina_lion_layer_acts_carve(&a, s->acts, &s->d, s->B * s->T);
    memset(s->G, 0, s->np * 4);
    memset(s->dx, 0, s->nx * 4);
    int rc = lina_lion_layer_forward(s->out, &a, s->x, &s->d, &p, s->B, s->T, form, ws);
    return rc ? rc
              : lina_lion_layer_backward(s->dx, &gp, s->dout, s->x, &a, &s->d, &p, s->B, s->T, s->scratch, form, ws);
}

/* forward against the reference; gradients against central differences of it
 * (every parameter and every input entry) */
static void test_fd(const char *label, lina_lion_layer_dims d, int B, int T, lina_form form)
{
    setup s;
    setup_init(&s, d, B, T);
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = run_layer(&s, form, &ws);
    double *ref = malloc(s.nx * 8), *tmp = malloc(s.nx * 8);
    ref_lion(&s.d, &s.L, s.Pd, s.xd, ref, B, T);
    double e = rc ? 1e30 : th_relerr_fd(s.out, ref, s.nx);
    CHECK(rc == 0 && e < FWD_TOL, "%s: forward vs full-form double reference (B=%d T=%d) err %.2e", label, B, T, e);
    const double h = 1e-6;
    double worst = 0.0;
    const char *wname = "";
    for (int t = 0; t <= T_COUNT; t++) { /* T_COUNT: the input x */
        size_t n = t < T_COUNT ? s.L.n[t] : s.nx;
        double *base = t < T_COUNT ? s.Pd + s.L.off[t] : s.xd;
        const float *an = t < T_COUNT ? s.G + s.L.off[t] : s.dx;
        double mx = 1e-6, de = 0.0;
        for (size_t j = 0; j < n; j++) {
            double p0 = base[j];
            base[j] = p0 + h;
            double lp = ref_loss(&s.d, &s.L, s.Pd, s.xd, s.wd, B, T, tmp);
            base[j] = p0 - h;
            double lm = ref_loss(&s.d, &s.L, s.Pd, s.xd, s.wd, B, T, tmp);
            base[j] = p0;
            double fd = (lp - lm) / (2 * h);
            mx = fabs(fd) > mx ? fabs(fd) : mx;
            double dd = fabs(an[j] - fd);
            de = dd > de || dd != dd ? dd : de;
        }
        if (n && !(de / mx <= worst)) {
            worst = de / mx;
            wname = t < T_COUNT ? tname[t] : "x";
        }
    }
    CHECK(rc == 0 && worst < GRAD_TOL, "%s: %zu parameter + %zu input gradients vs FD of the reference: worst %.2e (%s)",
          label, s.np, s.nx, worst, wname);
    free(ref);
    free(tmp);
    lina_ws_free(&ws);
    setup_free(&s);
}

/* chunk form = recurrent form, forward and every gradient; backward adds */
static void test_forms(void)
{
    lina_lion_layer_dims d = {16, 2, 8, 8, 1, 1, 1, 1e-6f, 16};
    setup s;
    setup_init(&s, d, 2, 70);
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = run_layer(&s, LINA_FORM_CHUNK, &ws);
    float *o1 = malloc(s.nx * 4), *g1 = malloc(s.np * 4), *x1 = malloc(s.nx * 4);
    memcpy(o1, s.out, s.nx * 4);
    memcpy(g1, s.G, s.np * 4);
    memcpy(x1, s.dx, s.nx * 4);
    rc = rc ? rc : run_layer(&s, LINA_FORM_RECURRENT, &ws);
    double eo = 0.0, eg = 0.0, ex = 0.0, mo = 1.0, mg = 1e-6, mx = 1e-6;
    for (size_t i = 0; i < s.nx; i++) {
        eo = fmax(eo, fabs(o1[i] - s.out[i]));
        mo = fmax(mo, fabs(s.out[i]));
        ex = fmax(ex, fabs(x1[i] - s.dx[i]));
        mx = fmax(mx, fabs(s.dx[i]));
    }
    for (size_t i = 0; i < s.np; i++) {
        eg = fmax(eg, fabs(g1[i] - s.G[i]));
        mg = fmax(mg, fabs(s.G[i]));
    }
    CHECK(rc == 0 && eo / mo < 1e-5 && eg / mg < 1e-4 && ex / mx < 1e-4,
          "forms: chunk (C=16) = recurrent over T=70, out %.2e, grads %.2e, dx %.2e", eo / mo, eg / mg, ex / mx);
    /* the reference agrees over the long sequence too */
    double *ref = malloc(s.nx * 8);
    ref_lion(&s.d, &s.L, s.Pd, s.xd, ref, s.B, s.T);
    double e = th_relerr_fd(o1, ref, s.nx);
    CHECK(e < FWD_TOL, "forms: chunk form vs full-form reference, T=70, err %.2e", e);
    free(ref);
    /* backward accumulates: a second backward on top doubles everything */
    lina_lion_layer_params p, gp;
    lina_lion_layer_acts a;
    views(&p, s.P, &s.L);
    views(&gp, s.G, &s.L);
    lina_lion_layer_acts_carve(&a, s.acts, &s.d, s.B * s.T);
    memcpy(g1, s.G, s.np * 4);
    memcpy(x1, s.dx, s.nx * 4);
    rc = lina_lion_layer_backward(s.dx, &gp, s.dout, s.x, &a, &s.d, &p, s.B, s.T, s.scratch, LINA_FORM_RECURRENT, &ws);
    double acc = 0.0;
    for (size_t i = 0; i < s.np; i++) {
        acc = fmax(acc, fabs(s.G[i] - 2.0 * g1[i]) / (mg + 1.0));
    }
    for (size_t i = 0; i < s.nx; i++) {
        acc = fmax(acc, fabs(s.dx[i] - 2.0 * x1[i]) / (mx + 1.0));
    }
    CHECK(rc == 0 && acc < 1e-6, "backward adds into dx and the gradients (err %.2e)", acc);
    free(o1);
    free(g1);
    free(x1);
    lina_ws_free(&ws);
    setup_free(&s);
}

/* changing the LAST token changes the FIRST output (a causal layer would not) */
static void test_noncausal(void)
{
    lina_lion_layer_dims d = {16, 2, 8, 8, 0, 1, 0, 1e-6f, 0};
    setup s;
    setup_init(&s, d, 1, 12);
    lina_lion_layer_params p;
    lina_lion_layer_acts a;
    views(&p, s.P, &s.L);
    lina_lion_layer_acts_carve(&a, s.acts, &s.d, s.T);
    int rc = lina_lion_layer_forward(s.out, &a, s.x, &s.d, &p, 1, s.T, LINA_FORM_CHUNK, NULL);
    float *o1 = malloc(s.nx * 4);
    memcpy(o1, s.out, s.nx * 4);
    for (int i = 0; i < d.D; i++) {
        s.x[(size_t)(s.T - 1) * d.D + i] += 1.0f;
    }
    rc = rc ? rc : lina_lion_layer_forward(s.out, &a, s.x, &s.d, &p, 1, s.T, LINA_FORM_CHUNK, NULL);
    double ch0 = 0.0, chm = 0.0;
    for (int i = 0; i < d.D; i++) {
        ch0 = fmax(ch0, fabs(s.out[i] - o1[i]));
        chm = fmax(chm, fabs(s.out[(size_t)(s.T / 2) * d.D + i] - o1[(size_t)(s.T / 2) * d.D + i]));
    }
    CHECK(rc == 0 && ch0 > 1e-6 && chm > 1e-6,
          "non-causal: changing token %d changes output 0 by %.2e and output %d by %.2e", s.T - 1, ch0, s.T / 2, chm);
    free(o1);
    setup_free(&s);
}

static void test_errors(void)
{
    lina_lion_layer_dims d = {16, 2, 8, 8, 0, 0, 0, 1e-6f, 0};
    setup s;
    setup_init(&s, d, 1, 4);
    lina_lion_layer_params p;
    lina_lion_layer_acts a;
    views(&p, s.P, &s.L);
    lina_lion_layer_acts_carve(&a, s.acts, &s.d, s.T);
    lina_lion_layer_dims bad = d;
    bad.H = 0;
    int rc1 = lina_lion_layer_forward(s.out, &a, s.x, &bad, &p, 1, s.T, LINA_FORM_CHUNK, NULL);
    int rc2 = lina_lion_layer_forward(s.out, &a, s.x, &d, &p, 1, 0, LINA_FORM_CHUNK, NULL);
    lina_lion_layer_params p2 = p;
    p2.a_proj = NULL;
    int rc3 = lina_lion_layer_forward(s.out, &a, s.x, &d, &p2, 1, s.T, LINA_FORM_CHUNK, NULL);
    bad = d;
    bad.o_norm = 1; /* no o_norm weight given */
    int rc4 = lina_lion_layer_forward(s.out, &a, s.x, &bad, &p, 1, s.T, LINA_FORM_CHUNK, NULL);
    int rc5 = lina_lion_layer_backward(NULL, &p, s.dout, s.x, &a, &d, &p, 1, s.T, s.scratch, LINA_FORM_CHUNK, NULL);
    CHECK(rc1 == LINA_EINVAL && rc2 == LINA_EINVAL && rc3 == LINA_EINVAL && rc4 == LINA_EINVAL &&
              rc5 == LINA_EINVAL && lina_last_error()[0] != '\0',
          "bad dims, T = 0, missing weights, NULL dx fail with LINA_EINVAL (%s)", lina_last_error());
    setup_free(&s);
}

int main(void)
{
    lina_set_threads(2);
    /* D, H, K, V, qkv_bias, proj_bias, o_norm, eps, chunk */
    test_fd("lion", (lina_lion_layer_dims){16, 2, 8, 8, 0, 1, 0, 1e-6f, 0}, 2, 9, LINA_FORM_CHUNK);
    test_fd("lion recurrent", (lina_lion_layer_dims){16, 2, 8, 8, 0, 1, 0, 1e-6f, 0}, 2, 9, LINA_FORM_RECURRENT);
    test_fd("lion qkv bias + o_norm, K != V", (lina_lion_layer_dims){12, 3, 4, 6, 1, 0, 1, 1e-5f, 0}, 1, 11,
            LINA_FORM_CHUNK);
    test_fd("lion T=21 over chunks of 8", (lina_lion_layer_dims){8, 2, 4, 4, 1, 1, 1, 1e-6f, 8}, 1, 21,
            LINA_FORM_CHUNK);
    test_forms();
    test_noncausal();
    test_errors();
    return th_exit();
}
