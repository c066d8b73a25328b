/* train.c -- `lina train`: train a model on a token file with AdamW (lina_train);
 * without --config, the built-in GLA model on the corpus of `make data`. */
#include "cli.h"
#include "lina.h"
#include "../dist/dist.h"
#include "../io/plot.h"
#include "../train/train_internal.h" /* lina_ckpt_exists, lina_ckpt_read_opts */

#include <signal.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The default model of `lina train` without --config: a 4-layer GLA LM
 * (hidden 256, vocab 4096, tied embeddings; 4.29M parameters) that learns
 * English-like text from the KJV corpus of `make data` in a few minutes on
 * 2 cores. Same as configs/gla-small.json. */
static const char default_config_json[] =
    "{\"model_type\": \"gla\", \"hidden_size\": 256, \"num_hidden_layers\": 4, \"num_heads\": 4,"
    " \"vocab_size\": 4096, \"intermediate_size\": 704, \"tie_word_embeddings\": true}";

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static const char TRAIN_ABOUT[] =
    "  Writes DIR/log.jsonl, DIR/loss.png and DIR/checkpoint/ (every --save-every updates, every\n"
    "  --save-minutes, at the end, and on Ctrl-C / SIGTERM, which stop the run cleanly).\n"
    "  --resume continues DIR/checkpoint with the options it was made with (trainer.json:\n"
    "  schedule, optimizer, data files, tokenizer, --pack); options given on the command line\n"
    "  override them, with a note naming those that make the result differ from an\n"
    "  uninterrupted run; --pack on a run trained without it is refused.\n"
    "  Without --config: the built-in GLA model (configs/gla-small.json) with --data\n"
    "  data/train.tok --val data/val.tok --out runs/gla-small (from `make data`), and unless\n"
    "  given --steps 600 --batch 8 --seq-len 128 --lr 2e-3 --eval-every 100.\n"
    "  Without a tokenizer (--tokenizer, or tokenizer.json beside --data) the checkpoint holds\n"
    "  none and a note says so: `lina generate` then needs --tokenizer FILE.\n";

/* SIGINT / SIGTERM: ask lina_train to checkpoint and stop after the current
 * update; a second signal kills as usual. */
static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    stop_requested = 1;
    signal(sig, SIG_DFL);
}

/* a complete checkpoint under dir: resume it; else say what to do */
static int resume_check(const char *dir)
{
    if (lina_ckpt_exists(dir)) {
        return 0;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0) {
        fprintf(stderr, "lina: train: --resume: %s does not exist: start the run without --resume\n", dir);
    } else {
        fprintf(stderr, "lina: train: --resume: %s holds no complete checkpoint (the run stopped before "
                        "its first one): start it again without --resume (its log.jsonl is rewritten)\n",
                dir);
    }
    return 2;
}

int lina_cmd_train(int argc, char **argv)
{
    lina_train_opts o;
    lina_train_opts_default(&o);
    const char *config = NULL;
    int threads = 0, quiet = 0, sp = 1, dp = 0;
    cli_opt opts[] = {
        CLI_HEADING("model and data:"),
        CLI_OPT_STR("--config", NULL, "FILE", &config, "model config.json (HF/FLA format)"),
        CLI_OPT_STR("--data", NULL, "FILE", &o.data_path, "training token file"),
        CLI_OPT_STR("--val", NULL, "FILE", &o.val_path, "validation token file"),
        CLI_OPT_STR("--tokenizer", NULL, "FILE", &o.tokenizer_path, "tokenizer.json copied into the checkpoint"),
        CLI_OPT_STR("--out", NULL, "DIR", &o.out_dir, "run directory"),
        CLI_OPT_FLAG("--resume", NULL, &o.resume, "continue from DIR/checkpoint"),
        CLI_OPT_FLAG("--pack", NULL, &o.pack, "packed documents: each ends with the config's eos_token_id (the "
                                              "tokenizer's <|endoftext|>); no state crosses one"),
        CLI_OPT_I64("--stop-after", NULL, "N", &o.stop_after, 0, 1000000000,
                    "stop with a checkpoint after N updates of this run (a job's time slice; 0: off)"),
        CLI_HEADING("schedule:"),
        CLI_OPT_I64("--steps", NULL, "N", &o.steps, 1, 1000000000, "optimizer updates"),
        CLI_OPT_INT("--batch", NULL, "B", &o.batch, 1, 1 << 20, "sequences per micro-batch"),
        CLI_OPT_INT("--seq-len", NULL, "T", &o.seq_len, 1, 1 << 24, "tokens per sequence"),
        CLI_OPT_INT("--accum", NULL, "N", &o.accum, 1, 1 << 20, "micro-batches per update"),
        CLI_OPT_DBL("--lr", NULL, "X", &o.lr, 1e-12, 1e3, "peak learning rate (cosine decay after warm-up)"),
        CLI_OPT_I64("--warmup", NULL, "N", &o.warmup, 0, 1000000000, "linear warm-up updates"),
        CLI_OPT_DBL("--min-lr-ratio", NULL, "X", &o.min_lr_ratio, 0.0, 1.0, "final lr / peak lr"),
        CLI_OPT_DBL("--wd", NULL, "X", &o.weight_decay, 0.0, 1e3, "AdamW weight decay (matrices only)"),
        CLI_OPT_DBL("--clip", NULL, "X", &o.clip, 0.0, 1e30, "gradient-norm clipping (0: off)"),
        CLI_OPT_DBL("--eps", NULL, "X", &o.eps, 0.0, 1.0, "AdamW epsilon (betas 0.9, 0.95)"),
        CLI_OPT_I64("--seed", NULL, "S", &o.seed, 0, 9e18, "data sampling and initialisation seed"),
        CLI_HEADING("evaluation, checkpoints, output:"),
        CLI_OPT_INT("--eval-every", NULL, "N", &o.eval_every, 0, 1000000000, "validation loss every N updates (0: at the end)"),
        CLI_OPT_INT("--eval-batches", NULL, "N", &o.eval_batches, 0, 1000000, "validation batches per evaluation (0: the whole split, as lina eval)"),
        CLI_OPT_INT("--save-every", NULL, "N", &o.save_every, 0, 1000000000, "checkpoint every N updates (0: off)"),
        CLI_OPT_DBL("--save-minutes", NULL, "M", &o.save_minutes, 0.0, 1e9, "and every M minutes (0: off); always at the end and on Ctrl-C"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_HEADING("distributed (mpirun -np N lina train ...):"),
        CLI_OPT_INT("--sp", NULL, "S", &sp, 1, 1 << 20, "sequence-parallel ranks per sequence (LASP-2)"),
        CLI_OPT_INT("--dp", NULL, "R", &dp, 0, 1 << 20, "data-parallel groups (0: every rank not used by --sp)"),
        CLI_OPT_FLAG("--quiet", NULL, &quiet, "no progress line"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "train", .usage = "train [--config FILE] [--data FILE] [--out DIR] [options]",
                 .about = TRAIN_ABOUT, .opts = opts};
    cli_default(&c, "--config", "the built-in GLA model");
    cli_default(&c, "--data", "data/train.tok without --config");
    cli_default(&c, "--val", "data/val.tok without --config");
    cli_default(&c, "--tokenizer", "tokenizer.json next to --data");
    cli_default(&c, "--out", "runs/gla-small without --config");
    cli_default(&c, "--warmup", "min(100, steps/10)");
    cli_default(&c, "--dp", "ranks / sp");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    o.progress = !quiet;
    int builtin = !config && !o.resume;
    char *saved_strs[3] = {NULL, NULL, NULL};
    char tokck[4200];
    if (o.resume) {
        /* the run's own options from its trainer.json, unless given here */
        o.out_dir = o.out_dir ? o.out_dir : "runs/gla-small";
        if (resume_check(o.out_dir)) {
            return 2;
        }
        lina_train_opts sv = o;
        if (lina_ckpt_read_opts(o.out_dir, &sv, saved_strs) != LINA_OK) {
            fprintf(stderr, "lina: train: %s\n", lina_last_error());
            return 1;
        }
#define KEEP(flag, field)                                                                   \
    if (!cli_given(&c, flag)) {                                                             \
        o.field = sv.field;                                                                 \
    }
        KEEP("--data", data_path) KEEP("--val", val_path) KEEP("--steps", steps) KEEP("--batch", batch)
        KEEP("--seq-len", seq_len) KEEP("--accum", accum) KEEP("--lr", lr) KEEP("--warmup", warmup)
        KEEP("--min-lr-ratio", min_lr_ratio) KEEP("--wd", weight_decay) KEEP("--clip", clip)
        KEEP("--eps", eps) KEEP("--seed", seed) KEEP("--eval-every", eval_every)
        KEEP("--eval-batches", eval_batches) KEEP("--save-every", save_every)
        KEEP("--save-minutes", save_minutes) KEEP("--pack", pack)
#undef KEEP
        if (!o.data_path && !config) {
            o.data_path = "data/train.tok"; /* a run of the built-in model recorded before its options */
        }
        o.beta1 = sv.beta1;
        o.beta2 = sv.beta2;
        if (!cli_given(&c, "--tokenizer")) {
            /* the checkpoint's own copy */
            snprintf(tokck, sizeof tokck, "%s/checkpoint/tokenizer.json", o.out_dir);
            o.tokenizer_path = file_exists(tokck) ? tokck : NULL;
        }
    } else if (!config) {
        /* the main job: the built-in model on the corpus of `make data` */
        o.data_path = o.data_path ? o.data_path : "data/train.tok";
        if (!cli_given(&c, "--val") && file_exists("data/val.tok") && !strcmp(o.data_path, "data/train.tok")) {
            o.val_path = "data/val.tok";
        }
        o.out_dir = o.out_dir ? o.out_dir : "runs/gla-small";
        o.steps = cli_given(&c, "--steps") ? o.steps : 600;
        o.batch = cli_given(&c, "--batch") ? o.batch : 8;
        o.seq_len = cli_given(&c, "--seq-len") ? o.seq_len : 128;
        o.lr = cli_given(&c, "--lr") ? o.lr : 2e-3;
        o.eval_every = cli_given(&c, "--eval-every") ? o.eval_every : o.val_path ? 100 : 0;
        if (!file_exists(o.data_path)) {
            fprintf(stderr, "lina: train: %s not found: run `make data` first (or pass --data FILE)\n", o.data_path);
            return 2;
        }
    }
    if (cli_given(&c, "--eval-every") && o.eval_every > 0 && !o.val_path) {
        return cli_fail(&c, "--eval-every needs --val FILE (a validation token file)");
    }
    if (!o.data_path || !o.out_dir) {
        return cli_fail(&c, "--data and --out are required with --config or --resume");
    }
    char tokdef[4096];
    if (!o.tokenizer_path && !o.resume) {
        /* tokenizer.json next to the token file, if there is one */
        const char *sl = strrchr(o.data_path, '/');
        int dl = sl ? (int)(sl - o.data_path) : 1;
        snprintf(tokdef, sizeof tokdef, "%.*s/tokenizer.json", dl, sl ? o.data_path : ".");
        if (file_exists(tokdef)) {
            o.tokenizer_path = tokdef;
        }
    } else if (o.tokenizer_path && !file_exists(o.tokenizer_path)) {
        fprintf(stderr, "lina: train: tokenizer %s not found\n", o.tokenizer_path);
        return 2;
    }
    cli_set_threads(threads);
    /* the MPI job (one process without mpirun); rank 0 alone prints */
    lina_dist *dist = NULL;
    if (lina_dist_init(sp, dp, &dist) != LINA_OK) {
        fprintf(stderr, "lina: train: %s\n", lina_last_error());
        return 2;
    }
    const int rank0 = lina_dist_rank(dist) == 0;
    o.dist = dist;
    lina_config cfg;
    char ckcfg[4096];
    if (!config) {
        snprintf(ckcfg, sizeof ckcfg, "%s/checkpoint/config.json", o.out_dir);
        config = ckcfg;
    }
    int rc = builtin ? lina_config_parse(default_config_json, sizeof default_config_json - 1, "built-in config", &cfg)
                     : lina_config_read(config, &cfg);
    if (rc == LINA_OK && o.tokenizer_path) {
        lina_tokenizer *tk = NULL;
        rc = lina_tokenizer_load(o.tokenizer_path, &tk);
        int tv = rc == LINA_OK ? lina_tokenizer_vocab_size(tk) : 0;
        if (rc == LINA_OK && tv > cfg.vocab_size) {
            rc = lina_set_error(LINA_EINVAL, "tokenizer %s has %d tokens, more than the model's vocab_size %d",
                                o.tokenizer_path, tv, cfg.vocab_size);
        }
        if (rc == LINA_OK && rank0 && cfg.vocab_size > 2 * tv && cfg.vocab_size - tv > 256) {
            fprintf(stderr, "lina: train: warning: the model's vocab_size %d is much larger than the "
                            "tokenizer's %d tokens (%s): %d embedding rows are never trained\n",
                    cfg.vocab_size, tv, o.tokenizer_path, cfg.vocab_size - tv);
        }
        /* the special tokens are the tokenizer's: BOS = EOS = <|endoftext|> */
        int eot = rc == LINA_OK ? lina_tokenizer_token_id(tk, "<|endoftext|>") : -1;
        if (eot >= 0) {
            cfg.bos_token_id = eot;
            cfg.eos_token_id = eot;
        }
        lina_tokenizer_free(tk);
    } else if (rc == LINA_OK && rank0) {
        fprintf(stderr, "lina: train: note: no tokenizer (no --tokenizer, and no tokenizer.json beside %s): the "
                        "checkpoint will hold none, so `lina generate` will need --tokenizer FILE\n",
                o.data_path);
    }
    if (rc == LINA_OK && o.pack) {
        o.doc_sep = cfg.eos_token_id;
        if (o.doc_sep < 0) {
            rc = lina_set_error(LINA_EINVAL, "--pack needs the token that ends a document: a tokenizer with "
                                             "<|endoftext|> (--tokenizer) or eos_token_id in the config");
        }
    }
    lina_model *m = NULL;
    if (rc == LINA_OK) {
        rc = lina_model_create(&cfg, o.seed, &m);
    }
    lina_trainable t;
    if (rc == LINA_OK) {
        rc = lina_trainable_from_model(m, &t);
    }
    if (rc == LINA_OK && o.progress && rank0) {
        fprintf(stderr, "lina train: %s, %zu parameters, %d threads, %lld steps of %d x %d x %d tokens\n",
                lina_model_type_name(cfg.model_type), lina_model_num_params(m), lina_get_threads(),
                (long long)o.steps, o.accum, o.batch, o.seq_len);
        if (lina_dist_size(dist) > 1) {
            int R = lina_dist_dp_size(dist), S = lina_dist_sp_size(dist);
            char bs[32], ts[32];
            snprintf(bs, sizeof bs, o.batch % R ? "%d-%d" : "%d", o.batch / R, o.batch / R + 1);
            snprintf(ts, sizeof ts, o.seq_len % S ? "%d-%d" : "%d", o.seq_len / S, o.seq_len / S + 1);
            fprintf(stderr, "world: %d ranks = %d data-parallel x %d sequence-parallel; per rank %s sequences x %s "
                            "tokens of each global batch, %d threads\n",
                    lina_dist_size(dist), R, S, bs, ts, lina_get_threads());
        }
    }
    double last[2] = {NAN, NAN};
    if (rc == LINA_OK) {
        o.last = last;
        o.stop = &stop_requested;
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        lina_dist_reset_stats(dist);
        double t0 = lina_now();
        rc = lina_train(&t, &o);
        double el = lina_now() - t0;
        if (lina_dist_size(dist) > 1 && o.progress) {
            /* every rank's traffic and time in MPI calls, one line each (rank order not guaranteed) */
            lina_dist_stats ds;
            lina_dist_get_stats(dist, &ds);
            fprintf(stderr, "mpi: rank %d: %.3g MB into collectives (%.3g MB all-gathers), %.2f s of %.2f s in MPI "
                            "calls (%.1f%%; %.2f s all-gathers); gradient all-reduce: %.1f%% of its bytes started "
                            "during the backward, %.2f s waiting for it after the backward\n",
                    lina_dist_rank(dist), ds.bytes / 1e6, ds.gather_bytes / 1e6, ds.seconds, el,
                    100.0 * ds.seconds / (el > 0 ? el : 1), ds.gather_seconds,
                    100.0 * ds.early_bytes / (ds.sum_bytes > 0 ? ds.sum_bytes : 1), ds.wait_seconds);
        }
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
    }
    lina_model_free(m);
    for (int i = 0; i < 3; i++) {
        free(saved_strs[i]);
    }
    const int my_rank = lina_dist_rank(dist);
    if (rank0 && rc != LINA_OK) {
        /* reported before leaving MPI: a rank that exits first can end the job before rank 0 prints */
        fprintf(stderr, "%slina: train: %s\n", rc == LINA_EINTR ? "\n" : "", lina_last_error());
        fflush(stderr);
    }
    lina_dist_free(dist);
    if (!rank0) {
        /* rank 0 reports; the others only say why they stopped when it was their own failure */
        if (rc != LINA_OK && rc != LINA_EINTR && !strstr(lina_last_error(), "another rank failed") &&
            !strstr(lina_last_error(), "differ from rank 0")) {
            fprintf(stderr, "lina: train: rank %d: %s\n", my_rank, lina_last_error());
        }
        return rc == LINA_OK ? 0 : rc == LINA_EINTR ? 130 : rc == LINA_ENONFINITE ? 3 : 1;
    }
    if (rc != LINA_OK) {
        return rc == LINA_EINTR ? 130 : rc == LINA_ENONFINITE ? 3 : 1;
    }
    {
        /* the loss plot next to the checkpoint */
        char lp[4096], pp[4096];
        snprintf(lp, sizeof lp, "%s/log.jsonl", o.out_dir);
        snprintf(pp, sizeof pp, "%s/loss.png", o.out_dir);
        if (lina_plot_train_log(lp, pp, lina_model_type_name(cfg.model_type)) != LINA_OK) {
            fprintf(stderr, "lina: train: note: no loss plot (%s)\n", lina_last_error());
        }
    }
    if (o.progress) {
        fprintf(stderr, "done: %lld steps", (long long)o.steps);
        if (!isnan(last[0])) {
            fprintf(stderr, ", loss %.4f", last[0]);
        }
        if (!isnan(last[1])) {
            fprintf(stderr, ", val loss %.4f", last[1]);
        }
        fprintf(stderr, "; checkpoint in %s/checkpoint, log in %s/log.jsonl, plot in %s/loss.png\n", o.out_dir,
                o.out_dir, o.out_dir);
    }
    return 0;
}
