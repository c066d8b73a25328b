/* model_bench.c -- `lina bench --model CONFIG`: training, prefill and decode
 * throughput of a whole model with random weights (see model_bench.h). */
#include "model_bench.h"

#include "lina.h"
#include "../kern/gemm.h"
#include "../kern/kern.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PIECE 256 /* chunk-form pieces feeding the decode context: the same piece size for
                     every context, so the resident memory during decode compares contexts */

static int mb_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* median of n step times (sorts x) */
static double mb_median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof(*x), mb_cmp);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static int mb_usage(const char *msg, const char *arg)
{
    fprintf(stderr, "lina: bench: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return 2;
}

static int mb_fail(const char *what)
{
    fprintf(stderr, "lina: bench: %s: %s\n", what, lina_last_error());
    return 1;
}

/* "VmRSS" / "VmHWM" of /proc/self/status in MiB; NAN when unavailable */
static double mb_status_mib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double v = NAN;
    size_t kl = strlen(key);
    if (!f) {
        return v;
    }
    while (fgets(line, sizeof(line), f)) {
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtod(line + kl + 1, NULL) / 1024.0; /* kB */
            break;
        }
    }
    fclose(f);
    return v;
}

static void mb_tokens(int32_t *t, size_t n, int vocab, uint64_t *seed)
{
    for (size_t i = 0; i < n; i++) {
        t[i] = (int32_t)(lina_splitmix64(seed) % (uint64_t)vocab);
    }
}

static void mb_num(char *buf, size_t n, double v, const char *fmt)
{
    if (isnan(v)) {
        snprintf(buf, n, "null");
    } else {
        snprintf(buf, n, fmt, v);
    }
}


double lina_bench_cpu_now(void)
{
    return lina_cpu_now();
}

double lina_bench_sgemm_gflops(double *cpu_gflops)
{
    const int n = 1024;
    float *A = malloc((size_t)n * n * sizeof(float)), *B = malloc((size_t)n * n * sizeof(float)),
          *C = malloc((size_t)n * n * sizeof(float));
    if (!A || !B || !C) {
        free(A);
        free(B);
        free(C);
        return 0.0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        A[i] = (float)((i * 7) % 13) * 0.1f - 0.6f;
        B[i] = (float)((i * 5) % 11) * 0.1f - 0.5f;
    }
    double best = 1e30, best_cpu = 1e30;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    for (int r = 0; r < 7; r++) {
        double t0 = lina_now(), c0 = lina_bench_cpu_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = lina_now() - t0, dc = lina_bench_cpu_now() - c0;
        best = dt < best ? dt : best;
        best_cpu = dc > 0.0 && dc < best_cpu ? dc : best_cpu;
    }
    free(A);
    free(B);
    free(C);
    if (cpu_gflops) {
        *cpu_gflops = 2.0 * n * n * (double)n / best_cpu / 1e9;
    }
    return 2.0 * n * n * (double)n / best / 1e9;
}

/* The projections of one decode step at batch B on their own: every weight
 * matrix of the model except the embedding table (the lm_head included; a
 * tied table once, as the head) as C [B, out] = X [B, in] W^T through the
 * product decode's Linear layers take (lina_sgemm_rows_nt), in parameter
 * order, so the weights stream from memory as in a step. Median seconds per
 * step over `steps` (wall; *cpu the same in CPU time), *flops per step;
 * NAN when out of memory. */
static double mb_proj_step(lina_model *m, int B, int steps, double *cpu, double *flops)
{
    const lina_config *c = lina_model_config(m);
    const float *P = lina_model_params(m);
    int nt = lina_model_num_tensors(m), maxin = 0, maxout = 0;
    for (int i = 0; i < nt; i++) {
        int nd;
        const int64_t *sh;
        lina_model_tensor(m, i, NULL, &nd, &sh, NULL, NULL);
        if (nd == 2) {
            maxout = sh[0] > maxout ? (int)sh[0] : maxout;
            maxin = sh[1] > maxin ? (int)sh[1] : maxin;
        }
    }
    float *X = calloc((size_t)B * (maxin > 0 ? maxin : 1), sizeof(float));
    float *C = malloc((size_t)B * (maxout > 0 ? maxout : 1) * sizeof(float));
    double *t = malloc((size_t)(steps + 1) * 2 * sizeof(double));
    if (!X || !C || !t) {
        free(X);
        free(C);
        free(t);
        return NAN;
    }
    for (size_t i = 0; i < (size_t)B * maxin; i++) {
        X[i] = (float)(i % 7) * 0.1f - 0.3f;
    }
    *flops = 0.0;
    for (int s = 0; s <= steps; s++) { /* step 0: warm-up */
        double t0 = lina_now(), c0 = lina_bench_cpu_now();
        for (int i = 0; i < nt; i++) {
            const char *name;
            int nd;
            const int64_t *sh;
            size_t off;
            lina_model_tensor(m, i, &name, &nd, &sh, &off, NULL);
            if (nd != 2 || (strstr(name, "embed") && !c->tie_word_embeddings)) {
                continue;
            }
            lina_sgemm_rows_nt(B, (int)sh[0], (int)sh[1], 1.0f, X, (int)sh[1], P + off, (int)sh[1], 0.0f, C,
                               (int)sh[0]);
            if (s == 0) {
                *flops += 2.0 * B * (double)sh[0] * (double)sh[1];
            }
        }
        if (s > 0) {
            t[s - 1] = lina_now() - t0;
            t[steps + s - 1] = lina_bench_cpu_now() - c0;
        }
    }
    double wall = mb_median(t, steps);
    *cpu = mb_median(t + steps, steps);
    free(X);
    free(C);
    free(t);
    return wall;
}

double lina_bench_read_gbs(size_t bytes, double *cpu_gbs)
{
    size_t n = bytes / sizeof(float);
    float *x = n ? aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63) : NULL;
    if (cpu_gbs) {
        *cpu_gbs = NAN;
    }
    if (!x) {
        return 0.0;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) { /* first touch by the thread that reads it */
        x[i] = (float)(i & 7);
    }
    double best = 1e30, best_cpu = 1e30, sink = 0.0;
    for (int r = 0; r < 6; r++) {
        double t0 = lina_now(), c0 = lina_bench_cpu_now(), sum = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
        for (size_t b = 0; b < n; b += 4096) {
            size_t e = b + 4096 < n ? b + 4096 : n;
            float acc[16] = {0};
            for (size_t i = b; i + 16 <= e; i += 16) {
#pragma omp simd
                for (int l = 0; l < 16; l++) {
                    acc[l] += x[i + l];
                }
            }
            for (int l = 0; l < 16; l++) {
                sum += acc[l];
            }
        }
        double dt = lina_now() - t0, dc = lina_bench_cpu_now() - c0;
        sink += sum;
        best = r > 0 && dt < best ? dt : best; /* run 0: warm-up */
        best_cpu = r > 0 && dc > 0.0 && dc < best_cpu ? dc : best_cpu;
    }
    if (cpu_gbs) { /* per second of the process's CPU time: the rate of one thread at work */
        *cpu_gbs = best_cpu < 1e30 ? (double)(n / 16 * 16) * sizeof(float) / best_cpu / 1e9 : NAN;
    }
    free(x);
    return sink == -1.0 ? 0.0 : (double)(n / 16 * 16) * sizeof(float) / best / 1e9;
}

void lina_model_bench_opts_default(lina_model_bench_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seq_len = 512;
    o->batch = 1;
    o->steps = 3;
    o->context = 64;
    o->decode_steps = 32;
    o->only = LINA_MB_ALL;
    o->lr = 1e-4;
    o->beta2 = 0.95;
}

int lina_model_bench_run(const lina_model_bench_opts *o)
{
    const char *cfg_path = o->config;
    const int T = o->seq_len, B = o->batch, threads = o->threads, steps = o->steps, context = o->context,
              dsteps = o->decode_steps, only = o->only, json = o->json;
    if (!cfg_path) {
        return mb_usage("--model CONFIG is required", NULL);
    }
    if ((double)B * T > 1e8 || (double)B * (context + dsteps) > 1e8) {
        return mb_usage("batch x tokens too large", NULL);
    }
    if (threads > 0) {
        lina_set_threads(threads);
    }

    lina_config cfg;
    if (lina_config_read(cfg_path, &cfg) != 0) {
        return mb_fail("config");
    }
    lina_model *m = NULL;
    if (lina_model_create(&cfg, 1, &m) != 0) {
        return mb_fail("model");
    }
    const int vocab = cfg.vocab_size;
    const size_t np = lina_model_num_params(m);
    uint64_t seed = 12345;
    int rc = 1;
    double train_tps = NAN, train_ms = NAN, train_cpu_ms = NAN, prefill_tps = NAN, decode_tps = NAN, decode_ms = NAN,
           decode_cpu_ms = NAN;
    size_t nbt = (size_t)B * T;
    int32_t *tok = NULL, *tgt = NULL;
    float *logits = NULL;
    lina_ws ws;
    lina_ws_init(&ws);
    lina_adamw opt;
    memset(&opt, 0, sizeof(opt));
    lina_model_state *st = NULL;
    double *times = malloc((size_t)(steps > dsteps ? steps : dsteps) * sizeof(*times));
    double *cpu_times = malloc((size_t)(steps > dsteps ? steps : dsteps) * sizeof(*cpu_times));
    if (!times || !cpu_times) {
        fprintf(stderr, "lina: bench: out of memory\n");
        goto done;
    }

    if (only == LINA_MB_ALL || only == LINA_MB_TRAIN || only == LINA_MB_PREFILL) {
        tok = malloc(nbt * sizeof(*tok));
        tgt = malloc(nbt * sizeof(*tgt));
        if (!tok || !tgt) {
            fprintf(stderr, "lina: bench: out of memory\n");
            goto done;
        }
        mb_tokens(tok, nbt, vocab, &seed);
        mb_tokens(tgt, nbt, vocab, &seed);
    }

    if (only == LINA_MB_ALL || only == LINA_MB_TRAIN) {
        if (lina_adamw_init(&opt, np) != 0) {
            mb_fail("adamw");
            goto done;
        }
        opt.beta2 = o->beta2;
        for (int i = 0; i < lina_model_num_tensors(m); i++) {
            const int64_t *shape;
            int ndim, decay;
            size_t off, n = 1;
            lina_model_tensor(m, i, NULL, &ndim, &shape, &off, &decay);
            for (int d = 0; d < ndim; d++) {
                n *= (size_t)shape[d];
            }
            lina_adamw_set_decay(&opt, off, n, decay);
        }
        for (int s = 0; s <= steps; s++) { /* step 0: warm-up (workspace growth, page faults) */
            double loss, t0 = lina_now(), c0 = lina_bench_cpu_now();
            lina_model_zero_grad(m);
            if (lina_model_train_step(m, tok, tgt, B, T, &loss, &ws) != 0) {
                mb_fail("train step");
                goto done;
            }
            /* clip > 0: the global gradient norm and clipping factor, as lina task / lina train */
            double scale =
                o->clip > 0.0 ? lina_clip_factor(lina_grad_norm(lina_model_grads(m), np), o->clip) : 1.0;
            if (lina_adamw_step(&opt, lina_model_params(m), lina_model_grads(m), o->lr, scale) != 0) {
                mb_fail("adamw step");
                goto done;
            }
            if (s > 0) {
                times[s - 1] = lina_now() - t0;
                cpu_times[s - 1] = lina_bench_cpu_now() - c0;
            }
        }
        train_ms = 1e3 * mb_median(times, steps);
        train_cpu_ms = 1e3 * mb_median(cpu_times, steps);
        train_tps = (double)nbt / (1e-3 * train_ms);
        lina_adamw_free(&opt);
    }

    if (only == LINA_MB_ALL || only == LINA_MB_PREFILL) {
        logits = malloc(nbt * (size_t)vocab * sizeof(*logits));
        if (!logits) {
            fprintf(stderr, "lina: bench: out of memory for the logits\n");
            goto done;
        }
        for (int s = 0; s <= steps; s++) {
            double t0 = lina_now();
            if (lina_model_forward_logits(m, tok, B, T, logits, &ws) != 0) {
                mb_fail("prefill");
                goto done;
            }
            if (s > 0) {
                times[s - 1] = lina_now() - t0;
            }
        }
        prefill_tps = (double)nbt / mb_median(times, steps);
        free(logits);
        logits = NULL;
    }

    if (only == LINA_MB_ALL || only == LINA_MB_DECODE) {
        int piece = context < PIECE ? (context > 0 ? context : 1) : PIECE;
        int32_t *dt = malloc((size_t)B * piece * sizeof(*dt));
        logits = malloc((size_t)B * piece * vocab * sizeof(*logits));
        if (!dt || !logits) {
            free(dt);
            fprintf(stderr, "lina: bench: out of memory\n");
            goto done;
        }
        if (lina_model_state_create(m, B, context + dsteps + 1, &st) != 0) {
            free(dt);
            mb_fail("decode state");
            goto done;
        }
        for (int done_tok = 0; done_tok < context; done_tok += piece) {
            int n = context - done_tok < piece ? context - done_tok : piece;
            mb_tokens(dt, (size_t)B * n, vocab, &seed);
            if (lina_model_decode(m, st, dt, B, n, logits, &ws) != 0) {
                free(dt);
                mb_fail("decode prefill");
                goto done;
            }
        }
        for (int s = 0; s <= dsteps; s++) { /* step 0: warm-up */
            double t0, c0;
            mb_tokens(dt, (size_t)B, vocab, &seed);
            t0 = lina_now();
            c0 = lina_bench_cpu_now();
            if (lina_model_decode(m, st, dt, B, 1, logits, &ws) != 0) {
                free(dt);
                mb_fail("decode");
                goto done;
            }
            if (s > 0) {
                times[s - 1] = lina_now() - t0;
                cpu_times[s - 1] = lina_bench_cpu_now() - c0;
            }
        }
        free(dt);
        double med = mb_median(times, dsteps);
        decode_tps = (double)B / med;
        decode_ms = 1e3 * med;
        decode_cpu_ms = 1e3 * mb_median(cpu_times, dsteps);
    }

    double rss = mb_status_mib("VmRSS"), hwm = mb_status_mib("VmHWM");
    /* the machine's ceilings measured in this process: SGEMM for training and batch decode,
     * the streaming-read bandwidth for B=1 decode (every weight outside the embedding table is
     * read once per step; the table gives one row) */
    double sgemm = NAN, sgemm_cpu = NAN, train_frac_cpu = NAN, read_gbs = NAN, train_frac = NAN,
           decode_bw_frac = NAN, decode_gflops = NAN,
           decode_frac = NAN, proj_frac = NAN, proj_frac_cpu = NAN, proj_gflops = NAN, proj_roof = NAN,
           read_cpu = NAN, read_ws = NAN, read_ws_cpu = NAN, decode_bw_cpu = NAN, decode_ws_bw_cpu = NAN,
           proj_roof_cpu = NAN;
    const double dense = (double)np - (double)vocab * cfg.hidden_size +
                         (cfg.tie_word_embeddings ? (double)vocab * cfg.hidden_size : 0.0);
    if (o->roofline) {
        sgemm = lina_bench_sgemm_gflops(&sgemm_cpu);
        read_gbs = lina_bench_read_gbs((size_t)1 << 29, &read_cpu);
        /* the same over a buffer of the decode step's weight bytes: what the step can get
         * when they stay in the last-level cache in part (29 MB for the 10M models) */
        read_ws = lina_bench_read_gbs((size_t)(4.0 * dense), &read_ws_cpu);
        if (!isnan(train_tps) && sgemm > 0.0) {
            train_frac = 6.0 * ((double)np - (double)vocab * cfg.hidden_size) * train_tps / 1e9 / sgemm;
            /* the same in CPU time (train step and SGEMM): comparable on a shared machine */
            train_frac_cpu = 6.0 * ((double)np - (double)vocab * cfg.hidden_size) * (double)nbt /
                             (1e-3 * train_cpu_ms) / 1e9 / sgemm_cpu;
        }
        if (!isnan(decode_ms)) {
            double pcpu = NAN, pflops = 0.0, pwall = mb_proj_step(m, B, dsteps, &pcpu, &pflops);
            proj_gflops = pflops / pwall / 1e9;
            proj_frac = sgemm > 0.0 ? proj_gflops / sgemm : NAN;
            proj_frac_cpu = sgemm_cpu > 0.0 && pcpu > 0.0 ? pflops / pcpu / 1e9 / sgemm_cpu : NAN;
            /* the ceiling at batch B: SGEMM, or 2B flops per 4-byte weight read at the streaming rate */
            double ceil = B * 0.5 * read_gbs < sgemm ? B * 0.5 * read_gbs : sgemm;
            proj_roof = ceil > 0.0 ? proj_gflops / ceil : NAN;
            /* the same by CPU time (projections, SGEMM and the streaming read) */
            double ceil_cpu = B * 0.5 * read_cpu < sgemm_cpu ? B * 0.5 * read_cpu : sgemm_cpu;
            proj_roof_cpu = ceil_cpu > 0.0 && pcpu > 0.0 ? pflops / pcpu / 1e9 / ceil_cpu : NAN;
            decode_gflops = 2.0 * dense * B / (1e-3 * decode_ms) / 1e9;
            decode_frac = sgemm > 0.0 ? decode_gflops / sgemm : NAN;
            decode_bw_frac = read_gbs > 0.0 ? 4.0 * dense / (read_gbs * 1e9) / (1e-3 * decode_ms) : NAN;
            /* by CPU time: the step's weight bytes per CPU second over the read's */
            decode_bw_cpu = read_cpu > 0.0 ? 4.0 * dense / (read_cpu * 1e9) / (1e-3 * decode_cpu_ms) : NAN;
            decode_ws_bw_cpu = read_ws_cpu > 0.0 ? 4.0 * dense / (read_ws_cpu * 1e9) / (1e-3 * decode_cpu_ms) : NAN;
        }
    }
    if (json) {
        char a[48], b[48], c[48], d[48], e[48], f[48], g[48];
        mb_num(a, sizeof(a), train_tps, "%.1f");
        mb_num(g, sizeof(g), train_ms, "%.3f");
        char h[48];
        mb_num(h, sizeof(h), train_cpu_ms, "%.3f");
        mb_num(b, sizeof(b), prefill_tps, "%.1f");
        mb_num(c, sizeof(c), decode_tps, "%.1f");
        mb_num(d, sizeof(d), decode_ms, "%.4f");
        char dc[48];
        mb_num(dc, sizeof(dc), decode_cpu_ms, "%.4f");
        mb_num(e, sizeof(e), rss, "%.1f");
        mb_num(f, sizeof(f), hwm, "%.1f");
        char roof[1536] = "";
        if (o->roofline) {
            char r[18][48];
            mb_num(r[12], sizeof(r[12]), read_cpu, "%.2f");
            mb_num(r[13], sizeof(r[13]), read_ws, "%.2f");
            mb_num(r[14], sizeof(r[14]), read_ws_cpu, "%.2f");
            mb_num(r[15], sizeof(r[15]), decode_bw_cpu, "%.4f");
            mb_num(r[16], sizeof(r[16]), decode_ws_bw_cpu, "%.4f");
            mb_num(r[17], sizeof(r[17]), proj_roof_cpu, "%.4f");
            mb_num(r[11], sizeof(r[11]), proj_roof, "%.4f");
            mb_num(r[8], sizeof(r[8]), proj_gflops, "%.3f");
            mb_num(r[9], sizeof(r[9]), proj_frac, "%.4f");
            mb_num(r[10], sizeof(r[10]), proj_frac_cpu, "%.4f");
            mb_num(r[6], sizeof(r[6]), sgemm_cpu, "%.2f");
            mb_num(r[7], sizeof(r[7]), train_frac_cpu, "%.4f");
            mb_num(r[0], sizeof(r[0]), sgemm, "%.2f");
            mb_num(r[1], sizeof(r[1]), read_gbs, "%.2f");
            mb_num(r[2], sizeof(r[2]), train_frac, "%.4f");
            mb_num(r[3], sizeof(r[3]), decode_gflops, "%.3f");
            mb_num(r[4], sizeof(r[4]), decode_frac, "%.4f");
            mb_num(r[5], sizeof(r[5]), decode_bw_frac, "%.4f");
            snprintf(roof, sizeof(roof),
                     ", \"sgemm_gflops\": %s, \"read_gbs\": %s, \"train_sgemm_frac\": %s, \"decode_gflops\": %s, "
                     "\"decode_sgemm_frac\": %s, \"decode_bw_frac\": %s, \"decode_weight_mb\": %.2f, "
                     "\"sgemm_cpu_gflops\": %s, \"train_sgemm_frac_cpu\": %s, \"decode_proj_gflops\": %s, "
                     "\"decode_proj_sgemm_frac\": %s, \"decode_proj_sgemm_frac_cpu\": %s, \"decode_proj_roof_frac\": %s, "
                     "\"read_cpu_gbs\": %s, \"read_ws_gbs\": %s, \"read_ws_cpu_gbs\": %s, \"decode_bw_frac_cpu\": %s, "
                     "\"decode_ws_bw_frac_cpu\": %s, \"decode_proj_roof_frac_cpu\": %s",
                     r[0], r[1], r[2], r[3], r[4], r[5], 4.0 * dense / 1e6, r[6], r[7], r[8], r[9], r[10], r[11],
                     r[12], r[13], r[14], r[15], r[16], r[17]);
        }
        printf("{\"model_type\": \"%s\", \"params\": %zu, \"seq_len\": %d, \"batch\": %d, \"threads\": %d, "
               "\"train_tokens_per_s\": %s, \"train_ms_per_step\": %s, \"train_cpu_ms_per_step\": %s, \"prefill_tokens_per_s\": %s, \"decode_tokens_per_s\": %s, "
               "\"context\": %d, \"decode_ms_per_token\": %s, \"decode_cpu_ms_per_step\": %s, \"rss_mb\": %s, "
               "\"peak_rss_mb\": %s%s}\n",
               lina_model_type_name(cfg.model_type), np, T, B, lina_get_threads(), a, g, h, b, c, context, d, dc, e,
               f, roof);
    } else {
        printf("model      %s (%s), %zu parameters, %d threads\n", cfg_path, lina_model_type_name(cfg.model_type),
               np, lina_get_threads());
        if (!isnan(train_tps)) {
            printf("train      %10.1f tokens/s   (B %d x T %d, forward + backward + AdamW, %d steps)\n", train_tps,
                   B, T, steps);
        }
        if (!isnan(prefill_tps)) {
            printf("prefill    %10.1f tokens/s   (B %d x T %d, chunk form, logits)\n", prefill_tps, B, T);
        }
        if (!isnan(decode_tps)) {
            printf("decode     %10.1f tokens/s   %.3f ms/step (B %d, after a context of %d, %d steps)\n",
                   decode_tps, decode_ms, B, context, dsteps);
        }
        printf("memory     %.1f MiB resident, %.1f MiB peak\n", rss, hwm);
        if (o->roofline) {
            printf("ceilings   SGEMM 1024^3 %.1f GFLOP/s (%.1f per CPU second), streaming read %.1f GB/s (%.1f per "
                   "CPU second; %.1f and %.1f over %.1f MB, the decode weights' size)\n",
                   sgemm, sgemm_cpu, read_gbs, read_cpu, read_ws, read_ws_cpu, 4.0 * dense / 1e6);
            if (!isnan(train_frac)) {
                printf("train      %.1f%% of SGEMM (6 x non-embedding parameters x tokens/s)\n", 100.0 * train_frac);
            }
            if (!isnan(decode_ms)) {
                printf("decode     %.2f GFLOP/s (%.1f%% of SGEMM); B=1 bound %.3f ms for %.1f MB of weights: "
                       "%.1f%% of the bandwidth bound\n",
                       decode_gflops, 100.0 * decode_frac, 4.0 * dense / (read_gbs * 1e9) * 1e3, 4.0 * dense / 1e6,
                       100.0 * decode_bw_frac);
                printf("decode     by CPU time: %.3f ms per step, %.1f%% of the bandwidth bound (%.1f%% of the "
                       "weight-sized read's)\n",
                       decode_cpu_ms, 100.0 * decode_bw_cpu, 100.0 * decode_ws_bw_cpu);
                printf("projections %.2f GFLOP/s at B %d (%.1f%% of SGEMM; CPU time %.1f%%; %.1f%% of min(SGEMM, "
                       "B/2 flops per byte x streaming read), %.1f%% by CPU time): the weight matrices alone, each "
                       "its own product\n",
                       proj_gflops, B, 100.0 * proj_frac, 100.0 * proj_frac_cpu, 100.0 * proj_roof,
                       100.0 * proj_roof_cpu);
            }
        }
    }
    rc = 0;
done:
    lina_model_state_free(st);
    lina_adamw_free(&opt);
    free(logits);
    free(tok);
    free(tgt);
    free(times);
    free(cpu_times);
    lina_ws_free(&ws);
    lina_model_free(m);
    return rc;
}
