/* test_analyze.c -- the linear fits behind `lina analyze` (src/analyze/linfit.c) on data
 * with known answers, the model's block replacement, and the command end to end:
 *   - an exact linear (affine) map scores 1, independent noise about d / n, and with
 *     d = 1 the score is the squared Pearson correlation computed here directly;
 *   - least squares recovers a planted map to round-off;
 *   - a block made the identity (zero output projections) is recovered as W = I by
 *     the replacement, and the replaced model's loss equals the original's;
 *   - the replaced span computes x_{j+1} = x_i W^T for an arbitrary W and refuses to train;
 *   - `lina analyze linearity|replace` run, write their table and plot, and reject bad input. */
#include "harness.h"
#include "lina.h"
#include "../src/analyze/linfit.h"
#include "../src/model/model.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *lina_bin;
static char root[64];

static int run(const char *args, char *out, size_t outn, char *err, size_t errn)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s", lina_bin, args);
    return th_sh_capture(cmd, root, out, outn, err, errn);
}

static void fill_normal(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)th_normal();
    }
}

static void test_scores(void)
{
    const int n = 6000, d = 12;
    float *X = malloc(sizeof(float) * n * d), *Y = malloc(sizeof(float) * n * d), *A = malloc(sizeof(float) * d * d);
    fill_normal(X, (size_t)n * d);
    fill_normal(A, (size_t)d * d);
    /* Y = X A + b */
    for (int r = 0; r < n; r++) {
        for (int j = 0; j < d; j++) {
            double s = 0.5 * j - 1.0;
            for (int i = 0; i < d; i++) {
                s += (double)X[r * d + i] * A[i * d + j];
            }
            Y[r * d + j] = (float)s;
        }
    }
    double sc = -1.0;
    int rc = lina_linearity_score(X, Y, n, d, &sc);
    CHECK(rc == 0 && sc > 1.0 - 1e-5 && sc <= 1.0, "an exact affine map scores 1 (%.8f)", sc);
    /* independent noise: about d / n */
    fill_normal(Y, (size_t)n * d);
    rc = lina_linearity_score(X, Y, n, d, &sc);
    CHECK(rc == 0 && sc < 4.0 * d / n, "independent noise scores about d / n = %.4f (%.4f)", (double)d / n, sc);
    /* half signal, half noise: Y = X A / |A col| + e with equal variance -> about 0.5 */
    {
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < d; j++) {
                double s = 0.0, na = 0.0;
                for (int i = 0; i < d; i++) {
                    s += (double)X[r * d + i] * A[i * d + j];
                    na += (double)A[i * d + j] * A[i * d + j];
                }
                Y[r * d + j] = (float)(s / sqrt(na) + th_normal());
            }
        }
        rc = lina_linearity_score(X, Y, n, d, &sc);
        CHECK(rc == 0 && fabs(sc - 0.5) < 0.03, "equal signal and noise score about 0.5 (%.4f)", sc);
    }
    /* d = 1: the score is the squared Pearson correlation */
    {
        double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
        for (int r = 0; r < n; r++) {
            Y[r] = (float)(0.3 * X[r] + th_normal());
            mx += X[r];
            my += Y[r];
        }
        mx /= n;
        my /= n;
        for (int r = 0; r < n; r++) {
            sxy += (X[r] - mx) * (Y[r] - my);
            sxx += (X[r] - mx) * (X[r] - mx);
            syy += (Y[r] - my) * (Y[r] - my);
        }
        double r2 = sxy * sxy / (sxx * syy);
        rc = lina_linearity_score(X, Y, n, 1, &sc);
        CHECK(rc == 0 && fabs(sc - r2) < 1e-9, "d = 1: the score is r^2 (%.10f vs %.10f)", sc, r2);
    }
    /* bad input */
    {
        float c[8] = {1, 1, 1, 1, 1, 1, 1, 1};
        rc = lina_linearity_score(X, c, 8, 1, &sc);
        CHECK(rc != 0 && strstr(lina_last_error(), "constant"), "a constant output is an error (%s)",
              lina_last_error());
        X[7] = NAN;
        rc = lina_linearity_score(X, Y, n, d, &sc);
        CHECK(rc == LINA_ENONFINITE, "a NaN activation is an error (%s)", lina_last_error());
        X[7] = 0.0f;
    }
    /* least squares recovers a planted W [dout, din] */
    {
        const int din = 12, dout = 7;
        float *Wt = malloc(sizeof(float) * dout * din), *W = malloc(sizeof(float) * dout * din);
        fill_normal(Wt, (size_t)dout * din);
        for (int r = 0; r < n; r++) {
            for (int j = 0; j < dout; j++) {
                double s = 0.0;
                for (int i = 0; i < din; i++) {
                    s += (double)X[r * din + i] * Wt[j * din + i];
                }
                Y[r * dout + j] = (float)s;
            }
        }
        double res = -1.0, e = 0.0;
        rc = lina_lstsq(X, Y, n, din, dout, 0.0, W, &res);
        for (int i = 0; i < dout * din; i++) {
            e = fmax(e, fabs((double)W[i] - Wt[i]));
        }
        CHECK(rc == 0 && e < 1e-5 && res < 1e-11, "least squares recovers a planted map (max err %.2e, resid %.1e)",
              e, res);
        free(Wt);
        free(W);
    }
    free(X);
    free(Y);
    free(A);
}

static float *tensor_ptr(lina_model *m, const char *name, size_t *numel)
{
    int i = lina_model_find_tensor(m, name);
    size_t off = 0;
    int nd = 0;
    const int64_t *sh = NULL;
    if (i < 0 || lina_model_tensor(m, i, NULL, &nd, &sh, &off, NULL)) {
        return NULL;
    }
    *numel = 1;
    for (int k = 0; k < nd; k++) {
        *numel *= (size_t)sh[k];
    }
    return lina_model_params(m) + off;
}

static void test_model_replace(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_TRANSFORMER);
    c.hidden_size = 32;
    c.num_hidden_layers = 3;
    c.num_heads = 2;
    c.vocab_size = 50;
    c.intermediate_size = 64;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 11, &m);
    CHECK(rc == 0, "a 3-block transformer (%s)", lina_last_error());
    if (rc) {
        return;
    }
    /* block 1 made the identity: its attention output and MLP down projections zero */
    size_t n1 = 0, n2 = 0;
    float *o = tensor_ptr(m, "model.layers.1.attn.o_proj.weight", &n1);
    float *dn = tensor_ptr(m, "model.layers.1.mlp.down_proj.weight", &n2);
    CHECK(o && dn, "the block's output projections are found");
    if (!o || !dn) {
        lina_model_free(m);
        return;
    }
    memset(o, 0, n1 * sizeof(float));
    memset(dn, 0, n2 * sizeof(float));
    const int B = 4, T = 40, D = 32, N = B * T;
    int32_t tok[160], tgt[160];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)(th_uniform(0, 50));
        tgt[i] = (int32_t)(th_uniform(0, 50));
    }
    lina_ws ws;
    lina_ws_init(&ws);
    double base = 0.0, rep = 0.0;
    rc = lina_model_eval_loss(m, tok, tgt, B, T, &base, &ws);
    const float *x1 = lina_model_hidden(m, 1), *x2 = lina_model_hidden(m, 2);
    CHECK(rc == 0 && x1 && x2 && memcmp(x1, x2, sizeof(float) * N * D) == 0 && !lina_model_hidden(m, 4),
          "hidden states: an identity block leaves the stream unchanged");
    float *X = malloc(sizeof(float) * N * D), *Y = malloc(sizeof(float) * N * D), *W = malloc(sizeof(float) * D * D);
    memcpy(X, x1, sizeof(float) * N * D);
    memcpy(Y, x2, sizeof(float) * N * D);
    rc = lina_lstsq(X, Y, N, D, D, 0.0, W, NULL);
    double e = 0.0;
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++) {
            e = fmax(e, fabs(W[i * D + j] - (i == j ? 1.0 : 0.0)));
        }
    }
    CHECK(rc == 0 && e < 1e-4, "the fitted map of an identity block is I (max err %.2e)", e);
    rc = lina_model_replace_blocks(m, 1, 1, W);
    rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, B, T, &rep, &ws);
    CHECK(rc == 0 && fabs(rep - base) < 1e-5 * fabs(base), "the replaced model's loss equals the original (%.7f vs %.7f)",
          rep, base);
    /* an arbitrary map over blocks 0..1: x_2 = x_0 W^T */
    fill_normal(W, (size_t)D * D);
    rc = lina_model_replace_blocks(m, 0, 1, W);
    rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, B, T, &rep, &ws);
    const float *x0 = lina_model_hidden(m, 0);
    x2 = lina_model_hidden(m, 2);
    double err = 0.0;
    for (int r = 0; rc == 0 && r < N; r++) {
        for (int j = 0; j < D; j++) {
            double s = 0.0;
            for (int i = 0; i < D; i++) {
                s += (double)x0[r * D + i] * W[j * D + i];
            }
            err = fmax(err, fabs(s - x2[r * D + j]) / (1.0 + fabs(s)));
        }
    }
    CHECK(rc == 0 && err < 1e-5, "a replaced span computes x_{j+1} = x_i W^T (err %.2e)", err);
    rc = lina_model_train_step(m, tok, tgt, B, T, &rep, &ws);
    CHECK(rc != 0 && strstr(lina_last_error(), "replaced"), "a model with a replaced span refuses to train (%s)",
          lina_last_error());
    rc = lina_model_replace_blocks(m, 2, 3, W);
    CHECK(rc != 0, "a span past the last block is refused (%s)", lina_last_error());
    rc = lina_model_replace_blocks(m, 0, 0, NULL);
    rc = rc ? rc : lina_model_eval_loss(m, tok, tgt, B, T, &rep, &ws);
    CHECK(rc == 0 && rep == base, "removing the map restores the model");
    lina_ws_free(&ws);
    free(X);
    free(Y);
    free(W);
    lina_model_free(m);
}

static void test_cli(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_TRANSFORMER);
    c.hidden_size = 32;
    c.num_hidden_layers = 3;
    c.num_heads = 2;
    c.vocab_size = 64;
    c.intermediate_size = 64;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 5, &m);
    rc = rc ? rc : lina_model_save(m, root);
    lina_model_free(m);
    uint32_t toks[3001];
    for (int i = 0; i < 3001; i++) {
        toks[i] = (uint32_t)((i * 7 + i / 13) % 64);
    }
    char tp[256], png[256], md[256], args[1024];
    snprintf(tp, sizeof tp, "%s/d.tok", root);
    snprintf(png, sizeof png, "%s/lin.png", root);
    snprintf(md, sizeof md, "%s/lin.md", root);
    rc = rc ? rc : lina_tok_write(tp, toks, 3001, 64, 0);
    CHECK(rc == 0, "model and token file written (%s)", lina_last_error());
    static char out[16384], err[4096];
    snprintf(args, sizeof args, "analyze linearity --model %s --data %s --tokens 1024 --seq-len 64 --png %s --table %s",
             root, tp, png, md);
    int st = run(args, out, sizeof out, err, sizeof err);
    struct stat sb;
    CHECK(st == 0 && strstr(out, "linearity") && strstr(out, "\n2 ") && stat(png, &sb) == 0 && sb.st_size > 100 &&
              stat(md, &sb) == 0,
          "analyze linearity prints a row per block and writes the plot and table (exit %d %.*s)", st,
          (int)strcspn(err, "\n"), err);
    snprintf(md, sizeof md, "%s/rep.md", root);
    snprintf(args, sizeof args,
             "analyze replace --model %s --data %s --scan --calib-tokens 640 --eval-tokens 640 --seq-len 64 "
             "--table %s",
             root, tp, md);
    st = run(args, out, sizeof out, err, sizeof err);
    CHECK(st == 0 && strstr(out, "full model") && strstr(out, "best of its length") && stat(md, &sb) == 0,
          "analyze replace --scan reports the best span of each length (exit %d %.*s)", st, (int)strcspn(err, "\n"),
          err);
    snprintf(args, sizeof args, "analyze recall --model %s --data %s --span 8 --gap 20 --samples 5 --batch 2", root,
             tp);
    st = run(args, out, sizeof out, err, sizeof err);
    double acc2 = -1.0, l2 = -1.0, acc1 = -1.0, l1 = -1.0;
    const char *p2 = strstr(out, "second copy"), *p1 = strstr(out, "first copy");
    int got = p2 && p1 && sscanf(p2, "second copy accuracy %lf loss %lf", &acc2, &l2) == 2 &&
              sscanf(p1, "first copy accuracy %lf loss %lf", &acc1, &l1) == 2;
    CHECK(st == 0 && got && strstr(out, "35 targets each") && acc2 >= 0.0 && acc2 <= 1.0 && acc1 >= 0.0 &&
              acc1 <= 1.0 && l1 > 0.0 && l2 > 0.0,
          "analyze recall scores both copies of 5 samples x 7 targets (exit %d %.*s)", st, (int)strcspn(err, "\n"),
          err);
    struct {
        const char *what, *args, *needle;
    } bad[] = {
        {"a recall span of 1", "analyze recall --model ROOT --data TOK --span 1", "--span"},
        {"an unknown subcommand", "analyze nonlinearity", "unknown subcommand"},
        {"a missing token file", "analyze linearity --model ROOT --data /nonexistent.tok", "nonexistent.tok"},
        {"a missing --data", "analyze linearity --model ROOT", "--data"},
        {"a span past the last block", "analyze replace --model ROOT --data TOK --blocks 2..5 --calib-tokens 640 --eval-tokens 640 --seq-len 64", "blocks 0..2"},
        {"a malformed span", "analyze replace --model ROOT --data TOK --blocks 2-5", "I..J"},
        {"both --blocks and --scan", "analyze replace --model ROOT --data TOK --blocks 1..1 --scan", "one of"},
        {"too few tokens", "analyze linearity --model ROOT --data TOK --tokens 900000", "windows"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char a[1024] = {0};
        const char *p = bad[i].args;
        while (*p) {
            if (!strncmp(p, "ROOT", 4)) {
                strncat(a, root, sizeof a - strlen(a) - 1);
                p += 4;
            } else if (!strncmp(p, "TOK", 3)) {
                strncat(a, tp, sizeof a - strlen(a) - 1);
                p += 3;
            } else {
                size_t l = strlen(a);
                a[l] = *p++;
                a[l + 1] = 0;
            }
        }
        st = run(a, out, sizeof out, err, sizeof err);
        const char *nl = strchr(err, '\n');
        CHECK(st != 0 && st < 128 && strncmp(err, "lina: ", 6) == 0 && nl && nl[1] == '\0' && strstr(err, bad[i].needle),
              "analyze rejects %s (exit %d: %.*s)", bad[i].what, st, (int)strcspn(err, "\n"), err);
    }
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    snprintf(root, sizeof root, "/tmp/lina_an_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_scores();
    test_model_replace();
    test_cli();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
