/* dist_train.c -- the data- and sequence-parallel parts of a training update
 * (the MPI calls themselves are in src/dist): which part of the global batch
 * a rank computes, the weighting that makes the summed gradient the gradient
 * of the global mean loss, the bucketed all-reduce, and the start-up check
 * that every rank runs the same configuration. */
#include "../dist/dist.h"
#include "../nn/kind.h"
#include "train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lina_dist_part(const lina_dist *d, int B, int T, int *b0, int *nb, int *t0, int *tn)
{
    int R = lina_dist_dp_size(d), r = lina_dist_dp_rank(d);
    int S = lina_dist_sp_size(d), p = lina_dist_sp_rank(d);
    *b0 = (int)((int64_t)B * r / R);
    *nb = (int)((int64_t)B * (r + 1) / R) - *b0;
    *t0 = (int)((int64_t)T * p / S);
    *tn = (int)((int64_t)T * (p + 1) / S) - *t0;
}

int lina_dist_check_shape(const lina_dist *d, int B, int T)
{
    if (lina_dist_dp_size(d) > B) {
        return lina_set_error(LINA_EINVAL, "--batch %d is smaller than the %d data-parallel ranks: every rank "
                                           "needs at least one sequence of the global batch",
                              B, lina_dist_dp_size(d));
    }
    if (lina_dist_sp_size(d) > T) {
        return lina_set_error(LINA_EINVAL, "--seq-len %d is shorter than the %d sequence-parallel pieces", T,
                              lina_dist_sp_size(d));
    }
    return LINA_OK;
}

static int64_t count_targets(const int32_t *tgt, size_t n)
{
    int64_t c = 0;
    for (size_t i = 0; i < n; i++) {
        c += tgt[i] != LINA_IGNORE_INDEX;
    }
    return c;
}

static void scale(float *g, size_t n, double s)
{
    const float f = (float)s;
    for (size_t i = 0; i < n; i++) {
        g[i] *= f;
    }
}

static int sp_allgather(void *ctx, const float *send, size_t n, float *recv)
{
    return lina_dist_allgather_f(ctx, LINA_DIST_SP, send, n, recv);
}

static int sp_reduce_scatter(void *ctx, const float *send, size_t n, float *recv)
{
    return lina_dist_reduce_scatter_f(ctx, LINA_DIST_SP, send, n, recv);
}

int lina_dist_sp_init(lina_trainable *m, lina_dist *d, int B, int T, lina_sp *sp)
{
    int b0, nb, t0, tn;
    lina_dist_part(d, B, T, &b0, &nb, &t0, &tn);
    memset(sp, 0, sizeof *sp);
    sp->rank = lina_dist_sp_rank(d);
    sp->size = lina_dist_sp_size(d);
    sp->pos0 = t0;
    sp->seq_len = T;
    sp->ctx = d;
    sp->allgather = sp_allgather;
    sp->reduce_scatter = sp_reduce_scatter;
    if (sp->size == 1) {
        return LINA_OK;
    }
    if (!m->set_sp) {
        return lina_set_error(LINA_EINVAL, "--sp: this model does not support sequence parallelism");
    }
    /* a model with a mixer that has no piece summary says so now */
    int rc = m->set_sp(m->self, sp);
    m->set_sp(m->self, NULL);
    return rc;
}

/* The last micro-batch's backward: the gradients final from `from` on are
 * weighted and their buckets' all-reduce started (overlapping the rest of the
 * backward). */
typedef struct grad_flow {
    lina_dist *d;
    float *g;
    float w;      /* the weight (1: none) */
    size_t done;  /* [done, n) weighted */
} grad_flow;

static void grad_ready(void *ctx, size_t from)
{
    grad_flow *f = ctx;
    if (from < f->done) {
        if (f->w != 1.0f) {
            scale(f->g + from, f->done - from, f->w);
        }
        f->done = from;
        lina_dist_sum_ready(f->d, from); /* an MPI error shows again in lina_dist_sum_end */
    }
}

int lina_dist_grads_finish(lina_dist *d, float *g, size_t n)
{
    if (!lina_dist_sum_open(d)) {
        int rc = lina_dist_sum_begin(d, LINA_DIST_WORLD, g, n);
        if (rc) {
            return rc;
        }
    }
    return lina_dist_sum_end(d);
}

int lina_dist_micro(lina_trainable *m, lina_dist *d, lina_sp *sp, const int32_t *tok, const int32_t *tgt, int B,
                    int T, int first, int last, int32_t doc_sep, int32_t *tokl, int32_t *tgtl, double *lsum,
                    lina_ws *ws)
{
    int b0, nb, t0, tn;
    lina_dist_part(d, B, T, &b0, &nb, &t0, &tn);
    for (int b = 0; b < nb; b++) {
        memcpy(tokl + (size_t)b * tn, tok + (size_t)(b0 + b) * T + t0, (size_t)tn * sizeof *tok);
        memcpy(tgtl + (size_t)b * tn, tgt + (size_t)(b0 + b) * T + t0, (size_t)tn * sizeof *tgt);
    }
    const int64_t all = count_targets(tgt, (size_t)B * T);
    const int64_t mine = count_targets(tgtl, (size_t)nb * tn);
    /* The model adds the gradient of its local mean loss; the global mean
     * weights it by mine / all. Earlier micro-batches' gradients are
     * scaled by the inverse first so that only this one is weighted. */
    const double w = all > 0 ? (double)mine / (double)all : 0.0;
    const size_t n = m->num_params(m->self);
    float *g = m->grads(m->self);
    if (!first && w > 0.0) {
        scale(g, n, 1.0 / w);
    }
    double l = 0.0;
    const int use_sp = sp && sp->size > 1;
    if (use_sp) {
        sp->weight = (double)mine;
    }
    int rc = use_sp ? m->set_sp(m->self, sp) : LINA_OK;
    /* the last micro-batch starts the gradient's all-reduce during its backward */
    grad_flow flow = {d, g, w > 0.0 ? (float)w : 1.0f, n};
    const int overlap = last && lina_dist_size(d) > 1 && m->set_grad_hook;
    if (rc == LINA_OK && overlap && (rc = lina_dist_sum_begin(d, LINA_DIST_WORLD, g, n)) == LINA_OK) {
        m->set_grad_hook(m->self, grad_ready, &flow);
    }
    if (rc == LINA_OK && doc_sep >= 0) {
        /* packed documents: this rank's rows split at their separators (the rows' documents are
         * those of the global batch: every row starts one) */
        int64_t *cu = malloc(((size_t)nb * tn + 1) * sizeof *cu), ncu = 0;
        if (!cu) {
            rc = lina_set_error(LINA_ENOMEM, "train: out of memory for a batch's documents");
        } else {
            lina_tok_docs(tokl, tgtl, nb, tn, doc_sep, cu, &ncu);
            rc = m->train_step_varlen(m->self, tokl, tgtl, nb, tn, cu, ncu, &l, ws);
            free(cu);
        }
    } else if (rc == LINA_OK) {
        rc = m->train_step(m->self, tokl, tgtl, nb, tn, &l, ws);
    }
    if (overlap) {
        m->set_grad_hook(m->self, NULL, NULL);
    }
    if (use_sp) {
        m->set_sp(m->self, NULL);
    }
    if (flow.w != 1.0f) {
        scale(g, flow.done, flow.w);
    }
    *lsum = l * w;
    return rc;
}

/* FNV-1a */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ c[i]) * 1099511628211ull;
    }
    return h;
}

int lina_dist_check_same(lina_dist *d, const lina_trainable *m, const lina_train_opts *o, uint64_t data_tokens)
{
    if (lina_dist_size(d) == 1) {
        return LINA_OK;
    }
    uint64_t h[3] = {14695981039346656037ull, 14695981039346656037ull, 14695981039346656037ull};
    /* options that change the result */
    int64_t iv[] = {o->steps, o->batch, o->seq_len, o->accum, o->warmup, (int64_t)o->seed, o->eval_every,
                    o->eval_batches, o->save_every, o->resume, (int64_t)data_tokens};
    double dv[] = {o->lr, o->min_lr_ratio, o->beta1, o->beta2, o->eps, o->weight_decay, o->clip};
    h[0] = fnv(fnv(h[0], iv, sizeof iv), dv, sizeof dv);
    /* the model's tensors: names, shapes, offsets */
    int nt = m->num_tensors(m->self);
    for (int i = 0; i < nt; i++) {
        const char *name;
        const int64_t *shape;
        int ndim, decay;
        size_t off;
        if (m->tensor(m->self, i, &name, &ndim, &shape, &off, &decay) == LINA_OK) {
            h[1] = fnv(fnv(fnv(h[1], name, strlen(name)), shape, (size_t)ndim * sizeof *shape), &off, sizeof off);
        }
    }
    /* the parameter values */
    h[2] = fnv(h[2], m->params(m->self), m->num_params(m->self) * sizeof(float));
    const int W = lina_dist_size(d);
    uint64_t *all = malloc((size_t)W * 3 * sizeof *all);
    if (!all) {
        return lina_set_error(LINA_ENOMEM, "dist: out of memory");
    }
    int rc = lina_dist_allgather_u64(d, LINA_DIST_WORLD, h, 3, all);
    static const char *what[3] = {"training options (steps, batch, seq-len, schedule, optimizer, seed, data file)",
                                  "model (config: tensor names and shapes)", "initial parameters"};
    for (int r = 1; rc == LINA_OK && r < W; r++) {
        for (int k = 0; k < 3; k++) {
            if (all[(size_t)r * 3 + k] != all[k]) {
                rc = lina_set_error(LINA_EINVAL, "rank %d's %s differ from rank 0's: every rank must run the same "
                                                 "command on the same files",
                                    r, what[k]);
                break;
            }
        }
    }
    free(all);
    return rc;
}

uint64_t lina_dist_params_hash(const lina_trainable *m)
{
    return fnv(14695981039346656037ull, m->params(m->self), m->num_params(m->self) * sizeof(float));
}
