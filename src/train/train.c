/* train.c -- the training loop: sampling, gradient accumulation, clipping,
 * AdamW with warmup + cosine, evaluation, logging, checkpoints, resume. */
#include "../dist/dist.h"
#include "../io/io_internal.h"
#include "../nn/kind.h"
#include "train_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PATH_CAP 4096

void lina_train_opts_default(lina_train_opts *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 100;
    o->batch = 8;
    o->seq_len = 256;
    o->accum = 1;
    o->lr = 3e-4;
    o->min_lr_ratio = 0.1;
    o->warmup = -1;
    o->beta1 = 0.9;
    o->beta2 = 0.95;
    o->eps = 1e-8;
    o->weight_decay = 0.1;
    o->clip = 1.0;
    o->eval_batches = 0;
    o->save_every = 200;
    o->save_minutes = 10.0;
    o->progress = 1;
}

static int check_opts(const lina_trainable *m, const lina_train_opts *o)
{
    if (!o->data_path || !o->out_dir) {
        return lina_set_error(LINA_EINVAL, "train: data file and output directory are required");
    }
    if (o->steps < 1 || o->batch < 1 || o->seq_len < 1 || o->accum < 1 || o->eval_batches < 0 ||
        o->eval_every < 0 || o->save_every < 0 || !(o->save_minutes >= 0.0)) {
        return lina_set_error(LINA_EINVAL, "train: steps, batch, seq-len and accum must be >= 1 "
                                           "(eval batches, eval/save intervals >= 0)");
    }
    if ((double)o->batch * (double)o->seq_len > 2147483647.0) {
        return lina_set_error(LINA_EINVAL, "train: batch * seq-len too large");
    }
    if (!(o->lr > 0.0 && isfinite(o->lr)) || !(o->min_lr_ratio >= 0.0 && o->min_lr_ratio <= 1.0) ||
        !(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0) ||
        !(o->eps >= 0.0) || !(o->weight_decay >= 0.0) || !(o->clip >= 0.0 || o->clip <= 0.0)) {
        return lina_set_error(LINA_EINVAL, "train: bad optimizer settings (lr %g, min-lr ratio %g, "
                                           "betas %g %g, eps %g, wd %g)",
                              o->lr, o->min_lr_ratio, o->beta1, o->beta2, o->eps, o->weight_decay);
    }
    if (!m->num_params || !m->params || !m->grads || !m->zero_grad || !m->num_tensors ||
        !m->tensor || !m->train_step || !m->eval_loss || !m->save) {
        return lina_set_error(LINA_EINVAL, "train: the model adapter lacks a callback");
    }
    if (o->pack && (!m->train_step_varlen || !m->eval_loss_varlen || o->doc_sep < 0 ||
                    o->doc_sep >= m->vocab_size)) {
        return lina_set_error(LINA_EINVAL, o->doc_sep < 0 || o->doc_sep >= m->vocab_size ?
                              "train: packed documents need a separator token in the vocabulary (is %d)" :
                              "train: the model adapter cannot run packed documents (separator %d)", o->doc_sep);
    }
    return LINA_OK;
}

static int vocab_check(const lina_trainable *m, const lina_tokfile *f, const char *path)
{
    if (m->vocab_size > 0 && lina_tok_vocab(f) > (uint32_t)m->vocab_size) {
        return lina_set_error(LINA_EINVAL, "%s: token vocab_size %u exceeds the model's %d", path,
                              lina_tok_vocab(f), m->vocab_size);
    }
    return LINA_OK;
}

/* Drop log lines of updates after `step` (left by a run killed after its
 * last checkpoint), so that the resumed log has each step once. */
static int trim_log(const char *path, int64_t step)
{
    FILE *in = fopen(path, "rb");
    if (!in) {
        return LINA_OK;
    }
    lina_afile af;
    int rc = lina_afile_open(&af, path);
    if (rc != LINA_OK) {
        fclose(in);
        return rc;
    }
    char line[8192];
    while (fgets(line, sizeof line, in)) {
        long long s;
        if (sscanf(line, "{\"step\":%lld", &s) == 1 && s <= step && strchr(line, '\n')) {
            lina_afile_write(&af, line, strlen(line));
        }
    }
    fclose(in);
    return lina_afile_commit(&af);
}

static void fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0.0) || s > 1e8) {
        snprintf(buf, n, "--");
    } else if (s >= 3600.0) {
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600.0), (int)fmod(s / 60.0, 60.0));
    } else if (s >= 60.0) {
        snprintf(buf, n, "%dm%02ds", (int)(s / 60.0), (int)fmod(s, 60.0));
    } else {
        snprintf(buf, n, "%.0fs", s);
    }
}

/* One training (train) or evaluation batch; with o->pack its documents (the targets
 * at separators are set to ignore) run each on its own. */
static int run_batch(lina_trainable *m, const lina_train_opts *o, const int32_t *tok, int32_t *tgt, int B, int T,
                     int train, double *l, lina_ws *ws)
{
    if (!o->pack) {
        return train ? m->train_step(m->self, tok, tgt, B, T, l, ws) : m->eval_loss(m->self, tok, tgt, B, T, l, ws);
    }
    int64_t *cu = malloc(((size_t)B * T + 1) * sizeof(int64_t)), ncu = 0;
    if (!cu) {
        return lina_set_error(LINA_ENOMEM, "train: out of memory for a batch's documents");
    }
    lina_tok_docs(tok, tgt, B, T, o->doc_sep, cu, &ncu);
    int rc = train ? m->train_step_varlen(m->self, tok, tgt, B, T, cu, ncu, l, ws)
                   : m->eval_loss_varlen(m->self, tok, tgt, B, T, cu, ncu, l, ws);
    free(cu);
    return rc;
}

/* Windows the validation loss covers: with eval_batches 0, every consecutive,
 * non-overlapping window of seq_len tokens of the split (what `lina eval`
 * scores); else the first eval_batches * batch of them (wrapping around). */
static uint64_t eval_windows(const lina_tokfile *val, const lina_train_opts *o)
{
    if (o->eval_batches > 0) {
        return (uint64_t)o->eval_batches * (uint64_t)o->batch;
    }
    return (lina_tok_count(val) - 1) / (uint64_t)o->seq_len;
}

/* Mean loss over eval_windows() windows in batches of at most `batch`; *out
 * is NaN when a stop request cut it short. In a distributed run each rank
 * scores a contiguous share of the windows (whole sequences, no sequence
 * parallelism) and the sums are added up. */
static int evaluate(lina_trainable *m, const lina_tokfile *val, const lina_train_opts *o,
                    int32_t *tok, int32_t *tgt, int32_t *win, lina_ws *ws, double *out)
{
    const int T = o->seq_len;
    const uint64_t nwin = eval_windows(val, o);
    const int W = lina_dist_size(o->dist), r = lina_dist_rank(o->dist);
    const uint64_t w0 = nwin * (uint64_t)r / (uint64_t)W, w1 = nwin * (uint64_t)(r + 1) / (uint64_t)W;
    double sum[2] = {0.0, 0.0}; /* loss sum, error or stop */
    *out = NAN;
    int rc = LINA_OK;
    for (uint64_t done = w0; done < w1;) {
        if (o->stop && *o->stop) {
            sum[1] = 1.0;
            break;
        }
        int nb = w1 - done < (uint64_t)o->batch ? (int)(w1 - done) : o->batch;
        for (int b = 0; b < nb && rc == LINA_OK; b++) {
            if (o->eval_batches > 0) {
                /* window j of the sample: lina_tok_eval_batch's batch j of one */
                rc = lina_tok_eval_batch(val, (int64_t)(done + (uint64_t)b), 1, T, tok + (size_t)b * T,
                                         tgt + (size_t)b * T);
                continue;
            }
            rc = lina_tok_read(val, (done + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, win);
            memcpy(tok + (size_t)b * T, win, (size_t)T * sizeof *win);
            memcpy(tgt + (size_t)b * T, win + 1, (size_t)T * sizeof *win);
        }
        double l = 0.0;
        if (rc == LINA_OK) {
            rc = run_batch(m, o, tok, tgt, nb, T, 0, &l, ws);
        }
        if (rc != LINA_OK) {
            sum[1] = 2.0;
            break;
        }
        sum[0] += l * nb;
        done += (uint64_t)nb;
    }
    int rc2 = lina_dist_sum_d(o->dist, LINA_DIST_WORLD, sum, 2);
    if (rc != LINA_OK || rc2 != LINA_OK) {
        return rc != LINA_OK ? rc : rc2;
    }
    if (sum[1] >= 2.0) {
        return lina_set_error(LINA_EIO, "validation failed on another rank (see its message)");
    }
    if (sum[1] == 0.0) {
        *out = sum[0] / (double)nwin;
    }
    return LINA_OK;
}

/* Distributed runs: after a step where some ranks may have failed, every rank
 * learns whether any did (one small all-reduce), so that none waits forever
 * in a later collective. Returns rc, or an error when another rank failed. */
static int agree(lina_dist *d, int rc)
{
    if (lina_dist_size(d) == 1) {
        return rc;
    }
    double bad = rc != LINA_OK;
    int r2 = lina_dist_sum_d(d, LINA_DIST_WORLD, &bad, 1);
    if (rc != LINA_OK) {
        return rc;
    }
    if (r2 != LINA_OK) {
        return r2;
    }
    return bad > 0.0 ? lina_set_error(LINA_EIO, "stopped: another rank failed (its message is above)") : LINA_OK;
}

/* On resume: one note per option that differs from the checkpoint's run and
 * makes the result differ from an uninterrupted run. */
static void resume_notes(const lina_train_state *st, const lina_train_opts *saved, int have_saved,
                         const lina_train_opts *o)
{
    char what[512] = "";
    size_t n = 0;
#define NOTE_IF(cond, ...)                                                            \
    if ((cond) && n < sizeof what) {                                                  \
        n += (size_t)snprintf(what + n, sizeof what - n, __VA_ARGS__);                \
    }
    NOTE_IF(st->total_steps != o->steps, " --steps %lld (was %lld)", (long long)o->steps,
            (long long)st->total_steps)
    NOTE_IF(st->batch != o->batch, " --batch %d (was %d)", o->batch, st->batch)
    NOTE_IF(st->seq_len != o->seq_len, " --seq-len %d (was %d)", o->seq_len, st->seq_len)
    NOTE_IF(st->accum != o->accum, " --accum %d (was %d)", o->accum, st->accum)
    if (have_saved) {
        NOTE_IF(saved->lr != o->lr, " --lr %g (was %g)", o->lr, saved->lr)
        NOTE_IF(saved->warmup != o->warmup, " --warmup %lld (was %lld)", (long long)o->warmup,
                (long long)saved->warmup)
        NOTE_IF(saved->min_lr_ratio != o->min_lr_ratio, " --min-lr-ratio %g (was %g)", o->min_lr_ratio,
                saved->min_lr_ratio)
        NOTE_IF(saved->weight_decay != o->weight_decay, " --wd %g (was %g)", o->weight_decay,
                saved->weight_decay)
        NOTE_IF(saved->clip != o->clip, " --clip %g (was %g)", o->clip, saved->clip)
        NOTE_IF(saved->eps != o->eps, " --eps %g (was %g)", o->eps, saved->eps)
        NOTE_IF(saved->beta1 != o->beta1 || saved->beta2 != o->beta2, " betas %g %g (were %g %g)",
                o->beta1, o->beta2, saved->beta1, saved->beta2)
        NOTE_IF(saved->data_path && strcmp(saved->data_path, o->data_path), " --data %s (was %s)",
                o->data_path, saved->data_path)
    }
#undef NOTE_IF
    if (n > 0) {
        fprintf(stderr, "note: resuming with%s: the result differs from an uninterrupted run\n", what);
    }
}

static int nonfinite(int64_t step, const char *what, int have_ckpt, int64_t saved,
                     const char *out)
{
    if (have_ckpt) {
        return lina_set_error(LINA_ENONFINITE,
                              "step %lld: %s; training stopped (the last checkpoint, step %lld, "
                              "is kept in %s/checkpoint)",
                              (long long)step, what, (long long)saved, out);
    }
    return lina_set_error(LINA_ENONFINITE,
                          "step %lld: %s; training stopped (no checkpoint had been written yet)",
                          (long long)step, what);
}

int lina_train(lina_trainable *m, const lina_train_opts *o_in)
{
    /* rank 0 alone logs, shows progress and writes checkpoints */
    lina_train_opts ocopy = *o_in;
    const lina_train_opts *o = &ocopy;
    lina_dist *dist = o->dist;
    const int world = lina_dist_size(dist), rank0 = lina_dist_rank(dist) == 0;
    ocopy.progress = o_in->progress && rank0;
    int rc = check_opts(m, o);
    if (rc == LINA_OK) {
        rc = lina_dist_check_shape(dist, o->batch, o->seq_len);
    }
    if (rc == LINA_OK && o->pack && lina_dist_sp_size(dist) > 1) {
        rc = lina_set_error(LINA_EINVAL, "--pack with --sp %d is not supported: a document that crosses a piece "
                                         "border would need the pieces' states reset at its start (use --pack with "
                                         "data parallelism only)",
                            lina_dist_sp_size(dist));
    }
    lina_sp sp;
    if (rc == LINA_OK) {
        rc = lina_dist_sp_init(m, dist, o->batch, o->seq_len, &sp);
    }
    if (rc != LINA_OK) {
        return rc;
    }
    const size_t n = m->num_params(m->self);
    const int B = o->batch, T = o->seq_len;
    char log_path[PATH_CAP];
    if (snprintf(log_path, sizeof log_path, "%s/log.jsonl", o->out_dir) >= (int)sizeof log_path) {
        return lina_set_error(LINA_EINVAL, "%s: path too long", o->out_dir);
    }
    lina_tokfile *data = NULL, *val = NULL;
    lina_adamw opt;
    lina_train_state st;
    lina_ws ws;
    FILE *log = NULL;
    int32_t *tok = NULL, *tgt = NULL, *win = NULL, *tokl = NULL, *tgtl = NULL;
    int64_t *cu = NULL, ncu = 0; /* a distributed packed batch's documents */
    memset(&opt, 0, sizeof opt);
    memset(&st, 0, sizeof st);
    lina_ws_init(&ws);

    rc = lina_tok_open(o->data_path, &data);
    if (rc == LINA_OK) {
        rc = vocab_check(m, data, o->data_path);
    }
    if (rc == LINA_OK && o->val_path) {
        rc = lina_tok_open(o->val_path, &val);
        if (rc == LINA_OK) {
            rc = vocab_check(m, val, o->val_path);
        }
    }
    if (rc == LINA_OK && lina_tok_count(data) < (uint64_t)T + 1) {
        rc = lina_set_error(LINA_EINVAL, "%s: %llu tokens, too few for seq-len %d", o->data_path,
                            (unsigned long long)lina_tok_count(data), T);
    }
    if (rc == LINA_OK && val && lina_tok_count(val) < (uint64_t)T + 1) {
        rc = lina_set_error(LINA_EINVAL, "%s: %llu tokens, too few for seq-len %d", o->val_path,
                            (unsigned long long)lina_tok_count(val), T);
    }
    if (rc == LINA_OK && !o->resume && lina_ckpt_exists(o->out_dir)) {
        rc = lina_set_error(LINA_EINVAL, "%s already holds a checkpoint: continue it with --resume, "
                                         "or remove it / choose another output directory",
                            o->out_dir);
    }
    if (rc == LINA_OK) {
        rc = lina_mkdirs(o->out_dir);
    }
    if (rc == LINA_OK) {
        rc = lina_adamw_init(&opt, n);
    }
    if (rc == LINA_OK) {
        opt.beta1 = o->beta1;
        opt.beta2 = o->beta2;
        opt.eps = o->eps;
        opt.weight_decay = o->weight_decay;
        int nt = m->num_tensors(m->self);
        for (int i = 0; i < nt && rc == LINA_OK; i++) {
            const char *name;
            const int64_t *shape;
            int ndim, decay;
            size_t off;
            rc = m->tensor(m->self, i, &name, &ndim, &shape, &off, &decay);
            size_t numel = 1;
            for (int d = 0; rc == LINA_OK && d < ndim; d++) {
                numel *= (size_t)shape[d];
            }
            if (rc == LINA_OK) {
                rc = lina_adamw_set_decay(&opt, off, numel, decay);
            }
        }
    }
    if (rc == LINA_OK) {
        rc = lina_train_state_alloc(&st, o->steps < 1024 ? o->steps : 1024);
    }
    if (rc == LINA_OK) {
        tok = malloc((size_t)B * T * sizeof(int32_t));
        tgt = malloc((size_t)B * T * sizeof(int32_t));
        win = malloc(((size_t)T + 1) * sizeof(int32_t));
        tokl = malloc((size_t)B * T * sizeof(int32_t));
        tgtl = malloc((size_t)B * T * sizeof(int32_t));
        cu = malloc(((size_t)B * T + 1) * sizeof(int64_t));
        if (!tok || !tgt || !win || !tokl || !tgtl || !cu) {
            rc = lina_set_error(LINA_ENOMEM, "train: out of memory for a batch");
        }
    }
    st.total_steps = o->steps;
    st.seed = o->seed;
    st.rng = o->seed;
    st.batch = B;
    st.seq_len = T;
    st.accum = o->accum;
    if (rc == LINA_OK && o->resume) {
        lina_train_opts saved = *o;
        char *strs[3];
        int have_saved = lina_ckpt_read_opts(o->out_dir, &saved, strs) == LINA_OK;
        lina_clear_error();
        rc = lina_ckpt_read(o->out_dir, m, &opt, &st);
        if (rc == LINA_OK && have_saved && saved.pack != o->pack) {
            rc = lina_set_error(LINA_EINVAL, "%s: the run was trained %s --pack; resume it %s (packed and unpacked "
                                "windows are different data)", o->out_dir, saved.pack ? "with" : "without",
                                saved.pack ? "with --pack" : "without --pack");
        }
        if (rc == LINA_OK && st.step > o->steps) {
            rc = lina_set_error(LINA_EINVAL, "%s: the checkpoint is at step %lld, beyond --steps %lld",
                                o->out_dir, (long long)st.step, (long long)o->steps);
        }
        if (rc == LINA_OK && rank0) {
            resume_notes(&st, &saved, have_saved, o);
        }
        for (int i = 0; i < 3; i++) {
            free(strs[i]);
        }
        /* the sampler continues from the checkpoint's state; the seed is the run's */
        st.total_steps = o->steps;
        st.batch = B;
        st.seq_len = T;
        st.accum = o->accum;
        if (rc == LINA_OK && rank0) {
            rc = trim_log(log_path, st.step);
        }
    }
    st.opts = o_in;
    /* every rank: the same options, model and parameters (after a resume: the
     * checkpoint's), or one error naming the rank that differs */
    rc = agree(dist, rc);
    if (rc == LINA_OK) {
        rc = lina_dist_check_same(dist, m, o, lina_tok_count(data));
    }
    if (rc == LINA_OK && rank0) {
        lina_ckpt_cleanup(o->out_dir);
        log = fopen(log_path, o->resume ? "ab" : "wb");
        if (!log) {
            rc = lina_set_error(LINA_EIO, "%s: cannot open (%s)", log_path, strerror(errno));
        }
    }
    if (rc == LINA_OK && o->losses) {
        for (int64_t i = 0; i < st.step; i++) {
            o->losses[i] = st.losses[i];
        }
    }
    if (rc == LINA_OK && o->val_losses) {
        for (int64_t i = 0; i < o->steps; i++) {
            o->val_losses[i] = i < st.step ? st.val_losses[i] : NAN;
        }
    }
    if (o->last) {
        o->last[0] = o->last[1] = NAN;
    }
    if (rc == LINA_OK && o->resume && st.step == o->steps && o->progress) {
        fprintf(stderr, "%s: the run is already complete (step %lld of %lld); give a larger --steps to "
                        "continue it\n",
                o->out_dir, (long long)st.step, (long long)o->steps);
    }
    if (rc == LINA_OK && val && o->progress && st.step < o->steps) {
        uint64_t nw = eval_windows(val, o);
        if (o->eval_batches == 0) {
            fprintf(stderr, "validation loss: the whole of %s, %llu windows of %d tokens\n", o->val_path,
                    (unsigned long long)nw, T);
        } else {
            fprintf(stderr, "validation loss: a sample of %s, %d batches = %llu windows of %d tokens\n",
                    o->val_path, o->eval_batches, (unsigned long long)nw, T);
        }
    }

    lina_lr_sched sched = {o->lr, o->min_lr_ratio, o->warmup, o->steps};
    if (sched.warmup < 0) {
        sched.warmup = o->steps / 10 < 100 ? o->steps / 10 : 100;
    }
    const int tty = o->progress && isatty(fileno(stderr));
    const int64_t first = st.step;
    const double t_start = lina_now();
    int64_t saved = st.step; /* step of the last checkpoint (valid when have_ckpt) */
    int have_ckpt = o->resume;
    double t_saved = t_start;
    float *params = rc == LINA_OK ? m->params(m->self) : NULL;
    float *grads = rc == LINA_OK ? m->grads(m->self) : NULL;
    int stop_any = 0; /* a distributed run: some rank was asked to stop */
    rc = agree(dist, rc);
    while (rc == LINA_OK && st.step < o->steps) {
        const int64_t s = st.step;
        const double t0 = lina_now();
        m->zero_grad(m->self);
        double loss = 0.0;
        for (int a = 0; a < o->accum && rc == LINA_OK && world > 1; a++) {
            /* every rank draws the same global batch and computes its part */
            double l = 0.0;
            rc = lina_tok_sample(data, &st.rng, B, T, tok, tgt);
            if (rc == LINA_OK && o->pack) {
                /* the separators' targets ignored in the global batch: the weights count them out */
                lina_tok_docs(tok, tgt, B, T, o->doc_sep, cu, &ncu);
            }
            if (rc == LINA_OK) {
                rc = lina_dist_micro(m, dist, &sp, tok, tgt, B, T, a == 0, a == o->accum - 1,
                                     o->pack ? o->doc_sep : -1, tokl, tgtl, &l, &ws);
            }
            if (rc == LINA_ENONFINITE) {
                rc = LINA_OK; /* the summed loss is not finite on every rank: stopped below */
            }
            loss += l;
        }
        if (world > 1) {
            /* the summed gradient (every rank, even one that failed, completes the all-reduce its
             * last micro-batch started), then the global loss and whether any rank failed or was
             * asked to stop */
            int r1 = lina_dist_grads_finish(dist, grads, n);
            if (rc == LINA_OK) {
                rc = r1;
            }
            double v[3] = {loss, rc != LINA_OK, o->stop && *o->stop};
            int r2 = lina_dist_sum_d(dist, LINA_DIST_WORLD, v, 3);
            if (rc == LINA_OK && r2 != LINA_OK) {
                rc = r2;
            }
            if (rc == LINA_OK && v[1] > 0.0) {
                rc = lina_set_error(LINA_EIO, "stopped: another rank failed (its message is above)");
            }
            loss = v[0];
            stop_any = v[2] > 0.0;
            if (rc == LINA_OK && !isfinite(loss)) {
                rc = nonfinite(s + 1, isnan(loss) ? "training loss is NaN" : "training loss is Inf", have_ckpt,
                               saved, o->out_dir);
            }
        }
        for (int a = 0; a < o->accum && rc == LINA_OK && world == 1; a++) {
            double l = 0.0;
            rc = lina_tok_sample(data, &st.rng, B, T, tok, tgt);
            if (rc == LINA_OK) {
                rc = run_batch(m, o, tok, tgt, B, T, 1, &l, &ws);
            }
            /* a model may itself refuse a non-finite loss (LINA_ENONFINITE,
             * with the loss set): the stop is the same, with the step */
            if ((rc == LINA_OK || rc == LINA_ENONFINITE) && !isfinite(l)) {
                rc = nonfinite(s + 1, isnan(l) ? "training loss is NaN" : "training loss is Inf",
                               have_ckpt, saved, o->out_dir);
            }
            loss += l;
        }
        if (rc != LINA_OK) {
            break;
        }
        loss /= o->accum;
        const double inv = 1.0 / o->accum;
        const double gnorm = lina_grad_norm(grads, n) * inv;
        if (!isfinite(gnorm)) {
            rc = nonfinite(s + 1, "gradient norm is not finite", have_ckpt, saved, o->out_dir);
            break;
        }
        const double lr = lina_lr_at(&sched, s);
        rc = lina_adamw_step(&opt, params, grads, lr, inv * lina_clip_factor(gnorm, o->clip));
        if (rc != LINA_OK) {
            break;
        }
        rc = lina_train_state_reserve(&st, s + 1);
        if (rc != LINA_OK) {
            break;
        }
        st.losses[s] = loss;
        st.step = s + 1;
        st.tokens_seen += (uint64_t)B * T * o->accum;
        if (o->losses) {
            o->losses[s] = loss;
        }
        if (o->last) {
            o->last[0] = loss;
        }
        const double dt = lina_now() - t0;
        const double tps = (double)B * T * o->accum / (dt > 0 ? dt : 1e-9);
        double vloss = NAN;
        if (val && ((o->eval_every > 0 && st.step % o->eval_every == 0) || st.step == o->steps)) {
            rc = evaluate(m, val, o, tok, tgt, win, &ws, &vloss);
            if (rc != LINA_OK) {
                break;
            }
            st.val_losses[s] = vloss;
            if (o->last && !isnan(vloss)) {
                o->last[1] = vloss;
            }
            if (o->val_losses) {
                o->val_losses[s] = vloss;
            }
        }
        if (log) {
            fprintf(log, "{\"step\":%lld,\"loss\":%.17g,\"lr\":%.17g,\"grad_norm\":%.17g,"
                         "\"tokens_per_s\":%.1f",
                    (long long)st.step, loss, lr, gnorm, tps);
            if (!isnan(vloss)) {
                fprintf(log, ",\"val_loss\":%.17g", vloss);
            }
            fprintf(log, "}\n");
            fflush(log);
        }
        if (o->progress) {
            double el = lina_now() - t_start;
            double done = (double)(st.step - first);
            double avg_tps = (double)B * T * o->accum * done / (el > 0 ? el : 1e-9);
            char eta[32];
            fmt_eta(eta, sizeof eta, el / done * (double)(o->steps - st.step));
            char vbuf[48] = "";
            if (!isnan(vloss)) {
                snprintf(vbuf, sizeof vbuf, " val %.4f", vloss);
            }
            if (tty) {
                fprintf(stderr, "\rstep %lld/%lld  loss %.4f%s  lr %.3e  %.0f tok/s  ETA %s   ",
                        (long long)st.step, (long long)o->steps, loss, vbuf, lr, avg_tps, eta);
                if (!isnan(vloss) || st.step == o->steps) {
                    fprintf(stderr, "\n");
                }
            } else if (st.step % 10 == 0 || st.step == o->steps || !isnan(vloss) ||
                       st.step == first + 1) {
                fprintf(stderr, "step %lld/%lld  loss %.4f%s  lr %.3e  %.0f tok/s  ETA %s\n",
                        (long long)st.step, (long long)o->steps, loss, vbuf, lr, avg_tps, eta);
            }
            fflush(stderr);
        }
        const int asked = world > 1 ? stop_any : o->stop && *o->stop;
        int stop = (o->stop_after > 0 && st.step - first >= o->stop_after) || asked;
        if ((o->save_every > 0 && st.step % o->save_every == 0) || st.step == o->steps || stop ||
            (o->save_minutes > 0 && lina_now() - t_saved >= 60.0 * o->save_minutes)) {
            if (rank0) {
                rc = lina_ckpt_write(o->out_dir, m, &opt, &st, o->tokenizer_path);
            }
            rc = agree(dist, rc);
            if (rc == LINA_OK && world > 1) {
                /* every rank applied the same updates: the parameters agree */
                uint64_t h = lina_dist_params_hash(m), *all = malloc((size_t)world * sizeof *all);
                rc = all ? lina_dist_allgather_u64(dist, LINA_DIST_WORLD, &h, 1, all)
                         : lina_set_error(LINA_ENOMEM, "train: out of memory");
                for (int r = 1; rc == LINA_OK && r < world; r++) {
                    if (all[r] != all[0]) {
                        rc = lina_set_error(LINA_EIO, "step %lld: rank %d's parameters differ from rank 0's",
                                            (long long)st.step, r);
                    }
                }
                free(all);
            }
            if (rc == LINA_OK) {
                saved = st.step;
                have_ckpt = 1;
                t_saved = lina_now();
            }
        }
        if (rc == LINA_OK && asked && st.step < o->steps) {
            rc = lina_set_error(LINA_EINTR, "stopped at step %lld of %lld; the checkpoint is in "
                                            "%s/checkpoint: continue with `lina train --out %s --resume`",
                                (long long)st.step, (long long)o->steps, o->out_dir, o->out_dir);
        }
        if (stop) {
            break;
        }
    }
    if (tty && rc != LINA_OK && st.step > first) {
        fprintf(stderr, "\n");
    }
    if (log) {
        fclose(log);
    }
    free(tok);
    free(tgt);
    free(win);
    free(tokl);
    free(tgtl);
    free(cu);
    lina_sp_keep_free(&sp);
    lina_ws_free(&ws);
    lina_train_state_free(&st);
    lina_adamw_free(&opt);
    lina_tok_close(data);
    lina_tok_close(val);
    return rc;
}
