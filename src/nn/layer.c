/* layer.c -- glue the mixer layers share: the kernel dims of a layer call
 * and the repetition of q/k/v heads over grouped heads (and its adjoint). */
#include "nn.h"

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
