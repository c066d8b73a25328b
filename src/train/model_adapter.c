/* model_adapter.c -- lina_model behind the trainer's lina_trainable table. */
#include "lina.h"
#include "../model/model.h"

#include <string.h>

static size_t a_num_params(const void *s)
{
    return lina_model_num_params(s);
}

static float *a_params(void *s)
{
    return lina_model_params(s);
}

static float *a_grads(void *s)
{
    return lina_model_grads(s);
}

static void a_zero_grad(void *s)
{
    lina_model_zero_grad(s);
}

static int a_num_tensors(const void *s)
{
    return lina_model_num_tensors(s);
}

static int a_tensor(const void *s, int i, const char **name, int *ndim, const int64_t **shape,
                    size_t *offset, int *decay)
{
    return lina_model_tensor(s, i, name, ndim, shape, offset, decay);
}

static int a_train_step(void *s, const int32_t *tok, const int32_t *tgt, int B, int T,
                        double *loss, lina_ws *ws)
{
    return lina_model_train_step(s, tok, tgt, B, T, loss, ws);
}

static int a_eval_loss(void *s, const int32_t *tok, const int32_t *tgt, int B, int T,
                       double *loss, lina_ws *ws)
{
    return lina_model_eval_loss(s, tok, tgt, B, T, loss, ws);
}

static int a_train_step_varlen(void *s, const int32_t *tok, const int32_t *tgt, int B, int T, const int64_t *cu,
                               int64_t ncu, double *loss, lina_ws *ws)
{
    return lina_model_train_step_varlen(s, tok, tgt, B, T, cu, ncu, loss, ws);
}

static int a_eval_loss_varlen(void *s, const int32_t *tok, const int32_t *tgt, int B, int T, const int64_t *cu,
                              int64_t ncu, double *loss, lina_ws *ws)
{
    return lina_model_eval_loss_varlen(s, tok, tgt, B, T, cu, ncu, loss, ws);
}

static int a_save(const void *s, const char *dir)
{
    return lina_model_save(s, dir);
}

static int a_set_sp(void *s, const struct lina_sp *sp)
{
    return lina_model_set_sp(s, sp);
}

static void a_set_grad_hook(void *s, void (*fn)(void *ctx, size_t from), void *ctx)
{
    lina_model_set_grad_hook(s, fn, ctx);
}

int lina_trainable_from_model(lina_model *m, lina_trainable *out)
{
    memset(out, 0, sizeof *out);
    if (!m) {
        return lina_set_error(LINA_EINVAL, "trainable: no model");
    }
    out->self = m;
    out->num_params = a_num_params;
    out->params = a_params;
    out->grads = a_grads;
    out->zero_grad = a_zero_grad;
    out->num_tensors = a_num_tensors;
    out->tensor = a_tensor;
    out->train_step = a_train_step;
    out->eval_loss = a_eval_loss;
    out->save = a_save;
    out->train_step_varlen = a_train_step_varlen;
    out->eval_loss_varlen = a_eval_loss_varlen;
    out->set_sp = a_set_sp;
    out->set_grad_hook = a_set_grad_hook;
    out->vocab_size = lina_model_config(m)->vocab_size;
    return LINA_OK;
}
