/* plot_cli.c -- `lina plot`: the loss curves of a training log as a PNG. */
#include "plot.h"
#include "lina.h"

#include <stdio.h>
#include <string.h>

static void plot_usage(FILE *f)
{
    fprintf(f, "usage: lina plot --log RUN/log.jsonl --out loss.png [--title T]\n"
               "  plot train loss and validation loss against step from the JSON-lines log\n"
               "  written by lina train\n");
}

int lina_plot_main(int argc, char **argv)
{
    const char *log = NULL, *out = NULL, *title = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            plot_usage(stdout);
            return 0;
        }
        const char **dst = !strcmp(a, "--log")     ? &log
                           : !strcmp(a, "--out")   ? &out
                           : !strcmp(a, "--title") ? &title
                                                   : NULL;
        if (!dst) {
            fprintf(stderr, "lina: plot: unknown option '%s' (try 'lina plot --help')\n", a);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "lina: plot: %s needs a value\n", a);
            return 2;
        }
        *dst = argv[++i];
    }
    if (!log || !out) {
        fprintf(stderr, "lina: plot: --log and --out are required (try 'lina plot --help')\n");
        return 2;
    }
    if (lina_plot_train_log(log, out, title) != LINA_OK) {
        fprintf(stderr, "lina: %s\n", lina_last_error());
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
