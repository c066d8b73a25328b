/* lina.c -- the command-line tool: a thin dispatcher over liblina.
 *
 *   lina op NAME --in DIR --out DIR --form chunk|recurrent [--backward] [op flags]
 *   lina bench OP [--B n --T n --H n --K n --V n --form f --backward --threads n
 *                  --repeat r --chunk c] [--json]
 *   lina bench --model CONFIG [--seq-len T --batch B --threads N --context N] [--json]
 *   lina train [--config FILE] [--data FILE] [--out DIR] [--val FILE] [--steps N ...] [--resume]
 *   lina generate --model DIR --prompt TEXT [...];  lina eval --model DIR --data FILE [...]
 *   lina plot --log RUN/log.jsonl --out PNG
 *   lina task mqar|parity|modarith|s3|s5|icl-regression [...];  lina paper [...]
 *   lina data pack --vocab V --in FILE --out FILE | lina data info FILE
 *   lina tokenizer train|encode|decode ...   (byte-level BPE, HF tokenizer.json)
 *   lina ops        list the ops
 *   lina version
 */
#include "lina.h"
#include "../src/io/io_internal.h" /* lina_afile_*: atomic file output */
#include "../src/io/plot.h"        /* lina_plot_main: lina plot */
#include "../src/tasks/tasks.h"    /* lina_task_main, lina_paper_main: lina task, lina paper */
#include "../src/train/model_bench.h" /* lina bench --model */

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

void openblas_set_num_threads(int);

static int die(const char *fmt, const char *a)
{
    fprintf(stderr, "lina: ");
    fprintf(stderr, fmt, a);
    fprintf(stderr, "\n");
    return 2;
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "lina: %s needs an integer in [%d, %d], got '%s'\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int op_accepts(const lina_op_info *op, const char *flag)
{
    for (int i = 0; i < 4 && op->flags[i]; i++) {
        if (strcmp(op->flags[i], flag) == 0) {
            return 1;
        }
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lina <command> [options]\n"
            "  op NAME --in DIR --out DIR --form chunk|recurrent [--backward] [op flags]\n"
            "      run one token mixer on .npy inputs (see README: the lina op contract)\n"
            "  bench OP [--B n] [--T n] [--H n] [--K n] [--V n] [--form chunk|recurrent]\n"
            "      [--backward] [--threads n] [--repeat r] [--chunk c] [--json]\n"
            "      time one mixer kernel and OpenBLAS SGEMM (n=1024) in the same process\n"
            "  bench --model CONFIG [--seq-len T] [--batch B] [--threads N] [--steps N] [--context N]\n"
            "      [--decode-steps N] [--only train|prefill|decode] [--json]   model train/prefill/decode tokens/s\n"
            "  train --config FILE --data FILE --out DIR [--val FILE] [--steps N] [--batch B]\n"
            "      [--seq-len T] [--lr X] [--threads N] [--seed S] [--resume] ... (lina train --help)\n"
            "      train a model on a token file with AdamW; checkpoints in DIR/checkpoint\n"
            "  data pack --vocab V --in FILE|- --out FILE [--format text|u16|u32]   make a token file\n"
            "  data info FILE   print a token file's header\n"
            "  tokenizer train|encode|decode ...   byte-level BPE, HF tokenizer.json (lina tokenizer --help)\n"
            "  generate --model DIR --prompt TEXT [--tokenizer FILE] [--max-tokens N]\n"
            "      [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]\n"
            "      stream text from a checkpoint (chunk prefill, recurrent decode)\n"
            "  eval --model DIR --data FILE [--seq-len T] [--batch B] [--max-tokens N] [--json]\n"
            "      mean next-token loss and perplexity of a checkpoint on a token file\n"
            "  plot --log RUN/log.jsonl --out loss.png [--title T]\n"
            "      plot train and validation loss against step (PNG)\n"
            "  task mqar|parity|modarith|s3|s5|icl-regression [--mixer M] [--d-model D] [--layers L]\n"
            "      [--heads H] [--steps N] [--lr X] [--batch B] [--seed S] [--threads N] [--json] ...\n"
            "      train and score a model on a synthetic task (lina task --help)\n"
            "  paper [--out DIR] [--threads N] [--only LIST] [--quick] [--assemble]\n"
            "      the reduced reproduction of the papers' task findings: DIR/PAPER.md and plots\n"
            "  ops       list the ops and their flags\n"
            "  version   print the version\n");
}

/* ------------------------------------------------------------------ op */

static int load_dir(const char *dir, lina_tset *in)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "lina: cannot open input directory '%s' (%s)\n", dir, strerror(errno));
        return 2;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".npy") != 0) {
            continue;
        }
        if (n - 4 >= sizeof in->names[0]) {
            continue; /* not a name any op uses */
        }
        char name[16];
        memcpy(name, e->d_name, n - 4);
        name[n - 4] = '\0';
        size_t plen = strlen(dir) + n + 2;
        char *path = malloc(plen);
        if (!path) {
            rc = 2;
            break;
        }
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        lina_tensor t;
        if (lina_npy_read(path, &t) != 0) {
            fprintf(stderr, "lina: %s\n", lina_last_error());
            free(path);
            rc = 2;
            break;
        }
        free(path);
        if (lina_tset_add(in, name, &t) != 0) {
            fprintf(stderr, "lina: %s\n", lina_last_error());
            lina_tensor_free(&t);
            rc = 2;
            break;
        }
    }
    closedir(d);
    return rc;
}

static int cmd_op(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        return die("op: missing op name (try 'lina ops')%s", "");
    }
    const lina_op_info *op = lina_op_find(argv[0]);
    if (!op) {
        return die("unknown op '%s' (try 'lina ops')", argv[0]);
    }
    const char *din = NULL, *dout = NULL, *form = NULL;
    lina_op_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--in") || !strcmp(a, "--out") || !strcmp(a, "--form") ||
            !strcmp(a, "--window") || !strcmp(a, "--chunk")) {
            if (!val) {
                return die("option %s needs a value", a);
            }
            i++;
        }
        if (!strcmp(a, "--in")) {
            din = val;
        } else if (!strcmp(a, "--out")) {
            dout = val;
        } else if (!strcmp(a, "--form")) {
            form = val;
        } else if (!strcmp(a, "--chunk")) {
            if (parse_int("--chunk", val, 1, 1024, &o.chunk)) {
                return 2;
            }
        } else if (!strcmp(a, "--backward")) {
            o.backward = 1;
        } else if (!strcmp(a, "--normalize") || !strcmp(a, "--qk-l2norm") ||
                   !strcmp(a, "--non-causal") || !strcmp(a, "--window")) {
            if (!op_accepts(op, a)) {
                fprintf(stderr, "lina: option %s does not apply to op '%s'\n", a, op->name);
                return 2;
            }
            if (!strcmp(a, "--normalize")) {
                o.normalize = 1;
            } else if (!strcmp(a, "--qk-l2norm")) {
                o.qk_l2norm = 1;
            } else if (!strcmp(a, "--non-causal")) {
                o.non_causal = 1;
            } else if (parse_int("--window", val, 1, 1 << 30, &o.window)) {
                return 2;
            }
        } else {
            return die("unknown option '%s'", a);
        }
    }
    if (!din) {
        return die("op: --in DIR is required%s", "");
    }
    if (!dout) {
        return die("op: --out DIR is required%s", "");
    }
    if (!form) {
        return die("op: --form chunk|recurrent is required%s", "");
    }
    if (!strcmp(form, "chunk")) {
        o.form = LINA_FORM_CHUNK;
    } else if (!strcmp(form, "recurrent")) {
        o.form = LINA_FORM_RECURRENT;
    } else {
        return die("unknown form '%s' (chunk or recurrent)", form);
    }
    struct stat st;
    if (stat(dout, &st) != 0 || !S_ISDIR(st.st_mode)) {
        return die("output directory '%s' does not exist", dout);
    }
    lina_tset in = {0}, out = {0};
    int rc = load_dir(din, &in);
    if (rc == 0 && lina_op_run(op, &in, &out, &o, NULL) != 0) {
        fprintf(stderr, "lina: %s: %s\n", op->name, lina_last_error());
        rc = 1;
    }
    for (int i = 0; rc == 0 && i < out.n; i++) {
        if (out.names[i][0] == '_') {
            continue; /* scratch kept between calls, not an output */
        }
        size_t plen = strlen(dout) + strlen(out.names[i]) + 8;
        char *path = malloc(plen);
        if (!path) {
            rc = 1;
            break;
        }
        snprintf(path, plen, "%s/%s.npy", dout, out.names[i]);
        if (lina_npy_write(path, &out.t[i]) != 0) {
            fprintf(stderr, "lina: %s\n", lina_last_error());
            rc = 1;
        }
        free(path);
    }
    lina_tset_free(&in);
    lina_tset_free(&out);
    return rc;
}

/* --------------------------------------------------------------- bench */

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

/* GFLOP/s of a 1024^3 SGEMM: the best of 7 runs after a warm-up (the rate
 * the machine can reach; kernel ratios against it are conservative) */
static double sgemm_gflops(void)
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
    double best = 1e30;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
    for (int r = 0; r < 7; r++) {
        double t0 = lina_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = lina_now() - t0;
        best = dt < best ? dt : best;
    }
    free(A);
    free(B);
    free(C);
    return 2.0 * n * n * (double)n / best / 1e9;
}

static int cmd_bench(int argc, char **argv)
{
    if (argc < 1 || argv[0][0] == '-') {
        return die("bench: missing op name (try 'lina ops')%s", "");
    }
    const lina_op_info *op = lina_op_find(argv[0]);
    if (!op) {
        return die("unknown op '%s' (try 'lina ops')", argv[0]);
    }
    lina_mix_dims d = {1, 4096, 4, 128, 128, 0, 0.0f};
    lina_op_opts o = {0};
    o.form = LINA_FORM_CHUNK;
    int threads = 0, repeat = 5, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int *dst = NULL, lo = 1, hi = 1 << 24;
        if (!strcmp(a, "--B")) {
            dst = &d.B;
        } else if (!strcmp(a, "--T")) {
            dst = &d.T;
        } else if (!strcmp(a, "--H")) {
            dst = &d.H;
        } else if (!strcmp(a, "--K")) {
            dst = &d.K;
        } else if (!strcmp(a, "--V")) {
            dst = &d.V;
        } else if (!strcmp(a, "--threads")) {
            dst = &threads;
            hi = 1024;
        } else if (!strcmp(a, "--repeat")) {
            dst = &repeat;
            hi = 100000;
        } else if (!strcmp(a, "--chunk")) {
            dst = &o.chunk;
            hi = 1024;
        } else if (!strcmp(a, "--window")) {
            dst = &o.window;
        }
        if (dst) {
            if (parse_int(a, val, lo, hi, dst)) {
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--form")) {
            if (!val) {
                return die("option %s needs a value", a);
            }
            if (!strcmp(val, "chunk")) {
                o.form = LINA_FORM_CHUNK;
            } else if (!strcmp(val, "recurrent")) {
                o.form = LINA_FORM_RECURRENT;
            } else {
                return die("unknown form '%s' (chunk or recurrent)", val);
            }
            i++;
        } else if (!strcmp(a, "--backward")) {
            o.backward = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--normalize") && op_accepts(op, a)) {
            o.normalize = 1;
        } else if (!strcmp(a, "--qk-l2norm") && op_accepts(op, a)) {
            o.qk_l2norm = 1;
        } else if (!strcmp(a, "--non-causal") && op_accepts(op, a)) {
            o.non_causal = 1;
        } else {
            return die("unknown option '%s'", a);
        }
    }
    if (threads > 0) {
        lina_set_threads(threads);
        openblas_set_num_threads(threads);
    }
    threads = lina_get_threads();
    o.trusted = 1;
    lina_tset in = {0}, out = {0};
    if (op->make_inputs(&d, o.backward, 12345, &in) != 0) {
        fprintf(stderr, "lina: bench: %s\n", lina_last_error());
        lina_tset_free(&in);
        return 1;
    }
    double sg = sgemm_gflops();
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = lina_op_run(op, &in, &out, &o, &ws); /* warm-up */
    double *t = malloc((size_t)repeat * sizeof(double));
    for (int r = 0; rc == 0 && t && r < repeat; r++) {
        double t0 = lina_now();
        rc = lina_op_run(op, &in, &out, &o, &ws);
        t[r] = lina_now() - t0;
    }
    if (rc != 0 || !t) {
        fprintf(stderr, "lina: bench: %s\n", lina_last_error());
        free(t);
        lina_ws_free(&ws);
        lina_tset_free(&in);
        lina_tset_free(&out);
        return 1;
    }
    double ms = median(t, repeat) * 1e3;
    double fl = op->flops(&d, &o);
    double gf = fl / (ms * 1e-3) / 1e9;
    double tps = (double)d.B * d.T / (ms * 1e-3);
    const char *form = o.form == LINA_FORM_CHUNK ? "chunk" : "recurrent";
    const char *pass = o.backward ? "fwdbwd" : "fwd";
    if (json) {
        printf("{\"op\":\"%s\",\"form\":\"%s\",\"pass\":\"%s\",\"B\":%d,\"T\":%d,\"H\":%d,\"K\":%d,"
               "\"V\":%d,\"threads\":%d,\"ms\":%.4f,\"tokens_per_s\":%.1f,\"gflops\":%.3f,"
               "\"sgemm_gflops\":%.3f}\n",
               op->name, form, pass, d.B, d.T, d.H, d.K, d.V, threads, ms, tps, gf, sg);
    } else {
        printf("%s %s %s  B=%d T=%d H=%d K=%d V=%d threads=%d\n", op->name, form, pass, d.B, d.T,
               d.H, d.K, d.V, threads);
        printf("  median %.3f ms over %d runs, %.0f tokens/s, %.2f GFLOP/s (forward FLOP count)\n", ms,
               repeat, tps, gf);
        printf("  SGEMM n=1024: %.2f GFLOP/s; kernel at %.1f%% of SGEMM\n", sg, 100.0 * gf / sg);
    }
    free(t);
    lina_ws_free(&ws);
    lina_tset_free(&in);
    lina_tset_free(&out);
    return 0;
}

/* ----------------------------------------------------------- train, data */

static int parse_i64(const char *flag, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "lina: %s needs an integer in [%lld, %lld], got '%s'\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_num(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "lina: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi,
                s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* The default model of `lina train` without --config: a 4-layer GLA LM
 * (hidden 256, vocab 4096, tied embeddings; 4.29M parameters) that learns
 * English-like text from the KJV corpus of `make data` in a few minutes on
 * 2 cores. Same as configs/gla-small.json. */
static const char default_config_json[] =
    "{\"model_type\": \"gla\", \"hidden_size\": 256, \"num_hidden_layers\": 4, \"num_heads\": 4,"
    " \"vocab_size\": 4096, \"intermediate_size\": 704, \"tie_word_embeddings\": true}";

static int file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static void train_usage(FILE *f)
{
    fprintf(f,
            "usage: lina train [--config FILE] [--data FILE] [--out DIR] [--val FILE] [--tokenizer FILE]\n"
            "        [--steps N] [--batch B] [--seq-len T] [--accum N] [--lr X] [--warmup N]\n"
            "        [--min-lr-ratio X] [--wd X] [--clip X] [--eps X] [--threads N] [--seed S]\n"
            "        [--eval-every N] [--eval-batches N] [--save-every N] [--resume] [--quiet]\n"
            "  defaults: steps 100, batch 8, seq-len 256, accum 1, lr 3e-4, warmup min(100, steps/10),\n"
            "  min-lr-ratio 0.1, wd 0.1, clip 1.0, betas 0.9/0.95, eps 1e-8, seed 0, eval at the end.\n"
            "  Writes DIR/log.jsonl and DIR/checkpoint/; --resume continues DIR/checkpoint (same\n"
            "  --steps/--batch/--seq-len/--accum/--seed; --config may then be omitted).\n"
            "  --tokenizer FILE is copied into the checkpoint (default: tokenizer.json next to --data).\n"
            "  Without --config: the built-in GLA model (configs/gla-small.json) with --data\n"
            "  data/train.tok --val data/val.tok --out runs/gla-small (from `make data`), and unless\n"
            "  given --steps 600 --batch 8 --seq-len 128 --lr 2e-3 --eval-every 100.\n");
}

static int cmd_train(int argc, char **argv)
{
    lina_train_opts o;
    lina_train_opts_default(&o);
    const char *config = NULL;
    long long threads = 0;
    int given_steps = 0, given_batch = 0, given_seq = 0, given_lr = 0, given_eval = 0, given_val = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long iv = 0;
        int bad = 0;
        given_steps |= !strcmp(a, "--steps");
        given_batch |= !strcmp(a, "--batch");
        given_seq |= !strcmp(a, "--seq-len");
        given_lr |= !strcmp(a, "--lr");
        given_eval |= !strcmp(a, "--eval-every");
        given_val |= !strcmp(a, "--val");
        if (!strcmp(a, "--resume")) {
            o.resume = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o.progress = 0;
            continue;
        }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            train_usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "lina: train: %s needs a value (or is unknown)\n", a);
            train_usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--config")) {
            config = v;
        } else if (!strcmp(a, "--data")) {
            o.data_path = v;
        } else if (!strcmp(a, "--val")) {
            o.val_path = v;
        } else if (!strcmp(a, "--tokenizer")) {
            o.tokenizer_path = v;
        } else if (!strcmp(a, "--out")) {
            o.out_dir = v;
        } else if (!strcmp(a, "--steps")) {
            bad = parse_i64(a, v, 1, 1000000000LL, &iv);
            o.steps = iv;
        } else if (!strcmp(a, "--batch")) {
            bad = parse_i64(a, v, 1, 1 << 20, &iv);
            o.batch = (int)iv;
        } else if (!strcmp(a, "--seq-len")) {
            bad = parse_i64(a, v, 1, 1 << 24, &iv);
            o.seq_len = (int)iv;
        } else if (!strcmp(a, "--accum")) {
            bad = parse_i64(a, v, 1, 1 << 20, &iv);
            o.accum = (int)iv;
        } else if (!strcmp(a, "--warmup")) {
            bad = parse_i64(a, v, 0, 1000000000LL, &iv);
            o.warmup = iv;
        } else if (!strcmp(a, "--threads")) {
            bad = parse_i64(a, v, 1, 1024, &threads);
        } else if (!strcmp(a, "--seed")) {
            bad = parse_i64(a, v, 0, 0x7fffffffffffffffLL, &iv);
            o.seed = (uint64_t)iv;
        } else if (!strcmp(a, "--eval-every")) {
            bad = parse_i64(a, v, 0, 1000000000LL, &iv);
            o.eval_every = (int)iv;
        } else if (!strcmp(a, "--eval-batches")) {
            bad = parse_i64(a, v, 1, 1000000, &iv);
            o.eval_batches = (int)iv;
        } else if (!strcmp(a, "--save-every")) {
            bad = parse_i64(a, v, 0, 1000000000LL, &iv);
            o.save_every = (int)iv;
        } else if (!strcmp(a, "--lr")) {
            bad = parse_num(a, v, 1e-12, 1e3, &o.lr);
        } else if (!strcmp(a, "--min-lr-ratio")) {
            bad = parse_num(a, v, 0.0, 1.0, &o.min_lr_ratio);
        } else if (!strcmp(a, "--wd")) {
            bad = parse_num(a, v, 0.0, 1e3, &o.weight_decay);
        } else if (!strcmp(a, "--clip")) {
            bad = parse_num(a, v, 0.0, 1e30, &o.clip);
        } else if (!strcmp(a, "--eps")) {
            bad = parse_num(a, v, 0.0, 1.0, &o.eps);
        } else {
            fprintf(stderr, "lina: train: unknown option '%s'\n", a);
            train_usage(stderr);
            return 2;
        }
        if (bad) {
            return 2;
        }
    }
    int builtin = !config && !o.resume;
    if (!config) {
        /* the main job: the built-in model on the corpus of `make data` */
        o.data_path = o.data_path ? o.data_path : "data/train.tok";
        if (!given_val && file_exists("data/val.tok") && !strcmp(o.data_path, "data/train.tok")) {
            o.val_path = "data/val.tok";
        }
        o.out_dir = o.out_dir ? o.out_dir : "runs/gla-small";
        o.steps = given_steps ? o.steps : 600;
        o.batch = given_batch ? o.batch : 8;
        o.seq_len = given_seq ? o.seq_len : 128;
        o.lr = given_lr ? o.lr : 2e-3;
        o.eval_every = given_eval ? o.eval_every : 100;
        if (!file_exists(o.data_path)) {
            fprintf(stderr, "lina: train: %s not found: run `make data` first (or pass --data FILE)\n",
                    o.data_path);
            return 2;
        }
    }
    if (!o.data_path || !o.out_dir) {
        fprintf(stderr, "lina: train: --data and --out are required with --config or --resume\n");
        train_usage(stderr);
        return 2;
    }
    char tokdef[4096];
    if (!o.tokenizer_path) {
        /* tokenizer.json next to the token file, if there is one */
        const char *sl = strrchr(o.data_path, '/');
        int dl = sl ? (int)(sl - o.data_path) : 1;
        snprintf(tokdef, sizeof tokdef, "%.*s/tokenizer.json", dl, sl ? o.data_path : ".");
        if (file_exists(tokdef)) {
            o.tokenizer_path = tokdef;
        }
    } else if (!file_exists(o.tokenizer_path)) {
        fprintf(stderr, "lina: train: tokenizer %s not found\n", o.tokenizer_path);
        return 2;
    }
    if (threads > 0) {
        lina_set_threads((int)threads);
        openblas_set_num_threads((int)threads);
    }
    lina_config cfg;
    char ckcfg[4096];
    if (!config) {
        snprintf(ckcfg, sizeof ckcfg, "%s/checkpoint/config.json", o.out_dir);
        config = ckcfg;
    }
    int rc = builtin ? lina_config_parse(default_config_json, sizeof default_config_json - 1, "built-in config", &cfg)
                     : lina_config_read(config, &cfg);
    if (rc == LINA_OK && o.tokenizer_path) {
        lina_tokenizer *tk = NULL;
        rc = lina_tokenizer_load(o.tokenizer_path, &tk);
        if (rc == LINA_OK && lina_tokenizer_vocab_size(tk) > cfg.vocab_size) {
            rc = lina_set_error(LINA_EINVAL, "tokenizer %s has %d tokens, more than the model's vocab_size %d",
                                o.tokenizer_path, lina_tokenizer_vocab_size(tk), cfg.vocab_size);
        }
        lina_tokenizer_free(tk);
    }
    lina_model *m = NULL;
    if (rc == LINA_OK) {
        rc = lina_model_create(&cfg, o.seed, &m);
    }
    lina_trainable t;
    if (rc == LINA_OK) {
        rc = lina_trainable_from_model(m, &t);
    }
    if (rc == LINA_OK && o.progress) {
        fprintf(stderr, "lina train: %s, %zu parameters, %d threads, %lld steps of %d x %d x %d tokens\n",
                lina_model_type_name(cfg.model_type), lina_model_num_params(m), lina_get_threads(),
                (long long)o.steps, o.accum, o.batch, o.seq_len);
    }
    double *losses = NULL, *vals = NULL;
    if (rc == LINA_OK) {
        losses = malloc((size_t)o.steps * sizeof(double));
        vals = malloc((size_t)o.steps * sizeof(double));
        o.losses = losses;
        o.val_losses = vals;
        rc = lina_train(&t, &o);
    }
    lina_model_free(m);
    if (rc != LINA_OK) {
        fprintf(stderr, "lina: train: %s\n", lina_last_error());
        free(losses);
        free(vals);
        return rc == LINA_ENONFINITE ? 3 : 1;
    }
    {
        /* the loss plot next to the checkpoint */
        char lp[4096], pp[4096];
        snprintf(lp, sizeof lp, "%s/log.jsonl", o.out_dir);
        snprintf(pp, sizeof pp, "%s/loss.png", o.out_dir);
        if (lina_plot_train_log(lp, pp, lina_model_type_name(cfg.model_type)) != LINA_OK) {
            fprintf(stderr, "lina: train: note: no loss plot (%s)\n", lina_last_error());
        }
    }
    if (o.progress && losses) {
        long long last = (long long)o.steps - 1;
        fprintf(stderr, "done: %lld steps, loss %.4f", last + 1, losses[last]);
        if (vals && vals[last] == vals[last]) {
            fprintf(stderr, ", val loss %.4f", vals[last]);
        }
        fprintf(stderr, "; checkpoint in %s/checkpoint, log in %s/log.jsonl, plot in %s/loss.png\n",
                o.out_dir, o.out_dir, o.out_dir);
    }
    free(losses);
    free(vals);
    return 0;
}

/* lina data pack: whitespace-separated decimal token ids (text) or raw
 * little-endian u16/u32 -> a token file; lina data info FILE. */
static int data_pack(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *format = "text";
    long long vocab = 0, width = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            return die("data pack: %s needs a value", a);
        }
        i++;
        if (!strcmp(a, "--in")) {
            in = v;
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--format")) {
            format = v;
        } else if (!strcmp(a, "--vocab")) {
            if (parse_i64(a, v, 1, 0x80000000LL, &vocab)) {
                return 2;
            }
        } else if (!strcmp(a, "--width")) {
            if (parse_i64(a, v, 0, 4, &width)) {
                return 2;
            }
        } else {
            return die("data pack: unknown option '%s'", a);
        }
    }
    if (!in || !out || !vocab) {
        return die("data pack: --vocab V --in FILE|- --out FILE are required%s", "");
    }
    int fmt = !strcmp(format, "text") ? 0 : !strcmp(format, "u16") ? 2 : !strcmp(format, "u32") ? 4 : -1;
    if (fmt < 0) {
        return die("data pack: --format must be text, u16 or u32, not '%s'", format);
    }
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
            int c;
            while ((c = fgetc(f)) != EOF && (c == ' ' || c == '\n' || c == '\t' || c == '\r')) {
            }
            if (c == EOF) {
                break;
            }
            ungetc(c, f);
            if (fscanf(f, "%20llu", &v) != 1 || c == '-') {
                fprintf(stderr, "lina: data pack: %s: token %zu is not a non-negative integer\n", in, n);
                rc = 1;
                break;
            }
        } else {
            unsigned char b[4] = {0};
            size_t r = fread(b, 1, (size_t)fmt, f);
            if (r == 0) {
                break;
            }
            if (r != (size_t)fmt) {
                fprintf(stderr, "lina: data pack: %s: ends inside a token\n", in);
                rc = 1;
                break;
            }
            v = b[0] | (unsigned)b[1] << 8 | (unsigned long long)b[2] << 16 | (unsigned long long)b[3] << 24;
        }
        if (v >= (unsigned long long)vocab) {
            fprintf(stderr, "lina: data pack: %s: token %zu is %llu, not below --vocab %lld\n", in, n,
                    v, vocab);
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
        printf("%s: %zu tokens, vocab %lld\n", out, n, vocab);
    }
    return rc;
}

static int cmd_data(int argc, char **argv)
{
    if (argc >= 1 && !strcmp(argv[0], "pack")) {
        return data_pack(argc - 1, argv + 1);
    }
    if (argc == 2 && !strcmp(argv[0], "info")) {
        lina_tokfile *f;
        if (lina_tok_open(argv[1], &f) != LINA_OK) {
            fprintf(stderr, "lina: data info: %s\n", lina_last_error());
            return 1;
        }
        printf("%s: %llu tokens, vocab %u, %d-byte tokens\n", argv[1],
               (unsigned long long)lina_tok_count(f), lina_tok_vocab(f), lina_tok_width(f));
        lina_tok_close(f);
        return 0;
    }
    fprintf(stderr, "usage: lina data pack --vocab V --in FILE|- --out FILE [--format text|u16|u32] "
                    "[--width 2|4]\n       lina data info FILE\n");
    return 2;
}

/* ------------------------------------------------------------ tokenizer */

/* Whole file (or stdin for NULL / "-") into memory. */
static char *tok_read_all(const char *path, size_t *len)
{
    FILE *f = (path && strcmp(path, "-")) ? fopen(path, "rb") : stdin;
    if (!f) {
        fprintf(stderr, "lina: tokenizer: %s: %s\n", path, strerror(errno));
        return NULL;
    }
    size_t n = 0, cap = 1 << 20;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (n < cap) {
            break;
        }
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        fprintf(stderr, "lina: tokenizer: %s: read error\n", path ? path : "stdin");
        free(buf);
        buf = NULL;
    } else if (!buf) {
        fprintf(stderr, "lina: tokenizer: out of memory\n");
    }
    if (f != stdin) {
        fclose(f);
    }
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

/* bytes to a file (atomically) or to stdout (NULL / "-") */
static int tok_write_out(const char *path, const void *p, size_t n)
{
    if (!path || !strcmp(path, "-")) {
        if (fwrite(p, 1, n, stdout) != n || fflush(stdout) != 0) {
            fprintf(stderr, "lina: tokenizer: write error on stdout\n");
            return 1;
        }
        return 0;
    }
    lina_afile f;
    if (lina_afile_open(&f, path) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    lina_afile_write(&f, p, n);
    if (lina_afile_commit(&f) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    return 0;
}

/* lina tokenizer train|encode|decode: byte-level BPE and HF tokenizer.json. */
static int cmd_tokenizer(int argc, char **argv)
{
    static const char *const help =
        "usage: lina tokenizer train --in TEXT --vocab N --out tokenizer.json [--special TOK]... [--no-special]\n"
        "       lina tokenizer encode --tokenizer FILE [--in FILE] [--out FILE] [--format text|tok]\n"
        "       lina tokenizer decode --tokenizer FILE [--in FILE] [--out FILE]\n"
        "  train: byte-level BPE (GPT-2 style) with special token <|endoftext|> unless --special/--no-special\n"
        "  encode: ids as one line of space-separated integers (text), or a token file (tok; the\n"
        "          default when --out ends in .tok); decode reads whitespace-separated ids or a token file\n"
        "  --in/--out default to stdin/stdout\n";
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") || !strcmp(argv[0], "help")) {
        fputs(help, argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *sub = argv[0], *in = NULL, *out = NULL, *tokpath = NULL, *format = NULL;
    const char *special[64];
    int nspecial = 0, no_special = 0, vocab = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-special")) {
            no_special = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "lina: tokenizer %s: %s needs a value (or unknown option)\n", sub, a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--in")) {
            in = v;
        } else if (!strcmp(a, "--out")) {
            out = v;
        } else if (!strcmp(a, "--tokenizer")) {
            tokpath = v;
        } else if (!strcmp(a, "--format")) {
            format = v;
        } else if (!strcmp(a, "--vocab")) {
            if (parse_int(a, v, 256, 1 << 24, &vocab)) {
                return 2;
            }
        } else if (!strcmp(a, "--special")) {
            if (nspecial == 64) {
                return die("tokenizer train: at most %s special tokens", "64");
            }
            special[nspecial++] = v;
        } else {
            fprintf(stderr, "lina: tokenizer %s: unknown option '%s'\n%s", sub, a, help);
            return 2;
        }
    }
    if (!strcmp(sub, "train")) {
        if (!in || !out || !vocab) {
            fprintf(stderr, "lina: tokenizer train: --in, --vocab and --out are required\n%s", help);
            return 2;
        }
        if (!nspecial && !no_special) {
            special[nspecial++] = "<|endoftext|>";
        }
        if (no_special) {
            nspecial = 0;
        }
        size_t len;
        char *text = tok_read_all(in, &len);
        if (!text) {
            return 1;
        }
        double t0 = lina_now();
        lina_tokenizer *t;
        int rc = lina_tokenizer_train(text, len, vocab, special, nspecial, &t);
        double dt = lina_now() - t0;
        free(text);
        if (rc == LINA_OK) {
            rc = lina_tokenizer_save(t, out);
            if (rc == LINA_OK) {
                fprintf(stderr, "%s: vocab %d (%s%d requested) from %.2f MB in %.2f s (%.1f MB/s)\n", out,
                        lina_tokenizer_vocab_size(t), lina_tokenizer_vocab_size(t) < vocab ? "fewer pairs than " : "",
                        vocab, (double)len / 1e6, dt, (double)len / 1e6 / (dt > 1e-9 ? dt : 1e-9));
            }
            lina_tokenizer_free(t);
        }
        if (rc != LINA_OK) {
            fprintf(stderr, "lina: tokenizer train: %s\n", lina_last_error());
            return 1;
        }
        return 0;
    }
    if (strcmp(sub, "encode") && strcmp(sub, "decode")) {
        fprintf(stderr, "lina: tokenizer: unknown subcommand '%s'\n%s", sub, help);
        return 2;
    }
    if (!tokpath) {
        fprintf(stderr, "lina: tokenizer %s: --tokenizer FILE is required\n", sub);
        return 2;
    }
    int tokfmt = 0;
    if (format) {
        if (strcmp(format, "text") && strcmp(format, "tok")) {
            return die("tokenizer: --format must be text or tok, not '%s'", format);
        }
        tokfmt = !strcmp(format, "tok");
    } else if (out && strlen(out) > 4 && !strcmp(out + strlen(out) - 4, ".tok")) {
        tokfmt = 1;
    }
    lina_tokenizer *t;
    if (lina_tokenizer_load(tokpath, &t) != LINA_OK) {
        fprintf(stderr, "lina: tokenizer: %s\n", lina_last_error());
        return 1;
    }
    int ret = 1;
    if (!strcmp(sub, "encode")) {
        size_t len, n = 0;
        char *text = tok_read_all(in, &len);
        int32_t *ids = NULL;
        if (text && lina_tokenizer_encode(t, text, len, &ids, &n) != LINA_OK) {
            fprintf(stderr, "lina: tokenizer encode: %s\n", lina_last_error());
        } else if (text && tokfmt) {
            if (!out || !strcmp(out, "-")) {
                fprintf(stderr, "lina: tokenizer encode: a token file needs --out FILE\n");
            } else if (lina_tok_write(out, (const uint32_t *)ids, n, (uint32_t)lina_tokenizer_vocab_size(t), 0) !=
                       LINA_OK) {
                fprintf(stderr, "lina: tokenizer encode: %s\n", lina_last_error());
            } else {
                fprintf(stderr, "%s: %zu tokens from %zu bytes\n", out, n, len);
                ret = 0;
            }
        } else if (text) {
            char *s = malloc(n * 12 + 2);
            if (s) {
                size_t k = 0;
                for (size_t i = 0; i < n; i++) {
                    k += (size_t)sprintf(s + k, i ? " %d" : "%d", (int)ids[i]);
                }
                s[k++] = '\n';
                ret = tok_write_out(out, s, k);
                free(s);
            }
        }
        free(ids);
        free(text);
    } else {
        int32_t *ids = NULL;
        size_t n = 0, cap = 0;
        int ok = 1;
        lina_tokfile *tf = NULL;
        if (in && strcmp(in, "-") && lina_tok_open(in, &tf) == LINA_OK) {
            n = (size_t)lina_tok_count(tf);
            ids = malloc((n ? n : 1) * sizeof *ids);
            ok = ids && lina_tok_read(tf, 0, n, ids) == LINA_OK;
            lina_tok_close(tf);
        } else {
            size_t len;
            char *text = tok_read_all(in, &len);
            ok = text != NULL;
            char *p = text;
            while (ok) {
                while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') {
                    p++;
                }
                if (!*p) {
                    break;
                }
                char *end;
                errno = 0;
                long v = strtol(p, &end, 10);
                if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" \n\t\r", *end))) {
                    fprintf(stderr, "lina: tokenizer decode: id %zu is not a non-negative integer\n", n);
                    ok = 0;
                    break;
                }
                if (n == cap) {
                    cap = cap ? 2 * cap : 4096;
                    int32_t *q = realloc(ids, cap * sizeof *q);
                    if (!q) {
                        ok = 0;
                        break;
                    }
                    ids = q;
                }
                ids[n++] = (int32_t)v;
                p = end;
            }
            free(text);
        }
        char *s = NULL;
        size_t sl = 0;
        if (ok && lina_tokenizer_decode(t, ids, n, &s, &sl) != LINA_OK) {
            fprintf(stderr, "lina: tokenizer decode: %s\n", lina_last_error());
        } else if (ok) {
            ret = tok_write_out(out, s, sl);
        }
        free(s);
        free(ids);
    }
    lina_tokenizer_free(t);
    return ret;
}

/* ------------------------------------------------------------ generate */

typedef struct gen_cand {
    float logit;
    int id;
} gen_cand;

/* descending logit, then ascending id: a total order, so the result does not
 * depend on the sort algorithm */
static int gen_before(const gen_cand *x, const gen_cand *y)
{
    return x->logit > y->logit || (x->logit == y->logit && x->id < y->id);
}

static int gen_cmp(const void *a, const void *b)
{
    const gen_cand *x = a, *y = b;
    return gen_before(x, y) ? -1 : gen_before(y, x) ? 1 : 0;
}

/* Move the n first candidates (in gen_before order) to cand[0..n) (unsorted):
 * quickselect, O(V) on average, instead of sorting the whole vocabulary. */
static void gen_select(gen_cand *c, int V, int n)
{
    int lo = 0, hi = V - 1;
    while (lo < hi) {
        gen_cand pv = c[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (gen_before(&c[i], &pv)) {
                i++;
            }
            while (gen_before(&pv, &c[j])) {
                j--;
            }
            if (i <= j) {
                gen_cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (n - 1 <= j) {
            hi = j;
        } else if (n - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

/* Sample a token from logits[V]: temperature 0 = greedy; else top-k (0 = all),
 * then top-p (1 = all) over the softmax, drawn with the given rng state. */
static int gen_sample(const float *logits, int V, float temperature, int top_k, float top_p,
                      gen_cand *cand, uint64_t *rng)
{
    int best = 0;
    for (int i = 1; i < V; i++) {
        best = logits[i] > logits[best] ? i : best;
    }
    if (temperature <= 0.0f) {
        return best;
    }
    for (int i = 0; i < V; i++) {
        cand[i].logit = logits[i] / temperature;
        cand[i].id = i;
    }
    int n = top_k > 0 && top_k < V ? top_k : V;
    if (n < V) {
        gen_select(cand, V, n);
    }
    qsort(cand, (size_t)n, sizeof *cand, gen_cmp);
    double z = 0.0;
    for (int i = 0; i < n; i++) {
        z += exp((double)cand[i].logit - cand[0].logit);
    }
    double cum = 0.0;
    int m = n;
    for (int i = 0; i < n; i++) {
        cum += exp((double)cand[i].logit - cand[0].logit) / z;
        if (cum >= top_p) {
            m = i + 1;
            break;
        }
    }
    double zm = 0.0;
    for (int i = 0; i < m; i++) {
        zm += exp((double)cand[i].logit - cand[0].logit);
    }
    uint64_t x = lina_splitmix64(rng);
    double u = (double)(x >> 11) * (1.0 / 9007199254740992.0) * zm, acc = 0.0;
    for (int i = 0; i < m; i++) {
        acc += exp((double)cand[i].logit - cand[0].logit);
        if (u < acc) {
            return cand[i].id;
        }
    }
    return cand[m - 1].id;
}

static int parse_float(const char *flag, const char *s, double lo, double hi, float *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || errno || *end || end == s || !(v >= lo && v <= hi)) {
        fprintf(stderr, "lina: %s needs a number in [%g, %g], got '%s'\n", flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = (float)v;
    return 0;
}

/* lina generate --model DIR --prompt TEXT [--tokenizer FILE] [--max-tokens N]
 *   [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]
 * Prefill with the chunk form, then one token at a time with the recurrent
 * form (constant-size state per linear layer); streams the text to stdout. */
static int cmd_generate(int argc, char **argv)
{
    const char *model_dir = NULL, *prompt = NULL, *tok_path = NULL;
    int max_tokens = 100, top_k = 40, threads = 0, seed = 1;
    float temperature = 0.8f, top_p = 0.95f;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strncmp(a, "--", 2) != 0) {
            return die("generate: unexpected argument '%s'", a);
        }
        if (!val) {
            return die("option %s needs a value", a);
        }
        i++;
        if (!strcmp(a, "--model")) {
            model_dir = val;
        } else if (!strcmp(a, "--prompt")) {
            prompt = val;
        } else if (!strcmp(a, "--tokenizer")) {
            tok_path = val;
        } else if (!strcmp(a, "--max-tokens")) {
            if (parse_int(a, val, 0, 1 << 24, &max_tokens)) {
                return 2;
            }
        } else if (!strcmp(a, "--top-k")) {
            if (parse_int(a, val, 0, 1 << 30, &top_k)) {
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            if (parse_int(a, val, 0, 2147483647, &seed)) {
                return 2;
            }
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, val, 1, 1024, &threads)) {
                return 2;
            }
        } else if (!strcmp(a, "--temperature")) {
            if (parse_float(a, val, 0.0, 100.0, &temperature)) {
                return 2;
            }
        } else if (!strcmp(a, "--top-p")) {
            if (parse_float(a, val, 1e-6, 1.0, &top_p)) {
                return 2;
            }
        } else {
            return die("unknown option '%s'", a);
        }
    }
    if (!model_dir) {
        return die("generate: --model DIR is required%s", "");
    }
    if (!prompt || !prompt[0]) {
        return die("generate: --prompt TEXT is required%s", "");
    }
    if (threads > 0) {
        lina_set_threads(threads);
        openblas_set_num_threads(threads);
    }
    char tp[4096];
    if (!tok_path) {
        snprintf(tp, sizeof tp, "%s/tokenizer.json", model_dir);
        tok_path = tp;
    }
    lina_model *m = NULL;
    lina_tokenizer *tk = NULL;
    lina_model_state *st = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    float *logits = NULL;
    gen_cand *cand = NULL;
    char *piece = NULL;
    int rc = 1;
    if (lina_model_load(model_dir, &m) || lina_tokenizer_load(tok_path, &tk) ||
        lina_tokenizer_encode(tk, prompt, strlen(prompt), &ids, &n)) {
        fprintf(stderr, "lina: generate: %s\n", lina_last_error());
        goto done;
    }
    const int V = lina_model_config(m)->vocab_size;
    if (lina_tokenizer_vocab_size(tk) > V) {
        fprintf(stderr, "lina: generate: tokenizer has %d tokens but the model's vocab_size is %d\n",
                lina_tokenizer_vocab_size(tk), V);
        goto done;
    }
    const int eos = lina_tokenizer_token_id(tk, "<|endoftext|>");
    logits = malloc((n > 0 ? n : 1) * (size_t)V * sizeof(float));
    cand = malloc((size_t)V * sizeof *cand);
    if (!logits || !cand || n == 0 ||
        lina_model_state_create(m, 1, (int)n + max_tokens + 1, &st)) {
        fprintf(stderr, "lina: generate: %s\n", n == 0 ? "empty prompt" : "out of memory");
        goto done;
    }
    lina_ws ws;
    lina_ws_init(&ws);
    fwrite(prompt, 1, strlen(prompt), stdout);
    fflush(stdout);
    double t0 = lina_now();
    if (lina_model_decode(m, st, ids, 1, (int)n, logits, &ws)) {
        fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
        lina_ws_free(&ws);
        goto done;
    }
    double t_prefill = lina_now() - t0;
    uint64_t rng = (uint64_t)seed;
    const float *last = logits + (n - 1) * (size_t)V;
    int produced = 0;
    t0 = lina_now();
    rc = 0;
    for (int s = 0; s < max_tokens; s++) {
        int32_t tok = gen_sample(last, V, temperature, top_k, top_p, cand, &rng);
        if (tok == eos) {
            break;
        }
        size_t plen = 0;
        if (lina_tokenizer_decode(tk, &tok, 1, &piece, &plen) == 0) {
            fwrite(piece, 1, plen, stdout);
            fflush(stdout);
        }
        free(piece);
        piece = NULL;
        produced++;
        if (s + 1 == max_tokens) {
            break;
        }
        if (lina_model_decode(m, st, &tok, 1, 1, logits, &ws)) {
            fprintf(stderr, "\nlina: generate: %s\n", lina_last_error());
            rc = 1;
            break;
        }
        last = logits;
    }
    double t_dec = lina_now() - t0;
    lina_ws_free(&ws);
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "prompt: %zu tokens, %.1f tokens/s; generated: %d tokens, %.1f tokens/s\n", n,
            (double)n / (t_prefill > 0 ? t_prefill : 1e-9), produced,
            (double)produced / (t_dec > 0 ? t_dec : 1e-9));
done:
    free(piece);
    free(cand);
    free(logits);
    free(ids);
    lina_model_state_free(st);
    lina_tokenizer_free(tk);
    lina_model_free(m);
    return rc;
}

/* lina eval --model DIR --data FILE [--seq-len T] [--batch B] [--max-tokens N]
 *   [--threads N] [--json]: mean next-token loss and perplexity over
 * consecutive, non-overlapping windows of T tokens from the start of FILE. */
static int cmd_eval(int argc, char **argv)
{
    const char *model_dir = NULL, *data = NULL;
    int T = 256, B = 8, threads = 0, json = 0, max_tokens = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            return die("eval: unexpected argument '%s'", a);
        }
        if (!val) {
            return die("option %s needs a value", a);
        }
        i++;
        if (!strcmp(a, "--model")) {
            model_dir = val;
        } else if (!strcmp(a, "--data")) {
            data = val;
        } else if (!strcmp(a, "--seq-len")) {
            if (parse_int(a, val, 1, 1 << 20, &T)) {
                return 2;
            }
        } else if (!strcmp(a, "--batch")) {
            if (parse_int(a, val, 1, 4096, &B)) {
                return 2;
            }
        } else if (!strcmp(a, "--max-tokens")) {
            if (parse_int(a, val, 0, 2147483647, &max_tokens)) {
                return 2;
            }
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(a, val, 1, 1024, &threads)) {
                return 2;
            }
        } else {
            return die("unknown option '%s'", a);
        }
    }
    if (!model_dir) {
        return die("eval: --model DIR is required%s", "");
    }
    if (!data) {
        return die("eval: --data FILE is required%s", "");
    }
    if (threads > 0) {
        lina_set_threads(threads);
        openblas_set_num_threads(threads);
    }
    lina_model *m = NULL;
    lina_tokfile *f = NULL;
    int32_t *tok = NULL, *tgt = NULL, *win = NULL;
    int rc = 1;
    if (lina_model_load(model_dir, &m) || lina_tok_open(data, &f)) {
        fprintf(stderr, "lina: eval: %s\n", lina_last_error());
        goto done;
    }
    if ((int64_t)lina_tok_vocab(f) > (int64_t)lina_model_config(m)->vocab_size) {
        fprintf(stderr, "lina: eval: %s has vocab %u but the model's vocab_size is %d\n", data,
                lina_tok_vocab(f), lina_model_config(m)->vocab_size);
        goto done;
    }
    uint64_t count = lina_tok_count(f);
    if (max_tokens > 0 && (uint64_t)max_tokens + 1 < count) {
        count = (uint64_t)max_tokens + 1;
    }
    if (count < (uint64_t)T + 1) {
        fprintf(stderr, "lina: eval: %s has %llu tokens, fewer than --seq-len + 1 = %d\n", data,
                (unsigned long long)count, T + 1);
        goto done;
    }
    const uint64_t nwin = (count - 1) / (uint64_t)T;
    tok = malloc((size_t)B * T * sizeof *tok);
    tgt = malloc((size_t)B * T * sizeof *tgt);
    win = malloc(((size_t)T + 1) * sizeof *win);
    if (!tok || !tgt || !win) {
        fprintf(stderr, "lina: eval: out of memory\n");
        goto done;
    }
    lina_ws ws;
    lina_ws_init(&ws);
    double sum = 0.0, t0 = lina_now();
    uint64_t done_w = 0;
    rc = 0;
    while (done_w < nwin) {
        int nb = nwin - done_w < (uint64_t)B ? (int)(nwin - done_w) : B;
        for (int b = 0; b < nb && rc == 0; b++) {
            if (lina_tok_read(f, (done_w + (uint64_t)b) * (uint64_t)T, (size_t)T + 1, win)) {
                rc = 1;
            }
            memcpy(tok + (size_t)b * T, win, (size_t)T * sizeof *win);
            memcpy(tgt + (size_t)b * T, win + 1, (size_t)T * sizeof *win);
        }
        double loss = 0.0;
        if (rc || lina_model_eval_loss(m, tok, tgt, nb, T, &loss, &ws)) {
            fprintf(stderr, "lina: eval: %s\n", lina_last_error());
            rc = 1;
            break;
        }
        sum += loss * nb;
        done_w += (uint64_t)nb;
    }
    lina_ws_free(&ws);
    if (rc == 0) {
        double loss = sum / (double)nwin, dt = lina_now() - t0;
        double ntok = (double)nwin * T;
        if (json) {
            printf("{\"tokens\":%.0f,\"loss\":%.6f,\"perplexity\":%.4f,\"tokens_per_s\":%.1f}\n", ntok,
                   loss, exp(loss), ntok / (dt > 0 ? dt : 1e-9));
        } else {
            printf("%.0f tokens in %llu windows of %d: loss %.4f, perplexity %.3f (%.0f tokens/s)\n",
                   ntok, (unsigned long long)nwin, T, loss, exp(loss), ntok / (dt > 0 ? dt : 1e-9));
        }
    }
done:
    free(tok);
    free(tgt);
    free(win);
    lina_tok_close(f);
    lina_model_free(m);
    return rc;
}

/* ---------------------------------------------------------------- main */

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
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "op")) {
        return cmd_op(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "bench")) {
        for (int i = 2; i < argc; i++) {
            if (!strcmp(argv[i], "--model")) {
                return lina_model_bench_main(argc - 2, argv + 2); /* src/train/model_bench.c */
            }
        }
        return cmd_bench(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "train")) {
        return cmd_train(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "data")) {
        return cmd_data(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "tokenizer")) {
        return cmd_tokenizer(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "generate")) {
        return cmd_generate(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "eval")) {
        return cmd_eval(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "plot")) {
        return lina_plot_main(argc - 1, argv + 1);
    }
    if (!strcmp(cmd, "task")) {
        return lina_task_main(argc - 1, argv + 1); /* src/tasks/task_cli.c */
    }
    if (!strcmp(cmd, "paper")) {
        return lina_paper_main(argc - 1, argv + 1); /* src/tasks/task_paper.c */
    }
    if (!strcmp(cmd, "ops")) {
        for (const lina_op_info *const *p = lina_ops(); *p; p++) {
            printf("%-18s %s", (*p)->name, (*p)->summary);
            for (int i = 0; i < 4 && (*p)->flags[i]; i++) {
                printf("%s%s", i ? " " : "  [", (*p)->flags[i]);
            }
            printf("%s\n", (*p)->flags[0] ? "]" : "");
        }
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("lina %s\n", LINA_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "lina: unknown command '%s' (try 'lina help')\n", cmd);
    return 2;
}
