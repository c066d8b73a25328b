/* test_npy.c -- .npy reader/writer: round trips, float64 conversion, and every
 * malformed-file case returning a clear error instead of crashing. */
#include "harness.h"
#include "lina.h"

#include <dirent.h>
#include <string.h>
#include <unistd.h>

/* build an .npy image with the given header dict and payload */
static size_t mk_npy(unsigned char *buf, const char *dict, const void *data, size_t n)
{
    size_t hl = strlen(dict);
    size_t total = 10 + hl + 1;
    size_t pad = (64 - total % 64) % 64;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    size_t h = hl + pad + 1;
    buf[8] = (unsigned char)(h & 0xff);
    buf[9] = (unsigned char)(h >> 8);
    memcpy(buf + 10, dict, hl);
    memset(buf + 10 + hl, ' ', pad);
    buf[10 + hl + pad] = '\n';
    memcpy(buf + 10 + h, data, n);
    return 10 + h + n;
}

static void expect_err(const void *buf, size_t len, const char *what, const char *needle)
{
    lina_tensor t;
    int rc = lina_npy_parse(buf, len, "x.npy", &t);
    const char *msg = lina_last_error();
    CHECK(rc != 0 && strstr(msg, "x.npy") && strstr(msg, needle), "npy rejects %s (\"%s\")", what, msg);
    if (rc == 0) {
        lina_tensor_free(&t);
    }
}

int main(void)
{
    char dir[] = "/tmp/lina_npy_XXXXXX";
    if (!mkdtemp(dir)) {
        printf("FAIL mkdtemp\n");
        return 1;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    /* round trip of several ranks */
    int64_t shapes[4][4] = {{0}, {5}, {2, 3}, {2, 3, 4, 5}};
    int nds[4] = {0, 1, 2, 4};
    for (int c = 0; c < 4; c++) {
        lina_tensor t, u;
        lina_tensor_alloc(&t, nds[c], shapes[c]);
        for (int64_t i = 0; i < lina_tensor_numel(&t); i++) {
            t.data[i] = (float)th_normal();
        }
        int rc = lina_npy_write(path, &t);
        rc = rc ? rc : lina_npy_read(path, &u);
        int same = rc == 0 && u.ndim == t.ndim &&
                   memcmp(u.shape, t.shape, sizeof(int64_t) * (size_t)t.ndim) == 0 &&
                   memcmp(u.data, t.data, sizeof(float) * (size_t)lina_tensor_numel(&t)) == 0;
        CHECK(same, "npy round trip rank %d", nds[c]);
        /* header is 64-byte aligned as numpy writes it */
        FILE *fp = fopen(path, "rb");
        unsigned char hdr[10] = {0};
        size_t got = fp ? fread(hdr, 1, 10, fp) : 0;
        if (fp) {
            fclose(fp);
        }
        CHECK(got == 10 && (10 + hdr[8] + 256 * hdr[9]) % 64 == 0, "npy header padded to 64 bytes (rank %d)", nds[c]);
        lina_tensor_free(&t);
        if (rc == 0) {
            lina_tensor_free(&u);
        }
    }
    /* no temporary file left behind */
    DIR *d = opendir(dir);
    int stray = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        stray += strstr(e->d_name, ".tmp") != NULL;
    }
    if (d) {
        closedir(d);
    }
    CHECK(stray == 0, "npy write leaves no temporary file");
    /* writing into a missing directory fails with a message */
    {
        lina_tensor t;
        int64_t sh[1] = {3};
        lina_tensor_alloc(&t, 1, sh);
        int rc = lina_npy_write("/nonexistent_dir_lina/x.npy", &t);
        CHECK(rc != 0 && strstr(lina_last_error(), "x.npy"), "npy write to a missing directory fails cleanly");
        lina_tensor_free(&t);
    }
    /* float64 converted */
    unsigned char buf[4096];
    double dv[6] = {1.5, -2.25, 3.0, 1e-3, -7.0, 0.5};
    size_t n = mk_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", dv, sizeof dv);
    {
        lina_tensor t;
        int rc = lina_npy_parse(buf, n, "x.npy", &t);
        int ok = rc == 0 && t.ndim == 2 && t.shape[0] == 2 && t.shape[1] == 3;
        for (int i = 0; ok && i < 6; i++) {
            ok = t.data[i] == (float)dv[i];
        }
        CHECK(ok, "npy reads <f8 and converts to float32");
        if (rc == 0) {
            lina_tensor_free(&t);
        }
    }
    float fv[6] = {1, 2, 3, 4, 5, 6};
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", fv, sizeof fv);
    expect_err(buf, n, "Fortran order", "Fortran");
    n = mk_npy(buf, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv);
    expect_err(buf, n, "big-endian data", "big-endian");
    n = mk_npy(buf, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv);
    expect_err(buf, n, "int32 dtype", "dtype");
    n = mk_npy(buf, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 3), }", fv, 12);
    expect_err(buf, n, "float16 dtype", "dtype");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv - 4);
    expect_err(buf, n, "truncated data", "truncated");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv);
    expect_err(buf, n - 30, "a file cut inside its header", "truncated");
    expect_err(buf, 40, "truncated header", "truncated");
    expect_err(buf, 5, "a 5-byte file", "not a .npy");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", fv, sizeof fv);
    expect_err(buf, n, "trailing bytes", "trailing");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", fv, sizeof fv);
    expect_err(buf, n, "a malformed shape", "shape");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, }", fv, sizeof fv);
    expect_err(buf, n, "a header without shape", "malformed");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", fv, sizeof fv);
    expect_err(buf, n, "an overflowing shape", "npy");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv);
    buf[0] = 'X';
    expect_err(buf, n, "a bad magic string", "not a .npy");
    n = mk_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", fv, sizeof fv);
    buf[6] = 9;
    expect_err(buf, n, "an unknown version", "version");
    {
        lina_tensor t;
        int rc = lina_npy_read("/nonexistent_dir_lina/q.npy", &t);
        CHECK(rc != 0 && strstr(lina_last_error(), "q.npy"), "npy read of a missing file names it (%s)", lina_last_error());
    }
    unlink(path);
    rmdir(dir);
    return th_exit();
}
