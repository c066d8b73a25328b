/* lina.c -- the command-line tool: a thin dispatcher over liblina.
 *
 *   lina op NAME --in DIR --out DIR --form chunk|recurrent [--backward] [op flags]
 *   lina bench OP [--B n --T n --H n --K n --V n --form f --backward --threads n
 *                  --repeat r --chunk c] [--json]
 *   lina ops        list the ops
 *   lina version
 */
#include "lina.h"

#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

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
        double t0 = now_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
        double dt = now_s() - t0;
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
        double t0 = now_s();
        rc = lina_op_run(op, &in, &out, &o, &ws);
        t[r] = now_s() - t0;
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

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "op")) {
        return cmd_op(argc - 2, argv + 2);
    }
    if (!strcmp(cmd, "bench")) {
        return cmd_bench(argc - 2, argv + 2);
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
