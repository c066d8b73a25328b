/* test_safetensors.c -- safetensors reader/writer: F32 and BF16 round trips,
 * metadata, F16/F64 reading, the open/load API, the named-tensor dictionary,
 * and every malformed-file case returning a clear error (never a crash or an
 * out-of-bounds read: all prefixes and many random mutations of a valid file
 * are opened, which AddressSanitizer checks under `make asan`). */
#include "harness.h"
#include "lina.h"

#include <dirent.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[] = "/tmp/lina_st_XXXXXX";

/* ---- helpers ---- */

/* build a file image: 8-byte length, header (padded to 8 with spaces), data */
static unsigned char *mk_st(const char *hdr, const void *data, size_t dlen, size_t *len)
{
    size_t hl = strlen(hdr);
    size_t pad = (8 - hl % 8) % 8;
    *len = 8 + hl + pad + dlen;
    unsigned char *b = malloc(*len + 1);
    uint64_t n = hl + pad;
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(n >> (8 * i));
    }
    memcpy(b + 8, hdr, hl);
    memset(b + 8 + hl, ' ', pad);
    if (dlen) {
        memcpy(b + 8 + hl + pad, data, dlen);
    }
    return b;
}

static int write_file(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        return -1;
    }
    size_t w = fwrite(buf, 1, n, fp);
    fclose(fp);
    return w == n ? 0 : -1;
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return NULL;
    }
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    rewind(fp);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, fp);
    fclose(fp);
    return b;
}

static int count_stray(void)
{
    DIR *d = opendir(g_dir);
    int stray = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        stray += strstr(e->d_name, ".tmp") != NULL;
    }
    if (d) {
        closedir(d);
    }
    return stray;
}

/* The image must be rejected by open_mem, and, written to a file, by
 * lina_st_read, both with a message naming the file and containing needle. */
static void expect_bad(const unsigned char *buf, size_t len, const char *what, const char *needle)
{
    lina_st_file *f = NULL;
    int rc = lina_st_open_mem(buf, len, "x.safetensors", &f);
    const char *msg = lina_last_error();
    int ok = rc == LINA_EFORMAT && f == NULL && strstr(msg, "x.safetensors") && strstr(msg, needle);
    CHECK(ok, "open_mem rejects %s (\"%s\")", what, msg);
    if (f) {
        lina_st_close(f);
    }
    char path[300];
    snprintf(path, sizeof path, "%s/bad.safetensors", g_dir);
    write_file(path, buf, len);
    lina_tdict d;
    rc = lina_st_read(path, &d, 0);
    msg = lina_last_error();
    ok = rc == LINA_EFORMAT && d.n == 0 && strstr(msg, "bad.safetensors") && strstr(msg, needle);
    CHECK(ok, "st_read rejects %s (\"%s\")", what, msg);
    if (rc == 0) {
        lina_tdict_free(&d);
    }
}

static void expect_bad_hdr(const char *hdr, size_t dlen, const char *what, const char *needle)
{
    unsigned char data[256] = {0};
    size_t len;
    unsigned char *b = mk_st(hdr, data, dlen, &len);
    expect_bad(b, len, what, needle);
    free(b);
}

/* reference bf16 rounding (round to nearest even) */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return x;
    }
    uint32_t lo = u & 0xffffu, hi = u & 0xffff0000u;
    if (lo > 0x8000u || (lo == 0x8000u && (hi & 0x10000u))) {
        hi += 0x10000u;
    }
    float y;
    memcpy(&y, &hi, 4);
    return y;
}

/* ---- tests ---- */

static void test_roundtrip_f32(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/model.safetensors", g_dir);
    /* ranks 0, 1, 2, 4, an empty tensor, long names */
    const char *names[5] = {"scalar", "model.layers.11.attn.q_proj.weight", "model.norm.weight",
                            "x.y.z.w.4d_tensor_with_a_rather_long_name_indeed", "empty"};
    int nds[5] = {0, 2, 1, 4, 2};
    int64_t shapes[5][4] = {{0}, {3, 5}, {7}, {2, 3, 1, 4}, {0, 3}};
    lina_tensor t[5];
    lina_st_view v[5];
    for (int i = 0; i < 5; i++) {
        lina_tensor_alloc(&t[i], nds[i], shapes[i]);
        for (int64_t j = 0; j < lina_tensor_numel(&t[i]); j++) {
            t[i].data[j] = (float)th_normal();
        }
        v[i].name = names[i];
        v[i].ndim = nds[i];
        memcpy(v[i].shape, shapes[i], sizeof shapes[i]);
        v[i].data = t[i].data;
    }
    const char *meta[] = {"format", "pt", "lina.note", "quote \" backslash \\ newline \n tab \t"};
    int rc = lina_st_write(path, v, 5, meta, 2, LINA_ST_F32);
    CHECK(rc == 0, "st_write F32 (%s)", lina_last_error());
    lina_tdict d;
    rc = lina_st_read(path, &d, 0);
    CHECK(rc == 0 && d.n == 5, "st_read F32 (%s)", lina_last_error());
    int same = rc == 0 && d.n == 5;
    for (int i = 0; same && i < 5; i++) {
        same = strcmp(d.names[i], names[i]) == 0 && d.t[i].ndim == nds[i] &&
               memcmp(d.t[i].shape, shapes[i], sizeof(int64_t) * (size_t)nds[i]) == 0 &&
               memcmp(d.t[i].data, t[i].data, sizeof(float) * (size_t)lina_tensor_numel(&t[i])) == 0;
    }
    CHECK(same, "F32 round trip: names in order, shapes and bits identical");
    CHECK(rc == 0 && lina_tdict_meta(&d, "format") && strcmp(lina_tdict_meta(&d, "format"), "pt") == 0 &&
              lina_tdict_meta(&d, "lina.note") &&
              strcmp(lina_tdict_meta(&d, "lina.note"), meta[3]) == 0 && lina_tdict_meta(&d, "nope") == NULL,
          "metadata round trip (with escapes)");
    CHECK(rc == 0 && lina_tdict_cfind(&d, names[1]) == &d.t[1] && lina_tdict_index(&d, "empty") == 4 &&
              lina_tdict_find(&d, "absent") == NULL,
          "tdict lookups");
    /* layout: header padded to 8, data in the order given, back to back */
    size_t len;
    unsigned char *b = read_file(path, &len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) {
        hl = (hl << 8) | b[i];
    }
    CHECK(hl % 8 == 0 && b[8] == '{', "header length %llu is a multiple of 8", (unsigned long long)hl);
    size_t want = 8 + hl;
    for (int i = 0; i < 5; i++) {
        want += 4 * (size_t)lina_tensor_numel(&t[i]);
    }
    CHECK(len == want, "file size = 8 + header + data (%zu vs %zu)", len, want);
    /* data of tensor 1 follows tensor 0 directly */
    CHECK(len == want && memcmp(b + 8 + hl, t[0].data, 4) == 0 && memcmp(b + 8 + hl + 4, t[1].data, 60) == 0,
          "tensors laid out in the order given");
    free(b);
    CHECK(count_stray() == 0, "no temporary file left behind");
    /* write the dict back out and compare */
    char path2[300];
    snprintf(path2, sizeof path2, "%s/model2.safetensors", g_dir);
    rc = rc ? rc : lina_st_write_dict(path2, &d, LINA_ST_F32);
    size_t l1, l2;
    unsigned char *b1 = read_file(path, &l1), *b2 = read_file(path2, &l2);
    CHECK(rc == 0 && b1 && b2 && l1 == l2 && memcmp(b1, b2, l1) == 0, "write_dict reproduces the file byte for byte");
    free(b1);
    free(b2);
    /* overwrite an existing file */
    rc = lina_st_write(path, v, 1, NULL, 0, LINA_ST_F32);
    lina_tdict e;
    rc = rc ? rc : lina_st_read(path, &e, 0);
    CHECK(rc == 0 && e.n == 1 && e.nmeta == 0, "overwriting an existing file");
    if (rc == 0) {
        lina_tdict_free(&e);
    }
    lina_tdict_free(&d);
    for (int i = 0; i < 5; i++) {
        lina_tensor_free(&t[i]);
    }
}

static void test_roundtrip_bf16(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/bf16.safetensors", g_dir);
    /* > one conversion chunk, plus special values */
    int64_t n = 10000;
    lina_tensor t;
    lina_tensor_alloc(&t, 1, &n);
    for (int64_t i = 0; i < n; i++) {
        t.data[i] = (float)(th_normal() * pow(10.0, th_uniform(-6, 6)));
    }
    float sp[] = {1.0f, -2.5f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, INFINITY, -INFINITY, NAN, 0.0f, -0.0f,
                  3.0e38f, 1e-40f};
    memcpy(t.data, sp, sizeof sp);
    lina_st_view v = {"w", 1, {n}, t.data};
    int rc = lina_st_write(path, &v, 1, NULL, 0, LINA_ST_BF16);
    CHECK(rc == 0, "st_write BF16 (%s)", lina_last_error());
    size_t len;
    unsigned char *b = read_file(path, &len);
    CHECK(b && strstr((const char *)b + 8, "\"BF16\"") && len % 2 == 0, "BF16 dtype in header");
    free(b);
    lina_tdict d;
    rc = lina_st_read(path, &d, 0);
    int ok = rc == 0 && d.n == 1 && d.t[0].shape[0] == n;
    double maxrel = 0;
    int exact = 1;
    for (int64_t i = 0; ok && i < n; i++) {
        float x = t.data[i], y = d.t[0].data[i];
        if (isnan(x)) {
            exact &= isnan(y);
            continue;
        }
        float r = bf16_round(x);
        exact &= memcmp(&r, &y, 4) == 0;
        if (isfinite(x) && fabsf(x) > 1e-30f) {
            double rel = fabs((double)y - x) / fabs((double)x);
            maxrel = rel > maxrel ? rel : maxrel;
        }
    }
    CHECK(ok && exact, "BF16 round trip equals round-to-nearest-even of every value (inf, nan, signed 0)");
    CHECK(ok && maxrel <= 1.0 / 256, "BF16 relative error %.3g <= 2^-8", maxrel);
    CHECK(ok && d.t[0].data[2] == 1.0f && d.t[0].data[3] == 1.0f + 0x1p-6f, "BF16 ties round to even");
    if (rc == 0) {
        lina_tdict_free(&d);
    }
    lina_tensor_free(&t);
}

static void test_read_dtypes(void)
{
    /* hand-made file: F16, F64, BF16 and F32 in one file, in an unusual order */
    uint16_t h16[4] = {0x3c00, 0xc000, 0x0001, 0x7bff}; /* 1, -2, smallest subnormal, 65504 */
    double f64[2] = {0.1, -1e300};
    uint16_t b16[2] = {0x3f80, 0xc0a0}; /* 1, -5 */
    float f32[1] = {42.0f};
    unsigned char data[8 + 16 + 4 + 4];
    memcpy(data, h16, 8);
    memcpy(data + 8, f64, 16);
    memcpy(data + 24, b16, 4);
    memcpy(data + 28, f32, 4);
    const char *hdr = "{\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[24,28]},"
                      "\"a\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
                      "\"d\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[28,32]},"
                      "\"b\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[8,24]}}";
    size_t len;
    unsigned char *b = mk_st(hdr, data, sizeof data, &len);
    lina_st_file *f;
    int rc = lina_st_open_mem(b, len, "mem", &f);
    CHECK(rc == 0 && lina_st_count(f) == 4, "open_mem of a mixed-dtype file (%s)", lina_last_error());
    if (rc == 0) {
        float out[4];
        int64_t shape[LINA_MAX_DIMS];
        int ia = lina_st_find(f, "a");
        CHECK(ia == 1 && strcmp(lina_st_name(f, 0), "c") == 0 && strcmp(lina_st_dtype_name(f, ia), "F16") == 0 &&
                  lina_st_shape(f, ia, shape) == 2 && shape[0] == 2 && shape[1] == 2 && lina_st_numel(f, ia) == 4,
              "find / name / dtype / shape in header order");
        rc = lina_st_load(f, ia, out, 4);
        CHECK(rc == 0 && out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f,
              "F16 read (normal, subnormal, max)");
        rc = lina_st_load(f, lina_st_find(f, "b"), out, 2);
        CHECK(rc == 0 && out[0] == 0.1f && isinf(out[1]) && out[1] < 0, "F64 read converted to float32");
        rc = lina_st_load(f, lina_st_find(f, "c"), out, 2);
        CHECK(rc == 0 && out[0] == 1.0f && out[1] == -5.0f, "BF16 read");
        rc = lina_st_load(f, lina_st_find(f, "d"), out, 1);
        CHECK(rc == 0 && out[0] == 42.0f && lina_st_shape(f, 2, shape) == 0, "rank-0 F32 read");
        rc = lina_st_load(f, ia, out, 3);
        CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "elements"), "load with a wrong count fails");
        CHECK(lina_st_load(f, 9, out, 1) == LINA_EINVAL && lina_st_find(f, "zz") == -1 &&
                  lina_st_name(f, 9) == NULL && lina_st_meta(f, "x") == NULL && lina_st_meta_count(f) == 0,
              "bad index / absent name / no metadata");
        lina_st_close(f);
    }
    free(b);
}

static void test_unsupported(void)
{
    int64_t iv[3] = {1, 2, 3};
    float fv[2] = {1.5f, 2.5f};
    unsigned char data[32];
    memcpy(data, iv, 24);
    memcpy(data + 24, fv, 8);
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\"},"
                      "\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,24]},"
                      "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]}}";
    size_t len;
    unsigned char *b = mk_st(hdr, data, sizeof data, &len);
    char path[300];
    snprintf(path, sizeof path, "%s/i64.safetensors", g_dir);
    write_file(path, b, len);
    lina_tdict d;
    int rc = lina_st_read(path, &d, 0);
    CHECK(rc == LINA_EFORMAT && strstr(lina_last_error(), "i64.safetensors") && strstr(lina_last_error(), "I64") &&
              strstr(lina_last_error(), "ids"),
          "unsupported dtype I64 rejected (\"%s\")", lina_last_error());
    rc = lina_st_read(path, &d, LINA_ST_SKIP_UNSUPPORTED);
    CHECK(rc == 0 && d.n == 1 && strcmp(d.names[0], "w") == 0 && d.t[0].data[1] == 2.5f &&
              strcmp(lina_tdict_meta(&d, "format"), "pt") == 0,
          "LINA_ST_SKIP_UNSUPPORTED skips it");
    if (rc == 0) {
        lina_tdict_free(&d);
    }
    lina_st_file *f;
    rc = lina_st_open(path, &f);
    CHECK(rc == 0 && strcmp(lina_st_dtype_name(f, 0), "I64") == 0 && lina_st_meta_count(f) == 1 &&
              strcmp(lina_st_meta_key(f, 0), "format") == 0,
          "open lists an I64 tensor");
    if (rc == 0) {
        float out[3];
        CHECK(lina_st_load(f, 0, out, 3) == LINA_EFORMAT && strstr(lina_last_error(), "I64"),
              "load of the I64 tensor fails with a message");
        lina_st_close(f);
    }
    free(b);
}

static void test_malformed(void)
{
    unsigned char small[8] = {0};
    expect_bad(small, 0, "an empty file", "need an 8-byte header length");
    expect_bad(small, 5, "a 5-byte file", "need an 8-byte header length");
    /* header length beyond the file */
    {
        size_t len;
        unsigned char *b = mk_st("{}", NULL, 0, &len);
        b[0] = (unsigned char)(len - 7);
        expect_bad(b, len, "header length one past the file", "exceeds the file size");
        memset(b, 0xff, 8);
        expect_bad(b, len, "header length 2^64-1", "exceeds the file size");
        free(b);
    }
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "unterminated JSON",
                   "not valid JSON");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing comma",
                   "not valid JSON");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}", 8, "trailing comma",
                   "not valid JSON");
    expect_bad_hdr("[1, 2]", 0, "a JSON array header", "does not start with '{'");
    expect_bad_hdr("{} {}", 0, "bytes after the JSON object", "after the JSON header");
    expect_bad_hdr("\x01\x02\x03\x04 binary", 0, "a binary header", "does not start with '{'");
    {
        size_t len;
        unsigned char *b = mk_st("{\"a\":1}  ", NULL, 0, &len);
        b[8 + 3] = '\0';
        expect_bad(b, len, "a NUL byte in the header", "NUL byte");
        free(b);
    }
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "offsets past the buffer",
                   "outside the data buffer");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "reversed offsets",
                   "reversed");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "negative offset",
                   "non-negative integers");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.5,4.5]}}", 8, "fractional offset",
                   "non-negative integers");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "three offsets",
                   "[begin, end]");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}}", 8, "string offsets",
                   "[begin, end]");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 8, "huge offset",
                   "non-negative integers");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 16, "size mismatch",
                   "need 16");
    expect_bad_hdr("{\"a\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "BF16 size mismatch",
                   "need 8");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   16, "overlapping tensors", "overlap");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                   16, "a tensor inside another", "overlap");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
                   16, "duplicate names", "duplicate tensor name 'a'");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype",
                   "unknown dtype");
    expect_bad_hdr("{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "numeric dtype",
                   "must be a string");
    expect_bad_hdr("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "missing dtype", "missing \"dtype\"");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "missing shape", "missing \"shape\"");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "missing offsets", "missing \"data_offsets\"");
    expect_bad_hdr("{\"a\":[1,2]}", 0, "entry not an object", "must be a JSON object");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "negative shape",
                   "non-negative integers");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "fractional shape",
                   "non-negative integers");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8, "string shape",
                   "must be an array");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                   "nine dimensions", "dimensions");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
                   "overflowing shape", "overflows");
    expect_bad_hdr("{\"a\":{\"dtype\":\"F64\",\"shape\":[1125899906842624,2],\"data_offsets\":[0,0]}}", 0,
                   "shape overflowing the byte size", "overflows");
    expect_bad_hdr("{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "empty name", "empty tensor name");
    expect_bad_hdr("{\"__metadata__\":[1]}", 0, "metadata not an object", "__metadata__");
    expect_bad_hdr("{\"__metadata__\":{\"a\":1}}", 0, "non-string metadata value", "not a string");
    expect_bad_hdr("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate __metadata__", "duplicate");
    expect_bad_hdr("{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", 0, "duplicate metadata key", "duplicate metadata");
}

/* every prefix of a valid file fails cleanly; random corruptions never crash */
static void test_fuzz(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/fuzz.safetensors", g_dir);
    float a[6] = {1, 2, 3, 4, 5, 6}, c[3] = {7, 8, 9};
    lina_st_view v[2] = {{"alpha", 2, {2, 3}, a}, {"gamma", 1, {3}, c}};
    const char *meta[] = {"k", "v"};
    lina_st_write(path, v, 2, meta, 1, LINA_ST_F32);
    size_t len;
    unsigned char *b = read_file(path, &len);
    int all_fail = 1;
    for (size_t l = 0; l < len; l++) {
        unsigned char *p = malloc(l ? l : 1);
        memcpy(p, b, l);
        lina_st_file *f = NULL;
        int rc = lina_st_open_mem(p, l, "prefix", &f);
        if (rc == 0) {
            all_fail = 0;
            lina_st_close(f);
        } else if (!strstr(lina_last_error(), "prefix")) {
            all_fail = 0;
        }
        free(p);
    }
    CHECK(all_fail, "all %zu proper prefixes of a valid file are rejected with a message", len);
    int ok_count = 0, err_count = 0, consistent = 1;
    unsigned long long rng = 12345;
    for (int it = 0; it < 4000; it++) {
        unsigned char *p = malloc(len);
        memcpy(p, b, len);
        int nflip = 1 + (int)(rng % 3);
        for (int k = 0; k < nflip; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)((rng >> 33) % len);
            /* favour the header and its length field */
            if (it % 2 == 0) {
                pos = pos % (len - 9 * 4 + 1);
            }
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            p[pos] = (unsigned char)(rng >> 40);
        }
        lina_st_file *f = NULL;
        int rc = lina_st_open_mem(p, len, "mut", &f);
        if (rc == 0) {
            ok_count++;
            for (int i = 0; i < lina_st_count(f); i++) {
                int64_t n = lina_st_numel(f, i);
                float *dst = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
                int lr = lina_st_load(f, i, dst, n);
                consistent &= lr == 0 || strstr(lina_last_error(), "mut") != NULL;
                free(dst);
            }
            lina_st_close(f);
        } else {
            err_count++;
            consistent &= strstr(lina_last_error(), "mut") != NULL;
        }
        free(p);
    }
    CHECK(consistent, "4000 random corruptions: %d opened, %d rejected, every error names the file", ok_count,
          err_count);
    free(b);
}

static void test_files_and_writer_errors(void)
{
    char path[300];
    lina_tdict d;
    snprintf(path, sizeof path, "%s/absent.safetensors", g_dir);
    int rc = lina_st_read(path, &d, 0);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "absent.safetensors") && strstr(lina_last_error(), "cannot open"),
          "missing file: LINA_EIO (\"%s\")", lina_last_error());
    rc = lina_st_read(g_dir, &d, 0);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "not a regular file"), "a directory: LINA_EIO (\"%s\")",
          lina_last_error());
    /* {} is a valid, empty file */
    size_t len;
    unsigned char *b = mk_st("{}", NULL, 0, &len);
    snprintf(path, sizeof path, "%s/empty.safetensors", g_dir);
    write_file(path, b, len);
    free(b);
    rc = lina_st_read(path, &d, 0);
    CHECK(rc == 0 && d.n == 0 && d.nmeta == 0, "an empty header {} reads as zero tensors");
    if (rc == 0) {
        lina_tdict_free(&d);
    }
    /* writer argument checks */
    float x[4] = {0};
    snprintf(path, sizeof path, "%s/w.safetensors", g_dir);
    lina_st_view dup[2] = {{"a", 1, {4}, x}, {"a", 1, {4}, x}};
    rc = lina_st_write(path, dup, 2, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "duplicate tensor name 'a'"), "writer: duplicate names");
    lina_st_view bad[1] = {{"", 1, {4}, x}};
    rc = lina_st_write(path, bad, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "invalid name"), "writer: empty name");
    bad[0].name = "__metadata__";
    rc = lina_st_write(path, bad, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL, "writer: name __metadata__");
    lina_st_view neg[1] = {{"n", 2, {2, -1}, x}};
    rc = lina_st_write(path, neg, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "bad shape"), "writer: negative shape");
    lina_st_view nul[1] = {{"n", 1, {4}, NULL}};
    rc = lina_st_write(path, nul, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "no data"), "writer: NULL data");
    lina_st_view rk[1] = {{"n", 9, {1}, x}};
    rc = lina_st_write(path, rk, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "rank"), "writer: rank 9");
    const char *dm[] = {"k", "1", "k", "2"};
    rc = lina_st_write(path, dup, 1, dm, 2, LINA_ST_F32);
    CHECK(rc == LINA_EINVAL && strstr(lina_last_error(), "duplicate metadata"), "writer: duplicate metadata keys");
    rc = lina_st_write(path, dup, 1, NULL, 0, (lina_st_dtype)7);
    CHECK(rc == LINA_EINVAL, "writer: unsupported dtype");
    CHECK(access(path, F_OK) != 0, "failed writes create no file");
    snprintf(path, sizeof path, "%s/no/such/dir/w.safetensors", g_dir);
    rc = lina_st_write(path, dup, 1, NULL, 0, LINA_ST_F32);
    CHECK(rc == LINA_EIO && strstr(lina_last_error(), "cannot create"), "writer: missing directory (\"%s\")",
          lina_last_error());
    CHECK(count_stray() == 0, "no temporary file left after errors");
}

static void test_tdict(void)
{
    lina_tdict d;
    lina_tdict_init(&d);
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.mlp.down_proj.weight", i);
        int64_t sh[2] = {2, i};
        lina_tensor t;
        lina_tensor_alloc(&t, 2, sh);
        ok &= lina_tdict_add(&d, name, &t) == 0 && t.data == NULL;
    }
    CHECK(ok && d.n == 100 && lina_tdict_cfind(&d, "model.layers.57.mlp.down_proj.weight")->shape[1] == 57,
          "tdict grows to 100 long names");
    int64_t sh = 3;
    lina_tensor t;
    lina_tensor_alloc(&t, 1, &sh);
    int rc = lina_tdict_add(&d, "model.layers.3.mlp.down_proj.weight", &t);
    CHECK(rc == LINA_EINVAL && t.data != NULL && strstr(lina_last_error(), "duplicate"),
          "tdict_add rejects a duplicate and leaves ownership with the caller");
    rc = lina_tdict_add(&d, "", &t);
    CHECK(rc == LINA_EINVAL, "tdict_add rejects an empty name");
    lina_tensor_free(&t);
    lina_tdict_set_meta(&d, "a", "1");
    lina_tdict_set_meta(&d, "b", "2");
    lina_tdict_set_meta(&d, "a", "3");
    CHECK(d.nmeta == 2 && strcmp(lina_tdict_meta(&d, "a"), "3") == 0, "set_meta replaces an existing key");
    lina_tdict_free(&d);
    CHECK(d.n == 0 && d.names == NULL, "tdict_free resets");
}

int main(void)
{
    if (!mkdtemp(g_dir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    test_roundtrip_f32();
    test_roundtrip_bf16();
    test_read_dtypes();
    test_unsupported();
    test_malformed();
    test_fuzz();
    test_files_and_writer_errors();
    test_tdict();
    /* clean up */
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] != '.') {
            char p[600];
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
    }
    if (d) {
        closedir(d);
    }
    rmdir(g_dir);
    return th_exit();
}
