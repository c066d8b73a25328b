/* conv.c -- ShortConvolution: depthwise causal conv over time (+ SiLU), with
 * a decode cache; forward, backward and one-token step. */
#include "nn.h"

#include <math.h>
#include <string.h>

#define CB 16 /* channels per task */

static inline float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* Element p of the combined sequence [cache (W entries), x (T entries)] of
 * (b, c): p < W reads the cache (or zero), else x[b, p-W, c]. */
static inline float comb(const float *x, const float *cache, int b, int p, int c, int T, int C, int W)
{
    if (p >= W) {
        return x[((size_t)b * T + (size_t)(p - W)) * C + c];
    }
    return cache ? cache[((size_t)b * C + c) * W + p] : 0.0f;
}

/* pre-activation at time s (0-based) of (b, c): bias + sum_j w[c,j] comb(s+1+j) */
static inline float conv_pre(const float *x, const float *w, const float *bias, const float *cache, int b, int s,
                             int c, int T, int C, int W)
{
    float acc = bias ? bias[c] : 0.0f;
    const float *wc = w + (size_t)c * W;
    for (int j = 0; j < W; j++) {
        acc += wc[j] * comb(x, cache, b, s + 1 + j, c, T, C, W);
    }
    return acc;
}

/* y, x [B,T,C]; w [C,W]; bias [C]; cache, cache_out [B,C,W] */
void lina_shortconv_forward(float *y, const float *x, const float *w, const float *bias, const float *cache,
                            float *cache_out, int B, int T, int C, int W, lina_act act)
{
    int nb = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if ((size_t)B * T * C * W >= 65536)
    for (int task = 0; task < B * nb; task++) {
        int b = task / nb, c0 = (task % nb) * CB, c1 = c0 + CB < C ? c0 + CB : C;
        for (int s = 0; s < T; s++) {
            float *yr = y + ((size_t)b * T + s) * C;
            for (int c = c0; c < c1; c++) {
                float p = conv_pre(x, w, bias, cache, b, s, c, T, C, W);
                yr[c] = act == LINA_ACT_SILU ? p * sigmoidf_(p) : p;
            }
        }
        if (cache_out) {
            /* last W of the combined sequence; ascending j reads ahead of the
             * write, so cache_out may alias cache */
            for (int c = c0; c < c1; c++) {
                float *co = cache_out + ((size_t)b * C + c) * W;
                for (int j = 0; j < W; j++) {
                    co[j] = comb(x, cache, b, T + j, c, T, C, W);
                }
            }
        }
    }
}

/* dx [B,T,C], dw [C,W], dbias [C], dcache [B,C,W] accumulate */
void lina_shortconv_backward(float *dx, float *dw, float *dbias, float *dcache, const float *dy, const float *x,
                             const float *w, const float *bias, const float *cache, int B, int T, int C, int W,
                             lina_act act)
{
    int nb = (C + CB - 1) / CB;
    /* channel blocks own their dw / dbias rows: no races, fixed order */
#pragma omp parallel for schedule(static) if ((size_t)B * T * C * W >= 65536)
    for (int cbk = 0; cbk < nb; cbk++) {
        int c0 = cbk * CB, c1 = c0 + CB < C ? c0 + CB : C;
        for (int b = 0; b < B; b++) {
            for (int s = 0; s < T; s++) {
                const float *dyr = dy + ((size_t)b * T + s) * C;
                for (int c = c0; c < c1; c++) {
                    float dp = dyr[c];
                    if (act == LINA_ACT_SILU) {
                        float p = conv_pre(x, w, bias, cache, b, s, c, T, C, W);
                        float sg = sigmoidf_(p);
                        dp *= sg * (1.0f + p * (1.0f - sg));
                    }
                    if (dbias) {
                        dbias[c] += dp;
                    }
                    const float *wc = w + (size_t)c * W;
                    for (int j = 0; j < W; j++) {
                        int p = s + 1 + j;
                        if (dw) {
                            dw[(size_t)c * W + j] += dp * comb(x, cache, b, p, c, T, C, W);
                        }
                        if (p >= W) {
                            if (dx) {
                                dx[((size_t)b * T + (size_t)(p - W)) * C + c] += wc[j] * dp;
                            }
                        } else if (dcache) {
                            dcache[((size_t)b * C + c) * W + p] += wc[j] * dp;
                        }
                    }
                }
            }
        }
    }
}

/* y, x [B,C]; cache [B,C,W] updated in place */
void lina_shortconv_step(float *y, const float *x, const float *w, const float *bias, float *cache, int B, int C,
                         int W, lina_act act)
{
#pragma omp parallel for if ((size_t)B * C * W >= 65536)
    for (int b = 0; b < B; b++) {
        for (int c = 0; c < C; c++) {
            float *cc = cache + ((size_t)b * C + c) * W;
            memmove(cc, cc + 1, (size_t)(W - 1) * sizeof(float));
            cc[W - 1] = x[(size_t)b * C + c];
            float acc = bias ? bias[c] : 0.0f;
            const float *wc = w + (size_t)c * W;
            for (int j = 0; j < W; j++) {
                acc += wc[j] * cc[j];
            }
            y[(size_t)b * C + c] = act == LINA_ACT_SILU ? acc * sigmoidf_(acc) : acc;
        }
    }
}
