/* model.c -- a causal LM from a lina_config, as flash-linear-attention builds
 * its LMs (docs/mixers.md section 2, docs/checkpoints.md section 2):
 *
 *   x_0 = Emb[tokens]                                       [N, D], N = B*T
 *   for l = 0..L-1:  h_l = x_l + Mixer_l(RMSNorm_attn(x_l))
 *                    x_{l+1} = h_l + GatedMLP(RMSNorm_mlp(h_l))
 *   logits = RMSNorm(x_L) W_lm^T                             [N, vocab]
 *
 * Parameters: one contiguous float buffer, carved into views named and
 * shaped as FLA's state dict; the gradient buffer mirrors it. Activations
 * for backward live in one arena owned by the model, sized for the largest
 * B*T seen so far. */
#include "model.h"
#include "mixer.h"
#include "../io/io_internal.h"
#include "../kern/checked.h"
#include "../nn/nn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ================================================================ tables */

#define MODEL_NAME_MAX 96
#define MODEL_MAX_MIX 16
/* lina_model_decode runs serially below this many token x parameter products
 * (B = 1 decode of a 64M-parameter model; the lm_head and embedding count too) */
#define DECODE_SERIAL_WORK 6.4e7

typedef lina_init tensor_init; /* mixer.h */
#define INIT_NORMAL LINA_INIT_NORMAL
#define INIT_ONES LINA_INIT_ONES
#define INIT_ZEROS LINA_INIT_ZEROS
#define INIT_A_LOG LINA_INIT_A_LOG
#define INIT_DT_BIAS LINA_INIT_DT_BIAS

typedef struct model_tensor {
    char name[MODEL_NAME_MAX];
    int ndim;
    int64_t shape[4];
    size_t off;      /* floats into the parameter buffer */
    size_t numel;
    int decay;
    tensor_init init;
} model_tensor;

typedef enum mixer_kind {
    MIX_GLA = 0,
    MIX_GDN = 1,
    MIX_ATTN = 2,
    MIX_HGRN2 = 3,
    MIX_EXT = 4 /* a plug-in kind (mixer.h) */
} mixer_kind;

/* a plug-in block: its table, tensor slots and private dims */
typedef struct ext_block {
    const lina_mixer_vt *vt;
    int slot[LINA_MIXER_MAX_SLOTS]; /* tensor indices, -1: absent */
    _Alignas(16) unsigned char dims[LINA_MIXER_DIMS_BYTES];
} ext_block;

/* GLA tensor slots in model_layer.mix */
enum { GLA_Q, GLA_K, GLA_V, GLA_G, GLA_GK0, GLA_GK1, GLA_GK1B, GLA_NORM, GLA_O, GLA_QC, GLA_KC, GLA_VC, GLA_NSLOTS };
/* Gated DeltaNet tensor slots */
enum { GDN_Q, GDN_K, GDN_V, GDN_A, GDN_B, GDN_ALOG, GDN_DT, GDN_QC, GDN_KC, GDN_VC, GDN_G, GDN_NORM, GDN_O,
       GDN_NSLOTS };
/* softmax attention tensor slots */
enum { ATT_Q, ATT_QB, ATT_K, ATT_KB, ATT_V, ATT_VB, ATT_QN, ATT_KN, ATT_O, ATT_NSLOTS };
/* HGRN2 tensor slots */
enum { HG_Q, HG_F, HG_I, HG_NORM, HG_O, HG_NSLOTS };

typedef struct model_layer {
    mixer_kind kind;
    int t_attn_norm, t_mlp_norm, t_gate, t_up, t_down; /* tensor indices */
    int mix[MODEL_MAX_MIX];                           /* mixer tensor indices (-1: absent) */
    lina_gla_dims gla;
    lina_gdn_dims gdn;
    lina_attn_dims att;
    lina_hgrn2_dims hg;
    size_t mix_acts;                                  /* floats of mixer activations per row set */
    ext_block *ext;                                   /* MIX_EXT: the mixer */
    ext_block *ffn;                                   /* plug-in feed-forward block, or NULL (GatedMLP) */
    int has_mlp;                                      /* 0: no feed-forward sub-block (mamba2) */
} model_layer;

/* Per-layer activations (views into the arena) for N rows. */
typedef struct layer_acts {
    float *x;        /* [N, D] layer input (residual stream) */
    float *xn1;      /* [N, D] RMSNorm_attn(x) */
    float *rstd1;    /* [N] */
    float *h;        /* [N, D] x + mixer */
    float *xn2;      /* [N, D] RMSNorm_mlp(h) */
    float *rstd2;    /* [N] */
    float *gate, *up, *hh; /* [N, I] MLP */
    float *mix;      /* mixer activations */
    float *ffn;      /* plug-in feed-forward activations */
} layer_acts;

struct lina_model {
    lina_config cfg;
    int L, D, vocab, I;
    int ntensors, captensors;
    model_tensor *tensors;
    model_layer *layers;  /* [L] */
    int t_emb, t_norm, t_lm; /* t_lm == t_emb when tied */
    int t_lb;             /* hgrn2 model.lower_bounds [L, D], or -1 */
    float *lb_P;          /* [L, D] softmax over layers of lower_bounds */
    float *lb_lambda;     /* [L, D] per-layer lower bound: cumsum(P) - P[0] */
    float *lb_dlambda;    /* [L, D] its gradient (backward scratch) */
    size_t nparams;
    float *params;        /* [nparams] */
    float *grads;         /* [nparams] */
    /* activation arena */
    int cap_rows;         /* N the arena is sized for */
    float *arena;
    size_t arena_floats;
    layer_acts *acts;     /* [L] */
    float *xL;            /* [N, D] final stream */
    float *xnf;           /* [N, D] final norm */
    float *rstdf;         /* [N] */
    float *logits;        /* [N, vocab] (dlogits in place) */
    float *lse;           /* [N] */
    float *tmp;           /* [N, D] mixer / MLP outputs, input grads */
    float *dres;          /* [N, D] residual gradient */
    float *scratch;       /* layer backward scratch */
    double aux;           /* auxiliary losses of the last forward (MoM, MoE) */
};

/* ================================================================ helpers */

/* n zeroed floats, 64-byte aligned; NULL when n * 4 does not fit in size_t */
static void *xcalloc_aligned(size_t n)
{
    size_t bytes = lina_szadd(lina_szmul(n ? n : 1, sizeof(float)), 63);
    if (bytes == LINA_SZ_OVF) {
        return NULL;
    }
    bytes &= ~(size_t)63;
    void *p = aligned_alloc(64, bytes);
    if (p) {
        memset(p, 0, bytes);
    }
    return p;
}

static int add_tensor(lina_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int decay,
                      tensor_init init)
{
    if (m->ntensors == m->captensors) {
        int nc = m->captensors ? 2 * m->captensors : 64;
        model_tensor *t = realloc(m->tensors, (size_t)nc * sizeof(*t));
        if (!t) {
            return -1;
        }
        m->tensors = t;
        m->captensors = nc;
    }
    model_tensor *t = &m->tensors[m->ntensors];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = ndim;
    int64_t sh[3] = {d0, d1, d2};
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = sh[i];
        t->numel = lina_szmul(t->numel, lina_szdim(sh[i]));
    }
    t->off = m->nparams;
    t->decay = decay;
    t->init = init;
    m->nparams = lina_szadd(m->nparams, t->numel); /* LINA_SZ_OVF: refused by model_alloc */
    return m->ntensors++;
}

/* ---------------------------------------------------------- plug-in kinds */

struct lina_mixer_builder {
    lina_model *m;
    int *slot;
    char prefix[64];
};

int lina_mixer_add(lina_mixer_builder *b, int slot, const char *suffix, int ndim, int64_t d0, int64_t d1,
                   int64_t d2, int decay, lina_init init)
{
    if (!b || !suffix || slot < 0 || slot >= LINA_MIXER_MAX_SLOTS || ndim < 1 || ndim > 3 || d0 < 1 ||
        (ndim > 1 && d1 < 1) || (ndim > 2 && d2 < 1)) {
        return lina_set_error(LINA_EINVAL, "model: bad tensor declaration (%s)", suffix ? suffix : "NULL");
    }
    char nm[MODEL_NAME_MAX];
    if ((size_t)snprintf(nm, sizeof(nm), "%s%s", b->prefix, suffix) >= sizeof(nm)) {
        return lina_set_error(LINA_EINVAL, "model: tensor name too long (%s%s)", b->prefix, suffix);
    }
    int t = add_tensor(b->m, nm, ndim, d0, ndim > 1 ? d1 : 0, ndim > 2 ? d2 : 0, decay, init);
    if (t < 0) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    b->slot[slot] = t;
    return LINA_OK;
}

static int build_ext(lina_model *m, int l, const lina_mixer_vt *vt, const char *prefix_fmt, ext_block **out)
{
    ext_block *e = calloc(1, sizeof(*e));
    if (!e) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    *out = e;
    e->vt = vt;
    for (int i = 0; i < LINA_MIXER_MAX_SLOTS; i++) {
        e->slot[i] = -1;
    }
    lina_mixer_builder b;
    b.m = m;
    b.slot = e->slot;
    snprintf(b.prefix, sizeof(b.prefix), prefix_fmt, l);
    return vt->build(&b, &m->cfg, l, e->dims);
}

/* P[slot] / G[slot] views of a plug-in block over `base` */
static void ext_views(const lina_model *m, const ext_block *e, float *base, float **v)
{
    for (int i = 0; i < LINA_MIXER_MAX_SLOTS; i++) {
        v[i] = e->slot[i] < 0 ? NULL : base + m->tensors[e->slot[i]].off;
    }
}

/* Run a plug-in block's forward (G == NULL: out = block(x), state / aux as
 * in lina_mixer_call) or backward (G != NULL: dx += d block / d x given dout,
 * gradients into G, the auxiliary loss's gradient with weight 1). */
static int ext_run(const lina_model *m, const ext_block *e, float *P, float *G, int B, int T, const float *x,
                   float *out_dx, const float *dout, float *acts, float *scratch, float *state, int64_t pos,
                   double *aux, lina_form form, lina_ws *ws)
{
    float *Pv[LINA_MIXER_MAX_SLOTS], *Gv[LINA_MIXER_MAX_SLOTS];
    ext_views(m, e, P, Pv);
    lina_mixer_call cl = {0};
    cl.dims = e->dims;
    cl.P = Pv;
    cl.B = B;
    cl.T = T;
    cl.x = x;
    cl.acts = acts;
    cl.form = form;
    cl.ws = ws;
    if (!G) {
        cl.out = out_dx;
        cl.state = state;
        cl.pos = pos;
        cl.aux = aux;
        return e->vt->forward(&cl);
    }
    ext_views(m, e, G, Gv);
    cl.G = Gv;
    cl.dout = dout;
    cl.dx = out_dx;
    cl.scratch = scratch;
    cl.aux_grad = 1.0;
    return e->vt->backward(&cl);
}

/* splitmix64 + Box-Muller: deterministic N(0,1) from a seed */
typedef struct model_rng {
    uint64_t s;
    int has;
    double spare;
} model_rng;

static uint64_t rng_next(model_rng *r)
{
    return lina_splitmix64(&r->s);
}

static double rng_normal(model_rng *r)
{
    if (r->has) {
        r->has = 0;
        return r->spare;
    }
    double u1 = ((double)(rng_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    double rad = sqrt(-2.0 * log(u1));
    r->spare = rad * sin(6.283185307179586 * u2);
    r->has = 1;
    return rad * cos(6.283185307179586 * u2);
}

static float *tp(const lina_model *m, float *base, int t)
{
    return t < 0 ? NULL : base + m->tensors[t].off;
}

/* the GLA views of layer l over `base` (params or grads) */
static void gla_views(const lina_model *m, const model_layer *ly, float *base, lina_gla_params *p)
{
    p->q_proj = tp(m, base, ly->mix[GLA_Q]);
    p->k_proj = tp(m, base, ly->mix[GLA_K]);
    p->v_proj = tp(m, base, ly->mix[GLA_V]);
    p->g_proj = tp(m, base, ly->mix[GLA_G]);
    p->gk0 = tp(m, base, ly->mix[GLA_GK0]);
    p->gk1 = tp(m, base, ly->mix[GLA_GK1]);
    p->gk1_b = tp(m, base, ly->mix[GLA_GK1B]);
    p->norm_w = tp(m, base, ly->mix[GLA_NORM]);
    p->o_proj = tp(m, base, ly->mix[GLA_O]);
    p->q_conv = tp(m, base, ly->mix[GLA_QC]);
    p->k_conv = tp(m, base, ly->mix[GLA_KC]);
    p->v_conv = tp(m, base, ly->mix[GLA_VC]);
}

/* the Gated DeltaNet views of a layer over `base` */
static void gdn_views(const lina_model *m, const model_layer *ly, float *base, lina_gdn_params *p)
{
    p->q_proj = tp(m, base, ly->mix[GDN_Q]);
    p->k_proj = tp(m, base, ly->mix[GDN_K]);
    p->v_proj = tp(m, base, ly->mix[GDN_V]);
    p->a_proj = tp(m, base, ly->mix[GDN_A]);
    p->b_proj = tp(m, base, ly->mix[GDN_B]);
    p->A_log = tp(m, base, ly->mix[GDN_ALOG]);
    p->dt_bias = tp(m, base, ly->mix[GDN_DT]);
    p->q_conv = tp(m, base, ly->mix[GDN_QC]);
    p->k_conv = tp(m, base, ly->mix[GDN_KC]);
    p->v_conv = tp(m, base, ly->mix[GDN_VC]);
    p->g_proj = tp(m, base, ly->mix[GDN_G]);
    p->o_norm = tp(m, base, ly->mix[GDN_NORM]);
    p->o_proj = tp(m, base, ly->mix[GDN_O]);
}

/* the attention views of a layer over `base` */
static void attn_views(const lina_model *m, const model_layer *ly, float *base, lina_attn_params *p)
{
    p->q_proj = tp(m, base, ly->mix[ATT_Q]);
    p->q_bias = tp(m, base, ly->mix[ATT_QB]);
    p->k_proj = tp(m, base, ly->mix[ATT_K]);
    p->k_bias = tp(m, base, ly->mix[ATT_KB]);
    p->v_proj = tp(m, base, ly->mix[ATT_V]);
    p->v_bias = tp(m, base, ly->mix[ATT_VB]);
    p->q_norm = tp(m, base, ly->mix[ATT_QN]);
    p->k_norm = tp(m, base, ly->mix[ATT_KN]);
    p->o_proj = tp(m, base, ly->mix[ATT_O]);
}

static void hgrn2_views(const lina_model *m, const model_layer *ly, float *base, lina_hgrn2_params *p)
{
    p->q_proj = tp(m, base, ly->mix[HG_Q]);
    p->f_proj = tp(m, base, ly->mix[HG_F]);
    p->i_proj = tp(m, base, ly->mix[HG_I]);
    p->g_norm = tp(m, base, ly->mix[HG_NORM]);
    p->o_proj = tp(m, base, ly->mix[HG_O]);
}

/* ================================================================ build */

static int build_gla_layer(lina_model *m, int l, model_layer *ly)
{
    const lina_config *c = &m->cfg;
    int D = m->D, H = c->num_heads;
    int kd = (int)(D * c->expand_k), vd = (int)(D * c->expand_v);
    int ret = c->model_type == LINA_MODEL_RETNET;
    const char *mt = lina_model_type_name(c->model_type);
    int G = H / (c->num_kv_heads > 0 ? c->num_kv_heads : H); /* kv groups (validated by the config) */
    if (c->feature_map[0]) {
        return lina_set_error(LINA_EINVAL, "%s: feature_map \"%s\" is not implemented yet", mt, c->feature_map);
    }
    if (!ret && !c->elementwise_affine) {
        return lina_set_error(LINA_EINVAL, "%s: elementwise_affine = false is not implemented yet", mt);
    }
    ly->kind = MIX_GLA;
    ly->gla.D = D;
    ly->gla.H = H;
    ly->gla.K = kd / H;
    ly->gla.V = vd / H;
    ly->gla.output_gate = c->use_output_gate ? 1 : 0;
    ly->gla.norm_eps = (float)c->norm_eps;
    ly->gla.has_clamp_min = c->has_clamp_min;
    ly->gla.clamp_min = (float)c->clamp_min;
    ly->gla.retention = ret;
    ly->gla.num_kv_heads = H / G;
    ly->gla.use_short_conv = c->use_short_conv ? 1 : 0;
    ly->gla.conv_size = c->conv_size;
    if ((kd / H) % 2 != 0 && ret) {
        return lina_set_error(LINA_EINVAL, "retnet: the key head dim %d must be even (RoPE)", kd / H);
    }
    char nm[MODEL_NAME_MAX];
    const char *pre = "model.layers";
#define T2(slot, suffix, a, b, decay, init)                                    \
    do {                                                                       \
        snprintf(nm, sizeof(nm), "%s.%d.attn.%s", pre, l, suffix);             \
        if ((ly->mix[slot] = add_tensor(m, nm, 2, a, b, 0, decay, init)) < 0) { \
            return LINA_ENOMEM;                                                \
        }                                                                      \
    } while (0)
#define T1(slot, suffix, a, decay, init)                                       \
    do {                                                                       \
        snprintf(nm, sizeof(nm), "%s.%d.attn.%s", pre, l, suffix);             \
        if ((ly->mix[slot] = add_tensor(m, nm, 1, a, 0, 0, decay, init)) < 0) { \
            return LINA_ENOMEM;                                                \
        }                                                                      \
    } while (0)
    T2(GLA_Q, "q_proj.weight", kd, D, 1, INIT_NORMAL);
    T2(GLA_K, "k_proj.weight", kd / G, D, 1, INIT_NORMAL);
    T2(GLA_V, "v_proj.weight", vd / G, D, 1, INIT_NORMAL);
    if (ly->gla.output_gate) {
        T2(GLA_G, "g_proj.weight", vd, D, 1, INIT_NORMAL);
    }
    if (ly->gla.use_short_conv) {
        int64_t W = c->conv_size;
        const char *cn[3] = {"q_conv1d.weight", "k_conv1d.weight", "v_conv1d.weight"};
        int64_t ch[3] = {kd, kd / G, vd / G};
        for (int j = 0; j < 3; j++) {
            snprintf(nm, sizeof(nm), "%s.%d.attn.%s", pre, l, cn[j]);
            if ((ly->mix[GLA_QC + j] = add_tensor(m, nm, 3, ch[j], 1, W, 1, INIT_NORMAL)) < 0) {
                return LINA_ENOMEM;
            }
        }
    }
    if (!ret) {
        T2(GLA_GK0, "gk_proj.0.weight", LINA_GLA_GATE_RANK, D, 1, INIT_NORMAL);
        T2(GLA_GK1, "gk_proj.1.weight", kd / G, LINA_GLA_GATE_RANK, 1, INIT_NORMAL);
        T1(GLA_GK1B, "gk_proj.1.bias", kd / G, 0, INIT_ZEROS);
    }
    T1(GLA_NORM, ly->gla.output_gate ? "g_norm_swish_gate.weight" : "g_norm.weight", vd / H, 0, INIT_ONES);
    T2(GLA_O, "o_proj.weight", D, vd, 1, INIT_NORMAL);
#undef T1
#undef T2
    ly->mix_acts = 0;
    return LINA_OK;
}

static int build_gdn_layer(lina_model *m, int l, model_layer *ly)
{
    const lina_config *c = &m->cfg;
    int gated = c->model_type == LINA_MODEL_GATED_DELTANET;
    int D = m->D, H = c->num_heads, W = c->conv_size;
    int K = gated ? c->head_dim : (int)(D * c->expand_k) / H;
    int V = gated ? (int)(c->head_dim * c->expand_v) : (int)(D * c->expand_v) / H;
    int NV = gated && c->num_v_heads > 0 ? c->num_v_heads : H; /* value heads (GVA) */
    if (!gated && (strcmp(c->qk_activation, "silu") != 0 || strcmp(c->qk_norm, "l2") != 0)) {
        return lina_set_error(LINA_EINVAL, "delta_net: qk_activation \"%s\" / qk_norm \"%s\" is not implemented yet "
                              "(silu / l2 are)", c->qk_activation, c->qk_norm);
    }
    ly->kind = MIX_GDN;
    ly->gdn.D = D;
    ly->gdn.H = H;
    ly->gdn.K = K;
    ly->gdn.V = V;
    ly->gdn.use_gate = c->use_gate ? 1 : 0;
    ly->gdn.use_short_conv = c->use_short_conv ? 1 : 0;
    ly->gdn.conv_size = W;
    ly->gdn.allow_neg_eigval = c->allow_neg_eigval ? 1 : 0;
    ly->gdn.norm_eps = (float)c->norm_eps;
    ly->gdn.gated = gated;
    ly->gdn.use_beta = gated || c->use_beta ? 1 : 0;
    ly->gdn.num_v_heads = NV;
    int HK = H * K, HV = NV * V;
    struct {
        int slot;
        const char *suffix;
        int nd;
        int64_t a, b, c;
        int decay;
        tensor_init init;
        int on;
    } t[] = {
        {GDN_Q, "q_proj.weight", 2, HK, D, 0, 1, INIT_NORMAL, 1},
        {GDN_K, "k_proj.weight", 2, HK, D, 0, 1, INIT_NORMAL, 1},
        {GDN_V, "v_proj.weight", 2, HV, D, 0, 1, INIT_NORMAL, 1},
        {GDN_A, "a_proj.weight", 2, NV, D, 0, 1, INIT_NORMAL, gated},
        {GDN_B, "b_proj.weight", 2, NV, D, 0, 1, INIT_NORMAL, ly->gdn.use_beta},
        {GDN_ALOG, "A_log", 1, NV, 0, 0, 0, INIT_A_LOG, gated},
        {GDN_DT, "dt_bias", 1, NV, 0, 0, 0, INIT_DT_BIAS, gated},
        {GDN_QC, "q_conv1d.weight", 3, HK, 1, W, 1, INIT_NORMAL, ly->gdn.use_short_conv},
        {GDN_KC, "k_conv1d.weight", 3, HK, 1, W, 1, INIT_NORMAL, ly->gdn.use_short_conv},
        {GDN_VC, "v_conv1d.weight", 3, HV, 1, W, 1, INIT_NORMAL, ly->gdn.use_short_conv},
        {GDN_G, "g_proj.weight", 2, HV, D, 0, 1, INIT_NORMAL, ly->gdn.use_gate},
        {GDN_NORM, "o_norm.weight", 1, V, 0, 0, 0, INIT_ONES, 1},
        {GDN_O, "o_proj.weight", 2, D, HV, 0, 1, INIT_NORMAL, 1},
    };
    char nm[MODEL_NAME_MAX];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (!t[i].on) {
            continue;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, t[i].suffix);
        ly->mix[t[i].slot] = add_tensor(m, nm, t[i].nd, t[i].a, t[i].b, t[i].c, t[i].decay, t[i].init);
        if (ly->mix[t[i].slot] < 0) {
            return LINA_ENOMEM;
        }
    }
    return LINA_OK;
}

/* softmax attention: the transformer's layers, or a hybrid's "attn" layers */
static int build_attn_layer(lina_model *m, int l, model_layer *ly)
{
    const lina_config *c = &m->cfg;
    int D = m->D;
    lina_attn_dims *a = &ly->att;
    if (c->model_type == LINA_MODEL_TRANSFORMER) {
        a->H = c->num_heads;
        a->Hkv = c->num_kv_heads ? c->num_kv_heads : c->num_heads;
        a->qkv_bias = c->qkv_bias ? 1 : 0;
        a->qk_norm = c->qk_norm[0] ? 1 : 0;
        a->window = c->window_size;
        a->rope_theta = c->rope_theta > 0.0 ? c->rope_theta : 10000.0;
    } else {
        a->H = c->attn.num_heads;
        a->Hkv = c->attn.num_kv_heads ? c->attn.num_kv_heads : c->attn.num_heads;
        a->qkv_bias = c->attn.qkv_bias ? 1 : 0;
        a->qk_norm = 0;
        a->window = c->attn.window_size;
        a->rope_theta = c->attn.rope_theta > 0.0 ? c->attn.rope_theta : 10000.0;
    }
    a->D = D;
    a->d = a->H > 0 ? D / a->H : 0;
    int rc = lina_attn_check_dims(a);
    if (rc) {
        return rc;
    }
    ly->kind = MIX_ATTN;
    int HQ = a->H * a->d, HKV = a->Hkv * a->d;
    struct {
        int slot;
        const char *suffix;
        int nd;
        int64_t s0, s1;
        int decay;
        tensor_init init;
        int on;
    } t[] = {
        {ATT_Q, "q_proj.weight", 2, HQ, D, 1, INIT_NORMAL, 1},
        {ATT_QB, "q_proj.bias", 1, HQ, 0, 0, INIT_ZEROS, a->qkv_bias},
        {ATT_K, "k_proj.weight", 2, HKV, D, 1, INIT_NORMAL, 1},
        {ATT_KB, "k_proj.bias", 1, HKV, 0, 0, INIT_ZEROS, a->qkv_bias},
        {ATT_V, "v_proj.weight", 2, HKV, D, 1, INIT_NORMAL, 1},
        {ATT_VB, "v_proj.bias", 1, HKV, 0, 0, INIT_ZEROS, a->qkv_bias},
        {ATT_QN, "q_norm.weight", 1, a->d, 0, 0, INIT_ONES, a->qk_norm},
        {ATT_KN, "k_norm.weight", 1, a->d, 0, 0, INIT_ONES, a->qk_norm},
        {ATT_O, "o_proj.weight", 2, D, HQ, 1, INIT_NORMAL, 1},
    };
    char nm[MODEL_NAME_MAX];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (!t[i].on) {
            continue;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, t[i].suffix);
        ly->mix[t[i].slot] = add_tensor(m, nm, t[i].nd, t[i].s0, t[i].s1, 0, t[i].decay, t[i].init);
        if (ly->mix[t[i].slot] < 0) {
            return LINA_ENOMEM;
        }
    }
    return LINA_OK;
}

static int build_hgrn2_layer(lina_model *m, int l, model_layer *ly)
{
    const lina_config *c = &m->cfg;
    int D = m->D, H = c->num_heads, K = c->expand_ratio;
    if (c->use_short_conv || !c->elementwise_affine) {
        return lina_set_error(LINA_EINVAL, "hgrn2: use_short_conv / elementwise_affine = false are not implemented yet");
    }
    if (H < 1 || K < 1 || D % H != 0 || (c->use_lower_bound && H * K != D)) {
        return lina_set_error(LINA_EINVAL, "hgrn2: num_heads (%d) * expand_ratio (%d) must equal hidden_size (%d)", H,
                              K, D);
    }
    ly->kind = MIX_HGRN2;
    ly->hg.D = D;
    ly->hg.H = H;
    ly->hg.K = K;
    ly->hg.V = D / H;
    ly->hg.norm_eps = (float)c->norm_eps;
    struct {
        int slot;
        const char *suffix;
        int nd;
        int64_t s0, s1;
        int decay;
        tensor_init init;
    } t[] = {
        {HG_Q, "q_proj.weight", 2, H * K, D, 1, INIT_NORMAL},
        {HG_F, "f_proj.weight", 2, H * K, D, 1, INIT_NORMAL},
        {HG_I, "i_proj.weight", 2, D, D, 1, INIT_NORMAL},
        {HG_NORM, "g_norm.weight", 1, D, 0, 0, INIT_ONES},
        {HG_O, "o_proj.weight", 2, D, D, 1, INIT_NORMAL},
    };
    char nm[MODEL_NAME_MAX];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        snprintf(nm, sizeof(nm), "model.layers.%d.attn.%s", l, t[i].suffix);
        ly->mix[t[i].slot] = add_tensor(m, nm, t[i].nd, t[i].s0, t[i].s1, 0, t[i].decay, t[i].init);
        if (ly->mix[t[i].slot] < 0) {
            return LINA_ENOMEM;
        }
    }
    return LINA_OK;
}

static int build(lina_model *m)
{
    const lina_config *c = &m->cfg;
    char nm[MODEL_NAME_MAX];
    int D = m->D, I = m->I;
    int bb = c->model_type == LINA_MODEL_MAMBA2; /* Mamba2's "backbone." names, no MLP */
    if ((m->t_emb = add_tensor(m, bb ? "backbone.embeddings.weight" : "model.embeddings.weight", 2, m->vocab, D, 0,
                               0, INIT_NORMAL)) < 0) {
        return LINA_ENOMEM;
    }
    m->t_lb = -1;
    if (c->model_type == LINA_MODEL_HGRN2 && c->use_lower_bound) {
        /* no weight decay (a bias-like table); FLA initialises it to zeros */
        if ((m->t_lb = add_tensor(m, "model.lower_bounds", 2, m->L, D, 0, 0, INIT_ZEROS)) < 0) {
            return LINA_ENOMEM;
        }
        m->lb_P = xcalloc_aligned((size_t)m->L * D);
        m->lb_lambda = xcalloc_aligned((size_t)m->L * D);
        m->lb_dlambda = xcalloc_aligned((size_t)m->L * D);
        if (!m->lb_P || !m->lb_lambda || !m->lb_dlambda) {
            return LINA_ENOMEM;
        }
    }
    for (int l = 0; l < m->L; l++) {
        model_layer *ly = &m->layers[l];
        for (int s = 0; s < MODEL_MAX_MIX; s++) {
            ly->mix[s] = -1;
        }
        snprintf(nm, sizeof(nm), bb ? "backbone.layers.%d.norm.weight" : "model.layers.%d.attn_norm.weight", l);
        if ((ly->t_attn_norm = add_tensor(m, nm, 1, D, 0, 0, 0, INIT_ONES)) < 0) {
            return LINA_ENOMEM;
        }
        int rc;
        ly->has_mlp = !bb;
        ly->t_mlp_norm = ly->t_gate = ly->t_up = ly->t_down = -1;
        const lina_mixer_vt *vt = lina_mixer_vt_for(c, l);
        if (vt) {
            ly->kind = MIX_EXT;
            if ((rc = build_ext(m, l, vt, bb ? "backbone.layers.%d.mixer." : "model.layers.%d.attn.", &ly->ext))) {
                return rc;
            }
            ly->mix_acts = 0;
        }
        switch (vt ? LINA_MODEL_COUNT : lina_config_is_attn_layer(c, l) ? LINA_MODEL_TRANSFORMER : c->model_type) {
        case LINA_MODEL_COUNT:
            rc = LINA_OK;
            break;
        case LINA_MODEL_TRANSFORMER:
            rc = build_attn_layer(m, l, ly);
            break;
        case LINA_MODEL_GLA:
        case LINA_MODEL_RETNET:
            rc = build_gla_layer(m, l, ly);
            break;
        case LINA_MODEL_GATED_DELTANET:
        case LINA_MODEL_DELTA_NET:
            rc = build_gdn_layer(m, l, ly);
            break;
        case LINA_MODEL_HGRN2:
            rc = build_hgrn2_layer(m, l, ly);
            break;
        default:
            rc = lina_set_error(LINA_EINVAL, "model: model_type \"%s\" is not implemented yet",
                                lina_model_type_name(c->model_type));
            break;
        }
        if (rc) {
            return rc;
        }
        if (!ly->has_mlp) {
            continue;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.mlp_norm.weight", l);
        if ((ly->t_mlp_norm = add_tensor(m, nm, 1, D, 0, 0, 0, INIT_ONES)) < 0) {
            return LINA_ENOMEM;
        }
        const lina_mixer_vt *fvt = lina_ffn_vt_for(c);
        if (fvt) {
            if ((rc = build_ext(m, l, fvt, "model.layers.%d.mlp.", &ly->ffn))) {
                return rc;
            }
            continue;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.mlp.gate_proj.weight", l);
        if ((ly->t_gate = add_tensor(m, nm, 2, I, D, 0, 1, INIT_NORMAL)) < 0) {
            return LINA_ENOMEM;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.mlp.up_proj.weight", l);
        if ((ly->t_up = add_tensor(m, nm, 2, I, D, 0, 1, INIT_NORMAL)) < 0) {
            return LINA_ENOMEM;
        }
        snprintf(nm, sizeof(nm), "model.layers.%d.mlp.down_proj.weight", l);
        if ((ly->t_down = add_tensor(m, nm, 2, D, I, 0, 1, INIT_NORMAL)) < 0) {
            return LINA_ENOMEM;
        }
    }
    if ((m->t_norm = add_tensor(m, bb ? "backbone.norm_f.weight" : "model.norm.weight", 1, D, 0, 0, 0, INIT_ONES)) <
        0) {
        return LINA_ENOMEM;
    }
    if (c->tie_word_embeddings) {
        m->t_lm = m->t_emb;
    } else if ((m->t_lm = add_tensor(m, "lm_head.weight", 2, m->vocab, D, 0, 1, INIT_NORMAL)) < 0) {
        return LINA_ENOMEM;
    }
    return LINA_OK;
}

static void init_params(lina_model *m, uint64_t seed)
{
    model_rng r = {seed ^ 0x6c696e61u, 0, 0.0};
    double sd = m->cfg.initializer_range > 0.0 ? m->cfg.initializer_range : 0.02;
    for (int i = 0; i < m->ntensors; i++) {
        const model_tensor *t = &m->tensors[i];
        float *p = m->params + t->off;
        for (size_t j = 0; j < t->numel; j++) {
            double u = (double)(rng_next(&r) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
            switch (t->init) {
            case INIT_NORMAL:
                p[j] = (float)(sd * rng_normal(&r));
                break;
            case INIT_ONES:
                p[j] = 1.0f;
                break;
            case INIT_ZEROS:
                p[j] = 0.0f;
                break;
            case INIT_A_LOG:
                p[j] = (float)log(16.0 * (1.0 - u)); /* A in (0, 16] */
                break;
            case INIT_DT_BIAS: {
                int m2 = m->cfg.model_type == LINA_MODEL_MAMBA2;
                double lo = m2 ? m->cfg.dt_min : 1e-3, hi = m2 ? m->cfg.dt_max : 0.1;
                double fl = m2 ? m->cfg.dt_init_floor : 1e-4;
                double dt = exp(log(lo) + u * (log(hi) - log(lo)));
                dt = dt < fl ? fl : dt;
                p[j] = (float)(dt + log(-expm1(-dt)));
                break;
            }
            case LINA_INIT_LINSPACE_3_6:
                p[j] = t->numel > 1 ? (float)(3.0 + 3.0 * (double)j / (double)(t->numel - 1)) : 3.0f;
                break;
            case LINA_INIT_MINUS_10:
                p[j] = -10.0f;
                break;
            case LINA_INIT_A_LOG_1_16:
                p[j] = (float)log(1.0 + 15.0 * u); /* A in [1, 16) */
                break;
            case LINA_INIT_EYE: {
                int64_t d = t->ndim >= 2 ? t->shape[t->ndim - 1] : 1;
                size_t col = j % (size_t)d, row = (j / (size_t)d) % (size_t)d;
                p[j] = row == col ? 1.0f : 0.0f;
                break;
            }
            }
        }
    }
}

/* Bytes of memory the machine has (0: unknown). */
static double phys_mem_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (double)pages * (double)psz : 0.0;
}

/* Refuse an allocation of `floats` floats (LINA_SZ_OVF: the count overflowed)
 * that could never succeed: more than size_t holds, or more than the
 * machine's memory (it would be overcommitted and then killed on first touch). */
static int check_floats(size_t floats, const char *what)
{
    size_t bytes = lina_szmul(floats, sizeof(float));
    if (bytes == LINA_SZ_OVF) {
        return lina_set_error(LINA_ENOMEM, "model: the size of the %s overflows (the config is far too large)", what);
    }
    double mem = phys_mem_bytes();
    if (mem > 0.0 && (double)bytes > mem) {
        return lina_set_error(LINA_ENOMEM, "model: %.1f GiB needed for the %s, more than this machine's %.1f GiB of "
                              "memory", (double)bytes / 1073741824.0, what, mem / 1073741824.0);
    }
    return LINA_OK;
}

/* The model's tensor table from a validated config, without the parameter
 * buffers (model_alloc): a checkpoint's shapes are checked against the table
 * before anything the size of the model is allocated. */
static int model_build(const lina_config *cfg, lina_model **out)
{
    if (!cfg || !out) {
        return lina_set_error(LINA_EINVAL, "model: NULL argument");
    }
    *out = NULL;
    int rc = lina_config_validate(cfg, "model config");
    if (rc) {
        return rc;
    }
    lina_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    m->cfg = *cfg;
    m->L = cfg->num_hidden_layers;
    m->D = cfg->hidden_size;
    m->vocab = cfg->vocab_size;
    m->I = lina_config_mlp_size(cfg);
    m->layers = calloc((size_t)m->L, sizeof(*m->layers));
    m->acts = calloc((size_t)m->L, sizeof(*m->acts));
    if (!m->layers || !m->acts) {
        lina_model_free(m);
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    rc = build(m);
    if (rc) {
        lina_model_free(m);
        return rc == LINA_ENOMEM ? lina_set_error(LINA_ENOMEM, "model: out of memory") : rc;
    }
    *out = m;
    return LINA_OK;
}

/* The parameter and gradient buffers of a built model, initialised from seed. */
static int model_alloc(lina_model *m, uint64_t seed)
{
    int rc = check_floats(lina_szmul(m->nparams, 2), "parameters and gradients");
    if (rc) {
        return rc;
    }
    m->params = xcalloc_aligned(m->nparams);
    m->grads = xcalloc_aligned(m->nparams);
    if (!m->params || !m->grads) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory (%zu parameters)", m->nparams);
    }
    init_params(m, seed);
    return LINA_OK;
}

int lina_model_create(const lina_config *cfg, uint64_t seed, lina_model **out)
{
    if (!out) {
        return lina_set_error(LINA_EINVAL, "model: NULL argument");
    }
    *out = NULL;
    lina_model *m = NULL;
    int rc = model_build(cfg, &m);
    rc = rc ? rc : model_alloc(m, seed);
    if (rc) {
        lina_model_free(m);
        return rc;
    }
    *out = m;
    return LINA_OK;
}

void lina_model_free(lina_model *m)
{
    if (!m) {
        return;
    }
    free(m->tensors);
    for (int l = 0; m->layers && l < m->L; l++) {
        free(m->layers[l].ext);
        free(m->layers[l].ffn);
    }
    free(m->layers);
    free(m->acts);
    free(m->params);
    free(m->grads);
    free(m->arena);
    free(m->lb_P);
    free(m->lb_lambda);
    free(m->lb_dlambda);
    free(m);
}

const lina_config *lina_model_config(const lina_model *m)
{
    return m ? &m->cfg : NULL;
}

size_t lina_model_num_params(const lina_model *m)
{
    return m ? m->nparams : 0;
}

float *lina_model_params(lina_model *m)
{
    return m ? m->params : NULL;
}

float *lina_model_grads(lina_model *m)
{
    return m ? m->grads : NULL;
}

void lina_model_zero_grad(lina_model *m)
{
    if (m) {
        memset(m->grads, 0, m->nparams * sizeof(float));
    }
}

int lina_model_num_tensors(const lina_model *m)
{
    return m ? m->ntensors : 0;
}

int lina_model_tensor(const lina_model *m, int i, const char **name, int *ndim, const int64_t **shape,
                      size_t *offset, int *decay)
{
    if (!m || i < 0 || i >= m->ntensors) {
        return lina_set_error(LINA_EINVAL, "model: tensor index %d out of range", i);
    }
    const model_tensor *t = &m->tensors[i];
    if (name) {
        *name = t->name;
    }
    if (ndim) {
        *ndim = t->ndim;
    }
    if (shape) {
        *shape = t->shape;
    }
    if (offset) {
        *offset = t->off;
    }
    if (decay) {
        *decay = t->decay;
    }
    return LINA_OK;
}

int lina_model_find_tensor(const lina_model *m, const char *name)
{
    for (int i = 0; m && name && i < m->ntensors; i++) {
        if (strcmp(m->tensors[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

/* ================================================================ activations */

static size_t layer_mix_floats(const model_layer *ly, int N)
{
    switch (ly->kind) {
    case MIX_GLA:
        return lina_gla_acts_floats(&ly->gla, N);
    case MIX_GDN:
        return lina_gdn_acts_floats(&ly->gdn, N);
    case MIX_ATTN:
        return lina_attn_acts_floats(&ly->att, N);
    case MIX_HGRN2:
        return lina_hgrn2_acts_floats(&ly->hg, N);
    case MIX_EXT:
        return ly->ext->vt->acts_floats(ly->ext->dims, N);
    }
    return 0;
}

static size_t layer_ffn_floats(const model_layer *ly, int N, int I)
{
    if (!ly->has_mlp) {
        return 0;
    }
    return ly->ffn ? ly->ffn->vt->acts_floats(ly->ffn->dims, N) : 3 * (size_t)N * I;
}

static size_t layer_scratch_floats(const model_layer *ly, int N)
{
    switch (ly->kind) {
    case MIX_GLA:
        return lina_gla_scratch_floats(&ly->gla, N);
    case MIX_GDN:
        return lina_gdn_scratch_floats(&ly->gdn, N);
    case MIX_ATTN:
        return lina_attn_scratch_floats(&ly->att, N);
    case MIX_HGRN2:
        return lina_hgrn2_scratch_floats(&ly->hg, N);
    case MIX_EXT: {
        size_t s = ly->ext->vt->scratch_floats(ly->ext->dims, N);
        size_t f = ly->ffn ? ly->ffn->vt->scratch_floats(ly->ffn->dims, N) : 0;
        return s > f ? s : f;
    }
    }
    return 0;
}

/* size (and carve) the arena for N rows */
static int ensure_acts(lina_model *m, int N)
{
    if (N <= m->cap_rows && m->arena) {
        return LINA_OK;
    }
    size_t n = (size_t)N, D = (size_t)m->D, I = (size_t)m->I, V = (size_t)m->vocab;
    size_t nD = lina_szmul(n, D);
    size_t per_layer_fixed = lina_szadd(lina_szmul(4, nD), lina_szmul(2, n));
    size_t total = 0, scr = 0;
    for (int l = 0; l < m->L; l++) {
        const model_layer *ly = &m->layers[l];
        total = lina_szadd(total, lina_szadd(per_layer_fixed, lina_szadd(layer_mix_floats(ly, N),
                                                                            layer_ffn_floats(ly, N, (int)I))));
        size_t s = layer_scratch_floats(ly, N);
        scr = s > scr ? s : scr;
        s = ly->ffn ? ly->ffn->vt->scratch_floats(ly->ffn->dims, N) : 0;
        scr = s > scr ? s : scr;
    }
    /* xL, xnf, rstdf, logits, lse, tmp, dres, scratch */
    total = lina_szadd(total, lina_szadd(lina_szmul(4, nD), lina_szadd(lina_szmul(2, n), lina_szmul(n, V))));
    total = lina_szadd(total, scr);
    char what[64];
    snprintf(what, sizeof what, "activations for %d rows", N);
    int rc = check_floats(total, what);
    if (rc) {
        return rc;
    }
    float *a = xcalloc_aligned(total);
    if (!a) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory (activations for %d rows)", N);
    }
    free(m->arena);
    m->arena = a;
    m->arena_floats = total;
    m->cap_rows = N;
    float *p = a;
    for (int l = 0; l < m->L; l++) {
        layer_acts *la = &m->acts[l];
        la->x = p;     p += n * D;
        la->xn1 = p;   p += n * D;
        la->rstd1 = p; p += n;
        la->h = p;     p += n * D;
        la->xn2 = p;   p += n * D;
        la->rstd2 = p; p += n;
        const model_layer *ly = &m->layers[l];
        la->gate = la->up = la->hh = la->ffn = NULL;
        if (ly->has_mlp && !ly->ffn) {
            la->gate = p;  p += n * I;
            la->up = p;    p += n * I;
            la->hh = p;    p += n * I;
        } else if (ly->ffn) {
            la->ffn = p;   p += layer_ffn_floats(ly, N, (int)I);
        }
        la->mix = p;   p += layer_mix_floats(ly, N);
    }
    m->xL = p;      p += n * D;
    m->xnf = p;     p += n * D;
    m->rstdf = p;   p += n;
    m->logits = p;  p += n * V;
    m->lse = p;     p += n;
    m->tmp = p;     p += n * D;
    m->dres = p;    p += n * D;
    m->scratch = p;
    return LINA_OK;
}

/* ================================================================ forward / backward */

static int check_bt(const lina_model *m, const int32_t *tokens, int B, int T)
{
    if (!m || !tokens || B < 1 || T < 1 || (int64_t)B * T > INT32_MAX / 4) {
        return lina_set_error(LINA_EINVAL, "model: bad arguments (B = %d, T = %d)", B, T);
    }
    return LINA_OK;
}

/* Inference state: per layer, GLA [B,H,K,V]; Gated DeltaNet its cache
 * (conv tails + state); attention K and V caches [B,Hkv,cap,d] each. */
struct lina_model_state {
    const lina_model *m;
    int B, cap;
    int64_t pos;
    float **layer;      /* [L] */
    size_t *floats;     /* [L] */
};

static size_t state_floats(const model_layer *ly, int B, int cap)
{
    switch (ly->kind) {
    case MIX_GLA:
        return lina_szadd(lina_szmul3((size_t)B, (size_t)ly->gla.H * ly->gla.K, (size_t)ly->gla.V),
                          lina_gla_conv_cache_floats(&ly->gla, B));
    case MIX_GDN:
        return lina_gdn_cache_floats(&ly->gdn, B);
    case MIX_ATTN:
        return lina_szmul3(2 * (size_t)B, (size_t)ly->att.Hkv * ly->att.d, (size_t)cap);
    case MIX_HGRN2:
        return lina_szmul3((size_t)B, (size_t)ly->hg.H * ly->hg.K, (size_t)ly->hg.V);
    case MIX_EXT:
        return ly->ext->vt->state_floats(ly->ext->dims, B);
    }
    return 0;
}

int lina_model_state_create(const lina_model *m, int B, int max_len, lina_model_state **out)
{
    if (!m || !out || B < 1 || max_len < 0) {
        return lina_set_error(LINA_EINVAL, "model state: bad arguments");
    }
    *out = NULL;
    lina_model_state *s = calloc(1, sizeof(*s));
    int rc = LINA_OK;
    if (!s || !(s->layer = calloc((size_t)m->L, sizeof(float *))) ||
        !(s->floats = calloc((size_t)m->L, sizeof(size_t)))) {
        rc = LINA_ENOMEM;
    }
    size_t total = 0;
    for (int l = 0; !rc && l < m->L; l++) {
        s->floats[l] = state_floats(&m->layers[l], B, max_len);
        total = lina_szadd(total, s->floats[l]);
    }
    if (!rc && check_floats(total, "decode state") != LINA_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", lina_last_error());
        s->m = m;
        lina_model_state_free(s);
        return lina_set_error(LINA_ENOMEM, "%s (batch %d, length %d)", msg, B, max_len);
    }
    for (int l = 0; !rc && l < m->L; l++) {
        if (!(s->layer[l] = xcalloc_aligned(s->floats[l]))) {
            rc = LINA_ENOMEM;
        }
    }
    if (rc) {
        if (s) {
            s->m = m;
            lina_model_state_free(s);
        }
        return lina_set_error(LINA_ENOMEM, "model state: out of memory");
    }
    s->m = m;
    s->B = B;
    s->cap = max_len;
    *out = s;
    return LINA_OK;
}

void lina_model_state_free(lina_model_state *s)
{
    if (!s) {
        return;
    }
    for (int l = 0; s->layer && l < s->m->L; l++) {
        free(s->layer[l]);
    }
    free(s->layer);
    free(s->floats);
    free(s);
}

void lina_model_state_reset(lina_model_state *s)
{
    if (!s) {
        return;
    }
    for (int l = 0; l < s->m->L; l++) {
        memset(s->layer[l], 0, s->floats[l] * sizeof(float));
    }
    s->pos = 0;
}

int64_t lina_model_state_pos(const lina_model_state *s)
{
    return s ? s->pos : 0;
}

size_t lina_model_state_layer_floats(const lina_model_state *s, int layer)
{
    return s && layer >= 0 && layer < s->m->L ? s->floats[layer] : 0;
}

/* logits [N, vocab] into m->logits; activations kept for backward. With a
 * state st: start from it and leave the new state in it (inference). */
static int model_forward(lina_model *m, const int32_t *tokens, int B, int T, lina_form form,
                         lina_model_state *st, lina_ws *ws)
{
    int rc = check_bt(m, tokens, B, T);
    if (rc || (rc = ensure_acts(m, B * T))) {
        return rc;
    }
    int N = B * T, D = m->D, I = m->I;
    float eps = (float)m->cfg.norm_eps;
    float *P = m->params;
    size_t nd = (size_t)N * D;
    /* hgrn2 lower bounds: P = softmax over layers of Lambda [L,D]; lambda_l = sum_{j=1..l} P_j */
    if (m->t_lb >= 0) {
        const float *Lb = tp(m, P, m->t_lb);
        for (int i = 0; i < D; i++) {
            double mx = -INFINITY, se = 0.0, cum = 0.0;
            for (int l = 0; l < m->L; l++) {
                mx = Lb[(size_t)l * D + i] > mx ? Lb[(size_t)l * D + i] : mx;
            }
            for (int l = 0; l < m->L; l++) {
                se += exp(Lb[(size_t)l * D + i] - mx);
            }
            for (int l = 0; l < m->L; l++) {
                double pl = exp(Lb[(size_t)l * D + i] - mx) / se;
                m->lb_P[(size_t)l * D + i] = (float)pl;
                cum += l > 0 ? pl : 0.0;
                m->lb_lambda[(size_t)l * D + i] = (float)cum;
            }
        }
    }
    m->aux = 0.0;
    /* x_0 [N,D] */
    float *x0 = m->L > 0 ? m->acts[0].x : m->xL;
    if ((rc = lina_embedding_forward(x0, tokens, tp(m, P, m->t_emb), N, D, m->vocab))) {
        return rc;
    }
    for (int l = 0; l < m->L; l++) {
        const model_layer *ly = &m->layers[l];
        layer_acts *la = &m->acts[l];
        float *xnext = l + 1 < m->L ? m->acts[l + 1].x : m->xL; /* [N,D] */
        lina_rmsnorm_forward(la->xn1, la->rstd1, la->x, tp(m, P, ly->t_attn_norm), NULL, N, D, eps);
        switch (ly->kind) {
        case MIX_GLA: {
            lina_gla_params p;
            lina_gla_acts a;
            gla_views(m, ly, P, &p);
            lina_gla_acts_carve(&a, la->mix, &ly->gla, N);
            /* state [B,H,K,V], then the conv tails */
            size_t ns = (size_t)B * ly->gla.H * ly->gla.K * ly->gla.V;
            float *hs = st ? st->layer[l] : NULL; /* updated in place (lina_dd_fwd allows ht == h0) */
            rc = lina_gla_forward_cached(m->tmp, &a, la->xn1, &ly->gla, &p, B, T, hs, hs,
                                         st && ly->gla.use_short_conv ? st->layer[l] + ns : NULL, st ? st->pos : 0,
                                         form, ws);
            break;
        }
        case MIX_GDN: {
            lina_gdn_params p;
            lina_gdn_acts a;
            gdn_views(m, ly, P, &p);
            lina_gdn_acts_carve(&a, la->mix, &ly->gdn, N);
            rc = lina_gdn_forward(m->tmp, &a, la->xn1, &ly->gdn, &p, B, T, st ? st->layer[l] : NULL, form, ws);
            break;
        }
        case MIX_HGRN2: {
            lina_hgrn2_params p;
            lina_hgrn2_acts a;
            hgrn2_views(m, ly, P, &p);
            lina_hgrn2_acts_carve(&a, la->mix, &ly->hg, N);
            const float *lam = m->t_lb >= 0 && l > 0 ? m->lb_lambda + (size_t)l * D : NULL;
            float *hs = st ? st->layer[l] : NULL; /* updated in place */
            rc = lina_hgrn2_forward(m->tmp, &a, la->xn1, &ly->hg, &p, lam, B, T, hs, hs, form, ws);
            break;
        }
        case MIX_EXT:
            rc = ext_run(m, ly->ext, P, NULL, B, T, la->xn1, m->tmp, NULL, la->mix, NULL, st ? st->layer[l] : NULL,
                         st ? st->pos : 0, &m->aux, form, ws);
            break;
        case MIX_ATTN: {
            lina_attn_params p;
            lina_attn_acts a;
            attn_views(m, ly, P, &p);
            lina_attn_acts_carve(&a, la->mix, &ly->att, N);
            if (st) {
                float *kc = st->layer[l], *vc = kc + st->floats[l] / 2;
                rc = lina_attn_forward_cached(m->tmp, &a, la->xn1, &ly->att, &p, B, T, kc, vc, (int)st->pos, st->cap);
            } else {
                rc = lina_attn_forward(m->tmp, &a, la->xn1, &ly->att, &p, B, T, ws);
            }
            break;
        }
        }
        if (rc) {
            return rc;
        }
        for (size_t i = 0; i < nd; i++) {
            la->h[i] = la->x[i] + m->tmp[i];
        }
        if (!ly->has_mlp) {
            memcpy(xnext, la->h, nd * sizeof(float));
            continue;
        }
        lina_rmsnorm_forward(la->xn2, la->rstd2, la->h, tp(m, P, ly->t_mlp_norm), NULL, N, D, eps);
        if (ly->ffn) {
            if ((rc = ext_run(m, ly->ffn, P, NULL, B, T, la->xn2, m->tmp, NULL, la->ffn, NULL, NULL, 0, &m->aux, form,
                              ws))) {
                return rc;
            }
        } else {
            lina_gated_mlp_forward(m->tmp, la->gate, la->up, la->hh, la->xn2, tp(m, P, ly->t_gate),
                                   tp(m, P, ly->t_up), tp(m, P, ly->t_down), N, D, I);
        }
        for (size_t i = 0; i < nd; i++) {
            xnext[i] = la->h[i] + m->tmp[i];
        }
    }
    lina_rmsnorm_forward(m->xnf, m->rstdf, m->xL, tp(m, P, m->t_norm), NULL, N, D, eps);
    lina_linear_forward(m->logits, m->xnf, tp(m, P, m->t_lm), NULL, N, D, m->vocab);
    return LINA_OK;
}

/* backward from dlogits (in m->logits) into m->grads */
static int model_backward(lina_model *m, const int32_t *tokens, int B, int T, lina_form form, lina_ws *ws)
{
    int N = B * T, D = m->D, I = m->I, rc = LINA_OK;
    float *P = m->params, *G = m->grads;
    size_t nd = (size_t)N * D;
    if (m->t_lb >= 0) {
        memset(m->lb_dlambda, 0, (size_t)m->L * D * sizeof(float));
    }
    /* lm_head: dxnf [N,D] (in tmp) */
    memset(m->tmp, 0, nd * sizeof(float));
    lina_linear_backward(m->tmp, tp(m, G, m->t_lm), NULL, m->logits, m->xnf, tp(m, P, m->t_lm), N, D, m->vocab);
    /* final norm: dres = d x_L */
    memset(m->dres, 0, nd * sizeof(float));
    lina_rmsnorm_backward(m->dres, tp(m, G, m->t_norm), NULL, m->tmp, m->xL, tp(m, P, m->t_norm), m->rstdf, N, D);
    for (int l = m->L - 1; l >= 0; l--) {
        const model_layer *ly = &m->layers[l];
        layer_acts *la = &m->acts[l];
        /* MLP branch: dres is d x_{l+1}; afterwards d h_l */
        if (ly->has_mlp) {
            memset(m->tmp, 0, nd * sizeof(float));
            if (ly->ffn) {
                rc = ext_run(m, ly->ffn, P, G, B, T, la->xn2, m->tmp, m->dres, la->ffn, m->scratch, NULL, 0, NULL,
                             form, ws);
            } else {
                rc = lina_gated_mlp_backward(m->tmp, tp(m, G, ly->t_gate), tp(m, G, ly->t_up), tp(m, G, ly->t_down),
                                             m->dres, la->xn2, la->gate, la->up, la->hh, tp(m, P, ly->t_gate),
                                             tp(m, P, ly->t_up), tp(m, P, ly->t_down), N, D, I, ws);
            }
            if (rc) {
                return rc;
            }
            lina_rmsnorm_backward(m->dres, tp(m, G, ly->t_mlp_norm), NULL, m->tmp, la->h, tp(m, P, ly->t_mlp_norm),
                                  la->rstd2, N, D);
        }
        /* mixer branch: afterwards d x_l */
        memset(m->tmp, 0, nd * sizeof(float));
        switch (ly->kind) {
        case MIX_GLA: {
            lina_gla_params p, gp;
            lina_gla_acts a;
            gla_views(m, ly, P, &p);
            gla_views(m, ly, G, &gp);
            lina_gla_acts_carve(&a, la->mix, &ly->gla, N);
            rc = lina_gla_backward(m->tmp, &gp, m->dres, la->xn1, &a, &ly->gla, &p, B, T, NULL, m->scratch, form,
                                   ws);
            break;
        }
        case MIX_GDN: {
            lina_gdn_params p, gp;
            lina_gdn_acts a;
            gdn_views(m, ly, P, &p);
            gdn_views(m, ly, G, &gp);
            lina_gdn_acts_carve(&a, la->mix, &ly->gdn, N);
            rc = lina_gdn_backward(m->tmp, &gp, m->dres, la->xn1, &a, &ly->gdn, &p, B, T, m->scratch, form, ws);
            break;
        }
        case MIX_HGRN2: {
            lina_hgrn2_params p, gp;
            lina_hgrn2_acts a;
            hgrn2_views(m, ly, P, &p);
            hgrn2_views(m, ly, G, &gp);
            lina_hgrn2_acts_carve(&a, la->mix, &ly->hg, N);
            int lb = m->t_lb >= 0 && l > 0;
            rc = lina_hgrn2_backward(m->tmp, &gp, lb ? m->lb_dlambda + (size_t)l * D : NULL, m->dres, la->xn1, &a,
                                     &ly->hg, &p, lb ? m->lb_lambda + (size_t)l * D : NULL, B, T, m->scratch, form,
                                     ws);
            break;
        }
        case MIX_EXT:
            rc = ext_run(m, ly->ext, P, G, B, T, la->xn1, m->tmp, m->dres, la->mix, m->scratch, NULL, 0, NULL, form,
                         ws);
            break;
        case MIX_ATTN: {
            lina_attn_params p, gp;
            lina_attn_acts a;
            attn_views(m, ly, P, &p);
            attn_views(m, ly, G, &gp);
            lina_attn_acts_carve(&a, la->mix, &ly->att, N);
            rc = lina_attn_backward(m->tmp, &gp, m->dres, la->xn1, &a, &ly->att, &p, B, T, m->scratch, ws);
            break;
        }
        }
        if (rc) {
            return rc;
        }
        lina_rmsnorm_backward(m->dres, tp(m, G, ly->t_attn_norm), NULL, m->tmp, la->x, tp(m, P, ly->t_attn_norm),
                              la->rstd1, N, D);
    }
    lina_embedding_backward(tp(m, G, m->t_emb), m->dres, tokens, N, D);
    if (m->t_lb >= 0) {
        /* lambda_l = sum_{j=1..l} P_j: dP_j = sum_{l>=j} dlambda_l (j >= 1), dP_0 = 0;
         * softmax over layers: dLambda_j = P_j (dP_j - sum_i P_i dP_i) */
        float *dLb = tp(m, G, m->t_lb);
        for (int i = 0; i < D; i++) {
            double suf = 0.0, dot = 0.0;
            for (int l = m->L - 1; l >= 0; l--) {
                suf += l > 0 ? m->lb_dlambda[(size_t)l * D + i] : 0.0;
                double dP = l > 0 ? suf : 0.0;
                m->lb_dlambda[(size_t)l * D + i] = (float)dP; /* now dP */
                dot += (double)m->lb_P[(size_t)l * D + i] * dP;
            }
            for (int l = 0; l < m->L; l++) {
                size_t j = (size_t)l * D + i;
                dLb[j] += (float)(m->lb_P[j] * (m->lb_dlambda[j] - dot));
            }
        }
    }
    return LINA_OK;
}

static int loss_of(lina_model *m, const int32_t *targets, int N, double *loss, int64_t *count)
{
    if (!targets) {
        return lina_set_error(LINA_EINVAL, "model: targets is NULL");
    }
    return lina_cross_entropy_forward(loss, count, m->lse, m->logits, targets, N, m->vocab);
}

int lina_model_train_step(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, double *loss,
                          lina_ws *ws)
{
    int rc = model_forward(m, tokens, B, T, LINA_FORM_CHUNK, NULL, ws);
    double l = 0.0;
    int64_t count = 0;
    if (rc || (rc = loss_of(m, targets, B * T, &l, &count))) {
        return rc;
    }
    l += m->aux; /* auxiliary (load-balancing) losses of MoM / MoE layers */
    if (loss) {
        *loss = l;
    }
    if (count == 0) {
        return LINA_OK;
    }
    if (!isfinite(l)) {
        return lina_set_error(LINA_ENONFINITE, "model: loss is not finite (%g)", l);
    }
    lina_cross_entropy_backward(m->logits, m->logits, m->lse, targets, B * T, m->vocab, 1.0f, count);
    return model_backward(m, tokens, B, T, LINA_FORM_CHUNK, ws);
}

int lina_model_eval_loss(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, double *loss,
                         lina_ws *ws)
{
    int rc = model_forward(m, tokens, B, T, LINA_FORM_CHUNK, NULL, ws);
    double l = 0.0;
    int64_t count = 0;
    if (rc || (rc = loss_of(m, targets, B * T, &l, &count))) {
        return rc;
    }
    if (loss) {
        *loss = l;
    }
    return LINA_OK;
}

int lina_model_forward_logits_form(lina_model *m, const int32_t *tokens, int B, int T, float *logits,
                                   lina_form form, lina_ws *ws)
{
    if (!logits) {
        return lina_set_error(LINA_EINVAL, "model: logits is NULL");
    }
    int rc = model_forward(m, tokens, B, T, form, NULL, ws);
    if (rc) {
        return rc;
    }
    memcpy(logits, m->logits, (size_t)B * T * m->vocab * sizeof(float));
    return LINA_OK;
}

int lina_model_forward_logits(lina_model *m, const int32_t *tokens, int B, int T, float *logits, lina_ws *ws)
{
    return lina_model_forward_logits_form(m, tokens, B, T, logits, LINA_FORM_CHUNK, ws);
}

int lina_model_decode(lina_model *m, lina_model_state *s, const int32_t *tokens, int B, int T, float *logits,
                      lina_ws *ws)
{
    if (!s || !logits || s->m != m || B != s->B) {
        return lina_set_error(LINA_EINVAL, "model decode: state of another model or batch size (B = %d)", B);
    }
    for (int l = 0; l < m->L; l++) {
        if (m->layers[l].kind == MIX_ATTN && (T < 1 || s->pos + T > s->cap)) {
            return lina_set_error(LINA_EINVAL, "model decode: %lld + %d tokens exceed the KV cache (%d)",
                                  (long long)s->pos, T, s->cap);
        }
    }
    /* A few tokens (one decode step) are too little work to split: each of the
     * many small parallel regions of a step would cost more in fork/join than it
     * saves, and far more when the cores are shared. Run such calls serially. */
#ifdef _OPENMP
    int nthr = omp_get_max_threads();
    int serial = nthr > 1 && (double)B * T * (double)m->nparams < DECODE_SERIAL_WORK;
    if (serial) {
        omp_set_num_threads(1);
    }
#endif
    int rc = model_forward(m, tokens, B, T, T > 1 ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT, s, ws);
#ifdef _OPENMP
    if (serial) {
        omp_set_num_threads(nthr);
    }
#endif
    if (rc) {
        return rc;
    }
    s->pos += T;
    memcpy(logits, m->logits, (size_t)B * T * m->vocab * sizeof(float));
    return LINA_OK;
}

/* ================================================================ save / load */

static char *join_path(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p) {
        snprintf(p, n, "%s/%s", dir, file);
    }
    return p;
}

int lina_model_save(const lina_model *m, const char *dir)
{
    if (!m || !dir || !dir[0]) {
        return lina_set_error(LINA_EINVAL, "model save: NULL argument");
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        return lina_set_error(LINA_EIO, "model save: cannot create directory %s: %s", dir, strerror(errno));
    }
    lina_st_view *v = calloc((size_t)m->ntensors, sizeof(*v));
    char *stp = join_path(dir, "model.safetensors"), *cfp = join_path(dir, "config.json");
    int rc = LINA_OK;
    if (!v || !stp || !cfp) {
        rc = lina_set_error(LINA_ENOMEM, "model save: out of memory");
    } else {
        for (int i = 0; i < m->ntensors; i++) {
            const model_tensor *t = &m->tensors[i];
            v[i].name = t->name;
            v[i].ndim = t->ndim;
            for (int j = 0; j < t->ndim; j++) {
                v[i].shape[j] = t->shape[j];
            }
            v[i].data = m->params + t->off;
        }
        const char *meta[2] = {"format", "pt"};
        rc = lina_st_write(stp, v, m->ntensors, meta, 1, LINA_ST_F32);
        if (!rc) {
            rc = lina_config_write(cfp, &m->cfg);
        }
    }
    free(v);
    free(stp);
    free(cfp);
    return rc;
}

/* the file's index for tensor t: its name, or a legacy name (docs/checkpoints.md 2) */
static int st_index(const lina_st_file *f, const char *name)
{
    int i = lina_st_find(f, name);
    if (i < 0 && strcmp(name, "model.embeddings.weight") == 0) {
        i = lina_st_find(f, "model.embed_tokens.weight");
    }
    return i;
}

/* "[a, b, c]" */
static void shape_str(char *buf, size_t n, int nd, const int64_t *sh)
{
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < nd && k < n; i++) {
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    }
    if (k < n) {
        snprintf(buf + k, n - k, "]");
    }
}

int lina_model_load(const char *dir, lina_model **out)
{
    if (!dir || !out) {
        return lina_set_error(LINA_EINVAL, "model load: NULL argument");
    }
    *out = NULL;
    char *stp = join_path(dir, "model.safetensors"), *cfp = join_path(dir, "config.json");
    lina_config cfg;
    lina_model *m = NULL;
    lina_st_file *f = NULL;
    int rc = (!stp || !cfp) ? lina_set_error(LINA_ENOMEM, "model load: out of memory") : LINA_OK;
    if (!rc) {
        rc = lina_config_read(cfp, &cfg);
    }
    /* the tensor table and the file's header first: every tensor present with
     * the shape the config gives, before the parameters are allocated */
    if (!rc) {
        rc = model_build(&cfg, &m);
    }
    if (!rc) {
        rc = lina_st_open(stp, &f);
    }
    for (int i = 0; !rc && i < m->ntensors; i++) {
        const model_tensor *t = &m->tensors[i];
        int j = st_index(f, t->name);
        if (j < 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: tensor %s is missing", stp, t->name);
            break;
        }
        int64_t sh[LINA_MAX_DIMS];
        int nd = lina_st_shape(f, j, sh);
        int same = nd == t->ndim;
        for (int k = 0; same && k < nd; k++) {
            same = sh[k] == t->shape[k];
        }
        if (!same) {
            char want[128], got[160];
            shape_str(want, sizeof want, t->ndim, t->shape);
            shape_str(got, sizeof got, nd < 0 ? 0 : nd, sh);
            rc = lina_set_error(LINA_EFORMAT, "%s: tensor %s has shape %s, the config (%s) needs %s", stp, t->name,
                                got, cfp, want);
        }
    }
    if (!rc) {
        rc = model_alloc(m, 0);
    }
    for (int i = 0; !rc && i < m->ntensors; i++) {
        const model_tensor *t = &m->tensors[i];
        rc = lina_st_load(f, st_index(f, t->name), m->params + t->off, (int64_t)t->numel);
    }
    lina_st_close(f);
    free(stp);
    free(cfp);
    if (rc) {
        lina_model_free(m);
        return rc;
    }
    *out = m;
    return LINA_OK;
}
