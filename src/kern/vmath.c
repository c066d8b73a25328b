/* vmath.c -- scalar and vector elementwise math used by the kernels. */
#include "lina.h"

#include <math.h>

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

/* exp on a float vector. With AVX-512: range reduction x = n ln2 + r,
 * |r| <= ln2/2, degree-6 polynomial (about 2 ulp), scaling by 2^n with
 * vscalefps, which underflows to denormals and 0 and overflows to +inf
 * correctly; NaN propagates. Elsewhere: expf. */
#if defined(__AVX512F__)
#include <immintrin.h>

static inline __m512 exp16(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-104.0f), hi = _mm512_set1_ps(89.0f);
    x = _mm512_max_ps(lo, x); /* NaN in x is kept (second operand) */
    x = _mm512_min_ps(hi, x);
    __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fn);
}

void lina_vexp(float *y, const float *x, size_t n)
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
#else
void lina_vexp(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        y[i] = expf(x[i]);
    }
}
#endif
