/* test_fla_names.c -- tensor names that follow flash-linear-attention's
 * modules where a config option changes them: GLA and RetNet name their output
 * norm g_norm_swish_gate (FusedRMSNormGated) only with fuse_norm, g_norm
 * otherwise (the same math). */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void small(lina_config *c, lina_model_type t)
{
    lina_config_default(c, t);
    c->hidden_size = 32;
    c->num_hidden_layers = 2;
    c->num_heads = 2;
    c->vocab_size = 50;
    c->intermediate_size = 48;
}

/* logits of the fused and the unfused model from the same parameters agree
 * bit for bit, and the unfused one names the norm g_norm */
static void check_unfused(lina_model_type t)
{
    const char *mt = lina_model_type_name(t);
    lina_config c;
    small(&c, t);
    c.use_output_gate = 1;
    lina_model *fused = NULL, *plain = NULL;
    int rc = lina_model_create(&c, 3, &fused);
    c.fuse_norm = 0;
    rc = rc ? rc : lina_model_create(&c, 3, &plain);
    CHECK(rc == LINA_OK, "%s fuse_norm false: model created (%s)", mt, rc ? lina_last_error() : "ok");
    if (rc) {
        lina_model_free(fused);
        lina_model_free(plain);
        return;
    }
    CHECK(lina_model_find_tensor(plain, "model.layers.1.attn.g_norm.weight") >= 0 &&
              lina_model_find_tensor(plain, "model.layers.1.attn.g_norm_swish_gate.weight") < 0 &&
              lina_model_find_tensor(fused, "model.layers.1.attn.g_norm_swish_gate.weight") >= 0,
          "%s: g_norm.weight with fuse_norm false, g_norm_swish_gate.weight with fuse_norm true", mt);
    size_t np = lina_model_num_params(plain);
    CHECK(np == lina_model_num_params(fused), "%s: same parameter count fused and unfused", mt);
    memcpy(lina_model_params(plain), lina_model_params(fused), np * sizeof(float));
    int32_t tok[12];
    for (int i = 0; i < 12; i++) {
        tok[i] = (i * 7 + 3) % c.vocab_size;
    }
    float *a = malloc(12 * (size_t)c.vocab_size * sizeof(float)), *b = malloc(12 * (size_t)c.vocab_size * sizeof(float));
    rc = lina_model_forward_logits(fused, tok, 2, 6, a, NULL);
    rc = rc ? rc : lina_model_forward_logits(plain, tok, 2, 6, b, NULL);
    CHECK(rc == LINA_OK && memcmp(a, b, 12 * (size_t)c.vocab_size * sizeof(float)) == 0,
          "%s: the unfused output norm computes what the fused one does (identical logits)", mt);
    /* save / load keeps the name and the values */
    char dir[] = "/tmp/lina_fla_names_XXXXXX";
    lina_model *back = NULL;
    if (mkdtemp(dir)) {
        rc = lina_model_save(plain, dir);
        rc = rc ? rc : lina_model_load(dir, &back);
        CHECK(rc == LINA_OK && lina_model_config(back)->fuse_norm == 0 &&
                  lina_model_find_tensor(back, "model.layers.0.attn.g_norm.weight") >= 0 &&
                  memcmp(lina_model_params(back), lina_model_params(plain), np * sizeof(float)) == 0,
              "%s fuse_norm false: save + load round trip (%s)", mt, rc ? lina_last_error() : "ok");
        char p[256];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/config.json", dir);
        unlink(p);
        rmdir(dir);
    }
    lina_model_free(back);
    free(a);
    free(b);
    lina_model_free(fused);
    lina_model_free(plain);
}

int main(void)
{
    check_unfused(LINA_MODEL_GLA);
    check_unfused(LINA_MODEL_RETNET);
    return th_exit();
}
