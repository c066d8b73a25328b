/* test_model_gsa.c -- the gsa model type (FLA's GatedSlotAttention,
 * src/nn/gsa_layer.c, on the gsa kernel). A double-precision reference of the
 * layer written here token by token from docs/mixers.md section 16.1 (q/k/v/f
 * projections, optional SiLU short convolutions, the swish / relu / t2r
 * feature map on q and k, SiLU(v), g = logsigmoid(f) / gate_logit_normalizer,
 * s = 1 - exp(g), kv heads shared by their query-head groups, the two slot
 * states with the softmax over the slots at scale 1, SiLU on the output,
 * RMSNorm over the value width at eps 1e-5, o_proj) plugs into the shared
 * reference LM (model_ref.h): logits, loss and every parameter gradient by
 * central finite differences, prefill + decode against one forward (the layer
 * runs the kernel's recurrent form throughout; test_gsa.c checks the chunk form
 * against it). Also FLA's names, shapes, config keys,
 * defaults and errors. */
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

static lina_config tiny_gsa(const char *fmap, int conv, int kv_heads, int slots)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GSA);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = kv_heads;
    c.num_slots = slots;
    c.use_short_conv = conv;
    c.conv_size = 3;
    snprintf(c.feature_map, sizeof c.feature_map, "%s", fmap);
    c.vocab_size = 40;
    c.intermediate_size = 32;
    return c;
}

/* the feature map of one head's K values */
static void ref_fmap(const char *fm, const double *W, double *x, int K)
{
    double t[64];
    for (int i = 0; i < K; i++) {
        t[i] = x[i];
    }
    if (!strcmp(fm, "t2r")) {
        rlin(t, W, NULL, x, K, K);
    }
    for (int i = 0; i < K; i++) {
        x[i] = !strcmp(fm, "swish") ? t[i] * rsig(t[i]) : t[i] > 0.0 ? t[i] : 0.0;
    }
}

/* the GatedSlotAttention layer over one sequence */
static void ref_gsa(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_config *c = r->c;
    const int D = c->hidden_size, H = c->num_heads, Hkv = c->num_kv_heads ? c->num_kv_heads : H, G = H / Hkv;
    const int K = (int)(D * c->expand_k) / H, V = (int)(D * c->expand_v) / H, W = c->conv_size;
    const int M = c->num_slots ? c->num_slots : K;
    const int Kd = H * K, Kg = Hkv * K, Vg = Hkv * V, Mg = Hkv * M, Vd = H * V;
    const double *Wfm = strcmp(c->feature_map, "t2r") ? NULL : ptens(r, P, l, "feature_map.layer.weight");
    const double *wn = c->elementwise_affine ? ptens(r, P, l, "g_norm.weight") : NULL;
    double *q = calloc((size_t)T * Kd, 8), *k = calloc((size_t)T * Kg, 8), *v = calloc((size_t)T * Vg, 8);
    double *f = calloc((size_t)T * Mg, 8), *tmp = calloc((size_t)T * (Kd + Vg), 8);
    double *hk = calloc((size_t)H * K * M, 8), *hv = calloc((size_t)H * M * V, 8);
    double *o = calloc((size_t)Vd, 8), *p = calloc((size_t)M, 8), *y = calloc((size_t)Vd, 8);
    for (int t = 0; t < T; t++) {
        rlin(q + (size_t)t * Kd, ptens(r, P, l, "q_proj.weight"), NULL, xn + (size_t)t * D, D, Kd);
        rlin(k + (size_t)t * Kg, ptens(r, P, l, "k_proj.weight"), NULL, xn + (size_t)t * D, D, Kg);
        rlin(v + (size_t)t * Vg, ptens(r, P, l, "v_proj.weight"), NULL, xn + (size_t)t * D, D, Vg);
        rlin(f + (size_t)t * Mg, ptens(r, P, l, "f_proj.weight"), NULL, xn + (size_t)t * D, D, Mg);
    }
    if (c->use_short_conv) {
        rconv_act(tmp, q, ptens(r, P, l, "q_conv1d.weight"), T, Kd, W, 1);
        memcpy(q, tmp, (size_t)T * Kd * 8);
        rconv_act(tmp, k, ptens(r, P, l, "k_conv1d.weight"), T, Kg, W, 1);
        memcpy(k, tmp, (size_t)T * Kg * 8);
        rconv_act(tmp, v, ptens(r, P, l, "v_conv1d.weight"), T, Vg, W, 1);
        memcpy(v, tmp, (size_t)T * Vg * 8);
    }
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < H; h++) {
            ref_fmap(c->feature_map, Wfm, q + (size_t)t * Kd + h * K, K);
        }
        for (int h = 0; h < Hkv; h++) {
            ref_fmap(c->feature_map, Wfm, k + (size_t)t * Kg + h * K, K);
        }
        for (int j = 0; j < Vg; j++) {
            double x = v[(size_t)t * Vg + j];
            v[(size_t)t * Vg + j] = x * rsig(x);
        }
        for (int h = 0; h < H; h++) {
            const int hg = h / G;
            const double *qt = q + (size_t)t * Kd + h * K, *kt = k + (size_t)t * Kg + hg * K;
            const double *vt = v + (size_t)t * Vg + hg * V, *ft = f + (size_t)t * Mg + hg * M;
            double *Hk = hk + (size_t)h * K * M, *Hv = hv + (size_t)h * M * V, mx = -1e300, se = 0.0;
            for (int m = 0; m < M; m++) {
                double g = rlogsig(ft[m]) / c->gate_logit_normalizer, a = exp(g), s = 1.0 - a, ok = 0.0;
                for (int i = 0; i < K; i++) {
                    Hk[i * M + m] = a * Hk[i * M + m] + kt[i] * s;
                    ok += Hk[i * M + m] * qt[i];
                }
                for (int j = 0; j < V; j++) {
                    Hv[m * V + j] = a * Hv[m * V + j] + s * vt[j];
                }
                p[m] = ok;
                mx = ok > mx ? ok : mx;
            }
            for (int m = 0; m < M; m++) {
                p[m] = exp(p[m] - mx);
                se += p[m];
            }
            for (int j = 0; j < V; j++) {
                double acc = 0.0;
                for (int m = 0; m < M; m++) {
                    acc += p[m] / se * Hv[m * V + j];
                }
                o[h * V + j] = acc * rsig(acc); /* SiLU on the output */
            }
        }
        double ss = 0.0;
        for (int j = 0; j < Vd; j++) {
            ss += o[j] * o[j];
        }
        double rs = 1.0 / sqrt(ss / Vd + 1e-5);
        for (int j = 0; j < Vd; j++) {
            y[j] = o[j] * rs * (wn ? wn[j] : 1.0);
        }
        rlin(out + (size_t)t * D, ptens(r, P, l, "o_proj.weight"), NULL, y, Vd, D);
    }
    free(q);
    free(k);
    free(v);
    free(f);
    free(tmp);
    free(hk);
    free(hv);
    free(o);
    free(p);
    free(y);
}

static void test_names(void)
{
    lina_config c = tiny_gsa("t2r", 1, 2, 5);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0, "gsa names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    check_tensor(m, "model.layers.0.attn.feature_map.layer.weight", 2, 4, 4, 0, 1);
    check_tensor(m, "model.layers.0.attn.q_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.k_proj.weight", 2, 8, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.v_proj.weight", 2, 8, 16, 0, 1);
    check_tensor(m, "model.layers.1.attn.f_proj.weight", 2, 10, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.q_conv1d.weight", 3, 16, 1, 3, 1);
    check_tensor(m, "model.layers.0.attn.k_conv1d.weight", 3, 8, 1, 3, 1);
    check_tensor(m, "model.layers.0.attn.v_conv1d.weight", 3, 8, 1, 3, 1);
    check_tensor(m, "model.layers.1.attn.g_norm.weight", 1, 16, 0, 0, 0);
    check_tensor(m, "model.layers.1.attn.o_proj.weight", 2, 16, 16, 0, 1);
    size_t n = 0;
    const float *gn = tensor_data(m, "model.layers.0.attn.g_norm.weight", &n);
    int ones = gn && n == 16;
    for (size_t i = 0; ones && i < n; i++) {
        ones = gn[i] == 1.0f;
    }
    CHECK(ones, "gsa names: g_norm.weight starts at one (FLA)");
    lina_model_free(m);
    /* defaults: swish, no convs, M = 64 slots; null num_slots: the key dim per head; no affine norm */
    c = tiny_gsa("swish", 0, 0, 64);
    c.elementwise_affine = 0;
    rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.q_conv1d.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.feature_map.layer.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.g_norm.weight") < 0,
          "gsa names: no convs, t2r map or norm weight when off (%s)", rc ? lina_last_error() : "ok");
    if (!rc) {
        check_tensor(m, "model.layers.0.attn.f_proj.weight", 2, 256, 16, 0, 1);
        check_tensor(m, "model.layers.0.attn.k_proj.weight", 2, 16, 16, 0, 1);
    }
    lina_model_free(m);
    c.num_slots = 0;
    rc = lina_model_create(&c, 3, &m);
    if (!rc) {
        check_tensor(m, "model.layers.0.attn.f_proj.weight", 2, 16, 16, 0, 1);
    }
    CHECK(rc == 0, "gsa: num_slots null takes the key dim per head (%s)", rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

static void test_config(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GSA);
    CHECK(c.num_slots == 64 && c.gate_logit_normalizer == 8.0 && !strcmp(c.feature_map, "swish") &&
              !c.use_short_conv && c.conv_size == 4 && c.num_heads == 4 && c.num_kv_heads == 0 &&
              c.expand_k == 1.0 && c.expand_v == 1.0 && c.hidden_size == 2048 && c.num_hidden_layers == 24 &&
              c.norm_eps == 1e-6 && c.use_norm && !c.use_output_gate && c.elementwise_affine,
          "gsa config: FLA's class defaults");
    const char *js = "{\"model_type\": \"gsa\", \"hidden_size\": 32, \"num_heads\": 2, \"num_kv_heads\": 1, "
                     "\"num_slots\": 12, \"gate_logit_normalizer\": 16, \"feature_map\": \"t2r\", "
                     "\"use_short_conv\": true, \"conv_size\": 3, \"vocab_size\": 50, \"clamp_min\": null}";
    int rc = lina_config_parse(js, strlen(js), "t.json", &c);
    char *out = rc ? NULL : lina_config_json(&c);
    lina_config c2;
    int rc2 = out ? lina_config_parse(out, strlen(out), "round", &c2) : -1;
    CHECK(rc == 0 && rc2 == 0 && c2.num_slots == 12 && c2.gate_logit_normalizer == 16.0 && c2.num_kv_heads == 1 &&
              !strcmp(c2.feature_map, "t2r") && c2.use_short_conv && c2.conv_size == 3 &&
              strstr(out, "GSAForCausalLM") && strstr(out, "\"num_slots\"") && !strstr(out, "\"attn_mode\""),
          "gsa config: keys round trip, no attn_mode key (%s)", rc ? lina_last_error() : "ok");
    free(out);
    static const struct {
        const char *js, *word;
    } bad[] = {
        {"{\"model_type\": \"gsa\", \"feature_map\": \"elu\"}", "feature_map"},
        {"{\"model_type\": \"gsa\", \"gate_logit_normalizer\": 0}", "gate_logit_normalizer"},
        {"{\"model_type\": \"gsa\", \"num_slots\": -3}", "num_slots"},
        {"{\"model_type\": \"gsa\", \"num_heads\": 4, \"num_kv_heads\": 3}", "num_kv_heads"},
        {"{\"model_type\": \"gsa\", \"hidden_size\": 30, \"num_heads\": 4}", "heads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = lina_config_parse(bad[i].js, strlen(bad[i].js), "bad.json", &c);
        CHECK(rc != 0 && strstr(lina_last_error(), bad[i].word), "gsa config: %s refused (%s)", bad[i].js,
              lina_last_error());
    }
    c = tiny_gsa("swish", 0, 0, 4);
    c.expand_v = 2.0;
    lina_model *m = NULL;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && strstr(lina_last_error(), "expand_v"), "gsa: expand_v 2 with an affine norm refused (%s)",
          lina_last_error());
    lina_model_free(m);
    c.elementwise_affine = 0;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == 0, "gsa: expand_v 2 without the norm weight builds (%s)", rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

int main(void)
{
    g_ref_seq = ref_gsa;
    test_names();
    test_config();
    test_fd("gsa swish", tiny_gsa("swish", 0, 0, 5), 2, 9, 1.0);
    test_fd("gsa t2r, short convs, grouped kv heads", tiny_gsa("t2r", 1, 2, 3), 2, 9, 1.0);
    test_fd("gsa relu, one kv head", tiny_gsa("relu", 0, 1, 6), 2, 9, 1.0);
    lina_config c = tiny_gsa("swish", 1, 2, 4);
    c.expand_v = 2.0;
    c.elementwise_affine = 0;
    c.gate_logit_normalizer = 3.0;
    test_fd("gsa expand_v 2, no norm weight, normalizer 3", c, 2, 9, 1.0);
    test_fd("gsa across chunks", tiny_gsa("swish", 1, 2, 4), 1, 150, 0.03);
    test_decode("gsa decode", tiny_gsa("swish", 1, 2, 4));
    test_decode("gsa decode no conv", tiny_gsa("relu", 0, 0, 5));
    return th_exit();
}
