/* test_icl.c -- in-context linear regression (src/tasks/icl.c): generator statistics,
 * the linear-attention layer against the plain quadratic form in double, the exact
 * gradient against central finite differences, the ridge baselines against direct
 * solves, determinism, the CLI's usage errors and a short run where the loss falls. */
#include "../src/tasks/icl.h"
#include "../src/cli/cli.h"
#include "harness.h"
#include "lina.h"

#include <string.h>

/* ------------------------------------------------------- double reference */

/* The model exactly as written in the papers (quadratic form, no rewriting):
 * Z <- Z + (1/n) sum_h (Z Qt_h Z^T) A (Z Pt_h^T), A = diag(1, .., 1, 0).
 * p [L, H, 2, D, D] (Pt, Qt); Z [T, D] updated in place. */
static void ref_forward(int d, int n, int L, int H, const double *p, double *Z)
{
    const int D = d + 1, T = n + 1;
    double *S = malloc(sizeof(double) * T * T), *V = malloc(sizeof(double) * T * D),
           *O = malloc(sizeof(double) * T * D);
    for (int l = 0; l < L; l++) {
        memset(O, 0, sizeof(double) * T * D);
        for (int h = 0; h < H; h++) {
            const double *Pt = p + ((size_t)(l * H + h) * 2) * D * D, *Qt = Pt + D * D;
            for (int i = 0; i < T; i++) {
                for (int j = 0; j < T; j++) {
                    double s = 0.0;
                    for (int a = 0; a < D; a++) {
                        for (int b = 0; b < D; b++) {
                            s += Z[i * D + a] * Qt[a * D + b] * Z[j * D + b];
                        }
                    }
                    S[i * T + j] = s * (j < n ? 1.0 : 0.0); /* (Z Qt Z^T) A */
                }
                for (int c = 0; c < D; c++) {
                    double s = 0.0;
                    for (int b = 0; b < D; b++) {
                        s += Pt[c * D + b] * Z[i * D + b];
                    }
                    V[i * D + c] = s;
                }
            }
            for (int i = 0; i < T; i++) {
                for (int c = 0; c < D; c++) {
                    double s = 0.0;
                    for (int j = 0; j < T; j++) {
                        s += S[i * T + j] * V[j * D + c];
                    }
                    O[i * D + c] += s / n;
                }
            }
        }
        for (int i = 0; i < T * D; i++) {
            Z[i] += O[i];
        }
    }
    free(S);
    free(V);
    free(O);
}

static double ref_loss(int d, int n, int L, int H, const double *p, const float *Z, const float *yq,
                       int B)
{
    const int D = d + 1, T = n + 1;
    double *z = malloc(sizeof(double) * T * D), s = 0.0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < T * D; i++) {
            z[i] = Z[(size_t)b * T * D + i];
        }
        ref_forward(d, n, L, H, p, z);
        double r = z[n * D + d] + yq[b];
        s += r * r;
    }
    free(z);
    return s / B;
}

/* Gaussian elimination with partial pivoting: A [k, k] x = b (both overwritten). */
static void gauss_solve(int k, double *A, double *b)
{
    for (int c = 0; c < k; c++) {
        int piv = c;
        for (int r = c + 1; r < k; r++) {
            if (fabs(A[r * k + c]) > fabs(A[piv * k + c])) {
                piv = r;
            }
        }
        for (int j = 0; j < k; j++) {
            double t = A[c * k + j];
            A[c * k + j] = A[piv * k + j];
            A[piv * k + j] = t;
        }
        double t = b[c];
        b[c] = b[piv];
        b[piv] = t;
        for (int r = c + 1; r < k; r++) {
            double f = A[r * k + c] / A[c * k + c];
            for (int j = c; j < k; j++) {
                A[r * k + j] -= f * A[c * k + j];
            }
            b[r] -= f * b[c];
        }
    }
    for (int r = k - 1; r >= 0; r--) {
        double s = b[r];
        for (int j = r + 1; j < k; j++) {
            s -= A[r * k + j] * b[j];
        }
        b[r] = s / A[r * k + r];
    }
}

/* ------------------------------------------------------------------ tests */

static void test_generator(void)
{
    lina_icl_data g = {.d = 5, .n = 20, .noise = LINA_ICL_NOISE_NONE};
    const int d = 5, n = 20, D = 6, T = 21, B = 3000;
    float *Z = malloc(sizeof(float) * B * T * D), *yq = malloc(sizeof(float) * B),
          *sg = malloc(sizeof(float) * B), *w = malloc(sizeof(float) * B * d);
    lina_icl_sample(&g, 42, 0, B, Z, yq, sg, w);
    double mx = 0, vx = 0, mw = 0, vw = 0, my = 0, vy = 0, maxres = 0, qlab = 0, vq = 0;
    for (int b = 0; b < B; b++) {
        for (int j = 0; j < d; j++) {
            mw += w[b * d + j];
            vw += (double)w[b * d + j] * w[b * d + j];
        }
        for (int i = 0; i < T; i++) {
            const float *z = Z + ((size_t)b * T + i) * D;
            double y = 0.0;
            for (int j = 0; j < d; j++) {
                mx += z[j];
                vx += (double)z[j] * z[j];
                y += (double)w[b * d + j] * z[j];
            }
            if (i < n) {
                my += z[d];
                vy += (double)z[d] * z[d];
                maxres = fmax(maxres, fabs(z[d] - y));
            } else {
                qlab = fmax(qlab, fabs(z[d]));
                maxres = fmax(maxres, fabs(yq[b] - y));
                vq += (double)yq[b] * yq[b];
            }
        }
    }
    const double nx = (double)B * T * d, nw = (double)B * d, ny = (double)B * n;
    mx /= nx;
    vx = vx / nx - mx * mx;
    mw /= nw;
    vw = vw / nw - mw * mw;
    my /= ny;
    vy = vy / ny - my * my;
    CHECK(fabs(mx) < 0.01 && fabs(vx - 1.0) < 0.02, "gen: x ~ N(0,1) (mean %.4f var %.4f)", mx, vx);
    CHECK(fabs(mw) < 0.03 && fabs(vw - 1.0) < 0.05, "gen: w ~ N(0,1) (mean %.4f var %.4f)", mw, vw);
    CHECK(fabs(my) < 0.1 && fabs(vy / d - 1.0) < 0.06, "gen: var y = d (mean %.4f var %.3f)", my,
          vy);
    CHECK(fabs(vq / B / d - 1.0) < 0.1, "gen: var y_q = d (%.3f)", vq / B);
    CHECK(qlab == 0.0, "gen: query label is zero");
    CHECK(maxres < 1e-4, "gen: noiseless y = <w, x> (max residual %.2e)", maxres);
    int sg0 = 1;
    for (int b = 0; b < B; b++) {
        sg0 &= sg[b] == 0.0f;
    }
    CHECK(sg0, "gen: no noise -> sigma 0");

    /* the same sequence whatever the batch it is drawn in */
    float *Z1 = malloc(sizeof(float) * T * D), yq1;
    lina_icl_sample(&g, 42, 1234, 1, Z1, &yq1, NULL, NULL);
    CHECK(memcmp(Z1, Z + (size_t)1234 * T * D, sizeof(float) * T * D) == 0 && yq1 == yq[1234],
          "gen: sequence k is the same drawn alone or in a batch");
    lina_icl_sample(&g, 43, 1234, 1, Z1, &yq1, NULL, NULL);
    CHECK(memcmp(Z1, Z + (size_t)1234 * T * D, sizeof(float) * T * D) != 0,
          "gen: another stream gives other data");
    free(Z1);

    /* mixed noise: sigma from {1, 3}, about half each; residual variance sigma^2 */
    lina_icl_data gm = {.d = 5, .n = 20, .noise = LINA_ICL_NOISE_MIXED, .nsigma = 2,
                        .sigmas = {1.0, 3.0}};
    lina_icl_sample(&gm, 7, 0, B, Z, yq, sg, w);
    int c1 = 0, c3 = 0, other = 0;
    double r1 = 0, r3 = 0, qres = 0;
    for (int b = 0; b < B; b++) {
        c1 += sg[b] == 1.0f;
        c3 += sg[b] == 3.0f;
        other += sg[b] != 1.0f && sg[b] != 3.0f;
        for (int i = 0; i < T; i++) {
            const float *z = Z + ((size_t)b * T + i) * D;
            double y = 0.0;
            for (int j = 0; j < d; j++) {
                y += (double)w[b * d + j] * z[j];
            }
            if (i < n) {
                double e = z[d] - y;
                if (sg[b] == 1.0f) {
                    r1 += e * e;
                } else {
                    r3 += e * e;
                }
            } else {
                qres = fmax(qres, fabs(yq[b] - y));
            }
        }
    }
    r1 /= (double)c1 * n;
    r3 /= (double)c3 * n;
    CHECK(other == 0 && fabs(c1 / (double)B - 0.5) < 0.04, "gen: mixed sigma in {1,3} (%d / %d)",
          c1, c3);
    CHECK(fabs(r1 - 1.0) < 0.06 && fabs(r3 / 9.0 - 1.0) < 0.06,
          "gen: noise variance sigma^2 (%.3f, %.3f)", r1, r3);
    CHECK(qres < 1e-4, "gen: query label noiseless under mixed noise");

    lina_icl_data gu = {.d = 5, .n = 20, .noise = LINA_ICL_NOISE_UNIFORM, .sigma_max = 4.0};
    lina_icl_sample(&gu, 8, 0, B, Z, yq, sg, NULL);
    double ms = 0, lo = 1e9, hi = -1;
    for (int b = 0; b < B; b++) {
        ms += sg[b];
        lo = fmin(lo, sg[b]);
        hi = fmax(hi, sg[b]);
    }
    ms /= B;
    CHECK(lo >= 0.0 && hi < 4.0 && fabs(ms - 2.0) < 0.1, "gen: uniform sigma in [0, 4) (mean %.3f)",
          ms);
    free(Z);
    free(yq);
    free(sg);
    free(w);
}

static void test_forward_backward(int variant, const char *name)
{
    const int d = 4, n = 7, L = 3, H = 2, D = d + 1, T = n + 1, B = 3;
    lina_icl_model m;
    int rc = lina_icl_model_init(&m, d, n, L, H, variant, 0.3, 5);
    CHECK(rc == 0, "%s: model init", name);
    if (variant == LINA_ICL_FULL) { /* a generic point: every trainable entry non-zero */
        for (int64_t i = 0; i < m.nparams; i++) {
            m.params[i] = (float)(m.params[i] + 0.1 * th_normal());
        }
    }
    const int64_t expect = variant == LINA_ICL_AHN ? 2LL * L * H * d * d : 2LL * L * H * D * D;
    CHECK(m.ntrain == expect, "%s: %lld trainable parameters", name, (long long)m.ntrain);
    lina_icl_data g = {.d = d, .n = n, .noise = LINA_ICL_NOISE_MIXED, .nsigma = 1, .sigmas = {0.5}};
    float Z[B * T * D], yq[B], Zo[B * T * D], pred[B];
    lina_icl_sample(&g, 99, 0, B, Z, yq, NULL, NULL);
    double *p = malloc(sizeof(double) * m.nparams);
    for (int64_t i = 0; i < m.nparams; i++) {
        p[i] = m.params[i];
    }
    rc = lina_icl_forward(&m, Z, B, Zo, pred);
    double ref[B * T * D], err = 0.0, mag = 1.0, perr = 0.0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < T * D; i++) {
            ref[b * T * D + i] = Z[b * T * D + i];
        }
        ref_forward(d, n, L, H, p, ref + b * T * D);
        perr = fmax(perr, fabs(pred[b] + ref[b * T * D + n * D + d]));
    }
    for (int i = 0; i < B * T * D; i++) {
        err = fmax(err, fabs(Zo[i] - ref[i]));
        mag = fmax(mag, fabs(ref[i]));
    }
    CHECK(rc == 0 && err / mag < 1e-5 && perr / mag < 1e-5,
          "%s: forward = quadratic double reference (rel err %.2e, |ref| %.2f)", name, err / mag,
          mag);

    float *grad = malloc(sizeof(float) * m.nparams);
    double loss = 0.0;
    rc = lina_icl_loss_grad(&m, Z, yq, B, &loss, grad);
    double rl = ref_loss(d, n, L, H, p, Z, yq, B);
    CHECK(rc == 0 && fabs(loss - rl) <= 1e-5 * fmax(1.0, rl), "%s: loss %.6f = reference %.6f",
          name, loss, rl);
    double gmax = 1e-3, gerr = 0.0, fixed = 0.0;
    int checked = 0;
    for (int64_t i = 0; i < m.nparams; i++) {
        if (!m.mask[i]) {
            fixed = fmax(fixed, fabs(grad[i]));
            continue;
        }
        const double h = 1e-5, keep = p[i];
        p[i] = keep + h;
        double lp = ref_loss(d, n, L, H, p, Z, yq, B);
        p[i] = keep - h;
        double lm = ref_loss(d, n, L, H, p, Z, yq, B);
        p[i] = keep;
        double fd = (lp - lm) / (2 * h);
        gerr = fmax(gerr, fabs(fd - grad[i]));
        gmax = fmax(gmax, fabs(fd));
        checked++;
    }
    CHECK(checked == m.ntrain && gerr / gmax < 2e-4,
          "%s: gradient of all %d parameters = central differences (rel err %.2e, max |g| %.3f)",
          name, checked, gerr / gmax, gmax);
    CHECK(fixed == 0.0, "%s: fixed entries get zero gradient", name);

    /* the same bits for any thread count */
    float *g1 = malloc(sizeof(float) * m.nparams);
    double l1 = 0.0;
    float Zb[64 * T * D], yb[64];
    lina_icl_sample(&g, 5, 0, 64, Zb, yb, NULL, NULL);
    lina_set_threads(1);
    lina_icl_loss_grad(&m, Zb, yb, 64, &l1, g1);
    lina_set_threads(2);
    double l2 = 0.0;
    lina_icl_loss_grad(&m, Zb, yb, 64, &l2, grad);
    lina_set_threads(0);
    CHECK(l1 == l2 && memcmp(g1, grad, sizeof(float) * m.nparams) == 0,
          "%s: loss and gradient identical for 1 and 2 threads", name);
    free(g1);
    free(grad);
    free(p);
    lina_icl_model_free(&m);
}

static void test_ridge(void)
{
    const int d = 6, n = 15, D = d + 1, T = n + 1;
    lina_icl_data g = {.d = d, .n = n, .noise = LINA_ICL_NOISE_MIXED, .nsigma = 1, .sigmas = {1.0}};
    float Z[T * D], yq;
    lina_icl_sample(&g, 3, 0, 1, Z, &yq, NULL, NULL);
    const double lams[3] = {0.0, 0.5, 3.0};
    for (int t = 0; t < 3; t++) {
        double A[d * d], b[d], w[d];
        for (int a = 0; a < d; a++) {
            for (int c = 0; c < d; c++) {
                double s = 0.0;
                for (int i = 0; i < n; i++) {
                    s += (double)Z[i * D + a] * Z[i * D + c];
                }
                A[a * d + c] = s + (a == c ? lams[t] : 0.0);
            }
            double s = 0.0;
            for (int i = 0; i < n; i++) {
                s += (double)Z[i * D + a] * Z[i * D + d];
            }
            b[a] = s;
        }
        gauss_solve(d, A, b);
        double pred = lina_icl_ridge(d, n, Z, lams[t], w), e = 0.0, pr = 0.0;
        for (int a = 0; a < d; a++) {
            e = fmax(e, fabs(w[a] - b[a]));
            pr += b[a] * Z[n * D + a];
        }
        CHECK(e < 1e-10 && fabs(pred - pr) < 1e-10,
              "ridge lambda %g = direct solve (max err %.1e)", lams[t], e);
    }
    /* n < d: least squares is the minimum-norm interpolant w = X^T (X X^T)^-1 y */
    {
        const int d2 = 8, n2 = 5, D2 = d2 + 1;
        lina_icl_data g2 = {.d = d2, .n = n2};
        float Z2[(n2 + 1) * D2], y2;
        lina_icl_sample(&g2, 4, 0, 1, Z2, &y2, NULL, NULL);
        double K[n2 * n2], al[n2], w[d2], e = 0.0;
        for (int i = 0; i < n2; i++) {
            for (int j = 0; j < n2; j++) {
                double s = 0.0;
                for (int a = 0; a < d2; a++) {
                    s += (double)Z2[i * D2 + a] * Z2[j * D2 + a];
                }
                K[i * n2 + j] = s;
            }
            al[i] = Z2[i * D2 + d2];
        }
        gauss_solve(n2, K, al);
        lina_icl_ridge(d2, n2, Z2, 0.0, w);
        for (int a = 0; a < d2; a++) {
            double s = 0.0;
            for (int i = 0; i < n2; i++) {
                s += (double)Z2[i * D2 + a] * al[i];
            }
            e = fmax(e, fabs(w[a] - s));
        }
        CHECK(e < 1e-9, "least squares with n < d = minimum-norm solution (err %.1e)", e);
    }
    /* gradient descent: one step from 0 is eta/n X^T y; many steps reach least squares */
    {
        double one = 0.0;
        for (int a = 0; a < d; a++) {
            double s = 0.0;
            for (int i = 0; i < n; i++) {
                s += (double)Z[i * D + a] * Z[i * D + d];
            }
            one += 0.3 / n * s * Z[n * D + a];
        }
        double g1 = lina_icl_gd(d, n, Z, 1, 0.3), ginf = lina_icl_gd(d, n, Z, 3000, 0.3);
        double ls = lina_icl_ridge(d, n, Z, 0.0, NULL);
        CHECK(fabs(g1 - one) < 1e-12 && fabs(ginf - ls) < 1e-8,
              "GD: one step = eta/n X^T y, 3000 steps = least squares (%.2e)", fabs(ginf - ls));
    }
    /* adaptive ridge: lambda = RSS / (n - d) */
    {
        double w[d], rss = 0.0;
        lina_icl_ridge(d, n, Z, 0.0, w);
        for (int i = 0; i < n; i++) {
            double p = 0.0;
            for (int a = 0; a < d; a++) {
                p += w[a] * Z[i * D + a];
            }
            rss += (Z[i * D + d] - p) * (Z[i * D + d] - p);
        }
        double want = lina_icl_ridge(d, n, Z, rss / (n - d), NULL);
        CHECK(fabs(lina_icl_adaridge(d, n, Z) - want) < 1e-12, "adaptive ridge uses RSS/(n-d)");
    }
}

static void test_cli(void)
{
    char *a1[] = {"task", "icl-regression", "--optim", "lbfgs"};
    char *a2[] = {"task", "icl-regression", "--bogus", "1"};
    char *a3[] = {"task", "icl-regression", "--steps", "-3"};
    char *a4[] = {"task", "icl-regression", "--layers"};
    CHECK(lina_cmd_task(4, a1) == 2, "cli: bad --optim -> 2");
    CHECK(lina_cmd_task(4, a2) == 2, "cli: unknown option -> 2");
    CHECK(lina_cmd_task(4, a3) == 2, "cli: negative --steps -> 2");
    CHECK(lina_cmd_task(3, a4) == 2, "cli: missing value -> 2");
}

static void test_smoke(void)
{
    lina_icl_opts o;
    lina_icl_opts_default(&o);
    o.layers = 2;
    o.steps = 150;
    o.batch = 128;
    o.test_size = 2000;
    o.progress = 0;
    double curve[150];
    o.curve = curve;
    lina_icl_result r;
    lina_set_threads(1); /* the 2-thread run below checks that the losses are the same */
    int rc = lina_icl_train(&o, &r);
    double first = (curve[0] + curve[1] + curve[2]) / 3, last = 0.0;
    for (int i = 140; i < 150; i++) {
        last += curve[i] / 10;
    }
    CHECK(rc == 0 && last < 0.2 * first && r.test_mse < 0.2 * first,
          "smoke: Adam, 2 layers, 150 steps: loss %.3f -> %.3f, test MSE %.3f (%.2f s)", first,
          last, r.test_mse, r.wall_s);
    CHECK(r.lstsq_mse < 1e-6 && r.ridge_lambda == 0.0,
          "smoke: noiseless -> least squares exact (%.1e), tuned lambda 0", r.lstsq_mse);
    lina_icl_result r2;
    double curve2[40];
    o.curve = curve2;
    o.steps = 40;
    o.test_size = 200;
    lina_set_threads(2);
    rc = lina_icl_train(&o, &r2);
    lina_set_threads(1);
    CHECK(rc == 0 && memcmp(curve, curve2, sizeof curve2) == 0,
          "smoke: the same losses with 2 threads");
    o.data.noise = LINA_ICL_NOISE_MIXED;
    o.variant = LINA_ICL_FULL;
    o.steps = 30;
    o.test_size = 2000;
    o.curve = NULL;
    rc = lina_icl_train(&o, &r);
    CHECK(rc == 0 && r.oracle_mse <= r.ridge_mse + 1e-9 && r.ridge_mse <= r.lstsq_mse + 1e-9 &&
              r.ridge_lambda > 0.0,
          "smoke: mixed noise: oracle %.3f <= tuned ridge %.3f (lambda %g) <= least squares %.3f",
          r.oracle_mse, r.ridge_mse, r.ridge_lambda, r.lstsq_mse);
    lina_set_threads(0);
}

int main(void)
{
    test_generator();
    test_forward_backward(LINA_ICL_FULL, "full");
    test_forward_backward(LINA_ICL_AHN, "ahn");
    test_ridge();
    test_cli();
    test_smoke();
    return th_exit();
}
