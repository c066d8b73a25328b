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

/* exp on a float vector: range reduction x = n ln2 + r, degree-6 polynomial on
 * |r| <= ln2/2 (relative error ~2 ulp), written so that the compiler vectorises it.
 * Inputs below -87.3 give 0, above 88.7 give +inf; NaN propagates. */
void lina_vexp(float *y, const float *x, size_t n)
{
    const float log2e = 1.44269504088896341f;
    const float ln2hi = 0.693359375f, ln2lo = -2.12194440e-4f;
    for (size_t i = 0; i < n; i++) {
        float xi = x[i];
        float xc = xi < -87.33654f ? -87.33654f : (xi > 88.72283f ? 88.72283f : xi);
        float fn = __builtin_roundevenf(xc * log2e);
        float r = xc - fn * ln2hi;
        r = r - fn * ln2lo;
        float p = 1.0f / 720.0f;
        p = p * r + 1.0f / 120.0f;
        p = p * r + 1.0f / 24.0f;
        p = p * r + 1.0f / 6.0f;
        p = p * r + 0.5f;
        p = p * r + 1.0f;
        p = p * r + 1.0f;
        int ni = (int)fn;
        union { unsigned u; float f; } sc;
        /* scale by 2^n in two steps so n = -126..128 stays in range */
        int n1 = ni / 2, n2 = ni - n1;
        sc.u = (unsigned)(n1 + 127) << 23;
        float s1 = sc.f;
        sc.u = (unsigned)(n2 + 127) << 23;
        float v = p * s1 * sc.f;
        v = xi < -87.33654f ? 0.0f : v;
        v = xi > 88.72283f ? (float)INFINITY : v;
        y[i] = xi != xi ? xi : v;
    }
}
