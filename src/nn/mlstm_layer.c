/* mlstm_layer.c -- the mLSTM layer of docs/mixers.md section 5 (projections,
 * soft-capped exponential input gate and sigmoid forget gate per head, the
 * stabilised cell through lina_mlstm_fwd / lina_mlstm_bwd, per-head
 * LayerNorm, sigmoid output gate, out_proj), forward and backward, and its
 * plug-in kind for model_type "mlstm" (kind.h). Shapes and tensor names are
 * in mlstm_layer.h; N = B*T, HK = H*K, HV = H*V. */
#include "mlstm_layer.h"
#include "nn.h"

#include <math.h>
#include <string.h>

int lina_mlstm_layer_check_dims(const lina_mlstm_layer_dims *d)
{
    if (!d || d->D <= 0 || d->H <= 0 || d->K <= 0 || d->V <= 0) {
        return lina_set_error(LINA_EINVAL, "mlstm layer: bad dims");
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "mlstm layer: norm_eps must be > 0");
    }
    if (d->use_short_conv && d->conv_size < 1) {
        return lina_set_error(LINA_EINVAL, "mlstm layer: conv_size must be >= 1");
    }
    return LINA_OK;
}

size_t lina_mlstm_layer_acts_floats(const lina_mlstm_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    size_t conv = d->use_short_conv ? 2 * HK + HV : 0;
    size_t gate = d->output_gate ? 2 * HV : 0; /* og, hn */
    return n * (2 * HK + HV + conv + 6 * H + gate + 2 * HV);
}

void lina_mlstm_layer_acts_carve(lina_mlstm_layer_acts *a, float *buf, const lina_mlstm_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    float *p = buf;
    a->q = p;    p += n * HK;
    a->k = p;    p += n * HK;
    a->v = p;    p += n * HV;
    a->ip = p;   p += n * H;
    a->fp = p;   p += n * H;
    a->i = p;    p += n * H;
    a->f = p;    p += n * H;
    a->mu = p;   p += n * H;
    a->rstd = p; p += n * H;
    a->o = p;    p += n * HV;
    a->y = p;    p += n * HV;
    if (d->output_gate) {
        a->og = p; p += n * HV;
        a->hn = p; p += n * HV;
    } else {
        a->og = NULL;
        a->hn = a->y;
    }
    if (d->use_short_conv) {
        a->qc = p; p += n * HK;
        a->kc = p; p += n * HK;
        a->vc = p;
    } else {
        a->qc = a->q;
        a->kc = a->k;
        a->vc = a->v;
    }
}

size_t lina_mlstm_layer_scratch_floats(const lina_mlstm_layer_dims *d, int N)
{
    size_t n = (size_t)N, HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V, H = (size_t)d->H;
    size_t conv = d->use_short_conv ? 2 * HK + HV : 0;
    /* dy, dhn, dO, dog, dv [HV]; dq, dk [HK]; di, df [H] */
    return n * (5 * HV + 2 * HK + 2 * H + conv);
}

size_t lina_mlstm_layer_state_floats(const lina_mlstm_layer_dims *d, int B)
{
    size_t b = (size_t)B, H = (size_t)d->H, K = (size_t)d->K, V = (size_t)d->V;
    size_t conv = d->use_short_conv ? (2 * H * K + H * V) * (size_t)d->conv_size : 0;
    return b * (H * K * V + H * K + H + conv);
}

/* ------------------------------------------------------- small blocks */

/* g = cap * tanh(x / cap), n elements */
static void gate_cap_forward(float *g, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        g[j] = LINA_MLSTM_GATE_CAP * tanhf(x[j] / LINA_MLSTM_GATE_CAP);
    }
}

/* in place: dg -> dx = dg * (1 - tanh^2(x / cap)) */
static void gate_cap_backward(float *dg, const float *x, size_t n)
{
    for (size_t j = 0; j < n; j++) {
        float t = tanhf(x[j] / LINA_MLSTM_GATE_CAP);
        dg[j] *= 1.0f - t * t;
    }
}

/* per-head LayerNorm without bias: rows R = N*H of width V, weight w [H*V]
 * (head h of row r = r % H uses w[h*V ..]). y = (x - mu) rstd w. Statistics
 * in double. */
static void head_layernorm_forward(float *y, float *mu, float *rstd, const float *x, const float *w, int R, int H,
                                   int V, float eps)
{
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * V;
        const float *wr = w + (size_t)(r % H) * V;
        double s = 0.0, ss = 0.0;
        for (int j = 0; j < V; j++) {
            s += xr[j];
        }
        double m = s / V;
        for (int j = 0; j < V; j++) {
            double c = xr[j] - m;
            ss += c * c;
        }
        double rs = 1.0 / sqrt(ss / V + (double)eps);
        mu[r] = (float)m;
        rstd[r] = (float)rs;
        float *yr = y + (size_t)r * V;
        for (int j = 0; j < V; j++) {
            yr[j] = (float)((xr[j] - m) * rs) * wr[j];
        }
    }
}

/* dx += rstd (g - mean(g) - xhat mean(g xhat)), g = dy w, xhat = (x - mu) rstd;
 * dw += sum over rows of the head of dy xhat (rows in order) */
static void head_layernorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                                    const float *mu, const float *rstd, int R, int H, int V)
{
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * V, *dyr = dy + (size_t)r * V;
        const float *wr = w + (size_t)(r % H) * V;
        double sg = 0.0, sgx = 0.0;
        for (int j = 0; j < V; j++) {
            double xh = ((double)xr[j] - mu[r]) * rstd[r];
            double g = (double)dyr[j] * wr[j];
            sg += g;
            sgx += g * xh;
        }
        sg /= V;
        sgx /= V;
        float *dwr = dw ? dw + (size_t)(r % H) * V : NULL;
        float *dxr = dx + (size_t)r * V;
        for (int j = 0; j < V; j++) {
            double xh = ((double)xr[j] - mu[r]) * rstd[r];
            double g = (double)dyr[j] * wr[j];
            dxr[j] += (float)(rstd[r] * (g - sg - xh * sgx));
            if (dwr) {
                dwr[j] += (float)(dyr[j] * xh);
            }
        }
    }
}

static float sigmoidf_(float x)
{
    return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
}

/* ------------------------------------------------------------ forward */

int lina_mlstm_layer_forward(float *out, lina_mlstm_layer_acts *a, const float *x, const lina_mlstm_layer_dims *d,
                             const lina_mlstm_layer_params *p, int B, int T, float *state, const lina_sp *sp,
                             lina_form form, lina_ws *ws)
{
    int rc = lina_mlstm_layer_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!out || !a || !x || !p || B < 1 || T < 1) {
        return lina_set_error(LINA_EINVAL, "mlstm layer: bad arguments");
    }
    int N = B * T, D = d->D, H = d->H, HK = d->H * d->K, HV = d->H * d->V;
    /* projections: qc, kc [N,HK]; vc [N,HV]; gates [N,H] */
    lina_linear_forward(a->qc, x, p->q, NULL, N, D, HK);
    lina_linear_forward(a->kc, x, p->k, NULL, N, D, HK);
    lina_linear_forward(a->vc, x, p->v, NULL, N, D, HV);
    /* state layout: C [B,H,K,V] | n [B,H,K] | m [B,H] | conv tails */
    float *C = state, *nn_ = NULL, *mm = NULL, *cq = NULL, *ck = NULL, *cv = NULL;
    if (state) {
        nn_ = C + (size_t)B * H * d->K * d->V;
        mm = nn_ + (size_t)B * HK;
        if (d->use_short_conv) {
            cq = mm + (size_t)B * H;
            ck = cq + (size_t)B * HK * d->conv_size;
            cv = ck + (size_t)B * HK * d->conv_size;
        }
    }
    if (d->use_short_conv && sp && sp->size > 1) {
        int W = d->conv_size;
        if ((rc = lina_sp_conv_forward(sp, a->q, a->qc, p->q_conv, NULL, B, T, HK, W, LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_forward(sp, a->k, a->kc, p->k_conv, NULL, B, T, HK, W, LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_forward(sp, a->v, a->vc, p->v_conv, NULL, B, T, HV, W, LINA_ACT_SILU))) {
            return rc;
        }
    } else if (d->use_short_conv) {
        int W = d->conv_size;
        lina_shortconv_forward(a->q, a->qc, p->q_conv, NULL, cq, cq, B, T, HK, W, LINA_ACT_SILU);
        lina_shortconv_forward(a->k, a->kc, p->k_conv, NULL, ck, ck, B, T, HK, W, LINA_ACT_SILU);
        lina_shortconv_forward(a->v, a->vc, p->v_conv, NULL, cv, cv, B, T, HV, W, LINA_ACT_SILU);
    }
    lina_linear_forward(a->ip, x, p->wi, p->bi, N, D, H);
    lina_linear_forward(a->fp, x, p->wf, p->bf, N, D, H);
    gate_cap_forward(a->i, a->ip, (size_t)N * H);
    gate_cap_forward(a->f, a->fp, (size_t)N * H);
    /* cell: o [B,T,H,V]; with a state the final C, n, m overwrite the initial
     * ones (lina_mlstm_fwd copies the initial state before it writes the final) */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_mlstm_in in = {a->q, a->k, a->v, a->i, a->f, C, nn_, mm};
    lina_mlstm_out o = {a->o, C, nn_, mm};
    if ((rc = lina_sp_mlstm_fwd(sp, d, &md, &in, &o, form, ws))) {
        return rc;
    }
    /* per-head LayerNorm, output gate */
    head_layernorm_forward(a->hn, a->mu, a->rstd, a->o, p->norm_w, N * H, H, d->V, d->norm_eps);
    if (d->output_gate) {
        lina_linear_forward(a->og, x, p->wog, NULL, N, D, HV);
        for (size_t j = 0; j < (size_t)N * HV; j++) {
            a->y[j] = sigmoidf_(a->og[j]) * a->hn[j];
        }
    }
    lina_linear_forward(out, a->y, p->out_proj, NULL, N, HV, D);
    return LINA_OK;
}

/* ----------------------------------------------------------- backward */

int lina_mlstm_layer_backward(float *dx, lina_mlstm_layer_params *gp, const float *dout, const float *x,
                              const lina_mlstm_layer_acts *a, const lina_mlstm_layer_dims *d,
                              const lina_mlstm_layer_params *p, int B, int T, float *scratch, const lina_sp *sp,
                              lina_form form, lina_ws *ws)
{
    int rc = lina_mlstm_layer_check_dims(d);
    if (rc) {
        return rc;
    }
    if (!dx || !gp || !dout || !x || !a || !p || !scratch || B < 1 || T < 1) {
        return lina_set_error(LINA_EINVAL, "mlstm layer: bad arguments");
    }
    int N = B * T, D = d->D, H = d->H, HK = d->H * d->K, HV = d->H * d->V;
    size_t nk = (size_t)N * HK, nv = (size_t)N * HV, nh = (size_t)N * H;
    float *dy = scratch;    /* [N,HV] */
    float *dhn = dy + nv;   /* [N,HV] */
    float *dO = dhn + nv;   /* [N,HV] */
    float *dog = dO + nv;   /* [N,HV] */
    float *dv = dog + nv;   /* [N,HV] */
    float *dq = dv + nv;    /* [N,HK] */
    float *dk = dq + nk;    /* [N,HK] */
    float *di = dk + nk;    /* [N,H] */
    float *df = di + nh;    /* [N,H] */
    memset(scratch, 0, lina_mlstm_layer_scratch_floats(d, N) * sizeof(float));

    /* out_proj */
    lina_linear_backward(dy, gp->out_proj, NULL, dout, a->y, p->out_proj, N, HV, D);
    /* output gate: y = sigmoid(og) hn */
    const float *dhn_in = dy;
    if (d->output_gate) {
        for (size_t j = 0; j < nv; j++) {
            float s = sigmoidf_(a->og[j]);
            dhn[j] = dy[j] * s;
            dog[j] = dy[j] * a->hn[j] * s * (1.0f - s);
        }
        dhn_in = dhn;
        lina_linear_backward(dx, gp->wog, NULL, dog, x, p->wog, N, D, HV);
    }
    /* per-head LayerNorm */
    head_layernorm_backward(dO, gp->norm_w, dhn_in, a->o, p->norm_w, a->mu, a->rstd, N * H, H, d->V);
    /* cell */
    lina_mix_dims md = lina_layer_mix(B, T, d->H, d->K, d->V, 64, 0.0f);
    lina_mlstm_in in = {a->q, a->k, a->v, a->i, a->f, NULL, NULL, NULL};
    lina_mlstm_grad_in gin = {dO, NULL, NULL, NULL};
    lina_mlstm_grad_out gout = {dq, dk, dv, di, df, NULL, NULL, NULL};
    if ((rc = lina_sp_mlstm_bwd(sp, d, &md, &in, &gin, &gout, form, ws))) {
        return rc;
    }
    /* gates: cap, then the projections (with bias) */
    gate_cap_backward(di, a->ip, nh);
    gate_cap_backward(df, a->fp, nh);
    lina_linear_backward(dx, gp->wi, gp->bi, di, x, p->wi, N, D, H);
    lina_linear_backward(dx, gp->wf, gp->bf, df, x, p->wf, N, D, H);
    /* short convs (SiLU), then the q, k, v projections */
    float *dqc = dq, *dkc = dk, *dvc = dv;
    if (d->use_short_conv && sp && sp->size > 1) {
        int W = d->conv_size;
        dqc = df + nh;
        dkc = dqc + nk;
        dvc = dkc + nk;
        if ((rc = lina_sp_conv_backward(sp, dqc, gp->q_conv, NULL, dq, a->qc, p->q_conv, NULL, B, T, HK, W,
                                        LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_backward(sp, dkc, gp->k_conv, NULL, dk, a->kc, p->k_conv, NULL, B, T, HK, W,
                                        LINA_ACT_SILU)) ||
            (rc = lina_sp_conv_backward(sp, dvc, gp->v_conv, NULL, dv, a->vc, p->v_conv, NULL, B, T, HV, W,
                                        LINA_ACT_SILU))) {
            return rc;
        }
    } else if (d->use_short_conv) {
        int W = d->conv_size;
        dqc = df + nh;
        dkc = dqc + nk;
        dvc = dkc + nk;
        lina_shortconv_backward(dqc, gp->q_conv, NULL, NULL, dq, a->qc, p->q_conv, NULL, NULL, B, T, HK, W,
                                LINA_ACT_SILU);
        lina_shortconv_backward(dkc, gp->k_conv, NULL, NULL, dk, a->kc, p->k_conv, NULL, NULL, B, T, HK, W,
                                LINA_ACT_SILU);
        lina_shortconv_backward(dvc, gp->v_conv, NULL, NULL, dv, a->vc, p->v_conv, NULL, NULL, B, T, HV, W,
                                LINA_ACT_SILU);
    }
    lina_linear_backward(dx, gp->q, NULL, dqc, x, p->q, N, D, HK);
    lina_linear_backward(dx, gp->k, NULL, dkc, x, p->k, N, D, HK);
    lina_linear_backward(dx, gp->v, NULL, dvc, x, p->v, N, D, HV);
    return LINA_OK;
}

/* ------------------------------------------------------ plug-in kind */

enum {
    SLOT_Q, SLOT_K, SLOT_V, SLOT_WI, SLOT_BI, SLOT_WF, SLOT_BF, SLOT_WOG, SLOT_NORM, SLOT_OUT,
    SLOT_QCONV, SLOT_KCONV, SLOT_VCONV
};

/* Gate-bias initialisation as xLSTM: the forget-gate biases at linspace(3, 6)
 * over the heads (sigmoid ~ 0.95..0.998: the cell remembers) and the
 * input-gate biases at -10. */
#define MLSTM_FGATE_BIAS_INIT LINA_INIT_LINSPACE_3_6
#define MLSTM_IGATE_BIAS_INIT LINA_INIT_MINUS_10

static int mlstm_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_mlstm_layer_dims *d = dims;
    _Static_assert(sizeof(lina_mlstm_layer_dims) <= LINA_MIXER_DIMS_BYTES, "mlstm dims too large");
    memset(d, 0, sizeof(*d));
    int D = c->hidden_size, H = c->num_heads;
    if (D < 1 || H < 1 || !(c->expand_k > 0.0) || !(c->expand_v > 0.0)) {
        return lina_set_error(LINA_EINVAL, "mlstm: bad hidden_size / num_heads / expand_k / expand_v");
    }
    int HK = (int)(D * c->expand_k), HV = (int)(D * c->expand_v);
    if (HK < H || HV < H || HK % H != 0 || HV % H != 0) {
        return lina_set_error(LINA_EINVAL, "mlstm: hidden_size*expand_k (%d) and hidden_size*expand_v (%d) must be "
                              "multiples of num_heads (%d)", HK, HV, H);
    }
    d->D = D;
    d->H = H;
    d->K = HK / H;
    d->V = HV / H;
    d->output_gate = c->use_output_gate != 0;
    d->use_short_conv = c->use_short_conv != 0;
    d->conv_size = c->conv_size;
    d->norm_eps = (float)c->norm_eps;
    int rc = lina_mlstm_layer_check_dims(d);
    if (rc) {
        return rc;
    }
    int W = d->conv_size;
    if ((rc = lina_mixer_add(b, SLOT_Q, "q.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, SLOT_K, "k.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, SLOT_V, "v.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL)) ||
        (d->output_gate && (rc = lina_mixer_add(b, SLOT_WOG, "ogate_preact.weight", 2, HV, D, 0, 1,
                                                LINA_INIT_NORMAL))) ||
        (rc = lina_mixer_add(b, SLOT_WI, "igate_preact.weight", 2, H, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, SLOT_BI, "igate_preact.bias", 1, H, 0, 0, 0, MLSTM_IGATE_BIAS_INIT)) ||
        (rc = lina_mixer_add(b, SLOT_WF, "fgate_preact.weight", 2, H, D, 0, 1, LINA_INIT_NORMAL)) ||
        (rc = lina_mixer_add(b, SLOT_BF, "fgate_preact.bias", 1, H, 0, 0, 0, MLSTM_FGATE_BIAS_INIT)) ||
        (rc = lina_mixer_add(b, SLOT_NORM, "multihead_norm.weight", 1, HV, 0, 0, 0, LINA_INIT_ONES)) ||
        (rc = lina_mixer_add(b, SLOT_OUT, "out_proj.weight", 2, D, HV, 0, 1, LINA_INIT_NORMAL))) {
        return rc;
    }
    if (d->use_short_conv &&
        ((rc = lina_mixer_add(b, SLOT_QCONV, "q_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, SLOT_KCONV, "k_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL)) ||
         (rc = lina_mixer_add(b, SLOT_VCONV, "v_conv1d.weight", 3, HV, 1, W, 1, LINA_INIT_NORMAL)))) {
        return rc;
    }
    return LINA_OK;
}

static void mlstm_views(lina_mlstm_layer_params *p, float *const *v)
{
    p->q = v[SLOT_Q];
    p->k = v[SLOT_K];
    p->v = v[SLOT_V];
    p->wi = v[SLOT_WI];
    p->bi = v[SLOT_BI];
    p->wf = v[SLOT_WF];
    p->bf = v[SLOT_BF];
    p->wog = v[SLOT_WOG];
    p->norm_w = v[SLOT_NORM];
    p->out_proj = v[SLOT_OUT];
    p->q_conv = v[SLOT_QCONV];
    p->k_conv = v[SLOT_KCONV];
    p->v_conv = v[SLOT_VCONV];
}

LINA_KIND_SIZE(mlstm_acts_floats, lina_mlstm_layer_acts_floats)
LINA_KIND_SIZE(mlstm_scratch_floats, lina_mlstm_layer_scratch_floats)
LINA_KIND_STATE(mlstm_state_floats, lina_mlstm_layer_state_floats)

static int mlstm_forward(const lina_mixer_call *c)
{
    const lina_mlstm_layer_dims *d = c->dims;
    lina_mlstm_layer_params p;
    lina_mlstm_layer_acts a;
    mlstm_views(&p, c->P);
    lina_mlstm_layer_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mlstm_layer_forward(c->out, &a, c->x, d, &p, c->B, c->T, c->state, c->sp, c->form, c->ws);
}

static int mlstm_backward(const lina_mixer_call *c)
{
    const lina_mlstm_layer_dims *d = c->dims;
    lina_mlstm_layer_params p, gp;
    lina_mlstm_layer_acts a;
    mlstm_views(&p, c->P);
    mlstm_views(&gp, c->G);
    lina_mlstm_layer_acts_carve(&a, c->acts, d, c->B * c->T);
    return lina_mlstm_layer_backward(c->dx, &gp, c->dout, c->x, &a, d, &p, c->B, c->T, c->scratch, c->sp,
                                     c->form, c->ws);
}

const lina_mixer_vt lina_mlstm_kind = {
    .name = "mlstm",
    .build = mlstm_build,
    .acts_floats = mlstm_acts_floats,
    .scratch_floats = mlstm_scratch_floats,
    .state_floats = mlstm_state_floats,
    .forward = mlstm_forward,
    .backward = mlstm_backward,
    .flags = LINA_KIND_SP,
};
