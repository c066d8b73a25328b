/* train_internal.h -- shared between train.c and checkpoint.c (not public API). */
#ifndef LINA_TRAIN_INTERNAL_H
#define LINA_TRAIN_INTERNAL_H

#include "lina.h"

/* What trainer.json holds. */
typedef struct lina_train_state {
    int64_t step;              /* updates completed */
    int64_t total_steps;
    uint64_t seed, rng;        /* sampling seed and the sampler state after `step` updates */
    int batch, seq_len, accum;
    uint64_t tokens_seen;
    double *losses;            /* [cap] training loss of update i (i < step) */
    double *val_losses;        /* [cap] val loss after update i, NaN if not evaluated */
    int64_t cap;               /* grows with the steps done, not with the steps asked for */
    const lina_train_opts *opts; /* written: the run's options (trainer.json "options") */
} lina_train_state;

int lina_train_state_alloc(lina_train_state *s, int64_t cap);
/* Room for at least n steps (doubling). */
int lina_train_state_reserve(lina_train_state *s, int64_t n);
void lina_train_state_free(lina_train_state *s);
/* Parse trainer.json text (len bytes; `path` names it in messages) into s,
 * allocated for at least the checkpoint's step count. */
int lina_trainer_json_parse(const char *text, size_t len, const char *path, lina_train_state *s);

/* Write the whole checkpoint into a fresh out_dir/checkpoint.tmp-<pid>/ and
 * switch it in place of out_dir/checkpoint atomically. */
int lina_ckpt_write(const char *out_dir, const lina_trainable *m, const lina_adamw *o,
                    const lina_train_state *s, const char *tokenizer_path);
/* Find the last complete checkpoint of out_dir (checkpoint/, or a
 * checkpoint.old-* left by a crash in the middle of a switch) and restore
 * parameters, optimizer and trainer state. s must be allocated for the run's
 * total steps. */
int lina_ckpt_read(const char *out_dir, const lina_trainable *m, lina_adamw *o,
                   lina_train_state *s);
/* The options a checkpoint's run was made with, from its trainer.json: steps,
 * batch, seq_len, accum and seed always; the schedule, optimizer, evaluation,
 * checkpoint and data-path options when recorded. Fields not recorded keep the
 * values *o holds. Strings are allocated into strs[0..3) (data, val,
 * tokenizer; caller frees). */
int lina_ckpt_read_opts(const char *out_dir, lina_train_opts *o, char *strs[3]);
/* 1 if out_dir holds a complete checkpoint (checkpoint/ or a crash's .old). */
int lina_ckpt_exists(const char *out_dir);
/* mkdir -p (one level of parents is enough for our use, but any depth works). */
int lina_mkdirs(const char *path);
/* Remove stale checkpoint.tmp-* / checkpoint.old-* directories of out_dir
 * (called when a run starts, after any resume has read what it needs). */
void lina_ckpt_cleanup(const char *out_dir);

/* ---- distributed training (dist_train.c; the MPI calls are in src/dist) */
struct lina_dist;
/* Rank's part of a global batch [B, T]: sequences b0 .. b0+nb (its dp rank's
 * share), tokens t0 .. t0+tn of each (its sp rank's piece). */
void lina_dist_part(const struct lina_dist *d, int B, int T, int *b0, int *nb, int *t0, int *tn);
/* Every dp rank needs a sequence and every sp rank a token. */
int lina_dist_check_shape(const struct lina_dist *d, int B, int T);
/* One micro-batch of an update on this rank (sp: from lina_dist_sp_init): copy its part of the global
 * batch (tok, tgt [B, T]) into tokl, tgtl, run the model's train step (doc_sep >= 0: packed
 * documents, its rows split at that separator; tgt must already have the separators' targets
 * ignored, lina_tok_docs, so that the weights count the same targets) and
 * weight the gradient it adds by (its targets) / (the global batch's targets),
 * so that the sum over ranks is the gradient of the global mean loss; first:
 * the gradient buffer holds nothing yet; last: the update's last micro-batch,
 * whose backward starts the gradient's bucketed all-reduce over the world as
 * the layers finish (when the model reports them: set_grad_hook).
 * *lsum = the weighted local loss (the sum over ranks is the global mean). */
int lina_dist_micro(lina_trainable *m, struct lina_dist *d, struct lina_sp *sp, const int32_t *tok,
                    const int32_t *tgt, int B, int T, int first, int last, int32_t doc_sep, int32_t *tokl,
                    int32_t *tgtl, double *lsum, lina_ws *ws);
/* After the micro-batches of an update: the gradient g [n] summed over the
 * world (the all-reduce the last micro-batch started, completed; or all of it
 * when none was started, e.g. on a rank that failed before). Every rank calls
 * it once per update. */
int lina_dist_grads_finish(struct lina_dist *d, float *g, size_t n);
/* The sequence-parallel context of this rank for global sequences of T
 * tokens (its piece, the all-gather over its sp group); with more than one
 * piece, an error when the model cannot run it (naming the mixer). Free its
 * buffers with lina_sp_keep_free. */
int lina_dist_sp_init(lina_trainable *m, struct lina_dist *d, int B, int T, struct lina_sp *sp);
/* At start: every rank has the same options, model and parameters (one
 * all-gather of three hashes); else an error naming the first rank that
 * differs. data_tokens: the token file's length. */
int lina_dist_check_same(struct lina_dist *d, const lina_trainable *m, const lina_train_opts *o,
                         uint64_t data_tokens);
uint64_t lina_dist_params_hash(const lina_trainable *m);

#endif
