/* model.c -- a causal LM from a lina_config, as flash-linear-attention builds
 * its LMs (docs/mixers.md section 2, docs/checkpoints.md section 2):
 *
 *   x_0 = Emb[tokens]                                       [N, D], N = B*T
 *   for l = 0..L-1:  h_l = x_l + Mixer_l(RMSNorm_attn(x_l))
 *                    x_{l+1} = h_l + FFN_l(RMSNorm_mlp(h_l))
 *   logits = RMSNorm(x_L) W_lm^T                             [N, vocab]
 *
 * The mixer and the feed-forward block of each layer are kinds (src/nn/kind.h)
 * chosen by the registry (kinds.c); this file composes them and knows none by
 * name. Parameters: one contiguous float buffer, carved into views named and
 * shaped as FLA's state dict; the gradient buffer mirrors it. Activations
 * for backward live in one arena owned by the model, sized for the largest
 * B*T seen so far. */
#include "model.h"
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
/* lina_model_decode runs serially below this many token x parameter products
 * (B = 1 decode of a 64M-parameter model; the lm_head and embedding count too) */
#define DECODE_SERIAL_WORK 6.4e7

typedef struct model_tensor {
    char name[MODEL_NAME_MAX];
    int ndim;
    int64_t shape[4];
    size_t off;      /* floats into the parameter buffer */
    size_t numel;
    int decay;
    lina_init init;
    int has_args;
    double args[3];  /* the init's arguments (has_args) */
} model_tensor;

/* a block (mixer, feed-forward, or a kind's shared tensors): its kind,
 * tensor slots and private dims */
typedef struct model_block {
    const lina_mixer_vt *vt;
    int slot[LINA_MIXER_MAX_SLOTS]; /* tensor indices, -1: absent */
    _Alignas(16) unsigned char dims[LINA_MIXER_DIMS_BYTES];
} model_block;

typedef struct model_layer {
    int t_attn_norm, t_mlp_norm; /* tensor indices (t_mlp_norm -1 without feed-forward) */
    model_block *mix;            /* the token mixer */
    model_block *ffn;            /* the feed-forward block, or NULL (LINA_KIND_NO_FFN) */
} model_layer;

/* Per-layer activations (views into the arena) for N rows. */
typedef struct layer_acts {
    float *x;        /* [N, D] layer input (residual stream) */
    float *xn1;      /* [N, D] RMSNorm_attn(x) */
    float *rstd1;    /* [N] */
    float *h;        /* [N, D] x + mixer */
    float *xn2;      /* [N, D] RMSNorm_mlp(h) */
    float *rstd2;    /* [N] */
    float *ffn;      /* feed-forward activations */
    float *mix;      /* mixer activations */
} layer_acts;

static const lina_kind_names fla_names = {
    "model.embeddings.weight",
    "model.layers.%d.attn_norm.weight",
    "model.layers.%d.attn.",
    "model.norm.weight",
    NULL,
};

struct lina_model {
    lina_config cfg;
    int L, D, vocab;
    int ntensors, captensors;
    model_tensor *tensors;
    model_layer *layers;  /* [L] */
    const lina_mixer_vt *kind; /* the model's own kind */
    const lina_kind_names *names;
    model_block *shared;  /* the kind's model-level tensors, or NULL */
    float *shared_work;   /* its work buffer */
    int t_emb, t_norm, t_lm; /* t_lm == t_emb when tied */
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
    float *rstdf;         /* [N] (+ [N] means after it for a LayerNorm) */
    float *carry, *dcarry; /* [N * carry_row] each: what the layers hand on (kind->carry_floats), or NULL */
    size_t carry_row;
    int t_norm_b;         /* the final LayerNorm's bias, or -1 */
    float *logits;        /* [N, vocab] (dlogits in place) */
    float *lse;           /* [N] */
    float *tl;            /* [N] target logits of the training step's loss */
    float *tmp;           /* [N, D] mixer / MLP outputs, input grads */
    float *dres;          /* [N, D] residual gradient */
    float *scratch;       /* layer backward scratch */
    double aux;           /* auxiliary losses of the last forward (MoM, MoE) */
    /* blocks rep_from..rep_to replaced by x_{rep_to+1} = x_{rep_from} rep_map^T (rep_map [D, D]), or none */
    int rep_from, rep_to;
    float *rep_map;
    /* packed documents (the *_varlen calls): while doc_on, each mixer runs once per
     * document of doc_cu (offsets over the N rows, row starts included) */
    int doc_on;
    int64_t *doc_cu, doc_n, doc_cap;
    float *doc_acts;      /* mixer activations of every document, layer after layer */
    size_t doc_floats;
    size_t *doc_off;      /* [L] each layer's start in doc_acts */
    /* rows with their own states (lina_model_decode_rows): while row_st, each mixer runs
     * once per row b on row_st[b] (a B = 1 state) */
    lina_model_state *const *row_st;
    const lina_sp *sp;    /* sequence parallelism in training steps, or NULL */
    int in_train;         /* a training step is running (sp applies) */
    void (*grad_hook)(void *ctx, size_t from); /* training backward: gradients [from, end) are final */
    void *grad_ctx;
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
                      lina_init init)
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

/* ---------------------------------------------------------- blocks */

/* lina_mixer_builder's declare: a tensor of the model */
static int declare_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, int decay, lina_init init,
                          const double *args)
{
    lina_model *m = ctx;
    int t = add_tensor(m, name, ndim, shape[0], shape[1], shape[2], decay, init);
    if (t < 0) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    if (args) {
        m->tensors[t].has_args = 1;
        memcpy(m->tensors[t].args, args, sizeof(m->tensors[t].args));
    }
    return t;
}

static model_block *new_block(lina_model *m, const lina_mixer_vt *vt, lina_mixer_builder *b, const char *prefix_fmt,
                              int l)
{
    model_block *e = calloc(1, sizeof(*e));
    if (!e) {
        return NULL;
    }
    e->vt = vt;
    for (int i = 0; i < LINA_MIXER_MAX_SLOTS; i++) {
        e->slot[i] = -1;
    }
    memset(b, 0, sizeof(*b));
    b->declare = declare_tensor;
    b->ctx = m;
    b->slot = e->slot;
    snprintf(b->prefix, sizeof(b->prefix), prefix_fmt, l);
    return e;
}

/* a layer's block of kind vt, tensors under prefix_fmt (with the layer index) */
static int build_block(lina_model *m, int l, const lina_mixer_vt *vt, const char *prefix_fmt, model_block **out)
{
    lina_mixer_builder b;
    if (!(*out = new_block(m, vt, &b, prefix_fmt, l))) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    return vt->build(&b, &m->cfg, l, (*out)->dims);
}

/* P[slot] / G[slot] views of a block over `base` */
static void block_views(const lina_model *m, const model_block *e, float *base, float **v)
{
    for (int i = 0; i < LINA_MIXER_MAX_SLOTS; i++) {
        v[i] = e->slot[i] < 0 ? NULL : base + m->tensors[e->slot[i]].off;
    }
}

/* Run a block's forward (G == NULL: out = block(x), state / aux as in
 * lina_mixer_call) or backward (G != NULL: dx += d block / d x given dout,
 * gradients into G, the auxiliary loss's gradient with weight 1). */
/* LINA_POISON_SCRATCH=1 (a debugging aid; the test suite runs with it): every layer
 * backward gets its scratch filled with a huge finite value first, so that a layer which
 * reads scratch it has not written (a zeroing pass left out, a "+=" where "=" was meant)
 * gives gradients far off (a finite value: error maxima taken with fmax would skip a NaN)
 * instead of depending on what the previous layer or step left there. */
#define LINA_SCRATCH_POISON (-3.0e29f)
static int scratch_poison(void)
{
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LINA_POISON_SCRATCH");
        on = e && *e && strcmp(e, "0") != 0;
    }
    return on;
}

static int block_run(const lina_model *m, const model_block *e, float *P, float *G, int B, int T, const float *x,
                     float *out_dx, const float *dout, float *acts, float *scratch, const lina_model_state *st,
                     float *state, double *aux, const int64_t *cu, int64_t ncu, lina_form form, lina_ws *ws,
                     size_t row0);

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

/* ================================================================ build */

static int build(lina_model *m)
{
    const lina_config *c = &m->cfg;
    const lina_kind_names *nm = m->names;
    char name[MODEL_NAME_MAX];
    int D = m->D, rc;
    if ((m->t_emb = add_tensor(m, nm->embeddings, 2, m->vocab, D, 0, 0, LINA_INIT_NORMAL)) < 0) {
        return LINA_ENOMEM;
    }
    if (m->kind->shared_build) {
        lina_mixer_builder b;
        size_t work = 0;
        if (!(m->shared = new_block(m, m->kind, &b, "", 0))) {
            return LINA_ENOMEM;
        }
        if ((rc = m->kind->shared_build(&b, c, m->shared->dims, &work))) {
            return rc;
        }
        if (work == 0) {
            free(m->shared);
            m->shared = NULL;
        } else if (!(m->shared_work = xcalloc_aligned(work))) {
            return LINA_ENOMEM;
        }
    }
    const int whole = (m->kind->flags & LINA_KIND_BLOCK) != 0; /* the kind is the whole block */
    for (int l = 0; l < m->L; l++) {
        model_layer *ly = &m->layers[l];
        ly->t_attn_norm = ly->t_mlp_norm = -1;
        if (!whole && snprintf(name, sizeof(name), nm->mixer_norm, l) > 0 &&
            (ly->t_attn_norm = add_tensor(m, name, 1, D, 0, 0, 0, LINA_INIT_ONES)) < 0) {
            return LINA_ENOMEM;
        }
        if ((rc = build_block(m, l, lina_kind_of_layer(c, l), nm->mixer, &ly->mix))) {
            return rc;
        }
        if ((m->kind->flags & (LINA_KIND_NO_FFN | LINA_KIND_BLOCK)) || c->no_mlp) {
            continue;
        }
        snprintf(name, sizeof(name), "model.layers.%d.mlp_norm.weight", l);
        if ((ly->t_mlp_norm = add_tensor(m, name, 1, D, 0, 0, 0, LINA_INIT_ONES)) < 0) {
            return LINA_ENOMEM;
        }
        if ((rc = build_block(m, l, lina_kind_of_ffn(c), "model.layers.%d.mlp.", &ly->ffn))) {
            return rc;
        }
    }
    if ((m->t_norm = add_tensor(m, nm->final_norm, 1, D, 0, 0, 0, LINA_INIT_ONES)) < 0) {
        return LINA_ENOMEM;
    }
    m->t_norm_b = -1;
    if ((m->kind->flags & LINA_KIND_LAYERNORM) && c->norm_bias &&
        (m->t_norm_b = add_tensor(m, nm->final_norm_bias, 1, D, 0, 0, 0, LINA_INIT_ZEROS)) < 0) {
        return LINA_ENOMEM;
    }
    if (m->kind->carry_floats && m->L > 0) {
        m->carry_row = m->kind->carry_floats(m->layers[0].mix->dims, 1);
    }
    if (c->tie_word_embeddings) {
        m->t_lm = m->t_emb;
    } else if ((m->t_lm = add_tensor(m, "lm_head.weight", 2, m->vocab, D, 0, 1, LINA_INIT_NORMAL)) < 0) {
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
            case LINA_INIT_NORMAL:
                p[j] = (float)(sd * rng_normal(&r));
                break;
            case LINA_INIT_ONES:
                p[j] = 1.0f;
                break;
            case LINA_INIT_ZEROS:
                p[j] = 0.0f;
                break;
            case LINA_INIT_A_LOG:
                p[j] = (float)log(16.0 * (1.0 - u)); /* A in (0, 16] */
                break;
            case LINA_INIT_DT_BIAS: {
                double lo = t->has_args ? t->args[0] : 1e-3, hi = t->has_args ? t->args[1] : 0.1;
                double fl = t->has_args ? t->args[2] : 1e-4;
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
            case LINA_INIT_A_LOG_ARANGE:
                p[j] = (float)log(1.0 + (double)(j % (size_t)t->shape[t->ndim - 1]));
                break;
            case LINA_INIT_A_LOG_1_16:
                p[j] = (float)log(1.0 + 15.0 * u); /* A in [1, 16) */
                break;
            case LINA_INIT_UNIFORM:
                p[j] = (float)((t->has_args ? t->args[0] : sd) * (2.0 * u - 1.0));
                break;
            case LINA_INIT_CONSTANT:
                p[j] = (float)(t->has_args ? t->args[0] : 0.0);
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
    const lina_mixer_vt *kind = lina_kind_of_model(cfg);
    if (!kind) {
        return lina_set_error(LINA_EINVAL, "model: model_type \"%s\" is not implemented yet",
                              lina_model_type_name(cfg->model_type));
    }
    lina_model *m = calloc(1, sizeof(*m));
    if (!m) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    m->cfg = *cfg;
    m->L = cfg->num_hidden_layers;
    m->D = cfg->hidden_size;
    m->vocab = cfg->vocab_size;
    m->kind = kind;
    m->names = kind->names ? kind->names : &fla_names;
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
    for (int l = 0; l < m->L; l++) {
        const model_block *e = m->layers[l].mix;
        if (e->vt->init) {
            float *Pv[LINA_MIXER_MAX_SLOTS];
            block_views(m, e, m->params, Pv);
            e->vt->init(e->dims, Pv, seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(l + 1)));
        }
    }
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
        free(m->layers[l].mix);
        free(m->layers[l].ffn);
    }
    free(m->layers);
    free(m->shared);
    free(m->shared_work);
    free(m->acts);
    free(m->params);
    free(m->grads);
    free(m->arena);
    free(m->rep_map);
    free(m->doc_cu);
    free(m->doc_acts);
    free(m->doc_off);
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

static size_t block_acts(const model_block *e, int N)
{
    return e ? e->vt->acts_floats(e->dims, N) : 0;
}

static size_t block_scratch(const model_block *e, int N)
{
    return e && e->vt->scratch_floats ? e->vt->scratch_floats(e->dims, N) : 0;
}

/* size (and carve) the arena for N rows */
static int ensure_acts(lina_model *m, int N)
{
    if (N <= m->cap_rows && m->arena) {
        return LINA_OK;
    }
    size_t n = (size_t)N, D = (size_t)m->D, V = (size_t)m->vocab;
    size_t nD = lina_szmul(n, D);
    size_t per_layer_fixed = lina_szadd(lina_szmul(4, nD), lina_szmul(2, n));
    size_t total = 0, scr = 0;
    for (int l = 0; l < m->L; l++) {
        const model_layer *ly = &m->layers[l];
        total = lina_szadd(total, lina_szadd(per_layer_fixed, lina_szadd(block_acts(ly->mix, N),
                                                                            block_acts(ly->ffn, N))));
        size_t s = block_scratch(ly->mix, N);
        scr = s > scr ? s : scr;
        s = block_scratch(ly->ffn, N);
        scr = s > scr ? s : scr;
    }
    /* xL, xnf, rstdf (+ means), logits, lse, tl, tmp, dres, carry, dcarry, scratch */
    total = lina_szadd(total, lina_szadd(lina_szmul(4, nD), lina_szadd(lina_szmul(4, n), lina_szmul(n, V))));
    total = lina_szadd(total, lina_szmul(2, lina_szmul(n, m->carry_row)));
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
        const model_layer *ly = &m->layers[l];
        la->x = p;     p += n * D;
        la->xn1 = p;   p += n * D;
        la->rstd1 = p; p += n;
        la->h = p;     p += n * D;
        la->xn2 = p;   p += n * D;
        la->rstd2 = p; p += n;
        la->ffn = ly->ffn ? p : NULL;
        p += block_acts(ly->ffn, N);
        la->mix = p;   p += block_acts(ly->mix, N);
    }
    m->xL = p;      p += n * D;
    m->xnf = p;     p += n * D;
    m->rstdf = p;   p += 2 * n;
    m->logits = p;  p += n * V;
    m->lse = p;     p += n;
    m->tl = p;      p += n;
    m->tmp = p;     p += n * D;
    m->dres = p;    p += n * D;
    m->carry = m->carry_row ? p : NULL;  p += n * m->carry_row;
    m->dcarry = m->carry_row ? p : NULL; p += n * m->carry_row;
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

/* Inference state: per layer, the state its mixer kind sized (recurrent
 * state and conv tails, or a KV cache of max_len tokens). */
struct lina_model_state {
    const lina_model *m;
    int B, cap;
    int64_t pos;
    float **layer;      /* [L] */
    size_t *floats;     /* [L] */
};

static int block_run(const lina_model *m, const model_block *e, float *P, float *G, int B, int T, const float *x,
                     float *out_dx, const float *dout, float *acts, float *scratch, const lina_model_state *st,
                     float *state, double *aux, const int64_t *cu, int64_t ncu, lina_form form, lina_ws *ws,
                     size_t row0)
{
    float *Pv[LINA_MIXER_MAX_SLOTS], *Gv[LINA_MIXER_MAX_SLOTS];
    block_views(m, e, P, Pv);
    lina_mixer_call cl = {0};
    cl.dims = e->dims;
    cl.P = Pv;
    cl.B = B;
    cl.T = T;
    cl.x = x;
    cl.acts = acts;
    cl.shared = m->shared_work;
    cl.form = form;
    cl.ws = ws;
    cl.sp = m->in_train ? m->sp : NULL;
    cl.cu = cu;
    cl.ncu = ncu;
    if (m->carry && e->vt == m->kind) { /* the layers' own kind, not a feed-forward */
        cl.carry = m->carry + row0 * m->carry_row;
        cl.dcarry = m->dcarry + row0 * m->carry_row;
    }
    if (!G) {
        cl.out = out_dx;
        cl.state = state;
        cl.pos = st ? st->pos : 0;
        cl.cap = st ? st->cap : 0;
        cl.aux = aux;
        return e->vt->forward(&cl);
    }
    block_views(m, e, G, Gv);
    cl.G = Gv;
    cl.dout = dout;
    cl.dx = out_dx;
    cl.scratch = scratch;
    cl.aux_grad = 1.0;
    if (scratch && scratch_poison()) {
        const size_t ns = block_scratch(e, B * T);
        for (size_t i = 0; i < ns; i++) {
            scratch[i] = LINA_SCRATCH_POISON;
        }
    }
    return e->vt->backward(&cl);
}

/* A few tokens (one decode step) are too little work to split: each of the many
 * small parallel regions of a step would cost more in fork/join than it saves,
 * and far more when the cores are shared. A call of `tokens` tokens through the
 * model runs on one thread below DECODE_SERIAL_WORK token x parameter products:
 * serial_enter returns the thread count for serial_leave to restore (0: none). */
static int serial_enter(const lina_model *m, double tokens)
{
#ifdef _OPENMP
    int nthr = omp_get_max_threads();
    if (nthr > 1 && tokens * (double)m->nparams < DECODE_SERIAL_WORK) {
        omp_set_num_threads(1);
        return nthr;
    }
#else
    (void)m, (void)tokens;
#endif
    return 0;
}

static void serial_leave(int nthr)
{
#ifdef _OPENMP
    if (nthr) {
        omp_set_num_threads(nthr);
    }
#else
    (void)nthr;
#endif
}

/* layer l's mixer: over the whole batch, or once per packed document (B = 1, its own
 * zero initial state, positions from 0) with the document's own activations */
static int mixer_run(const lina_model *m, int l, float *P, float *G, int B, int T, const float *x, float *out_dx,
                     const float *dout, const lina_model_state *st, double *aux, lina_form form, lina_ws *ws)
{
    const model_block *e = m->layers[l].mix;
    if (m->row_st) {
        /* each row is a B = 1 call: serial as such a decode call would be, whatever B (a
         * batch of rows that split each row's tiny regions over the threads ran 10-60x
         * slower on a loaded machine) */
        size_t n = (size_t)T * (size_t)m->D;
        int rc = LINA_OK, nthr = serial_enter(m, T);
        for (int b = 0; b < B && !rc; b++) {
            lina_model_state *rs = m->row_st[b];
            rc = block_run(m, e, P, NULL, 1, T, x + b * n, out_dx + b * n, NULL, m->acts[l].mix, NULL, rs,
                           rs->layer[l], aux, NULL, 0, form, ws, (size_t)b * T);
        }
        serial_leave(nthr);
        return rc;
    }
    if (!m->doc_on) {
        return block_run(m, e, P, G, B, T, x, out_dx, dout, m->acts[l].mix, m->scratch, st,
                         st ? st->layer[l] : NULL, aux, NULL, 0, form, ws, 0);
    }
    if (e->vt->flags & LINA_KIND_VARLEN) { /* the kind takes the documents in one call */
        return block_run(m, e, P, G, 1, B * T, x, out_dx, dout, m->acts[l].mix, m->scratch, NULL, NULL, aux,
                         m->doc_cu, m->doc_n, form, ws, 0);
    }
    size_t D = (size_t)m->D;
    float *acts = m->doc_acts + m->doc_off[l];
    for (int64_t d = 0; d + 1 < m->doc_n; d++) {
        size_t a = (size_t)m->doc_cu[d];
        int len = (int)(m->doc_cu[d + 1] - m->doc_cu[d]);
        int rc = block_run(m, e, P, G, 1, len, x + a * D, out_dx + a * D, dout ? dout + a * D : NULL, acts,
                           m->scratch, NULL, NULL, aux, NULL, 0, form, ws, a);
        if (rc) {
            return rc;
        }
        acts += block_acts(e, len);
    }
    return LINA_OK;
}

/* the shared block's forward (G == NULL) or backward */
static int shared_run(const lina_model *m, float *P, float *G)
{
    float *Pv[LINA_MIXER_MAX_SLOTS], *Gv[LINA_MIXER_MAX_SLOTS];
    lina_mixer_call cl = {0};
    block_views(m, m->shared, P, Pv);
    cl.dims = m->shared->dims;
    cl.P = Pv;
    cl.shared = m->shared_work;
    if (!G) {
        return m->kind->shared_forward(&cl);
    }
    block_views(m, m->shared, G, Gv);
    cl.G = Gv;
    return m->kind->shared_backward(&cl);
}

static size_t state_floats(const model_layer *ly, int B, int cap)
{
    const model_block *e = ly->mix;
    return e->vt->state_floats ? e->vt->state_floats(e->dims, B, cap) : 0;
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
    int N = B * T, D = m->D;
    float eps = (float)m->cfg.norm_eps;
    float *P = m->params;
    size_t nd = (size_t)N * D;
    if (m->shared && (rc = shared_run(m, P, NULL))) {
        return rc;
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
        if (m->rep_map && l == m->rep_from) {
            /* the replaced span: one linear map of the residual stream, no state */
            l = m->rep_to;
            xnext = l + 1 < m->L ? m->acts[l + 1].x : m->xL;
            lina_linear_forward(xnext, la->x, m->rep_map, NULL, N, D, D);
            continue;
        }
        const float *xin = la->x; /* a whole-block kind reads the stream itself */
        if (ly->t_attn_norm >= 0) {
            lina_rmsnorm_forward(la->xn1, la->rstd1, la->x, tp(m, P, ly->t_attn_norm), NULL, N, D, eps);
            xin = la->xn1;
        }
        if ((rc = mixer_run(m, l, P, NULL, B, T, xin, m->tmp, NULL, st, &m->aux, form, ws))) {
            return rc;
        }
        /* without a feed-forward block the sum is the next layer's input (h is read only by
         * the feed-forward branch's backward) */
        float *h = ly->ffn ? la->h : xnext;
        for (size_t i = 0; i < nd; i++) {
            h[i] = la->x[i] + m->tmp[i];
        }
        if (!ly->ffn) {
            continue;
        }
        lina_rmsnorm_forward(la->xn2, la->rstd2, la->h, tp(m, P, ly->t_mlp_norm), NULL, N, D, eps);
        const int fdoc = m->doc_on && (ly->ffn->vt->flags & LINA_KIND_VARLEN); /* MoE: aux per document */
        if ((rc = block_run(m, ly->ffn, P, NULL, fdoc ? 1 : B, fdoc ? N : T, la->xn2, m->tmp, NULL, la->ffn, NULL,
                            NULL, NULL, &m->aux, fdoc ? m->doc_cu : NULL, fdoc ? m->doc_n : 0, form, ws, 0))) {
            return rc;
        }
        for (size_t i = 0; i < nd; i++) {
            xnext[i] = la->h[i] + m->tmp[i];
        }
    }
    if (m->kind->flags & LINA_KIND_LAYERNORM) {
        lina_layernorm_forward(m->xnf, m->rstdf + N, m->rstdf, m->xL, tp(m, P, m->t_norm), tp(m, P, m->t_norm_b), N, D,
                               1, eps);
    } else {
        lina_rmsnorm_forward(m->xnf, m->rstdf, m->xL, tp(m, P, m->t_norm), NULL, N, D, eps);
    }
    lina_linear_forward(m->logits, m->xnf, tp(m, P, m->t_lm), NULL, N, D, m->vocab);
    return LINA_OK;
}

/* backward from dlogits (in m->logits) into m->grads */
static int model_backward(lina_model *m, const int32_t *tokens, int B, int T, lina_form form, lina_ws *ws)
{
    int N = B * T, D = m->D, rc = LINA_OK;
    float *P = m->params, *G = m->grads;
    size_t nd = (size_t)N * D;
    /* lm_head: dxnf [N,D] (in tmp, written: no zeroing pass) */
    lina_linear_backward_set(m->tmp, tp(m, G, m->t_lm), NULL, m->logits, m->xnf, tp(m, P, m->t_lm), N, D, m->vocab);
    /* final norm: dres = d x_L (RMSNorm: written; LayerNorm's backward accumulates) */
    if (m->kind->flags & LINA_KIND_LAYERNORM) {
        memset(m->dres, 0, nd * sizeof(float));
        lina_layernorm_backward(m->dres, tp(m, G, m->t_norm), tp(m, G, m->t_norm_b), m->tmp, m->xL,
                                tp(m, P, m->t_norm), m->rstdf + N, m->rstdf, N, D, 1);
    } else {
        lina_rmsnorm_backward_set(m->dres, tp(m, G, m->t_norm), NULL, m->tmp, m->xL, tp(m, P, m->t_norm), m->rstdf, N,
                                  D);
    }
    if (m->dcarry) {
        memset(m->dcarry, 0, (size_t)N * m->carry_row * sizeof(float));
    }
    for (int l = m->L - 1; l >= 0; l--) {
        const model_layer *ly = &m->layers[l];
        layer_acts *la = &m->acts[l];
        /* feed-forward branch: dres is d x_{l+1}; afterwards d h_l */
        if (ly->ffn) {
            memset(m->tmp, 0, nd * sizeof(float));
            const int fdoc = m->doc_on && (ly->ffn->vt->flags & LINA_KIND_VARLEN);
            if ((rc = block_run(m, ly->ffn, P, G, fdoc ? 1 : B, fdoc ? N : T, la->xn2, m->tmp, m->dres, la->ffn,
                                m->scratch, NULL, NULL, NULL, fdoc ? m->doc_cu : NULL, fdoc ? m->doc_n : 0, form,
                                ws, 0))) {
                return rc;
            }
            lina_rmsnorm_backward(m->dres, tp(m, G, ly->t_mlp_norm), NULL, m->tmp, la->h, tp(m, P, ly->t_mlp_norm),
                                  la->rstd2, N, D);
        }
        /* mixer branch: afterwards d x_l */
        memset(m->tmp, 0, nd * sizeof(float));
        if ((rc = mixer_run(m, l, P, G, B, T, ly->t_attn_norm >= 0 ? la->xn1 : la->x, m->tmp, m->dres, NULL, NULL,
                            form, ws))) {
            return rc;
        }
        if (ly->t_attn_norm < 0) {
            for (size_t i = 0; i < nd; i++) {
                m->dres[i] += m->tmp[i];
            }
            continue;
        }
        lina_rmsnorm_backward(m->dres, tp(m, G, ly->t_attn_norm), NULL, m->tmp, la->x, tp(m, P, ly->t_attn_norm),
                              la->rstd1, N, D);
        if (m->grad_hook && m->in_train && (m->ntensors - 1 == m->t_norm || m->ntensors - 1 == m->t_lm)) {
            /* tensors are stored in declaration order: layer l's from its mixer norm on, then the
             * later layers, the final norm and an untied lm_head, all done (when nothing else was
             * declared after them) */
            m->grad_hook(m->grad_ctx, m->tensors[ly->t_attn_norm].off);
        }
    }
    lina_embedding_backward(tp(m, G, m->t_emb), m->dres, tokens, N, D);
    return m->shared ? shared_run(m, P, G) : LINA_OK;
}

static int loss_of(lina_model *m, const int32_t *targets, int N, double *loss, int64_t *count)
{
    if (!targets) {
        return lina_set_error(LINA_EINVAL, "model: targets is NULL");
    }
    return lina_cross_entropy_forward(loss, count, m->lse, m->logits, targets, N, m->vocab);
}

int lina_model_set_sp(lina_model *m, const lina_sp *sp)
{
    for (int l = 0; sp && l < m->L; l++) {
        const lina_mixer_vt *vt = m->layers[l].mix->vt;
        if (!(vt->flags & LINA_KIND_SP)) {
            return lina_set_error(LINA_EINVAL, "%s: sequence parallelism (--sp) is not available for its %s layers "
                                               "(docs/distributed.md lists the mixers that have it)",
                                  lina_model_type_name(m->cfg.model_type), vt->name);
        }
    }
    m->sp = sp;
    return LINA_OK;
}

void lina_model_set_grad_hook(lina_model *m, void (*fn)(void *ctx, size_t from), void *ctx)
{
    m->grad_hook = fn;
    m->grad_ctx = ctx;
}

static int train_step(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, double *loss,
                      lina_ws *ws);

int lina_model_train_step(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, double *loss,
                          lina_ws *ws)
{
    if (m && m->rep_map) {
        return lina_set_error(LINA_EINVAL, "model: blocks %d..%d are replaced by a linear map; it cannot train",
                              m->rep_from, m->rep_to);
    }
    if (!m) {
        return lina_set_error(LINA_EINVAL, "model: bad arguments");
    }
    m->in_train = 1;
    int rc = train_step(m, tokens, targets, B, T, loss, ws);
    m->in_train = 0;
    return rc;
}

static int train_step(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, double *loss,
                      lina_ws *ws)
{
    int rc = model_forward(m, tokens, B, T, LINA_FORM_CHUNK, NULL, ws);
    double l = 0.0;
    int64_t count = 0;
    if (!rc && !targets) {
        rc = lina_set_error(LINA_EINVAL, "model: targets is NULL");
    }
    /* the loss and its gradient (dlogits over the logits) in one pass over the rows */
    if (rc || (rc = lina_cross_entropy_fused(&l, &count, m->lse, m->tl, m->logits, targets, B * T, m->vocab, 1.0f))) {
        return rc;
    }
    l += m->aux; /* auxiliary (load-balancing) losses of MoM / MoE layers */
    if (loss) {
        *loss = l;
    }
    if (count == 0 && m->aux == 0.0) {
        return LINA_OK; /* nothing to differentiate */
    }
    if (!isfinite(l)) {
        return lina_set_error(LINA_ENONFINITE, "model: loss is not finite (%g)", l);
    }
    /* count 0 (no target: a one-token document alone): the dlogits are zeros, the
     * auxiliary loss's gradient only */
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

/* ---------------------------------------------------------------- packed documents */

/* doc_cu = cu (over the N = B*T rows) with every row start added; the documents'
 * mixer activations sized and carved per layer */
static int docs_begin(lina_model *m, const int32_t *tokens, int B, int T, const int64_t *cu, int64_t ncu)
{
    int rc = check_bt(m, tokens, B, T);
    int64_t N = (int64_t)B * T;
    if (rc || !cu) {
        return rc ? rc : lina_set_error(LINA_EINVAL, "model: cu_seqlens is NULL");
    }
    if ((rc = lina_cu_seqlens_check(cu, ncu, N)) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", lina_last_error());
        return lina_set_error(rc, "model: %s (B*T = %lld tokens)", msg, (long long)N);
    }
    if (!m->doc_off && !(m->doc_off = malloc((size_t)m->L * sizeof(size_t) + 1))) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory");
    }
    if (ncu + B > m->doc_cap) {
        int64_t *c = realloc(m->doc_cu, (size_t)(ncu + B) * sizeof(int64_t));
        if (!c) {
            return lina_set_error(LINA_ENOMEM, "model: out of memory (%lld documents)", (long long)ncu);
        }
        m->doc_cu = c;
        m->doc_cap = ncu + B;
    }
    int64_t n = 0, i = 0;
    for (int b = 0; b <= B; b++) { /* merge the row starts 0, T, ..., B*T into cu */
        int64_t r = (int64_t)b * T;
        while (i < ncu && cu[i] < r) {
            m->doc_cu[n++] = cu[i++];
        }
        m->doc_cu[n++] = r;
        i += i < ncu && cu[i] == r;
    }
    m->doc_n = n;
    if ((rc = ensure_acts(m, (int)N))) {
        return rc;
    }
    size_t total = 0;
    for (int l = 0; l < m->L; l++) {
        const model_block *e = m->layers[l].mix;
        m->doc_off[l] = total;
        for (int64_t d = 0; d + 1 < n && !(e->vt->flags & LINA_KIND_VARLEN); d++) {
            int len = (int)(m->doc_cu[d + 1] - m->doc_cu[d]);
            total = lina_szadd(total, block_acts(e, len));
            if (block_scratch(e, len) > block_scratch(e, (int)N)) {
                return lina_set_error(LINA_EINVAL, "model: a document of %d tokens needs more backward scratch "
                                                   "than the batch", len);
            }
        }
    }
    if (total > m->doc_floats) {
        if ((rc = check_floats(total, "activations of the packed documents"))) {
            return rc;
        }
        float *a = xcalloc_aligned(total);
        if (!a) {
            return lina_set_error(LINA_ENOMEM, "model: out of memory (activations of %lld documents)",
                                  (long long)(n - 1));
        }
        free(m->doc_acts);
        m->doc_acts = a;
        m->doc_floats = total;
    }
    m->doc_on = 1;
    return LINA_OK;
}

static int docs_call(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T, const int64_t *cu,
                     int64_t ncu, double *loss, int train, lina_ws *ws)
{
    int rc = docs_begin(m, tokens, B, T, cu, ncu);
    if (!rc) {
        rc = train ? lina_model_train_step(m, tokens, targets, B, T, loss, ws)
                   : lina_model_eval_loss(m, tokens, targets, B, T, loss, ws);
    }
    m->doc_on = 0;
    return rc;
}

int lina_model_train_step_varlen(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                                 const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws)
{
    return docs_call(m, tokens, targets, B, T, cu, ncu, loss, 1, ws);
}

int lina_model_eval_loss_varlen(lina_model *m, const int32_t *tokens, const int32_t *targets, int B, int T,
                                const int64_t *cu, int64_t ncu, double *loss, lina_ws *ws)
{
    return docs_call(m, tokens, targets, B, T, cu, ncu, loss, 0, ws);
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

const float *lina_model_hidden(const lina_model *m, int l)
{
    if (!m || l < 0 || l > m->L || !m->arena) {
        return NULL;
    }
    return l < m->L ? m->acts[l].x : m->xL;
}

int lina_model_replace_blocks(lina_model *m, int from, int to, const float *map)
{
    if (!m) {
        return lina_set_error(LINA_EINVAL, "model: NULL model");
    }
    if (!map) {
        free(m->rep_map);
        m->rep_map = NULL;
        return LINA_OK;
    }
    if (from < 0 || to < from || to >= m->L) {
        return lina_set_error(LINA_EINVAL, "model: blocks %d..%d are not a span of the model's %d layers", from, to,
                              m->L);
    }
    if (from == 0 && m->carry_row && to + 1 < m->L) {
        return lina_set_error(LINA_EINVAL, "model: block 0 of a %s model hands values to the later blocks; it can "
                              "only be replaced with all of them", m->kind->name);
    }
    size_t n = (size_t)m->D * (size_t)m->D;
    float *c = m->rep_map ? m->rep_map : xcalloc_aligned(n);
    if (!c) {
        return lina_set_error(LINA_ENOMEM, "model: out of memory (a %d x %d map)", m->D, m->D);
    }
    memcpy(c, map, n * sizeof(float));
    m->rep_map = c;
    m->rep_from = from;
    m->rep_to = to;
    return LINA_OK;
}

/* a KV cache has room for T more tokens */
static int check_room(const lina_model *m, const lina_model_state *s, int T)
{
    for (int l = 0; l < m->L; l++) {
        if ((m->layers[l].mix->vt->flags & LINA_KIND_KV_CACHE) && (T < 1 || s->pos + T > s->cap)) {
            return lina_set_error(LINA_EINVAL, "model decode: %lld + %d tokens exceed the KV cache (%d)",
                                  (long long)s->pos, T, s->cap);
        }
    }
    return LINA_OK;
}

static int decode_run(lina_model *m, lina_model_state *s, const int32_t *tokens, int B, int T, lina_ws *ws);

int lina_model_decode(lina_model *m, lina_model_state *s, const int32_t *tokens, int B, int T, float *logits,
                      lina_ws *ws)
{
    if (!s || !logits || s->m != m || B != s->B) {
        return lina_set_error(LINA_EINVAL, "model decode: state of another model or batch size (B = %d)", B);
    }
    int rc = check_room(m, s, T);
    if (rc || (rc = decode_run(m, s, tokens, B, T, ws))) {
        return rc;
    }
    s->pos += T;
    memcpy(logits, m->logits, (size_t)B * T * m->vocab * sizeof(float));
    return LINA_OK;
}

int lina_model_decode_rows(lina_model *m, lina_model_state *const *states, const int32_t *tokens, const int *len,
                           int B, int T, float *logits, lina_ws *ws)
{
    if (!m || !states || !tokens || !len || !logits || B < 1 || T < 1) {
        return lina_set_error(LINA_EINVAL, "model decode rows: bad arguments (B = %d, T = %d)", B, T);
    }
    for (int b = 0; b < B; b++) {
        if (!states[b] || states[b]->m != m || states[b]->B != 1) {
            return lina_set_error(LINA_EINVAL, "model decode rows: row %d's state is not a B = 1 state of this model",
                                  b);
        }
        if (len[b] < 0 || len[b] > T) {
            return lina_set_error(LINA_EINVAL, "model decode rows: row %d's length %d is outside 0..%d", b, len[b],
                                  T);
        }
        int rc = len[b] ? check_room(m, states[b], len[b]) : LINA_OK;
        if (rc) {
            return rc;
        }
    }
    size_t V = (size_t)m->vocab;
    memset(logits, 0, (size_t)B * T * V * sizeof(float));
    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t));
    lina_model_state **rs = malloc((size_t)B * sizeof *rs);
    int *row = malloc((size_t)B * sizeof(int));
    int rc = tok && rs && row ? LINA_OK : lina_set_error(LINA_ENOMEM, "model decode rows: out of memory");
    /* the rows of each length L together: their last L tokens, each mixer on each row's state */
    for (int L = T; L >= 1 && !rc; L--) {
        int n = 0;
        for (int b = 0; b < B; b++) {
            if (len[b] == L) {
                memcpy(tok + (size_t)n * L, tokens + (size_t)b * T + (T - L), (size_t)L * sizeof(int32_t));
                rs[n] = states[b];
                row[n++] = b;
            }
        }
        if (!n) {
            continue;
        }
        m->row_st = rs;
        rc = decode_run(m, NULL, tok, n, L, ws);
        m->row_st = NULL;
        for (int i = 0; i < n && !rc; i++) {
            rs[i]->pos += L;
            memcpy(logits + ((size_t)row[i] * T + (T - L)) * V, m->logits + (size_t)i * L * V,
                   (size_t)L * V * sizeof(float));
        }
    }
    free(tok);
    free(rs);
    free(row);
    return rc;
}

/* model_forward of a prefill (T > 1, chunk form) or decode step (recurrent form) on state s
 * (or the rows' states) */
static int decode_run(lina_model *m, lina_model_state *s, const int32_t *tokens, int B, int T, lina_ws *ws)
{
    int nthr = serial_enter(m, (double)B * T);
    int rc = model_forward(m, tokens, B, T, T > 1 ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT, s, ws);
    serial_leave(nthr);
    return rc;
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

/* Every tensor of the file must be one the model reads: an unused one means
 * the config and the weights disagree (a tied lm_head.weight is accepted only
 * when it equals the embeddings). */
static int check_unused(const lina_model *m, const lina_st_file *f, const char *stp, const char *cfp)
{
    int n = lina_st_count(f), rc = LINA_OK;
    unsigned char *used = calloc((size_t)(n > 0 ? n : 1), 1);
    if (!used) {
        return lina_set_error(LINA_ENOMEM, "model load: out of memory");
    }
    for (int i = 0; i < m->ntensors; i++) {
        int j = st_index(f, m->tensors[i].name);
        if (j >= 0) {
            used[j] = 1;
        }
    }
    for (int j = 0; !rc && j < n; j++) {
        const char *name = lina_st_name(f, j);
        if (used[j]) {
            continue;
        }
        if (m->t_lm == m->t_emb && strcmp(name, "lm_head.weight") == 0) {
            const model_tensor *e = &m->tensors[m->t_emb];
            float *w = malloc(e->numel * sizeof(float));
            int64_t sh[LINA_MAX_DIMS];
            int same = w && lina_st_shape(f, j, sh) == 2 && sh[0] == e->shape[0] && sh[1] == e->shape[1] &&
                       lina_st_load(f, j, w, (int64_t)e->numel) == LINA_OK &&
                       memcmp(w, m->params + e->off, e->numel * sizeof(float)) == 0;
            free(w);
            if (!same) {
                rc = lina_set_error(LINA_EFORMAT, "%s: lm_head.weight differs from %s while tie_word_embeddings is "
                                    "true in %s", stp, e->name, cfp);
            }
            continue;
        }
        rc = lina_set_error(LINA_EFORMAT, "%s: tensor %s is not used by the model %s describes (%s)", stp, name,
                            cfp, lina_model_type_name(m->cfg.model_type));
    }
    free(used);
    return rc;
}

/* A sharded checkpoint (model.safetensors.index.json and its shards, no
 * model.safetensors) gets a message saying so rather than "cannot open". */
static int refuse_sharded(const char *dir, const char *stp)
{
    char *idx = join_path(dir, "model.safetensors.index.json");
    int sharded = idx && access(stp, F_OK) != 0 && access(idx, F_OK) == 0;
    int rc = sharded ? lina_set_error(LINA_EFORMAT, "%s: a sharded checkpoint (model.safetensors.index.json) is not "
                                      "supported yet: merge its shards into one model.safetensors", idx)
                     : LINA_OK;
    free(idx);
    return rc;
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
        rc = refuse_sharded(dir, stp);
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
    if (!rc) {
        rc = check_unused(m, f, stp, cfp);
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
