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

/* a float tensor and its exact double copy (zero-filled, one spare element) */
typedef struct tb {
    size_t n;
    float *f;
    double *d;
} tb;

__attribute__((unused)) static tb tb_new(size_t n)
{
    tb t = {n, calloc(n + 1, sizeof(float)), calloc(n + 1, sizeof(double))};
    return t;
}

__attribute__((unused)) static void tb_free(tb *t)
{
    free(t->f);
    free(t->d);
    t->f = NULL;
    t->d = NULL;
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

/* max |a - b| / max |b| (NaN in a counts as an error): a float result against a float reference */
__attribute__((unused)) static double th_relerr(const float *a, const float *b, size_t n)
{
    double e = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) {
            e = d;
        }
        if (fabs((double)b[i]) > m) {
            m = fabs((double)b[i]);
        }
    }
    return m > 0.0 ? e / m : e;
}

/* Runs the shell command cmd with stdout and stderr captured through files in dir:
 * up to outn-1 / errn-1 bytes into out / err (NUL-terminated). Returns the exit
 * status, or 128 + the signal that ended it. */
__attribute__((unused)) static int th_sh_capture(const char *cmd, const char *dir, char *out, size_t outn, char *err,
                                                 size_t errn)
{
    char full[8192], of[512], ef[512];
    snprintf(of, sizeof of, "%s/th_out.txt", dir);
    snprintf(ef, sizeof ef, "%s/th_err.txt", dir);
    snprintf(full, sizeof full, "(%s) >%s 2>%s", cmd, of, ef);
    int st = system(full);
    const char *files[2] = {of, ef};
    char *bufs[2] = {out, err};
    size_t ns[2] = {outn, errn};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        size_t got = f ? fread(bufs[i], 1, ns[i] - 1, f) : 0;
        bufs[i][got] = '\0';
        if (f) {
            fclose(f);
        }
    }
    return st == -1 ? 127 : (st & 0x7f) ? 128 + (st & 0x7f) : (st >> 8) & 0xff;
}

#endif
