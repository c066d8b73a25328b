/* linearize.c -- `lina linearize`: a softmax transformer turned into linearized
 * attention (docs/linearize.md) in two stages:
 *
 *   stage 1  attention transfer (LoLCATs): every layer outputs the teacher's
 *            softmax attention and learns its feature maps and mixing factors
 *            on the MSE between its own output and the teacher's; nothing else
 *            trains (Liger: no stage 1 by default)
 *   stage 2  LoRA on q/k/v/o with next-token cross-entropy, everything else
 *            frozen
 *
 * The result is a normal checkpoint (`transformer` with a linear_method) that
 * lina eval and lina generate use; OUT/linearize.json records the perplexities,
 * tokens and wall times of each stage. */
#include "cli.h"
#include "lina.h"
#include "../io/io_internal.h"
#include "../train/linearize.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mean loss over the consecutive windows of T tokens in the first max_tokens
 * tokens of f (as lina eval) */
static int eval_windows(lina_model *m, lina_tokfile *f, int T, int B, int64_t max_tokens, double *loss)
{
    uint64_t count = lina_tok_count(f);
    if (max_tokens > 0 && (uint64_t)max_tokens + 1 < count) {
        count = (uint64_t)max_tokens + 1;
    }
    if (count < (uint64_t)T + 1) {
        return lina_set_error(LINA_EINVAL, "validation file: fewer than --seq-len + 1 tokens");
    }
    uint64_t nwin = (count - 1) / (uint64_t)T;
    int32_t *tok = malloc((size_t)B * T * sizeof *tok), *tgt = malloc((size_t)B * T * sizeof *tgt);
    int32_t *win = malloc(((size_t)T + 1) * sizeof *win);
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = tok && tgt && win ? LINA_OK : lina_set_error(LINA_ENOMEM, "out of memory");
    double sum = 0.0;
    for (uint64_t w = 0; !rc && w < nwin;) {
        int nb = nwin - w < (uint64_t)B ? (int)(nwin - w) : B;
        for (int b = 0; !rc && b < nb; b++) {
            rc = lina_tok_read(f, (w + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, win);
            memcpy(tok + (size_t)b * T, win, (size_t)T * sizeof *win);
            memcpy(tgt + (size_t)b * T, win + 1, (size_t)T * sizeof *win);
        }
        double l = 0.0;
        rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, nb, T, &l, &ws);
        sum += l * nb;
        w += (uint64_t)nb;
    }
    lina_ws_free(&ws);
    free(tok);
    free(tgt);
    free(win);
    *loss = sum / (double)nwin;
    return rc;
}

/* the transfer loss (sum over layers of the layers' MSE) of a stage-1 model on one fixed batch */
static int transfer_mse(lina_model *m, lina_tokfile *f, int B, int T, double *mse)
{
    int32_t *tok = malloc((size_t)B * T * sizeof *tok), *tgt = malloc((size_t)B * T * sizeof *tgt);
    lina_ws ws;
    lina_ws_init(&ws);
    double ce = 0.0, all = 0.0;
    int rc = tok && tgt ? lina_tok_eval_batch(f, 0, B, T, tok, tgt) : lina_set_error(LINA_ENOMEM, "out of memory");
    rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, B, T, &ce, &ws);
    rc = rc ? rc : lina_model_train_step(m, tok, tgt, B, T, &all, &ws);
    lina_model_zero_grad(m);
    lina_ws_free(&ws);
    free(tok);
    free(tgt);
    *mse = all - ce;
    return rc;
}

static int copy_file(const char *src, const char *dst)
{
    char *buf = NULL;
    size_t n = 0;
    lina_afile af;
    int rc = lina_read_file(src, (size_t)1 << 30, "tokenizer", &buf, &n);
    if (!rc && !(rc = lina_afile_open(&af, dst))) {
        lina_afile_write(&af, buf, n);
        rc = lina_afile_commit(&af);
    }
    free(buf);
    return rc;
}

/* one training stage through lina_train on the trainable tensors named by pats */
static int run_stage(lina_model *m, const char *const *pats, const lina_train_opts *base, const char *dir,
                     int64_t steps, double lr, const char *val, size_t *ntrain, double *wall)
{
    lina_frozen *fz = NULL;
    lina_trainable tr;
    int rc = lina_frozen_create(m, pats, &fz, &tr, ntrain);
    if (rc) {
        return rc;
    }
    lina_train_opts o = *base;
    o.out_dir = dir;
    o.steps = steps;
    o.lr = lr;
    o.val_path = val;
    o.eval_every = 0;
    o.eval_batches = 8;
    o.weight_decay = 0.0;
    o.save_every = 0;
    o.save_minutes = 0.0;
    double t0 = lina_now();
    rc = lina_train(&tr, &o);
    *wall = lina_now() - t0;
    lina_frozen_free(fz);
    return rc;
}

int lina_cmd_linearize(int argc, char **argv)
{
    const char *teacher_arg = NULL, *out = NULL, *data = "data/train.tok", *val = "data/val.tok", *fmap_arg = NULL;
    int method = 0, gate = 0, window = 64, rank = 8, B = 8, T = 128, threads = 0, merge = 0, quiet = 0;
    int64_t s1 = -1, s2 = 200, eval_tokens = 32768;
    double alpha = 16.0, lr1 = 1e-2, lr2 = 1e-3;
    uint64_t seed = 0;
    cli_opt opts[] = {
        CLI_OPT_STR("--teacher", NULL, "DIR", &teacher_arg, "the softmax transformer (checkpoint or run directory)"),
        CLI_OPT_STR("--out", "-o", "DIR", &out, "output checkpoint directory (stage runs in DIR/stage1, DIR/stage2)"),
        CLI_OPT_CHOICE("--method", &method, "lolcats|liger", "LoLCATs or Liger"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "training token file"),
        CLI_OPT_STR("--val", NULL, "FILE", &val, "validation token file (perplexities)"),
        CLI_OPT_INT("--window", NULL, "W", &window, 1, 1 << 20, "softmax window"),
        CLI_OPT_STR("--feature-map", NULL, "hedgehog|softmax", &fmap_arg, "feature map of the linear branch"),
        CLI_OPT_CHOICE("--gate", &gate, "auto|on|off", "the key-pooled gate (auto: Liger on, LoLCATs off)"),
        CLI_OPT_I64("--stage1-steps", NULL, "N", &s1, -1, (double)(1LL << 50), "attention-transfer updates (-1: 200 for "
                                                                      "lolcats, 0 for liger)"),
        CLI_OPT_I64("--stage2-steps", NULL, "N", &s2, 0, (double)(1LL << 50), "LoRA updates"),
        CLI_OPT_INT("--lora-rank", NULL, "R", &rank, 0, 4096, "LoRA rank (0: no stage 2)"),
        CLI_OPT_DBL("--lora-alpha", NULL, "A", &alpha, 1e-9, 1e9, "LoRA alpha (scale alpha / rank)"),
        CLI_OPT_DBL("--lr1", NULL, "LR", &lr1, 0.0, 10.0, "stage-1 learning rate"),
        CLI_OPT_DBL("--lr2", NULL, "LR", &lr2, 0.0, 10.0, "stage-2 learning rate"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "windows per update"),
        CLI_OPT_INT("--seq-len", NULL, "T", &T, 1, 1 << 20, "tokens per window"),
        CLI_OPT_I64("--eval-tokens", NULL, "N", &eval_tokens, 0, (double)(1LL << 50), "validation tokens per perplexity (0: all)"),
        CLI_OPT_I64("--seed", NULL, "S", &seed, 0, (double)(1LL << 50), "data sampling and LoRA init seed"),
        CLI_OPT_FLAG("--merge-lora", NULL, &merge, "merge the LoRA adapters into q/k/v/o_proj in the output"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--quiet", "-q", &quiet, "no progress lines"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "linearize",
                 .usage = "linearize --teacher DIR --out DIR --method lolcats|liger [options]",
                 .about = "  Stage 1 (attention transfer): every layer keeps the teacher's softmax output and\n"
                          "  trains its feature maps and mixing factors on the MSE to it (q/k/v/o frozen).\n"
                          "  Stage 2: LoRA on q/k/v/o with next-token cross-entropy, all else frozen.\n"
                          "  The output is a transformer checkpoint with a linear_method (docs/linearize.md);\n"
                          "  DIR/linearize.json holds the perplexities, tokens and wall times.\n",
                 .opts = opts};
    cli_default(&c, "--teacher", "required");
    cli_default(&c, "--out", "required");
    cli_default(&c, "--feature-map", "hedgehog for lolcats, softmax for liger");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!teacher_arg || !out) {
        return cli_fail(&c, "--teacher DIR and --out DIR are required");
    }
    int liger = method == 1;
    const char *fmap = fmap_arg ? fmap_arg : liger ? "softmax" : "hedgehog";
    if (strcmp(fmap, "hedgehog") != 0 && strcmp(fmap, "softmax") != 0) {
        return cli_fail(&c, "--feature-map must be hedgehog or softmax (got \"%s\")", fmap);
    }
    if (s1 < 0) {
        s1 = liger ? 0 : 200;
    }
    if (s1 > 0 && liger && !strcmp(fmap, "softmax")) {
        return cli_fail(&c, "liger with softmax feature maps has no parameters for stage 1 (--stage1-steps 0)");
    }
    cli_set_threads(threads);
    char tdir[4096], path[4200], sdir[4200];
    const char *teacher_dir = cli_checkpoint_dir(teacher_arg, tdir, sizeof tdir);
    lina_model *tm = NULL, *m1 = NULL, *st = NULL, *m2 = NULL, *fin = NULL;
    lina_tokfile *vf = NULL;
    int rc = 1;
    if (lina_model_load(teacher_dir, &tm) || lina_tok_open(val, &vf)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    const lina_config *tc = lina_model_config(tm);
    if (tc->model_type != LINA_MODEL_TRANSFORMER || tc->linear_method[0]) {
        fprintf(stderr, "lina: linearize: %s is not a softmax transformer (model_type transformer without "
                        "linear_method)\n", teacher_dir);
        goto done;
    }
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "lina: linearize: cannot create %s: %s\n", out, strerror(errno));
        goto done;
    }
    lina_train_opts base;
    lina_train_opts_default(&base);
    base.data_path = data;
    base.batch = B;
    base.seq_len = T;
    base.seed = seed;
    base.progress = !quiet;
    base.warmup = -1;
    double tl = 0.0, l1 = NAN, l2 = NAN, mse0 = NAN, mse1 = NAN, w1 = 0.0, w2 = 0.0;
    size_t n1 = 0, n2 = 0;
    if (eval_windows(tm, vf, T, B, eval_tokens, &tl)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    printf("teacher: val loss %.4f, perplexity %.3f\n", tl, exp(tl));
    fflush(stdout);
    /* the student's config */
    lina_config cfg = *tc;
    snprintf(cfg.linear_method, sizeof cfg.linear_method, "%s", liger ? "liger" : "lolcats");
    snprintf(cfg.linear_feature_map, sizeof cfg.linear_feature_map, "%s", fmap);
    cfg.linear_gate = gate == 0 ? liger : gate == 1;
    cfg.window_size = window;
    cfg.window_factor = liger ? 0.5 : 0.0;
    cfg.lora_rank = 0;
    cfg.lora_alpha = alpha;
    cfg.attn_transfer = s1 > 0;
    if (lina_config_validate(&cfg, "linearized config") || lina_model_reconfigure(tm, &cfg, seed, &m1)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    if (s1 > 0) {
        static const char *const pats[] = {"feature_map_", "window_factors", NULL};
        snprintf(sdir, sizeof sdir, "%s/stage1", out);
        if (transfer_mse(m1, vf, B, T, &mse0) || run_stage(m1, pats, &base, sdir, s1, lr1, NULL, &n1, &w1) ||
            transfer_mse(m1, vf, B, T, &mse1)) {
            fprintf(stderr, "lina: linearize: stage 1: %s\n", lina_last_error());
            goto done;
        }
    }
    cfg.attn_transfer = 0;
    if (lina_model_reconfigure(m1, &cfg, seed, &st) || eval_windows(st, vf, T, B, eval_tokens, &l1)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    printf("stage 1 (attention transfer): %lld updates, %lld tokens, %zu trainable parameters, %.1f s; transfer "
           "MSE (sum over layers) %.5f -> %.5f; val loss %.4f, perplexity %.3f\n",
           (long long)s1, (long long)(s1 * B * T), n1, w1, mse0, mse1, l1, exp(l1));
    fflush(stdout);
    fin = st;
    if (rank > 0 && s2 > 0) {
        static const char *const pats[] = {".lora_", NULL};
        cfg.lora_rank = rank;
        snprintf(sdir, sizeof sdir, "%s/stage2", out);
        if (lina_model_reconfigure(st, &cfg, seed + 1, &m2) ||
            run_stage(m2, pats, &base, sdir, s2, lr2, val, &n2, &w2) ||
            eval_windows(m2, vf, T, B, eval_tokens, &l2)) {
            fprintf(stderr, "lina: linearize: stage 2: %s\n", lina_last_error());
            goto done;
        }
        printf("stage 2 (LoRA r=%d alpha=%g): %lld updates, %lld tokens, %zu trainable parameters (%.2f %% of %zu), "
               "%.1f s; val loss %.4f, perplexity %.3f\n",
               rank, alpha, (long long)s2, (long long)(s2 * B * T), n2,
               100.0 * (double)n2 / (double)lina_model_num_params(m2), lina_model_num_params(m2), w2, l2, exp(l2));
        fin = m2;
        if (merge) {
            lina_model *mm = NULL;
            if (lina_model_merge_lora(m2, &mm)) {
                fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
                goto done;
            }
            fin = mm;
            lina_model_free(st);
            st = mm;
        }
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", teacher_dir);
    FILE *tf = fopen(path, "rb");
    int has_tok = tf != NULL;
    if (tf) {
        fclose(tf);
    }
    snprintf(sdir, sizeof sdir, "%s/tokenizer.json", out);
    if (lina_model_save(fin, out) || (has_tok && copy_file(path, sdir))) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    /* the record */
    char js[2048];
    int n = snprintf(js, sizeof js,
                     "{\"method\":\"%s\",\"feature_map\":\"%s\",\"gate\":%s,\"window\":%d,\"batch\":%d,\"seq_len\":%d,"
                     "\"eval_tokens\":%lld,\"teacher_loss\":%.6f,\"stage1_steps\":%lld,\"stage1_tokens\":%lld,"
                     "\"stage1_trainable\":%zu,\"stage1_wall_s\":%.2f,\"stage1_mse_start\":%.6g,\"stage1_mse_end\":%.6g,"
                     "\"stage1_loss\":%.6f,\"lora_rank\":%d,\"lora_alpha\":%g,\"stage2_steps\":%lld,"
                     "\"stage2_tokens\":%lld,\"stage2_trainable\":%zu,\"stage2_wall_s\":%.2f,\"stage2_loss\":%.6f,"
                     "\"params\":%zu,\"merged\":%s}\n",
                     liger ? "liger" : "lolcats", fmap, cfg.linear_gate ? "true" : "false", window, B, T,
                     (long long)eval_tokens, tl, (long long)s1, (long long)(s1 * B * T), n1, w1,
                     isnan(mse0) ? 0.0 : mse0, isnan(mse1) ? 0.0 : mse1, l1, rank, alpha, (long long)s2,
                     (long long)(m2 ? s2 * B * T : 0), n2, w2, isnan(l2) ? l1 : l2, lina_model_num_params(fin),
                     fin != m2 && m2 ? "true" : "false");
    snprintf(path, sizeof path, "%s/linearize.json", out);
    lina_afile af;
    if (lina_afile_open(&af, path)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    lina_afile_write(&af, js, (size_t)n);
    if (lina_afile_commit(&af)) {
        fprintf(stderr, "lina: linearize: %s\n", lina_last_error());
        goto done;
    }
    printf("wrote %s (%s, %zu parameters%s)\n", out, liger ? "liger" : "lolcats", lina_model_num_params(fin),
           fin != m2 && m2 ? ", LoRA merged" : "");
    rc = 0;
done:
    lina_model_free(tm);
    lina_model_free(m1);
    lina_model_free(st);
    lina_model_free(m2);
    lina_tok_close(vf);
    return rc;
}
