/* test_dist.c -- distributed training is exact to one process.
 *
 * Run by make test, it starts itself under `mpirun -np 2` and `-np 4`
 * (--oversubscribe) in worker mode. Each worker builds the same small model,
 * computes the loss and every parameter gradient of one update on a global
 * batch in one process (the reference, on every rank), then the same update
 * distributed (its part of the batch, lina_dist_micro, the all-reduce), and
 * rank 0 reports the worst relative difference ||g - g_ref|| / ||g_ref|| over
 * every tensor. Layouts:
 * data parallel (uneven batch shares), sequence parallel (uneven pieces,
 * pieces shorter than one chunk) and the dp x sp grid. In a build without MPI
 * it checks the one clear error instead. */
#include "harness.h"
#include "lina.h"
#include "../src/dist/dist.h"
#include "../src/nn/kind.h"
#include "../src/train/train_internal.h"

#include <string.h>
#include <unistd.h>

#define TOL 1e-5

typedef struct dcase {
    const char *name, *config;
    int B, T, accum;
    int sp;  /* the mixer has sequence parallelism (else --sp > 1 is refused) */
    /* > 0: every tensor whose name ends in "igate_preact.bias" / "fgate_preact.bias" is set to
     * values from -gates to +gates / to 2 (mLSTM: the input gate then wins the stabiliser's max
     * after the first tokens, at the pieces' borders too, the forget gates keep e^F of a piece
     * of 9-19 tokens at 0.1-0.3, so the earlier pieces matter, and |q.n| stays below exp(-m), so
     * the outputs depend on the stabiliser; the default init has the carry branch everywhere) */
    float gates;
    /* > 0: this case's tolerance instead of TOL (mLSTM: its gate biases' gradients are small sums
     * of the stabilised cell's terms, which float32 rounding moves by ~1e-5 relative when only the
     * order of the batch sum changes: 4 data-parallel ranks alone, B 3 T 37, give up to 6e-6;
     * MoM without short convs: its decays' dt_bias / A_log gradients give 6-9e-6 with every product
     * through OpenBLAS, and up to 1.1e-5 when the pieces' few-row products take another
     * summation order than the one-process run's) */
    double tol;
    /* >= 0: packed documents separated by this token (frequent in the batch), trained
     * through the varlen step; data parallel only */
    int32_t doc_sep;
} dcase;

#define SMALL "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_heads\": 2, \"vocab_size\": 64, " \
              "\"intermediate_size\": 64"

/* T = 37 on 2 / 4 pieces: uneven pieces of 18-19 / 9-10 tokens, all shorter
 * than one chunk (64); T = 150: pieces longer than a chunk, and not a multiple of it */
static const dcase k_cases[] = {
    {"gla", "{\"model_type\": \"gla\", " SMALL "}", 5, 37, 1, 1, 0.0f, 0.0, -1},
    {"gla accum 2", "{\"model_type\": \"gla\", " SMALL "}", 4, 20, 2, 1, 0.0f, 0.0, -1},
    {"gla T 150", "{\"model_type\": \"gla\", " SMALL "}", 2, 150, 1, 1, 0.0f, 0.0, -1},
    {"retnet", "{\"model_type\": \"retnet\", " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"gla short convs", "{\"model_type\": \"gla\", \"use_short_conv\": true, " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"hgrn2", "{\"model_type\": \"hgrn2\", \"expand_ratio\": 16, " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"linear_attn hedgehog", "{\"model_type\": \"linear_attn\", \"feature_map\": \"hedgehog\", " SMALL "}", 3, 37, 1,
     1, 0.0f, 0.0, -1},
    {"mamba2 (conv halo)", "{\"model_type\": \"mamba2\", \"head_dim\": 16, \"state_size\": 8, \"expand\": 2, "
     "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"mamba2 short pieces", "{\"model_type\": \"mamba2\", \"head_dim\": 16, \"state_size\": 8, \"expand\": 2, "
     "\"hidden_size\": 32, \"num_hidden_layers\": 2, \"vocab_size\": 64}", 2, 9, 1, 1, 0.0f, 0.0, -1},
    {"gla hybrid (attention on layer 1)", "{\"model_type\": \"gla\", \"attn\": {\"layers\": [1], \"num_heads\": 2}, "
     SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"transformer", "{\"model_type\": \"transformer\", " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"transformer (grouped kv heads, qk norm, short convs, pieces of 2-3 tokens)",
     "{\"model_type\": \"transformer\", \"num_kv_heads\": 1, \"qk_norm\": true, \"use_short_conv\": true, "
     "\"conv_size\": 4, " SMALL "}", 2, 9, 1, 1, 0.0f, 0.0, -1},
    {"transformer window 40 (pieces longer than a tile of 128)", "{\"model_type\": \"transformer\", "
     "\"window_size\": 40, " SMALL "}", 1, 600, 1, 1, 0.0f, 0.0, -1},
    {"delta_net hybrid (windowed attention on layer 0)", "{\"model_type\": \"delta_net\", \"attn\": {\"layers\": "
     "[0], \"num_heads\": 4, \"num_kv_heads\": 2, \"window_size\": 5}, " SMALL "}", 2, 29, 1, 1, 0.0f, 0.0, -1},
    {"delta_net (short convs)", "{\"model_type\": \"delta_net\", " SMALL "}", 4, 29, 1, 1, 0.0f, 0.0, -1},
    {"gated_deltanet (short convs, pieces of 2-3 tokens)", "{\"model_type\": \"gated_deltanet\", \"head_dim\": 16, "
     "\"expand_v\": 2, " SMALL "}", 2, 9, 1, 1, 0.0f, 0.0, -1},
    {"delta_net", "{\"model_type\": \"delta_net\", \"use_short_conv\": false, " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"gated_deltanet", "{\"model_type\": \"gated_deltanet\", \"use_short_conv\": false, \"head_dim\": 16, "
     "\"expand_v\": 2, " SMALL "}", 3, 37, 1, 1, 0.0f, 0.0, -1},
    {"gated_deltaproduct", "{\"model_type\": \"gated_deltaproduct\", \"use_short_conv\": false, \"head_dim\": 16, "
     "\"num_householder\": 2, " SMALL "}", 2, 37, 1, 1, 0.0f, 0.0, -1},
    {"mom (4 memories, top 2, shared memory, short convs; no balance loss)", "{\"model_type\": \"mom\", "
     "\"num_memories\": 4, \"topk\": 2, \"shared_mem\": true, \"head_dim\": 16, \"aux_loss_scale\": 0, " SMALL "}",
     3, 37, 1, 1, 0.0f, 0.0, -1},
    {"mom (pieces of 2-3 tokens: memories with no token in a piece)", "{\"model_type\": \"mom\", \"num_memories\": 4, "
     "\"topk\": 1, \"head_dim\": 16, \"aux_loss_scale\": 0, " SMALL "}", 2, 9, 1, 1, 0.0f, 0.0, -1},
    {"mom (no short convs)", "{\"model_type\": \"mom\", \"num_memories\": 3, \"topk\": 2, \"use_short_conv\": false, "
     "\"head_dim\": 16, \"aux_loss_scale\": 0, " SMALL "}", 3, 37, 1, 1, 0.0f, 3e-5, -1},
    {"kda (per-channel gates, short convs)", "{\"model_type\": \"kda\", \"head_dim\": 16, " SMALL "}", 3, 37, 1, 1,
     0.0f, 0.0, -1},
    {"gla packed documents", "{\"model_type\": \"gla\", \"use_short_conv\": true, " SMALL "}", 5, 37, 1, 1, 0.0f,
     0.0, 5},
    {"gated_deltanet packed documents, accum 2", "{\"model_type\": \"gated_deltanet\", \"head_dim\": 16, " SMALL "}", 3,
     29, 2, 1, 0.0f, 0.0, 5},
    {"mlstm (default gates: the stabiliser carries)", "{\"model_type\": \"mlstm\", " SMALL "}", 3, 37, 1, 1, 0.0f,
     5e-5, -1},
    {"mlstm (input gates winning the stabiliser's max)", "{\"model_type\": \"mlstm\", " SMALL "}", 3, 37, 1, 1, 2.0f,
     5e-5, -1},
    {"mlstm (short convs, output gate, pieces of 2-3 tokens)", "{\"model_type\": \"mlstm\", \"use_short_conv\": true, "
     "\"use_output_gate\": true, " SMALL "}", 2, 9, 1, 1, 2.0f, 5e-5, -1},
};

/* ||a - b|| / ||b|| (2-norms; NaN in a counts as an error) */
static double norm_err(const float *a, const float *b, size_t n)
{
    double e = 0.0, m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        e += d * d;
        m += (double)b[i] * b[i];
    }
    e = m > 0.0 ? sqrt(e / m) : sqrt(e);
    return e == e ? e : INFINITY;
}

static int worker_case(lina_dist *d, const dcase *c)
{
    int rank0 = lina_dist_rank(d) == 0;
    lina_config cfg;
    lina_model *m = NULL;
    lina_trainable t;
    lina_ws ws;
    lina_ws_init(&ws);
    int rc = lina_config_parse(c->config, strlen(c->config), "test config", &cfg);
    if (rc == LINA_OK) {
        rc = lina_model_create(&cfg, 7, &m);
    }
    if (rc == LINA_OK) {
        rc = lina_trainable_from_model(m, &t);
    }
    if (rc != LINA_OK) {
        if (rank0) {
            CHECK(0, "dist %s: model: %s", c->name, lina_last_error());
        }
        return rc;
    }
    for (int i = 0; c->gates > 0.0f && i < lina_model_num_tensors(m); i++) {
        const char *name;
        const int64_t *shape;
        int ndim, decay;
        size_t off;
        lina_model_tensor(m, i, &name, &ndim, &shape, &off, &decay);
        size_t ln = strlen(name), numel = (size_t)shape[0];
        int ig = ln >= 17 && !strcmp(name + ln - 17, "igate_preact.bias");
        int fg = ln >= 17 && !strcmp(name + ln - 17, "fgate_preact.bias");
        for (size_t j = 0; (ig || fg) && j < numel; j++) {
            lina_model_params(m)[off + j] = ig ? c->gates * (2.0f * (float)j / (float)(numel > 1 ? numel - 1 : 1) - 1.0f)
                                               : 2.0f;
        }
    }
    if (c->doc_sep >= 0 && lina_dist_sp_size(d) > 1) {
        lina_model_free(m); /* --pack is data parallel only (lina train refuses it with --sp) */
        return LINA_OK;
    }
    lina_sp sp;
    /* every data-parallel rank needs a sequence: at least one more than the ranks (uneven shares) */
    const int B = c->B >= lina_dist_dp_size(d) ? c->B : lina_dist_dp_size(d) + 1;
    rc = lina_dist_sp_init(&t, d, B, c->T, &sp);
    if (lina_dist_sp_size(d) > 1 && !c->sp) {
        /* a mixer without a piece summary: refused with one error naming it */
        if (rank0) {
            CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "sequence parallelism (--sp)"),
                  "dist %s: --sp %d is refused (%s)", c->name, lina_dist_sp_size(d), lina_last_error());
        }
        lina_model_free(m);
        return LINA_OK;
    }
    if (rc != LINA_OK) {
        if (rank0) {
            CHECK(0, "dist %s: sp: %s", c->name, lina_last_error());
        }
        lina_model_free(m);
        return rc;
    }
    size_t n = lina_model_num_params(m), bt = (size_t)B * c->T * c->accum;
    int32_t *tok = malloc(bt * sizeof *tok), *tgt = malloc(bt * sizeof *tgt);
    int32_t *tokl = malloc(bt * sizeof *tok), *tgtl = malloc(bt * sizeof *tgt);
    float *ref = malloc(n * sizeof *ref);
    unsigned long long s = 12345;
    for (size_t i = 0; i < bt; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((s >> 33) % 64);
        tgt[i] = (int32_t)((s >> 17) % 64);
        if (c->doc_sep >= 0 && (s >> 45) % 6 == 0) {
            tok[i] = c->doc_sep; /* a document ends here */
        }
    }
    int64_t *cu = malloc((bt + 1) * sizeof *cu), ncu = 0;
    for (int a = 0; c->doc_sep >= 0 && a < c->accum; a++) {
        /* the separators' targets ignored, as lina train does for the global batch */
        size_t o = (size_t)a * B * c->T;
        lina_tok_docs(tok + o, tgt + o, B, c->T, c->doc_sep, cu, &ncu);
    }
    /* the reference: one process, the whole global batch(es) */
    double lref = 0.0, ldist = 0.0;
    lina_model_zero_grad(m);
    for (int a = 0; a < c->accum && rc == LINA_OK; a++) {
        double l = 0.0;
        size_t o = (size_t)a * B * c->T;
        if (c->doc_sep >= 0) {
            lina_tok_docs(tok + o, tgt + o, B, c->T, c->doc_sep, cu, &ncu);
            rc = lina_model_train_step_varlen(m, tok + o, tgt + o, B, c->T, cu, ncu, &l, &ws);
        } else {
            rc = lina_model_train_step(m, tok + o, tgt + o, B, c->T, &l, &ws);
        }
        lref += l;
    }
    memcpy(ref, lina_model_grads(m), n * sizeof *ref);
    /* distributed */
    lina_model_zero_grad(m);
    for (int a = 0; a < c->accum && rc == LINA_OK; a++) {
        double l = 0.0;
        size_t o = (size_t)a * B * c->T;
        rc = lina_dist_micro(&t, d, &sp, tok + o, tgt + o, B, c->T, a == 0, a == c->accum - 1, c->doc_sep, tokl,
                             tgtl, &l, &ws);
        ldist += l;
    }
    if (rc == LINA_OK) {
        rc = lina_dist_sum_d(d, LINA_DIST_WORLD, &ldist, 1);
    }
    /* the all-reduce the last micro-batch's backward started, completed */
    int rf = lina_dist_grads_finish(d, lina_model_grads(m), n);
    rc = rc ? rc : rf;
    double worst = 0.0;
    const char *wname = "";
    int nt = lina_model_num_tensors(m);
    for (int i = 0; rc == LINA_OK && i < nt; i++) {
        const char *name;
        const int64_t *shape;
        int ndim, decay;
        size_t off;
        lina_model_tensor(m, i, &name, &ndim, &shape, &off, &decay);
        size_t numel = 1;
        for (int k = 0; k < ndim; k++) {
            numel *= (size_t)shape[k];
        }
        double e = norm_err(lina_model_grads(m) + off, ref + off, numel);
        if (!(e <= worst)) {
            worst = e;
            wname = name;
        }
    }
    double lerr = fabs(ldist - lref) / fabs(lref);
    if (rank0) {
        if (rc != LINA_OK) {
            CHECK(0, "dist %s: %s", c->name, lina_last_error());
        } else {
            const double tol = c->tol > 0.0 ? c->tol : TOL;
            CHECK(lerr <= TOL && worst <= tol,
                  "dist %s, %d ranks = %d dp x %d sp, B %d T %d: loss rel %.1e, worst gradient rel %.1e (%s; %d "
                  "tensors; tol %.0e)",
                  c->name, lina_dist_size(d), lina_dist_dp_size(d), lina_dist_sp_size(d), B, c->T, lerr, worst,
                  wname, nt, tol);
        }
    }
    free(cu);
    free(tok);
    free(tgt);
    free(tokl);
    free(tgtl);
    free(ref);
    lina_sp_keep_free(&sp);
    lina_ws_free(&ws);
    lina_model_free(m);
    return rc;
}

static int worker(int sp)
{
    lina_set_threads(1);
    lina_dist *d = NULL;
    if (lina_dist_init(sp, 0, &d) != LINA_OK) {
        printf("FAIL dist worker: %s\n", lina_last_error());
        return 1;
    }
    int bad = 0;
    /* buckets of 2000 floats: the gradient's all-reduce starts in many pieces during the backward */
    lina_dist_bucket = 2000;
    for (size_t i = 0; i < sizeof k_cases / sizeof k_cases[0]; i++) {
        bad |= worker_case(d, &k_cases[i]) != LINA_OK;
    }
    lina_dist_stats ds;
    lina_dist_get_stats(d, &ds);
    if (lina_dist_rank(d) == 0) {
        CHECK(ds.sum_bytes > 0.0 && ds.early_bytes > 0.2 * ds.sum_bytes && ds.early_bytes < ds.sum_bytes,
              "dist: %.0f%% of the gradient bytes started their all-reduce during the backward (%.2f of %.2f MB)",
              100.0 * ds.early_bytes / (ds.sum_bytes > 0.0 ? ds.sum_bytes : 1.0), ds.early_bytes / 1e6,
              ds.sum_bytes / 1e6);
    }
    /* the layout errors: --sp that does not divide the job, --dp that does not match */
    lina_dist *e = NULL;
    int r1 = lina_dist_init(lina_dist_size(d) + 1, 0, &e);
    int r2 = lina_dist_init(1, lina_dist_size(d) + 1, &e);
    if (lina_dist_rank(d) == 0) {
        CHECK(r1 == LINA_EINVAL && r2 == LINA_EINVAL && strstr(lina_last_error(), "mpirun -np"),
              "dist: --sp / --dp that do not fit %d ranks are one error (%s)", lina_dist_size(d), lina_last_error());
    }
    lina_dist_free(d);
    return bad || th_exit();
}

/* the training losses of DIR/log.jsonl into l[0..cap); returns the count */
static int read_losses(const char *dir, double *l, int cap)
{
    char path[512], line[1024];
    snprintf(path, sizeof path, "%s/log.jsonl", dir);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && n < cap && fgets(line, sizeof line, f)) {
        long long st;
        double v;
        if (sscanf(line, "{\"step\":%lld,\"loss\":%lf", &st, &v) == 2 && st == n + 1) {
            l[n++] = v;
        }
    }
    if (f) {
        fclose(f);
    }
    return n;
}

/* worst |a - b| / |b| over n losses */
static double loss_err(const double *a, const double *b, int n)
{
    double e = 0.0;
    for (int i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / fabs(b[i]);
        if (!(d <= e)) {
            e = d;
        }
    }
    return e;
}

/* Run cmd (in dir), then compare the first n losses of run directory run
 * with ref: one check line "dist cli: <what>: ..." */
static void run_compare(const char *cmd, const char *dir, const char *run, const double *ref, int n, const char *what)
{
    static char out[65536], err[65536];
    char path[512];
    double got[64];
    int st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(path, sizeof path, "%s/%s", dir, run);
    int done = read_losses(path, got, n);
    double e = loss_err(got, ref, n);
    CHECK(st == 0 && done == n && e <= TOL, "dist cli: %s: %d losses equal one process's to %.1e (status %d %.200s)",
          what, done, e, st, st ? err : "");
}

/* Under `make asan` the ranks run without LeakSanitizer: Open MPI's own allocations
 * (its components' tables and strings) outlive MPI_Finalize and would be reported as the
 * ranks' leaks; lina's code is leak-checked by every single-process test. Outside an
 * ASan build the variable is not read. */
#define MPI_ENV                                                                                               \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "                                                \
    "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 "
#define MPIRUN MPI_ENV "timeout 300 mpirun --oversubscribe"
#define STEPS 40

/* lina train under mpirun: losses equal to one process, a rank killed
 * mid-run leaves the last checkpoint and --resume finishes the run, a run
 * resumed with another rank count (4 -> 1) continues with the same losses,
 * ranks with different options stop at start. */
static void cli_tests(const char *dir)
{
    char bin[4096];
    if (!realpath(getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina", bin)) {
        CHECK(0, "dist cli: no lina binary (LINA_BIN)");
        return;
    }
    char cmd[16384], out[65536], err[65536], path[512];
    uint32_t toks[6000];
    unsigned long long s = 99;
    for (int i = 0; i < 6000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        toks[i] = (uint32_t)((s >> 33) % 48);
    }
    snprintf(path, sizeof path, "%s/train.tok", dir);
    CHECK(lina_tok_write(path, toks, 6000, 64, 2) == LINA_OK, "dist cli: token file");
    snprintf(path, sizeof path, "%s/gla.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(k_cases[0].config, f);
        fclose(f);
    }
    const char *common = "--config %s/gla.json --data %s/train.tok --batch 16 --seq-len 96 --lr 3e-3 --threads 1 --quiet";
    char args[1024];
    snprintf(args, sizeof args, common, dir, dir);
    double ref[STEPS], got[STEPS];
    /* the reference: one process */
    snprintf(cmd, sizeof cmd, "%s train %s --steps %d --out %s/one", bin, args, STEPS, dir);
    int st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(path, sizeof path, "%s/one", dir);
    CHECK(st == 0 && read_losses(path, ref, STEPS) == STEPS, "dist cli: one-process run (status %d %.200s)", st, st ? err : "");

    /* 2 ranks, one of them killed mid-run; then --resume with 2 ranks */
    snprintf(cmd, sizeof cmd,
             "cd %s && { " MPIRUN " -np 2 %s train %s --steps %d --save-every 5 --out %s/kill & mp=$!; i=0; "
             "while [ $i -lt 3000 ] && [ \"$(cat kill/log.jsonl 2>/dev/null | wc -l)\" -lt 12 ]; do sleep 0.02; "
             "i=$((i+1)); done; "
             "kid=$(awk -v mp=$mp '$4 == mp {print $1}' /proc/[0-9]*/stat 2>/dev/null | tail -n 1); "
             "kill -9 $kid; wait $mp; echo \"mpirun $?\"; }",
             dir, bin, args, STEPS, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(path, sizeof path, "%s/kill", dir);
    int done = read_losses(path, got, STEPS);
    char tj[512];
    snprintf(tj, sizeof tj, "%s/kill/checkpoint/trainer.json", dir);
    CHECK(!strstr(out, "mpirun 0") && done >= 12 && done < STEPS && access(tj, R_OK) == 0,
          "dist cli: a rank killed at step %d of %d ends the job (%.40s), the checkpoint is intact", done, STEPS,
          out);
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 %s train --out %s/kill --resume --quiet --threads 1", bin, dir);
    run_compare(cmd, dir, "kill", ref, STEPS, "--resume with 2 ranks finishes the run");

    /* 4 ranks for 15 steps, then one process resumes */
    snprintf(cmd, sizeof cmd, MPIRUN " -np 4 %s train %s --steps %d --stop-after 15 --out %s/four && %s train --out "
             "%s/four --resume --quiet --threads 1",
             bin, args, STEPS, dir, bin, dir);
    run_compare(cmd, dir, "four", ref, STEPS, "15 steps on 4 ranks, then a one-process --resume");

    /* the dp x sp grid through lina train: 2 data-parallel groups of 2 pieces */
    snprintf(cmd, sizeof cmd, MPIRUN " -np 4 %s train %s --steps %d --stop-after 10 --sp 2 --out %s/grid", bin, args,
             STEPS, dir);
    run_compare(cmd, dir, "grid", ref, 10, "lina train on 4 ranks = 2 dp x 2 sp");

    /* packed documents (separator 7, about one token in 48) on 2 data-parallel ranks = one process;
     * refused with --sp */
    snprintf(path, sizeof path, "%s/gla-pack.json", dir);
    f = fopen(path, "w");
    if (f) {
        fputs("{\"model_type\": \"gla\", \"eos_token_id\": 7, " SMALL "}", f);
        fclose(f);
    }
    double pref[10];
    snprintf(cmd, sizeof cmd, "%s train --config %s/gla-pack.json --data %s/train.tok --batch 6 --seq-len 64 --lr 3e-3 "
             "--threads 1 --quiet --pack --steps 10 --out %s/pack1", bin, dir, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    snprintf(path, sizeof path, "%s/pack1", dir);
    CHECK(st == 0 && read_losses(path, pref, 10) == 10, "dist cli: one-process --pack run (status %d %.200s)", st,
          st ? err : "");
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 %s train --config %s/gla-pack.json --data %s/train.tok --batch 6 "
             "--seq-len 64 --lr 3e-3 --threads 1 --quiet --pack --steps 10 --out %s/pack2", bin, dir, dir, dir);
    run_compare(cmd, dir, "pack2", pref, 10, "--pack on 2 data-parallel ranks");
    snprintf(cmd, sizeof cmd, MPIRUN " -np 2 %s train --config %s/gla-pack.json --data %s/train.tok --batch 6 "
             "--seq-len 64 --threads 1 --quiet --pack --sp 2 --steps 2 --out %s/pack3", bin, dir, dir, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    CHECK(st != 0 && strstr(err, "--pack with --sp 2 is not supported"), "dist cli: --pack with --sp is one error "
          "(status %d: %.160s)", st, err);

    /* different options on the two ranks (MPMD) */
    snprintf(cmd, sizeof cmd, MPIRUN " -np 1 %s train %s --steps 3 --out %s/mm : -np 1 %s train %s --steps 3 --lr 1e-3 "
             "--out %s/mm",
             bin, args, dir, bin, args, dir);
    st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
    const char *why = strstr(err, "rank 1's");
    CHECK(st != 0 && why && strstr(why, "differ from rank 0's"),
          "dist cli: ranks with different options stop at start (status %d: %.120s)", st, why ? why : err);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--worker")) {
        return worker(atoi(argv[2]));
    }
    if (!lina_dist_built()) {
        lina_dist *d = NULL;
        int rc = lina_dist_init(1, 2, &d);
        CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "without MPI"),
              "dist: built without MPI, --dp 2 is one clear error (%s)", lina_last_error());
        return th_exit();
    }
    char dir[] = "/tmp/lina_dist_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "dist: mkdtemp");
        return th_exit();
    }
    /* np x sp layouts */
    static const int runs[][2] = {{2, 1}, {4, 1}, {2, 2}, {4, 4}, {4, 2}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char cmd[4096], out[65536], err[65536];
        snprintf(cmd, sizeof cmd,
                 MPI_ENV "OMPI_MCA_rmaps_base_oversubscribe=1 timeout 300 mpirun --oversubscribe -np %d %s --worker %d",
                 runs[i][0], argv[0], runs[i][1]);
        int st = th_sh_capture(cmd, dir, out, sizeof out, err, sizeof err);
        fputs(out, stdout);
        if (strstr(out, "FAIL ")) {
            th_failed++;
        }
        CHECK(st == 0 && strstr(out, "ok "), "dist: mpirun -np %d worker --sp %d exits 0 (status %d%s%.300s)",
              runs[i][0], runs[i][1], st, st ? "; stderr: " : "", st ? err : "");
    }
    cli_tests(dir);
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf %s", dir);
    if (system(rm) != 0) {
        printf("# could not remove %s\n", dir);
    }
    return th_exit();
}
