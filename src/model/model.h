/* model.h -- internal entry points of src/model (not public API): what the
 * tests and the CLI need beyond the public lina_model_* functions. */
#ifndef LINA_MODEL_INTERNAL_H
#define LINA_MODEL_INTERNAL_H

#include "lina.h"
#include "../nn/kind.h"

/* lina_model_forward_logits with an explicit mixer form: LINA_FORM_CHUNK
 * (what the public function uses) or LINA_FORM_RECURRENT (token by token,
 * the decode path). logits [B,T,vocab]. */
int lina_model_forward_logits_form(lina_model *m, const int32_t *tokens, int B, int T, float *logits,
                                   lina_form form, lina_ws *ws);

/* After a forward pass (lina_model_forward_logits, lina_model_eval_loss), the
 * residual stream entering block l, [B*T, D] row-major: l = 0 is the embedding
 * output, l = L the stream after the last block (before the final norm). NULL
 * when l is out of range or no forward ran. Valid until the next forward. */
const float *lina_model_hidden(const lina_model *m, int l);

/* Replace blocks from..to (0-based, inclusive) by one linear map of the residual
 * stream, x_{to+1} = x_from W^T with W = map [D, D] (nn.Linear layout, copied):
 * every later forward, eval and decode skips those blocks and their state. The
 * model then refuses to train. map NULL restores the original blocks. */
int lina_model_replace_blocks(lina_model *m, int from, int to, const float *map);

/* Index of the view called `name`, or -1. */
int lina_model_find_tensor(const lina_model *m, const char *name);

/* The registry (kinds.c): the kind of the model's own layers (its names,
 * flags and shared tensors; NULL when no kind serves the model_type), of
 * layer `layer` (softmax attention for a hybrid's "attn" layers), and of the
 * feed-forward blocks. */
const lina_mixer_vt *lina_kind_of_model(const lina_config *c);
const lina_mixer_vt *lina_kind_of_layer(const lina_config *c, int layer);
const lina_mixer_vt *lina_kind_of_ffn(const lina_config *c);

/* Sequence parallelism (kind.h): the model's tokens are then one piece of
 * each sequence, and the mixers exchange summaries through sp in training
 * steps (not in evaluation or decoding). NULL turns it off. An error naming
 * the mixer when a layer's kind lacks LINA_KIND_SP. sp must outlive its use. */
int lina_model_set_sp(lina_model *m, const lina_sp *sp);

/* During the backward of the following training steps, fn(ctx, from) is
 * called after each layer (last to first) with the offset from which the
 * gradient buffer is final for the step: that layer's tensors and everything
 * declared after them (the layers of a model are stored in order, after the
 * embeddings). fn NULL turns it off. */
void lina_model_set_grad_hook(lina_model *m, void (*fn)(void *ctx, size_t from), void *ctx);

#endif
