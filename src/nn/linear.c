/* linear.c -- embedding lookup and Linear (y = x W^T + b), forward and backward. */
#include "nn.h"

#include "../kern/gemm.h"

#include <string.h>

#define COLS 64 /* column block of the row-reduction loops */

/* ------------------------------------------------------------ embedding */

/* out [N,D] = W [vocab,D] rows ids [N] */
int lina_embedding_forward(float *out, const int32_t *ids, const float *W, int N, int D, int vocab)
{
    for (int n = 0; n < N; n++) {
        if (ids[n] < 0 || ids[n] >= vocab) {
            return lina_set_error(LINA_EINVAL, "token id %d at position %d is outside the vocabulary [0, %d)",
                                  (int)ids[n], n, vocab);
        }
    }
#pragma omp parallel for if ((size_t)N * (size_t)D >= 65536)
    for (int n = 0; n < N; n++) {
        memcpy(out + (size_t)n * D, W + (size_t)ids[n] * D, (size_t)D * sizeof(float));
    }
    return LINA_OK;
}

/* dW [vocab,D] += scatter of dout [N,D] by ids [N]; column blocks in parallel,
 * rows in order (deterministic) */
void lina_embedding_backward(float *dW, const float *dout, const int32_t *ids, int N, int D)
{
    if (!dW) {
        return;
    }
    int nb = (D + COLS - 1) / COLS;
#pragma omp parallel for if ((size_t)N * (size_t)D >= 65536)
    for (int cb = 0; cb < nb; cb++) {
        int c0 = cb * COLS, c1 = c0 + COLS < D ? c0 + COLS : D;
        for (int n = 0; n < N; n++) {
            float *dst = dW + (size_t)ids[n] * D;
            const float *src = dout + (size_t)n * D;
            for (int c = c0; c < c1; c++) {
                dst[c] += src[c];
            }
        }
    }
}

/* --------------------------------------------------------------- linear */

/* y [N,out] = x [N,in] W[out,in]^T + b [out] */
void lina_linear_forward(float *y, const float *x, const float *W, const float *b, int N, int in, int out)
{
    if (b) {
#pragma omp parallel for if ((size_t)N * (size_t)out >= 65536)
        for (int n = 0; n < N; n++) {
            memcpy(y + (size_t)n * out, b, (size_t)out * sizeof(float));
        }
    }
    if (N <= LINA_SGEMM_SMALL_M) {
        lina_sgemm_rows_nt(N, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y, out);
    } else {
        lina_sgemm_layer(0, 1, N, out, in, 1.0f, x, in, W, in, b ? 1.0f : 0.0f, y, out);
    }
}

/* dx [N,in] = dy [N,out] W + beta dx (beta 0: dx not read);  dW [out,in] += dy^T x;
 * db [out] += colsum(dy) */
static void linear_bwd(float *dx, float beta, float *dW, float *db, const float *dy, const float *x,
                       const float *W, int N, int in, int out)
{
    if (dx) {
        lina_sgemm_layer(0, 0, N, in, out, 1.0f, dy, out, W, in, beta, dx, in);
    }
    if (dW) {
        lina_sgemm_layer(1, 0, out, in, N, 1.0f, dy, out, x, in, 1.0f, dW, in);
    }
    if (db) {
        int nb = (out + COLS - 1) / COLS;
#pragma omp parallel for if ((size_t)N * (size_t)out >= 65536)
        for (int cb = 0; cb < nb; cb++) {
            int c0 = cb * COLS, c1 = c0 + COLS < out ? c0 + COLS : out;
            float acc[COLS] = {0};
            for (int n = 0; n < N; n++) {
                const float *r = dy + (size_t)n * out;
                for (int c = c0; c < c1; c++) {
                    acc[c - c0] += r[c];
                }
            }
            for (int c = c0; c < c1; c++) {
                db[c] += acc[c - c0];
            }
        }
    }
}

void lina_linear_backward(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                          int N, int in, int out)
{
    linear_bwd(dx, 1.0f, dW, db, dy, x, W, N, in, out);
}

void lina_linear_backward_set(float *dx, float *dW, float *db, const float *dy, const float *x, const float *W,
                              int N, int in, int out)
{
    linear_bwd(dx, 0.0f, dW, db, dy, x, W, N, in, out);
}
