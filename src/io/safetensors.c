/* safetensors.c -- safetensors reader and writer, and the named-tensor dictionary.
 *
 * File layout: u64 little-endian header length N, N bytes of JSON header,
 * then the data buffer. The header maps each tensor name to
 *   {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * (offsets relative to the start of the data buffer) plus an optional
 * "__metadata__" object of string -> string.
 *
 * Reading validates the whole header before any tensor is touched: header
 * length against the file size, well-formed JSON (cJSON), field types,
 * integral non-negative shapes whose byte size does not overflow, offsets
 * inside the buffer, end - begin == numel * element size, unique names and no
 * two non-empty tensors sharing a byte. Gaps between tensors are allowed.
 * Tensor data is then read with pread (files) or memcpy (memory images),
 * never beyond the validated ranges.
 */
#include "io_internal.h"
#include "lina.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (the format is little-endian)"
#endif

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* same limit as the reference implementation */
#define ST_MAX_INT 9007199254740992.0        /* 2^53: largest exactly representable integer */
#define ST_CHUNK 4096                        /* elements per conversion chunk */

/* ------------------------------------------------------------ dtypes */

typedef struct st_dtype_info {
    const char *name;
    int size;      /* bytes per element */
    int readable;  /* converted to float32 on read */
} st_dtype_info;

/* The dtypes of the safetensors format. Index 0..3 are the readable ones. */
enum { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2, DT_F64 = 3 };
static const st_dtype_info st_dtypes[] = {
    {"F32", 4, 1},     {"BF16", 2, 1},    {"F16", 2, 1},      {"F64", 8, 1},
    {"BOOL", 1, 0},    {"U8", 1, 0},      {"I8", 1, 0},       {"F8_E5M2", 1, 0},
    {"F8_E4M3", 1, 0}, {"F8_E8M0", 1, 0}, {"I16", 2, 0},      {"U16", 2, 0},
    {"I32", 4, 0},     {"U32", 4, 0},     {"I64", 8, 0},      {"U64", 8, 0},
    {"C64", 8, 0},
};
#define ST_NDTYPES ((int)(sizeof st_dtypes / sizeof st_dtypes[0]))

static int st_dtype_lookup(const char *s)
{
    for (int i = 0; i < ST_NDTYPES; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            return i;
        }
    }
    return -1;
}

static float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* round to nearest even; NaN stays NaN (quiet) */
static uint16_t f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((u >> 16) | 0x40u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13); /* inf / nan */
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {
        /* subnormal half: normalise */
        int e = -1;
        do {
            e++;
            man <<= 1;
        } while (!(man & 0x400u));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* --------------------------------------------------- named-tensor dict */

void lina_tdict_init(lina_tdict *d)
{
    memset(d, 0, sizeof *d);
}

void lina_tdict_free(lina_tdict *d)
{
    if (!d) {
        return;
    }
    for (int i = 0; i < d->n; i++) {
        free(d->names[i]);
        lina_tensor_free(&d->t[i]);
    }
    for (int i = 0; i < d->nmeta; i++) {
        free(d->meta_keys[i]);
        free(d->meta_vals[i]);
    }
    free(d->names);
    free(d->t);
    free(d->meta_keys);
    free(d->meta_vals);
    memset(d, 0, sizeof *d);
}

int lina_tdict_index(const lina_tdict *d, const char *name)
{
    for (int i = 0; i < d->n; i++) {
        if (strcmp(d->names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

lina_tensor *lina_tdict_find(lina_tdict *d, const char *name)
{
    int i = lina_tdict_index(d, name);
    return i < 0 ? NULL : &d->t[i];
}

const lina_tensor *lina_tdict_cfind(const lina_tdict *d, const char *name)
{
    int i = lina_tdict_index(d, name);
    return i < 0 ? NULL : &d->t[i];
}

static char *st_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) {
        memcpy(p, s, n);
    }
    return p;
}

int lina_tdict_add(lina_tdict *d, const char *name, lina_tensor *t)
{
    if (!name || !name[0]) {
        return lina_set_error(LINA_EINVAL, "tensor name is empty");
    }
    if (lina_tdict_index(d, name) >= 0) {
        return lina_set_error(LINA_EINVAL, "duplicate tensor name '%s'", name);
    }
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 16;
        char **nn = realloc(d->names, (size_t)cap * sizeof *nn);
        if (!nn) {
            return lina_set_error(LINA_ENOMEM, "out of memory (tensor dictionary)");
        }
        d->names = nn;
        lina_tensor *nt = realloc(d->t, (size_t)cap * sizeof *nt);
        if (!nt) {
            return lina_set_error(LINA_ENOMEM, "out of memory (tensor dictionary)");
        }
        d->t = nt;
        d->cap = cap;
    }
    char *s = st_strdup(name);
    if (!s) {
        return lina_set_error(LINA_ENOMEM, "out of memory (tensor dictionary)");
    }
    d->names[d->n] = s;
    d->t[d->n] = *t;
    d->n++;
    memset(t, 0, sizeof *t);
    return LINA_OK;
}

const char *lina_tdict_meta(const lina_tdict *d, const char *key)
{
    for (int i = 0; i < d->nmeta; i++) {
        if (strcmp(d->meta_keys[i], key) == 0) {
            return d->meta_vals[i];
        }
    }
    return NULL;
}

int lina_tdict_set_meta(lina_tdict *d, const char *key, const char *value)
{
    if (!key || !value) {
        return lina_set_error(LINA_EINVAL, "metadata key and value must not be NULL");
    }
    char *v = st_strdup(value);
    if (!v) {
        return lina_set_error(LINA_ENOMEM, "out of memory (metadata)");
    }
    for (int i = 0; i < d->nmeta; i++) {
        if (strcmp(d->meta_keys[i], key) == 0) {
            free(d->meta_vals[i]);
            d->meta_vals[i] = v;
            return LINA_OK;
        }
    }
    if (d->nmeta == d->meta_cap) {
        int cap = d->meta_cap ? 2 * d->meta_cap : 8;
        char **nk = realloc(d->meta_keys, (size_t)cap * sizeof *nk);
        if (!nk) {
            free(v);
            return lina_set_error(LINA_ENOMEM, "out of memory (metadata)");
        }
        d->meta_keys = nk;
        char **nv = realloc(d->meta_vals, (size_t)cap * sizeof *nv);
        if (!nv) {
            free(v);
            return lina_set_error(LINA_ENOMEM, "out of memory (metadata)");
        }
        d->meta_vals = nv;
        d->meta_cap = cap;
    }
    char *k = st_strdup(key);
    if (!k) {
        free(v);
        return lina_set_error(LINA_ENOMEM, "out of memory (metadata)");
    }
    d->meta_keys[d->nmeta] = k;
    d->meta_vals[d->nmeta] = v;
    d->nmeta++;
    return LINA_OK;
}

/* ------------------------------------------------------------- reader */

typedef struct st_entry {
    char *name;
    int dtype;                      /* index into st_dtypes */
    int ndim;
    int64_t shape[LINA_MAX_DIMS];
    uint64_t begin, end;            /* byte offsets into the data buffer */
} st_entry;

struct lina_st_file {
    char *path;                     /* for messages */
    int fd;                         /* -1 for a memory image */
    const unsigned char *mem;       /* memory image (not owned) */
    uint64_t data_off, data_len;    /* data buffer: file bytes [data_off, data_off + data_len) */
    int n;
    st_entry *e;                    /* header order */
    int nmeta;
    char **mkeys, **mvals;
};

void lina_st_close(lina_st_file *f)
{
    if (!f) {
        return;
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    for (int i = 0; i < f->n; i++) {
        free(f->e[i].name);
    }
    for (int i = 0; i < f->nmeta; i++) {
        free(f->mkeys[i]);
        free(f->mvals[i]);
    }
    free(f->e);
    free(f->mkeys);
    free(f->mvals);
    free(f->path);
    free(f);
}

/* read exactly n bytes at file offset off (absolute) */
static int st_read_at(const lina_st_file *f, void *dst, size_t n, uint64_t off)
{
    if (f->fd < 0) {
        memcpy(dst, f->mem + off, n);
        return LINA_OK;
    }
    unsigned char *p = dst;
    while (n) {
        size_t want = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t got = pread(f->fd, p, want, (off_t)off);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0) {
            return lina_set_error(LINA_EIO, "%s: read error (%s)", f->path, strerror(errno));
        }
        if (got == 0) {
            return lina_set_error(LINA_EIO, "%s: unexpected end of file (file changed while reading?)",
                                  f->path);
        }
        p += got;
        n -= (size_t)got;
        off += (uint64_t)got;
    }
    return LINA_OK;
}

/* a JSON number that is an integer in [0, 2^53] */
static int st_json_uint(const cJSON *it, uint64_t *v)
{
    if (!cJSON_IsNumber(it)) {
        return 0;
    }
    double x = it->valuedouble;
    if (!(x >= 0.0 && x <= ST_MAX_INT) || x != (double)(uint64_t)x) {
        return 0;
    }
    *v = (uint64_t)x;
    return 1;
}

static int st_cmp_name(const void *a, const void *b)
{
    const st_entry *const *x = a;
    const st_entry *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int st_cmp_begin(const void *a, const void *b)
{
    const st_entry *const *x = a;
    const st_entry *const *y = b;
    if ((*x)->begin != (*y)->begin) {
        return (*x)->begin < (*y)->begin ? -1 : 1;
    }
    return (*x)->end < (*y)->end ? -1 : (*x)->end > (*y)->end;
}

/* metadata object: string -> string */
static int st_parse_meta(lina_st_file *f, const cJSON *m)
{
    if (!cJSON_IsObject(m)) {
        return lina_set_error(LINA_EFORMAT, "%s: \"__metadata__\" must be a JSON object", f->path);
    }
    int cnt = cJSON_GetArraySize(m);
    f->mkeys = calloc((size_t)cnt + 1, sizeof *f->mkeys);
    f->mvals = calloc((size_t)cnt + 1, sizeof *f->mvals);
    if (!f->mkeys || !f->mvals) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", f->path);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, m)
    {
        if (!cJSON_IsString(it) || !it->string) {
            return lina_set_error(LINA_EFORMAT, "%s: metadata value of \"%s\" is not a string",
                                  f->path, it->string ? it->string : "?");
        }
        for (int i = 0; i < f->nmeta; i++) {
            if (strcmp(f->mkeys[i], it->string) == 0) {
                return lina_set_error(LINA_EFORMAT, "%s: duplicate metadata key \"%s\"", f->path,
                                      it->string);
            }
        }
        f->mkeys[f->nmeta] = st_strdup(it->string);
        f->mvals[f->nmeta] = st_strdup(it->valuestring);
        if (!f->mkeys[f->nmeta] || !f->mvals[f->nmeta]) {
            free(f->mkeys[f->nmeta]);
            free(f->mvals[f->nmeta]);
            return lina_set_error(LINA_ENOMEM, "%s: out of memory", f->path);
        }
        f->nmeta++;
    }
    return LINA_OK;
}

/* one tensor entry of the header */
static int st_parse_entry(lina_st_file *f, const cJSON *it, st_entry *e)
{
    const char *nm = it->string;
    if (!nm[0]) {
        return lina_set_error(LINA_EFORMAT, "%s: empty tensor name in header", f->path);
    }
    if (!cJSON_IsObject(it)) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': entry must be a JSON object", f->path, nm);
    }
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
    const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
    if (!dt || !sh || !of) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': missing \"%s\"", f->path, nm,
                              !dt ? "dtype" : !sh ? "shape" : "data_offsets");
    }
    if (!cJSON_IsString(dt)) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': \"dtype\" must be a string", f->path, nm);
    }
    e->dtype = st_dtype_lookup(dt->valuestring);
    if (e->dtype < 0) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': unknown dtype \"%.32s\"", f->path, nm,
                              dt->valuestring);
    }
    if (!cJSON_IsArray(sh)) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': \"shape\" must be an array", f->path, nm);
    }
    int nd = cJSON_GetArraySize(sh);
    if (nd > LINA_MAX_DIMS) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': %d dimensions (at most %d supported)",
                              f->path, nm, nd, LINA_MAX_DIMS);
    }
    e->ndim = 0;
    uint64_t numel = 1;
    uint64_t limit = (uint64_t)ST_MAX_INT / (uint64_t)st_dtypes[e->dtype].size;
    const cJSON *d;
    cJSON_ArrayForEach(d, sh)
    {
        uint64_t v;
        if (!st_json_uint(d, &v)) {
            return lina_set_error(LINA_EFORMAT,
                                  "%s: tensor '%s': shape entries must be non-negative integers",
                                  f->path, nm);
        }
        if (v && numel > limit / v) {
            return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': shape too large (size overflows)",
                                  f->path, nm);
        }
        numel *= v;
        e->shape[e->ndim++] = (int64_t)v;
    }
    if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': \"data_offsets\" must be [begin, end]",
                              f->path, nm);
    }
    if (!st_json_uint(cJSON_GetArrayItem(of, 0), &e->begin) ||
        !st_json_uint(cJSON_GetArrayItem(of, 1), &e->end)) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: tensor '%s': data offsets must be non-negative integers", f->path, nm);
    }
    if (e->begin > e->end) {
        return lina_set_error(LINA_EFORMAT, "%s: tensor '%s': data offsets [%llu, %llu] are reversed",
                              f->path, nm, (unsigned long long)e->begin, (unsigned long long)e->end);
    }
    if (e->end > f->data_len) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: tensor '%s': data offsets [%llu, %llu] lie outside the data buffer "
                              "(%llu bytes; truncated file?)",
                              f->path, nm, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)f->data_len);
    }
    uint64_t want = numel * (uint64_t)st_dtypes[e->dtype].size;
    if (e->end - e->begin != want) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: tensor '%s': %llu data bytes but dtype %s and shape need %llu",
                              f->path, nm, (unsigned long long)(e->end - e->begin),
                              st_dtypes[e->dtype].name, (unsigned long long)want);
    }
    e->name = st_strdup(nm);
    if (!e->name) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", f->path);
    }
    return LINA_OK;
}

/* names unique, non-empty byte ranges disjoint */
static int st_check_layout(lina_st_file *f)
{
    if (f->n < 2) {
        return LINA_OK;
    }
    const st_entry **idx = malloc((size_t)f->n * sizeof *idx);
    if (!idx) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", f->path);
    }
    for (int i = 0; i < f->n; i++) {
        idx[i] = &f->e[i];
    }
    int rc = LINA_OK;
    qsort(idx, (size_t)f->n, sizeof *idx, st_cmp_name);
    for (int i = 1; i < f->n; i++) {
        if (strcmp(idx[i - 1]->name, idx[i]->name) == 0) {
            rc = lina_set_error(LINA_EFORMAT, "%s: duplicate tensor name '%s'", f->path, idx[i]->name);
            goto out;
        }
    }
    qsort(idx, (size_t)f->n, sizeof *idx, st_cmp_begin);
    const st_entry *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        if (idx[i]->begin == idx[i]->end) {
            continue; /* empty tensors occupy no bytes */
        }
        if (prev && idx[i]->begin < prev->end) {
            rc = lina_set_error(LINA_EFORMAT,
                                "%s: tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) overlap", f->path,
                                prev->name, (unsigned long long)prev->begin,
                                (unsigned long long)prev->end, idx[i]->name,
                                (unsigned long long)idx[i]->begin, (unsigned long long)idx[i]->end);
            goto out;
        }
        prev = idx[i];
    }
out:
    free(idx);
    return rc;
}

/* Parse and validate the header. f->path, fd/mem and the total size are set. */
static int st_open_common(lina_st_file *f, uint64_t total)
{
    unsigned char pre[8];
    if (total < 8) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: not a safetensors file (%llu bytes; need an 8-byte header length)",
                              f->path, (unsigned long long)total);
    }
    int rc = st_read_at(f, pre, 8, 0);
    if (rc) {
        return rc;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) {
        hlen = (hlen << 8) | pre[i];
    }
    if (hlen > total - 8) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: header length %llu exceeds the file size (%llu bytes after the length "
                              "field; truncated or not a safetensors file)",
                              f->path, (unsigned long long)hlen, (unsigned long long)(total - 8));
    }
    if (hlen > ST_MAX_HEADER) {
        return lina_set_error(LINA_EFORMAT, "%s: header length %llu is too large (limit %u bytes)",
                              f->path, (unsigned long long)hlen, ST_MAX_HEADER);
    }
    if (hlen < 2) {
        return lina_set_error(LINA_EFORMAT, "%s: header of %llu bytes is too short for a JSON object",
                              f->path, (unsigned long long)hlen);
    }
    f->data_off = 8 + hlen;
    f->data_len = total - 8 - hlen;
    char *h = malloc((size_t)hlen + 1);
    if (!h) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory (header of %llu bytes)", f->path,
                              (unsigned long long)hlen);
    }
    rc = st_read_at(f, h, (size_t)hlen, 8);
    if (rc) {
        free(h);
        return rc;
    }
    h[hlen] = '\0';
    if (memchr(h, '\0', (size_t)hlen)) {
        free(h);
        return lina_set_error(LINA_EFORMAT, "%s: NUL byte inside the JSON header", f->path);
    }
    if (h[0] != '{') {
        free(h);
        return lina_set_error(LINA_EFORMAT, "%s: header does not start with '{' (not a safetensors file?)",
                              f->path);
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, (size_t)hlen, &end, 0);
    if (!root) {
        size_t pos = (end && end >= h && end <= h + hlen) ? (size_t)(end - h) : 0;
        free(h);
        return lina_set_error(LINA_EFORMAT, "%s: header is not valid JSON (error near byte %zu of %llu)",
                              f->path, pos, (unsigned long long)hlen);
    }
    /* only whitespace may follow the JSON object (writers pad with spaces) */
    for (const char *p = end; p && p < h + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            free(h);
            return lina_set_error(LINA_EFORMAT, "%s: unexpected bytes after the JSON header object",
                                  f->path);
        }
    }
    free(h);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lina_set_error(LINA_EFORMAT, "%s: header is not a JSON object", f->path);
    }
    int cnt = cJSON_GetArraySize(root);
    f->e = calloc((size_t)cnt + 1, sizeof *f->e);
    if (!f->e) {
        cJSON_Delete(root);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", f->path);
    }
    int seen_meta = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (!it->string) {
            rc = lina_set_error(LINA_EFORMAT, "%s: malformed header object", f->path);
            break;
        }
        if (strcmp(it->string, "__metadata__") == 0) {
            if (seen_meta++) {
                rc = lina_set_error(LINA_EFORMAT, "%s: duplicate \"__metadata__\"", f->path);
                break;
            }
            rc = st_parse_meta(f, it);
            if (rc) {
                break;
            }
            continue;
        }
        rc = st_parse_entry(f, it, &f->e[f->n]);
        if (rc) {
            break;
        }
        f->n++;
    }
    cJSON_Delete(root);
    if (rc) {
        return rc;
    }
    return st_check_layout(f);
}

static lina_st_file *st_new(const char *name)
{
    lina_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    f->fd = -1;
    f->path = st_strdup(name);
    if (!f->path) {
        free(f);
        lina_set_error(LINA_ENOMEM, "%s: out of memory", name);
        return NULL;
    }
    return f;
}

int lina_st_open(const char *path, lina_st_file **out)
{
    *out = NULL;
    lina_st_file *f = st_new(path);
    if (!f) {
        return LINA_ENOMEM;
    }
    f->fd = open(path, O_RDONLY);
    if (f->fd < 0) {
        int e = errno;
        lina_st_close(f);
        return lina_set_error(LINA_EIO, "%s: cannot open (%s)", path, strerror(e));
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        lina_st_close(f);
        return lina_set_error(LINA_EIO, "%s: not a regular file", path);
    }
    int rc = st_open_common(f, (uint64_t)st.st_size);
    if (rc) {
        lina_st_close(f);
        return rc;
    }
    *out = f;
    return LINA_OK;
}

int lina_st_open_mem(const void *buf, size_t len, const char *name, lina_st_file **out)
{
    *out = NULL;
    lina_st_file *f = st_new(name ? name : "<memory>");
    if (!f) {
        return LINA_ENOMEM;
    }
    if (!buf && len) {
        lina_st_close(f);
        return lina_set_error(LINA_EINVAL, "%s: NULL buffer", name ? name : "<memory>");
    }
    f->mem = buf;
    int rc = st_open_common(f, (uint64_t)len);
    if (rc) {
        lina_st_close(f);
        return rc;
    }
    *out = f;
    return LINA_OK;
}

int lina_st_count(const lina_st_file *f)
{
    return f->n;
}

int lina_st_find(const lina_st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++) {
        if (strcmp(f->e[i].name, name) == 0) {
            return i;
        }
    }
    return -1;
}

const char *lina_st_name(const lina_st_file *f, int i)
{
    return (i >= 0 && i < f->n) ? f->e[i].name : NULL;
}

const char *lina_st_dtype_name(const lina_st_file *f, int i)
{
    return (i >= 0 && i < f->n) ? st_dtypes[f->e[i].dtype].name : NULL;
}

int lina_st_shape(const lina_st_file *f, int i, int64_t shape[LINA_MAX_DIMS])
{
    if (i < 0 || i >= f->n) {
        return lina_set_error(LINA_EINVAL, "%s: tensor index %d out of range", f->path, i);
    }
    memcpy(shape, f->e[i].shape, (size_t)f->e[i].ndim * sizeof(int64_t));
    return f->e[i].ndim;
}

int64_t lina_st_numel(const lina_st_file *f, int i)
{
    if (i < 0 || i >= f->n) {
        return -1;
    }
    int64_t n = 1;
    for (int d = 0; d < f->e[i].ndim; d++) {
        n *= f->e[i].shape[d];
    }
    return n;
}

int lina_st_meta_count(const lina_st_file *f)
{
    return f->nmeta;
}

const char *lina_st_meta_key(const lina_st_file *f, int i)
{
    return (i >= 0 && i < f->nmeta) ? f->mkeys[i] : NULL;
}

const char *lina_st_meta(const lina_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++) {
        if (strcmp(f->mkeys[i], key) == 0) {
            return f->mvals[i];
        }
    }
    return NULL;
}

int lina_st_load(const lina_st_file *f, int i, float *dst, int64_t n)
{
    if (i < 0 || i >= f->n) {
        return lina_set_error(LINA_EINVAL, "%s: tensor index %d out of range", f->path, i);
    }
    const st_entry *e = &f->e[i];
    const st_dtype_info *dt = &st_dtypes[e->dtype];
    if (!dt->readable) {
        return lina_set_error(LINA_EFORMAT,
                              "%s: tensor '%s' has dtype %s; only F32, BF16, F16 and F64 can be "
                              "read as float32",
                              f->path, e->name, dt->name);
    }
    int64_t numel = lina_st_numel(f, i);
    if (n != numel) {
        return lina_set_error(LINA_EINVAL, "%s: tensor '%s' has %lld elements, destination %lld",
                              f->path, e->name, (long long)numel, (long long)n);
    }
    if (numel == 0) {
        return LINA_OK;
    }
    uint64_t off = f->data_off + e->begin;
    if (e->dtype == DT_F32) {
        return st_read_at(f, dst, (size_t)numel * 4, off);
    }
    /* convert in chunks */
    unsigned char buf[ST_CHUNK * 8];
    int es = dt->size;
    for (int64_t s = 0; s < numel; s += ST_CHUNK) {
        int64_t m = numel - s < ST_CHUNK ? numel - s : ST_CHUNK;
        int rc = st_read_at(f, buf, (size_t)m * (size_t)es, off + (uint64_t)s * (uint64_t)es);
        if (rc) {
            return rc;
        }
        for (int64_t j = 0; j < m; j++) {
            if (e->dtype == DT_F64) {
                double x;
                memcpy(&x, buf + 8 * j, 8);
                dst[s + j] = (float)x;
            } else {
                uint16_t h;
                memcpy(&h, buf + 2 * j, 2);
                dst[s + j] = e->dtype == DT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
            }
        }
    }
    return LINA_OK;
}

int lina_st_read(const char *path, lina_tdict *out, unsigned flags)
{
    lina_tdict_init(out);
    lina_st_file *f;
    int rc = lina_st_open(path, &f);
    if (rc) {
        return rc;
    }
    for (int i = 0; i < f->n && !rc; i++) {
        if (!st_dtypes[f->e[i].dtype].readable) {
            if (flags & LINA_ST_SKIP_UNSUPPORTED) {
                continue;
            }
            rc = lina_st_load(f, i, NULL, 0); /* sets the dtype error */
            break;
        }
        lina_tensor t;
        rc = lina_tensor_alloc(&t, f->e[i].ndim, f->e[i].shape);
        if (rc) {
            break;
        }
        rc = lina_st_load(f, i, t.data, lina_tensor_numel(&t));
        rc = rc ? rc : lina_tdict_add(out, f->e[i].name, &t);
        if (rc) {
            lina_tensor_free(&t);
        }
    }
    for (int i = 0; i < f->nmeta && !rc; i++) {
        rc = lina_tdict_set_meta(out, f->mkeys[i], f->mvals[i]);
    }
    lina_st_close(f);
    if (rc) {
        lina_tdict_free(out);
    }
    return rc;
}

/* ------------------------------------------------------------- writer */

typedef struct st_buf {
    char *p;
    size_t n, cap;
    int oom;
} st_buf;

static void sb_put(st_buf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->n + n + 1) {
            cap *= 2;
        }
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void sb_puts(st_buf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_printf_u64(st_buf *b, uint64_t v)
{
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)k);
}

/* JSON string literal with escapes */
static void sb_json_str(st_buf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_put(b, esc, 2);
        } else if (*p < 0x20) {
            int k = snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_put(b, esc, (size_t)k);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static int st_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}


int lina_st_write(const char *path, const lina_st_view *v, int n, const char *const *meta, int nmeta,
                  lina_st_dtype dtype)
{
    if (dtype != LINA_ST_F32 && dtype != LINA_ST_BF16) {
        return lina_set_error(LINA_EINVAL, "%s: unsupported output dtype %d (F32 or BF16)", path,
                              (int)dtype);
    }
    if (n < 0 || nmeta < 0 || (n > 0 && !v) || (nmeta > 0 && !meta)) {
        return lina_set_error(LINA_EINVAL, "%s: bad tensor or metadata list", path);
    }
    int es = dtype == LINA_ST_F32 ? 4 : 2;
    /* validate and compute offsets */
    uint64_t *off = malloc(((size_t)n + 1) * sizeof *off);
    const char **names = malloc(((size_t)n + (size_t)nmeta + 1) * sizeof *names);
    if (!off || !names) {
        free(off);
        free(names);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    int rc = LINA_OK;
    uint64_t pos = 0;
    for (int i = 0; i < n && !rc; i++) {
        const lina_st_view *t = &v[i];
        if (!t->name || !t->name[0] || strcmp(t->name, "__metadata__") == 0) {
            rc = lina_set_error(LINA_EINVAL, "%s: tensor %d has an invalid name", path, i);
            break;
        }
        if (t->ndim < 0 || t->ndim > LINA_MAX_DIMS) {
            rc = lina_set_error(LINA_EINVAL, "%s: tensor '%s': rank %d out of range", path, t->name,
                                t->ndim);
            break;
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 ||
                (t->shape[d] > 0 && numel > ((uint64_t)ST_MAX_INT / 8) / (uint64_t)t->shape[d])) {
                rc = lina_set_error(LINA_EINVAL, "%s: tensor '%s': bad shape", path, t->name);
                break;
            }
            numel *= (uint64_t)t->shape[d];
        }
        if (rc) {
            break;
        }
        if (numel > 0 && !t->data) {
            rc = lina_set_error(LINA_EINVAL, "%s: tensor '%s' has no data", path, t->name);
            break;
        }
        off[i] = pos;
        pos += numel * (uint64_t)es;
        if (pos > (uint64_t)ST_MAX_INT) {
            rc = lina_set_error(LINA_EINVAL, "%s: tensors too large for one file", path);
        }
        names[i] = t->name;
    }
    off[n] = pos;
    if (!rc && n > 1) {
        qsort(names, (size_t)n, sizeof *names, st_cmp_str);
        for (int i = 1; i < n; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                rc = lina_set_error(LINA_EINVAL, "%s: duplicate tensor name '%s'", path, names[i]);
                break;
            }
        }
    }
    if (!rc && nmeta > 1) {
        for (int i = 0; i < nmeta; i++) {
            names[i] = meta[2 * i];
        }
        qsort(names, (size_t)nmeta, sizeof *names, st_cmp_str);
        for (int i = 1; i < nmeta; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                rc = lina_set_error(LINA_EINVAL, "%s: duplicate metadata key '%s'", path, names[i]);
                break;
            }
        }
    }
    for (int i = 0; i < nmeta && !rc; i++) {
        if (!meta[2 * i] || !meta[2 * i + 1]) {
            rc = lina_set_error(LINA_EINVAL, "%s: metadata entry %d is NULL", path, i);
        }
    }
    free(names);
    if (rc) {
        free(off);
        return rc;
    }
    /* header */
    st_buf h = {0};
    sb_puts(&h, "{");
    if (nmeta > 0) {
        sb_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i) {
                sb_puts(&h, ",");
            }
            sb_json_str(&h, meta[2 * i]);
            sb_puts(&h, ":");
            sb_json_str(&h, meta[2 * i + 1]);
        }
        sb_puts(&h, "}");
    }
    for (int i = 0; i < n; i++) {
        if (i || nmeta > 0) {
            sb_puts(&h, ",");
        }
        sb_json_str(&h, v[i].name);
        sb_puts(&h, dtype == LINA_ST_F32 ? ":{\"dtype\":\"F32\",\"shape\":[" : ":{\"dtype\":\"BF16\",\"shape\":[");
        for (int d = 0; d < v[i].ndim; d++) {
            if (d) {
                sb_puts(&h, ",");
            }
            sb_printf_u64(&h, (uint64_t)v[i].shape[d]);
        }
        sb_puts(&h, "],\"data_offsets\":[");
        sb_printf_u64(&h, off[i]);
        sb_puts(&h, ",");
        sb_printf_u64(&h, off[i + 1]);
        sb_puts(&h, "]}");
    }
    sb_puts(&h, "}");
    while (!h.oom && h.n % 8 != 0) {
        sb_puts(&h, " ");
    }
    if (h.oom) {
        free(h.p);
        free(off);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory (header)", path);
    }
    unsigned char pre[8];
    for (int i = 0; i < 8; i++) {
        pre[i] = (unsigned char)((uint64_t)h.n >> (8 * i));
    }
    /* temporary file, fsync, rename */
    uint16_t *cv = dtype == LINA_ST_BF16 ? malloc(ST_CHUNK * sizeof *cv) : NULL;
    if (dtype == LINA_ST_BF16 && !cv) {
        free(h.p);
        free(off);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    lina_afile f;
    rc = lina_afile_open(&f, path);
    if (rc) {
        free(h.p);
        free(off);
        free(cv);
        return rc;
    }
    lina_afile_write(&f, pre, 8);
    lina_afile_write(&f, h.p, h.n);
    for (int i = 0; i < n && f.ok; i++) {
        uint64_t numel = (off[i + 1] - off[i]) / (uint64_t)es;
        if (dtype == LINA_ST_F32) {
            lina_afile_write(&f, v[i].data, (size_t)numel * 4);
            continue;
        }
        for (uint64_t s = 0; s < numel && f.ok; s += ST_CHUNK) {
            uint64_t m = numel - s < ST_CHUNK ? numel - s : ST_CHUNK;
            for (uint64_t j = 0; j < m; j++) {
                cv[j] = f32_to_bf16(v[i].data[s + j]);
            }
            lina_afile_write(&f, cv, (size_t)m * 2);
        }
    }
    rc = lina_afile_commit(&f);
    free(h.p);
    free(off);
    free(cv);
    return rc;
}

int lina_st_write_dict(const char *path, const lina_tdict *d, lina_st_dtype dtype)
{
    lina_st_view *v = calloc((size_t)d->n + 1, sizeof *v);
    const char **meta = calloc(2 * (size_t)d->nmeta + 1, sizeof *meta);
    if (!v || !meta) {
        free(v);
        free(meta);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < d->n; i++) {
        v[i].name = d->names[i];
        v[i].ndim = d->t[i].ndim;
        memcpy(v[i].shape, d->t[i].shape, sizeof v[i].shape);
        v[i].data = d->t[i].data;
    }
    for (int i = 0; i < d->nmeta; i++) {
        meta[2 * i] = d->meta_keys[i];
        meta[2 * i + 1] = d->meta_vals[i];
    }
    int rc = lina_st_write(path, v, d->n, meta, d->nmeta, dtype);
    free(v);
    free(meta);
    return rc;
}
