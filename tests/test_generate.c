/* test_generate.c -- `lina generate` and `lina eval` end to end on a small random model with a
 * freshly trained tokenizer: it streams the prompt and new text, the same seed
 * gives the same text, greedy decoding is deterministic, and bad inputs give
 * one error line and a non-zero exit. */
#include "harness.h"
#include "lina.h"

#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *lina_bin;
static char root[64];

/* run lina with args; stdout into out, stderr into err; returns the exit status */
static int run(const char *args, char *out, size_t outn, char *err, size_t errn)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s", lina_bin, args);
    return th_sh_capture(cmd, root, out, outn, err, errn);
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    snprintf(root, sizeof root, "/tmp/lina_gen_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    /* tokenizer trained on a little text */
    const char *text = "the lamb and the lion lay down; the lamb slept. and the lion said unto the lamb: "
                       "behold, the day is come. ";
    char big[8192] = {0};
    for (int i = 0; i < 40; i++) {
        strncat(big, text, sizeof big - strlen(big) - 1);
    }
    lina_tokenizer *tk = NULL;
    const char *special[1] = {"<|endoftext|>"};
    int rc = lina_tokenizer_train(big, strlen(big), 300, special, 1, &tk);
    char path[256];
    snprintf(path, sizeof path, "%s/tokenizer.json", root);
    rc = rc ? rc : lina_tokenizer_save(tk, path);
    int vocab = rc ? 0 : lina_tokenizer_vocab_size(tk);
    CHECK(rc == 0, "tokenizer trained and saved (%d tokens) %s", vocab, lina_last_error());
    lina_config c;
    lina_config_default(&c, LINA_MODEL_GLA);
    c.hidden_size = 32;
    c.num_hidden_layers = 2;
    c.num_heads = 2;
    c.vocab_size = vocab;
    c.intermediate_size = 64;
    lina_model *m = NULL;
    rc = rc ? rc : lina_model_create(&c, 7, &m);
    rc = rc ? rc : lina_model_save(m, root);
    CHECK(rc == 0, "model created and saved (%s)", lina_last_error());
    lina_model_free(m);

    static char out1[65536], out2[65536], err[4096];
    char args[1024];
    snprintf(args, sizeof args, "generate --model %s --prompt 'the lamb' --max-tokens 30 --seed 3", root);
    int st1 = run(args, out1, sizeof out1, err, sizeof err);
    CHECK(st1 == 0 && strncmp(out1, "the lamb", 8) == 0 && strlen(out1) > 9 && strstr(err, "tokens/s"),
          "generate streams the prompt and new text, reports tokens/s (exit %d, %zu bytes)", st1, strlen(out1));
    int st2 = run(args, out2, sizeof out2, err, sizeof err);
    CHECK(st2 == 0 && strcmp(out1, out2) == 0, "the same seed gives the same text");
    snprintf(args, sizeof args, "generate --model %s --prompt 'the lamb' --max-tokens 30 --seed 4 --temperature 0", root);
    int st3 = run(args, out1, sizeof out1, err, sizeof err);
    snprintf(args, sizeof args, "generate --model %s --prompt 'the lamb' --max-tokens 30 --seed 9 --temperature 0", root);
    int st4 = run(args, out2, sizeof out2, err, sizeof err);
    CHECK(st3 == 0 && st4 == 0 && strcmp(out1, out2) == 0, "greedy decoding does not depend on the seed");

    struct { const char *what, *args, *needle; } bad[] = {
        {"missing model directory", "generate --model /nonexistent_lina_model --prompt hi", "lina: generate:"},
        {"missing prompt", "generate --model ROOT", "--prompt"},
        {"top-p out of range", "generate --model ROOT --prompt hi --top-p 2", "--top-p"},
        {"negative temperature", "generate --model ROOT --prompt hi --temperature -1", "--temperature"},
        {"unknown option", "generate --model ROOT --prompt hi --beam 4", "unknown option"},
        {"missing tokenizer", "generate --model ROOT --prompt hi --tokenizer /nonexistent_tok.json", "nonexistent_tok.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char a[1024];
        const char *p = strstr(bad[i].args, "ROOT");
        if (p) {
            snprintf(a, sizeof a, "%.*s%s%s", (int)(p - bad[i].args), bad[i].args, root, p + 4);
        } else {
            snprintf(a, sizeof a, "%s", bad[i].args);
        }
        int st = run(a, out1, sizeof out1, err, sizeof err);
        const char *nl = strchr(err, '\n');
        CHECK(st != 0 && st < 128 && strncmp(err, "lina: ", 6) == 0 && nl && nl[1] == '\0' &&
                  strstr(err, bad[i].needle),
              "generate rejects %s (exit %d: %.*s)", bad[i].what, st, (int)strcspn(err, "\n"), err);
    }
    /* lina eval on a token file of random tokens: loss near ln(vocab) for a random model */
    {
        uint32_t toks[2001];
        unsigned long long r = 12345;
        for (int i = 0; i < 2001; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            toks[i] = (uint32_t)((r >> 33) % (unsigned)vocab);
        }
        char tp[256];
        snprintf(tp, sizeof tp, "%s/rand.tok", root);
        int wrc = lina_tok_write(tp, toks, 2001, (uint32_t)vocab, 0);
        snprintf(args, sizeof args, "eval --model %s --data %s --seq-len 50 --batch 3 --json", root, tp);
        int st = run(args, out1, sizeof out1, err, sizeof err);
        const char *lp = strstr(out1, "\"loss\":");
        double loss = lp ? atof(lp + 7) : -1.0;
        CHECK(wrc == 0 && st == 0 && strstr(out1, "\"tokens\":2000") && fabs(loss - log((double)vocab)) < 1.0,
              "eval: 40 windows of 50 tokens, loss %.3f near ln(vocab) = %.3f", loss, log((double)vocab));
        snprintf(tp, sizeof tp, "%s/big.tok", root);
        toks[5] = (uint32_t)vocab + 10;
        wrc = lina_tok_write(tp, toks, 2001, (uint32_t)vocab + 100, 0);
        snprintf(args, sizeof args, "eval --model %s --data %s", root, tp);
        st = run(args, out1, sizeof out1, err, sizeof err);
        CHECK(wrc == 0 && st != 0 && strncmp(err, "lina: eval:", 11) == 0 && strstr(err, "vocab"),
              "eval rejects a token file with a larger vocabulary (%.*s)", (int)strcspn(err, "\n"), err);
        snprintf(args, sizeof args, "eval --model %s --data %s/none.tok", root, root);
        st = run(args, out1, sizeof out1, err, sizeof err);
        CHECK(st != 0 && strncmp(err, "lina: eval:", 11) == 0, "eval rejects a missing token file");
    }
    lina_tokenizer_free(tk);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
