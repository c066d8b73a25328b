/* conv.c -- ShortConvolution: depthwise causal conv over time (+ SiLU), with
 * a decode cache; forward, backward and one-token step. The whole-sequence
 * forward and backward are compiled once per instruction-set path (Makefile
 * KSRC, kern/isa.h): their channel loops vectorise to the path's width. */
#include "../kern/isa.h"
#include "../kern/vexp.h"
#include "nn.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CB 256  /* the most channels per task (the stride of the per-block arrays) */
#define WMAX 8  /* widest kernel of the channels-inner loops; wider ones take the per-channel loops */
#define PF 16   /* rows ahead that the channel-block loops prefetch */

/* a * b + c in the channels-inner loops: on the vector paths (which have FMA) one fused
 * multiply-add, as the vector-column kernels below compute it, at every optimisation level
 * (gcc left a * b + c uncontracted in the -O1 sanitizer build), so that a channel gets the
 * same bits in either loop; plain on the portable path (no FMA instruction there) */
#ifdef LINA_VL
#define CONV_FMA(a, b, c) fmaf(a, b, c)
#else
#define CONV_FMA(a, b, c) ((a) * (b) + (c))
#endif

/* Channels per task: whole rows (up to CB channels), or with `split` threads a share of
 * the row each (a multiple of 16). The loops walk down the rows of [*, C] tensors; a task
 * that reads a narrow block of every row waits on memory (the block of the next row is a
 * row stride away, which the hardware prefetchers follow poorly: a 32-channel block of
 * 192-channel rows ran 4x slower per channel than whole rows), so the blocks are as wide
 * as the threads allow. Each channel's sums run in the same order at any width. */
static int conv_block(int C, int split)
{
    int cb = split > 1 ? (C + split - 1) / split : C;
    cb = (cb + 15) / 16 * 16;
    return cb < CB ? (cb < C ? cb : C) : CB;
}

static int conv_threads(size_t work)
{
#ifdef _OPENMP
    return work >= 65536 && !omp_in_parallel() ? omp_get_max_threads() : 1;
#else
    (void)work;
    return 1;
#endif
}

/* Prefetch the cw floats at p (one channel block of a row). The blocks walk
 * down the rows of [*, C] tensors at a stride of C floats, which the hardware
 * prefetchers follow poorly: without this the loops wait on memory. (A read
 * prefetch also for rows about to be written: baseline x86-64 has no
 * prefetch-for-write.) */
static inline void prefetch_block(const float *p, int cw)
{
    for (int i = 0; i < cw; i += 16) {
        __builtin_prefetch(p + i);
    }
    __builtin_prefetch(p + cw - 1);
}

static inline float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* Element p of the combined sequence [cache (W entries), x (T entries)] of
 * (b, c): p < W reads the cache (or zero), else x[b, p-W, c] (rows of x ldx
 * floats apart). */
static inline float comb(const float *x, size_t ldx, const float *cache, int b, int p, int c, int T, int C, int W)
{
    if (p >= W) {
        return x[((size_t)b * T + (size_t)(p - W)) * ldx + c];
    }
    return cache ? cache[((size_t)b * C + c) * W + p] : 0.0f;
}

/* pre-activation at time s (0-based) of (b, c): bias + sum_j w[c,j] comb(s+1+j) */
static inline float conv_pre(const float *x, size_t ldx, const float *w, const float *bias, const float *cache, int b, int s,
                             int c, int T, int C, int W)
{
    float acc = bias ? bias[c] : 0.0f;
    const float *wc = w + (size_t)c * W;
    for (int j = 0; j < W; j++) {
        acc += wc[j] * comb(x, ldx, cache, b, s + 1 + j, c, T, C, W);
    }
    return acc;
}

/* w [C,W] -> wt [W][CB]: the taps of channels c0..c1-1, channels contiguous */
static void taps_t(float *wt, const float *w, int c0, int c1, int W)
{
    for (int j = 0; j < W; j++) {
        for (int c = c0; c < c1; c++) {
            wt[j * CB + (c - c0)] = w[(size_t)c * W + j];
        }
    }
}

/* pre[CB] = pre-activations at time s of channels c0..c1-1 of batch b, in the
 * order of conv_pre (bias, then taps j = 0..W-1), channels in the inner loop */
static void conv_pre_row(float *pre, const float *x, size_t ldx, const float *wt, const float *bias, const float *cache, int b,
                         int s, int c0, int c1, int T, int C, int W)
{
    int cw = c1 - c0;
    if (W == 4 && s >= W - 1) {
        /* the usual case: all four taps in x, summed in registers (the same order: bias, taps 0..3) */
        const float *x0 = x + ((size_t)b * T + (size_t)(s - 3)) * ldx + c0, *x1 = x0 + ldx, *x2 = x1 + ldx,
                    *x3 = x2 + ldx;
        const float *w0 = wt, *w1 = wt + CB, *w2 = wt + 2 * CB, *w3 = wt + 3 * CB, *bc = bias ? bias + c0 : NULL;
#pragma omp simd
        for (int c = 0; c < cw; c++) {
            float acc = bc ? bc[c] : 0.0f;
            acc = CONV_FMA(w0[c], x0[c], acc);
            acc = CONV_FMA(w1[c], x1[c], acc);
            acc = CONV_FMA(w2[c], x2[c], acc);
            acc = CONV_FMA(w3[c], x3[c], acc);
            pre[c] = acc;
        }
        return;
    }
    if (bias) {
        memcpy(pre, bias + c0, (size_t)cw * sizeof(float));
    } else {
        memset(pre, 0, (size_t)cw * sizeof(float));
    }
    for (int j = 0; j < W; j++) {
        int p = s + 1 + j;
        const float *wj = wt + j * CB;
        if (p >= W) {
            const float *xr = x + ((size_t)b * T + (size_t)(p - W)) * ldx + c0;
#pragma omp simd
            for (int c = 0; c < cw; c++) {
                pre[c] = CONV_FMA(wj[c], xr[c], pre[c]);
            }
        } else {
            for (int c = 0; c < cw; c++) {
                pre[c] = CONV_FMA(wj[c], comb(x, ldx, cache, b, p, c0 + c, T, C, W), pre[c]);
            }
        }
    }
}

#ifdef LINA_VL
/* W = 4 on the vector paths, one vector of channels [c, c + LINA_VL) down the rows of
 * one sequence at a time: the three inputs before the row (and in the backward the
 * three pre-activation gradients before it) stay in registers, so a row costs one
 * load of x (and of dy) and one store, where the row-major loops above read every
 * input four times and, in the backward, load and store their per-channel sums once
 * per tap and row. The hardware prefetchers do not follow one line per row at a row
 * stride (see conv_block), so each stream is prefetched PF rows ahead. Every sum runs
 * in the order of conv_pre_row and conv_bwd_block (bias, taps 0..3; dw and dbias over
 * (b, s) ascending; dx[t] over s' = t..t+3 ascending), so the values are the same. */
#define CV_PF(p) (__builtin_prefetch(p), __builtin_prefetch((p) + LINA_VL - 1))

/* lanes of w [C,4] (tap j of channels c..c+VL-1) and of a [B,C,4] cache (entry p of (b, c..)) */
static inline lina_vf cv_taps(const float *w, int c, int j)
{
    _Alignas(64) float t[LINA_VL];
    for (int l = 0; l < LINA_VL; l++) {
        t[l] = w[(size_t)(c + l) * 4 + j];
    }
    return LINA_VLD(t);
}

static inline lina_vf cv_cache(const float *cache, int b, int C, int c, int p)
{
    if (!cache) {
        return LINA_VZERO();
    }
    _Alignas(64) float t[LINA_VL];
    for (int l = 0; l < LINA_VL; l++) {
        t[l] = cache[((size_t)b * C + c + l) * 4 + p];
    }
    return LINA_VLD(t);
}

/* the taps w[0..3] of the channel vector: wt[j] (cv_taps) */
static inline void cv_taps4(lina_vf wt[4], const float *w, int c)
{
    for (int j = 0; j < 4; j++) {
        wt[j] = cv_taps(w, c, j);
    }
}

/* the pre-activation of a row from its inputs x(s-3) .. x(s): bias, then taps 0..3 */
static inline lina_vf cv_pre(const lina_vf wt[4], lina_vf bv, lina_vf a0, lina_vf a1, lina_vf a2, lina_vf x3)
{
    lina_vf p = LINA_VFMA(wt[0], a0, bv);
    p = LINA_VFMA(wt[1], a1, p);
    p = LINA_VFMA(wt[2], a2, p);
    return LINA_VFMA(wt[3], x3, p);
}

/* forward of (b, channel vector c): y rows = act(pre-activation); cache_out as the
 * row-major loop writes it (the cache read first: cache_out may alias it) */
static void conv4v_fwd(float *y, const float *x, size_t ldx, const float *w, const float *bias, const float *cache,
                       float *cache_out, int b, int c, int T, int C, int silu)
{
    lina_vf wt[4];
    cv_taps4(wt, w, c);
    const lina_vf bv = bias ? LINA_VLD(bias + c) : LINA_VZERO();
    /* inputs of rows -3, -2, -1: entries 1, 2, 3 of the cache (the oldest is not used) */
    lina_vf a0 = cv_cache(cache, b, C, c, 1), a1 = cv_cache(cache, b, C, c, 2), a2 = cv_cache(cache, b, C, c, 3);
    const float *xr = x + (size_t)b * T * ldx + c;
    float *yr = y + (size_t)b * T * C + c;
    for (int s = 0; s < T; s++) {
        if (s + PF < T) {
            CV_PF(xr + (size_t)(s + PF) * ldx);
            CV_PF(yr + (size_t)(s + PF) * C);
        }
        const lina_vf x3 = LINA_VLD(xr + (size_t)s * ldx);
        const lina_vf p = cv_pre(wt, bv, a0, a1, a2, x3);
        LINA_VST(yr + (size_t)s * C, silu ? LINA_VMUL(p, lina_vsigmoid_v(p)) : p);
        a0 = a1, a1 = a2, a2 = x3;
    }
    if (cache_out) {
        /* the last 4 of [cache, x]: rows T-4..T-1, or cache entries where T < 4 */
        _Alignas(64) float col[4][LINA_VL];
        for (int j = 0; j < 4; j++) {
            const int r = T - 4 + j;
            LINA_VST(col[j], r >= 0 ? LINA_VLD(xr + (size_t)r * ldx) : cv_cache(cache, b, C, c, 4 + r));
        }
        for (int l = 0; l < LINA_VL; l++) {
            for (int j = 0; j < 4; j++) {
                cache_out[((size_t)b * C + c + l) * 4 + j] = col[j][l];
            }
        }
    }
}

/* d pre-activation of a row from dy and the pre-activation p */
static inline lina_vf cv_dpre(lina_vf dyv, lina_vf p, int silu)
{
    if (!silu) {
        return dyv;
    }
    const lina_vf one = LINA_VSET1(1.0f), sg = lina_vsigmoid_v(p);
    return LINA_VMUL(dyv, LINA_VMUL(sg, LINA_VFMA(p, LINA_VSUB(one, sg), one)));
}

/* backward of channel vector c over every sequence: dx rows (written with dx_set, else
 * accumulated), dw, dbias, dcache accumulated */
static void conv4v_bwd(float *dx, size_t lddx, int dx_set, float *dw, float *dbias, float *dcache, const float *dy,
                       const float *x, size_t ldx, const float *w, const float *bias, const float *cache, int B,
                       int T, int C, int c, int silu)
{
    lina_vf wt[4];
    cv_taps4(wt, w, c);
    const lina_vf bv = bias ? LINA_VLD(bias + c) : LINA_VZERO();
    lina_vf g0 = LINA_VZERO(), g1 = g0, g2 = g0, g3 = g0, gb = g0;
    if (dw) {
        lina_vf gt[4];
        cv_taps4(gt, dw, c);
        g0 = gt[0], g1 = gt[1], g2 = gt[2], g3 = gt[3];
    }
    if (dbias) {
        gb = LINA_VLD(dbias + c);
    }
    for (int b = 0; b < B; b++) {
        lina_vf a0 = cv_cache(cache, b, C, c, 1), a1 = cv_cache(cache, b, C, c, 2), a2 = cv_cache(cache, b, C, c, 3);
        lina_vf d3 = LINA_VZERO(), d2 = d3, d1 = d3; /* d pre-activation of rows s-3, s-2, s-1 */
        const float *xr = x + (size_t)b * T * ldx + c, *dyr = dy + (size_t)b * T * C + c;
        float *dxr = dx ? dx + (size_t)b * T * lddx + c : NULL;
        for (int s = 0; s < T; s++) {
            if (s + PF < T) {
                CV_PF(xr + (size_t)(s + PF) * ldx);
                CV_PF(dyr + (size_t)(s + PF) * C);
                if (dxr && s + PF >= 3) {
                    CV_PF(dxr + (size_t)(s + PF - 3) * lddx);
                }
            }
            const lina_vf x3 = LINA_VLD(xr + (size_t)s * ldx);
            const lina_vf p = cv_pre(wt, bv, a0, a1, a2, x3);
            const lina_vf d = cv_dpre(LINA_VLD(dyr + (size_t)s * C), p, silu);
            gb = LINA_VADD(gb, d);
            g0 = LINA_VFMA(d, a0, g0);
            g1 = LINA_VFMA(d, a1, g1);
            g2 = LINA_VFMA(d, a2, g2);
            g3 = LINA_VFMA(d, x3, g3);
            if (dcache && s < 3) {
                /* taps j < 3 - s read cache entry p = s + 1 + j */
                _Alignas(64) float dl[LINA_VL], wl[4][LINA_VL];
                LINA_VST(dl, d);
                LINA_VST(wl[0], wt[0]), LINA_VST(wl[1], wt[1]), LINA_VST(wl[2], wt[2]);
                for (int j = 0; j < 3 - s; j++) {
                    for (int l = 0; l < LINA_VL; l++) {
                        float *dc = &dcache[((size_t)b * C + c + l) * 4 + s + 1 + j];
                        *dc = CONV_FMA(wl[j][l], dl[l], *dc);
                    }
                }
            }
            if (dxr && s >= 3) {
                float *o = dxr + (size_t)(s - 3) * lddx;
                lina_vf acc = dx_set ? LINA_VZERO() : LINA_VLD(o);
                acc = LINA_VFMA(wt[3], d3, acc);
                acc = LINA_VFMA(wt[2], d2, acc);
                acc = LINA_VFMA(wt[1], d1, acc);
                LINA_VST(o, LINA_VFMA(wt[0], d, acc));
            }
            d3 = d2, d2 = d1, d1 = d;
            a0 = a1, a1 = a2, a2 = x3;
        }
        /* the last rows, T-3..T-1 (those >= 0), from the rows after them that exist */
        for (int t = T - 3 < 0 ? 0 : T - 3; dxr && t < T; t++) {
            float *o = dxr + (size_t)t * lddx;
            lina_vf acc = dx_set ? LINA_VZERO() : LINA_VLD(o);
            const int n = T - t; /* rows t..T-1: the registers d(T-n) .. d1 */
            if (n == 3) {
                acc = LINA_VFMA(wt[3], d3, acc);
                acc = LINA_VFMA(wt[2], d2, acc);
                acc = LINA_VFMA(wt[1], d1, acc);
            } else if (n == 2) {
                acc = LINA_VFMA(wt[3], d2, acc);
                acc = LINA_VFMA(wt[2], d1, acc);
            } else {
                acc = LINA_VFMA(wt[3], d1, acc);
            }
            LINA_VST(o, acc);
        }
    }
    if (dw) {
        _Alignas(64) float gl[4][LINA_VL];
        LINA_VST(gl[0], g0), LINA_VST(gl[1], g1), LINA_VST(gl[2], g2), LINA_VST(gl[3], g3);
        for (int l = 0; l < LINA_VL; l++) {
            for (int j = 0; j < 4; j++) {
                dw[(size_t)(c + l) * 4 + j] = gl[j][l];
            }
        }
    }
    if (dbias) {
        LINA_VST(dbias + c, gb);
    }
}
#endif

#ifdef LINA_VL
#define LINA_VL_OR_1 LINA_VL
#else
#define LINA_VL_OR_1 1
#endif

/* channels [0, n) that the vector-column kernels take: whole vectors, W = 4 (0 elsewhere) */
static int conv4v_channels(int C, int W, lina_act act)
{
#ifdef LINA_VL
    return W == 4 && (act == LINA_ACT_SILU || act == LINA_ACT_NONE) ? C / LINA_VL * LINA_VL : 0;
#else
    (void)C, (void)W, (void)act;
    return 0;
#endif
}

/* y [B,T,C]; x [B,T,C] with rows ldx floats apart; w [C,W]; bias [C]; cache, cache_out [B,C,W] */
void LINA_KFN(lina_shortconv_forward_ld)(float *y, const float *x, size_t ldx, const float *w, const float *bias,
                                         const float *cache, float *cache_out, int B, int T, int C, int W,
                                         lina_act act)
{
    const int nv = conv4v_channels(C, W, act); /* channels [0, nv): conv4v_fwd; the rest below */
#ifdef LINA_VL
    if (nv) {
        const int nvv = nv / LINA_VL;
#pragma omp parallel for schedule(static) if ((size_t)B * T * C * W >= 65536)
        for (int task = 0; task < B * nvv; task++) {
            conv4v_fwd(y, x, ldx, w, bias, cache, cache_out, task / nvv, task % nvv * LINA_VL, T, C,
                       act == LINA_ACT_SILU);
        }
        if (nv == C) {
            return;
        }
    }
#endif
    const int cb = conv_block(C - nv, 1), nb = (C - nv + cb - 1) / cb;
#pragma omp parallel for schedule(static) if ((size_t)B * T * C * W >= 65536)
    for (int task = 0; task < B * nb; task++) {
        int b = task / nb, c0 = nv + (task % nb) * cb, c1 = c0 + cb < C ? c0 + cb : C;
        if (W <= WMAX) {
            float wt[WMAX * CB], pre[CB], sg[CB];
            taps_t(wt, w, c0, c1, W);
            for (int s = 0; s < T; s++) {
                float *yr = y + ((size_t)b * T + s) * C + c0;
                if (s + PF < T) {
                    prefetch_block(x + ((size_t)b * T + s + PF) * ldx + c0, c1 - c0);
                    prefetch_block(yr + (size_t)PF * C, c1 - c0);
                }
                conv_pre_row(pre, x, ldx, wt, bias, cache, b, s, c0, c1, T, C, W);
                if (act == LINA_ACT_SILU) {
                    lina_vsigmoid(sg, pre, (size_t)(c1 - c0));
                    for (int c = 0; c < c1 - c0; c++) {
                        yr[c] = pre[c] * sg[c];
                    }
                } else {
                    memcpy(yr, pre, (size_t)(c1 - c0) * sizeof(float));
                }
            }
        } else {
            for (int s = 0; s < T; s++) {
                float *yr = y + ((size_t)b * T + s) * C;
                for (int c = c0; c < c1; c++) {
                    float p = conv_pre(x, ldx, w, bias, cache, b, s, c, T, C, W);
                    yr[c] = act == LINA_ACT_SILU ? p * sigmoidf_(p) : p;
                }
            }
        }
        if (cache_out) {
            /* last W of the combined sequence; ascending j reads ahead of the
             * write, so cache_out may alias cache */
            for (int c = c0; c < c1; c++) {
                float *co = cache_out + ((size_t)b * C + c) * W;
                for (int j = 0; j < W; j++) {
                    co[j] = comb(x, ldx, cache, b, T + j, c, T, C, W);
                }
            }
        }
    }
}

/* backward of one channel block c0..c1-1 (W <= WMAX), channels in the inner
 * loops; every accumulation runs in the order of the per-channel reference
 * loop below (dw, dbias over (b, s); dx[t] over the rows s = t..t+W-1), so
 * the results are the same */
static void conv_bwd_block(float *dx, size_t lddx, int dx_set, float *dw, float *dbias, float *dcache,
                           const float *dy, const float *x, size_t ldx, const float *w, const float *bias,
                           const float *cache, int B, int T, int C, int W, lina_act act, int c0, int c1)
{
    const int cw = c1 - c0;
    float wt[WMAX * CB], adw[WMAX * CB], adb[CB], pre[CB], sgr[CB];
    float dp[WMAX][CB]; /* ring of the last W rows of d pre-activation: row s in dp[s % W] */
    taps_t(wt, w, c0, c1, W);
    if (dw) {
        taps_t(adw, dw, c0, c1, W);
    }
    if (dbias) {
        memcpy(adb, dbias + c0, (size_t)cw * sizeof(float));
    }
    for (int b = 0; b < B; b++) {
        for (int s = 0; s < T + W - 1; s++) {
            if (s + PF < T) {
                size_t r = (size_t)b * T + s + PF;
                prefetch_block(dy + r * C + c0, cw);
                prefetch_block(x + r * ldx + c0, cw);
                if (dx && s + PF >= W - 1) {
                    prefetch_block(dx + (r - (size_t)(W - 1)) * lddx + c0, cw);
                }
            }
            if (s < T) {
                const float *dyr = dy + ((size_t)b * T + s) * C + c0;
                float *d = dp[s % W];
                if (act == LINA_ACT_SILU) {
                    conv_pre_row(pre, x, ldx, wt, bias, cache, b, s, c0, c1, T, C, W);
                    lina_vsigmoid(sgr, pre, (size_t)cw);
                    for (int c = 0; c < cw; c++) {
                        float p = pre[c], sg = sgr[c], g = dyr[c];
                        g *= sg * CONV_FMA(p, 1.0f - sg, 1.0f);
                        d[c] = g;
                    }
                } else {
                    memcpy(d, dyr, (size_t)cw * sizeof(float));
                }
                if (dbias) {
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        adb[c] += d[c];
                    }
                }
                int j0 = 0;
                if (dw && W == 4 && s >= W - 1) { /* all four taps in x: one pass (same sums) */
                    const float *x0 = x + ((size_t)b * T + (size_t)(s - 3)) * ldx + c0, *x1 = x0 + ldx,
                                *x2 = x1 + ldx, *x3 = x2 + ldx;
                    float *a0 = adw, *a1 = adw + CB, *a2 = adw + 2 * CB, *a3 = adw + 3 * CB;
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        a0[c] = CONV_FMA(d[c], x0[c], a0[c]);
                        a1[c] = CONV_FMA(d[c], x1[c], a1[c]);
                        a2[c] = CONV_FMA(d[c], x2[c], a2[c]);
                        a3[c] = CONV_FMA(d[c], x3[c], a3[c]);
                    }
                    j0 = W; /* p >= W for every tap: no dcache term either */
                }
                for (int j = j0; j < W; j++) {
                    int p = s + 1 + j;
                    if (dw) {
                        float *aj = adw + j * CB;
                        if (p >= W) {
                            const float *xr = x + ((size_t)b * T + (size_t)(p - W)) * ldx + c0;
#pragma omp simd
                            for (int c = 0; c < cw; c++) {
                                aj[c] = CONV_FMA(d[c], xr[c], aj[c]);
                            }
                        } else {
                            for (int c = 0; c < cw; c++) {
                                aj[c] = CONV_FMA(d[c], comb(x, ldx, cache, b, p, c0 + c, T, C, W), aj[c]);
                            }
                        }
                    }
                    if (p < W && dcache) {
                        for (int c = 0; c < cw; c++) {
                            float *dc = &dcache[((size_t)b * C + c0 + c) * W + p];
                            *dc = CONV_FMA(wt[j * CB + c], d[c], *dc);
                        }
                    }
                }
            }
            /* dx row t = s - (W-1) is complete: rows s' = t..min(t+W-1, T-1),
             * in ascending s' (tap j = t + W - 1 - s' descending) */
            int t = s - (W - 1);
            if (dx && t >= 0) {
                /* summed in a local row (same order), so the row is read and
                 * written once instead of once per tap */
                float *dxr = dx + ((size_t)b * T + t) * lddx + c0, acc[CB];
                if (dx_set) {
                    memset(acc, 0, (size_t)cw * sizeof(float));
                } else {
                    memcpy(acc, dxr, (size_t)cw * sizeof(float));
                }
                for (int sp = t; sp < T && sp <= s; sp++) {
                    const float *wj = wt + (t + W - 1 - sp) * CB, *d = dp[sp % W];
#pragma omp simd
                    for (int c = 0; c < cw; c++) {
                        acc[c] = CONV_FMA(wj[c], d[c], acc[c]);
                    }
                }
                memcpy(dxr, acc, (size_t)cw * sizeof(float));
            }
        }
    }
    if (dw) {
        for (int j = 0; j < W; j++) {
            for (int c = c0; c < c1; c++) {
                dw[(size_t)c * W + j] = adw[j * CB + (c - c0)];
            }
        }
    }
    if (dbias) {
        memcpy(dbias + c0, adb, (size_t)cw * sizeof(float));
    }
}

/* dx [B,T,C] (rows lddx floats apart; dx_set: written, else accumulated), dw [C,W], dbias [C],
 * dcache [B,C,W] accumulate; x rows ldx apart */
void LINA_KFN(lina_shortconv_backward_ld)(float *dx, size_t lddx, int dx_set, float *dw, float *dbias, float *dcache,
                                          const float *dy, const float *x, size_t ldx, const float *w,
                                          const float *bias, const float *cache, int B, int T, int C, int W,
                                          lina_act act)
{
    const size_t work = (size_t)B * T * C * W;
    /* channels [0, nv): one task per vector (conv4v_bwd); the rest in channel blocks */
    const int nv = conv4v_channels(C, W, act), nvv = nv / (nv ? LINA_VL_OR_1 : 1);
    const int cb = nv < C ? conv_block(C - nv, conv_threads(work)) : 1, nb = (C - nv + cb - 1) / cb;
    /* tasks own their channels' dw / dbias rows: no races, fixed order */
#pragma omp parallel for schedule(static) if (work >= 65536)
    for (int task = 0; task < nvv + nb; task++) {
#ifdef LINA_VL
        if (task < nvv) {
            conv4v_bwd(dx, lddx, dx_set, dw, dbias, dcache, dy, x, ldx, w, bias, cache, B, T, C, task * LINA_VL,
                       act == LINA_ACT_SILU);
            continue;
        }
#endif
        int cbk = task - nvv, c0 = nv + cbk * cb, c1 = c0 + cb < C ? c0 + cb : C;
        if (W <= WMAX) {
            conv_bwd_block(dx, lddx, dx_set, dw, dbias, dcache, dy, x, ldx, w, bias, cache, B, T, C, W, act, c0,
                           c1);
            continue;
        }
        for (size_t r = 0; dx && dx_set && r < (size_t)B * T; r++) {
            memset(dx + r * lddx + c0, 0, (size_t)(c1 - c0) * sizeof(float));
        }
        for (int b = 0; b < B; b++) {
            for (int s = 0; s < T; s++) {
                const float *dyr = dy + ((size_t)b * T + s) * C;
                for (int c = c0; c < c1; c++) {
                    float dp = dyr[c];
                    if (act == LINA_ACT_SILU) {
                        float p = conv_pre(x, ldx, w, bias, cache, b, s, c, T, C, W);
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
                            dw[(size_t)c * W + j] += dp * comb(x, ldx, cache, b, p, c, T, C, W);
                        }
                        if (p >= W) {
                            if (dx) {
                                dx[((size_t)b * T + (size_t)(p - W)) * lddx + c] += wc[j] * dp;
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

#if LINA_ISA_PRIMARY
LINA_ISA_DISPATCH_VOID(lina_shortconv_forward_ld,
                       (float *y, const float *x, size_t ldx, const float *w, const float *bias, const float *cache,
                        float *cache_out, int B, int T, int C, int W, lina_act act),
                       (y, x, ldx, w, bias, cache, cache_out, B, T, C, W, act))
LINA_ISA_DISPATCH_VOID(lina_shortconv_backward_ld,
                       (float *dx, size_t lddx, int dx_set, float *dw, float *dbias, float *dcache, const float *dy,
                        const float *x, size_t ldx, const float *w, const float *bias, const float *cache, int B,
                        int T, int C, int W, lina_act act),
                       (dx, lddx, dx_set, dw, dbias, dcache, dy, x, ldx, w, bias, cache, B, T, C, W, act))

void lina_shortconv_forward(float *y, const float *x, const float *w, const float *bias, const float *cache,
                            float *cache_out, int B, int T, int C, int W, lina_act act)
{
    lina_shortconv_forward_ld(y, x, (size_t)C, w, bias, cache, cache_out, B, T, C, W, act);
}

void lina_shortconv_backward(float *dx, float *dw, float *dbias, float *dcache, const float *dy, const float *x,
                             const float *w, const float *bias, const float *cache, int B, int T, int C, int W,
                             lina_act act)
{
    lina_shortconv_backward_ld(dx, (size_t)C, 0, dw, dbias, dcache, dy, x, (size_t)C, w, bias, cache, B, T, C, W,
                               act);
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
#endif /* LINA_ISA_PRIMARY */
