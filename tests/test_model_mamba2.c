/* test_model_mamba2.c -- the Mamba2 LM (model_type "mamba2", docs/mixers.md 6
 * and 15): a double-precision reference of the Mamba2 mixer written here,
 * token by token from docs/mixers.md 6 (the state H_t [P, N] with its true,
 * possibly negative decay, not lina's sign-folded engine inputs), plugged
 * into the shared reference LM of model_ref.h; whole-model logits, loss and
 * finite-difference gradients, chunk vs recurrent form, prefill + decode,
 * negative eigenvalues (docs/tasks.md 2.1: decay 2 exp(delta A) - 1, checked to be
 * negative for a good share of the steps), the FLA names and shapes of the
 * backbone.* state dict, initial values, and bad configs. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"
#include "../src/nn/nn.h"

#include <stdint.h>
#include <string.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

/* ---------------------------------------------------- double reference */

static long g_neg_steps, g_all_steps; /* decays < 0 seen by the reference */

static const double *m2t(const ref_model *r, const double *P, int l, const char *suffix)
{
    char fmt[128];
    snprintf(fmt, sizeof(fmt), "backbone.layers.%%d.mixer.%s", suffix);
    return P + toff(r->m, fmt, l);
}

static double dsilu_ref(double x)
{
    return x * rsig(x);
}

/* Mamba2 mixer over the batch: out [B*T, D] from xn [B*T, D] */
static double ref_mamba2(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_config *c = r->c;
    const int D = c->hidden_size, H = c->num_heads, Pd = c->head_dim, N = c->state_size, G = c->n_groups;
    const int W = c->conv_kernel, E = H * Pd, GN = G * N, Cc = E + 2 * GN, Din = 2 * E + 2 * GN + H;
    const double *Win = m2t(r, P, l, "in_proj.weight");
    const double *bin = c->use_bias ? m2t(r, P, l, "in_proj.bias") : NULL;
    const double *cw = m2t(r, P, l, "conv1d.weight");
    const double *cb = c->use_conv_bias ? m2t(r, P, l, "conv1d.bias") : NULL;
    const double *dtb = m2t(r, P, l, "dt_bias"), *Alog = m2t(r, P, l, "A_log"), *Dp = m2t(r, P, l, "D");
    const double *nw = c->rmsnorm ? m2t(r, P, l, "norm.weight") : NULL;
    const double *Wout = m2t(r, P, l, "out_proj.weight");
    const double *bout = c->use_bias ? m2t(r, P, l, "out_proj.bias") : NULL;
    double *zxd = malloc(sizeof(double) * (size_t)T * Din);
    double *xbc = malloc(sizeof(double) * (size_t)T * Cc);
    double *S = malloc(sizeof(double) * (size_t)H * Pd * N);
    double *y = malloc(sizeof(double) * E), *yn = malloc(sizeof(double) * E);
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            rlin(zxd + (size_t)t * Din, Win, bin, xn + ((size_t)b * T + t) * D, D, Din);
        }
        /* depthwise causal conv (weight [Cc, 1, W], last tap = current token) + bias, SiLU */
        for (int t = 0; t < T; t++) {
            for (int ch = 0; ch < Cc; ch++) {
                double s = cb ? cb[ch] : 0.0;
                for (int j = 0; j < W; j++) {
                    int tau = t - W + 1 + j;
                    if (tau >= 0) {
                        s += cw[(size_t)ch * W + j] * zxd[(size_t)tau * Din + E + ch];
                    }
                }
                xbc[(size_t)t * Cc + ch] = dsilu_ref(s);
            }
        }
        memset(S, 0, sizeof(double) * (size_t)H * Pd * N);
        for (int t = 0; t < T; t++) {
            const double *z = zxd + (size_t)t * Din, *dt = z + E + Cc;
            const double *x = xbc + (size_t)t * Cc, *Bm = x + E, *Cm = x + E + GN;
            for (int h = 0; h < H; h++) {
                double dl = rsoftplus(dt[h] + dtb[h]);
                double A = -exp(Alog[h]);
                double a = exp(dl * A);
                if (c->allow_neg_eigval) {
                    a = 2.0 * a - 1.0;
                }
                g_neg_steps += a < 0.0;
                g_all_steps++;
                int grp = h / (H / G);
                for (int p = 0; p < Pd; p++) {
                    double *Sp = S + ((size_t)h * Pd + p) * N;
                    double xp = x[h * Pd + p], acc = 0.0;
                    for (int n = 0; n < N; n++) {
                        Sp[n] = a * Sp[n] + dl * xp * Bm[grp * N + n];
                        acc += Sp[n] * Cm[grp * N + n];
                    }
                    y[h * Pd + p] = acc + (c->D_has_hdim ? Dp[h * Pd + p] : Dp[h]) * xp;
                }
            }
            /* gated RMSNorm in groups of E/G */
            int gs = E / G;
            for (int gi = 0; gi < G; gi++) {
                double u[4096], ss = 0.0;
                for (int i = 0; i < gs; i++) {
                    int f = gi * gs + i;
                    u[i] = c->norm_before_gate || !c->rmsnorm ? y[f] : y[f] * dsilu_ref(z[f]);
                    ss += u[i] * u[i];
                }
                double rs = 1.0 / sqrt(ss / gs + c->norm_eps);
                for (int i = 0; i < gs; i++) {
                    int f = gi * gs + i;
                    if (!c->rmsnorm) {
                        yn[f] = y[f] * dsilu_ref(z[f]);
                    } else if (c->norm_before_gate) {
                        yn[f] = u[i] * rs * nw[f] * dsilu_ref(z[f]);
                    } else {
                        yn[f] = u[i] * rs * nw[f];
                    }
                }
            }
            rlin(out + ((size_t)b * T + t) * D, Wout, bout, yn, E, D);
        }
    }
    free(zxd);
    free(xbc);
    free(S);
    free(y);
    free(yn);
    return 0.0;
}

/* ------------------------------------------------------------ configs */

static lina_config tiny_m2(int G, int neg)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_MAMBA2);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.vocab_size = 40;
    c.expand = 2;
    c.head_dim = 8;
    c.state_size = 4;
    c.n_groups = G;
    c.num_heads = c.expand * c.hidden_size / c.head_dim;
    c.chunk_size = 64;
    c.tie_word_embeddings = 0;
    c.allow_neg_eigval = neg;
    return c;
}

/* run test_fd and say how many reference steps had a negative decay */
static void fd_neg(const char *label, lina_config c, int B, int T, double frac)
{
    g_neg_steps = g_all_steps = 0;
    test_fd(label, c, B, T, frac);
    double share = g_all_steps ? (double)g_neg_steps / g_all_steps : 0.0;
    if (c.allow_neg_eigval) {
        CHECK(share > 0.05 && share < 0.95, "%s: %.0f%% of the decays are negative", label, 100.0 * share);
    } else {
        CHECK(g_neg_steps == 0, "%s: no negative decay without allow_neg_eigval", label);
    }
}

/* ---------------------------------------------------- names and shapes */

static void test_names(void)
{
    lina_config c = tiny_m2(2, 0);
    c.use_bias = 1;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 5, &m);
    CHECK(rc == 0, "names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    const int D = 16, E = 32, H = 4, GN = 8, W = 4, V = 40;
    check_tensor(m, "backbone.embeddings.weight", 2, V, D, 0, 0);
    for (int l = 0; l < 2; l++) {
        char nm[128];
#define NM(s) (snprintf(nm, sizeof(nm), "backbone.layers.%d.%s", l, s), nm)
        check_tensor(m, NM("norm.weight"), 1, D, 0, 0, 0);
        check_tensor(m, NM("mixer.in_proj.weight"), 2, 2 * E + 2 * GN + H, D, 0, 1);
        check_tensor(m, NM("mixer.in_proj.bias"), 1, 2 * E + 2 * GN + H, 0, 0, 0);
        check_tensor(m, NM("mixer.conv1d.weight"), 3, E + 2 * GN, 1, W, 1);
        check_tensor(m, NM("mixer.conv1d.bias"), 1, E + 2 * GN, 0, 0, 0);
        check_tensor(m, NM("mixer.dt_bias"), 1, H, 0, 0, 0);
        check_tensor(m, NM("mixer.A_log"), 1, H, 0, 0, 0);
        check_tensor(m, NM("mixer.D"), 1, H, 0, 0, 0);
        check_tensor(m, NM("mixer.norm.weight"), 1, E, 0, 0, 0);
        check_tensor(m, NM("mixer.out_proj.weight"), 2, D, E, 0, 1);
        check_tensor(m, NM("mixer.out_proj.bias"), 1, D, 0, 0, 0);
#undef NM
    }
    check_tensor(m, "backbone.norm_f.weight", 1, D, 0, 0, 0);
    check_tensor(m, "lm_head.weight", 2, V, D, 0, 1);
    int stray = 0;
    for (int i = 0; i < lina_model_num_tensors(m); i++) {
        const char *name;
        lina_model_tensor(m, i, &name, NULL, NULL, NULL, NULL);
        stray += strncmp(name, "backbone.", 9) != 0 && strcmp(name, "lm_head.weight") != 0;
        stray += strstr(name, "mlp") != NULL;
    }
    CHECK(stray == 0 && lina_model_num_tensors(m) == 2 + 2 * 11 + 1,
          "names: %d tensors, only backbone.* and lm_head, no MLP", lina_model_num_tensors(m));
    /* initial values: A in [1, 16], dt = softplus(dt_bias) in [dt_min, dt_max], D = 1, norms 1, biases 0 */
    size_t n;
    const float *p = tensor_data(m, "backbone.layers.1.mixer.A_log", &n);
    int ok = p && n == 4;
    for (size_t i = 0; ok && i < n; i++) {
        ok = p[i] >= -1e-6f && p[i] <= logf(16.0f) + 1e-6f;
    }
    CHECK(ok, "init: A_log in [0, ln 16]");
    p = tensor_data(m, "backbone.layers.1.mixer.dt_bias", &n);
    ok = p && n == 4;
    for (size_t i = 0; ok && i < n; i++) {
        double dt = log1p(exp((double)p[i]));
        ok = dt >= c.dt_min * 0.999 && dt <= c.dt_max * 1.001;
    }
    CHECK(ok, "init: softplus(dt_bias) in [dt_min, dt_max]");
    const char *ones[] = {"backbone.layers.0.mixer.D", "backbone.layers.0.mixer.norm.weight"};
    const char *zeros[] = {"backbone.layers.0.mixer.in_proj.bias", "backbone.layers.0.mixer.out_proj.bias"};
    ok = 1;
    for (int k = 0; k < 2; k++) {
        p = tensor_data(m, ones[k], &n);
        for (size_t i = 0; p && i < n; i++) {
            ok &= p[i] == 1.0f;
        }
        ok &= p != NULL;
    }
    for (int k = 0; k < 2; k++) {
        p = tensor_data(m, zeros[k], &n);
        for (size_t i = 0; p && i < n; i++) {
            ok &= p[i] == 0.0f;
        }
        ok &= p != NULL;
    }
    CHECK(ok, "init: D and norm.weight ones, biases zeros");
    lina_model_free(m);
    /* options that drop or reshape tensors */
    c = tiny_m2(1, 0);
    c.use_conv_bias = 0;
    c.rmsnorm = 0;
    c.D_has_hdim = 1;
    rc = lina_model_create(&c, 5, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "backbone.layers.0.mixer.conv1d.bias") < 0 &&
              lina_model_find_tensor(m, "backbone.layers.0.mixer.norm.weight") < 0 &&
              lina_model_find_tensor(m, "backbone.layers.0.mixer.in_proj.bias") < 0,
          "names: no conv bias, norm or in_proj bias when switched off");
    if (!rc) {
        check_tensor(m, "backbone.layers.0.mixer.D", 1, E, 0, 0, 0);
        lina_model_free(m);
    }
}

/* ------------------------------------------------------- init statistics */

/* every element of tensor `suffix` (all layers) lies in [-a, a] and the sample has mean ~0 and
 * variance a^2/3 (U(-a, a)) within 4 standard errors */
static void check_uniform(lina_model *m, int L, const char *suffix, double a)
{
    double s1 = 0.0, s2 = 0.0, cnt = 0.0;
    int inside = 1;
    char name[128];
    for (int l = 0; l < L; l++) {
        size_t n;
        snprintf(name, sizeof(name), "backbone.layers.%d.mixer.%s", l, suffix);
        const float *p = tensor_data(m, name, &n);
        for (size_t i = 0; p && i < n; i++) {
            inside &= fabs(p[i]) <= a * (1.0 + 1e-6);
            s1 += p[i];
            s2 += (double)p[i] * p[i];
            cnt += 1.0;
        }
    }
    double mean = s1 / cnt, var = s2 / cnt - mean * mean, v0 = a * a / 3.0;
    /* U(-a,a): sd of the mean a/sqrt(3n); sd of the variance estimate ~ v0 * sqrt(0.8/n) */
    CHECK(cnt > 100 && inside && fabs(mean) < 4.0 * a / sqrt(3.0 * cnt) && fabs(var - v0) < 4.0 * v0 * sqrt(0.8 / cnt),
          "init: %s ~ U(-%.4g, %.4g) (n %.0f, mean %.3g, var %.4g vs %.4g)", suffix, a, a, cnt, mean, var, v0);
}

/* The Mamba2 paper's init at a size where the statistics mean something: in_proj and conv1d
 * U(+-1/sqrt(fan_in)), out_proj U(+-1/sqrt(E))/sqrt(L), A = exp(A_log) ~ U[1, 16),
 * ln dt ~ U[ln dt_min, ln dt_max] with dt = softplus(dt_bias), D = 1. */
static void test_init_stats(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_MAMBA2);
    c.hidden_size = 64;
    c.num_hidden_layers = 4;
    c.vocab_size = 16;
    c.head_dim = 2;
    c.state_size = 8;
    c.num_heads = c.expand * c.hidden_size / c.head_dim; /* 64 heads per layer: 256 A and dt */
    c.chunk_size = 64;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 11, &m);
    CHECK(rc == 0, "init stats: model created");
    if (rc) {
        return;
    }
    const int L = c.num_hidden_layers, E = c.expand * c.hidden_size;
    check_uniform(m, L, "in_proj.weight", 1.0 / sqrt((double)c.hidden_size));
    check_uniform(m, L, "conv1d.weight", 1.0 / sqrt((double)c.conv_kernel));
    check_uniform(m, L, "conv1d.bias", 1.0 / sqrt((double)c.conv_kernel));
    check_uniform(m, L, "out_proj.weight", 1.0 / sqrt((double)E) / sqrt((double)L));
    double sa = 0.0, sa2 = 0.0, st = 0.0, st2 = 0.0, cnt = 0.0;
    int in_a = 1, in_t = 1;
    const double lo = log(c.dt_min), hi = log(c.dt_max);
    char name[128];
    for (int l = 0; l < L; l++) {
        size_t na, nt;
        snprintf(name, sizeof(name), "backbone.layers.%d.mixer.A_log", l);
        const float *A = tensor_data(m, name, &na);
        snprintf(name, sizeof(name), "backbone.layers.%d.mixer.dt_bias", l);
        const float *dt = tensor_data(m, name, &nt);
        for (size_t i = 0; A && dt && i < na && i < nt; i++) {
            double a = exp((double)A[i]), t = log(log1p(exp((double)dt[i])));
            in_a &= a >= 1.0 - 1e-5 && a < 16.0 + 1e-4;
            in_t &= t >= lo - 1e-4 && t <= hi + 1e-4;
            sa += a;
            sa2 += a * a;
            st += t;
            st2 += t * t;
            cnt += 1.0;
        }
    }
    double ma = sa / cnt, va = sa2 / cnt - ma * ma, mt = st / cnt, vt = st2 / cnt - mt * mt;
    double va0 = 15.0 * 15.0 / 12.0, vt0 = (hi - lo) * (hi - lo) / 12.0;
    CHECK(cnt == 4.0 * c.num_heads && in_a && fabs(ma - 8.5) < 4.0 * sqrt(va0 / cnt) &&
              fabs(va - va0) < 4.0 * va0 * sqrt(0.8 / cnt),
          "init: A = exp(A_log) ~ U[1, 16) (n %.0f, mean %.3f vs 8.5, var %.2f vs %.2f)", cnt, ma, va, va0);
    CHECK(in_t && fabs(mt - 0.5 * (lo + hi)) < 4.0 * sqrt(vt0 / cnt) && fabs(vt - vt0) < 4.0 * vt0 * sqrt(0.8 / cnt),
          "init: ln softplus(dt_bias) ~ U[ln %g, ln %g] (mean %.3f vs %.3f, var %.3f vs %.3f)", c.dt_min, c.dt_max,
          mt, 0.5 * (lo + hi), vt, vt0);
    lina_model_free(m);
}

/* ------------------------------------------------------------ bad input */

static void bad_create(const char *what, lina_config c)
{
    lina_model *m = NULL;
    lina_clear_error();
    int rc = lina_model_create(&c, 1, &m);
    const char *msg = lina_last_error();
    CHECK(rc != 0 && m == NULL && msg && msg[0], "bad config (%s) rejected: %s", what, msg ? msg : "(none)");
    lina_model_free(m);
}

static void test_bad(void)
{
    lina_config c = tiny_m2(3, 0); /* 4 heads, 3 groups */
    bad_create("n_groups does not divide num_heads", c);
    c = tiny_m2(1, 0);
    c.head_dim = 7;
    bad_create("head_dim does not divide expand * hidden_size", c);
    c = tiny_m2(1, 0);
    c.num_heads = 3;
    bad_create("num_heads * head_dim != expand * hidden_size", c);
    c = tiny_m2(1, 0);
    c.state_size = 0;
    bad_create("state_size 0", c);
    c = tiny_m2(1, 0);
    c.conv_kernel = 0;
    bad_create("conv_kernel 0", c);
    c = tiny_m2(1, 0);
    c.chunk_size = 0;
    bad_create("chunk_size 0", c);
    c = tiny_m2(1, 0);
    c.norm_eps = 0.0;
    bad_create("norm_eps 0", c);
    const char *js = "{\"model_type\": \"mamba2\", \"hidden_size\": 16, \"head_dim\": 8, \"n_groups\": 3, "
                     "\"vocab_size\": 40, \"num_hidden_layers\": 1}";
    lina_config pc;
    int rc = lina_config_parse(js, strlen(js), "config.json", &pc);
    CHECK(rc != 0, "config.json with n_groups 3 for 4 heads rejected: %s", lina_last_error());
    js = "{\"model_type\": \"mamba2\", \"hidden_size\": 16, \"head_dim\": 8, \"n_groups\": 2, \"state_size\": 4, "
         "\"vocab_size\": 40, \"num_hidden_layers\": 1, \"allow_neg_eigval\": true}";
    rc = lina_config_parse(js, strlen(js), "config.json", &pc);
    lina_model *m = NULL;
    rc = rc ? rc : lina_model_create(&pc, 1, &m);
    CHECK(rc == 0 && pc.num_heads == 4 && pc.allow_neg_eigval, "config.json mamba2 with allow_neg_eigval builds (%s)",
          rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

/* ----------------------------------------------------- strong decays */

/* every A_log set to alog: chunk-form and recurrent-form logits against the
 * double reference over T = 150 (chunks of 64). alog = 3.5 gives log decays
 * of about -20 to -70 per step without negative eigenvalues, and decays near
 * -1 (a sign flip every step with |a| close to 1) with them. */
static void test_strong(const char *label, lina_config c, float alog)
{
    lina_model *m = NULL;
    if (lina_model_create(&c, 11, &m)) {
        CHECK(0, "%s: create (%s)", label, lina_last_error());
        return;
    }
    randomize(m);
    for (int l = 0; l < c.num_hidden_layers; l++) {
        char nm[96];
        size_t n;
        snprintf(nm, sizeof(nm), "backbone.layers.%d.mixer.A_log", l);
        float *p = (float *)tensor_data(m, nm, &n);
        for (size_t i = 0; p && i < n; i++) {
            p[i] = alog;
        }
    }
    ref_model r = ref_of(m);
    int B = 2, T = 150, N = B * T, V = c.vocab_size;
    int32_t *tok = malloc((size_t)N * sizeof(int32_t));
    rand_tokens(tok, NULL, N, V);
    size_t np = lina_model_num_params(m);
    double *P = malloc(np * sizeof(double)), *rl = malloc((size_t)N * V * sizeof(double));
    const float *Pf = lina_model_params(m);
    for (size_t i = 0; i < np; i++) {
        P[i] = Pf[i];
    }
    int32_t *tgt = malloc((size_t)N * sizeof(int32_t));
    memcpy(tgt, tok, (size_t)N * sizeof(int32_t));
    g_neg_steps = g_all_steps = 0;
    ref_forward(&r, P, tok, tgt, B, T, rl);
    float *a = malloc((size_t)N * V * sizeof(float)), *b = malloc((size_t)N * V * sizeof(float));
    int rc = lina_model_forward_logits_form(m, tok, B, T, a, LINA_FORM_CHUNK, NULL);
    rc = rc ? rc : lina_model_forward_logits_form(m, tok, B, T, b, LINA_FORM_RECURRENT, NULL);
    double ec = rc ? 1e30 : th_relerr_fd(a, rl, (size_t)N * V), er = rc ? 1e30 : th_relerr_fd(b, rl, (size_t)N * V);
    CHECK(rc == 0 && ec < FWD_TOL && er < FWD_TOL,
          "%s: chunk and recurrent logits vs double reference, err %.2e / %.2e (%.0f%% negative decays)", label, ec,
          er, g_all_steps ? 100.0 * g_neg_steps / g_all_steps : 0.0);
    free(tok);
    free(tgt);
    free(P);
    free(rl);
    free(a);
    free(b);
    lina_model_free(m);
}

int main(void)
{
    g_ref_mixer = ref_mamba2;
    (void)rl2; /* model_ref.h helpers for other mixers */
    (void)rconv;
    (void)rlogsig;
    lina_set_threads(1); /* tiny models: threads only add overhead to the FD checks */
    test_names();
    test_init_stats();
    test_bad();
    fd_neg("mamba2 G=1", tiny_m2(1, 0), 2, 9, 1.0);
    fd_neg("mamba2 G=2", tiny_m2(2, 0), 2, 9, 0.12);
    fd_neg("mamba2 neg eigval G=1", tiny_m2(1, 1), 2, 9, 1.0);
    fd_neg("mamba2 neg eigval G=2", tiny_m2(2, 1), 2, 9, 0.12);
    fd_neg("mamba2 across chunks", tiny_m2(2, 0), 1, 67, 0.03);
    fd_neg("mamba2 neg eigval across chunks", tiny_m2(1, 1), 1, 67, 0.03);
    lina_config v = tiny_m2(2, 1);
    v.use_bias = 1;
    v.D_has_hdim = 1;
    v.norm_before_gate = 1;
    fd_neg("mamba2 bias, D per feature, norm before gate, neg", v, 2, 7, 0.12);
    v = tiny_m2(1, 0);
    v.rmsnorm = 0;
    v.use_conv_bias = 0;
    v.conv_kernel = 3;
    fd_neg("mamba2 no norm, no conv bias, kernel 3", v, 2, 7, 0.12);
    lina_config sc = tiny_m2(2, 1);
    sc.chunk_size = 16;
    lina_set_threads(2); /* the forms and decode checks also run the threaded loops */
    test_forms("mamba2 forms", tiny_m2(2, 0));
    test_forms("mamba2 neg eigval forms (chunk 16)", sc);
    test_strong("mamba2 strong decay (A_log 3.5)", tiny_m2(2, 0), 3.5f);
    test_strong("mamba2 neg eigval, decays near -1 (A_log 3.5)", tiny_m2(2, 1), 3.5f);
    test_strong("mamba2 neg eigval, mixed decays (A_log 0)", tiny_m2(1, 1), 0.0f);
    test_decode("mamba2 decode", tiny_m2(2, 0));
    test_decode("mamba2 neg eigval decode", tiny_m2(2, 1));
    test_decode("mamba2 neg eigval decode (chunk 16)", sc);
    return th_exit();
}
