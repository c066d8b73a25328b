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
#ifdef LINA_VL

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
#if defined(__AVX2__)
static inline __m256 sk_load_tail(const float *p, int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}
#else
static inline lina_vf sk_load_tail(const float *p, int n)
{
    return lina_nv_ld_n(p, n, 0.0f);
}
#endif
static inline lina_vf sk_hsum(const lina_vf *x)
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
    LINA_NV_UNROLL
    for (int i = 0; i < MB * NB; i++) {
        acc[i] = LINA_VZERO();
    }
    LINA_NV_UNROLL
    for (int i = 0; i < MB; i++) {
        a[i] = A + (size_t)(i < mb ? i : 0) * lda;
    }
    LINA_NV_UNROLL
    for (int j = 0; j < NB; j++) {
        b[j] = B + (size_t)(j < nb ? j : 0) * ldb;
    }
    int k = 0;
    for (; k + LINA_VL <= K; k += LINA_VL) {
        if (pf) { /* a later tile of B on its way from memory while this one is used */
            LINA_NV_UNROLL
            for (int j = 0; j < NB; j++) {
                __builtin_prefetch(pf + (size_t)j * ldb + k, 0, 3);
            }
        }
        lina_vf av[SK_MB];
        LINA_NV_UNROLL
        for (int i = 0; i < MB; i++) {
            av[i] = LINA_VLD(a[i] + k);
        }
        LINA_NV_UNROLL
        for (int j = 0; j < NB; j++) {
            lina_vf bv = LINA_VLD(b[j] + k);
#if defined(__AVX2__) && !defined(__AVX512F__)
            __asm__("" : "+x"(bv)); /* AVX2: one load per row of B, not one per use (load-bound otherwise) */
#endif
            LINA_NV_UNROLL
            for (int i = 0; i < MB; i++) {
                acc[i * NB + j] = LINA_VFMA(av[i], bv, acc[i * NB + j]);
            }
        }
    }
    if (k < K) {
        lina_vf av[SK_MB];
        LINA_NV_UNROLL
        for (int i = 0; i < MB; i++) {
            av[i] = sk_load_tail(a[i] + k, K - k);
        }
        LINA_NV_UNROLL
        for (int j = 0; j < NB; j++) {
            const lina_vf bv = sk_load_tail(b[j] + k, K - k);
            LINA_NV_UNROLL
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

/* ------------------------------------------------ register-tiled products */

/* lina's own product kernel, one per instruction-set path, for the products
 * that are too small for a BLAS call to pay (the chunk forms' sides of
 * 16..128 through lina_sgemm_sm, the softmax attention kernel's 128 x 128
 * tiles and the layers' products through lina_mm):
 *   C (ldc) = alpha A B + beta C, A(m, k) = A[m sam + k sak], B [K, N] row-major,
 * read where they lie (no packing, no library call). A tile is MM_MR rows of C
 * by up to MM_NV vectors of columns, all in registers: each k step loads the
 * tile's vectors of row k of B once and broadcasts A(m, k) once per row
 * (MM_MR x MM_NV multiply-adds per MM_MR + MM_NV loads). AVX-512: 6 x 4
 * vectors of 16 (24 of the 32 registers); AVX2: 6 x 2 vectors of 8 (12 of the
 * 16). Columns go in blocks of MM_NV vectors whose rows of B stay in L1 while
 * every row tile of a panel of MM_RP rows takes them; a width that is not a
 * whole number of vectors ends in a one-vector tile with masked loads and
 * stores (nothing past column N is read or written). */
#ifdef LINA_VL
#define MM_MR 6
#if defined(__AVX512F__)
#define MM_NV 4
typedef __mmask16 mm_mask;
static inline mm_mask mm_mask_n(int n)
{
    return (__mmask16)((1u << n) - 1u);
}
static inline lina_vf mm_ldm(const float *p, mm_mask m)
{
    return _mm512_maskz_loadu_ps(m, p);
}
static inline void mm_stm(float *p, mm_mask m, lina_vf x)
{
    _mm512_mask_storeu_ps(p, m, x);
}
#elif defined(__AVX2__)
#define MM_NV 2
typedef __m256i mm_mask;
static inline mm_mask mm_mask_n(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline lina_vf mm_ldm(const float *p, mm_mask m)
{
    return _mm256_maskload_ps(p, m);
}
static inline void mm_stm(float *p, mm_mask m, lina_vf x)
{
    _mm256_maskstore_ps(p, m, x);
}
#else
/* NEON: the tail through a buffer (no masked loads and stores) */
#define MM_NV 2
typedef int mm_mask;
static inline mm_mask mm_mask_n(int n)
{
    return n;
}
static inline lina_vf mm_ldm(const float *p, mm_mask m)
{
    return lina_nv_ld_n(p, m, 0.0f);
}
static inline void mm_stm(float *p, mm_mask m, lina_vf x)
{
    lina_nv_st_n(p, m, x);
}
#endif
#define MM_NB (MM_NV * LINA_VL) /* columns per block */
#define MM_RP (22 * MM_MR)      /* rows per panel: 132, every chunk-form product is one panel */

/* one tile: rows [0, mb) of C by nv vectors from column 0 (tail: one vector of
 * which the lanes in tm are valid), summed over k in [k0, k1) */
static inline __attribute__((always_inline)) void mm_tile(const int mb, const int nv, const int tail, int k0, int k1,
                                                          float alpha, const float *A, size_t sa, size_t sk,
                                                          const float *B, size_t ldb, float beta, float *C,
                                                          size_t ldc, mm_mask tm)
{
    lina_vf acc[MM_MR][MM_NV];
    LINA_NV_UNROLL
    for (int i = 0; i < mb; i++) {
        LINA_NV_UNROLL
        for (int v = 0; v < nv; v++) {
            acc[i][v] = LINA_VZERO();
        }
    }
    const float *a = A + (size_t)k0 * sk, *b = B + (size_t)k0 * ldb;
    for (int k = k0; k < k1; k++, a += sk, b += ldb) {
        lina_vf bv[MM_NV];
        LINA_NV_UNROLL
        for (int v = 0; v < nv; v++) {
            bv[v] = tail ? mm_ldm(b, tm) : LINA_VLD(b + (size_t)v * LINA_VL);
#if defined(__AVX2__) && !defined(__AVX512F__)
            __asm__("" : "+x"(bv[v])); /* AVX2: one load per vector of B, not one per row (load-bound otherwise) */
#endif
        }
        LINA_NV_UNROLL
        for (int i = 0; i < mb; i++) {
            const lina_vf av = LINA_VSET1(a[(size_t)i * sa]);
            LINA_NV_UNROLL
            for (int v = 0; v < nv; v++) {
                acc[i][v] = LINA_VFMA(av, bv[v], acc[i][v]);
            }
        }
    }
    const lina_vf va = LINA_VSET1(alpha), vb = LINA_VSET1(beta);
    LINA_NV_UNROLL
    for (int i = 0; i < mb; i++) {
        float *c = C + (size_t)i * ldc;
        LINA_NV_UNROLL
        for (int v = 0; v < nv; v++) {
            lina_vf x = LINA_VMUL(va, acc[i][v]);
            float *cv = c + (size_t)v * LINA_VL;
            if (tail) {
                if (beta != 0.0f) {
                    x = LINA_VFMA(vb, mm_ldm(cv, tm), x);
                }
                mm_stm(cv, tm, x);
            } else {
                if (beta != 0.0f) {
                    x = LINA_VFMA(vb, LINA_VLD(cv), x);
                }
                LINA_VST(cv, x);
            }
        }
    }
}

/* a row tile of mb (1..MM_MR) rows, nv vectors (or the tail vector) */
#define MM_TILE_MB(nv, tail)                                                                              \
    do {                                                                                                  \
        switch (mb) {                                                                                     \
        case 6: mm_tile(6, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm); break;       \
        case 5: mm_tile(5, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm); break;       \
        case 4: mm_tile(4, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm); break;       \
        case 3: mm_tile(3, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm); break;       \
        case 2: mm_tile(2, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm); break;       \
        default: mm_tile(1, nv, tail, k0, k1, alpha, a, sam, sak, b, ldb, beta, c, ldc, tm);             \
        }                                                                                                 \
    } while (0)

/* rows [0, mb) of C, columns [c0, c1) (c0 a whole number of vectors, c1 - c0 <= MM_NB) */
static void mm_rowtile(int mb, int c0, int c1, int k0, int k1, float alpha, const float *a, size_t sam, size_t sak,
                       const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    const int nf = (c1 - c0) / LINA_VL, nt = (c1 - c0) % LINA_VL;
    mm_mask tm = mm_mask_n(nt);
    const float *b = B + c0;
    float *c = C + c0;
#if MM_NV == 4
    if (nf == 4) {
        MM_TILE_MB(4, 0);
    } else if (nf == 3) {
        MM_TILE_MB(3, 0);
    } else
#endif
    if (nf == 2) {
        MM_TILE_MB(2, 0);
    } else if (nf == 1) {
        MM_TILE_MB(1, 0);
    }
    if (nt) {
        b += (size_t)nf * LINA_VL;
        c += (size_t)nf * LINA_VL;
        MM_TILE_MB(1, 1);
    }
}
#undef MM_TILE_MB

/* the union [*rl, *rh) of the ranges of rows [m0, m0 + mr) (0, 0 when all are empty) */
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

/* lo, hi (NULL: none) give each row m a range [lo[m], hi[m]) (empty when lo >=
 * hi); a row tile takes the union of its rows' ranges:
 *   on_k:  the sum runs over k in that range only; A(m, k) must be 0 for the
 *          k outside row m's own range (the masked P and dS are);
 *   !on_k: only the tile's columns are computed (at least the range, rounded
 *          out to whole vectors); the other columns are left as they are, for
 *          the caller to mask.
 * (The header gemm.h says where it is used.) */
void LINA_KFN(lina_mm)(int M, int N, int Kd, float alpha, const float *A, size_t sam, size_t sak, const float *B,
                       size_t ldb, float beta, float *C, size_t ldc, const int *lo, const int *hi, int on_k)
{
#ifdef LINA_VL
    for (int p0 = 0; p0 < M; p0 += MM_RP) {
        const int p1 = M - p0 < MM_RP ? M : p0 + MM_RP;
        for (int j0 = 0; j0 < N; j0 += MM_NB) {
            const int j1 = N - j0 < MM_NB ? N : j0 + MM_NB;
            for (int m0 = p0; m0 < p1; m0 += MM_MR) {
                const int mb = p1 - m0 < MM_MR ? p1 - m0 : MM_MR;
                int k0 = 0, k1 = Kd, c0 = j0, c1 = j1;
                if (lo) {
                    int rl, rh;
                    mm_range(lo, hi, m0, mb, &rl, &rh);
                    if (on_k) {
                        k0 = rl;
                        k1 = rh;
                    } else if (rl >= rh) {
                        continue;
                    } else {
                        const int cl = rl - rl % LINA_VL, ch = rh + (LINA_VL - rh % LINA_VL) % LINA_VL;
                        c0 = cl > j0 ? cl : j0;
                        c1 = ch < j1 ? ch : j1;
                        if (c0 >= c1) {
                            continue;
                        }
                    }
                }
                mm_rowtile(mb, c0, c1, k0, k1, alpha, A + (size_t)m0 * sam, sam, sak, B, ldb, beta,
                           C + (size_t)m0 * ldc, ldc);
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

/* The chunk forms' small products (lina_sgemm_sm, gemm.h) through lina_mm: B as
 * it lies, or a transposed B (C = A B^T) first transposed into a panel in
 * LINA_VL x LINA_VL blocks in registers. */
#ifdef LINA_VL
#define MM_PANEL 16384 /* floats of the panel of B^T (K x N, rows rounded up to whole vectors) */

#if defined(__AVX512F__)
/* 16 x 16 block transpose, d[k * ldd + j] = s[j * lds + k]: pairs of rows
 * interleaved by 32 then 64 bits (each 128-bit lane then holds one column of
 * four rows), then the lanes gathered across the four groups of rows */
static inline void mm_trv(const float *s, size_t lds, float *d, size_t ldd)
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
#elif defined(__AVX2__)
/* 8 x 8 block transpose, d[k * ldd + j] = s[j * lds + k]: pairs of rows
 * interleaved by 32 bits, then by 64 (each 128-bit lane holds four rows of one
 * column), then the 128-bit lanes of rows 0-3 and 4-7 joined */
static inline void mm_trv(const float *s, size_t lds, float *d, size_t ldd)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++) {
        r[i] = _mm256_loadu_ps(s + (size_t)i * lds);
    }
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { /* r[i + p]: rows i..i+3 of column p (low lane) and p + 4 (high lane) */
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int p = 0; p < 4; p++) {
        _mm256_storeu_ps(d + (size_t)p * ldd, _mm256_permute2f128_ps(r[p], r[4 + p], 0x20));
        _mm256_storeu_ps(d + (size_t)(p + 4) * ldd, _mm256_permute2f128_ps(r[p], r[4 + p], 0x31));
    }
}
#else
/* NEON: 4 x 4 transpose of a, b, c, d (rows) into o (columns): pairs interleaved by
 * 32 bits, then by 64 */
static inline void mm_tr4(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d, float32x4_t *o)
{
    const float64x2_t t0 = vreinterpretq_f64_f32(vtrn1q_f32(a, b)), t1 = vreinterpretq_f64_f32(vtrn2q_f32(a, b));
    const float64x2_t t2 = vreinterpretq_f64_f32(vtrn1q_f32(c, d)), t3 = vreinterpretq_f64_f32(vtrn2q_f32(c, d));
    o[0] = vreinterpretq_f32_f64(vtrn1q_f64(t0, t2));
    o[1] = vreinterpretq_f32_f64(vtrn1q_f64(t1, t3));
    o[2] = vreinterpretq_f32_f64(vtrn2q_f64(t0, t2));
    o[3] = vreinterpretq_f32_f64(vtrn2q_f64(t1, t3));
}
/* 8 x 8 block transpose, d[k * ldd + j] = s[j * lds + k], as four 4 x 4 quadrants */
static inline void mm_trv(const float *s, size_t lds, float *d, size_t ldd)
{
    float32x4_t lo[8], hi[8], o[4];
    for (int i = 0; i < 8; i++) {
        lo[i] = vld1q_f32(s + (size_t)i * lds);
        hi[i] = vld1q_f32(s + (size_t)i * lds + 4);
    }
    for (int q = 0; q < 4; q++) { /* quadrant (rows 4 (q & 1).., columns 4 (q >> 1)..) */
        const float32x4_t *r = (q >> 1 ? hi : lo) + 4 * (q & 1);
        mm_tr4(r[0], r[1], r[2], r[3], o);
        for (int p = 0; p < 4; p++) {
            vst1q_f32(d + (size_t)(4 * (q >> 1) + p) * ldd + 4 * (q & 1), o[p]);
        }
    }
}
#endif

static _Thread_local float mm_panel[MM_PANEL] __attribute__((aligned(64)));

/* P [K, ldp] = B^T of B [N, K] (ldb) */
static void mm_transpose(const float *B, size_t ldb, int N, int K, float *P, size_t ldp)
{
    for (int j0 = 0; j0 < N; j0 += LINA_VL) {
        for (int k0 = 0; k0 < K; k0 += LINA_VL) {
            if (j0 + LINA_VL <= N && k0 + LINA_VL <= K) {
                mm_trv(B + (size_t)j0 * ldb + k0, (size_t)ldb, P + (size_t)k0 * ldp + j0, (size_t)ldp);
                continue;
            }
            for (int k = k0; k < k0 + LINA_VL && k < K; k++) {
                float *d = P + (size_t)k * ldp;
                for (int j = j0; j < j0 + LINA_VL && j < N; j++) {
                    d[j] = B[(size_t)j * ldb + k];
                }
            }
        }
    }
}
#endif

void LINA_KFN(lina_transpose)(const float *B, size_t ldb, int N, int K, float *P, size_t ldp)
{
#ifdef LINA_VL
    mm_transpose(B, ldb, N, K, P, ldp);
#else
    for (int k = 0; k < K; k++) {
        for (int j = 0; j < N; j++) {
            P[(size_t)k * ldp + j] = B[(size_t)j * ldb + k];
        }
    }
#endif
}

void LINA_KFN(lina_sgemm_smr)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                              const float *B, int ldb, float beta, float *C, int ldc, const int *lo, const int *hi,
                              int on_k)
{
#ifdef LINA_VL
    const int Np = (N + LINA_VL - 1) / LINA_VL * LINA_VL;
    if (M > 1 && N > 1 && K > 0 && K <= LINA_SGEMM_SM_MAX_K && (!transB || (size_t)K * Np <= MM_PANEL) &&
        lina_sgemm_small_enabled()) {
        const float *Bp = B;
        size_t lb = (size_t)ldb;
        if (transB) {
            mm_transpose(B, (size_t)ldb, N, K, mm_panel, (size_t)Np);
            Bp = mm_panel;
            lb = (size_t)Np;
        }
        LINA_KFN(lina_mm)(M, N, K, alpha, A, transA ? 1 : (size_t)lda, transA ? (size_t)lda : 1, Bp, lb, beta, C,
                          (size_t)ldc, lo, hi, on_k);
        return;
    }
#endif
    (void)lo, (void)hi, (void)on_k; /* the whole product: A is 0 outside the ranges of k; all columns are computed */
    lina_sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void LINA_KFN(lina_sgemm_sm)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                             const float *B, int ldb, float beta, float *C, int ldc)
{
    LINA_KFN(lina_sgemm_smr)(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL, NULL, 0);
}

/* The layers' products (lina_sgemm_layer, gemm.h) through lina_mm, split over the
 * threads by row groups unless already inside a parallel region. */
#ifdef LINA_VL
#define MM_KC 256 /* inner size per pass of a long product (A^T B): B's rows stay in cache */

/* rows [m0, m1) of the product, in passes of MM_KC inner indices */
static void mm_rows_part(int m0, int m1, int N, int K, float alpha, const float *A, size_t sam, size_t sak,
                         const float *B, size_t ldb, float beta, float *C, size_t ldc)
{
    for (int k0 = 0; m0 < m1 && k0 < K; k0 += MM_KC) {
        const int kc = K - k0 < MM_KC ? K - k0 : MM_KC;
        LINA_KFN(lina_mm)(m1 - m0, N, kc, alpha, A + (size_t)m0 * sam + (size_t)k0 * sak, sam, sak,
                          B + (size_t)k0 * ldb, ldb, k0 ? 1.0f : beta, C + (size_t)m0 * ldc, ldc, NULL, NULL, 0);
    }
}

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
    if (nthr <= 1) {
        /* no parallel region at all: LLVM's OpenMP runtime, after a region made serial by
         * an if clause with num_threads(1), gives the next GOMP_parallel call (OpenBLAS's
         * threaded SGEMM, built against libgomp) a team of one thread, and OpenBLAS's
         * threads then wait for each other for ever (a clang build's test_kern hung) */
        mm_rows_part(0, M, N, K, alpha, A, sam, sak, B, ldb, beta, C, ldc);
        return;
    }
#pragma omp parallel num_threads(nthr)
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        const int g0 = (int)((long)groups * t / nt), g1 = (int)((long)groups * (t + 1) / nt);
        mm_rows_part(g0 * MM_MR, g1 * MM_MR < M ? g1 * MM_MR : M, N, K, alpha, A, sam, sak, B, ldb, beta, C, ldc);
    }
}
#endif

void LINA_KFN(lina_sgemm_layer)(int transA, int transB, int M, int N, int K, float alpha, const float *A, int lda,
                                const float *B, int ldb, float beta, float *C, int ldc)
{
#ifdef LINA_VL
    /* widths of whole vectors or at least 128 (a last partial vector is a masked one-vector
     * tile), and B (per pass of A^T B) at most LINA_MM_MAX_B floats, so that it stays in the
     * core's cache while every panel of rows streams it (no blocking over B here).
     * A^T B (a weight gradient: M the layer's outputs, K the tokens): on the AVX-512 path
     * at any M (M = 2..64, N = 16..128, K = 8192: lina_mm 84-114 GFLOP/s, OpenBLAS's
     * Cooperlake kernels 26-96; M 128..1024, N 128..512: 96-103 against 80-98), on the
     * AVX2 path up to M = 128 (2..128: 51-107 against its Haswell kernels' 18-89; from
     * M = 256 OpenBLAS is as fast or faster, up to 1.28x at M 768-1024, N 256; one Zen 4
     * core). A B and A B^T only on the AVX-512 path and above LINA_SGEMM_SMALL_M rows
     * (fewer: decode, lina_sgemm_rows_nt) */
    const int mm = LINA_VL == 16 ? M > LINA_SGEMM_SMALL_M || transA : transA && M <= 128;
    if (lina_sgemm_small_enabled() && mm && (N % 16 == 0 || N >= 128) && K > 0 &&
        (size_t)(transA ? MM_KC : K) * N <= LINA_MM_MAX_B && (transA ? M <= LINA_MM_MAX_N : K <= LINA_MM_MAX_N)) {
        if (!transB) { /* B [K,N] as it lies; A [M,K] or (transA) [K,M] */
            mm_rows(M, N, K, alpha, A, transA ? 1 : (size_t)lda, transA ? (size_t)lda : 1, B, (size_t)ldb, beta, C,
                    (size_t)ldc);
            return;
        }
        float *bt = transA ? NULL : malloc((size_t)K * N * sizeof(float));
        if (bt) { /* B [N,K] -> B^T [K,N] */
            mm_transpose(B, (size_t)ldb, N, K, bt, (size_t)N);
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

LINA_ISA_DISPATCH_VOID(lina_mm,
                       (int M, int N, int Kd, float alpha, const float *A, size_t sam, size_t sak, const float *B,
                        size_t ldb, float beta, float *C, size_t ldc, const int *lo, const int *hi, int on_k),
                       (M, N, Kd, alpha, A, sam, sak, B, ldb, beta, C, ldc, lo, hi, on_k))
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
