/* gemm.h -- the direct small-M path of lina_sgemm and the small-product kernel (gemm.c), internal. */
#ifndef LINA_KERN_GEMM_H
#define LINA_KERN_GEMM_H

/* the most rows of A that lina_sgemm_rows_nt takes on its direct path (decode's
 * projections at batch B = M). Measured on one core of an AMD EPYC (CPU time,
 * the projections of a 10M-parameter model's decode step, 29 MB of weights one
 * after the other): 1-64 rows run at 1.2-2.4x OpenBLAS's rate (sgemv for one
 * row, its Haswell SGEMM kernel for more) on the AVX-512 path; 1-32 rows at
 * 1.0-3.0x on the AVX2 path, which leaves more than 32 rows to OpenBLAS (0.9x
 * at 64 rows). */
#define LINA_SGEMM_SMALL_M 64

/* C[M,N] = alpha A[M,K] B[N,K]^T + beta C (lina_sgemm(0, 1, ...)); 1 <= M <=
 * LINA_SGEMM_SMALL_M (32 on the AVX2 path) runs the direct path on the AVX-512
 * and AVX2 kernel paths, the rest (and the portable path) OpenBLAS */
void lina_sgemm_rows_nt(int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc);

/* C[M,N] = alpha op(A) op(B) + beta C, as lina_sgemm, for the small products of
 * the chunk forms (every side up to a few hundred): on the AVX-512 path a
 * register-tiled kernel reads A and an untransposed B where they lie (no
 * packing, no library call; a transposed B is transposed into a panel first)
 * when K <= LINA_SGEMM_SM_MAX_K and the panel fits; everything else, and every
 * other path, is lina_sgemm. LINA_SGEMM_SMALL=0 turns it off too. */
#define LINA_SGEMM_SM_MAX_K 512
void lina_sgemm_sm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);

/* 1 unless the environment sets LINA_SGEMM_SMALL=0 or lina_sgemm_set_small(0) was called */
int lina_sgemm_small_enabled(void);
/* turn the direct path on (1) or off (0, everything through OpenBLAS) */
void lina_sgemm_set_small(int on);

#endif
