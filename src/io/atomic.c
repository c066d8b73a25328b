/* atomic.c -- write-to-temporary-then-rename file output used by every writer. */
#include "io_internal.h"
#include "lina.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int lina_afile_open(lina_afile *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->path = path;
    size_t plen = strlen(path);
    f->tmp = malloc(plen + 32);
    if (!f->tmp) {
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    snprintf(f->tmp, plen + 32, "%s.tmp.%d", path, (int)getpid());
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp);
        f->tmp = NULL;
        return lina_set_error(LINA_EIO, "%s: cannot create (%s)", path, strerror(e));
    }
    f->ok = 1;
    return LINA_OK;
}

void lina_afile_write(lina_afile *f, const void *buf, size_t n)
{
    const char *p = buf;
    while (f->ok && n) {
        ssize_t w = write(f->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            f->ok = 0;
            f->err = w < 0 ? errno : 0;
            break;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void sync_dir(const char *path)
{
    size_t n = strlen(path);
    char *dir = malloc(n + 2);
    if (!dir) {
        return;
    }
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == dir) {
        dir[1] = '\0';
    } else {
        *slash = '\0';
    }
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int lina_afile_commit(lina_afile *f)
{
    if (f->fd < 0) {
        return lina_set_error(LINA_EIO, "%s: file was not opened", f->path);
    }
    if (f->ok && fsync(f->fd) != 0) {
        f->ok = 0;
        f->err = errno;
    }
    if (close(f->fd) != 0 && f->ok) {
        f->ok = 0;
        f->err = errno;
    }
    f->fd = -1;
    if (f->ok && rename(f->tmp, f->path) != 0) {
        f->ok = 0;
        f->err = errno;
    }
    int rc = LINA_OK;
    if (!f->ok) {
        unlink(f->tmp);
        rc = lina_set_error(LINA_EIO, "%s: write failed (%s)", f->path,
                            f->err ? strerror(f->err) : "short write");
    } else {
        sync_dir(f->path);
    }
    free(f->tmp);
    f->tmp = NULL;
    return rc;
}

void lina_afile_abort(lina_afile *f)
{
    if (f->fd >= 0) {
        close(f->fd);
        f->fd = -1;
    }
    if (f->tmp) {
        unlink(f->tmp);
        free(f->tmp);
        f->tmp = NULL;
    }
}

int lina_read_file(const char *path, size_t max_bytes, const char *what, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return lina_set_error(LINA_EIO, "%s: cannot open (%s)", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return lina_set_error(LINA_EIO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > (uint64_t)max_bytes) {
        close(fd);
        return lina_set_error(LINA_EFORMAT, "%s: too large for a %s (%lld bytes)", path, what,
                              (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        close(fd);
        return lina_set_error(LINA_ENOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, b + got, n - got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(b);
        return lina_set_error(LINA_EIO, "%s: read error", path);
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return LINA_OK;
}
