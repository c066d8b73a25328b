/* task_train.c -- the shared train/evaluate loop of the synthetic tasks: builds the
 * model config for a mixer, trains with AdamW (warmup + cosine, global-norm clipping)
 * on fresh random batches and scores the trained model on held-out sequences. */
#include "tasks.h"
#include "../kern/kern.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *lina_task_name(lina_task_kind k)
{
    switch (k) {
    case LINA_TASK_MQAR:
        return "mqar";
    case LINA_TASK_PARITY:
        return "parity";
    case LINA_TASK_MODARITH:
        return "modarith";
    case LINA_TASK_S3:
        return "s3";
    case LINA_TASK_S5:
        return "s5";
    }
    return "?";
}

void lina_task_opts_default(lina_task_opts *o, lina_task_kind k)
{
    memset(o, 0, sizeof *o);
    o->kind = k;
    o->mixer = LINA_MODEL_DELTA_NET;
    o->d_model = 64;
    o->layers = 2;
    o->heads = 2;
    o->vocab = 256;
    o->seq_len = 64;
    o->num_kv = 8;
    o->power_a = 0.01;
    o->train_min = 3;
    o->train_max = 40;
    o->test_min = 40;
    o->test_max = 256;
    o->steps = 400;
    o->batch = 32;
    o->lr = 3e-3;
    o->weight_decay = 0.1;
    o->clip = 1.0;
    o->warmup = -1;
    o->seed = 0;
    o->householder = 1;
    o->mom_memories = 4;
    o->mom_topk = 2;
    o->mom_shared = 1;
    o->eval_n = 256;
    o->progress = 1;
    o->block = LINA_TASK_BLOCK_ZOOLOGY;
    o->mlp = 0;
    o->conv = 1;
    o->train_n = 0;
    o->target = 0.0;
    o->eval_every = 0;
    o->val_n = 128;
    switch (k) {
    case LINA_TASK_MQAR:
        break;
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH:
        o->heads = 4;
        o->steps = 1000;
        o->batch = 32;
        o->lr = 1e-3;
        o->weight_decay = k == LINA_TASK_PARITY ? 0.0 : 0.1;
        o->eval_n = 64;
        break;
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        o->mixer = LINA_MODEL_GATED_DELTAPRODUCT;
        o->householder = 2;
        o->neg_eigval = 1;
        o->layers = 1;
        o->heads = 4;
        o->seq_len = 32;
        o->test_max = 128;
        o->steps = 1000;
        o->batch = 32;
        o->lr = 1e-3;
        o->weight_decay = 1e-6;
        o->eval_n = 128;
        break;
    }
}

static int slow_decay_init(lina_model *m);

static int task_vocab(const lina_task_opts *o)
{
    switch (o->kind) {
    case LINA_TASK_MQAR:
        return o->vocab;
    case LINA_TASK_PARITY:
        return LINA_PARITY_VOCAB;
    case LINA_TASK_MODARITH:
        return LINA_MODARITH_VOCAB;
    case LINA_TASK_S3:
        return 6;
    case LINA_TASK_S5:
        return 120;
    }
    return 0;
}

/* the longest sequence the task feeds the model */
static int task_max_len(const lina_task_opts *o)
{
    switch (o->kind) {
    case LINA_TASK_MQAR:
        return o->seq_len;
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH:
        return o->test_max > o->train_max ? o->test_max : o->train_max;
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        return o->test_max > o->seq_len ? o->test_max : o->seq_len;
    }
    return 0;
}

int lina_task_config(const lina_task_opts *o, lina_config *c)
{
    const char *mt = lina_model_type_name(o->mixer);
    int rc = lina_config_default(c, o->mixer);
    if (rc) {
        return rc;
    }
    const int D = o->d_model, H = o->heads;
    if (D < 1 || H < 1 || o->layers < 1 || D % H) {
        return lina_set_error(LINA_EINVAL, "%s: --d-model %d must be a positive multiple of --heads %d", mt, D, H);
    }
    const int hd = o->head_dim > 0 ? o->head_dim : D / H;
    const int neg_ok = o->mixer == LINA_MODEL_DELTA_NET || o->mixer == LINA_MODEL_GATED_DELTANET ||
                       o->mixer == LINA_MODEL_GATED_DELTAPRODUCT || o->mixer == LINA_MODEL_MAMBA2 ||
                       o->mixer == LINA_MODEL_MOM;
    if (o->neg_eigval && !neg_ok) {
        return lina_set_error(LINA_EINVAL,
                              "%s: --neg-eigval applies to delta_net, gated_deltanet, gated_deltaproduct, "
                              "mamba2 and mom only",
                              mt);
    }
    if (o->householder != 1 && o->mixer != LINA_MODEL_GATED_DELTAPRODUCT) {
        return lina_set_error(LINA_EINVAL, "%s: --householder applies to gated_deltaproduct only", mt);
    }
    c->hidden_size = D;
    c->num_hidden_layers = o->layers;
    c->num_heads = H;
    c->vocab_size = task_vocab(o);
    if (o->block != LINA_TASK_BLOCK_ZOOLOGY && o->block != LINA_TASK_BLOCK_FLA) {
        return lina_set_error(LINA_EINVAL, "%s: unknown task block %d", mt, o->block);
    }
    const int zoo = o->block == LINA_TASK_BLOCK_ZOOLOGY;
    c->intermediate_size = 2 * D; /* a small MLP; FLA's rounding to 256 would dwarf the mixer */
    c->no_mlp = zoo && !o->mlp;   /* Zoology's blocks are the mixer alone */
    int maxlen = task_max_len(o);
    c->max_position_embeddings = maxlen > 2048 ? maxlen : 2048;
    c->use_short_conv = o->conv ? 1 : 0; /* docs/tasks.md 5: without it no model learns MQAR here */
    c->conv_size = 4;
    c->allow_neg_eigval = o->neg_eigval ? 1 : 0;
    switch (o->mixer) {
    case LINA_MODEL_GLA:
        if (zoo) { /* the synthetic-task set-up: full-width keys, no output gate */
            c->expand_k = 1.0;
            c->use_output_gate = 0;
        }
        break;
    case LINA_MODEL_GATED_DELTANET:
        c->head_dim = hd;
        c->expand_v = 1.0;
        break;
    case LINA_MODEL_GATED_DELTAPRODUCT:
        c->head_dim = hd;
        c->expand_v = 1.0;
        c->num_householder = o->householder;
        break;
    case LINA_MODEL_MOM:
        c->head_dim = hd;
        c->expand_v = 1.0;
        c->num_memories = o->mom_memories;
        c->topk = o->mom_topk;
        c->shared_mem = o->mom_shared;
        break;
    case LINA_MODEL_MAMBA2:
        c->use_short_conv = 0; /* mamba2 has its own conv (conv_kernel 4) */
        c->head_dim = 2 * D / H > 0 ? 2 * D / H : 1;
        c->expand = 2;
        c->state_size = hd;
        c->chunk_size = 64;
        if ((2 * D) % H) {
            return lina_set_error(LINA_EINVAL, "mamba2: 2 * --d-model must be a multiple of --heads");
        }
        break;
    case LINA_MODEL_MAMBA: /* its own conv1d; inner width expand * d, dt_rank "auto" as FLA's config */
        c->use_short_conv = 0;
        c->intermediate_size = c->expand * D;
        c->dt_rank = (D + 15) / 16;
        break;
    case LINA_MODEL_LINEAR_ATTN:
        if (zoo) { /* Katharopoulos et al.'s elu + 1 (FLA's default map starts ~1e-4 small) */
            snprintf(c->feature_map, sizeof c->feature_map, "elu");
        }
        break;
    case LINA_MODEL_RWKV7: /* its own token shift, LayerNorms and feed-forward in every block */
        c->use_short_conv = 0;
        c->head_dim = hd;
        c->num_heads = D / hd;
        /* FLA's layer rule for a null rank, max(32, ...), at these widths */
        c->decay_low_rank_dim = c->a_low_rank_dim = c->v_low_rank_dim = c->gate_low_rank_dim = 32;
        break;
    case LINA_MODEL_HGRN2:
        c->use_short_conv = 0; /* not implemented for HGRN2 */
        c->expand_ratio = D / H;
        break;
    case LINA_MODEL_KDA:
        c->head_dim = hd;
        c->expand_v = 1.0;
        break;
    case LINA_MODEL_FORGETTING_TRANSFORMER:
        c->use_short_conv = 0; /* FLA's layer has none */
        break;
    default:
        break;
    }
    return lina_config_validate(c, mt);
}

/* floats of recurrent state per layer; 0 when it is not a fixed-size state */
static int64_t state_floats(const lina_config *c)
{
    const int64_t D = c->hidden_size, H = c->num_heads;
    switch (c->model_type) {
    case LINA_MODEL_GLA:
    case LINA_MODEL_RETNET:
    case LINA_MODEL_DELTA_NET:
    case LINA_MODEL_LINEAR_ATTN:
    case LINA_MODEL_MLSTM:
        return (int64_t)(D * c->expand_k) * (int64_t)(D * c->expand_v) / H;
    case LINA_MODEL_GATED_DELTANET:
    case LINA_MODEL_GATED_DELTAPRODUCT:
    case LINA_MODEL_KDA:
        return H * c->head_dim * (int64_t)(c->head_dim * c->expand_v);
    case LINA_MODEL_MOM:
        return (c->num_memories + (c->shared_mem ? 1 : 0)) * H * c->head_dim *
               (int64_t)(c->head_dim * c->expand_v);
    case LINA_MODEL_MAMBA2:
        return H * c->head_dim * (int64_t)c->state_size;
    case LINA_MODEL_MAMBA:
        return c->intermediate_size * (int64_t)c->state_size;
    case LINA_MODEL_RWKV7:
        return D * (int64_t)c->head_dim;
    case LINA_MODEL_HGRN2:
    case LINA_MODEL_HGRN:
        return D * (int64_t)c->expand_ratio;
    case LINA_MODEL_GSA: { /* the two slot states: H x M x (K + V) */
        const int64_t K = (int64_t)(D * c->expand_k) / H;
        return H * (c->num_slots ? c->num_slots : K) * (K + (int64_t)(D * c->expand_v) / H);
    }
    default:
        return 0;
    }
}

/* length of a training sequence for parity / modarith */
static int draw_len(const lina_task_opts *o, uint64_t *rng, int lo, int hi)
{
    int len = lo + lina_task_randint(rng, hi - lo + 1);
    if (o->kind == LINA_TASK_MODARITH) {
        len -= len % 2; /* digits and operators alternate: even with '=' */
        if (len < 4) {
            len = 4;
        }
    }
    return len;
}

static int check_opts(const lina_task_opts *o)
{
    if (o->steps < 1 || o->batch < 1 || o->batch > 4096 || !(o->lr > 0.0) || !isfinite(o->lr) || o->eval_n < 1) {
        return lina_set_error(LINA_EINVAL, "task: --steps, --batch, --lr and --eval must be positive");
    }
    if (!(o->weight_decay >= 0.0) || !isfinite(o->clip)) {
        return lina_set_error(LINA_EINVAL, "task: --wd must be >= 0");
    }
    if (o->train_n < 0 || o->train_n > 100000000 || o->eval_every < 0 || o->val_n < 1 || !(o->target >= 0.0) ||
        o->target > 1.0) {
        return lina_set_error(LINA_EINVAL,
                              "task: --train-n and --eval-every must be >= 0, --val >= 1, --target in [0, 1]");
    }
    if (o->kind == LINA_TASK_MQAR) {
        lina_mqar_spec s = {o->vocab, o->seq_len, o->num_kv, o->power_a, o->random_non_queries};
        return lina_mqar_check(&s);
    }
    if (o->kind == LINA_TASK_PARITY || o->kind == LINA_TASK_MODARITH) {
        const int lo = 1; /* modarith clamps lengths to >= 4 */
        if (o->train_min < lo || o->train_max < o->train_min || o->test_min < lo || o->test_max < o->test_min ||
            o->test_max > 100000 || o->train_max > 100000) {
            return lina_set_error(LINA_EINVAL, "%s: lengths must satisfy %d <= min <= max <= 100000",
                                  lina_task_name(o->kind), lo);
        }
        return LINA_OK;
    }
    if (o->seq_len < 1 || o->test_max < 1 || o->seq_len > 100000 || o->test_max > 100000) {
        return lina_set_error(LINA_EINVAL, "%s: --seq-len and --test-len must be in [1, 100000]",
                              lina_task_name(o->kind));
    }
    return LINA_OK;
}

int lina_task_batch(const lina_task_opts *o, const lina_group *g, uint64_t *rng, int B, int Tmax,
                    int32_t *tokens, int32_t *targets, int *T)
{
    int rc = LINA_OK;
    int need = o->kind == LINA_TASK_PARITY || o->kind == LINA_TASK_MODARITH ? o->train_max : o->seq_len;
    if (need > Tmax || B < 1 || B > 4096) {
        return lina_set_error(LINA_EINVAL, "%s: batch of %d x %d does not fit the buffer (%d positions)",
                              lina_task_name(o->kind), B, need, Tmax);
    }
    switch (o->kind) {
    case LINA_TASK_MQAR: {
        lina_mqar_spec s = {o->vocab, o->seq_len, o->num_kv, o->power_a, o->random_non_queries};
        *T = o->seq_len;
        for (int b = 0; b < B && !rc; b++) {
            rc = lina_mqar_example(&s, rng, tokens + (size_t)b * *T, targets + (size_t)b * *T);
        }
        break;
    }
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH: {
        int lens[4096], Tb = 0;
        for (int b = 0; b < B; b++) {
            lens[b % 4096] = draw_len(o, rng, o->train_min, o->train_max);
            Tb = lens[b % 4096] > Tb ? lens[b % 4096] : Tb;
        }
        *T = Tb;
        for (int b = 0; b < B; b++) {
            if (o->kind == LINA_TASK_PARITY) {
                lina_parity_example(rng, lens[b % 4096], Tb, tokens + (size_t)b * Tb, targets + (size_t)b * Tb);
            } else {
                lina_modarith_example(rng, lens[b % 4096], Tb, tokens + (size_t)b * Tb,
                                      targets + (size_t)b * Tb);
            }
        }
        break;
    }
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        *T = o->seq_len;
        for (int b = 0; b < B; b++) {
            lina_group_example(g, rng, *T, tokens + (size_t)b * *T, targets + (size_t)b * *T);
        }
        break;
    }
    return rc;
}

/* One training example of the task in rows of width W (>= its length; the rest padded with 0 and
 * LINA_TASK_IGNORE); returns its length. Needs valid options (check_opts). */
static int task_example(const lina_task_opts *o, const lina_group *g, uint64_t *rng, int W, int32_t *tok,
                        int32_t *tgt)
{
    switch (o->kind) {
    case LINA_TASK_MQAR: {
        lina_mqar_spec sp = {o->vocab, o->seq_len, o->num_kv, o->power_a, o->random_non_queries};
        lina_mqar_example(&sp, rng, tok, tgt);
        return o->seq_len;
    }
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH: {
        int len = draw_len(o, rng, o->train_min, o->train_max);
        if (o->kind == LINA_TASK_PARITY) {
            lina_parity_example(rng, len, W, tok, tgt);
        } else {
            lina_modarith_example(rng, len, W, tok, tgt);
        }
        return len;
    }
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        lina_group_example(g, rng, o->seq_len, tok, tgt);
        return o->seq_len;
    }
    return 0;
}

/* A fixed training set of train_n examples: example i is drawn from its own stream (data seed, i),
 * so nothing is stored but the visiting order, reshuffled every epoch. */
typedef struct fixed_set {
    int n, pos;
    int *perm;
    uint64_t data_seed;
    uint64_t rng;      /* the shuffling stream */
    int32_t *rtok, *rtgt; /* [B, W] rows before compaction */
    int W;
} fixed_set;

static void fixed_shuffle(fixed_set *f)
{
    for (int i = f->n - 1; i > 0; i--) {
        int j = lina_task_randint(&f->rng, i + 1), t = f->perm[i];
        f->perm[i] = f->perm[j];
        f->perm[j] = t;
    }
    f->pos = 0;
}

static int fixed_init(fixed_set *f, const lina_task_opts *o, int B)
{
    memset(f, 0, sizeof *f);
    f->n = o->train_n;
    f->W = o->kind == LINA_TASK_PARITY || o->kind == LINA_TASK_MODARITH ? o->train_max : o->seq_len;
    f->perm = malloc(sizeof(int) * (size_t)f->n);
    f->rtok = malloc(sizeof(int32_t) * (size_t)B * f->W);
    f->rtgt = malloc(sizeof(int32_t) * (size_t)B * f->W);
    if (!f->perm || !f->rtok || !f->rtgt) {
        return lina_set_error(LINA_ENOMEM, "task: out of memory for the training set");
    }
    for (int i = 0; i < f->n; i++) {
        f->perm[i] = i;
    }
    f->data_seed = o->seed * 0xA24BAED4963EE407ull ^ 0xDA7A5E7ull;
    f->rng = o->seed * 0x9FB21C651E98DF25ull + 0x5A1Full;
    lina_splitmix64(&f->rng);
    fixed_shuffle(f);
    return LINA_OK;
}

static void fixed_free(fixed_set *f)
{
    free(f->perm);
    free(f->rtok);
    free(f->rtgt);
}

/* the next B examples of the epoch order, compacted to [B, *T] (T the longest of them) */
static void fixed_batch(fixed_set *f, const lina_task_opts *o, const lina_group *g, int B, int32_t *tok,
                        int32_t *tgt, int *T)
{
    int lens[4096], Tb = 0;
    for (int b = 0; b < B; b++) {
        if (f->pos == f->n) {
            fixed_shuffle(f);
        }
        uint64_t r = f->data_seed ^ ((uint64_t)f->perm[f->pos++] * 0x9E3779B97F4A7C15ull);
        lina_splitmix64(&r);
        lens[b % 4096] = task_example(o, g, &r, f->W, f->rtok + (size_t)b * f->W, f->rtgt + (size_t)b * f->W);
        Tb = lens[b % 4096] > Tb ? lens[b % 4096] : Tb;
    }
    for (int b = 0; b < B; b++) {
        memcpy(tok + (size_t)b * Tb, f->rtok + (size_t)b * f->W, sizeof(int32_t) * (size_t)Tb);
        memcpy(tgt + (size_t)b * Tb, f->rtgt + (size_t)b * f->W, sizeof(int32_t) * (size_t)Tb);
    }
    *T = Tb;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i;
        }
    }
    return best;
}

#define EVAL_B 32

typedef struct eval_ctx {
    lina_model *m;
    lina_ws *ws;
    int V;
    int32_t *tok, *tgt; /* [EVAL_B, Tmax] */
    float *logits;      /* [EVAL_B, Tmax, V] */
} eval_ctx;

/* parity / modarith: accuracy at length len over n sequences (the target is at len-1);
 * len < 0: lengths drawn from the training range */
static int eval_len(eval_ctx *e, const lina_task_opts *o, uint64_t *rng, int len, int n, double *acc)
{
    int correct = 0, done = 0;
    while (done < n) {
        int B = n - done < EVAL_B ? n - done : EVAL_B;
        int lens[EVAL_B], T = 0;
        for (int b = 0; b < B; b++) {
            lens[b] = len > 0 ? len : draw_len(o, rng, o->train_min, o->train_max);
            T = lens[b] > T ? lens[b] : T;
        }
        for (int b = 0; b < B; b++) {
            if (o->kind == LINA_TASK_PARITY) {
                lina_parity_example(rng, lens[b], T, e->tok + (size_t)b * T, e->tgt + (size_t)b * T);
            } else {
                lina_modarith_example(rng, lens[b], T, e->tok + (size_t)b * T, e->tgt + (size_t)b * T);
            }
        }
        int rc = lina_model_forward_logits(e->m, e->tok, B, T, e->logits, e->ws);
        if (rc) {
            return rc;
        }
        for (int b = 0; b < B; b++) {
            size_t p = (size_t)b * T + lens[b] - 1;
            correct += argmax(e->logits + p * e->V, e->V) == e->tgt[p];
        }
        done += B;
    }
    *acc = (double)correct / n;
    return LINA_OK;
}

/* mqar: query accuracy averaged over n fresh sequences of stream rng */
static int mqar_acc(eval_ctx *e, const lina_task_opts *o, const lina_group *g, uint64_t *rng, int n, double *acc)
{
    double sum = 0.0;
    int done = 0, rc = LINA_OK;
    while (done < n && !rc) {
        int B = n - done < EVAL_B ? n - done : EVAL_B, T = 0;
        rc = lina_task_batch(o, g, rng, B, o->seq_len, e->tok, e->tgt, &T);
        rc = rc ? rc : lina_model_forward_logits(e->m, e->tok, B, T, e->logits, e->ws);
        for (int b = 0; b < B && !rc; b++) {
            int q = 0, ok = 0;
            for (int t = 0; t < T; t++) {
                size_t p = (size_t)b * T + t;
                if (e->tgt[p] != LINA_TASK_IGNORE) {
                    q++;
                    ok += argmax(e->logits + p * e->V, e->V) == e->tgt[p];
                }
            }
            sum += q ? (double)ok / q : 0.0;
        }
        done += B;
    }
    *acc = sum / n;
    return rc;
}

/* s3/s5: the share of n fresh sequences of length T (<= the buffers' length) whose predictions are
 * all right */
static int group_seq_acc(eval_ctx *e, const lina_group *g, uint64_t *rng, int T, int n, double *acc)
{
    int ok = 0, done = 0, rc = LINA_OK;
    while (done < n && !rc) {
        int B = n - done < EVAL_B ? n - done : EVAL_B;
        for (int b = 0; b < B; b++) {
            lina_group_example(g, rng, T, e->tok + (size_t)b * T, e->tgt + (size_t)b * T);
        }
        rc = lina_model_forward_logits(e->m, e->tok, B, T, e->logits, e->ws);
        for (int b = 0; b < B && !rc; b++) {
            int all = 1;
            for (int t = 0; t < T && all; t++) {
                size_t p = (size_t)b * T + t;
                all = argmax(e->logits + p * e->V, e->V) == e->tgt[p];
            }
            ok += all;
        }
        done += B;
    }
    *acc = (double)ok / n;
    return rc;
}

/* accuracy on the training distribution (the fit measure of lina_task_fit) over the validation
 * stream of the seed: the same val_n sequences at every call */
static int validate(eval_ctx *e, const lina_task_opts *o, const lina_group *g, double *acc)
{
    uint64_t rng = o->seed * 0xC2B2AE3D27D4EB4Full ^ 0x7A11DA7Eull;
    lina_splitmix64(&rng);
    switch (o->kind) {
    case LINA_TASK_MQAR:
        return mqar_acc(e, o, g, &rng, o->val_n, acc);
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH:
        return eval_len(e, o, &rng, -1, o->val_n, acc);
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        return group_seq_acc(e, g, &rng, o->seq_len, o->val_n, acc);
    }
    return LINA_OK;
}

double lina_task_fit(const lina_task_opts *o, const lina_task_result *r)
{
    return o->kind == LINA_TASK_MQAR ? r->test_acc : r->train_acc;
}

static int evaluate(eval_ctx *e, const lina_task_opts *o, const lina_group *g, lina_task_result *r)
{
    uint64_t rng = o->seed * 0x9E3779B97F4A7C15ull ^ 0x7E57DA7A5EEDull; /* the test stream */
    lina_splitmix64(&rng);
    int rc = LINA_OK;
    if (o->kind == LINA_TASK_MQAR) {
        rc = mqar_acc(e, o, g, &rng, o->eval_n, &r->test_acc);
        r->test_scaled = r->test_acc;
        r->train_acc = NAN;
        return rc;
    }
    if (o->kind == LINA_TASK_PARITY || o->kind == LINA_TASK_MODARITH) {
        const double C = o->kind == LINA_TASK_PARITY ? 2.0 : (double)LINA_MODARITH_MOD;
        r->nlens = 12;
        for (int i = 0; i < 4; i++) {
            r->lens[i] = o->train_min + (o->train_max - o->train_min) * (i + 1) / 4;
        }
        for (int i = 0; i < 8; i++) {
            r->lens[4 + i] = o->test_min + (o->test_max - o->test_min) * i / 7;
        }
        for (int i = 0; i < 12; i++) {
            if (o->kind == LINA_TASK_MODARITH) {
                r->lens[i] -= r->lens[i] % 2;
                r->lens[i] = r->lens[i] < 4 ? 4 : r->lens[i];
            }
        }
        double sum = 0.0;
        for (int i = 0; i < 12 && !rc; i++) {
            rc = eval_len(e, o, &rng, r->lens[i], o->eval_n, &r->acc_at[i]);
            sum += i >= 4 ? r->acc_at[i] : 0.0;
        }
        rc = rc ? rc : eval_len(e, o, &rng, -1, o->eval_n, &r->train_acc);
        r->test_acc = sum / 8.0;
        r->test_scaled = (r->test_acc - 1.0 / C) / (1.0 - 1.0 / C);
        return rc;
    }
    /* s3 / s5: token accuracy and sequence accuracy by length over test_max positions */
    const int T = o->test_max;
    int *first_wrong = malloc(sizeof(int) * (size_t)o->eval_n);
    r->seq_acc = calloc((size_t)T, sizeof(double));
    if (!first_wrong || !r->seq_acc) {
        free(first_wrong);
        return lina_set_error(LINA_ENOMEM, "task: out of memory");
    }
    r->seq_acc_n = T;
    int64_t tok_ok = 0;
    int done = 0;
    while (done < o->eval_n && !rc) {
        int B = o->eval_n - done < EVAL_B ? o->eval_n - done : EVAL_B;
        for (int b = 0; b < B; b++) {
            lina_group_example(g, &rng, T, e->tok + (size_t)b * T, e->tgt + (size_t)b * T);
        }
        rc = lina_model_forward_logits(e->m, e->tok, B, T, e->logits, e->ws);
        for (int b = 0; b < B && !rc; b++) {
            int fw = T;
            for (int t = 0; t < T; t++) {
                size_t p = (size_t)b * T + t;
                int ok = argmax(e->logits + p * e->V, e->V) == e->tgt[p];
                tok_ok += ok;
                if (!ok && fw == T) {
                    fw = t;
                }
            }
            first_wrong[done + b] = fw;
        }
        done += B;
    }
    if (!rc) {
        for (int l = 0; l < T; l++) {
            int n = 0;
            for (int i = 0; i < o->eval_n; i++) {
                n += first_wrong[i] > l;
            }
            r->seq_acc[l] = (double)n / o->eval_n;
        }
        r->test_acc = r->test_scaled = (double)tok_ok / ((double)o->eval_n * T);
        int lt = o->seq_len < T ? o->seq_len : T;
        r->train_acc = r->seq_acc[lt - 1];
        r->nlens = 0;
        for (int l = 8; l <= T && r->nlens < LINA_TASK_MAX_LENS; l *= 2) {
            r->lens[r->nlens] = l;
            r->acc_at[r->nlens++] = r->seq_acc[l - 1];
        }
        if (r->nlens == 0 || r->lens[r->nlens - 1] != T) {
            if (r->nlens == LINA_TASK_MAX_LENS) {
                r->nlens--;
            }
            r->lens[r->nlens] = T;
            r->acc_at[r->nlens++] = r->seq_acc[T - 1];
        }
    }
    free(first_wrong);
    return rc;
}

void lina_task_result_free(lina_task_result *r)
{
    if (r) {
        free(r->seq_acc);
        r->seq_acc = NULL;
        r->seq_acc_n = 0;
    }
}

static void progress(const lina_task_opts *o, int tty, int step, double loss, double t0, int done)
{
    double el = lina_now() - t0;
    double eta = step > 0 ? el / step * (o->steps - step) : 0.0;
    const char *tag = o->tag ? o->tag : lina_task_name(o->kind);
    if (tty) {
        fprintf(stderr, "\r%s: step %d/%d  loss %.4f  %.1f s  eta %.0f s   %s", tag, step, o->steps, loss, el, eta,
                done ? "\n" : "");
    } else {
        fprintf(stderr, "%s: step %d/%d  loss %.4f  %.1f s  eta %.0f s\n", tag, step, o->steps, loss, el, eta);
    }
    fflush(stderr);
}

int lina_task_run(const lina_task_opts *o, lina_task_result *r)
{
    memset(r, 0, sizeof *r);
    int rc = check_opts(o);
    lina_config cfg;
    rc = rc ? rc : lina_task_config(o, &cfg);
    if (rc) {
        return rc;
    }
    if (o->threads > 0) {
        lina_set_threads(o->threads);
    }
    const double t0 = lina_now(), c0 = lina_cpu_now();
    lina_group grp;
    memset(&grp, 0, sizeof grp);
    fixed_set fs;
    memset(&fs, 0, sizeof fs);
    if (o->kind == LINA_TASK_S3 || o->kind == LINA_TASK_S5) {
        if ((rc = lina_group_init_sym(&grp, o->kind == LINA_TASK_S3 ? 3 : 5))) {
            return rc;
        }
    }
    lina_model *m = NULL;
    lina_adamw opt;
    memset(&opt, 0, sizeof opt);
    lina_ws ws;
    lina_ws_init(&ws);
    const int Tmax = task_max_len(o), V = cfg.vocab_size;
    const int BT = o->batch > EVAL_B ? o->batch : EVAL_B;
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)BT * Tmax);
    int32_t *tgt = malloc(sizeof(int32_t) * (size_t)BT * Tmax);
    float *logits = malloc(sizeof(float) * (size_t)EVAL_B * Tmax * V);
    double *losses = malloc(sizeof(double) * (size_t)o->steps);
    if (!tok || !tgt || !logits || !losses) {
        rc = lina_set_error(LINA_ENOMEM, "task: out of memory");
        goto done;
    }
    if ((rc = lina_model_create(&cfg, o->seed, &m))) {
        goto done;
    }
    if (o->slow_decay && (rc = slow_decay_init(m)) != LINA_OK) {
        if (rc == LINA_EINVAL) {
            rc = lina_set_error(LINA_EINVAL, "task: --slow-decay-init: %s has no per-head decay gate (A_log, dt_bias)",
                                lina_model_type_name(cfg.model_type));
        }
        goto done;
    }
    r->num_params = lina_model_num_params(m);
    r->state_floats = state_floats(&cfg);
    if ((rc = lina_adamw_init(&opt, r->num_params))) {
        goto done;
    }
    opt.beta1 = 0.9;
    opt.beta2 = 0.999;
    opt.weight_decay = o->weight_decay;
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const int64_t *shape;
        int ndim, decay;
        size_t off;
        if ((rc = lina_model_tensor(m, i, NULL, &ndim, &shape, &off, &decay))) {
            goto done;
        }
        size_t cnt = 1;
        for (int k = 0; k < ndim; k++) {
            cnt *= (size_t)shape[k];
        }
        if ((rc = lina_adamw_set_decay(&opt, off, cnt, decay))) {
            goto done;
        }
    }
    eval_ctx e = {m, &ws, V, tok, tgt, logits};
    if (o->train_n > 0 && (rc = fixed_init(&fs, o, o->batch))) {
        goto done;
    }
    const int vevery = o->eval_every > 0 ? o->eval_every : (o->steps >= 20 ? o->steps / 20 : 1);
    int validated_at = -1;
    r->val_acc = NAN;
    lina_lr_sched sched = {o->lr, 0.0, o->warmup >= 0 ? o->warmup : o->steps / 10, o->steps};
    uint64_t rng = o->seed * 0xD1B54A32D192ED03ull + 0x5EED0001ull; /* the training stream */
    lina_splitmix64(&rng);
    const int tty = o->progress && isatty(fileno(stderr));
    const int every = tty ? (o->steps >= 50 ? o->steps / 50 : 1) : (o->steps >= 10 ? o->steps / 10 : 1);
    double ema = NAN;
    float *params = lina_model_params(m), *grads = lina_model_grads(m);
    for (int step = 0; step < o->steps; step++) {
        int T = 0;
        if (o->train_n > 0) {
            fixed_batch(&fs, o, &grp, o->batch, tok, tgt, &T);
        } else if ((rc = lina_task_batch(o, &grp, &rng, o->batch, Tmax, tok, tgt, &T))) {
            goto done;
        }
        double loss = 0.0;
        lina_model_zero_grad(m);
        if ((rc = lina_model_train_step(m, tok, tgt, o->batch, T, &loss, &ws))) {
            goto done;
        }
        double gn = lina_grad_norm(grads, r->num_params);
        if (!isfinite(loss) || !isfinite(gn)) {
            rc = lina_set_error(LINA_ENONFINITE, "%s: non-finite loss or gradient at step %d",
                                lina_task_name(o->kind), step + 1);
            goto done;
        }
        rc = lina_adamw_step(&opt, params, grads, lina_lr_at(&sched, step), lina_clip_factor(gn, o->clip));
        if (rc) {
            goto done;
        }
        losses[step] = loss;
        if (o->curve) {
            o->curve[step] = loss;
        }
        ema = isnan(ema) ? loss : 0.9 * ema + 0.1 * loss;
        r->steps_done = step + 1;
        if (o->target > 0.0 && ((step + 1) % vevery == 0 || step + 1 == o->steps)) {
            if ((rc = validate(&e, o, &grp, &r->val_acc))) {
                goto done;
            }
            validated_at = step + 1;
            if (r->val_acc >= o->target) { /* early stop: the target accuracy is reached */
                r->stopped_early = step + 1 < o->steps;
                if (o->progress) {
                    progress(o, tty, step + 1, ema, t0, 1);
                }
                break;
            }
        }
        if (o->progress && ((step + 1) % every == 0 || step + 1 == o->steps)) {
            progress(o, tty, step + 1, ema, t0, step + 1 == o->steps);
        }
    }
    const int nd = r->steps_done;
    int tail = nd / 10 > 0 ? nd / 10 : 1;
    double s = 0.0;
    for (int i = nd - tail; i < nd; i++) {
        s += losses[i];
    }
    r->final_loss = s / tail;
    r->epochs = o->train_n > 0 ? (double)nd * o->batch / o->train_n : 0.0;
    if (validated_at != nd && (rc = validate(&e, o, &grp, &r->val_acc))) {
        goto done;
    }
    rc = evaluate(&e, o, &grp, r);
done:
    fixed_free(&fs);
    r->wall_s = lina_now() - t0;
    r->cpu_s = lina_cpu_now() - c0;
    if (rc) {
        lina_task_result_free(r);
    }
    lina_model_free(m);
    lina_adamw_free(&opt);
    lina_ws_free(&ws);
    lina_group_free(&grp);
    free(tok);
    free(tgt);
    free(logits);
    free(losses);
    return rc;
}

/* mean, spread and fit of the first n seeds of sw (sw->nseeds = n) */
static void sweep_stats(const lina_task_opts *o, lina_task_sweep *sw, int n)
{
    double s1 = 0.0, s2 = 0.0, f1 = 0.0;
    sw->nseeds = n;
    sw->min = sw->fit_min = INFINITY;
    sw->max = -INFINITY;
    for (int si = 0; si < n; si++) {
        lina_task_opts x = *o;
        x.seed = o->seed + (uint64_t)si;
        double v = sw->run[si].test_scaled, f = lina_task_fit(&x, &sw->run[si]);
        s1 += v;
        s2 += v * v;
        f1 += f;
        sw->min = v < sw->min ? v : sw->min;
        sw->max = v > sw->max ? v : sw->max;
        sw->fit_min = f < sw->fit_min ? f : sw->fit_min;
    }
    sw->mean = s1 / n;
    sw->sd = n > 1 ? sqrt(fmax(0.0, (s2 - n * sw->mean * sw->mean) / (n - 1))) : 0.0;
    sw->fit_mean = f1 / n;
}

int lina_task_sweep_run(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, lina_task_sweep *sw)
{
    memset(sw, 0, sizeof *sw);
    return lina_task_sweep_resume(o, lrs, nlr, nseeds, sw, 0, NULL, NULL);
}

int lina_task_sweep_resume(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, lina_task_sweep *sw,
                           int have_seeds, lina_task_seed_done done, void *ctx)
{
    if (nlr < 1 || nlr > LINA_TASK_MAX_LRS || nseeds < 1 || nseeds > LINA_TASK_MAX_SEEDS || have_seeds < 0 ||
        have_seeds > nseeds) {
        return lina_set_error(LINA_EINVAL, "task: 1 to %d learning rates and 1 to %d seeds", LINA_TASK_MAX_LRS,
                              LINA_TASK_MAX_SEEDS);
    }
    for (int i = 0; i < nlr; i++) {
        if (!(lrs[i] > 0.0) || !isfinite(lrs[i])) {
            return lina_set_error(LINA_EINVAL, "task: learning rates must be positive");
        }
    }
    if (have_seeds == 0) {
        sw->wall_s = sw->cpu_s = 0.0;
        sw->runs = 0;
    }
    for (int si = have_seeds; si < nseeds; si++) {
        int have = 0;
        for (int li = 0; li < nlr; li++) {
            lina_task_opts x = *o;
            x.seed = o->seed + (uint64_t)si;
            x.lr = lrs[li];
            lina_task_result r;
            int rc = lina_task_run(&x, &r);
            if (rc) {
                for (int k = 0; k < si; k++) {
                    lina_task_result_free(&sw->run[k]);
                }
                if (have) {
                    lina_task_result_free(&sw->run[si]);
                }
                return rc;
            }
            sw->wall_s += r.wall_s;
            sw->cpu_s += r.cpu_s;
            sw->runs++;
            const lina_task_result *b = &sw->run[si];
            int better = !have || r.val_acc > b->val_acc ||
                         (r.val_acc == b->val_acc && r.steps_done < b->steps_done);
            if (better) {
                if (have) {
                    lina_task_result_free(&sw->run[si]);
                }
                sw->run[si] = r;
                sw->lr[si] = x.lr;
                have = 1;
            } else {
                lina_task_result_free(&r);
            }
        }
        if (done && si + 1 < nseeds) {
            sweep_stats(o, sw, si + 1);
            done(sw, ctx);
        }
    }
    sweep_stats(o, sw, nseeds);
    return LINA_OK;
}

/* ------------------------------------------------- decay gates at init */

int lina_task_decay_gates(const lina_model *m, lina_task_gate *g, int max)
{
    const int nt = lina_model_num_tensors(m);
    int found = 0;
    for (int i = 0; i < nt; i++) {
        const char *name;
        int nd;
        const int64_t *sh;
        size_t off;
        lina_model_tensor(m, i, &name, &nd, &sh, &off, NULL);
        const size_t nl = strlen(name);
        if (nd != 1 || nl < 5 || strcmp(name + nl - 5, "A_log") != 0) {
            continue;
        }
        for (int k = 0; k < nt; k++) { /* the dt_bias of the same layer, one per head */
            const char *nk;
            int ndk;
            const int64_t *shk;
            size_t offk;
            lina_model_tensor(m, k, &nk, &ndk, &shk, &offk, NULL);
            if (ndk == 1 && shk[0] == sh[0] && strlen(nk) == nl + 2 && strncmp(nk, name, nl - 5) == 0 &&
                strcmp(nk + nl - 5, "dt_bias") == 0) {
                if (found < max) {
                    g[found].a_log = off;
                    g[found].dt_bias = offk;
                    g[found].heads = sh[0];
                }
                found++;
                break;
            }
        }
    }
    return found;
}

/* the model's gates (malloc'd, *n of them; NULL with *n = 0 when it has none) */
static lina_task_gate *decay_gates(const lina_model *m, int *n)
{
    *n = lina_task_decay_gates(m, NULL, 0);
    lina_task_gate *g = *n > 0 ? malloc(sizeof *g * (size_t)*n) : NULL;
    if (!g) {
        *n = 0;
        return NULL;
    }
    lina_task_decay_gates(m, g, *n);
    return g;
}

/* the slow end of the init range in every head: A = 1, softplus(dt_bias) = LINA_TASK_SLOW_DT;
 * LINA_EINVAL when the model has no such gate */
static int slow_decay_init(lina_model *m)
{
    int n;
    lina_task_gate *g = decay_gates(m, &n);
    if (!g) {
        return lina_task_decay_gates(m, NULL, 0) > 0 ? lina_set_error(LINA_ENOMEM, "task: out of memory")
                                                     : LINA_EINVAL;
    }
    float *w = lina_model_params(m);
    const double dt = LINA_TASK_SLOW_DT;
    const float dt_bias = (float)(dt + log(-expm1(-dt))); /* softplus^-1(dt) */
    for (int i = 0; i < n; i++) {
        for (int64_t h = 0; h < g[i].heads; h++) {
            w[g[i].a_log + (size_t)h] = 0.0f;
            w[g[i].dt_bias + (size_t)h] = dt_bias;
        }
    }
    free(g);
    return LINA_OK;
}

double lina_task_init_halflife(const lina_task_opts *o, int seed)
{
    lina_task_opts x = *o;
    x.seed = (uint64_t)seed;
    lina_config cfg;
    lina_model *m = NULL;
    if (lina_task_config(&x, &cfg) != LINA_OK || lina_model_create(&cfg, x.seed, &m) != LINA_OK) {
        return NAN;
    }
    if (x.slow_decay && slow_decay_init(m) != LINA_OK) {
        lina_model_free(m);
        return NAN;
    }
    int n;
    lina_task_gate *g = decay_gates(m, &n);
    const float *w = lina_model_params(m);
    double best = NAN;
    for (int i = 0; i < n; i++) {
        for (int64_t h = 0; h < g[i].heads; h++) {
            const double b = w[g[i].dt_bias + (size_t)h];
            const double sp = b > 20 ? b : log1p(exp(b));
            const double hl = log(2.0) / (exp((double)w[g[i].a_log + (size_t)h]) * sp);
            best = isnan(best) || hl > best ? hl : best;
        }
    }
    free(g);
    lina_model_free(m);
    return best;
}

int lina_task_describe(const lina_task_opts *o, char *buf, size_t n)
{
    lina_config c;
    int rc = lina_task_config(o, &c);
    if (rc) {
        return rc;
    }
    const lina_model_type t = c.model_type;
    const int tr = t == LINA_MODEL_TRANSFORMER, m2 = t == LINA_MODEL_MAMBA2, m1 = t == LINA_MODEL_MAMBA,
              rw = t == LINA_MODEL_RWKV7;
    char conv[96], pos[64];
    if (m2 || m1) {
        snprintf(conv, sizeof conv, "%s's own conv1d (size %d)", m2 ? "Mamba2" : "Mamba", c.conv_kernel);
    } else if (rw) {
        snprintf(conv, sizeof conv, "token shift, no short conv");
    } else if (c.use_short_conv) {
        snprintf(conv, sizeof conv, "short conv (size %d, SiLU) on %s", c.conv_size,
                 t == LINA_MODEL_HGRN ? "the input and forget gates" : "q/k/v");
    } else {
        snprintf(conv, sizeof conv, "no short conv");
    }
    if (tr) {
        snprintf(pos, sizeof pos, "RoPE (base %g)", c.rope_theta > 0 ? c.rope_theta : 10000.0);
    } else if (t == LINA_MODEL_RETNET) {
        snprintf(pos, sizeof pos, "RoPE in the retention (xPos-style)");
    } else {
        snprintf(pos, sizeof pos, "no position encoding");
    }
    char mlps[64];
    if (rw) {
        snprintf(mlps, sizeof mlps, "RWKV-7's own feed-forward (relu^2, width %d)", c.intermediate_size);
    } else if (!m2 && !m1 && !c.no_mlp) {
        snprintf(mlps, sizeof mlps, "GatedMLP width %d", c.intermediate_size);
    } else {
        snprintf(mlps, sizeof mlps, "no MLP");
    }
    char extra[96] = "";
    if (t == LINA_MODEL_GLA) {
        snprintf(extra, sizeof extra, ", expand_k %g, %s", c.expand_k, c.use_output_gate ? "output gate" : "no output gate");
    } else if (t == LINA_MODEL_LINEAR_ATTN) {
        snprintf(extra, sizeof extra, ", feature map %s", c.feature_map);
    } else if (t == LINA_MODEL_HGRN2) {
        snprintf(extra, sizeof extra, " (HGRN2 has no short conv in lina)");
    } else if (m1) {
        snprintf(extra, sizeof extra, ", inner width %d, state %d, dt_rank %d", c.intermediate_size, c.state_size,
                 c.dt_rank);
    }
    char init[256];
    if (m2) {
        snprintf(init, sizeof init,
                 "Mamba2 paper's (in_proj, conv1d U(+-1/sqrt(fan_in)), A ~ U[1, 16), dt log-uniform in [%g, %g])",
                 c.dt_min, c.dt_max);
    } else if (m1) {
        snprintf(init, sizeof init, "Mamba's (A_log = log 1..N, dt log-uniform in [%g, %g], weights N(0, %g))",
                 c.dt_min, c.dt_max, c.initializer_range);
    } else if (t == LINA_MODEL_GATED_DELTANET || t == LINA_MODEL_MOM) {
        snprintf(init, sizeof init, "weights N(0, %g), decay gate FLA's (A ~ U(0, 16], dt log-uniform in [0.001, 0.1])",
                 c.initializer_range);
    } else {
        snprintf(init, sizeof init, "weights N(0, %g)", c.initializer_range);
    }
    if (o->slow_decay) {
        const size_t l = strlen(init);
        snprintf(init + l, sizeof init - l, "; then every decay gate at A = 1, dt = %g (half-life %.0f tokens)",
                 LINA_TASK_SLOW_DT, log(2.0) / LINA_TASK_SLOW_DT);
    }
    snprintf(buf, n, "%s: %d layers, d %d, %d head(s), %s, %s, %s%s, init %s", lina_model_type_name(t),
             c.num_hidden_layers, c.hidden_size, c.num_heads, mlps, conv, pos, extra, init);
    return LINA_OK;
}
