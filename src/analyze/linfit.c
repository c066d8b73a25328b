/* linfit.c -- linearity score and least-squares maps between activations (linfit.h). */
#include "linfit.h"
#include "lina.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* In-place Cholesky of the SPD matrix A [n, n] (lower triangle); -1 if not positive definite. */
static int cholesky(double *A, int n)
{
    for (int j = 0; j < n; j++) {
        double s = A[(size_t)j * n + j];
        for (int k = 0; k < j; k++) {
            s -= A[(size_t)j * n + k] * A[(size_t)j * n + k];
        }
        if (!(s > 0.0)) {
            return -1;
        }
        double d = sqrt(s);
        A[(size_t)j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double t = A[(size_t)i * n + j];
            for (int k = 0; k < j; k++) {
                t -= A[(size_t)i * n + k] * A[(size_t)j * n + k];
            }
            A[(size_t)i * n + j] = t / d;
        }
    }
    return 0;
}

/* Solve L L^T x = b in place for m right-hand sides stored as columns of B [n, m]. */
static void chol_solve(const double *L, int n, double *B, int m)
{
    for (int c = 0; c < m; c++) {
        for (int i = 0; i < n; i++) {
            double t = B[(size_t)i * m + c];
            for (int k = 0; k < i; k++) {
                t -= L[(size_t)i * n + k] * B[(size_t)k * m + c];
            }
            B[(size_t)i * m + c] = t / L[(size_t)i * n + i];
        }
        for (int i = n - 1; i >= 0; i--) {
            double t = B[(size_t)i * m + c];
            for (int k = i + 1; k < n; k++) {
                t -= L[(size_t)k * n + i] * B[(size_t)k * m + c];
            }
            B[(size_t)i * m + c] = t / L[(size_t)i * n + i];
        }
    }
}

/* G = X^T X [din, din], C = X^T Y [din, dout], optionally after removing column
 * means mx, my (NULL: none) and scaling X by sx, Y by sy. */
static void gram(const float *X, const float *Y, int64_t n, int din, int dout, const double *mx, const double *my,
                 double sx, double sy, double *G, double *C)
{
    memset(G, 0, (size_t)din * din * sizeof *G);
    memset(C, 0, (size_t)din * dout * sizeof *C);
    double *xr = malloc((size_t)(din + dout) * sizeof *xr);
    if (!xr) {
        return;
    }
    double *yr = xr + din;
    for (int64_t r = 0; r < n; r++) {
        const float *x = X + (size_t)r * din, *y = Y + (size_t)r * dout;
        for (int i = 0; i < din; i++) {
            xr[i] = ((double)x[i] - (mx ? mx[i] : 0.0)) * sx;
        }
        for (int j = 0; j < dout; j++) {
            yr[j] = ((double)y[j] - (my ? my[j] : 0.0)) * sy;
        }
        for (int i = 0; i < din; i++) {
            double xi = xr[i];
            double *g = G + (size_t)i * din, *c = C + (size_t)i * dout;
            for (int k = 0; k <= i; k++) {
                g[k] += xi * xr[k];
            }
            for (int j = 0; j < dout; j++) {
                c[j] += xi * yr[j];
            }
        }
    }
    for (int i = 0; i < din; i++) {
        for (int k = 0; k < i; k++) {
            G[(size_t)k * din + i] = G[(size_t)i * din + k];
        }
    }
    free(xr);
}

static int check_args(const float *X, const float *Y, int64_t n, int din, int dout)
{
    if (!X || !Y || n < 2 || din < 1 || dout < 1 || din > 65536 || dout > 65536) {
        return lina_set_error(LINA_EINVAL, "linear fit: bad arguments (n = %lld, din = %d, dout = %d)",
                              (long long)n, din, dout);
    }
    for (size_t i = 0; i < (size_t)n * din; i++) {
        if (!isfinite(X[i])) {
            return lina_set_error(LINA_ENONFINITE, "linear fit: non-finite input activation at %zu", i);
        }
    }
    for (size_t i = 0; i < (size_t)n * dout; i++) {
        if (!isfinite(Y[i])) {
            return lina_set_error(LINA_ENONFINITE, "linear fit: non-finite output activation at %zu", i);
        }
    }
    return LINA_OK;
}

/* column means [d] and the Frobenius norm of the centred matrix */
static double centre_stats(const float *X, int64_t n, int d, double *mean)
{
    memset(mean, 0, (size_t)d * sizeof *mean);
    for (int64_t r = 0; r < n; r++) {
        for (int i = 0; i < d; i++) {
            mean[i] += X[(size_t)r * d + i];
        }
    }
    for (int i = 0; i < d; i++) {
        mean[i] /= (double)n;
    }
    double ss = 0.0;
    for (int64_t r = 0; r < n; r++) {
        for (int i = 0; i < d; i++) {
            double t = X[(size_t)r * d + i] - mean[i];
            ss += t * t;
        }
    }
    return sqrt(ss);
}

/* A = (G + lambda I)^-1 C in place of C; lambda = ridge * trace(G) / din (at least
 * the smallest ridge that makes G factor). G is overwritten. */
static int solve_ridge(double *G, double *C, int din, int dout, double ridge)
{
    double tr = 0.0;
    for (int i = 0; i < din; i++) {
        tr += G[(size_t)i * din + i];
    }
    double lam = ridge * tr / din;
    double *G0 = malloc((size_t)din * din * sizeof *G0);
    if (!G0) {
        return lina_set_error(LINA_ENOMEM, "linear fit: out of memory");
    }
    memcpy(G0, G, (size_t)din * din * sizeof *G0);
    for (int attempt = 0; attempt < 8; attempt++) {
        memcpy(G, G0, (size_t)din * din * sizeof *G);
        for (int i = 0; i < din; i++) {
            G[(size_t)i * din + i] += lam;
        }
        if (cholesky(G, din) == 0) {
            free(G0);
            chol_solve(G, din, C, dout);
            return LINA_OK;
        }
        lam = lam > 0 ? lam * 100.0 : 1e-12 * (tr > 0 ? tr / din : 1.0);
    }
    free(G0);
    return lina_set_error(LINA_EINVAL, "linear fit: the input activations are degenerate (no factorisation)");
}

int lina_linearity_score(const float *X, const float *Y, int64_t n, int d, double *score)
{
    int rc = check_args(X, Y, n, d, d);
    if (rc) {
        return rc;
    }
    double *mx = malloc((size_t)d * 2 * sizeof *mx);
    double *G = malloc((size_t)d * d * sizeof *G), *C = malloc((size_t)d * d * sizeof *C);
    if (!mx || !G || !C) {
        free(mx);
        free(G);
        free(C);
        return lina_set_error(LINA_ENOMEM, "linearity score: out of memory (d = %d)", d);
    }
    double *my = mx + d;
    double nx = centre_stats(X, n, d, mx), ny = centre_stats(Y, n, d, my);
    if (!(nx > 0.0) || !(ny > 0.0)) {
        rc = lina_set_error(LINA_EINVAL, "linearity score: %s activations are constant over the rows",
                            nx > 0.0 ? "output" : "input");
    } else {
        gram(X, Y, n, d, d, mx, my, 1.0 / nx, 1.0 / ny, G, C);
        /* C0 = X~^T Y~ kept: explained = sum(C0 .* A) */
        double *C0 = malloc((size_t)d * d * sizeof *C0);
        if (!C0) {
            rc = lina_set_error(LINA_ENOMEM, "linearity score: out of memory (d = %d)", d);
        } else {
            memcpy(C0, C, (size_t)d * d * sizeof *C0);
            if ((rc = solve_ridge(G, C, d, d, 1e-9)) == LINA_OK) {
                double ex = 0.0;
                for (size_t i = 0; i < (size_t)d * d; i++) {
                    ex += C0[i] * C[i];
                }
                double s = ex; /* 1 - (||Y~||^2 - explained) with ||Y~|| = 1 */
                *score = s < 0.0 ? 0.0 : s > 1.0 ? 1.0 : s;
            }
            free(C0);
        }
    }
    free(mx);
    free(G);
    free(C);
    return rc;
}

int lina_lstsq(const float *X, const float *Y, int64_t n, int din, int dout, double ridge, float *W,
               double *rel_resid)
{
    int rc = check_args(X, Y, n, din, dout);
    if (rc || !W) {
        return rc ? rc : lina_set_error(LINA_EINVAL, "least squares: W is NULL");
    }
    double *G = malloc((size_t)din * din * sizeof *G), *C = malloc((size_t)din * dout * sizeof *C);
    if (!G || !C) {
        free(G);
        free(C);
        return lina_set_error(LINA_ENOMEM, "least squares: out of memory (%d x %d)", din, dout);
    }
    gram(X, Y, n, din, dout, NULL, NULL, 1.0, 1.0, G, C);
    if ((rc = solve_ridge(G, C, din, dout, ridge)) == LINA_OK) {
        for (int j = 0; j < dout; j++) {
            for (int i = 0; i < din; i++) {
                W[(size_t)j * din + i] = (float)C[(size_t)i * dout + j];
            }
        }
        if (rel_resid) {
            double num = 0.0, den = 0.0;
            for (int64_t r = 0; r < n; r++) {
                const float *x = X + (size_t)r * din, *y = Y + (size_t)r * dout;
                for (int j = 0; j < dout; j++) {
                    double p = 0.0;
                    for (int i = 0; i < din; i++) {
                        p += C[(size_t)i * dout + j] * x[i];
                    }
                    num += (p - y[j]) * (p - y[j]);
                    den += (double)y[j] * y[j];
                }
            }
            *rel_resid = den > 0.0 ? num / den : 0.0;
        }
    }
    free(G);
    free(C);
    return rc;
}
