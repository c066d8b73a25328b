/* tasks.h -- the papers' synthetic tasks (docs/tasks.md sections 1, 2, 4):
 * generators, evaluators, the shared train/eval loop, `lina task` and `lina paper`.
 *
 * Not part of the public API (include/lina.h); used by src/cli (lina task, lina paper) and
 * tests/test_tasks.c. Every generator draws from a splitmix64 state (uint64_t *rng)
 * only, so a seed fixes the data. Sequences are [T] int32 tokens with [T] int32
 * targets; a target LINA_TASK_IGNORE (-100, the cross-entropy ignore index) is not
 * scored and not trained on.
 */
#ifndef LINA_TASKS_H
#define LINA_TASKS_H

#include "lina.h"

#include <stdint.h>
#include <stdio.h>

#define LINA_TASK_IGNORE (-100)

/* --------------------------------------------------------------- random */

/* uniform integer in [0, n) (n >= 1) */
int lina_task_randint(uint64_t *rng, int n);
/* uniform double in [0, 1) */
double lina_task_uniform(uint64_t *rng);

/* ------------------------------------------------------------------ MQAR */

/* Multi-query associative recall, generated as Zoology's multiquery_ar (docs/tasks.md 1.1):
 * keys are N distinct ids from 1 .. V/2-1, values N distinct ids from V/2 .. V-1;
 * positions 0 .. 2N-1 hold k1 v1 ... kN vN; the query region (positions 2N .. L-1)
 * has S = (L-2N)/2 slots; N distinct slots g_j are drawn without replacement with
 * p(g) ~ a (g+1)^(a-1) and key k_j is written at position 2N + 2 g_j, whose target is
 * v_j (every other target LINA_TASK_IGNORE). The other query-region positions are 0,
 * or uniform ids from the whole vocabulary with random_non_queries. */
typedef struct lina_mqar_spec {
    int vocab;              /* V > L */
    int seq_len;            /* L, even */
    int num_kv;             /* N, 4N <= L */
    double power_a;         /* a (Zoology: 0.01) */
    int random_non_queries; /* 0 in Zoology's figure-2 configs */
} lina_mqar_spec;

/* LINA_OK, or LINA_EINVAL with a message naming the violated constraint. */
int lina_mqar_check(const lina_mqar_spec *s);
/* One example: tokens[L], targets[L]. Needs a valid spec (lina_mqar_check). */
int lina_mqar_example(const lina_mqar_spec *s, uint64_t *rng, int32_t *tokens, int32_t *targets);

/* ------------------------------------------- parity, modular arithmetic */

/* Parity (Grazzi et al., docs/tasks.md 2.1): vocabulary {0 pad, 1, 2}; len random bits
 * (tokens 1/2), then pad 0 up to T; the only target is at position len-1: token 1
 * if the count of 2s is even, 2 if odd. Returns the target. */
#define LINA_PARITY_VOCAB 3
int lina_parity_example(uint64_t *rng, int len, int T, int32_t *tokens, int32_t *targets);

/* Modular arithmetic without brackets, mod 5 (docs/tasks.md 2.1): vocabulary
 * {0 pad, 1 '+', 2 '-', 3 '*', 4 '=', 5..9 digits 0..4}; len is the whole length
 * including '=' (even, >= 4): digits and operators alternate over the first len-1
 * positions (starting and ending with a digit), '=' at len-1, pad 0 up to T; the only
 * target is at the '=' position: the digit token of the value mod 5, with '*' binding
 * tighter than '+' and '-'. Returns the target. */
#define LINA_MODARITH_VOCAB 10
#define LINA_MODARITH_MOD 5
int lina_modarith_example(uint64_t *rng, int len, int T, int32_t *tokens, int32_t *targets);
/* Value mod 5 of an expression of tokens (digits 5..9, operators 1..3), n tokens. */
int lina_modarith_value(const int32_t *tokens, int n);

/* -------------------------------------------------- group word problems */

/* The symmetric group S_n (n = 3 or 5 for the tasks; 2..6 allowed): elements are the
 * permutations of {0..n-1} in lexicographic order (element 0 is the identity);
 * mul[a * order + b] = a.b with (a.b)(i) = a(b(i)). */
typedef struct lina_group {
    int n, order;
    int *perm;  /* [order, n] */
    int *mul;   /* [order, order] */
} lina_group;

int lina_group_init_sym(lina_group *g, int n);
void lina_group_free(lina_group *g);
/* T uniform random elements; targets[t] = x_0 . x_1 . ... . x_t (the running product). */
void lina_group_example(const lina_group *g, uint64_t *rng, int T, int32_t *tokens, int32_t *targets);

/* ----------------------------------------------------- train / evaluate */

typedef enum lina_task_kind {
    LINA_TASK_MQAR = 0,
    LINA_TASK_PARITY = 1,
    LINA_TASK_MODARITH = 2,
    LINA_TASK_S3 = 3,
    LINA_TASK_S5 = 4
} lina_task_kind;

const char *lina_task_name(lina_task_kind k);

#define LINA_TASK_MAX_LENS 16

/* The block a task model is built from (docs/tasks.md 6). */
typedef enum lina_task_block {
    LINA_TASK_BLOCK_ZOOLOGY = 0, /* the synthetic-task papers' models: each block is the mixer alone
                                    (no MLP unless mlp = 1), a short convolution (size 4) on q, k, v
                                    of every mixer, softmax attention included; GLA with expand_k 1
                                    and no output gate; Mamba2 with its own conv and its paper's init */
    LINA_TASK_BLOCK_FLA = 1      /* FLA's LM layout: GatedMLP of width 2d in every block, FLA's
                                    defaults for the mixer (GLA expand_k 0.5 + output gate) */
} lina_task_block;

#define LINA_TASK_MAX_LRS 8
#define LINA_TASK_MAX_SEEDS 8

typedef struct lina_task_opts {
    lina_task_kind kind;
    lina_model_type mixer;
    int d_model, layers, heads;
    int head_dim;            /* 0: d_model / heads (or the mixer's rule) */
    int vocab;               /* mqar only (the other tasks fix it) */
    int seq_len;             /* mqar: L; s3/s5: training length */
    int num_kv;              /* mqar: N */
    double power_a;
    int random_non_queries;
    int train_min, train_max; /* parity/modarith training lengths (3, 40) */
    int test_min, test_max;   /* parity/modarith test lengths (40, 256); s3/s5: test_max */
    int steps, batch;
    double lr, weight_decay, clip;
    int warmup;              /* -1: steps / 10 */
    uint64_t seed;
    int threads;             /* 0: leave lina's setting */
    int neg_eigval;          /* allow_neg_eigval */
    int householder;         /* gated_deltaproduct n_h */
    int mom_memories, mom_topk, mom_shared;
    int block;               /* lina_task_block */
    int mlp;                 /* zoology blocks: 1 adds the GatedMLP (FLA blocks always have it) */
    int conv;                /* 1 (default): short convolutions; 0: none (mamba2 keeps its own) */
    int slow_decay;          /* 1: an ablation of the init: every decay gate exp(-exp(A_log) softplus(a +
                                dt_bias)) with one dt_bias per head (Gated DeltaNet, MoM, Mamba2) starts
                                at A = 1, softplus(dt_bias) = LINA_TASK_SLOW_DT, the slow end of the init
                                range, in every head; 0 (default): the mixer's own init */
    int train_n;             /* > 0: a fixed training set of train_n examples drawn once, visited in
                                a fresh random order every epoch; 0: fresh batches every step */
    double target;           /* > 0: stop once the validation accuracy reaches it */
    int eval_every;          /* validation every N steps (0: steps / 20) */
    int val_n;               /* validation sequences (training distribution, own stream) */
    int eval_n;              /* test sequences (per length for parity/modarith) */
    int progress;            /* progress line on stderr */
    const char *tag;         /* label of the progress line (NULL: task and mixer) */
    double *curve;           /* optional [steps]: the training loss of every step */
} lina_task_opts;

typedef struct lina_task_result {
    double final_loss;       /* mean training loss of the last 10 % of steps */
    double test_acc;         /* mqar: query accuracy; parity/modarith: accuracy over the test
                                lengths; s3/s5: token accuracy at every test position */
    double test_scaled;      /* parity/modarith: (acc - 1/C) / (1 - 1/C); else = test_acc */
    double train_acc;        /* parity/modarith: accuracy on fresh training-length sequences;
                                s3/s5: sequence accuracy at the training length */
    int nlens;               /* parity/modarith: accuracy at lens[i]; s3/s5: sequence accuracy */
    int lens[LINA_TASK_MAX_LENS];
    double acc_at[LINA_TASK_MAX_LENS];
    double *seq_acc;         /* s3/s5: [test_max] sequence accuracy at length l+1 (malloc'd) */
    int seq_acc_n;
    double val_acc;          /* the last validation accuracy (NAN when never validated) */
    int stopped_early;       /* the target was reached at step steps_done */
    double epochs;           /* steps_done * batch / train_n (0 with fresh batches) */
    size_t num_params;
    int64_t state_floats;    /* recurrent state per layer (floats), 0 when not known */
    int steps_done;
    double wall_s;
    double cpu_s; /* CPU seconds of the process during the run (NAN: not recorded) */
} lina_task_result;

/* Several learning rates x several seeds of one configuration: for every seed the run whose
 * validation accuracy is highest is kept (ties: the earlier stop, then the lower lr), as the
 * papers keep the best of their learning rates. */
typedef struct lina_task_sweep {
    int nseeds;
    double lr[LINA_TASK_MAX_SEEDS];          /* the kept learning rate per seed */
    lina_task_result run[LINA_TASK_MAX_SEEDS]; /* the kept run per seed (seq_acc freed) */
    double mean, sd, min, max;               /* over seeds, of run[].test_scaled */
    double fit_mean, fit_min;                /* over seeds, of the fit measure (lina_task_fit) */
    double wall_s;                           /* every run, all learning rates */
    double cpu_s;                            /* CPU seconds of every run (NAN: not recorded) */
    int runs;
} lina_task_sweep;

/* Run o at each of lrs[0..nlr-1] for seeds o->seed .. o->seed + nseeds - 1 (nlr <= 8,
 * nseeds <= 8). */
int lina_task_sweep_run(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, lina_task_sweep *s);
/* The same, continuing a sweep whose first have_seeds seeds are in s (read back from a record of
 * that many seeds; s->wall_s, cpu_s and runs count them); done (when not NULL) is called with the
 * sweep of the seeds finished so far after every seed but the last, so that it can be kept. */
typedef void (*lina_task_seed_done)(const lina_task_sweep *partial, void *ctx);
int lina_task_sweep_resume(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, lina_task_sweep *s,
                           int have_seeds, lina_task_seed_done done, void *ctx);
/* The settings of a sweep as one line (task, model, sizes, data, budget, seeds, learning rates):
 * two sweeps with the same line are comparable. */
void lina_task_sweep_key(const lina_task_opts *o, const double *lrs, int nlr, int nseeds, char *buf, size_t n);
/* Keep a finished sweep's numbers (means, spread, each seed's kept run without its curves; s3/s5:
 * the sequence accuracy at the longest test length) in path with its key line (atomic write). */
int lina_task_sweep_save(const char *path, const char *key, const lina_task_sweep *s);
/* Read a sweep saved with exactly this key: 1, or 0 (no file, another key, or a damaged file:
 * *s zeroed). Free with lina_task_result_free on each run. */
int lina_task_sweep_load(const char *path, const char *key, lina_task_sweep *s);
/* Read back the sweep of o over lrs kept in path with any number of seeds (the settings otherwise
 * the same): nseeds first, then the largest count found. Returns 1 when read, 0 otherwise. */
int lina_task_sweep_load_any(const char *path, const lina_task_opts *o, const double *lrs, int nlr, int nseeds,
                             lina_task_sweep *s);
/* How well a run fits its training distribution: mqar query accuracy; parity / modarith accuracy at
 * the training lengths; s3/s5 sequence accuracy at the training length. */
double lina_task_fit(const lina_task_opts *o, const lina_task_result *r);
/* One line naming what the model of o is made of, read from the config it builds (layers, width,
 * heads, MLP or not, short convolution, positions, initialisation). LINA_OK or an error. */
int lina_task_describe(const lina_task_opts *o, char *buf, size_t n);

/* Defaults for task k (mixer, widths, steps, lr, lengths). */
void lina_task_opts_default(lina_task_opts *o, lina_task_kind k);
/* The model config the task trains (validated); LINA_EINVAL with a message when
 * the options do not fit the mixer. */
int lina_task_config(const lina_task_opts *o, lina_config *c);
#define LINA_TASK_SLOW_DT 0.001

/* A per-head decay gate of a model: offsets of A_log and dt_bias in the parameter buffer. */
typedef struct lina_task_gate {
    size_t a_log, dt_bias;
    int64_t heads;
} lina_task_gate;
/* The layers' gates exp(-exp(A_log) softplus(a + dt_bias)) with one dt_bias per head (Gated
 * DeltaNet, MoM, Mamba2; not KDA's per-channel one), paired by their FLA names; the first max go
 * to g. Returns how many the model has. */
int lina_task_decay_gates(const lina_model *m, lina_task_gate *g, int max);
/* The longest memory a run of seed `seed` starts with: over every head of every layer whose decay
 * is exp(-exp(A_log) softplus(a + dt_bias)) with one dt_bias per head (Gated DeltaNet, MoM's
 * memories, Mamba2), the half-life ln 2 / (exp(A_log) softplus(dt_bias)) in tokens at a = 0.
 * NAN when the model has no such gate. */
double lina_task_init_halflife(const lina_task_opts *o, int seed);
/* Train a fresh model on fresh random batches and evaluate it on held-out sequences
 * (another stream of the same seed). Deterministic for a seed. */
int lina_task_run(const lina_task_opts *o, lina_task_result *r);
void lina_task_result_free(lina_task_result *r);

/* One batch of training data for the task: tokens/targets [B, *T]; *T is the
 * padded length (<= capacity Tmax). */
int lina_task_batch(const lina_task_opts *o, const lina_group *g, uint64_t *rng, int B, int Tmax,
                    int32_t *tokens, int32_t *targets, int *T);

/* ---------------------------------------------------------------- drivers */

/* `lina paper` (front-end: src/cli/paper.c): runs the experiments named in only
 * (a comma-separated subset of mqar,mom,parity,modarith,s3s5,icl; NULL: all; "": none,
 * only rebuild out/PAPER.md from out/paper_parts/) with threads threads, 1/20 of the
 * steps when quick. Prints its errors; returns the exit status (2: unknown name). */
int lina_paper_run(const char *out, const char *only, int threads, int quick);
/* The same with the seeds of every configuration (> 0; lina_paper_run: 3), optional
 * comma-separated subsets of the MQAR mixers and widths (NULL: all mixers, the report's widths;
 * the widths run in the order given), full (the full protocol of `make paper-full`: every width and
 * two learning rates; 0: the budgeted report of `make paper`), lrs (a comma-separated list that
 * replaces the learning rates; NULL: the report's) and resume (configurations finished earlier with
 * the same settings, kept in out/paper_parts/cells/, are read back instead of rerun); cells (NULL:
 * all) names the configurations to run, as their files there are named (mqar_gla_d64, mom_mom,
 * s5_l2_nh3, ...), so that one report can be split over several processes. */
typedef struct lina_paper_opts {
    const char *out, *only;
    int threads, quick, seeds;
    const char *mixers, *widths;
    int full, resume;
    const char *lrs, *cells;
} lina_paper_opts;
int lina_paper_run_opts(const lina_paper_opts *po);
/* The options of lina paper's MQAR cell of model m at width d (the report's budget, one thread):
 * with lina_task_sweep_key, the key its record is kept under. */
void lina_paper_mqar_opts(lina_task_opts *o, lina_model_type m, int d);
/* the same with the budget ablation's longer schedule (at most 4,000 steps) */
void lina_paper_mqar_long_opts(lina_task_opts *o, lina_model_type m, int d);
/* The MoM section's configuration k (0: MoM, 1: one Gated DeltaNet memory of equal total state, 2: one of
 * equal per-memory state) as the report runs it on one thread; slow: the decay init ablation. */
void lina_paper_mom_opts(lina_task_opts *o, int k, int slow);
/* the same with the budget ablation's longer schedule (the mixers' own init, at most 4,000 steps) */
void lina_paper_mom_long_opts(lina_task_opts *o, int k);
/* The same for the parity / mod-arith configuration of mixer m (neg: eigenvalues in [-1, 1]) and the
 * S3 / S5 configuration of layers layers with nh Householder steps. */
void lina_paper_state_opts(lina_task_opts *o, lina_task_kind k, lina_model_type m, int neg);
void lina_paper_group_opts(lina_task_opts *o, lina_task_kind k, int layers, int nh);

#endif
