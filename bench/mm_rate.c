/* mm_rate.c -- the product rates that bound a small model's training step, by CPU time
 * on one thread: the machine's FP32 FMA peak (independent fused multiply-adds in
 * registers, 16 lanes with AVX-512F, else 8 with AVX2 + FMA), OpenBLAS SGEMM at 1024^3,
 * and the layers' products (lina_sgemm_layer: lina_mm's register tiles on the AVX-512
 * path, OpenBLAS otherwise) against OpenBLAS's cblas_sgemm at the small models'
 * projection shapes (8192 rows = B 64 x T 128, N and K = d_model, and N = 256, the
 * vocabulary, for the output head). One JSON line. Built and run by
 * bench/small_model_bench.sh:
 *   cc -std=c11 -O2 -fopenmp -Iinclude -Isrc/kern bench/mm_rate.c build/liblina.a \
 *      -lopenblas -lcjson $(pkg-config --libs ompi-c) -lm -o mm_rate && ./mm_rate [D ...]
 * (the MPI libraries only where liblina.a was built with MPI). */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE
#endif
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gemm.h"
#include "lina.h"

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

#define NACC 12
static volatile float sink; /* written by the peak loops: they are not pure, so every call runs */

/* NACC independent chains of FMAs held in named registers (an array of them may be kept in
 * memory, which measures store forwarding instead of the FMA units); the empty asm keeps the
 * compiler from folding the chains; the sum of the lanes goes to sink */
#define PEAK(T, SET1, FMA, ADD, BAR)                                                                         \
    T a = SET1(0.999f), b = SET1(1e-3f);                                                                     \
    T x0 = b, x1 = b, x2 = b, x3 = b, x4 = b, x5 = b, x6 = b, x7 = b, x8 = b, x9 = b, x10 = b, x11 = b;      \
    for (long it = 0; it < iters; it++) {                                                                    \
        x0 = FMA(x0, a, b), x1 = FMA(x1, a, b), x2 = FMA(x2, a, b), x3 = FMA(x3, a, b);                      \
        x4 = FMA(x4, a, b), x5 = FMA(x5, a, b), x6 = FMA(x6, a, b), x7 = FMA(x7, a, b);                      \
        x8 = FMA(x8, a, b), x9 = FMA(x9, a, b), x10 = FMA(x10, a, b), x11 = FMA(x11, a, b);                  \
        __asm__("" : BAR(x0), BAR(x1), BAR(x2), BAR(x3), BAR(x4), BAR(x5));                                  \
        __asm__("" : BAR(x6), BAR(x7), BAR(x8), BAR(x9), BAR(x10), BAR(x11));                                \
    }                                                                                                        \
    T s = ADD(ADD(ADD(x0, x1), ADD(x2, x3)), ADD(ADD(x4, x5), ADD(x6, x7)));                                 \
    s = ADD(s, ADD(ADD(x8, x9), ADD(x10, x11)));                                                             \
    float t[sizeof(T) / sizeof(float)], sum = 0.0f;                                                          \
    memcpy(t, &s, sizeof(s));                                                                                \
    for (size_t l = 0; l < sizeof(T) / sizeof(float); l++) {                                                 \
        sum += t[l];                                                                                         \
    }                                                                                                        \
    sink = sum;
#define BARV(x) "+v"(x)
#define BARX(x) "+x"(x)

__attribute__((target("avx512f"))) static void fma_peak512(long iters)
{
    PEAK(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, BARV)
}

__attribute__((target("avx2,fma"))) static void fma_peak256(long iters)
{
    PEAK(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, BARX)
}

/* best of 5 CPU-second rates of 2 M N K FLOP */
#define RATE(flop, call)                                                                                     \
    do {                                                                                                     \
        double best_ = 1e30;                                                                                 \
        call;                                                                                                \
        for (int r_ = 0; r_ < 5; r_++) {                                                                     \
            double c0_ = cpu_now();                                                                          \
            call;                                                                                            \
            double dc_ = cpu_now() - c0_;                                                                    \
            best_ = dc_ > 0 && dc_ < best_ ? dc_ : best_;                                                    \
        }                                                                                                    \
        rate = (flop) / best_ / 1e9;                                                                         \
    } while (0)

int main(int argc, char **argv)
{
    omp_set_num_threads(1);
    openblas_set_num_threads(1);
    double rate;
    int w512 = __builtin_cpu_supports("avx512f"), w256 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const long iters = 20000000;
    double peak = 0.0;
    if (w512) {
        RATE(2.0 * 16 * NACC * iters, fma_peak512(iters));
        peak = rate;
    } else if (w256) {
        RATE(2.0 * 8 * NACC * iters, fma_peak256(iters));
        peak = rate;
    }
    double peak256 = 0.0;
    if (w256) {
        RATE(2.0 * 8 * NACC * iters, fma_peak256(iters));
        peak256 = rate;
    }
    const int n = 1024, M = 8192;
    float *A = malloc(sizeof(float) * (size_t)n * n), *B = malloc(sizeof(float) * (size_t)n * n),
          *C = malloc(sizeof(float) * (size_t)M * 256); /* >= n * n */
    if (!A || !B || !C) {
        return 1;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        A[i] = (float)((i * 7) % 13) * 0.1f - 0.6f;
        B[i] = (float)((i * 5) % 11) * 0.1f - 0.5f;
    }
    RATE(2.0 * n * n * n, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n));
    printf("{\"isa\": \"%s\", \"fma_peak_cpu_gflops\": %.1f, \"fma256_peak_cpu_gflops\": %.1f, "
           "\"sgemm_cpu_gflops\": %.1f",
           lina_isa_name(), peak, peak256, rate);
    for (int a = 1; a < argc; a++) {
        int d = atoi(argv[a]);
        if (d < 1 || d > 128) {
            continue;
        }
        /* Y[M, N] = X[M, K] W[N, K]^T: a projection (N = d) and the output head (N = 256) */
        int shapes[2] = {d, 256};
        for (int s = 0; s < 2; s++) {
            int N = shapes[s], K = d;
            double fl = 2.0 * M * N * K;
            RATE(fl, lina_sgemm_layer(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N));
            double lr = rate;
            RATE(fl, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, C, N));
            printf(", \"d%d_n%d_layer_cpu_gflops\": %.1f, \"d%d_n%d_openblas_cpu_gflops\": %.1f", d, N, lr, d, N, rate);
        }
    }
    printf("}\n");
    free(A);
    free(B);
    free(C);
    return sink == 12345.0f; /* reads the sums */
}
