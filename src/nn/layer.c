/* layer.c -- glue the mixer layers share: the kernel dims of a layer call
 * and the repetition of q/k/v heads over grouped heads (and its adjoint). */
#include "nn.h"

#include "../kern/gemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lina_mix_dims lina_layer_mix(int B, int T, int H, int K, int V, int chunk, float scale)
{
    lina_mix_dims md;
    memset(&md, 0, sizeof(md));
    md.B = B;
    md.T = T;
    md.H = H;
    md.K = K;
    md.V = V;
    md.chunk = chunk;
    md.scale = scale;
    return md;
}

void lina_heads_repeat(float *dst, const float *src, size_t R, int H, int Hsrc, int E)
{
    int G = H / Hsrc;
    for (size_t r = 0; r < R; r++) {
        for (int h = 0; h < H; h++) {
            memcpy(dst + (r * H + h) * E, src + (r * Hsrc + h / G) * E, (size_t)E * sizeof(float));
        }
    }
}

void lina_heads_reduce(float *dst, const float *src, size_t R, int H, int Hdst, int E, int add)
{
    int G = H / Hdst;
    if (!add) {
        memset(dst, 0, R * Hdst * E * sizeof(float));
    }
    for (size_t r = 0; r < R; r++) {
        for (int h = 0; h < H; h++) {
            float *o = dst + (r * Hdst + h / G) * E;
            const float *x = src + (r * H + h) * E;
            for (int i = 0; i < E; i++) {
                o[i] += x[i];
            }
        }
    }
}

void lina_out_forward(float *out, float *y, float *rstd, const float *o, const float *gate, const float *norm_w,
                      const float *o_proj, int N, int H, int V, int D, float eps)
{
    if (gate) {
        lina_rmsnorm_gated_forward(y, rstd, o, gate, norm_w, N * H, V, eps);
    } else {
        lina_rmsnorm_forward(y, rstd, o, norm_w, NULL, N * H, V, eps);
    }
    lina_linear_forward(out, y, o_proj, NULL, N, H * V, D);
}

void lina_out_backward(float *dO, float *dgate, float *dy, float *dnorm_w, float *do_proj, const float *dout,
                       const float *y, const float *o, const float *gate, const float *norm_w, const float *o_proj,
                       const float *rstd, int N, int H, int V, int D)
{
    lina_linear_backward_set(dy, do_proj, NULL, dout, y, o_proj, N, H * V, D);
    if (gate) {
        lina_rmsnorm_gated_backward_set(dO, dgate, dnorm_w, dy, o, gate, norm_w, rstd, N * H, V);
    } else {
        lina_rmsnorm_backward_set(dO, dnorm_w, NULL, dy, o, norm_w, rstd, N * H, V);
    }
}

void lina_conv_act_forward(float *y, const float *x, const float *conv_w, float *cache, int B, int T, int C, int W,
                           lina_act act)
{
    if (conv_w) {
        lina_shortconv_forward(y, x, conv_w, NULL, cache, cache, B, T, C, W, act);
    } else if (act == LINA_ACT_SILU) {
        lina_silu_forward(y, x, (size_t)B * T * C);
    } else if (y != x) {
        memcpy(y, x, (size_t)B * T * C * sizeof(float));
    }
}

void lina_conv_act_backward(float *dx, float *dconv_w, const float *dy, const float *x, const float *conv_w, int B,
                            int T, int C, int W, lina_act act)
{
    if (conv_w) {
        lina_shortconv_backward(dx, dconv_w, NULL, NULL, dy, x, conv_w, NULL, NULL, B, T, C, W, act);
    } else if (act == LINA_ACT_SILU) {
        lina_silu_backward(dx, dy, x, (size_t)B * T * C);
    } else {
        size_t n = (size_t)B * T * C;
        for (size_t i = 0; i < n; i++) {
            dx[i] += dy[i];
        }
    }
}

void lina_decay_forward(float *g, const float *a, const float *A_log, const float *dt_bias, size_t N, int H)
{
    for (size_t n = 0; n < N; n++) {
        for (int h = 0; h < H; h++) {
            size_t i = n * H + h;
            g[i] = -expf(A_log[h]) * lina_softplusf(a[i] + dt_bias[h]);
        }
    }
}

void lina_decay_backward(float *dg, float *dA_log, float *ddt_bias, const float *a, const float *g,
                         const float *A_log, const float *dt_bias, size_t N, int H)
{
    for (int h = 0; h < H; h++) {
        double sA = 0.0, sdt = 0.0;
        float eA = expf(A_log[h]);
        for (size_t r = 0; r < N; r++) {
            size_t i = r * H + h;
            float z = a[i] + dt_bias[h];
            float dz = dg[i] * -eA * (1.0f / (1.0f + expf(-z)));
            sA += (double)dg[i] * g[i];
            sdt += dz;
            dg[i] = dz; /* now d(a) */
        }
        if (dA_log) {
            dA_log[h] += (float)sA;
        }
        if (ddt_bias) {
            ddt_bias[h] += (float)sdt;
        }
    }
}

static int g_fused = -1; /* -1: not read yet; LINA_FUSED_PROJ=0 turns fusion off */
static long g_fused_calls;

void lina_proj_set_fused(int on)
{
    g_fused = on ? 1 : 0;
}

void lina_proj_fused_note(void)
{
#pragma omp atomic
    g_fused_calls++;
}

long lina_proj_fused_calls(void)
{
    long n;
#pragma omp atomic read
    n = g_fused_calls;
    return n;
}

int lina_proj_fusable(const lina_proj_part *pt, int n, int D)
{
    if (g_fused < 0) {
        const char *e = getenv("LINA_FUSED_PROJ");
        g_fused = !(e && e[0] == '0');
    }
    if (!g_fused || n < 1 || n > LINA_PROJ_MAX) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (!pt[i].w || pt[i].cols <= 0 || (i > 0 && pt[i].w != pt[i - 1].w + (size_t)pt[i - 1].cols * D)) {
            return 0;
        }
    }
    return 1;
}

static int proj_ld(int tot)
{
    return (tot + LINA_PROJ_PAD - 1) / LINA_PROJ_PAD * LINA_PROJ_PAD;
}

static int proj_tot(const lina_proj_part *pt, int n)
{
    int tot = 0;
    for (int i = 0; i < n; i++) {
        tot += pt[i].cols;
    }
    return tot;
}

/* dst [N, cols] (row stride ldd) = src [N, cols] (row stride lds) */
static void copy_cols(float *dst, size_t ldd, const float *src, size_t lds, size_t N, int cols)
{
#pragma omp parallel for if (N * (size_t)cols >= 65536)
    for (size_t r = 0; r < N; r++) {
        memcpy(dst + r * ldd, src + r * lds, (size_t)cols * sizeof(float));
    }
}

void lina_proj_forward(float *pre, const lina_proj_part *pt, int n, const float *x, int B, int T, int D, int W)
{
    const int tot = proj_tot(pt, n), ld = proj_ld(tot);
    const size_t N = (size_t)B * T;
    lina_proj_fused_note();
    if (N <= LINA_SGEMM_SMALL_M) {
        lina_sgemm_rows_nt((int)N, tot, D, 1.0f, x, D, pt[0].w, D, 0.0f, pre, ld);
    } else {
        lina_sgemm_layer(0, 1, (int)N, tot, D, 1.0f, x, D, pt[0].w, D, 0.0f, pre, ld);
    }
    for (int i = 0, off = 0; i < n; off += pt[i].cols, i++) {
        if (pt[i].conv) {
            lina_shortconv_forward_ld(pt[i].y, pre + off, (size_t)ld, pt[i].conv, NULL, pt[i].cache, pt[i].cache,
                                      B, T, pt[i].cols, W, pt[i].act);
        } else {
            copy_cols(pt[i].y, (size_t)pt[i].cols, pre + off, (size_t)ld, N, pt[i].cols);
        }
    }
}

/* Batch rows per pass of the backward on one thread: a pass's rows of dpre (bb T rows of
 * ld floats) stay in the core's cache (LINA_PROJ_BLOCK bytes) between the convolutions'
 * backward that writes them and the product dx += dpre Wcat that reads them (in one pass
 * over all N rows they went out to memory and back). On more threads one pass: a pass
 * per few rows would fork and join the threads for each. */
#define LINA_PROJ_BLOCK (256 * 1024)
static int proj_batch_rows(int B, int T, int ld)
{
    if (lina_get_threads() > 1) {
        return B;
    }
    size_t per = (size_t)T * (size_t)ld * sizeof(float);
    size_t bb = per > 0 ? LINA_PROJ_BLOCK / per : (size_t)B;
    return bb < 1 ? 1 : bb > (size_t)B ? B : (int)bb;
}

void lina_proj_backward(float *dx, float *dpre, const lina_proj_part *pt, int n, const float *pre, const float *x,
                        int B, int T, int D, int W)
{
    const int tot = proj_tot(pt, n), ld = proj_ld(tot);
    const size_t N = (size_t)B * T;
    int gw_cat = 1; /* the weight gradients back to back too: one product */
    for (int i = 0; i < n; i++) {
        if (!pt[i].gw || (i > 0 && pt[i].gw != pt[i - 1].gw + (size_t)pt[i - 1].cols * D)) {
            gw_cat = 0;
        }
    }
    /* per pass of bb batch rows: every part writes its columns of dpre (the padding after
     * them is never read; the conv weight gradients accumulate over the passes in the
     * order of one pass), then dx += dpre Wcat on those rows. Every output row and sum is
     * the same for any bb. */
    const int bb = proj_batch_rows(B, T, ld);
    for (int b0 = 0; b0 < B; b0 += bb) {
        const int nb = B - b0 < bb ? B - b0 : bb;
        const size_t r0 = (size_t)b0 * T, rows = (size_t)nb * T;
        float *db = dpre + r0 * ld;
        for (int i = 0, off = 0; i < n; off += pt[i].cols, i++) {
            const int cols = pt[i].cols;
            if (pt[i].conv) {
                lina_shortconv_backward_ld(db + off, (size_t)ld, 1, pt[i].gconv, NULL, NULL, pt[i].dy + r0 * cols,
                                           pre + r0 * ld + off, (size_t)ld, pt[i].conv, NULL, NULL, nb, T, cols, W,
                                           pt[i].act);
            } else {
                copy_cols(db + off, (size_t)ld, pt[i].dy + r0 * cols, (size_t)cols, rows, cols);
            }
        }
        lina_sgemm_layer(0, 0, (int)rows, D, tot, 1.0f, db, ld, pt[0].w, D, 1.0f, dx + r0 * D, D);
    }
    /* dWcat += dpre^T x (or per part) over all rows at once: its sums run in one order */
    for (int i = 0, off = 0; i < n; off += pt[i].cols, i++) {
        if (gw_cat) {
            lina_sgemm_layer(1, 0, tot, D, (int)N, 1.0f, dpre, ld, x, D, 1.0f, pt[0].gw, D);
            break;
        }
        if (pt[i].gw) {
            lina_sgemm_layer(1, 0, pt[i].cols, D, (int)N, 1.0f, dpre + off, ld, x, D, 1.0f, pt[i].gw, D);
        }
    }
}

void lina_proj_qkv_out(lina_proj_part *pt, float *yq, float *yk, float *yv, float *cq, float *ck, float *cv)
{
    float *y[3] = {yq, yk, yv}, *c[3] = {cq, ck, cv};
    for (int i = 0; i < 3; i++) {
        pt[i].y = y[i];
        pt[i].cache = c[i];
    }
}

void lina_proj_qkv_grad(lina_proj_part *pt, const float *dq, const float *dk, const float *dv, float *gq, float *gk,
                        float *gv, float *gcq, float *gck, float *gcv)
{
    const float *dy[3] = {dq, dk, dv};
    float *gw[3] = {gq, gk, gv}, *gc[3] = {gcq, gck, gcv};
    for (int i = 0; i < 3; i++) {
        pt[i].dy = dy[i];
        pt[i].gw = gw[i];
        pt[i].gconv = gc[i];
    }
}
