/* test_kern.c -- the instruction-set paths: selection by name, and lina_vexp
 * on every path this CPU supports against exp in double (range, denormals,
 * under/overflow, NaN, every tail length). */
#include "harness.h"
#include "lina.h"
#include "../src/kern/gemm.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_select(void)
{
    const char *sup = lina_isa_supported();
    CHECK(strstr(sup, "portable") != NULL, "isa: portable is always supported (\"%s\")", sup);
    CHECK(strncmp(sup, lina_isa_name(), strlen(lina_isa_name())) == 0 || getenv("LINA_ISA"),
          "isa: the best path is the default (%s of \"%s\")", lina_isa_name(), sup);
    int rc = lina_isa_set("sse9");
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "unknown kernel path 'sse9'"),
          "isa: unknown name refused (%s)", lina_last_error());
#if defined(__x86_64__)
    if (!strstr(sup, "avx512")) {
        rc = lina_isa_set("avx512");
        CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "not supported"),
              "isa: a path the CPU lacks is refused (%s)", lina_last_error());
    }
    rc = lina_isa_set("neon");
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "'neon' is not supported") && !strstr(sup, "neon"),
          "isa: the ARM path refused on x86-64 (%s)", lina_last_error());
#elif defined(__aarch64__)
    CHECK(!strncmp(sup, "neon portable", 13), "isa: AArch64 has the neon and portable paths, neon first (\"%s\")",
          sup);
    rc = lina_isa_set("avx2");
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "not supported"),
          "isa: x86 path refused off x86-64 (%s)", lina_last_error());
#else
    rc = lina_isa_set("avx2");
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "not supported"),
          "isa: x86 path refused off x86-64 (%s)", lina_last_error());
#endif
}

/* relative error of lina_vexp against exp in double; a denormal result may
 * be off by its relative error plus one rounding step (the smallest denormal) */
static void test_vexp_path(const char *isa)
{
    enum { N = 4096 };
    static float x[N], y[N];
    double worst = 0.0, worst_den = 0.0;
    int bad_special = 0;
    for (int i = 0; i < N; i++) {
        x[i] = (float)th_uniform(-110.0, 95.0);
    }
    x[0] = 0.0f;
    x[1] = -0.0f;
    x[2] = -87.5f;  /* denormal results */
    x[3] = -100.0f;
    x[4] = 88.7f;   /* near FLT_MAX */
    x[5] = 1e-8f;
    lina_vexp(y, x, N);
    for (int i = 0; i < N; i++) {
        double e = exp((double)x[i]);
        if (e > FLT_MAX) {
            bad_special += !(isinf(y[i]) && y[i] > 0) && !(e < 1.0000001 * FLT_MAX);
            continue;
        }
        if (e < FLT_MIN) {
            double d = fabs((double)y[i] - e) / (1.401298464324817e-45 + 5e-7 * e);
            worst_den = d > worst_den ? d : worst_den;
            continue;
        }
        double r = fabs((double)y[i] - e) / e;
        worst = r > worst ? r : worst;
    }
    CHECK(worst < 5e-7, "vexp %s: relative error %.2e over [-110, 95] (normal results)", isa, worst);
    CHECK(worst_den <= 1.0, "vexp %s: denormal results within %.2f steps (1 denormal + 5e-7 relative)", isa,
          worst_den);
    float s[6] = {NAN, INFINITY, -INFINITY, 1000.0f, -1000.0f, 0.0f}, t[6];
    lina_vexp(t, s, 6);
    bad_special += !isnan(t[0]) + !(isinf(t[1]) && t[1] > 0) + (t[2] != 0.0f) +
                   !(isinf(t[3]) && t[3] > 0) + (t[4] != 0.0f) + (t[5] != 1.0f);
    CHECK(bad_special == 0, "vexp %s: NaN, +-inf, overflow and underflow (%d wrong)", isa, bad_special);
    /* every tail length, in place, with a guard after the end */
    int tails_ok = 1;
    for (int n = 0; n <= 40; n++) {
        float buf[48];
        for (int i = 0; i < 48; i++) {
            buf[i] = i < n ? -0.25f * (float)i : 123.0f;
        }
        lina_vexp(buf, buf, (size_t)n);
        for (int i = 0; i < 48; i++) {
            double want = i < n ? exp(-0.25 * i) : 123.0;
            tails_ok &= fabs(buf[i] - want) <= 4e-7 * want;
        }
    }
    CHECK(tails_ok, "vexp %s: lengths 0..40 in place, nothing written past the end", isa);
}

/* lina_sgemm_sm (lina_mm's register tiles on the AVX-512 and AVX2 paths,
 * lina_sgemm on the portable one) against a double reference: both transposes,
 * padded leading dimensions, alpha, beta (beta 0 never reads C: it starts as
 * NaN), every row tail of the 6-row tile, more rows than one panel of 132,
 * widths that are not whole vectors, K past the direct path's limit; the
 * columns past N are never written. */
static void test_sgemm_sm(const char *isa)
{
    static const int Ms[] = {1, 2, 5, 6, 7, 13, 64, 140}, Ns[] = {1, 3, 16, 17, 40, 64, 80, 128};
    static const int Ks[] = {1, 7, 64, 129, 600};
    double worst = 0.0;
    int n_cases = 0, bad_pad = 0, nan_read = 0;
    for (int mi = 0; mi < 8; mi++) {
        for (int ni = 0; ni < 8; ni++) {
            for (int ki = 0; ki < 5; ki++) {
                for (int v = 0; v < 8; v++) {
                    const int M = Ms[mi], N = Ns[ni], K = Ks[ki], ta = v & 1, tb = (v >> 1) & 1, bi = v >> 2;
                    if ((K == 600 && (M > 7 || N > 40)) || (M == 140 && (K > 64 || (N != 17 && N != 128)))) {
                        continue;
                    }
                    const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                    const float alpha = 0.75f, beta = bi ? 0.5f : 0.0f;
                    float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda);
                    float *B = malloc(sizeof(float) * (size_t)(tb ? N : K) * ldb);
                    float *C = malloc(sizeof(float) * (size_t)M * ldc);
                    double *ref = malloc(sizeof(double) * (size_t)M * N);
                    double *den = malloc(sizeof(double) * (size_t)M * N); /* alpha sum |a b| + |beta c| */
                    for (int i = 0; i < (ta ? K : M) * lda; i++) {
                        A[i] = (float)th_uniform(-1, 1);
                    }
                    for (int i = 0; i < (tb ? N : K) * ldb; i++) {
                        B[i] = (float)th_uniform(-1, 1);
                    }
                    for (int i = 0; i < M * ldc; i++) {
                        C[i] = bi ? (float)th_uniform(-1, 1) : NAN;
                    }
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            double acc = 0.0, abs_acc = 0.0;
                            for (int k = 0; k < K; k++) {
                                double a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
                                double b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
                                acc += a * b;
                                abs_acc += fabs(a * b);
                            }
                            const double cb = bi ? beta * (double)C[(size_t)m * ldc + n] : 0.0;
                            ref[(size_t)m * N + n] = alpha * acc + cb;
                            den[(size_t)m * N + n] = alpha * abs_acc + fabs(cb) + 1e-30;
                        }
                    }
                    lina_sgemm_sm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
                    double e = 0.0;
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            const float x = C[(size_t)m * ldc + n];
                            nan_read += isnan(x);
                            e = fmax(e, fabs(x - ref[(size_t)m * N + n]) / den[(size_t)m * N + n]);
                        }
                        for (int n = N; n < ldc; n++) {
                            bad_pad += bi ? 0 : !isnan(C[(size_t)m * ldc + n]);
                        }
                    }
                    worst = fmax(worst, e);
                    n_cases++;
                    free(A), free(B), free(C), free(ref), free(den);
                }
            }
        }
    }
    CHECK(worst <= 2e-6 && nan_read == 0,
          "sgemm_sm %s: %d products (M 1..140, N 1..128, K 1..600, both transposes, strides, alpha, beta) vs "
          "double reference (worst error %.1e of alpha sum |a b| + |beta c|, %d NaN read through beta = 0)", isa, n_cases, worst, nan_read);
    CHECK(bad_pad == 0, "sgemm_sm %s: nothing written past column N (%d written)", isa, bad_pad);
}

/* lina_mm's per-row ranges against a double reference: on_k (each row sums over
 * its own range of k, A zero outside it; empty ranges give beta C) and column
 * ranges (the columns of each row's range are computed; nothing past N is
 * written), A and A^T, beta 0 (C holds NaN) and 0.5, widths with vector tails */
static void test_mm_ranges(const char *isa)
{
    static const int shapes[][3] = {{7, 19, 33}, {13, 40, 64}, {64, 128, 64}, {140, 17, 9}};
    double worst = 0.0;
    int bad = 0, n_cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int v = 0; v < 8; v++) {
            const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], ta = v & 1, on_k = (v >> 1) & 1;
            const float beta = v >> 2 ? 0.5f : 0.0f;
            const int lda = (ta ? M : K) + 1, ldb = N + 3, ldc = N + 2, span = on_k ? K : N;
            float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda);
            float *B = malloc(sizeof(float) * (size_t)K * ldb);
            float *C = malloc(sizeof(float) * (size_t)M * ldc), *C0 = malloc(sizeof(float) * (size_t)M * ldc);
            int *lo = malloc(sizeof(int) * (size_t)M), *hi = malloc(sizeof(int) * (size_t)M);
            for (int m = 0; m < M; m++) { /* causal-like ranges, some empty, some full */
                lo[m] = m % 5 == 3 ? span : (m * 7) % (span + 1);
                hi[m] = m % 4 == 1 ? span : lo[m] + (m * 3) % (span - lo[m] + 1);
            }
            for (int m = 0; m < M; m++) {
                for (int k = 0; k < K; k++) {
                    const int keep = !on_k || (k >= lo[m] && k < hi[m]);
                    A[ta ? (size_t)k * lda + m : (size_t)m * lda + k] = keep ? (float)th_uniform(-1, 1) : 0.0f;
                }
            }
            for (size_t i = 0; i < (size_t)K * ldb; i++) {
                B[i] = (float)th_uniform(-1, 1);
            }
            for (size_t i = 0; i < (size_t)M * ldc; i++) {
                C[i] = beta != 0.0f ? (float)th_uniform(-1, 1) : NAN;
            }
            memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
            lina_mm(M, N, K, 0.75f, A, ta ? 1 : (size_t)lda, ta ? (size_t)lda : 1, B, (size_t)ldb, beta, C,
                    (size_t)ldc, lo, hi, on_k);
            for (int m = 0; m < M; m++) {
                const int n0 = on_k ? 0 : lo[m], n1 = on_k ? N : hi[m];
                for (int n = n0; n < n1; n++) {
                    double ref = beta != 0.0f ? beta * (double)C0[(size_t)m * ldc + n] : 0.0, mag = fabs(ref);
                    for (int k = 0; k < K; k++) {
                        const double p = 0.75 * A[ta ? (size_t)k * lda + m : (size_t)m * lda + k] *
                                         (double)B[(size_t)k * ldb + n];
                        ref += p;
                        mag += fabs(p);
                    }
                    const float got = C[(size_t)m * ldc + n];
                    if (isnan(got)) {
                        bad++;
                    } else {
                        worst = fmax(worst, fabs(got - ref) / (mag + 1e-30));
                    }
                }
                for (int n = N; n < ldc; n++) {
                    bad += memcmp(&C[(size_t)m * ldc + n], &C0[(size_t)m * ldc + n], sizeof(float)) != 0;
                }
            }
            n_cases++;
            free(A), free(B), free(C), free(C0), free(lo), free(hi);
        }
    }
    CHECK(worst < 1e-6 && bad == 0, "mm ranges %s: %d products with per-row ranges of k or of columns against "
          "double (worst %.2e relative to the sum of magnitudes; %d entries unwritten or written past N)", isa,
          n_cases, worst, bad);
}

/* lina_sgemm_layer against a double reference: the three forms the layers call
 * (A B^T, A B, A^T B), column counts with whole vector pairs, a single vector and
 * scalar tails, an inner size of A^T B longer than one pass, A^T B with few rows (a
 * weight gradient of two outputs), beta 0 (C holds NaN:
 * must not be read) and 1, on 1 and 2 threads */
static void test_sgemm_layer(const char *isa)
{
    static const int shapes[][3] = {{37, 48, 19}, {64, 128, 64}, {21, 130, 7}, {300, 16, 600}, {9, 40, 33},
                                     {2, 64, 300}};
    double worst = 0.0;
    int nan_left = 0;
    for (int th = 1; th <= 2; th++) {
        lina_set_threads(th);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            for (int form = 0; form < 3; form++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const int ta = form == 2, tb = form == 0;
                const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 5, ldc = N + 2;
                float *A = malloc(sizeof(float) * (size_t)(ta ? K : M) * lda);
                float *B = malloc(sizeof(float) * (size_t)(tb ? N : K) * ldb);
                float *C = malloc(sizeof(float) * (size_t)M * ldc);
                for (size_t i = 0; i < (size_t)(ta ? K : M) * lda; i++) {
                    A[i] = (float)th_uniform(-1, 1);
                }
                for (size_t i = 0; i < (size_t)(tb ? N : K) * ldb; i++) {
                    B[i] = (float)th_uniform(-1, 1);
                }
                for (int beta = 0; beta <= 1; beta++) {
                    for (size_t i = 0; i < (size_t)M * ldc; i++) {
                        C[i] = beta ? (float)th_uniform(-1, 1) : NAN;
                    }
                    float *C0 = malloc(sizeof(float) * (size_t)M * ldc);
                    memcpy(C0, C, sizeof(float) * (size_t)M * ldc);
                    lina_sgemm_layer(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, (float)beta, C, ldc);
                    for (int m = 0; m < M; m++) {
                        for (int n = 0; n < N; n++) {
                            double ref = beta ? C0[(size_t)m * ldc + n] : 0.0, mag = fabs(ref);
                            for (int k = 0; k < K; k++) {
                                double a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
                                double b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
                                ref += 0.5 * a * b;
                                mag += fabs(0.5 * a * b);
                            }
                            const float got = C[(size_t)m * ldc + n];
                            if (isnan(got)) {
                                nan_left++;
                            } else if (fabs(got - ref) / (mag + 1e-30) > worst) {
                                worst = fabs(got - ref) / (mag + 1e-30);
                            }
                        }
                        /* the padding past column N is not touched */
                        for (int n = N; n < ldc; n++) {
                            if (memcmp(&C[(size_t)m * ldc + n], &C0[(size_t)m * ldc + n], sizeof(float))) {
                                nan_left += 1000;
                            }
                        }
                    }
                    free(C0);
                }
                free(A);
                free(B);
                free(C);
            }
        }
    }
    lina_set_threads(0);
    CHECK(worst < 1e-6 && nan_left == 0, "sgemm_layer %s: A B^T, A B, A^T B against double (worst %.2e relative to "
          "the sum of magnitudes; %d entries unwritten or written past N)", isa, worst, nan_left);
}

/* lina_check_log_gates and lina_mix_out_finite against a plain scan: every kind of bad
 * value (NaN of either sign, +-Inf, a positive value, +0.0 and -0.0 allowed) at every
 * position of every length 0..40 (the vector bodies and their tails), and the probes of
 * an output at odd shapes (a bad value inside a probe found, one elsewhere ignored). */
static void test_checks(const char *isa)
{
    float g[48];
    const float bad_vals[] = {NAN, -NAN, INFINITY, -INFINITY, 0.5f, FLT_MAX, FLT_MIN};
    const int bad_code[] = {1, 1, 1, 1, 2, 2, 2};
    int wrong = 0;
    for (int n = 0; n <= 40; n++) {
        for (int i = 0; i < n; i++) {
            g[i] = -(float)(i % 7) * 0.25f - (i % 3 == 0 ? 0.0f : 1e-30f);
        }
        float w = 1.0f;
        wrong += lina_check_log_gates(g, (size_t)n, &w) != 0;
        if (n) {
            g[n / 2] = 0.0f;
            g[n - 1] = -0.0f;
            wrong += lina_check_log_gates(g, (size_t)n, &w) != 0;
            g[n - 1] = -FLT_MAX;
            g[n / 2] = -1.0f;
        }
        for (int pos = 0; pos < n; pos++) {
            for (size_t b = 0; b < sizeof bad_vals / sizeof bad_vals[0]; b++) {
                const float keep = g[pos];
                g[pos] = bad_vals[b];
                w = 0.0f;
                const int rc = lina_check_log_gates(g, (size_t)n, &w);
                wrong += rc != bad_code[b];
                if (bad_code[b] == 2) {
                    wrong += w != bad_vals[b];
                } else {
                    wrong += isfinite(w);
                }
                wrong += lina_check_log_gates(g, (size_t)n, NULL) != bad_code[b];
                g[pos] = keep;
            }
        }
    }
    CHECK(wrong == 0, "check_log_gates %s: every bad value at every position of lengths 0..40 (%d wrong)",
          isa, wrong);

    const int shapes[][4] = {{1, 1, 1, 1}, {2, 3, 1, 5}, {3, 7, 2, 17}, {1, 33, 3, 64}};
    int pwrong = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], V = shapes[s][3];
        const size_t n = (size_t)B * T * H * V;
        float *o = malloc(n * sizeof *o);
        for (size_t i = 0; i < n; i++) {
            o[i] = (float)(i % 13) - 6.0f;
        }
        pwrong += lina_mix_out_finite(o, B, T, H, V) != 1;
        for (size_t i = 0; i < n; i++) {
            const size_t v = i % V, t = i / ((size_t)H * V) % T;
            const int probed = v == 0 || t == (size_t)T - 1;
            for (int b = 0; b < 4; b++) {
                const float keep = o[i];
                o[i] = bad_vals[b];
                pwrong += lina_mix_out_finite(o, B, T, H, V) != !probed;
                o[i] = keep;
            }
        }
        free(o);
    }
    pwrong += lina_mix_out_finite(NULL, 0, 0, 0, 0) != 1;
    CHECK(pwrong == 0, "mix_out_finite %s: column 0 and the last token found, the rest not read (%d wrong)",
          isa, pwrong);
}

int main(void)
{
    test_select();
    char sup[64];
    snprintf(sup, sizeof sup, "%s", lina_isa_supported());
    for (char *p = strtok(sup, " "); p; p = strtok(NULL, " ")) {
        CHECK(lina_isa_set(p) == LINA_OK && !strcmp(lina_isa_name(), p), "isa: switch to %s", p);
        test_vexp_path(p);
        test_sgemm_sm(p);
        test_mm_ranges(p);
        test_sgemm_layer(p);
        test_checks(p);
    }
    return th_exit();
}
