/* analyze.c -- `lina analyze linearity` and `lina analyze replace`: how linear a
 * model's blocks are, measured on the residual stream between blocks.
 *
 *   linearity  the per-block linearity score of "Your Transformer is Secretly
 *              Linear" (Razzhigaev et al., 2024) between the stream entering block
 *              l and the stream leaving it, and the same score with the residual
 *              removed (the block's own contribution, x_{l+1} - x_l); a table and a
 *              PNG plot.
 *   replace    ReplaceMe (Shopkhoev et al., 2025): blocks i..j pruned and replaced by
 *              one linear map of the stream, W = argmin ||x_i W^T - x_{j+1}||^2
 *              estimated in closed form on calibration tokens; no training. The
 *              perplexity before and after on held-out tokens, for one span or for
 *              the best contiguous span of each length (--scan). */
#include "cli.h"
#include "lina.h"
#include "../analyze/linfit.h"
#include "../io/io_internal.h"
#include "../io/plot.h"
#include "../model/model.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* hidden states of L + 1 stream positions, `rows` rows of D each */
typedef struct hidden_set {
    int L, D;
    int64_t rows;
    float *h; /* [(L + 1), rows, D] */
} hidden_set;

static float *hs_at(const hidden_set *s, int l)
{
    return s->h + (size_t)l * (size_t)s->rows * (size_t)s->D;
}

/* The model, the token file and the window layout every subcommand shares. */
typedef struct an_ctx {
    const char *name;
    lina_model *m;
    lina_tokfile *f;
    int T, B;
    lina_ws ws;
} an_ctx;

/* Windows w0 .. w0 + nwin - 1 of T (+1) tokens from the start of the file. */
static int read_windows(an_ctx *a, uint64_t w0, int nb, int32_t *tok, int32_t *tgt, int32_t *win)
{
    for (int b = 0; b < nb; b++) {
        if (lina_tok_read(a->f, (w0 + (uint64_t)b) * (uint64_t)a->T, (size_t)a->T + 1, win)) {
            return -1;
        }
        memcpy(tok + (size_t)b * a->T, win, (size_t)a->T * sizeof *win);
        if (tgt) {
            memcpy(tgt + (size_t)b * a->T, win + 1, (size_t)a->T * sizeof *win);
        }
    }
    return 0;
}

/* Runs windows [w0, w0 + nwin) through the model: collects the stream (hs != NULL)
 * and/or the mean loss (loss != NULL). */
static int run_windows(an_ctx *a, uint64_t w0, uint64_t nwin, hidden_set *hs, double *loss)
{
    const int T = a->T, D = lina_model_config(a->m)->hidden_size;
    const int L = lina_model_config(a->m)->num_hidden_layers;
    int32_t *tok = malloc((size_t)a->B * T * sizeof *tok), *tgt = malloc((size_t)a->B * T * sizeof *tgt);
    int32_t *win = malloc(((size_t)T + 1) * sizeof *win);
    int rc = 0;
    double sum = 0.0;
    if (!tok || !tgt || !win) {
        lina_set_error(LINA_ENOMEM, "out of memory");
        rc = -1;
    }
    for (uint64_t done = 0; rc == 0 && done < nwin;) {
        int nb = nwin - done < (uint64_t)a->B ? (int)(nwin - done) : a->B;
        if (read_windows(a, w0 + done, nb, tok, tgt, win)) {
            rc = -1;
            break;
        }
        double l = 0.0;
        if (lina_model_eval_loss(a->m, tok, tgt, nb, T, &l, &a->ws)) {
            rc = -1;
            break;
        }
        sum += l * nb;
        if (hs) {
            for (int p = 0; p <= L; p++) {
                const float *src = lina_model_hidden(a->m, p);
                if (!src) {
                    lina_set_error(LINA_EINVAL, "the model kept no hidden state for block %d", p);
                    rc = -1;
                    break;
                }
                memcpy(hs_at(hs, p) + done * (uint64_t)T * (uint64_t)D, src, (size_t)nb * T * D * sizeof(float));
            }
        }
        done += (uint64_t)nb;
    }
    if (rc == 0 && loss) {
        *loss = sum / (double)nwin;
        if (!isfinite(*loss)) {
            lina_set_error(LINA_ENONFINITE, "the loss is not finite (%g)", *loss);
            rc = -1;
        }
    }
    free(tok);
    free(tgt);
    free(win);
    return rc;
}

static int hs_alloc(hidden_set *s, int L, int D, int64_t rows)
{
    s->L = L;
    s->D = D;
    s->rows = rows;
    size_t n = (size_t)(L + 1) * (size_t)rows * (size_t)D;
    if ((double)n * sizeof(float) > 16e9) {
        return lina_set_error(LINA_EINVAL, "%lld rows x %d layers x %d would need %.1f GB of activations; "
                                           "use fewer tokens", (long long)rows, L + 1, D, n * 4e-9);
    }
    s->h = malloc(n * sizeof(float));
    return s->h ? LINA_OK : lina_set_error(LINA_ENOMEM, "out of memory (%zu floats of activations)", n);
}

/* Opens the model and the token file; checks that the file holds `need` windows. */
static int ctx_open(an_ctx *a, const char *model_arg, const char *data, uint64_t need)
{
    char mdir[4096];
    const char *dir = cli_checkpoint_dir(model_arg, mdir, sizeof mdir);
    lina_ws_init(&a->ws);
    if (lina_model_load(dir, &a->m) || lina_tok_open(data, &a->f)) {
        fprintf(stderr, "lina: %s: %s\n", a->name, lina_last_error());
        return 1;
    }
    const lina_config *c = lina_model_config(a->m);
    if ((int64_t)lina_tok_vocab(a->f) > (int64_t)c->vocab_size) {
        fprintf(stderr, "lina: %s: %s has vocab %u but the model's vocab_size is %d\n", a->name, data,
                lina_tok_vocab(a->f), c->vocab_size);
        return 1;
    }
    uint64_t have = lina_tok_count(a->f) > 0 ? (lina_tok_count(a->f) - 1) / (uint64_t)a->T : 0;
    if (have < need) {
        fprintf(stderr, "lina: %s: %s has %llu tokens: %llu windows of %d, but %llu are needed (lower --tokens "
                        "or --seq-len)\n",
                a->name, data, (unsigned long long)lina_tok_count(a->f), (unsigned long long)have, a->T,
                (unsigned long long)need);
        return 1;
    }
    return 0;
}

static void ctx_close(an_ctx *a)
{
    lina_ws_free(&a->ws);
    lina_tok_close(a->f);
    lina_model_free(a->m);
}

static void afile_printf(lina_afile *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void afile_printf(lina_afile *f, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lina_afile_write(f, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* ================================================================ linearity */

static int an_linearity(int argc, char **argv)
{
    const char *model_arg = NULL, *data = NULL, *png = NULL, *md = NULL;
    int T = 128, B = 8, threads = 0, tokens = 8192;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "token file whose first tokens are used"),
        CLI_OPT_INT("--tokens", NULL, "N", &tokens, 16, 1 << 24, "token positions (rows) to fit on"),
        CLI_OPT_INT("--seq-len", NULL, "T", &T, 1, 1 << 20, "tokens per window"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "windows per forward pass"),
        CLI_OPT_STR("--png", NULL, "FILE", &png, "plot the two scores per block into this PNG"),
        CLI_OPT_STR("--table", NULL, "FILE", &md, "write the table as Markdown to this file"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "analyze linearity", .usage = "analyze linearity --model DIR --data FILE [options]",
                 .about = "  Per block l: the linearity score between the residual stream entering the block\n"
                          "  (x_l) and leaving it (x_{l+1}): both centred and scaled to unit Frobenius norm,\n"
                          "  score = 1 - min_A ||x~_l A - x~_{l+1}||^2 (1: exactly linear; unrelated data\n"
                          "  scores about D / rows). 'without residual' scores x_{l+1} - x_l instead.\n",
                 .opts = opts};
    cli_default(&c, "--model", "required");
    cli_default(&c, "--data", "required");
    cli_default(&c, "--png", "none");
    cli_default(&c, "--table", "none");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_arg || !data) {
        return cli_fail(&c, "--model DIR and --data FILE are required");
    }
    cli_set_threads(threads);
    an_ctx a = {.name = c.name, .T = T, .B = B};
    uint64_t nwin = ((uint64_t)tokens + (uint64_t)T - 1) / (uint64_t)T;
    hidden_set hs = {0};
    double *s1 = NULL, *s2 = NULL;
    float *diff = NULL;
    int rc = ctx_open(&a, model_arg, data, nwin);
    if (rc) {
        ctx_close(&a);
        return rc;
    }
    const lina_config *cfg = lina_model_config(a.m);
    const int L = cfg->num_hidden_layers, D = cfg->hidden_size;
    int64_t rows = (int64_t)nwin * T;
    rc = 1;
    if (hs_alloc(&hs, L, D, rows) || run_windows(&a, 0, nwin, &hs, NULL)) {
        fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
        goto done;
    }
    if (rows < 2 * (int64_t)D) {
        fprintf(stderr, "lina: %s: note: %lld rows for width %d: scores are inflated below about 10 x D rows\n",
                c.name, (long long)rows, D);
    }
    s1 = calloc((size_t)L, sizeof *s1);
    s2 = calloc((size_t)L, sizeof *s2);
    diff = malloc((size_t)rows * D * sizeof *diff);
    if (!s1 || !s2 || !diff) {
        fprintf(stderr, "lina: %s: out of memory\n", c.name);
        goto done;
    }
    printf("%-6s %12s %18s %12s\n", "block", "linearity", "without residual", "|f(x)|/|x|");
    for (int l = 0; l < L; l++) {
        const float *x = hs_at(&hs, l), *y = hs_at(&hs, l + 1);
        double nf = 0.0, nx = 0.0;
        for (size_t i = 0; i < (size_t)rows * D; i++) {
            diff[i] = y[i] - x[i];
            nf += (double)diff[i] * diff[i];
            nx += (double)x[i] * x[i];
        }
        if (lina_linearity_score(x, y, rows, D, &s1[l]) || lina_linearity_score(x, diff, rows, D, &s2[l])) {
            fprintf(stderr, "lina: %s: block %d: %s\n", c.name, l, lina_last_error());
            goto done;
        }
        printf("%-6d %12.4f %18.4f %12.4f\n", l, s1[l], s2[l], nx > 0 ? sqrt(nf / nx) : 0.0);
    }
    printf("(%lld token positions from %s, windows of %d)\n", (long long)rows, data, T);
    if (md) {
        lina_afile f;
        if (lina_afile_open(&f, md)) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
        afile_printf(&f, "| block | linearity | without residual |\n|---:|---:|---:|\n");
        for (int l = 0; l < L; l++) {
            afile_printf(&f, "| %d | %.4f | %.4f |\n", l, s1[l], s2[l]);
        }
        afile_printf(&f, "\n%lld token positions, windows of %d, from %s.\n", (long long)rows, T, data);
        if (lina_afile_commit(&f)) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
    }
    if (png) {
        double *xs = malloc((size_t)L * sizeof *xs);
        if (!xs) {
            goto done;
        }
        for (int l = 0; l < L; l++) {
            xs[l] = l;
        }
        lina_plot_series ser[2] = {{"linearity", xs, s1, L}, {"without residual", xs, s2, L}};
        lina_plot_opts po = {.title = "linearity score per block", .xlabel = "block", .ylabel = "score"};
        int prc = lina_plot_png(png, &po, ser, 2);
        free(xs);
        if (prc) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
    }
    rc = 0;
done:
    free(diff);
    free(s1);
    free(s2);
    free(hs.h);
    ctx_close(&a);
    return rc;
}

/* ================================================================ replace */

static int parse_span(const char *s, void *dst)
{
    int *ij = dst;
    char tail = 0;
    if (sscanf(s, "%d..%d%c", &ij[0], &ij[1], &tail) != 2 || ij[0] < 0 || ij[1] < ij[0]) {
        fprintf(stderr, "lina: analyze replace: --blocks takes a span I..J with 0 <= I <= J (got '%s')\n", s);
        return -1;
    }
    return 0;
}

/* Fits the map of blocks i..j on the calibration stream, installs it and returns
 * the held-out loss; the model is restored afterwards. */
static int replaced_loss(an_ctx *a, const hidden_set *cal, int i, int j, uint64_t w0, uint64_t nwin, float *W,
                         double *resid, double *loss)
{
    const int D = cal->D;
    if (lina_lstsq(hs_at(cal, i), hs_at(cal, j + 1), cal->rows, D, D, 1e-6, W, resid) ||
        lina_model_replace_blocks(a->m, i, j, W)) {
        return -1;
    }
    int rc = run_windows(a, w0, nwin, NULL, loss);
    lina_model_replace_blocks(a->m, 0, 0, NULL);
    return rc;
}

static int an_replace(int argc, char **argv)
{
    const char *model_arg = NULL, *data = NULL, *md = NULL;
    int T = 128, B = 8, threads = 0, cal_tokens = 8192, eval_tokens = 16384, scan = 0;
    int span[2] = {-1, -1};
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "token file: calibration windows first, then evaluation ones"),
        CLI_OPT_FN("--blocks", "I..J", span, parse_span, "replace blocks I..J (0-based, inclusive)"),
        CLI_OPT_FLAG("--scan", NULL, &scan, "every contiguous span: the best of each length"),
        CLI_OPT_INT("--calib-tokens", NULL, "N", &cal_tokens, 16, 1 << 24, "token positions the map is fitted on"),
        CLI_OPT_INT("--eval-tokens", NULL, "N", &eval_tokens, 1, 1 << 26, "held-out tokens scored (after them)"),
        CLI_OPT_INT("--seq-len", NULL, "T", &T, 1, 1 << 20, "tokens per window"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "windows per forward pass"),
        CLI_OPT_STR("--table", NULL, "FILE", &md, "write the results as Markdown to this file"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "analyze replace", .usage = "analyze replace --model DIR --data FILE (--blocks I..J | --scan)",
                 .about = "  Blocks I..J are pruned and replaced by one linear map of the residual stream,\n"
                          "  x_{J+1} ~ x_I W^T, W fitted in closed form (least squares, ridge 1e-6 of the mean\n"
                          "  diagonal) on the calibration tokens; no training. Reports the perplexity of the\n"
                          "  held-out tokens (the windows after the calibration ones) before and after.\n",
                 .opts = opts};
    cli_default(&c, "--model", "required");
    cli_default(&c, "--data", "required");
    cli_default(&c, "--blocks", "one of --blocks, --scan");
    cli_default(&c, "--table", "none");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_arg || !data) {
        return cli_fail(&c, "--model DIR and --data FILE are required");
    }
    if ((span[0] >= 0) == scan) {
        return cli_fail(&c, "give one of --blocks I..J and --scan");
    }
    cli_set_threads(threads);
    an_ctx a = {.name = c.name, .T = T, .B = B};
    uint64_t ncal = ((uint64_t)cal_tokens + (uint64_t)T - 1) / (uint64_t)T;
    uint64_t nev = ((uint64_t)eval_tokens + (uint64_t)T - 1) / (uint64_t)T;
    hidden_set cal = {0};
    float *W = NULL;
    lina_afile f;
    int have_file = 0;
    int rc = ctx_open(&a, model_arg, data, ncal + nev);
    if (rc) {
        ctx_close(&a);
        return rc;
    }
    const lina_config *cfg = lina_model_config(a.m);
    const int L = cfg->num_hidden_layers, D = cfg->hidden_size;
    rc = 1;
    if (span[0] >= 0 && span[1] >= L) {
        fprintf(stderr, "lina: %s: --blocks %d..%d: the model has blocks 0..%d\n", c.name, span[0], span[1], L - 1);
        goto done;
    }
    if (L < 2 && scan) {
        fprintf(stderr, "lina: %s: --scan needs a model of at least 2 blocks (it has %d)\n", c.name, L);
        goto done;
    }
    double base = 0.0;
    W = malloc((size_t)D * D * sizeof *W);
    if (!W || hs_alloc(&cal, L, D, (int64_t)ncal * T) || run_windows(&a, 0, ncal, &cal, NULL) ||
        run_windows(&a, ncal, nev, NULL, &base)) {
        fprintf(stderr, "lina: %s: %s\n", c.name, W ? lina_last_error() : "out of memory");
        goto done;
    }
    if (md) {
        if (lina_afile_open(&f, md)) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
        have_file = 1;
        afile_printf(&f, "| blocks replaced | share of blocks | fit residual | perplexity | vs. full model |\n"
                         "|---|---:|---:|---:|---:|\n| none | 0 %% | | %.3f | 1.000 |\n", exp(base));
    }
    printf("full model (%d blocks): held-out loss %.4f, perplexity %.3f (%llu tokens)\n", L, base, exp(base),
           (unsigned long long)(nev * (uint64_t)T));
    printf("%-12s %8s %14s %12s %10s\n", "blocks", "share", "fit residual", "perplexity", "ratio");
    int lo_len = scan ? 1 : span[1] - span[0] + 1, hi_len = scan ? L - 1 : lo_len;
    for (int len = lo_len; len <= hi_len; len++) {
        int best_i = -1;
        double best = INFINITY, best_res = 0.0;
        int i0 = scan ? 0 : span[0], i1 = scan ? L - len : span[0];
        for (int i = i0; i <= i1; i++) {
            double loss = 0.0, res = 0.0;
            if (replaced_loss(&a, &cal, i, i + len - 1, ncal, nev, W, &res, &loss)) {
                fprintf(stderr, "lina: %s: blocks %d..%d: %s\n", c.name, i, i + len - 1, lina_last_error());
                goto done;
            }
            if (scan) {
                printf("  %d..%d: perplexity %.3f\n", i, i + len - 1, exp(loss));
            }
            if (loss < best) {
                best = loss;
                best_i = i;
                best_res = res;
            }
        }
        char lab[32];
        snprintf(lab, sizeof lab, "%d..%d", best_i, best_i + len - 1);
        printf("%-12s %7.0f%% %14.4f %12.3f %10.3f%s\n", lab, 100.0 * len / L, best_res, exp(best),
               exp(best) / exp(base), scan ? "  (best of its length)" : "");
        if (have_file) {
            afile_printf(&f, "| %s%s | %.0f %% | %.4f | %.3f | %.3f |\n", lab, scan ? " (best)" : "", 100.0 * len / L,
                         best_res, exp(best), exp(best) / exp(base));
        }
    }
    if (have_file) {
        afile_printf(&f, "\nMap fitted on %llu token positions; perplexity on the next %llu tokens of %s "
                         "(windows of %d).\n",
                     (unsigned long long)(ncal * (uint64_t)T), (unsigned long long)(nev * (uint64_t)T), data, T);
        have_file = 0;
        if (lina_afile_commit(&f)) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
    }
    rc = 0;
done:
    if (have_file) {
        lina_afile_abort(&f);
    }
    free(W);
    free(cal.h);
    ctx_close(&a);
    return rc;
}

/* ================================================================ recall */

/* A copy-recall probe on the corpus: each sample is [A | filler | A] with A `span`
 * tokens and the filler `gap` tokens of the file, so the second A starts gap + span
 * tokens after the first; the model's top-1 accuracy and loss on A's tokens 2..span of
 * the second copy (recall, which a sliding window shorter than gap + span cannot see)
 * against the same tokens in the first copy (no copy to read from). */
static int an_recall(int argc, char **argv)
{
    const char *model_arg = NULL, *data = NULL;
    int span = 24, gap = 72, samples = 64, B = 8, threads = 0;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "token file (the spans and fillers)"),
        CLI_OPT_INT("--span", NULL, "N", &span, 2, 1 << 16, "tokens of the copied span A"),
        CLI_OPT_INT("--gap", NULL, "N", &gap, 0, 1 << 20, "filler tokens between the two copies"),
        CLI_OPT_INT("--samples", NULL, "N", &samples, 1, 1 << 20, "sequences scored"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "sequences per forward pass"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "analyze recall", .usage = "analyze recall --model DIR --data FILE [options]",
                 .about = "  Sequences [A | filler | A] from the file: accuracy and loss on the second copy of A\n"
                          "  (recall over span + gap tokens) and on the first (no copy to read from).\n",
                 .opts = opts};
    cli_default(&c, "--model", "required");
    cli_default(&c, "--data", "required");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_arg || !data) {
        return cli_fail(&c, "--model DIR and --data FILE are required");
    }
    cli_set_threads(threads);
    const int T = 2 * span + gap;
    an_ctx a = {.name = c.name, .T = T, .B = B};
    int rc = 1;
    int32_t *tok = NULL, *buf = NULL;
    float *logits = NULL;
    if (ctx_open(&a, model_arg, data, 2)) {
        goto done;
    }
    const int V = lina_model_config(a.m)->vocab_size;
    uint64_t count = lina_tok_count(a.f), room = count - (uint64_t)T;
    tok = malloc((size_t)B * T * sizeof *tok);
    buf = malloc((size_t)T * sizeof *buf);
    logits = malloc((size_t)B * T * V * sizeof *logits);
    if (!tok || !buf || !logits) {
        fprintf(stderr, "lina: %s: out of memory\n", c.name);
        goto done;
    }
    double hit[2] = {0, 0}, loss[2] = {0, 0};
    int64_t n = 0;
    for (int s0 = 0; s0 < samples; s0 += B) {
        int nb = samples - s0 < B ? samples - s0 : B;
        for (int b = 0; b < nb; b++) {
            /* A and the filler from spread-out places of the file */
            uint64_t oa = ((uint64_t)(s0 + b) * 2654435761u) % room, of = (oa + room / 2) % room;
            int32_t *row = tok + (size_t)b * T;
            if (lina_tok_read(a.f, oa, (size_t)span, row) || lina_tok_read(a.f, of, (size_t)gap, row + span)) {
                fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
                goto done;
            }
            memcpy(row + span + gap, row, (size_t)span * sizeof *row);
        }
        if (lina_model_forward_logits(a.m, tok, nb, T, logits, &a.ws)) {
            fprintf(stderr, "lina: %s: %s\n", c.name, lina_last_error());
            goto done;
        }
        for (int b = 0; b < nb; b++) {
            for (int cp = 0; cp < 2; cp++) {
                int first = cp ? span + gap : 0;
                for (int j = 1; j < span; j++) {
                    const float *lg = logits + ((size_t)b * T + first + j - 1) * V;
                    int tgt = tok[(size_t)b * T + first + j], best = 0;
                    double mx = lg[0], se = 0.0;
                    for (int v = 1; v < V; v++) {
                        if (lg[v] > lg[best]) {
                            best = v;
                        }
                        mx = lg[v] > mx ? lg[v] : mx;
                    }
                    for (int v = 0; v < V; v++) {
                        se += exp(lg[v] - mx);
                    }
                    hit[cp] += best == tgt;
                    loss[cp] += mx + log(se) - lg[tgt];
                }
            }
            n += span - 1;
        }
    }
    printf("recall over %d tokens (span %d, gap %d, %d samples, %lld targets each):\n", span + gap, span, gap,
           samples, (long long)n);
    printf("second copy  accuracy %.4f  loss %.4f\n", hit[1] / (double)n, loss[1] / (double)n);
    printf("first copy   accuracy %.4f  loss %.4f\n", hit[0] / (double)n, loss[0] / (double)n);
    rc = 0;
done:
    free(tok);
    free(buf);
    free(logits);
    ctx_close(&a);
    return rc;
}

static const char AN_USAGE[] =
    "usage: lina analyze linearity --model DIR --data FILE [--tokens N] [--png FILE] [--table FILE]\n"
    "       lina analyze replace --model DIR --data FILE (--blocks I..J | --scan) [options]\n"
    "       lina analyze recall --model DIR --data FILE [--span N --gap N --samples N]\n"
    "  how linear a model's blocks are; 'lina analyze SUB --help' lists the options of each\n";

int lina_cmd_analyze(int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : NULL;
    if (sub && !strcmp(sub, "linearity")) {
        return an_linearity(argc - 2, argv + 2);
    }
    if (sub && !strcmp(sub, "replace")) {
        return an_replace(argc - 2, argv + 2);
    }
    if (sub && !strcmp(sub, "recall")) {
        return an_recall(argc - 2, argv + 2);
    }
    if (sub && (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))) {
        fputs(AN_USAGE, stdout);
        return 0;
    }
    if (sub) {
        fprintf(stderr, "lina: analyze: unknown subcommand '%s' (linearity, replace or recall)\n", sub);
    } else {
        fputs(AN_USAGE, stderr);
    }
    return 2;
}
