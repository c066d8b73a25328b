/* data.c -- token files (format in README.md and lina.h), batch sampling.
 *
 * The file stays open and is read with pread into the caller's buffer (not
 * mapped: a file truncated while mapped kills the process with SIGBUS).
 * Opening validates the header, the exact file size and every token against
 * the vocabulary; every later read checks that it got all its bytes and that
 * each token is still below the vocabulary, so a file truncated or rewritten
 * while in use is an error naming the file, never a crash. */
#include "../io/io_internal.h"
#include "lina.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "data.c assumes a little-endian host (token files are little-endian)"
#endif

#define TOK_MAGIC "LINATOK1"
#define TOK_VERSION 1u
#define TOK_HEADER 32

#define TOK_BUF 16384 /* bytes per pread */

struct lina_tokfile {
    char *path;
    int fd;
    uint64_t count;
    uint32_t vocab;
    int width;
};

static uint32_t rd32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t rd64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

void lina_tok_close(lina_tokfile *f)
{
    if (!f) {
        return;
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    free(f->path);
    free(f);
}

/* n bytes at offset off, all of them, or an error naming the file */
static int read_at(const lina_tokfile *f, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(f->fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return lina_set_error(LINA_EIO,
                                  "%s: %s at byte %llu (the file was truncated or changed while in use; "
                                  "restore it and run again)",
                                  f->path, r < 0 ? strerror(errno) : "unexpected end of file",
                                  (unsigned long long)(off + got));
        }
        got += (size_t)r;
    }
    return LINA_OK;
}

/* tokens [start, start + n) into dst (NULL: only check them), each below the vocabulary */
static int tok_load(const lina_tokfile *f, uint64_t start, size_t n, int32_t *dst, const char *when)
{
    unsigned char buf[TOK_BUF];
    size_t per = TOK_BUF / (size_t)f->width;
    for (size_t done = 0; done < n;) {
        size_t k = n - done < per ? n - done : per;
        int rc = read_at(f, buf, k * (size_t)f->width, TOK_HEADER + (start + done) * (uint64_t)f->width);
        if (rc != LINA_OK) {
            return rc;
        }
        for (size_t i = 0; i < k; i++) {
            uint32_t t;
            if (f->width == 2) {
                uint16_t h;
                memcpy(&h, buf + 2 * i, 2);
                t = h;
            } else {
                t = rd32(buf + 4 * i);
            }
            if (t >= f->vocab) {
                return lina_set_error(LINA_EFORMAT, "%s: token %llu is %u, not below vocab_size %u%s", f->path,
                                      (unsigned long long)(start + done + i), (unsigned)t, f->vocab, when);
            }
            if (dst) {
                dst[done + i] = (int32_t)t;
            }
        }
        done += k;
    }
    return LINA_OK;
}

int lina_tok_open(const char *path, lina_tokfile **out)
{
    *out = NULL;
    lina_tokfile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        lina_tok_close(f);
        return lina_set_error(LINA_EIO, "%s: cannot open (%s)", path, strerror(e));
    }
    struct stat st;
    if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        lina_tok_close(f);
        return lina_set_error(LINA_EIO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < TOK_HEADER) {
        lina_tok_close(f);
        return lina_set_error(LINA_EFORMAT, "%s: truncated header (%llu bytes, need %d)", path,
                              (unsigned long long)size, TOK_HEADER);
    }
    unsigned char h[TOK_HEADER];
    int rc = read_at(f, h, TOK_HEADER, 0);
    if (rc != LINA_OK) {
        lina_tok_close(f);
        return rc;
    }
    uint32_t version = rd32(h + 8), width = rd32(h + 12), reserved = rd32(h + 20);
    f->vocab = rd32(h + 16);
    f->count = rd64(h + 24);
    if (memcmp(h, TOK_MAGIC, 8) != 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: not a lina token file (bad magic; expected \"%s\")",
                            path, TOK_MAGIC);
    } else if (version != TOK_VERSION) {
        rc = lina_set_error(LINA_EFORMAT, "%s: unsupported token file version %u (this build reads %u)",
                            path, version, TOK_VERSION);
    } else if (width != 2 && width != 4) {
        rc = lina_set_error(LINA_EFORMAT, "%s: token width %u bytes (must be 2 or 4)", path, width);
    } else if (f->vocab == 0 || f->vocab > 0x80000000u || (width == 2 && f->vocab > 65536u)) {
        rc = lina_set_error(LINA_EFORMAT, "%s: vocab_size %u invalid for %u-byte tokens", path,
                            f->vocab, width);
    } else if (reserved != 0) {
        rc = lina_set_error(LINA_EFORMAT, "%s: reserved header field is %u (must be 0)", path,
                            reserved);
    } else if (f->count > (size - TOK_HEADER) / width ||
               f->count * width != size - TOK_HEADER) {
        rc = lina_set_error(LINA_EFORMAT,
                            "%s: header says %llu tokens (%llu bytes) but the file holds %llu "
                            "bytes of tokens (%s)",
                            path, (unsigned long long)f->count,
                            (unsigned long long)f->count * width,
                            (unsigned long long)(size - TOK_HEADER),
                            f->count > (size - TOK_HEADER) / width ? "truncated" : "trailing bytes");
    }
    if (rc == LINA_OK && f->count > (uint64_t)SIZE_MAX / 4) {
        rc = lina_set_error(LINA_EFORMAT, "%s: %llu tokens, too many for this machine", path,
                            (unsigned long long)f->count);
    }
    if (rc == LINA_OK) {
        f->width = (int)width;
        rc = tok_load(f, 0, (size_t)f->count, NULL, "");
    }
    if (rc != LINA_OK) {
        lina_tok_close(f);
        return rc;
    }
    *out = f;
    return LINA_OK;
}

uint64_t lina_tok_count(const lina_tokfile *f)
{
    return f->count;
}

uint32_t lina_tok_vocab(const lina_tokfile *f)
{
    return f->vocab;
}

int lina_tok_width(const lina_tokfile *f)
{
    return f->width;
}

int lina_tok_read(const lina_tokfile *f, uint64_t start, size_t n, int32_t *dst)
{
    if (start > f->count || n > f->count - start) {
        return lina_set_error(LINA_EINVAL, "%s: tokens [%llu, %llu) outside the %llu in the file",
                              f->path, (unsigned long long)start,
                              (unsigned long long)(start + n), (unsigned long long)f->count);
    }
    return tok_load(f, start, n, dst, " (the file changed while in use; restore it and run again)");
}

int lina_tok_write(const char *path, const uint32_t *tokens, uint64_t n, uint32_t vocab,
                   int width)
{
    if (vocab == 0 || vocab > 0x80000000u) {
        return lina_set_error(LINA_EINVAL, "%s: vocab_size %u out of range [1, 2^31]", path, vocab);
    }
    if (width == 0) {
        width = vocab <= 65536u ? 2 : 4;
    }
    if ((width != 2 && width != 4) || (width == 2 && vocab > 65536u)) {
        return lina_set_error(LINA_EINVAL, "%s: token width %d cannot hold vocab_size %u", path,
                              width, vocab);
    }
    for (uint64_t i = 0; i < n; i++) {
        if (tokens[i] >= vocab) {
            return lina_set_error(LINA_EINVAL, "%s: token %llu is %u, not below vocab_size %u",
                                  path, (unsigned long long)i, tokens[i], vocab);
        }
    }
    unsigned char h[TOK_HEADER] = {0};
    uint32_t ver = TOK_VERSION, w = (uint32_t)width;
    memcpy(h, TOK_MAGIC, 8);
    memcpy(h + 8, &ver, 4);
    memcpy(h + 12, &w, 4);
    memcpy(h + 16, &vocab, 4);
    memcpy(h + 24, &n, 8);
    lina_afile af;
    int rc = lina_afile_open(&af, path);
    if (rc != LINA_OK) {
        return rc;
    }
    lina_afile_write(&af, h, sizeof h);
    if (width == 4) {
        lina_afile_write(&af, tokens, (size_t)n * 4);
    } else {
        uint16_t buf[4096];
        for (uint64_t i = 0; i < n;) {
            size_t k = 0;
            for (; k < 4096 && i < n; k++, i++) {
                buf[k] = (uint16_t)tokens[i];
            }
            lina_afile_write(&af, buf, k * 2);
        }
    }
    return lina_afile_commit(&af);
}

static int window(const lina_tokfile *f, uint64_t start, int T, int32_t *tok, int32_t *tgt)
{
    int32_t buf[1024];
    for (int t0 = 0; t0 <= T; t0 += 1023) {
        int n = T + 1 - t0 < 1024 ? T + 1 - t0 : 1024; /* overlap one token per block */
        int rc = lina_tok_read(f, start + (uint64_t)t0, (size_t)n, buf);
        if (rc != LINA_OK) {
            return rc;
        }
        for (int j = 0; j < n; j++) {
            int t = t0 + j;
            if (t < T) {
                tok[t] = buf[j];
            }
            if (t >= 1) {
                tgt[t - 1] = buf[j];
            }
        }
        if (t0 + n >= T + 1) {
            break;
        }
    }
    return LINA_OK;
}

static int sample_check(const lina_tokfile *f, int B, int T)
{
    if (B < 1 || T < 1) {
        return lina_set_error(LINA_EINVAL, "%s: batch %d and seq-len %d must be >= 1", f->path, B, T);
    }
    if (f->count < (uint64_t)T + 1) {
        return lina_set_error(LINA_EINVAL, "%s: %llu tokens, too few for windows of seq-len %d + 1",
                              f->path, (unsigned long long)f->count, T);
    }
    return LINA_OK;
}

int lina_tok_sample(const lina_tokfile *f, uint64_t *rng, int B, int T, int32_t *tokens,
                    int32_t *targets)
{
    int rc = sample_check(f, B, T);
    if (rc != LINA_OK) {
        return rc;
    }
    const uint64_t starts = f->count - (uint64_t)T; /* window starts 0 .. count-T-1 */
    for (int b = 0; b < B; b++) {
        uint64_t s = lina_splitmix64(rng) % starts;
        rc = window(f, s, T, tokens + (size_t)b * T, targets + (size_t)b * T);
        if (rc != LINA_OK) {
            return rc;
        }
    }
    return LINA_OK;
}

int lina_tok_eval_batch(const lina_tokfile *f, int64_t i, int B, int T, int32_t *tokens,
                        int32_t *targets)
{
    int rc = sample_check(f, B, T);
    if (rc != LINA_OK) {
        return rc;
    }
    const uint64_t starts = f->count - (uint64_t)T;
    for (int b = 0; b < B; b++) {
        uint64_t s = (((uint64_t)i * (uint64_t)B + (uint64_t)b) % starts * (uint64_t)T) % starts;
        rc = window(f, s, T, tokens + (size_t)b * T, targets + (size_t)b * T);
        if (rc != LINA_OK) {
            return rc;
        }
    }
    return LINA_OK;
}

void lina_tok_docs(const int32_t *tokens, int32_t *targets, int B, int T, int32_t sep, int64_t *cu,
                   int64_t *ncu)
{
    int64_t n = 0;
    for (int b = 0; b < B; b++) {
        const int64_t r = (int64_t)b * T;
        cu[n++] = r;
        for (int t = 0; t < T; t++) {
            if (tokens[r + t] == sep) {
                targets[r + t] = LINA_IGNORE_INDEX;
                if (t + 1 < T) {
                    cu[n++] = r + t + 1;
                }
            }
        }
    }
    cu[n++] = (int64_t)B * T;
    *ncu = n;
}
