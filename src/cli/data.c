/* data.c -- `lina data pack`: whitespace-separated decimal token ids (text) or raw
 * little-endian u16/u32 -> a token file; `lina data info FILE`: its header. */
#include "cli.h"
#include "lina.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int data_pack(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    int64_t vocab = 0, width = 0;
    int fmt = 0;
    cli_opt opts[] = {
        CLI_OPT_I64("--vocab", NULL, "V", &vocab, 1, 0x80000000LL, "vocabulary size: every id must be below V (required)"),
        CLI_OPT_STR("--in", NULL, "FILE|-", &in, "token ids to read; - for stdin (required)"),
        CLI_OPT_STR("--out", NULL, "FILE", &out, "token file to write (required)"),
        CLI_OPT_CHOICE("--format", &fmt, "text|u16|u32", "input: decimal ids, or raw little-endian ids"),
        CLI_OPT_I64("--width", NULL, "W", &width, 0, 4, "bytes per token in the file: 2, 4 (0: the smallest that fits)"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "data pack", .usage = "data pack --vocab V --in FILE|- --out FILE [options]", .opts = opts};
    cli_default(&c, "--vocab", "none");
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (!in || !out || !vocab) {
        return cli_fail(&c, "--vocab V --in FILE|- --out FILE are required");
    }
    fmt = fmt == 0 ? 0 : fmt == 1 ? 2 : 4; /* bytes per input token; 0: text */
    FILE *f = strcmp(in, "-") ? fopen(in, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "lina: data pack: %s: %s\n", in, strerror(errno));
        return 1;
    }
    size_t n = 0, cap = 1 << 16;
    uint32_t *tok = malloc(cap * sizeof *tok);
    int rc = tok ? 0 : 1;
    while (!rc) {
        unsigned long long v = 0;
        if (fmt == 0) {
            int ch;
            while ((ch = fgetc(f)) != EOF && (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r')) {
            }
            if (ch == EOF) {
                break;
            }
            ungetc(ch, f);
            if (fscanf(f, "%20llu", &v) != 1 || ch == '-') {
                fprintf(stderr, "lina: data pack: %s: token %zu is not a non-negative integer\n", in, n);
                rc = 1;
                break;
            }
        } else {
            unsigned char b[4] = {0};
            size_t got = fread(b, 1, (size_t)fmt, f);
            if (got == 0) {
                break;
            }
            if (got != (size_t)fmt) {
                fprintf(stderr, "lina: data pack: %s: ends inside a token\n", in);
                rc = 1;
                break;
            }
            v = b[0] | (unsigned)b[1] << 8 | (unsigned long long)b[2] << 16 | (unsigned long long)b[3] << 24;
        }
        if (v >= (unsigned long long)vocab) {
            fprintf(stderr, "lina: data pack: %s: token %zu is %llu, not below --vocab %lld\n", in, n, v,
                    (long long)vocab);
            rc = 1;
            break;
        }
        if (n == cap) {
            uint32_t *nt = realloc(tok, 2 * cap * sizeof *tok);
            if (!nt) {
                rc = 1;
                break;
            }
            tok = nt;
            cap *= 2;
        }
        tok[n++] = (uint32_t)v;
    }
    if (f != stdin) {
        fclose(f);
    }
    if (!rc && lina_tok_write(out, tok, n, (uint32_t)vocab, (int)width) != LINA_OK) {
        fprintf(stderr, "lina: data pack: %s\n", lina_last_error());
        rc = 1;
    }
    free(tok);
    if (!rc) {
        printf("%s: %zu tokens, vocab %lld\n", out, n, (long long)vocab);
    }
    return rc;
}

static int data_info(int argc, char **argv)
{
    cli_opt opts[] = {CLI_OPT_END};
    cli_cmd c = {.name = "data info", .usage = "data info FILE",
                 .about = "  Prints the token count, vocabulary and token width of a token file.\n",
                 .opts = opts, .max_pos = 1};
    int r = cli_parse(&c, argc, argv);
    if (r != CLI_RUN) {
        return r;
    }
    if (c.npos != 1) {
        return cli_fail(&c, "a token FILE is required");
    }
    lina_tokfile *f;
    if (lina_tok_open(c.pos[0], &f) != LINA_OK) {
        fprintf(stderr, "lina: data info: %s\n", lina_last_error());
        return 1;
    }
    printf("%s: %llu tokens, vocab %u, %d-byte tokens\n", c.pos[0], (unsigned long long)lina_tok_count(f),
           lina_tok_vocab(f), lina_tok_width(f));
    lina_tok_close(f);
    return 0;
}

static const char DATA_USAGE[] =
    "usage: lina data pack --vocab V --in FILE|- --out FILE [--format text|u16|u32] [--width 2|4]\n"
    "       lina data info FILE\n"
    "  'lina data pack --help' lists the options with their defaults.\n";

int lina_cmd_data(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "pack")) {
        return data_pack(argc - 2, argv + 2);
    }
    if (argc >= 2 && !strcmp(argv[1], "info")) {
        return data_info(argc - 2, argv + 2);
    }
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        fputs(DATA_USAGE, stdout);
        return 0;
    }
    if (argc >= 2) {
        fprintf(stderr, "lina: data: unknown subcommand '%s' (pack or info)\n", argv[1]);
    } else {
        fputs(DATA_USAGE, stderr);
    }
    return 2;
}
