/* harness.h -- a tiny test harness: CHECK prints "ok NAME" or "FAIL NAME: why". */
#ifndef LINA_TEST_HARNESS_H
#define LINA_TEST_HARNESS_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int th_failed;

__attribute__((unused)) static void th_result(int ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf(ok ? "ok " : "FAIL ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok) {
        th_failed++;
    }
}

#define CHECK(cond, ...)                                 \
    do {                                                 \
        int ok_ = (cond) ? 1 : 0;                        \
        th_result(ok_, __VA_ARGS__);                     \
        if (!ok_) {                                      \
            printf("    at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
        }                                                \
    } while (0)

__attribute__((unused)) static int th_exit(void)
{
    return th_failed ? 1 : 0;
}

/* deterministic random numbers */
static unsigned long long th_rng = 88172645463325252ull;
__attribute__((unused)) static double th_uniform(double lo, double hi)
{
    th_rng ^= th_rng << 13;
    th_rng ^= th_rng >> 7;
    th_rng ^= th_rng << 17;
    return lo + (hi - lo) * (double)(th_rng >> 11) * (1.0 / 9007199254740992.0);
}
__attribute__((unused)) static double th_normal(void)
{
    double u1 = th_uniform(1e-12, 1.0), u2 = th_uniform(0.0, 1.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* max |a - b| / max(1, max |b|): the accuracy measure of docs/ops.md section 4 */
__attribute__((unused)) static double th_relerr_fd(const float *a, const double *b, size_t n)
{
    double m = 1.0, e = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) {
            e = d; /* also catches NaN */
        }
        if (fabs(b[i]) > m) {
            m = fabs(b[i]);
        }
    }
    return e / m;
}

#endif
