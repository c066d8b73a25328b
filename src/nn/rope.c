/* rope.c -- rotary position embedding (rotate-half), forward and its transpose.
 * Compiled once per instruction-set path (Makefile KSRC, kern/isa.h): one table of the
 * angles per call (the pairs' frequencies taken once), then the rows in memory order
 * with a head's pairs in vectors of the path's width. */
#include "../kern/isa.h"
#include "nn.h"

#include <math.h>
#include <stdlib.h>

#define RT 16 /* positions per task of the angle table */

/* y, x [B,T,H,d]; sign +1 rotates by +angle (forward), -1 by -angle (backward) */
static int rope_apply(float *y, const float *x, int B, int T, int H, int d, int64_t pos0, double base, int sign,
                      const char *who)
{
    if (d <= 0 || d % 2 != 0 || d > LINA_ROPE_MAX_DIM) {
        return lina_set_error(LINA_EINVAL, "%s: head dim %d must be even and in [2, %d]", who, d,
                              LINA_ROPE_MAX_DIM);
    }
    if (!(base > 0.0) || pos0 < 0) {
        return lina_set_error(LINA_EINVAL, "%s: base must be positive and pos0 >= 0", who);
    }
    if (B <= 0 || T <= 0 || H <= 0) {
        return LINA_OK;
    }
    const int h2 = d / 2;
    const double lnb = log(base);
    double inv[LINA_ROPE_MAX_DIM / 2]; /* the pairs' frequencies base^(-2i/d) */
    for (int i = 0; i < h2; i++) {
        inv[i] = exp(-(2.0 * i / d) * lnb);
    }
    /* the angles of every position once: cs, sn [T][h2] (sn signed) */
    float *cs = malloc(2 * (size_t)T * h2 * sizeof(float));
    if (!cs) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory (%d positions)", who, T);
    }
    float *sn = cs + (size_t)T * h2;
    const size_t work = (size_t)B * T * H * d;
#pragma omp parallel if (work >= 32768)
    {
#pragma omp for schedule(static)
        for (int t0 = 0; t0 < T; t0 += RT) {
            for (int t = t0; t < T && t < t0 + RT; t++) {
                const double p = (double)(pos0 + t);
                for (int i = 0; i < h2; i++) {
                    const double a = p * inv[i];
                    cs[(size_t)t * h2 + i] = (float)cos(a);
                    sn[(size_t)t * h2 + i] = (float)(sign * sin(a));
                }
            }
        }
        /* then the rows in memory order (b, t, h): each sequence's rows are one
         * contiguous run (rotating them position block by position block jumped
         * between the sequences every 16 rows, and waited on memory at each jump) */
#pragma omp for collapse(2) schedule(static)
        for (int b = 0; b < B; b++) {
            for (int t0 = 0; t0 < T; t0 += RT) {
                for (int t = t0; t < T && t < t0 + RT; t++) {
                    const float *restrict c = cs + (size_t)t * h2, *restrict s = sn + (size_t)t * h2;
                    for (int h = 0; h < H; h++) {
                        const size_t o = (((size_t)b * T + t) * H + h) * (size_t)d;
                        const float *xr = x + o;
                        float *yr = y + o;
                        int i = 0;
#ifdef LINA_VL
                        /* both halves of a vector of pairs read before either is written (y may be x) */
                        for (; i + LINA_VL <= h2; i += LINA_VL) {
                            const lina_vf x1 = LINA_VLD(xr + i), x2 = LINA_VLD(xr + i + h2);
                            const lina_vf cv = LINA_VLD(c + i), sv = LINA_VLD(s + i);
                            LINA_VST(yr + i, LINA_VFNMA(x2, sv, LINA_VMUL(x1, cv)));
                            LINA_VST(yr + i + h2, LINA_VFMA(x1, sv, LINA_VMUL(x2, cv)));
                        }
#endif
                        /* one loop, without the compiler's check for y overlapping x
                         * (a version of it per case could round the two cases apart:
                         * clang for AArch64 contracted x1 c - x2 s differently in each) */
#pragma omp simd
                        for (int j = i; j < h2; j++) {
                            float x1 = xr[j], x2 = xr[j + h2];
                            yr[j] = x1 * c[j] - x2 * s[j];
                            yr[j + h2] = x2 * c[j] + x1 * s[j];
                        }
                    }
                }
            }
        }
    }
    free(cs);
    return LINA_OK;
}

int LINA_KFN(lina_rope_forward)(float *y, const float *x, int B, int T, int H, int d, int64_t pos0, double base)
{
    return rope_apply(y, x, B, T, H, d, pos0, base, 1, "rope");
}

int LINA_KFN(lina_rope_backward)(float *dx, const float *dy, int B, int T, int H, int d, int64_t pos0, double base)
{
    return rope_apply(dx, dy, B, T, H, d, pos0, base, -1, "rope backward");
}

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH(int, lina_rope_forward,
                  (float *y, const float *x, int B, int T, int H, int d, int64_t pos0, double base),
                  (y, x, B, T, H, d, pos0, base))
LINA_ISA_DISPATCH(int, lina_rope_backward,
                  (float *dx, const float *dy, int B, int T, int H, int d, int64_t pos0, double base),
                  (dx, dy, B, T, H, d, pos0, base))
#endif
