/* cli.h -- the `lina` command line: one file per command (src/cli/<command>.c) and the
 * one option parser they all use (src/cli/opts.c).
 *
 * A command is a function `int lina_cmd_NAME(int argc, char **argv)` where argv[0] is
 * the command word ("train") and the options follow; it returns the process exit
 * status (0 success, 1 failure at run time, 2 bad command line). tools/lina.c only
 * dispatches to them.
 *
 * A command describes its options as a table of cli_opt rows that point at the
 * variables they set (those variables hold the defaults before parsing), then calls
 * cli_parse. The parser gives every command the same behaviour:
 *   --help / -h   prints the usage line, every option with its default and a
 *                 one-line description, then the command's notes; exit 0
 *   --name VALUE, --name=VALUE, and a short alias (-n VALUE) for value options;
 *   flags take no value; "--" ends the options;
 *   an unknown option, a missing value, a value out of range or not in the list of
 *   choices, or a positional argument too many: one "lina: CMD: ..." line, exit 2.
 * Adding an option = one row in the command's table.
 */
#ifndef LINA_CLI_H
#define LINA_CLI_H

#include <stdio.h>

typedef enum cli_kind {
    CLI_END = 0, /* ends a table */
    CLI_SECTION, /* a heading line in --help (help = the heading) */
    CLI_FLAG,    /* no value: stores (int)lo into *(int *)dst */
    CLI_STR,     /* const char *: the value as given */
    CLI_INT,     /* int in [lo, hi] */
    CLI_I64,     /* int64_t in [lo, hi] (also into a uint64_t) */
    CLI_DBL,     /* double in [lo, hi] */
    CLI_FLT,     /* float in [lo, hi] (parsed as double) */
    CLI_CHOICE,  /* int: the index of the value in choices ("a|b|c") */
    CLI_FN       /* fn(value, dst) parses; returns 0, or prints its error and returns -1 */
} cli_kind;

typedef struct cli_opt {
    cli_kind kind;
    const char *name;  /* "--steps" */
    const char *alias; /* "-n", "--temp", or NULL */
    const char *meta;  /* value placeholder in --help: "N", "FILE" */
    void *dst;
    double lo, hi;
    const char *choices;
    int (*fn)(const char *val, void *dst);
    const char *help; /* one line */
    const char *def;  /* default shown in --help; NULL: formatted from *dst */
    int seen;         /* set by cli_parse when the option was given */
} cli_opt;

#define CLI_OPT_FLAG(n, a, d, h) {.kind = CLI_FLAG, .name = n, .alias = a, .dst = d, .lo = 1, .help = h}
#define CLI_OPT_SET(n, d, v, h) {.kind = CLI_FLAG, .name = n, .dst = d, .lo = v, .help = h, .def = ""}
#define CLI_OPT_STR(n, a, m, d, h) {.kind = CLI_STR, .name = n, .alias = a, .meta = m, .dst = d, .help = h}
#define CLI_OPT_INT(n, a, m, d, l, u, h) \
    {.kind = CLI_INT, .name = n, .alias = a, .meta = m, .dst = d, .lo = l, .hi = u, .help = h}
#define CLI_OPT_I64(n, a, m, d, l, u, h) \
    {.kind = CLI_I64, .name = n, .alias = a, .meta = m, .dst = d, .lo = l, .hi = u, .help = h}
#define CLI_OPT_DBL(n, a, m, d, l, u, h) \
    {.kind = CLI_DBL, .name = n, .alias = a, .meta = m, .dst = d, .lo = l, .hi = u, .help = h}
#define CLI_OPT_FLT(n, a, m, d, l, u, h) \
    {.kind = CLI_FLT, .name = n, .alias = a, .meta = m, .dst = d, .lo = l, .hi = u, .help = h}
#define CLI_OPT_CHOICE(n, d, c, h) {.kind = CLI_CHOICE, .name = n, .meta = c, .dst = d, .choices = c, .help = h}
#define CLI_OPT_FN(n, m, d, f, h) {.kind = CLI_FN, .name = n, .meta = m, .dst = d, .fn = f, .help = h}
#define CLI_HEADING(h) {.kind = CLI_SECTION, .help = h}
#define CLI_OPT_END {.kind = CLI_END}

#define CLI_MAX_POS 8

typedef struct cli_cmd {
    const char *name;  /* "train", "tokenizer encode": the prefix of error lines */
    const char *usage; /* after "usage: lina ": "train [options]" (may hold several lines) */
    const char *about; /* printed after the options in --help (may be NULL) */
    cli_opt *opts;     /* ends with CLI_OPT_END */
    int max_pos;       /* positional arguments allowed (at most CLI_MAX_POS) */
    int npos;          /* set by cli_parse */
    const char *pos[CLI_MAX_POS];
} cli_cmd;

/* cli_parse's result when the command should go on; otherwise it returns the exit
 * status (0 after --help, 2 after an error line). */
#define CLI_RUN (-1)

/* Parses argv[0..argc) (the arguments after the command word). */
int cli_parse(cli_cmd *c, int argc, char **argv);
/* The command's --help text on f. */
void cli_help(const cli_cmd *c, FILE *f);
/* The row of option name (or NULL); 1 when it was given. */
cli_opt *cli_find(cli_cmd *c, const char *name);
int cli_given(cli_cmd *c, const char *name);
/* Sets the default text shown in --help for option name. */
void cli_default(cli_cmd *c, const char *name, const char *def);
/* One "lina: CMD: <message>" line on stderr; returns 2 (a usage error). */
int cli_fail(const cli_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* n capped at 4 x the online cores, with a note on stderr when it is (more
 * threads only oversubscribe, and thousands can exhaust memory in OpenBLAS). */
int cli_threads(int n);
/* Threads for lina and OpenBLAS (n > 0, capped as cli_threads; 0 leaves the defaults). */
void cli_set_threads(int n);
/* The checkpoint directory meant by --model DIR: DIR itself, or DIR/checkpoint when
 * DIR has no config.json but DIR/checkpoint has (a run directory of lina train).
 * Returns dir or buf. */
const char *cli_checkpoint_dir(const char *dir, char *buf, size_t cap);

/* 1 when op lists flag ("--normalize") among the flags it accepts (src/cli/op.c). */
struct lina_op_info;
int cli_op_accepts(const struct lina_op_info *op, const char *flag);
/* The op named by the first positional argument, after checking that every op flag
 * given (--normalize, --qk-l2norm, --non-causal, --window) applies to it; NULL with an
 * error line and *rc = 2 otherwise. */
const struct lina_op_info *cli_op_select(cli_cmd *c, int *rc);

/* The commands (src/cli/<name>.c). */
int lina_cmd_op(int argc, char **argv);
int lina_cmd_ops(int argc, char **argv);
int lina_cmd_bench(int argc, char **argv);
int lina_cmd_train(int argc, char **argv);
int lina_cmd_data(int argc, char **argv);
int lina_cmd_tokenizer(int argc, char **argv);
int lina_cmd_generate(int argc, char **argv);
int lina_cmd_eval(int argc, char **argv);
int lina_cmd_info(int argc, char **argv);
int lina_cmd_plot(int argc, char **argv);
int lina_cmd_task(int argc, char **argv);
int lina_cmd_paper(int argc, char **argv);
int lina_cmd_analyze(int argc, char **argv);
int lina_cmd_linearize(int argc, char **argv);

#endif
