/* eval.c -- `lina eval`: mean next-token loss and perplexity of a checkpoint over
 * consecutive, non-overlapping windows of T tokens from the start of a token file. */
#include "cli.h"
#include "lina.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int lina_cmd_eval(int argc, char **argv)
{
    const char *model_dir = NULL, *data = NULL;
    int T = 256, B = 8, threads = 0, json = 0, max_tokens = 0;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", NULL, "DIR", &model_dir, "checkpoint directory (required)"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "token file (required)"),
        CLI_OPT_INT("--seq-len", NULL, "T", &T, 1, 1 << 20, "tokens per window"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "windows per forward pass"),
        CLI_OPT_INT("--max-tokens", NULL, "N", &max_tokens, 0, 2147483647, "score at most N tokens (0: all)"),
        CLI_OPT_INT("--threads", NULL, "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--json", NULL, &json, "one JSON object on stdout"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "eval", .usage = "eval --model DIR --data FILE [options]",
                 .about = "  Mean next-token loss (nats) and perplexity over consecutive, non-overlapping\n"
                          "  windows of T tokens from the start of the file.\n",
                 .opts = opts};
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_dir) {
        return cli_fail(&c, "--model DIR is required");
    }
    if (!data) {
        return cli_fail(&c, "--data FILE is required");
    }
    cli_set_threads(threads);
    lina_model *m = NULL;
    lina_tokfile *f = NULL;
    int32_t *tok = NULL, *tgt = NULL, *win = NULL;
    int rc = 1;
    if (lina_model_load(model_dir, &m) || lina_tok_open(data, &f)) {
        fprintf(stderr, "lina: eval: %s\n", lina_last_error());
        goto done;
    }
    if ((int64_t)lina_tok_vocab(f) > (int64_t)lina_model_config(m)->vocab_size) {
        fprintf(stderr, "lina: eval: %s has vocab %u but the model's vocab_size is %d\n", data, lina_tok_vocab(f),
                lina_model_config(m)->vocab_size);
        goto done;
    }
    uint64_t count = lina_tok_count(f);
    if (max_tokens > 0 && (uint64_t)max_tokens + 1 < count) {
        count = (uint64_t)max_tokens + 1;
    }
    if (count < (uint64_t)T + 1) {
        fprintf(stderr, "lina: eval: %s has %llu tokens, fewer than --seq-len + 1 = %d\n", data,
                (unsigned long long)count, T + 1);
        goto done;
    }
    const uint64_t nwin = (count - 1) / (uint64_t)T;
    tok = malloc((size_t)B * T * sizeof *tok);
    tgt = malloc((size_t)B * T * sizeof *tgt);
    win = malloc(((size_t)T + 1) * sizeof *win);
    if (!tok || !tgt || !win) {
        fprintf(stderr, "lina: eval: out of memory\n");
        goto done;
    }
    lina_ws ws;
    lina_ws_init(&ws);
    double sum = 0.0, t0 = lina_now();
    uint64_t done_w = 0;
    rc = 0;
    while (done_w < nwin) {
        int nb = nwin - done_w < (uint64_t)B ? (int)(nwin - done_w) : B;
        for (int b = 0; b < nb && rc == 0; b++) {
            if (lina_tok_read(f, (done_w + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, win)) {
                rc = 1;
            }
            memcpy(tok + (size_t)b * T, win, (size_t)T * sizeof *win);
            memcpy(tgt + (size_t)b * T, win + 1, (size_t)T * sizeof *win);
        }
        double loss = 0.0;
        if (rc || lina_model_eval_loss(m, tok, tgt, nb, T, &loss, &ws)) {
            fprintf(stderr, "lina: eval: %s\n", lina_last_error());
            rc = 1;
            break;
        }
        sum += loss * nb;
        done_w += (uint64_t)nb;
    }
    lina_ws_free(&ws);
    if (rc == 0) {
        double loss = sum / (double)nwin, dt = lina_now() - t0;
        double ntok = (double)nwin * T;
        if (json) {
            printf("{\"tokens\":%.0f,\"loss\":%.6f,\"perplexity\":%.4f,\"tokens_per_s\":%.1f}\n", ntok, loss, exp(loss),
                   ntok / (dt > 0 ? dt : 1e-9));
        } else {
            printf("%.0f tokens in %llu windows of %d: loss %.4f, perplexity %.3f (%.0f tokens/s)\n", ntok,
                   (unsigned long long)nwin, T, loss, exp(loss), ntok / (dt > 0 ? dt : 1e-9));
        }
    }
done:
    free(tok);
    free(tgt);
    free(win);
    lina_tok_close(f);
    lina_model_free(m);
    return rc;
}
