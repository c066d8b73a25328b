/* linearize.c -- the pieces of `lina linearize` (docs/linearize.md): tensors
 * copied by name between configs, LoRA merge, and a trainer view that
 * freezes every tensor but the ones named. */
#include "linearize.h"

#include "../model/model.h"
#include "../nn/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t numel(int nd, const int64_t *sh)
{
    size_t n = 1;
    for (int i = 0; i < nd; i++) {
        n *= (size_t)sh[i];
    }
    return n;
}

int lina_model_copy_tensors(lina_model *dst, const lina_model *src)
{
    const float *ps = lina_model_params((lina_model *)src);
    float *pd = lina_model_params(dst);
    for (int i = 0; i < lina_model_num_tensors(src); i++) {
        const char *name;
        int nd, nd2;
        const int64_t *sh, *sh2;
        size_t off, off2;
        lina_model_tensor(src, i, &name, &nd, &sh, &off, NULL);
        int j = lina_model_find_tensor(dst, name);
        if (j < 0) {
            return lina_set_error(LINA_EINVAL, "copying tensors: %s has no place in the new model", name);
        }
        lina_model_tensor(dst, j, NULL, &nd2, &sh2, &off2, NULL);
        if (nd != nd2 || memcmp(sh, sh2, (size_t)nd * sizeof *sh) != 0) {
            return lina_set_error(LINA_EINVAL, "copying tensors: %s has another shape in the new model", name);
        }
        memcpy(pd + off2, ps + off, numel(nd, sh) * sizeof(float));
    }
    return LINA_OK;
}

int lina_model_reconfigure(const lina_model *m, const lina_config *cfg, uint64_t seed, lina_model **out)
{
    *out = NULL;
    lina_model *n = NULL;
    int rc = lina_model_create(cfg, seed, &n);
    if (!rc && (rc = lina_model_copy_tensors(n, m))) {
        lina_model_free(n);
        n = NULL;
    }
    *out = n;
    return rc;
}

/* view of tensor `name` or NULL */
static float *view(lina_model *m, const char *name)
{
    int i = lina_model_find_tensor(m, name);
    size_t off;
    return i < 0 || lina_model_tensor(m, i, NULL, NULL, NULL, &off, NULL) ? NULL : lina_model_params(m) + off;
}

int lina_model_merge_lora(const lina_model *m, lina_model **out)
{
    *out = NULL;
    const lina_config *c = lina_model_config(m);
    if (c->lora_rank <= 0) {
        return lina_set_error(LINA_EINVAL, "merge LoRA: the model has no LoRA adapters (lora_rank 0)");
    }
    lina_config nc = *c;
    nc.lora_rank = 0;
    lina_model *n = NULL;
    int rc = lina_model_create(&nc, 0, &n);
    if (rc) {
        return rc;
    }
    /* every tensor but the adapters, by name */
    const float *ps = lina_model_params((lina_model *)m);
    float *pd = lina_model_params(n);
    for (int i = 0; i < lina_model_num_tensors(n); i++) {
        const char *name;
        int nd;
        const int64_t *sh;
        size_t off, off2;
        lina_model_tensor(n, i, &name, &nd, &sh, &off, NULL);
        int j = lina_model_find_tensor(m, name);
        lina_model_tensor(m, j, NULL, NULL, NULL, &off2, NULL);
        memcpy(pd + off, ps + off2, numel(nd, sh) * sizeof(float));
    }
    int r = c->lora_rank, D = c->hidden_size, HQ = c->hidden_size;
    float s = (float)(c->lora_alpha / r);
    static const char *const proj[4] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int l = 0; l < c->num_hidden_layers && !rc; l++) {
        for (int p = 0; p < 4; p++) {
            char nw[96], na[96], nb[96];
            snprintf(nw, sizeof nw, "model.layers.%d.attn.%s.weight", l, proj[p]);
            snprintf(na, sizeof na, "model.layers.%d.attn.%s.lora_A.weight", l, proj[p]);
            snprintf(nb, sizeof nb, "model.layers.%d.attn.%s.lora_B.weight", l, proj[p]);
            float *W = view(n, nw), *A = view((lina_model *)m, na), *B = view((lina_model *)m, nb);
            if (!W || !A || !B) {
                rc = lina_set_error(LINA_EINVAL, "merge LoRA: %s or its adapter is missing", nw);
                break;
            }
            lina_lora_merge(W, A, B, s, p == 3 ? HQ : D, p == 3 ? D : HQ, r);
        }
    }
    if (rc) {
        lina_model_free(n);
        return rc;
    }
    *out = n;
    return LINA_OK;
}

/* ------------------------------------------------------------ frozen view */

struct lina_frozen {
    lina_trainable inner;
    lina_model *m;
    unsigned char *train; /* per tensor */
};

static size_t f_num_params(const void *s)
{
    const lina_frozen *f = s;
    return f->inner.num_params(f->inner.self);
}

static float *f_params(void *s)
{
    lina_frozen *f = s;
    return f->inner.params(f->inner.self);
}

static float *f_grads(void *s)
{
    lina_frozen *f = s;
    return f->inner.grads(f->inner.self);
}

static void f_zero_grad(void *s)
{
    lina_frozen *f = s;
    f->inner.zero_grad(f->inner.self);
}

static int f_num_tensors(const void *s)
{
    const lina_frozen *f = s;
    return f->inner.num_tensors(f->inner.self);
}

static int f_tensor(const void *s, int i, const char **name, int *ndim, const int64_t **shape, size_t *offset,
                    int *decay)
{
    const lina_frozen *f = s;
    int rc = f->inner.tensor(f->inner.self, i, name, ndim, shape, offset, decay);
    if (!rc && decay && !f->train[i]) {
        *decay = 0;
    }
    return rc;
}

static int f_train_step(void *s, const int32_t *tok, const int32_t *tgt, int B, int T, double *loss, lina_ws *ws)
{
    lina_frozen *f = s;
    int rc = f->inner.train_step(f->inner.self, tok, tgt, B, T, loss, ws);
    float *g = f->inner.grads(f->inner.self);
    for (int i = 0; !rc && i < f->inner.num_tensors(f->inner.self); i++) {
        int nd;
        const int64_t *sh;
        size_t off;
        f->inner.tensor(f->inner.self, i, NULL, &nd, &sh, &off, NULL);
        if (!f->train[i]) {
            memset(g + off, 0, numel(nd, sh) * sizeof(float));
        }
    }
    return rc;
}

static int f_eval_loss(void *s, const int32_t *tok, const int32_t *tgt, int B, int T, double *loss, lina_ws *ws)
{
    lina_frozen *f = s;
    return f->inner.eval_loss(f->inner.self, tok, tgt, B, T, loss, ws);
}

static int f_save(const void *s, const char *dir)
{
    const lina_frozen *f = s;
    return f->inner.save(f->inner.self, dir);
}

int lina_frozen_create(lina_model *m, const char *const *patterns, lina_frozen **out, lina_trainable *tr,
                       size_t *ntrain)
{
    *out = NULL;
    lina_frozen *f = calloc(1, sizeof *f);
    int nt = lina_model_num_tensors(m);
    if (!f || !(f->train = calloc((size_t)(nt > 0 ? nt : 1), 1))) {
        free(f);
        return lina_set_error(LINA_ENOMEM, "out of memory");
    }
    int rc = lina_trainable_from_model(m, &f->inner);
    size_t n = 0;
    for (int i = 0; !rc && i < nt; i++) {
        const char *name;
        int nd;
        const int64_t *sh;
        lina_model_tensor(m, i, &name, &nd, &sh, NULL, NULL);
        for (int p = 0; patterns[p]; p++) {
            f->train[i] |= strstr(name, patterns[p]) != NULL;
        }
        n += f->train[i] ? numel(nd, sh) : 0;
    }
    if (!rc && n == 0) {
        rc = lina_set_error(LINA_EINVAL, "no tensor of the model is trainable (none matches)");
    }
    if (rc) {
        lina_frozen_free(f);
        return rc;
    }
    f->m = m;
    memset(tr, 0, sizeof *tr);
    tr->self = f;
    tr->num_params = f_num_params;
    tr->params = f_params;
    tr->grads = f_grads;
    tr->zero_grad = f_zero_grad;
    tr->num_tensors = f_num_tensors;
    tr->tensor = f_tensor;
    tr->train_step = f_train_step;
    tr->eval_loss = f_eval_loss;
    tr->save = f_save;
    tr->vocab_size = f->inner.vocab_size;
    *ntrain = n;
    *out = f;
    return LINA_OK;
}

void lina_frozen_free(lina_frozen *f)
{
    if (f) {
        free(f->train);
        free(f);
    }
}
