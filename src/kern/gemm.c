/* gemm.c -- row-major SGEMM through OpenBLAS (CBLAS interface). */
#include "lina.h"
#include "gemm.h"
#include "isa.h"

#include <stdlib.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* A few rows against a weight matrix, C[M,N] = alpha A[M,K] B[N,K]^T + beta C
 * with 2 <= M <= LINA_SGEMM_SMALL_M (gemm.h; batch decode: the activations of a few
 * sequences against a projection). OpenBLAS packs all of B for such a call,
 * which costs about as much as the product itself; here B is streamed once
 * from where it lies: 4 x 4 blocks of dot products over k, 16 lanes wide. */
#if defined(__AVX512F__)
#include <immintrin.h>

static void small_nt_block(int mb, int nb, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                           float beta, float *C, int ldc)
{
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 4; j++) {
            acc[i][j] = _mm512_setzero_ps();
        }
    }
    /* rows past mb / nb read row 0 again (always valid) and are not stored */
    const float *a[4], *b[4];
    for (int i = 0; i < 4; i++) {
        a[i] = A + (size_t)(i < mb ? i : 0) * lda;
        b[i] = B + (size_t)(i < nb ? i : 0) * ldb;
    }
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 av[4], bv[4];
        for (int i = 0; i < 4; i++) {
            av[i] = _mm512_loadu_ps(a[i] + k);
            bv[i] = _mm512_loadu_ps(b[i] + k);
        }
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < 4; j++) {
                acc[i][j] = _mm512_fmadd_ps(av[i], bv[j], acc[i][j]);
            }
        }
    }
    if (k < K) {
        __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);
        __m512 av[4], bv[4];
        for (int i = 0; i < 4; i++) {
            av[i] = _mm512_maskz_loadu_ps(m, a[i] + k);
            bv[i] = _mm512_maskz_loadu_ps(m, b[i] + k);
        }
        for (int i = 0; i < 4; i++) {
            for (int j = 0; j < 4; j++) {
                acc[i][j] = _mm512_fmadd_ps(av[i], bv[j], acc[i][j]);
            }
        }
    }
    for (int i = 0; i < mb; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nb; j++) {
            float v = alpha * _mm512_reduce_add_ps(acc[i][j]);
            c[j] = beta == 0.0f ? v : v + beta * c[j];
        }
    }
}

static void sgemm_small_nt(int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                           float beta, float *C, int ldc)
{
    const int nblk = (N + 3) / 4;
    int par = 0;
#ifdef _OPENMP
    /* split the weight rows over the threads unless already inside a parallel region */
    par = !omp_in_parallel() && (double)M * N * K >= 262144.0;
#endif
#pragma omp parallel for schedule(static) if (par)
    for (int jb = 0; jb < nblk; jb++) {
        int n0 = jb * 4, nb = N - n0 < 4 ? N - n0 : 4;
        for (int m0 = 0; m0 < M; m0 += 4) {
            int mb = M - m0 < 4 ? M - m0 : 4;
            small_nt_block(mb, nb, K, alpha, A + (size_t)m0 * lda, lda, B + (size_t)n0 * ldb, ldb, beta,
                           C + (size_t)m0 * ldc + n0, ldc);
        }
    }
}
#define HAVE_SMALL_NT 1
#else
#define HAVE_SMALL_NT 0
#endif

void LINA_KFN(lina_sgemm_rows_nt)(int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                                  int ldb, float beta, float *C, int ldc)
{
#if HAVE_SMALL_NT
    if (M >= 2 && M <= LINA_SGEMM_SMALL_M && N > 0 && K > 0 && lina_sgemm_small_enabled()) {
        sgemm_small_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    lina_sgemm(0, 1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH_VOID(lina_sgemm_rows_nt,
                       (int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc),
                       (M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

static int g_small = -1; /* -1: not read yet; LINA_SGEMM_SMALL=0 turns the direct path off */

int lina_sgemm_small_enabled(void)
{
    if (g_small < 0) {
        const char *e = getenv("LINA_SGEMM_SMALL");
        g_small = !(e && e[0] == '0');
    }
    return g_small;
}

void lina_sgemm_set_small(int on)
{
    g_small = on ? 1 : 0;
}

void lina_sgemm(int transA, int transB, int M, int N, int K, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta,
                float *C, int ldc)
{
    if (M <= 0 || N <= 0) {
        return;
    }
    if (K <= 0) {
        /* C = beta * C */
        for (int i = 0; i < M; i++) {
            for (int j = 0; j < N; j++) {
                C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
            }
        }
        return;
    }
    /* one row or one column (decode steps, per-token projections): a GEMV.
     * OpenBLAS's SGEMM would pack the whole of the other matrix for it. */
    if (M == 1) {
        /* C[1,N] = alpha a op(B) + beta C, a = row 0 of op(A) */
        int inca = transA ? lda : 1;
        if (transB) { /* B [N,K]: C = B a */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, N, K, alpha, B, ldb, A, inca, beta, C, 1);
        } else {      /* B [K,N]: C = B^T a */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, N, alpha, B, ldb, A, inca, beta, C, 1);
        }
        return;
    }
    if (N == 1) {
        /* C[M,1] = alpha op(A) b + beta C, b = column 0 of op(B) */
        int incb = transB ? 1 : ldb;
        if (transA) { /* A [K,M] */
            cblas_sgemv(CblasRowMajor, CblasTrans, K, M, alpha, A, lda, B, incb, beta, C, ldc);
        } else {      /* A [M,K] */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, M, K, alpha, A, lda, B, incb, beta, C, ldc);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta,
                C, ldc);
}
#endif /* LINA_ISA_PRIMARY */
