/* task.c -- `lina task NAME`: train and score one model on one synthetic task (or the
 * MoM comparison), printing text or JSON; `lina task icl-regression`: in-context linear
 * regression. The tasks themselves are in src/tasks. */
#include "cli.h"
#include "lina.h"
#include "../tasks/tasks.h"
#include "../tasks/icl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int parse_mixer(const char *v, void *dst)
{
    for (int t = 0; t < LINA_MODEL_COUNT; t++) {
        const char *n = lina_model_type_name((lina_model_type)t);
        if (n && v && !strcmp(n, v)) {
            *(lina_model_type *)dst = (lina_model_type)t;
            return 0;
        }
    }
    fprintf(stderr, "lina: task: unknown --mixer '%s' (lina task --help)\n", v ? v : "");
    return -1;
}

typedef struct lr_list {
    int n;
    double v[LINA_TASK_MAX_LRS];
} lr_list;

static int parse_lrs(const char *v, void *dst)
{
    lr_list *l = dst;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v ? v : "");
    l->n = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        double x = strtod(tok, &end);
        if (l->n == LINA_TASK_MAX_LRS || end == tok || *end || !isfinite(x) || !(x > 0.0) || x > 10.0) {
            l->n = 0;
            break;
        }
        l->v[l->n++] = x;
    }
    if (l->n == 0) {
        fprintf(stderr, "lina: task: --lrs must be 1 to %d comma-separated learning rates in (0, 10], not '%s'\n",
                LINA_TASK_MAX_LRS, v ? v : "");
        return -1;
    }
    return 0;
}

static void print_json(const lina_task_opts *o, const lina_task_result *r, int first)
{
    printf("%s{\"task\": \"%s\", \"mixer\": \"%s\", \"d_model\": %d, \"layers\": %d, \"heads\": %d, ", first ? "" : ",\n",
           lina_task_name(o->kind), lina_model_type_name(o->mixer), o->d_model, o->layers, o->heads);
    if (o->kind == LINA_TASK_MQAR) {
        printf("\"seq_len\": %d, \"vocab\": %d, \"num_kv\": %d, ", o->seq_len, o->vocab, o->num_kv);
    }
    if (o->mixer == LINA_MODEL_MOM) {
        printf("\"memories\": %d, \"topk\": %d, \"shared_mem\": %d, ", o->mom_memories, o->mom_topk, o->mom_shared);
    }
    printf("\"neg_eigval\": %d, \"householder\": %d, \"steps\": %d, \"batch\": %d, \"lr\": %g, \"seed\": %llu, ",
           o->neg_eigval, o->householder, o->steps, o->batch, o->lr, (unsigned long long)o->seed);
    printf("\"params\": %zu, \"state_floats_per_layer\": %lld, \"final_loss\": %.6g, \"test_acc\": %.6g, ",
           r->num_params, (long long)r->state_floats, r->final_loss, r->test_acc);
    printf("\"test_scaled_acc\": %.6g, \"train_acc\": ", r->test_scaled);
    if (isnan(r->train_acc)) {
        printf("null");
    } else {
        printf("%.6g", r->train_acc);
    }
    printf(", \"by_length\": [");
    for (int i = 0; i < r->nlens; i++) {
        printf("%s{\"len\": %d, \"acc\": %.6g}", i ? ", " : "", r->lens[i], r->acc_at[i]);
    }
    printf("], \"wall_s\": %.3f}", r->wall_s);
}

static void print_text(const lina_task_opts *o, const lina_task_result *r)
{
    printf("%s %s d_model=%d layers=%d heads=%d", lina_task_name(o->kind), lina_model_type_name(o->mixer),
           o->d_model, o->layers, o->heads);
    if (o->neg_eigval) {
        printf(" neg-eigval");
    }
    if (o->mixer == LINA_MODEL_GATED_DELTAPRODUCT) {
        printf(" n_h=%d", o->householder);
    }
    if (o->mixer == LINA_MODEL_MOM) {
        printf(" memories=%d topk=%d shared=%d", o->mom_memories, o->mom_topk, o->mom_shared);
    }
    printf(" seed=%llu: %zu params, state %lld floats/layer, %d steps, final loss %.4f, %.1f s\n",
           (unsigned long long)o->seed, r->num_params, (long long)r->state_floats, r->steps_done, r->final_loss,
           r->wall_s);
    switch (o->kind) {
    case LINA_TASK_MQAR:
        printf("  query accuracy %.4f (L=%d, N=%d, V=%d, %d test sequences)\n", r->test_acc, o->seq_len,
               o->num_kv, o->vocab, o->eval_n);
        break;
    case LINA_TASK_PARITY:
    case LINA_TASK_MODARITH:
        printf("  test lengths %d-%d: accuracy %.4f, scaled accuracy %.4f; training lengths %d-%d: accuracy %.4f\n",
               o->test_min, o->test_max, r->test_acc, r->test_scaled, o->train_min, o->train_max, r->train_acc);
        printf("  accuracy by length:");
        for (int i = 0; i < r->nlens; i++) {
            printf(" %d:%.3f", r->lens[i], r->acc_at[i]);
        }
        printf("\n");
        break;
    case LINA_TASK_S3:
    case LINA_TASK_S5:
        printf("  sequence accuracy at the training length %d: %.4f; token accuracy over %d positions %.4f\n",
               o->seq_len, r->train_acc, o->test_max, r->test_acc);
        printf("  sequence accuracy by length:");
        for (int i = 0; i < r->nlens; i++) {
            printf(" %d:%.3f", r->lens[i], r->acc_at[i]);
        }
        printf("\n");
        break;
    }
}

/* several learning rates x seeds: the kept run per seed, mean and spread */
static int run_sweep(lina_task_opts *o, const lr_list *lrs, int seeds, int json)
{
    lina_task_sweep sw;
    int rc = lina_task_sweep_run(o, lrs->v, lrs->n, seeds, &sw);
    if (rc) {
        fprintf(stderr, "lina: task %s (%s): %s\n", lina_task_name(o->kind), lina_model_type_name(o->mixer),
                lina_last_error());
        return 1;
    }
    char desc[512];
    lina_task_describe(o, desc, sizeof desc);
    if (json) {
        printf("{\"task\": \"%s\", \"mixer\": \"%s\", \"model\": \"%s\", \"seeds\": [", lina_task_name(o->kind),
               lina_model_type_name(o->mixer), desc);
        for (int i = 0; i < sw.nseeds; i++) {
            const lina_task_result *r = &sw.run[i];
            printf("%s{\"seed\": %llu, \"lr\": %g, \"test_scaled_acc\": %.6g, \"fit\": %.6g, \"val_acc\": %.6g, "
                   "\"steps\": %d, \"stopped_early\": %d, \"epochs\": %.3g, \"wall_s\": %.3f}",
                   i ? ", " : "", (unsigned long long)(o->seed + (uint64_t)i), sw.lr[i], r->test_scaled,
                   lina_task_fit(o, r), r->val_acc, r->steps_done, r->stopped_early, r->epochs, r->wall_s);
        }
        printf("], \"mean\": %.6g, \"sd\": %.6g, \"min\": %.6g, \"max\": %.6g, \"fit_min\": %.6g, \"runs\": %d, "
               "\"wall_s\": %.3f}\n",
               sw.mean, sw.sd, sw.min, sw.max, sw.fit_min, sw.runs, sw.wall_s);
    } else {
        printf("%s %s\n", lina_task_name(o->kind), desc);
        for (int i = 0; i < sw.nseeds; i++) {
            const lina_task_result *r = &sw.run[i];
            printf("  seed %llu: best lr %g, score %.4f, fit %.4f, %d steps%s (%.2f epochs), %.1f s\n",
                   (unsigned long long)(o->seed + (uint64_t)i), sw.lr[i], r->test_scaled, lina_task_fit(o, r),
                   r->steps_done, r->stopped_early ? " (target reached)" : "", r->epochs, r->wall_s);
        }
        printf("  score mean %.4f, sd %.4f, min %.4f, max %.4f over %d seeds; lowest fit %.4f; %d runs, %.1f s\n",
               sw.mean, sw.sd, sw.min, sw.max, sw.nseeds, sw.fit_min, sw.runs, sw.wall_s);
    }
    for (int i = 0; i < sw.nseeds; i++) {
        lina_task_result_free(&sw.run[i]);
    }
    return 0;
}

static int run_one(lina_task_opts *o, int json, int first)
{
    lina_task_result r;
    int rc = lina_task_run(o, &r);
    if (rc) {
        fprintf(stderr, "lina: task %s (%s): %s\n", lina_task_name(o->kind), lina_model_type_name(o->mixer),
                lina_last_error());
        return 1;
    }
    if (json) {
        print_json(o, &r, first);
    } else {
        print_text(o, &r);
    }
    lina_task_result_free(&r);
    return 0;
}

/* ------------------------------------------------------ icl-regression */

#define SIGMAS_ERR "lina: task icl-regression: --sigmas must be 1 to 8 comma-separated numbers >= 0, not '%s'\n"

static int parse_sigmas(const char *v, void *dst)
{
    lina_icl_data *d = dst;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    int k = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *end;
        double x = strtod(tok, &end);
        if (k == LINA_ICL_MAX_SIGMAS || end == tok || *end || !isfinite(x) || !(x >= 0.0)) {
            fprintf(stderr, SIGMAS_ERR, v);
            return -1;
        }
        d->sigmas[k++] = x;
    }
    if (k == 0) {
        fprintf(stderr, SIGMAS_ERR, v);
        return -1;
    }
    d->nsigma = k;
    return 0;
}

static int icl_main(int argc, char **argv)
{
    lina_icl_opts o;
    lina_icl_opts_default(&o);
    int json = 0, threads = 0;
    cli_opt opts[] = {
        CLI_HEADING("data:"),
        CLI_OPT_INT("--d", NULL, "D", &o.data.d, 1, 64, "input dimension"),
        CLI_OPT_INT("--n", NULL, "N", &o.data.n, 1, 4096, "in-context examples per sequence"),
        CLI_OPT_CHOICE("--noise", &o.data.noise, "none|mixed|uniform", "label noise"),
        CLI_OPT_FN("--sigmas", "S1,S2", &o.data, parse_sigmas, "noise levels of --noise mixed"),
        CLI_OPT_DBL("--sigma-max", NULL, "X", &o.data.sigma_max, 0.0, 1e300, "noise bound of --noise uniform"),
        CLI_HEADING("model:"),
        CLI_OPT_INT("--layers", NULL, "L", &o.layers, 1, 64, "linear-attention layers"),
        CLI_OPT_INT("--heads", NULL, "H", &o.heads, 1, 64, "heads per layer"),
        CLI_OPT_CHOICE("--variant", &o.variant, "ahn|full", "parametrisation (full when there is noise)"),
        CLI_OPT_DBL("--init-std", NULL, "X", &o.init_std, 0.0, 1e300, "initialisation standard deviation"),
        CLI_HEADING("training:"),
        CLI_OPT_I64("--steps", NULL, "N", &o.steps, 1, 100000000, "training steps"),
        CLI_OPT_INT("--batch", NULL, "B", &o.batch, 1, 1000000, "sequences per step"),
        CLI_OPT_DBL("--lr", NULL, "X", &o.lr, 1e-300, 1e300, "learning rate"),
        CLI_OPT_CHOICE("--optim", &o.optim, "adam|sgd", "optimizer (sgd: momentum 0.9)"),
        CLI_OPT_FLAG("--cosine", NULL, &o.cosine, "cosine decay of the lr to lr/10"),
        CLI_OPT_DBL("--beta2", NULL, "X", &o.beta2, 0.0, 0.999999999, "Adam beta2"),
        CLI_OPT_DBL("--clip", NULL, "X", &o.clip, -1e300, 1e300, "global-norm clipping (<= 0: off)"),
        CLI_OPT_INT("--test", NULL, "N", &o.test_size, 1, 10000000, "test sequences"),
        CLI_OPT_I64("--seed", NULL, "S", &o.seed, 0, 2147483647, "seed of data and initialisation"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--json", NULL, &json, "one JSON object on stdout"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "task icl-regression", .usage = "task icl-regression [options]",
                 .about = "  Trains linear-attention layers on in-context linear regression and compares the\n"
                          "  test MSE with ridge, least squares, adaptive ridge and gradient descent.\n",
                 .opts = opts};
    char sig[64];
    int k = snprintf(sig, sizeof sig, "%g", o.data.sigmas[0]);
    for (int i = 1; i < o.data.nsigma && k > 0 && (size_t)k < sizeof sig; i++) {
        k += snprintf(sig + k, sizeof sig - (size_t)k, ",%g", o.data.sigmas[i]);
    }
    cli_default(&c, "--sigmas", sig);
    int pr = cli_parse(&c, argc - 1, argv + 1);
    if (pr != CLI_RUN) {
        return pr;
    }
    int variant_set = cli_given(&c, "--variant");
    if (!variant_set && o.data.noise != LINA_ICL_NOISE_NONE) {
        o.variant = LINA_ICL_FULL; /* noise adaptation needs the y rows/columns (FULL) */
    }
    cli_set_threads(threads);
    lina_icl_result r;
    int rc = lina_icl_train(&o, &r);
    if (rc != LINA_OK) {
        fprintf(stderr, "lina: task icl-regression: %s\n", lina_last_error());
        return 1;
    }
    const char *noise = o.data.noise == LINA_ICL_NOISE_NONE    ? "none"
                        : o.data.noise == LINA_ICL_NOISE_MIXED ? "mixed"
                                                               : "uniform";
    const char *optim = o.optim == LINA_ICL_ADAM ? "adam" : "sgd";
    const char *variant = o.variant == LINA_ICL_AHN ? "ahn" : "full";
    if (json) {
        printf("{\"task\":\"icl-regression\",\"d\":%d,\"n\":%d,\"layers\":%d,\"heads\":%d,"
               "\"variant\":\"%s\",\"noise\":\"%s\",\"optim\":\"%s\",\"steps\":%lld,\"batch\":%d,"
               "\"lr\":%.17g,\"seed\":%llu,\"params\":%lld,\"train_loss\":%.9g,\"test_mse\":%.9g,"
               "\"ridge_mse\":%.9g,\"ridge_lambda\":%.9g,\"lstsq_mse\":%.9g,\"oracle_mse\":%.9g,"
               "\"adaridge_mse\":%.9g,\"gd_mse\":%.9g,\"gd_eta\":%.9g,\"adjusted_mse\":%.9g,"
               "\"test_size\":%d,\"wall_s\":%.3f}\n",
               o.data.d, o.data.n, o.layers, o.heads, variant, noise, optim, (long long)o.steps,
               o.batch, o.lr, (unsigned long long)o.seed, (long long)r.nparams, r.final_loss,
               r.test_mse, r.ridge_mse, r.ridge_lambda, r.lstsq_mse, r.oracle_mse, r.adaridge_mse,
               r.gd_mse, r.gd_eta, r.test_mse - r.oracle_mse, o.test_size, r.wall_s);
    } else {
        printf("icl-regression: d %d, n %d, noise %s, %d layer(s) x %d head(s) (%s, %lld params), "
               "%s lr %g, %lld steps x batch %d, seed %llu\n",
               o.data.d, o.data.n, noise, o.layers, o.heads, variant, (long long)r.nparams, optim,
               o.lr, (long long)o.steps, o.batch, (unsigned long long)o.seed);
        printf("  train loss (last 1%% of steps)  %.4g\n", r.final_loss);
        printf("  test MSE (%d sequences)       %.4g\n", o.test_size, r.test_mse);
        printf("  ridge, tuned lambda %-9g  %.4g\n", r.ridge_lambda, r.ridge_mse);
        printf("  least squares                 %.4g\n", r.lstsq_mse);
        printf("  ridge, true noise (oracle)    %.4g   (adjusted model MSE %.4g)\n", r.oracle_mse,
               r.test_mse - r.oracle_mse);
        printf("  adaptive ridge (ADARR)        %.4g\n", r.adaridge_mse);
        printf("  %d step(s) of GD, eta %-8g  %.4g\n", o.layers, r.gd_eta, r.gd_mse);
        printf("  wall %.1f s\n", r.wall_s);
    }
    return 0;
}


/* ---------------------------------------------------------------- tasks */

static const char TASK_ABOUT[] =
    "  NAME: mqar | parity | modarith | s3 | s5 | icl-regression ('lina task icl-regression --help').\n"
    "  The defaults shown are NAME's ('lina task s3 --help' shows those of s3).\n";

int lina_cmd_task(int argc, char **argv)
{
    const char *name = argc >= 2 && argv[1][0] != '-' ? argv[1] : NULL;
    if (name && !strcmp(name, "icl-regression")) {
        return icl_main(argc - 1, argv + 1);
    }
    static const char *const names[] = {"mqar", "parity", "modarith", "s3", "s5"};
    static const lina_task_kind kinds[] = {LINA_TASK_MQAR, LINA_TASK_PARITY, LINA_TASK_MODARITH, LINA_TASK_S3,
                                           LINA_TASK_S5};
    int ki = -1;
    for (int i = 0; name && i < 5; i++) {
        ki = strcmp(name, names[i]) ? ki : i;
    }
    lina_task_kind kind = ki >= 0 ? kinds[ki] : LINA_TASK_MQAR;
    lina_task_opts o;
    lina_task_opts_default(&o, kind);
    int json = 0, mom = 0, quiet = 0, no_neg = 0, no_shared = 0, fla = 0, no_conv = 0, seeds = 1;
    lr_list lrs = {0, {0}};
    const char *write_cfg = NULL;
    char mixers[512] = "";  /* every model type, as lina_model_type_name spells it */
    for (int t = 0; t < LINA_MODEL_COUNT; t++) {
        const char *nm = lina_model_type_name((lina_model_type)t);
        size_t used = strlen(mixers);
        if (nm && used + strlen(nm) + 2 < sizeof mixers)
            snprintf(mixers + used, sizeof mixers - used, "%s%s", used ? " " : "", nm);
    }
    cli_opt opts[] = {
        CLI_HEADING("model:"),
        CLI_OPT_FN("--mixer", "M", &o.mixer, parse_mixer, mixers),
        CLI_OPT_INT("--d-model", NULL, "D", &o.d_model, 1, 65536, "model width"),
        CLI_OPT_INT("--layers", NULL, "L", &o.layers, 1, 64, "layers"),
        CLI_OPT_INT("--heads", NULL, "H", &o.heads, 1, 1024, "heads"),
        CLI_OPT_INT("--head-dim", NULL, "K", &o.head_dim, 1, 65536, "key width per head (0: the mixer's rule)"),
        CLI_OPT_FLAG("--neg-eigval", NULL, &o.neg_eigval, "eigenvalues in [-1, 1]: beta in (0, 2) / decay in [-1, 1]"),
        CLI_OPT_FLAG("--no-neg-eigval", NULL, &no_neg, "turn --neg-eigval off (s3/s5 default it on)"),
        CLI_OPT_INT("--householder", NULL, "N", &o.householder, 1, 16, "gated_deltaproduct: Householder steps per token"),
        CLI_OPT_FLAG("--fla-blocks", NULL, &fla,
                     "FLA's LM layout (GatedMLP 2d per block, FLA's mixer defaults) instead of the mixer-only blocks"),
        CLI_OPT_FLAG("--mlp", NULL, &o.mlp, "add the GatedMLP (2d) to the mixer-only blocks"),
        CLI_OPT_FLAG("--no-conv", NULL, &no_conv, "no short convolutions (mamba2 keeps its own)"),
        CLI_OPT_FLAG("--slow-decay-init", NULL, &o.slow_decay,
                     "ablation: every per-head decay gate (gated_deltanet, mom, mamba2) starts at A = 1, dt = 0.001"),
        CLI_OPT_FLAG("--mom", NULL, &mom, "mqar: MoM against one Gated DeltaNet memory of equal and of 4x the state"),
        CLI_OPT_INT("--memories", NULL, "E", &o.mom_memories, 1, 64, "mom: memories"),
        CLI_OPT_INT("--topk", NULL, "K", &o.mom_topk, 1, 64, "mom: memories routed per token"),
        CLI_OPT_FLAG("--no-shared-mem", NULL, &no_shared, "mom: no shared memory"),
        CLI_HEADING("data:"),
        CLI_OPT_INT("--seq-len", NULL, "L", &o.seq_len, 1, 100000, "mqar: sequence length; s3/s5: training length"),
        CLI_OPT_INT("--vocab", NULL, "V", &o.vocab, 4, 1 << 20, "mqar: vocabulary"),
        CLI_OPT_INT("--num-kv", NULL, "N", &o.num_kv, 1, 100000, "mqar: key-value pairs"),
        CLI_OPT_DBL("--power-a", NULL, "A", &o.power_a, 1e-6, 1.0, "mqar: query-position power law"),
        CLI_OPT_FLAG("--random-non-queries", NULL, &o.random_non_queries, "mqar: random tokens between the queries"),
        CLI_OPT_INT("--train-min", NULL, "N", &o.train_min, 1, 100000, "parity/modarith: shortest training length"),
        CLI_OPT_INT("--train-max", NULL, "N", &o.train_max, 1, 100000, "parity/modarith: longest training length"),
        CLI_OPT_INT("--test-min", NULL, "N", &o.test_min, 1, 100000, "parity/modarith: shortest test length"),
        {.kind = CLI_INT, .name = "--test-max", .alias = "--test-len", .meta = "N", .dst = &o.test_max, .lo = 1,
         .hi = 100000, .help = "longest test length (s3/s5: --test-len)"},
        CLI_HEADING("training:"),
        CLI_OPT_INT("--steps", NULL, "N", &o.steps, 1, 100000000, "training steps"),
        CLI_OPT_INT("--batch", NULL, "B", &o.batch, 1, 4096, "sequences per step"),
        CLI_OPT_DBL("--lr", NULL, "X", &o.lr, 1e-12, 10.0, "peak learning rate"),
        CLI_OPT_DBL("--wd", NULL, "X", &o.weight_decay, 0.0, 10.0, "weight decay"),
        CLI_OPT_DBL("--clip", NULL, "X", &o.clip, 0.0, 1e9, "gradient-norm clipping"),
        CLI_OPT_INT("--warmup", NULL, "N", &o.warmup, 0, 100000000, "warm-up steps"),
        CLI_OPT_INT("--train-n", NULL, "N", &o.train_n, 0, 100000000,
                    "a fixed training set of N examples visited in epochs (0: fresh batches every step)"),
        CLI_OPT_DBL("--target", NULL, "X", &o.target, 0.0, 1.0,
                    "stop once the validation accuracy reaches X (0: never)"),
        CLI_OPT_INT("--eval-every", NULL, "N", &o.eval_every, 0, 100000000, "validation every N steps (0: steps/20)"),
        CLI_OPT_INT("--val", NULL, "N", &o.val_n, 1, 1000000, "validation sequences (training distribution)"),
        CLI_OPT_FN("--lrs", "X,Y,..", &lrs, parse_lrs,
                   "several learning rates: the best by validation accuracy is kept per seed"),
        CLI_OPT_INT("--seeds", NULL, "N", &seeds, 1, LINA_TASK_MAX_SEEDS,
                    "seeds --seed .. --seed+N-1: mean and spread of the score"),
        CLI_OPT_I64("--seed", NULL, "S", &o.seed, 0, 2147483647, "seed"),
        CLI_OPT_INT("--threads", "-t", "N", &o.threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_INT("--eval", NULL, "N", &o.eval_n, 1, 1000000, "test sequences (per length for parity/modarith)"),
        CLI_HEADING("output:"),
        CLI_OPT_FLAG("--json", NULL, &json, "one JSON object on stdout"),
        CLI_OPT_FLAG("--quiet", NULL, &quiet, "no progress line"),
        CLI_OPT_STR("--write-config", NULL, "FILE", &write_cfg,
                    "write the model's config.json (FLA style) to FILE and exit without training"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "task", .usage = "task NAME [options]", .about = TASK_ABOUT, .opts = opts, .max_pos = 1};
    cli_default(&c, "--mixer", lina_model_type_name(o.mixer));
    cli_default(&c, "--warmup", o.warmup < 0 ? "steps/10" : NULL);
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (c.npos < 1) {
        return cli_fail(&c, "missing task NAME (lina task --help)");
    }
    if (!name) {
        return cli_fail(&c, "the task NAME comes first: lina task NAME [options]");
    }
    if (ki < 0) {
        return cli_fail(&c, "unknown task '%s' (lina task --help)", c.pos[0]);
    }
    o.progress = !quiet;
    o.threads = o.threads > 0 ? cli_threads(o.threads) : 0;
    if (no_neg) {
        o.neg_eigval = 0;
    }
    if (no_shared) {
        o.mom_shared = 0;
    }
    o.block = fla ? LINA_TASK_BLOCK_FLA : LINA_TASK_BLOCK_ZOOLOGY;
    o.conv = !no_conv;
    int neg_set = cli_given(&c, "--neg-eigval") || no_neg;
    if (o.mixer != LINA_MODEL_GATED_DELTAPRODUCT && !cli_given(&c, "--householder")) {
        o.householder = 1; /* the s3/s5 default only applies to gated_deltaproduct */
    }
    if (!neg_set && o.mixer != LINA_MODEL_DELTA_NET && o.mixer != LINA_MODEL_GATED_DELTANET &&
        o.mixer != LINA_MODEL_GATED_DELTAPRODUCT && o.mixer != LINA_MODEL_MAMBA2 && o.mixer != LINA_MODEL_MOM) {
        o.neg_eigval = 0; /* the s3/s5 default only applies where the mixer has the option */
    }
    if (write_cfg) { /* the model a run with these options trains, for other tools (bench) */
        lina_config cfg;
        if (lina_task_config(&o, &cfg) != 0 || lina_config_write(write_cfg, &cfg) != 0) {
            fprintf(stderr, "lina: task %s: %s\n", lina_task_name(kind), lina_last_error());
            return 1;
        }
        return 0;
    }
    if (!mom && (lrs.n > 0 || seeds > 1)) {
        if (lrs.n == 0) {
            lrs.n = 1;
            lrs.v[0] = o.lr;
        }
        return run_sweep(&o, &lrs, seeds, json);
    }
    if (!mom) {
        int rc = run_one(&o, json, 1);
        if (json && !rc) {
            printf("\n");
        }
        return rc;
    }
    if (kind != LINA_TASK_MQAR) {
        return cli_fail(&c, "--mom applies to mqar only");
    }
    /* MoM against one memory of equal per-memory state and one of 4x the state */
    lina_task_opts runs[3] = {o, o, o};
    runs[0].mixer = LINA_MODEL_MOM;
    runs[1].mixer = LINA_MODEL_GATED_DELTANET;
    runs[2].mixer = LINA_MODEL_GATED_DELTANET;
    int hd = o.head_dim > 0 ? o.head_dim : o.d_model / o.heads;
    for (int k = 0; k < 3; k++) {
        runs[k].head_dim = k == 2 ? 2 * hd : hd;
        runs[k].householder = 1;
    }
    int fails = 0;
    if (json) {
        printf("[");
    }
    for (int k = 0; k < 3; k++) {
        fails += run_one(&runs[k], json, k == fails) != 0;
    }
    if (json) {
        printf("]\n");
    }
    return fails ? 1 : 0;
}
