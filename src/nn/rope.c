/* rope.c -- rotary position embedding (rotate-half), forward and its transpose. */
#include "nn.h"

#include <math.h>

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
    int h2 = d / 2;
    double lnb = log(base);
#pragma omp parallel for if ((size_t)B * T * H * d >= 32768)
    for (int t = 0; t < T; t++) {
        float cs[LINA_ROPE_MAX_DIM / 2], sn[LINA_ROPE_MAX_DIM / 2];
        double p = (double)(pos0 + t);
        for (int i = 0; i < h2; i++) {
            double a = p * exp(-(2.0 * i / d) * lnb);
            cs[i] = (float)cos(a);
            sn[i] = (float)(sign * sin(a));
        }
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < H; h++) {
                size_t o = (((size_t)b * T + t) * H + h) * (size_t)d;
                const float *xr = x + o;
                float *yr = y + o;
                for (int i = 0; i < h2; i++) {
                    float x1 = xr[i], x2 = xr[i + h2];
                    yr[i] = x1 * cs[i] - x2 * sn[i];
                    yr[i + h2] = x2 * cs[i] + x1 * sn[i];
                }
            }
        }
    }
    return LINA_OK;
}

int lina_rope_forward(float *y, const float *x, int B, int T, int H, int d, int64_t pos0, double base)
{
    return rope_apply(y, x, B, T, H, d, pos0, base, 1, "rope");
}

int lina_rope_backward(float *dx, const float *dy, int B, int T, int H, int d, int64_t pos0, double base)
{
    return rope_apply(dx, dy, B, T, H, d, pos0, base, -1, "rope backward");
}
