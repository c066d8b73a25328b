/* mom_layer.c -- MoM, mixture of memories (docs/mixers.md 7), as a plug-in mixer
 * kind: the router (moe_mlp.c), per-memory Gated DeltaNets over routed
 * sub-sequences (lina_delta_fwd / lina_delta_bwd), the optional shared
 * memory, the weighted sum, the gated output norm and o_proj. Math, names and
 * state layout in mom_layer.h.
 *
 * Row layout. Each (token, chosen memory) pair is a slot row; the N*k routed
 * slot rows are sorted by (memory, sequence, time), so memory m's
 * sub-sequence in sequence b is one contiguous block and the short convs and
 * the kernel run on it in place (B = 1 calls). The shared memory's N rows
 * follow in token order. off[j*B + b] is the first row of block (j, b) for
 * j = 0..M (M: the shared memory), off[J*B] the row count R. */
#include "mom_layer.h"
#include "moe_mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOM_L2_EPS 1e-6f

_Static_assert(sizeof(lina_mom_dims) <= LINA_MIXER_DIMS_BYTES, "MoM dims do not fit");
_Static_assert(sizeof(float) == sizeof(int32_t), "int32 views of float buffers");

/* tensor slots */
enum {
    S_Q = 0, S_GATE, S_ALOG, S_DT, S_QC, S_KC, S_VC, S_G, S_NORM, S_O,
    S_SK, S_SV, S_SB, S_SA, S_MEM
};
#define S_K(m) (S_MEM + 4 * (m))
#define S_V(m) (S_MEM + 4 * (m) + 1)
#define S_B(m) (S_MEM + 4 * (m) + 2)
#define S_A(m) (S_MEM + 4 * (m) + 3)

/* memories with their own rows: the routed ones, then the shared one */
static int n_mem(const lina_mom_dims *d)
{
    return d->M + (d->shared_mem ? 1 : 0);
}

/* k/v/b/a slots of memory j (j == M: the shared memory) */
static int slot_k(const lina_mom_dims *d, int j)
{
    return j == d->M || d->single_kv_proj ? S_SK : S_K(j);
}
static int slot_v(const lina_mom_dims *d, int j)
{
    return j == d->M || d->single_kv_proj ? S_SV : S_V(j);
}
static int slot_b(const lina_mom_dims *d, int j)
{
    return j == d->M || d->single_kv_proj ? S_SB : S_B(j);
}
static int slot_a(const lina_mom_dims *d, int j)
{
    return j == d->M || d->single_kv_proj ? S_SA : S_A(j);
}

/* ------------------------------------------------------------- build */

static int mom_build(lina_mixer_builder *b, const lina_config *c, int layer, void *dims)
{
    (void)layer;
    lina_mom_dims *d = dims;
    memset(d, 0, sizeof(*d));
    if (strcmp(c->mom_backend, "gated_deltanet") != 0) {
        return lina_set_error(LINA_EINVAL, "mom: mom_backend \"%s\" is not supported (gated_deltanet is)",
                              c->mom_backend);
    }
    double vv = (double)c->head_dim * c->expand_v;
    d->D = c->hidden_size;
    d->H = c->num_heads;
    d->K = c->head_dim;
    d->V = (int)vv;
    d->M = c->num_memories;
    d->topk = c->topk;
    d->shared_mem = c->shared_mem ? 1 : 0;
    d->single_kv_proj = c->single_kv_proj ? 1 : 0;
    d->use_gate = c->use_output_gate ? 1 : 0; /* FLA MomConfig: use_output_gate */
    d->use_short_conv = c->use_short_conv ? 1 : 0;
    d->conv_size = c->conv_size;
    d->allow_neg_eigval = c->allow_neg_eigval ? 1 : 0;
    d->norm_eps = (float)c->norm_eps;
    if (d->D < 1 || d->H < 1 || d->K < 1 || vv != floor(vv) || d->V < 1) {
        return lina_set_error(LINA_EINVAL, "mom: bad head sizes (hidden_size %d, num_heads %d, head_dim %d, "
                              "expand_v %g)", d->D, d->H, d->K, c->expand_v);
    }
    if (d->M < 1 || d->topk < 1 || d->topk > d->M) {
        return lina_set_error(LINA_EINVAL, "mom: need 1 <= topk (%d) <= num_memories (%d)", d->topk, d->M);
    }
    if (d->M > LINA_MOM_MAX_MEMORIES) {
        return lina_set_error(LINA_EINVAL, "mom: num_memories %d is above lina's limit of %d", d->M,
                              LINA_MOM_MAX_MEMORIES);
    }
    if (c->num_v_heads && c->num_v_heads != d->H) {
        return lina_set_error(LINA_EINVAL, "mom: num_v_heads (%d) != num_heads is not supported", c->num_v_heads);
    }
    if (d->use_short_conv && d->conv_size < 1) {
        return lina_set_error(LINA_EINVAL, "mom: conv_size must be >= 1 (got %d)", d->conv_size);
    }
    if (!(d->norm_eps > 0.0f)) {
        return lina_set_error(LINA_EINVAL, "mom: norm_eps must be > 0");
    }
    if (!(c->capacity > 0.0) || !isfinite(c->capacity)) {
        return lina_set_error(LINA_EINVAL, "mom: capacity must be > 0 (got %g)", c->capacity);
    }
    if (!(c->aux_loss_scale >= 0.0) || !isfinite(c->aux_loss_scale)) {
        return lina_set_error(LINA_EINVAL, "mom: aux_loss_scale must be >= 0 (got %g)", c->aux_loss_scale);
    }
    int nl = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        nl += !lina_config_is_attn_layer(c, l);
    }
    d->aux_coef = c->aux_loss_scale / (nl > 0 ? nl : 1);
    int64_t D = d->D, H = d->H, HK = (int64_t)d->H * d->K, HV = (int64_t)d->H * d->V, W = d->conv_size;
    int rc = lina_mixer_add(b, S_Q, "q_proj.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL);
    rc = rc ? rc : lina_mixer_add(b, S_GATE, "gate.weight", 2, d->M, D, 0, 1, LINA_INIT_NORMAL);
    char nm[64];
    static const char *const proj[4] = {"k_proj", "v_proj", "b_proj", "a_proj"};
    for (int q = 0; q < 4 && !d->single_kv_proj; q++) {
        for (int m = 0; !rc && m < d->M; m++) {
            snprintf(nm, sizeof(nm), "%s.%d.weight", proj[q], m);
            rc = lina_mixer_add(b, S_MEM + 4 * m + q, nm, 2, q == 0 ? HK : q == 1 ? HV : H, D, 0, 1,
                                LINA_INIT_NORMAL);
        }
    }
    if (d->shared_mem || d->single_kv_proj) {
        rc = rc ? rc : lina_mixer_add(b, S_SK, "shared_k.weight", 2, HK, D, 0, 1, LINA_INIT_NORMAL);
        rc = rc ? rc : lina_mixer_add(b, S_SV, "shared_v.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL);
        rc = rc ? rc : lina_mixer_add(b, S_SB, "shared_b.weight", 2, H, D, 0, 1, LINA_INIT_NORMAL);
        rc = rc ? rc : lina_mixer_add(b, S_SA, "shared_a.weight", 2, H, D, 0, 1, LINA_INIT_NORMAL);
    }
    rc = rc ? rc : lina_mixer_add(b, S_ALOG, "A_log", 1, H, 0, 0, 0, LINA_INIT_A_LOG);
    rc = rc ? rc : lina_mixer_add(b, S_DT, "dt_bias", 1, H, 0, 0, 0, LINA_INIT_DT_BIAS);
    if (d->use_short_conv) {
        rc = rc ? rc : lina_mixer_add(b, S_QC, "q_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL);
        rc = rc ? rc : lina_mixer_add(b, S_KC, "k_conv1d.weight", 3, HK, 1, W, 1, LINA_INIT_NORMAL);
        rc = rc ? rc : lina_mixer_add(b, S_VC, "v_conv1d.weight", 3, HV, 1, W, 1, LINA_INIT_NORMAL);
    }
    if (d->use_gate) {
        rc = rc ? rc : lina_mixer_add(b, S_G, "g_proj.weight", 2, HV, D, 0, 1, LINA_INIT_NORMAL);
    }
    rc = rc ? rc : lina_mixer_add(b, S_NORM, "o_norm.weight", 1, d->V, 0, 0, 0, LINA_INIT_ONES);
    rc = rc ? rc : lina_mixer_add(b, S_O, "o_proj.weight", 2, D, HV, 0, 1, LINA_INIT_NORMAL);
    return rc;
}

/* ------------------------------------------------------- activations */

typedef struct mom_acts {
    float *p;            /* [N, M] router probabilities */
    float *w;            /* [N, k] renormalised weights */
    int32_t *sel, *pos;  /* [N, k] chosen memories, their slot rows */
    int32_t *perm;       /* [R] token row of each slot row */
    float *wr;           /* [R] weight of each slot row (1 for the shared memory) */
    int32_t *off;        /* [(M+1)*N + 1] block starts, see the top */
    float *q;            /* [N, HK] q_proj x */
    float *xg;           /* [N*k, D] x gathered to the routed slot rows */
    float *qg, *kp;      /* [R, HK] conv inputs */
    float *vp;           /* [R, HV] */
    float *qc, *kc;      /* [R, HK] after conv + SiLU */
    float *qn, *kn;      /* [R, HK] L2-normalised */
    float *rq, *rk;      /* [R*H] 1 / norms */
    float *v;            /* [R, HV] after conv + SiLU */
    float *a, *g;        /* [R, H] gate input, log gate */
    float *bl, *beta;    /* [R, H] beta logits, beta */
    float *o;            /* [R, HV] memory outputs */
    float *gate;         /* [N, HV] output gate x Wg^T */
    float *O;            /* [N, HV] mixed output */
    float *rstd;         /* [N*H] */
    float *y;            /* [N, HV] input of o_proj */
} mom_acts;

static size_t rows_of(const lina_mom_dims *d, int N)
{
    return (size_t)N * d->topk + (d->shared_mem ? (size_t)N : 0);
}

static size_t mom_acts_floats(const void *dims, int N)
{
    const lina_mom_dims *d = dims;
    size_t n = (size_t)N, k = d->topk, R = rows_of(d, N), H = d->H, HK = H * d->K, HV = H * d->V;
    return n * d->M + 3 * n * k + 2 * R + ((size_t)d->M + 1) * n + 1 + n * HK + n * k * d->D +
           R * (6 * HK + 3 * HV + 6 * H) + n * (3 * HV + H);
}

static void mom_carve(mom_acts *a, float *buf, const lina_mom_dims *d, int N)
{
    size_t n = (size_t)N, k = d->topk, R = rows_of(d, N), H = d->H, HK = H * d->K, HV = H * d->V;
    float *p = buf;
    a->p = p;                       p += n * d->M;
    a->w = p;                       p += n * k;
    a->sel = (int32_t *)(void *)p;  p += n * k;
    a->pos = (int32_t *)(void *)p;  p += n * k;
    a->perm = (int32_t *)(void *)p; p += R;
    a->wr = p;                      p += R;
    a->off = (int32_t *)(void *)p;  p += ((size_t)d->M + 1) * n + 1;
    a->q = p;                       p += n * HK;
    a->xg = p;                      p += n * k * d->D;
    a->qg = p;                      p += R * HK;
    a->kp = p;                      p += R * HK;
    a->qc = p;                      p += R * HK;
    a->kc = p;                      p += R * HK;
    a->qn = p;                      p += R * HK;
    a->kn = p;                      p += R * HK;
    a->vp = p;                      p += R * HV;
    a->v = p;                       p += R * HV;
    a->o = p;                       p += R * HV;
    a->rq = p;                      p += R * H;
    a->rk = p;                      p += R * H;
    a->a = p;                       p += R * H;
    a->g = p;                       p += R * H;
    a->bl = p;                      p += R * H;
    a->beta = p;                    p += R * H;
    a->gate = p;                    p += n * HV;
    a->O = p;                       p += n * HV;
    a->rstd = p;                    p += n * H;
    a->y = p;
}

static size_t mom_scratch_floats(const void *dims, int N)
{
    const lina_mom_dims *d = dims;
    size_t n = (size_t)N, H = d->H, HK = H * d->K, HV = H * d->V;
    /* per token: dy, dO, dgate [N,HV], dq [N,HK], dw [N,k], dz [N,M];
     * per memory (<= N rows): dqn, dkn, dqc, dkc [HK], do, dv [HV], dbeta, dg [H], dxs [D] */
    return n * (3 * HV + HK + d->topk + d->M) + n * (4 * HK + 2 * HV + 2 * H + d->D);
}

/* floats of one (memory, sequence) state block: conv tails, then [H, K, V] */
static size_t block_floats(const lina_mom_dims *d)
{
    size_t HK = (size_t)d->H * d->K, HV = (size_t)d->H * d->V;
    return (d->use_short_conv ? (2 * HK + HV) * d->conv_size : 0) + HK * d->V;
}

static size_t mom_state_floats(const void *dims, int B, int max_len)
{
    (void)max_len;
    const lina_mom_dims *d = dims;
    return (size_t)n_mem(d) * B * block_floats(d);
}

/* ------------------------------------------------------------ forward */

static float sigm(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* memory j over its rows: projections, convs, norms, gates, kernel -> a->o */
static int sp_on(const lina_mixer_call *c)
{
    return c->sp && c->sp->size > 1;
}

/* the sequence-parallel keys of block (j, b): its q, k, v convolutions (0..2) and its kernel (3) */
static const void *block_key(const mom_acts *a, int B, int j, int b, int what)
{
    return (const char *)(const void *)&a->off[j * B + b] + what;
}

/* memory j over its rows: projections, convs, norms, gates, kernel -> a->o. With
 * sequence parallelism every block (j, b) is one piece of memory j's sub-sequence of b:
 * its convs and kernel exchange with the same block of the other pieces (even when
 * empty here), through the sp calls */
static int memory_forward(const lina_mixer_call *c, const lina_mom_dims *d, mom_acts *a, int j)
{
    int B = c->B, D = d->D, H = d->H, HK = H * d->K, HV = H * d->V, W = d->conv_size;
    size_t r0 = (size_t)a->off[j * B], n = (size_t)a->off[(j + 1) * B] - r0;
    const int spon = sp_on(c);
    if (n == 0 && !spon) {
        return LINA_OK;
    }
    float *const *P = c->P;
    const float *xs = j < d->M ? a->xg + r0 * D : c->x; /* shared rows are the tokens in order */
    lina_linear_forward(a->kp + r0 * HK, xs, P[slot_k(d, j)], NULL, (int)n, D, HK);
    lina_linear_forward(a->vp + r0 * HV, xs, P[slot_v(d, j)], NULL, (int)n, D, HV);
    lina_linear_forward(a->a + r0 * H, xs, P[slot_a(d, j)], NULL, (int)n, D, H);
    lina_linear_forward(a->bl + r0 * H, xs, P[slot_b(d, j)], NULL, (int)n, D, H);
    for (size_t r = r0; r < r0 + n; r++) {
        memcpy(a->qg + r * HK, a->q + (size_t)a->perm[r] * HK, (size_t)HK * sizeof(float));
    }
    size_t SB = block_floats(d), ct = d->use_short_conv ? (size_t)W : 0;
    for (int b = 0; b < B; b++) {
        size_t s0 = (size_t)a->off[j * B + b], len = (size_t)a->off[j * B + b + 1] - s0;
        if (len == 0 && !spon) {
            continue;
        }
        float *st = c->state ? c->state + ((size_t)j * B + b) * SB : NULL;
        const int sc = d->use_short_conv, T = (int)len;
        if (sc && spon) {
            int rc;
            if ((rc = lina_sp_conv_forward_key(c->sp, block_key(a, B, j, b, 0), a->qc + s0 * HK, a->qg + s0 * HK,
                                               P[S_QC], NULL, 1, T, HK, W, LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_forward_key(c->sp, block_key(a, B, j, b, 1), a->kc + s0 * HK, a->kp + s0 * HK,
                                               P[S_KC], NULL, 1, T, HK, W, LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_forward_key(c->sp, block_key(a, B, j, b, 2), a->v + s0 * HV, a->vp + s0 * HV,
                                               P[S_VC], NULL, 1, T, HV, W, LINA_ACT_SILU))) {
                return rc;
            }
            continue;
        }
        lina_conv_act_forward(a->qc + s0 * HK, a->qg + s0 * HK, sc ? P[S_QC] : NULL, st, 1, T, HK, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->kc + s0 * HK, a->kp + s0 * HK, sc ? P[S_KC] : NULL, st ? st + ct * HK : NULL, 1, T,
                              HK, W, LINA_ACT_SILU);
        lina_conv_act_forward(a->v + s0 * HV, a->vp + s0 * HV, sc ? P[S_VC] : NULL, st ? st + 2 * ct * HK : NULL, 1,
                              T, HV, W, LINA_ACT_SILU);
    }
    lina_l2norm_forward(a->qn + r0 * HK, a->rq + r0 * H, a->qc + r0 * HK, (int)n * H, d->K, MOM_L2_EPS);
    lina_l2norm_forward(a->kn + r0 * HK, a->rk + r0 * H, a->kc + r0 * HK, (int)n * H, d->K, MOM_L2_EPS);
    const float *Alog = P[S_ALOG], *dtb = P[S_DT];
    float bmul = d->allow_neg_eigval ? 2.0f : 1.0f;
    lina_decay_forward(a->g + r0 * H, a->a + r0 * H, Alog, dtb, n, H);
    for (size_t i = r0 * H; i < (r0 + n) * H; i++) {
        a->beta[i] = bmul * sigm(a->bl[i]);
    }
    for (int b = 0; b < B; b++) {
        size_t s0 = (size_t)a->off[j * B + b], len = (size_t)a->off[j * B + b + 1] - s0;
        if (len == 0 && !spon) {
            continue;
        }
        float *st = c->state ? c->state + ((size_t)j * B + b) * SB + ct * (2 * (size_t)HK + HV) : NULL;
        lina_mix_dims md = lina_layer_mix(1, (int)len, d->H, d->K, d->V, 64, 0.0f);
        lina_delta_in in = {a->qn + s0 * HK, a->kn + s0 * HK, a->v + s0 * HV, a->beta + s0 * H, a->g + s0 * H,
                            st, 1, NULL};
        lina_delta_out out = {.o = a->o + s0 * HV, .ht = st, .cache = NULL}; /* the state is updated in place */
        int rc = lina_sp_delta_fwd(c->sp, block_key(a, B, j, b, 3), &md, &in, &out, c->form, c->ws);
        if (rc) {
            return rc;
        }
    }
    return LINA_OK;
}

static int mom_forward(const lina_mixer_call *c)
{
    const lina_mom_dims *d = c->dims;
    if (!d || !c->P || !c->x || !c->out || !c->acts || c->B < 1 || c->T < 1) {
        return lina_set_error(LINA_EINVAL, "mom: bad call");
    }
    int B = c->B, T = c->T, N = B * T, D = d->D, M = d->M, k = d->topk, H = d->H;
    int HK = H * d->K, HV = H * d->V, J = n_mem(d);
    float *const *P = c->P;
    mom_acts a;
    mom_carve(&a, c->acts, d, N);
    /* router and slot rows */
    lina_linear_forward(a.p, c->x, P[S_GATE], NULL, N, D, M);
    lina_router_topk(a.p, a.w, a.sel, a.p, N, M, k);
    lina_router_layout(a.perm, a.pos, a.wr, a.off, a.sel, a.w, B, T, M, k);
    size_t NK = (size_t)N * k;
    if (d->shared_mem) {
        for (int n = 0; n < N; n++) {
            a.perm[NK + n] = n;
            a.wr[NK + n] = 1.0f;
        }
        for (int b = 0; b <= B; b++) {
            a.off[M * B + b] = (int32_t)(NK + (size_t)b * T);
        }
    }
    for (size_t r = 0; r < NK; r++) {
        memcpy(a.xg + r * D, c->x + (size_t)a.perm[r] * D, (size_t)D * sizeof(float));
    }
    lina_linear_forward(a.q, c->x, P[S_Q], NULL, N, D, HK);
    /* the memories */
    int rc = LINA_OK;
    for (int j = 0; j < J && !rc; j++) {
        rc = memory_forward(c, d, &a, j);
    }
    if (rc) {
        return rc;
    }
    /* O[n] = sum_j w[n, j] o[pos[n, j]] (+ o of the shared memory) */
    for (int n = 0; n < N; n++) {
        float *On = a.O + (size_t)n * HV;
        if (d->shared_mem) {
            memcpy(On, a.o + (NK + n) * HV, (size_t)HV * sizeof(float));
        } else {
            memset(On, 0, (size_t)HV * sizeof(float));
        }
        for (int j = 0; j < k; j++) {
            float wj = a.w[(size_t)n * k + j];
            const float *o = a.o + (size_t)a.pos[(size_t)n * k + j] * HV;
            for (int i = 0; i < HV; i++) {
                On[i] += wj * o[i];
            }
        }
    }
    if (d->use_gate) {
        lina_linear_forward(a.gate, c->x, P[S_G], NULL, N, D, HV);
    }
    lina_out_forward(c->out, a.y, a.rstd, a.O, d->use_gate ? a.gate : NULL, P[S_NORM], P[S_O], N, H, d->V, D,
                     d->norm_eps);
    if (c->aux) {
        *c->aux += d->aux_coef * lina_router_balance(a.p, a.sel, N, M, k);
    }
    return LINA_OK;
}

/* ----------------------------------------------------------- backward */

typedef struct mom_scr {
    float *dqn, *dkn, *dqc, *dkc; /* [n, HK] */
    float *dO_, *dv;              /* [n, HV] (dO_: the kernel's do) */
    float *dbeta, *dg;            /* [n, H] */
    float *dxs;                   /* [n, D] */
} mom_scr;

/* memory j: kernel, norms, convs, gates, projections; dq [N, HK] and dx accumulate */
static int memory_backward(const lina_mixer_call *c, const lina_mom_dims *d, const mom_acts *a, int j,
                           const float *dO, float *dq, const mom_scr *s)
{
    int B = c->B, D = d->D, H = d->H, HK = H * d->K, HV = H * d->V;
    size_t r0 = (size_t)a->off[j * B], n = (size_t)a->off[(j + 1) * B] - r0;
    const int spon = sp_on(c);
    if (n == 0 && !spon) {
        return LINA_OK;
    }
    float *const *P = c->P;
    float *const *G = c->G;
#define GV(slot) (G ? G[slot] : NULL)
    /* the kernel's do: routing weight times the mixed-output gradient */
    for (size_t i = 0; i < n; i++) {
        const float *g = dO + (size_t)a->perm[r0 + i] * HV;
        float wr = a->wr[r0 + i];
        for (int q = 0; q < HV; q++) {
            s->dO_[i * HV + q] = wr * g[q];
        }
    }
    memset(s->dqn, 0, n * HK * sizeof(float));
    memset(s->dkn, 0, n * HK * sizeof(float));
    memset(s->dv, 0, n * HV * sizeof(float));
    memset(s->dbeta, 0, n * H * sizeof(float));
    memset(s->dg, 0, n * H * sizeof(float));
    for (int b = 0; b < B; b++) {
        size_t s0 = (size_t)a->off[j * B + b], len = (size_t)a->off[j * B + b + 1] - s0, l0 = s0 - r0;
        if (len == 0 && !spon) {
            continue;
        }
        lina_mix_dims md = lina_layer_mix(1, (int)len, d->H, d->K, d->V, 64, 0.0f);
        lina_delta_in in = {a->qn + s0 * HK, a->kn + s0 * HK, a->v + s0 * HV, a->beta + s0 * H, a->g + s0 * H,
                            NULL, 1, NULL};
        lina_delta_grad_in gin = {s->dO_ + l0 * HV, NULL, NULL};
        lina_delta_grad_out gout = {s->dqn + l0 * HK, s->dkn + l0 * HK, s->dv + l0 * HV, s->dbeta + l0 * H,
                                    s->dg + l0 * H, NULL, NULL};
        int rc = lina_sp_delta_bwd(c->sp, block_key(a, B, j, b, 3), &md, &in, &gin, &gout, c->form, c->ws);
        if (rc) {
            return rc;
        }
    }
    /* L2Norms: dqc, dkc */
    memset(s->dqc, 0, n * HK * sizeof(float));
    memset(s->dkc, 0, n * HK * sizeof(float));
    lina_l2norm_backward(s->dqc, s->dqn, a->qn + r0 * HK, a->rq + r0 * H, (int)n * H, d->K);
    lina_l2norm_backward(s->dkc, s->dkn, a->kn + r0 * HK, a->rk + r0 * H, (int)n * H, d->K);
    /* convs (or SiLU): dqg into dqn, dkp into dkn, dvp into dO_ */
    float *dqg = s->dqn, *dkp = s->dkn, *dvp = s->dO_;
    memset(dqg, 0, n * HK * sizeof(float));
    memset(dkp, 0, n * HK * sizeof(float));
    memset(dvp, 0, n * HV * sizeof(float));
    for (int b = 0; b < B; b++) {
        size_t s0 = (size_t)a->off[j * B + b], len = (size_t)a->off[j * B + b + 1] - s0, l0 = s0 - r0;
        if (len == 0 && !spon) {
            continue;
        }
        const int sc = d->use_short_conv, T = (int)len, W = d->conv_size;
        if (sc && spon) {
            int rc;
            if ((rc = lina_sp_conv_backward_key(c->sp, block_key(a, B, j, b, 0), dqg + l0 * HK, GV(S_QC), NULL,
                                                s->dqc + l0 * HK, a->qg + s0 * HK, P[S_QC], NULL, 1, T, HK, W,
                                                LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward_key(c->sp, block_key(a, B, j, b, 1), dkp + l0 * HK, GV(S_KC), NULL,
                                                s->dkc + l0 * HK, a->kp + s0 * HK, P[S_KC], NULL, 1, T, HK, W,
                                                LINA_ACT_SILU)) ||
                (rc = lina_sp_conv_backward_key(c->sp, block_key(a, B, j, b, 2), dvp + l0 * HV, GV(S_VC), NULL,
                                                s->dv + l0 * HV, a->vp + s0 * HV, P[S_VC], NULL, 1, T, HV, W,
                                                LINA_ACT_SILU))) {
                return rc;
            }
            continue;
        }
        lina_conv_act_backward(dqg + l0 * HK, GV(S_QC), s->dqc + l0 * HK, a->qg + s0 * HK, sc ? P[S_QC] : NULL, 1, T,
                               HK, W, LINA_ACT_SILU);
        lina_conv_act_backward(dkp + l0 * HK, GV(S_KC), s->dkc + l0 * HK, a->kp + s0 * HK, sc ? P[S_KC] : NULL, 1, T,
                               HK, W, LINA_ACT_SILU);
        lina_conv_act_backward(dvp + l0 * HV, GV(S_VC), s->dv + l0 * HV, a->vp + s0 * HV, sc ? P[S_VC] : NULL, 1, T,
                               HV, W, LINA_ACT_SILU);
    }
    /* gates: g = -exp(A_log) softplus(a + dt_bias) -> d(a) in dg; beta = c sigmoid(bl) -> d(bl) in dbeta */
    const float *Alog = P[S_ALOG], *dtb = P[S_DT];
    float bmul = d->allow_neg_eigval ? 2.0f : 1.0f;
    lina_decay_backward(s->dg, GV(S_ALOG), GV(S_DT), a->a + r0 * H, a->g + r0 * H, Alog, dtb, n, H);
    for (size_t li = 0; li < n * H; li++) {
        float sb = sigm(a->bl[r0 * H + li]);
        s->dbeta[li] *= bmul * sb * (1.0f - sb);
    }
    /* projections: dxs (the shared memory adds straight into dx) */
    const float *xs = j < d->M ? a->xg + r0 * D : c->x;
    float *dxs = j < d->M ? s->dxs : c->dx;
    if (j < d->M) {
        memset(dxs, 0, n * D * sizeof(float));
    }
    lina_linear_backward(dxs, GV(slot_k(d, j)), NULL, dkp, xs, P[slot_k(d, j)], (int)n, D, HK);
    lina_linear_backward(dxs, GV(slot_v(d, j)), NULL, dvp, xs, P[slot_v(d, j)], (int)n, D, HV);
    lina_linear_backward(dxs, GV(slot_a(d, j)), NULL, s->dg, xs, P[slot_a(d, j)], (int)n, D, H);
    lina_linear_backward(dxs, GV(slot_b(d, j)), NULL, s->dbeta, xs, P[slot_b(d, j)], (int)n, D, H);
    for (size_t i = 0; i < n; i++) {
        size_t t = (size_t)a->perm[r0 + i];
        float *dqt = dq + t * HK;
        const float *src = dqg + i * HK;
        for (int q = 0; q < HK; q++) {
            dqt[q] += src[q];
        }
        if (j < d->M) {
            float *dst = c->dx + t * D;
            const float *sx = dxs + i * D;
            for (int q = 0; q < D; q++) {
                dst[q] += sx[q];
            }
        }
    }
#undef GV
    return LINA_OK;
}

static int mom_backward(const lina_mixer_call *c)
{
    const lina_mom_dims *d = c->dims;
    if (!d || !c->P || !c->x || !c->dout || !c->dx || !c->acts || !c->scratch || c->B < 1 || c->T < 1) {
        return lina_set_error(LINA_EINVAL, "mom: bad backward call");
    }
    int B = c->B, T = c->T, N = B * T, D = d->D, M = d->M, k = d->topk, H = d->H;
    int HK = H * d->K, HV = H * d->V, J = n_mem(d);
    float *const *P = c->P;
    float *const *G = c->G;
    mom_acts a;
    mom_carve(&a, c->acts, d, N);
    size_t n = (size_t)N;
    float *dy = c->scratch;           /* [N, HV] */
    float *dO = dy + n * HV;          /* [N, HV] */
    float *dgate = dO + n * HV;       /* [N, HV] */
    float *dq = dgate + n * HV;       /* [N, HK] */
    float *dw = dq + n * HK;          /* [N, k] */
    float *dz = dw + n * k;           /* [N, M] */
    mom_scr s;
    s.dqn = dz + n * M;
    s.dkn = s.dqn + n * HK;
    s.dqc = s.dkn + n * HK;
    s.dkc = s.dqc + n * HK;
    s.dO_ = s.dkc + n * HK;
    s.dv = s.dO_ + n * HV;
    s.dbeta = s.dv + n * HV;
    s.dg = s.dbeta + n * H;
    s.dxs = s.dg + n * H;
    memset(dq, 0, n * HK * sizeof(float));
    /* o_proj, output norm, g_proj (dy, dO and dgate written) */
    lina_out_backward(dO, dgate, dy, G ? G[S_NORM] : NULL, G ? G[S_O] : NULL, c->dout, a.y, a.O,
                      d->use_gate ? a.gate : NULL, P[S_NORM], P[S_O], a.rstd, N, H, d->V, D);
    if (d->use_gate) {
        lina_linear_backward(c->dx, G ? G[S_G] : NULL, NULL, dgate, c->x, P[S_G], N, D, HV);
    }
    /* routing weights: dw[n, j] = dO[n] . o[pos[n, j]] */
    for (int t = 0; t < N; t++) {
        const float *g = dO + (size_t)t * HV;
        for (int j = 0; j < k; j++) {
            const float *o = a.o + (size_t)a.pos[(size_t)t * k + j] * HV;
            double acc = 0.0;
            for (int i = 0; i < HV; i++) {
                acc += (double)g[i] * o[i];
            }
            dw[(size_t)t * k + j] = (float)acc;
        }
    }
    /* the memories */
    for (int j = 0; j < J; j++) {
        int rc = memory_backward(c, d, &a, j, dO, dq, &s);
        if (rc) {
            return rc;
        }
    }
    lina_linear_backward(c->dx, G ? G[S_Q] : NULL, NULL, dq, c->x, P[S_Q], N, D, HK);
    /* router */
    lina_router_backward(dz, a.p, a.w, a.sel, dw, c->aux_grad * d->aux_coef, N, M, k);
    lina_linear_backward(c->dx, G ? G[S_GATE] : NULL, NULL, dz, c->x, P[S_GATE], N, D, M);
    return LINA_OK;
}

const lina_mixer_vt lina_mom_kind = {
    .name = "mom",
    .build = mom_build,
    .acts_floats = mom_acts_floats,
    .scratch_floats = mom_scratch_floats,
    .state_floats = mom_state_floats,
    .forward = mom_forward,
    .backward = mom_backward,
    .flags = LINA_KIND_SP,
};
