/* lora.c -- LoRA (low-rank adaptation) around a frozen Linear: forward,
 * backward and the merge of the adapter into the base weight. */
#include "nn.h"

void lina_lora_forward(float *y, float *t, const float *x, const float *W, const float *A, const float *Bm, float s,
                       int N, int in, int out, int r)
{
    lina_linear_forward(y, x, W, NULL, N, in, out);
    if (r > 0 && A && Bm) {
        lina_sgemm(0, 1, N, r, in, 1.0f, x, in, A, in, 0.0f, t, r);
        lina_sgemm(0, 1, N, out, r, s, t, r, Bm, r, 1.0f, y, out);
    }
}

void lina_lora_backward(float *dx, float *dW, float *dA, float *dB, float *u, const float *dy, const float *x,
                        const float *t, const float *W, const float *A, const float *Bm, float s, int N, int in,
                        int out, int r)
{
    lina_linear_backward(dx, dW, NULL, dy, x, W, N, in, out);
    if (r <= 0 || !A || !Bm) {
        return;
    }
    lina_sgemm(0, 0, N, r, out, 1.0f, dy, out, Bm, r, 0.0f, u, r); /* u = dy B */
    if (dx) {
        lina_sgemm(0, 0, N, in, r, s, u, r, A, in, 1.0f, dx, in);
    }
    if (dA) {
        lina_sgemm(1, 0, r, in, N, s, u, r, x, in, 1.0f, dA, in);
    }
    if (dB) {
        lina_sgemm(1, 0, out, r, N, s, dy, out, t, r, 1.0f, dB, r);
    }
}

void lina_lora_merge(float *W, const float *A, const float *Bm, float s, int in, int out, int r)
{
    if (r > 0) {
        lina_sgemm(0, 0, out, in, r, s, Bm, r, A, in, 1.0f, W, in);
    }
}
