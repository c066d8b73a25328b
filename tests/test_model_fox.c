/* test_model_fox.c -- the forgetting_transformer model type (FLA's
 * ForgettingAttention layer, src/nn/fox_layer.c). A double-precision
 * reference of the layer written here token by token from docs/mixers.md
 * section 9.2 (q/k/v projections with optional biases, the log forget gate
 * logsigmoid(f_proj x + b) per query head, per-head RMSNorm of q and k with
 * full-width weights, softmax over the keys with the bias c_i - c_j of the
 * cumulative gate, grouped kv heads, optional window, optional sigmoid output
 * gate, o_proj) plugs into the shared reference LM (model_ref.h): logits,
 * loss and every parameter gradient by central finite differences, and
 * prefill + decode (KV cache with the per-token gates) against one forward.
 * Also FLA's tensor names and shapes, config keys, defaults and errors. */
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

static lina_config tiny_fox(int kv, int bias, int qkn, int gate, int window)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_FORGETTING_TRANSFORMER);
    c.hidden_size = 16;
    c.num_hidden_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = kv;
    c.qkv_bias = bias;
    snprintf(c.qk_norm, sizeof c.qk_norm, "%s", qkn ? "rms" : "");
    c.use_output_gate = gate;
    c.window_size = window;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    return c;
}

/* the ForgettingAttention layer over one sequence */
static void ref_fox(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_config *c = r->c;
    const int D = c->hidden_size, H = c->num_heads, Hkv = c->num_kv_heads ? c->num_kv_heads : H, d = D / H;
    const int HQ = H * d, HKV = Hkv * d, G = H / Hkv, win = c->window_size;
    const int bias = c->qkv_bias, qkn = c->qk_norm[0] != 0, gate = c->use_output_gate;
    const double *Wq = ptens(r, P, l, "q_proj.weight"), *Wk = ptens(r, P, l, "k_proj.weight");
    const double *Wv = ptens(r, P, l, "v_proj.weight"), *Wo = ptens(r, P, l, "o_proj.weight");
    const double *Wf = ptens(r, P, l, "f_proj.weight"), *bf = ptens(r, P, l, "f_proj.bias");
    const double *bq = bias ? ptens(r, P, l, "q_proj.bias") : NULL, *bk = bias ? ptens(r, P, l, "k_proj.bias") : NULL;
    const double *bv = bias ? ptens(r, P, l, "v_proj.bias") : NULL;
    const double *wqn = qkn ? ptens(r, P, l, "q_norm.weight") : NULL, *wkn = qkn ? ptens(r, P, l, "k_norm.weight") : NULL;
    const double *Wg = gate ? ptens(r, P, l, "g_proj.weight") : NULL;
    double *q = calloc((size_t)T * HQ, 8), *k = calloc((size_t)T * HKV, 8), *v = calloc((size_t)T * HKV, 8);
    double *cg = calloc((size_t)T * H, 8), *sc = calloc((size_t)T, 8), o[64], gl[64], f[16];
    for (int t = 0; t < T; t++) {
        const double *x = xn + (size_t)t * D;
        rlin(q + (size_t)t * HQ, Wq, bq, x, D, HQ);
        rlin(k + (size_t)t * HKV, Wk, bk, x, D, HKV);
        rlin(v + (size_t)t * HKV, Wv, bv, x, D, HKV);
        rlin(f, Wf, bf, x, D, H);
        for (int h = 0; h < H; h++) {
            cg[(size_t)t * H + h] = (t ? cg[(size_t)(t - 1) * H + h] : 0.0) + rlogsig(f[h]);
        }
        for (int h = 0; qkn && h < H + Hkv; h++) {
            double *y = h < H ? q + (size_t)t * HQ + h * d : k + (size_t)t * HKV + (h - H) * d;
            const double *w = h < H ? wqn + h * d : wkn + (h - H) * d;
            double ss = 0.0;
            for (int i = 0; i < d; i++) {
                ss += y[i] * y[i];
            }
            double rs = 1.0 / sqrt(ss / d + 1e-5);
            for (int i = 0; i < d; i++) {
                y[i] *= rs * w[i];
            }
        }
    }
    for (int t = 0; t < T; t++) {
        int j0 = win > 0 && t - win + 1 > 0 ? t - win + 1 : 0;
        for (int h = 0; h < H; h++) {
            int g = h / G;
            double mx = -1e300, se = 0.0;
            for (int j = j0; j <= t; j++) {
                double dot = 0.0;
                for (int i = 0; i < d; i++) {
                    dot += q[(size_t)t * HQ + h * d + i] * k[(size_t)j * HKV + g * d + i];
                }
                sc[j] = dot / sqrt((double)d) + cg[(size_t)t * H + h] - cg[(size_t)j * H + h];
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = j0; j <= t; j++) {
                se += exp(sc[j] - mx);
            }
            for (int i = 0; i < d; i++) {
                double acc = 0.0;
                for (int j = j0; j <= t; j++) {
                    acc += exp(sc[j] - mx) / se * v[(size_t)j * HKV + g * d + i];
                }
                o[h * d + i] = acc;
            }
        }
        if (gate) {
            rlin(gl, Wg, NULL, xn + (size_t)t * D, D, HQ);
            for (int i = 0; i < HQ; i++) {
                o[i] *= rsig(gl[i]);
            }
        }
        rlin(out + (size_t)t * D, Wo, NULL, o, HQ, D);
    }
    free(q);
    free(k);
    free(v);
    free(cg);
    free(sc);
}

static void test_names(void)
{
    lina_config c = tiny_fox(2, 1, 1, 1, 0);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0, "fox names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    check_tensor(m, "model.layers.0.attn.q_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.q_proj.bias", 1, 16, 0, 0, 0);
    check_tensor(m, "model.layers.0.attn.k_proj.weight", 2, 8, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.v_proj.bias", 1, 8, 0, 0, 0);
    check_tensor(m, "model.layers.1.attn.f_proj.weight", 2, 4, 16, 0, 1);
    check_tensor(m, "model.layers.1.attn.f_proj.bias", 1, 4, 0, 0, 0);
    check_tensor(m, "model.layers.1.attn.g_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.q_norm.weight", 1, 16, 0, 0, 0);
    check_tensor(m, "model.layers.0.attn.k_norm.weight", 1, 8, 0, 0, 0);
    check_tensor(m, "model.layers.0.attn.o_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn_norm.weight", 1, 16, 0, 0, 0);
    check_tensor(m, "model.layers.0.mlp.gate_proj.weight", 2, 32, 16, 0, 1);
    size_t n = 0;
    const float *fb = tensor_data(m, "model.layers.0.attn.f_proj.bias", &n);
    int zero = fb && n == 4;
    for (size_t i = 0; zero && i < n; i++) {
        zero = fb[i] == 0.0f;
    }
    CHECK(zero, "fox names: f_proj.bias starts at zero (FLA's Linear init)");
    lina_model_free(m);
    c = tiny_fox(0, 0, 0, 0, 0);
    rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.layers.0.attn.g_proj.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.q_norm.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.q_proj.bias") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.f_proj.bias") >= 0,
          "fox names: FLA's defaults drop g_proj, q_norm/k_norm and the qkv biases, keep f_proj.bias");
    lina_model_free(m);
}

static void test_config(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_FORGETTING_TRANSFORMER);
    CHECK(c.num_heads == 32 && c.num_kv_heads == 0 && !c.qkv_bias && !c.qk_norm[0] && c.window_size == 0 &&
              !c.use_output_gate && c.hidden_size == 2048 && c.num_hidden_layers == 24 && c.norm_eps == 1e-6 &&
              !c.tie_word_embeddings,
          "fox config: FLA's class defaults");
    const char *js = "{\"model_type\": \"forgetting_transformer\", \"hidden_size\": 32, \"num_heads\": 4, "
                     "\"num_kv_heads\": 2, \"qk_norm\": true, \"use_output_gate\": true, \"window_size\": 16, "
                     "\"qkv_bias\": true, \"vocab_size\": 50}";
    int rc = lina_config_parse(js, strlen(js), "t.json", &c);
    char *out = rc ? NULL : lina_config_json(&c);
    lina_config c2;
    int rc2 = out ? lina_config_parse(out, strlen(out), "round", &c2) : -1;
    CHECK(rc == 0 && rc2 == 0 && c2.num_kv_heads == 2 && c2.qk_norm[0] && c2.use_output_gate &&
              c2.window_size == 16 && c2.qkv_bias && strstr(out, "ForgettingTransformerForCausalLM") &&
              !strstr(out, "\"attn\"") && !strstr(out, "rope_theta") && !strstr(out, "use_short_conv"),
          "fox config: keys round trip, no attn / rope_theta / use_short_conv keys (%s)",
          rc ? lina_last_error() : "ok");
    free(out);
    const char *bad[] = {
        "{\"model_type\": \"forgetting_transformer\", \"hidden_size\": 30, \"num_heads\": 4}",
        "{\"model_type\": \"forgetting_transformer\", \"num_heads\": 32, \"num_kv_heads\": 5}",
        "{\"model_type\": \"forgetting_transformer\", \"window_size\": -2}",
    };
    const char *want[] = {"hidden_size", "not a multiple", "window_size"};
    for (int i = 0; i < 3; i++) {
        rc = lina_config_parse(bad[i], strlen(bad[i]), "bad.json", &c);
        CHECK(rc != 0 && strstr(lina_last_error(), want[i]), "fox config: rejected (%s)", lina_last_error());
    }
    lina_config_default(&c, LINA_MODEL_FORGETTING_TRANSFORMER);
    c.attn.enabled = 1;
    rc = lina_config_validate(&c, "t");
    CHECK(rc != 0 && strstr(lina_last_error(), "does not apply to forgetting_transformer"),
          "fox config: no hybrid attn layers (%s)", lina_last_error());
}

int main(void)
{
    g_ref_seq = ref_fox;
    test_names();
    test_config();
    test_fd("fox plain", tiny_fox(0, 0, 0, 0, 0), 2, 9, 1.0);
    test_fd("fox GQA, biases, qk_norm, output gate", tiny_fox(2, 1, 1, 1, 0), 2, 9, 1.0);
    test_fd("fox window 3, GQA 4:1", tiny_fox(1, 0, 1, 1, 3), 2, 9, 1.0);
    test_fd("fox across tiles", tiny_fox(2, 0, 0, 1, 0), 1, 150, 0.03);
    test_forms("fox forms", tiny_fox(2, 1, 1, 1, 0));
    test_decode("fox decode", tiny_fox(2, 1, 1, 1, 0));
    test_decode("fox decode window 4", tiny_fox(1, 0, 0, 0, 4));
    return th_exit();
}
