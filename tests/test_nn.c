/* test_nn.c -- the shared layer blocks (src/nn): every forward against a
 * double-precision reference written here, every backward against central
 * finite differences of that reference; ShortConvolution decode steps and
 * prefill + continue against one full forward; RoPE position offsets;
 * cross-entropy stability and ignored targets; gradient accumulation; and
 * bit-identical parameter gradients for 1 and 2 threads. */
#include "harness.h"
#include "lina.h"
#include "../src/nn/nn.h"
#include "../src/kern/gemm.h"

#include <string.h>

#define FWD_TOL 1e-5
#define GRAD_TOL 2e-5
#define FD_H 1e-6

/* ------------------------------------------------ finite-difference rig */

#define MAXIN 6

typedef struct prob prob;
typedef void (*ref_fn)(const prob *p, double *out);

struct prob {
    int nin;
    const char *names[MAXIN];
    double *in[MAXIN];
    size_t n[MAXIN];
    size_t nout;
    double *dy;     /* cotangent of the output */
    ref_fn ref;
    int dims[8];    /* block-specific sizes */
    double eps;     /* block-specific constant */
    int act;
    const int32_t *ids;
};

static double *dalloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(double));
}

static float *falloc(size_t n)
{
    return calloc(n ? n : 1, sizeof(float));
}

static double *drand(size_t n, double lo, double hi)
{
    double *p = dalloc(n);
    for (size_t i = 0; i < n; i++) {
        p[i] = th_uniform(lo, hi);
    }
    return p;
}

static float *tof(const double *d, size_t n)
{
    float *f = falloc(n);
    for (size_t i = 0; i < n; i++) {
        f[i] = (float)d[i];
    }
    return f;
}

/* round the double inputs to float so the reference sees what the float code sees */
static void round_inputs(prob *p)
{
    for (int k = 0; k < p->nin; k++) {
        for (size_t i = 0; i < p->n[k]; i++) {
            p->in[k][i] = (double)(float)p->in[k][i];
        }
    }
}

static double objective(const prob *p, double *out)
{
    p->ref(p, out);
    double s = 0.0;
    for (size_t i = 0; i < p->nout; i++) {
        s += out[i] * p->dy[i];
    }
    return s;
}

/* central differences of sum(ref(in) * dy) w.r.t. input k */
static double *fd_grad(prob *p, int k)
{
    double *g = dalloc(p->n[k]);
    double *out = dalloc(p->nout);
    for (size_t i = 0; i < p->n[k]; i++) {
        double save = p->in[k][i];
        p->in[k][i] = save + FD_H;
        double lp = objective(p, out);
        p->in[k][i] = save - FD_H;
        double lm = objective(p, out);
        p->in[k][i] = save;
        g[i] = (lp - lm) / (2 * FD_H);
    }
    free(out);
    return g;
}

static void check_fwd(const prob *p, const float *y, const char *what)
{
    double *out = dalloc(p->nout);
    p->ref(p, out);
    double e = th_relerr_fd(y, out, p->nout);
    CHECK(e <= FWD_TOL, "%s forward vs double reference (err %.2e)", what, e);
    free(out);
}

/* compare float gradient g (of input k) against finite differences */
static void check_grad(prob *p, int k, const float *g, const char *what)
{
    double *fd = fd_grad(p, k);
    double e = th_relerr_fd(g, fd, p->n[k]);
    CHECK(e <= GRAD_TOL, "%s d%s vs finite differences (err %.2e)", what, p->names[k], e);
    free(fd);
}

static void prob_free(prob *p)
{
    for (int k = 0; k < p->nin; k++) {
        free(p->in[k]);
    }
    free(p->dy);
}

/* ------------------------------------------------------------ Linear */

static void ref_linear(const prob *p, double *y)
{
    int N = p->dims[0], in = p->dims[1], out = p->dims[2], hasb = p->dims[3];
    const double *x = p->in[0], *W = p->in[1], *b = p->in[2];
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < out; o++) {
            double s = hasb ? b[o] : 0.0;
            for (int i = 0; i < in; i++) {
                s += x[n * in + i] * W[o * in + i];
            }
            y[n * out + o] = s;
        }
    }
}

static void test_linear(int hasb)
{
    int N = 5, in = 7, out = 3;
    prob p = {0};
    p.nin = 3;
    p.names[0] = "x", p.names[1] = "W", p.names[2] = "b";
    p.n[0] = (size_t)N * in, p.n[1] = (size_t)out * in, p.n[2] = (size_t)out;
    for (int k = 0; k < 3; k++) {
        p.in[k] = drand(p.n[k], -1, 1);
    }
    p.nout = (size_t)N * out;
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_linear;
    p.dims[0] = N, p.dims[1] = in, p.dims[2] = out, p.dims[3] = hasb;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *W = tof(p.in[1], p.n[1]), *b = tof(p.in[2], p.n[2]);
    float *dy = tof(p.dy, p.nout), *y = falloc(p.nout);
    float *dx = falloc(p.n[0]), *dW = falloc(p.n[1]), *db = falloc(p.n[2]);
    lina_linear_forward(y, x, W, hasb ? b : NULL, N, in, out);
    const char *what = hasb ? "linear+bias" : "linear";
    check_fwd(&p, y, what);
    lina_linear_backward(dx, dW, hasb ? db : NULL, dy, x, W, N, in, out);
    check_grad(&p, 0, dx, what);
    check_grad(&p, 1, dW, what);
    if (hasb) {
        check_grad(&p, 2, db, what);
        /* a second backward adds */
        float db1[3];
        memcpy(db1, db, sizeof db1);
        lina_linear_backward(NULL, NULL, db, dy, x, W, N, in, out);
        CHECK(fabsf(db[0] - 2 * db1[0]) <= 1e-6f * fabsf(db1[0]) + 1e-7f &&
                  fabsf(db[2] - 2 * db1[2]) <= 1e-6f * fabsf(db1[2]) + 1e-7f,
              "linear backward accumulates into its gradients");
    }
    free(x), free(W), free(b), free(dy), free(y), free(dx), free(dW), free(db);
    prob_free(&p);
}

/* --------------------------------------------------------- Embedding */

static void ref_embedding(const prob *p, double *y)
{
    int N = p->dims[0], D = p->dims[1];
    for (int n = 0; n < N; n++) {
        for (int d = 0; d < D; d++) {
            y[n * D + d] = p->in[0][p->ids[n] * D + d];
        }
    }
}

static void test_embedding(void)
{
    int N = 7, D = 4, V = 5;
    int32_t ids[7] = {3, 0, 3, 4, 1, 3, 0};
    prob p = {0};
    p.nin = 1;
    p.names[0] = "W";
    p.n[0] = (size_t)V * D;
    p.in[0] = drand(p.n[0], -1, 1);
    p.nout = (size_t)N * D;
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_embedding;
    p.dims[0] = N, p.dims[1] = D;
    p.ids = ids;
    round_inputs(&p);
    float *W = tof(p.in[0], p.n[0]), *dy = tof(p.dy, p.nout), *y = falloc(p.nout), *dW = falloc(p.n[0]);
    int rc = lina_embedding_forward(y, ids, W, N, D, V);
    CHECK(rc == 0, "embedding forward");
    check_fwd(&p, y, "embedding");
    lina_embedding_backward(dW, dy, ids, N, D);
    check_grad(&p, 0, dW, "embedding (repeated ids)");
    int32_t bad[2] = {1, 5};
    rc = lina_embedding_forward(y, bad, W, 2, D, V);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "token id 5"), "embedding rejects an id outside the vocabulary (\"%s\")",
          lina_last_error());
    bad[1] = -1;
    rc = lina_embedding_forward(y, bad, W, 2, D, V);
    CHECK(rc == LINA_EINVAL, "embedding rejects a negative id");
    free(W), free(dy), free(y), free(dW);
    prob_free(&p);
}

/* ------------------------------------------------------------ RMSNorm */

/* dims: N, D, has_w, has_b, gated */
static void ref_rmsnorm(const prob *p, double *y)
{
    int N = p->dims[0], D = p->dims[1], hw = p->dims[2], hb = p->dims[3], gated = p->dims[4];
    const double *x = p->in[0], *w = p->in[1], *b = p->in[2], *g = p->in[3];
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < D; i++) {
            ss += x[n * D + i] * x[n * D + i];
        }
        double r = 1.0 / sqrt(ss / D + p->eps);
        for (int i = 0; i < D; i++) {
            double v = x[n * D + i] * r * (hw ? w[i] : 1.0) + (hb ? b[i] : 0.0);
            if (gated) {
                double gv = g[n * D + i];
                v *= gv / (1.0 + exp(-gv));
            }
            y[n * D + i] = v;
        }
    }
}

static void test_rmsnorm_nd(int hw, int hb, int gated, int N, int D)
{
    prob p = {0};
    p.nin = 4;
    p.names[0] = "x", p.names[1] = "w", p.names[2] = "b", p.names[3] = "g";
    p.n[0] = (size_t)N * D, p.n[1] = (size_t)D, p.n[2] = (size_t)D, p.n[3] = (size_t)N * D;
    p.in[0] = drand(p.n[0], -2, 2);
    p.in[1] = drand(p.n[1], 0.5, 1.5);
    p.in[2] = drand(p.n[2], -0.5, 0.5);
    p.in[3] = drand(p.n[3], -3, 3);
    p.nout = (size_t)N * D;
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_rmsnorm;
    p.dims[0] = N, p.dims[1] = D, p.dims[2] = hw, p.dims[3] = hb, p.dims[4] = gated;
    p.eps = 1e-6;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *w = tof(p.in[1], p.n[1]), *b = tof(p.in[2], p.n[2]);
    float *g = tof(p.in[3], p.n[3]), *dy = tof(p.dy, p.nout), *y = falloc(p.nout), *rstd = falloc((size_t)N);
    float *dx = falloc(p.n[0]), *dw = falloc(p.n[1]), *db = falloc(p.n[2]), *dg = falloc(p.n[3]);
    char what[64];
    snprintf(what, sizeof what, "%s%s%s", gated ? "rmsnorm_gated" : "rmsnorm", hw ? "" : " (no weight)",
             hb ? " +bias" : "");
    if (N != 4 || D != 8) {
        snprintf(what + strlen(what), sizeof what - strlen(what), " N=%d D=%d", N, D);
    }
    if (gated) {
        lina_rmsnorm_gated_forward(y, rstd, x, g, hw ? w : NULL, N, D, (float)p.eps);
    } else {
        lina_rmsnorm_forward(y, rstd, x, hw ? w : NULL, hb ? b : NULL, N, D, (float)p.eps);
    }
    check_fwd(&p, y, what);
    if (gated) {
        lina_rmsnorm_gated_backward(dx, dg, dw, dy, x, g, hw ? w : NULL, rstd, N, D);
    } else {
        lina_rmsnorm_backward(dx, dw, hb ? db : NULL, dy, x, hw ? w : NULL, rstd, N, D);
    }
    check_grad(&p, 0, dx, what);
    if (hw) {
        check_grad(&p, 1, dw, what);
    }
    if (hb) {
        check_grad(&p, 2, db, what);
    }
    if (gated) {
        check_grad(&p, 3, dg, what);
    }
    /* the _set forms write dx (and dg) over what was there: the same bits as accumulating
     * from zero (dw and db still accumulate: onto a copy of the first call's) */
    {
        float *sx = falloc(p.n[0]), *sg = falloc(p.n[3]), *sw = falloc(p.n[1]), *sb = falloc(p.n[2]);
        for (size_t i = 0; i < p.n[0]; i++) {
            sx[i] = 7777.0f;
            sg[i] = -7777.0f;
        }
        if (gated) {
            lina_rmsnorm_gated_backward_set(sx, sg, sw, dy, x, g, hw ? w : NULL, rstd, N, D);
        } else {
            lina_rmsnorm_backward_set(sx, sw, hb ? sb : NULL, dy, x, hw ? w : NULL, rstd, N, D);
        }
        int same = memcmp(sx, dx, p.n[0] * sizeof(float)) == 0 && (!gated || memcmp(sg, dg, p.n[3] * sizeof(float)) == 0) &&
                   (!hw || memcmp(sw, dw, p.n[1] * sizeof(float)) == 0) &&
                   (gated || !hb || memcmp(sb, db, p.n[2] * sizeof(float)) == 0);
        CHECK(same, "%s: the _set backward writes the accumulating one's gradients over 7777s, bit for bit", what);
        free(sx), free(sg), free(sw), free(sb);
    }
    /* in place: y aliases x */
    if (!gated) {
        float *xx = tof(p.in[0], p.n[0]);
        lina_rmsnorm_forward(xx, NULL, xx, hw ? w : NULL, hb ? b : NULL, N, D, (float)p.eps);
        CHECK(memcmp(xx, y, p.nout * sizeof(float)) == 0, "%s in place equals out of place", what);
        free(xx);
    }
    free(x), free(w), free(b), free(g), free(dy), free(y), free(rstd), free(dx), free(dw), free(db), free(dg);
    prob_free(&p);
}

static void test_rmsnorm(int hw, int hb, int gated)
{
    test_rmsnorm_nd(hw, hb, gated, 4, 8);
}

/* ------------------------------------------------------------- L2Norm */

static void ref_l2norm(const prob *p, double *y)
{
    int N = p->dims[0], D = p->dims[1];
    const double *x = p->in[0];
    for (int n = 0; n < N; n++) {
        double ss = 0;
        for (int i = 0; i < D; i++) {
            ss += x[n * D + i] * x[n * D + i];
        }
        for (int i = 0; i < D; i++) {
            y[n * D + i] = x[n * D + i] / sqrt(ss + p->eps);
        }
    }
}

static void test_l2norm(void)
{
    int N = 5, D = 6;
    prob p = {0};
    p.nin = 1;
    p.names[0] = "x";
    p.n[0] = (size_t)N * D;
    p.in[0] = drand(p.n[0], -2, 2);
    p.nout = p.n[0];
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_l2norm;
    p.dims[0] = N, p.dims[1] = D;
    p.eps = 1e-6;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *dy = tof(p.dy, p.nout), *y = falloc(p.nout), *r = falloc((size_t)N);
    float *dx = falloc(p.n[0]);
    lina_l2norm_forward(y, r, x, N, D, 1e-6f);
    check_fwd(&p, y, "l2norm");
    lina_l2norm_backward(dx, dy, y, r, N, D);
    check_grad(&p, 0, dx, "l2norm");
    free(x), free(dy), free(y), free(r), free(dx);
    prob_free(&p);
}

/* ------------------------------------------------------ SiLU, SwiGLU */

static void ref_swiglu(const prob *p, double *y)
{
    size_t n = p->n[0];
    for (size_t i = 0; i < n; i++) {
        double g = p->in[0][i];
        y[i] = g / (1.0 + exp(-g)) * (p->dims[0] ? p->in[1][i] : 1.0);
    }
}

/* lina_vsigmoid / lina_vlogsigmoid against the double functions, relative
 * error (a few ulps of the vector exp), over the whole float range (saturated
 * tails, tiny and huge |x|, the block boundary at 256), in place as well */
static void test_vsigmoid(void)
{
    enum { n = 777 };
    float *x = falloc(n), *s = falloc(n), *l = falloc(n);
    for (int i = 0; i < n; i++) {
        double u = th_uniform(0, 1);
        x[i] = (float)(i % 3 == 0 ? th_uniform(-30, 30) : (i % 3 == 1 ? th_uniform(-1, 1) * pow(10.0, -8 + 10 * u)
                                                                          : th_uniform(-120, 120)));
    }
    x[0] = 0.0f, x[1] = 1e-30f, x[2] = -1e-30f, x[3] = 88.0f, x[4] = -88.0f, x[5] = 3e38f, x[6] = -3e38f;
    lina_vsigmoid(s, x, n);
    lina_vlogsigmoid(l, x, n);
    double es = 0.0, el = 0.0;
    for (int i = 0; i < n; i++) {
        double xd = x[i], sd = 1.0 / (1.0 + exp(-xd));
        double ld = xd < 0 ? xd - log1p(exp(xd)) : -log1p(exp(-xd));
        /* relative error, down to 1e-30 (below, float results go denormal or 0) */
        es = fmax(es, fabs(s[i] - sd) / fmax(sd, 1e-30));
        el = fmax(el, fabs(l[i] - ld) / fmax(fabs(ld), 1e-30));
    }
    CHECK(es <= 1e-6, "vsigmoid vs double (max rel err %.2e)", es);
    CHECK(el <= 1e-6, "vlogsigmoid vs double (max rel err %.2e)", el);
    memcpy(s, x, n * sizeof(float));
    lina_vsigmoid(s, s, n);
    memcpy(l, x, n * sizeof(float));
    lina_vlogsigmoid(l, l, n);
    float *s2 = falloc(n), *l2 = falloc(n);
    lina_vsigmoid(s2, x, n);
    lina_vlogsigmoid(l2, x, n);
    CHECK(memcmp(s, s2, n * sizeof(float)) == 0 && memcmp(l, l2, n * sizeof(float)) == 0,
          "vsigmoid / vlogsigmoid in place give the same values");
    /* NaN propagates, in a full vector and in the tail */
    for (int i = 0; i < 20; i++) {
        x[i] = i == 3 || i == 18 ? NAN : 0.5f;
    }
    lina_vlogsigmoid(l, x, 20);
    CHECK(isnan(l[3]) && isnan(l[18]) && fabsf(l[0] - (float)(-log1p(exp(-0.5)))) < 1e-6f,
          "vlogsigmoid: NaN in, NaN out (%g, %g)", l[3], l[18]);
    free(x), free(s), free(l), free(s2), free(l2);
}

/* n = 40 within one block of the vectorised loops, 600 over three, the last partial */
static void test_silu_swiglu(size_t n)
{
    for (int glu = 0; glu < 2; glu++) {
        prob p = {0};
        p.nin = 2; /* up is unused by silu */
        p.names[0] = "gate", p.names[1] = "up";
        p.n[0] = p.n[1] = n;
        p.in[0] = drand(n, -8, 8);
        p.in[1] = drand(n, -2, 2);
        p.nout = n;
        p.dy = drand(n, -1, 1);
        p.ref = ref_swiglu;
        p.dims[0] = glu;
        round_inputs(&p);
        float *g = tof(p.in[0], n), *u = tof(p.in[1], n), *dy = tof(p.dy, n), *y = falloc(n);
        float *dg = falloc(n), *du = falloc(n);
        if (glu) {
            lina_swiglu_forward(y, g, u, n);
            check_fwd(&p, y, "swiglu");
            lina_swiglu_backward(dg, du, dy, g, u, n);
            check_grad(&p, 0, dg, "swiglu");
            check_grad(&p, 1, du, "swiglu");
        } else {
            lina_silu_forward(y, g, n);
            check_fwd(&p, y, "silu");
            lina_silu_backward(dg, dy, g, n);
            check_grad(&p, 0, dg, "silu");
        }
        free(g), free(u), free(dy), free(y), free(dg), free(du);
        prob_free(&p);
    }
}

/* ---------------------------------------------------------- GatedMLP */

static void ref_mlp(const prob *p, double *y)
{
    int N = p->dims[0], D = p->dims[1], I = p->dims[2];
    const double *x = p->in[0], *Wg = p->in[1], *Wu = p->in[2], *Wd = p->in[3];
    double *h = dalloc((size_t)I);
    for (int n = 0; n < N; n++) {
        for (int i = 0; i < I; i++) {
            double g = 0, u = 0;
            for (int d = 0; d < D; d++) {
                g += Wg[i * D + d] * x[n * D + d];
                u += Wu[i * D + d] * x[n * D + d];
            }
            h[i] = g / (1.0 + exp(-g)) * u;
        }
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int i = 0; i < I; i++) {
                s += Wd[d * I + i] * h[i];
            }
            y[n * D + d] = s;
        }
    }
    free(h);
}

static void test_mlp(void)
{
    int N = 3, D = 5, I = 7;
    prob p = {0};
    p.nin = 4;
    p.names[0] = "x", p.names[1] = "Wg", p.names[2] = "Wu", p.names[3] = "Wd";
    p.n[0] = (size_t)N * D, p.n[1] = p.n[2] = (size_t)I * D, p.n[3] = (size_t)D * I;
    for (int k = 0; k < 4; k++) {
        p.in[k] = drand(p.n[k], -1, 1);
    }
    p.nout = (size_t)N * D;
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_mlp;
    p.dims[0] = N, p.dims[1] = D, p.dims[2] = I;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *Wg = tof(p.in[1], p.n[1]), *Wu = tof(p.in[2], p.n[2]);
    float *Wd = tof(p.in[3], p.n[3]), *dy = tof(p.dy, p.nout), *y = falloc(p.nout);
    size_t ni = (size_t)N * I;
    float *gate = falloc(ni), *up = falloc(ni), *h = falloc(ni);
    float *dx = falloc(p.n[0]), *dWg = falloc(p.n[1]), *dWu = falloc(p.n[2]), *dWd = falloc(p.n[3]);
    lina_gated_mlp_forward(y, gate, up, h, x, Wg, Wu, Wd, N, D, I);
    check_fwd(&p, y, "gated_mlp");
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = lina_gated_mlp_backward(dx, dWg, dWu, dWd, dy, x, gate, up, h, Wg, Wu, Wd, N, D, I, &ws);
    CHECK(rc == 0, "gated_mlp backward");
    check_grad(&p, 0, dx, "gated_mlp");
    check_grad(&p, 1, dWg, "gated_mlp");
    check_grad(&p, 2, dWu, "gated_mlp");
    check_grad(&p, 3, dWd, "gated_mlp");
    /* without a workspace, only some gradients */
    float *dx2 = falloc(p.n[0]);
    rc = lina_gated_mlp_backward(dx2, NULL, NULL, NULL, dy, x, gate, up, h, Wg, Wu, Wd, N, D, I, NULL);
    CHECK(rc == 0 && memcmp(dx, dx2, p.n[0] * sizeof(float)) == 0, "gated_mlp backward with ws NULL, dx only");
    lina_ws_free(&ws);
    CHECK(lina_mlp_width(2048, 4, 0) == 5632 && lina_mlp_width(1024, 4, 0) == 2816 &&
              lina_mlp_width(2048, 2, 0) == 2816 && lina_mlp_width(2048, 0, 0) == 5632 &&
              lina_mlp_width(2048, 4, 1000) == 1000,
          "FLA intermediate-size rule (5632, 2816, 2816; null ratio = 4; explicit size wins)");
    free(x), free(Wg), free(Wu), free(Wd), free(dy), free(y), free(gate), free(up), free(h);
    free(dx), free(dWg), free(dWu), free(dWd), free(dx2);
    prob_free(&p);
}

/* ---------------------------------------------------- ShortConvolution */

/* dims: B, T, C, W, has_bias, has_cache; act */
static void ref_conv(const prob *p, double *y)
{
    int B = p->dims[0], T = p->dims[1], C = p->dims[2], W = p->dims[3], hb = p->dims[4], hc = p->dims[5];
    const double *x = p->in[0], *w = p->in[1], *bias = p->in[2], *cache = p->in[3];
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int c = 0; c < C; c++) {
                double s = hb ? bias[c] : 0.0;
                for (int j = 0; j < W; j++) {
                    int tau = t - W + 1 + j; /* 0-based input time; < 0 reads the cache */
                    double v;
                    if (tau >= 0) {
                        v = x[((size_t)b * T + tau) * C + c];
                    } else {
                        v = hc ? cache[((size_t)b * C + c) * W + (W + tau)] : 0.0;
                    }
                    s += w[c * W + j] * v;
                }
                y[((size_t)b * T + t) * C + c] = p->act ? s / (1.0 + exp(-s)) : s;
            }
        }
    }
}

static void test_conv_grad_c(int T, int hb, int hc, int act, int C)
{
    int B = 2, W = 4;
    prob p = {0};
    p.nin = 4;
    p.names[0] = "x", p.names[1] = "w", p.names[2] = "bias", p.names[3] = "cache";
    p.n[0] = (size_t)B * T * C, p.n[1] = (size_t)C * W, p.n[2] = (size_t)C, p.n[3] = (size_t)B * C * W;
    p.in[0] = drand(p.n[0], -2, 2);
    p.in[1] = drand(p.n[1], -1, 1);
    p.in[2] = drand(p.n[2], -0.5, 0.5);
    p.in[3] = drand(p.n[3], -2, 2);
    p.nout = p.n[0];
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_conv;
    p.dims[0] = B, p.dims[1] = T, p.dims[2] = C, p.dims[3] = W, p.dims[4] = hb, p.dims[5] = hc;
    p.act = act;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *w = tof(p.in[1], p.n[1]), *bias = tof(p.in[2], p.n[2]);
    float *cache = tof(p.in[3], p.n[3]), *dy = tof(p.dy, p.nout), *y = falloc(p.nout);
    float *dx = falloc(p.n[0]), *dw = falloc(p.n[1]), *db = falloc(p.n[2]), *dc = falloc(p.n[3]);
    lina_act a = act ? LINA_ACT_SILU : LINA_ACT_NONE;
    char what[96];
    snprintf(what, sizeof what, "shortconv C=%d T=%d%s%s%s", C, T, hb ? " bias" : "", hc ? " cache" : "",
             act ? " silu" : "");
    lina_shortconv_forward(y, x, w, hb ? bias : NULL, hc ? cache : NULL, NULL, B, T, C, W, a);
    check_fwd(&p, y, what);
    lina_shortconv_backward(dx, dw, hb ? db : NULL, hc ? dc : NULL, dy, x, w, hb ? bias : NULL, hc ? cache : NULL,
                            B, T, C, W, a);
    check_grad(&p, 0, dx, what);
    check_grad(&p, 1, dw, what);
    if (hb) {
        check_grad(&p, 2, db, what);
    }
    if (hc) {
        check_grad(&p, 3, dc, what);
    }
    free(x), free(w), free(bias), free(cache), free(dy), free(y), free(dx), free(dw), free(db), free(dc);
    prob_free(&p);
}

static void test_conv_grad(int T, int hb, int hc, int act)
{
    test_conv_grad_c(T, hb, hc, act, 5);
}

/* lina_linear_backward_set writes dx without reading it (NaN there stays out of the
 * result, on the small-product path and on the layer GEMM's): the same bits as the
 * accumulating form from zero, and the same weight and bias gradients */
static void test_linear_bwd_set(void)
{
    int ok = 1;
    const int shapes[3][3] = {{3, 17, 5}, {300, 37, 11}, {4096, 64, 96}};
    for (int si = 0; si < 3; si++) {
        const int N = shapes[si][0], in = shapes[si][1], out = shapes[si][2];
        float *x = falloc((size_t)N * in), *W = falloc((size_t)out * in), *dy = falloc((size_t)N * out);
        float *dx1 = falloc((size_t)N * in), *dx2 = falloc((size_t)N * in);
        float *dW1 = falloc((size_t)out * in), *dW2 = falloc((size_t)out * in), *db1 = falloc((size_t)out),
              *db2 = falloc((size_t)out);
        for (size_t i = 0; i < (size_t)N * in; i++) {
            x[i] = (float)th_uniform(-1, 1);
            dx2[i] = NAN;
        }
        for (size_t i = 0; i < (size_t)out * in; i++) {
            W[i] = (float)th_uniform(-1, 1);
        }
        for (size_t i = 0; i < (size_t)N * out; i++) {
            dy[i] = (float)th_uniform(-1, 1);
        }
        lina_linear_backward(dx1, dW1, db1, dy, x, W, N, in, out);
        lina_linear_backward_set(dx2, dW2, db2, dy, x, W, N, in, out);
        ok &= memcmp(dx1, dx2, (size_t)N * in * sizeof(float)) == 0 &&
              memcmp(dW1, dW2, (size_t)out * in * sizeof(float)) == 0 && memcmp(db1, db2, (size_t)out * sizeof(float)) == 0;
        free(x), free(W), free(dy), free(dx1), free(dx2), free(dW1), free(dW2), free(db1), free(db2);
    }
    CHECK(ok, "linear backward with dx written (over NaN) = accumulated from zero, bit for bit (N 3, 300, 4096)");
}

/* the _ld backward with dx_set writes dx over what was there (rows lddx apart, the
 * columns after C untouched): the same bits as accumulating from zero; W 4 (the
 * channels-inner loops) and W 10 (the per-channel ones) */
static void test_conv_bwd_set(void)
{
    int ok = 1;
    const int Ws[2] = {4, 10};
    for (int wi = 0; wi < 2; wi++) {
        const int B = 2, T = 13, C = 37, W = Ws[wi], ld = C + 3;
        const size_t n = (size_t)B * T * C;
        float *x = falloc(n), *w = falloc((size_t)C * W), *dy = falloc(n), *dx = falloc(n);
        float *dxs = falloc((size_t)B * T * ld), *dw1 = falloc((size_t)C * W), *dw2 = falloc((size_t)C * W);
        for (size_t i = 0; i < n; i++) {
            x[i] = (float)th_uniform(-2, 2);
            dy[i] = (float)th_uniform(-1, 1);
        }
        for (int i = 0; i < C * W; i++) {
            w[i] = (float)th_uniform(-1, 1);
        }
        for (size_t i = 0; i < (size_t)B * T * ld; i++) {
            dxs[i] = 7777.0f;
        }
        lina_shortconv_backward(dx, dw1, NULL, NULL, dy, x, w, NULL, NULL, B, T, C, W, LINA_ACT_SILU);
        lina_shortconv_backward_ld(dxs, (size_t)ld, 1, dw2, NULL, NULL, dy, x, (size_t)C, w, NULL, NULL, B, T, C, W,
                                   LINA_ACT_SILU);
        for (int r = 0; r < B * T; r++) {
            ok &= memcmp(dxs + (size_t)r * ld, dx + (size_t)r * C, (size_t)C * sizeof(float)) == 0;
            for (int c = C; c < ld; c++) {
                ok &= dxs[(size_t)r * ld + c] == 7777.0f;
            }
        }
        ok &= memcmp(dw1, dw2, (size_t)C * W * sizeof(float)) == 0;
        free(x), free(w), free(dy), free(dx), free(dxs), free(dw1), free(dw2);
    }
    CHECK(ok, "shortconv backward with dx written (rows 3 floats apart, over 7777s) = accumulated from zero, "
              "bit for bit, W 4 and 10; the padding untouched");
}

/* decode steps and prefill + continue equal one full forward */
static void test_conv_decode_c(int C)
{
    int B = 2, T = 11, W = 4;
    size_t n = (size_t)B * T * C;
    float *x = falloc(n), *w = falloc((size_t)C * W), *bias = falloc((size_t)C);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)th_uniform(-2, 2);
    }
    for (int i = 0; i < C * W; i++) {
        w[i] = (float)th_uniform(-1, 1);
    }
    for (int i = 0; i < C; i++) {
        bias[i] = (float)th_uniform(-0.5, 0.5);
    }
    float *yfull = falloc(n), *ystep = falloc(n), *ypre = falloc(n);
    float *cache = falloc((size_t)B * C * W), *cfull = falloc((size_t)B * C * W);
    lina_shortconv_forward(yfull, x, w, bias, NULL, cfull, B, T, C, W, LINA_ACT_SILU);
    /* one token at a time from an empty cache */
    float *xt = falloc((size_t)B * C), *yt = falloc((size_t)B * C);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {
            memcpy(xt + (size_t)b * C, x + ((size_t)b * T + t) * C, (size_t)C * sizeof(float));
        }
        lina_shortconv_step(yt, xt, w, bias, cache, B, C, W, LINA_ACT_SILU);
        for (int b = 0; b < B; b++) {
            memcpy(ystep + ((size_t)b * T + t) * C, yt + (size_t)b * C, (size_t)C * sizeof(float));
        }
    }
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)ystep[i] - yfull[i]));
    }
    CHECK(e <= 1e-6, "shortconv C=%d: %d decode steps equal the full forward (max diff %.1e)", C, T, e);
    CHECK(memcmp(cache, cfull, (size_t)B * C * W * sizeof(float)) == 0,
          "shortconv C=%d: step cache equals cache_out of the full forward", C);
    /* the cache holds the last W inputs, oldest first */
    int last_ok = 1;
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) {
            for (int j = 0; j < W; j++) {
                last_ok &= cfull[((size_t)b * C + c) * W + j] == x[((size_t)b * T + (T - W + j)) * C + c];
            }
        }
    }
    CHECK(last_ok, "shortconv C=%d: cache_out = last W inputs, oldest first", C);
    /* prefill T1 tokens (T1 < W and T1 >= W), then continue with the cache,
     * updated in place (cache_out aliasing cache) */
    int splits[3] = {2, 5, 1};
    for (int si = 0; si < 3; si++) {
        int T1 = splits[si], T2 = T - T1;
        float *x1 = falloc((size_t)B * T1 * C), *x2 = falloc((size_t)B * T2 * C);
        float *y1 = falloc((size_t)B * T1 * C), *y2 = falloc((size_t)B * T2 * C);
        for (int b = 0; b < B; b++) {
            memcpy(x1 + (size_t)b * T1 * C, x + (size_t)b * T * C, (size_t)T1 * C * sizeof(float));
            memcpy(x2 + (size_t)b * T2 * C, x + ((size_t)b * T + T1) * C, (size_t)T2 * C * sizeof(float));
        }
        memset(cache, 0, (size_t)B * C * W * sizeof(float));
        lina_shortconv_forward(y1, x1, w, bias, NULL, cache, B, T1, C, W, LINA_ACT_SILU);
        lina_shortconv_forward(y2, x2, w, bias, cache, cache, B, T2, C, W, LINA_ACT_SILU);
        for (int b = 0; b < B; b++) {
            memcpy(ypre + (size_t)b * T * C, y1 + (size_t)b * T1 * C, (size_t)T1 * C * sizeof(float));
            memcpy(ypre + ((size_t)b * T + T1) * C, y2 + (size_t)b * T2 * C, (size_t)T2 * C * sizeof(float));
        }
        e = 0;
        for (size_t i = 0; i < n; i++) {
            e = fmax(e, fabs((double)ypre[i] - yfull[i]));
        }
        CHECK(e <= 1e-6 && memcmp(cache, cfull, (size_t)B * C * W * sizeof(float)) == 0,
              "shortconv C=%d: prefill %d + continue %d (in-place cache) equals the full forward (max diff %.1e)", C,
              T1, T2, e);
        free(x1), free(x2), free(y1), free(y2);
    }
    free(x), free(w), free(bias), free(yfull), free(ystep), free(ypre), free(cache), free(cfull), free(xt), free(yt);
}

/* C = 6: the row-major loops only; C = 37: whole vectors of channels down the rows
 * (conv4v_*, W = 4) and a tail of channels in the row-major loops */
static void test_conv_decode(void)
{
    test_conv_decode_c(6);
    test_conv_decode_c(37);
}

/* The first 5 of 37 channels (whole vectors, conv4v_*) give the same bits as the same 5
 * channels alone (the row-major loops): forward, cache_out and every gradient, with and
 * without the SiLU, T 23 (past the prefetch distance) and T 2 (every row reads the cache) */
static void test_conv_vec_same(void)
{
    const int B = 2, W = 4, CW = 37, CN = 5;
    int ok = 1;
    for (int ci = 0; ci < 4; ci++) {
        const int T = ci < 2 ? 23 : 2;
        const lina_act act = ci % 2 ? LINA_ACT_NONE : LINA_ACT_SILU;
        const int Cs[2] = {CW, CN};
        float *out[2][7];
        float *x = falloc((size_t)B * T * CW), *w = falloc((size_t)CW * W), *bias = falloc((size_t)CW);
        float *cache = falloc((size_t)B * CW * W), *dy = falloc((size_t)B * T * CW);
        for (size_t i = 0; i < (size_t)B * T * CW; i++) {
            x[i] = (float)th_uniform(-2, 2);
            dy[i] = (float)th_uniform(-1, 1);
        }
        for (int i = 0; i < CW * W; i++) {
            w[i] = (float)th_uniform(-1, 1);
        }
        for (int i = 0; i < CW; i++) {
            bias[i] = (float)th_uniform(-0.5, 0.5);
        }
        for (int i = 0; i < B * CW * W; i++) {
            cache[i] = (float)th_uniform(-2, 2);
        }
        for (int r = 0; r < 2; r++) {
            const int C = Cs[r];
            const size_t n = (size_t)B * T * C;
            float *xs = falloc(n), *dys = falloc(n), *cs = falloc((size_t)B * C * W);
            for (size_t i = 0; i < (size_t)B * T; i++) {
                memcpy(xs + i * C, x + i * CW, (size_t)C * sizeof(float));
                memcpy(dys + i * C, dy + i * CW, (size_t)C * sizeof(float));
            }
            for (int b = 0; b < B; b++) {
                memcpy(cs + (size_t)b * C * W, cache + (size_t)b * CW * W, (size_t)C * W * sizeof(float));
            }
            float *y = falloc(n), *co = falloc((size_t)B * C * W), *dx = falloc(n), *dw = falloc((size_t)C * W);
            float *db = falloc((size_t)C), *dc = falloc((size_t)B * C * W);
            lina_shortconv_forward(y, xs, w, bias, cs, co, B, T, C, W, act);
            lina_shortconv_backward(dx, dw, db, dc, dys, xs, w, bias, cs, B, T, C, W, act);
            float *o[7] = {y, co, dx, dw, db, dc, NULL};
            memcpy(out[r], o, sizeof o);
            free(xs), free(dys), free(cs);
        }
        for (size_t i = 0; i < (size_t)B * T; i++) {
            ok &= memcmp(out[0][0] + i * CW, out[1][0] + i * CN, CN * sizeof(float)) == 0;
            ok &= memcmp(out[0][2] + i * CW, out[1][2] + i * CN, CN * sizeof(float)) == 0;
        }
        for (int b = 0; b < B; b++) {
            ok &= memcmp(out[0][1] + (size_t)b * CW * W, out[1][1] + (size_t)b * CN * W, CN * W * sizeof(float)) == 0;
            ok &= memcmp(out[0][5] + (size_t)b * CW * W, out[1][5] + (size_t)b * CN * W, CN * W * sizeof(float)) == 0;
        }
        ok &= memcmp(out[0][3], out[1][3], CN * W * sizeof(float)) == 0;
        ok &= memcmp(out[0][4], out[1][4], CN * sizeof(float)) == 0;
        for (int r = 0; r < 2; r++) {
            for (int i = 0; i < 6; i++) {
                free(out[r][i]);
            }
        }
        free(x), free(w), free(bias), free(cache), free(dy);
    }
    CHECK(ok, "shortconv: 5 channels within 37 (vector columns) = the same 5 alone (row-major loops), bit for bit: "
              "y, cache_out, dx, dw, dbias, dcache; SiLU and none; T 23 and 2");
}

/* --------------------------------------------------------------- RoPE */

/* dims: B, T, H, d, pos0 */
static void ref_rope(const prob *p, double *y)
{
    int B = p->dims[0], T = p->dims[1], H = p->dims[2], d = p->dims[3], pos0 = p->dims[4];
    const double *x = p->in[0];
    int h2 = d / 2;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                size_t o = (((size_t)b * T + t) * H + h) * d;
                for (int i = 0; i < h2; i++) {
                    double th = pow(p->eps, -2.0 * i / d), a = (pos0 + t) * th;
                    y[o + i] = x[o + i] * cos(a) - x[o + i + h2] * sin(a);
                    y[o + i + h2] = x[o + i + h2] * cos(a) + x[o + i] * sin(a);
                }
            }
        }
    }
}

/* fd: the gradient against finite differences too (the backward is the same loop
 * rotating the other way; checked below as the forward's inverse at any size) */
static void test_rope(int T, int H, int d, int fd)
{
    int B = 2, pos0 = 3;
    prob p = {0};
    p.nin = 1;
    p.names[0] = "x";
    p.n[0] = (size_t)B * T * H * d;
    p.in[0] = drand(p.n[0], -1, 1);
    p.nout = p.n[0];
    p.dy = drand(p.nout, -1, 1);
    p.ref = ref_rope;
    p.dims[0] = B, p.dims[1] = T, p.dims[2] = H, p.dims[3] = d, p.dims[4] = pos0;
    p.eps = 10000.0; /* base */
    round_inputs(&p);
    size_t n = p.n[0];
    float *x = tof(p.in[0], n), *dy = tof(p.dy, n), *y = falloc(n), *dx = falloc(n);
    int rc = lina_rope_forward(y, x, B, T, H, d, pos0, 10000.0);
    CHECK(rc == 0, "rope forward");
    char what[64];
    snprintf(what, sizeof what, "rope (offset 3, T %d, d %d)", T, d);
    check_fwd(&p, y, what);
    if (fd) {
        rc = lina_rope_backward(dx, dy, B, T, H, d, pos0, 10000.0);
        check_grad(&p, 0, dx, what);
    }
    /* in place, and backward undoes forward */
    float *z = tof(p.in[0], n);
    lina_rope_forward(z, z, B, T, H, d, pos0, 10000.0);
    int inplace = memcmp(z, y, n * sizeof(float)) == 0;
    lina_rope_backward(z, z, B, T, H, d, pos0, 10000.0);
    double e = 0;
    for (size_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)z[i] - x[i]));
    }
    CHECK(inplace && e <= 1e-6, "rope in place; backward inverts forward (%.1e)", e);
    /* decode: token t alone at offset pos0 + t equals the full-sequence forward */
    int same = 1;
    float *one = falloc((size_t)H * d);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            size_t o = (((size_t)b * T + t) * H) * d;
            lina_rope_forward(one, x + o, 1, 1, H, d, pos0 + t, 10000.0);
            same &= memcmp(one, y + o, (size_t)H * d * sizeof(float)) == 0;
        }
    }
    CHECK(same, "rope: one token at offset pos0+t equals the full-sequence forward");
    /* relative positions: <R_m q, R_n k> depends on m - n only */
    int dd = 64;
    float *q = falloc((size_t)dd), *k = falloc((size_t)dd), *qa = falloc((size_t)dd), *ka = falloc((size_t)dd);
    for (int i = 0; i < dd; i++) {
        q[i] = (float)th_uniform(-1, 1);
        k[i] = (float)th_uniform(-1, 1);
    }
    double dots[2];
    int64_t shifts[2] = {0, 1000};
    for (int s = 0; s < 2; s++) {
        lina_rope_forward(qa, q, 1, 1, 1, dd, 17 + shifts[s], 10000.0);
        lina_rope_forward(ka, k, 1, 1, 1, dd, 5 + shifts[s], 10000.0);
        dots[s] = 0;
        for (int i = 0; i < dd; i++) {
            dots[s] += (double)qa[i] * ka[i];
        }
    }
    CHECK(fabs(dots[0] - dots[1]) <= 1e-4, "rope: q.k depends on the relative position only (%.2e)",
          fabs(dots[0] - dots[1]));
    rc = lina_rope_forward(y, x, 1, 1, 1, 7, 0, 10000.0);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "even"), "rope rejects an odd head dim");
    free(x), free(dy), free(y), free(dx), free(z), free(one), free(q), free(k), free(qa), free(ka);
    prob_free(&p);
}

/* ------------------------------------------------------ cross-entropy */

static void ref_ce(const prob *p, double *loss)
{
    int N = p->dims[0], V = p->dims[1];
    const double *x = p->in[0];
    double tot = 0;
    int cnt = 0;
    for (int n = 0; n < N; n++) {
        if (p->ids[n] == LINA_IGNORE_INDEX) {
            continue;
        }
        double m = x[n * V];
        for (int v = 1; v < V; v++) {
            m = fmax(m, x[n * V + v]);
        }
        double s = 0;
        for (int v = 0; v < V; v++) {
            s += exp(x[n * V + v] - m);
        }
        tot += m + log(s) - x[n * V + p->ids[n]];
        cnt++;
    }
    loss[0] = cnt ? tot / cnt : 0.0;
}

static void test_cross_entropy(void)
{
    int N = 6, V = 9;
    int32_t tg[6] = {2, 0, LINA_IGNORE_INDEX, 8, 8, 5};
    prob p = {0};
    p.nin = 1;
    p.names[0] = "logits";
    p.n[0] = (size_t)N * V;
    p.in[0] = drand(p.n[0], -4, 4);
    p.nout = 1;
    p.dy = dalloc(1);
    p.dy[0] = 0.75; /* dloss */
    p.ref = ref_ce;
    p.dims[0] = N, p.dims[1] = V;
    p.ids = tg;
    round_inputs(&p);
    float *x = tof(p.in[0], p.n[0]), *lse = falloc((size_t)N), *dl = falloc(p.n[0]);
    double loss, ref;
    int64_t cnt;
    int rc = lina_cross_entropy_forward(&loss, &cnt, lse, x, tg, N, V);
    ref_ce(&p, &ref);
    CHECK(rc == 0 && cnt == 5 && fabs(loss - ref) <= 1e-6 * fabs(ref), "cross-entropy loss %.9f vs reference %.9f (5 of 6 counted)",
          loss, ref);
    lina_cross_entropy_backward(dl, x, lse, tg, N, V, 0.75f, cnt);
    check_grad(&p, 0, dl, "cross-entropy");
    int zero_row = 1;
    for (int v = 0; v < V; v++) {
        zero_row &= dl[2 * V + v] == 0.0f;
    }
    CHECK(zero_row, "cross-entropy: ignored row has zero gradient");
    /* in place */
    float *xx = tof(p.in[0], p.n[0]);
    lina_cross_entropy_backward(xx, xx, lse, tg, N, V, 0.75f, cnt);
    CHECK(memcmp(xx, dl, p.n[0] * sizeof(float)) == 0, "cross-entropy backward in place");
    /* large logits: shift invariance, no overflow */
    float *big = falloc(p.n[0]);
    for (size_t i = 0; i < p.n[0]; i++) {
        big[i] = x[i] + 3.0e4f;
    }
    double lb;
    rc = lina_cross_entropy_forward(&lb, &cnt, lse, big, tg, N, V);
    CHECK(rc == 0 && isfinite(lb) && fabs(lb - ref) <= 2e-2, "cross-entropy stable for logits near 3e4 (%.6f vs %.6f)", lb, ref);
    /* everything ignored */
    int32_t ign[2] = {LINA_IGNORE_INDEX, LINA_IGNORE_INDEX};
    rc = lina_cross_entropy_forward(&lb, &cnt, lse, x, ign, 2, V);
    lina_cross_entropy_backward(dl, x, lse, ign, 2, V, 1.0f, cnt);
    CHECK(rc == 0 && lb == 0.0 && cnt == 0 && dl[0] == 0.0f && dl[V + 1] == 0.0f, "cross-entropy with no counted token: 0, zero gradient");
    int32_t bad[1] = {9};
    rc = lina_cross_entropy_forward(&lb, &cnt, lse, x, bad, 1, V);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "target 9"), "cross-entropy rejects target 9 of V=9");
    free(x), free(lse), free(dl), free(xx), free(big);
    prob_free(&p);
}

/* the row maximum over 16 lanes and a remainder: one logit of 120 (exp(120)
 * overflows float, so a wrong maximum gives an infinite log-sum-exp) at the first,
 * a middle, a lane-block boundary and the last positions of a 37-wide row */
static void test_cross_entropy_max(void)
{
    const int V = 37, pos[5] = {0, 7, 16, 32, 36};
    float x[5 * 37], lse[5];
    int32_t tg[5];
    for (int n = 0; n < 5; n++) {
        for (int v = 0; v < V; v++) {
            x[n * V + v] = (float)th_uniform(-3, 3);
        }
        x[n * V + pos[n]] = 120.0f;
        tg[n] = (n * 11) % V;
    }
    double loss;
    int64_t cnt;
    int rc = lina_cross_entropy_forward(&loss, &cnt, lse, x, tg, 5, V), ok = rc == 0;
    double worst = 0.0;
    for (int n = 0; n < 5; n++) {
        double s = 0.0;
        for (int v = 0; v < V; v++) {
            s += exp((double)x[n * V + v] - 120.0);
        }
        double ref = 120.0 + log(s);
        worst = fmax(worst, fabs((double)lse[n] - ref) / ref);
        ok &= isfinite(lse[n]);
    }
    CHECK(ok && worst <= 1e-6, "cross-entropy: the row maximum found at positions 0, 7, 16, 32, 36 of 37 (lse rel err %.1e)",
          worst);
}

/* the fused loss + gradient against the two calls: the same loss, count, lse and dlogits,
 * bit for bit, on 1 and 2 threads; ignored rows; rows narrower and wider than the stack
 * buffer (V 37 and 5000); a bad target is refused */
static void test_cross_entropy_fused(void)
{
    const int Vs[2] = {37, 5000}, N = 67;
    int ok = 1;
    for (int iv = 0; iv < 2; iv++) {
        const int V = Vs[iv];
        const size_t nv = (size_t)N * V;
        float *x = falloc(nv), *d1 = falloc(nv), *d2 = falloc(nv), *l1 = falloc((size_t)N), *l2 = falloc((size_t)N);
        float *tl = falloc((size_t)N);
        int32_t *tg = malloc((size_t)N * sizeof(int32_t));
        for (size_t i = 0; i < nv; i++) {
            x[i] = (float)th_uniform(-5, 5);
        }
        for (int n = 0; n < N; n++) {
            tg[n] = n % 7 == 3 ? LINA_IGNORE_INDEX : (n * 13 + 5) % V;
        }
        double la = 0.0, lb = 0.0;
        int64_t ca = 0, cb = 0;
        int rc = lina_cross_entropy_forward(&la, &ca, l1, x, tg, N, V);
        lina_cross_entropy_backward(d1, x, l1, tg, N, V, 0.5f, ca);
        for (int th = 1; th <= 2; th++) {
            lina_set_threads(th);
            memcpy(d2, x, nv * sizeof(float));
            rc |= lina_cross_entropy_fused(&lb, &cb, l2, tl, d2, tg, N, V, 0.5f);
            ok &= rc == 0 && la == lb && ca == cb && memcmp(l1, l2, (size_t)N * sizeof(float)) == 0 &&
                  memcmp(d1, d2, nv * sizeof(float)) == 0;
        }
        lina_set_threads(0);
        tg[5] = V;
        ok &= lina_cross_entropy_fused(&lb, &cb, l2, tl, d2, tg, N, V, 0.5f) == LINA_EINVAL;
        free(x), free(d1), free(d2), free(l1), free(l2), free(tl), free(tg);
    }
    CHECK(ok, "cross-entropy fused = forward + backward bit for bit (V 37 and 5000, ignored rows, 1 and 2 threads); "
              "bad target refused");
}

/* ------------------------------- bigger shapes: threads and parallel paths */

static void test_threads(void)
{
    int N = 600, D = 200, C = 96, T = 300, B = 2, W = 4;
    size_t nd = (size_t)N * D;
    float *x = falloc(nd), *w = falloc((size_t)D), *dy = falloc(nd), *rstd = falloc((size_t)N), *y = falloc(nd);
    for (size_t i = 0; i < nd; i++) {
        x[i] = (float)th_uniform(-2, 2);
        dy[i] = (float)th_uniform(-1, 1);
    }
    for (int i = 0; i < D; i++) {
        w[i] = (float)th_uniform(0.5, 1.5);
    }
    size_t nc = (size_t)B * T * C;
    float *cx = falloc(nc), *cw = falloc((size_t)C * W), *cy = falloc(nc), *cdy = falloc(nc);
    for (size_t i = 0; i < nc; i++) {
        cx[i] = (float)th_uniform(-2, 2);
        cdy[i] = (float)th_uniform(-1, 1);
    }
    for (int i = 0; i < C * W; i++) {
        cw[i] = (float)th_uniform(-1, 1);
    }
    float *dw[2], *dx[2], *cdw[2], *cdx[2], *dE[2];
    int32_t *ids = malloc((size_t)N * sizeof(int32_t));
    for (int i = 0; i < N; i++) {
        ids[i] = (int32_t)(i * 7 % 50);
    }
    for (int r = 0; r < 2; r++) {
        lina_set_threads(r == 0 ? 1 : 2);
        dw[r] = falloc((size_t)D), dx[r] = falloc(nd), cdw[r] = falloc((size_t)C * W), cdx[r] = falloc(nc);
        dE[r] = falloc((size_t)50 * D);
        lina_rmsnorm_forward(y, rstd, x, w, NULL, N, D, 1e-6f);
        lina_rmsnorm_backward(dx[r], dw[r], NULL, dy, x, w, rstd, N, D);
        lina_shortconv_forward(cy, cx, cw, NULL, NULL, NULL, B, T, C, W, LINA_ACT_SILU);
        lina_shortconv_backward(cdx[r], cdw[r], NULL, NULL, cdy, cx, cw, NULL, NULL, B, T, C, W, LINA_ACT_SILU);
        lina_embedding_backward(dE[r], dy, ids, N, D);
    }
    lina_set_threads(0);
    CHECK(memcmp(dw[0], dw[1], (size_t)D * sizeof(float)) == 0 && memcmp(dx[0], dx[1], nd * sizeof(float)) == 0,
          "rmsnorm gradients bit-identical on 1 and 2 threads (N=%d, D=%d)", N, D);
    CHECK(memcmp(cdw[0], cdw[1], (size_t)C * W * sizeof(float)) == 0 && memcmp(cdx[0], cdx[1], nc * sizeof(float)) == 0,
          "shortconv gradients bit-identical on 1 and 2 threads (B=%d, T=%d, C=%d)", B, T, C);
    CHECK(memcmp(dE[0], dE[1], (size_t)50 * D * sizeof(float)) == 0, "embedding gradient bit-identical on 1 and 2 threads");
    for (int r = 0; r < 2; r++) {
        free(dw[r]), free(dx[r]), free(cdw[r]), free(cdx[r]), free(dE[r]);
    }
    free(x), free(w), free(dy), free(rstd), free(y), free(cx), free(cw), free(cy), free(cdy), free(ids);
}

/* lina_sgemm_rows_nt (the direct few-rows path of the AVX-512 and AVX2 kernel paths)
 * against a double reference and against OpenBLAS, with padded leading dimensions,
 * alpha, beta, every tail of the tiles and of the 8- and 16-wide k steps, one row
 * (16 rows of B per tile), and enough rows of B for the prefetch of later tiles */
static void test_sgemm_rows(void)
{
    static const int Ms[] = {1, 2, 3, 5, 8, 17, 64, 65}, Ns[] = {1, 3, 4, 37, 53}, Ks[] = {1, 7, 15, 16, 33, 256};
    double worst = 0.0, worst_blas = 0.0;
    int n_cases = 0;
    for (int mi = 0; mi < 8; mi++) {
        for (int ni = 0; ni < 5; ni++) {
            for (int ki = 0; ki < 6; ki++) {
                for (int bi = 0; bi < 2; bi++) {
                    int M = Ms[mi], N = Ns[ni], K = Ks[ki], lda = K + 3, ldb = K + 1, ldc = N + 2;
                    float alpha = 0.75f, beta = bi ? 0.5f : 0.0f;
                    float *A = falloc((size_t)M * lda), *B = falloc((size_t)N * ldb);
                    float *C = falloc((size_t)M * ldc), *C2 = falloc((size_t)M * ldc);
                    for (int i = 0; i < M * lda; i++) {
                        A[i] = (float)th_uniform(-1, 1);
                    }
                    for (int i = 0; i < N * ldb; i++) {
                        B[i] = (float)th_uniform(-1, 1);
                    }
                    for (int i = 0; i < M * ldc; i++) {
                        C[i] = C2[i] = (float)th_uniform(-1, 1);
                    }
                    /* errors relative to each element's own scale, |alpha| sum |a b| + |beta c|:
                     * float sums of K terms in any order stay within ~K eps of it */
                    double *ref = malloc(sizeof(double) * (size_t)M * N), *mag = malloc(sizeof(double) * (size_t)M * N);
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            double acc = 0.0, aacc = 0.0;
                            for (int k = 0; k < K; k++) {
                                acc += (double)A[(size_t)m * lda + k] * B[(size_t)n * ldb + k];
                                aacc += fabs((double)A[(size_t)m * lda + k] * B[(size_t)n * ldb + k]);
                            }
                            ref[(size_t)m * N + n] = alpha * acc + beta * (double)C[(size_t)m * ldc + n];
                            mag[(size_t)m * N + n] =
                                fabs(alpha) * aacc + fabs(beta * (double)C[(size_t)m * ldc + n]) + 1e-30;
                        }
                    }
                    lina_sgemm_rows_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    lina_sgemm_set_small(0);
                    lina_sgemm_rows_nt(M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
                    lina_sgemm_set_small(1);
                    double e = 0.0, eb = 0.0;
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            const double s = mag[(size_t)m * N + n];
                            e = fmax(e, fabs(C[(size_t)m * ldc + n] - ref[(size_t)m * N + n]) / s);
                            eb = fmax(eb, fabs(C[(size_t)m * ldc + n] - C2[(size_t)m * ldc + n]) / s);
                        }
                        for (int n = N; n < ldc; n++) { /* padding untouched */
                            e = C[(size_t)m * ldc + n] == C2[(size_t)m * ldc + n] ? e : 1.0;
                        }
                    }
                    worst = fmax(worst, e);
                    worst_blas = fmax(worst_blas, eb);
                    n_cases++;
                    free(A), free(B), free(C), free(C2), free(ref), free(mag);
                }
            }
        }
    }
    CHECK(worst <= 5e-7, "lina_sgemm_rows_nt: %d shapes (M 1..65, N 1..53, K 1..256, strides, alpha, beta) vs "
                         "double reference (worst error %.1e of |alpha| sum |a b| + |beta c|)", n_cases, worst);
    CHECK(worst_blas <= 1e-6, "lina_sgemm_rows_nt: the direct path vs OpenBLAS (worst difference %.1e of the same)",
          worst_blas);
}

int main(void)
{
    test_linear(0);
    test_linear(1);
    test_embedding();
    test_rmsnorm(1, 0, 0);
    test_rmsnorm(1, 1, 0);
    test_rmsnorm(0, 0, 0);
    test_rmsnorm(1, 0, 1);
    test_rmsnorm(0, 0, 1);
    /* odd widths; rows in several runs of sigmoid blocks (the last one short); rows wider
     * than the per-task buffers */
    test_rmsnorm_nd(1, 1, 0, 333, 37);
    test_rmsnorm_nd(1, 0, 1, 333, 37);
    test_rmsnorm_nd(0, 0, 1, 70, 19);
    test_rmsnorm_nd(1, 1, 0, 3, 1100);
    test_rmsnorm_nd(1, 0, 1, 3, 1100);
    test_l2norm();
    test_vsigmoid();
    test_silu_swiglu(40);
    test_silu_swiglu(600);
    test_mlp();
    test_conv_grad(7, 1, 1, 1);
    test_conv_grad(7, 0, 0, 1);
    test_conv_grad(7, 1, 0, 0);
    test_conv_grad(2, 1, 1, 1); /* T < W: most taps read the cache */
    test_conv_grad(1, 0, 1, 0);
    test_conv_grad_c(9, 1, 1, 1, 53);  /* full and partial vector lanes */
    test_conv_grad_c(5, 1, 1, 1, 300); /* two channel blocks (256 and 44 channels) */
    test_conv_grad_c(2, 1, 1, 1, 37);  /* vector columns, T < W */
    test_conv_grad_c(1, 0, 1, 0, 32);  /* vector columns, one row from the cache, no activation */
    test_conv_grad_c(40, 1, 1, 0, 48); /* vector columns past the prefetch distance, no activation */
    test_conv_grad_c(33, 0, 0, 1, 21);
    test_conv_decode();
    test_conv_vec_same();
    test_conv_bwd_set();
    test_linear_bwd_set();
    test_sgemm_rows();
    test_rope(5, 3, 8, 1);
    test_rope(19, 1, 260, 0); /* two blocks of positions (16 + 3), two passes of pairs (128 + 2) */
    test_cross_entropy();
    test_cross_entropy_max();
    test_cross_entropy_fused();
    test_threads();
    return th_exit();
}
