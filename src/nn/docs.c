/* docs.c -- the position-dependent blocks of a layer on packed documents
 * (lina_mixer_call.cu: B = 1, offsets over the T rows): the short convolution
 * and RoPE run on each document as its own sequence (the conv reads zeros
 * before a document's first token, RoPE counts positions from 0 in each), so
 * nothing crosses a boundary. Everything per token (projections, norms, gates)
 * runs on the whole packed batch as it is. */
#include "nn.h"

void lina_docs_conv_forward(float *y, const float *x, const float *conv_w, const int64_t *cu, int64_t ncu, int C,
                            int W, lina_act act)
{
    for (int64_t j = 0; j + 1 < ncu; j++) {
        const size_t a = (size_t)cu[j] * C;
        lina_conv_act_forward(y + a, x + a, conv_w, NULL, 1, (int)(cu[j + 1] - cu[j]), C, W, act);
    }
}

void lina_docs_conv_backward(float *dx, float *dconv_w, const float *dy, const float *x, const float *conv_w,
                             const int64_t *cu, int64_t ncu, int C, int W, lina_act act)
{
    for (int64_t j = 0; j + 1 < ncu; j++) {
        const size_t a = (size_t)cu[j] * C;
        lina_conv_act_backward(dx + a, dconv_w, dy + a, x + a, conv_w, 1, (int)(cu[j + 1] - cu[j]), C, W, act);
    }
}

int lina_docs_rope(float *y, const float *x, const int64_t *cu, int64_t ncu, int H, int d, double base, int backward)
{
    for (int64_t j = 0; j + 1 < ncu; j++) {
        const size_t a = (size_t)cu[j] * H * d;
        const int L = (int)(cu[j + 1] - cu[j]);
        int rc = backward ? lina_rope_backward(y + a, x + a, 1, L, H, d, 0, base)
                          : lina_rope_forward(y + a, x + a, 1, L, H, d, 0, base);
        if (rc) {
            return rc;
        }
    }
    return LINA_OK;
}
