/* test_model_hgrn.c -- the hgrn model type (FLA's HGRNAttention, src/nn/hgrn_layer.c,
 * on the hgrn kernel). A double-precision reference of the layer written here
 * token by token from docs/mixers.md section 15.1 (i/f projections with optional
 * short convolutions without activation, the forget gate with the per-layer
 * lower bound lambda_l = sum_{j=1..l} softmax_layers(model.lower_bounds)_j,
 * x = SiLU(i) (1 - exp(g)), h = exp(g) h + x, RMSNorm over the width times
 * SiLU(g_proj x), o_proj) plugs into the shared reference LM (model_ref.h):
 * logits, loss and every parameter gradient (model.lower_bounds included) by
 * central finite differences, chunk-form against recurrent-form logits,
 * prefill + decode against one forward. Also FLA's names, config keys,
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

static lina_config tiny_hgrn(int conv, int lb, int ratio, int layers)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_HGRN);
    c.hidden_size = 16;
    c.num_hidden_layers = layers;
    c.expand_ratio = ratio;
    c.use_short_conv = conv;
    c.conv_size = 3;
    c.use_lower_bound = lb;
    c.vocab_size = 40;
    c.intermediate_size = 32;
    return c;
}

/* the HGRNAttention layer over one sequence */
static void ref_hgrn(const ref_model *r, const double *P, int l, const double *xn, double *out, int T)
{
    const lina_config *c = r->c;
    const int D = c->hidden_size, E = D * c->expand_ratio, L = c->num_hidden_layers, W = c->conv_size;
    const double *Wi = ptens(r, P, l, "i_proj.weight"), *Wf = ptens(r, P, l, "f_proj.weight");
    const double *Wg = ptens(r, P, l, "g_proj.weight"), *Wo = ptens(r, P, l, "o_proj.weight");
    const double *wn = c->elementwise_affine ? ptens(r, P, l, "g_norm.weight") : NULL;
    double *i = calloc((size_t)T * E, 8), *f = calloc((size_t)T * E, 8), *y = calloc((size_t)T * E, 8);
    double *h = calloc((size_t)E, 8), *lam = calloc((size_t)E, 8), *o = calloc((size_t)E, 8), *gl = calloc((size_t)E, 8);
    for (int t = 0; t < T; t++) {
        rlin(i + (size_t)t * E, Wi, NULL, xn + (size_t)t * D, D, E);
        rlin(f + (size_t)t * E, Wf, NULL, xn + (size_t)t * D, D, E);
    }
    if (c->use_short_conv) {
        rconv_act(y, i, ptens(r, P, l, "i_conv1d.weight"), T, E, W, 0);
        memcpy(i, y, (size_t)T * E * 8);
        rconv_act(y, f, ptens(r, P, l, "f_conv1d.weight"), T, E, W, 0);
        memcpy(f, y, (size_t)T * E * 8);
    }
    if (c->use_lower_bound && l > 0) {
        const double *Lb = P + toff(r->m, "model.lower_bounds", 0);
        for (int ch = 0; ch < E; ch++) {
            double mx = -1e300, se = 0.0;
            for (int j = 0; j < L; j++) {
                mx = fmax(mx, Lb[(size_t)j * D + ch]);
            }
            for (int j = 0; j < L; j++) {
                se += exp(Lb[(size_t)j * D + ch] - mx);
            }
            for (int j = 1; j <= l; j++) {
                lam[ch] += exp(Lb[(size_t)j * D + ch] - mx) / se;
            }
        }
    }
    for (int t = 0; t < T; t++) {
        double ss = 0.0;
        for (int ch = 0; ch < E; ch++) {
            double fv = f[(size_t)t * E + ch], iv = i[(size_t)t * E + ch];
            double g = log(lam[ch] + (1.0 - lam[ch]) * rsig(fv));
            h[ch] = exp(g) * h[ch] + iv * rsig(iv) * (1.0 - exp(g));
            o[ch] = h[ch];
            ss += h[ch] * h[ch];
        }
        double rs = 1.0 / sqrt(ss / E + r->eps);
        rlin(gl, Wg, NULL, xn + (size_t)t * D, D, E);
        for (int ch = 0; ch < E; ch++) {
            o[ch] *= rs * (wn ? wn[ch] : 1.0) * gl[ch] * rsig(gl[ch]);
        }
        rlin(out + (size_t)t * D, Wo, NULL, o, E, D);
    }
    free(i);
    free(f);
    free(y);
    free(h);
    free(lam);
    free(o);
    free(gl);
}

static void test_names(void)
{
    lina_config c = tiny_hgrn(1, 1, 1, 3);
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0, "hgrn names: create (%s)", rc ? lina_last_error() : "ok");
    if (rc) {
        return;
    }
    check_tensor(m, "model.layers.0.attn.i_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.f_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.2.attn.g_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.layers.0.attn.i_conv1d.weight", 3, 16, 1, 3, 1);
    check_tensor(m, "model.layers.0.attn.f_conv1d.weight", 3, 16, 1, 3, 1);
    check_tensor(m, "model.layers.1.attn.g_norm.weight", 1, 16, 0, 0, 0);
    check_tensor(m, "model.layers.1.attn.o_proj.weight", 2, 16, 16, 0, 1);
    check_tensor(m, "model.lower_bounds", 2, 3, 16, 0, 0);
    size_t n = 0;
    const float *lb = tensor_data(m, "model.lower_bounds", &n);
    int zero = lb && n == 48;
    for (size_t i = 0; zero && i < n; i++) {
        zero = lb[i] == 0.0f;
    }
    CHECK(zero, "hgrn names: model.lower_bounds starts at zero (FLA)");
    lina_model_free(m);
    c = tiny_hgrn(0, 0, 2, 2);
    c.elementwise_affine = 0;
    rc = lina_model_create(&c, 3, &m);
    CHECK(rc == 0 && lina_model_find_tensor(m, "model.lower_bounds") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.i_conv1d.weight") < 0 &&
              lina_model_find_tensor(m, "model.layers.0.attn.g_norm.weight") < 0,
          "hgrn names: no lower bounds, convs or norm weight when off (%s)", rc ? lina_last_error() : "ok");
    if (!rc) {
        check_tensor(m, "model.layers.0.attn.i_proj.weight", 2, 32, 16, 0, 1);
        check_tensor(m, "model.layers.0.attn.o_proj.weight", 2, 16, 32, 0, 1);
    }
    lina_model_free(m);
}

static void test_config(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_HGRN);
    CHECK(c.expand_ratio == 1 && c.use_lower_bound && !c.use_short_conv && c.conv_size == 4 &&
              !strcmp(c.attn_mode, "fused_recurrent") && c.hidden_size == 2048 && c.num_hidden_layers == 24 &&
              c.norm_eps == 1e-6,
          "hgrn config: FLA's class defaults");
    const char *js = "{\"model_type\": \"hgrn\", \"hidden_size\": 32, \"expand_ratio\": 1, \"use_short_conv\": true, "
                     "\"conv_size\": 3, \"use_lower_bound\": false, \"vocab_size\": 50}";
    int rc = lina_config_parse(js, strlen(js), "t.json", &c);
    char *out = rc ? NULL : lina_config_json(&c);
    lina_config c2;
    int rc2 = out ? lina_config_parse(out, strlen(out), "round", &c2) : -1;
    CHECK(rc == 0 && rc2 == 0 && c2.use_short_conv && c2.conv_size == 3 && !c2.use_lower_bound &&
              c2.expand_ratio == 1 && strstr(out, "HGRNForCausalLM") && !strstr(out, "\"num_heads\""),
          "hgrn config: keys round trip, no num_heads key (%s)", rc ? lina_last_error() : "ok");
    free(out);
    lina_config_default(&c, LINA_MODEL_HGRN);
    c.expand_ratio = 2;
    c.hidden_size = 16;
    c.vocab_size = 40;
    lina_model *m = NULL;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc != 0 && strstr(lina_last_error(), "expand_ratio"), "hgrn: lower bounds with expand_ratio 2 refused (%s)",
          lina_last_error());
    lina_model_free(m);
    const char *bad = "{\"model_type\": \"hgrn\", \"expand_ratio\": 0}";
    rc = lina_config_parse(bad, strlen(bad), "bad.json", &c);
    CHECK(rc != 0 && strstr(lina_last_error(), "expand_ratio"), "hgrn config: expand_ratio 0 rejected (%s)",
          lina_last_error());
}

int main(void)
{
    g_ref_seq = ref_hgrn;
    test_names();
    test_config();
    test_fd("hgrn lower bounds, 3 layers", tiny_hgrn(0, 1, 1, 3), 2, 9, 1.0);
    test_fd("hgrn short convs, lower bounds", tiny_hgrn(1, 1, 1, 2), 2, 9, 1.0);
    test_fd("hgrn expand_ratio 2, no lower bound", tiny_hgrn(0, 0, 2, 2), 2, 9, 1.0);
    test_fd("hgrn across chunks", tiny_hgrn(1, 1, 1, 2), 1, 150, 0.03);
    test_forms("hgrn forms", tiny_hgrn(1, 1, 1, 2));
    test_decode("hgrn decode", tiny_hgrn(1, 1, 1, 2));
    test_decode("hgrn decode no conv", tiny_hgrn(0, 1, 1, 3));
    return th_exit();
}
