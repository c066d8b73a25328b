/* generate.c -- `lina generate`: stream text from a checkpoint. The prompt is fed
 * with the chunk form, then one token at a time with the recurrent form (a
 * constant-size state per linear layer); sampling is temperature, top-k, top-p. */
#include "cli.h"
#include "lina.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen_cand {
    float logit;
    int id;
} gen_cand;

/* descending logit, then ascending id: a total order, so the result does not
 * depend on the sort algorithm */
static int gen_before(const gen_cand *x, const gen_cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static int gen_cmp(const void *a, const void *b)
{
    const gen_cand *x = a, *y = b;
    return gen_before(x, y) ? -1 : gen_before(y, x) ? 1 : 0;
}

/* Move the n first candidates (in gen_before order) to cand[0..n) (unsorted):
 * quickselect, O(V) on average, instead of sorting the whole vocabulary. */
static void gen_select(gen_cand *c, int V, int n)
{
    int lo = 0, hi = V - 1;
    while (lo < hi) {
        gen_cand pv = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (gen_before(&c[i], &pv)) {
                i++;
            }
            while (gen_before(&pv, &c[j])) {
                j--;
            }
            if (i <= j) {
                gen_cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (n - 1 <= j) {
            hi = j;
        } else if (n - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

/* Sample a token from logits[V]: temperature 0 = greedy; else top-k (0 = all),
 * then top-p (1 = all) over the softmax, drawn with the given rng state. */
static int gen_sample(const float *logits, int V, float temperature, int top_k, float top_p, gen_cand *cand,
                      uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < V; i++) {
        best = logits[i] > logits[best] ? i : best;
    }
    if (temperature <= 0.0f) {
        return best;
    }
    for (int i = 0; i < V; i++) {
        cand[i].logit = logits[i] / temperature;
        cand[i].id = i;
    }
    int n = top_k > 0 && top_k < V ? top_k : V;
    if (n < V) {
        gen_select(cand, V, n);
    }
    qsort(cand, (size_t)n, sizeof *cand, gen_cmp);
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        z += exp((double)cand[i].logit - cand[0].logit);
    }
    double cum = 0.0;
    int m = n;
    for (int i = 0; i < n; i++) {
        cum += exp((double)cand[i].logit - cand[0].logit) / z;
        if (cum >= top_p) {
            m = i + 1;
            break;
        }
    }
    double zm = 0.0;
    for (int i = 0; i < m; i++) {
        zm += exp((double)cand[i].logit - cand[0].logit);
    }
    uint64_t x = lina_splitmix64(rng);
    double u = (double)(x >> 11) * (1.0 / 9007199254740992.0) * zm, acc = 0.0;
    for (int i = 0; i < m; i++) {
        acc += exp((double)cand[i].logit - cand[0].logit);
        if (u < acc) {
            return cand[i].id;
        }
    }
    return cand[m - 1].id;
}

int lina_cmd_generate(int argc, char **argv)
{
    const char *model_dir = NULL, *prompt = NULL, *tok_path = NULL;
    int max_tokens = 100, top_k = 40, threads = 0, seed = 1;
    float temperature = 0.8f, top_p = 0.95f;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", NULL, "DIR", &model_dir, "checkpoint directory (required)"),
        CLI_OPT_STR("--prompt", NULL, "TEXT", &prompt, "text to continue (required)"),
        CLI_OPT_STR("--tokenizer", NULL, "FILE", &tok_path, "tokenizer.json"),
        CLI_OPT_INT("--max-tokens", NULL, "N", &max_tokens, 0, 1 << 24, "tokens to generate at most"),
        CLI_OPT_FLT("--temperature", NULL, "T", &temperature, 0.0, 100.0, "softmax temperature (0: greedy)"),
        CLI_OPT_INT("--top-k", NULL, "K", &top_k, 0, 1 << 30, "sample among the K most likely tokens (0: all)"),
        CLI_OPT_FLT("--top-p", NULL, "P", &top_p, 1e-6, 1.0, "then among the smallest set of probability >= P"),
        CLI_OPT_INT("--seed", NULL, "S", &seed, 0, 2147483647, "sampling seed"),
        CLI_OPT_INT("--threads", NULL, "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "generate", .usage = "generate --model DIR --prompt TEXT [options]",
                 .about = "  Feeds the prompt with the chunk form, then decodes one token at a time with the\n"
                          "  recurrent form; streams the text to stdout, speeds to stderr. Stops at <|endoftext|>.\n",
                 .opts = opts};
    cli_default(&c, "--tokenizer", "DIR/tokenizer.json");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_dir) {
        return cli_fail(&c, "--model DIR is required");
    }
    if (!prompt || !prompt[0]) {
        return cli_fail(&c, "--prompt TEXT is required");
    }
    cli_set_threads(threads);
    char tp[4096];
    if (!tok_path) {
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_dir);
        tok_path = tp;
    }
    lina_model *m = NULL;
    lina_tokenizer *tk = NULL;
    lina_model_state *st = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    float *logits = NULL;
    gen_cand *cand = NULL;
    char *piece = NULL;
    int rc = 1;
    if (lina_model_load(model_dir, &m) || lina_tokenizer_load(tok_path, &tk) ||
        lina_tokenizer_encode(tk, prompt, strlen(prompt), &ids, &n)) {
        fprintf(stderr, "lina: generate: %s\n", lina_last_error());
        goto done;
    }
    const int V = lina_model_config(m)->vocab_size;
    if (lina_tokenizer_vocab_size(tk) > V) {
        fprintf(stderr, "lina: generate: tokenizer has %d tokens but the model's vocab_size is %d\n",
                lina_tokenizer_vocab_size(tk), V);
        goto done;
    }
    const int eos = lina_tokenizer_token_id(tk, "<|endoftext|>");
    logits = malloc((n > 0 ? n : 1) * (size_t)V * sizeof(float));
    cand = malloc((size_t)V * sizeof *cand);
    if (!logits || !cand || n == 0 || lina_model_state_create(m, 1, (int)n + max_tokens + 1, &st)) {
        fprintf(stderr, "lina: generate: %s\n", n == 0 ? "empty prompt" : "out of memory");
        goto done;
    }
    lina_ws ws;
    lina_ws_init(&ws);
    fwrite(prompt, 1, strlen(prompt), stdout);
    fflush(stdout);
    double t0 = lina_now();
    if (lina_model_decode(m, st, ids, 1, (int)n, logits, &ws)) {
        fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
        lina_ws_free(&ws);
        goto done;
    }
    double t_prefill = lina_now() - t0;
    uint64_t rng = (uint64_t)seed;
    const float *last = logits + (n - 1) * (size_t)V;
    int produced = 0;
    t0 = lina_now();
    rc = 0;
    for (int s = 0; s < max_tokens; s++) {
        int32_t tok = gen_sample(last, V, temperature, top_k, top_p, cand, &rng);
        if (tok == eos) {
            break;
        }
        size_t plen = 0;
        if (lina_tokenizer_decode(tk, &tok, 1, &piece, &plen) == 0) {
            fwrite(piece, 1, plen, stdout);
            fflush(stdout);
        }
        free(piece);
        piece = NULL;
        produced++;
        if (s + 1 == max_tokens) {
            break;
        }
        if (lina_model_decode(m, st, &tok, 1, 1, logits, &ws)) {
            fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
            rc = 1;
            break;
        }
        last = logits;
    }
    double t_dec = lina_now() - t0;
    lina_ws_free(&ws);
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt: %zu tokens, %.1f tokens/s; generated: %d tokens, %.1f tokens/s\n", n,
            (double)n / (t_prefill > 0 ? t_prefill : 1e-9), produced, (double)produced / (t_dec > 0 ? t_dec : 1e-9));
done:
    free(piece);
    free(cand);
    free(logits);
    free(ids);
    lina_model_state_free(st);
    lina_tokenizer_free(tk);
    lina_model_free(m);
    return rc;
}
