/* mamba_layer.c -- FLA's Mamba (Mamba-1) mixer (docs/mixers.md section 12):
 *
 *   [x | z] = in_proj(u)                         x, z: E each
 *   x = SiLU(depthwise causal conv(x) + conv bias)
 *   [dl | B | C] = x_proj(x)                     R (dt_rank), N, N
 *   delta = dt_proj.weight dl                    (dt_proj.bias enters the scan as delta_bias)
 *   y = selective_scan(x, delta, A = -exp(A_log), B, C, D, z, dt_proj.bias, softplus)
 *   out = out_proj(y)
 *
 * The scan is the `mamba` op's recurrent form (the fast one) for training,
 * prefill and decode alike. Decode state per sequence: the conv tail [E, W]
 * and the scan state [E, N]. Forward and backward; the kind table at the end. */
#include "nn.h"

#include <math.h>
#include <string.h>

typedef struct mb_dims {
    int D, E, N, R, W;
    int use_bias, use_conv_bias;
} mb_dims;

typedef struct mb_acts {
    float *xpre, *z, *xc, *dl, *Bm, *Cm, *delta, *y; /* per row: E, E, E, R, N, N, E, E */
    float *A;                                         /* [E, N] = -exp(A_log) */
} mb_acts;

static size_t mb_row_floats(const mb_dims *d)
{
    return 5 * (size_t)d->E + (size_t)d->R + 2 * (size_t)d->N;
}

static size_t mb_acts_floats(const mb_dims *d, int R)
{
    return (size_t)R * mb_row_floats(d) + (size_t)d->E * d->N;
}

static void mb_carve(mb_acts *a, float *p, const mb_dims *d, int R)
{
    const size_t r = (size_t)R, E = (size_t)d->E;
    a->xpre = p;  p += r * E;
    a->z = p;     p += r * E;
    a->xc = p;    p += r * E;
    a->dl = p;    p += r * (size_t)d->R;
    a->Bm = p;    p += r * (size_t)d->N;
    a->Cm = p;    p += r * (size_t)d->N;
    a->delta = p; p += r * E;
    a->y = p;     p += r * E;
    a->A = p;
}

/* dy, dxc, ddelta, dz, dxpre [E]; ddl [R]; dB, dC [N] per row; dA [E,N]; dD, dbias [E] */
static size_t mb_scratch_floats(const mb_dims *d, int R)
{
    return (size_t)R * mb_row_floats(d) + (size_t)d->E * d->N + 2 * (size_t)d->E;
}

static size_t mb_state_floats(const mb_dims *d, int B)
{
    return (size_t)B * d->E * ((size_t)d->W + d->N);
}

/* ============================================================ plug-in kind
 * model_type "mamba": FLA's names under backbone.layers.{i}.mixer. */

enum { MB_IN, MB_IN_B, MB_CONV, MB_CONV_B, MB_XPROJ, MB_DT_W, MB_DT_B, MB_A_LOG, MB_D, MB_OUT, MB_OUT_B };

_Static_assert(sizeof(mb_dims) <= LINA_MIXER_DIMS_BYTES, "mamba dims do not fit");

static int mb_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    mb_dims *d = dims;
    memset(d, 0, sizeof *d);
    d->D = c->hidden_size;
    d->E = c->intermediate_size;
    d->N = c->state_size;
    d->R = c->dt_rank;
    d->W = c->conv_kernel;
    d->use_bias = c->use_bias;
    d->use_conv_bias = c->use_conv_bias;
    if (d->E < 1 || d->N < 1 || d->R < 1 || d->W < 1) {
        return lina_set_error(LINA_EINVAL, "mamba: intermediate_size, state_size, dt_rank and conv_kernel must be "
                                           ">= 1 (got %d, %d, %d, %d)", d->E, d->N, d->R, d->W);
    }
    if (strcmp(c->hidden_act, "silu") != 0 && strcmp(c->hidden_act, "swish") != 0) {
        return lina_set_error(LINA_EINVAL, "mamba: hidden_act \"%s\" is not supported (only silu)", c->hidden_act);
    }
    const int64_t D = d->D, E = d->E, N = d->N, R = d->R;
    int rc;
    if ((rc = lina_mixer_add(b, MB_IN, "in_proj.weight", 2, 2 * E, D, 0, 1, LINA_INIT_NORMAL)) ||
        (d->use_bias && (rc = lina_mixer_add(b, MB_IN_B, "in_proj.bias", 1, 2 * E, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, MB_CONV, "conv1d.weight", 3, E, 1, d->W, 1, LINA_INIT_NORMAL)) ||
        (d->use_conv_bias && (rc = lina_mixer_add(b, MB_CONV_B, "conv1d.bias", 1, E, 0, 0, 0, LINA_INIT_ZEROS))) ||
        (rc = lina_mixer_add(b, MB_XPROJ, "x_proj.weight", 2, R + 2 * N, E, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    /* dt_proj.weight ~ U(+-s) or the constant s (dt_init_scheme), s = dt_rank^-1/2 dt_scale */
    const double s = c->dt_scale / sqrt((double)R);
    const double wr[3] = {s, 0.0, 0.0};
    const lina_init wi = strcmp(c->dt_init_scheme, "constant") == 0 ? LINA_INIT_CONSTANT : LINA_INIT_UNIFORM;
    const double dt_range[3] = {c->dt_min, c->dt_max, c->dt_init_floor};
    if ((rc = lina_mixer_add_init(b, MB_DT_W, "dt_proj.weight", 2, E, R, 0, 1, wi, wr)) ||
        (rc = lina_mixer_add_init(b, MB_DT_B, "dt_proj.bias", 1, E, 0, 0, 0, LINA_INIT_DT_BIAS, dt_range)) ||
        (rc = lina_mixer_add(b, MB_A_LOG, "A_log", 2, E, N, 0, 0, LINA_INIT_A_LOG_ARANGE)) ||
        (rc = lina_mixer_add(b, MB_D, "D", 1, E, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, MB_OUT, "out_proj.weight", 2, D, E, 0, 1, LINA_INIT_NORMAL)) ||
        (d->use_bias && (rc = lina_mixer_add(b, MB_OUT_B, "out_proj.bias", 1, D, 0, 0, 0, LINA_INIT_ZEROS)))) {
        return rc;
    }
    return LINA_OK;
}

LINA_KIND_SIZE(mb_acts_k, mb_acts_floats)
LINA_KIND_SIZE(mb_scratch_k, mb_scratch_floats)
LINA_KIND_STATE(mb_state_k, mb_state_floats)

static lina_mix_dims mb_scan_dims(const mb_dims *d, int B, int T)
{
    lina_mix_dims md = {B, T, d->E, d->N, 1, 0, 0.0f};
    return md;
}

static lina_mamba_in mb_scan_in(const mb_acts *a, float *const *P, const float *h0)
{
    lina_mamba_in in = {a->xc, a->delta, a->A, a->Bm, a->Cm, P[MB_D], a->z, P[MB_DT_B], h0, 1};
    return in;
}

static int mb_forward(const lina_mixer_call *c)
{
    const mb_dims *d = c->dims;
    float *const *P = c->P;
    const int B = c->B, T = c->T, R_ = B * T, D = d->D, E = d->E, N = d->N, R = d->R;
    if (T == 0) {
        return LINA_OK;
    }
    mb_acts a;
    mb_carve(&a, c->acts, d, R_);
    const float *bin = P[MB_IN_B];
    lina_linear_forward(a.xpre, c->x, P[MB_IN], bin, R_, D, E);
    lina_linear_forward(a.z, c->x, P[MB_IN] + (size_t)E * D, bin ? bin + E : NULL, R_, D, E);
    float *cache = c->state, *S = c->state ? c->state + (size_t)B * E * d->W : NULL;
    lina_shortconv_forward(a.xc, a.xpre, P[MB_CONV], P[MB_CONV_B], cache, cache, B, T, E, d->W, LINA_ACT_SILU);
    const float *Wx = P[MB_XPROJ];
    lina_linear_forward(a.dl, a.xc, Wx, NULL, R_, E, R);
    lina_linear_forward(a.Bm, a.xc, Wx + (size_t)R * E, NULL, R_, E, N);
    lina_linear_forward(a.Cm, a.xc, Wx + (size_t)(R + N) * E, NULL, R_, E, N);
    lina_linear_forward(a.delta, a.dl, P[MB_DT_W], NULL, R_, R, E);
    for (size_t i = 0; i < (size_t)E * N; i++) {
        a.A[i] = -expf(P[MB_A_LOG][i]);
    }
    lina_mix_dims md = mb_scan_dims(d, B, T);
    lina_mamba_in in = mb_scan_in(&a, P, S);
    lina_mamba_out o = {a.y, S};
    int rc = lina_mamba_fwd(&md, &in, &o, LINA_FORM_RECURRENT, c->ws);
    if (rc) {
        return rc;
    }
    lina_linear_forward(c->out, a.y, P[MB_OUT], P[MB_OUT_B], R_, E, D);
    return LINA_OK;
}

static int mb_backward(const lina_mixer_call *c)
{
    const mb_dims *d = c->dims;
    float *const *P = c->P, *const *G = c->G;
    const int B = c->B, T = c->T, R_ = B * T, D = d->D, E = d->E, N = d->N, R = d->R;
    if (T == 0) {
        return LINA_OK;
    }
    mb_acts a;
    mb_carve(&a, c->acts, d, R_);
    const size_t r = (size_t)R_;
    float *dy = c->scratch, *dxc = dy + r * E, *ddelta = dxc + r * E, *dz = ddelta + r * E;
    float *dxpre = dz + r * E, *ddl = dxpre + r * E, *dB = ddl + r * R, *dC = dB + r * N;
    float *dA = dC + r * N, *dD = dA + (size_t)E * N, *dbias = dD + E;
    memset(c->scratch, 0, mb_scratch_floats(d, R_) * sizeof(float));
    lina_linear_backward(dy, G[MB_OUT], G[MB_OUT_B], c->dout, a.y, P[MB_OUT], R_, E, D);
    lina_mix_dims md = mb_scan_dims(d, B, T);
    lina_mamba_in in = mb_scan_in(&a, P, NULL);
    lina_mamba_grad_in gi = {dy, NULL};
    lina_mamba_grad_out go = {dxc, ddelta, dA, dB, dC, dD, dz, dbias, NULL};
    int rc = lina_mamba_bwd(&md, &in, &gi, &go, LINA_FORM_RECURRENT, c->ws);
    if (rc) {
        return rc;
    }
    for (int ch = 0; ch < E; ch++) {
        G[MB_D][ch] += dD[ch];
        G[MB_DT_B][ch] += dbias[ch];
    }
    for (size_t i = 0; i < (size_t)E * N; i++) {
        G[MB_A_LOG][i] += dA[i] * a.A[i]; /* dA_log = dA * A */
    }
    lina_linear_backward(ddl, G[MB_DT_W], NULL, ddelta, a.dl, P[MB_DT_W], R_, R, E);
    const float *Wx = P[MB_XPROJ];
    float *gWx = G[MB_XPROJ];
    lina_linear_backward(dxc, gWx, NULL, ddl, a.xc, Wx, R_, E, R);
    lina_linear_backward(dxc, gWx + (size_t)R * E, NULL, dB, a.xc, Wx + (size_t)R * E, R_, E, N);
    lina_linear_backward(dxc, gWx + (size_t)(R + N) * E, NULL, dC, a.xc, Wx + (size_t)(R + N) * E, R_, E, N);
    lina_shortconv_backward(dxpre, G[MB_CONV], G[MB_CONV_B], NULL, dxc, a.xpre, P[MB_CONV], P[MB_CONV_B], NULL, B,
                            T, E, d->W, LINA_ACT_SILU);
    float *gb = G[MB_IN_B];
    lina_linear_backward(c->dx, G[MB_IN], gb, dxpre, c->x, P[MB_IN], R_, D, E);
    lina_linear_backward(c->dx, G[MB_IN] + (size_t)E * D, gb ? gb + E : NULL, dz, c->x, P[MB_IN] + (size_t)E * D,
                         R_, D, E);
    return LINA_OK;
}

const lina_mixer_vt lina_mamba_kind = {
    .name = "mamba",
    .build = mb_build,
    .acts_floats = mb_acts_k,
    .scratch_floats = mb_scratch_k,
    .state_floats = mb_state_k,
    .forward = mb_forward,
    .backward = mb_backward,
    .flags = LINA_KIND_NO_FFN,
    .names = &lina_backbone_names,
};
