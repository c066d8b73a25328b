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

/* Index of the view called `name`, or -1. */
int lina_model_find_tensor(const lina_model *m, const char *name);

/* The registry (kinds.c): the kind of the model's own layers (its names,
 * flags and shared tensors; NULL when no kind serves the model_type), of
 * layer `layer` (softmax attention for a hybrid's "attn" layers), and of the
 * feed-forward blocks. */
const lina_mixer_vt *lina_kind_of_model(const lina_config *c);
const lina_mixer_vt *lina_kind_of_layer(const lina_config *c, int layer);
const lina_mixer_vt *lina_kind_of_ffn(const lina_config *c);

#endif
