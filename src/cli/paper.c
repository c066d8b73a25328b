/* paper.c -- `lina paper`: the reduced reproduction of the papers' synthetic-task
 * findings (src/tasks/task_paper.c): DIR/PAPER.md and the PNG plots in DIR. */
#include "cli.h"
#include "lina.h"
#include "../tasks/tasks.h"

int lina_cmd_paper(int argc, char **argv)
{
    const char *out = "results", *only = NULL, *mixers = NULL, *widths = NULL, *lrs = NULL, *cells = NULL;
    int threads = 2, quick = 0, assemble = 0, seeds = 3, full = 0, resume = 0;
    cli_opt opts[] = {
        CLI_OPT_STR("--out", NULL, "DIR", &out, "output directory"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads"),
        CLI_OPT_STR("--only", NULL, "LIST", &only,
                    "comma-separated subset of mqar,mom,parity,modarith,s3s5,icl; the others keep their last sections"),
        CLI_OPT_INT("--seeds", NULL, "N", &seeds, 1, LINA_TASK_MAX_SEEDS, "seeds per configuration"),
        CLI_OPT_FLAG("--full", NULL, &full,
                     "the full protocol (every MQAR width, two learning rates, mod-arith included; hours)"),
        CLI_OPT_STR("--lrs", NULL, "X,Y,..", &lrs, "learning rates instead of the report's (best kept per seed)"),
        CLI_OPT_STR("--cells", NULL, "LIST", &cells,
                    "run only these configurations (names of DIR/paper_parts/cells/*.txt, e.g. mom_mom,s5_l1_nh3); "
                    "the others are read back (--cells none: rebuild the sections from the kept ones)"),
        CLI_OPT_FLAG("--resume", NULL, &resume,
                     "read back configurations finished earlier with the same settings (DIR/paper_parts/cells/)"),
        CLI_OPT_STR("--mixers", NULL, "LIST", &mixers,
                    "MQAR: comma-separated subset of the table's models (transformer,delta_net,gated_deltanet,gla,"
                    "linear_attn,mamba2,retnet,mamba,kda,gsa,forgetting_transformer,hgrn,rwkv7)"),
        CLI_OPT_STR("--widths", NULL, "LIST", &widths,
                    "MQAR: the widths to run (of 32,64,128), in that order; the others are read back when run earlier"),
        CLI_OPT_FLAG("--quick", NULL, &quick, "1/20 of the steps (checks the pipeline; the numbers mean nothing)"),
        CLI_OPT_FLAG("--assemble", NULL, &assemble, "run nothing; rebuild DIR/PAPER.md from DIR/paper_parts/"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "paper", .usage = "paper [--out DIR] [--threads N] [--only LIST] [--full] [--resume] [--quick] [--assemble]",
                 .about = "  The papers' synthetic-task experiments at reduced scale: DIR/PAPER.md (the numbers next\n"
                          "  to the papers', seeds and wall times) and DIR/*.png; each experiment's section is kept in\n"
                          "  DIR/paper_parts/.\n",
                 .opts = opts};
    cli_default(&c, "--only", "all");
    cli_default(&c, "--mixers", "all");
    cli_default(&c, "--widths", "64,32 (--full: 64,32,128)");
    cli_default(&c, "--lrs", "0.001 (--full: 0.001,0.003)");
    cli_default(&c, "--cells", "all");
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    lina_paper_opts po = {out, assemble ? "" : only, cli_threads(threads), quick, seeds, mixers, widths, full, resume,
                          lrs, cells};
    return lina_paper_run_opts(&po);
}
