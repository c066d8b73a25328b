/* test_tokenizer.c -- byte-level BPE training, encode/decode round trips,
 * tokenizer.json save/load, SentencePiece-style files, malformed files. */
#include "harness.h"
#include "lina.h"

#include <cjson/cJSON.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int roundtrip(lina_tokenizer *t, const char *s, size_t n, size_t *ntok)
{
    int32_t *ids = NULL;
    size_t m = 0;
    char *back = NULL;
    size_t bn = 0;
    int ok = lina_tokenizer_encode(t, s, n, &ids, &m) == 0 && lina_tokenizer_decode(t, ids, m, &back, &bn) == 0 &&
             bn == n && memcmp(back, s, n) == 0;
    if (ntok) {
        *ntok = m;
    }
    free(ids);
    free(back);
    return ok;
}

/* encode and compare with the expected ids */
static int encodes_to(lina_tokenizer *t, const char *s, const int32_t *want, size_t nwant)
{
    int32_t *ids = NULL;
    size_t m = 0;
    if (lina_tokenizer_encode(t, s, strlen(s), &ids, &m) != 0) {
        printf("    encode failed: %s\n", lina_last_error());
        return 0;
    }
    int ok = m == nwant && (m == 0 || memcmp(ids, want, m * sizeof *ids) == 0);
    if (!ok) {
        printf("    got:");
        for (size_t i = 0; i < m; i++) {
            printf(" %d", ids[i]);
        }
        printf("\n");
    }
    free(ids);
    return ok;
}

static int decodes_to(const lina_tokenizer *t, const int32_t *ids, size_t n, const char *want)
{
    char *s = NULL;
    size_t l = 0;
    if (lina_tokenizer_decode(t, ids, n, &s, &l) != 0) {
        return 0;
    }
    int ok = l == strlen(want) && memcmp(s, want, l) == 0;
    if (!ok) {
        printf("    got '%.*s'\n", (int)l, s);
    }
    free(s);
    return ok;
}

/* a few kB of English-like text with some non-ASCII and odd bytes */
static char *make_text(size_t n)
{
    static const char *const words[] = {"the", "and", "of", "to", "in", "that", "he", "shall", "unto", "for",
                                        "his", "lord", "they", "be", "is", "him", "not", "them", "with", "all",
                                        "thou", "thy", "was", "which", "my", "said", "God", "I", "it's", "don't",
                                        "café", "naïve", "2024", "3.14", "--", "\"quoted\"", "x\xff\xfe", "tab\tbed"};
    char *s = malloc(n + 64);
    size_t k = 0;
    while (k < n) {
        const char *w = words[(size_t)th_uniform(0, 38)];
        size_t l = strlen(w);
        memcpy(s + k, w, l);
        k += l;
        double u = th_uniform(0, 1);
        s[k++] = u < 0.8 ? ' ' : u < 0.9 ? ',' : u < 0.95 ? '\n' : '.';
        if (u > 0.98) {
            s[k++] = ' ';
            s[k++] = ' ';
        }
    }
    s[n] = 0;
    return s;
}

static void test_training(void)
{
    const char *txt = "ab ab ab ab ab cd cd";
    lina_tokenizer *t = NULL;
    const char *sp[] = {"<|endoftext|>"};
    int rc = lina_tokenizer_train(txt, strlen(txt), 300, sp, 1, &t);
    CHECK(rc == 0, "train on a tiny text (%s)", rc ? lina_last_error() : "");
    if (rc) {
        return;
    }
    /* pairs: (a,b) 5, (' ',ab) 4, then (' ',c) and (c,d) tie at 2 -> smaller pair first */
    const char *want[] = {"ab", "\xc4\xa0" "ab", "\xc4\xa0" "c", "\xc4\xa0" "cd"};
    int ok = lina_tokenizer_vocab_size(t) == 261;
    for (int i = 0; i < 4; i++) {
        const char *p = lina_tokenizer_piece(t, 256 + i);
        ok = ok && p && strcmp(p, want[i]) == 0;
    }
    CHECK(ok, "first merges ab, Gab, Gc, Gcd; training stops when no pair occurs twice (vocab %d)",
          lina_tokenizer_vocab_size(t));
    CHECK(lina_tokenizer_token_id(t, "<|endoftext|>") == 260, "special token id after the merges");
    CHECK(lina_tokenizer_token_id(t, "a") == 'a' && lina_tokenizer_token_id(t, "\xc4\xa0") == ' ',
          "byte tokens use GPT-2's byte-to-unicode strings");
    int32_t e1[] = {256, 257, 259, 260, 256, 'c'};
    CHECK(encodes_to(t, "ab ab cd<|endoftext|>abc", e1, 6), "encode with merges and a special token");
    CHECK(decodes_to(t, e1, 6, "ab ab cd<|endoftext|>abc"), "decode");
    lina_tokenizer_free(t);

    /* a larger text: every piece is a pre-token piece (no space inside a word) */
    char *big = make_text(200000);
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    rc = lina_tokenizer_train(big, strlen(big), 1000, sp, 1, &t);
    double dt = (double)clock() / CLOCKS_PER_SEC - t0;
    CHECK(rc == 0, "train 200 kB to vocab 1000 (%.2f s)", dt);
    if (!rc) {
        int bad = 0;
        for (int i = 256; i < lina_tokenizer_vocab_size(t) - 1; i++) {
            const char *p = lina_tokenizer_piece(t, i);
            const char *g = strstr(p + 1, "\xc4\xa0");
            /* a space may only start a piece, or the piece is all whitespace */
            if (g && strspn(p, "\xc4\xa0\xc4\x8a\xc4\x89") != strlen(p)) {
                bad++;
            }
        }
        CHECK(bad == 0, "no merge crosses a pre-token boundary (%d bad)", bad);
        size_t ntok = 0;
        CHECK(roundtrip(t, big, strlen(big), &ntok), "round trip of the training text (%zu bytes -> %zu tokens)",
              strlen(big), ntok);
        CHECK(ntok < strlen(big) / 2, "compression > 2 bytes/token");
        lina_tokenizer_free(t);
    }
    free(big);
    CHECK(lina_tokenizer_train("abc", 3, 100, NULL, 0, &t) == LINA_EINVAL && t == NULL, "vocab < 256 rejected");
    const char *dup[] = {"<x>", "<x>"};
    CHECK(lina_tokenizer_train("abc", 3, 300, dup, 2, &t) == LINA_EINVAL, "duplicate special token rejected");
    CHECK(lina_tokenizer_train("", 0, 300, NULL, 0, &t) == 0 && lina_tokenizer_vocab_size(t) == 256,
          "training on empty text gives the 256 byte tokens");
    lina_tokenizer_free(t);
}

/* Reference trainer: recount every pair after every merge (the obvious
 * algorithm), on text of lower-case words and single spaces, whose GPT-2
 * pre-tokens are "word" then " word" ... Returns the number of merges; piece
 * strings (ASCII, ' ' written as "\xc4\xa0") of the merged tokens in `out`. */
#define NAIVE_MAXW 4096
#define NAIVE_MAXL 24
static int naive_train(const char *txt, int nmerges, char out[][64])
{
    static int w[NAIVE_MAXW][NAIVE_MAXL], wl[NAIVE_MAXW], wf[NAIVE_MAXW];
    static char tok[600][NAIVE_MAXL + 1];
    int nw = 0, ntok = 256;
    for (int b = 0; b < 256; b++) {
        tok[b][0] = (char)b;
        tok[b][1] = 0;
    }
    const char *p = txt;
    while (*p) {
        const char *q = p + (*p == ' ');
        while (*q && *q != ' ') {
            q++;
        }
        int l = (int)(q - p), k;
        for (k = 0; k < nw; k++) {
            int same = wl[k] == l;
            for (int i = 0; same && i < l; i++) {
                same = w[k][i] == (unsigned char)p[i];
            }
            if (same) {
                break;
            }
        }
        if (k == nw) {
            if (nw == NAIVE_MAXW || l > NAIVE_MAXL) {
                return -1;
            }
            wl[nw] = l;
            wf[nw] = 0;
            for (int i = 0; i < l; i++) {
                w[nw][i] = (unsigned char)p[i];
            }
            nw++;
        }
        wf[k]++;
        p = q;
    }
    static long cnt[600][600];
    int m;
    for (m = 0; m < nmerges && ntok < 600; m++) {
        memset(cnt, 0, sizeof cnt);
        for (int k = 0; k < nw; k++) {
            for (int i = 0; i + 1 < wl[k]; i++) {
                cnt[w[k][i]][w[k][i + 1]] += wf[k];
            }
        }
        long best = 1;
        int ba = -1, bb = -1;
        for (int a = 0; a < ntok; a++) {
            for (int b = 0; b < ntok; b++) {
                if (cnt[a][b] > best) {
                    best = cnt[a][b];
                    ba = a;
                    bb = b;
                }
            }
        }
        if (ba < 0) {
            break;
        }
        size_t la = strlen(tok[ba]), lb = strlen(tok[bb]);
        if (la + lb > NAIVE_MAXL) {
            return -1;
        }
        memcpy(tok[ntok], tok[ba], la);
        memcpy(tok[ntok] + la, tok[bb], lb + 1);
        int t = ntok++;
        for (int k = 0; k < nw; k++) {
            int o = 0;
            for (int i = 0; i < wl[k]; i++) {
                if (i + 1 < wl[k] && w[k][i] == ba && w[k][i + 1] == bb) {
                    w[k][o++] = t;
                    i++;
                } else {
                    w[k][o++] = w[k][i];
                }
            }
            wl[k] = o;
        }
        int o = 0;
        for (const char *c = tok[t]; *c; c++) {
            if (*c == ' ') {
                out[m][o++] = (char)0xc4;
                out[m][o++] = (char)0xa0;
            } else {
                out[m][o++] = *c;
            }
        }
        out[m][o] = 0;
    }
    return m;
}

static void test_training_reference(void)
{
    /* words over a small alphabet, Zipf-like frequencies */
    char *txt = malloc(60001);
    char dict[300][10];
    for (int i = 0; i < 300; i++) {
        int l = 1 + (int)th_uniform(0, 8);
        for (int j = 0; j < l; j++) {
            dict[i][j] = "abcdeilnorst"[(int)th_uniform(0, 12)];
        }
        dict[i][l] = 0;
    }
    size_t k = 0;
    while (k < 59980) {
        int i = (int)(300.0 * th_uniform(0, 1) * th_uniform(0, 1));
        if (k) {
            txt[k++] = ' ';
        }
        size_t l = strlen(dict[i]);
        memcpy(txt + k, dict[i], l);
        k += l;
    }
    txt[k] = 0;
    static char ref[400][64];
    int nref = naive_train(txt, 300, ref);
    lina_tokenizer *t = NULL;
    int rc = lina_tokenizer_train(txt, k, 256 + 300, NULL, 0, &t);
    int ok = rc == 0 && nref > 100 && lina_tokenizer_vocab_size(t) == 256 + nref;
    int first_bad = -1;
    for (int m = 0; ok && m < nref; m++) {
        if (strcmp(lina_tokenizer_piece(t, 256 + m), ref[m]) != 0) {
            ok = 0;
            first_bad = m;
        }
    }
    CHECK(ok, "incremental trainer == recount-every-merge reference (%d merges; first mismatch %d)", nref, first_bad);
    lina_tokenizer_free(t);
    free(txt);
}

static void test_roundtrips(void)
{
    char *txt = make_text(100000);
    lina_tokenizer *t = NULL;
    const char *sp[] = {"<|endoftext|>", "<|pad|>"};
    int rc = lina_tokenizer_train(txt, strlen(txt), 800, sp, 2, &t);
    free(txt);
    CHECK(rc == 0, "train for round trips");
    if (rc) {
        return;
    }
    int ok = 1;
    size_t cap = 70000;
    char *buf = malloc(cap);
    for (int trial = 0; trial < 300 && ok; trial++) {
        size_t n = (size_t)th_uniform(0, trial < 250 ? 300 : 5000);
        int mode = trial % 5;
        for (size_t i = 0; i < n; i++) {
            if (mode == 0) {
                buf[i] = (char)(int)th_uniform(0, 256); /* any byte */
            } else if (mode == 1) {
                buf[i] = "\0\xff\x80\xc3\xe2 a\n"[(int)th_uniform(0, 9)]; /* invalid UTF-8, NUL */
            } else if (mode == 2) {
                buf[i] = " \t\n\r\v\f'sa0."[(int)th_uniform(0, 12)]; /* whitespace, contractions */
            } else {
                static const char alpha[] = "the lord said unto him <|endoftext|> <|pad caf\xc3\xa9 ";
                buf[i] = alpha[(int)th_uniform(0, sizeof alpha - 1)];
            }
        }
        ok = roundtrip(t, buf, n, NULL);
    }
    CHECK(ok, "decode(encode(x)) == x for 300 random byte strings (any bytes, NUL, invalid UTF-8)");
    /* long runs */
    const char fill[] = {'a', ' ', '\0', '\n', (char)0xff, '.'};
    ok = 1;
    for (int k = 0; k < 6; k++) {
        memset(buf, fill[k], cap);
        ok = ok && roundtrip(t, buf, cap, NULL);
    }
    CHECK(ok, "round trip of 70000-byte runs of one byte");
    size_t ntok = 0;
    CHECK(roundtrip(t, "", 0, &ntok) && ntok == 0, "empty text");
    CHECK(roundtrip(t, "<|endoftext|><|pad|><|endoftext|", 32, &ntok) && ntok >= 3, "special tokens round trip");
    int32_t bad = lina_tokenizer_vocab_size(t);
    char *s = NULL;
    size_t l = 0;
    CHECK(lina_tokenizer_decode(t, &bad, 1, &s, &l) == LINA_EINVAL && s == NULL, "decode rejects an out-of-range id");
    free(buf);
    lina_tokenizer_free(t);
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* the fields HF tokenizers needs, in a file lina wrote */
static int hf_shape_ok(const char *path, int vocab)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        return 0;
    }
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *r = cJSON_Parse(buf);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(r, "model");
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(r, "pre_tokenizer");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(r, "decoder");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(r, "added_tokens");
    const cJSON *a0 = cJSON_GetArrayItem(add, 0);
    const cJSON *mg = cJSON_GetObjectItemCaseSensitive(m, "merges");
    int ok = r && cJSON_IsString(cJSON_GetObjectItemCaseSensitive(r, "version")) &&
             !strcmp(jstr(m, "type"), "BPE") &&
             cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(m, "vocab")) == vocab &&
             cJSON_IsString(cJSON_GetArrayItem(mg, 0)) &&
             !strcmp(jstr(pre, "type"), "ByteLevel") &&
             !strcmp(jstr(dec, "type"), "ByteLevel") &&
             cJSON_GetArraySize(add) == 1 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a0, "special")) &&
             !strcmp(jstr(a0, "content"), "<|endoftext|>") &&
             cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(a0, "id")) &&
             cJSON_GetObjectItemCaseSensitive(a0, "id")->valueint == vocab - 1 &&
             cJSON_HasObjectItem(r, "normalizer") && cJSON_HasObjectItem(r, "post_processor");
    cJSON_Delete(r);
    return ok;
}

static void test_save_load(void)
{
    char *txt = make_text(50000);
    lina_tokenizer *t = NULL, *u = NULL;
    const char *sp[] = {"<|endoftext|>"};
    int rc = lina_tokenizer_train(txt, strlen(txt), 600, sp, 1, &t);
    char path[64];
    snprintf(path, sizeof path, "/tmp/lina_tok_test_%d.json", (int)getpid());
    rc = rc ? rc : lina_tokenizer_save(t, path);
    CHECK(rc == 0, "save tokenizer.json (%s)", rc ? lina_last_error() : "");
    CHECK(rc == 0 && hf_shape_ok(path, lina_tokenizer_vocab_size(t)),
          "tokenizer.json has HF's fields (BPE vocab/merges, ByteLevel pre-tokenizer/decoder, added_tokens)");
    rc = rc ? rc : lina_tokenizer_load(path, &u);
    CHECK(rc == 0, "load it back (%s)", rc ? lina_last_error() : "");
    if (!rc) {
        int ok = lina_tokenizer_vocab_size(t) == lina_tokenizer_vocab_size(u);
        for (int i = 0; ok && i < lina_tokenizer_vocab_size(t); i++) {
            ok = strcmp(lina_tokenizer_piece(t, i), lina_tokenizer_piece(u, i)) == 0;
        }
        CHECK(ok, "same vocabulary after load (%d)", lina_tokenizer_vocab_size(u));
        int32_t *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        size_t len = strlen(txt);
        ok = lina_tokenizer_encode(t, txt, len, &a, &na) == 0 && lina_tokenizer_encode(u, txt, len, &b, &nb) == 0 &&
             na == nb && memcmp(a, b, na * sizeof *a) == 0;
        CHECK(ok, "identical encodings before and after save/load (%zu tokens)", na);
        free(a);
        free(b);
        ok = 1;
        char buf[400];
        for (int trial = 0; trial < 50; trial++) {
            size_t n = (size_t)th_uniform(0, 400);
            for (size_t i = 0; i < n; i++) {
                buf[i] = (char)(int)th_uniform(0, 256);
            }
            ok = ok && roundtrip(u, buf, n, NULL);
        }
        CHECK(ok, "loaded tokenizer round-trips random bytes");
        char path2[80];
        snprintf(path2, sizeof path2, "%s.2", path);
        lina_tokenizer *w = NULL;
        ok = lina_tokenizer_save(u, path2) == 0 && lina_tokenizer_load(path2, &w) == 0 &&
             lina_tokenizer_vocab_size(w) == lina_tokenizer_vocab_size(u);
        CHECK(ok, "a loaded tokenizer saves and loads again");
        lina_tokenizer_free(w);
        remove(path2);
    }
    remove(path);
    free(txt);
    lina_tokenizer_free(t);
    lina_tokenizer_free(u);
}

/* A small Llama/Mistral-style tokenizer.json; `style` 0: Prepend/Replace
 * normalizers + Replace/ByteFallback/Fuse/Strip decoder, merges as strings;
 * 1: Metaspace pre-tokenizer and decoder, merges as arrays. */
static char *sp_json(int style)
{
    size_t cap = 40000, k = 0;
    char *s = malloc(cap);
    k += (size_t)snprintf(s + k, cap - k, "{\"version\":\"1.0\",\"added_tokens\":["
                                          "{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
                                          "{\"id\":1,\"content\":\"<s>\",\"special\":true},"
                                          "{\"id\":2,\"content\":\"</s>\",\"special\":true}],");
    if (style == 0) {
        k += (size_t)snprintf(s + k, cap - k,
                              "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":["
                              "{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                              "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
                              "\"pre_tokenizer\":null,"
                              "\"decoder\":{\"type\":\"Sequence\",\"decoders\":["
                              "{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},\"content\":\" \"},"
                              "{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},"
                              "{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},");
    } else {
        k += (size_t)snprintf(s + k, cap - k,
                              "\"normalizer\":null,"
                              "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
                              "\"prepend_scheme\":\"first\",\"split\":false},"
                              "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\","
                              "\"prepend_scheme\":\"first\",\"split\":false},");
    }
    k += (size_t)snprintf(s + k, cap - k,
                          "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
                          "\"fuse_unk\":true,\"byte_fallback\":true,\"vocab\":{"
                          "\"<unk>\":0,\"<s>\":1,\"</s>\":2,");
    for (int b = 0; b < 256; b++) {
        k += (size_t)snprintf(s + k, cap - k, "\"<0x%02X>\":%d,", b, 3 + b);
    }
    k += (size_t)snprintf(s + k, cap - k,
                          "\"\\u2581\":259,\"h\":260,\"e\":261,\"l\":262,\"o\":263,\"\\u2581h\":264,"
                          "\"ll\":265,\"\\u2581he\":266,\"llo\":267,\"\\u2581hello\":268},\"merges\":");
    if (style == 0) {
        k += (size_t)snprintf(s + k, cap - k,
                              "[\"\\u2581 h\",\"l l\",\"\\u2581h e\",\"ll o\",\"\\u2581he llo\"]}}");
    } else {
        k += (size_t)snprintf(s + k, cap - k,
                              "[[\"\\u2581\",\"h\"],[\"l\",\"l\"],[\"\\u2581h\",\"e\"],[\"ll\",\"o\"],"
                              "[\"\\u2581he\",\"llo\"]]}}");
    }
    return s;
}

static void test_sentencepiece(void)
{
    for (int style = 0; style < 2; style++) {
        char *js = sp_json(style);
        lina_tokenizer *t = NULL;
        int rc = lina_tokenizer_parse(js, strlen(js), "sp.json", &t);
        free(js);
        const char *sn = style ? "Metaspace, array merges" : "Prepend/Replace, string merges";
        CHECK(rc == 0, "load SentencePiece-style tokenizer.json (%s) %s", sn, rc ? lina_last_error() : "");
        if (rc) {
            continue;
        }
        CHECK(lina_tokenizer_vocab_size(t) == 269, "%s: vocab size 269", sn);
        int32_t e1[] = {268};
        CHECK(encodes_to(t, "hello", e1, 1), "%s: 'hello' -> [\\u2581hello]", sn);
        /* 'é' is not in the vocab: byte fallback <0xC3><0xA9> */
        int32_t e2[] = {268, 264, 3 + 0xC3, 3 + 0xA9};
        CHECK(encodes_to(t, "hello h\xc3\xa9", e2, 4), "%s: byte fallback for a missing character", sn);
        CHECK(decodes_to(t, e2, 4, "hello h\xc3\xa9"), "%s: decode joins fallback bytes, strips the leading space",
              sn);
        int32_t e3[] = {268, 2};
        CHECK(encodes_to(t, "hello</s>", e3, 2), "%s: added token </s> matched in text", sn);
        int32_t e4[] = {1, 268, 259, 264};
        CHECK(decodes_to(t, e4, 4, "<s> hello  h"), "%s: decode with <s> and '\\u2581' -> ' '", sn);
        size_t n = 0;
        CHECK(roundtrip(t, "hello  hello\xff\x01 ol\xc3\xa9", 19, &n), "%s: round trip incl. invalid UTF-8 (%zu ids)",
              sn, n);
        lina_tokenizer_free(t);
    }
}

typedef struct bad_case {
    const char *json;
    const char *needle; /* must appear in the error message */
} bad_case;

#define BL_PIPE "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"decoder\":{\"type\":\"ByteLevel\"},"
#define MODEL(v, m) "\"model\":{\"type\":\"BPE\",\"vocab\":" v ",\"merges\":" m "}"

static void test_malformed(void)
{
    static const bad_case cases[] = {
        {"", "not valid JSON"},
        {"{\"model\":", "not valid JSON"},
        {"[1,2]", "not a JSON object"},
        {"{}", "no \"model\""},
        {"{" BL_PIPE "\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "Unigram"},
        {"{" BL_PIPE "\"model\":{\"type\":\"BPE\",\"merges\":[]}}", "no \"vocab\""},
        {"{" BL_PIPE "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}", "no \"merges\""},
        {"{" BL_PIPE MODEL("{\"a\":-1}", "[]") "}", "no valid id"},
        {"{" BL_PIPE MODEL("{\"a\":\"0\"}", "[]") "}", "no valid id"},
        {"{" BL_PIPE MODEL("{\"a\":0.5}", "[]") "}", "no valid id"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":0}", "[]") "}", "used by both"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":2}", "[]") "}", "without gaps"},
        {"{" BL_PIPE MODEL("{}", "[]") "}", "empty vocab"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"a c\"]") "}", "not in the vocab"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":1}", "[\"a b\"]") "}", "merged token"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"ab\"]") "}", "merges[0]"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[[\"a\"]]") "}", "merges[0]"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"a b\", 7]") "}", "merges[1]"},
        {"{" BL_PIPE MODEL("{\"a\":0,\"\\u20ac\":1}", "[]") "}", "byte-level alphabet"},
        {"{\"pre_tokenizer\":{\"type\":\"Whitespace\"}," MODEL("{\"a\":0}", "[]") "}", "Whitespace"},
        {"{\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"x\"}}," MODEL("{\"a\":0}", "[]") "}",
         "Split"},
        {"{\"normalizer\":{\"type\":\"NFKC\"}," BL_PIPE MODEL("{\"a\":0}", "[]") "}", "NFKC"},
        {"{\"decoder\":{\"type\":\"WordPiece\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
         MODEL("{\"a\":0}", "[]") "}",
         "WordPiece"},
        {"{" MODEL("{\"a\":0}", "[]") "}", "unsupported pipeline"},
        {"{\"pre_tokenizer\":7," MODEL("{\"a\":0}", "[]") "}", "pre_tokenizer is not an object"},
        {"{" BL_PIPE "\"model\":{\"type\":\"BPE\",\"unk_token\":\"<unk>\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         "unk_token '<unk>'"},
        {"{" BL_PIPE "\"model\":{\"type\":\"BPE\",\"continuing_subword_prefix\":\"##\",\"vocab\":{\"a\":0},"
         "\"merges\":[]}}",
         "continuing_subword_prefix"},
        {"{" BL_PIPE "\"model\":{\"type\":\"BPE\",\"byte_fallback\":\"yes\",\"vocab\":{\"a\":0},\"merges\":[]}}",
         "byte_fallback"},
        {"{" BL_PIPE "\"added_tokens\":[{\"id\":1}]," MODEL("{\"a\":0}", "[]") "}", "added_tokens[0]"},
        {"{" BL_PIPE "\"added_tokens\":[{\"id\":0,\"content\":\"<s>\"}]," MODEL("{\"a\":0}", "[]") "}",
         "the vocab gives"},
        {"{" BL_PIPE "\"added_tokens\":{}," MODEL("{\"a\":0}", "[]") "}", "not an array"},
        {"{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\"}," MODEL("{\"a\":0}", "[]") "}",
         "replacement"},
        {"{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"prepend_scheme\":\"sometimes\"}," MODEL("{\"a\":0}", "[]") "}",
         "prepend_scheme"},
        {"{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" \"},\"content\":\"\\u2581\"}," MODEL(
             "{\"a\":0}", "[]") "}",
         "Replace"},
    };
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) {
        lina_tokenizer *t = (lina_tokenizer *)1;
        int rc = lina_tokenizer_parse(cases[i].json, strlen(cases[i].json), "bad.json", &t);
        const char *msg = lina_last_error();
        int ok = rc == LINA_EFORMAT && t == NULL && strstr(msg, cases[i].needle) && strstr(msg, "bad.json");
        CHECK(ok, "malformed tokenizer.json %d rejected: %s", i, msg);
        if (!rc) {
            lina_tokenizer_free(t);
        }
    }
    lina_tokenizer *t = NULL;
    CHECK(lina_tokenizer_load("/nonexistent/tokenizer.json", &t) == LINA_EIO && t == NULL, "missing file -> LINA_EIO");
    /* a minimal valid byte-level file with a gap-free vocab but no byte tokens
     * loads; encoding a byte it cannot represent errors instead of crashing */
    const char *ok_js = "{" BL_PIPE MODEL("{\"a\":0,\"b\":1,\"ab\":2}", "[\"a b\"]") "}";
    int rc = lina_tokenizer_parse(ok_js, strlen(ok_js), "ok.json", &t);
    CHECK(rc == 0, "minimal byte-level tokenizer.json loads");
    if (!rc) {
        int32_t e[] = {2, 0};
        CHECK(encodes_to(t, "aba", e, 2), "minimal tokenizer encodes 'aba' -> [ab, a]");
        int32_t *ids = NULL;
        size_t m = 0;
        CHECK(lina_tokenizer_encode(t, "abz", 3, &ids, &m) == LINA_EINVAL && ids == NULL,
              "a byte with no token and no unk -> error (%s)", lina_last_error());
        lina_tokenizer_free(t);
    }
}

/* `lina tokenizer train|encode|decode` end to end (LINA_BIN, as run.sh sets it) */
static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_cli(void)
{
    const char *bin = getenv("LINA_BIN") ? getenv("LINA_BIN") : "build/lina";
    if (access(bin, X_OK) != 0) {
        printf("# lina binary not found at %s: CLI checks skipped\n", bin);
        return;
    }
    char dir[64], cmd[1024];
    snprintf(dir, sizeof dir, "/tmp/lina_tokcli_XXXXXX");
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    char *txt = make_text(30000);
    char path[128];
    snprintf(path, sizeof path, "%s/in.txt", dir);
    FILE *f = fopen(path, "wb");
    fwrite(txt, 1, strlen(txt), f);
    fputc('\0', f); /* a NUL and invalid UTF-8 in the file */
    fputs("\xff\xfe end", f);
    fclose(f);
    free(txt);
    snprintf(cmd, sizeof cmd, "%s tokenizer train --in %s/in.txt --vocab 500 --out %s/tok.json 2>/dev/null", bin, dir,
             dir);
    CHECK(sh(cmd) == 0, "lina tokenizer train");
    snprintf(cmd, sizeof cmd,
             "%s tokenizer encode --tokenizer %s/tok.json --in %s/in.txt --out %s/ids.txt && "
             "%s tokenizer decode --tokenizer %s/tok.json --in %s/ids.txt --out %s/back.txt && "
             "cmp -s %s/in.txt %s/back.txt",
             bin, dir, dir, dir, bin, dir, dir, dir, dir, dir);
    CHECK(sh(cmd) == 0, "lina tokenizer encode/decode (text ids) round trip");
    snprintf(cmd, sizeof cmd,
             "%s tokenizer encode --tokenizer %s/tok.json --in %s/in.txt --out %s/t.tok 2>/dev/null && "
             "%s tokenizer decode --tokenizer %s/tok.json --in %s/t.tok > %s/back2.txt && "
             "cmp -s %s/in.txt %s/back2.txt",
             bin, dir, dir, dir, bin, dir, dir, dir, dir, dir);
    CHECK(sh(cmd) == 0, "lina tokenizer encode to a token file, decode it back");
    snprintf(cmd, sizeof cmd, "printf 'hello' | %s tokenizer encode --tokenizer %s/tok.json | %s tokenizer decode "
             "--tokenizer %s/tok.json | grep -qx hello", bin, dir, bin, dir);
    CHECK(sh(cmd) == 0, "stdin/stdout pipes");
    snprintf(cmd, sizeof cmd, "echo '1 x 2' | %s tokenizer decode --tokenizer %s/tok.json >/dev/null 2>&1", bin, dir);
    CHECK(sh(cmd) == 1, "decode of a non-integer id exits 1");
    snprintf(cmd, sizeof cmd, "echo '99999' | %s tokenizer decode --tokenizer %s/tok.json >/dev/null 2>&1", bin, dir);
    CHECK(sh(cmd) == 1, "decode of an out-of-range id exits 1");
    snprintf(cmd, sizeof cmd, "echo '{}' > %s/bad.json; echo x | %s tokenizer encode --tokenizer %s/bad.json "
             ">/dev/null 2>&1", dir, bin, dir);
    CHECK(sh(cmd) == 1, "a malformed tokenizer.json exits 1");
    snprintf(cmd, sizeof cmd, "%s tokenizer train --in %s/in.txt --out %s/x.json >/dev/null 2>&1", bin, dir, dir);
    CHECK(sh(cmd) == 2, "train without --vocab exits 2");
    snprintf(cmd, sizeof cmd, "%s tokenizer frobnicate >/dev/null 2>&1", bin);
    CHECK(sh(cmd) == 2, "unknown subcommand exits 2");
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (sh(cmd) != 0) {
        printf("# could not remove %s\n", dir);
    }
}

int main(void)
{
    test_training();
    test_training_reference();
    test_roundtrips();
    test_save_load();
    test_sentencepiece();
    test_malformed();
    test_cli();
    return th_exit();
}
