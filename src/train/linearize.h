/* linearize.h -- converting a softmax transformer into linearized attention
 * (docs/linearize.md) and the training pieces the conversion needs: copying
 * tensors by name between models of different configs, adding and merging
 * LoRA adapters, and a trainer view of a model that trains only some of its
 * tensors. */
#ifndef LINA_TRAIN_LINEARIZE_H
#define LINA_TRAIN_LINEARIZE_H

#include "lina.h"

/* Copy every tensor of src into the tensor of dst with the same name and
 * shape. Every tensor of src must have one (an error names the first that
 * has not); tensors only dst has keep their initial values. */
int lina_model_copy_tensors(lina_model *dst, const lina_model *src);

/* A new model from `cfg` holding m's tensors (lina_model_copy_tensors); its
 * own new tensors (feature maps, LoRA adapters, ...) at their initial values
 * with `seed`. */
int lina_model_reconfigure(const lina_model *m, const lina_config *cfg, uint64_t seed, lina_model **out);

/* The model with its LoRA adapters merged into q/k/v/o_proj (W += alpha/r B A)
 * and removed (lora_rank 0). */
int lina_model_merge_lora(const lina_model *m, lina_model **out);

/* A trainer view of m in which only the tensors whose name contains one of
 * `patterns` (NULL-terminated) train: the others get zero gradients after each
 * step and no weight decay, so AdamW leaves them exactly as they are.
 * *ntrain: the trainable parameter count. free with lina_frozen_free. */
typedef struct lina_frozen lina_frozen;
int lina_frozen_create(lina_model *m, const char *const *patterns, lina_frozen **out, lina_trainable *tr,
                       size_t *ntrain);
void lina_frozen_free(lina_frozen *f);

#endif
