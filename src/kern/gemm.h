/* gemm.h -- lina's own product loops next to lina_sgemm (gemm.c), internal: the
 * direct small-M path, lina's register-tiled product lina_mm (and through it the
 * chunk forms' small products, lina_sgemm_sm) and the layers' products. */
#ifndef LINA_KERN_GEMM_H
#define LINA_KERN_GEMM_H

#include <stddef.h>

#include "isa.h"

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
 * the chunk forms (every side up to a few hundred): on the AVX-512 and AVX2
 * paths lina_mm's register tiles read A and an untransposed B where they lie
 * (no packing, no library call; a transposed B is transposed into a panel
 * first, in registers) when K <= LINA_SGEMM_SM_MAX_K and the panel fits;
 * everything else, and the portable path, is lina_sgemm. LINA_SGEMM_SMALL=0
 * turns it off too. */
#define LINA_SGEMM_SM_MAX_K 512
void lina_sgemm_sm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);
/* lina_sgemm_sm with lina_mm's per-row ranges (lo, hi, on_k as there: each row of
 * C sums over its range of k, op(A) 0 outside it, or needs only its range of
 * columns), for the triangular products of the chunk forms; where it falls back on
 * lina_sgemm the whole product is computed, which is the same. Call it as
 * LINA_KFN(lina_sgemm_smr) from a file compiled per path. */
void LINA_KFN(lina_sgemm_smr)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                              const float *B, int ldb, float beta, float *C, int ldc, const int *lo, const int *hi,
                              int on_k);

/* 1 unless the environment sets LINA_SGEMM_SMALL=0 or lina_sgemm_set_small(0) was called */
int lina_sgemm_small_enabled(void);
/* turn the direct path on (1) or off (0, everything through OpenBLAS) */
void lina_sgemm_set_small(int on);

/* C (ldc) = beta C + alpha A B, rows [0, M), columns [0, N), A(m, k) = A[m sam + k sak]
 * (A or A^T row-major), B row-major (ldb); beta 0 writes C without reading it. lo, hi
 * (NULL: none): per row m a range [lo[m], hi[m]) of k (on_k: A must be 0 outside it) or
 * of columns (!on_k: at least those are computed, the rest may be left as they were).
 * lina's own product kernel, one per instruction-set path (register tiles of 6 rows by
 * 4 vectors of 16 on AVX-512, 6 by 2 vectors of 8 on AVX2; plain loops on the portable
 * path), no packing, no threads: lina_sgemm_sm, the softmax attention kernel's tiles
 * and lina_sgemm_layer. Call it as LINA_KFN(lina_mm) from a file compiled per path;
 * lina_mm is the same on the path chosen at start-up. */
void LINA_KFN(lina_mm)(int M, int N, int Kd, float alpha, const float *A, size_t sam, size_t sak, const float *B,
                       size_t ldb, float beta, float *C, size_t ldc, const int *lo, const int *hi, int on_k);
void lina_mm(int M, int N, int Kd, float alpha, const float *A, size_t sam, size_t sak, const float *B, size_t ldb,
             float beta, float *C, size_t ldc, const int *lo, const int *hi, int on_k);

/* P [K, ldp] = B^T of B [N, K] (ldb): P[k ldp + j] = B[j ldb + k], in blocks of one
 * vector by one vector transposed in registers (plain loops on the portable path and at
 * the edges). Call it as LINA_KFN(lina_transpose) from a file compiled per path. */
void LINA_KFN(lina_transpose)(const float *B, size_t ldb, int N, int K, float *P, size_t ldp);

/* lina_sgemm for the layers' products (projections, lm_head: many rows against
 * a small weight). With the AVX-512 path, M at most LINA_MM_MAX_N unless it is
 * the long side, and B (or a pass of 256 of its rows in A^T B) at most
 * LINA_MM_MAX_B floats (512 KB, half a core's L2: it is streamed once per 4 rows
 * of C): lina_mm split over the threads; else lina_sgemm (most of the 10M
 * models' products, for one). Measured on one AVX-512 core (CPU time, M 8192,
 * N 64-384, K 32-192): 1.2-1.7x OpenBLAS's rate with its AVX2 (Haswell)
 * kernels, whose packing of the 8192-row operand is a large part of such a
 * product; on the AVX2 path lina_mm is no faster than OpenBLAS, which runs it.
 * A B and A B^T with at most LINA_SGEMM_SMALL_M rows go to lina_sgemm; A^T B (a
 * weight gradient) takes lina_mm at any M on the AVX-512 path and up to M = 128 on
 * the AVX2 path (the rates in gemm.c). */
#define LINA_MM_MAX_N 1024
#define LINA_MM_MAX_B 131072
void lina_sgemm_layer(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc);

#endif
