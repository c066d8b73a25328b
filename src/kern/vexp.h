/* vexp.h -- exp and sigmoid on one float vector, inline, for the files compiled
 * per instruction-set path (kern/isa.h): lina_vexp and lina_vsigmoid (vmath.c) are
 * loops over these, and kernels that fuse an exp or a sigmoid into their own loops
 * call them directly, so every caller gets the same values. */
#ifndef LINA_VEXP_H
#define LINA_VEXP_H

#include "isa.h"

/* exp on a float vector, every path the same method: x clamped to [-104, 89],
 * range reduction x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts),
 * degree-6 polynomial (about 2 ulp), then scaling by 2^n. AVX-512 scales with
 * vscalefps; the others multiply by 2^(n/2) and 2^(n - n/2), both normal
 * floats, so results that are denormal, 0 or +inf come out correctly rounded
 * from a single final multiply. NaN propagates. */
#define EXP_LO (-104.0f)
#define EXP_HI 89.0f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2HI 0.693359375f
#define EXP_LN2LO (-2.12194440e-4f)
#if defined(__AVX512F__)
static inline __m512 exp16(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), x); /* NaN in x is kept (second operand) */
    x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
    __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(EXP_LN2HI), x);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(EXP_LN2LO), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fn);
}

#elif defined(__AVX2__) && defined(__FMA__)
static inline __m256 exp8(__m256 x)
{
    x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x); /* NaN in x is kept (second operand) */
    x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
    __m256 fn = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(EXP_LN2HI), x);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(EXP_LN2LO), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i n = _mm256_cvtps_epi32(fn); /* NaN gives INT_MIN: p is NaN already */
    __m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

#elif defined(LINA_VL) && defined(__aarch64__)
static inline float32x4_t exp4(float32x4_t x)
{
    /* vmaxq / vminq return NaN when either operand is NaN: NaN in x is kept */
    x = vmaxq_f32(vdupq_n_f32(EXP_LO), x);
    x = vminq_f32(vdupq_n_f32(EXP_HI), x);
    const float32x4_t fn = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(EXP_LOG2E)));
    float32x4_t r = vfmsq_f32(x, fn, vdupq_n_f32(EXP_LN2HI));
    r = vfmsq_f32(r, fn, vdupq_n_f32(EXP_LN2LO));
    float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t n = vcvtq_s32_f32(fn); /* fn is integral; NaN gives 0: p is NaN already */
    const int32x4_t n1 = vshrq_n_s32(n, 1), n2 = vsubq_s32(n, n1);
    const int32x4_t bias = vdupq_n_s32(127);
    const float32x4_t s1 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n1, bias), 23));
    const float32x4_t s2 = vreinterpretq_f32_s32(vshlq_n_s32(vaddq_s32(n2, bias), 23));
    return vmulq_f32(vmulq_f32(p, s1), s2);
}
#endif

#ifdef LINA_VL
/* exp and sigmoid of a lina_vf: sigmoid(x) = 1 / (1 + exp(-x)), the division exact */
#if defined(__AVX512F__)
static inline lina_vf lina_vexp_v(lina_vf x)
{
    return exp16(x);
}
#elif defined(__aarch64__)
static inline lina_vf lina_vexp_v(lina_vf x)
{
    return (lina_vf){exp4(x.l), exp4(x.h)};
}
#else
static inline lina_vf lina_vexp_v(lina_vf x)
{
    return exp8(x);
}
#endif
static inline lina_vf lina_vsigmoid_v(lina_vf x)
{
    const lina_vf one = LINA_VSET1(1.0f);
    return LINA_VDIV(one, LINA_VADD(one, lina_vexp_v(LINA_VSUB(LINA_VZERO(), x))));
}
#endif

#endif
