/* opts.c -- the option parser every `lina` command uses (see cli.h). */
#include "cli.h"
#include "lina.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void openblas_set_num_threads(int);

int cli_fail(const cli_cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lina: %s: ", c->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

int cli_threads(int n)
{
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    const int cap = cores > 0 ? (int)(cores < 256 ? 4 * cores : 1024) : 4;
    if (n > cap) {
        fprintf(stderr, "lina: note: --threads %d is more than 4 x the %ld cores; using %d\n", n,
                cores > 0 ? cores : 1, cap);
        return cap;
    }
    return n;
}

void cli_set_threads(int n)
{
    if (n > 0) {
        n = cli_threads(n);
        lina_set_threads(n);
        openblas_set_num_threads(n);
    }
}

static int is_file(const char *dir, const char *name)
{
    char p[4200];
    struct stat st;
    int n = snprintf(p, sizeof p, "%s/%s", dir, name);
    return n > 0 && (size_t)n < sizeof p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

const char *cli_checkpoint_dir(const char *dir, char *buf, size_t cap)
{
    if (is_file(dir, "config.json")) {
        return dir;
    }
    int n = snprintf(buf, cap, "%s/checkpoint", dir);
    return n > 0 && (size_t)n < cap && is_file(buf, "config.json") ? buf : dir;
}

static int takes_value(const cli_opt *o)
{
    return o->kind != CLI_FLAG;
}

/* the row for argument a ("--name", "--name=value" or an alias); *val gets the
 * inline value after '=' (or NULL) */
static cli_opt *match(cli_cmd *c, const char *a, const char **val)
{
    *val = NULL;
    const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    size_t n = eq ? (size_t)(eq - a) : strlen(a);
    for (cli_opt *o = c->opts; o->kind != CLI_END; o++) {
        if (o->kind == CLI_SECTION) {
            continue;
        }
        if ((strlen(o->name) == n && !strncmp(o->name, a, n)) ||
            (o->alias && strlen(o->alias) == n && !strncmp(o->alias, a, n))) {
            *val = eq ? eq + 1 : NULL;
            return o;
        }
    }
    return NULL;
}

cli_opt *cli_find(cli_cmd *c, const char *name)
{
    const char *v;
    return match(c, name, &v);
}

int cli_given(cli_cmd *c, const char *name)
{
    cli_opt *o = cli_find(c, name);
    return o && o->seen;
}

void cli_default(cli_cmd *c, const char *name, const char *def)
{
    cli_opt *o = cli_find(c, name);
    if (o) {
        o->def = def;
    }
}

static int is_option(const char *a)
{
    return a[0] == '-' && a[1] != '\0';
}

static int is_help(const char *a)
{
    return !strcmp(a, "--help") || !strcmp(a, "-h");
}

/* the k-th '|'-separated word of list into buf */
static const char *choice_word(const char *list, int k, char *buf, size_t cap)
{
    for (int i = 0; i < k && list; i++) {
        list = strchr(list, '|');
        list = list ? list + 1 : NULL;
    }
    if (!list) {
        return "?";
    }
    size_t n = strcspn(list, "|");
    snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), list);
    return buf;
}

static int set_value(cli_cmd *c, cli_opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case CLI_STR:
        *(const char **)o->dst = v;
        return 0;
    case CLI_INT:
    case CLI_I64: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || (double)x < o->lo || (double)x > o->hi) {
            return cli_fail(c, "%s needs an integer in [%.0f, %.0f], got '%s'", o->name, o->lo, o->hi, v);
        }
        if (o->kind == CLI_INT) {
            *(int *)o->dst = (int)x;
        } else {
            *(int64_t *)o->dst = (int64_t)x;
        }
        return 0;
    }
    case CLI_DBL:
    case CLI_FLT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !(x >= o->lo && x <= o->hi)) {
            return cli_fail(c, "%s needs a number in [%g, %g], got '%s'", o->name, o->lo, o->hi, v);
        }
        if (o->kind == CLI_DBL) {
            *(double *)o->dst = x;
        } else {
            *(float *)o->dst = (float)x;
        }
        return 0;
    }
    case CLI_CHOICE: {
        char w[64];
        for (int k = 0;; k++) {
            const char *s = choice_word(o->choices, k, w, sizeof w);
            if (!strcmp(s, "?")) {
                break;
            }
            if (!strcmp(s, v)) {
                *(int *)o->dst = k;
                return 0;
            }
        }
        return cli_fail(c, "unknown %s '%s' (%s)", o->name + 2, v, o->choices);
    }
    case CLI_FN:
        return o->fn(v, o->dst) ? 2 : 0;
    default:
        return 2;
    }
}

int cli_parse(cli_cmd *c, int argc, char **argv)
{
    /* --help anywhere an option may stand: print the defaults before anything is set */
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            break;
        }
        if (is_help(argv[i])) {
            cli_help(c, stdout);
            return 0;
        }
        const char *v;
        cli_opt *o = is_option(argv[i]) ? match(c, argv[i], &v) : NULL;
        if (o && takes_value(o) && !v) {
            i++;
        }
    }
    c->npos = 0;
    int only_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && !strcmp(a, "--")) {
            only_pos = 1;
            continue;
        }
        if (only_pos || !is_option(a)) {
            if (c->npos >= c->max_pos || c->npos >= CLI_MAX_POS) {
                return cli_fail(c, "unexpected argument '%s' (try 'lina %s --help')", a, c->name);
            }
            c->pos[c->npos++] = a;
            continue;
        }
        const char *v;
        cli_opt *o = match(c, a, &v);
        if (!o) {
            return cli_fail(c, "unknown option '%s' (try 'lina %s --help')", a, c->name);
        }
        o->seen = 1;
        if (!takes_value(o)) {
            if (v) {
                return cli_fail(c, "option %s takes no value", o->name);
            }
            *(int *)o->dst = (int)o->lo;
            continue;
        }
        if (!v) {
            if (i + 1 >= argc) {
                return cli_fail(c, "option %s needs a value", a);
            }
            v = argv[++i];
        }
        if (set_value(c, o, v)) {
            return 2;
        }
    }
    return CLI_RUN;
}

/* the default of o as text into buf */
static const char *default_text(const cli_opt *o, char *buf, size_t cap)
{
    if (o->def) {
        return o->def;
    }
    switch (o->kind) {
    case CLI_FLAG:
        return *(const int *)o->dst == (int)o->lo ? "on" : "off";
    case CLI_STR: {
        const char *s = *(const char *const *)o->dst;
        return s ? s : "none";
    }
    case CLI_INT:
        snprintf(buf, cap, "%d", *(const int *)o->dst);
        return buf;
    case CLI_I64:
        snprintf(buf, cap, "%lld", (long long)*(const int64_t *)o->dst);
        return buf;
    case CLI_DBL:
        snprintf(buf, cap, "%g", *(const double *)o->dst);
        return buf;
    case CLI_FLT:
        snprintf(buf, cap, "%g", (double)*(const float *)o->dst);
        return buf;
    case CLI_CHOICE:
        return choice_word(o->choices, *(const int *)o->dst, buf, cap);
    default:
        return "";
    }
}

void cli_help(const cli_cmd *c, FILE *f)
{
    fprintf(f, "usage: lina %s\n", c->usage);
    int heading = 0;
    for (const cli_opt *o = c->opts; o->kind != CLI_END; o++) {
        if (o->kind == CLI_SECTION) {
            fprintf(f, "%s\n", o->help);
            heading = 1;
            continue;
        }
        if (!heading) {
            fprintf(f, "options:\n");
            heading = 1;
        }
        char left[96], buf[64];
        int n = snprintf(left, sizeof left, "%s%s%s%s%s", o->alias && o->alias[1] != '-' ? o->alias : "",
                         o->alias && o->alias[1] != '-' ? ", " : "", o->name,
                         o->alias && o->alias[1] == '-' ? ", " : "", o->alias && o->alias[1] == '-' ? o->alias : "");
        if (takes_value(o) && n > 0 && (size_t)n < sizeof left) {
            snprintf(left + n, sizeof left - (size_t)n, " %s", o->meta ? o->meta : "X");
        }
        const char *d = default_text(o, buf, sizeof buf);
        fprintf(f, "  %-24s %s", left, o->help);
        if (d[0] && !strstr(o->help, "(required)")) {
            fprintf(f, " (default: %s)", d);
        }
        fputc('\n', f);
    }
    fprintf(f, "  %-24s %s\n", "-h, --help", "print this help and exit");
    if (c->about) {
        fputs(c->about, f);
    }
}
