/* plot.c -- `lina plot`: the loss curves of a training log as a PNG (src/io/plot.c). */
#include "cli.h"
#include "lina.h"
#include "../io/plot.h"

int lina_cmd_plot(int argc, char **argv)
{
    const char *log = NULL, *out = NULL, *title = NULL;
    cli_opt opts[] = {
        CLI_OPT_STR("--log", NULL, "RUN/log.jsonl", &log, "JSON-lines log written by lina train (required)"),
        CLI_OPT_STR("--out", NULL, "PNG", &out, "image to write (required)"),
        CLI_OPT_STR("--title", NULL, "T", &title, "title above the plot"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "plot", .usage = "plot --log RUN/log.jsonl --out loss.png [--title T]",
                 .about = "  Plots train loss and validation loss against step.\n", .opts = opts};
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (!log || !out) {
        return cli_fail(&c, "--log and --out are required (try 'lina plot --help')");
    }
    if (lina_plot_train_log(log, out, title) != LINA_OK) {
        fprintf(stderr, "lina: %s\n", lina_last_error());
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}
