/* eval.c -- `lina eval`: mean next-token loss, perplexity and bits per byte of a
 * checkpoint over consecutive, non-overlapping windows of T tokens from the start of a
 * token file (--data) or of a text file tokenised with the checkpoint's tokenizer (--text). */
#include "cli.h"
#include "lina.h"
#include "../io/io_internal.h" /* lina_read_file */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* where the tokens come from: a token file, or the ids of an encoded text */
typedef struct tok_src {
    lina_tokfile *f;
    const int32_t *ids;
    uint64_t n;
} tok_src;

static int src_read(const tok_src *s, uint64_t start, size_t n, int32_t *out)
{
    if (s->f) {
        return lina_tok_read(s->f, start, n, out);
    }
    memcpy(out, s->ids + start, n * sizeof *out);
    return LINA_OK;
}

#define TEXT_MAX_BYTES ((size_t)1 << 31)

int lina_cmd_eval(int argc, char **argv)
{
    const char *model_arg = NULL, *data = NULL, *text = NULL, *tok_path = NULL;
    int T = 256, B = 8, threads = 0, json = 0, max_tokens = 0;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory (its checkpoint/)"),
        CLI_OPT_STR("--data", NULL, "FILE", &data, "token file"),
        CLI_OPT_STR("--text", NULL, "FILE", &text, "raw text, tokenised with the checkpoint's tokenizer"),
        CLI_OPT_STR("--tokenizer", NULL, "FILE", &tok_path, "tokenizer.json (for --text, and bits per byte)"),
        CLI_OPT_INT("--seq-len", NULL, "T", &T, 1, 1 << 20, "tokens per window"),
        CLI_OPT_INT("--batch", NULL, "B", &B, 1, 4096, "windows per forward pass"),
        CLI_OPT_INT("--max-tokens", NULL, "N", &max_tokens, 0, 2147483647, "score at most N tokens (0: all)"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--json", NULL, &json, "one JSON object on stdout"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "eval", .usage = "eval --model DIR (--data FILE | --text FILE) [options]",
                 .about = "  Mean next-token loss (nats), perplexity and bits per byte over consecutive,\n"
                          "  non-overlapping windows of T tokens from the start of the file. Bits per byte =\n"
                          "  the summed loss / ln 2 / the bytes of the scored tokens' text (needs a tokenizer).\n",
                 .opts = opts};
    cli_default(&c, "--model", "required");
    cli_default(&c, "--data", "one of --data, --text");
    cli_default(&c, "--text", "one of --data, --text");
    cli_default(&c, "--tokenizer", "the checkpoint's tokenizer.json");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_arg) {
        return cli_fail(&c, "--model DIR is required");
    }
    if (!data == !text) {
        return cli_fail(&c, "give one of --data FILE (a token file) and --text FILE (raw text)");
    }
    cli_set_threads(threads);
    char mdir[4096], tp[4200];
    const char *model_dir = cli_checkpoint_dir(model_arg, mdir, sizeof mdir);
    if (!tok_path) {
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_dir);
        tok_path = tp;
    }
    const char *what = data ? data : text;
    lina_model *m = NULL;
    lina_tokenizer *tk = NULL;
    tok_src src = {0};
    char *raw = NULL, *piece = NULL;
    int32_t *ids = NULL, *tok = NULL, *tgt = NULL, *win = NULL;
    int rc = 1;
    if (lina_model_load(model_dir, &m)) {
        fprintf(stderr, "lina: eval: %s\n", lina_last_error());
        goto done;
    }
    const int V = lina_model_config(m)->vocab_size;
    /* the tokenizer: needed for --text, optional (bits per byte) for --data */
    if (lina_tokenizer_load(tok_path, &tk) != LINA_OK) {
        tk = NULL;
        if (text || cli_given(&c, "--tokenizer")) {
            fprintf(stderr, "lina: eval: %s\n", lina_last_error());
            goto done;
        }
    }
    if (tk && lina_tokenizer_vocab_size(tk) > V) {
        fprintf(stderr, "lina: eval: tokenizer %s has %d tokens but the model's vocab_size is %d\n", tok_path,
                lina_tokenizer_vocab_size(tk), V);
        goto done;
    }
    if (data) {
        if (lina_tok_open(data, &src.f)) {
            fprintf(stderr, "lina: eval: %s\n", lina_last_error());
            goto done;
        }
        if ((int64_t)lina_tok_vocab(src.f) > (int64_t)V) {
            fprintf(stderr, "lina: eval: %s has vocab %u but the model's vocab_size is %d\n", data,
                    lina_tok_vocab(src.f), V);
            goto done;
        }
        src.n = lina_tok_count(src.f);
    } else {
        size_t len = 0, n = 0;
        if (lina_read_file(text, TEXT_MAX_BYTES, "text to evaluate", &raw, &len) != LINA_OK ||
            lina_tokenizer_encode(tk, raw, len, &ids, &n) != LINA_OK) {
            fprintf(stderr, "lina: eval: %s\n", lina_last_error());
            goto done;
        }
        src.ids = ids;
        src.n = n;
    }
    uint64_t count = src.n;
    if (max_tokens > 0 && (uint64_t)max_tokens + 1 < count) {
        count = (uint64_t)max_tokens + 1;
    }
    if (count < (uint64_t)T + 1) {
        fprintf(stderr, "lina: eval: %s has %llu tokens, fewer than --seq-len + 1 = %d\n", what,
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
    double sum = 0.0, bytes = 0.0, t0 = lina_now();
    uint64_t done_w = 0;
    rc = 0;
    while (done_w < nwin && rc == 0) {
        int nb = nwin - done_w < (uint64_t)B ? (int)(nwin - done_w) : B;
        for (int b = 0; b < nb && rc == 0; b++) {
            if (src_read(&src, (done_w + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, win)) {
                rc = 1;
                break;
            }
            memcpy(tok + (size_t)b * T, win, (size_t)T * sizeof *win);
            memcpy(tgt + (size_t)b * T, win + 1, (size_t)T * sizeof *win);
            size_t pl = 0;
            if (tk && lina_tokenizer_decode(tk, win + 1, (size_t)T, &piece, &pl) != LINA_OK) {
                rc = 1;
            }
            free(piece);
            piece = NULL;
            bytes += (double)pl;
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
        double bpb = tk && bytes > 0 ? loss * ntok / log(2.0) / bytes : NAN;
        if (!isfinite(loss)) {
            fprintf(stderr, "lina: eval: the loss is not finite (%g): the checkpoint's weights or logits "
                            "overflow\n", loss);
            rc = 1;
        } else if (json) {
            printf("{\"tokens\":%.0f,\"loss\":%.6f,\"perplexity\":%.4f,", ntok, loss, exp(loss));
            if (isnan(bpb)) {
                printf("\"bytes\":null,\"bits_per_byte\":null,");
            } else {
                printf("\"bytes\":%.0f,\"bits_per_byte\":%.6f,", bytes, bpb);
            }
            printf("\"tokens_per_s\":%.1f}\n", ntok / (dt > 0 ? dt : 1e-9));
        } else {
            printf("%.0f tokens in %llu windows of %d: loss %.4f, perplexity %.3f", ntok, (unsigned long long)nwin,
                   T, loss, exp(loss));
            if (!isnan(bpb)) {
                printf(", %.4f bits per byte (%.0f bytes)", bpb, bytes);
            }
            printf(" (%.0f tokens/s)\n", ntok / (dt > 0 ? dt : 1e-9));
        }
    }
done:
    free(tok);
    free(tgt);
    free(win);
    free(ids);
    free(raw);
    lina_tok_close(src.f);
    lina_tokenizer_free(tk);
    lina_model_free(m);
    return rc;
}
