/* model_bench.c -- `lina bench --model CONFIG`: training, prefill and decode
 * throughput of a whole model with random weights (see model_bench.h). */
#include "model_bench.h"

#include "lina.h"

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
    double train_tps = NAN, train_ms = NAN, prefill_tps = NAN, decode_tps = NAN, decode_ms = NAN;
    size_t nbt = (size_t)B * T;
    int32_t *tok = NULL, *tgt = NULL;
    float *logits = NULL;
    lina_ws ws;
    lina_ws_init(&ws);
    lina_adamw opt;
    memset(&opt, 0, sizeof(opt));
    lina_model_state *st = NULL;
    double *times = malloc((size_t)(steps > dsteps ? steps : dsteps) * sizeof(*times));
    if (!times) {
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
            double loss, t0 = lina_now();
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
            }
        }
        train_ms = 1e3 * mb_median(times, steps);
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
            double t0;
            mb_tokens(dt, (size_t)B, vocab, &seed);
            t0 = lina_now();
            if (lina_model_decode(m, st, dt, B, 1, logits, &ws) != 0) {
                free(dt);
                mb_fail("decode");
                goto done;
            }
            if (s > 0) {
                times[s - 1] = lina_now() - t0;
            }
        }
        free(dt);
        double med = mb_median(times, dsteps);
        decode_tps = (double)B / med;
        decode_ms = 1e3 * med;
    }

    double rss = mb_status_mib("VmRSS"), hwm = mb_status_mib("VmHWM");
    if (json) {
        char a[48], b[48], c[48], d[48], e[48], f[48], g[48];
        mb_num(a, sizeof(a), train_tps, "%.1f");
        mb_num(g, sizeof(g), train_ms, "%.3f");
        mb_num(b, sizeof(b), prefill_tps, "%.1f");
        mb_num(c, sizeof(c), decode_tps, "%.1f");
        mb_num(d, sizeof(d), decode_ms, "%.4f");
        mb_num(e, sizeof(e), rss, "%.1f");
        mb_num(f, sizeof(f), hwm, "%.1f");
        printf("{\"model_type\": \"%s\", \"params\": %zu, \"seq_len\": %d, \"batch\": %d, \"threads\": %d, "
               "\"train_tokens_per_s\": %s, \"train_ms_per_step\": %s, \"prefill_tokens_per_s\": %s, \"decode_tokens_per_s\": %s, "
               "\"context\": %d, \"decode_ms_per_token\": %s, \"rss_mb\": %s, \"peak_rss_mb\": %s}\n",
               lina_model_type_name(cfg.model_type), np, T, B, lina_get_threads(), a, g, b, c, context, d, e, f);
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
    }
    rc = 0;
done:
    lina_model_state_free(st);
    lina_adamw_free(&opt);
    free(logits);
    free(tok);
    free(tgt);
    free(times);
    lina_ws_free(&ws);
    lina_model_free(m);
    return rc;
}
