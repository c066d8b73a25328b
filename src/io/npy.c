/* npy.c -- NumPy .npy reader and writer (float32 C order; '<f8' read and converted; 1-D int32 /
 * int64 arrays read as int64). */
#include "io_internal.h"
#include "lina.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* find `key` in the header dict and return a pointer just after its ':' */
static const char *dict_value(const char *h, const char *key)
{
    char pat[32];
    const char *p;
    snprintf(pat, sizeof pat, "'%s'", key);
    p = strstr(h, pat);
    if (!p) {
        snprintf(pat, sizeof pat, "\"%s\"", key);
        p = strstr(h, pat);
    }
    if (!p) {
        return NULL;
    }
    p += strlen(pat);
    while (*p == ' ') {
        p++;
    }
    if (*p != ':') {
        return NULL;
    }
    p++;
    while (*p == ' ') {
        p++;
    }
    return p;
}

/* The float form (iv == NULL: '<f4' or '<f8' into *out) or the integer form
 * (iv != NULL: a 1-D '<i4' or '<i8' array into a malloc'd *iv of *ni values). */
static int npy_parse(const void *buf, size_t len, const char *name, lina_tensor *out, int64_t **iv,
                     int64_t *ni)
{
    const unsigned char *b = buf;
    if (out) {
        memset(out, 0, sizeof *out);
    }
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) {
        return lina_set_error(LINA_EFORMAT, "%s: not a .npy file (bad magic)", name);
    }
    int major = b[6];
    size_t hlen, hoff;
    if (major == 1) {
        hlen = (size_t)b[8] | ((size_t)b[9] << 8);
        hoff = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12) {
            return lina_set_error(LINA_EFORMAT, "%s: truncated .npy header", name);
        }
        hlen = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        hoff = 12;
    } else {
        return lina_set_error(LINA_EFORMAT, "%s: unsupported .npy version %d", name, major);
    }
    if (hlen > len - hoff) {
        return lina_set_error(LINA_EFORMAT, "%s: truncated .npy header", name);
    }
    if (hlen > 65536) {
        return lina_set_error(LINA_EFORMAT, "%s: .npy header too long", name);
    }
    char *h = malloc(hlen + 1);
    if (!h) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
    }
    memcpy(h, b + hoff, hlen);
    h[hlen] = '\0';
    if (strlen(h) != hlen && strlen(h) + 1 < hlen) {
        /* NUL bytes inside the header */
        free(h);
        return lina_set_error(LINA_EFORMAT, "%s: malformed .npy header", name);
    }
    int rc = LINA_OK;
    const char *d = dict_value(h, "descr");
    const char *f = dict_value(h, "fortran_order");
    const char *s = dict_value(h, "shape");
    int is_f8 = 0, is_int = 0;
    if (!d || !f || !s || h[0] != '{') {
        rc = lina_set_error(LINA_EFORMAT, "%s: malformed .npy header (need descr, fortran_order, shape)", name);
        goto done;
    }
    if (iv && (strncmp(d, "'<i4'", 5) == 0 || strncmp(d, "'=i4'", 5) == 0 || strncmp(d, "'<i8'", 5) == 0 ||
               strncmp(d, "'=i8'", 5) == 0)) {
        is_int = 1;
        is_f8 = d[3] == '8';
    } else if (iv) {
        char dt[16] = {0};
        for (size_t i = 0; d[i] && d[i] != ',' && i < sizeof dt - 1; i++) {
            dt[i] = d[i];
        }
        rc = lina_set_error(LINA_EFORMAT, "%s: dtype %s is not supported (need int32 '<i4' or int64 '<i8')", name,
                            dt);
        goto done;
    } else if (strncmp(d, "'<f4'", 5) == 0 || strncmp(d, "'=f4'", 5) == 0) {
        is_f8 = 0;
    } else if (strncmp(d, "'<f8'", 5) == 0 || strncmp(d, "'=f8'", 5) == 0) {
        is_f8 = 1;
    } else if (strncmp(d, "'>f4'", 5) == 0 || strncmp(d, "'>f8'", 5) == 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: big-endian data is not supported (need '<f4')", name);
        goto done;
    } else {
        char dt[16] = {0};
        size_t i = 0;
        while (d[i] && d[i] != ',' && i < sizeof dt - 1) {
            dt[i] = d[i];
            i++;
        }
        rc = lina_set_error(LINA_EFORMAT, "%s: dtype %s is not supported (need float32 '<f4')", name, dt);
        goto done;
    }
    if (strncmp(f, "False", 5) != 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: Fortran-order arrays are not supported (need C order)", name);
        goto done;
    }
    if (*s != '(') {
        rc = lina_set_error(LINA_EFORMAT, "%s: malformed shape in .npy header", name);
        goto done;
    }
    s++;
    int nd = 0;
    int64_t shape[LINA_MAX_DIMS];
    for (;;) {
        while (*s == ' ') {
            s++;
        }
        if (*s == ')') {
            break;
        }
        if (*s < '0' || *s > '9') {
            rc = lina_set_error(LINA_EFORMAT, "%s: malformed shape in .npy header", name);
            goto done;
        }
        if (nd == LINA_MAX_DIMS) {
            rc = lina_set_error(LINA_EFORMAT, "%s: more than %d dimensions", name, LINA_MAX_DIMS);
            goto done;
        }
        errno = 0;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (errno || v < 0 || v > ((int64_t)1 << 40)) {
            rc = lina_set_error(LINA_EFORMAT, "%s: shape entry out of range", name);
            goto done;
        }
        shape[nd++] = v;
        s = end;
        while (*s == ' ') {
            s++;
        }
        if (*s == ',') {
            s++;
        } else if (*s != ')') {
            rc = lina_set_error(LINA_EFORMAT, "%s: malformed shape in .npy header", name);
            goto done;
        }
    }
    int64_t n = 1;
    for (int i = 0; i < nd; i++) {
        if (shape[i] && n > ((int64_t)1 << 40) / shape[i]) {
            rc = lina_set_error(LINA_EFORMAT, "%s: array too large", name);
            goto done;
        }
        n *= shape[i];
    }
    size_t esz = is_f8 ? 8 : 4;
    size_t doff = hoff + hlen;
    if ((size_t)n > (len - doff) / esz) {
        rc = lina_set_error(LINA_EFORMAT, "%s: truncated data (%lld elements expected, %zu bytes present)",
                            name, (long long)n, len - doff);
        goto done;
    }
    if ((size_t)n * esz != len - doff) {
        rc = lina_set_error(LINA_EFORMAT, "%s: %zu trailing bytes after the data", name,
                            len - doff - (size_t)n * esz);
        goto done;
    }
    if (is_int) {
        if (nd != 1) {
            rc = lina_set_error(LINA_EFORMAT, "%s: must be a 1-D array (has %d dimensions)", name, nd);
            goto done;
        }
        *iv = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
        if (!*iv) {
            rc = lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
            goto done;
        }
        for (int64_t i = 0; i < n; i++) {
            if (is_f8) {
                memcpy(&(*iv)[i], b + doff + (size_t)i * 8, 8);
            } else {
                int32_t x;
                memcpy(&x, b + doff + (size_t)i * 4, 4);
                (*iv)[i] = x;
            }
        }
        *ni = n;
        goto done;
    }
    rc = lina_tensor_alloc(out, nd, shape);
    if (rc) {
        goto done;
    }
    if (is_f8) {
        for (int64_t i = 0; i < n; i++) {
            double x;
            memcpy(&x, b + doff + (size_t)i * 8, 8);
            out->data[i] = (float)x;
        }
    } else if (n) {
        memcpy(out->data, b + doff, (size_t)n * 4);
    }
done:
    free(h);
    return rc;
}

int lina_npy_parse(const void *buf, size_t len, const char *name, lina_tensor *out)
{
    return npy_parse(buf, len, name, out, NULL, NULL);
}

static int npy_load(const char *path, lina_tensor *out, int64_t **iv, int64_t *ni)
{
    if (out) {
        memset(out, 0, sizeof *out);
    }
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        return lina_set_error(LINA_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    if (fseek(fp, 0, SEEK_END) != 0) {
        fclose(fp);
        return lina_set_error(LINA_EIO, "%s: cannot seek", path);
    }
    long sz = ftell(fp);
    if (sz < 0) {
        fclose(fp);
        return lina_set_error(LINA_EIO, "%s: not a regular file", path);
    }
    rewind(fp);
    unsigned char *buf = malloc((size_t)sz + 1);
    if (!buf) {
        fclose(fp);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, (size_t)sz, fp);
    fclose(fp);
    if (got != (size_t)sz) {
        free(buf);
        return lina_set_error(LINA_EIO, "%s: read error", path);
    }
    int rc = npy_parse(buf, (size_t)sz, path, out, iv, ni);
    free(buf);
    return rc;
}

int lina_npy_read(const char *path, lina_tensor *out)
{
    return npy_load(path, out, NULL, NULL);
}

int lina_npy_read_int(const char *path, int64_t **vals, int64_t *n)
{
    *vals = NULL;
    *n = 0;
    return npy_load(path, NULL, vals, n);
}

int lina_npy_write(const char *path, const lina_tensor *t)
{
    char hdr[256];
    int p = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < t->ndim; i++) {
        p += snprintf(hdr + p, sizeof hdr - (size_t)p, "%lld,%s", (long long)t->shape[i],
                      (i + 1 < t->ndim) ? " " : "");
    }
    if (t->ndim > 1) {
        p--; /* numpy writes (2, 3) but (5,) for rank 1 */
    }
    p += snprintf(hdr + p, sizeof hdr - (size_t)p, "), }");
    /* pad so that 10 + header length (incl. '\n') is a multiple of 64 */
    int total = 10 + p + 1;
    int pad = (64 - total % 64) % 64;
    if (p + pad + 1 >= (int)sizeof hdr) {
        return lina_set_error(LINA_EINVAL, "%s: header too long", path);
    }
    memset(hdr + p, ' ', (size_t)pad);
    p += pad;
    hdr[p++] = '\n';

    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(p & 0xff),
                             (unsigned char)(p >> 8)};
    lina_afile f;
    int rc = lina_afile_open(&f, path);
    if (rc) {
        return rc;
    }
    lina_afile_write(&f, pre, 10);
    lina_afile_write(&f, hdr, (size_t)p);
    lina_afile_write(&f, t->data, (size_t)lina_tensor_numel(t) * 4);
    return lina_afile_commit(&f);
}
