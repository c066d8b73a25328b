/* layer.c -- glue the mixer layers share: the kernel dims of a layer call
 * and the repetition of q/k/v heads over grouped heads (and its adjoint). */
#include "nn.h"

#include <math.h>
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
    lina_linear_backward(dy, do_proj, NULL, dout, y, o_proj, N, H * V, D);
    if (gate) {
        lina_rmsnorm_gated_backward(dO, dgate, dnorm_w, dy, o, gate, norm_w, rstd, N * H, V);
    } else {
        lina_rmsnorm_backward(dO, dnorm_w, NULL, dy, o, norm_w, rstd, N * H, V);
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
