/* rope.c -- rotary position embedding (rotate-half), forward and its transpose.
 * Compiled once per instruction-set path (Makefile KSRC, kern/isa.h): the rotation's
 * loop over a head's pairs vectorises to the path's width. */
#include "../kern/isa.h"
#include "nn.h"

#include <math.h>

#define RB 16  /* positions per task */
#define RC 128 /* rotation pairs per pass (the angle tables' width) */

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
    const int h2 = d / 2, nblk = (T + RB - 1) / RB;
    double lnb = log(base);
    /* blocks of RB positions: the angles of a block once, then each batch row's RB
     * consecutive rows (contiguous) rotated; per position the rows of the batch lie
     * T * H * d floats apart, which a positions-outer loop would walk */
#pragma omp parallel for if ((size_t)B * T * H * d >= 32768)
    for (int tb = 0; tb < nblk; tb++) {
        const int t0 = tb * RB, nt = T - t0 < RB ? T - t0 : RB;
        float cs[RB * RC], sn[RB * RC];
        for (int i0 = 0; i0 < h2; i0 += RC) {
            const int ni = h2 - i0 < RC ? h2 - i0 : RC;
            for (int t = 0; t < nt; t++) {
                double p = (double)(pos0 + t0 + t);
                for (int i = 0; i < ni; i++) {
                    double a = p * exp(-(2.0 * (i0 + i) / d) * lnb);
                    cs[t * RC + i] = (float)cos(a);
                    sn[t * RC + i] = (float)(sign * sin(a));
                }
            }
            for (int b = 0; b < B; b++) {
                for (int t = 0; t < nt; t++) {
                    const float *c = cs + t * RC, *s = sn + t * RC;
                    for (int h = 0; h < H; h++) {
                        size_t o = (((size_t)b * T + t0 + t) * H + h) * (size_t)d + i0;
                        const float *xr = x + o;
                        float *yr = y + o;
                        for (int i = 0; i < ni; i++) {
                            float x1 = xr[i], x2 = xr[i + h2];
                            yr[i] = x1 * c[i] - x2 * s[i];
                            yr[i + h2] = x2 * c[i] + x1 * s[i];
                        }
                    }
                }
            }
        }
    }
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
