/* vmath.c -- scalar and vector elementwise math used by the kernels.
 * Compiled once per instruction-set path (kern/isa.h); lina_vexp dispatches. */
#include "isa.h"
#include "lina.h"
#include "vexp.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if LINA_ISA_PRIMARY
float lina_softplusf(float x)
{
    /* log(1 + e^x), returning x past 20 as FLA does */
    if (x > 20.0f) {
        return x;
    }
    return log1pf(expf(x));
}

float lina_logsigmoidf(float x)
{
    return -lina_softplusf(-x);
}
#endif

/* the portable path: the method of vexp.h in plain C */
#define EXP_POLY(p, r)                                   \
    do {                                                 \
        p = 1.0f / 720.0f;                               \
        p = p * (r) + 1.0f / 120.0f;                     \
        p = p * (r) + 1.0f / 24.0f;                      \
        p = p * (r) + 1.0f / 6.0f;                       \
        p = p * (r) + 0.5f;                              \
        p = p * (r) + 1.0f;                              \
        p = p * (r) + 1.0f;                              \
    } while (0)

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
void LINA_KFN(lina_vexp)(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, exp16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}
#elif defined(__AVX2__) && defined(__FMA__)
void LINA_KFN(lina_vexp)(float *y, const float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
    }
    if (i < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
        _mm256_maskstore_ps(y + i, m, exp8(_mm256_maskload_ps(x + i, m)));
    }
}
#elif defined(LINA_VL)
/* the neon path: y = f(x) over lina_vf vectors of 8, the tail through a buffer */
static inline void nv_map(float *y, const float *x, size_t n, lina_vf (*f)(lina_vf))
{
    size_t i = 0;
    for (; i + LINA_VL <= n; i += LINA_VL) {
        LINA_VST(y + i, f(LINA_VLD(x + i)));
    }
    if (i < n) {
        lina_nv_st_n(y + i, (int)(n - i), f(lina_nv_ld_n(x + i, (int)(n - i), 0.0f)));
    }
}
void LINA_KFN(lina_vexp)(float *y, const float *x, size_t n)
{
    nv_map(y, x, n, lina_vexp_v);
}
#else
/* plain C in a form compilers vectorise (SSE2, NEON, ...) */
void LINA_KFN(lina_vexp)(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float xi = x[i];
        float xc = xi > EXP_LO ? xi : EXP_LO; /* NaN goes to EXP_LO, restored below */
        xc = xc < EXP_HI ? xc : EXP_HI;
        /* round to nearest by adding and subtracting 1.5 * 2^23 */
        const float fn = (xc * EXP_LOG2E + 12582912.0f) - 12582912.0f;
        float r = xc - fn * EXP_LN2HI;
        r = r - fn * EXP_LN2LO;
        float p;
        EXP_POLY(p, r);
        const int32_t ni = (int32_t)fn, n1 = ni >> 1, n2 = ni - n1;
        const uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
        float s1, s2;
        memcpy(&s1, &b1, sizeof s1);
        memcpy(&s2, &b2, sizeof s2);
        const float e = p * s1 * s2;
        y[i] = xi == xi ? e : xi;
    }
}
#endif

/* s = sigmoid(x) = 1 / (1 + exp(-x)) through the exp above, n values (s may alias x): on
 * the vector paths in registers, one pass (the same values as the exp of -x followed by
 * the division, which is exact IEEE arithmetic either way) */
void LINA_KFN(lina_vsigmoid)(float *s, const float *x, size_t n)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(s + i, lina_vsigmoid_v(_mm512_loadu_ps(x + i)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(s + i, m, lina_vsigmoid_v(_mm512_maskz_loadu_ps(m, x + i)));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(s + i, lina_vsigmoid_v(_mm256_loadu_ps(x + i)));
    }
    if (i < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
        _mm256_maskstore_ps(s + i, m, lina_vsigmoid_v(_mm256_maskload_ps(x + i, m)));
    }
#elif defined(LINA_VL)
    (void)i;
    nv_map(s, x, n, lina_vsigmoid_v);
#else
    for (; i < n; i++) {
        s[i] = -x[i];
    }
    LINA_KFN(lina_vexp)(s, s, n);
    for (i = 0; i < n; i++) {
        s[i] = 1.0f / (1.0f + s[i]);
    }
#endif
}

/* y = logsigmoid(x) = min(x, 0) - log1p(exp(-|x|)), n elements (y may alias x), every path
 * the same method: t = exp(-|x|) by the exp above; log1p(t), t in (0, 1]: u = 1 + t split as
 * 2^e m with m in [sqrt(1/2), sqrt(2)], log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172,
 * by its odd series to s^9 (truncation below 1e-9 relative), plus (t - (u - 1)) / u for the
 * rounding of 1 + t, so tiny t keep their relative accuracy. The vector paths do it in
 * registers, one pass. */
#define LSG_SQRT2 1.41421356f
#define LSG_LN2 0.69314718056f
#if defined(__AVX512F__)
static inline __m512 logsig16(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 ax = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
    __m512 t = exp16(_mm512_sub_ps(_mm512_setzero_ps(), ax));
    __m512 u = _mm512_add_ps(one, t);
    __mmask16 hi = _mm512_cmp_ps_mask(u, _mm512_set1_ps(LSG_SQRT2), _CMP_GT_OQ);
    __m512 mm = _mm512_mask_mul_ps(u, hi, u, _mm512_set1_ps(0.5f));
    __m512 e = _mm512_maskz_mov_ps(hi, _mm512_set1_ps(LSG_LN2));
    __m512 sv = _mm512_div_ps(_mm512_sub_ps(mm, one), _mm512_add_ps(mm, one));
    __m512 s2 = _mm512_mul_ps(sv, sv);
    __m512 p = _mm512_set1_ps(1.0f / 9.0f);
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 7.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 5.0f));
    p = _mm512_fmadd_ps(p, s2, _mm512_set1_ps(1.0f / 3.0f));
    p = _mm512_fmadd_ps(p, s2, one);
    __m512 corr = _mm512_div_ps(_mm512_sub_ps(t, _mm512_sub_ps(u, one)), u);
    __m512 l1p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_add_ps(sv, sv), p, e), corr);
    return _mm512_sub_ps(_mm512_min_ps(x, _mm512_setzero_ps()), l1p);
}
#elif defined(__AVX2__) && defined(__FMA__)
static inline __m256 logsig8(__m256 x)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 ax = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    __m256 t = exp8(_mm256_sub_ps(_mm256_setzero_ps(), ax));
    __m256 u = _mm256_add_ps(one, t);
    __m256 hi = _mm256_cmp_ps(u, _mm256_set1_ps(LSG_SQRT2), _CMP_GT_OQ);
    __m256 mm = _mm256_blendv_ps(u, _mm256_mul_ps(u, _mm256_set1_ps(0.5f)), hi);
    __m256 e = _mm256_and_ps(hi, _mm256_set1_ps(LSG_LN2));
    __m256 sv = _mm256_div_ps(_mm256_sub_ps(mm, one), _mm256_add_ps(mm, one));
    __m256 s2 = _mm256_mul_ps(sv, sv);
    __m256 p = _mm256_set1_ps(1.0f / 9.0f);
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 7.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 5.0f));
    p = _mm256_fmadd_ps(p, s2, _mm256_set1_ps(1.0f / 3.0f));
    p = _mm256_fmadd_ps(p, s2, one);
    __m256 corr = _mm256_div_ps(_mm256_sub_ps(t, _mm256_sub_ps(u, one)), u);
    __m256 l1p = _mm256_add_ps(_mm256_fmadd_ps(_mm256_add_ps(sv, sv), p, e), corr);
    return _mm256_sub_ps(_mm256_min_ps(x, _mm256_setzero_ps()), l1p);
}
#endif

void LINA_KFN(lina_vlogsigmoid)(float *y, const float *x, size_t n)
{
    size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        _mm512_storeu_ps(y + i, logsig16(_mm512_loadu_ps(x + i)));
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1u);
        _mm512_mask_storeu_ps(y + i, m, logsig16(_mm512_maskz_loadu_ps(m, x + i)));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(y + i, logsig8(_mm256_loadu_ps(x + i)));
    }
    if (i < n) {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i)), lane);
        _mm256_maskstore_ps(y + i, m, logsig8(_mm256_maskload_ps(x + i, m)));
    }
#else
    enum { BL = 256 };
    float t[BL];
    for (size_t i0 = 0; i0 < n; i0 += BL) {
        size_t m = n - i0 < BL ? n - i0 : BL;
        for (i = 0; i < m; i++) {
            t[i] = -fabsf(x[i0 + i]);
        }
        LINA_KFN(lina_vexp)(t, t, m);
        for (i = 0; i < m; i++) {
            float xi = x[i0 + i], ti = t[i], u = 1.0f + ti;
            int hi = u > LSG_SQRT2;
            float mm = hi ? 0.5f * u : u, e = hi ? LSG_LN2 : 0.0f;
            float sv = (mm - 1.0f) / (mm + 1.0f), s2 = sv * sv;
            float p = 1.0f / 9.0f;
            p = p * s2 + 1.0f / 7.0f;
            p = p * s2 + 1.0f / 5.0f;
            p = p * s2 + 1.0f / 3.0f;
            p = p * s2 + 1.0f;
            float l1p = e + 2.0f * sv * p + (ti - (u - 1.0f)) / u;
            y[i0 + i] = (xi < 0.0f ? xi : 0.0f) - l1p;
        }
    }
#endif
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH_VOID(lina_vexp, (float *y, const float *x, size_t n), (y, x, n))
LINA_ISA_DISPATCH_VOID(lina_vsigmoid, (float *s, const float *x, size_t n), (s, x, n))
LINA_ISA_DISPATCH_VOID(lina_vlogsigmoid, (float *y, const float *x, size_t n), (y, x, n))
#endif

/* Checks of the data other code hands to the kernels (the Python package's ops): one
 * vectorised pass. The bits of a float read as int32 order like this: every value in
 * [-FLT_MAX, -0.0] is at most LINA_NEG_FINITE_BITS (sign set, exponent not all ones); -Inf,
 * a NaN with its sign set, +0.0 and everything above it are greater. The absolute bits
 * (sign cleared) are at least 0x7f800000 exactly for +-Inf and NaN. */
#define LINA_NEG_FINITE_BITS (-8388609) /* bits of -FLT_MAX */
#define LINA_EXP_BITS 0x7f800000

static inline int32_t f32_bits(const float *p)
{
    int32_t b;
    memcpy(&b, p, sizeof b);
    return b;
}

int LINA_KFN(lina_check_log_gates)(const float *g, size_t n, float *worst)
{
    int32_t mx = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        const int32_t b = f32_bits(g + i);
        mx = b > mx ? b : mx;
    }
    if (mx <= LINA_NEG_FINITE_BITS) {
        return 0;
    }
    /* a +0.0 (allowed), a positive value or a non-finite one: the slow pass tells which */
    float hi = 0.0f;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float x = g[i];
        if ((f32_bits(g + i) & 0x7fffffff) >= LINA_EXP_BITS) {
            if (worst) {
                *worst = x;
            }
            return 1;
        }
        if (x > hi) {
            hi = x;
            bad = 2;
        }
    }
    if (bad && worst) {
        *worst = hi;
    }
    return bad;
}

/* one element every `stride` floats: rows a few hundred bytes apart, which the hardware
 * prefetchers follow slowly (about 8 ns a row from L3 without the prefetches here) */
static int col_finite(const float *x, size_t rows, size_t stride)
{
    enum { AHEAD = 96 };
    int32_t mx = 0;
    for (size_t r = 0; r < rows; r++) {
        if (r + AHEAD < rows) {
            lina_prefetch_floats(x + (r + AHEAD) * stride, 1);
        }
        const int32_t b = f32_bits(x + r * stride) & 0x7fffffff;
        mx = b > mx ? b : mx;
    }
    return mx < LINA_EXP_BITS;
}

static int rows_finite(const float *x, size_t rows, size_t cols, size_t stride)
{
    int32_t mx = 0;
    for (size_t r = 0; r < rows; r++) {
        const float *p = x + r * stride;
        for (size_t c = 0; c < cols; c++) {
            const int32_t b = f32_bits(p + c) & 0x7fffffff;
            mx = b > mx ? b : mx;
        }
    }
    return mx < LINA_EXP_BITS;
}

int LINA_KFN(lina_mix_out_finite)(const float *o, int B, int T, int H, int V)
{
    if (!o || B <= 0 || T <= 0 || H <= 0 || V <= 0) {
        return 1;
    }
    const size_t tok = (size_t)H * V;
    if (!col_finite(o, (size_t)B * T * H, (size_t)V)) {
        return 0;
    }
    return rows_finite(o + (size_t)(T - 1) * tok, (size_t)B, tok, (size_t)T * tok);
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_check_log_gates, (const float *g, size_t n, float *worst), (g, n, worst))
LINA_ISA_DISPATCH(int, lina_mix_out_finite, (const float *o, int B, int T, int H, int V), (o, B, T, H, V))
#endif
