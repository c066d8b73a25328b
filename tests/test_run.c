/* test_run.c -- `lina train` runs end to end through the command line: the
 * own-text recipe (tokenizer train, encode, train, generate) on a small non-KJV
 * text; the special tokens written into config.json; the validation loss equal
 * to `lina eval`'s; Ctrl-C (SIGINT) checkpoints and stops, --resume continues
 * with the checkpoint's options and reproduces an uninterrupted run bit for bit;
 * memory does not scale with --steps; tokenizer and vocabulary checks at start;
 * a run directory without a checkpoint says what to do; generate stops at the
 * config's eos_token_id when the tokenizer has no <|endoftext|>; the prompt is
 * prefilled in pieces (same logits, memory flat in the prompt length). */
#include "harness.h"
#include "lina.h"

#include <math.h>
#include <stdarg.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Built with AddressSanitizer (make asan): its shadow memory needs terabytes of address
 * space and its quarantine keeps freed blocks resident, so the address-space limit and
 * the resident-memory bounds below are not applied there (the runs themselves are). */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static const char *lina_bin;
static char root[64];
static char out[65536], err[8192];
static int eot = -1;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char args[3000], full[3200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "%s %s", lina_bin, args);
    return th_sh_capture(full, root, out, sizeof out, err, sizeof err);
}

static int one_line(const char *e)
{
    const char *nl = strchr(e, '\n');
    return strncmp(e, "lina: ", 6) == 0 && nl && nl[1] == '\0';
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t got = fread(b, 1, (size_t)n, f);
    fclose(f);
    b[got] = '\0';
    if (len) {
        *len = got;
    }
    return b;
}

static int count_lines(const char *path)
{
    char *t = slurp(path, NULL);
    int n = 0;
    for (char *p = t; p && *p; p++) {
        n += *p == '\n';
    }
    free(t);
    return n;
}

/* "step": N of DIR/checkpoint/trainer.json, -1 if none */
static long long ckpt_step(const char *dir)
{
    char p[512];
    snprintf(p, sizeof p, "%s/checkpoint/trainer.json", dir);
    char *t = slurp(p, NULL);
    const char *s = t ? strstr(t, "\"step\":") : NULL;
    long long v = s ? atoll(s + 7) : -1;
    free(t);
    return v;
}

static int same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && na > 0 && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static void write_config(const char *path, int vocab)
{
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"model_type\": \"gla\", \"hidden_size\": 32, \"num_hidden_layers\": 2, \"num_heads\": 2, "
               "\"vocab_size\": %d, \"intermediate_size\": 64}\n", vocab);
    fclose(f);
}

/* Starts `lina ARGS` with its address space limited to 2 GiB, stderr into
 * ROOT/NAME.err; waits until LOG has `lines` lines (or the process ended),
 * then sends SIGINT and waits. Returns the exit status (128 + signal if
 * killed); *maxrss_kb: its peak resident memory. */
static int train_interrupted(const char *args, const char *name, const char *log, int lines, long *maxrss_kb,
                             int *signalled)
{
    char cmd[2048], ef[256];
    snprintf(cmd, sizeof cmd, "exec %s %s", lina_bin, args);
    snprintf(ef, sizeof ef, "%s/%s.err", root, name);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {(rlim_t)2 << 30, (rlim_t)2 << 30};
        if (!UNDER_ASAN) {
            setrlimit(RLIMIT_AS, &rl);
        }
        if (!freopen("/dev/null", "w", stdout) || !freopen(ef, "w", stderr)) {
            _exit(127);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    *signalled = 0;
    for (int i = 0; i < 120000; i++) { /* at most 2 minutes */
        pid_t w = wait4(pid, &status, WNOHANG, &ru);
        if (w == pid) {
            goto ended;
        }
        if (count_lines(log) >= lines) {
            break;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGINT);
    *signalled = 1;
    wait4(pid, &status, 0, &ru);
ended:
    *maxrss_kb = ru.ru_maxrss;
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* tokenizer train, encode, train, generate on tests/data/orchard.txt */
static void test_recipe(void)
{
    const char *text = "tests/data/orchard.txt";
    int st = sh("tokenizer train --in %s --vocab 320 --out %s/tok/tokenizer.json", text, root);
    st = st ? st : sh("tokenizer encode --tokenizer %s/tok/tokenizer.json --in %s --out %s/tok/orchard.tok", root,
                      text, root);
    CHECK(st == 0, "recipe: tokenizer train + encode of %s (%s)", text, err);
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", root);
    write_config(cfg, 320);
    st = sh("train --config %s --data %s/tok/orchard.tok --val %s/tok/orchard.tok --out %s/recipe --steps 30 "
            "--batch 4 --seq-len 32 --lr 3e-3 --eval-every 10 -t 1",
            cfg, root, root, root);
    CHECK(st == 0 && strstr(err, "validation loss: the whole of") && strstr(err, "windows of 32 tokens") &&
              !strstr(err, "no tokenizer"),
          "recipe: train on the encoded text; the log says the val loss covers the whole split (%s)", err);
    st = sh("generate -m %s/recipe -p \"The gardener\" -n 30 -t 1 --seed 3", root);
    CHECK(st == 0 && !strncmp(out, "The gardener", 12) && strlen(out) > 14, "recipe: generate from the run: %.80s",
          out);

    /* the special tokens: the tokenizer's <|endoftext|>, not FLA's defaults 1 / 2 */
    lina_tokenizer *tk = NULL;
    char p[256];
    snprintf(p, sizeof p, "%s/recipe/checkpoint/tokenizer.json", root);
    if (lina_tokenizer_load(p, &tk) == LINA_OK) {
        eot = lina_tokenizer_token_id(tk, "<|endoftext|>");
    }
    lina_tokenizer_free(tk);
    snprintf(p, sizeof p, "%s/recipe/checkpoint/config.json", root);
    lina_config c;
    int rc = lina_config_read(p, &c);
    CHECK(rc == 0 && eot > 2 && c.bos_token_id == eot && c.eos_token_id == eot,
          "config.json: bos/eos_token_id = the tokenizer's <|endoftext|> %d (have %d, %d)", eot, c.bos_token_id,
          c.eos_token_id);

    /* the last logged validation loss is lina eval's on the same split */
    snprintf(p, sizeof p, "%s/recipe/log.jsonl", root);
    char *log = slurp(p, NULL);
    const char *v = log ? strstr(log, "{\"step\":30,") : NULL;
    v = v ? strstr(v, "\"val_loss\":") : NULL;
    double logged = v ? atof(v + 11) : NAN;
    free(log);
    st = sh("eval -m %s/recipe --data %s/tok/orchard.tok --seq-len 32 --json -t 1", root, root);
    const char *l = strstr(out, "\"loss\":");
    double ev = l ? atof(l + 7) : NAN;
    CHECK(st == 0 && fabs(logged - ev) < 2e-6, "val loss at the last step %.7f = lina eval's %.7f", logged, ev);
}

static void test_tokenizer_checks(void)
{
    char cfg[256];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", root);
    /* a token file without a tokenizer beside it: a note at start, and generate needs --tokenizer */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/bare && cp %s/tok/orchard.tok %s/bare/", root, root, root);
    int st = system(cmd);
    st = sh("train --config %s --data %s/bare/orchard.tok --out %s/bare/run --steps 2 --batch 2 --seq-len 16 -t 1 "
            "--quiet",
            cfg, root, root);
    CHECK(st == 0 && strstr(err, "no tokenizer") && strstr(err, "--tokenizer"),
          "train without a tokenizer: a note at start naming --tokenizer (%s)", err);
    st = sh("generate -m %s/bare/run -p \"The\" -n 2", root);
    CHECK(st == 1 && one_line(err) && strstr(err, "tokenizer.json"), "generate then fails in one line: %s", err);
    st = sh("generate -m %s/bare/run -p \"The\" -n 2 --tokenizer %s/tok/tokenizer.json -t 1", root, root);
    CHECK(st == 0 && !strncmp(out, "The", 3), "generate with --tokenizer works");

    /* ids beyond the config's vocabulary: an error at start (with and without a tokenizer) */
    char small[256];
    snprintf(small, sizeof small, "%s/small.json", root);
    write_config(small, 300);
    st = sh("train --config %s --data %s/bare/orchard.tok --out %s/small1 --steps 2 --quiet", small, root, root);
    const char *last = strstr(err, "lina: train: /");
    CHECK(st == 1 && last && one_line(last) && strstr(last, "320") && strstr(last, "300"),
          "token file vocab 320 > config vocab 300 -> error at start: %s", err);
    st = sh("train --config %s --data %s/tok/orchard.tok --out %s/small2 --steps 2 --quiet", small, root, root);
    CHECK(st == 1 && one_line(err) && strstr(err, "tokenizer") && strstr(err, "300"),
          "tokenizer of 320 tokens, config vocab 300 -> error at start: %s", err);
    /* a vocabulary much larger than the tokenizer's: a warning */
    char big[256];
    snprintf(big, sizeof big, "%s/big.json", root);
    write_config(big, 4096);
    st = sh("train --config %s --data %s/tok/orchard.tok --out %s/big --steps 1 --batch 1 --seq-len 8 -t 1 --quiet",
            big, root, root);
    CHECK(st == 0 && strstr(err, "warning") && strstr(err, "4096") && strstr(err, "320"),
          "vocab 4096 for a 320-token tokenizer -> warning: %s", err);
}

static void test_interrupt_resume(void)
{
    char cfg[256], a[256], b[256], big[256], log[300];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", root);
    snprintf(a, sizeof a, "%s/a", root);
    snprintf(b, sizeof b, "%s/b", root);
    snprintf(big, sizeof big, "%s/huge", root);
    char common[1024];
    snprintf(common, sizeof common,
             "--config %s --data %s/tok/orchard.tok --val %s/tok/orchard.tok --steps 300 --batch 8 --seq-len 64 "
             "--lr 2e-3 --eval-every 100 --eval-batches 2 --seed 5 -t 1 --quiet",
             cfg, root, root);
    /* an uninterrupted run; resumed without options it stays finished (not 600 or 100 steps) */
    int st = sh("train %s --out %s", common, a);
    CHECK(st == 0 && ckpt_step(a) == 300, "uninterrupted 300-step run (%s)", err);
    st = sh("train --out %s --resume -t 1", a);
    CHECK(st == 0 && strstr(err, "already complete") && ckpt_step(a) == 300 && !strstr(err, "note:"),
          "a finished run resumed without options stays at 300 steps: %s", err);

    /* Ctrl-C: a checkpoint at the step reached, a message, exit 130 */
    char args[2048];
    snprintf(args, sizeof args, "train %s --out %s", common, b);
    snprintf(log, sizeof log, "%s/log.jsonl", b);
    long rss = 0;
    int sig = 0;
    st = train_interrupted(args, "b", log, 3, &rss, &sig);
    char ef[300];
    snprintf(ef, sizeof ef, "%s/b.err", root);
    char *e = slurp(ef, NULL);
    long long at = ckpt_step(b);
    CHECK(sig && st == 130 && at >= 3 && at < 300 && e && strstr(e, "stopped at step") && strstr(e, "--resume"),
          "SIGINT: exit %d, checkpoint at step %lld, message: %s", st, at, e ? e : "");
    free(e);
    CHECK(count_lines(log) == at, "log.jsonl has the %lld steps done", at);
    /* --resume with no options continues with the checkpoint's and matches the uninterrupted run */
    st = sh("train --out %s --resume -t 1 --quiet", b);
    char ma[300], mb[300];
    snprintf(ma, sizeof ma, "%s/checkpoint/model.safetensors", a);
    snprintf(mb, sizeof mb, "%s/checkpoint/model.safetensors", b);
    CHECK(st == 0 && ckpt_step(b) == 300 && !strstr(err, "note:") && same_file(ma, mb),
          "resume without options: 300 steps, bit-identical to the uninterrupted run (%s)", err);
    CHECK(count_lines(log) == 300, "the resumed log has each of the 300 steps once");
    /* an override is named in a note */
    st = sh("train --out %s --resume --steps 305 --lr 1e-3 -t 1 --quiet", b);
    CHECK(st == 0 && ckpt_step(b) == 305 && strstr(err, "note:") && strstr(err, "--steps 305 (was 300)") &&
              strstr(err, "--lr 0.001 (was 0.002)"),
          "overrides named in a note: %s", err);

    /* --steps 1e9 does not allocate per requested step (2 GiB address space, small RSS) */
    snprintf(args, sizeof args,
             "train --config %s --data %s/tok/orchard.tok --out %s --steps 1000000000 --batch 2 --seq-len 16 -t 1 "
             "--quiet",
             cfg, root, big);
    snprintf(log, sizeof log, "%s/log.jsonl", big);
    st = train_interrupted(args, "huge", log, 2, &rss, &sig);
    snprintf(ef, sizeof ef, "%s/huge.err", root);
    e = slurp(ef, NULL);
    CHECK(sig && st == 130 && ckpt_step(big) >= 2 && (UNDER_ASAN || rss < 300 * 1024),
          "--steps 1e9: runs in 2 GiB of address space, peak RSS %ld KiB, stops on SIGINT%s (%s)", rss,
          UNDER_ASAN ? " (AddressSanitizer build: no address-space limit, RSS not bounded)" : "", e ? e : "");
    free(e);

    /* a run directory without a checkpoint: --resume says to start again */
    snprintf(args, sizeof args, "mkdir -p %s/half && echo '{\"step\":1}' > %s/half/log.jsonl", root, root);
    st = system(args);
    st = sh("train --out %s/half --resume", root);
    CHECK(st == 2 && one_line(err) && strstr(err, "no complete checkpoint") && strstr(err, "without --resume"),
          "--resume of a run without a checkpoint says what to do: %s", err);
    st = sh("train --config %s --data %s/tok/orchard.tok --out %s/half --steps 2 --batch 2 --seq-len 16 -t 1 "
            "--quiet",
            cfg, root, root);
    snprintf(args, sizeof args, "%s/half", root);
    CHECK(st == 0 && ckpt_step(args) == 2, "starting it afresh works (%s)", err);
}

/* generate stops at the config's eos_token_id when the tokenizer has no <|endoftext|>:
 * with greedy sampling, making the first token it would pick the EOS stops it at once */
static void test_config_eos(void)
{
    char cfg[256], d[256], ck[300];
    snprintf(cfg, sizeof cfg, "%s/tiny.json", root);
    snprintf(d, sizeof d, "%s/nos", root);
    mkdir(d, 0755);
    int st = sh("tokenizer train --no-special --in tests/data/orchard.txt --vocab 300 --out %s/tokenizer.json", d);
    st = st ? st : sh("tokenizer encode --tokenizer %s/tokenizer.json --in tests/data/orchard.txt --out %s/o.tok", d,
                      d);
    st = st ? st : sh("train --config %s --data %s/o.tok --out %s/run --steps 5 --batch 2 --seq-len 16 -t 1 --quiet",
                      cfg, d, d);
    CHECK(st == 0, "a run with a tokenizer without <|endoftext|> (%s)", err);
    snprintf(ck, sizeof ck, "%s/run/checkpoint", d);
    /* the greedy first token after the prompt */
    lina_set_threads(1);
    lina_model *m = NULL;
    lina_model_state *ms = NULL;
    lina_tokenizer *tk = NULL;
    char tp[320];
    snprintf(tp, sizeof tp, "%s/tokenizer.json", ck);
    int32_t *ids = NULL;
    size_t n = 0;
    int first = -1;
    lina_ws ws;
    lina_ws_init(&ws);
    if (lina_model_load(ck, &m) == 0 && lina_tokenizer_load(tp, &tk) == 0 &&
        lina_tokenizer_encode(tk, "The gardener", 12, &ids, &n) == 0 && lina_model_state_create(m, 1, 64, &ms) == 0) {
        int V = lina_model_config(m)->vocab_size;
        float *lg = malloc(n * (size_t)V * sizeof(float));
        if (lina_model_decode(m, ms, ids, 1, (int)n, lg, &ws) == 0) {
            first = 0;
            for (int v = 1; v < V; v++) {
                first = lg[(n - 1) * (size_t)V + v] > lg[(n - 1) * (size_t)V + first] ? v : first;
            }
        }
        free(lg);
    }
    lina_ws_free(&ws);
    free(ids);
    lina_model_state_free(ms);
    lina_tokenizer_free(tk);
    lina_model_free(m);
    char cp[340];
    snprintf(cp, sizeof cp, "%s/config.json", ck);
    lina_config c;
    int rc = lina_config_read(cp, &c);
    c.eos_token_id = first;
    rc = rc ? rc : lina_config_write(cp, &c);
    st = sh("generate -m %s/run -p \"The gardener\" --temp 0 -n 5 -t 1", d);
    CHECK(rc == 0 && first >= 0 && st == 0 && strstr(err, "generated: 0 tokens"),
          "eos_token_id %d = the greedy next token: generate stops at once (%s)", first, err);
    c.eos_token_id = -1;
    rc = lina_config_write(cp, &c);
    st = sh("generate -m %s/run -p \"The gardener\" --temp 0 -n 5 -t 1", d);
    CHECK(rc == 0 && st == 0 && strstr(err, "generated: 5 tokens"), "without an EOS: 5 tokens (%s)", err);
}

/* Peak resident memory (KiB) of `lina generate` on the recipe's model with the
 * prompt read from the file `prompt` (--interactive, one line). */
static long generate_rss(const char *prompt)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "exec %s generate -m %s/recipe -i -n 2 -t 1 < %s", lina_bin, root, prompt);
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) {
            _exit(127);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    wait4(pid, &status, 0, &ru);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? ru.ru_maxrss : -1;
}

/* The prompt is prefilled in pieces: the logits equal a one-piece prefill's, and
 * generate's peak memory does not grow with a 100 KB prompt. */
static void test_pieced_prefill(void)
{
    char ck[256], tp[300];
    snprintf(ck, sizeof ck, "%s/recipe/checkpoint", root);
    snprintf(tp, sizeof tp, "%s/tokenizer.json", ck);
    lina_model *m = NULL;
    lina_tokenizer *tk = NULL;
    lina_model_state *s1 = NULL, *s2 = NULL;
    char *text = slurp("tests/data/orchard.txt", NULL);
    int32_t *ids = NULL;
    size_t n = 0;
    double maxd = -1.0, maxl = 0.0;
    lina_ws ws;
    lina_ws_init(&ws);
    if (text && lina_model_load(ck, &m) == 0 && lina_tokenizer_load(tp, &tk) == 0 &&
        lina_tokenizer_encode(tk, text, strlen(text), &ids, &n) == 0 && n > 2 * LINA_PREFILL_CHUNK + 10 &&
        lina_model_state_create(m, 1, (int)n, &s1) == 0 && lina_model_state_create(m, 1, (int)n, &s2) == 0) {
        n = 2 * LINA_PREFILL_CHUNK + 10;
        int V = lina_model_config(m)->vocab_size;
        float *a = malloc(n * (size_t)V * sizeof(float)), *b = malloc(n * (size_t)V * sizeof(float));
        int rc = lina_model_decode(m, s1, ids, 1, (int)n, a, &ws);
        for (size_t p = 0, t = 0; rc == 0 && p < n; p += t) {
            t = n - p < LINA_PREFILL_CHUNK ? n - p : LINA_PREFILL_CHUNK;
            rc = lina_model_decode(m, s2, ids + p, 1, (int)t, b + p * (size_t)V, &ws);
        }
        for (size_t i = 0; rc == 0 && i < n * (size_t)V; i++) {
            maxd = fmax(maxd, fabs((double)a[i] - b[i]));
            maxl = fmax(maxl, fabs((double)a[i]));
        }
        free(a);
        free(b);
    }
    lina_ws_free(&ws);
    CHECK(maxd >= 0 && maxd < 1e-5 * fmax(1.0, maxl),
          "prefill in pieces of %d = one piece: max |logit difference| %.2e (max |logit| %.1f)", LINA_PREFILL_CHUNK,
          maxd, maxl);
    lina_model_state_free(s1);
    lina_model_state_free(s2);
    lina_tokenizer_free(tk);
    lina_model_free(m);
    free(ids);
    /* a 100 KB prompt (one line, about 50k tokens) vs a short one */
    char sp[256], lp[256];
    snprintf(sp, sizeof sp, "%s/short_prompt.txt", root);
    snprintf(lp, sizeof lp, "%s/long_prompt.txt", root);
    FILE *f = fopen(sp, "w");
    fputs("The gardener\n", f);
    fclose(f);
    f = fopen(lp, "w");
    for (int r = 0; r < 20 && text; r++) {
        for (const char *c = text; *c; c++) {
            fputc(*c == '\n' ? ' ' : *c, f);
        }
    }
    fputc('\n', f);
    fclose(f);
    long rs = generate_rss(sp), rl = generate_rss(lp);
    CHECK(rs > 0 && rl > 0 && (UNDER_ASAN || rl - rs < 16 * 1024),
          "generate's peak memory: %ld KiB with a 100 KB prompt, %ld KiB with a short one%s", rl, rs,
          UNDER_ASAN ? " (AddressSanitizer build: its quarantine holds freed blocks, growth not bounded)" : "");
    free(text);
}

int main(void)
{
    lina_bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    snprintf(root, sizeof root, "/tmp/lina_run_XXXXXX");
    if (!mkdtemp(root)) {
        return 1;
    }
    char d[128];
    snprintf(d, sizeof d, "%s/tok", root);
    mkdir(d, 0755);
    test_recipe();
    test_tokenizer_checks();
    test_config_eos();
    test_pieced_prefill();
    test_interrupt_resume();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    if (system(cmd) != 0) {
        return 1;
    }
    return th_exit();
}
