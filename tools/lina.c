/* lina.c -- the command-line tool: dispatches `lina COMMAND ...` to the command's
 * file in src/cli/ (one file per command, one shared option parser). */
#include "lina.h"
#include "../src/cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("lina %s\nkernel path: %s (this CPU: %s)\n", LINA_VERSION, lina_isa_name(), lina_isa_supported());
    if (!strcmp(lina_isa_name(), "avx512")) {
        printf("512-bit vector units: %s\n", lina_cpu_full512() ? "full width" : "two 256-bit halves (AMD family 19h)");
    }
    return 0;
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} COMMANDS[] = {
    {"op", lina_cmd_op, "run one token mixer on .npy inputs (the README's op contract)"},
    {"ops", lina_cmd_ops, "list the ops and their flags"},
    {"bench", lina_cmd_bench, "time a kernel against SGEMM (bench OP), or a whole model (bench --model CONFIG)"},
    {"train", lina_cmd_train, "train a model on a token file with AdamW"},
    {"generate", lina_cmd_generate, "stream text from a checkpoint"},
    {"eval", lina_cmd_eval, "loss, perplexity and bits per byte of a checkpoint on a token or text file"},
    {"info", lina_cmd_info, "config, parameters per part, tokenizer, training state, decode-state memory"},
    {"tokenizer", lina_cmd_tokenizer, "train|encode|decode: byte-level BPE, Hugging Face tokenizer.json"},
    {"data", lina_cmd_data, "pack|info: make or inspect a token file"},
    {"plot", lina_cmd_plot, "plot train and validation loss of a training log (PNG)"},
    {"task", lina_cmd_task, "train and score a model on a synthetic task"},
    {"analyze", lina_cmd_analyze, "linearity|replace: how linear a model's blocks are (Procrustes score, ReplaceMe)"},
    {"linearize", lina_cmd_linearize, "a softmax transformer into linearized attention (LoLCATs, Liger) + LoRA"},
    {"paper", lina_cmd_paper, "the reduced reproduction of the papers' task findings"},
    {"version", cmd_version, "print the version and the kernel path (LINA_ISA=avx512|avx2|neon|portable forces one)"},
};
#define NCOMMANDS (sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: lina <command> [options]   ('lina <command> --help' lists its options and defaults)\n");
    for (size_t i = 0; i < NCOMMANDS; i++) {
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    }
}

/* OpenMP threads that finish a parallel region spin-wait for the next one
 * (libgomp's default: about 300,000 iterations). A training step has a few
 * hundred short regions (lina's and OpenBLAS's); when the cores are shared with
 * other processes, a spinning thread holds a core its partner needs and a step
 * gets several times slower (gla-10m, 2 threads, load 3: 176 tokens/s with the
 * default spin, 414 with GOMP_SPINCOUNT=10000). libgomp reads its settings once
 * at start-up, so when the user has set neither OMP_WAIT_POLICY nor
 * GOMP_SPINCOUNT, lina sets a short spin and re-executes itself once. */
static void tune_openmp_wait(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) {
        return;
    }
    if (setenv("GOMP_SPINCOUNT", "10000", 1) == 0) {
        execv("/proc/self/exe", argv);
    }
    /* no re-exec possible: carry on with libgomp's defaults */
}

int main(int argc, char **argv)
{
    tune_openmp_wait(argv);
    if (lina_isa_init() != LINA_OK) {
        fprintf(stderr, "lina: LINA_ISA: %s\n", lina_last_error());
        return 2;
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (!strcmp(cmd, COMMANDS[i].name)) {
            return COMMANDS[i].run(argc - 1, argv + 1);
        }
    }
    if (!strcmp(cmd, "--version")) {
        return cmd_version(0, NULL);
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "lina: unknown command '%s' (try 'lina help')\n", cmd);
    return 2;
}
