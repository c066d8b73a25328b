/* test_config.c -- config.json: FLA class defaults per model_type, the MLP
 * width rule, hybrid "attn" layers, write/read round trips of every model
 * type, and clear errors for unknown model types and wrong JSON types. */
#include "harness.h"
#include "lina.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <string.h>
#include <unistd.h>

static char g_dir[] = "/tmp/lina_cfg_XXXXXX";

static int parse(const char *js, lina_config *c)
{
    return lina_config_parse(js, strlen(js), "cfg.json", c);
}

static void expect_err(const char *js, const char *what, const char *needle)
{
    lina_config c;
    int rc = parse(js, &c);
    const char *msg = lina_last_error();
    CHECK(rc == LINA_EFORMAT && strstr(msg, "cfg.json") && strstr(msg, needle), "rejects %s (\"%s\")", what, msg);
}

static void test_defaults(void)
{
    lina_config c;
    int rc = parse("{\"model_type\": \"gla\"}", &c);
    CHECK(rc == 0 && c.model_type == LINA_MODEL_GLA && c.hidden_size == 2048 && c.num_hidden_layers == 24 &&
              c.num_heads == 4 && c.num_kv_heads == 0 && c.expand_k == 0.5 && c.expand_v == 1.0 &&
              c.hidden_ratio == 4 && c.intermediate_size == 0 && c.vocab_size == 32000 && c.norm_eps == 1e-6 &&
              strcmp(c.attn_mode, "chunk") == 0 && c.use_short_conv == 0 && c.conv_size == 4 &&
              c.use_output_gate == 1 && c.has_clamp_min == 0 && c.feature_map[0] == 0 && c.fuse_norm == 1 &&
              c.tie_word_embeddings == 0 && c.bos_token_id == 1 && c.eos_token_id == 2 && c.pad_token_id == -1 &&
              c.elementwise_affine == 1 && c.use_gk == 1 && c.use_gv == 0 && c.attn.enabled == 0 &&
              strcmp(c.hidden_act, "swish") == 0 && c.initializer_range == 0.02 && lina_config_mlp_size(&c) == 5632,
          "gla class defaults (%s)", lina_last_error());
    rc = parse("{\"model_type\": \"delta_net\"}", &c);
    CHECK(rc == 0 && c.num_heads == 16 && c.expand_k == 1.0 && c.expand_v == 1.0 && c.use_gate == 0 &&
              c.use_short_conv == 1 && c.use_beta == 1 && c.use_output_norm == 1 && c.allow_neg_eigval == 0 &&
              strcmp(c.qk_norm, "l2") == 0 && strcmp(c.qk_activation, "silu") == 0 && c.num_hidden_layers == 24,
          "delta_net class defaults");
    rc = parse("{\"model_type\": \"gated_deltanet\"}", &c);
    CHECK(rc == 0 && c.num_hidden_layers == 21 && c.num_heads == 6 && c.head_dim == 256 && c.expand_v == 2.0 &&
              c.use_gate == 1 && c.use_short_conv == 1 && c.num_v_heads == 0 && c.conv_size == 4,
          "gated_deltanet class defaults");
    rc = parse("{\"model_type\": \"retnet\"}", &c);
    CHECK(rc == 0 && c.num_heads == 8 && c.expand_k == 1.0 && c.expand_v == 2.0 && c.hidden_ratio == 2 &&
              c.use_output_gate == 1 && lina_config_mlp_size(&c) == 2816,
          "retnet class defaults (MLP 2816)");
    rc = parse("{\"model_type\": \"linear_attn\"}", &c);
    CHECK(rc == 0 && strcmp(c.attn_mode, "fused_chunk") == 0 && strcmp(c.feature_map, "elementwise_product") == 0 &&
              c.num_heads == 4 && c.tie_feature_map_qk == 0 && c.norm_q == 0,
          "linear_attn class defaults");
    rc = parse("{\"model_type\": \"transformer\"}", &c);
    CHECK(rc == 0 && c.num_heads == 32 && c.rope_theta == 10000.0 && c.window_size == 0 && c.qkv_bias == 0 &&
              c.qk_norm[0] == 0 && lina_config_is_attn_layer(&c, 5),
          "transformer class defaults");
    rc = parse("{\"model_type\": \"hgrn2\"}", &c);
    CHECK(rc == 0 && c.expand_ratio == 128 && c.num_heads == 16 && c.use_lower_bound == 1, "hgrn2: num_heads from expand_ratio");
    rc = parse("{\"model_type\": \"hgrn2\", \"num_heads\": 8, \"expand_ratio\": null}", &c);
    CHECK(rc == 0 && c.num_heads == 8 && c.expand_ratio == 256, "hgrn2: expand_ratio from num_heads");
}

static void test_mlp_rule(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 2048;
    CHECK(lina_config_mlp_size(&c) == 5632, "MLP width D=2048 ratio 4 -> 5632");
    c.hidden_size = 1024;
    CHECK(lina_config_mlp_size(&c) == 2816, "MLP width D=1024 ratio 4 -> 2816");
    c.hidden_size = 2048;
    c.hidden_ratio = 2;
    CHECK(lina_config_mlp_size(&c) == 2816, "MLP width D=2048 ratio 2 -> 2816");
    c.hidden_ratio = 0; /* null -> 4 */
    CHECK(lina_config_mlp_size(&c) == 5632, "MLP width with hidden_ratio null uses 4");
    c.hidden_size = 64;
    CHECK(lina_config_mlp_size(&c) == 256, "MLP width D=64 -> 256");
    c.intermediate_size = 100;
    CHECK(lina_config_mlp_size(&c) == 100, "intermediate_size wins");
}

static void test_real_config(void)
{
    /* shaped like fla-hub's gla-340M config.json, with HF's own keys */
    const char *js = "{\n"
                     "  \"architectures\": [\"GLAForCausalLM\"],\n"
                     "  \"attn_mode\": \"chunk\", \"bos_token_id\": 1, \"clamp_min\": null,\n"
                     "  \"eos_token_id\": 2, \"expand_k\": 0.5, \"expand_v\": 1, \"fuse_cross_entropy\": true,\n"
                     "  \"fuse_norm\": true, \"hidden_act\": \"swish\", \"hidden_ratio\": 4,\n"
                     "  \"hidden_size\": 1024, \"initializer_range\": 0.02, \"intermediate_size\": null,\n"
                     "  \"max_position_embeddings\": 2048, \"model_type\": \"gla\", \"num_heads\": 4,\n"
                     "  \"num_hidden_layers\": 24, \"norm_eps\": 1e-06, \"tie_word_embeddings\": true,\n"
                     "  \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.45.0\",\n"
                     "  \"use_cache\": true, \"use_gk\": true, \"use_gv\": false, \"use_output_gate\": true,\n"
                     "  \"use_short_conv\": false, \"vocab_size\": 32000, \"pad_token_id\": null\n"
                     "}\n";
    lina_config c;
    int rc = parse(js, &c);
    CHECK(rc == 0 && c.hidden_size == 1024 && c.tie_word_embeddings == 1 && c.expand_v == 1.0 &&
              lina_config_mlp_size(&c) == 2816 && c.has_clamp_min == 0,
          "fla-hub style gla-340M config (%s)", rc ? lina_last_error() : "ok");
    rc = parse("{\"model_type\":\"gla\",\"clamp_min\":-5,\"num_kv_heads\":2,\"feature_map\":\"relu\"}", &c);
    CHECK(rc == 0 && c.has_clamp_min == 1 && c.clamp_min == -5.0 && c.num_kv_heads == 2 &&
              strcmp(c.feature_map, "relu") == 0,
          "clamp_min, num_kv_heads, feature_map");
    /* keys of other classes are ignored, as FLA's **kwargs does */
    rc = parse("{\"model_type\":\"gated_deltanet\",\"expand_k\":\"whatever\",\"attn\":null}", &c);
    CHECK(rc == 0 && c.attn.enabled == 0, "keys the class does not have are ignored");
    rc = parse("{\"model_type\":\"transformer\",\"qk_norm\":true,\"window_size\":512,\"num_kv_heads\":8}", &c);
    CHECK(rc == 0 && strcmp(c.qk_norm, "rms") == 0 && c.window_size == 512 && c.num_kv_heads == 8,
          "transformer qk_norm (bool), window, kv heads");
}

static void test_hybrid(void)
{
    lina_config c;
    int rc = parse("{\"model_type\":\"gla\",\"hidden_size\":256,\"num_hidden_layers\":8,"
                   "\"attn\":{\"layers\":[5,1],\"num_heads\":4}}",
                   &c);
    CHECK(rc == 0 && c.attn.enabled && c.attn.n_layers == 2 && c.attn.layers[0] == 1 && c.attn.layers[1] == 5 &&
              c.attn.num_heads == 4 && c.attn.num_kv_heads == 4 && c.attn.qkv_bias == 0 && c.attn.window_size == 0 &&
              c.attn.rope_theta == 10000.0,
          "hybrid attn: layers sorted, defaults for the rest (%s)", rc ? lina_last_error() : "ok");
    CHECK(rc == 0 && lina_config_is_attn_layer(&c, 1) && lina_config_is_attn_layer(&c, 5) &&
              !lina_config_is_attn_layer(&c, 0) && !lina_config_is_attn_layer(&c, 4),
          "is_attn_layer");
    rc = parse("{\"model_type\":\"delta_net\",\"hidden_size\":256,\"num_hidden_layers\":4,\"num_heads\":4,"
               "\"attn\":{\"layers\":[3],\"num_heads\":4,\"num_kv_heads\":2,\"window_size\":64,"
               "\"qkv_bias\":true,\"rope_theta\":500000}}",
               &c);
    CHECK(rc == 0 && c.attn.num_kv_heads == 2 && c.attn.window_size == 64 && c.attn.qkv_bias == 1 &&
              c.attn.rope_theta == 500000.0,
          "hybrid attn: every key");
}

static int same_config(const lina_config *a, const lina_config *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static void test_roundtrip(void)
{
    const char *cfgs[] = {
        "{\"model_type\":\"gla\",\"hidden_size\":512,\"num_hidden_layers\":6,\"clamp_min\":-3.25,"
        "\"attn\":{\"layers\":[2,5],\"num_heads\":8,\"window_size\":128},\"norm_eps\":1e-5,\"expand_k\":0.75}",
        "{\"model_type\":\"delta_net\",\"hidden_size\":256,\"num_heads\":4,\"qk_norm\":\"sum\","
        "\"qk_activation\":\"elu\",\"use_gate\":true,\"allow_neg_eigval\":true,\"pad_token_id\":2}",
        "{\"model_type\":\"gated_deltanet\",\"hidden_size\":384,\"head_dim\":64,\"num_heads\":3,"
        "\"num_v_heads\":6,\"expand_v\":1.5,\"intermediate_size\":1000}",
        "{\"model_type\":\"retnet\",\"hidden_size\":128,\"feature_map\":\"elu\",\"hidden_ratio\":null}",
        "{\"model_type\":\"linear_attn\",\"hidden_size\":128,\"norm_q\":true,\"tie_feature_map_qk\":true,"
        "\"feature_map\":\"hedgehog\",\"elementwise_affine\":null}",
        "{\"model_type\":\"transformer\",\"hidden_size\":256,\"num_heads\":8,\"num_kv_heads\":2,"
        "\"qk_norm\":true,\"window_size\":64,\"rope_theta\":1e6,\"qkv_bias\":true}",
        "{\"model_type\":\"hgrn2\",\"hidden_size\":256,\"expand_ratio\":64,\"use_short_conv\":true}",
        "{\"model_type\":\"rwkv7\",\"hidden_size\":256,\"head_dim\":32,\"value_dim\":512,\"norm_bias\":false,"
        "\"a_low_rank_dim\":24,\"hidden_ratio\":3.5}",
    };
    char path[300];
    snprintf(path, sizeof path, "%s/config.json", g_dir);
    for (int i = 0; i < (int)(sizeof cfgs / sizeof cfgs[0]); i++) {
        lina_config a, b;
        int rc = parse(cfgs[i], &a);
        rc = rc ? rc : lina_config_write(path, &a);
        rc = rc ? rc : lina_config_read(path, &b);
        CHECK(rc == 0 && same_config(&a, &b), "write/read round trip of %s (%s)", lina_model_type_name(a.model_type),
              rc ? lina_last_error() : "ok");
        char *js = lina_config_json(&a);
        cJSON *root = js ? cJSON_Parse(js) : NULL;
        const cJSON *arch = root ? cJSON_GetObjectItemCaseSensitive(root, "architectures") : NULL;
        CHECK(root && cJSON_IsArray(arch) && cJSON_GetArraySize(arch) == 1 &&
                  strstr(cJSON_GetArrayItem(arch, 0)->valuestring, "ForCausalLM"),
              "%s JSON is valid and names the HF architecture", lina_model_type_name(a.model_type));
        cJSON_Delete(root);
        free(js);
    }
    /* doubles keep a decimal point, nulls stay null */
    lina_config c;
    parse(cfgs[3], &c);
    char *js = lina_config_json(&c);
    CHECK(js && strstr(js, "\"expand_k\": 1.0") && strstr(js, "\"hidden_ratio\": null") &&
              strstr(js, "\"norm_eps\": 1e-06") && strstr(js, "\"pad_token_id\": null") && !strstr(js, "attnres"),
          "JSON formatting: 1.0, null, 1e-06");
    free(js);
    DIR *d = opendir(g_dir);
    int stray = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        stray += strstr(e->d_name, ".tmp") != NULL;
    }
    if (d) {
        closedir(d);
    }
    CHECK(stray == 0, "no temporary file left behind");
    /* an invalid config is not written */
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 0;
    snprintf(path, sizeof path, "%s/bad.json", g_dir);
    int rc = lina_config_write(path, &c);
    CHECK(rc == LINA_EFORMAT && access(path, F_OK) != 0, "invalid config refused by the writer");
}

static void test_errors(void)
{
    expect_err("{\"model_type\": \"mamba17\"}", "an unknown model_type", "unknown model_type \"mamba17\"");
    expect_err("{\"hidden_size\": 64}", "a missing model_type", "missing \"model_type\"");
    expect_err("{\"model_type\": 3}", "a numeric model_type", "\"model_type\" must be a string");
    expect_err("{\"model_type\": \"gla\", \"hidden_size\": \"2048\"}", "a string hidden_size",
               "\"hidden_size\" must be an integer (got a string)");
    expect_err("{\"model_type\": \"gla\", \"hidden_size\": 20.5}", "a fractional hidden_size",
               "\"hidden_size\" must be an integer");
    expect_err("{\"model_type\": \"gla\", \"hidden_size\": 1e12}", "an out-of-range hidden_size",
               "\"hidden_size\" must be an integer");
    expect_err("{\"model_type\": \"gla\", \"use_short_conv\": 1}", "an integer for a boolean",
               "\"use_short_conv\" must be true or false (got a number)");
    expect_err("{\"model_type\": \"gla\", \"norm_eps\": \"1e-6\"}", "a string norm_eps",
               "\"norm_eps\" must be a number");
    expect_err("{\"model_type\": \"gla\", \"norm_eps\": null}", "a null norm_eps", "\"norm_eps\" must be a number");
    expect_err("{\"model_type\": \"gla\", \"feature_map\": 5}", "a numeric feature_map",
               "\"feature_map\" must be a string or null");
    expect_err("{\"model_type\": \"gla\", \"attn_mode\": null}", "a null attn_mode", "\"attn_mode\" must be a string");
    expect_err("{\"model_type\": \"gla\", \"num_hidden_layers\": 0}", "zero layers", "num_hidden_layers");
    expect_err("{\"model_type\": \"gla\", \"vocab_size\": -1}", "a negative vocab size", "vocab_size");
    expect_err("{\"model_type\": \"gla\", \"pad_token_id\": -5}", "a negative token id", "\"pad_token_id\" must not be negative");
    expect_err("{\"model_type\": \"gla\", \"hidden_size\": 100, \"num_heads\": 3}", "a key dim not divisible by heads",
               "not a positive multiple");
    expect_err("{\"model_type\": \"gla\", \"num_kv_heads\": 3}", "kv heads not dividing heads", "num_kv_heads");
    expect_err("{\"model_type\": \"gated_deltanet\", \"head_dim\": 10, \"expand_v\": 0.33}", "head_dim*expand_v not integral",
               "not an integer");
    expect_err("{\"model_type\": \"gated_deltanet\", \"num_v_heads\": 4}", "num_v_heads not a multiple",
               "num_v_heads");
    expect_err("{\"model_type\": \"delta_net\", \"qk_norm\": \"layer\"}", "an unknown qk_norm", "qk_norm \"layer\"");
    expect_err("{\"model_type\": \"delta_net\", \"qk_activation\": \"gelu\"}", "an unknown qk_activation",
               "qk_activation");
    expect_err("{\"model_type\": \"gla\", \"hidden_act\": \"gelu\"}", "a non-swish MLP", "hidden_act \"gelu\"");
    expect_err("{\"model_type\": \"gla\", \"attnres_block_size\": 4}", "attnres_block_size", "attnres_block_size");
    expect_err("{\"model_type\": \"gla\", \"attn\": [1]}", "attn as an array", "\"attn\" must be an object or null");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"num_heads\": 4}}", "attn without layers", "needs \"layers\"");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [1]}}", "attn without num_heads",
               "needs \"num_heads\"");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": 1, \"num_heads\": 4}}", "attn layers not a list",
               "\"attn.layers\" must be an array");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [\"1\"], \"num_heads\": 4}}", "a string attn layer",
               "entries must be integers");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [24], \"num_heads\": 4}}", "attn layer out of range",
               "attn layer 24 is out of range");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [2, 2], \"num_heads\": 4}}", "a repeated attn layer",
               "listed twice");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [2], \"num_heads\": \"4\"}}", "a string attn.num_heads",
               "\"attn.num_heads\"");
    expect_err("{\"model_type\": \"gla\", \"attn\": {\"layers\": [2], \"num_heads\": 3}}", "attn heads not dividing D",
               "attn layers");
    expect_err("{\"model_type\": \"gla\",", "truncated JSON", "not valid JSON");
    expect_err("[\"gla\"]", "a JSON array", "must be a JSON object");
    expect_err("{\"model_type\": \"gla\"} x", "trailing text", "unexpected text");
    expect_err("", "an empty file", "not valid JSON");
    lina_config c;
    int rc = lina_config_read("/nonexistent/config.json", &c);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "/nonexistent/config.json"), "missing file: LINA_EIO");
}

/* FLA's spellings: eos_token_id as a list, transformer qk_norm null, attn_mode
 * refused when unknown, MoE keys written only for MoE models */
static void test_fla_options(void)
{
    lina_config c;
    int rc = parse("{\"model_type\": \"gla\", \"eos_token_id\": [7, 9]}", &c);
    CHECK(rc == 0 && c.eos_token_id == 7, "eos_token_id as a list keeps its first id (%s)",
          rc ? lina_last_error() : "ok");
    expect_err("{\"model_type\": \"gla\", \"eos_token_id\": []}", "an empty eos_token_id list", "eos_token_id");
    expect_err("{\"model_type\": \"gla\", \"eos_token_id\": [\"x\"]}", "a non-integer eos_token_id", "eos_token_id");
    rc = parse("{\"model_type\": \"transformer\", \"qk_norm\": null}", &c);
    CHECK(rc == 0 && c.qk_norm[0] == '\0', "transformer qk_norm null means none (%s)", rc ? lina_last_error() : "ok");
    expect_err("{\"model_type\": \"gla\", \"attn_mode\": \"bogus\"}", "attn_mode \"bogus\"", "attn_mode");
    const char *modes[4] = {"chunk", "fused_chunk", "fused_recurrent", "parallel"};
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        char js[128];
        snprintf(js, sizeof js, "{\"model_type\": \"retnet\", \"attn_mode\": \"%s\"}", modes[i]);
        ok = ok && parse(js, &c) == 0;
    }
    CHECK(ok, "attn_mode chunk, fused_chunk, fused_recurrent, parallel are accepted");
    /* attn as a list of specs: the union of their layers, one setting */
    rc = parse("{\"model_type\": \"gla\", \"num_hidden_layers\": 6, \"attn\": [{\"layers\": [4], \"num_heads\": 8}, "
               "{\"layers\": [1, 2], \"num_heads\": 8}]}", &c);
    CHECK(rc == 0 && c.attn.enabled && c.attn.n_layers == 3 && c.attn.layers[0] == 1 && c.attn.layers[1] == 2 &&
              c.attn.layers[2] == 4 && c.attn.num_heads == 8,
          "attn as a list of specs: the union of their layers (%s)", rc ? lina_last_error() : "ok");
    expect_err("{\"model_type\": \"gla\", \"num_hidden_layers\": 6, \"attn\": [{\"layers\": [4], \"num_heads\": 8}, "
               "{\"layers\": [1], \"num_heads\": 4}]}", "attn specs that differ", "differs from entry 0");
    rc = parse("{\"model_type\": \"gla\", \"attn\": []}", &c);
    CHECK(rc == 0 && !c.attn.enabled, "an empty attn list means no attention layers");
    /* MoE keys only in MoE configs */
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    for (int moe = 0; moe < 2; moe++) {
        lina_config_default(&c, LINA_MODEL_GLA);
        c.num_experts = moe ? 4 : 0;
        rc = lina_config_write(p, &c);
        FILE *f = fopen(p, "rb");
        char buf[16384] = {0};
        size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
        if (f) {
            fclose(f);
        }
        int has = n > 0 && strstr(buf, "num_experts_per_tok") && strstr(buf, "router_aux_loss_coef");
        int none = n > 0 && !strstr(buf, "num_experts_per_tok") && !strstr(buf, "router_aux_loss_coef");
        CHECK(rc == 0 && (moe ? has : none), "num_experts_per_tok / router_aux_loss_coef written %s",
              moe ? "with num_experts > 0" : "not at all without experts");
        lina_config back;
        rc = lina_config_read(p, &back);
        CHECK(rc == 0 && back.num_experts == c.num_experts && back.num_experts_per_tok == c.num_experts_per_tok &&
                  back.router_aux_loss_coef == c.router_aux_loss_coef,
              "config round trip %s experts (%s)", moe ? "with" : "without", rc ? lina_last_error() : "ok");
    }
}

int main(void)
{
    if (!mkdtemp(g_dir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_defaults();
    test_mlp_rule();
    test_real_config();
    test_hybrid();
    test_roundtrip();
    test_errors();
    test_fla_options();
    char p[400];
    snprintf(p, sizeof p, "%s/config.json", g_dir);
    unlink(p);
    rmdir(g_dir);
    return th_exit();
}
