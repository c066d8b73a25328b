/* test_fla_names.c -- checkpoint tensor names as flash-linear-attention
 * writes them: GLA and RetNet name their output norm g_norm_swish_gate
 * (FusedRMSNormGated) only with fuse_norm, g_norm otherwise (the same math),
 * and have no norm weight with elementwise_affine false;
 * a checkpoint's tensors must all be used (a tied lm_head.weight only when it
 * equals the embeddings). */
#include "harness.h"
#include "lina.h"
#include "../src/model/model.h"

#include <math.h>
#include <stdio.h>
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

static void rm_ckpt(const char *dir)
{
    char p[256];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
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
        rm_ckpt(dir);
    }
    lina_model_free(back);
    free(a);
    free(b);
    lina_model_free(fused);
    lina_model_free(plain);
}


/* rewrite dir/model.safetensors with the model's tensors plus `extra` (NULL: none) */
static int write_with(const lina_model *m, const char *dir, const char *extra, const float *extra_data,
                      int64_t d0, int64_t d1)
{
    int n = lina_model_num_tensors(m);
    lina_st_view *v = calloc((size_t)n + 1, sizeof(*v));
    float *P = lina_model_params((lina_model *)m);
    for (int i = 0; i < n; i++) {
        const int64_t *sh;
        size_t off;
        lina_model_tensor(m, i, &v[i].name, &v[i].ndim, &sh, &off, NULL);
        for (int k = 0; k < v[i].ndim; k++) {
            v[i].shape[k] = sh[k];
        }
        v[i].data = P + off;
    }
    if (extra) {
        v[n].name = extra;
        v[n].ndim = 2;
        v[n].shape[0] = d0;
        v[n].shape[1] = d1;
        v[n].data = extra_data;
        n++;
    }
    char p[256];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    const char *meta[2] = {"format", "pt"};
    int rc = lina_st_write(p, v, n, meta, 1, LINA_ST_F32);
    free(v);
    return rc;
}

static void check_unused_tensors(void)
{
    lina_config c;
    small(&c, LINA_MODEL_GLA);
    c.tie_word_embeddings = 1;
    lina_model *m = NULL, *back = NULL;
    char dir[] = "/tmp/lina_fla_unused_XXXXXX";
    if (lina_model_create(&c, 5, &m) != LINA_OK || !mkdtemp(dir)) {
        CHECK(0, "unused tensors: setup (%s)", lina_last_error());
        lina_model_free(m);
        return;
    }
    int rc = lina_model_save(m, dir);
    const int64_t *esh;
    size_t eoff;
    lina_model_tensor(m, lina_model_find_tensor(m, "model.embeddings.weight"), NULL, NULL, &esh, &eoff, NULL);
    float *emb = lina_model_params(m) + eoff;
    size_t ne = (size_t)(esh[0] * esh[1]);
    float *other = malloc(ne * sizeof(float));
    memcpy(other, emb, ne * sizeof(float));
    other[7] += 0.5f;
    /* a stray tensor */
    rc = rc ? rc : write_with(m, dir, "model.layers.0.attn.stray.weight", other, esh[0], esh[1]);
    int lr = rc ? rc : lina_model_load(dir, &back);
    CHECK(rc == LINA_OK && lr == LINA_EFORMAT && strstr(lina_last_error(), "model.layers.0.attn.stray.weight") &&
              strstr(lina_last_error(), "not used"),
          "a tensor the model does not use is an error naming it (%s)", lina_last_error());
    lina_model_free(back);
    back = NULL;
    /* tied embeddings with an lm_head.weight equal to them: accepted */
    rc = write_with(m, dir, "lm_head.weight", emb, esh[0], esh[1]);
    lr = rc ? rc : lina_model_load(dir, &back);
    CHECK(lr == LINA_OK, "tied embeddings and an equal lm_head.weight load (%s)", lr ? lina_last_error() : "ok");
    lina_model_free(back);
    back = NULL;
    /* ... and one that differs: an error */
    rc = write_with(m, dir, "lm_head.weight", other, esh[0], esh[1]);
    lr = rc ? rc : lina_model_load(dir, &back);
    CHECK(lr == LINA_EFORMAT && strstr(lina_last_error(), "lm_head.weight differs"),
          "tied embeddings and a different lm_head.weight is an error (%s)", lina_last_error());
    lina_model_free(back);
    /* the model's own file loads */
    rc = write_with(m, dir, NULL, NULL, 0, 0);
    back = NULL;
    lr = rc ? rc : lina_model_load(dir, &back);
    CHECK(lr == LINA_OK, "the model's own tensors load (%s)", lr ? lina_last_error() : "ok");
    lina_model_free(back);
    free(other);
    rm_ckpt(dir);
    lina_model_free(m);
}

/* elementwise_affine false: no output-norm weight; the same function as a
 * weight of ones (logits and the other gradients identical) */
static void check_no_affine(lina_model_type t)
{
    const char *mt = lina_model_type_name(t);
    lina_config c;
    small(&c, t);
    lina_model *w = NULL, *nw = NULL;
    int rc = lina_model_create(&c, 4, &w);
    c.elementwise_affine = 0;
    rc = rc ? rc : lina_model_create(&c, 4, &nw);
    CHECK(rc == LINA_OK, "%s elementwise_affine false: model created (%s)", mt, rc ? lina_last_error() : "ok");
    if (rc) {
        lina_model_free(w);
        lina_model_free(nw);
        return;
    }
    CHECK(lina_model_find_tensor(nw, "model.layers.0.attn.g_norm_swish_gate.weight") < 0 &&
              lina_model_find_tensor(nw, "model.layers.0.attn.g_norm.weight") < 0 &&
              lina_model_find_tensor(w, "model.layers.0.attn.g_norm_swish_gate.weight") >= 0 &&
              lina_model_num_tensors(nw) == lina_model_num_tensors(w) - c.num_hidden_layers,
          "%s elementwise_affine false: no output-norm weight per layer", mt);
    /* the other tensors by name from the model with weights (its norm weights are ones) */
    for (int i = 0; i < lina_model_num_tensors(nw); i++) {
        const char *name;
        const int64_t *sh;
        size_t off, offw;
        int nd;
        lina_model_tensor(nw, i, &name, &nd, &sh, &off, NULL);
        lina_model_tensor(w, lina_model_find_tensor(w, name), NULL, NULL, NULL, &offw, NULL);
        size_t n = 1;
        for (int k = 0; k < nd; k++) {
            n *= (size_t)sh[k];
        }
        memcpy(lina_model_params(nw) + off, lina_model_params(w) + offw, n * sizeof(float));
    }
    int32_t tok[12], tgt[12];
    for (int i = 0; i < 12; i++) {
        tok[i] = (i * 5 + 1) % c.vocab_size;
        tgt[i] = (i * 3 + 2) % c.vocab_size;
    }
    double la = 0.0, lb = 1.0;
    lina_model_zero_grad(w);
    lina_model_zero_grad(nw);
    rc = lina_model_train_step(w, tok, tgt, 2, 6, &la, NULL);
    rc = rc ? rc : lina_model_train_step(nw, tok, tgt, 2, 6, &lb, NULL);
    size_t oq, oqw;
    lina_model_tensor(nw, lina_model_find_tensor(nw, "model.layers.0.attn.q_proj.weight"), NULL, NULL, NULL, &oq,
                      NULL);
    lina_model_tensor(w, lina_model_find_tensor(w, "model.layers.0.attn.q_proj.weight"), NULL, NULL, NULL, &oqw,
                      NULL);
    /* the backward runs the norm through its weightless path: equal up to float rounding */
    const int64_t *qs;
    lina_model_tensor(w, lina_model_find_tensor(w, "model.layers.0.attn.q_proj.weight"), NULL, NULL, &qs, NULL, NULL);
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < qs[0] * qs[1]; i++) {
        double a = lina_model_grads(nw)[oq + (size_t)i], b = lina_model_grads(w)[oqw + (size_t)i];
        num += (a - b) * (a - b);
        den += b * b;
    }
    double rel = den > 0.0 ? sqrt(num / den) : 1.0;
    CHECK(rc == LINA_OK && la == lb && den > 0.0 && rel < 1e-5,
          "%s elementwise_affine false computes what a weight of ones does (loss %.6f = %.6f, q_proj "
          "gradient rel diff %.2g)", mt, la, lb, rel);
    lina_model_free(w);
    lina_model_free(nw);
}

/* a sharded checkpoint is refused with a message naming the index file */
static void check_sharded(void)
{
    lina_config c;
    small(&c, LINA_MODEL_GLA);
    lina_model *m = NULL, *back = NULL;
    char dir[] = "/tmp/lina_fla_shard_XXXXXX";
    if (lina_model_create(&c, 6, &m) != LINA_OK || !mkdtemp(dir)) {
        CHECK(0, "sharded: setup (%s)", lina_last_error());
        lina_model_free(m);
        return;
    }
    int rc = lina_model_save(m, dir);
    char p[256], q[256];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    snprintf(q, sizeof q, "%s/model-00001-of-00001.safetensors", dir);
    rc = rc ? rc : rename(p, q);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs("{\"metadata\": {}, \"weight_map\": {\"lm_head.weight\": \"model-00001-of-00001.safetensors\"}}\n", f);
        fclose(f);
    }
    int lr = lina_model_load(dir, &back);
    CHECK(rc == 0 && f && lr == LINA_EFORMAT && strstr(lina_last_error(), "model.safetensors.index.json") &&
              strstr(lina_last_error(), "sharded"),
          "a sharded checkpoint is refused naming its index (%s)", lina_last_error());
    lina_model_free(back);
    unlink(p);
    unlink(q);
    rm_ckpt(dir);
    lina_model_free(m);
}

int main(void)
{
    check_unfused(LINA_MODEL_GLA);
    check_unfused(LINA_MODEL_RETNET);
    check_unused_tensors();
    check_no_affine(LINA_MODEL_GLA);
    check_no_affine(LINA_MODEL_RETNET);
    check_sharded();
    return th_exit();
}
