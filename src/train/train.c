/* train.c -- the training loop: sampling, gradient accumulation, clipping,
 * AdamW with warmup + cosine, evaluation, logging, checkpoints, resume. */
#include "../io/io_internal.h"
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
    o->eval_batches = 4;
    o->progress = 1;
}

static int check_opts(const lina_trainable *m, const lina_train_opts *o)
{
    if (!o->data_path || !o->out_dir) {
        return lina_set_error(LINA_EINVAL, "train: data file and output directory are required");
    }
    if (o->steps < 1 || o->batch < 1 || o->seq_len < 1 || o->accum < 1 || o->eval_batches < 1 ||
        o->eval_every < 0 || o->save_every < 0) {
        return lina_set_error(LINA_EINVAL, "train: steps, batch, seq-len, accum and eval batches "
                                           "must be >= 1 (eval/save intervals >= 0)");
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

static int evaluate(lina_trainable *m, const lina_tokfile *val, const lina_train_opts *o,
                    int32_t *tok, int32_t *tgt, lina_ws *ws, double *out)
{
    double sum = 0.0;
    for (int i = 0; i < o->eval_batches; i++) {
        int rc = lina_tok_eval_batch(val, i, o->batch, o->seq_len, tok, tgt);
        double l = 0.0;
        if (rc == LINA_OK) {
            rc = m->eval_loss(m->self, tok, tgt, o->batch, o->seq_len, &l, ws);
        }
        if (rc != LINA_OK) {
            return rc;
        }
        sum += l;
    }
    *out = sum / o->eval_batches;
    return LINA_OK;
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

int lina_train(lina_trainable *m, const lina_train_opts *o)
{
    int rc = check_opts(m, o);
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
    int32_t *tok = NULL, *tgt = NULL;
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
        rc = lina_train_state_alloc(&st, o->steps);
    }
    if (rc == LINA_OK) {
        tok = malloc((size_t)B * T * sizeof(int32_t));
        tgt = malloc((size_t)B * T * sizeof(int32_t));
        if (!tok || !tgt) {
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
        rc = lina_ckpt_read(o->out_dir, m, &opt, &st);
        if (rc == LINA_OK && (st.batch != B || st.seq_len != T || st.accum != o->accum ||
                              st.seed != o->seed)) {
            rc = lina_set_error(LINA_EINVAL,
                                "%s: checkpoint was made with --batch %d --seq-len %d --accum %d "
                                "--seed %llu; resume with the same values",
                                o->out_dir, st.batch, st.seq_len, st.accum,
                                (unsigned long long)st.seed);
        }
        if (rc == LINA_OK && st.total_steps != o->steps && o->progress) {
            fprintf(stderr, "note: the checkpoint was made for %lld steps, now %lld: the learning-"
                            "rate schedule changes (results differ from an uninterrupted run)\n",
                    (long long)st.total_steps, (long long)o->steps);
        }
        st.total_steps = o->steps;
        if (rc == LINA_OK) {
            rc = trim_log(log_path, st.step);
        }
    }
    if (rc == LINA_OK) {
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
            o->val_losses[i] = st.val_losses[i];
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
    float *params = rc == LINA_OK ? m->params(m->self) : NULL;
    float *grads = rc == LINA_OK ? m->grads(m->self) : NULL;
    while (rc == LINA_OK && st.step < o->steps) {
        const int64_t s = st.step;
        const double t0 = lina_now();
        m->zero_grad(m->self);
        double loss = 0.0;
        for (int a = 0; a < o->accum && rc == LINA_OK; a++) {
            double l = 0.0;
            rc = lina_tok_sample(data, &st.rng, B, T, tok, tgt);
            if (rc == LINA_OK) {
                rc = m->train_step(m->self, tok, tgt, B, T, &l, &ws);
            }
            if (rc == LINA_OK && !isfinite(l)) {
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
        st.losses[s] = loss;
        st.step = s + 1;
        st.tokens_seen += (uint64_t)B * T * o->accum;
        if (o->losses) {
            o->losses[s] = loss;
        }
        const double dt = lina_now() - t0;
        const double tps = (double)B * T * o->accum / (dt > 0 ? dt : 1e-9);
        double vloss = NAN;
        if (val && ((o->eval_every > 0 && st.step % o->eval_every == 0) || st.step == o->steps)) {
            rc = evaluate(m, val, o, tok, tgt, &ws, &vloss);
            if (rc != LINA_OK) {
                break;
            }
            st.val_losses[s] = vloss;
            if (o->val_losses) {
                o->val_losses[s] = vloss;
            }
        }
        fprintf(log, "{\"step\":%lld,\"loss\":%.17g,\"lr\":%.17g,\"grad_norm\":%.17g,"
                     "\"tokens_per_s\":%.1f",
                (long long)st.step, loss, lr, gnorm, tps);
        if (!isnan(vloss)) {
            fprintf(log, ",\"val_loss\":%.17g", vloss);
        }
        fprintf(log, "}\n");
        fflush(log);
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
        int stop = o->stop_after > 0 && st.step - first >= o->stop_after;
        if ((o->save_every > 0 && st.step % o->save_every == 0) || st.step == o->steps || stop) {
            rc = lina_ckpt_write(o->out_dir, m, &opt, &st, o->tokenizer_path);
            if (rc == LINA_OK) {
                saved = st.step;
                have_ckpt = 1;
            }
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
    lina_ws_free(&ws);
    lina_train_state_free(&st);
    lina_adamw_free(&opt);
    lina_tok_close(data);
    lina_tok_close(val);
    return rc;
}
