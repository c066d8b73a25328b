/* tokenizer.c -- `lina tokenizer train|encode|decode`: byte-level BPE (GPT-2 style)
 * in Hugging Face's tokenizer.json format. */
#include "cli.h"
#include "lina.h"
#include "../io/io_internal.h" /* lina_afile_*: atomic file output */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Whole file (or stdin for NULL / "-") into memory. */
static char *tok_read_all(const char *path, size_t *len)
{
    FILE *f = (path && strcmp(path, "-")) ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "lina: tokenizer: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 1 << 20;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) {
            break;
        }
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        fprintf(stderr, "lina: tokenizer: %s: read error\n", path ? path : "stdin");
        free(buf);
        buf = NULL;
    } else if (!buf) {
        fprintf(stderr, "lina: tokenizer: out of memory\n");
    }
    if (f != stdin) {
        fclose(f);
    }
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* bytes to a file (atomically) or to stdout (NULL / "-") */
static int tok_write_out(const char *path, const void *p, size_t n)
{
    if (!path || !strcmp(path, "-")) {
        if (fwrite(p, 1, n, stdout) != n || fflush(stdout) != 0) {
            fprintf(stderr, "lina: tokenizer: write error on stdout\n");
            return 1;
        }
        return 0;
    }
    lina_afile f;
    if (lina_afile_open(&f, path) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    lina_afile_write(&f, p, n);
    if (lina_afile_commit(&f) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    return 0;
}

typedef struct special_list {
    const char *v[64];
    int n;
} special_list;

static int add_special(const char *val, void *dst)
{
    special_list *s = dst;
    if (s->n == 64) {
        fprintf(stderr, "lina: tokenizer train: at most 64 special tokens\n");
        return -1;
    }
    s->v[s->n++] = val;
    return 0;
}

static int tok_train(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    int vocab = 0, no_special = 0;
    special_list sp = {{0}, 0};
    cli_opt opts[] = {
        CLI_OPT_STR("--in", NULL, "TEXT", &in, "training text; - for stdin (required)"),
        CLI_OPT_INT("--vocab", NULL, "N", &vocab, 256, 1 << 24, "vocabulary size: 256 bytes + merges + specials (required)"),
        CLI_OPT_STR("--out", NULL, "FILE", &out, "tokenizer.json to write (required)"),
        CLI_OPT_FN("--special", "TOK", &sp, add_special, "a special token (repeatable)"),
        CLI_OPT_FLAG("--no-special", NULL, &no_special, "no special tokens"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "tokenizer train", .usage = "tokenizer train --in TEXT --vocab N --out tokenizer.json [options]",
                 .about = "  Byte-level BPE (GPT-2 style pre-tokenisation), saved as a Hugging Face tokenizer.json.\n",
                 .opts = opts};
    cli_default(&c, "--vocab", "none");
    cli_default(&c, "--special", "<|endoftext|>");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!in || !out || !vocab) {
        return cli_fail(&c, "--in, --vocab and --out are required");
    }
    if (!sp.n && !no_special) {
        sp.v[sp.n++] = "<|endoftext|>";
    }
    if (no_special) {
        sp.n = 0;
    }
    size_t len;
    char *text = tok_read_all(in, &len);
    if (!text) {
        return 1;
    }
    double t0 = lina_now();
    lina_tokenizer *t;
    int rc = lina_tokenizer_train(text, len, vocab, sp.v, sp.n, &t);
    double dt = lina_now() - t0;
    free(text);
    if (rc == LINA_OK) {
        rc = lina_tokenizer_save(t, out);
        if (rc == LINA_OK) {
            fprintf(stderr, "%s: vocab %d (%s%d requested) from %.2f MB in %.2f s (%.1f MB/s)\n", out,
                    lina_tokenizer_vocab_size(t), lina_tokenizer_vocab_size(t) < vocab ? "fewer pairs than " : "",
                    vocab, (double)len / 1e6, dt, (double)len / 1e6 / (dt > 1e-9 ? dt : 1e-9));
        }
        lina_tokenizer_free(t);
    }
    if (rc != LINA_OK) {
        fprintf(stderr, "lina: tokenizer train: %s\n", lina_last_error());
        return 1;
    }
    return 0;
}

/* ids as one line of space-separated integers, or a token file */
static int tok_encode(lina_tokenizer *t, const char *in, const char *out, int tokfmt)
{
    size_t len, n = 0;
    char *text = tok_read_all(in, &len);
    int32_t *ids = NULL;
    int ret = 1;
    if (text && lina_tokenizer_encode(t, text, len, &ids, &n) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer encode: %s\n", lina_last_error());
    } else if (text && tokfmt) {
        if (!out || !strcmp(out, "-")) {
            fprintf(stderr, "lina: tokenizer encode: a token file needs --out FILE\n");
        } else if (lina_tok_write(out, (const uint32_t *)ids, n, (uint32_t)lina_tokenizer_vocab_size(t), 0) != LINA_OK) {
            fprintf(stderr, "lina: tokenizer encode: %s\n", lina_last_error());
        } else {
            fprintf(stderr, "%s: %zu tokens from %zu bytes\n", out, n, len);
            ret = 0;
        }
    } else if (text) {
        char *s = malloc(n * 12 + 2);
        if (s) {
            size_t k = 0;
            for (size_t i = 0; i < n; i++) {
                k += (size_t)sprintf(s + k, i ? " %d" : "%d", (int)ids[i]);
            }
            s[k++] = '\n';
            ret = tok_write_out(out, s, k);
            free(s);
        }
    }
    free(ids);
    free(text);
    return ret;
}

/* whitespace-separated ids or a token file -> text */
static int tok_decode(lina_tokenizer *t, const char *in, const char *out)
{
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int ok = 1, ret = 1;
    lina_tokfile *tf = NULL;
    if (in && strcmp(in, "-") && lina_tok_open(in, &tf) == LINA_OK) {
        n = (size_t)lina_tok_count(tf);
        ids = malloc((n ? n : 1) * sizeof *ids);
        ok = ids && lina_tok_read(tf, 0, n, ids) == LINA_OK;
        lina_tok_close(tf);
    } else {
        size_t len;
        char *text = tok_read_all(in, &len);
        ok = text != NULL;
        char *p = text;
        while (ok) {
            while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
                p++;
            }
            if (!*p) {
                break;
            }
            char *end;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" \n\t\r", *end))) {
                fprintf(stderr, "lina: tokenizer decode: id %zu is not a non-negative integer\n", n);
                ok = 0;
                break;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 4096;
                int32_t *q = realloc(ids, cap * sizeof *q);
                if (!q) {
                    ok = 0;
                    break;
                }
                ids = q;
            }
            ids[n++] = (int32_t)v;
            p = end;
        }
        free(text);
    }
    char *s = NULL;
    size_t sl = 0;
    if (ok && lina_tokenizer_decode(t, ids, n, &s, &sl) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer decode: %s\n", lina_last_error());
    } else if (ok) {
        ret = tok_write_out(out, s, sl);
    }
    free(s);
    free(ids);
    return ret;
}

static int tok_code(int argc, char **argv, int encode)
{
    const char *in = NULL, *out = NULL, *tokpath = NULL;
    int format = -1;
    cli_opt opts[] = {
        CLI_OPT_STR("--tokenizer", NULL, "FILE", &tokpath, "tokenizer.json (required)"),
        CLI_OPT_STR("--in", NULL, "FILE", &in, encode ? "text to encode; - for stdin" : "ids (text) or a token file; - for stdin"),
        CLI_OPT_STR("--out", NULL, "FILE", &out, encode ? "ids or token file; - for stdout" : "text; - for stdout"),
        CLI_OPT_CHOICE("--format", &format, "text|tok", "encode's output: ids as one line of integers (text) or a token file (tok)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = encode ? "tokenizer encode" : "tokenizer decode",
                 .usage = encode ? "tokenizer encode --tokenizer FILE [--in FILE] [--out FILE] [--format text|tok]"
                                 : "tokenizer decode --tokenizer FILE [--in FILE] [--out FILE]",
                 .opts = opts};
    cli_default(&c, "--in", "stdin");
    cli_default(&c, "--out", "stdout");
    cli_default(&c, "--format", "tok when --out ends in .tok, else text");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!tokpath) {
        return cli_fail(&c, "--tokenizer FILE is required");
    }
    int tokfmt = format == 1 || (format < 0 && out && strlen(out) > 4 && !strcmp(out + strlen(out) - 4, ".tok"));
    lina_tokenizer *t;
    if (lina_tokenizer_load(tokpath, &t) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    int ret = encode ? tok_encode(t, in, out, tokfmt) : tok_decode(t, in, out);
    lina_tokenizer_free(t);
    return ret;
}

static const char TOK_USAGE[] =
    "usage: lina tokenizer train --in TEXT --vocab N --out tokenizer.json [--special TOK]... [--no-special]\n"
    "       lina tokenizer encode --tokenizer FILE [--in FILE] [--out FILE] [--format text|tok]\n"
    "       lina tokenizer decode --tokenizer FILE [--in FILE] [--out FILE]\n"
    "  byte-level BPE (GPT-2 style), Hugging Face tokenizer.json; 'lina tokenizer SUB --help'\n"
    "  lists the options of each with their defaults\n";

int lina_cmd_tokenizer(int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : NULL;
    if (sub && !strcmp(sub, "train")) {
        return tok_train(argc - 2, argv + 2);
    }
    if (sub && (!strcmp(sub, "encode") || !strcmp(sub, "decode"))) {
        return tok_code(argc - 2, argv + 2, !strcmp(sub, "encode"));
    }
    if (sub && (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help"))) {
        fputs(TOK_USAGE, stdout);
        return 0;
    }
    if (sub) {
        fprintf(stderr, "lina: tokenizer: unknown subcommand '%s' (train, encode or decode)\n", sub);
    } else {
        fputs(TOK_USAGE, stderr);
    }
    return 2;
}
