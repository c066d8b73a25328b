/* gemm.c -- row-major SGEMM through OpenBLAS (CBLAS interface). */
#include "lina.h"
#include "gemm.h"
#include "isa.h"

#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* A few rows against a weight matrix, C[M,N] = alpha A[M,K] B[N,K]^T + beta C
 * with 1 <= M <= LINA_SGEMM_SMALL_M (gemm.h; decode: the activations of B
 * sequences against a projection). OpenBLAS packs all of B for such a call,
 * which costs about as much as the product itself; here B is streamed once
 * from where it lies. A tile is SK_MB rows of A times SK_NB rows of B, one
 * vector accumulator per pair (SK_MB x SK_NB = LINA_VL of them) summed over k;
 * the LINA_VL accumulators are then reduced to one vector of the LINA_VL dot
 * products at once. Each tile of B rows is read from memory once, with the
 * tile SK_PF tiles on prefetched meanwhile, and taken against every row of A
 * while it sits in L1. One row of A (a B = 1 decode step) takes LINA_VL rows
 * of B per tile. Each C element is one thread's, summed in one order whatever
 * the thread count. */
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>

#define SK_PF 2 /* prefetch distance in tiles of B (1-4 tried: 2 was best, on either path) */

#if defined(__AVX512F__)
#define SK_MAX_M LINA_SGEMM_SMALL_M /* the most rows of A taken here; OpenBLAS above */
#define SK_MB 4 /* rows of A per tile (1 for M == 1) */
#define SK_NB 4 /* rows of B per tile (LINA_VL for M == 1) */
/* the first n (< 16) floats of p, the rest 0 */
static inline __m512 sk_load_tail(const float *p, int n)
{
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
/* lane i = the sum of the lanes of x[i], i < 16 */
static inline __m512 sk_hsum(const __m512 *x)
{
    __m512 s2[8], s4[4];
    for (int i = 0; i < 8; i++) { /* per 128-bit lane: x[2i] in lanes 0, 2; x[2i+1] in 1, 3 */
        s2[i] = _mm512_add_ps(_mm512_unpacklo_ps(x[2 * i], x[2 * i + 1]),
                              _mm512_unpackhi_ps(x[2 * i], x[2 * i + 1]));
    }
    for (int i = 0; i < 4; i++) { /* per 128-bit lane L: x[4i+j]'s part of L in lane j */
        const __m512d a = _mm512_castps_pd(s2[2 * i]), b = _mm512_castps_pd(s2[2 * i + 1]);
        s4[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)), _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
    }
    /* the 4 128-bit lanes of each s4[i] summed into 128-bit lane i */
    __m512 p = _mm512_add_ps(_mm512_shuffle_f32x4(s4[0], s4[1], 0x44), _mm512_shuffle_f32x4(s4[0], s4[1], 0xee));
    __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(s4[2], s4[3], 0x44), _mm512_shuffle_f32x4(s4[2], s4[3], 0xee));
    return _mm512_add_ps(_mm512_shuffle_f32x4(p, q, 0x88), _mm512_shuffle_f32x4(p, q, 0xdd));
}
#else
#define SK_MAX_M 32 /* AVX2: OpenBLAS's Haswell kernel is faster at 64 rows */
#define SK_MB 2
#define SK_NB 4
static inline __m256 sk_load_tail(const float *p, int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}
static inline __m256 sk_hsum(const __m256 *x)
{
    return lina_hsum8(x);
}
#endif

/* C[mb, nb] (mb <= MB, nb <= NB, MB x NB = LINA_VL) of one tile; rows past mb / nb
 * read row 0 again (always valid) and are not stored */
static inline __attribute__((always_inline)) void sk_tile(const int MB, const int NB, int mb, int nb, int K,
                                                          float alpha, const float *A, int lda, const float *B,
                                                          int ldb, float beta, float *C, int ldc, const float *pf)
{
    lina_vf acc[LINA_VL];
    const float *a[LINA_VL], *b[LINA_VL];
    for (int i = 0; i < MB * NB; i++) {
        acc[i] = LINA_VZERO();
    }
    for (int i = 0; i < MB; i++) {
        a[i] = A + (size_t)(i < mb ? i : 0) * lda;
    }
    for (int j = 0; j < NB; j++) {
        b[j] = B + (size_t)(j < nb ? j : 0) * ldb;
    }
    int k = 0;
    for (; k + LINA_VL <= K; k += LINA_VL) {
        if (pf) { /* a later tile of B on its way from memory while this one is used */
            for (int j = 0; j < NB; j++) {
                _mm_prefetch((const char *)(pf + (size_t)j * ldb + k), _MM_HINT_T0);
            }
        }
        lina_vf av[SK_MB];
        for (int i = 0; i < MB; i++) {
            av[i] = LINA_VLD(a[i] + k);
        }
        for (int j = 0; j < NB; j++) {
            lina_vf bv = LINA_VLD(b[j] + k);
#if !defined(__AVX512F__)
            __asm__("" : "+x"(bv)); /* AVX2: one load per row of B, not one per use (load-bound otherwise) */
#endif
            for (int i = 0; i < MB; i++) {
                acc[i * NB + j] = LINA_VFMA(av[i], bv, acc[i * NB + j]);
            }
        }
    }
    if (k < K) {
        lina_vf av[SK_MB];
        for (int i = 0; i < MB; i++) {
            av[i] = sk_load_tail(a[i] + k, K - k);
        }
        for (int j = 0; j < NB; j++) {
            const lina_vf bv = sk_load_tail(b[j] + k, K - k);
            for (int i = 0; i < MB; i++) {
                acc[i * NB + j] = LINA_VFMA(av[i], bv, acc[i * NB + j]);
            }
        }
    }
    float s[LINA_VL];
    LINA_VST(s, sk_hsum(acc)); /* s[i NB + j] = row i of A . row j of B */
    for (int i = 0; i < mb; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < nb; j++) {
            c[j] = beta == 0.0f ? alpha * s[i * NB + j] : alpha * s[i * NB + j] + beta * c[j];
        }
    }
}

static void sgemm_small_nt(int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                           float beta, float *C, int ldc)
{
    const int nbw = M == 1 ? LINA_VL : SK_NB, nblk = (N + nbw - 1) / nbw;
    int par = 0;
#ifdef _OPENMP
    /* split the rows of B over the threads unless already inside a parallel region */
    par = !omp_in_parallel() && (double)M * N * K >= 262144.0;
#endif
#pragma omp parallel for schedule(static) if (par)
    for (int jb = 0; jb < nblk; jb++) {
        const int n0 = jb * nbw, nb = N - n0 < nbw ? N - n0 : nbw;
        /* the tile SK_PF tiles on, when there is one */
        const float *pf = jb + SK_PF < nblk ? B + (size_t)(n0 + SK_PF * nbw) * ldb : NULL;
        if (M == 1) {
            sk_tile(1, LINA_VL, 1, nb, K, alpha, A, lda, B + (size_t)n0 * ldb, ldb, beta, C + n0, ldc, pf);
            continue;
        }
        for (int m0 = 0; m0 < M; m0 += SK_MB) {
            const int mb = M - m0 < SK_MB ? M - m0 : SK_MB;
            sk_tile(SK_MB, SK_NB, mb, nb, K, alpha, A + (size_t)m0 * lda, lda, B + (size_t)n0 * ldb, ldb, beta,
                    C + (size_t)m0 * ldc + n0, ldc, m0 == 0 ? pf : NULL);
        }
    }
}
#define HAVE_SMALL_NT 1
#else
#define HAVE_SMALL_NT 0
#endif

/* Small products of the chunk forms (sides of 16..128, operands in L1/L2):
 * C[M,N] = alpha op(A) op(B) + beta C with op(B) read in place when it is
 * not transposed (rows of B are rows of op(B)): a register tile of SM_MR rows
 * of C by SM_NV vectors, each k step one broadcast of op(A)[i,k] per row and
 * one load of op(B)[k, j..] per vector. No packing and no call overhead,
 * which at these sizes cost OpenBLAS a third of its time. A transposed B
 * (C = A B^T) is transposed into a zero-padded panel first (16 x 16 blocks in
 * registers), as is a width N that is not a whole number of vectors. */
#if defined(__AVX512F__)
#define SM_MR 6
#define SM_NV 4
#define SM_NB (SM_NV * LINA_VL)
#define SM_PANEL 16384 /* floats of the padded panel of op(B) (K x N rounded up) */

static inline __attribute__((always_inline)) void sm_tile(int mb, int nv, int K, float alpha, const float *A,
                                                          size_t sa, size_t sk, const float *B, size_t ldb,
                                                          float beta, float *C, size_t ldc, int ncols)
{
    lina_vf acc[SM_MR][SM_NV];
    for (int i = 0; i < mb; i++) {
        for (int v = 0; v < nv; v++) {
            acc[i][v] = LINA_VZERO();
        }
    }
    for (int k = 0; k < K; k++) {
        lina_vf b[SM_NV];
        for (int v = 0; v < nv; v++) {
            b[v] = LINA_VLD(B + (size_t)k * ldb + (size_t)v * LINA_VL);
        }
        for (int i = 0; i < mb; i++) {
            const lina_vf a = LINA_VSET1(A[(size_t)i * sa + (size_t)k * sk]);
            for (int v = 0; v < nv; v++) {
                acc[i][v] = LINA_VFMA(a, b[v], acc[i][v]);
            }
        }
    }
    const lina_vf va = LINA_VSET1(alpha), vb = LINA_VSET1(beta);
    for (int i = 0; i < mb; i++) {
        float *c = C + (size_t)i * ldc;
        for (int v = 0; v < nv; v++) {
            lina_vf x = LINA_VMUL(va, acc[i][v]);
            float *cv = c + (size_t)v * LINA_VL;
            const int nt = ncols - v * LINA_VL;
            if (nt >= LINA_VL) {
                if (beta != 0.0f) {
                    x = LINA_VFMA(vb, LINA_VLD(cv), x);
                }
                LINA_VST(cv, x);
            } else { /* the last, partial vector of the row */
                const __mmask16 m = (__mmask16)((1u << nt) - 1u);
                if (beta != 0.0f) {
                    x = LINA_VFMA(vb, _mm512_maskz_loadu_ps(m, cv), x);
                }
                _mm512_mask_storeu_ps(cv, m, x);
            }
        }
    }
}

/* one column block of SM_NB (or ncols) columns, all rows */
#define SM_TILE_ROWS(nv)                                                                      \
    do {                                                                                      \
        for (int i0 = 0; i0 < M; i0 += SM_MR) {                                               \
            const int mb = M - i0 < SM_MR ? M - i0 : SM_MR;                                   \
            const float *a = A + (size_t)i0 * sa;                                             \
            float *c = C + (size_t)i0 * ldc + j0;                                             \
            switch (mb) {                                                                     \
            case 6: sm_tile(6, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols); break; \
            case 5: sm_tile(5, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols); break; \
            case 4: sm_tile(4, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols); break; \
            case 3: sm_tile(3, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols); break; \
            case 2: sm_tile(2, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols); break; \
            default: sm_tile(1, nv, K, alpha, a, sa, sk, b, lb, beta, c, (size_t)ldc, ncols);      \
            }                                                                                 \
        }                                                                                     \
    } while (0)

/* 16 x 16 block transpose, d[k * ldd + j] = s[j * lds + k]: pairs of rows
 * interleaved by 32 then 64 bits (each 128-bit lane then holds one column of
 * four rows), then the lanes gathered across the four groups of rows */
static inline void sm_tr16(const float *s, size_t lds, float *d, size_t ldd)
{
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) {
        r[i] = _mm512_loadu_ps(s + (size_t)i * lds);
    }
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), e = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));
    }
    /* r[4q + p]: rows 4q..4q+3 of column p + 4c in lane c */
    for (int q = 0; q < 4; q += 2) {
        for (int p = 0; p < 4; p++) {
            t[4 * q + p] = _mm512_shuffle_f32x4(r[4 * q + p], r[4 * q + 4 + p], 0x88);
            t[4 * q + 4 + p] = _mm512_shuffle_f32x4(r[4 * q + p], r[4 * q + 4 + p], 0xdd);
        }
    }
    for (int p = 0; p < 4; p++) {
        _mm512_storeu_ps(d + (size_t)p * ldd, _mm512_shuffle_f32x4(t[p], t[8 + p], 0x88));
        _mm512_storeu_ps(d + (size_t)(p + 4) * ldd, _mm512_shuffle_f32x4(t[4 + p], t[12 + p], 0x88));
        _mm512_storeu_ps(d + (size_t)(p + 8) * ldd, _mm512_shuffle_f32x4(t[p], t[8 + p], 0xdd));
        _mm512_storeu_ps(d + (size_t)(p + 12) * ldd, _mm512_shuffle_f32x4(t[4 + p], t[12 + p], 0xdd));
    }
}

static _Thread_local float sm_panel[SM_PANEL] __attribute__((aligned(64)));

static int sgemm_sm(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                    const float *B, int ldb, float beta, float *C, int ldc)
{
    const float *Bp = B;
    size_t lb = (size_t)ldb;
    const int Np = (N + LINA_VL - 1) / LINA_VL * LINA_VL;
    if ((transB || N % LINA_VL) && (size_t)K * Np > SM_PANEL) {
        return 0;
    }
    if (transB) { /* the panel op(B) = B^T, 16 x 16 blocks at a time */
        for (int j0 = 0; j0 < Np; j0 += 16) {
            for (int k0 = 0; k0 < K; k0 += 16) {
                if (j0 + 16 <= N && k0 + 16 <= K) {
                    sm_tr16(B + (size_t)j0 * ldb + k0, (size_t)ldb, sm_panel + (size_t)k0 * Np + j0, (size_t)Np);
                    continue;
                }
                for (int k = k0; k < k0 + 16 && k < K; k++) {
                    float *d = sm_panel + (size_t)k * Np;
                    for (int j = j0; j < j0 + 16; j++) {
                        d[j] = j < N ? B[(size_t)j * ldb + k] : 0.0f;
                    }
                }
            }
        }
        Bp = sm_panel;
        lb = (size_t)Np;
    } else if (N % LINA_VL) {
        for (int k = 0; k < K; k++) {
            float *d = sm_panel + (size_t)k * Np;
            memcpy(d, B + (size_t)k * ldb, (size_t)N * sizeof(float));
            for (int j = N; j < Np; j++) {
                d[j] = 0.0f;
            }
        }
        Bp = sm_panel;
        lb = (size_t)Np;
    }
    const size_t sa = transA ? 1 : (size_t)lda, sk = transA ? (size_t)lda : 1;
    for (int j0 = 0; j0 < N; j0 += SM_NB) {
        const int ncols = N - j0 < SM_NB ? N - j0 : SM_NB;
        const int nv = (ncols + LINA_VL - 1) / LINA_VL;
        const float *b = Bp + j0;
        if (nv == 4) {
            SM_TILE_ROWS(4);
        } else if (nv == 3) {
            SM_TILE_ROWS(3);
        } else if (nv == 2) {
            SM_TILE_ROWS(2);
        } else {
            SM_TILE_ROWS(1);
        }
    }
    return 1;
}
#undef SM_TILE_ROWS
#define HAVE_SGEMM_SM 1
#else
#define HAVE_SGEMM_SM 0
#endif

void LINA_KFN(lina_sgemm_sm)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                             const float *B, int ldb, float beta, float *C, int ldc)
{
#if HAVE_SGEMM_SM
    if (M > 1 && N > 1 && K > 0 && K <= LINA_SGEMM_SM_MAX_K && lina_sgemm_small_enabled() &&
        sgemm_sm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) {
        return;
    }
#endif
    lina_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---------------------------------------------------- register-blocked products */

/* C (ldc) = beta C + alpha A B for rows [0, M) and columns [0, N), with
 * A(m, k) = A[m sam + k sak] (so A or its transpose, row-major) and B
 * row-major (ldb); beta 0 writes C without reading it. Rows go in groups of
 * MM_MR. lo, hi (NULL: none) give each row m a range [lo[m], hi[m]) (empty
 * when lo >= hi), a group takes the union of its rows' ranges:
 *   on_k:  the sum runs over k in that range only; A(m, k) must be 0 for the
 *          k outside row m's own range (the masked P and dS are);
 *   !on_k: only the group's columns are computed (at least the range,
 *          rounded out to whole vectors); the other columns are left as
 *          they are, for the caller to mask.
 * (The header gemm.h says where it is used.) */
#define MM_MR 4

#ifdef LINA_VL
static void mm_range(const int *lo, const int *hi, int m0, int mr, int *rl, int *rh)
{
    int l = 0, h = 0, any = 0;
    for (int r = m0; r < m0 + mr; r++) {
        if (lo[r] < hi[r]) {
            l = !any || lo[r] < l ? lo[r] : l;
            h = !any || hi[r] > h ? hi[r] : h;
            any = 1;
        }
    }
    *rl = l;
    *rh = h;
}
#endif

#ifdef LINA_VL
/* The register block of lina_mm: acc[2 r + v] = sum_{k0 <= k < k1} ar[r][k sak] B[k][v VL ..]
 * for MM_MR rows and nv (1 or 2) vectors of columns. Kept out of line so that
 * nothing else of lina_mm competes for the vector registers. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void mm_kern(const float *const *ar, size_t sak, const float *B, size_t ldb, int k0, int k1, int nv,
                    lina_vf *acc)
{
    const float *a0 = ar[0], *a1 = ar[1], *a2 = ar[2], *a3 = ar[3];
    lina_vf c00 = LINA_VZERO(), c10 = LINA_VZERO(), c20 = LINA_VZERO(), c30 = LINA_VZERO();
    if (nv == 2) {
        lina_vf c01 = LINA_VZERO(), c11 = LINA_VZERO(), c21 = LINA_VZERO(), c31 = LINA_VZERO();
        for (int k = k0; k < k1; k++) {
            const float *bk = B + (size_t)k * ldb;
            const size_t o = (size_t)k * sak;
            const lina_vf b0 = LINA_VLD(bk), b1 = LINA_VLD(bk + LINA_VL);
            lina_vf a = LINA_VSET1(a0[o]);
            c00 = LINA_VFMA(a, b0, c00);
            c01 = LINA_VFMA(a, b1, c01);
            a = LINA_VSET1(a1[o]);
            c10 = LINA_VFMA(a, b0, c10);
            c11 = LINA_VFMA(a, b1, c11);
            a = LINA_VSET1(a2[o]);
            c20 = LINA_VFMA(a, b0, c20);
            c21 = LINA_VFMA(a, b1, c21);
            a = LINA_VSET1(a3[o]);
            c30 = LINA_VFMA(a, b0, c30);
            c31 = LINA_VFMA(a, b1, c31);
        }
        acc[1] = c01;
        acc[3] = c11;
        acc[5] = c21;
        acc[7] = c31;
    } else {
        for (int k = k0; k < k1; k++) {
            const size_t o = (size_t)k * sak;
            const lina_vf b0 = LINA_VLD(B + (size_t)k * ldb);
            c00 = LINA_VFMA(LINA_VSET1(a0[o]), b0, c00);
            c10 = LINA_VFMA(LINA_VSET1(a1[o]), b0, c10);
            c20 = LINA_VFMA(LINA_VSET1(a2[o]), b0, c20);
            c30 = LINA_VFMA(LINA_VSET1(a3[o]), b0, c30);
        }
    }
    acc[0] = c00;
    acc[2] = c10;
    acc[4] = c20;
    acc[6] = c30;
}
#endif

void LINA_KFN(lina_mm)(int M, int N, int Kd, float alpha, const float *A, size_t sam, size_t sak, const float *B,
                  size_t ldb, float beta, float *C, size_t ldc, const int *lo, const int *hi, int on_k)
{
#ifdef LINA_VL
    const int W2 = 2 * LINA_VL;
    for (int m0 = 0; m0 < M; m0 += MM_MR) {
        const int mr = M - m0 < MM_MR ? M - m0 : MM_MR;
        int k0 = 0, k1 = Kd, n0 = 0, n1 = N;
        if (lo) {
            int rl, rh;
            mm_range(lo, hi, m0, mr, &rl, &rh);
            if (on_k) {
                k0 = rl;
                k1 = rh;
            } else if (rl >= rh) {
                continue;
            } else {
                n0 = rl - rl % LINA_VL;
                n1 = n0 + (rh - n0 + W2 - 1) / W2 * W2; /* whole pairs of vectors from n0 */
                n1 = n1 < N ? n1 : N;
            }
        }
        const float *ar[MM_MR];
        for (int r = 0; r < MM_MR; r++) {
            ar[r] = A + (size_t)(m0 + (r < mr ? r : 0)) * sam;
        }
        int n = n0;
        for (; n + LINA_VL <= n1;) {
            const int nv = n + W2 <= n1 ? 2 : 1;
            lina_vf acc[2 * MM_MR];
            mm_kern(ar, sak, B + n, ldb, k0, k1, nv, acc);
            const lina_vf va = LINA_VSET1(alpha), vb = LINA_VSET1(beta);
            for (int r = 0; r < mr; r++) {
                for (int v = 0; v < nv; v++) {
                    float *cr = C + (size_t)(m0 + r) * ldc + n + v * LINA_VL;
                    lina_vf x = LINA_VMUL(va, acc[2 * r + v]);
                    if (beta != 0.0f) {
                        x = LINA_VFMA(vb, LINA_VLD(cr), x);
                    }
                    LINA_VST(cr, x);
                }
            }
            n += nv * LINA_VL;
        }
        for (; n < n1; n++) {
            for (int r = 0; r < mr; r++) {
                float acc = 0.0f, *cr = C + (size_t)(m0 + r) * ldc + n;
                for (int k = k0; k < k1; k++) {
                    acc += ar[r][(size_t)k * sak] * B[(size_t)k * ldb + n];
                }
                *cr = beta != 0.0f ? beta * *cr + alpha * acc : alpha * acc;
            }
        }
    }
#else
    for (int m = 0; m < M; m++) {
        int k0 = 0, k1 = Kd, n0 = 0, n1 = N;
        if (lo && on_k) {
            k0 = lo[m];
            k1 = hi[m];
        } else if (lo) {
            if (lo[m] >= hi[m]) {
                continue;
            }
            n0 = lo[m];
            n1 = hi[m];
        }
        float *cr = C + (size_t)m * ldc;
        const float *am = A + (size_t)m * sam;
        for (int n = n0; n < n1; n++) {
            cr[n] = beta != 0.0f ? beta * cr[n] : 0.0f;
        }
        for (int k = k0; k < k1; k++) {
            const float a = alpha * am[(size_t)k * sak];
            const float *bk = B + (size_t)k * ldb;
            for (int n = n0; n < n1; n++) {
                cr[n] += a * bk[n];
            }
        }
    }
#endif
}


/* The layers' products (lina_sgemm_layer, gemm.h) through lina_mm, split over the
 * threads by row groups unless already inside a parallel region. */
#if defined(__AVX512F__)
#define MM_KC 256 /* inner size per pass of a long product (A^T B): B's rows stay in cache */

static void mm_rows(int M, int N, int K, float alpha, const float *A, size_t sam, size_t sak, const float *B,
                    size_t ldb, float beta, float *C, size_t ldc)
{
    int nthr = 1;
#ifdef _OPENMP
    if (!omp_in_parallel() && (double)M * N * K >= 1048576.0) {
        nthr = omp_get_max_threads();
    }
#endif
    const int groups = (M + MM_MR - 1) / MM_MR;
    nthr = nthr < groups ? nthr : groups;
#pragma omp parallel num_threads(nthr) if (nthr > 1)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        const int g0 = (int)((long)groups * t / nt), g1 = (int)((long)groups * (t + 1) / nt);
        const int m0 = g0 * MM_MR, m1 = g1 * MM_MR < M ? g1 * MM_MR : M;
        for (int k0 = 0; m0 < m1 && k0 < K; k0 += MM_KC) {
            const int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
            LINA_KFN(lina_mm)(m1 - m0, N, kc, alpha, A + (size_t)m0 * sam + (size_t)k0 * sak, sam, sak,
                              B + (size_t)k0 * ldb, ldb, k0 ? 1.0f : beta, C + (size_t)m0 * ldc, ldc, NULL, NULL, 0);
        }
    }
}
#endif

void LINA_KFN(lina_sgemm_layer)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                                const float *B, int ldb, float beta, float *C, int ldc)
{
#if defined(__AVX512F__)
    /* (columns past the last whole vector run a scalar loop: few of them, or none) */
    /* and B (per pass of A^T B) at most LINA_MM_MAX_B floats, so that it stays in the core's
     * cache while every group of rows streams it (no blocking over B here) */
    if (lina_sgemm_small_enabled() && M > LINA_SGEMM_SMALL_M && (N % 16 == 0 || N >= 128) && K > 0 &&
        (size_t)(transA ? MM_KC : K) * N <= LINA_MM_MAX_B && (transA ? M <= LINA_MM_MAX_N : K <= LINA_MM_MAX_N)) {
        if (!transB) { /* B [K,N] as it lies; A [M,K] or (transA) [K,M] */
            mm_rows(M, N, K, alpha, A, transA ? 1 : (size_t)lda, transA ? (size_t)lda : 1, B, (size_t)ldb, beta, C,
                    (size_t)ldc);
            return;
        }
        float *bt = transA ? NULL : malloc((size_t)K * N * sizeof(float));
        if (bt) { /* B [N,K] -> B^T [K,N] */
            for (int n = 0; n < N; n++) {
                for (int k = 0; k < K; k++) {
                    bt[(size_t)k * N + n] = B[(size_t)n * ldb + k];
                }
            }
            mm_rows(M, N, K, alpha, A, (size_t)lda, 1, bt, (size_t)N, beta, C, (size_t)ldc);
            free(bt);
            return;
        }
    }
#endif
    lina_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void LINA_KFN(lina_sgemm_rows_nt)(int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                                  int ldb, float beta, float *C, int ldc)
{
#if HAVE_SMALL_NT
    if (M >= 1 && M <= SK_MAX_M && N > 0 && K > 0 && lina_sgemm_small_enabled()) {
        sgemm_small_nt(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#endif
    lina_sgemm(0, 1, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH_VOID(lina_sgemm_layer,
                       (int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc),
                       (transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
LINA_ISA_DISPATCH_VOID(lina_sgemm_rows_nt,
                       (int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                        float beta, float *C, int ldc),
                       (M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

LINA_ISA_DISPATCH_VOID(lina_sgemm_sm,
                       (int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc),
                       (transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))

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
