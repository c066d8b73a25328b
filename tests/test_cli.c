/* test_cli.c -- `lina op` end to end: every op of the GLA family, both forms,
 * forward and backward, against the double reference on shapes the unit tests
 * do not use; and every bad-input case: one clear "lina: ..." line on stderr
 * and a non-zero exit, never a crash. */
#include "harness.h"
#include "lina.h"
#include "ref/ref.h"
#include "../src/tasks/tasks.h"
#include "../src/train/model_bench.h"

#include <math.h>

#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *lina_bin;
static char root[64];

static void put(const char *dir, const char *name, int nd, const int64_t *sh, const double *x)
{
    lina_tensor t;
    lina_tensor_alloc(&t, nd, sh);
    for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
        t.data[i] = (float)x[i];
    }
    char p[256];
    snprintf(p, sizeof p, "%s/%s.npy", dir, name);
    lina_npy_write(p, &t);
    lina_tensor_free(&t);
}

static void put_raw(const char *dir, const char *name, const void *b, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s.npy", dir, name);
    FILE *f = fopen(p, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* run lina with args; returns exit status (or 128+signal); stderr into err */
static int run(const char *args, char *err, size_t errn)
{
    char cmd[1024], out[1];
    snprintf(cmd, sizeof cmd, "%s %s", lina_bin, args);
    return th_sh_capture(cmd, root, out, sizeof out, err, errn);
}

static int one_line(const char *e)
{
    const char *nl = strchr(e, '\n');
    return strncmp(e, "lina: ", 6) == 0 && nl && nl[1] == '\0';
}

static void expect_fail(const char *what, const char *args, const char *needle)
{
    char err[4096];
    int st = run(args, err, sizeof err);
    CHECK(st != 0 && st < 128 && one_line(err) && strstr(err, needle),
          "bad input: %s -> exit %d, \"%.*s\"", what, st, (int)strcspn(err, "\n"), err);
}

static double *rnd(size_t n, double lo, double hi, int normal)
{
    double *x = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        x[i] = normal ? th_normal() : th_uniform(lo, hi);
    }
    return x;
}

static double cmp_file(const char *dir, const char *name, const double *ref, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s.npy", dir, name);
    lina_tensor t;
    if (lina_npy_read(p, &t) != 0 || (size_t)lina_tensor_numel(&t) != n) {
        return 1e9;
    }
    double e = th_relerr_fd(t.data, ref, n);
    lina_tensor_free(&t);
    return e;
}

static void e2e(void)
{
    const int B = 1, T = 77, H = 2, K = 20, V = 12;
    const char *ops[] = {"linear_attn", "retention", "simple_gla", "gla"};
    const int gks[] = {0, 1, 2, 3};
    for (int oi = 0; oi < 4; oi++) {
        char in[128], out[128];
        snprintf(in, sizeof in, "%s/e2e_%s_in", root, ops[oi]);
        mkdir(in, 0755);
        size_t nq = (size_t)B * T * H * K, nv = (size_t)B * T * H * V, ns = (size_t)B * H * K * V;
        size_t ng = gks[oi] == 3 ? nq : (size_t)B * T * H;
        double *q = rnd(nq, 0, 0, 1), *k = rnd(nq, 0, 0, 1), *v = rnd(nv, 0, 0, 1);
        double *g = rnd(ng, -3.0, 0.0, 0), *h0 = rnd(ns, 0, 0, 1), *dO = rnd(nv, 0, 0, 1), *dht = rnd(ns, 0, 0, 1);
        double gh[2];
        int64_t sk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, ss[4] = {B, H, K, V}, sg[4] = {B, T, H, K};
        put(in, "q", 4, sk, q); put(in, "k", 4, sk, k); put(in, "v", 4, sv, v);
        put(in, "h0", 4, ss, h0); put(in, "do", 4, sv, dO); put(in, "dht", 4, ss, dht);
        const double *gref = g;
        if (gks[oi] == 1) {
            for (int h = 0; h < H; h++) {
                gh[h] = log(1.0 - pow(2.0, -5.0 - h));
            }
            gref = gh;
        } else if (gks[oi] >= 2) {
            put(in, "g", gks[oi] == 3 ? 4 : 3, sg, g);
        }
        double *o = malloc(nv * 8), *ht = malloc(ns * 8), *dq = malloc(nq * 8), *dk = malloc(nq * 8);
        double *dv = malloc(nv * 8), *dg = malloc(ng * 8), *dh0 = malloc(ns * 8);
        double s = 1.0 / sqrt((double)K);
        ref_dd_fwd(B, T, H, K, V, s, gks[oi], gref, q, k, v, h0, o, ht);
        ref_dd_bwd(B, T, H, K, V, s, gks[oi], gref, q, k, v, h0, dO, dht, dq, dk, dv, dg, dh0);
        for (int form = 0; form < 2; form++) {
            snprintf(out, sizeof out, "%s/e2e_%s_out%d", root, ops[oi], form);
            mkdir(out, 0755);
            char args[512], err[4096];
            snprintf(args, sizeof args, "op %s --in %s --out %s --form %s --backward", ops[oi], in, out,
                     form ? "chunk" : "recurrent");
            int st = run(args, err, sizeof err);
            double ef = fmax(cmp_file(out, "o", o, nv), cmp_file(out, "ht", ht, ns));
            double eg = fmax(cmp_file(out, "dq", dq, nq), cmp_file(out, "dk", dk, nq));
            eg = fmax(eg, fmax(cmp_file(out, "dv", dv, nv), cmp_file(out, "dh0", dh0, ns)));
            if (gks[oi] >= 2) {
                eg = fmax(eg, cmp_file(out, "dg", dg, ng));
            }
            char p[256];
            snprintf(p, sizeof p, "%s/_states.npy", out);
            int scratch = access(p, F_OK) == 0;
            snprintf(p, sizeof p, "%s/dg.npy", out);
            int stray_dg = gks[oi] < 2 && access(p, F_OK) == 0;
            CHECK(st == 0 && ef <= 1e-4 && eg <= 5e-4 && !scratch && !stray_dg,
                  "lina op %s --form %s --backward vs double reference (fwd %.1e, grad %.1e)", ops[oi],
                  form ? "chunk" : "recurrent", ef, eg);
        }
        free(q); free(k); free(v); free(g); free(h0); free(dO); free(dht);
        free(o); free(ht); free(dq); free(dk); free(dv); free(dg); free(dh0);
    }
}

static void bad_inputs(void)
{
    char good[128], dir[128], out[128], args[1024];
    const int B = 1, T = 5, H = 2, K = 4, V = 3;
    int64_t sk[4] = {B, T, H, K}, sv[4] = {B, T, H, V}, sg[4] = {B, T, H, K};
    size_t nq = (size_t)B * T * H * K;
    double *q = rnd(nq, 0, 0, 1), *v = rnd(nq, 0, 0, 1), *g = rnd(nq, -1, 0, 0);
    snprintf(good, sizeof good, "%s/good", root);
    snprintf(out, sizeof out, "%s/out", root);
    mkdir(good, 0755);
    mkdir(out, 0755);
    put(good, "q", 4, sk, q); put(good, "k", 4, sk, q); put(good, "v", 4, sv, v); put(good, "g", 4, sg, g);
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk", good, out);
    char err[4096];
    CHECK(run(args, err, sizeof err) == 0, "good input runs (%s)", err);

    snprintf(args, sizeof args, "op foo --in %s --out %s --form chunk", good, out);
    expect_fail("unknown op", args, "unknown op 'foo'");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk --bogus", good, out);
    expect_fail("unknown option", args, "unknown option '--bogus'");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form sideways", good, out);
    expect_fail("unknown form", args, "unknown form");
    snprintf(args, sizeof args, "op gla --in %s --out %s", good, out);
    expect_fail("missing --form", args, "--form");
    snprintf(args, sizeof args, "op gla --in %s --form chunk", good);
    expect_fail("missing --out", args, "--out");
    snprintf(args, sizeof args, "op gla --in %s --out %s/nope --form chunk", good, root);
    expect_fail("missing output directory", args, "does not exist");
    snprintf(args, sizeof args, "op gla --in %s/nope --out %s --form chunk", root, out);
    expect_fail("missing input directory", args, "cannot open input directory");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk --normalize", good, out);
    expect_fail("flag of another op", args, "does not apply");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk --backward", good, out);
    expect_fail("--backward without do.npy", args, "do.npy");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk --chunk", good, out);
    expect_fail("option without value", args, "needs a value");
    snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk --chunk 0", good, out);
    expect_fail("bad chunk size", args, "--chunk");
    expect_fail("unknown command", "frobnicate", "unknown command");

    struct { const char *what, *file, *needle; int mode; } cases[] = {
        {"missing input", "v", "missing input v.npy", 0},
        {"wrong rank", "q", "q.npy has shape", 1},
        {"dims that disagree", "k", "k.npy has shape", 2},
        {"NaN in an input", "q", "non-finite", 3},
        {"Inf in a gate", "g", "non-finite", 4},
        {"positive log gate", "g", "<= 0", 5},
        {"malformed file", "q", "not a .npy", 6},
        {"truncated file", "v", "truncated", 7},
        {"Fortran order", "k", "Fortran", 8},
        {"big-endian", "k", "big-endian", 9},
        {"int64 dtype", "g", "dtype", 10},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        snprintf(dir, sizeof dir, "%s/bad%zu", root, c);
        mkdir(dir, 0755);
        put(dir, "q", 4, sk, q); put(dir, "k", 4, sk, q); put(dir, "v", 4, sv, v); put(dir, "g", 4, sg, g);
        char p[256];
        snprintf(p, sizeof p, "%s/%s.npy", dir, cases[c].file);
        unsigned char raw[256];
        const char *hdr = NULL;
        switch (cases[c].mode) {
        case 0:
            unlink(p);
            break;
        case 1: {
            int64_t s3[3] = {B, T, H * K};
            put(dir, "q", 3, s3, q);
            break;
        }
        case 2: {
            int64_t s2[4] = {B, T, H, K - 1};
            put(dir, "k", 4, s2, q);
            break;
        }
        case 3:
        case 4:
        case 5: {
            double *x = malloc(nq * sizeof(double));
            memcpy(x, cases[c].mode == 3 ? q : g, nq * sizeof(double));
            x[7] = cases[c].mode == 3 ? NAN : cases[c].mode == 4 ? -INFINITY : 0.5;
            put(dir, cases[c].file, 4, cases[c].mode == 3 ? sk : sg, x);
            free(x);
            break;
        }
        case 6:
            put_raw(dir, "q", "hello, world", 12);
            break;
        case 7: {
            FILE *f = fopen(p, "rb");
            size_t n = fread(raw, 1, sizeof raw, f);
            fclose(f);
            put_raw(dir, "v", raw, n - 9);
            break;
        }
        case 8:
            hdr = "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 5, 2, 4), }";
            break;
        case 9:
            hdr = "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 5, 2, 4), }";
            break;
        case 10:
            hdr = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 5, 2, 4), }";
            break;
        }
        if (hdr) {
            size_t hl = strlen(hdr), pad = (64 - (10 + hl + 1) % 64) % 64, h = hl + pad + 1;
            memcpy(raw, "\x93NUMPY\x01\x00", 8);
            raw[8] = (unsigned char)h;
            raw[9] = 0;
            memcpy(raw + 10, hdr, hl);
            memset(raw + 10 + hl, ' ', pad);
            raw[9 + h] = '\n';
            size_t dn = cases[c].mode == 10 ? nq * 8 : nq * 4;
            unsigned char *full = calloc(1, 10 + h + dn);
            memcpy(full, raw, 10 + h);
            put_raw(dir, cases[c].file, full, 10 + h + dn);
            free(full);
        }
        snprintf(args, sizeof args, "op gla --in %s --out %s --form chunk", dir, out);
        expect_fail(cases[c].what, args, cases[c].needle);
    }
    free(q); free(v); free(g);
}

/* `lina task mqar --write-config` writes the model the task trains (the config
 * lina_task_config builds), and `lina bench --model` trains it with the task's
 * optimiser settings; bad values are refused with one line */
static void task_config_and_bench(void)
{
    char args[512], err[4096], path[160];
    snprintf(path, sizeof path, "%s/mqar_gla.json", root);
    snprintf(args, sizeof args, "task mqar --mixer gla --d-model 32 --heads 2 --seq-len 64 --write-config %s", path);
    int st = run(args, err, sizeof err);
    lina_config got, want;
    lina_task_opts o;
    lina_task_opts_default(&o, LINA_TASK_MQAR);
    o.mixer = LINA_MODEL_GLA;
    o.d_model = 32;
    int rc = st == 0 ? lina_config_read(path, &got) : -1;
    CHECK(rc == 0 && lina_task_config(&o, &want) == 0 && got.model_type == LINA_MODEL_GLA &&
              got.hidden_size == want.hidden_size && got.num_hidden_layers == want.num_hidden_layers &&
              got.num_heads == want.num_heads && got.intermediate_size == want.intermediate_size &&
              got.vocab_size == want.vocab_size && got.use_short_conv == want.use_short_conv &&
              got.conv_size == want.conv_size && got.tie_word_embeddings == want.tie_word_embeddings,
          "task mqar --write-config: exit %d, the config of lina_task_config (d %d, layers %d, I %d, V %d)", st,
          rc == 0 ? got.hidden_size : -1, rc == 0 ? got.num_hidden_layers : -1,
          rc == 0 ? got.intermediate_size : -1, rc == 0 ? got.vocab_size : -1);
    snprintf(args, sizeof args,
             "bench --model %s --only train --batch 2 --seq-len 16 --steps 1 --lr 3e-3 --beta2 0.999 --clip 1 "
             "--json",
             path);
    st = run(args, err, sizeof err);
    CHECK(st == 0, "bench --model on the task config with --lr/--beta2/--clip: exit %d", st);
    snprintf(args, sizeof args,
             "bench --model %s --only decode --batch 2 --context 3 --decode-steps 2 --roofline --json", path);
    {
        char cmd[1024], out[8192];
        snprintf(cmd, sizeof cmd, "%s %s", lina_bin, args);
        st = th_sh_capture(cmd, root, out, sizeof out, err, sizeof err);
        /* the decode step and its projections against the ceilings, by CPU time too */
        static const char *keys[] = {"\"decode_cpu_ms_per_step\": ", "\"read_cpu_gbs\": ",
                                     "\"decode_bw_frac_cpu\": ", "\"decode_ws_bw_frac_cpu\": ",
                                     "\"decode_proj_roof_frac_cpu\": "};
        for (int i = 0; i < 5; i++) {
            const char *k = strstr(out, keys[i]);
            double v = k ? strtod(k + strlen(keys[i]), NULL) : 0.0;
            CHECK(st == 0 && k && v > 0.0 && isfinite(v), "bench --model --roofline --json: %s%g", keys[i], v);
        }
    }
    double gcpu = NAN, gbs = lina_bench_read_gbs((size_t)1 << 20, &gcpu), sg = lina_bench_sgemm_gflops(NULL);
    CHECK(st == 0 && gbs > 0.0 && isfinite(gbs) && gcpu > 0.0 && isfinite(gcpu) && sg > 0.0 && isfinite(sg),
          "bench --model --roofline: exit %d; streaming read %.1f GB/s (%.1f per CPU second), SGEMM %.1f GFLOP/s", st,
          gbs, gcpu, sg);
    snprintf(args, sizeof args, "bench --model %s --only train --clip -1", path);
    expect_fail("bench --clip -1", args, "--clip");
    snprintf(args, sizeof args, "bench --model %s --only train --beta2 1", path);
    expect_fail("bench --beta2 1", args, "--beta2");
    expect_fail("task --write-config to a missing directory",
                "task mqar --write-config /nonexistent-dir/x/c.json", "mqar");
}

/* inputs that are not files, outputs all-or-none, non-finite outputs */
static void outputs(void)
{
    const int B = 1, T = 6, H = 2, K = 4, V = 3;
    int64_t sk[4] = {B, T, H, K}, sv[4] = {B, T, H, V};
    size_t nq = (size_t)B * T * H * K, nv = (size_t)B * T * H * V;
    double *q = rnd(nq, 0, 0, 1), *v = rnd(nv, 0, 0, 1);
    char in[128], out[128], args[1024], err[4096], p[256];
    /* a directory named q.npy among the inputs */
    snprintf(in, sizeof in, "%s/dir_in", root);
    mkdir(in, 0755);
    put(in, "k", 4, sk, q);
    put(in, "v", 4, sv, v);
    snprintf(p, sizeof p, "%s/q.npy", in);
    mkdir(p, 0755);
    snprintf(out, sizeof out, "%s/dir_out", root);
    mkdir(out, 0755);
    snprintf(args, sizeof args, "op linear_attn --in %s --out %s --form chunk", in, out);
    expect_fail("an input q.npy that is a directory", args, "q.npy is a directory");
    rmdir(p);
    put(in, "q", 4, sk, q);
    /* a later output cannot be written (ht.npy is a directory): no output appears */
    snprintf(p, sizeof p, "%s/ht.npy", out);
    mkdir(p, 0755);
    expect_fail("an output that cannot be written", args, "ht.npy");
    snprintf(p, sizeof p, "%s/o.npy", out);
    int none = access(p, F_OK) != 0;
    snprintf(p, sizeof p, "%s/ht.npy", out);
    rmdir(p);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", out);
    CHECK(none && system(cmd) == 0, "all-or-none: o.npy not written when ht.npy fails; no temporary left");
    char e2[4096];
    CHECK(run(args, e2, sizeof e2) == 0 && access(p, F_OK) == 0, "the same op writes o.npy and ht.npy (%s)", e2);
    /* finite inputs whose output overflows float: fail, naming the output, nothing written */
    snprintf(in, sizeof in, "%s/big_in", root);
    snprintf(out, sizeof out, "%s/big_out", root);
    mkdir(in, 0755);
    mkdir(out, 0755);
    double *bq = malloc(nq * sizeof(double)), *bv = malloc(nv * sizeof(double));
    for (size_t i = 0; i < nq; i++) {
        bq[i] = 1e18;
    }
    for (size_t i = 0; i < nv; i++) {
        bv[i] = 1e18;
    }
    put(in, "q", 4, sk, bq);
    put(in, "k", 4, sk, bq);
    put(in, "v", 4, sv, bv);
    snprintf(args, sizeof args, "op linear_attn --in %s --out %s --form recurrent", in, out);
    int st = run(args, err, sizeof err);
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", out);
    CHECK(st == 1 && one_line(err) && strstr(err, "non-finite") && strstr(err, ".npy") && system(cmd) == 0,
          "overflowing output -> exit %d, no file: %.*s", st, (int)strcspn(err, "\n"), err);
    free(q); free(v); free(bq); free(bv);
    /* a write that fails part-way (file-size limit of 1 KiB, 2 blocks of 512 bytes in sh's
     * ulimit: o.npy fits, ht.npy [1,2,128,3] does not, even in 1 KiB blocks): no output
     * appears, no temporary is left. (LLVM's OpenMP runtime sizes a 1 KiB shared-memory
     * file at start-up and dies under a smaller limit.) */
    const int K2 = 128;
    int64_t sk2[4] = {B, T, H, K2};
    size_t nq2 = (size_t)B * T * H * K2;
    double *q2 = rnd(nq2, 0, 0, 1), *v2 = rnd(nv, 0, 0, 1);
    snprintf(in, sizeof in, "%s/fsz_in", root);
    snprintf(out, sizeof out, "%s/fsz_out", root);
    mkdir(in, 0755);
    mkdir(out, 0755);
    put(in, "q", 4, sk2, q2);
    put(in, "k", 4, sk2, q2);
    put(in, "v", 4, sv, v2);
    snprintf(cmd, sizeof cmd,
             "(trap '' XFSZ; ulimit -f 2 && exec %s op linear_attn --in %s --out %s --form chunk) 2>%s/fsz_err.txt",
             lina_bin, in, out, root);
    st = system(cmd);
    snprintf(p, sizeof p, "%s/fsz_err.txt", root);
    FILE *f = fopen(p, "r");
    size_t got = f ? fread(err, 1, sizeof err - 1, f) : 0;
    err[got] = '\0';
    if (f) {
        fclose(f);
    }
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A %s)\"", out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1 && one_line(err) && strstr(err, "no output written") &&
              system(cmd) == 0,
          "a write failing part-way -> exit 1, nothing written: %.*s", (int)strcspn(err, "\n"), err);
    free(q2); free(v2);
}

/* `lina bench OP --json`: one JSON line with the kernel's time and the SGEMM
 * rate measured in the same process (lina_bench_sgemm_gflops) */
static void bench_json(void)
{
    char cmd[512], of[128], line[1024] = "";
    snprintf(of, sizeof of, "%s/bench.json", root);
    snprintf(cmd, sizeof cmd, "%s bench gla --T 64 --H 1 --K 8 --V 8 --repeat 1 --threads 1 --json >%s 2>&1",
             lina_bin, of);
    int st = system(cmd);
    FILE *f = fopen(of, "r");
    if (f) {
        size_t got = fread(line, 1, sizeof line - 1, f);
        line[got] = '\0';
        fclose(f);
    }
    const char *pm = strstr(line, "\"ms\":"), *ps = strstr(line, "\"sgemm_gflops\":");
    double ms = pm ? atof(pm + 5) : 0.0, sg = ps ? atof(ps + 15) : 0.0;
    CHECK(st == 0 && ms > 0.0 && sg > 0.0 && sg < 1e7,
          "lina bench gla --json: exit %d, kernel %.4f ms, SGEMM %.1f GFLOP/s", st, ms, sg);
    /* the same per second of CPU time: on one thread a run's CPU time is at
     * most its wall time */
    const char *pc = strstr(line, "\"cpu_ms\":"), *pg = strstr(line, "\"cpu_gflops\":");
    const char *pq = strstr(line, "\"sgemm_cpu_gflops\":");
    double cms = pc ? atof(pc + 9) : 0.0, cg = pg ? atof(pg + 13) : 0.0, cs = pq ? atof(pq + 19) : 0.0;
    CHECK(cms > 0.0 && cms <= ms * 1.01 + 0.05 && cg > 0.0 && cs > 0.0 && cs < 1e7,
          "lina bench gla --json per CPU second: %.4f ms CPU (wall %.4f), %.2f GFLOP/s, SGEMM %.1f",
          cms, ms, cg, cs);
}

/* LINA_ISA: a path the CPU lacks or an unknown name is refused; bench and
 * version name the path taken. */
static void isa_env(void)
{
    const char *was = getenv("LINA_ISA");
    char saved[32] = "";
    if (was) {
        snprintf(saved, sizeof saved, "%s", was);
    }
    setenv("LINA_ISA", "sse9", 1);
    expect_fail("LINA_ISA=sse9", "version", "LINA_ISA: unknown kernel path 'sse9'");
    if (!strstr(lina_isa_supported(), "avx512")) {
        setenv("LINA_ISA", "avx512", 1);
        expect_fail("LINA_ISA=avx512 on a CPU without it", "version", "not supported on this CPU");
    }
    char sup[64];
    snprintf(sup, sizeof sup, "%s", lina_isa_supported());
    for (char *p = strtok(sup, " "); p; p = strtok(NULL, " ")) {
        setenv("LINA_ISA", p, 1);
        char cmd[512], line[1024] = "", want[64];
        snprintf(cmd, sizeof cmd, "%s bench gla --T 64 --H 1 --K 16 --V 16 --repeat 1 --json", lina_bin);
        FILE *f = popen(cmd, "r");
        size_t got = f ? fread(line, 1, sizeof line - 1, f) : 0;
        line[got] = '\0';
        int st = f ? pclose(f) : -1;
        snprintf(want, sizeof want, "\"isa\":\"%s\"", p);
        CHECK(st == 0 && strstr(line, want) && strstr(line, "\"blas_core\":"),
              "LINA_ISA=%s: lina bench --json reports the path (%.*s)", p, (int)strcspn(line, "\n"), line);
    }
    if (was) {
        setenv("LINA_ISA", saved, 1);
    } else {
        unsetenv("LINA_ISA");
    }
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    if (access(lina_bin, X_OK) != 0) {
        printf("FAIL lina binary not found at %s\n", lina_bin);
        return 1;
    }
    snprintf(root, sizeof root, "/tmp/lina_cli_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    e2e();
    bad_inputs();
    task_config_and_bench();
    outputs();
    bench_json();
    isa_env();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
