/* test_model_kda.c -- the kda model type (Kimi Delta Attention; the
 * delta-rule layer src/nn/delta_layer.c with its per-key-channel gate). A
 * double-precision reference of the layer written here token by token from
 * docs/mixers.md section 4.4 (SiLU short convs, L2-normalised q and k, the
 * low-rank gate -exp(A_log) softplus(f + dt_bias) or its bounded form per
 * value head and key channel, beta = sigmoid (doubled with allow_neg_eigval),
 * grouped value heads, RMSNorm times sigmoid of the low-rank output gate)
 * plugs into the shared reference LM (model_ref.h): logits, loss and every
 * parameter gradient by central finite differences, chunk-form against
 * recurrent-form logits, prefill + decode against one forward. Also FLA's
 * tensor names and shapes, the A_log / dt_bias initialisation, config keys and
 * errors. */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FD_H 1e-5
#define FWD_TOL 1e-4
#define GRAD_TOL 1e-3

#include "model_ref.h"

static lina_config tiny_kda(int conv, int hv, int neg)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_KDA);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.head_dim = 4;
    c.expand_v = 1.5;
    c.num_v_heads = hv;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    c.use_short_conv = conv;
    c.allow_neg_eigval = neg;
    return c;
}

/* the KDA layer, token by token */
static double ref_kda(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    const lina_config *c = r->c;
    const int D = c->hidden_size, H = c->num_heads, HV = c->num_v_heads ? c->num_v_heads : H, K = c->head_dim;
    const int V = (int)(c->head_dim * c->expand_v), G = HV / H, W = c->conv_size, conv = c->use_short_conv;
    const int HK = H * K, VV = HV * V;
    const double s = 1.0 / sqrt((double)K), bs = c->allow_neg_eigval ? 2.0 : 1.0;
    const double *Wq = ptens(r, P, l, "q_proj.weight"), *Wk = ptens(r, P, l, "k_proj.weight");
    const double *Wv = ptens(r, P, l, "v_proj.weight"), *Wb = ptens(r, P, l, "b_proj.weight");
    const double *Wf0 = ptens(r, P, l, "f_proj.0.weight"), *Wf1 = ptens(r, P, l, "f_proj.1.weight");
    const double *Wg0 = ptens(r, P, l, "g_proj.0.weight"), *Wg1 = ptens(r, P, l, "g_proj.1.weight");
    const double *bg = ptens(r, P, l, "g_proj.1.bias"), *Alog = ptens(r, P, l, "A_log");
    const double *dtb = ptens(r, P, l, "dt_bias");
    const double *Wo = ptens(r, P, l, "o_proj.weight"), *wn = ptens(r, P, l, "o_norm.weight");
    const double *cq = conv ? ptens(r, P, l, "q_conv1d.weight") : NULL;
    const double *ck = conv ? ptens(r, P, l, "k_conv1d.weight") : NULL;
    const double *cv = conv ? ptens(r, P, l, "v_conv1d.weight") : NULL;
    double *qp = calloc((size_t)T * HK, 8), *kp = calloc((size_t)T * HK, 8), *vp = calloc((size_t)T * VV, 8);
    double *qc = calloc((size_t)T * HK, 8), *kc = calloc((size_t)T * HK, 8), *vc = calloc((size_t)T * VV, 8);
    double *S = calloc((size_t)HV * K * V, 8);
    double beta[16], f1[64], f[256], z1[64], z[256], o[64], y[256], u[64];
    for (int b = 0; b < B; b++) {
        const double *xb = xn + (size_t)b * T * D;
        for (int t = 0; t < T; t++) {
            rlin(qp + (size_t)t * HK, Wq, NULL, xb + (size_t)t * D, D, HK);
            rlin(kp + (size_t)t * HK, Wk, NULL, xb + (size_t)t * D, D, HK);
            rlin(vp + (size_t)t * VV, Wv, NULL, xb + (size_t)t * D, D, VV);
        }
        rconv(qc, qp, cq, T, HK, W);
        rconv(kc, kp, ck, T, HK, W);
        rconv(vc, vp, cv, T, VV, W);
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++) {
                rl2(qc + (size_t)t * HK + h * K, K);
                rl2(kc + (size_t)t * HK + h * K, K);
            }
        }
        memset(S, 0, (size_t)HV * K * V * sizeof(double));
        for (int t = 0; t < T; t++) {
            const double *xt = xb + (size_t)t * D;
            rlin(beta, Wb, NULL, xt, D, HV);
            rlin(f1, Wf0, NULL, xt, D, V);
            rlin(f, Wf1, NULL, f1, V, HV * K);
            rlin(z1, Wg0, NULL, xt, D, V);
            rlin(z, Wg1, bg, z1, V, VV);
            for (int hv = 0; hv < HV; hv++) {
                const int hq = hv / G;
                const double bt = bs * rsig(beta[hv]), ea = exp(Alog[hv]);
                double *Sh = S + (size_t)hv * K * V;
                const double *kk = kc + (size_t)t * HK + hq * K, *vv = vc + (size_t)t * VV + hv * V;
                for (int i = 0; i < K; i++) {
                    const double x = f[hv * K + i] + dtb[hv * K + i];
                    const double g = c->has_lower_bound ? c->lower_bound * rsig(ea * x) : -ea * rsoftplus(x);
                    for (int e = 0; e < V; e++) {
                        Sh[i * V + e] *= exp(g); /* decay first, one factor per key channel */
                    }
                }
                for (int e = 0; e < V; e++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += Sh[i * V + e] * kk[i];
                    }
                    u[e] = vv[e] - acc;
                }
                for (int i = 0; i < K; i++) {
                    for (int e = 0; e < V; e++) {
                        Sh[i * V + e] += bt * kk[i] * u[e];
                    }
                }
                const double *qq = qc + (size_t)t * HK + hq * K;
                for (int e = 0; e < V; e++) {
                    double acc = 0.0;
                    for (int i = 0; i < K; i++) {
                        acc += s * qq[i] * Sh[i * V + e];
                    }
                    o[e] = acc;
                }
                rrms(y + hv * V, o, wn, V, r->eps);
                for (int e = 0; e < V; e++) {
                    y[hv * V + e] *= rsig(z[hv * V + e]);
                }
            }
            rlin(out + ((size_t)b * T + t) * D, Wo, NULL, y, VV, D);
        }
    }
    free(qp);
    free(kp);
    free(vp);
    free(qc);
    free(kc);
    free(vc);
    free(S);
    return 0.0;
}

/* ---------------------------------------------------------- names, errors */

static int has_shape(const lina_model *m, const char *name, int nd, int64_t s0, int64_t s1, int64_t s2)
{
    int i = lina_model_find_tensor(m, name), k = 0;
    const int64_t *sh = NULL;
    if (i < 0 || lina_model_tensor(m, i, NULL, &k, &sh, NULL, NULL) || k != nd) {
        return 0;
    }
    return sh[0] == s0 && (nd < 2 || sh[1] == s1) && (nd < 3 || sh[2] == s2);
}

static void test_names(void)
{
    lina_config c = tiny_kda(1, 4, 0);
    c.num_hidden_layers = 1;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0, "kda names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    /* D 16, H 2, HV 4, K 4, V 6 */
    const char *p = "model.layers.0.attn.";
    struct {
        const char *n;
        int nd;
        int64_t a, b, c;
    } t[] = {{"q_proj.weight", 2, 8, 16, 0},    {"k_proj.weight", 2, 8, 16, 0},   {"v_proj.weight", 2, 24, 16, 0},
             {"q_conv1d.weight", 3, 8, 1, 4}, {"k_conv1d.weight", 3, 8, 1, 4}, {"v_conv1d.weight", 3, 24, 1, 4},
             {"f_proj.0.weight", 2, 6, 16, 0},  {"f_proj.1.weight", 2, 16, 6, 0}, {"b_proj.weight", 2, 4, 16, 0},
             {"A_log", 1, 4, 0, 0},            {"dt_bias", 1, 16, 0, 0},         {"g_proj.0.weight", 2, 6, 16, 0},
             {"g_proj.1.weight", 2, 24, 6, 0},  {"g_proj.1.bias", 1, 24, 0, 0},   {"o_norm.weight", 1, 6, 0, 0},
             {"o_proj.weight", 2, 16, 24, 0}};
    int ok = 1;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char nm[128];
        snprintf(nm, sizeof nm, "%s%s", p, t[i].n);
        if (!has_shape(m, nm, t[i].nd, t[i].a, t[i].b, t[i].c)) {
            printf("# missing or misshapen: %s\n", nm);
            ok = 0;
        }
    }
    /* + embeddings, attn_norm, mlp_norm, 3 MLP weights, final norm, lm_head */
    CHECK(ok && lina_model_num_tensors(m) == 16 + 8, "kda names: %d tensors named and shaped as FLA",
          lina_model_num_tensors(m));
    /* A_log = ln U(1, 16), dt_bias = softplus^-1(dt), dt in [1e-3, 0.1] */
    const float *P = lina_model_params(m);
    size_t oa = 0, od = 0;
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.attn.A_log"), NULL, NULL, NULL, &oa, NULL);
    lina_model_tensor(m, lina_model_find_tensor(m, "model.layers.0.attn.dt_bias"), NULL, NULL, NULL, &od, NULL);
    int iok = 1;
    for (int i = 0; i < 4; i++) {
        iok &= P[oa + i] >= 0.0f && P[oa + i] <= logf(16.0f) + 1e-6f;
    }
    for (int i = 0; i < 16; i++) {
        double dt = log1p(exp(P[od + i]));
        iok &= dt >= 0.9e-4 && dt <= 0.11;
    }
    CHECK(iok, "kda names: A_log and dt_bias initialised as FLA");
    lina_model_free(m);
    c = tiny_kda(0, 0, 0);
    rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.q_conv1d.weight") < 0 &&
              has_shape(m, "model.layers.0.attn.dt_bias", 1, 8, 0, 0),
          "kda names: no short convs drop q,k,v_conv1d; dt_bias is [HV*K]");
    lina_model_free(m);
}

static void test_config(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_KDA);
    CHECK(c.num_heads == 16 && c.head_dim == 128 && c.expand_v == 1.0 && c.use_short_conv && c.conv_size == 4 &&
              !c.allow_neg_eigval && !c.safe_gate && !c.has_lower_bound && c.num_hidden_layers == 24 &&
              c.hidden_size == 2048,
          "kda config: FLA's class defaults");
    const char *js = "{\"model_type\": \"kda\", \"hidden_size\": 32, \"num_heads\": 2, \"head_dim\": 8, "
                     "\"lower_bound\": -5.0, \"safe_gate\": true, \"num_v_heads\": 4, \"vocab_size\": 50}";
    int rc = lina_config_parse(js, strlen(js), "t.json", &c);
    char *out = rc ? NULL : lina_config_json(&c);
    lina_config c2;
    int rc2 = out ? lina_config_parse(out, strlen(out), "round", &c2) : -1;
    CHECK(rc == 0 && rc2 == 0 && c2.has_lower_bound && c2.lower_bound == -5.0 && c2.safe_gate && c2.num_v_heads == 4 &&
              strstr(out, "\"lower_bound\"") && strstr(out, "KDAForCausalLM"),
          "kda config: lower_bound, safe_gate, num_v_heads round trip (%s)", rc ? lina_last_error() : "ok");
    free(out);
    const char *bad[] = {
        "{\"model_type\": \"kda\", \"lower_bound\": 0.5}",
        "{\"model_type\": \"kda\", \"safe_gate\": true}",
        "{\"model_type\": \"kda\", \"num_heads\": 16, \"num_v_heads\": 24}",
    };
    const char *want[] = {"lower_bound must be negative", "safe_gate needs a lower_bound", "not a multiple"};
    for (int i = 0; i < 3; i++) {
        rc = lina_config_parse(bad[i], strlen(bad[i]), "bad.json", &c);
        if (!rc) {
            rc = lina_config_validate(&c, "bad.json");
        }
        CHECK(rc != 0 && strstr(lina_last_error(), want[i]), "kda config: rejected (%s)", lina_last_error());
    }
}

static double ref_mixer(const ref_model *r, const double *P, int l, const double *xn, double *out, int B, int T)
{
    return ref_kda(r, P, l, xn, out, B, T);
}

int main(void)
{
    (void)rlogsig;
    g_ref_mixer = ref_mixer;
    test_names();
    test_config();
    test_fd("kda conv", tiny_kda(1, 0, 0), 2, 9, 0.1);
    test_fd("kda GVA (4 value heads, 2 q/k heads), neg eigval", tiny_kda(1, 4, 1), 2, 9, 0.1);
    test_fd("kda no conv", tiny_kda(0, 0, 0), 2, 7, 0.1);
    lina_config c = tiny_kda(1, 0, 0);
    c.has_lower_bound = 1;
    c.lower_bound = -5.0;
    test_fd("kda lower_bound -5", c, 2, 9, 0.1);
    test_decode("kda lower_bound decode", c);
    test_fd("kda across chunks", tiny_kda(1, 0, 0), 1, 67, 0.03);
    test_forms("kda forms", tiny_kda(1, 4, 0));
    test_decode("kda decode", tiny_kda(1, 0, 0));
    test_decode("kda GVA no conv decode", tiny_kda(0, 4, 1));
    return th_exit();
}
