/* mlp.c -- SiLU, relu / elu + 1, SwiGLU and FLA's GatedMLP (y = W_down(silu(W_gate x) * W_up x)),
 * forward and backward. */
#include "nn.h"

#include "../kern/kern.h"

#include <math.h>

/* --------------------------------------------------------------- SiLU */

/* the elementwise loops below run over blocks of VB values, the sigmoids of a
 * block taken at once on the stack */
#define VB 256
#define VBLOCKS(n) (((n) + VB - 1) / VB)

/* y, x [n] */
void lina_silu_forward(float *y, const float *x, size_t n)
{
#pragma omp parallel for if (n >= 65536)
    for (size_t b = 0; b < VBLOCKS(n); b++) {
        size_t i0 = b * VB, m = n - i0 < VB ? n - i0 : VB;
        float s[VB];
        lina_vsigmoid(s, x + i0, m);
        for (size_t i = 0; i < m; i++) {
            y[i0 + i] = x[i0 + i] * s[i];
        }
    }
}

/* dx [n] += dy * s (1 + x (1 - s)), s = sigmoid(x) */
void lina_silu_backward(float *dx, const float *dy, const float *x, size_t n)
{
#pragma omp parallel for if (n >= 65536)
    for (size_t b = 0; b < VBLOCKS(n); b++) {
        size_t i0 = b * VB, m = n - i0 < VB ? n - i0 : VB;
        float s[VB];
        lina_vsigmoid(s, x + i0, m);
        for (size_t i = 0; i < m; i++) {
            dx[i0 + i] += dy[i0 + i] * s[i] * (1.0f + x[i0 + i] * (1.0f - s[i]));
        }
    }
}

/* ------------------------------------------------ relu / elu + 1 maps */

void lina_phi_forward(float *y, const float *x, size_t n, int elu1)
{
    if (elu1) {
        for (size_t i = 0; i < n; i++) {
            y[i] = x[i] > 0.0f ? x[i] + 1.0f : expf(x[i]);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        }
    }
}

void lina_phi_backward(float *dx, const float *dy, const float *y, size_t n, int elu1)
{
    if (elu1) {
        for (size_t i = 0; i < n; i++) {
            dx[i] += y[i] > 1.0f ? dy[i] : dy[i] * y[i];
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
        }
    }
}

/* ------------------------------------------------------------- SwiGLU */

/* h, gate, up [n] */
void lina_swiglu_forward(float *h, const float *gate, const float *up, size_t n)
{
#pragma omp parallel for if (n >= 65536)
    for (size_t b = 0; b < VBLOCKS(n); b++) {
        size_t i0 = b * VB, m = n - i0 < VB ? n - i0 : VB;
        float s[VB];
        lina_vsigmoid(s, gate + i0, m);
        for (size_t i = 0; i < m; i++) {
            h[i0 + i] = gate[i0 + i] * s[i] * up[i0 + i];
        }
    }
}

/* dgate, dup [n] from dh: added into (acc) or written (dgate may then be dh) */
static void swiglu_bwd(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n, int acc)
{
#pragma omp parallel for if (n >= 65536)
    for (size_t b = 0; b < VBLOCKS(n); b++) {
        size_t i0 = b * VB, m = n - i0 < VB ? n - i0 : VB;
        float s[VB];
        lina_vsigmoid(s, gate + i0, m);
        for (size_t i = 0; i < m; i++) {
            size_t k = i0 + i;
            float g = gate[k], d = dh[k];
            float du = d * g * s[i], dg = d * up[k] * s[i] * (1.0f + g * (1.0f - s[i]));
            if (dup) {
                dup[k] = acc ? dup[k] + du : du;
            }
            if (dgate) {
                dgate[k] = acc ? dgate[k] + dg : dg;
            }
        }
    }
}

/* dgate, dup [n] accumulate (either may be NULL) */
void lina_swiglu_backward(float *dgate, float *dup, const float *dh, const float *gate, const float *up, size_t n)
{
    swiglu_bwd(dgate, dup, dh, gate, up, n, 1);
}

/* ---------------------------------------------------------- GatedMLP */

/* gate and up as one product (nn.h lina_proj_*): Wu right after Wg (one
 * [2I, D] matrix, as a model's parameter buffer holds them) and up right
 * after gate ([N, I] each); the two then hold one [N, 2I] matrix, a row
 * being [gate row | up row] */
static int mlp_fused(const float *gate, const float *up, const float *Wg, const float *Wu, int N, int D, int I)
{
    const lina_proj_part pt[2] = {{.w = Wg, .cols = I}, {.w = Wu, .cols = I}};
    return up == gate + (size_t)N * I && lina_proj_fusable(pt, 2, D);
}

/* y [N,D]; gate, up, h [N,I]; x [N,D]; Wg, Wu [I,D]; Wd [D,I] */
void lina_gated_mlp_forward(float *y, float *gate, float *up, float *h, const float *x, const float *Wg,
                            const float *Wu, const float *Wd, int N, int D, int I)
{
    if (mlp_fused(gate, up, Wg, Wu, N, D, I)) {
        /* gu [N, 2I] = x [Wg; Wu]^T, then h row by row */
        lina_proj_fused_note();
        lina_linear_forward(gate, x, Wg, NULL, N, D, 2 * I);
#pragma omp parallel for if ((size_t)N * I >= 65536)
        for (int r = 0; r < N; r++) {
            const float *g = gate + (size_t)r * 2 * I;
            lina_swiglu_forward(h + (size_t)r * I, g, g + I, (size_t)I);
        }
    } else {
        lina_linear_forward(gate, x, Wg, NULL, N, D, I);
        lina_linear_forward(up, x, Wu, NULL, N, D, I);
        lina_swiglu_forward(h, gate, up, (size_t)N * I);
    }
    lina_linear_forward(y, h, Wd, NULL, N, I, D);
}

int lina_gated_mlp_backward(float *dx, float *dWg, float *dWu, float *dWd, const float *dy, const float *x,
                            const float *gate, const float *up, const float *h, const float *Wg, const float *Wu,
                            const float *Wd, int N, int D, int I, lina_ws *ws)
{
    /* dWd [D,I] += dy^T h */
    if (dWd) {
        lina_sgemm(1, 0, D, I, N, 1.0f, dy, D, h, I, 1.0f, dWd, I);
    }
    if (!dx && !dWg && !dWu) {
        return LINA_OK;
    }
    const int fused = mlp_fused(gate, up, Wg, Wu, N, D, I);
    lina_ws_scope sc;
    int rc = lina_ws_scope_open(&sc, ws, 1);
    float *dg = rc ? NULL : lina_ws_get(sc.ws, 0, (fused ? 3 : 2) * (size_t)N * (size_t)I * sizeof(float));
    if (!dg) {
        lina_ws_scope_close(&sc);
        return rc ? rc : LINA_ENOMEM;
    }
    float *du = dg + (size_t)N * I; /* [N,I] each */
    if (fused) {
        /* dh [N,I] = dy Wd; dgu [N, 2I] rows [dgate | dup]; one product each for dx and [dWg; dWu] */
        float *dh = dg, *dgu = dg + (size_t)N * I;
        lina_sgemm(0, 0, N, I, D, 1.0f, dy, D, Wd, I, 0.0f, dh, I);
#pragma omp parallel for if ((size_t)N * I >= 65536)
        for (int r = 0; r < N; r++) {
            const float *g = gate + (size_t)r * 2 * I;
            float *d = dgu + (size_t)r * 2 * I;
            swiglu_bwd(d, d + I, dh + (size_t)r * I, g, g + I, (size_t)I, 0);
        }
        const int gcat = dWg && dWu == dWg + (size_t)I * D;
        lina_linear_backward(dx, gcat ? dWg : NULL, NULL, dgu, x, Wg, N, D, 2 * I);
        if (!gcat && dWg) {
            lina_sgemm(1, 0, I, D, N, 1.0f, dgu, 2 * I, x, D, 1.0f, dWg, D);
        }
        if (!gcat && dWu) {
            lina_sgemm(1, 0, I, D, N, 1.0f, dgu + I, 2 * I, x, D, 1.0f, dWu, D);
        }
        lina_ws_scope_close(&sc);
        return LINA_OK;
    }
    /* dh [N,I] = dy Wd, into dg; then dgate in place and dup */
    lina_sgemm(0, 0, N, I, D, 1.0f, dy, D, Wd, I, 0.0f, dg, I);
    swiglu_bwd(dg, du, dg, gate, up, (size_t)N * I, 0);
    lina_linear_backward(dx, dWg, NULL, dg, x, Wg, N, D, I);
    lina_linear_backward(dx, dWu, NULL, du, x, Wu, N, D, I);
    lina_ws_scope_close(&sc);
    return LINA_OK;
}

/* ============================================================ plug-in kind
 * The dense feed-forward block (kind.h): FLA's GatedMLP under
 * model.layers.{i}.mlp.: gate_proj.weight [I, D], up_proj.weight [I, D],
 * down_proj.weight [D, I], I = lina_config_mlp_size. */
enum { MLP_GATE, MLP_UP, MLP_DOWN };

typedef struct mlp_dims {
    int D, I;
} mlp_dims;

static int mlp_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    mlp_dims *d = dims;
    d->D = c->hidden_size;
    d->I = lina_config_mlp_size(c);
    int rc;
    if ((rc = lina_mixer_add(b, MLP_GATE, "gate_proj.weight", 2, d->I, d->D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, MLP_UP, "up_proj.weight", 2, d->I, d->D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, MLP_DOWN, "down_proj.weight", 2, d->D, d->I, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    return LINA_OK;
}

/* gate, up, h [N, I] */
static size_t mlp_acts(const void *dims, int N)
{
    return 3 * (size_t)N * ((const mlp_dims *)dims)->I;
}

static int mlp_kind_forward(const lina_mixer_call *c)
{
    const mlp_dims *d = c->dims;
    size_t nI = (size_t)c->B * c->T * d->I;
    lina_gated_mlp_forward(c->out, c->acts, c->acts + nI, c->acts + 2 * nI, c->x, c->P[MLP_GATE], c->P[MLP_UP],
                           c->P[MLP_DOWN], c->B * c->T, d->D, d->I);
    return LINA_OK;
}

static int mlp_kind_backward(const lina_mixer_call *c)
{
    const mlp_dims *d = c->dims;
    size_t nI = (size_t)c->B * c->T * d->I;
    return lina_gated_mlp_backward(c->dx, c->G[MLP_GATE], c->G[MLP_UP], c->G[MLP_DOWN], c->dout, c->x, c->acts,
                                   c->acts + nI, c->acts + 2 * nI, c->P[MLP_GATE], c->P[MLP_UP], c->P[MLP_DOWN],
                                   c->B * c->T, d->D, d->I, c->ws);
}

const lina_mixer_vt lina_mlp_kind = {
    .name = "mlp",
    .build = mlp_build,
    .acts_floats = mlp_acts,
    .forward = mlp_kind_forward,
    .backward = mlp_kind_backward,
};
