/* test_hostile.c -- hostile inputs: crafted config.json files whose sizes
 * overflow (refused by the config bounds and the checked size arithmetic, in
 * the library and through train / generate / eval), checkpoints whose tensor
 * shapes disagree with their config (refused from the header, before the
 * model is allocated), and token files truncated or rewritten while in use
 * (an error, not SIGBUS). */
#include "harness.h"
#include "lina.h"
#include "../src/kern/checked.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *lina_bin;
static char root[64];

static void put_text(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(s, f);
        fclose(f);
    }
}

/* run lina with args; stderr into err; exit status, or 128 + signal */
static int run(const char *args, char *err, size_t errn)
{
    char cmd[2048], out[1];
    snprintf(cmd, sizeof cmd, "%s %s", lina_bin, args);
    return th_sh_capture(cmd, root, out, sizeof out, err, errn);
}

/* one "lina: ..." line on stderr naming `needle`, a non-zero exit, no signal */
static void expect_cli_fail(const char *what, const char *args, const char *needle)
{
    char err[4096];
    int st = run(args, err, sizeof err);
    const char *nl = strchr(err, '\n');
    int one = strncmp(err, "lina: ", 6) == 0 && nl && nl[1] == '\0';
    CHECK(st != 0 && st < 128 && one && strstr(err, needle), "%s -> exit %d, \"%.*s\"", what, st,
          (int)strcspn(err, "\n"), err);
}

static void test_checked(void)
{
    CHECK(lina_szmul(3, 5) == 15 && lina_szmul(0, LINA_SZ_OVF) == 0 && lina_szmul(SIZE_MAX / 2, 3) == LINA_SZ_OVF &&
              lina_szmul3((size_t)1 << 40, (size_t)1 << 20, (size_t)1 << 4) == LINA_SZ_OVF,
          "checked multiply saturates on overflow");
    CHECK(lina_szadd(SIZE_MAX - 1, 1) == SIZE_MAX && lina_szadd(LINA_SZ_OVF, 0) == LINA_SZ_OVF &&
              lina_szadd(lina_szmul(SIZE_MAX, 2), 1) == LINA_SZ_OVF && lina_szadd(7, 8) == 15,
          "checked add saturates, and an overflow stays an overflow");
    CHECK(lina_szdim(-1) == LINA_SZ_OVF && lina_szdim(12) == 12, "negative dimensions are overflows");
}

/* the crafted config (parameter count 2^30 * 1431655757 * 3 wrapped to a
 * 72-byte buffer before the bounds) and its relatives: each refused by
 * lina_config_parse with a message naming the key */
static const struct {
    const char *what, *json, *needle;
} bad_cfg[] = {
    {"the crafted config (hidden_size 2^30)",
     "{\"model_type\": \"gla\", \"hidden_size\": 1073741824, \"intermediate_size\": 1431655757, "
     "\"expand_k\": 9.313225746154785e-10, \"expand_v\": 9.313225746154785e-10, \"vocab_size\": 1, "
     "\"num_heads\": 1, \"num_hidden_layers\": 1}",
     "hidden_size"},
    {"intermediate_size 1431655757",
     "{\"model_type\": \"gla\", \"hidden_size\": 64, \"intermediate_size\": 1431655757, \"num_heads\": 1}",
     "intermediate_size"},
    {"vocab_size 2^31-1", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"vocab_size\": 2147483647}", "vocab_size"},
    {"expand_k 1e10 (float-to-int overflow)", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"expand_k\": 1e10}",
     "hidden_size*expand_k (6.4e+11)"},
    {"expand_v 1e300", "{\"model_type\": \"retnet\", \"hidden_size\": 64, \"expand_v\": 1e300}", "expand_v"},
    {"expand_k 2^-30", "{\"model_type\": \"mlstm\", \"hidden_size\": 64, \"expand_k\": 9.313225746154785e-10}",
     "expand_k"},
    {"a per-head key dim of 2^20",
     "{\"model_type\": \"delta_net\", \"hidden_size\": 65536, \"expand_k\": 16, \"num_heads\": 1}",
     "key dim per head"},
    {"num_heads 2^31-1", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"num_heads\": 2147483647}", "num_heads"},
    {"gated_deltanet head_dim 2^30", "{\"model_type\": \"gated_deltanet\", \"hidden_size\": 64, \"head_dim\": 1073741824}",
     "head_dim"},
    {"gated_deltanet num_v_heads * head_dim too wide",
     "{\"model_type\": \"gated_deltanet\", \"hidden_size\": 64, \"head_dim\": 4096, \"num_heads\": 4, "
     "\"num_v_heads\": 65536, \"expand_v\": 1}",
     "num_v_heads*head_dim"},
    {"mamba2 expand 2^30 (num_heads derivation)",
     "{\"model_type\": \"mamba2\", \"hidden_size\": 64, \"expand\": 1073741824, \"head_dim\": 1}", "expand"},
    {"mamba2 chunk_size 0", "{\"model_type\": \"mamba2\", \"hidden_size\": 64, \"chunk_size\": 0}", "chunk_size"},
    {"hgrn2 expand_ratio 2^30", "{\"model_type\": \"hgrn2\", \"hidden_size\": 64, \"expand_ratio\": 1073741824}",
     "expand_ratio"},
    {"conv_size 2^30", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"conv_size\": 1073741824}", "conv_size"},
    {"num_experts 2^30", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"num_experts\": 1073741824}", "num_experts"},
    {"moe_intermediate_size 2^30",
     "{\"model_type\": \"gla\", \"hidden_size\": 64, \"num_experts\": 4, \"moe_intermediate_size\": 1073741824}",
     "moe_intermediate_size"},
    {"mom num_memories 2^30", "{\"model_type\": \"mom\", \"hidden_size\": 64, \"num_memories\": 1073741824}",
     "num_memories"},
    {"hidden_ratio 1e30", "{\"model_type\": \"gla\", \"hidden_size\": 64, \"hidden_ratio\": 1e30}", "hidden_ratio"},
    {"attn.num_heads 2^30",
     "{\"model_type\": \"gla\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"attn\": {\"layers\": [1], "
     "\"num_heads\": 1073741824}}",
     "attn.num_heads"},
};

static void test_config_bounds(void)
{
    for (size_t i = 0; i < sizeof bad_cfg / sizeof bad_cfg[0]; i++) {
        lina_config c;
        int rc = lina_config_parse(bad_cfg[i].json, strlen(bad_cfg[i].json), "config.json", &c);
        const char *e = lina_last_error();
        CHECK(rc == LINA_EFORMAT && strstr(e, bad_cfg[i].needle) && !strstr(e, "-2147483648"),
              "config bounds: %s -> \"%s\"", bad_cfg[i].what, e);
    }
    /* each bound itself is accepted */
    const char *edge = "{\"model_type\": \"gla\", \"hidden_size\": 64, \"vocab_size\": 16777216, \"num_heads\": 1, "
                       "\"intermediate_size\": 1048576, \"conv_size\": 256, \"num_hidden_layers\": 1}";
    lina_config c;
    int rc = lina_config_parse(edge, strlen(edge), "edge.json", &c);
    CHECK(rc == LINA_OK, "config bounds: values at the bounds are accepted %s", rc ? lina_last_error() : "");
}

/* configs inside the bounds that no machine can hold: refused before any allocation */
static void test_model_too_large(void)
{
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = LINA_CONFIG_MAX_HIDDEN;
    c.num_heads = 64;
    c.vocab_size = LINA_CONFIG_MAX_VOCAB;
    c.num_hidden_layers = LINA_CONFIG_MAX_LAYERS;
    c.intermediate_size = LINA_CONFIG_MAX_WIDTH;
    lina_model *m = NULL;
    int rc = lina_model_create(&c, 1, &m);
    CHECK(rc == LINA_ENOMEM && m == NULL && strstr(lina_last_error(), "GiB"),
          "model too large for memory: refused before allocating (\"%s\")", lina_last_error());

    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 64;
    c.num_hidden_layers = 1;
    c.vocab_size = 100;
    c.num_heads = 2;
    rc = lina_model_create(&c, 1, &m);
    CHECK(rc == LINA_OK, "small model created %s", rc ? lina_last_error() : "");
    if (rc) {
        return;
    }
    float *logits = NULL;
    lina_model_state *s = NULL;
    rc = lina_model_state_create(m, 1 << 30, 1 << 30, &s);
    CHECK(rc == LINA_ENOMEM && s == NULL && strstr(lina_last_error(), "decode state"),
          "decode state for 2^30 sequences: refused (\"%s\")", lina_last_error());
    rc = lina_model_state_create(m, 2, 16, &s);
    logits = malloc(2 * 100 * sizeof(float));
    int32_t tok2[2] = {1, 2};
    rc = rc ? rc : lina_model_decode(m, s, tok2, 2, 1, logits, NULL);
    CHECK(rc == LINA_OK, "a small decode state still works %s", rc ? lina_last_error() : "");
    free(logits);
    lina_model_state_free(s);
    lina_model_free(m);
}

/* a checkpoint whose config disagrees with its tensors */
static void test_shape_before_alloc(const char *dir)
{
    char path[256], js[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    /* vocab 1e7: the model would need 2.5 GB; the header says 300 rows */
    snprintf(js, sizeof js,
             "{\"model_type\": \"gla\", \"hidden_size\": 32, \"num_heads\": 2, \"num_hidden_layers\": 1, "
             "\"vocab_size\": 10000000, \"tie_word_embeddings\": true}");
    put_text(path, js);
    lina_model *m = NULL;
    double t0 = lina_now();
    int rc = lina_model_load(dir, &m);
    double dt = lina_now() - t0;
    const char *e = lina_last_error();
    CHECK(rc == LINA_EFORMAT && m == NULL && strstr(e, "model.embeddings.weight") && strstr(e, "[300, 32]") &&
              strstr(e, "[10000000, 32]"),
          "wrong vocab_size: the error names the tensor and both shapes (\"%s\")", e);
    CHECK(dt < 0.5, "wrong vocab_size: refused from the header in %.3f s (nothing allocated)", dt);
    /* a config whose model could not be allocated at all still gets the shape error */
    snprintf(js, sizeof js,
             "{\"model_type\": \"gla\", \"hidden_size\": 65536, \"num_heads\": 64, \"num_hidden_layers\": 1024, "
             "\"vocab_size\": 16777216, \"tie_word_embeddings\": true}");
    put_text(path, js);
    rc = lina_model_load(dir, &m);
    e = lina_last_error();
    CHECK(rc == LINA_EFORMAT && strstr(e, "[300, 32]") && strstr(e, "[16777216, 65536]"),
          "a config too large for memory: the shape error comes first (\"%s\")", e);
}

/* a token file truncated / rewritten between opening and reading */
static void test_tokfile_shrinks(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/shrink.tok", root);
    enum { N = 200000 };
    uint32_t *t = malloc(N * sizeof *t);
    for (int i = 0; i < N; i++) {
        t[i] = (uint32_t)(i % 1000);
    }
    int rc = lina_tok_write(path, t, N, 1000, 2);
    lina_tokfile *f = NULL;
    rc = rc ? rc : lina_tok_open(path, &f);
    CHECK(rc == LINA_OK, "token file opened %s", rc ? lina_last_error() : "");
    if (rc) {
        free(t);
        return;
    }
    int32_t buf[1024], tgt[1024];
    rc = lina_tok_read(f, N - 1024, 1024, buf);
    CHECK(rc == LINA_OK && buf[1023] == (N - 1) % 1000, "the last window reads before truncation");
    /* truncate to a page: the tail windows are gone */
    CHECK(truncate(path, 4096) == 0, "truncated to 4096 bytes");
    rc = lina_tok_read(f, N - 1024, 1024, buf);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "shrink.tok") && strstr(lina_last_error(), "truncated"),
          "reading past the new end: an error, not SIGBUS (\"%s\")", lina_last_error());
    uint64_t rng = 1;
    int bad = 0;
    for (int i = 0; i < 20; i++) {
        bad += lina_tok_sample(f, &rng, 4, 512, buf, tgt) != LINA_OK;
    }
    CHECK(bad > 0, "sampling from the truncated file fails cleanly (%d of 20 batches)", bad);
    rc = lina_tok_read(f, 0, 1000, buf);
    CHECK(rc == LINA_OK && buf[999] == 999, "the part still there reads");
    /* rewritten in place with ids past the vocabulary */
    FILE *w = fopen(path, "r+b");
    uint16_t big[4] = {60000, 60000, 60000, 60000};
    if (w) {
        fseek(w, 32 + 2 * 100, SEEK_SET);
        fwrite(big, 2, 4, w);
        fclose(w);
    }
    rc = lina_tok_read(f, 96, 16, buf);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "not below vocab_size 1000") &&
              strstr(lina_last_error(), "changed while in use"),
          "a token rewritten past the vocabulary while in use: an error (\"%s\")", lina_last_error());
    lina_tok_close(f);
    free(t);
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    snprintf(root, sizeof root, "/tmp/lina_hostile_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_checked();
    test_config_bounds();
    test_model_too_large();
    test_tokfile_shrinks();

    /* a small checkpoint with a tokenizer, and a token file */
    char ck[128], path[256], tokf[128], args[1024];
    snprintf(ck, sizeof ck, "%s/ck", root);
    const char *text = "the lamb and the lion lay down; the lamb slept. and the lion said unto the lamb. ";
    char big[4096] = {0};
    for (int i = 0; i < 40; i++) {
        strncat(big, text, sizeof big - strlen(big) - 1);
    }
    lina_tokenizer *tk = NULL;
    const char *special[1] = {"<|endoftext|>"};
    int rc = lina_tokenizer_train(big, strlen(big), 300, special, 1, &tk);
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 32;
    c.num_heads = 2;
    c.num_hidden_layers = 1;
    c.vocab_size = 300;
    c.tie_word_embeddings = 1;
    lina_model *m = NULL;
    rc = rc ? rc : lina_model_create(&c, 1, &m);
    rc = rc ? rc : lina_model_save(m, ck);
    snprintf(path, sizeof path, "%s/tokenizer.json", ck);
    rc = rc ? rc : lina_tokenizer_save(tk, path);
    uint32_t toks[4096];
    for (int i = 0; i < 4096; i++) {
        toks[i] = (uint32_t)(i * 7 % 300);
    }
    snprintf(tokf, sizeof tokf, "%s/data.tok", root);
    rc = rc ? rc : lina_tok_write(tokf, toks, 4096, 300, 2);
    CHECK(rc == 0, "fixture: checkpoint, tokenizer and token file %s", rc ? lina_last_error() : "");
    lina_model_free(m);
    lina_tokenizer_free(tk);

    /* the crafted config through every command that reads one */
    snprintf(path, sizeof path, "%s/crafted.json", root);
    put_text(path, bad_cfg[0].json);
    snprintf(args, sizeof args, "train --config %s --data %s --out %s/run --steps 1", path, tokf, root);
    expect_cli_fail("train --config crafted.json", args, "hidden_size");
    snprintf(path, sizeof path, "%s/config.json", ck);
    put_text(path, bad_cfg[0].json);
    snprintf(args, sizeof args, "generate --model %s --prompt the --max-tokens 2", ck);
    expect_cli_fail("generate on a crafted checkpoint", args, "hidden_size");
    snprintf(args, sizeof args, "eval --model %s --data %s", ck, tokf);
    expect_cli_fail("eval on a crafted checkpoint", args, "hidden_size");
    put_text(path, bad_cfg[3].json);
    expect_cli_fail("eval on a checkpoint with expand_k 1e10", args, "expand_k");

    test_shape_before_alloc(ck);
    snprintf(args, sizeof args, "eval --model %s --data %s", ck, tokf);
    expect_cli_fail("eval on a checkpoint whose vocab_size disagrees with its tensors", args, "[16777216, 65536]");

    snprintf(args, sizeof args, "rm -rf %s", root);
    if (system(args) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
