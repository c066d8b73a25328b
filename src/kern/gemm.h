/* gemm.h -- the direct small-M path of lina_sgemm (gemm.c), internal. */
#ifndef LINA_KERN_GEMM_H
#define LINA_KERN_GEMM_H

/* the most rows of A that lina_sgemm_rows_nt takes on its direct path (batch
 * decode's projections; one row is a GEMV in lina_sgemm). Measured on one
 * AVX-512 core (CPU time, K 256-768, N 256-768): 2-8 rows run at 1.3-2.5x
 * OpenBLAS's rate; from 16 rows on OpenBLAS is as fast or faster. */
#define LINA_SGEMM_SMALL_M 8

/* C[M,N] = alpha A[M,K] B[N,K]^T + beta C (lina_sgemm(0, 1, ...)); 2 <= M <=
 * LINA_SGEMM_SMALL_M runs the direct path (the AVX-512 kernel path), the rest OpenBLAS */
void lina_sgemm_rows_nt(int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc);

/* 1 unless the environment sets LINA_SGEMM_SMALL=0 or lina_sgemm_set_small(0) was called */
int lina_sgemm_small_enabled(void);
/* turn the direct path on (1) or off (0, everything through OpenBLAS) */
void lina_sgemm_set_small(int on);

#endif
