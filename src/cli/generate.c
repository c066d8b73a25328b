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

/* Rows [0, B) with token lists ids[b][0..n[b]), each from its own B = 1 state, as one
 * left-padded batch (B = 1: one prompt alone): prefill in column pieces of at most
 * LINA_PREFILL_CHUNK, then one token per active row per step until its EOS or max_tokens.
 * out[b] gets the generated tokens (EOS not included), nout[b] their count; *secs the
 * decode time. Every row samples with its own sampler started at the same seed, so a row
 * draws what the prompt alone would. */
static int gen_rows(gen *g, int B, int32_t *const *ids, const size_t *n, float temp, int top_k, float top_p,
                    uint64_t seed, int32_t **out, int *nout, double *secs)
{
    size_t P = 0;
    for (int b = 0; b < B; b++) {
        P = n[b] > P ? n[b] : P;
    }
    size_t piece = P < LINA_PREFILL_CHUNK ? P : LINA_PREFILL_CHUNK, V = (size_t)g->V;
    lina_model_state **st = calloc((size_t)B, sizeof *st);
    lina_sampler **smp = calloc((size_t)B, sizeof *smp);
    int *len = calloc((size_t)B, sizeof(int));
    int32_t *tok = calloc((size_t)B * piece, sizeof(int32_t));
    float *lg = malloc((size_t)B * piece * V * sizeof(float)), *last = malloc((size_t)B * V * sizeof(float));
    int rc = st && smp && len && tok && lg && last ? LINA_OK : lina_set_error(LINA_ENOMEM, "out of memory for %d rows", B);
    for (int b = 0; b < B && !rc; b++) {
        int64_t need = (int64_t)n[b] + g->max_tokens + 1;
        rc = need > 2147483647 ? lina_set_error(LINA_EINVAL, "prompt %d too long", b + 1)
                               : lina_model_state_create(g->m, 1, (int)need, &st[b]);
        rc = rc ? rc : lina_sampler_create(g->V, temp, top_k, top_p, seed, &smp[b]);
        nout[b] = 0;
    }
    /* prefill: column window [c0, c1) of the left-padded [B, P]; row b's real tokens are its last n[b] */
    for (size_t c0 = 0; c0 < P && !rc; c0 += piece) {
        size_t c1 = c0 + piece < P ? c0 + piece : P, T = c1 - c0;
        for (int b = 0; b < B; b++) {
            size_t first = P - n[b] > c0 ? P - n[b] : c0; /* first real column in the window */
            len[b] = first < c1 ? (int)(c1 - first) : 0;
            for (size_t j = first; j < c1; j++) {
                tok[(size_t)b * T + (j - c0)] = ids[b][j - (P - n[b])];
            }
        }
        rc = lina_model_decode_rows(g->m, st, tok, len, B, (int)T, lg, &g->ws);
        for (int b = 0; b < B && !rc; b++) {
            if (len[b]) {
                memcpy(last + b * V, lg + ((size_t)b * T + T - 1) * V, V * sizeof(float));
            }
        }
    }
    double t0 = lina_now();
    int active = B;
    for (int b = 0; b < B; b++) {
        len[b] = 1;
    }
    for (int s = 0; s < g->max_tokens && active && !rc; s++) {
        for (int b = 0; b < B; b++) {
            if (!len[b]) {
                continue;
            }
            int32_t t = lina_sampler_sample(smp[b], last + b * V);
            if (t == g->eos || s + 1 == g->max_tokens) {
                len[b] = 0; /* this row is done: its state stays as it is */
                active--;
            }
            if (t != g->eos) {
                out[b][nout[b]++] = t;
            }
            tok[b] = t;
        }
        if (active) {
            rc = lina_model_decode_rows(g->m, st, tok, len, B, 1, lg, &g->ws);
            memcpy(last, lg, (size_t)B * V * sizeof(float)); /* zero rows for the ended ones: not read */
        }
    }
    *secs = lina_now() - t0;
    for (int b = 0; b < B; b++) {
        lina_model_state_free(st ? st[b] : NULL);
        lina_sampler_free(smp ? smp[b] : NULL);
    }
    free(st);
    free(smp);
    free(len);
    free(tok);
    free(lg);
    free(last);
    return rc;
}

/* --prompts FILE: every line a prompt (empty: from BOS), all as one batch; each completion
 * printed after its prompt; then the prompts one by one for the tokens/s comparison */
static int gen_prompts(gen *g, const char *path, float temp, int top_k, float top_p, uint64_t seed, int compare)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        return lina_set_error(LINA_EIO, "%s: cannot open", path);
    }
    char *line = NULL, **text = NULL;
    size_t lcap = 0, *n = NULL;
    int32_t **ids = NULL, **out = NULL;
    int B = 0, rc = LINA_OK, *nout = NULL;
    ssize_t len;
    while (rc == LINA_OK && (len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) {
            line[--len] = '\0';
        }
        char **nt = realloc(text, (size_t)(B + 1) * sizeof *nt);
        int32_t **ni = realloc(ids, (size_t)(B + 1) * sizeof *ni);
        size_t *nn = realloc(n, (size_t)(B + 1) * sizeof *nn);
        text = nt ? nt : text;
        ids = ni ? ni : ids;
        n = nn ? nn : n;
        if (!nt || !ni || !nn || !(text[B] = strdup(line))) {
            rc = lina_set_error(LINA_ENOMEM, "out of memory reading %s", path);
            break;
        }
        ids[B] = NULL;
        n[B] = 0;
        B++;
        if (len > 0 && lina_tokenizer_encode(g->tk, line, (size_t)len, &ids[B - 1], &n[B - 1]) != LINA_OK) {
            rc = LINA_EINVAL;
        } else if (n[B - 1] == 0) {
            if (g->bos < 0) {
                rc = lina_set_error(LINA_EINVAL, "%s: prompt %d is empty and there is no BOS token", path, B);
            } else if ((ids[B - 1] = malloc(sizeof(int32_t)))) {
                ids[B - 1][0] = g->bos;
                n[B - 1] = 1;
            } else {
                rc = lina_set_error(LINA_ENOMEM, "out of memory");
            }
        }
    }
    free(line);
    if (f != stdin) {
        fclose(f);
    }
    if (rc == LINA_OK && B == 0) {
        rc = lina_set_error(LINA_EINVAL, "%s holds no prompt (one per line)", path);
    }
    out = rc ? NULL : calloc((size_t)B, sizeof *out);
    nout = rc ? NULL : calloc((size_t)B, sizeof(int));
    rc = rc ? rc : out && nout ? LINA_OK : lina_set_error(LINA_ENOMEM, "out of memory");
    for (int b = 0; b < B && !rc; b++) {
        if (!(out[b] = malloc(((size_t)g->max_tokens + 1) * sizeof(int32_t)))) {
            rc = lina_set_error(LINA_ENOMEM, "out of memory");
        }
    }
    double secs = 0, secs1 = 0;
    long total = 0, total1 = 0;
    rc = rc ? rc : gen_rows(g, B, ids, n, temp, top_k, top_p, seed, out, nout, &secs);
    for (int b = 0; b < B && !rc; b++) {
        fputs(text[b], stdout);
        for (int i = 0; i < nout[b]; i++) { /* token by token, as the streamed output */
            char *piece = NULL;
            size_t plen = 0;
            if (lina_tokenizer_decode(g->tk, &out[b][i], 1, &piece, &plen) == 0) {
                fwrite(piece, 1, plen, stdout);
            }
            free(piece);
        }
        fputs("\n", stdout);
        total += nout[b];
    }
    fflush(stdout);
    for (int b = 0; b < B && !rc && compare; b++) {
        int one = 0;
        double s1 = 0;
        rc = gen_rows(g, 1, &ids[b], &n[b], temp, top_k, top_p, seed, &out[b], &one, &s1);
        secs1 += s1;
        total1 += one;
    }
    if (!rc) {
        fprintf(stderr, "%d prompts as one batch: %ld tokens generated, %.1f tokens/s", B, total,
                (double)total / (secs > 0 ? secs : 1e-9));
        if (compare) {
            fprintf(stderr, "; one by one: %ld tokens, %.1f tokens/s (batch %.2fx)", total1,
                    (double)total1 / (secs1 > 0 ? secs1 : 1e-9),
                    ((double)total / (secs > 0 ? secs : 1e-9)) / ((double)total1 / (secs1 > 0 ? secs1 : 1e-9)));
        }
        fprintf(stderr, "\n");
    }
    for (int b = 0; b < B; b++) {
        free(text[b]);
        free(ids[b]);
        free(out ? out[b] : NULL);
    }
    free(text);
    free(ids);
    free(n);
    free(out);
    free(nout);
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
    "  with it, the state carries everything fed and generated so far (an empty line continues).\n"
    "  --prompts FILE: every line of FILE (- for stdin) is a prompt (an empty one starts from BOS); all run\n"
    "  as one left-padded batch, each row on its own state, each stopping at its own EOS or --max-tokens;\n"
    "  each completion is printed after its prompt, one per line, in order; stderr gets the batch's\n"
    "  tokens/s and, unless --no-compare, that of the same prompts generated one by one.\n";

int lina_cmd_generate(int argc, char **argv)
{
    const char *model_arg = NULL, *prompt = NULL, *tok_path = NULL, *prompts = NULL;
    int max_tokens = 100, top_k = 40, threads = 0, seed = 1, interactive = 0, keep = 0, ctx = 4096, no_compare = 0;
    float temperature = 0.8f, top_p = 0.95f;
    cli_opt opts[] = {
        CLI_OPT_STR("--model", "-m", "DIR", &model_arg, "checkpoint directory, or a run directory (its checkpoint/)"),
        CLI_OPT_STR("--prompt", "-p", "TEXT", &prompt, "text to continue; \"\" generates from BOS"),
        CLI_OPT_STR("--prompts", NULL, "FILE", &prompts, "one prompt per line, generated as one batch"),
        CLI_OPT_FLAG("--no-compare", NULL, &no_compare, "--prompts: skip the one-by-one run for the speed comparison"),
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
    cli_cmd c = {.name = "generate",
                 .usage = "generate --model DIR --prompt TEXT [options] | --interactive | --prompts FILE",
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
    if (!prompt && !interactive && !prompts) {
        return cli_fail(&c, "--prompt TEXT is required (or --interactive, or --prompts FILE)");
    }
    if (prompts && (prompt || interactive)) {
        return cli_fail(&c, "--prompts FILE excludes --prompt and --interactive");
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
    if (prompts && gen_prompts(&g, prompts, temperature, top_k, top_p, (uint64_t)seed, !no_compare) != LINA_OK) {
        fprintf(stderr, "lina: generate: %s\n", lina_last_error());
        rc = 1;
    }
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
