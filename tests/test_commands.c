/* test_commands.c -- the lina command line end to end: every command's --help (defaults,
 * exit 0) and the shared option parser; generate from a run directory, from BOS, with
 * llama.cpp-style short flags and interactively (state reset or kept); eval on raw text
 * with bits per byte; train's --eval-every without --val; lina info on a run directory and
 * on a hybrid checkpoint; eval of a checkpoint with NaN weights fails; --threads beyond
 * the machine is capped. */
#include "harness.h"
#include "lina.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *lina_bin;
static char root[64];
static char out[65536], out2[65536], err[8192];

/* the shell command cmd; stdout into o, stderr into err; returns the exit status */
static int run(const char *cmd, char *o, size_t on)
{
    return th_sh_capture(cmd, root, o, on, err, sizeof err);
}

static int lina(const char *fmt, const char *a, const char *b, const char *c, char *o)
{
    char args[2048], full[2400];
    snprintf(args, sizeof args, fmt, a, b, c);
    snprintf(full, sizeof full, "%s %s", lina_bin, args);
    return run(full, o, sizeof out);
}

static int one_line(const char *e)
{
    const char *nl = strchr(e, '\n');
    return strncmp(e, "lina: ", 6) == 0 && nl && nl[1] == '\0';
}

static void test_help(void)
{
    const char *cmds[] = {"op", "ops", "bench", "train", "generate", "eval", "info", "tokenizer train",
                          "tokenizer encode", "tokenizer decode", "data pack", "data info", "plot", "task",
                          "task s3", "task icl-regression", "paper"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        int st = lina("%s --help", cmds[i], NULL, NULL, out);
        int opts = strncmp(cmds[i], "ops", 4) && strncmp(cmds[i], "data info", 10) && strncmp(cmds[i], "info", 5);
        char want[64];
        snprintf(want, sizeof want, "usage: lina %s", strcmp(cmds[i], "task s3") ? cmds[i] : "task NAME");
        CHECK(st == 0 && strstr(out, want) && strstr(out, "--help") && (!opts || strstr(out, "(default: ")) &&
                  err[0] == '\0',
              "lina %s --help: exit %d, usage, options with defaults", cmds[i], st);
    }
    lina("task s3 --help", NULL, NULL, NULL, out);
    CHECK(strstr(out, "(default: gated_deltaproduct)"), "task s3 --help shows s3's defaults");
    /* defaults are the values used: generate's --max-tokens 100, eval's --seq-len 256 */
    lina("generate --help", NULL, NULL, NULL, out);
    CHECK(strstr(out, "--max-tokens N") && strstr(out, "(default: 100)") && strstr(out, "-t, --threads"),
          "generate --help shows --max-tokens default 100 and -t for threads");
    lina("eval --help", NULL, NULL, NULL, out);
    CHECK(strstr(out, "--seq-len T") && strstr(out, "(default: 256)"), "eval --help shows --seq-len default 256");
    /* --help after other options still shows the defaults, not the values given */
    lina("bench gla --T 77 --help", NULL, NULL, NULL, out);
    CHECK(strstr(out, "--T N") && strstr(out, "(default: 4096)") && !strstr(out, "77"),
          "bench --T 77 --help shows the default 4096");
    /* the parser: one line and exit 2 on an unknown option, a missing value, a bad number, a
     * value given to a flag; --name=value works */
    const char *bad[][2] = {
        {"generate --model x --prompt hi --beam 4", "unknown option '--beam'"},
        {"eval --model x --data y --seq-len", "needs a value"},
        {"eval --model x --data y --seq-len 0", "--seq-len"},
        {"eval --model x --data y --json=1", "takes no value"},
        {"train --config x --bogus", "unknown option '--bogus'"},
        {"paper --threads 0", "--threads"},
        {"paper --out /nonexistent-dir/x --lrs 0.001,zero", "--lrs"},
        {"paper --out /nonexistent-dir/x --widths 64,48", "--widths"},
        {"paper --out /nonexistent-dir/x --mixers gla,nosuch", "'nosuch' is not a model of the MQAR table"},
        {"paper --out /nonexistent-dir/x --only mqar,s3", "unknown experiment 's3'"},
        {"plot --log a --out b extra", "unexpected argument 'extra'"},
        {"task parity --mixer nope", "--mixer"},
        {"data pack --format u8 --vocab 3 --in a --out b", "format"},
        {"tokenizer train --vocab", "needs a value"},
        {"bench --model x.json --B 2", "--B"},
        {"info", "DIR"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st = lina("%s", bad[i][0], NULL, NULL, out);
        CHECK(st == 2 && one_line(err) && strstr(err, bad[i][1]), "lina %s -> exit %d: %.*s", bad[i][0], st,
              (int)strcspn(err, "\n"), err);
    }
}

/* a GLA model with a tokenizer, as a run directory RUN/checkpoint */
static int vocab;

static void make_model(const char *dir, const char *hybrid_json)
{
    const char *text = "the lamb and the lion lay down; the lamb slept. and the lion said unto the lamb: "
                       "behold, the day is come. ";
    char big[8192] = {0};
    for (int i = 0; i < 40; i++) {
        strncat(big, text, sizeof big - strlen(big) - 1);
    }
    lina_tokenizer *tk = NULL;
    const char *special[1] = {"<|endoftext|>"};
    char path[256];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int rc = lina_tokenizer_train(big, strlen(big), 300, special, 1, &tk);
    rc = rc ? rc : lina_tokenizer_save(tk, path);
    vocab = rc ? 0 : lina_tokenizer_vocab_size(tk);
    lina_tokenizer_free(tk);
    char cfgtext[1024];
    snprintf(cfgtext, sizeof cfgtext,
             "{\"model_type\": \"gla\", \"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_heads\": 2, "
             "\"vocab_size\": %d, \"intermediate_size\": 64%s}",
             vocab, hybrid_json ? hybrid_json : "");
    lina_config c;
    lina_model *m = NULL;
    rc = rc ? rc : lina_config_parse(cfgtext, strlen(cfgtext), "test config", &c);
    rc = rc ? rc : lina_model_create(&c, 7, &m);
    rc = rc ? rc : lina_model_save(m, dir);
    CHECK(rc == 0, "model and tokenizer saved in %s (%s)", dir, rc ? lina_last_error() : "ok");
    lina_model_free(m);
}

static void test_generate(const char *run_dir)
{
    /* --model RUN (its checkpoint/) gives the same text as --model RUN/checkpoint */
    int s1 = lina("generate --model %s --prompt 'the lamb' --max-tokens 12 --seed 3", run_dir, NULL, NULL, out);
    char ck[256];
    snprintf(ck, sizeof ck, "%s/checkpoint", run_dir);
    int s2 = lina("generate --model %s --prompt 'the lamb' --max-tokens 12 --seed 3", ck, NULL, NULL, out2);
    CHECK(s1 == 0 && s2 == 0 && !strcmp(out, out2) && !strncmp(out, "the lamb", 8),
          "generate --model RUN uses RUN/checkpoint (%d %d: %s)", s1, s2, err);
    /* short flags as llama.cpp users type them: -m -p -n -s -t, --temp */
    s1 = lina("generate -m %s -p 'the lamb' -n 12 -s 5 -t 1 --temp 0.7", run_dir, NULL, NULL, out);
    s2 = lina("generate --model %s --prompt 'the lamb' --max-tokens 12 --seed 5 --threads 1 --temperature 0.7",
              run_dir, NULL, NULL, out2);
    CHECK(s1 == 0 && s2 == 0 && !strcmp(out, out2), "short flags -m -p -n -s -t --temp = the long ones");
    /* --prompt "": unconditional, from BOS */
    s1 = lina("generate -m %s -p '' -n 8 --temp 0", run_dir, NULL, NULL, out);
    CHECK(s1 == 0 && strstr(err, "prompt: 1 tokens") && strlen(out) >= 1,
          "generate --prompt '' starts from BOS (exit %d, %s)", s1, err);
    /* --interactive: each stdin line is a prompt; without --keep-state each starts afresh */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "printf 'the lamb\\nthe lion\\n' | %s generate -m %s -i -n 6 --temp 0", lina_bin,
             run_dir);
    s1 = run(cmd, out, sizeof out);
    s2 = lina("generate -m %s -p 'the lion' -n 6 --temp 0", run_dir, NULL, NULL, out2);
    const char *line2 = strchr(out, '\n');
    CHECK(s1 == 0 && s2 == 0 && line2 && !strcmp(line2 + 1, out2 + strlen("the lion")),
          "interactive, state reset per line: the second line's text = a fresh run on it");
    /* --keep-state: an empty line continues; 6 + 6 tokens = one run of 12 */
    snprintf(cmd, sizeof cmd, "printf 'the lamb\\n\\n' | %s generate -m %s -i --keep-state -n 6 --temp 0", lina_bin,
             run_dir);
    s1 = run(cmd, out, sizeof out);
    s2 = lina("generate -m %s -p 'the lamb' -n 12 --temp 0", run_dir, NULL, NULL, out2);
    char joined[65536];
    size_t l1 = strcspn(out, "\n");
    snprintf(joined, sizeof joined, "the lamb%.*s%s", (int)l1, out, out + (out[l1] ? l1 + 1 : l1));
    CHECK(s1 == 0 && s2 == 0 && !strcmp(joined, out2), "interactive --keep-state: turns continue one another "
          "(\"%s\" vs \"%s\")", joined, out2);
    s1 = lina("generate -m %s -p hi --keep-state", run_dir, NULL, NULL, out);
    CHECK(s1 == 2 && one_line(err), "--keep-state without --interactive -> 2");
    s1 = lina("generate -m %s", run_dir, NULL, NULL, out);
    CHECK(s1 == 2 && one_line(err) && strstr(err, "--prompt"), "no --prompt and no --interactive -> 2");
}

static void test_eval(const char *run_dir)
{
    char tf[256], tokf[256];
    snprintf(tf, sizeof tf, "%s/eval.txt", root);
    FILE *f = fopen(tf, "w");
    for (int i = 0; i < 30; i++) {
        fprintf(f, "and the lion said unto the lamb: the day is come, %d. ", i);
    }
    fclose(f);
    /* the same tokens as a token file: the same loss; bits per byte from the decoded bytes */
    char tkp[400];
    snprintf(tkp, sizeof tkp, "%s/checkpoint/tokenizer.json", run_dir);
    lina_tokenizer *tk = NULL;
    char *text = NULL;
    size_t len = 0, n = 0;
    int32_t *ids = NULL;
    f = fopen(tf, "rb");
    text = malloc(1 << 16);
    len = fread(text, 1, 1 << 16, f);
    fclose(f);
    int rc = lina_tokenizer_load(tkp, &tk);
    rc = rc ? rc : lina_tokenizer_encode(tk, text, len, &ids, &n);
    snprintf(tokf, sizeof tokf, "%s/eval.tok", root);
    rc = rc ? rc : lina_tok_write(tokf, (const uint32_t *)ids, n, (uint32_t)vocab, 0);
    const int T = 20;
    size_t nwin = (n - 1) / T;
    char *dec = NULL;
    size_t dl = 0;
    rc = rc ? rc : lina_tokenizer_decode(tk, ids + 1, nwin * T, &dec, &dl);
    CHECK(rc == 0 && nwin > 3, "eval text: %zu tokens, %zu windows of %d", n, nwin, T);
    int s1 = lina("eval --model %s --text %s --seq-len 20 --json", run_dir, tf, NULL, out);
    int s2 = lina("eval --model %s --data %s --seq-len 20 --json", run_dir, tokf, NULL, out2);
    const char *a = strstr(out, "\"loss\":"), *b = strstr(out2, "\"loss\":");
    const char *bp = strstr(out, "\"bits_per_byte\":"), *by = strstr(out, "\"bytes\":");
    const char *tk_ = strstr(out, "\"tokens\":");
    double la = a ? atof(a + 7) : -1, lb = b ? atof(b + 7) : -2, bpb = bp ? atof(bp + 16) : -1;
    double bytes = by ? atof(by + 8) : -1, ntok = tk_ ? atof(tk_ + 9) : -1;
    CHECK(s1 == 0 && s2 == 0 && la > 0 && fabs(la - lb) < 1e-6, "eval --text = eval --data of its tokens "
          "(loss %.6f vs %.6f)", la, lb);
    CHECK(bytes == (double)dl && fabs(bpb - la * ntok / log(2.0) / bytes) < 1e-4 * bpb,
          "bits per byte = summed loss / ln 2 / bytes of the scored tokens (%.4f, %.0f bytes, want %zu)", bpb, bytes,
          dl);
    s1 = lina("eval --model %s --text %s --seq-len 20", run_dir, tf, NULL, out);
    CHECK(s1 == 0 && strstr(out, "perplexity") && strstr(out, "bits per byte"), "eval text output: %s", out);
    s1 = lina("eval --model %s --text %s --data %s", run_dir, tf, tokf, out);
    CHECK(s1 == 2 && one_line(err), "eval with both --text and --data -> 2");
    s1 = lina("eval --model %s --text %s/none.txt", run_dir, root, NULL, out);
    CHECK(s1 == 1 && one_line(err) && strstr(err, "none.txt"), "eval --text of a missing file -> 1: %s", err);
    /* a checkpoint whose weights hold NaN: eval fails with one line, not "loss nan" and 0 */
    char nck[300], cmd[1000];
    snprintf(nck, sizeof nck, "%s/nan_ck", root);
    snprintf(cmd, sizeof cmd, "cp -r %s/checkpoint %s", run_dir, nck);
    int cs = run(cmd, out, sizeof out);
    snprintf(cmd, sizeof cmd, "%s/model.safetensors", nck);
    f = cs == 0 ? fopen(cmd, "r+b") : NULL;
    unsigned char h8[8] = {0};
    long nan_written = 0;
    if (f && fread(h8, 1, 8, f) == 8 && fseek(f, 0, SEEK_END) == 0) {
        long hl = 0, size = ftell(f);
        for (int i = 7; i >= 0; i--) {
            hl = hl * 256 + h8[i];
        }
        const float qnan = NAN;
        for (long off = 8 + hl; off + 4 <= size; off += 4) { /* every weight NaN */
            if (fseek(f, off, SEEK_SET) == 0 && fwrite(&qnan, 4, 1, f) == 1) {
                nan_written++;
            }
        }
    }
    if (f) {
        fclose(f);
    }
    s1 = lina("eval --model %s --text %s --seq-len 20", nck, tf, NULL, out);
    CHECK(nan_written > 100 && s1 == 1 && one_line(err) && !strstr(out, "perplexity"),
          "eval of a checkpoint with NaN weights -> 1: %s", err);
    free(dec);
    free(ids);
    free(text);
    lina_tokenizer_free(tk);
}

/* --threads far beyond the machine is capped with a note, not handed to OpenBLAS */
static void test_threads_cap(void)
{
    int st = lina("bench gla --T 16 --B 1 --H 1 --K 8 --V 8 --repeat 1 --threads %s", "1024", NULL, NULL, out);
    CHECK(st == 0 && strstr(err, "note: --threads 1024") && strstr(err, "cores"),
          "--threads 1024 is capped at 4 x the cores with a note: %s", err);
}

static void test_train_and_info(const char *run_dir)
{
    char cfg[400], tok[256], run2[256];
    snprintf(cfg, sizeof cfg, "%s/checkpoint/config.json", run_dir);
    snprintf(tok, sizeof tok, "%s/eval.tok", root);
    snprintf(run2, sizeof run2, "%s/run2", root);
    int st = lina("train --config %s --data %s --out %s --eval-every 2", cfg, tok, run2, out);
    CHECK(st == 2 && one_line(err) && strstr(err, "--val"), "train --eval-every without --val -> 2: %s", err);
    char args[1400];
    snprintf(args, sizeof args, "%s train --config %s --data %s --out %s --tokenizer %s/checkpoint/tokenizer.json "
             "--steps 3 --batch 1 --seq-len 8 -t 1 --quiet", lina_bin, cfg, tok, run2, run_dir);
    st = run(args, out, sizeof out);
    CHECK(st == 0, "tiny training run (%s)", err);
    st = lina("info %s", run2, NULL, NULL, out);
    /* the parts add up to the parameter count */
    const char *p = strstr(out, "parameters: ");
    long long total = p ? atoll(p + 12) : -1, sum = 0;
    for (const char *q = p ? strchr(p, '\n') : NULL; q && q[1] == ' ' && q[2] == ' '; q = strchr(q + 1, '\n')) {
        const char *num = q + 3 + strcspn(q + 3, "0123456789\n");
        sum += *num != '\n' ? atoll(num) : 0;
    }
    CHECK(st == 0 && total > 0 && sum == total && strstr(out, "embeddings") && strstr(out, "  gla ") &&
              strstr(out, "MLP") && strstr(out, "norms"),
          "info: parameters per part add up (%lld of %lld)", sum, total);
    CHECK(strstr(out, "tokenizer: vocab 300") && strstr(out, "<|endoftext|> = "), "info: tokenizer and specials");
    CHECK(strstr(out, "step 3 of 3") && strstr(out, "last losses:"), "info: training state from trainer.json");
    CHECK(strstr(out, "layer 0") && strstr(out, "+ 0 B per token"), "info: GLA state constant in the context");
    /* a hybrid: the attention layer's KV cache is 2 x heads x head dim x 4 bytes per token */
    char hy[256];
    snprintf(hy, sizeof hy, "%s/hybrid", root);
    make_model(hy, ", \"attn\": {\"layers\": [1], \"num_heads\": 2}");
    st = lina("info %s", hy, NULL, NULL, out);
    const char *l1 = strstr(out, "layer 1");
    CHECK(st == 0 && l1 && strstr(l1, "attention") && strstr(l1, "+ 256 B per token") &&
              strstr(out, "training state: none"),
          "info: hybrid checkpoint, attention layer 256 B per token (%.*s)", (int)strcspn(l1 ? l1 : out, "\n"),
          l1 ? l1 : out);
    st = lina("info %s/nope", root, NULL, NULL, out);
    CHECK(st == 1 && one_line(err), "info on a missing directory -> 1");
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    if (access(lina_bin, X_OK) != 0) {
        printf("FAIL lina binary not found at %s\n", lina_bin);
        return 1;
    }
    snprintf(root, sizeof root, "/tmp/lina_cmd_XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_help();
    char run_dir[256], ck[300];
    snprintf(run_dir, sizeof run_dir, "%s/run", root);
    mkdir(run_dir, 0755);
    snprintf(ck, sizeof ck, "%s/checkpoint", run_dir);
    make_model(ck, NULL);
    test_generate(run_dir);
    test_eval(run_dir);
    test_train_and_info(run_dir);
    test_threads_cap();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        printf("# could not remove %s\n", root);
    }
    return th_exit();
}
