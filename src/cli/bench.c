/* bench.c -- `lina bench OP`: time one mixer kernel against OpenBLAS SGEMM measured in
 * the same process; `lina bench --model CONFIG`: a whole model's training, prefill
 * and decode throughput (src/train/model_bench.c). */
#include "cli.h"
#include "lina.h"
#include "../train/model_bench.h"

#include <stdlib.h>
#include <string.h>

char *openblas_get_corename(void); /* OpenBLAS: the SGEMM kernel it chose for this CPU */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_d);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* one kernel: median time of `repeat` runs after a warm-up */
static int bench_op(const lina_op_info *op, const lina_mix_dims *d, lina_op_opts *o, int repeat, int json)
{
    const int threads = lina_get_threads();
    o->trusted = 1;
    lina_tset in = {0}, out = {0};
    if (op->make_inputs(d, o->backward, 12345, &in) != 0) {
        fprintf(stderr, "lina: bench: %s\n", lina_last_error());
        lina_tset_free(&in);
        return 1;
    }
    double sg_cpu = 0.0, sg = lina_bench_sgemm_gflops(&sg_cpu);
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = lina_op_run(op, &in, &out, o, &ws); /* warm-up */
    double *t = malloc((size_t)repeat * sizeof(double));
    double cpu_best = 1e30; /* CPU seconds of the process, least over the runs */
    for (int r = 0; rc == 0 && t && r < repeat; r++) {
        double t0 = lina_now(), c0 = lina_bench_cpu_now();
        rc = lina_op_run(op, &in, &out, o, &ws);
        t[r] = lina_now() - t0;
        double dc = lina_bench_cpu_now() - c0;
        cpu_best = dc > 0.0 && dc < cpu_best ? dc : cpu_best;
    }
    if (rc != 0 || !t) {
        fprintf(stderr, "lina: bench: %s\n", rc ? lina_last_error() : "out of memory");
        free(t);
        lina_ws_free(&ws);
        lina_tset_free(&in);
        lina_tset_free(&out);
        return 1;
    }
    double ms = median(t, repeat) * 1e3;
    double fl = op->flops(d, o);
    double gf = fl / (ms * 1e-3) / 1e9;
    double tps = (double)d->B * d->T / (ms * 1e-3);
    /* per second of CPU time, against SGEMM's per second of CPU time: steadier
     * than wall time on a machine that other processes share */
    double gf_cpu = fl / cpu_best / 1e9;
    const char *form = o->form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    const char *pass = o->backward ? "fwdbwd" : "fwd";
    /* the kernel path lina took, and the SGEMM kernel OpenBLAS chose for itself */
    const char *blas_core = openblas_get_corename();
    if (json) {
        printf("{\"op\":\"%s\",\"form\":\"%s\",\"pass\":\"%s\",\"B\":%d,\"T\":%d,\"H\":%d,\"K\":%d,"
               "\"V\":%d,\"threads\":%d,\"isa\":\"%s\",\"ms\":%.4f,\"tokens_per_s\":%.1f,"
               "\"gflops\":%.3f,\"sgemm_gflops\":%.3f,\"cpu_ms\":%.4f,\"cpu_gflops\":%.3f,"
               "\"sgemm_cpu_gflops\":%.3f,\"blas_core\":\"%s\"}\n",
               op->name, form, pass, d->B, d->T, d->H, d->K, d->V, threads, lina_isa_name(), ms, tps,
               gf, sg, cpu_best * 1e3, gf_cpu, sg_cpu, blas_core ? blas_core : "unknown");
    } else {
        printf("%s %s %s  B=%d T=%d H=%d K=%d V=%d threads=%d, kernel path %s\n", op->name, form, pass,
               d->B, d->T, d->H, d->K, d->V, threads, lina_isa_name());
        printf("  median %.3f ms over %d runs, %.0f tokens/s, %.2f GFLOP/s (forward FLOP count)\n", ms, repeat,
               tps, gf);
        printf("  SGEMM n=1024 (OpenBLAS, %s kernel): %.2f GFLOP/s; kernel at %.1f%% of SGEMM\n",
               blas_core ? blas_core : "unknown", sg, 100.0 * gf / sg);
        printf("  per CPU second (least CPU time of a run %.3f ms): %.2f GFLOP/s, SGEMM %.2f; %.1f%% of SGEMM\n",
               cpu_best * 1e3, gf_cpu, sg_cpu, 100.0 * gf_cpu / sg_cpu);
    }
    free(t);
    lina_ws_free(&ws);
    lina_tset_free(&in);
    lina_tset_free(&out);
    return 0;
}

int lina_cmd_bench(int argc, char **argv)
{
    lina_mix_dims d = {1, 4096, 4, 128, 128, 0, 0.0f};
    lina_op_opts o = {0};
    int form = 0, repeat = 5, json = 0, threads = 0, normalize = 0, qk_l2norm = 0, non_causal = 0;
    int delta_softplus = 0;
    lina_model_bench_opts mb;
    lina_model_bench_opts_default(&mb);
    cli_opt opts[] = {
        CLI_HEADING("kernel (lina bench OP):"),
        CLI_OPT_INT("--B", NULL, "N", &d.B, 1, 1 << 24, "batch"),
        CLI_OPT_INT("--T", NULL, "N", &d.T, 1, 1 << 24, "sequence length"),
        CLI_OPT_INT("--H", NULL, "N", &d.H, 1, 1 << 24, "heads"),
        CLI_OPT_INT("--K", NULL, "N", &d.K, 1, 1 << 24, "key width per head"),
        CLI_OPT_INT("--V", NULL, "N", &d.V, 1, 1 << 24, "value width per head"),
        CLI_OPT_CHOICE("--form", &form, "chunk|recurrent", "chunked parallel or token-by-token form"),
        CLI_OPT_FLAG("--backward", NULL, &o.backward, "time forward + backward"),
        CLI_OPT_INT("--repeat", NULL, "R", &repeat, 1, 100000, "timed runs (the median is reported)"),
        CLI_OPT_INT("--chunk", NULL, "C", &o.chunk, 1, 1024, "chunk length (0: the op's own)"),
        CLI_OPT_INT("--window", NULL, "W", &o.window, 1, 1 << 24, "sliding window (ops with --window; 0: none)"),
        CLI_OPT_FLAG("--normalize", NULL, &normalize, "op flag (see 'lina ops')"),
        CLI_OPT_FLAG("--qk-l2norm", NULL, &qk_l2norm, "op flag (see 'lina ops')"),
        CLI_OPT_FLAG("--non-causal", NULL, &non_causal, "op flag (see 'lina ops')"),
        CLI_OPT_FLAG("--delta-softplus", NULL, &delta_softplus, "op flag (see 'lina ops')"),
        CLI_HEADING("model (lina bench --model CONFIG):"),
        CLI_OPT_STR("--model", NULL, "CONFIG", &mb.config, "config.json of the model (random weights, seed 1)"),
        CLI_OPT_INT("--seq-len", NULL, "T", &mb.seq_len, 1, 1 << 24, "tokens per sequence (training, prefill)"),
        CLI_OPT_INT("--batch", NULL, "B", &mb.batch, 1, 1 << 16, "sequences per step"),
        CLI_OPT_INT("--steps", NULL, "N", &mb.steps, 1, 1 << 20, "timed training steps and prefill passes"),
        CLI_OPT_INT("--context", NULL, "N", &mb.context, 0, 1 << 24, "tokens fed before the decode steps are timed"),
        CLI_OPT_INT("--decode-steps", NULL, "N", &mb.decode_steps, 1, 1 << 20, "single-token decode steps timed"),
        CLI_OPT_CHOICE("--only", &mb.only, "all|train|prefill|decode", "measure only this"),
        CLI_OPT_DBL("--lr", NULL, "X", &mb.lr, 0.0, 10.0, "AdamW learning rate of the training steps"),
        CLI_OPT_DBL("--beta2", NULL, "X", &mb.beta2, 0.0, 0.999999, "AdamW beta2"),
        CLI_OPT_DBL("--clip", NULL, "X", &mb.clip, 0.0, 1e9, "global gradient-norm clipping (0: none)"),
        CLI_OPT_FLAG("--roofline", NULL, &mb.roofline,
                     "also measure SGEMM and the streaming-read bandwidth; rates against them"),
        CLI_HEADING("both:"),
        CLI_OPT_INT("--threads", "-t", "N", &threads, 1, 1024, "threads (0: lina's default)"),
        CLI_OPT_FLAG("--json", NULL, &json, "one JSON object on stdout instead of the text"),
        CLI_OPT_END,
    };
    cli_cmd c = {.name = "bench",
                 .usage = "bench OP [kernel options] | bench --model CONFIG [model options]",
                 .about = "  lina bench OP: the median time of the kernel, its tokens/s and GFLOP/s (forward FLOP\n"
                          "  count), next to OpenBLAS SGEMM (n=1024) measured in the same process.\n"
                          "  lina bench --model CONFIG: tokens/s of training (forward + backward + AdamW), prefill\n"
                          "  (chunk form) and decode (recurrent form, one token per step) of the whole model.\n",
                 .opts = opts,
                 .max_pos = 1};
    int r = cli_parse(&c, argc - 1, argv + 1);
    if (r != CLI_RUN) {
        return r;
    }
    if (mb.config) {
        if (c.npos) {
            return cli_fail(&c, "give either an op name or --model CONFIG, not both");
        }
        for (cli_opt *p = opts + 1; p->kind != CLI_SECTION; p++) {
            if (p->seen) {
                return cli_fail(&c, "%s applies to lina bench OP, not to --model", p->name);
            }
        }
        mb.threads = threads;
        mb.json = json;
        return lina_model_bench_run(&mb);
    }
    const lina_op_info *op = cli_op_select(&c, &r);
    if (!op) {
        return r;
    }
    for (cli_opt *p = cli_find(&c, "--model"); p->kind != CLI_SECTION; p++) {
        if (p->seen) {
            return cli_fail(&c, "%s applies to lina bench --model only", p->name);
        }
    }
    o.normalize = normalize;
    o.qk_l2norm = qk_l2norm;
    o.non_causal = non_causal;
    o.delta_softplus = delta_softplus;
    o.form = form == 0 ? LINA_FORM_CHUNK : LINA_FORM_RECURRENT;
    cli_set_threads(threads);
    return bench_op(op, &d, &o, repeat, json);
}
