/* gemm.c -- row-major SGEMM through OpenBLAS (CBLAS interface). */
#include "lina.h"

#include <cblas.h>

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
