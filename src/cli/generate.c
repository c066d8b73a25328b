/* generate.c -- `lina generate`: stream text from a checkpoint. The prompt is fed
 * with the chunk form, then one token at a time with the recurrent form (a
 * constant-size state per linear layer); sampling through the library's
 * lina_sampler (temperature, top-k, top-p). */
#include "cli.h"
#include "lina.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* one generation session: model, tokenizer, decode state and sampler */
typedef struct gen {
    lina_model *m;
    lina_tokenizer *tk;
    lina_model_state *st;
    lina_ws ws;
    int V, eos, bos, cap;   /* cap: the state's attention capacity (tokens) */
    int keep;               /* --keep-state: every token fed stays in the state */
    int max_tokens;
    lina_sampler *smp;      /* temperature, top-k, top-p, seed (the library's sampler) */
    float *logits;          /* [nlog, V] */
    size_t nlog;
    float *last;            /* [V] logits after the last token fed */
    int have_last;
} gen;

/* Feeds ids[0..n) at the state's position in pieces of at most LINA_PREFILL_CHUNK
 * tokens (memory flat in the prompt length); the logits of the last one into g->last. */
static int gen_feed(gen *g, const int32_t *ids, size_t n)
{
    size_t piece = n < LINA_PREFILL_CHUNK ? n : LINA_PREFILL_CHUNK, t = 0;
    if (piece > g->nlog) {
        float *nl = realloc(g->logits, piece * (size_t)g->V * sizeof(float));
        if (!nl) {
            return lina_set_error(LINA_ENOMEM, "out of memory for the logits of %zu prompt tokens", piece);
        }
        g->logits = nl;
        g->nlog = piece;
    }
    for (size_t p = 0; p < n; p += t) {
        t = n - p < piece ? n - p : piece;
        if (lina_model_decode(g->m, g->st, ids + p, 1, (int)t, g->logits, &g->ws)) {
            return LINA_EINVAL;
        }
    }
    memcpy(g->last, g->logits + (t - 1) * (size_t)g->V, (size_t)g->V * sizeof(float));
    g->have_last = 1;
    return LINA_OK;
}

/* One turn: feeds ids[0..n) (n = 0: continue from the last logits), then samples
 * and streams up to max_tokens tokens, stopping at the end-of-text token. */
static int gen_turn(gen *g, const int32_t *ids, size_t n)
{
    int64_t need = (g->keep ? lina_model_state_pos(g->st) : 0) + (int64_t)n + g->max_tokens + 1;
    if (!g->keep) {
        if (need > g->cap) {
            lina_model_state_free(g->st);
            g->st = NULL;
            if (need > 2147483647 || lina_model_state_create(g->m, 1, (int)need, &g->st)) {
                return lina_set_error(LINA_ENOMEM, "no decode state for %lld tokens", (long long)need);
            }
            g->cap = (int)need;
        }
        lina_model_state_reset(g->st);
        g->have_last = 0;
    }
    double t0 = lina_now();
    if (n > 0 && gen_feed(g, ids, n) != LINA_OK) {
        return LINA_EINVAL;
    }
    double t_prefill = lina_now() - t0;
    if (!g->have_last) {
        return lina_set_error(LINA_EINVAL, "nothing to continue from");
    }
    int produced = 0, rc = LINA_OK;
    t0 = lina_now();
    for (int s = 0; s < g->max_tokens; s++) {
        int32_t tok = lina_sampler_sample(g->smp, g->last);
        if (tok != g->eos) {
            char *piece = NULL;
            size_t plen = 0;
            if (lina_tokenizer_decode(g->tk, &tok, 1, &piece, &plen) == 0) {
                fwrite(piece, 1, plen, stdout);
                fflush(stdout);
            }
            free(piece);
            produced++;
        }
        /* the state keeps what was generated only when it is kept for the next turn */
        if ((tok == g->eos || s + 1 == g->max_tokens) && !g->keep) {
            break;
        }
        if ((rc = gen_feed(g, &tok, 1)) != LINA_OK || tok == g->eos) {
            break;
        }
    }
    double t_dec = lina_now() - t0;
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt: %zu tokens, %.1f tokens/s; generated: %d tokens, %.1f tokens/s\n", n,
            (double)n / (t_prefill > 0 ? t_prefill : 1e-9), produced, (double)produced / (t_dec > 0 ? t_dec : 1e-9));
    return rc;
}

/* text -> one turn; the empty text starts from BOS (or continues a kept state) */
static int gen_text(gen *g, const char *text, size_t len, int echo)
{
    int32_t *ids = NULL;
    size_t n = 0;
    if (len > 0 && lina_tokenizer_encode(g->tk, text, len, &ids, &n) != LINA_OK) {
        return LINA_EINVAL;
    }
    int rc;
    if (echo) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    if (n > 0) {
        rc = gen_turn(g, ids, n);
    } else if (g->keep && g->have_last) {
        rc = gen_turn(g, NULL, 0);
    } else {
        int32_t bos = g->bos;
        rc = g->bos >= 0 ? gen_turn(g, &bos, 1)
                         : lina_set_error(LINA_EINVAL, "empty prompt and no BOS token (the tokenizer has no "
                                                       "<|endoftext|>, the config no bos_token_id)");
    }
    free(ids);
    return rc;
}

static const char GEN_ABOUT[] =
    "  Feeds the prompt with the chunk form (in pieces of 256 tokens), then decodes one token at a time with the recurrent\n"
    "  form; streams the text to stdout, speeds to stderr. Stops at EOS (<|endoftext|>, else the\n"
    "  config's eos_token_id).\n"
    "  An empty --prompt \"\" generates unconditionally from BOS (the tokenizer's <|endoftext|>,\n"
    "  else the config's bos_token_id). Short flags follow llama.cpp: -m -p -n -s, -t is the\n"
    "  thread count and --temp the temperature.\n"
    "  --interactive: after --prompt (if given), each line of stdin is a prompt; the output of\n"
    "  each ends with a newline. Without --keep-state every line starts from an empty state;\n"
    "  with it, the state carries everything fed and generated so far (an empty line continues).\n";

int lina_cmd_generate(int argc, char **argv)
{
    const char *model_arg = NULL, *prompt = NULL, *tok_path = NULL;
    int max_tokens = 100, top_k = 40, threads = 0, seed = 1, interactive = 0, keep = 0, ctx = 4096;
    float temperature = 0.8f, top_p = 0.95f;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory (its checkpoint/)"),
        CLI_OPT_STR("--prompt", "-p", "TEXT", &prompt, "text to continue; \"\" generates from BOS"),
        CLI_OPT_STR("--tokenizer", NULL, "FILE", &tok_path, "tokenizer.json"),
        CLI_OPT_INT("--max-tokens", "-n", "N", &max_tokens, 0, 1 << 24, "tokens to generate at most (per prompt)"),
        CLI_OPT_FLT("--temperature", "--temp", "T", &temperature, 0.0, 100.0, "softmax temperature (0: greedy)"),
        CLI_OPT_INT("--top-k", NULL, "K", &top_k, 0, 1 << 30, "sample among the K most likely tokens (0: all)"),
        CLI_OPT_FLT("--top-p", NULL, "P", &top_p, 1e-6, 1.0, "then among the smallest set of probability >= P"),
        CLI_OPT_INT("--seed", "-s", "S", &seed, 0, 2147483647, "sampling seed"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--interactive", "-i", &interactive, "read prompts from stdin, one per line"),
        CLI_OPT_FLAG("--keep-state", NULL, &keep, "interactive: keep the state between prompts"),
        CLI_OPT_INT("--ctx-size", "-c", "N", &ctx, 1, 1 << 26, "with --keep-state: attention layers' context capacity"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "generate", .usage = "generate --model DIR --prompt TEXT [options] | --interactive",
                 .about = GEN_ABOUT, .opts = opts};
    cli_default(&c, "--model", "required");
    cli_default(&c, "--prompt", "required unless --interactive");
    cli_default(&c, "--tokenizer", "the checkpoint's tokenizer.json");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!model_arg) {
        return cli_fail(&c, "--model DIR is required");
    }
    if (!prompt && !interactive) {
        return cli_fail(&c, "--prompt TEXT is required (or --interactive)");
    }
    if (keep && !interactive) {
        return cli_fail(&c, "--keep-state applies to --interactive only");
    }
    cli_set_threads(threads);
    char mdir[4096], tp[4200];
    const char *model_dir = cli_checkpoint_dir(model_arg, mdir, sizeof mdir);
    if (!tok_path) {
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_dir);
        tok_path = tp;
    }
    gen g;
    memset(&g, 0, sizeof g);
    lina_ws_init(&g.ws);
    g.keep = keep;
    g.max_tokens = max_tokens;
    int rc = 1;
    if (lina_model_load(model_dir, &g.m) || lina_tokenizer_load(tok_path, &g.tk)) {
        fprintf(stderr, "lina: generate: %s\n", lina_last_error());
        goto done;
    }
    g.V = lina_model_config(g.m)->vocab_size;
    if (lina_tokenizer_vocab_size(g.tk) > g.V) {
        fprintf(stderr, "lina: generate: tokenizer has %d tokens but the model's vocab_size is %d\n",
                lina_tokenizer_vocab_size(g.tk), g.V);
        goto done;
    }
    /* the stop token: the tokenizer's <|endoftext|> (what lina train writes into the
     * config), else the config's eos_token_id */
    g.eos = lina_tokenizer_token_id(g.tk, "<|endoftext|>");
    if (g.eos < 0) {
        int e = lina_model_config(g.m)->eos_token_id;
        g.eos = e >= 0 && e < g.V ? e : -1;
    }
    g.bos = lina_tokenizer_token_id(g.tk, "<|endoftext|>");
    if (g.bos < 0) {
        int b = lina_model_config(g.m)->bos_token_id;
        g.bos = b >= 0 && b < lina_tokenizer_vocab_size(g.tk) ? b : -1;
    }
    g.last = malloc((size_t)g.V * sizeof(float));
    if (lina_sampler_create(g.V, temperature, top_k, top_p, (uint64_t)seed, &g.smp) || !g.last ||
        (keep && lina_model_state_create(g.m, 1, ctx, &g.st))) {
        fprintf(stderr, "lina: generate: %s\n", g.last ? lina_last_error() : "out of memory");
        goto done;
    }
    g.cap = keep ? ctx : 0;
    rc = 0;
    if (prompt && gen_text(&g, prompt, strlen(prompt), 1) != LINA_OK) {
        fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
        rc = 1;
    }
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (rc == 0 && interactive) {
        if (isatty(0)) {
            fputs("> ", stderr);
        }
        if ((len = getline(&line, &lcap, stdin)) < 0) {
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        if (gen_text(&g, line, (size_t)len, 0) != LINA_OK) {
            fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
            rc = 1;
        }
    }
    free(line);
done:
    lina_ws_free(&g.ws);
    lina_sampler_free(g.smp);
    free(g.last);
    free(g.logits);
    lina_model_state_free(g.st);
    lina_tokenizer_free(g.tk);
    lina_model_free(g.m);
    return rc;
}
